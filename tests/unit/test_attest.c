/* test_attest.c — unit tests of the attest module: the quote parser against real DCAP quotes and
 * hostile input, the sim provider and verifier, and the gramine/tsm providers against temporary
 * directories laid out as Gramine and the kernel present them. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/sha.h>

#include "cloister/attest.h"

#ifndef CLOISTER_TEST_DATA
#error "CLOISTER_TEST_DATA must point at tests/data"
#endif

static uint8_t *load_vector(const char *name, size_t *len)
{
    char *p = tu_path(CLOISTER_TEST_DATA "/dcap-qvl", name);
    uint8_t *b = tu_read_file(p, len);
    free(p);
    return b;
}

static void hex_eq(const uint8_t *bytes, size_t n, const char *hex)
{
    char buf[200];
    cl_hex_encode(bytes, n, buf);
    assert_string_equal(buf, hex);
}

static void test_parse_real_sgx_v3(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = load_vector("sgx_quote", &len);
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), 0);
    assert_int_equal(q.version, 3);
    assert_int_equal(q.tee_type, CL_QUOTE_TEE_SGX);
    assert_int_equal(q.body_kind, CL_QUOTE_BODY_SGX);
    hex_eq(q.mr_enclave, 32, "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb");
    hex_eq(q.mr_signer, 32, "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6");
    assert_int_equal(q.isv_prod_id, 0);
    assert_int_equal(q.isv_svn, 0);
    assert_false(q.debug); /* attributes 0x05: INIT|MODE64 */
    assert_memory_equal(q.report_data, "Hello, world!", 13);
    assert_int_equal(q.cert_type, 5); /* PCK certificate chain */
    assert_int_equal(q.cert_len, 3548);
    assert_int_equal(q.quote_len, len);
    assert_int_equal(q.padding, 0);
    assert_int_equal(q.signed_len, 48 + 384);
    free(b);
}

static void test_parse_real_tdx_v4_v5(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = load_vector("tdx_quote", &len);
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), 0);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.tee_type, CL_QUOTE_TEE_TDX);
    assert_int_equal(q.body_kind, CL_QUOTE_BODY_TD10);
    hex_eq(q.mr_td, 48, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
    assert_int_equal(q.cert_type, 6);
    assert_int_equal(q.padding, 70);
    assert_int_equal(q.quote_len + 70, len);
    assert_false(q.debug);
    /* non-zero padding is refused */
    b[len - 1] = 1;
    assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), -1);
    assert_int_equal(err.code, CL_E_TRAILING);
    free(b);

    b = load_vector("tdx_quote_outdated", &len);
    assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), 0);
    assert_int_equal(q.version, 5);
    assert_int_equal(q.body_kind, CL_QUOTE_BODY_TD15);
    hex_eq(q.mr_td, 48, "273828c46252fcbdd8ad2dd907130222b03466d52a2911d70c1a5950895d6bd1ae451d382d5a9b1b4c0ed0e5ae9a3dbd");
    assert_int_equal(q.signed_len, 48 + 6 + 648);
    free(b);
}

/* Every strict prefix of a real quote must be refused, never read past the end. */
static void test_parse_truncations_and_corruptions(void **state)
{
    (void)state;
    const char *names[] = {"sgx_quote", "tdx_quote_outdated"};
    for (size_t n = 0; n < 2; n++) {
        size_t len;
        uint8_t *b = load_vector(names[n], &len);
        cl_attest_quote q;
        cl_err err = {0};
        for (size_t cut = 0; cut < len; cut++) {
            uint8_t *copy = malloc(cut ? cut : 1);
            memcpy(copy, b, cut);
            assert_int_equal(cl_attest_quote_parse(copy, cut, &q, &err), -1);
            free(copy);
        }
        /* a signature-data length pointing past the end */
        uint8_t *c = malloc(len);
        memcpy(c, b, len);
        size_t sl_off = q.signed_len ? 0 : 0;
        assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), 0);
        sl_off = q.signed_len;
        c[sl_off + 3] = 0x7f;
        assert_int_equal(cl_attest_quote_parse(c, len, &q, &err), -1);
        assert_int_equal(err.code, CL_E_TRUNCATED);
        /* unknown version and key type */
        memcpy(c, b, len);
        c[0] = 9;
        assert_int_equal(cl_attest_quote_parse(c, len, &q, &err), -1);
        assert_int_equal(err.code, CL_E_VERSION);
        memcpy(c, b, len);
        c[2] = 7;
        assert_int_equal(cl_attest_quote_parse(c, len, &q, &err), -1);
        free(c);
        free(b);
    }
}

typedef struct sim_fixture {
    EVP_PKEY *key;
    X509 *cert;
} sim_fixture;

static int sim_setup(void **state)
{
    sim_fixture *f = calloc(1, sizeof(*f));
    cl_err err = {0};
    assert_int_equal(cl_attest_sim_qe_generate(&f->key, &f->cert, &err), 0);
    *state = f;
    return 0;
}

