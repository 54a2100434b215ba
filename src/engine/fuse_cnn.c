/* engine/fuse_cnn.c — the graph rewrites for convolutional networks, run at load from graph.c:
 *   - decomposed HardSwish / HardSigmoid as exporters emit them (torch's x * relu6(x + 3) / 6 in its
 *     orders: Add(x,3) -> Clip(0,6) -> Div(6) | Mul(1/6) [-> Mul(x, .)], Add -> Clip -> Mul(x, .) ->
 *     Div(6), and x * HardSigmoid(x) with alpha 1/6) become one HardSwish / HardSigmoid node, which
 *     oneDNN runs on the blocked activation and which the Conv post-op pass below can absorb;
 *   - a Mul or Add by a constant scalar or per-channel tensor after a Conv is folded into the Conv's
 *     weights and bias;
 *   - Conv followed by HardSwish, HardSigmoid or Sigmoid becomes one Conv with the activation as a
 *     oneDNN post-op (squeeze-and-excitation blocks: GlobalAveragePool -> Conv+Relu -> Conv+HardSigmoid
 *     -> Mul, the Mul a broadcasting oneDNN binary on the blocked tensor).
 * Transformer patterns live in fuse.c; describe.c shows the post-ops these passes fused.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

/* ---------------------------------------------------------------- graph helpers */

static void count_uses(cl_engine_model *m)
{
    for (size_t v = 0; v < m->n_values; v++)
        m->values[v].n_consumers = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        const eng_node *n = &m->nodes[i];
        for (int k = 0; !n->dead && k < n->n_in; k++)
            if (n->in[k] >= 0)
                m->values[n->in[k]].n_consumers++;
    }
    for (size_t k = 0; k < m->n_outputs; k++)
        m->values[m->out_val[k]].n_consumers++;
}

static bool one_use(const cl_engine_model *m, int v)
{
    return v >= 0 && m->values[v].n_consumers == 1 && m->values[v].graph_output < 0;
}

/* The live node reading v (the first one). */
static eng_node *reader(cl_engine_model *m, int v)
{
    for (size_t i = 0; v >= 0 && i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        for (int k = 0; !n->dead && k < n->n_in; k++)
            if (n->in[k] == v)
                return n;
    }
    return NULL;
}

static eng_node *producer(cl_engine_model *m, int v)
{
    if (v < 0 || m->values[v].producer < 0)
        return NULL;
    eng_node *n = &m->nodes[m->values[v].producer];
    return n->dead ? NULL : n;
}

static bool is(const eng_node *n, const char *op)
{
    return n && !n->dead && strcmp(n->op_type, op) == 0;
}

/* The value of a constant float scalar (any shape of one element) at value v. */
static bool scalar_of(const cl_engine_model *m, int v, float *out)
{
    const eng_tensor *t = v >= 0 ? m->values[v].konst : NULL;
    if (!t || t->dtype != CL_ENGINE_DT_FLOAT || eng_numel(t) != 1)
        return false;
    *out = ((const float *)t->data)[0];
    return true;
}

static bool near(float a, float b)
{
    return fabsf(a - b) <= 1e-6f * fabsf(b);
}

/* Binary node n (Mul/Add/Div) with one input being the constant scalar c: the other input, else -1. */
static int other_if_const(const cl_engine_model *m, const eng_node *n, float c, bool commutative)
{
    if (!n || n->n_in != 2)
        return -1;
    float v;
    if (scalar_of(m, n->in[1], &v) && near(v, c))
        return n->in[0];
    if (commutative && scalar_of(m, n->in[0], &v) && near(v, c))
        return n->in[1];
    return -1;
}

/* Clip(0, 6) with constant bounds. */
static bool is_relu6(const cl_engine_model *m, const eng_node *n)
{
    if (!is(n, "Clip"))
        return false;
    const eng_clip_attr *at = n->attr;
    float lo = -INFINITY, hi = INFINITY;
    if (at && at->from_attrs) {
        lo = at->lo;
        hi = at->hi;
    } else {
        if ((n->n_in > 1 && n->in[1] >= 0 && !scalar_of(m, n->in[1], &lo)) ||
            (n->n_in > 2 && n->in[2] >= 0 && !scalar_of(m, n->in[2], &hi)))
            return false;
    }
    return lo == 0.0f && hi == 6.0f;
}

/* y / 6 or y * (1/6): the y, else -1. */
static int div6_of(const cl_engine_model *m, const eng_node *n)
{
    if (is(n, "Div"))
        return other_if_const(m, n, 6.0f, false);
    if (is(n, "Mul"))
        return other_if_const(m, n, 1.0f / 6.0f, true);
    return -1;
}

static const eng_op *op_named(const char *name)
{
    for (size_t i = 0; i < eng_ops_count; i++)
        if (strcmp(eng_ops[i].name, name) == 0)
            return &eng_ops[i];
    return NULL;
}

