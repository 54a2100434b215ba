/* engine/ops/scatter.c — the plain-C scatter kernels: ScatterND (opset 11; reduction add/mul from opset
 * 16, max/min from 18), ScatterElements (11; the same reductions) and the deprecated Scatter (9..10, the
 * same as ScatterElements without reduction), with their prepare functions and shape rule. The output is
 * a copy of the data with the updates written (or combined) at the given indices. Every index is checked
 * before anything is written: a negative index counts from the end of its axis, one outside [-dim, dim)
 * fails the run naming the node, the index and the axis; nothing is ever written out of bounds.
 * Duplicate indices: with a reduction every update is combined in (in index order, so the result is
 * deterministic); without one ONNX leaves the result unspecified and here the last update in index
 * order wins (as numpy's assignment does).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

enum { RED_NONE, RED_ADD, RED_MUL, RED_MAX, RED_MIN };

typedef struct scatter_attr {
    int reduction;
    int64_t axis; /* ScatterElements / Scatter */
} scatter_attr;

int eng_prep_scatter(cl_engine_model *m, eng_node *n, cl_err *err)
{
    static const char *const reds[] = {"none", "add", "mul", "max", "min"};
    scatter_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_choice(n, "reduction", RED_NONE, reds, 5, &at->reduction, err) != 0)
        return -1;
    /* the attribute exists from opset 16 (none/add/mul); max and min were added in 18 */
    int need = at->reduction >= RED_MAX ? 18 : at->reduction != RED_NONE ? 16 : 0;
    if (eng_attr_find(n, "reduction") && m->opset < 16)
        return eng_attr_err(err, CL_E_FORMAT, n, "reduction", "exists from opset 16 on (the model has opset %lld)",
                            (long long)m->opset);
    if (m->opset < need)
        return eng_attr_err(err, CL_E_FORMAT, n, "reduction", "'%s' exists from opset %d on (the model has opset %lld)",
                            reds[at->reduction], need, (long long)m->opset);
    if (n->op->kind != SCATTER_ND &&
        eng_attr_int_in(n, "axis", 0, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axis, err) != 0)
        return -1;
    return 0;
}

/* y[yi] = y[yi] (reduction) u[ui]; every type the engine has (float types computed in double, which is
 * exact for float32/float16 add/max/min and rounds like float for mul; integers wrap). */
static void combine(eng_tensor *y, int64_t yi, const eng_tensor *u, int64_t ui, int red, size_t es)
{
    if (red == RED_NONE) {
        memcpy((char *)y->data + yi * (int64_t)es, (const char *)u->data + ui * (int64_t)es, es);
        return;
    }
    if (y->dtype == CL_ENGINE_DT_FLOAT) {
        float *yp = (float *)y->data + yi, v = ((const float *)u->data)[ui];
        switch (red) {
        case RED_ADD: *yp += v; break;
        case RED_MUL: *yp *= v; break;
        case RED_MAX: *yp = (*yp != *yp || v != v) ? NAN : *yp > v ? *yp : v; break;
        default: *yp = (*yp != *yp || v != v) ? NAN : *yp < v ? *yp : v; break;
        }
        return;
    }
    if (eng_dtype_is_float(y->dtype)) {
        double a = eng_get_f(y, yi), b = eng_get_f(u, ui);
        double r = red == RED_ADD ? a + b : red == RED_MUL ? a * b : (a != a || b != b) ? NAN
                   : red == RED_MAX ? (a > b ? a : b) : (a < b ? a : b);
        eng_set_f(y, yi, r);
        return;
    }
    bool uns = y->dtype == CL_ENGINE_DT_UINT64 || y->dtype == CL_ENGINE_DT_UINT32 || y->dtype == CL_ENGINE_DT_UINT16 ||
               y->dtype == CL_ENGINE_DT_UINT8 || y->dtype == CL_ENGINE_DT_BOOL;
    int64_t a = eng_get_i(y, yi), b = eng_get_i(u, ui), r;
    switch (red) {
    case RED_ADD: r = y->dtype == CL_ENGINE_DT_BOOL ? (a || b) : (int64_t)((uint64_t)a + (uint64_t)b); break;
    case RED_MUL: r = y->dtype == CL_ENGINE_DT_BOOL ? (a && b) : (int64_t)((uint64_t)a * (uint64_t)b); break;
    case RED_MAX: r = uns ? ((uint64_t)a > (uint64_t)b ? a : b) : (a > b ? a : b); break;
    default: r = uns ? ((uint64_t)a < (uint64_t)b ? a : b) : (a < b ? a : b); break;
    }
    eng_set_i(y, yi, r);
}

static int check_types(const eng_node *n, const eng_tensor *x, const eng_tensor *ind, const eng_tensor *upd,
                       cl_err *err)
{
    if (ind->dtype != CL_ENGINE_DT_INT64 && ind->dtype != CL_ENGINE_DT_INT32)
        return eng_node_err(err, CL_E_FORMAT, n, "indices must be int32 or int64, not %s",
                            cl_engine_dtype_name(ind->dtype));
    if (upd->dtype != x->dtype)
        return eng_node_err(err, CL_E_FORMAT, n, "updates are %s but the data is %s", cl_engine_dtype_name(upd->dtype),
                            cl_engine_dtype_name(x->dtype));
    return 0;
}

static int64_t index_at(const eng_tensor *ind, int64_t i)
{
    return ind->dtype == CL_ENGINE_DT_INT64 ? ((const int64_t *)ind->data)[i] : ((const int32_t *)ind->data)[i];
}

