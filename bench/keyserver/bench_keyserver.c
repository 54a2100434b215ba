/* bench_keyserver.c — attested releases per second: an in-process key server (sim evidence trusted)
 * and client threads that each repeatedly run the whole provisioning exchange (TCP connect, TLS 1.3
 * handshake with an RA-TLS client certificate, evidence verification, policy, one secret, audit
 * record) against 127.0.0.1. Clients and server share the machine, so the figure is a lower bound for
 * the server alone. Usage: bench_keyserver [--seconds N] [--clients N] [--threads N] [--fresh-identity] */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cloister/keyserver.h"

static char g_dir[] = "/tmp/cloister-bench-ks-XXXXXX";
static char g_server[64], g_ca[300];
static EVP_PKEY *g_qe_key;
static atomic_bool g_stop;
static atomic_long g_ok, g_fail;
static atomic_llong g_client_cpu_ns;
static bool g_fresh;

_Noreturn static void die(const char *what, const cl_err *err)
{
    fprintf(stderr, "bench_keyserver: %s: %s\n", what, err ? err->msg : "");
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
    int seconds = 5, clients = 8, threads = 8;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--clients") && i + 1 < argc)
            clients = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--fresh-identity"))
            g_fresh = true;
        else {
            fprintf(stderr, "usage: bench_keyserver [--seconds N] [--clients N] [--threads N] [--fresh-identity]\n");
            return 2;
        }
    }
    cl_log_set_level(CL_LOG_ERROR);
    cl_err err = {0};
    if (!mkdtemp(g_dir))
        die("mkdtemp", NULL);
    char path[7][300];
    const char *names[] = {"ca.pem", "server.pem", "server.key", "sim.pem", "policy.json", "ks.db", "ks.db.master-key"};
    for (int i = 0; i < 7; i++)
        snprintf(path[i], sizeof path[i], "%s/%s", g_dir, names[i]);
    snprintf(g_ca, sizeof g_ca, "%s", path[0]);

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
    char mre[65], policy[512];
    cl_hex_encode(q.mr_enclave, 32, mre);
    snprintf(policy, sizeof policy,
             "{\"version\": 1, \"identities\": [{\"name\": \"bench\", \"mrenclave\": \"%s\", \"evidence_types\": "
             "[\"sim\"], \"secrets\": [\"model-key\"]}]}", mre);
    write_file(path[4], policy);
    uint8_t mk[32], value[32] = {1};
    cl_store *s = NULL;
    if (cl_store_master_key_load(path[6], true, mk, &err) != 0 || !(s = cl_store_open(path[5], mk, &err)) ||
        cl_store_put(s, "model-key", value, sizeof value, false, &err) != 0)
        die("store", &err);
    cl_store_close(s);

    const char *trust[] = {path[3]};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = path[1], .key_file = path[2],
                              .policy_file = path[4], .db_file = path[5], .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = threads};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        die("server", &err);
    snprintf(g_server, sizeof g_server, "127.0.0.1:%d", cl_keyserver_port(ks));

    pthread_t *t = calloc((size_t)clients, sizeof(pthread_t));
    struct rusage ru0, ru1;
    getrusage(RUSAGE_SELF, &ru0);
    uint64_t t0 = cl_now_ns();
    for (int i = 0; i < clients; i++)
        pthread_create(&t[i], NULL, client, NULL);
    sleep((unsigned)seconds);
    atomic_store(&g_stop, true);
    for (int i = 0; i < clients; i++)
        pthread_join(t[i], NULL);
    double secs = (double)(cl_now_ns() - t0) / 1e9;
    getrusage(RUSAGE_SELF, &ru1);
    cl_keyserver_stop(ks);
#define TV(tv) ((double)(tv).tv_sec + (double)(tv).tv_usec / 1e6)
    double cpu = TV(ru1.ru_utime) - TV(ru0.ru_utime) + TV(ru1.ru_stime) - TV(ru0.ru_stime);
    double client_cpu = (double)atomic_load(&g_client_cpu_ns) / 1e9;
    double server_cpu = cpu - client_cpu;

    long ok = atomic_load(&g_ok), bad = atomic_load(&g_fail);
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    printf("bench_keyserver: %ld attested releases in %.2f s = %.0f releases/s (%ld failed); %d client threads%s, "
           "%d server threads, %ld CPUs shared by clients and server\n",
           ok, secs, (double)ok / secs, bad, clients, g_fresh ? " (fresh RA-TLS identity per request)" : "",
           threads, cpus);
    printf("bench_keyserver: CPU used %.2f s (clients %.2f s, server %.2f s): server cost %.0f us per release, "
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
