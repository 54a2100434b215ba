/* engine/graph.c — graph preparation after loading: the name table, topological order (with cycle and
 * dangling-name detection), every node's prepare (its descriptor decodes and validates the attributes),
 * Constant nodes and constant folding (any node whose inputs are all constants is executed once at load
 * time), BatchNormalization folded into the preceding Conv, Conv + Relu/Clip and residual Add (+Relu)
 * fused into the Conv's oneDNN post-ops, and removal of nodes whose outputs nobody uses.
 */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

/* ---------------------------------------------------------------- names */

static uint64_t hash_str(const char *s)
{
    uint64_t h = 1469598103934665603ull;
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 1099511628211ull;
    return h;
}

int eng_value_find(const cl_engine_model *m, const char *name)
{
    if (!m->hash_cap)
        return -1;
    for (size_t i = hash_str(name) & (m->hash_cap - 1);; i = (i + 1) & (m->hash_cap - 1)) {
        int v = m->hash[i];
        if (v < 0)
            return -1;
        if (strcmp(m->values[v].name, name) == 0)
            return v;
    }
}

static int rehash(cl_engine_model *m, size_t cap, cl_err *err)
{
    int *h = malloc(cap * sizeof(int));
    if (!h)
        return cl_err_nomem(err);
    for (size_t i = 0; i < cap; i++)
        h[i] = -1;
    for (size_t v = 0; v < m->n_values; v++) {
        size_t i = hash_str(m->values[v].name) & (cap - 1);
        while (h[i] >= 0)
            i = (i + 1) & (cap - 1);
        h[i] = (int)v;
    }
    free(m->hash);
    m->hash = h;
    m->hash_cap = cap;
    return 0;
}

int eng_value_get(cl_engine_model *m, const char *name, cl_err *err)
{
    int v = eng_value_find(m, name);
    if (v >= 0)
        return v;
    if (m->n_values >= (size_t)4 * CL_ENGINE_MAX_NODES)
        return cl_err_set(err, CL_E_FORMAT, "model has too many tensors");
    if (m->n_values == m->cap_values) {
        size_t cap = m->cap_values ? m->cap_values * 2 : 64;
        eng_value *nv = realloc(m->values, cap * sizeof *nv);
        if (!nv)
            return cl_err_nomem(err);
        m->values = nv;
        m->cap_values = cap;
    }
    eng_value *val = &m->values[m->n_values];
    memset(val, 0, sizeof *val);
    val->name = strdup(name);
    if (!val->name)
        return cl_err_nomem(err);
    val->producer = -1;
    val->graph_input = -1;
    val->graph_output = -1;
    m->n_values++;
    if (m->n_values * 2 > m->hash_cap) {
        if (rehash(m, m->hash_cap ? m->hash_cap * 2 : 128, err) != 0)
            return -1;
    } else {
        size_t i = hash_str(name) & (m->hash_cap - 1);
        while (m->hash[i] >= 0)
            i = (i + 1) & (m->hash_cap - 1);
        m->hash[i] = (int)m->n_values - 1;
    }
    return (int)m->n_values - 1;
}

/* ---------------------------------------------------------------- errors */

