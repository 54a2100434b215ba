/* engine/tf/tf.h — the TensorFlow importer's private interface (src/engine/tf/ only, and the engine's
 * load entry in exec.c): frozen GraphDefs and SavedModel directories are turned into the engine's graph
 * IR (internal.h) with ONNX-semantics operators; there is no second engine.
 *
 *   graphdef.c   GraphDef (and a SavedModel's graph) -> IR: function calls inlined, variables bound to
 *                their checkpoint values, the subgraph the outputs need converted op by op (NHWC kept
 *                as NCHW between layout-sensitive ops so that only the graph's edges are transposed)
 *   savedmodel.c saved_model.pb: the `serve` MetaGraphDef, its signature_def, the variables' binding
 *                through the saver's restore graph, then graphdef.c
 *   bundle.c     the TensorBundle: variables.index (an SSTable of BundleEntryProto, blocks possibly
 *                snappy-compressed, CRC32C-checked) and the variables.data-* shards, all in memory
 *
 * Every input is hostile: counts, sizes, nesting and inlining depth are bounded, checksums verified,
 * and an error names what was wrong (the node, the op, the tensor key). Nothing here is thread-shared:
 * the structures live for one load.
 */
#ifndef CLOISTER_ENGINE_TF_H
#define CLOISTER_ENGINE_TF_H

#include "engine/internal.h"
#include "engine/pbwire.h" /* the wire reader and secure arena shared with onnx.c */

struct Tensorflow__GraphDef;
struct Tensorflow__TensorProto;

/* The model formats cl_engine_load tells apart by content. */
typedef enum { ENG_FMT_ONNX, ENG_FMT_TF_GRAPHDEF, ENG_FMT_TF_SAVEDMODEL } eng_format;
eng_format eng_tf_sniff(const uint8_t *buf, size_t len);

/* The wire-format pre-check (eng_pb_walk, pbwire.h: malformed input, nesting deeper than 32 levels),
 * its errors worded for the importer; `what` names the input in them. */
int eng_tf_pb_check(const void *descriptor, const uint8_t *buf, size_t len, const char *what, cl_err *err);

/* TF DataType -> engine dtype; CL_ENGINE_DT_UNDEFINED when the engine has none. */
cl_engine_dtype eng_tf_dtype(int tf_dtype);
const char *eng_tf_dtype_name(int tf_dtype);

/* ---------------------------------------------------------------- TensorBundle (bundle.c) */
typedef struct eng_bundle eng_bundle;
/* Parses variables.index (verifying every block's CRC32C; snappy blocks uncompressed within bounds) and
 * binds the data shards named variables.data-NNNNN-of-NNNNN among files (which must outlive the bundle). */
int eng_bundle_open(const uint8_t *index, size_t index_len, const cl_engine_file *files, size_t n_files,
                    const char *data_prefix, eng_bundle **out, cl_err *err);
void eng_bundle_free(eng_bundle *b);
bool eng_bundle_has(const eng_bundle *b, const char *key);
/* The tensor stored under key, in secure memory, its data CRC32C-checked. */
int eng_bundle_read(const eng_bundle *b, const char *key, eng_tensor *out, cl_err *err);

/* ---------------------------------------------------------------- GraphDef import (graphdef.c) */
/* One signature entry: the name clients use and the graph tensor ("node:k") it stands for. */
typedef struct eng_tf_io {
    const char *alias;
    const char *tensor;
    int dtype;                  /* TF DataType, 0 unknown */
    int rank;                   /* -1 unknown */
    int64_t dims[CL_ENGINE_MAX_RANK];
} eng_tf_io;

/* A variable: the graph node (VariableV2/VarHandleOp) and the checkpoint key holding its value. */
typedef struct eng_tf_var {
    char *node;
    char *key;
} eng_tf_var;

typedef struct eng_tf_import {
    const struct Tensorflow__GraphDef *graph;
    /* the signature; NULL/0: a frozen graph's Placeholders are the inputs, its unconsumed nodes the outputs */
    const eng_tf_io *inputs, *outputs;
    size_t n_inputs, n_outputs;
    const eng_bundle *bundle;   /* variables' values (NULL: none) */
    const eng_tf_var *vars;     /* binding from the saver graph; unlisted variables are looked up by name */
    size_t n_vars;
} eng_tf_import;

int eng_tf_import_graph(cl_engine_model *m, const eng_tf_import *imp, cl_err *err);
/* Converts a TensorProto into a constant tensor (secure memory). */
int eng_tf_tensor(const struct Tensorflow__TensorProto *tp, eng_tensor *t, const char *what, cl_err *err);

/* Frozen GraphDef bytes -> IR (cl_engine_load). */
int eng_tf_parse_graphdef(cl_engine_model *m, const uint8_t *buf, size_t len, cl_err *err);
/* SavedModel files (saved_model.pb, variables/...) -> IR, the signature named `signature` (NULL:
 * serving_default). */
int eng_tf_parse_savedmodel(cl_engine_model *m, const cl_engine_file *files, size_t n_files, const char *signature,
                            cl_err *err);

#endif
