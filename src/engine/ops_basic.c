/* engine/ops_basic.c — operator kernels written in plain C: elementwise math with numpy
 * broadcasting, tensor manipulation (Reshape, Transpose, Concat, Slice, Gather...), reductions,
 * Softmax, normalizations, and MatMul/Gemm (via oneDNN's sgemm for fp32). Kernels check every
 * shape and index they are given at run time and fail with the node's name rather than read out of
 * bounds. Conv and pooling live in ops_dnnl.c.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define DIMS(t) eng_dims_str((t)->dims, (t)->rank, (char[128]){0}, 128)

static int need_in(eng_run *r, const eng_node *n, int i, eng_tensor **t, cl_err *err)
{
    *t = eng_in_plain(r, n, i, err);
    if (!*t) {
        if (err && err->code == CL_OK)
            return eng_node_err(err, CL_E_FORMAT, n, "input %d is required", i);
        return -1;
    }
    return 0;
}

static int64_t norm_axis(int64_t a, int rank)
{
    return a < 0 ? a + rank : a;
}

/* Reads a constant-or-runtime int tensor (shape, axes...) into v (at most max entries). */
static int read_ints(const eng_node *n, const eng_tensor *t, int64_t *v, int max, int *count, cl_err *err)
{
    if (t->dtype != CL_ENGINE_DT_INT64 && t->dtype != CL_ENGINE_DT_INT32)
        return eng_node_err(err, CL_E_FORMAT, n, "expected an int64 tensor, got %s", cl_engine_dtype_name(t->dtype));
    int64_t k = eng_numel(t);
    if (t->rank > 1 || k > max)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "expected a 1-D tensor of at most %d integers, got %s", max,
                            DIMS(t));
    for (int64_t i = 0; i < k; i++)
        v[i] = eng_get_i(t, i);
    *count = (int)k;
    return 0;
}

/* ---------------------------------------------------------------- broadcasting */

typedef struct bcast {
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK];
    int64_t st[3][CL_ENGINE_MAX_RANK];
    int64_t total;
} bcast;

static int bcast_init(bcast *b, eng_tensor **ts, int nt, const eng_node *n, cl_err *err)
{
    b->rank = 0;
    for (int k = 0; k < nt; k++)
        if (ts[k]->rank > b->rank)
            b->rank = ts[k]->rank;
    for (int d = 0; d < b->rank; d++) {
        int64_t v = 1;
        for (int k = 0; k < nt; k++) {
            int off = d - (b->rank - ts[k]->rank);
            int64_t x = off >= 0 ? ts[k]->dims[off] : 1;
            if (x == 1)
                continue;
            if (v != 1 && v != x)
                return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s cannot be broadcast", DIMS(ts[0]),
                                    DIMS(ts[k]));
            v = x;
        }
        b->dims[d] = v;
    }
    for (int k = 0; k < nt; k++) {
        int64_t s = 1;
        for (int d = b->rank - 1; d >= 0; d--) {
            int off = d - (b->rank - ts[k]->rank);
            int64_t x = off >= 0 ? ts[k]->dims[off] : 1;
            b->st[k][d] = x == 1 ? 0 : s;
            s *= x;
        }
    }
    b->total = eng_dims_numel(b->dims, b->rank);
    if (b->total < 0)
        return eng_node_err(err, CL_E_FORMAT, n, "broadcast result is too large");
    return 0;
}

/* Calls body for each output element e with the offsets o[0..nt) into the inputs. */
#define BCAST_LOOP(b, nt, ...)                                                                                   \
    do {                                                                                                          \
        int64_t idx_[CL_ENGINE_MAX_RANK] = {0}, o[3] = {0};                                                       \
        for (int64_t e = 0; e < (b)->total; e++) {                                                                \
            __VA_ARGS__;                                                                                          \
            for (int d_ = (b)->rank - 1; d_ >= 0; d_--) {                                                         \
                idx_[d_]++;                                                                                       \
                for (int k_ = 0; k_ < (nt); k_++)                                                                 \
                    o[k_] += (b)->st[k_][d_];                                                                     \
                if (idx_[d_] < (b)->dims[d_])                                                                     \
                    break;                                                                                        \
                for (int k_ = 0; k_ < (nt); k_++)                                                                 \
                    o[k_] -= (b)->st[k_][d_] * (b)->dims[d_];                                                     \
                idx_[d_] = 0;                                                                                     \
            }                                                                                                     \
        }                                                                                                         \
    } while (0)

/* ---------------------------------------------------------------- unary elementwise */

typedef enum {
    U_RELU, U_LEAKY, U_ELU, U_SELU, U_CELU, U_SIGMOID, U_HSIGMOID, U_HSWISH, U_TANH, U_EXP, U_LOG, U_SQRT, U_ABS,
    U_NEG, U_ERF, U_FLOOR, U_CEIL, U_ROUND, U_RECIP, U_SIN, U_COS, U_TAN, U_ASIN, U_ACOS, U_ATAN, U_SINH, U_COSH,
    U_ASINH, U_ACOSH, U_ATANH, U_SOFTPLUS, U_SOFTSIGN, U_SIGN, U_THRELU, U_NOT, U_IDENT, U_ISNAN, U_GELU,
} unary_kind;

static const struct {
    const char *name;
    unary_kind k;
} unary_names[] = {
    {"Relu", U_RELU}, {"LeakyRelu", U_LEAKY}, {"Elu", U_ELU}, {"Selu", U_SELU}, {"Celu", U_CELU},
    {"Sigmoid", U_SIGMOID}, {"HardSigmoid", U_HSIGMOID}, {"HardSwish", U_HSWISH}, {"Tanh", U_TANH}, {"Exp", U_EXP},
    {"Log", U_LOG}, {"Sqrt", U_SQRT}, {"Abs", U_ABS}, {"Neg", U_NEG}, {"Erf", U_ERF}, {"Floor", U_FLOOR},
    {"Ceil", U_CEIL}, {"Round", U_ROUND}, {"Reciprocal", U_RECIP}, {"Sin", U_SIN}, {"Cos", U_COS}, {"Tan", U_TAN},
    {"Asin", U_ASIN}, {"Acos", U_ACOS}, {"Atan", U_ATAN}, {"Sinh", U_SINH}, {"Cosh", U_COSH}, {"Asinh", U_ASINH},
    {"Acosh", U_ACOSH}, {"Atanh", U_ATANH}, {"Softplus", U_SOFTPLUS}, {"Softsign", U_SOFTSIGN}, {"Sign", U_SIGN},
    {"ThresholdedRelu", U_THRELU}, {"Not", U_NOT}, {"Identity", U_IDENT}, {"IsNaN", U_ISNAN}, {"Gelu", U_GELU},
};

static double unary_f(unary_kind k, double x, double a, double b)
{
    switch (k) {
    case U_RELU: return x > 0 ? x : 0;
    case U_LEAKY: return x >= 0 ? x : a * x;
    case U_ELU: return x >= 0 ? x : a * (exp(x) - 1);
    case U_SELU: return x > 0 ? b * x : b * (a * exp(x) - a);
    case U_CELU: return fmax(0, x) + fmin(0, a * (exp(x / a) - 1));
    case U_SIGMOID: return x >= 0 ? 1 / (1 + exp(-x)) : exp(x) / (1 + exp(x));
    case U_HSIGMOID: return fmax(0, fmin(1, a * x + b));
    case U_HSWISH: return x * fmax(0, fmin(1, x / 6 + 0.5));
    case U_TANH: return tanh(x);
    case U_EXP: return exp(x);
    case U_LOG: return log(x);
    case U_SQRT: return sqrt(x);
    case U_ABS: return fabs(x);
    case U_NEG: return -x;
    case U_ERF: return erf(x);
    case U_FLOOR: return floor(x);
    case U_CEIL: return ceil(x);
    case U_ROUND: return nearbyint(x);
    case U_RECIP: return 1 / x;
    case U_SIN: return sin(x);
    case U_COS: return cos(x);
    case U_TAN: return tan(x);
    case U_ASIN: return asin(x);
    case U_ACOS: return acos(x);
    case U_ATAN: return atan(x);
    case U_SINH: return sinh(x);
    case U_COSH: return cosh(x);
    case U_ASINH: return asinh(x);
    case U_ACOSH: return acosh(x);
    case U_ATANH: return atanh(x);
    case U_SOFTPLUS: return x > 30 ? x : log1p(exp(x));
    case U_SOFTSIGN: return x / (1 + fabs(x));
    case U_SIGN: return x > 0 ? 1 : x < 0 ? -1 : 0;
    case U_THRELU: return x > a ? x : 0;
    case U_NOT: return x == 0;
    case U_IDENT: return x;
    case U_ISNAN: return x != x;
    case U_GELU: return 0.5 * x * (1 + erf(x / sqrt(2.0)));
    }
    return x;
}

