/* engine/internal.h — the engine's private interface shared by src/engine/ (all .c files, ops/ and
 * dnnl/ included): the graph IR built by the ONNX loader (onnx.c), graph preparation (graph.c), shape
 * inference (shape.c), the run-time tensors and the executor (exec.c), and the operator descriptor every
 * kernel family implements (eng_op; the one table is ops/table.c). Nothing outside src/engine (and the
 * engine's tests) includes this file.
 *
 * Life cycle: onnx.c turns ModelProto bytes into a cl_engine_model (values + nodes, attributes copied,
 * initializers validated and copied) and binds every node to its descriptor (eng_op_find: the only
 * lookup by name); graph.c calls each descriptor's prepare (attributes decoded and validated into the
 * node's compiled attributes, n->attr), then orders, folds and fuses; shape.c runs each descriptor's
 * infer; exec.c calls each descriptor's run in order on per-run tensors. Per-node kernel state (oneDNN
 * primitives per input shape, n->state) is created lazily under model->lock and is read-only
 * afterwards, so concurrent runs are safe.
 */
#ifndef CLOISTER_ENGINE_INTERNAL_H
#define CLOISTER_ENGINE_INTERNAL_H

#include <pthread.h>

#include <stdatomic.h>

#include <dnnl.h>

#include "cloister/engine.h"

#define ENG_MOD "engine"

/* ---------------------------------------------------------------- reusable memory objects
 * oneDNN wants a memory object (layout + pointer) per primitive argument; making and destroying
 * them each run was a fifth of a small model's run time. A mem_set keeps one object per argument
 * slot of a cached primitive: a run that finds the set free takes it and only sets the data
 * pointers; a concurrent run of the same primitive makes its own objects as before. A slot is always
 * used with the same layout. Zero-initialised (calloc) is a free, empty set. */
#define ENG_MEM_SLOTS 8
typedef struct eng_mem_set {
    atomic_flag busy;
    dnnl_memory_t m[ENG_MEM_SLOTS];
} eng_mem_set;
/* Takes the set for this run: true when it was free (then eng_mem_release it). */
bool eng_mem_take(eng_mem_set *s);
void eng_mem_release(eng_mem_set *s, bool held);
/* The memory object for slot i with layout md over p: the set's when held (made on first use), else
 * a new one that eng_mem_done destroys. */
dnnl_status_t eng_mem(dnnl_engine_t eng, eng_mem_set *s, bool held, int i, const dnnl_memory_desc_t *md, void *p,
                      dnnl_memory_t *out);
void eng_mem_done(bool held, dnnl_memory_t m);
void eng_mem_set_free(eng_mem_set *s);

/* ---------------------------------------------------------------- tensors */

/* A tensor during a run (or a constant). Plain row-major unless `blocked`, in which case the data
 * is fp32 in the oneDNN layout *md (same logical dims). md points into the cached primitive entry
 * that made the tensor, which lives as long as the model (a layout is ~700 bytes: a copy in every
 * tensor made each run's value table 20 KB to clear for a small model). */
typedef struct eng_tensor {
    cl_engine_dtype dtype;
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK];
    void *data;
    size_t nbytes;
    bool owned;   /* data is ours to free (eng_tensor_free) */
    bool secure;  /* data is in secure memory (model weights and other constants) */
    bool blocked;
    const dnnl_memory_desc_t *md; /* when blocked */
    int refs;     /* consumers still to run in this run */
    bool borrowed; /* a constant whose data points into the caller's model buffer, only during
                    * cl_engine_load (read-only, maybe unaligned: read it with memcpy or a oneDNN
                    * reorder); konst.c copies or drops it before the load returns */
} eng_tensor;

int64_t eng_numel(const eng_tensor *t);
/* product of dims with overflow/limit checks; -1 on overflow or > CL_ENGINE_MAX_TENSOR_ELEMS. */
int64_t eng_dims_numel(const int64_t *dims, int rank);
/* Allocates (64-byte aligned, zeroed) data for t->dtype/rank/dims. */
int eng_tensor_alloc(eng_tensor *t, cl_err *err);
/* The same in secure memory (common.h: locked, not dumpable, zeroized on free), for the model's
 * constants: initializers, folded constants, reordered weights are secrets like the model file. */
