/* tls.c — server TLS contexts for the serve module: TLS 1.2 and 1.3 only, certificate and key from
 * a cl_serve_ssl_config (PEM in memory; the key never touches a file) or an RA-TLS identity
 * (--attested-tls: a fresh key and a certificate carrying attestation evidence), mutual TLS when
 * client_verify is set (a client without a certificate signed by custom_ca fails the handshake),
 * and ALPN pinned to one protocol per port ("h2" for gRPC, "http/1.1" for REST).
 * A context is immutable once built and shared by all connections (OpenSSL makes that safe). */
#include "serve_int.h"

#include "cloister/pki.h"
#include "cloister/ratls.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

static int alpn_select(SSL *ssl, const unsigned char **out, unsigned char *outlen, const unsigned char *in,
                       unsigned int inlen, void *arg)
{
    const char *want = arg;
    size_t wlen = strlen(want);
    for (unsigned i = 0; i < inlen;) {
        unsigned n = in[i];
        if (i + 1 + n > inlen)
            break;
        if (n == wlen && memcmp(in + i + 1, want, n) == 0) {
            *out = in + i + 1;
            *outlen = (unsigned char)n;
            return SSL_TLSEXT_ERR_OK;
        }
        i += 1 + n;
    }
    /* gRPC requires h2: refuse a client that does not offer it. An HTTP/1.1 client that offers only
     * h2 is also refused; one that sends no ALPN at all never gets here and uses HTTP/1.1. */
    return SSL_TLSEXT_ERR_ALERT_FATAL;
}

SSL_CTX *cl_serve_tls_ctx(const cl_serve_ssl_config *cfg, const char *alpn, cl_err *err)
{
    return cl_serve_tls_ctx_id(cfg, NULL, alpn, err);
}

SSL_CTX *cl_serve_tls_ctx_id(const cl_serve_ssl_config *cfg, const cl_ratls_identity *id, const char *alpn,
                             cl_err *err)
{
    static const cl_serve_ssl_config none = {0};
    if (!cfg)
        cfg = &none;
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    BIO *bio = NULL;
    X509 *cert = NULL;
    EVP_PKEY *key = NULL;
    if (!ctx) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot create a TLS context");
        return NULL;
    }
    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION | SSL_OP_CIPHER_SERVER_PREFERENCE);
    SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
    /* forward-secret AEAD suites only for TLS 1.2 */
    if (SSL_CTX_set_cipher_list(ctx, "ECDHE+AESGCM:ECDHE+CHACHA20") != 1) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot set the TLS 1.2 cipher list");
        goto fail;
    }

    if (id) {
        if (cl_ratls_identity_use(id, ctx, err) != 0) {
            cl_err_prefix(err, "cannot use the RA-TLS identity");
            goto fail;
        }
        goto verify;
    }
    bio = BIO_new_mem_buf(cfg->server_cert, -1);
    if (!bio || !(cert = PEM_read_bio_X509(bio, NULL, NULL, NULL))) {
        cl_err_ssl(err, CL_E_FORMAT, "the server certificate is not a PEM certificate");
        goto fail;
    }
    if (SSL_CTX_use_certificate(ctx, cert) != 1) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot use the server certificate");
        goto fail;
    }
    /* any further certificates in server_cert form the chain */
    X509 *extra;
    while ((extra = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
        if (SSL_CTX_add0_chain_cert(ctx, extra) != 1) {
            X509_free(extra);
            cl_err_ssl(err, CL_E_CRYPTO, "cannot add a chain certificate");
            goto fail;
        }
    }
    ERR_clear_error();
    BIO_free(bio);
    bio = NULL;
    /* server_key is in secure memory; decoded, the key lives in OpenSSL's secure heap when it is set up */
    if (!(key = cl_pki_key_from_pem(cfg->server_key ? cfg->server_key : "",
                                    cfg->server_key ? strlen(cfg->server_key) : 0, "the server key", err)))
        goto fail;
    if (SSL_CTX_use_PrivateKey(ctx, key) != 1 || SSL_CTX_check_private_key(ctx) != 1) {
        cl_err_ssl(err, CL_E_KEY, "the server key does not match the server certificate");
        goto fail;
    }
verify:
    if (cfg->custom_ca && *cfg->custom_ca) {
        BIO_free(bio);
        bio = BIO_new_mem_buf(cfg->custom_ca, -1);
        X509_STORE *store = SSL_CTX_get_cert_store(ctx);
        STACK_OF(X509_NAME) *names = sk_X509_NAME_new_null();
        X509 *ca;
        int n = 0;
        while (bio && (ca = PEM_read_bio_X509(bio, NULL, NULL, NULL)) != NULL) {
            X509_STORE_add_cert(store, ca);
            if (names)
                sk_X509_NAME_push(names, X509_NAME_dup(X509_get_subject_name(ca)));
            X509_free(ca);
            n++;
        }
        ERR_clear_error();
        if (n == 0) {
            sk_X509_NAME_pop_free(names, X509_NAME_free);
            cl_err_set(err, CL_E_FORMAT, "custom_ca holds no PEM certificate");
            goto fail;
        }
        SSL_CTX_set_client_CA_list(ctx, names);
    }
    if (cfg->client_verify)
        SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_alpn_select_cb(ctx, alpn_select, (void *)alpn);
    BIO_free(bio);
    X509_free(cert);
    EVP_PKEY_free(key);
    return ctx;
fail:
    BIO_free(bio);
    X509_free(cert);
    EVP_PKEY_free(key);
    SSL_CTX_free(ctx);
    return NULL;
}
