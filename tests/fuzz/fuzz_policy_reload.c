/* fuzz_policy_reload.c — fuzz target for the key server's policy reload, the path SIGHUP takes: each
 * input is written to the policy file of a key server running in this process (loopback, simulated
 * evidence trusted) and loaded with cl_keyserver_reload_policy. A reload must never crash; a file that
 * does not parse installs deny-all. Then RA-TLS clients — a sim enclave and a sim TD with fixed
 * measurements the seed corpus pins — ask for the secret "a" over the real handshake, and each must get
 * it exactly when the same bytes, parsed here, grant it to their verified claims
 * (FUZZ_RELOAD_TRACE=1 prints each answer). */
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "cloister/keyserver.h"
#include "cloister/pki.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* the measurements the sim clients present (tests/fuzz/corpus/fuzz_policy_reload pins them) */
static const uint8_t k_mrenclave[32] = {0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                                        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11,
                                        0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11, 0x11};
static uint8_t k_mrtd[48], k_rtmr1[48];

typedef struct client {
    cl_ratls_identity *id;
    cl_attest_claims claims; /* what the key server's verifier makes of its evidence */
} client;

static struct {
    char dir[64], policy[96], ca[96];
    cl_keyserver *ks;
    char server[64];
    client clients[2];
} G;

static void die(const char *what, const cl_err *err)
{
    fprintf(stderr, "fuzz_policy_reload: %s: %s\n", what, err ? err->msg : "");
    abort();
}

static void write_file(const char *path, const void *buf, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0)
        die(path, NULL);
}

static void write_pem(const char *dir, const char *name, const char *pem, size_t len, char *out, size_t out_size)
{
    snprintf(out, out_size, "%s/%s", dir, name);
    write_file(out, pem, len);
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* The key server runs until the process ends. At exit it is stopped (its workers may still be finishing
 * the last connection) before OpenSSL's own exit handler runs, then its files go. */
static void cleanup(void)
{
    cl_keyserver_stop(G.ks);
    for (size_t i = 0; i < 2; i++)
        cl_ratls_identity_free(G.clients[i].id);
    nftw(G.dir, rm_entry, 8, FTW_DEPTH | FTW_PHYS);
}

static void make_client(client *c, EVP_PKEY *qe_key, cl_attest_verifier *v, bool tdx)
{
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = qe_key};
    if (tdx) {
        cfg.sim_tdx = true;
        cfg.sim_mrtd = k_mrtd;
        cfg.sim_rtmr[1] = k_rtmr1;
    } else {
        cfg.sim_mrenclave = k_mrenclave;
    }
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    uint8_t rd[64] = {0}, *quote = NULL;
    size_t len;
    if (!p || !(c->id = cl_ratls_identity_new(p, NULL, &err)) ||
        cl_attest_provider_quote(p, rd, &quote, &len, &err) != 0 || cl_attest_verify(v, quote, len, &c->claims, &err) != 0)
        die("sim client", &err);
    free(quote);
    cl_attest_provider_free(p);
}

