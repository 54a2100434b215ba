/* pbconv.c — the gRPC side's protobuf work: TensorProto <-> cl_serve_tensor (tensor_content and the
 * typed *_val fields; string_val for DT_STRING inputs, e.g. encoded images), and the three RPCs' request parsing and response building (Predict,
 * GetModelMetadata with its Any-packed SignatureDefMap of every signature, GetModelStatus; Classify,
 * Regress and MultiInference are classify.c's), on protobuf-c code generated
 * from proto/. Responses are assembled from short-lived allocations tracked in a `bag` and freed in
 * one go once serialized. Thread-safe (no shared state). */
#include "serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tensorflow/core/framework/tensor.pb-c.h"
#include "tensorflow/core/protobuf/meta_graph.pb-c.h"
#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"
#include "tensorflow_serving/apis/model_management.pb-c.h"

cl_serve_code cl_serve_st_set(cl_serve_status *st, cl_serve_code code, const char *fmt, ...)
{
    st->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(st->msg, sizeof st->msg, fmt, ap);
    va_end(ap);
    return code;
}

cl_serve_code cl_serve_st_from_err(cl_serve_status *st, const cl_err *err)
{
    cl_serve_code code = CL_SC_INTERNAL;
    if (err->code == CL_E_INVALID || err->code == CL_E_FORMAT)
        code = CL_SC_INVALID_ARGUMENT;
    else if (err->code == CL_E_NOMEM)
        code = CL_SC_RESOURCE_EXHAUSTED;
    return cl_serve_st_set(st, code, "%s", err->msg[0] ? err->msg : "internal error");
}

/* ---------------------------------------------------------------- allocation bag */

typedef struct bag {
    void **p;
    size_t n, cap;
    bool failed;
} bag;

static void *bag_alloc(bag *b, size_t size)
{
    if (b->failed)
        return NULL;
    if (b->n == b->cap) {
        size_t cap = b->cap ? 2 * b->cap : 32;
        void **np = realloc(b->p, cap * sizeof *np);
        if (!np) {
            b->failed = true;
            return NULL;
        }
        b->p = np;
        b->cap = cap;
    }
    void *x = calloc(1, size ? size : 1);
    if (!x) {
        b->failed = true;
        return NULL;
    }
    b->p[b->n++] = x; /* owned by the arena from here */
    return x;
}

static char *bag_strdup(bag *b, const char *s)
{
    size_t n = strlen(s) + 1;
    char *d = bag_alloc(b, n);
    if (d)
        memcpy(d, s, n);
    return d;
}

static void bag_free(bag *b)
{
    for (size_t i = 0; i < b->n; i++)
        free(b->p[i]);
    free(b->p);
    memset(b, 0, sizeof *b);
}

/* ---------------------------------------------------------------- tensors */

/* DT_STRING: exactly one string_val per element (no broadcast), the element table and the bytes within
 * max_bytes. */
static cl_serve_code strings_from_pb(const Tensorflow__TensorProto *tp, const char *name, int ndim,
                                     const int64_t *dims, size_t max_bytes, cl_serve_tensor *out, cl_serve_status *st)
{
    if (tp->tensor_content.len)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': a DT_STRING tensor carries its values in "
                               "string_val, not tensor_content", name);
    int64_t n = cl_serve_shape_elements(ndim, dims);
    if (n < 0 || (uint64_t)n != tp->n_string_val)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': %zu values in string_val for a shape of %lld "
                               "elements", name, tp->n_string_val, (long long)n);
    size_t *caps = calloc(tp->n_string_val ? tp->n_string_val : 1, sizeof *caps);
    if (!caps)
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t i = 0; i < tp->n_string_val; i++)
        caps[i] = tp->string_val[i].len;
    cl_err err = {0};
    int rc = cl_serve_tensor_init_strings(out, name, ndim, dims, caps, max_bytes, &err);
    free(caps);
    if (rc != 0)
        return cl_serve_st_from_err(st, &err);
    cl_serve_string *el = cl_serve_tensor_strings(out);
    for (size_t i = 0; i < tp->n_string_val; i++)
        if (tp->string_val[i].len)
            memcpy((uint8_t *)el[i].data, tp->string_val[i].data, tp->string_val[i].len);
    return CL_SC_OK;
}

