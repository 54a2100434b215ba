/* grpc.c — the gRPC front end: HTTP/2 (nghttp2) over TLS (the tlsio.c transport) or, only when
 * explicitly allowed, cleartext h2c; gRPC message framing; dispatch of
 *   /tensorflow.serving.PredictionService/Predict           -> worker pool
 *   /tensorflow.serving.PredictionService/Classify, Regress, MultiInference -> worker pool (classify.c)
 *   /tensorflow.serving.PredictionService/GetModelMetadata  -> answered on the loop thread
 *   /tensorflow.serving.ModelService/GetModelStatus         -> answered on the loop thread
 *   /tensorflow.serving.ModelService/HandleReloadConfigRequest -> the config's reload hook, on the loop thread
 *   /grpc.health.v1.Health/Check and /Watch (when enabled)  -> answered on the loop thread (health.c);
 *                                                              a Watch stream stays open until shutdown
 * with grpc-status / grpc-message trailers (trailers-only responses for errors). Compressed request
 * messages (grpc-encoding gzip / deflate) are inflated within the request limit, and responses are
 * compressed when the server is configured to and the client accepts it (compress.c).
 *
 * Limits: a request body above max_request_bytes is refused with RESOURCE_EXHAUSTED as soon as it
 * is known (declared length or bytes received); a TLS handshake, or a request stream, not complete
 * within request_timeout_ms gets its connection closed (slow or stalled clients cannot hold
 * resources), and so does a connection whose client has not sent the HTTP/2 preface (and SETTINGS)
 * within request_timeout_ms of connecting; an idle connection is closed after CONN_IDLE_MS.
 *
 * Ownership: everything here belongs to the loop thread. A stream that has a call in the worker
 * pool is not freed with it: the call's owner is cleared and the call frees itself when it comes
 * back (grpc_call_done). */
#include "serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/listener.h>
#include <nghttp2/nghttp2.h>
#include <openssl/err.h>

#define CONN_IDLE_MS 300000u
#define GRPC_PREFIX 5
#define OUT_MAX (1u << 20) /* output queued for a slow reader before nghttp2 is told to wait */
#define CL_GRPC_ACCEPT_ENCODING "identity,deflate,gzip"

typedef struct gconn gconn;

typedef struct gstream {
    int32_t id;
    gconn *conn;
    struct gstream *prev, *next;
    uint64_t start_ns;
    char path[96];
    bool post, grpc_ct, compressed_ok;
    bool complete;   /* END_STREAM received */
    bool responded;  /* a response was submitted */
    bool too_big;
    uint8_t *buf;
    size_t len, cap;
    cl_serve_call *call;
    cl_serve_rpc rpc;
    char model[128]; /* for the metrics and the access log */
    int64_t version;  /* likewise: the version answering, or asked for (0: not known) */
    size_t bytes_in;  /* DATA received */
    /* response */
    uint8_t *resp;
    size_t resp_len, resp_off;
    char status_str[8];
    char *message; /* percent-encoded grpc-message, or NULL */
    nghttp2_nv trailers[2];
    size_t n_trailers;
    /* compression (compress.c): the request's grpc-encoding (a cl_serve_compression, -1: unknown) and
     * which algorithms its grpc-accept-encoding lists */
    int encoding;
    char encoding_name[32];
    bool accepts[3];
    /* grpc.health.v1 (health.c): 1 Check, 2 Watch; a Watch stream stays open (watching) until the
     * server stops, when it gets NOT_SERVING and its trailers */
    int health;
    bool watching, watch_ended;
} gstream;

struct gconn {
    cl_serve_grpc_listener *l;
    cl_serve_io *io;
    nghttp2_session *ngh;
    gstream *streams;
    struct event *timer;
    uint64_t created_ns, last_active_ns;
    size_t buffered; /* request bytes held by all streams */
    uint64_t closing_since_ns;
    bool closing;
    bool heard; /* a frame arrived: the client sent the HTTP/2 preface and its SETTINGS */
    bool subject_done; /* subject: the client certificate's, looked up once (for the access log) */
    char subject[256];
    char peer[64];
    gconn *prev, *next;
};

struct cl_serve_grpc_listener {
    cl_serve_server *srv;
    struct event_base *base;
    struct evconnlistener *lev;
    SSL_CTX *ctx;
    gconn *conns;
    bool shutting_down;
};

static void conn_free(gconn *c);
static int conn_flush(gconn *c);

/* ---------------------------------------------------------------- framing */

