/* quote.c — parsing of Intel SGX/TDX quotes (v3, v4, v5): header, report body (SGX enclave report,
 * TDX 1.0/1.5 TD report), ECDSA-256 signature data and its certification data. A defensive parser:
 * every read goes through the bounded reader below; nothing is verified cryptographically here. */
#include "cloister/attest.h"

#include <string.h>

#define HEADER_LEN 48
#define SGX_BODY_LEN 384
#define TD10_BODY_LEN 584
#define TD15_BODY_LEN 648
#define ATT_KEY_ECDSA_P256 2
#define ATT_KEY_ECDSA_P384 3
#define CERT_TYPE_QE_REPORT 6

/* A bounded little-endian reader: any read past the end sets `bad` and yields zeros. */
typedef struct rd {
    const uint8_t *p;
    size_t len, off;
    bool bad;
} rd;

static const uint8_t *take(rd *r, size_t n)
{
    if (r->bad || n > r->len - r->off) {
        r->bad = true;
        return NULL;
    }
    const uint8_t *p = r->p + r->off;
    r->off += n;
    return p;
}

static void copy(rd *r, void *dst, size_t n)
{
    const uint8_t *p = take(r, n);
    if (p)
        memcpy(dst, p, n);
    else
        memset(dst, 0, n);
}

static uint16_t u16(rd *r)
{
    const uint8_t *p = take(r, 2);
    return p ? (uint16_t)(p[0] | p[1] << 8) : 0;
}

