/* rest.c — the client module's REST path: TF Serving's /v1/models API over HTTP/1.1 (keep-alive, one
 * request at a time per connection; Content-Length and chunked responses), :predict requests in the
 * columnar "inputs" format (DT_STRING inputs as {"b64": ...}), and the JSON answers (outputs or
 * predictions, metadata, status, {"error": ...}) decoded with cJSON. */
#include "client_int.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <openssl/evp.h>

#define MAX_HEADER_BYTES (64 * 1024)

/* ---------------------------------------------------------------- requests */

static void put_value(cl_strbuf *b, const cl_serve_tensor *t, size_t i)
{
    switch (t->dtype) {
    case CL_SERVE_DT_FLOAT: {
        float v = ((const float *)t->data)[i];
        if (isfinite(v))
            cl_strbuf_fmt(b, "%.9g", (double)v);
        else
            cl_strbuf_str(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        break;
    }
    case CL_SERVE_DT_DOUBLE: {
        double v = ((const double *)t->data)[i];
        if (isfinite(v))
            cl_strbuf_fmt(b, "%.17g", v);
        else
            cl_strbuf_str(b, isnan(v) ? "NaN" : v > 0 ? "Infinity" : "-Infinity");
        break;
    }
    case CL_SERVE_DT_INT32: cl_strbuf_fmt(b, "%d", ((const int32_t *)t->data)[i]); break;
    case CL_SERVE_DT_UINT8: cl_strbuf_fmt(b, "%u", ((const uint8_t *)t->data)[i]); break;
    case CL_SERVE_DT_INT8: cl_strbuf_fmt(b, "%d", ((const int8_t *)t->data)[i]); break;
    case CL_SERVE_DT_INT64: cl_strbuf_fmt(b, "%lld", (long long)((const int64_t *)t->data)[i]); break;
    case CL_SERVE_DT_BOOL: cl_strbuf_str(b, ((const uint8_t *)t->data)[i] ? "true" : "false"); break;
    default: cl_strbuf_str(b, "0"); break;
    }
}

static void put_nested(cl_strbuf *b, const cl_serve_tensor *t, int d, size_t *pos)
{
    if (d == t->ndim) {
        put_value(b, t, (*pos)++);
        return;
    }
    cl_strbuf_str(b, "[");
    for (int64_t i = 0; i < t->dims[d]; i++) {
        if (i)
            cl_strbuf_str(b, ",");
        put_nested(b, t, d + 1, pos);
    }
    cl_strbuf_str(b, "]");
}

static char *predict_body(const cl_client_request *req, size_t *len)
{
    cl_strbuf b = {0};
    cl_strbuf_str(&b, "{");
    if (req->signature) {
        cl_strbuf_str(&b, "\"signature_name\":");
        cl_strbuf_json_string(&b, req->signature);
        cl_strbuf_str(&b, ",");
    }
    cl_strbuf_str(&b, "\"inputs\":{");
    for (size_t i = 0; i < req->n_inputs; i++) {
        size_t pos = 0;
        if (i)
            cl_strbuf_str(&b, ",");
        cl_strbuf_json_string(&b, req->inputs[i].name);
        cl_strbuf_str(&b, ":");
        put_nested(&b, &req->inputs[i], 0, &pos);
    }
    if (req->bytes_input) {
        if (req->n_inputs)
            cl_strbuf_str(&b, ",");
        cl_strbuf_json_string(&b, req->bytes_input);
        cl_strbuf_str(&b, ":[");
        for (size_t k = 0; k < req->n_bytes; k++) {
            size_t enc = 4 * ((req->bytes_len[k] + 2) / 3) + 1;
            char *tmp = malloc(enc);
            if (!tmp) {
                b.failed = true;
                break;
            }
            EVP_EncodeBlock((unsigned char *)tmp, req->bytes[k], (int)req->bytes_len[k]);
            cl_strbuf_str(&b, k ? ",{\"b64\":\"" : "{\"b64\":\"");
            cl_strbuf_str(&b, tmp);
            cl_strbuf_str(&b, "\"}");
            free(tmp);
        }
        cl_strbuf_str(&b, "]");
    }
    cl_strbuf_str(&b, "}}");
    if (b.failed) {
        free(b.p);
        return NULL;
    }
    *len = b.len;
    return b.p;
}

/* ---------------------------------------------------------------- HTTP/1.1 */

static int rbuf_fill(cl_client_conn *c, cl_err *err)
{
    if (c->rcap - c->rlen < 16384) {
        size_t cap = c->rcap ? c->rcap * 2 : 65536;
        uint8_t *p = realloc(c->rbuf, cap);
        if (!p)
            return cl_err_nomem(err);
        c->rbuf = p;
        c->rcap = cap;
    }
    ssize_t n = cl_client_io_read(c, c->rbuf + c->rlen, c->rcap - c->rlen, err);
    if (n < 0)
        return -1;
    if (n == 0)
        return 1;
    c->rlen += (size_t)n;
    return 0;
}

static void rbuf_consume(cl_client_conn *c, size_t n)
{
    memmove(c->rbuf, c->rbuf + n, c->rlen - n);
    c->rlen -= n;
}

static const char *find_header(const char *hdrs, const char *name, size_t *vlen)
{
    size_t nl = strlen(name);
    for (const char *line = hdrs; line && *line;) {
        const char *eol = strstr(line, "\r\n");
        if (!eol)
            break;
        if ((size_t)(eol - line) > nl && strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (v < eol && (*v == ' ' || *v == '\t'))
                v++;
            const char *e = eol;
            while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
                e--;
            *vlen = (size_t)(e - v);
            return v;
        }
        line = eol + 2;
    }
    return NULL;
}

/* Reads one response. *body is malloc()ed and NUL-terminated. */
static int http_read(cl_client_conn *c, int *status, char **body, size_t *body_len, cl_err *err)
{
    size_t max = c->cl->max_response;
    char *hdr_end;
    for (;;) {
        if (c->rlen >= 4 && c->rbuf && (hdr_end = memmem(c->rbuf, c->rlen, "\r\n\r\n", 4)) != NULL)
            break;
        if (c->rlen > MAX_HEADER_BYTES)
            return cl_err_set(err, CL_E_FORMAT, "the server's HTTP response headers exceed %d bytes", MAX_HEADER_BYTES);
        int r = rbuf_fill(c, err);
        if (r < 0)
            return -1;
        if (r > 0)
            return cl_err_set(err, CL_E_IO, "%s closed the connection before answering", c->cl->authority);
    }
    size_t hlen = (size_t)(hdr_end - (char *)c->rbuf) + 4;
    char *hdrs = malloc(hlen + 1);
    if (!hdrs)
        return cl_err_nomem(err);
    memcpy(hdrs, c->rbuf, hlen);
    hdrs[hlen] = '\0';
    rbuf_consume(c, hlen);
    int rc = -1;
    int st = 0;
    if (sscanf(hdrs, "HTTP/1.%*1[01] %3d", &st) != 1 || st < 100 || st > 599) {
        cl_err_set(err, CL_E_FORMAT, "%s did not answer with HTTP/1.1 (is it the REST port? gRPC ports need no "
                   "--rest)", c->cl->authority);
        goto out;
    }
    const char *eol = strstr(hdrs, "\r\n");
    const char *fields = eol + 2;
    size_t vl;
    const char *v;
    bool chunked = (v = find_header(fields, "transfer-encoding", &vl)) && vl >= 7 && strncasecmp(v, "chunked", 7) == 0;
    bool close_after = (v = find_header(fields, "connection", &vl)) && vl == 5 && strncasecmp(v, "close", 5) == 0;
    long long clen = -1;
    if ((v = find_header(fields, "content-length", &vl))) {
        char tmp[24];
        if (vl == 0 || vl >= sizeof tmp) {
            cl_err_set(err, CL_E_FORMAT, "invalid Content-Length from the server");
            goto out;
        }
        memcpy(tmp, v, vl);
        tmp[vl] = '\0';
        char *end;
        clen = strtoll(tmp, &end, 10);
        if (*end || clen < 0) {
            cl_err_set(err, CL_E_FORMAT, "invalid Content-Length from the server");
            goto out;
        }
    }
    cl_strbuf b = {0};
    cl_strbuf_put(&b, "", 0);
    if (chunked) {
        for (;;) {
            char *le;
            while (!(c->rlen && (le = memmem(c->rbuf, c->rlen, "\r\n", 2)))) {
                int r = rbuf_fill(c, err);
                if (r != 0) {
                    if (r > 0)
                        cl_err_set(err, CL_E_TRUNCATED, "the server closed the connection in a chunked response");
                    free(b.p);
                    goto out;
                }
            }
            unsigned long long n = strtoull((char *)c->rbuf, NULL, 16);
            /* cppcheck-suppress nullPointerArithmeticRedundantCheck ; the loop leaves only with le found */
            rbuf_consume(c, (size_t)(le - (char *)c->rbuf) + 2);
            if (n > max || b.len + n > max) {
                free(b.p);
                cl_err_set(err, CL_E_INVALID, "the response is larger than the client's limit of %zu bytes", max);
                goto out;
            }
            while (c->rlen < n + 2) {
                int r = rbuf_fill(c, err);
                if (r != 0) {
                    if (r > 0)
                        cl_err_set(err, CL_E_TRUNCATED, "the server closed the connection in a chunked response");
                    free(b.p);
                    goto out;
                }
            }
            cl_strbuf_put(&b, (char *)c->rbuf, (size_t)n);
            rbuf_consume(c, (size_t)n + 2);
            if (n == 0)
                break; /* no trailers are sent by the servers this talks to */
        }
    } else if (clen >= 0) {
        if ((unsigned long long)clen > max) {
            free(b.p);
            cl_err_set(err, CL_E_INVALID, "the response (%lld bytes) is larger than the client's limit of %zu bytes",
                       clen, max);
            goto out;
        }
        while (c->rlen < (size_t)clen) {
            int r = rbuf_fill(c, err);
            if (r != 0) {
                if (r > 0)
                    cl_err_set(err, CL_E_TRUNCATED, "the server closed the connection before the end of its response");
                free(b.p);
                goto out;
            }
        }
        cl_strbuf_put(&b, (char *)c->rbuf, (size_t)clen);
        rbuf_consume(c, (size_t)clen);
    } else {
        int r;
        while ((r = rbuf_fill(c, err)) == 0)
            if (c->rlen > max) {
                free(b.p);
                cl_err_set(err, CL_E_INVALID, "the response is larger than the client's limit of %zu bytes", max);
                goto out;
            }
        if (r < 0) {
            free(b.p);
            goto out;
        }
        cl_strbuf_put(&b, (char *)c->rbuf, c->rlen);
        c->rlen = 0;
        close_after = true;
    }
    if (b.failed) {
        free(b.p);
        cl_err_nomem(err);
        goto out;
    }
    if (close_after)
        c->broken = true;
    *status = st;
    *body = b.p;
    *body_len = b.len;
    rc = 0;
out:
    free(hdrs);
    return rc;
}

/* One request/response exchange. Transport failures mark the connection for reconnection. */
static int http_call(cl_client_conn *c, const char *method, const char *path, const char *body, size_t body_len,
                     int *status, char **resp, size_t *resp_len, cl_err *err)
{
    char head[1024];
    int n = snprintf(head, sizeof head,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nUser-Agent: cloister-client/0.1\r\nAccept: application/json\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     method, path, c->cl->authority, body_len);
    if (n < 0 || (size_t)n >= sizeof head)
        return cl_err_set(err, CL_E_INVALID, "the request path is too long");
    c->rlen = 0;
    if (cl_client_io_write(c, head, (size_t)n, err) != 0 || (body_len && cl_client_io_write(c, body, body_len, err) != 0) ||
        cl_client_io_flush(c, err) != 0 || http_read(c, status, resp, resp_len, err) != 0)
        return cl_client_conn_fail(c, err);
    return 0;
}

static int model_path(char *out, size_t size, const char *model, int64_t version, const char *suffix, cl_err *err)
{
    int n = version > 0 ? snprintf(out, size, "/v1/models/%s/versions/%lld%s", model, (long long)version, suffix)
                        : snprintf(out, size, "/v1/models/%s%s", model, suffix);
    if (n < 0 || (size_t)n >= size)
        return cl_err_set(err, CL_E_INVALID, "the model name is too long");
    return 0;
}

/* ---------------------------------------------------------------- JSON answers */

cl_serve_code cl_client_code_from_http(int http)
{
    switch (http) {
    case 200: return CL_SC_OK;
    case 400: return CL_SC_INVALID_ARGUMENT;
    case 401: return CL_SC_UNAUTHENTICATED;
    case 403: return CL_SC_PERMISSION_DENIED;
    case 404: return CL_SC_NOT_FOUND;
    case 409: return CL_SC_ABORTED;
    case 413: return CL_SC_RESOURCE_EXHAUSTED;
    case 429: return CL_SC_RESOURCE_EXHAUSTED;
    case 499: return CL_SC_CANCELLED;
    case 501: return CL_SC_UNIMPLEMENTED;
    case 503: return CL_SC_UNAVAILABLE;
    case 504: return CL_SC_DEADLINE_EXCEEDED;
    default: return http >= 200 && http < 300 ? CL_SC_OK : http >= 400 && http < 500 ? CL_SC_INVALID_ARGUMENT
                                                                                       : CL_SC_UNKNOWN;
    }
}

/* An HTTP error status: the body's {"error": ...} (or its start) becomes the message. */
static int http_error(const char *body, size_t len, int http, cl_serve_code *code, cl_err *err)
{
    cl_serve_code cd = cl_client_code_from_http(http);
    if (code)
        *code = cd;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *e = cJSON_GetObjectItemCaseSensitive(j, "error");
    cl_status st = cd == CL_SC_INVALID_ARGUMENT || cd == CL_SC_NOT_FOUND ? CL_E_INVALID
                   : cd == CL_SC_UNIMPLEMENTED                          ? CL_E_UNSUPPORTED
                                                                        : CL_E_IO;
    if (cJSON_IsString(e))
        cl_err_set(err, st, "%s: %s", cl_serve_code_name(cd), e->valuestring);
    else {
        size_t n = 0;
        while (n < len && n < 160 && body[n] != '\n' && body[n] != '\0')
            n++;
        cl_err_set(err, st, "%s: HTTP %d from the server: %.*s", cl_serve_code_name(cd), http, (int)n, body);
    }
    cJSON_Delete(j);
    return -1;
}

/* Shape of a nested JSON array (first element at each depth). */
static int json_shape(const cJSON *v, int *ndim, int64_t *dims, const char *name, cl_err *err)
{
    int d = 0;
    while (cJSON_IsArray(v)) {
        if (d == CL_SERVE_MAX_DIMS)
            return cl_err_set(err, CL_E_FORMAT, "output '%s' nests deeper than %d dimensions", name, CL_SERVE_MAX_DIMS);
        dims[d++] = cJSON_GetArraySize(v);
        v = v->child;
    }
    *ndim = d;
    return 0;
}

static int json_fill(const cJSON *v, int d, const cl_serve_tensor *t, size_t *pos, const char *name, cl_err *err)
{
    if (d == t->ndim) {
        double x;
        if (cJSON_IsNumber(v))
            x = v->valuedouble;
        else if (cJSON_IsBool(v))
            x = cJSON_IsTrue(v) ? 1 : 0;
        else if (cJSON_IsString(v) && (strcmp(v->valuestring, "NaN") == 0))
            x = NAN;
        else if (cJSON_IsString(v) && (strcmp(v->valuestring, "Infinity") == 0 || strcmp(v->valuestring, "-Infinity") == 0))
            x = v->valuestring[0] == '-' ? -INFINITY : INFINITY;
        else
            return cl_err_set(err, CL_E_FORMAT, "output '%s' holds a value that is not a number", name);
        ((double *)t->data)[(*pos)++] = x;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != t->dims[d])
        return cl_err_set(err, CL_E_FORMAT, "output '%s' is a ragged array (not a tensor)", name);
    for (const cJSON *e = v->child; e; e = e->next)
        if (json_fill(e, d + 1, t, pos, name, err) != 0)
            return -1;
    return 0;
}

static int json_tensor(const cJSON *v, const char *name, cl_serve_tensor *t, cl_err *err)
{
    int ndim = 0;
    int64_t dims[CL_SERVE_MAX_DIMS] = {0};
    if (json_shape(v, &ndim, dims, name, err) != 0)
        return -1;
    if (cl_serve_tensor_init(t, name, CL_SERVE_DT_DOUBLE, ndim, dims, (size_t)1 << 30, err) != 0)
        return cl_err_prefix(err, "output '%s'", name);
    size_t pos = 0;
    return json_fill(v, 0, t, &pos, name, err);
}

static int add_output(cl_client_response *r, const cJSON *v, const char *name, size_t cap, cl_err *err)
{
    if (r->n_outputs >= cap)
        return cl_err_set(err, CL_E_FORMAT, "too many outputs");
    for (size_t k = 0; k < r->n_outputs; k++)
        if (strcmp(r->outputs[k].name, name) == 0)
            return cl_err_set(err, CL_E_FORMAT, "output '%s' appears twice", name);
    if (json_tensor(v, name, &r->outputs[r->n_outputs], err) != 0) {
        cl_serve_tensor_clear(&r->outputs[r->n_outputs]);
        return -1;
    }
    r->n_outputs++;
    return 0;
}

/* The JSON of a 200 answer; NULL with err set for an HTTP error status (its {"error": ...} message)
 * or a body that is not JSON. *code is INTERNAL until the caller has read the answer. */
static cJSON *ok_json(const char *body, size_t len, int http_status, const char *what, cl_serve_code *code,
                      cl_err *err)
{
    if (http_status != 200) {
        http_error(body, len, http_status, code, err);
        return NULL;
    }
    if (code)
        *code = CL_SC_INTERNAL;
    cJSON *j = cJSON_ParseWithLength(body, len);
    if (!j)
        cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's %s is not JSON", what);
    return j;
}

int cl_client_json_predict_response(const char *body, size_t len, int http_status, cl_client_response *r,
                                    cl_serve_code *code, cl_err *err)
{
    memset(r, 0, sizeof *r);
    cJSON *j = ok_json(body, len, http_status, "answer", code, err);
    if (!j)
        return -1;
    int rc = -1;
    const cJSON *outs = cJSON_GetObjectItemCaseSensitive(j, "outputs");
    const cJSON *preds = cJSON_GetObjectItemCaseSensitive(j, "predictions");
    if (!cJSON_IsObject(j) || (!outs && !preds)) {
        cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's answer has neither \"outputs\" nor \"predictions\"");
        goto out;
    }
    if (outs && cJSON_IsObject(outs)) {
        size_t n = (size_t)cJSON_GetArraySize(outs);
        if (n && !(r->outputs = calloc(n, sizeof *r->outputs))) {
            cl_err_nomem(err);
            goto out;
        }
        for (const cJSON *e = outs->child; e; e = e->next)
            if (add_output(r, e, e->string ? e->string : "", n, err) != 0)
                goto out;
    } else if (outs) {
        if (!(r->outputs = calloc(1, sizeof *r->outputs))) {
            cl_err_nomem(err);
            goto out;
        }
        if (add_output(r, outs, "outputs", 1, err) != 0)
            goto out;
    } else if (cJSON_IsArray(preds) && cJSON_IsObject(preds->child)) {
        /* row format with named outputs: gather each name's values across rows */
        size_t n = (size_t)cJSON_GetArraySize(preds->child);
        if (n && !(r->outputs = calloc(n, sizeof *r->outputs))) {
            cl_err_nomem(err);
            goto out;
        }
        for (const cJSON *k = preds->child->child; k; k = k->next) {
            cJSON *col = cJSON_CreateArray();
            bool ok = col != NULL && k->string;
            for (const cJSON *row = preds->child; ok && row; row = row->next) {
                const cJSON *x = cJSON_GetObjectItemCaseSensitive(row, k->string);
                cJSON *dup = x ? cJSON_Duplicate(x, true) : NULL;
                ok = dup && cJSON_AddItemToArray(col, dup);
            }
            int arc = ok ? add_output(r, col, k->string, n, err) : -1;
            if (!ok)
                cl_err_set(err, CL_E_FORMAT, "INTERNAL: the rows of \"predictions\" do not have the same outputs");
            cJSON_Delete(col);
            if (arc != 0)
                goto out;
        }
    } else {
        if (!(r->outputs = calloc(1, sizeof *r->outputs))) {
            cl_err_nomem(err);
            goto out;
        }
        if (add_output(r, preds, "predictions", 1, err) != 0)
            goto out;
    }
    cl_client_sort_outputs(r);
    if (code)
        *code = CL_SC_OK;
    rc = 0;
out:
    if (rc != 0) {
        cl_client_response_clear(r);
        if (strncmp(err ? err->msg : "", "INTERNAL", 8) != 0)
            cl_err_prefix(err, "INTERNAL");
    }
    cJSON_Delete(j);
    return rc;
}

static cl_serve_dtype dtype_from_name(const char *s)
{
    static const struct {
        const char *name;
        int v;
    } t[] = {{"DT_FLOAT", 1}, {"DT_DOUBLE", 2}, {"DT_INT32", 3}, {"DT_UINT8", 4}, {"DT_INT16", 5}, {"DT_INT8", 6},
             {"DT_STRING", 7}, {"DT_INT64", 9}, {"DT_BOOL", 10}, {"DT_UINT16", 17}, {"DT_HALF", 19}};
    for (size_t i = 0; s && i < CL_ARRAY_LEN(t); i++)
        if (strcmp(s, t[i].name) == 0)
            return (cl_serve_dtype)t[i].v;
    return CL_SERVE_DT_INVALID;
}

static int64_t json_int(const cJSON *v)
{
    if (cJSON_IsNumber(v))
        return (int64_t)v->valuedouble;
    if (cJSON_IsString(v))
        return strtoll(v->valuestring, NULL, 10);
    return 0;
}

static int specs_from_json(const cJSON *obj, cl_serve_tensor_spec **out, size_t *n_out, cl_err *err)
{
    size_t n = cJSON_IsObject(obj) ? (size_t)cJSON_GetArraySize(obj) : 0;
    *out = n ? calloc(n, sizeof **out) : NULL;
    *n_out = 0;
    if (n && !*out)
        return cl_err_nomem(err);
    for (const cJSON *e = n ? obj->child : NULL; e; e = e->next) {
        cl_serve_tensor_spec *s = &(*out)[*n_out];
        if (!(s->name = strdup(e->string ? e->string : "")))
            return cl_err_nomem(err);
        (*n_out)++;
        const cJSON *dt = cJSON_GetObjectItemCaseSensitive(e, "dtype");
        s->dtype = dtype_from_name(cJSON_IsString(dt) ? dt->valuestring : NULL);
        const cJSON *sh = cJSON_GetObjectItemCaseSensitive(e, "tensor_shape");
        const cJSON *dims = cJSON_GetObjectItemCaseSensitive(sh, "dim");
        if (!sh || cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(sh, "unknown_rank"))) {
            s->ndim = -1;
            continue;
        }
        int nd = cJSON_IsArray(dims) ? cJSON_GetArraySize(dims) : 0;
        if (nd > CL_SERVE_MAX_DIMS)
            return cl_err_set(err, CL_E_FORMAT, "'%s' has %d dimensions (at most %d supported)", s->name, nd,
                              CL_SERVE_MAX_DIMS);
        s->ndim = nd;
        int d = 0;
        for (const cJSON *x = nd ? dims->child : NULL; x; x = x->next)
            s->dims[d++] = json_int(cJSON_GetObjectItemCaseSensitive(x, "size"));
    }
    return 0;
}

