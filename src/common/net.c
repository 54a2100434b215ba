/* net.c — the TCP client plumbing shared by the key server's provisioning client and the TF
 * Serving client: connecting with a timeout, per-socket I/O timeouts, address literals, and the stop
 * token (an eventfd) that ends sleeps, name lookups, connects and socket waits at shutdown. */
#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "cloister/common.h"

int cl_net_split_hostport(const char *s, char *host, size_t size, int *port, int default_port, bool allow_port0,
                          cl_err *err)
{
    if (!s || !*s)
        return cl_err_set(err, CL_E_INVALID, "no address given: use HOST:PORT, e.g. localhost:8500");
    const char *h = s, *colon;
    size_t hlen;
    if (*s == '[') {
        const char *close = strchr(s, ']');
        if (!close || (close[1] != ':' && close[1] != '\0'))
            return cl_err_set(err, CL_E_INVALID, "'%s' is not [IPv6]:PORT", s);
        h = s + 1;
        hlen = (size_t)(close - h);
        colon = close[1] == ':' ? close + 1 : NULL;
    } else {
        colon = strchr(s, ':');
        if (colon && strchr(colon + 1, ':'))
            return cl_err_set(err, CL_E_INVALID, "'%s' is not HOST:PORT (IPv6 addresses go in brackets: [::1]:8500)",
                              s);
        hlen = colon ? (size_t)(colon - s) : strlen(s);
    }
    if (hlen == 0 || hlen >= size)
        return cl_err_set(err, CL_E_INVALID, "'%s': empty or too long host name", s);
    int p = default_port;
    if (!colon && default_port < 0)
        return cl_err_set(err, CL_E_INVALID, "'%s' has no port: use HOST:PORT", s);
    if (colon) {
        char *end;
        errno = 0;
        long v = strtol(colon + 1, &end, 10);
        long lo = allow_port0 ? 0 : 1;
        if (!isdigit((unsigned char)colon[1]) || *end != '\0' || errno || v < lo || v > 65535)
            return cl_err_set(err, CL_E_INVALID, "'%s': the port must be a number from %ld to 65535", s, lo);
        p = (int)v;
    }
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    *port = p;
    return 0;
}

bool cl_net_is_ip(const char *host)
{
    unsigned char buf[16];
    return inet_pton(AF_INET, host, buf) == 1 || inet_pton(AF_INET6, host, buf) == 1;
}

void cl_net_set_timeouts(int fd, int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
}

/* ---------------------------------------------------------------- stop token */

struct cl_stop {
    int fd; /* eventfd: readable (counter > 0) once raised, never read, so every waiter sees it */
    atomic_bool raised;
};

cl_stop *cl_stop_new(cl_err *err)
{
    cl_stop *s = calloc(1, sizeof *s);
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    s->fd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (s->fd < 0) {
        cl_err_errno(err, CL_E_IO, errno, "cannot create the stop token (eventfd)");
        free(s);
        return NULL;
    }
    atomic_init(&s->raised, false);
    return s;
}

void cl_stop_free(cl_stop *s)
{
    if (!s)
        return;
    close(s->fd);
    free(s);
}

void cl_stop_raise(cl_stop *s)
{
    if (!s)
        return;
    int saved = errno; /* from a signal handler: leave errno as the interrupted code had it */
    atomic_store(&s->raised, true);
    uint64_t one = 1;
    ssize_t w = write(s->fd, &one, sizeof one); /* only fails when the counter is full: it is raised */
    (void)w;
    errno = saved;
}

bool cl_stop_raised(const cl_stop *s) { return s && atomic_load(&((cl_stop *)s)->raised); }

int cl_stop_fd(const cl_stop *s) { return s ? s->fd : -1; }

static int64_t mono_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

int cl_net_wait(int fd, short events, int timeout_ms, const cl_stop *stop)
{
    int64_t deadline = timeout_ms < 0 ? -1 : mono_ms() + timeout_ms;
    for (;;) {
        if (cl_stop_raised(stop))
            return -1;
        struct pollfd p[2];
        nfds_t np = 0;
        if (fd >= 0)
            p[np++] = (struct pollfd){fd, events, 0};
        if (stop)
            p[np++] = (struct pollfd){cl_stop_fd(stop), POLLIN, 0};
        int left = -1;
        if (deadline >= 0) {
            int64_t d = deadline - mono_ms();
            left = d < 0 ? 0 : d > 1000000000 ? 1000000000 : (int)d;
        }
        int n = poll(p, np, left);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -1;
        if (cl_stop_raised(stop))
            return -1;
        if (n == 0)
            return 0;
        if (fd >= 0 && p[0].revents)
            return 1;
        if (fd < 0 && deadline < 0 && !stop)
            return 0;
    }
}

bool cl_stop_sleep(const cl_stop *s, int ms)
{
    if (!s) {
        struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
        }
        return false;
    }
    return cl_net_wait(-1, 0, ms, s) < 0;
}

/* ---------------------------------------------------------------- connecting */

/* getaddrinfo that ends when `stop` is raised: the lookup runs on a detached thread (the resolver
 * cannot be interrupted) and whichever of the two finishes last frees the job. Returns getaddrinfo's
 * value, or EAI_CANCELED when stopped. */
typedef struct resolve_job {
    pthread_mutex_t lock;
    int refs; /* the caller and the thread */
    int done; /* eventfd: written when the lookup has finished */
    int rc;
    struct addrinfo hints, *res;
    char *host, port[8];
} resolve_job;

