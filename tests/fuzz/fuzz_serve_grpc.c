/* fuzz_serve_grpc.c — fuzz target for the gRPC request path below HTTP/2: gRPC message framing and
 * the protobuf decoding of PredictRequest, GetModelMetadataRequest and GetModelStatusRequest against
 * the test models. The first byte picks the RPC; the rest is the HTTP/2 request body (5-byte gRPC
 * prefix + message). Any input must be answered with a status, never crash or over-allocate;
 * accepted Predict requests are run and their response encoded (the "vision" model takes string_val
 * images, which the run decodes as JPEG/PNG). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve_int.h"
#include "testmodel.h"

static cl_serve_registry *reg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reg) {
        reg = cl_serve_registry_new(NULL);
        if (!reg || tm_register_all(reg, 1, true, NULL) != 0)
            abort();
    }
    if (size < 1)
        return 0;
    cl_serve_status st = {0};
    const uint8_t *msg;
    size_t len;
    if (cl_serve_grpc_unframe(data + 1, size - 1, 1 << 16, &msg, &len, &st) != CL_SC_OK) {
        if (!st.msg[0])
            abort();
        return 0;
    }
    if (msg + len != data + size)
        abort(); /* exactly one message fills the body */
    uint8_t *out = NULL;
    size_t out_len = 0;
    switch (data[0] % 3) {
    case 0: {
        cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
        if (cl_serve_pb_predict_parse(reg, msg, len, 1 << 16, c) == CL_SC_OK) {
            if (strcmp(cl_serve_model_name(c->model), "sleepy") == 0)
                for (size_t i = 0; i < c->n_inputs; i++)
                    if (c->inputs[i].dtype == CL_SERVE_DT_FLOAT && c->inputs[i].nbytes >= 4)
                        memset(c->inputs[i].data, 0, 4);
            if (cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, NULL) == 0) {
                if (cl_serve_pb_predict_response(c, &out, &out_len) != CL_SC_OK)
                    abort(); /* outputs of a model always encode */
                free(out);
            }
        } else if (!c->st.msg[0]) {
            abort();
        }
        cl_serve_call_free(c);
        break;
    }
    case 1:
        if (cl_serve_pb_metadata(reg, msg, len, &out, &out_len, &st) == CL_SC_OK)
            free(out);
        break;
    default:
        if (cl_serve_pb_status(reg, msg, len, &out, &out_len, &st) == CL_SC_OK)
            free(out);
        break;
    }
    return 0;
}
