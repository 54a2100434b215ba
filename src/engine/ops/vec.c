/* engine/ops/vec.c — the fast paths of the plain-C elementwise kernels (elementwise.c and layout.c call
 * them; their scalar loops stay as the reference the tests compare with): float32 binary arithmetic and
 * comparison with broadcasting (Add, Sub, Mul, Div, Pow, Max, Min, PRelu, Equal, Less, Greater, ...), Where
 * and Expand for any element size, unary float32 math, and Cast between the common types. Each walks the
 * broadcast plan (par.h: same shape, scalar operand and per-channel/row broadcast all become inner runs
 * with stride 1 or 0), its inner loops are specialised per stride pattern and written for the compiler to
 * vectorise (`#pragma omp simd`; with GCC also cloned for AVX2 and AVX-512, picked at run time), and the
 * work is split over the engine's OpenMP team above the size threshold (eng_par_for). Results are the
 * reference's bit for bit except the unary math functions, which use libm's float versions (expf, tanhf,
 * erff, ...: within an ulp of the double ones the reference rounds).
 */
#include <math.h>
#include <string.h>

#include "engine/ops/par.h"
#include "engine/ops/vec.h"

/* clang cannot honour `omp simd` in an unoptimised (Debug, sanitizer) build and warns that each loop
 * was not vectorized; the loops are correct either way, so that warning is not an error here */
#if defined(__clang__)
#pragma clang diagnostic ignored "-Wpass-failed"
#endif

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define CLONES
#endif
#define INLINE static inline __attribute__((always_inline))

/* ---------------------------------------------------------------- binary float32 */

/* One inner run: y[i] = a[i*sa] op b[i*sb], sa/sb constant 0 or 1 after inlining. */
#define BIN_LOOP(T, EXPR)                                                                                       \
    INLINE void bin_##T##_run(float *restrict y, uint8_t *restrict yb, const float *restrict a,                \
                              const float *restrict b, int64_t n, int64_t sa, int64_t sb)                       \
    {                                                                                                           \
        (void)y;                                                                                                \
        (void)yb;                                                                                               \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++)                                                     \
        {                                                                                                       \
            float x = a[i * sa], z = b[i * sb];                                                                 \
            (void)z;                                                                                            \
            EXPR;                                                                                               \
        }                                                                                                       \
    }
BIN_LOOP(add, y[i] = x + z)
BIN_LOOP(sub, y[i] = x - z)
BIN_LOOP(mul, y[i] = x * z)
BIN_LOOP(div, y[i] = x / z)
BIN_LOOP(max, y[i] = (x != x || z != z) ? NAN : x > z ? x : z)
BIN_LOOP(min, y[i] = (x != x || z != z) ? NAN : x < z ? x : z)
BIN_LOOP(prelu, y[i] = x >= 0 ? x : x * z)
BIN_LOOP(pow, y[i] = powf(x, z))
BIN_LOOP(sq, y[i] = x * x) /* Pow with the exponent 2 everywhere */
BIN_LOOP(eq, yb[i] = x == z)
BIN_LOOP(lt, yb[i] = x < z)
BIN_LOOP(gt, yb[i] = x > z)
BIN_LOOP(le, yb[i] = x <= z)
BIN_LOOP(ge, yb[i] = x >= z)

#define BIN_MODES(T)                                                                                            \
    switch ((sa ? 2 : 0) | (sb ? 1 : 0)) {                                                                      \
    case 3: bin_##T##_run(y, yb, a, b, n, 1, 1); break;                                                         \
    case 2: bin_##T##_run(y, yb, a, b, n, 1, 0); break;                                                         \
    case 1: bin_##T##_run(y, yb, a, b, n, 0, 1); break;                                                         \
    default: bin_##T##_run(y, yb, a, b, n, 0, 0); break;                                                        \
    }

