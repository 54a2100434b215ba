/* sslcfg.c — TF Serving's --ssl_config_file: tensorflow.serving.SSLConfig in protobuf text format,
 * parsed into cl_serve_ssl_config (private key in secure memory), or the same built from PEM
 * files. The text is read by the common text-format reader (textpb.h) into the generated
 * SSLConfig, every string of it in secure memory; a field given twice is refused. Thread-safe (no
 * shared state). */
#include "cloister/serve.h"
#include "cloister/textpb.h"

#include <stdlib.h>
#include <string.h>

#include "tensorflow_serving/config/ssl_config.pb-c.h"

#define SSL_CFG_MAX (1u << 20)

/* The reader's allocator: secure memory, its error kept for the caller. */
static void *sec_alloc(void *data, size_t n) { return cl_secmem_alloc(n, data); }
static void sec_free(void *data, void *p)
{
    (void)data;
    cl_secmem_free(p);
}

static char *dup_plain(const char *s, cl_err *err)
{
    char *d = strdup(s);
    if (!d)
        cl_err_nomem(err);
    return d;
}

int cl_serve_ssl_config_parse(const char *text, size_t len, cl_serve_ssl_config *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    cl_err alloc_err = {0};
    ProtobufCAllocator sec = {sec_alloc, sec_free, &alloc_err};
    /* every string (and the reader's scratch copy of it) lives in secure memory: one is the key */
    cl_textpb_options o = {.flags = CL_TEXTPB_FORBID_OVERWRITE | CL_TEXTPB_SECRET, .max_len = SSL_CFG_MAX, .allocator = &sec};
    ProtobufCMessage *m = NULL;
    if (cl_textpb_parse(text, len, &tensorflow__serving__sslconfig__descriptor, &o, &m, err) != 0) {
        if (alloc_err.code != CL_OK && err && err->code == CL_E_NOMEM)
            *err = alloc_err;
        return -1;
    }
    Tensorflow__Serving__SSLConfig *c = (Tensorflow__Serving__SSLConfig *)m;
    int rc = -1;
    if (!*c->server_key || !*c->server_cert) {
        cl_err_set(err, CL_E_FORMAT, "SSL config needs both server_key and server_cert");
        goto out;
    }
    if (c->client_verify && !*c->custom_ca) {
        cl_err_set(err, CL_E_FORMAT, "SSL config has client_verify: true but no custom_ca to verify clients "
                   "against");
        goto out;
    }
    /* the key stays in its secure block; the certificates are public */
    out->server_key = c->server_key;
    c->server_key = (char *)protobuf_c_empty_string;
    if (!(out->server_cert = dup_plain(c->server_cert, err)) ||
        (*c->custom_ca && !(out->custom_ca = dup_plain(c->custom_ca, err))))
        goto out;
    out->client_verify = c->client_verify;
    rc = 0;
out:
    cl_textpb_free(m, &o);
    if (rc != 0)
        cl_serve_ssl_config_clear(out);
    return rc;
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
