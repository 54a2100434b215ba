/* cloister/ratls.h — the interface of the ratls module: RA-TLS identities (a fresh key pair and a
 * self-signed X.509 certificate carrying attestation evidence bound to that key, in the same
 * extensions Gramine writes) and their verification inside OpenSSL's certificate verification.
 * The exact certificate layout is documented in docs/ra-tls.md.
 *
 * Ownership: an identity owns its key and certificate (borrow them with the getters; they live as
 * long as the identity). A cl_ratls_verify_ctx is borrowed by every SSL_CTX it is installed on and
 * must outlive them; it is read-only once installed.
 * Thread-safety: identity creation uses the provider (one thread at a time per provider). Verification
 * (cl_ratls_verify_cert and the installed callback) is thread-safe and takes no global lock; per
 * connection results are stored on the SSL object. */
#ifndef CLOISTER_RATLS_H
#define CLOISTER_RATLS_H

#include <openssl/ssl.h>
#include <openssl/x509.h>

#include "cloister/attest.h"
#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Gramine's legacy "SGX quote" extension OID, exactly as Gramine encodes it (its DER content bytes
 * are 06 09 2A 86 48 86 F8 4D 8A 39 06, i.e. the intended 1.2.840.113741.1337.6 with its own tag
 * and length included by mistake; Gramine keeps it for compatibility, and so do we). */
#define CL_RATLS_OID_LEGACY_QUOTE "0.6.9.42.840.113741.1337.6"
/* The OID Gramine meant; accepted when reading (implementations that fixed the encoding use it). */
#define CL_RATLS_OID_LEGACY_QUOTE_FIXED "1.2.840.113741.1337.6"
/* TCG DICE tagged evidence (tcg-dice-conceptual-message-wrapper) */
#define CL_RATLS_OID_TCG_EVIDENCE "2.23.133.5.4.9"
/* CBOR tag of "TEE quote" tagged evidence, as used by Gramine */
#define CL_RATLS_CBOR_TAG_TEE_QUOTE 60000
/* hash-alg-id of SHA-256 in the IANA named-information registry */
#define CL_RATLS_HASH_SHA256 1

/* ---------------------------------------------------------------- identities */

typedef struct cl_ratls_identity cl_ratls_identity;

typedef struct cl_ratls_identity_options {
    const char *curve;     /* "P-256" (default) or "P-384" (what recent Gramine verifiers require) */
    int validity_days;     /* 0: 30 days (backdated 1 hour) */
    bool no_legacy;        /* omit the legacy quote extension (written by default, as Gramine does) */
} cl_ratls_identity_options;

/* Generates a fresh key pair, obtains evidence for it from `provider` (two quotes: one with
 * report_data = SHA-256(SPKI) for the legacy extension, one with report_data = SHA-256(claims) for
 * the TCG DICE extension) and builds the self-signed certificate. `opts` may be NULL. */
cl_ratls_identity *cl_ratls_identity_new(cl_attest_provider *provider, const cl_ratls_identity_options *opts,
                                         cl_err *err);
void cl_ratls_identity_free(cl_ratls_identity *id);
EVP_PKEY *cl_ratls_identity_key(const cl_ratls_identity *id);
X509 *cl_ratls_identity_cert(const cl_ratls_identity *id);
/* Makes the identity the certificate and key an SSL_CTX presents. */
int cl_ratls_identity_use(const cl_ratls_identity *id, SSL_CTX *ctx, cl_err *err);

/* An identity from an existing key and certificate (both up-ref'ed); no checks. For tests and for
 * callers that persist identities themselves. */
cl_ratls_identity *cl_ratls_identity_wrap(EVP_PKEY *key, X509 *cert, cl_err *err);

/* Builds an RA-TLS certificate for an existing key from quotes the caller already has (either may
 * be NULL, not both). Used by tests to build certificates with mismatched evidence. */
X509 *cl_ratls_cert_build(EVP_PKEY *key, const uint8_t *legacy_quote, size_t legacy_len,
                          const uint8_t *tcg_evidence, size_t tcg_len, int validity_days, cl_err *err);