cl_serve_code cl_serve_grpc_frame(const uint8_t *buf, size_t len, size_t max_msg, bool *compressed,
                                  const uint8_t **msg, size_t *msg_len, cl_serve_status *st)
{
    if (len < GRPC_PREFIX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request body is shorter than a gRPC message "
                               "header (%zu bytes)", len);
    if (buf[0] > 1)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "invalid gRPC compressed-flag byte %u", buf[0]);
    uint32_t n = (uint32_t)buf[1] << 24 | (uint32_t)buf[2] << 16 | (uint32_t)buf[3] << 8 | buf[4];
    if (n > max_msg)
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "gRPC message of %u bytes is above the server's "
                               "limit of %zu bytes", n, max_msg);
    if ((size_t)n != len - GRPC_PREFIX)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "gRPC framing: the message header says %u bytes but the "
                               "stream carries %zu (exactly one message per unary call)", n, len - GRPC_PREFIX);
    *compressed = buf[0] == 1;
    *msg = buf + GRPC_PREFIX;
    *msg_len = n;
    return CL_SC_OK;
}

cl_serve_code cl_serve_grpc_unframe(const uint8_t *buf, size_t len, size_t max_msg, const uint8_t **msg,
                                    size_t *msg_len, cl_serve_status *st)
{
    bool compressed;
    cl_serve_code code = cl_serve_grpc_frame(buf, len, max_msg, &compressed, msg, msg_len, st);
    if (code == CL_SC_OK && compressed)
        return cl_serve_st_set(st, CL_SC_UNIMPLEMENTED, "compressed gRPC messages are not supported (send with "
                               "identity encoding)");
    return code;
}

void cl_serve_grpc_percent_encode(const char *in, char *out)
{
    static const char hex[] = "0123456789ABCDEF";
    for (; *in; in++) {
        unsigned char ch = (unsigned char)*in;
        if (ch >= 0x20 && ch <= 0x7e && ch != '%') {
            *out++ = (char)ch;
        } else {
            *out++ = '%';
            *out++ = hex[ch >> 4];
            *out++ = hex[ch & 15];
        }
    }
    *out = '\0';
}

/* ---------------------------------------------------------------- streams */

static void stream_free(gstream *s)
{
    if (s->call) {
        s->call->owner = NULL; /* the worker still has it; it frees itself when done */
        s->call = NULL;
    }
    gconn *c = s->conn;
    c->buffered -= s->len;
    if (s->prev)
        s->prev->next = s->next;
    else
        c->streams = s->next;
    if (s->next)
        s->next->prev = s->prev;
    free(s->buf);
    free(s->resp);
    free(s->message);
    free(s);
}

#define NV(n, v) {(uint8_t *)(n), (uint8_t *)(v), sizeof(n) - 1, strlen(v), NGHTTP2_NV_FLAG_NO_COPY_NAME}

static ssize_t resp_read(nghttp2_session *ngh, int32_t id, uint8_t *buf, size_t length, uint32_t *flags,
                         nghttp2_data_source *src, void *user)
{
    gstream *s = src->ptr;
    size_t left = s->resp_len - s->resp_off;
    size_t n = left < length ? left : length;
    if (n == 0 && s->watching && !s->watch_ended)
        return NGHTTP2_ERR_DEFERRED; /* a Watch stream: resumed when the next message is queued */
    memcpy(buf, s->resp + s->resp_off, n);
    s->resp_off += n;
    if (s->resp_off == s->resp_len && (!s->watching || s->watch_ended)) {
        *flags |= NGHTTP2_DATA_FLAG_EOF | NGHTTP2_DATA_FLAG_NO_END_STREAM;
        if (nghttp2_submit_trailer(ngh, id, s->trailers, s->n_trailers ? s->n_trailers : 1) != 0)
            return NGHTTP2_ERR_CALLBACK_FAILURE;
    }
    return (ssize_t)n;
}

/* The stream's request, answered with code and out bytes, to the metrics and the access log. */
static void report(gstream *s, cl_serve_code code, size_t out)
{
    gconn *c = s->conn;
    cl_serve_server *srv = c->l->srv;
    if (cl_serve_access_logging(srv) && !c->subject_done) {
        cl_serve_peer_subject(cl_serve_io_ssl(c->io), c->subject, sizeof c->subject);
        c->subject_done = true;
    }
    cl_serve_request_info r = {.api = CL_API_GRPC, .rpc = s->rpc, .path = s->path, .model = s->model,
                               .version = s->version, .code = code, .start_ns = s->start_ns,
                               .bytes_in = s->bytes_in, .bytes_out = out, .peer = c->peer, .client = c->subject};
    cl_serve_request_done(srv, &r);
}

/* Submits the response: a message (code OK, body = serialized protobuf, taken over) or a
 * trailers-only error. Records metrics and the access log. */
