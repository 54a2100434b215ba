/* engine/ops/ops.h — what the kernel families share (src/engine/ops/ and src/engine/dnnl/, and the
 * table in ops/table.c): run-time input helpers and numpy broadcasting (ops/common.c), the kinds that
 * tell the members of a family apart (eng_op.kind), the compiled attributes more than one file reads,
 * and every family's prepare / infer / run entry points. Private to src/engine.
 */
#ifndef CLOISTER_ENGINE_OPS_H
#define CLOISTER_ENGINE_OPS_H

#include "engine/internal.h"

#define DIMS(t) eng_dims_str((t)->dims, (t)->rank, (char[128]){0}, 128)

/* ---------------------------------------------------------------- run-time helpers (common.c) */

/* Input i in plain layout; an omitted input is an error naming it. */
int eng_need_in(eng_run *r, const eng_node *n, int i, eng_tensor **t, cl_err *err);
static inline int64_t eng_norm_axis(int64_t a, int rank)
{
    return a < 0 ? a + rank : a;
}
/* Reads a run-time int tensor (shape, axes...) into v (at most max entries). */
int eng_read_ints(const eng_node *n, const eng_tensor *t, int64_t *v, int max, int *count, cl_err *err);

typedef struct eng_bcast {
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK];
    int64_t st[3][CL_ENGINE_MAX_RANK];
    int64_t total;
} eng_bcast;
int eng_bcast_init(eng_bcast *b, eng_tensor **ts, int nt, const eng_node *n, cl_err *err);

/* Calls body for each output element e with the offsets o[0..nt) into the inputs. */
#define BCAST_LOOP(b, nt, ...)                                                                                   \
    do {                                                                                                          \
        int64_t idx_[CL_ENGINE_MAX_RANK] = {0}, o[3] = {0};                                                       \
        for (int64_t e = 0; e < (b)->total; e++) {                                                                \
            __VA_ARGS__;                                                                                          \
            for (int d_ = (b)->rank - 1; d_ >= 0; d_--) {                                                         \
                idx_[d_]++;                                                                                       \
                for (int k_ = 0; k_ < (nt); k_++)                                                                 \
                    o[k_] += (b)->st[k_][d_];                                                                     \
                if (idx_[d_] < (b)->dims[d_])                                                                     \
                    break;                                                                                        \
                for (int k_ = 0; k_ < (nt); k_++)                                                                 \
                    o[k_] -= (b)->st[k_][d_] * (b)->dims[d_];                                                     \
                idx_[d_] = 0;                                                                                     \
            }                                                                                                     \
        }                                                                                                         \
    } while (0)

/* ---------------------------------------------------------------- kinds (eng_op.kind) */

typedef enum {
    U_RELU, U_LEAKY, U_ELU, U_SELU, U_CELU, U_SIGMOID, U_HSIGMOID, U_HSWISH, U_TANH, U_EXP, U_LOG, U_SQRT, U_ABS,
    U_NEG, U_ERF, U_FLOOR, U_CEIL, U_ROUND, U_RECIP, U_SIN, U_COS, U_TAN, U_ASIN, U_ACOS, U_ATAN, U_SINH, U_COSH,
    U_ASINH, U_ACOSH, U_ATANH, U_SOFTPLUS, U_SOFTSIGN, U_SIGN, U_THRELU, U_NOT, U_IDENT, U_ISNAN, U_GELU,
} eng_unary_kind;

typedef enum { B_ADD, B_SUB, B_MUL, B_DIV, B_POW, B_MOD, B_EQ, B_LT, B_GT, B_LE, B_GE, B_AND, B_OR, B_XOR,
               B_MAX, B_MIN, B_SUM, B_MEAN, B_PRELU, B_BSHIFT } eng_binary_kind;

typedef enum { R_SUM, R_MEAN, R_MAX, R_MIN, R_PROD, R_L1, R_L2, R_SUMSQ, R_LOGSUM, R_LOGSUMEXP, R_ARGMAX,
               R_ARGMIN } eng_reduce_kind;

enum { SOFTMAX_PLAIN, SOFTMAX_LOG, SOFTMAX_HARD };
enum { CAST_TO, CAST_LIKE };
enum { DEPTH_TO_SPACE, SPACE_TO_DEPTH };
enum { RESIZE_RESIZE, RESIZE_UPSAMPLE };
enum { SCATTER_ND, SCATTER_ELEMENTS };
typedef enum { P_MAX, P_AVG, P_GAVG, P_GMAX } eng_pool_kind;

/* ---------------------------------------------------------------- compiled attributes read in more than one file */

/* Unary elementwise: the function's parameters (alpha / gamma / beta where the op has them). */
typedef struct eng_unary_attr {
    double a, b;
} eng_unary_attr;

