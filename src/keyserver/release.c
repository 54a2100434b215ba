/* release.c — the key server's release protocols on an attested connection: one request in
 * cloister's native protocol (named secrets) or Gramine's secret_prov v1 (one secret), each secret
 * decided by the connection's policy snapshot, and every decision audited, whole, before anything is
 * sent (a release that cannot be audited is not made). Secret values are decrypted only after the
 * audit, into one locked buffer per connection at a time (at most the per-connection limit), reserved
 * from the server-wide budget of locked memory (ks_budget). server.c owns the connection; this file
 * reads the request from it and writes the answer. */
#include "ks_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

typedef ks_conn conn;

#define BUDGET_WAIT_MS 2000
#define NATIVE_HDR 9                                 /* magic, status, count */
#define ENTRY_HDR(name_len) (1 + (name_len) + 1 + 4) /* name_len, name, result, value_len */
#define PROV_HDR (sizeof CL_SECRET_PROV_RESPONSE + 4)

/* ---------------------------------------------------------------- locked-memory budget */

struct ks_budget {
    pthread_mutex_t lock;
    pthread_cond_t freed;
    size_t per_conn, total, used, peak;
    int wait_ms;
};

/* what cl_secmem_alloc(n) locks: a header page and the data pages */
static size_t footprint(size_t n)
{
    long l = sysconf(_SC_PAGESIZE);
    size_t ps = l > 0 ? (size_t)l : 4096;
    return ps + (n ? (n + ps - 1) / ps * ps : ps);
}

ks_budget *ks_budget_new(size_t per_conn, size_t total, int wait_ms, cl_err *err)
{
    per_conn = per_conn ? per_conn : CL_KS_LOCKED_PER_CONNECTION;
    total = total ? total : CL_KS_LOCKED_TOTAL;
    if (per_conn < CL_KS_LOCKED_MIN) {
        cl_err_set(err, CL_E_INVALID, "the per-connection locked-memory limit (%zu bytes) is below the minimum of %zu",
                   per_conn, CL_KS_LOCKED_MIN);
        return NULL;
    }
    if (footprint(per_conn) > total) {
        cl_err_set(err, CL_E_INVALID, "the total locked-memory limit (%zu KiB) cannot hold one connection's buffer "
                   "(%zu KiB with its header page): raise it or lower the per-connection limit", total / 1024,
                   footprint(per_conn) / 1024);
        return NULL;
    }
    ks_budget *b = calloc(1, sizeof(*b));
    if (!b) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&b->lock, NULL);
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&b->freed, &ca);
    pthread_condattr_destroy(&ca);
    b->per_conn = per_conn;
    b->total = total;
    b->wait_ms = wait_ms >= 0 ? wait_ms : BUDGET_WAIT_MS;
    return b;
}

void ks_budget_free(ks_budget *b)
{
    if (!b)
        return;
    pthread_cond_destroy(&b->freed);
    pthread_mutex_destroy(&b->lock);
    free(b);
}

void ks_budget_stats(ks_budget *b, size_t *in_use, size_t *peak)
{
    pthread_mutex_lock(&b->lock);
    if (in_use)
        *in_use = b->used;
    if (peak)
        *peak = b->peak;
    pthread_mutex_unlock(&b->lock);
}

int ks_budget_reserve(ks_budget *b, size_t n, size_t *in_use)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += b->wait_ms / 1000;
    until.tv_nsec += (long)(b->wait_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->lock);
    int rc = 0;
    while (rc == 0 && b->used + n > b->total)
        rc = n > b->total ? ETIMEDOUT : pthread_cond_timedwait(&b->freed, &b->lock, &until);
    bool ok = b->used + n <= b->total;
    if (ok) {
        b->used += n;
        if (b->used > b->peak)
            b->peak = b->used;
    }
    if (in_use)
        *in_use = b->used;
    pthread_mutex_unlock(&b->lock);
    return ok ? 0 : -1;
}

void ks_budget_release(ks_budget *b, size_t n)
{
    if (!n)
        return;
    pthread_mutex_lock(&b->lock);
    b->used -= n <= b->used ? n : b->used;
    pthread_cond_broadcast(&b->freed);
    pthread_mutex_unlock(&b->lock);
}

