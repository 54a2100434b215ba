/* test_policy.c — unit tests of the policy module: the documented example parses, every validation
 * rule rejects what it should (fail-closed), and matching reports which check failed. */
#include "testutil.h"

#include <stdlib.h>
#include <string.h>

#include "cloister/policy.h"

#ifndef CLOISTER_DOCS_DIR
#error "CLOISTER_DOCS_DIR must point at docs/"
#endif

static const char *MRE = "33d8736db756ed4997e04ba358d27833188f1932ff7b1d156904d3f560452fbb";
static const char *MRS = "815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6";

static cl_attest_claims claims(const char *mre, const char *mrs, uint16_t prod, uint16_t svn, const char *type)
{
    cl_attest_claims c = {0};
    assert_int_equal(cl_hex_decode(mre, 64, c.mr_enclave, 32), 0);
    assert_int_equal(cl_hex_decode(mrs, 64, c.mr_signer, 32), 0);
    c.isv_prod_id = prod;
    c.isv_svn = svn;
    snprintf(c.evidence_type, sizeof c.evidence_type, "%s", type);
    snprintf(c.tcb_status, sizeof c.tcb_status, "UpToDate");
    return c;
}

static void test_documented_example(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_policy *p = cl_policy_load(CLOISTER_DOCS_DIR "/policy-example.json", &err);
    if (!p)
        fail_msg("%s", err.msg);
    assert_int_equal(cl_policy_identity_count(p), 3);
    cl_policy_decision d;

    cl_attest_claims c = claims(MRE, MRS, 1, 2, "sgx-dcap");
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_string_equal(d.identities, "model-server");
    assert_true(cl_policy_grants(p, &c, "resnet50-key"));
    assert_true(cl_policy_grants(p, &c, "serving-tls-key"));
    assert_false(cl_policy_grants(p, &c, "dev-model-key"));
    assert_false(cl_policy_grants(p, &c, "unknown"));
    assert_string_equal(cl_policy_secret_prov(p, &c), "resnet50-key");

    /* SVN 3: both the exact build and the signer rule match */
    c.isv_svn = 3;
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_string_equal(d.identities, "model-server,any-signed-release");

    /* another enclave by the same signer, SVN 3: only the signer rule, only its secret */
    c = claims("1111111111111111111111111111111111111111111111111111111111111111", MRS, 1, 3, "sgx-dcap");
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_true(cl_policy_grants(p, &c, "resnet50-key"));
    assert_false(cl_policy_grants(p, &c, "serving-tls-key"));

    /* each check, alone, denies */
    struct { cl_attest_claims c; const char *why; } cases[] = {
        {claims("2222222222222222222222222222222222222222222222222222222222222222", MRS, 1, 2, "sgx-dcap"),
         "mrenclave"},
        {claims(MRE, "3333333333333333333333333333333333333333333333333333333333333333", 1, 5, "sgx-dcap"),
         "mrsigner"},
        {claims(MRE, MRS, 2, 5, "sgx-dcap"), "isv_prod_id"},
        {claims(MRE, MRS, 1, 1, "sgx-dcap"), "below minimum"},
        {claims(MRE, MRS, 1, 5, "sim"), "evidence type"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        assert_int_equal(cl_policy_evaluate(p, &cases[i].c, &d), -1);
        assert_false(d.allowed);
        if (!strstr(d.reason, cases[i].why))
            fail_msg("case %zu: '%s' does not mention '%s'", i, d.reason, cases[i].why);
        assert_false(cl_policy_grants(p, &cases[i].c, "resnet50-key"));
        assert_null(cl_policy_secret_prov(p, &cases[i].c));
    }
    c = claims(MRE, MRS, 1, 5, "sgx-dcap");
    c.debug = true;
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_non_null(strstr(d.reason, "debug"));
    c.debug = false;
    snprintf(c.tcb_status, sizeof c.tcb_status, "OutOfDate");
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_non_null(strstr(d.reason, "TCB status"));
    snprintf(c.tcb_status, sizeof c.tcb_status, "SWHardeningNeeded");
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_string_equal(d.identities, "model-server"); /* the signer rule keeps the UpToDate default */

    /* the sim identity allows debug */
    c = claims("0000000000000000000000000000000000000000000000000000000000000000", MRS, 0, 0, "sim");
    c.debug = true;
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_true(cl_policy_grants(p, &c, "dev-model-key"));
    assert_string_equal(cl_policy_secret_prov(p, &c), "dev-model-key");
    cl_policy_free(p);
}

static void test_invalid_policies_rejected(void **state)
{
    (void)state;
    const char *bad[] = {
        "",
        "[]",
        "{\"identities\": []}",
        "{\"version\": 2, \"identities\": []}",
        "{\"version\": 1}",
        "{\"version\": 1, \"identities\": [], \"extra\": 1}",
        "{\"version\": 1, \"identities\": [{\"secrets\": []}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"abc\", \"secrets\": []}]}",
        "{\"version\": 1, \"identities\": [{\"mrsigner\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": []}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"min_isv_svm\": 1}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"min_isv_svn\": 70000}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"min_isv_svn\": \"1\"}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"min_isv_svn\": 1e300}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"isv_prod_id\": 1.5}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"allow_debug\": 1}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"evidence_types\": [\"epid\"]}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"tcb_statuses\": [\"Revoked\"]}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a b\"]}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\", \"a\"]}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"], \"secret_prov\": \"b\"}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": \"a\"}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"]},]}",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        cl_err err = {0};
        cl_policy *p = cl_policy_parse(bad[i], strlen(bad[i]), &err);
        if (p)
            fail_msg("policy %zu was accepted: %s", i, bad[i]);
        assert_true(err.code == CL_E_FORMAT || err.code == CL_E_VERSION);
        assert_true(strlen(err.msg) > 0);
    }
    /* the path of the offending field is named */
    cl_err err = {0};
    assert_null(cl_policy_parse(bad[10], strlen(bad[10]), &err));
    assert_non_null(strstr(err.msg, "identities[0].min_isv_svm"));
}

