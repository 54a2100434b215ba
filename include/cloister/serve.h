/* cloister/serve.h — the interface of the serve module: the TF Serving front end. It owns
 *   - tensors and model signatures as the server sees them (cl_serve_tensor, cl_serve_signature),
 *   - the model backend interface a model implementation plugs into (cl_serve_backend) and the
 *     registry of served models and versions (cl_serve_registry),
 *   - TF Serving's --ssl_config_file format (cl_serve_ssl_config),
 *   - the server: gRPC (tensorflow.serving.PredictionService / ModelService over HTTP/2) and REST
 *     (/v1/models/...), over TLS or mutual TLS, on one libevent loop with a bounded worker pool
 *     (cl_serve_server).
 *
 * The ONNX engine plugs in as a cl_serve_backend; nothing here knows about ONNX. An input can
 * declare image preprocessing (cl_serve_tensor_spec.image): it then also takes DT_STRING tensors of
 * encoded JPEG/PNG images, which cl_serve_model_run decodes and preprocesses (image module) into the
 * float tensor the backend expects, on the thread that runs the model (a worker, in the server).
 * Thread-safety is stated per object below. Errors follow common.h (0 / -1 and a cl_err).
 */
#ifndef CLOISTER_SERVE_H
#define CLOISTER_SERVE_H

#include "cloister/common.h"
#include "cloister/image.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- tensors */

/* Element types, numbered like tensorflow.DataType. Only these are accepted by the server. DT_STRING
 * (variable-length byte strings) is only accepted as request input, for inputs that declare image
 * preprocessing; models never see it. */
typedef enum cl_serve_dtype {
    CL_SERVE_DT_INVALID = 0,
    CL_SERVE_DT_FLOAT = 1,
    CL_SERVE_DT_DOUBLE = 2,
    CL_SERVE_DT_INT32 = 3,
    CL_SERVE_DT_UINT8 = 4,
    CL_SERVE_DT_INT8 = 6,
    CL_SERVE_DT_STRING = 7,
    CL_SERVE_DT_INT64 = 9,
    CL_SERVE_DT_BOOL = 10,
} cl_serve_dtype;

/* Bytes per element, or 0 for a dtype the server does not support and for DT_STRING (not fixed-size). */
size_t cl_serve_dtype_size(cl_serve_dtype dt);
/* "DT_FLOAT", ...; "DT_INVALID" for anything unsupported. */
const char *cl_serve_dtype_name(cl_serve_dtype dt);

#define CL_SERVE_MAX_DIMS 8

/* One element of a DT_STRING tensor: bytes, not NUL-terminated. */
typedef struct cl_serve_string {
    const uint8_t *data;
    size_t len;
} cl_serve_string;

/* A dense row-major tensor. `name` and `data` are malloc()ed and owned by the tensor; free with
 * cl_serve_tensor_clear(). Element data is in host byte order (little-endian on every platform
 * cloister runs on), `nbytes` == element count * cl_serve_dtype_size(dtype). A rank-0 tensor
 * (ndim == 0) holds one element.
 * DT_STRING: `data` is one allocation holding the element table (element count cl_serve_string, row
 * major) followed by the bytes the elements point to; `nbytes` is the size of that allocation. */
typedef struct cl_serve_tensor {
    char *name;
    cl_serve_dtype dtype;
    int ndim;
    int64_t dims[CL_SERVE_MAX_DIMS];
    void *data;
    size_t nbytes;
} cl_serve_tensor;

/* Allocates data for the given shape (zero-filled); name is copied. Fails on an unsupported dtype,
 * a negative dim, too many dims or a size above `max_bytes` (0: no limit). */
int cl_serve_tensor_init(cl_serve_tensor *t, const char *name, cl_serve_dtype dtype, int ndim,
                         const int64_t *dims, size_t max_bytes, cl_err *err);
/* A DT_STRING tensor whose element i has room for caps[i] bytes (uninitialised, .len == caps[i]; whoever
 * fills it may lower .len). The table and the bytes together must fit in max_bytes (0: no limit). */
int cl_serve_tensor_init_strings(cl_serve_tensor *t, const char *name, int ndim, const int64_t *dims,
                                 const size_t *caps, size_t max_bytes, cl_err *err);
