/* net.c — the TCP client plumbing shared by the key server's provisioning client and the TF
 * Serving client: connecting with a timeout, per-socket I/O timeouts, address literals. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <sys/socket.h>
#include <unistd.h>

#include "cloister/common.h"

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

int cl_net_connect(const char *host, int port, int timeout_ms, int *sys_errno, cl_err *err)
{
    if (sys_errno)
        *sys_errno = 0;
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res, *ai;
    char ports[8];
    snprintf(ports, sizeof ports, "%d", port);
    int g = getaddrinfo(host, ports, &hints, &res);
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
            struct pollfd pfd = {fd, POLLOUT, 0};
            int so = 0;
            socklen_t sl = sizeof so;
            int pr = poll(&pfd, 1, timeout_ms);
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
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    cl_net_set_timeouts(fd, timeout_ms);
    return fd;
}
