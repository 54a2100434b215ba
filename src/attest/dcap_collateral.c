/* dcap_collateral.c — the DCAP collateral formats (cloister/dcap.h): the collateral JSON file (also
 * what the on-disk cache holds), the answers of a PCCS / Intel PCS (bodies, percent-encoded issuer
 * chain headers, CRLs in DER, PEM or hex), and the unverified summary (TEE, FMSPC, PCK CA, dates)
 * used to choose and refresh collateral. Every JSON document is read with the strict reader
 * (cloister/json.h); the signed TCB info / QE identity text is kept byte for byte as served.
 * Nothing here trusts anything: cl_dcap_verify (dcap.c) checks it all. */
#include "dcap_internal.h"

#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "cloister/json.h"

#define COLLATERAL_MAX (1024 * 1024)
#define CHAIN_MAX_CERTS 8

static const char *const k_fields[] = {"pck_crl_issuer_chain", "tcb_info_issuer_chain", "qe_identity_issuer_chain",
                                       "root_ca_crl", "pck_crl", "tcb_info", "qe_identity", "tcb_info_signature",
                                       "qe_identity_signature", NULL};

void cl_dcap_collateral_free(cl_dcap_collateral *c)
{
    if (!c)
        return;
    sk_X509_pop_free(c->pck_crl_chain, X509_free);
    sk_X509_pop_free(c->tcb_chain, X509_free);
    sk_X509_pop_free(c->qe_chain, X509_free);
    X509_CRL_free(c->root_crl);
    X509_CRL_free(c->pck_crl);
    free(c->tcb_info);
    free(c->qe_identity);
    json_decref(c->tcb_json);
    json_decref(c->qe_json);
    X509_free(c->memo_root);
    for (size_t i = 0; i < CL_ARRAY_LEN(c->pck_memo); i++)
        X509_free(c->pck_memo[i].root);
    pthread_mutex_destroy(&c->memo_lock);
    free(c);
}

static cl_dcap_collateral *collateral_new(cl_err *err)
{
    cl_dcap_collateral *c = calloc(1, sizeof(*c));
    if (!c)
        cl_err_nomem(err);
    else
        pthread_mutex_init(&c->memo_lock, NULL);
    return c;
}

const cl_dcap_collateral_info *cl_dcap_collateral_info_get(const cl_dcap_collateral *c) { return &c->info; }

/* ---------------------------------------------------------------- parts */

/* A PEM chain of 1..CHAIN_MAX_CERTS certificates and nothing else but whitespace; the first is the leaf. */
static STACK_OF(X509) *pem_chain(const char *pem, size_t len, const char *what, cl_err *err)
{
    if (len == 0 || len > INT32_MAX) {
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' is empty", what);
        return NULL;
    }
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    STACK_OF(X509) *sk = sk_X509_new_null();
    if (!b || !sk) {
        BIO_free(b);
        sk_X509_free(sk);
        cl_err_nomem(err);
        return NULL;
    }
    X509 *x;
    bool too_many = false;
    while ((x = PEM_read_bio_X509(b, NULL, NULL, NULL)) != NULL) {
        if (sk_X509_num(sk) == CHAIN_MAX_CERTS || !sk_X509_push(sk, x)) {
            too_many = true;
            X509_free(x);
            break;
        }
    }
    ERR_clear_error();
    BIO_free(b);
    if (sk_X509_num(sk) == 0 || too_many) {
        sk_X509_pop_free(sk, X509_free);
        if (too_many)
            cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' holds more than %d certificates", what,
                       CHAIN_MAX_CERTS);
        else
            cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' holds no PEM certificate", what);
        return NULL;
    }
    return sk;
}

static bool all_hex(const uint8_t *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f') || (s[i] >= 'A' && s[i] <= 'F')))
            return false;
    return n > 0 && n % 2 == 0;
}

