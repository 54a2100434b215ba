/* client.c — the provisioning client: makes the TLS 1.3 connection to a key server (server
 * certificate checked against a CA file and the server's name), presents the caller's RA-TLS
 * identity, asks for named secrets (native protocol) or the one secret_prov secret (Gramine's v1
 * protocol), and returns them in secure memory. Retries other servers/rounds with exponential
 * backoff on network and TLS errors; a denial is final. */
#include "ks_internal.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

void cl_provision_result_free(cl_provision_result *res)
{
    if (!res)
        return;
    for (size_t i = 0; i < res->count; i++)
        cl_secmem_free(res->secrets[i].value);
    free(res->secrets);
    memset(res, 0, sizeof(*res));
}

/* After a failed write or read: did the server send an alert (it refused our certificate)? */
static bool peer_refused(SSL *ssl, char *why, size_t size)
{
    unsigned long e = ERR_peek_error();
    if (!(ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)) {
        /* the alert may still be waiting to be read */
        uint8_t b;
        ERR_clear_error();
        SSL_read(ssl, &b, 1);
        e = ERR_peek_error();
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
        ERR_error_string_n(e, why, size);
        ERR_clear_error();
        return true;
    }
    return false;
}

/* Why an attempt at one server failed, for the retry loop. */
typedef enum {
    TRY_RETRY,      /* network, TLS or a busy server: worth another round */
    TRY_NO_NAME,    /* its name does not exist (EAI_NONAME): never retried */
    TRY_NAME_AGAIN, /* the resolver could not answer (EAI_AGAIN): retried for CL_KS_RESOLVE_RETRY_MS */
} try_failure;

