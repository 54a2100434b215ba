/* infer.h — internals shared by classify.c (the Classify, Regress and MultiInference RPCs) and
 * example.c (tf.Example decoding): the tasks of one call and the bounded protobuf-c allocator.
 * Not a public interface; thread-safety as for cl_serve_call (one thread at a time). */
#ifndef CLOISTER_SERVE_INFER_H
#define CLOISTER_SERVE_INFER_H

#include "serve_int.h"

#include "tensorflow_serving/apis/input.pb-c.h"

/* Bounds of a request's examples (docs/serve.md "Classify and Regress"). */
#define CL_SERVE_EXAMPLES_MAX 65536          /* examples per request */
#define CL_SERVE_EXAMPLE_FEATURES_MAX 4096   /* features per example (and in the context) */
#define CL_SERVE_TASKS_MAX CL_SERVE_SIGS_MAX /* MultiInference tasks */

typedef struct cl_serve_task {
    cl_serve_sigdef sig;
    bool classify; /* else regress */
} cl_serve_task;

struct cl_serve_infer {
    size_t n_examples;
    size_t n_tasks;
    cl_serve_task tasks[];
};

/* A protobuf-c allocator that refuses to hand out more than `limit` bytes in total (decoding a hostile
 * message costs at most that; protobuf-c makes a struct per map entry, so a request could otherwise
 * grow 30-fold in memory). */
typedef struct cl_serve_pb_budget {
    ProtobufCAllocator a;
    size_t used, limit;
    bool over;
} cl_serve_pb_budget;
void cl_serve_pb_budget_init(cl_serve_pb_budget *b, size_t limit);
void *cl_serve_pb_budget_alloc(cl_serve_pb_budget *b, size_t n); /* zeroed; counted */

/* The examples of `in` -> c->inputs (the model's tensor names, one row per example) for the inputs of
 * signature d, whose aliases are the feature names; sets *n_examples. Every bound above is checked; a
 * feature that is missing, of the wrong kind or count, or a value out of the input's range, is
 * INVALID_ARGUMENT naming the example and the feature. */
cl_serve_code cl_serve_examples_to_inputs(const Tensorflow__Serving__Input *in, const cl_serve_sigdef *d,
                                          size_t max_bytes, cl_serve_call *c, size_t *n_examples);

#endif
