/* signatures.c — signatures.json, the named signatures of one model version (cl_serve_sigset): parsed
 * with the strict JSON reader (include/cloister/json.h) and checked against the model's own tensors,
 * so that a version whose declarations do not fit its model fails to load (docs/serve.md
 * "Signatures"). The file crosses a trust boundary (it sits beside the model, outside the sealed file):
 * every count and length is bounded and every refusal names the key. Immutable once parsed; any
 * thread may read a sigset. */
#include "serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/json.h"

typedef struct sig_store {
    cl_serve_tensor_spec *inputs, *outputs;
    size_t *input_of, *output_of;
    const char **input_tensor, **output_tensor;
    char **strings; /* every string this signature owns */
    size_t n_strings;
    const char **labels;
} sig_store;

struct cl_serve_sigset {
    cl_serve_sigdef *defs;
    sig_store *store;
    size_t n;
};

void cl_serve_sigset_free(cl_serve_sigset *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < s->n; i++) {
        sig_store *st = &s->store[i];
        for (size_t k = 0; k < st->n_strings; k++)
            free(st->strings[k]);
        free(st->strings);
        free(st->inputs);
        free(st->outputs);
        free(st->input_of);
        free(st->output_of);
        free(st->input_tensor);
        free(st->output_tensor);
        free(st->labels);
    }
    free(s->defs);
    free(s->store);
    free(s);
}

const cl_serve_sigdef *cl_serve_sigset_defs(const cl_serve_sigset *s, size_t *n)
{
    *n = s ? s->n : 0;
    return s ? s->defs : NULL;
}

/* A copy of str owned by the signature (its strings array has room: counted beforehand). */
static const char *own(sig_store *st, const char *str)
{
    char *d = strdup(str);
    if (d)
        st->strings[st->n_strings++] = d;
    return d;
}

/* A name: 1..CL_SERVE_SIG_NAME_MAX bytes, no control characters (it is shown in metadata and errors). */
static int check_name(const char *what, const char *path, const char *s, cl_err *err)
{
    size_t n = strlen(s);
    if (n == 0 || n > CL_SERVE_SIG_NAME_MAX)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s: a name of 1 to %d bytes is needed, not %zu", what, path,
                          CL_SERVE_SIG_NAME_MAX, n);
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20 || s[i] == 0x7f)
            return cl_err_set(err, CL_E_FORMAT, "%s: %s: control character 0x%02x in the name", what, path,
                              (unsigned char)s[i]);
    return 0;
}

/* Maps the aliases of `obj` (alias -> tensor name; NULL: every tensor under its own name) onto the
 * model's tensors `specs`. */
