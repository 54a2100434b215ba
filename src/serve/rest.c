/* rest.c — the REST front end (TF Serving's HTTP/JSON API): HTTP/1.1 with keep-alive and pipelining,
 * parsed by http-parser (Node's parser, Debian's libhttp-parser), over the tlsio.c transport (TLS, or
 * plain HTTP when explicitly allowed):
 *   GET  /v1/models/{name}[/versions/{v}|/labels/{l}]            model status
 *   GET  /v1/models/{name}[/versions/{v}|/labels/{l}]/metadata   signature_def
 *   POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict    row ("instances") or columnar ("inputs") format
 *   POST /v1/models/{name}[/versions/{v}|/labels/{l}]:classify, :regress   {"examples": [...]} (classify.c)
 *   GET  /monitoring/prometheus/metrics              Prometheus text format
 * Errors are {"error": "..."} with TF Serving's HTTP status for the canonical code; a full worker
 * queue answers 429.
 *
 * Why not libevent's evhttp (which served REST before): measured on the REST benchmark, evhttp over
 * OpenSSL bufferevents made two reads per request (TLS record header, then body: read-ahead would
 * stall those bufferevents on pipelined records), re-armed its events twice, and allocated its
 * request, header list and buffers per request. Here a request costs one read and one write.
 *
 * Limits: request line and headers HEAD_MAX bytes (431), body max_request_bytes (413, refused as soon
 * as the declared length is known, before `Expect: 100-continue` is answered); a TLS handshake or a
 * request not complete within request_timeout_ms of its first byte, and a connection idle for that
 * long after a response, is closed. A refusal ends the connection with a lingering close (finish()).
 *
 * Ownership: a loop's thread owns its connections and their requests. Requests on one connection are
 * answered in order: while one is in the worker pool, or while more than OUT_MAX bytes of responses
 * wait for the client to read them, input behind it waits (up to PEND_MAX bytes, then reading
 * pauses). A connection that goes away while its call is in the pool clears
 * call->owner, and the call frees itself when it comes back.
 *
 * A connection's life is one state (rstate), changed only by set_state(), which asserts that the
 * transition is one of these (CL_ASSERT: Debug and sanitizer builds):
 *   IDLE      between requests         -> READING  a request's first byte (on_message_begin)
 *                                       -> BUSY     its call went to the worker pool (handle)
 *                                       -> CLOSING  a response that ends the connection (reply), out of memory
 *                                       -> LINGER   unparseable input; shutdown's grace period over (on_grace)
 *   READING   inside a request         -> IDLE     the request is complete (dispatch)
 *                                       -> LINGER   the request is refused mid-way (feed)
 *                                       -> CLOSING  out of memory holding input (pend_add)
 *   BUSY      its call is in the pool  -> IDLE     the call came back (rest_call_done), then its reply
 *                                       -> CLOSING  out of memory holding input; the call is dropped
 *                                                   with the connection if it is not back by then
 *   CLOSING   close once the output is written (settle, io_drained -> finish): then freed
 *   LINGER    the same after a refusal: the client may still be sending -> LINGERING (finish)
 *   LINGERING our side shut after the answer: input read and dropped until EOF or the deadline
 * Orthogonal to the state: `paused` (reading stopped while PEND_MAX bytes of input wait in pend). */
#include "serve_int.h"

#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#include <event2/listener.h>
#include <http_parser.h>

#define HEAD_MAX ((size_t)16384) /* request line and headers */
#define PEND_MAX (256u << 10)  /* input held behind a running request before reading pauses */
#define OUT_MAX (256u << 10)   /* unwritten output past which input waits (a client not reading) */
#define BODY_KEEP (64u << 10)  /* body buffer kept for the connection's next request */
#define BODY_RESERVE ((size_t)1 << 20) /* reserved at most for a declared body before it arrives */
#define LINGER_MS 2000u /* after a refusal, how long input is still read (and dropped) before closing */
#define STOP_GRACE_MS 1000u /* at shutdown, how long an idle keep-alive connection may still bring a request */

struct cl_serve_rest_conn {
    cl_serve_rest_loop *loop;
    cl_serve_io *io;
    struct cl_serve_rest_conn *prev, *next;
    char peer[64];
    http_parser hp;
    /* the request being read */
    char *url;
    size_t url_len, url_cap;
    size_t head_bytes;
    char field[8]; /* the header name being read, when it may still be "Expect" */
    size_t field_len;
    bool in_value, expect_field, expect_continue;
    uint8_t *body;
    size_t body_len, body_cap;
    int fail_http; /* set by a parser callback that refused the request */
    char fail_msg[160];
    /* the request being answered */
    bool keep_alive, head_only, http10;
    int state;     /* rstate: see the file's header */
    cl_serve_call *call; /* in BUSY, and in CLOSING when it closed while busy */
    uint8_t *pend; /* input behind the running request */
    size_t pend_len, pend_cap;
    bool paused;   /* reading paused: pend is full */
    uint64_t deadline_ns; /* 0: none (a call is running) */
    /* what the response being queued answers, for the metrics and the access log (reply() reports
     * it and resets it): pointers valid until that reply */
    const char *req_method, *req_path, *req_model;
    cl_serve_rpc req_rpc; /* CL_RPC_COUNT: not counted in the metrics (a scrape) */
    int64_t req_version;
    cl_serve_code req_code;
    uint64_t req_start;
    bool subject_done; /* subject: the client certificate's, looked up once per connection */
    char subject[256];
};
typedef struct cl_serve_rest_conn rconn;

