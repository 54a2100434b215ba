/* classify.c — TF Serving's Classify, Regress and MultiInference (gRPC) and REST :classify / :regress
 * for the models served here: the request's tf.Examples become the model's inputs by the signature
 * the request names (example.c), the model runs like a Predict call (worker pool, batching, memory
 * limits), and its outputs become TF's ClassificationResult ("scores" and/or "classes", with the
 * signature's labels) or RegressionResult ("outputs"). Signature and method checks answer with TF
 * Serving's own codes and texts. Requests are decoded under the per-request memory limit
 * (cl_serve_pb_budget). Thread-safe (no shared state). */
#include "infer.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "tensorflow_serving/apis/classification.pb-c.h"
#include "tensorflow_serving/apis/inference.pb-c.h"
#include "tensorflow_serving/apis/regression.pb-c.h"

#include "jsonnum.h"

/* What decoding one request may allocate: the per-request memory limit. */
static size_t decode_limit(const cl_serve_call *c)
{
    size_t lim = c->srv ? cl_serve_srv_config(c->srv)->request_memory_bytes : 0;
    return lim ? lim : (size_t)256 << 20;
}

static cl_serve_code over_budget(cl_serve_call *c, const cl_serve_pb_budget *b)
{
    return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "decoding the request's examples needs more than the "
                           "%.1f MiB one request may use (--max_request_memory_mb): send fewer examples",
                           (double)b->limit / (1 << 20));
}

/* The task's signature: TF's texts for a signature that is missing or of another method. */
static cl_serve_code task_resolve(cl_serve_call *c, const char *signame, const char *method, bool multi,
                                  cl_serve_task *t)
{
    const char *name = signame && *signame ? signame : CL_SERVE_DEFAULT_SIGNATURE;
    if (!cl_serve_model_sig_find(c->model, name, &t->sig))
        return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, multi ? "Requested signature not found in model "
                               "graph: %s" : "No signature was found with the name: %s", name);
    t->classify = strcmp(method, CL_SERVE_METHOD_CLASSIFY) == 0;
    if (strcmp(t->sig.sig.method_name, method) != 0)
        return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "Expected %s signature method_name to be %s. Was: %s",
                               t->classify ? "classification" : "regression", method, t->sig.sig.method_name);
    return CL_SC_OK;
}

/* The same inputs fed from the same features (alias -> model input) in both signatures. */
static bool same_inputs(const cl_serve_sigdef *a, const cl_serve_sigdef *b)
{
    if (a->sig.n_inputs != b->sig.n_inputs)
        return false;
    for (size_t k = 0; k < a->sig.n_inputs; k++) {
        size_t j = 0;
        while (j < b->sig.n_inputs && strcmp(a->sig.inputs[k].name, b->sig.inputs[j].name) != 0)
            j++;
        if (j == b->sig.n_inputs)
            return false;
        const char *ta = a->input_tensor ? a->input_tensor[k] : a->sig.inputs[k].name;
        const char *tb = b->input_tensor ? b->input_tensor[j] : b->sig.inputs[j].name;
        if (strcmp(ta, tb) != 0)
            return false;
    }
    return true;
}

static cl_serve_code infer_alloc(cl_serve_call *c, size_t n_tasks)
{
    if (!(c->infer = calloc(1, sizeof *c->infer + n_tasks * sizeof(cl_serve_task))))
        return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    c->infer->n_tasks = n_tasks;
    return CL_SC_OK;
}

