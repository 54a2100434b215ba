/* repo.c — the model repository: version discovery in TF Serving's directory layout, loading plain
 * and sealed models into the engine (sealed ones only ever in locked memory) with their optional image
 * preprocessing (preprocess.json), the engine -> serving backend adapter, and version polling with hot
 * swap.
 *
 * Reading guide: scan_versions/latest_version find what is on disk; load_backend turns one file into a
 * cl_serve_backend (engine_backend_* is the adapter); repo_model_refresh decides what to load for one
 * model; cl_repo_poll and the polling thread drive it. */
#include "cloister/repo.h"
#include "cloister/policy.h"

#include <dirent.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define LOG "repo"
#define MAX_VERSIONS_TRACKED 64

/* ---------------------------------------------------------------- dtypes */

static bool to_serve_dtype(cl_engine_dtype in, cl_serve_dtype *out)
{
    switch (in) {
    case CL_ENGINE_DT_FLOAT: *out = CL_SERVE_DT_FLOAT; return true;
    case CL_ENGINE_DT_DOUBLE: *out = CL_SERVE_DT_DOUBLE; return true;
    case CL_ENGINE_DT_INT32: *out = CL_SERVE_DT_INT32; return true;
    case CL_ENGINE_DT_INT64: *out = CL_SERVE_DT_INT64; return true;
    case CL_ENGINE_DT_UINT8: *out = CL_SERVE_DT_UINT8; return true;
    case CL_ENGINE_DT_INT8: *out = CL_SERVE_DT_INT8; return true;
    case CL_ENGINE_DT_BOOL: *out = CL_SERVE_DT_BOOL; return true;
    default: return false;
    }
}

static bool to_engine_dtype(cl_serve_dtype in, cl_engine_dtype *out)
{
    switch (in) {
    case CL_SERVE_DT_FLOAT: *out = CL_ENGINE_DT_FLOAT; return true;
    case CL_SERVE_DT_DOUBLE: *out = CL_ENGINE_DT_DOUBLE; return true;
    case CL_SERVE_DT_INT32: *out = CL_ENGINE_DT_INT32; return true;
    case CL_SERVE_DT_INT64: *out = CL_ENGINE_DT_INT64; return true;
    case CL_SERVE_DT_UINT8: *out = CL_ENGINE_DT_UINT8; return true;
    case CL_SERVE_DT_INT8: *out = CL_ENGINE_DT_INT8; return true;
    case CL_SERVE_DT_BOOL: *out = CL_ENGINE_DT_BOOL; return true;
    default: return false;
    }
}

/* ---------------------------------------------------------------- engine backend */

typedef struct engine_backend {
    cl_engine_model *model;
    cl_serve_signature sig;
    cl_serve_tensor_spec *inputs, *outputs;
    cl_image_spec image; /* the preprocessing of inputs[i].image, when one has it */
} engine_backend;

static void engine_backend_destroy(void *ctx)
{
    engine_backend *b = ctx;
    if (!b)
        return;
    cl_engine_free(b->model);
    free(b->inputs);
    free(b->outputs);
    free(b);
}

static int engine_backend_run(void *ctx, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs,
                              size_t *n_outputs, cl_err *err)
{
    engine_backend *b = ctx;
    size_t n_out = b->sig.n_outputs;
    cl_engine_tensor *in = calloc(n_inputs ? n_inputs : 1, sizeof *in);
    cl_engine_tensor *out = calloc(n_out, sizeof *out);
    cl_serve_tensor *res = calloc(n_out, sizeof *res);
    int rc = -1;
    if (!in || !out || !res) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n_inputs; i++) {
        const cl_serve_tensor *t = &inputs[i];
        if (!to_engine_dtype(t->dtype, &in[i].dtype) || t->ndim > CL_ENGINE_MAX_RANK) {
            cl_err_set(err, CL_E_INVALID, "input '%s': type %s is not supported by the engine", t->name,
                       cl_serve_dtype_name(t->dtype));
            goto done;
        }
        in[i].rank = t->ndim;
        memcpy(in[i].dims, t->dims, sizeof(int64_t) * (size_t)t->ndim);
        in[i].data = t->data; /* read-only inside the engine */
        in[i].nbytes = t->nbytes;
    }
    if (cl_engine_run(b->model, in, n_inputs, out, n_out, err) != 0)
        goto done;
    for (size_t i = 0; i < n_out; i++) {
        cl_serve_dtype dt;
        if (!to_serve_dtype(out[i].dtype, &dt) || out[i].rank > CL_SERVE_MAX_DIMS) {
            cl_err_set(err, CL_E_UNSUPPORTED, "output '%s' has type %s, which the serving APIs cannot carry",
                       b->outputs[i].name, cl_engine_dtype_name(out[i].dtype));
            goto done;
        }
        res[i].name = strdup(b->outputs[i].name);
        if (!res[i].name) {
            cl_err_set(err, CL_E_NOMEM, "out of memory");
            goto done;
        }
        res[i].dtype = dt;
        res[i].ndim = out[i].rank;
        memcpy(res[i].dims, out[i].dims, sizeof(int64_t) * (size_t)out[i].rank);
        res[i].data = out[i].data; /* ownership moves: both sides use malloc/free */
        res[i].nbytes = out[i].nbytes;
        out[i].data = NULL;
        out[i].nbytes = 0;
    }
    *outputs = res;
    *n_outputs = n_out;
    res = NULL;
    rc = 0;
done:
    for (size_t i = 0; out && i < n_out; i++)
        cl_engine_tensor_release(&out[i]);
    if (res)
        cl_serve_tensors_free(res, n_out);
    free(in);
    free(out);
    return rc;
}

/* The engine's measured working memory of a run (cl_serve_backend.memory). */
static size_t engine_backend_memory(void *ctx, size_t input_bytes)
{
    return cl_engine_memory_estimate(((engine_backend *)ctx)->model, input_bytes);
}

