/* test_engine_kernels.c — the plain-C kernels' fast paths (src/engine/ops/vec.c, move.c, par.c) against
 * the scalar reference loops they replace (elementwise.c, layout.c, index.c with eng_kernels_set_test's
 * reference switch): every case is a one-node model built in memory, run once on the fast path and once
 * on the reference, and the outputs must match bit for bit (NaN matching NaN; within a few ulp for the
 * float math functions, which use libm's float versions). Shapes cover each broadcast kind (same shape,
 * scalar, per channel, both operands broadcast, outer broadcast), sizes that are not a multiple of the
 * vector width, sizes on both sides of the threading threshold, 1 and 2 threads with the default
 * threshold and with every range split (min_work 1), tiled transposes of odd, non-square dims,
 * negative/strided slices, Concat on each axis and Gather with negative int32/int64 indices. The
 * kernels' counters (eng_kernels_stats) check that the fast path did run and whether it split the work.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "cloister/engine.h"
#include "engine/ops/par.h"
#include "onnx_build.h"

/* ---------------------------------------------------------------- building one-node models (onnx_build.h) */

/* ONNX data types of the cl_engine dtypes used here */
static int onnx_dt(cl_engine_dtype d)
{
    switch (d) {
    case CL_ENGINE_DT_FLOAT: return 1;
    case CL_ENGINE_DT_UINT8: return 2;
    case CL_ENGINE_DT_INT32: return 6;
    case CL_ENGINE_DT_INT64: return 7;
    case CL_ENGINE_DT_BOOL: return 9;
    case CL_ENGINE_DT_DOUBLE: return 11;
    default: fail_msg("dtype %d not used by this test", (int)d);
    }
    return 0;
}

typedef struct in_t {
    cl_engine_dtype dt;
    int rank;
    int64_t dims[6];
} in_t;

typedef struct kcase {
    const char *op;
    int nin;
    in_t in[5];
    int n_ints;           /* an ints attribute (perm) */
    const char *ints_name;
    int64_t ints[6];
    bool has_axis;
    int64_t axis;
    int has_to;           /* Cast */
    cl_engine_dtype to;
    cl_engine_dtype out_dt;
    int64_t const_i64[4][6]; /* inputs given as int64 values (Slice's starts/ends/axes/steps, Expand's shape) */
    int n_const;            /* the last n_const inputs are those */
    bool big;               /* above the default threshold: must split with 2 threads */
    float ulp;              /* allowed difference in ulp (0: bit for bit) */
    float scalar_b;         /* nonzero: input 1 (a scalar) holds this value */
    double abs_tol;         /* also accepted: a difference up to this (Gelu: the reference's 1 + erf(z) in
                             * double cancels for x below about -6, the fast path's erfc does not) */
} kcase;

/* The case's node as a model: its data inputs with every dim dynamic (shapes come from the inputs), the
 * int64 inputs as initializers, opset 17. */
static uint8_t *pack_model(const kcase *c, size_t *len)
{
    mb m;
    mb_init(&m);
    char ins[64] = "";
    for (int i = 0; i < c->nin; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "x%d", i);
        if (i < c->nin - c->n_const) {
            const int64_t dynamic[6] = {-1, -1, -1, -1, -1, -1};
            mb_input(&m, nm, onnx_dt(c->in[i].dt), c->in[i].rank, dynamic);
        } else {
            mb_init_tensor(&m, nm, 7, 1, c->in[i].dims, c->const_i64[i - (c->nin - c->n_const)],
                           (size_t)c->in[i].dims[0] * 8);
        }
        if (i)
            strcat(ins, ",");
        strcat(ins, nm);
    }
    Onnx__NodeProto *n = mb_node(&m, c->op, "n", ins, "y");
    if (c->n_ints)
        attr_ints(n, c->ints_name, (size_t)c->n_ints, c->ints);
    if (c->has_to)
        attr_i(n, "to", onnx_dt(c->to));
    else if (c->has_axis)
        attr_i(n, "axis", c->axis);
    mb_output(&m, "y", onnx_dt(c->out_dt), 0, NULL);
    uint8_t *buf = mb_pack(&m, 17, len);
    arena_free();
    return buf;
}