int eng_ref_unary(eng_run *r, eng_node *n, cl_err *err)
{
    unary_kind k = U_IDENT;
    for (size_t i = 0; i < CL_ARRAY_LEN(unary_names); i++)
        if (strcmp(unary_names[i].name, n->op_type) == 0)
            k = unary_names[i].k;
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (k == U_IDENT)
        return eng_out_forward(r, n, 0, 0, x->rank, x->dims, err);
    double a = 0, b = 0;
    switch (k) {
    case U_LEAKY: a = eng_attr_f(n, "alpha", 0.01f); break;
    case U_ELU: case U_CELU: a = eng_attr_f(n, "alpha", 1.0f); break;
    case U_SELU: a = eng_attr_f(n, "alpha", 1.67326319217681884765625f); b = eng_attr_f(n, "gamma", 1.05070102214813232421875f); break;
    case U_HSIGMOID: a = eng_attr_f(n, "alpha", 0.2f); b = eng_attr_f(n, "beta", 0.5f); break;
    case U_THRELU: a = eng_attr_f(n, "alpha", 1.0f); break;
    default: break;
    }
    bool is_f = eng_dtype_is_float(x->dtype);
    bool int_ok = k == U_ABS || k == U_NEG || k == U_SIGN || k == U_RELU || k == U_NOT;
    if (!is_f && !int_ok)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input type %s is not supported", cl_engine_dtype_name(x->dtype));
    if (k == U_NOT && x->dtype != CL_ENGINE_DT_BOOL)
        return eng_node_err(err, CL_E_FORMAT, n, "input must be bool");
    cl_engine_dtype odt = k == U_ISNAN ? CL_ENGINE_DT_BOOL : x->dtype;
    eng_tensor *y = eng_out(r, n, 0, odt, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(x);
    if (x->dtype == CL_ENGINE_DT_FLOAT && odt == CL_ENGINE_DT_FLOAT) {
        const float *xp = x->data;
        float *yp = y->data;
        if (k == U_RELU) {
            for (int64_t i = 0; i < N; i++)
                yp[i] = xp[i] > 0 ? xp[i] : 0;
        } else if (k == U_SIGMOID) {
#pragma omp parallel for if (N > 65536)
            for (int64_t i = 0; i < N; i++)
                yp[i] = 1.0f / (1.0f + expf(-xp[i]));
        } else {
#pragma omp parallel for if (N > 65536)
            for (int64_t i = 0; i < N; i++)
                yp[i] = (float)unary_f(k, xp[i], a, b);
        }
        return 0;
    }
    for (int64_t i = 0; i < N; i++) {
        if (is_f) {
            eng_set_f(y, i, unary_f(k, eng_get_f(x, i), a, b));
        } else {
            int64_t v = eng_get_i(x, i);
            int64_t o = k == U_ABS ? (v < 0 ? -v : v) : k == U_NEG ? -v : k == U_SIGN ? (v > 0) - (v < 0)
                        : k == U_NOT ? !v : (v > 0 ? v : 0);
            eng_set_i(y, i, o);
        }
    }
    return 0;
}

static int run_clip(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    double lo = -INFINITY, hi = INFINITY;
    bool isint = !eng_dtype_is_float(x->dtype);
    int64_t ilo = INT64_MIN, ihi = INT64_MAX;
    if (r->m->opset < 11) {
        lo = eng_attr_f(n, "min", -INFINITY);
        hi = eng_attr_f(n, "max", INFINITY);
    } else {
        eng_tensor *tl = eng_in_plain(r, n, 1, err), *th = eng_in_plain(r, n, 2, err);
        if ((tl && eng_numel(tl) != 1) || (th && eng_numel(th) != 1))
            return eng_node_err(err, CL_E_FORMAT, n, "min and max must be scalars");
        if (tl) {
            lo = eng_get_f(tl, 0);
            ilo = eng_get_i(tl, 0);
        }
        if (th) {
            hi = eng_get_f(th, 0);
            ihi = eng_get_i(th, 0);
        }
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(x);
    if (x->dtype == CL_ENGINE_DT_FLOAT) {
        float flo = (float)lo, fhi = (float)hi;
        const float *xp = x->data;
        float *yp = y->data;
        for (int64_t i = 0; i < N; i++) {
            float v = xp[i];
            yp[i] = v < flo ? flo : v > fhi ? fhi : v;
        }
        return 0;
    }
    for (int64_t i = 0; i < N; i++) {
        if (isint) {
            int64_t v = eng_get_i(x, i);
            eng_set_i(y, i, v < ilo ? ilo : v > ihi ? ihi : v);
        } else {
            double v = eng_get_f(x, i);
            eng_set_f(y, i, v < lo ? lo : v > hi ? hi : v);
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- binary / variadic elementwise */

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MOD, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR, B_XOR,
               B_MAX, B_MIN, B_SUM, B_MEAN, B_PRELU, B_BSHIFT } binary_kind;

static const struct {
    const char *name;
    binary_kind k;
} binary_names[] = {
    {"Add", B_ADD}, {"Sub", B_SUB}, {"Mul", B_MUL}, {"Div", B_DIV}, {"Pow", B_POW}, {"Mod", B_MOD},
    {"Equal", B_EQ}, {"Less", B_LT}, {"Greater", B_GT}, {"LessOrEqual", B_LE}, {"GreaterOrEqual", B_GE},
    {"And", B_AND}, {"Or", B_OR}, {"Xor", B_XOR}, {"Max", B_MAX}, {"Min", B_MIN}, {"Sum", B_SUM},
    {"Mean", B_MEAN}, {"PRelu", B_PRELU}, {"BitShift", B_BSHIFT},
};

static bool is_cmp(binary_kind k)
{
    return k == B_EQ || k == B_LT || k == B_GT || k == B_LE || k == B_GE;
}

static double bin_f(binary_kind k, double a, double b, bool fmod_mode)
{
    switch (k) {
    case B_ADD: case B_SUM: case B_MEAN: return a + b;
    case B_SUB: return a - b;
    case B_MUL: return a * b;
    case B_DIV: return a / b;
    case B_POW: return pow(a, b);
    case B_MOD: {
        double m = fmod(a, b);
        if (!fmod_mode && m != 0 && ((m < 0) != (b < 0)))
            m += b;
        return m;
    }
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_GT: return a > b;
    case B_LE: return a <= b;
    case B_GE: return a >= b;
    case B_AND: return (a != 0) && (b != 0);
    case B_OR: return (a != 0) || (b != 0);
    case B_XOR: return (a != 0) != (b != 0);
    case B_MAX: return (a != a || b != b) ? NAN : a > b ? a : b;
    case B_MIN: return (a != a || b != b) ? NAN : a < b ? a : b;
    case B_PRELU: return a >= 0 ? a : a * b;
    default: return 0;
    }
}

static int64_t bin_i(binary_kind k, int64_t a, int64_t b, bool fmod_mode, bool left, bool *div0)
{
    switch (k) {
    case B_ADD: case B_SUM: case B_MEAN: return (int64_t)((uint64_t)a + (uint64_t)b);
    case B_SUB: return (int64_t)((uint64_t)a - (uint64_t)b);
    case B_MUL: return (int64_t)((uint64_t)a * (uint64_t)b);
    case B_DIV:
    case B_MOD: {
        if (b == 0 || (a == INT64_MIN && b == -1)) {
            *div0 = true;
            return 0;
        }
        if (k == B_DIV)
            return a / b;
        int64_t m = a % b;
        if (!fmod_mode && m != 0 && ((m < 0) != (b < 0)))
            m += b;
        return m;
    }
    case B_POW: {
        if (b < 0)
            return a == 1 ? 1 : 0;
        int64_t res = 1;
        for (int64_t i = 0; i < b && i < 64; i++)
            res = (int64_t)((uint64_t)res * (uint64_t)a);
        return res;
    }
    case B_EQ: return a == b;
    case B_LT: return a < b;
    case B_GT: return a > b;
    case B_LE: return a <= b;
    case B_GE: return a >= b;
    case B_AND: return a && b;
    case B_OR: return a || b;
    case B_XOR: return (a != 0) != (b != 0);
    case B_MAX: return a > b ? a : b;
    case B_MIN: return a < b ? a : b;
    case B_PRELU: return a >= 0 ? a : a * b;
    case B_BSHIFT: return b >= 64 || b < 0 ? 0 : left ? (int64_t)((uint64_t)a << b) : (int64_t)((uint64_t)a >> b);
    default: return 0;
    }
}

/* out = a op b with broadcasting (a, b plain). */
static int binary_apply(const eng_node *n, binary_kind k, eng_tensor *a, eng_tensor *b, eng_tensor *out,
                        const bcast *bc, bool fmod_mode, bool left, cl_err *err)
{
    bool div0 = false;
    bool uint_t = a->dtype == CL_ENGINE_DT_UINT64 || a->dtype == CL_ENGINE_DT_UINT32 || a->dtype == CL_ENGINE_DT_UINT8 || a->dtype == CL_ENGINE_DT_UINT16;
    if (a->dtype == CL_ENGINE_DT_FLOAT && b->dtype == CL_ENGINE_DT_FLOAT && out->dtype == CL_ENGINE_DT_FLOAT) {
        const float *ap = a->data, *bp = b->data;
        float *op = out->data;
        if (eng_numel(a) == bc->total && eng_numel(b) == bc->total && (k == B_ADD || k == B_MUL || k == B_SUB || k == B_SUM)) {
            int64_t N = bc->total;
            if (k == B_ADD || k == B_SUM)
                for (int64_t i = 0; i < N; i++)
                    op[i] = ap[i] + bp[i];
            else if (k == B_MUL)
                for (int64_t i = 0; i < N; i++)
                    op[i] = ap[i] * bp[i];
            else
                for (int64_t i = 0; i < N; i++)
                    op[i] = ap[i] - bp[i];
            return 0;
        }
        switch (k) {
        case B_ADD: case B_SUM: BCAST_LOOP(bc, 2, op[e] = ap[o[0]] + bp[o[1]]); break;
        case B_SUB: BCAST_LOOP(bc, 2, op[e] = ap[o[0]] - bp[o[1]]); break;
        case B_MUL: BCAST_LOOP(bc, 2, op[e] = ap[o[0]] * bp[o[1]]); break;
        case B_DIV: BCAST_LOOP(bc, 2, op[e] = ap[o[0]] / bp[o[1]]); break;
        case B_POW: BCAST_LOOP(bc, 2, op[e] = powf(ap[o[0]], bp[o[1]])); break;
        case B_MOD: BCAST_LOOP(bc, 2, op[e] = (float)bin_f(k, ap[o[0]], bp[o[1]], fmod_mode)); break;
        default: BCAST_LOOP(bc, 2, op[e] = (float)bin_f(k, ap[o[0]], bp[o[1]], fmod_mode)); break;
        }
        return 0;
    }
    if (eng_dtype_is_float(a->dtype) || (k == B_POW && eng_dtype_is_float(b->dtype))) {
        BCAST_LOOP(bc, 2, eng_set_f(out, e, bin_f(k, eng_get_f(a, o[0]), eng_get_f(b, o[1]), fmod_mode)));
    } else if (uint_t && (k == B_DIV || k == B_MOD || k == B_LT || k == B_GT || k == B_LE || k == B_GE ||
                          k == B_MAX || k == B_MIN)) {
        BCAST_LOOP(bc, 2, {
            uint64_t x = (uint64_t)eng_get_i(a, o[0]), y = (uint64_t)eng_get_i(b, o[1]);
            uint64_t v = 0;
            switch (k) {
            case B_DIV: if (!y) div0 = true; else v = x / y; break;
            case B_MOD: if (!y) div0 = true; else v = x % y; break;
            case B_LT: v = x < y; break;
            case B_GT: v = x > y; break;
            case B_LE: v = x <= y; break;
            case B_GE: v = x >= y; break;
            case B_MAX: v = x > y ? x : y; break;
            default: v = x < y ? x : y; break;
            }
            eng_set_i(out, e, (int64_t)v);
        });
    } else {
        BCAST_LOOP(bc, 2, eng_set_i(out, e, bin_i(k, eng_get_i(a, o[0]), eng_get_i(b, o[1]), fmod_mode, left, &div0)));
    }
    if (div0)
        return eng_node_err(err, CL_E_FORMAT, n, "integer division by zero");
    return 0;
}

int eng_ref_binary(eng_run *r, eng_node *n, cl_err *err)
{
    binary_kind k = B_ADD;
    for (size_t i = 0; i < CL_ARRAY_LEN(binary_names); i++)
        if (strcmp(binary_names[i].name, n->op_type) == 0)
            k = binary_names[i].k;
    bool fmod_mode = eng_attr_i(n, "fmod", 0) != 0;
    bool left = strcmp(eng_attr_s(n, "direction", "LEFT"), "LEFT") == 0;
    int nin = n->n_in;
    eng_tensor *ins[64] = {0};
    if (nin > 64 || nin < 1)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs 1 to 64 inputs");
    for (int i = 0; i < nin; i++)
        if (need_in(r, n, i, &ins[i], err) != 0)
            return -1;
    for (int i = 1; i < nin; i++)
        if (ins[i]->dtype != ins[0]->dtype && k != B_POW)
            return eng_node_err(err, CL_E_FORMAT, n, "inputs have different types (%s and %s)",
                                cl_engine_dtype_name(ins[0]->dtype), cl_engine_dtype_name(ins[i]->dtype));
    if ((k == B_AND || k == B_OR || k == B_XOR) && ins[0]->dtype != CL_ENGINE_DT_BOOL)
        return eng_node_err(err, CL_E_FORMAT, n, "inputs must be bool");
    cl_engine_dtype odt = is_cmp(k) ? CL_ENGINE_DT_BOOL : ins[0]->dtype;
    if (nin == 1) {
        if (k == B_MEAN || k == B_SUM || k == B_MAX || k == B_MIN)
            return eng_out_forward(r, n, 0, 0, ins[0]->rank, ins[0]->dims, err);
        return eng_node_err(err, CL_E_FORMAT, n, "needs two inputs");
    }
    /* fold left over the inputs: acc = acc op in[i] */
    eng_tensor acc = *ins[0];
    acc.owned = false;
    for (int i = 1; i < nin; i++) {
        eng_tensor *pair[2] = {&acc, ins[i]};
        bcast bc;
        if (bcast_init(&bc, pair, 2, n, err) != 0) {
            eng_tensor_free(&acc);
            return -1;
        }
        eng_tensor res = {.dtype = odt, .rank = bc.rank};
        memcpy(res.dims, bc.dims, sizeof res.dims);
        if (eng_tensor_alloc(&res, err) != 0 || binary_apply(n, k, &acc, ins[i], &res, &bc, fmod_mode, left, err) != 0) {
            eng_tensor_free(&res);
            eng_tensor_free(&acc);
            return -1;
        }
        eng_tensor_free(&acc);
        acc = res;
    }
    if (k == B_MEAN) {
        int64_t N = eng_numel(&acc);
        for (int64_t i = 0; i < N; i++)
            eng_set_f(&acc, i, eng_get_f(&acc, i) / nin);
    }
    eng_tensor *y = eng_out(r, n, 0, odt, acc.rank, acc.dims, err);
    if (!y) {
        eng_tensor_free(&acc);
        return -1;
    }
    if (!acc.owned) {
        memcpy(y->data, acc.data, acc.nbytes);
    } else {
        eng_buf_free(y->data);
        y->data = acc.data;
    }
    return 0;
}

static int run_where(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *c, *a, *b;
    if (need_in(r, n, 0, &c, err) || need_in(r, n, 1, &a, err) || need_in(r, n, 2, &b, err))
        return -1;
    if (c->dtype != CL_ENGINE_DT_BOOL || a->dtype != b->dtype)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a bool condition and two inputs of the same type");
    eng_tensor *ts[3] = {c, a, b};
    bcast bc;
    if (bcast_init(&bc, ts, 3, n, err) != 0)
        return -1;
    eng_tensor *y = eng_out(r, n, 0, a->dtype, bc.rank, bc.dims, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(a->dtype);
    const uint8_t *cp = c->data;
    BCAST_LOOP(&bc, 3, memcpy((char *)y->data + e * es, cp[o[0]] ? (char *)a->data + o[1] * es : (char *)b->data + o[2] * es, es));
    return 0;
}

/* ---------------------------------------------------------------- shape manipulation */

static int run_reshape(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *s;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (r->m->opset < 5) {
        size_t c;
        const int64_t *v = eng_attr_ints(n, "shape", &c);
        if (c > CL_ENGINE_MAX_RANK)
            return eng_node_err(err, CL_E_UNSUPPORTED, n, "rank too large");
        if (c)
            memcpy(shape, v, c * sizeof *v);
        ns = (int)c;
    } else {
        if (need_in(r, n, 1, &s, err) != 0 || read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
            return -1;
    }
    bool allowzero = eng_attr_i(n, "allowzero", 0) != 0;
    int infer = -1;
    int64_t known = 1;
    for (int i = 0; i < ns; i++) {
        if (shape[i] == 0 && !allowzero) {
            if (i >= x->rank)
                return eng_node_err(err, CL_E_FORMAT, n, "shape entry %d is 0 but the input has rank %d", i, x->rank);
            shape[i] = x->dims[i];
        }
        if (shape[i] == -1) {
            if (infer >= 0)
                return eng_node_err(err, CL_E_FORMAT, n, "shape has more than one -1");
            infer = i;
            continue;
        }
        if (shape[i] < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "shape has a negative entry %lld", (long long)shape[i]);
        if (shape[i] && known > CL_ENGINE_MAX_TENSOR_ELEMS / shape[i])
            return eng_node_err(err, CL_E_FORMAT, n, "shape is too large");
        known *= shape[i];
    }
    int64_t N = eng_numel(x);
    if (infer >= 0) {
        if (known == 0 || N % known)
            return eng_node_err(err, CL_E_FORMAT, n, "cannot reshape %s: -1 cannot be inferred", DIMS(x));
        shape[infer] = N / known;
    }
    return eng_out_forward(r, n, 0, 0, ns, shape, err);
}

static int run_flatten(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t ax = norm_axis(eng_attr_i(n, "axis", 1), x->rank);
    if (ax < 0 || ax > x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range for %s", DIMS(x));
    int64_t d[2] = {1, 1};
    for (int i = 0; i < x->rank; i++)
        d[i >= ax] *= x->dims[i];
    return eng_out_forward(r, n, 0, 0, 2, d, err);
}

static int get_axes(eng_run *r, eng_node *n, int in_idx, int64_t *axes, int *na, cl_err *err)
{
    *na = 0;
    if (r->m->opset >= 13) {
        eng_tensor *a = eng_in_plain(r, n, in_idx, err);
        if (!a)
            return 0;
        return read_ints(n, a, axes, CL_ENGINE_MAX_RANK, na, err);
    }
    size_t c;
    const int64_t *v = eng_attr_ints(n, "axes", &c);
    if (c > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many axes");
    if (c)
        memcpy(axes, v, c * sizeof *v);
    *na = (int)c;
    return 0;
}

static int run_squeeze(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na;
    if (get_axes(r, n, 1, axes, &na, err) != 0)
        return -1;
    bool drop[CL_ENGINE_MAX_RANK] = {0};
    for (int i = 0; i < na; i++) {
        int64_t a = norm_axis(axes[i], x->rank);
        if (a < 0 || a >= x->rank || x->dims[a] != 1)
            return eng_node_err(err, CL_E_FORMAT, n, "cannot squeeze axis %lld of %s", (long long)axes[i], DIMS(x));
        drop[a] = true;
    }
    int64_t d[CL_ENGINE_MAX_RANK];
    int nr = 0;
    for (int i = 0; i < x->rank; i++)
        if (!(na ? drop[i] : x->dims[i] == 1))
            d[nr++] = x->dims[i];
    return eng_out_forward(r, n, 0, 0, nr, d, err);
}

static int run_unsqueeze(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na;
    if (get_axes(r, n, 1, axes, &na, err) != 0)
        return -1;
    int nr = x->rank + na;
    if (nr > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "result rank %d is too large", nr);
    bool ins[CL_ENGINE_MAX_RANK] = {0};
    for (int i = 0; i < na; i++) {
        int64_t a = norm_axis(axes[i], nr);
        if (a < 0 || a >= nr || ins[a])
            return eng_node_err(err, CL_E_FORMAT, n, "invalid axis %lld", (long long)axes[i]);
        ins[a] = true;
    }
    int64_t d[CL_ENGINE_MAX_RANK];
    for (int i = 0, j = 0; i < nr; i++)
        d[i] = ins[i] ? 1 : x->dims[j++];
    return eng_out_forward(r, n, 0, 0, nr, d, err);
}

static int run_shape(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    if (!x)
        return eng_node_err(err, CL_E_FORMAT, n, "input is required");
    int64_t start = eng_attr_i(n, "start", 0), end = eng_attr_i(n, "end", x->rank);
    if (start < 0)
        start += x->rank;
    if (end < 0)
        end += x->rank;
    start = start < 0 ? 0 : start > x->rank ? x->rank : start;
    end = end < 0 ? 0 : end > x->rank ? x->rank : end;
    int64_t len = end > start ? end - start : 0;
    eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_INT64, 1, &len, err);
    if (!y)
        return -1;
    for (int64_t i = 0; i < len; i++)
        ((int64_t *)y->data)[i] = x->dims[start + i];
    return 0;
}

static int run_size(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    if (!x)
        return eng_node_err(err, CL_E_FORMAT, n, "input is required");
    eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_INT64, 0, NULL, err);
    if (!y)
        return -1;
    ((int64_t *)y->data)[0] = eng_numel(x);
    return 0;
}

static int run_cast(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    cl_engine_dtype to;
    if (strcmp(n->op_type, "CastLike") == 0) {
        eng_tensor *l = eng_in(r, n, 1);
        if (!l)
            return eng_node_err(err, CL_E_FORMAT, n, "needs a target_type input");
        to = l->dtype;
    } else {
        to = (cl_engine_dtype)eng_attr_i(n, "to", 0);
    }
    if (!eng_dtype_supported(to))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "cast to %s is not supported", cl_engine_dtype_name(to));
    eng_tensor *y = eng_out(r, n, 0, to, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(x);
    if (x->dtype == to) {
        memcpy(y->data, x->data, x->nbytes);
        return 0;
    }
    bool f = eng_dtype_is_float(x->dtype) || eng_dtype_is_float(to);
    for (int64_t i = 0; i < N; i++) {
        if (f)
            eng_set_f(y, i, eng_get_f(x, i));
        else
            eng_set_i(y, i, eng_get_i(x, i));
    }
    return 0;
}

static int run_transpose(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t perm[CL_ENGINE_MAX_RANK];
    size_t c;
    const int64_t *p = eng_attr_ints(n, "perm", &c);
    if (p) {
        if ((int)c != rank)
            return eng_node_err(err, CL_E_FORMAT, n, "perm has %zu entries for rank %d", c, rank);
        bool seen[CL_ENGINE_MAX_RANK] = {0};
        for (int i = 0; i < rank; i++) {
            if (p[i] < 0 || p[i] >= rank || seen[p[i]])
                return eng_node_err(err, CL_E_FORMAT, n, "perm is not a permutation");
            seen[p[i]] = true;
            perm[i] = p[i];
        }
    } else {
        for (int i = 0; i < rank; i++)
            perm[i] = rank - 1 - i;
    }
    int64_t od[CL_ENGINE_MAX_RANK], ist[CL_ENGINE_MAX_RANK], st[CL_ENGINE_MAX_RANK];
    int64_t s = 1;
    for (int i = rank - 1; i >= 0; i--) {
        ist[i] = s;
        s *= x->dims[i];
    }
    for (int i = 0; i < rank; i++) {
        od[i] = x->dims[perm[i]];
        st[i] = ist[perm[i]];
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, rank, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t N = eng_numel(x);
    int64_t idx[CL_ENGINE_MAX_RANK] = {0}, off = 0;
    for (int64_t e = 0; e < N; e++) {
        if (es == 4)
            ((uint32_t *)y->data)[e] = ((const uint32_t *)x->data)[off];
        else
            memcpy((char *)y->data + e * es, (char *)x->data + off * es, es);
        for (int d = rank - 1; d >= 0; d--) {
            idx[d]++;
            off += st[d];
            if (idx[d] < od[d])
                break;
            off -= st[d] * od[d];
            idx[d] = 0;
        }
    }
    return 0;
}

int eng_ref_concat(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *ins[256];
    if (n->n_in > 256)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "more than 256 inputs");
    for (int i = 0; i < n->n_in; i++)
        if (need_in(r, n, i, &ins[i], err) != 0)
            return -1;
    eng_tensor *x0 = ins[0];
    int64_t ax = norm_axis(eng_attr_i(n, "axis", 0), x0->rank);
    if (!eng_attr_find(n, "axis") || ax < 0 || ax >= x0->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a valid axis for rank %d", x0->rank);
    int64_t od[CL_ENGINE_MAX_RANK];
    memcpy(od, x0->dims, sizeof od);
    od[ax] = 0;
    for (int i = 0; i < n->n_in; i++) {
        eng_tensor *t = ins[i];
        if (t->rank != x0->rank || t->dtype != x0->dtype)
            return eng_node_err(err, CL_E_FORMAT, n, "inputs must have the same rank and type");
        for (int d = 0; d < t->rank; d++)
            if (d != ax && t->dims[d] != x0->dims[d])
                return eng_node_err(err, CL_E_FORMAT, n, "input shapes %s and %s differ outside the axis", DIMS(x0),
                                    DIMS(t));
        od[ax] += t->dims[ax];
    }
    eng_tensor *y = eng_out(r, n, 0, x0->dtype, x0->rank, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x0->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= od[d];
    for (int d = (int)ax + 1; d < x0->rank; d++)
        inner *= od[d];
    size_t orow = (size_t)(od[ax] * inner) * es;
    size_t off = 0;
    for (int i = 0; i < n->n_in; i++) {
        size_t row = (size_t)(ins[i]->dims[ax] * inner) * es;
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + o * orow + off, (char *)ins[i]->data + o * row, row);
        off += row;
    }
    return 0;
}

static int run_split(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t ax = norm_axis(eng_attr_i(n, "axis", 0), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    int no = n->n_out;
    int64_t sz[256];
    if (no > 256)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many outputs");
    int ns = 0;
    if (r->m->opset >= 13) {
        eng_tensor *s = eng_in_plain(r, n, 1, err);
        if (s && read_ints(n, s, sz, 256, &ns, err) != 0)
            return -1;
    } else {
        size_t c;
        const int64_t *v = eng_attr_ints(n, "split", &c);
        if (c > 256)
            return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many splits");
        if (c)
            memcpy(sz, v, c * sizeof *v);
        ns = (int)c;
    }
    int64_t total = x->dims[ax];
    if (ns) {
        if (ns != no)
            return eng_node_err(err, CL_E_FORMAT, n, "split has %d entries for %d outputs", ns, no);
        int64_t s = 0;
        for (int i = 0; i < ns; i++) {
            if (sz[i] < 0)
                return eng_node_err(err, CL_E_FORMAT, n, "negative split");
            s += sz[i];
        }
        if (s != total)
            return eng_node_err(err, CL_E_FORMAT, n, "splits sum to %lld, axis has %lld", (long long)s, (long long)total);
    } else {
        int64_t per = (total + no - 1) / no;
        for (int i = 0; i < no; i++) {
            int64_t left = total - per * i;
            sz[i] = left < 0 ? 0 : left < per ? left : per;
        }
    }
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= x->dims[d];
    for (int d = (int)ax + 1; d < x->rank; d++)
        inner *= x->dims[d];
    size_t irow = (size_t)(total * inner) * es, off = 0;
    for (int i = 0; i < no; i++) {
        int64_t od[CL_ENGINE_MAX_RANK];
        memcpy(od, x->dims, sizeof od);
        od[ax] = sz[i];
        eng_tensor *y = eng_out(r, n, i, x->dtype, x->rank, od, err);
        if (!y)
            return -1;
        size_t row = (size_t)(sz[i] * inner) * es;
        for (int64_t o = 0; o < outer; o++)
            memcpy((char *)y->data + o * row, (char *)x->data + o * irow + off, row);
        off += row;
    }
    return 0;
}

static int64_t clampi(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : v > hi ? hi : v;
}

static int run_slice(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t st[CL_ENGINE_MAX_RANK], en[CL_ENGINE_MAX_RANK], ax[CL_ENGINE_MAX_RANK], sp[CL_ENGINE_MAX_RANK];
    int nst = 0, nen = 0, nax = 0, nsp = 0;
    if (r->m->opset < 10) {
        size_t c;
        const int64_t *v;
        v = eng_attr_ints(n, "starts", &c);
        if (c > CL_ENGINE_MAX_RANK) return eng_node_err(err, CL_E_FORMAT, n, "too many starts");
        if (c)
            memcpy(st, v, c * 8);
        nst = (int)c;
        v = eng_attr_ints(n, "ends", &c);
        if (c > CL_ENGINE_MAX_RANK) return eng_node_err(err, CL_E_FORMAT, n, "too many ends");
        if (c)
            memcpy(en, v, c * 8);
        nen = (int)c;
        v = eng_attr_ints(n, "axes", &c);
        if (c > CL_ENGINE_MAX_RANK) return eng_node_err(err, CL_E_FORMAT, n, "too many axes");
        if (c)
            memcpy(ax, v, c * 8);
        nax = (int)c;
    } else {
        eng_tensor *t;
        if (need_in(r, n, 1, &t, err) || read_ints(n, t, st, CL_ENGINE_MAX_RANK, &nst, err) ||
            need_in(r, n, 2, &t, err) || read_ints(n, t, en, CL_ENGINE_MAX_RANK, &nen, err))
            return -1;
        if ((t = eng_in_plain(r, n, 3, err)) && read_ints(n, t, ax, CL_ENGINE_MAX_RANK, &nax, err))
            return -1;
        if ((t = eng_in_plain(r, n, 4, err)) && read_ints(n, t, sp, CL_ENGINE_MAX_RANK, &nsp, err))
            return -1;
    }
    if (nst != nen || (nax && nax != nst) || (nsp && nsp != nst))
        return eng_node_err(err, CL_E_FORMAT, n, "starts, ends, axes and steps must have the same length");
    int64_t b[CL_ENGINE_MAX_RANK], stp[CL_ENGINE_MAX_RANK], od[CL_ENGINE_MAX_RANK];
    bool seen[CL_ENGINE_MAX_RANK] = {0};
    for (int d = 0; d < rank; d++) {
        b[d] = 0;
        stp[d] = 1;
        od[d] = x->dims[d];
    }
    for (int i = 0; i < nst; i++) {
        int64_t a = nax ? norm_axis(ax[i], rank) : i;
        if (a < 0 || a >= rank || seen[a])
            return eng_node_err(err, CL_E_FORMAT, n, "invalid or repeated axis");
        seen[a] = true;
        int64_t s = nsp ? sp[i] : 1, dim = x->dims[a];
        if (s == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "step is 0");
        int64_t lo = st[i], hi = en[i];
        if (lo < 0) lo += dim;
        if (hi < 0) hi += dim;
        if (s > 0) {
            lo = clampi(lo, 0, dim);
            hi = clampi(hi, 0, dim);
            od[a] = hi > lo ? (hi - lo + s - 1) / s : 0;
        } else {
            lo = clampi(lo, -1, dim - 1);
            hi = clampi(hi, -1, dim - 1);
            od[a] = lo > hi ? (lo - hi + (-s) - 1) / (-s) : 0;
        }
        b[a] = lo;
        stp[a] = s;
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, rank, od, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(y);
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t ist[CL_ENGINE_MAX_RANK], s = 1;
    for (int d = rank - 1; d >= 0; d--) {
        ist[d] = s;
        s *= x->dims[d];
    }
    int64_t idx[CL_ENGINE_MAX_RANK] = {0};
    for (int64_t e = 0; e < N; e++) {
        int64_t off = 0;
        for (int d = 0; d < rank; d++)
            off += (b[d] + idx[d] * stp[d]) * ist[d];
        memcpy((char *)y->data + e * es, (char *)x->data + off * es, es);
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}

static int run_gather(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *ind;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &ind, err))
        return -1;
    if (ind->dtype != CL_ENGINE_DT_INT64 && ind->dtype != CL_ENGINE_DT_INT32)
        return eng_node_err(err, CL_E_FORMAT, n, "indices must be int32 or int64");
    int64_t ax = norm_axis(eng_attr_i(n, "axis", 0), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range for %s", DIMS(x));
    int orank = x->rank - 1 + ind->rank;
    if (orank > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "result rank too large");
    int64_t od[CL_ENGINE_MAX_RANK];
    int k = 0;
    for (int d = 0; d < ax; d++)
        od[k++] = x->dims[d];
    for (int d = 0; d < ind->rank; d++)
        od[k++] = ind->dims[d];
    for (int d = (int)ax + 1; d < x->rank; d++)
        od[k++] = x->dims[d];
    int64_t ni = eng_numel(ind), dim = x->dims[ax];
    for (int64_t i = 0; i < ni; i++) {
        int64_t v = eng_get_i(ind, i);
        if (v < -dim || v >= dim)
            return eng_node_err(err, CL_E_FORMAT, n, "index %lld is out of range for axis of size %lld", (long long)v,
                                (long long)dim);
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, orank, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= x->dims[d];
    for (int d = (int)ax + 1; d < x->rank; d++)
        inner *= x->dims[d];
    size_t row = (size_t)inner * es;
    char *yp = y->data;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t i = 0; i < ni; i++) {
            int64_t v = eng_get_i(ind, i);
            if (v < 0)
                v += dim;
            memcpy(yp, (char *)x->data + ((size_t)(o * dim + v)) * row, row);
            yp += row;
        }
    return 0;
}

/* Broadcast-copies x into shape od (Expand), or tiles it (Tile). */
static int run_expand(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *s;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &s, err))
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
        return -1;
    eng_tensor shp = {.dtype = x->dtype, .rank = ns};
    for (int i = 0; i < ns; i++) {
        if (shape[i] < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "negative shape");
        shp.dims[i] = shape[i];
    }
    eng_tensor *ts[2] = {x, &shp};
    bcast bc;
    if (bcast_init(&bc, ts, 2, n, err) != 0)
        return -1;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, bc.rank, bc.dims, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    BCAST_LOOP(&bc, 1, memcpy((char *)y->data + e * es, (char *)x->data + o[0] * es, es));
    return 0;
}

static int run_tile(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *s;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &s, err))
        return -1;
    int64_t rep[CL_ENGINE_MAX_RANK];
    int nr;
    if (read_ints(n, s, rep, CL_ENGINE_MAX_RANK, &nr, err) != 0)
        return -1;
    if (nr != x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "repeats has %d entries for rank %d", nr, x->rank);
    int64_t od[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < x->rank; d++) {
        if (rep[d] < 0 || (rep[d] && x->dims[d] > CL_ENGINE_MAX_TENSOR_ELEMS / rep[d]))
            return eng_node_err(err, CL_E_FORMAT, n, "invalid repeats");
        od[d] = x->dims[d] * rep[d];
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0}, ist[CL_ENGINE_MAX_RANK], st = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        ist[d] = st;
        st *= x->dims[d];
    }
    for (int64_t e = 0; e < N; e++) {
        int64_t off = 0;
        for (int d = 0; d < x->rank; d++)
            off += (idx[d] % x->dims[d]) * ist[d];
        memcpy((char *)y->data + e * es, (char *)x->data + off * es, es);
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}

static int run_constant_of_shape(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *s;
    if (need_in(r, n, 0, &s, err) != 0)
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
        return -1;
    const eng_attr *a = eng_attr_find(n, "value");
    cl_engine_dtype dt = a && a->t ? a->t->dtype : CL_ENGINE_DT_FLOAT;
    if (a && a->t && eng_numel(a->t) != 1)
        return eng_node_err(err, CL_E_FORMAT, n, "value must have one element");
    for (int i = 0; i < ns; i++)
        if (shape[i] < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "negative shape");
    eng_tensor *y = eng_out(r, n, 0, dt, ns, shape, err);
    if (!y)
        return -1;
    if (a && a->t) {
        size_t es = cl_engine_dtype_size(dt);
        int64_t N = eng_numel(y);
        for (int64_t i = 0; i < N; i++)
            memcpy((char *)y->data + i * es, a->t->data, es);
    }
    return 0;
}

static int run_range(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *ts[3];
    for (int i = 0; i < 3; i++)
        if (need_in(r, n, i, &ts[i], err) != 0)
            return -1;
    cl_engine_dtype dt = ts[0]->dtype;
    for (int i = 0; i < 3; i++)
        if (eng_numel(ts[i]) != 1 || ts[i]->dtype != dt)
            return eng_node_err(err, CL_E_FORMAT, n, "start, limit and delta must be scalars of one type");
    int64_t cnt;
    if (eng_dtype_is_float(dt)) {
        double s = eng_get_f(ts[0], 0), l = eng_get_f(ts[1], 0), d = eng_get_f(ts[2], 0);
        double c = ceil((l - s) / d);
        if (!(c == c) || d == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "invalid range");
        cnt = c > 0 ? (c > (double)CL_ENGINE_MAX_TENSOR_ELEMS ? -1 : (int64_t)c) : 0;
    } else {
        int64_t s = eng_get_i(ts[0], 0), l = eng_get_i(ts[1], 0), d = eng_get_i(ts[2], 0);
        if (d == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "delta is 0");
        double c = ceil(((double)l - (double)s) / (double)d);
        cnt = c > 0 ? (c > (double)CL_ENGINE_MAX_TENSOR_ELEMS ? -1 : (int64_t)c) : 0;
    }
    if (cnt < 0)
        return eng_node_err(err, CL_E_FORMAT, n, "range is too large");
    eng_tensor *y = eng_out(r, n, 0, dt, 1, &cnt, err);
    if (!y)
        return -1;
    for (int64_t i = 0; i < cnt; i++) {
        if (eng_dtype_is_float(dt))
            eng_set_f(y, i, eng_get_f(ts[0], 0) + (double)i * eng_get_f(ts[2], 0));
        else
            eng_set_i(y, i, eng_get_i(ts[0], 0) + i * eng_get_i(ts[2], 0));
    }
    return 0;
}

static int run_pad(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t pads[2 * CL_ENGINE_MAX_RANK], axes[CL_ENGINE_MAX_RANK];
    int np = 0, na = 0;
    double cval = 0;
    const char *mode = eng_attr_s(n, "mode", "constant");
    if (r->m->opset < 11) {
        size_t c;
        const int64_t *v = eng_attr_ints(n, "pads", &c);
        if (c > 2 * CL_ENGINE_MAX_RANK)
            return eng_node_err(err, CL_E_FORMAT, n, "too many pads");
        if (c)
            memcpy(pads, v, c * 8);
        np = (int)c;
        cval = eng_attr_f(n, "value", 0.0f);
    } else {
        eng_tensor *t;
        if (need_in(r, n, 1, &t, err) || read_ints(n, t, pads, 2 * CL_ENGINE_MAX_RANK, &np, err))
            return -1;
        if ((t = eng_in_plain(r, n, 2, err))) {
            if (eng_numel(t) < 1)
                return eng_node_err(err, CL_E_FORMAT, n, "constant_value is empty");
            cval = eng_get_f(t, 0);
        }
        if ((t = eng_in_plain(r, n, 3, err)) && read_ints(n, t, axes, CL_ENGINE_MAX_RANK, &na, err))
            return -1;
    }
    int64_t lo[CL_ENGINE_MAX_RANK] = {0}, hi[CL_ENGINE_MAX_RANK] = {0};
    int cnt = na ? na : rank;
    if (np != 2 * cnt)
        return eng_node_err(err, CL_E_FORMAT, n, "pads has %d entries, expected %d", np, 2 * cnt);
    for (int i = 0; i < cnt; i++) {
        int64_t a = na ? norm_axis(axes[i], rank) : i;
        if (a < 0 || a >= rank)
            return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
        lo[a] = pads[i];
        hi[a] = pads[i + cnt];
    }
    int m = strcmp(mode, "constant") == 0 ? 0 : strcmp(mode, "reflect") == 0 ? 1 : strcmp(mode, "edge") == 0 ? 2 : -1;
    if (m < 0)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "mode '%s' is not supported", mode);
    int64_t od[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < rank; d++) {
        od[d] = x->dims[d] + lo[d] + hi[d];
        if (od[d] < 0 || lo[d] > CL_ENGINE_MAX_TENSOR_ELEMS || hi[d] > CL_ENGINE_MAX_TENSOR_ELEMS)
            return eng_node_err(err, CL_E_FORMAT, n, "pads make a negative dimension");
        if (m != 0 && od[d] > 0 && x->dims[d] == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "cannot %s-pad an empty dimension", mode);
        if (m == 1 && (lo[d] >= x->dims[d] || hi[d] >= x->dims[d]) && (lo[d] > 0 || hi[d] > 0))
            return eng_node_err(err, CL_E_FORMAT, n, "reflect pads must be smaller than the dimension");
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, rank, od, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0}, ist[CL_ENGINE_MAX_RANK], st = 1;
    for (int d = rank - 1; d >= 0; d--) {
        ist[d] = st;
        st *= x->dims[d];
    }
    size_t es = cl_engine_dtype_size(x->dtype);
    for (int64_t e = 0; e < N; e++) {
        int64_t off = 0;
        bool inside = true;
        for (int d = 0; d < rank; d++) {
            int64_t i = idx[d] - lo[d], D = x->dims[d];
            if (i < 0 || i >= D) {
                if (m == 0) {
                    inside = false;
                    break;
                }
                if (m == 2)
                    i = i < 0 ? 0 : D - 1;
                else
                    i = i < 0 ? -i : 2 * (D - 1) - i;
            }
            off += i * ist[d];
        }
        if (inside)
            memcpy((char *)y->data + e * es, (char *)x->data + off * es, es);
        else
            eng_set_f(y, e, cval);
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}

/* ---------------------------------------------------------------- more tensor ops */

static int run_gather_elements(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *ind;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &ind, err))
        return -1;
    if ((ind->dtype != CL_ENGINE_DT_INT64 && ind->dtype != CL_ENGINE_DT_INT32) || ind->rank != x->rank || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "indices must be int32/int64 with the data's rank");
    int64_t ax = norm_axis(eng_attr_i(n, "axis", 0), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    for (int d = 0; d < x->rank; d++)
        if (d != ax && ind->dims[d] > x->dims[d])
            return eng_node_err(err, CL_E_FORMAT, n, "indices %s exceed the data %s outside the axis", DIMS(ind), DIMS(x));
    eng_tensor *y = eng_out(r, n, 0, x->dtype, ind->rank, ind->dims, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t N = eng_numel(ind), idx[CL_ENGINE_MAX_RANK] = {0}, xst[CL_ENGINE_MAX_RANK], st = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        xst[d] = st;
        st *= x->dims[d];
    }
    for (int64_t e = 0; e < N; e++) {
        int64_t v = eng_get_i(ind, e), dim = x->dims[ax];
        if (v < -dim || v >= dim)
            return eng_node_err(err, CL_E_FORMAT, n, "index %lld out of range for axis of size %lld", (long long)v,
                                (long long)dim);
        if (v < 0)
            v += dim;
        int64_t off = 0;
        for (int d = 0; d < x->rank; d++)
            off += (d == ax ? v : idx[d]) * xst[d];
        memcpy((char *)y->data + e * es, (char *)x->data + off * es, es);
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++idx[d] < ind->dims[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}

static int run_trilu(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (x->rank < 2)
        return eng_node_err(err, CL_E_FORMAT, n, "input must have rank >= 2");
    int64_t k = 0;
    eng_tensor *kt = eng_in_plain(r, n, 1, err);
    if (kt) {
        if (eng_numel(kt) != 1)
            return eng_node_err(err, CL_E_FORMAT, n, "k must be a scalar");
        k = eng_get_i(kt, 0);
    }
    bool upper = eng_attr_i(n, "upper", 1) != 0;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t R = x->dims[x->rank - 2], C = x->dims[x->rank - 1], N = eng_numel(x);
    size_t es = cl_engine_dtype_size(x->dtype);
    for (int64_t e = 0; e < N; e++) {
        int64_t j = e % C, i = (e / C) % R;
        bool keep = upper ? j - i >= k : j - i <= k;
        if (keep)
            memcpy((char *)y->data + e * es, (char *)x->data + e * es, es);
    }
    return 0;
}

static int run_cumsum(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *at;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &at, err))
        return -1;
    if (eng_numel(at) != 1 || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a scalar axis and a non-scalar input");
    int64_t ax = norm_axis(eng_get_i(at, 0), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    bool excl = eng_attr_i(n, "exclusive", 0) != 0, rev = eng_attr_i(n, "reverse", 0) != 0;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t outer = 1, len = x->dims[ax], inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= x->dims[d];
    for (int d = (int)ax + 1; d < x->rank; d++)
        inner *= x->dims[d];
    bool f = eng_dtype_is_float(x->dtype);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            double accf = 0;
            int64_t acci = 0;
            for (int64_t t = 0; t < len; t++) {
                int64_t j = rev ? len - 1 - t : t, e = (o * len + j) * inner + in;
                if (excl) {
                    if (f)
                        eng_set_f(y, e, accf);
                    else
                        eng_set_i(y, e, acci);
                }
                if (f)
                    accf += eng_get_f(x, e);
                else
                    acci = (int64_t)((uint64_t)acci + (uint64_t)eng_get_i(x, e));
                if (!excl) {
                    if (f)
                        eng_set_f(y, e, accf);
                    else
                        eng_set_i(y, e, acci);
                }
            }
        }
    return 0;
}

static int run_isinf(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    bool pos = eng_attr_i(n, "detect_positive", 1) != 0, neg = eng_attr_i(n, "detect_negative", 1) != 0;
    eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_BOOL, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(x);
    for (int64_t i = 0; i < N; i++) {
        double v = eng_get_f(x, i);
        ((uint8_t *)y->data)[i] = isinf(v) && ((v > 0 && pos) || (v < 0 && neg));
    }
    return 0;
}

static int run_eyelike(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (x->rank != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "input must be 2-D");
    cl_engine_dtype dt = (cl_engine_dtype)eng_attr_i(n, "dtype", x->dtype);
    if (!eng_dtype_supported(dt))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "dtype %s is not supported", cl_engine_dtype_name(dt));
    int64_t k = eng_attr_i(n, "k", 0);
    eng_tensor *y = eng_out(r, n, 0, dt, 2, x->dims, err);
    if (!y)
        return -1;
    for (int64_t i = 0; i < x->dims[0]; i++) {
        int64_t j = i + k;
        if (j >= 0 && j < x->dims[1])
            eng_set_i(y, i * x->dims[1] + j, 1);
    }
    return 0;
}

static int run_depth_space(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool d2s = strcmp(n->op_type, "DepthToSpace") == 0;
    int64_t b = eng_attr_i(n, "blocksize", 0);
    bool crd = strcmp(eng_attr_s(n, "mode", "DCR"), "CRD") == 0;
    if (x->rank != 4 || b < 1 || b > 4096)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a 4-D input and a blocksize >= 1");
    int64_t N = x->dims[0], C = x->dims[1], H = x->dims[2], W = x->dims[3], od[4];
    if (d2s) {
        if (C % (b * b))
            return eng_node_err(err, CL_E_FORMAT, n, "channels %lld are not divisible by blocksize^2", (long long)C);
        od[0] = N, od[1] = C / (b * b), od[2] = H * b, od[3] = W * b;
    } else {
        if (H % b || W % b)
            return eng_node_err(err, CL_E_FORMAT, n, "spatial dims are not divisible by the blocksize");
        od[0] = N, od[1] = C * b * b, od[2] = H / b, od[3] = W / b;
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, 4, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(x->dtype);
    /* iterate over the depth-to-space side (big spatial) and map to the channel side */
    int64_t oc = d2s ? od[1] : C, hh = d2s ? od[2] : H, ww = d2s ? od[3] : W; /* space side dims */
    int64_t cc = d2s ? C : od[1], sh = hh / b, sw = ww / b;                    /* depth side dims */
    for (int64_t bn = 0; bn < N; bn++)
        for (int64_t c = 0; c < oc; c++)
            for (int64_t i = 0; i < hh; i++)
                for (int64_t j = 0; j < ww; j++) {
                    int64_t bi = i % b, bj = j % b;
                    int64_t dc = crd ? c * b * b + bi * b + bj : (bi * b + bj) * oc + c;
                    int64_t space = ((bn * oc + c) * hh + i) * ww + j;
                    int64_t depth = ((bn * cc + dc) * sh + i / b) * sw + j / b;
                    if (d2s)
                        memcpy((char *)y->data + space * es, (char *)x->data + depth * es, es);
                    else
                        memcpy((char *)y->data + depth * es, (char *)x->data + space * es, es);
                }
    return 0;
}

static int run_onehot(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *ind, *dep, *val;
    if (need_in(r, n, 0, &ind, err) || need_in(r, n, 1, &dep, err) || need_in(r, n, 2, &val, err))
        return -1;
    if (eng_numel(dep) != 1 || eng_numel(val) != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "depth must be a scalar and values have two elements");
    int64_t depth = eng_get_i(dep, 0);
    if (depth < 1 || depth > CL_ENGINE_MAX_TENSOR_ELEMS || ind->rank + 1 > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_FORMAT, n, "invalid depth or rank");
    int orank = ind->rank + 1;
    int64_t ax = norm_axis(eng_attr_i(n, "axis", -1), orank);
    if (ax < 0 || ax >= orank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    int64_t od[CL_ENGINE_MAX_RANK];
    for (int d = 0, k = 0; d < orank; d++)
        od[d] = d == ax ? depth : ind->dims[k++];
    eng_tensor *y = eng_out(r, n, 0, val->dtype, orank, od, err);
    if (!y)
        return -1;
    size_t es = cl_engine_dtype_size(val->dtype);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= od[d];
    for (int d = (int)ax + 1; d < orank; d++)
        inner *= od[d];
    for (int64_t o = 0; o < outer; o++)
        for (int64_t k = 0; k < depth; k++)
            for (int64_t i = 0; i < inner; i++) {
                int64_t v = eng_get_i(ind, o * inner + i);
                if (v < 0)
                    v += depth;
                int64_t e = (o * depth + k) * inner + i;
                memcpy((char *)y->data + e * es, (char *)val->data + (v == k ? es : 0), es);
            }
    return 0;
}

static int run_shrink(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    double bias = eng_attr_f(n, "bias", 0.0f), lambd = eng_attr_f(n, "lambd", 0.5f);
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = eng_numel(x);
    for (int64_t i = 0; i < N; i++) {
        double v = eng_get_f(x, i);
        eng_set_f(y, i, v < -lambd ? v + bias : v > lambd ? v - bias : 0);
    }
    return 0;
}

typedef struct topk_item {
    double v;
    int64_t i;
} topk_item;

/* A total order (NaN above everything) so qsort's comparator is consistent. */
static int cmp_val(double a, double b)
{
    bool na = a != a, nb = b != b;
    if (na || nb)
        return na && nb ? 0 : na ? 1 : -1;
    return a < b ? -1 : a > b;
}

static int topk_largest(const void *a, const void *b)
{
    const topk_item *x = a, *y = b;
    int c = cmp_val(y->v, x->v);
    return c ? c : (x->i < y->i ? -1 : x->i > y->i);
}

static int topk_smallest(const void *a, const void *b)
{
    const topk_item *x = a, *y = b;
    int c = cmp_val(x->v, y->v);
    return c ? c : (x->i < y->i ? -1 : x->i > y->i);
}

static int run_topk(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *kt;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &kt, err))
        return -1;
    if (eng_numel(kt) != 1 || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "K must have one element and X a rank >= 1");
    int64_t ax = norm_axis(eng_attr_i(n, "axis", -1), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    int64_t k = eng_get_i(kt, 0), len = x->dims[ax];
    if (k < 0 || k > len)
        return eng_node_err(err, CL_E_FORMAT, n, "K=%lld is out of range for an axis of %lld", (long long)k,
                            (long long)len);
    bool largest = eng_attr_i(n, "largest", 1) != 0;
    int64_t od[CL_ENGINE_MAX_RANK];
    memcpy(od, x->dims, sizeof od);
    od[ax] = k;
    eng_tensor *vy = eng_out(r, n, 0, x->dtype, x->rank, od, err);
    eng_tensor *iy = vy ? eng_out(r, n, 1, CL_ENGINE_DT_INT64, x->rank, od, err) : NULL;
    if (!vy || !iy)
        return -1;
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < ax; d++)
        outer *= x->dims[d];
    for (int d = (int)ax + 1; d < x->rank; d++)
        inner *= x->dims[d];
    if ((size_t)len > CL_ENGINE_MAX_TENSOR_BYTES / sizeof(topk_item))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the axis is too long");
    topk_item *items = malloc((size_t)(len + 1) * sizeof *items);
    if (!items)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    size_t es = cl_engine_dtype_size(x->dtype);
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            for (int64_t j = 0; j < len; j++)
                items[j] = (topk_item){eng_get_f(x, (o * len + j) * inner + in), j};
            qsort(items, (size_t)len, sizeof *items, largest ? topk_largest : topk_smallest);
            for (int64_t j = 0; j < k; j++) {
                int64_t e = (o * k + j) * inner + in;
                memcpy((char *)vy->data + e * es, (char *)x->data + ((o * len + items[j].i) * inner + in) * es, es);
                ((int64_t *)iy->data)[e] = items[j].i;
            }
        }
    free(items);
    return 0;
}

/* ---------------------------------------------------------------- Resize / Upsample
 * Separable N-D resampling: per output dim, the source coordinate comes from the
 * coordinate_transformation_mode; nearest picks one tap, linear two, cubic four (Keys kernel with
 * cubic_coeff_a; exclude_outside renormalizes). Taps outside the input are clamped, except for
 * tf_crop_and_resize, where a coordinate outside the input gives extrapolation_value. */
enum { RS_NEAREST, RS_LINEAR, RS_CUBIC };

typedef struct rs_taps {
    int n;
    int64_t idx[4];
    double w[4];
    bool outside;
} rs_taps;

static double cubic_w(double t, double A)
{
    t = fabs(t);
    if (t <= 1)
        return ((A + 2) * t - (A + 3)) * t * t + 1;
    if (t < 2)
        return ((A * t - 5 * A) * t + 8 * A) * t - 4 * A;
    return 0;
}

static int run_resize(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool upsample = strcmp(n->op_type, "Upsample") == 0;
    int rank = x->rank;
    if (rank < 1)
        return eng_node_err(err, CL_E_FORMAT, n, "input must not be a scalar");
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    const char *mode = eng_attr_s(n, "mode", "nearest");
    int m = strcmp(mode, "nearest") == 0 ? RS_NEAREST : (strcmp(mode, "linear") == 0 || strcmp(mode, "bilinear") == 0)
                                                            ? RS_LINEAR : strcmp(mode, "cubic") == 0 ? RS_CUBIC : -1;
    if (m < 0)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "mode '%s' is not supported", mode);
    const char *ctm = upsample || r->m->opset < 11 ? "asymmetric" : eng_attr_s(n, "coordinate_transformation_mode", "half_pixel");
    const char *nm = r->m->opset < 11 ? "floor" : eng_attr_s(n, "nearest_mode", "round_prefer_floor");
    if (upsample || r->m->opset < 11)
        nm = "floor"; /* Upsample and Resize-10 take the floor */
    if (eng_attr_i(n, "antialias", 0))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "antialias is not supported");
    double A = eng_attr_f(n, "cubic_coeff_a", -0.75f), extrap = eng_attr_f(n, "extrapolation_value", 0.0f);
    bool exclude = eng_attr_i(n, "exclude_outside", 0) != 0;
    double scale[CL_ENGINE_MAX_RANK], roi[2 * CL_ENGINE_MAX_RANK];
    int64_t od[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < rank; d++) {
        roi[d] = 0;
        roi[rank + d] = 1;
    }
    eng_tensor *roi_t = NULL, *sc_t = NULL, *sz_t = NULL;
    if (upsample || r->m->opset < 11) {
        sc_t = eng_in_plain(r, n, 1, err);
        if (!sc_t) {
            size_t c = 0;
            const eng_attr *a = eng_attr_find(n, "scales");
            if (!a || a->type != ENG_ATTR_FLOATS || (int)a->n_floats != rank)
                return eng_node_err(err, CL_E_FORMAT, n, "scales are required");
            for (int d = 0; d < rank; d++)
                scale[d] = a->floats[d];
            (void)c;
        }
    } else {
        roi_t = eng_in_plain(r, n, 1, err);
        sc_t = eng_in_plain(r, n, 2, err);
        sz_t = eng_in_plain(r, n, 3, err);
        if (sc_t && eng_numel(sc_t) == 0)
            sc_t = NULL;
        if (roi_t && eng_numel(roi_t) == 0)
            roi_t = NULL;
    }
    if (sz_t) {
        if (sc_t || eng_numel(sz_t) != rank || (sz_t->dtype != CL_ENGINE_DT_INT64))
            return eng_node_err(err, CL_E_FORMAT, n, "sizes must be %d int64 values (and scales empty)", rank);
        for (int d = 0; d < rank; d++) {
            od[d] = eng_get_i(sz_t, d);
            if (od[d] < 0 || od[d] > CL_ENGINE_MAX_TENSOR_ELEMS)
                return eng_node_err(err, CL_E_FORMAT, n, "invalid size");
            scale[d] = x->dims[d] ? (double)od[d] / (double)x->dims[d] : 1.0;
        }
    } else {
        if (sc_t) {
            if (eng_numel(sc_t) != rank || !eng_dtype_is_float(sc_t->dtype))
                return eng_node_err(err, CL_E_FORMAT, n, "scales must be %d floats", rank);
            for (int d = 0; d < rank; d++)
                scale[d] = eng_get_f(sc_t, d);
        } else if (!(upsample || r->m->opset < 11)) {
            return eng_node_err(err, CL_E_FORMAT, n, "either scales or sizes is required");
        }
        for (int d = 0; d < rank; d++) {
            if (!(scale[d] > 0) || scale[d] > 65536)
                return eng_node_err(err, CL_E_FORMAT, n, "invalid scale %g", scale[d]);
            double o = floor((double)x->dims[d] * scale[d] + 1e-9);
            if (o > (double)CL_ENGINE_MAX_TENSOR_ELEMS)
                return eng_node_err(err, CL_E_FORMAT, n, "output too large");
            od[d] = (int64_t)o;
        }
    }
    if (roi_t && strcmp(ctm, "tf_crop_and_resize") == 0) {
        if (eng_numel(roi_t) != 2 * rank)
            return eng_node_err(err, CL_E_FORMAT, n, "roi must have %d values", 2 * rank);
        for (int i = 0; i < 2 * rank; i++)
            roi[i] = eng_get_f(roi_t, i);
    }
    bool empty_out = eng_dims_numel(od, rank) == 0;
    for (int d = 0; d < rank && !empty_out; d++)
        if (x->dims[d] == 0)
            return eng_node_err(err, CL_E_FORMAT, n, "cannot resize an empty input to a non-empty output");
    eng_tensor *y = eng_out(r, n, 0, x->dtype, rank, od, err);
    if (!y)
        return -1;
    if (empty_out)
        return 0;
    /* taps per dim and output index */
    int64_t total_taps = 0;
    for (int d = 0; d < rank; d++)
        total_taps += od[d];
    if ((size_t)total_taps > ((size_t)256 << 20) / sizeof(rs_taps))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "output dimensions are too large for Resize");
    rs_taps *taps = malloc((size_t)(total_taps + 1) * sizeof *taps);
    if (!taps)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    rs_taps *td[CL_ENGINE_MAX_RANK];
    int64_t off = 0;
    for (int d = 0; d < rank; d++) {
        td[d] = taps + off;
        off += od[d];
        int64_t in = x->dims[d];
        for (int64_t o = 0; o < od[d]; o++) {
            rs_taps *t = &td[d][o];
            memset(t, 0, sizeof *t);
            /* the spec's length_resized is in * scale, not rounded (they differ when scales are given) */
            double sc = scale[d], xo, lr = (double)in * sc;
            if (strcmp(ctm, "half_pixel") == 0)
                xo = (o + 0.5) / sc - 0.5;
            else if (strcmp(ctm, "pytorch_half_pixel") == 0)
                xo = lr > 1 ? (o + 0.5) / sc - 0.5 : 0;
            else if (strcmp(ctm, "align_corners") == 0)
                xo = lr == 1 ? 0 : (double)o * (double)(in - 1) / (lr - 1);
            else if (strcmp(ctm, "asymmetric") == 0)
                xo = o / sc;
            else if (strcmp(ctm, "tf_half_pixel_for_nn") == 0)
                xo = (o + 0.5) / sc;
            else if (strcmp(ctm, "tf_crop_and_resize") == 0) {
                double s0 = roi[d], e0 = roi[rank + d];
                xo = lr > 1 ? s0 * (double)(in - 1) + (double)o * (e0 - s0) * (double)(in - 1) / (lr - 1)
                            : 0.5 * (s0 + e0) * (double)(in - 1);
                if (xo < 0 || xo > (double)(in - 1))
                    t->outside = true;
            } else {
                free(taps);
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "coordinate_transformation_mode '%s' is not supported", ctm);
            }
            if (!(xo == xo))
                xo = 0; /* NaN from a hostile roi */
            xo = xo < -1e9 ? -1e9 : xo > 1e9 ? 1e9 : xo; /* keep the integer casts defined */
            if (m == RS_NEAREST) {
                double f = floor(xo), frac = xo - f;
                int64_t i;
                if (strcmp(nm, "floor") == 0)
                    i = (int64_t)f;
                else if (strcmp(nm, "ceil") == 0)
                    i = (int64_t)ceil(xo);
                else if (strcmp(nm, "round_prefer_ceil") == 0)
                    i = frac >= 0.5 ? (int64_t)f + 1 : (int64_t)f;
                else
                    i = frac > 0.5 ? (int64_t)f + 1 : (int64_t)f;
                t->n = 1;
                t->idx[0] = i < 0 ? 0 : i >= in ? in - 1 : i;
                t->w[0] = 1;
            } else if (m == RS_LINEAR) {
                double xc = xo < 0 ? 0 : xo > (double)(in - 1) ? (double)(in - 1) : xo;
                int64_t i0 = (int64_t)floor(xc), i1 = i0 + 1 < in ? i0 + 1 : in - 1;
                double f = xc - (double)i0;
                t->n = 2;
                t->idx[0] = i0;
                t->idx[1] = i1;
                t->w[0] = 1 - f;
                t->w[1] = f;
            } else {
                int64_t i0 = (int64_t)floor(xo);
                double f = xo - (double)i0, sum = 0;
                t->n = 4;
                for (int k = 0; k < 4; k++) {
                    int64_t i = i0 - 1 + k;
                    double wgt = cubic_w(f + 1 - k, A);
                    if (exclude && (i < 0 || i >= in))
                        wgt = 0;
                    t->idx[k] = i < 0 ? 0 : i >= in ? in - 1 : i;
                    t->w[k] = wgt;
                    sum += wgt;
                }
                if (exclude && sum != 0)
                    for (int k = 0; k < 4; k++)
                        t->w[k] /= sum;
            }
        }
    }
    int64_t ist[CL_ENGINE_MAX_RANK], st = 1;
    for (int d = rank - 1; d >= 0; d--) {
        ist[d] = st;
        st *= x->dims[d];
    }
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0};
    for (int64_t e = 0; e < N; e++) {
        bool outside = false;
        for (int d = 0; d < rank; d++)
            outside |= td[d][idx[d]].outside;
        double acc = 0;
        if (!outside) {
            /* iterate over the tap combinations */
            int k[CL_ENGINE_MAX_RANK] = {0};
            for (;;) {
                double wgt = 1;
                int64_t src = 0;
                for (int d = 0; d < rank; d++) {
                    const rs_taps *t = &td[d][idx[d]];
                    wgt *= t->w[k[d]];
                    src += t->idx[k[d]] * ist[d];
                }
                if (wgt != 0)
                    acc += wgt * eng_get_f(x, src);
                int d = rank - 1;
                for (; d >= 0; d--) {
                    if (++k[d] < td[d][idx[d]].n)
                        break;
                    k[d] = 0;
                }
                if (d < 0)
                    break;
            }
        }
        eng_set_f(y, e, outside ? extrap : acc);
        for (int d = rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    free(taps);
    return 0;
}

/* ---------------------------------------------------------------- softmax */

static int run_softmax(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    bool old = r->m->opset < 13;
    int64_t ax = norm_axis(eng_attr_i(n, "axis", old ? 1 : -1), x->rank);
    if (x->rank == 0)
        ax = 0;
    else if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range for %s", DIMS(x));
    int64_t outer = 1, len = 1, inner = 1;
    for (int d = 0; d < x->rank; d++) {
        if (d < ax)
            outer *= x->dims[d];
        else if (d == ax || old)
            len *= x->dims[d];
        else
            inner *= x->dims[d];
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int mode = strcmp(n->op_type, "LogSoftmax") == 0 ? 1 : strcmp(n->op_type, "Hardmax") == 0 ? 2 : 0;
    for (int64_t o = 0; o < outer; o++)
        for (int64_t in = 0; in < inner; in++) {
            int64_t base = o * len * inner + in;
            double mx = -INFINITY;
            int64_t arg = 0;
            for (int64_t j = 0; j < len; j++) {
                double v = eng_get_f(x, base + j * inner);
                if (v > mx) {
                    mx = v;
                    arg = j;
                }
            }
            if (mode == 2) {
                for (int64_t j = 0; j < len; j++)
                    eng_set_f(y, base + j * inner, j == arg);
                continue;
            }
            double sum = 0;
            for (int64_t j = 0; j < len; j++)
                sum += exp(eng_get_f(x, base + j * inner) - mx);
            for (int64_t j = 0; j < len; j++) {
                double v = eng_get_f(x, base + j * inner) - mx;
                eng_set_f(y, base + j * inner, mode == 1 ? v - log(sum) : exp(v) / sum);
            }
        }
    return 0;
}

/* ---------------------------------------------------------------- reductions */

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_SUMSQ, R_LOGSUM, R_LOGSUMEXP, R_ARGMAX, R_ARGMIN } red_kind;

static const struct {
    const char *name;
    red_kind k;
} red_names[] = {
    {"ReduceSum", R_SUM}, {"ReduceMean", R_MEAN}, {"ReduceMax", R_MAX}, {"ReduceMin", R_MIN},
    {"ReduceProd", R_PROD}, {"ReduceL1", R_L1}, {"ReduceL2", R_L2}, {"ReduceSumSquare", R_SUMSQ},
    {"ReduceLogSum", R_LOGSUM}, {"ReduceLogSumExp", R_LOGSUMEXP}, {"ArgMax", R_ARGMAX}, {"ArgMin", R_ARGMIN},
};

static int run_reduce(eng_run *r, eng_node *n, cl_err *err)
{
    red_kind k = R_SUM;
    for (size_t i = 0; i < CL_ARRAY_LEN(red_names); i++)
        if (strcmp(red_names[i].name, n->op_type) == 0)
            k = red_names[i].k;
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool arg = k == R_ARGMAX || k == R_ARGMIN;
    bool keep = eng_attr_i(n, "keepdims", 1) != 0;
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na = 0;
    bool axes_input = !arg && (r->m->opset >= 18 || (k == R_SUM && r->m->opset >= 13));
    if (arg) {
        axes[0] = eng_attr_i(n, "axis", 0);
        na = 1;
    } else if (axes_input) {
        eng_tensor *a = eng_in_plain(r, n, 1, err);
        if (a && read_ints(n, a, axes, CL_ENGINE_MAX_RANK, &na, err) != 0)
            return -1;
    } else {
        size_t c;
        const int64_t *v = eng_attr_ints(n, "axes", &c);
        if (c > CL_ENGINE_MAX_RANK)
            return eng_node_err(err, CL_E_FORMAT, n, "too many axes");
        if (c)
            memcpy(axes, v, c * 8);
        na = (int)c;
    }
    bool red[CL_ENGINE_MAX_RANK] = {0};
    if (na == 0) {
        if (axes_input && eng_attr_i(n, "noop_with_empty_axes", 0))
            return eng_out_forward(r, n, 0, 0, x->rank, x->dims, err);
        for (int d = 0; d < x->rank; d++)
            red[d] = true;
    }
    for (int i = 0; i < na; i++) {
        int64_t a = norm_axis(axes[i], x->rank);
        if (a < 0 || a >= x->rank)
            return eng_node_err(err, CL_E_FORMAT, n, "axis %lld out of range for %s", (long long)axes[i], DIMS(x));
        red[a] = true;
    }
    int64_t od[CL_ENGINE_MAX_RANK], kd[CL_ENGINE_MAX_RANK];
    int orank = 0;
    for (int d = 0; d < x->rank; d++) {
        kd[d] = red[d] ? 1 : x->dims[d];
        if (!red[d] || keep)
            od[orank++] = kd[d];
    }
    cl_engine_dtype odt = arg ? CL_ENGINE_DT_INT64 : x->dtype;
    eng_tensor *y = eng_out(r, n, 0, odt, orank, od, err);
    if (!y)
        return -1;
    int64_t M = eng_dims_numel(kd, x->rank), N = eng_numel(x);
    if ((size_t)M > CL_ENGINE_MAX_TENSOR_BYTES / 24)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the reduction's output is too large");
    double *acc = malloc(((size_t)M + 1) * sizeof(double));
    int64_t *cnt = calloc((size_t)M + 1, sizeof(int64_t));
    int64_t *ai = calloc((size_t)M + 1, sizeof(int64_t));
    if (!acc || !cnt || !ai) {
        free(acc);
        free(cnt);
        free(ai);
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    }
    bool last = eng_attr_i(n, "select_last_index", 0) != 0;
    for (int64_t i = 0; i < M; i++)
        acc[i] = k == R_PROD ? 1 : (k == R_MAX || k == R_ARGMAX) ? -INFINITY : (k == R_MIN || k == R_ARGMIN) ? INFINITY : 0;
    int64_t kst[CL_ENGINE_MAX_RANK], s = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        kst[d] = red[d] ? 0 : s;
        s *= kd[d];
    }
    int64_t idx[CL_ENGINE_MAX_RANK] = {0}, o = 0;
    for (int64_t e = 0; e < N; e++) {
        double v = eng_get_f(x, e);
        switch (k) {
        case R_SUM: case R_MEAN: acc[o] += v; break;
        case R_MAX: acc[o] = v > acc[o] || v != v ? v : acc[o]; break;
        case R_MIN: acc[o] = v < acc[o] || v != v ? v : acc[o]; break;
        case R_PROD: acc[o] *= v; break;
        case R_L1: acc[o] += fabs(v); break;
        case R_L2: case R_SUMSQ: acc[o] += v * v; break;
        case R_LOGSUM: acc[o] += v; break;
        case R_LOGSUMEXP: acc[o] += exp(v); break;
        case R_ARGMAX:
            if (cnt[o] == 0 || v > acc[o] || (last && v == acc[o])) { acc[o] = v; ai[o] = idx[axes[0] < 0 ? axes[0] + x->rank : axes[0]]; }
            break;
        case R_ARGMIN:
            if (cnt[o] == 0 || v < acc[o] || (last && v == acc[o])) { acc[o] = v; ai[o] = idx[axes[0] < 0 ? axes[0] + x->rank : axes[0]]; }
            break;
        }
        cnt[o]++;
        for (int d = x->rank - 1; d >= 0; d--) {
            idx[d]++;
            o += kst[d];
            if (idx[d] < x->dims[d])
                break;
            o -= kst[d] * x->dims[d];
            idx[d] = 0;
        }
    }
    for (int64_t i = 0; i < M; i++) {
        double v = acc[i];
        switch (k) {
        case R_MEAN: v = cnt[i] ? v / (double)cnt[i] : NAN; break;
        case R_L2: v = sqrt(v); break;
        case R_LOGSUM: case R_LOGSUMEXP: v = log(v); break;
        default: break;
        }
        if (arg)
            eng_set_i(y, i, ai[i]);
        else if (eng_dtype_is_float(odt))
            eng_set_f(y, i, v);
        else
            eng_set_f(y, i, v);
    }
    free(acc);
    free(cnt);
    free(ai);
    return 0;
}

