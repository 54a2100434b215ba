/* engine/fuse.c — the transformer fusion passes, run once at load (eng_graph_prepare, after constant
 * folding and the Conv fusions; dead nodes are removed and the order recomputed afterwards):
 *   1. LayerNorm decomposed as exporters write it, ReduceMean -> Sub -> Pow(2) -> ReduceMean -> Add(eps)
 *      -> Sqrt -> Div (-> Mul(gamma)) (-> Add(beta)) over the last axis: one LayerNormalization node.
 *   2. GELU in its Erf form, x * 0.5 * (1 + Erf(x / sqrt 2)) (Div by sqrt 2 or Mul by 1/sqrt 2, the three
 *      multiplications in any association), and its Tanh form, 0.5 * x * (1 + Tanh(sqrt(2/pi) * (x +
 *      0.044715 * x^3))): one GELU node (dnnl/norm.c) each.
 *   3. MatMul and Gemm (transA 0, alpha and beta 1) with what follows them into one fused matmul
 *      (eng_mm_attr, run on oneDNN by dnnl/matmul.c): a scalar Mul/Div on either input or on the product
 *      (attention's 1/sqrt(d) scale: eltwise linear), Add of a constant [N] vector right after the product
 *      (bias), any other Add (attention mask, residual, bias after a scale: binary add post-op), Relu and
 *      GELU (eltwise post-ops). Only chains whose intermediate values have no other use are fused.
 * The passes rewrite nodes in place (the first node of a chain becomes the fused node and produces the
 * chain's last value; the others are marked dead) and leave every other node alone.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

/* ---------------------------------------------------------------- graph helpers */

static bool is_op(const eng_node *n, const char *name)
{
    return n && !n->dead && n->op && strcmp(n->op->name, name) == 0;
}

static eng_node *producer(cl_engine_model *m, int v)
{
    if (v < 0 || m->values[v].producer < 0)
        return NULL;
    eng_node *n = &m->nodes[m->values[v].producer];
    return n->dead ? NULL : n;
}

static const eng_tensor *konst(const cl_engine_model *m, int v)
{
    const eng_tensor *t = v >= 0 ? m->values[v].konst : NULL;
    return t && t->dtype == CL_ENGINE_DT_FLOAT ? t : NULL;
}

static bool scalar(const cl_engine_model *m, int v, float *out)
{
    const eng_tensor *t = konst(m, v);
    if (!t || eng_numel(t) != 1)
        return false;
    *out = ((const float *)t->data)[0];
    return true;
}

static bool near(float a, float b)
{
    return fabsf(a - b) <= 1e-5f * fmaxf(1.0f, fabsf(b));
}

/* For a binary node n with input v: the other input (-1 if n does not take v). */
static int other(const eng_node *n, int v)
{
    if (n->n_in != 2)
        return -1;
    return n->in[0] == v ? n->in[1] : n->in[1] == v ? n->in[0] : -1;
}

/* head takes over tail's output (tail dies). */
static void take_output(cl_engine_model *m, eng_node *head, eng_node *tail)
{
    m->values[head->out[0]].producer = -1;
    head->out[0] = tail->out[0];
    m->values[tail->out[0]].producer = (int)(head - m->nodes);
    tail->dead = true;
}

/* Turns n into a node of op `op` named `type` with inputs ins[0..n_in), compiled attributes attr. */
static int rebind(eng_node *n, const eng_op *op, const char *type, const int *ins, int n_in, void *attr, cl_err *err)
{
    char *t = strdup(type);
    int *in = malloc(sizeof(int) * (size_t)(n_in ? n_in : 1));
    if (!t || !in) {
        free(t);
        free(in);
        free(attr);
        return cl_err_nomem(err);
    }
    memcpy(in, ins, sizeof(int) * (size_t)n_in);
    free(n->in);
    n->in = in;
    n->n_in = n_in;
    free(n->op_type);
    n->op_type = t;
    free(n->attr);
    n->attr = attr;
    n->op = op;
    return 0;
}

/* A ReduceMean over the last axis only, keepdims on (axes as attribute, or a constant input at 18). */
static bool mean_last(const cl_engine_model *m, const eng_node *n)
{
    if (!is_op(n, "ReduceMean"))
        return false;
    const eng_attr *kd = eng_attr_find(n, "keepdims");
    if (kd && (kd->type != ENG_ATTR_INT || kd->i != 1))
        return false;
    if (n->n_in >= 2 && n->in[1] >= 0) {
        const eng_tensor *t = m->values[n->in[1]].konst;
        return t && t->dtype == CL_ENGINE_DT_INT64 && eng_numel(t) == 1 && ((const int64_t *)t->data)[0] == -1;
    }
    const eng_attr *ax = eng_attr_find(n, "axes");
    return ax && ax->type == ENG_ATTR_INTS && ax->n_ints == 1 && ax->ints[0] == -1;
}

