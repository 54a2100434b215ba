/* ks_env.h — what the two key-server benchmarks (bench_keyserver, bench_release) share: a scratch
 * directory with a CA, the server's certificate and key, a simulated quoting key, a policy granting
 * this binary's sim identity "model-key" (and, when asked, secret-0..N-1) and a store holding them;
 * and the client thread that repeats whole attested releases of "model-key" and counts them.
 * Benchmark code: process-wide state, set up once by the main thread before any client starts. */
#ifndef CLOISTER_BENCH_KS_ENV_H
#define CLOISTER_BENCH_KS_ENV_H

#include <stdatomic.h>
#include <stdbool.h>

#include "cloister/keyserver.h"

enum { KS_CA, KS_CERT, KS_KEY, KS_SIM, KS_POLICY, KS_DB, KS_MK, KS_NPATHS };

extern const char *g_prog;            /* for messages */
extern char g_dir[], g_path[KS_NPATHS][300];
extern char g_server[64];             /* "127.0.0.1:PORT", set by the benchmark once its server runs */
extern EVP_PKEY *g_qe_key;
extern bool g_fresh;                  /* a new RA-TLS identity for every release */
extern atomic_bool g_stop;
extern atomic_long g_ok, g_fail;
extern atomic_llong g_client_cpu_ns;  /* CPU time of the finished client threads */

_Noreturn void ks_die(const char *what, const cl_err *err);
/* Makes the scratch directory and everything in it; n_extra secrets of extra_size bytes besides
 * "model-key" (32 bytes). */
void ks_env_setup(int n_extra, size_t extra_size);
/* Removes the scratch directory and frees the quoting key. */
void ks_env_cleanup(void);
/* A fresh RA-TLS identity with sim evidence signed by g_qe_key. */
cl_ratls_identity *ks_identity(void);
/* A client thread: releases "model-key" until g_stop (pthread start routine; arg unused). */
void *ks_client(void *arg);

#endif