enum { V_ADD, V_SUB, V_MUL, V_DIV, V_MAX, V_MIN, V_PRELU, V_POW, V_SQ, V_EQ, V_LT, V_GT, V_LE, V_GE };

CLONES static void bin_f32(int op, float *y, uint8_t *yb, const float *a, const float *b, int64_t n, int64_t sa,
                           int64_t sb)
{
    switch (op) {
    case V_ADD: BIN_MODES(add) break;
    case V_SUB: BIN_MODES(sub) break;
    case V_MUL: BIN_MODES(mul) break;
    case V_DIV: BIN_MODES(div) break;
    case V_MAX: BIN_MODES(max) break;
    case V_MIN: BIN_MODES(min) break;
    case V_PRELU: BIN_MODES(prelu) break;
    case V_POW: BIN_MODES(pow) break;
    case V_SQ: BIN_MODES(sq) break;
    case V_EQ: BIN_MODES(eq) break;
    case V_LT: BIN_MODES(lt) break;
    case V_GT: BIN_MODES(gt) break;
    case V_LE: BIN_MODES(le) break;
    default: BIN_MODES(ge) break;
    }
}

typedef struct bin_ctx {
    const eng_bplan *p;
    int op;
    const float *a, *b;
    float *y;
    uint8_t *yb;
} bin_ctx;

static void bin_body(void *c, int64_t e, const int64_t *off, int64_t len)
{
    bin_ctx *x = c;
    int R = x->p->rank;
    bin_f32(x->op, x->y ? x->y + e : NULL, x->yb ? x->yb + e : NULL, x->a + off[0], x->b + off[1], len,
            x->p->st[0][R - 1], x->p->st[1][R - 1]);
}

static void bin_range(void *c, int64_t lo, int64_t hi)
{
    bin_ctx *x = c;
    eng_bplan_walk(x->p, lo, hi, bin_body, c);
}

bool eng_vec_binary(eng_binary_kind k, const eng_tensor *a, const eng_tensor *b, eng_tensor *out,
                    const eng_bcast *bc)
{
    if (eng_kernels_reference || a->dtype != CL_ENGINE_DT_FLOAT || b->dtype != CL_ENGINE_DT_FLOAT)
        return false;
    int op;
    switch (k) {
    case B_ADD: case B_SUM: case B_MEAN: op = V_ADD; break;
    case B_SUB: op = V_SUB; break;
    case B_MUL: op = V_MUL; break;
    case B_DIV: op = V_DIV; break;
    case B_MAX: op = V_MAX; break;
    case B_MIN: op = V_MIN; break;
    case B_PRELU: op = V_PRELU; break;
    case B_POW: op = V_POW; break;
    case B_EQ: op = V_EQ; break;
    case B_LT: op = V_LT; break;
    case B_GT: op = V_GT; break;
    case B_LE: op = V_LE; break;
    case B_GE: op = V_GE; break;
    default: return false;
    }
    bool cmp = op >= V_EQ;
    if (out->dtype != (cmp ? CL_ENGINE_DT_BOOL : CL_ENGINE_DT_FLOAT))
        return false;
    eng_bplan p;
    eng_bplan_make(&p, bc, 2);
    if (op == V_POW && eng_numel(b) == 1 && ((const float *)b->data)[0] == 2.0f)
        op = V_SQ;
    bin_ctx c = {.p = &p, .op = op, .a = a->data, .b = b->data};
    if (cmp)
        c.yb = out->data;
    else
        c.y = out->data;
    eng_par_for(p.total, op == V_POW ? ENG_COST_MATH : ENG_COST_ARITH, 16, bin_range, &c);
    return true;
}

/* Mean's final division, as the reference does it: (float)((double)x / n). */
typedef struct scale_ctx {
    float *y;
    double n;
} scale_ctx;

CLONES static void mean_div(float *y, int64_t n, double d)
{
#pragma omp simd
    for (int64_t i = 0; i < n; i++)
        y[i] = (float)((double)y[i] / d);
}

