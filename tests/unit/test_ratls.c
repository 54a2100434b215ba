/* test_ratls.c — unit tests of the ratls module: the CBOR encodings of Gramine's TCG DICE evidence,
 * the exact extension OIDs in the certificate DER, certificate verification (good, legacy-only,
 * wrong key binding, untrusted quoting key, no evidence) and a real TLS 1.3 handshake where the
 * verification runs inside OpenSSL. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cloister/ratls.h"

typedef struct fx {
    EVP_PKEY *qe_key;
    X509 *qe_cert;
    cl_attest_provider *prov;
    cl_attest_verifier *verifier;
} fx;

static int setup(void **state)
{
    fx *f = calloc(1, sizeof(*f));
    cl_err err = {0};
    assert_int_equal(cl_attest_sim_qe_generate(&f->qe_key, &f->qe_cert, &err), 0);
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = f->qe_key, .sim_isv_svn = 5};
    f->prov = cl_attest_provider_new(&cfg, &err);
    assert_non_null(f->prov);
    f->verifier = cl_attest_verifier_new(&err);
    assert_int_equal(cl_attest_verifier_trust_sim(f->verifier, f->qe_cert, &err), 0);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fx *f = *state;
    cl_attest_verifier_free(f->verifier);
    cl_attest_provider_free(f->prov);
    EVP_PKEY_free(f->qe_key);
    X509_free(f->qe_cert);
    free(f);
    return 0;
}

static void test_cbor_encodings(void **state)
{
    (void)state;
    cl_err err = {0};
    uint8_t hash[32];
    tu_fill_random(hash, 32, 3);
    uint8_t *claims;
    size_t claims_len;
    assert_int_equal(cl_ratls_claims_encode(hash, &claims, &claims_len, &err), 0);
    /* {"pubkey-hash": h'8201 5820 <hash>'} exactly as libcbor serializes Gramine's claims */
    static const uint8_t prefix[] = {0xA1, 0x6B, 'p', 'u', 'b', 'k', 'e', 'y', '-', 'h', 'a', 's', 'h',
                                     0x58, 0x24, 0x82, 0x01, 0x58, 0x20};
    assert_int_equal(claims_len, sizeof prefix + 32);
    assert_memory_equal(claims, prefix, sizeof prefix);
    assert_memory_equal(claims + sizeof prefix, hash, 32);
    uint8_t back[32];
    assert_int_equal(cl_ratls_claims_pubkey_hash(claims, claims_len, back, &err), 0);
    assert_memory_equal(back, hash, 32);

    uint8_t quote[300];
    tu_fill_random(quote, sizeof quote, 4);
    uint8_t *ev;
    size_t ev_len;
    assert_int_equal(cl_ratls_evidence_encode(quote, sizeof quote, claims, claims_len, &ev, &ev_len, &err), 0);
    static const uint8_t head[] = {0xD9, 0xEA, 0x60, 0x82, 0x59, 0x01, 0x2C};
    assert_memory_equal(ev, head, sizeof head);
    const uint8_t *q, *c;
    size_t ql, cl;
    assert_int_equal(cl_ratls_evidence_parse(ev, ev_len, &q, &ql, &c, &cl, &err), 0);
    assert_int_equal(ql, sizeof quote);
    assert_memory_equal(q, quote, ql);
    assert_int_equal(cl, claims_len);
    /* every truncation fails; so does a trailing byte and another tag */
    for (size_t cut = 0; cut < ev_len; cut++)
        assert_int_equal(cl_ratls_evidence_parse(ev, cut, &q, &ql, &c, &cl, &err), -1);
    uint8_t *longer = malloc(ev_len + 1);
    memcpy(longer, ev, ev_len);
    longer[ev_len] = 0;
    assert_int_equal(cl_ratls_evidence_parse(longer, ev_len + 1, &q, &ql, &c, &cl, &err), -1);
    assert_int_equal(err.code, CL_E_TRAILING);
    longer[2] = 0x61;
    assert_int_equal(cl_ratls_evidence_parse(longer, ev_len, &q, &ql, &c, &cl, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    for (size_t cut = 0; cut < claims_len; cut++)
        assert_int_equal(cl_ratls_claims_pubkey_hash(claims, cut, back, &err), -1);
    /* a SHA-384 hash entry is refused, not misread */
    claims[16] = 0x07;
    assert_int_equal(cl_ratls_claims_pubkey_hash(claims, claims_len, back, &err), -1);
    free(longer);
    free(ev);
    free(claims);
}

static bool contains(const uint8_t *hay, size_t n, const uint8_t *needle, size_t m)
{
    for (size_t i = 0; i + m <= n; i++)
        if (memcmp(hay + i, needle, m) == 0)
            return true;
    return false;
}

static void test_identity_and_verify(void **state)
{
    fx *f = *state;
    cl_err err = {0};
    cl_ratls_identity *id = cl_ratls_identity_new(f->prov, NULL, &err);
    assert_non_null(id);
    X509 *cert = cl_ratls_identity_cert(id);
    uint8_t *der = NULL;
    int der_len = i2d_X509(cert, &der);
    assert_true(der_len > 0);
    static const uint8_t legacy_oid[] = {0x06, 0x0B, 0x06, 0x09, 0x2A, 0x86, 0x48, 0x86, 0xF8, 0x4D, 0x8A, 0x39, 0x06};
    static const uint8_t tcg_oid[] = {0x06, 0x06, 0x67, 0x81, 0x05, 0x05, 0x04, 0x09};
    assert_true(contains(der, (size_t)der_len, legacy_oid, sizeof legacy_oid));
    assert_true(contains(der, (size_t)der_len, tcg_oid, sizeof tcg_oid));
    OPENSSL_free(der);

    cl_attest_claims c;
    cl_ratls_format fmt = 0;
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), 0);
    assert_int_equal(fmt, CL_RATLS_TCG);
    assert_int_equal(c.isv_svn, 5);
    assert_string_equal(c.evidence_type, "sim");

    /* an untrusting verifier refuses it */
    cl_attest_verifier *none = cl_attest_verifier_new(&err);
    assert_int_equal(cl_ratls_verify_cert(cert, none, &c, &fmt, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    cl_attest_verifier_free(none);
    cl_ratls_identity_free(id);
}

static void test_legacy_only_and_binding(void **state)
{
    fx *f = *state;
    cl_err err = {0};
    cl_ratls_identity_options o = {.no_legacy = false};
    EVP_PKEY *key = EVP_EC_gen("P-384");
    EVP_PKEY *other = EVP_EC_gen("P-256");
    uint8_t rd[64] = {0};
    assert_int_equal(cl_ratls_spki_sha256(key, rd, &err), 0);
    uint8_t *quote;
    size_t qlen;
    assert_int_equal(cl_attest_provider_quote(f->prov, rd, &quote, &qlen, &err), 0);
    (void)o;

    /* legacy extension only (older Gramine): verifies, bound to key */
    X509 *cert = cl_ratls_cert_build(key, quote, qlen, NULL, 0, 1, &err);
    assert_non_null(cert);
    cl_attest_claims c;
    cl_ratls_format fmt = 0;
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), 0);
    assert_int_equal(fmt, CL_RATLS_LEGACY);
    X509_free(cert);

    /* the same quote under the OID Gramine meant (1.2.840.113741.1337.6) is read too */
    cert = cl_ratls_cert_build(key, quote, qlen, NULL, 0, 1, &err);
    ASN1_OBJECT *gramine_oid = OBJ_txt2obj(CL_RATLS_OID_LEGACY_QUOTE, 1);
    int at = X509_get_ext_by_OBJ(cert, gramine_oid, -1);
    assert_true(at >= 0);
    ASN1_OBJECT *fixed = OBJ_txt2obj(CL_RATLS_OID_LEGACY_QUOTE_FIXED, 1);
    assert_int_equal(X509_EXTENSION_set_object(X509_get_ext(cert, at), fixed), 1);
    assert_true(X509_sign(cert, key, EVP_sha384()) > 0);
    assert_int_equal(X509_get_ext_by_OBJ(cert, gramine_oid, -1), -1);
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), 0);
    assert_int_equal(fmt, CL_RATLS_LEGACY);
    ASN1_OBJECT_free(gramine_oid);
    ASN1_OBJECT_free(fixed);
    X509_free(cert);

    /* the same evidence in a certificate for another key: refused */
    cert = cl_ratls_cert_build(other, quote, qlen, NULL, 0, 1, &err);
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "bind"));
    X509_free(cert);

    /* TCG evidence whose claims name `key` but sit in a certificate for `other` */
    uint8_t hash[32], *claims, *ev, *q2;
    size_t claims_len, ev_len, q2len;
    assert_int_equal(cl_ratls_spki_sha256(key, hash, &err), 0);
    assert_int_equal(cl_ratls_claims_encode(hash, &claims, &claims_len, &err), 0);
    memset(rd, 0, 64);
    SHA256(claims, claims_len, rd);
    assert_int_equal(cl_attest_provider_quote(f->prov, rd, &q2, &q2len, &err), 0);
    assert_int_equal(cl_ratls_evidence_encode(q2, q2len, claims, claims_len, &ev, &ev_len, &err), 0);
    cert = cl_ratls_cert_build(other, NULL, 0, ev, ev_len, 1, &err);
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    X509_free(cert);
    cert = cl_ratls_cert_build(key, NULL, 0, ev, ev_len, 1, &err);
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), 0);
    assert_int_equal(fmt, CL_RATLS_TCG);
    X509_free(cert);
    /* claims edited after quoting: report_data no longer binds them */
    ev[ev_len - 1] ^= 1;
    cert = cl_ratls_cert_build(key, NULL, 0, ev, ev_len, 1, &err);
    assert_int_equal(cl_ratls_verify_cert(cert, f->verifier, &c, &fmt, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    X509_free(cert);

    /* a plain certificate has no evidence */
    EVP_PKEY *k2;
    X509 *plain;
    assert_int_equal(cl_attest_sim_qe_generate(&k2, &plain, &err), 0);
    assert_int_equal(cl_ratls_verify_cert(plain, f->verifier, &c, &fmt, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    X509_free(plain);
    EVP_PKEY_free(k2);

    free(quote);
    free(q2);
    free(claims);
    free(ev);
    EVP_PKEY_free(key);
    EVP_PKEY_free(other);
}

/* ---- a TLS 1.3 handshake through a BIO pair, verification inside OpenSSL */

static int reject_svn_below_6(void *arg, SSL *ssl, const cl_attest_claims *c, cl_err *err)
{
    (void)ssl;
    int *calls = arg;
    (*calls)++;
    if (c->isv_svn < 6)
        return cl_err_set(err, CL_E_DENIED, "policy: ISV_SVN %u below 6", c->isv_svn);
    return 0;
}

static int handshake(SSL *client, SSL *server)
{
    int cdone = 0, sdone = 0;
    for (int i = 0; i < 100 && !(cdone && sdone); i++) {
        if (!cdone) {
            int r = SSL_do_handshake(client);
            if (r == 1)
                cdone = 1;
            else if (SSL_get_error(client, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
        if (!sdone) {
            int r = SSL_do_handshake(server);
            if (r == 1)
                sdone = 1;
            else if (SSL_get_error(server, r) != SSL_ERROR_WANT_READ)
                return -1;
        }
    }
    /* TLS 1.3: the server verifies the client certificate after the client thinks it is done */
    return cdone && sdone ? 0 : -1;
}

static void run_tls(fx *f, bool client_has_cert, cl_ratls_policy_fn policy, int *calls, int expect_ok)
{
    cl_err err = {0};
    EVP_PKEY *skey;
    X509 *scert;
    assert_int_equal(cl_attest_sim_qe_generate(&skey, &scert, &err), 0);
    SSL_CTX *sctx = SSL_CTX_new(TLS_server_method()), *cctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_min_proto_version(sctx, TLS1_3_VERSION);
    SSL_CTX_set_min_proto_version(cctx, TLS1_3_VERSION);
    assert_int_equal(SSL_CTX_use_certificate(sctx, scert), 1);
    assert_int_equal(SSL_CTX_use_PrivateKey(sctx, skey), 1);
    cl_ratls_verify_ctx vctx = {.verifier = f->verifier, .policy = policy, .policy_arg = calls};
    assert_int_equal(cl_ratls_ssl_ctx_require_peer(sctx, &vctx, &err), 0);
    cl_ratls_identity *id = NULL;
    if (client_has_cert) {
        id = cl_ratls_identity_new(f->prov, NULL, &err);
        assert_non_null(id);
        assert_int_equal(cl_ratls_identity_use(id, cctx, &err), 0);
    }
    SSL *s = SSL_new(sctx), *c = SSL_new(cctx);
    BIO *b1, *b2;
    assert_int_equal(BIO_new_bio_pair(&b1, 0, &b2, 0), 1);
    SSL_set_bio(s, b1, b1);
    SSL_set_bio(c, b2, b2);
    SSL_set_accept_state(s);
    SSL_set_connect_state(c);
    int rc = handshake(c, s);
    if (expect_ok) {
        assert_int_equal(rc, 0);
        const cl_attest_claims *claims = cl_ratls_peer_claims(s);
        assert_non_null(claims);
        assert_int_equal(claims->isv_svn, 5);
        assert_null(cl_ratls_peer_error(s));
    } else {
        assert_int_equal(rc, -1);
        assert_null(cl_ratls_peer_claims(s));
        if (client_has_cert) {
            assert_non_null(cl_ratls_peer_error(s));
            assert_int_equal(cl_ratls_peer_error(s)->code, CL_E_DENIED);
        } else {
            assert_null(cl_ratls_peer_error(s));
        }
    }
    SSL_free(s);
    SSL_free(c);
    SSL_CTX_free(sctx);
    SSL_CTX_free(cctx);
    cl_ratls_identity_free(id);
    EVP_PKEY_free(skey);
    X509_free(scert);
}

static int accept_all(void *arg, SSL *ssl, const cl_attest_claims *c, cl_err *err)
{
    (void)ssl; (void)c; (void)err;
    (*(int *)arg)++;
    return 0;
}

static void test_tls_handshake(void **state)
{
    fx *f = *state;
    int calls = 0;
    run_tls(f, true, accept_all, &calls, 1);
    assert_int_equal(calls, 1);
    calls = 0;
    run_tls(f, true, reject_svn_below_6, &calls, 0);
    assert_int_equal(calls, 1);
    calls = 0;
    run_tls(f, false, accept_all, &calls, 0);
    assert_int_equal(calls, 0);
}

/* With the secure heap set up, an identity's private key lives in it (generated there, freed with
 * the identity). */
static void test_identity_key_in_secure_heap(void **state)
{
    fx *f = *state;
    cl_err err = {0};
    assert_int_equal(cl_secure_heap_init(1 << 20, &err), 0);
    size_t base = cl_secure_heap_used();
    for (int i = 0; i < 2; i++) {
        cl_ratls_identity_options o = {.curve = i ? "P-384" : "P-256"};
        cl_ratls_identity *id = cl_ratls_identity_new(f->prov, &o, &err);
        assert_non_null(id);
        assert_true(cl_secure_heap_used() >= base + (i ? 48 : 32));
        cl_ratls_identity_free(id);
        assert_int_equal(cl_secure_heap_used(), base);
    }
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cbor_encodings),
        cmocka_unit_test_setup_teardown(test_identity_and_verify, setup, teardown),
        cmocka_unit_test_setup_teardown(test_legacy_only_and_binding, setup, teardown),
        cmocka_unit_test_setup_teardown(test_tls_handshake, setup, teardown),
        cmocka_unit_test_setup_teardown(test_identity_key_in_secure_heap, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
