/* server.c — cl_serve_server: the main event loop that carries the gRPC front end and the first REST
 * listener, further REST event loops on their own threads (rest_threads; each listens on the same
 * port with SO_REUSEPORT, and the kernel hands each new connection to one of them), the listening
 * sockets, TLS contexts, worker pool, metrics (/monitoring/prometheus/metrics: requests by model,
 * latency histograms by model, pool, memory and TLS figures, the process's CPU, memory, fds and
 * threads from /proc, build info), the access log (cl_serve_request_done) and graceful shutdown
 * (stop accepting, GOAWAY to gRPC clients, let queued and running requests, and requests still
 * arriving, finish within request_timeout_ms, then stop every loop and return from
 * cl_serve_server_run), and giving memory kept for reuse back to the system after a burst
 * (on_release_tick).
 * Thread-safety: cl_serve_server_stop() from any thread; metrics under their own mutex; access-log
 * lines are written outside it, each with one write (cl_log_sink); each REST
 * loop's connections belong to its thread; the rest belongs to the thread that runs the main loop. The
 * process ignores SIGPIPE once a server exists (writes to vanished clients must fail with EPIPE,
 * not kill the server). */
#include "serve_int.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include <malloc.h>

#include <event2/event.h>
#include <event2/thread.h>

#define METRIC_MAX 256
#define LATENCY_MAX 64
#define MODEL_NAME_MAX 128
/* request latency buckets: 0.1 ms to 10 s, three a decade (1, 2.5, 5), so a model of a millisecond
 * or less still spreads over several buckets */
static const double buckets_s[] = {0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
                                   0.05,   0.1,     0.25,   0.5,   1,      2.5,   5,    10};
#define NBUCKETS (sizeof buckets_s / sizeof buckets_s[0])

typedef struct metric {
    char model[MODEL_NAME_MAX];
    cl_serve_api api;
    cl_serve_rpc rpc;
    cl_serve_code code;
    uint64_t count;
} metric;

/* One latency histogram: a model (its name; "" for requests that named no served model), API and
 * entrypoint. */
typedef struct latency {
    char model[MODEL_NAME_MAX];
    cl_serve_api api;
    cl_serve_rpc rpc;
    uint64_t bucket[NBUCKETS + 1];
    uint64_t count;
    double sum_s;
} latency;

/* A REST event loop on a thread of its own (the first REST loop is the main loop). */
typedef struct rest_thread {
    cl_serve_rest_loop r;
    pthread_t thread;
    bool started;
    struct event *stop_ev; /* activated by the main loop: stop accepting */
} rest_thread;

struct cl_serve_server {
    cl_serve_config cfg;
    cl_serve_registry *reg;
    struct event_base *base;
    int grpc_fd, rest_fd;
    int grpc_port, rest_port;
    SSL_CTX *grpc_ctx, *rest_ctx;
    cl_serve_grpc_listener *grpc;
    cl_serve_rest_loop rest; /* on the main loop */
    /* with cfg.listen_in_run: the bound sockets (owned by their listeners) that cl_serve_server_run
     * still has to listen() on */
    int unlistened[2 + 64];
    unsigned n_unlistened;
    rest_thread *rt;         /* the other REST loops */
    unsigned n_rt;
    cl_serve_pool *pool;
    struct event *stop_ev, *drain_ev, *sig_term, *sig_int, *release_ev;
    /* memory release after bursts (main loop): something may have left freed memory behind since the
     * last release; when calls were last seen running; the model versions at the last look */
    bool release_pending;
    uint64_t busy_ns;
    size_t versions_seen;
    bool stopping;
    const char *tls_mode; /* for the start-up line; cfg.tls is not kept (the caller may free it) */
    uint64_t stop_deadline_ns;
    pthread_mutex_t mmu;
    metric metrics[METRIC_MAX];
    size_t n_metrics;
    uint64_t metrics_dropped;
    latency lat[LATENCY_MAX];
    size_t n_lat;
    uint64_t lat_dropped;
};

static const char *const api_names[] = {"GRPC", "REST"};
static const char *const rpc_names[] = {"predict", "metadata", "status", "reload", "classify", "regress", "multi_inference"};
_Static_assert(CL_ARRAY_LEN(rpc_names) == CL_RPC_COUNT, "a name per rpc");

cl_serve_registry *cl_serve_srv_registry(cl_serve_server *s) { return s->reg; }
const cl_serve_config *cl_serve_srv_config(cl_serve_server *s) { return &s->cfg; }
cl_serve_pool *cl_serve_srv_pool(cl_serve_server *s) { return s->pool; }
uint64_t cl_serve_srv_inline_ns(cl_serve_server *s)
{
    return s->cfg.inline_max_us > 0 ? (uint64_t)s->cfg.inline_max_us * 1000u : 0;
}
int cl_serve_server_grpc_port(const cl_serve_server *s) { return s->grpc_port; }
int cl_serve_server_rest_port(const cl_serve_server *s) { return s->rest_port; }

/* ---------------------------------------------------------------- metrics */

bool cl_serve_access_logging(const cl_serve_server *s) { return s->cfg.access_log != NULL; }

