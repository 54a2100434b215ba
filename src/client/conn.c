/* conn.c — the client module's connections: option checks and the shared TLS context (CA or system
 * trust, client certificate, ALPN, server name check, or RA-TLS attestation against a policy in place
 * of the CA), TCP connect with a timeout, the TLS handshake with errors a user can act on, blocking
 * reads and writes with timeouts, reconnection after a transport failure, and the dispatch of calls
 * to the gRPC (grpc.c) or REST (rest.c) paths. */
#include "client_int.h"

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/err.h>
#include <openssl/x509v3.h>

#include "cloister/ratls.h"

#define WRITE_BUFFER (64 << 10) /* TLS bytes gathered per write syscall */

/* RA-TLS policy callback: the verified claims must match the client's policy. */
static int attest_policy(void *arg, SSL *ssl, const cl_attest_claims *claims, cl_err *err)
{
    (void)ssl;
    const cl_client *c = arg;
    cl_policy_decision d = {0};
    int rc = 0;
    if (cl_policy_evaluate(c->policy, claims, &d) != 0)
        rc = cl_err_set(err, CL_E_DENIED, "the server's attested identity does not match the policy: %s",
                        d.reason ? d.reason : "out of memory");
    cl_policy_decision_clear(&d);
    return rc;
}

/* OpenSSL writes to sockets with write(), so a server that closes first would kill the process with
 * SIGPIPE: ignore it (once, and only if nobody installed a handler), as the serve module does. */
static pthread_once_t sigpipe_once = PTHREAD_ONCE_INIT;
static void ignore_sigpipe(void)
{
    struct sigaction old;
    if (sigaction(SIGPIPE, NULL, &old) == 0 && old.sa_handler == SIG_DFL)
        signal(SIGPIPE, SIG_IGN);
}

cl_client *cl_client_new(const cl_client_options *o, cl_err *err)
{
    pthread_once(&sigpipe_once, ignore_sigpipe);
    char host[256];
    int port;
    if (cl_net_split_hostport(o->server, host, sizeof host, &port, -1, false, err) != 0)
        return NULL;
    if (o->plaintext && (o->ca_file || o->cert_file || o->attest_policy))
        return cl_err_set(err, CL_E_INVALID, "plaintext contradicts the TLS and attestation options"), NULL;
    if ((o->cert_file != NULL) != (o->key_file != NULL))
        return cl_err_set(err, CL_E_INVALID, "a client certificate needs its key, and a key its certificate "
                          "(--cert and --key go together)"), NULL;
    if (o->attest_policy && !o->verifier)
        return cl_err_set(err, CL_E_INVALID, "attestation needs a verifier"), NULL;
    cl_client *c = calloc(1, sizeof *c);
    if (!c)
        return cl_err_nomem(err), NULL;
    c->host = strdup(host);
    c->port = port;
    size_t alen = strlen(host) + 16;
    c->authority = malloc(alen);
    if (c->authority)
        snprintf(c->authority, alen, strchr(host, ':') ? "[%s]:%d" : "%s:%d", host, port);
    c->rest = o->rest;
    c->plaintext = o->plaintext;
    c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : CL_CLIENT_DEFAULT_TIMEOUT_MS;
    c->max_response = o->max_response_bytes ? o->max_response_bytes : CL_CLIENT_DEFAULT_MAX_RESPONSE;
    c->policy = o->attest_policy;
    c->verifier = o->verifier;
    if (!c->host || !c->authority) {
        cl_err_nomem(err);
        goto fail;
    }
    if (o->plaintext)
        return c;
    if (!o->attest_policy && !(c->server_name = strdup(o->server_name ? o->server_name : host))) {
        cl_err_nomem(err);
        goto fail;
    }
    if (!(c->ctx = SSL_CTX_new(TLS_client_method()))) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot create a TLS context");
        goto fail;
    }
    SSL_CTX_set_min_proto_version(c->ctx, TLS1_2_VERSION);
    SSL_CTX_set_options(c->ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION);
    static const unsigned char alpn_h2[] = "\x02h2", alpn_http[] = "\x08http/1.1";
    if (o->rest ? SSL_CTX_set_alpn_protos(c->ctx, alpn_http, sizeof alpn_http - 1)
                : SSL_CTX_set_alpn_protos(c->ctx, alpn_h2, sizeof alpn_h2 - 1)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot set ALPN");
        goto fail;
    }
    if (o->cert_file) {
        if (SSL_CTX_use_certificate_chain_file(c->ctx, o->cert_file) != 1) {
            cl_err_ssl(err, CL_E_FORMAT, "cannot use the client certificate %s (a PEM certificate is expected)",
                       o->cert_file);
            goto fail;
        }
        if (SSL_CTX_use_PrivateKey_file(c->ctx, o->key_file, SSL_FILETYPE_PEM) != 1) {
            cl_err_ssl(err, CL_E_FORMAT, "cannot use the client key %s (an unencrypted PEM key is expected)",
                       o->key_file);
            goto fail;
        }
        if (SSL_CTX_check_private_key(c->ctx) != 1) {
            cl_err_ssl(err, CL_E_KEY, "the client key %s does not belong to the certificate %s", o->key_file,
                       o->cert_file);
            goto fail;
        }
    }
    if (o->attest_policy) {
        cl_ratls_verify_ctx *v = calloc(1, sizeof *v);
        if (!v) {
            cl_err_nomem(err);
            goto fail;
        }
        v->verifier = o->verifier;
        v->policy = attest_policy;
        v->policy_arg = c;
        c->vctx = v;
        if (cl_ratls_ssl_ctx_require_peer(c->ctx, v, err) != 0)
            goto fail;
        if (o->ca_file)
            CL_WARN(CL_CLIENT_MOD, "with attestation the server certificate is checked by its evidence; the CA "
                                   "%s is not used", o->ca_file);
    } else {
        if (o->ca_file) {
            if (SSL_CTX_load_verify_locations(c->ctx, o->ca_file, NULL) != 1) {
                cl_err_ssl(err, CL_E_FORMAT, "cannot load the CA file %s (PEM certificates expected)", o->ca_file);
                goto fail;
            }
        } else if (SSL_CTX_set_default_verify_paths(c->ctx) != 1) {
            cl_err_ssl(err, CL_E_CRYPTO, "cannot load the system's trusted CAs (give --ca)");
            goto fail;
        }
        SSL_CTX_set_verify(c->ctx, SSL_VERIFY_PEER, NULL);
    }
    return c;
