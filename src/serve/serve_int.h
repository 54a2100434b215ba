/* serve_int.h — internals shared by the files of the serve module (not a public interface):
 * the request "call" that travels from a protocol front end (grpc.c, rest.c) through the worker
 * pool (pool.c) and back, protobuf and JSON conversions (pbconv.c, jsonconv.c), TLS contexts
 * (tls.c), metrics and the server object (server.c).
 *
 * Threading model: the main libevent loop thread owns the gRPC connections and streams, and each
 * REST loop thread (the first is the main loop) owns its HTTP connections and requests; the worker
 * threads only see a call's model, inputs, outputs and error while it is queued or running. A
 * finished call is handed back to the loop thread it came from (call->doneq), which encodes and
 * sends the response (or just frees the call if its client went away meanwhile: owner == NULL).
 * Calls on cheap models run inline on their loop thread instead. */
#ifndef CLOISTER_SERVE_INT_H
#define CLOISTER_SERVE_INT_H

#include <stdatomic.h>
#include <time.h>
#include <sys/socket.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "cloister/serve.h"

#define CL_SERVE_MOD "serve"

typedef struct cl_serve_status {
    cl_serve_code code;
    char msg[CL_ERR_MSG_MAX];
    char model[128]; /* the model the request named, when known (for metrics) */
    int64_t version; /* the version it was answered from, or asked for (0: not known) */
} cl_serve_status;

/* Sets a status; returns the code (so `return st_set(st, ...)` reads well). */
cl_serve_code cl_serve_st_set(cl_serve_status *st, cl_serve_code code, const char *fmt, ...) CL_PRINTF(3, 4);
/* Status from a library error: CL_E_INVALID / CL_E_FORMAT -> INVALID_ARGUMENT, CL_E_NOMEM ->
 * RESOURCE_EXHAUSTED, anything else INTERNAL. */
cl_serve_code cl_serve_st_from_err(cl_serve_status *st, const cl_err *err);

typedef enum { CL_API_GRPC = 0, CL_API_REST = 1 } cl_serve_api;
typedef enum {
    CL_RPC_PREDICT = 0,
    CL_RPC_METADATA,
    CL_RPC_STATUS,
    CL_RPC_RELOAD,          /* HandleReloadConfigRequest (gRPC only) */
    CL_RPC_CLASSIFY,        /* Classify, REST :classify (classify.c) */
    CL_RPC_REGRESS,         /* Regress, REST :regress */
    CL_RPC_MULTI_INFERENCE, /* MultiInference (gRPC only) */
    CL_RPC_COUNT
} cl_serve_rpc;

typedef struct cl_serve_server cl_serve_server;
typedef struct cl_serve_call cl_serve_call;

struct cl_serve_call {
    cl_serve_server *srv;
    cl_serve_api api;
    cl_serve_rpc rpc;
    uint64_t start_ns;
    cl_serve_model *model;        /* reference held by the call */
    cl_serve_tensor *inputs;      /* owned */
    size_t n_inputs;
    cl_serve_tensor *outputs;     /* owned, set by the worker */
    size_t n_outputs;
    char **output_filter;         /* owned, gRPC only */
    size_t n_output_filter;
    int json_format;              /* REST: 0 row (instances/predictions), 1 columnar (inputs/outputs) */
    cl_serve_status st;           /* set by the worker */
    /* the signature the request named (resolved when the request is parsed; see cl_serve_sig_*) */
    cl_serve_sigdef sig;
    struct cl_serve_infer *infer; /* Classify / Regress / MultiInference: tasks and examples (classify.c), owned */
    /* loop thread only: */
    void *owner;                  /* stream or HTTP request; NULL once the client is gone */
    struct cl_serve_doneq *doneq; /* the loop it returns to; NULL: the pool's own (the main loop) */
    void (*done)(cl_serve_call *c); /* encodes and sends the result, then frees the call */
    cl_serve_call *next;
    /* memory (pool.c): the share of the pool's budget the call holds from admission until its run
     * ends, and the rows per model run (0: all at once) */
    size_t mem_held;
    int64_t run_rows;
    size_t run_in; /* bytes of input the backend sees (images decoded) */
    /* for the access log of a call whose client went away: its address and request bytes */
    char peer[64];
    size_t wire_in;
};