/* One attempt against one server. Returns 0, or -1 with err (CL_E_DENIED: do not retry) and *why. */
static int try_server(SSL_CTX *ctx, const char *server, const cl_provision_options *o, cl_provision_result *res,
                      try_failure *why_failed, cl_err *err)
{
    char host[256];
    int port;
    *why_failed = TRY_RETRY;
    if (cl_keyserver_split_hostport(server, host, sizeof host, &port, CL_KS_DEFAULT_PORT, err) != 0)
        return -1;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    int sys_errno = 0;
    cl_err cerr = {0};
    int fd = cl_net_connect(host, port, timeout, &sys_errno, &cerr);
    if (fd < 0) {
        if (sys_errno == 0) /* the name did not resolve */
            *why_failed = cerr.code == CL_E_INVALID ? TRY_NO_NAME : TRY_NAME_AGAIN;
        if (err)
            *err = cerr;
        return -1;
    }
    int rc = -1, se = 0;
    uint8_t *req = NULL;
    SSL *ssl = SSL_new(ctx);
    const char *name = o->server_name ? o->server_name : host;
    if (!ssl || !SSL_set_fd(ssl, fd)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot create a TLS connection");
        goto out;
    }
    if (cl_net_is_ip(name)) {
        X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl), name);
    } else {
        SSL_set_tlsext_host_name(ssl, name);
        SSL_set1_host(ssl, name);
    }
    if (SSL_connect(ssl) != 1) {
        long vr = SSL_get_verify_result(ssl);
        if (vr != X509_V_OK)
            cl_err_set(err, CL_E_AUTH, "%s: server certificate rejected: %s (is --ca right?)", server,
                       X509_verify_cert_error_string(vr));
        else
            cl_err_ssl(err, CL_E_IO, "%s: TLS handshake failed", server);
        goto out;
    }
    /* request */
    size_t req_len;
    if (o->secret_prov) {
        req_len = sizeof CL_SECRET_PROV_REQUEST;
        req = malloc(req_len);
        if (req)
            memcpy(req, CL_SECRET_PROV_REQUEST, req_len);
    } else {
        req_len = 6 + 2;
        for (size_t i = 0; i < o->name_count; i++)
            req_len += 1 + strlen(o->names[i]);
        req = malloc(req_len);
        if (req) {
            memcpy(req, CL_KS_MAGIC, 6);
            cl_ks_put16(req + 6, (uint16_t)o->name_count);
            size_t off = 8;
            for (size_t i = 0; i < o->name_count; i++) {
                size_t n = strlen(o->names[i]);
                req[off++] = (uint8_t)n;
                memcpy(req + off, o->names[i], n);
                off += n;
            }
        }
    }
    if (!req) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto out;
    }
    char why[160];
    if (cl_ks_ssl_write_full(ssl, req, req_len) != 0) {
        if (peer_refused(ssl, why, sizeof why))
            cl_err_set(err, CL_E_DENIED, "%s refused this client's attestation (%s); its audit log says why",
                       server, why);
        else
            cl_err_ssl(err, CL_E_IO, "%s: cannot send the request", server);
        goto out;
    }
    /* TLS 1.3: a server that rejects our certificate says so (an alert) when we first read */
    uint8_t hdr[sizeof CL_SECRET_PROV_RESPONSE + 4];
    size_t first = o->secret_prov ? sizeof hdr : 9;
    if (cl_ks_ssl_read_full(ssl, hdr, first, &se) != 0) {
        if (peer_refused(ssl, why, sizeof why)) {
            cl_err_set(err, CL_E_DENIED, "%s refused this client's attestation (%s); its audit log says why",
                       server, why);
        } else if (se == 0 && o->secret_prov) {
            cl_err_set(err, CL_E_DENIED, "%s closed the connection without a secret (secret_prov denial)", server);
        } else {
            cl_err_ssl(err, CL_E_IO, "%s: no response", server);
        }
        goto out;
    }
    if (o->secret_prov) {
        if (memcmp(hdr, CL_SECRET_PROV_RESPONSE, sizeof CL_SECRET_PROV_RESPONSE) != 0) {
            cl_err_set(err, CL_E_FORMAT, "%s: not a secret_prov v1 response", server);
            goto out;
        }
        uint32_t len = cl_ks_get32(hdr + sizeof CL_SECRET_PROV_RESPONSE);
        if (len > CL_KS_SECRET_MAX) {
            cl_err_set(err, CL_E_FORMAT, "%s: secret of %u bytes is too large", server, len);
            goto out;
        }
        res->secrets = calloc(1, sizeof(cl_secret));
        if (!res->secrets || !(res->secrets[0].value = cl_secmem_alloc(len ? len : 1, err)))
            goto out;
        res->count = 1;
        snprintf(res->secrets[0].name, sizeof res->secrets[0].name, "secret_prov");
        if (cl_ks_ssl_read_full(ssl, res->secrets[0].value, len, &se) != 0) {
            cl_err_set(err, CL_E_IO, "%s: the secret is truncated", server);
            goto out;
        }
        res->secrets[0].len = len;
        res->secrets[0].granted = true;
        rc = 0;
        goto out;
    }
    if (memcmp(hdr, CL_KS_MAGIC, 6) != 0) {
        cl_err_set(err, CL_E_FORMAT, "%s: not a cloister key server response", server);
        goto out;
    }
    if (hdr[6] == CL_KS_STATUS_BUSY) {
        /* its locked-memory budget is held by other releases: worth another round */
        cl_err_set(err, CL_E_IO, "%s is busy (its locked memory for releases is in use)", server);
        goto out;
    }
    if (hdr[6] != CL_KS_STATUS_OK) {
        cl_err_set(err, CL_E_INVALID, "%s rejected the request as malformed", server);
        goto out;
    }
    size_t count = cl_ks_get16(hdr + 7);
    if (count != o->name_count) {
        cl_err_set(err, CL_E_FORMAT, "%s answered %zu secrets for %zu asked", server, count, o->name_count);
        goto out;
    }
    res->secrets = calloc(count, sizeof(cl_secret));
    if (!res->secrets) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto out;
    }
    res->count = count;
    size_t denied = 0;
    char denied_names[256] = "";
    for (size_t i = 0; i < count; i++) {
        cl_secret *s = &res->secrets[i];
        uint8_t n, meta[5];
        if (cl_ks_ssl_read_full(ssl, &n, 1, &se) != 0 || n == 0 || n > CL_POLICY_MAX_SECRET_NAME ||
            cl_ks_ssl_read_full(ssl, s->name, n, &se) != 0 || cl_ks_ssl_read_full(ssl, meta, 5, &se) != 0) {
            cl_err_set(err, CL_E_FORMAT, "%s: truncated response", server);
            goto out;
        }
        s->name[n] = 0;
        if (strcmp(s->name, o->names[i]) != 0) {
            cl_err_set(err, CL_E_FORMAT, "%s answered '%s' where '%s' was asked", server, s->name, o->names[i]);
            goto out;
        }
        uint32_t len = cl_ks_get32(meta + 1);
        s->granted = meta[0] == 0;
        if (!s->granted) {
            denied++;
            size_t u = strlen(denied_names);
            snprintf(denied_names + u, sizeof denied_names - u, "%s'%s'", u ? ", " : "", s->name);
            continue;
        }
        if (len > CL_KS_SECRET_MAX || !(s->value = cl_secmem_alloc(len ? len : 1, err)))
            goto out;
        if (cl_ks_ssl_read_full(ssl, s->value, len, &se) != 0) {
            cl_err_set(err, CL_E_FORMAT, "%s: truncated secret", server);
            goto out;
        }
        s->len = len;
    }
    if (denied) {
        cl_err_set(err, CL_E_DENIED, "%s denied %zu of %zu secrets: %s", server, denied, count, denied_names);
        rc = -1;
        snprintf(res->server, sizeof res->server, "%s", server);
        SSL_shutdown(ssl);
        SSL_free(ssl);
        close(fd);
        free(req);
        return -1; /* keep the partial result */
    }
    rc = 0;
