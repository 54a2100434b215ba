/* engine/dnnl/matmul.c — MatMul and the fused matmul (ops.h: eng_mm_attr, built by fuse.c) on oneDNN's
 * matmul primitive: fp32, numpy batch broadcasting, a [K,N] operand (the usual linear layer) multiplied
 * as one [M,K] x [K,N] product over all batch rows, constant weights reordered once into the layout the
 * primitive asks for (format `any`, kept in secure memory and shared between the shapes that want the
 * same layout), bias and the post-ops (scale as eltwise linear, GELU / Relu as eltwise, a broadcast add
 * as a binary post-op) executed inside the primitive. One primitive per input shape (dnnl/prim.c cache).
 * What oneDNN cannot take (1-D operands, empty tensors, other types, an add that would enlarge the
 * product) runs as ops/matmul.c's kernel followed by the post-ops in plain C.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

static const eng_mm_attr no_fusion = {.bias = -1};

static const eng_mm_attr *mm_attr(const eng_node *n)
{
    return n->op == &eng_op_fused_matmul ? n->attr : &no_fusion;
}

/* ---------------------------------------------------------------- plain-C fallback */

static float gelu_erf(float x)
{
    return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
}

static float gelu_tanh(float x)
{
    return 0.5f * x * (1.0f + tanhf(0.79788456080286536f * (x + 0.044715f * x * x * x)));
}

/* y (output 0, plain fp32) += t with numpy broadcasting; y grows when t is larger. */
static int add_c(eng_run *r, eng_node *n, eng_tensor *t, cl_err *err)
{
    eng_tensor *y = &r->vals[n->out[0]];
    if (t->dtype != CL_ENGINE_DT_FLOAT)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the fused Add's operand must be float, got %s",
                            cl_engine_dtype_name(t->dtype));
    eng_tensor *ts[2] = {y, t};
    eng_bcast bc;
    if (eng_bcast_init(&bc, ts, 2, n, err) != 0)
        return -1;
    eng_tensor z = {.dtype = CL_ENGINE_DT_FLOAT, .rank = bc.rank};
    memcpy(z.dims, bc.dims, sizeof z.dims);
    if (eng_tensor_alloc(&z, err) != 0)
        return -1;
    const float *yp = y->data, *tp = t->data;
    float *zp = z.data;
    if (bc.rank == 0)
        bc.total = 1;
    BCAST_LOOP(&bc, 2, zp[e] = yp[o[0]] + tp[o[1]]);
    int refs = y->refs;
    eng_tensor_free(y);
    *y = z;
    y->refs = refs;
    return 0;
}

static int posts_c(eng_run *r, eng_node *n, const eng_mm_attr *at, cl_err *err)
{
    eng_tensor *y = &r->vals[n->out[0]];
    if (y->dtype != CL_ENGINE_DT_FLOAT && (at->bias >= 0 || at->n_post))
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "fused post-ops need float, got %s",
                            cl_engine_dtype_name(y->dtype));
    if (at->bias >= 0) {
        eng_tensor *b = eng_in_plain(r, n, at->bias, err);
        int64_t N = y->rank ? y->dims[y->rank - 1] : 1;
        if (!b)
            return -1;
        if (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != N)
            return eng_node_err(err, CL_E_FORMAT, n, "bias %s does not match the product's %lld columns", DIMS(b),
                                (long long)N);
        float *yp = y->data;
        const float *bp = b->data;
        for (int64_t i = 0, ne = eng_numel(y); i < ne; i++)
            yp[i] += bp[i % N];
    }
    for (int k = 0; k < at->n_post; k++) {
        const eng_mm_post *p = &at->post[k];
        if (p->kind == ENG_MMP_ADD) {
            eng_tensor *t = eng_in_plain(r, n, p->in, err);
            if (!t || add_c(r, n, t, err) != 0)
                return -1;
            y = &r->vals[n->out[0]];
            continue;
        }
        float *yp = y->data;
        for (int64_t i = 0, ne = eng_numel(y); i < ne; i++) {
            float v = yp[i];
            switch (p->kind) {
            case ENG_MMP_LINEAR: v = p->alpha * v + p->beta; break;
            case ENG_MMP_RELU: v = v > 0 ? v : 0; break;
            case ENG_MMP_GELU_ERF: v = gelu_erf(v); break;
            case ENG_MMP_GELU_TANH: v = gelu_tanh(v); break;
            case ENG_MMP_ADD: break;
            }
            yp[i] = v;
        }
    }
    return 0;
}