static void mean_range(void *c, int64_t lo, int64_t hi)
{
    scale_ctx *x = c;
    mean_div(x->y + lo, hi - lo, x->n);
}

bool eng_vec_mean_div(eng_tensor *t, int n)
{
    if (eng_kernels_reference || t->dtype != CL_ENGINE_DT_FLOAT)
        return false;
    scale_ctx c = {.y = t->data, .n = n};
    eng_par_for(eng_numel(t), ENG_COST_ARITH, 16, mean_range, &c);
    return true;
}

/* ---------------------------------------------------------------- Where, Expand: any element size */

#define WHERE_LOOP(T)                                                                                           \
    INLINE void where_##T##_run(T *restrict y, const uint8_t *restrict c, const T *restrict a,                 \
                                const T *restrict b, int64_t n, int64_t sc, int64_t sa, int64_t sb)             \
    {                                                                                                           \
        _Pragma("omp simd") for (int64_t i = 0; i < n; i++) y[i] = c[i * sc] ? a[i * sa] : b[i * sb];           \
    }                                                                                                           \
    CLONES static void where_##T(T *y, const uint8_t *c, const T *a, const T *b, int64_t n, int64_t sc,          \
                                 int64_t sa, int64_t sb)                                                        \
    {                                                                                                           \
        switch ((sc ? 4 : 0) | (sa ? 2 : 0) | (sb ? 1 : 0)) {                                                   \
        case 7: where_##T##_run(y, c, a, b, n, 1, 1, 1); break;                                                 \
        case 6: where_##T##_run(y, c, a, b, n, 1, 1, 0); break;                                                 \
        case 5: where_##T##_run(y, c, a, b, n, 1, 0, 1); break;                                                 \
        case 4: where_##T##_run(y, c, a, b, n, 1, 0, 0); break;                                                 \
        case 3: where_##T##_run(y, c, a, b, n, 0, 1, 1); break;                                                 \
        case 2: where_##T##_run(y, c, a, b, n, 0, 1, 0); break;                                                 \
        case 1: where_##T##_run(y, c, a, b, n, 0, 0, 1); break;                                                 \
        default: where_##T##_run(y, c, a, b, n, 0, 0, 0); break;                                                \
        }                                                                                                       \
    }
WHERE_LOOP(uint8_t)
WHERE_LOOP(uint16_t)
WHERE_LOOP(uint32_t)
WHERE_LOOP(uint64_t)

typedef struct where_ctx {
    const eng_bplan *p;
    size_t es;
    const uint8_t *c;
    const char *a, *b;
    char *y;
} where_ctx;

static void where_body(void *cv, int64_t e, const int64_t *off, int64_t len)
{
    where_ctx *x = cv;
    int R = x->p->rank;
    int64_t sc = x->p->st[0][R - 1], sa = x->p->st[1][R - 1], sb = x->p->st[2][R - 1];
    const uint8_t *c = x->c + off[0];
    size_t es = x->es;
    const void *a = x->a + off[1] * (int64_t)es, *b = x->b + off[2] * (int64_t)es;
    void *y = x->y + e * (int64_t)es;
    switch (es) {
    case 1: where_uint8_t(y, c, a, b, len, sc, sa, sb); break;
    case 2: where_uint16_t(y, c, a, b, len, sc, sa, sb); break;
    case 4: where_uint32_t(y, c, a, b, len, sc, sa, sb); break;
    case 8: where_uint64_t(y, c, a, b, len, sc, sa, sb); break;
    default:
        for (int64_t i = 0; i < len; i++)
            memcpy((char *)y + i * (int64_t)es,
                   c[i * sc] ? (const char *)a + i * sa * (int64_t)es : (const char *)b + i * sb * (int64_t)es, es);
    }
}

static void where_range(void *c, int64_t lo, int64_t hi)
{
    where_ctx *x = c;
    eng_bplan_walk(x->p, lo, hi, where_body, c);
}