/* Element i of a DT_STRING tensor, writable (for whoever fills it). */
static inline cl_serve_string *cl_serve_tensor_strings(cl_serve_tensor *t) { return (cl_serve_string *)t->data; }
/* Element count of a shape (1 for rank 0); -1 on overflow or a negative dim. */
int64_t cl_serve_shape_elements(int ndim, const int64_t *dims);
/* "[2,-1,3]" into buf (truncated to cap), for error messages. */
void cl_serve_shape_str(char *buf, size_t cap, int ndim, const int64_t *dims);
void cl_serve_tensor_clear(cl_serve_tensor *t);
void cl_serve_tensors_free(cl_serve_tensor *t, size_t n);

/* ---------------------------------------------------------------- models */

/* One input or output of a signature. dims[i] == -1 is a dynamic dimension (usually the batch);
 * ndim == -1 means the rank is unknown (any shape accepted).
 * `image` (inputs only; NULL: none) declares image preprocessing: the input then also accepts a DT_STRING
 * tensor of shape [N] holding N encoded JPEG/PNG images, decoded and preprocessed into a DT_FLOAT
 * tensor [N, C, H, W] (NCHW) or [N, H, W, C] (NHWC) before the backend runs. The spec itself must be
 * DT_FLOAT, rank 4, with those dimensions (or -1). Metadata shows such an input as DT_STRING [-1], as
 * TF Serving shows image-bytes models; float tensors of the spec's shape are still accepted. */
typedef struct cl_serve_tensor_spec {
    const char *name;
    cl_serve_dtype dtype;
    int ndim;
    int64_t dims[CL_SERVE_MAX_DIMS];
    const cl_image_spec *image;
    const char *tensor_name; /* what model metadata shows as the TensorInfo name (a TF graph tensor, "x:0");
                                NULL: name */
} cl_serve_tensor_spec;

/* Whether image preprocessing `img` can feed the input `ts`: DT_FLOAT, rank 4, channel and spatial
 * dimensions equal to what img produces (or -1). CL_E_INVALID with a message saying what differs. */
int cl_serve_spec_check_image(const cl_serve_tensor_spec *ts, const cl_image_spec *img, cl_err *err);

/* What a model computes. All strings and arrays are owned by the backend and must stay valid as
 * long as the backend does. TF Serving calls the default signature "serving_default" and its
 * method "tensorflow/serving/predict". */
typedef struct cl_serve_signature {
    const char *name;
    const char *method_name;
    const cl_serve_tensor_spec *inputs;
    size_t n_inputs;
    const cl_serve_tensor_spec *outputs;
    size_t n_outputs;
} cl_serve_signature;

/* One named signature of a model version, declared over its backend's tensors (a signatures.json beside
 * the model; docs/serve.md "Signatures"): `sig` names the inputs and outputs by their aliases (the names
 * clients use), with the dtype, shape and image preprocessing of the backend tensor each one names;
 * sig.inputs[k] is backend input input_of[k] (tensor name input_tensor[k]), sig.outputs[k] backend
 * output output_of[k]. Every backend input has exactly one alias; outputs may be a subset. A
 * classification signature may carry `labels` (n_labels strings): the label of score column j, or of
 * class id j when its "classes" output holds integers. Everything is owned by whoever made it (a
 * cl_serve_sigset) and must outlive the backend. */
typedef struct cl_serve_sigdef {
    cl_serve_signature sig;
    const size_t *input_of, *output_of;
    const char *const *input_tensor, *const *output_tensor;
    const char *const *labels;
    size_t n_labels;
} cl_serve_sigdef;

/* The method names of TF's SignatureDefs. */
#define CL_SERVE_METHOD_PREDICT "tensorflow/serving/predict"
#define CL_SERVE_METHOD_CLASSIFY "tensorflow/serving/classify"
#define CL_SERVE_METHOD_REGRESS "tensorflow/serving/regress"
#define CL_SERVE_DEFAULT_SIGNATURE "serving_default"

/* A parsed signatures.json: the signatures of one model version (src/serve/signatures.c).
 * Immutable once made: any thread may read it; free it once, after the last reader. */
