/* bench_dcap.c — DCAP verifications per second with cached collateral: the real SGX and TDX quotes of
 * tests/data/dcap-qvl verified through a collateral source (cl_dcap_source: collateral chosen per
 * platform, already in memory, as in the key server after the first handshake) at a time inside the
 * vectors' windows, on one thread and on several. Compared in the same run with the goal (1 ms per
 * verification) and with the floor of the work: the two ECDSA P-256 checks no memo can save (the QE
 * report and the quote are new with every quote), done with OpenSSL directly. The chain, CRL and
 * collateral signature checks are remembered per collateral within their validity window (dcap.c);
 * the first verification with a collateral does them all (also printed).
 * Usage: bench_dcap DATA_DIR [--seconds N] [--threads N]
 * With $CLOISTER_BENCH_OUT set, the figures also go to dcap.jsonl there (bench_out.h). */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ec.h>
#include <openssl/evp.h>

#include "bench_out.h"
#include "cloister/dcap.h"

#define SGX_AT 1750331571
#define TDX_AT 1750330147

static cl_dcap_source *g_src;
static uint8_t *g_quote[2];
static size_t g_len[2];
static double g_seconds = 2;
static atomic_bool g_stop;
static atomic_long g_done, g_fail;

_Noreturn static void die(const char *what, const char *msg)
{
    fprintf(stderr, "bench_dcap: %s: %s\n", what, msg);
    exit(1);
}

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

static void *worker(void *arg)
{
    int which = (int)(intptr_t)arg;
    cl_attest_quote q;
    cl_err err = {0};
    if (cl_attest_quote_parse(g_quote[which], g_len[which], &q, &err) != 0)
        die("quote", err.msg);
    long n = 0, bad = 0;
    while (!atomic_load(&g_stop)) {
        cl_dcap_result r;
        if (cl_dcap_source_verify(g_src, &q, &r, &err) != 0)
            bad++;
        n++;
    }
    atomic_fetch_add(&g_done, n);
    atomic_fetch_add(&g_fail, bad);
    return NULL;
}

/* verifications per second of quote `which` on `threads` threads */
static double run(int which, int threads)
{
    cl_dcap_source_set_time(g_src, which ? TDX_AT : SGX_AT);
    atomic_store(&g_stop, false);
    atomic_store(&g_done, 0);
    atomic_store(&g_fail, 0);
    pthread_t t[64];
    double t0 = now_s();
    for (int i = 0; i < threads; i++)
        pthread_create(&t[i], NULL, worker, (void *)(intptr_t)which);
    struct timespec d = {(time_t)g_seconds, (long)((g_seconds - (double)(time_t)g_seconds) * 1e9)};
    nanosleep(&d, NULL);
    atomic_store(&g_stop, true);
    for (int i = 0; i < threads; i++)
        pthread_join(t[i], NULL);
    double el = now_s() - t0;
    if (atomic_load(&g_fail))
        die("verification", "some verifications failed");
    return (double)atomic_load(&g_done) / el;
}

/* the floor: `sigs` ECDSA P-256 verifications per DCAP verification, OpenSSL directly */
static double ecdsa_per_s(void)
{
    EVP_PKEY *k = EVP_EC_gen("P-256");
    uint8_t msg[384] = {1}, sig[80];
    size_t sl = sizeof sig;
    EVP_MD_CTX *m = EVP_MD_CTX_new();
    if (!k || !m || EVP_DigestSignInit(m, NULL, EVP_sha256(), NULL, k) != 1 ||
        EVP_DigestSign(m, sig, &sl, msg, sizeof msg) != 1)
        die("ECDSA", "cannot sign");
    long n = 0;
    double t0 = now_s(), el;
    do {
        for (int i = 0; i < 100; i++) {
            EVP_MD_CTX_reset(m);
            if (EVP_DigestVerifyInit(m, NULL, EVP_sha256(), NULL, k) != 1 ||
                EVP_DigestVerify(m, sig, sl, msg, sizeof msg) != 1)
                die("ECDSA", "verify failed");
        }
        n += 100;
    } while ((el = now_s() - t0) < g_seconds);
    EVP_MD_CTX_free(m);
    EVP_PKEY_free(k);
    return (double)n / el;
}

