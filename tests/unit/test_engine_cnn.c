/* test_engine_cnn.c — the CNN side of the engine's load-time passes and oneDNN kernels, each on a graph
 * built in memory the way exporters write it: the plan the loaded model runs (eng_describe_plan: which
 * nodes are left, with a Conv's fused post-ops after '+') and its numbers against the formula computed
 * here in double precision.
 *   - fuse_cnn.c: every decomposed HardSwish / HardSigmoid form becomes one node; a constant per-channel
 *     or scalar Mul / Add after a Conv is folded into its weights and bias, and the cases that must stay
 *     unfolded (a non-constant operand, an operand broadcasting over the spatial dims, a Conv output that
 *     is also a graph output or has two consumers); a weight shared with another Conv and borrowed from
 *     the model buffer is never written in place; Conv + HardSwish / HardSigmoid / Sigmoid post-ops.
 *   - dnnl/conv.c: ConvTranspose (oneDNN deconvolution) with strides, pads, output_padding, group and
 *     dilations against a direct reference.
 *   - dnnl/resample.c: Resize in the modes oneDNN resampling computes exactly (linear half_pixel /
 *     pytorch_half_pixel, nearest with integer factors) and the ones left to ops/resize.c (align_corners,
 *     asymmetric linear, fractional scales), all against the ONNX formula.
 *   - plan.c: one computation written with a depthwise Conv (the planner picks channels-last) and with
 *     the equivalent dense Conv (channel-blocked), mixed with plain-only ops: same numbers either way.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "cloister/engine.h"
#include "engine/internal.h" /* eng_describe_plan, cl_engine_model.act_layout */
#include "onnx_build.h"

#define F 1 /* onnx float */
#define I64 7

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 33) % 20001) / 10000.0f - 1.0f;
}

/* n values uniform in [-scale, scale] */
static float *rand_vec(size_t n, float scale, uint64_t seed)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = scale * frand(&seed);
    return v;
}

static double *dvec(size_t n)
{
    double *v = calloc(n, sizeof *v);
    assert_non_null(v);
    return v;
}

static void scalar_init(mb *m, const char *name, float v)
{
    mb_init_tensor(m, name, F, 0, NULL, &v, sizeof v);
}

static cl_engine_tensor tensor(float *data, int rank, const int64_t *dims)
{
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = rank, .data = data, .nbytes = sizeof(float)};
    for (int i = 0; i < rank; i++) {
        t.dims[i] = dims[i];
        t.nbytes *= (size_t)dims[i];
    }
    return t;
}

static cl_engine_model *load(const uint8_t *buf, size_t len)
{
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = 2}, &m, &err) != 0)
        fail_msg("load: %s", err.msg);
    return m;
}

static void expect_plan(const cl_engine_model *m, const char *plan)
{
    char got[512];
    eng_describe_plan(m, got, sizeof got);
    if (strcmp(got, plan) != 0)
        fail_msg("plan: got \"%s\", expected \"%s\"", got, plan);
}

/* Runs m on its inputs and compares output k (of n_out) with ref (n values) to 1e-4 relative. */
static void expect_out(cl_engine_model *m, const cl_engine_tensor *in, size_t n_in, size_t n_out, size_t k,
                       const double *ref, size_t n)
{
    cl_err err = {0};
    cl_engine_tensor outs[2] = {{0}};
    assert_true(n_out <= 2 && k < n_out);
    if (cl_engine_run(m, in, n_in, outs, n_out, &err) != 0)
        fail_msg("run: %s", err.msg);
    assert_int_equal(outs[k].dtype, CL_ENGINE_DT_FLOAT);
    assert_int_equal((size_t)cl_engine_tensor_numel(&outs[k]), n);
    const float *yp = outs[k].data;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(yp[i] - ref[i]) <= 1e-4 * (1 + fabs(ref[i]))))
            fail_msg("element %zu: %.7g, expected %.7g", i, yp[i], ref[i]);
    for (size_t j = 0; j < n_out; j++)
        cl_engine_tensor_release(&outs[j]);
}

/* Loads buf (freed here), checks the plan and output 0 of n_out. */
static void check_model_outs(uint8_t *buf, size_t len, const char *plan, const cl_engine_tensor *in, size_t n_in,
                             size_t n_out, const double *ref, size_t n)
{
    cl_engine_model *m = load(buf, len);
    free(buf);
    expect_plan(m, plan);
    expect_out(m, in, n_in, n_out, 0, ref, n);
    cl_engine_free(m);
}

static void check_model(uint8_t *buf, size_t len, const char *plan, const cl_engine_tensor *in, const double *ref,
                        size_t n)
{
    check_model_outs(buf, len, plan, in, 1, 1, ref, n);
}

/* ---------------------------------------------------------------- references (NCHW, double) */

typedef struct cgeom {
    int64_t n, c, h, w;        /* input */
    int64_t oc, kh, kw, group; /* weights [oc, c/group, kh, kw] (ConvTranspose: [c, oc/group, kh, kw]) */
    int64_t s, p, d, op;       /* stride, pad (all sides), dilation, output_padding */
} cgeom;

static int64_t conv_oh(const cgeom *g, int64_t in, int64_t k)
{
    return (in + 2 * g->p - g->d * (k - 1) - 1) / g->s + 1;
}

static int64_t deconv_oh(const cgeom *g, int64_t in, int64_t k)
{
    return (in - 1) * g->s - 2 * g->p + g->d * (k - 1) + 1 + g->op;
}