/* A CRL in DER, exactly n bytes. */
static X509_CRL *crl_der(const uint8_t *buf, size_t n, const char *what, cl_err *err)
{
    const unsigned char *p = buf;
    X509_CRL *crl = d2i_X509_CRL(NULL, &p, (long)n);
    ERR_clear_error();
    if (crl && p != buf + n) {
        X509_CRL_free(crl);
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' has bytes after the CRL", what);
        return NULL;
    }
    if (!crl)
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' is not a CRL (DER, PEM or hex)", what);
    return crl;
}

/* A CRL in DER, PEM, or hex of the DER (PCCS answers use all three); nothing may follow it. Only the
 * text forms may end with white space: the DER ends with its signature, whose last byte is any value. */
static X509_CRL *crl_any(const uint8_t *buf, size_t n, const char *what, cl_err *err)
{
    if (n == 0 || n > COLLATERAL_MAX) {
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' is empty or too large", what);
        return NULL;
    }
    if (buf[0] == 0x30) /* DER: a SEQUENCE */
        return crl_der(buf, n, what, err);
    while (n && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' '))
        n--;
    X509_CRL *crl = NULL;
    if (n > 10 && memcmp(buf, "-----BEGIN", 10) == 0) {
        BIO *b = BIO_new_mem_buf(buf, (int)n);
        crl = b ? PEM_read_bio_X509_CRL(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    } else if (all_hex(buf, n)) {
        uint8_t *der = malloc(n / 2);
        if (!der) {
            cl_err_nomem(err);
            return NULL;
        }
        if (cl_hex_decode((const char *)buf, n, der, n / 2) == 0 && der[0] == 0x30) {
            crl = crl_der(der, n / 2, what, err);
            free(der);
            return crl;
        }
        free(der);
    }
    ERR_clear_error();
    if (!crl)
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' is not a CRL (DER, PEM or hex)", what);
    return crl;
}

static int hex_sig(const char *hex, uint8_t out[64], const char *what, cl_err *err)
{
    if (strlen(hex) != 128 || cl_hex_decode(hex, 128, out, 64) != 0)
        return cl_err_set(err, CL_E_FORMAT, "DCAP collateral: '%s' is not 128 hex digits (raw r||s)", what);
    return 0;
}

/* The signed document: a strict JSON object, kept as text. */
static int signed_doc(const char *text, size_t len, const char *what, char **copy, json_t **parsed, cl_err *err)
{
    char label[64];
    snprintf(label, sizeof label, "DCAP collateral: '%s'", what);
    if (!(*parsed = cl_json_parse(text, len, label, err)))
        return -1;
    if (!(*copy = strndup(text, len)))
        return cl_err_nomem(err);
    return 0;
}

static int64_t asn1_unix(const ASN1_TIME *t)
{
    struct tm tm;
    if (!t || ASN1_TIME_to_tm(t, &tm) != 1)
        return -1;
    return (int64_t)timegm(&tm);
}