typedef struct cl_serve_sigset cl_serve_sigset;
/* Limits of a signatures.json (refused beyond them). */
#define CL_SERVE_SIGS_MAX 64          /* signatures per model version */
#define CL_SERVE_SIG_NAME_MAX 128     /* bytes of a signature name, an alias or a label */
#define CL_SERVE_SIG_LABELS_MAX 65536 /* labels of one classification signature */
#define CL_SERVE_SIGS_FILE_MAX (4u << 20) /* bytes of the file */
#define CL_SERVE_SIG_IO_MAX 64        /* inputs, outputs of one signature */
#define CL_SERVE_EXAMPLE_VALUES_MAX (1 << 20) /* values one example feeds into one input */
/* Parses signatures.json text (`what` names it in errors) against the backend's own signature `model`
 * (its tensors, which the declarations must name and fit: see docs/serve.md). The result borrows
 * nothing from text but keeps pointers into `model`'s specs (names, image specs): free it before them. */
int cl_serve_sigset_parse(const char *text, size_t len, const char *what, const cl_serve_signature *model,
                          cl_serve_sigset **out, cl_err *err);
int cl_serve_sigset_load(const char *path, const cl_serve_signature *model, cl_serve_sigset **out, cl_err *err);
/* The declared signatures, in file order. */
const cl_serve_sigdef *cl_serve_sigset_defs(const cl_serve_sigset *s, size_t *n);
void cl_serve_sigset_free(cl_serve_sigset *s);

/* A loaded model version: the interface the engine implements.
 *
 * run() is called from worker threads, possibly concurrently for the same backend: it must be
 * thread-safe. The inputs have already been checked against the signature (every input present
 * exactly once, in signature order, right dtype, shape compatible with the spec); they are owned
 * by the caller and read-only. On success run() returns 0 and sets *outputs to a malloc()ed array
 * of *n_outputs tensors that the caller takes over (freed with cl_serve_tensors_free). On failure
 * it returns -1 with err set; CL_E_INVALID errors are reported to clients as INVALID_ARGUMENT,
 * anything else as INTERNAL.
 *
 * destroy() is called once, when the last request using this version has finished after the
 * version was removed or replaced (or the registry was freed).
 *
 * memory() (optional, thread-safe) says how many bytes one run() is expected to need beyond its
 * inputs (activations, scratch, outputs) when its inputs total `input_bytes`; 0 when unknown. The
 * server budgets requests with it (cl_serve_config.request_memory_bytes). */
typedef struct cl_serve_backend {
    const cl_serve_signature *signature;
    int (*run)(void *ctx, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs,
               size_t *n_outputs, cl_err *err);
    void (*destroy)(void *ctx);
    void *ctx;
    size_t (*memory)(void *ctx, size_t input_bytes);
    /* The signatures clients see (NULL / 0: only `signature`, under its own name): views over
     * `signature`'s tensors, owned by the backend like `signature` is. */
    const cl_serve_sigdef *sigdefs;
    size_t n_sigdefs;
} cl_serve_backend;

/* ---------------------------------------------------------------- status codes */

/* Canonical codes (tensorflow.error.Code == gRPC status codes). */
typedef enum cl_serve_code {
    CL_SC_OK = 0,
    CL_SC_CANCELLED = 1,
    CL_SC_UNKNOWN = 2,
    CL_SC_INVALID_ARGUMENT = 3,
    CL_SC_DEADLINE_EXCEEDED = 4,
    CL_SC_NOT_FOUND = 5,
    CL_SC_ALREADY_EXISTS = 6,
    CL_SC_PERMISSION_DENIED = 7,
    CL_SC_RESOURCE_EXHAUSTED = 8,
    CL_SC_FAILED_PRECONDITION = 9,
    CL_SC_ABORTED = 10,
    CL_SC_OUT_OF_RANGE = 11,
    CL_SC_UNIMPLEMENTED = 12,
    CL_SC_INTERNAL = 13,
    CL_SC_UNAVAILABLE = 14,
    CL_SC_DATA_LOSS = 15,
    CL_SC_UNAUTHENTICATED = 16,
} cl_serve_code;

/* "OK", "INVALID_ARGUMENT", ... */
const char *cl_serve_code_name(cl_serve_code c);
/* TF Serving's mapping of a code to an HTTP status (400, 404, 429, 503, ...). */
int cl_serve_code_http(cl_serve_code c);

/* The set of served models. Versions are positive integers; a request without a version gets the
 * highest loaded version (TF Serving's "latest" policy); a label names a version (set by the repository).
 * All functions are thread-safe; a version can be replaced or removed while requests run on it
 * (they keep the old one until they finish). */
typedef struct cl_serve_registry cl_serve_registry;
/* A reference to one loaded version, held for the duration of a request. */
typedef struct cl_serve_model cl_serve_model;