static void conv_ref(const cgeom *g, const float *x, const float *w, const float *b, double *y)
{
    int64_t oh = conv_oh(g, g->h, g->kh), ow = conv_oh(g, g->w, g->kw), cg = g->c / g->group, og = g->oc / g->group;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->oc; o++)
            for (int64_t i = 0; i < oh; i++)
                for (int64_t j = 0; j < ow; j++) {
                    double s = b ? b[o] : 0;
                    for (int64_t ci = 0; ci < cg; ci++)
                        for (int64_t u = 0; u < g->kh; u++)
                            for (int64_t v = 0; v < g->kw; v++) {
                                int64_t ih = i * g->s - g->p + u * g->d, iw = j * g->s - g->p + v * g->d;
                                if (ih < 0 || ih >= g->h || iw < 0 || iw >= g->w)
                                    continue;
                                int64_t c = o / og * cg + ci;
                                s += (double)x[((n * g->c + c) * g->h + ih) * g->w + iw] *
                                     w[((o * cg + ci) * g->kh + u) * g->kw + v];
                            }
                    y[((n * g->oc + o) * oh + i) * ow + j] = s;
                }
}

static void deconv_ref(const cgeom *g, const float *x, const float *w, const float *b, double *y)
{
    int64_t oh = deconv_oh(g, g->h, g->kh), ow = deconv_oh(g, g->w, g->kw), cg = g->c / g->group,
            og = g->oc / g->group;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t o = 0; o < g->oc; o++)
            for (int64_t i = 0; i < oh * ow; i++)
                y[(n * g->oc + o) * oh * ow + i] = b ? b[o] : 0;
    for (int64_t n = 0; n < g->n; n++)
        for (int64_t c = 0; c < g->c; c++)
            for (int64_t ih = 0; ih < g->h; ih++)
                for (int64_t iw = 0; iw < g->w; iw++) {
                    double xv = x[((n * g->c + c) * g->h + ih) * g->w + iw];
                    for (int64_t ol = 0; ol < og; ol++)
                        for (int64_t u = 0; u < g->kh; u++)
                            for (int64_t v = 0; v < g->kw; v++) {
                                int64_t i = ih * g->s - g->p + u * g->d, j = iw * g->s - g->p + v * g->d;
                                if (i < 0 || i >= oh || j < 0 || j >= ow)
                                    continue;
                                int64_t o = c / cg * og + ol;
                                y[((n * g->oc + o) * oh + i) * ow + j] +=
                                    xv * w[((c * og + ol) * g->kh + u) * g->kw + v];
                            }
                }
}

static double hswish(double x)
{
    return x * fmax(0, fmin(6, x + 3)) / 6;
}

static double hsigmoid(double x, double a, double b)
{
    return fmax(0, fmin(1, a * x + b));
}

/* A Conv node `name` (in -> out) with initializers name/W [oc, c/group, k, k] and, with b, name/B. */
static void conv_node(mb *m, const char *name, const char *in, const char *out, const cgeom *g, const float *w,
                      const float *b)
{
    char wn[64], bn[64], ins[200];
    snprintf(wn, sizeof wn, "%s/W", name);
    snprintf(bn, sizeof bn, "%s/B", name);
    const int64_t wd[] = {g->oc, g->c / g->group, g->kh, g->kw}, bd[] = {g->oc};
    mb_init_tensor(m, wn, F, 4, wd, w, sizeof(float) * (size_t)(wd[0] * wd[1] * wd[2] * wd[3]));
    if (b)
        mb_init_tensor(m, bn, F, 1, bd, b, sizeof(float) * (size_t)g->oc);
    snprintf(ins, sizeof ins, b ? "%s,%s,%s" : "%s,%s", in, wn, bn);
    Onnx__NodeProto *n = mb_node(m, "Conv", name, ins, out);
    attr_ints(n, "kernel_shape", 2, (int64_t[]){g->kh, g->kw});
    attr_ints(n, "strides", 2, (int64_t[]){g->s, g->s});
    attr_ints(n, "pads", 4, (int64_t[]){g->p, g->p, g->p, g->p});
    attr_ints(n, "dilations", 2, (int64_t[]){g->d, g->d});
    if (g->group != 1)
        attr_i(n, "group", g->group);
}

/* ---------------------------------------------------------------- decomposed HardSwish / HardSigmoid */

enum { HN = 2, HC = 16, HH = 5, HW = 5, HNUM = HN * HC * HH * HW };

typedef enum {
    H_SIG_DIV,        /* Add(x,3) -> Clip(0,6) -> Div(6): HardSigmoid */
    H_SIG_MUL,        /* Add(3,x) -> Clip -> Mul(1/6) */
    H_SWISH_DIV_MUL,  /* Add -> Clip -> Div(6) -> Mul(x, .) */
    H_SWISH_MULC_MUL, /* Add -> Clip -> Mul(., 1/6) -> Mul(., x) */
    H_SWISH_MUL_DIV,  /* Add -> Clip -> Mul(x, .) -> Div(6) */
    H_SWISH_HSIG,     /* Mul(x, HardSigmoid(x; 1/6, 1/2)) */
    H_SWISH_ATTRS,    /* opset 6: Clip's bounds as attributes, Add -> Clip -> Mul(x, .) -> Div(6) */
    H_KEEP_SHARED,    /* Add -> Clip -> Div(6), the Clip's output also a graph output: unfused */
    H_KEEP_BOUNDS,    /* Add(x,3) -> Clip(0,5) -> Div(6): not a hard sigmoid */
} hform;

