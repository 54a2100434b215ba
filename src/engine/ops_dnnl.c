/* engine/ops_dnnl.c — the kernels that run on oneDNN primitives: Conv (with the fused BatchNorm,
 * activation and residual-sum post-ops prepared by graph.c), MaxPool, AveragePool,
 * GlobalAveragePool and GlobalMaxPool. Primitives are created per input shape and layout on first
 * use (the "plan" for that shape) and cached on the node under the model lock; weights are
 * reordered once per chosen layout into oneDNN's preferred blocked format. Outputs stay in the
 * primitive's (blocked) layout; exec.c converts to plain only where a consumer needs it.
 * Scratchpads are user-managed and allocated per execution so concurrent runs never share them.
 * cl_engine_cpu_isa names the instruction set oneDNN dispatches to (for the server's metrics).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/internal.h"

#define MAX_SP 3 /* spatial dims */

typedef struct prim_entry {
    struct prim_entry *next;
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK]; /* input dims */
    dnnl_memory_desc_t in_md;        /* the incoming tensor's layout */
    bool with_sum;
    dnnl_primitive_desc_t pd;
    dnnl_primitive_t prim;
    dnnl_memory_desc_t src_md, dst_md, wei_md, bias_md, scratch_md;
    dnnl_primitive_t src_reorder; /* in_md -> src_md when they differ */
    int wplain_rank;              /* the weights' plain shape (goihw for groups) */
    int w_rank;                   /* the ONNX weights' shape (Conv cache key) */
    int64_t w_dims[CL_ENGINE_MAX_RANK];
    int64_t wplain_dims[CL_ENGINE_MAX_RANK];
    void *wei;                    /* reordered weights (owned unless wei_shared) */
    bool wei_shared;
    int64_t out_dims[CL_ENGINE_MAX_RANK];
    dnnl_memory_desc_t *keys; /* extra key layouts (Concat: every input; binary: the second input) */
    int n_keys;
    int variant;              /* kernel-specific part of the key */
    eng_mem_set mems;         /* the arguments' memory objects (slots: see each kernel) */
} prim_entry;

typedef struct prim_cache {
    prim_entry *head;
} prim_cache;

static void free_entry(prim_entry *e)
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

static void free_cache(void *state)
{
    prim_cache *c = state;
    prim_entry *e = c->head;
    while (e) {
        prim_entry *nx = e->next;
        free_entry(e);
        e = nx;
    }
    free(c);
}

/* Activation layout for a 2-D convolution's source or destination with `channels` channels: the
 * channel-blocked layout of the CPU's vector width (nChw16c with AVX-512, nChw8c with AVX2) when the
 * channels fill whole blocks, else whatever oneDNN prefers. oneDNN 2.6 left to itself picks nhwc and
 * its brgemm kernels; on ResNet-50 batch 8 (AVX-512) the blocked direct kernels measured 10-15% faster,
 * batch 1 the same. */
static dnnl_format_tag_t conv_act_tag(int64_t channels)
{
    static int block = -1; /* benign race: every thread computes the same value */
    if (block < 0) {
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        block = isa >= dnnl_cpu_isa_avx512_core ? 16 : isa >= dnnl_cpu_isa_avx2 ? 8 : 0;
    }
    if (block && channels % block == 0)
        return block == 16 ? dnnl_aBcd16b : dnnl_aBcd8b;
    return dnnl_format_tag_any;
}

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

static dnnl_format_tag_t plain_tag(int rank)
{
    static const dnnl_format_tag_t tags[] = {dnnl_a, dnnl_a, dnnl_ab, dnnl_abc, dnnl_abcd, dnnl_abcde, dnnl_abcdef};
    return tags[rank];
}

static void plain_md(dnnl_memory_desc_t *md, int rank, const int64_t *dims)
{
    dnnl_dims_t d;
    for (int i = 0; i < rank; i++)
        d[i] = dims[i];
    dnnl_memory_desc_init_by_tag(md, rank, d, dnnl_f32, plain_tag(rank));
}

/* The layout of a run-time tensor. */
static void tensor_md(const eng_tensor *t, dnnl_memory_desc_t *md)
{
    if (t->blocked)
        *md = *t->md;
    else
        plain_md(md, t->rank, t->dims);
}

/* w: the weights for Conv (their shape is part of the key: they may be a graph input), NULL for pooling */
static prim_entry *cache_find(prim_cache *c, const eng_tensor *x, const dnnl_memory_desc_t *in_md, bool with_sum,
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
static dnnl_status_t do_reorder(eng_run *r, const dnnl_memory_desc_t *smd, void *sp, const dnnl_memory_desc_t *dmd,
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

static void *alloc_md(const dnnl_memory_desc_t *md)
{
    size_t sz = dnnl_memory_desc_get_size(md);
    if (sz > 2 * CL_ENGINE_MAX_TENSOR_BYTES)
        return NULL; /* reported as out of memory */
    sz = (sz + 63) & ~(size_t)63;
    return eng_buf_alloc(sz); /* not zeroed: oneDNN writes whole outputs, padding included */
}

/* ---------------------------------------------------------------- geometry */

typedef struct geom {
    int nsp;
    int64_t k[MAX_SP], s[MAX_SP], d[MAX_SP], pl[MAX_SP], pr[MAX_SP], out[MAX_SP];
} geom;

/* Kernel, strides, dilations, pads (explicit or auto_pad) and output sizes for conv/pool. */
static int make_geom(const eng_node *n, const eng_tensor *x, const int64_t *kernel, bool ceil_mode, geom *g,
                     cl_err *err)
{
    int nsp = x->rank - 2;
    if (nsp < 1 || nsp > MAX_SP)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input %s: only 1-3 spatial dimensions are supported",
                            eng_dims_str(x->dims, x->rank, (char[96]){0}, 96));
    g->nsp = nsp;
    size_t cs, cd, cp;
    const int64_t *st = eng_attr_ints(n, "strides", &cs), *dl = eng_attr_ints(n, "dilations", &cd),
                  *pads = eng_attr_ints(n, "pads", &cp);
    if ((st && (int)cs != nsp) || (dl && (int)cd != nsp) || (pads && (int)cp != 2 * nsp))
        return eng_node_err(err, CL_E_FORMAT, n, "strides/dilations/pads do not match %d spatial dims", nsp);
    const char *ap = eng_attr_s(n, "auto_pad", "NOTSET");
    for (int i = 0; i < nsp; i++) {
        g->k[i] = kernel[i];
        g->s[i] = st ? st[i] : 1;
        g->d[i] = dl ? dl[i] : 1;
        g->pl[i] = pads ? pads[i] : 0;
        g->pr[i] = pads ? pads[i + nsp] : 0;
        int64_t in = x->dims[2 + i];
        if (g->k[i] < 1 || g->s[i] < 1 || g->d[i] < 1 || g->pl[i] < 0 || g->pr[i] < 0 || g->k[i] > 65536 ||
            g->s[i] > 65536 || g->d[i] > 65536 || g->pl[i] > 65536 || g->pr[i] > 65536)
            return eng_node_err(err, CL_E_FORMAT, n, "invalid kernel/stride/dilation/pad values");
        int64_t ext = (g->k[i] - 1) * g->d[i] + 1;
        if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
            int64_t o = (in + g->s[i] - 1) / g->s[i];
            int64_t tot = (o - 1) * g->s[i] + ext - in;
            if (tot < 0)
                tot = 0;
            g->pl[i] = strcmp(ap, "SAME_UPPER") == 0 ? tot / 2 : tot - tot / 2;
            g->pr[i] = tot - g->pl[i];
        } else if (strcmp(ap, "VALID") == 0) {
            g->pl[i] = g->pr[i] = 0;
        } else if (strcmp(ap, "NOTSET") != 0) {
            return eng_node_err(err, CL_E_FORMAT, n, "unknown auto_pad '%s'", ap);
        }
        int64_t span = in + g->pl[i] + g->pr[i] - ext;
        if (span < 0)
            return eng_node_err(err, CL_E_FORMAT, n, "kernel is larger than the padded input");
        int64_t o = ceil_mode ? (span + g->s[i] - 1) / g->s[i] + 1 : span / g->s[i] + 1;
        if (ceil_mode && (o - 1) * g->s[i] >= in + g->pl[i])
            o--; /* the last window must start inside the input or left pad */
        g->out[i] = o;
        /* right pad so that oneDNN's size equation holds exactly */
        g->pr[i] = (o - 1) * g->s[i] + ext - in - g->pl[i];
    }
    return 0;
}

