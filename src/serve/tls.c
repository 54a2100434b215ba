/* tls.c — server TLS contexts for the serve module: TLS 1.2 and 1.3 only, certificate and key from
 * a cl_serve_ssl_config (PEM in memory; the key never touches a file) or an RA-TLS identity
 * (--attested-tls: a fresh key and a certificate carrying attestation evidence), mutual TLS when
 * client_verify is set (a client without a certificate signed by custom_ca fails the handshake),
 * ALPN pinned to one protocol per port ("h2" for gRPC, "http/1.1" for REST), and the session
 * resumption policy (session_policy below; docs/serve.md "TLS sessions").
 * A context is immutable once built and shared by all connections (OpenSSL makes that safe; its
 * session cache has its own lock). */
#include "serve_int.h"

#include "cloister/pki.h"
#include "cloister/ratls.h"

#include <string.h>

#include <openssl/err.h>
#include <openssl/evp.h>
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

/* Session resumption. Resumed sessions are kept in the server, never in the client: OpenSSL's
 * session cache of this context (one per port; the REST event loops share the REST port's), at most
 * SESSION_CACHE_MAX sessions, each for SESSION_LIFETIME_S. SSL_OP_NO_TICKET turns off stateless
 * tickets: TLS 1.2 resumes by session id, and TLS 1.3's tickets are only ids into the same cache
 * (OpenSSL's stateful tickets, used once and replaced). So there is no ticket key: a resumption secret
 * lives only in this process, for at most the lifetime, and nothing a client holds can be decrypted
 * later with a key taken from the server. A session records the verified client certificate; the
 * session id context binds it to this port's protocol and client verification (the CA list and
 * whether a certificate is required), so a session is resumed only where the same check admitted it.
 * Without a session id context OpenSSL refuses every resumption under client verification (alert
 * 80, "session id context uninitialized"). */
#define SESSION_LIFETIME_S 300
#define SESSION_CACHE_MAX 1024

static int session_policy(SSL_CTX *ctx, const cl_serve_ssl_config *cfg, const char *alpn, cl_err *err)
{
    unsigned char sid[EVP_MAX_MD_SIZE];
    unsigned sid_len = 0;
    const char *ca = cfg->custom_ca ? cfg->custom_ca : "";
    const char *verify = cfg->client_verify ? "client_verify" : "";
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    bool ok = md && EVP_DigestInit_ex(md, EVP_sha256(), NULL) == 1 &&
              EVP_DigestUpdate(md, "cloister serve", 15) == 1 && EVP_DigestUpdate(md, alpn, strlen(alpn) + 1) == 1 &&
              EVP_DigestUpdate(md, verify, strlen(verify) + 1) == 1 && EVP_DigestUpdate(md, ca, strlen(ca)) == 1 &&
              EVP_DigestFinal_ex(md, sid, &sid_len) == 1;
    EVP_MD_CTX_free(md);
    if (!ok || sid_len > SSL_MAX_SID_CTX_LENGTH || SSL_CTX_set_session_id_context(ctx, sid, sid_len) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot set the TLS session id context");
    SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET);
    SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_SERVER);
    SSL_CTX_sess_set_cache_size(ctx, SESSION_CACHE_MAX);
    SSL_CTX_set_timeout(ctx, SESSION_LIFETIME_S);
    SSL_CTX_set_num_tickets(ctx, 1);
    return 0;
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
    if (session_policy(ctx, cfg, alpn, err) != 0)
        goto fail;
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