int eng_tensor_alloc_const(eng_tensor *t, cl_err *err);
void eng_tensor_free(eng_tensor *t);
/* Recycled 64-byte-aligned buffers for tensor data (not zeroed); see tensor.c. */
void *eng_buf_alloc(size_t size);
void eng_buf_free(void *p);
void eng_buf_pool_flush(void);
/* Measuring a run's working memory on the calling thread (tensor.c): begin counts every buffer taken
 * until end, which returns the peak of what was held at once; add counts n more bytes (the outputs,
 * which are malloc()ed). */
void eng_run_mem_begin(void);
void eng_run_mem_add(size_t n);
size_t eng_run_mem_end(void);
/* Reads element i of any numeric tensor as double / int64. */
double eng_get_f(const eng_tensor *t, int64_t i);
int64_t eng_get_i(const eng_tensor *t, int64_t i);
void eng_set_f(eng_tensor *t, int64_t i, double v);
void eng_set_i(eng_tensor *t, int64_t i, int64_t v);
bool eng_dtype_supported(cl_engine_dtype dt);
bool eng_dtype_is_float(cl_engine_dtype dt);
/* "[1,3,224,224]" into buf. */
const char *eng_dims_str(const int64_t *dims, int rank, char *buf, size_t len);

/* ---------------------------------------------------------------- graph IR */

typedef enum { ENG_ATTR_FLOAT = 1, ENG_ATTR_INT, ENG_ATTR_STRING, ENG_ATTR_TENSOR, ENG_ATTR_GRAPH,
               ENG_ATTR_FLOATS = 6, ENG_ATTR_INTS, ENG_ATTR_STRINGS, ENG_ATTR_OTHER = 99 } eng_attr_type;

typedef struct eng_attr {
    char *name;
    eng_attr_type type;
    int64_t i;
    float f;
    char *s;
    int64_t *ints;
    size_t n_ints;
    float *floats;
    size_t n_floats;
    eng_tensor *t;
} eng_attr;

/* Conv post-ops. CLIP: post_lo..post_hi; HSIGMOID: clip(post_lo * x + post_hi, 0, 1) (fuse_cnn.c). */
typedef enum { ENG_POST_NONE = 0, ENG_POST_RELU, ENG_POST_CLIP, ENG_POST_SWISH, ENG_POST_HSWISH, ENG_POST_HSIGMOID,
               ENG_POST_SIGMOID } eng_post_kind;

struct eng_op;

typedef struct eng_node {
    const struct eng_op *op;
    char *name;
    char *op_type;
    int n_in, n_out;
    int *in;  /* value indices; -1 for an omitted optional input */
    int *out; /* value indices; -1 for an omitted optional output */
    eng_attr *attrs;
    size_t n_attrs;
    bool dead;
    /* fusion (Conv): activation post-op, residual sum post-op */
    eng_post_kind post;
    float post_lo, post_hi;
    int sum_in;            /* input index (3) of the residual added before post2, -1 if none */
    eng_post_kind post2;   /* activation after the sum */
    void *attr;            /* compiled attributes made by op->prepare (malloc'ed, freed with free();
                              may point into attrs), NULL when the op has none */
    void *state;           /* kernel cache, see struct eng_op */
} eng_node;

typedef struct eng_value {
    char *name;
    eng_tensor *konst;    /* initializer or folded constant, else NULL */
    int producer;         /* node index, -1 for graph inputs and constants */
    int n_consumers;      /* node inputs referring to this value (graph outputs count once more) */
    int graph_input;      /* index in the signature, -1 */
    int graph_output;     /* index in the signature, -1 */
    uint8_t layout;       /* planned layout (plan.c): ENG_LAYOUT_BLOCKED when a oneDNN kernel should leave it in
                             the model's activation layout, ENG_LAYOUT_PLAIN when its consumers want plain data */
} eng_value;

/* Working memory measured for runs whose inputs total between 2^k and 2^(k+1) bytes (exec.c). */
#define ENG_MEM_CLASSES 48
typedef struct eng_mem_point {
    size_t in;   /* the largest input seen in the class, bytes */
    size_t peak; /* the largest working memory of a run in the class, bytes */
} eng_mem_point;