void cl_serve_peer_subject(SSL *ssl, char *buf, size_t cap)
{
    buf[0] = '\0';
    X509 *cert = ssl ? SSL_get0_peer_certificate(ssl) : NULL;
    BIO *b = cert ? BIO_new(BIO_s_mem()) : NULL;
    if (!b)
        return;
    /* RFC 2253, UTF-8 kept as it is (the log's escaping deals with it), no multi-line */
    if (X509_NAME_print_ex(b, X509_get_subject_name(cert), 0, XN_FLAG_RFC2253 & ~ASN1_STRFLGS_ESC_MSB) >= 0) {
        int n = BIO_read(b, buf, (int)cap - 1);
        buf[n > 0 ? n : 0] = '\0';
    }
    BIO_free(b);
}

static const char *const api_lower[] = {"grpc", "rest"};

/* The access-log line of a request: the message "request", all the rest in fields. */
static void access_log(cl_serve_server *s, const cl_serve_request_info *r, uint64_t latency_ns)
{
    const char *rpc = (unsigned)r->rpc < CL_RPC_COUNT ? rpc_names[r->rpc] : NULL;
    cl_log_field f[16];
    size_t n = 0;
    f[n++] = CL_LOGF_S("api", api_lower[r->api]);
    f[n++] = CL_LOGF_S("method", r->method);
    f[n++] = CL_LOGF_S("path", r->path);
    f[n++] = CL_LOGF_S("rpc", rpc);
    f[n++] = CL_LOGF_S("model", r->model && *r->model ? r->model : NULL);
    if (r->version > 0)
        f[n++] = CL_LOGF_I("version", r->version);
    f[n++] = CL_LOGF_S("status", cl_serve_code_name(r->code));
    if (r->http_status)
        f[n++] = CL_LOGF_I("http_status", r->http_status);
    uint64_t latency_us = latency_ns / 1000; /* to the microsecond */
    f[n++] = CL_LOGF_R("latency_ms", (double)latency_us / 1e3);
    f[n++] = CL_LOGF_U("bytes_in", r->bytes_in);
    f[n++] = CL_LOGF_U("bytes_out", r->bytes_out);
    f[n++] = CL_LOGF_S("peer", r->peer);
    f[n++] = CL_LOGF_S("client", r->client && *r->client ? r->client : NULL);
    cl_log_sink_write(s->cfg.access_log, CL_LOG_INFO, "access", f, n, "request");
}

void cl_serve_request_done(cl_serve_server *s, const cl_serve_request_info *r)
{
    uint64_t latency_ns = cl_now_ns() - r->start_ns;
    if (s->cfg.access_log)
        access_log(s, r, latency_ns);
    if ((unsigned)r->rpc >= CL_RPC_COUNT)
        return;
    cl_serve_api api = r->api;
    cl_serve_rpc rpc = r->rpc;
    cl_serve_code code = r->code;
    const char *model = r->model ? r->model : "";
    /* the histograms are labelled with the model only when it is served: a client naming models
     * that do not exist must not fill the table */
    const char *lat_model = code == CL_SC_NOT_FOUND ? "" : model;
    pthread_mutex_lock(&s->mmu);
    size_t i = 0;
    for (; i < s->n_metrics; i++) {
        metric *m = &s->metrics[i];
        if (m->api == api && m->rpc == rpc && m->code == code && strncmp(m->model, model, MODEL_NAME_MAX - 1) == 0)
            break;
    }
    if (i == s->n_metrics && i < METRIC_MAX) {
        metric *m = &s->metrics[s->n_metrics++];
        snprintf(m->model, sizeof m->model, "%s", model);
        m->api = api;
        m->rpc = rpc;
        m->code = code;
    }
    if (i < METRIC_MAX)
        s->metrics[i].count++;
    else
        s->metrics_dropped++;
    size_t k = 0;
    for (; k < s->n_lat; k++) {
        latency *l = &s->lat[k];
        if (l->api == api && l->rpc == rpc && strncmp(l->model, lat_model, MODEL_NAME_MAX - 1) == 0)
            break;
    }
    if (k == s->n_lat && k < LATENCY_MAX) {
        latency *l = &s->lat[s->n_lat++];
        snprintf(l->model, sizeof l->model, "%s", lat_model);
        l->api = api;
        l->rpc = rpc;
    }
    if (k < LATENCY_MAX) {
        latency *l = &s->lat[k];
        double sec = (double)latency_ns / 1e9;
        size_t b = 0;
        while (b < NBUCKETS && sec > buckets_s[b])
            b++;
        l->bucket[b]++;
        l->count++;
        l->sum_s += sec;
    } else {
        s->lat_dropped++;
    }
    pthread_mutex_unlock(&s->mmu);
}

/* Prometheus label values escape backslash, quote and newline, and must be UTF-8: a byte that is
 * not part of a UTF-8 sequence (a model name a client sent) becomes '?'. */
static void label_escape(const char *in, char *out, size_t cap)
{
    size_t o = 0, left = strlen(in);
    while (*in && o + 5 < cap) {
        size_t k = cl_utf8_seq_len((const unsigned char *)in, left);
        if (*in == '\\' || *in == '"') {
            out[o++] = '\\';
            out[o++] = *in;
        } else if (*in == '\n') {
            out[o++] = '\\';
            out[o++] = 'n';
        } else if (k == 0) {
            out[o++] = '?';
        } else {
            memcpy(out + o, in, k);
            o += k;
            in += k - 1;
            left -= k - 1;
        }
        in++;
        left--;
    }
    out[o] = '\0';
}

static void count_models(void *arg, const char *name, int64_t version) { (*(size_t *)arg)++; }

