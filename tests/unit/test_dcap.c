/* test_dcap.c — unit tests of offline DCAP quote verification (src/attest/dcap.c) against the real
 * Intel quotes and collateral in tests/data/dcap-qvl: the expected outcomes, both edges of each
 * collateral validity window, and one tampering per check so that breaking any check fails a test. */
#include "testutil.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "attest/dcap_internal.h"
#include "cloister/attest.h"
#include "cloister/dcap.h"

#ifndef CLOISTER_DCAP_VECTORS
#error "CLOISTER_DCAP_VECTORS must point at tests/data/dcap-qvl"
#endif

#define SGX_FROM 1750330571
#define SGX_TO 1752919278
#define TDX_FROM 1750329147
#define TDX_TO 1752919235
#define OLD_FROM 1771412331
#define OLD_TO 1774003275

static char *vec_path(const char *name) { return tu_path(CLOISTER_DCAP_VECTORS, name); }

static uint8_t *read_vec(const char *name, size_t *len)
{
    char *p = vec_path(name);
    uint8_t *b = tu_read_file(p, len);
    free(p);
    return b;
}

static X509 *root_ca(void)
{
    char *p = vec_path("Intel_SGX_Provisioning_Certification_RootCA.der");
    cl_err err = {0};
    X509 *x = cl_dcap_root_ca_load(p, &err);
    free(p);
    if (!x)
        fail_msg("root CA: %s", err.msg);
    return x;
}

/* A test case: a quote (mutable copy) and its collateral JSON (mutable). */
typedef struct vec {
    uint8_t *quote;
    size_t quote_len;
    cJSON *col;
} vec;

static void vec_load(vec *v, const char *quote, const char *collateral)
{
    v->quote = read_vec(quote, &v->quote_len);
    size_t n;
    char *text = (char *)read_vec(collateral, &n);
    v->col = cJSON_ParseWithLength(text, n);
    assert_non_null(v->col);
    free(text);
}

static void vec_free(vec *v)
{
    free(v->quote);
    cJSON_Delete(v->col);
}

static const char *col_field(vec *v, const char *name)
{
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(v->col, name);
    assert_true(cJSON_IsString(f));
    return f->valuestring;
}

static void col_set(vec *v, const char *name, const char *value)
{
    assert_true(cJSON_ReplaceItemInObjectCaseSensitive(v->col, name, cJSON_CreateString(value)));
}

/* Replaces the first occurrence of `from` in the collateral field `name` with `to` (same length). */
static void col_edit(vec *v, const char *name, const char *from, const char *to)
{
    char *s = strdup(col_field(v, name));
    char *at = strstr(s, from);
    assert_non_null(at);
    assert_int_equal(strlen(from), strlen(to));
    memcpy(at, to, strlen(to));
    col_set(v, name, s);
    free(s);
}

/* Verifies; returns 0 or -1 with err. */
static int run(vec *v, int64_t now, cl_dcap_result *r, cl_err *err)
{
    char *text = cJSON_PrintUnformatted(v->col);
    assert_non_null(text);
    cl_dcap_collateral *col = cl_dcap_collateral_load_buffer(text, strlen(text), err);
    free(text);
    if (!col)
        fail_msg("collateral: %s", err->msg);
    cl_attest_quote q;
    if (cl_attest_quote_parse(v->quote, v->quote_len, &q, err) != 0)
        fail_msg("quote: %s", err->msg);
    X509 *root = root_ca();
    int rc = cl_dcap_verify(&q, col, root, now, r, err);
    X509_free(root);
    cl_dcap_collateral_free(col);
    return rc;
}

static void expect_fail(vec *v, int64_t now, cl_status code, const char *needle)
{
    cl_dcap_result r;
    cl_err err = {0};
    if (run(v, now, &r, &err) == 0)
        fail_msg("expected failure '%s', but verification passed (%s)", needle, r.tcb_status);
    if (err.code != code || !strstr(err.msg, needle))
        fail_msg("expected %s with '%s', got %s: %s", cl_status_name(code), needle, cl_status_name(err.code),
                 err.msg);
    assert_string_equal(r.tcb_status, "");
}

static void expect_ok(vec *v, int64_t now, const char *status)
{
    cl_dcap_result r;
    cl_err err = {0};
    if (run(v, now, &r, &err) != 0)
        fail_msg("at %lld: %s", (long long)now, err.msg);
    assert_string_equal(r.tcb_status, status);
}

/* ---------------------------------------------------------------- expected outcomes */