struct cl_engine_model {
    eng_value *values;
    size_t n_values, cap_values;
    eng_node *nodes;
    size_t n_nodes;
    int *order;           /* topological order of live nodes */
    size_t n_order;
    int64_t opset;        /* default-domain opset */
    cl_engine_io_info *in_info, *out_info;
    char *method_name;    /* TensorFlow SavedModels: the signature_def's method_name; NULL otherwise */
    int *in_val, *out_val;
    size_t n_inputs, n_outputs;
    int threads;
    bool direct_conv;     /* cl_engine_options.direct_conv */
    int act_layout;       /* ENG_ACT_*: the activation layout the layout planner chose (plan.c) */
    dnnl_engine_t dnnl;
    pthread_mutex_t lock; /* guards lazy kernel state */
    /* reorders blocked -> plain by source layout (eng_make_plain), made once: entries are only added
     * (under lock) and live until the model is freed */
    struct {
        dnnl_memory_desc_t md;
        dnnl_primitive_t prim;
        eng_mem_set mems; /* 0: source, 1: plain destination */
    } plain[16];
    int n_plain;
    uint64_t *prof_ns;    /* per node, when CLOISTER_ENGINE_PROFILE=1 */
    /* the working memory of runs, measured (exec.c: plan_record), by size class of their inputs */
    pthread_mutex_t mem_lock;
    eng_mem_point mem[ENG_MEM_CLASSES];
    /* name -> value index hash table */
    int *hash;
    size_t hash_cap;
};

/* Value lookup / creation by name (graph.c). */
int eng_value_find(const cl_engine_model *m, const char *name);
int eng_value_get(cl_engine_model *m, const char *name, cl_err *err); /* creates if missing */
/* ---------------------------------------------------------------- attributes at load (ops/attr.c)
 * For prepare functions only: kernels read their node's compiled attributes, never these. Each getter
 * gives `def` when the attribute is absent and fails (CL_E_FORMAT, the message naming the node and the
 * attribute) when it is present with another type or out of range. */
const eng_attr *eng_attr_find(const eng_node *n, const char *name);
int eng_attr_int(const eng_node *n, const char *name, int64_t def, int64_t *out, cl_err *err);
/* The same, refused unless lo <= value <= hi. */
int eng_attr_int_in(const eng_node *n, const char *name, int64_t def, int64_t lo, int64_t hi, int64_t *out,
                    cl_err *err);
int eng_attr_bool(const eng_node *n, const char *name, bool def, bool *out, cl_err *err); /* 0 or 1 */
int eng_attr_float(const eng_node *n, const char *name, float def, float *out, cl_err *err);
int eng_attr_str(const eng_node *n, const char *name, const char *def, const char **out, cl_err *err);
/* A string attribute that must be one of choices[0..n_choices): its index (def_index when absent);
 * another value is CL_E_UNSUPPORTED naming the accepted ones. */
int eng_attr_choice(const eng_node *n, const char *name, int def_index, const char *const *choices,
                    int n_choices, int *out, cl_err *err);
/* ints / floats attributes: NULL and 0 when absent; more than max entries is refused. */
int eng_attr_ints_max(const eng_node *n, const char *name, size_t max, const int64_t **out, size_t *count,
                      cl_err *err);
int eng_attr_floats_max(const eng_node *n, const char *name, size_t max, const float **out, size_t *count,
                        cl_err *err);
/* A tensor attribute (NULL when absent). */
int eng_attr_tensor(const eng_node *n, const char *name, const eng_tensor **out, cl_err *err);
/* "node 'x' (Op): attribute 'a' <message>" with code. */
int eng_attr_err(cl_err *err, cl_status code, const eng_node *n, const char *attr, const char *fmt, ...)
    CL_PRINTF(5, 6);
/* Allocates n->attr (zeroed, size bytes); NULL after setting err. */
void *eng_attr_alloc(eng_node *n, size_t size, cl_err *err);

/* onnx.c */
int eng_onnx_parse(cl_engine_model *m, const uint8_t *buf, size_t len, cl_err *err);
/* Converts serialized TensorProto bytes into a new tensor (conformance tests). */
int eng_onnx_tensor_parse(const uint8_t *buf, size_t len, eng_tensor *out, char **name, cl_err *err);
void eng_model_free_ir(cl_engine_model *m);

/* konst.c: the constants' memory during the load (borrowed initializers; see the file). After the
 * parse: every borrowed constant but a Conv's weights copied into secure memory. After the warm-up:
 * unread constants freed, Conv weights reordered into a blocked layout dropped, the rest copied. */
