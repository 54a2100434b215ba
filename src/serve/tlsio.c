/* tlsio.c — the connections' transport (gRPC and REST): a non-blocking socket on the loop thread, with TLS
 * (OpenSSL) or, when explicitly allowed, in clear. It exists for the number of syscalls, which are
 * what a large request costs on a virtual machine:
 *   - reads take everything the socket has, up to READ_AHEAD bytes per syscall: OpenSSL reads ahead
 *     into its record buffer, and the loop drains it with SSL_read until OpenSSL asks for more
 *     (libevent's OpenSSL bufferevents read one record per wake-up with two syscalls, header and
 *     body: 74 reads and 37 epoll waits for one 600 KB image tensor); a pass ends on a short read
 *     (our own input BIO notes it) rather than on one more read that only says EAGAIN;
 *   - writes are coalesced: plaintext queued between flushes is encrypted into full 16 KB records
 *     (a response's HEADERS, DATA and trailers frames share one record), and the records go into an
 *     evbuffer (a small custom BIO) written with one writev per flush, not one write per record.
 * Because OpenSSL may hold records that the socket no longer signals, a read pass that stops early
 * (fairness limit) re-activates its own event instead of waiting for the socket.
 *
 * Ownership: the loop thread owns everything. The callbacks may free the io (data returning -1 says
 * so); after `closed` the io must be freed by the callee and is not touched again here. */
#include "serve_int.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/event.h>
#include <openssl/err.h>

#define READ_AHEAD (256u << 10) /* OpenSSL's read buffer: one syscall takes up to this much */
#define READ_CHUNK (64u << 10)  /* plaintext handed to the data callback at once */
#define READ_PASS (512u << 10)  /* bytes read per loop iteration before other connections get a turn */

struct cl_serve_io {
    int fd;
    SSL *ssl; /* NULL in clear */
    bool ready, closed, paused;
    bool dry;    /* the last read from the socket returned less than asked: it had no more */
    bool in_eof; /* the socket reached its end (for OpenSSL's BIO_eof) */
    struct event *rev, *wev;
    struct evbuffer *plain; /* TLS: plaintext queued for the next flush */
    struct evbuffer *out;   /* bytes for the socket */
    const cl_serve_io_cbs *cbs;
    void *arg;
};

/* ---------------------------------------------------------------- the output BIO */

static BIO_METHOD *out_method;
static pthread_once_t out_once = PTHREAD_ONCE_INIT;

static int out_write(BIO *b, const char *p, int n)
{
    struct evbuffer *e = BIO_get_data(b);
    return n <= 0 ? 0 : evbuffer_add(e, p, (size_t)n) == 0 ? n : -1;
}

static long out_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)b;
    (void)num;
    (void)ptr;
    return cmd == BIO_CTRL_FLUSH ? 1 : 0;
}

static int out_create(BIO *b)
{
    BIO_set_init(b, 1);
    return 1;
}

/* The input BIO: read() on the socket, noting a short read (the socket had no more), so a read pass
 * can end without one more read that would only say EAGAIN. */
static BIO_METHOD *in_method;

static int in_read(BIO *b, char *p, int n)
{
    cl_serve_io *io = BIO_get_data(b);
    BIO_clear_retry_flags(b);
    if (n <= 0)
        return 0;
    ssize_t got;
    do
        got = read(io->fd, p, (size_t)n);
    while (got < 0 && errno == EINTR);
    if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
        io->dry = true;
        BIO_set_retry_read(b);
        return -1;
    }
    if (got == 0)
        io->in_eof = true;
    io->dry = got >= 0 && got < n;
    return (int)got;
}

static long in_ctrl(BIO *b, int cmd, long num, void *ptr)
{
    (void)num;
    (void)ptr;
    cl_serve_io *io = BIO_get_data(b);
    return cmd == BIO_CTRL_FLUSH ? 1 : cmd == BIO_CTRL_EOF ? io->in_eof : 0;
}

