/* fuzz_serve_http1.c — fuzz target for the REST server's HTTP/1.1 connection handling (rest.c over
 * tlsio.c, in clear): request framing by http-parser, pipelining, chunked bodies, Expect, HEAD,
 * HTTP/1.0, the size limits, and the hand-off of :predict calls to the worker pool and back.
 *
 * A real server runs on a thread of this process (plain HTTP on 127.0.0.2, the test models affine,
 * adder and vision; not "sleepy", whose sleeps would only slow the fuzzer; 64 KB request limit, one
 * worker, inline runs off so calls take the pool path). Each input is sent on a new connection, in
 * pieces of the size its first byte picks (0: all at once); then the client half-closes and reads
 * until the server closes. Checked: the server closes within 10 s (no hang on any input), and what
 * it sent is a sequence of HTTP/1.1 responses, each with a Content-Length its body matches (a HEAD
 * answer has none, a 100 Continue neither). The sanitizers check the rest. */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/common.h"
#include "cloister/serve.h"
#include "testmodel.h"

/* 127.0.0.2, not .1: the fuzzer's many short connections leave their ports in TIME_WAIT for a minute,
 * and on .2 those do not collide with the ports other tests bind on 127.0.0.1 */
#define HOST "127.0.0.2"
#define HOST_ADDR 0x7f000002u

static int port;

static void *server_main(void *arg)
{
    cl_err err = {0};
    if (cl_serve_server_run(arg, &err) != 0)
        fprintf(stderr, "fuzz_serve_http1: %s\n", err.msg);
    abort(); /* the server never stops while the fuzzer runs */
}

static void start_server(void)
{
    cl_err err = {0};
    cl_secmem_set_require_lock(false);
    cl_log_set_level(CL_LOG_ERROR);
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    if (!reg || tm_register(reg, "affine", 1, &err) != 0 || tm_register(reg, "adder", 1, &err) != 0 ||
        tm_register(reg, "vision", 1, &err) != 0) {
        fprintf(stderr, "fuzz_serve_http1: %s\n", err.msg);
        abort();
    }
    cl_serve_config cfg = {.host = HOST, .grpc_port = -1, .rest_port = 0, .allow_plaintext = true,
                           .max_request_bytes = 1 << 16, .request_timeout_ms = 5000, .workers = 1,
                           .queue_limit = 4, .inline_max_us = -1, .rest_threads = 1};
    cl_serve_server *srv = cl_serve_server_new(&cfg, reg, &err);
    if (!srv) {
        fprintf(stderr, "fuzz_serve_http1: %s\n", err.msg);
        abort();
    }
    port = cl_serve_server_rest_port(srv);
    pthread_t t;
    if (pthread_create(&t, NULL, server_main, srv) != 0)
        abort();
}

/* Length of the response head at p (through the blank line), or 0 when there is none. */
static size_t head_len(const char *p, size_t n)
{
    for (size_t i = 0; i + 3 < n; i++)
        if (memcmp(p + i, "\r\n\r\n", 4) == 0)
            return i + 4;
    return 0;
}

/* The Content-Length of a head, or -1 when it has none. */
static long content_length(const char *h, size_t n)
{
    static const char name[] = "\r\nContent-Length: ";
    for (size_t i = 0; i + sizeof name - 1 < n; i++)
        if (strncasecmp(h + i, name, sizeof name - 1) == 0)
            return strtol(h + i + sizeof name - 1, NULL, 10);
    return -1;
}

/* True when out[0..n) is a sequence of whole HTTP/1.1 responses. */
static bool responses_ok(const char *out, size_t n)
{
    size_t off = 0;
    while (off < n) {
        const char *p = out + off;
        size_t left = n - off;
        if (left < 12 || memcmp(p, "HTTP/1.1 ", 9) != 0)
            return false;
        size_t h = head_len(p, left);
        if (!h)
            return false;
        if (memcmp(p + 9, "100 ", 4) == 0) {
            off += h;
            continue;
        }
        long len = content_length(p, h);
        if (len < 0)
            return false;
        /* a HEAD answer declares the length it would have and sends no body */
        bool body_fits = (size_t)len <= left - h;
        bool next_after_body = body_fits && (h + (size_t)len == left || memcmp(p + h + len, "HTTP/1.1 ", 9) == 0);
        bool next_after_head = h == left || (left - h >= 9 && memcmp(p + h, "HTTP/1.1 ", 9) == 0);
        if (next_after_body)
            off += h + (size_t)len;
        else if (next_after_head)
            off += h;
        else
            return false;
    }
    return true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, start_server);
    if (size < 1)
        return 0;
    size_t piece = data[0] ? data[0] : size;
    data++;
    size--;
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in self = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(HOST_ADDR)};
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port), .sin_addr.s_addr = htonl(HOST_ADDR)};
    if (fd < 0 || bind(fd, (struct sockaddr *)&self, sizeof self) != 0 || connect(fd, (struct sockaddr *)&a, sizeof a) != 0)
        abort();
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    /* the server may close early (a refused request): a failed send ends the sending */
    for (size_t off = 0; off < size;) {
        size_t k = size - off < piece ? size - off : piece;
        ssize_t w = send(fd, data + off, k, MSG_NOSIGNAL);
        if (w <= 0)
            break;
        off += (size_t)w;
    }
    shutdown(fd, SHUT_WR);
    char *out = NULL;
    size_t n = 0, cap = 0;
    for (;;) {
        struct pollfd pf = {fd, POLLIN, 0};
        int r = poll(&pf, 1, 10000);
        if (r == 0) {
            fprintf(stderr, "fuzz_serve_http1: the server did not close the connection within 10 s\n");
            abort();
        }
        if (r < 0 && errno == EINTR)
            continue;
        if (cap - n < 65536) {
            cap = cap ? cap * 2 : 65536;
            if (!(out = realloc(out, cap)))
                abort();
        }
        ssize_t got = recv(fd, out + n, cap - n, 0);
        if (got < 0 && errno == EINTR)
            continue;
        if (got <= 0)
            break; /* closed (a reset after a refusal included) */
        n += (size_t)got;
    }
    close(fd);
    if (!responses_ok(out ? out : "", n)) {
        fprintf(stderr, "fuzz_serve_http1: not a sequence of HTTP/1.1 responses (%zu bytes):\n%.*s\n", n,
                (int)(n < 2000 ? n : 2000), out ? out : "");
        abort();
    }
    free(out);
    return 0;
}
