/* test_attest.c — unit tests of the attest module: the quote parser against real DCAP quotes (every
 * field of the TD 1.0 and 1.5 bodies) and hostile input, the sim provider (SGX and TDX modes) and
 * verifier, RTMR extend, claims as JSON, and the gramine/tsm providers against temporary
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

static const char *ZERO48 =
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";

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
    /* every field of the TD 1.0 body, against the bytes read independently (Python, offsets of Intel's
     * TD quote body: TEE_TCB_SVN 0, MRSEAM 16, MRSIGNERSEAM 64, SEAMATTRIBUTES 112, TDATTRIBUTES 120,
     * XFAM 128, MRTD 136, MRCONFIGID 184, MROWNER 232, MROWNERCONFIG 280, RTMR0-3 328.., REPORTDATA 520) */
    hex_eq(q.tee_tcb_svn, 16, "06010300000000000000000000000000");
    hex_eq(q.mr_seam, 48, "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1");
    hex_eq(q.mr_signer_seam, 48, ZERO48);
    hex_eq(q.seam_attributes, 8, "0000000000000000");
    hex_eq(q.td_attributes, 8, "0000001000000000"); /* SEPT_VE_DISABLE, not debug */
    hex_eq(q.xfam, 8, "e702060000000000");
    hex_eq(q.mr_td, 48, "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7");
    hex_eq(q.mr_config_id, 48, ZERO48);
    hex_eq(q.mr_owner, 48, ZERO48);
    hex_eq(q.mr_owner_config, 48, ZERO48);
    hex_eq(q.rtmr[0], 48, "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0");
    hex_eq(q.rtmr[1], 48, "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378");
    hex_eq(q.rtmr[2], 48, "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132");
    hex_eq(q.rtmr[3], 48, ZERO48);
    hex_eq(q.report_data, 64, "9a9d48e7f6799642d3d1b34e1e5e1742d4bb02dd6ddd551862c1211d35c304f9eca3efdbb481601c163cf52493d6e44a"
                              "ed55d51ec39b7e518fadb92c2b523f20");
    hex_eq(q.tee_tcb_svn2, 16, "00000000000000000000000000000000"); /* TD 1.5 only */
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
    hex_eq(q.tee_tcb_svn, 16, "07010300000000000000000000000000");
    hex_eq(q.mr_seam, 48, "49b66faa451d19ebbdbe89371b8daf2b65aa3984ec90110343e9e2eec116af08850fa20e3b1aa9a874d77a65380ee7e6");
    hex_eq(q.xfam, 8, "e718060000000000");
    hex_eq(q.td_attributes, 8, "0000001000000000");
    for (int i = 0; i < 4; i++)
        hex_eq(q.rtmr[i], 48, ZERO48);
    hex_eq(q.report_data, 32, "d2142b643598eb5fae2bc8529dd79a558b29f868ccbb6531cb28dab9dce47728");
    /* the TD 1.5 fields after REPORTDATA: TEE_TCB_SVN2 at 584, MRSERVICETD at 600 */
    hex_eq(q.tee_tcb_svn2, 16, "0d010300000000000000000000000000");
    hex_eq(q.mr_servicetd, 48, ZERO48);
    assert_int_equal(q.signed_len, 48 + 6 + 648);
    /* each field comes from its own offset: a byte flipped in one moves only that one */
    cl_attest_quote q2;
    static const size_t spots[] = {16, 64, 112, 128, 184, 232, 280, 472, 584, 600};
    for (size_t k = 0; k < CL_ARRAY_LEN(spots); k++) {
        b[48 + 6 + spots[k]] ^= 0x5a;
        assert_int_equal(cl_attest_quote_parse(b, len, &q2, &err), 0);
        const uint8_t *moved[] = {q2.mr_seam, q2.mr_signer_seam, q2.seam_attributes, q2.xfam, q2.mr_config_id,
                                  q2.mr_owner, q2.mr_owner_config, q2.rtmr[3], q2.tee_tcb_svn2, q2.mr_servicetd};
        const uint8_t *orig[] = {q.mr_seam, q.mr_signer_seam, q.seam_attributes, q.xfam, q.mr_config_id,
                                 q.mr_owner, q.mr_owner_config, q.rtmr[3], q.tee_tcb_svn2, q.mr_servicetd};
        assert_int_equal(moved[k][0], orig[k][0] ^ 0x5a);
        assert_memory_equal(q2.mr_td, q.mr_td, 48);
        b[48 + 6 + spots[k]] ^= 0x5a;
    }
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

