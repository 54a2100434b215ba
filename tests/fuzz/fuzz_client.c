/* fuzz_client.c — fuzz target for what the client module reads from a server: gRPC response framing
 * and the protobuf PredictResponse / GetModelMetadataResponse / GetModelStatusResponse inside it,
 * grpc-status / grpc-message trailer values, and REST JSON answers (outputs / predictions, metadata,
 * status, error bodies) with any HTTP status. The first byte picks the decoder (and, for REST, the
 * HTTP status); decoded tensors must be consistent with their shapes, and top-k must stay in range. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/client.h"

static void check_response(const cl_client_response *r)
{
    for (size_t i = 0; i < r->n_outputs; i++) {
        const cl_serve_tensor *t = &r->outputs[i];
        int64_t n = cl_serve_shape_elements(t->ndim, t->dims);
        if (n < 0 || (size_t)n * cl_serve_dtype_size(t->dtype) != t->nbytes)
            abort(); /* a tensor's size must match its shape */
        size_t idx[3];
        double sc[3];
        size_t rows = t->ndim == 2 ? (size_t)t->dims[0] : 1;
        for (size_t row = 0; row < rows && row < 4; row++) {
            size_t k = cl_client_topk(t, row, 3, idx, sc);
            for (size_t j = 0; j < k; j++)
                if (idx[j] >= (size_t)t->dims[t->ndim - 1])
                    abort();
        }
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    static const int https[] = {200, 400, 404, 429, 500, 503};
    uint8_t sel = data[0];
    data++;
    size--;
    cl_err err;
    cl_client_response r;
    cl_client_metadata md;
    cl_client_version_status *vs;
    size_t n;
    cl_serve_code code;
    switch (sel % 8) {
    case 0: { /* framed PredictResponse */
        const uint8_t *msg;
        size_t len;
        if (cl_client_grpc_unframe(data, size, 1 << 20, &msg, &len, &err) == 0 &&
            cl_client_pb_predict_response(msg, len, &r, &err) == 0) {
            check_response(&r);
            cl_client_response_clear(&r);
        }
        break;
    }
    case 1:
        if (cl_client_pb_metadata_response(data, size, &md, &err) == 0)
            cl_client_metadata_clear(&md);
        break;
    case 2:
        if (cl_client_pb_status_response(data, size, &vs, &n, &err) == 0)
            free(vs);
        break;
    case 3: { /* grpc-status NUL grpc-message */
        const uint8_t *nul = memchr(data, 0, size);
        size_t sl = nul ? (size_t)(nul - data) : size;
        cl_client_grpc_status((const char *)data, sl, nul ? (const char *)nul + 1 : NULL, nul ? size - sl - 1 : 0,
                              &code, &err);
        break;
    }
    case 4:
    case 5:
        if (cl_client_json_predict_response((const char *)data, size, https[(sel >> 3) % 6], &r, &code, &err) == 0) {
            check_response(&r);
            cl_client_response_clear(&r);
        }
        break;
    case 6:
        if (cl_client_json_metadata_response((const char *)data, size, https[(sel >> 3) % 6], &md, &code, &err) == 0)
            cl_client_metadata_clear(&md);
        break;
    case 7:
        if (cl_client_json_status_response((const char *)data, size, https[(sel >> 3) % 6], &vs, &n, &code, &err) == 0)
            free(vs);
        break;
    }
    return 0;
}