/* x [HN,HC,HH,HW] -> the form -> y; with conv, a 3x3 Conv comes first (and absorbs the activation). */
static uint8_t *hard_model(hform f, const float *w, const float *b, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {HN, HC, HH, HW};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y", F, 4, xd);
    if (f == H_KEEP_SHARED)
        mb_output(&m, "c", F, 4, xd);
    const char *x = "x";
    if (w) {
        const cgeom g = {HN, HC, HH, HW, HC, 3, 3, 1, 1, 1, 1, 0};
        conv_node(&m, "conv", "x", "cx", &g, w, b);
        x = "cx";
    }
    char buf[64];
    scalar_init(&m, "three", 3.0f);
    scalar_init(&m, "six", 6.0f);
    scalar_init(&m, "sixth", 1.0f / 6.0f);
    if (f != H_SWISH_ATTRS) {
        scalar_init(&m, "zero", 0.0f);
        scalar_init(&m, "five", 5.0f);
    }
    switch (f) {
    case H_SWISH_HSIG: {
        Onnx__NodeProto *n = mb_node(&m, "HardSigmoid", "hs", x, "s");
        attr_f(n, "alpha", 1.0f / 6.0f);
        attr_f(n, "beta", 0.5f);
        snprintf(buf, sizeof buf, "%s,s", x);
        mb_node(&m, "Mul", "mul", buf, "y");
        break;
    }
    case H_SWISH_ATTRS: {
        snprintf(buf, sizeof buf, "%s,three", x);
        mb_node(&m, "Add", "add", buf, "a");
        Onnx__NodeProto *n = mb_node(&m, "Clip", "clip", "a", "c");
        attr_f(n, "min", 0.0f);
        attr_f(n, "max", 6.0f);
        snprintf(buf, sizeof buf, "%s,c", x);
        mb_node(&m, "Mul", "mul", buf, "p");
        mb_node(&m, "Div", "div", "p,six", "y");
        break;
    }
    default:
        snprintf(buf, sizeof buf, f == H_SIG_MUL ? "three,%s" : "%s,three", x);
        mb_node(&m, "Add", "add", buf, "a");
        mb_node(&m, "Clip", "clip", f == H_KEEP_BOUNDS ? "a,zero,five" : "a,zero,six", "c");
        if (f == H_SIG_DIV || f == H_KEEP_SHARED || f == H_KEEP_BOUNDS) {
            mb_node(&m, "Div", "div", "c,six", "y");
        } else if (f == H_SIG_MUL) {
            mb_node(&m, "Mul", "mul", "c,sixth", "y");
        } else if (f == H_SWISH_DIV_MUL) {
            mb_node(&m, "Div", "div", "c,six", "q");
            snprintf(buf, sizeof buf, "%s,q", x);
            mb_node(&m, "Mul", "mul", buf, "y");
        } else if (f == H_SWISH_MULC_MUL) {
            mb_node(&m, "Mul", "mulc", "c,sixth", "q");
            snprintf(buf, sizeof buf, "q,%s", x);
            mb_node(&m, "Mul", "mul", buf, "y");
        } else {
            snprintf(buf, sizeof buf, "%s,c", x);
            mb_node(&m, "Mul", "mul", buf, "p");
            mb_node(&m, "Div", "div", "p,six", "y");
        }
    }
    uint8_t *out = mb_pack(&m, f == H_SWISH_ATTRS ? 6 : 13, len);
    arena_free();
    return out;
}

static void hard_case(hform f, bool conv, const char *plan)
{
    float *x = rand_vec(HNUM, 5.0f, 11 + (uint64_t)f), *w = rand_vec(HC * HC * 9, 0.15f, 12), *b = rand_vec(HC, 1, 13);
    double *pre = dvec(HNUM), *ref = dvec(HNUM);
    const cgeom g = {HN, HC, HH, HW, HC, 3, 3, 1, 1, 1, 1, 0};
    if (conv)
        conv_ref(&g, x, w, b, pre);
    else
        for (size_t i = 0; i < HNUM; i++)
            pre[i] = x[i];
    bool swish = f != H_SIG_DIV && f != H_SIG_MUL && f != H_KEEP_SHARED && f != H_KEEP_BOUNDS;
    for (size_t i = 0; i < HNUM; i++)
        ref[i] = swish ? hswish(pre[i]) : f == H_KEEP_BOUNDS ? fmax(0, fmin(5, pre[i] + 3)) / 6
                                                               : hsigmoid(pre[i], 1.0 / 6, 0.5);
    size_t len;
    uint8_t *buf = hard_model(f, conv ? w : NULL, conv ? b : NULL, &len);
    const int64_t xd[] = {HN, HC, HH, HW};
    cl_engine_tensor in = tensor(x, 4, xd);
    if (f == H_KEEP_SHARED) { /* y, and the Clip's output as the second graph output */
        cl_engine_model *m = load(buf, len);
        free(buf);
        expect_plan(m, plan);
        expect_out(m, &in, 1, 2, 0, ref, HNUM);
        for (size_t i = 0; i < HNUM; i++)
            ref[i] = fmax(0, fmin(6, pre[i] + 3));
        expect_out(m, &in, 1, 2, 1, ref, HNUM);
        cl_engine_free(m);
    } else {
        check_model(buf, len, plan, &in, ref, HNUM);
    }
    free(x);
    free(w);
    free(b);
    free(pre);
    free(ref);
}

static void test_hard_forms(void **state)
{
    (void)state;
    hard_case(H_SIG_DIV, false, "HardSigmoid");
    hard_case(H_SIG_MUL, false, "HardSigmoid");
    hard_case(H_SWISH_DIV_MUL, false, "HardSwish");
    hard_case(H_SWISH_MULC_MUL, false, "HardSwish");
    hard_case(H_SWISH_MUL_DIV, false, "HardSwish");
    hard_case(H_SWISH_HSIG, false, "HardSwish");
    hard_case(H_SWISH_ATTRS, false, "HardSwish");
    hard_case(H_KEEP_SHARED, false, "Add Clip Div");
    hard_case(H_KEEP_BOUNDS, false, "Add Clip Div");
}

