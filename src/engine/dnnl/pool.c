/* engine/dnnl/pool.c — pooling on oneDNN (MaxPool, AveragePool, GlobalAveragePool, GlobalMaxPool: a
 * primitive per input shape and layout, the output left in the primitive's layout) with its prepare
 * function and shape rule, and LRN (across channels).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

/* MaxPool / AveragePool: the window attributes, ceil_mode, count_include_pad (global pooling: none). */
int eng_prep_pool(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_pool_kind k = (eng_pool_kind)n->op->kind;
    if (k == P_MAX && n->n_out > 1 && n->out[1] >= 0)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the Indices output is not supported");
    eng_window_attr *wa = eng_attr_alloc(n, sizeof *wa, err);
    if (!wa)
        return -1;
    wa->nsp = -1;
    if (k == P_GAVG || k == P_GMAX)
        return 0; /* global pooling ignores attributes */
    int64_t storage;
    if (eng_window_prepare(n, wa, false, err) != 0 || eng_attr_bool(n, "ceil_mode", false, &wa->ceil_mode, err) != 0 ||
        eng_attr_bool(n, "count_include_pad", false, &wa->count_include_pad, err) != 0 ||
        eng_attr_int_in(n, "storage_order", 0, 0, 1, &storage, err) != 0)
        return -1;
    if (!wa->ks)
        return eng_attr_err(err, CL_E_FORMAT, n, "kernel_shape", "with 1-3 entries is required");
    for (size_t i = 0; k == P_AVG && wa->dl && i < wa->cd; i++)
        if (wa->dl[i] != 1)
            return eng_attr_err(err, CL_E_UNSUPPORTED, n, "dilations", "other than 1 (dilated average pooling) are not "
                                "supported");
    return 0;
}

int eng_infer_pool(eng_infer_ctx *c, cl_err *err)
{
    (void)err;
    eng_pool_kind k = (eng_pool_kind)c->n->op->kind;
    const eng_window_attr *wa = c->n->attr;
    const eng_vshape *x = &c->in[0];
    eng_vshape *o = &c->out[0];
    if (x->rank < 3)
        return 0;
    if (k == P_GAVG || k == P_GMAX) {
        *o = *x;
        for (int i = 2; i < x->rank; i++)
            o->d[i] = 1;
        return 0;
    }
    if ((int)wa->ck != x->rank - 2)
        return 0;
    o->rank = x->rank;
    o->d[0] = x->d[0];
    o->d[1] = x->d[1];
    for (int i = 0; i < x->rank - 2; i++)
        o->d[2 + i] = eng_window_out(wa, x->d[2 + i], i, x->rank - 2, wa->ks[i], wa->ceil_mode);
    return 0;
}

