/* rest.c — the REST front end (TF Serving's HTTP/JSON API) on libevent's evhttp, over TLS through
 * OpenSSL bufferevents (or plain HTTP when explicitly allowed):
 *   GET  /v1/models/{name}[/versions/{v}]            model status
 *   GET  /v1/models/{name}[/versions/{v}]/metadata   signature_def
 *   POST /v1/models/{name}[/versions/{v}]:predict    row ("instances") or columnar ("inputs") format
 *   GET  /monitoring/prometheus/metrics              Prometheus text format
 * Errors are {"error": "..."} with TF Serving's HTTP status for the canonical code; a full worker
 * queue answers 429. evhttp enforces the body limit (413) and the read/write timeout.
 *
 * Each REST event loop (cl_serve_rest_loop; server.c runs one or more) has its own evhttp and
 * listening socket on the REST port. A cheap model runs right in the loop (cl_serve_pool_run_inline);
 * other calls go to the worker pool and come back through the loop's completion queue.
 *
 * Ownership: a loop's thread owns its requests. While a :predict call is in the worker pool, the
 * connection's close callback points at the call, so a client that disconnects only clears
 * call->owner and the call frees itself when it comes back. */
#include "serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/http.h>
#include <event2/keyvalq_struct.h>

static void reply(struct evhttp_request *req, int http, const char *ctype, char *body, size_t len)
{
    struct evkeyvalq *h = evhttp_request_get_output_headers(req);
    evhttp_add_header(h, "Content-Type", ctype);
    struct evbuffer *b = evbuffer_new();
    if (b && body)
        evbuffer_add(b, body, len);
    struct bufferevent *bev = evhttp_connection_get_bufferevent(evhttp_request_get_connection(req));
    evhttp_send_reply(req, http, http == 200 ? "OK" : "Error", b);
    /* evhttp queues the head and the body as separate buffer chains, and the OpenSSL bufferevent
     * writes each chain as its own TLS record and syscall: join them (a small copy) so a response
     * is one record and one write */
    if (bev)
        evbuffer_pullup(bufferevent_get_output(bev), -1);
    if (b)
        evbuffer_free(b);
    free(body);
}

static void reply_error(cl_serve_server *srv, struct evhttp_request *req, cl_serve_rpc rpc, const char *model,
                        uint64_t start, cl_serve_code code, int http, const char *msg)
{
    cl_serve_metrics_record(srv, CL_API_REST, rpc, model, code, cl_now_ns() - start);
    char *body = cl_serve_json_error(msg);
    reply(req, http ? http : cl_serve_code_http(code), "application/json", body, body ? strlen(body) : 0);
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
    cl_serve_call *c = arg;
    c->owner = NULL;
}

static void rest_call_done(cl_serve_call *c)
{
    struct evhttp_request *req = c->owner;
    if (!req) {
        /* the client went away while the model ran */
        cl_serve_metrics_record(c->srv, CL_API_REST, CL_RPC_PREDICT, cl_serve_model_name(c->model), CL_SC_CANCELLED,
                                cl_now_ns() - c->start_ns);
        cl_serve_call_free(c);
        return;
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), NULL, NULL);
    char *body = NULL;
    size_t len = 0;
    cl_serve_code code = c->st.code;
    if (code == CL_SC_OK)
        code = cl_serve_json_predict_response(c, &body, &len);
    const char *model = cl_serve_model_name(c->model);
    if (code != CL_SC_OK) {
        reply_error(c->srv, req, CL_RPC_PREDICT, model, c->start_ns, code, 0, c->st.msg);
    } else {
        cl_serve_metrics_record(c->srv, CL_API_REST, CL_RPC_PREDICT, model, CL_SC_OK, cl_now_ns() - c->start_ns);
        reply(req, 200, "application/json", body, len);
    }
    cl_serve_call_free(c);
}

/* Parses /v1/models/NAME[/versions/V][/metadata | :predict]. Returns the rpc or -1; `name` gets the
 * decoded model name. */
