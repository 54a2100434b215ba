/* bench_release.c — the key server's store and release costs: (1) audit appends per second and the cost of verifying
 * the chain, on a scratch store; (2) attested releases per second: an in-process key server (sim
 * evidence trusted) and client threads that each repeatedly run the whole provisioning exchange (TCP
 * connect, TLS 1.3 handshake with an RA-TLS client certificate, evidence verification, policy, the
 * secrets, audit record) against 127.0.0.1, with the process's peak locked memory (VmLck). With
 * --secrets N --secret-size BYTES the clients ask for N secrets of that size each (raw TLS clients that
 * read the answer into ordinary memory, so VmLck is the server's). Clients and server share the
 * machine, so the figure is a lower bound for the server alone.
 * Usage: bench_release [--seconds N] [--clients N] [--threads N] [--fresh-identity] [--secrets N]
 *                        [--secret-size BYTES] [--audit-records N] */
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

#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cloister/keyserver.h"

static char g_dir[] = "/tmp/cloister-bench-ks-XXXXXX";
static char g_server[64], g_ca[300];
static EVP_PKEY *g_qe_key;
static atomic_bool g_stop;
static atomic_long g_ok, g_fail;
static atomic_llong g_client_cpu_ns;
static bool g_fresh;
static int g_nsecrets = 1, g_port;
static size_t g_secret_size = 32;
static atomic_long g_vmlck_peak_kb;
static atomic_bool g_sampling;

_Noreturn static void die(const char *what, const cl_err *err)
{
    fprintf(stderr, "bench_release: %s: %s\n", what, err ? err->msg : "");
    exit(1);
}

static X509 *issue(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key, const char *san)
{
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), ca ? 2 : 1);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, ca ? X509_get_subject_name(ca) : n);
    X509_NAME_free(n);
    X509_gmtime_adj(X509_getm_notBefore(c), -300);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, key);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca ? ca : c, c, NULL, NULL, 0);
    X509_EXTENSION *e = X509V3_EXT_conf(NULL, &ctx, san ? "subjectAltName" : "basicConstraints",
                                        san ? san : "critical,CA:TRUE");
    X509_add_ext(c, e, -1);
    X509_EXTENSION_free(e);
    X509_sign(c, ca_key ? ca_key : key, EVP_sha256());
    return c;
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    if (!f || fputs(text, f) < 0 || fclose(f) != 0)
        die(path, NULL);
}

static cl_ratls_identity *identity(void)
{
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = g_qe_key};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    cl_ratls_identity *id = p ? cl_ratls_identity_new(p, NULL, &err) : NULL;
    cl_attest_provider_free(p);
    if (!id)
        die("identity", &err);
    return id;
}

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
    cl_ratls_identity *id = identity();
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    if (!ctx || SSL_CTX_load_verify_locations(ctx, g_ca, NULL) != 1 || cl_ratls_identity_use(id, ctx, &err) != 0)
        die("raw client", &err);
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
        die("out of memory", NULL);
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
        die("audit store", &err);
    struct timespec c0, c1;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c0);
    uint64_t t0 = cl_now_ns();
    for (int i = 0; i < n; i++) {
        cl_audit_record r;
        fill_record(&r, i);
        if (cl_audit_append(s, &r, &err) != 0)
            die("audit append", &err);
        clear_record(&r);
    }
    double append_s = (double)(cl_now_ns() - t0) / 1e9;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    double append_cpu = (double)(c1.tv_sec - c0.tv_sec) + (double)(c1.tv_nsec - c0.tv_nsec) / 1e9;
    int64_t count;
    char head[65];
    t0 = cl_now_ns();
    if (cl_audit_verify(s, &count, head, &err) != 0)
        die("audit verify", &err);
    double verify_s = (double)(cl_now_ns() - t0) / 1e9;
    cl_store_close(s);
    printf("bench_release: audit: %d appends in %.2f s = %.0f appends/s (%.1f us each, %.1f us of CPU); verifying "
           "%lld records took %.1f ms (%.2f us per record)\n",
           n, append_s, n / append_s, append_s * 1e6 / n, append_cpu * 1e6 / n, (long long)count, verify_s * 1e3,
           verify_s * 1e6 / (double)count);
    const char *suffix[] = {"", "-wal", "-shm"};
    for (int i = 0; i < 3; i++) {
        char p[320];
        snprintf(p, sizeof p, "%s%s", db, suffix[i]);
        unlink(p);
    }
}