int eng_node_err(cl_err *err, cl_status code, const eng_node *n, const char *fmt, ...)
{
    char buf[CL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    return cl_err_set(err, code, "node '%s' (%s): %s", n->name, n->op_type, buf);
}

/* ---------------------------------------------------------------- topological order */

static int topo_sort(cl_engine_model *m, cl_err *err)
{
    size_t nn = m->n_nodes;
    int *indeg = calloc(nn + 1, sizeof(int));
    int *queue = malloc((nn + 1) * sizeof(int));
    /* consumers lists (CSR) */
    int *cstart = calloc(m->n_values + 1, sizeof(int));
    int *clist = NULL;
    size_t total = 0;
    int rc = -1;
    if (!indeg || !queue || !cstart)
        goto nomem;
    for (size_t i = 0; i < nn; i++) {
        eng_node *n = &m->nodes[i];
        if (n->dead)
            continue;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v < 0)
                continue;
            eng_value *val = &m->values[v];
            if (val->producer < 0 && !val->konst && val->graph_input < 0) {
                rc = eng_node_err(err, CL_E_FORMAT, n, "input '%s' is not produced by any node, initializer or "
                                  "graph input", val->name);
                goto out;
            }
            if (val->producer >= 0) {
                indeg[i]++;
                cstart[v + 1]++;
                total++;
            }
        }
    }
    for (size_t v = 0; v < m->n_values; v++)
        cstart[v + 1] += cstart[v];
    clist = malloc((total + 1) * sizeof(int));
    int *fill = calloc(m->n_values + 1, sizeof(int));
    if (!clist || !fill) {
        free(fill);
        goto nomem;
    }
    for (size_t i = 0; i < nn; i++) {
        eng_node *n = &m->nodes[i];
        if (n->dead)
            continue;
        for (int k = 0; k < n->n_in; k++) {
            int v = n->in[k];
            if (v >= 0 && m->values[v].producer >= 0)
                clist[cstart[v] + fill[v]++] = (int)i;
        }
    }
    free(fill);
    size_t qh = 0, qt = 0;
    for (size_t i = 0; i < nn; i++)
        if (!m->nodes[i].dead && indeg[i] == 0)
            queue[qt++] = (int)i;
    free(m->order);
    m->order = malloc((nn + 1) * sizeof(int));
    if (!m->order)
        goto nomem;
    m->n_order = 0;
    while (qh < qt) {
        int i = queue[qh++];
        m->order[m->n_order++] = i;
        eng_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_out; k++) {
            int v = n->out[k];
            if (v < 0)
                continue;
            for (int c = cstart[v]; c < cstart[v + 1]; c++)
                if (--indeg[clist[c]] == 0)
                    queue[qt++] = clist[c];
        }
    }
    size_t live = 0;
    for (size_t i = 0; i < nn; i++)
        live += !m->nodes[i].dead;
    if (m->n_order != live) {
        for (size_t i = 0; i < nn; i++)
            if (!m->nodes[i].dead && indeg[i] > 0) {
                rc = eng_node_err(err, CL_E_FORMAT, &m->nodes[i], "is part of a cycle in the graph");
                goto out;
            }
    }
    rc = 0;
    goto out;
nomem:
    rc = cl_err_nomem(err);
out:
    free(indeg);
    free(queue);
    free(cstart);
    free(clist);
    return rc;
}

void eng_graph_count_consumers(cl_engine_model *m)
{
    for (size_t v = 0; v < m->n_values; v++)
        m->values[v].n_consumers = 0;
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        if (n->dead)
            continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0)
                m->values[n->in[k]].n_consumers++;
    }
    for (size_t k = 0; k < m->n_outputs; k++)
        m->values[m->out_val[k]].n_consumers++;
}

/* ---------------------------------------------------------------- constants */

static eng_tensor *tensor_dup(const eng_tensor *src, cl_err *err)
{
    eng_tensor *t = calloc(1, sizeof *t);
    if (!t) {
        cl_err_nomem(err);
        return NULL;
    }
    *t = *src;
    t->data = NULL;
    t->owned = false;
    t->blocked = false;
    if (eng_tensor_alloc_const(t, err) != 0) {
        free(t);
        return NULL;
    }
    if (src->nbytes)
        memcpy(t->data, src->data, src->nbytes);
    return t;
}

/* A Constant node (its attribute checked by its prepare) becomes a constant value. */
static int constant_node(cl_engine_model *m, eng_node *n, cl_err *err)
{
    const eng_attr *a = &n->attrs[0];
    eng_tensor tmp = {0};
    const eng_tensor *src = &tmp;
    if (strcmp(a->name, "value") == 0 && a->type == ENG_ATTR_TENSOR) {
        src = a->t;
    } else if (strcmp(a->name, "value_float") == 0 && a->type == ENG_ATTR_FLOAT) {
        tmp = (eng_tensor){.dtype = CL_ENGINE_DT_FLOAT, .rank = 0, .data = (void *)&a->f, .nbytes = 4};
    } else if (strcmp(a->name, "value_int") == 0 && a->type == ENG_ATTR_INT) {
        tmp = (eng_tensor){.dtype = CL_ENGINE_DT_INT64, .rank = 0, .data = (void *)&a->i, .nbytes = 8};
    } else if (strcmp(a->name, "value_floats") == 0 && a->type == ENG_ATTR_FLOATS) {
        tmp = (eng_tensor){.dtype = CL_ENGINE_DT_FLOAT, .rank = 1, .dims = {(int64_t)a->n_floats}, .data = a->floats,
                           .nbytes = a->n_floats * 4};
    } else if (strcmp(a->name, "value_ints") == 0 && a->type == ENG_ATTR_INTS) {
        tmp = (eng_tensor){.dtype = CL_ENGINE_DT_INT64, .rank = 1, .dims = {(int64_t)a->n_ints}, .data = a->ints,
                           .nbytes = a->n_ints * 8};
    } else {
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "attribute '%s' is not supported", a->name);
    }
    eng_tensor *t = tensor_dup(src, err);
    if (!t)
        return -1;
    eng_value *val = &m->values[n->out[0]];
    val->konst = t;
    val->producer = -1;
    n->dead = true;
    return 0;
}