static int route(const char *path, char *name, size_t name_cap, int64_t *version, bool *label, cl_serve_status *st)
{
    const char *p = path + strlen("/v1/models/");
    const char *end = p + strcspn(p, "/:");
    if (end == p || (size_t)(end - p) >= name_cap) {
        cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: missing or too long model name");
        return -1;
    }
    memcpy(name, p, (size_t)(end - p));
    name[end - p] = '\0';
    char *dec = evhttp_uridecode(name, 0, NULL);
    if (dec) {
        snprintf(name, name_cap, "%s", dec);
        free(dec);
    }
    p = end;
    *version = 0;
    *label = false;
    if (strncmp(p, "/versions/", 10) == 0 || strncmp(p, "/labels/", 8) == 0) {
        *label = p[1] == 'l';
        p += *label ? 8 : 10;
        char *e = NULL;
        if (*label) {
            p += strcspn(p, "/:");
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
    cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "Malformed request: %s (supported: /v1/models/NAME[/versions/N]"
                    "[/metadata|:predict])", path);
    return -1;
}

static void on_request(struct evhttp_request *req, void *arg)
{
    cl_serve_rest_loop *loop = arg;
    cl_serve_server *srv = loop->srv;
    uint64_t start = cl_now_ns();
    const cl_serve_config *cfg = cl_serve_srv_config(srv);
    const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
    const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
    enum evhttp_cmd_type method = evhttp_request_get_command(req);
    cl_serve_status st = {0};
    if (!path)
        path = "";
    if (strcmp(path, "/monitoring/prometheus/metrics") == 0) {
        if (method != EVHTTP_REQ_GET)
            return reply_error(srv, req, CL_RPC_STATUS, "", start, CL_SC_INVALID_ARGUMENT, 405, "use GET");
        char *m = cl_serve_metrics_render(srv);
        return reply(req, m ? 200 : 500, "text/plain; version=0.0.4", m, m ? strlen(m) : 0);
    }
    if (strncmp(path, "/v1/models/", 11) != 0)
        return reply_error(srv, req, CL_RPC_STATUS, "", start, CL_SC_NOT_FOUND, 404,
                           "Malformed request: unknown path; the API is under /v1/models/NAME");
    char name[256];
    int64_t version;
    bool label;
    int rpc = route(path, name, sizeof name, &version, &label, &st);
    if (rpc < 0)
        return reply_error(srv, req, CL_RPC_STATUS, "", start, st.code, 404, st.msg);
    if (label)
        return reply_error(srv, req, (cl_serve_rpc)rpc, name, start, CL_SC_UNIMPLEMENTED, 0,
                           "version labels are not supported by cloister yet; use /versions/N or the latest "
                           "version");
    bool want_post = rpc == CL_RPC_PREDICT;
    if ((want_post && method != EVHTTP_REQ_POST) || (!want_post && method != EVHTTP_REQ_GET))
        return reply_error(srv, req, (cl_serve_rpc)rpc, name, start, CL_SC_INVALID_ARGUMENT, 405,
                           want_post ? "Malformed request: :predict needs POST" : "Malformed request: use GET");
    cl_serve_registry *reg = cl_serve_srv_registry(srv);
    if (rpc == CL_RPC_STATUS) {
        int64_t vs[64];
        size_t n = cl_serve_registry_versions(reg, name, vs, CL_ARRAY_LEN(vs));
        if (n > CL_ARRAY_LEN(vs))
            n = CL_ARRAY_LEN(vs);
        if (n == 0) {
            cl_serve_st_set(&st, CL_SC_NOT_FOUND, "Could not find any versions of model %s", name);
            return reply_error(srv, req, CL_RPC_STATUS, name, start, st.code, 0, st.msg);
        }
        if (version > 0) {
            size_t i = 0;
            while (i < n && vs[i] != version)
                i++;
            if (i == n) {
                cl_serve_st_set(&st, CL_SC_NOT_FOUND, "Could not find version %lld of model %s", (long long)version,
                                name);
                return reply_error(srv, req, CL_RPC_STATUS, name, start, st.code, 0, st.msg);
            }
            vs[0] = version;
            n = 1;
        }
        char *body = cl_serve_json_status(vs, n);
        cl_serve_metrics_record(srv, CL_API_REST, CL_RPC_STATUS, name, CL_SC_OK, cl_now_ns() - start);
        return reply(req, body ? 200 : 500, "application/json", body, body ? strlen(body) : 0);
    }
    cl_err err = {0};
    cl_serve_model *m = cl_serve_registry_get(reg, name, version, &err);
    if (!m)
        return reply_error(srv, req, (cl_serve_rpc)rpc, name, start, CL_SC_NOT_FOUND, 0, err.msg);
    if (rpc == CL_RPC_METADATA) {
        char *body = cl_serve_json_metadata(m);
        cl_serve_model_release(m);
        cl_serve_metrics_record(srv, CL_API_REST, CL_RPC_METADATA, name, CL_SC_OK, cl_now_ns() - start);
        return reply(req, body ? 200 : 500, "application/json", body, body ? strlen(body) : 0);
    }
    cl_serve_call *c = cl_serve_call_new(srv, CL_API_REST, CL_RPC_PREDICT);
    if (!c) {
        cl_serve_model_release(m);
        return reply_error(srv, req, CL_RPC_PREDICT, name, start, CL_SC_RESOURCE_EXHAUSTED, 0, "out of memory");
    }
    c->model = m;
    c->start_ns = start;
    struct evbuffer *in = evhttp_request_get_input_buffer(req);
    size_t len = evbuffer_get_length(in);
    const char *body = (const char *)evbuffer_pullup(in, -1);
    cl_serve_code code = cl_serve_json_predict_parse(body ? body : "", len, cfg->max_request_bytes, c);
    if (code != CL_SC_OK) {
        reply_error(srv, req, CL_RPC_PREDICT, name, start, code, 0, c->st.msg);
        cl_serve_call_free(c);
        return;
    }
    evbuffer_drain(in, len);
    c->owner = req;
    c->done = rest_call_done;
    c->doneq = loop->doneq;
    if (cl_serve_pool_run_inline(cl_serve_srv_pool(srv), c, cl_serve_srv_inline_ns(srv))) {
        rest_call_done(c);
        return;
    }
    if (cl_serve_pool_submit(cl_serve_srv_pool(srv), c) != 0) {
        reply_error(srv, req, CL_RPC_PREDICT, name, start, CL_SC_UNAVAILABLE, 429,
                    "the server is at capacity (request queue full); retry later");
        cl_serve_call_free(c);
        return;
    }
    evhttp_connection_set_closecb(evhttp_request_get_connection(req), on_conn_close, c);
}

static struct bufferevent *tls_bev(struct event_base *base, void *arg)
{
    SSL *ssl = SSL_new(arg);
    if (!ssl)
        return NULL;
    struct bufferevent *bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
                                                             BEV_OPT_CLOSE_ON_FREE);
    if (!bev) {
        SSL_free(ssl);
        return NULL;
    }
    bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
    return bev;
}

