/* cloister/client.h — the interface of the client module: a TensorFlow Serving client (what
 * `cloister predict` and `cloister bench` are built on). It owns
 *   - connections to a TF Serving server: gRPC over HTTP/2 (nghttp2 over OpenSSL, ALPN "h2"; h2c only
 *     when plaintext is asked for explicitly) or REST over HTTP/1.1 (TLS, keep-alive);
 *   - TLS one-way and mutual, the server name check, and RA-TLS attestation of the server (its
 *     certificate must carry evidence that verifies and matches a policy: this replaces the CA check);
 *   - the calls Predict, GetModelMetadata and GetModelStatus, with TF Serving's errors (gRPC
 *     grpc-status / grpc-message trailers, REST {"error": ...} bodies) turned into cl_err messages
 *     such as "UNAVAILABLE: the server is at capacity";
 *   - the pure helpers the CLI and the tests use: gRPC framing and trailer parsing, response
 *     decoding, top-k, and turning images into a model's input tensor from its signature.
 *
 * Tensors are cl_serve_tensor (serve.h): dense, row-major, malloc()ed data owned by the tensor.
 *
 * Ownership: a cl_client (configuration and TLS context) is created once and must outlive every
 * connection made from it; the options' policy and verifier are borrowed and must outlive the client.
 * Responses, metadata and status lists are owned by the caller and released with their *_clear / free.
 * Thread-safety: a cl_client is immutable once created; any number of threads may call
 * cl_client_connect() on it at once. A cl_client_conn is single-threaded: one call at a time, from one
 * thread (use one connection per thread; `cloister bench` does). The pure helpers are thread-safe.
 * The first cl_client_new() ignores SIGPIPE in the process (unless a handler is installed), so a
 * server closing a connection is an error, not a fatal signal.
 */
#ifndef CLOISTER_CLIENT_H
#define CLOISTER_CLIENT_H

#include "cloister/attest.h"
#include "cloister/common.h"
#include "cloister/image.h"
#include "cloister/policy.h"
#include "cloister/serve.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_CLIENT_DEFAULT_TIMEOUT_MS 30000
#define CL_CLIENT_DEFAULT_MAX_RESPONSE (64u << 20)

/* ---------------------------------------------------------------- connections */

typedef struct cl_client_options {
    const char *server;        /* "HOST:PORT" or "[IPv6]:PORT" */
    bool rest;                 /* REST over HTTP/1.1 instead of gRPC over HTTP/2 */
    bool plaintext;            /* no TLS (h2c / http): only when explicitly asked for */
    const char *ca_file;       /* CA of the server certificate (PEM); NULL: the system's trust store */
    const char *cert_file;     /* client certificate for mutual TLS (PEM), with key_file */
    const char *key_file;
    const char *server_name;   /* name checked in the server certificate and sent as SNI; NULL: the host */
    /* Attestation: when attest_policy is set, the server must present an RA-TLS certificate whose
     * evidence verifies with `verifier` and whose claims match the policy; the CA and name checks are
     * replaced by that. Both are borrowed. */
    const cl_policy *attest_policy;
    const cl_attest_verifier *verifier;
    int timeout_ms;            /* connect, handshake and each call; 0: CL_CLIENT_DEFAULT_TIMEOUT_MS */
    size_t max_response_bytes; /* 0: CL_CLIENT_DEFAULT_MAX_RESPONSE */
} cl_client_options;

typedef struct cl_client cl_client;
typedef struct cl_client_conn cl_client_conn;

/* Checks the options and builds the TLS context (loads CA, certificate and key). Strings in `o` are
 * copied. */
cl_client *cl_client_new(const cl_client_options *o, cl_err *err);
void cl_client_free(cl_client *c);
/* Connects, does the TLS handshake (and attestation) and, for gRPC, the HTTP/2 preface. A refused
 * attestation fails with CL_E_DENIED and names the failed check; a certificate the CA does not
 * vouch for fails with CL_E_AUTH. */