static int map_tensors(const json_t *obj, const char *what, const char *path, const cl_serve_tensor_spec *specs,
                       size_t n_specs, bool inputs, sig_store *st, size_t *n_out, cl_err *err)
{
    size_t n = obj ? json_object_size(obj) : n_specs;
    if (obj && !json_is_object(obj))
        return cl_err_set(err, CL_E_FORMAT, "%s: %s: an object of alias: tensor name is needed", what, path);
    if (n > CL_SERVE_SIG_IO_MAX)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s: %zu entries, at most %d", what, path, n, CL_SERVE_SIG_IO_MAX);
    if (n == 0)
        return cl_err_set(err, CL_E_FORMAT, "%s: %s: at least one %s is needed", what, path,
                          inputs ? "input" : "output");
    cl_serve_tensor_spec *sp = calloc(n, sizeof *sp);
    size_t *of = calloc(n, sizeof *of);
    const char **tn = calloc(n, sizeof *tn);
    if (inputs) {
        st->inputs = sp, st->input_of = of, st->input_tensor = tn;
    } else {
        st->outputs = sp, st->output_of = of, st->output_tensor = tn;
    }
    if (!sp || !of || !tn)
        return cl_err_nomem(err);
    size_t k = 0;
    if (!obj) {
        for (; k < n; k++) {
            sp[k] = specs[k];
            of[k] = k;
            tn[k] = specs[k].name;
        }
        *n_out = n;
        return 0;
    }
    const char *alias;
    json_t *v;
    json_object_foreach((json_t *)obj, alias, v) {
        char p[400];
        snprintf(p, sizeof p, "%s.%s", path, alias);
        if (check_name(what, p, alias, err) != 0)
            return -1;
        const char *tensor;
        if (cl_json_get_str(v, what, p, 4096, &tensor, err) != 0)
            return -1;
        size_t t = 0;
        while (t < n_specs && strcmp(specs[t].name, tensor) != 0)
            t++;
        if (t == n_specs) {
            char names[512] = "";
            for (size_t i = 0; i < n_specs && strlen(names) < sizeof names - 140; i++)
                snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%.120s'", i ? ", " : "",
                         specs[i].name);
            return cl_err_set(err, CL_E_INVALID, "%s: %s: '%s' is not an %s of the model (its %ss: %s)", what, p, tensor,
                              inputs ? "input" : "output", inputs ? "input" : "output", names);
        }
        if (inputs)
            for (size_t j = 0; j < k; j++)
                if (of[j] == t)
                    return cl_err_set(err, CL_E_INVALID, "%s: %s: the model input '%s' already has the alias '%s' "
                                      "(each input takes one)", what, p, tensor, sp[j].name);
        sp[k] = specs[t];
        if (!(sp[k].name = own(st, alias)))
            return cl_err_nomem(err);
        of[k] = t;
        tn[k] = specs[t].name;
        k++;
    }
    if (inputs && k != n_specs) {
        for (size_t t = 0; t < n_specs; t++) {
            size_t j = 0;
            while (j < k && of[j] != t)
                j++;
            if (j == k)
                return cl_err_set(err, CL_E_INVALID, "%s: %s: the model input '%s' has no alias (every input of the "
                                  "model needs one: the model cannot run without it)", what, path, specs[t].name);
        }
    }
    *n_out = k;
    return 0;
}

static const cl_serve_tensor_spec *find_output(const cl_serve_signature *sig, const char *alias)
{
    for (size_t k = 0; k < sig->n_outputs; k++)
        if (strcmp(sig->outputs[k].name, alias) == 0)
            return &sig->outputs[k];
    return NULL;
}