static int sim_teardown(void **state)
{
    sim_fixture *f = *state;
    EVP_PKEY_free(f->key);
    X509_free(f->cert);
    free(f);
    return 0;
}

static void test_sim_roundtrip(void **state)
{
    sim_fixture *f = *state;
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = f->key, .sim_isv_prod_id = 7,
                                     .sim_isv_svn = 3};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    uint8_t rd[64];
    tu_fill_random(rd, sizeof rd, 1);
    uint8_t *quote;
    size_t qlen;
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);

    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(quote, qlen, &q, &err), 0);
    assert_int_equal(q.version, 3);
    assert_memory_equal(q.report_data, rd, 64);
    uint8_t exe[32];
    assert_int_equal(cl_attest_file_sha256("/proc/self/exe", exe, &err), 0);
    assert_memory_equal(q.mr_enclave, exe, 32);

    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    cl_attest_claims c;
    /* not trusted yet: refused */
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_int_equal(cl_attest_verifier_trust_sim(v, f->cert, &err), 0);
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), 0);
    assert_string_equal(c.evidence_type, "sim");
    assert_true(c.insecure);
    assert_int_equal(c.isv_prod_id, 7);
    assert_int_equal(c.isv_svn, 3);
    assert_false(c.debug);
    assert_memory_equal(c.mr_enclave, exe, 32);
    assert_memory_equal(c.report_data, rd, 64);
    uint8_t digest[32];
    SHA256(quote, qlen, digest);
    assert_memory_equal(c.evidence_sha256, digest, 32);

    /* any change to the signed part breaks the signature */
    for (size_t off = 64; off < 48 + 384; off += 97) {
        quote[off] ^= 0x40;
        assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1);
        assert_int_equal(err.code, CL_E_AUTH);
        quote[off] ^= 0x40;
    }
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), 0);
    free(quote);
    cl_attest_verifier_free(v);
    cl_attest_provider_free(p);
}

static void test_sim_untrusted_key_and_debug(void **state)
{
    sim_fixture *f = *state;
    cl_err err = {0};
    EVP_PKEY *other_key;
    X509 *other_cert;
    assert_int_equal(cl_attest_sim_qe_generate(&other_key, &other_cert, &err), 0);
    uint8_t mre[32] = {1, 2, 3};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = other_key, .sim_mrenclave = mre,
                                     .sim_debug = true};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    uint8_t rd[64] = {0}, *quote;
    size_t qlen;
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    assert_int_equal(cl_attest_verifier_trust_sim(v, f->cert, &err), 0);
    cl_attest_claims c;
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "untrusted"));
    assert_int_equal(cl_attest_verifier_trust_sim(v, other_cert, &err), 0);
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), 0);
    assert_true(c.debug);
    assert_memory_equal(c.mr_enclave, mre, 32);
    free(quote);
    cl_attest_verifier_free(v);
    cl_attest_provider_free(p);
    EVP_PKEY_free(other_key);
    X509_free(other_cert);
}