/* MultiInference: TF's rules (one model, distinct signatures, classify or regress, one input). */
static cl_serve_code multi_tasks(cl_serve_registry *reg, const Tensorflow__Serving__MultiInferenceRequest *req,
                                 cl_serve_call *c)
{
    cl_serve_status *st = &c->st;
    if (req->n_tasks == 0)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "MultiInferenceRequest has no tasks");
    if (req->n_tasks > CL_SERVE_TASKS_MAX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%zu tasks in one MultiInferenceRequest, more than the %d "
                               "allowed", req->n_tasks, CL_SERVE_TASKS_MAX);
    const char *model = NULL;
    for (size_t i = 0; i < req->n_tasks; i++) {
        const Tensorflow__Serving__ModelSpec *ms = req->tasks[i]->model_spec;
        if (!ms || !ms->name || !*ms->name)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Found ModelSpec with an empty model name.");
        if (model && strcmp(model, ms->name) != 0)
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "All ModelSpecs in a MultiInferenceRequest must access "
                                   "the same model name.");
        model = ms->name;
    }
    cl_serve_code code = cl_serve_pb_spec_lookup(reg, req->tasks[0]->model_spec, &c->model, &c->st);
    if (code != CL_SC_OK || (code = infer_alloc(c, req->n_tasks)) != CL_SC_OK)
        return code;
    for (size_t i = 0; i < req->n_tasks; i++) {
        const Tensorflow__Serving__InferenceTask *t = req->tasks[i];
        const char *signame = t->model_spec->signature_name && *t->model_spec->signature_name
                                  ? t->model_spec->signature_name : CL_SERVE_DEFAULT_SIGNATURE;
        for (size_t j = 0; j < i; j++)
            if (strcmp(c->infer->tasks[j].sig.sig.name, signame) == 0)
                return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Duplicate evaluation of signature: %s", signame);
        cl_serve_task *task = &c->infer->tasks[i];
        if (!cl_serve_model_sig_find(c->model, signame, &task->sig))
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Requested signature not found in model graph: %s",
                                   signame);
        const char *method = t->method_name ? t->method_name : "";
        if (strcmp(method, CL_SERVE_METHOD_CLASSIFY) != 0 && strcmp(method, CL_SERVE_METHOD_REGRESS) != 0)
            return cl_serve_st_set(st, CL_SC_UNIMPLEMENTED, "Unsupported signature method_name: %s", method);
        if ((code = task_resolve(c, signame, method, true, task)) != CL_SC_OK)
            return code;
        if (i && !same_inputs(&c->infer->tasks[0].sig, &task->sig))
            return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Input tensor must be the same for all Signatures.");
    }
    return CL_SC_OK;
}

cl_serve_code cl_serve_pb_infer_parse(cl_serve_registry *reg, const uint8_t *msg, size_t len, size_t max_bytes,
                                      cl_serve_call *c)
{
    cl_serve_pb_budget b;
    cl_serve_pb_budget_init(&b, decode_limit(c));
    ProtobufCMessage *req = NULL;
    const Tensorflow__Serving__Input *input = NULL;
    cl_serve_code code = CL_SC_OK;
    const char *what = c->rpc == CL_RPC_CLASSIFY ? "ClassificationRequest"
                       : c->rpc == CL_RPC_REGRESS ? "RegressionRequest" : "MultiInferenceRequest";
    if (c->rpc == CL_RPC_CLASSIFY || c->rpc == CL_RPC_REGRESS) {
        const Tensorflow__Serving__ModelSpec *ms;
        if (c->rpc == CL_RPC_CLASSIFY) {
            Tensorflow__Serving__ClassificationRequest *r =
                tensorflow__serving__classification_request__unpack(&b.a, len, msg);
            req = (ProtobufCMessage *)r;
            ms = r ? r->model_spec : NULL;
            input = r ? r->input : NULL;
        } else {
            Tensorflow__Serving__RegressionRequest *r = tensorflow__serving__regression_request__unpack(&b.a, len, msg);
            req = (ProtobufCMessage *)r;
            ms = r ? r->model_spec : NULL;
            input = r ? r->input : NULL;
        }
        if (!req)
            return b.over ? over_budget(c, &b) : cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "the request is not "
                                                                 "a valid %s protobuf", what);
        if ((code = cl_serve_pb_spec_lookup(reg, ms, &c->model, &c->st)) == CL_SC_OK &&
            (code = infer_alloc(c, 1)) == CL_SC_OK)
            code = task_resolve(c, ms->signature_name,
                                c->rpc == CL_RPC_CLASSIFY ? CL_SERVE_METHOD_CLASSIFY : CL_SERVE_METHOD_REGRESS, false,
                                &c->infer->tasks[0]);
    } else if (c->rpc == CL_RPC_MULTI_INFERENCE) {
        Tensorflow__Serving__MultiInferenceRequest *r =
            tensorflow__serving__multi_inference_request__unpack(&b.a, len, msg);
        if (!r)
            return b.over ? over_budget(c, &b) : cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "the request is not "
                                                                 "a valid %s protobuf", what);
        req = (ProtobufCMessage *)r;
        input = r->input;
        code = multi_tasks(reg, r, c);
    } else {
        return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "not an inference rpc");
    }
    if (code == CL_SC_OK) {
        c->sig = c->infer->tasks[0].sig;
        code = cl_serve_examples_to_inputs(input, &c->sig, max_bytes, c, &c->infer->n_examples);
    }
    protobuf_c_message_free_unpacked(req, &b.a);
    return code;
}