/* The standard process metrics of Prometheus clients, from /proc/self (each left out when it cannot
 * be read, e.g. where a TEE's library OS emulates /proc only in part). */
static void process_metrics(cl_strbuf *b)
{
    long tick = sysconf(_SC_CLK_TCK), page = sysconf(_SC_PAGESIZE);
    char buf[1024];
    FILE *f = fopen("/proc/self/stat", "re");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    if (f)
        fclose(f);
    buf[n] = '\0';
    /* the fields after the command name, which may hold spaces and parentheses: from field 3 on */
    const char *p = strrchr(buf, ')');
    unsigned long long utime = 0, stime = 0, start = 0, vsize = 0;
    long threads = 0, rss = 0;
    if (p && tick > 0 &&
        sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu %*d %*d %*d %*d %ld %*d %llu %llu %ld",
               &utime, &stime, &threads, &start, &vsize, &rss) == 6) {
        cl_strbuf_fmt(b, "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n"
                      "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total %.2f\n",
                      (double)(utime + stime) / (double)tick);
        cl_strbuf_fmt(b, "# HELP process_resident_memory_bytes Resident memory size in bytes.\n"
                      "# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes %lld\n",
                      (long long)rss * page);
        cl_strbuf_fmt(b, "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n"
                      "# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes %llu\n", vsize);
        cl_strbuf_fmt(b, "# HELP process_threads Number of OS threads in the process.\n"
                      "# TYPE process_threads gauge\nprocess_threads %ld\n", threads);
        /* the start time in ticks after boot, plus the boot time */
        f = fopen("/proc/stat", "re");
        unsigned long long btime = 0;
        char l[256];
        while (f && fgets(l, sizeof l, f))
            if (sscanf(l, "btime %llu", &btime) == 1)
                break;
        if (f)
            fclose(f);
        if (btime)
            cl_strbuf_fmt(b, "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n"
                          "# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds %.2f\n",
                          (double)btime + (double)start / (double)tick);
    }
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        long fds = 0;
        for (struct dirent *e; (e = readdir(d));)
            fds += e->d_name[0] != '.';
        closedir(d);
        cl_strbuf_fmt(b, "# HELP process_open_fds Number of open file descriptors.\n"
                      "# TYPE process_open_fds gauge\nprocess_open_fds %ld\n", fds - 1 /* the directory's own */);
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur != RLIM_INFINITY)
        cl_strbuf_fmt(b, "# HELP process_max_fds Maximum number of open file descriptors.\n"
                      "# TYPE process_max_fds gauge\nprocess_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
}