/* Clip: bounds from attributes (opset < 11), else from inputs 1 and 2. */
typedef struct eng_clip_attr {
    bool from_attrs;
    float lo, hi;
} eng_clip_attr;

/* BatchNormalization, InstanceNormalization, LayerNormalization. */
typedef struct eng_norm_attr {
    float epsilon;
    int64_t axis; /* LayerNormalization */
} eng_norm_attr;

/* The fused matmul (fuse.c builds it from MatMul / Gemm and what follows them; dnnl/matmul.c runs it on
 * oneDNN): y = post_k(...post_1(A x B [+ bias])) with B [K,N] (trans_b: given as [N,K]) and the
 * post-ops in graph order. ENG_MMP_ADD adds input `in` (numpy broadcast into y: a mask, a residual, a
 * bias after a scale). A plain MatMul node runs the same kernel with no post-ops. */
typedef enum { ENG_MMP_LINEAR, ENG_MMP_RELU, ENG_MMP_GELU_ERF, ENG_MMP_GELU_TANH, ENG_MMP_ADD } eng_mmp_kind;
#define ENG_MM_MAX_POST 6
typedef struct eng_mm_post {
    eng_mmp_kind kind;
    float alpha, beta; /* ENG_MMP_LINEAR: alpha * x + beta */
    int in;            /* ENG_MMP_ADD: the node's input index */
} eng_mm_post;
typedef struct eng_mm_attr {
    bool trans_b;
    int bias;          /* input index of a [N] bias added to the product, -1 */
    int n_post;
    eng_mm_post post[ENG_MM_MAX_POST];
} eng_mm_attr;
extern const eng_op eng_op_fused_matmul;
/* GELU (fuse.c from its Erf and Tanh forms): the kind says which; run on oneDNN's eltwise. */
extern const eng_op eng_op_fused_gelu_erf, eng_op_fused_gelu_tanh;

/* Ops whose only attribute is an axis (Concat: required). */
typedef struct eng_axis_attr {
    int64_t axis;
} eng_axis_attr;

/* ---------------------------------------------------------------- entry points of the families */

#define ENG_PREPARE(fn) int fn(cl_engine_model *m, eng_node *n, cl_err *err)
#define ENG_INFER(fn) int fn(eng_infer_ctx *c, cl_err *err)
#define ENG_RUN(fn) int fn(eng_run *r, eng_node *n, cl_err *err)

/* elementwise.c */
ENG_PREPARE(eng_prep_unary);
ENG_RUN(eng_run_unary);
ENG_PREPARE(eng_prep_clip);
ENG_RUN(eng_run_clip);
ENG_PREPARE(eng_prep_binary);
ENG_RUN(eng_run_binary);
ENG_INFER(eng_infer_compare);
ENG_RUN(eng_run_where);
ENG_INFER(eng_infer_where);
ENG_PREPARE(eng_prep_cast);
ENG_INFER(eng_infer_cast);
ENG_RUN(eng_run_cast);
ENG_PREPARE(eng_prep_isinf);
ENG_RUN(eng_run_isinf);
ENG_PREPARE(eng_prep_shrink);
ENG_RUN(eng_run_shrink);

/* layout.c */
ENG_PREPARE(eng_prep_reshape);
ENG_INFER(eng_infer_reshape);
ENG_RUN(eng_run_reshape);
ENG_PREPARE(eng_prep_axis);
ENG_PREPARE(eng_prep_axis_required);
ENG_INFER(eng_infer_flatten);
ENG_RUN(eng_run_flatten);
ENG_PREPARE(eng_prep_squeeze);
ENG_RUN(eng_run_squeeze);
ENG_RUN(eng_run_unsqueeze);
ENG_PREPARE(eng_prep_shape);
ENG_INFER(eng_infer_shape);
ENG_RUN(eng_run_shape);
ENG_RUN(eng_run_size);
ENG_PREPARE(eng_prep_transpose);
ENG_RUN(eng_run_transpose);
ENG_INFER(eng_infer_concat);
ENG_RUN(eng_ref_concat);
ENG_PREPARE(eng_prep_split);
ENG_RUN(eng_run_split);
ENG_PREPARE(eng_prep_slice);
ENG_RUN(eng_run_slice);
ENG_RUN(eng_run_expand);
ENG_RUN(eng_run_tile);
ENG_PREPARE(eng_prep_pad);
ENG_RUN(eng_run_pad);
ENG_PREPARE(eng_prep_depth_space);
ENG_RUN(eng_run_depth_space);
ENG_RUN(eng_run_dropout);
/* Dropout that forwards its input (inference, or training mode with a constant ratio of 0, mask unused). */
bool eng_dropout_noop(const cl_engine_model *m, const eng_node *n);
ENG_RUN(eng_run_never);
ENG_PREPARE(eng_prep_constant);