/* ---------------------------------------------------------------- inputs and comparison */

static uint64_t rng_state;

static uint64_t rnd(void)
{
    rng_state = rng_state * 6364136223846793005ULL + 1442695040888963407ULL;
    return rng_state >> 33;
}

/* Values with signs, fractions, exact integers, zeros, and (for floats) a few NaNs and infinities. */
static void fill(cl_engine_tensor *t, const in_t *in, bool index_like, int64_t index_dim)
{
    int64_t n = 1;
    t->dtype = in->dt;
    t->rank = in->rank;
    for (int d = 0; d < in->rank; d++) {
        t->dims[d] = in->dims[d];
        n *= in->dims[d];
    }
    size_t es = cl_engine_dtype_size(in->dt);
    t->nbytes = (size_t)n * es;
    t->data = calloc(1, t->nbytes ? t->nbytes : 1);
    assert_non_null(t->data);
    for (int64_t i = 0; i < n; i++) {
        uint64_t r = rnd();
        double v = (double)(int64_t)(r % 4001) / 100.0 - 20.0;
        if (r % 7 == 0)
            v = (double)(int64_t)(r % 9) - 4;
        switch (in->dt) {
        case CL_ENGINE_DT_FLOAT: {
            float f = (float)v;
            if (r % 97 == 0)
                f = NAN;
            else if (r % 89 == 0)
                f = r % 2 ? INFINITY : -INFINITY;
            ((float *)t->data)[i] = f;
            break;
        }
        case CL_ENGINE_DT_DOUBLE: ((double *)t->data)[i] = v * 1.0000001; break;
        case CL_ENGINE_DT_INT64:
            ((int64_t *)t->data)[i] = index_like ? (int64_t)(r % (uint64_t)(2 * index_dim)) - index_dim
                                                 : (int64_t)v * 1000003;
            break;
        case CL_ENGINE_DT_INT32:
            ((int32_t *)t->data)[i] = index_like ? (int32_t)(r % (uint64_t)(2 * index_dim)) - (int32_t)index_dim
                                                 : (int32_t)v * 1009;
            break;
        case CL_ENGINE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)r; break;
        case CL_ENGINE_DT_BOOL: ((uint8_t *)t->data)[i] = (uint8_t)(r % 3 == 0); break;
        default: fail_msg("dtype %d", (int)in->dt);
        }
    }
}

static int64_t float_ord(float f)
{
    int32_t i;
    memcpy(&i, &f, 4);
    return i < 0 ? (int64_t)INT32_MIN - i : i;
}

static void compare(const kcase *c, const char *what, const cl_engine_tensor *fast, const cl_engine_tensor *ref)
{
    assert_int_equal(fast->dtype, ref->dtype);
    assert_int_equal(fast->rank, ref->rank);
    for (int d = 0; d < ref->rank; d++)
        assert_int_equal(fast->dims[d], ref->dims[d]);
    assert_int_equal(fast->nbytes, ref->nbytes);
    if (ref->dtype == CL_ENGINE_DT_FLOAT) {
        const float *a = fast->data, *b = ref->data;
        for (size_t i = 0; i < ref->nbytes / 4; i++) {
            if (isnan(a[i]) && isnan(b[i]))
                continue;
            int64_t d = float_ord(a[i]) - float_ord(b[i]);
            if (d < 0)
                d = -d;
            if (isnan(a[i]) || isnan(b[i]) || ((float)d > c->ulp && !(fabs((double)a[i] - b[i]) <= c->abs_tol)))
                fail_msg("%s %s: element %zu is %.9g, the reference %.9g", c->op, what, i, (double)a[i], (double)b[i]);
        }
    } else if (memcmp(fast->data, ref->data, ref->nbytes) != 0) {
        size_t es = cl_engine_dtype_size(ref->dtype);
        for (size_t i = 0; i < ref->nbytes; i++)
            if (((const uint8_t *)fast->data)[i] != ((const uint8_t *)ref->data)[i])
                fail_msg("%s %s: element %zu differs from the reference", c->op, what, i / es);
    }
}