static void respond(gstream *s, cl_serve_code code, const char *msg, uint8_t *body, size_t body_len)
{
    if (s->responded) {
        free(body);
        return;
    }
    s->responded = true;
    snprintf(s->status_str, sizeof s->status_str, "%d", (int)code);
    if (code != CL_SC_OK) {
        report(s, code, 0);
        free(body);
        CL_DEBUG(CL_SERVE_MOD, "grpc %s %s: %s", s->path, cl_serve_code_name(code), msg ? msg : "");
        size_t ml = msg ? strlen(msg) : 0;
        if (ml && (s->message = malloc(3 * ml + 1)))
            cl_serve_grpc_percent_encode(msg, s->message);
        nghttp2_nv hdrs[5] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                              NV("grpc-accept-encoding", CL_GRPC_ACCEPT_ENCODING), NV("grpc-status", s->status_str)};
        size_t n = 4;
        if (s->message)
            hdrs[n++] = (nghttp2_nv)NV("grpc-message", s->message);
        nghttp2_submit_response(s->conn->ngh, s->id, hdrs, n, NULL);
        return;
    }
    /* compressed when the server is told to and the client accepts it (gRPC core does the same) */
    const cl_serve_config *cfg = cl_serve_srv_config(s->conn->l->srv);
    cl_serve_compression alg = cfg->response_compression;
    bool compressed = false;
    if (alg != CL_SERVE_COMPRESS_NONE && (unsigned)alg < CL_ARRAY_LEN(s->accepts) && s->accepts[alg] && !s->health) {
        uint8_t *z;
        size_t zlen;
        if (cl_serve_compress(alg, body, body_len, &z, &zlen) == 0) {
            free(body);
            body = z;
            body_len = zlen;
            compressed = true;
        }
    }
    s->resp_len = GRPC_PREFIX + body_len;
    s->resp = malloc(s->resp_len);
    if (!s->resp) {
        free(body);
        s->responded = false;
        respond(s, CL_SC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    report(s, CL_SC_OK, s->resp_len);
    s->resp[0] = compressed ? 1 : 0;
    s->resp[1] = (uint8_t)(body_len >> 24);
    s->resp[2] = (uint8_t)(body_len >> 16);
    s->resp[3] = (uint8_t)(body_len >> 8);
    s->resp[4] = (uint8_t)body_len;
    if (body_len)
        memcpy(s->resp + GRPC_PREFIX, body, body_len);
    free(body);
    s->trailers[0] = (nghttp2_nv)NV("grpc-status", s->status_str);
    s->n_trailers = 1;
    nghttp2_nv hdrs[] = {NV(":status", "200"), NV("content-type", "application/grpc"),
                         NV("grpc-accept-encoding", CL_GRPC_ACCEPT_ENCODING),
                         NV("grpc-encoding", cl_serve_compression_name(compressed ? alg : CL_SERVE_COMPRESS_NONE))};
    nghttp2_data_provider dp = {.source.ptr = s, .read_callback = resp_read};
    nghttp2_submit_response(s->conn->ngh, s->id, hdrs, CL_ARRAY_LEN(hdrs), &dp);
}

/* Submits the response of a finished call (sent by the next conn_flush) and frees the call. */
static void answer(gstream *s, cl_serve_call *call)
{
    uint8_t *out = NULL;
    size_t len = 0;
    cl_serve_code code = call->st.code;
    if (code == CL_SC_OK)
        code = call->rpc == CL_RPC_PREDICT ? cl_serve_pb_predict_response(call, &out, &len)
                                           : cl_serve_pb_infer_response(call, &out, &len);
    s->version = cl_serve_model_version(call->model);
    respond(s, code, call->st.msg, out, len);
    cl_serve_call_free(call);
}

/* Back on the loop thread from a worker. */
static void grpc_call_done(cl_serve_call *call)
{
    gstream *s = call->owner;
    if (!s) {
        /* the client went away while the model ran */
        cl_serve_request_info r = {.api = CL_API_GRPC, .rpc = call->rpc,
                                   .path = call->rpc == CL_RPC_PREDICT ? "/tensorflow.serving.PredictionService/Predict"
                                                                       : NULL,
                                   .model = cl_serve_model_name(call->model),
                                   .version = cl_serve_model_version(call->model), .code = CL_SC_CANCELLED,
                                   .start_ns = call->start_ns, .bytes_in = call->wire_in, .peer = call->peer};
        cl_serve_request_done(call->srv, &r);
        cl_serve_call_free(call);
        return;
    }
    s->call = NULL;
    gconn *c = s->conn;
    answer(s, call);
    conn_flush(c);
}

static void dispatch_msg(gstream *s, const uint8_t *msg, size_t len);

/* grpc.health.v1.Health/Check and /Watch: the server is "" and SERVING until it stops. */
static void health(gstream *s, const uint8_t *msg, size_t len)
{
    cl_serve_status st = {0};
    bool known = false;
    if (cl_serve_health_request(msg, len, &known, &st) != CL_SC_OK) {
        respond(s, st.code, st.msg, NULL, 0);
        return;
    }
    bool stopping = s->conn->l->shutting_down;
    if (s->health == 1 && !known) {
        respond(s, CL_SC_NOT_FOUND, "unknown service", NULL, 0);
        return;
    }
    size_t n = 0;
    uint8_t *body = cl_serve_health_response(!known ? CL_HEALTH_SERVICE_UNKNOWN
                                             : stopping ? CL_HEALTH_NOT_SERVING : CL_HEALTH_SERVING, &n);
    if (!body) {
        respond(s, CL_SC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    /* Watch: the first message now, the stream left open (resp_read defers) until the server stops */
    s->watching = s->health == 2 && !stopping;
    respond(s, CL_SC_OK, NULL, body, n);
}

/* Ends an open Watch stream: NOT_SERVING, then UNAVAILABLE trailers (the server is going away). */
static void watch_end(gstream *s)
{
    if (!s->watching || s->watch_ended || !s->resp)
        return;
    size_t n = 0;
    uint8_t *body = cl_serve_health_response(CL_HEALTH_NOT_SERVING, &n);
    uint8_t *nb = body ? realloc(s->resp, s->resp_len + GRPC_PREFIX + n) : NULL;
    if (nb) {
        s->resp = nb;
        uint8_t *p = s->resp + s->resp_len;
        p[0] = 0;
        p[1] = (uint8_t)(n >> 24);
        p[2] = (uint8_t)(n >> 16);
        p[3] = (uint8_t)(n >> 8);
        p[4] = (uint8_t)n;
        memcpy(p + GRPC_PREFIX, body, n);
        s->resp_len += GRPC_PREFIX + n;
    }
    free(body);
    s->watch_ended = true;
    snprintf(s->status_str, sizeof s->status_str, "%d", (int)CL_SC_UNAVAILABLE);
    s->trailers[0] = (nghttp2_nv)NV("grpc-status", s->status_str); /* NV took the length of the old value */
    s->trailers[1] = (nghttp2_nv)NV("grpc-message", "the server is shutting down");
    s->n_trailers = 2;
    nghttp2_session_resume_data(s->conn->ngh, s->id);
}

static void dispatch(gstream *s)
{
    cl_serve_server *srv = s->conn->l->srv;
    const cl_serve_config *cfg = cl_serve_srv_config(srv);
    cl_serve_status st = {0};
    if (s->too_big)
        return; /* already answered */
    if (!s->post) {
        respond(s, CL_SC_UNIMPLEMENTED, "gRPC calls must use POST", NULL, 0);
        return;
    }
    if (!s->grpc_ct) {
        respond(s, CL_SC_UNKNOWN, "content-type must be application/grpc", NULL, 0);
        return;
    }
    const uint8_t *msg;
    size_t len;
    uint8_t *inflated = NULL; /* the message, when it came compressed */
    if (cl_serve_grpc_unframe_enc(s->buf, s->len, cfg->max_request_bytes, s->encoding, s->encoding_name, &inflated,
                                  &msg, &len, &st) != CL_SC_OK) {
        respond(s, st.code, st.msg, NULL, 0);
        return;
    }
    dispatch_msg(s, msg, len);
    free(inflated);
}

static void dispatch_msg(gstream *s, const uint8_t *msg, size_t len)
{
    cl_serve_server *srv = s->conn->l->srv;
    const cl_serve_config *cfg = cl_serve_srv_config(srv);
    cl_serve_status st = {0};
    if (s->health) {
        health(s, msg, len);
        return;
    }
    uint8_t *out = NULL;
    size_t out_len = 0;
    cl_serve_registry *reg = cl_serve_srv_registry(srv);
    switch (s->rpc) {
    case CL_RPC_METADATA:
        st.code = cl_serve_pb_metadata(reg, msg, len, &out, &out_len, &st);
        snprintf(s->model, sizeof s->model, "%s", st.model);
        s->version = st.version;
        respond(s, st.code, st.msg, out, out_len);
        return;
    case CL_RPC_STATUS:
        st.code = cl_serve_pb_status(reg, msg, len, &out, &out_len, &st);
        snprintf(s->model, sizeof s->model, "%s", st.model);
        s->version = st.version;
        respond(s, st.code, st.msg, out, out_len);
        return;
    case CL_RPC_RELOAD: /* on the loop thread: requests on it wait while the new models load */
        st.code = cl_serve_pb_reload(cfg, msg, len, &out, &out_len, &st);
        respond(s, st.code, st.msg, out, out_len);
        return;
    case CL_RPC_PREDICT:
    case CL_RPC_CLASSIFY:
    case CL_RPC_REGRESS:
    case CL_RPC_MULTI_INFERENCE:
        break;
    default:
        respond(s, CL_SC_INTERNAL, "unknown rpc", NULL, 0);
        return;
    }
    cl_serve_call *call = cl_serve_call_new(srv, CL_API_GRPC, s->rpc);
    if (!call) {
        respond(s, CL_SC_RESOURCE_EXHAUSTED, "out of memory", NULL, 0);
        return;
    }
    cl_serve_code code = s->rpc == CL_RPC_PREDICT ? cl_serve_pb_predict_parse(reg, msg, len, cfg->max_request_bytes, call)
                                                  : cl_serve_pb_infer_parse(reg, msg, len, cfg->max_request_bytes, call);
    snprintf(s->model, sizeof s->model, "%s", call->st.model);
    s->version = call->st.version;
    if (code != CL_SC_OK) {
        respond(s, code, call->st.msg, NULL, 0);
        cl_serve_call_free(call);
        return;
    }
    /* the request bytes are no longer needed */
    s->conn->buffered -= s->len;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    call->owner = s;
    call->done = grpc_call_done;
    memcpy(call->peer, s->conn->peer, sizeof call->peer);
    call->wire_in = s->bytes_in;
    /* inside nghttp2's receive callbacks: the response goes out with the flush after them */
    if (cl_serve_pool_run_inline(cl_serve_srv_pool(srv), call, cl_serve_srv_inline_ns(srv))) {
        answer(s, call);
        return;
    }
    if (cl_serve_pool_submit(cl_serve_srv_pool(srv), call) != 0) {
        /* a full queue (UNAVAILABLE) or the memory limits (RESOURCE_EXHAUSTED), with the reason */
        respond(s, call->st.code, call->st.msg, NULL, 0);
        cl_serve_call_free(call);
        return;
    }
    s->call = call;
}

/* ---------------------------------------------------------------- nghttp2 callbacks */

static ssize_t on_send(nghttp2_session *ngh, const uint8_t *data, size_t len, int flags, void *user)
{
    gconn *c = user;
    if (cl_serve_io_pending(c->io) >= OUT_MAX)
        return NGHTTP2_ERR_WOULDBLOCK; /* resumed by io_drained */
    if (cl_serve_io_write(c->io, data, len) != 0)
        return NGHTTP2_ERR_CALLBACK_FAILURE;
    return (ssize_t)len;
}

static int on_begin_headers(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    gconn *c = user;
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    gstream *s = calloc(1, sizeof *s);
    if (!s)
        return NGHTTP2_ERR_TEMPORAL_CALLBACK_FAILURE;
    s->id = frame->hd.stream_id;
    s->conn = c;
    s->start_ns = cl_now_ns();
    s->rpc = CL_RPC_COUNT;
    s->encoding = CL_SERVE_COMPRESS_NONE;
    s->accepts[CL_SERVE_COMPRESS_NONE] = true;
    s->next = c->streams;
    if (c->streams)
        c->streams->prev = s;
    c->streams = s;
    nghttp2_session_set_stream_user_data(ngh, s->id, s);
    return 0;
}

static int on_header(nghttp2_session *ngh, const nghttp2_frame *frame, const uint8_t *name, size_t namelen,
                     const uint8_t *value, size_t valuelen, uint8_t flags, void *user)
{
    if (frame->hd.type != NGHTTP2_HEADERS || frame->headers.cat != NGHTTP2_HCAT_REQUEST)
        return 0;
    gstream *s = nghttp2_session_get_stream_user_data(ngh, frame->hd.stream_id);
    if (!s)
        return 0;
#define IS(lit) (namelen == sizeof(lit) - 1 && memcmp(name, lit, namelen) == 0)
    if (IS(":method")) {
        s->post = valuelen == 4 && memcmp(value, "POST", 4) == 0;
    } else if (IS(":path")) {
        size_t n = valuelen < sizeof s->path - 1 ? valuelen : sizeof s->path - 1;
        memcpy(s->path, value, n);
        s->path[n] = '\0';
        if (strcmp(s->path, "/tensorflow.serving.PredictionService/Predict") == 0)
            s->rpc = CL_RPC_PREDICT;
        else if (strcmp(s->path, "/tensorflow.serving.PredictionService/GetModelMetadata") == 0)
            s->rpc = CL_RPC_METADATA;
        else if (strcmp(s->path, "/tensorflow.serving.ModelService/GetModelStatus") == 0)
            s->rpc = CL_RPC_STATUS;
        else if (strcmp(s->path, "/tensorflow.serving.ModelService/HandleReloadConfigRequest") == 0)
            s->rpc = CL_RPC_RELOAD;
        else if (cl_serve_srv_config(s->conn->l->srv)->grpc_health &&
                 strncmp(s->path, "/grpc.health.v1.Health/", 23) == 0 &&
                 (strcmp(s->path + 23, "Check") == 0 || strcmp(s->path + 23, "Watch") == 0))
            s->health = strcmp(s->path + 23, "Check") == 0 ? 1 : 2; /* rpc stays COUNT: not a model API */
        else if (strcmp(s->path, "/tensorflow.serving.PredictionService/Classify") == 0)
            s->rpc = CL_RPC_CLASSIFY; /* Classify, Regress, MultiInference: classify.c */
        else if (strcmp(s->path, "/tensorflow.serving.PredictionService/Regress") == 0)
            s->rpc = CL_RPC_REGRESS;
        else if (strcmp(s->path, "/tensorflow.serving.PredictionService/MultiInference") == 0)
            s->rpc = CL_RPC_MULTI_INFERENCE;
    } else if (IS("grpc-encoding")) {
        cl_serve_compression alg;
        s->encoding = cl_serve_grpc_encoding((const char *)value, valuelen, &alg) == 0 ? (int)alg : -1;
        size_t n = valuelen < sizeof s->encoding_name - 1 ? valuelen : sizeof s->encoding_name - 1;
        memcpy(s->encoding_name, value, n);
        s->encoding_name[n] = '\0';
    } else if (IS("grpc-accept-encoding")) {
        s->accepts[CL_SERVE_COMPRESS_DEFLATE] = cl_serve_grpc_accepts((const char *)value, valuelen,
                                                                      CL_SERVE_COMPRESS_DEFLATE);
        s->accepts[CL_SERVE_COMPRESS_GZIP] = cl_serve_grpc_accepts((const char *)value, valuelen,
                                                                   CL_SERVE_COMPRESS_GZIP);
    } else if (IS("content-type")) {
        s->grpc_ct = valuelen >= 16 && memcmp(value, "application/grpc", 16) == 0 &&
                     (valuelen == 16 || value[16] == '+' || value[16] == ';');
    }
#undef IS
    return 0;
}

/* Answers RESOURCE_EXHAUSTED now and drops what the stream buffered; later DATA is ignored. */
static int refuse(gstream *s, const char *msg)
{
    CL_WARN(CL_SERVE_MOD, "grpc %s from %s: %s", s->path, s->conn->peer, msg);
    s->too_big = true;
    respond(s, CL_SC_RESOURCE_EXHAUSTED, msg, NULL, 0);
    s->conn->buffered -= s->len;
    free(s->buf);
    s->buf = NULL;
    s->len = s->cap = 0;
    return 0;
}

static int on_data_chunk(nghttp2_session *ngh, uint8_t flags, int32_t id, const uint8_t *data, size_t len,
                         void *user)
{
    gstream *s = nghttp2_session_get_stream_user_data(ngh, id);
    if (s)
        s->bytes_in += len;
    if (!s || s->too_big || s->responded)
        return 0;
    const cl_serve_config *cfg = cl_serve_srv_config(s->conn->l->srv);
    size_t limit = cfg->max_request_bytes + GRPC_PREFIX;
    if (len > limit - s->len) {
        char msg[160];
        snprintf(msg, sizeof msg, "request of more than %zu bytes refused (server limit --max_request_bytes)",
                 cfg->max_request_bytes);
        return refuse(s, msg);
    }
    /* The message header tells the final size: refuse early when it is above the limit. */
    if (s->len < GRPC_PREFIX && s->len + len >= GRPC_PREFIX) {
        uint8_t hdr[GRPC_PREFIX];
        size_t k = 0;
        for (; k < s->len; k++)
            hdr[k] = s->buf[k];
        for (size_t j = 0; k < GRPC_PREFIX; k++, j++)
            hdr[k] = data[j];
        uint64_t want = (uint64_t)hdr[1] << 24 | (uint64_t)hdr[2] << 16 | (uint64_t)hdr[3] << 8 | hdr[4];
        if (want > cfg->max_request_bytes) {
            char msg[200];
            snprintf(msg, sizeof msg, "gRPC message of %llu bytes is above the server's limit of %zu bytes "
                     "(--max_request_bytes)", (unsigned long long)want, cfg->max_request_bytes);
            return refuse(s, msg);
        }
    }
    /* All streams of a connection together may buffer at most twice the request limit, so many
     * concurrent half-sent requests cannot exhaust memory. */
    if (s->conn->buffered + len > 2 * limit)
        return refuse(s, "too many bytes of unfinished requests on this connection; send them one after another");
    if (s->len + len > s->cap) {
        /* grow with what actually arrives, never with what the header promises */
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + len)
            cap *= 2;
        if (cap > limit)
            cap = limit;
        uint8_t *nb = realloc(s->buf, cap);
        if (!nb)
            return refuse(s, "out of memory for the request");
        s->buf = nb;
        s->cap = cap;
    }
    s->conn->buffered += len;
    memcpy(s->buf + s->len, data, len);
    s->len += len;
    return 0;
}

static int on_frame_recv(nghttp2_session *ngh, const nghttp2_frame *frame, void *user)
{
    ((gconn *)user)->heard = true;
    if ((frame->hd.type != NGHTTP2_DATA && frame->hd.type != NGHTTP2_HEADERS) ||
        !(frame->hd.flags & NGHTTP2_FLAG_END_STREAM))
        return 0;
    gstream *s = nghttp2_session_get_stream_user_data(ngh, frame->hd.stream_id);
    if (!s || s->complete)
        return 0;
    s->complete = true;
    if (s->rpc == CL_RPC_COUNT && !s->health) {
        s->rpc = CL_RPC_PREDICT; /* metrics bucket only */
        char msg[160];
        snprintf(msg, sizeof msg, "unknown method %s", s->path);
        respond(s, CL_SC_UNIMPLEMENTED, msg, NULL, 0);
        return 0;
    }
    dispatch(s);
    return 0;
}

static int on_stream_close(nghttp2_session *ngh, int32_t id, uint32_t error_code, void *user)
{
    gstream *s = nghttp2_session_get_stream_user_data(ngh, id);
    if (s) {
        nghttp2_session_set_stream_user_data(ngh, id, NULL);
        stream_free(s);
    }
    return 0;
}

/* ---------------------------------------------------------------- connections */

static void conn_free(gconn *c)
{
    while (c->streams)
        stream_free(c->streams);
    if (c->ngh)
        nghttp2_session_del(c->ngh);
    cl_serve_io_free(c->io);
    if (c->timer)
        event_free(c->timer);
    cl_serve_grpc_listener *l = c->l;
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    free(c);
}

/* Sends what nghttp2 has; closes the connection when nghttp2 is done with it and all is written.
 * Returns -1 when the connection was freed. */
static int conn_flush(gconn *c)
{
    for (;;) {
        if (c->ngh && nghttp2_session_send(c->ngh) != 0) {
            conn_free(c);
            return -1;
        }
        if (cl_serve_io_flush(c->io) != 0)
            return -1; /* io_closed freed the connection */
        /* on_send stops nghttp2 at OUT_MAX queued bytes; when the socket took them all at once, no
         * `drained` follows, so go on here */
        if (!c->ngh || cl_serve_io_pending(c->io) || !nghttp2_session_want_write(c->ngh))
            break;
    }
    if (c->ngh && !nghttp2_session_want_read(c->ngh) && !nghttp2_session_want_write(c->ngh) && !c->closing) {
        c->closing = true;
        c->closing_since_ns = cl_now_ns();
    }
    if (c->closing && cl_serve_io_pending(c->io) == 0) {
        conn_free(c);
        return -1;
    }
    return 0;
}

static int session_start(gconn *c)
{
    nghttp2_session_callbacks *cb;
    if (nghttp2_session_callbacks_new(&cb) != 0)
        return -1;
    nghttp2_session_callbacks_set_send_callback(cb, on_send);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cb, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cb, on_header);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cb, on_data_chunk);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cb, on_frame_recv);
    nghttp2_session_callbacks_set_on_stream_close_callback(cb, on_stream_close);
    int rc = nghttp2_session_server_new(&c->ngh, cb, c);
    nghttp2_session_callbacks_del(cb);
    if (rc != 0)
        return -1;
    nghttp2_settings_entry iv[] = {{NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS, 100},
                                   {NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 1 << 20},
                                   {NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE, 16384}};
    if (nghttp2_submit_settings(c->ngh, NGHTTP2_FLAG_NONE, iv, CL_ARRAY_LEN(iv)) != 0)
        return -1;
    /* a larger connection window, so one big request does not stall on WINDOW_UPDATEs */
    nghttp2_session_set_local_window_size(c->ngh, NGHTTP2_FLAG_NONE, 0, 8 << 20);
    if (c->l->shutting_down)
        nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, 0, NGHTTP2_NO_ERROR, NULL, 0);
    return 0;
}