cl_serve_registry *cl_serve_registry_new(cl_err *err);
/* Destroys the registry; versions still referenced are destroyed when their last ref drops. */
void cl_serve_registry_free(cl_serve_registry *r);
/* Adds (or replaces) version `version` of model `name`. On success the registry owns the backend
 * (its destroy() will be called); on failure the caller still owns it. Fails if an input's image
 * preprocessing does not fit it (cl_serve_spec_check_image) or is declared on an output. */
int cl_serve_registry_add(cl_serve_registry *r, const char *name, int64_t version, const cl_serve_backend *b,
                          cl_err *err);
/* Removes a version; 0 if it was there, -1 otherwise. */
int cl_serve_registry_remove(cl_serve_registry *r, const char *name, int64_t version);
/* Looks up a model; version <= 0 means latest. Fails with CL_E_INVALID and a TF Serving-like
 * message ("Servable not found for request: ...") when there is no such model or version.
 * Release the result with cl_serve_model_release(). */
cl_serve_model *cl_serve_registry_get(cl_serve_registry *r, const char *name, int64_t version, cl_err *err);
/* Versions of a model, highest first, into out[0..max); returns the total count (0: unknown model). */
size_t cl_serve_registry_versions(cl_serve_registry *r, const char *name, int64_t *out, size_t max);
/* What GetModelStatus reports for one version: a loaded version is AVAILABLE (code OK); a version the
 * model repository is still trying to load (e.g. its key was not released yet) is LOADING, with the
 * code and message of its last attempt. */
typedef struct cl_serve_version_status {
    int64_t version;
    bool available;
    cl_serve_code code;
    char message[384];
} cl_serve_version_status;
/* Replaces the model's list of versions being loaded (n may be 0: none). A version added with
 * cl_serve_registry_add is no longer listed as loading. */
int cl_serve_registry_set_loading(cl_serve_registry *r, const char *name, const cl_serve_version_status *loading,
                                  size_t n, cl_err *err);
/* The loaded and loading versions of a model, highest first, into out[0..max); returns the total
 * (0: nothing known of that model). */
size_t cl_serve_registry_status(cl_serve_registry *r, const char *name, cl_serve_version_status *out, size_t max);
/* Version labels (TF Serving's version_labels): the model's label -> version map, replaced whole (n may
 * be 0: none). A label may point at a version that is not loaded: a request through it then gets the
 * version's "Servable not found" answer. */
int cl_serve_registry_set_labels(cl_serve_registry *r, const char *name, const char *const *labels,
                                 const int64_t *versions, size_t n, cl_err *err);
/* The version `label` points at for model `name`; -1 with CL_E_INVALID and TF Serving's message
 * "Unrecognized servable version label: LABEL" when there is no such label. */
int cl_serve_registry_label(cl_serve_registry *r, const char *name, const char *label, int64_t *version,
                            cl_err *err);
/* Model names, for metrics and listing: calls fn for each (name, version) under the registry lock. */
void cl_serve_registry_foreach(cl_serve_registry *r, void (*fn)(void *arg, const char *name, int64_t version),
                               void *arg);

const char *cl_serve_model_name(const cl_serve_model *m);
int64_t cl_serve_model_version(const cl_serve_model *m);
const cl_serve_signature *cl_serve_model_signature(const cl_serve_model *m);
/* The model's signatures as clients see them: its declared ones, or one identity view of
 * cl_serve_model_signature (input_of etc. NULL) when it declares none. */
size_t cl_serve_model_sig_count(const cl_serve_model *m);
void cl_serve_model_sig_at(const cl_serve_model *m, size_t i, cl_serve_sigdef *out);
/* The signature called `name` (NULL or "": "serving_default"); false when there is none. */
bool cl_serve_model_sig_find(const cl_serve_model *m, const char *name, cl_serve_sigdef *out);
/* Decodes the encoded images among a request's inputs, in the calling thread: decoded[i] (n_inputs
 * zeroed tensors, caller-allocated) receives the float batch made from inputs[i] when that is a
 * DT_STRING tensor given for an input with image preprocessing, and stays zeroed otherwise. DT_STRING
 * for an input without preprocessing is refused. Returns how many were decoded, or -1 (err set;
 * nothing left allocated). Free each decoded[i] with cl_serve_tensor_clear. cl_serve_model_run calls
 * this first; a caller that batches inputs itself calls it before concatenating them. */
int cl_serve_model_decode_images(const cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs,
                                 cl_serve_tensor *decoded, cl_err *err);