int cl_client_json_metadata_response(const char *body, size_t len, int http_status, cl_client_metadata *md,
                                     cl_serve_code *code, cl_err *err)
{
    memset(md, 0, sizeof *md);
    cJSON *j = ok_json(body, len, http_status, "metadata", code, err);
    if (!j)
        return -1;
    int rc = -1;
    const cJSON *spec = cJSON_GetObjectItemCaseSensitive(j, "model_spec");
    const cJSON *name = cJSON_GetObjectItemCaseSensitive(spec, "name");
    md->model = strdup(cJSON_IsString(name) ? name->valuestring : "");
    md->version = json_int(cJSON_GetObjectItemCaseSensitive(spec, "version"));
    const cJSON *sigs = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(j, "metadata"), "signature_def"),
        "signature_def");
    const cJSON *pick = cJSON_GetObjectItemCaseSensitive(sigs, "serving_default");
    if (!pick && cJSON_IsObject(sigs) && cJSON_GetArraySize(sigs) == 1)
        pick = sigs->child;
    if (!cJSON_IsObject(pick)) {
        cl_err_set(err, CL_E_FORMAT, "INTERNAL: the metadata has no signature 'serving_default'");
        goto out;
    }
    const cJSON *mn = cJSON_GetObjectItemCaseSensitive(pick, "method_name");
    md->signature = strdup(pick->string ? pick->string : "");
    md->method_name = strdup(cJSON_IsString(mn) ? mn->valuestring : "");
    if (!md->model || !md->signature || !md->method_name) {
        cl_err_nomem(err);
        goto out;
    }
    if (specs_from_json(cJSON_GetObjectItemCaseSensitive(pick, "inputs"), &md->inputs, &md->n_inputs, err) != 0 ||
        specs_from_json(cJSON_GetObjectItemCaseSensitive(pick, "outputs"), &md->outputs, &md->n_outputs, err) != 0)
        goto out;
    cl_client_sort_specs(md->inputs, md->n_inputs);
    cl_client_sort_specs(md->outputs, md->n_outputs);
    if (code)
        *code = CL_SC_OK;
    rc = 0;
