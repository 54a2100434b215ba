/* engine/shape.c — static shape inference at load time: the driver and the rules several operators share.
 * Starting from the declared input shapes (dynamic dims are -1) and the constants, element types and
 * shapes are propagated through the prepared graph in topological order, each node by its descriptor's
 * infer (the per-operator rules live with their kernels in ops/ and dnnl/). This catches inconsistent
 * models at load time (e.g. a Conv whose weights do not match its input channels, incompatible
 * broadcasts, a Gemm with mismatched inner dims) and fills in the signature's output shapes when the
 * model does not declare them. Operators without a rule give "unknown" (rank -1) and are checked at run
 * time.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

const eng_tensor *eng_input_const(const cl_engine_model *m, const eng_node *n, int k)
{
    return k < n->n_in && n->in[k] >= 0 ? m->values[n->in[k]].konst : NULL;
}

int eng_shape_broadcast(const eng_node *n, const eng_vshape *a, const eng_vshape *b, eng_vshape *o, cl_err *err)
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
        else if (x == ENG_DIM_UNKNOWN || y == ENG_DIM_UNKNOWN)
            o->d[i] = x == ENG_DIM_UNKNOWN ? y : x;
        else if (x != y)
            return eng_node_err(err, CL_E_FORMAT, n, "input shapes %s and %s cannot be broadcast",
                                eng_dims_str(a->d, a->rank, (char[128]){0}, 128),
                                eng_dims_str(b->d, b->rank, (char[128]){0}, 128));
        else
            o->d[i] = x;
    }
    return 0;
}

bool eng_shape_known(const eng_vshape *s)
{
    if (s->rank < 0)
        return false;
    for (int i = 0; i < s->rank; i++)
        if (s->d[i] < 0)
            return false;
    return true;
}

int eng_infer_same(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    c->out[0] = c->in[0];
    return 0;
}

int eng_infer_broadcast(eng_infer_ctx *c, cl_err *err)
{
    eng_vshape o = c->in[0];
    for (int k = 1; k < c->n->n_in; k++) {
        eng_vshape t;
        if (eng_shape_broadcast(c->n, &o, &c->in[k], &t, err) != 0)
            return -1;
        o.rank = t.rank;
        memcpy(o.d, t.d, sizeof o.d);
    }
    c->out[0] = o;
    return 0;
}

static int infer_node(cl_engine_model *m, const eng_node *n, eng_vshape *vs, cl_err *err)
{
    eng_vshape fixed[8], *in = fixed;
    int nin = n->n_in > 4 ? n->n_in : 4;
    if (nin > (int)CL_ARRAY_LEN(fixed) && !(in = malloc((size_t)nin * sizeof *in)))
        return cl_err_nomem(err);
    for (int k = 0; k < nin; k++) {
        in[k] = (eng_vshape){.rank = -1};
        if (k < n->n_in && n->in[k] >= 0)
            in[k] = vs[n->in[k]];
    }
    eng_vshape out[2] = {{.dt = in[0].dt, .rank = -1}, {.rank = -1}};
    int rc = 0;
    if (n->op->infer) {
        eng_infer_ctx c = {.m = m, .n = n, .in = in, .out = out};
        rc = n->op->infer(&c, err);
    } else {
        out[0].dt = CL_ENGINE_DT_UNDEFINED; /* no rule: unknown; the kernel checks at run time */
    }
    if (in != fixed)
        free(in);
    for (int k = 0; rc == 0 && k < n->n_out; k++) {
        if (n->out[k] < 0)
            continue;
        vs[n->out[k]] = k == 0 ? out[0] : (eng_vshape){.rank = -1};
    }
    return rc;
}

int eng_shape_infer(cl_engine_model *m, cl_err *err)
{
    eng_vshape *vs = calloc(m->n_values + 1, sizeof *vs);
    if (!vs)
        return cl_err_nomem(err);
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
        eng_vshape *s = &vs[m->in_val[i]];
        s->dt = m->in_info[i].dtype;
        s->rank = m->in_info[i].rank;
        memcpy(s->d, m->in_info[i].dims, sizeof s->d);
    }
    int rc = 0;
    for (size_t oi = 0; oi < m->n_order && rc == 0; oi++)
        rc = infer_node(m, &m->nodes[m->order[oi]], vs, err);
    for (size_t k = 0; rc == 0 && k < m->n_outputs; k++) {
        cl_engine_io_info *info = &m->out_info[k];
        const eng_vshape *s = &vs[m->out_val[k]];
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
