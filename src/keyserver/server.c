/* server.c — the key server's network side: a fixed pool of worker threads all blocking in accept()
 * on one listening socket (no global lock; the kernel spreads connections), each doing a TLS 1.3
 * handshake that requires and verifies an RA-TLS client certificate against the policy snapshot the
 * connection started with, then handing the connection to release.c for its one request. Also the
 * policy and DCAP collateral snapshots, and the SIGHUP/SIGTERM loop of `cloister keyserver serve`. */
#include "ks_internal.h"

#include "cloister/dcap.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

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
    pthread_t *threads;
    int nthreads;
    atomic_bool stopping;
    int io_timeout_ms;
    int conn_timeout_ms;
    slot *slots;
    worker_arg *wargs;
    pthread_t watchdog;
    bool watchdog_started;
};

typedef ks_conn conn;

static int g_conn_idx = -1;
static pthread_once_t g_conn_once = PTHREAD_ONCE_INIT;
static void conn_idx_init(void) { g_conn_idx = SSL_get_ex_new_index(0, (void *)"cloister ks conn", NULL, NULL, NULL); }

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

int cl_keyserver_split_hostport(const char *s, char *host, size_t size, int *port, int default_port, cl_err *err)
{
    const char *colon;
    size_t hl;
    if (s[0] == '[') {
        const char *end = strchr(s, ']');
        if (!end)
            return cl_err_set(err, CL_E_INVALID, "'%s': missing ']'", s);
        hl = (size_t)(end - s - 1);
        if (hl >= size)
            return cl_err_set(err, CL_E_INVALID, "'%s': host too long", s);
        memcpy(host, s + 1, hl);
        host[hl] = 0;
        colon = end[1] == ':' ? end + 1 : NULL;
        if (!colon && end[1])
            return cl_err_set(err, CL_E_INVALID, "'%s': expected [HOST]:PORT", s);
    } else {
        colon = strrchr(s, ':');
        hl = colon ? (size_t)(colon - s) : strlen(s);
        if (hl >= size || hl == 0)
            return cl_err_set(err, CL_E_INVALID, "'%s': expected HOST:PORT", s);
        memcpy(host, s, hl);
        host[hl] = 0;
    }
    if (!colon) {
        *port = default_port;
        return 0;
    }
    char *end;
    long p = strtol(colon + 1, &end, 10);
    if (!colon[1] || *end || p < 0 || p > 65535)
        return cl_err_set(err, CL_E_INVALID, "'%s': port must be 0..65535", s);
    *port = (int)p;
    return 0;
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
    CL_INFO("keyserver", "policy reloaded from %s (%zu identities)", ks->policy_file, cl_policy_identity_count(p));
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

static void handshake_failed(conn *c, SSL *ssl)
{
    const cl_err *why = cl_ratls_peer_error(ssl);
    unsigned long e = ERR_peek_error();
    bool no_cert = !why && ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE;
    ERR_clear_error();
    if (!why && !no_cert) {
        CL_DEBUG("keyserver", "%s: TLS handshake failed", c->peer);
        return;
    }
    /* a policy refusal is audited with the decision's whole reason (the error message is bounded) */
    bool denied = !no_cert && c->have_claims && !c->decision.allowed && c->decision.reason;
    ks_audit_refusal(c, "tls", no_cert ? "no client certificate (RA-TLS required)" : denied ? c->decision.reason
                                                                                            : why->msg);
}

static void handle(cl_keyserver *ks, int fd, const struct sockaddr_storage *sa)
{
    conn c = {.store = ks->store, .budget = ks->budget};
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
    snprintf(c.peer, sizeof c.peer, "%s:%d", host, port);
    cl_net_set_timeouts(fd, ks->io_timeout_ms);
    c.pol = policy_acquire(ks);
    c.policy = c.pol->p;
    SSL *ssl = SSL_new(ks->ctx);
    if (!ssl || !SSL_set_fd(ssl, fd) || !SSL_set_ex_data(ssl, g_conn_idx, &c)) {
        CL_ERROR("keyserver", "cannot set up a TLS connection (out of memory?)");
        goto out;
    }
    if (SSL_accept(ssl) != 1) {
        handshake_failed(&c, ssl);
        /* close gracefully so the alert reaches the client instead of being lost to a reset */
        shutdown(fd, SHUT_WR);
        cl_net_set_timeouts(fd, 250);
        char sink[4096];
        for (int i = 0; i < 16 && read(fd, sink, sizeof sink) > 0; i++)
            ;
        goto out;
    }
    if (!cl_ratls_peer_claims(ssl) || !c.have_claims || !c.decision.allowed) {
        CL_ERROR("keyserver", "%s: handshake completed without verified claims; closing", c.peer);
        goto out;
    }
    ks_serve_request(&c, ssl);
    SSL_shutdown(ssl);
out:
    ERR_clear_error();
    SSL_free(ssl);
    cl_policy_decision_clear(&c.decision);
    policy_release(c.pol); /* the caller closes fd */
}

static void *worker(void *arg)
{
    worker_arg *w = arg;
    cl_keyserver *ks = w->ks;
    while (!atomic_load(&ks->stopping)) {
        struct sockaddr_storage sa;
        socklen_t sl = sizeof sa;
        int fd = accept4(ks->listen_fd, (struct sockaddr *)&sa, &sl, SOCK_CLOEXEC);
        if (fd < 0) {
            if (atomic_load(&ks->stopping))
                break;
            if (errno == EMFILE || errno == ENFILE || errno == ENOMEM || errno == ENOBUFS)
                usleep(10000);
            continue;
        }
        pthread_mutex_lock(&w->slot->lock);
        w->slot->fd = fd;
        w->slot->deadline_ns = cl_now_ns() + (uint64_t)ks->conn_timeout_ms * 1000000u;
        pthread_mutex_unlock(&w->slot->lock);
        handle(ks, fd, &sa);
        pthread_mutex_lock(&w->slot->lock);
        w->slot->fd = -1;
        pthread_mutex_unlock(&w->slot->lock);
        close(fd);
    }
    return NULL;
}

static void *watchdog(void *arg)
{
    cl_keyserver *ks = arg;
    while (!atomic_load(&ks->stopping)) {
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

/* ---------------------------------------------------------------- start/stop */

static int listen_on(cl_keyserver *ks, const char *spec, cl_err *err)
{
    char host[256];
    int port;
    if (cl_keyserver_split_hostport(spec, host, sizeof host, &port, CL_KS_DEFAULT_PORT, err) != 0)
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

static void ks_free(cl_keyserver *ks)
{
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
    pthread_mutex_destroy(&ks->pol_lock);
    free(ks);
}

cl_keyserver *cl_keyserver_start(const cl_keyserver_config *cfg, cl_err *err)
{
    pthread_once(&g_conn_once, conn_idx_init);
    if (g_conn_idx < 0) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot allocate SSL ex_data");
        cl_policy_free(cfg->policy);
        return NULL;
    }
    cl_keyserver *ks = calloc(1, sizeof(*ks));
    if (!ks) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
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
        cl_err_set(err, CL_E_NOMEM, "out of memory");
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
    if (SSL_CTX_use_PrivateKey_file(ks->ctx, cfg->key_file, SSL_FILETYPE_PEM) != 1 ||
        SSL_CTX_check_private_key(ks->ctx) != 1) {
        cl_err_ssl(err, CL_E_FORMAT, "cannot load server key '%s' (or it does not match the certificate)",
                   cfg->key_file);
        goto fail;
    }
    /* every connection attests afresh: no resumption (1.2 tickets, 1.3 tickets, session cache) */
    SSL_CTX_set_num_tickets(ks->ctx, 0);
    SSL_CTX_set_session_cache_mode(ks->ctx, SSL_SESS_CACHE_OFF);
    SSL_CTX_set_options(ks->ctx, SSL_OP_NO_TICKET | SSL_OP_NO_RENEGOTIATION);
    if (cfg->allow_tls12)
        CL_WARN("keyserver", "accepting TLS 1.2 clients (--allow-tls12)");
    if (cl_ratls_ssl_ctx_require_peer(ks->ctx, &ks->vctx, err) != 0)
        goto fail;

    if (listen_on(ks, cfg->listen ? cfg->listen : "0.0.0.0:4433", err) != 0)
        goto fail;
    signal(SIGPIPE, SIG_IGN);
    ks->threads = calloc((size_t)ks->nthreads, sizeof(pthread_t));
    ks->slots = calloc((size_t)ks->nthreads, sizeof(slot));
    ks->wargs = calloc((size_t)ks->nthreads, sizeof(worker_arg));
    if (!ks->threads || !ks->slots || !ks->wargs) {
        free(ks->slots);
        ks->slots = NULL;
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto fail;
    }
    for (int i = 0; i < ks->nthreads; i++) {
        pthread_mutex_init(&ks->slots[i].lock, NULL);
        ks->slots[i].fd = -1;
        ks->wargs[i].ks = ks;
        ks->wargs[i].slot = &ks->slots[i];
    }
    int e = pthread_create(&ks->watchdog, NULL, watchdog, ks);
    if (e != 0) {
        cl_err_errno(err, CL_E_NOMEM, e, "cannot start the watchdog thread");
        goto fail;
    }
    ks->watchdog_started = true;
    for (int i = 0; i < ks->nthreads; i++) {
        e = pthread_create(&ks->threads[i], NULL, worker, &ks->wargs[i]);
        if (e != 0) {
            cl_err_errno(err, CL_E_NOMEM, e, "cannot start worker thread %d", i);
            atomic_store(&ks->stopping, true);
            shutdown(ks->listen_fd, SHUT_RDWR);
            for (int j = 0; j < i; j++)
                pthread_join(ks->threads[j], NULL);
            pthread_join(ks->watchdog, NULL);
            ks->watchdog_started = false;
            goto fail;
        }
    }
    cl_secmem_free(mk);
    free(mk_path);
    return ks;
fail:
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
    atomic_store(&ks->stopping, true);
    shutdown(ks->listen_fd, SHUT_RDWR);
    for (int i = 0; i < ks->nthreads; i++)
        pthread_join(ks->threads[i], NULL);
    if (ks->watchdog_started)
        pthread_join(ks->watchdog, NULL);
    ks_free(ks);
}

int cl_keyserver_run(const cl_keyserver_config *cfg, cl_err *err)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGHUP);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set, NULL); /* workers inherit the mask; signals go to sigwait below */
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
