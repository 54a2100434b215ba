/* engine/dnnl/conv.c — Conv and ConvTranspose on oneDNN: the window attributes (kernel_shape, strides,
 * dilations, pads, auto_pad, group, output_padding, output_shape) decoded and validated at load, the
 * geometry and the Conv shape rule, the convolution with the post-ops graph.c fused into it (BatchNorm
 * folded into the weights, Relu / Clip / SiLU, the residual sum and a following Relu), primitives per
 * input shape and layout cached on the node with weights reordered once per chosen layout, and the
 * deconvolution.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"


/* ---------------------------------------------------------------- window attributes */

/* An ints attribute of at most `per` entries per spatial dim (3 spatial dims), its values in lo..hi;
 * *nsp: the spatial dims its count implies (-1 so far: none said). */
static int window_ints(const eng_node *n, const char *name, int per, int64_t lo, int64_t hi, const int64_t **v,
                       size_t *c, int *nsp, bool allow_rank, cl_err *err)
{
    if (eng_attr_ints_max(n, name, (size_t)-1, v, c, err) != 0)
        return -1;
    if (!*v || *c == 0) { /* an empty list is no list (as it always was) */
        *v = NULL;
        *c = 0;
        return 0;
    }
    size_t max = (size_t)per * MAX_SP;
    if (*c > max + (allow_rank ? 2 : 0)) /* output_shape may give the whole output shape: rank = nsp + 2 */
        return eng_attr_err(err, CL_E_UNSUPPORTED, n, name, "has %zu entries: at most %d spatial dimensions are "
                            "supported", *c, MAX_SP);
    if (*c % (size_t)per)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "has %zu entries", *c);
    for (size_t i = 0; i < *c; i++)
        if ((*v)[i] < lo || (*v)[i] > hi)
            return eng_attr_err(err, CL_E_FORMAT, n, name, "has the value %lld, out of range (%lld..%lld)",
                                (long long)(*v)[i], (long long)lo, (long long)hi);
    if (allow_rank) /* spatial dims or the whole shape: its count is checked against the input's rank at run time */
        return 0;
    int k = (int)(*c / (size_t)per);
    if (*nsp >= 0 && *nsp != k)
        return eng_attr_err(err, CL_E_FORMAT, n, name, "has %zu entries where the other attributes imply %d "
                            "spatial dimensions", *c, *nsp);
    *nsp = k;
    return 0;
}

int eng_window_prepare(eng_node *n, eng_window_attr *wa, bool deconv, cl_err *err)
{
    static const char *const pads[] = {"NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"};
    int64_t lim = deconv ? 4096 : 65536;
    wa->nsp = -1;
    if (eng_attr_choice(n, "auto_pad", AP_NOTSET, pads, 4, &wa->auto_pad, err) != 0 ||
        window_ints(n, "kernel_shape", 1, 1, lim, &wa->ks, &wa->ck, &wa->nsp, false, err) != 0 ||
        window_ints(n, "strides", 1, 1, lim, &wa->st, &wa->cs, &wa->nsp, false, err) != 0 ||
        window_ints(n, "dilations", 1, 1, lim, &wa->dl, &wa->cd, &wa->nsp, false, err) != 0 ||
        window_ints(n, "pads", 2, 0, 65536, &wa->pads, &wa->cp, &wa->nsp, false, err) != 0)
        return -1;
    if (deconv && (window_ints(n, "output_padding", 1, 0, lim, &wa->opad, &wa->co, &wa->nsp, false, err) != 0 ||
                   window_ints(n, "output_shape", 1, 1, CL_ENGINE_MAX_TENSOR_ELEMS, &wa->oshape, &wa->cos,
                               &wa->nsp, true, err) != 0))
        return -1;
    return 0;
}