/* ---------------------------------------------------------------- 1. LayerNorm */

static int fuse_layernorm(cl_engine_model *m, eng_node *r1, cl_err *err)
{
    if (!mean_last(m, r1) || r1->in[0] < 0)
        return 0;
    int x = r1->in[0];
    eng_node *sub = eng_graph_sole_consumer(m, r1->out[0]);
    if (!is_op(sub, "Sub") || sub->in[0] != x || sub->in[1] != r1->out[0])
        return 0;
    int d = sub->out[0];
    if (m->values[d].n_consumers != 2 || m->values[d].graph_output >= 0)
        return 0;
    eng_node *pw = NULL, *dv = NULL;
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *q = &m->nodes[i];
        if (q->dead || q->n_in != 2)
            continue;
        float e;
        if (is_op(q, "Pow") && q->in[0] == d && scalar(m, q->in[1], &e) && e == 2.0f)
            pw = q;
        else if (is_op(q, "Div") && q->in[0] == d)
            dv = q;
    }
    if (!pw || !dv)
        return 0;
    eng_node *r2 = eng_graph_sole_consumer(m, pw->out[0]);
    if (!mean_last(m, r2))
        return 0;
    eng_node *ad = eng_graph_sole_consumer(m, r2->out[0]);
    float eps;
    if (!is_op(ad, "Add") || !scalar(m, other(ad, r2->out[0]), &eps))
        return 0;
    eng_node *sq = eng_graph_sole_consumer(m, ad->out[0]);
    if (!is_op(sq, "Sqrt") || eng_graph_sole_consumer(m, sq->out[0]) != dv || dv->in[1] != sq->out[0])
        return 0;
    /* optional affine part: Mul by a constant vector, Add of a constant vector */
    eng_node *tail = dv, *mul = NULL, *add = NULL;
    int gamma = -1, beta = -1;
    eng_node *c = eng_graph_sole_consumer(m, dv->out[0]);
    const eng_tensor *t;
    /* (a [1] vector broadcasts as a scalar, which LayerNormalization's scale cannot: left unfused) */
    if (is_op(c, "Mul") && (t = konst(m, other(c, dv->out[0]))) && t->rank == 1 && t->dims[0] > 1) {
        mul = c;
        gamma = other(c, dv->out[0]);
        tail = c;
        c = eng_graph_sole_consumer(m, c->out[0]);
    }
    if (is_op(c, "Add") && (t = konst(m, other(c, tail->out[0]))) && t->rank == 1 && t->dims[0] > 1) {
        add = c;
        beta = other(c, tail->out[0]);
        tail = c;
    }
    if (gamma < 0 && beta < 0)
        return 0; /* the normalized size is unknown here: left as it is */
    if (gamma < 0) { /* LayerNormalization needs a scale: ones of the shift's size */
        eng_tensor *ones = calloc(1, sizeof *ones);
        if (!ones)
            return cl_err_nomem(err);
        *ones = (eng_tensor){.dtype = CL_ENGINE_DT_FLOAT, .rank = 1, .dims = {m->values[beta].konst->dims[0]}};
        if (eng_tensor_alloc_const(ones, err) != 0) {
            free(ones);
            return -1;
        }
        for (int64_t i = 0; i < ones->dims[0]; i++)
            ((float *)ones->data)[i] = 1.0f;
        char name[300];
        snprintf(name, sizeof name, "%.200s/cloister_ln_scale", r1->name);
        int v = eng_value_get(m, name, err);
        if (v < 0 || m->values[v].konst || m->values[v].producer >= 0) {
            eng_tensor_free(ones);
            free(ones);
            return v < 0 ? -1 : 0;
        }
        m->values[v].konst = ones;
        gamma = v;
    }
    eng_norm_attr *at = calloc(1, sizeof *at);
    if (!at)
        return cl_err_nomem(err);
    at->epsilon = eps;
    at->axis = -1;
    int ins[3] = {x, gamma, beta};
    /* the descriptor of LayerNormalization as ONNX 17 defines it, whatever the model's own opset */
    const eng_op *ln = eng_op_find("LayerNormalization", 17, r1->name, err);
    if (!ln) {
        free(at);
        return -1;
    }
    if (rebind(r1, ln, "LayerNormalization", ins, beta >= 0 ? 3 : 2, at, err) != 0)
        return -1;
    take_output(m, r1, tail);
    sub->dead = pw->dead = r2->dead = ad->dead = sq->dead = dv->dead = true;
    if (mul)
        mul->dead = true;
    if (add)
        add->dead = true;
    eng_graph_count_consumers(m);
    return 1;
}

