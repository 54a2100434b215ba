/* grpc.c — the client module's gRPC path: length-prefixed gRPC messages, grpc-status / grpc-message
 * trailers into errors, an nghttp2 client session over the connection's transport (one unary call at
 * a time, streams reused on one connection), and the TF Serving messages (Predict, GetModelMetadata,
 * GetModelStatus) built and decoded with the protobuf-c code generated from proto/. */
#include "client_int.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#include "google/protobuf/wrappers.pb-c.h"
#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

#define GRPC_PREFIX 5
#define MAX_TENSOR_BYTES ((size_t)1 << 30)

/* ---------------------------------------------------------------- framing and status */

int cl_client_grpc_frame_header(uint8_t b[5], size_t len, cl_err *err)
{
    if (len > 0xffffffffu)
        return cl_err_set(err, CL_E_INVALID, "a gRPC message cannot exceed 4 GiB (this one has %zu bytes)", len);
    b[0] = 0;
    b[1] = (uint8_t)(len >> 24);
    b[2] = (uint8_t)(len >> 16);
    b[3] = (uint8_t)(len >> 8);
    b[4] = (uint8_t)len;
    return 0;
}

int cl_client_grpc_unframe(const uint8_t *buf, size_t len, size_t max_len, const uint8_t **msg, size_t *msg_len,
                           cl_err *err)
{
    if (len < GRPC_PREFIX)
        return cl_err_set(err, CL_E_TRUNCATED, "the gRPC response body has %zu byte%s, fewer than a message header",
                          len, len == 1 ? "" : "s");
    if (buf[0] == 1)
        return cl_err_set(err, CL_E_UNSUPPORTED, "the server sent a compressed gRPC message (this client asks for "
                          "none)");
    if (buf[0] != 0)
        return cl_err_set(err, CL_E_FORMAT, "invalid gRPC compressed-flag byte %u in the response", buf[0]);
    uint32_t n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (n > max_len)
        return cl_err_set(err, CL_E_INVALID, "the gRPC response message has %u bytes, above the limit of %zu", n,
                          max_len);
    if ((size_t)n < len - GRPC_PREFIX)
        return cl_err_set(err, CL_E_TRAILING, "the gRPC response carries %zu byte%s after its message",
                          len - GRPC_PREFIX - n, len - GRPC_PREFIX - n == 1 ? "" : "s");
    if ((size_t)n > len - GRPC_PREFIX)
        return cl_err_set(err, CL_E_TRUNCATED, "the gRPC response message is cut short (%zu of %u bytes)",
                          len - GRPC_PREFIX, n);
    *msg = buf + GRPC_PREFIX;
    *msg_len = n;
    return 0;
}

static int hexval(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

void cl_client_percent_decode(const char *in, size_t in_len, char *out, size_t out_size)
{
    if (!out_size)
        return;
    size_t o = 0;
    for (size_t i = 0; i < in_len && o + 1 < out_size; i++) {
        int h, l;
        if (in[i] == '%' && i + 2 < in_len && (h = hexval(in[i + 1])) >= 0 && (l = hexval(in[i + 2])) >= 0) {
            char ch = (char)(h << 4 | l);
            out[o++] = ch == '\0' ? '?' : ch;
            i += 2;
        } else {
            out[o++] = in[i] == '\0' ? '?' : in[i];
        }
    }
    out[o] = '\0';
}

int cl_client_grpc_status(const char *status, size_t status_len, const char *message, size_t message_len,
                          cl_serve_code *code, cl_err *err)
{
    char msg[CL_ERR_MSG_MAX];
    msg[0] = '\0';
    if (message)
        cl_client_percent_decode(message, message_len, msg, sizeof msg);
    long v = -1;
    if (status && status_len > 0 && status_len <= 3) {
        v = 0;
        for (size_t i = 0; i < status_len; i++) {
            if (status[i] < '0' || status[i] > '9') {
                v = -1;
                break;
            }
            v = v * 10 + (status[i] - '0');
        }
    }
    if (v < 0 || v > 16) {
        if (code)
            *code = CL_SC_INTERNAL;
        if (!status)
            return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's response has no grpc-status");
        return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server sent an invalid grpc-status '%.*s'",
                          (int)(status_len > 16 ? 16 : status_len), status);
    }
    if (code)
        *code = (cl_serve_code)v;
    if (v == 0)
        return 0;
    cl_status st = v == CL_SC_INVALID_ARGUMENT || v == CL_SC_NOT_FOUND || v == CL_SC_OUT_OF_RANGE ||
                           v == CL_SC_FAILED_PRECONDITION
                       ? CL_E_INVALID
                   : v == CL_SC_PERMISSION_DENIED || v == CL_SC_UNAUTHENTICATED ? CL_E_DENIED
                   : v == CL_SC_UNIMPLEMENTED                                 ? CL_E_UNSUPPORTED
                                                                              : CL_E_IO;
    return cl_err_set(err, st, "%s: %s", cl_serve_code_name((cl_serve_code)v), msg[0] ? msg : "(no message)");
}