/* Runs node n once with constant inputs; its outputs become constants. */
static int fold_node(cl_engine_model *m, eng_node *n, cl_err *err)
{
    eng_run r = {.m = m};
    r.vals = calloc(m->n_values, sizeof *r.vals);
    if (!r.vals)
        return cl_err_nomem(err);
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0) {
            r.vals[n->in[k]] = *m->values[n->in[k]].konst;
            r.vals[n->in[k]].owned = false;
            r.vals[n->in[k]].refs = 1 << 20;
        }
    int rc = dnnl_stream_create(&r.stream, m->dnnl, dnnl_stream_default_flags) == dnnl_success ? 0 : -1;
    if (rc != 0) {
        free(r.vals);
        return cl_err_set(err, CL_E_INTERNAL, "cannot create a oneDNN stream");
    }
    eng_discard_flush();
    rc = n->op->run(&r, n, err);
    eng_discard_flush();
    for (int k = 0; rc == 0 && k < n->n_out; k++) {
        if (n->out[k] < 0)
            continue;
        eng_tensor *o = &r.vals[n->out[k]];
        if (o->blocked && eng_make_plain(&r, o, err) != 0) {
            rc = -1;
            break;
        }
        eng_tensor *t = tensor_dup(o, err);
        if (!t) {
            rc = -1;
            break;
        }
        t->refs = 0;
        m->values[n->out[k]].konst = t;
        m->values[n->out[k]].producer = -1;
    }
    for (int k = 0; k < n->n_out; k++)
        if (n->out[k] >= 0)
            eng_tensor_free(&r.vals[n->out[k]]);
    dnnl_stream_destroy(r.stream);
    free(r.vals);
    if (rc == 0)
        n->dead = true;
    return rc;
}

static bool foldable(const cl_engine_model *m, const eng_node *n)
{
    if (n->op->no_fold)
        return false;
    int nconst = 0;
    for (int k = 0; k < n->n_in; k++) {
        if (n->in[k] < 0)
            continue;
        if (!m->values[n->in[k]].konst)
            return false;
        nconst++;
    }
    /* Folding large tensors just moves work to load time and memory to constants; fine, but bound it. */
    for (int k = 0; k < n->n_in; k++)
        if (n->in[k] >= 0 && m->values[n->in[k]].konst->nbytes > ((size_t)64 << 20))
            return false;
    return nconst > 0;
}

/* ---------------------------------------------------------------- fusion */

static bool single_use(const cl_engine_model *m, int v)
{
    return v >= 0 && m->values[v].n_consumers == 1 && m->values[v].graph_output < 0;
}

/* The live node consuming value v (v has a single use). */
static eng_node *consumer_of(cl_engine_model *m, int v)
{
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        if (n->dead)
            continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] == v)
                return n;
    }
    return NULL;
}

eng_node *eng_graph_sole_consumer(cl_engine_model *m, int v)
{
    return single_use(m, v) ? consumer_of(m, v) : NULL;
}

const eng_tensor *eng_graph_konst_f32(const cl_engine_model *m, const eng_node *n, int k)
{
    if (k >= n->n_in || n->in[k] < 0)
        return NULL;
    const eng_tensor *t = m->values[n->in[k]].konst;
    return t && t->dtype == CL_ENGINE_DT_FLOAT ? t : NULL;
}

int eng_graph_new_const(cl_engine_model *m, const char *base, eng_tensor *t, cl_err *err)
{
    char name[300];
    for (int i = 0;; i++) {
        snprintf(name, sizeof name, "%.200s/cloister_folded_%d", base, i);
        if (eng_value_find(m, name) < 0)
            break;
    }
    int v = eng_value_get(m, name, err);
    if (v < 0) {
        eng_tensor_free(t);
        free(t);
        return -1;
    }
    m->values[v].konst = t;
    return v;
}