fail:
    cl_client_free(c);
    return NULL;
}

void cl_client_free(cl_client *c)
{
    if (!c)
        return;
    SSL_CTX_free(c->ctx);
    free(c->vctx);
    free(c->host);
    free(c->authority);
    free(c->server_name);
    free(c);
}

static int tcp_connect(const cl_client *c, cl_err *err)
{
    int last = 0;
    int fd = cl_net_connect(c->host, c->port, c->timeout_ms, &last, err);
    if (fd < 0 && last == ECONNREFUSED)
        return cl_err_set(err, CL_E_IO, "cannot connect to %s: connection refused (is the server running, and "
                          "is %d its %s port?)", c->authority, c->port, c->rest ? "REST" : "gRPC");
    if (fd < 0 && last)
        return cl_err_errno(err, CL_E_IO, last, "cannot connect to %s", c->authority);
    return fd;
}

/* An error from the TLS layer, with hints for the usual causes. */
int cl_client_tls_error(cl_client_conn *conn, const char *what, cl_err *err)
{
    unsigned long e = ERR_peek_error();
    char buf[256] = "";
    if (e)
        ERR_error_string_n(e, buf, sizeof buf);
    ERR_clear_error();
    int reason = e ? ERR_GET_REASON(e) : 0;
    if (e && ERR_GET_LIB(e) == ERR_LIB_SSL && reason >= SSL_AD_REASON_OFFSET) {
        int alert = reason - SSL_AD_REASON_OFFSET;
        const char *hint = "";
        if (alert == SSL_AD_CERTIFICATE_REQUIRED || alert == SSL_AD_HANDSHAKE_FAILURE)
            hint = conn->cl->ctx && SSL_CTX_get0_certificate(conn->cl->ctx)
                       ? " (the server did not accept the client certificate: is it issued by the CA the server "
                         "trusts?)"
                       : " (the server requires a client certificate: give --cert and --key)";
        else if (alert == SSL_AD_BAD_CERTIFICATE || alert == SSL_AD_UNKNOWN_CA || alert == SSL_AD_DECRYPT_ERROR ||
                 alert == SSL_AD_CERTIFICATE_UNKNOWN)
            hint = " (the server did not accept the client certificate: is it issued by the CA the server trusts?)";
        else if (alert == SSL_AD_NO_APPLICATION_PROTOCOL)
            hint = conn->cl->rest ? " (the server does not speak HTTP/1.1 here: is this its gRPC port? drop --rest)"
                                  : " (the server does not speak HTTP/2 here: is this its REST port? add --rest)";
        const char *name = alert == SSL_AD_CERTIFICATE_REQUIRED ? "certificate required"
                           : alert == SSL_AD_NO_APPLICATION_PROTOCOL ? "no application protocol"
                                                                     : SSL_alert_desc_string_long(alert);
        return cl_err_set(err, CL_E_DENIED, "%s: the server refused the TLS connection: %s%s", what, name, hint);
    }
    if (!e && errno == EAGAIN)
        return cl_err_set(err, CL_E_IO, "%s: no answer from %s within %d ms", what, conn->cl->authority,
                          conn->cl->timeout_ms);
    if (!e)
        return cl_err_set(err, CL_E_IO, "%s: the connection to %s was closed (is it a TLS port? --plaintext talks "
                          "to servers without TLS%s)", what, conn->cl->authority,
                          conn->cl->ctx && !SSL_CTX_get0_certificate(conn->cl->ctx)
                              ? "; a server that requires a client certificate needs --cert and --key"
                              : "");
    if (reason == SSL_R_WRONG_VERSION_NUMBER || reason == SSL_R_PACKET_LENGTH_TOO_LONG)
        return cl_err_set(err, CL_E_IO, "%s: %s does not speak TLS (%s)", what, conn->cl->authority, buf);
    return cl_err_set(err, CL_E_IO, "%s: TLS failed: %s", what, buf);
}

