/* engine/konst.c — the memory of the model's constants during and after cl_engine_load: which
 * initializers may keep pointing into the caller's buffer while the load runs (eng_tensor.borrowed),
 * their copies into secure memory, and what is released once the warm-up has run.
 *
 * The loader (onnx.c) does not copy initializers: their data points into the caller's buffer. Right
 * after the parse, every borrowed constant is copied into secure memory (cl_secmem: locked, not
 * dumpable, zeroized when freed) except the weights that only Conv nodes read (input 1): those are
 * read once more, by the warm-up's reorder into the convolution's own layout (itself in secure
 * memory, dnnl/conv.c), and need no plain copy when that layout can be reordered back (a blocked one,
 * not Winograd's). At the end of the load (eng_consts_after_load): constants no live node reads are
 * freed (BatchNormalization folding leaves the unfolded weights behind, for instance), such Conv
 * weights are dropped, and whatever is still borrowed is copied. A later plan of such a convolution
 * (another batch size) rebuilds the plain weights from the reordered ones for the time of its reorder
 * (eng_conv_weights_plain). Nothing borrowed survives the load: the caller may free its buffer then.
 * Single-threaded: runs inside cl_engine_load before the model is returned.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/dnnl/dnnl.h"
#include "engine/internal.h"
#include "engine/ops/ops.h"

/* A borrowed constant copied into secure memory. */
static int materialize(eng_tensor *t, cl_err *err)
{
    const void *src = t->data;
    size_t nb = t->nbytes;
    t->data = NULL;
    t->borrowed = false;
    if (eng_tensor_alloc_const(t, err) != 0)
        return -1;
    if (nb)
        memcpy(t->data, src, nb);
    return 0;
}

/* The constant's data released (its shape stays): freed if ours, forgotten if borrowed. */
static void release_data(eng_tensor *t)
{
    if (t->borrowed)
        t->data = NULL;
    else
        eng_tensor_free(t);
    t->borrowed = false;
}

static bool is_conv(const eng_node *n)
{
    return strcmp(n->op_type, "Conv") == 0;
}

int eng_consts_after_parse(cl_engine_model *m, cl_err *err)
{
    if (!m->n_values)
        return 0;
    /* keep[v]: 1 read by Conv nodes as weights only, 2 read otherwise (or a graph output) */
    unsigned char *use = calloc(m->n_values, 1);
    if (!use)
        return cl_err_nomem(err);
    for (size_t i = 0; i < m->n_nodes; i++) {
        const eng_node *n = &m->nodes[i];
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0)
                use[n->in[k]] = (is_conv(n) && k == 1 && use[n->in[k]] != 2) ? 1 : 2;
    }
    for (size_t k = 0; k < m->n_outputs; k++)
        use[m->out_val[k]] = 2;
    int rc = 0;
    for (size_t v = 0; rc == 0 && v < m->n_values; v++) {
        eng_tensor *t = m->values[v].konst;
        if (t && t->borrowed && use[v] != 1)
            rc = materialize(t, err);
    }
    free(use);
    return rc;
}

/* A blocked (not Winograd) copy of a Conv's weights in its primitive cache, or NULL. */
static const prim_entry *reordered_weights(const prim_cache *c)
{
    for (const prim_entry *e = c ? c->head : NULL; e; e = e->next)
        if (e->wei && e->wei_md.format_kind == dnnl_blocked)
            return e;
    return NULL;
}

int eng_consts_after_load(cl_engine_model *m, cl_err *err)
{
    for (size_t v = 0; v < m->n_values; v++) {
        eng_value *val = &m->values[v];
        if (val->konst && val->konst->data && val->n_consumers == 0 && val->graph_output < 0)
            release_data(val->konst);
    }
    for (size_t oi = 0; oi < m->n_order; oi++) {
        eng_node *n = &m->nodes[m->order[oi]];
        if (n->op->run != eng_run_conv || n->n_in < 2 || n->in[1] < 0)
            continue;
        eng_value *val = &m->values[n->in[1]];
        if (val->konst && val->konst->data && val->n_consumers == 1 && val->graph_output < 0 &&
            val->konst->dtype == CL_ENGINE_DT_FLOAT && reordered_weights(n->state))
            release_data(val->konst);
    }
    for (size_t v = 0; v < m->n_values; v++) {
        eng_tensor *t = m->values[v].konst;
        if (t && t->borrowed && materialize(t, err) != 0)
            return -1;
    }
    return 0;
}

dnnl_status_t eng_conv_weights_plain(eng_run *r, const prim_cache *cache, const dnnl_memory_desc_t *wplain,
                                     void **tmp)
{
    *tmp = NULL;
    const prim_entry *src = reordered_weights(cache);
    if (!src)
        return dnnl_invalid_arguments;
    size_t sz = dnnl_memory_desc_get_size(wplain);
    *tmp = cl_secmem_alloc(sz ? sz : 1, NULL);
    if (!*tmp)
        return dnnl_out_of_memory;
    return eng_do_reorder(r, &src->wei_md, src->wei, wplain, *tmp, NULL, NULL, false, 0);
}