/* ---------------------------------------------------------------- matmul / gemm */

static int run_matmul(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *a, *b;
    if (need_in(r, n, 0, &a, err) || need_in(r, n, 1, &b, err))
        return -1;
    if (a->dtype != b->dtype || !(a->dtype == CL_ENGINE_DT_FLOAT || a->dtype == CL_ENGINE_DT_DOUBLE || a->dtype == CL_ENGINE_DT_INT32 ||
                                  a->dtype == CL_ENGINE_DT_INT64 || a->dtype == CL_ENGINE_DT_UINT32 || a->dtype == CL_ENGINE_DT_UINT64))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input types %s x %s are not supported",
                            cl_engine_dtype_name(a->dtype), cl_engine_dtype_name(b->dtype));
    if (a->rank == 0 || b->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "inputs must not be scalars");
    /* promote 1-D operands */
    eng_tensor A = *a, B = *b;
    bool a1 = a->rank == 1, b1 = b->rank == 1;
    if (a1) {
        A.rank = 2;
        A.dims[0] = 1;
        A.dims[1] = a->dims[0];
    }
    if (b1) {
        B.rank = 2;
        B.dims[0] = b->dims[0];
        B.dims[1] = 1;
    }
    int64_t M = A.dims[A.rank - 2], K = A.dims[A.rank - 1], K2 = B.dims[B.rank - 2], N = B.dims[B.rank - 1];
    if (K != K2)
        return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s cannot be multiplied", DIMS(a), DIMS(b));
    /* broadcast batch dims */
    eng_tensor Ab = {.rank = A.rank - 2}, Bb = {.rank = B.rank - 2};
    memcpy(Ab.dims, A.dims, sizeof(int64_t) * (size_t)Ab.rank);
    memcpy(Bb.dims, B.dims, sizeof(int64_t) * (size_t)Bb.rank);
    eng_tensor *ts[2] = {&Ab, &Bb};
    bcast bc;
    if (bcast_init(&bc, ts, 2, n, err) != 0)
        return -1;
    int64_t od[CL_ENGINE_MAX_RANK];
    int orank = 0;
    for (int d = 0; d < bc.rank; d++)
        od[orank++] = bc.dims[d];
    if (!a1)
        od[orank++] = M;
    if (!b1)
        od[orank++] = N;
    if (orank > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "rank too large");
    eng_tensor *y = eng_out(r, n, 0, a->dtype, orank, od, err);
    if (!y)
        return -1;
    int64_t batch = bc.total;
    if (M == 0 || N == 0)
        return 0;
    if (bc.rank == 0)
        bc.total = 1;
    int64_t e2 = 0;
    BCAST_LOOP(&bc, 2, {
        (void)e;
        int64_t ao = o[0] * M * K, bo = o[1] * K * N, yo = e2 * M * N;
        if (a->dtype == CL_ENGINE_DT_FLOAT) {
            dnnl_status_t s = dnnl_sgemm('N', 'N', M, N, K, 1.0f, (const float *)a->data + ao, K,
                                         (const float *)b->data + bo, N, 0.0f, (float *)y->data + yo, N);
            if (s != dnnl_success)
                return eng_dnnl_fail(err, s, n, "sgemm");
        } else {
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < N; j++) {
                    if (a->dtype == CL_ENGINE_DT_DOUBLE) {
                        double s = 0;
                        for (int64_t kk = 0; kk < K; kk++)
                            s += eng_get_f(a, ao + i * K + kk) * eng_get_f(b, bo + kk * N + j);
                        eng_set_f(y, yo + i * N + j, s);
                    } else {
                        uint64_t s = 0;
                        for (int64_t kk = 0; kk < K; kk++)
                            s += (uint64_t)eng_get_i(a, ao + i * K + kk) * (uint64_t)eng_get_i(b, bo + kk * N + j);
                        eng_set_i(y, yo + i * N + j, (int64_t)s);
                    }
                }
        }
        e2++;
    });
    (void)batch;
    return 0;
}

