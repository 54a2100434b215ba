/* engine/ops/layout.c — the plain-C kernels that move data without arithmetic: Reshape, Flatten,
 * Squeeze / Unsqueeze, Shape, Size, Transpose, Concat (the oneDNN one is in dnnl/eltwise.c), Split, Slice,
 * Expand, Tile, Pad, DepthToSpace / SpaceToDepth, Dropout (inference: a copy) and Constant (folded at load),
 * with their prepare functions and the Reshape / Flatten / Concat / Shape shape rules. Every kernel checks
 * the shapes and indices it is given at run time and fails naming the node rather than read out of bounds.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"
#include "engine/ops/vec.h"

/* Reshape: the shape attribute before opset 5, else input 1. */
typedef struct reshape_attr {
    bool from_attr, allowzero;
    int ns;
    int64_t shape[CL_ENGINE_MAX_RANK];
} reshape_attr;

int eng_prep_reshape(cl_engine_model *m, eng_node *n, cl_err *err)
{
    reshape_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_bool(n, "allowzero", false, &at->allowzero, err) != 0)
        return -1;
    at->from_attr = m->opset < 5;
    if (at->from_attr) {
        const int64_t *v;
        size_t c;
        if (eng_attr_ints_max(n, "shape", CL_ENGINE_MAX_RANK, &v, &c, err) != 0)
            return -1;
        if (c)
            memcpy(at->shape, v, c * sizeof *v);
        at->ns = (int)c;
    }
    return 0;
}