/* Describes one engine input/output as a serving tensor spec; the name is borrowed from the model. */
static int io_spec(const cl_engine_io_info *io, const char *what, cl_serve_tensor_spec *spec, cl_err *err)
{
    if (!to_serve_dtype(io->dtype, &spec->dtype))
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s '%s' has type %s, which the serving APIs cannot carry", what,
                          io->name, cl_engine_dtype_name(io->dtype));
    if (io->rank > CL_SERVE_MAX_DIMS)
        return cl_err_set(err, CL_E_UNSUPPORTED, "%s '%s' has rank %d (at most %d)", what, io->name, io->rank,
                          CL_SERVE_MAX_DIMS);
    spec->name = io->name;
    spec->ndim = io->rank;
    for (int d = 0; d < io->rank; d++)
        spec->dims[d] = io->dims[d];
    return 0;
}

static int engine_backend_new(cl_engine_model *m, cl_serve_backend *out, cl_err *err)
{
    engine_backend *b = calloc(1, sizeof *b);
    size_t ni = cl_engine_num_inputs(m), no = cl_engine_num_outputs(m);
    if (b) {
        b->inputs = calloc(ni ? ni : 1, sizeof *b->inputs);
        b->outputs = calloc(no ? no : 1, sizeof *b->outputs);
    }
    if (!b || !b->inputs || !b->outputs) {
        if (b) {
            free(b->inputs);
            free(b->outputs);
        }
        free(b);
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    }
    b->model = m;
    for (size_t i = 0; i < ni; i++)
        if (io_spec(cl_engine_input(m, i), "input", &b->inputs[i], err) != 0)
            goto fail;
    for (size_t i = 0; i < no; i++)
        if (io_spec(cl_engine_output(m, i), "output", &b->outputs[i], err) != 0)
            goto fail;
    b->sig = (cl_serve_signature){.name = "serving_default", .method_name = "tensorflow/serving/predict",
                                  .inputs = b->inputs, .n_inputs = ni, .outputs = b->outputs, .n_outputs = no};
    *out = (cl_serve_backend){.signature = &b->sig, .run = engine_backend_run, .destroy = engine_backend_destroy,
                              .ctx = b, .memory = engine_backend_memory};
    return 0;
fail:
    b->model = NULL; /* stays the caller's on failure */
    engine_backend_destroy(b);
    return -1;
}

/* dir_of(path) + "/" + name into out. */
static void sibling_path(const char *path, const char *name, char *out, size_t cap)
{
    const char *slash = strrchr(path, '/');
    if (slash)
        snprintf(out, cap, "%.*s/%s", (int)(slash - path), path, name);
    else
        snprintf(out, cap, "%s", name);
}

/* Attaches the preprocessing declared in `pp_path` to the input it names. */
static int attach_preprocess(engine_backend *b, const char *pp_path, cl_err *err)
{
    if (cl_image_spec_load(pp_path, &b->image, err) != 0)
        return -1;
    for (size_t i = 0; i < b->sig.n_inputs; i++) {
        cl_serve_tensor_spec *ts = &b->inputs[i];
        if (strcmp(ts->name, b->image.input) != 0)
            continue;
        if (cl_serve_spec_check_image(ts, &b->image, err) != 0)
            return cl_err_prefix(err, "%s does not fit the model", pp_path);
        ts->image = &b->image;
        return 0;
    }
    char names[256] = "";
    for (size_t i = 0; i < b->sig.n_inputs; i++)
        snprintf(names + strlen(names), sizeof names - strlen(names), "%s'%s'", i ? ", " : "", b->inputs[i].name);
    return cl_err_set(err, CL_E_INVALID, "%s: \"input\": \"%s\" is not an input of the model (its inputs: %s)",
                      pp_path, b->image.input, names);
}

/* A SavedModel version directory (the directory of `path`, its saved_model.pb): every file read into
 * memory (sealed ones opened into secure memory only), loaded, then the files released. */
static int load_savedmodel(const char *path, cl_repo_key_fn key_fn, void *key_arg, int engine_threads,
                           const char *pp_path, cl_serve_backend *out, bool *key_failed, cl_err *err)
{
    char dir[4200];
    const char *slash = strrchr(path, '/');
    snprintf(dir, sizeof dir, "%.*s", slash ? (int)(slash - path) : 1, slash ? path : ".");
    cl_repo_files fs;
    if (cl_repo_savedmodel_read(dir, key_fn, key_arg, &fs, key_failed, err) != 0)
        return cl_err_prefix(err, "cannot load model '%s'", dir);
    cl_engine_model *m = NULL;
    cl_engine_options eo = {.threads = engine_threads};
    int rc = cl_engine_load_files(fs.f, fs.n, &eo, &m, err);
    cl_repo_files_free(&fs); /* sealed files zeroized: the plaintext now exists only inside the engine */
    if (rc != 0)
        return cl_err_prefix(err, "cannot load model '%s'", dir);
    if (engine_backend_new(m, out, err) != 0) {
        cl_engine_free(m);
        return cl_err_prefix(err, "model '%s'", dir);
    }
    if (pp_path && attach_preprocess(out->ctx, pp_path, err) != 0) {
        out->destroy(out->ctx);
        memset(out, 0, sizeof *out);
        return -1;
    }
    return 0;
}

/* cl_repo_load_backend; *key_failed tells whether it failed for want of the key (the key source
 * could not supply it: denied, or the key server unreachable), which a later poll retries. */