static void out_method_init(void)
{
    BIO_METHOD *m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cloister evbuffer sink");
    if (m && BIO_meth_set_write(m, out_write) && BIO_meth_set_ctrl(m, out_ctrl) && BIO_meth_set_create(m, out_create))
        out_method = m;
    else
        BIO_meth_free(m);
    m = BIO_meth_new(BIO_get_new_index() | BIO_TYPE_SOURCE_SINK, "cloister socket source");
    if (m && BIO_meth_set_read(m, in_read) && BIO_meth_set_ctrl(m, in_ctrl) && BIO_meth_set_create(m, out_create))
        in_method = m;
    else
        BIO_meth_free(m);
}

/* ---------------------------------------------------------------- closing */

/* Reports the end of the connection once; the callee frees the io. */
static void io_close(cl_serve_io *io, bool tls_failure, const char *why)
{
    if (io->closed)
        return;
    io->closed = true;
    io->cbs->closed(io, tls_failure, why, io->arg);
}

/* The first OpenSSL error worth telling, as text ("" when there is none). */
static void tls_error(char *buf, size_t cap)
{
    unsigned long e;
    buf[0] = '\0';
    while ((e = ERR_get_error()) != 0) {
        if (!buf[0] && ERR_GET_LIB(e))
            ERR_error_string_n(e, buf, cap);
    }
}

/* After a failed SSL call: 0 when OpenSSL only wants more input; otherwise -1, with why the
 * connection ended in `why` and *tls whether TLS itself failed (io_close is the caller's to call). */
static int ssl_failed(cl_serve_io *io, int rc, char *why, size_t cap, bool *tls)
{
    int e = SSL_get_error(io->ssl, rc);
    if (e == SSL_ERROR_WANT_READ)
        return 0;
    int err = errno;
    /* a client that just closes its socket, without TLS's close_notify, has only gone away */
    *tls = e == SSL_ERROR_SSL && ERR_GET_REASON(ERR_peek_error()) != SSL_R_UNEXPECTED_EOF_WHILE_READING;
    if (*tls)
        tls_error(why, cap);
    ERR_clear_error();
    if (!why[0] || !*tls)
        snprintf(why, cap, "%s", *tls ? "TLS protocol error"
                                      : e == SSL_ERROR_SYSCALL && err ? strerror(err) : "closed by the peer");
    return -1;
}

/* ---------------------------------------------------------------- writing */

int cl_serve_io_write(cl_serve_io *io, const void *p, size_t n)
{
    if (io->closed)
        return -1;
    return evbuffer_add(io->ssl ? io->plain : io->out, p, n);
}

size_t cl_serve_io_pending(const cl_serve_io *io)
{
    return evbuffer_get_length(io->out) + (io->plain ? evbuffer_get_length(io->plain) : 0);
}

int cl_serve_io_flush(cl_serve_io *io)
{
    if (io->closed)
        return -1;
    for (size_t left; io->ssl && (left = evbuffer_get_length(io->plain)) > 0;) {
        size_t k = left < 16384 ? left : 16384, done = 0;
        unsigned char *p = evbuffer_pullup(io->plain, (ev_ssize_t)k);
        ERR_clear_error();
        if (!p || SSL_write_ex(io->ssl, p, k, &done) != 1 || done != k) {
            char why[256];
            tls_error(why, sizeof why);
            io_close(io, true, why[0] ? why : "cannot encrypt (out of memory or TLS failure)");
            return -1;
        }
        evbuffer_drain(io->plain, k);
    }
    while (evbuffer_get_length(io->out)) {
        int n = evbuffer_write(io->out, io->fd);
        if (n > 0)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR)) {
            if (errno != EINTR) {
                event_add(io->wev, NULL);
                return 0;
            }
            continue;
        }
        io_close(io, false, n < 0 ? strerror(errno) : "the peer stopped reading");
        return -1;
    }
    return 0;
}

static void on_writable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_serve_io *io = arg;
    if (cl_serve_io_flush(io) == 0 && !evbuffer_get_length(io->out))
        io->cbs->drained(io, io->arg);
}

