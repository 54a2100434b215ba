/* test_policy.c — unit tests of the policy module: the documented example parses, every validation
 * rule rejects what it should (fail-closed), the strict JSON reader refuses what a lenient one would
 * resolve silently, every list is bounded, decisions are never cut, and TDX identities pin the whole
 * workload (checked with the real TDX quote verified by DCAP at a fixed time). */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/dcap.h"
#include "cloister/policy.h"

#ifndef CLOISTER_DOCS_DIR
#error "CLOISTER_DOCS_DIR must point at docs/"
#endif
#ifndef CLOISTER_DCAP_VECTORS
#error "CLOISTER_DCAP_VECTORS must point at tests/data/dcap-qvl"
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
    assert_int_equal(cl_policy_identity_count(p), 4);
    cl_policy_decision d = {0};

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
    cl_policy_decision_clear(&d);
    assert_null(d.identities);
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

/* ---------------------------------------------------------------- helpers */

static void expect_refused(const char *text, size_t len, const char *needle, const char *needle2)
{
    cl_err err = {0};
    cl_policy *p = cl_policy_parse(text, len, &err);
    if (p)
        fail_msg("accepted: %.300s", text);
    assert_true(err.code == CL_E_FORMAT || err.code == CL_E_VERSION);
    if (needle && !strstr(err.msg, needle))
        fail_msg("'%s' does not mention '%s' (policy %.200s)", err.msg, needle, text);
    if (needle2 && !strstr(err.msg, needle2))
        fail_msg("'%s' does not mention '%s' (policy %.200s)", err.msg, needle2, text);
}

static void refuse(const char *text, const char *needle, const char *needle2)
{
    expect_refused(text, strlen(text), needle, needle2);
}

static cl_policy *accept_policy(const char *text)
{
    cl_err err = {0};
    cl_policy *p = cl_policy_parse(text, strlen(text), &err);
    if (!p)
        fail_msg("refused: %s (policy %.300s)", err.msg, text);
    return p;
}

#define SGX_ID "\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"a\"]"

/* The real TDX quote's identity (tests/data/dcap-qvl/tdx_quote), read independently with Python from
 * the TD 1.0 report body at offset 48 of the v4 quote. */
static const char *TD_MRTD = "91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7";
static const char *TD_RTMR[4] = {
    "44c0197b39157fdd7a4dcc44767f9d6b0bb3977c7a8e347b8492f827fe9d9e5c48aca29b220b80b6a540cf994b9bc9c0",
    "0084452c01668329d4bc06acdf58a7205c26743304509973949e5619bf81a6a7aea8c323c173019b3093d54e579e9378",
    "d833feef2cd945148aa38ead2c53e9b7f138190aaaebfc551dccd829fc207aa3ba80b70870d7330733642e01d48c3132",
    "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000"};
static const char *TD_MRSEAM = "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1";
static const char *ZERO48 = "000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000000";
static const char *OTHER48 = "111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111111";

/* A policy with one TDX identity pinning the real quote's MRTD and RTMRs; `field` (mrtd, rtmr0..3)
 * gets the raw JSON `value` instead, or is left out when value is NULL; `extra` adds members. */
static char *td_policy(const char *field, const char *value, const char *extra)
{
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"version\": 1, \"identities\": [{\"name\": \"td\", \"evidence_types\": [\"tdx-dcap\"], "
                      "\"secrets\": [\"td-key\"]");
    static const char *const names[] = {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    for (size_t i = 0; i < 5; i++) {
        const char *hex = i ? TD_RTMR[i - 1] : TD_MRTD;
        if (field && !strcmp(field, names[i])) {
            if (value)
                cl_strbuf_fmt(&b, ", \"%s\": %s", names[i], value);
        } else {
            cl_strbuf_fmt(&b, ", \"%s\": \"%s\"", names[i], hex);
        }
    }
    if (extra && *extra)
        cl_strbuf_fmt(&b, ", %s", extra);
    cl_strbuf_str(&b, "}]}");
    assert_false(b.failed);
    return cl_strbuf_take(&b, NULL);
}

