/* engine/ops/move.c — the fast paths of the plain-C kernels that move data (ops/vec.h): Transpose (dims
 * collapsed, then row copies when the innermost dim stays innermost, else 32x32 tiles so both the reads
 * and the writes stay in cache), Slice (any steps: collapsed strided copy, contiguous runs as memcpy),
 * Concat and Gather (row copies). All split over the engine's OpenMP team above the size threshold
 * (par.h); the callers in layout.c / index.c have checked shapes and indices, so nothing here fails.
 */
#include <string.h>

#include "engine/ops/par.h"
#include "engine/ops/vec.h"

/* ---------------------------------------------------------------- strided copy: y dense, x strided */

typedef struct scopy {
    int rank;
    int64_t od[CL_ENGINE_MAX_RANK], st[CL_ENGINE_MAX_RANK]; /* output dims, input strides (elements) */
    int64_t base;
    size_t es;
    const char *x;
    char *y;
} scopy;

/* Drops dims of 1, merges dim d into d-1 when the input continues linearly. */
static void scopy_collapse(scopy *c)
{
    int r = 0;
    for (int d = 0; d < c->rank; d++) {
        if (c->od[d] == 1)
            continue;
        if (r > 0 && c->st[r - 1] == c->st[d] * c->od[d]) {
            c->od[r - 1] *= c->od[d];
            c->st[r - 1] = c->st[d];
            continue;
        }
        c->od[r] = c->od[d];
        c->st[r] = c->st[d];
        r++;
    }
    if (r == 0) {
        c->od[0] = 1;
        c->st[0] = 1;
        r = 1;
    }
    c->rank = r;
}

static void scopy_range(void *cv, int64_t lo, int64_t hi)
{
    const scopy *c = cv;
    int R = c->rank;
    int64_t L = c->od[R - 1], S = c->st[R - 1], idx[CL_ENGINE_MAX_RANK];
    int64_t rem = lo, off = c->base;
    for (int d = R - 1; d >= 0; d--) {
        idx[d] = rem % c->od[d];
        rem /= c->od[d];
        off += idx[d] * c->st[d];
    }
    int64_t e = lo;
    size_t es = c->es;
    while (e < hi) {
        int64_t len = L - idx[R - 1];
        if (len > hi - e)
            len = hi - e;
        eng_copy_strided(c->y + e * (int64_t)es, c->x + off * (int64_t)es, len, S, es);
        e += len;
        if (e >= hi)
            break;
        off -= idx[R - 1] * S;
        idx[R - 1] = 0;
        for (int d = R - 2; d >= 0; d--) {
            off += c->st[d];
            if (++idx[d] < c->od[d])
                break;
            off -= c->st[d] * c->od[d];
            idx[d] = 0;
        }
    }
}

/* ---------------------------------------------------------------- Transpose */

enum { TILE = 32 };

typedef struct tctx {
    scopy c;                      /* collapsed: output dims, input strides */
    int64_t ost[CL_ENGINE_MAX_RANK]; /* output strides */
    int a, b;                     /* a: output's inner dim; b: the output dim that is the input's inner one */
    int64_t ta, tb, items;        /* tiles along a and b; tiles in all */
} tctx;

#define TILE_LOOP(T)                                                                                            \
    {                                                                                                           \
        T *yp = (T *)(void *)c->c.y + yo;                                                                       \
        const T *xp = (const T *)(const void *)c->c.x + xo;                                                     \
        for (int64_t ib = 0; ib < nb; ib++)                                                                     \
            for (int64_t ia = 0; ia < na; ia++)                                                                 \
                yp[ib * ob + ia] = xp[ib + ia * sa];                                                            \
    }

static void tile_range(void *cv, int64_t lo, int64_t hi)
{
    const tctx *c = cv;
    int R = c->c.rank, a = c->a, b = c->b;
    int64_t sa = c->c.st[a], ob = c->ost[b];
    size_t es = c->c.es;
    for (int64_t it = lo; it < hi; it++) {
        int64_t rem = it;
        int64_t ja = rem % c->ta;
        rem /= c->ta;
        int64_t jb = rem % c->tb;
        rem /= c->tb;
        int64_t xo = c->c.base, yo = 0;
        for (int d = R - 1; d >= 0; d--) {
            if (d == a || d == b)
                continue;
            int64_t i = rem % c->c.od[d];
            rem /= c->c.od[d];
            xo += i * c->c.st[d];
            yo += i * c->ost[d];
        }
        int64_t a0 = ja * TILE, b0 = jb * TILE;
        int64_t na = c->c.od[a] - a0 < TILE ? c->c.od[a] - a0 : TILE;
        int64_t nb = c->c.od[b] - b0 < TILE ? c->c.od[b] - b0 : TILE;
        xo += a0 * sa + b0; /* the input stride along b is 1 */
        yo += a0 + b0 * ob;
        switch (es) {
        case 1: TILE_LOOP(uint8_t) break;
        case 2: TILE_LOOP(uint16_t) break;
        case 4: TILE_LOOP(uint32_t) break;
        case 8: TILE_LOOP(uint64_t) break;
        default:
            for (int64_t ib = 0; ib < nb; ib++)
                for (int64_t ia = 0; ia < na; ia++)
                    memcpy(c->c.y + (yo + ib * ob + ia) * (int64_t)es, c->c.x + (xo + ib + ia * sa) * (int64_t)es, es);
        }
    }
}