/* ---------------------------------------------------------------- extension encodings */

/* SHA-256 of the DER SubjectPublicKeyInfo of key. */
int cl_ratls_spki_sha256(EVP_PKEY *key, uint8_t out[32], cl_err *err);
/* The serialized claims map {"pubkey-hash": bstr(serialized [1, bstr(hash)])}; *out malloc()ed. */
int cl_ratls_claims_encode(const uint8_t pubkey_hash[32], uint8_t **out, size_t *len, cl_err *err);
/* tag(60000)[bstr(quote), bstr(claims)]; *out malloc()ed. */
int cl_ratls_evidence_encode(const uint8_t *quote, size_t quote_len, const uint8_t *claims, size_t claims_len,
                             uint8_t **out, size_t *len, cl_err *err);
/* Parses TCG DICE tagged evidence; the outputs point into buf. Strict: definite lengths only, no
 * trailing bytes. */
int cl_ratls_evidence_parse(const uint8_t *buf, size_t len, const uint8_t **quote, size_t *quote_len,
                            const uint8_t **claims, size_t *claims_len, cl_err *err);
/* Extracts the SHA-256 "pubkey-hash" claim from a serialized claims map (other claims are skipped). */
int cl_ratls_claims_pubkey_hash(const uint8_t *claims, size_t len, uint8_t hash[32], cl_err *err);

/* ---------------------------------------------------------------- verification */

/* What the evidence was found in. */
typedef enum cl_ratls_format { CL_RATLS_TCG = 1, CL_RATLS_LEGACY = 2 } cl_ratls_format;

/* Verifies an RA-TLS certificate: the self-signature and validity period, then the evidence (the TCG
 * DICE extension if present, else the legacy one) with `verifier`, then the key binding. On success
 * `claims` describe the attester. Failure codes: CL_E_FORMAT (no or malformed evidence), CL_E_AUTH
 * (evidence or binding does not verify), CL_E_UNSUPPORTED (no verifier for that evidence). */
int cl_ratls_verify_cert(X509 *cert, const cl_attest_verifier *verifier, cl_attest_claims *claims,
                         cl_ratls_format *format, cl_err *err);

/* Called after the evidence verified, still inside the handshake; return -1 (with err) to reject. */
typedef int (*cl_ratls_policy_fn)(void *arg, SSL *ssl, const cl_attest_claims *claims, cl_err *err);

typedef struct cl_ratls_verify_ctx {
    const cl_attest_verifier *verifier;
    cl_ratls_policy_fn policy; /* may be NULL: any verified evidence is accepted */
    void *policy_arg;
    /* false: a certificate whose evidence does not verify (or that the policy rejects) fails the
     * handshake with a TLS alert. true: the failure is recorded (cl_ratls_peer_error) and the handshake
     * completes anyway, with cl_ratls_peer_claims NULL, so that the caller can tell the peer why on the
     * connection (the key server's denial frame) — and must then send it nothing else. */
    bool complete_on_failure;
} cl_ratls_verify_ctx;

/* Requires the peer to present an RA-TLS certificate (servers: SSL_VERIFY_PEER |
 * SSL_VERIFY_FAIL_IF_NO_PEER_CERT) and verifies it with `vctx` through
 * SSL_CTX_set_cert_verify_callback. */
int cl_ratls_ssl_ctx_require_peer(SSL_CTX *ctx, const cl_ratls_verify_ctx *vctx, cl_err *err);

/* After a handshake on an SSL_CTX set up above: the peer's verified claims (NULL if verification or
 * the policy did not succeed) and, if either failed, why (NULL if the callback never ran, e.g. no
 * certificate). With complete_on_failure, a completed handshake is authorised only when
 * cl_ratls_peer_claims is not NULL. */
const cl_attest_claims *cl_ratls_peer_claims(const SSL *ssl);
const cl_err *cl_ratls_peer_error(const SSL *ssl);

#ifdef __cplusplus
}
#endif
#endif