/* ---------------------------------------------------------------- 2. GELU */

/* The common tail of both forms: a = 1 + f(x); y = x * a * 0.5 in any association. The last node, with
 * the dead ones in dead[] (count in *nd), or NULL. */
static eng_node *gelu_tail(cl_engine_model *m, int x, int a, eng_node **dead, int *nd)
{
    eng_node *c1 = eng_graph_sole_consumer(m, a);
    if (!is_op(c1, "Mul"))
        return NULL;
    int o1 = other(c1, a);
    float h;
    if (o1 == x) { /* (x * a) * 0.5 */
        eng_node *c2 = eng_graph_sole_consumer(m, c1->out[0]);
        if (!is_op(c2, "Mul") || !scalar(m, other(c2, c1->out[0]), &h) || !near(h, 0.5f))
            return NULL;
        dead[(*nd)++] = c1;
        return c2;
    }
    if (scalar(m, o1, &h) && near(h, 0.5f)) { /* x * (a * 0.5) */
        eng_node *c2 = eng_graph_sole_consumer(m, c1->out[0]);
        if (!is_op(c2, "Mul") || other(c2, c1->out[0]) != x)
            return NULL;
        dead[(*nd)++] = c1;
        return c2;
    }
    eng_node *hx = producer(m, o1); /* (x * 0.5) * a */
    if (is_op(hx, "Mul") && eng_graph_sole_consumer(m, o1) == c1 && other(hx, x) >= 0 && scalar(m, other(hx, x), &h) &&
        near(h, 0.5f)) {
        dead[(*nd)++] = hx;
        return c1;
    }
    return NULL;
}

static int make_gelu(cl_engine_model *m, eng_node *head, int x, bool tanh_form, eng_node *tail, eng_node **dead,
                     int nd, cl_err *err)
{
    int ins[1] = {x};
    if (rebind(head, tanh_form ? &eng_op_fused_gelu_tanh : &eng_op_fused_gelu_erf, tanh_form ? "Gelu(tanh)" : "Gelu(erf)",
               ins, 1, NULL, err) != 0)
        return -1;
    take_output(m, head, tail);
    for (int i = 0; i < nd; i++)
        if (dead[i] != head)
            dead[i]->dead = true;
    eng_graph_count_consumers(m);
    return 1;
}

static int fuse_gelu_erf(cl_engine_model *m, eng_node *erf, cl_err *err)
{
    if (!is_op(erf, "Erf"))
        return 0;
    eng_node *sc = producer(m, erf->in[0]);
    float c;
    if (!sc || sc->n_in != 2 || eng_graph_sole_consumer(m, sc->out[0]) != erf || !scalar(m, sc->in[1], &c))
        return 0;
    bool ok = (is_op(sc, "Div") && near(c, 1.41421356f)) || (is_op(sc, "Mul") && near(c, 0.70710678f));
    if (!ok)
        return 0;
    int x = sc->in[0];
    eng_node *one = eng_graph_sole_consumer(m, erf->out[0]);
    if (!is_op(one, "Add") || !scalar(m, other(one, erf->out[0]), &c) || c != 1.0f)
        return 0;
    eng_node *dead[8] = {erf, one};
    int nd = 2;
    eng_node *tail = gelu_tail(m, x, one->out[0], dead, &nd);
    return tail ? make_gelu(m, sc, x, false, tail, dead, nd, err) : 0;
}

