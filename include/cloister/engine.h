/* cloister/engine.h — the interface of the inference engine: ONNX models (and TensorFlow frozen
 * GraphDefs and SavedModels, imported into the same graph) loaded from a memory
 * buffer (never from a file: a decrypted model must not touch the disk), validated, prepared
 * (topological order, BatchNorm folding, Conv+activation fusion) and executed on oneDNN (fp32).
 *
 * Ownership:
 *   - cl_engine_load() copies what it needs from `buf`; the caller may free or zeroize `buf` as soon
 *     as it returns. The model is released with cl_engine_free().
 *   - Input tensors passed to cl_engine_run() stay the caller's. Output tensors are allocated by the
 *     engine (malloc) and released by the caller with cl_engine_tensor_release().
 *   - Strings in cl_engine_io_info live as long as the model.
 *   - The model's weights and other constants (and the parsed protobuf while loading) live in secure
 *     memory (common.h), so loading needs RLIMIT_MEMLOCK for about twice the weights, unless the
 *     process allowed unlocked memory (cl_secmem_set_require_lock(false)).
 *   - Activation buffers are recycled through a process-wide pool (at most 1 GiB of free buffers is
 *     kept, cl_engine_set_pool_limit); the pool is emptied whenever a model is freed and by
 *     cl_engine_release_memory. Each thread also keeps up to 8 MiB of its own.
 *   - The working memory of a run (activations, scratchpads, output copies) is measured on every run;
 *     cl_engine_memory_estimate says what a run of a given input size is expected to need.
 * Thread-safety: a loaded model is immutable from the caller's point of view: any number of threads
 * may call cl_engine_run() on the same model concurrently (per-shape execution plans are created on
 * first use under an internal lock and then shared read-only). cl_engine_free() must not race with
 * runs.
 */
#ifndef CLOISTER_ENGINE_H
#define CLOISTER_ENGINE_H

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types, numbered as in onnx.proto's TensorProto.DataType. */
typedef enum cl_engine_dtype {
    CL_ENGINE_DT_UNDEFINED = 0,
    CL_ENGINE_DT_FLOAT = 1,
    CL_ENGINE_DT_UINT8 = 2,
    CL_ENGINE_DT_INT8 = 3,
    CL_ENGINE_DT_UINT16 = 4,
    CL_ENGINE_DT_INT16 = 5,
    CL_ENGINE_DT_INT32 = 6,
    CL_ENGINE_DT_INT64 = 7,
    CL_ENGINE_DT_STRING = 8, /* not supported */
    CL_ENGINE_DT_BOOL = 9,
    CL_ENGINE_DT_FLOAT16 = 10, /* not supported */
    CL_ENGINE_DT_DOUBLE = 11,
    CL_ENGINE_DT_UINT32 = 12,
    CL_ENGINE_DT_UINT64 = 13,
} cl_engine_dtype;

#define CL_ENGINE_MAX_RANK 8
/* Limits applied while loading (a model beyond them is refused with CL_E_FORMAT). */
#define CL_ENGINE_MAX_MODEL_BYTES ((size_t)2 << 30) /* protobuf's own limit */
#define CL_ENGINE_MAX_NODES 100000
#define CL_ENGINE_MAX_TENSOR_ELEMS ((int64_t)1 << 31)  /* any single tensor, at load or run time */
#define CL_ENGINE_MAX_TENSOR_BYTES ((size_t)1 << 30)   /* any single tensor buffer (1 GiB) */

/* Name of a dtype ("float", "int64", ...), "?" for unknown values. */
const char *cl_engine_dtype_name(cl_engine_dtype dt);
/* Bytes per element; 0 for unsupported types. */
size_t cl_engine_dtype_size(cl_engine_dtype dt);

/* A dense row-major tensor. */
typedef struct cl_engine_tensor {
    cl_engine_dtype dtype;
    int rank;
    int64_t dims[CL_ENGINE_MAX_RANK];
    void *data;
    size_t nbytes; /* product(dims) * dtype size */
} cl_engine_tensor;

/* Frees an engine-allocated tensor's data and clears it. Accepts an empty tensor. */
void cl_engine_tensor_release(cl_engine_tensor *t);
/* Number of elements (1 for rank 0). */
int64_t cl_engine_tensor_numel(const cl_engine_tensor *t);

/* One input or output of the model's signature. dims[i] is -1 for a dynamic dimension. */
typedef struct cl_engine_io_info {
    const char *name;
    cl_engine_dtype dtype;
    int rank; /* -1 when the model does not declare a shape */
    int64_t dims[CL_ENGINE_MAX_RANK];
    const char *tensor; /* TensorFlow models: the graph tensor `name` stands for ("x:0"), as TF Serving's
                           metadata shows it; NULL for ONNX models */
} cl_engine_io_info;

typedef struct cl_engine_options {
    int threads; /* oneDNN / OpenMP threads per run (set with omp_set_num_threads on the calling
                    thread during load and each run); 0: OpenMP's default (all cores) */
    bool no_warmup; /* by default, when every input dim except the batch is static, load runs the
                       model once on zeros at batch 1, so the batch-1 plan exists and the weights are
                       reordered before the first request; a failing warm-up is ignored */
    bool direct_conv; /* by default 3x3 stride-1 convolutions use oneDNN's Winograd kernels where it has
                         them (AVX-512: ResNet-50 batch 8 ~10% faster, errors as small as direct's);
                         true: direct convolution everywhere */
    const char *signature; /* TensorFlow SavedModels: the signature_def to serve (NULL: serving_default) */
} cl_engine_options;

