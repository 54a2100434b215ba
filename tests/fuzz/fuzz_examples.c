/* fuzz_examples.c — fuzz target for the tf.Example trust boundary: ClassificationRequest,
 * RegressionRequest and MultiInferenceRequest protobufs and REST :classify / :regress bodies, decoded
 * against a model with a signatures.json (classify, regress and predict signatures over a small
 * backend defined here). The first byte picks the path; the rest is the message or body. Any input
 * must be refused with a status and a message, or become inputs that match the signature, run and
 * encode a response (or be refused by the response's own checks with a message); never crash or
 * allocate beyond the limits. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/infer.h"

static const cl_serve_tensor_spec ins[] = {
    {.name = "x", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 4}},
    {.name = "ids", .dtype = CL_SERVE_DT_INT64, .ndim = 2, .dims = {-1, 2}},
};
static const cl_serve_tensor_spec outs[] = {
    {.name = "probs", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 3}},
    {.name = "value", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 1}},
    {.name = "top", .dtype = CL_SERVE_DT_INT64, .ndim = 2, .dims = {-1, 1}},
};
static const cl_serve_signature model = {"serving_default", CL_SERVE_METHOD_PREDICT, ins, 2, outs, 3};
static const char sigs_json[] =
    "{\"signatures\": {"
    "\"serving_default\": {},"
    "\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"inputs\": {\"a\": \"x\", \"b\": \"ids\"},"
    " \"outputs\": {\"scores\": \"probs\"}, \"labels\": [\"p\", \"q\", \"r\"]},"
    "\"t\": {\"method_name\": \"tensorflow/serving/classify\", \"inputs\": {\"a\": \"x\", \"b\": \"ids\"},"
    " \"outputs\": {\"classes\": \"top\"}, \"labels\": [\"p\", \"q\", \"r\"]},"
    "\"n\": {\"method_name\": \"tensorflow/serving/classify\", \"inputs\": {\"a\": \"x\", \"b\": \"ids\"},"
    " \"outputs\": {\"classes\": \"top\"}},"
    "\"r\": {\"method_name\": \"tensorflow/serving/regress\", \"inputs\": {\"a\": \"x\", \"b\": \"ids\"},"
    " \"outputs\": {\"outputs\": \"value\"}}}}";

/* probs = x[:, 0:3], value = x[:, 3], top = ids[:, 0] */
static int run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out, cl_err *err)
{
    (void)ctx;
    (void)n_in;
    int64_t n = in[0].dims[0];
    cl_serve_tensor *o = calloc(3, sizeof *o);
    int64_t d3[2] = {n, 3}, d1[2] = {n, 1};
    if (!o || cl_serve_tensor_init(&o[0], "probs", CL_SERVE_DT_FLOAT, 2, d3, 0, err) != 0 ||
        cl_serve_tensor_init(&o[1], "value", CL_SERVE_DT_FLOAT, 2, d1, 0, err) != 0 ||
        cl_serve_tensor_init(&o[2], "top", CL_SERVE_DT_INT64, 2, d1, 0, err) != 0) {
        cl_serve_tensors_free(o, 3);
        return -1;
    }
    const float *x = in[0].data;
    const int64_t *ids = in[1].data;
    for (int64_t i = 0; i < n; i++) {
        for (int j = 0; j < 3; j++)
            ((float *)o[0].data)[i * 3 + j] = x[i * 4 + j];
        ((float *)o[1].data)[i] = x[i * 4 + 3];
        ((int64_t *)o[2].data)[i] = ids[i * 2];
    }
    *out = o;
    *n_out = 3;
    return 0;
}

static cl_serve_registry *reg;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!reg) {
        static cl_serve_sigset *set;
        static cl_serve_backend b = {.signature = &model, .run = run};
        reg = cl_serve_registry_new(NULL);
        if (!reg || cl_serve_sigset_parse(sigs_json, strlen(sigs_json), "sigs", &model, &set, NULL) != 0)
            abort();
        b.sigdefs = cl_serve_sigset_defs(set, &b.n_sigdefs);
        if (cl_serve_registry_add(reg, "m", 1, &b, NULL) != 0)
            abort();
    }
    if (size < 1)
        return 0;
    static const cl_serve_rpc rpcs[] = {CL_RPC_CLASSIFY, CL_RPC_REGRESS, CL_RPC_MULTI_INFERENCE};
    unsigned pick = data[0] % 5;
    bool rest = pick >= 3;
    cl_serve_call *c = cl_serve_call_new(NULL, rest ? CL_API_REST : CL_API_GRPC, rpcs[rest ? pick - 3 : pick]);
    if (!c)
        abort();
    cl_serve_code code;
    if (rest) {
        c->model = cl_serve_registry_get(reg, "m", 0, NULL);
        code = cl_serve_json_infer_parse((const char *)data + 1, size - 1, 1 << 20, c);
    } else {
        code = cl_serve_pb_infer_parse(reg, data + 1, size - 1, 1 << 20, c);
    }
    if (code != CL_SC_OK) {
        if (!c->st.msg[0] || code != c->st.code)
            abort();
        cl_serve_call_free(c);
        return 0;
    }
    if (!c->infer || !c->infer->n_examples || c->n_inputs != 2 || c->inputs[0].dims[0] != (int64_t)c->infer->n_examples)
        abort();
    cl_err err = {0};
    if (cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err) != 0)
        abort(); /* inputs made from examples always fit the signature */
    c->st.msg[0] = '\0';
    uint8_t *out = NULL;
    size_t out_len = 0;
    char *body = NULL;
    code = rest ? cl_serve_json_infer_response(c, &body, &out_len) : cl_serve_pb_infer_response(c, &out, &out_len);
    if (code != CL_SC_OK && !c->st.msg[0])
        abort();
    free(out);
    free(body);
    cl_serve_call_free(c);
    return 0;
}