/* Kernel, strides, dilations, pads (explicit or auto_pad) and output sizes for conv/pool. */
int eng_make_geom(const eng_node *n, const eng_window_attr *wa, const eng_tensor *x, const int64_t *kernel,
                  bool ceil_mode, eng_geom *g, cl_err *err)
{
    int nsp = x->rank - 2;
    if (nsp < 1 || nsp > MAX_SP)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "input %s: only 1-3 spatial dimensions are supported",
                            eng_dims_str(x->dims, x->rank, (char[96]){0}, 96));
    g->nsp = nsp;
    size_t cs = wa->cs, cd = wa->cd, cp = wa->cp;
    const int64_t *st = wa->st, *dl = wa->dl, *pads = wa->pads;
    if ((st && (int)cs != nsp) || (dl && (int)cd != nsp) || (pads && (int)cp != 2 * nsp))
        return eng_node_err(err, CL_E_FORMAT, n, "strides/dilations/pads do not match %d spatial dims", nsp);
    int ap = wa->auto_pad;
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
        if (ap == AP_SAME_UPPER || ap == AP_SAME_LOWER) {
            int64_t o = (in + g->s[i] - 1) / g->s[i];
            int64_t tot = (o - 1) * g->s[i] + ext - in;
            if (tot < 0)
                tot = 0;
            g->pl[i] = ap == AP_SAME_UPPER ? tot / 2 : tot - tot / 2;
            g->pr[i] = tot - g->pl[i];
        } else if (ap == AP_VALID) {
            g->pl[i] = g->pr[i] = 0;
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

/* Conv and pooling output size along one spatial dim (-1 when unknown), as eng_make_geom computes it. */
int64_t eng_window_out(const eng_window_attr *wa, int64_t in, int i, int nsp, int64_t k, bool ceil_mode)
{
    if (in < 0)
        return ENG_DIM_UNKNOWN;
    const int64_t *st = wa->st, *dl = wa->dl, *pads = wa->pads;
    size_t cs = wa->cs, cd = wa->cd, cp = wa->cp;
    int64_t s = st && (int)cs == nsp ? st[i] : 1, d = dl && (int)cd == nsp ? dl[i] : 1;
    int64_t pl = pads && (int)cp == 2 * nsp ? pads[i] : 0, pr = pads && (int)cp == 2 * nsp ? pads[i + nsp] : 0;
    if (s < 1 || d < 1 || k < 1 || s > 65536 || d > 65536 || k > 65536 || pl < 0 || pr < 0 || pl > 65536 || pr > 65536)
        return ENG_DIM_UNKNOWN; /* the kernel reports the error */
    if (wa->auto_pad == AP_SAME_UPPER || wa->auto_pad == AP_SAME_LOWER)
        return (in + s - 1) / s;
    if (wa->auto_pad == AP_VALID)
        pl = pr = 0;
    int64_t span = in + pl + pr - ((k - 1) * d + 1);
    if (span < 0)
        return ENG_DIM_UNKNOWN;
    int64_t o = ceil_mode ? (span + s - 1) / s + 1 : span / s + 1;
    if (ceil_mode && (o - 1) * s >= in + pl)
        o--;
    return o;
}

/* ---------------------------------------------------------------- Conv */

int eng_prep_conv(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    if (n->in[1] < 0)
        return eng_node_err(err, CL_E_FORMAT, n, "weights are required");
    eng_window_attr *wa = eng_attr_alloc(n, sizeof *wa, err);
    if (!wa || eng_window_prepare(n, wa, false, err) != 0 ||
        eng_attr_int_in(n, "group", 1, 1, CL_ENGINE_MAX_TENSOR_ELEMS, &wa->group, err) != 0)
        return -1;
    return 0;
}

int eng_infer_conv(eng_infer_ctx *c, cl_err *err)
{
    const eng_node *n = c->n;
    const eng_window_attr *wa = n->attr;
    const eng_vshape *x = &c->in[0], *w = &c->in[1];
    eng_vshape *o = &c->out[0];
    if (x->rank < 3 || w->rank != x->rank)
        return 0;
    int64_t group = wa->group;
    if (x->d[1] >= 0 && w->d[1] >= 0 && w->d[1] * group != x->d[1])
        return eng_node_err(err, CL_E_FORMAT, n, "weights %s expect %lld input channels, the input %s has %lld",
                            eng_dims_str(w->d, w->rank, (char[128]){0}, 128), (long long)w->d[1] * group,
                            eng_dims_str(x->d, x->rank, (char[128]){0}, 128), (long long)x->d[1]);
    o->rank = x->rank;
    o->d[0] = x->d[0];
    o->d[1] = w->d[0];
    for (int i = 0; i < x->rank - 2; i++)
        o->d[2 + i] = eng_window_out(wa, x->d[2 + i], i, x->rank - 2, w->d[2 + i], false);
    if (n->sum_in >= 0) { /* a fused residual Add: the result broadcasts with the other input */
        eng_vshape t;
        if (eng_shape_broadcast(n, o, &c->in[n->sum_in], &t, err) != 0)
            return -1;
        o->rank = t.rank;
        memcpy(o->d, t.d, sizeof o->d);
    }
    return 0;
}

static dnnl_alg_kind_t post_alg(eng_post_kind k)
{
    switch (k) {
    case ENG_POST_RELU: return dnnl_eltwise_relu;
    case ENG_POST_SWISH: return dnnl_eltwise_swish;
    case ENG_POST_HSWISH: return dnnl_eltwise_hardswish;
    case ENG_POST_SIGMOID: return dnnl_eltwise_logistic;
    default: return dnnl_eltwise_clip;
    }
}

/* The activation n->post as oneDNN post-ops (HardSigmoid: a linear map, then a clip to [0, 1]). */
static dnnl_status_t append_post(dnnl_post_ops_t po, const eng_node *n)
{
    switch (n->post) {
    case ENG_POST_NONE: return dnnl_success;
    case ENG_POST_CLIP: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, n->post_lo, n->post_hi);
    case ENG_POST_SWISH: return dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_swish, 1.0f, 0.0f);
    case ENG_POST_HSIGMOID: {
        dnnl_status_t s = dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_linear, n->post_lo, n->post_hi);
        return s == dnnl_success ? dnnl_post_ops_append_eltwise(po, 1.0f, dnnl_eltwise_clip, 0.0f, 1.0f) : s;
    }
    default: return dnnl_post_ops_append_eltwise(po, 1.0f, post_alg(n->post), 0.0f, 0.0f);
    }
}