static uint32_t u32(rd *r)
{
    const uint8_t *p = take(r, 4);
    return p ? (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24 : 0;
}

static void parse_sgx_body(const uint8_t *b, cl_attest_quote *q)
{
    memcpy(q->cpu_svn, b, 16);
    q->misc_select = (uint32_t)b[16] | (uint32_t)b[17] << 8 | (uint32_t)b[18] << 16 | (uint32_t)b[19] << 24;
    memcpy(q->attributes, b + 48, 16);
    memcpy(q->mr_enclave, b + 64, 32);
    memcpy(q->mr_signer, b + 128, 32);
    q->isv_prod_id = (uint16_t)(b[256] | b[257] << 8);
    q->isv_svn = (uint16_t)(b[258] | b[259] << 8);
    memcpy(q->report_data, b + 320, 64);
    q->debug = (q->attributes[0] & CL_SGX_FLAG_DEBUG) != 0;
}

/* The TD report body: TD 1.0 is 584 bytes; TD 1.5 appends TEE_TCB_SVN2 and MRSERVICETD (648). */
static void parse_td_body(const uint8_t *b, bool td15, cl_attest_quote *q)
{
    memcpy(q->tee_tcb_svn, b, 16);
    memcpy(q->mr_seam, b + 16, 48);
    memcpy(q->mr_signer_seam, b + 64, 48);
    memcpy(q->seam_attributes, b + 112, 8);
    memcpy(q->td_attributes, b + 120, 8);
    memcpy(q->xfam, b + 128, 8);
    memcpy(q->mr_td, b + 136, 48);
    memcpy(q->mr_config_id, b + 184, 48);
    memcpy(q->mr_owner, b + 232, 48);
    memcpy(q->mr_owner_config, b + 280, 48);
    for (int i = 0; i < 4; i++)
        memcpy(q->rtmr[i], b + 328 + 48 * i, 48);
    memcpy(q->report_data, b + 520, 64);
    if (td15) {
        memcpy(q->tee_tcb_svn2, b + 584, 16);
        memcpy(q->mr_servicetd, b + 600, 48);
    }
    q->debug = (q->td_attributes[0] & CL_TDX_ATTR_DEBUG) != 0; /* TUD.DEBUG */
}

/* QE report certification data (type 6): QE report, its signature, QE auth data, inner cert data. */
static int check_qe_report_cert(const uint8_t *p, size_t len, cl_err *err)
{
    rd r = {p, len, 0, false};
    take(&r, SGX_BODY_LEN + 64);
    uint16_t auth_len = u16(&r);
    take(&r, auth_len);
    (void)u16(&r); /* inner certification data type (5 = PCK chain) */
    uint32_t inner = u32(&r);
    take(&r, inner);
    if (r.bad)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: QE report certification data is truncated");
    if (r.off != len)
        return cl_err_set(err, CL_E_FORMAT, "quote: QE report certification data has %zu unexpected bytes",
                          len - r.off);
    return 0;
}

int cl_attest_quote_parse(const uint8_t *buf, size_t len, cl_attest_quote *q, cl_err *err)
{
    memset(q, 0, sizeof(*q));
    if (!buf || len < HEADER_LEN)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: %zu bytes is too short for a quote header (48 bytes)",
                          buf ? len : 0);
    if (len > CL_ATTEST_QUOTE_MAX)
        return cl_err_set(err, CL_E_FORMAT, "quote: %zu bytes is larger than the %d-byte limit", len,
                          CL_ATTEST_QUOTE_MAX);
    rd r = {buf, len, 0, false};
    q->version = u16(&r);
    q->att_key_type = u16(&r);
    q->tee_type = u32(&r);
    q->qe_svn = u16(&r);
    q->pce_svn = u16(&r);
    copy(&r, q->qe_vendor_id, 16);
    copy(&r, q->user_data, 20);

    if (q->version < 3 || q->version > 5)
        return cl_err_set(err, CL_E_VERSION, "quote: version %u is not supported (3, 4 and 5 are)", q->version);
    if (q->tee_type != CL_QUOTE_TEE_SGX && q->tee_type != CL_QUOTE_TEE_TDX)
        return cl_err_set(err, CL_E_FORMAT, "quote: unknown TEE type 0x%x", q->tee_type);
    if (q->version == 3 && q->tee_type != CL_QUOTE_TEE_SGX)
        return cl_err_set(err, CL_E_FORMAT, "quote: a version 3 quote must be an SGX quote");
    if (q->att_key_type == ATT_KEY_ECDSA_P384)
        return cl_err_set(err, CL_E_UNSUPPORTED, "quote: ECDSA-P384 attestation keys are not supported");
    if (q->att_key_type != ATT_KEY_ECDSA_P256)
        return cl_err_set(err, CL_E_FORMAT, "quote: unknown attestation key type %u", q->att_key_type);

    size_t body_len;
    if (q->version == 5) {
        uint16_t type = u16(&r);
        uint32_t size = u32(&r);
        if (type == 1 && size == SGX_BODY_LEN)
            q->body_kind = CL_QUOTE_BODY_SGX;
        else if (type == 2 && size == TD10_BODY_LEN)
            q->body_kind = CL_QUOTE_BODY_TD10;
        else if (type == 3 && size == TD15_BODY_LEN)
            q->body_kind = CL_QUOTE_BODY_TD15;
        else
            return cl_err_set(err, CL_E_FORMAT, "quote: unknown v5 body type %u of %u bytes", type, size);
        if ((q->body_kind == CL_QUOTE_BODY_SGX) != (q->tee_type == CL_QUOTE_TEE_SGX))
            return cl_err_set(err, CL_E_FORMAT, "quote: body type %u does not match TEE type 0x%x", type,
                              q->tee_type);
        body_len = size;
    } else if (q->tee_type == CL_QUOTE_TEE_SGX) {
        q->body_kind = CL_QUOTE_BODY_SGX;
        body_len = SGX_BODY_LEN;
    } else {
        q->body_kind = CL_QUOTE_BODY_TD10;
        body_len = TD10_BODY_LEN;
    }
    const uint8_t *body = take(&r, body_len);
    if (!body)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: the %zu-byte report body is truncated", body_len);
    if (q->body_kind == CL_QUOTE_BODY_SGX)
        parse_sgx_body(body, q);
    else
        parse_td_body(body, q->body_kind == CL_QUOTE_BODY_TD15, q);
    q->signed_data = buf;
    q->signed_len = r.off;

    uint32_t sig_len = u32(&r);
    if (r.bad)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: the signature data length is missing");
    const uint8_t *sig = take(&r, sig_len);
    if (!sig)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: signature data of %u bytes runs past the end (%zu left)",
                          sig_len, len - r.off);
    q->quote_len = r.off;
    for (size_t i = r.off; i < len; i++)
        if (buf[i] != 0)
            return cl_err_set(err, CL_E_TRAILING, "quote: %zu unexpected bytes after the signature data",
                              len - r.off);
    q->padding = len - r.off;

    rd s = {sig, sig_len, 0, false};
    q->signature = take(&s, 64);
    q->attest_key = take(&s, 64);
    if (q->version == 3) {
        take(&s, SGX_BODY_LEN + 64); /* QE report and its signature */
        uint16_t auth_len = u16(&s);
        take(&s, auth_len);
    }
    q->cert_type = u16(&s);
    uint32_t cert_len = u32(&s);
    q->cert_data = take(&s, cert_len);
    q->cert_len = cert_len;
    if (s.bad)
        return cl_err_set(err, CL_E_TRUNCATED, "quote: the ECDSA signature data is truncated");
    if (s.off != sig_len)
        return cl_err_set(err, CL_E_FORMAT, "quote: %zu unexpected bytes at the end of the signature data",
                          sig_len - s.off);
    if (q->version >= 4) {
        if (q->cert_type != CERT_TYPE_QE_REPORT)
            return cl_err_set(err, CL_E_FORMAT, "quote: v%u certification data type is %u, expected 6",
                              q->version, q->cert_type);
        if (check_qe_report_cert(q->cert_data, q->cert_len, err) != 0)
            return -1;
    }
    return 0;
}