/* Runs the case with 1 and 2 threads, the default threshold and min_work 1, fast and reference. */
static void run_case(const kcase *c, uint64_t seed)
{
    size_t len;
    uint8_t *buf = pack_model(c, &len);
    cl_engine_tensor ins[5];
    rng_state = seed;
    int nrun = c->nin - c->n_const;
    int64_t index_dim = 1;
    if (strcmp(c->op, "Gather") == 0) {
        int64_t ax = c->axis < 0 ? c->axis + c->in[0].rank : c->axis;
        index_dim = c->in[0].dims[ax];
    }
    for (int i = 0; i < nrun; i++)
        fill(&ins[i], &c->in[i], strcmp(c->op, "Gather") == 0 && i == 1, index_dim);
    if (c->scalar_b != 0)
        ((float *)ins[1].data)[0] = c->scalar_b;
    for (int threads = 1; threads <= 2; threads++) {
        cl_err err = {0};
        cl_engine_model *m = NULL;
        if (cl_engine_load(buf, len, &(cl_engine_options){.threads = threads, .no_warmup = true}, &m, &err) != 0)
            fail_msg("%s: load: %s", c->op, err.msg);
        for (int split_all = 0; split_all <= 1; split_all++) {
            cl_engine_tensor ref = {0}, fast = {0};
            eng_kernels_set_test(0, true);
            if (cl_engine_run(m, ins, (size_t)nrun, &ref, 1, &err) != 0)
                fail_msg("%s reference: %s", c->op, err.msg);
            eng_kernels_set_test(split_all ? 1 : 0, false);
            int64_t calls0, splits0, calls1, splits1;
            eng_kernels_stats(&calls0, &splits0);
            if (cl_engine_run(m, ins, (size_t)nrun, &fast, 1, &err) != 0)
                fail_msg("%s fast: %s", c->op, err.msg);
            eng_kernels_stats(&calls1, &splits1);
            eng_kernels_set_test(0, false);
            char what[160];
            snprintf(what, sizeof what, "case %llu (%d threads%s)", (unsigned long long)seed, threads,
                     split_all ? ", every range split" : "");
            if (calls1 == calls0)
                fail_msg("%s %s: the fast path did not run", c->op, what);
            bool expect_split = threads == 2 && (split_all || c->big);
            if ((splits1 > splits0) != expect_split)
                fail_msg("%s %s: the work was %ssplit over threads", c->op, what, expect_split ? "not " : "");
            compare(c, what, &fast, &ref);
            cl_engine_tensor_release(&ref);
            cl_engine_tensor_release(&fast);
        }
        cl_engine_free(m);
    }
    for (int i = 0; i < nrun; i++)
        free(ins[i].data);
    free(buf);
}

#define F CL_ENGINE_DT_FLOAT
#define I64 CL_ENGINE_DT_INT64
#define I32 CL_ENGINE_DT_INT32
#define B CL_ENGINE_DT_BOOL
#define U8 CL_ENGINE_DT_UINT8
#define D CL_ENGINE_DT_DOUBLE

/* ---------------------------------------------------------------- binary, Where, Expand */

