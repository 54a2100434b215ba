/* cloister/repo.h — the interface of the repo module: the model repository behind `cloister serve`.
 * It finds model versions on disk in TF Serving's layout (base_path/<version>/model.onnx or
 * model.onnx.sealed), opens sealed versions with keys from a caller-supplied key source (the key
 * server, at start-up), loads them into the engine straight from locked memory, and publishes them
 * in a serving registry as engine-backed backends. It keeps the latest version of each model (TF
 * Serving's default version policy) and, when polled, swaps in newer versions without dropping
 * requests; a version that fails to load leaves the previous one serving. A version directory may also
 * hold preprocess.json, declaring image preprocessing for one input (clients may then send encoded
 * images); it is validated against the model when the version loads, and a bad one fails the version.
 *
 * Ownership: the repository borrows the registry and the model configurations (strings are copied).
 * Thread-safety: cl_repo_poll may be called from any thread (calls are serialised internally); the
 * polling thread started by cl_repo_start_polling calls it periodically. The key callback is only
 * called from inside cl_repo_new / cl_repo_poll. */
#ifndef CLOISTER_REPO_H
#define CLOISTER_REPO_H

#include "cloister/common.h"
#include "cloister/engine.h"
#include "cloister/keyserver.h"
#include "cloister/seal.h"
#include "cloister/serve.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_REPO_PLAIN_NAME "model.onnx"
#define CL_REPO_SEALED_NAME "model.onnx.sealed"
/* Optional, beside the model file: the image preprocessing of one of the model's inputs (not secret;
 * cl_image_spec_parse, docs/serve.md "Image inputs"). */
#define CL_REPO_PREPROCESS_NAME "preprocess.json"
/* TensorFlow (issue 16): a version directory may instead hold a SavedModel (saved_model.pb and
 * variables/, each file plain or sealed on its own as NAME.sealed) or a frozen GraphDef (model.pb or
 * model.pb.sealed). A legacy SessionBundle (export.meta) is found too, and refused when it loads. */
#define CL_REPO_TF_SAVEDMODEL_NAME "saved_model.pb"
#define CL_REPO_TF_FROZEN_NAME "model.pb"
#define CL_REPO_TF_LEGACY_NAME "export.meta"

/* A SavedModel directory's files in memory (repo/tfdir.c); secure[i]: f[i].data is in secure memory
 * (it was sealed). Free with cl_repo_files_free. */
typedef struct cl_repo_files {
    cl_engine_file *f;
    bool *secure;
    size_t n;
} cl_repo_files;

/* Supplies the wrap key for a sealed model's key id. Returns 0 with the key copied into `key`, or -1
 * with err set (e.g. CL_E_DENIED when the key server did not release it). */
typedef int (*cl_repo_key_fn)(void *arg, const char *key_id, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);

typedef struct cl_repo_model_config {
    const char *name;      /* the model name clients ask for */
    const char *base_path; /* directory holding numbered version directories */
} cl_repo_model_config;

typedef struct cl_repo_options {
    cl_serve_registry *registry;
    const cl_repo_model_config *models;
    size_t n_models;
    cl_repo_key_fn key_fn; /* NULL: sealed models cannot be opened (a clear error says so) */
    void *key_arg;
    int engine_threads;    /* cl_engine_options.threads */
    /* Called by cl_repo_new once every check that needs no key has passed and before the first sealed
     * model is opened, with the distinct key ids the sealed models need (not called when none is
     * sealed); non-zero fails cl_repo_new. `cloister serve` fetches the keys here, so a key is
     * released only to a server whose every local check has passed. NULL: keys come from key_fn. */
    int (*before_sealed)(void *arg, char *const *key_ids, size_t n, cl_err *err);
    void *before_sealed_arg;
    /* Optional, borrowed: the process's stop token (the one the key source's options carry). Once
     * raised, the polling thread polls no more and a poll's failures are not recorded as failed
     * versions (they were cut short by the stop, not refused); cl_repo_free still joins the thread. */
    const cl_stop *stop;
} cl_repo_options;

typedef struct cl_repo cl_repo;

/* Creates the repository and loads the newest version of every model. Fails if a model has no
 * version directory at all, or if its newest version does not load (the message says why): at
 * start-up an older version is never served silently in place of the one deployed; only later
 * polls keep the previous version serving when a new one fails. Model names must be unique and
 * valid ([A-Za-z0-9._-], 1-128 characters). The order: every model's newest version is checked
 * without keys (exists, not both plain and sealed, sealed header readable with a key id that is a key
 * server secret name, a key source configured, preprocess.json parses) and the plain models are
 * loaded; then before_sealed; then the sealed models are opened. */
cl_repo *cl_repo_new(const cl_repo_options *opts, cl_err *err);
/* Stops polling (if started) and frees the repository; the registry keeps what is loaded. */
void cl_repo_free(cl_repo *r);

/* Rescans every base path once: a version newer than the one served is loaded and swapped in, and
 * the older one is removed from the registry (in-flight requests finish on it). Versions that fail
 * to load are logged and remembered (not retried until their files change), except those that
 * failed for want of their key (the key source denied it or could not reach the key server): those
 * are retried at the polls after cl_repo_key_retry_delay_s, while the registry lists them as LOADING
 * with the last attempt's code and message (GetModelStatus). Returns the number of versions newly
 * loaded. */