static void test_sgx_valid(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    cl_dcap_result r;
    cl_err err = {0};
    if (run(&v, SGX_FROM + 1000, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(r.evidence_type, "sgx-dcap");
    assert_string_equal(r.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_string_equal(r.platform_tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_string_equal(r.qe_tcb_status, "UpToDate");
    assert_string_equal(r.fmspc_hex, "00A067110000");
    assert_int_equal(r.n_advisories, 2);
    assert_string_equal(r.advisories[0], "INTEL-SA-00289");
    assert_string_equal(r.advisories[1], "INTEL-SA-00615");
    assert_false(r.debug);
    vec_free(&v);
}

static void test_tdx_valid(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "tdx_quote", "tdx_quote_collateral.json");
    cl_dcap_result r;
    cl_err err = {0};
    if (run(&v, TDX_FROM + 1000, &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(r.evidence_type, "tdx-dcap");
    assert_string_equal(r.tcb_status, "UpToDate");
    assert_string_equal(r.fmspc_hex, "B0C06F000000");
    assert_int_equal(r.n_advisories, 0);
    vec_free(&v);
}

static void test_tdx_outdated_rejected(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "tdx_quote_outdated", "tdx_quote_outdated_collateral.json");
    expect_fail(&v, OLD_FROM + 1000, CL_E_DENIED, "below every TCB level");
    vec_free(&v);
}

/* ---------------------------------------------------------------- validity windows */

static void window(const char *quote, const char *collateral, int64_t from, int64_t to, const char *status)
{
    vec v;
    vec_load(&v, quote, collateral);
    if (status) {
        expect_ok(&v, from, status);
        expect_ok(&v, to, status);
    } else {
        expect_fail(&v, from, CL_E_DENIED, "below every TCB level");
        expect_fail(&v, to, CL_E_DENIED, "below every TCB level");
    }
    cl_dcap_result r;
    cl_err err = {0};
    assert_int_equal(run(&v, from - 1, &r, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    cl_err_clear(&err);
    assert_int_equal(run(&v, to + 1, &r, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    /* far outside: a year later, and before the CRLs existed */
    cl_err_clear(&err);
    assert_int_equal(run(&v, to + 365 * 86400, &r, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    cl_err_clear(&err);
    assert_int_equal(run(&v, from - 365 * 86400, &r, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    vec_free(&v);
}

static void test_windows(void **state)
{
    (void)state;
    window("sgx_quote", "sgx_quote_collateral.json", SGX_FROM, SGX_TO, "ConfigurationAndSWHardeningNeeded");
    window("tdx_quote", "tdx_quote_collateral.json", TDX_FROM, TDX_TO, "UpToDate");
    window("tdx_quote_outdated", "tdx_quote_outdated_collateral.json", OLD_FROM, OLD_TO, NULL);
}

/* The TCB info alone expires: a nextUpdate one second earlier makes the signature fail (it is signed),
 * so instead check the document dates directly through the internal date check. */
static void test_document_dates(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    /* issueDate of QE identity is 2025-06-19T10:01:18Z, of TCB info 10:56:11Z; nextUpdate a month later */
    cl_err err = {0};
    const char *tcb = col_field(&v, "tcb_info");
    assert_int_equal(cl_dcap_check_dates("TCB info", tcb, 1750330571, &err), 0);
    assert_int_equal(cl_dcap_check_dates("TCB info", tcb, 1750330570, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    assert_int_equal(cl_dcap_check_dates("TCB info", tcb, 1752922571, &err), 0);
    assert_int_equal(cl_dcap_check_dates("TCB info", tcb, 1752922572, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    assert_non_null(strstr(err.msg, "expired"));
    const char *qe = col_field(&v, "qe_identity");
    assert_int_equal(cl_dcap_check_dates("QE identity", qe, 1750327278, &err), 0);
    assert_int_equal(cl_dcap_check_dates("QE identity", qe, 1750327277, &err), -1);
    assert_int_equal(cl_dcap_check_dates("QE identity", qe, 1752919278, &err), 0);
    assert_int_equal(cl_dcap_check_dates("QE identity", qe, 1752919279, &err), -1);
    vec_free(&v);
}

/* ---------------------------------------------------------------- step 1: PCK chain and CRLs */

static void test_untrusted_root(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    /* a self-signed impostor root with the same subject */
    X509 *real = root_ca();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *fake = X509_new();
    assert_non_null(k);
    X509_set_version(fake, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(fake), 1);
    X509_set_subject_name(fake, X509_get_subject_name(real));
    X509_set_issuer_name(fake, X509_get_subject_name(real));
    X509_gmtime_adj(X509_getm_notBefore(fake), -100L * 365 * 86400);
    X509_gmtime_adj(X509_getm_notAfter(fake), 100L * 365 * 86400);
    X509_set_pubkey(fake, k);
    assert_true(X509_sign(fake, k, EVP_sha256()) > 0);
    char *text = cJSON_PrintUnformatted(v.col);
    cl_err err = {0};
    cl_dcap_collateral *col = cl_dcap_collateral_load_buffer(text, strlen(text), &err);
    assert_non_null(col);
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(v.quote, v.quote_len, &q, &err), 0);
    cl_dcap_result r;
    assert_int_equal(cl_dcap_verify(&q, col, fake, SGX_FROM + 1000, &r, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "PCK certificate chain"));
    assert_int_equal(cl_dcap_verify(&q, col, real, SGX_FROM + 1000, &r, &err), 0);
    free(text);
    cl_dcap_collateral_free(col);
    X509_free(fake);
    X509_free(real);
    EVP_PKEY_free(k);
    vec_free(&v);
}

static void test_pck_crl_swapped(void **state)
{
    (void)state;
    /* the SGX platform's PCK chain is under the Processor CA, the TDX one's under the Platform CA:
     * with the other CA's PCK CRL, the PCK certificate's revocation status is unknown */
    vec v, w;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    vec_load(&w, "tdx_quote", "tdx_quote_collateral.json");
    col_set(&v, "pck_crl", col_field(&w, "pck_crl"));
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "CRL");
    vec_free(&v);
    vec_free(&w);
}

static void test_root_crl_missing_is_refused(void **state)
{
    (void)state;
    /* the root CA CRL replaced by the PCK CRL: the intermediate CA's status is unknown */
    vec v;
    vec_load(&v, "tdx_quote", "tdx_quote_collateral.json");
    col_set(&v, "root_ca_crl", col_field(&v, "pck_crl"));
    expect_fail(&v, TDX_FROM + 1000, CL_E_AUTH, "CRL");
    vec_free(&v);
}

/* ---------------------------------------------------------------- steps 2-4: signatures */

static void test_quote_tampering(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(v.quote, v.quote_len, &q, &err), 0);
    size_t body = 48 + 64 + 5;                                          /* MRENCLAVE byte */
    size_t qe_report = (size_t)(q.attest_key - v.quote) + 64 + 100;     /* a QE report byte */
    size_t auth = (size_t)(q.attest_key - v.quote) + 64 + 384 + 64 + 2; /* first QE auth data byte */
    size_t sig = (size_t)(q.signature - v.quote) + 10;
    size_t ak = (size_t)(q.attest_key - v.quote) + 3;
    struct {
        size_t off;
        const char *needle;
    } cases[] = {
        {body, "quote signature does not verify"},
        {sig, "quote signature does not verify"},
        {qe_report, "QE report is not signed"},
        {auth, "does not vouch for the quote's attestation key"},
        {ak, "attestation key"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        v.quote[cases[i].off] ^= 0x01;
        expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, cases[i].needle);
        v.quote[cases[i].off] ^= 0x01;
    }
    expect_ok(&v, SGX_FROM + 1000, "ConfigurationAndSWHardeningNeeded");
    vec_free(&v);
}

static void test_tdx_quote_tampering(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "tdx_quote", "tdx_quote_collateral.json");
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(v.quote, v.quote_len, &q, &err), 0);
    size_t rtmr = 48 + 328 + 7;
    size_t qe_report = (size_t)(q.cert_data - v.quote) + 200;
    size_t auth = (size_t)(q.cert_data - v.quote) + 384 + 64 + 2;
    v.quote[rtmr] ^= 0x80;
    expect_fail(&v, TDX_FROM + 1000, CL_E_AUTH, "quote signature does not verify");
    v.quote[rtmr] ^= 0x80;
    v.quote[qe_report] ^= 0x80;
    expect_fail(&v, TDX_FROM + 1000, CL_E_AUTH, "QE report is not signed");
    v.quote[qe_report] ^= 0x80;
    v.quote[auth] ^= 0x80;
    expect_fail(&v, TDX_FROM + 1000, CL_E_AUTH, "does not vouch");
    v.quote[auth] ^= 0x80;
    expect_ok(&v, TDX_FROM + 1000, "UpToDate");
    vec_free(&v);
}

/* ---------------------------------------------------------------- steps 5-6: signed collateral */

static void test_collateral_tampering(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    /* one byte of the signed TCB info text */
    col_edit(&v, "tcb_info", "\"tcbStatus\":\"OutOfDate\"", "\"tcbStatus\":\"UpToDate\" ");
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "TCB info signature does not verify");
    vec_free(&v);
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    col_edit(&v, "tcb_info_signature", "0", "1");
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "TCB info signature does not verify");
    vec_free(&v);
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    col_edit(&v, "qe_identity", "\"isvprodid\":1", "\"isvprodid\":2");
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "QE identity signature does not verify");
    vec_free(&v);
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    col_edit(&v, "qe_identity_signature", "1", "2");
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "QE identity signature does not verify");
    vec_free(&v);
    /* re-serialised text (same meaning, other bytes) is not what Intel signed */
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    cJSON *t = cJSON_Parse(col_field(&v, "tcb_info"));
    char *pretty = cJSON_Print(t);
    col_set(&v, "tcb_info", pretty);
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "TCB info signature does not verify");
    free(pretty);
    cJSON_Delete(t);
    vec_free(&v);
}

static void test_issuer_chain_swapped(void **state)
{
    (void)state;
    /* the TCB info checked under the PCK CA's chain (a valid Intel chain, but not the TCB signer) */
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    col_set(&v, "tcb_info_issuer_chain", col_field(&v, "pck_crl_issuer_chain"));
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "is not the Intel SGX TCB Signing certificate");
    vec_free(&v);
    /* the QE identity and TCB info signers are the same certificate: swapping them is harmless */
    vec_load(&v, "tdx_quote", "tdx_quote_collateral.json");
    col_set(&v, "tcb_info_issuer_chain", col_field(&v, "qe_identity_issuer_chain"));
    expect_ok(&v, TDX_FROM + 1000, "UpToDate");
    vec_free(&v);
}

/* A self-made signer with a valid signature over the exact text: only the issuer chain check stops it. */
static void forge_signed(vec *v, const char *doc_field, const char *sig_field, const char *chain_field)
{
    X509 *real = root_ca();
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509 *cert = X509_new();
    assert_non_null(k);
    assert_non_null(cert);
    X509_set_version(cert, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(cert), 7);
    X509_NAME *name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)"Intel SGX TCB Signing", -1, -1, 0);
    X509_set_subject_name(cert, name);
    X509_set_issuer_name(cert, X509_get_subject_name(real));
    X509_gmtime_adj(X509_getm_notBefore(cert), -100L * 365 * 86400);
    X509_gmtime_adj(X509_getm_notAfter(cert), 100L * 365 * 86400);
    X509_set_pubkey(cert, k);
    assert_true(X509_sign(cert, k, EVP_sha256()) > 0);
    const char *text = col_field(v, doc_field);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    uint8_t der[128];
    size_t der_len = sizeof der;
    assert_int_equal(EVP_DigestSignInit(md, NULL, EVP_sha256(), NULL, k), 1);
    assert_int_equal(EVP_DigestSign(md, der, &der_len, (const uint8_t *)text, strlen(text)), 1);
    const uint8_t *dp = der;
    ECDSA_SIG *sig = d2i_ECDSA_SIG(NULL, &dp, (long)der_len);
    assert_non_null(sig);
    uint8_t raw[64];
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_r(sig), raw, 32), 32);
    assert_int_equal(BN_bn2binpad(ECDSA_SIG_get0_s(sig), raw + 32, 32), 32);
    char hex[129];
    cl_hex_encode(raw, 64, hex);
    col_set(v, sig_field, hex);
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, cert);
    char *pem;
    long n = BIO_get_mem_data(b, &pem);
    char *chain = strndup(pem, (size_t)n);
    col_set(v, chain_field, chain);
    free(chain);
    BIO_free(b);
    ECDSA_SIG_free(sig);
    EVP_MD_CTX_free(md);
    X509_NAME_free(name);
    X509_free(cert);
    X509_free(real);
    EVP_PKEY_free(k);
}

static void test_untrusted_collateral_signer(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    forge_signed(&v, "tcb_info", "tcb_info_signature", "tcb_info_issuer_chain");
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "TCB info issuer chain does not verify");
    vec_free(&v);
    vec_load(&v, "tdx_quote", "tdx_quote_collateral.json");
    forge_signed(&v, "qe_identity", "qe_identity_signature", "qe_identity_issuer_chain");
    expect_fail(&v, TDX_FROM + 1000, CL_E_AUTH, "QE identity issuer chain does not verify");
    vec_free(&v);
}

