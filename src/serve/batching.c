/* batching.c — TF Serving's --batching_parameters_file (tensorflow.serving.BatchingParameters in
 * protobuf text format, proto/tensorflow_serving/servables/tensorflow/session_bundle_config.proto)
 * into cl_serve_batching. The batching itself lives in the worker pool (pool.c).
 *
 * The text is read by the common text-format reader (textpb.h): `field { value: N }` (the wrapper
 * messages TF Serving writes) or cloister's older shorthand `field: N`; `,` / `;` separators and
 * `#` comments; a field given twice is refused. Honoured: max_batch_size, batch_timeout_micros,
 * num_batch_threads, max_enqueued_batches; thread_pool_name is accepted and has no effect; options
 * that would change results or need padding (allowed_batch_sizes, pad_variable_length_inputs) are
 * errors that name their line. Stateless, so thread-safe. */
#include "cloister/serve.h"
#include "cloister/textpb.h"

#include <string.h>

#include "tensorflow_serving/servables/tensorflow/session_bundle_config.pb-c.h"

#define VALUE_MAX 100000000ll

/* `batching parameters line L: ` for a field given in the text. */
static int where(const cl_textpb_locs *locs, const void *msg, const char *field)
{
    int line = 0, col = 0;
    cl_textpb_where(locs, msg, field, 0, &line, &col);
    return line;
}

int cl_serve_batching_parse(const char *text, size_t len, cl_serve_batching *out, unsigned *workers,
                            unsigned *queue, cl_err *err)
{
    cl_textpb_locs *locs = NULL;
    cl_textpb_options o = {.flags = CL_TEXTPB_FORBID_OVERWRITE | CL_TEXTPB_WRAPPER_SHORTHAND, .max_len = 1u << 20,
                           .locs = &locs};
    ProtobufCMessage *m = NULL;
    if (cl_textpb_parse(text, len, &tensorflow__serving__batching_parameters__descriptor, &o, &m, err) != 0)
        return cl_err_prefix(err, "batching parameters");
    const Tensorflow__Serving__BatchingParameters *p = (const Tensorflow__Serving__BatchingParameters *)m;
    int rc = -1;
    if (p->n_allowed_batch_sizes) {
        cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: 'allowed_batch_sizes' is not supported",
                   where(locs, p, "allowed_batch_sizes"));
        goto out;
    }
    if (where(locs, p, "pad_variable_length_inputs") && p->pad_variable_length_inputs) {
        cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: 'pad_variable_length_inputs' is not supported",
                   where(locs, p, "pad_variable_length_inputs"));
        goto out;
    }
    const struct {
        const char *name;
        const Google__Protobuf__Int64Value *v;
    } f[] = {{"max_batch_size", p->max_batch_size}, {"batch_timeout_micros", p->batch_timeout_micros},
             {"num_batch_threads", p->num_batch_threads}, {"max_enqueued_batches", p->max_enqueued_batches}};
    for (size_t i = 0; i < CL_ARRAY_LEN(f); i++)
        if (f[i].v && (f[i].v->value < 0 || f[i].v->value > VALUE_MAX)) {
            int line = 0, col = 0;
            if (!cl_textpb_where(locs, f[i].v, "value", 0, &line, &col))
                line = where(locs, p, f[i].name);
            cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: '%s' needs a whole number between 0 and "
                       "100000000", line, f[i].name);
            goto out;
        }
    cl_serve_batching b = {.max_batch_size = 32, .batch_timeout_us = 0}; /* TF Serving's defaults */
    if (p->max_batch_size) {
        if (p->max_batch_size->value < 1 || p->max_batch_size->value > 4096) {
            cl_err_set(err, CL_E_FORMAT, "batching parameters: max_batch_size must be 1..4096");
            goto out;
        }
        b.max_batch_size = (unsigned)p->max_batch_size->value;
    }
    if (p->batch_timeout_micros) {
        if (p->batch_timeout_micros->value > 10000000) {
            cl_err_set(err, CL_E_FORMAT, "batching parameters: batch_timeout_micros above 10 s is not useful");
            goto out;
        }
        b.batch_timeout_us = (unsigned)p->batch_timeout_micros->value;
    }
    if (p->num_batch_threads && (p->num_batch_threads->value < 1 || p->num_batch_threads->value > 1024)) {
        cl_err_set(err, CL_E_FORMAT, "batching parameters: num_batch_threads must be 1..1024");
        goto out;
    }
    if (p->max_enqueued_batches && (p->max_enqueued_batches->value < 1 || p->max_enqueued_batches->value > 1000000)) {
        cl_err_set(err, CL_E_FORMAT, "batching parameters: max_enqueued_batches must be 1..1000000");
        goto out;
    }
    if (workers && p->num_batch_threads)
        *workers = (unsigned)p->num_batch_threads->value;
    if (queue && p->max_enqueued_batches)
        *queue = (unsigned)p->max_enqueued_batches->value;
    *out = b;
    rc = 0;
out:
    cl_textpb_free(m, &o);
    cl_textpb_locs_free(locs);
    return rc;
}