/* the same forms after a Conv: one Conv with the activation as its post-op */
static void test_conv_hard_post(void **state)
{
    (void)state;
    hard_case(H_SIG_DIV, true, "Conv+HardSigmoid");
    hard_case(H_SIG_MUL, true, "Conv+HardSigmoid");
    hard_case(H_SWISH_DIV_MUL, true, "Conv+HardSwish");
    hard_case(H_SWISH_MULC_MUL, true, "Conv+HardSwish");
    hard_case(H_SWISH_MUL_DIV, true, "Conv+HardSwish");
    hard_case(H_SWISH_HSIG, true, "Conv+HardSwish");
    hard_case(H_SWISH_ATTRS, true, "Conv+HardSwish");
    /* the Clip's output is a graph output: no HardSigmoid, but the Add(3) folds into the bias and the Clip
     * becomes the Conv's post-op, the Conv's output being that graph output */
    hard_case(H_KEEP_SHARED, true, "Conv+Clip Div");
}

/* Conv -> Sigmoid / HardSigmoid(alpha 0.2, beta 0.5, ONNX's defaults) / HardSwish (opset 14), depthwise
 * and dense, as squeeze-and-excitation blocks and MobileNetV3 write them */
static void act_case(const char *op, int64_t group)
{
    const cgeom g = {HN, HC, HH, HW, HC, 3, 3, group, 1, 1, 1, 0};
    size_t nw = (size_t)(HC * (HC / group) * 9);
    float *x = rand_vec(HNUM, 3.0f, 21), *w = rand_vec(nw, 0.3f, 22), *b = rand_vec(HC, 1, 23);
    double *ref = dvec(HNUM);
    conv_ref(&g, x, w, b, ref);
    for (size_t i = 0; i < HNUM; i++)
        ref[i] = strcmp(op, "Sigmoid") == 0 ? 1 / (1 + exp(-ref[i])) : strcmp(op, "HardSwish") == 0
                                                                           ? hswish(ref[i])
                                                                           : hsigmoid(ref[i], 0.2, 0.5);
    mb m;
    mb_init(&m);
    const int64_t xd[] = {HN, HC, HH, HW};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y", F, 4, xd);
    conv_node(&m, "conv", "x", "c", &g, w, b);
    mb_node(&m, op, "act", "c", "y");
    size_t len;
    uint8_t *buf = mb_pack(&m, 14, &len);
    arena_free();
    char plan[64];
    snprintf(plan, sizeof plan, "Conv+%s", op);
    cl_engine_tensor in = tensor(x, 4, xd);
    check_model(buf, len, plan, &in, ref, HNUM);
    free(x);
    free(w);
    free(b);
    free(ref);
}

static void test_conv_act_post(void **state)
{
    (void)state;
    const char *ops[] = {"Sigmoid", "HardSigmoid", "HardSwish"};
    for (int i = 0; i < 3; i++) {
        act_case(ops[i], 1);
        act_case(ops[i], HC);
    }
}

/* ---------------------------------------------------------------- constant Mul / Add folded into a Conv */

enum { FN = 2, FC = 8, FO = 16, FH = 6, FW = 6, FX = FN * FC * FH * FW, FY = FN * FO * FH * FW };

typedef enum {
    K_CHAN_MUL_ADD,  /* Mul by [1,FO,1,1], then Add [FO,1,1]: both folded */
    K_SCALAR_MUL,    /* Mul by a scalar (operands swapped) */
    K_ADD_NO_BIAS,   /* a Conv without bias, Add [1,FO,1,1] */
    K_SCALAR_ADD,    /* Add of a [1] tensor */
    K_INPUT_OPERAND, /* Mul by a graph input [1,FO,1,1]: not constant, stays */
    K_SPATIAL,       /* Mul by a constant [1,1,FH,FW]: broadcasts over the spatial dims, stays */
    K_CONV_OUTPUT,   /* the Conv's output is also a graph output: stays */
    K_TWO_USES,      /* y = conv * k + conv: the Conv's output has two consumers, stays */
} kform;

static uint8_t *fold_model(kform f, const float *w, const float *b, const float *k, const float *k2, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {FN, FC, FH, FW}, yd[] = {FN, FO, FH, FW}, kd[] = {1, FO, 1, 1}, k3[] = {FO, 1, 1},
                  sd[] = {1, 1, FH, FW}, one[] = {1};
    mb_input(&m, "x", F, 4, xd);
    if (f == K_INPUT_OPERAND)
        mb_input(&m, "k", F, 4, kd);
    mb_output(&m, "y", F, 4, yd);
    if (f == K_CONV_OUTPUT)
        mb_output(&m, "c", F, 4, yd);
    const cgeom g = {FN, FC, FH, FW, FO, 3, 3, 1, 1, 1, 1, 0};
    conv_node(&m, "conv", "x", "c", &g, w, f == K_ADD_NO_BIAS ? NULL : b);
    switch (f) {
    case K_CHAN_MUL_ADD:
        mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * FO);
        mb_init_tensor(&m, "k2", F, 3, k3, k2, sizeof(float) * FO);
        mb_node(&m, "Mul", "mul", "c,k", "p");
        mb_node(&m, "Add", "add", "p,k2", "y");
        break;
    case K_SCALAR_MUL:
        scalar_init(&m, "k", k[0]);
        mb_node(&m, "Mul", "mul", "k,c", "y");
        break;
    case K_ADD_NO_BIAS:
        mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * FO);
        mb_node(&m, "Add", "add", "c,k", "y");
        break;
    case K_SCALAR_ADD:
        mb_init_tensor(&m, "k", F, 1, one, k, sizeof(float));
        mb_node(&m, "Add", "add", "c,k", "y");
        break;
    case K_INPUT_OPERAND:
    case K_CONV_OUTPUT:
        if (f == K_CONV_OUTPUT)
            mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * FO);
        mb_node(&m, "Mul", "mul", "c,k", "y");
        break;
    case K_SPATIAL:
        mb_init_tensor(&m, "k", F, 4, sd, k, sizeof(float) * FH * FW);
        mb_node(&m, "Mul", "mul", "c,k", "y");
        break;
    case K_TWO_USES:
        mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * FO);
        mb_node(&m, "Mul", "mul", "c,k", "p");
        mb_node(&m, "Add", "add", "p,c", "y");
        break;
    }
    uint8_t *out = mb_pack(&m, 13, len);
    arena_free();
    return out;
}