/* ---------------------------------------------------------------- HTTP/2 session */

typedef struct cl_client_h2call {
    int32_t stream_id;
    const uint8_t *body;
    size_t body_len, body_off;
    uint8_t *resp;
    size_t resp_len, resp_cap, max;
    bool too_big, closed;
    uint32_t rst_code;
    int http_status;
    char *grpc_status, *grpc_message, *content_type;
    size_t grpc_status_len, grpc_message_len;
} h2call;

typedef struct {
    bool settings_seen;
    bool goaway;
    cl_err io_err; /* why the transport failed inside a callback */
} h2state;

/* The session's user data: the connection and per-session state (kept in conn->h2user). */
typedef struct {
    cl_client_conn *conn;
    h2state st;
} h2user;

static ssize_t on_send(nghttp2_session *s, const uint8_t *data, size_t len, int flags, void *arg)
{
    (void)s;
    (void)flags;
    h2user *u = arg;
    if (cl_client_io_write(u->conn, data, len, &u->st.io_err) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static char *dup_n(const uint8_t *p, size_t n)
{
    char *s = malloc(n + 1);
    if (s) {
        memcpy(s, p, n);
        s[n] = '\0';
    }
    return s;
}

static int on_header(nghttp2_session *s, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *arg)
{
    (void)s;
    (void)flags;
    h2user *u = arg;
    h2call *c = u->conn->call;
    if (!c || frame->hd.stream_id != c->stream_id)
        return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":status")) {
        int v = 0;
        for (size_t i = 0; i < valuelen && i < 4; i++)
            v = v * 10 + (value[i] - '0');
        c->http_status = v;
    } else if (IS("grpc-status") && !c->grpc_status) {
        c->grpc_status = dup_n(value, valuelen);
        c->grpc_status_len = valuelen;
    } else if (IS("grpc-message") && !c->grpc_message) {
        c->grpc_message = dup_n(value, valuelen);
        c->grpc_message_len = valuelen;
    } else if (IS("content-type") && !c->content_type) {
        c->content_type = dup_n(value, valuelen);
    }
#undef IS
    return 0;
}

static int on_data(nghttp2_session *s, uint8_t flags, int32_t stream_id, const uint8_t *data, size_t len, void *arg)
{
    (void)flags;
    h2user *u = arg;
    h2call *c = u->conn->call;
    if (!c || stream_id != c->stream_id || c->too_big)
        return 0;
    if (c->resp_len + len > c->max) {
        c->too_big = true;
        nghttp2_submit_rst_stream(s, NGHTTP2_FLAG_NONE, stream_id, NGHTTP2_CANCEL);
        return 0;
    }
    if (c->resp_len + len > c->resp_cap) {
        size_t cap = c->resp_cap ? c->resp_cap : 4096;
        while (cap < c->resp_len + len)
            cap *= 2;
        uint8_t *p = realloc(c->resp, cap);
        if (!p)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
        c->resp = p;
        c->resp_cap = cap;
    }
    memcpy(c->resp + c->resp_len, data, len);
    c->resp_len += len;
    return 0;
}

static int on_close(nghttp2_session *s, int32_t stream_id, uint32_t code, void *arg)
{
    (void)s;
    h2user *u = arg;
    h2call *c = u->conn->call;
    if (c && stream_id == c->stream_id) {
        c->closed = true;
        c->rst_code = code;
    }
    return 0;
}

static int on_frame(nghttp2_session *s, const nghttp2_frame *frame, void *arg)
{
    (void)s;
    h2user *u = arg;
    if (frame->hd.type == NGHTTP2_SETTINGS && !(frame->hd.flags & NGHTTP2_FLAG_ACK))
        u->st.settings_seen = true;
    if (frame->hd.type == NGHTTP2_GOAWAY)
        u->st.goaway = true;
    return 0;
}

static ssize_t read_body(nghttp2_session *s, int32_t stream_id, uint8_t *buf, size_t len, uint32_t *flags,
                         nghttp2_data_source *src, void *arg)
{
    (void)s;
    (void)stream_id;
    (void)arg;
    h2call *c = src->ptr;
    size_t n = c->body_len - c->body_off;
    if (n > len)
        n = len;
    memcpy(buf, c->body + c->body_off, n);
    c->body_off += n;
    if (c->body_off == c->body_len)
        *flags |= NGHTTP2_DATA_FLAG_EOF;
    return (ssize_t)n;
}

/* DATA frames sized so that frame header and payload fill exactly one TLS record (16 KiB of
 * plaintext): nghttp2's default 16 KiB payload plus its 9-byte header would take two records, the
 * second of 9 bytes, doubling the records (and the server's reads) of a large request. */
static ssize_t data_len(nghttp2_session *s, uint8_t type, int32_t stream_id, int32_t session_window,
                        int32_t stream_window, uint32_t max_frame, void *arg)
{
    (void)s;
    (void)type;
    (void)stream_id;
    (void)arg;
    ssize_t n = 16384 - 9;
    if (n > session_window)
        n = session_window;
    if (n > stream_window)
        n = stream_window;
    if ((uint32_t)n > max_frame)
        n = (ssize_t)max_frame;
    return n;
}