/* The unverified summary; a malformed date or name is left for cl_dcap_verify to refuse. */
static void fill_info(cl_dcap_collateral *c)
{
    cl_dcap_collateral_info *in = &c->info;
    const char *id = json_string_value(json_object_get(c->tcb_json, "id"));
    const char *fmspc = json_string_value(json_object_get(c->tcb_json, "fmspc"));
    snprintf(in->tee, sizeof in->tee, "%s", id && (!strcmp(id, "SGX") || !strcmp(id, "TDX")) ? id : "");
    in->fmspc_hex[0] = 0;
    if (fmspc && strlen(fmspc) == 12) {
        for (int i = 0; i < 12; i++)
            in->fmspc_hex[i] = (char)(fmspc[i] >= 'a' && fmspc[i] <= 'f' ? fmspc[i] - 32 : fmspc[i]);
        in->fmspc_hex[12] = 0;
    }
    char cn[128] = "";
    X509_NAME_get_text_by_NID(X509_CRL_get_issuer(c->pck_crl), NID_commonName, cn, sizeof cn);
    ERR_clear_error();
    snprintf(in->ca, sizeof in->ca, "%s", !strcmp(cn, "Intel SGX PCK Processor CA") ? "processor"
                                          : !strcmp(cn, "Intel SGX PCK Platform CA") ? "platform" : "");
    int64_t issued = INT64_MAX, next = INT64_MAX, t;
    const json_t *docs[2] = {c->tcb_json, c->qe_json};
    for (int i = 0; i < 2; i++) {
        if (cl_dcap_parse_time(json_string_value(json_object_get(docs[i], "issueDate")), &t) == 0 && t < issued)
            issued = t;
        if (cl_dcap_parse_time(json_string_value(json_object_get(docs[i], "nextUpdate")), &t) == 0 && t < next)
            next = t;
    }
    X509_CRL *crls[2] = {c->root_crl, c->pck_crl};
    for (int i = 0; i < 2; i++) {
        if ((t = asn1_unix(X509_CRL_get0_nextUpdate(crls[i]))) >= 0 && t < next)
            next = t;
    }
    in->issued = issued == INT64_MAX ? 0 : issued;
    in->next_update = next == INT64_MAX ? 0 : next;
    /* the validity window of every part the collateral check looks at (an unreadable date: empty) */
    int64_t lo = INT64_MIN, hi = INT64_MAX;
    for (int i = 0; i < 2; i++) {
        int64_t a = -1, b = -1;
        if (cl_dcap_parse_time(json_string_value(json_object_get(docs[i], "issueDate")), &a) != 0 ||
            cl_dcap_parse_time(json_string_value(json_object_get(docs[i], "nextUpdate")), &b) != 0)
            lo = INT64_MAX;
        lo = a > lo ? a : lo;
        hi = b < hi ? b : hi;
    }
    for (int i = 0; i < 2; i++) {
        int64_t a = asn1_unix(X509_CRL_get0_lastUpdate(crls[i])), b = asn1_unix(X509_CRL_get0_nextUpdate(crls[i]));
        if (a < 0 || b < 0)
            lo = INT64_MAX;
        lo = a > lo ? a : lo;
        hi = b < hi ? b : hi;
    }
    STACK_OF(X509) *chains[3] = {c->tcb_chain, c->qe_chain, c->pck_crl_chain};
    for (int k = 0; k < 3; k++)
        for (int i = 0; i < sk_X509_num(chains[k]); i++) {
            X509 *x = sk_X509_value(chains[k], i);
            int64_t a = asn1_unix(X509_get0_notBefore(x)), b = asn1_unix(X509_get0_notAfter(x));
            if (a < 0 || b < 0)
                lo = INT64_MAX;
            lo = a > lo ? a : lo;
            hi = b < hi ? b : hi;
        }
    c->lo = lo;
    c->hi = hi;
}

/* ---------------------------------------------------------------- the collateral JSON file */

static const char *field_str(const json_t *o, const char *name, cl_err *err)
{
    const char *s = NULL;
    char path[64];
    snprintf(path, sizeof path, "'%s'", name);
    if (cl_json_get_str(json_object_get(o, name), "DCAP collateral", path, COLLATERAL_MAX, &s, err) != 0)
        return NULL;
    return s;
}