static int conv_create(eng_run *r, eng_node *n, const eng_tensor *x, const eng_tensor *w, const eng_tensor *b,
                       const dnnl_memory_desc_t *in_md, bool with_sum, prim_cache *cache, prim_entry **out,
                       cl_err *err)
{
    if (w->dtype != CL_ENGINE_DT_FLOAT || w->rank != x->rank)
        return eng_node_err(err, CL_E_FORMAT, n, "weights must be float with the input's rank");
    const eng_window_attr *wa = n->attr;
    int64_t group = wa->group;
    int64_t C = x->dims[1], OC = w->dims[0];
    if (group < 1 || C % group || OC % group || w->dims[1] * group != C)
        return eng_node_err(err, CL_E_FORMAT, n, "weights %s do not match input %s with group %lld",
                            eng_dims_str(w->dims, w->rank, (char[96]){0}, 96),
                            eng_dims_str(x->dims, x->rank, (char[96]){0}, 96), (long long)group);
    size_t ck = wa->ck;
    const int64_t *ks = wa->ks;
    if (ks && (int)ck != x->rank - 2)
        return eng_node_err(err, CL_E_FORMAT, n, "kernel_shape has %zu entries", ck);
    for (size_t i = 0; ks && i < ck; i++)
        if (ks[i] != w->dims[2 + i])
            return eng_node_err(err, CL_E_FORMAT, n, "kernel_shape does not match the weights");
    eng_geom g;
    if (eng_make_geom(n, wa, x, w->dims + 2, false, &g, err) != 0)
        return -1;
    if (b && (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != OC))
        return eng_node_err(err, CL_E_FORMAT, n, "bias must be float with %lld elements", (long long)OC);
    prim_entry *e = calloc(1, sizeof *e);
    if (!e)
        return cl_err_nomem(err);
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
    /* layouts: the planner's activation layout (plan.c) for source and destination, plain row-major for a
     * destination only plain kernels read when the source is not in a fixed activation layout (oneDNN 2.6 has
     * only its reference kernel for an nhwc or blocked source with a plain destination: convnext_tiny's
     * depthwise convolutions before a Transpose took 7x longer); weights as oneDNN prefers */
    const cl_engine_model *m = r->m;
    bool act = x->rank == 4 && (group == 1 || m->act_layout == ENG_ACT_NHWC);
    bool plain_dst = n->out[0] >= 0 && m->values[n->out[0]].layout == ENG_LAYOUT_PLAIN &&
                     !(act && eng_plan_act_tag(m, 4, C) != dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&smd, x->rank, sd, dnnl_f32, act ? eng_plan_act_tag(m, 4, C) : dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&wmd, wr, wd, dnnl_f32, dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dmd, x->rank, dd, dnnl_f32, plain_dst ? eng_plain_tag(x->rank)
                                                              : act ? eng_plan_act_tag(m, 4, OC) : dnnl_format_tag_any);
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
    if (s == dnnl_success)
        s = append_post(po, n);
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
        eng_prim_entry_free(e);
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
            eng_prim_entry_free(e);
            if (wsz > 2 * CL_ENGINE_MAX_TENSOR_BYTES)
                return eng_node_err(err, CL_E_FORMAT, n, "weights are too large");
            return cl_err_prefix(err, "node '%s' (%s)", n->name, n->op_type);
        } else {
            dnnl_memory_desc_t wplain;
            dnnl_memory_desc_init_by_tag(&wplain, wr, wd, dnnl_f32, eng_plain_tag(wr));
            void *wsrc = w->data, *wtmp = NULL;
            if (!wsrc) /* plain weights released after the warm-up reordered them: rebuilt (konst.c) */
                s = eng_conv_weights_plain(r, cache, &wplain, &wtmp), wsrc = wtmp;
            if (s == dnnl_success)
                s = eng_do_reorder(r, &wplain, wsrc, &e->wei_md, e->wei, NULL, NULL, false, 0);
            cl_secmem_free(wtmp);
        }
    }
    if (s != dnnl_success) {
        eng_prim_entry_free(e);
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

int eng_run_conv(eng_run *r, eng_node *n, cl_err *err)
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
    bool with_sum = sum != NULL;
    prim_entry *e = eng_cache_find(cache, x, &in_md, with_sum, w);
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
        prim_entry *e2 = eng_cache_find(cache, x, &in_md, false, w);
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
        tmp_src = eng_alloc_md(&e->src_md);
        if (!tmp_src) {
            eng_mem_release(&e->mems, held);
            return cl_err_nomem(err);
        }
        s = eng_do_reorder(r, &in_md, x->data, &e->src_md, tmp_src, e->src_reorder, &e->mems, held, 5);
        src = tmp_src;
    }
    /* destination: with a residual sum it must start as the residual, in dst layout */
    bool stolen = false;
    if (s == dnnl_success && sum) {
        dnnl_memory_desc_t sum_md;
        eng_tensor_md(sum, &sum_md);
        if (sum->owned && sum->refs == 1 && dnnl_memory_desc_equal(&sum_md, &e->dst_md)) {
            dst = sum->data; /* last use of the residual: accumulate in place */
            stolen = true;
        } else {
            dst = eng_alloc_md(&e->dst_md);
            if (!dst)
                s = dnnl_out_of_memory;
            else if (dnnl_memory_desc_equal(&sum_md, &e->dst_md))
                memcpy(dst, sum->data, dnnl_memory_desc_get_size(&e->dst_md));
            else
                s = eng_do_reorder(r, &sum_md, sum->data, &e->dst_md, dst, NULL, NULL, false, 0);
        }
    } else if (s == dnnl_success) {
        dst = eng_alloc_md(&e->dst_md);
        if (!dst)
            s = dnnl_out_of_memory;
    }
    size_t ssz = dnnl_memory_desc_get_size(&e->scratch_md);
    if (s == dnnl_success && ssz) {
        scratch = eng_alloc_md(&e->scratch_md);
        if (!scratch)
            s = dnnl_out_of_memory;
    }
    void *wei = e->wei, *tmp_wei = NULL;
    if (s == dnnl_success && !wei) { /* weights computed at run time: reorder them for this run */
        tmp_wei = eng_alloc_md(&e->wei_md);
        if (!tmp_wei) {
            s = dnnl_out_of_memory;
        } else {
            dnnl_memory_desc_t wplain;
            dnnl_dims_t wd;
            for (int i = 0; i < e->wplain_rank; i++)
                wd[i] = e->wplain_dims[i];
            dnnl_memory_desc_init_by_tag(&wplain, e->wplain_rank, wd, dnnl_f32, eng_plain_tag(e->wplain_rank));
            s = eng_do_reorder(r, &wplain, w->data, &e->wei_md, tmp_wei, NULL, NULL, false, 0);
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
    eng_plain_md(&pmd, y->rank, y->dims);
    y->blocked = !dnnl_memory_desc_equal(&pmd, &e->dst_md);
    y->md = &e->dst_md;
    return bsum ? add_broadcast(r, n, y, bsum, err) : 0;
}

/* ---------------------------------------------------------------- ConvTranspose
 * oneDNN deconvolution. ONNX weights are [C_in, C_out/group, k...] (oneDNN's iohw / giohw
 * layouts). The output size follows ONNX: explicit pads and output_padding, or output_shape with
 * auto_pad. Layouts are oneDNN's choice (format any), so its optimised deconvolution kernels run; constant
 * weights are reordered once. */
int eng_prep_convtranspose(cl_engine_model *m, eng_node *n, cl_err *err)
{
    (void)m;
    eng_window_attr *wa = eng_attr_alloc(n, sizeof *wa, err);
    if (!wa || eng_window_prepare(n, wa, true, err) != 0 ||
        eng_attr_int_in(n, "group", 1, 1, CL_ENGINE_MAX_TENSOR_ELEMS, &wa->group, err) != 0)
        return -1;
    return 0;
}

/* total padding split SAME_UPPER-style (the extra one at the end) or else SAME_LOWER-style */
static void split_pad(int64_t total, int ap, int64_t *l, int64_t *rr)
{
    if (ap == AP_SAME_UPPER) {
        *l = total / 2;
        *rr = total - *l;
    } else {
        *rr = total / 2;
        *l = total - *rr;
    }
}

/* ConvTranspose's output size per spatial dim following ONNX (explicit pads and output_padding, or
 * output_shape / auto_pad) and the oneDNN geometry computing it: od the ONNX output dims, dd oneDNN's
 * (smaller where output past the last kernel reach gets only the bias: *extend). */
static int deconv_geom(const eng_node *n, const eng_window_attr *wa, const eng_tensor *x, const eng_tensor *w,
                       int64_t *od, dnnl_dims_t dd, dnnl_dims_t sv, dnnl_dims_t dv, dnnl_dims_t pl, dnnl_dims_t pr,
                       bool *extend, cl_err *err)
{
    int nsp = x->rank - 2;
    size_t cos = wa->cos;
    const int64_t *st = wa->st, *dl = wa->dl, *pads = wa->pads, *opad = wa->opad, *oshape = wa->oshape;
    int ap = wa->auto_pad;
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
            split_pad(total, ap, &l, &rr);
        } else if (ap == AP_SAME_UPPER || ap == AP_SAME_LOWER) {
            out = in * s_;
            int64_t total = full - out;
            if (total < 0)
                return eng_node_err(err, CL_E_UNSUPPORTED, n, "auto_pad with this geometry is not supported");
            split_pad(total, ap, &l, &rr);
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
            *extend = true;
            pr_eff = 0;
        }
        od[2 + i] = out;
        sv[i] = s_;
        dv[i] = d - 1;
        pl[i] = l;
        pr[i] = pr_eff;
    }
    return 0;
}