/* ---------------------------------------------------------------- results */

/* Frees what a response was built from. */
typedef struct plist {
    void *p[8 * CL_SERVE_TASKS_MAX + 16];
    size_t n;
    bool failed;
} plist;

static void *pl_alloc(plist *l, size_t n)
{
    if (l->failed || l->n == CL_ARRAY_LEN(l->p) || !(l->p[l->n] = calloc(1, n ? n : 1))) {
        l->failed = true;
        return NULL;
    }
    return l->p[l->n++];
}

static void pl_free(plist *l)
{
    for (size_t i = 0; i < l->n; i++)
        free(l->p[i]);
    l->n = 0;
}

/* Columns of a [N] or [N, K] tensor that must have N rows; -1 (st set) otherwise. */
static int64_t columns(cl_serve_call *c, const cl_serve_tensor *t, const char *alias, const char *sig)
{
    int64_t n = (int64_t)c->infer->n_examples;
    if (t->ndim < 1 || t->ndim > 2 || t->dims[0] != n) {
        char shape[160];
        cl_serve_shape_str(shape, sizeof shape, t->ndim, t->dims);
        cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': output '%s' has shape %s; for %lld examples "
                        "it must be [%lld] or [%lld, classes]", sig, alias, shape, (long long)n, (long long)n,
                        (long long)n);
        return -1;
    }
    return t->ndim == 2 ? t->dims[1] : 1;
}

/* A classification result as a table: for example i, class j: label and score. */
typedef struct class_table {
    const cl_serve_tensor *scores, *classes;
    const cl_serve_sigdef *sig;
    int64_t k;
} class_table;

static cl_serve_code class_table_make(cl_serve_call *c, const cl_serve_task *t, class_table *ct)
{
    const cl_serve_sigdef *d = &t->sig;
    *ct = (class_table){.scores = cl_serve_sig_output(c, d, "scores"), .classes = cl_serve_sig_output(c, d, "classes"),
                        .sig = d, .k = -1};
    if (!ct->scores && !ct->classes)
        return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "signature '%s': the model produced neither scores nor classes",
                               d->sig.name);
    if (ct->scores) {
        if (ct->scores->dtype != CL_SERVE_DT_FLOAT)
            return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "Expected scores Tensor of DT_FLOAT. Got: %s",
                                   cl_serve_dtype_name(ct->scores->dtype));
        if ((ct->k = columns(c, ct->scores, "scores", d->sig.name)) < 0)
            return c->st.code;
    }
    if (ct->classes) {
        if (ct->classes->dtype != CL_SERVE_DT_INT64 && ct->classes->dtype != CL_SERVE_DT_INT32)
            return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': the classes are %s, not class ids",
                                   d->sig.name, cl_serve_dtype_name(ct->classes->dtype));
        int64_t kc = columns(c, ct->classes, "classes", d->sig.name);
        if (kc < 0)
            return c->st.code;
        if (ct->k >= 0 && kc != ct->k)
            return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': %lld scores but %lld classes per "
                                   "example", d->sig.name, (long long)ct->k, (long long)kc);
        ct->k = kc;
    }
    if (!ct->classes && d->n_labels && (size_t)ct->k != d->n_labels)
        return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': the model gave %lld scores per example "
                               "but the signature has %zu labels", d->sig.name, (long long)ct->k, d->n_labels);
    /* class ids must name a label */
    if (ct->classes && d->n_labels) {
        size_t n = (size_t)c->infer->n_examples * (size_t)ct->k;
        for (size_t i = 0; i < n; i++) {
            int64_t id = ct->classes->dtype == CL_SERVE_DT_INT64 ? ((const int64_t *)ct->classes->data)[i]
                                                                 : ((const int32_t *)ct->classes->data)[i];
            if (id < 0 || (uint64_t)id >= d->n_labels)
                return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': the model gave class id %lld, "
                                       "but the signature has labels for 0 to %zu", d->sig.name, (long long)id,
                                       d->n_labels - 1);
        }
    }
    return CL_SC_OK;
}