static int io_data(cl_serve_io *io, const uint8_t *data, size_t len, void *arg)
{
    (void)io;
    gconn *c = arg;
    if (!c->ngh)
        return 0;
    c->last_active_ns = cl_now_ns();
    ssize_t n = nghttp2_session_mem_recv(c->ngh, data, len);
    if (n < 0) {
        CL_DEBUG(CL_SERVE_MOD, "grpc %s: HTTP/2 protocol error: %s", c->peer, nghttp2_strerror((int)n));
        conn_free(c);
        return -1;
    }
    return conn_flush(c);
}

static void io_drained(cl_serve_io *io, void *arg)
{
    (void)io;
    gconn *c = arg;
    if (c->ngh)
        conn_flush(c);
}

static int io_ready(cl_serve_io *io, void *arg)
{
    gconn *c = arg;
    const unsigned char *alpn = NULL;
    unsigned alpn_len = 0;
    SSL_get0_alpn_selected(cl_serve_io_ssl(io), &alpn, &alpn_len);
    if (alpn_len != 2 || memcmp(alpn, "h2", 2) != 0) {
        CL_DEBUG(CL_SERVE_MOD, "grpc %s: client did not negotiate ALPN h2", c->peer);
        conn_free(c);
        return -1;
    }
    c->last_active_ns = cl_now_ns();
    if (session_start(c) != 0) {
        conn_free(c);
        return -1;
    }
    return conn_flush(c);
}