static int handshake(cl_client_conn *conn, cl_err *err)
{
    cl_client *c = conn->cl;
    if (!(conn->ssl = SSL_new(c->ctx)) || !SSL_set_fd(conn->ssl, conn->fd))
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot create a TLS connection");
    /* Writes go through a buffer, flushed by cl_client_io_flush (and by OpenSSL after each handshake
     * flight and alert): a 600 KB request is then a few large writes instead of one syscall per
     * 16 KB TLS record. Reads stay direct on the socket. */
    BIO *sock = SSL_get_wbio(conn->ssl), *buf = BIO_new(BIO_f_buffer());
    if (!buf || BIO_set_write_buffer_size(buf, WRITE_BUFFER) != 1 || !BIO_up_ref(sock)) {
        BIO_free(buf);
        return cl_err_ssl(err, CL_E_NOMEM, "cannot create a TLS connection");
    }
    SSL_set0_wbio(conn->ssl, BIO_push(buf, sock));
    /* and reads take what the socket has (a response's records in one syscall); the only poll on
     * this socket (h2_read_first) runs after SSL_read has said it needs more */
    SSL_set_read_ahead(conn->ssl, 1);
    if (c->server_name) {
        if (cl_net_is_ip(c->server_name)) {
            X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(conn->ssl), c->server_name);
        } else {
            SSL_set_tlsext_host_name(conn->ssl, c->server_name);
            SSL_set1_host(conn->ssl, c->server_name);
        }
    } else if (!cl_net_is_ip(c->host)) {
        SSL_set_tlsext_host_name(conn->ssl, c->host);
    }
    ERR_clear_error();
    errno = 0;
    if (SSL_connect(conn->ssl) != 1) {
        if (c->policy) {
            const cl_err *why = cl_ratls_peer_error(conn->ssl);
            if (why) {
                ERR_clear_error();
                bool not_ratls = strstr(why->msg, "RA-TLS certificate") || strstr(why->msg, "not an RA-TLS");
                return cl_err_set(err, CL_E_DENIED, "attestation refused the server %s: %s%s", c->authority, why->msg,
                                  not_ratls ? " (does the server present an RA-TLS certificate, e.g. `cloister serve "
                                              "--attested-tls`?)" : "");
            }
        }
        long vr = SSL_get_verify_result(conn->ssl);
        if (vr == X509_V_ERR_HOSTNAME_MISMATCH || vr == X509_V_ERR_IP_ADDRESS_MISMATCH) {
            ERR_clear_error();
            return cl_err_set(err, CL_E_AUTH, "the server certificate of %s is not issued for '%s' (use --server-name "
                              "with a name it carries)", c->authority, c->server_name);
        }
        if (vr != X509_V_OK) {
            ERR_clear_error();
            return cl_err_set(err, CL_E_AUTH, "the server certificate of %s is not trusted: %s (is --ca the CA "
                              "that issued it?)", c->authority, X509_verify_cert_error_string(vr));
        }
        return cl_client_tls_error(conn, "TLS handshake", err);
    }
    if (c->policy) {
        const cl_attest_claims *cl = cl_ratls_peer_claims(conn->ssl);
        if (!cl)
            return cl_err_set(err, CL_E_DENIED, "attestation refused the server %s: no verified evidence",
                              c->authority);
        conn->claims = *cl;
        conn->attested = true;
    }
    if (!c->rest) {
        const unsigned char *p = NULL;
        unsigned n = 0;
        SSL_get0_alpn_selected(conn->ssl, &p, &n);
        if (n != 2 || memcmp(p, "h2", 2) != 0)
            return cl_err_set(err, CL_E_IO, "%s did not agree to HTTP/2 (ALPN h2): is it a gRPC port? (REST needs "
                              "--rest)", c->authority);
    }
    return 0;
}