cl_serve_call *cl_serve_call_new(cl_serve_server *srv, cl_serve_api api, cl_serve_rpc rpc);
void cl_serve_call_free(cl_serve_call *c);

/* ---- worker pool (pool.c): bounded queue; completions are delivered on the loop thread. */
typedef struct cl_serve_pool cl_serve_pool;
/* bat: NULL or max_batch_size < 2 for no batching. */
cl_serve_pool *cl_serve_pool_new(struct event_base *base, unsigned workers, unsigned queue_limit,
                                 const cl_serve_batching *bat, cl_err *err);
/* A completion queue: finished calls return through it to the loop thread of `base`, which runs their
 * done. Free it only after the pool (whose workers may still deliver into it) and with its loop
 * stopped; calls still in it are then done with owner NULL. */
typedef struct cl_serve_doneq cl_serve_doneq;
cl_serve_doneq *cl_serve_doneq_new(cl_serve_pool *p, struct event_base *base, cl_err *err);
void cl_serve_doneq_free(cl_serve_doneq *q);
/* The memory limits (cl_serve_config.request_memory_bytes, memory_budget_bytes; SIZE_MAX: none, the
 * default of a new pool), set before any call is submitted. */
void cl_serve_pool_set_memory(cl_serve_pool *p, size_t request_bytes, size_t total_bytes);
/* Admits the call under the memory limits (its share of the budget, and in how many rows at a time
 * it runs) and queues it. -1 when it is refused: c->st says why (UNAVAILABLE: the queue is full;
 * RESOURCE_EXHAUSTED: memory), and the call is otherwise untouched and still the caller's. */
int cl_serve_pool_submit(cl_serve_pool *p, cl_serve_call *c);
/* Runs the call right here, on the calling (loop) thread, and returns true when that is cheaper than a
 * hand-off: batching off, no encoded images, and the model's typical run time (see
 * cl_serve_model_typical_ns) at most max_ns (0: never); c->st then holds the result (a refusal by the
 * memory limits included). Otherwise returns false and does nothing. */
bool cl_serve_pool_run_inline(cl_serve_pool *p, cl_serve_call *c, uint64_t max_ns);
/* Memory held by the calls in flight now, and the most held at once since the last call (reset). */
size_t cl_serve_pool_memory_held(cl_serve_pool *p);
size_t cl_serve_pool_memory_peak(cl_serve_pool *p, bool reset);
/* Requests refused by the memory limits so far: [0] per request, [1] the total budget. */
void cl_serve_pool_memory_refused(cl_serve_pool *p, uint64_t out[2]);
/* Calls queued or running (for graceful shutdown). */
unsigned cl_serve_pool_inflight(cl_serve_pool *p);
/* Calls waiting for a worker (not yet running, not in an open batch). */
unsigned cl_serve_pool_queued(cl_serve_pool *p);
/* Executed model calls by rows (bucket k: rows <= 2^k, the last: more) and total rows; false when
 * batching is off. */
bool cl_serve_pool_batch_stats(cl_serve_pool *p, uint64_t hist[CL_SERVE_BATCH_BUCKETS + 1], uint64_t *rows_sum);
/* Stops the workers after the queue drains, joins them, frees the pool. Loop thread only. */
void cl_serve_pool_free(cl_serve_pool *p);

/* The checks of cl_serve_tensor_init without allocating: the tensor's size in *bytes. */
int cl_serve_tensor_bytes(const char *name, cl_serve_dtype dtype, int ndim, const int64_t *dims, size_t max_bytes,
                          size_t *bytes, cl_err *err);
/* cl_serve_tensor_init around data that already holds the tensor (malloc()ed, exactly the bytes the
 * shape and dtype need): *data is taken over (set to NULL) on success, left alone on failure. */
int cl_serve_tensor_adopt(cl_serve_tensor *t, const char *name, cl_serve_dtype dtype, int ndim, const int64_t *dims,
                          size_t max_bytes, void **data, size_t len, cl_err *err);

/* Moving average of the model's successful backend runs in ns; UINT64_MAX until it has run 8 times. */
uint64_t cl_serve_model_typical_ns(const cl_serve_model *m);

/* ---- protobuf (pbconv.c). Requests are parsed with a size limit on tensors (max_bytes). */
/* PredictRequest -> call (model looked up, inputs converted). */
cl_serve_code cl_serve_pb_predict_parse(cl_serve_registry *reg, const uint8_t *msg, size_t len, size_t max_bytes,
                                        cl_serve_call *c);