/* Operand shape pairs: each broadcast kind, odd sizes, both sides of the threshold (32768). */
static const struct {
    in_t a, b;
    bool big; /* for the cheap ops (Pow's cost is computed) */
} bin_shapes[] = {
    {{F, 1, {37}}, {F, 1, {37}}, false},                               /* same shape, odd */
    {{F, 4, {2, 3, 5, 7}}, {F, 4, {1, 3, 1, 1}}, false},               /* per channel */
    {{F, 4, {2, 3, 5, 7}}, {F, 0, {0}}, false},                        /* scalar second */
    {{F, 0, {0}}, {F, 2, {3, 13}}, false},                             /* scalar first */
    {{F, 3, {4, 1, 9}}, {F, 3, {1, 5, 9}}, false},                     /* both broadcast */
    {{F, 2, {3, 1}}, {F, 2, {1, 1001}}, false},                        /* outer product */
    {{F, 2, {5, 7}}, {F, 1, {7}}, false},                              /* lower rank, row broadcast */
    {{F, 4, {2, 64, 33, 17}}, {F, 3, {64, 1, 17}}, true},              /* above the threshold */
    {{F, 3, {3, 97, 131}}, {F, 3, {3, 97, 131}}, true},                /* same shape, big, odd */
    {{F, 3, {2, 1, 16411}}, {F, 3, {1, 3, 1}}, true},                  /* inner runs of stride 0 for b */
};

static void test_binary(void **state)
{
    (void)state;
    static const struct {
        const char *op;
        bool cmp;
        float ulp;
    } ops[] = {{"Add", false, 0},  {"Sub", false, 0},     {"Mul", false, 0},     {"Div", false, 0},
               {"Max", false, 0},  {"Min", false, 0},     {"PRelu", false, 0},   {"Pow", false, 2},
               {"Equal", true, 0}, {"Less", true, 0},     {"Greater", true, 0},  {"LessOrEqual", true, 0},
               {"GreaterOrEqual", true, 0}};
    for (size_t o = 0; o < CL_ARRAY_LEN(ops); o++)
        for (size_t s = 0; s < CL_ARRAY_LEN(bin_shapes); s++) {
            if (strcmp(ops[o].op, "PRelu") == 0 && (s == 3 || s == 4 || s == 5 || s == 9))
                continue; /* PRelu's slope broadcasts to x, x does not broadcast */
            bool pw = strcmp(ops[o].op, "Pow") == 0;
            int64_t n = 1;
            for (int d = 0; d < 4; d++) {
                int64_t da = d < 4 - bin_shapes[s].a.rank ? 1 : bin_shapes[s].a.dims[d - (4 - bin_shapes[s].a.rank)];
                int64_t db = d < 4 - bin_shapes[s].b.rank ? 1 : bin_shapes[s].b.dims[d - (4 - bin_shapes[s].b.rank)];
                n *= da > db ? da : db;
            }
            kcase c = {.op = ops[o].op, .nin = 2, .in = {bin_shapes[s].a, bin_shapes[s].b},
                       .out_dt = ops[o].cmp ? B : F, .ulp = ops[o].ulp,
                       .big = n * (pw ? ENG_COST_MATH : ENG_COST_ARITH) >= ENG_PAR_MIN_WORK};
            run_case(&c, 100 + o * 31 + s);
        }
    /* Pow by the constant 2 (the x*x loop) and Mean/Sum of two */
    kcase sq = {.op = "Pow", .nin = 2, .in = {{F, 2, {3, 1001}}, {F, 0, {0}}}, .out_dt = F, .scalar_b = 2};
    run_case(&sq, 7);
    kcase mean = {.op = "Mean", .nin = 2, .in = {{F, 3, {3, 97, 131}}, {F, 1, {131}}}, .out_dt = F, .big = true};
    run_case(&mean, 8);
    kcase mean_small = {.op = "Mean", .nin = 2, .in = {{F, 2, {3, 5}}, {F, 2, {3, 1}}}, .out_dt = F};
    run_case(&mean_small, 9);
    kcase sum = {.op = "Sum", .nin = 2, .in = {{F, 2, {3, 5}}, {F, 2, {1, 5}}}, .out_dt = F};
    run_case(&sum, 10);
}

