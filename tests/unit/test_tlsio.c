/* test_tlsio.c — the gRPC connections' transport (src/serve/tlsio.c) over a socketpair, with a peer
 * thread on the other end: bytes arrive complete and in order across many read passes, output
 * larger than the socket buffer waits for the peer and then reports `drained`, TLS handshake with
 * ALPN h2, a peer that does not speak TLS is a TLS failure, and a peer that closes is reported once.
 * Not covered: a pass that stops while OpenSSL holds read-ahead records and the socket is empty
 * (tlsio re-activates its event for that); a socketpair's small buffer never leaves the loop there
 * deterministically. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <event2/event.h>
#include <openssl/ssl.h>

#include "cloister/pki.h"
#include "serve/serve_int.h"
#include "testutil.h"

#define IN_BYTES (3u << 20)  /* several read passes (512 KB each) */
#define OUT_BYTES (8u << 20) /* far more than a socketpair buffers */

static uint8_t pattern(size_t i) { return (uint8_t)(i * 31u + (i >> 13)); }

/* ---------------------------------------------------------------- the server side */

typedef struct {
    struct event_base *base;
    cl_serve_io *io;
    size_t received;
    bool in_order, echo, out_on_ready;
    int ready, drained, closed;
    bool tls_failure;
    char why[256];
} side;

/* Queues OUT_BYTES of the pattern and flushes: more than the socket takes at once. */
static void queue_out(cl_serve_io *io)
{
    uint8_t *data = malloc(OUT_BYTES);
    for (size_t i = 0; i < OUT_BYTES; i++)
        data[i] = pattern(i);
    for (size_t off = 0; off < OUT_BYTES; off += 1u << 20)
        assert_int_equal(cl_serve_io_write(io, data + off, 1u << 20), 0);
    free(data);
    assert_int_equal(cl_serve_io_flush(io), 0);
    assert_true(cl_serve_io_pending(io) > 0);
}

static int on_ready(cl_serve_io *io, void *arg)
{
    side *s = arg;
    const unsigned char *alpn = NULL;
    unsigned n = 0;
    SSL_get0_alpn_selected(cl_serve_io_ssl(io), &alpn, &n);
    assert_int_equal(n, 2);
    assert_memory_equal(alpn, "h2", 2);
    s->ready++;
    if (s->out_on_ready)
        queue_out(io);
    return 0;
}

static int on_data(cl_serve_io *io, const uint8_t *p, size_t n, void *arg)
{
    side *s = arg;
    for (size_t i = 0; i < n; i++)
        if (p[i] != pattern(s->received + i))
            s->in_order = false;
    s->received += n;
    if (s->echo)
        assert_int_equal(cl_serve_io_write(io, p, n), 0);
    return 0;
}

static void on_drained(cl_serve_io *io, void *arg)
{
    side *s = arg;
    assert_int_equal(cl_serve_io_pending(io), 0);
    s->drained++;
}

static void on_closed(cl_serve_io *io, bool tls_failure, const char *why, void *arg)
{
    side *s = arg;
    s->closed++;
    s->tls_failure = tls_failure;
    snprintf(s->why, sizeof s->why, "%s", why);
    cl_serve_io_free(io);
    s->io = NULL;
    event_base_loopbreak(s->base);
}

static const cl_serve_io_cbs cbs = {on_ready, on_data, on_drained, on_closed};

/* ---------------------------------------------------------------- the peer thread */

typedef struct {
    int fd;
    SSL_CTX *ctx; /* NULL: clear */
    enum { SEND_IN, READ_OUT, ECHO, GARBAGE } job;
    size_t got;
    bool ok;
} peer;

static bool write_all(SSL *ssl, int fd, const uint8_t *p, size_t n)
{
    while (n) {
        size_t done = 0;
        if (ssl) {
            if (SSL_write_ex(ssl, p, n, &done) != 1)
                return false;
        } else {
            ssize_t w = write(fd, p, n);
            if (w <= 0)
                return false;
            done = (size_t)w;
        }
        p += done;
        n -= done;
    }
    return true;
}

