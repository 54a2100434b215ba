/* bench_keyserver.c — attested releases per second: an in-process key server (sim evidence trusted)
 * and client threads that each repeatedly run the whole provisioning exchange (TCP connect, TLS 1.3
 * handshake with an RA-TLS client certificate, evidence verification, policy, one secret, audit
 * record) against 127.0.0.1, first unloaded, then in the same run under a slowloris load (N slow
 * connections from several 127.0.0.x addresses, each trickling a never-ending ClientHello a byte at a
 * time and re-opened whenever the server cuts it), and the ratio of the two (goal: >= 0.80). Clients,
 * load and server share the machine, so the figures are lower bounds for the server alone.
 * Usage: bench_keyserver [--seconds N] [--rounds N] [--clients N] [--threads N] [--handshake-threads N]
 *                        [--slowloris N] [--sources N] [--fresh-identity]
 * (--seconds per phase, default 3; --rounds of unloaded + loaded phases, default 3).
 * With $CLOISTER_BENCH_OUT set, the figures also go to keyserver.jsonl there (bench_out.h). */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>


#include <openssl/crypto.h>

#include "bench_out.h"
#include "cloister/keyserver.h"
#include "ks_env.h"




/* ---------------------------------------------------------------- the slowloris load */

typedef struct slowloris {
    int port, n, sources, interval_ms;
    atomic_bool stop, ready;
    atomic_long cut;     /* connections the server closed (then opened again) */
    atomic_llong cpu_ns; /* this thread's CPU time */
} slowloris;

/* A TLS handshake record header announcing a 16 KiB ClientHello, whose body never completes. */
static const uint8_t slow_header[5] = {0x16, 0x03, 0x01, 0x40, 0x00};

static int slow_open(const slowloris *sl, int i, int ep)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in src = {.sin_family = AF_INET}, dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sl->port)};
    src.sin_addr.s_addr = htonl(0x7f000002u + (uint32_t)(i % sl->sources));
    dst.sin_addr.s_addr = htonl(0x7f000001u);
    struct epoll_event ev = {.events = EPOLLIN | EPOLLRDHUP, .data.u32 = (uint32_t)i};
    if (fd < 0 || bind(fd, (struct sockaddr *)&src, sizeof src) != 0 ||
        connect(fd, (struct sockaddr *)&dst, sizeof dst) != 0 ||
        send(fd, slow_header, sizeof slow_header, MSG_NOSIGNAL) != (ssize_t)sizeof slow_header ||
        fcntl(fd, F_SETFL, O_NONBLOCK) != 0 || epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        if (fd >= 0)
            close(fd);
        return -1;
    }
    return fd;
}

static void *slowloris_main(void *arg)
{
    slowloris *sl = arg;
    int ep = epoll_create1(EPOLL_CLOEXEC);
    int *fd = calloc((size_t)sl->n, sizeof *fd);
    uint64_t *next = calloc((size_t)sl->n, sizeof *next);
    if (ep < 0 || !fd || !next)
        ks_die("slowloris", NULL);
    uint64_t interval = (uint64_t)sl->interval_ms * 1000000u, t0 = cl_now_ns();
    for (int i = 0; i < sl->n; i++) {
        while ((fd[i] = slow_open(sl, i, ep)) < 0)
            usleep(1000);
        next[i] = t0 + interval * (uint64_t)(i % 97) / 97; /* spread the trickle over the interval */
    }
    atomic_store(&sl->ready, true);
    struct epoll_event evs[256];
    while (!atomic_load(&sl->stop)) {
        int k = epoll_wait(ep, evs, 256, 50);
        for (int j = 0; j < k; j++) {
            int i = (int)evs[j].data.u32;
            uint8_t b[64];
            ssize_t r = recv(fd[i], b, sizeof b, 0);
            if (r > 0 || (r < 0 && (errno == EAGAIN || errno == EINTR)))
                continue;
            close(fd[i]); /* cut by the server: open another */
            atomic_fetch_add(&sl->cut, 1);
            fd[i] = slow_open(sl, i, ep);
        }
        uint64_t now = cl_now_ns();
        for (int i = 0; i < sl->n; i++) {
            if (fd[i] < 0)
                fd[i] = slow_open(sl, i, ep);
            else if (now >= next[i]) {
                send(fd[i], "", 1, MSG_NOSIGNAL | MSG_DONTWAIT);
                next[i] = now + interval;
            }
        }
    }
    for (int i = 0; i < sl->n; i++)
        if (fd[i] >= 0)
            close(fd[i]);
    close(ep);
    free(fd);
    free(next);
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    atomic_store(&sl->cpu_ns, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return NULL;
}

static long rss_kib(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kib = 0;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, "VmRSS:", 6) == 0)
            kib = atol(line + 6);
    if (f)
        fclose(f);
    return kib;
}

/* ---------------------------------------------------------------- one measured phase */