/* ScatterND: data [d0..d(r-1)], indices [i0..i(q-2), k] (k <= r), updates [i0..i(q-2), dk..d(r-1)]. */
int eng_run_scatter_nd(eng_run *r, eng_node *n, cl_err *err)
{
    const scatter_attr *at = n->attr;
    eng_tensor *x, *ind, *upd;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &ind, err) || eng_need_in(r, n, 2, &upd, err))
        return -1;
    if (check_types(n, x, ind, upd, err) != 0)
        return -1;
    if (x->rank < 1 || ind->rank < 1)
        return eng_node_err(err, CL_E_FORMAT, n, "data and indices must have rank >= 1 (data %s, indices %s)", DIMS(x),
                            DIMS(ind));
    int64_t k = ind->dims[ind->rank - 1];
    if (k < 1 || k > x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "the last dim of indices %s must be 1..%d (the data's rank)",
                            DIMS(ind), x->rank);
    /* updates' shape must be indices.shape[:-1] + data.shape[k:] */
    int urank = ind->rank - 1 + x->rank - (int)k;
    bool ok = upd->rank == urank;
    for (int d = 0; ok && d < ind->rank - 1; d++)
        ok = upd->dims[d] == ind->dims[d];
    for (int d = 0; ok && d < x->rank - (int)k; d++)
        ok = upd->dims[ind->rank - 1 + d] == x->dims[k + d];
    if (!ok)
        return eng_node_err(err, CL_E_FORMAT, n, "updates %s do not have the shape indices %s and data %s need", DIMS(upd),
                            DIMS(ind), DIMS(x));
    int64_t nidx = eng_numel(ind) / k; /* k >= 1 */
    int64_t slice = 1, xst[CL_ENGINE_MAX_RANK], s = 1;
    for (int d = x->rank - 1; d >= 0; d--) {
        xst[d] = s;
        s *= x->dims[d];
    }
    for (int d = (int)k; d < x->rank; d++)
        slice *= x->dims[d];
    /* every index checked before the output is touched */
    for (int64_t i = 0; i < nidx; i++)
        for (int64_t j = 0; j < k; j++) {
            int64_t v = index_at(ind, i * k + j), dim = x->dims[j];
            if (v < -dim || v >= dim)
                return eng_node_err(err, CL_E_FORMAT, n, "index %lld (entry %lld of indices) is out of range for axis %lld "
                                    "of size %lld", (long long)v, (long long)i * k + j, (long long)j, (long long)dim);
        }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    size_t es = cl_engine_dtype_size(x->dtype);
    int red = at->reduction;
    for (int64_t i = 0; i < nidx; i++) {
        int64_t off = 0;
        for (int64_t j = 0; j < k; j++) {
            int64_t v = index_at(ind, i * k + j);
            off += (v < 0 ? v + x->dims[j] : v) * xst[j];
        }
        if (red == RED_NONE) {
            memcpy((char *)y->data + off * (int64_t)es, (const char *)upd->data + i * slice * (int64_t)es,
                   (size_t)slice * es);
            continue;
        }
        for (int64_t e = 0; e < slice; e++)
            combine(y, off + e, upd, i * slice + e, red, es);
    }
    return 0;
}

/* ScatterElements / Scatter: indices and updates of one shape, data of the same rank; along `axis` the
 * output position is the index, elsewhere the index's own position. */
int eng_run_scatter_elements(eng_run *r, eng_node *n, cl_err *err)
{
    const scatter_attr *at = n->attr;
    eng_tensor *x, *ind, *upd;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &ind, err) || eng_need_in(r, n, 2, &upd, err))
        return -1;
    if (check_types(n, x, ind, upd, err) != 0)
        return -1;
    if (x->rank < 1 || ind->rank != x->rank || upd->rank != ind->rank ||
        memcmp(upd->dims, ind->dims, sizeof(int64_t) * (size_t)ind->rank) != 0)
        return eng_node_err(err, CL_E_FORMAT, n, "indices %s and updates %s must have one shape, of the data's rank (%s)",
                            DIMS(ind), DIMS(upd), DIMS(x));
    int64_t ax = eng_norm_axis(at->axis, x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis %lld is out of range for %s", (long long)at->axis, DIMS(x));
    for (int d = 0; d < x->rank; d++)
        if (d != ax && ind->dims[d] > x->dims[d])
            return eng_node_err(err, CL_E_FORMAT, n, "indices %s exceed the data %s outside the axis", DIMS(ind),
                                DIMS(x));
    int64_t N = eng_numel(ind), dim = x->dims[ax];
    for (int64_t e = 0; e < N; e++) {
        int64_t v = index_at(ind, e);
        if (v < -dim || v >= dim)
            return eng_node_err(err, CL_E_FORMAT, n, "index %lld (entry %lld of indices) is out of range for axis %lld "
                                "of size %lld", (long long)v, (long long)e, (long long)ax, (long long)dim);
    }
    eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
    if (!y)
        return -1;
    if (x->nbytes)
        memcpy(y->data, x->data, x->nbytes);
    int64_t xst[CL_ENGINE_MAX_RANK] = {0}, s = 1, idx[CL_ENGINE_MAX_RANK] = {0};
    for (int d = x->rank - 1; d >= 0; d--) {
        xst[d] = s;
        s *= x->dims[d];
    }
    size_t es = cl_engine_dtype_size(x->dtype);
    for (int64_t e = 0; e < N; e++) {
        int64_t v = index_at(ind, e), off = 0;
        if (v < 0)
            v += dim;
        for (int d = 0; d < x->rank; d++)
            off += (d == ax ? v : idx[d]) * xst[d];
        combine(y, off, upd, e, at->reduction, es);
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++idx[d] < ind->dims[d])
                break;
            idx[d] = 0;
        }
    }
    return 0;
}