int cl_repo_poll(cl_repo *r);
/* The wait before retrying a version whose key could not be had, after `tries` failed attempts: the
 * poll interval (at least 1 s) doubled per attempt, at most CL_REPO_KEY_RETRY_MAX_S. */
#define CL_REPO_KEY_RETRY_MAX_S 300
unsigned cl_repo_key_retry_delay_s(unsigned poll_seconds, unsigned tries);
/* Polls every `seconds` seconds on a background thread until cl_repo_free. */
int cl_repo_start_polling(cl_repo *r, unsigned seconds, cl_err *err);

/* The highest-numbered version directory under base_path that holds a model file; *sealed tells
 * which kind. Returns 0 if one was found, -1 (err set) if none. */
int cl_repo_latest_version(const char *base_path, int64_t *version, bool *sealed, cl_err *err);

/* The distinct key ids of the sealed models that would be loaded (the latest version of each
 * model), so a server can ask the key server for exactly those. A key id that is not a key server
 * secret name (a file sealed by an earlier release) is an error naming the file. *ids is a malloc()ed
 * array of malloc()ed strings; free with cl_repo_key_ids_free. */
int cl_repo_key_ids(const cl_repo_model_config *models, size_t n_models, char ***ids, size_t *n_ids, cl_err *err);
void cl_repo_key_ids_free(char **ids, size_t n_ids);

/* ---------------------------------------------------------------- keys from the key server */

/* A key source backed by the key server: keys are fetched with RA-TLS (cl_provision_fetch) and
 * cached in secure memory. cl_repo_keysource_new checks the options (server syntax, the CA file)
 * without contacting anyone. cl_repo_keysource_prefetch makes the options' rounds of retries and
 * back-off; cl_repo_keysource_get is a cl_repo_key_fn: a key id not fetched yet (a new sealed version
 * found by polling) is fetched on demand in one round over the servers (the repository retries it at
 * later polls). Denied keys are not cached, so asking again reaches the key server. With the options'
 * stop token raised, a fetch in progress ends at once (its connect, TLS I/O or backoff) and fails.
 * The options are copied; what they point to (servers, CA path, identity) is borrowed and must
 * outlive the source. Their `names` are ignored. Thread-safe. */
typedef struct cl_repo_keysource cl_repo_keysource;
cl_repo_keysource *cl_repo_keysource_new(const cl_provision_options *o, cl_err *err);
/* Fetches these key ids in one exchange; fails (CL_E_DENIED, naming them) if any is refused. */
int cl_repo_keysource_prefetch(cl_repo_keysource *ks, char *const *key_ids, size_t n, cl_err *err);
int cl_repo_keysource_get(void *ks, const char *key_id, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);
/* Zeroizes and frees every cached key. */
void cl_repo_keysource_free(cl_repo_keysource *ks);

/* Parses TF Serving's --model_config_file (ModelServerConfig in protobuf text format):
 *     model_config_list {
 *       config { name: "resnet" base_path: "/models/resnet" model_platform: "onnx" }
 *       config { ... }
 *     }
 * Fields of a config: name and base_path (required), model_platform ("onnx", or "tensorflow" for
 * configs written for TF Serving; anything else is refused). '#' starts a comment; strings take single
 * or double quotes with C escapes. Anything else (version policies, labels, unknown fields) is an error
 * naming its line. *models is malloc()ed, strings included; free with cl_repo_config_free. */
int cl_repo_config_parse(const char *text, size_t len, cl_repo_model_config **models, size_t *n_models,
                         cl_err *err);
int cl_repo_config_load(const char *path, cl_repo_model_config **models, size_t *n_models, cl_err *err);
void cl_repo_config_free(cl_repo_model_config *models, size_t n_models);

/* Loads one model file (plain ONNX or sealed; sealed needs key_fn) into the engine and wraps it as
 * a serving backend (signature from the model; float/int/bool tensors mapped between TF and ONNX
 * numbering). If preprocess.json is beside the file, it is parsed and checked against the input it
 * names (which must exist, be float, rank 4 and match the declared colour, size and layout), and that
 * input then takes encoded images; any problem fails the load with a message naming the file.
 * On success the caller owns *out (hand it to cl_serve_registry_add). */
int cl_repo_load_backend(const char *path, bool sealed, cl_repo_key_fn key_fn, void *key_arg, int engine_threads,
                         cl_serve_backend *out, cl_err *err);

/* Reads the SavedModel in `dir` (saved_model.pb, variables/variables.index, variables/variables.data-*,
 * each plain or NAME.sealed, opened with key_fn; *key_failed (may be NULL) tells a failure for want of a
 * key); a directory holding only export.meta gives that file, for the engine to refuse by name. */
int cl_repo_savedmodel_read(const char *dir, cl_repo_key_fn key_fn, void *key_arg, cl_repo_files *out,
                            bool *key_failed, cl_err *err);
void cl_repo_files_free(cl_repo_files *files);

#ifdef __cplusplus
}
#endif
#endif