char *cl_serve_metrics_render(cl_serve_server *s)
{
    cl_strbuf b = {0};
    cl_strbuf_fmt(&b, "# HELP :tensorflow:serving:request_count Requests by model, API, entrypoint and status.\n"
               "# TYPE :tensorflow:serving:request_count counter\n");
    pthread_mutex_lock(&s->mmu);
    for (size_t i = 0; i < s->n_metrics; i++) {
        const metric *m = &s->metrics[i];
        char model[2 * MODEL_NAME_MAX + 1];
        label_escape(m->model, model, sizeof model);
        cl_strbuf_fmt(&b, ":tensorflow:serving:request_count{model_name=\"%s\",API=\"%s\",entrypoint=\"%s\",status=\"%s\"} "
               "%llu\n", model, rpc_names[m->rpc], api_names[m->api], cl_serve_code_name(m->code),
               (unsigned long long)m->count);
    }
    cl_strbuf_fmt(&b, "# HELP :tensorflow:serving:request_latency Request latency in seconds, by model, API and "
               "entrypoint.\n# TYPE :tensorflow:serving:request_latency histogram\n");
    for (size_t i = 0; i < s->n_lat; i++) {
        const latency *l = &s->lat[i];
        char model[2 * MODEL_NAME_MAX + 1];
        label_escape(l->model, model, sizeof model);
        char labels[2 * MODEL_NAME_MAX + 64];
        snprintf(labels, sizeof labels, "model_name=\"%s\",API=\"%s\",entrypoint=\"%s\"", model, rpc_names[l->rpc],
                 api_names[l->api]);
        uint64_t cum = 0;
        for (size_t k = 0; k <= NBUCKETS; k++) {
            cum += l->bucket[k];
            if (k < NBUCKETS)
                cl_strbuf_fmt(&b, ":tensorflow:serving:request_latency_bucket{%s,le=\"%g\"} %llu\n", labels, buckets_s[k],
                              (unsigned long long)cum);
            else
                cl_strbuf_fmt(&b, ":tensorflow:serving:request_latency_bucket{%s,le=\"+Inf\"} %llu\n", labels,
                              (unsigned long long)cum);
        }
        cl_strbuf_fmt(&b, ":tensorflow:serving:request_latency_sum{%s} %.9f\n", labels, l->sum_s);
        cl_strbuf_fmt(&b, ":tensorflow:serving:request_latency_count{%s} %llu\n", labels, (unsigned long long)l->count);
    }
    uint64_t dropped = s->metrics_dropped, lat_dropped = s->lat_dropped;
    pthread_mutex_unlock(&s->mmu);
    size_t models = 0;
    cl_serve_registry_foreach(s->reg, count_models, &models);
    cl_strbuf_fmt(&b, "# HELP cloister_serve_model_versions Model versions loaded.\n# TYPE cloister_serve_model_versions "
               "gauge\ncloister_serve_model_versions %zu\n", models);
    cl_strbuf_fmt(&b, "# HELP cloister_serve_requests_inflight Requests queued or running on workers.\n"
               "# TYPE cloister_serve_requests_inflight gauge\ncloister_serve_requests_inflight %u\n",
           s->pool ? cl_serve_pool_inflight(s->pool) : 0);
    if (s->pool) {
        cl_strbuf_fmt(&b, "# HELP cloister_serve_requests_queued Requests waiting for a worker.\n"
                   "# TYPE cloister_serve_requests_queued gauge\ncloister_serve_requests_queued %u\n",
               cl_serve_pool_queued(s->pool));
        uint64_t hist[CL_SERVE_BATCH_BUCKETS + 1], rows = 0, cum = 0;
        if (cl_serve_pool_batch_stats(s->pool, hist, &rows)) {
            cl_strbuf_fmt(&b, "# HELP cloister_serve_batch_size Rows per model call with dynamic batching.\n"
                       "# TYPE cloister_serve_batch_size histogram\n");
            for (unsigned k = 0; k <= CL_SERVE_BATCH_BUCKETS; k++) {
                cum += hist[k];
                if (k < CL_SERVE_BATCH_BUCKETS)
                    cl_strbuf_fmt(&b, "cloister_serve_batch_size_bucket{le=\"%u\"} %llu\n", 1u << k, (unsigned long long)cum);
                else
                    cl_strbuf_fmt(&b, "cloister_serve_batch_size_bucket{le=\"+Inf\"} %llu\n", (unsigned long long)cum);
            }
            cl_strbuf_fmt(&b, "cloister_serve_batch_size_sum %llu\ncloister_serve_batch_size_count %llu\n",
                   (unsigned long long)rows, (unsigned long long)cum);
        }
    }
    /* TLS handshakes by port, from OpenSSL's counters of each context (full and resumed), and the
     * sessions held for resumption (tls.c: session_policy) */
    const struct { const char *port; SSL_CTX *ctx; } tls[] = {{"grpc", s->grpc_ctx}, {"rest", s->rest_ctx}};
    if (s->grpc_ctx || s->rest_ctx)
        cl_strbuf_fmt(&b, "# HELP cloister_serve_tls_handshakes_total TLS handshakes completed, by port and whether the "
                   "session was resumed.\n# TYPE cloister_serve_tls_handshakes_total counter\n");
    for (size_t i = 0; i < CL_ARRAY_LEN(tls); i++) {
        if (!tls[i].ctx)
            continue;
        long good = SSL_CTX_sess_accept_good(tls[i].ctx), hits = SSL_CTX_sess_hits(tls[i].ctx);
        cl_strbuf_fmt(&b, "cloister_serve_tls_handshakes_total{port=\"%s\",session=\"new\"} %ld\n"
                   "cloister_serve_tls_handshakes_total{port=\"%s\",session=\"resumed\"} %ld\n", tls[i].port,
                   good > hits ? good - hits : 0, tls[i].port, hits);
    }
    if (s->grpc_ctx || s->rest_ctx)
        cl_strbuf_fmt(&b, "# HELP cloister_serve_tls_sessions_cached TLS sessions held for resumption, by port.\n"
                   "# TYPE cloister_serve_tls_sessions_cached gauge\n");
    for (size_t i = 0; i < CL_ARRAY_LEN(tls); i++)
        if (tls[i].ctx)
            cl_strbuf_fmt(&b, "cloister_serve_tls_sessions_cached{port=\"%s\"} %ld\n", tls[i].port,
                       SSL_CTX_sess_number(tls[i].ctx));
    if (s->pool) {
        uint64_t refused[2];
        cl_serve_pool_memory_refused(s->pool, refused);
        cl_strbuf_fmt(&b, "# HELP cloister_serve_memory_held_bytes Memory held by requests in flight (their share of "
                   "--memory_budget_mb).\n# TYPE cloister_serve_memory_held_bytes gauge\n"
                   "cloister_serve_memory_held_bytes %zu\n"
                   "# HELP cloister_serve_memory_budget_bytes The memory requests in flight may hold together.\n"
                   "# TYPE cloister_serve_memory_budget_bytes gauge\ncloister_serve_memory_budget_bytes %zu\n"
                   "# HELP cloister_serve_memory_refused_total Requests refused by the memory limits, by limit.\n"
                   "# TYPE cloister_serve_memory_refused_total counter\n"
                   "cloister_serve_memory_refused_total{limit=\"request\"} %llu\n"
                   "cloister_serve_memory_refused_total{limit=\"budget\"} %llu\n",
                   cl_serve_pool_memory_held(s->pool), s->cfg.memory_budget_bytes, (unsigned long long)refused[0],
                   (unsigned long long)refused[1]);
    }
    cl_strbuf_fmt(&b, "# HELP cloister_serve_metric_series_dropped_total Requests not counted because the label table "
               "of the metric is full.\n# TYPE cloister_serve_metric_series_dropped_total counter\n"
               "cloister_serve_metric_series_dropped_total{metric=\"request_count\"} %llu\n"
               "cloister_serve_metric_series_dropped_total{metric=\"request_latency\"} %llu\n",
               (unsigned long long)dropped, (unsigned long long)lat_dropped);
    process_metrics(&b);
    char v[3][2 * MODEL_NAME_MAX + 1];
    label_escape(s->cfg.build_version ? s->cfg.build_version : "unknown", v[0], sizeof v[0]);
    label_escape(s->cfg.build_engine_isa ? s->cfg.build_engine_isa : "unknown", v[1], sizeof v[1]);
    label_escape(s->cfg.build_evidence ? s->cfg.build_evidence : "unknown", v[2], sizeof v[2]);
    cl_strbuf_fmt(&b, "# HELP cloister_build_info The server's version, the instruction set its engine runs on and "
               "its attestation evidence provider.\n# TYPE cloister_build_info gauge\n"
               "cloister_build_info{version=\"%s\",engine_isa=\"%s\",evidence_provider=\"%s\"} 1\n", v[0], v[1], v[2]);
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    return b.p;
}