static int fuse_gelu_tanh(cl_engine_model *m, eng_node *th, cl_err *err)
{
    if (!is_op(th, "Tanh"))
        return 0;
    eng_node *sc = producer(m, th->in[0]); /* sqrt(2/pi) * inner */
    float c;
    if (!is_op(sc, "Mul") || eng_graph_sole_consumer(m, sc->out[0]) != th)
        return 0;
    int inner = -1;
    if (scalar(m, sc->in[0], &c))
        inner = sc->in[1];
    else if (scalar(m, sc->in[1], &c))
        inner = sc->in[0];
    if (inner < 0 || !near(c, 0.79788456f))
        return 0;
    eng_node *ad = producer(m, inner); /* x + 0.044715 * x^3 */
    if (!is_op(ad, "Add") || eng_graph_sole_consumer(m, inner) != sc)
        return 0;
    for (int side = 0; side < 2; side++) {
        int x = ad->in[side], cube_scaled = ad->in[1 - side];
        eng_node *m3 = producer(m, cube_scaled);
        if (!is_op(m3, "Mul") || eng_graph_sole_consumer(m, cube_scaled) != ad)
            continue;
        int cube = -1;
        if (scalar(m, m3->in[0], &c))
            cube = m3->in[1];
        else if (scalar(m, m3->in[1], &c))
            cube = m3->in[0];
        if (cube < 0 || !near(c, 0.044715f))
            continue;
        eng_node *p3 = producer(m, cube), *sq = NULL;
        float e;
        if (!p3 || eng_graph_sole_consumer(m, cube) != m3)
            continue;
        if (is_op(p3, "Pow") && p3->in[0] == x && scalar(m, p3->in[1], &e) && e == 3.0f) {
            /* x^3 */
        } else if (is_op(p3, "Mul") && other(p3, x) >= 0 && (sq = producer(m, other(p3, x))) && is_op(sq, "Mul") &&
                   sq->in[0] == x && sq->in[1] == x && eng_graph_sole_consumer(m, sq->out[0]) == p3) {
            /* x * (x * x) */
        } else {
            continue;
        }
        eng_node *one = eng_graph_sole_consumer(m, th->out[0]);
        if (!is_op(one, "Add") || !scalar(m, other(one, th->out[0]), &c) || c != 1.0f)
            return 0;
        eng_node *dead[10] = {th, one, sc, ad, m3};
        int nd = 5;
        if (sq)
            dead[nd++] = sq;
        eng_node *tail = gelu_tail(m, x, one->out[0], dead, &nd);
        return tail ? make_gelu(m, p3, x, true, tail, dead, nd, err) : 0;
    }
    return 0;
}

/* ---------------------------------------------------------------- 3. MatMul / Gemm + post-ops */

static int add_input(eng_node *n, int v, cl_err *err)
{
    int *in = realloc(n->in, sizeof(int) * (size_t)(n->n_in + 1));
    if (!in)
        return cl_err_nomem(err);
    n->in = in;
    n->in[n->n_in++] = v;
    return n->n_in - 1;
}

