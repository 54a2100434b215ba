/* registry.c — the served models: cl_serve_registry (name/version -> loaded backend, "latest"
 * policy; version labels) and cl_serve_model (a refcounted loaded version that a request holds while it runs),
 * including the check of request inputs against a model's signature before the backend runs (image
 * inputs are decoded first, by imagein.c).
 * Thread-safe: one mutex guards the table; the refcount is atomic, so a version replaced or
 * removed while requests run on it is destroyed by whichever request finishes last. */
#include "serve_int.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cl_serve_model {
    atomic_int refs;
    char *name;
    int64_t version;
    cl_serve_backend backend;
    /* what the backend costs the calling thread: a moving average of sampled runs (CPU time), and
     * the count of successful runs */
    atomic_ullong run_ns_avg;
    atomic_uint runs;
};

typedef struct entry {
    cl_serve_model *m;
} entry;

/* A version not loaded yet that the repository keeps trying (GetModelStatus shows it as LOADING). */
typedef struct loading_entry {
    char *name;
    cl_serve_version_status st;
} loading_entry;

/* A version label of a model. */
typedef struct label_entry {
    char *name, *label;
    int64_t version;
} label_entry;

struct cl_serve_registry {
    pthread_mutex_t mu;
    entry *v;
    size_t n, cap;
    loading_entry *loading;
    size_t n_loading;
    label_entry *labels;
    size_t n_labels;
};

/* Drops the loading notes of `name` (every version when version is 0). Called with mu held. */
static void drop_loading(cl_serve_registry *r, const char *name, int64_t version)
{
    size_t k = 0;
    for (size_t i = 0; i < r->n_loading; i++) {
        loading_entry *e = &r->loading[i];
        if (strcmp(e->name, name) == 0 && (version == 0 || e->st.version == version))
            free(e->name);
        else
            r->loading[k++] = *e;
    }
    r->n_loading = k;
}

static void model_unref(cl_serve_model *m)
{
    if (!m)
        return;
    int refs = atomic_fetch_sub(&m->refs, 1);
    CL_ASSERT(refs >= 1); /* a release without a matching hold */
    if (refs != 1)
        return;
    if (m->backend.destroy)
        m->backend.destroy(m->backend.ctx);
    free(m->name);
    free(m);
}

cl_serve_registry *cl_serve_registry_new(cl_err *err)
{
    cl_serve_json_init(); /* a serving process starts here, before its threads */
    cl_serve_registry *r = calloc(1, sizeof *r);
    if (!r) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&r->mu, NULL);
    return r;
}

void cl_serve_registry_free(cl_serve_registry *r)
{
    if (!r)
        return;
    for (size_t i = 0; i < r->n; i++)
        model_unref(r->v[i].m);
    free(r->v);
    for (size_t i = 0; i < r->n_loading; i++)
        free(r->loading[i].name);
    free(r->loading);
    for (size_t i = 0; i < r->n_labels; i++) {
        free(r->labels[i].name);
        free(r->labels[i].label);
    }
    free(r->labels);
    pthread_mutex_destroy(&r->mu);
    free(r);
}

int cl_serve_registry_add(cl_serve_registry *r, const char *name, int64_t version, const cl_serve_backend *b,
                          cl_err *err)
{
    if (!name || !*name || version <= 0 || !b || !b->signature || !b->run)
        return cl_err_set(err, CL_E_INVALID, "a model needs a name, a positive version, a signature and run()");
    const cl_serve_signature *sig = b->signature;
    for (size_t i = 0; i < sig->n_inputs + sig->n_outputs; i++) {
        const cl_serve_tensor_spec *ts = i < sig->n_inputs ? &sig->inputs[i] : &sig->outputs[i - sig->n_inputs];
        if (!ts->name || !cl_serve_dtype_size(ts->dtype) || ts->ndim < -1 || ts->ndim > CL_SERVE_MAX_DIMS)
            return cl_err_set(err, CL_E_INVALID, "model '%s': signature tensor %zu has no name, an unsupported "
                              "dtype or an unsupported rank", name, i);
        if (ts->image && i >= sig->n_inputs)
            return cl_err_set(err, CL_E_INVALID, "model '%s': output '%s' declares image preprocessing", name,
                              ts->name);
        if (ts->image && cl_serve_spec_check_image(ts, ts->image, err) != 0)
            return cl_err_prefix(err, "model '%s'", name);
    }
    cl_serve_model *m = calloc(1, sizeof *m);
    if (!m || !(m->name = strdup(name))) {
        free(m);
        return cl_err_nomem(err);
    }
    atomic_init(&m->refs, 1);
    m->version = version;
    m->backend = *b;
    cl_serve_model *old = NULL;
    pthread_mutex_lock(&r->mu);
    size_t i = 0;
    for (; i < r->n; i++)
        if (r->v[i].m->version == version && strcmp(r->v[i].m->name, name) == 0)
            break;
    if (i < r->n) {
        old = r->v[i].m;
        r->v[i].m = m;
    } else {
        if (r->n == r->cap) {
            size_t cap = r->cap ? 2 * r->cap : 8;
            entry *nv = realloc(r->v, cap * sizeof *nv);
            if (!nv) {
                pthread_mutex_unlock(&r->mu);
                m->backend.destroy = NULL; /* the caller keeps the backend */
                model_unref(m);
                return cl_err_nomem(err);
            }
            r->v = nv;
            r->cap = cap;
        }
        r->v[r->n++].m = m;
    }
    drop_loading(r, name, version);
    pthread_mutex_unlock(&r->mu);
    model_unref(old);
    return 0;
}