/* ---------------------------------------------------------------- sockets */

/* A listening socket; with reuseport, further sockets may bind the same port (each REST loop has its
 * own, and the kernel spreads new connections over them: loops sharing one socket would not share
 * the work, since whichever wakes first accepts a whole burst). For the first socket of a shared
 * port, a port another server already listens on is refused even if that server allowed sharing
 * (SO_REUSEPORT would otherwise let two servers of one user split its connections). */
typedef enum { PORT_OWN, PORT_SHARED_FIRST, PORT_SHARED_MORE } port_use;
#define LISTEN_BACKLOG 511

static int listen_on(const char *host, int port, port_use use, bool defer, int *bound, cl_err *err)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                             .ai_flags = AI_PASSIVE | AI_NUMERICHOST | AI_NUMERICSERV};
    struct addrinfo *ai = NULL;
    char ps[16];
    snprintf(ps, sizeof ps, "%d", port);
    int rc = getaddrinfo(host, ps, &hints, &ai);
    if (rc != 0)
        return cl_err_set(err, CL_E_INVALID, "cannot use listen address '%s': %s (give a numeric IPv4 or IPv6 "
                          "address)", host, gai_strerror(rc));
    int fd = socket(ai->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        freeaddrinfo(ai);
        return cl_err_errno(err, CL_E_IO, errno, "cannot create a socket");
    }
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (use == PORT_SHARED_FIRST && port != 0) {
        /* the probe has no SO_REUSEPORT: it cannot bind while anyone listens there */
        int probe = socket(ai->ai_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (probe >= 0) {
            setsockopt(probe, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
            int busy = bind(probe, ai->ai_addr, ai->ai_addrlen), e = errno;
            close(probe);
            if (busy != 0 && e == EADDRINUSE) {
                close(fd);
                freeaddrinfo(ai);
                return cl_err_errno(err, CL_E_IO, e, "cannot listen on %s:%d (another process uses this port; "
                                    "choose another)", host, port);
            }
        }
    }
    if (use != PORT_OWN && setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof one) != 0) {
        int e = errno;
        close(fd);
        freeaddrinfo(ai);
        return cl_err_errno(err, CL_E_IO, e, "cannot share port %d between REST event loops", port);
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) != 0 || (!defer && listen(fd, LISTEN_BACKLOG) != 0)) {
        int e = errno;
        close(fd);
        freeaddrinfo(ai);
        return cl_err_errno(err, CL_E_IO, e, "cannot listen on %s:%d%s", host, port,
                            e == EADDRINUSE ? " (another process uses this port; choose another)" : "");
    }
    freeaddrinfo(ai);
    struct sockaddr_storage ss;
    socklen_t sl = sizeof ss;
    getsockname(fd, (struct sockaddr *)&ss, &sl);
    *bound = ss.ss_family == AF_INET6 ? ntohs(((struct sockaddr_in6 *)&ss)->sin6_port)
                                      : ntohs(((struct sockaddr_in *)&ss)->sin_port);
    return fd;
}

/* ---------------------------------------------------------------- lifecycle */

static pthread_once_t evthread_once = PTHREAD_ONCE_INIT;
static int evthread_rc;
static void evthread_init(void)
{
    evthread_rc = evthread_use_pthreads();
    signal(SIGPIPE, SIG_IGN);
    cl_serve_json_init();
}

/* Ends every loop after its current iteration (event_base_loopexit is thread-safe). */
static void exit_loops(cl_serve_server *s)
{
    for (unsigned i = 0; i < s->n_rt; i++)
        event_base_loopexit(s->rt[i].r.base, NULL);
    event_base_loopexit(s->base, NULL);
}

/* On a REST thread, from on_stop: no new connections there, idle ones close. */
static void rest_thread_stop(evutil_socket_t fd, short what, void *arg)
{
    cl_serve_rest_shutdown(arg);
}

static void *rest_thread_main(void *arg)
{
    rest_thread *t = arg;
    /* a loop whose connections all wait for workers has no pending events, and must not end then */
    event_base_loop(t->r.base, EVLOOP_NO_EXIT_ON_EMPTY);
    return NULL;
}

/* REST connections still open on any loop: while stopping, each closes after its current request
 * (one still arriving included) and its answer are done. gRPC connections do the same after GOAWAY
 * (cl_serve_grpc_conns). A connection closes only once its output is written, so when none is
 * left every answer is out. */
static unsigned rest_conns(cl_serve_server *s)
{
    unsigned n = atomic_load_explicit(&s->rest.n_conns, memory_order_relaxed);
    for (unsigned i = 0; i < s->n_rt; i++)
        n += atomic_load_explicit(&s->rt[i].r.n_conns, memory_order_relaxed);
    return n;
}