int eng_run_reshape(eng_run *r, eng_node *n, cl_err *err)
{
    const reshape_attr *at = n->attr;
    eng_tensor *x, *s;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (at->from_attr) {
        memcpy(shape, at->shape, sizeof shape);
        ns = at->ns;
    } else {
        if (eng_need_in(r, n, 1, &s, err) != 0 || eng_read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
            return -1;
    }
    bool allowzero = at->allowzero;
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

/* Ops whose only attribute is an integer axis: Flatten (default 1), OneHot (default -1), Gather,
 * GatherElements, Concat (default 0). */
int eng_prep_axis(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_axis_attr *at = eng_attr_alloc(n, sizeof *at, err);
    int64_t def = strcmp(n->op->name, "Flatten") == 0 ? 1 : strcmp(n->op->name, "OneHot") == 0 ? -1 : 0;
    if (!at || eng_attr_int_in(n, "axis", def, -CL_ENGINE_MAX_RANK - 1, CL_ENGINE_MAX_RANK, &at->axis, err) != 0)
        return -1;
    return 0;
}

/* The same where the axis is required (Concat). */
int eng_prep_axis_required(cl_engine_model *m, eng_node *n, cl_err *err)
{
    if (!eng_attr_find(n, "axis"))
        return eng_attr_err(err, CL_E_FORMAT, n, "axis", "is required");
    return eng_prep_axis(m, n, err);
}

int eng_run_flatten(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t ax = eng_norm_axis(((const eng_axis_attr *)n->attr)->axis, x->rank);
    if (ax < 0 || ax > x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range for %s", DIMS(x));
    int64_t d[2] = {1, 1};
    for (int i = 0; i < x->rank; i++)
        d[i >= ax] *= x->dims[i];
    return eng_out_forward(r, n, 0, 0, 2, d, err);
}

/* Squeeze / Unsqueeze: the axes attribute before opset 13, else input 1. */
typedef struct axes_attr {
    bool from_input;
    int na;
    int64_t axes[CL_ENGINE_MAX_RANK];
} axes_attr;

int eng_prep_squeeze(cl_engine_model *m, eng_node *n, cl_err *err)
{
    axes_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->from_input = m->opset >= 13;
    if (!at->from_input) {
        const int64_t *v;
        size_t c;
        if (eng_attr_ints_max(n, "axes", CL_ENGINE_MAX_RANK, &v, &c, err) != 0)
            return -1;
        if (c)
            memcpy(at->axes, v, c * sizeof *v);
        at->na = (int)c;
    }
    return 0;
}

static int get_axes(eng_run *r, eng_node *n, int in_idx, int64_t *axes, int *na, cl_err *err)
{
    const axes_attr *at = n->attr;
    *na = 0;
    if (at->from_input) {
        eng_tensor *a = eng_in_plain(r, n, in_idx, err);
        if (!a)
            return 0;
        return eng_read_ints(n, a, axes, CL_ENGINE_MAX_RANK, na, err);
    }
    memcpy(axes, at->axes, sizeof at->axes);
    *na = at->na;
    return 0;
}

int eng_run_squeeze(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t axes[CL_ENGINE_MAX_RANK];
    int na;
    if (get_axes(r, n, 1, axes, &na, err) != 0)
        return -1;
    bool drop[CL_ENGINE_MAX_RANK] = {0};
    for (int i = 0; i < na; i++) {
        int64_t a = eng_norm_axis(axes[i], x->rank);
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

int eng_run_unsqueeze(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
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
        int64_t a = eng_norm_axis(axes[i], nr);
        if (a < 0 || a >= nr || ins[a])
            return eng_node_err(err, CL_E_FORMAT, n, "invalid axis %lld", (long long)axes[i]);
        ins[a] = true;
    }
    int64_t d[CL_ENGINE_MAX_RANK];
    for (int i = 0, j = 0; i < nr; i++)
        d[i] = ins[i] ? 1 : x->dims[j++];
    return eng_out_forward(r, n, 0, 0, nr, d, err);
}

/* Shape: start / end (opset 15), each optional. */
typedef struct shape_attr {
    bool has_start, has_end;
    int64_t start, end;
} shape_attr;

int eng_prep_shape(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    shape_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_int(n, "start", 0, &at->start, err) != 0 || eng_attr_int(n, "end", 0, &at->end, err) != 0)
        return -1;
    at->has_start = eng_attr_find(n, "start") != NULL;
    at->has_end = eng_attr_find(n, "end") != NULL;
    return 0;
}

int eng_infer_shape(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    const shape_attr *at = c->n->attr;
    c->out[0].dt = CL_ENGINE_DT_INT64;
    if (c->in[0].rank >= 0 && !at->has_start && !at->has_end) {
        c->out[0].rank = 1;
        c->out[0].d[0] = c->in[0].rank;
    }
    return 0;
}

int eng_run_shape(eng_run *r, eng_node *n, cl_err *err)
{
    const shape_attr *at = n->attr;
    eng_tensor *x = eng_in(r, n, 0);
    if (!x)
        return eng_node_err(err, CL_E_FORMAT, n, "input is required");
    int64_t start = at->start, end = at->has_end ? at->end : x->rank;
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

int eng_run_size(eng_run *r, eng_node *n, cl_err *err)
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

/* Transpose: perm (np -1: absent, reverse the dims), a permutation of 0..np-1. */
typedef struct perm_attr {
    int np;
    int64_t perm[CL_ENGINE_MAX_RANK];
} perm_attr;

int eng_prep_transpose(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    perm_attr *at = eng_attr_alloc(n, sizeof *at, err);
    const int64_t *p;
    size_t c;
    if (!at || eng_attr_ints_max(n, "perm", CL_ENGINE_MAX_RANK, &p, &c, err) != 0)
        return -1;
    at->np = p ? (int)c : -1;
    bool seen[CL_ENGINE_MAX_RANK] = {0};
    for (size_t i = 0; p && i < c; i++) {
        if (p[i] < 0 || p[i] >= (int64_t)c || seen[p[i]])
            return eng_attr_err(err, CL_E_FORMAT, n, "perm", "is not a permutation of 0..%zu", c ? c - 1 : 0);
        seen[p[i]] = true;
        at->perm[i] = p[i];
    }
    return 0;
}

int eng_run_transpose(eng_run *r, eng_node *n, cl_err *err)
{
    const perm_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t perm[CL_ENGINE_MAX_RANK];
    if (at->np >= 0) {
        if (at->np != rank)
            return eng_node_err(err, CL_E_FORMAT, n, "perm has %d entries for rank %d", at->np, rank);
        memcpy(perm, at->perm, sizeof perm);
    } else {
        for (int i = 0; i < rank; i++)
            perm[i] = rank - 1 - i;
    }
    int64_t od[CL_ENGINE_MAX_RANK], ist[CL_ENGINE_MAX_RANK] = {0}, st[CL_ENGINE_MAX_RANK];
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
    if (eng_vec_transpose(x, y, perm))
        return 0;
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
        if (eng_need_in(r, n, i, &ins[i], err) != 0)
            return -1;
    eng_tensor *x0 = ins[0];
    int64_t ax = eng_norm_axis(((const eng_axis_attr *)n->attr)->axis, x0->rank);
    if (ax < 0 || ax >= x0->rank)
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
    if (eng_vec_concat(ins, n->n_in, ax, y))
        return 0;
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

/* Split: axis; the sizes in the split attribute before opset 13, else input 1. */
typedef struct split_attr {
    int64_t axis;
    bool from_input;
    const int64_t *split; /* the node's attribute */
    size_t n_split;
} split_attr;

int eng_prep_split(cl_engine_model *m, eng_node *n, cl_err *err)
{
    split_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_int_in(n, "axis", 0, -CL_ENGINE_MAX_RANK, CL_ENGINE_MAX_RANK - 1, &at->axis, err) != 0)
        return -1;
    at->from_input = m->opset >= 13;
    if (!at->from_input && eng_attr_ints_max(n, "split", 256, &at->split, &at->n_split, err) != 0)
        return -1;
    return 0;
}

int eng_run_split(eng_run *r, eng_node *n, cl_err *err)
{
    const split_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int64_t ax = eng_norm_axis(at->axis, x->rank);
    if (ax < 0 || ax >= x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
    int no = n->n_out;
    int64_t sz[256];
    if (no > 256)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many outputs");
    int ns = 0;
    if (at->from_input) {
        eng_tensor *s = eng_in_plain(r, n, 1, err);
        if (s && eng_read_ints(n, s, sz, 256, &ns, err) != 0)
            return -1;
    } else {
        if (at->n_split)
            memcpy(sz, at->split, at->n_split * sizeof *sz);
        ns = (int)at->n_split;
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

/* Slice before opset 10: starts / ends / axes attributes (later: inputs). */
typedef struct slice_attr {
    bool from_attrs;
    int nst, nen, nax;
    int64_t st[CL_ENGINE_MAX_RANK], en[CL_ENGINE_MAX_RANK], ax[CL_ENGINE_MAX_RANK];
} slice_attr;

static int slice_ints(const eng_node *n, const char *name, int64_t *v, int *cnt, cl_err *err)
{
    const int64_t *p;
    size_t c;
    if (eng_attr_ints_max(n, name, CL_ENGINE_MAX_RANK, &p, &c, err) != 0)
        return -1;
    if (c)
        memcpy(v, p, c * sizeof *p);
    *cnt = (int)c;
    return 0;
}

int eng_prep_slice(cl_engine_model *m, eng_node *n, cl_err *err)
{
    slice_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at)
        return -1;
    at->from_attrs = m->opset < 10;
    if (at->from_attrs && (slice_ints(n, "starts", at->st, &at->nst, err) != 0 ||
                           slice_ints(n, "ends", at->en, &at->nen, err) != 0 ||
                           slice_ints(n, "axes", at->ax, &at->nax, err) != 0))
        return -1;
    return 0;
}

int eng_run_slice(eng_run *r, eng_node *n, cl_err *err)
{
    const slice_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t st[CL_ENGINE_MAX_RANK], en[CL_ENGINE_MAX_RANK], ax[CL_ENGINE_MAX_RANK], sp[CL_ENGINE_MAX_RANK];
    int nst = 0, nen = 0, nax = 0, nsp = 0;
    if (at->from_attrs) {
        memcpy(st, at->st, sizeof st);
        memcpy(en, at->en, sizeof en);
        memcpy(ax, at->ax, sizeof ax);
        nst = at->nst;
        nen = at->nen;
        nax = at->nax;
    } else {
        eng_tensor *t;
        if (eng_need_in(r, n, 1, &t, err) || eng_read_ints(n, t, st, CL_ENGINE_MAX_RANK, &nst, err) ||
            eng_need_in(r, n, 2, &t, err) || eng_read_ints(n, t, en, CL_ENGINE_MAX_RANK, &nen, err))
            return -1;
        if ((t = eng_in_plain(r, n, 3, err)) && eng_read_ints(n, t, ax, CL_ENGINE_MAX_RANK, &nax, err))
            return -1;
        if ((t = eng_in_plain(r, n, 4, err)) && eng_read_ints(n, t, sp, CL_ENGINE_MAX_RANK, &nsp, err))
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
        int64_t a = nax ? eng_norm_axis(ax[i], rank) : i;
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
    if (eng_vec_slice(x, y, b, stp))
        return 0;
    int64_t N = eng_numel(y);
    size_t es = cl_engine_dtype_size(x->dtype);
    int64_t ist[CL_ENGINE_MAX_RANK] = {0}, s = 1;
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

int eng_run_expand(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *s;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &s, err))
        return -1;
    int64_t shape[CL_ENGINE_MAX_RANK];
    int ns;
    if (eng_read_ints(n, s, shape, CL_ENGINE_MAX_RANK, &ns, err) != 0)
        return -1;
    eng_tensor shp = {.dtype = x->dtype, .rank = ns};
    for (int i = 0; i < ns; i++) {
        if (shape[i] < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "negative shape");
        shp.dims[i] = shape[i];
    }
    eng_tensor *ts[2] = {x, &shp};
    eng_bcast bc;
    if (eng_bcast_init(&bc, ts, 2, n, err) != 0)
        return -1;
    eng_tensor *y = eng_out(r, n, 0, x->dtype, bc.rank, bc.dims, err);
    if (!y)
        return -1;
    if (eng_vec_expand(x, y, &bc))
        return 0;
    size_t es = cl_engine_dtype_size(x->dtype);
    BCAST_LOOP(&bc, 1, memcpy((char *)y->data + e * es, (char *)x->data + o[0] * es, es));
    return 0;
}

int eng_run_tile(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x, *s;
    if (eng_need_in(r, n, 0, &x, err) || eng_need_in(r, n, 1, &s, err))
        return -1;
    int64_t rep[CL_ENGINE_MAX_RANK];
    int nr;
    if (eng_read_ints(n, s, rep, CL_ENGINE_MAX_RANK, &nr, err) != 0)
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
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0}, ist[CL_ENGINE_MAX_RANK] = {0}, st = 1;
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
/* Pad: mode; before opset 11 pads / value attributes (later: inputs). */
typedef struct pad_attr {
    int mode; /* 0 constant, 1 reflect, 2 edge */
    bool from_attrs;
    int np;
    int64_t pads[2 * CL_ENGINE_MAX_RANK];
    float value;
} pad_attr;

int eng_prep_pad(cl_engine_model *m, eng_node *n, cl_err *err)
{
    static const char *const modes[] = {"constant", "reflect", "edge"};
    pad_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_choice(n, "mode", 0, modes, 3, &at->mode, err) != 0)
        return -1;
    at->from_attrs = m->opset < 11;
    if (at->from_attrs) {
        const int64_t *v;
        size_t c;
        if (eng_attr_ints_max(n, "pads", 2 * CL_ENGINE_MAX_RANK, &v, &c, err) != 0 ||
            eng_attr_float(n, "value", 0.0f, &at->value, err) != 0)
            return -1;
        if (c)
            memcpy(at->pads, v, c * sizeof *v);
        at->np = (int)c;
    }
    return 0;
}

int eng_run_pad(eng_run *r, eng_node *n, cl_err *err)
{
    const pad_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    int rank = x->rank;
    int64_t pads[2 * CL_ENGINE_MAX_RANK], axes[CL_ENGINE_MAX_RANK];
    int np = 0, na = 0;
    double cval = 0;
    static const char *const mode_names[] = {"constant", "reflect", "edge"};
    const char *mode = mode_names[at->mode];
    if (at->from_attrs) {
        memcpy(pads, at->pads, sizeof pads);
        np = at->np;
        cval = at->value;
    } else {
        eng_tensor *t;
        if (eng_need_in(r, n, 1, &t, err) || eng_read_ints(n, t, pads, 2 * CL_ENGINE_MAX_RANK, &np, err))
            return -1;
        if ((t = eng_in_plain(r, n, 2, err))) {
            if (eng_numel(t) < 1)
                return eng_node_err(err, CL_E_FORMAT, n, "constant_value is empty");
            cval = eng_get_f(t, 0);
        }
        if ((t = eng_in_plain(r, n, 3, err)) && eng_read_ints(n, t, axes, CL_ENGINE_MAX_RANK, &na, err))
            return -1;
    }
    int64_t lo[CL_ENGINE_MAX_RANK] = {0}, hi[CL_ENGINE_MAX_RANK] = {0};
    int cnt = na ? na : rank;
    if (np != 2 * cnt)
        return eng_node_err(err, CL_E_FORMAT, n, "pads has %d entries, expected %d", np, 2 * cnt);
    for (int i = 0; i < cnt; i++) {
        int64_t a = na ? eng_norm_axis(axes[i], rank) : i;
        if (a < 0 || a >= rank)
            return eng_node_err(err, CL_E_FORMAT, n, "axis out of range");
        lo[a] = pads[i];
        hi[a] = pads[i + cnt];
    }
    int m = at->mode;
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
    int64_t N = eng_numel(y), idx[CL_ENGINE_MAX_RANK] = {0}, ist[CL_ENGINE_MAX_RANK] = {0}, st = 1;
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

typedef struct depth_attr {
    int64_t blocksize;
    bool crd;
} depth_attr;

int eng_prep_depth_space(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    static const char *const modes[] = {"DCR", "CRD"};
    depth_attr *at = eng_attr_alloc(n, sizeof *at, err);
    int mode = 0;
    if (!at)
        return -1;
    if (!eng_attr_find(n, "blocksize"))
        return eng_attr_err(err, CL_E_FORMAT, n, "blocksize", "is required");
    if (eng_attr_int_in(n, "blocksize", 0, 1, 4096, &at->blocksize, err) != 0 ||
        eng_attr_choice(n, "mode", 0, modes, 2, &mode, err) != 0)
        return -1;
    at->crd = mode == 1;
    return 0;
}

int eng_run_depth_space(eng_run *r, eng_node *n, cl_err *err)
{
    const depth_attr *at = n->attr;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    bool d2s = n->op->kind == DEPTH_TO_SPACE;
    int64_t b = at->blocksize;
    bool crd = at->crd;
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

/* Dropout in training mode with ratio 0 drops nothing (torchvision 0.14's Swin exports its attention
 * dropout so: F.dropout(attn, p=0.0) without training=False); any other ratio in training mode is
 * random, which inference does not do. */
static bool dropout_ratio_zero(const eng_tensor *ratio)
{
    return ratio && eng_numel(ratio) == 1 && eng_dtype_is_float(ratio->dtype) && eng_get_f(ratio, 0) == 0;
}

bool eng_dropout_noop(const cl_engine_model *m, const eng_node *n)
{
    if (n->n_out >= 2 && n->out[1] >= 0)
        return false; /* the mask is used */
    if (n->n_in < 3 || n->in[2] < 0)
        return true;
    const eng_tensor *tm = m->values[n->in[2]].konst;
    if (tm && eng_numel(tm) == 1 && eng_get_i(tm, 0) == 0)
        return true;
    return n->in[1] >= 0 && dropout_ratio_zero(m->values[n->in[1]].konst);
}

int eng_run_dropout(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    eng_tensor *tm = eng_in_plain(r, n, 2, err);
    if (tm && eng_numel(tm) != 1)
        return eng_node_err(err, CL_E_FORMAT, n, "training_mode must be a scalar");
    if (tm && eng_get_i(tm, 0) != 0 && !dropout_ratio_zero(eng_in_plain(r, n, 1, err)))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "training mode with a ratio other than 0 is not supported");
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

int eng_run_never(eng_run *r, eng_node *n, cl_err *err)
{
    return eng_node_err(err, CL_E_INTERNAL, n, "should have been folded at load time");
}

/* Constant: exactly one value attribute of a supported kind (graph.c turns the node into a constant). */
int eng_prep_constant(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    static const struct {
        const char *name;
        eng_attr_type type;
    } kinds[] = {{"value", ENG_ATTR_TENSOR}, {"value_float", ENG_ATTR_FLOAT}, {"value_int", ENG_ATTR_INT},
                 {"value_floats", ENG_ATTR_FLOATS}, {"value_ints", ENG_ATTR_INTS}};
    if (n->n_attrs != 1)
        return eng_node_err(err, CL_E_FORMAT, n, "needs exactly one value attribute");
    const eng_attr *a = &n->attrs[0];
    for (size_t i = 0; i < CL_ARRAY_LEN(kinds); i++)
        if (strcmp(a->name, kinds[i].name) == 0) {
            if (a->type != kinds[i].type)
                return eng_attr_err(err, CL_E_FORMAT, n, a->name, "has the wrong type");
            return 0;
        }
    return eng_node_err(err, CL_E_UNSUPPORTED, n, "attribute '%s' is not supported", a->name);
}

/* ---------------------------------------------------------------- shape rules */

int eng_infer_flatten(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    const eng_vshape *x = &c->in[0];
    eng_vshape *o = &c->out[0];
    int64_t ax = ((const eng_axis_attr *)c->n->attr)->axis;
    if (x->rank >= 0 && ax < 0)
        ax += x->rank;
    if (x->rank >= 0 && ax >= 0 && ax <= x->rank) {
        o->rank = 2;
        o->d[0] = o->d[1] = 1;
        for (int i = 0; i < x->rank; i++) {
            int64_t *t = &o->d[i >= ax];
            *t = (*t < 0 || x->d[i] < 0) ? ENG_DIM_UNKNOWN : *t * x->d[i];
        }
    }
    return 0;
}

int eng_infer_reshape(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    const eng_vshape *x = &c->in[0];
    eng_vshape *o = &c->out[0];
    const eng_tensor *s = eng_input_const(c->m, c->n, 1);
    const reshape_attr *at = c->n->attr;
    if (at->from_attr || !s || s->dtype != CL_ENGINE_DT_INT64 || s->rank != 1 || s->dims[0] > CL_ENGINE_MAX_RANK)
        return 0;
    o->rank = (int)s->dims[0];
    int infer = -1;
    for (int i = 0; i < o->rank; i++) {
        int64_t v = ((const int64_t *)s->data)[i];
        if (v == 0 && !at->allowzero)
            v = x->rank > i ? x->d[i] : ENG_DIM_UNKNOWN;
        if (v == -1)
            infer = i;
        o->d[i] = v < -1 ? ENG_DIM_UNKNOWN : v;
    }
    if (infer >= 0) {
        o->d[infer] = ENG_DIM_UNKNOWN;
        if (eng_shape_known(x)) {
            int64_t tot = eng_dims_numel(x->d, x->rank), known = 1;
            bool ok = tot >= 0;
            for (int i = 0; i < o->rank; i++)
                if (i != infer) {
                    if (o->d[i] <= 0)
                        ok = false;
                    else
                        known *= o->d[i];
                }
            if (ok && known > 0 && tot % known == 0)
                o->d[infer] = tot / known;
        }
    }
    return 0;
}

int eng_infer_concat(eng_infer_ctx *c, cl_err *err)
{
    const eng_node *n = c->n;
    const eng_vshape *x = &c->in[0];
    eng_vshape *o = &c->out[0];
    int64_t ax = ((const eng_axis_attr *)n->attr)->axis;
    if (x->rank <= 0)
        return 0;
    if (ax < 0)
        ax += x->rank;
    bool ok = ax >= 0 && ax < x->rank;
    *o = *x;
    for (int k = 1; ok && k < n->n_in; k++) {
        const eng_vshape *t = n->in[k] >= 0 ? &c->in[k] : NULL;
        if (!t || t->rank != x->rank) {
            ok = false;
            break;
        }
        o->d[ax] = o->d[ax] < 0 || t->d[ax] < 0 ? ENG_DIM_UNKNOWN : o->d[ax] + t->d[ax];
        for (int i = 0; i < x->rank; i++)
            if (i != ax && o->d[i] >= 0 && t->d[i] >= 0 && o->d[i] != t->d[i])
                return eng_node_err(err, CL_E_FORMAT, n, "input %d differs from input 0 outside the axis", k);
    }
    if (!ok)
        o->rank = -1;
    return 0;
}
