/* engine/plan.c — the layout planner, run once at load (graph.c, after fusion): it decides the model's
 * activation layout and each value's layout for the whole graph, so that oneDNN kernels hand each other
 * tensors without reorders and a reorder happens only where a consumer cannot take its input's layout.
 *
 * The activation layout (cl_engine_model.act_layout) is one for the whole model:
 *   ENG_ACT_BLOCKED  channel-blocked nChw16c (AVX-512) / nChw8c (AVX2): chosen when every 4-D Conv is
 *                    ungrouped and its channel counts fill whole blocks (ResNet-style networks, where
 *                    the blocked direct kernels measured 10-15% faster than nhwc at batch 8);
 *   ENG_ACT_NHWC     channels-last: chosen when a Conv is grouped/depthwise or more than one in eight
 *                    has channel counts that are not multiples of the block (MobileNet, EfficientNet,
 *                    ConvNeXt, the segmentation heads; not fcn_resnet50, whose one 21-channel head Conv
 *                    runs in oneDNN's own choice of layout): oneDNN's depthwise kernels want nhwc there,
 *                    and blocked layouts with padded channels send depthwise convolutions to slow
 *                    reference kernels, so one nhwc layout from one convolution to the next avoids a
 *                    reorder before and after each depthwise one.
 * A value's layout (eng_value.layout) is ENG_LAYOUT_BLOCKED ("the activation layout") when it is made by
 * an op that can produce it and at least one consumer can take it, else ENG_LAYOUT_PLAIN: a Conv whose
 * output only plain kernels (or the caller) read writes plain row-major directly instead of leaving a
 * reorder to the consumer. The layouts each op takes and leaves are its descriptor's consumes / produces
 * (ops/table.c).
 */
#include <stdatomic.h>
#include <string.h>

#include "engine/internal.h"

int eng_plan_block(void)
{
    static atomic_int block = -1; /* every thread that finds it unset computes the same value */
    int b = atomic_load_explicit(&block, memory_order_relaxed);
    if (b < 0) {
        dnnl_cpu_isa_t isa = dnnl_get_effective_cpu_isa();
        b = isa >= dnnl_cpu_isa_avx512_core ? 16 : isa >= dnnl_cpu_isa_avx2 ? 8 : 0;
        atomic_store_explicit(&block, b, memory_order_relaxed);
    }
    return b;
}

dnnl_format_tag_t eng_plan_act_tag(const cl_engine_model *m, int rank, int64_t channels)
{
    if (rank != 4)
        return dnnl_format_tag_any;
    if (m->act_layout == ENG_ACT_NHWC)
        return dnnl_acdb;
    int block = eng_plan_block();
    if (block && channels % block == 0)
        return block == 16 ? dnnl_aBcd16b : dnnl_aBcd8b;
    return dnnl_format_tag_any;
}

static bool is_op(const eng_node *n, const char *name)
{
    return strcmp(n->op_type, name) == 0;
}

/* The group attribute of a Conv (its prepare decoded it: the first field of the window attributes is
 * not reachable from here, so read the raw attribute; prepare has validated it). */
static int64_t conv_group(const eng_node *n)
{
    const eng_attr *a = eng_attr_find(n, "group");
    return a && a->type == ENG_ATTR_INT ? a->i : 1;
}

static int choose_act(const cl_engine_model *m)
{
    int block = eng_plan_block();
    if (!block)
        return ENG_ACT_BLOCKED; /* no vector blocks: oneDNN picks its own layouts */
    size_t convs = 0, misfit = 0;
    for (size_t oi = 0; oi < m->n_order; oi++) {
        const eng_node *n = &m->nodes[m->order[oi]];
        if (!(is_op(n, "Conv") || is_op(n, "ConvTranspose")) || n->n_in < 2 || n->in[1] < 0)
            continue;
        const eng_tensor *w = m->values[n->in[1]].konst;
        if (!w || w->rank != 4)
            continue;
        if (conv_group(n) > 1)
            return ENG_ACT_NHWC;
        int64_t oc = is_op(n, "Conv") ? w->dims[0] : w->dims[1], ic = is_op(n, "Conv") ? w->dims[1] : w->dims[0];
        convs++;
        /* a first convolution over a few image channels reads a plain input anyway */
        if (oc % block || (ic >= block && ic % block))
            misfit++;
    }
    /* a few convolutions with odd channel counts (fcn_resnet50's 21-class head on a ResNet-50 backbone)
     * do not make the whole network channels-last: they get oneDNN's own choice of layout */
    return misfit * 8 > convs ? ENG_ACT_NHWC : ENG_ACT_BLOCKED;
}

int eng_plan_layouts(cl_engine_model *m, cl_err *err)
{
    (void)err;
    m->act_layout = choose_act(m);
    for (size_t v = 0; v < m->n_values; v++)
        m->values[v].layout = ENG_LAYOUT_PLAIN;
    /* a value is blocked when its producer can leave it so and a consumer can take it */
    for (size_t oi = 0; oi < m->n_order; oi++) {
        const eng_node *n = &m->nodes[m->order[oi]];
        if (!(n->op->produces & ENG_LAYOUT_BLOCKED))
            continue;
        for (int k = 0; k < n->n_out; k++)
            if (n->out[k] >= 0 && m->values[n->out[k]].graph_output < 0)
                m->values[n->out[k]].layout = ENG_LAYOUT_BLOCKED | 0x80; /* candidate */
    }
    for (size_t oi = 0; oi < m->n_order; oi++) {
        const eng_node *n = &m->nodes[m->order[oi]];
        if (!(n->op->consumes & ENG_LAYOUT_BLOCKED))
            continue;
        /* Shape / Size read only dims: they do not make a value worth keeping blocked */
        if (is_op(n, "Shape") || is_op(n, "Size"))
            continue;
        for (int k = 0; k < n->n_in; k++)
            if (n->in[k] >= 0 && m->values[n->in[k]].layout & 0x80)
                m->values[n->in[k]].layout = ENG_LAYOUT_BLOCKED; /* confirmed */
    }
    for (size_t v = 0; v < m->n_values; v++)
        if (m->values[v].layout & 0x80)
            m->values[v].layout = ENG_LAYOUT_PLAIN; /* no consumer takes it blocked */
    return 0;
}