/* Reads until the pattern's first `want` bytes have come back (or the connection ends). */
static size_t read_pattern(SSL *ssl, int fd, size_t want, bool *ok)
{
    uint8_t buf[65536];
    size_t got = 0;
    *ok = true;
    while (got < want) {
        size_t n = 0;
        if (ssl) {
            if (SSL_read_ex(ssl, buf, sizeof buf, &n) != 1)
                break;
        } else {
            ssize_t r = read(fd, buf, sizeof buf);
            if (r <= 0)
                break;
            n = (size_t)r;
        }
        for (size_t i = 0; i < n; i++)
            if (buf[i] != pattern(got + i))
                *ok = false;
        got += n;
    }
    return got;
}

static void *peer_main(void *arg)
{
    peer *p = arg;
    SSL *ssl = NULL;
    uint8_t *data = malloc(IN_BYTES);
    for (size_t i = 0; i < IN_BYTES; i++)
        data[i] = pattern(i);
    p->ok = false;
    if (p->job == GARBAGE) {
        const char *g = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
        p->ok = write(p->fd, g, strlen(g)) == (ssize_t)strlen(g);
        goto out;
    }
    if (p->ctx) {
        ssl = SSL_new(p->ctx);
        SSL_set_fd(ssl, p->fd);
        if (SSL_connect(ssl) != 1)
            goto out;
    }
    if (p->job == SEND_IN) {
        /* small writes (many records) and one large one */
        size_t off = 0;
        for (; off < 100000; off += 1000)
            if (!write_all(ssl, p->fd, data + off, 1000))
                goto out;
        p->ok = write_all(ssl, p->fd, data + off, IN_BYTES - off);
    } else if (p->job == READ_OUT) {
        usleep(100000); /* let the server's output back up first */
        p->got = read_pattern(ssl, p->fd, OUT_BYTES, &p->ok);
    } else { /* ECHO: send everything, then read it all back */
        p->ok = write_all(ssl, p->fd, data, IN_BYTES);
        bool same;
        p->got = read_pattern(ssl, p->fd, IN_BYTES, &same);
        p->ok = p->ok && same;
    }
out:
    if (ssl) {
        SSL_shutdown(ssl);
        SSL_free(ssl);
    }
    shutdown(p->fd, SHUT_WR);
    free(data);
    return NULL;
}

/* ---------------------------------------------------------------- fixtures */

/* TLS material shared by the tests: a server context from `cloister tls init` files (ALPN h2), and
 * a client context that offers h2 and skips verification (the transport is under test, not PKI). */
static struct {
    char *dir;
    SSL_CTX *server, *client;
} tls;

static int tls_setup(void **state)
{
    (void)state;
    tls.dir = tu_tmpdir();
    char *sub = tu_path(tls.dir, "tls");
    cl_pki_tls_init_options o = {.dir = sub, .server_name = "localhost", .keytype = CL_PKI_EC_P256};
    cl_err err = {0};
    char *cert = tu_path(sub, "server/cert.pem"), *key = tu_path(sub, "server/key.pem");
    cl_serve_ssl_config c;
    int ok = cl_pki_tls_init(&o, &err) == 0 && cl_serve_ssl_config_from_files(cert, key, NULL, false, &c, &err) == 0;
    if (ok) {
        tls.server = cl_serve_tls_ctx(&c, "h2", &err);
        cl_serve_ssl_config_clear(&c);
    }
    free(cert);
    free(key);
    free(sub);
    static const unsigned char alpn[] = "\x02h2";
    tls.client = SSL_CTX_new(TLS_client_method());
    if (tls.client) {
        SSL_CTX_set_verify(tls.client, SSL_VERIFY_NONE, NULL);
        SSL_CTX_set_alpn_protos(tls.client, alpn, sizeof alpn - 1);
    }
    return tls.server && tls.client ? 0 : -1;
}

