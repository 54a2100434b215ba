/* dcap_source.c — where the DCAP verifier's collateral comes from (cl_dcap_source, cloister/dcap.h):
 * collateral files (any number, chosen by TEE, FMSPC and PCK CA; reloaded all or none), and a PCCS
 * or Intel PCS fetched on demand per platform, kept in memory and in an on-disk cache (one JSON file
 * per platform, written atomically), fetched anew before nextUpdate and kept when a fetch fails.
 * The cache and every answer are untrusted: fetched or cached collateral is checked on its own
 * (chains, signatures, dates, platform) before it is used or written, and cl_dcap_verify checks it
 * all again for every quote.
 *
 * Locking: `lock` guards the file set pointer and the platform slots; collateral is reference
 * counted, so a verification keeps what it started with across a reload or a refresh. At most one
 * fetch per platform runs at a time: other verifications use the collateral in hand meanwhile, or
 * wait for the fetch when they have none (each fetch is bounded by pccs_timeout_ms). */
#include "dcap_internal.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define DEFAULT_REFRESH_S 86400
#define MAX_PLATFORMS 4096 /* platforms (TEE, FMSPC, PCK CA) collateral is fetched and kept for */

typedef struct ref {
    atomic_int refs;
    cl_dcap_collateral *col;
} ref;

typedef struct fileset {
    atomic_int refs;
    size_t n;
    cl_dcap_collateral **col;
} fileset;

typedef struct slot {
    char key[32]; /* "SGX-00A067110000-processor" */
    ref *r;       /* NULL until loaded or fetched */
    bool disk_tried;
    bool fetching;
    int64_t last_failure; /* test-clock time of the last failed fetch, 0 = none */
} slot;

struct cl_dcap_source {
    cl_dcap_config cfg;
    char **files;
    char *pccs_url, *pccs_ca, *cache_dir;
    X509 *root;
    pthread_mutex_t lock;
    pthread_cond_t fetched;
    fileset *fs;
    slot *slots;
    size_t n_slots, cap_slots;
    atomic_llong now;
    atomic_ullong fetches, fetch_failures, cache_reads, cache_writes;
};

static void ref_release(ref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        cl_dcap_collateral_free(r->col);
        free(r);
    }
}

static ref *ref_new(cl_dcap_collateral *col)
{
    ref *r = calloc(1, sizeof *r);
    if (!r) {
        cl_dcap_collateral_free(col);
        return NULL;
    }
    atomic_init(&r->refs, 1);
    r->col = col;
    return r;
}

static void fileset_release(fileset *f)
{
    if (f && atomic_fetch_sub(&f->refs, 1) == 1) {
        for (size_t i = 0; i < f->n; i++)
            cl_dcap_collateral_free(f->col[i]);
        free(f->col);
        free(f);
    }
}

static fileset *fileset_load(char *const *files, size_t n, cl_err *err)
{
    fileset *f = calloc(1, sizeof *f);
    if (!f || (n && !(f->col = calloc(n, sizeof *f->col)))) {
        free(f);
        cl_err_nomem(err);
        return NULL;
    }
    atomic_init(&f->refs, 1);
    for (; f->n < n; f->n++)
        if (!(f->col[f->n] = cl_dcap_collateral_load(files[f->n], err))) {
            fileset_release(f);
            return NULL;
        }
    return f;
}

static int64_t src_now(cl_dcap_source *s)
{
    int64_t t = atomic_load(&s->now);
    return t ? t : (int64_t)time(NULL);
}

void cl_dcap_source_set_time(cl_dcap_source *s, int64_t now_unix) { atomic_store(&s->now, now_unix); }

void cl_dcap_source_stats_get(cl_dcap_source *s, cl_dcap_source_stats *o)
{
    o->fetches = atomic_load(&s->fetches);
    o->fetch_failures = atomic_load(&s->fetch_failures);
    o->cache_reads = atomic_load(&s->cache_reads);
    o->cache_writes = atomic_load(&s->cache_writes);
}

