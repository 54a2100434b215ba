/* strbuf.c — cl_strbuf, the growing string used to build JSON bodies and metrics text. */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/common.h"

/* Makes room for `need` more bytes plus the NUL. */
static bool reserve(cl_strbuf *b, size_t need)
{
    if (b->failed)
        return false;
    if (need > SIZE_MAX / 2 - b->len) {
        b->failed = true;
        return false;
    }
    if (b->len + need + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < b->len + need + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (!p) {
        b->failed = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

void cl_strbuf_put(cl_strbuf *b, const void *s, size_t n)
{
    if (!reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

void cl_strbuf_str(cl_strbuf *b, const char *s) { cl_strbuf_put(b, s, strlen(s)); }

void cl_strbuf_fmt(cl_strbuf *b, const char *fmt, ...)
{
    /* format straight into the free space; only when it does not fit, grow and format again
     * (formatting a float costs more than the copy this saves: JSON bodies are mostly numbers) */
    if (!reserve(b, 63))
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(b->p + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    if (n < 0) {
        b->p[b->len] = '\0';
        b->failed = true;
        return;
    }
    if ((size_t)n >= b->cap - b->len) {
        if (!reserve(b, (size_t)n)) {
            b->p[b->len] = '\0';
            return;
        }
        va_start(ap, fmt);
        vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
        va_end(ap);
    }
    b->len += (size_t)n;
}

void cl_strbuf_json_string(cl_strbuf *b, const char *s)
{
    cl_strbuf_put(b, "\"", 1);
    size_t left = strlen(s);
    while (left) {
        unsigned char ch = (unsigned char)*s;
        size_t n = 1;
        if (ch == '"' || ch == '\\') {
            char e[2] = {'\\', (char)ch};
            cl_strbuf_put(b, e, 2);
        } else if (ch < 0x20) {
            cl_strbuf_fmt(b, "\\u%04x", ch);
        } else if (ch < 0x80) {
            cl_strbuf_put(b, &ch, 1);
        } else if ((n = cl_utf8_seq_len((const unsigned char *)s, left)) != 0) {
            cl_strbuf_put(b, s, n);
        } else {
            /* Not UTF-8 (a stray byte echoed from a request): U+FFFD, so the body stays valid JSON. */
            cl_strbuf_put(b, "\xef\xbf\xbd", 3);
            n = 1;
        }
        s += n;
        left -= n;
    }
    cl_strbuf_put(b, "\"", 1);
}

char *cl_strbuf_take(cl_strbuf *b, size_t *len)
{
    if (!b->failed && !b->p)
        cl_strbuf_put(b, "", 0);
    if (b->failed) {
        free(b->p);
        *b = (cl_strbuf){0};
        return NULL;
    }
    if (len)
        *len = b->len;
    char *p = b->p;
    *b = (cl_strbuf){0};
    return p;
}
