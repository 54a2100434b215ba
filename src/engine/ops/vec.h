/* engine/ops/vec.h — the fast paths of the plain-C kernels (ops/vec.c: elementwise; ops/move.c: data
 * movement), called by the kernels in elementwise.c, layout.c and index.c once their inputs are checked
 * and their output allocated. Each returns false, having done nothing, when it does not handle the case
 * (a dtype without a fast loop, or eng_kernels_reference set by a test): the caller then runs its scalar
 * reference loop. None of them can fail. Private to src/engine.
 */
#ifndef CLOISTER_ENGINE_OPS_VEC_H
#define CLOISTER_ENGINE_OPS_VEC_H

#include "engine/ops/ops.h"

/* out = a op b, broadcast per bc (float32 inputs; out float32, or bool for comparisons). */
bool eng_vec_binary(eng_binary_kind k, const eng_tensor *a, const eng_tensor *b, eng_tensor *out,
                    const eng_bcast *bc);
/* Mean's division of the sum by n, in place. */
bool eng_vec_mean_div(eng_tensor *t, int n);
/* y = c ? a : b, broadcast per bc (any element size). */
bool eng_vec_where(const eng_tensor *c, const eng_tensor *a, const eng_tensor *b, eng_tensor *y, const eng_bcast *bc);
/* y = x broadcast per bc (operand 0 is x). */
bool eng_vec_expand(const eng_tensor *x, eng_tensor *y, const eng_bcast *bc);
/* y = f(x) for float32 (a, b: the function's parameters). */
bool eng_vec_unary(eng_unary_kind k, const eng_tensor *x, eng_tensor *y, double a, double b);
/* y = x converted to y's dtype (the common pairs among float, double, int64, int32, uint8, bool). */
bool eng_vec_cast(const eng_tensor *x, eng_tensor *y);

/* move.c: y = x transposed by perm (y allocated with the permuted dims). */
bool eng_vec_transpose(const eng_tensor *x, eng_tensor *y, const int64_t *perm);
/* y = x[b[d] + i*step[d]] for every output index i (Slice; steps may be negative). */
bool eng_vec_slice(const eng_tensor *x, eng_tensor *y, const int64_t *begin, const int64_t *step);
/* Concat along axis of n plain inputs into y. */
bool eng_vec_concat(eng_tensor *const *ins, int n, int64_t axis, eng_tensor *y);
/* Gather along axis with checked, in-range indices (negative ones not yet wrapped). */
bool eng_vec_gather(const eng_tensor *x, const eng_tensor *ind, int64_t axis, eng_tensor *y);

#endif