typedef enum { RS_IDLE, RS_READING, RS_BUSY, RS_CLOSING, RS_LINGER, RS_LINGERING } rstate;

static void feed(rconn *c, const uint8_t *p, size_t n);
static int settle(rconn *c);

/* The one place a connection's state changes; the transitions of the file's header, asserted. */
static void set_state(rconn *c, rstate to)
{
    static const unsigned legal[] = {
        [RS_IDLE] = 1u << RS_READING | 1u << RS_BUSY | 1u << RS_CLOSING | 1u << RS_LINGER,
        [RS_READING] = 1u << RS_IDLE | 1u << RS_CLOSING | 1u << RS_LINGER,
        [RS_BUSY] = 1u << RS_IDLE | 1u << RS_CLOSING,
        [RS_CLOSING] = 0,
        [RS_LINGER] = 1u << RS_LINGERING,
        [RS_LINGERING] = 0,
    };
    CL_ASSERT(c->state >= RS_IDLE && c->state <= RS_LINGERING && (legal[c->state] >> to & 1u));
    c->state = (int)to;
}

/* Closing: once the output is written, the connection ends (unless it already is on its way out). */
static void close_after_output(rconn *c)
{
    if (c->state < RS_CLOSING)
        set_state(c, RS_CLOSING);
}

static bool closing(const rconn *c) { return c->state >= RS_CLOSING; }

/* What must hold besides the state (CL_ASSERT: checked in Debug and sanitizer builds). */
static void conn_check(const rconn *c)
{
    CL_ASSERT(c->state != RS_BUSY || c->call);                      /* busy: its call is in the pool */
    CL_ASSERT(!c->call || c->state == RS_BUSY || c->state == RS_CLOSING); /* a call belongs to those two */
    CL_ASSERT(c->state != RS_LINGERING || (!c->pend_len && !c->paused)); /* lingering drops its input */
    CL_ASSERT(!c->paused || c->pend_len >= PEND_MAX);               /* reading pauses only on a full pend */
}

/* ---------------------------------------------------------------- connections */

static void conn_free(rconn *c)
{
    cl_serve_rest_loop *l = c->loop;
    atomic_fetch_sub_explicit(&l->n_conns, 1, memory_order_relaxed);
    if (c->call)
        c->call->owner = NULL; /* the call frees itself when it comes back */
    if (c->prev)
        c->prev->next = c->next;
    else
        l->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    cl_serve_io_free(c->io);
    free(c->url);
    free(c->body);
    free(c->pend);
    free(c);
}

/* A buffer of *cap bytes grown to hold need bytes (doubling); -1 when out of memory. */
static int grow(void *pp, size_t *cap, size_t need)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 256;
    while (n < need)
        n = n > SIZE_MAX / 2 ? need : n * 2;
    void *q = realloc(*(void **)pp, n);
    if (!q)
        return -1;
    *(void **)pp = q;
    *cap = n;
    return 0;
}

