/* ks_env.c — the key-server benchmarks' shared set-up and client thread (ks_env.h). */
#include "ks_env.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

const char *g_prog = "bench";
char g_dir[] = "/tmp/cloister-bench-ks-XXXXXX", g_path[KS_NPATHS][300];
char g_server[64];
EVP_PKEY *g_qe_key;
bool g_fresh;
atomic_bool g_stop;
atomic_long g_ok, g_fail;
atomic_llong g_client_cpu_ns;

_Noreturn void ks_die(const char *what, const cl_err *err)
{
    fprintf(stderr, "%s: %s: %s\n", g_prog, what, err ? err->msg : "");
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
        ks_die(path, NULL);
}

cl_ratls_identity *ks_identity(void)
{
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = g_qe_key};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    cl_ratls_identity *id = p ? cl_ratls_identity_new(p, NULL, &err) : NULL;
    cl_attest_provider_free(p);
    if (!id)
        ks_die("identity", &err);
    return id;
}

void *ks_client(void *arg)
{
    (void)arg;
    /* the server does the full work for every release; the client reuses its TLS context (and, unless
     * --fresh-identity, its RA-TLS identity) so that it does not dominate the shared CPUs */
    cl_ratls_identity *id = ks_identity();
    const char *servers[] = {g_server}, *names[] = {"model-key"};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = g_path[KS_CA], .identity = id,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 10000};
    cl_err err = {0};
    cl_provision_client *c = g_fresh ? NULL : cl_provision_client_new(&o, &err);
    if (!g_fresh && !c)
        ks_die("client", &err);
    while (!atomic_load(&g_stop)) {
        cl_provision_result res;
        int rc;
        if (g_fresh) {
            cl_ratls_identity *fresh = ks_identity();
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


static void write_pem(const char *path, X509 *cert, EVP_PKEY *key)
{
    FILE *f = fopen(path, "w");
    if (!f || (cert ? !PEM_write_X509(f, cert) : !PEM_write_PrivateKey(f, key, NULL, NULL, 0, NULL, NULL)) ||
        fclose(f) != 0)
        ks_die(path, NULL);
}

void ks_env_setup(int n_extra, size_t extra_size)
{
    cl_err err = {0};
    if (!mkdtemp(g_dir))
        ks_die("mkdtemp", NULL);
    static const char *const names[KS_NPATHS] = {"ca.pem", "server.pem", "server.key", "sim.pem", "policy.json",
                                                 "ks.db", "ks.master-key"};
    for (int i = 0; i < KS_NPATHS; i++)
        snprintf(g_path[i], sizeof g_path[i], "%s/%s", g_dir, names[i]);

    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256");
    X509 *ca = issue(ca_key, "bench CA", NULL, NULL, NULL), *srv = issue(srv_key, "127.0.0.1", ca, ca_key, "IP:127.0.0.1");
    write_pem(g_path[KS_CA], ca, NULL);
    write_pem(g_path[KS_CERT], srv, NULL);
    write_pem(g_path[KS_KEY], NULL, srv_key);
    X509 *qe_cert;
    if (cl_attest_sim_qe_generate(&g_qe_key, &qe_cert, &err) != 0)
        ks_die("sim key", &err);
    write_pem(g_path[KS_SIM], qe_cert, NULL);
    X509_free(ca);
    X509_free(srv);
    X509_free(qe_cert);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);

    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM};
    cl_attest_quote q;
    if (cl_attest_sim_identity(&cfg, &q, &err) != 0)
        ks_die("measure", &err);
    char mre[65];
    cl_hex_encode(q.mr_enclave, 32, mre);
    cl_strbuf pol = {0};
    cl_strbuf_fmt(&pol, "{\"version\": 1, \"identities\": [{\"name\": \"bench\", \"mrenclave\": \"%s\", "
                  "\"evidence_types\": [\"sim\"], \"secrets\": [\"model-key\"", mre);
    for (int i = 0; i < n_extra; i++)
        cl_strbuf_fmt(&pol, ", \"secret-%d\"", i);
    cl_strbuf_str(&pol, "]}]}");
    char *policy = cl_strbuf_take(&pol, NULL);
    if (!policy)
        ks_die("out of memory", NULL);
    write_file(g_path[KS_POLICY], policy);
    free(policy);

    uint8_t mk[32], value[32] = {1};
    cl_store *s = NULL;
    if (cl_store_master_key_load(g_path[KS_MK], true, mk, &err) != 0 || !(s = cl_store_open(g_path[KS_DB], mk, &err)) ||
        cl_store_put(s, "model-key", value, sizeof value, false, &err) != 0)
        ks_die("store", &err);
    uint8_t *big = n_extra ? calloc(1, extra_size) : NULL;
    if (n_extra && !big)
        ks_die("out of memory", NULL);
    for (int i = 0; i < n_extra; i++) {
        char name[24];
        snprintf(name, sizeof name, "secret-%d", i);
        if (cl_store_put(s, name, big, extra_size, false, &err) != 0)
            ks_die("store", &err);
    }
    free(big);
    cl_store_close(s);
}

void ks_env_cleanup(void)
{
    EVP_PKEY_free(g_qe_key);
    g_qe_key = NULL;
    for (int i = 0; i < KS_NPATHS; i++)
        unlink(g_path[i]);
    char aux[320];
    snprintf(aux, sizeof aux, "%s-wal", g_path[KS_DB]);
    unlink(aux);
    snprintf(aux, sizeof aux, "%s-shm", g_path[KS_DB]);
    unlink(aux);
    rmdir(g_dir);
}
