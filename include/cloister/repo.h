/* cloister/repo.h — the interface of the repo module: the model repository behind `cloister serve`.
 * It finds model versions on disk in TF Serving's layout (base_path/<version>/model.onnx or
 * model.onnx.sealed), opens sealed versions with keys from a caller-supplied key source (the key
 * server, at start-up), loads them into the engine straight from locked memory, and publishes them
 * in a serving registry as engine-backed backends. It keeps the versions each model's version policy
 * selects (TF Serving's latest N, all, specific; default the latest one) and, when polled, loads and
 * unloads versions as their directories appear and disappear, without dropping requests; a version
 * that fails to load leaves the previous one serving. Version labels go to the registry; the
 * configuration can be replaced while serving (cl_repo_reload, the config file poller). A version directory may also
 * hold preprocess.json, declaring image preprocessing for one input (clients may then send encoded
 * images); it is validated against the model when the version loads, and a bad one fails the version.
 *
 * Ownership: the repository borrows the registry and the model configurations (strings are copied).
 * Thread-safety: cl_repo_poll and cl_repo_reload may be called from any thread (calls are serialised
 * internally); the polling threads started by cl_repo_start_polling / cl_repo_start_config_polling
 * call them periodically. The key callback is only
 * called from inside cl_repo_new / cl_repo_poll. */
#ifndef CLOISTER_REPO_H
#define CLOISTER_REPO_H

#include "cloister/common.h"
#include "cloister/engine.h"
#include "cloister/provision.h"
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
/* The signatures of a model version (docs/serve.md "Signatures"), beside its model file; optional. */
#define CL_REPO_SIGNATURES_NAME "signatures.json"
/* TensorFlow: a version directory may instead hold a SavedModel (saved_model.pb and
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

/* TF Serving's ServableVersionPolicy: which of the version directories on disk are served. */
typedef enum cl_repo_policy_kind {
    CL_REPO_POLICY_LATEST = 0, /* the num_versions highest (default: latest { num_versions: 1 }) */
    CL_REPO_POLICY_ALL,        /* every version on disk */
    CL_REPO_POLICY_SPECIFIC,   /* the listed versions that are on disk */
} cl_repo_policy_kind;

typedef struct cl_repo_version_label {
    const char *label; /* 1-64 of [A-Za-z0-9._-] (they go in REST paths) */
    int64_t version;
} cl_repo_version_label;

/* One model of the configuration (ModelConfig). Fields after base_path may stay zero: the default
 * policy (latest 1) and no labels. */
typedef struct cl_repo_model_config {
    const char *name;      /* the model name clients ask for */
    const char *base_path; /* directory holding numbered version directories */
    cl_repo_policy_kind policy;
    unsigned num_versions;  /* CL_REPO_POLICY_LATEST: how many (0 counts as 1) */
    const int64_t *versions; /* CL_REPO_POLICY_SPECIFIC: the versions, n_versions of them */
    size_t n_versions;
    const cl_repo_version_label *labels; /* version_labels, n_labels of them (distinct labels) */
    size_t n_labels;
} cl_repo_model_config;

/* The versions the policy of `mc` selects among those available, `avail[0..n)` (any order, distinct):
 * written to out[] (room for n) highest first; returns how many. */
size_t cl_repo_policy_select(const cl_repo_model_config *mc, const int64_t *avail, size_t n, int64_t *out);
/* "latest 2", "all", "specific [1, 3]" for logs. */
void cl_repo_policy_describe(const cl_repo_model_config *mc, char *buf, size_t cap);
/* Whether a version label is acceptable (the alphabet above). */
bool cl_repo_label_valid(const char *label);

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
    /* --allow_version_labels_for_unavailable_models: a label may point at a version not loaded (yet),
     * except when it moves an existing label to another version (TF Serving's rule). */
    bool allow_unavailable_labels;
    /* --max_num_load_retries / --load_retry_interval_micros: a version whose load fails (for another
     * reason than its key, which has its own schedule) is tried again this many times, waiting this
     * long before each (the wait ends with the stop token). 0: one attempt. */
    unsigned max_load_retries;
    uint64_t load_retry_interval_us;
    /* --enable_model_warmup / --num_request_iterations_for_warmup (0 counts as 1): before a version is
     * served, the requests of its assets.extra/tf_serving_warmup_requests are run, or one synthetic
     * request per signature when there is none (cl_repo_warmup); a failure fails the version. */
    bool warmup;
    unsigned warmup_iterations;
} cl_repo_options;

typedef struct cl_repo cl_repo;

/* Creates the repository and loads the versions each model's policy selects. Fails if a model has
 * no version directory its policy selects, or if one of those does not load (the message says why):
 * at start-up an older version is never served silently in place of the one deployed; only later
 * polls keep the previous version serving when a new one fails. Model names must be unique and
 * valid ([A-Za-z0-9._-], 1-128 characters). Labels are checked first, as TF Serving does (so without
 * allow_unavailable_labels a label fails here: nothing is available yet). The order: every selected
 * version is checked without keys (exists, not both plain and sealed, sealed header readable with a
 * key id that is a key server secret name, a key source configured, preprocess.json parses) and the
 * plain ones are loaded; then before_sealed; then the sealed ones are opened. */