int eng_consts_after_parse(cl_engine_model *m, cl_err *err);
int eng_consts_after_load(cl_engine_model *m, cl_err *err);

/* graph.c: every node's prepare, topological order, constant folding, fusion. */
int eng_graph_prepare(cl_engine_model *m, cl_err *err);
/* fuse_cnn.c: the CNN fusions. _patterns (before graph.c's Conv fusions): decomposed HardSwish /
 * HardSigmoid (x*Clip(x+3,0,6)/6 and its variants) become one node, a constant per-channel or scalar
 * Mul / Add after a Conv is folded into its weights and bias. _post (after them): Conv + HardSwish /
 * HardSigmoid / Sigmoid as oneDNN post-ops (what squeeze-and-excitation blocks end in). */
int eng_fuse_cnn_patterns(cl_engine_model *m, cl_err *err);
int eng_fuse_cnn_post(cl_engine_model *m, cl_err *err);

/* plan.c: the layout planner, run once at load after fusion: the model's activation layout (ENG_ACT_*)
 * and each value's planned layout (eng_value.layout). */
enum { ENG_ACT_BLOCKED = 0, ENG_ACT_NHWC = 1 };
int eng_plan_layouts(cl_engine_model *m, cl_err *err);
/* The oneDNN format tag a kernel asks for when it leaves a rank-`rank` activation with `channels`
 * channels in the model's activation layout (format_tag_any: let oneDNN choose). */
dnnl_format_tag_t eng_plan_act_tag(const cl_engine_model *m, int rank, int64_t channels);
/* The CPU's channel block (16 with AVX-512, 8 with AVX2, 0 without). */
int eng_plan_block(void);
/* graph.c, for the fusion passes: every value's n_consumers recounted over the live nodes (a graph
 * output counts as one); v's only consumer, NULL unless v has exactly one use and is no graph output. */
void eng_graph_count_consumers(cl_engine_model *m);
eng_node *eng_graph_sole_consumer(cl_engine_model *m, int v);
/* Input k of n when it is a float constant, else NULL. */
const eng_tensor *eng_graph_konst_f32(const cl_engine_model *m, const eng_node *n, int k);
/* A new constant value named after `base` (unique), taking t (heap-allocated; freed on failure);
 * its index, or -1. */
int eng_graph_new_const(cl_engine_model *m, const char *base, eng_tensor *t, cl_err *err);

/* fuse.c: the transformer fusion passes (decomposed LayerNorm, GELU forms, MatMul / Gemm with bias,
 * scale, add and activation post-ops), run once at load by eng_graph_prepare. */
int eng_fuse_transformer(cl_engine_model *m, cl_err *err);
/* describe.c: the live nodes in order by operator name ("A B FusedMatMul(bias) ..."), snprintf-style:
 * the length the whole line needs. */
size_t eng_describe_plan(const cl_engine_model *m, char *buf, size_t len);

/* ---------------------------------------------------------------- shape inference (shape.c)
 * Static shapes at load: from the declared input shapes (dynamic dims -1) and the constants, each
 * descriptor's infer gives its outputs' element types and shapes. Ops without a rule (infer NULL) give
 * "unknown" (rank -1) and are checked at run time. */
#define ENG_DIM_UNKNOWN (-1)
typedef struct eng_vshape {
    cl_engine_dtype dt;
    int rank; /* -1 unknown */
    int64_t d[CL_ENGINE_MAX_RANK];
} eng_vshape;
/* in[k]: input k's shape (rank -1 for an omitted or unknown one), at least max(n_in, 4) entries;
 * out[k]: preset to out[0] = {in[0].dt, rank -1}, the others unknown. An error fails the load. */
typedef struct eng_infer_ctx {
    const cl_engine_model *m;
    const eng_node *n;
    const eng_vshape *in;
    eng_vshape *out;
} eng_infer_ctx;
int eng_shape_infer(cl_engine_model *m, cl_err *err);
/* Numpy broadcast of a and b into o (rank -1 when either is unknown); incompatible dims are an error. */
int eng_shape_broadcast(const eng_node *n, const eng_vshape *a, const eng_vshape *b, eng_vshape *o, cl_err *err);
bool eng_shape_known(const eng_vshape *s);
/* The constant tensor behind input k of n, or NULL. */
const eng_tensor *eng_input_const(const cl_engine_model *m, const eng_node *n, int k);
/* Shared rules: output 0 = input 0 (shape and type); numpy broadcast of all inputs. */
int eng_infer_same(eng_infer_ctx *c, cl_err *err);
int eng_infer_broadcast(eng_infer_ctx *c, cl_err *err);