bool eng_vec_transpose(const eng_tensor *x, eng_tensor *y, const int64_t *perm)
{
    if (eng_kernels_reference)
        return false;
    int64_t N = eng_numel(x);
    if (N == 0)
        return true;
    int rank = x->rank;
    int64_t ist[CL_ENGINE_MAX_RANK] = {0}, s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        ist[i] = s;
        s *= x->dims[i];
    }
    tctx t = {.c = {.rank = rank, .es = cl_engine_dtype_size(x->dtype), .x = x->data, .y = y->data}};
    for (int i = 0; i < rank; i++) {
        t.c.od[i] = x->dims[perm[i]];
        t.c.st[i] = ist[perm[i]];
    }
    scopy_collapse(&t.c);
    int R = t.c.rank;
    if (t.c.st[R - 1] == 1 || R == 1) { /* rows stay contiguous: row copies */
        eng_par_for(N, ENG_COST_COPY, 16, scopy_range, &t.c);
        return true;
    }
    t.a = R - 1;
    t.b = -1;
    for (int d = 0; d < R - 1; d++)
        if (t.c.st[d] == 1)
            t.b = d;
    if (t.b < 0) { /* cannot happen for a permutation, but a strided copy is always right */
        eng_par_for(N, ENG_COST_COPY, 16, scopy_range, &t.c);
        return true;
    }
    s = 1;
    for (int d = R - 1; d >= 0; d--) {
        t.ost[d] = s;
        s *= t.c.od[d];
    }
    t.ta = (t.c.od[t.a] + TILE - 1) / TILE;
    t.tb = (t.c.od[t.b] + TILE - 1) / TILE;
    t.items = N / (t.c.od[t.a] * t.c.od[t.b]) * t.ta * t.tb;
    /* cost per tile: its average element count (small tiles of a small tensor stay on one thread) */
    eng_par_for(t.items, (N + t.items - 1) / t.items, 1, tile_range, &t);
    return true;
}

/* ---------------------------------------------------------------- Slice */

bool eng_vec_slice(const eng_tensor *x, eng_tensor *y, const int64_t *begin, const int64_t *step)
{
    if (eng_kernels_reference)
        return false;
    int64_t N = eng_numel(y);
    if (N == 0)
        return true;
    scopy c = {.rank = x->rank, .es = cl_engine_dtype_size(x->dtype), .x = x->data, .y = y->data};
    int64_t s = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        c.od[d] = y->dims[d];
        c.st[d] = s * step[d];
        c.base += begin[d] * s;
        s *= x->dims[d];
    }
    scopy_collapse(&c);
    eng_par_for(N, ENG_COST_COPY, 16, scopy_range, &c);
    return true;
}

/* ---------------------------------------------------------------- Concat */

typedef struct cctx {
    eng_tensor *const *ins;
    int n;
    int64_t inner;
    size_t es, orow;
    char *y;
    size_t off[256];
} cctx;

static void concat_range(void *cv, int64_t lo, int64_t hi)
{
    const cctx *c = cv;
    for (int64_t it = lo; it < hi; it++) {
        int64_t o = it / c->n;
        int i = (int)(it % c->n);
        size_t row = c->off[i + 1] - c->off[i];
        memcpy(c->y + (size_t)o * c->orow + c->off[i], (const char *)c->ins[i]->data + (size_t)o * row, row);
    }
}

bool eng_vec_concat(eng_tensor *const *ins, int n, int64_t axis, eng_tensor *y)
{
    if (eng_kernels_reference || n > 255)
        return false;
    cctx c = {.ins = ins, .n = n, .es = cl_engine_dtype_size(y->dtype), .y = y->data};
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < axis; d++)
        outer *= y->dims[d];
    for (int d = (int)axis + 1; d < y->rank; d++)
        inner *= y->dims[d];
    c.off[0] = 0;
    for (int i = 0; i < n; i++)
        c.off[i + 1] = c.off[i] + (size_t)(ins[i]->dims[axis] * inner) * c.es;
    c.orow = c.off[n];
    int64_t items = outer * n;
    if (items == 0 || c.orow == 0)
        return true;
    /* cost per item: the average row, in elements */
    eng_par_for(items, (int64_t)(c.orow / c.es / (size_t)n) + 1, 1, concat_range, &c);
    return true;
}

/* ---------------------------------------------------------------- Gather */

typedef struct gctx {
    const char *x;
    char *y;
    const void *ind;
    bool i64;
    int64_t ni, dim, inner;
    size_t es;
} gctx;

static void gather_range(void *cv, int64_t lo, int64_t hi)
{
    const gctx *c = cv;
    size_t row = (size_t)c->inner * c->es;
    for (int64_t it = lo; it < hi; it++) {
        int64_t o = it / c->ni, i = it % c->ni;
        int64_t v = c->i64 ? ((const int64_t *)c->ind)[i] : ((const int32_t *)c->ind)[i];
        if (v < 0)
            v += c->dim;
        const char *src = c->x + (size_t)(o * c->dim + v) * row;
        char *dst = c->y + (size_t)it * row;
        switch (row) {
        case 4: memcpy(dst, src, 4); break;
        case 8: memcpy(dst, src, 8); break;
        default: memcpy(dst, src, row); break;
        }
    }
}

bool eng_vec_gather(const eng_tensor *x, const eng_tensor *ind, int64_t axis, eng_tensor *y)
{
    if (eng_kernels_reference)
        return false;
    gctx c = {.x = x->data, .y = y->data, .ind = ind->data, .i64 = ind->dtype == CL_ENGINE_DT_INT64,
              .ni = eng_numel(ind), .dim = x->dims[axis], .inner = 1, .es = cl_engine_dtype_size(x->dtype)};
    int64_t outer = 1;
    for (int d = 0; d < axis; d++)
        outer *= x->dims[d];
    for (int d = (int)axis + 1; d < x->rank; d++)
        c.inner *= x->dims[d];
    if (outer * c.ni == 0 || c.inner == 0)
        return true;
    eng_par_for(outer * c.ni, c.inner + 4, 1, gather_range, &c);
    return true;
}