/* Label of cell (i, j) into buf (room for 24 bytes) or a pointer to the signature's label. */
static const char *cell_label(const class_table *ct, size_t cell, size_t j, char *buf)
{
    if (ct->classes) {
        int64_t id = ct->classes->dtype == CL_SERVE_DT_INT64 ? ((const int64_t *)ct->classes->data)[cell]
                                                             : ((const int32_t *)ct->classes->data)[cell];
        if (ct->sig->n_labels)
            return ct->sig->labels[id];
        snprintf(buf, 24, "%" PRId64, id);
        return buf;
    }
    return ct->sig->n_labels ? ct->sig->labels[j] : "";
}

static float cell_score(const class_table *ct, size_t cell)
{
    return ct->scores ? ((const float *)ct->scores->data)[cell] : 0.0f;
}

static cl_serve_code regress_values(cl_serve_call *c, const cl_serve_task *t, const float **out)
{
    const cl_serve_tensor *o = cl_serve_sig_output(c, &t->sig, "outputs");
    int64_t n = (int64_t)c->infer->n_examples;
    if (!o)
        return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "signature '%s': the model produced no outputs",
                               t->sig.sig.name);
    if (o->dtype != CL_SERVE_DT_FLOAT)
        return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "Expected output Tensor of DT_FLOAT. Got: %s",
                               cl_serve_dtype_name(o->dtype));
    if (!((o->ndim == 1 && o->dims[0] == n) || (o->ndim == 2 && o->dims[0] == n && o->dims[1] == 1))) {
        char shape[160];
        cl_serve_shape_str(shape, sizeof shape, o->ndim, o->dims);
        return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "signature '%s': the regression output has shape %s; "
                               "for %lld examples it must be [%lld] or [%lld, 1]", t->sig.sig.name, shape,
                               (long long)n, (long long)n, (long long)n);
    }
    *out = o->data;
    return CL_SC_OK;
}

static Tensorflow__Serving__ModelSpec *spec_pb(plist *l, const cl_serve_call *c, const cl_serve_task *t)
{
    Tensorflow__Serving__ModelSpec *ms = pl_alloc(l, sizeof *ms);
    Google__Protobuf__Int64Value *v = pl_alloc(l, sizeof *v);
    if (!ms || !v)
        return NULL;
    tensorflow__serving__model_spec__init(ms);
    google__protobuf__int64_value__init(v);
    v->value = cl_serve_model_version(c->model);
    ms->name = (char *)cl_serve_model_name(c->model);
    ms->signature_name = (char *)t->sig.sig.name;
    ms->version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
    ms->version = v;
    return ms;
}

static Tensorflow__Serving__ClassificationResult *class_pb(plist *l, cl_serve_call *c, const cl_serve_task *t)
{
    class_table ct;
    if (class_table_make(c, t, &ct) != CL_SC_OK)
        return NULL;
    size_t n = c->infer->n_examples, k = (size_t)ct.k;
    Tensorflow__Serving__ClassificationResult *r = pl_alloc(l, sizeof *r);
    Tensorflow__Serving__Classifications *cls = pl_alloc(l, n * sizeof *cls);
    Tensorflow__Serving__Classifications **clsp = pl_alloc(l, n * sizeof *clsp);
    Tensorflow__Serving__Class *cl = pl_alloc(l, n * k * sizeof *cl);
    Tensorflow__Serving__Class **clp = pl_alloc(l, n * k * sizeof *clp);
    char *labels = ct.classes && !t->sig.n_labels ? pl_alloc(l, n * k * 24) : NULL;
    if (!r || !cls || !clsp || !cl || !clp || (ct.classes && !t->sig.n_labels && !labels)) {
        cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory writing the response");
        return NULL;
    }
    tensorflow__serving__classification_result__init(r);
    for (size_t i = 0; i < n; i++) {
        tensorflow__serving__classifications__init(&cls[i]);
        cls[i].n_classes = k;
        cls[i].classes = &clp[i * k];
        for (size_t j = 0; j < k; j++) {
            size_t cell = i * k + j;
            tensorflow__serving__class__init(&cl[cell]);
            cl[cell].label = (char *)cell_label(&ct, cell, j, labels ? labels + cell * 24 : NULL);
            cl[cell].score = cell_score(&ct, cell);
            clp[cell] = &cl[cell];
        }
        clsp[i] = &cls[i];
    }
    r->n_classifications = n;
    r->classifications = clsp;
    return r;
}