static void resolve_job_unref(resolve_job *j)
{
    pthread_mutex_lock(&j->lock);
    bool last = --j->refs == 0;
    pthread_mutex_unlock(&j->lock);
    if (!last)
        return;
    if (j->res)
        freeaddrinfo(j->res);
    close(j->done);
    pthread_mutex_destroy(&j->lock);
    free(j->host);
    free(j);
}

static void *resolve_main(void *arg)
{
    resolve_job *j = arg;
    struct addrinfo *res = NULL;
    int rc = getaddrinfo(j->host, j->port, &j->hints, &res);
    pthread_mutex_lock(&j->lock);
    j->rc = rc;
    j->res = rc == 0 ? res : NULL;
    pthread_mutex_unlock(&j->lock);
    uint64_t one = 1;
    ssize_t w = write(j->done, &one, sizeof one);
    (void)w;
    resolve_job_unref(j);
    return NULL;
}

static int resolve(const char *host, const char *port, const struct addrinfo *hints, const cl_stop *stop,
                   struct addrinfo **res)
{
    *res = NULL;
    if (!stop || cl_net_is_ip(host)) /* an address literal needs no resolver */
        return getaddrinfo(host, port, hints, res);
    resolve_job *j = calloc(1, sizeof *j);
    if (!j || !(j->host = strdup(host))) {
        free(j);
        return EAI_MEMORY;
    }
    snprintf(j->port, sizeof j->port, "%s", port);
    j->hints = *hints;
    j->refs = 2;
    pthread_mutex_init(&j->lock, NULL);
    pthread_attr_t attr;
    pthread_t t;
    int e = -1;
    if ((j->done = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK)) >= 0 && pthread_attr_init(&attr) == 0) {
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        e = pthread_create(&t, &attr, resolve_main, j);
        pthread_attr_destroy(&attr);
    }
    if (e != 0) { /* no thread: resolve here, uninterruptibly */
        if (j->done >= 0)
            close(j->done);
        pthread_mutex_destroy(&j->lock);
        free(j->host);
        free(j);
        return getaddrinfo(host, port, hints, res);
    }
    int w = cl_net_wait(j->done, POLLIN, -1, stop);
    pthread_mutex_lock(&j->lock);
    int rc = w > 0 ? j->rc : EAI_CANCELED;
    if (w > 0) {
        *res = j->res; /* now the caller's */
        j->res = NULL;
    }
    pthread_mutex_unlock(&j->lock);
    resolve_job_unref(j); /* when stopped, the thread frees the job (and its answer) when it is done */
    return rc;
}

static int connect_to(const char *host, int port, int timeout_ms, const cl_stop *stop, bool blocking, int *sys_errno,
                      cl_err *err)
{
    if (sys_errno)
        *sys_errno = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    char ports[8];
    snprintf(ports, sizeof ports, "%d", port);
    int g = resolve(host, ports, &hints, stop, &res);
    if (g == EAI_CANCELED) {
        if (sys_errno)
            *sys_errno = ECANCELED;
        return cl_err_set(err, CL_E_IO, "stopped while resolving '%s' (shutdown)", host);
    }
    if (g == EAI_NONAME || g == EAI_NODATA) /* the name does not exist: asking again will not help */
        return cl_err_set(err, CL_E_INVALID, "cannot resolve '%s': %s (no such host: check the name)", host,
                          gai_strerror(g));
    if (g != 0) /* EAI_AGAIN and the like: the resolver could not answer now */
        return cl_err_set(err, CL_E_IO, "cannot resolve '%s': %s", host, gai_strerror(g));
    int fd = -1, last = 0;
    for (ai = res; ai && fd < 0; ai = ai->ai_next) {
        fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            last = errno;
            continue;
        }
        if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
            if (errno != EINPROGRESS) {
                last = errno;
                close(fd);
                fd = -1;
                continue;
            }
            int so = 0;
            socklen_t sl = sizeof so;
            int pr = cl_net_wait(fd, POLLOUT, timeout_ms, stop);
            if (pr < 0 && cl_stop_raised(stop)) {
                close(fd);
                freeaddrinfo(res);
                if (sys_errno)
                    *sys_errno = ECANCELED;
                return cl_err_set(err, CL_E_IO, "stopped while connecting to %s:%d (shutdown)", host, port);
            }
            if (pr <= 0 || getsockopt(fd, SOL_SOCKET, SO_ERROR, &so, &sl) != 0 || so != 0) {
                last = pr == 0 ? ETIMEDOUT : so ? so : errno;
                close(fd);
                fd = -1;
                continue;
            }
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        if (sys_errno)
            *sys_errno = last;
        return cl_err_errno(err, CL_E_IO, last, "cannot connect to %s:%d", host, port);
    }
    if (blocking) {
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
        cl_net_set_timeouts(fd, timeout_ms);
    } else {
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }
    return fd;
}

int cl_net_connect(const char *host, int port, int timeout_ms, int *sys_errno, cl_err *err)
{
    return connect_to(host, port, timeout_ms, NULL, true, sys_errno, err);
}

int cl_net_connect_stop(const char *host, int port, int timeout_ms, const cl_stop *stop, int *sys_errno, cl_err *err)
{
    if (cl_stop_raised(stop)) {
        if (sys_errno)
            *sys_errno = ECANCELED;
        return cl_err_set(err, CL_E_IO, "stopped before connecting to %s:%d (shutdown)", host, port);
    }
    return connect_to(host, port, timeout_ms, stop, false, sys_errno, err);
}