int eng_run_pool(eng_run *r, eng_node *n, cl_err *err)
{
    eng_pool_kind k = (eng_pool_kind)n->op->kind;
    const eng_window_attr *wa = n->attr;
    eng_tensor *x = eng_in(r, n, 0);
    if (!x)
        return eng_node_err(err, CL_E_FORMAT, n, "input is required");
    if (x->dtype != CL_ENGINE_DT_FLOAT)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only float input is supported, got %s",
                            cl_engine_dtype_name(x->dtype));
    if (x->rank < 3 || x->rank > 5)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input rank %d is not supported (3-5)", x->rank);
    for (int d = 0; d < x->rank; d++)
        if (x->dims[d] <= 0)
            return eng_node_err(err, CL_E_UNSUPPORTED, n, "empty tensors are not supported");
    dnnl_memory_desc_t in_md;
    eng_tensor_md(x, &in_md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *cache = n->state;
    if (!cache) {
        cache = n->state = calloc(1, sizeof *cache);
        if (!cache) {
            pthread_mutex_unlock(&r->m->lock);
            return cl_err_nomem(err);
        }
    }
    prim_entry *e = eng_cache_find(cache, x, &in_md, false, NULL);
    if (!e) {
        int64_t kern[MAX_SP];
        size_t c = wa->ck;
        const int64_t *ks = wa->ks;
        int nsp = x->rank - 2;
        eng_geom g;
        int rc;
        if (k == P_GAVG || k == P_GMAX) {
            for (int i = 0; i < nsp; i++)
                kern[i] = x->dims[2 + i];
            rc = eng_make_geom(n, wa, x, kern, false, &g, err); /* wa: no attributes */
        } else if ((int)c != nsp) {
            rc = eng_node_err(err, CL_E_FORMAT, n, "kernel_shape has %zu entries for %d spatial dims", c, nsp);
        } else {
            memcpy(kern, ks, sizeof(int64_t) * c);
            rc = eng_make_geom(n, wa, x, kern, wa->ceil_mode, &g, err);
        }
        if (rc == 0 && (k == P_AVG || k == P_GAVG))
            for (int i = 0; i < nsp; i++)
                if (g.d[i] != 1)
                    rc = eng_node_err(err, CL_E_UNSUPPORTED, n, "dilated average pooling is not supported");
        e = rc == 0 ? calloc(1, sizeof *e) : NULL;
        if (rc == 0 && !e)
            rc = cl_err_nomem(err);
        if (rc != 0) {
            pthread_mutex_unlock(&r->m->lock);
            return -1;
        }
        e->rank = x->rank;
        memcpy(e->dims, x->dims, sizeof e->dims);
        e->in_md = in_md;
        dnnl_dims_t dd, st, kk, dl, pl, pr;
        dd[0] = e->out_dims[0] = x->dims[0];
        dd[1] = e->out_dims[1] = x->dims[1];
        for (int i = 0; i < nsp; i++) {
            dd[2 + i] = e->out_dims[2 + i] = g.out[i];
            st[i] = g.s[i];
            kk[i] = g.k[i];
            dl[i] = g.d[i] - 1;
            pl[i] = g.pl[i];
            pr[i] = g.pr[i];
        }
        dnnl_alg_kind_t alg = k == P_MAX || k == P_GMAX ? dnnl_pooling_max
                              : wa->count_include_pad && k == P_AVG ? dnnl_pooling_avg_include_padding
                              : dnnl_pooling_avg_exclude_padding;
        dnnl_memory_desc_t dmd;
        dnnl_memory_desc_init_by_tag(&dmd, x->rank, dd, dnnl_f32, dnnl_format_tag_any);
        dnnl_pooling_v2_desc_t pdsc;
        dnnl_primitive_attr_t attr = NULL;
        dnnl_status_t s = dnnl_pooling_v2_forward_desc_init(&pdsc, dnnl_forward_inference, alg, &in_md, &dmd, st, kk,
                                                            dl, pl, pr);
        if (s == dnnl_success)
            s = dnnl_primitive_attr_create(&attr);
        if (s == dnnl_success)
            s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&e->pd, &pdsc, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s == dnnl_success)
            s = dnnl_primitive_create(&e->prim, e->pd);
        if (s != dnnl_success) {
            eng_prim_entry_free(e);
            pthread_mutex_unlock(&r->m->lock);
            return eng_dnnl_fail(err, s, n, "creating the pooling primitive");
        }
        e->src_md = in_md;
        e->dst_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_dst_md, 0);
        e->scratch_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
        e->next = cache->head;
        cache->head = e;
    }
    pthread_mutex_unlock(&r->m->lock);
    void *dst = eng_alloc_md(&e->dst_md), *scratch = NULL;
    dnnl_status_t s = dst ? dnnl_success : dnnl_out_of_memory;
    if (s == dnnl_success && dnnl_memory_desc_get_size(&e->scratch_md)) {
        scratch = eng_alloc_md(&e->scratch_md);
        if (!scratch)
            s = dnnl_out_of_memory;
    }
    dnnl_memory_t ms = NULL, md = NULL, msc = NULL;
    bool held = eng_mem_take(&e->mems); /* slots: 0 source, 1 destination, 2 scratchpad */
    if (s == dnnl_success)
        s = eng_mem(r->m->dnnl, &e->mems, held, 0, &e->src_md, x->data, &ms);
    if (s == dnnl_success)
        s = eng_mem(r->m->dnnl, &e->mems, held, 1, &e->dst_md, dst, &md);
    if (s == dnnl_success && scratch)
        s = eng_mem(r->m->dnnl, &e->mems, held, 2, &e->scratch_md, scratch, &msc);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[3] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_DST, md}, {DNNL_ARG_SCRATCHPAD, msc}};
        s = dnnl_primitive_execute(e->prim, r->stream, msc ? 3 : 2, args);
        if (s == dnnl_success)
            s = dnnl_stream_wait(r->stream);
    }
    eng_mem_done(held, ms);
    eng_mem_done(held, md);
    eng_mem_done(held, msc);
    eng_mem_release(&e->mems, held);
    eng_buf_free(scratch);
    if (s != dnnl_success) {
        eng_buf_free(dst);
        return eng_dnnl_fail(err, s, n, "pooling");
    }
    eng_tensor *y = &r->vals[n->out[0]];
    int refs = y->refs;
    eng_tensor_free(y);
    memset(y, 0, sizeof *y);
    y->refs = refs;
    y->dtype = CL_ENGINE_DT_FLOAT;
    y->rank = x->rank;
    memcpy(y->dims, e->out_dims, sizeof y->dims);
    y->data = dst;
    y->owned = true;
    y->nbytes = (size_t)eng_dims_numel(y->dims, y->rank) * 4;
    dnnl_memory_desc_t pmd;
    eng_plain_md(&pmd, y->rank, y->dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, &e->dst_md);
    y->md = &e->dst_md;
    return 0;
}

/* ---------------------------------------------------------------- LRN (across channels) */
typedef struct lrn_attr {
    int64_t size;
    float alpha, beta, bias;
} lrn_attr;

int eng_prep_lrn(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    lrn_attr *at = eng_attr_alloc(n, sizeof *at, err);
    if (!at || eng_attr_int(n, "size", 0, &at->size, err) != 0 || eng_attr_float(n, "alpha", 1e-4f, &at->alpha, err) != 0 ||
        eng_attr_float(n, "beta", 0.75f, &at->beta, err) != 0 || eng_attr_float(n, "bias", 1.0f, &at->bias, err) != 0)
        return -1;
    if (at->size < 1 || at->size % 2 == 0 || at->size > 1023)
        return eng_attr_err(err, CL_E_UNSUPPORTED, n, "size", "%lld is not supported (odd sizes 1-1023 only)",
                            (long long)at->size);
    return 0;
}

int eng_run_lrn(eng_run *r, eng_node *n, cl_err *err)
{
    const lrn_attr *at = n->attr;
    eng_tensor *x = eng_in(r, n, 0);
    int64_t size = at->size;
    if (!eng_is_f32_nd(x) || x->rank != 4)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only non-empty 4-D float inputs are supported");
    if (size < 1 || size % 2 == 0 || size > 1023)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "size %lld is not supported (odd sizes only)", (long long)size);
    dnnl_memory_desc_t md;
    eng_tensor_md(x, &md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, &md, 1, 0) : NULL;
    if (c && !e) {
        dnnl_lrn_desc_t ld;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s = dnnl_lrn_forward_desc_init(&ld, dnnl_forward_inference, dnnl_lrn_across_channels, &md, size,
                                                     at->alpha, at->beta, at->bias);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &ld, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the LRN");
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