/* The rules of a classification or regression signature (docs/serve.md "Classify and Regress"). */
static int check_method(const cl_serve_sigdef *d, const char *what, const char *path, cl_err *err)
{
    const cl_serve_signature *sig = &d->sig;
    bool classify = strcmp(sig->method_name, CL_SERVE_METHOD_CLASSIFY) == 0;
    for (size_t k = 0; k < sig->n_inputs; k++) {
        const cl_serve_tensor_spec *ts = &sig->inputs[k];
        cl_serve_dtype dt = ts->dtype;
        if (dt != CL_SERVE_DT_FLOAT && dt != CL_SERVE_DT_DOUBLE && dt != CL_SERVE_DT_INT32 && dt != CL_SERVE_DT_INT64)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.inputs.%s: the input is %s; examples can feed DT_FLOAT, "
                              "DT_DOUBLE, DT_INT32 and DT_INT64 inputs", what, path, ts->name,
                              cl_serve_dtype_name(dt));
        if (ts->image)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.inputs.%s: an input with image preprocessing cannot be fed "
                              "from examples", what, path, ts->name);
        if (ts->ndim < 1)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.inputs.%s: the input needs a known rank of at least 1 (a "
                              "batch dimension, one row per example)", what, path, ts->name);
        int64_t per = 1;
        for (int i = 1; i < ts->ndim; i++) {
            if (ts->dims[i] < 0)
                return cl_err_set(err, CL_E_INVALID, "%s: %s.inputs.%s: dimension %d of the input is dynamic; an "
                                  "example feeds a fixed number of values per row", what, path, ts->name, i);
            per *= ts->dims[i] ? ts->dims[i] : 1;
            if (per > CL_SERVE_EXAMPLE_VALUES_MAX)
                return cl_err_set(err, CL_E_INVALID, "%s: %s.inputs.%s: more than %d values per example", what, path,
                                  ts->name, CL_SERVE_EXAMPLE_VALUES_MAX);
        }
    }
    if (classify) {
        const cl_serve_tensor_spec *scores = find_output(sig, "scores"), *classes = find_output(sig, "classes");
        if (!scores && !classes)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs: a classification signature needs a \"scores\" or a "
                              "\"classes\" output (or both)", what, path);
        for (size_t k = 0; k < sig->n_outputs; k++)
            if (strcmp(sig->outputs[k].name, "scores") != 0 && strcmp(sig->outputs[k].name, "classes") != 0)
                return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs.%s: a classification signature has only the "
                                  "outputs \"classes\" and \"scores\"", what, path, sig->outputs[k].name);
        if (scores && (scores->dtype != CL_SERVE_DT_FLOAT || scores->ndim < 1 || scores->ndim > 2))
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs.scores: the scores must be DT_FLOAT of shape [batch] "
                              "or [batch, classes]", what, path);
        if (classes && ((classes->dtype != CL_SERVE_DT_INT64 && classes->dtype != CL_SERVE_DT_INT32) ||
                        classes->ndim < 1 || classes->ndim > 2))
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs.classes: the classes must be DT_INT64 or DT_INT32 "
                              "class ids of shape [batch] or [batch, classes] (the models served here have no string "
                              "outputs: give the names in \"labels\")", what, path);
        int64_t ks = scores ? (scores->ndim == 2 ? scores->dims[1] : 1) : -1;
        int64_t kc = classes ? (classes->ndim == 2 ? classes->dims[1] : 1) : -1;
        if (ks >= 0 && kc >= 0 && ks != kc)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs: the scores have %lld columns but the classes %lld",
                              what, path, (long long)ks, (long long)kc);
        if (d->n_labels && !classes && ks >= 0 && (size_t)ks != d->n_labels)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.labels: %zu labels for %lld score columns", what, path,
                              d->n_labels, (long long)ks);
    } else {
        const cl_serve_tensor_spec *o = find_output(sig, "outputs");
        if (!o || sig->n_outputs != 1)
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs: a regression signature has exactly one output, "
                              "\"outputs\"", what, path);
        if (o->dtype != CL_SERVE_DT_FLOAT || o->ndim < 1 || o->ndim > 2 || (o->ndim == 2 && o->dims[1] > 1))
            return cl_err_set(err, CL_E_INVALID, "%s: %s.outputs.outputs: a regression output must be DT_FLOAT of shape "
                              "[batch] or [batch, 1]", what, path);
    }
    return 0;
}