static Tensorflow__Serving__RegressionResult *regress_pb(plist *l, cl_serve_call *c, const cl_serve_task *t)
{
    const float *v;
    if (regress_values(c, t, &v) != CL_SC_OK)
        return NULL;
    size_t n = c->infer->n_examples;
    Tensorflow__Serving__RegressionResult *r = pl_alloc(l, sizeof *r);
    Tensorflow__Serving__Regression *rg = pl_alloc(l, n * sizeof *rg);
    Tensorflow__Serving__Regression **rgp = pl_alloc(l, n * sizeof *rgp);
    if (!r || !rg || !rgp) {
        cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory writing the response");
        return NULL;
    }
    tensorflow__serving__regression_result__init(r);
    for (size_t i = 0; i < n; i++) {
        tensorflow__serving__regression__init(&rg[i]);
        rg[i].value = v[i];
        rgp[i] = &rg[i];
    }
    r->n_regressions = n;
    r->regressions = rgp;
    return r;
}

static uint8_t *pack(const ProtobufCMessage *m, size_t *len)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *buf = malloc(n ? n : 1);
    if (buf)
        *len = protobuf_c_message_pack(m, buf);
    return buf;
}

cl_serve_code cl_serve_pb_infer_response(cl_serve_call *c, uint8_t **out, size_t *out_len)
{
    plist l = {0};
    cl_serve_code code = CL_SC_OK;
    ProtobufCMessage *resp = NULL;
    Tensorflow__Serving__ClassificationResponse cr = TENSORFLOW__SERVING__CLASSIFICATION_RESPONSE__INIT;
    Tensorflow__Serving__RegressionResponse rr = TENSORFLOW__SERVING__REGRESSION_RESPONSE__INIT;
    Tensorflow__Serving__MultiInferenceResponse mr = TENSORFLOW__SERVING__MULTI_INFERENCE_RESPONSE__INIT;
    if (!c->infer)
        return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "not an inference call");
    const cl_serve_task *t0 = &c->infer->tasks[0];
    if (c->rpc == CL_RPC_CLASSIFY) {
        cr.model_spec = spec_pb(&l, c, t0);
        if (!(cr.result = class_pb(&l, c, t0)))
            code = c->st.code ? c->st.code : CL_SC_INTERNAL;
        resp = &cr.base;
    } else if (c->rpc == CL_RPC_REGRESS) {
        rr.model_spec = spec_pb(&l, c, t0);
        if (!(rr.result = regress_pb(&l, c, t0)))
            code = c->st.code ? c->st.code : CL_SC_INTERNAL;
        resp = &rr.base;
    } else {
        Tensorflow__Serving__InferenceResult *res = pl_alloc(&l, c->infer->n_tasks * sizeof *res);
        Tensorflow__Serving__InferenceResult **resp_p = pl_alloc(&l, c->infer->n_tasks * sizeof *resp_p);
        for (size_t i = 0; res && resp_p && code == CL_SC_OK && i < c->infer->n_tasks; i++) {
            const cl_serve_task *t = &c->infer->tasks[i];
            tensorflow__serving__inference_result__init(&res[i]);
            res[i].model_spec = spec_pb(&l, c, t);
            if (t->classify) {
                res[i].result_case = TENSORFLOW__SERVING__INFERENCE_RESULT__RESULT_CLASSIFICATION_RESULT;
                if (!(res[i].classification_result = class_pb(&l, c, t)))
                    code = c->st.code ? c->st.code : CL_SC_INTERNAL;
            } else {
                res[i].result_case = TENSORFLOW__SERVING__INFERENCE_RESULT__RESULT_REGRESSION_RESULT;
                if (!(res[i].regression_result = regress_pb(&l, c, t)))
                    code = c->st.code ? c->st.code : CL_SC_INTERNAL;
            }
            resp_p[i] = &res[i];
        }
        mr.n_results = c->infer->n_tasks;
        mr.results = resp_p;
        resp = &mr.base;
    }
    if (code == CL_SC_OK && (l.failed || !(*out = pack(resp, out_len))))
        code = cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory writing the response");
    pl_free(&l);
    return code;
}