static int run_c(eng_run *r, eng_node *n, const eng_mm_attr *at, eng_tensor *a, eng_tensor *b, cl_err *err)
{
    if (!at->trans_b) {
        if (eng_run_matmul(r, n, err) != 0)
            return -1;
    } else {
        /* Gemm(transB) origin: A [M,K] x B^T with B [N,K] */
        if (a->rank != 2 || b->rank != 2 || a->dims[1] != b->dims[1] || a->dtype != CL_ENGINE_DT_FLOAT ||
            b->dtype != CL_ENGINE_DT_FLOAT)
            return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s (transposed) cannot be multiplied", DIMS(a),
                                DIMS(b));
        int64_t M = a->dims[0], K = a->dims[1], N = b->dims[0], od[2] = {M, N};
        eng_tensor *y = eng_out(r, n, 0, CL_ENGINE_DT_FLOAT, 2, od, err);
        if (!y)
            return -1;
        if (M && N) {
            dnnl_status_t s = dnnl_sgemm('N', 'T', M, N, K, 1.0f, a->data, K, b->data, K, 0.0f, y->data, N);
            if (s != dnnl_success)
                return eng_dnnl_fail(err, s, n, "sgemm");
        }
    }
    return posts_c(r, n, at, err);
}

/* ---------------------------------------------------------------- oneDNN */

typedef struct mm_geom {
    int R;                              /* rank of the oneDNN problem */
    dnnl_dims_t src, wei, dst;           /* wei: the logical [.., K, N] */
    int out_rank;
    int64_t out[CL_ENGINE_MAX_RANK];
    int n_add;
    dnnl_dims_t add[ENG_MM_MAX_POST];
} mm_geom;

/* The oneDNN problem for these operands: 0, or 1 when it is the plain-C kernel's (or wrong: the plain-C
 * kernel reports it). */
static int mm_geometry(const eng_mm_attr *at, const eng_tensor *a, const eng_tensor *b, eng_tensor *const *adds,
                       mm_geom *g)
{
    int ra = a->rank, rb = b->rank;
    if (ra < 2 || rb < 2 || (at->trans_b && rb != 2) || a->dtype != CL_ENGINE_DT_FLOAT ||
        b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(a) <= 0 || eng_numel(b) <= 0)
        return 1;
    int64_t K = a->dims[ra - 1], M = a->dims[ra - 2];
    int64_t Kb = at->trans_b ? b->dims[1] : b->dims[rb - 2], N = at->trans_b ? b->dims[0] : b->dims[rb - 1];
    if (K != Kb)
        return 1;
    int R = ra > rb ? ra : rb;
    int64_t pa[CL_ENGINE_MAX_RANK], pb[CL_ENGINE_MAX_RANK];
    for (int i = 0; i < R - 2; i++) {
        pa[i] = i - (R - ra) >= 0 ? a->dims[i - (R - ra)] : 1;
        pb[i] = i - (R - rb) >= 0 ? b->dims[i - (R - rb)] : 1;
        if (pa[i] != pb[i] && pa[i] != 1 && pb[i] != 1)
            return 1;
        g->out[i] = pa[i] > pb[i] ? pa[i] : pb[i];
    }
    g->out_rank = R;
    g->out[R - 2] = M;
    g->out[R - 1] = N;
    /* every add operand must fit into the product (else it grows: plain C) */
    bool flat = rb == 2;
    g->n_add = 0;
    int64_t padd[ENG_MM_MAX_POST][CL_ENGINE_MAX_RANK];
    for (int k = 0; adds[k]; k++) {
        const eng_tensor *t = adds[k];
        if (t->dtype != CL_ENGINE_DT_FLOAT || t->rank > R)
            return 1;
        bool full = true, row = true;
        for (int i = 0; i < R; i++) {
            int64_t d = i - (R - t->rank) >= 0 ? t->dims[i - (R - t->rank)] : 1;
            if (d != g->out[i] && d != 1)
                return 1;
            padd[k][i] = d;
            full = full && d == g->out[i];
            row = row && (i == R - 1 || d == 1);
        }
        if (full) {
            g->add[k][0] = eng_dims_numel(g->out, R - 1);
            g->add[k][1] = N;
        } else if (row) {
            g->add[k][0] = 1;
            g->add[k][1] = padd[k][R - 1];
        } else {
            flat = false;
        }
        g->n_add++;
    }
    if (flat) { /* all rows of A times one [K,N]: a single 2-D product */
        g->R = 2;
        g->src[0] = eng_numel(a) / K;
        g->src[1] = K;
        g->wei[0] = K;
        g->wei[1] = N;
        g->dst[0] = g->src[0];
        g->dst[1] = N;
        return 0;
    }
    g->R = R;
    for (int i = 0; i < R - 2; i++) {
        g->src[i] = pa[i];
        g->wei[i] = pb[i];
        g->dst[i] = g->out[i];
    }
    g->src[R - 2] = M;
    g->src[R - 1] = K;
    g->wei[R - 2] = K;
    g->wei[R - 1] = N;
    g->dst[R - 2] = M;
    g->dst[R - 1] = N;
    for (int k = 0; k < g->n_add; k++)
        for (int i = 0; i < R; i++)
            g->add[k][i] = padd[k][i];
    return 0;
}