cl_client_conn *cl_client_connect(cl_client *c, cl_err *err);
void cl_client_conn_free(cl_client_conn *conn);
/* The server's verified claims when the client attests (NULL otherwise). */
const cl_attest_claims *cl_client_conn_claims(const cl_client_conn *conn);
/* The canonical code of the last call: OK, the server's code, or UNAVAILABLE / DEADLINE_EXCEEDED /
 * INTERNAL for transport failures (as gRPC clients report them). */
cl_serve_code cl_client_conn_last_code(const cl_client_conn *conn);

/* A connection whose transport failed (server closed it, GOAWAY, timeout) is reconnected by the
 * next call. false after such a failure, or when that reconnection failed (nothing listening), until a
 * call gets through again: a caller retrying in a loop should wait before the next call then. */
bool cl_client_conn_up(const cl_client_conn *conn);

/* ---------------------------------------------------------------- calls */

typedef struct cl_client_request {
    const char *model;
    int64_t version;                 /* <= 0: latest */
    const char *signature;           /* NULL: the server's default ("serving_default") */
    const cl_serve_tensor *inputs;   /* numeric inputs */
    size_t n_inputs;
    /* One DT_STRING input of shape [n_bytes] (encoded images for servers that decode them): gRPC
     * string_val, REST {"b64": ...}. NULL name: none. */
    const char *bytes_input;
    const uint8_t *const *bytes;
    const size_t *bytes_len;
    size_t n_bytes;
    const char *const *output_filter; /* gRPC only; REST returns every output */
    size_t n_output_filter;
} cl_client_request;

typedef struct cl_client_response {
    char *model;               /* as the server answered (gRPC); may be NULL */
    int64_t version;           /* 0 when the server did not say */
    cl_serve_tensor *outputs;  /* sorted by name; REST numbers arrive as DT_DOUBLE, and a lone REST
                                * output (TF Serving does not name it) is called "outputs" */
    size_t n_outputs;
} cl_client_response;

int cl_client_predict(cl_client_conn *conn, const cl_client_request *req, cl_client_response *resp, cl_err *err);
void cl_client_response_clear(cl_client_response *r);

/* A signature as the server describes it. Strings malloc()ed; dtype may be CL_SERVE_DT_STRING (an input taking encoded images). */
typedef struct cl_client_metadata {
    char *model;
    int64_t version;
    char *signature;   /* the signature described (serving_default, or the only one) */
    char *method_name;
    cl_serve_tensor_spec *inputs; /* sorted by name; names malloc()ed */
    size_t n_inputs;
    cl_serve_tensor_spec *outputs;
    size_t n_outputs;
} cl_client_metadata;

int cl_client_get_metadata(cl_client_conn *conn, const char *model, int64_t version, cl_client_metadata *md,
                           cl_err *err);
void cl_client_metadata_clear(cl_client_metadata *md);

typedef struct cl_client_version_status {
    int64_t version;
    char state[16];        /* "AVAILABLE", "LOADING", ... */
    cl_serve_code code;
    char message[256];
} cl_client_version_status;

/* *out is malloc()ed (free()). */
int cl_client_get_status(cl_client_conn *conn, const char *model, int64_t version, cl_client_version_status **out,
                         size_t *n, cl_err *err);

/* ---------------------------------------------------------------- pure helpers (tested, fuzzed) */

/* The 5-byte header of a gRPC message of len bytes (not compressed, big-endian length); the message
 * follows it. Fails above 4 GiB. */
int cl_client_grpc_frame_header(uint8_t hdr[5], size_t len, cl_err *err);
/* The one message of a unary response body, which must fill `len` exactly. Compressed messages and
 * messages above max_len are refused. */
int cl_client_grpc_unframe(const uint8_t *buf, size_t len, size_t max_len, const uint8_t **msg, size_t *msg_len,
                           cl_err *err);
/* Percent-decodes a grpc-message value into out (always NUL-terminated, truncated to fit). */
void cl_client_percent_decode(const char *in, size_t in_len, char *out, size_t out_size);
/* Turns grpc-status / grpc-message header values into a code and, when not OK, an error whose message
 * is "<CODE_NAME>: <message>". A missing or malformed status is INTERNAL. Returns 0 for OK. */