static const char *http_date(cl_serve_rest_loop *l)
{
    time_t now = time(NULL);
    if (now != l->date_at) {
        struct tm tm;
        gmtime_r(&now, &tm);
        strftime(l->date, sizeof l->date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
        l->date_at = now;
    }
    return l->date;
}

static const char *reason(int http)
{
    switch (http) {
    case 200: return "OK";
    case 400: return "Bad Request";
    case 401: return "Unauthorized";
    case 403: return "Forbidden";
    case 404: return "Not Found";
    case 405: return "Method Not Allowed";
    case 409: return "Conflict";
    case 413: return "Payload Too Large";
    case 429: return "Too Many Requests";
    case 431: return "Request Header Fields Too Large";
    case 499: return "Client Closed Request";
    case 501: return "Not Implemented";
    case 503: return "Service Unavailable";
    case 504: return "Gateway Timeout";
    default: return http < 500 ? "Error" : "Internal Server Error";
    }
}

/* The request being answered, to the metrics and the access log; then forgotten. */
static void report(rconn *c, int http, size_t len)
{
    cl_serve_server *srv = c->loop->srv;
    if (cl_serve_access_logging(srv) && !c->subject_done) {
        cl_serve_peer_subject(cl_serve_io_ssl(c->io), c->subject, sizeof c->subject);
        c->subject_done = true;
    }
    cl_serve_request_info r = {.api = CL_API_REST, .rpc = c->req_rpc, .method = c->req_method, .path = c->req_path,
                               .model = c->req_model, .version = c->req_version, .code = c->req_code,
                               .http_status = http, .start_ns = c->req_start ? c->req_start : cl_now_ns(),
                               .bytes_in = c->body_len, .bytes_out = c->head_only ? 0 : len, .peer = c->peer,
                               .client = c->subject};
    cl_serve_request_done(srv, &r);
    c->req_method = c->req_path = c->req_model = NULL;
    c->req_rpc = CL_RPC_COUNT;
    c->req_version = 0;
    c->req_code = CL_SC_OK;
    c->req_start = 0;
}

/* Queues a response (written by the next flush) and takes over body. After it the connection waits
 * for its next request, or closes (closing) when the client or the server's shutdown asked for it.
 * The request it answers (c->req_*) goes to the metrics and the access log. */
static void reply(rconn *c, int http, const char *ctype, char *body, size_t len)
{
    report(c, http, len);
    if (!c->keep_alive || c->loop->stopping)
        close_after_output(c);
    char head[320];
    int n = snprintf(head, sizeof head, "HTTP/1.1 %d %s\r\nContent-Type: %s\r\nContent-Length: %zu\r\nDate: %s\r\n%s\r\n",
                     http, reason(http), ctype, len, http_date(c->loop),
                     closing(c) ? "Connection: close\r\n" : c->http10 ? "Connection: keep-alive\r\n" : "");
    if (n < 0 || (size_t)n >= sizeof head) {
        n = 0; /* cannot happen with the fixed strings above; never send a cut head */
        close_after_output(c);
    }
    if (cl_serve_io_write(c->io, head, (size_t)n) != 0 || (!c->head_only && len && cl_serve_io_write(c->io, body, len) != 0))
        close_after_output(c); /* out of memory: the client sees the connection end */
    free(body);
    c->deadline_ns = cl_now_ns() + (uint64_t)cl_serve_srv_config(c->loop->srv)->request_timeout_ms * 1000000ull;
}

static void reply_error(rconn *c, cl_serve_rpc rpc, const char *model, uint64_t start, cl_serve_code code, int http,
                        const char *msg)
{
    c->req_rpc = rpc;
    c->req_model = model;
    c->req_start = start;
    c->req_code = code;
    char *body = cl_serve_json_error(msg);
    reply(c, http ? http : cl_serve_code_http(code), "application/json", body, body ? strlen(body) : 0);
}

/* ---------------------------------------------------------------- requests */

/* Encodes a finished :predict call into the response. */
static void predict_reply(rconn *c, cl_serve_call *call)
{
    char *body = NULL;
    size_t len = 0;
    cl_serve_code code = call->st.code;
    if (code == CL_SC_OK)
        code = call->rpc == CL_RPC_PREDICT ? cl_serve_json_predict_response(call, &body, &len)
                                           : cl_serve_json_infer_response(call, &body, &len);
    const char *model = cl_serve_model_name(call->model);
    c->req_version = cl_serve_model_version(call->model);
    if (code != CL_SC_OK) {
        reply_error(c, call->rpc, model, call->start_ns, code, 0, call->st.msg);
    } else {
        c->req_rpc = call->rpc;
        c->req_model = model;
        c->req_start = call->start_ns;
        c->req_code = CL_SC_OK;
        reply(c, 200, "application/json", body, len);
    }
    cl_serve_call_free(call);
}

/* A call back from the worker pool, on the loop thread. */
static void rest_call_done(cl_serve_call *call)
{
    rconn *c = call->owner;
    if (!c) {
        /* the client went away while the model ran */
        cl_serve_request_info r = {.api = CL_API_REST, .rpc = call->rpc, .method = "POST",
                                   .model = cl_serve_model_name(call->model),
                                   .version = cl_serve_model_version(call->model), .code = CL_SC_CANCELLED,
                                   .http_status = 499, .start_ns = call->start_ns, .bytes_in = call->wire_in,
                                   .peer = call->peer};
        cl_serve_request_done(call->srv, &r);
        cl_serve_call_free(call);
        return;
    }
    CL_ASSERT(c->call == call && (c->state == RS_BUSY || c->state == RS_CLOSING));
    c->call = NULL;
    if (c->state == RS_BUSY)
        set_state(c, RS_IDLE);
    predict_reply(c, call);
    /* settle parses the input that waited behind this request, if any */
    if (settle(c) == 0)
        cl_serve_io_flush(c->io);
}

static int hex_value(char c)
{
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : -1;
}

/* The n bytes at p with %XX escapes decoded (a malformed escape stays as it is), into out (room for
 * n + 1 bytes), NUL-terminated. */
static void percent_decode(char *out, const char *p, size_t n)
{
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int hi, lo;
        if (p[i] == '%' && i + 2 < n && (hi = hex_value(p[i + 1])) >= 0 &&
            (lo = hex_value(p[i + 2])) >= 0) {
            out[o++] = (char)(hi << 4 | lo);
            i += 2;
        } else {
            out[o++] = p[i];
        }
    }
    out[o] = '\0';
}

/* Parses /v1/models/NAME[/versions/V][/metadata | :predict]. Returns the rpc or -1; `name` gets the
 * decoded model name. */