/* Sends what nghttp2 has queued, then reads and feeds one chunk. Returns 0, or -1 with err. */
static int h2_pump(cl_client_conn *conn, h2user *u, cl_err *err)
{
    int rv = nghttp2_session_send(conn->h2);
    if (rv != 0) {
        if (rv == NGHTTP2_ERR_CALLBACK_FAILURE && u->st.io_err.code) {
            *err = u->st.io_err;
            return -1;
        }
        return cl_err_set(err, CL_E_IO, "HTTP/2 session failed while sending: %s", nghttp2_strerror(rv));
    }
    if (cl_client_io_flush(conn, err) != 0)
        return -1;
    uint8_t buf[16384];
    ssize_t n = cl_client_io_read(conn, buf, sizeof buf, err);
    if (n < 0)
        return -1;
    if (n == 0)
        return cl_err_set(err, CL_E_IO, "%s closed the connection%s", conn->cl->authority,
                          u->st.goaway ? " (it is shutting down)" : "");
    ssize_t used = nghttp2_session_mem_recv(conn->h2, buf, (size_t)n);
    if (used < 0)
        return cl_err_set(err, CL_E_FORMAT, "%s broke the HTTP/2 protocol: %s", conn->cl->authority,
                          nghttp2_strerror((int)used));
    return 0;
}

/* Reads what the server sends before we send anything, for at most wait_ms (non-blocking reads). */
static int h2_read_first(cl_client_conn *conn, h2user *u, int wait_ms, cl_err *err)
{
    int fl = fcntl(conn->fd, F_GETFL);
    fcntl(conn->fd, F_SETFL, fl | O_NONBLOCK);
    uint64_t deadline = cl_now_ns() + (uint64_t)wait_ms * 1000000u;
    int rc = 0;
    while (!u->st.settings_seen) {
        uint8_t buf[4096];
        size_t n = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(conn->ssl, buf, sizeof buf, &n) == 1) {
            ssize_t used = nghttp2_session_mem_recv(conn->h2, buf, n);
            if (used < 0) {
                rc = cl_err_set(err, CL_E_FORMAT, "%s broke the HTTP/2 protocol: %s", conn->cl->authority,
                                nghttp2_strerror((int)used));
                break;
            }
            continue;
        }
        int e = SSL_get_error(conn->ssl, 0);
        uint64_t now = cl_now_ns();
        if ((e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE) && now < deadline) {
            struct pollfd pfd = {conn->fd, e == SSL_ERROR_WANT_READ ? POLLIN : POLLOUT, 0};
            poll(&pfd, 1, (int)((deadline - now) / 1000000u) + 1);
            continue;
        }
        if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
            break; /* nothing yet: the server may wait for our preface */
        fcntl(conn->fd, F_SETFL, fl);
        return cl_client_tls_error(conn, "receiving", err);
    }
    ERR_clear_error();
    fcntl(conn->fd, F_SETFL, fl);
    return rc;
}

int cl_client_h2_start(cl_client_conn *conn, cl_err *err)
{
    nghttp2_session_callbacks *cbs;
    h2user *u = calloc(1, sizeof *u);
    if (!u || nghttp2_session_callbacks_new(&cbs) != 0) {
        free(u);
        return cl_err_nomem(err);
    }
    u->conn = conn;
    conn->h2user = u;
    nghttp2_session_callbacks_set_send_callback(cbs, on_send);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame);
    nghttp2_session_callbacks_set_data_source_read_length_callback(cbs, data_len);
    int rv = nghttp2_session_client_new(&conn->h2, cbs, u);
    nghttp2_session_callbacks_del(cbs);
    if (rv != 0) {
        free(u);
        conn->h2user = NULL;
        conn->h2 = NULL;
        return cl_err_set(err, CL_E_NOMEM, "cannot create an HTTP/2 session: %s", nghttp2_strerror(rv));
    }
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_ENABLE_PUSH, 0},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 24}};
    nghttp2_submit_settings(conn->h2, NGHTTP2_FLAG_NONE, iv, CL_ARRAY_LEN(iv));
    nghttp2_session_set_local_window_size(conn->h2, NGHTTP2_FLAG_NONE, 0, 1 << 24);
    /* Servers send their SETTINGS as soon as the connection is up, and a TLS server that refuses our
     * certificate sends an alert instead. Reading first (a short while) makes that refusal the error
     * we report, rather than whatever a write to the closing connection gives. */
    if (conn->ssl && h2_read_first(conn, u, 500, err) != 0)
        return cl_err_prefix(err, "starting HTTP/2 with %s", conn->cl->authority);
    while (!u->st.settings_seen)
        if (h2_pump(conn, u, err) != 0)
            return cl_err_prefix(err, "starting HTTP/2 with %s", conn->cl->authority);
    return 0;
}