static void on_drain(evutil_socket_t fd, short what, void *arg)
{
    cl_serve_server *s = arg;
    uint64_t now = cl_now_ns();
    unsigned calls = cl_serve_pool_inflight(s->pool), conns = rest_conns(s) + cl_serve_grpc_conns(s->grpc);
    if (calls == 0 && conns == 0) {
        CL_INFO(CL_SERVE_MOD, "all requests finished; stopping");
        exit_loops(s);
    } else if (now > s->stop_deadline_ns) {
        CL_WARN(CL_SERVE_MOD, "%u request(s) still running and %u connection(s) open after %u ms; stopping anyway",
                calls, conns, s->cfg.request_timeout_ms);
        exit_loops(s);
    }
}

static void on_stop(evutil_socket_t fd, short what, void *arg)
{
    cl_serve_server *s = arg;
    if (s->stopping)
        return;
    s->stopping = true;
    CL_INFO(CL_SERVE_MOD, "shutting down: no new connections; %u request(s) in flight",
            cl_serve_pool_inflight(s->pool));
    cl_serve_grpc_shutdown(s->grpc);
    rest_thread_stop(-1, 0, &s->rest);
    for (unsigned i = 0; i < s->n_rt; i++)
        event_active(s->rt[i].stop_ev, EV_READ, 0);
    s->stop_deadline_ns = cl_now_ns() + (uint64_t)s->cfg.request_timeout_ms * 1000000ull;
    struct timeval tv = {0, 20000};
    s->drain_ev = event_new(s->base, -1, EV_PERSIST, on_drain, s);
    if (!s->drain_ev || event_add(s->drain_ev, &tv) != 0)
        event_base_loopexit(s->base, NULL);
}

/* An event loop whose epoll changes are applied once per iteration, so an event disabled and
 * re-enabled within one iteration costs no epoll_ctl. */
static struct event_base *new_base(void)
{
    struct event_config *ec = event_config_new();
    if (!ec)
        return NULL;
    event_config_set_flag(ec, EVENT_BASE_FLAG_EPOLL_USE_CHANGELIST);
    struct event_base *b = event_base_new_with_config(ec);
    event_config_free(ec);
    return b;
}

/* The REST loops after the main one: each with its own base, completion queue, stop event and
 * listening socket on the same port. */
static int rest_threads_new(cl_serve_server *s, unsigned n, cl_err *err)
{
    if (n < 2)
        return 0;
    if (!(s->rt = calloc(n - 1, sizeof *s->rt)))
        return cl_err_nomem(err);
    for (unsigned i = 0; i < n - 1; i++) {
        rest_thread *t = &s->rt[i];
        s->n_rt++;
        t->r.srv = s;
        if (!(t->r.base = new_base()) || !(t->r.doneq = cl_serve_doneq_new(s->pool, t->r.base, err)) ||
            !(t->stop_ev = event_new(t->r.base, -1, 0, rest_thread_stop, &t->r)))
            return cl_err_set(err, CL_E_NOMEM, "cannot create REST event loop %u", i + 2);
        int port, fd = listen_on(s->cfg.host, s->rest_port, PORT_SHARED_MORE, s->cfg.listen_in_run, &port, err);
        if (fd < 0)
            return -1;
        s->unlistened[s->n_unlistened++] = fd;
        if (cl_serve_rest_listen(&t->r, fd, s->rest_ctx, err) != 0) {
            close(fd);
            return -1;
        }
    }
    return 0;
}

static unsigned default_rest_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n < 1 ? 1 : n > 4 ? 4 : (unsigned)n;
}

/* ---------------------------------------------------------------- memory after bursts
 * glibc keeps freed memory for reuse (src/cli/main.c asks it to: fresh pages cost a page fault each,
 * ~1.6 ms per 600 KB tensor on the development VM), and the engine keeps freed activation buffers in its
 * pool; under steady load that is what makes requests cheap. After a burst it is memory the process no
 * longer needs: once requests held more than RELEASE_MIN together (or the server started, or a model
 * version came or went), and then no call ran for release_idle_ms, the backends' pools are emptied
 * (cfg.release_memory) and malloc_trim gives free heap pages back. Costs the next request its page
 * faults, once per idle period. */
#define RELEASE_MIN ((size_t)64 << 20)

static long rss_mib(void)
{
    long pages = 0, rss = 0;
    FILE *f = fopen("/proc/self/statm", "r");
    if (f) {
        if (fscanf(f, "%ld %ld", &pages, &rss) != 2)
            rss = 0;
        fclose(f);
    }
    return rss * (sysconf(_SC_PAGESIZE) / 1024) / 1024;
}

static void on_release_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_serve_server *s = arg;
    uint64_t now = cl_now_ns();
    if (cl_serve_pool_memory_peak(s->pool, true) > RELEASE_MIN)
        s->release_pending = true;
    size_t versions = 0;
    cl_serve_registry_foreach(s->reg, count_models, &versions);
    if (versions != s->versions_seen) {
        s->versions_seen = versions;
        s->release_pending = true;
    }
    if (cl_serve_pool_inflight(s->pool) || cl_serve_pool_memory_held(s->pool)) {
        s->busy_ns = now;
        return;
    }
    if (!s->release_pending || now - s->busy_ns < (uint64_t)s->cfg.release_idle_ms * 1000000ull)
        return;
    s->release_pending = false;
    long before = rss_mib();
    if (s->cfg.release_memory)
        s->cfg.release_memory();
    malloc_trim(0);
    CL_DEBUG(CL_SERVE_MOD, "idle after a burst: memory kept for reuse given back (RSS %ld -> %ld MiB)", before,
             rss_mib());
}