static int fuse_matmul(cl_engine_model *m, eng_node *n, cl_err *err)
{
    bool gemm = is_op(n, "Gemm");
    if (!gemm && !is_op(n, "MatMul"))
        return 0;
    eng_mm_attr *at = calloc(1, sizeof *at);
    if (!at)
        return cl_err_nomem(err);
    at->bias = -1;
    int ins[3] = {n->in[0], n->in[1], -1}, n_in = 2;
    bool fused = gemm;
    if (gemm) {
        const eng_attr *ta = eng_attr_find(n, "transA"), *tb = eng_attr_find(n, "transB");
        const eng_attr *al = eng_attr_find(n, "alpha"), *be = eng_attr_find(n, "beta");
        const eng_tensor *cb = n->n_in > 2 && n->in[2] >= 0 ? konst(m, n->in[2]) : NULL;
        if ((ta && ta->i != 0) || (al && al->f != 1.0f) || (be && be->f != 1.0f) ||
            (n->n_in > 2 && n->in[2] >= 0 && (!cb || cb->rank != 1))) {
            free(at);
            return 0;
        }
        at->trans_b = tb && tb->i != 0;
        if (cb) {
            ins[2] = n->in[2];
            at->bias = 2;
            n_in = 3;
        }
    }
    /* a scalar Mul / Div on an input (attention scales q or k): an eltwise linear on the product; not
     * with a Gemm bias, which oneDNN adds before the post-ops (c*(A B) + C is not c*(A B + C)) */
    for (int k = 0; k < 2 && at->bias < 0; k++) {
        eng_node *p = producer(m, ins[k]);
        float c;
        if (at->n_post || !p || eng_graph_sole_consumer(m, ins[k]) != n || !(is_op(p, "Mul") || is_op(p, "Div")))
            continue;
        int xin;
        if (scalar(m, p->in[1], &c))
            xin = p->in[0];
        else if (is_op(p, "Mul") && scalar(m, p->in[0], &c))
            xin = p->in[1];
        else
            continue;
        if (is_op(p, "Div") && c == 0.0f)
            continue;
        at->post[at->n_post++] = (eng_mm_post){.kind = ENG_MMP_LINEAR, .alpha = is_op(p, "Div") ? 1.0f / c : c};
        ins[k] = xin;
        p->dead = true;
        fused = true;
    }
    if (rebind(n, n->op, n->op_type, ins, n_in, at, err) != 0)
        return -1;
    /* what follows the product */
    for (eng_node *c; at->n_post < ENG_MM_MAX_POST && (c = eng_graph_sole_consumer(m, n->out[0]));) {
        int o = other(c, n->out[0]);
        float s;
        const eng_tensor *t;
        if (is_op(c, "Add") && o >= 0 && o != n->out[0]) {
            if (at->bias < 0 && at->n_post == 0 && (t = konst(m, o)) && t->rank == 1 && t->dims[0] > 1) {
                int k = add_input(n, o, err);
                if (k < 0)
                    return -1;
                at->bias = k;
            } else if (scalar(m, o, &s)) {
                at->post[at->n_post++] = (eng_mm_post){.kind = ENG_MMP_LINEAR, .alpha = 1.0f, .beta = s};
            } else {
                int k = add_input(n, o, err);
                if (k < 0)
                    return -1;
                at->post[at->n_post++] = (eng_mm_post){.kind = ENG_MMP_ADD, .in = k};
            }
        } else if ((is_op(c, "Mul") || (is_op(c, "Div") && c->in[0] == n->out[0])) && o >= 0 && scalar(m, o, &s) &&
                   !(is_op(c, "Div") && s == 0.0f)) {
            at->post[at->n_post++] = (eng_mm_post){.kind = ENG_MMP_LINEAR, .alpha = is_op(c, "Div") ? 1.0f / s : s};
        } else if (is_op(c, "Relu")) {
            at->post[at->n_post++] = (eng_mm_post){.kind = ENG_MMP_RELU};
        } else if (c->op == &eng_op_fused_gelu_erf || c->op == &eng_op_fused_gelu_tanh) {
            at->post[at->n_post++] = (eng_mm_post){.kind = c->op == &eng_op_fused_gelu_erf ? ENG_MMP_GELU_ERF
                                                                                          : ENG_MMP_GELU_TANH};
        } else {
            break;
        }
        take_output(m, n, c);
        fused = true;
        eng_graph_count_consumers(m);
    }
    eng_graph_count_consumers(m);
    if (!fused) { /* a plain MatMul: the same kernel, nothing to record */
        free(n->attr);
        n->attr = NULL;
        return 0;
    }
    char type[160];
    size_t len = (size_t)snprintf(type, sizeof type, "FusedMatMul(");
    const char *items[ENG_MM_MAX_POST + 2];
    int ni = 0;
    if (at->trans_b)
        items[ni++] = "transB";
    if (at->bias >= 0)
        items[ni++] = "bias";
    for (int k = 0; k < at->n_post; k++)
        items[ni++] = at->post[k].kind == ENG_MMP_LINEAR ? "linear" : at->post[k].kind == ENG_MMP_RELU ? "relu"
                      : at->post[k].kind == ENG_MMP_GELU_ERF ? "gelu_erf" : at->post[k].kind == ENG_MMP_GELU_TANH ? "gelu_tanh"
                      : "add";
    for (int k = 0; k < ni && len < sizeof type; k++)
        len += (size_t)snprintf(type + len, sizeof type - len, "%s%s", k ? "," : "", items[k]);
    if (len < sizeof type)
        snprintf(type + len, sizeof type - len, ")");
    char *t = strdup(type);
    if (!t)
        return cl_err_nomem(err);
    free(n->op_type);
    n->op_type = t;
    n->op = &eng_op_fused_matmul;
    return 1;
}

/* ---------------------------------------------------------------- driver */

int eng_fuse_transformer(cl_engine_model *m, cl_err *err)
{
    static int (*const passes[])(cl_engine_model *, eng_node *, cl_err *) = {fuse_layernorm, fuse_gelu_erf,
                                                                           fuse_gelu_tanh, fuse_matmul};
    for (size_t p = 0; p < CL_ARRAY_LEN(passes); p++) {
        eng_graph_count_consumers(m);
        for (size_t oi = 0; oi < m->n_order; oi++) {
            eng_node *n = &m->nodes[m->order[oi]];
            if (!n->dead && passes[p](m, n, err) < 0)
                return -1;
        }
    }
    eng_graph_count_consumers(m);
    return 0;
}