void cl_client_h2_end(cl_client_conn *conn)
{
    if (!conn->h2)
        return;
    h2user *u = conn->h2user;
    if (!conn->broken && conn->fd >= 0) {
        nghttp2_session_terminate_session(conn->h2, NGHTTP2_NO_ERROR);
        cl_err ignored = {0};
        if (nghttp2_session_send(conn->h2) == 0)
            cl_client_io_flush(conn, &ignored);
    }
    nghttp2_session_del(conn->h2);
    free(u);
    conn->h2user = NULL;
    conn->h2 = NULL;
}

static void call_clear(h2call *c)
{
    free(c->resp);
    free(c->grpc_status);
    free(c->grpc_message);
    free(c->content_type);
}

int cl_client_grpc_call(cl_client_conn *conn, const char *path, const uint8_t *framed, size_t framed_len,
                        uint8_t **resp, size_t *resp_len, cl_err *err)
{
    *resp = NULL;
    *resp_len = 0;
    h2user *u = conn->h2user;
    memset(&u->st.io_err, 0, sizeof u->st.io_err);
    h2call c = {.body = framed, .body_len = framed_len, .max = conn->cl->max_response + GRPC_PREFIX};
    const char *scheme = conn->ssl ? "https" : "http";
#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NONE}
    nghttp2_nv hdrs[] = {NV(":method", "POST"),         NV(":scheme", scheme),
                         NV(":path", path),             NV(":authority", conn->cl->authority),
                         NV("content-type", "application/grpc"), NV("te", "trailers"),
                         NV("grpc-accept-encoding", "identity"), NV("user-agent", "cloister-client/0.1")};
#undef NV
    nghttp2_data_provider prd = {.source.ptr = &c, .read_callback = read_body};
    int rc = -1;
    /* cppcheck-suppress autoVariables ; cleared at out: below, before c goes out of scope */
    conn->call = &c;
    c.stream_id = nghttp2_submit_request(conn->h2, NULL, hdrs, CL_ARRAY_LEN(hdrs), &prd, NULL);
    if (c.stream_id < 0) {
        cl_err_set(err, CL_E_IO, "cannot start a request on the HTTP/2 connection: %s", nghttp2_strerror(c.stream_id));
        cl_client_conn_fail(conn, err);
        goto out;
    }
    while (!c.closed) {
        if (h2_pump(conn, u, err) != 0) {
            cl_client_conn_fail(conn, err);
            goto out;
        }
    }
    /* flush window updates and the like */
    cl_err ignored = {0};
    if (nghttp2_session_send(conn->h2) == 0)
        cl_client_io_flush(conn, &ignored);
    if (u->st.goaway)
        conn->broken = true; /* reconnect for the next call */
    if (c.too_big) {
        conn->last_code = CL_SC_RESOURCE_EXHAUSTED;
        cl_err_set(err, CL_E_INVALID, "RESOURCE_EXHAUSTED: the response is larger than the client's limit of %zu bytes",
                   conn->cl->max_response);
        goto out;
    }
    if (!c.grpc_status) {
        if (c.rst_code == NGHTTP2_REFUSED_STREAM || (u->st.goaway && c.rst_code)) {
            conn->last_code = CL_SC_UNAVAILABLE;
            cl_err_set(err, CL_E_IO, "UNAVAILABLE: the server did not take the request (it is shutting down)");
        } else if (c.http_status && c.http_status != 200) {
            conn->last_code = CL_SC_UNKNOWN;
            cl_err_set(err, CL_E_FORMAT, "UNKNOWN: HTTP status %d from %s, without a gRPC status (is it a gRPC "
                       "server?)", c.http_status, conn->cl->authority);
        } else {
            conn->last_code = CL_SC_INTERNAL;
            cl_err_set(err, CL_E_FORMAT, "INTERNAL: the response ended without a grpc-status%s%s",
                       c.rst_code ? " (stream reset: " : "", c.rst_code ? nghttp2_http2_strerror(c.rst_code) : "");
            if (c.rst_code)
                snprintf(err->msg + strlen(err->msg), sizeof err->msg - strlen(err->msg), ")");
        }
        goto out;
    }
    cl_serve_code code;
    if (cl_client_grpc_status(c.grpc_status, c.grpc_status_len, c.grpc_message, c.grpc_message_len, &code, err) != 0) {
        conn->last_code = code;
        goto out;
    }
    const uint8_t *msg;
    size_t msg_len;
    if (cl_client_grpc_unframe(c.resp, c.resp_len, conn->cl->max_response, &msg, &msg_len, err) != 0) {
        conn->last_code = CL_SC_INTERNAL;
        goto out;
    }
    if (!(*resp = malloc(msg_len ? msg_len : 1))) {
        conn->last_code = CL_SC_INTERNAL;
        cl_err_nomem(err);
        goto out;
    }
    memcpy(*resp, msg, msg_len);
    *resp_len = msg_len;
    conn->last_code = CL_SC_OK;
    rc = 0;
out:
    conn->call = NULL;
    call_clear(&c);
    return rc;
}

