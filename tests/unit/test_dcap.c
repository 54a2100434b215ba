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
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