/* The tensor of tp; a tensor_content buffer is taken over from tp (no copy of a large tensor). spec is
 * the model's input of that name (arg[arg]; NULL: none): the values are read by pbvals.c. */
static cl_serve_code tensor_from_pb(Tensorflow__TensorProto *tp, const char *name, const cl_serve_tensor_spec *spec,
                                    size_t arg, size_t max_bytes, cl_serve_tensor *out, cl_serve_status *st)
{
    cl_serve_dtype dt = (cl_serve_dtype)tp->dtype;
    if (!cl_serve_pb_wire_dtype_size((int)tp->dtype) && dt != CL_SERVE_DT_STRING)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': dtype %d is not supported (use DT_FLOAT, "
                               "DT_DOUBLE, DT_INT32, DT_INT64, DT_UINT8, DT_INT8 or DT_BOOL, DT_HALF for float inputs, "
                               "DT_INT16, DT_UINT16, DT_UINT32 or DT_UINT64 for integer inputs; DT_STRING for encoded "
                               "images)", name, (int)tp->dtype);
    if (!tp->tensor_shape || tp->tensor_shape->unknown_rank)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': tensor_shape is missing or of unknown rank",
                               name);
    const Tensorflow__TensorShapeProto *sh = tp->tensor_shape;
    if (sh->n_dim > CL_SERVE_MAX_DIMS)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': rank %zu is above the supported %d", name,
                               sh->n_dim, CL_SERVE_MAX_DIMS);
    int64_t dims[CL_SERVE_MAX_DIMS];
    for (size_t i = 0; i < sh->n_dim; i++) {
        dims[i] = sh->dim[i]->size;
        if (dims[i] < 0)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s': dimension %zu has size %lld", name, i,
                                   (long long)dims[i]);
    }
    if (dt == CL_SERVE_DT_STRING)
        return strings_from_pb(tp, name, (int)sh->n_dim, dims, max_bytes, out, st);
    return cl_serve_pb_values(tp, name, spec, arg, (int)sh->n_dim, dims, max_bytes, out, st);
}

static Tensorflow__TensorShapeProto *shape_to_pb(bag *b, int ndim, const int64_t *dims)
{
    Tensorflow__TensorShapeProto *sh = bag_alloc(b, sizeof *sh);
    if (!sh)
        return NULL;
    tensorflow__tensor_shape_proto__init(sh);
    if (ndim < 0) {
        sh->unknown_rank = true;
        return sh;
    }
    sh->n_dim = (size_t)ndim;
    sh->dim = bag_alloc(b, sizeof *sh->dim * (size_t)(ndim ? ndim : 1));
    for (int i = 0; sh->dim && i < ndim; i++) {
        Tensorflow__TensorShapeProto__Dim *d = bag_alloc(b, sizeof *d);
        if (!d)
            return NULL;
        tensorflow__tensor_shape_proto__dim__init(d);
        d->size = dims[i];
        sh->dim[i] = d;
    }
    return b->failed ? NULL : sh;
}