/* ---------------------------------------------------------------- messages */

static Tensorflow__Serving__ModelSpec *model_spec(Tensorflow__Serving__ModelSpec *spec, Google__Protobuf__Int64Value *v,
                                                  const char *model, int64_t version, const char *signature)
{
    tensorflow__serving__model_spec__init(spec);
    spec->name = (char *)model;
    if (signature)
        spec->signature_name = (char *)signature;
    if (version > 0) {
        google__protobuf__int64_value__init(v);
        v->value = version;
        spec->version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
        spec->version = v;
    }
    return spec;
}

/* The message serialized straight behind its gRPC header (no second copy of a large tensor). */
static uint8_t *pack_framed(const ProtobufCMessage *m, size_t *len, cl_err *err)
{
    size_t n = protobuf_c_message_get_packed_size(m);
    uint8_t *b = malloc(n + GRPC_PREFIX);
    if (!b) {
        cl_err_set(err, CL_E_NOMEM, "out of memory for a %zu-byte request", n);
        return NULL;
    }
    if (cl_client_grpc_frame_header(b, n, err) != 0) {
        free(b);
        return NULL;
    }
    protobuf_c_message_pack(m, b + GRPC_PREFIX);
    *len = n + GRPC_PREFIX;
    return b;
}

static int shape_from_pb(const Tensorflow__TensorShapeProto *sh, int *ndim, int64_t *dims, const char *name,
                         cl_err *err)
{
    if (!sh || sh->unknown_rank) {
        *ndim = sh ? -1 : 0;
        return 0;
    }
    if (sh->n_dim > CL_SERVE_MAX_DIMS)
        return cl_err_set(err, CL_E_FORMAT, "'%s' has %zu dimensions (at most %d supported)", name, sh->n_dim,
                          CL_SERVE_MAX_DIMS);
    *ndim = (int)sh->n_dim;
    for (size_t i = 0; i < sh->n_dim; i++)
        dims[i] = sh->dim[i]->size;
    return 0;
}

/* Fills a tensor from a TensorProto (tensor_content, or the typed *_val fields). */
static int tensor_from_pb(const char *name, const Tensorflow__TensorProto *tp, cl_serve_tensor *t, cl_err *err)
{
    int ndim = 0;
    int64_t dims[CL_SERVE_MAX_DIMS];
    if (shape_from_pb(tp->tensor_shape, &ndim, dims, name, err) != 0)
        return -1;
    if (ndim < 0)
        return cl_err_set(err, CL_E_FORMAT, "output '%s' has no shape", name);
    cl_serve_dtype dt = (cl_serve_dtype)tp->dtype;
    size_t es = cl_serve_dtype_size(dt);
    if (!es)
        return cl_err_set(err, CL_E_UNSUPPORTED, "output '%s' has dtype %d, which this client does not decode", name,
                          (int)tp->dtype);
    for (int i = 0; i < ndim; i++)
        if (dims[i] < 0)
            return cl_err_set(err, CL_E_FORMAT, "output '%s' has a negative dimension", name);
    if (cl_serve_tensor_init(t, name, dt, ndim, dims, MAX_TENSOR_BYTES, err) != 0)
        return cl_err_prefix(err, "output '%s'", name);
    size_t n = t->nbytes / es;
    if (tp->tensor_content.len) {
        if (tp->tensor_content.len != t->nbytes)
            return cl_err_set(err, CL_E_FORMAT, "output '%s': tensor_content has %zu bytes, its shape needs %zu", name,
                              tp->tensor_content.len, t->nbytes);
        memcpy(t->data, tp->tensor_content.data, t->nbytes);
        return 0;
    }
    size_t have;
    switch (dt) {
    case CL_SERVE_DT_FLOAT: have = tp->n_float_val; break;
    case CL_SERVE_DT_DOUBLE: have = tp->n_double_val; break;
    case CL_SERVE_DT_INT64: have = tp->n_int64_val; break;
    case CL_SERVE_DT_BOOL: have = tp->n_bool_val; break;
    default: have = tp->n_int_val; break;
    }
    if (n == 0)
        return 0;
    if (have != n && have != 1)
        return cl_err_set(err, CL_E_FORMAT, "output '%s' has %zu values, its shape needs %zu", name, have, n);
    for (size_t i = 0; i < n; i++) {
        size_t j = have == 1 ? 0 : i;
        switch (dt) {
        case CL_SERVE_DT_FLOAT: ((float *)t->data)[i] = tp->float_val[j]; break;
        case CL_SERVE_DT_DOUBLE: ((double *)t->data)[i] = tp->double_val[j]; break;
        case CL_SERVE_DT_INT64: ((int64_t *)t->data)[i] = tp->int64_val[j]; break;
        case CL_SERVE_DT_BOOL: ((uint8_t *)t->data)[i] = tp->bool_val[j] ? 1 : 0; break;
        case CL_SERVE_DT_INT32: ((int32_t *)t->data)[i] = tp->int_val[j]; break;
        case CL_SERVE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)tp->int_val[j]; break;
        case CL_SERVE_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)tp->int_val[j]; break;
        default: break;
        }
    }
    return 0;
}