/* a connection whose server set no budget still gets the default one, shared by the process */
static ks_budget *g_default_budget;
static pthread_once_t g_default_once = PTHREAD_ONCE_INIT;
static void default_budget_init(void) { g_default_budget = ks_budget_new(0, 0, -1, NULL); }

static ks_budget *budget_of(conn *c)
{
    if (c->budget)
        return c->budget;
    pthread_once(&g_default_once, default_budget_init);
    return g_default_budget; /* NULL only when out of memory at the first use */
}

/* ---------------------------------------------------------------- audit helpers */

/* The record of this connection: fixed fields copied (their sources have the same sizes), identities
 * and claims owned. -1 when out of memory (then nothing may be released: the record would be
 * incomplete). */
static int audit_fill(conn *c, cl_audit_record *r, const char *protocol, const char *decision)
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
        r->claims = cl_attest_claims_json(&c->claims, false);
    } else {
        r->claims = strdup("");
    }
    const char *ids = c->decision.identities;
    r->identities = strdup(ids ? ids : "");
    return r->claims && r->identities ? 0 : -1;
}

/* Appends the record (taking ownership of `secrets` and `reason`, which may be NULL after an
 * allocation failure: then the record is refused, since it would not be whole) and logs it whole. */
static int audit(conn *c, cl_audit_record *r, bool filled, char *secrets, char *reason)
{
    free(r->secrets);
    free(r->reason);
    r->secrets = secrets;
    r->reason = reason;
    cl_err err = {0};
    if (!filled || !secrets || !reason) {
        CL_ERROR("keyserver", "%s: out of memory writing the audit record, refusing to release", c->peer);
        return -1;
    }
    if (cl_audit_append(c->store, r, &err) != 0) {
        CL_ERROR("keyserver", "cannot write the audit log, refusing to release: %s", err.msg);
        return -1;
    }
    CL_INFO("keyserver", "%s %s %s%s%s%s", r->peer, r->decision, r->secrets[0] ? r->secrets : "-",
            r->reason[0] ? " (" : "", r->reason, r->reason[0] ? ")" : "");
    return 0;
}

/* one "a<sep>b" entry, "; "-separated */
static void add(cl_strbuf *b, const char *a, const char *sep, const char *v)
{
    if (b->len)
        cl_strbuf_str(b, "; ");
    cl_strbuf_str(b, a);
    cl_strbuf_str(b, sep);
    cl_strbuf_str(b, v);
}

static char *take(cl_strbuf *b)
{
    if (!b->p && !b->failed)
        return strdup("");
    return cl_strbuf_take(b, NULL);
}

/* ---------------------------------------------------------------- native protocol */

typedef struct item {
    char name[CL_POLICY_MAX_SECRET_NAME + 1];
    size_t len;   /* from the store, before the audit */
    bool granted; /* by the policy and present in the store, within the limits */
} item;

static void detail_fmt(char *detail, size_t size, const char *fmt, ...) CL_PRINTF(3, 4);
static void detail_fmt(char *detail, size_t size, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(detail, size, fmt, ap); /* the formats below are short: never cut */
    va_end(ap);
}