static void conn_close(cl_client_conn *conn)
{
    cl_client_h2_end(conn);
    if (conn->ssl) {
        if (!conn->broken)
            SSL_shutdown(conn->ssl);
        SSL_free(conn->ssl);
        conn->ssl = NULL;
    }
    if (conn->fd >= 0)
        close(conn->fd);
    conn->fd = -1;
    conn->rlen = 0;
}

static int conn_open(cl_client_conn *conn, cl_err *err)
{
    conn->broken = false;
    if ((conn->fd = tcp_connect(conn->cl, err)) < 0)
        return -1;
    if (conn->cl->ctx && handshake(conn, err) != 0)
        return -1;
    if (!conn->cl->rest && cl_client_h2_start(conn, err) != 0)
        return -1;
    return 0;
}

cl_client_conn *cl_client_connect(cl_client *c, cl_err *err)
{
    cl_client_conn *conn = calloc(1, sizeof *conn);
    if (!conn)
        return cl_err_nomem(err), NULL;
    conn->cl = c;
    conn->fd = -1;
    if (conn_open(conn, err) != 0) {
        conn->broken = true;
        cl_client_conn_free(conn);
        return NULL;
    }
    return conn;
}

void cl_client_conn_free(cl_client_conn *conn)
{
    if (!conn)
        return;
    conn_close(conn);
    free(conn->rbuf);
    free(conn);
}

const cl_attest_claims *cl_client_conn_claims(const cl_client_conn *conn)
{
    return conn && conn->attested ? &conn->claims : NULL;
}

bool cl_client_conn_up(const cl_client_conn *conn)
{
    return conn && !conn->broken && conn->fd >= 0;
}

cl_serve_code cl_client_conn_last_code(const cl_client_conn *conn)
{
    return conn ? conn->last_code : CL_SC_UNKNOWN;
}

int cl_client_conn_ready(cl_client_conn *c, cl_err *err)
{
    if (!c->broken && c->fd >= 0)
        return 0;
    conn_close(c);
    if (conn_open(c, err) != 0) {
        c->broken = true;
        c->last_code = CL_SC_UNAVAILABLE;
        return -1;
    }
    return 0;
}

int cl_client_conn_fail(cl_client_conn *c, cl_err *err)
{
    c->broken = true;
    c->last_code = err && strstr(err->msg, "no answer") ? CL_SC_DEADLINE_EXCEEDED : CL_SC_UNAVAILABLE;
    return -1;
}

int cl_client_io_write(cl_client_conn *c, const void *buf, size_t len, cl_err *err)
{
    const uint8_t *p = buf;
    while (len) {
        if (c->ssl) {
            size_t done = 0;
            ERR_clear_error();
            errno = 0;
            if (SSL_write_ex(c->ssl, p, len, &done) != 1) {
                /* a server that refused us (e.g. no client certificate) sent an alert before closing:
                 * read it, so the error says why rather than just "closed" */
                unsigned long e = ERR_peek_error();
                if (!(e && ERR_GET_LIB(e) == ERR_LIB_SSL && ERR_GET_REASON(e) >= SSL_AD_REASON_OFFSET)) {
                    uint8_t b;
                    ERR_clear_error();
                    SSL_read(c->ssl, &b, 1);
                }
                return cl_client_tls_error(c, "sending", err);
            }
            p += done;
            len -= done;
        } else {
            ssize_t n = send(c->fd, p, len, MSG_NOSIGNAL);
            if (n < 0 && errno == EINTR)
                continue;
            if (n < 0 && errno == EAGAIN)
                return cl_err_set(err, CL_E_IO, "sending: %s did not take the request within %d ms",
                                  c->cl->authority, c->cl->timeout_ms);
            if (n < 0)
                return cl_err_errno(err, CL_E_IO, errno, "sending to %s", c->cl->authority);
            p += n;
            len -= (size_t)n;
        }
    }
    return 0;
}