int cl_client_grpc_status(const char *status, size_t status_len, const char *message, size_t message_len,
                          cl_serve_code *code, cl_err *err);

/* Decoders of response bodies (protobuf without the gRPC frame; REST JSON with its HTTP status). On a
 * REST error body the error is "<CODE_NAME>: <error>" with the code derived from the HTTP status.
 * `code` (may be NULL) receives the canonical code. */
int cl_client_pb_predict_response(const uint8_t *buf, size_t len, cl_client_response *r, cl_err *err);
int cl_client_pb_metadata_response(const uint8_t *buf, size_t len, cl_client_metadata *md, cl_err *err);
int cl_client_pb_status_response(const uint8_t *buf, size_t len, cl_client_version_status **out, size_t *n,
                                 cl_err *err);
int cl_client_json_predict_response(const char *body, size_t len, int http_status, cl_client_response *r,
                                    cl_serve_code *code, cl_err *err);
int cl_client_json_metadata_response(const char *body, size_t len, int http_status, cl_client_metadata *md,
                                     cl_serve_code *code, cl_err *err);
int cl_client_json_status_response(const char *body, size_t len, int http_status, cl_client_version_status **out,
                                   size_t *n, cl_serve_code *code, cl_err *err);
/* The canonical code TF Serving's REST API answers with HTTP status `http` (inverse of
 * cl_serve_code_http; 429 is RESOURCE_EXHAUSTED). */
cl_serve_code cl_client_code_from_http(int http);

/* The k highest elements of row `row` of a rank-2 tensor [rows, classes] (or the whole of a rank-1
 * tensor, row 0), highest first (ties: lower index first). Returns how many were written (min(k,
 * classes)); 0 for a non-numeric tensor or a row out of range. */
size_t cl_client_topk(const cl_serve_tensor *t, size_t row, size_t k, size_t *idx, double *score);
/* Element i of a numeric tensor as a double (0 for out-of-range i). */
double cl_client_tensor_value(const cl_serve_tensor *t, size_t i);

/* How images become a model input. Defaults (zero-initialised): pixels scaled by 1/255, mean 0,
 * std 1 (values in [0, 1]); size, channels and layout taken from the input's signature shape;
 * area resize to that size (aspect ratio not kept). */
typedef struct cl_client_image_opts {
    float scale;       /* 0: 1/255 */
    float mean[3];
    float std[3];      /* 0: 1 */
    cl_image_resize resize;
    uint32_t width, height; /* only needed when the signature leaves them dynamic */
    cl_image_fit fit;       /* CL_IMAGE_FIT_CROP: keep the aspect ratio and take the centre */
    uint32_t shorter_side;  /* with CROP: the shorter side before cropping; torchvision's
                             * Resize(shorter_side) + CenterCrop */
    double crop_fraction;   /* with CROP and no shorter_side: the crop's larger side is this fraction of the
                             * shorter side (0.875: torchvision's ImageNet eval, 224 of 256); 0: the image
                             * is resized just to cover the input size */
} cl_client_image_opts;

/* From an input spec of rank 4 ([N,C,H,W] with C in {1,3}: NCHW; [N,H,W,C]: NHWC) and dtype
 * DT_FLOAT or DT_UINT8, fills `p` (size, channels, layout, normalisation). Errors name the spec. */
int cl_client_image_preproc(const cl_serve_tensor_spec *spec, const cl_client_image_opts *o, cl_image_preproc *p,
                            cl_err *err);
/* Decodes n encoded images (JPEG/PNG) and stacks them into one batch tensor named spec->name, of
 * shape [n, ...] as the spec lays it out. Errors name the image (by index). */
int cl_client_images_to_tensor(const cl_serve_tensor_spec *spec, const cl_client_image_opts *o,
                               const uint8_t *const *images, const size_t *lens, size_t n, cl_serve_tensor *out,
                               cl_err *err);
/* Parses "a" or "a,b,c" into three floats (one value is repeated). */
int cl_client_parse_floats3(const char *s, float out[3], cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