static void test_collateral_of_other_platform(void **state)
{
    (void)state;
    /* signed, valid-in-time collateral of the TDX platform for the SGX quote */
    vec v, w;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    vec_load(&w, "tdx_quote", "tdx_quote_collateral.json");
    col_set(&v, "tcb_info", col_field(&w, "tcb_info"));
    col_set(&v, "tcb_info_signature", col_field(&w, "tcb_info_signature"));
    expect_fail(&v, TDX_FROM + 10000, CL_E_INVALID, "wrong collateral");
    vec_free(&v);
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    col_set(&v, "qe_identity", col_field(&w, "qe_identity"));
    col_set(&v, "qe_identity_signature", col_field(&w, "qe_identity_signature"));
    expect_fail(&v, TDX_FROM + 10000, CL_E_INVALID, "wrong collateral");
    vec_free(&v);
    vec_free(&w);
}

static void test_collateral_format(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_null(cl_dcap_collateral_load_buffer("[]", 2, &err));
    assert_int_equal(err.code, CL_E_FORMAT);
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    const char *fields[] = {"pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain",
                            "root_ca_crl", "pck_crl", "tcb_info", "qe_identity", "tcb_info_signature",
                            "qe_identity_signature"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        cJSON *c = cJSON_Duplicate(v.col, 1);
        cJSON_ReplaceItemInObjectCaseSensitive(c, fields[i], cJSON_CreateString("zz"));
        char *text = cJSON_PrintUnformatted(c);
        cl_err_clear(&err);
        assert_null(cl_dcap_collateral_load_buffer(text, strlen(text), &err));
        assert_int_equal(err.code, CL_E_FORMAT);
        if (!strstr(err.msg, fields[i]))
            fail_msg("'%s' not named: %s", fields[i], err.msg);
        cJSON_DeleteItemFromObjectCaseSensitive(c, fields[i]);
        free(text);
        text = cJSON_PrintUnformatted(c);
        assert_null(cl_dcap_collateral_load_buffer(text, strlen(text), &err));
        assert_non_null(strstr(err.msg, fields[i]));
        free(text);
        cJSON_Delete(c);
    }
    char *p = vec_path("sgx_quote_collateral.json");
    cl_dcap_collateral *col = cl_dcap_collateral_load(p, &err);
    assert_non_null(col);
    cl_dcap_collateral_free(col);
    free(p);
    assert_null(cl_dcap_collateral_load("/nonexistent/collateral.json", &err));
    assert_int_equal(err.code, CL_E_IO);
    vec_free(&v);
}

/* ---------------------------------------------------------------- steps 5-6: content rules
 * The collateral is signed by Intel, so each rule is exercised on a mutated (unsigned) document
 * through the internal matching functions cl_dcap_verify calls after checking the signature. */

typedef struct parsed {
    vec v;
    cl_attest_quote q;
    const uint8_t *qe_report;
    X509 *leaf;
} parsed;

static void parsed_load(parsed *p, const char *quote, const char *collateral)
{
    vec_load(&p->v, quote, collateral);
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(p->v.quote, p->v.quote_len, &p->q, &err), 0);
    if (cl_dcap_quote_qe(&p->q, &p->qe_report, &p->leaf, &err) != 0)
        fail_msg("%s", err.msg);
}

static void parsed_free(parsed *p)
{
    X509_free(p->leaf);
    vec_free(&p->v);
}