int ks_parse_native_request(ks_read_fn rd, void *ctx, char names[][CL_POLICY_MAX_SECRET_NAME + 1], size_t *count,
                            size_t *parsed, char detail[KS_DETAIL_MAX])
{
    uint8_t hdr[2];
    *count = *parsed = 0;
    if (rd(ctx, hdr, 2) != 0) {
        detail_fmt(detail, KS_DETAIL_MAX, "it ends before its name count");
        return -1;
    }
    size_t n_names = cl_ks_get16(hdr);
    if (n_names == 0 || n_names > CL_KS_MAX_NAMES) {
        detail_fmt(detail, KS_DETAIL_MAX, "%zu names (1 to %d may be asked for)", n_names, CL_KS_MAX_NAMES);
        return -1;
    }
    *count = n_names;
    for (size_t i = 0; i < n_names; i++) {
        uint8_t n = 0;
        bool got = rd(ctx, &n, 1) == 0;
        if (!got || n == 0 || n > CL_POLICY_MAX_SECRET_NAME) {
            detail_fmt(detail, KS_DETAIL_MAX, "name %zu of %zu is %s", i + 1, n_names,
                       !got ? "missing (the request ends early)" : n == 0 ? "empty" : "longer than 128 bytes");
            return -1;
        }
        char name[CL_POLICY_MAX_SECRET_NAME + 1];
        if (rd(ctx, name, n) != 0) {
            detail_fmt(detail, KS_DETAIL_MAX, "name %zu of %zu is cut short", i + 1, n_names);
            return -1;
        }
        name[n] = 0;
        if (memchr(name, 0, n) || !cl_policy_secret_name_valid(name)) {
            detail_fmt(detail, KS_DETAIL_MAX, "name %zu of %zu is not a valid secret name", i + 1, n_names);
            return -1;
        }
        memcpy(names[i], name, (size_t)n + 1);
        *parsed = i + 1;
    }
    return 0;
}

static int ssl_reader(void *ctx, void *buf, size_t n)
{
    int se;
    return cl_ks_ssl_read_full(ctx, buf, n, &se);
}

static void native_bad_request(conn *c, SSL *ssl, cl_audit_record *r, bool filled,
                               char names[][CL_POLICY_MAX_SECRET_NAME + 1], size_t n, const char *detail)
{
    cl_strbuf sec = {0}, why = {0};
    for (size_t i = 0; i < n; i++)
        add(&sec, names[i], "=", "denied");
    cl_strbuf_str(&why, "malformed native request: ");
    cl_strbuf_str(&why, detail);
    audit(c, r, filled, take(&sec), take(&why));
    uint8_t resp[NATIVE_HDR] = {'C', 'L', 'K', 'S', '1', 0, CL_KS_STATUS_MALFORMED, 0, 0};
    cl_ks_ssl_write_full(ssl, resp, sizeof resp);
}

