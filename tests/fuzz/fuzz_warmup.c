/* fuzz_warmup.c — fuzz target for the warm-up file (assets.extra/tf_serving_warmup_requests): TFRecord
 * framing with both CRCs, PredictionLog records, their PredictRequests converted and run through the
 * same registry checks as a served request, against a small backend (any float input "x", one
 * output). Any input is replayed or refused with a message; a replay never runs more requests than
 * the file can hold records. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/repo.h"

static const cl_serve_tensor_spec in_spec[] = {{.name = "x", .dtype = CL_SERVE_DT_FLOAT, .ndim = -1}};
static const cl_serve_tensor_spec out_spec[] = {{.name = "y", .dtype = CL_SERVE_DT_FLOAT, .ndim = 1, .dims = {1}}};
static const cl_serve_signature sig = {.name = "serving_default", .method_name = "tensorflow/serving/predict",
                                       .inputs = in_spec, .n_inputs = 1, .outputs = out_spec, .n_outputs = 1};

static int run(void *ctx, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs, size_t *n_outputs,
               cl_err *err)
{
    (void)ctx;
    if (n_inputs != 1 || inputs[0].dtype != CL_SERVE_DT_FLOAT)
        abort(); /* the registry's checks let nothing else through */
    cl_serve_tensor *o = calloc(1, sizeof *o);
    int64_t one = 1;
    if (!o || cl_serve_tensor_init(o, "y", CL_SERVE_DT_FLOAT, 1, &one, 0, err) != 0) {
        free(o);
        return -1;
    }
    *outputs = o;
    *n_outputs = 1;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        cl_log_set_level(CL_LOG_OFF);
        init = 1;
    }
    cl_serve_backend b = {.signature = &sig, .run = run};
    cl_err err = {0};
    int n = cl_repo_warmup_buffer(&b, data, size, 2, &err);
    if (n < 0 ? !err.msg[0] : (size_t)n > 2 * (size / 16)) /* 16 bytes of framing per record at least */
        abort();
    return 0;
}