int cl_serve_rest_listen(cl_serve_rest_loop *l, int fd, SSL_CTX *ctx, cl_err *err)
{
    const cl_serve_config *cfg = cl_serve_srv_config(l->srv);
    struct evhttp *http = evhttp_new(l->base);
    if (!http)
        return cl_err_set(err, CL_E_NOMEM, "cannot create the REST server");
    if (ctx)
        evhttp_set_bevcb(http, tls_bev, ctx);
    /* every method reaches on_request, so a wrong one gets a JSON error rather than evhttp's HTML */
    evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_POST | EVHTTP_REQ_HEAD | EVHTTP_REQ_PUT |
                                         EVHTTP_REQ_DELETE | EVHTTP_REQ_OPTIONS | EVHTTP_REQ_TRACE |
                                         EVHTTP_REQ_CONNECT | EVHTTP_REQ_PATCH);
    evhttp_set_max_body_size(http, (ev_ssize_t)cfg->max_request_bytes);
    evhttp_set_max_headers_size(http, 16384);
    struct timeval tv = {cfg->request_timeout_ms / 1000, (cfg->request_timeout_ms % 1000) * 1000};
    evhttp_set_timeout_tv(http, &tv);
    evhttp_set_gencb(http, on_request, l);
    /* Accepted sockets inherit TCP_NODELAY from the listener on Linux: without it, a response written
     * as headers then body waits for the client's delayed ACK (~40 ms) on keep-alive connections. */
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    if (!(l->sock = evhttp_accept_socket_with_handle(http, fd))) {
        evhttp_free(http);
        return cl_err_set(err, CL_E_IO, "cannot accept REST connections");
    }
    l->http = http;
    return 0;
}