static void fold_case(kform f, const char *plan)
{
    float *x = rand_vec(FX, 2.0f, 31), *w = rand_vec(FO * FC * 9, 0.3f, 32), *b = rand_vec(FO, 1, 33),
          *k = rand_vec(FO > FH * FW ? FO : FH * FW, 2, 34 + (uint64_t)f), *k2 = rand_vec(FO, 1, 35);
    double *c = dvec(FY), *ref = dvec(FY);
    const cgeom g = {FN, FC, FH, FW, FO, 3, 3, 1, 1, 1, 1, 0};
    conv_ref(&g, x, w, f == K_ADD_NO_BIAS ? NULL : b, c);
    for (size_t i = 0; i < FY; i++) {
        size_t o = i / (FH * FW) % FO, s = i % (FH * FW);
        switch (f) {
        case K_CHAN_MUL_ADD: ref[i] = c[i] * k[o] + k2[o]; break;
        case K_SCALAR_MUL: ref[i] = c[i] * k[0]; break;
        case K_SCALAR_ADD: ref[i] = c[i] + k[0]; break;
        case K_ADD_NO_BIAS: ref[i] = c[i] + k[o]; break;
        case K_SPATIAL: ref[i] = c[i] * k[s]; break;
        case K_TWO_USES: ref[i] = c[i] * k[o] + c[i]; break;
        default: ref[i] = c[i] * k[o];
        }
    }
    size_t len;
    uint8_t *buf = fold_model(f, w, b, k, k2, &len);
    const int64_t xd[] = {FN, FC, FH, FW}, kd[] = {1, FO, 1, 1};
    cl_engine_tensor in[2] = {tensor(x, 4, xd), tensor(k, 4, kd)};
    if (f == K_CONV_OUTPUT) {
        cl_engine_model *m = load(buf, len);
        free(buf);
        expect_plan(m, plan);
        expect_out(m, in, 1, 2, 0, ref, FY);
        expect_out(m, in, 1, 2, 1, c, FY); /* the Conv's own output, unscaled */
        cl_engine_free(m);
    } else {
        check_model_outs(buf, len, plan, in, f == K_INPUT_OPERAND ? 2 : 1, 1, ref, FY);
    }
    free(x);
    free(w);
    free(b);
    free(k);
    free(k2);
    free(c);
    free(ref);
}

static void test_fold_affine(void **state)
{
    (void)state;
    fold_case(K_CHAN_MUL_ADD, "Conv");
    fold_case(K_SCALAR_MUL, "Conv");
    fold_case(K_ADD_NO_BIAS, "Conv");
    fold_case(K_SCALAR_ADD, "Conv");
}

static void test_fold_affine_refused(void **state)
{
    (void)state;
    fold_case(K_INPUT_OPERAND, "Conv Mul");
    fold_case(K_SPATIAL, "Conv Mul");
    fold_case(K_CONV_OUTPUT, "Conv Mul");
    fold_case(K_TWO_USES, "Conv Mul Add");
}

/* Two Convs share one weight initializer (borrowed from the model buffer during the load); only the first
 * is followed by a Mul that folds. The buffer is unchanged after the load, the second Conv still computes
 * with the original weights, and a second load from the same buffer gives the same numbers. */
static void test_fold_borrowed_weight(void **state)
{
    (void)state;
    float *x = rand_vec(FX, 2.0f, 41), *w = rand_vec(FO * FC * 9, 0.3f, 42), *b = rand_vec(FO, 1, 43),
          *k = rand_vec(FO, 2, 44);
    mb m;
    mb_init(&m);
    const int64_t xd[] = {FN, FC, FH, FW}, yd[] = {FN, FO, FH, FW}, kd[] = {1, FO, 1, 1}, wd[] = {FO, FC, 3, 3},
                  bd[] = {FO};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y1", F, 4, yd);
    mb_output(&m, "y2", F, 4, yd);
    mb_init_tensor(&m, "W", F, 4, wd, w, sizeof(float) * FO * FC * 9);
    mb_init_tensor(&m, "B", F, 1, bd, b, sizeof(float) * FO);
    mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * FO);
    for (int i = 0; i < 2; i++) {
        Onnx__NodeProto *n = mb_node(&m, "Conv", i ? "conv2" : "conv1", "x,W,B", i ? "y2" : "c1");
        attr_ints(n, "kernel_shape", 2, (int64_t[]){3, 3});
        attr_ints(n, "pads", 4, (int64_t[]){1, 1, 1, 1});
    }
    mb_node(&m, "Mul", "mul", "c1,k", "y1");
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    uint8_t *copy = malloc(len);
    assert_non_null(copy);
    memcpy(copy, buf, len);
    double *c = dvec(FY), *ref = dvec(FY);
    const cgeom g = {FN, FC, FH, FW, FO, 3, 3, 1, 1, 1, 1, 0};
    conv_ref(&g, x, w, b, c);
    for (size_t i = 0; i < FY; i++)
        ref[i] = c[i] * k[i / (FH * FW) % FO];
    cl_engine_tensor in = tensor(x, 4, xd);
    for (int round = 0; round < 2; round++) {
        cl_engine_model *mod = load(buf, len);
        assert_memory_equal(buf, copy, len);
        expect_plan(mod, "Conv Conv");
        expect_out(mod, &in, 1, 2, 0, ref, FY);
        expect_out(mod, &in, 1, 2, 1, c, FY);
        cl_engine_free(mod);
    }
    free(buf);
    free(copy);
    free(x);
    free(w);
    free(b);
    free(k);
    free(c);
    free(ref);
}