/* A stand-in back end (the real one is DCAP, test_dcap): accepts quotes whose MRSIGNER it is given, so
 * the verifier's routing to back ends is tested on its own. */
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

    /* the tdx_guest provider answering with something that is not a TD quote (an SGX one) */
    size_t slen;
    uint8_t *sgx = load_vector("sgx_quote", &slen);
    memcpy(sgx + 48 + 320, rd, 64);
    tu_write_file(outblob, sgx, slen);
    assert_int_equal(cl_attest_provider_quote(p, rd, &got, &got_len, &err), -1);
    assert_non_null(strstr(err.msg, "not a TDX quote"));
    assert_null(got);
    free(sgx);
    tu_write_file(outblob, quote, qlen);

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

/* The sim provider's TDX mode: a v4 TD quote the sim back end verifies into TDX claims. */
static void test_sim_tdx_roundtrip(void **state)
{
    sim_fixture *f = *state;
    cl_err err = {0};
    uint8_t mrtd[48], rtmr2[48];
    tu_fill_random(mrtd, sizeof mrtd, 21);
    tu_fill_random(rtmr2, sizeof rtmr2, 22);
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = f->key, .sim_tdx = true,
                                     .sim_mrtd = mrtd, .sim_rtmr = {NULL, NULL, rtmr2, NULL}};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    uint8_t rd[64], *quote;
    size_t qlen;
    tu_fill_random(rd, sizeof rd, 23);
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(quote, qlen, &q, &err), 0);
    assert_int_equal(q.version, 4);
    assert_int_equal(q.tee_type, CL_QUOTE_TEE_TDX);
    assert_int_equal(q.body_kind, CL_QUOTE_BODY_TD10);
    assert_int_equal(q.cert_type, 6);
    assert_int_equal(q.padding, 0);
    assert_memory_equal(q.mr_td, mrtd, 48);
    assert_memory_equal(q.rtmr[2], rtmr2, 48);
    assert_memory_equal(q.report_data, rd, 64);
    assert_false(q.debug);

    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    cl_attest_claims c;
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1); /* untrusted key */
    assert_int_equal(err.code, CL_E_AUTH);
    assert_int_equal(cl_attest_verifier_trust_sim(v, f->cert, &err), 0);
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), 0);
    assert_string_equal(c.evidence_type, "sim");
    assert_true(c.insecure);
    assert_int_equal(c.tee_type, CL_QUOTE_TEE_TDX);
    assert_memory_equal(c.tdx.mr_td, mrtd, 48);
    assert_memory_equal(c.tdx.rtmr[2], rtmr2, 48);
    static const uint8_t zero[48];
    assert_memory_equal(c.tdx.rtmr[0], zero, 48);
    assert_memory_equal(c.mr_enclave, zero, 32); /* the SGX fields stay empty */
    assert_memory_equal(c.report_data, rd, 64);
    /* the whole TD body is signed */
    for (size_t off = 48; off < 48 + 584; off += 61) {
        quote[off] ^= 0x08;
        assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1);
        quote[off] ^= 0x08;
    }
    /* a TD sim quote without the sim certification type inside is not a sim quote */
    quote[48 + 584 + 4 + 128 + 6 + 384 + 64 + 2] ^= 1;
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    free(quote);
    cl_attest_provider_free(p);

    /* debug: TUD.DEBUG set, and the default MRTD is SHA-384 of the executable */
    cl_attest_provider_config dcfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = f->key, .sim_tdx = true,
                                      .sim_debug = true};
    p = cl_attest_provider_new(&dcfg, &err);
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);
    assert_int_equal(cl_attest_verify(v, quote, qlen, &c, &err), 0);
    assert_true(c.debug);
    assert_int_equal(c.tdx.td_attributes[0] & CL_TDX_ATTR_DEBUG, CL_TDX_ATTR_DEBUG);
    uint8_t exe[48];
    assert_int_equal(cl_attest_file_sha384("/proc/self/exe", exe, &err), 0);
    assert_memory_equal(c.tdx.mr_td, exe, 48);
    free(quote);
    cl_attest_provider_free(p);
    cl_attest_verifier_free(v);
}

