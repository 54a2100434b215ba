/* dcap.c — offline Intel DCAP quote verification (cloister/dcap.h): collateral loading, the PCK
 * chain and CRL checks (OpenSSL X509_STORE at a given time), QE report and quote signatures, TCB info
 * and QE identity (signatures over the exact served text, validity dates, TCB level matching for SGX
 * and TDX), and the cl_attest_backend_fn adapter. Global state: a cache of parsed PCK chains (by hash);
 * per collateral, memos of the checks whose outcome only the time window can change. */
#include "dcap_internal.h"
#include "attest_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "cloister/json.h"
#include <openssl/asn1.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/err.h>
#include <openssl/objects.h>
#include <openssl/params.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/x509_vfy.h>
#include <openssl/x509v3.h>

#define COLLATERAL_MAX (1024 * 1024)
#define QE_REPORT_LEN 384
#define CERT_TYPE_PCK_CHAIN 5
#define SGX_EXT_OID "1.2.840.113741.1.13.1"

/* Intel's QE vendor id 939A7233-F79C-4CA9-940A-0DB3957F0607 */
static const uint8_t k_intel_qe_vendor[16] = {0x93, 0x9A, 0x72, 0x33, 0xF7, 0x9C, 0x4C, 0xA9,
                                              0x94, 0x0A, 0x0D, 0xB3, 0x95, 0x7F, 0x06, 0x07};

const char *const cl_dcap_status_names[CL_DCAP_STATUS_COUNT] = {
    "UpToDate",  "SWHardeningNeeded", "ConfigurationNeeded", "ConfigurationAndSWHardeningNeeded",
    "OutOfDate", "OutOfDateConfigurationNeeded", "Revoked"};
#define k_statuses cl_dcap_status_names

/* ---------------------------------------------------------------- crypto helpers */

/* Validity periods are inclusive at both ends (valid through notAfter / nextUpdate, as Intel's
 * documents are); OpenSSL treats the exact end second as expired, so that one second is let through
 * here. Anything else OpenSSL reports stays an error. */
static int verify_cb(int ok, X509_STORE_CTX *ctx)
{
    if (ok)
        return ok;
    int e = X509_STORE_CTX_get_error(ctx);
    const time_t *now = X509_STORE_CTX_get_app_data(ctx);
    const ASN1_TIME *end = NULL;
    if (e == X509_V_ERR_CERT_HAS_EXPIRED && X509_STORE_CTX_get_current_cert(ctx))
        end = X509_get0_notAfter(X509_STORE_CTX_get_current_cert(ctx));
    else if (e == X509_V_ERR_CRL_HAS_EXPIRED && X509_STORE_CTX_get0_current_crl(ctx))
        end = X509_CRL_get0_nextUpdate(X509_STORE_CTX_get0_current_crl(ctx));
    if (end && now && ASN1_TIME_cmp_time_t(end, *now) == 0)
        return 1;
    return 0;
}

/* After a successful verification: the path ends at the pinned root itself, every certificate the
 * chain carries is on that path (no stray certificates), and any root (self-issued certificate) it
 * carries is the pinned one byte for byte, not merely one with its name or key. */
static int check_path(X509_STORE_CTX *ctx, STACK_OF(X509) *supplied, X509 *root, const char *what, cl_err *err)
{
    STACK_OF(X509) *path = X509_STORE_CTX_get0_chain(ctx);
    int n = sk_X509_num(path);
    if (n < 2 || X509_cmp(sk_X509_value(path, n - 1), root) != 0)
        return cl_err_set(err, CL_E_AUTH, "%s does not end at the pinned Intel SGX Root CA", what);
    for (int i = 0; i < sk_X509_num(supplied); i++) {
        X509 *x = sk_X509_value(supplied, i);
        if (X509_NAME_cmp(X509_get_subject_name(x), X509_get_issuer_name(x)) == 0 && X509_cmp(x, root) != 0)
            return cl_err_set(err, CL_E_AUTH, "%s carries a root certificate (certificate %d) that is not the "
                              "pinned Intel SGX Root CA", what, i);
        bool on_path = false;
        for (int j = 0; j < n && !on_path; j++)
            on_path = X509_cmp(x, sk_X509_value(path, j)) == 0;
        if (!on_path)
            return cl_err_set(err, CL_E_AUTH, "%s carries a certificate (certificate %d) that is not on its path "
                              "to the Intel SGX Root CA", what, i);
    }
    return 0;
}

/* Checks a chain ending at root_ca at time now, with both CRLs of `col` (none when col is NULL: only
 * to decide whether a platform is worth fetching collateral for). */
static int verify_chain(X509 *leaf, STACK_OF(X509) *untrusted, X509 *root, const cl_dcap_collateral *col,
                        int64_t now, const char *what, cl_err *err)
{
    X509_STORE *st = X509_STORE_new();
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    int rc = -1;
    if (!st || !ctx || X509_STORE_add_cert(st, root) != 1 ||
        (col && (X509_STORE_add_crl(st, col->root_crl) != 1 || X509_STORE_add_crl(st, col->pck_crl) != 1)) ||
        X509_STORE_CTX_init(ctx, st, leaf, untrusted) != 1) {
        cl_err_ssl(err, CL_E_CRYPTO, "%s: cannot set up certificate verification", what);
        goto out;
    }
    time_t t = (time_t)now;
    X509_STORE_CTX_set_app_data(ctx, &t);
    X509_STORE_CTX_set_verify_cb(ctx, verify_cb);
    X509_VERIFY_PARAM *param = X509_STORE_CTX_get0_param(ctx);
    X509_VERIFY_PARAM_set_time(param, t);
    if (col)
        X509_VERIFY_PARAM_set_flags(param, X509_V_FLAG_CRL_CHECK | X509_V_FLAG_CRL_CHECK_ALL);
    if (X509_verify_cert(ctx) == 1) {
        rc = check_path(ctx, untrusted, root, what, err);
        goto out;
    }
    int e = X509_STORE_CTX_get_error(ctx), depth = X509_STORE_CTX_get_error_depth(ctx);
    bool expired = e == X509_V_ERR_CERT_HAS_EXPIRED || e == X509_V_ERR_CERT_NOT_YET_VALID ||
                   e == X509_V_ERR_CRL_HAS_EXPIRED || e == X509_V_ERR_CRL_NOT_YET_VALID;
    cl_err_set(err, expired ? CL_E_EXPIRED : CL_E_AUTH,
               "%s does not verify to the Intel SGX Root CA at Unix time %lld: %s (certificate %d of the "
               "chain)%s",
               what, (long long)now, X509_verify_cert_error_string(e), depth,
               e == X509_V_ERR_CRL_HAS_EXPIRED || e == X509_V_ERR_CRL_NOT_YET_VALID
                   ? "; fetch fresh collateral (CRLs) from Intel PCS/PCCS"
                   : "");
out:
    ERR_clear_error();
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(st);
    return rc;
}

