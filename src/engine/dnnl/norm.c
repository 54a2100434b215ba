/* engine/dnnl/norm.c — the transformer's row-wise kernels on oneDNN for plain fp32 tensors: Softmax and
 * LogSoftmax (over the middle dim of [outer, len, inner]), LayerNormalization (over the trailing
 * [inner], scale and shift of that size) and GELU (the node fuse.c makes from the Erf and Tanh forms, on
 * eltwise gelu_erf / gelu_tanh). One primitive per shape in the node's cache (dnnl/prim.c). The callers
 * (ops/reduce.c, ops/norm.c) keep their plain-C kernels for everything else.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

enum { K_SOFTMAX, K_LOGSOFTMAX, K_LNORM, K_LNORM_NOSHIFT, K_GELU_ERF, K_GELU_TANH };

/* The cached primitive of kind k for the plain layout md (caller: not holding the lock); NULL after err. */
static prim_entry *entry(eng_run *r, eng_node *n, int k, const dnnl_memory_desc_t *md, int axis, float eps,
                         cl_err *err)
{
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, md, 1, k) : NULL;
    if (c && !e) {
        dnnl_status_t s;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        if (k == K_SOFTMAX || k == K_LOGSOFTMAX) {
            dnnl_softmax_desc_t d;
            s = k == K_SOFTMAX ? dnnl_softmax_forward_desc_init(&d, dnnl_forward_inference, md, axis)
                               : dnnl_logsoftmax_forward_desc_init(&d, dnnl_forward_inference, md, axis);
            if (s == dnnl_success)
                s = dnnl_primitive_desc_create(&pd, &d, attr, r->m->dnnl, NULL);
        } else if (k == K_LNORM || k == K_LNORM_NOSHIFT) {
            dnnl_layer_normalization_desc_t d;
            unsigned flags = dnnl_use_scale | (k == K_LNORM ? dnnl_use_shift : 0);
            s = dnnl_layer_normalization_forward_desc_init(&d, dnnl_forward_inference, md, NULL, eps, flags);
            if (s == dnnl_success)
                s = dnnl_primitive_desc_create(&pd, &d, attr, r->m->dnnl, NULL);
        } else {
            dnnl_eltwise_desc_t d;
            s = dnnl_eltwise_forward_desc_init(&d, dnnl_forward_inference,
                                               k == K_GELU_ERF ? dnnl_eltwise_gelu_erf : dnnl_eltwise_gelu_tanh, md, 0,
                                               0);
            if (s == dnnl_success)
                s = dnnl_primitive_desc_create(&pd, &d, attr, r->m->dnnl, NULL);
        }
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the primitive");
        else
            e = eng_entry_new(c, md, 1, k, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    return e;
}

static int finish(eng_run *r, eng_node *n, int rank, const int64_t *dims)
{
    eng_tensor *y = &r->vals[n->out[0]];
    y->rank = rank;
    memcpy(y->dims, dims, sizeof(int64_t) * (size_t)rank);
    y->blocked = false;
    y->md = NULL;
    return 0;
}

int eng_dnnl_softmax(eng_run *r, eng_node *n, eng_tensor *x, int64_t outer, int64_t len, int64_t inner, bool log,
                     cl_err *err)
{
    if (x->dtype != CL_ENGINE_DT_FLOAT || outer <= 0 || len <= 0 || inner <= 0 || n->out[0] < 0)
        return 1;
    dnnl_memory_desc_t md;
    int64_t d3[3] = {outer, len, inner};
    int rank = inner == 1 ? 2 : 3;
    eng_plain_md(&md, rank, d3);
    prim_entry *e = entry(r, n, log ? K_LOGSOFTMAX : K_SOFTMAX, &md, 1, 0, err);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    if (eng_exec_to_output(r, n, e, 1, ids, &md, ptrs, rank, d3, err) != 0)
        return -1;
    return finish(r, n, x->rank, x->dims);
}

int eng_dnnl_layernorm(eng_run *r, eng_node *n, eng_tensor *x, eng_tensor *sc, eng_tensor *bi, int64_t outer,
                       int64_t inner, float eps, cl_err *err)
{
    if (x->dtype != CL_ENGINE_DT_FLOAT || sc->dtype != CL_ENGINE_DT_FLOAT || eng_numel(sc) != inner ||
        (bi && (bi->dtype != CL_ENGINE_DT_FLOAT || eng_numel(bi) != inner)) || outer <= 0 || inner <= 0 ||
        n->out[0] < 0)
        return 1;
    for (int k = 1; k < n->n_out; k++)
        if (n->out[k] >= 0)
            return 1; /* the mean / inverse deviation outputs: plain C */
    dnnl_memory_desc_t mds[3];
    int64_t d2[2] = {outer, inner};
    eng_plain_md(&mds[0], 2, d2);
    eng_plain_md(&mds[1], 1, &inner);
    mds[2] = mds[1];
    prim_entry *e = entry(r, n, bi ? K_LNORM : K_LNORM_NOSHIFT, &mds[0], 0, eps, err);
    if (!e)
        return -1;
    /* inference without global statistics: oneDNN may still want buffers for them */
    const dnnl_memory_desc_t *mean_md = dnnl_primitive_desc_query_md(e->pd, dnnl_query_dst_md, 1);
    size_t stat = mean_md ? dnnl_memory_desc_get_size(mean_md) : 0;
    void *mean = NULL, *var = NULL;
    int ids[5] = {DNNL_ARG_SRC, DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE};
    dnnl_memory_desc_t amds[5] = {mds[0], mds[1], mds[2]};
    void *ptrs[5] = {x->data, sc->data, bi ? bi->data : NULL};
    int na = bi ? 3 : 2;
    if (!bi) {
        ids[2] = DNNL_ARG_MEAN;
        ids[3] = DNNL_ARG_VARIANCE;
    }
    if (stat) {
        mean = eng_alloc_md(mean_md);
        var = eng_alloc_md(mean_md);
        if (!mean || !var) {
            eng_buf_free(mean);
            eng_buf_free(var);
            return cl_err_nomem(err);
        }
        amds[na] = *mean_md;
        ptrs[na++] = mean;
        amds[na] = *mean_md;
        ptrs[na++] = var;
    }
    int rc = eng_exec_to_output(r, n, e, na, ids, amds, ptrs, 2, d2, err);
    eng_buf_free(mean);
    eng_buf_free(var);
    if (rc != 0)
        return -1;
    return finish(r, n, x->rank, x->dims);
}

/* The fused GELU node: input 0, any float shape; the plain-C formula for what oneDNN does not take. */
static int run_gelu(eng_run *r, eng_node *n, cl_err *err)
{
    bool tanh_form = n->op == &eng_op_fused_gelu_tanh;
    eng_tensor *x;
    if (eng_need_in(r, n, 0, &x, err) != 0)
        return -1;
    if (x->dtype != CL_ENGINE_DT_FLOAT)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "type %s is not supported", cl_engine_dtype_name(x->dtype));
    int64_t ne = eng_numel(x);
    if (ne <= 0 || n->out[0] < 0) {
        eng_tensor *y = eng_out(r, n, 0, x->dtype, x->rank, x->dims, err);
        if (!y)
            return -1;
        const float *xp = x->data;
        float *yp = y->data;
        for (int64_t i = 0; i < ne; i++) {
            float v = xp[i];
            yp[i] = tanh_form ? 0.5f * v * (1.0f + tanhf(0.79788456080286536f * (v + 0.044715f * v * v * v)))
                              : 0.5f * v * (1.0f + erff(v * 0.70710678118654752f));
        }
        return 0;
    }
    dnnl_memory_desc_t md;
    eng_plain_md(&md, 1, &ne);
    prim_entry *e = entry(r, n, tanh_form ? K_GELU_TANH : K_GELU_ERF, &md, 0, 0, err);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    if (eng_exec_to_output(r, n, e, 1, ids, &md, ptrs, 1, &ne, err) != 0)
        return -1;
    return finish(r, n, x->rank, x->dims);
}

const eng_op eng_op_fused_gelu_erf = {
    .name = "Gelu(erf)", .since = 1, .until = 1 << 30, .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .consumes = ENG_LAYOUT_PLAIN, .produces = ENG_LAYOUT_PLAIN, .infer = eng_infer_same, .run = run_gelu,
    .free_state = eng_prim_cache_free,
};
const eng_op eng_op_fused_gelu_tanh = {
    .name = "Gelu(tanh)", .since = 1, .until = 1 << 30, .min_in = 1, .max_in = 1, .min_out = 1, .max_out = 1,
    .consumes = ENG_LAYOUT_PLAIN, .produces = ENG_LAYOUT_PLAIN, .infer = eng_infer_same, .run = run_gelu,
    .free_state = eng_prim_cache_free,
};