static int parse_one(const char *name, const json_t *obj, const char *what, const cl_serve_signature *model,
                     cl_serve_sigdef *d, sig_store *st, cl_err *err)
{
    char path[200];
    snprintf(path, sizeof path, "signatures.%s", name);
    if (check_name(what, "signatures", name, err) != 0)
        return -1;
    if (!json_is_object(obj))
        return cl_err_set(err, CL_E_FORMAT, "%s: %s: an object is needed", what, path);
    static const char *const known[] = {"method_name", "inputs", "outputs", "labels", NULL};
    if (cl_json_check_keys(obj, what, path, known, err) != 0)
        return -1;
    const json_t *labels = json_object_get(obj, "labels");
    size_t n_labels = labels ? json_array_size(labels) : 0;
    if (labels && (!json_is_array(labels) || n_labels == 0 || n_labels > CL_SERVE_SIG_LABELS_MAX))
        return cl_err_set(err, CL_E_FORMAT, "%s: %s.labels: a list of 1 to %d strings is needed", what, path,
                          CL_SERVE_SIG_LABELS_MAX);
    size_t n_str = 2 + json_object_size(json_object_get(obj, "inputs")) +
                   json_object_size(json_object_get(obj, "outputs")) + n_labels;
    if (!(st->strings = calloc(n_str, sizeof *st->strings)))
        return cl_err_nomem(err);
    const char *method = CL_SERVE_METHOD_PREDICT;
    const json_t *m = json_object_get(obj, "method_name");
    if (m) {
        char p[220];
        snprintf(p, sizeof p, "%s.method_name", path);
        if (cl_json_get_str(m, what, p, 64, &method, err) != 0)
            return -1;
        if (strcmp(method, CL_SERVE_METHOD_PREDICT) != 0 && strcmp(method, CL_SERVE_METHOD_CLASSIFY) != 0 &&
            strcmp(method, CL_SERVE_METHOD_REGRESS) != 0)
            return cl_err_set(err, CL_E_FORMAT, "%s: %s: \"%s\" is not a method (use \"%s\", \"%s\" or \"%s\")", what,
                              p, method, CL_SERVE_METHOD_PREDICT, CL_SERVE_METHOD_CLASSIFY, CL_SERVE_METHOD_REGRESS);
    }
    if (!(d->sig.name = own(st, name)) || !(d->sig.method_name = own(st, method)))
        return cl_err_nomem(err);
    char p[220];
    snprintf(p, sizeof p, "%s.inputs", path);
    if (map_tensors(json_object_get(obj, "inputs"), what, p, model->inputs, model->n_inputs, true, st,
                    &d->sig.n_inputs, err) != 0)
        return -1;
    snprintf(p, sizeof p, "%s.outputs", path);
    if (map_tensors(json_object_get(obj, "outputs"), what, p, model->outputs, model->n_outputs, false, st,
                    &d->sig.n_outputs, err) != 0)
        return -1;
    d->sig.inputs = st->inputs;
    d->sig.outputs = st->outputs;
    d->input_of = st->input_of;
    d->output_of = st->output_of;
    d->input_tensor = st->input_tensor;
    d->output_tensor = st->output_tensor;
    if (labels) {
        if (strcmp(method, CL_SERVE_METHOD_CLASSIFY) != 0)
            return cl_err_set(err, CL_E_FORMAT, "%s: %s.labels: only a classification signature (method_name \"%s\") "
                              "has labels", what, path, CL_SERVE_METHOD_CLASSIFY);
        if (!(st->labels = calloc(n_labels, sizeof *st->labels)))
            return cl_err_nomem(err);
        for (size_t i = 0; i < n_labels; i++) {
            snprintf(p, sizeof p, "%s.labels[%zu]", path, i);
            const char *l;
            if (cl_json_get_str(json_array_get(labels, i), what, p, CL_SERVE_SIG_NAME_MAX, &l, err) != 0 ||
                check_name(what, p, l, err) != 0)
                return -1;
            if (!(st->labels[i] = own(st, l)))
                return cl_err_nomem(err);
        }
        d->labels = st->labels;
        d->n_labels = n_labels;
    }
    if (strcmp(method, CL_SERVE_METHOD_PREDICT) != 0)
        return check_method(d, what, path, err);
    return 0;
}

int cl_serve_sigset_parse(const char *text, size_t len, const char *what, const cl_serve_signature *model,
                          cl_serve_sigset **out, cl_err *err)
{
    *out = NULL;
    if (len > CL_SERVE_SIGS_FILE_MAX)
        return cl_err_set(err, CL_E_FORMAT, "%s: %zu bytes, more than the %u allowed", what, len,
                          CL_SERVE_SIGS_FILE_MAX);
    json_t *root = cl_json_parse(text, len, what, err);
    if (!root)
        return -1;
    int rc = -1;
    cl_serve_sigset *s = NULL;
    static const char *const known[] = {"signatures", NULL};
    if (cl_json_check_keys(root, what, "", known, err) != 0)
        goto out;
    const json_t *sigs = json_object_get(root, "signatures");
    size_t n = json_object_size(sigs);
    if (!json_is_object(sigs) || n == 0 || n > CL_SERVE_SIGS_MAX) {
        cl_err_set(err, CL_E_FORMAT, "%s: signatures: an object of 1 to %d signatures (name: declaration) is needed",
                   what, CL_SERVE_SIGS_MAX);
        goto out;
    }
    if (!(s = calloc(1, sizeof *s)) || !(s->defs = calloc(n, sizeof *s->defs)) ||
        !(s->store = calloc(n, sizeof *s->store))) {
        cl_err_nomem(err);
        goto out;
    }
    const char *name;
    json_t *v;
    json_object_foreach((json_t *)sigs, name, v) {
        size_t i = s->n++;
        if (parse_one(name, v, what, model, &s->defs[i], &s->store[i], err) != 0)
            goto out;
    }
    rc = 0;
    *out = s;
    s = NULL;
out:
    cl_serve_sigset_free(s);
    json_decref(root);
    return rc;
}