/* ---------------------------------------------------------------- ConvTranspose */

static void deconv_case(const cgeom *g, bool bias)
{
    int64_t oh = deconv_oh(g, g->h, g->kh), ow = deconv_oh(g, g->w, g->kw);
    size_t nx = (size_t)(g->n * g->c * g->h * g->w), nw = (size_t)(g->c * (g->oc / g->group) * g->kh * g->kw),
           ny = (size_t)(g->n * g->oc * oh * ow);
    float *x = rand_vec(nx, 1.0f, 51), *w = rand_vec(nw, 0.5f, 52), *b = rand_vec((size_t)g->oc, 1, 53);
    double *ref = dvec(ny);
    deconv_ref(g, x, w, bias ? b : NULL, ref);
    mb m;
    mb_init(&m);
    const int64_t xd[] = {g->n, g->c, g->h, g->w}, yd[] = {g->n, g->oc, oh, ow},
                  wd[] = {g->c, g->oc / g->group, g->kh, g->kw}, bd[] = {g->oc};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y", F, 4, yd);
    mb_init_tensor(&m, "W", F, 4, wd, w, sizeof(float) * nw);
    if (bias)
        mb_init_tensor(&m, "B", F, 1, bd, b, sizeof(float) * (size_t)g->oc);
    Onnx__NodeProto *n = mb_node(&m, "ConvTranspose", "deconv", bias ? "x,W,B" : "x,W", "y");
    attr_ints(n, "kernel_shape", 2, (int64_t[]){g->kh, g->kw});
    attr_ints(n, "strides", 2, (int64_t[]){g->s, g->s});
    attr_ints(n, "pads", 4, (int64_t[]){g->p, g->p, g->p, g->p});
    attr_ints(n, "dilations", 2, (int64_t[]){g->d, g->d});
    if (g->op)
        attr_ints(n, "output_padding", 2, (int64_t[]){g->op, g->op});
    if (g->group != 1)
        attr_i(n, "group", g->group);
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    cl_engine_tensor in = tensor(x, 4, xd);
    check_model(buf, len, "ConvTranspose", &in, ref, ny);
    free(x);
    free(w);
    free(b);
    free(ref);
}

static void test_convtranspose(void **state)
{
    (void)state;
    /*            n  c   h  w  oc  kh kw grp s  p  d  op */
    cgeom cases[] = {{1, 16, 5, 5, 16, 3, 3, 1, 2, 1, 1, 1},  /* stride 2, pad 1, output_padding 1 */
                     {2, 8, 4, 6, 12, 4, 4, 1, 2, 1, 1, 0},   /* even kernel, stride 2 (upsampling x2) */
                     {1, 8, 5, 5, 8, 3, 3, 2, 1, 0, 2, 0},    /* group 2, dilation 2 */
                     {2, 16, 4, 4, 16, 3, 3, 16, 2, 1, 1, 1}, /* depthwise, stride 2, output_padding */
                     {1, 3, 4, 5, 6, 2, 3, 1, 3, 0, 1, 2}};   /* odd channels, stride 3, output_padding 2 */
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        deconv_case(&cases[i], true);
        deconv_case(&cases[i], false);
    }
}

/* ---------------------------------------------------------------- Resize */

typedef enum { R_HALF, R_PYTORCH, R_ALIGN, R_ASYM } rctm;

static double rs_coord(rctm t, int64_t o, int64_t in, int64_t out, double scale)
{
    switch (t) {
    case R_HALF: return (o + 0.5) / scale - 0.5;
    case R_PYTORCH: return out > 1 ? (o + 0.5) / scale - 0.5 : 0;
    case R_ALIGN: return out > 1 ? o * (double)(in - 1) / (double)(out - 1) : 0;
    default: return o / scale;
    }
}

/* the ONNX formula along one axis: taps i0, i1 and the weight of i1 (nearest: round_prefer_floor / floor) */
static void rs_taps(bool linear, const char *nearest, rctm t, int64_t o, int64_t in, int64_t out, double scale,
                    int64_t *i0, int64_t *i1, double *f)
{
    double c = rs_coord(t, o, in, out, scale);
    if (!linear) {
        double r = strcmp(nearest, "floor") == 0 ? floor(c) : c - floor(c) == 0.5 ? floor(c) : round(c);
        *i0 = *i1 = r < 0 ? 0 : r > (double)(in - 1) ? in - 1 : (int64_t)r;
        *f = 0;
        return;
    }
    if (c < 0)
        c = 0;
    if (c > (double)(in - 1))
        c = (double)(in - 1);
    *i0 = (int64_t)floor(c);
    *i1 = *i0 + 1 < in ? *i0 + 1 : in - 1;
    *f = c - (double)*i0;
}

