/* err.c — the error type of libcloister: a status code plus a message a user can act on.
 * Owns cl_err_*, cl_status_name and cl_assert_fail. Thread-safe (no shared state). */
#include "cloister/common.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>

CL_PRINTF(3, 0) static void vset(cl_err *err, cl_status code, const char *fmt, va_list ap)
{
    err->code = code;
    vsnprintf(err->msg, sizeof err->msg, fmt, ap);
}

static void append(cl_err *err, const char *suffix)
{
    size_t used = strlen(err->msg);
    if (used < sizeof err->msg - 1)
        snprintf(err->msg + used, sizeof err->msg - used, ": %s", suffix);
}

int cl_err_set(cl_err *err, cl_status code, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    return -1;
}

int cl_err_nomem(cl_err *err) { return cl_err_set(err, CL_E_NOMEM, "%s", "out of memory"); }

int cl_err_errno(cl_err *err, cl_status code, int errno_value, const char *fmt, ...)
{
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    append(err, strerror(errno_value));
    return -1;
}

int cl_err_ssl(cl_err *err, cl_status code, const char *fmt, ...)
{
    unsigned long e = ERR_get_error();
    ERR_clear_error();
    if (!err)
        return -1;
    va_list ap;
    va_start(ap, fmt);
    vset(err, code, fmt, ap);
    va_end(ap);
    if (e) {
        char buf[256];
        ERR_error_string_n(e, buf, sizeof buf);
        append(err, buf);
    }
    return -1;
}

int cl_err_prefix(cl_err *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[CL_ERR_MSG_MAX], old[CL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    memcpy(old, err->msg, sizeof old);
    size_t n = strlen(prefix);
    if (n > sizeof err->msg - 3)
        n = sizeof err->msg - 3;
    memcpy(err->msg, prefix, n);
    memcpy(err->msg + n, ": ", 2);
    size_t room = sizeof err->msg - n - 2;
    size_t m = strnlen(old, room - 1);
    memcpy(err->msg + n + 2, old, m);
    err->msg[n + 2 + m] = '\0';
    return -1;
}

void cl_err_clear(cl_err *err)
{
    if (err) {
        err->code = CL_OK;
        err->msg[0] = '\0';
    }
}

const char *cl_status_name(cl_status code)
{
    static const char *const names[] = {
        [CL_OK] = "ok",           [CL_E_INVALID] = "invalid",   [CL_E_IO] = "io",
        [CL_E_NOMEM] = "nomem",   [CL_E_EXISTS] = "exists",     [CL_E_FORMAT] = "format",
        [CL_E_VERSION] = "version", [CL_E_KEY] = "key",         [CL_E_KEY_ID] = "key-id",
        [CL_E_AUTH] = "auth",     [CL_E_TRUNCATED] = "truncated", [CL_E_TRAILING] = "trailing",
        [CL_E_CRYPTO] = "crypto", [CL_E_UNSUPPORTED] = "unsupported", [CL_E_DENIED] = "denied",
        [CL_E_INTERNAL] = "internal", [CL_E_EXPIRED] = "expired",
    };
    if ((unsigned)code < CL_ARRAY_LEN(names) && names[code])
        return names[code];
    return "unknown";
}

void cl_assert_fail(const char *file, int line, const char *cond)
{
    fprintf(stderr, "%s:%d: assertion failed: %s\n", file, line, cond);
    fflush(stderr);
    abort();
}