int cl_serve_sigset_load(const char *path, const cl_serve_signature *model, cl_serve_sigset **out, cl_err *err)
{
    *out = NULL;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (cl_file_read(path, CL_SERVE_SIGS_FILE_MAX, &buf, &len, err) != 0)
        return -1;
    int rc = cl_serve_sigset_parse((const char *)buf, len, path, model, out, err);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------- the Predict path */

cl_serve_code cl_serve_sig_resolve(cl_serve_call *c, const char *name)
{
    if (!cl_serve_model_sig_find(c->model, name, &c->sig))
        return cl_serve_st_set(&c->st, CL_SC_FAILED_PRECONDITION, "Serving signature key \"%s\" not found.",
                               name && *name ? name : CL_SERVE_DEFAULT_SIGNATURE);
    return CL_SC_OK;
}

cl_serve_code cl_serve_sig_inputs_to_model(cl_serve_call *c)
{
    const cl_serve_sigdef *d = &c->sig;
    if (!d->input_of)
        return CL_SC_OK; /* the identity view: aliases are the tensor names */
    for (size_t i = 0; i < c->n_inputs; i++) {
        size_t k = 0;
        while (k < d->sig.n_inputs && strcmp(d->sig.inputs[k].name, c->inputs[i].name) != 0)
            k++;
        if (k == d->sig.n_inputs)
            return cl_serve_st_set(&c->st, CL_SC_INVALID_ARGUMENT, "input tensor alias not found in signature: %s",
                                   c->inputs[i].name);
        char *n = strdup(d->input_tensor[k]);
        if (!n)
            return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
        free(c->inputs[i].name);
        c->inputs[i].name = n;
    }
    return CL_SC_OK;
}

static const cl_serve_tensor *find_tensor(const cl_serve_tensor *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].name && strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

const cl_serve_tensor *cl_serve_sig_output(const cl_serve_call *c, const cl_serve_sigdef *d, const char *alias)
{
    for (size_t k = 0; k < d->sig.n_outputs; k++)
        if (strcmp(d->sig.outputs[k].name, alias) == 0)
            return find_tensor(c->outputs, c->n_outputs, d->output_tensor ? d->output_tensor[k] : alias);
    return NULL;
}

cl_serve_code cl_serve_sig_outputs_to_view(cl_serve_call *c)
{
    const cl_serve_sigdef *d = &c->sig;
    if (!d->output_of)
        return CL_SC_OK;
    size_t n = d->sig.n_outputs;
    cl_serve_tensor *v = calloc(n, sizeof *v);
    if (!v)
        return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
    for (size_t k = 0; k < n; k++) {
        cl_serve_tensor *src = (cl_serve_tensor *)find_tensor(c->outputs, c->n_outputs, d->output_tensor[k]);
        const cl_serve_tensor *moved = NULL;
        for (size_t j = 0; !src && j < k; j++)
            if (strcmp(d->output_tensor[j], d->output_tensor[k]) == 0)
                moved = &v[j]; /* a second alias of one output: a copy */
        char *name = strdup(d->sig.outputs[k].name);
        if (!name || (!src && !moved)) {
            free(name);
            cl_serve_tensors_free(v, n);
            return !name ? cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory")
                         : cl_serve_st_set(&c->st, CL_SC_INTERNAL, "the model did not produce its output '%s'",
                                           d->output_tensor[k]);
        }
        if (src) {
            v[k] = *src;
            free(src->name);
            memset(src, 0, sizeof *src); /* taken over */
        } else {
            v[k] = *moved;
            if (!(v[k].data = malloc(moved->nbytes ? moved->nbytes : 1))) {
                free(name);
                v[k].name = NULL;
                cl_serve_tensors_free(v, n);
                return cl_serve_st_set(&c->st, CL_SC_RESOURCE_EXHAUSTED, "out of memory");
            }
            memcpy(v[k].data, moved->data, moved->nbytes);
        }
        v[k].name = name;
    }
    cl_serve_tensors_free(c->outputs, c->n_outputs);
    c->outputs = v;
    c->n_outputs = n;
    return CL_SC_OK;
}
