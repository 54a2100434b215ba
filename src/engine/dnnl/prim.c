/* engine/dnnl/prim.c — the oneDNN plumbing the kernels of src/engine/dnnl/ share (dnnl/dnnl.h): the
 * per-node primitive cache (an entry per input shape and layout: primitive, layouts, reordered weights,
 * reusable memory objects), reorders, buffers for oneDNN layouts, and running a cached primitive into a
 * node's output (left in the primitive's layout; exec.c converts to plain only where a consumer needs
 * it). Scratchpads are user-managed and allocated per execution so concurrent runs never share them.
 * cl_engine_cpu_isa names the instruction set oneDNN dispatches to (for the server's metrics).
 */
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"

const char *cl_engine_cpu_isa(void)
{
    static const struct {
        dnnl_cpu_isa_t isa;
        const char *name;
    } names[] = {{dnnl_cpu_isa_avx512_core_amx, "avx512_core_amx"}, {dnnl_cpu_isa_avx512_core_bf16, "avx512_core_bf16"},
                 {dnnl_cpu_isa_avx512_core_vnni, "avx512_core_vnni"}, {dnnl_cpu_isa_avx512_core, "avx512_core"},
                 {dnnl_cpu_isa_avx512_mic_4ops, "avx512_mic_4ops"}, {dnnl_cpu_isa_avx512_mic, "avx512_mic"},
                 {dnnl_cpu_isa_avx2_vnni, "avx2_vnni"}, {dnnl_cpu_isa_avx2, "avx2"}, {dnnl_cpu_isa_avx, "avx"},
                 {dnnl_cpu_isa_sse41, "sse41"}};
    dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        if (isa == names[i].isa)
            return names[i].name;
    return "unknown";
}

void eng_prim_entry_free(prim_entry *e)
{
    eng_mem_set_free(&e->mems);
    if (e->prim)
        dnnl_primitive_destroy(e->prim);
    if (e->pd)
        dnnl_primitive_desc_destroy(e->pd);
    if (e->src_reorder)
        dnnl_primitive_destroy(e->src_reorder);
    if (!e->wei_shared)
        cl_secmem_free(e->wei);
    free(e->keys);
    free(e);
}

void eng_prim_cache_free(void *state)
{
    prim_cache *c = state;
    prim_entry *e = c->head;
    while (e) {
        prim_entry *nx = e->next;
        eng_prim_entry_free(e);
        e = nx;
    }
    free(c);
}

/* The plain (row-major) tag of a rank. */
dnnl_format_tag_t eng_plain_tag(int rank)
{
    static const dnnl_format_tag_t tags[] = {dnnl_a, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde, dnnl_abcdef};
    return tags[rank];
}

void eng_plain_md(dnnl_memory_desc_t *md, int rank, const int64_t *dims)
{
    dnnl_dims_t d;
    for (int i = 0; i < rank; i++)
        d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(md, rank, d, dnnl_f32, eng_plain_tag(rank));
}

void eng_tensor_md(const eng_tensor *t, dnnl_memory_desc_t *md)
{
    if (t->blocked)
        *md = *t->md;
    else
        eng_plain_md(md, t->rank, t->dims);
}

/* w: the weights for Conv (their shape is part of the key: they may be a graph input), NULL for pooling */
prim_entry *eng_cache_find(prim_cache *c, const eng_tensor *x, const dnnl_memory_desc_t *in_md, bool with_sum,
                           const eng_tensor *w)
{
    for (prim_entry *e = c ? c->head : NULL; e; e = e->next)
        if (e->rank == x->rank && e->with_sum == with_sum &&
            memcmp(e->dims, x->dims, sizeof(int64_t) * (size_t)x->rank) == 0 &&
            (!w || (w->rank == e->w_rank && memcmp(e->w_dims, w->dims, sizeof(int64_t) * (size_t)w->rank) == 0)) &&
            dnnl_memory_desc_equal(&e->in_md, in_md))
            return e;
    return NULL;
}

/* One reorder src->dst. Its memory objects come from slots i0 and i0 + 1 of mems when held, else
 * are made for the call (mems may be NULL then). */
dnnl_status_t eng_do_reorder(eng_run *r, const dnnl_memory_desc_t *smd, void *sp, const dnnl_memory_desc_t *dmd,
                             void *dp, dnnl_primitive_t cached, eng_mem_set *mems, bool held, int i0)
{
    dnnl_memory_t src = NULL, dst = NULL;
    dnnl_primitive_desc_t pd = NULL;
    dnnl_primitive_t prim = cached;
    dnnl_status_t s = eng_mem(r->m->dnnl, mems, held, i0, smd, sp, &src);
    if (s == dnnl_success)
        s = eng_mem(r->m->dnnl, mems, held, i0 + 1, dmd, dp, &dst);
    if (s == dnnl_success && !prim) {
        s = dnnl_reorder_primitive_desc_create(&pd, smd, r->m->dnnl, dmd, r->m->dnnl, NULL);
        if (s == dnnl_success)
            s = dnnl_primitive_create(&prim, pd);
    }
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[] = {{DNNL_ARG_SRC, src}, {DNNL_ARG_DST, dst}};
        s = dnnl_primitive_execute(prim, r->stream, 2, args);
        if (s == dnnl_success)
            s = dnnl_stream_wait(r->stream);
    }
    if (prim && prim != cached)
        dnnl_primitive_destroy(prim);
    if (pd)
        dnnl_primitive_desc_destroy(pd);
    eng_mem_done(held, src);
    eng_mem_done(held, dst);
    return s;
}