/* ---------------------------------------------------------------- Conv */

static int check_conv(cl_engine_model *m, eng_node *n, cl_err *err)
{
    if (n->in[1] < 0)
        return eng_node_err(err, CL_E_FORMAT, n, "weights are required");
    return 0;
}

static dnnl_alg_kind_t post_alg(eng_post_kind k)
{
    return k == ENG_POST_RELU ? dnnl_eltwise_relu : k == ENG_POST_SWISH ? dnnl_eltwise_swish : dnnl_eltwise_clip;
}

static int conv_create(eng_run *r, eng_node *n, const eng_tensor *x, const eng_tensor *w, const eng_tensor *b,
                       const dnnl_memory_desc_t *in_md, bool with_sum, prim_cache *cache, prim_entry **out,
                       cl_err *err)
{
    if (w->dtype != CL_ENGINE_DT_FLOAT || w->rank != x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "weights must be float with the input's rank");
    int64_t group = eng_attr_i(n, "group", 1);
    int64_t C = x->dims[1], OC = w->dims[0];
    if (group < 1 || C % group || OC % group || w->dims[1] * group != C)
        return eng_node_err(err, CL_E_FORMAT, n, "weights %s do not match input %s with group %lld",
                            eng_dims_str(w->dims, w->rank, (char[96]){0}, 96),
                            eng_dims_str(x->dims, x->rank, (char[96]){0}, 96), (long long)group);
    size_t ck;
    const int64_t *ks = eng_attr_ints(n, "kernel_shape", &ck);
    if (ks && (int)ck != x->rank - 2)
        return eng_node_err(err, CL_E_FORMAT, n, "kernel_shape has %zu entries", ck);
    for (size_t i = 0; ks && i < ck; i++)
        if (ks[i] != w->dims[2 + i])
            return eng_node_err(err, CL_E_FORMAT, n, "kernel_shape does not match the weights");
    geom g;
    if (make_geom(n, x, w->dims + 2, false, &g, err) != 0)
        return -1;
    if (b && (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != OC))
        return eng_node_err(err, CL_E_FORMAT, n, "bias must be float with %lld elements", (long long)OC);
    prim_entry *e = calloc(1, sizeof *e);
    if (!e)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    e->rank = x->rank;
    memcpy(e->dims, x->dims, sizeof e->dims);
    e->in_md = *in_md;
    e->with_sum = with_sum;
    e->w_rank = w->rank;
    memcpy(e->w_dims, w->dims, sizeof e->w_dims);
    int nsp = g.nsp;
    dnnl_dims_t sd, wd, dd, bd, st, dl, pl, pr;
    sd[0] = x->dims[0];
    sd[1] = C;
    dd[0] = x->dims[0];
    dd[1] = OC;
    e->out_dims[0] = x->dims[0];
    e->out_dims[1] = OC;
    for (int i = 0; i < nsp; i++) {
        sd[2 + i] = x->dims[2 + i];
        dd[2 + i] = g.out[i];
        e->out_dims[2 + i] = g.out[i];
        st[i] = g.s[i];
        dl[i] = g.d[i] - 1;
        pl[i] = g.pl[i];
        pr[i] = g.pr[i];
    }
    int wr;
    if (group > 1) {
        wd[0] = group;
        wd[1] = OC / group;
        wd[2] = C / group;
        for (int i = 0; i < nsp; i++)
            wd[3 + i] = w->dims[2 + i];
        wr = x->rank + 1;
    } else {
        for (int i = 0; i < x->rank; i++)
            wd[i] = w->dims[i];
        wr = x->rank;
    }
    bd[0] = OC;
    dnnl_memory_desc_t smd, wmd, dmd, bmd;
    bool blocked = x->rank == 4 && group == 1;
    dnnl_memory_desc_init_by_tag(&smd, x->rank, sd, dnnl_f32, blocked ? conv_act_tag(C) : dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&wmd, wr, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dmd, x->rank, dd, dnnl_f32, blocked ? conv_act_tag(OC) : dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    dnnl_convolution_desc_t cd;
    dnnl_status_t s = dnnl_dilated_convolution_forward_desc_init(&cd, dnnl_forward_inference, dnnl_convolution_direct,
                                                                 &smd, &wmd, b ? &bmd : NULL, &dmd, st, dl, pl, pr);
    dnnl_primitive_attr_t attr = NULL;
    dnnl_post_ops_t po = NULL;
    if (s == dnnl_success)
        s = dnnl_primitive_attr_create(&attr);
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    if (s == dnnl_success)
        s = dnnl_post_ops_create(&po);
    if (s == dnnl_success && n->post != ENG_POST_NONE)
        s = dnnl_post_ops_append_eltwise(po, 1.0f, post_alg(n->post),
                                         n->post == ENG_POST_CLIP ? n->post_lo : n->post == ENG_POST_SWISH ? 1.0f : 0.0f,
                                         n->post == ENG_POST_CLIP ? n->post_hi : 0.0f);
    if (s == dnnl_success && with_sum) {
        s = dnnl_post_ops_append_sum(po, 1.0f);
        if (s == dnnl_success && n->post2 != ENG_POST_NONE)
            s = dnnl_post_ops_append_eltwise(po, 1.0f, post_alg(n->post2), 0.0f, 0.0f);
    }
    if (s == dnnl_success)
        s = dnnl_primitive_attr_set_post_ops(attr, po);
    /* 3x3 stride-1 convolutions: oneDNN's Winograd kernels where it has them (fewer multiplications;
     * measured on ResNet-50 with AVX-512: batch 8 ~10% faster, batch 1 ~3%, max error vs PyTorch as
     * small as direct convolution's). Anything else, or no Winograd kernel here: direct. */
    bool wino = s == dnnl_success && !r->m->direct_conv && nsp == 2 && group == 1 && wd[2] == 3 && wd[3] == 3 &&
                st[0] == 1 && st[1] == 1 && dl[0] == 0 && dl[1] == 0;
    if (wino) {
        dnnl_convolution_desc_t wcd;
        if (dnnl_dilated_convolution_forward_desc_init(&wcd, dnnl_forward_inference, dnnl_convolution_winograd, &smd,
                                                       &wmd, b ? &bmd : NULL, &dmd, st, dl, pl, pr) != dnnl_success ||
            dnnl_primitive_desc_create(&e->pd, &wcd, attr, r->m->dnnl, NULL) != dnnl_success) {
            e->pd = NULL;
            wino = false;
        }
    }
    if (s == dnnl_success && !wino)
        s = dnnl_primitive_desc_create(&e->pd, &cd, attr, r->m->dnnl, NULL);
    if (po)
        dnnl_post_ops_destroy(po);
    if (attr)
        dnnl_primitive_attr_destroy(attr);
    if (s == dnnl_success)
        s = dnnl_primitive_create(&e->prim, e->pd);
    if (s != dnnl_success) {
        free_entry(e);
        return eng_dnnl_fail(err, s, n, "creating the convolution");
    }
    e->src_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_src_md, 0);
    e->wei_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_weights_md, 0);
    e->dst_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_dst_md, 0);
    e->scratch_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_scratchpad_md, 0);
    if (!dnnl_memory_desc_equal(&e->src_md, in_md)) {
        dnnl_primitive_desc_t rpd;
        s = dnnl_reorder_primitive_desc_create(&rpd, in_md, r->m->dnnl, &e->src_md, r->m->dnnl, NULL);
        if (s == dnnl_success) {
            s = dnnl_primitive_create(&e->src_reorder, rpd);
            dnnl_primitive_desc_destroy(rpd);
        }
    }
    /* weights: share with another entry using the same layout, else reorder once; weights that
     * are not constants (a graph input) are reordered on every run instead (wei stays NULL) */
    bool const_w = n->in[1] >= 0 && r->m->values[n->in[1]].konst != NULL;
    e->wplain_rank = wr;
    for (int i = 0; i < wr; i++)
        e->wplain_dims[i] = wd[i];
    if (!const_w) {
        *out = e;
        return 0;
    }
    for (prim_entry *o = cache->head; s == dnnl_success && o; o = o->next)
        if (o->wei && dnnl_memory_desc_equal(&o->wei_md, &e->wei_md)) {
            e->wei = o->wei;
            e->wei_shared = true;
            break;
        }
    if (s == dnnl_success && !e->wei) {
        /* the reordered weights are model secrets: secure memory */
        size_t wsz = dnnl_memory_desc_get_size(&e->wei_md);
        e->wei = wsz <= 2 * CL_ENGINE_MAX_TENSOR_BYTES ? cl_secmem_alloc(wsz ? wsz : 1, err) : NULL;
        if (!e->wei) {
            free_entry(e);
            if (wsz > 2 * CL_ENGINE_MAX_TENSOR_BYTES)
                return eng_node_err(err, CL_E_FORMAT, n, "weights are too large");
            return cl_err_prefix(err, "node '%s' (%s)", n->name, n->op_type);
        } else {
            dnnl_memory_desc_t wplain;
            dnnl_memory_desc_init_by_tag(&wplain, wr, wd, dnnl_f32, plain_tag(wr));
            s = do_reorder(r, &wplain, w->data, &e->wei_md, e->wei, NULL, NULL, false, 0);
        }
    }
    if (s != dnnl_success) {
        free_entry(e);
        return eng_dnnl_fail(err, s, n, "preparing the convolution");
    }
    *out = e;
    return 0;
}