/* A new deconvolution entry's chosen layouts, the reorder of a source arriving in another layout, and
 * constant weights w (NULL: weights computed at run time) reordered once into secure memory. */
static dnnl_status_t deconv_entry_prepare(eng_run *r, prim_entry *e, const dnnl_memory_desc_t *keys,
                                          const eng_tensor *w, cl_err *err)
{
    dnnl_status_t s = dnnl_success;
    e->src_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_src_md, 0);
    e->wei_md = *dnnl_primitive_desc_query_md(e->pd, dnnl_query_weights_md, 0);
    if (!dnnl_memory_desc_equal(&e->src_md, &keys[0])) {
        dnnl_primitive_desc_t rpd;
        s = dnnl_reorder_primitive_desc_create(&rpd, &keys[0], r->m->dnnl, &e->src_md, r->m->dnnl, NULL);
        if (s == dnnl_success) {
            s = dnnl_primitive_create(&e->src_reorder, rpd);
            dnnl_primitive_desc_destroy(rpd);
        }
    }
    size_t wsz = dnnl_memory_desc_get_size(&e->wei_md);
    if (s == dnnl_success && w) { /* the reordered weights are model secrets: secure memory */
        e->wei = wsz <= 2 * CL_ENGINE_MAX_TENSOR_BYTES ? cl_secmem_alloc(wsz ? wsz : 1, err) : NULL;
        s = e->wei ? eng_do_reorder(r, &keys[1], w->data, &e->wei_md, e->wei, NULL, NULL, false, 0)
                   : dnnl_out_of_memory;
    }
    return s;
}