/* QE identity text with `from` replaced by `to` (any length). */
static char *edited(const char *text, const char *from, const char *to)
{
    const char *at = strstr(text, from);
    if (!at)
        fail_msg("'%s' not in the document", from);
    size_t n = strlen(text) - strlen(from) + strlen(to) + 1;
    char *out = malloc(n);
    assert_non_null(out);
    snprintf(out, n, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    return out;
}

static int qe_match(parsed *p, const char *from, const char *to, int *st, cl_err *err)
{
    char *doc = edited(col_field(&p->v, "qe_identity"), from, to);
    cl_dcap_result r = {0};
    int rc = cl_dcap_match_qe_identity(&p->q, doc, p->qe_report, st, &r, err);
    free(doc);
    return rc;
}

static void qe_expect(parsed *p, const char *from, const char *to, cl_status code, const char *needle)
{
    int st = -1;
    cl_err err = {0};
    if (qe_match(p, from, to, &st, &err) == 0)
        fail_msg("QE identity edit '%s' -> '%s' was accepted", from, to);
    if (err.code != code || !strstr(err.msg, needle))
        fail_msg("expected '%s', got %s: %s", needle, cl_status_name(err.code), err.msg);
}

static void test_qe_identity_rules(void **state)
{
    (void)state;
    parsed p;
    parsed_load(&p, "sgx_quote", "sgx_quote_collateral.json");
    int st = -1;
    cl_err err = {0};
    /* unedited: the QE (ISVSVN 8) is UpToDate */
    assert_int_equal(qe_match(&p, "\"id\":\"QE\"", "\"id\":\"QE\"", &st, &err), 0);
    assert_int_equal(st, CL_DCAP_UP_TO_DATE);
    qe_expect(&p, "\"id\":\"QE\"", "\"id\":\"TD_QE\"", CL_E_INVALID, "wrong collateral");
    qe_expect(&p, "\"mrsigner\":\"8C4F", "\"mrsigner\":\"8C4E", CL_E_AUTH, "MRSIGNER");
    qe_expect(&p, "\"isvprodid\":1", "\"isvprodid\":3", CL_E_AUTH, "ISVPRODID");
    qe_expect(&p, "\"miscselect\":\"00000000\"", "\"miscselect\":\"00000001\"", CL_E_AUTH, "MISCSELECT");
    qe_expect(&p, "\"attributes\":\"11", "\"attributes\":\"13", CL_E_AUTH, "ATTRIBUTES");
    /* masked-out bits do not matter: MODE64 (0x04) is outside attributesMask FB */
    assert_int_equal(qe_match(&p, "\"attributes\":\"11", "\"attributes\":\"15", &st, &err), 0);
    /* an attribute bit under the mask set in the report but cleared in the identity */
    qe_expect(&p, "\"attributes\":\"11", "\"attributes\":\"01", CL_E_AUTH, "ATTRIBUTES");
    /* ISVSVN levels: the first level at or below the QE's ISVSVN decides */
    assert_int_equal(qe_match(&p, "{\"tcb\":{\"isvsvn\":8},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}",
                              "{\"tcb\":{\"isvsvn\":11},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}",
                              &st, &err),
                     0);
    assert_int_equal(st, CL_DCAP_OUT_OF_DATE); /* the QE's ISVSVN 10 now falls to the isvsvn 6 level */
    assert_int_equal(qe_match(&p, "\"tcbStatus\":\"UpToDate\"", "\"tcbStatus\":\"Revoked\"", &st, &err), 0);
    assert_int_equal(st, CL_DCAP_REVOKED);
    qe_expect(&p, "\"tcbStatus\":\"UpToDate\"", "\"tcbStatus\":\"Shiny\"", CL_E_UNSUPPORTED, "unknown");
    qe_expect(&p, "\"tcbLevels\":[", "\"tcbLevels\":[{\"tcb\":{\"isvsvn\":99},\"tcbStatus\":\"UpToDate\"}],\"x\":[",
              CL_E_DENIED, "below every");
    parsed_free(&p);
}

static int tcb_match(parsed *p, const char *from, const char *to, int *plat, int *module, cl_dcap_result *r,
                     cl_err *err)
{
    char *doc = edited(col_field(&p->v, "tcb_info"), from, to);
    memset(r, 0, sizeof(*r));
    int rc = cl_dcap_match_tcb_info(&p->q, doc, p->leaf, plat, module, r, err);
    free(doc);
    return rc;
}

static void test_tcb_info_rules_sgx(void **state)
{
    (void)state;
    parsed p;
    parsed_load(&p, "sgx_quote", "sgx_quote_collateral.json");
    int plat = -1, mod = -1;
    cl_dcap_result r;
    cl_err err = {0};
    assert_int_equal(tcb_match(&p, "\"id\":\"SGX\"", "\"id\":\"SGX\"", &plat, &mod, &r, &err), 0);
    assert_int_equal(plat, CL_DCAP_CONFIGURATION_AND_SW_HARDENING_NEEDED);
    assert_int_equal(mod, CL_DCAP_UP_TO_DATE);
    /* FMSPC and PCE ID must be the PCK certificate's */
    assert_int_equal(tcb_match(&p, "\"fmspc\":\"00A067110000\"", "\"fmspc\":\"00A067110001\"", &plat, &mod, &r, &err), -1);
    assert_non_null(strstr(err.msg, "FMSPC"));
    assert_int_equal(tcb_match(&p, "\"pceId\":\"0000\"", "\"pceId\":\"0100\"", &plat, &mod, &r, &err), -1);
    assert_non_null(strstr(err.msg, "PCE ID"));
    assert_int_equal(tcb_match(&p, "\"id\":\"SGX\"", "\"id\":\"TDX\"", &plat, &mod, &r, &err), -1);
    assert_non_null(strstr(err.msg, "wrong collateral"));
    assert_int_equal(tcb_match(&p, "\"version\":3", "\"version\":2", &plat, &mod, &r, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    /* the first level is SWHardeningNeeded with component 7 = 12; the platform has less. Lowering it
     * to 0 makes the first level match */
    const char *first = "{\"svn\":1},{\"svn\":12},";
    assert_int_equal(tcb_match(&p, first, "{\"svn\":1},{\"svn\":0}, ", &plat, &mod, &r, &err), 0);
    assert_int_equal(plat, CL_DCAP_SW_HARDENING_NEEDED);
    assert_int_equal(r.n_advisories, 1);
    /* pcesvn above the platform's in the matching level skips it (to OutOfDate levels or none) */
    assert_int_equal(tcb_match(&p, "\"pcesvn\":13},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"ConfigurationAndSWHardeningNeeded\"",
                               "\"pcesvn\":99},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"ConfigurationAndSWHardeningNeeded\"",
                               &plat, &mod, &r, &err),
                     0);
    assert_true(plat == CL_DCAP_OUT_OF_DATE || plat == CL_DCAP_OUT_OF_DATE_CONFIGURATION_NEEDED);
    /* a malformed level is an error, not a level to skip */
    assert_int_equal(tcb_match(&p, "{\"svn\":11}", "{\"svn\":-1}", &plat, &mod, &r, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_int_equal(tcb_match(&p, "{\"svn\":11}", "{\"svn\":256}", &plat, &mod, &r, &err), -1);
    assert_int_equal(tcb_match(&p, "{\"svn\":11}", "{\"svm\":11}", &plat, &mod, &r, &err), -1);
    /* unknown status names fail closed */
    assert_int_equal(tcb_match(&p, "\"tcbStatus\":\"ConfigurationAndSWHardeningNeeded\"",
                               "\"tcbStatus\":\"ConfigurationAndSWHardeningNeedeX\"", &plat, &mod, &r, &err),
                     -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    assert_int_equal(tcb_match(&p, "\"tcbStatus\":\"ConfigurationAndSWHardeningNeeded\"", "\"tcbStatus\":\"Revoked\"",
                               &plat, &mod, &r, &err),
                     0);
    assert_int_equal(plat, CL_DCAP_REVOKED);
    parsed_free(&p);
}

static void test_tcb_info_rules_tdx(void **state)
{
    (void)state;
    parsed p;
    parsed_load(&p, "tdx_quote", "tdx_quote_collateral.json");
    int plat = -1, mod = -1;
    cl_dcap_result r;
    cl_err err = {0};
    assert_int_equal(tcb_match(&p, "\"id\":\"TDX\"", "\"id\":\"TDX\"", &plat, &mod, &r, &err), 0);
    assert_int_equal(plat, CL_DCAP_UP_TO_DATE);
    uint8_t major = p.q.tee_tcb_svn[1], minor = p.q.tee_tcb_svn[0];
    print_message("TDX vector: TEE_TCB_SVN[0]=%u [1]=%u\n", minor, major);
    if (major > 0) {
        /* the TDX module identity TDX_<major> decides the module status */
        char id[32], other[32];
        snprintf(id, sizeof id, "\"id\":\"TDX_%02X\"", major);
        snprintf(other, sizeof other, "\"id\":\"TDX_%02X\"", (unsigned)(major + 0x10));
        assert_int_equal(tcb_match(&p, id, other, &plat, &mod, &r, &err), -1);
        assert_int_equal(err.code, CL_E_DENIED);
        assert_non_null(strstr(err.msg, "TDX module identity"));
        /* the identity's mrsigner must be MRSIGNERSEAM (zero for Intel's module) */
        char from[64], to[64];
        snprintf(from, sizeof from, "%s,\"mrsigner\":\"0", id);
        snprintf(to, sizeof to, "%s,\"mrsigner\":\"1", id);
        assert_int_equal(tcb_match(&p, from, to, &plat, &mod, &r, &err), -1);
        assert_non_null(strstr(err.msg, "MRSIGNERSEAM"));
    }
    /* this TD: TEE_TCB_SVN = 06 01 03 00..; level 1 (UpToDate) needs TDX components 05 00 02 00..,
     * level 2 (OutOfDate) the same with a lower PCESVN */
    assert_int_equal(major, 1);
    /* with a module major version > 0, components 0 and 1 are judged by the module identity, not here */
    assert_int_equal(tcb_match(&p, "\"tdxtcbcomponents\":[{\"svn\":5", "\"tdxtcbcomponents\":[{\"svn\":25", &plat,
                               &mod, &r, &err),
                     0);
    assert_int_equal(plat, CL_DCAP_UP_TO_DATE);
    /* component 2 above the TD's in level 1: the TD falls to level 2 */
    assert_int_equal(tcb_match(&p, "{\"svn\":2,\"category\":\"OS/VMM\",\"type\":\"TDX Late Microcode Update\"}",
                               "{\"svn\":4,\"category\":\"OS/VMM\",\"type\":\"TDX Late Microcode Update\"}", &plat,
                               &mod, &r, &err),
                     0);
    assert_int_equal(plat, CL_DCAP_OUT_OF_DATE);
    /* the module identity TDX_01 level for the module SVN (TEE_TCB_SVN[0] = 6) */
    assert_int_equal(tcb_match(&p, "{\"tcb\":{\"isvsvn\":4},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}",
                               "{\"tcb\":{\"isvsvn\":7},\"tcbDate\":\"2024-03-13T00:00:00Z\",\"tcbStatus\":\"UpToDate\"}", &plat,
                               &mod, &r, &err),
                     0);
    assert_int_equal(mod, CL_DCAP_OUT_OF_DATE);
    assert_int_equal(plat, CL_DCAP_UP_TO_DATE);
    parsed_free(&p);
}

static void test_signer_roles(void **state)
{
    (void)state;
    parsed p;
    parsed_load(&p, "sgx_quote", "sgx_quote_collateral.json");
    cl_err err = {0};
    assert_int_equal(cl_dcap_check_role(p.leaf, CL_DCAP_ROLE_PCK, &err), 0);
    /* a platform's PCK key chains to the Intel root but must not sign TCB info or QE identity */
    assert_int_equal(cl_dcap_check_role(p.leaf, CL_DCAP_ROLE_TCB_SIGNER, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    /* the TCB signing certificate is not a PCK certificate */
    X509 *root = root_ca();
    assert_int_equal(cl_dcap_check_role(root, CL_DCAP_ROLE_PCK, &err), -1);
    assert_int_equal(cl_dcap_check_role(root, CL_DCAP_ROLE_TCB_SIGNER, &err), -1);
    X509_free(root);
    /* through the verifier: the TCB info "signed" under the quote's own PCK chain */
    const uint8_t *pem = (const uint8_t *)memmem(p.v.quote, p.v.quote_len, "-----BEGIN", 10);
    assert_non_null(pem);
    char *chain = strndup((const char *)pem, p.v.quote_len - (size_t)(pem - p.v.quote));
    col_set(&p.v, "tcb_info_issuer_chain", chain);
    free(chain);
    expect_fail(&p.v, SGX_FROM + 1000, CL_E_AUTH, "is not the Intel SGX TCB Signing certificate");
    /* the quote's certification data (not covered by the quote signature) replaced by the TCB
     * signing chain: it verifies to the root, but it is not a PCK certificate */
    cl_attest_quote q;
    cl_err e2 = {0};
    assert_int_equal(cl_attest_quote_parse(p.v.quote, p.v.quote_len, &q, &e2), 0);
    vec f;
    vec_load(&f, "sgx_quote", "sgx_quote_collateral.json");
    const char *tcb_chain = col_field(&f, "tcb_info_issuer_chain");
    size_t head = (size_t)(q.cert_data - p.v.quote) - 6; /* up to the certification data type */
    size_t n = head + 6 + strlen(tcb_chain);
    uint8_t *forged = malloc(n);
    assert_non_null(forged);
    memcpy(forged, p.v.quote, head + 2);
    uint32_t cl = (uint32_t)strlen(tcb_chain), sl = (uint32_t)(n - q.signed_len - 4);
    for (int i = 0; i < 4; i++) {
        forged[head + 2 + i] = (uint8_t)(cl >> (8 * i));
        forged[q.signed_len + i] = (uint8_t)(sl >> (8 * i));
    }
    memcpy(forged + head + 6, tcb_chain, strlen(tcb_chain));
    free(f.quote);
    f.quote = forged;
    f.quote_len = n;
    expect_fail(&f, SGX_FROM + 1000, CL_E_AUTH, "is not an Intel SGX PCK certificate");
    vec_free(&f);
    parsed_free(&p);
}

static void test_converge(void **state)
{
    (void)state;
    cl_dcap_result r = {0};
    cl_err err = {0};
    assert_int_equal(cl_dcap_converge(CL_DCAP_UP_TO_DATE, CL_DCAP_UP_TO_DATE, CL_DCAP_UP_TO_DATE, &r, &err), 0);
    assert_string_equal(r.tcb_status, "UpToDate");
    assert_int_equal(cl_dcap_converge(CL_DCAP_SW_HARDENING_NEEDED, CL_DCAP_OUT_OF_DATE, 0, &r, &err), 0);
    assert_string_equal(r.tcb_status, "OutOfDate");
    assert_int_equal(cl_dcap_converge(CL_DCAP_CONFIGURATION_NEEDED, CL_DCAP_OUT_OF_DATE, 0, &r, &err), 0);
    assert_string_equal(r.tcb_status, "OutOfDateConfigurationNeeded");
    assert_int_equal(cl_dcap_converge(CL_DCAP_UP_TO_DATE, 0, CL_DCAP_OUT_OF_DATE, &r, &err), 0);
    assert_string_equal(r.tcb_status, "OutOfDate");
    assert_int_equal(cl_dcap_converge(CL_DCAP_CONFIGURATION_AND_SW_HARDENING_NEEDED, 0, 0, &r, &err), 0);
    assert_string_equal(r.tcb_status, "ConfigurationAndSWHardeningNeeded");
    /* a Revoked QE, platform or module rejects */
    assert_int_equal(cl_dcap_converge(CL_DCAP_UP_TO_DATE, CL_DCAP_REVOKED, 0, &r, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "quoting enclave TCB is Revoked"));
    assert_int_equal(cl_dcap_converge(CL_DCAP_REVOKED, 0, 0, &r, &err), -1);
    assert_int_equal(cl_dcap_converge(0, 0, CL_DCAP_REVOKED, &r, &err), -1);
    assert_int_equal(cl_dcap_converge(0, 99, 0, &r, &err), -1);
}

/* ---------------------------------------------------------------- the verifier back end */

static void test_backend(void **state)
{
    (void)state;
    cl_err err = {0};
    char *p = vec_path("sgx_quote_collateral.json");
    cl_dcap_collateral *col = cl_dcap_collateral_load(p, &err);
    free(p);
    assert_non_null(col);
    X509 *root = root_ca();
    cl_dcap_backend ctx = {.root_ca = root, .col = col, .now_unix = SGX_FROM + 5000};
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    assert_non_null(v);
    assert_int_equal(cl_attest_verifier_add_backend(v, "dcap", cl_dcap_backend_verify, &ctx, &err), 0);
    size_t len;
    uint8_t *quote = read_vec("sgx_quote", &len);
    cl_attest_claims c;
    if (cl_attest_verify(v, quote, len, &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.evidence_type, "sgx-dcap");
    assert_string_equal(c.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_false(c.insecure);
    assert_false(c.debug);
    /* the clock moves past the collateral: rejected, claims cleared */
    ctx.now_unix = SGX_TO + 1;
    assert_int_equal(cl_attest_verify(v, quote, len, &c, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    assert_string_equal(c.evidence_type, "");
    /* the real clock (2026): this collateral expired in 2025 */
    ctx.now_unix = 0;
    assert_int_equal(cl_attest_verify(v, quote, len, &c, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    /* a TDX quote with SGX collateral */
    ctx.now_unix = SGX_FROM + 5000;
    uint8_t *tdx = read_vec("tdx_quote", &len);
    assert_int_equal(cl_attest_verify(v, tdx, len, &c, &err), -1);
    print_message("TDX quote with SGX collateral: %s\n", err.msg);
    /* no collateral configured */
    cl_dcap_backend empty = {0};
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(tdx, len, &q, &err), 0);
    assert_int_equal(cl_dcap_backend_verify(&empty, &q, &c, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    free(tdx);
    free(quote);
    cl_attest_verifier_free(v);
    X509_free(root);
    cl_dcap_collateral_free(col);
}

static void test_tdx_backend(void **state)
{
    (void)state;
    cl_err err = {0};
    char *p = vec_path("tdx_quote_collateral.json");
    cl_dcap_collateral *col = cl_dcap_collateral_load(p, &err);
    free(p);
    assert_non_null(col);
    X509 *root = root_ca();
    cl_dcap_backend ctx = {.root_ca = root, .col = col, .now_unix = TDX_TO};
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    assert_int_equal(cl_attest_verifier_add_backend(v, "dcap", cl_dcap_backend_verify, &ctx, &err), 0);
    size_t len;
    uint8_t *quote = read_vec("tdx_quote", &len);
    cl_attest_claims c;
    if (cl_attest_verify(v, quote, len, &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.evidence_type, "tdx-dcap");
    assert_string_equal(c.tcb_status, "UpToDate");
    assert_int_equal(c.tee_type, CL_QUOTE_TEE_TDX);
    free(quote);
    /* the outdated TD with its own (valid) collateral is rejected through the back end as well */
    cl_dcap_collateral_free(col);
    p = vec_path("tdx_quote_outdated_collateral.json");
    col = cl_dcap_collateral_load(p, &err);
    free(p);
    assert_non_null(col);
    ctx.col = col;
    ctx.now_unix = OLD_FROM + 100;
    quote = read_vec("tdx_quote_outdated", &len);
    assert_int_equal(cl_attest_verify(v, quote, len, &c, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_non_null(strstr(err.msg, "below every TCB level"));
    free(quote);
    cl_attest_verifier_free(v);
    X509_free(root);
    cl_dcap_collateral_free(col);
}


/* ---------------------------------------------------------------- pinned root in every chain */

static char *pem_of(X509 *x)
{
    BIO *b = BIO_new(BIO_s_mem());
    PEM_write_bio_X509(b, x);
    char *p;
    long n = BIO_get_mem_data(b, &p);
    char *out = strndup(p, (size_t)n);
    BIO_free(b);
    return out;
}

/* A self-signed impostor with the Intel root's subject (and its own key). */
static X509 *impostor_root(EVP_PKEY **key)
{
    X509 *real = root_ca();
    *key = EVP_EC_gen("P-256");
    X509 *fake = X509_new();
    X509_set_version(fake, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(fake), 99);
    X509_set_subject_name(fake, X509_get_subject_name(real));
    X509_set_issuer_name(fake, X509_get_subject_name(real));
    X509_gmtime_adj(X509_getm_notBefore(fake), -100L * 365 * 86400);
    X509_gmtime_adj(X509_getm_notAfter(fake), 100L * 365 * 86400);
    X509_set_pubkey(fake, *key);
    assert_true(X509_sign(fake, *key, EVP_sha256()) > 0);
    X509_free(real);
    return fake;
}

/* The PEM chain with its last certificate (the root) replaced by `root_pem`. */
static char *chain_with_root(const char *chain, const char *root_pem)
{
    const char *last = NULL, *p = chain;
    while ((p = strstr(p, "-----BEGIN CERTIFICATE-----")) != NULL)
        last = p++;
    assert_non_null(last);
    size_t head = (size_t)(last - chain);
    char *out = malloc(head + strlen(root_pem) + 1);
    memcpy(out, chain, head);
    strcpy(out + head, root_pem);
    return out;
}

/* The SGX v3 quote with its certification data (the PCK chain, not covered by the quote signature)
 * replaced by `chain`. */
static void quote_set_chain(vec *v, const char *chain)
{
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(v->quote, v->quote_len, &q, &err), 0);
    assert_int_equal(q.version, 3);
    size_t head = (size_t)(q.cert_data - v->quote) - 6, n = head + 6 + strlen(chain);
    uint8_t *forged = malloc(n);
    memcpy(forged, v->quote, head + 2);
    uint32_t cl = (uint32_t)strlen(chain), sl = (uint32_t)(n - q.signed_len - 4);
    for (int i = 0; i < 4; i++) {
        forged[head + 2 + i] = (uint8_t)(cl >> (8 * i));
        forged[q.signed_len + i] = (uint8_t)(sl >> (8 * i));
    }
    memcpy(forged + head + 6, chain, strlen(chain));
    free(v->quote);
    v->quote = forged;
    v->quote_len = n;
}

static char *quote_chain(vec *v)
{
    cl_attest_quote q;
    cl_err err = {0};
    assert_int_equal(cl_attest_quote_parse(v->quote, v->quote_len, &q, &err), 0);
    return strndup((const char *)q.cert_data, q.cert_len);
}

static void test_root_pinned_in_every_chain(void **state)
{
    (void)state;
    EVP_PKEY *k;
    X509 *fake = impostor_root(&k);
    char *fake_pem = pem_of(fake);
    /* the quote's PCK chain carrying an impostor root (OpenSSL alone ignores it: the path still ends
     * at the trusted root) */
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    char *qc = quote_chain(&v), *bad = chain_with_root(qc, fake_pem);
    quote_set_chain(&v, qc);
    expect_ok(&v, SGX_FROM + 1000, "ConfigurationAndSWHardeningNeeded"); /* the re-encoding itself is harmless */
    quote_set_chain(&v, bad);
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "not the pinned Intel SGX Root CA");
    free(bad);
    /* a stray extra certificate after the root */
    X509 *real = root_ca();
    char *real_pem = pem_of(real);
    size_t n = strlen(qc) + strlen(fake_pem) + 1;
    bad = malloc(n);
    snprintf(bad, n, "%s%s", qc, fake_pem);
    quote_set_chain(&v, bad);
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "not the pinned Intel SGX Root CA");
    free(bad);
    vec_free(&v);
    /* the issuer chains of the collateral: TCB info, QE identity, PCK CRL */
    const char *fields[] = {"tcb_info_issuer_chain", "qe_identity_issuer_chain", "pck_crl_issuer_chain"};
    for (size_t i = 0; i < 3; i++) {
        vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
        bad = chain_with_root(col_field(&v, fields[i]), fake_pem);
        col_set(&v, fields[i], bad);
        expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "not the pinned Intel SGX Root CA");
        free(bad);
        /* the same chain ending at the real root passes */
        bad = chain_with_root(col_field(&v, fields[i]), real_pem);
        col_set(&v, fields[i], bad);
        expect_ok(&v, SGX_FROM + 1000, "ConfigurationAndSWHardeningNeeded");
        free(bad);
        vec_free(&v);
    }
    /* a PCK CRL issuer chain of the other CA (valid Intel chain, but not the CRL's issuer) */
    vec w;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    vec_load(&w, "tdx_quote", "tdx_quote_collateral.json");
    col_set(&v, "pck_crl_issuer_chain", col_field(&w, "pck_crl_issuer_chain"));
    expect_fail(&v, SGX_FROM + 1000, CL_E_AUTH, "PCK CRL is not signed by the first certificate of its issuer");
    vec_free(&v);
    vec_free(&w);
    free(real_pem);
    X509_free(real);
    free(qc);
    free(fake_pem);
    X509_free(fake);
    EVP_PKEY_free(k);
}

/* ---------------------------------------------------------------- strict JSON */

static void test_collateral_strict_json(void **state)
{
    (void)state;
    size_t n;
    char *text = (char *)read_vec("sgx_quote_collateral.json", &n);
    cl_err err = {0};
    cl_dcap_collateral *col = cl_dcap_collateral_load_buffer(text, n, &err);
    assert_non_null(col);
    cl_dcap_collateral_free(col);
    /* a repeated key: two readers would take different values */
    char *end = strrchr(text, '}');
    assert_non_null(end);
    size_t head = (size_t)(end - text);
    char buf[32768];
    assert_true(n + 200 < sizeof buf);
    snprintf(buf, sizeof buf, "%.*s,\"pck_crl\":\"00\"}", (int)head, text);
    assert_null(cl_dcap_collateral_load_buffer(buf, strlen(buf), &err));
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "line"));
    /* trailing data, a second object */
    snprintf(buf, sizeof buf, "%s {}", text);
    assert_null(cl_dcap_collateral_load_buffer(buf, strlen(buf), &err));
    assert_int_equal(err.code, CL_E_FORMAT);
    /* an unknown field (a typo) */
    snprintf(buf, sizeof buf, "%.*s,\"pck_crl_issuer\":\"x\"}", (int)head, text);
    assert_null(cl_dcap_collateral_load_buffer(buf, strlen(buf), &err));
    assert_non_null(strstr(err.msg, "unknown field"));
    free(text);
    /* a repeated key inside the signed TCB info text */
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    const char *tcb = col_field(&v, "tcb_info");
    char *dup = malloc(strlen(tcb) + 32);
    sprintf(dup, "{\"id\":\"SGX\",%s", tcb + 1);
    col_set(&v, "tcb_info", dup);
    char *t2 = cJSON_PrintUnformatted(v.col);
    assert_null(cl_dcap_collateral_load_buffer(t2, strlen(t2), &err));
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "tcb_info"));
    free(t2);
    free(dup);
    vec_free(&v);
}

/* ---------------------------------------------------------------- PCCS answers */

typedef struct answers {
    char *tcb, *qe, *tcb_chain, *qe_chain, *crl_chain;
    uint8_t *crl, *root_crl;
    size_t crl_len, root_crl_len;
} answers;

static char *pct_encode(const char *s)
{
    char *o = malloc(strlen(s) * 3 + 1), *p = o;
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' ||
            c == '_' || c == '~')
            *p++ = (char)c;
        else
            p += sprintf(p, "%%%02X", c);
    }
    *p = 0;
    return o;
}

static uint8_t *unhex(const char *h, size_t *len)
{
    *len = strlen(h) / 2;
    uint8_t *b = malloc(*len);
    assert_int_equal(cl_hex_decode(h, strlen(h), b, *len), 0);
    return b;
}

/* The vector's collateral as a PCCS serves it (bodies as Intel's PCS formats them); tcb_fmt varies
 * the TCB info body (printf format of the text and the signature). */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
static void answers_make(answers *a, vec *v, const char *tcb_fmt)
{
    const char *fmt = tcb_fmt ? tcb_fmt : "{\"tcbInfo\":%s,\"signature\":\"%s\"}";
    a->tcb = malloc(strlen(col_field(v, "tcb_info")) + 256);
    sprintf(a->tcb, fmt, col_field(v, "tcb_info"), col_field(v, "tcb_info_signature"));
    a->qe = malloc(strlen(col_field(v, "qe_identity")) + 256);
    sprintf(a->qe, "{\"enclaveIdentity\":%s,\"signature\":\"%s\"}", col_field(v, "qe_identity"),
            col_field(v, "qe_identity_signature"));
    a->tcb_chain = pct_encode(col_field(v, "tcb_info_issuer_chain"));
    a->qe_chain = pct_encode(col_field(v, "qe_identity_issuer_chain"));
    a->crl_chain = pct_encode(col_field(v, "pck_crl_issuer_chain"));
    a->crl = unhex(col_field(v, "pck_crl"), &a->crl_len);
    a->root_crl = (uint8_t *)strdup(col_field(v, "root_ca_crl")); /* PCCS /rootcacrl: hex */
    a->root_crl_len = strlen((char *)a->root_crl);
}
#pragma GCC diagnostic pop

static void answers_free(answers *a)
{
    free(a->tcb);
    free(a->qe);
    free(a->tcb_chain);
    free(a->qe_chain);
    free(a->crl_chain);
    free(a->crl);
    free(a->root_crl);
}

static cl_dcap_collateral *answers_load(const answers *a, cl_err *err)
{
    cl_dcap_pccs_answers p = {a->tcb, strlen(a->tcb), a->tcb_chain, strlen(a->tcb_chain), a->qe, strlen(a->qe),
                              a->qe_chain, strlen(a->qe_chain), a->crl, a->crl_len, a->crl_chain,
                              strlen(a->crl_chain), a->root_crl, a->root_crl_len};
    return cl_dcap_collateral_from_pccs(&p, err);
}

static int verify_with(vec *v, cl_dcap_collateral *col, int64_t now, cl_dcap_result *r, cl_err *err)
{
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(v->quote, v->quote_len, &q, err), 0);
    X509 *root = root_ca();
    int rc = cl_dcap_verify(&q, col, root, now, r, err);
    X509_free(root);
    return rc;
}

static void test_pccs_answers(void **state)
{
    (void)state;
    static const struct {
        const char *quote, *col, *status;
        int64_t at;
    } cases[] = {{"sgx_quote", "sgx_quote_collateral.json", "ConfigurationAndSWHardeningNeeded", SGX_FROM + 10},
                 {"tdx_quote", "tdx_quote_collateral.json", "UpToDate", TDX_FROM + 10}};
    for (size_t i = 0; i < 2; i++) {
        vec v;
        vec_load(&v, cases[i].quote, cases[i].col);
        /* as served, and with the members swapped and spaced: the signed span is found either way */
        const char *fmts[] = {NULL, "{ \"signature\" : \"%2$s\" ,\n \"tcbInfo\" :\t%1$s }\r\n"};
        for (size_t f = 0; f < 2; f++) {
            answers a;
            answers_make(&a, &v, fmts[f]);
            cl_err err = {0};
            cl_dcap_collateral *col = answers_load(&a, &err);
            if (!col)
                fail_msg("%s: %s", cases[i].col, err.msg);
            const cl_dcap_collateral_info *in = cl_dcap_collateral_info_get(col);
            assert_string_equal(in->tee, i ? "TDX" : "SGX");
            assert_string_equal(in->ca, i ? "platform" : "processor");
            assert_true(in->next_update > in->issued);
            cl_dcap_result r;
            if (verify_with(&v, col, cases[i].at, &r, &err) != 0)
                fail_msg("%s: %s", cases[i].col, err.msg);
            assert_string_equal(r.tcb_status, cases[i].status);
            /* the cache format round-trips byte for byte where it matters */
            size_t len;
            char *json = cl_dcap_collateral_to_json(col, &len);
            cl_dcap_collateral *back = cl_dcap_collateral_load_buffer(json, len, &err);
            assert_non_null(back);
            assert_int_equal(verify_with(&v, back, cases[i].at, &r, &err), 0);
            cl_dcap_collateral_free(back);
            free(json);
            cl_dcap_collateral_free(col);
            answers_free(&a);
        }
        vec_free(&v);
    }
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    answers a;
    cl_err err = {0};
    cl_dcap_result r;
    /* re-serialised (pretty) TCB info: same JSON value, other bytes: the signature fails */
    cJSON *t = cJSON_Parse(col_field(&v, "tcb_info"));
    char *pretty = cJSON_Print(t);
    cJSON_Delete(t);
    char *orig = strdup(col_field(&v, "tcb_info"));
    col_set(&v, "tcb_info", pretty);
    answers_make(&a, &v, NULL);
    cl_dcap_collateral *col = answers_load(&a, &err);
    assert_non_null(col);
    assert_int_equal(verify_with(&v, col, SGX_FROM + 10, &r, &err), -1);
    assert_non_null(strstr(err.msg, "TCB info signature does not verify"));
    cl_dcap_collateral_free(col);
    answers_free(&a);
    free(pretty);
    col_set(&v, "tcb_info", orig);
    free(orig);
    /* malformed answers, each refused with what is wrong */
    const struct {
        const char *fmt, *needle;
    } bad[] = {
        {"{\"tcbInfo\":%s,\"signature\":\"%s\",\"signature\":\"00\"}", "duplicate"},
        {"{\"tcbInfo\":%s,\"signature\":\"%s\"} x", "line"},
        {"{\"tcbInfo\":%s,\"signature\":\"%s\",\"extra\":1}", "unknown field"},
        {"{\"tcbinfo\":%s,\"signature\":\"%s\"}", "unknown field"},
        {"{\"tcbInfo\":[%s],\"signature\":\"%s\"}", "must be an object"},
        {"{\"tcbInfo\":%s,\"signature\":\"%.100s\"}", "128 hex"},
        {"[%s,\"%s\"]", "object"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        answers_make(&a, &v, bad[i].fmt);
        cl_err_clear(&err);
        assert_null(answers_load(&a, &err));
        assert_int_equal(err.code, CL_E_FORMAT);
        if (!strstr(err.msg, bad[i].needle))
            fail_msg("case %zu: '%s' not in: %s", i, bad[i].needle, err.msg);
        answers_free(&a);
    }
    /* a bad issuer chain header: a broken %-escape, no certificate, missing */
    answers_make(&a, &v, NULL);
    a.tcb_chain[10] = '%';
    a.tcb_chain[11] = 'Z';
    assert_null(answers_load(&a, &err));
    assert_non_null(strstr(err.msg, "%-escape"));
    strcpy(a.tcb_chain, "garbage");
    assert_null(answers_load(&a, &err));
    assert_non_null(strstr(err.msg, "no PEM certificate"));
    a.tcb_chain[0] = 0;
    assert_null(answers_load(&a, &err));
    assert_non_null(strstr(err.msg, "missing"));
    answers_free(&a);
    /* CRLs in DER, PEM or hex are all read; anything else is not */
    answers_make(&a, &v, NULL);
    a.crl[0] ^= 0xFF;
    assert_null(answers_load(&a, &err));
    assert_non_null(strstr(err.msg, "PCK CRL"));
    answers_free(&a);
    vec_free(&v);
}

/* A CRL signed (by a throwaway key) until its DER ends with `last`: an ECDSA signature ends the DER,
 * so about 1 CRL in 85 that Intel issues ends with one of 0x0a, 0x0d, 0x20. */
static uint8_t *crl_ending_with(uint8_t last, size_t *len)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    X509_CRL *crl = X509_CRL_new();
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const unsigned char *)"Intel SGX PCK Processor CA", -1, -1, 0);
    X509_CRL_set_version(crl, 1);
    X509_CRL_set_issuer_name(crl, n);
    ASN1_TIME *t = ASN1_TIME_set(NULL, (time_t)SGX_FROM);
    X509_CRL_set1_lastUpdate(crl, t);
    X509_CRL_set1_nextUpdate(crl, t);
    uint8_t *der = NULL;
    int dl = 0;
    for (int i = 0; i < 100000; i++) {
        assert_true(X509_CRL_sign(crl, k, EVP_sha256()) > 0);
        OPENSSL_free(der);
        der = NULL;
        dl = i2d_X509_CRL(crl, &der);
        if (dl > 0 && der[dl - 1] == last)
            break;
    }
    assert_int_equal(der[dl - 1], last);
    uint8_t *out = malloc((size_t)dl);
    memcpy(out, der, (size_t)dl);
    *len = (size_t)dl;
    OPENSSL_free(der);
    ASN1_TIME_free(t);
    X509_NAME_free(n);
    X509_CRL_free(crl);
    EVP_PKEY_free(k);
    return out;
}

/* A CRL is read whole whatever its last byte: only the text forms (PEM, hex) may end with white
 * space. The DER form lost a last byte of 0x0a, 0x0d or 0x20 (taken for a line end), so such a CRL
 * was "not a CRL", from a PCCS (DER) and from a collateral file or the cache (hex of the DER). */
static void test_crl_last_byte(void **state)
{
    (void)state;
    static const uint8_t ends[] = {0x0a, 0x0d, 0x20};
    for (size_t i = 0; i < sizeof ends; i++) {
        size_t n;
        uint8_t *der = crl_ending_with(ends[i], &n);
        vec v;
        vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
        answers a;
        answers_make(&a, &v, NULL);
        free(a.crl);
        a.crl = der;
        a.crl_len = n;
        cl_err err = {0};
        cl_dcap_collateral *col = answers_load(&a, &err);
        if (!col)
            fail_msg("a DER CRL ending with 0x%02x: %s", ends[i], err.msg);
        cl_dcap_collateral_free(col);
        /* the same CRL as hex in a collateral file */
        char *hex = malloc(2 * n + 1);
        cl_hex_encode(der, n, hex);
        col_set(&v, "pck_crl", hex);
        char *json = cJSON_PrintUnformatted(v.col);
        col = cl_dcap_collateral_load_buffer(json, strlen(json), &err);
        if (!col)
            fail_msg("a hex CRL ending with 0x%02x: %s", ends[i], err.msg);
        cl_dcap_collateral_free(col);
        free(json);
        free(hex);
        answers_free(&a);
        vec_free(&v);
    }
}

/* ---------------------------------------------------------------- collateral sources */

static cl_dcap_source *source(const char *const *files, size_t n, const char *cache, const char *url, int64_t now,
                              int64_t max_age, cl_err *err)
{
    char *root = vec_path("Intel_SGX_Provisioning_Certification_RootCA.der");
    cl_dcap_config cfg = {.root_ca_file = root, .collateral_files = files, .collateral_count = n, .cache_dir = cache,
                          .pccs_url = url, .pccs_timeout_ms = 2000, .now_unix = now, .max_age_s = max_age};
    cl_dcap_source *s = cl_dcap_source_new(&cfg, err);
    free(root);
    return s;
}

static int source_verify(cl_dcap_source *s, const char *quote, cl_dcap_result *r, cl_err *err)
{
    size_t len;
    uint8_t *buf = read_vec(quote, &len);
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(buf, len, &q, err), 0);
    int rc = cl_dcap_source_verify(s, &q, r, err);
    free(buf);
    return rc;
}

static void test_source_files(void **state)
{
    (void)state;
    /* more than 4 files (the key server refused a fifth before): each quote finds its own */
    char *dir = tu_tmpdir();
    const char *names[] = {"sgx_quote_collateral.json", "tdx_quote_collateral.json",
                           "tdx_quote_outdated_collateral.json"};
    char *files[7];
    for (int i = 0; i < 7; i++) {
        char name[32];
        snprintf(name, sizeof name, "c%d.json", i);
        files[i] = tu_path(dir, name);
        size_t n;
        uint8_t *b = read_vec(names[i % 3], &n);
        tu_write_file(files[i], b, n);
        free(b);
    }
    cl_err err = {0};
    cl_dcap_source *s = source((const char *const *)files, 7, NULL, NULL, SGX_FROM + 100, 0, &err);
    if (!s)
        fail_msg("%s", err.msg);
    cl_dcap_result r;
    if (source_verify(s, "sgx_quote", &r, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(r.tcb_status, "ConfigurationAndSWHardeningNeeded");
    assert_int_equal(source_verify(s, "tdx_quote", &r, &err), 0);
    assert_string_equal(r.tcb_status, "UpToDate");
    cl_dcap_source_set_time(s, OLD_FROM + 100);
    assert_int_equal(source_verify(s, "tdx_quote_outdated", &r, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    /* the TDX quotes' platforms differ (FMSPC B0C06F000000 vs 90C06F000000): only the SGX file left */
    cl_dcap_source_free(s);
    s = source((const char *const *)files, 1, NULL, NULL, TDX_FROM + 100, 0, &err);
    assert_int_equal(source_verify(s, "tdx_quote", &r, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "FMSPC B0C06F000000"));
    /* max age: the SGX collateral was issued at 1750327278 (its QE identity), SGX_FROM - 3293 */
    cl_dcap_source_free(s);
    s = source((const char *const *)files, 1, NULL, NULL, SGX_FROM + 7200, 7200, &err);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), -1);
    assert_int_equal(err.code, CL_E_EXPIRED);
    assert_non_null(strstr(err.msg, "--collateral-max-age"));
    cl_dcap_source_set_time(s, SGX_FROM + 600);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), 0);
    /* reload is all or none: a broken file keeps the set in use */
    tu_write_file(files[0], "{}", 2);
    assert_int_equal(cl_dcap_source_reload(s, &err), -1);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), 0);
    cl_dcap_source_free(s);
    /* option checks */
    assert_null(source(NULL, 0, NULL, NULL, 0, 0, &err));
    assert_non_null(strstr(err.msg, "--pccs-url"));
    assert_null(source(NULL, 0, NULL, "http://pccs", 0, 0, &err));
    assert_non_null(strstr(err.msg, "https"));
    assert_null(source((const char *const *)files + 1, 1, dir, NULL, 0, 0, &err));
    assert_non_null(strstr(err.msg, "only used with --pccs-url"));
    for (int i = 0; i < 7; i++)
        free(files[i]);
    tu_rmrf(dir);
    free(dir);
}

/* The on-disk cache while the PCCS is down (nothing listens on the port): used until its nextUpdate,
 * then refused; a tampered cache file is never used. Fixed clock. */
static void test_source_cache_outage(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    answers a;
    answers_make(&a, &v, NULL);
    cl_err err = {0};
    cl_dcap_collateral *col = answers_load(&a, &err);
    assert_non_null(col);
    size_t len;
    char *json = cl_dcap_collateral_to_json(col, &len);
    char *path = tu_path(dir, "SGX-00A067110000-processor.json");
    tu_write_file(path, json, len);
    const char *down = "https://127.0.0.1:9/";
    cl_dcap_source *s = source(NULL, 0, dir, down, SGX_FROM + 100, 0, &err);
    if (!s)
        fail_msg("%s", err.msg);
    cl_dcap_result r;
    if (source_verify(s, "sgx_quote", &r, &err) != 0)
        fail_msg("%s", err.msg);
    cl_dcap_source_stats st;
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.cache_reads, 1);
    assert_int_equal(st.fetches, 0); /* not due: nextUpdate is a month away */
    /* within a day of nextUpdate: a refresh is tried, fails, and the cache is still used */
    cl_dcap_source_set_time(s, SGX_TO - 3600);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), 0);
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 1);
    assert_int_equal(st.fetch_failures, 1);
    /* a failed fetch is not retried for a minute: handshakes meanwhile do not wait for the PCCS */
    cl_dcap_source_set_time(s, SGX_TO - 3590);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), 0);
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 1);
    cl_dcap_source_set_time(s, SGX_TO - 3500);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), 0);
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 2);
    /* after nextUpdate: refused */
    cl_dcap_source_set_time(s, SGX_TO + 1);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    print_message("after nextUpdate, PCCS down: %s\n", err.msg);
    cl_dcap_source_free(s);
    /* a tampered cache: one byte of the signed TCB info changed */
    char *at = strstr(json, "\\\"pcesvn\\\":13");
    assert_non_null(at);
    at[strlen("\\\"pcesvn\\\":1")] = '4';
    tu_write_file(path, json, len);
    s = source(NULL, 0, dir, down, SGX_FROM + 100, 0, &err);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), -1);
    assert_int_equal(err.code, CL_E_IO); /* the cache was not used; the PCCS is down */
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.cache_reads, 0);
    assert_int_equal(st.fetches, 1);
    /* nothing in hand and a fetch failed 10 s ago: refused at once, without asking the PCCS */
    cl_dcap_source_set_time(s, SGX_FROM + 110);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), -1);
    assert_non_null(strstr(err.msg, "failed 10 s ago"));
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 1);
    cl_dcap_source_free(s);
    /* a cache file of another platform under this platform's name */
    vec w;
    vec_load(&w, "tdx_quote", "tdx_quote_collateral.json");
    answers b;
    answers_make(&b, &w, NULL);
    cl_dcap_collateral *other = answers_load(&b, &err);
    free(json);
    json = cl_dcap_collateral_to_json(other, &len);
    tu_write_file(path, json, len);
    s = source(NULL, 0, dir, down, TDX_FROM + 100, 0, &err);
    assert_int_equal(source_verify(s, "sgx_quote", &r, &err), -1);
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.cache_reads, 0);
    cl_dcap_source_free(s);
    cl_dcap_collateral_free(other);
    answers_free(&b);
    vec_free(&w);
    free(json);
    free(path);
    cl_dcap_collateral_free(col);
    answers_free(&a);
    vec_free(&v);
    tu_rmrf(dir);
    free(dir);
}