static dnnl_format_tag_t tag_of(int rank)
{
    static const dnnl_format_tag_t tags[] = {dnnl_a, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde, dnnl_abcdef,
                                             dnnl_abcdefg, dnnl_abcdefgh};
    return tags[rank];
}

/* The plain layout of the weights as given: row-major [.., K, N], or [N, K] read transposed. */
static void wei_plain_md(dnnl_memory_desc_t *md, const mm_geom *g, bool trans_b)
{
    if (trans_b) {
        dnnl_dims_t st = {1, g->wei[0]};
        dnnl_memory_desc_init_by_strides(md, 2, g->wei, dnnl_f32, st);
    } else {
        dnnl_memory_desc_init_by_tag(md, g->R, g->wei, dnnl_f32, tag_of(g->R));
    }
}

/* Creates the entry (caller holds the lock): the primitive and, for constant weights, their reordered
 * copy. 1 when oneDNN does not implement it (plain C then). */
static int mm_create(eng_run *r, eng_node *n, const eng_mm_attr *at, const mm_geom *g, const eng_tensor *b,
                     bool const_w, prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, prim_entry **out,
                     cl_err *err)
{
    dnnl_memory_desc_t wmd, bmd, dmd;
    if (const_w)
        dnnl_memory_desc_init_by_tag(&wmd, g->R, g->wei, dnnl_f32, dnnl_format_tag_any);
    else
        wmd = keys[1];
    dnnl_dims_t bd;
    for (int i = 0; i < g->R; i++)
        bd[i] = i == g->R - 1 ? g->dst[i] : 1;
    dnnl_memory_desc_init_by_tag(&bmd, g->R, bd, dnnl_f32, tag_of(g->R));
    dnnl_memory_desc_init_by_tag(&dmd, g->R, g->dst, dnnl_f32, tag_of(g->R));
    dnnl_matmul_desc_t d;
    dnnl_status_t s = dnnl_matmul_desc_init(&d, &keys[0], &wmd, at->bias >= 0 ? &bmd : NULL, &dmd);
    dnnl_primitive_attr_t attr = eng_user_scratch_attr();
    dnnl_post_ops_t po = NULL;
    if (!attr)
        s = dnnl_out_of_memory;
    if (s == dnnl_success && at->n_post)
        s = dnnl_post_ops_create(&po);
    for (int k = 0, ai = 0; s == dnnl_success && k < at->n_post; k++) {
        const eng_mm_post *p = &at->post[k];
        switch (p->kind) {
        case ENG_MMP_LINEAR: s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, p->alpha, p->beta); break;
        case ENG_MMP_RELU: s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_relu, 0, 0); break;
        case ENG_MMP_GELU_ERF: s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_erf, 0, 0); break;
        case ENG_MMP_GELU_TANH: s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_gelu_tanh, 0, 0); break;
        case ENG_MMP_ADD: s = dnnl_post_ops_append_binary(po, dnnl_binary_add, &keys[2 + ai++]); break;
        }
    }
    if (s == dnnl_success && po)
        s = dnnl_primitive_attr_set_post_ops(attr, po);
    dnnl_primitive_desc_t pd = NULL;
    if (s == dnnl_success)
        s = dnnl_primitive_desc_create(&pd, &d, attr, r->m->dnnl, NULL);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    const char *impl = NULL;
    if (s == dnnl_success && dnnl_primitive_desc_query(pd, dnnl_query_impl_info_str, 0, &impl) == dnnl_success &&
        impl && strncmp(impl, "ref", 3) == 0) {
        /* oneDNN's reference kernel (e.g. a binary post-op broadcast it has no fast kernel for: the
         * causal mask [1,S,S] on [B*H,S,S]) measured 400 ms per 12x128x128x64 product: sgemm + C */
        dnnl_primitive_desc_destroy(pd);
        pd = NULL;
        s = dnnl_unimplemented;
    }
    if (s == dnnl_unimplemented) {
        CL_DEBUG(ENG_MOD, "node '%s': oneDNN has no matmul for this case, plain C", n->name);
        return 1;
    }
    if (s != dnnl_success)
        return eng_dnnl_fail(err, s, n, "creating the matmul");
    prim_entry *e = eng_entry_new(c, keys, n_keys, 0, pd, n, err);
    if (!e)
        return -1;
    e->wei_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_weights_md, 0);
    if (const_w) {
        /* weights reordered once (model secrets: secure memory), shared with entries of the same layout */
        for (prim_entry *o = c->head; o; o = o->next)
            if (o != e && o->wei && dnnl_memory_desc_equal(&o->wei_md, &e->wei_md)) {
                e->wei = o->wei;
                e->wei_shared = true;
                break;
            }
        if (!e->wei) {
            size_t wsz = dnnl_memory_desc_get_size(&e->wei_md);
            e->wei = wsz <= 2 * CL_ENGINE_MAX_TENSOR_BYTES ? cl_secmem_alloc(wsz ? wsz : 1, err) : NULL;
            if (!e->wei)
                return wsz > 2 * CL_ENGINE_MAX_TENSOR_BYTES ? eng_node_err(err, CL_E_FORMAT, n, "weights are too large")
                                                             : cl_err_prefix(err, "node '%s' (%s)", n->name, n->op_type);
            s = eng_do_reorder(r, &keys[1], b->data, &e->wei_md, e->wei, NULL, NULL, false, 0);
            if (s != dnnl_success)
                return eng_dnnl_fail(err, s, n, "reordering the weights");
        }
    }
    *out = e;
    return 0;
}