static int route(const char *path, char *name, size_t name_cap, int64_t *version, char *label, size_t label_cap,
                 cl_serve_status *st)
{
    const char *p = path + strlen("/v1/models/");
    const char *end = p + strcspn(p, "/:");
    if (end == p || (size_t)(end - p) >= name_cap) {
        cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: missing or too long model name");
        return -1;
    }
    percent_decode(name, p, (size_t)(end - p));
    p = end;
    *version = 0;
    label[0] = '\0';
    if (strncmp(p, "/versions/", 10) == 0 || strncmp(p, "/labels/", 8) == 0) {
        bool is_label = p[1] == 'l';
        p += is_label ? 8 : 10;
        char *e = NULL;
        if (is_label) {
            size_t n = strcspn(p, "/:");
            if (n == 0 || n >= label_cap) {
                cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: missing or too long version label");
                return -1;
            }
            percent_decode(label, p, n);
            p += n;
        } else {
            long long v = strtoll(p, &e, 10);
            if (e == p || v <= 0) {
                cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: the version must be a positive "
                                "integer");
                return -1;
            }
            *version = v;
            p = e;
        }
    }
    if (*p == '\0')
        return CL_RPC_STATUS;
    if (strcmp(p, "/metadata") == 0)
        return CL_RPC_METADATA;
    if (strcmp(p, ":predict") == 0)
        return CL_RPC_PREDICT;
    if (strcmp(p, ":classify") == 0)
        return CL_RPC_CLASSIFY; /* :classify, :regress: classify.c */
    if (strcmp(p, ":regress") == 0)
        return CL_RPC_REGRESS;
    cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: %s (supported: /v1/models/NAME[/versions/N|/labels/L]"
                    "[/metadata|:predict|:classify|:regress])", path);
    return -1;
}

/* Answers a complete request (or hands its call to the worker pool: busy). */
static void handle(rconn *c, const char *path, int method)
{
    cl_serve_rest_loop *loop = c->loop;
    cl_serve_server *srv = loop->srv;
    uint64_t start = cl_now_ns();
    const cl_serve_config *cfg = cl_serve_srv_config(srv);
    cl_serve_status st = {0};
    c->req_start = start;
    c->req_path = path;
    c->req_method = http_method_str((enum http_method)method);
    if (strcmp(path, "/monitoring/prometheus/metrics") == 0) {
        if (method != HTTP_GET) {
            reply_error(c, CL_RPC_STATUS, "", start, CL_SC_INVALID_ARGUMENT, 405, "use GET");
            return;
        }
        char *m = cl_serve_metrics_render(srv);
        reply(c, m ? 200 : 500, "text/plain; version=0.0.4", m, m ? strlen(m) : 0);
        return;
    }
    if (strncmp(path, "/v1/models/", 11) != 0) {
        reply_error(c, CL_RPC_STATUS, "", start, CL_SC_NOT_FOUND, 404,
                    "Malformed request: unknown path; the API is under /v1/models/NAME");
        return;
    }
    char name[256];
    int64_t version;
    char label[128];
    int rpc = route(path, name, sizeof name, &version, label, sizeof label, &st);
    if (rpc < 0) {
        reply_error(c, CL_RPC_STATUS, "", start, st.code, 404, st.msg);
        return;
    }
    if (label[0]) { /* /labels/LABEL: the version it points at (TF: 400 for an unknown label) */
        cl_err lerr = {0};
        if (cl_serve_registry_label(cl_serve_srv_registry(srv), name, label, &version, &lerr) != 0) {
            reply_error(c, (cl_serve_rpc)rpc, name, start, CL_SC_INVALID_ARGUMENT, 0, lerr.msg);
            return;
        }
    }
    bool want_post = rpc == CL_RPC_PREDICT || rpc == CL_RPC_CLASSIFY || rpc == CL_RPC_REGRESS;
    if ((want_post && method != HTTP_POST) || (!want_post && method != HTTP_GET)) {
        reply_error(c, (cl_serve_rpc)rpc, name, start, CL_SC_INVALID_ARGUMENT, 405,
                    want_post ? "Malformed request: :predict, :classify and :regress need POST"
                              : "Malformed request: use GET");
        return;
    }
    cl_serve_registry *reg = cl_serve_srv_registry(srv);
    if (rpc == CL_RPC_STATUS) {
        static _Thread_local cl_serve_version_status vs[64];
        size_t n = cl_serve_registry_status(reg, name, vs, CL_ARRAY_LEN(vs));
        if (n > CL_ARRAY_LEN(vs))
            n = CL_ARRAY_LEN(vs);
        if (n == 0) {
            cl_serve_st_set(&st, CL_SC_NOT_FOUND, "Could not find any versions of model %s", name);
            reply_error(c, CL_RPC_STATUS, name, start, st.code, 0, st.msg);
            return;
        }
        if (version > 0) {
            size_t i = 0;
            while (i < n && vs[i].version != version)
                i++;
            if (i == n) {
                cl_serve_st_set(&st, CL_SC_NOT_FOUND, "Could not find version %lld of model %s", (long long)version,
                                name);
                reply_error(c, CL_RPC_STATUS, name, start, st.code, 0, st.msg);
                return;
            }
            vs[0] = vs[i];
            n = 1;
        }
        char *body = cl_serve_json_status(vs, n);
        c->req_rpc = CL_RPC_STATUS;
        c->req_model = name;
        c->req_version = version;
        reply(c, body ? 200 : 500, "application/json", body, body ? strlen(body) : 0);
        return;
    }
    cl_err err = {0};
    cl_serve_model *m = cl_serve_registry_get(reg, name, version, &err);
    c->req_version = version;
    if (!m) {
        reply_error(c, (cl_serve_rpc)rpc, name, start, CL_SC_NOT_FOUND, 0, err.msg);
        return;
    }
    c->req_version = cl_serve_model_version(m);
    if (rpc == CL_RPC_METADATA) {
        char *body = cl_serve_json_metadata(m);
        cl_serve_model_release(m);
        c->req_rpc = CL_RPC_METADATA;
        c->req_model = name;
        reply(c, body ? 200 : 500, "application/json", body, body ? strlen(body) : 0);
        return;
    }
    cl_serve_call *call = cl_serve_call_new(srv, CL_API_REST, (cl_serve_rpc)rpc);
    if (!call) {
        cl_serve_model_release(m);
        reply_error(c, (cl_serve_rpc)rpc, name, start, CL_SC_RESOURCE_EXHAUSTED, 0, "out of memory");
        return;
    }
    call->model = m;
    call->start_ns = start;
    const char *body = c->body ? (const char *)c->body : "";
    cl_serve_code code = rpc == CL_RPC_PREDICT
                             ? cl_serve_json_predict_parse(body, c->body_len, cfg->max_request_bytes, call)
                             : cl_serve_json_infer_parse(body, c->body_len, cfg->max_request_bytes, call);
    if (code != CL_SC_OK) {
        reply_error(c, (cl_serve_rpc)rpc, name, start, code, 0, call->st.msg);
        cl_serve_call_free(call);
        return;
    }
    call->owner = c;
    call->done = rest_call_done;
    call->doneq = loop->doneq;
    memcpy(call->peer, c->peer, sizeof call->peer);
    call->wire_in = c->body_len;
    if (cl_serve_pool_run_inline(cl_serve_srv_pool(srv), call, cl_serve_srv_inline_ns(srv))) {
        predict_reply(c, call);
        return;
    }
    if (cl_serve_pool_submit(cl_serve_srv_pool(srv), call) != 0) {
        /* a full queue or the memory budget: 429 with the reason, to be retried */
        reply_error(c, (cl_serve_rpc)rpc, name, start, call->st.code, 429, call->st.msg);
        cl_serve_call_free(call);
        return;
    }
    c->call = call;
    set_state(c, RS_BUSY);
}