/* y = y + s with numpy broadcasting, then the post-sum activation: the unfused form of a residual
 * Add whose other input does not have the convolution output's shape. */
static int add_broadcast(eng_run *r, const eng_node *n, eng_tensor *y, eng_tensor *s, cl_err *err)
{
    if (eng_make_plain(r, y, err) != 0 || eng_make_plain(r, s, err) != 0)
        return -1;
    int rank = y->rank > s->rank ? y->rank : s->rank;
    int64_t od[CL_ENGINE_MAX_RANK], sy[CL_ENGINE_MAX_RANK], ss[CL_ENGINE_MAX_RANK];
    bool ok = s->dtype == CL_ENGINE_DT_FLOAT;
    for (int d = 0; ok && d < rank; d++) {
        int dy = d - (rank - y->rank), ds = d - (rank - s->rank);
        int64_t a = dy >= 0 ? y->dims[dy] : 1, c = ds >= 0 ? s->dims[ds] : 1;
        ok = a == c || a == 1 || c == 1;
        od[d] = a == 1 ? c : a;
    }
    if (!ok)
        return eng_node_err(err, CL_E_FORMAT, n, "residual input %s cannot be added to the convolution output %s",
                            eng_dims_str(s->dims, s->rank, (char[96]){0}, 96),
                            eng_dims_str(y->dims, y->rank, (char[96]){0}, 96));
    int64_t ay = 1, as = 1;
    for (int d = rank - 1; d >= 0; d--) {
        int dy = d - (rank - y->rank), ds = d - (rank - s->rank);
        int64_t a = dy >= 0 ? y->dims[dy] : 1, c = ds >= 0 ? s->dims[ds] : 1;
        sy[d] = a == 1 ? 0 : ay;
        ss[d] = c == 1 ? 0 : as;
        ay *= a;
        as *= c;
    }
    eng_tensor o = {.dtype = CL_ENGINE_DT_FLOAT, .rank = rank};
    memcpy(o.dims, od, sizeof(int64_t) * (size_t)rank);
    if (eng_tensor_alloc(&o, err) != 0)
        return -1;
    float *op = o.data;
    const float *yp = y->data, *sp = s->data;
    int64_t N = eng_numel(&o), idx[CL_ENGINE_MAX_RANK] = {0}, oy = 0, os = 0;
    bool relu = n->post2 == ENG_POST_RELU;
    for (int64_t i = 0; i < N; i++) {
        float v = yp[oy] + sp[os];
        op[i] = relu && v < 0 ? 0 : v;
        for (int d = rank - 1; d >= 0; d--) {
            idx[d]++;
            oy += sy[d];
            os += ss[d];
            if (idx[d] < od[d])
                break;
            oy -= sy[d] * od[d];
            os -= ss[d] * od[d];
            idx[d] = 0;
        }
    }
    int refs = y->refs;
    eng_tensor_free(y);
    *y = o;
    y->refs = refs;
    return 0;
}