int cl_client_io_flush(cl_client_conn *c, cl_err *err)
{
    if (!c->ssl)
        return 0;
    ERR_clear_error();
    errno = 0;
    if (BIO_flush(SSL_get_wbio(c->ssl)) == 1)
        return 0;
    if (errno == EAGAIN)
        return cl_err_set(err, CL_E_IO, "sending: %s did not take the request within %d ms", c->cl->authority,
                          c->cl->timeout_ms);
    /* as in cl_client_io_write: a refusing server's alert says more than the failed write */
    uint8_t b;
    int saved = errno;
    ERR_clear_error();
    if (SSL_read(c->ssl, &b, 1) <= 0 && ERR_peek_error())
        return cl_client_tls_error(c, "sending", err);
    return cl_err_errno(err, CL_E_IO, saved ? saved : EPIPE, "sending to %s", c->cl->authority);
}

ssize_t cl_client_io_read(cl_client_conn *c, void *buf, size_t cap, cl_err *err)
{
    if (c->ssl) {
        size_t n = 0;
        ERR_clear_error();
        errno = 0;
        if (SSL_read_ex(c->ssl, buf, cap, &n) == 1)
            return (ssize_t)n;
        int e = SSL_get_error(c->ssl, 0);
        if (e == SSL_ERROR_ZERO_RETURN)
            return 0;
        if (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 && errno == 0)
            return 0; /* closed without close_notify */
        return cl_client_tls_error(c, "receiving", err);
    }
    for (;;) {
        ssize_t n = recv(c->fd, buf, cap, 0);
        if (n >= 0)
            return n;
        if (errno == EINTR)
            continue;
        if (errno == EAGAIN)
            return cl_err_set(err, CL_E_IO, "receiving: no answer from %s within %d ms", c->cl->authority,
                              c->cl->timeout_ms);
        return cl_err_errno(err, CL_E_IO, errno, "receiving from %s", c->cl->authority);
    }
}

/* ---------------------------------------------------------------- calls */

static int check_model(const char *model, cl_err *err)
{
    if (!model || !*model)
        return cl_err_set(err, CL_E_INVALID, "no model name given");
    for (const char *p = model; *p; p++)
        if ((unsigned char)*p < 0x21 || *p == '/' || *p == '?' || *p == '#' || *p == '%' || (unsigned char)*p > 0x7e)
            return cl_err_set(err, CL_E_INVALID, "model name '%s' has characters a URL path cannot carry", model);
    return 0;
}

int cl_client_predict(cl_client_conn *conn, const cl_client_request *req, cl_client_response *resp, cl_err *err)
{
    memset(resp, 0, sizeof *resp);
    if (check_model(req->model, err) != 0 || cl_client_conn_ready(conn, err) != 0)
        return -1;
    int rc = conn->cl->rest ? cl_client_rest_predict(conn, req, resp, err) : cl_client_grpc_predict(conn, req, resp, err);
    if (rc != 0)
        cl_client_response_clear(resp);
    return rc;
}

int cl_client_get_metadata(cl_client_conn *conn, const char *model, int64_t version, cl_client_metadata *md,
                           cl_err *err)
{
    memset(md, 0, sizeof *md);
    if (check_model(model, err) != 0 || cl_client_conn_ready(conn, err) != 0)
        return -1;
    int rc = conn->cl->rest ? cl_client_rest_metadata(conn, model, version, md, err)
                            : cl_client_grpc_metadata(conn, model, version, md, err);
    if (rc != 0)
        cl_client_metadata_clear(md);
    return rc;
}

int cl_client_get_status(cl_client_conn *conn, const char *model, int64_t version, cl_client_version_status **out,
                         size_t *n, cl_err *err)
{
    *out = NULL;
    *n = 0;
    if (check_model(model, err) != 0 || cl_client_conn_ready(conn, err) != 0)
        return -1;
    return conn->cl->rest ? cl_client_rest_status(conn, model, version, out, n, err)
                          : cl_client_grpc_status_call(conn, model, version, out, n, err);
}
