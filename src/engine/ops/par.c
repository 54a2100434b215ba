/* engine/ops/par.c — the plain-C kernels' use of the cores (ops/par.h): eng_par_for splits a range over
 * the OpenMP team oneDNN also runs on (same pool, same thread count) when the work is above a threshold;
 * the broadcast plan (collapsed dims, inner runs) the elementwise kernels walk; strided copies.
 */
#include <omp.h>
#include <string.h>

#include "engine/ops/par.h"

bool eng_kernels_reference;
static int64_t par_min_work = ENG_PAR_MIN_WORK;
static int64_t par_calls, par_splits;

void eng_kernels_stats(int64_t *calls, int64_t *splits)
{
    *calls = __atomic_load_n(&par_calls, __ATOMIC_RELAXED);
    *splits = __atomic_load_n(&par_splits, __ATOMIC_RELAXED);
}

void eng_kernels_set_test(int64_t min_work, bool reference)
{
    par_min_work = min_work > 0 ? min_work : ENG_PAR_MIN_WORK;
    eng_kernels_reference = reference;
}

int eng_par_threads(int64_t n, int64_t cost)
{
    if (n <= 1 || omp_in_parallel())
        return 1;
    int nt = omp_get_max_threads();
    if (nt <= 1)
        return 1;
    int64_t work = n * (cost > 0 ? cost : 1);
    if (work < par_min_work)
        return 1;
    /* at least min_work per thread (a test's min_work of 1 gives every thread a part) */
    int64_t by_work = work / par_min_work;
    if (by_work < nt)
        nt = by_work < 2 ? 2 : (int)by_work;
    if (nt > n)
        nt = (int)n;
    return nt;
}

void eng_par_for(int64_t n, int64_t cost, int64_t align, eng_range_fn fn, void *ctx)
{
    __atomic_fetch_add(&par_calls, 1, __ATOMIC_RELAXED);
    if (n <= 0)
        return;
    int nt = eng_par_threads(n, cost);
    if (nt <= 1) {
        fn(ctx, 0, n);
        return;
    }
    if (align < 1)
        align = 1;
    __atomic_fetch_add(&par_splits, 1, __ATOMIC_RELAXED);
#pragma omp parallel num_threads(nt)
    {
        int t = omp_get_thread_num(), T = omp_get_num_threads();
        int64_t units = (n + align - 1) / align;
        int64_t lo = units * t / T * align, hi = units * (t + 1) / T * align;
        if (hi > n)
            hi = n;
        if (lo < hi)
            fn(ctx, lo, hi);
    }
}

void eng_bplan_make(eng_bplan *p, const eng_bcast *b, int nt)
{
    p->nt = nt;
    p->total = b->total;
    p->rank = 0;
    /* drop size-1 dims, merge a dim into the previous kept one when every operand continues linearly */
    for (int d = 0; d < b->rank; d++) {
        if (b->dims[d] == 1)
            continue;
        int r = p->rank;
        bool merge = r > 0;
        for (int k = 0; merge && k < nt; k++)
            merge = p->st[k][r - 1] == b->st[k][d] * b->dims[d];
        if (merge) {
            p->dims[r - 1] *= b->dims[d];
            for (int k = 0; k < nt; k++)
                p->st[k][r - 1] = b->st[k][d];
            continue;
        }
        p->dims[r] = b->dims[d];
        for (int k = 0; k < nt; k++)
            p->st[k][r] = b->st[k][d];
        p->rank++;
    }
    if (p->rank == 0) { /* a scalar result (or all dims 1) */
        p->rank = 1;
        p->dims[0] = 1;
        for (int k = 0; k < nt; k++)
            p->st[k][0] = 0;
    }
}

void eng_bplan_walk(const eng_bplan *p, int64_t lo, int64_t hi, eng_run_fn body, void *ctx)
{
    if (lo >= hi)
        return;
    int R = p->rank, nt = p->nt;
    int64_t L = p->dims[R - 1];
    int64_t idx[CL_ENGINE_MAX_RANK], off[3] = {0, 0, 0};
    /* the multi-index of lo and the operands' offsets there */
    int64_t rem = lo;
    for (int d = R - 1; d >= 0; d--) {
        idx[d] = rem % p->dims[d];
        rem /= p->dims[d];
        for (int k = 0; k < nt; k++)
            off[k] += idx[d] * p->st[k][d];
    }
    int64_t e = lo;
    while (e < hi) {
        int64_t len = L - idx[R - 1];
        if (len > hi - e)
            len = hi - e;
        body(ctx, e, off, len);
        e += len;
        if (e >= hi)
            break;
        /* advance to the start of the next run (the inner index went to L) */
        for (int k = 0; k < nt; k++)
            off[k] += len * p->st[k][R - 1] - L * p->st[k][R - 1];
        idx[R - 1] = 0;
        for (int d = R - 2; d >= 0; d--) {
            idx[d]++;
            for (int k = 0; k < nt; k++)
                off[k] += p->st[k][d];
            if (idx[d] < p->dims[d])
                break;
            for (int k = 0; k < nt; k++)
                off[k] -= p->st[k][d] * p->dims[d];
            idx[d] = 0;
        }
    }
}

void eng_copy_strided(void *dst, const void *src, int64_t n, int64_t s, size_t es)
{
    if (s == 1) {
        memcpy(dst, src, (size_t)n * es);
        return;
    }
    switch (es) {
    case 1: {
        uint8_t *d = dst;
        const uint8_t *x = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = x[i * s];
        break;
    }
    case 2: {
        uint16_t *d = dst;
        const uint16_t *x = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = x[i * s];
        break;
    }
    case 4: {
        uint32_t *d = dst;
        const uint32_t *x = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = x[i * s];
        break;
    }
    case 8: {
        uint64_t *d = dst;
        const uint64_t *x = src;
        for (int64_t i = 0; i < n; i++)
            d[i] = x[i * s];
        break;
    }
    default:
        for (int64_t i = 0; i < n; i++)
            memcpy((char *)dst + i * (int64_t)es, (const char *)src + i * s * (int64_t)es, es);
    }
}
