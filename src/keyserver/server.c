/* server.c — the key server's network side. Connections are accepted and TLS-handshaken on a few
 * event loops (libevent, non-blocking OpenSSL), so a client that has not finished its handshake holds
 * no thread, only a socket and an SSL object, within limits: a handshake deadline, at most so many
 * connections in their handshake per source address and in total (when every slot is taken, the
 * oldest is closed for the newcomer). The handshake requires an RA-TLS client certificate and
 * verifies its evidence against the policy snapshot the connection was accepted with (on the loop,
 * inside the handshake). A handshaken connection goes through a bounded queue to a pool of worker
 * threads that run its one request (release.c) with blocking I/O, per-read timeouts and a
 * whole-connection deadline (a watchdog thread cuts connections past it). Refusals after the evidence
 * verified are audited, by a worker so that no loop waits for the database. Also the policy and DCAP
 * collateral snapshots, and the SIGHUP/SIGTERM loop of `cloister keyserver serve`. */
#include "ks_internal.h"

#include "cloister/dcap.h"
#include "cloister/pki.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <event2/thread.h>
#include <openssl/err.h>
#include <openssl/rand.h>

#define ACCEPT_BATCH 32          /* accepts per wake-up, so a connection flood cannot starve handshakes */
#define ACCEPT_PAUSE_MS 100      /* after EMFILE and the like */
#define DRAIN_MS 1000            /* after a failed handshake: how long to read what the client still sends */
#define DRAIN_MAX (64u << 10)    /* ... and how much */
#define REPORT_EVERY_NS (10ull * 1000000000ull) /* overload warnings at most this often */

typedef struct policy_ref {
    cl_policy *p;
    atomic_int refs;
} policy_ref;

/* The connection a worker is serving, so the watchdog can cut it off at its deadline (a client that
 * trickles bytes would otherwise hold the worker indefinitely: SO_RCVTIMEO bounds each read only). */
typedef struct slot {
    pthread_mutex_t lock;
    int fd;
    uint64_t deadline_ns;
} slot;

typedef struct worker_arg {
    struct cl_keyserver *ks;
    slot *slot;
} worker_arg;

/* Where a connection comes from, for the per-source limit: an IPv4 address (as ::ffff:a.b.c.d, also
 * when it arrives IPv4-mapped on an IPv6 socket) or the /64 prefix of an IPv6 address (one host's
 * usual allocation: an attacker with one /64 does not get 2^64 times the limit). */
typedef struct src_key {
    uint8_t b[16];
} src_key;

typedef struct src_ent {
    struct src_ent *next;
    src_key k;
    unsigned n; /* its connections in their handshake */
} src_ent;

typedef struct hs_loop hs_loop;

/* A connection from accept until a worker takes it (or it is closed). Owned by its loop until the
 * hand-off, by the worker after. */
typedef struct pend {
    hs_loop *loop;
    struct pend *prev, *next; /* every connection in its handshake, oldest first (under hs_lock) */
    bool evicting;            /* told to close for a newer connection (under hs_lock) */
    int fd;
    SSL *ssl;
    struct event *io, *timer;
    short waiting;  /* what `io` is set up for: EV_READ or EV_WRITE, edge-triggered before the ClientHello */
    bool draining;  /* the handshake failed: reading what the client still sends, then closing */
    size_t drained;
    /* refused after a completed handshake (evidence or policy): read the request's first 6 bytes; a
     * native client ("CLKS1\0") is sent the denial frame, anyone else nothing; then close */
    bool denying;
    uint8_t deny_in[6];
    size_t deny_got;
    uint8_t deny_out[9];
    size_t deny_len; /* bytes of deny_out to send: 0 until the request's magic has been read */
    cl_policy_deny deny;
    uint64_t accepted_ns;
    src_key src;
    ks_conn c;
} pend;

/* A refusal to audit (a worker writes it). */
typedef struct audit_job {
    ks_conn c;    /* a copy, with its own policy reference and its own decision strings */
    char *reason; /* whole (malloc()ed) */
} audit_job;

/* One entry of the hand-off queue: a connection to serve or a record to write. */
typedef struct qitem {
    pend *p;
    audit_job *a;
} qitem;

struct hs_loop {
    struct cl_keyserver *ks;
    struct event_base *base;
    struct event *accept_ev, *resume_ev, *stop_ev, *tick_ev;
    const struct timeval *hs_tv, *drain_tv; /* libevent common timeouts: O(1) per connection */
    pthread_t thread;
    bool started, stopping, paused;
    unsigned n; /* connections it owns */
};

enum { C_REFUSED_SOURCE, C_EVICTED, C_TIMED_OUT, C_REFUSED_BUSY, C_FAILED, C_ACCEPTED,
       C_HANDSHAKEN, C_COUNT };

struct cl_keyserver {
    int listen_fd;
    int port;
    SSL_CTX *ctx;
    cl_attest_verifier *verifier;
    bool own_verifier;
    /* the DCAP back end of the own verifier: collateral files and/or a PCCS (SIGHUP reloads) */
    cl_dcap_source *dcap;
    size_t dcap_files;
    bool dcap_pccs;
    cl_ratls_verify_ctx vctx;
    cl_store *store;
    ks_budget *budget; /* locked memory for releases (release.c) */
    pthread_mutex_t pol_lock;
    policy_ref *policy;
    char *policy_file;
    atomic_bool stopping;
    int io_timeout_ms;
    int conn_timeout_ms;
    int hs_timeout_ms;
    bool locks_ready;

    /* workers and their watchdog */
    pthread_t *threads;
    int nthreads, nthreads_started;
    slot *slots;
    worker_arg *wargs;
    pthread_t watchdog;
    bool watchdog_started;
    atomic_bool watchdog_stop;

    /* handshake loops */
    hs_loop *loops;
    int nloops;

    /* connections in their handshake on any loop: per source, in total, oldest first (under hs_lock) */
    pthread_mutex_t hs_lock;
    src_ent **src_b;
    size_t src_mask;
    uint64_t src_seed[2];
    pend *hs_head, *hs_tail;
    unsigned in_hs, n_evicting;
    unsigned max_hs, max_hs_src;

    /* the hand-off queue */
    pthread_mutex_t q_lock;
    pthread_cond_t q_cv;
    qitem *q;
    size_t q_cap, q_head, q_n, q_conns, q_audits;
    bool q_closed;

    /* records of refusals whose evidence never verified: a token bucket (unv_rate per second, ten
     * seconds' burst; 0: no limit), the rest counted by source and summarised (under unv_lock) */
    pthread_mutex_t unv_lock;
    double unv_rate, unv_tokens;
    uint64_t unv_last_ns, unv_since_ns, unv_suppressed;
    struct {
        char peer[64];
        uint64_t n;
    } unv_top[8];
    size_t unv_ntop;
    uint64_t unv_other; /* suppressed from sources beyond the eight named */

    atomic_uint_fast64_t count[C_COUNT];
    uint64_t reported[C_COUNT], reported_ns; /* loop 0 only */
    atomic_uint_fast64_t emfile_logged_ns;
};

typedef ks_conn conn;

static int g_conn_idx = -1;
static pthread_once_t g_conn_once = PTHREAD_ONCE_INIT;
static int g_evthread_rc;
static void conn_idx_init(void)
{
    g_conn_idx = SSL_get_ex_new_index(0, (void *)"cloister ks conn", NULL, NULL, NULL);
    g_evthread_rc = evthread_use_pthreads(); /* the stop event is activated from another thread */
}

static void count(cl_keyserver *ks, int which) { atomic_fetch_add_explicit(&ks->count[which], 1, memory_order_relaxed); }

/* ---------------------------------------------------------------- shared helpers */

int cl_ks_ssl_read_full(SSL *ssl, void *buf, size_t n, int *ssl_error)
{
    size_t got = 0;
    *ssl_error = 0;
    while (got < n) {
        size_t r = 0;
        if (SSL_read_ex(ssl, (uint8_t *)buf + got, n - got, &r) != 1) {
            *ssl_error = SSL_get_error(ssl, 0);
            if (*ssl_error == SSL_ERROR_ZERO_RETURN)
                *ssl_error = 0;
            return -1;
        }
        got += r;
    }
    return 0;
}

