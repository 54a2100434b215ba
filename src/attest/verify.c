/* verify.c — the evidence verifier: parses a quote, routes it to the sim back end (trusted
 * simulated quoting keys; SGX and TDX sim quotes) or to registered back ends (DCAP, dcap.h), and fills
 * claims (the SGX identity, or the full TDX identity of a TD).
 * Also renders claims as policy-ready JSON. Configure from one thread, then verify from many. */
#include "attest_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>
#include <openssl/err.h>
#include <openssl/bn.h>
#include <openssl/ec.h>
#include <openssl/pem.h>
#include <openssl/sha.h>

#define MAX_SIM_KEYS 8
#define MAX_BACKENDS 4

typedef struct backend {
    char name[32];
    cl_attest_backend_fn fn;
    void *ctx;
} backend;

struct cl_attest_verifier {
    EVP_PKEY *sim_keys[MAX_SIM_KEYS];
    uint8_t sim_raw[MAX_SIM_KEYS][64];
    size_t sim_count;
    backend backends[MAX_BACKENDS];
    size_t backend_count;
};

cl_attest_verifier *cl_attest_verifier_new(cl_err *err)
{
    cl_attest_verifier *v = calloc(1, sizeof(*v));
    if (!v)
        cl_err_nomem(err);
    return v;
}

void cl_attest_verifier_free(cl_attest_verifier *v)
{
    if (!v)
        return;
    for (size_t i = 0; i < v->sim_count; i++)
        EVP_PKEY_free(v->sim_keys[i]);
    free(v);
}

int cl_attest_verifier_trust_sim(cl_attest_verifier *v, X509 *qe_cert, cl_err *err)
{
    if (v->sim_count == MAX_SIM_KEYS)
        return cl_err_set(err, CL_E_INVALID, "at most %d simulated quoting keys can be trusted", MAX_SIM_KEYS);
    EVP_PKEY *key = X509_get_pubkey(qe_cert);
    if (!key)
        return cl_err_ssl(err, CL_E_FORMAT, "the sim quoting certificate has no usable public key");
    if (cl_attest_p256_raw_pub(key, v->sim_raw[v->sim_count], err) != 0) {
        EVP_PKEY_free(key);
        return -1;
    }
    v->sim_keys[v->sim_count++] = key;
    CL_WARN("attest", "INSECURE: this verifier trusts simulated (software) evidence");
    return 0;
}

int cl_attest_verifier_trust_sim_file(cl_attest_verifier *v, const char *pem_path, cl_err *err)
{
    FILE *f = fopen(pem_path, "r");
    if (!f)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open sim quoting certificate '%s'", pem_path);
    X509 *cert = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    if (!cert)
        return cl_err_ssl(err, CL_E_FORMAT, "'%s' is not a PEM certificate", pem_path);
    int rc = cl_attest_verifier_trust_sim(v, cert, err);
    X509_free(cert);
    return rc;
}

int cl_attest_verifier_add_backend(cl_attest_verifier *v, const char *name, cl_attest_backend_fn fn, void *ctx,
                                   cl_err *err)
{
    if (v->backend_count == MAX_BACKENDS)
        return cl_err_set(err, CL_E_INVALID, "too many verifier back ends");
    backend *b = &v->backends[v->backend_count++];
    snprintf(b->name, sizeof b->name, "%s", name);
    b->fn = fn;
    b->ctx = ctx;
    return 0;
}

/* The inner certification data type of a v4 quote's type-6 (QE report) certification data, which
 * the parser checked adds up; -1 if absent. */
static int inner_cert_type(const cl_attest_quote *q)
{
    size_t off = 384 + 64;
    if (q->cert_type != 6 || q->cert_len < off + 2)
        return -1;
    size_t auth = (size_t)(q->cert_data[off] | q->cert_data[off + 1] << 8);
    off += 2 + auth;
    if (q->cert_len < off + 2)
        return -1;
    return q->cert_data[off] | q->cert_data[off + 1] << 8;
}