int cl_serve_registry_remove(cl_serve_registry *r, const char *name, int64_t version)
{
    cl_serve_model *old = NULL;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        if (r->v[i].m->version == version && strcmp(r->v[i].m->name, name) == 0) {
            old = r->v[i].m;
            r->v[i] = r->v[--r->n];
            break;
        }
    }
    pthread_mutex_unlock(&r->mu);
    model_unref(old);
    return old ? 0 : -1;
}

cl_serve_model *cl_serve_registry_get(cl_serve_registry *r, const char *name, int64_t version, cl_err *err)
{
    cl_serve_model *best = NULL;
    bool known = false;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        cl_serve_model *m = r->v[i].m;
        if (strcmp(m->name, name) != 0)
            continue;
        known = true;
        if (version > 0 ? m->version == version : (!best || m->version > best->version))
            best = m;
    }
    if (best) {
        int refs = atomic_fetch_add(&best->refs, 1);
        CL_ASSERT(refs >= 1); /* a version in the table holds the table's own reference */
    }
    pthread_mutex_unlock(&r->mu);
    if (!best) {
        if (known)
            cl_err_set(err, CL_E_INVALID, "Servable not found for request: Specific(%s, %lld)", name,
                       (long long)version);
        else
            cl_err_set(err, CL_E_INVALID, "Servable not found for request: Latest(%s)", name);
    }
    return best;
}

size_t cl_serve_registry_versions(cl_serve_registry *r, const char *name, int64_t *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].m->name, name) != 0)
            continue;
        int64_t v = r->v[i].m->version;
        /* insertion into out[], highest first */
        size_t k = n < max ? n : max;
        size_t j = k;
        while (j > 0 && out[j - 1] < v) {
            if (j < max)
                out[j] = out[j - 1];
            j--;
        }
        if (j < max)
            out[j] = v;
        n++;
    }
    pthread_mutex_unlock(&r->mu);
    return n;
}

int cl_serve_registry_set_loading(cl_serve_registry *r, const char *name, const cl_serve_version_status *loading,
                                  size_t n, cl_err *err)
{
    pthread_mutex_lock(&r->mu);
    drop_loading(r, name, 0);
    int rc = 0;
    if (n) {
        loading_entry *grown = realloc(r->loading, (r->n_loading + n) * sizeof *grown);
        if (grown)
            r->loading = grown;
        for (size_t i = 0; grown && i < n; i++) {
            char *copy = strdup(name);
            if (!copy) {
                grown = NULL;
                break;
            }
            loading_entry *e = &r->loading[r->n_loading++];
            e->name = copy;
            e->st = loading[i];
            e->st.available = false;
        }
        if (!grown)
            rc = cl_err_nomem(err);
    }
    pthread_mutex_unlock(&r->mu);
    return rc;
}

