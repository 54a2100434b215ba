/* engine/shape.c — static shape inference at load time. Starting from the declared input shapes
 * (dynamic dims are -1) and the constants, element types and shapes are propagated through the
 * prepared graph in topological order for the common operators. This catches inconsistent models at
 * load time (e.g. a Conv whose weights do not match its input channels, incompatible broadcasts,
 * a Gemm with mismatched inner dims) and fills in the signature's output shapes when the model does
 * not declare them. Operators without a rule give "unknown" (rank -1) and are checked at run time.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

typedef struct vshape {
    cl_engine_dtype dt;
    int rank; /* -1 unknown */
    int64_t d[CL_ENGINE_MAX_RANK];
} vshape;

#define UNKNOWN_DIM (-1)

static bool is(const eng_node *n, const char *op)
{
    return strcmp(n->op_type, op) == 0;
}

static const eng_tensor *konst(const cl_engine_model *m, const eng_node *n, int k)
{
    return k < n->n_in && n->in[k] >= 0 ? m->values[n->in[k]].konst : NULL;
}

static int broadcast(const eng_node *n, const vshape *a, const vshape *b, vshape *o, cl_err *err)
{
    if (a->rank < 0 || b->rank < 0) {
        o->rank = -1;
        return 0;
    }
    o->rank = a->rank > b->rank ? a->rank : b->rank;
    for (int i = 0; i < o->rank; i++) {
        int ia = i - (o->rank - a->rank), ib = i - (o->rank - b->rank);
        int64_t x = ia >= 0 ? a->d[ia] : 1, y = ib >= 0 ? b->d[ib] : 1;
        if (x == 1)
            o->d[i] = y;
        else if (y == 1)
            o->d[i] = x;
        else if (x == UNKNOWN_DIM || y == UNKNOWN_DIM)
            o->d[i] = x == UNKNOWN_DIM ? y : x;
        else if (x != y)
            return eng_node_err(err, CL_E_FORMAT, n, "input shapes %s and %s cannot be broadcast",
                                eng_dims_str(a->d, a->rank, (char[128]){0}, 128),
                                eng_dims_str(b->d, b->rank, (char[128]){0}, 128));
        else
            o->d[i] = x;
    }
    return 0;
}

static bool all_known(const vshape *s)
{
    if (s->rank < 0)
        return false;
    for (int i = 0; i < s->rank; i++)
        if (s->d[i] < 0)
            return false;
    return true;
}

/* Conv and pooling output size along one spatial dim (-1 when unknown). */
static int64_t window_out(const eng_node *n, int64_t in, int i, int nsp, int64_t k, bool ceil_mode)
{
    if (in < 0)
        return UNKNOWN_DIM;
    size_t cs, cd, cp;
    const int64_t *st = eng_attr_ints(n, "strides", &cs), *dl = eng_attr_ints(n, "dilations", &cd),
                  *pads = eng_attr_ints(n, "pads", &cp);
    int64_t s = st && (int)cs == nsp ? st[i] : 1, d = dl && (int)cd == nsp ? dl[i] : 1;
    int64_t pl = pads && (int)cp == 2 * nsp ? pads[i] : 0, pr = pads && (int)cp == 2 * nsp ? pads[i + nsp] : 0;
    if (s < 1 || d < 1 || k < 1 || s > 65536 || d > 65536 || k > 65536 || pl < 0 || pr < 0 || pl > 65536 || pr > 65536)
        return UNKNOWN_DIM; /* the kernel reports the error */
    const char *ap = eng_attr_s(n, "auto_pad", "NOTSET");
    if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0)
        return (in + s - 1) / s;
    if (strcmp(ap, "VALID") == 0)
        pl = pr = 0;
    int64_t span = in + pl + pr - ((k - 1) * d + 1);
    if (span < 0)
        return UNKNOWN_DIM;
    int64_t o = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
    if (ceil_mode && (o - 1) * s >= in + pl)
        o--;
    return o;
}

