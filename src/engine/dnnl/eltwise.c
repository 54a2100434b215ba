/* engine/dnnl/eltwise.c — the layout-preserving kernels: BatchNormalization, Concat, the activations
 * (Relu, Sigmoid, Tanh, LeakyRelu, HardSwish; HardSigmoid over the buffer) and binary arithmetic (Add, Sub,
 * Mul, Div; operands in different layouts reordered to one, never left to oneDNN's reference kernel) run on
 * oneDNN when an input is in a blocked layout (or, for BatchNormalization and Concat, whenever the input is fp32
 * NCHW-like), so activations stay blocked between convolutions; otherwise they fall back to the plain-C
 * kernels of src/engine/ops/.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

int eng_run_batchnorm(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0), *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = eng_in_plain(r, n, i + 1, err);
    bool ok = eng_is_f32_nd(x) && x->dims[1] > 0;
    for (int i = 0; ok && i < 4; i++)
        ok = p[i] && p[i]->dtype == CL_ENGINE_DT_FLOAT && eng_numel(p[i]) == x->dims[1];
    if (!ok)
        return eng_ref_batchnorm(r, n, err);
    dnnl_memory_desc_t in_md;
    eng_tensor_md(x, &in_md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, &in_md, 1, 0) : NULL;
    if (c && !e) {
        unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift |
                         (n->post == ENG_POST_RELU ? dnnl_fuse_norm_relu : 0u);
        dnnl_batch_normalization_desc_t bd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s = dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &in_md,
                                                                     ((const eng_norm_attr *)n->attr)->epsilon, flags);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &bd, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the batch normalization");
        else
            e = eng_entry_new(c, &in_md, 1, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    dnnl_memory_desc_t cmd;
    dnnl_dims_t cd = {x->dims[1]};
    dnnl_memory_desc_init_by_tag(&cmd, 1, cd, dnnl_f32, dnnl_a);
    const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_SCALE, DNNL_ARG_SHIFT, DNNL_ARG_MEAN, DNNL_ARG_VARIANCE};
    const dnnl_memory_desc_t mds[] = {in_md, cmd, cmd, cmd, cmd};
    void *const ptrs[] = {x->data, p[0]->data, p[1]->data, p[2]->data, p[3]->data};
    return eng_exec_to_output(r, n, e, 5, ids, mds, ptrs, x->rank, x->dims, err);
}

int eng_run_concat(eng_run *r, eng_node *n, cl_err *err)
{
    int nin = n->n_in;
    bool any_blocked = false, ok = nin >= 2 && nin <= 64;
    eng_tensor *x0 = eng_in(r, n, 0);
    for (int i = 0; ok && i < nin; i++) {
        eng_tensor *t = eng_in(r, n, i);
        ok = eng_is_f32_nd(t) && t->rank == x0->rank;
        for (int d = 0; ok && d < t->rank; d++)
            ok = t->dims[d] > 0 && (d == 1 || t->dims[d] == x0->dims[d]);
        any_blocked |= ok && t->blocked;
    }
    int64_t ax = ((const eng_axis_attr *)n->attr)->axis;
    if (ok && ax < 0)
        ax += x0->rank;
    if (!ok || !any_blocked || ax != 1)
        return eng_ref_concat(r, n, err);
    dnnl_memory_desc_t mds[64];
    void *ptrs[64];
    int ids[64];
    int64_t od[CL_ENGINE_MAX_RANK];
    memcpy(od, x0->dims, sizeof od);
    od[1] = 0;
    for (int i = 0; i < nin; i++) {
        eng_tensor *t = eng_in(r, n, i);
        eng_tensor_md(t, &mds[i]);
        ptrs[i] = t->data;
        ids[i] = DNNL_ARG_MULTIPLE_SRC + i;
        od[1] += t->dims[1];
    }
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, mds, nin, 0) : NULL;
    if (c && !e) {
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        /* dst NULL: oneDNN picks the output layout from the (blocked) sources */
        dnnl_status_t s = dnnl_concat_primitive_desc_create(&pd, NULL, nin, 1, mds, attr, r->m->dnnl);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the concat");
        else
            e = eng_entry_new(c, mds, nin, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    return eng_exec_to_output(r, n, e, nin, ids, mds, ptrs, x0->rank, od, err);
}

/* A blocked tensor whose buffer holds exactly its elements (no padded channels): an elementwise function
 * can run over the buffer as it is, whatever the order of the elements. */
static bool dense_blocked(const eng_tensor *t)
{
    return t && t->blocked && t->dtype == CL_ENGINE_DT_FLOAT &&
           dnnl_memory_desc_get_size(t->md) == (size_t)eng_numel(t) * sizeof(float);
}

/* HardSigmoid (oneDNN 2.6 has no such eltwise) on a dense blocked tensor, over its buffer; the output keeps
 * the input's layout. */