typedef struct phase {
    long ok, bad;
    double secs, cpu, client_cpu;
    unsigned hs_min, hs_max; /* connections in their handshake, sampled every 100 ms */
} phase;

#define TV(tv) ((double)(tv).tv_sec + (double)(tv).tv_usec / 1e6)

static void run_phase(cl_keyserver *ks, int clients, int seconds, phase *ph)
{
    atomic_store(&g_stop, false);
    atomic_store(&g_ok, 0);
    atomic_store(&g_fail, 0);
    atomic_store(&g_client_cpu_ns, 0);
    pthread_t *t = calloc((size_t)clients, sizeof(pthread_t));
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = cl_now_ns();
    for (int i = 0; i < clients; i++)
        pthread_create(&t[i], NULL, ks_client, NULL);
    ph->hs_min = UINT32_MAX;
    ph->hs_max = 0;
    while (cl_now_ns() - t0 < (uint64_t)seconds * 1000000000u) {
        usleep(100000);
        cl_keyserver_stats st;
        cl_keyserver_get_stats(ks, &st);
        ph->hs_min = st.in_handshake < ph->hs_min ? st.in_handshake : ph->hs_min;
        ph->hs_max = st.in_handshake > ph->hs_max ? st.in_handshake : ph->hs_max;
    }
    atomic_store(&g_stop, true);
    for (int i = 0; i < clients; i++)
        pthread_join(t[i], NULL);
    ph->secs = (double)(cl_now_ns() - t0) / 1e9;
    getrusage(RUSAGE_SELF, &ru1);
    ph->cpu = TV(ru1.ru_utime) - TV(ru0.ru_utime) + TV(ru1.ru_stime) - TV(ru0.ru_stime);
    ph->client_cpu = (double)atomic_load(&g_client_cpu_ns) / 1e9;
    ph->ok = atomic_load(&g_ok);
    ph->bad = atomic_load(&g_fail);
    free(t);
}

static void phase_add(phase *sum, const phase *ph)
{
    sum->ok += ph->ok;
    sum->bad += ph->bad;
    sum->secs += ph->secs;
    sum->cpu += ph->cpu;
    sum->client_cpu += ph->client_cpu;
    sum->hs_min = ph->hs_min < sum->hs_min ? ph->hs_min : sum->hs_min;
    sum->hs_max = ph->hs_max > sum->hs_max ? ph->hs_max : sum->hs_max;
}

static void print_phase(const char *name, const phase *ph, double other_cpu)
{
    double server_cpu = ph->cpu - ph->client_cpu - other_cpu;
    char metric[96];
    snprintf(metric, sizeof metric, "server CPU per release (%s)", name);
    bench_out_figure("keyserver", &(bench_figure){.metric = metric, .value = ph->ok ? server_cpu * 1e6 / (double)ph->ok : NAN,
                                                  .unit = "us", .better = "lower"});
    printf("bench_keyserver: %-9s %6ld attested releases in %.2f s = %5.0f releases/s (%ld failed); server CPU %.0f us "
           "per release; %u..%u connections in their handshake\n",
           name, ph->ok, ph->secs, (double)ph->ok / ph->secs, ph->bad,
           ph->ok ? server_cpu * 1e6 / (double)ph->ok : 0.0, ph->hs_min == UINT32_MAX ? 0 : ph->hs_min, ph->hs_max);
}