/* RTMR extend against a hand computation with Python's hashlib:
 * r1 = sha384(bytes(48) + sha384(b"cloister kernel")), r2 = sha384(r1 + sha384(b"cloister initrd")). */
static void test_rtmr_extend(void **state)
{
    (void)state;
    uint8_t reg[48] = {0}, d[48];
    cl_err err = {0};
    assert_int_equal(cl_hex_decode("eebc4ee0ee5bee170d83d41fe3a147fda6dce975ae830915befaa641546ab368db3bced593ab312a9c5cfe7b3b6f4898",
                                   96, d, 48), 0);
    assert_int_equal(cl_attest_rtmr_extend(reg, d, &err), 0);
    hex_eq(reg, 48, "29d499a0f1348b1f2ccb7b6f33ff5922a8eddece4087879a597f18fa4a2dd123d1976f46ab65db0f2deac98ce8227840");
    assert_int_equal(cl_hex_decode("6c31a25736833746a9f17395d71372782d250920b52200af7c1132036a734f827fc61794a95a11510c22f217d6eea16c",
                                   96, d, 48), 0);
    assert_int_equal(cl_attest_rtmr_extend(reg, d, &err), 0);
    hex_eq(reg, 48, "9f9d358c29dfa8fb3df5fb5bdf22e8878f3b92fa9fd474ccf90bea836578c0f21a06974e6f04df8a6c1cd257a56bb6da");
}

static void test_claims_json_tdx(void **state)
{
    (void)state;
    cl_attest_claims c = {.tee_type = CL_QUOTE_TEE_TDX, .debug = true};
    snprintf(c.evidence_type, sizeof c.evidence_type, "tdx-dcap");
    memset(c.tdx.mr_td, 0xab, 48);
    c.tdx.rtmr[3][47] = 0x01;
    c.tdx.xfam[0] = 0xe7;
    c.tdx.tee_tcb_svn[1] = 0x05;
    c.mr_enclave[0] = 0x77; /* never printed for TDX */
    char *j = cl_attest_claims_json(&c, false);
    assert_non_null(j);
    char want[128] = "\"mrtd\":\"";
    for (int i = 0; i < 48; i++)
        strcat(want, "ab");
    strcat(want, "\"");
    assert_non_null(strstr(j, want));
    assert_non_null(strstr(j, "\"rtmr3\":\"000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000001\""));
    assert_non_null(strstr(j, "\"rtmr0\":\"" "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000\""));
    assert_non_null(strstr(j, "\"xfam\":\"e700000000000000\""));
    assert_non_null(strstr(j, "\"tee_tcb_svn\":\"00050000000000000000000000000000\""));
    assert_non_null(strstr(j, "\"mrconfigid\":"));
    assert_non_null(strstr(j, "\"mrsignerseam\":"));
    assert_non_null(strstr(j, "\"allow_debug\":true"));
    assert_non_null(strstr(j, "\"evidence_types\":[\"tdx-dcap\"]"));
    assert_null(strstr(j, "mrenclave"));
    assert_null(strstr(j, "isv_prod_id"));
    assert_null(strstr(j, "tee_tcb_svn2")); /* TD 1.0 */
    free(j);
    c.tdx.td15 = true;
    j = cl_attest_claims_json(&c, false);
    assert_non_null(strstr(j, "\"tee_tcb_svn2\":"));
    assert_non_null(strstr(j, "\"mrservicetd\":"));
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
        cmocka_unit_test_setup_teardown(test_sim_tdx_roundtrip, sim_setup, sim_teardown),
        cmocka_unit_test(test_rtmr_extend),
        cmocka_unit_test(test_claims_json_tdx),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