/* ---------------------------------------------------------------- REST */

/* One JSON feature value (a number, a string, {"b64": ...} or a flat list of one of them) -> a
 * Feature: numbers that are all integers become an int64_list, other numbers a float_list, strings
 * a bytes_list (which no input takes, so it is only kept to be refused by name). */
static cl_serve_code json_feature(const cJSON *v, const char *where, const char *key, cl_serve_pb_budget *b,
                                  Tensorflow__Feature **out, cl_serve_status *st)
{
    Tensorflow__Feature *f = cl_serve_pb_budget_alloc(b, sizeof *f);
    if (!f)
        return CL_SC_RESOURCE_EXHAUSTED;
    tensorflow__feature__init(f);
    *out = f;
    bool list = cJSON_IsArray(v);
    size_t n = list ? (size_t)cJSON_GetArraySize(v) : 1;
    if (n > CL_SERVE_EXAMPLE_VALUES_MAX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: feature '%s' has %zu values, more than the %d allowed",
                               where, key, n, CL_SERVE_EXAMPLE_VALUES_MAX);
    bool all_int = true, numbers = true, strings = true;
    const cJSON *first = list ? v->child : v;
    for (const cJSON *e = first; e; e = list ? e->next : NULL) {
        bool num = cJSON_IsNumber(e);
        bool str = cJSON_IsString(e) || (cJSON_IsObject(e) && cJSON_GetObjectItemCaseSensitive(e, "b64"));
        numbers &= num;
        strings &= str;
        if (num && !(e->valuedouble == floor(e->valuedouble) && fabs(e->valuedouble) <= 9007199254740992.0))
            all_int = false;
        if (!list)
            break;
    }
    if (n && !numbers && !strings)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s: feature '%s' must be a number, a string, {\"b64\": "
                               "...} or a flat list of numbers or of strings", where, key);
    if (n && strings) {
        Tensorflow__BytesList *bl = cl_serve_pb_budget_alloc(b, sizeof *bl);
        ProtobufCBinaryData *vals = bl ? cl_serve_pb_budget_alloc(b, n * sizeof *vals) : NULL;
        if (!vals) {
            free(bl);
            return CL_SC_RESOURCE_EXHAUSTED;
        }
        tensorflow__bytes_list__init(bl);
        bl->n_value = n; /* empty values: the bytes themselves are never used */
        bl->value = vals;
        f->kind_case = TENSORFLOW__FEATURE__KIND_BYTES_LIST;
        f->bytes_list = bl;
        return CL_SC_OK; /* the bytes themselves are never used */
    }
    if (n && all_int) {
        Tensorflow__Int64List *il = cl_serve_pb_budget_alloc(b, sizeof *il);
        int64_t *vals = il ? cl_serve_pb_budget_alloc(b, n * sizeof *vals) : NULL;
        if (!vals) {
            free(il);
            return CL_SC_RESOURCE_EXHAUSTED;
        }
        tensorflow__int64_list__init(il);
        size_t i = 0;
        for (const cJSON *e = first; e && i < n; e = list ? e->next : NULL, i++)
            vals[i] = (int64_t)e->valuedouble;
        il->n_value = n;
        il->value = vals;
        f->kind_case = TENSORFLOW__FEATURE__KIND_INT64_LIST;
        f->int64_list = il;
        return CL_SC_OK;
    }
    Tensorflow__FloatList *fl = cl_serve_pb_budget_alloc(b, sizeof *fl);
    float *vals = fl ? cl_serve_pb_budget_alloc(b, (n ? n : 1) * sizeof *vals) : NULL;
    if (!vals) {
        free(fl);
        return CL_SC_RESOURCE_EXHAUSTED;
    }
    tensorflow__float_list__init(fl);
    size_t i = 0;
    for (const cJSON *e = n ? first : NULL; e && i < n; e = list ? e->next : NULL, i++)
        vals[i] = (float)e->valuedouble;
    fl->n_value = n;
    fl->value = vals;
    f->kind_case = TENSORFLOW__FEATURE__KIND_FLOAT_LIST;
    f->float_list = fl;
    return CL_SC_OK;
}