static int run_gemm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *a, *b, *c = NULL;
    if (need_in(r, n, 0, &a, err) || need_in(r, n, 1, &b, err))
        return -1;
    if (n->n_in > 2 && n->in[2] >= 0 && !(c = eng_in_plain(r, n, 2, err)))
        return -1;
    if (a->dtype != CL_ENGINE_DT_FLOAT || b->dtype != CL_ENGINE_DT_FLOAT || (c && c->dtype != CL_ENGINE_DT_FLOAT))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only float is supported");
    if (a->rank != 2 || b->rank != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "A and B must be 2-D, got %s and %s", DIMS(a), DIMS(b));
    bool ta = eng_attr_i(n, "transA", 0), tb = eng_attr_i(n, "transB", 0);
    float alpha = eng_attr_f(n, "alpha", 1.0f), beta = eng_attr_f(n, "beta", 1.0f);
    int64_t M = ta ? a->dims[1] : a->dims[0], K = ta ? a->dims[0] : a->dims[1];
    int64_t K2 = tb ? b->dims[1] : b->dims[0], N = tb ? b->dims[0] : b->dims[1];
    if (K != K2)
        return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s do not match", DIMS(a), DIMS(b));
    int64_t od[2] = {M, N};
    bcast bc = {0};
    if (c) {
        eng_tensor yshape = {.rank = 2, .dims = {M, N}};
        eng_tensor *ts[2] = {&yshape, c};
        if (bcast_init(&bc, ts, 2, n, err) != 0)
            return -1;
        if (bc.rank != 2 || bc.dims[0] != M || bc.dims[1] != N)
            return eng_node_err(err, CL_E_FORMAT, n, "C %s cannot be broadcast to [%lld,%lld]", DIMS(c), (long long)M,
                                (long long)N);
    }
    eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_FLOAT, 2, od, err);
    if (!y)
        return -1;
    float *yp = y->data;
    if (c && beta != 0) {
        const float *cp = c->data;
        BCAST_LOOP(&bc, 2, yp[e] = beta * cp[o[1]]);
    }
    if (M == 0 || N == 0)
        return 0;
    dnnl_status_t s = dnnl_sgemm(ta ? 'T' : 'N', tb ? 'T' : 'N', M, N, K, alpha, a->data, a->dims[1], b->data,
                                 b->dims[1], c && beta != 0 ? 1.0f : 0.0f, yp, N);
    if (s != dnnl_success)
        return eng_dnnl_fail(err, s, n, "sgemm");
    return 0;
}