int cl_ks_ssl_write_full(SSL *ssl, const void *buf, size_t n)
{
    size_t w = 0;
    return n == 0 || (SSL_write_ex(ssl, buf, n, &w) == 1 && w == n) ? 0 : -1;
}

/* ---------------------------------------------------------------- policy snapshots */

static policy_ref *policy_acquire(cl_keyserver *ks)
{
    pthread_mutex_lock(&ks->pol_lock);
    policy_ref *r = ks->policy;
    atomic_fetch_add(&r->refs, 1);
    pthread_mutex_unlock(&ks->pol_lock);
    return r;
}

static void policy_release(policy_ref *r)
{
    if (r && atomic_fetch_sub(&r->refs, 1) == 1) {
        cl_policy_free(r->p);
        free(r);
    }
}

void cl_keyserver_set_policy(cl_keyserver *ks, cl_policy *p)
{
    policy_ref *r = calloc(1, sizeof(*r));
    if (!r) {
        /* cannot allocate the wrapper: keep the old policy object but empty it is impossible; log */
        CL_ERROR("keyserver", "out of memory installing a policy; keeping the previous one");
        cl_policy_free(p);
        return;
    }
    r->p = p ? p : cl_policy_deny_all();
    atomic_init(&r->refs, 1);
    pthread_mutex_lock(&ks->pol_lock);
    policy_ref *old = ks->policy;
    ks->policy = r;
    pthread_mutex_unlock(&ks->pol_lock);
    policy_release(old);
}

int cl_keyserver_reload_policy(cl_keyserver *ks, cl_err *err)
{
    if (!ks->policy_file)
        return cl_err_set(err, CL_E_INVALID, "this server was started without a policy file");
    cl_policy *p = cl_policy_load(ks->policy_file, err);
    if (!p) {
        CL_ERROR("keyserver", "policy reload failed, DENYING EVERYTHING until a valid policy is loaded: %s",
                 err ? err->msg : "?");
        cl_keyserver_set_policy(ks, NULL);
        return -1;
    }
    size_t n_ids = cl_policy_identity_count(p);
    CL_INFO("keyserver", "policy reloaded from %s (%zu identit%s)", ks->policy_file, n_ids, n_ids == 1 ? "y" : "ies");
    cl_keyserver_set_policy(ks, p);
    return 0;
}

/* runs inside the TLS handshake, after the evidence verified */
static int policy_cb(void *arg, SSL *ssl, const cl_attest_claims *claims, cl_err *err)
{
    (void)arg;
    conn *c = SSL_get_ex_data(ssl, g_conn_idx);
    if (!c)
        return cl_err_set(err, CL_E_INTERNAL, "no connection state");
    c->claims = *claims;
    c->have_claims = true;
    if (cl_policy_evaluate(c->policy, claims, &c->decision) != 0)
        return cl_err_set(err, CL_E_DENIED, "policy: no identity matched: %s",
                          c->decision.reason ? c->decision.reason : "out of memory");
    return 0;
}

/* ---------------------------------------------------------------- connections per source */

static void src_key_of(const struct sockaddr_storage *sa, src_key *k)
{
    memset(k, 0, sizeof *k);
    if (sa->ss_family == AF_INET) {
        k->b[10] = k->b[11] = 0xff;
        memcpy(k->b + 12, &((const struct sockaddr_in *)sa)->sin_addr, 4);
    } else if (sa->ss_family == AF_INET6) {
        const struct in6_addr *a = &((const struct sockaddr_in6 *)sa)->sin6_addr;
        memcpy(k->b, a, IN6_IS_ADDR_V4MAPPED(a) ? 16 : 8);
    }
}

/* Keyed with a random seed, so that sources cannot be chosen to collide (chains are bounded by the
 * total limit anyway). */
static size_t src_hash(const cl_keyserver *ks, const src_key *k)
{
    uint64_t a, b;
    memcpy(&a, k->b, 8);
    memcpy(&b, k->b + 8, 8);
    uint64_t h = (a ^ ks->src_seed[0]) * 0x9e3779b97f4a7c15ull;
    h ^= h >> 31;
    h = (h ^ b ^ ks->src_seed[1]) * 0xc2b2ae3d27d4eb4full;
    h ^= h >> 29;
    return (size_t)h & ks->src_mask;
}

static src_ent **src_find(cl_keyserver *ks, const src_key *k)
{
    src_ent **pp = &ks->src_b[src_hash(ks, k)];
    while (*pp && memcmp((*pp)->k.b, k->b, sizeof k->b) != 0)
        pp = &(*pp)->next;
    return pp;
}

enum { ADMIT_OK, ADMIT_SOURCE, ADMIT_NOMEM };

/* Counts a new connection (its events made, not yet added) among those in their handshake, unless its
 * source is at its limit. When every slot is taken, the oldest connection in its handshake, on any
 * loop, is told to make room: its timer is activated, and its own loop closes it. */
static int hs_admit(cl_keyserver *ks, pend *p)
{
    int rc = ADMIT_OK;
    pthread_mutex_lock(&ks->hs_lock);
    src_ent **pp = src_find(ks, &p->src);
    if (*pp && (*pp)->n >= ks->max_hs_src)
        rc = ADMIT_SOURCE;
    else if (!*pp && !(*pp = calloc(1, sizeof **pp)))
        rc = ADMIT_NOMEM;
    if (rc == ADMIT_OK) {
        if (ks->in_hs - ks->n_evicting >= ks->max_hs) {
            pend *old = ks->hs_head;
            while (old && old->evicting)
                old = old->next;
            if (old) { /* always: fewer than in_hs are evicting */
                old->evicting = true;
                ks->n_evicting++;
                count(ks, C_EVICTED);
                event_active(old->timer, EV_TIMEOUT, 0);
            }
        }
        (*pp)->k = p->src;
        (*pp)->n++;
        ks->in_hs++;
        p->prev = ks->hs_tail;
        p->next = NULL;
        if (ks->hs_tail)
            ks->hs_tail->next = p;
        else
            ks->hs_head = p;
        ks->hs_tail = p;
    }
    pthread_mutex_unlock(&ks->hs_lock);
    return rc;
}

/* The connection is no longer in its handshake (closed, or handed to a worker). */
static void hs_leave(cl_keyserver *ks, pend *p)
{
    pthread_mutex_lock(&ks->hs_lock);
    if (p->prev)
        p->prev->next = p->next;
    else
        ks->hs_head = p->next;
    if (p->next)
        p->next->prev = p->prev;
    else
        ks->hs_tail = p->prev;
    p->prev = p->next = NULL;
    if (p->evicting)
        ks->n_evicting--;
    src_ent **pp = src_find(ks, &p->src);
    if (*pp && --(*pp)->n == 0) {
        src_ent *e = *pp;
        *pp = e->next;
        free(e);
    }
    ks->in_hs--;
    pthread_mutex_unlock(&ks->hs_lock);
}

static bool hs_evicting(cl_keyserver *ks, const pend *p)
{
    pthread_mutex_lock(&ks->hs_lock);
    bool e = p->evicting;
    pthread_mutex_unlock(&ks->hs_lock);
    return e;
}

static unsigned in_handshake(cl_keyserver *ks)
{
    pthread_mutex_lock(&ks->hs_lock);
    unsigned n = ks->in_hs;
    pthread_mutex_unlock(&ks->hs_lock);
    return n;
}

/* ---------------------------------------------------------------- the hand-off queue */

/* Connections and audit records have q_cap places each (in one ring of 2 * q_cap), so records of
 * refused handshakes cannot crowd out connections to serve. false when full (or closed): the
 * caller deals with the item itself. */
static bool queue_push(cl_keyserver *ks, qitem it)
{
    pthread_mutex_lock(&ks->q_lock);
    size_t *kind = it.p ? &ks->q_conns : &ks->q_audits;
    bool ok = !ks->q_closed && *kind < ks->q_cap;
    if (ok) {
        ks->q[(ks->q_head + ks->q_n) % (2 * ks->q_cap)] = it;
        ks->q_n++;
        (*kind)++;
        pthread_cond_signal(&ks->q_cv);
    }
    pthread_mutex_unlock(&ks->q_lock);
    return ok;
}