/* {feature: value, ...} -> Example. */
static cl_serve_code json_example(const cJSON *obj, const char *where, cl_serve_pb_budget *b, Tensorflow__Example **out,
                                  cl_serve_status *st)
{
    if (!cJSON_IsObject(obj))
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s must be an object of feature: value", where);
    size_t n = (size_t)cJSON_GetArraySize(obj);
    if (n > CL_SERVE_EXAMPLE_FEATURES_MAX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%s has %zu features, more than the %d allowed", where, n,
                               CL_SERVE_EXAMPLE_FEATURES_MAX);
    Tensorflow__Example *ex = cl_serve_pb_budget_alloc(b, sizeof *ex);
    Tensorflow__Features *fs = ex ? cl_serve_pb_budget_alloc(b, sizeof *fs) : NULL;
    Tensorflow__Features__FeatureEntry **ents = fs ? cl_serve_pb_budget_alloc(b, (n ? n : 1) * sizeof *ents) : NULL;
    if (!ents) {
        if (ex && fs) {
            tensorflow__example__init(ex);
            tensorflow__features__init(fs);
            ex->features = fs;
        } else if (ex) {
            tensorflow__example__init(ex);
        }
        *out = ex;
        return CL_SC_RESOURCE_EXHAUSTED;
    }
    tensorflow__example__init(ex);
    tensorflow__features__init(fs);
    ex->features = fs;
    fs->feature = ents;
    *out = ex;
    for (const cJSON *e = obj->child; e; e = e->next) {
        Tensorflow__Features__FeatureEntry *fe = cl_serve_pb_budget_alloc(b, sizeof *fe);
        size_t kl = strlen(e->string);
        char *key = fe ? cl_serve_pb_budget_alloc(b, kl + 1) : NULL;
        if (!key) {
            if (fe) {
                tensorflow__features__feature_entry__init(fe);
                fs->feature[fs->n_feature++] = fe;
            }
            return CL_SC_RESOURCE_EXHAUSTED;
        }
        tensorflow__features__feature_entry__init(fe);
        memcpy(key, e->string, kl + 1);
        fe->key = key;
        fs->feature[fs->n_feature++] = fe;
        cl_serve_code code = json_feature(e, where, key, b, &fe->value, st);
        if (code != CL_SC_OK)
            return code;
    }
    return CL_SC_OK;
}

