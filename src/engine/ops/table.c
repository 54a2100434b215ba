/* engine/ops/table.c — the operator table: one descriptor (internal.h, eng_op) per ONNX operator the
 * engine implements, in name order, and eng_op_find, the only place an operator is looked up by name (once
 * per node, at load). Adding an operator is one entry here plus its kernel (and prepare / infer when it
 * has attributes / a shape rule) in its family's file.
 *
 * since: the opset in which ONNX introduced the operator in the form implemented here (Gelu excepted: ONNX
 * added it at 20, past the opsets the loader accepts, and exporters' Gelu nodes at lower opsets keep
 * loading); until: the newest opset the loader accepts. consumes / produces: the oneDNN kernels
 * (dnnl/) take and leave blocked layouts, the plain-C ones (ops/) plain only; Shape and Size read only
 * dims.
 */
#include <string.h>

#include "engine/ops/ops.h"

#define P ENG_LAYOUT_PLAIN
#define ANY ENG_LAYOUT_ANY
#define NEWEST 18

/* Fields shared by whole families; the table lists what differs. */
#define IO(a, b, c, d) .min_in = (a), .max_in = (b), .min_out = (c), .max_out = (d)
#define PLAIN .consumes = P, .produces = P
#define BLOCKED .consumes = ANY, .produces = ANY
#define UNARY(nm, k, s) {.name = nm, .since = s, .until = NEWEST, IO(1, 1, 1, 1), .kind = k, PLAIN, \
                         .prepare = eng_prep_unary, .run = eng_run_unary}
#define UNARY_SAME(nm, k, s) {.name = nm, .since = s, .until = NEWEST, IO(1, 1, 1, 1), .kind = k, PLAIN, \
                              .prepare = eng_prep_unary, .infer = eng_infer_same, .run = eng_run_unary}
#define UNARY_DNNL(nm, k, s) {.name = nm, .since = s, .until = NEWEST, IO(1, 1, 1, 1), .kind = k, BLOCKED, \
                              .prepare = eng_prep_unary, .infer = eng_infer_same, .run = eng_run_eltwise, \
                              .free_state = eng_prim_cache_free}
#define BINARY(nm, k, s, inf) {.name = nm, .since = s, .until = NEWEST, IO(2, 2, 1, 1), .kind = k, PLAIN, \
                               .prepare = eng_prep_binary, .infer = inf, .run = eng_run_binary}
#define BINARY_DNNL(nm, k) {.name = nm, .since = 1, .until = NEWEST, IO(2, 2, 1, 1), .kind = k, BLOCKED, \
                            .infer = eng_infer_broadcast, .run = eng_run_binary_dnnl, .free_state = eng_prim_cache_free}
#define VARIADIC(nm, k, inf) {.name = nm, .since = 1, .until = NEWEST, IO(1, -1, 1, 1), .kind = k, PLAIN, \
                              .infer = inf, .run = eng_run_binary}
#define REDUCE(nm, k) {.name = nm, .since = 1, .until = NEWEST, IO(1, 2, 1, 1), .kind = k, PLAIN, \
                       .prepare = eng_prep_reduce, .run = eng_run_reduce}
#define POOL(nm, k, outs) {.name = nm, .since = 1, .until = NEWEST, IO(1, 1, 1, outs), .kind = k, BLOCKED, \
                           .prepare = eng_prep_pool, .infer = eng_infer_pool, .run = eng_run_pool, \
                           .free_state = eng_prim_cache_free}
#define SOFTMAX(nm, k, inf) {.name = nm, .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = k, PLAIN, \
                             .prepare = eng_prep_softmax, .infer = inf, .run = eng_run_softmax, \
                             .free_state = eng_prim_cache_free}