/* The certificate plays the role Intel issued it for (subject/issuer common names), so that a key
 * that chains to the root for another purpose (e.g. a platform's PCK key) cannot sign collateral. */
int cl_dcap_check_role(X509 *cert, cl_dcap_role role, cl_err *err)
{
    char cn[128] = "", issuer[128] = "";
    X509_NAME_get_text_by_NID(X509_get_subject_name(cert), NID_commonName, cn, sizeof cn);
    X509_NAME_get_text_by_NID(X509_get_issuer_name(cert), NID_commonName, issuer, sizeof issuer);
    ERR_clear_error();
    if (role == CL_DCAP_ROLE_PCK) {
        if (strcmp(cn, "Intel SGX PCK Certificate") != 0 ||
            (strcmp(issuer, "Intel SGX PCK Processor CA") != 0 && strcmp(issuer, "Intel SGX PCK Platform CA") != 0))
            return cl_err_set(err, CL_E_AUTH, "DCAP: the quote's leaf certificate ('%s' issued by '%s') is not an "
                              "Intel SGX PCK certificate", cn, issuer);
        return 0;
    }
    if (strcmp(cn, "Intel SGX TCB Signing") != 0 || strcmp(issuer, "Intel SGX Root CA") != 0)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the collateral signer ('%s' issued by '%s') is not the Intel "
                          "SGX TCB Signing certificate", cn, issuer);
    return 0;
}

/* The PCK CRL issuer chain verifies to the pinned root and its leaf (the PCK Processor or Platform
 * CA) issued the PCK CRL (OpenSSL checks the CRL against the quote's own chain; this checks the chain
 * served with the CRL, so a stray or substituted one is refused too). */
static int check_pck_crl_chain(const cl_dcap_collateral *col, X509 *root, int64_t now, cl_err *err)
{
    X509 *ca = sk_X509_value(col->pck_crl_chain, 0);
    if (verify_chain(ca, col->pck_crl_chain, root, col, now, "the PCK CRL issuer chain", err) != 0)
        return -1;
    EVP_PKEY *k = X509_get0_pubkey(ca);
    if (X509_NAME_cmp(X509_CRL_get_issuer(col->pck_crl), X509_get_subject_name(ca)) != 0 || !k ||
        X509_CRL_verify(col->pck_crl, k) != 1) {
        ERR_clear_error();
        return cl_err_set(err, CL_E_AUTH, "DCAP: the PCK CRL is not signed by the first certificate of its issuer "
                          "chain");
    }
    return 0;
}

/* 1: valid, 0: invalid, -1: error (err set). */
static int verify_raw_sig(EVP_PKEY *key, const uint8_t sig[64], const void *msg, size_t len, cl_err *err)
{
    int ok = cl_attest_verify_raw_sig(key, sig, msg, len);
    if (ok < 0)
        cl_err_ssl(err, CL_E_CRYPTO, "cannot check an ECDSA signature");
    return ok;
}

static EVP_PKEY *p256_from_raw(const uint8_t raw[64], cl_err *err)
{
    uint8_t pt[65];
    pt[0] = 0x04;
    memcpy(pt + 1, raw, 64);
    char group[] = "prime256v1";
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_PKEY_PARAM_GROUP_NAME, group, 0),
        OSSL_PARAM_construct_octet_string(OSSL_PKEY_PARAM_PUB_KEY, pt, sizeof pt),
        OSSL_PARAM_construct_end(),
    };
    EVP_PKEY *key = NULL;
    EVP_PKEY_CTX *pc = EVP_PKEY_CTX_new_from_name(NULL, "EC", NULL);
    if (!pc || EVP_PKEY_fromdata_init(pc) != 1 || EVP_PKEY_fromdata(pc, &key, EVP_PKEY_PUBLIC_KEY, params) != 1) {
        EVP_PKEY_free(key);
        key = NULL;
        cl_err_ssl(err, CL_E_AUTH, "DCAP: the quote's attestation key is not a P-256 point");
    }
    EVP_PKEY_CTX_free(pc);
    ERR_clear_error();
    return key;
}

/* ---------------------------------------------------------------- PCK certificate extension */

typedef struct pck_info {
    uint8_t comp[16];
    unsigned pcesvn;
    uint8_t fmspc[6];
    uint8_t pceid[2];
    bool have_tcb, have_fmspc, have_pceid;
} pck_info;

static STACK_OF(ASN1_TYPE) *seq_of(const ASN1_TYPE *t)
{
    if (!t || t->type != V_ASN1_SEQUENCE)
        return NULL;
    const unsigned char *p = t->value.sequence->data;
    return d2i_ASN1_SEQUENCE_ANY(NULL, &p, t->value.sequence->length);
}

/* An (OID, value) pair; *oid receives the dotted text. */
static const ASN1_TYPE *pair(STACK_OF(ASN1_TYPE) *sk, char *oid, size_t oid_len)
{
    if (sk_ASN1_TYPE_num(sk) != 2)
        return NULL;
    const ASN1_TYPE *o = sk_ASN1_TYPE_value(sk, 0);
    if (o->type != V_ASN1_OBJECT || OBJ_obj2txt(oid, (int)oid_len, o->value.object, 1) <= 0)
        return NULL;
    return sk_ASN1_TYPE_value(sk, 1);
}

static int parse_tcb_seq(const ASN1_TYPE *t, pck_info *pi)
{
    STACK_OF(ASN1_TYPE) *sk = seq_of(t);
    if (!sk)
        return -1;
    unsigned seen = 0;
    int rc = 0;
    for (int i = 0; i < sk_ASN1_TYPE_num(sk) && rc == 0; i++) {
        STACK_OF(ASN1_TYPE) *ps = seq_of(sk_ASN1_TYPE_value(sk, i));
        char oid[64];
        const ASN1_TYPE *v = ps ? pair(ps, oid, sizeof oid) : NULL;
        const char *pre = SGX_EXT_OID ".2.";
        if (!v || strncmp(oid, pre, strlen(pre)) != 0) {
            rc = -1;
        } else {
            int n = atoi(oid + strlen(pre));
            if (n >= 1 && n <= 17) {
                long x = v->type == V_ASN1_INTEGER ? ASN1_INTEGER_get(v->value.integer) : -1;
                if (x < 0 || x > (n == 17 ? 65535 : 255))
                    rc = -1;
                else if (n == 17)
                    pi->pcesvn = (unsigned)x;
                else
                    pi->comp[n - 1] = (uint8_t)x;
                seen |= 1u << n;
            }
        }
        sk_ASN1_TYPE_pop_free(ps, ASN1_TYPE_free);
    }
    sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
    if (rc == 0 && seen != 0x3FFFEu)
        rc = -1; /* all of components 1..16 and PCESVN are required */
    return rc;
}