/* Waits for an item; false once the queue is closed and empty. */
static bool queue_pop(cl_keyserver *ks, qitem *it)
{
    pthread_mutex_lock(&ks->q_lock);
    while (ks->q_n == 0 && !ks->q_closed)
        pthread_cond_wait(&ks->q_cv, &ks->q_lock);
    bool ok = ks->q_n > 0;
    if (ok) {
        *it = ks->q[ks->q_head];
        ks->q_head = (ks->q_head + 1) % (2 * ks->q_cap);
        ks->q_n--;
        if (it->p)
            ks->q_conns--;
        else
            ks->q_audits--;
    }
    pthread_mutex_unlock(&ks->q_lock);
    return ok;
}

/* ---------------------------------------------------------------- connections on a loop */

static void on_io(evutil_socket_t fd, short what, void *arg);

static void loop_check_exit(hs_loop *l)
{
    if (l->stopping && l->n == 0)
        event_base_loopexit(l->base, NULL);
}

/* A connection a worker is done with (or that never reached one). */
static void conn_free(pend *p)
{
    ERR_clear_error();
    SSL_free(p->ssl);
    if (p->fd >= 0)
        close(p->fd);
    cl_policy_decision_clear(&p->c.decision);
    policy_release(p->c.pol);
    free(p);
}

static void audit_job_free(audit_job *a)
{
    cl_policy_decision_clear(&a->c.decision);
    policy_release(a->c.pol);
    free(a->reason);
    free(a);
}

/* Closes a connection that is still on its loop. */
static void pend_free(pend *p)
{
    hs_loop *l = p->loop;
    hs_leave(l->ks, p);
    l->n--;
    event_free(p->io);
    event_free(p->timer);
    p->io = p->timer = NULL;
    conn_free(p);
    loop_check_exit(l);
}

/* Audits a refusal of a connection whose handshake reached the RA-TLS check: by a worker, or here
 * when the queue is full (a refusal is never left unaudited). */
static void audit_later(pend *p, const char *fmt, ...) CL_PRINTF(2, 3);
static void audit_later(pend *p, const char *fmt, ...)
{
    cl_keyserver *ks = p->loop->ks;
    char *reason = NULL;
    va_list ap;
    va_start(ap, fmt);
    int n = vasprintf(&reason, fmt, ap);
    va_end(ap);
    audit_job *a = n >= 0 ? calloc(1, sizeof *a) : NULL;
    if (a) {
        a->c = p->c; /* the decision's strings are copied below: p frees its own */
        a->c.decision.identities = p->c.decision.identities ? strdup(p->c.decision.identities) : NULL;
        a->c.decision.reason = p->c.decision.reason ? strdup(p->c.decision.reason) : NULL;
        a->reason = reason;
    }
    if (!a || (p->c.decision.identities && !a->c.decision.identities) ||
        (p->c.decision.reason && !a->c.decision.reason)) {
        /* out of memory: audit here, on the loop, rather than not at all */
        ks_audit_refusal(&p->c, "tls", n >= 0 ? reason : "refused (out of memory while formatting the reason)");
        if (a) {
            cl_policy_decision_clear(&a->c.decision);
            free(a);
        }
        free(n >= 0 ? reason : NULL);
        return;
    }
    atomic_fetch_add(&a->c.pol->refs, 1);
    if (!queue_push(ks, (qitem){.a = a})) {
        ks_audit_refusal(&a->c, "tls", a->reason);
        audit_job_free(a);
    }
}

static void set_waiting(pend *p, short what)
{
    if (p->waiting != what) {
        event_del(p->io);
        event_assign(p->io, p->loop->base, p->fd, what, on_io, p);
        p->waiting = what;
    }
    if (event_add(p->io, NULL) != 0) {
        CL_ERROR("keyserver", "%s: cannot wait for the connection; closing it", p->c.peer);
        pend_free(p);
    }
}

/* After a failed handshake: the alert is out; read what the client still sends (its remaining
 * handshake records) for a moment before closing, so that the close is not a reset that would
 * destroy the alert before the client reads it. */
static void drain_start(pend *p)
{
    SSL_free(p->ssl);
    p->ssl = NULL;
    shutdown(p->fd, SHUT_WR);
    p->draining = true;
    evtimer_del(p->timer);
    if (evtimer_add(p->timer, p->loop->drain_tv) != 0) {
        pend_free(p);
        return;
    }
    set_waiting(p, EV_READ);
}

static void drain(pend *p)
{
    char sink[4096];
    for (;;) {
        ssize_t n = read(p->fd, sink, sizeof sink);
        if (n > 0) {
            p->drained += (size_t)n;
            if (p->drained > DRAIN_MAX)
                break;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_waiting(p, EV_READ);
            return;
        }
        break; /* end of stream or error */
    }
    pend_free(p);
}

/* ---------------------------------------------------------------- records of unverified refusals */

/* Whether the refusal of a client whose evidence never verified may be recorded now; if not, it is
 * counted for the next summary. */
static bool unverified_admit(cl_keyserver *ks, const char *peer)
{
    if (ks->unv_rate <= 0)
        return true;
    uint64_t now = cl_now_ns();
    pthread_mutex_lock(&ks->unv_lock);
    double burst = 10 * ks->unv_rate;
    ks->unv_tokens += (double)(now - ks->unv_last_ns) / 1e9 * ks->unv_rate;
    if (ks->unv_tokens > burst)
        ks->unv_tokens = burst;
    ks->unv_last_ns = now;
    bool ok = ks->unv_tokens >= 1;
    if (ok) {
        ks->unv_tokens -= 1;
    } else {
        if (!ks->unv_suppressed++)
            ks->unv_since_ns = now;
        /* the source, without its port: one host's connections count together */
        char host[64];
        snprintf(host, sizeof host, "%s", peer);
        char *colon = strrchr(host, ':');
        if (colon)
            *colon = 0;
        size_t i = 0;
        while (i < ks->unv_ntop && strcmp(ks->unv_top[i].peer, host) != 0)
            i++;
        if (i < ks->unv_ntop) {
            ks->unv_top[i].n++;
        } else if (ks->unv_ntop < CL_ARRAY_LEN(ks->unv_top)) {
            snprintf(ks->unv_top[ks->unv_ntop].peer, sizeof ks->unv_top[0].peer, "%s", host);
            ks->unv_top[ks->unv_ntop++].n = 1;
        } else {
            ks->unv_other++;
        }
    }
    pthread_mutex_unlock(&ks->unv_lock);
    return ok;
}

/* Writes one record summarising the refusals not recorded one by one since the last summary (from
 * loop 0's tick, and at stop). */
static void unverified_summary(cl_keyserver *ks)
{
    pthread_mutex_lock(&ks->unv_lock);
    uint64_t n = ks->unv_suppressed, other = ks->unv_other, secs = (cl_now_ns() - ks->unv_since_ns) / 1000000000u;
    cl_strbuf b = {0};
    if (n) {
        cl_strbuf_fmt(&b, "%llu refusal(s) of clients whose evidence did not verify (or who sent no client certificate) "
                      "in the last %llu s were not recorded one by one (more than %.0f a second): ",
                      (unsigned long long)n, (unsigned long long)secs + 1, ks->unv_rate);
        for (size_t i = 0; i < ks->unv_ntop; i++)
            cl_strbuf_fmt(&b, "%s%s x%llu", i ? ", " : "", ks->unv_top[i].peer, (unsigned long long)ks->unv_top[i].n);
        if (other)
            cl_strbuf_fmt(&b, ", other sources x%llu", (unsigned long long)other);
    }
    ks->unv_suppressed = ks->unv_other = 0;
    ks->unv_ntop = 0;
    pthread_mutex_unlock(&ks->unv_lock);
    if (!n)
        return;
    char *reason = cl_strbuf_take(&b, NULL);
    ks_conn c = {.store = ks->store, .budget = ks->budget};
    snprintf(c.peer, sizeof c.peer, "%s", "(summary)");
    CL_WARN("keyserver", "%s", reason ? reason : "refusals not recorded one by one (out of memory describing them)");
    ks_audit_refusal(&c, "tls", reason ? reason : "refusals of unverified clients were not recorded one by one "
                     "(out of memory describing them)");
    free(reason);
}

/* Audits a refused connection (evidence that did not verify, a policy that matched no identity, no
 * certificate, a handshake that failed after the evidence verified): the same records whether the
 * refusal is a TLS alert or a denial frame after the handshake. */