static void test_where_expand(void **state)
{
    (void)state;
    const cl_engine_dtype dts[] = {F, I64, U8, B};
    for (size_t k = 0; k < CL_ARRAY_LEN(dts); k++) {
        cl_engine_dtype t = dts[k];
        kcase w[] = {
            {.op = "Where", .nin = 3, .in = {{B, 3, {2, 1, 7}}, {t, 3, {1, 5, 7}}, {t, 0, {0}}}, .out_dt = t},
            {.op = "Where", .nin = 3, .in = {{B, 1, {45}}, {t, 1, {45}}, {t, 1, {45}}}, .out_dt = t},
            {.op = "Where", .nin = 3, .in = {{B, 0, {0}}, {t, 2, {3, 11}}, {t, 2, {1, 11}}}, .out_dt = t},
            {.op = "Where", .nin = 3, .in = {{B, 3, {4, 97, 131}}, {t, 3, {4, 1, 131}}, {t, 2, {97, 1}}},
             .out_dt = t, .big = true},
        };
        for (size_t i = 0; i < CL_ARRAY_LEN(w); i++)
            run_case(&w[i], 300 + k * 10 + i);
        kcase e[] = {
            {.op = "Expand", .nin = 2, .in = {{t, 3, {3, 1, 5}}, {I64, 1, {4}}}, .n_const = 1,
             .const_i64 = {{2, 3, 4, 5}}, .out_dt = t},
            {.op = "Expand", .nin = 2, .in = {{t, 2, {1, 1}}, {I64, 1, {2}}}, .n_const = 1, .const_i64 = {{7, 3}},
             .out_dt = t},
            {.op = "Expand", .nin = 2, .in = {{t, 3, {1, 64, 1}}, {I64, 1, {3}}}, .n_const = 1,
             .const_i64 = {{8, 64, 101}}, .out_dt = t, .big = true},
            {.op = "Expand", .nin = 2, .in = {{t, 2, {9, 4099}}, {I64, 1, {3}}}, .n_const = 1,
             .const_i64 = {{3, 9, 4099}}, .out_dt = t, .big = true},
        };
        for (size_t i = 0; i < CL_ARRAY_LEN(e); i++)
            run_case(&e[i], 400 + k * 10 + i);
    }
}

/* ---------------------------------------------------------------- unary, Cast */

static void test_unary(void **state)
{
    (void)state;
    static const struct {
        const char *op;
        float ulp;
    } ops[] = {{"Abs", 0}, {"Neg", 0}, {"Sqrt", 0},   {"HardSigmoid", 0}, {"Floor", 0}, {"Ceil", 0},
               {"Sign", 0}, {"Exp", 4}, {"Log", 4},   {"Erf", 4},         {"Gelu", 8}};
    const in_t shapes[] = {{F, 1, {37}}, {F, 3, {3, 7, 5}}, {F, 3, {3, 100, 111}}};
    for (size_t o = 0; o < CL_ARRAY_LEN(ops); o++)
        for (size_t s = 0; s < CL_ARRAY_LEN(shapes); s++) {
            bool math = ops[o].ulp > 0;
            int64_t n = 1;
            for (int d = 0; d < shapes[s].rank; d++)
                n *= shapes[s].dims[d];
            kcase c = {.op = ops[o].op, .nin = 1, .in = {shapes[s]}, .out_dt = F, .ulp = ops[o].ulp,
                       .abs_tol = strcmp(ops[o].op, "Gelu") == 0 ? 1e-12 : 0,
                       .big = n * (math ? ENG_COST_MATH : ENG_COST_ARITH) >= ENG_PAR_MIN_WORK};
            run_case(&c, 500 + o * 7 + s);
        }
}