/* Node f becomes op `name` on input x (HardSigmoid: alpha a, beta b); the nodes in dead[] go. */
static int become(cl_engine_model *m, eng_node *f, const char *name, int x, double a, double b, eng_node **dead,
                  int n_dead, cl_err *err)
{
    const eng_op *op = op_named(name);
    char *type = strdup(name);
    eng_unary_attr *at = strcmp(name, "HardSigmoid") == 0 ? calloc(1, sizeof *at) : NULL;
    if (!op || !type || (strcmp(name, "HardSigmoid") == 0 && !at)) {
        free(type);
        free(at);
        return cl_err_nomem(err);
    }
    if (at) {
        at->a = a;
        at->b = b;
    }
    free(f->op_type);
    f->op_type = type;
    free(f->attr);
    f->attr = at;
    f->op = op;
    f->in[0] = x;
    f->n_in = 1;
    for (int i = 0; i < n_dead; i++)
        dead[i]->dead = true;
    (void)m;
    return 0;
}

/* ---------------------------------------------------------------- decomposed HardSwish / HardSigmoid */

/* Around one Clip(0,6) node: 1 when rewritten. */
static int hard_at(cl_engine_model *m, eng_node *clip, cl_err *err)
{
    if (!is_relu6(m, clip) || !one_use(m, clip->in[0]) || !one_use(m, clip->out[0]))
        return 0;
    eng_node *add = producer(m, clip->in[0]);
    if (!is(add, "Add"))
        return 0;
    int x = other_if_const(m, add, 3.0f, true);
    if (x < 0)
        return 0;
    eng_node *q = reader(m, clip->out[0]);
    int y = div6_of(m, q);
    if (y == clip->out[0]) { /* Add -> Clip -> /6: HardSigmoid, or HardSwish with a Mul(x, .) after */
        eng_node *mul = one_use(m, q->out[0]) ? reader(m, q->out[0]) : NULL;
        if (is(mul, "Mul") && mul->n_in == 2 &&
            ((mul->in[0] == x && mul->in[1] == q->out[0]) || (mul->in[1] == x && mul->in[0] == q->out[0])))
            return become(m, mul, "HardSwish", x, 0, 0, (eng_node *[]){add, clip, q}, 3, err) == 0 ? 1 : -1;
        return become(m, q, "HardSigmoid", x, 1.0 / 6.0, 0.5, (eng_node *[]){add, clip}, 2, err) == 0 ? 1 : -1;
    }
    if (is(q, "Mul") && q->n_in == 2 &&
        ((q->in[0] == x && q->in[1] == clip->out[0]) || (q->in[1] == x && q->in[0] == clip->out[0])) &&
        one_use(m, q->out[0])) { /* Add -> Clip -> Mul(x, .) -> /6 */
        eng_node *d = reader(m, q->out[0]);
        if (div6_of(m, d) == q->out[0])
            return become(m, d, "HardSwish", x, 0, 0, (eng_node *[]){add, clip, q}, 3, err) == 0 ? 1 : -1;
    }
    return 0;
}

/* Mul(x, HardSigmoid(x)) with alpha 1/6, beta 1/2: HardSwish. */
static int hswish_from_hsigmoid(cl_engine_model *m, eng_node *hs, cl_err *err)
{
    const eng_unary_attr *at = hs->attr;
    if (!is(hs, "HardSigmoid") || !at || !near((float)at->a, 1.0f / 6.0f) || !near((float)at->b, 0.5f) ||
        !one_use(m, hs->out[0]))
        return 0;
    int x = hs->in[0];
    eng_node *mul = reader(m, hs->out[0]);
    if (!is(mul, "Mul") || mul->n_in != 2 ||
        !((mul->in[0] == x && mul->in[1] == hs->out[0]) || (mul->in[1] == x && mul->in[0] == hs->out[0])))
        return 0;
    return become(m, mul, "HardSwish", x, 0, 0, (eng_node *[]){hs}, 1, err) == 0 ? 1 : -1;
}

/* ---------------------------------------------------------------- Conv followed by a constant Mul / Add */

static eng_tensor *const_f32(int rank, const int64_t *dims, cl_err *err)
{
    eng_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        cl_err_nomem(err);
        return NULL;
    }
    t->dtype = CL_ENGINE_DT_FLOAT;
    t->rank = rank;
    memcpy(t->dims, dims, sizeof(int64_t) * (size_t)rank);
    if (eng_tensor_alloc_const(t, err) != 0) {
        free(t);
        return NULL;
    }
    return t;
}

/* c broadcasts as a per-channel (or scalar) operand onto a rank-R output with oc channels at axis 1. */
static bool per_channel(const eng_tensor *c, int R, int64_t oc)
{
    if (!c || c->dtype != CL_ENGINE_DT_FLOAT || c->rank > R)
        return false;
    if (eng_numel(c) == 1)
        return true;
    for (int j = R - c->rank; j < R; j++) {
        int64_t d = c->dims[j - (R - c->rank)];
        if (j == 1 ? (d != oc && d != 1) : d != 1)
            return false;
    }
    return true;
}

/* A copy of Conv weights w ([oc, ...]) with output channel o scaled by cp[o] (cp[0] when scalar). w may be
 * borrowed from the model buffer (read-only, maybe unaligned: internal.h): copied, then scaled in the copy. */