/* index.c */
ENG_RUN(eng_run_gather);
ENG_RUN(eng_run_gather_elements);
ENG_PREPARE(eng_prep_constant_of_shape);
ENG_RUN(eng_run_constant_of_shape);
ENG_RUN(eng_run_range);
ENG_PREPARE(eng_prep_trilu);
ENG_RUN(eng_run_trilu);
ENG_PREPARE(eng_prep_cumsum);
ENG_RUN(eng_run_cumsum);
ENG_PREPARE(eng_prep_eyelike);
ENG_RUN(eng_run_eyelike);
ENG_RUN(eng_run_onehot);
ENG_PREPARE(eng_prep_topk);
ENG_RUN(eng_run_topk);

/* scatter.c */
ENG_PREPARE(eng_prep_scatter);
ENG_RUN(eng_run_scatter_nd);
ENG_RUN(eng_run_scatter_elements);

/* reduce.c */
ENG_PREPARE(eng_prep_softmax);
ENG_RUN(eng_run_softmax);
ENG_PREPARE(eng_prep_reduce);
ENG_RUN(eng_run_reduce);

/* resize.c: Resize / Upsample's compiled attributes (dnnl/resample.c reads them too) */
enum { RS_NEAREST, RS_LINEAR, RS_CUBIC };
enum { CT_HALF_PIXEL, CT_PYTORCH_HALF_PIXEL, CT_ALIGN_CORNERS, CT_ASYMMETRIC, CT_TF_HALF_PIXEL_FOR_NN,
       CT_TF_CROP_AND_RESIZE };
enum { NM_ROUND_PREFER_FLOOR, NM_ROUND_PREFER_CEIL, NM_FLOOR, NM_CEIL };
typedef struct resize_attr {
    bool old; /* Upsample or Resize-10: asymmetric coordinates, floor, scales (Upsample-7: attribute) */
    int mode, ctm, nearest;
    bool exclude;
    double A, extrap;
    const float *scales; /* Upsample-7's attribute (borrowed), n_scales entries */
    size_t n_scales;
} resize_attr;
ENG_PREPARE(eng_prep_resize);
ENG_RUN(eng_run_resize);
/* dnnl/resample.c: Resize of 3-5-D float tensors on oneDNN resampling (any layout) where it matches ONNX
 * (linear half-pixel, nearest by integer factors), else eng_run_resize */
ENG_RUN(eng_run_resize_dnnl);

/* matmul.c */
ENG_INFER(eng_infer_matmul);
ENG_RUN(eng_run_matmul);
ENG_PREPARE(eng_prep_gemm);
ENG_INFER(eng_infer_gemm);
ENG_RUN(eng_run_gemm);

/* norm.c */
ENG_PREPARE(eng_prep_layernorm);
ENG_RUN(eng_run_layernorm);
ENG_PREPARE(eng_prep_batchnorm);
ENG_RUN(eng_ref_batchnorm);
ENG_PREPARE(eng_prep_instnorm);
ENG_RUN(eng_run_instnorm);

/* dnnl/conv.c */
ENG_PREPARE(eng_prep_conv);
ENG_INFER(eng_infer_conv);
ENG_RUN(eng_run_conv);
ENG_PREPARE(eng_prep_convtranspose);
ENG_RUN(eng_run_convtranspose);
/* dnnl/pool.c */
ENG_PREPARE(eng_prep_pool);
ENG_INFER(eng_infer_pool);
ENG_RUN(eng_run_pool);
ENG_PREPARE(eng_prep_lrn);
ENG_RUN(eng_run_lrn);
/* dnnl/eltwise.c: the layout-preserving kernels (oneDNN on blocked inputs, else the plain-C kernel) */
ENG_RUN(eng_run_batchnorm);
ENG_RUN(eng_run_concat);
ENG_RUN(eng_run_eltwise);
ENG_RUN(eng_run_binary_dnnl);
/* dnnl/matmul.c: MatMul (fp32 on oneDNN's matmul primitive, else matmul.c) and the fused forms */
ENG_RUN(eng_run_matmul_dnnl);
ENG_INFER(eng_infer_fused_matmul);
/* dnnl/norm.c: softmax and layer normalization on oneDNN for fp32; 1 when the case is not theirs
 * (the caller runs its plain-C kernel), 0 done, -1 error */
int eng_dnnl_softmax(eng_run *r, eng_node *n, eng_tensor *x, int64_t outer, int64_t len, int64_t inner, bool log,
                     cl_err *err);
int eng_dnnl_layernorm(eng_run *r, eng_node *n, eng_tensor *x, eng_tensor *sc, eng_tensor *bi, int64_t outer,
                       int64_t inner, float eps, cl_err *err);
/* dnnl/prim.c */
void eng_prim_cache_free(void *state);

#endif
