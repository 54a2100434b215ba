/* release.c — the key server's release protocols on an attested connection: one request in
 * cloister's native protocol (named secrets) or Gramine's secret_prov v1 (one secret), each secret
 * decided by the connection's policy snapshot, and every decision audited before anything is sent
 * (a release that cannot be audited is not made). server.c owns the connection; this file reads
 * the request from it and writes the answer. */
#include "ks_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef ks_conn conn;

/* ---------------------------------------------------------------- audit helpers */

static void audit_fill(conn *c, cl_audit_record *r, const char *protocol, const char *decision)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->peer, sizeof r->peer, "%s", c->peer);
    snprintf(r->protocol, sizeof r->protocol, "%s", protocol);
    snprintf(r->decision, sizeof r->decision, "%s", decision);
    r->isv_prod_id = r->isv_svn = r->debug = -1;
    if (c->have_claims) {
        snprintf(r->evidence_type, sizeof r->evidence_type, "%s", c->claims.evidence_type);
        r->insecure = c->claims.insecure;
        cl_hex_encode(c->claims.evidence_sha256, 32, r->evidence_sha256);
        cl_hex_encode(c->claims.mr_enclave, 32, r->mrenclave);
        cl_hex_encode(c->claims.mr_signer, 32, r->mrsigner);
        r->isv_prod_id = c->claims.isv_prod_id;
        r->isv_svn = c->claims.isv_svn;
        r->debug = c->claims.debug;
    }
    snprintf(r->identities, sizeof r->identities, "%s", c->decision.identities ? c->decision.identities : "");
}

static int audit(conn *c, cl_audit_record *r)
{
    cl_err err = {0};
    if (cl_audit_append(c->store, r, &err) != 0) {
        CL_ERROR("keyserver", "cannot write the audit log, refusing to release: %s", err.msg);
        return -1;
    }
    CL_INFO("keyserver", "%s %s %s%s%s%s", r->peer, r->decision, r->secrets, r->reason[0] ? " (" : "", r->reason,
            r->reason[0] ? ")" : "");
    return 0;
}

/* appends "[,]a<sep>b" */
static void append(char *buf, size_t size, const char *sep, const char *a, const char *b)
{
    size_t used = strlen(buf);
    if (used < size)
        snprintf(buf + used, size - used, "%s%s%s%s", used ? "; " : "", a, sep, b);
}

/* ---------------------------------------------------------------- protocols */

typedef struct item {
    char name[CL_POLICY_MAX_SECRET_NAME + 1];
    uint8_t *value;
    size_t len;
    bool granted;
} item;

static void serve_native(conn *c, SSL *ssl)
{
    cl_audit_record *r = calloc(1, sizeof(*r));
    item *items = NULL;
    uint8_t *out = NULL;
    uint8_t hdr[2];
    int se;
    size_t count = 0, granted = 0;
    if (!r)
        return;
    audit_fill(c, r, "native", "deny");
    if (cl_ks_ssl_read_full(ssl, hdr, 2, &se) != 0)
        goto bad_request;
    count = cl_ks_get16(hdr);
    if (count == 0 || count > CL_KS_MAX_NAMES)
        goto bad_request;
    items = calloc(count, sizeof(*items));
    if (!items)
        goto done;
    for (size_t i = 0; i < count; i++) {
        uint8_t n;
        if (cl_ks_ssl_read_full(ssl, &n, 1, &se) != 0 || n == 0 || n > CL_POLICY_MAX_SECRET_NAME ||
            cl_ks_ssl_read_full(ssl, items[i].name, n, &se) != 0)
            goto bad_request;
        items[i].name[n] = 0;
        if (memchr(items[i].name, 0, n) || !cl_policy_secret_name_valid(items[i].name))
            goto bad_request;
    }
    size_t total = 6 + 1 + 2;
    for (size_t i = 0; i < count; i++) {
        item *it = &items[i];
        const char *why = NULL;
        cl_err err = {0};
        if (!cl_policy_grants(c->policy, &c->claims, it->name))
            why = "not granted by the policy";
        else {
            int rc = cl_store_get(c->store, it->name, &it->value, &it->len, &err);
            if (rc == 1)
                why = "granted but not in the store";
            else if (rc != 0)
                why = err.msg;
        }
        it->granted = why == NULL;
        granted += it->granted;
        append(r->secrets, sizeof r->secrets, "=", it->name, it->granted ? "released" : "denied");
        if (why)
            append(r->reason, sizeof r->reason, ": ", it->name, why);
        total += 1 + strlen(it->name) + 1 + 4 + it->len;
    }
    snprintf(r->decision, sizeof r->decision, "%s", granted == count ? "release" : granted ? "partial" : "deny");
    bool audited = audit(c, r) == 0;
    out = cl_secmem_alloc(total, NULL);
    if (!out)
        goto done;
    memcpy(out, CL_KS_MAGIC, 6);
    size_t o = 6;
    out[o++] = 0; /* status: request handled */
    cl_ks_put16(out + o, (uint16_t)count);
    o += 2;
    for (size_t i = 0; i < count; i++) {
        item *it = &items[i];
        bool give = it->granted && audited;
        size_t nl = strlen(it->name);
        out[o++] = (uint8_t)nl;
        memcpy(out + o, it->name, nl);
        o += nl;
        out[o++] = give ? 0 : 1;
        cl_ks_put32(out + o, give ? (uint32_t)it->len : 0);
        o += 4;
        if (give) {
            memcpy(out + o, it->value, it->len);
            o += it->len;
        }
    }
    cl_ks_ssl_write_full(ssl, out, o);
    goto done;
bad_request:
    snprintf(r->reason, sizeof r->reason, "malformed native request");
    audit(c, r);
    {
        uint8_t resp[9] = {'C', 'L', 'K', 'S', '1', 0, 2, 0, 0}; /* status 2: bad request */
        cl_ks_ssl_write_full(ssl, resp, sizeof resp);
    }
done:
    if (items)
        for (size_t i = 0; i < count; i++)
            cl_secmem_free(items[i].value);
    free(items);
    cl_secmem_free(out);
    free(r);
}