/* ---------------------------------------------------------------- normalization */

static int run_layernorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *sc, *bi = NULL;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &sc, err))
        return -1;
    if (n->n_in > 2 && n->in[2] >= 0 && !(bi = eng_in_plain(r, n, 2, err)))
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    int64_t ax = norm_axis(eng_attr_i(n, "axis", -1), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    double eps = eng_attr_f(n, "epsilon", 1e-5f);
    int64_t outer = 1, inner = 1;
    for (int d = 0; d < x->rank; d++)
        *(d < ax ? &outer : &inner) *= x->dims[d];
    /* scale/bias broadcast over the normalized dims */
    eng_tensor nshape = {.rank = x->rank - (int)ax};
    memcpy(nshape.dims, x->dims + ax, sizeof(int64_t) * (size_t)nshape.rank);
    bcast bs, bb;
    eng_tensor *t1[2] = {&nshape, sc};
    if (bcast_init(&bs, t1, 2, n, err) != 0 || bs.total != inner)
        return eng_node_err(err, CL_E_FORMAT, n, "scale %s does not match the normalized shape", DIMS(sc));
    if (bi) {
        eng_tensor *t2[2] = {&nshape, bi};
        if (bcast_init(&bb, t2, 2, n, err) != 0 || bb.total != inner)
            return eng_node_err(err, CL_E_FORMAT, n, "bias %s does not match the normalized shape", DIMS(bi));
    }
    if ((size_t)inner > CL_ENGINE_MAX_TENSOR_BYTES / 16)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the normalized shape is too large");
    double *sv = malloc((size_t)(inner + 1) * 2 * sizeof(double));
    if (!sv)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    double *bv = sv + inner + 1;
    BCAST_LOOP(&bs, 2, sv[e] = eng_get_f(sc, o[1]));
    if (bi)
        BCAST_LOOP(&bb, 2, bv[e] = eng_get_f(bi, o[1]));
    else
        for (int64_t i = 0; i < inner; i++)
            bv[i] = 0;
    int64_t sd[CL_ENGINE_MAX_RANK];
    for (int d = 0; d < x->rank; d++)
        sd[d] = d < ax ? x->dims[d] : 1;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    eng_tensor *mo = y && n->n_out > 1 ? eng_out(r, n, 1, CL_ENGINE_DT_FLOAT, x->rank, sd, err) : NULL;
    eng_tensor *io = y && n->n_out > 2 ? eng_out(r, n, 2, CL_ENGINE_DT_FLOAT, x->rank, sd, err) : NULL;
    if (!y || (n->n_out > 1 && !mo) || (n->n_out > 2 && !io)) {
        free(sv);
        return -1;
    }
    for (int64_t o = 0; o < outer; o++) {
        double mean = 0, var = 0;
        for (int64_t i = 0; i < inner; i++)
            mean += eng_get_f(x, o * inner + i);
        mean /= (double)(inner ? inner : 1);
        for (int64_t i = 0; i < inner; i++) {
            double d = eng_get_f(x, o * inner + i) - mean;
            var += d * d;
        }
        var /= (double)(inner ? inner : 1);
        double inv = 1 / sqrt(var + eps);
        for (int64_t i = 0; i < inner; i++)
            eng_set_f(y, o * inner + i, (eng_get_f(x, o * inner + i) - mean) * inv * sv[i] + bv[i]);
        if (mo)
            ((float *)mo->data)[o] = (float)mean;
        if (io)
            ((float *)io->data)[o] = (float)inv;
    }
    free(sv);
    return 0;
}