/* One file of a model that is several files (a TensorFlow SavedModel directory), in memory: name is
 * its path inside the directory ("saved_model.pb", "variables/variables.index",
 * "variables/variables.data-00000-of-00001"). */
typedef struct cl_engine_file {
    const char *name;
    const uint8_t *data;
    size_t len;
} cl_engine_file;

typedef struct cl_engine_model cl_engine_model;

/* Parses and validates an ONNX model (ModelProto bytes) and prepares it for execution. Errors:
 * CL_E_FORMAT (not a valid ONNX model, or inconsistent: bad dims, initializer sizes, dangling
 * names, cycles...), CL_E_UNSUPPORTED (an operator, opset, data type or attribute the engine does
 * not implement, or external data files; the message names the node), CL_E_NOMEM. `opts` may be
 * NULL. */
int cl_engine_load(const uint8_t *buf, size_t len, const cl_engine_options *opts, cl_engine_model **out,
                   cl_err *err);
/* The same for a model given as files: a TensorFlow SavedModel (saved_model.pb and its variables/;
 * the MetaGraphDef tagged `serve`, the signature opts->signature with TF's input/output aliases as
 * names), or one file of any format cl_engine_load takes. Model bytes are also told apart by content:
 * cl_engine_load takes ONNX ModelProto, a frozen TensorFlow GraphDef (*.pb: Placeholders are the inputs,
 * nodes nothing consumes the outputs) or a variable-free saved_model.pb. The files may be freed once
 * this returns. Errors as cl_engine_load's; a corrupt checkpoint (CRC32C, truncation) is CL_E_FORMAT. */
int cl_engine_load_files(const cl_engine_file *files, size_t n_files, const cl_engine_options *opts,
                         cl_engine_model **out, cl_err *err);
void cl_engine_free(cl_engine_model *m);

size_t cl_engine_num_inputs(const cl_engine_model *m);
size_t cl_engine_num_outputs(const cl_engine_model *m);
const cl_engine_io_info *cl_engine_input(const cl_engine_model *m, size_t i);
const cl_engine_io_info *cl_engine_output(const cl_engine_model *m, size_t i);
/* A TensorFlow SavedModel's method_name of the signature_def loaded ("tensorflow/serving/predict"), as TF
 * Serving's metadata shows it; NULL for other models or when the SavedModel leaves it empty. */
const char *cl_engine_method_name(const cl_engine_model *m);
/* Index of the input/output with that name, or -1. */
int cl_engine_find_input(const cl_engine_model *m, const char *name);
/* Number of nodes after graph preparation (folding and fusion remove some). */
size_t cl_engine_num_nodes(const cl_engine_model *m);

/* Runs the model. inputs[i] corresponds to cl_engine_input(m, i) (all inputs are required); the
 * dtype must match and every static dimension must match. outputs[0..n_outputs) receive the model
 * outputs in signature order (n_outputs must equal cl_engine_num_outputs). On failure no output is
 * left allocated. Errors: CL_E_INVALID (wrong inputs), CL_E_FORMAT (shapes inconsistent inside the
 * graph for these inputs), CL_E_UNSUPPORTED, CL_E_NOMEM, CL_E_INTERNAL. */
int cl_engine_run(cl_engine_model *m, const cl_engine_tensor *inputs, size_t n_inputs, cl_engine_tensor *outputs,
                  size_t n_outputs, cl_err *err);

/* Working memory (bytes) a run whose inputs total `input_bytes` is expected to need beyond its inputs:
 * activations, kernel scratchpads and the output copies, as measured. The load-time warm-up (unless
 * no_warmup) measures batch 1 and, when an input's batch dimension is dynamic, batch 2, giving a line
 * fixed + slope * input_bytes; every later run that needed more raises it. 0 while nothing has been
 * measured (no warm-up and no run yet). Thread-safe. */
size_t cl_engine_memory_estimate(const cl_engine_model *m, size_t input_bytes);
/* The most bytes of free activation buffers the process-wide pool keeps for reuse (default 1 GiB);
 * what is above a new, lower limit is freed now. Thread-safe. */
void cl_engine_set_pool_limit(size_t bytes);
/* Frees the pool's free buffers and the calling thread's own (memory kept for reuse, e.g. after a
 * burst of large batches); buffers in use are untouched. Thread-safe. */
void cl_engine_release_memory(void);
/* The instruction set oneDNN runs its kernels with on this CPU ("avx512_core", "avx2", "sse41", ...;
 * for the server's build-info metric). Thread-safe. */
const char *cl_engine_cpu_isa(void);

/* ---------------------------------------------------------------- .npy files (for the CLI/tests) */

/* Parses a .npy image (format 1.0/2.0/3.0, little-endian, C order; dtypes f4 f8 i1 i2 i4 i8 u1 b1)
 * into a new tensor (release with cl_engine_tensor_release). */
int cl_engine_npy_parse(const uint8_t *buf, size_t len, cl_engine_tensor *out, cl_err *err);
/* Serializes a tensor as .npy into a malloc()ed buffer. */
int cl_engine_npy_write(const cl_engine_tensor *t, uint8_t **out, size_t *out_len, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
