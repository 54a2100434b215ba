/* client.c — the provisioning client: makes the TLS 1.3 connection to a key server (server
 * certificate checked against a CA file and the server's name), presents the caller's RA-TLS
 * identity, asks for named secrets (native protocol) or the one secret_prov secret (Gramine's v1
 * protocol), and returns them in secure memory. Reads the key server's answer, its denial frame (the
 * reason code turned into a message a user can act on) included. Retries other servers/rounds with
 * exponential backoff on network and TLS errors; a denial is final. Every wait (connect, TLS I/O on a
 * non-blocking socket, backoff) ends when the options' stop token is raised. */
#include "ks_internal.h"

#include <errno.h>
#include <limits.h>
#include <poll.h>
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

/* One connection's I/O: the socket is non-blocking and every wait goes through cl_net_wait, so that it
 * ends at the I/O timeout or as soon as the stop token is raised. */
typedef struct cio {
    SSL *ssl;
    int fd;
    int timeout_ms;
    const cl_stop *stop;
    bool stopped, timed_out;
    int ssl_error; /* SSL_get_error of the last failed call; 0 at a clean end of stream */
} cio;

/* After an SSL call returned r <= 0: true when the socket is ready for it to be called again. */
static bool cio_again(cio *io, int r)
{
    int e = SSL_get_error(io->ssl, r);
    io->ssl_error = e == SSL_ERROR_ZERO_RETURN ? 0 : e;
    short ev = e == SSL_ERROR_WANT_READ ? POLLIN : e == SSL_ERROR_WANT_WRITE ? POLLOUT : 0;
    if (!ev)
        return false;
    int w = cl_net_wait(io->fd, ev, io->timeout_ms, io->stop);
    if (w > 0)
        return true;
    if (w == 0)
        io->timed_out = true;
    else
        io->stopped = cl_stop_raised(io->stop);
    return false;
}

static int cio_connect(cio *io)
{
    for (;;) {
        int r = SSL_connect(io->ssl);
        if (r == 1)
            return 0;
        if (!cio_again(io, r))
            return -1;
    }
}