static int fold_bn(cl_engine_model *m, eng_node *conv, eng_node *bn, cl_err *err)
{
    const eng_tensor *w = eng_graph_konst_f32(m, conv, 1), *b = eng_graph_konst_f32(m, conv, 2);
    const eng_tensor *sc = eng_graph_konst_f32(m, bn, 1), *bb = eng_graph_konst_f32(m, bn, 2), *mean = eng_graph_konst_f32(m, bn, 3),
                     *var = eng_graph_konst_f32(m, bn, 4);
    if (!w || (conv->n_in > 2 && conv->in[2] >= 0 && !b) || !sc || !bb || !mean || !var || w->rank < 3)
        return 0;
    int64_t oc = w->dims[0];
    if (eng_numel(sc) != oc || eng_numel(bb) != oc || eng_numel(mean) != oc || eng_numel(var) != oc ||
        (b && eng_numel(b) != oc) || bn->n_out != 1 || oc <= 0)
        return 0;
    float eps = ((const eng_norm_attr *)bn->attr)->epsilon;
    eng_tensor *nw = tensor_dup(w, err);
    if (!nw)
        return -1;
    eng_tensor *nb = calloc(1, sizeof *nb);
    if (!nb) {
        eng_tensor_free(nw);
        free(nw);
        return cl_err_nomem(err);
    }
    *nb = (eng_tensor){.dtype = CL_ENGINE_DT_FLOAT, .rank = 1, .dims = {oc}};
    if (eng_tensor_alloc_const(nb, err) != 0) {
        eng_tensor_free(nw);
        free(nw);
        free(nb);
        return -1;
    }
    int64_t per = eng_numel(w) / oc;
    for (int64_t o = 0; o < oc; o++) {
        float s = ((const float *)sc->data)[o] / sqrtf(((const float *)var->data)[o] + eps);
        float *wp = (float *)nw->data + o * per;
        for (int64_t j = 0; j < per; j++)
            wp[j] *= s;
        float b0 = b ? ((const float *)b->data)[o] : 0.0f;
        ((float *)nb->data)[o] = (b0 - ((const float *)mean->data)[o]) * s + ((const float *)bb->data)[o];
    }
    int wv = eng_graph_new_const(m, conv->name, nw, err);
    if (wv < 0) {
        eng_tensor_free(nb);
        free(nb);
        return -1;
    }
    int bv = eng_graph_new_const(m, conv->name, nb, err);
    if (bv < 0)
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
    /* conv now produces BN's output */
    int old = conv->out[0];
    m->values[old].producer = -1;
    conv->out[0] = bn->out[0];
    m->values[bn->out[0]].producer = (int)(conv - m->nodes);
    bn->dead = true;
    return 1;
}

/* Clip bounds when constant (opset >= 11 inputs, or attributes before). */
static bool clip_bounds(const cl_engine_model *m, const eng_node *n, float *lo, float *hi)
{
    const eng_clip_attr *at = n->attr;
    *lo = -INFINITY;
    *hi = INFINITY;
    if (at->from_attrs) {
        *lo = at->lo;
        *hi = at->hi;
        return true;
    }
    for (int k = 1; k < n->n_in && k < 3; k++) {
        if (n->in[k] < 0)
            continue;
        const eng_tensor *t = eng_graph_konst_f32(m, n, k);
        if (!t || eng_numel(t) != 1)
            return false;
        *(k == 1 ? lo : hi) = ((const float *)t->data)[0];
    }
    return true;
}

