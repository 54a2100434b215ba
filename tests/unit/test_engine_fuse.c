/* test_engine_fuse.c — the transformer fusion passes (src/engine/fuse.c), each on the decomposed graph
 * an exporter writes: the plan the loaded model runs (eng_describe_plan: which nodes are left, with the
 * fused matmul's post-ops by name) and its numbers against the formula computed here in double
 * precision. Also the cases that must stay unfused (an intermediate value used elsewhere, a [1] scale,
 * a Gemm bias with a scaled input) and still compute the right numbers.
 * Patterns: LayerNorm as ReduceMean/Sub/Pow/ReduceMean/Add/Sqrt/Div/Mul/Add; GELU in its Erf form and
 * its Tanh form; MatMul + bias + GELU; attention MatMul -> scale -> mask Add -> Softmax -> MatMul with a
 * causal mask broadcast over the heads; Gemm(transB) + Relu.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "cloister/engine.h"
#include "engine/internal.h" /* eng_describe_plan */
#include "onnx_build.h"

#define F 1 /* onnx float */

static float frand(uint64_t *s)
{
    *s = *s * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((*s >> 33) % 20001) / 10000.0f - 1.0f;
}

static float *rand_vec(size_t n, uint64_t seed)
{
    float *v = malloc(n * sizeof *v);
    assert_non_null(v);
    for (size_t i = 0; i < n; i++)
        v[i] = frand(&seed);
    return v;
}

static void scalar_init(mb *m, const char *name, float v)
{
    mb_init_tensor(m, name, F, 0, NULL, &v, sizeof v);
}

/* Loads the packed model, checks its plan equals `plan`, runs it on the inputs and compares output 0 (of
 * n_out) with ref (n values) to 1e-4 relative. */
static void check_model_outs(uint8_t *buf, size_t len, const char *plan, const cl_engine_tensor *in, size_t n_in,
                             size_t n_out, const double *ref, size_t n)
{
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = 2}, &m, &err) != 0)
        fail_msg("load: %s", err.msg);
    free(buf);
    char got[512];
    eng_describe_plan(m, got, sizeof got);
    if (strcmp(got, plan) != 0)
        fail_msg("plan: got \"%s\", expected \"%s\"", got, plan);
    cl_engine_tensor outs[2] = {{0}}, y;
    assert_true(n_out <= 2);
    if (cl_engine_run(m, in, n_in, outs, n_out, &err) != 0)
        fail_msg("run: %s", err.msg);
    y = outs[0];
    assert_int_equal(y.dtype, CL_ENGINE_DT_FLOAT);
    assert_int_equal((size_t)cl_engine_tensor_numel(&y), n);
    const float *yp = y.data;
    for (size_t i = 0; i < n; i++)
        if (!(fabs(yp[i] - ref[i]) <= 1e-4 * (1 + fabs(ref[i]))))
            fail_msg("element %zu: %.7g, expected %.7g (plan %s)", i, yp[i], ref[i], got);
    for (size_t k = 0; k < n_out; k++)
        cl_engine_tensor_release(&outs[k]);
    cl_engine_free(m);
}