static int run_mm(eng_run *r, eng_node *n, cl_err *err)
{
    const eng_mm_attr *at = mm_attr(n);
    eng_tensor *a, *b;
    if (eng_need_in(r, n, 0, &a, err) || eng_need_in(r, n, 1, &b, err))
        return -1;
    eng_tensor *adds[ENG_MM_MAX_POST + 1] = {0}, *bias = NULL;
    int na = 0;
    for (int k = 0; k < at->n_post; k++)
        if (at->post[k].kind == ENG_MMP_ADD && !(adds[na++] = eng_in_plain(r, n, at->post[k].in, err)))
            return -1;
    if (at->bias >= 0 && !(bias = eng_in_plain(r, n, at->bias, err)))
        return -1;
    mm_geom g;
    if (mm_geometry(at, a, b, adds, &g) != 0 ||
        (bias && (bias->dtype != CL_ENGINE_DT_FLOAT || eng_numel(bias) != g.dst[g.R - 1])))
        return run_c(r, n, at, a, b, err);
    dnnl_memory_desc_t keys[2 + ENG_MM_MAX_POST];
    dnnl_memory_desc_init_by_tag(&keys[0], g.R, g.src, dnnl_f32, tag_of(g.R));
    wei_plain_md(&keys[1], &g, at->trans_b);
    for (int k = 0; k < g.n_add; k++)
        dnnl_memory_desc_init_by_tag(&keys[2 + k], g.R, g.add[k], dnnl_f32, tag_of(g.R));
    int n_keys = 2 + g.n_add;
    bool const_w = r->m->values[n->in[1]].konst != NULL;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, keys, n_keys, 0) : NULL;
    int rc = c ? 0 : -1;
    if (c && !e)
        rc = mm_create(r, n, at, &g, b, const_w, c, keys, n_keys, &e, err);
    pthread_mutex_unlock(&r->m->lock);
    if (rc > 0)
        return run_c(r, n, at, a, b, err);
    if (rc < 0)
        return -1;
    int ids[3 + ENG_MM_MAX_POST];
    dnnl_memory_desc_t mds[3 + ENG_MM_MAX_POST];
    void *ptrs[3 + ENG_MM_MAX_POST];
    int nargs = 0;
    ids[nargs] = DNNL_ARG_SRC;
    mds[nargs] = keys[0];
    ptrs[nargs++] = a->data;
    ids[nargs] = DNNL_ARG_WEIGHTS;
    mds[nargs] = e->wei ? e->wei_md : keys[1];
    ptrs[nargs++] = e->wei ? e->wei : b->data;
    if (bias) {
        ids[nargs] = DNNL_ARG_BIAS;
        dnnl_dims_t bd;
        for (int i = 0; i < g.R; i++)
            bd[i] = i == g.R - 1 ? g.dst[i] : 1;
        dnnl_memory_desc_init_by_tag(&mds[nargs], g.R, bd, dnnl_f32, tag_of(g.R));
        ptrs[nargs++] = bias->data;
    }
    for (int k = 0, ai = 0; k < at->n_post; k++)
        if (at->post[k].kind == ENG_MMP_ADD) {
            ids[nargs] = DNNL_ARG_ATTR_MULTIPLE_POST_OP(k) | DNNL_ARG_SRC_1;
            mds[nargs] = keys[2 + ai];
            ptrs[nargs++] = adds[ai++]->data;
        }
    if (eng_exec_to_output(r, n, e, nargs, ids, mds, ptrs, g.out_rank, g.out, err) != 0)
        return -1;
    eng_tensor *y = &r->vals[n->out[0]];
    y->blocked = false; /* plain: the 2-D product of a flattened batch is the output's row-major data */
    y->md = NULL;
    return 0;
}