static void test_cast(void **state)
{
    (void)state;
    static const cl_engine_dtype pairs[][2] = {
        {F, I64}, {F, I32}, {F, B},   {F, D},   {D, F},   {I64, F}, {I32, F}, {B, F},
        {U8, F},  {I64, I32}, {I32, I64}, {B, I64}, {I64, B}, {B, I32}, {I32, B},
    };
    for (size_t p = 0; p < CL_ARRAY_LEN(pairs); p++) {
        kcase small = {.op = "Cast", .nin = 1, .in = {{pairs[p][0], 2, {3, 13}}}, .has_to = 1, .to = pairs[p][1],
                       .out_dt = pairs[p][1]};
        run_case(&small, 600 + p);
        kcase big = {.op = "Cast", .nin = 1, .in = {{pairs[p][0], 2, {7, 5003}}}, .has_to = 1, .to = pairs[p][1],
                     .out_dt = pairs[p][1], .big = true};
        run_case(&big, 700 + p);
    }
}

/* ---------------------------------------------------------------- Transpose, Slice, Concat, Gather */

static void test_transpose(void **state)
{
    (void)state;
    static const struct {
        in_t x;
        int64_t perm[6];
        bool big;
    } cases[] = {
        {{F, 2, {37, 53}}, {1, 0}, false},                    /* tiled, partial tiles on both dims */
        {{F, 2, {1, 53}}, {1, 0}, false},                     /* a dim of 1: a plain copy */
        {{F, 4, {2, 33, 65, 3}}, {0, 2, 1, 3}, false},        /* inner dim stays: row copies */
        {{F, 4, {4, 3, 45, 77}}, {0, 3, 1, 2}, true},         /* NCHW -> NWCH-like, tiled */
        {{F, 3, {5, 200, 70}}, {2, 1, 0}, true},              /* rank 3 reversed */
        {{F, 4, {2, 49, 3, 33}}, {0, 2, 1, 3}, false},        /* swin-like window shuffle */
        {{F, 5, {2, 3, 7, 5, 9}}, {0, 4, 2, 1, 3}, false},    /* rank 5 */
        {{I64, 3, {3, 31, 67}}, {0, 2, 1}, false},            /* 8-byte elements */
        {{U8, 3, {2, 129, 257}}, {2, 0, 1}, true},            /* 1-byte elements, odd */
        {{F, 3, {16, 96, 97}}, {0, 2, 1}, true},              /* batched, both sides of a tile */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        kcase c = {.op = "Transpose", .nin = 1, .in = {cases[i].x}, .n_ints = cases[i].x.rank, .ints_name = "perm",
                   .out_dt = cases[i].x.dt, .big = cases[i].big};
        memcpy(c.ints, cases[i].perm, sizeof c.ints);
        run_case(&c, 800 + i);
    }
}

static void test_slice(void **state)
{
    (void)state;
    static const struct {
        in_t x;
        int n;
        int64_t starts[4], ends[4], axes[4], steps[4];
        bool big;
    } cases[] = {
        {{F, 3, {20, 31, 9}}, 1, {2}, {29}, {1}, {1}, false},                           /* contiguous rows */
        {{F, 3, {20, 31, 9}}, 1, {-1}, {-1000}, {1}, {-2}, false},                      /* negative step */
        {{F, 3, {20, 31, 9}}, 2, {1, 8}, {19, 0}, {0, 2}, {3, -3}, false},              /* strided both */
        {{F, 3, {20, 31, 9}}, 1, {0}, {INT64_MAX}, {-1}, {2}, false},                   /* inner stride 2 */
        {{I64, 2, {13, 17}}, 2, {-3, 1}, {-13, 16}, {0, 1}, {-1, 5}, false},            /* int64, negative starts */
        {{F, 3, {64, 40, 30}}, 1, {-1}, {INT64_MIN}, {2}, {-1}, true},                 /* reversed inner, big */
        {{F, 4, {2, 64, 40, 30}}, 2, {0, 1}, {INT64_MAX, 40}, {1, 3}, {1, 2}, true},    /* big, step 2 inner */
        {{U8, 2, {300, 301}}, 1, {299}, {-400}, {0}, {-1}, true},                      /* bytes, reversed rows */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        int n = cases[i].n;
        kcase c = {.op = "Slice", .nin = 5, .in = {cases[i].x, {I64, 1, {n}}, {I64, 1, {n}}, {I64, 1, {n}}},
                   .n_const = 4, .out_dt = cases[i].x.dt, .big = cases[i].big};
        c.in[4] = (in_t){I64, 1, {n}};
        memcpy(c.const_i64[0], cases[i].starts, sizeof cases[i].starts);
        memcpy(c.const_i64[1], cases[i].ends, sizeof cases[i].ends);
        memcpy(c.const_i64[2], cases[i].axes, sizeof cases[i].axes);
        memcpy(c.const_i64[3], cases[i].steps, sizeof cases[i].steps);
        run_case(&c, 900 + i);
    }
}