static void check_model(uint8_t *buf, size_t len, const char *plan, const cl_engine_tensor *in, size_t n_in,
                        const double *ref, size_t n)
{
    check_model_outs(buf, len, plan, in, n_in, 1, ref, n);
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

/* ---------------------------------------------------------------- LayerNorm */

enum { LR = 6, LC = 16 };

/* x[LR,LC] -> decomposed LayerNorm over the last axis; gamma_len 0: no Mul; extra_use: the centred
 * value is also a graph output (so the chain must stay as it is). */
static uint8_t *layernorm_model(const float *gamma, int64_t gamma_len, const float *beta, bool extra_use, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {LR, LC}, vd[] = {gamma_len}, bd[] = {LC};
    mb_input(&m, "x", F, 2, xd);
    mb_output(&m, "y", F, 2, xd);
    if (extra_use)
        mb_output(&m, "d", F, 2, xd);
    scalar_init(&m, "two", 2.0f);
    scalar_init(&m, "eps", 1e-5f);
    if (gamma_len)
        mb_init_tensor(&m, "gamma", F, 1, vd, gamma, sizeof(float) * (size_t)gamma_len);
    mb_init_tensor(&m, "beta", F, 1, bd, beta, sizeof(float) * LC);
    const int64_t axes[] = {-1};
    attr_ints(mb_node(&m, "ReduceMean", "mean", "x", "mu"), "axes", 1, axes);
    mb_node(&m, "Sub", "sub", "x,mu", "d");
    mb_node(&m, "Pow", "pow", "d,two", "d2");
    attr_ints(mb_node(&m, "ReduceMean", "var", "d2", "v"), "axes", 1, axes);
    mb_node(&m, "Add", "addeps", "v,eps", "ve");
    mb_node(&m, "Sqrt", "sqrt", "ve", "sd");
    mb_node(&m, "Div", "div", "d,sd", "n");
    if (gamma_len)
        mb_node(&m, "Mul", "scale", "n,gamma", "ng");
    mb_node(&m, "Add", "shift", gamma_len ? "ng,beta" : "n,beta", "y");
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

static void layernorm_ref(const float *x, const float *gamma, int64_t gamma_len, const float *beta, double *y)
{
    for (int r = 0; r < LR; r++) {
        double mu = 0, var = 0;
        for (int c = 0; c < LC; c++)
            mu += x[r * LC + c];
        mu /= LC;
        for (int c = 0; c < LC; c++)
            var += (x[r * LC + c] - mu) * (x[r * LC + c] - mu);
        var /= LC;
        for (int c = 0; c < LC; c++) {
            double g = gamma_len == 0 ? 1.0 : gamma[gamma_len == 1 ? 0 : c];
            y[r * LC + c] = (x[r * LC + c] - mu) / sqrt(var + 1e-5) * g + beta[c];
        }
    }
}

static void test_layernorm(void **state)
{
    (void)state;
    float *x = rand_vec(LR * LC, 1), *gamma = rand_vec(LC, 2), *beta = rand_vec(LC, 3);
    for (int i = 0; i < LR * LC; i++)
        x[i] = x[i] * 3 + (float)(i / LC); /* rows with different means */
    const int64_t xd[] = {LR, LC};
    cl_engine_tensor in = tensor(x, 2, xd);
    double ref[LR * LC];
    size_t len;
    uint8_t *buf;

    layernorm_ref(x, gamma, LC, beta, ref);
    buf = layernorm_model(gamma, LC, beta, false, &len);
    check_model(buf, len, "LayerNormalization", &in, 1, ref, LR * LC);

    layernorm_ref(x, NULL, 0, beta, ref); /* no scale: the fused node gets a scale of ones */
    buf = layernorm_model(NULL, 0, beta, false, &len);
    check_model(buf, len, "LayerNormalization", &in, 1, ref, LR * LC);

    /* a [1] scale broadcasts as a scalar: left as it is, same numbers */
    float g1 = 1.7f;
    layernorm_ref(x, &g1, 1, beta, ref);
    buf = layernorm_model(&g1, 1, beta, false, &len);
    check_model(buf, len, "ReduceMean Sub Pow ReduceMean Add Sqrt Div Mul Add", &in, 1, ref, LR * LC);

    /* the centred value is also an output: nothing fused */
    layernorm_ref(x, gamma, LC, beta, ref);
    buf = layernorm_model(gamma, LC, beta, true, &len);
    check_model_outs(buf, len, "ReduceMean Sub Pow ReduceMean Add Sqrt Div Mul Add", &in, 1, 2, ref, LR * LC);
    free(x);
    free(gamma);
    free(beta);
}

/* ---------------------------------------------------------------- GELU */

enum { GN = 257 };

static double gelu_erf_ref(double x) { return 0.5 * x * (1 + erf(x / sqrt(2.0))); }
static double gelu_tanh_ref(double x)
{
    return 0.5 * x * (1 + tanh(sqrt(2 / M_PI) * (x + 0.044715 * x * x * x)));
}

/* torch's Erf form: x * 0.5 * (1 + erf(x / sqrt 2)), in the association `assoc` picks:
 * 0: (x * a) * 0.5   1: x * (a * 0.5)   2: (x * 0.5) * a; mul_form: x * (1/sqrt 2) instead of / sqrt 2 */
static uint8_t *gelu_erf_model(int assoc, bool mul_form, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {1, GN};
    mb_input(&m, "x", F, 2, xd);
    mb_output(&m, "y", F, 2, xd);
    scalar_init(&m, "c", mul_form ? 0.70710678f : 1.41421356f);
    scalar_init(&m, "one", 1.0f);
    scalar_init(&m, "half", 0.5f);
    mb_node(&m, mul_form ? "Mul" : "Div", "s", "x,c", "xs");
    mb_node(&m, "Erf", "erf", "xs", "e");
    mb_node(&m, "Add", "a1", "e,one", "a");
    if (assoc == 0) {
        mb_node(&m, "Mul", "m1", "x,a", "xa");
        mb_node(&m, "Mul", "m2", "xa,half", "y");
    } else if (assoc == 1) {
        mb_node(&m, "Mul", "m1", "a,half", "ah");
        mb_node(&m, "Mul", "m2", "x,ah", "y");
    } else {
        mb_node(&m, "Mul", "m1", "x,half", "xh");
        mb_node(&m, "Mul", "m2", "xh,a", "y");
    }
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

/* The Tanh form: 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 * x^3))), x^3 as Pow or x * (x * x). */
static uint8_t *gelu_tanh_model(bool pow_form, size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {1, GN};
    mb_input(&m, "x", F, 2, xd);
    mb_output(&m, "y", F, 2, xd);
    scalar_init(&m, "three", 3.0f);
    scalar_init(&m, "k", 0.044715f);
    scalar_init(&m, "s2pi", 0.79788456f);
    scalar_init(&m, "one", 1.0f);
    scalar_init(&m, "half", 0.5f);
    if (pow_form) {
        mb_node(&m, "Pow", "cube", "x,three", "x3");
    } else {
        mb_node(&m, "Mul", "sq", "x,x", "xx");
        mb_node(&m, "Mul", "cube", "x,xx", "x3");
    }
    mb_node(&m, "Mul", "k3", "x3,k", "kx3");
    mb_node(&m, "Add", "inner", "x,kx3", "in");
    mb_node(&m, "Mul", "sc", "s2pi,in", "arg");
    mb_node(&m, "Tanh", "tanh", "arg", "t");
    mb_node(&m, "Add", "a1", "t,one", "a");
    mb_node(&m, "Mul", "m1", "x,a", "xa");
    mb_node(&m, "Mul", "m2", "xa,half", "y");
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

static void test_gelu(void **state)
{
    (void)state;
    float x[GN];
    double ref_e[GN], ref_t[GN];
    for (int i = 0; i < GN; i++) {
        x[i] = -6.0f + 12.0f * (float)i / (GN - 1);
        ref_e[i] = gelu_erf_ref(x[i]);
        ref_t[i] = gelu_tanh_ref(x[i]);
    }
    const int64_t xd[] = {1, GN};
    cl_engine_tensor in = tensor(x, 2, xd);
    size_t len;
    for (int assoc = 0; assoc < 3; assoc++)
        for (int mul_form = 0; mul_form < 2; mul_form++) {
            uint8_t *buf = gelu_erf_model(assoc, mul_form, &len);
            check_model(buf, len, "Gelu(erf)", &in, 1, ref_e, GN);
        }
    for (int pow_form = 0; pow_form < 2; pow_form++) {
        uint8_t *buf = gelu_tanh_model(pow_form, &len);
        check_model(buf, len, "Gelu(tanh)", &in, 1, ref_t, GN);
    }
}

/* ---------------------------------------------------------------- MatMul + bias + GELU */

enum { MB = 2, MS = 5, MK = 24, MN = 40 };

static void test_matmul_bias_gelu(void **state)
{
    (void)state;
    float *x = rand_vec(MB * MS * MK, 4), *w = rand_vec(MK * MN, 5), *b = rand_vec(MN, 6);
    mb m;
    mb_init(&m);
    const int64_t xd[] = {MB, MS, MK}, wd[] = {MK, MN}, bd[] = {MN}, yd[] = {MB, MS, MN};
    mb_input(&m, "x", F, 3, xd);
    mb_output(&m, "y", F, 3, yd);
    mb_init_tensor(&m, "w", F, 2, wd, w, sizeof(float) * MK * MN);
    mb_init_tensor(&m, "b", F, 1, bd, b, sizeof(float) * MN);
    scalar_init(&m, "c", 1.41421356f);
    scalar_init(&m, "one", 1.0f);
    scalar_init(&m, "half", 0.5f);
    mb_node(&m, "MatMul", "mm", "x,w", "p");
    mb_node(&m, "Add", "bias", "p,b", "h");
    mb_node(&m, "Div", "s", "h,c", "hs");
    mb_node(&m, "Erf", "erf", "hs", "e");
    mb_node(&m, "Add", "a1", "e,one", "a");
    mb_node(&m, "Mul", "m1", "h,a", "ha");
    mb_node(&m, "Mul", "m2", "ha,half", "y");
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    static double ref[MB * MS * MN];
    for (int r = 0; r < MB * MS; r++)
        for (int n = 0; n < MN; n++) {
            double s = b[n];
            for (int k = 0; k < MK; k++)
                s += (double)x[r * MK + k] * w[k * MN + n];
            ref[r * MN + n] = gelu_erf_ref(s);
        }
    cl_engine_tensor in = tensor(x, 3, xd);
    check_model(buf, len, "FusedMatMul(bias,gelu_erf)", &in, 1, ref, MB * MS * MN);
    free(x);
    free(w);
    free(b);
}

/* ---------------------------------------------------------------- attention */

enum { AB = 2, AH = 3, AS = 7, AD = 8 };

/* q, k^T, v as inputs [AB,AH,AS,AD] / [AB,AH,AD,AS]; scores = (q k^T) / sqrt(d) + mask[1,AS,AS] (causal:
 * -inf above the diagonal, as a large negative), softmax over the last axis, times v. */
static void test_attention(void **state)
{
    (void)state;
    size_t nq = AB * AH * AS * AD;
    float *q = rand_vec(nq, 7), *kt = rand_vec(nq, 8), *v = rand_vec(nq, 9);
    float mask[AS * AS];
    for (int i = 0; i < AS; i++)
        for (int j = 0; j < AS; j++)
            mask[i * AS + j] = j > i ? -1e9f : 0.0f;
    mb m;
    mb_init(&m);
    const int64_t qd[] = {AB, AH, AS, AD}, kd[] = {AB, AH, AD, AS}, md[] = {1, AS, AS};
    mb_input(&m, "q", F, 4, qd);
    mb_input(&m, "kt", F, 4, kd);
    mb_input(&m, "v", F, 4, qd);
    mb_output(&m, "y", F, 4, qd);
    mb_init_tensor(&m, "mask", F, 3, md, mask, sizeof mask);
    scalar_init(&m, "sd", sqrtf((float)AD));
    mb_node(&m, "MatMul", "qk", "q,kt", "s");
    mb_node(&m, "Div", "scale", "s,sd", "ss");
    mb_node(&m, "Add", "masked", "ss,mask", "sm");
    attr_i(mb_node(&m, "Softmax", "softmax", "sm", "p"), "axis", -1);
    mb_node(&m, "MatMul", "pv", "p,v", "y");
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    double *ref = malloc(nq * sizeof *ref);
    assert_non_null(ref);
    for (int bh = 0; bh < AB * AH; bh++) {
        const float *Q = q + bh * AS * AD, *K = kt + bh * AD * AS, *V = v + bh * AS * AD;
        for (int i = 0; i < AS; i++) {
            double sc[AS], mx = -INFINITY, sum = 0;
            for (int j = 0; j < AS; j++) {
                double s = 0;
                for (int d = 0; d < AD; d++)
                    s += (double)Q[i * AD + d] * K[d * AS + j];
                sc[j] = s / sqrt((double)AD) + mask[i * AS + j];
                mx = fmax(mx, sc[j]);
            }
            for (int j = 0; j < AS; j++)
                sum += (sc[j] = exp(sc[j] - mx));
            for (int d = 0; d < AD; d++) {
                double o = 0;
                for (int j = 0; j < AS; j++)
                    o += sc[j] / sum * V[j * AD + d];
                ref[(bh * AS + i) * AD + d] = o;
            }
        }
    }
    cl_engine_tensor in[3] = {tensor(q, 4, qd), tensor(kt, 4, kd), tensor(v, 4, qd)};
    check_model(buf, len, "FusedMatMul(linear,add) Softmax MatMul", in, 3, ref, nq);
    free(ref);
    free(q);
    free(kt);
    free(v);
}

/* ---------------------------------------------------------------- Gemm */

enum { GM = 3, GK = 10, GNN = 12 };

/* Gemm(x * s, W^T, C) + Relu: the scale on the input cannot join a Gemm that has a bias (oneDNN adds the
 * bias before post-ops), the Relu can; without the scale both fuse. */
static void gemm_case(bool scaled)
{
    float *x = rand_vec(GM * GK, 10), *w = rand_vec(GNN * GK, 11), *c = rand_vec(GNN, 12);
    mb m;
    mb_init(&m);
    const int64_t xd[] = {GM, GK}, wd[] = {GNN, GK}, cd[] = {GNN}, yd[] = {GM, GNN};
    mb_input(&m, "x", F, 2, xd);
    mb_output(&m, "y", F, 2, yd);
    mb_init_tensor(&m, "w", F, 2, wd, w, sizeof(float) * GNN * GK);
    mb_init_tensor(&m, "c", F, 1, cd, c, sizeof(float) * GNN);
    scalar_init(&m, "s", 0.25f);
    if (scaled)
        mb_node(&m, "Mul", "scale", "x,s", "xs");
    attr_i(mb_node(&m, "Gemm", "gemm", scaled ? "xs,w,c" : "x,w,c", "g"), "transB", 1);
    mb_node(&m, "Relu", "relu", "g", "y");
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    double ref[GM * GNN];
    for (int i = 0; i < GM; i++)
        for (int n = 0; n < GNN; n++) {
            double s = 0;
            for (int k = 0; k < GK; k++)
                s += (double)x[i * GK + k] * (scaled ? 0.25f : 1.0f) * w[n * GK + k];
            s += c[n];
            ref[i * GNN + n] = s > 0 ? s : 0;
        }
    cl_engine_tensor in = tensor(x, 2, xd);
    check_model(buf, len, scaled ? "Mul FusedMatMul(transB,bias,relu)" : "FusedMatMul(transB,bias,relu)", &in, 1,
                ref, GM * GNN);
    free(x);
    free(w);
    free(c);
}

static void test_gemm(void **state)
{
    (void)state;
    gemm_case(false);
    gemm_case(true);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_layernorm),
        cmocka_unit_test(test_gelu),
        cmocka_unit_test(test_matmul_bias_gelu),
        cmocka_unit_test(test_attention),
        cmocka_unit_test(test_gemm),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
