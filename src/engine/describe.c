/* engine/describe.c — eng_describe_plan: the compiled plan of a loaded model as one line of text, the
 * live nodes in execution order by their (possibly fused) operator names, e.g. "LayerNormalization
 * FusedMatMul(bias,gelu_erf) ...". For tests that check what the fusion passes made, and for debugging.
 */
#include <stdio.h>
#include <string.h>

#include "engine/internal.h"

size_t eng_describe_plan(const cl_engine_model *m, char *buf, size_t len)
{
    size_t used = 0;
    if (len)
        buf[0] = '\0';
    for (size_t oi = 0; oi < m->n_order; oi++) {
        const eng_node *n = &m->nodes[m->order[oi]];
        if (n->dead)
            continue;
        int w = snprintf(buf + (used < len ? used : len), used < len ? len - used : 0, "%s%s", used ? " " : "",
                         n->op_type);
        if (w > 0)
            used += (size_t)w;
    }
    return used;
}