int eng_ref_check_batchnorm(cl_engine_model *m, eng_node *n, cl_err *err)
{
    if (n->n_out > 1 || eng_attr_i(n, "training_mode", 0))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "training mode (running statistics outputs) is not supported");
    return 0;
}

int eng_ref_batchnorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *p[4];
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    for (int i = 0; i < 4; i++)
        if (need_in(r, n, i + 1, &p[i], err) != 0)
            return -1;
    if (eng_attr_i(n, "training_mode", 0))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "training mode is not supported");
    if (!eng_dtype_is_float(x->dtype) || x->rank < 2)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs a float input of rank >= 2");
    int64_t C = x->dims[1];
    for (int i = 0; i < 4; i++)
        if (eng_numel(p[i]) != C)
            return eng_node_err(err, CL_E_FORMAT, n, "parameter %d has %lld elements, expected %lld", i + 1,
                                (long long)eng_numel(p[i]), (long long)C);
    double eps = eng_attr_f(n, "epsilon", 1e-5f);
    int64_t inner = 1;
    for (int d = 2; d < x->rank; d++)
        inner *= x->dims[d];
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    int64_t N = x->dims[0];
    bool relu = n->post == ENG_POST_RELU; /* a following Relu fused by graph.c */
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            double s = eng_get_f(p[0], c) / sqrt(eng_get_f(p[3], c) + eps);
            double sh = eng_get_f(p[1], c) - eng_get_f(p[2], c) * s;
            int64_t base = (b * C + c) * inner;
            if (x->dtype == CL_ENGINE_DT_FLOAT) {
                const float *xp = (const float *)x->data + base;
                float *yp = (float *)y->data + base, fs = (float)s, fsh = (float)sh;
                for (int64_t i = 0; i < inner; i++) {
                    float v = xp[i] * fs + fsh;
                    yp[i] = relu && v < 0 ? 0 : v;
                }
                continue;
            }
            for (int64_t i = 0; i < inner; i++) {
                double v = eng_get_f(x, base + i) * s + sh;
                eng_set_f(y, base + i, relu && v < 0 ? 0 : v);
            }
        }
    return 0;
}