static int run_conv(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    eng_tensor *w = eng_in_plain(r, n, 1, err);
    eng_tensor *b = n->n_in > 2 && n->in[2] >= 0 ? eng_in_plain(r, n, 2, err) : NULL;
    eng_tensor *sum = n->sum_in >= 0 ? eng_in(r, n, n->sum_in) : NULL;
    if (!x || !w)
        return eng_node_err(err, CL_E_FORMAT, n, "X and W are required");
    if (x->dtype != CL_ENGINE_DT_FLOAT)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only float input is supported, got %s",
                            cl_engine_dtype_name(x->dtype));
    if (x->rank < 3 || x->rank > 5)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input rank %d is not supported (3-5)", x->rank);
    for (int d = 0; d < x->rank; d++)
        if (x->dims[d] <= 0 || (d < w->rank && w->dims[d] <= 0))
            return eng_node_err(err, CL_E_UNSUPPORTED, n, "empty tensors are not supported");
    dnnl_memory_desc_t in_md;
    tensor_md(x, &in_md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *cache = n->state;
    if (!cache) {
        cache = n->state = calloc(1, sizeof *cache);
        if (!cache) {
            pthread_mutex_unlock(&r->m->lock);
            return cl_err_set(err, CL_E_NOMEM, "out of memory");
        }
    }
    bool with_sum = sum != NULL;
    prim_entry *e = cache_find(cache, x, &in_md, with_sum, w);
    if (!e) {
        if (conv_create(r, n, x, w, b, &in_md, with_sum, cache, &e, err) != 0) {
            pthread_mutex_unlock(&r->m->lock);
            return -1;
        }
        e->next = cache->head;
        cache->head = e;
    }
    pthread_mutex_unlock(&r->m->lock);
    bool sum_ok = sum && sum->dtype == CL_ENGINE_DT_FLOAT && sum->rank == x->rank &&
                  memcmp(sum->dims, e->out_dims, sizeof(int64_t) * (size_t)x->rank) == 0;
    if (b && (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != e->out_dims[1]))
        return eng_node_err(err, CL_E_FORMAT, n, "bias must be float with %lld elements", (long long)e->out_dims[1]);
    eng_tensor *bsum = NULL; /* a fused Add whose other input broadcasts: added after the conv */
    if (sum && !sum_ok) {
        bsum = sum;
        sum = NULL;
        pthread_mutex_lock(&r->m->lock);
        prim_entry *e2 = cache_find(cache, x, &in_md, false, w);
        if (!e2) {
            if (conv_create(r, n, x, w, b, &in_md, false, cache, &e2, err) != 0) {
                pthread_mutex_unlock(&r->m->lock);
                return -1;
            }
            e2->next = cache->head;
            cache->head = e2;
        }
        pthread_mutex_unlock(&r->m->lock);
        e = e2;
    }
    /* memory object slots: 0 source, 1 weights, 2 destination, 3 bias, 4 scratchpad, 5-6 the source
     * reorder */
    bool held = eng_mem_take(&e->mems);
    /* source in the primitive's layout */
    void *src = x->data, *tmp_src = NULL, *dst = NULL, *scratch = NULL;
    dnnl_status_t s = dnnl_success;
    if (e->src_reorder) {
        tmp_src = alloc_md(&e->src_md);
        if (!tmp_src) {
            eng_mem_release(&e->mems, held);
            return cl_err_set(err, CL_E_NOMEM, "out of memory");
        }
        s = do_reorder(r, &in_md, x->data, &e->src_md, tmp_src, e->src_reorder, &e->mems, held, 5);
        src = tmp_src;
    }
    /* destination: with a residual sum it must start as the residual, in dst layout */
    bool stolen = false;
    if (s == dnnl_success && sum) {
        dnnl_memory_desc_t sum_md;
        tensor_md(sum, &sum_md);
        if (sum->owned && sum->refs == 1 && dnnl_memory_desc_equal(&sum_md, &e->dst_md)) {
            dst = sum->data; /* last use of the residual: accumulate in place */
            stolen = true;
        } else {
            dst = alloc_md(&e->dst_md);
            if (!dst)
                s = dnnl_out_of_memory;
            else if (dnnl_memory_desc_equal(&sum_md, &e->dst_md))
                memcpy(dst, sum->data, dnnl_memory_desc_get_size(&e->dst_md));
            else
                s = do_reorder(r, &sum_md, sum->data, &e->dst_md, dst, NULL, NULL, false, 0);
        }
    } else if (s == dnnl_success) {
        dst = alloc_md(&e->dst_md);
        if (!dst)
            s = dnnl_out_of_memory;
    }
    size_t ssz = dnnl_memory_desc_get_size(&e->scratch_md);
    if (s == dnnl_success && ssz) {
        scratch = alloc_md(&e->scratch_md);
        if (!scratch)
            s = dnnl_out_of_memory;
    }
    void *wei = e->wei, *tmp_wei = NULL;
    if (s == dnnl_success && !wei) { /* weights computed at run time: reorder them for this run */
        tmp_wei = alloc_md(&e->wei_md);
        if (!tmp_wei) {
            s = dnnl_out_of_memory;
        } else {
            dnnl_memory_desc_t wplain;
            dnnl_dims_t wd;
            for (int i = 0; i < e->wplain_rank; i++)
                wd[i] = e->wplain_dims[i];
            dnnl_memory_desc_init_by_tag(&wplain, e->wplain_rank, wd, dnnl_f32, plain_tag(e->wplain_rank));
            s = do_reorder(r, &wplain, w->data, &e->wei_md, tmp_wei, NULL, NULL, false, 0);
        }
        wei = tmp_wei;
    }
    dnnl_memory_t ms = NULL, mw = NULL, mb = NULL, md = NULL, msc = NULL;
    dnnl_engine_t eng = r->m->dnnl;
    if (s == dnnl_success)
        s = eng_mem(eng, &e->mems, held, 0, &e->src_md, src, &ms);
    if (s == dnnl_success)
        s = eng_mem(eng, &e->mems, held && wei == e->wei, 1, &e->wei_md, wei, &mw);
    if (s == dnnl_success)
        s = eng_mem(eng, &e->mems, held, 2, &e->dst_md, dst, &md);
    if (s == dnnl_success && b) {
        dnnl_memory_desc_t bmd;
        dnnl_dims_t bd = {e->out_dims[1]};
        dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
        s = eng_mem(eng, &e->mems, held, 3, &bmd, b->data, &mb);
    }
    if (s == dnnl_success && scratch)
        s = eng_mem(eng, &e->mems, held, 4, &e->scratch_md, scratch, &msc);
    if (s == dnnl_success) {
        dnnl_exec_arg_t args[5] = {{DNNL_ARG_SRC, ms}, {DNNL_ARG_WEIGHTS, mw}, {DNNL_ARG_DST, md}};
        int na = 3;
        if (mb)
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, mb};
        if (msc)
            args[na++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, msc};
        s = dnnl_primitive_execute(e->prim, r->stream, na, args);
        if (s == dnnl_success)
            s = dnnl_stream_wait(r->stream);
    }
    eng_mem_done(held, ms);
    eng_mem_done(held && wei == e->wei, mw);
    eng_mem_done(held, md);
    eng_mem_done(held, mb);
    eng_mem_done(held, msc);
    eng_mem_release(&e->mems, held);
    eng_buf_free(tmp_src);
    eng_buf_free(tmp_wei);
    eng_buf_free(scratch);
    if (s != dnnl_success) {
        if (!stolen)
            eng_buf_free(dst);
        return eng_dnnl_fail(err, s, n, "convolution");
    }
    if (stolen)
        sum->owned = false; /* ownership moves to the output */
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
    plain_md(&pmd, y->rank, y->dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, &e->dst_md);
    y->md = &e->dst_md;
    return bsum ? add_broadcast(r, n, y, bsum, err) : 0;
}

