/* engine/ops/elementwise.c — the plain-C elementwise kernels: unary math (38 functions, eng_unary_kind),
 * Clip, binary and variadic arithmetic / comparison / logic with numpy broadcasting (eng_binary_kind),
 * Where, Cast / CastLike, IsInf and Shrink, with their prepare functions (alpha/beta/gamma, fmod,
 * direction, to, ...) and the comparison / Where / Cast shape rules. oneDNN runs Relu, Sigmoid, Tanh,
 * LeakyRelu, HardSwish and Add/Sub/Mul/Div on blocked tensors instead (dnnl/eltwise.c), falling back here.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"
#include "engine/ops/vec.h"

/* ---------------------------------------------------------------- unary elementwise */

static double unary_f(eng_unary_kind k, double x, double a, double b)
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

int eng_prep_unary(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    float a = 0, b = 0;
    int rc = 0;
    switch ((eng_unary_kind)n->op->kind) {
    case U_LEAKY: rc = eng_attr_float(n, "alpha", 0.01f, &a, err); break;
    case U_ELU: case U_CELU: case U_THRELU: rc = eng_attr_float(n, "alpha", 1.0f, &a, err); break;
    case U_SELU:
        rc = eng_attr_float(n, "alpha", 1.67326319217681884765625f, &a, err);
        if (rc == 0)
            rc = eng_attr_float(n, "gamma", 1.05070102214813232421875f, &b, err);
        break;
    case U_HSIGMOID:
        rc = eng_attr_float(n, "alpha", 0.2f, &a, err);
        if (rc == 0)
            rc = eng_attr_float(n, "beta", 0.5f, &b, err);
        break;
    default: return 0; /* no attributes */
    }
    if (rc != 0)
        return -1;
    if ((eng_unary_kind)n->op->kind == U_CELU && a == 0)
        return eng_attr_err(err, CL_E_FORMAT, n, "alpha", "must not be 0");
    eng_unary_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->a = a;
    at->b = b;
    return 0;
}