int eng_run_matmul_dnnl(eng_run *r, eng_node *n, cl_err *err)
{
    return run_mm(r, n, err);
}

int eng_infer_fused_matmul(eng_infer_ctx *c, cl_err *err)
{
    const eng_mm_attr *at = c->n->attr;
    if (at->trans_b) {
        const eng_vshape *x = &c->in[0], *b = &c->in[1];
        if (x->rank == 2 && b->rank == 2) {
            c->out[0].rank = 2;
            c->out[0].d[0] = x->d[0];
            c->out[0].d[1] = b->d[0];
        }
    } else if (eng_infer_matmul(c, err) != 0) {
        return -1;
    }
    for (int k = 0; k < at->n_post && c->out[0].rank >= 0; k++)
        if (at->post[k].kind == ENG_MMP_ADD) {
            eng_vshape t = c->out[0];
            if (eng_shape_broadcast(c->n, &t, &c->in[at->post[k].in], &c->out[0], err) != 0)
                return -1;
        }
    return 0;
}

const eng_op eng_op_fused_matmul = {
    .name = "FusedMatMul", .since = 1, .until = 1 << 30, .min_in = 2, .max_in = 2 + ENG_MM_MAX_POST + 1,
    .min_out = 1, .max_out = 1, .consumes = ENG_LAYOUT_PLAIN, .produces = ENG_LAYOUT_PLAIN, .no_fold = true,
    .infer = eng_infer_fused_matmul, .run = eng_run_matmul_dnnl, .free_state = eng_prim_cache_free,
};