out:
    if (rc == 0) {
        snprintf(res->server, sizeof res->server, "%s", server);
        SSL_shutdown(ssl);
    } else {
        cl_provision_result_free(res);
    }
    ERR_clear_error();
    SSL_free(ssl);
    close(fd);
    free(req);
    return rc;
}

struct cl_provision_client {
    SSL_CTX *ctx;
    cl_provision_options o;
};

cl_provision_client *cl_provision_client_new(const cl_provision_options *o, cl_err *err)
{
    if (!o->identity || !o->ca_file || o->server_count == 0) {
        cl_err_set(err, CL_E_INVALID, "provisioning needs an RA-TLS identity, a CA file and a key server");
        return NULL;
    }
    if (!o->secret_prov && (o->name_count == 0 || o->name_count > CL_KS_MAX_NAMES)) {
        cl_err_set(err, CL_E_INVALID, "ask for 1 to %d secrets", CL_KS_MAX_NAMES);
        return NULL;
    }
    for (size_t i = 0; i < o->name_count; i++) {
        if (!cl_policy_secret_name_valid(o->names[i])) {
            cl_err_set(err, CL_E_INVALID, "'%s' is not a valid secret name", o->names[i]);
            return NULL;
        }
    }
    for (size_t i = 0; i < o->server_count; i++) {
        char host[256];
        int port;
        if (cl_keyserver_split_hostport(o->servers[i], host, sizeof host, &port, CL_KS_DEFAULT_PORT, err) != 0)
            return NULL;
    }
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    cl_provision_client *c = calloc(1, sizeof(*c));
    if (!c) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    c->o = *o;
    c->ctx = SSL_CTX_new(TLS_client_method());
    if (!c->ctx || !SSL_CTX_set_min_proto_version(c->ctx, TLS1_3_VERSION)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot create the TLS context");
        goto fail;
    }
    if (SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) != 1) {
        cl_err_ssl(err, CL_E_FORMAT, "cannot load CA file '%s'", o->ca_file);
        goto fail;
    }
    SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    if (cl_ratls_identity_use(o->identity, c->ctx, err) != 0)
        goto fail;
    return c;
fail:
    cl_provision_client_free(c);
    return NULL;
}