int eng_run_unary(eng_run *r, eng_node *n, cl_err *err)
{
    eng_unary_kind k = (eng_unary_kind)n->op->kind;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (k == U_IDENT)
        return eng_out_forward(r, n, 0, 0, x->rank, x->dims, err);
    const eng_unary_attr *at = n->attr;
    double a = at ? at->a : 0, b = at ? at->b : 0;
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
    if (eng_vec_unary(k, x, y, a, b))
        return 0;
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

int eng_prep_clip(cl_engine_model *m, eng_node *n, cl_err *err)
{
    eng_clip_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->from_attrs = m->opset < 11;
    at->lo = -INFINITY;
    at->hi = INFINITY;
    if (at->from_attrs && (eng_attr_float(n, "min", -INFINITY, &at->lo, err) != 0 ||
                           eng_attr_float(n, "max", INFINITY, &at->hi, err) != 0))
        return -1;
    return 0;
}

int eng_run_clip(eng_run *r, eng_node *n, cl_err *err)
{
    const eng_clip_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    double lo = -INFINITY, hi = INFINITY;
    bool isint = !eng_dtype_is_float(x->dtype);
    int64_t ilo = INT64_MIN, ihi = INT64_MAX;
    if (at->from_attrs) {
        lo = at->lo;
        hi = at->hi;
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

static bool is_cmp(eng_binary_kind k)
{
    return k == B_EQ || k == B_LT || k == B_GT || k == B_LE || k == B_GE;
}

static double bin_f(eng_binary_kind k, double a, double b, bool fmod_mode)
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

static int64_t bin_i(eng_binary_kind k, int64_t a, int64_t b, bool fmod_mode, bool left, bool *div0)
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
static int binary_apply(const eng_node *n, eng_binary_kind k, eng_tensor *a, eng_tensor *b, eng_tensor *out,
                        const eng_bcast *bc, bool fmod_mode, bool left, cl_err *err)
{
    if (eng_vec_binary(k, a, b, out, bc))
        return 0;
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

/* Mod's fmod, BitShift's direction. */
typedef struct binary_attr {
    bool fmod_mode, left;
} binary_attr;

int eng_prep_binary(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_binary_kind k = (eng_binary_kind)n->op->kind;
    if (k != B_MOD && k != B_BSHIFT)
        return 0;
    binary_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    static const char *const dirs[] = {"LEFT", "RIGHT"};
    int dir = 0;
    if (k == B_MOD && eng_attr_bool(n, "fmod", false, &at->fmod_mode, err) != 0)
        return -1;
    if (k == B_BSHIFT) {
        if (!eng_attr_find(n, "direction"))
            return eng_attr_err(err, CL_E_FORMAT, n, "direction", "is required");
        if (eng_attr_choice(n, "direction", 0, dirs, 2, &dir, err) != 0)
            return -1;
    }
    at->left = dir == 0;
    return 0;
}

int eng_run_binary(eng_run *r, eng_node *n, cl_err *err)
{
    eng_binary_kind k = (eng_binary_kind)n->op->kind;
    const binary_attr *at = n->attr;
    bool fmod_mode = at && at->fmod_mode;
    bool left = !at || at->left;
    int nin = n->n_in;
    eng_tensor *ins[64] = {0};
    if (nin > 64 || nin < 1)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "needs 1 to 64 inputs");
    for (int i = 0; i < nin; i++)
        if (eng_need_in(r, n, i, &ins[i], err) != 0)
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
    if (nin == 2) { /* straight into the output */
        eng_bcast bc;
        if (eng_bcast_init(&bc, ins, 2, n, err) != 0)
            return -1;
        eng_tensor *y = eng_out(r, n, 0, odt, bc.rank, bc.dims, err);
        if (!y || binary_apply(n, k, ins[0], ins[1], y, &bc, fmod_mode, left, err) != 0)
            return -1;
        if (k == B_MEAN && !eng_vec_mean_div(y, 2)) {
            int64_t N = eng_numel(y);
            for (int64_t i = 0; i < N; i++)
                eng_set_f(y, i, eng_get_f(y, i) / 2);
        }
        return 0;
    }
    /* fold left over the inputs: acc = acc op in[i] */
    eng_tensor acc = *ins[0];
    acc.owned = false;
    for (int i = 1; i < nin; i++) {
        eng_tensor *pair[2] = {&acc, ins[i]};
        eng_bcast bc;
        if (eng_bcast_init(&bc, pair, 2, n, err) != 0) {
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
    if (k == B_MEAN && !eng_vec_mean_div(&acc, nin)) {
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

int eng_run_where(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *c, *a, *b;
    if (eng_need_in(r, n, 0, &c, err) || eng_need_in(r, n, 1, &a, err) || eng_need_in(r, n, 2, &b, err))
        return -1;
    if (c->dtype != CL_ENGINE_DT_BOOL || a->dtype != b->dtype)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a bool condition and two inputs of the same type");
    eng_tensor *ts[3] = {c, a, b};
    eng_bcast bc;
    if (eng_bcast_init(&bc, ts, 3, n, err) != 0)
        return -1;
    eng_tensor *y = eng_out(r, n, 0, a->dtype, bc.rank, bc.dims, err);
    if (!y)
        return -1;
    if (eng_vec_where(c, a, b, y, &bc))
        return 0;
    size_t es = cl_engine_dtype_size(a->dtype);
    const uint8_t *cp = c->data;
    BCAST_LOOP(&bc, 3, memcpy((char *)y->data + e * es, cp[o[0]] ? (char *)a->data + o[1] * es : (char *)b->data + o[2] * es, es));
    return 0;
}

int eng_prep_cast(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    if (n->op->kind == CAST_LIKE)
        return 0;
    int64_t to;
    if (!eng_attr_find(n, "to"))
        return eng_attr_err(err, CL_E_FORMAT, n, "to", "is required");
    if (eng_attr_int(n, "to", 0, &to, err) != 0)
        return -1;
    if (to < 0 || to > 64 || !eng_dtype_supported((cl_engine_dtype)to))
        return eng_attr_err(err, CL_E_UNSUPPORTED, n, "to", "is %lld (%s), a type that is not supported", (long long)to,
                            cl_engine_dtype_name((cl_engine_dtype)to));
    cl_engine_dtype *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    *at = (cl_engine_dtype)to;
    return 0;
}

int eng_infer_cast(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    c->out[0] = c->in[0];
    c->out[0].dt = c->n->op->kind == CAST_LIKE ? c->in[1].dt : *(const cl_engine_dtype *)c->n->attr;
    return 0;
}

int eng_run_cast(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    cl_engine_dtype to;
    if (n->op->kind == CAST_LIKE) {
        eng_tensor *l = eng_in(r, n, 1);
        if (!l)
            return eng_node_err(err, CL_E_FORMAT, n, "needs a target_type input");
        to = l->dtype;
    } else {
        to = *(const cl_engine_dtype *)n->attr;
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
    if (eng_vec_cast(x, y))
        return 0;
    bool f = eng_dtype_is_float(x->dtype) || eng_dtype_is_float(to);
    for (int64_t i = 0; i < N; i++) {
        if (f)
            eng_set_f(y, i, eng_get_f(x, i));
        else
            eng_set_i(y, i, eng_get_i(x, i));
    }
    return 0;
}
typedef struct isinf_attr {
    bool pos, neg;
} isinf_attr;

int eng_prep_isinf(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    isinf_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_bool(n, "detect_positive", true, &at->pos, err) != 0 ||
        eng_attr_bool(n, "detect_negative", true, &at->neg, err) != 0)
        return -1;
    return 0;
}

int eng_run_isinf(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    const isinf_attr *at = n->attr;
    bool pos = at->pos, neg = at->neg;
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
typedef struct shrink_attr {
    float bias, lambd;
} shrink_attr;

int eng_prep_shrink(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    shrink_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_float(n, "bias", 0.0f, &at->bias, err) != 0 ||
        eng_attr_float(n, "lambd", 0.5f, &at->lambd, err) != 0)
        return -1;
    return 0;
}

int eng_run_shrink(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    const shrink_attr *at = n->attr;
    double bias = at->bias, lambd = at->lambd;
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

/* ---------------------------------------------------------------- shape rules */

/* Equal / Less / Greater: broadcast, bool result. */
int eng_infer_compare(eng_infer_ctx *c, cl_err *err)
{
    if (eng_infer_broadcast(c, err) != 0)
        return -1;
    c->out[0].dt = CL_ENGINE_DT_BOOL;
    return 0;
}

/* Where: the three inputs broadcast; the type of X. */
int eng_infer_where(eng_infer_ctx *c, cl_err *err)
{
    if (eng_infer_broadcast(c, err) != 0)
        return -1;
    c->out[0].dt = c->in[1].dt;
    return 0;
}