/* ---------------------------------------------------------------- pooling */

typedef enum { P_MAX, P_AVG, P_GAVG, P_GMAX } pool_kind;

static int check_pool(cl_engine_model *m, eng_node *n, cl_err *err)
{
    if (strcmp(n->op_type, "MaxPool") == 0 && n->n_out > 1 && n->out[1] >= 0)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "the Indices output is not supported");
    if (strcmp(n->op_type, "MaxPool") == 0 || strcmp(n->op_type, "AveragePool") == 0) {
        size_t c;
        if (!eng_attr_ints(n, "kernel_shape", &c) || c < 1 || c > MAX_SP)
            return eng_node_err(err, CL_E_FORMAT, n, "kernel_shape with 1-3 entries is required");
    }
    return 0;
}

static int run_pool(eng_run *r, eng_node *n, cl_err *err)
{
    pool_kind k = strcmp(n->op_type, "MaxPool") == 0 ? P_MAX : strcmp(n->op_type, "AveragePool") == 0 ? P_AVG
                  : strcmp(n->op_type, "GlobalAveragePool") == 0 ? P_GAVG : P_GMAX;
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
    tensor_md(x, &in_md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *cache = n->state;
    if (!cache) {
        cache = n->state = calloc(1, sizeof *cache);
        if (!cache) {
            pthread_mutex_unlock(&r->m->lock);
            return cl_err_set(err, CL_E_NOMEM, "out of memory");
        }
    }
    prim_entry *e = cache_find(cache, x, &in_md, false, NULL);
    if (!e) {
        int64_t kern[MAX_SP];
        size_t c = 0;
        const int64_t *ks = eng_attr_ints(n, "kernel_shape", &c);
        int nsp = x->rank - 2;
        geom g;
        int rc;
        if (k == P_GAVG || k == P_GMAX) {
            for (int i = 0; i < nsp; i++)
                kern[i] = x->dims[2 + i];
            eng_node tmp = *n;
            tmp.n_attrs = 0; /* global pooling ignores attributes */
            rc = make_geom(&tmp, x, kern, false, &g, err);
        } else if ((int)c != nsp) {
            rc = eng_node_err(err, CL_E_FORMAT, n, "kernel_shape has %zu entries for %d spatial dims", c, nsp);
        } else {
            memcpy(kern, ks, sizeof(int64_t) * c);
            rc = make_geom(n, x, kern, eng_attr_i(n, "ceil_mode", 0) != 0, &g, err);
        }
        if (rc == 0 && (k == P_AVG || k == P_GAVG))
            for (int i = 0; i < nsp; i++)
                if (g.d[i] != 1)
                    rc = eng_node_err(err, CL_E_UNSUPPORTED, n, "dilated average pooling is not supported");
        e = rc == 0 ? calloc(1, sizeof *e) : NULL;
        if (rc == 0 && !e)
            rc = cl_err_set(err, CL_E_NOMEM, "out of memory");
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
                              : eng_attr_i(n, "count_include_pad", 0) && k == P_AVG ? dnnl_pooling_avg_include_padding
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
            free_entry(e);
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
    void *dst = alloc_md(&e->dst_md), *scratch = NULL;
    dnnl_status_t s = dst ? dnnl_success : dnnl_out_of_memory;
    if (s == dnnl_success && dnnl_memory_desc_get_size(&e->scratch_md)) {
        scratch = alloc_md(&e->scratch_md);
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
    plain_md(&pmd, y->rank, y->dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, &e->dst_md);
    y->md = &e->dst_md;
    return 0;
}

/* ---------------------------------------------------------------- layout-preserving kernels
 * BatchNormalization, Concat, elementwise activations and binary arithmetic run on oneDNN when an
 * input is in a blocked layout (or, for BN and Concat, whenever the input is fp32 NCHW-like), so
 * activations stay blocked between convolutions; otherwise they fall back to the plain-C kernels. */

static prim_cache *node_cache(eng_run *r, eng_node *n, cl_err *err)
{
    prim_cache *c = n->state;
    if (!c) {
        c = n->state = calloc(1, sizeof *c);
        if (!c)
            cl_err_set(err, CL_E_NOMEM, "out of memory");
    }
    return c;
}

static prim_entry *cache_find_keys(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant)
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
static prim_entry *entry_new(prim_cache *c, const dnnl_memory_desc_t *keys, int n_keys, int variant,
                             dnnl_primitive_desc_t pd, const eng_node *n, cl_err *err)
{
    prim_entry *e = calloc(1, sizeof *e);
    dnnl_memory_desc_t *k = calloc((size_t)n_keys + 1, sizeof *k);
    if (!e || !k) {
        free(e);
        free(k);
        dnnl_primitive_desc_destroy(pd);
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    memcpy(k, keys, sizeof *k * (size_t)n_keys);
    e->keys = k;
    e->n_keys = n_keys;
    e->variant = variant;
    e->pd = pd;
    dnnl_status_t s = dnnl_primitive_create(&e->prim, pd);
    if (s != dnnl_success) {
        free_entry(e);
        eng_dnnl_fail(err, s, n, "creating a primitive");
        return NULL;
    }
    e->dst_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_dst_md, 0);
    e->scratch_md = *dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->next = c->head;
    c->head = e;
    return e;
}

static dnnl_primitive_attr_t user_scratch_attr(void)
{
    dnnl_primitive_attr_t attr = NULL;
    if (dnnl_primitive_attr_create(&attr) != dnnl_success)
        return NULL;
    dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user);
    return attr;
}

/* Executes e with the given (arg, md, pointer) triples plus DST (a new buffer, returned) and the
 * scratchpad; the result becomes output 0 of n with dims `dims`. */
static int exec_to_output(eng_run *r, eng_node *n, prim_entry *e, int nargs, const int *ids,
                          const dnnl_memory_desc_t *mds, void *const *ptrs, int rank, const int64_t *dims, cl_err *err)
{
    enum { MAXA = 80 };
    if (nargs + 2 > MAXA)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "too many inputs");
    dnnl_exec_arg_t args[MAXA];
    dnnl_memory_t mems[MAXA] = {0};
    void *dst = alloc_md(&e->dst_md), *scratch = NULL;
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
        scratch = alloc_md(&e->scratch_md);
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
    plain_md(&pmd, rank, dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, &e->dst_md);
    y->md = &e->dst_md;
    return 0;
}

static bool is_f32_nd(const eng_tensor *t)
{
    if (!t || t->dtype != CL_ENGINE_DT_FLOAT || t->rank < 3 || t->rank > 5)
        return false;
    for (int d = 0; d < t->rank; d++)
        if (t->dims[d] <= 0)
            return false;
    return true;
}

static int run_bn(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0), *p[4];
    for (int i = 0; i < 4; i++)
        p[i] = eng_in_plain(r, n, i + 1, err);
    bool ok = is_f32_nd(x) && x->dims[1] > 0;
    for (int i = 0; ok && i < 4; i++)
        ok = p[i] && p[i]->dtype == CL_ENGINE_DT_FLOAT && eng_numel(p[i]) == x->dims[1];
    if (!ok || eng_attr_i(n, "training_mode", 0))
        return eng_ref_batchnorm(r, n, err);
    dnnl_memory_desc_t in_md;
    tensor_md(x, &in_md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, &in_md, 1, 0) : NULL;
    if (c && !e) {
        unsigned flags = dnnl_use_global_stats | dnnl_use_scale | dnnl_use_shift |
                         (n->post == ENG_POST_RELU ? dnnl_fuse_norm_relu : 0u);
        dnnl_batch_normalization_desc_t bd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_status_t s = dnnl_batch_normalization_forward_desc_init(&bd, dnnl_forward_inference, &in_md,
                                                                     eng_attr_f(n, "epsilon", 1e-5f), flags);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &bd, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the batch normalization");
        else
            e = entry_new(c, &in_md, 1, 0, pd, n, err);
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
    return exec_to_output(r, n, e, 5, ids, mds, ptrs, x->rank, x->dims, err);
}

static int run_concat_dnnl(eng_run *r, eng_node *n, cl_err *err)
{
    int nin = n->n_in;
    bool any_blocked = false, ok = nin >= 2 && nin <= 64;
    eng_tensor *x0 = eng_in(r, n, 0);
    for (int i = 0; ok && i < nin; i++) {
        eng_tensor *t = eng_in(r, n, i);
        ok = is_f32_nd(t) && t->rank == x0->rank;
        for (int d = 0; ok && d < t->rank; d++)
            ok = t->dims[d] > 0 && (d == 1 || t->dims[d] == x0->dims[d]);
        any_blocked |= ok && t->blocked;
    }
    int64_t ax = eng_attr_i(n, "axis", 0);
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
        tensor_md(t, &mds[i]);
        ptrs[i] = t->data;
        ids[i] = DNNL_ARG_MULTIPLE_SRC + i;
        od[1] += t->dims[1];
    }
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, mds, nin, 0) : NULL;
    if (c && !e) {
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        /* dst NULL: oneDNN picks the output layout from the (blocked) sources */
        dnnl_status_t s = dnnl_concat_primitive_desc_create(&pd, NULL, nin, 1, mds, attr, r->m->dnnl);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the concat");
        else
            e = entry_new(c, mds, nin, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    return exec_to_output(r, n, e, nin, ids, mds, ptrs, x0->rank, od, err);
}

static int run_eltwise(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    if (!x || !x->blocked)
        return eng_ref_unary(r, n, err);
    dnnl_alg_kind_t alg;
    float alpha = 0, beta = 0;
    if (strcmp(n->op_type, "Relu") == 0) {
        alg = dnnl_eltwise_relu;
    } else if (strcmp(n->op_type, "Sigmoid") == 0) {
        alg = dnnl_eltwise_logistic;
    } else if (strcmp(n->op_type, "Tanh") == 0) {
        alg = dnnl_eltwise_tanh;
    } else if (strcmp(n->op_type, "LeakyRelu") == 0) {
        alg = dnnl_eltwise_relu;
        alpha = eng_attr_f(n, "alpha", 0.01f);
    } else if (strcmp(n->op_type, "HardSwish") == 0) {
        alg = dnnl_eltwise_hardswish;
    } else {
        return eng_ref_unary(r, n, err);
    }
    dnnl_memory_desc_t md = *x->md;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, &md, 1, 0) : NULL;
    if (c && !e) {
        dnnl_eltwise_desc_t ed;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_status_t s = dnnl_eltwise_forward_desc_init(&ed, dnnl_forward_inference, alg, &md, alpha, beta);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &ed, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the eltwise");
        else
            e = entry_new(c, &md, 1, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    return exec_to_output(r, n, e, 1, ids, &md, ptrs, x->rank, x->dims, err);
}

static int run_binary_dnnl(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *a = eng_in(r, n, 0), *b = eng_in(r, n, 1);
    bool add = strcmp(n->op_type, "Add") == 0, mul = strcmp(n->op_type, "Mul") == 0;
    if (n->n_in != 2 || !a || !b || !(add || mul || strcmp(n->op_type, "Sub") == 0 || strcmp(n->op_type, "Div") == 0))
        return eng_ref_binary(r, n, err);
    if ((add || mul) && ((!a->blocked && b->blocked) || eng_numel(a) < eng_numel(b))) {
        /* commutative: the full-size blocked operand first (src1 may broadcast, src0 may not) */
        eng_tensor *t = a;
        a = b;
        b = t;
    }
    bool ok = a->blocked && a->dtype == CL_ENGINE_DT_FLOAT && b->dtype == CL_ENGINE_DT_FLOAT && b->rank == a->rank;
    for (int d = 0; ok && d < a->rank; d++)
        ok = b->dims[d] == a->dims[d] || b->dims[d] == 1;
    if (!ok)
        return eng_ref_binary(r, n, err);
    dnnl_memory_desc_t keys[2];
    keys[0] = *a->md;
    tensor_md(b, &keys[1]);
    dnnl_alg_kind_t alg = add ? dnnl_binary_add : mul ? dnnl_binary_mul
                          : strcmp(n->op_type, "Sub") == 0 ? dnnl_binary_sub : dnnl_binary_div;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, keys, 2, 0) : NULL;
    if (c && !e) {
        dnnl_binary_desc_t bd;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_status_t s = dnnl_binary_desc_init(&bd, alg, &keys[0], &keys[1], &keys[0]);
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &bd, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the binary primitive");
        else
            e = entry_new(c, keys, 2, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC_0, DNNL_ARG_SRC_1};
    void *const ptrs[] = {a->data, b->data};
    return exec_to_output(r, n, e, 2, ids, keys, ptrs, a->rank, a->dims, err);
}

/* ---------------------------------------------------------------- ConvTranspose
 * oneDNN deconvolution. ONNX weights are [C_in, C_out/group, k...] (oneDNN's iohw / giohw
 * layouts). The output size follows ONNX: explicit pads and output_padding, or output_shape with
 * auto_pad. Weights are reordered on every run (this op is not on the hot path of the CNNs). */
static int run_convtranspose(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0), *w = eng_in_plain(r, n, 1, err);
    eng_tensor *b = n->n_in > 2 && n->in[2] >= 0 ? eng_in_plain(r, n, 2, err) : NULL;
    if (!x || !w)
        return eng_node_err(err, CL_E_FORMAT, n, "X and W are required");
    if (!is_f32_nd(x) || w->dtype != CL_ENGINE_DT_FLOAT || w->rank != x->rank)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only non-empty float inputs of rank 3-5 are supported");
    int nsp = x->rank - 2;
    int64_t group = eng_attr_i(n, "group", 1), C = x->dims[1];
    if (group < 1 || C % group || w->dims[0] != C || w->dims[1] < 1)
        return eng_node_err(err, CL_E_FORMAT, n, "weights %s do not match input channels %lld (group %lld)",
                            eng_dims_str(w->dims, w->rank, (char[96]){0}, 96), (long long)C, (long long)group);
    int64_t OC = w->dims[1] * group;
    if (b && (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != OC))
        return eng_node_err(err, CL_E_FORMAT, n, "bias must be float with %lld elements", (long long)OC);
    size_t cs, cd, cp, co, cos;
    const int64_t *st = eng_attr_ints(n, "strides", &cs), *dl = eng_attr_ints(n, "dilations", &cd),
                  *pads = eng_attr_ints(n, "pads", &cp), *opad = eng_attr_ints(n, "output_padding", &co),
                  *oshape = eng_attr_ints(n, "output_shape", &cos);
    if ((st && (int)cs != nsp) || (dl && (int)cd != nsp) || (pads && (int)cp != 2 * nsp) || (opad && (int)co != nsp) ||
        (oshape && (int)cos != nsp && (int)cos != x->rank))
        return eng_node_err(err, CL_E_FORMAT, n, "attributes do not match %d spatial dims", nsp);
    const char *ap = eng_attr_s(n, "auto_pad", "NOTSET");
    dnnl_dims_t wd, dd, sv, dv, pl, pr;
    int64_t od[CL_ENGINE_MAX_RANK] = {x->dims[0], OC};
    bool extend = false;
    for (int i = 0; i < nsp; i++) {
        int64_t in = x->dims[2 + i], k = w->dims[2 + i], s_ = st ? st[i] : 1, d = dl ? dl[i] : 1;
        int64_t op = opad ? opad[i] : 0, l = pads ? pads[i] : 0, rr = pads ? pads[i + nsp] : 0;
        if (s_ < 1 || d < 1 || k < 1 || s_ > 4096 || d > 4096 || k > 4096 || l < 0 || rr < 0 || op < 0 || op >= s_ + d ||
            l > 65536 || rr > 65536)
            return eng_node_err(err, CL_E_FORMAT, n, "invalid stride/dilation/pad/output_padding values");
        int64_t ext = (k - 1) * d + 1, full = s_ * (in - 1) + op + ext, out;
        if (oshape) {
            out = oshape[(int)cos == nsp ? i : 2 + i];
            int64_t total = full - out;
            if (out < 1 || out > full + s_ + d) /* at most an output_padding's worth beyond the full output */
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "output_shape %lld is not supported for an input of %lld",
                                    (long long)out, (long long)in);
            if (total < 0)
                total = 0; /* positions past the full output only get the bias (see below) */
            if (strcmp(ap, "SAME_UPPER") == 0) {
                l = total / 2;
                rr = total - l;
            } else {
                rr = total / 2;
                l = total - rr;
            }
        } else if (strcmp(ap, "SAME_UPPER") == 0 || strcmp(ap, "SAME_LOWER") == 0) {
            out = in * s_;
            int64_t total = full - out;
            if (total < 0)
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "auto_pad with this geometry is not supported");
            if (strcmp(ap, "SAME_UPPER") == 0) {
                l = total / 2;
                rr = total - l;
            } else {
                rr = total / 2;
                l = total - rr;
            }
        } else {
            out = full - l - rr;
        }
        if (out < 1)
            return eng_node_err(err, CL_E_FORMAT, n, "the output would be empty");
        /* oneDNN: out = (in - 1) * s + ext - pl - pr, so output_padding becomes less right padding;
         * output past the last kernel reach (pr < 0) receives no contributions: computed smaller,
         * then extended with the bias below */
        int64_t pr_eff = (in - 1) * s_ + ext - l - out;
        dd[2 + i] = pr_eff < 0 ? out + pr_eff : out;
        if (dd[2 + i] < 1)
            return eng_node_err(err, CL_E_UNSUPPORTED, n, "this output_padding/output_shape is not supported");
        if (pr_eff < 0) {
            extend = true;
            pr_eff = 0;
        }
        od[2 + i] = out;
        sv[i] = s_;
        dv[i] = d - 1;
        pl[i] = l;
        pr[i] = pr_eff;
    }
    dd[0] = x->dims[0];
    dd[1] = OC;
    int wr;
    dnnl_format_tag_t wtag;
    if (group > 1) {
        wd[0] = group, wd[1] = OC / group, wd[2] = C / group;
        for (int i = 0; i < nsp; i++)
            wd[3 + i] = w->dims[2 + i];
        wr = x->rank + 1;
        wtag = nsp == 1 ? dnnl_acbd : nsp == 2 ? dnnl_acbde : dnnl_acbdef;
    } else {
        wd[0] = OC, wd[1] = C;
        for (int i = 0; i < nsp; i++)
            wd[2 + i] = w->dims[2 + i];
        wr = x->rank;
        wtag = nsp == 1 ? dnnl_bac : nsp == 2 ? dnnl_bacd : dnnl_bacde;
    }
    dnnl_memory_desc_t keys[2], wmd, bmd, dmd;
    tensor_md(x, &keys[0]);
    dnnl_memory_desc_init_by_tag(&wmd, wr, wd, dnnl_f32, wtag);
    keys[1] = wmd;
    dnnl_dims_t bd = {OC};
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&dmd, x->rank, dd, dnnl_f32, dnnl_format_tag_any);
    int variant = b ? 1 : 0;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, keys, 2, variant) : NULL;
    if (c && !e) {
        dnnl_deconvolution_desc_t ddsc;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_status_t s2 = dnnl_dilated_deconvolution_forward_desc_init(&ddsc, dnnl_forward_inference,
                                                                        dnnl_deconvolution_direct, &keys[0], &wmd,
                                                                        b ? &bmd : NULL, &dmd, sv, dv, pl, pr);
        if (s2 == dnnl_success)
            s2 = dnnl_primitive_desc_create(&pd, &ddsc, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s2 != dnnl_success)
            eng_dnnl_fail(err, s2, n, "creating the deconvolution");
        else
            e = entry_new(c, keys, 2, variant, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS};
    const dnnl_memory_desc_t mds[] = {keys[0], wmd, bmd};
    void *const ptrs[] = {x->data, w->data, b ? b->data : NULL};
    int64_t cd_[CL_ENGINE_MAX_RANK];
    for (int i = 0; i < x->rank; i++)
        cd_[i] = dd[i];
    if (exec_to_output(r, n, e, b ? 3 : 2, ids, mds, ptrs, x->rank, cd_, err) != 0)
        return -1;
    if (!extend)
        return 0;
    /* embed the computed [.., cd_] block into the full output, the rest being the bias */
    eng_tensor *y = &r->vals[n->out[0]];
    if (eng_make_plain(r, y, err) != 0)
        return -1;
    eng_tensor o = {.dtype = CL_ENGINE_DT_FLOAT, .rank = x->rank};
    memcpy(o.dims, od, sizeof(int64_t) * (size_t)x->rank);
    if (eng_tensor_alloc(&o, err) != 0)
        return -1;
    int64_t N = eng_numel(&o), idx[CL_ENGINE_MAX_RANK] = {0};
    float *op = o.data;
    const float *yp = y->data, *bp = b ? b->data : NULL;
    for (int64_t i = 0; i < N; i++) {
        bool inside = true;
        int64_t off = 0;
        for (int d = 0; d < x->rank; d++) {
            inside = inside && idx[d] < cd_[d];
            off = off * cd_[d] + idx[d];
        }
        op[i] = inside ? yp[off] : bp ? bp[idx[1]] : 0.0f;
        for (int d = x->rank - 1; d >= 0; d--) {
            if (++idx[d] < od[d])
                break;
            idx[d] = 0;
        }
    }
    int refs = y->refs;
    eng_tensor_free(y);
    *y = o;
    y->refs = refs;
    return 0;
}