static void io_closed(cl_serve_io *io, bool tls_failure, const char *why, void *arg)
{
    (void)io;
    gconn *c = arg;
    /* a failed handshake is worth telling (e.g. a client without a certificate under mTLS); a client
     * that just went away is not */
    if (tls_failure)
        cl_log(c->ngh ? CL_LOG_DEBUG : CL_LOG_INFO, CL_SERVE_MOD, "grpc %s: TLS: %s", c->peer, why);
    else
        CL_DEBUG(CL_SERVE_MOD, "grpc %s: connection ended: %s", c->peer, why);
    conn_free(c);
}

static const cl_serve_io_cbs io_cbs = {io_ready, io_data, io_drained, io_closed};

static void on_timer(evutil_socket_t fd, short what, void *arg)
{
    gconn *c = arg;
    const cl_serve_config *cfg = cl_serve_srv_config(c->l->srv);
    uint64_t now = cl_now_ns(), limit = (uint64_t)cfg->request_timeout_ms * 1000000ull;
    if (!c->ngh) {
        if (now - c->created_ns > limit) {
            CL_INFO(CL_SERVE_MOD, "grpc %s: TLS handshake not complete after %u ms; closing", c->peer,
                    cfg->request_timeout_ms);
            conn_free(c);
        }
        return;
    }
    if (!c->heard && !c->closing && now - c->created_ns > limit) {
        /* connected (and TLS done) but never spoke HTTP/2: not a client we owe 5 idle minutes */
        CL_INFO(CL_SERVE_MOD, "grpc %s: no HTTP/2 preface within %u ms of connecting; closing", c->peer,
                cfg->request_timeout_ms);
        conn_free(c);
        return;
    }
    if (c->closing && now - c->closing_since_ns > limit) {
        /* the client does not read what is left to send (GOAWAY, last responses): drop it */
        conn_free(c);
        return;
    }
    for (gstream *s = c->streams; s; s = s->next) {
        if (!s->complete && now - s->start_ns > limit) {
            CL_INFO(CL_SERVE_MOD, "grpc %s: request on stream %d not received within %u ms; closing the "
                    "connection", c->peer, s->id, cfg->request_timeout_ms);
            conn_free(c);
            return;
        }
    }
    if (!c->streams && now - c->last_active_ns > (uint64_t)CONN_IDLE_MS * 1000000ull) {
        nghttp2_session_terminate_session(c->ngh, NGHTTP2_NO_ERROR);
        conn_flush(c);
    }
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    cl_serve_grpc_listener *l = arg;
    gconn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->l = l;
    c->created_ns = c->last_active_ns = cl_now_ns();
    cl_serve_peer_name(sa, c->peer, sizeof c->peer);
    cl_serve_set_nodelay(fd);
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    cl_err err = {0};
    if (!(c->io = cl_serve_io_new(l->base, fd, l->ctx, &io_cbs, c, &err))) {
        CL_WARN(CL_SERVE_MOD, "grpc %s: %s", c->peer, err.msg);
        evutil_closesocket(fd);
        conn_free(c);
        return;
    }
    const cl_serve_config *cfg = cl_serve_srv_config(l->srv);
    unsigned tick = cfg->request_timeout_ms / 4 < 10 ? 10 : cfg->request_timeout_ms / 4;
    struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
    c->timer = event_new(l->base, -1, EV_PERSIST, on_timer, c);
    if (!c->timer || event_add(c->timer, &tv) != 0) {
        conn_free(c);
        return;
    }
    if (!l->ctx && session_start(c) != 0) {
        conn_free(c);
        return;
    }
    if (!l->ctx)
        conn_flush(c);
}