void cl_provision_client_free(cl_provision_client *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c);
}

/* The delay before round `round` (1, 2, ...): the first delay doubled each round up to the cap
 * (CL_KS_BACKOFF_CAP_MS, or the first delay when that is larger), then shortened by a random part of
 * up to half (jitter, so that many servers restarted together do not retry in step). */
int cl_provision_backoff_ms(int first_ms, int round, uint8_t random_byte)
{
    long cap = first_ms > CL_KS_BACKOFF_CAP_MS ? first_ms : CL_KS_BACKOFF_CAP_MS, d = first_ms;
    for (int i = 1; i < round && d < cap; i++)
        d *= 2;
    if (d > cap)
        d = cap;
    return (int)(d - d * random_byte / 512);
}

static uint64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

int cl_provision_client_fetch(cl_provision_client *c, cl_provision_result *res, cl_err *err)
{
    memset(res, 0, sizeof(*res));
    const cl_provision_options *o = &c->o;
    int attempts = o->attempts > 0 ? o->attempts : 5;
    int backoff = o->backoff_ms > 0 ? o->backoff_ms : 200;
    cl_err last = {0};
    /* per server: 0 in use; otherwise its name does not resolve (never asked again) */
    bool *dead = calloc(o->server_count, sizeof *dead);
    uint64_t *again_since = calloc(o->server_count, sizeof *again_since);
    if (!dead || !again_since) {
        free(dead);
        free(again_since);
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    }
    size_t n_dead = 0;
    int rc = -1, round = 0;
    for (; round < attempts && rc != 0 && n_dead < o->server_count; round++) {
        if (round > 0) {
            uint8_t r = 0;
            RAND_bytes(&r, 1);
            int delay = cl_provision_backoff_ms(backoff, round, r);
            CL_WARN("provision", "round %d of %d failed (%s); retrying in %d ms", round, attempts, last.msg, delay);
            struct timespec ts = {delay / 1000, (long)(delay % 1000) * 1000000L};
            nanosleep(&ts, NULL);
        }
        for (size_t i = 0; i < o->server_count && rc != 0; i++) {
            if (dead[i])
                continue;
            try_failure why = TRY_RETRY;
            rc = try_server(c->ctx, o->servers[i], o, res, &why, &last);
            if (rc == 0)
                break;
            if (last.code == CL_E_DENIED) {
                if (err)
                    *err = last;
                free(dead);
                free(again_since);
                return -1;
            }
            if (why == TRY_NAME_AGAIN) {
                uint64_t now = mono_ms();
                if (!again_since[i])
                    again_since[i] = now ? now : 1;
                else if (now - again_since[i] >= CL_KS_RESOLVE_RETRY_MS)
                    why = TRY_NO_NAME;
                if (why == TRY_NO_NAME)
                    cl_err_prefix(&last, "the resolver has not answered for %d s", CL_KS_RESOLVE_RETRY_MS / 1000);
            } else {
                again_since[i] = 0;
            }
            if (why == TRY_NO_NAME) {
                dead[i] = true;
                n_dead++;
                if (n_dead < o->server_count)
                    CL_WARN("provision", "key server %s is not asked again: %s", o->servers[i], last.msg);
            }
        }
    }
    free(dead);
    free(again_since);
    if (rc == 0)
        return 0;
    if (err)
        *err = last;
    if (n_dead == o->server_count)
        cl_err_prefix(err, "%s", o->server_count == 1 ? "the key server's name does not resolve"
                                                      : "no key server's name resolves");
    else
        cl_err_prefix(err, "no key server could be used after %d round%s", round, round == 1 ? "" : "s");
    return -1;
}

int cl_provision_fetch(const cl_provision_options *o, cl_provision_result *res, cl_err *err)
{
    memset(res, 0, sizeof(*res));
    cl_provision_client *c = cl_provision_client_new(o, err);
    if (!c)
        return -1;
    int rc = cl_provision_client_fetch(c, res, err);
    cl_provision_client_free(c);
    return rc;
}
