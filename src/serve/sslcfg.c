/* sslcfg.c — TF Serving's --ssl_config_file: tensorflow.serving.SSLConfig in protobuf text format,
 * parsed into cl_serve_ssl_config (private key in secure memory), or the same built from PEM
 * files. A small hand-written text-format reader for exactly this message: scalar fields,
 * C-escaped string literals (adjacent literals are concatenated), booleans and '#' comments.
 * Thread-safe (no shared state). */
#include "cloister/serve.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

#define SSL_CFG_MAX (1u << 20)

typedef struct reader {
    const char *p, *end;
    int line;
} reader;

static void skip_space(reader *r)
{
    while (r->p < r->end) {
        if (*r->p == '\n') {
            r->line++;
            r->p++;
        } else if (isspace((unsigned char)*r->p)) {
            r->p++;
        } else if (*r->p == '#') {
            while (r->p < r->end && *r->p != '\n')
                r->p++;
        } else {
            break;
        }
    }
}

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Reads one or more adjacent quoted literals into out (capacity cap, NUL-terminated). */
static int read_string(reader *r, char *out, size_t cap, size_t *len, cl_err *err)
{
    size_t n = 0;
    bool any = false;
    for (;;) {
        skip_space(r);
        if (r->p >= r->end || (*r->p != '"' && *r->p != '\''))
            break;
        char q = *r->p++;
        any = true;
        for (;;) {
            if (r->p >= r->end || *r->p == '\n')
                return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", r->line);
            char c = *r->p++;
            if (c == q)
                break;
            if (c == '\\') {
                if (r->p >= r->end)
                    return cl_err_set(err, CL_E_FORMAT, "line %d: unterminated string", r->line);
                char e = *r->p++;
                switch (e) {
                case 'n': c = '\n'; break;
                case 't': c = '\t'; break;
                case 'r': c = '\r'; break;
                case 'a': c = '\a'; break;
                case 'b': c = '\b'; break;
                case 'f': c = '\f'; break;
                case 'v': c = '\v'; break;
                case '\\': case '\'': case '"': case '?': c = e; break;
                case 'x': {
                    int v = 0, k = 0;
                    while (k < 2 && r->p < r->end && hexval(*r->p) >= 0)
                        v = v * 16 + hexval(*r->p++), k++;
                    if (!k)
                        return cl_err_set(err, CL_E_FORMAT, "line %d: \\x without hex digits", r->line);
                    c = (char)v;
                    break;
                }
                default:
                    if (e >= '0' && e <= '7') {
                        int v = e - '0', k = 1;
                        while (k < 3 && r->p < r->end && *r->p >= '0' && *r->p <= '7')
                            v = v * 8 + (*r->p++ - '0'), k++;
                        if (v > 255)
                            return cl_err_set(err, CL_E_FORMAT, "line %d: octal escape above \\377", r->line);
                        c = (char)v;
                    } else {
                        return cl_err_set(err, CL_E_FORMAT, "line %d: unknown escape \\%c", r->line, e);
                    }
                }
            }
            if (c == '\0')
                return cl_err_set(err, CL_E_FORMAT, "line %d: NUL byte in a PEM string", r->line);
            if (n + 1 >= cap)
                return cl_err_set(err, CL_E_FORMAT, "line %d: string too long", r->line);
            out[n++] = c;
        }
    }
    if (!any)
        return cl_err_set(err, CL_E_FORMAT, "line %d: expected a quoted string", r->line);
    out[n] = '\0';
    *len = n;
    return 0;
}