/* call (after the worker) -> serialized PredictResponse, malloc()ed. */
cl_serve_code cl_serve_pb_predict_response(cl_serve_call *c, uint8_t **out, size_t *out_len);
cl_serve_code cl_serve_pb_metadata(cl_serve_registry *reg, const uint8_t *msg, size_t len, uint8_t **out,
                                   size_t *out_len, cl_serve_status *st);
/* The model a ModelSpec names: by version, by label (the registry's labels; an unknown one is
 * INVALID_ARGUMENT with TF's text) or the latest; NOT_FOUND with the registry's reason. Sets st->model
 * and st->version for the metrics and the access log. Shared by Predict, GetModelMetadata and
 * Classify/Regress/MultiInference. */
struct Tensorflow__Serving__ModelSpec;
cl_serve_code cl_serve_pb_spec_lookup(cl_serve_registry *reg, const struct Tensorflow__Serving__ModelSpec *ms,
                                      cl_serve_model **out, cl_serve_status *st);
cl_serve_code cl_serve_pb_status(cl_serve_registry *reg, const uint8_t *msg, size_t len, uint8_t **out,
                                 size_t *out_len, cl_serve_status *st);
/* HandleReloadConfigRequest through the config's reload_config hook (UNIMPLEMENTED without one); on
 * success *out is the serialised ReloadConfigResponse (status OK). */
cl_serve_code cl_serve_pb_reload(const cl_serve_config *cfg, const uint8_t *msg, size_t len, uint8_t **out,
                                 size_t *out_len, cl_serve_status *st);

/* ---- signatures on the Predict path (signatures.c): the request names a signature (NULL or "":
 * serving_default) whose aliases its inputs and outputs use; the model runs on its own tensor names. */
/* Sets c->sig from c->model; FAILED_PRECONDITION (TF's text) when the model has no such signature. */
cl_serve_code cl_serve_sig_resolve(cl_serve_call *c, const char *name);
/* Renames the request's inputs from aliases to the model's tensor names. */
cl_serve_code cl_serve_sig_inputs_to_model(cl_serve_call *c);
/* Replaces the model's outputs by the signature's (aliases; only the outputs it declares). */
cl_serve_code cl_serve_sig_outputs_to_view(cl_serve_call *c);
/* The model output behind alias `alias` of signature d among c->outputs, or NULL. */
const cl_serve_tensor *cl_serve_sig_output(const cl_serve_call *c, const cl_serve_sigdef *d, const char *alias);

/* ---- Classify / Regress / MultiInference (classify.c, examples in example.c). */
/* ClassificationRequest / RegressionRequest / MultiInferenceRequest (by c->rpc) -> call. */
cl_serve_code cl_serve_pb_infer_parse(cl_serve_registry *reg, const uint8_t *msg, size_t len, size_t max_bytes,
                                      cl_serve_call *c);
cl_serve_code cl_serve_pb_infer_response(cl_serve_call *c, uint8_t **out, size_t *out_len);
/* REST :classify / :regress body (c->model set, c->rpc CLASSIFY or REGRESS) -> call. */
cl_serve_code cl_serve_json_infer_parse(const char *body, size_t len, size_t max_bytes, cl_serve_call *c);
cl_serve_code cl_serve_json_infer_response(cl_serve_call *c, char **out, size_t *out_len);

/* ---- JSON (jsonconv.c), TF Serving's REST formats. */
/* Sets cJSON's allocator hooks (the parse arena) once per process; call before threads use cJSON.
 * Without it parsing works the same, on malloc. */
void cl_serve_json_init(void);
/* :predict body -> inputs (matched to the model's signature) and c->json_format. */
cl_serve_code cl_serve_json_predict_parse(const char *body, size_t len, size_t max_bytes, cl_serve_call *c);
/* outputs -> response body (malloc()ed, NUL-terminated). */
cl_serve_code cl_serve_json_predict_response(cl_serve_call *c, char **out, size_t *out_len);
char *cl_serve_json_metadata(const cl_serve_model *m);
/* model_version_status for the given versions (AVAILABLE, or LOADING with the last attempt's code and
 * message). */