/* Checks inputs against the signature and calls the backend; see cl_serve_backend.run. Inputs may
 * come in any order; they are matched by name. A DT_STRING input for an input with image preprocessing
 * is decoded and preprocessed here (in the calling thread) first; errors in the images (not an image,
 * too many pixels, too many images, a colour the model refuses) are CL_E_INVALID naming the image. */
int cl_serve_model_run(cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs, cl_serve_tensor **outputs,
                       size_t *n_outputs, cl_err *err);
/* For batching (the server's worker pool): checks inputs against the signature like
 * cl_serve_model_run and, when they are acceptable, reorders the array in place into signature
 * order. Encoded images (DT_STRING [N] for an input with image preprocessing) are accepted here and
 * must be decoded (cl_serve_model_decode_images) before cl_serve_model_run_ordered, which runs the
 * backend on exactly sig->n_inputs inputs of the signature's dtypes. */
int cl_serve_model_order_inputs(const cl_serve_model *m, cl_serve_tensor *inputs, size_t n_inputs, cl_err *err);
int cl_serve_model_run_ordered(cl_serve_model *m, const cl_serve_tensor *inputs, cl_serve_tensor **outputs,
                               size_t *n_outputs, cl_err *err);
void cl_serve_model_release(cl_serve_model *m);
/* The backend's memory() estimate for a run on `input_bytes` of (decoded) inputs; 0 when it has none. */
size_t cl_serve_model_memory(const cl_serve_model *m, size_t input_bytes);
/* Bytes that decoding the encoded images among `inputs` takes: the float batches it makes (also in
 * *batches when not NULL) and the largest single image's decode buffers, from the images' headers; 0
 * when there are none. Images whose header cannot be read count nothing: decoding refuses them. */
size_t cl_serve_model_decode_bytes(const cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs,
                                   size_t *batches);

/* The inputs of a serialised tensorflow.serving.PredictRequest as tensors, converted as Predict
 * converts them (same dtypes, at most max_bytes in all), for replaying logged requests (the model
 * repository's warm-up). Free with cl_serve_tensors_free. CL_E_FORMAT / CL_E_INVALID naming the
 * problem. */
int cl_serve_pb_request_inputs(const uint8_t *msg, size_t len, size_t max_bytes, cl_serve_tensor **inputs,
                               size_t *n_inputs, cl_err *err);

/* ---------------------------------------------------------------- TLS configuration */

/* tensorflow.serving.SSLConfig. PEM strings are NUL-terminated; server_key lives in secure memory
 * (cl_secmem). Free with cl_serve_ssl_config_clear(). */
typedef struct cl_serve_ssl_config {
    char *server_key;  /* cl_secmem */
    char *server_cert; /* malloc */
    char *custom_ca;   /* malloc, NULL when absent */
    bool client_verify;
} cl_serve_ssl_config;

/* Parses SSLConfig in protobuf text format (TF Serving's --ssl_config_file; `cloister tls init`
 * writes one): fields server_key, server_cert, custom_ca (strings with C escapes, adjacent
 * literals concatenated), client_verify (true/false); '#' comments. Unknown fields, duplicates and
 * malformed strings are errors that name the line. client_verify without custom_ca is an error. */
int cl_serve_ssl_config_parse(const char *text, size_t len, cl_serve_ssl_config *out, cl_err *err);
int cl_serve_ssl_config_load(const char *path, cl_serve_ssl_config *out, cl_err *err);
/* Reads PEM files into a config (key into secure memory); ca_path may be NULL. */
int cl_serve_ssl_config_from_files(const char *cert_path, const char *key_path, const char *ca_path,
                                   bool client_verify, cl_serve_ssl_config *out, cl_err *err);
void cl_serve_ssl_config_clear(cl_serve_ssl_config *c);

/* ---------------------------------------------------------------- server */

/* Dynamic batching (TF Serving's --enable_batching / --batching_parameters_file): requests for the
 * same model version whose inputs differ only in the first (batch) dimension are run as one model
 * call of at most max_batch_size rows, waiting at most batch_timeout_us for a batch to fill. Only
 * models whose every signature input and output has a dynamic first dimension are batched. */
typedef struct cl_serve_batching {
    unsigned max_batch_size;   /* rows per model call; 0 or 1: batching off */
    unsigned batch_timeout_us; /* how long a worker waits for a batch to fill; 0: take only what is queued */
} cl_serve_batching;