/* Output tensors use the typed *_val fields, as TF Serving does. */
static Tensorflow__TensorProto *tensor_to_pb(bag *b, const cl_serve_tensor *t)
{
    Tensorflow__TensorProto *tp = bag_alloc(b, sizeof *tp);
    if (!tp)
        return NULL;
    tensorflow__tensor_proto__init(tp);
    tp->dtype = (Tensorflow__DataType)t->dtype;
    if (!(tp->tensor_shape = shape_to_pb(b, t->ndim, t->dims)))
        return NULL;
    size_t es = cl_serve_dtype_size(t->dtype);
    size_t n = es ? t->nbytes / es : 0;
    switch (t->dtype) {
    case CL_SERVE_DT_FLOAT:
        if (!(tp->float_val = bag_alloc(b, n * sizeof(float))))
            return NULL;
        memcpy(tp->float_val, t->data, n * sizeof(float));
        tp->n_float_val = n;
        break;
    case CL_SERVE_DT_DOUBLE:
        if (!(tp->double_val = bag_alloc(b, n * sizeof(double))))
            return NULL;
        memcpy(tp->double_val, t->data, n * sizeof(double));
        tp->n_double_val = n;
        break;
    case CL_SERVE_DT_INT64:
        if (!(tp->int64_val = bag_alloc(b, n * sizeof(int64_t))))
            return NULL;
        memcpy(tp->int64_val, t->data, n * sizeof(int64_t));
        tp->n_int64_val = n;
        break;
    case CL_SERVE_DT_INT32:
    case CL_SERVE_DT_UINT8:
    case CL_SERVE_DT_INT8:
        if (!(tp->int_val = bag_alloc(b, n * sizeof(int32_t))))
            return NULL;
        for (size_t i = 0; i < n; i++)
            tp->int_val[i] = t->dtype == CL_SERVE_DT_INT32   ? ((const int32_t *)t->data)[i]
                             : t->dtype == CL_SERVE_DT_UINT8 ? ((const uint8_t *)t->data)[i]
                                                       : ((const int8_t *)t->data)[i];
        tp->n_int_val = n;
        break;
    case CL_SERVE_DT_BOOL:
        if (!(tp->bool_val = bag_alloc(b, n * sizeof(protobuf_c_boolean))))
            return NULL;
        for (size_t i = 0; i < n; i++)
            tp->bool_val[i] = ((const uint8_t *)t->data)[i] != 0;
        tp->n_bool_val = n;
        break;
    default:
        return NULL;
    }
    return tp;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    *len = protobuf_c_message_pack(m, buf);
    return buf;
}

/* ---------------------------------------------------------------- model spec */

cl_serve_code cl_serve_pb_spec_lookup(cl_serve_registry *reg, const Tensorflow__Serving__ModelSpec *ms,
                                      cl_serve_model **out, cl_serve_status *st)
{
    *out = NULL;
    if (!ms || !ms->name || !*ms->name)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Missing ModelSpec");
    snprintf(st->model, sizeof st->model, "%s", ms->name);
    int64_t version = 0;
    cl_err err = {0};
    if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL &&
        cl_serve_registry_label(reg, ms->name, ms->version_label ? ms->version_label : "", &version, &err) != 0)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s", err.msg);
    if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION && ms->version)
        version = ms->version->value;
    st->version = version;
    if (!(*out = cl_serve_registry_get(reg, ms->name, version, &err)))
        return cl_serve_st_set(st, CL_SC_NOT_FOUND, "%s", err.msg);
    st->version = cl_serve_model_version(*out);
    return CL_SC_OK; /* the signature is the RPC's to resolve (GetModelMetadata lists them all, as TF does) */
}

static Tensorflow__Serving__ModelSpec *spec_to_pb(bag *b, const cl_serve_model *m, const char *signature)
{
    Tensorflow__Serving__ModelSpec *ms = bag_alloc(b, sizeof *ms);
    Google__Protobuf__Int64Value *v = bag_alloc(b, sizeof *v);
    if (!ms || !v)
        return NULL;
    tensorflow__serving__model_spec__init(ms);
    google__protobuf__int64_value__init(v);
    v->value = cl_serve_model_version(m);
    ms->name = bag_strdup(b, cl_serve_model_name(m));
    ms->signature_name = bag_strdup(b, signature ? signature : "");
    ms->version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
    ms->version = v;
    return b->failed ? NULL : ms;
}

/* ---------------------------------------------------------------- Predict */