/* The claims of the real TDX quote, verified by the DCAP back end inside its collateral's window. */
static cl_attest_claims real_tdx_claims(void)
{
    cl_err err = {0};
    char *qp = tu_path(CLOISTER_DCAP_VECTORS, "tdx_quote"), *cp = tu_path(CLOISTER_DCAP_VECTORS, "tdx_quote_collateral.json"),
         *rp = tu_path(CLOISTER_DCAP_VECTORS, "Intel_SGX_Provisioning_Certification_RootCA.der");
    size_t len;
    uint8_t *quote = tu_read_file(qp, &len);
    cl_dcap_collateral *col = cl_dcap_collateral_load(cp, &err);
    X509 *root = col ? cl_dcap_root_ca_load(rp, &err) : NULL;
    if (!root)
        fail_msg("%s", err.msg);
    cl_dcap_backend ctx = {.root_ca = root, .col = col, .now_unix = 1750329147 + 1000};
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    assert_int_equal(cl_attest_verifier_add_backend(v, "dcap", cl_dcap_backend_verify, &ctx, &err), 0);
    cl_attest_claims c;
    if (cl_attest_verify(v, quote, len, &c, &err) != 0)
        fail_msg("%s", err.msg);
    cl_attest_verifier_free(v);
    X509_free(root);
    cl_dcap_collateral_free(col);
    free(quote);
    free(qp);
    free(cp);
    free(rp);
    return c;
}

static void expect_decision(const char *policy, const cl_attest_claims *c, bool allowed, const char *needle)
{
    cl_policy *p = accept_policy(policy);
    cl_policy_decision d = {0};
    int rc = cl_policy_evaluate(p, c, &d);
    assert_non_null(d.reason);
    if (allowed) {
        if (rc != 0)
            fail_msg("denied: %s (policy %.400s)", d.reason, policy);
        assert_true(cl_policy_grants(p, c, "td-key"));
        assert_string_equal(cl_policy_secret_prov(p, c), "td-key");
    } else {
        if (rc == 0)
            fail_msg("allowed (policy %.400s)", policy);
        assert_false(cl_policy_grants(p, c, "td-key"));
        assert_null(cl_policy_secret_prov(p, c));
        if (needle && !strstr(d.reason, needle))
            fail_msg("'%s' does not mention '%s'", d.reason, needle);
    }
    cl_policy_decision_clear(&d);
    cl_policy_free(p);
}

/* ---------------------------------------------------------------- strict JSON */

/* What cJSON used to resolve silently: repeated keys (a later "identities" dropped the first, the last
 * "min_isv_svn" won), data after the document, "\u0000" cutting a string, bad UTF-8, huge integers.
 * All refused, with the line and column. */