/* Parses TF Serving's BatchingParameters text format (max_batch_size { value: N },
 * batch_timeout_micros { value: N }; num_batch_threads and max_enqueued_batches are accepted and
 * reported in *workers / *queue when not NULL; pad_variable_length_inputs and
 * allowed_batch_sizes are refused as unsupported). */
int cl_serve_batching_parse(const char *text, size_t len, cl_serve_batching *out, unsigned *workers,
                            unsigned *queue, cl_err *err);

/* The Prometheus endpoint on the REST port (TF Serving's --monitoring_config_file, a MonitoringConfig
 * in protobuf text format: prometheus_config { enable: BOOL path: "STRING" }). The zero value is
 * cloister's default without the file: served at CL_SERVE_METRICS_PATH. (TF Serving serves none
 * without the file; docs/serve.md says why cloister differs.) */
#define CL_SERVE_METRICS_PATH "/monitoring/prometheus/metrics"
#define CL_SERVE_METRICS_PATH_MAX 256
typedef struct cl_serve_monitoring {
    bool off;                                /* true: no endpoint (404 like any unknown path) */
    char path[CL_SERVE_METRICS_PATH_MAX + 1]; /* "": CL_SERVE_METRICS_PATH */
} cl_serve_monitoring;

/* Parses a MonitoringConfig (moncfg.c). As in TF Serving, a file that does not say `enable: true`
 * turns the endpoint off, and an empty path means the default one. Refused, with the line: unknown
 * fields, a field given twice, values of the wrong kind, and a path that is not an absolute URL path
 * of at most CL_SERVE_METRICS_PATH_MAX printable characters (no spaces, '?', '#', '%' or '\\'), or
 * that lies under the model API's /v1/. Pure, thread-safe. */
int cl_serve_monitoring_parse(const char *text, size_t len, cl_serve_monitoring *out, cl_err *err);
/* The path the endpoint is served at, or NULL when it is off. */
const char *cl_serve_monitoring_path(const cl_serve_monitoring *m);

/* Histogram buckets of executed batch sizes in the metrics: 1, 2, 4, ... 2^(N-1) rows, then more. */
#define CL_SERVE_BATCH_BUCKETS 10

struct cl_ratls_identity; /* ratls.h */

/* gRPC message compression (grpc-encoding), numbered like gRPC's compression algorithms. */
typedef enum cl_serve_compression {
    CL_SERVE_COMPRESS_NONE = 0, /* "identity" */
    CL_SERVE_COMPRESS_DEFLATE = 1,
    CL_SERVE_COMPRESS_GZIP = 2,
} cl_serve_compression;
/* "identity", "deflate" or "gzip" (case-insensitive; "" and "none" are identity) -> *out; -1 for
 * anything else (err names the accepted values). */
int cl_serve_compression_parse(const char *name, cl_serve_compression *out, cl_err *err);
const char *cl_serve_compression_name(cl_serve_compression c);