static int hsigmoid_blocked(eng_run *r, eng_node *n, eng_tensor *x, cl_err *err)
{
    const eng_unary_attr *at = n->attr;
    float a = (float)at->a, b = (float)at->b;
    int64_t cnt = eng_numel(x);
    float *dst = eng_alloc_md(x->md);
    if (!dst)
        return cl_err_nomem(err);
    const float *src = x->data;
    for (int64_t i = 0; i < cnt; i++) {
        float v = a * src[i] + b;
        dst[i] = v < 0.0f ? 0.0f : v > 1.0f ? 1.0f : v;
    }
    int64_t dims[CL_ENGINE_MAX_RANK];
    memcpy(dims, x->dims, sizeof dims);
    eng_set_dnnl_output(r, n, dst, x->rank, dims, x->md);
    return 0;
}

int eng_run_eltwise(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    if (x && (eng_unary_kind)n->op->kind == U_HSIGMOID && dense_blocked(x) && n->attr)
        return hsigmoid_blocked(r, n, x, err);
    if (!x || !x->blocked)
        return eng_run_unary(r, n, err);
    dnnl_alg_kind_t alg;
    float alpha = 0, beta = 0;
    switch ((eng_unary_kind)n->op->kind) {
    case U_RELU: alg = dnnl_eltwise_relu; break;
    case U_SIGMOID: alg = dnnl_eltwise_logistic; break;
    case U_TANH: alg = dnnl_eltwise_tanh; break;
    case U_LEAKY:
        alg = dnnl_eltwise_relu;
        alpha = (float)((const eng_unary_attr *)n->attr)->a;
        break;
    case U_HSWISH: alg = dnnl_eltwise_hardswish; break;
    default: return eng_run_unary(r, n, err);
    }
    dnnl_memory_desc_t md = *x->md;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, &md, 1, 0) : NULL;
    if (c && !e) {
        dnnl_eltwise_desc_t ed;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s = dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg, &md, alpha, beta);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &ed, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the eltwise");
        else
            e = eng_entry_new(c, &md, 1, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    return eng_exec_to_output(r, n, e, 1, ids, &md, ptrs, x->rank, x->dims, err);
}

int eng_run_binary_dnnl(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *a = eng_in(r, n, 0), *b = eng_in(r, n, 1);
    eng_binary_kind k = (eng_binary_kind)n->op->kind;
    bool add = k == B_ADD, mul = k == B_MUL;
    if (n->n_in != 2 || !a || !b || !(add || mul || k == B_SUB || k == B_DIV))
        return eng_run_binary(r, n, err);
    if ((add || mul) && ((!a->blocked && b->blocked) || eng_numel(a) < eng_numel(b))) {
        /* commutative: the full-size blocked operand first (src1 may broadcast, src0 may not) */
        eng_tensor *t = a;
        a = b;
        b = t;
    }
    bool ok = a->blocked && a->dtype == CL_ENGINE_DT_FLOAT && b->dtype == CL_ENGINE_DT_FLOAT && b->rank == a->rank;
    bool same = ok;
    for (int d = 0; ok && d < a->rank; d++) {
        ok = b->dims[d] == a->dims[d] || b->dims[d] == 1;
        same = same && b->dims[d] == a->dims[d];
    }
    if (!ok)
        return eng_run_binary(r, n, err);
    /* operands in different layouts: oneDNN's binary kernels want src1 in src0's layout (or a broadcast
     * operand in plain layout); otherwise it falls to its reference kernel. A full-size src1 is reordered
     * into src0's layout, a broadcast one (squeeze-and-excitation's [N,C,1,1]) made plain. */
    void *b_data = b->data, *tmp = NULL;
    dnnl_memory_desc_t keys[2];
    keys[0] = *a->md;
    eng_tensor_md(b, &keys[1]);
    if (same && !dnnl_memory_desc_equal(&keys[0], &keys[1])) {
        tmp = eng_alloc_md(a->md);
        dnnl_status_t s = tmp ? eng_do_reorder(r, &keys[1], b->data, a->md, tmp, NULL, NULL, false, 0)
                              : dnnl_out_of_memory;
        if (s != dnnl_success) {
            eng_buf_free(tmp);
            return eng_dnnl_fail(err, s, n, "reordering an operand");
        }
        b_data = tmp;
        keys[1] = *a->md;
    } else if (!same && b->blocked) {
        if (eng_make_plain(r, b, err) != 0)
            return -1;
        b_data = b->data;
        eng_tensor_md(b, &keys[1]);
    }
    dnnl_alg_kind_t alg = add ? dnnl_binary_add : mul ? dnnl_binary_mul
                          : k == B_SUB ? dnnl_binary_sub : dnnl_binary_div;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, keys, 2, 0) : NULL;
    if (c && !e) {
        dnnl_binary_desc_t bd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s = dnnl_binary_desc_init(&bd, alg, &keys[0], &keys[1], &keys[0]);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &bd, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the binary primitive");
        else
            e = eng_entry_new(c, keys, 2, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e) {
        eng_buf_free(tmp);
        return -1;
    }
    const int ids[] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1};
    void *const ptrs[] = {a->data, b_data};
    int rc = eng_exec_to_output(r, n, e, 2, ids, keys, ptrs, a->rank, a->dims, err);
    eng_buf_free(tmp);
    return rc;
}

