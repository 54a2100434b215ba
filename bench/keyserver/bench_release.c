/* bench_release.c — the key server's store and release costs: (1) audit appends per second and the cost of verifying
 * the chain, on a scratch store; (2) attested releases per second: an in-process key server (sim
 * evidence trusted) and client threads that each repeatedly run the whole provisioning exchange (TCP
 * connect, TLS 1.3 handshake with an RA-TLS client certificate, evidence verification, policy, the
 * secrets, audit record) against 127.0.0.1, with the process's peak locked memory (VmLck). With
 * --secrets N --secret-size BYTES the clients ask for N secrets of that size each (raw TLS clients that
 * read the answer into ordinary memory, so VmLck is the server's). Clients and server share the
 * machine, so the figure is a lower bound for the server alone.
 * Usage: bench_release [--seconds N] [--clients N] [--threads N] [--fresh-identity] [--secrets N]
 *                        [--secret-size BYTES] [--audit-records N]
 * With $CLOISTER_BENCH_OUT set, the figures also go there (bench_out.h): to release.jsonl, or with --secrets or
 * --secret-size to release-secrets.jsonl. */
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sys/socket.h>

#include <openssl/ssl.h>

#include "bench_out.h"
#include "cloister/keyserver.h"
#include "ks_env.h"

static int g_nsecrets = 1, g_port;
static const char *g_bench = "release"; /* the results file (bench_out.h) */
static size_t g_secret_size = 32;
static atomic_long g_vmlck_peak_kb;
static atomic_bool g_sampling;


/* a typical release record (the audit API of this version) */
static void fill_record(cl_audit_record *r, int i)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->peer, sizeof r->peer, "127.0.0.1:%d", 40000 + i % 20000);
    snprintf(r->protocol, sizeof r->protocol, "native");
    snprintf(r->decision, sizeof r->decision, "release");
    snprintf(r->evidence_type, sizeof r->evidence_type, "sim");
    r->insecure = true;
    memset(r->evidence_sha256, 'a', 64);
    memset(r->mrenclave, 'b', 64);
    memset(r->mrsigner, 'c', 64);
    r->isv_prod_id = 0;
    r->isv_svn = 2;
    r->debug = 0;
    r->identities = strdup("model-server");
    r->secrets = strdup("model-key=released");
    r->claims = strdup("{\"mrenclave\":\"bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\",\"mrsigner\":"
                       "\"cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\",\"isv_prod_id\":0,"
                       "\"min_isv_svn\":2,\"allow_debug\":false,\"evidence_types\":[\"sim\"]}");
}

static void clear_record(cl_audit_record *r) { cl_audit_record_clear(r); }

/* Peak VmLck of this process, sampled every 2 ms while the clients run. */
static long vmlck_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

static void *sampler(void *arg)
{
    (void)arg;
    while (atomic_load(&g_sampling)) {
        long kb = vmlck_kb();
        if (kb > atomic_load(&g_vmlck_peak_kb))
            atomic_store(&g_vmlck_peak_kb, kb);
        usleep(2000);
    }
    return NULL;
}

/* --secrets mode: one native request for secret-0..N-1 over a raw TLS connection; the answer is read
 * into ordinary memory and checked for its size. Returns 0 when every secret came back. */
static int raw_fetch(SSL_CTX *ctx, const uint8_t *req, size_t req_len, uint8_t *buf, size_t size)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0), rc = -1;
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)g_port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    SSL *ssl = NULL;
    if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) != 0 || !(ssl = SSL_new(ctx)) ||
        !SSL_set_fd(ssl, fd) || SSL_connect(ssl) != 1 || SSL_write(ssl, req, (int)req_len) != (int)req_len)
        goto out;
    size_t got = 0;
    for (int n; got < size && (n = SSL_read(ssl, buf + got, (int)(size - got))) > 0;)
        got += (size_t)n;
    /* header 9, then per secret: name_len 1 + name + result 1 + length 4 + value */
    size_t expect = 9;
    for (int i = 0; i < g_nsecrets; i++)
        expect += 1 + (size_t)snprintf(NULL, 0, "secret-%d", i) + 1 + 4 + g_secret_size;
    rc = got == expect && buf[6] == 0 ? 0 : -1;
out:
    SSL_free(ssl);
    if (fd >= 0)
        close(fd);
    return rc;
}