static void on_signal(evutil_socket_t sig, short what, void *arg)
{
    CL_INFO(CL_SERVE_MOD, "received %s", sig == SIGTERM ? "SIGTERM" : "SIGINT");
    on_stop(-1, 0, arg);
}

cl_serve_server *cl_serve_server_new(const cl_serve_config *cfg, cl_serve_registry *reg, cl_err *err)
{
    pthread_once(&evthread_once, evthread_init);
    if (evthread_rc != 0) {
        cl_err_set(err, CL_E_INTERNAL, "libevent has no pthread support");
        return NULL;
    }
    if (!cfg->tls && !cfg->ratls_identity && !cfg->allow_plaintext) {
        cl_err_set(err, CL_E_INVALID, "no TLS configuration: give a certificate and key (or an SSL config file), "
                   "or explicitly allow plaintext");
        return NULL;
    }
    if (cfg->grpc_port < 0 && cfg->rest_port < 0) {
        cl_err_set(err, CL_E_INVALID, "both the gRPC and the REST listener are disabled");
        return NULL;
    }
    cl_serve_server *s = calloc(1, sizeof *s);
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&s->mmu, NULL);
    s->cfg = *cfg;
    if (!s->cfg.host)
        s->cfg.host = "0.0.0.0";
    if (!s->cfg.max_request_bytes)
        s->cfg.max_request_bytes = 64u << 20;
    if (!s->cfg.request_timeout_ms)
        s->cfg.request_timeout_ms = 30000;
    if (!s->cfg.workers)
        s->cfg.workers = 2;
    if (!s->cfg.queue_limit)
        s->cfg.queue_limit = 64;
    if (!s->cfg.inline_max_us)
        s->cfg.inline_max_us = 200;
    if (!s->cfg.rest_threads)
        s->cfg.rest_threads = default_rest_threads();
    if (!s->cfg.request_memory_bytes)
        s->cfg.request_memory_bytes = (size_t)256 << 20;
    if (!s->cfg.memory_budget_bytes)
        s->cfg.memory_budget_bytes = (size_t)1 << 30;
    if (!s->cfg.release_idle_ms)
        s->cfg.release_idle_ms = 1000;
    if (s->cfg.rest_threads > 64)
        s->cfg.rest_threads = 64;
    s->reg = reg;
    s->grpc_fd = s->rest_fd = -1;
    s->grpc_port = s->rest_port = -1;
    if (!(s->base = new_base())) {
        cl_err_set(err, CL_E_NOMEM, "cannot create the event loop");
        goto fail;
    }
    if (cfg->tls || cfg->ratls_identity) {
        const struct cl_ratls_identity *id = cfg->ratls_identity;
        if ((cfg->grpc_port >= 0 && !(s->grpc_ctx = cl_serve_tls_ctx_id(cfg->tls, id, "h2", err))) ||
            (cfg->rest_port >= 0 && !(s->rest_ctx = cl_serve_tls_ctx_id(cfg->tls, id, "http/1.1", err)))) {
            cl_err_prefix(err, "TLS configuration");
            goto fail;
        }
    }
    bool mutual = cfg->tls && cfg->tls->client_verify;
    s->tls_mode = cfg->ratls_identity ? (mutual ? "attested TLS (RA-TLS), mutual" : "attested TLS (RA-TLS)")
                  : !cfg->tls         ? "PLAINTEXT, not for production"
                  : mutual            ? "mutual TLS"
                                      : "TLS";
    s->cfg.tls = NULL;
    s->cfg.ratls_identity = NULL;
    if (!(s->pool = cl_serve_pool_new(s->base, s->cfg.workers, s->cfg.queue_limit, &s->cfg.batching, err)))
        goto fail;
    cl_serve_pool_set_memory(s->pool, s->cfg.request_memory_bytes, s->cfg.memory_budget_bytes);
    s->release_pending = true; /* what loading left behind */
    s->busy_ns = cl_now_ns();
    unsigned rtick = s->cfg.release_idle_ms / 4 < 10 ? 10 : s->cfg.release_idle_ms / 4;
    struct timeval rtv = {rtick / 1000, (rtick % 1000) * 1000};
    if (!(s->release_ev = event_new(s->base, -1, EV_PERSIST, on_release_tick, s)) || event_add(s->release_ev, &rtv) != 0) {
        cl_err_set(err, CL_E_NOMEM, "cannot create the memory release timer");
        goto fail;
    }
    if (cfg->grpc_port >= 0) {
        if ((s->grpc_fd = listen_on(s->cfg.host, cfg->grpc_port, PORT_OWN, s->cfg.listen_in_run, &s->grpc_port,
                                    err)) < 0)
            goto fail;
        s->unlistened[s->n_unlistened++] = s->grpc_fd;
        if (!(s->grpc = cl_serve_grpc_listen(s, s->base, s->grpc_fd, s->grpc_ctx, err)))
            goto fail;
        s->grpc_fd = -1; /* the listener owns it */
    }
    if (cfg->rest_port >= 0) {
        port_use use = s->cfg.rest_threads > 1 ? PORT_SHARED_FIRST : PORT_OWN;
        if ((s->rest_fd = listen_on(s->cfg.host, cfg->rest_port, use, s->cfg.listen_in_run, &s->rest_port, err)) < 0)
            goto fail;
        s->unlistened[s->n_unlistened++] = s->rest_fd;
        s->rest.srv = s;
        s->rest.base = s->base;
        if (rest_threads_new(s, s->cfg.rest_threads, err) != 0)
            goto fail;
        if (cl_serve_rest_listen(&s->rest, s->rest_fd, s->rest_ctx, err) != 0)
            goto fail;
        s->rest_fd = -1; /* the listener owns it */
    }
    s->stop_ev = event_new(s->base, -1, 0, on_stop, s);
    if (!s->stop_ev) {
        cl_err_nomem(err);
        goto fail;
    }
    if (cfg->handle_signals) {
        s->sig_term = evsignal_new(s->base, SIGTERM, on_signal, s);
        s->sig_int = evsignal_new(s->base, SIGINT, on_signal, s);
        if (!s->sig_term || !s->sig_int || evsignal_add(s->sig_term, NULL) != 0 || evsignal_add(s->sig_int, NULL) != 0) {
            cl_err_set(err, CL_E_INTERNAL, "cannot install the SIGTERM/SIGINT handlers");
            goto fail;
        }
    }
    return s;