static void test_concat(void **state)
{
    (void)state;
    kcase cs[] = {
        {.op = "Concat", .nin = 3, .in = {{F, 3, {2, 3, 5}}, {F, 3, {2, 1, 5}}, {F, 3, {2, 4, 5}}}, .has_axis = true,
         .axis = 1, .out_dt = F},
        {.op = "Concat", .nin = 2, .in = {{F, 3, {2, 3, 5}}, {F, 3, {3, 3, 5}}}, .has_axis = true, .axis = 0,
         .out_dt = F},
        {.op = "Concat", .nin = 3, .in = {{I64, 2, {7, 1}}, {I64, 2, {7, 3}}, {I64, 2, {7, 0}}}, .has_axis = true,
         .axis = -1, .out_dt = I64},
        {.op = "Concat", .nin = 2, .in = {{F, 4, {2, 96, 28, 28}}, {F, 4, {2, 32, 28, 28}}}, .has_axis = true,
         .axis = 1, .out_dt = F, .big = true},
        {.op = "Concat", .nin = 4,
         .in = {{U8, 3, {101, 3, 33}}, {U8, 3, {101, 5, 33}}, {U8, 3, {101, 1, 33}}, {U8, 3, {101, 2, 33}}},
         .has_axis = true, .axis = 1, .out_dt = U8, .big = true},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cs); i++)
        run_case(&cs[i], 1000 + i);
}

static void test_gather(void **state)
{
    (void)state;
    kcase cs[] = {
        {.op = "Gather", .nin = 2, .in = {{F, 3, {10, 7, 3}}, {I64, 1, {4}}}, .has_axis = true, .axis = 0,
         .out_dt = F},
        {.op = "Gather", .nin = 2, .in = {{F, 3, {10, 7, 3}}, {I32, 2, {2, 3}}}, .has_axis = true, .axis = 1,
         .out_dt = F},
        {.op = "Gather", .nin = 2, .in = {{I64, 3, {10, 7, 3}}, {I64, 0, {0}}}, .has_axis = true, .axis = -1,
         .out_dt = I64},
        {.op = "Gather", .nin = 2, .in = {{F, 2, {2000, 40}}, {I64, 1, {1500}}}, .has_axis = true, .axis = 0,
         .out_dt = F, .big = true},
        {.op = "Gather", .nin = 2, .in = {{U8, 3, {64, 50, 33}}, {I32, 1, {40}}}, .has_axis = true, .axis = 1,
         .out_dt = U8, .big = true},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cs); i++)
        run_case(&cs[i], 1100 + i);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_binary),    cmocka_unit_test(test_where_expand), cmocka_unit_test(test_unary),
        cmocka_unit_test(test_cast),      cmocka_unit_test(test_transpose),    cmocka_unit_test(test_slice),
        cmocka_unit_test(test_concat),    cmocka_unit_test(test_gather),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