cl_serve_code cl_serve_json_infer_parse(const char *body, size_t len, size_t max_bytes, cl_serve_call *c)
{
    cl_serve_status *st = &c->st;
    cJSON *root = cJSON_ParseWithLength(body, len);
    if (!root)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "JSON Parse error: the request body is not valid JSON");
    cl_serve_pb_budget b;
    cl_serve_pb_budget_init(&b, decode_limit(c));
    Tensorflow__Serving__Input *in = NULL;
    cl_serve_code code = CL_SC_OK;
    const char *method = c->rpc == CL_RPC_CLASSIFY ? CL_SERVE_METHOD_CLASSIFY : CL_SERVE_METHOD_REGRESS;
    if (!cJSON_IsObject(root)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request body must be a JSON object");
        goto out;
    }
    const cJSON *sn = cJSON_GetObjectItemCaseSensitive(root, "signature_name");
    if (sn && !cJSON_IsString(sn)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "\"signature_name\" must be a string");
        goto out;
    }
    if ((code = infer_alloc(c, 1)) != CL_SC_OK ||
        (code = task_resolve(c, sn ? sn->valuestring : NULL, method, false, &c->infer->tasks[0])) != CL_SC_OK)
        goto out;
    const cJSON *exs = cJSON_GetObjectItemCaseSensitive(root, "examples");
    const cJSON *ctx = cJSON_GetObjectItemCaseSensitive(root, "context");
    if (!cJSON_IsArray(exs)) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "\"examples\" must be a list of objects (feature: value)");
        goto out;
    }
    size_t n = (size_t)cJSON_GetArraySize(exs);
    if (n > CL_SERVE_EXAMPLES_MAX) {
        code = cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "%zu examples in one request, more than the %d allowed: "
                               "split the request", n, CL_SERVE_EXAMPLES_MAX);
        goto out;
    }
    Tensorflow__Serving__ExampleListWithContext *el = NULL;
    Tensorflow__Example **list = NULL;
    if (!(in = cl_serve_pb_budget_alloc(&b, sizeof *in)) || !(el = cl_serve_pb_budget_alloc(&b, sizeof *el)) ||
        !(list = cl_serve_pb_budget_alloc(&b, (n ? n : 1) * sizeof *list))) {
        if (in) {
            tensorflow__serving__input__init(in);
            if (el) {
                tensorflow__serving__example_list_with_context__init(el);
                in->kind_case = TENSORFLOW__SERVING__INPUT__KIND_EXAMPLE_LIST_WITH_CONTEXT;
                in->example_list_with_context = el;
            }
        }
        code = over_budget(c, &b);
        goto out;
    }
    tensorflow__serving__input__init(in);
    tensorflow__serving__example_list_with_context__init(el);
    in->kind_case = TENSORFLOW__SERVING__INPUT__KIND_EXAMPLE_LIST_WITH_CONTEXT;
    in->example_list_with_context = el;
    el->examples = list;
    if (ctx && (code = json_example(ctx, "\"context\"", &b, &el->context, st)) != CL_SC_OK)
        goto out;
    size_t i = 0;
    for (const cJSON *e = exs->child; e; e = e->next, i++) {
        char where[48];
        snprintf(where, sizeof where, "examples[%zu]", i);
        code = json_example(e, where, &b, &list[el->n_examples], st);
        if (list[el->n_examples])
            el->n_examples++;
        if (code != CL_SC_OK)
            goto out;
    }
    c->sig = c->infer->tasks[0].sig;
    code = cl_serve_examples_to_inputs(in, &c->sig, max_bytes, c, &c->infer->n_examples);
out:
    if (code == CL_SC_RESOURCE_EXHAUSTED && b.over)
        code = over_budget(c, &b);
    if (in)
        protobuf_c_message_free_unpacked(&in->base, &b.a);
    cJSON_Delete(root);
    return code;
}

static void put_float(cl_strbuf *b, float v)
{
    if (isnan(v))
        cl_strbuf_str(b, "NaN");
    else if (isinf(v))
        cl_strbuf_str(b, v > 0 ? "Infinity" : "-Infinity");
    else {
        char num[32];
        cl_strbuf_put(b, num, cl_json_float(num, sizeof num, v)); /* shortest round-trip, as Predict writes */
    }
}

cl_serve_code cl_serve_json_infer_response(cl_serve_call *c, char **out, size_t *out_len)
{
    if (!c->infer)
        return cl_serve_st_set(&c->st, CL_SC_INTERNAL, "not an inference call");
    const cl_serve_task *t = &c->infer->tasks[0];
    size_t n = c->infer->n_examples;
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{\"result\":[");
    if (t->classify) {
        class_table ct;
        cl_serve_code code = class_table_make(c, t, &ct);
        if (code != CL_SC_OK) {
            free(b.p); /* the response begun above */
            return code;
        }
        size_t k = (size_t)ct.k;
        for (size_t i = 0; i < n; i++) {
            cl_strbuf_str(&b, i ? ",[" : "[");
            for (size_t j = 0; j < k; j++) {
                char buf[24];
                size_t cell = i * k + j;
                cl_strbuf_str(&b, j ? ",[" : "[");
                cl_strbuf_json_string(&b, cell_label(&ct, cell, j, buf));
                cl_strbuf_str(&b, ",");
                put_float(&b, cell_score(&ct, cell));
                cl_strbuf_str(&b, "]");
            }
            cl_strbuf_str(&b, "]");
        }
    } else {
        const float *v;
        cl_serve_code code = regress_values(c, t, &v);
        if (code != CL_SC_OK)
            return code;
        for (size_t i = 0; i < n; i++) {
            if (i)
                cl_strbuf_str(&b, ",");
            put_float(&b, v[i]);
        }
    }
    cl_strbuf_str(&b, "]}");
    if (!(*out = cl_strbuf_take(&b, out_len)))
        return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory writing the response");
    return CL_SC_OK;
}