bool eng_vec_where(const eng_tensor *c, const eng_tensor *a, const eng_tensor *b, eng_tensor *y, const eng_bcast *bc)
{
    if (eng_kernels_reference)
        return false;
    eng_bplan p;
    eng_bplan_make(&p, bc, 3);
    where_ctx x = {.p = &p, .es = cl_engine_dtype_size(a->dtype), .c = c->data, .a = a->data, .b = b->data,
                   .y = y->data};
    eng_par_for(p.total, ENG_COST_COPY, 64, where_range, &x);
    return true;
}

typedef struct expand_ctx {
    const eng_bplan *p;
    size_t es;
    const char *x;
    char *y;
} expand_ctx;

static void expand_body(void *cv, int64_t e, const int64_t *off, int64_t len)
{
    expand_ctx *c = cv;
    int R = c->p->rank;
    size_t es = c->es;
    const char *src = c->x + off[0] * (int64_t)es;
    char *dst = c->y + e * (int64_t)es;
    if (c->p->st[0][R - 1]) {
        memcpy(dst, src, (size_t)len * es);
        return;
    }
    switch (es) { /* a constant run */
    case 1: memset(dst, *(const uint8_t *)src, (size_t)len); break;
    case 4: {
        uint32_t v;
        memcpy(&v, src, 4);
        uint32_t *d = (uint32_t *)(void *)dst;
        for (int64_t i = 0; i < len; i++)
            d[i] = v;
        break;
    }
    case 8: {
        uint64_t v;
        memcpy(&v, src, 8);
        uint64_t *d = (uint64_t *)(void *)dst;
        for (int64_t i = 0; i < len; i++)
            d[i] = v;
        break;
    }
    default:
        for (int64_t i = 0; i < len; i++)
            memcpy(dst + i * (int64_t)es, src, es);
    }
}

static void expand_range(void *c, int64_t lo, int64_t hi)
{
    expand_ctx *x = c;
    eng_bplan_walk(x->p, lo, hi, expand_body, c);
}

bool eng_vec_expand(const eng_tensor *x, eng_tensor *y, const eng_bcast *bc)
{
    if (eng_kernels_reference)
        return false;
    eng_bplan p;
    eng_bplan_make(&p, bc, 1);
    expand_ctx c = {.p = &p, .es = cl_engine_dtype_size(x->dtype), .x = x->data, .y = y->data};
    eng_par_for(p.total, ENG_COST_COPY, 64, expand_range, &c);
    return true;
}

/* ---------------------------------------------------------------- unary float32 */

typedef struct un_ctx {
    eng_unary_kind k;
    const float *x;
    float *y;
    float a;
    double ad, bd; /* the parameters as the reference uses them (HardSigmoid) */
} un_ctx;

CLONES static void un_cheap(eng_unary_kind k, float *restrict y, const float *restrict x, int64_t n, float a, double ad,
                            double bd)
{
    switch (k) {
    case U_RELU:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? x[i] : 0;
        break;
    case U_LEAKY:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] >= 0 ? x[i] : a * x[i];
        break;
    case U_ABS:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = fabsf(x[i]);
        break;
    case U_NEG:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = -x[i];
        break;
    case U_SQRT:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = sqrtf(x[i]);
        break;
    case U_HSIGMOID: /* in double, as the reference: a*x+b rounded once */
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            double v = ad * x[i] + bd, w = v < 1 ? v : 1; /* fmax(0, fmin(1, v)): NaN gives 1 */
            y[i] = (float)(w > 0 ? w : 0);
        }
        break;
    case U_HSWISH:
#pragma omp simd
        for (int64_t i = 0; i < n; i++) {
            double v = (double)x[i] / 6 + 0.5, w = v < 1 ? v : 1;
            y[i] = (float)(x[i] * (w > 0 ? w : 0));
        }
        break;
    case U_FLOOR:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = floorf(x[i]);
        break;
    case U_CEIL:
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = ceilf(x[i]);
        break;
    default: /* U_SIGN */