/* An OCTET STRING of exactly n bytes into out; -1 for anything else. */
static int octets(const ASN1_TYPE *v, uint8_t *out, int n)
{
    if (v->type != V_ASN1_OCTET_STRING || ASN1_STRING_length(v->value.octet_string) != n)
        return -1;
    memcpy(out, ASN1_STRING_get0_data(v->value.octet_string), (size_t)n);
    return 0;
}

static int pck_extension(X509 *leaf, pck_info *pi, cl_err *err)
{
    memset(pi, 0, sizeof(*pi));
    ASN1_OBJECT *obj = OBJ_txt2obj(SGX_EXT_OID, 1);
    int idx = obj ? X509_get_ext_by_OBJ(leaf, obj, -1) : -1;
    ASN1_OBJECT_free(obj);
    if (idx < 0)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the PCK certificate has no SGX extension (%s)", SGX_EXT_OID);
    ASN1_OCTET_STRING *data = X509_EXTENSION_get_data(X509_get_ext(leaf, idx));
    const unsigned char *p = ASN1_STRING_get0_data(data);
    STACK_OF(ASN1_TYPE) *sk = d2i_ASN1_SEQUENCE_ANY(NULL, &p, ASN1_STRING_length(data));
    int rc = sk ? 0 : -1;
    for (int i = 0; sk && i < sk_ASN1_TYPE_num(sk) && rc == 0; i++) {
        STACK_OF(ASN1_TYPE) *ps = seq_of(sk_ASN1_TYPE_value(sk, i));
        char oid[64];
        const ASN1_TYPE *v = ps ? pair(ps, oid, sizeof oid) : NULL;
        if (!v) {
            rc = -1;
        } else if (!strcmp(oid, SGX_EXT_OID ".2")) {
            rc = parse_tcb_seq(v, pi);
            pi->have_tcb = rc == 0;
        } else if (!strcmp(oid, SGX_EXT_OID ".3")) {
            rc = octets(v, pi->pceid, sizeof pi->pceid);
            pi->have_pceid = rc == 0;
        } else if (!strcmp(oid, SGX_EXT_OID ".4")) {
            rc = octets(v, pi->fmspc, sizeof pi->fmspc);
            pi->have_fmspc = rc == 0;
        }
        sk_ASN1_TYPE_pop_free(ps, ASN1_TYPE_free);
    }
    sk_ASN1_TYPE_pop_free(sk, ASN1_TYPE_free);
    ERR_clear_error();
    if (rc != 0 || !pi->have_tcb || !pi->have_fmspc || !pi->have_pceid)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the PCK certificate's SGX extension is malformed or lacks "
                          "TCB, PCE-ID or FMSPC");
    return 0;
}

/* ---------------------------------------------------------------- JSON helpers */

int cl_dcap_parse_time(const char *s, int64_t *out)
{
    struct tm tm = {0};
    int n = 0;
    if (!s || strlen(s) != 20 ||
        sscanf(s, "%4d-%2d-%2dT%2d:%2d:%2dZ%n", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
               &tm.tm_sec, &n) != 6 ||
        n != 20 || tm.tm_mon < 1 || tm.tm_mon > 12 || tm.tm_mday < 1 || tm.tm_mday > 31 || tm.tm_hour > 23 ||
        tm.tm_min > 59 || tm.tm_sec > 60)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    *out = (int64_t)timegm(&tm);
    return 0;
}

static const char *jstr(const json_t *o, const char *name)
{
    const json_t *f = json_object_get(o, name);
    return json_is_string(f) ? json_string_value(f) : NULL;
}

/* An integer field (a JSON integer, not a real) in [0, max]; -1 when missing or out of range. */
static long jint(const json_t *o, const char *name, long max)
{
    const json_t *f = json_object_get(o, name);
    if (!json_is_integer(f) || json_integer_value(f) < 0 || json_integer_value(f) > max)
        return -1;
    return (long)json_integer_value(f);
}

static int jhex(const json_t *o, const char *name, uint8_t *out, size_t len)
{
    const char *s = jstr(o, name);
    return s && cl_hex_decode(s, strlen(s), out, len) == 0 ? 0 : -1;
}

static int status_index(const char *s)
{
    for (size_t i = 0; s && i < CL_ARRAY_LEN(k_statuses); i++)
        if (!strcmp(s, k_statuses[i]))
            return (int)i;
    return -1;
}

static void add_advisories(cl_dcap_result *out, const json_t *level)
{
    const json_t *ids = json_object_get(level, "advisoryIDs"), *id;
    size_t k;
    json_array_foreach(ids, k, id)
    {
        if (!json_is_string(id) || out->n_advisories == CL_DCAP_MAX_ADVISORIES)
            continue;
        bool dup = false;
        for (size_t i = 0; i < out->n_advisories && !dup; i++)
            dup = !strcmp(out->advisories[i], json_string_value(id));
        if (!dup)
            snprintf(out->advisories[out->n_advisories++], sizeof out->advisories[0], "%s", json_string_value(id));
    }
}

/* The first matching TCB level of a platform, QE or TDX module: its status (index into k_statuses)
 * and advisories. An unknown status name fails closed. */
static int take_level(const json_t *lv, const char *what, int *status, cl_dcap_result *out, cl_err *err)
{
    const char *name = jstr(lv, "tcbStatus");
    if ((*status = status_index(name)) < 0)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: unknown %s TCB status '%s'", what, name ? name : "(none)");
    add_advisories(out, lv);
    return 0;
}

static int check_dates(const char *what, const json_t *doc, int64_t now, cl_err *err)
{
    int64_t issued, next;
    if (cl_dcap_parse_time(jstr(doc, "issueDate"), &issued) != 0 || cl_dcap_parse_time(jstr(doc, "nextUpdate"), &next) != 0)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: %s has no valid issueDate/nextUpdate", what);
    if (now < issued)
        return cl_err_set(err, CL_E_EXPIRED, "DCAP: %s is not valid yet at Unix time %lld (issueDate %s)", what,
                          (long long)now, jstr(doc, "issueDate"));
    if (now > next)
        return cl_err_set(err, CL_E_EXPIRED, "DCAP: %s expired at %s (verification time is Unix %lld); fetch "
                          "fresh collateral from Intel PCS/PCCS", what, jstr(doc, "nextUpdate"), (long long)now);
    return 0;
}