cl_serve_code cl_serve_pb_predict_parse(cl_serve_registry *reg, const uint8_t *msg, size_t len, size_t max_bytes,
                                        cl_serve_call *c)
{
    cl_serve_status *st = &c->st;
    Tensorflow__Serving__PredictRequest *req = tensorflow__serving__predict_request__unpack(NULL, len, msg);
    if (!req)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request is not a valid PredictRequest protobuf");
    cl_serve_code code = cl_serve_pb_spec_lookup(reg, req->model_spec, &c->model, st);
    if (code != CL_SC_OK || (code = cl_serve_sig_resolve(c, req->model_spec->signature_name)) != CL_SC_OK)
        goto out;
    if (!(c->inputs = calloc(req->n_inputs ? req->n_inputs : 1, sizeof *c->inputs))) {
        code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
        goto out;
    }
    size_t budget = max_bytes;
    const cl_serve_signature *isig = cl_serve_model_signature(c->model);
    for (size_t i = 0; i < req->n_inputs; i++) {
        const Tensorflow__Serving__PredictRequest__InputsEntry *e = req->inputs[i];
        if (!e->value) {
            code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "input '%s' has no tensor", e->key);
            goto out;
        }
        size_t arg = 0;
        while (arg < isig->n_inputs && strcmp(isig->inputs[arg].name, e->key) != 0)
            arg++;
        code = tensor_from_pb(e->value, e->key, arg < isig->n_inputs ? &isig->inputs[arg] : NULL, arg, budget,
                              &c->inputs[i], st);
        if (code != CL_SC_OK)
            goto out;
        c->n_inputs++;
        budget = c->inputs[i].nbytes < budget ? budget - c->inputs[i].nbytes : 1;
    }
    if ((code = cl_serve_sig_inputs_to_model(c)) != CL_SC_OK)
        goto out;
    const cl_serve_signature *sig = &c->sig.sig;
    if (req->n_output_filter) {
        if (!(c->output_filter = calloc(req->n_output_filter, sizeof *c->output_filter))) {
            code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
            goto out;
        }
        for (size_t i = 0; i < req->n_output_filter; i++) {
            size_t k = 0;
            while (k < sig->n_outputs && strcmp(sig->outputs[k].name, req->output_filter[i]) != 0)
                k++;
            if (k == sig->n_outputs) {
                code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "output tensor alias not found in signature: %s",
                                       req->output_filter[i]);
                goto out;
            }
            for (size_t j = 0; j < i; j++) {
                if (strcmp(req->output_filter[j], req->output_filter[i]) == 0) {
                    code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "duplicate output tensor alias: %s",
                                           req->output_filter[i]); /* TF Serving's words */
                    goto out;
                }
            }
            if (!(c->output_filter[i] = strdup(req->output_filter[i]))) {
                code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
                goto out;
            }
            c->n_output_filter++;
        }
    }
out:
    tensorflow__serving__predict_request__free_unpacked(req, NULL);
    return code;
}

static bool filtered_in(const cl_serve_call *c, const char *name)
{
    if (!c->n_output_filter)
        return true;
    for (size_t i = 0; i < c->n_output_filter; i++)
        if (strcmp(c->output_filter[i], name) == 0)
            return true;
    return false;
}

cl_serve_code cl_serve_pb_predict_response(cl_serve_call *c, uint8_t **out, size_t *out_len)
{
    cl_serve_code vc = cl_serve_sig_outputs_to_view(c);
    if (vc != CL_SC_OK)
        return vc;
    bag b = {0};
    Tensorflow__Serving__PredictResponse resp = TENSORFLOW__SERVING__PREDICT_RESPONSE__INIT;
    resp.model_spec = spec_to_pb(&b, c->model, c->sig.sig.name);
    resp.outputs = bag_alloc(&b, sizeof *resp.outputs * (c->n_outputs ? c->n_outputs : 1));
    for (size_t i = 0; resp.outputs && i < c->n_outputs; i++) {
        if (!filtered_in(c, c->outputs[i].name))
            continue;
        Tensorflow__Serving__PredictResponse__OutputsEntry *e = bag_alloc(&b, sizeof *e);
        if (!e)
            break;
        tensorflow__serving__predict_response__outputs_entry__init(e);
        e->key = bag_strdup(&b, c->outputs[i].name);
        e->value = tensor_to_pb(&b, &c->outputs[i]);
        if (!e->value)
            b.failed = true;
        resp.outputs[resp.n_outputs++] = e;
    }
    cl_serve_code code = CL_SC_OK;
    if (b.failed || !(*out = pack(&resp.base, out_len)))
        code = cl_serve_st_set(&c->st, CL_SC_INTERNAL, "cannot encode the response (out of memory or an output "
                               "of an unsupported dtype)");
    bag_free(&b);
    return code;
}

/* ---------------------------------------------------------------- GetModelMetadata */

static Tensorflow__SignatureDef__InputsEntry **tensor_infos(bag *b, const cl_serve_tensor_spec *specs, size_t n)
{
    /* InputsEntry and OutputsEntry have the same layout; each gets its own descriptor. */
    return bag_alloc(b, sizeof(void *) * (n ? n : 1));
}