#pragma omp simd
        for (int64_t i = 0; i < n; i++)
            y[i] = x[i] > 0 ? 1.0f : x[i] < 0 ? -1.0f : 0.0f;
        break;
    }
}

static void un_math(eng_unary_kind k, float *restrict y, const float *restrict x, int64_t n)
{
    switch (k) {
    case U_EXP: for (int64_t i = 0; i < n; i++) y[i] = expf(x[i]); break;
    case U_LOG: for (int64_t i = 0; i < n; i++) y[i] = logf(x[i]); break;
    case U_TANH: for (int64_t i = 0; i < n; i++) y[i] = tanhf(x[i]); break;
    case U_ERF: for (int64_t i = 0; i < n; i++) y[i] = erff(x[i]); break;
    case U_SIGMOID: for (int64_t i = 0; i < n; i++) y[i] = 1.0f / (1.0f + expf(-x[i])); break;
    case U_GELU: /* 1 + erf(z) as erfc(-z), in double: no cancellation for negative x (erff's form lost
                  * up to 6e-4 of the value near x = -4) */
        for (int64_t i = 0; i < n; i++)
            y[i] = (float)(0.5 * x[i] * erfc(-(double)x[i] * M_SQRT1_2));
        break;
    default: break;
    }
}

static void un_range(void *c, int64_t lo, int64_t hi)
{
    un_ctx *u = c;
    switch (u->k) {
    case U_EXP: case U_LOG: case U_TANH: case U_ERF: case U_SIGMOID: case U_GELU:
        un_math(u->k, u->y + lo, u->x + lo, hi - lo);
        break;
    default: un_cheap(u->k, u->y + lo, u->x + lo, hi - lo, u->a, u->ad, u->bd); break;
    }
}

bool eng_vec_unary(eng_unary_kind k, const eng_tensor *x, eng_tensor *y, double a, double b)
{
    if (eng_kernels_reference || x->dtype != CL_ENGINE_DT_FLOAT || y->dtype != CL_ENGINE_DT_FLOAT)
        return false;
    bool math;
    switch (k) {
    case U_RELU: case U_LEAKY: case U_ABS: case U_NEG: case U_SQRT: case U_HSIGMOID: case U_HSWISH: case U_FLOOR:
    case U_CEIL: case U_SIGN: math = false; break;
    case U_EXP: case U_LOG: case U_TANH: case U_ERF: case U_SIGMOID: case U_GELU: math = true; break;
    default: return false;
    }
    un_ctx c = {.k = k, .x = x->data, .y = y->data, .a = (float)a, .ad = a, .bd = b};
    eng_par_for(eng_numel(x), math ? ENG_COST_MATH : ENG_COST_ARITH, 16, un_range, &c);
    return true;
}

/* ---------------------------------------------------------------- Cast */

typedef struct cast_ctx {
    cl_engine_dtype from, to;
    const void *x;
    void *y;
} cast_ctx;

/* double -> int64 as eng_set_f does it: NaN 0, saturated beyond +-9.2e18 */
INLINE int64_t f2i(double v)
{
    return !(v == v) ? 0 : v >= 9.2e18 ? INT64_MAX : v <= -9.2e18 ? INT64_MIN : (int64_t)v;
}

#define CASE_CAST(F, T, SRC_T, DST_T, EXPR)                                                                     \
    if (c->from == F && c->to == T) {                                                                           \
        const SRC_T *s = (const SRC_T *)c->x + lo;                                                              \
        DST_T *d = (DST_T *)c->y + lo;                                                                          \
        for (int64_t i = 0; i < n; i++) {                                                                       \
            SRC_T v = s[i];                                                                                     \
            d[i] = (EXPR);                                                                                      \
        }                                                                                                       \
        return;                                                                                                 \
    }

