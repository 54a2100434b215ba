/* jsonnum.c — numbers in TF Serving's REST JSON, for jsonconv.c: the request tokens NaN, Infinity and
 * -Infinity (which TF Serving's parser accepts, and cJSON does not), integers read exactly from their
 * token text (a DT_INT64 beyond 2^53 is not rounded through a double), and floats written in the
 * shortest form that reads back as the same value (3.05, not 3.04999995), as TF Serving writes them.
 *
 * How the tokens are found: before cJSON parses a body, the special words outside strings are
 * replaced in a copy by "0" and blanks of the same length; after it parsed, the number nodes of the
 * tree and the number tokens of the text are walked together, both in document order, and each
 * node's (otherwise unused) valueint is set to its token's offset in the body, where
 * cl_serve_json_number reads what the token really was. Thread-safe (no shared state). */
#include "serve_int.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "jsonnum.h"

static const struct {
    const char *word;
    size_t len;
    cl_json_num_kind kind;
} specials[] = {{"NaN", 3, CL_JSON_NAN}, {"Infinity", 8, CL_JSON_INF}, {"-Infinity", 9, CL_JSON_NINF}};

static bool ident_char(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_';
}

/* The special word at p (NULL: none), which must end at a token boundary. */
static int special_at(const char *p, const char *end)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(specials); i++) {
        size_t n = specials[i].len;
        if ((size_t)(end - p) >= n && memcmp(p, specials[i].word, n) == 0 && (p + n == end || !ident_char(p[n])))
            return (int)i;
    }
    return -1;
}

/* Skips a string starting at its opening quote; returns the position after its closing quote. */
static const char *skip_string(const char *p, const char *end)
{
    for (p++; p < end; p++) {
        if (*p == '\\')
            p++;
        else if (*p == '"')
            return p + 1;
    }
    return end;
}

char *cl_json_specials_copy(const char *body, size_t len, bool *oom)
{
    *oom = false;
    if (!memchr(body, 'N', len) && !memchr(body, 'I', len))
        return NULL; /* the common case: no scan */
    const char *end = body + len;
    char *copy = NULL;
    for (const char *p = body; p < end;) {
        if (*p == '"') {
            p = skip_string(p, end);
            continue;
        }
        int k = (*p == 'N' || *p == 'I' || *p == '-') && (p == body || !ident_char(p[-1])) ? special_at(p, end) : -1;
        if (k < 0) {
            p++;
            continue;
        }
        if (!copy) {
            if (!(copy = malloc(len + 1))) {
                *oom = true;
                return NULL;
            }
            memcpy(copy, body, len);
            copy[len] = '\0';
        }
        char *q = copy + (p - body);
        q[0] = '0';
        memset(q + 1, ' ', specials[k].len - 1);
        p += specials[k].len;
    }
    return copy;
}

/* The next number token (or special word) outside strings at or after *pos; its offset, or -1. */
static long next_token(const char *body, size_t len, size_t *pos)
{
    const char *end = body + len;
    const char *p = body + *pos;
    while (p < end) {
        if (*p == '"') {
            p = skip_string(p, end);
            continue;
        }
        if (*p == '-' || (*p >= '0' && *p <= '9') || *p == 'N' || *p == 'I') {
            const char *start = p;
            int k = special_at(p, end);
            if (k >= 0) {
                p += specials[k].len;
            } else if (*p == 'N' || *p == 'I') {
                p++;
                continue;
            } else {
                while (p < end && ((*p >= '0' && *p <= '9') || *p == '-' || *p == '+' || *p == '.' || *p == 'e' ||
                                   *p == 'E'))
                    p++;
            }
            *pos = (size_t)(p - body);
            return (long)(start - body);
        }
        p++;
    }
    *pos = len;
    return -1;
}

static void annotate(cJSON *v, const char *body, size_t len, size_t *pos)
{
    for (; v; v = v->next) {
        if (cJSON_IsNumber(v)) {
            long off = next_token(body, len, pos);
            v->valueint = off < 0 || off > INT_MAX ? -1 : (int)off;
        } else if (v->child) {
            annotate(v->child, body, len, pos);
        }
    }
}

void cl_json_number_offsets(cJSON *root, const char *body, size_t len)
{
    size_t pos = 0;
    if (root && len <= INT_MAX)
        annotate(root, body, len, &pos);
}

cl_json_num_kind cl_json_number(const cJSON *v, const char *body, size_t len, int64_t *i64)
{
    if (!body || v->valueint < 0 || (size_t)v->valueint >= len)
        return CL_JSON_REAL;
    const char *p = body + v->valueint, *end = body + len;
    int k = special_at(p, end);
    if (k >= 0)
        return specials[k].kind;
    /* integer syntax: -?digits, nothing after */
    const char *q = p + (*p == '-');
    const char *d = q;
    while (q < end && *q >= '0' && *q <= '9')
        q++;
    if (q == d || (q < end && (*q == '.' || *q == 'e' || *q == 'E')))
        return CL_JSON_REAL;
    char buf[32];
    size_t n = (size_t)(q - p);
    if (n >= sizeof buf)
        return CL_JSON_INT_RANGE;
    memcpy(buf, p, n);
    buf[n] = '\0';
    errno = 0;
    long long x = strtoll(buf, NULL, 10);
    if (errno == ERANGE)
        return CL_JSON_INT_RANGE;
    *i64 = (int64_t)x;
    return CL_JSON_INT;
}

size_t cl_json_float(char *buf, size_t cap, float f)
{
    int n = 0;
    for (int prec = 6; prec <= 9; prec++) {
        n = snprintf(buf, cap, "%.*g", prec, (double)f);
        if (prec == 9 || strtof(buf, NULL) == f)
            break;
    }
    return n < 0 ? 0 : (size_t)n;
}

size_t cl_json_double(char *buf, size_t cap, double d)
{
    int n = 0;
    for (int prec = 15; prec <= 17; prec++) {
        n = snprintf(buf, cap, "%.*g", prec, d);
        if (prec == 17 || strtod(buf, NULL) == d)
            break;
    }
    return n < 0 ? 0 : (size_t)n;
}