typedef struct cl_serve_config {
    const char *host;             /* listen address (IPv4 or IPv6 literal); NULL: "0.0.0.0" */
    int grpc_port;                /* 0: pick a free port; -1: no gRPC listener */
    int rest_port;                /* 0: pick a free port; -1: no REST listener */
    const cl_serve_ssl_config *tls; /* NULL: plaintext (h2c / http), only with allow_plaintext */
    bool allow_plaintext;
    size_t max_request_bytes;     /* whole request body; default 64 MiB */
    unsigned request_timeout_ms;  /* a request (or TLS handshake) not complete after this is cut; default 30000 */
    unsigned workers;             /* worker threads; default 2 */
    unsigned queue_limit;         /* requests waiting for a worker; beyond: UNAVAILABLE / HTTP 429; default 64 */
    cl_serve_batching batching;   /* zero: no batching */
    /* A request whose model typically runs within this many microseconds (without batching and
     * encoded images) runs on the event loop thread itself, saving the two thread hand-offs that
     * cost more than such a model; 0: default 200; negative: never. */
    long inline_max_us;
    /* REST event loops, each on its own thread, sharing the port (the first one is the main loop,
     * which also carries gRPC); 0: one per CPU, at most 4. */
    unsigned rest_threads;
    bool handle_signals;          /* stop gracefully on SIGTERM / SIGINT */
    /* Bind the ports in cl_serve_server_new (so a port in use is reported there) but listen() only in
     * cl_serve_server_run: until then connections are refused, as if nothing ran. `cloister serve`
     * creates its server before it fetches model keys, so every local check precedes the key release. */
    bool listen_in_run;
    /* Attested TLS: present this RA-TLS identity (ratls.h; borrowed, must outlive server_new) on both
     * ports instead of tls's certificate and key. tls may then be NULL; if given, its custom_ca and
     * client_verify still apply (mutual TLS). */
    const struct cl_ratls_identity *ratls_identity;
    /* Memory (docs/serve.md "Memory"). A request may use at most request_memory_bytes: its inputs as
     * received and decoded, its outputs, and the working memory of one model run as the backend's
     * memory() estimates it. A request above it whose model takes a dynamic batch runs in pieces of
     * as many rows as fit; one that cannot fit even one row, or cannot be split, is refused with
     * RESOURCE_EXHAUSTED (HTTP 429). All requests in flight (queued or running) together hold at most
     * memory_budget_bytes; a request beyond it is refused the same way, to be retried. 0: the
     * defaults, 256 MiB and 1 GiB; SIZE_MAX: no limit. */
    size_t request_memory_bytes;
    size_t memory_budget_bytes;
    /* Memory kept for reuse is given back to the system after a burst: once requests held more than
     * 64 MiB together (or a model version was added or removed, or the server started) and then no
     * request ran for release_idle_ms, the server calls release_memory (NULL: none; cloister serve
     * passes cl_engine_release_memory) and malloc_trim. 0: default 1000 ms. */
    unsigned release_idle_ms;
    void (*release_memory)(void);
    /* The access log (docs/serve.md "Logs"): one line per request on either API, in the process's
     * log format (cl_log_sink), with the API, method, model, version, status, latency, bytes in and
     * out, the peer's address and the client certificate's subject; never tensor contents, headers
     * or secrets. NULL: none (the default). Borrowed: it must outlive the server. */
    cl_log_sink *access_log;
    /* ModelService/HandleReloadConfigRequest (NULL: UNIMPLEMENTED): called on the main loop thread with
     * the serialised ReloadConfigRequest; returns 0, or -1 with *code and err saying why (the model
     * repository's cl_repo_reload_request). The loop waits for it: requests on the main loop wait
     * while the new configuration's models load. */
    int (*reload_config)(void *arg, const uint8_t *msg, size_t len, cl_serve_code *code, cl_err *err);
    void *reload_config_arg;
    /* Labels of the cloister_build_info metric (NULL: "unknown"); borrowed, must outlive the server. */
    const char *build_version, *build_engine_isa, *build_evidence;
    /* grpc.health.v1.Health (Check and Watch) on the gRPC port (TF Serving's
     * --enable_grpc_healthcheck_service); false: those methods answer UNIMPLEMENTED. */
    bool grpc_health;
    /* gRPC responses are compressed with this when the client's grpc-accept-encoding lists it (TF
     * Serving's --response_compression_algorithm); CL_SERVE_COMPRESS_NONE (the default): never.
     * Compressed requests (gzip, deflate) are always accepted. */
    cl_serve_compression response_compression;
    /* The Prometheus endpoint (zero: at CL_SERVE_METRICS_PATH). */
    cl_serve_monitoring monitoring;
} cl_serve_config;

/* The server. cl_serve_server_run() runs the event loop in the calling thread until
 * cl_serve_server_stop() (callable from any thread) or a handled signal; then it stops accepting,
 * lets in-flight requests finish (bounded by request_timeout_ms) and returns.
 * The registry must outlive the server; the config's TLS material is copied into the TLS context. */
typedef struct cl_serve_server cl_serve_server;

/* Creates the TLS contexts (checking the certificate, key and CA), the worker pool and the listeners
 * (so ports are bound when this returns, and listening unless cfg->listen_in_run). */
cl_serve_server *cl_serve_server_new(const cl_serve_config *cfg, cl_serve_registry *reg, cl_err *err);
/* Port actually bound (useful with port 0), or -1 when that listener is disabled. */
int cl_serve_server_grpc_port(const cl_serve_server *s);
int cl_serve_server_rest_port(const cl_serve_server *s);
int cl_serve_server_run(cl_serve_server *s, cl_err *err);
void cl_serve_server_stop(cl_serve_server *s);
void cl_serve_server_free(cl_serve_server *s);

#ifdef __cplusplus
}
#endif
#endif
