/* fuzz_signatures.c — fuzz target for the signatures.json parser (cl_serve_sigset_parse) against a
 * fixed model signature (inputs x float [-1,4], ids int64 [-1,2]; outputs probs float [-1,3], value
 * float [-1,1], top int64 [-1,1]): a declaration must be refused with a message, or parse into
 * signatures within every documented bound whose aliases name the model's tensors (every input
 * exactly once, with its dtype and shape), never crash. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/serve.h"

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

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_serve_sigset *s = NULL;
    cl_err err = {0};
    if (cl_serve_sigset_parse((const char *)data, size, "signatures.json", &model, &s, &err) != 0) {
        if (!err.msg[0] || s)
            abort(); /* every refusal says why, and leaves nothing */
        return 0;
    }
    size_t n;
    const cl_serve_sigdef *d = cl_serve_sigset_defs(s, &n);
    if (n < 1 || n > CL_SERVE_SIGS_MAX)
        abort();
    for (size_t i = 0; i < n; i++) {
        const cl_serve_signature *sig = &d[i].sig;
        if (!sig->name || !*sig->name || strlen(sig->name) > CL_SERVE_SIG_NAME_MAX || !sig->method_name)
            abort();
        if (sig->n_inputs != model.n_inputs || sig->n_outputs < 1 || sig->n_outputs > CL_SERVE_SIG_IO_MAX)
            abort();
        unsigned seen = 0;
        for (size_t k = 0; k < sig->n_inputs; k++) {
            size_t t = d[i].input_of[k];
            if (t >= model.n_inputs || (seen & (1u << t)) || strcmp(d[i].input_tensor[k], ins[t].name) != 0 ||
                sig->inputs[k].dtype != ins[t].dtype || sig->inputs[k].ndim != ins[t].ndim ||
                !sig->inputs[k].name[0])
                abort();
            seen |= 1u << t;
        }
        for (size_t k = 0; k < sig->n_outputs; k++) {
            size_t t = d[i].output_of[k];
            if (t >= model.n_outputs || strcmp(d[i].output_tensor[k], outs[t].name) != 0 ||
                sig->outputs[k].dtype != outs[t].dtype)
                abort();
        }
        if (d[i].n_labels > CL_SERVE_SIG_LABELS_MAX || (d[i].n_labels && strcmp(sig->method_name,
                                                                                 CL_SERVE_METHOD_CLASSIFY) != 0))
            abort();
        for (size_t k = 0; k < d[i].n_labels; k++)
            if (!d[i].labels[k][0])
                abort();
    }
    cl_serve_sigset_free(s);
    return 0;
}