static void test_strict_json(void **state)
{
    (void)state;
    const char *ok = "{\"version\": 1, \"identities\": [{" SGX_ID "}]}";
    cl_policy_free(accept_policy(ok));
    const char *bad[] = {
        "{\"version\": 1, \"identities\": [], \"identities\": [{" SGX_ID "}]}",
        "{\"version\": 1, \"version\": 1, \"identities\": []}",
        "{\"version\": 1, \"identities\": [{" SGX_ID ", \"min_isv_svn\": 5, \"min_isv_svn\": 0}]}",
        "{\"version\": 1, \"identities\": [{" SGX_ID ", \"allow_debug\": false, \"allow_debug\": true}]}",
        "{\"version\": 1, \"identities\": [{" SGX_ID "}]} x",
        "{\"version\": 1, \"identities\": [{" SGX_ID "}]}{\"version\": 1, \"identities\": []}",
        "{\"version\": 1, \"identities\": [{" SGX_ID "}]}\n,",
        "{\"version\": 1, \"identities\": [{\"name\": \"a\\u0000b\", " SGX_ID "}]}",
        "{\"version\": 1, \"identities\": [{\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", \"secrets\": [\"key\\u0000evil\"]}]}",
        "{\"version\": 1, \"identities\": [{\"name\": \"\xff\xfe\", " SGX_ID "}]}",
        "{\"version\": 1, \"identities\": [{" SGX_ID ", \"min_isv_svn\": 99999999999999999999999}]}",
        "{\"version\": 1, \"identities\": [{" SGX_ID "},]}",
        "{\"version\": 1, \"identities\": [{" SGX_ID "}]",
        "\xef\xbb\xbf{\"version\": 1, \"identities\": []}",
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++)
        refuse(bad[i], "line ", "column ");
    /* the position is the right one: line 3 holds the repeated key */
    refuse("{\"version\": 1,\n \"identities\": [],\n \"identities\": []}", "line 3", "duplicate");
    /* an embedded NUL byte ends nothing: the length given is what is read */
    const char nul[] = "{\"version\": 1, \"identities\": []}\0{\"x\": 1}";
    expect_refused(nul, sizeof nul - 1, "line ", NULL);
    /* types are strict: a real is not an integer, 1.0 is not version 1 */
    refuse("{\"version\": 1.0, \"identities\": []}", "version must be 1", NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"isv_prod_id\": 1.0}]}", "identities[0].isv_prod_id", NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"allow_debug\": \"false\"}]}", "identities[0].allow_debug",
           NULL);
    /* identity names end up in audit records: no separators, quotes or control characters; unique */
    refuse("{\"version\": 1, \"identities\": [{\"name\": \"a,b\", " SGX_ID "}]}", "identities[0].name", NULL);
    refuse("{\"version\": 1, \"identities\": [{\"name\": \"a\\nb\", " SGX_ID "}]}", "identities[0].name", NULL);
    refuse("{\"version\": 1, \"identities\": [{\"name\": \"a\", " SGX_ID "}, {\"name\": \"a\", " SGX_ID "}]}",
           "both named 'a'", NULL);
    refuse("{\"version\": 1, \"identities\": [{\"name\": \"identity 1\", " SGX_ID "}, {" SGX_ID "}]}",
           "both named 'identity 1'", NULL);
    /* a load names the file */
    char *dir = tu_tmpdir(), *f = tu_path(dir, "p.json");
    tu_write_file(f, bad[0], strlen(bad[0]));
    cl_err err = {0};
    assert_null(cl_policy_load(f, &err));
    assert_non_null(strstr(err.msg, f));
    assert_non_null(strstr(err.msg, "duplicate"));
    tu_rmrf(dir);
    free(f);
    free(dir);
}

/* ---------------------------------------------------------------- bounds */

/* {"version": 1, "identities": [{<pre>, "<field>": [<n> values], <post>}]}: values of `hex` hex
 * digits made from their index, or with hex 0 secret names "s<index>". */
static char *list_policy(const char *pre, const char *field, size_t n, int hex, const char *post)
{
    cl_strbuf b = {0};
    cl_strbuf_fmt(&b, "{\"version\": 1, \"identities\": [{%s%s\"%s\": [", pre, *pre ? ", " : "", field);
    for (size_t i = 0; i < n; i++) {
        cl_strbuf_str(&b, i ? ", " : "");
        if (hex)
            cl_strbuf_fmt(&b, "\"%0*x\"", hex, (unsigned)i + 1);
        else
            cl_strbuf_fmt(&b, "\"s%u\"", (unsigned)i + 1);
    }
    cl_strbuf_fmt(&b, "]%s%s}]}", *post ? ", " : "", post);
    assert_false(b.failed);
    return cl_strbuf_take(&b, NULL);
}

/* A field given more than once used to add to its list: 33 entries over repeats overflowed the fixed
 * arrays (a crash in policy check, the key server and its SIGHUP reload). Repeats are now refused by
 * the reader, and every list is bounded on each append. */