static void *raw_client(void *arg)
{
    (void)arg;
    cl_ratls_identity *id = ks_identity();
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, g_path[KS_CA], NULL) != 1 || cl_ratls_identity_use(id, ctx, &err) != 0)
        ks_die("raw client", &err);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    uint8_t req[8 + 64 * 16];
    memcpy(req, "CLKS1", 6);
    req[6] = (uint8_t)(g_nsecrets >> 8);
    req[7] = (uint8_t)g_nsecrets;
    size_t o = 8;
    for (int i = 0; i < g_nsecrets; i++) {
        int n = snprintf((char *)req + o + 1, 16, "secret-%d", i);
        req[o] = (uint8_t)n;
        o += 1 + (size_t)n;
    }
    size_t size = 9 + (size_t)g_nsecrets * (16 + 6 + g_secret_size) + 1;
    uint8_t *buf = malloc(size);
    if (!buf)
        ks_die("out of memory", NULL);
    while (!atomic_load(&g_stop)) {
        if (raw_fetch(ctx, req, o, buf, size) == 0)
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_fail, 1);
    }
    free(buf);
    SSL_CTX_free(ctx);
    cl_ratls_identity_free(id);
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    atomic_fetch_add(&g_client_cpu_ns, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return NULL;
}

/* (1) audit appends: a typical release record, appended `n` times to a scratch store, then the chain
 * verified once. */
static void bench_audit(const char *dir, int n)
{
    char db[300];
    snprintf(db, sizeof db, "%s/audit-bench.db", dir);
    uint8_t mk[32] = {7};
    cl_err err = {0};
    cl_store *s = cl_store_open(db, mk, &err);
    if (!s)
        ks_die("audit store", &err);
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    uint64_t t0 = cl_now_ns();
    for (int i = 0; i < n; i++) {
        cl_audit_record r;
        fill_record(&r, i);
        if (cl_audit_append(s, &r, &err) != 0)
            ks_die("audit append", &err);
        clear_record(&r);
    }
    double append_s = (double)(cl_now_ns() - t0) / 1e9;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double append_cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    int64_t count;
    char head[65];
    t0 = cl_now_ns();
    if (cl_audit_verify(s, &count, head, &err) != 0)
        ks_die("audit verify", &err);
    double verify_s = (double)(cl_now_ns() - t0) / 1e9;
    cl_store_close(s);
    printf("bench_release: audit: %d appends in %.2f s = %.0f appends/s (%.1f us each, %.1f us of CPU); verifying "
           "%lld records took %.1f ms (%.2f us per record)\n",
           n, append_s, n / append_s, append_s * 1e6 / n, append_cpu * 1e6 / n, (long long)count, verify_s * 1e3,
           verify_s * 1e6 / (double)count);
    bench_out_figure(g_bench, &(bench_figure){.metric = "audit appends/s", .value = n / append_s, .unit = "appends/s"});
    bench_out_figure(g_bench, &(bench_figure){.metric = "audit chain verification per record",
                                              .value = verify_s * 1e6 / (double)count, .unit = "us", .better = "lower"});
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", db, suffix[i]);
        unlink(p);
    }
}