int main(int argc, char **argv)
{
    if (argc < 2)
        die("usage", "bench_dcap DATA_DIR [--seconds N] [--threads N]");
    const char *dir = argv[1];
    int threads = 2;
    for (int i = 2; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--seconds"))
            g_seconds = atof(argv[i + 1]);
        else if (!strcmp(argv[i], "--threads"))
            threads = atoi(argv[i + 1]);
    }
    if (threads < 1 || threads > 64 || g_seconds <= 0)
        die("usage", "--threads 1..64, --seconds > 0");
    cl_log_set_level(CL_LOG_WARN);
    char root[4096], files[2][4096], qp[4096];
    snprintf(root, sizeof root, "%s/Intel_SGX_Provisioning_Certification_RootCA.der", dir);
    snprintf(files[0], sizeof files[0], "%s/sgx_quote_collateral.json", dir);
    snprintf(files[1], sizeof files[1], "%s/tdx_quote_collateral.json", dir);
    const char *names[] = {"sgx_quote", "tdx_quote"};
    cl_err err = {0};
    for (int i = 0; i < 2; i++) {
        snprintf(qp, sizeof qp, "%s/%s", dir, names[i]);
        if (cl_file_read(qp, CL_ATTEST_QUOTE_MAX, &g_quote[i], &g_len[i], &err) != 0)
            die(qp, err.msg);
    }
    const char *fl[] = {files[0], files[1]};
    cl_dcap_config cfg = {.root_ca_file = root, .collateral_files = fl, .collateral_count = 2, .now_unix = SGX_AT};
    if (!(g_src = cl_dcap_source_new(&cfg, &err)))
        die("collateral", err.msg);
    double floor_s = ecdsa_per_s();
    bench_out_config("dcap", "the real SGX and TDX quotes of %s, collateral cached, %.1f s per measurement, 1 and %d "
                     "threads; goal: <= 1000 us per verification", dir, g_seconds, threads);
    const int sigs = 2; /* QE report, quote */
    for (int i = 0; i < 2; i++) {
        /* the first verification with this collateral: every check */
        cl_dcap_source_set_time(g_src, i ? TDX_AT : SGX_AT);
        cl_dcap_source_reload(g_src, &err);
        cl_attest_quote q;
        cl_dcap_result r;
        if (cl_attest_quote_parse(g_quote[i], g_len[i], &q, &err) != 0)
            die("quote", err.msg);
        double c0 = now_s();
        if (cl_dcap_source_verify(g_src, &q, &r, &err) != 0)
            die(names[i], err.msg);
        double cold_us = (now_s() - c0) * 1e6;
        double one = run(i, 1), many = threads > 1 ? run(i, threads) : one;
        double us = 1e6 / one;
        printf("bench_dcap: %s: %.0f verifications/s on 1 thread = %.0f us each (goal <= 1000 us: %.2fx the goal); "
               "%d threads: %.0f/s; first with its collateral: %.0f us; the %d ECDSA checks of the quote alone: "
               "%.0f us (verification = %.2fx that floor)\n",
               names[i], one, us, us / 1000.0, threads, many, cold_us, sigs, sigs * 1e6 / floor_s,
               us / (sigs * 1e6 / floor_s));
        char metric[96];
        snprintf(metric, sizeof metric, "%s: one verification, 1 thread", names[i]);
        bench_out_figure("dcap", &(bench_figure){.metric = metric, .value = us, .unit = "us", .better = "lower",
                                                 .peer = "the quote's 2 ECDSA P-256 checks alone (OpenSSL)",
                                                 .peer_value = sigs * 1e6 / floor_s, .ratio_of = "verification/ECDSA floor",
                                                 .ratio = us / (sigs * 1e6 / floor_s), .goal = "<= 1000",
                                                 .goal_on_value = true});
        snprintf(metric, sizeof metric, "%s: verifications/s on %d threads", names[i], threads);
        bench_out_figure("dcap", &(bench_figure){.metric = metric, .value = many, .unit = "verifications/s"});
        snprintf(metric, sizeof metric, "%s: first verification with its collateral", names[i]);
        bench_out_figure("dcap", &(bench_figure){.metric = metric, .value = cold_us, .unit = "us", .better = "lower"});
    }
    cl_dcap_source_free(g_src);
    free(g_quote[0]);
    free(g_quote[1]);
    return 0;
}