out:
    if (rc != 0)
        cl_client_metadata_clear(md);
    cJSON_Delete(j);
    return rc;
}

int cl_client_json_status_response(const char *body, size_t len, int http_status, cl_client_version_status **out,
                                   size_t *n, cl_serve_code *code, cl_err *err)
{
    *out = NULL;
    *n = 0;
    if (http_status != 200)
        return http_error(body, len, http_status, code, err);
    if (code)
        *code = CL_SC_INTERNAL;
    cJSON *j = cJSON_ParseWithLength(body, len);
    const cJSON *arr = cJSON_GetObjectItemCaseSensitive(j, "model_version_status");
    if (!cJSON_IsArray(arr)) {
        cJSON_Delete(j);
        return cl_err_set(err, CL_E_FORMAT, "INTERNAL: the server's status has no model_version_status");
    }
    size_t cnt = (size_t)cJSON_GetArraySize(arr);
    if (cnt && !(*out = calloc(cnt, sizeof **out))) {
        cJSON_Delete(j);
        return cl_err_nomem(err);
    }
    for (const cJSON *e = arr->child; e; e = e->next) {
        cl_client_version_status *s = &(*out)[(*n)++];
        s->version = json_int(cJSON_GetObjectItemCaseSensitive(e, "version"));
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(e, "state");
        snprintf(s->state, sizeof s->state, "%s", cJSON_IsString(st) ? st->valuestring : "UNKNOWN");
        const cJSON *status = cJSON_GetObjectItemCaseSensitive(e, "status");
        const cJSON *ec = cJSON_GetObjectItemCaseSensitive(status, "error_code");
        const cJSON *em = cJSON_GetObjectItemCaseSensitive(status, "error_message");
        s->code = CL_SC_OK;
        if (cJSON_IsString(ec))
            for (int c = 0; c <= 16; c++)
                if (strcmp(ec->valuestring, cl_serve_code_name((cl_serve_code)c)) == 0)
                    s->code = (cl_serve_code)c;
        snprintf(s->message, sizeof s->message, "%s", cJSON_IsString(em) ? em->valuestring : "");
    }
    if (code)
        *code = CL_SC_OK;
    cJSON_Delete(j);
    return 0;
}