int main(int argc, char **argv)
{
    int seconds = 5, clients = 8, threads = 8, audit_records = 2000;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
            clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh-identity"))
            g_fresh = true;
        else if (!strcmp(argv[i], "--secrets") && i + 1 < argc)
            g_nsecrets = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--secret-size") && i + 1 < argc)
            g_secret_size = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--audit-records") && i + 1 < argc)
            audit_records = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: bench_release [--seconds N] [--clients N] [--threads N] [--fresh-identity] "
                            "[--secrets N] [--secret-size BYTES] [--audit-records N]\n");
            return 2;
        }
    }
    if (g_nsecrets < 1 || g_nsecrets > CL_KS_MAX_NAMES || g_secret_size < 1 || g_secret_size > CL_KS_SECRET_MAX ||
        audit_records < 1) {
        fprintf(stderr, "bench_release: --secrets 1..%d, --secret-size 1..%d, --audit-records >= 1\n",
                CL_KS_MAX_NAMES, CL_KS_SECRET_MAX);
        return 2;
    }
    bool raw = g_nsecrets > 1 || g_secret_size != 32;
    if (raw)
        g_bench = "release-secrets";
    cl_log_set_level(CL_LOG_ERROR);
    g_prog = "bench_release";
    cl_err err = {0};
    ks_env_setup(raw ? g_nsecrets : 0, g_secret_size);
    bench_audit(g_dir, audit_records);

    const char *trust[] = {g_path[KS_SIM]};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = g_path[KS_CERT], .key_file = g_path[KS_KEY],
                              .policy_file = g_path[KS_POLICY], .db_file = g_path[KS_DB], .master_key_file = g_path[KS_MK],
                              .trust_sim_certs = trust, .trust_sim_count = 1, .threads = threads};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        ks_die("server", &err);
    g_port = cl_keyserver_port(ks);
    snprintf(g_server, sizeof g_server, "127.0.0.1:%d", g_port);

    pthread_t *t = calloc((size_t)clients, sizeof(pthread_t));
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = cl_now_ns();
    pthread_t samp;
    atomic_store(&g_sampling, true);
    atomic_store(&g_vmlck_peak_kb, vmlck_kb());
    pthread_create(&samp, NULL, sampler, NULL);
    for (int i = 0; i < clients; i++)
        pthread_create(&t[i], NULL, raw ? raw_client : ks_client, NULL);
    sleep((unsigned)seconds);
    atomic_store(&g_stop, true);
    for (int i = 0; i < clients; i++)
        pthread_join(t[i], NULL);
    atomic_store(&g_sampling, false);
    pthread_join(samp, NULL);
    double secs = (double)(cl_now_ns() - t0) / 1e9;
    getrusage(RUSAGE_SELF, &ru1);
    cl_keyserver_stop(ks);
#define TV(tv) ((double)(tv).tv_sec + (double)(tv).tv_usec / 1e6)
    double cpu = TV(ru1.ru_utime) - TV(ru0.ru_utime) + TV(ru1.ru_stime) - TV(ru0.ru_stime);
    double client_cpu = (double)atomic_load(&g_client_cpu_ns) / 1e9;
    double server_cpu = cpu - client_cpu;

    long ok = atomic_load(&g_ok), bad = atomic_load(&g_fail);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_release: %ld attested releases in %.2f s = %.0f releases/s (%ld failed); %d client threads%s, "
           "%d server threads, %ld CPUs shared by clients and server\n",
           ok, secs, (double)ok / secs, bad, clients, g_fresh ? " (fresh RA-TLS identity per request)" : "",
           threads, cpus);
    if (raw)
        printf("bench_release: each release: %d secret(s) of %zu bytes\n", g_nsecrets, g_secret_size);
    printf("bench_release: peak locked memory (VmLck) of the process: %.1f MiB\n",
           (double)atomic_load(&g_vmlck_peak_kb) / 1024.0);
    printf("bench_release: CPU used %.2f s (clients %.2f s, server %.2f s): server cost %.0f us per release, "
           "i.e. %.0f releases/s per fully used core (%.0f on %ld cores)\n",
           cpu, client_cpu, server_cpu, ok ? server_cpu * 1e6 / (double)ok : 0.0,
           server_cpu > 0 ? (double)ok / server_cpu : 0.0, server_cpu > 0 ? (double)ok / server_cpu * (double)cpus : 0.0,
           cpus);
    bench_out_config(g_bench, "%d s, %d client threads%s, %d server threads, %ld CPUs shared by clients and server; each "
                     "release: %d secret(s) of %zu bytes; %d audit records appended first", seconds, clients,
                     g_fresh ? " (fresh RA-TLS identity per request)" : "", threads, cpus, g_nsecrets, g_secret_size,
                     audit_records);
    bench_out_figure(g_bench, &(bench_figure){.metric = "attested releases/s", .value = (double)ok / secs, .unit = "releases/s",
                                              .note = bad ? "some releases failed (see the log)" : NULL});
    bench_out_figure(g_bench, &(bench_figure){.metric = "server CPU per release", .value = ok ? server_cpu * 1e6 / (double)ok : NAN,
                                              .unit = "us", .better = "lower"});
    bench_out_figure(g_bench, &(bench_figure){.metric = "peak locked memory (VmLck)",
                                              .value = (double)atomic_load(&g_vmlck_peak_kb) / 1024.0, .unit = "MiB",
                                              .better = "lower"});

    free(t);
    ks_env_cleanup();
    return bad == 0 ? 0 : 1;
}