/* A field given more than once adds to its list: 33 entries over repeats overflowed the fixed arrays
 * (a crash in policy check, the key server and its SIGHUP reload). Every list is bounded in all. */
static void test_repeated_fields_bounded(void **state)
{
    (void)state;
    static const char *const fields[] = {"mrenclave", "mrsigner", "evidence_types", "tcb_statuses"};
    for (size_t f = 0; f < CL_ARRAY_LEN(fields); f++) {
        for (int total = 32; total <= 200; total += 168) {
            cl_strbuf b = {0};
            cl_strbuf_str(&b, "{\"version\": 1, \"identities\": [{\"secrets\": [\"a\"], \"isv_prod_id\": 0");
            if (f != 0)
                cl_strbuf_str(&b, ", \"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"");
            for (int i = 0; i < total; i++) {
                cl_strbuf_fmt(&b, ", \"%s\": ", fields[f]);
                if (f < 2)
                    cl_strbuf_fmt(&b, "\"%064x\"", i + 1);
                else if (f == 2)
                    cl_strbuf_str(&b, "\"sim\"");
                else
                    cl_strbuf_str(&b, "\"UpToDate\"");
            }
            cl_strbuf_str(&b, "}]}");
            assert_false(b.failed);
            cl_err err = {0};
            cl_policy *p = cl_policy_parse(b.p, b.len, &err);
            if (total <= 32 && f < 2) {
                /* 32 in all is the limit for measurements */
                if (!p)
                    fail_msg("%s x%d refused: %s", fields[f], total, err.msg);
            } else if (total > 32) {
                if (p)
                    fail_msg("%s x%d accepted", fields[f], total);
                assert_int_equal(err.code, CL_E_FORMAT);
                assert_non_null(strstr(err.msg, fields[f]));
            }
            cl_policy_free(p);
            free(b.p);
        }
    }
}

static void test_empty_policy_denies(void **state)
{
    (void)state;
    cl_err err = {0};
    const char *empty = "{\"version\": 1, \"identities\": []}";
    cl_policy *p = cl_policy_parse(empty, strlen(empty), &err);
    assert_non_null(p);
    cl_attest_claims c = claims(MRE, MRS, 1, 9, "sim");
    cl_policy_decision d;
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_false(cl_policy_grants(p, &c, "a"));
    cl_policy_free(p);
    p = cl_policy_deny_all();
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_int_equal(cl_policy_evaluate(NULL, &c, &d), -1);
    cl_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_example),
        cmocka_unit_test(test_invalid_policies_rejected),
        cmocka_unit_test(test_repeated_fields_bounded),
        cmocka_unit_test(test_empty_policy_denies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