int cl_serve_ssl_config_parse(const char *text, size_t len, cl_serve_ssl_config *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    if (len > SSL_CFG_MAX)
        return cl_err_set(err, CL_E_FORMAT, "SSL config is larger than %u bytes", SSL_CFG_MAX);
    reader r = {text, text + len, 1};
    bool seen_verify = false;
    /* Every string value is shorter than the whole text; the key buffer is secure memory. */
    size_t cap = len + 1;
    char *buf = cl_secmem_alloc(cap, err);
    if (!buf)
        return -1;
    for (;;) {
        skip_space(&r);
        if (r.p >= r.end)
            break;
        const char *f = r.p;
        while (r.p < r.end && (isalnum((unsigned char)*r.p) || *r.p == '_'))
            r.p++;
        size_t flen = (size_t)(r.p - f);
        if (!flen) {
            cl_err_set(err, CL_E_FORMAT, "line %d: expected a field name, found '%c'", r.line, *r.p);
            goto fail;
        }
        skip_space(&r);
        if (r.p >= r.end || *r.p != ':') {
            cl_err_set(err, CL_E_FORMAT, "line %d: expected ':' after '%.*s'", r.line, (int)flen, f);
            goto fail;
        }
        r.p++;
        char **dst = NULL;
        bool secret = false;
        if (flen == 10 && !memcmp(f, "server_key", 10))
            dst = &out->server_key, secret = true;
        else if (flen == 11 && !memcmp(f, "server_cert", 11))
            dst = &out->server_cert;
        else if (flen == 9 && !memcmp(f, "custom_ca", 9))
            dst = &out->custom_ca;
        else if (flen == 13 && !memcmp(f, "client_verify", 13)) {
            if (seen_verify) {
                cl_err_set(err, CL_E_FORMAT, "line %d: client_verify given twice", r.line);
                goto fail;
            }
            seen_verify = true;
            skip_space(&r);
            const char *v = r.p;
            while (r.p < r.end && isalnum((unsigned char)*r.p))
                r.p++;
            size_t vlen = (size_t)(r.p - v);
            if ((vlen == 4 && !memcmp(v, "true", 4)) || (vlen == 1 && *v == '1') || (vlen == 4 && !memcmp(v, "True", 4)))
                out->client_verify = true;
            else if ((vlen == 5 && !memcmp(v, "false", 5)) || (vlen == 1 && *v == '0') ||
                     (vlen == 5 && !memcmp(v, "False", 5)))
                out->client_verify = false;
            else {
                cl_err_set(err, CL_E_FORMAT, "line %d: client_verify must be true or false", r.line);
                goto fail;
            }
            continue;
        } else {
            cl_err_set(err, CL_E_FORMAT, "line %d: unknown field '%.*s' (SSLConfig has server_key, server_cert, "
                       "custom_ca, client_verify)", r.line, (int)flen, f);
            goto fail;
        }
        if (*dst) {
            cl_err_set(err, CL_E_FORMAT, "line %d: field '%.*s' given twice", r.line, (int)flen, f);
            goto fail;
        }
        size_t slen = 0;
        if (read_string(&r, buf, cap, &slen, err) != 0)
            goto fail;
        if (secret) {
            if (!(*dst = cl_secmem_alloc(slen + 1, err)))
                goto fail;
        } else if (!(*dst = malloc(slen + 1))) {
            cl_err_nomem(err);
            goto fail;
        }
        memcpy(*dst, buf, slen + 1);
        cl_memzero(buf, slen);
        /* optional separator */
        skip_space(&r);
        if (r.p < r.end && (*r.p == ';' || *r.p == ','))
            r.p++;
    }
    cl_secmem_free(buf);
    buf = NULL;
    if (!out->server_key || !*out->server_key || !out->server_cert || !*out->server_cert) {
        cl_err_set(err, CL_E_FORMAT, "SSL config needs both server_key and server_cert");
        goto fail;
    }
    if (out->client_verify && (!out->custom_ca || !*out->custom_ca)) {
        cl_err_set(err, CL_E_FORMAT, "SSL config has client_verify: true but no custom_ca to verify clients "
                   "against");
        goto fail;
    }
    return 0;
fail:
    cl_secmem_free(buf);
    cl_serve_ssl_config_clear(out);
    return -1;
}

int cl_serve_ssl_config_load(const char *path, cl_serve_ssl_config *out, cl_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    memset(out, 0, sizeof *out);
    /* it holds the private key: read into secure memory */
    if (cl_file_read_secure(path, SSL_CFG_MAX, &data, &len, err) != 0)
        return cl_err_prefix(err, "cannot read SSL config");
    int rc = cl_serve_ssl_config_parse((const char *)data, len, out, err);
    cl_secmem_free(data);
    if (rc != 0)
        cl_err_prefix(err, "%s", path);
    return rc;
}

/* A PEM file; a private key is read straight into secure memory. */
static char *read_pem(const char *path, bool secret, cl_err *err)
{
    uint8_t *data = NULL;
    size_t len = 0;
    if ((secret ? cl_file_read_secure : cl_file_read)(path, SSL_CFG_MAX, &data, &len, err) != 0)
        return NULL;
    return (char *)data; /* NUL-terminated */
}

int cl_serve_ssl_config_from_files(const char *cert_path, const char *key_path, const char *ca_path,
                                   bool client_verify, cl_serve_ssl_config *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    if (client_verify && !ca_path)
        return cl_err_set(err, CL_E_INVALID, "client verification needs a CA file to verify clients against");
    if (!(out->server_cert = read_pem(cert_path, false, err)) || !(out->server_key = read_pem(key_path, true, err)) ||
        (ca_path && !(out->custom_ca = read_pem(ca_path, false, err)))) {
        cl_serve_ssl_config_clear(out);
        return -1;
    }
    out->client_verify = client_verify;
    return 0;
}

void cl_serve_ssl_config_clear(cl_serve_ssl_config *c)
{
    if (!c)
        return;
    cl_secmem_free(c->server_key);
    free(c->server_cert);
    free(c->custom_ca);
    memset(c, 0, sizeof *c);
}