int cl_serve_registry_set_labels(cl_serve_registry *r, const char *name, const char *const *labels,
                                 const int64_t *versions, size_t n, cl_err *err)
{
    label_entry *add = calloc(n ? n : 1, sizeof *add);
    if (!add)
        return cl_err_nomem(err);
    for (size_t i = 0; i < n; i++) {
        add[i].name = strdup(name);
        add[i].label = strdup(labels[i]);
        add[i].version = versions[i];
        if (!add[i].name || !add[i].label) {
            for (size_t j = 0; j <= i; j++) {
                free(add[j].name);
                free(add[j].label);
            }
            free(add);
            return cl_err_nomem(err);
        }
    }
    pthread_mutex_lock(&r->mu);
    size_t k = 0;
    for (size_t i = 0; i < r->n_labels; i++) {
        if (strcmp(r->labels[i].name, name) == 0) {
            free(r->labels[i].name);
            free(r->labels[i].label);
        } else {
            r->labels[k++] = r->labels[i];
        }
    }
    r->n_labels = k;
    int rc = 0;
    if (n) {
        label_entry *grown = realloc(r->labels, (r->n_labels + n) * sizeof *grown);
        if (grown) {
            r->labels = grown;
            memcpy(r->labels + r->n_labels, add, n * sizeof *add);
            r->n_labels += n;
        } else {
            for (size_t j = 0; j < n; j++) {
                free(add[j].name);
                free(add[j].label);
            }
            rc = cl_err_nomem(err);
        }
    }
    pthread_mutex_unlock(&r->mu);
    free(add);
    return rc;
}

int cl_serve_registry_label(cl_serve_registry *r, const char *name, const char *label, int64_t *version,
                            cl_err *err)
{
    int rc = -1;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n_labels && rc != 0; i++) {
        if (strcmp(r->labels[i].name, name) == 0 && strcmp(r->labels[i].label, label) == 0) {
            *version = r->labels[i].version;
            rc = 0;
        }
    }
    pthread_mutex_unlock(&r->mu);
    if (rc != 0)
        cl_err_set(err, CL_E_INVALID, "Unrecognized servable version label: %s", label);
    return rc;
}

/* Inserts st into out[0..max) (highest version first, *n entries so far). */
static void status_insert(cl_serve_version_status *out, size_t max, size_t *n, const cl_serve_version_status *st)
{
    size_t k = *n < max ? *n : max, j = k;
    while (j > 0 && out[j - 1].version < st->version) {
        if (j < max)
            out[j] = out[j - 1];
        j--;
    }
    if (j < max)
        out[j] = *st;
    (*n)++;
}

size_t cl_serve_registry_status(cl_serve_registry *r, const char *name, cl_serve_version_status *out, size_t max)
{
    size_t n = 0;
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++) {
        if (strcmp(r->v[i].m->name, name) != 0)
            continue;
        cl_serve_version_status st = {.version = r->v[i].m->version, .available = true, .code = CL_SC_OK};
        status_insert(out, max, &n, &st);
    }
    for (size_t i = 0; i < r->n_loading; i++)
        if (strcmp(r->loading[i].name, name) == 0)
            status_insert(out, max, &n, &r->loading[i].st);
    pthread_mutex_unlock(&r->mu);
    return n;
}

void cl_serve_registry_foreach(cl_serve_registry *r, void (*fn)(void *arg, const char *name, int64_t version),
                               void *arg)
{
    pthread_mutex_lock(&r->mu);
    for (size_t i = 0; i < r->n; i++)
        fn(arg, r->v[i].m->name, r->v[i].m->version);
    pthread_mutex_unlock(&r->mu);
}

const char *cl_serve_model_name(const cl_serve_model *m) { return m->name; }
int64_t cl_serve_model_version(const cl_serve_model *m) { return m->version; }
const cl_serve_signature *cl_serve_model_signature(const cl_serve_model *m) { return m->backend.signature; }
void cl_serve_model_release(cl_serve_model *m) { model_unref(m); }

size_t cl_serve_model_sig_count(const cl_serve_model *m)
{
    return m->backend.n_sigdefs ? m->backend.n_sigdefs : 1;
}

void cl_serve_model_sig_at(const cl_serve_model *m, size_t i, cl_serve_sigdef *out)
{
    if (m->backend.n_sigdefs) {
        *out = m->backend.sigdefs[i < m->backend.n_sigdefs ? i : 0];
        return;
    }
    *out = (cl_serve_sigdef){.sig = *m->backend.signature};
    if (!out->sig.name)
        out->sig.name = CL_SERVE_DEFAULT_SIGNATURE;
    if (!out->sig.method_name)
        out->sig.method_name = CL_SERVE_METHOD_PREDICT;
}