/* The cached deconvolution for these keys, made on first use (under the model lock): layouts as oneDNN
 * chooses, a reorder for a source arriving in another layout, constant weights reordered once into secure
 * memory. NULL with err set on failure. */
static prim_entry *deconv_entry(eng_run *r, eng_node *n, const dnnl_memory_desc_t *keys, const dnnl_memory_desc_t *descs,
                                const eng_tensor *w, bool bias, const dnnl_dims_t sv, const dnnl_dims_t dv,
                                const dnnl_dims_t pl, const dnnl_dims_t pr, cl_err *err)
{
    const cl_engine_model *m = r->m;
    const dnnl_memory_desc_t *smd = &descs[0], *wany = &descs[1], *bmd = &descs[2], *dmd = &descs[3];
    bool const_w = n->in[1] >= 0 && m->values[n->in[1]].konst != NULL;
    int variant = bias ? 1 : 0;
    pthread_mutex_lock(&r->m->lock);
    prim_cache *c = eng_node_cache(r, n, err);
    prim_entry *e = c ? eng_cache_find_keys(c, keys, 2, variant) : NULL;
    if (c && !e) {
        dnnl_deconvolution_desc_t ddsc;
        dnnl_primitive_desc_t pd = NULL;
        dnnl_primitive_attr_t attr = eng_user_scratch_attr();
        dnnl_status_t s2 = dnnl_dilated_deconvolution_forward_desc_init(&ddsc, dnnl_forward_inference,
                                                                        dnnl_deconvolution_direct, smd, wany,
                                                                        bias ? bmd : NULL, dmd, sv, dv, pl, pr);
        if (s2 == dnnl_success)
            s2 = dnnl_primitive_desc_create(&pd, &ddsc, attr, r->m->dnnl, NULL);
        if (attr)
            dnnl_primitive_attr_destroy(attr);
        if (s2 != dnnl_success)
            eng_dnnl_fail(err, s2, n, "creating the deconvolution");
        else
            e = eng_entry_new(c, keys, 2, variant, pd, n, err);
        if (e && (s2 = deconv_entry_prepare(r, e, keys, const_w ? w : NULL, err)) != dnnl_success) {
            eng_dnnl_fail(err, s2, n, "preparing the deconvolution");
            c->head = e->next;
            eng_prim_entry_free(e);
            e = NULL;
        }
    }
    pthread_mutex_unlock(&r->m->lock);
    return e;
}