/* ---------------------------------------------------------------- LRN (across channels) */
static int run_lrn(eng_run *r, eng_node *n, cl_err *err)
{
    eng_tensor *x = eng_in(r, n, 0);
    int64_t size = eng_attr_i(n, "size", 0);
    if (!is_f32_nd(x) || x->rank != 4)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only non-empty 4-D float inputs are supported");
    if (size < 1 || size % 2 == 0 || size > 1023)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "size %lld is not supported (odd sizes only)", (long long)size);
    dnnl_memory_desc_t md;
    tensor_md(x, &md);
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = node_cache(r, n, err);
    prim_entry *e = c ? cache_find_keys(c, &md, 1, 0) : NULL;
    if (c && !e) {
        dnnl_lrn_desc_t ld;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = user_scratch_attr();
        dnnl_status_t s = dnnl_lrn_forward_desc_init(&ld, dnnl_forward_inference, dnnl_lrn_across_channels, &md, size,
                                                     eng_attr_f(n, "alpha", 1e-4f), eng_attr_f(n, "beta", 0.75f),
                                                     eng_attr_f(n, "bias", 1.0f));
        if (s == dnnl_success)
            s = dnnl_primitive_desc_create(&pd, &ld, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s != dnnl_success)
            eng_dnnl_fail(err, s, n, "creating the LRN");
        else
            e = entry_new(c, &md, 1, 0, pd, n, err);
    }
    pthread_mutex_unlock(&r->m->lock);
    if (!e)
        return -1;
    const int ids[] = {DNNL_ARG_SRC};
    void *const ptrs[] = {x->data};
    return exec_to_output(r, n, e, 1, ids, &md, ptrs, x->rank, x->dims, err);
}