char *cl_serve_json_status(const cl_serve_version_status *versions, size_t n);
/* {"error": msg} */
char *cl_serve_json_error(const char *msg);

/* ---- gRPC framing (grpc.c) */
/* Parses one length-prefixed gRPC message that must fill buf exactly: *msg and *msg_len its bytes as sent,
 * *compressed its compressed flag. Returns OK, INVALID_ARGUMENT (malformed/trailing) or
 * RESOURCE_EXHAUSTED (above max_msg). */
cl_serve_code cl_serve_grpc_frame(const uint8_t *buf, size_t len, size_t max_msg, bool *compressed,
                                  const uint8_t **msg, size_t *msg_len, cl_serve_status *st);
/* cl_serve_grpc_frame for identity-encoded messages only: a compressed one is UNIMPLEMENTED. */
cl_serve_code cl_serve_grpc_unframe(const uint8_t *buf, size_t len, size_t max_msg, const uint8_t **msg,
                                    size_t *msg_len, cl_serve_status *st);
/* Percent-encodes a grpc-message value (out has room for 3*strlen(in)+1). */
void cl_serve_grpc_percent_encode(const char *in, char *out);

/* ---- TensorProto values (pbvals.c), as TensorFlow reads them */
struct Tensorflow__TensorProto;
/* Bytes per element of a request dtype (tensorflow.DataType number), the model's dtypes and DT_HALF,
 * DT_INT16, DT_UINT16, DT_UINT32, DT_UINT64; 0 for others. */
size_t cl_serve_pb_wire_dtype_size(int dt);
const char *cl_serve_pb_wire_dtype_name(int dt);
/* IEEE 754 binary16 bits -> float (exact). */
float cl_serve_half_to_float(uint16_t h);
/* The non-string tensor of tp (shape already checked: ndim, dims), for the model input spec (NULL when
 * the signature has no input of that name) which is arg[arg]: tensor_content of exactly the shape's
 * bytes (taken over without a copy when the dtype is the model's), or the typed field with TensorFlow's
 * rules (fewer values: the last repeated; none: zeros; more: refused). DT_HALF becomes the spec's
 * DT_FLOAT/DT_DOUBLE, DT_INT16/UINT16/UINT32/UINT64 the spec's integer dtype (range-checked). */
cl_serve_code cl_serve_pb_values(struct Tensorflow__TensorProto *tp, const char *name, const cl_serve_tensor_spec *spec,
                                 size_t arg, int ndim, const int64_t *dims, size_t max_bytes, cl_serve_tensor *out,
                                 cl_serve_status *st);

/* ---- gRPC message compression (compress.c) */
/* The algorithm a grpc-encoding value names (identity, deflate, gzip; case-insensitive): 0, or -1 when
 * unknown. */
int cl_serve_grpc_encoding(const char *value, size_t len, cl_serve_compression *out);
/* Whether a grpc-accept-encoding value (a comma-separated list) names alg. */
bool cl_serve_grpc_accepts(const char *value, size_t len, cl_serve_compression alg);
/* Inflates in[0..len) (deflate: zlib format; gzip) into a new malloc()ed buffer of at most max bytes:
 * RESOURCE_EXHAUSTED as soon as the output would pass max (memory stays within max + 1 bytes), INTERNAL
 * for corrupt or truncated data or bytes after the stream's end. */
cl_serve_code cl_serve_inflate(cl_serve_compression alg, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                               size_t *out_len, cl_serve_status *st);
/* Compresses in[0..len) with alg (not NONE) into a new malloc()ed buffer; -1 on failure. */
int cl_serve_compress(cl_serve_compression alg, const uint8_t *in, size_t len, uint8_t **out, size_t *out_len);
/* cl_serve_grpc_unframe, with the compressed flag honoured: `encoding` is the call's grpc-encoding
 * (a cl_serve_compression, or -1 for a name this server does not know, given in encoding_name). A
 * compressed message is inflated within max_msg into *owned (the caller frees it; NULL when the
 * message was not compressed) and *msg points into it. Unknown encoding: UNIMPLEMENTED (the gRPC
 * spec's answer); flagged compressed with identity encoding: INTERNAL. */
cl_serve_code cl_serve_grpc_unframe_enc(const uint8_t *buf, size_t len, size_t max_msg, int encoding,
                                        const char *encoding_name, uint8_t **owned, const uint8_t **msg,
                                        size_t *msg_len, cl_serve_status *st);