static int verify_sim(const cl_attest_verifier *v, const cl_attest_quote *q, cl_attest_claims *c, cl_err *err)
{
    bool sgx = q->version == 3 && q->body_kind == CL_QUOTE_BODY_SGX && q->cert_type == CL_ATTEST_SIM_CERT_TYPE;
    bool tdx = q->version == 4 && q->body_kind == CL_QUOTE_BODY_TD10 && inner_cert_type(q) == CL_ATTEST_SIM_CERT_TYPE;
    if (!sgx && !tdx)
        return cl_err_set(err, CL_E_FORMAT, "sim evidence: malformed sim quote");
    size_t k = 0;
    while (k < v->sim_count && memcmp(v->sim_raw[k], q->attest_key, 64) != 0)
        k++;
    if (k == v->sim_count)
        return cl_err_set(err, CL_E_AUTH, "sim evidence is signed by an untrusted simulated quoting key%s",
                          v->sim_count ? "" : " (this verifier trusts no sim key; see --trust-sim)");
    int ok = cl_attest_verify_raw_sig(v->sim_keys[k], q->signature, q->signed_data, q->signed_len);
    if (ok < 0)
        return cl_err_ssl(err, CL_E_CRYPTO, "sim evidence: cannot check the signature");
    if (!ok)
        return cl_err_set(err, CL_E_AUTH, "sim evidence: the quote signature does not verify");
    snprintf(c->evidence_type, sizeof c->evidence_type, "sim");
    snprintf(c->tcb_status, sizeof c->tcb_status, "UpToDate");
    c->insecure = true;
    return 0;
}

int cl_attest_verify_raw_sig(EVP_PKEY *key, const uint8_t sig[64], const void *msg, size_t len)
{
    ECDSA_SIG *s = ECDSA_SIG_new();
    BIGNUM *r = BN_bin2bn(sig, 32, NULL), *ss = BN_bin2bn(sig + 32, 32, NULL);
    uint8_t der[80], *dp = der; /* a P-256 signature is at most 72 bytes of DER */
    int der_len = -1;
    if (s && r && ss && ECDSA_SIG_set0(s, r, ss)) {
        r = ss = NULL;
        der_len = i2d_ECDSA_SIG(s, &dp);
    }
    BN_free(r);
    BN_free(ss);
    ECDSA_SIG_free(s);
    if (der_len <= 0)
        return -1;
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!md)
        return -1;
    int ok = EVP_DigestVerifyInit(md, NULL, EVP_sha256(), NULL, key) == 1 &&
             EVP_DigestVerify(md, der, (size_t)der_len, msg, len) == 1;
    EVP_MD_CTX_free(md);
    ERR_clear_error();
    return ok;
}

int cl_attest_verify(const cl_attest_verifier *v, const uint8_t *quote, size_t len, cl_attest_claims *c,
                     cl_err *err)
{
    memset(c, 0, sizeof(*c));
    cl_attest_quote q;
    if (cl_attest_quote_parse(quote, len, &q, err) != 0)
        return cl_err_prefix(err, "evidence rejected");
    int rc;
    if (memcmp(q.qe_vendor_id, cl_attest_sim_vendor_id, 16) == 0) {
        rc = verify_sim(v, &q, c, err);
    } else if (v->backend_count == 0) {
        rc = cl_err_set(err, CL_E_UNSUPPORTED, "no verifier for this %s quote (DCAP verification is not "
                        "configured; only sim evidence can be checked)",
                        q.tee_type == CL_QUOTE_TEE_TDX ? "TDX" : "SGX");
    } else {
        rc = -1;
        for (size_t i = 0; i < v->backend_count && rc != 0; i++) {
            rc = v->backends[i].fn(v->backends[i].ctx, &q, c, err);
            if (rc != 0)
                cl_err_prefix(err, "%s", v->backends[i].name);
        }
    }
    if (rc != 0) {
        memset(c, 0, sizeof(*c));
        return -1;
    }
    c->tee_type = q.tee_type;
    if (q.body_kind == CL_QUOTE_BODY_SGX) {
        memcpy(c->mr_enclave, q.mr_enclave, 32);
        memcpy(c->mr_signer, q.mr_signer, 32);
        c->isv_prod_id = q.isv_prod_id;
        c->isv_svn = q.isv_svn;
    } else {
        cl_attest_tdx_identity_from_quote(&q, &c->tdx);
    }
    c->debug = q.debug;
    memcpy(c->report_data, q.report_data, 64);
    SHA256(quote, len, c->evidence_sha256);
    return 0;
}