/* The request just parsed: its path out of the URL, then handle. */
static void dispatch(rconn *c)
{
    set_state(c, RS_IDLE);
    c->deadline_ns = 0;
    struct http_parser_url u;
    http_parser_url_init(&u);
    int method = c->hp.method;
    if (!c->url_len || http_parser_parse_url(c->url, c->url_len, method == HTTP_CONNECT, &u) != 0 ||
        !(u.field_set & (1 << UF_PATH))) {
        c->keep_alive = false;
        reply_error(c, CL_RPC_STATUS, "", cl_now_ns(), CL_SC_INVALID_ARGUMENT, 400,
                    "Malformed request: the request target is not a path");
        return;
    }
    /* the URL buffer has room for a terminator (on_url keeps one byte spare) */
    char *path = c->url + u.field_data[UF_PATH].off;
    path[u.field_data[UF_PATH].len] = '\0';
    handle(c, path, method);
    if (c->body_cap > BODY_KEEP) {
        free(c->body);
        c->body = NULL;
        c->body_cap = 0;
    }
}

/* ---------------------------------------------------------------- HTTP parsing */

static int refuse(rconn *c, int http, const char *fmt, ...) CL_PRINTF(3, 4);
static int refuse(rconn *c, int http, const char *fmt, ...)
{
    c->fail_http = http;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->fail_msg, sizeof c->fail_msg, fmt, ap);
    va_end(ap);
    return -1;
}

static int on_message_begin(http_parser *hp)
{
    rconn *c = hp->data;
    set_state(c, RS_READING);
    c->url_len = c->head_bytes = c->body_len = c->field_len = 0;
    c->in_value = c->expect_field = c->expect_continue = false;
    c->deadline_ns = cl_now_ns() + (uint64_t)cl_serve_srv_config(c->loop->srv)->request_timeout_ms * 1000000ull;
    return 0;
}

static int count_head(rconn *c, size_t n)
{
    c->head_bytes += n;
    if (c->head_bytes > HEAD_MAX)
        return refuse(c, 431, "the request line and headers are larger than %zu bytes (%zu so far)", HEAD_MAX,
                      c->head_bytes);
    return 0;
}

static int on_url(http_parser *hp, const char *p, size_t n)
{
    rconn *c = hp->data;
    if (count_head(c, n) != 0)
        return -1;
    if (grow(&c->url, &c->url_cap, c->url_len + n + 1) != 0)
        return refuse(c, 503, "out of memory for a request of %zu bytes", c->url_len + n);
    memcpy(c->url + c->url_len, p, n);
    c->url_len += n;
    return 0;
}