static void serve_secret_prov(conn *c, SSL *ssl)
{
    cl_audit_record *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    audit_fill(c, r, "secret_prov", "deny");
    const char *name = cl_policy_secret_prov(c->policy, &c->claims);
    uint8_t *value = NULL, *out = NULL;
    size_t len = 0;
    cl_err err = {0};
    if (!name) {
        snprintf(r->reason, sizeof r->reason, "no secret_prov secret for this identity in the policy");
        audit(c, r);
        goto done;
    }
    int rc = cl_store_get(c->store, name, &value, &len, &err);
    if (rc != 0) {
        snprintf(r->secrets, sizeof r->secrets, "%s=denied", name);
        snprintf(r->reason, sizeof r->reason, "%s: %s", name, rc == 1 ? "granted but not in the store" : err.msg);
        audit(c, r);
        goto done;
    }
    snprintf(r->decision, sizeof r->decision, "release");
    snprintf(r->secrets, sizeof r->secrets, "%s=released", name);
    if (audit(c, r) != 0)
        goto done; /* Gramine's protocol has no denial message: close */
    size_t hl = sizeof CL_SECRET_PROV_RESPONSE;
    out = cl_secmem_alloc(hl + 4 + len, NULL);
    if (!out)
        goto done;
    memcpy(out, CL_SECRET_PROV_RESPONSE, hl);
    cl_ks_put32(out + hl, (uint32_t)len);
    memcpy(out + hl + 4, value, len);
    cl_ks_ssl_write_full(ssl, out, hl + 4 + len);
done:
    cl_secmem_free(value);
    cl_secmem_free(out);
    free(r);
}

void ks_audit_refusal(ks_conn *c, const char *protocol, const char *reason)
{
    cl_audit_record *r = calloc(1, sizeof(*r));
    if (!r)
        return;
    audit_fill(c, r, protocol, "deny");
    snprintf(r->reason, sizeof r->reason, "%s", reason);
    audit(c, r);
    free(r);
}

void ks_serve_request(ks_conn *c, SSL *ssl)
{
    uint8_t head[6];
    int se;
    if (cl_ks_ssl_read_full(ssl, head, sizeof head, &se) != 0) {
        CL_DEBUG("keyserver", "%s: closed before sending a request", c->peer);
        return;
    }
    if (memcmp(head, CL_KS_MAGIC, 6) == 0) {
        serve_native(c, ssl);
        return;
    }
    char rest[sizeof CL_SECRET_PROV_REQUEST];
    memcpy(rest, head, 6);
    if (cl_ks_ssl_read_full(ssl, rest + 6, sizeof rest - 6, &se) == 0 &&
        memcmp(rest, CL_SECRET_PROV_REQUEST, sizeof rest) == 0)
        serve_secret_prov(c, ssl);
    else
        ks_audit_refusal(c, "unknown", "unknown request (neither native nor secret_prov v1)");
}