bool cl_serve_model_sig_find(const cl_serve_model *m, const char *name, cl_serve_sigdef *out)
{
    if (!name || !*name)
        name = CL_SERVE_DEFAULT_SIGNATURE;
    for (size_t i = 0; i < cl_serve_model_sig_count(m); i++) {
        cl_serve_model_sig_at(m, i, out);
        if (strcmp(out->sig.name, name) == 0)
            return true;
    }
    return false;
}
size_t cl_serve_model_memory(const cl_serve_model *m, size_t input_bytes)
{
    return m->backend.memory ? m->backend.memory(m->backend.ctx, input_bytes) : 0;
}

/* Matches inputs to the signature: idx[k] is the index in `inputs` of signature input k. Every
 * signature input must be present exactly once with the right dtype and a compatible shape; with
 * `encoded`, an input with image preprocessing may also be a list of encoded images (DT_STRING [N]),
 * to be decoded later. */
static int match_inputs(const cl_serve_signature *sig, const cl_serve_tensor *inputs, size_t n_inputs, size_t *idx,
                        bool encoded, cl_err *err)
{
    for (size_t i = 0; i < n_inputs; i++) {
        size_t k = 0;
        while (k < sig->n_inputs && strcmp(sig->inputs[k].name, inputs[i].name) != 0)
            k++;
        if (k == sig->n_inputs)
            return cl_err_set(err, CL_E_INVALID, "input tensor alias not found in signature: %s", inputs[i].name);
        for (size_t j = 0; j < i; j++)
            if (strcmp(inputs[j].name, inputs[i].name) == 0)
                return cl_err_set(err, CL_E_INVALID, "input '%s' is given twice", inputs[i].name);
    }
    for (size_t k = 0; k < sig->n_inputs; k++) {
        const cl_serve_tensor_spec *ts = &sig->inputs[k];
        size_t i = 0;
        while (i < n_inputs && strcmp(ts->name, inputs[i].name) != 0)
            i++;
        if (i == n_inputs)
            return cl_err_set(err, CL_E_INVALID, "input size does not match signature: %zu != %zu; missing "
                              "input '%s'", n_inputs, sig->n_inputs, ts->name);
        const cl_serve_tensor *t = &inputs[i];
        if (encoded && ts->image && t->dtype == CL_SERVE_DT_STRING && t->ndim == 1) {
            idx[k] = i;
            continue;
        }
        if (t->dtype != ts->dtype)
            return cl_err_set(err, CL_E_INVALID, "Expects arg[%zu] ('%s') to be %s but %s is provided", k, ts->name,
                              cl_serve_dtype_name(ts->dtype), cl_serve_dtype_name(t->dtype));
        bool ok = ts->ndim < 0 || ts->ndim == t->ndim;
        for (int d = 0; ok && ts->ndim >= 0 && d < ts->ndim; d++)
            ok = ts->dims[d] < 0 || ts->dims[d] == t->dims[d];
        if (!ok) {
            char want[160], got[160];
            cl_serve_shape_str(want, sizeof want, ts->ndim, ts->dims);
            cl_serve_shape_str(got, sizeof got, t->ndim, t->dims);
            return cl_err_set(err, CL_E_INVALID, "input '%s' has shape %s, the signature wants %s (-1: any size)",
                              ts->name, got, want);
        }
        idx[k] = i;
    }
    return 0;
}

static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int run_backend(cl_serve_model *m, const cl_serve_tensor *ordered, cl_serve_tensor **outputs,
                       size_t *n_outputs, cl_err *err)
{
    *outputs = NULL;
    *n_outputs = 0;
    /* The first runs, then every 16th, are timed in the calling thread's CPU time: what running it
     * inline would cost the loop thread. (Wall time would count preemption, and under load the
     * average would drift past the inline limit; a thread CPU clock is a syscall, hence sampled.) */
    unsigned runs = atomic_load(&m->runs);
    bool timed = runs < 8 || runs % 16 == 0;
    uint64_t t0 = timed ? thread_cpu_ns() : 0;
    int rc = m->backend.run(m->backend.ctx, ordered, m->backend.signature->n_inputs, outputs, n_outputs, err);
    if (rc == 0) {
        if (timed) {
            /* racy read-modify-write between threads: an average off by one sample is fine */
            uint64_t t = thread_cpu_ns() - t0, avg = atomic_load(&m->run_ns_avg);
            atomic_store(&m->run_ns_avg, runs ? avg - avg / 4 + t / 4 : t);
        }
        atomic_fetch_add(&m->runs, 1);
    }
    if (rc != 0) {
        cl_serve_tensors_free(*outputs, *n_outputs);
        *outputs = NULL;
        *n_outputs = 0;
    }
    return rc;
}