static int load_backend(const char *path, bool sealed, cl_repo_key_fn key_fn, void *key_arg, int engine_threads,
                        cl_serve_backend *out, bool *key_failed, cl_err *err)
{
    *key_failed = false;
    uint8_t *buf = NULL;
    size_t len = 0;
    char pp_path[4200];
    struct stat pst;
    sibling_path(path, CL_REPO_PREPROCESS_NAME, pp_path, sizeof pp_path);
    bool has_pp = lstat(pp_path, &pst) == 0;
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    if (strncmp(base, CL_REPO_TF_SAVEDMODEL_NAME, strlen(CL_REPO_TF_SAVEDMODEL_NAME)) == 0 ||
        strcmp(base, CL_REPO_TF_LEGACY_NAME) == 0)
        return load_savedmodel(path, key_fn, key_arg, engine_threads, has_pp ? pp_path : NULL, out, key_failed, err);
    if (sealed) {
        cl_seal_header h;
        if (cl_seal_header_read_file(path, &h, err) != 0)
            return -1;
        if (!key_fn)
            return cl_err_set(err, CL_E_KEY, "'%s' is sealed (key id '%s') but no key source is configured: start "
                                             "the server with --keyserver",
                              path, h.key_id);
        uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, err);
        if (!key)
            return -1;
        int rc = key_fn(key_arg, h.key_id, key, err);
        *key_failed = rc != 0;
        if (rc == 0)
            rc = cl_seal_open_file(path, key, h.key_id, &buf, &len, NULL, err);
        cl_secmem_free(key);
        if (rc != 0)
            return cl_err_prefix(err, "cannot open sealed model '%s'", path);
    } else {
        if (cl_file_read(path, CL_ENGINE_MAX_MODEL_BYTES, &buf, &len, err) != 0)
            return -1;
    }
    cl_engine_model *m = NULL;
    cl_engine_options eo = {.threads = engine_threads};
    int rc = cl_engine_load(buf, len, &eo, &m, err);
    if (sealed)
        cl_secmem_free(buf); /* zeroized: the plaintext model now exists only inside the engine */
    else
        free(buf);
    if (rc != 0)
        return cl_err_prefix(err, "cannot load model '%s'", path);
    if (engine_backend_new(m, out, err) != 0) {
        cl_engine_free(m);
        return cl_err_prefix(err, "model '%s'", path);
    }
    if (has_pp && attach_preprocess(out->ctx, pp_path, err) != 0) {
        out->destroy(out->ctx);
        memset(out, 0, sizeof *out);
        return -1;
    }
    return 0;
}

int cl_repo_load_backend(const char *path, bool sealed, cl_repo_key_fn key_fn, void *key_arg, int engine_threads,
                         cl_serve_backend *out, cl_err *err)
{
    bool key_failed;
    return load_backend(path, sealed, key_fn, key_arg, engine_threads, out, &key_failed, err);
}

/* A sealed file's key id must be a name the key server can hold (files sealed before the key id
 * alphabet was the secret-name alphabet may hold others). */
static int check_key_id(const char *path, const char *key_id, cl_err *err)
{
    if (cl_policy_secret_name_valid(key_id))
        return 0;
    return cl_err_set(err, CL_E_INVALID, "'%s' is sealed for key id '%s', which is not a key server secret name "
                      "(1-128 of A-Z a-z 0-9 . _ : / -), so no key server can release its key: unseal it and seal it "
                      "again with a valid --key-id", path, key_id);
}

/* ---------------------------------------------------------------- versions on disk */

/* A version directory name: decimal digits only, 1 .. INT64_MAX. */
static bool parse_version(const char *s, int64_t *out)
{
    if (!*s || strlen(s) > 18)
        return false;
    int64_t v = 0;
    for (const char *p = s; *p; p++) {
        if (*p < '0' || *p > '9')
            return false;
        v = v * 10 + (*p - '0');
    }
    if (v <= 0)
        return false;
    *out = v;
    return true;
}

typedef struct version_file {
    int64_t version;
    bool sealed;
    bool ambiguous; /* both model.onnx and model.onnx.sealed */
    char path[4096];
    int64_t mtime_ns, size;       /* identity of the file, to remember failures */
    int64_t pp_mtime_ns, pp_size; /* and of preprocess.json (-1: none) */
} version_file;

static bool stat_file(const char *path, struct stat *st) { return stat(path, st) == 0 && S_ISREG(st->st_mode); }

/* Fills vf for version directory `name` under base, if it holds a model file. */
static bool version_probe(const char *base, const char *name, version_file *vf)
{
    if (!parse_version(name, &vf->version))
        return false;
    char plain[4096], sealed[4096];
    struct stat sp, ss;
    bool has_plain = false, has_sealed = false;
    /* ONNX first, then TensorFlow: a SavedModel, a frozen GraphDef, a legacy export (refused at load) */
    static const char *const kinds[] = {CL_REPO_PLAIN_NAME, CL_REPO_TF_SAVEDMODEL_NAME, CL_REPO_TF_FROZEN_NAME,
                                        CL_REPO_TF_LEGACY_NAME};
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0] && !has_plain && !has_sealed; k++) {
        snprintf(plain, sizeof plain, "%s/%s/%s", base, name, kinds[k]);
        snprintf(sealed, sizeof sealed, "%s/%s/%s.sealed", base, name, kinds[k]);
        has_plain = stat_file(plain, &sp);
        has_sealed = k < 3 && stat_file(sealed, &ss);
    }
    if (!has_plain && !has_sealed)
        return false;
    vf->sealed = has_sealed;
    vf->ambiguous = has_plain && has_sealed;
    snprintf(vf->path, sizeof vf->path, "%s", has_sealed ? sealed : plain);
    const struct stat *st = has_sealed ? &ss : &sp;
    vf->mtime_ns = (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
    vf->size = (int64_t)st->st_size;
    char pp[4096];
    struct stat spp;
    snprintf(pp, sizeof pp, "%s/%s/%s", base, name, CL_REPO_PREPROCESS_NAME);
    bool has_pp = stat(pp, &spp) == 0;
    vf->pp_mtime_ns = has_pp ? (int64_t)spp.st_mtim.tv_sec * 1000000000 + spp.st_mtim.tv_nsec : -1;
    vf->pp_size = has_pp ? (int64_t)spp.st_size : -1;
    return true;
}

