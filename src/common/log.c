/* log.c — levelled logging to stderr and the monotonic clock. Owns cl_log_* and cl_now_ns.
 * The level is a process-wide atomic; each line is written with one fprintf under stderr's lock,
 * so lines from several threads never interleave. */
#include "cloister/common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static atomic_int g_level = -1; /* -1: not yet read from the environment */

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};

int cl_log_parse_level(const char *name, cl_log_level *out)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(level_names); i++) {
        if (name && strcmp(name, level_names[i]) == 0) {
            *out = (cl_log_level)i;
            return 0;
        }
    }
    return -1;
}

void cl_log_set_level(cl_log_level level) { atomic_store(&g_level, (int)level); }

cl_log_level cl_log_get_level(void)
{
    int l = atomic_load(&g_level);
    if (l < 0) {
        cl_log_level parsed = CL_LOG_INFO;
        const char *env = getenv("CLOISTER_LOG");
        if (env && cl_log_parse_level(env, &parsed) != 0)
            parsed = CL_LOG_INFO;
        int expected = -1;
        atomic_compare_exchange_strong(&g_level, &expected, (int)parsed);
        l = atomic_load(&g_level);
    }
    return (cl_log_level)l;
}

void cl_log(cl_log_level level, const char *module, const char *fmt, ...)
{
    if (level < cl_log_get_level() || level >= CL_LOG_OFF)
        return;
    char buf[1024], *msg = buf;
    va_list ap, again;
    va_start(ap, fmt);
    va_copy(again, ap);
    int n = vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* a line is never cut (an audit line names every secret of a request): longer ones are allocated */
    if (n >= (int)sizeof buf && (msg = malloc((size_t)n + 1)) != NULL)
        vsnprintf(msg, (size_t)n + 1, fmt, again);
    else if (n >= (int)sizeof buf)
        msg = buf; /* out of memory: the first 1023 bytes, marked */
    va_end(again);
    if (msg == buf && n >= (int)sizeof buf)
        memcpy(buf + sizeof buf - 4, "...", 4);

    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    gmtime_r(&ts.tv_sec, &tm);
    char when[32];
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%S", &tm);
    fprintf(stderr, "%s.%03ldZ %-5s [%s] %s\n", when, ts.tv_nsec / 1000000L, level_names[level],
            module ? module : "-", msg);
    if (msg != buf)
        free(msg);
}

uint64_t cl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