static void audit_refused(pend *p, int ssl_error)
{
    cl_keyserver *ks = p->loop->ks;
    const cl_err *why = cl_ratls_peer_error(p->ssl);
    unsigned long first = ERR_peek_error(), last = ERR_peek_last_error();
    bool no_cert = !why && (ERR_GET_REASON(first) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE ||
                            ERR_GET_REASON(last) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE);
    const char *ossl = last ? ERR_reason_error_string(last) : NULL;
    if (!ossl)
        ossl = ssl_error == SSL_ERROR_SYSCALL || ssl_error == SSL_ERROR_ZERO_RETURN ? "the client closed the connection"
                                                                                    : "unknown TLS error";
    count(ks, C_FAILED);
    if ((why || no_cert) && !p->c.have_claims && !unverified_admit(ks, p->c.peer))
        CL_DEBUG("keyserver", "%s: refused (evidence did not verify); counted for the next audit summary", p->c.peer);
    else if (why && p->c.have_claims && !p->c.decision.allowed && p->c.decision.reason)
        audit_later(p, "policy: no identity matched: %s", p->c.decision.reason); /* whole, unlike why->msg */
    else if (why) /* the evidence did not verify */
        audit_later(p, "%s", why->msg);
    else if (no_cert)
        audit_later(p, "no client certificate (RA-TLS required)");
    else if (p->c.have_claims) /* verified and allowed, and then the handshake failed */
        audit_later(p, "the TLS handshake failed after the evidence verified: %s%s", ossl,
                    ERR_GET_REASON(last) == SSL_R_BAD_SIGNATURE
                        ? " (the client does not hold the certificate's private key: a copied RA-TLS certificate?)"
                        : "");
    else
        CL_DEBUG("keyserver", "%s: TLS handshake failed: %s", p->c.peer, ossl);
    ERR_clear_error();
}

static void handshake_failed(pend *p, int ssl_error)
{
    audit_refused(p, ssl_error);
    drain_start(p);
}

/* The reason code a refused client is told: the policy's (the check of the closest identity that
 * failed), or the kind of evidence failure. Never the values the policy expects. */
static cl_policy_deny deny_code(const pend *p)
{
    if (p->c.have_claims) /* the evidence verified; the policy matched no identity */
        return p->c.decision.deny;
    const cl_err *why = cl_ratls_peer_error(p->ssl);
    if (!why)
        return CL_DENY_NONE;
    switch (why->code) {
    case CL_E_DENIED: return CL_DENY_TCB_STATUS; /* DCAP: the TCB is below every level the collateral lists */
    case CL_E_EXPIRED:
    case CL_E_IO: return CL_DENY_COLLATERAL;    /* collateral out of date, or a PCCS that could not be asked */
    default: return CL_DENY_EVIDENCE_INVALID;
    }
}

/* Ends a refused connection: close_notify, then draining (nothing more is sent). */
static void deny_close(pend *p)
{
    ERR_clear_error();
    SSL_shutdown(p->ssl); /* non-blocking: sends close_notify if it can, never waits for the client's */
    ERR_clear_error();
    drain_start(p);
}

/* A refused connection after its handshake, on the loop, within the handshake deadline and slot: the
 * request's first 6 bytes are read; a native request is answered with the denial frame ("CLKS1\0", 4,
 * the 16-bit reason code), anything else (secret_prov, garbage) with nothing; then it is closed. */
static void deny_step(pend *p)
{
    for (;;) {
        ERR_clear_error();
        int r, e;
        if (p->deny_len == 0) {
            r = SSL_read(p->ssl, p->deny_in + p->deny_got, (int)(sizeof p->deny_in - p->deny_got));
            if (r > 0) {
                p->deny_got += (size_t)r;
                if (p->deny_got < sizeof p->deny_in)
                    continue;
                if (memcmp(p->deny_in, CL_KS_MAGIC, 6) != 0) {
                    deny_close(p); /* not the native protocol: it is told nothing */
                    return;
                }
                memcpy(p->deny_out, CL_KS_MAGIC, 6);
                p->deny_out[6] = CL_KS_STATUS_DENIED;
                cl_ks_put16(p->deny_out + 7, (uint16_t)p->deny);
                p->deny_len = sizeof p->deny_out;
                continue;
            }
        } else {
            r = SSL_write(p->ssl, p->deny_out, (int)p->deny_len);
            if (r > 0) {
                deny_close(p);
                return;
            }
        }
        e = SSL_get_error(p->ssl, r);
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) {
            set_waiting(p, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
            return;
        }
        CL_DEBUG("keyserver", "%s: refused, and gone before its denial", p->c.peer);
        ERR_clear_error();
        pend_free(p);
        return;
    }
}

/* The handshake completed, but the evidence did not verify or the policy matched no identity
 * (complete_on_failure): audited as a refusal, then told why (deny_step). */
static void deny_start(pend *p)
{
    audit_refused(p, SSL_ERROR_NONE);
    p->denying = true;
    p->deny = deny_code(p);
    deny_step(p);
}

/* The handshake is done: to a worker. */
static void handoff(pend *p)
{
    hs_loop *l = p->loop;
    cl_keyserver *ks = l->ks;
    if (!cl_ratls_peer_claims(p->ssl) || !p->c.have_claims || !p->c.decision.allowed) {
        CL_ERROR("keyserver", "%s: handshake completed without verified claims; closing", p->c.peer);
        pend_free(p);
        return;
    }
    hs_leave(ks, p);
    l->n--;
    event_free(p->io); /* also drops an eviction notice still pending: it is done */
    event_free(p->timer);
    p->io = p->timer = NULL;
    int fl = fcntl(p->fd, F_GETFL);
    if (fl >= 0)
        fcntl(p->fd, F_SETFL, fl & ~O_NONBLOCK);
    cl_net_set_timeouts(p->fd, ks->io_timeout_ms);
    count(ks, C_HANDSHAKEN);
    if (!queue_push(ks, (qitem){.p = p})) {
        count(ks, C_REFUSED_BUSY);
        char why[160];
        snprintf(why, sizeof why, "refused after the handshake: %zu connections already wait for a worker "
                 "(server overloaded)", ks->q_cap);
        ks_audit_refusal(&p->c, "tls", why); /* here: the queue is full */
        conn_free(p);
    }
    loop_check_exit(l);
}

static void handshake_step(pend *p)
{
    ERR_clear_error();
    int r = SSL_do_handshake(p->ssl);
    if (r == 1) {
        if (cl_ratls_peer_claims(p->ssl) && p->c.have_claims && p->c.decision.allowed)
            handoff(p);
        else
            deny_start(p);
        return;
    }
    int e = SSL_get_error(p->ssl, r);
    if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
        set_waiting(p, e == SSL_ERROR_WANT_READ ? EV_READ : EV_WRITE);
    else
        handshake_failed(p, e);
}

/* The TLS object is made once the client's first record (its ClientHello) has arrived whole: until
 * then a connection costs a few hundred bytes instead of OpenSSL's ~45 KiB of buffers, which is what
 * a client trickling a ClientHello would otherwise hold until the deadline. 1: go on, 0: wait, -1:
 * close (not TLS, or gone). */
static int first_record(pend *p)
{
    uint8_t h[5];
    ssize_t n = recv(p->fd, h, sizeof h, MSG_PEEK);
    if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
        return 0;
    if (n <= 0)
        return -1;
    if (h[0] != 0x16 || (n >= 2 && h[1] != 0x03)) /* a handshake record, TLS 1.x */
        return -1;
    if (n < 5)
        return 0;
    size_t len = (size_t)h[3] << 8 | h[4];
    if (len == 0 || len > 16384)
        return -1;
    int avail = 0;
    if (ioctl(p->fd, FIONREAD, &avail) != 0)
        return -1;
    return (size_t)avail >= 5 + len ? 1 : 0;
}