void *eng_alloc_md(const dnnl_memory_desc_t *md)
{
    size_t sz = dnnl_memory_desc_get_size(md);
    if (sz > 2 * CL_ENGINE_MAX_TENSOR_BYTES)
        return NULL; /* reported as out of memory */
    sz = (sz + 63) & ~(size_t)63;
    return eng_buf_alloc(sz); /* not zeroed: oneDNN writes whole outputs, padding included */
}
prim_cache *eng_node_cache(eng_run *r, eng_node *n, cl_err *err)
{
    prim_cache *c = n->state;
    if (!c) {
        c = n->state = calloc(1, sizeof *c);
        if (!c)
            cl_err_nomem(err);
    }
    return c;
}

prim_entry *eng_cache_find_keys(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant)
{
    for (prim_entry *e = c->head; e; e = e->next) {
        if (e->n_keys != n_keys || e->variant != variant)
            continue;
        bool eq = true;
        for (int i = 0; eq && i < n_keys; i++)
            eq = dnnl_memory_desc_equal(&e->keys[i], &keys[i]);
        if (eq)
            return e;
    }
    return NULL;
}

/* Creates a cache entry for (keys, variant) from an op descriptor (or a ready pd). Caller holds the lock. */
prim_entry *eng_entry_new(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant,
                          dnnl_primitive_desc_t pd, const eng_node *n, cl_err *err)
{
    prim_entry *e = calloc(1, sizeof *e);
    dnnl_memory_desc_t *k = calloc((size_t)n_keys + 1, sizeof *k);
    if (!e || !k) {
        free(e);
        free(k);
        dnnl_primitive_desc_destroy(pd);
        cl_err_nomem(err);
        return NULL;
    }
    memcpy(k, keys, sizeof *k * (size_t)n_keys);
    e->keys = k;
    e->n_keys = n_keys;
    e->variant = variant;
    e->pd = pd;
    dnnl_status_t s = dnnl_primitive_create(&e->prim, pd);
    if (s != dnnl_success) {
        eng_prim_entry_free(e);
        eng_dnnl_fail(err, s, n, "creating a primitive");
        return NULL;
    }
    e->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    e->scratch_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->next = c->head;
    c->head = e;
    return e;
}

dnnl_primitive_attr_t eng_user_scratch_attr(void)
{
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    return attr;
}

/* Executes e with the given (arg, md, pointer) triples plus DST (a new buffer, returned) and the
 * scratchpad; the result becomes output 0 of n with dims `dims`. */
int eng_exec_to_output(eng_run *r, eng_node *n, prim_entry *e, int nargs, const int *ids,
                       const dnnl_memory_desc_t *mds, void *const *ptrs, int rank, const int64_t *dims, cl_err *err)
{
    enum { MAXA = 80 };
    if (nargs + 2 > MAXA)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many inputs");
    dnnl_exec_arg_t args[MAXA];
    dnnl_memory_t mems[MAXA] = {0};
    void *dst = eng_alloc_md(&e->dst_md), *scratch = NULL;
    dnnl_status_t s = dst ? dnnl_success : dnnl_out_of_memory;
    int na = 0;
    for (int i = 0; s == dnnl_success && i < nargs; i++) {
        s = dnnl_memory_create(&mems[na], &mds[i], r->m->dnnl, ptrs[i]);
        args[na] = (dnnl_exec_arg_t){ids[i], mems[na]};
        na++;
    }
    /* the destination and scratchpad have the entry's layouts: set slots 0 and 1 */
    bool held = eng_mem_take(&e->mems);
    dnnl_memory_t mdst = NULL, msc = NULL;
    if (s == dnnl_success) {
        s = eng_mem(r->m->dnnl, &e->mems, held, 0, &e->dst_md, dst, &mdst);
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_DST, mdst};
    }
    if (s == dnnl_success && dnnl_memory_desc_get_size(&e->scratch_md)) {
        scratch = eng_alloc_md(&e->scratch_md);
        s = scratch ? eng_mem(r->m->dnnl, &e->mems, held, 1, &e->scratch_md, scratch, &msc) : dnnl_out_of_memory;
        args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msc};
    }
    if (s == dnnl_success)
        s = dnnl_primitive_execute(e->prim, r->stream, na, args);
    if (s == dnnl_success)
        s = dnnl_stream_wait(r->stream);
    for (int i = 0; i < MAXA; i++)
        if (mems[i])
            dnnl_memory_destroy(mems[i]);
    eng_mem_done(held, mdst);
    eng_mem_done(held, msc);
    eng_mem_release(&e->mems, held);
    eng_buf_free(scratch);
    if (s != dnnl_success) {
        eng_buf_free(dst);
        return eng_dnnl_fail(err, s, n, "executing");
    }
    eng_set_dnnl_output(r, n, dst, rank, dims, &e->dst_md);
    return 0;
}

void eng_set_dnnl_output(eng_run *r, eng_node *n, void *dst, int rank, const int64_t *dims,
                         const dnnl_memory_desc_t *md)
{
    eng_tensor *y = &r->vals[n->out[0]];
    int refs = y->refs;
    eng_tensor_free(y);
    memset(y, 0, sizeof *y);
    y->refs = refs;
    y->dtype = CL_ENGINE_DT_FLOAT;
    y->rank = rank;
    memcpy(y->dims, dims, sizeof(int64_t) * (size_t)rank);
    y->data = dst;
    y->owned = true;
    y->nbytes = (size_t)eng_dims_numel(y->dims, y->rank) * 4;
    dnnl_memory_desc_t pmd;
    eng_plain_md(&pmd, rank, dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, md);
    y->md = md;
}

bool eng_is_f32_nd(const eng_tensor *t)
{
    if (!t || t->dtype != CL_ENGINE_DT_FLOAT || t->rank < 3 || t->rank > 5)
        return false;
    for (int d = 0; d < t->rank; d++)
        if (t->dims[d] <= 0)
            return false;
    return true;
}