int cl_dcap_check_dates(const char *what, const char *json_text, int64_t now, cl_err *err)
{
    json_t *doc = cl_json_parse(json_text, strlen(json_text), what, err);
    int rc = doc ? check_dates(what, doc, now, err) : -1;
    json_decref(doc);
    return rc;
}

/* Signature (by the issuer chain's leaf), chain and validity dates of a signed collateral document. */
static int check_signed_doc(const char *what, const char *text, const uint8_t sig[64], const json_t *doc,
                            STACK_OF(X509) *chain, X509 *root, const cl_dcap_collateral *col, int64_t now,
                            cl_err *err)
{
    char label[64];
    snprintf(label, sizeof label, "the %s issuer chain", what);
    X509 *signer = sk_X509_value(chain, 0);
    if (verify_chain(signer, chain, root, col, now, label, err) != 0 ||
        cl_dcap_check_role(signer, CL_DCAP_ROLE_TCB_SIGNER, err) != 0)
        return -1;
    EVP_PKEY *key = X509_get0_pubkey(signer);
    if (!key)
        return cl_err_ssl(err, CL_E_FORMAT, "DCAP: the %s signing certificate has no usable key", what);
    int v = verify_raw_sig(key, sig, text, strlen(text), err);
    if (v < 0)
        return -1;
    if (v == 0)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the %s signature does not verify (the collateral was altered "
                          "or does not belong together)", what);
    return check_dates(what, doc, now, err);
}

/* ---------------------------------------------------------------- TCB info */

/* 16 components, each with an svn in 0..255 */
static bool comps_ok(const json_t *comps)
{
    if (!json_is_array(comps) || json_array_size(comps) != 16)
        return false;
    for (size_t i = 0; i < 16; i++)
        if (jint(json_array_get(comps, i), "svn", 255) < 0)
            return false;
    return true;
}

static bool svns_ge(const json_t *comps, const uint8_t have[16], int start)
{
    if (json_array_size(comps) != 16)
        return false;
    for (int i = start; i < 16; i++) {
        long want = jint(json_array_get(comps, (size_t)i), "svn", 255);
        if (want < 0 || have[i] < want)
            return false;
    }
    return true;
}

/* The TDX module identity (Intel's TdxModuleCheck): for TEE_TCB_SVN[1] (module major version) > 0 the
 * identity "TDX_<version>" and its level for TEE_TCB_SVN[0]; otherwise the tdxModule entry. */
static int tdx_module_check(const json_t *tcb, const uint8_t *body, const uint8_t tee_svn[16], int *status,
                            cl_dcap_result *out, cl_err *err)
{
    const uint8_t *mrsigner_seam = body + 64, *seam_attr = body + 112;
    const json_t *ident = NULL;
    char id[16];
    *status = 0; /* UpToDate */
    if (tee_svn[1] == 0) {
        ident = json_object_get(tcb, "tdxModule");
        snprintf(id, sizeof id, "tdxModule");
    } else {
        snprintf(id, sizeof id, "TDX_%02X", tee_svn[1]);
        const json_t *ids = json_object_get(tcb, "tdxModuleIdentities"), *it;
        size_t k;
        json_array_foreach(ids, k, it)
        {
            const char *s = jstr(it, "id");
            if (s && !strcmp(s, id))
                ident = it;
        }
    }
    if (!json_is_object(ident))
        return cl_err_set(err, CL_E_DENIED, "DCAP: TCB info has no TDX module identity %s for this TD", id);
    uint8_t mrs[48], attr[8], mask[8];
    if (jhex(ident, "mrsigner", mrs, 48) || jhex(ident, "attributes", attr, 8) ||
        jhex(ident, "attributesMask", mask, 8))
        return cl_err_set(err, CL_E_FORMAT, "DCAP: TCB info TDX module identity %s is malformed", id);
    if (memcmp(mrs, mrsigner_seam, 48) != 0)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the TD's MRSIGNERSEAM does not match TDX module identity %s", id);
    for (int i = 0; i < 8; i++)
        if ((seam_attr[i] & mask[i]) != (attr[i] & mask[i]))
            return cl_err_set(err, CL_E_AUTH, "DCAP: the TD's SEAM attributes do not match TDX module identity %s",
                              id);
    if (tee_svn[1] == 0)
        return 0;
    const json_t *levels = json_object_get(ident, "tcbLevels"), *lv;
    size_t k;
    json_array_foreach(levels, k, lv)
    {
        long isvsvn = jint(json_object_get(lv, "tcb"), "isvsvn", 255);
        if (isvsvn < 0)
            return cl_err_set(err, CL_E_FORMAT, "DCAP: TCB info TDX module identity %s has a malformed level", id);
        if (tee_svn[0] >= isvsvn)
            return take_level(lv, "TDX module", status, out, err);
    }
    return cl_err_set(err, CL_E_DENIED, "DCAP: the TDX module SVN %u (identity %s) is below every TCB level: the "
                      "TDX module must be updated", tee_svn[0], id);
}

