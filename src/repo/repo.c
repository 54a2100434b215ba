/* repo.c — the model repository: version discovery in TF Serving's directory layout, loading plain
 * and sealed models into the engine (sealed ones only ever in locked memory) with their optional image
 * preprocessing (preprocess.json), the engine -> serving backend adapter, and version polling with hot
 * swap.
 *
 * Reading guide: scan_versions/latest_version find what is on disk; load_backend turns one file into a
 * cl_serve_backend (engine_backend_* is the adapter); repo_model_refresh decides what to load for one
 * model; cl_repo_poll and the polling thread drive it. */
#include "cloister/json.h"
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
    cl_serve_sigset *sigset; /* signatures.json, when there is one */
} engine_backend;

static void engine_backend_destroy(void *ctx)
{
    engine_backend *b = ctx;
    if (!b)
        return;
    cl_engine_free(b->model);
    cl_serve_sigset_free(b->sigset);
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
        cl_err_nomem(err);
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
            cl_err_nomem(err);
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
    spec->tensor_name = io->tensor;
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
        return cl_err_nomem(err);
    }
    b->model = m;
    for (size_t i = 0; i < ni; i++)
        if (io_spec(cl_engine_input(m, i), "input", &b->inputs[i], err) != 0)
            goto fail;
    for (size_t i = 0; i < no; i++)
        if (io_spec(cl_engine_output(m, i), "output", &b->outputs[i], err) != 0)
            goto fail;
    const char *method = cl_engine_method_name(m); /* a SavedModel's own; ONNX models predict */
    b->sig = (cl_serve_signature){.name = "serving_default", .method_name = method ? method : CL_SERVE_METHOD_PREDICT,
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
    char sig_path[4200];
    sibling_path(path, CL_REPO_SIGNATURES_NAME, sig_path, sizeof sig_path);
    engine_backend *eb = out->ctx;
    if ((has_pp && attach_preprocess(eb, pp_path, err) != 0) ||
        (lstat(sig_path, &pst) == 0 && cl_serve_sigset_load(sig_path, &eb->sig, &eb->sigset, err) != 0)) {
        out->destroy(out->ctx);
        memset(out, 0, sizeof *out);
        return -1;
    }
    out->sigdefs = cl_serve_sigset_defs(eb->sigset, &out->n_sigdefs);
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
    /* signatures.json counts with preprocess.json: a version that failed is tried again when either changes */
    snprintf(pp, sizeof pp, "%s/%s/%s", base, name, CL_REPO_SIGNATURES_NAME);
    if (stat(pp, &spp) == 0) {
        vf->pp_mtime_ns = vf->pp_mtime_ns * 31 + (int64_t)spp.st_mtim.tv_sec * 1000000000 + spp.st_mtim.tv_nsec;
        vf->pp_size = vf->pp_size * 31 + (int64_t)spp.st_size + 1;
    }
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
    version_file vf = {0};
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
    cl_repo_model_config cfg; /* owned deep copy: name, base_path, policy, labels */
    int64_t loaded[MAX_VERSIONS_TRACKED]; /* the versions in the registry (any order) */
    size_t n_loaded;
    failed_version failed[MAX_VERSIONS_TRACKED];
    size_t n_failed;
    /* the last poll error logged, when, and how many polls repeated it since (cl_repo_poll) */
    char last_error[CL_ERR_MSG_MAX];
    uint64_t last_error_ms;
    unsigned repeated;
} repo_model;