typedef struct rcase {
    bool linear;
    const char *nearest; /* nearest_mode (nearest) */
    rctm ctm;
    bool sizes;          /* the output size by `sizes`, else by `scales` */
    int64_t ih, iw, oh, ow;
} rcase;

static void resize_case(const rcase *rc, int64_t channels, bool after_conv)
{
    static const char *const ctms[] = {"half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric"};
    const int64_t N = 2, C = channels;
    size_t nx = (size_t)(N * C * rc->ih * rc->iw), ny = (size_t)(N * C * rc->oh * rc->ow);
    float *x = rand_vec(nx, 2.0f, 61), *w = rand_vec((size_t)(C * C), 0.4f, 62);
    double *pre = dvec(nx), *ref = dvec(ny);
    const cgeom g = {N, C, rc->ih, rc->iw, C, 1, 1, 1, 1, 0, 1, 0};
    if (after_conv)
        conv_ref(&g, x, w, NULL, pre);
    else
        for (size_t i = 0; i < nx; i++)
            pre[i] = x[i];
    double sh = (double)rc->oh / (double)rc->ih, sw = (double)rc->ow / (double)rc->iw;
    for (int64_t p = 0; p < N * C; p++)
        for (int64_t i = 0; i < rc->oh; i++)
            for (int64_t j = 0; j < rc->ow; j++) {
                int64_t a0, a1, b0, b1;
                double fa, fb;
                rs_taps(rc->linear, rc->nearest, rc->ctm, i, rc->ih, rc->oh, sh, &a0, &a1, &fa);
                rs_taps(rc->linear, rc->nearest, rc->ctm, j, rc->iw, rc->ow, sw, &b0, &b1, &fb);
                const double *q = pre + p * rc->ih * rc->iw;
                ref[(p * rc->oh + i) * rc->ow + j] =
                    (1 - fa) * ((1 - fb) * q[a0 * rc->iw + b0] + fb * q[a0 * rc->iw + b1]) +
                    fa * ((1 - fb) * q[a1 * rc->iw + b0] + fb * q[a1 * rc->iw + b1]);
            }
    mb m;
    mb_init(&m);
    const int64_t xd[] = {N, C, rc->ih, rc->iw}, yd[] = {N, C, rc->oh, rc->ow}, four[] = {4};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y", F, 4, yd);
    if (after_conv)
        conv_node(&m, "conv", "x", "c", &g, w, NULL);
    if (rc->sizes) {
        mb_init_tensor(&m, "sizes", I64, 1, four, yd, sizeof yd);
    } else {
        const float sc[] = {1, 1, (float)sh, (float)sw};
        mb_init_tensor(&m, "scales", F, 1, four, sc, sizeof sc);
    }
    char ins[64];
    snprintf(ins, sizeof ins, "%s,-,%s", after_conv ? "c" : "x", rc->sizes ? "-,sizes" : "scales");
    Onnx__NodeProto *n = mb_node(&m, "Resize", "resize", ins, "y");
    attr_s(n, "mode", rc->linear ? "linear" : "nearest");
    attr_s(n, "coordinate_transformation_mode", ctms[rc->ctm]);
    if (!rc->linear)
        attr_s(n, "nearest_mode", rc->nearest);
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    cl_engine_tensor in = tensor(x, 4, xd);
    check_model(buf, len, after_conv ? "Conv Resize" : "Resize", &in, ref, ny);
    free(x);
    free(w);
    free(pre);
    free(ref);
}

static void resize_cases(const rcase *cases, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        resize_case(&cases[i], 3, false);  /* plain input */
        resize_case(&cases[i], 16, true);  /* blocked (or channels-last) input from a Conv */
        resize_case(&cases[i], 24, true);
    }
}

/* the modes oneDNN resampling computes as ONNX does */
static void test_resize_onednn(void **state)
{
    (void)state;
    const rcase cases[] = {
        {true, NULL, R_HALF, false, 4, 5, 8, 10},        /* bilinear x2 by scales */
        {true, NULL, R_HALF, true, 6, 6, 13, 9},         /* bilinear to sizes (scale = out / in) */
        {true, NULL, R_PYTORCH, true, 12, 12, 48, 48},   /* the segmentation heads' upsampling */
        {true, NULL, R_HALF, true, 9, 8, 4, 3},          /* downsampling */
        {false, "round_prefer_floor", R_HALF, false, 3, 4, 6, 12},
        {false, "floor", R_ASYM, false, 3, 4, 9, 8},     /* torch's nearest export, integer factors */
    };
    resize_cases(cases, CL_ARRAY_LEN(cases));
}

/* the modes oneDNN cannot match: the plain-C kernel (ops/resize.c), same formula */
static void test_resize_plain_modes(void **state)
{
    (void)state;
    const rcase cases[] = {
        {true, NULL, R_ALIGN, true, 5, 6, 9, 11},
        {true, NULL, R_ASYM, false, 4, 4, 8, 8},
        {true, NULL, R_PYTORCH, true, 4, 4, 1, 1},       /* output size 1: pytorch_half_pixel differs */
        {false, "round_prefer_floor", R_ASYM, false, 4, 4, 12, 12}, /* ties at x.5 */
        {false, "floor", R_HALF, false, 3, 3, 6, 9},
        {false, "round_prefer_floor", R_HALF, true, 5, 7, 8, 10},   /* fractional factors */
    };
    resize_cases(cases, CL_ARRAY_LEN(cases));
}

/* ---------------------------------------------------------------- the layout planner */

enum { PN = 2, PC = 16, PH = 8, PW = 8, PX = PN * PC * PH * PW };