void cl_attest_tdx_identity_from_quote(const cl_attest_quote *q, cl_attest_tdx_identity *t)
{
    memset(t, 0, sizeof(*t));
    if (q->body_kind != CL_QUOTE_BODY_TD10 && q->body_kind != CL_QUOTE_BODY_TD15)
        return;
    memcpy(t->mr_td, q->mr_td, sizeof t->mr_td);
    memcpy(t->rtmr, q->rtmr, sizeof t->rtmr);
    memcpy(t->mr_config_id, q->mr_config_id, sizeof t->mr_config_id);
    memcpy(t->mr_owner, q->mr_owner, sizeof t->mr_owner);
    memcpy(t->mr_owner_config, q->mr_owner_config, sizeof t->mr_owner_config);
    memcpy(t->td_attributes, q->td_attributes, sizeof t->td_attributes);
    memcpy(t->xfam, q->xfam, sizeof t->xfam);
    memcpy(t->mr_seam, q->mr_seam, sizeof t->mr_seam);
    memcpy(t->mr_signer_seam, q->mr_signer_seam, sizeof t->mr_signer_seam);
    memcpy(t->seam_attributes, q->seam_attributes, sizeof t->seam_attributes);
    memcpy(t->tee_tcb_svn, q->tee_tcb_svn, sizeof t->tee_tcb_svn);
    t->td15 = q->body_kind == CL_QUOTE_BODY_TD15;
    memcpy(t->tee_tcb_svn2, q->tee_tcb_svn2, sizeof t->tee_tcb_svn2);
    memcpy(t->mr_servicetd, q->mr_servicetd, sizeof t->mr_servicetd);
}

/* Adds "key": "<hex of n bytes>"; false when out of memory. */
static bool add_hex(cJSON *o, const char *key, const uint8_t *b, size_t n)
{
    char hex[2 * CL_TDX_MEAS_LEN + 1];
    cl_hex_encode(b, n, hex);
    return cJSON_AddStringToObject(o, key, hex) != NULL;
}

char *cl_attest_claims_json(const cl_attest_claims *c, bool pretty)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    bool ok = true;
    if (c->tee_type == CL_QUOTE_TEE_TDX) {
        const cl_attest_tdx_identity *t = &c->tdx;
        ok = add_hex(o, "mrtd", t->mr_td, CL_TDX_MEAS_LEN);
        for (int i = 0; i < 4 && ok; i++) {
            char key[8];
            snprintf(key, sizeof key, "rtmr%d", i);
            ok = add_hex(o, key, t->rtmr[i], CL_TDX_MEAS_LEN);
        }
        ok = ok && add_hex(o, "mrconfigid", t->mr_config_id, CL_TDX_MEAS_LEN) &&
             add_hex(o, "mrowner", t->mr_owner, CL_TDX_MEAS_LEN) &&
             add_hex(o, "mrownerconfig", t->mr_owner_config, CL_TDX_MEAS_LEN) && add_hex(o, "xfam", t->xfam, 8) &&
             add_hex(o, "td_attributes", t->td_attributes, 8) && add_hex(o, "mrseam", t->mr_seam, CL_TDX_MEAS_LEN) &&
             add_hex(o, "mrsignerseam", t->mr_signer_seam, CL_TDX_MEAS_LEN) &&
             add_hex(o, "seam_attributes", t->seam_attributes, 8) && add_hex(o, "tee_tcb_svn", t->tee_tcb_svn, 16);
        if (ok && t->td15)
            ok = add_hex(o, "tee_tcb_svn2", t->tee_tcb_svn2, 16) &&
                 add_hex(o, "mrservicetd", t->mr_servicetd, CL_TDX_MEAS_LEN);
    } else {
        ok = add_hex(o, "mrenclave", c->mr_enclave, 32) && add_hex(o, "mrsigner", c->mr_signer, 32) &&
             cJSON_AddNumberToObject(o, "isv_prod_id", c->isv_prod_id) &&
             cJSON_AddNumberToObject(o, "min_isv_svn", c->isv_svn);
    }
    ok = ok && cJSON_AddBoolToObject(o, "allow_debug", c->debug);
    cJSON *types = ok ? cJSON_AddArrayToObject(o, "evidence_types") : NULL;
    cJSON *type = types ? cJSON_CreateString(c->evidence_type) : NULL;
    if (!type || !cJSON_AddItemToArray(types, type)) {
        cJSON_Delete(type);
        cJSON_Delete(o);
        return NULL;
    }
    char *text = pretty ? cJSON_Print(o) : cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return text;
}