static void free_state(void *state)
{
    free_cache(state);
}

const eng_op eng_ops_dnnl[] = {
    {"Conv", 2, 3, 1, 1, check_conv, run_conv, free_state},
    {"MaxPool", 1, 1, 1, 2, check_pool, run_pool, free_state},
    {"AveragePool", 1, 1, 1, 1, check_pool, run_pool, free_state},
    {"GlobalAveragePool", 1, 1, 1, 1, check_pool, run_pool, free_state},
    {"GlobalMaxPool", 1, 1, 1, 1, check_pool, run_pool, free_state},
    {"BatchNormalization", 5, 5, 1, 3, eng_ref_check_batchnorm, run_bn, free_state},
    {"ConvTranspose", 2, 3, 1, 1, NULL, run_convtranspose, free_state},
    {"LRN", 1, 1, 1, 1, NULL, run_lrn, free_state},
    {"Concat", 1, -1, 1, 1, NULL, run_concat_dnnl, free_state},
    {"Relu", 1, 1, 1, 1, NULL, run_eltwise, free_state},
    {"Sigmoid", 1, 1, 1, 1, NULL, run_eltwise, free_state},
    {"Tanh", 1, 1, 1, 1, NULL, run_eltwise, free_state},
    {"LeakyRelu", 1, 1, 1, 1, NULL, run_eltwise, free_state},
    {"HardSwish", 1, 1, 1, 1, NULL, run_eltwise, free_state},
    {"Add", 2, 2, 1, 1, NULL, run_binary_dnnl, free_state},
    {"Mul", 2, 2, 1, 1, NULL, run_binary_dnnl, free_state},
    {"Sub", 2, 2, 1, 1, NULL, run_binary_dnnl, free_state},
    {"Div", 2, 2, 1, 1, NULL, run_binary_dnnl, free_state},
};
const size_t eng_ops_dnnl_count = CL_ARRAY_LEN(eng_ops_dnnl);
