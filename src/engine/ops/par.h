/* engine/ops/par.h — how the plain-C kernels (src/engine/ops/) use the cores: one thread pool and one
 * thread count for everything, the OpenMP team oneDNN's primitives run on (its size is what
 * cl_engine_options.threads set on the calling thread, exec.c: omp_set_num_threads before load and each
 * run), work split into contiguous ranges only above a size threshold (below it a kernel runs on the
 * calling thread: waking the team costs more than it saves); the broadcast plan the elementwise kernels
 * share (dims collapsed so the inner loop is one contiguous or one broadcast run); and the switches the
 * engine's tests use to compare the fast kernels with the scalar reference path they replace.
 * Private to src/engine. Thread-safety: eng_par_for may be called from any number of threads at once
 * (each caller gets its own team); eng_kernels_set_test is for tests, before runs, not during them.
 */
#ifndef CLOISTER_ENGINE_OPS_PAR_H
#define CLOISTER_ENGINE_OPS_PAR_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/ops/ops.h"

/* Work (in units of a simple element operation: a load, an add, a store) below which a kernel runs on
 * one thread: a guess (some tens of microseconds of work on one core), not yet tuned by measurement
 * (docs/engine.md, "Plain-C kernels"). */
#define ENG_PAR_MIN_WORK 32768
/* Relative cost per element of a few families, so the threshold is in comparable units. */
#define ENG_COST_COPY 1
#define ENG_COST_ARITH 1
#define ENG_COST_MATH 16 /* exp, tanh, erf, pow... */

/* Calls fn(ctx, lo, hi) on disjoint ranges covering [0, n): on the calling thread alone when n * cost is
 * below the threshold, else on the OpenMP team (at most one range per thread; each range starts at a
 * multiple of `align` items, 1 for none). fn must not fail (check everything first). */
typedef void (*eng_range_fn)(void *ctx, int64_t lo, int64_t hi);
void eng_par_for(int64_t n, int64_t cost, int64_t align, eng_range_fn fn, void *ctx);
/* How many threads eng_par_for would use for that much work. */
int eng_par_threads(int64_t n, int64_t cost);

/* Tests only, while no run is in progress: min_work replaces ENG_PAR_MIN_WORK (1 = split everything,
 * to test odd splits; 0 = back to the default); reference = run the scalar reference paths instead of
 * the fast kernels. */
void eng_kernels_set_test(int64_t min_work, bool reference);
extern bool eng_kernels_reference;
/* For tests: how many times eng_par_for ran (i.e. a fast path ran) and how many of those split the work
 * over more than one thread, since the process started (relaxed atomic counters, any thread). */
void eng_kernels_stats(int64_t *calls, int64_t *splits);

/* ---------------------------------------------------------------- broadcast plan
 * The numpy broadcast of up to 3 operands with dims of size 1 dropped and adjacent dims merged where
 * every operand is laid out alike, so that e.g. [N,C,H,W] + [1,C,1,1] becomes [N*C, H*W] with the
 * second operand's strides {1, 0}: the inner dim is a contiguous (stride 1) or constant (stride 0) run
 * for every operand. rank >= 1 unless total is 0. */
typedef struct eng_bplan {
    int rank, nt;
    int64_t dims[CL_ENGINE_MAX_RANK];
    int64_t st[3][CL_ENGINE_MAX_RANK];
    int64_t total;
} eng_bplan;
/* From the broadcast eng_bcast_init computed (ops.h). */
void eng_bplan_make(eng_bplan *p, const eng_bcast *b, int nt);
/* Calls body(ctx, e, off, len) for each inner run of output elements [e, e+len) within [lo, hi), off[k]
 * being operand k's offset of element e; the operand's stride within the run is p->st[k][rank-1]. */
typedef void (*eng_run_fn)(void *ctx, int64_t e, const int64_t *off, int64_t len);
void eng_bplan_walk(const eng_bplan *p, int64_t lo, int64_t hi, eng_run_fn body, void *ctx);

/* dst[i] = src[i * src_stride] for i < n, elements of es bytes (typed loops for 1, 2, 4, 8). */
void eng_copy_strided(void *dst, const void *src, int64_t n, int64_t src_stride, size_t es);

#endif