struct cl_repo {
    cl_serve_registry *registry;
    repo_model **models;
    size_t n_models;
    cl_repo_key_fn key_fn;
    void *key_arg;
    int engine_threads;
    bool allow_unavailable_labels;
    unsigned max_load_retries;
    uint64_t load_retry_interval_us;
    bool warmup;
    unsigned warmup_iterations;
    pthread_mutex_t lock; /* serialises polls and reloads; guards models */
    pthread_t poller, cfg_poller;
    bool polling, cfg_polling;
    char *cfg_path;       /* the config file the config poller re-reads */
    unsigned cfg_seconds;
    uint8_t *cfg_text;    /* the config text applied last (or refused last), to notice changes */
    size_t cfg_len;
    bool cfg_unreadable;  /* the last attempt to read it failed (logged once) */
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

/* ---- model configurations: deep copies */

static void cfg_clear(cl_repo_model_config *c)
{
    free((char *)c->name);
    free((char *)c->base_path);
    free((int64_t *)c->versions);
    for (size_t i = 0; i < c->n_labels; i++)
        free((char *)c->labels[i].label);
    free((cl_repo_version_label *)c->labels);
    memset(c, 0, sizeof *c);
}

static int cfg_copy(cl_repo_model_config *dst, const cl_repo_model_config *src, cl_err *err)
{
    *dst = (cl_repo_model_config){.policy = src->policy, .num_versions = src->num_versions};
    dst->name = strdup(src->name ? src->name : "");
    dst->base_path = strdup(src->base_path ? src->base_path : "");
    int64_t *v = calloc(src->n_versions ? src->n_versions : 1, sizeof *v);
    cl_repo_version_label *l = calloc(src->n_labels ? src->n_labels : 1, sizeof *l);
    dst->versions = v;
    dst->labels = l;
    if (!dst->name || !dst->base_path || !v || !l) {
        cfg_clear(dst);
        return cl_err_nomem(err);
    }
    if (src->n_versions)
        memcpy(v, src->versions, src->n_versions * sizeof *v);
    dst->n_versions = src->n_versions;
    for (size_t i = 0; i < src->n_labels; i++) {
        l[i].version = src->labels[i].version;
        if (!(l[i].label = strdup(src->labels[i].label))) {
            cfg_clear(dst);
            return cl_err_nomem(err);
        }
        dst->n_labels = i + 1;
    }
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

/* The checks every configuration passes, from a file, a reload request or the command line. */
static int configs_check(const cl_repo_model_config *models, size_t n, cl_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const cl_repo_model_config *c = &models[i];
        if (!model_name_valid(c->name))
            return cl_err_set(err, CL_E_INVALID, "model name '%s' is not valid (1-128 of A-Z a-z 0-9 . _ -)",
                              c->name ? c->name : "");
        for (size_t j = 0; j < i; j++)
            if (strcmp(models[j].name, c->name) == 0)
                return cl_err_set(err, CL_E_INVALID, "model '%s' is configured twice", c->name);
        if (!c->base_path || !*c->base_path)
            return cl_err_set(err, CL_E_INVALID, "model '%s' has no base_path", c->name);
        if (c->policy > CL_REPO_POLICY_SPECIFIC)
            return cl_err_set(err, CL_E_INVALID, "model '%s': unknown version policy", c->name);
        if (c->policy == CL_REPO_POLICY_SPECIFIC && c->n_versions == 0)
            return cl_err_set(err, CL_E_INVALID, "model '%s': model_version_policy specific lists no version",
                              c->name);
        if (c->n_versions > MAX_VERSIONS_TRACKED)
            return cl_err_set(err, CL_E_INVALID, "model '%s': at most %d specific versions", c->name,
                              MAX_VERSIONS_TRACKED);
        for (size_t k = 0; k < c->n_versions; k++)
            if (c->versions[k] <= 0)
                return cl_err_set(err, CL_E_INVALID, "model '%s': version %lld is not a positive integer", c->name,
                                  (long long)c->versions[k]);
        if (c->policy == CL_REPO_POLICY_LATEST && c->num_versions > MAX_VERSIONS_TRACKED)
            return cl_err_set(err, CL_E_INVALID, "model '%s': latest { num_versions: %u }: at most %d", c->name,
                              c->num_versions, MAX_VERSIONS_TRACKED);
        for (size_t k = 0; k < c->n_labels; k++) {
            if (!cl_repo_label_valid(c->labels[k].label))
                return cl_err_set(err, CL_E_INVALID, "model '%s': version label '%s' is not valid (1-64 of A-Z a-z "
                                  "0-9 . _ -)", c->name, c->labels[k].label ? c->labels[k].label : "");
            if (c->labels[k].version <= 0)
                return cl_err_set(err, CL_E_INVALID, "model '%s': version label '%s' points at version %lld (not a "
                                  "positive integer)", c->name, c->labels[k].label, (long long)c->labels[k].version);
            for (size_t j = 0; j < k; j++)
                if (strcmp(c->labels[j].label, c->labels[k].label) == 0)
                    return cl_err_set(err, CL_E_INVALID, "model '%s': version label '%s' is given twice", c->name,
                                      c->labels[k].label);
        }
    }
    return 0;
}

/* ---- versions on disk and failures */

/* The version directories under base that hold a model file; *out is malloc()ed (NULL when none). */
#define MAX_VERSIONS_SCANNED 1024

static int scan_versions(const char *base, version_file **out, size_t *n_out, cl_err *err)
{
    *out = NULL;
    *n_out = 0;
    DIR *d = opendir(base);
    if (!d)
        return cl_err_errno(err, CL_E_IO, errno, "cannot read model base path '%s'", base);
    version_file *v = NULL;
    size_t n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        version_file vf;
        if (!version_probe(base, e->d_name, &vf))
            continue;
        if (n == MAX_VERSIONS_SCANNED) {
            closedir(d);
            free(v);
            return cl_err_set(err, CL_E_INVALID, "more than %d version directories under '%s': remove old ones",
                              MAX_VERSIONS_SCANNED, base);
        }
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            version_file *g = realloc(v, cap * sizeof *g);
            if (!g) {
                closedir(d);
                free(v);
                return cl_err_nomem(err);
            }
            v = g;
        }
        v[n++] = vf;
    }
    closedir(d);
    *out = v;
    *n_out = n;
    return 0;
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