static void on_io(evutil_socket_t fd, short what, void *arg)
{
    pend *p = arg;
    if (p->draining) {
        drain(p);
        return;
    }
    if (p->denying) {
        deny_step(p);
        return;
    }
    if (!p->ssl) {
        int r = what & EV_CLOSED ? -1 : first_record(p); /* a half-close ends it: no ClientHello will come */
        if (r == 0)
            return; /* edge-triggered: woken again when more arrives */
        if (r < 0) {
            CL_DEBUG("keyserver", "%s: not a TLS client, or gone before its ClientHello", p->c.peer);
            count(p->loop->ks, C_FAILED);
            pend_free(p);
            return;
        }
        cl_keyserver *ks = p->loop->ks;
        if (!(p->ssl = SSL_new(ks->ctx)) || !SSL_set_fd(p->ssl, p->fd) ||
            !SSL_set_ex_data(p->ssl, g_conn_idx, &p->c)) {
            CL_ERROR("keyserver", "%s: cannot set up a TLS connection (out of memory?)", p->c.peer);
            pend_free(p);
            return;
        }
        SSL_set_accept_state(p->ssl);
    }
    handshake_step(p);
}

/* Closes a connection still in its handshake (deadline, or evicted for a newer one); audited when
 * its evidence had verified. */
static void pend_abort(pend *p, const char *why)
{
    if (p->denying) /* refused, and audited as such already */
        CL_DEBUG("keyserver", "%s: refused; %s before its denial was sent", p->c.peer, why);
    else if (p->c.have_claims)
        audit_later(p, "%s, after the evidence verified", why);
    else
        CL_DEBUG("keyserver", "%s: %s", p->c.peer, why);
    pend_free(p);
}

/* The handshake deadline, the end of draining, or an eviction notice from hs_admit. */
static void on_deadline(evutil_socket_t fd, short what, void *arg)
{
    pend *p = arg;
    if (p->draining) {
        pend_free(p);
        return;
    }
    if (hs_evicting(p->loop->ks, p)) {
        pend_abort(p, "closed to admit a newer connection (every handshake slot was taken)");
        return;
    }
    count(p->loop->ks, C_TIMED_OUT);
    char why[96];
    snprintf(why, sizeof why, "the TLS handshake did not finish within %d ms", p->loop->ks->hs_timeout_ms);
    pend_abort(p, why);
}

static void peer_name(const struct sockaddr_storage *sa, char *out, size_t size)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->ss_family == AF_INET) {
        const struct sockaddr_in *in = (const struct sockaddr_in *)sa;
        inet_ntop(AF_INET, &in->sin_addr, host, sizeof host);
        port = ntohs(in->sin_port);
    } else if (sa->ss_family == AF_INET6) {
        const struct sockaddr_in6 *in6 = (const struct sockaddr_in6 *)sa;
        inet_ntop(AF_INET6, &in6->sin6_addr, host, sizeof host);
        port = ntohs(in6->sin6_port);
    }
    snprintf(out, size, "%s:%d", host, port);
}

/* A refused connection is reset (SO_LINGER 0): nothing to say to it, and no TIME_WAIT left here. */
static void refuse(int fd)
{
    struct linger lg = {1, 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof lg);
    close(fd);
}

/* A new connection: admitted within the limits, with its policy snapshot, waiting for its ClientHello
 * (the TLS object comes with it, in on_io). */
static void conn_open(hs_loop *l, int fd, const struct sockaddr_storage *sa)
{
    cl_keyserver *ks = l->ks;
    pend *p = calloc(1, sizeof *p);
    /* edge-triggered while the first record is incomplete: bytes left unread do not wake the loop again */
    if (!p || !(p->io = event_new(l->base, fd, EV_READ | EV_CLOSED | EV_PERSIST | EV_ET, on_io, p)) ||
        !(p->timer = evtimer_new(l->base, on_deadline, p))) {
        CL_ERROR("keyserver", "cannot accept a connection: out of memory");
        if (p && p->io)
            event_free(p->io);
        free(p);
        refuse(fd);
        return;
    }
    p->loop = l;
    p->fd = fd;
    p->waiting = EV_READ | EV_CLOSED | EV_PERSIST | EV_ET;
    src_key_of(sa, &p->src);
    int rc = hs_admit(ks, p);
    if (rc != ADMIT_OK) {
        if (rc == ADMIT_SOURCE)
            count(ks, C_REFUSED_SOURCE);
        else
            CL_ERROR("keyserver", "cannot accept a connection: out of memory");
        event_free(p->io);
        event_free(p->timer);
        free(p);
        refuse(fd);
        return;
    }
    l->n++;
    p->accepted_ns = cl_now_ns();
    p->c.store = ks->store;
    p->c.budget = ks->budget;
    peer_name(sa, p->c.peer, sizeof p->c.peer);
    p->c.pol = policy_acquire(ks);
    p->c.policy = p->c.pol->p;
    if (evtimer_add(p->timer, l->hs_tv) != 0 || event_add(p->io, NULL) != 0) {
        CL_ERROR("keyserver", "%s: cannot wait for the connection (out of memory?)", p->c.peer);
        pend_free(p);
    }
}

static void on_resume(evutil_socket_t fd, short what, void *arg)
{
    hs_loop *l = arg;
    l->paused = false;
    if (!l->stopping && event_add(l->accept_ev, NULL) != 0)
        CL_ERROR("keyserver", "cannot resume accepting connections");
}

static void pause_accepting(hs_loop *l, int e)
{
    cl_keyserver *ks = l->ks;
    uint64_t now = cl_now_ns(), last = atomic_load(&ks->emfile_logged_ns);
    if ((!last || now - last > REPORT_EVERY_NS) && atomic_compare_exchange_strong(&ks->emfile_logged_ns, &last, now))
        CL_WARN("keyserver", "cannot accept connections (%s): pausing for %d ms; %u connections in their handshake "
                "(raise RLIMIT_NOFILE, or lower --max-handshakes)", strerror(e), ACCEPT_PAUSE_MS, in_handshake(ks));
    struct timeval tv = {0, ACCEPT_PAUSE_MS * 1000};
    event_del(l->accept_ev);
    l->paused = true;
    evtimer_add(l->resume_ev, &tv);
}

static void on_accept(evutil_socket_t lfd, short what, void *arg)
{
    hs_loop *l = arg;
    for (int i = 0; i < ACCEPT_BATCH && !l->stopping; i++) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(lfd, (struct sockaddr *)&sa, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED || errno == EPROTO)
                continue;
            if (errno != EAGAIN && errno != EWOULDBLOCK)
                pause_accepting(l, errno); /* EMFILE, ENFILE, ENOBUFS, ENOMEM */
            return;
        }
        count(l->ks, C_ACCEPTED);
        conn_open(l, fd, &sa);
    }
}

/* Loop 0, every second: a warning when connections were refused, evicted or cut (at most every 10 s). */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    cl_keyserver *ks = ((hs_loop *)arg)->ks;
    uint64_t now = cl_now_ns(), d[C_COUNT];
    pthread_mutex_lock(&ks->unv_lock);
    bool summary_due = ks->unv_suppressed && now - ks->unv_since_ns >= REPORT_EVERY_NS;
    pthread_mutex_unlock(&ks->unv_lock);
    if (summary_due)
        unverified_summary(ks);
    bool any = false;
    for (int i = 0; i < C_COUNT; i++) {
        d[i] = atomic_load_explicit(&ks->count[i], memory_order_relaxed) - ks->reported[i];
        if (i <= C_REFUSED_BUSY && d[i])
            any = true;
    }
    if (!any || (ks->reported_ns && now - ks->reported_ns < REPORT_EVERY_NS))
        return;
    CL_WARN("keyserver", "under load: %llu connection(s) accepted, %llu handshaken; %llu refused by the per-source "
            "limit (%u), %llu evicted with all %u handshake slots taken, %llu cut at the %d ms handshake deadline, "
            "%llu refused after the handshake (worker queue full); %u in their handshake now",
            (unsigned long long)d[C_ACCEPTED], (unsigned long long)d[C_HANDSHAKEN],
            (unsigned long long)d[C_REFUSED_SOURCE], ks->max_hs_src, (unsigned long long)d[C_EVICTED], ks->max_hs, (unsigned long long)d[C_TIMED_OUT], ks->hs_timeout_ms,
            (unsigned long long)d[C_REFUSED_BUSY], in_handshake(ks));
    for (int i = 0; i < C_COUNT; i++)
        ks->reported[i] += d[i];
    ks->reported_ns = now;
}

/* From cl_keyserver_stop's thread: no new connections; the loop ends when its last one is gone. */
static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    hs_loop *l = arg;
    l->stopping = true;
    event_del(l->accept_ev);
    event_del(l->resume_ev);
    if (l->tick_ev)
        event_del(l->tick_ev);
    loop_check_exit(l);
}