cl_repo *cl_repo_new(const cl_repo_options *opts, cl_err *err);
/* Stops polling (if started) and frees the repository; the registry keeps what is loaded. */
void cl_repo_free(cl_repo *r);

/* Rescans every base path once: the versions the policy selects and not loaded are loaded (a newer
 * one, or an older one when the newest directory was removed), then those no longer selected are
 * removed from the registry (in-flight requests finish on them). Versions that fail
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

/* Replaces the configuration (TF Serving's ReloadConfig: the new list supersedes the old one): models
 * not in it are unloaded (requests in flight finish), new ones added and loaded, the others take their
 * new policy, base path and labels; the versions are then brought to what each policy selects. A
 * configuration that is not valid, or whose labels break TF's rule (they are checked first, against
 * the versions available now), changes nothing: -1 with *code INVALID_ARGUMENT or
 * FAILED_PRECONDITION. When it was applied but a version of it failed to load (a sealed model's key
 * not released, a file that does not load, a new model without any version), -1 with *code
 * UNAVAILABLE or PERMISSION_DENIED and the reason; the configuration stays applied and later polls
 * retry as for any version. Returns 0 with *code OK otherwise. Serialised with polls. */
int cl_repo_reload(cl_repo *r, const cl_repo_model_config *models, size_t n, cl_serve_code *code, cl_err *err);
/* --model_config_file_poll_wait_seconds: re-reads `path` every `seconds` on a thread of its own and
 * applies it (cl_repo_reload) when its text changed; a file that cannot be read or parsed keeps the
 * configuration being served, logged once per distinct text. */
int cl_repo_start_config_polling(cl_repo *r, const char *path, unsigned seconds, cl_err *err);
/* A serialised tensorflow.serving.ReloadConfigRequest -> cl_repo_reload. Only a model_config_list is
 * accepted (TF: "It is only legal to transition from one ModelConfigList to another"); its fields as
 * the text format's. *code and err as cl_repo_reload (INVALID_ARGUMENT for a message that does not
 * parse). */
int cl_repo_reload_request(cl_repo *r, const uint8_t *msg, size_t len, cl_serve_code *code, cl_err *err);

/* ---------------------------------------------------------------- warm-up */

/* TF Serving's warm-up file, beside the version's model: a TFRecord file of PredictionLog records. */
#define CL_REPO_WARMUP_FILE "assets.extra/tf_serving_warmup_requests"
#define CL_REPO_WARMUP_MAX_RECORDS 1000     /* TF's limit too */
#define CL_REPO_WARMUP_MAX_BYTES (64u << 20) /* the file, and one record */
/* Calls fn for each record of a TFRecord file held in buf: framing u64 length (little-endian), masked
 * CRC-32C of the length, the data, masked CRC-32C of the data; both CRCs are checked, lengths bounded
 * by what is left and by max_record. A damaged, truncated or oversized record is an error naming its
 * index and offset; fn returning non-zero stops with its error. Returns the count of records, or -1. */
int cl_repo_tfrecord_each(const uint8_t *buf, size_t len, size_t max_record,
                          int (*fn)(void *arg, const uint8_t *rec, size_t n, cl_err *err), void *arg, cl_err *err);
/* The masked CRC-32C of TFRecord framing. */
uint32_t cl_repo_tfrecord_crc(const uint8_t *p, size_t n);
/* Warms up a loaded backend not yet served: replays dir/CL_REPO_WARMUP_FILE (its PredictLog records;
 * others are skipped with a log line) `iterations` times, or when there is no such file runs one
 * synthetic request (zeros, dynamic dimensions 1) through each signature. Returns the number of
 * requests run, or -1 with err set (a damaged file, a request the model refuses). */
int cl_repo_warmup(const cl_serve_backend *b, const char *dir, unsigned iterations, cl_err *err);
/* The same on a warm-up file's contents already in memory (buf[0..len)). */
int cl_repo_warmup_buffer(const cl_serve_backend *b, const uint8_t *buf, size_t len, unsigned iterations, cl_err *err);

/* The highest-numbered version directory under base_path that holds a model file; *sealed tells
 * which kind. Returns 0 if one was found, -1 (err set) if none. */
int cl_repo_latest_version(const char *base_path, int64_t *version, bool *sealed, cl_err *err);

/* The distinct key ids of the sealed models that would be loaded (the versions each model's policy
 * selects), so a server can ask the key server for exactly those. A key id that is not a key server
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
 *       config { name: "resnet" base_path: "/models/resnet" model_platform: "onnx"
 *                model_version_policy { latest { num_versions: 2 } }
 *                version_labels { key: "stable" value: 1 } version_labels { key: "canary" value: 2 } }
 *       config { ... }
 *     }
 * Fields of a config: name and base_path (required), model_platform ("onnx", or "tensorflow" for
 * configs written for TF Serving; anything else is refused), model_version_policy (latest {
 * num_versions: N }, all {}, specific { versions: 1 versions: 3 } or versions: [1, 3]), version_labels
 * (repeated, one key/value each). '#' starts a comment; strings take single or double quotes with C
 * escapes; ',' or ';' may follow a field. Anything else is an error naming its line. At most
 * CL_REPO_CONFIG_MAX_MODELS models, 64 specific versions and 64 labels per model. *models is
 * malloc()ed, strings included; free with cl_repo_config_free. */
#define CL_REPO_CONFIG_MAX_MODELS 1024
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