fail:
    cl_serve_server_free(s);
    return NULL;
}

/* Ends the REST threads (if the main loop did not already) and waits for them. */
static void join_rest_threads(cl_serve_server *s)
{
    for (unsigned i = 0; i < s->n_rt; i++) {
        if (!s->rt[i].started)
            continue;
        event_base_loopexit(s->rt[i].r.base, NULL);
        pthread_join(s->rt[i].thread, NULL);
        s->rt[i].started = false;
    }
}

int cl_serve_server_run(cl_serve_server *s, cl_err *err)
{
    /* the ports were bound by cl_serve_server_new; connections are taken from here on */
    for (unsigned i = 0; i < s->n_unlistened; i++)
        if (s->cfg.listen_in_run && listen(s->unlistened[i], LISTEN_BACKLOG) != 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot listen on %s:%d%s", s->cfg.host,
                                i == 0 && s->grpc_port >= 0 ? s->grpc_port : s->rest_port,
                                errno == EADDRINUSE ? " (another process took this port meanwhile)" : "");
    s->n_unlistened = 0;
    char bat[96] = "";
    if (s->cfg.batching.max_batch_size >= 2)
        snprintf(bat, sizeof bat, ", batching up to %u rows within %u us", s->cfg.batching.max_batch_size,
                 s->cfg.batching.batch_timeout_us);
    char grpc_at[96] = "off", rest_at[96] = "off";
    if (s->grpc_port >= 0)
        snprintf(grpc_at, sizeof grpc_at, "%s:%d", s->cfg.host, s->grpc_port);
    if (s->rest_port >= 0)
        snprintf(rest_at, sizeof rest_at, "%s:%d", s->cfg.host, s->rest_port);
    CL_INFO(CL_SERVE_MOD, "serving: gRPC %s, REST %s on %u thread%s (%s), %u worker%s, queue %u%s", grpc_at, rest_at,
            s->n_rt + 1, s->n_rt ? "s" : "", s->tls_mode, s->cfg.workers, s->cfg.workers == 1 ? "" : "s",
            s->cfg.queue_limit, bat);
    for (unsigned i = 0; i < s->n_rt; i++) {
        int rc = pthread_create(&s->rt[i].thread, NULL, rest_thread_main, &s->rt[i]);
        if (rc != 0) {
            join_rest_threads(s);
            return cl_err_errno(err, CL_E_NOMEM, rc, "cannot start REST thread %u", i + 2);
        }
        s->rt[i].started = true;
    }
    int rc = event_base_dispatch(s->base);
    join_rest_threads(s);
    if (rc < 0)
        return cl_err_set(err, CL_E_INTERNAL, "the event loop failed");
    return 0;
}

void cl_serve_server_stop(cl_serve_server *s)
{
    if (s && s->stop_ev)
        event_active(s->stop_ev, EV_READ, 0);
}

void cl_serve_server_free(cl_serve_server *s)
{
    if (!s)
        return;
    join_rest_threads(s);
    cl_serve_grpc_free(s->grpc);
    if (s->rest.srv)
        cl_serve_rest_free(&s->rest);
    for (unsigned i = 0; i < s->n_rt; i++)
        cl_serve_rest_free(&s->rt[i].r);
    cl_serve_pool_free(s->pool);
    /* after the pool: its workers may deliver into these queues until they are joined */
    for (unsigned i = 0; i < s->n_rt; i++) {
        cl_serve_doneq_free(s->rt[i].r.doneq);
        if (s->rt[i].stop_ev)
            event_free(s->rt[i].stop_ev);
        if (s->rt[i].r.base)
            event_base_free(s->rt[i].r.base);
    }
    free(s->rt);
    if (s->grpc_fd >= 0)
        close(s->grpc_fd);
    if (s->rest_fd >= 0)
        close(s->rest_fd);
    if (s->drain_ev)
        event_free(s->drain_ev);
    if (s->release_ev)
        event_free(s->release_ev);
    if (s->stop_ev)
        event_free(s->stop_ev);
    if (s->sig_term)
        event_free(s->sig_term);
    if (s->sig_int)
        event_free(s->sig_int);
    SSL_CTX_free(s->grpc_ctx);
    SSL_CTX_free(s->rest_ctx);
    if (s->base)
        event_base_free(s->base);
    pthread_mutex_destroy(&s->mmu);
    free(s);
}