const eng_op eng_ops[] = {
    UNARY_SAME("Abs", U_ABS, 1),
    UNARY("Acos", U_ACOS, 7),
    UNARY("Acosh", U_ACOSH, 9),
    BINARY_DNNL("Add", B_ADD),
    BINARY("And", B_AND, 1, NULL),
    {.name = "ArgMax", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = R_ARGMAX, PLAIN,
     .prepare = eng_prep_reduce, .run = eng_run_reduce},
    {.name = "ArgMin", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = R_ARGMIN, PLAIN,
     .prepare = eng_prep_reduce, .run = eng_run_reduce},
    UNARY("Asin", U_ASIN, 7),
    UNARY("Asinh", U_ASINH, 9),
    UNARY("Atan", U_ATAN, 7),
    UNARY("Atanh", U_ATANH, 9),
    POOL("AveragePool", P_AVG, 1),
    {.name = "BatchNormalization", .since = 1, .until = NEWEST, IO(5, 5, 1, 3), BLOCKED,
     .prepare = eng_prep_batchnorm, .infer = eng_infer_same, .run = eng_run_batchnorm,
     .free_state = eng_prim_cache_free},
    BINARY("BitShift", B_BSHIFT, 11, NULL),
    {.name = "Cast", .since = 6, .until = NEWEST, IO(1, 1, 1, 1), .kind = CAST_TO, PLAIN, .prepare = eng_prep_cast,
     .infer = eng_infer_cast, .run = eng_run_cast},
    {.name = "CastLike", .since = 15, .until = NEWEST, IO(2, 2, 1, 1), .kind = CAST_LIKE, PLAIN,
     .prepare = eng_prep_cast, .run = eng_run_cast},
    UNARY("Ceil", U_CEIL, 1),
    UNARY("Celu", U_CELU, 12),
    {.name = "Clip", .since = 1, .until = NEWEST, IO(1, 3, 1, 1), PLAIN, .prepare = eng_prep_clip,
     .infer = eng_infer_same, .run = eng_run_clip},
    {.name = "Concat", .since = 1, .until = NEWEST, IO(1, -1, 1, 1), BLOCKED, .prepare = eng_prep_axis_required,
     .infer = eng_infer_concat, .run = eng_run_concat, .free_state = eng_prim_cache_free},
    {.name = "Constant", .since = 1, .until = NEWEST, IO(0, 0, 1, 1), PLAIN, .prepare = eng_prep_constant,
     .run = eng_run_never},
    {.name = "ConstantOfShape", .since = 9, .until = NEWEST, IO(1, 1, 1, 1), PLAIN,
     .prepare = eng_prep_constant_of_shape, .run = eng_run_constant_of_shape},
    {.name = "Conv", .since = 1, .until = NEWEST, IO(2, 3, 1, 1), BLOCKED, .prepare = eng_prep_conv,
     .infer = eng_infer_conv, .run = eng_run_conv, .free_state = eng_prim_cache_free},
    {.name = "ConvTranspose", .since = 1, .until = NEWEST, IO(2, 3, 1, 1), BLOCKED, .prepare = eng_prep_convtranspose,
     .run = eng_run_convtranspose, .free_state = eng_prim_cache_free},
    UNARY("Cos", U_COS, 7),
    UNARY("Cosh", U_COSH, 9),
    {.name = "CumSum", .since = 11, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .prepare = eng_prep_cumsum,
     .run = eng_run_cumsum},
    {.name = "DepthToSpace", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = DEPTH_TO_SPACE, PLAIN,
     .prepare = eng_prep_depth_space, .run = eng_run_depth_space},
    BINARY_DNNL("Div", B_DIV),
    {.name = "Dropout", .since = 1, .until = NEWEST, IO(1, 3, 1, 2), PLAIN, .infer = eng_infer_same,
     .run = eng_run_dropout},
    UNARY("Elu", U_ELU, 1),
    BINARY("Equal", B_EQ, 1, eng_infer_compare),
    UNARY_SAME("Erf", U_ERF, 9),
    UNARY_SAME("Exp", U_EXP, 1),
    {.name = "Expand", .since = 8, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .run = eng_run_expand},
    {.name = "EyeLike", .since = 9, .until = NEWEST, IO(1, 1, 1, 1), PLAIN, .prepare = eng_prep_eyelike,
     .run = eng_run_eyelike},
    {.name = "Flatten", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), PLAIN, .prepare = eng_prep_axis,
     .infer = eng_infer_flatten, .run = eng_run_flatten},
    UNARY("Floor", U_FLOOR, 1),
    {.name = "Gather", .since = 1, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .prepare = eng_prep_axis,
     .run = eng_run_gather},
    {.name = "GatherElements", .since = 11, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .prepare = eng_prep_axis,
     .run = eng_run_gather_elements},
    UNARY_SAME("Gelu", U_GELU, 1),
    {.name = "Gemm", .since = 1, .until = NEWEST, IO(2, 3, 1, 1), PLAIN, .prepare = eng_prep_gemm,
     .infer = eng_infer_gemm, .run = eng_run_gemm},
    POOL("GlobalAveragePool", P_GAVG, 1),
    POOL("GlobalMaxPool", P_GMAX, 1),
    BINARY("Greater", B_GT, 1, eng_infer_compare),
    BINARY("GreaterOrEqual", B_GE, 12, NULL),
    UNARY_DNNL("HardSigmoid", U_HSIGMOID, 1),
    UNARY_DNNL("HardSwish", U_HSWISH, 14),
    {.name = "Hardmax", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = SOFTMAX_HARD, PLAIN,
     .prepare = eng_prep_softmax, .run = eng_run_softmax},
    UNARY_SAME("Identity", U_IDENT, 1),
    {.name = "InstanceNormalization", .since = 1, .until = NEWEST, IO(3, 3, 1, 1), PLAIN,
     .prepare = eng_prep_instnorm, .infer = eng_infer_same, .run = eng_run_instnorm},
    {.name = "IsInf", .since = 10, .until = NEWEST, IO(1, 1, 1, 1), PLAIN, .prepare = eng_prep_isinf,
     .run = eng_run_isinf},
    UNARY("IsNaN", U_ISNAN, 9),
    {.name = "LRN", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), BLOCKED, .prepare = eng_prep_lrn,
     .run = eng_run_lrn, .free_state = eng_prim_cache_free},
    {.name = "LayerNormalization", .since = 17, .until = NEWEST, IO(2, 3, 1, 3), PLAIN,
     .prepare = eng_prep_layernorm, .infer = eng_infer_same, .run = eng_run_layernorm,
     .free_state = eng_prim_cache_free},
    UNARY_DNNL("LeakyRelu", U_LEAKY, 1),
    BINARY("Less", B_LT, 1, eng_infer_compare),
    BINARY("LessOrEqual", B_LE, 12, NULL),
    UNARY_SAME("Log", U_LOG, 1),
    SOFTMAX("LogSoftmax", SOFTMAX_LOG, eng_infer_same),
    {.name = "MatMul", .since = 1, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .infer = eng_infer_matmul,
     .run = eng_run_matmul_dnnl, .free_state = eng_prim_cache_free},
    VARIADIC("Max", B_MAX, eng_infer_broadcast),
    POOL("MaxPool", P_MAX, 2),
    VARIADIC("Mean", B_MEAN, eng_infer_broadcast),
    VARIADIC("Min", B_MIN, eng_infer_broadcast),
    BINARY("Mod", B_MOD, 10, NULL),
    BINARY_DNNL("Mul", B_MUL),
    UNARY_SAME("Neg", U_NEG, 1),
    UNARY("Not", U_NOT, 1),
    {.name = "OneHot", .since = 9, .until = NEWEST, IO(3, 3, 1, 1), PLAIN, .prepare = eng_prep_axis,
     .run = eng_run_onehot},
    BINARY("Or", B_OR, 1, NULL),
    BINARY("PRelu", B_PRELU, 1, NULL),
    {.name = "Pad", .since = 2, .until = NEWEST, IO(1, 4, 1, 1), PLAIN, .prepare = eng_prep_pad, .run = eng_run_pad},
    BINARY("Pow", B_POW, 1, eng_infer_broadcast),
    {.name = "Range", .since = 11, .until = NEWEST, IO(3, 3, 1, 1), PLAIN, .run = eng_run_range},
    UNARY_SAME("Reciprocal", U_RECIP, 1),
    REDUCE("ReduceL1", R_L1),
    REDUCE("ReduceL2", R_L2),
    REDUCE("ReduceLogSum", R_LOGSUM),
    REDUCE("ReduceLogSumExp", R_LOGSUMEXP),
    REDUCE("ReduceMax", R_MAX),
    REDUCE("ReduceMean", R_MEAN),
    REDUCE("ReduceMin", R_MIN),
    REDUCE("ReduceProd", R_PROD),
    REDUCE("ReduceSum", R_SUM),
    REDUCE("ReduceSumSquare", R_SUMSQ),
    UNARY_DNNL("Relu", U_RELU, 1),
    {.name = "Reshape", .since = 1, .until = NEWEST, IO(1, 2, 1, 1), PLAIN, .prepare = eng_prep_reshape,
     .infer = eng_infer_reshape, .run = eng_run_reshape},
    {.name = "Resize", .since = 10, .until = NEWEST, IO(1, 4, 1, 1), .kind = RESIZE_RESIZE, BLOCKED,
     .prepare = eng_prep_resize, .run = eng_run_resize_dnnl, .free_state = eng_prim_cache_free},
    UNARY("Round", U_ROUND, 11),
    {.name = "Scatter", .since = 9, .until = 10, IO(3, 3, 1, 1), .kind = SCATTER_ELEMENTS, PLAIN,
     .prepare = eng_prep_scatter, .infer = eng_infer_same, .run = eng_run_scatter_elements},
    {.name = "ScatterElements", .since = 11, .until = NEWEST, IO(3, 3, 1, 1), .kind = SCATTER_ELEMENTS, PLAIN,
     .prepare = eng_prep_scatter, .infer = eng_infer_same, .run = eng_run_scatter_elements},
    {.name = "ScatterND", .since = 11, .until = NEWEST, IO(3, 3, 1, 1), .kind = SCATTER_ND, PLAIN,
     .prepare = eng_prep_scatter, .infer = eng_infer_same, .run = eng_run_scatter_nd},
    UNARY("Selu", U_SELU, 1),
    {.name = "Shape", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .consumes = ANY, .produces = P,
     .prepare = eng_prep_shape, .infer = eng_infer_shape, .run = eng_run_shape},
    {.name = "Shrink", .since = 9, .until = NEWEST, IO(1, 1, 1, 1), PLAIN, .prepare = eng_prep_shrink,
     .run = eng_run_shrink},
    UNARY_DNNL("Sigmoid", U_SIGMOID, 1),
    UNARY("Sign", U_SIGN, 9),
    UNARY("Sin", U_SIN, 7),
    UNARY("Sinh", U_SINH, 9),
    {.name = "Size", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .consumes = ANY, .produces = P, .run = eng_run_size},
    {.name = "Slice", .since = 1, .until = NEWEST, IO(1, 5, 1, 1), PLAIN, .prepare = eng_prep_slice,
     .run = eng_run_slice},
    SOFTMAX("Softmax", SOFTMAX_PLAIN, eng_infer_same),
    UNARY("Softplus", U_SOFTPLUS, 1),
    UNARY("Softsign", U_SOFTSIGN, 1),
    {.name = "SpaceToDepth", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), .kind = SPACE_TO_DEPTH, PLAIN,
     .prepare = eng_prep_depth_space, .run = eng_run_depth_space},
    {.name = "Split", .since = 1, .until = NEWEST, IO(1, 2, 1, 256), PLAIN, .prepare = eng_prep_split,
     .run = eng_run_split},
    UNARY_SAME("Sqrt", U_SQRT, 1),
    {.name = "Squeeze", .since = 1, .until = NEWEST, IO(1, 2, 1, 1), PLAIN, .prepare = eng_prep_squeeze,
     .run = eng_run_squeeze},
    BINARY_DNNL("Sub", B_SUB),
    VARIADIC("Sum", B_SUM, eng_infer_broadcast),
    UNARY("Tan", U_TAN, 7),
    UNARY_DNNL("Tanh", U_TANH, 1),
    UNARY("ThresholdedRelu", U_THRELU, 10),
    {.name = "Tile", .since = 6, .until = NEWEST, IO(2, 2, 1, 1), PLAIN, .run = eng_run_tile},
    {.name = "TopK", .since = 10, .until = NEWEST, IO(2, 2, 2, 2), PLAIN, .prepare = eng_prep_topk,
     .run = eng_run_topk},
    {.name = "Transpose", .since = 1, .until = NEWEST, IO(1, 1, 1, 1), PLAIN, .prepare = eng_prep_transpose,
     .run = eng_run_transpose},
    {.name = "Trilu", .since = 14, .until = NEWEST, IO(1, 2, 1, 1), PLAIN, .prepare = eng_prep_trilu,
     .run = eng_run_trilu},
    {.name = "Unsqueeze", .since = 1, .until = NEWEST, IO(1, 2, 1, 1), PLAIN, .prepare = eng_prep_squeeze,
     .run = eng_run_unsqueeze},
    {.name = "Upsample", .since = 7, .until = NEWEST, IO(1, 2, 1, 1), .kind = RESIZE_UPSAMPLE, PLAIN,
     .prepare = eng_prep_resize, .run = eng_run_resize},
    {.name = "Where", .since = 9, .until = NEWEST, IO(3, 3, 1, 1), PLAIN, .infer = eng_infer_where,
     .run = eng_run_where},
    BINARY("Xor", B_XOR, 1, NULL),
};
const size_t eng_ops_count = CL_ARRAY_LEN(eng_ops);

const eng_op *eng_op_find(const char *op_type, int64_t opset, const char *node_name, cl_err *err)
{
    for (size_t i = 0; i < eng_ops_count; i++) { /* once per node at load: a scan of ~120 names is nothing */
        const eng_op *op = &eng_ops[i];
        if (strcmp(op_type, op->name) != 0)
            continue;
        if (opset < op->since || opset > op->until) {
            cl_err_set(err, CL_E_UNSUPPORTED, "operator '%s' (node '%s') is not supported at opset %lld (cloister "
                       "implements it for opsets %d..%d)", op_type, node_name, (long long)opset, op->since, op->until);
            return NULL;
        }
        return op;
    }
    cl_err_set(err, CL_E_UNSUPPORTED, "unsupported operator '%s' (node '%s', opset %lld)", op_type, node_name,
               (long long)opset);
    return NULL;
}