static Tensorflow__TensorInfo *tensor_info(bag *b, const cl_serve_tensor_spec *s)
{
    Tensorflow__TensorInfo *ti = bag_alloc(b, sizeof *ti);
    if (!ti)
        return NULL;
    tensorflow__tensor_info__init(ti);
    ti->encoding_case = TENSORFLOW__TENSOR_INFO__ENCODING_NAME;
    ti->name = bag_strdup(b, s->tensor_name ? s->tensor_name : s->name);
    /* an input with image preprocessing is shown as TF Serving shows image-bytes models */
    static const int64_t any_batch[1] = {-1};
    ti->dtype = (Tensorflow__DataType)(s->image ? CL_SERVE_DT_STRING : s->dtype);
    ti->tensor_shape = s->image ? shape_to_pb(b, 1, any_batch) : shape_to_pb(b, s->ndim, s->dims);
    return b->failed ? NULL : ti;
}

cl_serve_code cl_serve_pb_metadata(cl_serve_registry *reg, const uint8_t *msg, size_t len, uint8_t **out,
                                   size_t *out_len, cl_serve_status *st)
{
    Tensorflow__Serving__GetModelMetadataRequest *req =
        tensorflow__serving__get_model_metadata_request__unpack(NULL, len, msg);
    if (!req)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request is not a valid GetModelMetadataRequest");
    cl_serve_model *m = NULL;
    bag b = {0};
    uint8_t *inner = NULL;
    cl_serve_code code = CL_SC_OK;
    if (req->n_metadata_field == 0) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "GetModelMetadataRequest must specify at least one "
                               "metadata_field");
        goto out;
    }
    for (size_t i = 0; i < req->n_metadata_field; i++) {
        if (strcmp(req->metadata_field[i], "signature_def") != 0) {
            code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Metadata field %s is not supported",
                                   req->metadata_field[i]);
            goto out;
        }
    }
    if ((code = cl_serve_pb_spec_lookup(reg, req->model_spec, &m, st)) != CL_SC_OK)
        goto out;
    /* every signature of the model, as TF lists a SavedModel's SignatureDefMap (the TensorInfo names the
     * model's own tensor; the map key is the alias clients use) */
    size_t n_sig = cl_serve_model_sig_count(m);
    Tensorflow__Serving__SignatureDefMap__SignatureDefEntry **sdes = bag_alloc(&b, n_sig * sizeof *sdes);
    for (size_t s_i = 0; sdes && s_i < n_sig; s_i++) {
        cl_serve_sigdef d;
        cl_serve_model_sig_at(m, s_i, &d);
        const cl_serve_signature *sig = &d.sig;
        Tensorflow__SignatureDef *sd = bag_alloc(&b, sizeof *sd);
        Tensorflow__Serving__SignatureDefMap__SignatureDefEntry *sde = bag_alloc(&b, sizeof *sde);
        if (!sd || !sde)
            break;
        tensorflow__signature_def__init(sd);
        tensorflow__serving__signature_def_map__signature_def_entry__init(sde);
        sd->method_name = bag_strdup(&b, sig->method_name ? sig->method_name : CL_SERVE_METHOD_PREDICT);
        sd->inputs = tensor_infos(&b, sig->inputs, sig->n_inputs);
        sd->outputs = (Tensorflow__SignatureDef__OutputsEntry **)tensor_infos(&b, sig->outputs, sig->n_outputs);
        for (size_t i = 0; sd->inputs && i < sig->n_inputs; i++) {
            Tensorflow__SignatureDef__InputsEntry *e = bag_alloc(&b, sizeof *e);
            if (!e)
                break;
            tensorflow__signature_def__inputs_entry__init(e);
            e->key = bag_strdup(&b, sig->inputs[i].name);
            cl_serve_tensor_spec ts = sig->inputs[i];
            ts.name = d.input_tensor ? d.input_tensor[i] : ts.name;
            e->value = tensor_info(&b, &ts);
            sd->inputs[sd->n_inputs++] = e;
        }
        for (size_t i = 0; sd->outputs && i < sig->n_outputs; i++) {
            Tensorflow__SignatureDef__OutputsEntry *e = bag_alloc(&b, sizeof *e);
            if (!e)
                break;
            tensorflow__signature_def__outputs_entry__init(e);
            e->key = bag_strdup(&b, sig->outputs[i].name);
            cl_serve_tensor_spec ts = sig->outputs[i];
            ts.name = d.output_tensor ? d.output_tensor[i] : ts.name;
            e->value = tensor_info(&b, &ts);
            sd->outputs[sd->n_outputs++] = e;
        }
        sde->key = bag_strdup(&b, sig->name);
        sde->value = sd;
        sdes[s_i] = sde;
    }
    Tensorflow__Serving__SignatureDefMap map = TENSORFLOW__SERVING__SIGNATURE_DEF_MAP__INIT;
    map.n_signature_def = n_sig;
    map.signature_def = sdes;
    size_t inner_len = 0;
    if (b.failed || !(inner = pack(&map.base, &inner_len))) {
        code = cl_serve_st_set(st, CL_SC_INTERNAL, "out of memory");
        goto out;
    }
    Google__Protobuf__Any any = GOOGLE__PROTOBUF__ANY__INIT;
    any.type_url = "type.googleapis.com/tensorflow.serving.SignatureDefMap";
    any.value.data = inner;
    any.value.len = inner_len;
    Tensorflow__Serving__GetModelMetadataResponse__MetadataEntry me =
        TENSORFLOW__SERVING__GET_MODEL_METADATA_RESPONSE__METADATA_ENTRY__INIT;
    me.key = "signature_def";
    me.value = &any;
    Tensorflow__Serving__GetModelMetadataResponse__MetadataEntry *mes[1] = {&me};
    Tensorflow__Serving__GetModelMetadataResponse resp = TENSORFLOW__SERVING__GET_MODEL_METADATA_RESPONSE__INIT;
    resp.model_spec = spec_to_pb(&b, m, req->model_spec ? req->model_spec->signature_name : NULL);
    resp.n_metadata = 1;
    resp.metadata = mes;
    if (b.failed || !(*out = pack(&resp.base, out_len)))
        code = cl_serve_st_set(st, CL_SC_INTERNAL, "out of memory");
