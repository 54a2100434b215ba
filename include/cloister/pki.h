/* cloister/pki.h — the interface of the pki module: key pairs, X.509 certificates and the TLS
 * material users need (`cloister tls init`: a CA, a server certificate, optionally a client
 * certificate for mutual TLS, and a TF Serving-style ssl.cfg).
 *
 * Ownership: EVP_PKEY and X509 objects returned here belong to the caller (free them with
 * EVP_PKEY_free / X509_free); strings returned are malloc()ed. Private keys in PEM form are returned
 * in secure memory (cl_secmem_free). Thread-safety: no shared state; safe to call concurrently. */
#ifndef CLOISTER_PKI_H
#define CLOISTER_PKI_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum cl_pki_keytype {
    CL_PKI_EC_P256 = 0, /* default: ECDSA P-256 with SHA-256 */
    CL_PKI_EC_P384,     /* ECDSA P-384 with SHA-384 */
    CL_PKI_RSA3072,     /* RSA-3072 with SHA-256 */
} cl_pki_keytype;

/* Parses "ecdsa-p256", "ecdsa-p384" or "rsa-3072". */
int cl_pki_keytype_parse(const char *name, cl_pki_keytype *out, cl_err *err);
EVP_PKEY *cl_pki_keygen(cl_pki_keytype type, cl_err *err);

typedef enum cl_pki_role {
    CL_PKI_ROLE_CA,     /* CA:TRUE, pathlen 0, keyCertSign + cRLSign */
    CL_PKI_ROLE_SERVER, /* CA:FALSE, EKU serverAuth, SANs */
    CL_PKI_ROLE_CLIENT, /* CA:FALSE, EKU clientAuth, SANs */
} cl_pki_role;

typedef struct cl_pki_cert_spec {
    cl_pki_role role;
    const char *common_name;
    const char *const *sans; /* DNS names or IP addresses; may be NULL */
    size_t san_count;
    int days;                /* validity from now (backdated 5 minutes for clock skew) */
    X509 *issuer;            /* NULL: self-signed */
    EVP_PKEY *issuer_key;    /* NULL: self-signed with the subject key */
} cl_pki_cert_spec;

/* Issues a certificate for `subject_key` (a random 127-bit serial, SKI/AKI, the role's extensions). */
X509 *cl_pki_issue(const cl_pki_cert_spec *spec, EVP_PKEY *subject_key, cl_err *err);

/* A valid certificate name: a DNS name (letters, digits, '-', '.', optional leading "*.") or an IPv4/IPv6
 * address literal. */
bool cl_pki_name_valid(const char *name);

/* PEM encodings. The private key comes back in secure memory, NUL-terminated. */
char *cl_pki_cert_pem(X509 *cert, size_t *len, cl_err *err);
char *cl_pki_key_pem(EVP_PKEY *key, size_t *len, cl_err *err);
/* A private key from a PEM file (unencrypted: PKCS#8, or the traditional EC/RSA forms), read into secure
 * memory and decoded from there; with the secure heap set up (cl_secure_heap_init) the key's private
 * material is kept in it. An encrypted key is refused (a server has no one to ask for the passphrase). */
EVP_PKEY *cl_pki_key_load(const char *path, cl_err *err);
/* The same from PEM text in memory (`what` names it in messages). */
EVP_PKEY *cl_pki_key_from_pem(const char *pem, size_t len, const char *what, cl_err *err);

typedef struct cl_pki_tls_init_options {
    const char *dir;
    const char *server_name;        /* CN and first SAN of the server certificate */
    const char *const *extra_sans;  /* more server SANs (DNS or IP), may be NULL */
    size_t extra_san_count;
    const char *client_name;        /* non-NULL: also issue a client certificate (two-way TLS) */
    cl_pki_keytype keytype;
    int days;                       /* 0: 365 */
    bool force;                     /* replace existing files */
} cl_pki_tls_init_options;

/* Creates, under dir (made if missing, mode 0700):
 *   ca_cert.pem, ca_key.pem                      the CA (key 0600)
 *   server/cert.pem, server/key.pem              the server (key 0600)
 *   client/cert.pem, client/key.pem              with client_name (key 0600)
 *   ssl.cfg                                      TF Serving SSLConfig text format with inline PEM (0600)
 * Refuses (CL_E_EXISTS) if any of them exists, unless force. Everything is generated in memory first
 * and each file is written atomically; if a write fails, the files this call created are removed. */
int cl_pki_tls_init(const cl_pki_tls_init_options *opts, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