cl_dcap_collateral *cl_dcap_collateral_load_buffer(const char *json, size_t len, cl_err *err)
{
    json_t *root = cl_json_parse(json, len, "DCAP collateral", err);
    if (!root)
        return NULL;
    cl_dcap_collateral *c = collateral_new(err);
    int rc = -1;
    const char *s;
    if (!c)
        goto out;
    if (cl_json_check_keys(root, "DCAP collateral", "", k_fields, err) != 0)
        goto out;
    if (!(s = field_str(root, "pck_crl_issuer_chain", err)) ||
        !(c->pck_crl_chain = pem_chain(s, strlen(s), "pck_crl_issuer_chain", err)))
        goto out;
    if (!(s = field_str(root, "tcb_info_issuer_chain", err)) ||
        !(c->tcb_chain = pem_chain(s, strlen(s), "tcb_info_issuer_chain", err)))
        goto out;
    if (!(s = field_str(root, "qe_identity_issuer_chain", err)) ||
        !(c->qe_chain = pem_chain(s, strlen(s), "qe_identity_issuer_chain", err)))
        goto out;
    if (!(s = field_str(root, "root_ca_crl", err)) ||
        !(c->root_crl = crl_any((const uint8_t *)s, strlen(s), "root_ca_crl", err)))
        goto out;
    if (!(s = field_str(root, "pck_crl", err)) || !(c->pck_crl = crl_any((const uint8_t *)s, strlen(s), "pck_crl", err)))
        goto out;
    if (!(s = field_str(root, "tcb_info_signature", err)) || hex_sig(s, c->tcb_sig, "tcb_info_signature", err))
        goto out;
    if (!(s = field_str(root, "qe_identity_signature", err)) ||
        hex_sig(s, c->qe_sig, "qe_identity_signature", err))
        goto out;
    if (!(s = field_str(root, "tcb_info", err)) ||
        signed_doc(s, strlen(s), "tcb_info", &c->tcb_info, &c->tcb_json, err))
        goto out;
    if (!(s = field_str(root, "qe_identity", err)) ||
        signed_doc(s, strlen(s), "qe_identity", &c->qe_identity, &c->qe_json, err))
        goto out;
    fill_info(c);
    rc = 0;
out:
    json_decref(root);
    if (rc != 0) {
        cl_dcap_collateral_free(c);
        return NULL;
    }
    return c;
}

cl_dcap_collateral *cl_dcap_collateral_load(const char *path, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, COLLATERAL_MAX, &buf, &len, err) != 0) {
        cl_err_prefix(err, "DCAP collateral");
        return NULL;
    }
    cl_dcap_collateral *c = cl_dcap_collateral_load_buffer((const char *)buf, len, err);
    free(buf);
    if (!c)
        cl_err_prefix(err, "'%s'", path);
    return c;
}

static char *chain_pem(STACK_OF(X509) *sk)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *out = NULL, *p;
    for (int i = 0; b && i < sk_X509_num(sk); i++)
        if (PEM_write_bio_X509(b, sk_X509_value(sk, i)) != 1)
            goto done;
    long n = b ? BIO_get_mem_data(b, &p) : 0;
    if (n > 0)
        out = strndup(p, (size_t)n);
done:
    BIO_free(b);
    return out;
}

static char *crl_hex(X509_CRL *crl)
{
    unsigned char *der = NULL;
    int n = i2d_X509_CRL(crl, &der);
    char *hex = n > 0 ? malloc((size_t)n * 2 + 1) : NULL;
    if (hex)
        cl_hex_encode(der, (size_t)n, hex);
    OPENSSL_free(der);
    return hex;
}

char *cl_dcap_collateral_to_json(const cl_dcap_collateral *c, size_t *len)
{
    char *pck_chain = chain_pem(c->pck_crl_chain), *tcb_chain = chain_pem(c->tcb_chain),
         *qe_chain = chain_pem(c->qe_chain), *root_crl = crl_hex(c->root_crl), *pck_crl = crl_hex(c->pck_crl);
    char tsig[129], qsig[129];
    cl_hex_encode(c->tcb_sig, 64, tsig);
    cl_hex_encode(c->qe_sig, 64, qsig);
    char *text = NULL;
    if (pck_chain && tcb_chain && qe_chain && root_crl && pck_crl) {
        json_t *o = json_pack("{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:s}", "pck_crl_issuer_chain", pck_chain,
                              "root_ca_crl", root_crl, "pck_crl", pck_crl, "tcb_info_issuer_chain", tcb_chain,
                              "tcb_info", c->tcb_info, "tcb_info_signature", tsig, "qe_identity_issuer_chain",
                              qe_chain, "qe_identity", c->qe_identity, "qe_identity_signature", qsig);
        text = o ? json_dumps(o, JSON_INDENT(1) | JSON_PRESERVE_ORDER) : NULL;
        json_decref(o);
    }
    free(pck_chain);
    free(tcb_chain);
    free(qe_chain);
    free(root_crl);
    free(pck_crl);
    if (text && len)
        *len = strlen(text);
    return text;
}