/* Versions that failed are skipped, unless a key wait is due. */
static bool skip_failed(repo_model *m, const version_file *vf)
{
    const failed_version *f = find_failure(m, vf);
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

static bool is_loaded(const repo_model *m, int64_t v)
{
    for (size_t i = 0; i < m->n_loaded; i++)
        if (m->loaded[i] == v)
            return true;
    return false;
}

/* "versions 3, 2" / "version 2" / "no version" (highest first), for logs. */
static void loaded_str(const repo_model *m, char *buf, size_t cap)
{
    int64_t v[MAX_VERSIONS_TRACKED];
    size_t n = cl_repo_policy_select(&(cl_repo_model_config){.policy = CL_REPO_POLICY_ALL}, m->loaded, m->n_loaded,
                                     v);
    size_t o = (size_t)snprintf(buf, cap, n == 0 ? "no version" : n == 1 ? "version " : "versions ");
    for (size_t i = 0; i < n && o < cap; i++)
        o += (size_t)snprintf(buf + o, cap - o, "%s%lld", i ? ", " : "", (long long)v[i]);
}

/* Tells the registry which versions wait for their key (GetModelStatus shows them as LOADING): those
 * not loaded whose files are still there, unchanged. */
static void publish_waiting(cl_repo *r, repo_model *m)
{
    cl_serve_version_status st[MAX_VERSIONS_TRACKED];
    size_t n = 0;
    for (size_t i = 0; i < m->n_failed; i++) {
        const failed_version *f = &m->failed[i];
        if (!f->key_wait || is_loaded(m, f->version))
            continue;
        char name[32];
        snprintf(name, sizeof name, "%lld", (long long)f->version);
        version_file vf;
        if (!version_probe(m->cfg.base_path, name, &vf) || vf.mtime_ns != f->mtime_ns || vf.size != f->size)
            continue;
        st[n] = (cl_serve_version_status){.version = f->version, .code = f->code};
        if (snprintf(st[n].message, sizeof st[n].message, "%s", f->msg) < 0)
            st[n].message[0] = '\0';
        n++;
    }
    cl_err err = {0};
    if (cl_serve_registry_set_loading(r->registry, m->cfg.name, st, n, &err) != 0)
        CL_WARN(LOG, "model '%s': %s (GetModelStatus does not show the versions waiting for a key)", m->cfg.name,
                err.msg);
}

/* Waits up to `us` microseconds, or less if the repository or the process stops. Returns false when
 * stopped. */
static bool retry_wait(cl_repo *r, uint64_t us)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    uint64_t ns = (uint64_t)until.tv_nsec + (us % 1000000) * 1000;
    until.tv_sec += (time_t)(us / 1000000 + ns / 1000000000);
    until.tv_nsec = (long)(ns % 1000000000);
    pthread_mutex_lock(&r->stop_lock);
    while (!r->stop && !cl_stop_raised(r->stop_token) &&
           pthread_cond_timedwait(&r->stop_cond, &r->stop_lock, &until) != ETIMEDOUT) {
    }
    bool go_on = !r->stop && !cl_stop_raised(r->stop_token);
    pthread_mutex_unlock(&r->stop_lock);
    return go_on;
}

/* Loads one version into the registry: the file (with --max_num_load_retries further attempts, every
 * --load_retry_interval_micros, for failures that are not the key's), the warm-up, the registry.
 * Returns 0, or -1 with err set (the failure is remembered). */