out:
    free(inner);
    bag_free(&b);
    cl_serve_model_release(m);
    tensorflow__serving__get_model_metadata_request__free_unpacked(req, NULL);
    return code;
}

/* ---------------------------------------------------------------- GetModelStatus */

cl_serve_code cl_serve_pb_status(cl_serve_registry *reg, const uint8_t *msg, size_t len, uint8_t **out,
                                 size_t *out_len, cl_serve_status *st)
{
    Tensorflow__Serving__GetModelStatusRequest *req = tensorflow__serving__get_model_status_request__unpack(NULL, len,
                                                                                                          msg);
    if (!req)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request is not a valid GetModelStatusRequest");
    cl_serve_code code = CL_SC_OK;
    bag b = {0};
    const Tensorflow__Serving__ModelSpec *ms = req->model_spec;
    static _Thread_local cl_serve_version_status versions[64];
    size_t n = 0;
    if (!ms || !ms->name || !*ms->name) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Missing ModelSpec");
        goto out;
    }
    snprintf(st->model, sizeof st->model, "%s", ms->name);
    int64_t want = 0;
    cl_err err = {0};
    if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION_LABEL &&
        cl_serve_registry_label(reg, ms->name, ms->version_label ? ms->version_label : "", &want, &err) != 0) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s", err.msg);
        goto out;
    }
    if (ms->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION && ms->version)
        want = ms->version->value;
    n = cl_serve_registry_status(reg, ms->name, versions, CL_ARRAY_LEN(versions));
    if (n > CL_ARRAY_LEN(versions))
        n = CL_ARRAY_LEN(versions);
    if (n == 0) {
        code = cl_serve_st_set(st, CL_SC_NOT_FOUND, "Could not find any versions of model %s", ms->name);
        goto out;
    }
    if (want > 0) {
        st->version = want;
        size_t i = 0;
        while (i < n && versions[i].version != want)
            i++;
        if (i == n) {
            code = cl_serve_st_set(st, CL_SC_NOT_FOUND, "Could not find version %lld of model %s", (long long)want,
                                   ms->name);
            goto out;
        }
        versions[0] = versions[i];
        n = 1;
    }
    Tensorflow__Serving__GetModelStatusResponse resp = TENSORFLOW__SERVING__GET_MODEL_STATUS_RESPONSE__INIT;
    resp.model_version_status = bag_alloc(&b, n * sizeof *resp.model_version_status);
    for (size_t i = 0; resp.model_version_status && i < n; i++) {
        Tensorflow__Serving__ModelVersionStatus *vs = bag_alloc(&b, sizeof *vs);
        Tensorflow__Serving__StatusProto *sp = bag_alloc(&b, sizeof *sp);
        if (!vs || !sp)
            break;
        tensorflow__serving__model_version_status__init(vs);
        tensorflow__serving__status_proto__init(sp);
        vs->version = versions[i].version;
        vs->state = versions[i].available ? TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE
                                          : TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__LOADING;
        sp->error_code = (Tensorflow__Error__Code)versions[i].code;
        if (versions[i].message[0])
            sp->error_message = versions[i].message;
        vs->status = sp;
        resp.model_version_status[resp.n_model_version_status++] = vs;
    }
    if (b.failed || !(*out = pack(&resp.base, out_len)))
        code = cl_serve_st_set(st, CL_SC_INTERNAL, "out of memory");