int main(int argc, char **argv)
{
    int seconds = 3, rounds = 3, clients = 8, threads = 8, hs_threads = 0, slow_n = 1000, sources = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
            clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--handshake-threads") && i + 1 < argc)
            hs_threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--slowloris") && i + 1 < argc)
            slow_n = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--sources") && i + 1 < argc)
            sources = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh-identity"))
            g_fresh = true;
        else {
            fprintf(stderr, "usage: bench_keyserver [--seconds N] [--rounds N] [--clients N] [--threads N] [--handshake-threads N] "
                            "[--slowloris N] [--sources N] [--fresh-identity]\n");
            return 2;
        }
    }
    if (seconds < 1 || rounds < 1 || clients < 1 || threads < 1 || hs_threads < 0 || slow_n < 1 || sources < 1 || sources > 250) {
        fprintf(stderr, "bench_keyserver: --seconds, --rounds, --clients, --threads, --slowloris and --sources (at most 250) must be "
                        "positive\n");
        return 2;
    }
    cl_log_set_level(CL_LOG_ERROR);
    g_prog = "bench_keyserver";
    cl_err err = {0};
    ks_env_setup(0, 0);

    const char *trust[] = {g_path[KS_SIM]};
    /* the per-source limit is set out of the way: what is measured is the connection model itself; a
     * 2 s handshake deadline makes the load churn within each phase (every slow connection cut and
     * re-opened: 500 new connections a second) */
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = g_path[KS_CERT], .key_file = g_path[KS_KEY],
                              .policy_file = g_path[KS_POLICY], .db_file = g_path[KS_DB], .master_key_file = g_path[KS_MK],
                              .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = threads, .handshake_threads = hs_threads,
                              .max_handshakes_per_source = slow_n, .handshake_timeout_ms = 2000};
    if (cl_secure_heap_init(1 << 20, &err) != 0)
        ks_die("secure heap", &err);
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        ks_die("server", &err);
    snprintf(g_server, sizeof g_server, "127.0.0.1:%d", cl_keyserver_port(ks));

    /* rounds of (unloaded, loaded) phases, summed per kind: a machine whose load drifts during the run
     * (other jobs) affects both alike */
    phase unloaded = {.hs_min = UINT32_MAX}, loaded = {.hs_min = UINT32_MAX};
    slowloris sl = {.port = cl_keyserver_port(ks), .n = slow_n, .sources = sources, .interval_ms = 2000};
    long rss_per = 0, cut = 0;
    double slow_cpu = 0, sh_per = 0;
    unsigned held = 0;
    for (int round = 0; round < rounds; round++) {
        phase ph;
        run_phase(ks, clients, seconds, &ph);
        phase_add(&unloaded, &ph);
        atomic_store(&sl.stop, false);
        atomic_store(&sl.ready, false);
        atomic_store(&sl.cut, 0);
        long rss0 = rss_kib();
        size_t sh0 = CRYPTO_secure_used();
        pthread_t slow_thread;
        pthread_create(&slow_thread, NULL, slowloris_main, &sl);
        while (!atomic_load(&sl.ready))
            usleep(10000);
        usleep(500000);
        cl_keyserver_stats st0;
        cl_keyserver_get_stats(ks, &st0);
        if (round == 0 && st0.in_handshake) {
            held = st0.in_handshake;
            rss_per = (rss_kib() - rss0) * 1024 / (long)held;
            sh_per = ((double)CRYPTO_secure_used() - (double)sh0) / held;
        }
        run_phase(ks, clients, seconds, &ph);
        phase_add(&loaded, &ph);
        atomic_store(&sl.stop, true);
        pthread_join(slow_thread, NULL);
        cut += atomic_load(&sl.cut);
        slow_cpu += (double)atomic_load(&sl.cpu_ns) / 1e9;
        usleep(200000); /* the server closes the load's connections */
    }
    cl_keyserver_stats st;
    cl_keyserver_get_stats(ks, &st);
    cl_keyserver_stop(ks);

    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_keyserver: %d client threads%s, %d workers, %u handshake slots, %ld CPUs shared by clients, load and "
           "server; %d rounds of %d s unloaded + %d s loaded\n", clients, g_fresh ? " (fresh RA-TLS identity per request)" : "",
           threads, st.max_handshakes, cpus, rounds, seconds, seconds);
    print_phase("unloaded", &unloaded, 0);
    /* the load generator's CPU (also while it connects) is charged to the loaded phases */
    print_phase("slowloris", &loaded, slow_cpu);
    printf("bench_keyserver: slowloris: %d connections from %d addresses (127.0.0.2..), a byte every %d ms into a "
           "ClientHello that never ends, re-opened when cut: %ld cut at the 2 s handshake deadline\n",
           slow_n, sources, sl.interval_ms, cut);
    printf("bench_keyserver: memory per slow connection in its handshake: %ld bytes RSS (%u held), %.0f bytes of "
           "secure heap\n", rss_per, held, sh_per);
    double r0 = (double)unloaded.ok / unloaded.secs, r1 = (double)loaded.ok / loaded.secs;
    printf("bench_keyserver: ratio slowloris/unloaded = %.2f (goal >= 0.80: %s)\n", r0 > 0 ? r1 / r0 : 0.0,
           r0 > 0 && r1 / r0 >= 0.80 ? "met" : "NOT met");
    bench_out_config("keyserver", "%d client threads%s, %d workers, %u handshake slots, %ld CPUs shared by clients, load "
                     "and server; %d rounds of %d s unloaded + %d s under %d slowloris connections from %d addresses",
                     clients, g_fresh ? " (fresh RA-TLS identity per request)" : "", threads, st.max_handshakes, cpus, rounds,
                     seconds, seconds, slow_n, sources);
    bench_out_figure("keyserver", &(bench_figure){.metric = "attested releases/s, unloaded", .value = r0, .unit = "releases/s",
                                                  .note = "the peer of the loaded figure below"});
    bench_out_figure("keyserver", &(bench_figure){.metric = "attested releases/s under slowloris", .value = r1,
                                                  .unit = "releases/s", .peer = "the same server unloaded (same run)",
                                                  .peer_value = r0, .ratio_of = "slowloris/unloaded",
                                                  .ratio = r0 > 0 ? r1 / r0 : NAN, .goal = ">= 0.80"});
    bench_out_figure("keyserver", &(bench_figure){.metric = "RSS per slow connection in its handshake", .value = (double)rss_per,
                                                  .unit = "bytes", .better = "lower"});
    long bad = unloaded.bad + loaded.bad;

    ks_env_cleanup();
    return bad == 0 ? 0 : 1;
}