int cl_client_pb_predict_response(const uint8_t *buf, size_t len, cl_client_response *r, cl_err *err)
{
    memset(r, 0, sizeof *r);
    Tensorflow__Serving__PredictResponse *m = tensorflow__serving__predict_response__unpack(NULL, len, buf);
    if (!m)
        return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's answer is not a valid PredictResponse");
    int rc = -1;
    if (m->model_spec) {
        if (m->model_spec->name && *m->model_spec->name && !(r->model = strdup(m->model_spec->name))) {
            cl_err_nomem(err);
            goto out;
        }
        if (m->model_spec->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION &&
            m->model_spec->version)
            r->version = m->model_spec->version->value;
    }
    if (m->n_outputs && !(r->outputs = calloc(m->n_outputs, sizeof *r->outputs))) {
        cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < m->n_outputs; i++) {
        const Tensorflow__Serving__PredictResponse__OutputsEntry *e = m->outputs[i];
        if (!e->value)
            continue;
        if (e->value->dtype == TENSORFLOW__DATA_TYPE__DT_STRING) {
            CL_DEBUG(CL_CLIENT_MOD, "output '%s' is DT_STRING; this client skips string outputs", e->key);
            continue;
        }
        for (size_t k = 0; k < r->n_outputs; k++)
            if (strcmp(r->outputs[k].name, e->key) == 0) {
                cl_err_set(err, CL_E_FORMAT, "INTERNAL: output '%s' appears twice in the response", e->key);
                goto out;
            }
        if (tensor_from_pb(e->key, e->value, &r->outputs[r->n_outputs], err) != 0) {
            cl_serve_tensor_clear(&r->outputs[r->n_outputs]);
            goto out;
        }
        r->n_outputs++;
    }
    cl_client_sort_outputs(r);
    rc = 0;
out:
    tensorflow__serving__predict_response__free_unpacked(m, NULL);
    if (rc != 0)
        cl_client_response_clear(r);
    return rc;
}

static int specs_from_pb(Tensorflow__SignatureDef__InputsEntry **entries, size_t n, cl_serve_tensor_spec **out,
                         size_t *n_out, cl_err *err)
{
    /* InputsEntry and OutputsEntry have the same layout (key, TensorInfo value) */
    *out = n ? calloc(n, sizeof **out) : NULL;
    *n_out = 0;
    if (n && !*out)
        return cl_err_nomem(err);
    for (size_t i = 0; i < n; i++) {
        cl_serve_tensor_spec *s = &(*out)[i];
        const Tensorflow__TensorInfo *ti = entries[i]->value;
        if (!(s->name = strdup(entries[i]->key ? entries[i]->key : "")))
            return cl_err_nomem(err);
        (*n_out)++;
        s->dtype = ti ? (cl_serve_dtype)ti->dtype : CL_SERVE_DT_INVALID;
        if (shape_from_pb(ti ? ti->tensor_shape : NULL, &s->ndim, s->dims, s->name, err) != 0)
            return -1;
        if (!ti || !ti->tensor_shape)
            s->ndim = -1;
    }
    return 0;
}