/* Only one header matters here, Expect; names and values may arrive in pieces. */
static int on_header_field(http_parser *hp, const char *p, size_t n)
{
    rconn *c = hp->data;
    /* a header line also has ": " and CRLF around its name and value */
    if (count_head(c, n + (c->in_value || c->field_len == 0 ? 4 : 0)) != 0)
        return -1;
    if (c->in_value) {
        c->in_value = false;
        c->field_len = 0;
    }
    if (c->field_len + n <= sizeof c->field)
        memcpy(c->field + c->field_len, p, n);
    c->field_len += n;
    return 0;
}

static int on_header_value(http_parser *hp, const char *p, size_t n)
{
    rconn *c = hp->data;
    if (count_head(c, n) != 0)
        return -1;
    if (!c->in_value) {
        c->in_value = true;
        c->expect_field = c->field_len == 6 && strncasecmp(c->field, "expect", 6) == 0;
        c->field_len = 0; /* now the value's length */
    }
    if (c->expect_field) {
        /* "100-continue", compared as it arrives */
        static const char want[] = "100-continue";
        bool ok = c->field_len + n <= sizeof want - 1 && strncasecmp(want + c->field_len, p, n) == 0;
        c->field_len += n;
        c->expect_continue = ok && c->field_len == sizeof want - 1;
        if (!ok)
            c->expect_field = false;
    }
    return 0;
}

static int on_headers_complete(http_parser *hp)
{
    rconn *c = hp->data;
    size_t max = cl_serve_srv_config(c->loop->srv)->max_request_bytes;
    if (hp->content_length != ULLONG_MAX && hp->content_length > max)
        return refuse(c, 413, "request body of %zu bytes refused: the server's limit is %zu bytes (--max_request_bytes)",
                      (size_t)hp->content_length, max);
    /* room for the declared body, up to BODY_RESERVE: a client that only sends headers must not make
     * the server reserve the full limit (the rest grows as the body arrives) */
    size_t want = hp->content_length == ULLONG_MAX ? 0
                  : hp->content_length < BODY_RESERVE ? (size_t)hp->content_length : BODY_RESERVE;
    if (want > c->body_cap && grow(&c->body, &c->body_cap, want) != 0)
        return refuse(c, 503, "out of memory for a request body of %zu bytes", (size_t)hp->content_length);
    if (c->expect_continue && hp->http_minor >= 1) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        cl_serve_io_write(c->io, cont, sizeof cont - 1);
    }
    return 0;
}

static int on_body(http_parser *hp, const char *p, size_t n)
{
    rconn *c = hp->data;
    size_t max = cl_serve_srv_config(c->loop->srv)->max_request_bytes;
    if (n > max - c->body_len)
        return refuse(c, 413, "request body of more than %zu bytes refused: the server's limit is %zu bytes "
                      "(--max_request_bytes)", c->body_len + n, max);
    if (grow(&c->body, &c->body_cap, c->body_len + n) != 0)
        return refuse(c, 503, "out of memory for a request body of %zu bytes", c->body_len + n);
    memcpy(c->body + c->body_len, p, n);
    c->body_len += n;
    return 0;
}

static int on_message_complete(http_parser *hp)
{
    rconn *c = hp->data;
    c->keep_alive = http_should_keep_alive(hp) && !hp->upgrade; /* no upgrades: what follows is not HTTP */
    c->http10 = hp->http_major == 1 && hp->http_minor == 0;
    c->head_only = hp->method == HTTP_HEAD;
    http_parser_pause(hp, 1); /* feed() answers it before parsing on */
    return 0;
}

static const http_parser_settings parser_settings = {
    .on_message_begin = on_message_begin,
    .on_url = on_url,
    .on_header_field = on_header_field,
    .on_header_value = on_header_value,
    .on_headers_complete = on_headers_complete,
    .on_body = on_body,
    .on_message_complete = on_message_complete,
};

/* Keeps input that arrives while a request runs; pauses reading when too much waits. Out of memory
 * ends the connection (closing). */
static void pend_add(rconn *c, const uint8_t *p, size_t n)
{
    if (grow(&c->pend, &c->pend_cap, c->pend_len + n) != 0) {
        close_after_output(c);
        return;
    }
    memcpy(c->pend + c->pend_len, p, n);
    c->pend_len += n;
    if (c->pend_len >= PEND_MAX && !c->paused) {
        c->paused = true;
        cl_serve_io_set_reading(c->io, false);
    }
}

/* Parses input and answers the requests in it, in order. Stops at a request that went to the worker
 * pool or when OUT_MAX bytes of output wait to be written (the rest waits in pend), and after a
 * response that ends the connection. The connection stays; settle() decides whether it closes. */
static void feed(rconn *c, const uint8_t *p, size_t n)
{
    while (n > 0 && !closing(c)) {
        if (c->state == RS_BUSY || cl_serve_io_pending(c->io) >= OUT_MAX) {
            pend_add(c, p, n);
            return;
        }
        size_t used = http_parser_execute(&c->hp, &parser_settings, (const char *)p, n);
        enum http_errno e = HTTP_PARSER_ERRNO(&c->hp);
        p += used;
        n -= used;
        if (e == HPE_PAUSED) {
            http_parser_pause(&c->hp, 0);
            dispatch(c);
            continue;
        }
        if (e != HPE_OK) {
            c->keep_alive = false;
            c->head_only = false;
            set_state(c, RS_LINGER);
            if (c->fail_http)
                reply_error(c, CL_RPC_STATUS, "", cl_now_ns(), CL_SC_INVALID_ARGUMENT, c->fail_http, c->fail_msg);
            else
                reply_error(c, CL_RPC_STATUS, "", cl_now_ns(), CL_SC_INVALID_ARGUMENT, 400,
                            http_errno_description(e));
            return;
        }
    }
}