static void test_real_quote_without_backend_fails_closed(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = load_vector("sgx_quote", &len);
    cl_err err = {0};
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    cl_attest_claims c;
    assert_int_equal(cl_attest_verify(v, b, len, &c, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    cl_attest_verifier_free(v);
    free(b);
}

/* A stand-in for the DCAP back end of a later issue: accepts quotes whose MRSIGNER it is given. */
static int fake_backend(void *ctx, const cl_attest_quote *q, cl_attest_claims *c, cl_err *err)
{
    if (memcmp(q->mr_signer, ctx, 32) != 0)
        return cl_err_set(err, CL_E_AUTH, "fake: signature does not verify");
    snprintf(c->evidence_type, sizeof c->evidence_type, "sgx-dcap");
    snprintf(c->tcb_status, sizeof c->tcb_status, "ConfigurationAndSWHardeningNeeded");
    return 0;
}

static void test_backend_routing(void **state)
{
    (void)state;
    size_t len;
    uint8_t *b = load_vector("sgx_quote", &len);
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(b, len, &q, &err), 0);
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    uint8_t wrong[32] = {0};
    assert_int_equal(cl_attest_verifier_add_backend(v, "fake", fake_backend, wrong, &err), 0);
    cl_attest_claims c;
    assert_int_equal(cl_attest_verify(v, b, len, &c, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "fake: "));
    assert_string_equal(c.evidence_type, ""); /* claims are cleared on failure */
    cl_attest_verifier_free(v);

    v = cl_attest_verifier_new(&err);
    assert_int_equal(cl_attest_verifier_add_backend(v, "fake", fake_backend, q.mr_signer, &err), 0);
    assert_int_equal(cl_attest_verify(v, b, len, &c, &err), 0);
    assert_string_equal(c.evidence_type, "sgx-dcap");
    assert_string_equal(c.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_false(c.insecure);
    assert_memory_equal(c.mr_enclave, q.mr_enclave, 32);
    assert_memory_equal(c.report_data, "Hello, world!", 13);
    cl_attest_verifier_free(v);
    free(b);
}

/* A quote that carries `rd` (made with the sim provider), to play the part of the TEE. */
static uint8_t *make_sim_quote(EVP_PKEY *key, const uint8_t rd[64], size_t *len)
{
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = key};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    uint8_t *q;
    assert_int_equal(cl_attest_provider_quote(p, rd, &q, len, &err), 0);
    cl_attest_provider_free(p);
    return q;
}

static void test_gramine_provider(void **state)
{
    sim_fixture *f = *state;
    char *dir = tu_tmpdir();
    char *type = tu_path(dir, "attestation_type"), *urd = tu_path(dir, "user_report_data"),
         *qp = tu_path(dir, "quote");
    uint8_t rd[64];
    tu_fill_random(rd, 64, 9);
    size_t qlen;
    uint8_t *quote = make_sim_quote(f->key, rd, &qlen);
    tu_write_file(type, "dcap", 4);
    tu_write_file(urd, "", 0);
    tu_write_file(qp, quote, qlen);

    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_GRAMINE, .root = dir};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    uint8_t *got;
    size_t got_len;
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), 0);
    assert_int_equal(got_len, qlen);
    assert_memory_equal(got, quote, qlen);
    free(got);
    size_t n;
    uint8_t *written = tu_read_file(urd, &n);
    assert_int_equal(n, 64);
    assert_memory_equal(written, rd, 64);
    free(written);

    /* the "enclave" answers with a quote for other report data: refused */
    uint8_t other[64] = {0};
    assert_int_equal(cl_attest_provider_quote(p, other, &got, &got_len, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_null(got);

    /* attestation disabled in the manifest */
    tu_write_file(type, "none\n", 5);
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    cl_attest_provider_free(p);

    /* not inside Gramine at all */
    cl_attest_provider_config missing = {.kind = CL_ATTEST_GRAMINE, .root = "/nonexistent/attestation"};
    p = cl_attest_provider_new(&missing, &err);
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    cl_attest_provider_free(p);

    free(quote);
    free(type);
    free(urd);
    free(qp);
    tu_rmrf(dir);
    free(dir);
}

static void test_tsm_provider(void **state)
{
    (void)state;
    /* a TDX quote (real, with report_data replaced: the provider does not check signatures) */
    size_t qlen;
    uint8_t *quote = load_vector("tdx_quote", &qlen);
    uint8_t rd[64];
    tu_fill_random(rd, 64, 5);
    memcpy(quote + 48 + 520, rd, 64);

    char *root = tu_tmpdir();
    char name[64];
    snprintf(name, sizeof name, "cloister-%ld", (long)getpid());
    char *entry = tu_path(root, name);
    assert_int_equal(mkdir(entry, 0700), 0);
    char *inblob = tu_path(entry, "inblob"), *outblob = tu_path(entry, "outblob"),
         *prov = tu_path(entry, "provider"), *gen = tu_path(entry, "generation");
    tu_write_file(inblob, "", 0);
    tu_write_file(outblob, quote, qlen);
    tu_write_file(prov, "tdx_guest\n", 10);
    tu_write_file(gen, "1\n", 2);

    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_TSM, .root = root};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    uint8_t *got;
    size_t got_len;
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), 0);
    assert_int_equal(got_len, qlen);
    free(got);
    size_t n;
    uint8_t *in = tu_read_file(inblob, &n);
    assert_int_equal(n, 64);
    assert_memory_equal(in, rd, 64);
    free(in);
    assert_true(tu_file_exists(entry)); /* an entry we did not create is left alone */

    tu_write_file(prov, "sev_guest\n", 10);
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    cl_attest_provider_free(p);

    free(quote);
    free(inblob);
    free(outblob);
    free(prov);
    free(gen);
    free(entry);
    tu_rmrf(root);
    free(root);
}

static void test_claims_json(void **state)
{
    (void)state;
    cl_attest_claims c = {.isv_prod_id = 4, .isv_svn = 2};
    snprintf(c.evidence_type, sizeof c.evidence_type, "sim");
    c.mr_enclave[0] = 0xab;
    char *j = cl_attest_claims_json(&c, false);
    assert_non_null(strstr(j, "\"mrenclave\":\"ab00"));
    assert_non_null(strstr(j, "\"isv_prod_id\":4"));
    assert_non_null(strstr(j, "\"min_isv_svn\":2"));
    assert_non_null(strstr(j, "\"evidence_types\":[\"sim\"]"));
    free(j);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse_real_sgx_v3),
        cmocka_unit_test(test_parse_real_tdx_v4_v5),
        cmocka_unit_test(test_parse_truncations_and_corruptions),
        cmocka_unit_test_setup_teardown(test_sim_roundtrip, sim_setup, sim_teardown),
        cmocka_unit_test_setup_teardown(test_sim_untrusted_key_and_debug, sim_setup, sim_teardown),
        cmocka_unit_test(test_real_quote_without_backend_fails_closed),
        cmocka_unit_test(test_backend_routing),
        cmocka_unit_test_setup_teardown(test_gramine_provider, sim_setup, sim_teardown),
        cmocka_unit_test(test_tsm_provider),
        cmocka_unit_test(test_claims_json),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