static eng_tensor *scaled_weights(const eng_tensor *w, const float *cp, bool scalar, cl_err *err)
{
    eng_tensor *nw = const_f32(w->rank, w->dims, err);
    if (!nw)
        return NULL;
    int64_t oc = w->dims[0], per = eng_numel(w) / oc;
    float *nwp = nw->data;
    memcpy(nwp, w->data, sizeof(float) * (size_t)(per * oc));
    for (int64_t o = 0; o < oc; o++)
        for (int64_t j = 0; j < per; j++)
            nwp[o * per + j] *= cp[scalar ? 0 : o];
    return nw;
}

static int fold_affine(cl_engine_model *m, eng_node *conv, cl_err *err)
{
    if (!is(conv, "Conv") || conv->n_out != 1 || conv->post != ENG_POST_NONE || conv->sum_in >= 0 ||
        !one_use(m, conv->out[0]))
        return 0;
    const eng_tensor *w = m->values[conv->in[1]].konst;
    const eng_tensor *b = conv->n_in > 2 && conv->in[2] >= 0 ? m->values[conv->in[2]].konst : NULL;
    if (!w || w->dtype != CL_ENGINE_DT_FLOAT || w->rank < 3 || (conv->n_in > 2 && conv->in[2] >= 0 && !b))
        return 0;
    eng_node *q = reader(m, conv->out[0]);
    bool mul = is(q, "Mul");
    if (!(mul || is(q, "Add")) || q->n_in != 2 || q->in[0] == q->in[1])
        return 0;
    int cv = q->in[0] == conv->out[0] ? q->in[1] : q->in[0];
    int64_t oc = w->dims[0];
    const eng_tensor *c = m->values[cv].konst;
    if (!per_channel(c, w->rank, oc) || (b && eng_numel(b) != oc))
        return 0;
    const float *cp = c->data, *bp = b ? b->data : NULL;
    bool scalar = eng_numel(c) == 1;
    eng_tensor *nb = const_f32(1, (int64_t[]){oc}, err), *nw = NULL;
    if (!nb)
        return -1;
    for (int64_t o = 0; o < oc; o++) {
        float k = cp[scalar ? 0 : o], b0 = bp ? bp[o] : 0.0f;
        ((float *)nb->data)[o] = mul ? b0 * k : b0 + k;
    }
    if (mul && !(nw = scaled_weights(w, cp, scalar, err))) {
        eng_tensor_free(nb);
        free(nb);
        return -1;
    }
    int bv = eng_graph_new_const(m, conv->name, nb, err);
    if (bv < 0 && nw) {
        eng_tensor_free(nw);
        free(nw);
    }
    int wv = bv >= 0 && nw ? eng_graph_new_const(m, conv->name, nw, err) : conv->in[1];
    if (bv < 0 || wv < 0)
        return -1;
    if (conv->n_in < 3) {
        int *ni = realloc(conv->in, 3 * sizeof(int));
        if (!ni)
            return cl_err_nomem(err);
        conv->in = ni;
        conv->n_in = 3;
    }
    conv->in[1] = wv;
    conv->in[2] = bv;
    m->values[conv->out[0]].producer = -1;
    conv->out[0] = q->out[0];
    m->values[q->out[0]].producer = (int)(conv - m->nodes);
    q->dead = true;
    return 1;
}

int eng_fuse_cnn_patterns(cl_engine_model *m, cl_err *err)
{
    count_uses(m);
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *n = &m->nodes[m->order[oi]];
        if (n->dead)
            continue;
        int rc = is(n, "Clip") ? hard_at(m, n, err) : is(n, "HardSigmoid") ? hswish_from_hsigmoid(m, n, err) : 0;
        if (rc < 0)
            return -1;
        if (rc > 0)
            count_uses(m);
    }
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *n = &m->nodes[m->order[oi]];
        int rc;
        while ((rc = fold_affine(m, n, err)) > 0) /* Conv -> Mul -> Add: both */
            count_uses(m);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* ---------------------------------------------------------------- Conv + activation post-ops */

int eng_fuse_cnn_post(cl_engine_model *m, cl_err *err)
{
    (void)err;
    count_uses(m);
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *conv = &m->nodes[m->order[oi]];
        if (!is(conv, "Conv") || conv->n_out != 1 || conv->post != ENG_POST_NONE || conv->sum_in >= 0 ||
            !one_use(m, conv->out[0]))
            continue;
        eng_node *a = reader(m, conv->out[0]);
        if (is(a, "HardSwish")) {
            conv->post = ENG_POST_HSWISH;
        } else if (is(a, "Sigmoid")) {
            conv->post = ENG_POST_SIGMOID;
        } else if (is(a, "HardSigmoid") && a->attr) {
            const eng_unary_attr *at = a->attr;
            conv->post = ENG_POST_HSIGMOID;
            conv->post_lo = (float)at->a;
            conv->post_hi = (float)at->b;
        } else {
            continue;
        }
        m->values[conv->out[0]].producer = -1;
        conv->out[0] = a->out[0];
        m->values[a->out[0]].producer = (int)(conv - m->nodes);
        a->dead = true;
        count_uses(m);
    }
    return 0;
}