static void setup(void)
{
    cl_log_set_level(CL_LOG_OFF);
    memset(k_mrtd, 0x22, sizeof k_mrtd);
    memset(k_rtmr1, 0x33, sizeof k_rtmr1);
    snprintf(G.dir, sizeof G.dir, "%s/cloister-fuzz-reload-XXXXXX", getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp");
    if (strlen(G.dir) > 50 || !mkdtemp(G.dir))
        die("mkdtemp", NULL);
    cl_err err = {0};
    /* TLS: a CA and the key server's certificate for 127.0.0.1 */
    EVP_PKEY *ca_key = cl_pki_keygen(CL_PKI_EC_P256, &err), *srv_key = cl_pki_keygen(CL_PKI_EC_P256, &err);
    const char *sans[] = {"127.0.0.1"};
    cl_pki_cert_spec ca_spec = {.role = CL_PKI_ROLE_CA, .common_name = "fuzz CA", .days = 30};
    X509 *ca = ca_key ? cl_pki_issue(&ca_spec, ca_key, &err) : NULL;
    cl_pki_cert_spec srv_spec = {.role = CL_PKI_ROLE_SERVER, .common_name = "127.0.0.1", .sans = sans,
                                 .san_count = 1, .days = 30, .issuer = ca, .issuer_key = ca_key};
    X509 *srv = ca && srv_key ? cl_pki_issue(&srv_spec, srv_key, &err) : NULL;
    size_t n;
    char *pem, cert[96], key[96], sim[96], db[96], mk[96];
    if (!srv)
        die("certificates", &err);
    if (!(pem = cl_pki_cert_pem(ca, &n, &err)))
        die("CA PEM", &err);
    write_pem(G.dir, "ca.pem", pem, n, G.ca, sizeof G.ca);
    free(pem);
    if (!(pem = cl_pki_cert_pem(srv, &n, &err)))
        die("cert PEM", &err);
    write_pem(G.dir, "server.pem", pem, n, cert, sizeof cert);
    free(pem);
    if (!(pem = cl_pki_key_pem(srv_key, &n, &err)))
        die("key PEM", &err);
    write_pem(G.dir, "server.key", pem, n, key, sizeof key);
    cl_secmem_free(pem);
    X509_free(ca);
    X509_free(srv);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);
    /* the simulated quoting key the server trusts */
    EVP_PKEY *qe_key;
    X509 *qe_cert;
    if (cl_attest_sim_qe_generate(&qe_key, &qe_cert, &err) != 0 || !(pem = cl_pki_cert_pem(qe_cert, &n, &err)))
        die("sim quoting key", &err);
    write_pem(G.dir, "sim_qe_cert.pem", pem, n, sim, sizeof sim);
    free(pem);
    /* the store, with the secret "a" */
    snprintf(db, sizeof db, "%s/ks.db", G.dir);
    snprintf(mk, sizeof mk, "%s/master-key", G.dir);
    uint8_t master[CL_KS_MASTER_KEY_LEN];
    cl_store *s = NULL;
    if (cl_store_master_key_load(mk, true, master, &err) != 0 || !(s = cl_store_open(db, master, &err)) ||
        cl_store_put(s, "a", (const uint8_t *)"secret-a", 8, false, &err) != 0)
        die("store", &err);
    cl_store_close(s);
    snprintf(G.policy, sizeof G.policy, "%s/policy.json", G.dir);
    const char *empty = "{\"version\": 1, \"identities\": []}";
    write_file(G.policy, empty, strlen(empty));
    const char *trust[] = {sim};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = cert, .key_file = key, .policy_file = G.policy,
                              .db_file = db, .master_key_file = mk, .trust_sim_certs = trust, .trust_sim_count = 1,
                              .threads = 2, .io_timeout_ms = 10000};
    if (!(G.ks = cl_keyserver_start(&kc, &err)))
        die("key server", &err);
    snprintf(G.server, sizeof G.server, "127.0.0.1:%d", cl_keyserver_port(G.ks));
    /* the clients, and their claims as the server's verifier will see them */
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    if (!v || cl_attest_verifier_trust_sim(v, qe_cert, &err) != 0)
        die("verifier", &err);
    make_client(&G.clients[0], qe_key, v, false);
    make_client(&G.clients[1], qe_key, v, true);
    cl_attest_verifier_free(v);
    EVP_PKEY_free(qe_key);
    X509_free(qe_cert);
    atexit(cleanup); /* after OpenSSL registered its handler, so this one runs first */
}

/* Asks the running key server for "a" as client c; aborts if the answer is not what `p` says. */
static void provision(const client *c, const cl_policy *p)
{
    bool expect = p && cl_policy_grants(p, &c->claims, "a");
    const char *servers[] = {G.server}, *names[] = {"a"};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = G.ca, .identity = c->id,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 20000};
    cl_provision_result res = {0};
    cl_err err = {0};
    int rc = cl_provision_fetch(&o, &res, &err);
    bool granted = rc == 0 && res.count == 1 && res.secrets[0].granted && res.secrets[0].len == 8 &&
                   !memcmp(res.secrets[0].value, "secret-a", 8);
    cl_provision_result_free(&res);
    if (getenv("FUZZ_RELOAD_TRACE"))
        fprintf(stderr, "client %s: expect %d granted %d (%s)\n", c->claims.tee_type ? "td" : "enclave", expect, granted, err.msg);
    if (granted && !expect) {
        fprintf(stderr, "fuzz_policy_reload: the key server released a secret the policy does not grant\n");
        abort();
    }
    if (!granted && expect && err.code == CL_E_DENIED) {
        fprintf(stderr, "fuzz_policy_reload: denied what the policy grants: %s\n", err.msg);
        abort();
    }
    /* other failures (a loaded machine timing out) say nothing about the policy */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static bool ready;
    if (!ready) {
        setup();
        ready = true;
    }
    write_file(G.policy, data, size);
    cl_err err = {0}, perr = {0};
    int rc = cl_keyserver_reload_policy(G.ks, &err);
    cl_policy *p = cl_policy_parse((const char *)data, size, &perr);
    if ((rc == 0) != (p != NULL)) {
        fprintf(stderr, "fuzz_policy_reload: the reload (%d) and the parser (%s) disagree\n", rc,
                p ? "valid" : perr.msg);
        abort();
    }
    /* every valid policy is checked through the handshake; one refused file in 8 too (deny-all) */
    if (p || size % 8 == 0)
        for (size_t i = 0; i < 2; i++)
            provision(&G.clients[i], p);
    cl_policy_free(p);
    return 0;
}