static void serve_native(conn *c, SSL *ssl)
{
    cl_audit_record r;
    bool filled = audit_fill(c, &r, "native", "deny") == 0;
    ks_budget *b = budget_of(c);
    item *items = NULL;
    uint8_t *out = NULL;
    bool out_secure = false;
    size_t reserved = 0, count = 0, granted = 0, parsed;
    char (*names)[CL_POLICY_MAX_SECRET_NAME + 1] = calloc(CL_KS_MAX_NAMES, sizeof(*names));
    char detail[KS_DETAIL_MAX];
    if (!names) {
        audit(c, &r, false, NULL, NULL);
        goto done;
    }
    if (ks_parse_native_request(ssl_reader, ssl, names, &count, &parsed, detail) != 0) {
        native_bad_request(c, ssl, &r, filled, names, parsed, detail);
        goto done;
    }
    if (!(items = calloc(count, sizeof(*items)))) {
        audit(c, &r, false, NULL, NULL);
        goto done;
    }
    for (size_t i = 0; i < count; i++)
        memcpy(items[i].name, names[i], sizeof items[i].name);

    /* decide every name (policy, store, per-connection limit) without decrypting anything */
    cl_strbuf sec = {0}, why = {0};
    size_t total = NATIVE_HDR;
    for (size_t i = 0; i < count; i++) {
        item *it = &items[i];
        size_t nl = strlen(it->name);
        cl_err err = {0};
        char limit[160];
        const char *reason = NULL;
        if (!cl_policy_grants(c->policy, &c->claims, it->name)) {
            reason = "not granted by the policy";
        } else {
            int rc = cl_store_stat(c->store, it->name, &it->len, &err);
            if (rc == 1) {
                reason = "granted but not in the store";
            } else if (rc != 0) {
                reason = err.msg;
            } else if (NATIVE_HDR + ENTRY_HDR(nl) + it->len > b->per_conn) {
                snprintf(limit, sizeof limit, "granted, but its %zu bytes exceed the per-connection locked-memory "
                         "limit of %zu bytes", it->len, b->per_conn);
                reason = limit;
            }
        }
        it->granted = reason == NULL;
        if (reason) {
            add(&why, it->name, ": ", reason);
            it->len = 0;
        }
        granted += it->granted;
        total += ENTRY_HDR(nl) + it->len;
    }
    /* the answer goes out through one locked buffer: all of it when it fits, else one entry at a time */
    size_t cap = total <= b->per_conn ? total : b->per_conn;
    bool busy = false;
    if (granted) {
        size_t need = footprint(cap), in_use = 0;
        if (ks_budget_reserve(b, need, &in_use) == 0) {
            reserved = need;
        } else {
            busy = true;
            char msg[200];
            snprintf(msg, sizeof msg, "the key server's locked-memory budget is in use (this request needs %zu KiB, "
                     "%zu KiB of %zu KiB are held by releases in flight): asked to retry", need / 1024, in_use / 1024,
                     b->total / 1024);
            for (size_t i = 0; i < count; i++)
                if (items[i].granted) {
                    items[i].granted = false;
                    add(&why, items[i].name, ": ", msg);
                }
            granted = 0;
        }
    }
    for (size_t i = 0; i < count; i++)
        add(&sec, items[i].name, "=", items[i].granted ? "released" : "denied");
    snprintf(r.decision, sizeof r.decision, "%s", granted == count ? "release" : granted ? "partial" : "deny");
    bool audited = audit(c, &r, filled, take(&sec), take(&why)) == 0;
    if (busy) {
        uint8_t resp[NATIVE_HDR] = {'C', 'L', 'K', 'S', '1', 0, CL_KS_STATUS_BUSY, 0, 0};
        cl_ks_ssl_write_full(ssl, resp, sizeof resp);
        goto done;
    }

    /* the answer: decrypted after the audit, straight into the locked buffer, flushed when full */
    bool give_any = granted && audited;
    out_secure = give_any;
    out = give_any ? cl_secmem_alloc(cap, NULL) : malloc(cap);
    if (!out)
        goto done;
    memcpy(out, CL_KS_MAGIC, 6);
    out[6] = CL_KS_STATUS_OK;
    cl_ks_put16(out + 7, (uint16_t)count);
    size_t o = NATIVE_HDR, failed = 0;
    bool io_ok = true;
    cl_strbuf fsec = {0}, fwhy = {0};
    for (size_t i = 0; i < count && io_ok; i++) {
        item *it = &items[i];
        size_t nl = strlen(it->name), eh = ENTRY_HDR(nl), len = 0;
        bool give = it->granted && audited;
        if (o + eh + (give ? it->len : 0) > cap) {
            io_ok = cl_ks_ssl_write_full(ssl, out, o) == 0;
            cl_memzero(out, o);
            o = 0;
            if (!io_ok)
                break;
        }
        if (give) {
            cl_err err = {0};
            int rc = cl_store_get_into(c->store, it->name, out + o + eh, cap - o - eh, &len, &err);
            if (rc != 0) {
                /* changed or tampered with between the audit and now: withheld, and audited again */
                give = false;
                len = 0;
                failed++;
                add(&fsec, it->name, "=", "denied");
                add(&fwhy, it->name, ": withheld after the audit: ", rc == 1 ? "no longer in the store" : err.msg);
            }
        }
        out[o] = (uint8_t)nl;
        memcpy(out + o + 1, it->name, nl);
        out[o + 1 + nl] = give ? 0 : 1;
        cl_ks_put32(out + o + 2 + nl, (uint32_t)len);
        o += eh + len;
    }
    if (io_ok && o)
        cl_ks_ssl_write_full(ssl, out, o);
    if (failed) {
        cl_audit_record f;
        bool ok = audit_fill(c, &f, "native", granted - failed ? "partial" : "deny") == 0;
        audit(c, &f, ok, take(&fsec), take(&fwhy));
        cl_audit_record_clear(&f);
    } else {
        free(take(&fsec));
        free(take(&fwhy));
    }
done:
    if (out_secure)
        cl_secmem_free(out);
    else
        free(out);
    ks_budget_release(b, reserved);
    free(items);
    free(names);
    cl_audit_record_clear(&r);
}