static int tls_teardown(void **state)
{
    (void)state;
    SSL_CTX_free(tls.server);
    SSL_CTX_free(tls.client);
    tu_rmrf(tls.dir);
    free(tls.dir);
    return 0;
}

/* Runs one connection: the io on one end of a socketpair, the peer thread on the other. */
static void run(side *s, peer *p, SSL_CTX *sctx, bool write_out)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    s->base = event_base_new();
    s->in_order = true;
    cl_err err = {0};
    s->io = cl_serve_io_new(s->base, sv[0], sctx, &cbs, s, &err);
    assert_non_null(s->io);
    if (write_out)
        queue_out(s->io);
    p->fd = sv[1];
    pthread_t t;
    assert_int_equal(pthread_create(&t, NULL, peer_main, p), 0);
    event_base_dispatch(s->base);
    pthread_join(t, NULL);
    if (s->io)
        cl_serve_io_free(s->io);
    event_base_free(s->base);
    close(sv[1]);
}

/* ---------------------------------------------------------------- tests */

static void test_clear_in(void **state)
{
    (void)state;
    side s = {0};
    peer p = {.job = SEND_IN};
    run(&s, &p, NULL, false);
    assert_true(p.ok);
    assert_int_equal(s.received, IN_BYTES);
    assert_true(s.in_order);
    assert_int_equal(s.closed, 1);
    assert_false(s.tls_failure);
    assert_string_equal(s.why, "closed by the peer");
    assert_int_equal(s.ready, 0); /* only TLS has a handshake */
}

static void test_clear_out_backpressure(void **state)
{
    (void)state;
    side s = {0};
    peer p = {.job = READ_OUT};
    run(&s, &p, NULL, true);
    assert_true(p.ok);
    assert_int_equal(p.got, OUT_BYTES);
    assert_int_equal(s.drained, 1);
    assert_int_equal(s.closed, 1);
}

static void test_tls_in(void **state)
{
    (void)state;
    side s = {0};
    peer p = {.job = SEND_IN, .ctx = tls.client};
    run(&s, &p, tls.server, false);
    assert_true(p.ok);
    assert_int_equal(s.ready, 1);
    assert_int_equal(s.received, IN_BYTES);
    assert_true(s.in_order);
    assert_int_equal(s.closed, 1);
    assert_false(s.tls_failure);
}

static void test_tls_echo(void **state)
{
    (void)state;
    side s = {.echo = true};
    peer p = {.job = ECHO, .ctx = tls.client};
    run(&s, &p, tls.server, false);
    assert_true(p.ok);
    assert_int_equal(p.got, IN_BYTES);
    assert_int_equal(s.received, IN_BYTES);
    assert_true(s.drained >= 1); /* the echo outran the peer, which reads only after sending */
    assert_int_equal(s.closed, 1);
}

static void test_tls_out_backpressure(void **state)
{
    (void)state;
    side s = {.out_on_ready = true};
    peer p = {.job = READ_OUT, .ctx = tls.client};
    run(&s, &p, tls.server, false);
    assert_true(p.ok);
    assert_int_equal(p.got, OUT_BYTES);
    assert_int_equal(s.ready, 1);
    assert_int_equal(s.drained, 1);
    assert_int_equal(s.closed, 1);
}

static void test_tls_garbage(void **state)
{
    (void)state;
    side s = {0};
    peer p = {.job = GARBAGE};
    run(&s, &p, tls.server, false);
    assert_true(p.ok);
    assert_int_equal(s.ready, 0);
    assert_int_equal(s.received, 0);
    assert_int_equal(s.closed, 1);
    assert_true(s.tls_failure);
    assert_non_null(strstr(s.why, "http request"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_clear_in),  cmocka_unit_test(test_clear_out_backpressure),
        cmocka_unit_test(test_tls_in),    cmocka_unit_test(test_tls_echo),
        cmocka_unit_test(test_tls_out_backpressure), cmocka_unit_test(test_tls_garbage),
    };
    return cmocka_run_group_tests(tests, tls_setup, tls_teardown);
}