static int infer_node(cl_engine_model *m, const eng_node *n, vshape *vs, cl_err *err)
{
    vshape in[4] = {{0}};
    for (int k = 0; k < 4; k++) {
        in[k].rank = -1;
        if (k < n->n_in && n->in[k] >= 0)
            in[k] = vs[n->in[k]];
    }
    vshape o = {.dt = in[0].dt, .rank = -1};
    const vshape *x = &in[0];
    if (is(n, "Relu") || is(n, "Sigmoid") || is(n, "Tanh") || is(n, "Clip") || is(n, "Identity") ||
        is(n, "Dropout") || is(n, "Softmax") || is(n, "LogSoftmax") || is(n, "Erf") || is(n, "Exp") ||
        is(n, "Sqrt") || is(n, "Neg") || is(n, "Abs") || is(n, "LeakyRelu") || is(n, "HardSigmoid") ||
        is(n, "HardSwish") || is(n, "BatchNormalization") || is(n, "LayerNormalization") ||
        is(n, "InstanceNormalization") || is(n, "Gelu") || is(n, "Reciprocal") || is(n, "Log")) {
        o = *x;
    } else if (is(n, "Add") || is(n, "Sub") || is(n, "Mul") || is(n, "Div") || is(n, "Pow") || is(n, "Max") ||
               is(n, "Min") || is(n, "Sum") || is(n, "Mean") || is(n, "Equal") || is(n, "Less") ||
               is(n, "Greater") || is(n, "Where")) {
        o = *x;
        for (int k = 1; k < n->n_in && k < 4; k++) {
            vshape t;
            if (broadcast(n, &o, &in[k], &t, err) != 0)
                return -1;
            o.rank = t.rank;
            memcpy(o.d, t.d, sizeof o.d);
        }
        if (is(n, "Equal") || is(n, "Less") || is(n, "Greater"))
            o.dt = CL_ENGINE_DT_BOOL;
        if (is(n, "Where"))
            o.dt = in[1].dt;
    } else if (is(n, "Conv")) {
        const vshape *w = &in[1];
        if (x->rank >= 3 && w->rank == x->rank) {
            int64_t group = eng_attr_i(n, "group", 1);
            if (x->d[1] >= 0 && w->d[1] >= 0 && group >= 1 && w->d[1] * group != x->d[1])
                return eng_node_err(err, CL_E_FORMAT, n, "weights %s expect %lld input channels, the input %s has %lld",
                                    eng_dims_str(w->d, w->rank, (char[128]){0}, 128), (long long)(w->d[1] * group),
                                    eng_dims_str(x->d, x->rank, (char[128]){0}, 128), (long long)x->d[1]);
            o.rank = x->rank;
            o.d[0] = x->d[0];
            o.d[1] = w->d[0];
            for (int i = 0; i < x->rank - 2; i++)
                o.d[2 + i] = window_out(n, x->d[2 + i], i, x->rank - 2, w->d[2 + i], false);
            if (n->sum_in >= 0) { /* a fused residual Add: the result broadcasts with the other input */
                vshape t;
                if (broadcast(n, &o, &in[n->sum_in], &t, err) != 0)
                    return -1;
                o.rank = t.rank;
                memcpy(o.d, t.d, sizeof o.d);
            }
        }
    } else if (is(n, "MaxPool") || is(n, "AveragePool")) {
        size_t c;
        const int64_t *ks = eng_attr_ints(n, "kernel_shape", &c);
        if (x->rank >= 3 && ks && (int)c == x->rank - 2) {
            o.rank = x->rank;
            o.d[0] = x->d[0];
            o.d[1] = x->d[1];
            for (int i = 0; i < x->rank - 2; i++)
                o.d[2 + i] = window_out(n, x->d[2 + i], i, x->rank - 2, ks[i], eng_attr_i(n, "ceil_mode", 0) != 0);
        }
    } else if (is(n, "GlobalAveragePool") || is(n, "GlobalMaxPool")) {
        if (x->rank >= 3) {
            o = *x;
            for (int i = 2; i < x->rank; i++)
                o.d[i] = 1;
        }
    } else if (is(n, "Flatten")) {
        int64_t ax = eng_attr_i(n, "axis", 1);
        if (x->rank >= 0 && ax < 0)
            ax += x->rank;
        if (x->rank >= 0 && ax >= 0 && ax <= x->rank) {
            o.rank = 2;
            o.d[0] = o.d[1] = 1;
            for (int i = 0; i < x->rank; i++) {
                int64_t *t = &o.d[i >= ax];
                *t = (*t < 0 || x->d[i] < 0) ? UNKNOWN_DIM : *t * x->d[i];
            }
        }
    } else if (is(n, "Gemm")) {
        const vshape *b = &in[1];
        if (x->rank == 2 && b->rank == 2) {
            bool ta = eng_attr_i(n, "transA", 0), tb = eng_attr_i(n, "transB", 0);
            int64_t k1 = x->d[ta ? 0 : 1], k2 = b->d[tb ? 1 : 0];
            if (k1 >= 0 && k2 >= 0 && k1 != k2)
                return eng_node_err(err, CL_E_FORMAT, n, "A %s and B %s do not match",
                                    eng_dims_str(x->d, 2, (char[64]){0}, 64), eng_dims_str(b->d, 2, (char[64]){0}, 64));
            o.rank = 2;
            o.d[0] = x->d[ta ? 1 : 0];
            o.d[1] = b->d[tb ? 0 : 1];
        }
    } else if (is(n, "MatMul")) {
        const vshape *b = &in[1];
        if (x->rank >= 2 && b->rank >= 2) {
            int64_t k1 = x->d[x->rank - 1], k2 = b->d[b->rank - 2];
            if (k1 >= 0 && k2 >= 0 && k1 != k2)
                return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s cannot be multiplied",
                                    eng_dims_str(x->d, x->rank, (char[128]){0}, 128),
                                    eng_dims_str(b->d, b->rank, (char[128]){0}, 128));
            vshape xa = {.rank = x->rank - 2}, ba = {.rank = b->rank - 2}, t;
            memcpy(xa.d, x->d, sizeof(int64_t) * (size_t)xa.rank);
            memcpy(ba.d, b->d, sizeof(int64_t) * (size_t)ba.rank);
            if (broadcast(n, &xa, &ba, &t, err) != 0)
                return -1;
            if (t.rank + 2 <= CL_ENGINE_MAX_RANK) {
                o.rank = t.rank + 2;
                memcpy(o.d, t.d, sizeof(int64_t) * (size_t)t.rank);
                o.d[t.rank] = x->d[x->rank - 2];
                o.d[t.rank + 1] = b->d[b->rank - 1];
            }
        }
    } else if (is(n, "Reshape")) {
        const eng_tensor *s = konst(m, n, 1);
        if (s && (s->dtype == CL_ENGINE_DT_INT64) && s->rank == 1 && s->dims[0] <= CL_ENGINE_MAX_RANK) {
            o.rank = (int)s->dims[0];
            int infer = -1;
            for (int i = 0; i < o.rank; i++) {
                int64_t v = ((const int64_t *)s->data)[i];
                if (v == 0 && !eng_attr_i(n, "allowzero", 0))
                    v = x->rank > i ? x->d[i] : UNKNOWN_DIM;
                if (v == -1)
                    infer = i;
                o.d[i] = v < -1 ? UNKNOWN_DIM : v;
            }
            if (infer >= 0) {
                o.d[infer] = UNKNOWN_DIM;
                if (all_known(x)) {
                    int64_t tot = eng_dims_numel(x->d, x->rank), known = 1;
                    bool ok = tot >= 0;
                    for (int i = 0; i < o.rank; i++)
                        if (i != infer) {
                            if (o.d[i] <= 0)
                                ok = false;
                            else
                                known *= o.d[i];
                        }
                    if (ok && known > 0 && tot % known == 0)
                        o.d[infer] = tot / known;
                }
            }
        }
    } else if (is(n, "Concat")) {
        int64_t ax = eng_attr_i(n, "axis", 0);
        if (x->rank > 0) {
            if (ax < 0)
                ax += x->rank;
            bool ok = ax >= 0 && ax < x->rank;
            o = *x;
            for (int k = 1; ok && k < n->n_in; k++) {
                const vshape *t = n->in[k] >= 0 ? &vs[n->in[k]] : NULL;
                if (!t || t->rank != x->rank) {
                    ok = false;
                    break;
                }
                o.d[ax] = o.d[ax] < 0 || t->d[ax] < 0 ? UNKNOWN_DIM : o.d[ax] + t->d[ax];
                for (int i = 0; i < x->rank; i++)
                    if (i != ax && o.d[i] >= 0 && t->d[i] >= 0 && o.d[i] != t->d[i])
                        return eng_node_err(err, CL_E_FORMAT, n, "input %d differs from input 0 outside the axis", k);
            }
            if (!ok)
                o.rank = -1;
        }
    } else if (is(n, "Shape")) {
        o.dt = CL_ENGINE_DT_INT64;
        if (x->rank >= 0 && !eng_attr_find(n, "start") && !eng_attr_find(n, "end")) {
            o.rank = 1;
            o.d[0] = x->rank;
        }
    } else if (is(n, "Cast")) {
        o = *x;
        o.dt = (cl_engine_dtype)eng_attr_i(n, "to", 0);
    } else {
        /* no rule: unknown; the kernel checks at run time */
        o.dt = CL_ENGINE_DT_UNDEFINED;
    }
    for (int k = 0; k < n->n_out; k++) {
        if (n->out[k] < 0)
            continue;
        if (k == 0)
            vs[n->out[k]] = o;
        else
            vs[n->out[k]] = (vshape){.rank = -1};
    }
    return 0;
}