int cl_client_pb_metadata_response(const uint8_t *buf, size_t len, cl_client_metadata *md, cl_err *err)
{
    memset(md, 0, sizeof *md);
    Tensorflow__Serving__GetModelMetadataResponse *m =
        tensorflow__serving__get_model_metadata_response__unpack(NULL, len, buf);
    if (!m)
        return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's answer is not a valid GetModelMetadataResponse");
    Tensorflow__Serving__SignatureDefMap *map = NULL;
    int rc = -1;
    if (m->model_spec) {
        md->model = strdup(m->model_spec->name ? m->model_spec->name : "");
        if (m->model_spec->version_choice_case == TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION &&
            m->model_spec->version)
            md->version = m->model_spec->version->value;
    }
    const Google__Protobuf__Any *any = NULL;
    for (size_t i = 0; i < m->n_metadata; i++)
        if (m->metadata[i]->key && strcmp(m->metadata[i]->key, "signature_def") == 0)
            any = m->metadata[i]->value;
    static const char want[] = "tensorflow.serving.SignatureDefMap";
    size_t ul = any && any->type_url ? strlen(any->type_url) : 0;
    if (!any || ul < sizeof want - 1 || strcmp(any->type_url + ul - (sizeof want - 1), want) != 0) {
        cl_err_set(err, CL_E_FORMAT, "INTERNAL: the metadata has no signature_def (SignatureDefMap)");
        goto out;
    }
    if (!(map = tensorflow__serving__signature_def_map__unpack(NULL, any->value.len, any->value.data))) {
        cl_err_set(err, CL_E_FORMAT, "INTERNAL: the metadata's signature_def is not a valid SignatureDefMap");
        goto out;
    }
    const Tensorflow__Serving__SignatureDefMap__SignatureDefEntry *pick = NULL;
    for (size_t i = 0; i < map->n_signature_def; i++)
        if (map->signature_def[i]->key && strcmp(map->signature_def[i]->key, "serving_default") == 0)
            pick = map->signature_def[i];
    if (!pick && map->n_signature_def == 1)
        pick = map->signature_def[0];
    if (!pick || !pick->value) {
        cl_err_set(err, CL_E_FORMAT, "the model has %zu signatures and none is 'serving_default'",
                   map->n_signature_def);
        goto out;
    }
    md->signature = strdup(pick->key ? pick->key : "");
    md->method_name = strdup(pick->value->method_name ? pick->value->method_name : "");
    if (!md->signature || !md->method_name || (m->model_spec && !md->model)) {
        cl_err_nomem(err);
        goto out;
    }
    if (specs_from_pb(pick->value->inputs, pick->value->n_inputs, &md->inputs, &md->n_inputs, err) != 0 ||
        specs_from_pb((Tensorflow__SignatureDef__InputsEntry **)pick->value->outputs, pick->value->n_outputs,
                      &md->outputs, &md->n_outputs, err) != 0)
        goto out;
    cl_client_sort_specs(md->inputs, md->n_inputs);
    cl_client_sort_specs(md->outputs, md->n_outputs);
    rc = 0;
out:
    if (map)
        tensorflow__serving__signature_def_map__free_unpacked(map, NULL);
    tensorflow__serving__get_model_metadata_response__free_unpacked(m, NULL);
    if (rc != 0)
        cl_client_metadata_clear(md);
    return rc;
}

static const char *state_name(int s)
{
    switch (s) {
    case TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__START: return "START";
    case TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__LOADING: return "LOADING";
    case TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE: return "AVAILABLE";
    case TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__UNLOADING: return "UNLOADING";
    case TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__END: return "END";
    default: return "UNKNOWN";
    }
}

int cl_client_pb_status_response(const uint8_t *buf, size_t len, cl_client_version_status **out, size_t *n,
                                 cl_err *err)
{
    *out = NULL;
    *n = 0;
    Tensorflow__Serving__GetModelStatusResponse *m = tensorflow__serving__get_model_status_response__unpack(NULL, len,
                                                                                                            buf);
    if (!m)
        return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's answer is not a valid GetModelStatusResponse");
    if (m->n_model_version_status && !(*out = calloc(m->n_model_version_status, sizeof **out))) {
        tensorflow__serving__get_model_status_response__free_unpacked(m, NULL);
        return cl_err_nomem(err);
    }
    for (size_t i = 0; i < m->n_model_version_status; i++) {
        const Tensorflow__Serving__ModelVersionStatus *s = m->model_version_status[i];
        cl_client_version_status *o = &(*out)[i];
        o->version = s->version;
        snprintf(o->state, sizeof o->state, "%s", state_name(s->state));
        if (s->status) {
            o->code = (cl_serve_code)s->status->error_code;
            snprintf(o->message, sizeof o->message, "%s", s->status->error_message ? s->status->error_message : "");
        }
    }
    *n = m->n_model_version_status;
    tensorflow__serving__get_model_status_response__free_unpacked(m, NULL);
    return 0;
}

/* ---------------------------------------------------------------- calls */

