/* engine/describe.c — eng_describe_plan: the compiled plan of a loaded model as one line of text, the
 * live nodes in execution order by their (possibly fused) operator names, e.g. "LayerNormalization
 * FusedMatMul(bias,gelu_erf) ...", a node's fused activation / residual-sum post-ops appended with '+'
 * ("Conv+HardSwish", "Conv+Add+Relu", "BatchNormalization+Relu"). For tests that check what the fusion
 * passes (graph.c, fuse.c, fuse_cnn.c) made, and for debugging.
 */
#include <stdio.h>
#include <string.h>

#include "engine/internal.h"

static const char *post_name(eng_post_kind k)
{
    switch (k) {
    case ENG_POST_RELU: return "+Relu";
    case ENG_POST_CLIP: return "+Clip";
    case ENG_POST_SWISH: return "+SiLU";
    case ENG_POST_HSWISH: return "+HardSwish";
    case ENG_POST_HSIGMOID: return "+HardSigmoid";
    case ENG_POST_SIGMOID: return "+Sigmoid";
    default: return "";
    }
}

size_t eng_describe_plan(const cl_engine_model *m, char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (size_t oi = 0; oi < m->n_order; oi++) {
        const eng_node *n = &m->nodes[m->order[oi]];
        if (n->dead)
            continue;
        int w = snprintf(buf + (used < len ? used : len), used < len ? len - used : 0, "%s%s%s%s%s", used ? " " : "",
                         n->op_type, post_name(n->post), n->sum_in >= 0 ? "+Add" : "", post_name(n->post2));
        if (w > 0)
            used += (size_t)w;
    }
    return used;
}