int eng_shape_infer(cl_engine_model *m, cl_err *err)
{
    vshape *vs = calloc(m->n_values + 1, sizeof *vs);
    if (!vs)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    for (size_t v = 0; v < m->n_values; v++) {
        vs[v].rank = -1;
        const eng_tensor *k = m->values[v].konst;
        if (k) {
            vs[v].dt = k->dtype;
            vs[v].rank = k->rank;
            memcpy(vs[v].d, k->dims, sizeof vs[v].d);
        }
    }
    for (size_t i = 0; i < m->n_inputs; i++) {
        vshape *s = &vs[m->in_val[i]];
        s->dt = m->in_info[i].dtype;
        s->rank = m->in_info[i].rank;
        memcpy(s->d, m->in_info[i].dims, sizeof s->d);
    }
    int rc = 0;
    for (size_t oi = 0; oi < m->n_order && rc == 0; oi++)
        rc = infer_node(m, &m->nodes[m->order[oi]], vs, err);
    for (size_t k = 0; rc == 0 && k < m->n_outputs; k++) {
        cl_engine_io_info *info = &m->out_info[k];
        const vshape *s = &vs[m->out_val[k]];
        if (s->rank < 0)
            continue;
        if (info->rank < 0) {
            info->rank = s->rank;
            memcpy(info->dims, s->d, sizeof info->dims);
        } else if (info->rank == s->rank) {
            for (int i = 0; i < s->rank; i++)
                if (info->dims[i] < 0 && s->d[i] >= 0)
                    info->dims[i] = s->d[i];
        }
    }
    free(vs);
    return rc;
}