static void *loop_main(void *arg)
{
    hs_loop *l = arg;
    event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* ---------------------------------------------------------------- workers */

static void *worker(void *arg)
{
    worker_arg *w = arg;
    cl_keyserver *ks = w->ks;
    qitem it;
    while (queue_pop(ks, &it)) {
        if (it.a) {
            ks_audit_refusal(&it.a->c, "tls", it.a->reason);
            audit_job_free(it.a);
            continue;
        }
        pend *p = it.p;
        pthread_mutex_lock(&w->slot->lock);
        w->slot->fd = p->fd;
        w->slot->deadline_ns = p->accepted_ns + (uint64_t)ks->conn_timeout_ms * 1000000u;
        pthread_mutex_unlock(&w->slot->lock);
        ks_serve_request(&p->c, p->ssl);
        SSL_shutdown(p->ssl);
        pthread_mutex_lock(&w->slot->lock);
        w->slot->fd = -1;
        pthread_mutex_unlock(&w->slot->lock);
        conn_free(p);
    }
    return NULL;
}

static void *watchdog(void *arg)
{
    cl_keyserver *ks = arg;
    while (!atomic_load(&ks->watchdog_stop)) {
        struct timespec ts = {0, 100 * 1000000L};
        nanosleep(&ts, NULL);
        uint64_t now = cl_now_ns();
        for (int i = 0; i < ks->nthreads; i++) {
            slot *sl = &ks->slots[i];
            pthread_mutex_lock(&sl->lock);
            if (sl->fd >= 0 && now > sl->deadline_ns) {
                CL_WARN("keyserver", "a connection exceeded %d ms; closing it", ks->conn_timeout_ms);
                shutdown(sl->fd, SHUT_RDWR);
                sl->deadline_ns = UINT64_MAX;
            }
            pthread_mutex_unlock(&sl->lock);
        }
    }
    return NULL;
}

void cl_keyserver_get_stats(cl_keyserver *ks, cl_keyserver_stats *st)
{
    memset(st, 0, sizeof *st);
    st->accepted = atomic_load(&ks->count[C_ACCEPTED]);
    st->handshaken = atomic_load(&ks->count[C_HANDSHAKEN]);
    st->handshake_failed = atomic_load(&ks->count[C_FAILED]);
    st->timed_out = atomic_load(&ks->count[C_TIMED_OUT]);
    st->refused_source = atomic_load(&ks->count[C_REFUSED_SOURCE]);
    st->evicted = atomic_load(&ks->count[C_EVICTED]);
    st->refused_busy = atomic_load(&ks->count[C_REFUSED_BUSY]);
    st->in_handshake = in_handshake(ks);
    pthread_mutex_lock(&ks->q_lock);
    st->queued = (unsigned)ks->q_conns;
    pthread_mutex_unlock(&ks->q_lock);
    st->max_handshakes = ks->max_hs;
    st->max_handshakes_per_source = ks->max_hs_src;
}

/* ---------------------------------------------------------------- listening socket */

static int listen_on(cl_keyserver *ks, const char *spec, cl_err *err)
{
    char host[256];
    int port;
    if (cl_net_split_hostport(spec, host, sizeof host, &port, CL_KS_DEFAULT_PORT, true, err) != 0)
        return cl_err_prefix(err, "--listen");
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM, .ai_flags = AI_PASSIVE}, *res;
    char ports[8];
    snprintf(ports, sizeof ports, "%d", port);
    int g = getaddrinfo(host, ports, &hints, &res);
    if (g != 0)
        return cl_err_set(err, CL_E_INVALID, "--listen %s: %s", spec, gai_strerror(g));
    int fd = socket(res->ai_family, res->ai_socktype | SOCK_CLOEXEC, 0);
    int one = 1;
    if (fd >= 0)
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, res->ai_addr, res->ai_addrlen) != 0 || listen(fd, 1024) != 0) {
        int e = errno;
        if (fd >= 0)
            close(fd);
        freeaddrinfo(res);
        return cl_err_errno(err, CL_E_IO, e, "cannot listen on %s", spec);
    }
    freeaddrinfo(res);
    struct sockaddr_storage sa;
    socklen_t sl = sizeof sa;
    getsockname(fd, (struct sockaddr *)&sa, &sl);
    ks->port = ntohs(sa.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&sa)->sin6_port
                                              : ((struct sockaddr_in *)&sa)->sin_port);
    ks->listen_fd = fd;
    return 0;
}

/* ---------------------------------------------------------------- DCAP collateral
 * The collateral source (cloister/dcap.h: files chosen per platform, and/or a PCCS fetched on
 * demand and cached). SIGHUP reloads the files all or none; a handshake keeps the collateral it
 * verifies with, so a reload never frees collateral in use. */
int cl_keyserver_reload_dcap(cl_keyserver *ks, cl_err *err)
{
    if (!ks->dcap)
        return 0;
    if (cl_dcap_source_reload(ks->dcap, err) != 0) {
        CL_ERROR("keyserver", "DCAP collateral reload failed, still verifying with the collateral loaded before: %s",
                 err ? err->msg : "?");
        return -1;
    }
    CL_INFO("keyserver", "DCAP collateral reloaded from %zu file(s)%s", ks->dcap_files,
            ks->dcap_pccs ? "; PCCS collateral is fetched again on next use" : "");
    return 0;
}

/* Creates the collateral source and its verifier back end (freed after the verifier: ks_free). */
static int dcap_setup(cl_keyserver *ks, const cl_keyserver_config *cfg, cl_err *err)
{
    if (!cfg->dcap)
        return 0;
    if (!(ks->dcap = cl_dcap_source_new(cfg->dcap, err)) ||
        cl_attest_verifier_add_backend(ks->verifier, "dcap", cl_dcap_source_backend, ks->dcap, err) != 0)
        return -1;
    ks->dcap_files = cfg->dcap->collateral_count;
    ks->dcap_pccs = cfg->dcap->pccs_url != NULL;
    for (size_t i = 0; i < cfg->dcap->collateral_count; i++)
        CL_INFO("keyserver", "DCAP: verifying real SGX/TDX quotes with collateral %s", cfg->dcap->collateral_files[i]);
    if (cfg->dcap->pccs_url)
        CL_INFO("keyserver", "DCAP: verifying real SGX/TDX quotes with collateral from %s (cache %s)",
                cfg->dcap->pccs_url, cfg->dcap->cache_dir ? cfg->dcap->cache_dir : "in memory only");
    return 0;
}

/* ---------------------------------------------------------------- start/stop */

/* Stops the loops (each finishes its handshakes in progress: at most the handshake deadline), then
 * the workers (each finishes the queue), then the watchdog. Safe on a partly started server. */
static void stop_threads(cl_keyserver *ks)
{
    atomic_store(&ks->stopping, true);
    for (int i = 0; ks->loops && i < ks->nloops; i++)
        if (ks->loops[i].started)
            event_active(ks->loops[i].stop_ev, EV_READ, 0);
    for (int i = 0; ks->loops && i < ks->nloops; i++)
        if (ks->loops[i].started) {
            pthread_join(ks->loops[i].thread, NULL);
            ks->loops[i].started = false;
        }
    if (ks->locks_ready) {
        pthread_mutex_lock(&ks->q_lock);
        ks->q_closed = true;
        pthread_cond_broadcast(&ks->q_cv);
        pthread_mutex_unlock(&ks->q_lock);
    }
    for (int i = 0; i < ks->nthreads_started; i++)
        pthread_join(ks->threads[i], NULL);
    ks->nthreads_started = 0;
    if (ks->watchdog_started) {
        atomic_store(&ks->watchdog_stop, true);
        pthread_join(ks->watchdog, NULL);
        ks->watchdog_started = false;
    }
}