static int fuse(cl_engine_model *m, cl_err *err)
{
    eng_graph_count_consumers(m);
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *conv = &m->nodes[m->order[oi]];
        if (conv->dead || strcmp(conv->op_type, "Conv") != 0 || conv->n_out != 1)
            continue;
        /* BatchNormalization */
        if (single_use(m, conv->out[0])) {
            eng_node *c = consumer_of(m, conv->out[0]);
            if (c && strcmp(c->op_type, "BatchNormalization") == 0 && c->in[0] == conv->out[0]) {
                int rc = fold_bn(m, conv, c, err);
                if (rc < 0)
                    return -1;
                if (rc > 0)
                    eng_graph_count_consumers(m);
            }
        }
        /* activation */
        if (single_use(m, conv->out[0])) {
            eng_node *c = consumer_of(m, conv->out[0]);
            float lo, hi;
            if (c && strcmp(c->op_type, "Relu") == 0) {
                conv->post = ENG_POST_RELU;
            } else if (c && strcmp(c->op_type, "Clip") == 0 && c->in[0] == conv->out[0] && clip_bounds(m, c, &lo, &hi)) {
                conv->post = ENG_POST_CLIP;
                conv->post_lo = lo;
                conv->post_hi = hi;
            } else {
                c = NULL;
            }
            if (c) {
                m->values[conv->out[0]].producer = -1;
                conv->out[0] = c->out[0];
                m->values[c->out[0]].producer = (int)(conv - m->nodes);
                c->dead = true;
                eng_graph_count_consumers(m);
            }
        }
        /* SiLU: Mul(c, Sigmoid(c)) where c has exactly those two uses */
        if (conv->post == ENG_POST_NONE && m->values[conv->out[0]].n_consumers == 2 &&
            m->values[conv->out[0]].graph_output < 0) {
            int c0 = conv->out[0];
            eng_node *sig = NULL, *mul = NULL;
            for (size_t i = 0; i < m->n_nodes; i++) {
                eng_node *q = &m->nodes[i];
                if (q->dead)
                    continue;
                for (int k = 0; k < q->n_in; k++)
                    if (q->in[k] == c0) {
                        if (strcmp(q->op_type, "Sigmoid") == 0)
                            sig = q;
                        else if (strcmp(q->op_type, "Mul") == 0 && q->n_in == 2)
                            mul = q;
                    }
            }
            if (sig && mul && single_use(m, sig->out[0]) &&
                ((mul->in[0] == c0 && mul->in[1] == sig->out[0]) || (mul->in[1] == c0 && mul->in[0] == sig->out[0]))) {
                conv->post = ENG_POST_SWISH;
                m->values[c0].producer = -1;
                conv->out[0] = mul->out[0];
                m->values[mul->out[0]].producer = (int)(conv - m->nodes);
                sig->dead = true;
                mul->dead = true;
                eng_graph_count_consumers(m);
            }
        }
        /* residual Add (+ Relu) */
        if (conv->post == ENG_POST_NONE && single_use(m, conv->out[0])) {
            eng_node *c = consumer_of(m, conv->out[0]);
            if (c && strcmp(c->op_type, "Add") == 0 && c->n_in == 2 && c->in[0] != c->in[1]) {
                int other = c->in[0] == conv->out[0] ? c->in[1] : c->in[0];
                if (other >= 0 && !m->values[other].konst) {
                    int *ni = realloc(conv->in, 4 * sizeof(int));
                    if (!ni)
                        return cl_err_nomem(err);
                    conv->in = ni;
                    for (int k = conv->n_in; k < 3; k++)
                        conv->in[k] = -1;
                    conv->in[3] = other;
                    conv->n_in = 4;
                    conv->sum_in = 3;
                    m->values[conv->out[0]].producer = -1;
                    conv->out[0] = c->out[0];
                    m->values[c->out[0]].producer = (int)(conv - m->nodes);
                    c->dead = true;
                    eng_graph_count_consumers(m);
                    if (single_use(m, conv->out[0])) {
                        eng_node *r = consumer_of(m, conv->out[0]);
                        if (r && strcmp(r->op_type, "Relu") == 0) {
                            conv->post2 = ENG_POST_RELU;
                            m->values[conv->out[0]].producer = -1;
                            conv->out[0] = r->out[0];
                            m->values[r->out[0]].producer = (int)(conv - m->nodes);
                            r->dead = true;
                            eng_graph_count_consumers(m);
                        }
                    }
                }
            }
        }
    }
    return 0;
}