/* ---------------------------------------------------------------- Gramine secret_prov v1 */

static void serve_secret_prov(conn *c, SSL *ssl)
{
    cl_audit_record r;
    bool filled = audit_fill(c, &r, "secret_prov", "deny") == 0;
    ks_budget *b = budget_of(c);
    const char *name = cl_policy_secret_prov(c->policy, &c->claims);
    uint8_t *out = NULL;
    size_t len = 0, reserved = 0;
    cl_err err = {0};
    cl_strbuf sec = {0}, why = {0};
    if (!name) {
        cl_strbuf_str(&why, "no secret_prov secret for this identity in the policy");
        audit(c, &r, filled, take(&sec), take(&why));
        goto done; /* Gramine's protocol has no denial message: close */
    }
    int rc = cl_store_stat(c->store, name, &len, &err);
    const char *reason = rc == 1 ? "granted but not in the store" : rc != 0 ? err.msg : NULL;
    char msg[200];
    if (!reason && PROV_HDR + len > b->per_conn) {
        snprintf(msg, sizeof msg, "granted, but its %zu bytes exceed the per-connection locked-memory limit of %zu "
                 "bytes", len, b->per_conn);
        reason = msg;
    }
    size_t cap = PROV_HDR + len, need = footprint(cap), in_use = 0;
    if (!reason) {
        if (ks_budget_reserve(b, need, &in_use) == 0) {
            reserved = need;
        } else {
            snprintf(msg, sizeof msg, "the key server's locked-memory budget is in use (this request needs %zu KiB, "
                     "%zu KiB of %zu KiB are held by releases in flight)", need / 1024, in_use / 1024, b->total / 1024);
            reason = msg;
        }
    }
    add(&sec, name, "=", reason ? "denied" : "released");
    if (reason) {
        add(&why, name, ": ", reason);
        audit(c, &r, filled, take(&sec), take(&why));
        goto done;
    }
    snprintf(r.decision, sizeof r.decision, "release");
    if (audit(c, &r, filled, take(&sec), take(&why)) != 0)
        goto done;
    if (!(out = cl_secmem_alloc(cap, NULL)))
        goto done;
    memcpy(out, CL_SECRET_PROV_RESPONSE, sizeof CL_SECRET_PROV_RESPONSE);
    rc = cl_store_get_into(c->store, name, out + PROV_HDR, cap - PROV_HDR, &len, &err);
    if (rc != 0) {
        cl_audit_record f;
        bool ok = audit_fill(c, &f, "secret_prov", "deny") == 0;
        cl_strbuf fsec = {0}, fwhy = {0};
        add(&fsec, name, "=", "denied");
        add(&fwhy, name, ": withheld after the audit: ", rc == 1 ? "no longer in the store" : err.msg);
        audit(c, &f, ok, take(&fsec), take(&fwhy));
        cl_audit_record_clear(&f);
        goto done;
    }
    cl_ks_put32(out + sizeof CL_SECRET_PROV_RESPONSE, (uint32_t)len);
    cl_ks_ssl_write_full(ssl, out, PROV_HDR + len);
done:
    cl_secmem_free(out);
    ks_budget_release(b, reserved);
    cl_audit_record_clear(&r);
}

/* ---------------------------------------------------------------- entry points */

void ks_audit_refusal(ks_conn *c, const char *protocol, const char *reason)
{
    cl_audit_record r;
    bool filled = audit_fill(c, &r, protocol, "deny") == 0;
    audit(c, &r, filled, strdup(""), strdup(reason ? reason : ""));
    cl_audit_record_clear(&r);
}

void ks_serve_request(ks_conn *c, SSL *ssl)
{
    uint8_t head[6];
    int se;
    if (cl_ks_ssl_read_full(ssl, head, sizeof head, &se) != 0) {
        ks_audit_refusal(c, "unknown", "no request: the connection closed or timed out after the attested handshake");
        return;
    }
    if (!budget_of(c)) {
        ks_audit_refusal(c, "unknown", "out of memory: no locked-memory budget");
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