cl_serve_grpc_listener *cl_serve_grpc_listen(cl_serve_server *s, struct event_base *base, int fd, SSL_CTX *ctx,
                                             cl_err *err)
{
    cl_serve_grpc_listener *l = calloc(1, sizeof *l);
    if (!l) {
        cl_err_nomem(err);
        return NULL;
    }
    l->srv = s;
    l->base = base;
    l->ctx = ctx;
    l->lev = evconnlistener_new(base, on_accept, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd);
    if (!l->lev) {
        free(l);
        cl_err_set(err, CL_E_IO, "cannot listen for gRPC connections");
        return NULL;
    }
    return l;
}

void cl_serve_grpc_shutdown(cl_serve_grpc_listener *l)
{
    if (!l || l->shutting_down)
        return;
    l->shutting_down = true;
    if (l->lev) {
        evconnlistener_free(l->lev);
        l->lev = NULL;
    }
    for (gconn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (c->ngh) {
            nghttp2_submit_goaway(c->ngh, NGHTTP2_FLAG_NONE, nghttp2_session_get_last_proc_stream_id(c->ngh),
                                  NGHTTP2_NO_ERROR, NULL, 0);
            for (gstream *s = c->streams; s; s = s->next)
                watch_end(s);
            conn_flush(c);
        } else {
            conn_free(c); /* still in its TLS handshake: nothing asked yet */
        }
    }
}

unsigned cl_serve_grpc_conns(const cl_serve_grpc_listener *l)
{
    unsigned n = 0;
    for (const gconn *c = l ? l->conns : NULL; c; c = c->next)
        n++;
    return n;
}

void cl_serve_grpc_free(cl_serve_grpc_listener *l)
{
    if (!l)
        return;
    while (l->conns)
        conn_free(l->conns);
    if (l->lev)
        evconnlistener_free(l->lev);
    free(l);
}