/* ---------------------------------------------------------------- reading */

/* Completes the handshake as far as the input allows. 1 when ready, 0 waiting, -1 closed. */
static int handshake(cl_serve_io *io)
{
    ERR_clear_error();
    int rc = SSL_do_handshake(io->ssl);
    if (cl_serve_io_flush(io) != 0)
        return -1;
    if (rc == 1) {
        io->ready = true;
        return 1;
    }
    char why[256] = "";
    bool tls = false;
    if (ssl_failed(io, rc, why, sizeof why, &tls) == 0)
        return 0;
    io_close(io, tls, why);
    return -1;
}

/* Reads into buf until it is full, the input runs dry (*stop = 1: EAGAIN, or a short read from the
 * socket with nothing left in OpenSSL; level-triggered epoll reports what arrives after it) or the
 * connection ends (*stop = -1, why/tls set). Returns the bytes read. */
static size_t read_some(cl_serve_io *io, uint8_t *buf, size_t cap, int *stop, char *why, size_t why_cap, bool *tls)
{
    size_t have = 0;
    *stop = 0;
    while (have < cap) {
        if (io->ssl) {
            size_t got = 0;
            ERR_clear_error();
            int rc = SSL_read_ex(io->ssl, buf + have, cap - have, &got);
            if (rc == 1) {
                have += got;
                if (io->dry && !SSL_has_pending(io->ssl)) {
                    *stop = 1; /* the socket had no more: no read just to hear EAGAIN */
                    break;
                }
                continue;
            }
            *stop = ssl_failed(io, rc, why, why_cap, tls) == 0 ? 1 : -1;
            break;
        }
        ssize_t got = read(io->fd, buf + have, cap - have);
        if (got > 0) {
            have += (size_t)got;
            if (have < cap) {
                *stop = 1; /* a short read: the socket had no more */
                break;
            }
        } else if (got < 0 && errno == EINTR) {
            continue;
        } else if (got < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            *stop = 1;
            break;
        } else {
            snprintf(why, why_cap, "%s", got == 0 ? "closed by the peer" : strerror(errno));
            *stop = -1;
            break;
        }
    }
    return have;
}

static void on_readable(evutil_socket_t fd, short what, void *arg)
{
    (void)fd;
    (void)what;
    cl_serve_io *io = arg;
    if (io->ssl && !io->ready) {
        if (handshake(io) <= 0)
            return;
        if (io->cbs->ready(io, io->arg) != 0)
            return; /* freed */
    }
    uint8_t buf[READ_CHUNK];
    size_t pass = 0;
    for (;;) {
        int stop;
        char why[256] = "";
        bool tls = false;
        size_t have = read_some(io, buf, sizeof buf, &stop, why, sizeof why, &tls);
        /* what arrived before the end is still delivered */
        if (have && io->cbs->data(io, buf, have, io->arg) != 0)
            return; /* freed */
        if (io->paused)
            break; /* what OpenSSL still holds is read on resume */
        if (stop < 0) {
            /* a peer that half-closed still gets what was answered to its last input */
            if (!tls && cl_serve_io_flush(io) != 0)
                return; /* the flush failed: closed (and freed) already */
            io_close(io, tls, why);
            return;
        }
        if (stop)
            break;
        pass += have;
        if (pass >= READ_PASS) {
            /* let other connections run; OpenSSL may hold input the socket no longer signals */
            event_active(io->rev, EV_READ, 0);
            break;
        }
    }
    cl_serve_io_flush(io);
}

/* ---------------------------------------------------------------- life cycle */