/* ---- gRPC health checking (health.c): grpc.health.v1 */
typedef enum {
    CL_HEALTH_UNKNOWN = 0,
    CL_HEALTH_SERVING = 1,
    CL_HEALTH_NOT_SERVING = 2,
    CL_HEALTH_SERVICE_UNKNOWN = 3,
} cl_serve_health_status;
/* Decodes a HealthCheckRequest: *known is true for the service "" (the whole server), the only one. */
cl_serve_code cl_serve_health_request(const uint8_t *msg, size_t len, bool *known, cl_serve_status *st);
/* A serialized HealthCheckResponse (malloc()ed), NULL when out of memory. */
uint8_t *cl_serve_health_response(cl_serve_health_status status, size_t *len);

/* ---- TLS (tls.c) */
/* A server context: TLS 1.2+, the config's certificate and key, client verification against
 * custom_ca when client_verify; ALPN chooses `alpn` ("h2" or "http/1.1") or fails the handshake. */
SSL_CTX *cl_serve_tls_ctx(const cl_serve_ssl_config *cfg, const char *alpn, cl_err *err);
/* The same with an RA-TLS identity presented instead of cfg's certificate and key (when id is not
 * NULL; cfg may then be NULL, and its custom_ca / client_verify still apply). */
SSL_CTX *cl_serve_tls_ctx_id(const cl_serve_ssl_config *cfg, const struct cl_ratls_identity *id, const char *alpn,
                             cl_err *err);

/* ---- connection transport (tlsio.c): a non-blocking socket on the loop thread, TLS or clear,
 * read in large chunks and written with one writev per flush (see tlsio.c for why). Loop thread
 * only. The io owns the socket (closed by cl_serve_io_free). */
typedef struct cl_serve_io cl_serve_io;
typedef struct cl_serve_io_cbs {
    /* The TLS handshake is done (never called in clear). Return -1 if the callee freed the io. */
    int (*ready)(cl_serve_io *io, void *arg);
    /* Plaintext arrived. Return -1 if the callee freed the io. */
    int (*data)(cl_serve_io *io, const uint8_t *p, size_t n, void *arg);
    /* Output that a flush could not write at once has now all been written. */
    void (*drained)(cl_serve_io *io, void *arg);
    /* The connection ended: peer closed, I/O error, or TLS failure (tls_failure, why = OpenSSL's
     * reason). The callee must free the io, here or later; nothing else is called after this. */
    void (*closed)(cl_serve_io *io, bool tls_failure, const char *why, void *arg);
} cl_serve_io_cbs;
/* Takes over fd (on success) and makes it non-blocking; ctx NULL for clear. The callbacks struct
 * must outlive the io. */
cl_serve_io *cl_serve_io_new(struct event_base *base, int fd, SSL_CTX *ctx, const cl_serve_io_cbs *cbs, void *arg,
                             cl_err *err);
/* Queues bytes (encrypted by the next flush under TLS). -1 if out of memory or closed. */
int cl_serve_io_write(cl_serve_io *io, const void *p, size_t n);
/* Writes what is queued; the rest waits for the socket (then `drained`). Returns -1 when the
 * connection ended: `closed` has run and the io may already be freed. */
int cl_serve_io_flush(cl_serve_io *io);
/* Bytes queued and not yet written. */
size_t cl_serve_io_pending(const cl_serve_io *io);
/* Ends our side: TLS close_notify, what is queued, then the socket's write half (reading goes on).
 * -1 when the connection ended meanwhile (`closed` has run). */
int cl_serve_io_shutdown_write(cl_serve_io *io);
/* Stops or resumes reading (back-pressure); input OpenSSL already holds is delivered on resume. */
void cl_serve_io_set_reading(cl_serve_io *io, bool on);
SSL *cl_serve_io_ssl(cl_serve_io *io);
void cl_serve_io_free(cl_serve_io *io);
/* "host:port" of a peer address, for logs. */
void cl_serve_peer_name(const struct sockaddr *sa, char *buf, size_t cap);
/* TCP_NODELAY on a socket (a listener passes it on to the sockets it accepts, on Linux). */
void cl_serve_set_nodelay(int fd);