/* Per-call arrays of inputs live on the stack up to this many (the common case: one or two inputs),
 * sparing each request's run a few small allocations. */
#define FEW_INPUTS 4

/* cl_serve_model_run once image inputs are decoded. */
static int run_checked(cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs,
                       size_t *n_outputs, cl_err *err)
{
    const cl_serve_signature *sig = m->backend.signature;
    *outputs = NULL;
    *n_outputs = 0;
    size_t n = sig->n_inputs ? sig->n_inputs : 1;
    size_t idx_s[FEW_INPUTS];
    cl_serve_tensor ordered_s[FEW_INPUTS];
    bool few = n <= FEW_INPUTS;
    size_t *idx = few ? idx_s : calloc(n, sizeof *idx);
    cl_serve_tensor *ordered = few ? ordered_s : calloc(n, sizeof *ordered);
    if (!idx || !ordered) {
        free(few ? NULL : idx);
        free(few ? NULL : ordered);
        return cl_err_nomem(err);
    }
    int rc = match_inputs(sig, inputs, n_inputs, idx, false, err);
    if (rc == 0) {
        for (size_t k = 0; k < sig->n_inputs; k++)
            ordered[k] = inputs[idx[k]]; /* shallow: the backend reads, never frees */
        rc = run_backend(m, ordered, outputs, n_outputs, err);
    }
    if (!few) {
        free(idx);
        free(ordered);
    }
    return rc;
}

int cl_serve_model_order_inputs(const cl_serve_model *m, cl_serve_tensor *inputs, size_t n_inputs, cl_err *err)
{
    const cl_serve_signature *sig = m->backend.signature;
    if (n_inputs != sig->n_inputs)
        return cl_err_set(err, CL_E_INVALID, "input size does not match signature: %zu != %zu", n_inputs,
                          sig->n_inputs);
    size_t idx[64];
    if (sig->n_inputs > CL_ARRAY_LEN(idx))
        return cl_err_set(err, CL_E_INVALID, "a model with %zu inputs cannot be batched", sig->n_inputs);
    if (match_inputs(sig, inputs, n_inputs, idx, true, err) != 0)
        return -1;
    /* apply the permutation in place: position k receives inputs[idx[k]] */
    cl_serve_tensor tmp[64];
    for (size_t k = 0; k < n_inputs; k++)
        tmp[k] = inputs[idx[k]];
    /* cppcheck-suppress uninitvar ; the loop above wrote tmp[0..n_inputs) */
    memcpy(inputs, tmp, n_inputs * sizeof *inputs);
    return 0;
}

int cl_serve_model_run_ordered(cl_serve_model *m, const cl_serve_tensor *inputs, cl_serve_tensor **outputs,
                               size_t *n_outputs, cl_err *err)
{
    return run_backend(m, inputs, outputs, n_outputs, err);
}

uint64_t cl_serve_model_typical_ns(const cl_serve_model *m)
{
    return atomic_load(&m->runs) >= 8 ? atomic_load(&m->run_ns_avg) : UINT64_MAX;
}

int cl_serve_model_run(cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs,
                       size_t *n_outputs, cl_err *err)
{
    *outputs = NULL;
    *n_outputs = 0;
    cl_serve_tensor decoded_s[FEW_INPUTS] = {0}, view_s[FEW_INPUTS];
    bool few = n_inputs <= FEW_INPUTS;
    cl_serve_tensor *decoded = few ? decoded_s : calloc(n_inputs, sizeof *decoded);
    cl_serve_tensor *view = few ? view_s : calloc(n_inputs, sizeof *view);
    int rc = decoded && view ? cl_serve_model_decode_images(m, inputs, n_inputs, decoded, err)
                             : cl_err_nomem(err);
    if (rc >= 0) {
        for (size_t i = 0; i < n_inputs; i++)
            view[i] = decoded[i].data ? decoded[i] : inputs[i]; /* shallow */
        rc = run_checked(m, view, n_inputs, outputs, n_outputs, err);
    }
    for (size_t i = 0; decoded && i < n_inputs; i++)
        cl_serve_tensor_clear(&decoded[i]);
    if (!few) {
        free(decoded);
        free(view);
    }
    return rc < 0 ? -1 : 0;
}
