/* example.c — tf.Example decoding for Classify, Regress and MultiInference: the examples of a
 * tensorflow.serving.Input become the model's input tensors, one row per example, by the rule of
 * docs/serve.md "Classify and Regress" (the feature named like an input alias feeds that input; its
 * values fill the input's row, whose size the input's fixed dimensions give). This is a trust
 * boundary: the counts of examples and features are bounded, the decoder's memory is budgeted
 * (cl_serve_pb_budget), every value is checked against the input's dtype, and every refusal names
 * the example and the feature. Thread-safe (no shared state). */
#include "infer.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void *budget_alloc(void *data, size_t n)
{
    cl_serve_pb_budget *b = data;
    if (n > b->limit - b->used) {
        b->over = true;
        return NULL;
    }
    void *p = malloc(n ? n : 1);
    if (p)
        b->used += n;
    return p;
}

static void budget_free(void *data, void *p)
{
    (void)data;
    free(p);
}

void cl_serve_pb_budget_init(cl_serve_pb_budget *b, size_t limit)
{
    *b = (cl_serve_pb_budget){.a = {.alloc = budget_alloc, .free = budget_free, .allocator_data = b},
                              .limit = limit};
}

void *cl_serve_pb_budget_alloc(cl_serve_pb_budget *b, size_t n)
{
    void *p = budget_alloc(b, n);
    if (p)
        memset(p, 0, n ? n : 1);
    return p;
}

/* The signature's inputs sorted by alias, for a binary search per feature. */
typedef struct alias_ix {
    const char *alias;
    size_t k;
} alias_ix;

static int alias_cmp(const void *a, const void *b)
{
    return strcmp(((const alias_ix *)a)->alias, ((const alias_ix *)b)->alias);
}

/* Finds, in one pass over the example's features, the feature of each input alias (a repeated key:
 * the last one, as protobuf's map semantics say). */
static cl_serve_code match_features(const Tensorflow__Example *ex, const alias_ix *ix, size_t n_ix,
                                    const Tensorflow__Feature **found, const char *where, cl_serve_status *st)
{
    const Tensorflow__Features *fs = ex ? ex->features : NULL;
    if (!fs)
        return CL_SC_OK;
    if (fs->n_feature > CL_SERVE_EXAMPLE_FEATURES_MAX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s has %zu features, more than the %d allowed", where,
                               fs->n_feature, CL_SERVE_EXAMPLE_FEATURES_MAX);
    for (size_t f = 0; f < fs->n_feature; f++) {
        const Tensorflow__Features__FeatureEntry *e = fs->feature[f];
        if (!e->key)
            continue;
        alias_ix key = {.alias = e->key};
        const alias_ix *hit = bsearch(&key, ix, n_ix, sizeof *ix, alias_cmp);
        if (hit)
            found[hit->k] = e->value; /* NULL: a feature without a value, refused when used */
    }
    return CL_SC_OK;
}

/* One example's values for input k into row `row` of t. */
static cl_serve_code fill_row(const Tensorflow__Feature *f, const cl_serve_tensor_spec *ts, int64_t per,
                              cl_serve_tensor *t, size_t row, const char *where, cl_serve_status *st)
{
    const char *alias = ts->name;
    size_t n = 0;
    const float *fv = NULL;
    const int64_t *iv = NULL;
    if (f && f->kind_case == TENSORFLOW__FEATURE__KIND_FLOAT_LIST && f->float_list) {
        n = f->float_list->n_value;
        fv = f->float_list->value;
    } else if (f && f->kind_case == TENSORFLOW__FEATURE__KIND_INT64_LIST && f->int64_list) {
        n = f->int64_list->n_value;
        iv = f->int64_list->value;
    } else if (f && f->kind_case == TENSORFLOW__FEATURE__KIND_BYTES_LIST) {
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: feature '%s' is a bytes_list, but the input it feeds "
                               "takes %s numbers (a float_list or an int64_list)", where, alias,
                               cl_serve_dtype_name(ts->dtype));
    } else if (f && f->kind_case == TENSORFLOW__FEATURE__KIND__NOT_SET) {
        n = 0; /* an empty feature: no values */
    }
    if (n != (uint64_t)per) {
        char shape[160];
        cl_serve_shape_str(shape, sizeof shape, ts->ndim, ts->dims);
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: feature '%s' has %zu values, but the input it feeds "
                               "(shape %s) takes %lld per example", where, alias, n, shape, (long long)per);
    }
    size_t base = row * (size_t)per;
    for (size_t i = 0; i < n; i++) {
        double d = fv ? (double)fv[i] : (double)iv[i];
        switch (ts->dtype) {
        case CL_SERVE_DT_FLOAT: ((float *)t->data)[base + i] = fv ? fv[i] : (float)iv[i]; break;
        case CL_SERVE_DT_DOUBLE: ((double *)t->data)[base + i] = d; break;
        case CL_SERVE_DT_INT64:
            if (iv) {
                ((int64_t *)t->data)[base + i] = iv[i];
                break;
            }
            if (!(d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0))
                goto range;
            ((int64_t *)t->data)[base + i] = (int64_t)d;
            break;
        case CL_SERVE_DT_INT32:
            if (iv ? (iv[i] < INT32_MIN || iv[i] > INT32_MAX) : !(d == floor(d) && d >= INT32_MIN && d <= INT32_MAX))
                goto range;
            ((int32_t *)t->data)[base + i] = iv ? (int32_t)iv[i] : (int32_t)d;
            break;
        default:
            return cl_serve_st_set(st, CL_SC_INTERNAL, "input '%s': %s cannot be fed from examples", alias,
                                   cl_serve_dtype_name(ts->dtype));
        }
        continue;
    range:
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: feature '%s', value %zu (%.17g) is not a %s", where,
                               alias, i, d, cl_serve_dtype_name(ts->dtype));
    }
    return CL_SC_OK;
}