static void ks_free(cl_keyserver *ks)
{
    for (int i = 0; ks->loops && i < ks->nloops; i++) {
        hs_loop *l = &ks->loops[i];
        struct event *evs[] = {l->accept_ev, l->resume_ev, l->stop_ev, l->tick_ev};
        for (size_t j = 0; j < CL_ARRAY_LEN(evs); j++)
            if (evs[j])
                event_free(evs[j]);
        if (l->base)
            event_base_free(l->base);
    }
    free(ks->loops);
    if (ks->listen_fd >= 0)
        close(ks->listen_fd);
    SSL_CTX_free(ks->ctx);
    if (ks->own_verifier)
        cl_attest_verifier_free(ks->verifier);
    cl_dcap_source_free(ks->dcap);
    cl_store_close(ks->store);
    ks_budget_free(ks->budget);
    policy_release(ks->policy);
    free(ks->policy_file);
    free(ks->threads);
    if (ks->slots)
        for (int i = 0; i < ks->nthreads; i++)
            pthread_mutex_destroy(&ks->slots[i].lock);
    free(ks->slots);
    free(ks->wargs);
    if (ks->src_b) {
        for (size_t i = 0; i <= ks->src_mask; i++)
            while (ks->src_b[i]) {
                src_ent *e = ks->src_b[i];
                ks->src_b[i] = e->next;
                free(e);
            }
        free(ks->src_b);
    }
    free(ks->q);
    if (ks->locks_ready) {
        pthread_mutex_destroy(&ks->hs_lock);
        pthread_mutex_destroy(&ks->unv_lock);
        pthread_mutex_destroy(&ks->q_lock);
        pthread_cond_destroy(&ks->q_cv);
    }
    pthread_mutex_destroy(&ks->pol_lock);
    free(ks);
}

static int default_loops(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 16 ? 16 : (int)n;
}

/* The limits, fitted to RLIMIT_NOFILE (raised to its hard limit first): every connection in its
 * handshake, queued or served holds a descriptor. */
static int set_limits(cl_keyserver *ks, const cl_keyserver_config *cfg, cl_err *err)
{
    ks->nloops = cfg->handshake_threads > 0 ? cfg->handshake_threads : default_loops();
    ks->hs_timeout_ms = cfg->handshake_timeout_ms > 0 ? cfg->handshake_timeout_ms : 5000;
    if (ks->hs_timeout_ms > ks->conn_timeout_ms)
        ks->hs_timeout_ms = ks->conn_timeout_ms;
    ks->q_cap = cfg->queue > 0 ? (size_t)cfg->queue : 8 * (size_t)ks->nthreads;
    uint64_t want = cfg->max_handshakes > 0 ? (uint64_t)cfg->max_handshakes : 4096;
    uint64_t before, nofile = cl_raise_nofile_limit(&before);
    /* workers' and queued connections, the listening socket, the database, logs, each loop's epoll
     * and notification descriptors, and some slack */
    uint64_t reserve = (uint64_t)ks->nthreads + ks->q_cap + 4 * (uint64_t)ks->nloops + 64;
    uint64_t room = nofile > reserve ? nofile - reserve : 0;
    if (room < 16)
        return cl_err_set(err, CL_E_INVALID, "RLIMIT_NOFILE is %llu (hard limit), too low for %d workers and a "
                          "queue of %zu plus connections in their handshake: raise it (`ulimit -n`, LimitNOFILE=) or "
                          "lower --threads/--queue", (unsigned long long)nofile, ks->nthreads, ks->q_cap);
    if (want > room) {
        CL_WARN("keyserver", "RLIMIT_NOFILE %llu leaves room for %llu connections in their handshake, not %llu: "
                "using %llu (raise the hard limit to allow more)", (unsigned long long)nofile,
                (unsigned long long)room, (unsigned long long)want, (unsigned long long)room);
        want = room;
    }
    ks->max_hs = (unsigned)(want > UINT32_MAX ? UINT32_MAX : want);
    ks->max_hs_src = cfg->max_handshakes_per_source > 0 ? (unsigned)cfg->max_handshakes_per_source : 64;
    ks->unv_rate = cfg->audit_unverified_per_second < 0 ? 0 : cfg->audit_unverified_per_second ? cfg->audit_unverified_per_second : 10;
    ks->unv_tokens = 10 * ks->unv_rate;
    ks->unv_last_ns = cl_now_ns();
    if (ks->max_hs_src > ks->max_hs)
        ks->max_hs_src = ks->max_hs;
    if (nofile == before)
        CL_INFO("keyserver", "RLIMIT_NOFILE %llu (already its hard limit)", (unsigned long long)nofile);
    else
        CL_INFO("keyserver", "RLIMIT_NOFILE raised from %llu to its hard limit %llu", (unsigned long long)before,
                (unsigned long long)nofile);
    CL_INFO("keyserver", "connections: %d handshake loop(s); up to %u in their handshake, %u per source address, "
            "%d ms each; %d workers behind a queue of %zu; %d ms per read, %d ms per connection",
            ks->nloops, ks->max_hs, ks->max_hs_src, ks->hs_timeout_ms, ks->nthreads, ks->q_cap, ks->io_timeout_ms,
            ks->conn_timeout_ms);
    return 0;
}

