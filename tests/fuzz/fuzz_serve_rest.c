/* fuzz_serve_rest.c — fuzz target for the REST :predict body parser (TF Serving's row and columnar
 * JSON formats) against the signatures of the test models: any input must be parsed into
 * well-formed tensors or refused with a status, never crash or allocate beyond the request limit.
 * Accepted requests are run through the model's input check and, when that passes, the model and
 * the JSON response writer. The first byte picks the model (affine: 1 float input [-1,4], 3
 * outputs; adder: 2 int32 inputs; sleepy: float [-1], clamped to no sleep; vision: an image input, so
 * {"b64": ...} values are base64-decoded here and the bytes decoded as JPEG/PNG by the model run). */
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
        if (!reg || tm_register_all(reg, 1, false, NULL) != 0)
            abort();
    }
    if (size < 1)
        return 0;
    static const char *const models[] = {"affine", "adder", "sleepy", "vision"};
    const char *model = models[data[0] % 4];
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_REST, CL_RPC_PREDICT);
    c->model = cl_serve_registry_get(reg, model, 0, NULL);
    cl_serve_code code = cl_serve_json_predict_parse((const char *)data + 1, size - 1, 1 << 16, c);
    if (code == CL_SC_OK) {
        size_t total = 0;
        for (size_t i = 0; i < c->n_inputs; i++) {
            const cl_serve_tensor *t = &c->inputs[i];
            int64_t n = cl_serve_shape_elements(t->ndim, t->dims);
            if (n < 0)
                abort();
            if (t->dtype == CL_SERVE_DT_STRING) {
                /* the element table, then bytes that every element points into */
                const uint8_t *lo = (const uint8_t *)t->data + (size_t)n * sizeof(cl_serve_string);
                const uint8_t *hi = (const uint8_t *)t->data + t->nbytes;
                const cl_serve_string *el = t->data;
                if (lo > hi)
                    abort();
                for (int64_t k = 0; k < n; k++)
                    if (el[k].len && (el[k].data < lo || el[k].len > (size_t)(hi - el[k].data)))
                        abort();
            } else if ((size_t)n * cl_serve_dtype_size(t->dtype) != t->nbytes) {
                abort(); /* a tensor's size must match its shape */
            }
            total += t->nbytes;
        }
        if (total > 2 * (1 << 16))
            abort();
        bool sleepy = data[0] % 4 == 2;
        if (sleepy && c->n_inputs == 1 && c->inputs[0].dtype == CL_SERVE_DT_FLOAT && c->inputs[0].nbytes >= 4)
            memset(c->inputs[0].data, 0, 4); /* no sleeping in the fuzzer */
        if (cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, NULL) == 0) {
            char *out = NULL;
            size_t len = 0;
            if (cl_serve_json_predict_response(c, &out, &len) == CL_SC_OK && strlen(out) != len)
                abort();
            free(out);
        }
    } else if (c->st.msg[0] == '\0') {
        abort(); /* every refusal says why */
    }
    cl_serve_call_free(c);
    return 0;
}