static int load_version(cl_repo *r, repo_model *m, const version_file *vf, cl_err *err)
{
    cl_serve_backend b;
    int rc = -1;
    bool key_failed = false;
    unsigned attempt = 0;
    if (m->n_loaded == MAX_VERSIONS_TRACKED)
        return cl_err_set(err, CL_E_INVALID, "version %lld: %d versions of the model are served already (at most)",
                          (long long)vf->version, MAX_VERSIONS_TRACKED);
    for (;;) {
        if (vf->ambiguous) {
            rc = cl_err_set(err, CL_E_INVALID, "version %lld of model '%s' has both %s and %s: remove one",
                            (long long)vf->version, m->cfg.name, CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
            break;
        }
        rc = load_backend(vf->path, vf->sealed, r->key_fn, r->key_arg, r->engine_threads, &b, &key_failed, err);
        if (rc == 0 && r->warmup) {
            char dir[4096];
            sibling_path(vf->path, "", dir, sizeof dir);
            int n = cl_repo_warmup(&b, dir, r->warmup_iterations, err);
            if (n < 0) {
                cl_err_prefix(err, "version %lld: warm-up", (long long)vf->version);
                b.destroy(b.ctx);
                rc = -1;
            } else if (n > 0) {
                CL_INFO(LOG, "model '%s' version %lld: warmed up with %d request%s", m->cfg.name,
                        (long long)vf->version, n, n == 1 ? "" : "s");
            }
        }
        if (rc == 0 || key_failed || attempt >= r->max_load_retries || cl_stop_raised(r->stop_token))
            break;
        attempt++;
        CL_WARN(LOG, "model '%s' version %lld: %s; load retry %u of %u in %llu us", m->cfg.name,
                (long long)vf->version, err->msg, attempt, r->max_load_retries,
                (unsigned long long)r->load_retry_interval_us);
        if (!retry_wait(r, r->load_retry_interval_us))
            break;
    }
    if (rc == 0 && cl_serve_registry_add(r->registry, m->cfg.name, vf->version, &b, err) != 0) {
        b.destroy(b.ctx);
        rc = -1;
    }
    if (rc != 0 && cl_stop_raised(r->stop_token))
        return cl_err_prefix(err, "version %lld", (long long)vf->version); /* cut short: not remembered */
    if (rc != 0) {
        failed_version *f = remember_failure(m, vf);
        f->key_wait = key_failed && r->key_fn;
        if (f->key_wait) {
            f->tries++;
            unsigned delay = cl_repo_key_retry_delay_s(r->poll_seconds, f->tries);
            f->next_ms = now_ms() + (uint64_t)delay * 1000;
            f->code = key_failure_code(err->code);
            cl_err_prefix(err, "version %lld", (long long)vf->version);
            /* the message is cut if it has to be: the return values say so, and are not needed */
            if (snprintf(f->msg, sizeof f->msg, "%s; its key is asked for again in %u s", err->msg, delay) < 0)
                f->msg[0] = '\0';
            if (snprintf(err->msg, sizeof err->msg, "%s (attempt %u; retried with backoff up to every %u s while the "
                         "files are unchanged)", f->msg, f->tries, (unsigned)CL_REPO_KEY_RETRY_MAX_S) < 0)
                err->msg[0] = '\0';
        } else if (attempt) {
            char more[96];
            snprintf(more, sizeof more, " (after %u load retr%s)", attempt, attempt == 1 ? "y" : "ies");
            size_t l = strlen(err->msg);
            if (l + strlen(more) < sizeof err->msg)
                memcpy(err->msg + l, more, strlen(more) + 1);
        }
        return -1;
    }
    failed_version *f = find_failure(m, vf);
    unsigned tries = f ? f->tries : 0;
    forget_failure(m, vf);
    m->loaded[m->n_loaded++] = vf->version;
    const cl_image_spec *img = NULL;
    for (size_t i = 0; i < b.signature->n_inputs && !img; i++)
        img = b.signature->inputs[i].image;
    char imgs[200] = "", retried[80] = "", sigs[300] = "";
    for (size_t i = 0; i < b.n_sigdefs && strlen(sigs) < sizeof sigs - 140; i++)
        snprintf(sigs + strlen(sigs), sizeof sigs - strlen(sigs), "%s'%.100s'", i ? ", " : "; signatures ",
                 b.sigdefs[i].sig.name);
    if (img)
        snprintf(imgs, sizeof imgs, "; input '%s' takes %s images (%s, %ux%u)", img->input,
                 img->pre.channels == 1 ? "greyscale" : "RGB", CL_REPO_PREPROCESS_NAME, img->pre.width,
                 img->pre.height);
    if (tries)
        snprintf(retried, sizeof retried, " (its key arrived after %u failed attempt%s)", tries, tries == 1 ? "" : "s");
    else if (attempt)
        snprintf(retried, sizeof retried, " (after %u load retr%s)", attempt, attempt == 1 ? "y" : "ies");
    CL_INFO(LOG, "model '%s' version %lld loaded from %s%s%s%s%s", m->cfg.name, (long long)vf->version, vf->path,
            vf->sealed ? " (sealed, decrypted in locked memory)" : "", imgs, sigs, retried);
    return 0;
}

static void unload_version(cl_repo *r, repo_model *m, size_t i, const char *why)
{
    int64_t v = m->loaded[i];
    m->loaded[i] = m->loaded[--m->n_loaded];
    cl_serve_registry_remove(r->registry, m->cfg.name, v); /* requests on it finish first */
    CL_INFO(LOG, "model '%s' version %lld unloaded (%s)", m->cfg.name, (long long)v, why);
}

typedef enum { REFRESH_POLL, REFRESH_START_PLAIN, REFRESH_START_ALL } refresh_mode;

/* Brings the model's loaded versions to what its policy selects among the versions on disk: loads
 * what is selected and not loaded (highest first; a version that fails is left out and the policy
 * selects again without it, so an older version stands in), then unloads what is loaded and no
 * longer selected (its directory is gone, or newer versions took its place) — after the loads, so a
 * model is never left without a version while one can serve. At start-up (REFRESH_START_*) the first
 * failure is returned at once, sealed versions wait for REFRESH_START_ALL, and nothing is unloaded.
 * Returns the number of versions loaded, or -1 if one failed (err says why; it is remembered). */
static int repo_model_refresh(cl_repo *r, repo_model *m, refresh_mode mode, cl_err *err)
{
    version_file *vf;
    size_t n;
    if (scan_versions(m->cfg.base_path, &vf, &n, err) != 0)
        return -1;
    int64_t *cand = calloc(n + 1, sizeof *cand), *want = calloc(n + 1, sizeof *want);
    int loaded = 0, rc = 0;
    size_t nw = 0;
    if (!cand || !want) {
        rc = cl_err_nomem(err);
        goto out;
    }
    for (size_t iter = 0; iter <= n; iter++) {
        size_t nc = 0;
        for (size_t i = 0; i < n; i++)
            if (is_loaded(m, vf[i].version) || !skip_failed(m, &vf[i]))
                cand[nc++] = vf[i].version;
        nw = cl_repo_policy_select(&m->cfg, cand, nc, want);
        const version_file *next = NULL;
        for (size_t k = 0; k < nw && !next; k++) {
            if (is_loaded(m, want[k]))
                continue;
            for (size_t i = 0; i < n && !next; i++)
                if (vf[i].version == want[k] && !(mode == REFRESH_START_PLAIN && vf[i].sealed))
                    next = &vf[i];
        }
        if (!next)
            break;
        cl_err one = {0};
        if (load_version(r, m, next, &one) == 0) {
            loaded++;
            continue;
        }
        if (rc == 0)
            *err = one; /* the first failure is returned (cl_repo_poll logs it); later ones are logged here */
        else
            CL_ERROR(LOG, "model '%s': %s", m->cfg.name, one.msg);
        rc = -1;
        if (mode != REFRESH_POLL || cl_stop_raised(r->stop_token)) {
            *err = one;
            goto out;
        }
    }
    if (mode == REFRESH_POLL) {
        for (size_t i = m->n_loaded; i-- > 0;) {
            bool wanted = false, on_disk = false;
            for (size_t k = 0; k < nw && !wanted; k++)
                wanted = want[k] == m->loaded[i];
            for (size_t k = 0; k < n && !on_disk; k++)
                on_disk = vf[k].version == m->loaded[i];
            if (!wanted)
                unload_version(r, m, i, on_disk ? "the version policy selects others" : "its directory is gone");
        }
    }
    publish_waiting(r, m);
out:
    free(vf);
    free(cand);
    free(want);
    return rc < 0 ? -1 : loaded;
}

/* The checks of the versions a model's policy selects at start-up that need no key: there is one,
 * none is ambiguous, and for each sealed one its header is readable, its key id can be asked of the
 * key server, a key source is configured, and its preprocess.json (if any) parses (the plain ones
 * are checked whole when they load). Adds the key ids to ids[] (distinct). */
static int check_selected(const cl_repo *r, const repo_model *m, char ***ids, size_t *n_ids, cl_err *err)
{
    version_file *vf;
    size_t n;
    if (scan_versions(m->cfg.base_path, &vf, &n, err) != 0)
        return -1;
    int64_t *avail = calloc(n + 1, sizeof *avail), *want = calloc(n + 1, sizeof *want);
    int rc = 0;
    if (!avail || !want) {
        rc = cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < n; i++)
        avail[i] = vf[i].version;
    size_t nw = cl_repo_policy_select(&m->cfg, avail, n, want);
    if (nw == 0) {
        char pol[256];
        cl_repo_policy_describe(&m->cfg, pol, sizeof pol);
        if (n == 0)
            rc = cl_err_set(err, CL_E_IO, "no model version under '%s': expected <version>/%s or <version>/%s "
                            "(version a positive integer)", m->cfg.base_path, CL_REPO_PLAIN_NAME,
                            CL_REPO_SEALED_NAME);
        else
            rc = cl_err_set(err, CL_E_IO, "none of the versions under '%s' is one its version policy (%s) selects",
                            m->cfg.base_path, pol);
        goto out;
    }
    for (size_t k = 0; k < nw && rc == 0; k++) {
        const version_file *v = NULL;
        for (size_t i = 0; i < n && !v; i++)
            if (vf[i].version == want[k])
                v = &vf[i];
        if (v->ambiguous) {
            rc = cl_err_set(err, CL_E_INVALID, "version %lld has both %s and %s: remove one", (long long)v->version,
                            CL_REPO_PLAIN_NAME, CL_REPO_SEALED_NAME);
            break;
        }
        if (!v->sealed)
            continue;
        cl_seal_header h;
        if (cl_seal_header_read_file(v->path, &h, err) != 0 || check_key_id(v->path, h.key_id, err) != 0) {
            rc = -1;
            break;
        }
        if (!r->key_fn) {
            rc = cl_err_set(err, CL_E_KEY, "model key '%s' is needed for a sealed model: start the server with "
                            "--keyserver HOST:PORT --keyserver-ca CA.pem (and --evidence) to open %s", h.key_id,
                            v->path);
            break;
        }
        char pp[4200];
        struct stat st;
        sibling_path(v->path, CL_REPO_PREPROCESS_NAME, pp, sizeof pp);
        cl_image_spec spec;
        if (lstat(pp, &st) == 0 && cl_image_spec_load(pp, &spec, err) != 0) {
            rc = -1;
            break;
        }
        /* signatures.json: its JSON now (strict reader); its fit to the model once the model is decrypted */
        sibling_path(v->path, CL_REPO_SIGNATURES_NAME, pp, sizeof pp);
        json_t *sigs = lstat(pp, &st) == 0 ? cl_json_load(pp, CL_SERVE_SIGS_FILE_MAX, err) : NULL;
        if (lstat(pp, &st) == 0 && !sigs) {
            rc = -1;
            break;
        }
        json_decref(sigs);
        bool dup = false;
        for (size_t j = 0; j < *n_ids && !dup; j++)
            dup = strcmp((*ids)[j], h.key_id) == 0;
        if (dup)
            continue;
        char **g = realloc(*ids, (*n_ids + 1) * sizeof *g);
        if (!g || !(g[*n_ids] = strdup(h.key_id))) {
            if (g)
                *ids = g;
            rc = cl_err_nomem(err);
            break;
        }
        *ids = g;
        (*n_ids)++;
    }
out:
    free(vf);
    free(avail);
    free(want);
    return rc;
}

static repo_model *model_find(cl_repo *r, const char *name)
{
    for (size_t i = 0; i < r->n_models; i++)
        if (strcmp(r->models[i]->cfg.name, name) == 0)
            return r->models[i];
    return NULL;
}

/* TF Serving's rule for version labels: a label may only point at a version available now — unless
 * allow_unavailable_labels, and then still when it moves an existing label to another version.
 * Checked for a whole configuration before anything of it is applied. */
static int labels_check(cl_repo *r, const cl_repo_model_config *models, size_t n, cl_err *err)
{
    for (size_t i = 0; i < n; i++) {
        const cl_repo_model_config *c = &models[i];
        repo_model *m = model_find(r, c->name);
        for (size_t k = 0; k < c->n_labels; k++) {
            const cl_repo_version_label *l = &c->labels[k];
            bool any = false;
            if (r->allow_unavailable_labels) {
                int64_t old;
                cl_err ignored = {0};
                any = !(cl_serve_registry_label(r->registry, c->name, l->label, &old, &ignored) == 0 &&
                        old != l->version);
            }
            if (!any && !(m && is_loaded(m, l->version)))
                return cl_err_set(err, CL_E_INVALID, "Request to assign label to version %lld of model %s, which is "
                                  "not currently available for inference", (long long)l->version, c->name);
        }
    }
    return 0;
}

static int labels_publish(cl_repo *r, const cl_repo_model_config *c, cl_err *err)
{
    const char **names = calloc(c->n_labels ? c->n_labels : 1, sizeof *names);
    int64_t *versions = calloc(c->n_labels ? c->n_labels : 1, sizeof *versions);
    int rc = -1;
    if (!names || !versions)
        cl_err_nomem(err);
    else {
        for (size_t k = 0; k < c->n_labels; k++) {
            names[k] = c->labels[k].label;
            versions[k] = c->labels[k].version;
        }
        rc = cl_serve_registry_set_labels(r->registry, c->name, names, versions, c->n_labels, err);
    }
    free(names);
    free(versions);
    return rc;
}

static void model_free(repo_model *m)
{
    if (!m)
        return;
    cfg_clear(&m->cfg);
    free(m);
}

static repo_model *model_new(const cl_repo_model_config *c, cl_err *err)
{
    repo_model *m = calloc(1, sizeof *m);
    if (!m) {
        cl_err_nomem(err);
        return NULL;
    }
    if (cfg_copy(&m->cfg, c, err) != 0) {
        free(m);
        return NULL;
    }
    return m;
}

void cl_repo_free(cl_repo *r)
{
    if (!r)
        return;
    pthread_mutex_lock(&r->stop_lock);
    r->stop = true;
    pthread_cond_broadcast(&r->stop_cond);
    pthread_mutex_unlock(&r->stop_lock);
    if (r->polling)
        pthread_join(r->poller, NULL);
    if (r->cfg_polling)
        pthread_join(r->cfg_poller, NULL);
    for (size_t i = 0; i < r->n_models; i++)
        model_free(r->models[i]);
    free(r->models);
    free(r->cfg_path);
    free(r->cfg_text);
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
    char **ids = NULL;
    size_t n_ids = 0;
    cl_repo *r = calloc(1, sizeof *r);
    if (!r || !(r->models = calloc(o->n_models, sizeof *r->models))) {
        free(r);
        cl_err_nomem(err);
        return NULL;
    }
    r->registry = o->registry;
    r->key_fn = o->key_fn;
    r->key_arg = o->key_arg;
    r->engine_threads = o->engine_threads;
    r->stop_token = o->stop;
    r->allow_unavailable_labels = o->allow_unavailable_labels;
    r->max_load_retries = o->max_load_retries;
    r->load_retry_interval_us = o->load_retry_interval_us;
    r->warmup = o->warmup;
    r->warmup_iterations = o->warmup_iterations ? o->warmup_iterations : 1;
    pthread_mutex_init(&r->lock, NULL);
    pthread_mutex_init(&r->stop_lock, NULL);
    pthread_cond_init(&r->stop_cond, NULL);
    if (configs_check(o->models, o->n_models, err) != 0)
        goto fail;
    for (size_t i = 0; i < o->n_models; i++) {
        if (!(r->models[i] = model_new(&o->models[i], err)))
            goto fail;
        r->n_models = i + 1;
    }
    /* the labels first, as TF Serving applies them: before the versions load */
    if (labels_check(r, o->models, o->n_models, err) != 0)
        goto fail;
    for (size_t i = 0; i < r->n_models; i++)
        if (labels_publish(r, &r->models[i]->cfg, err) != 0)
            goto fail;
    /* 1. Everything that needs no key: the version directories, the sealed headers and their key ids,
     * preprocess.json, the plain models (loaded). */
    for (size_t i = 0; i < r->n_models; i++) {
        repo_model *m = r->models[i];
        if (check_selected(r, m, &ids, &n_ids, err) != 0 || repo_model_refresh(r, m, REFRESH_START_PLAIN, err) < 0) {
            cl_err_prefix(err, "model '%s'", m->cfg.name);
            goto fail;
        }
    }
    /* 2. The keys (the key server is contacted only now), then the sealed models. */
    if (n_ids && o->before_sealed && o->before_sealed(o->before_sealed_arg, ids, n_ids, err) != 0)
        goto fail;
    for (size_t i = 0; i < r->n_models; i++) {
        if (repo_model_refresh(r, r->models[i], REFRESH_START_ALL, err) < 0) {
            cl_err_prefix(err, "model '%s'", r->models[i]->cfg.name);
            goto fail;
        }
    }
    cl_repo_key_ids_free(ids, n_ids);
    return r;
fail:
    cl_repo_key_ids_free(ids, n_ids);
    cl_repo_free(r);
    return NULL;
}

/* The same poll error again and again (a model directory that vanished is seen at every poll) is
 * logged once, then once every POLL_ERROR_REPEAT_MS with how often it recurred; its end is logged. */
#define POLL_ERROR_REPEAT_MS 300000u

static void poll_report(repo_model *m, int rc, const cl_err *err)
{
    uint64_t now = now_ms();
    if (rc >= 0) {
        if (m->last_error[0] && m->repeated) /* a condition that lasted (not one failed version) is over */
            CL_INFO(LOG, "model '%s': polls succeed again (after %u polls with: %s)", m->cfg.name, m->repeated + 1,
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
    char serving[200];
    loaded_str(m, serving, sizeof serving);
    if (again)
        CL_ERROR(LOG, "model '%s': still: %s (%u more polls in %u s); %s %s serving", m->cfg.name, err->msg,
                 m->repeated, (unsigned)((now - m->last_error_ms) / 1000), serving,
                 m->n_loaded == 1 ? "keeps" : m->n_loaded ? "keep" : "is");
    else
        CL_ERROR(LOG, "model '%s': %s; %s %s serving", m->cfg.name, err->msg, serving,
                 m->n_loaded == 1 ? "keeps" : m->n_loaded ? "keep" : "is");
    snprintf(m->last_error, sizeof m->last_error, "%s", err->msg);
    m->last_error_ms = now;
    m->repeated = 0;
}

/* cl_repo_poll with r->lock held. */
static int poll_locked(cl_repo *r)
{
    int loaded = 0;
    for (size_t i = 0; i < r->n_models && !cl_stop_raised(r->stop_token); i++) {
        repo_model *m = r->models[i];
        cl_err err = {0};
        int rc = repo_model_refresh(r, m, REFRESH_POLL, &err);
        if (rc > 0)
            loaded += rc;
        if (rc < 0 && cl_stop_raised(r->stop_token)) /* cut short by the shutdown: not a failure to report */
            CL_INFO(LOG, "model '%s': stopping (%s)", m->cfg.name, err.msg);
        else
            poll_report(m, rc, &err);
    }
    return loaded;
}

int cl_repo_poll(cl_repo *r)
{
    pthread_mutex_lock(&r->lock);
    int loaded = poll_locked(r);
    pthread_mutex_unlock(&r->lock);
    return loaded;
}

/* Waits `seconds` on the stop condition; false once the repository or the process stops. */
static bool poll_wait(cl_repo *r, unsigned seconds)
{
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += seconds;
    pthread_mutex_lock(&r->stop_lock);
    while (!r->stop && pthread_cond_timedwait(&r->stop_cond, &r->stop_lock, &until) != ETIMEDOUT) {
    }
    bool stop = r->stop || cl_stop_raised(r->stop_token);
    pthread_mutex_unlock(&r->stop_lock);
    return !stop;
}

static void *poll_main(void *arg)
{
    cl_repo *r = arg;
    while (poll_wait(r, r->poll_seconds))
        cl_repo_poll(r);
    return NULL;
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

/* ---------------------------------------------------------------- configuration reloads */

int cl_repo_reload(cl_repo *r, const cl_repo_model_config *models, size_t n, cl_serve_code *code, cl_err *err)
{
    *code = CL_SC_OK;
    if (configs_check(models, n, err) != 0) {
        *code = CL_SC_INVALID_ARGUMENT;
        return -1;
    }
    pthread_mutex_lock(&r->lock);
    int rc = -1;
    repo_model **next = calloc(n ? n : 1, sizeof *next);
    bool *fresh = calloc(n ? n : 1, sizeof *fresh);
    if (!next || !fresh) {
        cl_err_nomem(err);
        *code = CL_SC_RESOURCE_EXHAUSTED;
        goto out;
    }
    if (labels_check(r, models, n, err) != 0) {
        *code = CL_SC_FAILED_PRECONDITION;
        goto out;
    }
    /* the new configurations, copied (nothing is changed until all of them are) */
    cl_repo_model_config *copies = calloc(n ? n : 1, sizeof *copies);
    if (!copies) {
        cl_err_nomem(err);
        *code = CL_SC_RESOURCE_EXHAUSTED;
        goto out;
    }
    for (size_t i = 0; i < n; i++) {
        if (cfg_copy(&copies[i], &models[i], err) != 0) {
            for (size_t j = 0; j < i; j++)
                cfg_clear(&copies[j]);
            free(copies);
            *code = CL_SC_RESOURCE_EXHAUSTED;
            goto out;
        }
    }
    for (size_t i = 0; i < n; i++) {
        repo_model *m = model_find(r, copies[i].name);
        if (!m) {
            m = calloc(1, sizeof *m);
            if (!m) { /* what was made so far is given back; the old configuration stays */
                for (size_t j = 0; j < i; j++)
                    if (fresh[j])
                        free(next[j]);
                for (size_t j = 0; j < n; j++)
                    cfg_clear(&copies[j]);
                free(copies);
                cl_err_nomem(err);
                *code = CL_SC_RESOURCE_EXHAUSTED;
                goto out;
            }
            fresh[i] = true;
        }
        next[i] = m;
    }
    /* from here on the new configuration is applied: the models that are gone first */
    for (size_t i = 0; i < r->n_models; i++) {
        repo_model *m = r->models[i];
        bool kept = false;
        for (size_t j = 0; j < n && !kept; j++)
            kept = next[j] == m;
        if (kept)
            continue;
        while (m->n_loaded)
            unload_version(r, m, m->n_loaded - 1, "the model is no longer in the configuration");
        cl_serve_registry_set_loading(r->registry, m->cfg.name, NULL, 0, err);
        cl_serve_registry_set_labels(r->registry, m->cfg.name, NULL, NULL, 0, err);
        CL_INFO(LOG, "model '%s' removed (no longer in the configuration)", m->cfg.name);
        model_free(m);
    }
    for (size_t i = 0; i < n; i++) {
        repo_model *m = next[i];
        bool moved = !fresh[i] && strcmp(m->cfg.base_path, copies[i].base_path) != 0;
        cfg_clear(&m->cfg);
        m->cfg = copies[i];
        if (moved)
            m->n_failed = 0; /* other files: earlier failures say nothing about them */
        char pol[256];
        cl_repo_policy_describe(&m->cfg, pol, sizeof pol);
        if (fresh[i])
            CL_INFO(LOG, "model '%s' added (base path %s, version policy %s)", m->cfg.name, m->cfg.base_path, pol);
    }
    free(copies);
    free(r->models);
    r->models = next;
    r->n_models = n;
    next = NULL;
    rc = 0;
    cl_err lerr = {0};
    for (size_t i = 0; i < r->n_models; i++)
        if (labels_publish(r, &r->models[i]->cfg, &lerr) != 0)
            CL_WARN(LOG, "model '%s': %s (its labels are not updated)", r->models[i]->cfg.name, lerr.msg);
    /* then the versions: what the models (new or changed) now select is loaded, the rest unloaded */
    for (size_t i = 0; i < r->n_models; i++) {
        repo_model *m = r->models[i];
        cl_err one = {0};
        int lrc = repo_model_refresh(r, m, REFRESH_POLL, &one);
        poll_report(m, lrc, &one);
        if (lrc < 0 && rc == 0) {
            cl_err_prefix(&one, "model '%s'", m->cfg.name);
            *err = one;
            *code = one.code == CL_E_DENIED ? CL_SC_PERMISSION_DENIED : CL_SC_UNAVAILABLE;
            rc = -1;
        } else if (fresh[i] && m->n_loaded == 0 && rc == 0) {
            cl_err_set(err, CL_E_IO, "model '%s': no version of it could be loaded from '%s'", m->cfg.name,
                       m->cfg.base_path);
            *code = CL_SC_UNAVAILABLE;
            rc = -1;
        }
    }
    CL_INFO(LOG, "model configuration applied: %zu model%s%s", r->n_models, r->n_models == 1 ? "" : "s",
            rc == 0 ? "" : " (some versions failed to load; see above)");
out:
    free(next);
    free(fresh);
    pthread_mutex_unlock(&r->lock);
    return rc;
}

/* The config file poller: the file is read again every cfg_seconds; a text that differs from the one
 * seen last is parsed and applied. A file that cannot be read or parsed keeps the configuration being
 * served (logged once per distinct text). */
static void config_poll_once(cl_repo *r)
{
    uint8_t *buf;
    size_t len;
    cl_err err = {0};
    if (cl_file_read(r->cfg_path, 1 << 20, &buf, &len, &err) != 0) {
        if (!r->cfg_unreadable)
            CL_ERROR(LOG, "model config '%s': %s; the configuration being served stays", r->cfg_path, err.msg);
        r->cfg_unreadable = true;
        return;
    }
    r->cfg_unreadable = false;
    if (r->cfg_text && r->cfg_len == len && memcmp(r->cfg_text, buf, len) == 0) {
        free(buf);
        return;
    }
    free(r->cfg_text);
    r->cfg_text = buf;
    r->cfg_len = len;
    cl_repo_model_config *models;
    size_t n;
    if (cl_repo_config_parse((const char *)buf, len, &models, &n, &err) != 0) {
        CL_ERROR(LOG, "model config '%s': %s; the configuration being served stays", r->cfg_path, err.msg);
        return;
    }
    cl_serve_code code;
    CL_INFO(LOG, "model config '%s' changed: applying it", r->cfg_path);
    if (cl_repo_reload(r, models, n, &code, &err) != 0)
        CL_ERROR(LOG, "model config '%s': %s: %s", r->cfg_path, cl_serve_code_name(code), err.msg);
    cl_repo_config_free(models, n);
}

static void *config_poll_main(void *arg)
{
    cl_repo *r = arg;
    while (poll_wait(r, r->cfg_seconds))
        config_poll_once(r);
    return NULL;
}

int cl_repo_start_config_polling(cl_repo *r, const char *path, unsigned seconds, cl_err *err)
{
    if (r->cfg_polling)
        return cl_err_set(err, CL_E_INVALID, "the repository already polls its config file");
    if (seconds == 0)
        return cl_err_set(err, CL_E_INVALID, "the config poll interval must be at least one second");
    if (!(r->cfg_path = strdup(path)))
        return cl_err_nomem(err);
    /* the text applied at start-up is the baseline: only a change is applied */
    size_t len;
    if (cl_file_read(path, 1 << 20, &r->cfg_text, &len, err) != 0)
        return -1;
    r->cfg_len = len;
    r->cfg_seconds = seconds;
    int e = pthread_create(&r->cfg_poller, NULL, config_poll_main, r);
    if (e != 0)
        return cl_err_errno(err, CL_E_INTERNAL, e, "cannot start the model config polling thread");
    r->cfg_polling = true;
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
    char **out = NULL;
    size_t n = 0;
    cl_repo probe = {0}; /* check_selected's key source check: a key source is assumed */
    probe.key_fn = cl_repo_keysource_get;
    for (size_t i = 0; i < n_models; i++) {
        repo_model m = {.cfg = models[i]};
        if (check_selected(&probe, &m, &out, &n, err) != 0) {
            cl_repo_key_ids_free(out, n);
            return cl_err_prefix(err, "model '%s'", models[i].name);
        }
    }
    if (!out && !(out = calloc(1, sizeof *out)))
        return cl_err_nomem(err);
    *ids = out;
    *n_ids = n;
    return 0;
}