void cl_dcap_source_free(cl_dcap_source *s)
{
    if (!s)
        return;
    fileset_release(s->fs);
    for (size_t i = 0; i < s->n_slots; i++)
        ref_release(s->slots[i].r);
    free(s->slots);
    for (size_t i = 0; i < s->cfg.collateral_count; i++)
        free(s->files[i]);
    free(s->files);
    free(s->pccs_url);
    free(s->pccs_ca);
    free(s->cache_dir);
    X509_free(s->root);
    pthread_cond_destroy(&s->fetched);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

cl_dcap_source *cl_dcap_source_new(const cl_dcap_config *cfg, cl_err *err)
{
    if (!cfg->root_ca_file) {
        cl_err_set(err, CL_E_INVALID, "DCAP verification needs the Intel SGX Root CA (--dcap-root-ca FILE)");
        return NULL;
    }
    if (!cfg->collateral_count && !cfg->pccs_url) {
        cl_err_set(err, CL_E_INVALID, "DCAP verification needs collateral: --dcap-collateral FILE or --pccs-url URL");
        return NULL;
    }
    if (cfg->pccs_api_version && cfg->pccs_api_version != 3 && cfg->pccs_api_version != 4) {
        cl_err_set(err, CL_E_INVALID, "--pccs-api-version must be 3 or 4");
        return NULL;
    }
    if (cfg->pccs_url && strncmp(cfg->pccs_url, "https://", 8) != 0) {
        cl_err_set(err, CL_E_INVALID, "--pccs-url must be an https:// URL, not '%s'", cfg->pccs_url);
        return NULL;
    }
    if (!cfg->pccs_url && (cfg->pccs_ca_file || cfg->cache_dir)) {
        cl_err_set(err, CL_E_INVALID, "%s is only used with --pccs-url", cfg->pccs_ca_file ? "--pccs-ca" : "--collateral-cache");
        return NULL;
    }
    if (cfg->max_age_s < 0 || cfg->refresh_s < 0) {
        cl_err_set(err, CL_E_INVALID, "--collateral-max-age and --collateral-refresh must not be negative");
        return NULL;
    }
    cl_dcap_source *s = calloc(1, sizeof *s);
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    pthread_cond_init(&s->fetched, NULL);
    s->cfg = *cfg;
    s->cfg.collateral_count = 0;
    atomic_init(&s->now, cfg->now_unix);
    size_t n = cfg->collateral_count;
    if ((n && !(s->files = calloc(n, sizeof *s->files))) || (cfg->pccs_url && !(s->pccs_url = strdup(cfg->pccs_url))) ||
        (cfg->pccs_ca_file && !(s->pccs_ca = strdup(cfg->pccs_ca_file))) ||
        (cfg->cache_dir && !(s->cache_dir = strdup(cfg->cache_dir)))) {
        cl_err_nomem(err);
        goto fail;
    }
    for (; s->cfg.collateral_count < n; s->cfg.collateral_count++)
        if (!(s->files[s->cfg.collateral_count] = strdup(cfg->collateral_files[s->cfg.collateral_count]))) {
            cl_err_nomem(err);
            goto fail;
        }
    s->cfg.collateral_files = (const char *const *)s->files;
    s->cfg.pccs_url = s->pccs_url;
    s->cfg.pccs_ca_file = s->pccs_ca;
    s->cfg.cache_dir = s->cache_dir;
    if (!s->cfg.refresh_s)
        s->cfg.refresh_s = DEFAULT_REFRESH_S;
    if (!(s->root = cl_dcap_root_ca_load(cfg->root_ca_file, err)))
        goto fail;
    if (!(s->fs = fileset_load(s->files, n, err)))
        goto fail;
    if (s->cache_dir && mkdir(s->cache_dir, 0700) != 0 && errno != EEXIST) {
        cl_err_errno(err, CL_E_IO, errno, "--collateral-cache: cannot create '%s'", s->cache_dir);
        goto fail;
    }
    return s;
fail:
    cl_dcap_source_free(s);
    return NULL;
}

int cl_dcap_source_reload(cl_dcap_source *s, cl_err *err)
{
    fileset *f = fileset_load(s->files, s->cfg.collateral_count, err);
    if (!f)
        return -1;
    pthread_mutex_lock(&s->lock);
    fileset *old = s->fs;
    s->fs = f;
    for (size_t i = 0; i < s->n_slots; i++) {
        if (s->slots[i].fetching)
            continue; /* that fetch installs its own result */
        ref_release(s->slots[i].r);
        s->slots[i].r = NULL;
        s->slots[i].disk_tried = false;
        s->slots[i].last_failure = 0;
    }
    pthread_mutex_unlock(&s->lock);
    fileset_release(old);
    return 0;
}

/* ---------------------------------------------------------------- PCCS collateral */

static slot *slot_find(cl_dcap_source *s, const char *key)
{
    for (size_t i = 0; i < s->n_slots; i++)
        if (!strcmp(s->slots[i].key, key))
            return &s->slots[i];
    return NULL;
}

/* A new platform's slot (only for a quote whose PCK chain verified: see pccs_collateral). */
static slot *slot_add(cl_dcap_source *s, const char *key, cl_err *err)
{
    if (s->n_slots == MAX_PLATFORMS) {
        cl_err_set(err, CL_E_DENIED, "DCAP: collateral is kept for at most %d platforms (TEE, FMSPC, PCK CA), and "
                   "that many are known", MAX_PLATFORMS);
        return NULL;
    }
    if (s->n_slots == s->cap_slots) {
        size_t cap = s->cap_slots ? s->cap_slots * 2 : 8;
        slot *n = realloc(s->slots, cap * sizeof *n);
        if (!n) {
            cl_err_nomem(err);
            return NULL;
        }
        s->slots = n;
        s->cap_slots = cap;
    }
    slot *sl = &s->slots[s->n_slots++];
    memset(sl, 0, sizeof *sl);
    snprintf(sl->key, sizeof sl->key, "%s", key);
    return sl;
}

/* The end of a collateral's usefulness: nextUpdate, or issue + max_age when that is sooner. */
static int64_t stale_at(const cl_dcap_source *s, const cl_dcap_collateral_info *in)
{
    int64_t t = in->next_update;
    if (s->cfg.max_age_s && in->issued + s->cfg.max_age_s < t)
        t = in->issued + s->cfg.max_age_s;
    return t;
}

/* A failed fetch is tried again after this long (in the source's clock): once a minute at most, so
 * that an outage costs each handshake nothing once a fetch has failed. */
static int64_t retry_s(const cl_dcap_source *s)
{
    int64_t r = s->cfg.refresh_s / 24;
    return r < 60 ? r : 60;
}

/* Fetched or cached collateral is used only when it is, on its own, valid now and for this platform. */
static int check_platform(cl_dcap_source *s, const cl_dcap_collateral *col, const char *tee, const char *fmspc,
                          const char *ca, int64_t now, cl_err *err)
{
    const cl_dcap_collateral_info *in = cl_dcap_collateral_info_get(col);
    if (strcmp(in->tee, tee) || strcmp(in->fmspc_hex, fmspc) || strcmp(in->ca, ca))
        return cl_err_set(err, CL_E_INVALID, "the collateral is for %s FMSPC %s (PCK CA %s), not for %s FMSPC %s "
                          "(PCK CA %s)", in->tee[0] ? in->tee : "?", in->fmspc_hex[0] ? in->fmspc_hex : "?",
                          in->ca[0] ? in->ca : "?", tee, fmspc, ca);
    if (cl_dcap_collateral_check(col, s->root, now, err) != 0)
        return -1;
    if (s->cfg.max_age_s && now - in->issued > s->cfg.max_age_s)
        return cl_err_set(err, CL_E_EXPIRED, "the collateral was issued %lld s ago, more than "
                          "--collateral-max-age %lld", (long long)(now - in->issued), (long long)s->cfg.max_age_s);
    return 0;
}

static void cache_path(const cl_dcap_source *s, const char *key, char *out, size_t size)
{
    snprintf(out, size, "%s/%s.json", s->cache_dir, key);
}

static cl_dcap_collateral *cache_read(cl_dcap_source *s, const char *key, const char *tee, const char *fmspc,
                                      const char *ca, int64_t now)
{
    char path[4096];
    cache_path(s, key, path, sizeof path);
    struct stat st;
    if (stat(path, &st) != 0)
        return NULL;
    cl_err e = {0};
    cl_dcap_collateral *col = cl_dcap_collateral_load(path, &e);
    if (col && check_platform(s, col, tee, fmspc, ca, now, &e) != 0) {
        cl_dcap_collateral_free(col);
        col = NULL;
    }
    if (!col)
        CL_WARN("attest", "DCAP collateral cache %s is not used: %s", path, e.msg);
    else
        atomic_fetch_add(&s->cache_reads, 1);
    return col;
}

static void cache_write(cl_dcap_source *s, const char *key, const cl_dcap_collateral *col)
{
    char path[4096];
    cache_path(s, key, path, sizeof path);
    size_t len;
    char *text = cl_dcap_collateral_to_json(col, &len);
    cl_err e = {0};
    if (!text)
        CL_WARN("attest", "DCAP collateral cache %s: out of memory", path);
    else if (cl_file_write_atomic(path, text, len, 0600, true, &e) != 0)
        CL_WARN("attest", "DCAP collateral cache %s not written: %s", path, e.msg);
    else
        atomic_fetch_add(&s->cache_writes, 1);
    free(text);
}

/* The PCCS collateral for the platform of quote `q` (a reference, or NULL with err). Called without
 * the lock. Nothing is fetched, and no platform added, for a quote whose PCK chain does not verify to
 * the pinned root: the platform it names (its FMSPC) is the quote's own unverified claim, and a fetch
 * runs inside a TLS handshake, so forged quotes naming a new FMSPC each would otherwise cost a PCCS
 * request each (a key server's handshake loop waiting on it) and a slot each. */
static ref *pccs_collateral(cl_dcap_source *s, const cl_attest_quote *q, const char *tee, const char *fmspc,
                            const char *ca, int64_t now, cl_err *err)
{
    char key[32];
    snprintf(key, sizeof key, "%s-%s-%s", tee, fmspc, ca);
    bool vouched = false; /* q's PCK chain verified to the root */
    pthread_mutex_lock(&s->lock);
    slot *sl = slot_find(s, key);
    if (!sl) {
        pthread_mutex_unlock(&s->lock);
        if (cl_dcap_quote_pck_chain_check(q, s->root, now, err) != 0)
            return NULL;
        vouched = true;
        pthread_mutex_lock(&s->lock);
        if (!(sl = slot_find(s, key)) && !(sl = slot_add(s, key, err))) {
            pthread_mutex_unlock(&s->lock);
            return NULL;
        }
    }
    size_t idx = (size_t)(sl - s->slots); /* slots may move while the lock is released */
    if (!sl->r && !sl->disk_tried && s->cache_dir) {
        sl->disk_tried = true;
        pthread_mutex_unlock(&s->lock);
        cl_dcap_collateral *col = cache_read(s, key, tee, fmspc, ca, now);
        ref *r = col ? ref_new(col) : NULL;
        pthread_mutex_lock(&s->lock);
        sl = &s->slots[idx];
        if (r && !sl->r)
            sl->r = r;
        else
            ref_release(r);
    }
    for (;;) {
        ref *have = sl->r;
        bool usable = have && now <= stale_at(s, cl_dcap_collateral_info_get(have->col));
        int64_t margin = s->cfg.refresh_s;
        if (have) {
            const cl_dcap_collateral_info *in = cl_dcap_collateral_info_get(have->col);
            int64_t life = stale_at(s, in) - in->issued;
            if (life > 0 && margin > life / 2)
                margin = life / 2; /* short-lived collateral is not fetched on every use */
        }
        bool due = !have || now >= stale_at(s, cl_dcap_collateral_info_get(have->col)) - margin;
        bool backoff = sl->last_failure && now - sl->last_failure < retry_s(s) && now >= sl->last_failure;
        if (due && !sl->fetching && !backoff && !vouched) {
            pthread_mutex_unlock(&s->lock);
            cl_err ce = {0};
            int ok = cl_dcap_quote_pck_chain_check(q, s->root, now, &ce);
            pthread_mutex_lock(&s->lock);
            sl = &s->slots[idx];
            if (ok != 0) { /* not fetched for: what is in hand, if anything (which refuses q anyway) */
                if (sl->r && now <= stale_at(s, cl_dcap_collateral_info_get(sl->r->col)))
                    break;
                pthread_mutex_unlock(&s->lock);
                if (err)
                    *err = ce;
                return NULL;
            }
            vouched = true;
            continue; /* the state may have changed meanwhile */
        }
        if (due && !sl->fetching && !backoff) {
            sl->fetching = true;
            pthread_mutex_unlock(&s->lock);
            atomic_fetch_add(&s->fetches, 1);
            cl_err fe = {0};
            cl_dcap_collateral *col = cl_pccs_fetch(&s->cfg, s->root, tee, fmspc, ca, &fe);
            if (col && check_platform(s, col, tee, fmspc, ca, now, &fe) != 0) {
                cl_err_prefix(&fe, "PCCS %s: refused", s->cfg.pccs_url);
                cl_dcap_collateral_free(col);
                col = NULL;
            }
            if (col && s->cache_dir)
                cache_write(s, key, col);
            ref *r = col ? ref_new(col) : NULL;
            pthread_mutex_lock(&s->lock);
            sl = &s->slots[idx];
            sl->fetching = false;
            if (r) {
                ref_release(sl->r);
                sl->r = r;
                sl->last_failure = 0;
                CL_INFO("attest", "DCAP collateral for %s fetched from %s (valid until Unix %lld)", key,
                        s->cfg.pccs_url, (long long)cl_dcap_collateral_info_get(col)->next_update);
            } else {
                atomic_fetch_add(&s->fetch_failures, 1);
                sl->last_failure = now ? now : 1;
                if (sl->r && now <= stale_at(s, cl_dcap_collateral_info_get(sl->r->col)))
                    CL_WARN("attest", "DCAP collateral for %s: %s; using the collateral in hand until Unix %lld",
                            key, fe.msg, (long long)stale_at(s, cl_dcap_collateral_info_get(sl->r->col)));
                else
                    CL_ERROR("attest", "DCAP collateral for %s: %s", key, fe.msg);
            }
            pthread_cond_broadcast(&s->fetched);
            if (!sl->r || now > stale_at(s, cl_dcap_collateral_info_get(sl->r->col))) {
                pthread_mutex_unlock(&s->lock);
                if (fe.code == CL_OK)
                    cl_err_set(&fe, CL_E_IO, "no usable DCAP collateral for %s", key);
                if (err)
                    *err = fe;
                return NULL;
            }
            break;
        }
        if (usable || !sl->fetching)
            break; /* what is in hand, or nothing: a fetch failed less than retry_s ago */
        pthread_cond_wait(&s->fetched, &s->lock); /* another thread is fetching what we lack */
        sl = &s->slots[idx];
    }
    ref *r = sl->r && now <= stale_at(s, cl_dcap_collateral_info_get(sl->r->col)) ? sl->r : NULL;
    if (r)
        atomic_fetch_add(&r->refs, 1);
    int64_t last_failure = sl->last_failure;
    pthread_mutex_unlock(&s->lock);
    if (!r)
        cl_err_set(err, CL_E_IO, "no usable DCAP collateral for %s: the last fetch from %s failed %lld s ago (retried "
                   "after %lld s)", key, s->cfg.pccs_url, (long long)(now - last_failure), (long long)retry_s(s));
    return r;
}

/* ---------------------------------------------------------------- verification */

int cl_dcap_source_verify(cl_dcap_source *s, const cl_attest_quote *q, cl_dcap_result *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    char tee[4], fmspc[13], ca[10];
    if (cl_dcap_quote_platform(q, tee, fmspc, ca, err) != 0)
        return -1;
    int64_t now = src_now(s);
    pthread_mutex_lock(&s->lock);
    fileset *f = s->fs;
    atomic_fetch_add(&f->refs, 1);
    pthread_mutex_unlock(&s->lock);
    int rc = 1; /* no file matched */
    for (size_t i = 0; i < f->n && rc != 0; i++) {
        const cl_dcap_collateral_info *in = cl_dcap_collateral_info_get(f->col[i]);
        if (strcmp(in->tee, tee) || strcmp(in->fmspc_hex, fmspc) || strcmp(in->ca, ca))
            continue;
        rc = cl_dcap_verify(q, f->col[i], s->root, now, out, err);
        if (rc == 0 && s->cfg.max_age_s && now - in->issued > s->cfg.max_age_s)
            rc = cl_err_set(err, CL_E_EXPIRED, "DCAP: the collateral file for %s FMSPC %s was issued %lld s ago, "
                            "more than --collateral-max-age %lld", tee, fmspc, (long long)(now - in->issued),
                            (long long)s->cfg.max_age_s);
    }
    fileset_release(f);
    if (rc == 0 || (rc != 1 && !(s->cfg.pccs_url && err && err->code == CL_E_EXPIRED)))
        return rc; /* an expired file gives way to the PCCS */
    if (!s->cfg.pccs_url)
        return cl_err_set(err, CL_E_INVALID, "DCAP: no collateral for this platform (%s, FMSPC %s, PCK CA %s): give "
                          "--dcap-collateral FILE for it, or --pccs-url", tee, fmspc, ca);
    ref *r = pccs_collateral(s, q, tee, fmspc, ca, now, err);
    if (!r)
        return -1;
    const cl_dcap_collateral_info *in = cl_dcap_collateral_info_get(r->col);
    rc = cl_dcap_verify(q, r->col, s->root, now, out, err);
    if (rc == 0 && s->cfg.max_age_s && now - in->issued > s->cfg.max_age_s)
        rc = cl_err_set(err, CL_E_EXPIRED, "DCAP: the collateral for %s FMSPC %s was issued %lld s ago, more than "
                        "--collateral-max-age %lld, and no newer one could be fetched", tee, fmspc,
                        (long long)(now - in->issued), (long long)s->cfg.max_age_s);
    ref_release(r);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

int cl_dcap_source_backend(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims, cl_err *err)
{
    cl_dcap_source *s = ctx;
    if (!s)
        return cl_err_set(err, CL_E_INVALID, "DCAP back end: no collateral source configured");
    cl_dcap_result r;
    if (cl_dcap_source_verify(s, q, &r, err) != 0)
        return -1;
    if (!r.evidence_type[0] || !r.tcb_status[0] || !strcmp(r.tcb_status, "Revoked"))
        return cl_err_set(err, CL_E_AUTH, "DCAP back end: TCB status '%s' is not acceptable", r.tcb_status);
    snprintf(claims->evidence_type, sizeof claims->evidence_type, "%s", r.evidence_type);
    snprintf(claims->tcb_status, sizeof claims->tcb_status, "%s", r.tcb_status);
    return 0;
}