cl_serve_code cl_serve_examples_to_inputs(const Tensorflow__Serving__Input *in, const cl_serve_sigdef *d,
                                          size_t max_bytes, cl_serve_call *c, size_t *n_examples)
{
    cl_serve_status *st = &c->st;
    *n_examples = 0;
    Tensorflow__Example **examples = NULL;
    const Tensorflow__Example *context = NULL;
    size_t n = 0;
    if (in && in->kind_case == TENSORFLOW__SERVING__INPUT__KIND_EXAMPLE_LIST && in->example_list) {
        examples = in->example_list->examples;
        n = in->example_list->n_examples;
    } else if (in && in->kind_case == TENSORFLOW__SERVING__INPUT__KIND_EXAMPLE_LIST_WITH_CONTEXT &&
               in->example_list_with_context) {
        examples = in->example_list_with_context->examples;
        n = in->example_list_with_context->n_examples;
        context = in->example_list_with_context->context;
    }
    if (n == 0)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Input is empty.");
    if (n > CL_SERVE_EXAMPLES_MAX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%zu examples in one request, more than the %d allowed: "
                               "split the request", n, CL_SERVE_EXAMPLES_MAX);
    size_t ni = d->sig.n_inputs;
    if (ni == 0 || ni > CL_SERVE_SIG_IO_MAX)
        return cl_serve_st_set(st, CL_SC_INTERNAL, "signature '%s' has %zu inputs", d->sig.name, ni);
    alias_ix ix[CL_SERVE_SIG_IO_MAX];
    int64_t per[CL_SERVE_SIG_IO_MAX];
    const Tensorflow__Feature *ctx_f[CL_SERVE_SIG_IO_MAX] = {0}, *ex_f[CL_SERVE_SIG_IO_MAX];
    for (size_t k = 0; k < ni; k++) {
        ix[k] = (alias_ix){.alias = d->sig.inputs[k].name, .k = k};
        const cl_serve_tensor_spec *ts = &d->sig.inputs[k];
        per[k] = 1;
        for (int i = 1; i < ts->ndim; i++)
            per[k] *= ts->dims[i]; /* fixed and bounded: checked when the signature was loaded */
    }
    qsort(ix, ni, sizeof *ix, alias_cmp);
    cl_serve_code code = match_features(context, ix, ni, ctx_f, "the context", st);
    if (code != CL_SC_OK)
        return code;
    if (!(c->inputs = calloc(ni, sizeof *c->inputs)))
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    size_t budget = max_bytes;
    for (size_t k = 0; k < ni; k++) {
        const cl_serve_tensor_spec *ts = &d->sig.inputs[k];
        int64_t dims[CL_SERVE_MAX_DIMS];
        memcpy(dims, ts->dims, sizeof dims);
        dims[0] = (int64_t)n;
        for (int i = 1; i < ts->ndim; i++)
            dims[i] = ts->dims[i];
        cl_err err = {0};
        const char *name = d->input_tensor ? d->input_tensor[k] : ts->name;
        if (cl_serve_tensor_init(&c->inputs[k], name, ts->dtype, ts->ndim, dims, budget, &err) != 0)
            return cl_serve_st_from_err(st, &err);
        c->n_inputs++;
        budget = c->inputs[k].nbytes < budget ? budget - c->inputs[k].nbytes : 1;
    }
    for (size_t e = 0; e < n; e++) {
        char where[48];
        snprintf(where, sizeof where, "example %zu", e);
        memset(ex_f, 0, sizeof ex_f);
        if ((code = match_features(examples[e], ix, ni, ex_f, where, st)) != CL_SC_OK)
            return code;
        for (size_t k = 0; k < ni; k++) {
            const Tensorflow__Feature *f = ex_f[k] ? ex_f[k] : ctx_f[k];
            if (!f) {
                bool in_ex = false, in_ctx = false;
                for (size_t j = 0; examples[e]->features && j < examples[e]->features->n_feature; j++)
                    in_ex |= examples[e]->features->feature[j]->key &&
                             strcmp(examples[e]->features->feature[j]->key, d->sig.inputs[k].name) == 0;
                for (size_t j = 0; context && context->features && j < context->features->n_feature; j++)
                    in_ctx |= context->features->feature[j]->key &&
                              strcmp(context->features->feature[j]->key, d->sig.inputs[k].name) == 0;
                return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: %s '%s'%s (signature '%s' feeds its input "
                                       "'%s' from it: %lld values per example)", where,
                                       in_ex || in_ctx ? "no value in feature" : "no feature", d->sig.inputs[k].name,
                                       in_ex || in_ctx ? "" : " in the example or its context", d->sig.name,
                                       d->sig.inputs[k].name, (long long)per[k]);
            }
            if ((code = fill_row(f, &d->sig.inputs[k], per[k], &c->inputs[k], e, where, st)) != CL_SC_OK)
                return code;
        }
    }
    *n_examples = n;
    return CL_SC_OK;
}