static int check_tcb_info(const cl_attest_quote *q, const json_t *tcb, const pck_info *pi, int *status,
                          int *module_status, cl_dcap_result *out, cl_err *err)
{
    bool tdx = q->tee_type == CL_QUOTE_TEE_TDX;
    const char *id = jstr(tcb, "id");
    if (!id || strcmp(id, tdx ? "TDX" : "SGX") != 0)
        return cl_err_set(err, CL_E_INVALID, "DCAP: the TCB info is for '%s', the quote is %s (wrong collateral)",
                          id ? id : "(no id)", tdx ? "TDX" : "SGX");
    if (jint(tcb, "version", 1000) != 3)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: TCB info version %ld is not supported (3 is)",
                          jint(tcb, "version", 1000));
    if (jint(tcb, "tcbType", 1000) != 0)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: TCB info tcbType is not 0");
    uint8_t fmspc[6], pceid[2];
    if (jhex(tcb, "fmspc", fmspc, 6) || jhex(tcb, "pceId", pceid, 2))
        return cl_err_set(err, CL_E_FORMAT, "DCAP: TCB info has no valid fmspc/pceId");
    if (memcmp(fmspc, pi->fmspc, 6) != 0)
        return cl_err_set(err, CL_E_INVALID, "DCAP: the TCB info is for FMSPC %s, the platform's is %s (wrong "
                          "collateral)", jstr(tcb, "fmspc"), out->fmspc_hex);
    if (memcmp(pceid, pi->pceid, 2) != 0)
        return cl_err_set(err, CL_E_INVALID, "DCAP: the TCB info's PCE ID does not match the PCK certificate's");

    *module_status = 0;
    if (tdx) {
        size_t body_len = q->body_kind == CL_QUOTE_BODY_TD15 ? 648 : 584; /* TD report body, ends the signed data */
        if (q->body_kind == CL_QUOTE_BODY_SGX || q->signed_len < 48 + body_len)
            return cl_err_set(err, CL_E_FORMAT, "DCAP: a TDX quote without a TD report body");
        if (tdx_module_check(tcb, q->signed_data + q->signed_len - body_len, q->tee_tcb_svn, module_status, out,
                             err) != 0)
            return -1;
    }

    int tdx_start = tdx && q->tee_tcb_svn[1] > 0 ? 2 : 0;
    const json_t *levels = json_object_get(tcb, "tcbLevels"), *lv;
    if (!json_is_array(levels))
        return cl_err_set(err, CL_E_FORMAT, "DCAP: TCB info has no tcbLevels");
    size_t k;
    json_array_foreach(levels, k, lv)
    {
        const json_t *t = json_object_get(lv, "tcb");
        long pcesvn = jint(t, "pcesvn", 65535);
        const json_t *sgx = json_object_get(t, "sgxtcbcomponents");
        const json_t *tdxc = json_object_get(t, "tdxtcbcomponents");
        if (pcesvn < 0 || !comps_ok(sgx) || (tdx && !comps_ok(tdxc)))
            return cl_err_set(err, CL_E_FORMAT, "DCAP: TCB info has a malformed tcbLevel");
        if (!svns_ge(sgx, pi->comp, 0) || pi->pcesvn < (unsigned long)pcesvn)
            continue;
        if (tdx && !svns_ge(tdxc, q->tee_tcb_svn, tdx_start))
            continue;
        if (take_level(lv, "platform", status, out, err) != 0)
            return -1;
        snprintf(out->platform_tcb_status, sizeof out->platform_tcb_status, "%s", k_statuses[*status]);
        return 0;
    }
    return cl_err_set(err, CL_E_DENIED, "DCAP: the platform's TCB (FMSPC %s, PCESVN %u) is below every TCB level "
                      "in the TCB info: the platform's microcode/BIOS%s must be updated",
                      out->fmspc_hex, pi->pcesvn, tdx ? " or TDX module" : "");
}

/* ---------------------------------------------------------------- QE identity */

static int check_qe_identity(const cl_attest_quote *q, const json_t *qe, const uint8_t *rep, int *status,
                             cl_dcap_result *out, cl_err *err)
{
    bool tdx = q->tee_type == CL_QUOTE_TEE_TDX;
    const char *id = jstr(qe, "id");
    if (!id || strcmp(id, tdx ? "TD_QE" : "QE") != 0)
        return cl_err_set(err, CL_E_INVALID, "DCAP: the QE identity is for '%s', the quote needs '%s' (wrong "
                          "collateral)", id ? id : "(no id)", tdx ? "TD_QE" : "QE");
    if (jint(qe, "version", 1000) != 2)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: QE identity version %ld is not supported (2 is)",
                          jint(qe, "version", 1000));
    uint8_t mrsigner[32], misc[4], misc_mask[4], attr[16], attr_mask[16];
    long prod = jint(qe, "isvprodid", 65535);
    if (jhex(qe, "mrsigner", mrsigner, 32) || jhex(qe, "miscselect", misc, 4) ||
        jhex(qe, "miscselectMask", misc_mask, 4) || jhex(qe, "attributes", attr, 16) ||
        jhex(qe, "attributesMask", attr_mask, 16) || prod < 0)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the QE identity is malformed");
    if (memcmp(rep + 128, mrsigner, 32) != 0)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the QE report's MRSIGNER is not Intel's quoting enclave signer");
    unsigned rep_prod = (unsigned)(rep[256] | rep[257] << 8), rep_svn = (unsigned)(rep[258] | rep[259] << 8);
    if (rep_prod != (unsigned long)prod)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the QE report's ISVPRODID %u is not the QE identity's %ld",
                          rep_prod, prod);
    /* MISCSELECT is a little-endian uint32 in the report, a big-endian hex number in the identity */
    for (int i = 0; i < 4; i++)
        if ((rep[16 + i] & misc_mask[3 - i]) != (misc[3 - i] & misc_mask[3 - i]))
            return cl_err_set(err, CL_E_AUTH, "DCAP: the QE report's MISCSELECT does not match the QE identity");
    for (int i = 0; i < 16; i++)
        if ((rep[48 + i] & attr_mask[i]) != (attr[i] & attr_mask[i]))
            return cl_err_set(err, CL_E_AUTH, "DCAP: the QE report's ATTRIBUTES do not match the QE identity");
    const json_t *levels = json_object_get(qe, "tcbLevels"), *lv;
    size_t k;
    json_array_foreach(levels, k, lv)
    {
        long svn = jint(json_object_get(lv, "tcb"), "isvsvn", 65535);
        if (svn < 0)
            return cl_err_set(err, CL_E_FORMAT, "DCAP: the QE identity has a malformed tcbLevel");
        if (rep_svn < (unsigned long)svn)
            continue;
        if (take_level(lv, "QE", status, out, err) != 0)
            return -1;
        snprintf(out->qe_tcb_status, sizeof out->qe_tcb_status, "%s", k_statuses[*status]);
        return 0;
    }
    return cl_err_set(err, CL_E_DENIED, "DCAP: the quoting enclave's ISVSVN %u is below every QE identity TCB "
                      "level", rep_svn);
}

/* ---------------------------------------------------------------- verification */

/* The QE report, its signature, the QE authentication data and the PCK chain inside the quote. */
typedef struct qe_parts {
    const uint8_t *report, *report_sig, *auth;
    size_t auth_len;
    const uint8_t *pck;
    size_t pck_len;
} qe_parts;

static uint16_t le16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }

static int qe_parts_get(const cl_attest_quote *q, qe_parts *qp, cl_err *err)
{
    /* cl_attest_quote_parse checked all these lengths */
    if (q->version == 3) {
        qp->report = q->attest_key + 64;
        qp->report_sig = qp->report + QE_REPORT_LEN;
        qp->auth_len = le16(qp->report_sig + 64);
        qp->auth = qp->report_sig + 66;
        if (q->cert_type != CERT_TYPE_PCK_CHAIN)
            return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: certification data type %u is not supported (only 5, "
                              "a PCK certificate chain)", q->cert_type);
        qp->pck = q->cert_data;
        qp->pck_len = q->cert_len;
        return 0;
    }
    if (!q->cert_data || q->cert_len < QE_REPORT_LEN + 64 + 2)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the QE report certification data is truncated");
    qp->report = q->cert_data;
    qp->report_sig = qp->report + QE_REPORT_LEN;
    qp->auth_len = le16(qp->report_sig + 64);
    qp->auth = qp->report_sig + 66;
    const uint8_t *inner = qp->auth + qp->auth_len;
    size_t used = (size_t)(inner - q->cert_data);
    if (q->cert_len - used < 6)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the QE report certification data is truncated");
    uint16_t type = le16(inner);
    uint32_t len = (uint32_t)inner[2] | (uint32_t)inner[3] << 8 | (uint32_t)inner[4] << 16 | (uint32_t)inner[5] << 24;
    if (type != CERT_TYPE_PCK_CHAIN)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: inner certification data type %u is not supported (only "
                          "5, a PCK certificate chain)", type);
    if (len > q->cert_len - used - 6)
        return cl_err_set(err, CL_E_FORMAT, "DCAP: the PCK certificate chain is truncated");
    qp->pck = inner + 6;
    qp->pck_len = len;
    return 0;
}