/* ---- server (server.c), for the front ends */
typedef struct cl_serve_grpc_listener cl_serve_grpc_listener;
cl_serve_registry *cl_serve_srv_registry(cl_serve_server *s);
const cl_serve_config *cl_serve_srv_config(cl_serve_server *s);
cl_serve_pool *cl_serve_srv_pool(cl_serve_server *s);
/* The config's inline_max_us in ns (0: never), for cl_serve_pool_run_inline. */
uint64_t cl_serve_srv_inline_ns(cl_serve_server *s);
/* A finished request, as the metrics and the access log see it: names, numbers and addresses only,
 * never tensor contents, headers or bodies. */
typedef struct cl_serve_request_info {
    cl_serve_api api;
    cl_serve_rpc rpc;       /* CL_RPC_COUNT: not a model API request (e.g. a metrics scrape): logged, not counted */
    const char *method;     /* REST: the HTTP method; gRPC: NULL */
    const char *path;       /* REST: the request's path (no query); gRPC: the :path; NULL when unknown */
    const char *model;      /* the model the request named; NULL or "" when it named none */
    int64_t version;        /* the version it was answered from, or asked for; 0: not known */
    cl_serve_code code;
    int http_status;        /* REST; 0 for gRPC */
    uint64_t start_ns;      /* cl_now_ns() when the request was taken up */
    size_t bytes_in, bytes_out; /* request and response bodies (gRPC: messages with their framing) */
    const char *peer;       /* "host:port", NULL when unknown */
    const char *client;     /* the client certificate's subject (mutual TLS), NULL when none */
} cl_serve_request_info;
/* Records a finished request for /monitoring/prometheus/metrics and writes its access-log line when
 * there is an access log. Loop thread or any thread. */
void cl_serve_request_done(cl_serve_server *s, const cl_serve_request_info *r);
/* True when the server writes an access log (then the front ends name the client certificate). */
bool cl_serve_access_logging(const cl_serve_server *s);
/* The subject of the peer's certificate (RFC 2253) into buf, or "" when there is none. */
void cl_serve_peer_subject(SSL *ssl, char *buf, size_t cap);
char *cl_serve_metrics_render(cl_serve_server *s);

/* grpc.c */
cl_serve_grpc_listener *cl_serve_grpc_listen(cl_serve_server *s, struct event_base *base, int fd, SSL_CTX *ctx,
                                             cl_err *err);
/* Stops accepting, sends GOAWAY on every connection; each closes once its streams are answered
 * and its output written. */
void cl_serve_grpc_shutdown(cl_serve_grpc_listener *l);
/* Connections still open (for graceful shutdown). Main loop thread. */
unsigned cl_serve_grpc_conns(const cl_serve_grpc_listener *l);
void cl_serve_grpc_free(cl_serve_grpc_listener *l);

/* rest.c: one HTTP/1.1 listener per REST event loop, each accepting on its own socket bound to the
 * REST port. The struct belongs to the loop's thread. */
struct evconnlistener;
typedef struct cl_serve_rest_conn cl_serve_rest_conn;
typedef struct cl_serve_rest_loop {
    cl_serve_server *srv;
    struct event_base *base;
    cl_serve_doneq *doneq;        /* where its calls return; NULL on the main loop (the pool's own) */
    /* set by cl_serve_rest_listen: */
    SSL_CTX *ctx;                 /* NULL: plain HTTP */
    struct evconnlistener *lev;   /* NULL once it stopped accepting */
    struct event *tick;           /* closes connections past their deadline */
    struct event *grace;          /* after shutdown began: closes the connections still idle */
    cl_serve_rest_conn *conns;
    atomic_uint n_conns;          /* open connections (read by the main loop while draining) */
    bool stopping;
    time_t date_at;               /* the Date header, formatted once a second */
    char date[40];
} cl_serve_rest_loop;
/* Starts accepting on fd (taken over on success; on failure the caller still owns it, and
 * cl_serve_rest_free releases what was set up). The loop struct must outlive its connections. */
int cl_serve_rest_listen(cl_serve_rest_loop *l, int fd, SSL_CTX *ctx, cl_err *err);
/* Stops accepting; connections between requests close, the others after their current response. */
void cl_serve_rest_shutdown(cl_serve_rest_loop *l);
/* Closes every connection (calls still in the pool are disowned) and the listener. */
void cl_serve_rest_free(cl_serve_rest_loop *l);

#endif