static int cio_write(cio *io, const void *buf, size_t n)
{
    while (n) {
        int r = SSL_write(io->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
        if (r > 0) {
            buf = (const uint8_t *)buf + r;
            n -= (size_t)r;
        } else if (!cio_again(io, r)) {
            return -1;
        }
    }
    return 0;
}

/* a ks_read_fn: all n bytes, or -1 */
static int cio_read(void *ctx, void *buf, size_t n)
{
    cio *io = ctx;
    while (n) {
        int r = SSL_read(io->ssl, buf, n > INT_MAX ? INT_MAX : (int)n);
        if (r > 0) {
            buf = (uint8_t *)buf + r;
            n -= (size_t)r;
        } else if (!cio_again(io, r)) {
            return -1;
        }
    }
    return 0;
}

/* After a failed write or read: did the server send an alert (it refused our certificate in the
 * handshake: key servers before the denial frame, or a client without a certificate)? */
static bool peer_refused(cio *io, char *why, size_t size)
{
    unsigned long e = ERR_peek_error();
    if (!(ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) && !io->stopped) {
        /* the alert may still be waiting to be read */
        uint8_t b;
        ERR_clear_error();
        cio_read(io, &b, 1);
        e = ERR_peek_error();
    }
    if (ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET) {
        ERR_error_string_n(e, why, size);
        ERR_clear_error();
        return true;
    }
    return false;
}

/* What a refused client may do about each reason code (the key server's audit log has the details). */
static const char *deny_hint(unsigned code)
{
    switch (code) {
    case CL_DENY_EVIDENCE_INVALID: return "this server's attestation evidence did not verify (is its quoting key or "
                                          "platform trusted by the key server?)";
    case CL_DENY_EVIDENCE_TYPE: return "no identity of the policy accepts this kind of evidence (--evidence)";
    case CL_DENY_MEASUREMENT: return "this server's measurement is not one the policy lists (another build or "
                                     "signer?)";
    case CL_DENY_SVN: return "this server's security version is below the policy's minimum";
    case CL_DENY_DEBUG: return "this server runs in debug mode, which the policy does not allow";
    case CL_DENY_TCB_STATUS: return "this platform's TCB status is not one the policy accepts (update its "
                                    "microcode/firmware, or the policy's tcb_statuses)";
    case CL_DENY_COLLATERAL: return "the key server could not check the evidence: its DCAP collateral is missing or "
                                    "out of date";
    case CL_DENY_POLICY_EMPTY: return "the key server's policy allows nothing (none loaded, or an invalid one)";
    default: return NULL;
    }
}

static int denial(cl_err *err, const char *server, unsigned code)
{
    const char *name = cl_policy_deny_name(code), *hint = deny_hint(code);
    char unknown[32];
    if (!name) {
        snprintf(unknown, sizeof unknown, "code %u", code);
        name = unknown;
    }
    bool evidence = code == CL_DENY_EVIDENCE_INVALID || code == CL_DENY_COLLATERAL;
    return cl_err_set(err, CL_E_DENIED, "%s: the key server%s this server's evidence (reason: %s%s%s); its audit log "
                      "says more", server, evidence ? " could not verify" : "'s policy did not accept", name,
                      hint ? ": " : "", hint ? hint : "");
}

int ks_read_native_response(const uint8_t head[KS_RESPONSE_HEAD], ks_read_fn rd, void *ctx, const char *server,
                            const char *const *names, size_t n_names, cl_provision_result *res, cl_err *err)
{
    if (memcmp(head, CL_KS_MAGIC, 6) != 0)
        return cl_err_set(err, CL_E_FORMAT, "%s: not a cloister key server response", server);
    if (head[6] == CL_KS_STATUS_DENIED)
        return denial(err, server, cl_ks_get16(head + 7));
    if (head[6] == CL_KS_STATUS_BUSY) /* its locked-memory budget is held by other releases: worth another round */
        return cl_err_set(err, CL_E_IO, "%s is busy (its locked memory for releases is in use)", server);
    if (head[6] != CL_KS_STATUS_OK)
        return cl_err_set(err, CL_E_INVALID, "%s rejected the request as malformed", server);
    size_t count = cl_ks_get16(head + 7);
    if (count != n_names)
        return cl_err_set(err, CL_E_FORMAT, "%s answered %zu secret%s for %zu asked", server, count,
                          count == 1 ? "" : "s", n_names);
    if (!(res->secrets = calloc(count ? count : 1, sizeof(cl_secret))))
        return cl_err_nomem(err);
    res->count = count;
    size_t denied = 0;
    char denied_names[256] = "";
    for (size_t i = 0; i < count; i++) {
        cl_secret *s = &res->secrets[i];
        uint8_t n, meta[5];
        if (rd(ctx, &n, 1) != 0 || n == 0 || n > CL_POLICY_MAX_SECRET_NAME || rd(ctx, s->name, n) != 0 ||
            rd(ctx, meta, 5) != 0)
            return cl_err_set(err, CL_E_FORMAT, "%s: truncated response", server);
        s->name[n] = 0;
        if (strcmp(s->name, names[i]) != 0)
            return cl_err_set(err, CL_E_FORMAT, "%s answered '%s' where '%s' was asked", server, s->name, names[i]);
        uint32_t len = cl_ks_get32(meta + 1);
        s->granted = meta[0] == 0;
        if (!s->granted) {
            denied++;
            size_t u = strlen(denied_names);
            snprintf(denied_names + u, sizeof denied_names - u, "%s'%s'", u ? ", " : "", s->name);
            continue;
        }
        if (len > CL_KS_SECRET_MAX)
            return cl_err_set(err, CL_E_FORMAT, "%s: a secret of %u bytes is too large", server, len);
        if (!(s->value = cl_secmem_alloc(len ? len : 1, err)))
            return -1;
        if (rd(ctx, s->value, len) != 0)
            return cl_err_set(err, CL_E_FORMAT, "%s: truncated secret", server);
        s->len = len;
    }
    if (denied) {
        cl_err_set(err, CL_E_DENIED, "%s denied %zu of %zu secret%s: %s (reason: secret_not_granted: the policy does "
                   "not grant %s to this server's identity)", server, denied, count, count == 1 ? "" : "s",
                   denied_names,
                   denied == 1 ? "it" : "them");
        return 1;
    }
    return 0;
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
    if (cl_net_split_hostport(server, host, sizeof host, &port, CL_KS_DEFAULT_PORT, false, err) != 0)
        return -1;
    int timeout = o->timeout_ms > 0 ? o->timeout_ms : 10000;
    int sys_errno = 0;
    cl_err cerr = {0};
    int fd = cl_net_connect_stop(host, port, timeout, o->stop, &sys_errno, &cerr);
    if (fd < 0) {
        if (sys_errno == 0) /* the name did not resolve */
            *why_failed = cerr.code == CL_E_INVALID ? TRY_NO_NAME : TRY_NAME_AGAIN;
        if (err)
            *err = cerr;
        return -1;
    }
    int rc = -1;
    uint8_t *req = NULL;
    SSL *ssl = SSL_new(ctx);
    cio io = {.ssl = ssl, .fd = fd, .timeout_ms = timeout, .stop = o->stop};
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
    if (cio_connect(&io) != 0) {
        long vr = SSL_get_verify_result(ssl);
        if (io.stopped)
            cl_err_set(err, CL_E_IO, "%s: stopped during the TLS handshake (shutdown)", server);
        else if (io.timed_out)
            cl_err_set(err, CL_E_IO, "%s: the TLS handshake timed out after %d ms", server, timeout);
        else if (vr != X509_V_OK)
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
        cl_err_nomem(err);
        goto out;
    }
    char why[160];
    if (cio_write(&io, req, req_len) != 0) {
        if (io.stopped)
            cl_err_set(err, CL_E_IO, "%s: stopped while sending the request (shutdown)", server);
        else if (peer_refused(&io, why, sizeof why))
            cl_err_set(err, CL_E_DENIED, "%s refused this client's attestation in the TLS handshake (%s); its audit "
                       "log says why", server, why);
        else
            cl_err_ssl(err, CL_E_IO, "%s: cannot send the request", server);
        goto out;
    }
    /* TLS 1.3: a server that refuses us in the handshake says so (an alert) when we first read; one that
     * completes it sends the denial frame instead */
    uint8_t hdr[sizeof CL_SECRET_PROV_RESPONSE + 4];
    size_t first = o->secret_prov ? sizeof hdr : KS_RESPONSE_HEAD;
    if (cio_read(&io, hdr, first) != 0) {
        if (io.stopped)
            cl_err_set(err, CL_E_IO, "%s: stopped while waiting for the response (shutdown)", server);
        else if (io.timed_out)
            cl_err_set(err, CL_E_IO, "%s: no response within %d ms", server, timeout);
        else if (peer_refused(&io, why, sizeof why))
            cl_err_set(err, CL_E_DENIED, "%s refused this client's attestation in the TLS handshake (%s); its audit "
                       "log says why", server, why);
        else if (io.ssl_error == 0 && o->secret_prov)
            cl_err_set(err, CL_E_DENIED, "%s closed the connection without a secret (secret_prov denial)", server);
        else
            cl_err_ssl(err, CL_E_IO, "%s: no response", server);
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
        if (cio_read(&io, res->secrets[0].value, len) != 0) {
            cl_err_set(err, CL_E_IO, "%s: the secret is truncated", server);
            goto out;
        }
        res->secrets[0].len = len;
        res->secrets[0].granted = true;
        rc = 0;
        goto out;
    }
    int pr = ks_read_native_response(hdr, cio_read, &io, server, o->names, o->name_count, res, err);
    if (pr < 0 && io.stopped)
        cl_err_set(err, CL_E_IO, "%s: stopped while reading the response (shutdown)", server);
    if (pr == 1) { /* some secrets denied: keep the partial result */
        snprintf(res->server, sizeof res->server, "%s", server);
        SSL_shutdown(ssl);
        ERR_clear_error();
        SSL_free(ssl);
        close(fd);
        free(req);
        return -1;
    }
    rc = pr;
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
        if (cl_net_split_hostport(o->servers[i], host, sizeof host, &port, CL_KS_DEFAULT_PORT, false, err) != 0)
            return NULL;
    }
    struct sigaction sa;
    if (sigaction(SIGPIPE, NULL, &sa) == 0 && sa.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
    cl_provision_client *c = calloc(1, sizeof(*c));
    if (!c) {
        cl_err_nomem(err);
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
        return cl_err_nomem(err);
    }
    size_t n_dead = 0;
    int rc = -1, round = 0;
    bool stopped = false;
    for (; round < attempts && rc != 0 && n_dead < o->server_count && !stopped; round++) {
        if (round > 0) {
            uint8_t r = 0;
            RAND_bytes(&r, 1);
            int delay = cl_provision_backoff_ms(backoff, round, r);
            CL_WARN("provision", "round %d of %d failed (%s); retrying in %d ms", round, attempts, last.msg, delay);
            if ((stopped = cl_stop_sleep(o->stop, delay)))
                break;
        }
        for (size_t i = 0; i < o->server_count && rc != 0; i++) {
            if ((stopped = cl_stop_raised(o->stop)))
                break;
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
    if (stopped || cl_stop_raised(o->stop)) {
        cl_err_set(err, CL_E_IO, "stopped while waiting for the key server (shutdown)%s%s",
                   last.msg[0] ? "; the last attempt: " : "", last.msg);
        return -1;
    }
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