/* A closing connection whose output is written: closed (TLS close_notify, then the socket), or after a
 * refusal mid-request, its side shut
 * and its input drained for up to LINGER_MS, so a client still sending the refused body reads the
 * answer instead of a reset (closing with unread input makes the kernel send one). Returns -1 when
 * the connection was freed. */
static int finish(rconn *c)
{
    if (c->state == RS_LINGERING)
        return 0; /* already shut (io_drained after the close_notify): ends at EOF or its deadline */
    if (c->state == RS_CLOSING) {
        /* TLS's close_notify first: the client sees the end of the connection, not a truncation */
        if (cl_serve_io_shutdown_write(c->io) == 0)
            conn_free(c);
        return -1; /* freed here, or by io_closed when the connection ended meanwhile */
    }
    if (cl_serve_io_shutdown_write(c->io) != 0)
        return -1; /* io_closed freed it */
    set_state(c, RS_LINGERING);
    free(c->pend);
    c->pend = NULL;
    c->pend_len = c->pend_cap = 0;
    if (c->paused) {
        c->paused = false;
        cl_serve_io_set_reading(c->io, true);
    }
    unsigned ms = cl_serve_srv_config(c->loop->srv)->request_timeout_ms;
    c->deadline_ns = cl_now_ns() + (uint64_t)(ms < LINGER_MS ? ms : LINGER_MS) * 1000000ull;
    return 0;
}

/* After input, a response or written output: a closing connection is freed once its output is
 * written; input that waited (behind a call, or behind output the client had not read) is parsed
 * once neither holds it back, with reading resumed. Returns -1 when the connection was freed. */
static int settle(rconn *c)
{
    for (;;) {
        conn_check(c);
        if (closing(c)) {
            if (c->state == RS_LINGERING)
                return 0;
            if (cl_serve_io_flush(c->io) != 0)
                return -1; /* io_closed freed it */
            if (cl_serve_io_pending(c->io) == 0)
                return finish(c);
            return 0; /* io_drained finishes it */
        }
        if (c->state == RS_BUSY || !c->pend_len)
            return 0;
        if (cl_serve_io_pending(c->io) >= OUT_MAX) {
            if (cl_serve_io_flush(c->io) != 0)
                return -1;
            if (cl_serve_io_pending(c->io) >= OUT_MAX)
                return 0; /* io_drained goes on */
        }
        uint8_t *p = c->pend;
        size_t n = c->pend_len;
        c->pend = NULL;
        c->pend_len = c->pend_cap = 0;
        if (c->paused) {
            c->paused = false;
            cl_serve_io_set_reading(c->io, true);
        }
        feed(c, p, n);
        free(p);
    }
}

/* ---------------------------------------------------------------- transport callbacks */

static int io_ready(cl_serve_io *io, void *arg)
{
    (void)io;
    (void)arg;
    return 0;
}

static int io_data(cl_serve_io *io, const uint8_t *p, size_t n, void *arg)
{
    (void)io;
    rconn *c = arg;
    conn_check(c);
    if (closing(c))
        return 0; /* input after the last response is dropped */
    if (c->state == RS_BUSY || c->pend_len)
        pend_add(c, p, n);
    else
        feed(c, p, n);
    return settle(c);
}

static void io_drained(cl_serve_io *io, void *arg)
{
    (void)io;
    rconn *c = arg;
    conn_check(c);
    if (closing(c))
        (void)finish(c);
    else if (c->pend_len && c->state != RS_BUSY && settle(c) == 0)
        cl_serve_io_flush(c->io); /* input waited for this output to be written */
}

static void io_closed(cl_serve_io *io, bool tls_failure, const char *why, void *arg)
{
    (void)io;
    rconn *c = arg;
    /* a failed handshake is worth telling (e.g. a client without a certificate under mTLS); a client
     * that just went away is not */
    if (tls_failure)
        CL_INFO(CL_SERVE_MOD, "rest %s: TLS: %s", c->peer, why);
    else
        CL_DEBUG(CL_SERVE_MOD, "rest %s: connection ended: %s", c->peer, why);
    conn_free(c);
}

static const cl_serve_io_cbs io_cbs = {io_ready, io_data, io_drained, io_closed};

/* ---------------------------------------------------------------- the loop's listener */