/* The newest version above `floor` that is not excluded by `skip` (may be NULL). */
typedef bool (*skip_fn)(void *arg, const version_file *vf);

static int newest_version(const char *base, int64_t floor, skip_fn skip, void *skip_arg, version_file *best,
                          cl_err *err)
{
    DIR *d = opendir(base);
    if (!d)
        return cl_err_errno(err, CL_E_IO, errno, "cannot read model base path '%s'", base);
    bool found = false;
    struct dirent *e;
    while ((e = readdir(d))) {
        version_file vf;
        if (!version_probe(base, e->d_name, &vf) || vf.version <= floor)
            continue;
        if (skip && skip(skip_arg, &vf))
            continue;
        if (!found || vf.version > best->version) {
            *best = vf;
            found = true;
        }
    }
    closedir(d);
    return found ? 1 : 0;
}

int cl_repo_latest_version(const char *base_path, int64_t *version, bool *sealed, cl_err *err)
{
    version_file vf;
    int rc = newest_version(base_path, 0, NULL, NULL, &vf, err);
    if (rc < 0)
        return -1;
    if (rc == 0)
        return cl_err_set(err, CL_E_IO,
                          "no model version under '%s': expected <version>/%s or <version>/%s (version a "
                          "positive integer)",
                          base_path, CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
    *version = vf.version;
    *sealed = vf.sealed;
    return 0;
}

/* ---------------------------------------------------------------- the repository */

/* A version that failed to load, by the identity of its files: not tried again until they change,
 * except when it failed for want of its key (key_wait): then it is tried again on the schedule of
 * cl_repo_key_retry_delay_s, since the key server's policy may grant it later. */
typedef struct failed_version {
    int64_t version, mtime_ns, size, pp_mtime_ns, pp_size;
    bool key_wait;
    unsigned tries;      /* failed attempts for want of the key */
    uint64_t next_ms;    /* CLOCK_MONOTONIC: not tried again before */
    cl_serve_code code;  /* of the last attempt, for GetModelStatus */
    char msg[384];
} failed_version;

typedef struct repo_model {
    char *name, *base_path;
    int64_t current; /* version being served; 0 none */
    failed_version failed[MAX_VERSIONS_TRACKED];
    size_t n_failed;
    /* the last poll error logged, when, and how many polls repeated it since (cl_repo_poll) */
    char last_error[CL_ERR_MSG_MAX];
    uint64_t last_error_ms;
    unsigned repeated;
} repo_model;

struct cl_repo {
    cl_serve_registry *registry;
    repo_model *models;
    size_t n_models;
    cl_repo_key_fn key_fn;
    void *key_arg;
    int engine_threads;
    pthread_mutex_t lock; /* serialises polls */
    pthread_t poller;
    bool polling;
    pthread_mutex_t stop_lock;
    pthread_cond_t stop_cond;
    bool stop;
    const cl_stop *stop_token; /* the process's (cl_repo_options.stop) */
    unsigned poll_seconds;
};

static uint64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

unsigned cl_repo_key_retry_delay_s(unsigned poll_seconds, unsigned tries)
{
    uint64_t d = poll_seconds ? poll_seconds : 1;
    for (unsigned i = 1; i < tries && d < CL_REPO_KEY_RETRY_MAX_S; i++)
        d *= 2;
    return d > CL_REPO_KEY_RETRY_MAX_S ? CL_REPO_KEY_RETRY_MAX_S : (unsigned)d;
}

static failed_version *find_failure(repo_model *m, const version_file *vf)
{
    for (size_t i = 0; i < m->n_failed; i++)
        if (m->failed[i].version == vf->version && m->failed[i].mtime_ns == vf->mtime_ns &&
            m->failed[i].size == vf->size && m->failed[i].pp_mtime_ns == vf->pp_mtime_ns &&
            m->failed[i].pp_size == vf->pp_size)
            return &m->failed[i];
    return NULL;
}

/* Skips versions that failed, unless a key wait is due. */
static bool skip_failed(void *arg, const version_file *vf)
{
    const failed_version *f = find_failure(arg, vf);
    return f && !(f->key_wait && now_ms() >= f->next_ms);
}

static failed_version *remember_failure(repo_model *m, const version_file *vf)
{
    failed_version *f = find_failure(m, vf);
    if (!f) {
        f = &m->failed[m->n_failed < MAX_VERSIONS_TRACKED ? m->n_failed++ : MAX_VERSIONS_TRACKED - 1];
        *f = (failed_version){vf->version, vf->mtime_ns, vf->size, vf->pp_mtime_ns, vf->pp_size};
    }
    return f;
}

static void forget_failure(repo_model *m, const version_file *vf)
{
    failed_version *f = find_failure(m, vf);
    if (f)
        *f = m->failed[--m->n_failed];
}

static cl_serve_code key_failure_code(cl_status s)
{
    return s == CL_E_DENIED ? CL_SC_PERMISSION_DENIED : s == CL_E_IO ? CL_SC_UNAVAILABLE : CL_SC_UNKNOWN;
}

/* Tells the registry which versions above the one served wait for their key (GetModelStatus shows
 * them as LOADING): those whose files are still there, unchanged. */
static void publish_waiting(cl_repo *r, repo_model *m)
{
    cl_serve_version_status st[MAX_VERSIONS_TRACKED];
    size_t n = 0;
    for (size_t i = 0; i < m->n_failed; i++) {
        const failed_version *f = &m->failed[i];
        if (!f->key_wait || f->version <= m->current)
            continue;
        char name[32];
        snprintf(name, sizeof name, "%lld", (long long)f->version);
        version_file vf;
        if (!version_probe(m->base_path, name, &vf) || vf.mtime_ns != f->mtime_ns || vf.size != f->size)
            continue;
        st[n] = (cl_serve_version_status){.version = f->version, .code = f->code};
        if (snprintf(st[n].message, sizeof st[n].message, "%s", f->msg) < 0)
            st[n].message[0] = '\0';
        n++;
    }
    cl_err err = {0};
    if (cl_serve_registry_set_loading(r->registry, m->name, st, n, &err) != 0)
        CL_WARN(LOG, "model '%s': %s (GetModelStatus does not show the versions waiting for a key)", m->name,
                err.msg);
}

/* Loads the newest version above the current one, if any. Returns 1 if a version was swapped in,
 * 0 if there was nothing new, -1 if the newest candidate failed (err says why; it is remembered). */
static int repo_model_refresh(cl_repo *r, repo_model *m, cl_err *err)
{
    version_file vf;
    int found = newest_version(m->base_path, m->current, skip_failed, m, &vf, err);
    if (found <= 0) {
        if (found == 0)
            publish_waiting(r, m);
        return found;
    }
    cl_serve_backend b;
    int rc;
    bool key_failed = false;
    if (vf.ambiguous)
        rc = cl_err_set(err, CL_E_INVALID, "version %lld of model '%s' has both %s and %s: remove one",
                        (long long)vf.version, m->name, CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
    else
        rc = load_backend(vf.path, vf.sealed, r->key_fn, r->key_arg, r->engine_threads, &b, &key_failed, err);
    if (rc == 0 && cl_serve_registry_add(r->registry, m->name, vf.version, &b, err) != 0) {
        b.destroy(b.ctx);
        rc = -1;
    }
    if (rc != 0 && cl_stop_raised(r->stop_token))
        return cl_err_prefix(err, "version %lld", (long long)vf.version); /* cut short: not remembered */
    if (rc != 0) {
        failed_version *f = remember_failure(m, &vf);
        f->key_wait = key_failed && r->key_fn;
        if (f->key_wait) {
            f->tries++;
            unsigned delay = cl_repo_key_retry_delay_s(r->poll_seconds, f->tries);
            f->next_ms = now_ms() + (uint64_t)delay * 1000;
            f->code = key_failure_code(err->code);
            cl_err_prefix(err, "version %lld", (long long)vf.version);
            /* the message is cut if it has to be: the return values say so, and are not needed */
            if (snprintf(f->msg, sizeof f->msg, "%s; its key is asked for again in %u s", err->msg, delay) < 0)
                f->msg[0] = '\0';
            if (snprintf(err->msg, sizeof err->msg, "%s (attempt %u; retried with backoff up to every %u s while the "
                         "files are unchanged)", f->msg, f->tries, CL_REPO_KEY_RETRY_MAX_S) < 0)
                err->msg[0] = '\0';
        }
        publish_waiting(r, m);
        return -1;
    }
    failed_version *f = find_failure(m, &vf);
    unsigned tries = f ? f->tries : 0;
    forget_failure(m, &vf);
    int64_t old = m->current;
    m->current = vf.version;
    if (old > 0)
        cl_serve_registry_remove(r->registry, m->name, old); /* requests on it finish first */
    publish_waiting(r, m);
    const cl_image_spec *img = NULL;
    for (size_t i = 0; i < b.signature->n_inputs && !img; i++)
        img = b.signature->inputs[i].image;
    char imgs[200] = "", retried[80] = "";
    if (img)
        snprintf(imgs, sizeof imgs, "; input '%s' takes %s images (%s, %ux%u)", img->input,
                 img->pre.channels == 1 ? "greyscale" : "RGB", CL_REPO_PREPROCESS_NAME, img->pre.width,
                 img->pre.height);
    if (tries)
        snprintf(retried, sizeof retried, " (its key arrived after %u failed attempt%s)", tries, tries == 1 ? "" : "s");
    CL_INFO(LOG, "model '%s' version %lld loaded from %s%s%s%s", m->name, (long long)vf.version, vf.path,
            vf.sealed ? " (sealed, decrypted in locked memory)" : "", imgs, retried);
    return 1;
}

/* The checks of a model's newest version that need no key: it exists, is not ambiguous, and when sealed
 * its header is readable, its key id can be asked of the key server, a key source is configured, and
 * its preprocess.json (if any) parses (the plain ones are checked whole when they load). */
static int check_newest(const cl_repo *r, const repo_model *m, bool *sealed, char key_id[CL_SEAL_KEY_ID_MAX + 1],
                        cl_err *err)
{
    version_file vf;
    int found = newest_version(m->base_path, 0, NULL, NULL, &vf, err);
    if (found < 0)
        return -1;
    if (found == 0)
        return cl_err_set(err, CL_E_IO,
                          "no model version under '%s': expected <version>/%s or <version>/%s (version a "
                          "positive integer)",
                          m->base_path, CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
    if (vf.ambiguous)
        return cl_err_set(err, CL_E_INVALID, "version %lld has both %s and %s: remove one", (long long)vf.version,
                          CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
    *sealed = vf.sealed;
    if (!vf.sealed)
        return 0;
    cl_seal_header h;
    if (cl_seal_header_read_file(vf.path, &h, err) != 0 || check_key_id(vf.path, h.key_id, err) != 0)
        return -1;
    if (!r->key_fn)
        return cl_err_set(err, CL_E_KEY, "model key '%s' is needed for a sealed model: start the server with "
                          "--keyserver HOST:PORT --keyserver-ca CA.pem (and --evidence) to open %s", h.key_id,
                          vf.path);
    char pp[4200];
    struct stat st;
    sibling_path(vf.path, CL_REPO_PREPROCESS_NAME, pp, sizeof pp);
    cl_image_spec spec;
    if (lstat(pp, &st) == 0 && cl_image_spec_load(pp, &spec, err) != 0)
        return -1;
    snprintf(key_id, CL_SEAL_KEY_ID_MAX + 1, "%s", h.key_id);
    return 0;
}

static bool model_name_valid(const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n == 0 || n > 128)
        return false;
    for (size_t i = 0; i < n; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

void cl_repo_free(cl_repo *r)
{
    if (!r)
        return;
    if (r->polling) {
        pthread_mutex_lock(&r->stop_lock);
        r->stop = true;
        pthread_cond_signal(&r->stop_cond);
        pthread_mutex_unlock(&r->stop_lock);
        pthread_join(r->poller, NULL);
    }
    for (size_t i = 0; i < r->n_models; i++) {
        free(r->models[i].name);
        free(r->models[i].base_path);
    }
    free(r->models);
    pthread_mutex_destroy(&r->lock);
    pthread_mutex_destroy(&r->stop_lock);
    pthread_cond_destroy(&r->stop_cond);
    free(r);
}

cl_repo *cl_repo_new(const cl_repo_options *o, cl_err *err)
{
    if (!o->registry || o->n_models == 0) {
        cl_err_set(err, CL_E_INVALID, "no models to serve: give --model_name and --model_base_path, or "
                                      "--model_config_file");
        return NULL;
    }
    bool *sealed = NULL;
    char **ids = NULL;
    size_t n_ids = 0;
    cl_repo *r = calloc(1, sizeof *r);
    if (!r || !(r->models = calloc(o->n_models, sizeof *r->models))) {
        free(r);
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    r->registry = o->registry;
    r->key_fn = o->key_fn;
    r->key_arg = o->key_arg;
    r->engine_threads = o->engine_threads;
    r->stop_token = o->stop;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->stop_lock, NULL);
    pthread_cond_init(&r->stop_cond, NULL);
    r->n_models = o->n_models;
    for (size_t i = 0; i < o->n_models; i++) {
        const cl_repo_model_config *c = &o->models[i];
        if (!model_name_valid(c->name)) {
            cl_err_set(err, CL_E_INVALID, "model name '%s' is not valid (1-128 of A-Z a-z 0-9 . _ -)",
                       c->name ? c->name : "");
            goto fail;
        }
        for (size_t j = 0; j < i; j++) {
            if (strcmp(o->models[j].name, c->name) == 0) {
                cl_err_set(err, CL_E_INVALID, "model '%s' is configured twice", c->name);
                goto fail;
            }
        }
        r->models[i].name = strdup(c->name);
        r->models[i].base_path = strdup(c->base_path ? c->base_path : "");
        if (!r->models[i].name || !r->models[i].base_path) {
            cl_err_set(err, CL_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    /* 1. Everything that needs no key: the version directories, the sealed headers and their key ids,
     * preprocess.json, the plain models (loaded). */
    sealed = calloc(r->n_models, sizeof *sealed);
    ids = calloc(r->n_models, sizeof *ids);
    if (!sealed || !ids) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto fail;
    }
    for (size_t i = 0; i < r->n_models; i++) {
        repo_model *m = &r->models[i];
        char key_id[CL_SEAL_KEY_ID_MAX + 1];
        if (check_newest(r, m, &sealed[i], key_id, err) != 0 || (!sealed[i] && repo_model_refresh(r, m, err) < 0)) {
            cl_err_prefix(err, "model '%s'", m->name);
            goto fail;
        }
        bool dup = !sealed[i];
        for (size_t j = 0; j < n_ids && !dup; j++)
            dup = strcmp(ids[j], key_id) == 0;
        if (!dup && !(ids[n_ids++] = strdup(key_id))) {
            cl_err_set(err, CL_E_NOMEM, "out of memory");
            goto fail;
        }
    }
    /* 2. The keys (the key server is contacted only now), then the sealed models. */
    if (n_ids && o->before_sealed && o->before_sealed(o->before_sealed_arg, ids, n_ids, err) != 0)
        goto fail;
    for (size_t i = 0; i < r->n_models; i++) {
        if (sealed[i] && repo_model_refresh(r, &r->models[i], err) < 0) {
            cl_err_prefix(err, "model '%s'", r->models[i].name);
            goto fail;
        }
    }
    free(sealed);
    cl_repo_key_ids_free(ids, n_ids);
    return r;
fail:
    free(sealed);
    cl_repo_key_ids_free(ids, n_ids);
    cl_repo_free(r);
    return NULL;
}

static uint64_t poll_clock_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/* The same poll error again and again (a model directory that vanished is seen at every poll) is
 * logged once, then once every POLL_ERROR_REPEAT_MS with how often it recurred; its end is logged. */
#define POLL_ERROR_REPEAT_MS 300000u

static void poll_report(repo_model *m, int rc, const cl_err *err)
{
    uint64_t now = poll_clock_ms();
    if (rc >= 0) {
        if (m->last_error[0] && m->repeated) /* a condition that lasted (not one failed version) is over */
            CL_INFO(LOG, "model '%s': polls succeed again (after %u polls with: %s)", m->name, m->repeated + 1,
                    m->last_error);
        m->last_error[0] = '\0';
        m->repeated = 0;
        return;
    }
    if (m->last_error[0] && strcmp(m->last_error, err->msg) == 0 && now - m->last_error_ms < POLL_ERROR_REPEAT_MS) {
        m->repeated++;
        return;
    }
    bool again = m->last_error[0] && strcmp(m->last_error, err->msg) == 0;
    if (again)
        CL_ERROR(LOG, "model '%s': still: %s (%u more polls in %u s); version %lld keeps serving", m->name, err->msg,
                 m->repeated, (unsigned)((now - m->last_error_ms) / 1000), (long long)m->current);
    else
        CL_ERROR(LOG, "model '%s': %s; version %lld keeps serving", m->name, err->msg, (long long)m->current);
    snprintf(m->last_error, sizeof m->last_error, "%s", err->msg);
    m->last_error_ms = now;
    m->repeated = 0;
}

int cl_repo_poll(cl_repo *r)
{
    int loaded = 0;
    pthread_mutex_lock(&r->lock);
    for (size_t i = 0; i < r->n_models && !cl_stop_raised(r->stop_token); i++) {
        cl_err err = {0};
        int rc = repo_model_refresh(r, &r->models[i], &err);
        if (rc > 0)
            loaded++;
        if (rc < 0 && cl_stop_raised(r->stop_token)) /* cut short by the shutdown: not a failure to report */
            CL_INFO(LOG, "model '%s': stopping (%s)", r->models[i].name, err.msg);
        else
            poll_report(&r->models[i], rc, &err);
    }
    pthread_mutex_unlock(&r->lock);
    return loaded;
}

static void *poll_main(void *arg)
{
    cl_repo *r = arg;
    for (;;) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += r->poll_seconds;
        pthread_mutex_lock(&r->stop_lock);
        while (!r->stop && pthread_cond_timedwait(&r->stop_cond, &r->stop_lock, &until) != ETIMEDOUT) {
        }
        bool stop = r->stop || cl_stop_raised(r->stop_token);
        pthread_mutex_unlock(&r->stop_lock);
        if (stop)
            return NULL;
        cl_repo_poll(r);
    }
}

int cl_repo_start_polling(cl_repo *r, unsigned seconds, cl_err *err)
{
    if (r->polling)
        return cl_err_set(err, CL_E_INVALID, "the repository is already polling");
    if (seconds == 0)
        return cl_err_set(err, CL_E_INVALID, "the poll interval must be at least one second");
    r->poll_seconds = seconds;
    int e = pthread_create(&r->poller, NULL, poll_main, r);
    if (e != 0)
        return cl_err_errno(err, CL_E_INTERNAL, e, "cannot start the model polling thread");
    r->polling = true;
    return 0;
}

/* ---------------------------------------------------------------- key ids */

void cl_repo_key_ids_free(char **ids, size_t n_ids)
{
    for (size_t i = 0; i < n_ids; i++)
        free(ids[i]);
    free(ids);
}

int cl_repo_key_ids(const cl_repo_model_config *models, size_t n_models, char ***ids, size_t *n_ids, cl_err *err)
{
    *ids = NULL;
    *n_ids = 0;
    char **out = calloc(n_models ? n_models : 1, sizeof *out);
    size_t n = 0;
    if (!out)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    for (size_t i = 0; i < n_models; i++) {
        version_file vf;
        int found = newest_version(models[i].base_path, 0, NULL, NULL, &vf, err);
        if (found < 0) {
            cl_repo_key_ids_free(out, n);
            return cl_err_prefix(err, "model '%s'", models[i].name);
        }
        if (found == 0 || !vf.sealed)
            continue;
        cl_seal_header h;
        if (cl_seal_header_read_file(vf.path, &h, err) != 0 || check_key_id(vf.path, h.key_id, err) != 0) {
            cl_repo_key_ids_free(out, n);
            return cl_err_prefix(err, "model '%s' version %lld", models[i].name, (long long)vf.version);
        }
        bool dup = false;
        for (size_t j = 0; j < n && !dup; j++)
            dup = strcmp(out[j], h.key_id) == 0;
        if (!dup && !(out[n++] = strdup(h.key_id))) {
            cl_repo_key_ids_free(out, n);
            return cl_err_set(err, CL_E_NOMEM, "out of memory");
        }
    }
    *ids = out;
    *n_ids = n;
    return 0;
}

/* ---------------------------------------------------------------- --model_config_file */

typedef enum { TK_EOF, TK_IDENT, TK_STRING, TK_COLON, TK_OPEN, TK_CLOSE, TK_OTHER } tok_kind;

typedef struct lexer {
    const char *p, *end;
    int line;
    tok_kind kind;
    char text[4096]; /* identifier or decoded string */
} lexer;

static int lex_next(lexer *lx, cl_err *err)
{
    for (;;) {
        while (lx->p < lx->end && (*lx->p == ' ' || *lx->p == '\t' || *lx->p == '\r' || *lx->p == '\n')) {
            if (*lx->p == '\n')
                lx->line++;
            lx->p++;
        }
        if (lx->p < lx->end && *lx->p == '#') {
            while (lx->p < lx->end && *lx->p != '\n')
                lx->p++;
            continue;
        }
        break;
    }
    if (lx->p >= lx->end) {
        lx->kind = TK_EOF;
        return 0;
    }
    char c = *lx->p;
    if (c == ':' || c == '{' || c == '}') {
        lx->kind = c == ':' ? TK_COLON : c == '{' ? TK_OPEN : TK_CLOSE;
        lx->p++;
        return 0;
    }
    if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_') {
        size_t n = 0;
        while (lx->p < lx->end && ((*lx->p >= 'a' && *lx->p <= 'z') || (*lx->p >= 'A' && *lx->p <= 'Z') ||
                                   (*lx->p >= '0' && *lx->p <= '9') || *lx->p == '_')) {
            if (n + 1 >= sizeof lx->text)
                return cl_err_set(err, CL_E_FORMAT, "line %d: name too long", lx->line);
            lx->text[n++] = *lx->p++;
        }
        lx->text[n] = '\0';
        lx->kind = TK_IDENT;
        return 0;
    }
    if (c == '"' || c == '\'') {
        size_t n = 0;
        lx->p++;
        while (lx->p < lx->end && *lx->p != c) {
            char ch = *lx->p++;
            if (ch == '\n')
                return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", lx->line);
            if (ch == '\\') {
                if (lx->p >= lx->end)
                    break;
                char e = *lx->p++;
                ch = e == 'n' ? '\n' : e == 't' ? '\t' : e == '\\' || e == '"' || e == '\'' ? e : 0;
                if (!ch)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: unsupported escape '\\%c'", lx->line, e);
            }
            if (n + 1 >= sizeof lx->text)
                return cl_err_set(err, CL_E_FORMAT, "line %d: string too long", lx->line);
            lx->text[n++] = ch;
        }
        if (lx->p >= lx->end)
            return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", lx->line);
        lx->p++;
        lx->text[n] = '\0';
        lx->kind = TK_STRING;
        return 0;
    }
    lx->kind = TK_OTHER;
    return cl_err_set(err, CL_E_FORMAT, "line %d: unexpected character '%c'", lx->line, c);
}

/* Expects an identifier `name`, an optional ':', then '{'. */
static int expect_block(lexer *lx, const char *name, cl_err *err)
{
    if (lx->kind != TK_IDENT || strcmp(lx->text, name) != 0)
        return cl_err_set(err, CL_E_FORMAT, "line %d: expected '%s'", lx->line, name);
    if (lex_next(lx, err) != 0)
        return -1;
    if (lx->kind == TK_COLON && lex_next(lx, err) != 0)
        return -1;
    if (lx->kind != TK_OPEN)
        return cl_err_set(err, CL_E_FORMAT, "line %d: expected '{' after '%s'", lx->line, name);
    return lex_next(lx, err);
}

void cl_repo_config_free(cl_repo_model_config *models, size_t n_models)
{
    for (size_t i = 0; models && i < n_models; i++) {
        free((char *)models[i].name);
        free((char *)models[i].base_path);
    }
    free(models);
}

static int parse_config_entry(lexer *lx, cl_repo_model_config *mc, cl_err *err)
{
    int start = lx->line;
    while (lx->kind != TK_CLOSE) {
        if (lx->kind != TK_IDENT)
            return cl_err_set(err, CL_E_FORMAT, "line %d: expected a field name or '}'", lx->line);
        char field[sizeof lx->text];
        memcpy(field, lx->text, sizeof field);
        int line = lx->line;
        if (lex_next(lx, err) != 0)
            return -1;
        if (lx->kind != TK_COLON)
            return cl_err_set(err, CL_E_FORMAT,
                              "line %d: '%s' is not supported here (cloister serves the latest version of each model; "
                              "fields: name, base_path, model_platform)",
                              line, field);
        if (lex_next(lx, err) != 0)
            return -1;
        if (lx->kind != TK_STRING)
            return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' wants a quoted string", line, field);
        const char **slot = NULL;
        if (strcmp(field, "name") == 0)
            slot = &mc->name;
        else if (strcmp(field, "base_path") == 0)
            slot = &mc->base_path;
        else if (strcmp(field, "model_platform") == 0) {
            if (strcmp(lx->text, "onnx") != 0 && strcmp(lx->text, "tensorflow") != 0)
                return cl_err_set(err, CL_E_FORMAT, "line %d: model_platform '%s' is not supported (onnx)", line,
                                  lx->text);
        } else {
            return cl_err_set(err, CL_E_FORMAT, "line %d: unknown field '%s' (name, base_path, model_platform)", line,
                              field);
        }
        if (slot) {
            if (*slot)
                return cl_err_set(err, CL_E_FORMAT, "line %d: '%s' given twice", line, field);
            if (!(*slot = strdup(lx->text)))
                return cl_err_set(err, CL_E_NOMEM, "out of memory");
        }
        if (lex_next(lx, err) != 0)
            return -1;
    }
    if (!mc->name || !mc->base_path)
        return cl_err_set(err, CL_E_FORMAT, "line %d: a config needs both name and base_path", start);
    return lex_next(lx, err); /* past '}' */
}

int cl_repo_config_parse(const char *text, size_t len, cl_repo_model_config **models, size_t *n_models,
                         cl_err *err)
{
    *models = NULL;
    *n_models = 0;
    lexer lx = {.p = text, .end = text + len, .line = 1};
    cl_repo_model_config *out = NULL;
    size_t n = 0;
    if (lex_next(&lx, err) != 0 || expect_block(&lx, "model_config_list", err) != 0)
        goto fail;
    while (lx.kind != TK_CLOSE) {
        if (lx.kind == TK_EOF) {
            cl_err_set(err, CL_E_FORMAT, "line %d: missing '}' at the end of model_config_list", lx.line);
            goto fail;
        }
        if (expect_block(&lx, "config", err) != 0)
            goto fail;
        cl_repo_model_config *grown = realloc(out, (n + 1) * sizeof *out);
        if (!grown) {
            cl_err_set(err, CL_E_NOMEM, "out of memory");
            goto fail;
        }
        out = grown;
        out[n] = (cl_repo_model_config){0};
        n++;
        if (parse_config_entry(&lx, &out[n - 1], err) != 0)
            goto fail;
    }
    if (lex_next(&lx, err) != 0)
        goto fail;
    if (lx.kind != TK_EOF) {
        cl_err_set(err, CL_E_FORMAT, "line %d: unexpected text after model_config_list", lx.line);
        goto fail;
    }
    if (n == 0) {
        cl_err_set(err, CL_E_FORMAT, "model_config_list has no config");
        goto fail;
    }
    *models = out;
    *n_models = n;
    return 0;
fail:
    cl_repo_config_free(out, n);
    return -1;
}

int cl_repo_config_load(const char *path, cl_repo_model_config **models, size_t *n_models, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 1 << 20, &buf, &len, err) != 0)
        return -1;
    int rc = cl_repo_config_parse((const char *)buf, len, models, n_models, err);
    free(buf);
    if (rc != 0)
        return cl_err_prefix(err, "model config '%s'", path);
    return 0;
}