static int run_instnorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *sc, *bi;
    if (need_in(r, n, 0, &x, err) || need_in(r, n, 1, &sc, err) || need_in(r, n, 2, &bi, err))
        return -1;
    if (!eng_dtype_is_float(x->dtype) || x->rank < 2)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs a float input of rank >= 2");
    int64_t C = x->dims[1], N = x->dims[0], inner = 1;
    if (eng_numel(sc) != C || eng_numel(bi) != C)
        return eng_node_err(err, CL_E_FORMAT, n, "scale/bias must have %lld elements", (long long)C);
    for (int d = 2; d < x->rank; d++)
        inner *= x->dims[d];
    double eps = eng_attr_f(n, "epsilon", 1e-5f);
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    for (int64_t b = 0; b < N; b++)
        for (int64_t c = 0; c < C; c++) {
            int64_t base = (b * C + c) * inner;
            double mean = 0, var = 0;
            for (int64_t i = 0; i < inner; i++)
                mean += eng_get_f(x, base + i);
            mean /= (double)(inner ? inner : 1);
            for (int64_t i = 0; i < inner; i++) {
                double d = eng_get_f(x, base + i) - mean;
                var += d * d;
            }
            var /= (double)(inner ? inner : 1);
            double s = eng_get_f(sc, c) / sqrt(var + eps);
            for (int64_t i = 0; i < inner; i++)
                eng_set_f(y, base + i, (eng_get_f(x, base + i) - mean) * s + eng_get_f(bi, c));
        }
    return 0;
}