static void test_lists_bounded(void **state)
{
    (void)state;
    static const char *const fields[] = {"mrenclave", "mrsigner", "evidence_types", "tcb_statuses"};
    for (size_t f = 0; f < CL_ARRAY_LEN(fields); f++) {
        cl_strbuf b = {0};
        cl_strbuf_str(&b, "{\"version\": 1, \"identities\": [{\"secrets\": [\"a\"], \"isv_prod_id\": 0");
        if (f != 0)
            cl_strbuf_str(&b, ", \"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"");
        for (int i = 0; i < 33; i++) {
            cl_strbuf_fmt(&b, ", \"%s\": ", fields[f]);
            if (f < 2)
                cl_strbuf_fmt(&b, "\"%064x\"", i + 1);
            else
                cl_strbuf_str(&b, f == 2 ? "\"sim\"" : "\"UpToDate\"");
        }
        cl_strbuf_str(&b, "}]}");
        assert_false(b.failed);
        refuse(b.p, "duplicate object key", "line 1");
        free(b.p);
    }
    /* measurement lists: 32 values in all, the 33rd refused, naming the list */
    static const struct { const char *pre, *field; int hex; const char *post; } lists[] = {
        {"\"isv_prod_id\": 0", "mrsigner", 64, "\"secrets\": []"},
        {"", "mrenclave", 64, "\"secrets\": []"},
        {"\"rtmr0\": \"any\", \"rtmr1\": \"any\", \"rtmr2\": \"any\", \"rtmr3\": \"any\"", "mrtd", 96,
         "\"secrets\": []"},
        {"\"mrtd\": \"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7\", "
         "\"rtmr0\": \"any\", \"rtmr2\": \"any\", \"rtmr3\": \"any\"", "rtmr1", 96, "\"secrets\": []"},
        {"\"mrtd\": \"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7\", "
         "\"rtmr0\": \"any\", \"rtmr1\": \"any\", \"rtmr2\": \"any\", \"rtmr3\": \"any\"", "xfam", 16,
         "\"secrets\": []"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(lists); i++) {
        char *ok = list_policy(lists[i].pre, lists[i].field, CL_POLICY_MAX_MEASUREMENTS, lists[i].hex, lists[i].post);
        cl_policy_free(accept_policy(ok));
        free(ok);
        char *over = list_policy(lists[i].pre, lists[i].field, CL_POLICY_MAX_MEASUREMENTS + 1, lists[i].hex,
                                 lists[i].post);
        char want[64];
        snprintf(want, sizeof want, "identities[0].%s has 33 values", lists[i].field);
        refuse(over, want, NULL);
        free(over);
    }
    refuse("{\"version\": 1, \"identities\": [{\"mrenclave\": [\"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\", "
           "\"815F42F11CF64430C30BAB7816BA596A1DA0130C3B028B673133A66CF9A3E0E6\"], \"secrets\": []}]}",
           "identities[0].mrenclave[1]", "listed twice");
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"evidence_types\": [\"sim\", \"sim\"]}]}", "listed twice",
           NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"evidence_types\": [\"sim\", \"sgx-dcap\", \"sim\", \"sim\"]}]}",
           "more than the 3 known values", NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"tcb_statuses\": [\"UpToDate\", \"UpToDate\"]}]}",
           "listed twice", NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"tcb_statuses\": []}]}", "empty list", NULL);
    refuse("{\"version\": 1, \"identities\": [{\"mrenclave\": [], \"secrets\": []}]}", "identities[0].mrenclave is an empty",
           NULL);
    /* secrets: 1024 per identity */
    char *ok = list_policy("\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"", "secrets",
                           CL_POLICY_MAX_SECRETS, 0, "");
    cl_policy_free(accept_policy(ok));
    free(ok);
    char *over = list_policy("\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"",
                             "secrets", CL_POLICY_MAX_SECRETS + 1, 0, "");
    refuse(over, "identities[0].secrets has 1025 entries", NULL);
    free(over);
    /* identities: 256 */
    for (size_t n = CL_POLICY_MAX_IDENTITIES; n <= CL_POLICY_MAX_IDENTITIES + 1; n++) {
        cl_strbuf b = {0};
        cl_strbuf_str(&b, "{\"version\": 1, \"identities\": [");
        for (size_t i = 0; i < n; i++)
            cl_strbuf_fmt(&b, "%s{" SGX_ID "}", i ? ", " : "");
        cl_strbuf_str(&b, "]}");
        if (n == CL_POLICY_MAX_IDENTITIES)
            cl_policy_free(accept_policy(b.p));
        else
            refuse(b.p, "257 identities, more than 256", NULL);
        free(b.p);
    }
}

/* ---------------------------------------------------------------- decisions are whole */

/* identities[] and reason[] were 256 and 768 bytes: 256 matching identities with long names, or as
 * many reasons, were cut. Decisions now own their strings. */
static void test_decision_not_truncated(void **state)
{
    (void)state;
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"version\": 1, \"identities\": [");
    char names[CL_POLICY_MAX_IDENTITIES][CL_POLICY_MAX_NAME + 1];
    for (size_t i = 0; i < CL_POLICY_MAX_IDENTITIES; i++) {
        snprintf(names[i], sizeof names[i], "identity-%03zu-", i);
        memset(names[i] + 13, 'x', CL_POLICY_MAX_NAME - 13);
        names[i][CL_POLICY_MAX_NAME] = 0;
        cl_strbuf_fmt(&b, "%s{\"name\": \"%s\", \"mrenclave\": \"%s\", \"evidence_types\": \"sim\", \"secrets\": []}",
                      i ? ", " : "", names[i], MRE);
    }
    cl_strbuf_str(&b, "]}");
    cl_policy *p = accept_policy(b.p);
    free(b.p);
    cl_attest_claims c = claims(MRE, MRS, 1, 1, "sim");
    cl_policy_decision d = {0};
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_int_equal(strlen(d.identities), CL_POLICY_MAX_IDENTITIES * (CL_POLICY_MAX_NAME + 1) - 1);
    for (size_t i = 0; i < CL_POLICY_MAX_IDENTITIES; i++)
        assert_non_null(strstr(d.identities, names[i]));
    assert_string_equal(d.reason, "");
    /* denied by every identity: each one's reason is there, in full */
    c = claims("2222222222222222222222222222222222222222222222222222222222222222", MRS, 1, 1, "sim");
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1); /* reuses d: the previous strings are released */
    assert_false(d.allowed);
    assert_string_equal(d.identities, "");
    for (size_t i = 0; i < CL_POLICY_MAX_IDENTITIES; i++) {
        char want[256];
        snprintf(want, sizeof want, "'%.63s': mrenclave 2222222222222222222222222222222222222222222222222222222222222222 "
                 "not allowed", names[i]);
        if (!strstr(d.reason, want))
            fail_msg("reason lacks identity %zu", i);
    }
    cl_policy_decision_clear(&d);
    cl_policy_decision_clear(&d); /* twice is harmless */
    cl_policy_free(p);
}