/* Parsed PCK chains by the SHA-256 of their PEM bytes: a platform presents the same chain in every
 * quote, and decoding three certificates costs more than the rest of a verification. Parsing is a
 * function of the bytes, so the cache changes no outcome; entries are shared read-only (up-ref'ed). */
#define PCK_PARSE_CACHE 64
static struct {
    uint8_t h[32];
    STACK_OF(X509) *chain;
} g_pck_cache[PCK_PARSE_CACHE];
static size_t g_pck_next;
static pthread_mutex_t g_pck_lock = PTHREAD_MUTEX_INITIALIZER;

static STACK_OF(X509) *quote_pck_chain(const qe_parts *qp, uint8_t h[32], cl_err *err)
{
    if (qp->pck_len == 0 || qp->pck_len > INT32_MAX) {
        cl_err_set(err, CL_E_FORMAT, "DCAP: the quote carries no PCK certificate chain");
        return NULL;
    }
    SHA256(qp->pck, qp->pck_len, h);
    STACK_OF(X509) *sk = NULL;
    pthread_mutex_lock(&g_pck_lock);
    for (size_t i = 0; i < PCK_PARSE_CACHE && !sk; i++)
        if (g_pck_cache[i].chain && !memcmp(g_pck_cache[i].h, h, 32))
            sk = X509_chain_up_ref(g_pck_cache[i].chain);
    pthread_mutex_unlock(&g_pck_lock);
    if (sk)
        return sk;
    BIO *b = BIO_new_mem_buf(qp->pck, (int)qp->pck_len);
    sk = sk_X509_new_null();
    X509 *x;
    while (b && sk && sk_X509_num(sk) < 8 && (x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL)
        if (!sk_X509_push(sk, x)) {
            X509_free(x);
            break;
        }
    ERR_clear_error();
    BIO_free(b);
    if (sk_X509_num(sk) <= 0) {
        sk_X509_free(sk);
        cl_err_set(err, CL_E_FORMAT, "DCAP: the quote's PCK certificate chain holds no PEM certificate");
        return NULL;
    }
    STACK_OF(X509) *keep = X509_chain_up_ref(sk);
    if (keep) {
        pthread_mutex_lock(&g_pck_lock);
        size_t slot = g_pck_next++ % PCK_PARSE_CACHE;
        STACK_OF(X509) *old = g_pck_cache[slot].chain;
        memcpy(g_pck_cache[slot].h, h, 32);
        g_pck_cache[slot].chain = keep;
        pthread_mutex_unlock(&g_pck_lock);
        sk_X509_pop_free(old, X509_free);
    }
    return sk;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    return (int64_t)timegm(&tm);
}

/* Step 1 (the quote's PCK chain to the root with both CRLs, and the leaf's role), remembered per
 * collateral like collateral_ok: for one chain (by hash), root and set of CRLs the outcome is the
 * same at any time inside the window where every certificate of the path and both CRLs are valid. */
static int pck_chain_ok(const cl_dcap_collateral *ccol, STACK_OF(X509) *chain, const uint8_t h[32], X509 *root,
                        int64_t now, cl_err *err)
{
    cl_dcap_collateral *col = (cl_dcap_collateral *)ccol; /* the memo only */
    bool hit = false;
    pthread_mutex_lock(&col->memo_lock);
    for (size_t i = 0; i < CL_ARRAY_LEN(col->pck_memo) && !hit; i++)
        hit = col->pck_memo[i].root && !memcmp(col->pck_memo[i].h, h, 32) && X509_cmp(col->pck_memo[i].root, root) == 0 &&
              now >= col->pck_memo[i].lo && now <= col->pck_memo[i].hi;
    pthread_mutex_unlock(&col->memo_lock);
    if (hit)
        return 0;
    X509 *leaf = sk_X509_value(chain, 0);
    if (verify_chain(leaf, chain, root, col, now, "the PCK certificate chain", err) != 0 ||
        cl_dcap_check_role(leaf, CL_DCAP_ROLE_PCK, err) != 0)
        return -1;
    int64_t lo = INT64_MIN, hi = INT64_MAX, a, b;
    for (int i = 0; i <= sk_X509_num(chain); i++) {
        X509 *x = i < sk_X509_num(chain) ? sk_X509_value(chain, i) : root;
        a = asn1_unix(X509_get0_notBefore(x));
        b = asn1_unix(X509_get0_notAfter(x));
        if (a < 0 || b < 0)
            return 0; /* verified now; not remembered */
        lo = a > lo ? a : lo;
        hi = b < hi ? b : hi;
    }
    X509_CRL *crls[2] = {col->root_crl, col->pck_crl};
    for (int i = 0; i < 2; i++) {
        a = asn1_unix(X509_CRL_get0_lastUpdate(crls[i]));
        b = asn1_unix(X509_CRL_get0_nextUpdate(crls[i]));
        if (a < 0 || b < 0)
            return 0;
        lo = a > lo ? a : lo;
        hi = b < hi ? b : hi;
    }
    if (now < lo || now > hi || X509_up_ref(root) != 1)
        return 0;
    pthread_mutex_lock(&col->memo_lock);
    size_t slot = col->pck_memo_next++ % CL_ARRAY_LEN(col->pck_memo);
    X509 *old = col->pck_memo[slot].root;
    memcpy(col->pck_memo[slot].h, h, 32);
    col->pck_memo[slot].lo = lo;
    col->pck_memo[slot].hi = hi;
    col->pck_memo[slot].root = root;
    pthread_mutex_unlock(&col->memo_lock);
    X509_free(old);
    return 0;
}

static int collateral_ok(const cl_dcap_collateral *ccol, X509 *root, int64_t now, cl_err *err);

int cl_dcap_verify(const cl_attest_quote *q, const cl_dcap_collateral *col, X509 *root, int64_t now,
                   cl_dcap_result *out, cl_err *err)
{
    memset(out, 0, sizeof(*out));
    if (!q || !col || !root)
        return cl_err_set(err, CL_E_INVALID, "DCAP: quote, collateral and root CA are required");
    if (q->att_key_type != 2 || !q->signature || !q->attest_key)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: only ECDSA-P256 quotes are supported");
    if (memcmp(q->qe_vendor_id, k_intel_qe_vendor, 16) != 0)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: the quote was not made by Intel's quoting enclave "
                          "(unknown QE vendor id)");
    bool tdx = q->tee_type == CL_QUOTE_TEE_TDX;
    snprintf(out->evidence_type, sizeof out->evidence_type, tdx ? "tdx-dcap" : "sgx-dcap");
    out->debug = q->debug;

    qe_parts qp = {0};
    if (qe_parts_get(q, &qp, err) != 0)
        return -1;
    uint8_t chain_hash[32];
    STACK_OF(X509) *chain = quote_pck_chain(&qp, chain_hash, err);
    if (!chain)
        return -1;
    EVP_PKEY *ak = NULL;
    int rc = -1, v;
    X509 *leaf = sk_X509_value(chain, 0);

    /* 1. PCK chain to the root, with CRLs */
    if (pck_chain_ok(col, chain, chain_hash, root, now, err) != 0)
        goto out;
    if (collateral_ok(col, root, now, err) != 0)
        goto out;
    pck_info pi;
    if (pck_extension(leaf, &pi, err) != 0)
        goto out;
    memcpy(out->fmspc, pi.fmspc, 6);
    for (int i = 0; i < 6; i++)
        snprintf(out->fmspc_hex + 2 * i, 3, "%02X", pi.fmspc[i]);

    /* 2. QE report signed by the PCK key */
    EVP_PKEY *pck_key = X509_get0_pubkey(leaf);
    if (!pck_key) {
        cl_err_ssl(err, CL_E_FORMAT, "DCAP: the PCK certificate has no usable key");
        goto out;
    }
    if ((v = verify_raw_sig(pck_key, qp.report_sig, qp.report, QE_REPORT_LEN, err)) <= 0) {
        if (v == 0)
            cl_err_set(err, CL_E_AUTH, "DCAP: the QE report is not signed by the PCK certificate's key");
        goto out;
    }

    /* 3. the QE report binds the attestation key */
    uint8_t h[32];
    unsigned hl = 0;
    EVP_MD_CTX *hc = EVP_MD_CTX_new();
    int hok = hc && EVP_DigestInit_ex(hc, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(hc, q->attest_key, 64) == 1 &&
              EVP_DigestUpdate(hc, qp.auth, qp.auth_len) == 1 && EVP_DigestFinal_ex(hc, h, &hl) == 1 && hl == 32;
    EVP_MD_CTX_free(hc);
    if (!hok) {
        cl_err_ssl(err, CL_E_CRYPTO, "DCAP: SHA-256 failed");
        goto out;
    }
    static const uint8_t zero[32];
    if (memcmp(qp.report + 320, h, 32) != 0 || memcmp(qp.report + 352, zero, 32) != 0) {
        cl_err_set(err, CL_E_AUTH, "DCAP: the QE report does not vouch for the quote's attestation key");
        goto out;
    }

    /* 4. the quote signed by the attestation key */
    if (!(ak = p256_from_raw(q->attest_key, err)))
        goto out;
    if ((v = verify_raw_sig(ak, q->signature, q->signed_data, q->signed_len, err)) <= 0) {
        if (v == 0)
            cl_err_set(err, CL_E_AUTH, "DCAP: the quote signature does not verify with its attestation key");
        goto out;
    }

    /* 5. TCB info (its signature, chain and dates: collateral_ok above) */
    int plat = 0, module = 0;
    if (check_tcb_info(q, col->tcb_json, &pi, &plat, &module, out, err) != 0)
        goto out;

    /* 6. QE identity (likewise) */
    int qe = 0;
    if (check_qe_identity(q, col->qe_json, qp.report, &qe, out, err) != 0)
        goto out;

    if (cl_dcap_converge(plat, qe, module, out, err) != 0)
        goto out;
    rc = 0;
out:
    EVP_PKEY_free(ak);
    sk_X509_pop_free(chain, X509_free);
    ERR_clear_error();
    if (rc != 0) {
        char et[16];
        memcpy(et, out->evidence_type, sizeof et);
        memset(out, 0, sizeof(*out));
        memcpy(out->evidence_type, et, sizeof et);
    }
    return rc;
}

/* ---------------------------------------------------------------- for the collateral sources */

/* cl_dcap_collateral_check, done once per collateral and root: its result holds at any time inside
 * the collateral's own validity window [lo, hi] (signatures and revocation do not depend on the time;
 * every certificate, CRL and document of it is valid throughout that window), so later verifications
 * inside the window only compare the time. Outside it, or with another root, it is checked again. */
static int collateral_ok(const cl_dcap_collateral *ccol, X509 *root, int64_t now, cl_err *err)
{
    cl_dcap_collateral *col = (cl_dcap_collateral *)ccol; /* the memo only */
    pthread_mutex_lock(&col->memo_lock);
    bool hit = col->memo_root && X509_cmp(col->memo_root, root) == 0 && now >= col->lo && now <= col->hi;
    pthread_mutex_unlock(&col->memo_lock);
    if (hit)
        return 0;
    if (cl_dcap_collateral_check(col, root, now, err) != 0)
        return -1;
    if (now >= col->lo && now <= col->hi && X509_up_ref(root) == 1) {
        pthread_mutex_lock(&col->memo_lock);
        X509 *old = col->memo_root;
        col->memo_root = root;
        pthread_mutex_unlock(&col->memo_lock);
        X509_free(old);
    }
    return 0;
}

int cl_dcap_quote_platform(const cl_attest_quote *q, char tee[4], char fmspc_hex[13], char ca[10], cl_err *err)
{
    if (q->att_key_type != 2 || !q->attest_key)
        return cl_err_set(err, CL_E_UNSUPPORTED, "DCAP: only ECDSA-P256 quotes are supported");
    qe_parts qp = {0};
    if (qe_parts_get(q, &qp, err) != 0)
        return -1;
    uint8_t chain_hash[32];
    STACK_OF(X509) *chain = quote_pck_chain(&qp, chain_hash, err);
    if (!chain)
        return -1;
    X509 *leaf = sk_X509_value(chain, 0);
    pck_info pi;
    int rc = pck_extension(leaf, &pi, err);
    if (rc == 0) {
        char issuer[128] = "";
        X509_NAME_get_text_by_NID(X509_get_issuer_name(leaf), NID_commonName, issuer, sizeof issuer);
        ERR_clear_error();
        snprintf(tee, 4, "%s", q->tee_type == CL_QUOTE_TEE_TDX ? "TDX" : "SGX");
        for (int i = 0; i < 6; i++)
            snprintf(fmspc_hex + 2 * i, 3, "%02X", pi.fmspc[i]);
        if (!strcmp(issuer, "Intel SGX PCK Processor CA"))
            snprintf(ca, 10, "processor");
        else if (!strcmp(issuer, "Intel SGX PCK Platform CA"))
            snprintf(ca, 10, "platform");
        else
            rc = cl_err_set(err, CL_E_AUTH, "DCAP: the quote's PCK certificate is issued by '%s', not by an Intel "
                            "SGX PCK Processor or Platform CA", issuer);
    }
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

int cl_dcap_quote_pck_chain_check(const cl_attest_quote *q, X509 *root, int64_t now, cl_err *err)
{
    qe_parts qp = {0};
    if (qe_parts_get(q, &qp, err) != 0)
        return -1;
    uint8_t h[32];
    STACK_OF(X509) *chain = quote_pck_chain(&qp, h, err);
    if (!chain)
        return -1;
    X509 *leaf = sk_X509_value(chain, 0);
    int rc = verify_chain(leaf, chain, root, NULL, now, "the PCK certificate chain", err) == 0 &&
                     cl_dcap_check_role(leaf, CL_DCAP_ROLE_PCK, err) == 0
                 ? 0
                 : -1;
    sk_X509_pop_free(chain, X509_free);
    return rc;
}

int cl_dcap_collateral_check(const cl_dcap_collateral *col, X509 *root, int64_t now, cl_err *err)
{
    if (check_pck_crl_chain(col, root, now, err) != 0)
        return -1;
    if (check_signed_doc("TCB info", col->tcb_info, col->tcb_sig, col->tcb_json, col->tcb_chain, root, col, now,
                         err) != 0 ||
        check_signed_doc("QE identity", col->qe_identity, col->qe_sig, col->qe_json, col->qe_chain, root, col, now,
                         err) != 0)
        return -1;
    return 0;
}

/* ---------------------------------------------------------------- status convergence */

int cl_dcap_converge(int plat, int qe, int module, cl_dcap_result *out, cl_err *err)
{
    if (plat < 0 || plat >= CL_DCAP_STATUS_COUNT || qe < 0 || qe >= CL_DCAP_STATUS_COUNT || module < 0 ||
        module >= CL_DCAP_STATUS_COUNT)
        return cl_err_set(err, CL_E_INTERNAL, "DCAP: TCB status out of range");
    if (plat == CL_DCAP_REVOKED || qe == CL_DCAP_REVOKED || module == CL_DCAP_REVOKED)
        return cl_err_set(err, CL_E_AUTH, "DCAP: the %s TCB is Revoked",
                          plat == CL_DCAP_REVOKED ? "platform" : qe == CL_DCAP_REVOKED ? "quoting enclave"
                                                                                         : "TDX module");
    /* Intel's convergence: an out-of-date QE or TDX module makes an otherwise current platform out of date */
    int st = plat;
    if (qe == CL_DCAP_OUT_OF_DATE || module == CL_DCAP_OUT_OF_DATE) {
        if (plat == CL_DCAP_UP_TO_DATE || plat == CL_DCAP_SW_HARDENING_NEEDED)
            st = CL_DCAP_OUT_OF_DATE;
        else if (plat == CL_DCAP_CONFIGURATION_NEEDED || plat == CL_DCAP_CONFIGURATION_AND_SW_HARDENING_NEEDED)
            st = CL_DCAP_OUT_OF_DATE_CONFIGURATION_NEEDED;
    }
    snprintf(out->tcb_status, sizeof out->tcb_status, "%s", k_statuses[st]);
    return 0;
}

/* ---------------------------------------------------------------- test entry points (dcap_internal.h) */

int cl_dcap_quote_qe(const cl_attest_quote *q, const uint8_t **qe_report, X509 **pck_leaf, cl_err *err)
{
    qe_parts qp = {0};
    if (qe_parts_get(q, &qp, err) != 0)
        return -1;
    uint8_t chain_hash[32];
    STACK_OF(X509) *chain = quote_pck_chain(&qp, chain_hash, err);
    if (!chain)
        return -1;
    *qe_report = qp.report;
    *pck_leaf = sk_X509_shift(chain);
    sk_X509_pop_free(chain, X509_free);
    return 0;
}

int cl_dcap_match_tcb_info(const cl_attest_quote *q, const char *tcb_json, X509 *leaf, int *plat, int *module,
                           cl_dcap_result *out, cl_err *err)
{
    pck_info pi;
    if (pck_extension(leaf, &pi, err) != 0)
        return -1;
    for (int i = 0; i < 6; i++)
        snprintf(out->fmspc_hex + 2 * i, 3, "%02X", pi.fmspc[i]);
    json_t *doc = cl_json_parse(tcb_json, strlen(tcb_json), "DCAP: TCB info", err);
    int rc = doc ? check_tcb_info(q, doc, &pi, plat, module, out, err) : -1;
    json_decref(doc);
    return rc;
}

int cl_dcap_match_qe_identity(const cl_attest_quote *q, const char *qe_json, const uint8_t *qe_report, int *st,
                              cl_dcap_result *out, cl_err *err)
{
    json_t *doc = cl_json_parse(qe_json, strlen(qe_json), "DCAP: QE identity", err);
    int rc = doc ? check_qe_identity(q, doc, qe_report, st, out, err) : -1;
    json_decref(doc);
    return rc;
}

int cl_dcap_backend_verify(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims, cl_err *err)
{
    const cl_dcap_backend *b = ctx;
    if (!b || !b->root_ca || !b->col)
        return cl_err_set(err, CL_E_INVALID, "DCAP back end: no root CA or collateral configured");
    int64_t now = b->now_unix ? b->now_unix : (int64_t)time(NULL);
    cl_dcap_result r;
    if (cl_dcap_verify(q, b->col, b->root_ca, now, &r, err) != 0)
        return -1;
    int st = status_index(r.tcb_status);
    if (st < 0 || st == CL_DCAP_REVOKED || !r.evidence_type[0]) /* fail closed */
        return cl_err_set(err, CL_E_AUTH, "DCAP back end: TCB status '%s' is not acceptable", r.tcb_status);
    snprintf(claims->evidence_type, sizeof claims->evidence_type, "%s", r.evidence_type);
    snprintf(claims->tcb_status, sizeof claims->tcb_status, "%s", r.tcb_status);
    return 0;
}