static int run_dropout(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (need_in(r, n, 0, &x, err) != 0)
        return -1;
    eng_tensor *tm = eng_in_plain(r, n, 2, err);
    if (tm && eng_numel(tm) != 1)
        return eng_node_err(err, CL_E_FORMAT, n, "training_mode must be a scalar");
    if (tm && eng_get_i(tm, 0) != 0)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "training mode is not supported");
    int64_t d[CL_ENGINE_MAX_RANK];
    memcpy(d, x->dims, sizeof d);
    int rank = x->rank;
    if (n->n_out > 1 && n->out[1] >= 0) {
        eng_tensor *mk = eng_out(r, n, 1, CL_ENGINE_DT_BOOL, rank, d, err);
        if (!mk)
            return -1;
        memset(mk->data, 1, mk->nbytes);
    }
    return eng_out_forward(r, n, 0, 0, rank, d, err);
}

static int run_never(eng_run *r, eng_node *n, cl_err *err)
{
    return eng_node_err(err, CL_E_INTERNAL, n, "should have been folded at load time");
}

#define UN(name) {name, 1, 1, 1, 1, NULL, eng_ref_unary, NULL}
#define BIN(name) {name, 2, 2, 1, 1, NULL, eng_ref_binary, NULL}
#define VAR(name) {name, 1, -1, 1, 1, NULL, eng_ref_binary, NULL}
#define RED(name) {name, 1, 2, 1, 1, NULL, run_reduce, NULL}

const eng_op eng_ops_basic[] = {
    UN("Relu"), UN("LeakyRelu"), UN("Elu"), UN("Selu"), UN("Celu"), UN("Sigmoid"), UN("HardSigmoid"),
    UN("HardSwish"), UN("Tanh"), UN("Exp"), UN("Log"), UN("Sqrt"), UN("Abs"), UN("Neg"), UN("Erf"), UN("Floor"),
    UN("Ceil"), UN("Round"), UN("Reciprocal"), UN("Sin"), UN("Cos"), UN("Tan"), UN("Asin"), UN("Acos"), UN("Atan"),
    UN("Sinh"), UN("Cosh"), UN("Asinh"), UN("Acosh"), UN("Atanh"), UN("Softplus"), UN("Softsign"), UN("Sign"),
    UN("ThresholdedRelu"), UN("Not"), UN("Identity"), UN("IsNaN"), UN("Gelu"),
    {"Clip", 1, 3, 1, 1, NULL, run_clip, NULL},
    BIN("Add"), BIN("Sub"), BIN("Mul"), BIN("Div"), BIN("Pow"), BIN("Mod"), BIN("Equal"), BIN("Less"),
    BIN("Greater"), BIN("LessOrEqual"), BIN("GreaterOrEqual"), BIN("And"), BIN("Or"), BIN("Xor"), BIN("PRelu"),
    BIN("BitShift"), VAR("Max"), VAR("Min"), VAR("Sum"), VAR("Mean"),
    {"Where", 3, 3, 1, 1, NULL, run_where, NULL},
    {"Reshape", 1, 2, 1, 1, NULL, run_reshape, NULL},
    {"Flatten", 1, 1, 1, 1, NULL, run_flatten, NULL},
    {"Squeeze", 1, 2, 1, 1, NULL, run_squeeze, NULL},
    {"Unsqueeze", 1, 2, 1, 1, NULL, run_unsqueeze, NULL},
    {"Shape", 1, 1, 1, 1, NULL, run_shape, NULL},
    {"Size", 1, 1, 1, 1, NULL, run_size, NULL},
    {"Cast", 1, 1, 1, 1, NULL, run_cast, NULL},
    {"CastLike", 2, 2, 1, 1, NULL, run_cast, NULL},
    {"Transpose", 1, 1, 1, 1, NULL, run_transpose, NULL},
    {"Concat", 1, -1, 1, 1, NULL, eng_ref_concat, NULL},
    {"Split", 1, 2, 1, 256, NULL, run_split, NULL},
    {"Slice", 1, 5, 1, 1, NULL, run_slice, NULL},
    {"Gather", 2, 2, 1, 1, NULL, run_gather, NULL},
    {"Expand", 2, 2, 1, 1, NULL, run_expand, NULL},
    {"Tile", 2, 2, 1, 1, NULL, run_tile, NULL},
    {"ConstantOfShape", 1, 1, 1, 1, NULL, run_constant_of_shape, NULL},
    {"Range", 3, 3, 1, 1, NULL, run_range, NULL},
    {"Pad", 1, 4, 1, 1, NULL, run_pad, NULL},
    {"GatherElements", 2, 2, 1, 1, NULL, run_gather_elements, NULL},
    {"Trilu", 1, 2, 1, 1, NULL, run_trilu, NULL},
    {"CumSum", 2, 2, 1, 1, NULL, run_cumsum, NULL},
    {"IsInf", 1, 1, 1, 1, NULL, run_isinf, NULL},
    {"EyeLike", 1, 1, 1, 1, NULL, run_eyelike, NULL},
    {"DepthToSpace", 1, 1, 1, 1, NULL, run_depth_space, NULL},
    {"SpaceToDepth", 1, 1, 1, 1, NULL, run_depth_space, NULL},
    {"OneHot", 3, 3, 1, 1, NULL, run_onehot, NULL},
    {"Shrink", 1, 1, 1, 1, NULL, run_shrink, NULL},
    {"TopK", 2, 2, 2, 2, NULL, run_topk, NULL},
    {"Resize", 1, 4, 1, 1, NULL, run_resize, NULL},
    {"Upsample", 1, 2, 1, 1, NULL, run_resize, NULL},
    {"Constant", 0, 0, 1, 1, NULL, run_never, NULL},
    {"Softmax", 1, 1, 1, 1, NULL, run_softmax, NULL},
    {"LogSoftmax", 1, 1, 1, 1, NULL, run_softmax, NULL},
    {"Hardmax", 1, 1, 1, 1, NULL, run_softmax, NULL},
    RED("ReduceSum"), RED("ReduceMean"), RED("ReduceMax"), RED("ReduceMin"), RED("ReduceProd"), RED("ReduceL1"),
    RED("ReduceL2"), RED("ReduceSumSquare"), RED("ReduceLogSum"), RED("ReduceLogSumExp"),
    {"ArgMax", 1, 1, 1, 1, NULL, run_reduce, NULL},
    {"ArgMin", 1, 1, 1, 1, NULL, run_reduce, NULL},
    {"MatMul", 2, 2, 1, 1, NULL, run_matmul, NULL},
    {"Gemm", 2, 3, 1, 1, NULL, run_gemm, NULL},
    {"LayerNormalization", 2, 3, 1, 3, NULL, run_layernorm, NULL},
    {"BatchNormalization", 5, 5, 1, 3, eng_ref_check_batchnorm, eng_ref_batchnorm, NULL},
    {"InstanceNormalization", 3, 3, 1, 1, NULL, run_instnorm, NULL},
    {"Dropout", 1, 3, 1, 2, NULL, run_dropout, NULL},
};
const size_t eng_ops_basic_count = CL_ARRAY_LEN(eng_ops_basic);