/* ---------------------------------------------------------------- PCCS / PCS answers */

static size_t skip_ws(const char *s, size_t i, size_t n)
{
    while (i < n && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r'))
        i++;
    return i;
}

/* The byte length of the JSON string or object starting at s[i] (the decoder stops right after its
 * closing quote or brace); *v receives the decoded value. */
static int value_at(const char *s, size_t i, size_t n, size_t *len, json_t **v)
{
    json_error_t je;
    *v = json_loadb(s + i, n - i, JSON_DECODE_ANY | JSON_DISABLE_EOF_CHECK | JSON_REJECT_DUPLICATES, &je);
    if (!*v || je.position <= 0 || (size_t)je.position > n - i) {
        json_decref(*v);
        *v = NULL;
        return -1;
    }
    *len = (size_t)je.position;
    return 0;
}

/* body = {"<key>": {...}, "signature": "<hex>"} (in either order, nothing else). *text receives the
 * exact bytes of the <key> value as served: the signature covers them, so they are never re-serialised. */
static int signed_answer(const char *body, size_t n, const char *key, const char *what, char **text, json_t **doc,
                         uint8_t sig[64], cl_err *err)
{
    json_t *root = cl_json_parse(body, n, what, err);
    if (!root)
        return -1;
    const char *known[] = {key, "signature", NULL};
    const char *hex = NULL;
    int rc = -1;
    if (cl_json_check_keys(root, what, "", known, err) != 0)
        goto out;
    if (!json_is_object(json_object_get(root, key))) {
        cl_err_set(err, CL_E_FORMAT, "%s: '%s' must be an object", what, key);
        goto out;
    }
    if (cl_json_get_str(json_object_get(root, "signature"), what, "signature", 128, &hex, err) != 0 ||
        hex_sig(hex, sig, "signature", err) != 0) {
        cl_err_prefix(err, "%s", what);
        goto out;
    }
    /* find the span: the strict parse above vouches for the syntax; walk the top-level members,
     * each a string key and a string or object value */
    size_t i = skip_ws(body, 0, n), start = 0, span = 0;
    i++; /* '{' */
    for (;;) {
        size_t kl, vl;
        json_t *k = NULL, *v = NULL;
        i = skip_ws(body, i, n);
        if (i >= n || body[i] != '"' || value_at(body, i, n, &kl, &k) != 0)
            break;
        bool want = json_is_string(k) && !strcmp(json_string_value(k), key);
        json_decref(k);
        i = skip_ws(body, i + kl, n);
        if (i >= n || body[i] != ':')
            break;
        i = skip_ws(body, i + 1, n);
        if (i >= n || value_at(body, i, n, &vl, &v) != 0)
            break;
        if (want && json_equal(v, json_object_get(root, key))) {
            start = i;
            span = vl;
        }
        json_decref(v);
        i = skip_ws(body, i + vl, n);
        if (i < n && body[i] == ',') {
            i++;
            continue;
        }
        break;
    }
    if (!span || body[start] != '{' || body[start + span - 1] != '}') {
        cl_err_set(err, CL_E_FORMAT, "%s: cannot find the signed '%s' text", what, key);
        goto out;
    }
    if (!(*text = strndup(body + start, span))) {
        cl_err_nomem(err);
        goto out;
    }
    if (strlen(*text) != span || !(*doc = json_incref(json_object_get(root, key)))) {
        cl_err_set(err, CL_E_FORMAT, "%s: '%s' holds a NUL byte", what, key);
        goto out;
    }
    rc = 0;
out:
    json_decref(root);
    return rc;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* A percent-encoded header value (Intel's issuer chain headers) decoded into a PEM chain. '+' stays
 * '+' (base64), as Intel encodes spaces as %20. */
static STACK_OF(X509) *header_chain(const char *v, size_t n, const char *what, cl_err *err)
{
    if (n == 0 || n > COLLATERAL_MAX) {
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: the %s header is missing or too long", what);
        return NULL;
    }
    char *pem = malloc(n + 1);
    if (!pem) {
        cl_err_nomem(err);
        return NULL;
    }
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        if (v[i] == '%') {
            int h = i + 2 < n ? hexval(v[i + 1]) : -1, l = i + 2 < n ? hexval(v[i + 2]) : -1;
            if (h < 0 || l < 0 || (h == 0 && l == 0)) {
                free(pem);
                cl_err_set(err, CL_E_FORMAT, "DCAP collateral: the %s header has a bad %%-escape at byte %zu", what, i);
                return NULL;
            }
            pem[o++] = (char)(h << 4 | l);
            i += 2;
        } else {
            pem[o++] = v[i];
        }
    }
    pem[o] = 0;
    STACK_OF(X509) *sk = pem_chain(pem, o, what, err);
    free(pem);
    return sk;
}

cl_dcap_collateral *cl_dcap_collateral_from_pccs(const cl_dcap_pccs_answers *a, cl_err *err)
{
    cl_dcap_collateral *c = collateral_new(err);
    if (!c)
        return NULL;
    int rc = -1;
    if (!a->tcb_info || !a->qe_identity || !a->pck_crl || !a->root_crl) {
        cl_err_set(err, CL_E_FORMAT, "DCAP collateral: a PCCS answer is missing");
        goto out;
    }
    if (signed_answer(a->tcb_info, a->tcb_info_len, "tcbInfo", "PCCS TCB info answer", &c->tcb_info, &c->tcb_json,
                      c->tcb_sig, err) != 0 ||
        signed_answer(a->qe_identity, a->qe_identity_len, "enclaveIdentity", "PCCS QE identity answer",
                      &c->qe_identity, &c->qe_json, c->qe_sig, err) != 0)
        goto out;
    if (!(c->tcb_chain = header_chain(a->tcb_info_chain, a->tcb_info_chain_len, "TCB info issuer chain", err)) ||
        !(c->qe_chain = header_chain(a->qe_identity_chain, a->qe_identity_chain_len, "QE identity issuer chain",
                                     err)) ||
        !(c->pck_crl_chain = header_chain(a->pck_crl_chain, a->pck_crl_chain_len, "PCK CRL issuer chain", err)))
        goto out;
    if (!(c->pck_crl = crl_any(a->pck_crl, a->pck_crl_len, "PCK CRL", err)) ||
        !(c->root_crl = crl_any(a->root_crl, a->root_crl_len, "root CA CRL", err)))
        goto out;
    fill_info(c);
    rc = 0;
out:
    if (rc != 0) {
        cl_dcap_collateral_free(c);
        return NULL;
    }
    return c;
}

/* ---------------------------------------------------------------- root CA */

X509 *cl_dcap_root_ca_load(const char *path, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 64 * 1024, &buf, &len, err) != 0)
        return NULL;
    const unsigned char *p = buf;
    X509 *x = d2i_X509(NULL, &p, (long)len);
    if (x && p != buf + len) {
        X509_free(x);
        x = NULL;
    }
    if (!x) {
        BIO *b = BIO_new_mem_buf(buf, (int)len);
        x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
        BIO_free(b);
    }
    free(buf);
    if (!x)
        cl_err_ssl(err, CL_E_FORMAT, "'%s' is not a DER or PEM certificate (the Intel SGX Root CA)", path);
    ERR_clear_error();
    return x;
}
