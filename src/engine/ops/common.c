/* engine/ops/common.c — run-time helpers every plain-C kernel uses (ops/ops.h): required inputs in plain
 * layout, integer tensors read as shapes/axes, and numpy broadcasting of up to three operands.
 */
#include <stdlib.h>
#include <string.h>

#include "engine/ops/ops.h"

int eng_need_in(eng_run *r, const eng_node *n, int i, eng_tensor **t, cl_err *err)
{
    *t = eng_in_plain(r, n, i, err);
    if (!*t) {
        if (err && err->code == CL_OK)
            return eng_node_err(err, CL_E_FORMAT, n, "input %d is required", i);
        return -1;
    }
    return 0;
}

/* Reads a constant-or-runtime int tensor (shape, axes...) into v (at most max entries). */
int eng_read_ints(const eng_node *n, const eng_tensor *t, int64_t *v, int max, int *count, cl_err *err)
{
    if (t->dtype != CL_ENGINE_DT_INT64 && t->dtype != CL_ENGINE_DT_INT32)
        return eng_node_err(err, CL_E_FORMAT, n, "expected an int64 tensor, got %s", cl_engine_dtype_name(t->dtype));
    int64_t k = eng_numel(t);
    if (t->rank > 1 || k > max)
        return eng_node_err(err, CL_E_UNSUPPORTED, n, "expected a 1-D tensor of at most %d integers, got %s", max,
                            DIMS(t));
    for (int64_t i = 0; i < k; i++)
        v[i] = eng_get_i(t, i);
    *count = (int)k;
    return 0;
}

int eng_bcast_init(eng_bcast *b, eng_tensor **ts, int nt, const eng_node *n, cl_err *err)
{
    b->rank = 0;
    for (int k = 0; k < nt; k++)
        if (ts[k]->rank > b->rank)
            b->rank = ts[k]->rank;
    for (int d = 0; d < b->rank; d++) {
        int64_t v = 1;
        for (int k = 0; k < nt; k++) {
            int off = d - (b->rank - ts[k]->rank);
            int64_t x = off >= 0 ? ts[k]->dims[off] : 1;
            if (x == 1)
                continue;
            if (v != 1 && v != x)
                return eng_node_err(err, CL_E_FORMAT, n, "shapes %s and %s cannot be broadcast", DIMS(ts[0]),
                                    DIMS(ts[k]));
            v = x;
        }
        b->dims[d] = v;
    }
    for (int k = 0; k < nt; k++) {
        int64_t s = 1;
        for (int d = b->rank - 1; d >= 0; d--) {
            int off = d - (b->rank - ts[k]->rank);
            int64_t x = off >= 0 ? ts[k]->dims[off] : 1;
            b->st[k][d] = x == 1 ? 0 : s;
            s *= x;
        }
    }
    b->total = eng_dims_numel(b->dims, b->rank);
    if (b->total < 0)
        return eng_node_err(err, CL_E_FORMAT, n, "broadcast result is too large");
    return 0;
}