cl_serve_io *cl_serve_io_new(struct event_base *base, int fd, SSL_CTX *ctx, const cl_serve_io_cbs *cbs, void *arg,
                             cl_err *err)
{
    cl_serve_io *io = calloc(1, sizeof *io);
    if (!io) {
        cl_err_set(err, CL_E_NOMEM, "out of memory for a connection");
        return NULL;
    }
    io->fd = fd;
    io->cbs = cbs;
    io->arg = arg;
    io->out = evbuffer_new();
    io->plain = ctx ? evbuffer_new() : NULL;
    io->rev = event_new(base, fd, EV_READ | EV_PERSIST, on_readable, io);
    io->wev = event_new(base, fd, EV_WRITE, on_writable, io);
    if (!io->out || (ctx && !io->plain) || !io->rev || !io->wev || evutil_make_socket_nonblocking(fd) != 0)
        goto fail;
    if (ctx) {
        pthread_once(&out_once, out_method_init);
        BIO *rb = in_method ? BIO_new(in_method) : NULL;
        BIO *wb = out_method ? BIO_new(out_method) : NULL;
        io->ssl = SSL_new(ctx);
        if (!rb || !wb || !io->ssl) {
            BIO_free(rb);
            BIO_free(wb);
            goto fail;
        }
        BIO_set_data(rb, io);
        BIO_set_data(wb, io->out);
        SSL_set_bio(io->ssl, rb, wb);
        SSL_set_accept_state(io->ssl);
        SSL_set_read_ahead(io->ssl, 1);
        SSL_set_default_read_buffer_len(io->ssl, READ_AHEAD);
        SSL_set_mode(io->ssl, SSL_MODE_RELEASE_BUFFERS);
    } else {
        io->ready = true;
    }
    if (event_add(io->rev, NULL) != 0)
        goto fail;
    return io;
fail:
    cl_err_set(err, CL_E_NOMEM, "cannot set up a connection (out of memory or TLS failure)");
    io->fd = -1; /* the caller still owns fd */
    cl_serve_io_free(io);
    return NULL;
}

int cl_serve_io_shutdown_write(cl_serve_io *io)
{
    if (io->closed)
        return -1;
    if (io->ssl) {
        ERR_clear_error();
        (void)SSL_shutdown(io->ssl); /* close_notify into the output */
        ERR_clear_error();
    }
    if (cl_serve_io_flush(io) != 0)
        return -1;
    if (!cl_serve_io_pending(io))
        (void)shutdown(io->fd, SHUT_WR); /* (a socket too full for close_notify just stays open) */
    return 0;
}

void cl_serve_io_set_reading(cl_serve_io *io, bool on)
{
    if (io->closed || io->paused == !on)
        return;
    io->paused = !on;
    if (!on) {
        event_del(io->rev);
        return;
    }
    event_add(io->rev, NULL);
    event_active(io->rev, EV_READ, 0); /* OpenSSL may hold records the socket no longer signals */
}

SSL *cl_serve_io_ssl(cl_serve_io *io) { return io->ssl; }

void cl_serve_peer_name(const struct sockaddr *sa, char *buf, size_t cap)
{
    char host[INET6_ADDRSTRLEN] = "?";
    int port = 0;
    if (sa->sa_family == AF_INET) {
        inet_ntop(AF_INET, &((const struct sockaddr_in *)sa)->sin_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in *)sa)->sin_port);
    } else if (sa->sa_family == AF_INET6) {
        inet_ntop(AF_INET6, &((const struct sockaddr_in6 *)sa)->sin6_addr, host, sizeof host);
        port = ntohs(((const struct sockaddr_in6 *)sa)->sin6_port);
    }
    snprintf(buf, cap, "%s:%d", host, port);
}

void cl_serve_set_nodelay(int fd)
{
    int one = 1;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

void cl_serve_io_free(cl_serve_io *io)
{
    if (!io)
        return;
    if (io->rev)
        event_free(io->rev);
    if (io->wev)
        event_free(io->wev);
    if (io->ssl) {
        SSL_set_shutdown(io->ssl, SSL_RECEIVED_SHUTDOWN | SSL_SENT_SHUTDOWN);
        SSL_free(io->ssl);
    }
    if (io->out)
        evbuffer_free(io->out);
    if (io->plain)
        evbuffer_free(io->plain);
    if (io->fd >= 0)
        close(io->fd);
    free(io);
}