/* ---------------------------------------------------------------- execution */

typedef struct eng_run {
    cl_engine_model *m;
    eng_tensor *vals; /* one per value */
    dnnl_stream_t stream;
} eng_run;

/* An input of node n during a run (NULL for omitted optional inputs). */
eng_tensor *eng_in(eng_run *r, const eng_node *n, int i);
/* Like eng_in, converted to plain row-major layout first. */
eng_tensor *eng_in_plain(eng_run *r, const eng_node *n, int i, cl_err *err);
/* Allocates output i of node n as a plain tensor (NULL when the output is omitted: the kernel
 * may skip it; the allocation is then done in a scratch tensor and freed). */
eng_tensor *eng_out(eng_run *r, const eng_node *n, int i, cl_engine_dtype dt, int rank, const int64_t *dims,
                    cl_err *err);
/* Frees the scratch tensors of omitted outputs written by the last kernel (on this thread). */
void eng_discard_flush(void);
/* Makes output i an alias-free copy/move of tensor src (used by Identity/Reshape...): the data is
 * copied unless src is an owned intermediate with no other consumer, in which case it is moved. */
int eng_out_forward(eng_run *r, const eng_node *n, int i, int in_idx, int rank, const int64_t *dims, cl_err *err);
/* Reorders a blocked tensor to plain layout in place. */
int eng_make_plain(eng_run *r, eng_tensor *t, cl_err *err);
/* oneDNN status to cl_err. */
int eng_dnnl_fail(cl_err *err, dnnl_status_t s, const eng_node *n, const char *what);

/* Errors with the node named: "node 'x' (Conv): ..." */
int eng_node_err(cl_err *err, cl_status code, const eng_node *n, const char *fmt, ...) CL_PRINTF(4, 5);

/* ---------------------------------------------------------------- operator descriptors
 * One descriptor per ONNX operator of the default domain, all in one table (ops/table.c). A node is
 * bound to its descriptor once, at load (eng_op_find); nothing looks an operator up by name at run time.
 *   prepare  decodes and validates every attribute the op reads (eng_attr_*), so a bad attribute fails
 *            the load naming node and attribute, and stores them as n->attr; may check inputs too
 *   infer    the static shape rule (NULL: outputs unknown until run time)
 *   run      the kernel: reads n->attr (and op->kind), never the raw attributes
 *   consumes / produces: the layouts (eng_layout bits) the kernel takes without converting and may
 *            leave its outputs in (a plain-only kernel has its blocked inputs reordered first). */
typedef enum eng_layout {
    ENG_LAYOUT_PLAIN = 1u << 0,   /* dense row-major */
    ENG_LAYOUT_BLOCKED = 1u << 1, /* a oneDNN layout a primitive chose (channel-blocked nChw16c/8c...) */
} eng_layout;
#define ENG_LAYOUT_ANY (ENG_LAYOUT_PLAIN | ENG_LAYOUT_BLOCKED)

typedef struct eng_op {
    const char *name;
    int since, until;      /* the default-domain opsets this descriptor implements */
    int min_in, max_in;    /* -1 max: variadic */
    int min_out, max_out;
    int kind;              /* which member of a kernel family (which unary function, reduction...) */
    unsigned consumes, produces; /* eng_layout bits */
    bool no_fold;          /* never folded into a constant at load */
    int (*prepare)(cl_engine_model *m, eng_node *n, cl_err *err); /* may be NULL: no attributes */
    int (*infer)(eng_infer_ctx *c, cl_err *err);                   /* may be NULL */
    int (*run)(eng_run *r, eng_node *n, cl_err *err);
    void (*free_state)(void *state);                               /* frees n->state (may be NULL) */
} eng_op;

/* The descriptor for op_type at this opset: NULL with CL_E_UNSUPPORTED set (naming the op, the node and
 * the opset) when there is none. */
const eng_op *eng_op_find(const char *op_type, int64_t opset, const char *node_name, cl_err *err);
/* The table (ops/table.c; kept in name order for the reader, each name once). */
extern const eng_op eng_ops[];
extern const size_t eng_ops_count;

#endif