out:
    bag_free(&b);
    tensorflow__serving__get_model_status_request__free_unpacked(req, NULL);
    return code;
}

/* ---------------------------------------------------------------- warm-up replays */

int cl_serve_pb_request_inputs(const uint8_t *msg, size_t len, size_t max_bytes, cl_serve_tensor **inputs,
                               size_t *n_inputs, cl_err *err)
{
    *inputs = NULL;
    *n_inputs = 0;
    Tensorflow__Serving__PredictRequest *req = tensorflow__serving__predict_request__unpack(NULL, len, msg);
    if (!req)
        return cl_err_set(err, CL_E_FORMAT, "not a valid PredictRequest protobuf");
    cl_serve_tensor *t = calloc(req->n_inputs ? req->n_inputs : 1, sizeof *t);
    cl_serve_status st = {0};
    size_t n = 0, budget = max_bytes;
    int rc = t ? 0 : cl_err_nomem(err);
    for (size_t i = 0; rc == 0 && i < req->n_inputs; i++) {
        const Tensorflow__Serving__PredictRequest__InputsEntry *e = req->inputs[i];
        if (!e->value)
            rc = cl_err_set(err, CL_E_INVALID, "input '%s' has no tensor", e->key);
        else if (tensor_from_pb(e->value, e->key, NULL, i, budget, &t[i], &st) != CL_SC_OK)
            rc = cl_err_set(err, CL_E_INVALID, "%s", st.msg);
        else {
            n++;
            budget = t[i].nbytes < budget ? budget - t[i].nbytes : 1;
        }
    }
    tensorflow__serving__predict_request__free_unpacked(req, NULL);
    if (rc != 0) {
        cl_serve_tensors_free(t, n);
        return -1;
    }
    *inputs = t;
    *n_inputs = n;
    return 0;
}

/* ---------------------------------------------------------------- ModelService/HandleReloadConfigRequest */

cl_serve_code cl_serve_pb_reload(const cl_serve_config *cfg, const uint8_t *msg, size_t len, uint8_t **out,
                                 size_t *out_len, cl_serve_status *st)
{
    if (!cfg->reload_config)
        return cl_serve_st_set(st, CL_SC_UNIMPLEMENTED, "this server has no model configuration to reload");
    cl_serve_code code = CL_SC_OK;
    cl_err err = {0};
    if (cfg->reload_config(cfg->reload_config_arg, msg, len, &code, &err) != 0)
        return cl_serve_st_set(st, code == CL_SC_OK ? CL_SC_UNKNOWN : code, "%s", err.msg);
    Tensorflow__Serving__StatusProto sp = TENSORFLOW__SERVING__STATUS_PROTO__INIT;
    Tensorflow__Serving__ReloadConfigResponse resp = TENSORFLOW__SERVING__RELOAD_CONFIG_RESPONSE__INIT;
    resp.status = &sp;
    if (!(*out = pack(&resp.base, out_len)))
        return cl_serve_st_set(st, CL_SC_INTERNAL, "out of memory");
    return CL_SC_OK;
}