/* ---------------------------------------------------------------- TDX */

static void test_tdx_rules(void **state)
{
    (void)state;
    char *ok = td_policy(NULL, NULL, "");
    cl_policy_free(accept_policy(ok));
    free(ok);
    /* MRTD and a decision for each RTMR are required (fail-closed) */
    char *t = td_policy("mrtd", NULL, "");
    refuse(t, "identities[0] ('td') is a TDX identity without \"mrtd\"", NULL);
    free(t);
    static const char *const rtmrs[] = {"rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    for (size_t i = 0; i < 4; i++) {
        char want[64];
        snprintf(want, sizeof want, "without \"%s\"", rtmrs[i]);
        t = td_policy(rtmrs[i], NULL, "");
        refuse(t, want, "\"any\"");
        free(t);
        t = td_policy(rtmrs[i], "\"any\"", "");
        cl_policy_free(accept_policy(t));
        free(t);
        t = td_policy(rtmrs[i], "[]", "");
        refuse(t, "empty list", NULL);
        free(t);
        t = td_policy(rtmrs[i], "[\"any\"]", "");
        refuse(t, "stands alone", NULL);
        free(t);
        t = td_policy(rtmrs[i], "\"ANY\"", "");
        refuse(t, "is not 96 hex digits", NULL);
        free(t);
    }
    /* 48-byte values: an SGX-sized (32-byte) MRTD is refused */
    t = td_policy("mrtd", "\"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"", "");
    refuse(t, "identities[0].mrtd", "96 hex digits");
    free(t);
    t = td_policy("mrtd", "\"any\"", "");
    refuse(t, "identities[0].mrtd", "96 hex digits");
    free(t);
    t = td_policy(NULL, NULL, "\"xfam\": \"e7020600\"");
    refuse(t, "identities[0].xfam", "16 hex digits");
    free(t);
    t = td_policy(NULL, NULL, "\"mrowner\": [\"zz\"]");
    refuse(t, "identities[0].mrowner[0]", NULL);
    free(t);
    /* SGX-only fields are refused in a TDX identity, TDX fields in an SGX one; never both */
    static const char *const sgx_only[] = {"\"mrenclave\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"",
                                           "\"mrsigner\": \"815f42f11cf64430c30bab7816ba596a1da0130c3b028b673133a66cf9a3e0e6\"",
                                           "\"isv_prod_id\": 0", "\"min_isv_svn\": 1"};
    for (size_t i = 0; i < CL_ARRAY_LEN(sgx_only); i++) {
        t = td_policy(NULL, NULL, sgx_only[i]);
        refuse(t, "SGX field", "TDX field \"mrtd\"");
        free(t);
    }
    refuse("{\"version\": 1, \"identities\": [{\"isv_prod_id\": 0, \"evidence_types\": \"tdx-dcap\", \"secrets\": []}]}",
           "identities[0].isv_prod_id: an SGX-only field in a tdx-dcap identity", NULL);
    refuse("{\"version\": 1, \"identities\": [{\"mrtd\": \"91eb2b44d141d4ece09f0c75c2c53d247a3c68edd7fafe8a3520c942a604a407de03ae6dc5f87f27428b2538873118b7\", "
           "\"evidence_types\": \"sgx-dcap\", \"secrets\": []}]}",
           "identities[0].mrtd: a TDX field in an sgx-dcap identity", NULL);
    refuse("{\"version\": 1, \"identities\": [{" SGX_ID ", \"evidence_types\": [\"sgx-dcap\", \"tdx-dcap\"]}]}",
           "sgx-dcap and tdx-dcap in one identity", NULL);
    t = td_policy(NULL, NULL, "\"evidence_types\": [\"tdx-dcap\"]");
    refuse(t, "duplicate object key", "line 1");
    free(t);
    /* a TDX identity needs no evidence_types: tdx-dcap is its default; sim TDX evidence is opt-in */
    refuse("{\"version\": 1, \"identities\": [{\"evidence_types\": [\"tdx-dcap\", \"sim\"], \"secrets\": []}]}",
           "without \"mrtd\"", NULL);

    /* the old loophole: MRSIGNER 00..00 + ISV_PROD_ID 0 + tdx-dcap matched every TD (TDX quotes carry
     * zeros there); it is refused when the policy is read, naming the field */
    const char *loophole = "{\"version\": 1, \"identities\": [{\"name\": \"any-td\", \"mrsigner\": "
                           "\"0000000000000000000000000000000000000000000000000000000000000000\", \"isv_prod_id\": 0, "
                           "\"evidence_types\": [\"tdx-dcap\"], \"secrets\": [\"model-key\"]}]}";
    refuse(loophole, "identities[0].mrsigner: an SGX-only field in a tdx-dcap identity ('any-td')", "pin \"mrtd\"");
}

static void test_tdx_real_quote(void **state)
{
    (void)state;
    cl_attest_claims c = real_tdx_claims();
    assert_int_equal(c.tee_type, CL_QUOTE_TEE_TDX);
    assert_string_equal(c.evidence_type, "tdx-dcap");
    assert_string_equal(c.tcb_status, "UpToDate");
    assert_false(c.debug);
    static const uint8_t zero[48];
    assert_memory_equal(c.mr_enclave, zero, 32); /* no SGX identity in TDX claims */
    assert_memory_equal(c.mr_signer, zero, 32);
    char hex[97];
    cl_hex_encode(c.tdx.mr_td, 48, hex);
    assert_string_equal(hex, TD_MRTD);
    for (int i = 0; i < 4; i++) {
        cl_hex_encode(c.tdx.rtmr[i], 48, hex);
        assert_string_equal(hex, TD_RTMR[i]);
    }
    cl_hex_encode(c.tdx.mr_seam, 48, hex);
    assert_string_equal(hex, TD_MRSEAM);
    cl_hex_encode(c.tdx.xfam, 8, hex);
    assert_string_equal(hex, "e702060000000000");
    cl_hex_encode(c.tdx.td_attributes, 8, hex);
    assert_string_equal(hex, "0000001000000000");

    /* the documented example's TDX identity is this TD */
    cl_err err = {0};
    cl_policy *p = cl_policy_load(CLOISTER_DOCS_DIR "/policy-example.json", &err);
    assert_non_null(p);
    cl_policy_decision d = {0};
    assert_int_equal(cl_policy_evaluate(p, &c, &d), 0);
    assert_string_equal(d.identities, "model-server-td");
    assert_true(cl_policy_grants(p, &c, "serving-tls-key"));
    assert_false(cl_policy_grants(p, &c, "dev-model-key"));
    cl_policy_decision_clear(&d);
    cl_policy_free(p);

    /* the right identity allows; any other MRTD or RTMR denies, naming the register and the TD's value */
    char *t = td_policy(NULL, NULL, "");
    expect_decision(t, &c, true, NULL);
    free(t);
    static const char *const fields[] = {"mrtd", "rtmr0", "rtmr1", "rtmr2", "rtmr3"};
    for (size_t i = 0; i < 5; i++) {
        char other[120], want[160], both[240];
        snprintf(other, sizeof other, "\"%s\"", OTHER48);
        snprintf(want, sizeof want, "'td': %s %s not allowed", fields[i], i ? TD_RTMR[i - 1] : TD_MRTD);
        t = td_policy(fields[i], other, "");
        expect_decision(t, &c, false, want);
        free(t);
        /* a list with the TD's value among others allows */
        snprintf(both, sizeof both, "[\"%s\", \"%s\"]", OTHER48, i ? TD_RTMR[i - 1] : TD_MRTD);
        t = td_policy(fields[i], both, "");
        expect_decision(t, &c, true, NULL);
        free(t);
        if (i) { /* "any" accepts every value of that RTMR */
            t = td_policy(fields[i], "\"any\"", "");
            expect_decision(t, &c, true, NULL);
            free(t);
        }
    }
    /* the optional pins */
    char extra[256];
    static const char *const opt48[] = {"mrconfigid", "mrowner", "mrownerconfig", "mrsignerseam"};
    for (size_t i = 0; i < 4; i++) {
        snprintf(extra, sizeof extra, "\"%s\": \"%s\"", opt48[i], ZERO48);
        t = td_policy(NULL, NULL, extra);
        expect_decision(t, &c, true, NULL);
        free(t);
        snprintf(extra, sizeof extra, "\"%s\": [\"%s\"]", opt48[i], OTHER48);
        t = td_policy(NULL, NULL, extra);
        expect_decision(t, &c, false, opt48[i]);
        free(t);
    }
    snprintf(extra, sizeof extra, "\"mrseam\": \"%s\"", TD_MRSEAM);
    t = td_policy(NULL, NULL, extra);
    expect_decision(t, &c, true, NULL);
    free(t);
    snprintf(extra, sizeof extra, "\"mrseam\": \"%s\"", OTHER48);
    t = td_policy(NULL, NULL, extra);
    expect_decision(t, &c, false, "'td': mrseam");
    free(t);
    t = td_policy(NULL, NULL, "\"xfam\": [\"e702060000000000\"], \"td_attributes\": \"0000001000000000\"");
    expect_decision(t, &c, true, NULL);
    free(t);
    t = td_policy(NULL, NULL, "\"xfam\": \"e700060000000000\"");
    expect_decision(t, &c, false, "'td': xfam e702060000000000 not allowed");
    free(t);
    t = td_policy(NULL, NULL, "\"td_attributes\": \"0000000000000000\"");
    expect_decision(t, &c, false, "td_attributes");
    free(t);
    /* the TCB status: UpToDate by default */
    cl_attest_claims old = c;
    snprintf(old.tcb_status, sizeof old.tcb_status, "OutOfDate");
    t = td_policy(NULL, NULL, "");
    expect_decision(t, &old, false, "TCB status 'OutOfDate'");
    /* a debug TD (TUD.DEBUG) is refused unless allow_debug */
    cl_attest_claims dbg = c;
    dbg.tdx.td_attributes[0] |= CL_TDX_ATTR_DEBUG;
    expect_decision(t, &dbg, false, "debug TD");
    dbg.debug = true;
    expect_decision(t, &dbg, false, "debug TD");
    free(t);
    t = td_policy(NULL, NULL, "\"allow_debug\": true");
    expect_decision(t, &dbg, true, NULL);
    free(t);
    /* sim evidence with the same measurements is not tdx-dcap evidence */
    cl_attest_claims sim = c;
    snprintf(sim.evidence_type, sizeof sim.evidence_type, "sim");
    t = td_policy(NULL, NULL, "");
    expect_decision(t, &sim, false, "evidence type 'sim' not accepted");
    free(t);

    /* an SGX identity never matches a TD, whatever its zero MRSIGNER and ISV_PROD_ID say */
    const char *sgx_zero = "{\"version\": 1, \"identities\": [{\"name\": \"zero\", \"mrsigner\": "
                           "\"0000000000000000000000000000000000000000000000000000000000000000\", \"isv_prod_id\": 0, "
                           "\"evidence_types\": [\"sim\"], \"secrets\": [\"td-key\"]}]}";
    expect_decision(sgx_zero, &sim, false, "TDX evidence cannot match an SGX identity");
    /* and a TDX identity never matches an enclave */
    cl_attest_claims enclave = claims(MRE, MRS, 0, 0, "sim");
    t = td_policy(NULL, NULL, "");
    char *tsim = strstr(t, "[\"tdx-dcap\"]");
    assert_non_null(tsim);
    memcpy(tsim, "[\"sim\"     ]", 12);
    expect_decision(t, &enclave, false, "SGX evidence cannot match a TDX identity");
    expect_decision(t, &sim, true, NULL);
    free(t);
}

static void test_describe(void **state)
{
    (void)state;
    char *t = td_policy("rtmr3", "\"any\"", "\"allow_debug\": true");
    cl_policy *p = accept_policy(t);
    free(t);
    char *d = cl_policy_describe(p);
    assert_non_null(d);
    assert_non_null(strstr(d, "identity 'td': TDX trust domain (tdx-dcap), mrtd 1 value, rtmr0 1 value"));
    assert_non_null(strstr(d, "rtmr3 any"));
    assert_non_null(strstr(d, "note: 'td' accepts any rtmr3"));
    assert_non_null(strstr(d, "warning: 'td' accepts debug TDs"));
    free(d);
    cl_policy_free(p);
    d = cl_policy_describe(NULL);
    assert_string_equal(d, "");
    free(d);
}

static void test_empty_policy_denies(void **state)
{
    (void)state;
    cl_err err = {0};
    const char *empty = "{\"version\": 1, \"identities\": []}";
    cl_policy *p = cl_policy_parse(empty, strlen(empty), &err);
    assert_non_null(p);
    cl_attest_claims c = claims(MRE, MRS, 1, 9, "sim");
    cl_policy_decision d = {0};
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_false(cl_policy_grants(p, &c, "a"));
    cl_policy_free(p);
    p = cl_policy_deny_all();
    assert_int_equal(cl_policy_evaluate(p, &c, &d), -1);
    assert_int_equal(cl_policy_evaluate(NULL, &c, &d), -1);
    assert_string_equal(d.reason, "the policy is empty: nothing is allowed");
    cl_policy_decision_clear(&d);
    cl_policy_free(p);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_documented_example),
        cmocka_unit_test(test_invalid_policies_rejected),
        cmocka_unit_test(test_strict_json),
        cmocka_unit_test(test_lists_bounded),
        cmocka_unit_test(test_decision_not_truncated),
        cmocka_unit_test(test_tdx_rules),
        cmocka_unit_test(test_tdx_real_quote),
        cmocka_unit_test(test_describe),
        cmocka_unit_test(test_empty_policy_denies),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