/* A standalone BatchNormalization (pre-activation, e.g. DenseNet) followed by Relu: fused. */
static void fuse_bn_relu(cl_engine_model *m)
{
    eng_graph_count_consumers(m);
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *bn = &m->nodes[m->order[oi]];
        if (bn->dead || strcmp(bn->op_type, "BatchNormalization") != 0 || bn->n_out != 1 ||
            bn->post != ENG_POST_NONE || !single_use(m, bn->out[0]))
            continue;
        eng_node *c = consumer_of(m, bn->out[0]);
        if (!c || strcmp(c->op_type, "Relu") != 0)
            continue;
        bn->post = ENG_POST_RELU;
        m->values[bn->out[0]].producer = -1;
        bn->out[0] = c->out[0];
        m->values[c->out[0]].producer = (int)(bn - m->nodes);
        c->dead = true;
        eng_graph_count_consumers(m);
    }
}

/* Identity, Dropout that drops nothing (eng_dropout_noop) and Pad with all-zero constant pads forward their input: their
 * consumers are rewired to the input (unless the output is a graph output). */
static void remove_noops(cl_engine_model *m)
{
    eng_graph_count_consumers(m);
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        if (n->dead || n->n_in < 1 || n->in[0] < 0 || n->out[0] < 0 || m->values[n->out[0]].graph_output >= 0)
            continue;
        bool noop = strcmp(n->op_type, "Identity") == 0;
        if (strcmp(n->op_type, "Dropout") == 0)
            noop = eng_dropout_noop(m, n);
        if (strcmp(n->op_type, "Pad") == 0 && m->opset >= 11 && n->n_in >= 2 && n->n_in <= 3 && n->in[1] >= 0) {
            const eng_tensor *p = m->values[n->in[1]].konst;
            noop = p && (p->dtype == CL_ENGINE_DT_INT64) && p->rank == 1;
            for (int64_t k = 0; noop && k < eng_numel(p); k++)
                noop = ((const int64_t *)p->data)[k] == 0;
        }
        if (!noop)
            continue;
        int from = n->out[0], to = n->in[0];
        for (size_t j = 0; j < m->n_nodes; j++) {
            eng_node *q = &m->nodes[j];
            for (int k = 0; !q->dead && k < q->n_in; k++)
                if (q->in[k] == from)
                    q->in[k] = to;
        }
        n->dead = true;
    }
}

/* Nodes whose outputs are neither used nor graph outputs are removed (repeatedly). */
static void remove_dead(cl_engine_model *m)
{
    bool changed = true;
    while (changed) {
        changed = false;
        eng_graph_count_consumers(m);
        for (size_t i = 0; i < m->n_nodes; i++) {
            eng_node *n = &m->nodes[i];
            if (n->dead)
                continue;
            bool used = false;
            for (int k = 0; k < n->n_out; k++)
                if (n->out[k] >= 0 && m->values[n->out[k]].n_consumers > 0)
                    used = true;
            if (!used) {
                n->dead = true;
                changed = true;
            }
        }
    }
}

int eng_graph_prepare(cl_engine_model *m, cl_err *err)
{
    /* Every node's attributes decoded and validated (a bad one fails the load naming node and
     * attribute); Constant nodes then become constants. */
    for (size_t i = 0; i < m->n_nodes; i++) {
        eng_node *n = &m->nodes[i];
        if (n->op->prepare && n->op->prepare(m, n, err) != 0)
            return -1;
        if (n->op->run == eng_run_never && constant_node(m, n, err) != 0)
            return -1;
    }
    if (topo_sort(m, err) != 0)
        return -1;
    for (size_t k = 0; k < m->n_outputs; k++) {
        eng_value *v = &m->values[m->out_val[k]];
        if (v->producer < 0 && !v->konst && v->graph_input < 0)
            return cl_err_set(err, CL_E_FORMAT, "graph output '%s' is not produced by any node", v->name);
    }
    /* constant folding, in order so chains fold */
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *n = &m->nodes[m->order[oi]];
        if (!n->dead && foldable(m, n) && fold_node(m, n, err) != 0)
            return cl_err_prefix(err, "while folding constants");
    }
    remove_noops(m);
    remove_dead(m);
    if (topo_sort(m, err) != 0)
        return -1;
    if (eng_fuse_cnn_patterns(m, err) != 0 || fuse(m, err) != 0)
        return -1;
    fuse_bn_relu(m);
    if (eng_fuse_cnn_post(m, err) != 0 || eng_fuse_transformer(m, err) != 0) /* fuse_cnn.c, fuse.c */
        return -1;
    remove_dead(m);
    if (topo_sort(m, err) != 0)
        return -1;
    eng_graph_count_consumers(m);
    return eng_plan_layouts(m, err);
}