/* The per-source table, the queue, the worker slots and the loops with their events. */
static int setup_network(cl_keyserver *ks, cl_err *err)
{
    pthread_mutex_init(&ks->hs_lock, NULL);
    pthread_mutex_init(&ks->unv_lock, NULL);
    pthread_mutex_init(&ks->q_lock, NULL);
    pthread_cond_init(&ks->q_cv, NULL);
    ks->locks_ready = true;
    size_t nb = 64;
    while (nb < ks->max_hs && nb < ((size_t)1 << 24))
        nb <<= 1;
    ks->src_mask = nb - 1;
    if (RAND_bytes((uint8_t *)ks->src_seed, sizeof ks->src_seed) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot seed the per-source table");
    ks->src_b = calloc(nb, sizeof *ks->src_b);
    ks->q = calloc(2 * ks->q_cap, sizeof *ks->q);
    ks->threads = calloc((size_t)ks->nthreads, sizeof(pthread_t));
    ks->slots = calloc((size_t)ks->nthreads, sizeof(slot));
    ks->wargs = calloc((size_t)ks->nthreads, sizeof(worker_arg));
    ks->loops = calloc((size_t)ks->nloops, sizeof(hs_loop));
    if (!ks->src_b || !ks->q || !ks->threads || !ks->slots || !ks->wargs || !ks->loops) {
        free(ks->slots);
        ks->slots = NULL;
        return cl_err_nomem(err);
    }
    for (int i = 0; i < ks->nthreads; i++) {
        pthread_mutex_init(&ks->slots[i].lock, NULL);
        ks->slots[i].fd = -1;
        ks->wargs[i].ks = ks;
        ks->wargs[i].slot = &ks->slots[i];
    }
    struct timeval hs = {ks->hs_timeout_ms / 1000, (ks->hs_timeout_ms % 1000) * 1000};
    struct timeval dr = {DRAIN_MS / 1000, (DRAIN_MS % 1000) * 1000}, tick = {1, 0};
    for (int i = 0; i < ks->nloops; i++) {
        hs_loop *l = &ks->loops[i];
        l->ks = ks;
        if (!(l->base = event_base_new()) || !(l->hs_tv = event_base_init_common_timeout(l->base, &hs)) ||
            !(l->drain_tv = event_base_init_common_timeout(l->base, &dr)) ||
            !(l->accept_ev = event_new(l->base, ks->listen_fd, EV_READ | EV_PERSIST, on_accept, l)) ||
            !(l->resume_ev = evtimer_new(l->base, on_resume, l)) ||
            !(l->stop_ev = event_new(l->base, -1, 0, on_stop, l)) ||
            (i == 0 && !(l->tick_ev = event_new(l->base, -1, EV_PERSIST, on_tick, l))) ||
            event_add(l->accept_ev, NULL) != 0 || (l->tick_ev && event_add(l->tick_ev, &tick) != 0))
            return cl_err_set(err, CL_E_NOMEM, "cannot create handshake event loop %d", i + 1);
    }
    return 0;
}

static int start_threads(cl_keyserver *ks, cl_err *err)
{
    int e = pthread_create(&ks->watchdog, NULL, watchdog, ks);
    if (e != 0)
        return cl_err_errno(err, CL_E_NOMEM, e, "cannot start the watchdog thread");
    ks->watchdog_started = true;
    for (; ks->nthreads_started < ks->nthreads; ks->nthreads_started++)
        if ((e = pthread_create(&ks->threads[ks->nthreads_started], NULL, worker, &ks->wargs[ks->nthreads_started])))
            return cl_err_errno(err, CL_E_NOMEM, e, "cannot start worker thread %d", ks->nthreads_started + 1);
    for (int i = 0; i < ks->nloops; i++) {
        if ((e = pthread_create(&ks->loops[i].thread, NULL, loop_main, &ks->loops[i])))
            return cl_err_errno(err, CL_E_NOMEM, e, "cannot start handshake thread %d", i + 1);
        ks->loops[i].started = true;
    }
    return 0;
}

cl_keyserver *cl_keyserver_start(const cl_keyserver_config *cfg, cl_err *err)
{
    pthread_once(&g_conn_once, conn_idx_init);
    if (g_conn_idx < 0 || g_evthread_rc != 0) {
        if (g_conn_idx < 0)
            cl_err_ssl(err, CL_E_CRYPTO, "cannot allocate SSL ex_data");
        else
            cl_err_set(err, CL_E_INTERNAL, "libevent has no pthread support");
        cl_policy_free(cfg->policy);
        return NULL;
    }
    cl_keyserver *ks = calloc(1, sizeof(*ks));
    if (!ks) {
        cl_err_nomem(err);
        cl_policy_free(cfg->policy);
        return NULL;
    }
    ks->listen_fd = -1;
    pthread_mutex_init(&ks->pol_lock, NULL);
    ks->io_timeout_ms = cfg->io_timeout_ms > 0 ? cfg->io_timeout_ms : 10000;
    ks->conn_timeout_ms = cfg->connection_timeout_ms > 0 ? cfg->connection_timeout_ms : 30000;
    ks->nthreads = cfg->threads > 0 ? cfg->threads : 32;
    uint8_t *mk = NULL;
    char *mk_path = NULL;
    EVP_PKEY *key = NULL;

    /* policy */
    cl_policy *p = cfg->policy;
    if (!p) {
        if (!cfg->policy_file) {
            cl_err_set(err, CL_E_INVALID, "a policy is required (--policy FILE, see docs/policy.md)");
            goto fail;
        }
        if (!(ks->policy_file = strdup(cfg->policy_file)) || !(p = cl_policy_load(cfg->policy_file, err)))
            goto fail;
    } else if (cfg->policy_file) {
        ks->policy_file = strdup(cfg->policy_file);
    }
    ks->policy = calloc(1, sizeof(policy_ref));
    if (!ks->policy) {
        cl_policy_free(p);
        cl_err_nomem(err);
        goto fail;
    }
    ks->policy->p = p;
    atomic_init(&ks->policy->refs, 1);
    if (cl_policy_identity_count(p) == 0)
        CL_WARN("keyserver", "the policy has no identities: every request will be denied");

    /* verifier */
    if (cfg->verifier) {
        ks->verifier = cfg->verifier;
    } else {
        ks->own_verifier = true;
        if (!(ks->verifier = cl_attest_verifier_new(err)))
            goto fail;
        for (size_t i = 0; i < cfg->trust_sim_count; i++)
            if (cl_attest_verifier_trust_sim_file(ks->verifier, cfg->trust_sim_certs[i], err) != 0)
                goto fail;
        if (dcap_setup(ks, cfg, err) != 0)
            goto fail;
    }
    ks->vctx.verifier = ks->verifier;
    ks->vctx.policy = policy_cb;
    ks->vctx.policy_arg = ks;
    ks->vctx.complete_on_failure = true; /* refused clients are told why: the denial frame (deny_step) */

    /* store */
    if (!cfg->db_file) {
        cl_err_set(err, CL_E_INVALID, "a database is required (--db FILE)");
        goto fail;
    }
    if (!(mk_path = cl_store_master_key_path(cfg->master_key_file, err)))
        goto fail;
    mk = cl_secmem_alloc(CL_KS_MASTER_KEY_LEN, err);
    if (!mk || cl_store_master_key_load(mk_path, false, mk, err) != 0)
        goto fail;
    if (!(ks->budget = ks_budget_new(cfg->locked_memory_per_connection, cfg->locked_memory_total, -1, err)))
        goto fail;
    if (!(ks->store = cl_store_open(cfg->db_file, mk, err)))
        goto fail;

    /* TLS */
    ks->ctx = SSL_CTX_new(TLS_server_method());
    if (!ks->ctx || !SSL_CTX_set_min_proto_version(ks->ctx, cfg->allow_tls12 ? TLS1_2_VERSION : TLS1_3_VERSION)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot create the TLS context");
        goto fail;
    }
    if (!cfg->cert_file || !cfg->key_file) {
        cl_err_set(err, CL_E_INVALID, "--cert and --key are required (e.g. from `cloister tls init`)");
        goto fail;
    }
    if (SSL_CTX_use_certificate_chain_file(ks->ctx, cfg->cert_file) != 1) {
        cl_err_ssl(err, CL_E_FORMAT, "cannot load server certificate '%s'", cfg->cert_file);
        goto fail;
    }
    /* read into secure memory and decoded there: with the secure heap, the key stays in locked memory */
    if (!(key = cl_pki_key_load(cfg->key_file, err))) {
        cl_err_prefix(err, "cannot load server key");
        goto fail;
    }
    if (SSL_CTX_use_PrivateKey(ks->ctx, key) != 1 || SSL_CTX_check_private_key(ks->ctx) != 1) {
        cl_err_ssl(err, CL_E_KEY, "server key '%s' does not match the certificate '%s'", cfg->key_file,
                   cfg->cert_file);
        goto fail;
    }
    /* every connection attests afresh: no resumption (1.2 tickets, 1.3 tickets, session cache) */
    SSL_CTX_set_num_tickets(ks->ctx, 0);
    SSL_CTX_set_session_cache_mode(ks->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ks->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    /* an idle connection in its handshake holds no read or write buffer */
    SSL_CTX_set_mode(ks->ctx, SSL_MODE_RELEASE_BUFFERS);
    if (cfg->allow_tls12)
        CL_WARN("keyserver", "accepting TLS 1.2 clients (--allow-tls12)");
    if (cl_ratls_ssl_ctx_require_peer(ks->ctx, &ks->vctx, err) != 0)
        goto fail;

    if (listen_on(ks, cfg->listen ? cfg->listen : "0.0.0.0:4433", err) != 0)
        goto fail;
    int fl = fcntl(ks->listen_fd, F_GETFL);
    if (fl < 0 || fcntl(ks->listen_fd, F_SETFL, fl | O_NONBLOCK) != 0) {
        cl_err_errno(err, CL_E_IO, errno, "cannot make the listening socket non-blocking");
        goto fail;
    }
    signal(SIGPIPE, SIG_IGN);
    if (set_limits(ks, cfg, err) != 0 || setup_network(ks, err) != 0 || start_threads(ks, err) != 0)
        goto fail;
    EVP_PKEY_free(key);
    cl_secmem_free(mk);
    free(mk_path);
    return ks;
fail:
    stop_threads(ks);
    EVP_PKEY_free(key);
    cl_secmem_free(mk);
    free(mk_path);
    ks_free(ks);
    return NULL;
}

int cl_keyserver_port(const cl_keyserver *ks) { return ks->port; }

void cl_keyserver_locked_memory(const cl_keyserver *ks, size_t *in_use, size_t *peak)
{
    ks_budget_stats(ks->budget, in_use, peak);
}

void cl_keyserver_stop(cl_keyserver *ks)
{
    if (!ks)
        return;
    stop_threads(ks);
    unverified_summary(ks); /* what the last seconds left uncounted in the log */
    ks_free(ks);
}

int cl_keyserver_run(const cl_keyserver_config *cfg, cl_err *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* the server's threads inherit the mask; signals go to sigwait below */
    cl_keyserver *ks = cl_keyserver_start(cfg, err);
    if (!ks)
        return -1;
    CL_INFO("keyserver", "listening on port %d (TLS 1.3, RA-TLS clients only); SIGHUP reloads the policy%s",
            ks->port, ks->dcap ? " and the DCAP collateral" : "");
    for (;;) {
        int sig = 0;
        if (sigwait(&set, &sig) != 0)
            continue;
        if (sig == SIGHUP) {
            cl_err rerr = {0};
            cl_keyserver_reload_policy(ks, &rerr);
            cl_err derr = {0};
            cl_keyserver_reload_dcap(ks, &derr);
            continue;
        }
        CL_INFO("keyserver", "signal %d: finishing connections in progress and stopping", sig);
        break;
    }
    cl_keyserver_stop(ks);
    return 0;
}