CLONES static void cast_range(void *cv, int64_t lo, int64_t hi)
{
    cast_ctx *c = cv;
    int64_t n = hi - lo;
    CASE_CAST(CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_INT64, float, int64_t, f2i(v))
    CASE_CAST(CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_INT32, float, int32_t, (int32_t)f2i(v))
    CASE_CAST(CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_BOOL, float, uint8_t, v != 0)
    CASE_CAST(CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_DOUBLE, float, double, v)
    CASE_CAST(CL_ENGINE_DT_DOUBLE, CL_ENGINE_DT_FLOAT, double, float, (float)v)
    CASE_CAST(CL_ENGINE_DT_INT64, CL_ENGINE_DT_FLOAT, int64_t, float, (float)(double)v)
    CASE_CAST(CL_ENGINE_DT_INT32, CL_ENGINE_DT_FLOAT, int32_t, float, (float)v)
    CASE_CAST(CL_ENGINE_DT_BOOL, CL_ENGINE_DT_FLOAT, uint8_t, float, (float)v)
    CASE_CAST(CL_ENGINE_DT_UINT8, CL_ENGINE_DT_FLOAT, uint8_t, float, (float)v)
    CASE_CAST(CL_ENGINE_DT_INT64, CL_ENGINE_DT_INT32, int64_t, int32_t, (int32_t)v)
    CASE_CAST(CL_ENGINE_DT_INT32, CL_ENGINE_DT_INT64, int32_t, int64_t, v)
    CASE_CAST(CL_ENGINE_DT_BOOL, CL_ENGINE_DT_INT64, uint8_t, int64_t, v)
    CASE_CAST(CL_ENGINE_DT_INT64, CL_ENGINE_DT_BOOL, int64_t, uint8_t, v != 0)
    CASE_CAST(CL_ENGINE_DT_BOOL, CL_ENGINE_DT_INT32, uint8_t, int32_t, v)
    CASE_CAST(CL_ENGINE_DT_INT32, CL_ENGINE_DT_BOOL, int32_t, uint8_t, v != 0)
}

bool eng_vec_cast(const eng_tensor *x, eng_tensor *y)
{
    if (eng_kernels_reference)
        return false;
    static const cl_engine_dtype pairs[][2] = {
        {CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_INT64}, {CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_INT32},
        {CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_BOOL},  {CL_ENGINE_DT_FLOAT, CL_ENGINE_DT_DOUBLE},
        {CL_ENGINE_DT_DOUBLE, CL_ENGINE_DT_FLOAT}, {CL_ENGINE_DT_INT64, CL_ENGINE_DT_FLOAT},
        {CL_ENGINE_DT_INT32, CL_ENGINE_DT_FLOAT}, {CL_ENGINE_DT_BOOL, CL_ENGINE_DT_FLOAT},
        {CL_ENGINE_DT_UINT8, CL_ENGINE_DT_FLOAT}, {CL_ENGINE_DT_INT64, CL_ENGINE_DT_INT32},
        {CL_ENGINE_DT_INT32, CL_ENGINE_DT_INT64}, {CL_ENGINE_DT_BOOL, CL_ENGINE_DT_INT64},
        {CL_ENGINE_DT_INT64, CL_ENGINE_DT_BOOL},  {CL_ENGINE_DT_BOOL, CL_ENGINE_DT_INT32},
        {CL_ENGINE_DT_INT32, CL_ENGINE_DT_BOOL},
    };
    bool ok = false;
    for (size_t i = 0; !ok && i < CL_ARRAY_LEN(pairs); i++)
        ok = pairs[i][0] == x->dtype && pairs[i][1] == y->dtype;
    if (!ok)
        return false;
    cast_ctx c = {.from = x->dtype, .to = y->dtype, .x = x->data, .y = y->data};
    eng_par_for(eng_numel(x), ENG_COST_COPY, 16, cast_range, &c);
    return true;
}