/* Closes connections past their deadline: a handshake or request not complete, or idle. */
static void on_tick(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_serve_rest_loop *l = arg;
    uint64_t now = cl_now_ns();
    for (rconn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (!c->deadline_ns || now < c->deadline_ns)
            continue;
        if (c->state == RS_LINGERING)
            CL_DEBUG(CL_SERVE_MOD, "rest %s: still sending after its refusal; closing", c->peer);
        else if (c->state == RS_READING)
            CL_INFO(CL_SERVE_MOD, "rest %s: request not received within %u ms; closing the connection", c->peer,
                    cl_serve_srv_config(l->srv)->request_timeout_ms);
        else
            CL_DEBUG(CL_SERVE_MOD, "rest %s: idle for %u ms; closing", c->peer,
                     cl_serve_srv_config(l->srv)->request_timeout_ms);
        conn_free(c);
    }
}

static void on_accept(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa, int salen, void *arg)
{
    (void)lev;
    (void)salen;
    cl_serve_rest_loop *l = arg;
    rconn *c = calloc(1, sizeof *c);
    if (!c) {
        evutil_closesocket(fd);
        return;
    }
    c->loop = l;
    c->req_rpc = CL_RPC_COUNT;
    cl_serve_peer_name(sa, c->peer, sizeof c->peer);
    http_parser_init(&c->hp, HTTP_REQUEST);
    c->hp.data = c;
    c->keep_alive = true;
    c->deadline_ns = cl_now_ns() + (uint64_t)cl_serve_srv_config(l->srv)->request_timeout_ms * 1000000ull;
    cl_err err = {0};
    if (!(c->io = cl_serve_io_new(l->base, fd, l->ctx, &io_cbs, c, &err))) {
        CL_WARN(CL_SERVE_MOD, "rest %s: %s", c->peer, err.msg);
        evutil_closesocket(fd);
        free(c);
        return;
    }
    c->next = l->conns;
    if (l->conns)
        l->conns->prev = c;
    l->conns = c;
    atomic_fetch_add_explicit(&l->n_conns, 1, memory_order_relaxed);
}

int cl_serve_rest_listen(cl_serve_rest_loop *l, int fd, SSL_CTX *ctx, cl_err *err)
{
    const cl_serve_config *cfg = cl_serve_srv_config(l->srv);
    unsigned tick = cfg->request_timeout_ms / 4 < 10 ? 10 : cfg->request_timeout_ms / 4;
    struct timeval tv = {tick / 1000, (tick % 1000) * 1000};
    l->ctx = ctx;
    if (!(l->tick = event_new(l->base, -1, EV_PERSIST, on_tick, l)) || event_add(l->tick, &tv) != 0)
        return cl_err_set(err, CL_E_NOMEM, "cannot create the REST connection timer");
    /* Accepted sockets inherit TCP_NODELAY from the listener on Linux */
    cl_serve_set_nodelay(fd);
    if (!(l->lev = evconnlistener_new(l->base, on_accept, l, LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC, 0, fd)))
        return cl_err_set(err, CL_E_IO, "cannot accept REST connections");
    return 0;
}

/* STOP_GRACE_MS after shutdown began: the connections still between requests are closed the way a
 * client can tell from a lost request: TLS close_notify and FIN, then what it still sends is read and
 * dropped (a lingering close: no reset), so its HTTP library sees the connection end before any
 * response and retries elsewhere. */
static void on_grace(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_serve_rest_loop *l = arg;
    uint64_t now = cl_now_ns();
    bool lingering = false;
    for (rconn *c = l->conns, *next; c; c = next) {
        next = c->next;
        if (c->state == RS_LINGERING && c->deadline_ns && now >= c->deadline_ns) {
            conn_free(c); /* the client did not close its side either */
        } else if (c->state == RS_IDLE && !c->pend_len) {
            set_state(c, RS_LINGER);
            if (settle(c) == 0)
                lingering = true;
        } else {
            lingering |= c->state == RS_LINGERING;
        }
    }
    /* the lingering ones end when their clients close, or at their deadline (checked here: the
     * loop's tick may be seconds away) */
    struct timeval tv = {0, 100000};
    if (lingering && l->grace)
        evtimer_add(l->grace, &tv);
}

void cl_serve_rest_shutdown(cl_serve_rest_loop *l)
{
    if (l->stopping)
        return;
    l->stopping = true;
    if (l->lev) {
        evconnlistener_free(l->lev);
        l->lev = NULL;
    }
    /* Connections busy with a request close after its response (Connection: close). Those between
     * requests may be carrying one the client wrote just now, which closing them at once would lose
     * (a keep-alive client cannot know): for STOP_GRACE_MS they are still read, and a request that
     * arrives is answered with Connection: close; then on_grace closes the rest cleanly. */
    unsigned ms = cl_serve_srv_config(l->srv)->request_timeout_ms;
    ms = ms < STOP_GRACE_MS ? ms : STOP_GRACE_MS;
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    if (!(l->grace = evtimer_new(l->base, on_grace, l)) || evtimer_add(l->grace, &tv) != 0)
        on_grace(-1, 0, l);
}

void cl_serve_rest_free(cl_serve_rest_loop *l)
{
    while (l->conns)
        conn_free(l->conns);
    if (l->lev)
        evconnlistener_free(l->lev);
    if (l->tick)
        event_free(l->tick);
    if (l->grace)
        event_free(l->grace);
    l->lev = NULL;
    l->tick = NULL;
    l->grace = NULL;
}