static void *client(void *arg)
{
    (void)arg;
    /* the server does the full work for every release; the client reuses its TLS context (and, unless
     * --fresh-identity, its RA-TLS identity) so that it does not dominate the shared CPUs */
    cl_ratls_identity *id = identity();
    const char *servers[] = {g_server}, *names[] = {"model-key"};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = g_ca, .identity = id,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 10000};
    cl_err err = {0};
    cl_provision_client *c = g_fresh ? NULL : cl_provision_client_new(&o, &err);
    if (!g_fresh && !c)
        die("client", &err);
    while (!atomic_load(&g_stop)) {
        cl_provision_result res;
        int rc;
        if (g_fresh) {
            cl_ratls_identity *fresh = identity();
            o.identity = fresh;
            rc = cl_provision_fetch(&o, &res, &err);
            cl_ratls_identity_free(fresh);
        } else {
            rc = cl_provision_client_fetch(c, &res, &err);
        }
        if (rc == 0 && res.count == 1 && res.secrets[0].len == 32)
            atomic_fetch_add(&g_ok, 1);
        else
            atomic_fetch_add(&g_fail, 1);
        cl_provision_result_free(&res);
    }
    cl_provision_client_free(c);
    cl_ratls_identity_free(id);
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    atomic_fetch_add(&g_client_cpu_ns, (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec);
    return NULL;
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
    cl_log_set_level(CL_LOG_ERROR);
    cl_err err = {0};
    if (!mkdtemp(g_dir))
        die("mkdtemp", NULL);
    char path[7][300];
    const char *names[] = {"ca.pem", "server.pem", "server.key", "sim.pem", "policy.json", "ks.db", "ks.db.master-key"};
    for (int i = 0; i < 7; i++)
        snprintf(path[i], sizeof path[i], "%s/%s", g_dir, names[i]);
    snprintf(g_ca, sizeof g_ca, "%s", path[0]);
    bench_audit(g_dir, audit_records);

    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256");
    X509 *ca = issue(ca_key, "bench CA", NULL, NULL, NULL), *srv = issue(srv_key, "127.0.0.1", ca, ca_key, "IP:127.0.0.1");
    FILE *f = fopen(path[0], "w");
    PEM_write_X509(f, ca);
    fclose(f);
    f = fopen(path[1], "w");
    PEM_write_X509(f, srv);
    fclose(f);
    f = fopen(path[2], "w");
    PEM_write_PrivateKey(f, srv_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509 *qe_cert;
    if (cl_attest_sim_qe_generate(&g_qe_key, &qe_cert, &err) != 0)
        die("sim key", &err);
    f = fopen(path[3], "w");
    PEM_write_X509(f, qe_cert);
    fclose(f);

    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM};
    cl_attest_quote q;
    if (cl_attest_sim_identity(&cfg, &q, &err) != 0)
        die("measure", &err);
    char mre[65];
    cl_hex_encode(q.mr_enclave, 32, mre);
    cl_strbuf pol = {0};
    cl_strbuf_fmt(&pol, "{\"version\": 1, \"identities\": [{\"name\": \"bench\", \"mrenclave\": \"%s\", "
                  "\"evidence_types\": [\"sim\"], \"secrets\": [\"model-key\"", mre);
    for (int i = 0; raw && i < g_nsecrets; i++)
        cl_strbuf_fmt(&pol, ", \"secret-%d\"", i);
    cl_strbuf_str(&pol, "]}]}");
    char *policy = cl_strbuf_take(&pol, NULL);
    if (!policy)
        die("out of memory", NULL);
    write_file(path[4], policy);
    free(policy);
    uint8_t mk[32], value[32] = {1};
    cl_store *s = NULL;
    if (cl_store_master_key_load(path[6], true, mk, &err) != 0 || !(s = cl_store_open(path[5], mk, &err)) ||
        cl_store_put(s, "model-key", value, sizeof value, false, &err) != 0)
        die("store", &err);
    uint8_t *big = calloc(1, g_secret_size);
    for (int i = 0; raw && big && i < g_nsecrets; i++) {
        char name[24];
        snprintf(name, sizeof name, "secret-%d", i);
        if (cl_store_put(s, name, big, g_secret_size, false, &err) != 0)
            die("store", &err);
    }
    free(big);
    cl_store_close(s);

    const char *trust[] = {path[3]};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = path[1], .key_file = path[2],
                              .policy_file = path[4], .db_file = path[5], .master_key_file = path[6],
                              .trust_sim_certs = trust, .trust_sim_count = 1, .threads = threads};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        die("server", &err);
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
        pthread_create(&t[i], NULL, raw ? raw_client : client, NULL);
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

    free(t);
    X509_free(ca);
    X509_free(srv);
    X509_free(qe_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    EVP_PKEY_free(g_qe_key);
    for (int i = 0; i < 7; i++)
        unlink(path[i]);
    char wal[320];
    snprintf(wal, sizeof wal, "%s-wal", path[5]);
    unlink(wal);
    snprintf(wal, sizeof wal, "%s-shm", path[5]);
    unlink(wal);
    rmdir(g_dir);
    return bad == 0 ? 0 : 1;
}