/* ConvTranspose's output past the last kernel reach: the computed block cd_ of node n's output embedded
 * into the full output od, the rest being the bias. */
static int deconv_extend(eng_run *r, const eng_node *n, int rank, const int64_t *cd_, const int64_t *od,
                         const eng_tensor *b, cl_err *err)
{
    /* embed the computed [.., cd_] block into the full output, the rest being the bias */
    eng_tensor *y = &r->vals[n->out[0]];
    if (eng_make_plain(r, y, err) != 0)
        return -1;
    eng_tensor o = {.dtype = CL_ENGINE_DT_FLOAT, .rank = rank};
    memcpy(o.dims, od, sizeof(int64_t) * (size_t)rank);
    if (eng_tensor_alloc(&o, err) != 0)
        return -1;
    int64_t N = eng_numel(&o), idx[CL_ENGINE_MAX_RANK] = {0};
    float *op = o.data;
    const float *yp = y->data, *bp = b ? b->data : NULL;
    for (int64_t i = 0; i < N; i++) {
        bool inside = true;
        int64_t off = 0;
        for (int d = 0; d < rank; d++) {
            inside = inside && idx[d] < cd_[d];
            off = off * cd_[d] + idx[d];
        }
        op[i] = inside ? yp[off] : bp ? bp[idx[1]] : 0.0f;
        for (int d = rank - 1; d >= 0; d--) {
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

int eng_run_convtranspose(eng_run *r, eng_node *n, cl_err *err)
{
    const eng_window_attr *wa = n->attr;
    eng_tensor *x = eng_in(r, n, 0), *w = eng_in_plain(r, n, 1, err);
    eng_tensor *b = n->n_in > 2 && n->in[2] >= 0 ? eng_in_plain(r, n, 2, err) : NULL;
    if (!x || !w)
        return eng_node_err(err, CL_E_FORMAT, n, "X and W are required");
    if (!eng_is_f32_nd(x) || w->dtype != CL_ENGINE_DT_FLOAT || w->rank != x->rank)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "only non-empty float inputs of rank 3-5 are supported");
    int nsp = x->rank - 2;
    int64_t group = wa->group, C = x->dims[1];
    if (group < 1 || C % group || w->dims[0] != C || w->dims[1] < 1)
        return eng_node_err(err, CL_E_FORMAT, n, "weights %s do not match input channels %lld (group %lld)",
                            eng_dims_str(w->dims, w->rank, (char[96]){0}, 96), (long long)C, (long long)group);
    int64_t OC = w->dims[1] * group;
    if (b && (b->dtype != CL_ENGINE_DT_FLOAT || eng_numel(b) != OC))
        return eng_node_err(err, CL_E_FORMAT, n, "bias must be float with %lld elements", (long long)OC);
    size_t cs = wa->cs, cd = wa->cd, cp = wa->cp, co = wa->co, cos = wa->cos;
    const int64_t *st = wa->st, *dl = wa->dl, *pads = wa->pads, *opad = wa->opad, *oshape = wa->oshape;
    if ((st && (int)cs != nsp) || (dl && (int)cd != nsp) || (pads && (int)cp != 2 * nsp) || (opad && (int)co != nsp) ||
        (oshape && (int)cos != nsp && (int)cos != x->rank))
        return eng_node_err(err, CL_E_FORMAT, n, "attributes do not match %d spatial dims", nsp);
    dnnl_dims_t wd, dd = {0}, sv = {0}, dv = {0}, pl = {0}, pr = {0}; /* deconv_geom fills them */
    int64_t od[CL_ENGINE_MAX_RANK] = {x->dims[0], OC};
    bool extend = false;
    if (deconv_geom(n, wa, x, w, od, dd, sv, dv, pl, pr, &extend, err) != 0)
        return -1;
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
    /* source, weights and destination in the layouts oneDNN's deconvolution kernels choose (format any;
     * activations in the planner's layout where it has one): with the ONNX weight layout forced, oneDNN 2.6
     * has only its reference kernel. The source is reordered when it arrives in another layout; constant
     * weights are reordered once per cache entry, weights computed at run time on every run. */
    const cl_engine_model *m = r->m;
    dnnl_memory_desc_t keys[2], wmd, wany, bmd, dmd, smd;
    eng_tensor_md(x, &keys[0]);
    dnnl_memory_desc_init_by_tag(&wmd, wr, wd, dnnl_f32, wtag);
    dnnl_memory_desc_init_by_tag(&wany, wr, wd, dnnl_f32, dnnl_format_tag_any);
    keys[1] = wmd;
    dnnl_dims_t bd = {OC}, sd_;
    for (int i = 0; i < x->rank; i++)
        sd_[i] = x->dims[i];
    bool act = x->rank == 4 && (group == 1 || m->act_layout == ENG_ACT_NHWC);
    bool plain_dst = n->out[0] >= 0 && m->values[n->out[0]].layout == ENG_LAYOUT_PLAIN && !extend &&
                     !(act && eng_plan_act_tag(m, 4, C) != dnnl_format_tag_any); /* as conv_create */
    dnnl_memory_desc_init_by_tag(&bmd, 1, bd, dnnl_f32, dnnl_a);
    dnnl_memory_desc_init_by_tag(&smd, x->rank, sd_, dnnl_f32, act ? eng_plan_act_tag(m, 4, C) : dnnl_format_tag_any);
    dnnl_memory_desc_init_by_tag(&dmd, x->rank, dd, dnnl_f32, plain_dst ? eng_plain_tag(x->rank)
                                                              : act ? eng_plan_act_tag(m, 4, OC) : dnnl_format_tag_any);
    const dnnl_memory_desc_t descs[] = {smd, wany, bmd, dmd};
    prim_entry *e = deconv_entry(r, n, keys, descs, w, b != NULL, sv, dv, pl, pr, err);
    if (!e)
        return -1;
    void *src = x->data, *wei = e->wei, *tmp_src = NULL, *tmp_wei = NULL;
    dnnl_status_t s = dnnl_success;
    if (e->src_reorder) {
        tmp_src = eng_alloc_md(&e->src_md);
        s = tmp_src ? eng_do_reorder(r, &keys[0], x->data, &e->src_md, tmp_src, e->src_reorder, NULL, false, 0)
                    : dnnl_out_of_memory;
        src = tmp_src;
    }
    if (s == dnnl_success && !wei) {
        tmp_wei = eng_alloc_md(&e->wei_md);
        s = tmp_wei ? eng_do_reorder(r, &wmd, w->data, &e->wei_md, tmp_wei, NULL, NULL, false, 0) : dnnl_out_of_memory;
        wei = tmp_wei;
    }
    if (s != dnnl_success) {
        eng_buf_free(tmp_src);
        eng_buf_free(tmp_wei);
        return eng_dnnl_fail(err, s, n, "deconvolution");
    }
    const int ids[] = {DNNL_ARG_SRC, DNNL_ARG_WEIGHTS, DNNL_ARG_BIAS};
    const dnnl_memory_desc_t mds[] = {e->src_md, e->wei_md, bmd};
    void *const ptrs[] = {src, wei, b ? b->data : NULL};
    int64_t cd_[CL_ENGINE_MAX_RANK];
    for (int i = 0; i < x->rank; i++)
        cd_[i] = dd[i];
    int rc = eng_exec_to_output(r, n, e, b ? 3 : 2, ids, mds, ptrs, x->rank, cd_, err);
    eng_buf_free(tmp_src);
    eng_buf_free(tmp_wei);
    if (rc != 0)
        return -1;
    if (!extend)
        return 0;
    return deconv_extend(r, n, x->rank, cd_, od, b, err);
}