/* x -> Conv 3x3 (16) + Relu -> [depthwise 3x3 Conv | the same as a dense Conv] -> Transpose(H<->W, a plain
 * op) -> Conv 1x1 -> Add x (residual) -> Resize x2 linear -> ConvTranspose 2x2 stride 1 -> Softmax over
 * the channels (plain) -> Mul by a per-channel constant -> y */
static uint8_t *planner_model(bool depthwise, const float *w1, const float *wd, const float *w3, const float *wt,
                              const float *k, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {PN, PC, PH, PW}, yd[] = {PN, PC, 2 * PH + 1, 2 * PW + 1}, kd[] = {1, PC, 1, 1},
                  four[] = {4}, wtd[] = {PC, PC, 2, 2};
    mb_input(&m, "x", F, 4, xd);
    mb_output(&m, "y", F, 4, yd);
    const cgeom g1 = {PN, PC, PH, PW, PC, 3, 3, 1, 1, 1, 1, 0}, g3 = {PN, PC, PH, PW, PC, 1, 1, 1, 1, 0, 1, 0};
    cgeom g2 = g1;
    g2.group = depthwise ? PC : 1;
    float *dense = NULL;
    if (!depthwise) { /* the depthwise weights on the diagonal of a dense [PC, PC, 3, 3] */
        dense = calloc(PC * PC * 9, sizeof *dense);
        assert_non_null(dense);
        for (int o = 0; o < PC; o++)
            memcpy(dense + (o * PC + o) * 9, wd + o * 9, 9 * sizeof(float));
    }
    conv_node(&m, "conv1", "x", "c1", &g1, w1, NULL);
    mb_node(&m, "Relu", "relu", "c1", "r1");
    conv_node(&m, "conv2", "r1", "c2", &g2, depthwise ? wd : dense, NULL);
    attr_ints(mb_node(&m, "Transpose", "tr", "c2", "t"), "perm", 4, (int64_t[]){0, 1, 3, 2});
    conv_node(&m, "conv3", "t", "c3", &g3, w3, NULL);
    mb_node(&m, "Add", "res", "c3,x", "s");
    const float sc[] = {1, 1, 2, 2};
    mb_init_tensor(&m, "scales", F, 1, four, sc, sizeof sc);
    Onnx__NodeProto *n = mb_node(&m, "Resize", "up", "s,-,scales", "u");
    attr_s(n, "mode", "linear");
    mb_init_tensor(&m, "WT", F, 4, wtd, wt, sizeof(float) * PC * PC * 4);
    attr_ints(mb_node(&m, "ConvTranspose", "deconv", "u,WT", "d"), "kernel_shape", 2, (int64_t[]){2, 2});
    attr_i(mb_node(&m, "Softmax", "softmax", "d", "sm"), "axis", 1);
    mb_init_tensor(&m, "k", F, 4, kd, k, sizeof(float) * PC);
    mb_node(&m, "Mul", "scale", "sm,k", "y");
    uint8_t *out = mb_pack(&m, 13, len);
    arena_free();
    free(dense);
    return out;
}

static void test_planner_layouts(void **state)
{
    (void)state;
    float *x = rand_vec(PX, 1.0f, 71), *w1 = rand_vec(PC * PC * 9, 0.2f, 72), *wd = rand_vec(PC * 9, 0.5f, 73),
          *w3 = rand_vec(PC * PC, 0.3f, 74), *wt = rand_vec(PC * PC * 4, 0.3f, 75), *k = rand_vec(PC, 2, 76);
    const int64_t xd[] = {PN, PC, PH, PW};
    const size_t ny = PN * PC * (2 * PH + 1) * (2 * PW + 1);
    cl_engine_tensor in = tensor(x, 4, xd);
    float *got[2];
    for (int dw = 0; dw < 2; dw++) {
        size_t len;
        uint8_t *buf = planner_model(dw, w1, wd, w3, wt, k, &len);
        cl_engine_model *m = load(buf, len);
        free(buf);
        expect_plan(m, "Conv+Relu Conv Transpose Conv+Add Resize ConvTranspose Softmax Mul");
        cl_err err = {0};
        cl_engine_tensor y = {0};
        if (cl_engine_run(m, &in, 1, &y, 1, &err) != 0)
            fail_msg("run: %s", err.msg);
        assert_int_equal((size_t)cl_engine_tensor_numel(&y), ny);
        got[dw] = malloc(ny * sizeof(float));
        assert_non_null(got[dw]);
        memcpy(got[dw], y.data, ny * sizeof(float));
        cl_engine_tensor_release(&y);
        /* the dense model is the blocked-friendly one (on a CPU with vector blocks) */
        if (eng_plan_block())
            assert_int_equal(m->act_layout, dw ? ENG_ACT_NHWC : ENG_ACT_BLOCKED);
        cl_engine_free(m);
    }
    for (size_t i = 0; i < ny; i++)
        if (!(fabsf(got[0][i] - got[1][i]) <= 1e-5f * (1 + fabsf(got[1][i]))))
            fail_msg("element %zu: blocked %.7g, channels-last %.7g", i, got[0][i], got[1][i]);
    free(got[0]);
    free(got[1]);
    free(x);
    free(w1);
    free(wd);
    free(w3);
    free(wt);
    free(k);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_hard_forms),
        cmocka_unit_test(test_conv_hard_post),
        cmocka_unit_test(test_conv_act_post),
        cmocka_unit_test(test_fold_affine),
        cmocka_unit_test(test_fold_affine_refused),
        cmocka_unit_test(test_fold_borrowed_weight),
        cmocka_unit_test(test_convtranspose),
        cmocka_unit_test(test_resize_onednn),
        cmocka_unit_test(test_resize_plain_modes),
        cmocka_unit_test(test_planner_layouts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
