/* engine/ops/index.c — the plain-C kernels that index, generate or select: Gather, GatherElements,
 * ConstantOfShape, Range, Trilu, CumSum, EyeLike, OneHot and TopK, with their prepare functions. Every
 * index is checked against its axis at run time (an out-of-range index fails naming the node).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"
#include "engine/ops/vec.h"

int eng_run_gather(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *ind;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &ind, err))
        return -1;
    if (ind->dtype != CL_ENGINE_DT_INT64 && ind->dtype != CL_ENGINE_DT_INT32)
        return eng_node_err(err, CL_E_FORMAT, n, "indices must be int32 or int64");
    int64_t ax = eng_norm_axis(((const eng_axis_attr *)n->attr)->axis, x->rank);
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
    if (eng_vec_gather(x, ind, ax, y))
        return 0;
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
/* ConstantOfShape: the one-element value tensor (NULL: float zeros), borrowed from the attribute. */
int eng_prep_constant_of_shape(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    const eng_tensor *t;
    if (eng_attr_tensor(n, "value", &t, err) != 0)
        return -1;
    if (t && eng_numel(t) != 1)
        return eng_attr_err(err, CL_E_FORMAT, n, "value", "must have one element, has %lld", (long long)eng_numel(t));
    const eng_tensor **at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    *at = t;
    return 0;
}

int eng_run_constant_of_shape(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *s;
    if (eng_need_in(r, n, 0, &s, err) != 0)
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (eng_read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
        return -1;
    const eng_tensor *val = *(const eng_tensor *const *)n->attr;
    cl_engine_dtype dt = val ? val->dtype : CL_ENGINE_DT_FLOAT;
    for (int i = 0; i < ns; i++)
        if (shape[i] < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "negative shape");
    eng_tensor *y = eng_out(r, n, 0, dt, ns, shape, err);
    if (!y)
        return -1;
    if (val) {
        size_t es = cl_engine_dtype_size(dt);
        int64_t N = eng_numel(y);
        for (int64_t i = 0; i < N; i++)
            memcpy((char *)y->data + i * es, val->data, es);
    }
    return 0;
}

int eng_run_range(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *ts[3];
    for (int i = 0; i < 3; i++)
        if (eng_need_in(r, n, i, &ts[i], err) != 0)
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

int eng_run_gather_elements(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *ind;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &ind, err))
        return -1;
    if ((ind->dtype != CL_ENGINE_DT_INT64 && ind->dtype != CL_ENGINE_DT_INT32) || ind->rank != x->rank || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "indices must be int32/int64 with the data's rank");
    int64_t ax = eng_norm_axis(((const eng_axis_attr *)n->attr)->axis, x->rank);
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

int eng_prep_trilu(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    bool *upper = eng_attr_alloc(n, sizeof *upper, err);
    return upper && eng_attr_bool(n, "upper", true, upper, err) == 0 ? 0 : -1;
}

int eng_run_trilu(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
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
    bool upper = *(const bool *)n->attr;
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

typedef struct cumsum_attr {
    bool exclusive, reverse;
} cumsum_attr;

int eng_prep_cumsum(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    cumsum_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_bool(n, "exclusive", false, &at->exclusive, err) != 0 ||
        eng_attr_bool(n, "reverse", false, &at->reverse, err) != 0)
        return -1;
    return 0;
}

int eng_run_cumsum(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *at;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &at, err))
        return -1;
    if (eng_numel(at) != 1 || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "needs a scalar axis and a non-scalar input");
    int64_t ax = eng_norm_axis(eng_get_i(at, 0), x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    const cumsum_attr *ca = n->attr;
    bool excl = ca->exclusive, rev = ca->reverse;
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

typedef struct eyelike_attr {
    bool has_dtype;
    cl_engine_dtype dtype;
    int64_t k;
} eyelike_attr;

int eng_prep_eyelike(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eyelike_attr *at = eng_attr_alloc(n, sizeof *at, err);
    int64_t dt;
    if (!at || eng_attr_int(n, "dtype", 0, &dt, err) != 0 || eng_attr_int(n, "k", 0, &at->k, err) != 0)
        return -1;
    at->has_dtype = eng_attr_find(n, "dtype") != NULL;
    if (at->has_dtype && (dt < 0 || dt > 64 || !eng_dtype_supported((cl_engine_dtype)dt)))
        return eng_attr_err(err, CL_E_UNSUPPORTED, n, "dtype", "is %lld (%s), a type that is not supported",
                            (long long)dt, cl_engine_dtype_name((cl_engine_dtype)dt));
    at->dtype = (cl_engine_dtype)dt;
    return 0;
}

int eng_run_eyelike(eng_run *r, eng_node *n, cl_err *err)
{
    const eyelike_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (x->rank != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "input must be 2-D");
    cl_engine_dtype dt = at->has_dtype ? at->dtype : x->dtype;
    if (!eng_dtype_supported(dt))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "dtype %s is not supported", cl_engine_dtype_name(dt));
    int64_t k = at->k;
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

int eng_run_onehot(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *ind, *dep, *val;
    if (eng_need_in(r, n, 0, &ind, err) || eng_need_in(r, n, 1, &dep, err) || eng_need_in(r, n, 2, &val, err))
        return -1;
    if (eng_numel(dep) != 1 || eng_numel(val) != 2)
        return eng_node_err(err, CL_E_FORMAT, n, "depth must be a scalar and values have two elements");
    int64_t depth = eng_get_i(dep, 0);
    if (depth < 1 || depth > CL_ENGINE_MAX_TENSOR_ELEMS || ind->rank + 1 > CL_ENGINE_MAX_RANK)
        return eng_node_err(err, CL_E_FORMAT, n, "invalid depth or rank");
    int orank = ind->rank + 1;
    int64_t ax = eng_norm_axis(((const eng_axis_attr *)n->attr)->axis, orank);
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

typedef struct topk_attr {
    int64_t axis;
    bool largest;
} topk_attr;

int eng_prep_topk(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    topk_attr *at = eng_attr_alloc(n, sizeof *at, err);
    bool sorted;
    if (!at || eng_attr_int_in(n, "axis", -1, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axis, err) != 0 ||
        eng_attr_bool(n, "largest", true, &at->largest, err) != 0 || eng_attr_bool(n, "sorted", true, &sorted, err) != 0)
        return -1;
    return 0; /* the results are always sorted, which sorted=0 allows */
}

int eng_run_topk(eng_run *r, eng_node *n, cl_err *err)
{
    const topk_attr *at = n->attr;
    eng_tensor *x, *kt;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &kt, err))
        return -1;
    if (eng_numel(kt) != 1 || x->rank == 0)
        return eng_node_err(err, CL_E_FORMAT, n, "K must have one element and X a rank >= 1");
    int64_t ax = eng_norm_axis(at->axis, x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    int64_t k = eng_get_i(kt, 0), len = x->dims[ax];
    if (k < 0 || k > len)
        return eng_node_err(err, CL_E_FORMAT, n, "K=%lld is out of range for an axis of %lld", (long long)k,
                            (long long)len);
    bool largest = at->largest;
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
        return cl_err_nomem(err);
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