/* ---------------------------------------------------------------- calls */

int cl_client_rest_predict(cl_client_conn *c, const cl_client_request *req, cl_client_response *resp, cl_err *err)
{
    char path[512];
    if (model_path(path, sizeof path, req->model, req->version, ":predict", err) != 0)
        return -1;
    size_t blen = 0;
    char *body = predict_body(req, &blen);
    if (!body) {
        c->last_code = CL_SC_INTERNAL;
        return cl_err_set(err, CL_E_NOMEM, "out of memory writing the request");
    }
    int st = 0;
    char *rb = NULL;
    size_t rl = 0;
    int rc = http_call(c, "POST", path, body, blen, &st, &rb, &rl, err);
    free(body);
    if (rc != 0)
        return -1;
    rc = cl_client_json_predict_response(rb, rl, st, resp, &c->last_code, err);
    free(rb);
    return rc;
}

int cl_client_rest_metadata(cl_client_conn *c, const char *model, int64_t version, cl_client_metadata *md,
                            cl_err *err)
{
    char path[512];
    if (model_path(path, sizeof path, model, version, "/metadata", err) != 0)
        return -1;
    int st = 0;
    char *rb = NULL;
    size_t rl = 0;
    if (http_call(c, "GET", path, NULL, 0, &st, &rb, &rl, err) != 0)
        return -1;
    int rc = cl_client_json_metadata_response(rb, rl, st, md, &c->last_code, err);
    free(rb);
    return rc;
}

int cl_client_rest_status(cl_client_conn *c, const char *model, int64_t version, cl_client_version_status **out,
                          size_t *n, cl_err *err)
{
    char path[512];
    if (model_path(path, sizeof path, model, version, "", err) != 0)
        return -1;
    int st = 0;
    char *rb = NULL;
    size_t rl = 0;
    if (http_call(c, "GET", path, NULL, 0, &st, &rb, &rl, err) != 0)
        return -1;
    int rc = cl_client_json_status_response(rb, rl, st, out, n, &c->last_code, err);
    free(rb);
    return rc;
}
