/* engine/ops/reduce.c — the reductions: Softmax / LogSoftmax / Hardmax over an axis (fp32 softmax on
 * oneDNN, dnnl/norm.c; the rest in plain C), the ten
 * Reduce* operators and ArgMax / ArgMin (eng_reduce_kind), with their prepare functions (axis, axes before
 * they became an input, keepdims, noop_with_empty_axes, select_last_index).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

/* Softmax family: axis (default 1 and "coerced to 2-D" semantics before opset 13, -1 since). */
typedef struct softmax_attr {
    int64_t axis;
    bool old;
} softmax_attr;

int eng_prep_softmax(cl_engine_model *m, eng_node *n, cl_err *err)
{
    softmax_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->old = m->opset < 13;
    return eng_attr_int_in(n, "axis", at->old ? 1 : -1, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axis, err);
}

int eng_run_softmax(eng_run *r, eng_node *n, cl_err *err)
{
    const softmax_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (!eng_dtype_is_float(x->dtype))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    bool old = at->old;
    int64_t ax = eng_norm_axis(at->axis, x->rank);
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
    int mode = n->op->kind; /* SOFTMAX_PLAIN, SOFTMAX_LOG, SOFTMAX_HARD */
    if (mode != SOFTMAX_HARD && x->rank > 0) { /* fp32: oneDNN (dnnl/norm.c) */
        int rc = eng_dnnl_softmax(r, n, x, outer, len, inner, mode == SOFTMAX_LOG, err);
        if (rc <= 0)
            return rc;
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
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

/* Reductions: keepdims; the axes attribute until they became input 1 (ReduceSum at 13, the others at
 * 18); ArgMax / ArgMin: axis and select_last_index. */
typedef struct reduce_attr {
    bool keep, axes_input, noop_empty, last;
    int na;
    int64_t axes[CL_ENGINE_MAX_RANK];
} reduce_attr;

int eng_prep_reduce(cl_engine_model *m, eng_node *n, cl_err *err)
{
    eng_reduce_kind k = (eng_reduce_kind)n->op->kind;
    bool arg = k == R_ARGMAX || k == R_ARGMIN;
    reduce_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_bool(n, "keepdims", true, &at->keep, err) != 0)
        return -1;
    at->axes_input = !arg && (m->opset >= 18 || (k == R_SUM && m->opset >= 13));
    if (arg) {
        at->na = 1;
        return eng_attr_int_in(n, "axis", 0, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axes[0], err) != 0 ||
                       eng_attr_bool(n, "select_last_index", false, &at->last, err) != 0
                   ? -1
                   : 0;
    }
    if (at->axes_input)
        return eng_attr_bool(n, "noop_with_empty_axes", false, &at->noop_empty, err);
    const int64_t *v;
    size_t c;
    if (eng_attr_ints_max(n, "axes", CL_ENGINE_MAX_RANK, &v, &c, err) != 0)
        return -1;
    if (c)
        memcpy(at->axes, v, c * sizeof *v);
    at->na = (int)c;
    return 0;
}

int eng_run_reduce(eng_run *r, eng_node *n, cl_err *err)
{
    eng_reduce_kind k = (eng_reduce_kind)n->op->kind;
    const reduce_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool arg = k == R_ARGMAX || k == R_ARGMIN;
    bool keep = at->keep;
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na = 0;
    bool axes_input = at->axes_input;
    if (arg) {
        axes[0] = at->axes[0];
        na = 1;
    } else if (axes_input) {
        eng_tensor *a = eng_in_plain(r, n, 1, err);
        if (a && eng_read_ints(n, a, axes, CL_ENGINE_MAX_RANK, &na, err) != 0)
            return -1;
    } else {
        memcpy(axes, at->axes, sizeof axes);
        na = at->na;
    }
    bool red[CL_ENGINE_MAX_RANK] = {0};
    if (na == 0) {
        if (axes_input && at->noop_empty)
            return eng_out_forward(r, n, 0, 0, x->rank, x->dims, err);
        for (int d = 0; d < x->rank; d++)
            red[d] = true;
    }
    for (int i = 0; i < na; i++) {
        int64_t a = eng_norm_axis(axes[i], x->rank);
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
        return cl_err_nomem(err);
    }
    bool last = at->last;
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