int cl_client_grpc_predict(cl_client_conn *c, const cl_client_request *req, cl_client_response *resp, cl_err *err)
{
    size_t n_in = req->n_inputs + (req->bytes_input ? 1 : 0);
    Tensorflow__Serving__PredictRequest m = TENSORFLOW__SERVING__PREDICT_REQUEST__INIT;
    Tensorflow__Serving__ModelSpec spec;
    Google__Protobuf__Int64Value v;
    m.model_spec = model_spec(&spec, &v, req->model, req->version, req->signature);
    Tensorflow__Serving__PredictRequest__InputsEntry *ents = calloc(n_in ? n_in : 1, sizeof *ents);
    Tensorflow__Serving__PredictRequest__InputsEntry **eptr = calloc(n_in ? n_in : 1, sizeof *eptr);
    Tensorflow__TensorProto *tps = calloc(n_in ? n_in : 1, sizeof *tps);
    Tensorflow__TensorShapeProto *shapes = calloc(n_in ? n_in : 1, sizeof *shapes);
    Tensorflow__TensorShapeProto__Dim *dims = calloc((n_in ? n_in : 1) * CL_SERVE_MAX_DIMS, sizeof *dims);
    Tensorflow__TensorShapeProto__Dim **dptr = calloc((n_in ? n_in : 1) * CL_SERVE_MAX_DIMS, sizeof *dptr);
    ProtobufCBinaryData *strs = req->n_bytes ? calloc(req->n_bytes, sizeof *strs) : NULL;
    uint8_t *body = NULL, *out = NULL;
    size_t body_len = 0, out_len = 0;
    int rc = -1;
    if (!ents || !eptr || !tps || !shapes || !dims || !dptr || (req->n_bytes && !strs)) {
        cl_err_nomem(err);
        goto done;
    }
    for (size_t i = 0; i < n_in; i++) {
        bool is_bytes = i == req->n_inputs;
        const cl_serve_tensor *t = is_bytes ? NULL : &req->inputs[i];
        tensorflow__serving__predict_request__inputs_entry__init(&ents[i]);
        tensorflow__tensor_proto__init(&tps[i]);
        tensorflow__tensor_shape_proto__init(&shapes[i]);
        int nd = is_bytes ? 1 : t->ndim;
        shapes[i].n_dim = (size_t)nd;
        shapes[i].dim = &dptr[i * CL_SERVE_MAX_DIMS];
        for (int d = 0; d < nd; d++) {
            Tensorflow__TensorShapeProto__Dim *dm = &dims[i * CL_SERVE_MAX_DIMS + (size_t)d];
            tensorflow__tensor_shape_proto__dim__init(dm);
            dm->size = is_bytes ? (int64_t)req->n_bytes : t->dims[d];
            shapes[i].dim[d] = dm;
        }
        tps[i].tensor_shape = &shapes[i];
        if (is_bytes) {
            tps[i].dtype = TENSORFLOW__DATA_TYPE__DT_STRING;
            for (size_t k = 0; k < req->n_bytes; k++) {
                strs[k].data = (uint8_t *)req->bytes[k];
                strs[k].len = req->bytes_len[k];
            }
            tps[i].n_string_val = req->n_bytes;
            tps[i].string_val = strs;
            ents[i].key = (char *)req->bytes_input;
        } else {
            tps[i].dtype = (Tensorflow__DataType)t->dtype;
            tps[i].tensor_content.data = t->data;
            tps[i].tensor_content.len = t->nbytes;
            ents[i].key = t->name;
        }
        ents[i].value = &tps[i];
        eptr[i] = &ents[i];
    }
    m.n_inputs = n_in;
    m.inputs = eptr;
    m.n_output_filter = req->n_output_filter;
    m.output_filter = (char **)req->output_filter;
    if (!(body = pack_framed(&m.base, &body_len, err))) {
        if (err->code == CL_E_INVALID)
            c->last_code = CL_SC_INVALID_ARGUMENT;
        goto done;
    }
    if (cl_client_grpc_call(c, "/tensorflow.serving.PredictionService/Predict", body, body_len, &out, &out_len, err) != 0)
        goto done;
    if (cl_client_pb_predict_response(out, out_len, resp, err) != 0) {
        c->last_code = CL_SC_INTERNAL;
        goto done;
    }
    rc = 0;
done:
    free(out);
    free(body);
    free(strs);
    free(dptr);
    free(dims);
    free(shapes);
    free(tps);
    free(eptr);
    free(ents);
    return rc;
}

int cl_client_grpc_metadata(cl_client_conn *c, const char *model, int64_t version, cl_client_metadata *md,
                            cl_err *err)
{
    Tensorflow__Serving__GetModelMetadataRequest m = TENSORFLOW__SERVING__GET_MODEL_METADATA_REQUEST__INIT;
    Tensorflow__Serving__ModelSpec spec;
    Google__Protobuf__Int64Value v;
    char *field = "signature_def";
    m.model_spec = model_spec(&spec, &v, model, version, NULL);
    m.n_metadata_field = 1;
    m.metadata_field = &field;
    size_t body_len, out_len;
    uint8_t *body = pack_framed(&m.base, &body_len, err), *out = NULL;
    if (!body)
        return -1;
    int rc = cl_client_grpc_call(c, "/tensorflow.serving.PredictionService/GetModelMetadata", body, body_len, &out,
                                 &out_len, err);
    if (rc == 0 && (rc = cl_client_pb_metadata_response(out, out_len, md, err)) != 0)
        c->last_code = CL_SC_INTERNAL;
    free(body);
    free(out);
    return rc;
}

int cl_client_grpc_status_call(cl_client_conn *c, const char *model, int64_t version, cl_client_version_status **st,
                               size_t *n, cl_err *err)
{
    Tensorflow__Serving__GetModelStatusRequest m = TENSORFLOW__SERVING__GET_MODEL_STATUS_REQUEST__INIT;
    Tensorflow__Serving__ModelSpec spec;
    Google__Protobuf__Int64Value v;
    m.model_spec = model_spec(&spec, &v, model, version, NULL);
    size_t body_len, out_len;
    uint8_t *body = pack_framed(&m.base, &body_len, err), *out = NULL;
    if (!body)
        return -1;
    int rc = cl_client_grpc_call(c, "/tensorflow.serving.ModelService/GetModelStatus", body, body_len, &out, &out_len,
                                 err);
    if (rc == 0 && (rc = cl_client_pb_status_response(out, out_len, st, n, err)) != 0)
        c->last_code = CL_SC_INTERNAL;
    free(body);
    free(out);
    return rc;
}