/* A quote whose PCK chain does not verify to the pinned root (here: the genuine chain with its leaf's
 * FMSPC changed, so the leaf's signature fails) names a platform no one vouched for: no collateral is
 * fetched for it, so that such quotes, each naming another FMSPC, cannot make the verifier (inside a
 * TLS handshake, on the key server's event loop) wait for a PCCS request each, nor grow its table of
 * platforms. The genuine quote is still fetched for. */
static void test_source_forged_platform_not_fetched(void **state)
{
    (void)state;
    vec v;
    vec_load(&v, "sgx_quote", "sgx_quote_collateral.json");
    char *qc = quote_chain(&v);
    /* the leaf is the chain's first certificate; its DER holds the FMSPC 00A067110000 once */
    BIO *b = BIO_new_mem_buf(qc, (int)strlen(qc));
    X509 *leaf = PEM_read_bio_X509(b, NULL, NULL, NULL);
    BIO_free(b);
    assert_non_null(leaf);
    uint8_t *der = NULL;
    int n = i2d_X509(leaf, &der);
    static const uint8_t real_fmspc[6] = {0x00, 0xA0, 0x67, 0x11, 0x00, 0x00};
    uint8_t *at = NULL;
    for (int i = 0; i + 6 <= n && !at; i++)
        if (!memcmp(der + i, real_fmspc, 6))
            at = der + i;
    assert_non_null(at);
    const char *rest = strstr(qc + 1, "-----BEGIN CERTIFICATE-----");
    assert_non_null(rest);
    cl_err err = {0};
    cl_dcap_source *s = source(NULL, 0, NULL, "https://127.0.0.1:9/", SGX_FROM + 100, 0, &err);
    if (!s)
        fail_msg("%s", err.msg);
    cl_dcap_source_stats st;
    for (int k = 0; k < 20; k++) {
        at[5] = (uint8_t)(0x40 + k); /* another platform each time */
        const uint8_t *p = der;
        X509 *forged = d2i_X509(NULL, &p, n);
        assert_non_null(forged);
        char *fp = pem_of(forged), *chain = malloc(strlen(fp) + strlen(rest) + 1);
        strcpy(chain, fp);
        strcat(chain, rest);
        quote_set_chain(&v, chain);
        cl_attest_quote q;
        assert_int_equal(cl_attest_quote_parse(v.quote, v.quote_len, &q, &err), 0);
        cl_dcap_result r;
        assert_int_equal(cl_dcap_source_verify(s, &q, &r, &err), -1);
        assert_int_equal(err.code, CL_E_AUTH);
        if (!strstr(err.msg, "PCK certificate chain does not verify"))
            fail_msg("forged PCK certificate: %s", err.msg);
        free(chain);
        free(fp);
        X509_free(forged);
    }
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 0);
    /* the genuine chain: fetched for (the PCCS is down) */
    quote_set_chain(&v, qc);
    cl_attest_quote q;
    assert_int_equal(cl_attest_quote_parse(v.quote, v.quote_len, &q, &err), 0);
    cl_dcap_result r;
    assert_int_equal(cl_dcap_source_verify(s, &q, &r, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    cl_dcap_source_stats_get(s, &st);
    assert_int_equal(st.fetches, 1);
    cl_dcap_source_free(s);
    OPENSSL_free(der);
    X509_free(leaf);
    free(qc);
    vec_free(&v);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_sgx_valid),
        cmocka_unit_test(test_tdx_valid),
        cmocka_unit_test(test_tdx_outdated_rejected),
        cmocka_unit_test(test_windows),
        cmocka_unit_test(test_document_dates),
        cmocka_unit_test(test_untrusted_root),
        cmocka_unit_test(test_pck_crl_swapped),
        cmocka_unit_test(test_root_crl_missing_is_refused),
        cmocka_unit_test(test_quote_tampering),
        cmocka_unit_test(test_tdx_quote_tampering),
        cmocka_unit_test(test_collateral_tampering),
        cmocka_unit_test(test_issuer_chain_swapped),
        cmocka_unit_test(test_untrusted_collateral_signer),
        cmocka_unit_test(test_collateral_of_other_platform),
        cmocka_unit_test(test_collateral_format),
        cmocka_unit_test(test_qe_identity_rules),
        cmocka_unit_test(test_tcb_info_rules_sgx),
        cmocka_unit_test(test_tcb_info_rules_tdx),
        cmocka_unit_test(test_signer_roles),
        cmocka_unit_test(test_converge),
        cmocka_unit_test(test_backend),
        cmocka_unit_test(test_tdx_backend),
        cmocka_unit_test(test_root_pinned_in_every_chain),
        cmocka_unit_test(test_collateral_strict_json),
        cmocka_unit_test(test_pccs_answers),
        cmocka_unit_test(test_source_files),
        cmocka_unit_test(test_crl_last_byte),
        cmocka_unit_test(test_source_cache_outage),
        cmocka_unit_test(test_source_forged_platform_not_fetched),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
