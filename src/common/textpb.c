/* textpb.c — the protobuf text-format reader of textpb.h: a tokenizer over the text (line and
 * column of every token) and a parser that fills a protobuf-c message through its descriptor
 * (field offsets, quantifiers, oneof cases), every allocation through the caller's allocator.
 * Stateless, so thread-safe. */
#include "cloister/textpb.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

typedef enum { T_EOF, T_IDENT, T_NUM, T_STR, T_PUNCT } tkind;

typedef struct tok {
    tkind kind;
    const char *p; /* the token's bytes (a string: with its quotes) */
    size_t n;
    int line, col;
} tok;

typedef struct loc {
    const void *msg;
    const ProtobufCFieldDescriptor *field;
    size_t index;
    int line, col;
} loc;

struct cl_textpb_locs {
    loc *v;
    size_t n, cap;
};

typedef struct parser {
    const char *p, *end, *line_start;
    int line;
    tok cur;
    const cl_textpb_options *o;
    ProtobufCAllocator *a;
    unsigned max_depth;
    cl_textpb_locs *locs; /* NULL: not recorded */
    const char *parent;   /* the name of the field whose message is being read */
    bool colon;           /* the current field's name was followed by ':' */
    cl_err *err;
} parser;

static int record(parser *ps, const void *msg, const ProtobufCFieldDescriptor *f, size_t index, const tok *at)
{
    cl_textpb_locs *l = ps->locs;
    if (!l)
        return 0;
    if (l->n == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 16;
        loc *g = realloc(l->v, cap * sizeof *g);
        if (!g)
            return cl_err_nomem(ps->err);
        l->v = g;
        l->cap = cap;
    }
    l->v[l->n++] = (loc){msg, f, index, at->line, at->col};
    return 0;
}

bool cl_textpb_where(const cl_textpb_locs *locs, const void *msg, const char *field, size_t index, int *line,
                     int *col)
{
    for (size_t i = 0; locs && i < locs->n; i++) {
        const loc *l = &locs->v[locs->n - 1 - i]; /* the last given counts */
        if (l->msg == msg && l->index == index && strcmp(l->field->name, field) == 0) {
            *line = l->line;
            *col = l->col;
            return true;
        }
    }
    return false;
}

void cl_textpb_locs_free(cl_textpb_locs *locs)
{
    if (locs) {
        free(locs->v);
        free(locs);
    }
}

/* A google.protobuf.*Value wrapper: one field named value. */
static bool is_wrapper(const ProtobufCMessageDescriptor *d)
{
    size_t n = strlen(d->name);
    return !strncmp(d->name, "google.protobuf.", 16) && n > 21 && !strcmp(d->name + n - 5, "Value") &&
           d->n_fields == 1 && !strcmp(d->fields[0].name, "value");
}

static void *pa_alloc(parser *ps, size_t n)
{
    void *p = ps->a->alloc(ps->a->allocator_data, n ? n : 1);
    if (!p)
        cl_err_set(ps->err, CL_E_NOMEM, "out of memory reading text format (%zu bytes)", n);
    return p;
}

static void pa_free(ProtobufCAllocator *a, void *p)
{
    if (p)
        a->free(a->allocator_data, p);
}

static void *sys_alloc(void *d, size_t n)
{
    (void)d;
    return malloc(n);
}

static void sys_free(void *d, void *p)
{
    (void)d;
    free(p);
}

static ProtobufCAllocator sys_allocator = {sys_alloc, sys_free, NULL};

/* An error at token t: "line L: <msg> (column C)". */
static int perr(parser *ps, const tok *t, const char *fmt, ...) CL_PRINTF(3, 4);
static int perr(parser *ps, const tok *t, const char *fmt, ...)
{
    char m[CL_ERR_MSG_MAX];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    return cl_err_set(ps->err, CL_E_FORMAT, "line %d: %s (column %d)", t->line, m, t->col);
}

/* How a token reads in a message: 'x', "text", end of input; with CL_TEXTPB_SECRET only its kind. */
static const char *describe_tok(const parser *ps, const tok *t, char *buf, size_t cap)
{
    if (t->kind == T_EOF)
        return "end of input";
    if ((ps->o->flags & CL_TEXTPB_SECRET) && t->kind != T_PUNCT)
        return t->kind == T_IDENT ? "a name" : t->kind == T_NUM ? "a number" : "a string";
    size_t n = t->n > 40 ? 40 : t->n;
    snprintf(buf, cap, "'%.*s%s'", (int)n, t->p, t->n > n ? "..." : "");
    return buf;
}

static bool is_alpha(char c) { return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_'; }
static bool is_digit(char c) { return c >= '0' && c <= '9'; }

static int hexval(char c)
{
    if (is_digit(c))
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Lexes the next token into ps->cur. */
static int next(parser *ps)
{
    for (;;) {
        while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\r' || *ps->p == '\n' ||
                                   *ps->p == '\v' || *ps->p == '\f')) {
            if (*ps->p == '\n') {
                ps->line++;
                ps->line_start = ps->p + 1;
            }
            ps->p++;
        }
        if (ps->p < ps->end && *ps->p == '#') {
            while (ps->p < ps->end && *ps->p != '\n')
                ps->p++;
            continue;
        }
        break;
    }
    tok *t = &ps->cur;
    t->p = ps->p;
    t->line = ps->line;
    t->col = (int)(ps->p - ps->line_start) + 1;
    if (ps->p >= ps->end) {
        t->kind = T_EOF;
        t->n = 0;
        return 0;
    }
    char c = *ps->p;
    const char *s = ps->p;
    if (is_alpha(c)) {
        while (ps->p < ps->end && (is_alpha(*ps->p) || is_digit(*ps->p)))
            ps->p++;
        t->kind = T_IDENT;
    } else if (is_digit(c) || (c == '.' && ps->p + 1 < ps->end && is_digit(ps->p[1]))) {
        /* a number and whatever letters stick to it (checked when it is converted) */
        bool hex = c == '0' && ps->p + 1 < ps->end && (ps->p[1] == 'x' || ps->p[1] == 'X');
        ps->p++;
        while (ps->p < ps->end) {
            char d = *ps->p;
            if (is_alpha(d) || is_digit(d) || d == '.')
                ps->p++;
            else if ((d == '+' || d == '-') && !hex && (ps->p[-1] == 'e' || ps->p[-1] == 'E'))
                ps->p++;
            else
                break;
        }
        t->kind = T_NUM;
    } else if (c == '"' || c == '\'') {
        ps->p++;
        for (;;) {
            if (ps->p >= ps->end || *ps->p == '\n') {
                t->n = (size_t)(ps->p - s);
                return perr(ps, t, "unterminated string: a quoted string ends on its own line with %c", c);
            }
            if (*ps->p == '\\') {
                ps->p++;
                if (ps->p >= ps->end || *ps->p == '\n')
                    continue; /* reported as unterminated */
            } else if (*ps->p == c) {
                ps->p++;
                break;
            }
            ps->p++;
        }
        t->kind = T_STR;
    } else if (strchr(":{}<>[],;-", c) && c != '\0') {
        ps->p++;
        t->kind = T_PUNCT;
    } else {
        t->n = 1;
        if ((unsigned char)c < 0x20 || (unsigned char)c >= 0x7f)
            return perr(ps, t, "unexpected byte 0x%02x", (unsigned char)c);
        return perr(ps, t, "unexpected character '%c'", c);
    }
    t->n = (size_t)(ps->p - s);
    return 0;
}

static bool is_punct(const tok *t, char c) { return t->kind == T_PUNCT && *t->p == c; }

static bool ident_is(const tok *t, const char *s) { return t->kind == T_IDENT && strlen(s) == t->n && !memcmp(t->p, s, t->n); }

/* ---------------------------------------------------------------- values */

static const char *type_name(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT32: return "int32";
    case PROTOBUF_C_TYPE_SINT32: return "sint32";
    case PROTOBUF_C_TYPE_SFIXED32: return "sfixed32";
    case PROTOBUF_C_TYPE_INT64: return "int64";
    case PROTOBUF_C_TYPE_SINT64: return "sint64";
    case PROTOBUF_C_TYPE_SFIXED64: return "sfixed64";
    case PROTOBUF_C_TYPE_UINT32: return "uint32";
    case PROTOBUF_C_TYPE_FIXED32: return "fixed32";
    case PROTOBUF_C_TYPE_UINT64: return "uint64";
    case PROTOBUF_C_TYPE_FIXED64: return "fixed64";
    case PROTOBUF_C_TYPE_FLOAT: return "float";
    case PROTOBUF_C_TYPE_DOUBLE: return "double";
    case PROTOBUF_C_TYPE_BOOL: return "bool";
    case PROTOBUF_C_TYPE_ENUM: return "enum";
    case PROTOBUF_C_TYPE_STRING: return "string";
    case PROTOBUF_C_TYPE_BYTES: return "bytes";
    default: return "message";
    }
}

/* An integer literal (decimal, 0x hex, 0 octal) -> magnitude. 1: not an integer literal, 2: above
 * UINT64_MAX. */
static int int_literal(const tok *t, uint64_t *out)
{
    const char *p = t->p, *e = t->p + t->n;
    unsigned base = 10;
    if (t->n > 2 && p[0] == '0' && (p[1] == 'x' || p[1] == 'X'))
        base = 16, p += 2;
    else if (t->n > 1 && p[0] == '0')
        base = 8, p++;
    uint64_t v = 0;
    bool over = false;
    for (; p < e; p++) {
        int d = hexval(*p);
        if (d < 0 || (unsigned)d >= base)
            return 1;
        if (v > (UINT64_MAX - (unsigned)d) / base)
            over = true;
        v = v * base + (unsigned)d;
    }
    *out = v;
    return over ? 2 : 0;
}

/* A float literal: digits with '.', exponent, an 'f' suffix; integers too. 0 or -1 (not a number). */
static int float_literal(const tok *t, double *out)
{
    uint64_t u;
    int r = int_literal(t, &u);
    if (r == 0) {
        *out = (double)u;
        return 0;
    }
    char buf[128];
    size_t n = t->n;
    if (n && (t->p[n - 1] == 'f' || t->p[n - 1] == 'F'))
        n--;
    if (!n || n >= sizeof buf)
        return -1;
    memcpy(buf, t->p, n);
    buf[n] = '\0';
    /* the spec's FLOAT: digits, one '.', an exponent with digits; no hex floats, no inf/nan here */
    bool dot = false, exp = false, digit = false;
    for (size_t i = 0; i < n; i++) {
        char c = buf[i];
        if (is_digit(c))
            digit = true;
        else if (c == '.' && !dot && !exp)
            dot = true;
        else if ((c == 'e' || c == 'E') && digit && !exp) {
            exp = true;
            digit = false;
            if (i + 1 < n && (buf[i + 1] == '+' || buf[i + 1] == '-'))
                i++;
        } else
            return -1;
    }
    if (!digit)
        return -1;
    if (n == t->n && !dot && !exp && (r != 2 || buf[0] == '0'))
        return -1; /* an integer that int_literal refused (08, 1x); one above UINT64_MAX is a float */
    if (n != t->n && !dot && !exp && buf[0] == '0' && n > 1)
        return -1; /* 01f: octal-looking */
    char *end;
    errno = 0;
    *out = strtod(buf, &end);
    return *end ? -1 : 0; /* out of range: inf or 0, as protobuf's parser */
}

/* Reads an optional '-' then the value token; leaves ps->cur on the value. */
static int read_sign(parser *ps, bool *neg)
{
    *neg = is_punct(&ps->cur, '-');
    return *neg ? next(ps) : 0;
}

static int parse_int(parser *ps, const ProtobufCFieldDescriptor *f, void *dst)
{
    bool neg;
    tok start = ps->cur;
    if (read_sign(ps, &neg) != 0)
        return -1;
    tok *t = &ps->cur;
    bool is_signed = false;
    uint64_t max = UINT64_MAX;
    switch (f->type) {
    case PROTOBUF_C_TYPE_INT32: case PROTOBUF_C_TYPE_SINT32: case PROTOBUF_C_TYPE_SFIXED32:
        is_signed = true, max = INT32_MAX;
        break;
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
        is_signed = true, max = INT64_MAX;
        break;
    case PROTOBUF_C_TYPE_UINT32: case PROTOBUF_C_TYPE_FIXED32:
        max = UINT32_MAX;
        break;
    default:
        break;
    }
    char lo[24] = "0";
    if (is_signed)
        snprintf(lo, sizeof lo, "%lld", max == INT32_MAX ? (long long)INT32_MIN : (long long)INT64_MIN);
    char d[64];
    if (t->kind != T_NUM)
        return perr(ps, t, "'%s' needs a whole number from %s to %llu (%s), found %s", f->name, lo,
                    (unsigned long long)max, type_name(f->type), describe_tok(ps, t, d, sizeof d));
    uint64_t u;
    int r = int_literal(t, &u);
    if (r == 1)
        return perr(ps, t, "%s is not an integer: '%s' needs a whole number from %s to %llu (%s)",
                    describe_tok(ps, t, d, sizeof d), f->name, lo, (unsigned long long)max, type_name(f->type));
    if (r == 2 || (neg && !is_signed && u) || (!neg && u > max) || (neg && u > max + 1))
        return perr(ps, &start, "number out of range for '%s', which needs a whole number from %s to %llu (%s)",
                    f->name, lo, (unsigned long long)max, type_name(f->type));
    if (is_signed) {
        int64_t v = neg ? (u == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)u) : (int64_t)u;
        if (max == INT32_MAX)
            *(int32_t *)dst = (int32_t)v;
        else
            *(int64_t *)dst = v;
    } else if (max == UINT32_MAX) {
        *(uint32_t *)dst = (uint32_t)u;
    } else {
        *(uint64_t *)dst = u;
    }
    return next(ps);
}

static int parse_float(parser *ps, const ProtobufCFieldDescriptor *f, void *dst)
{
    bool neg;
    if (read_sign(ps, &neg) != 0)
        return -1;
    tok *t = &ps->cur;
    double v;
    char d[64];
    if (t->kind == T_IDENT && ((t->n == 3 && !strncasecmp(t->p, "inf", 3)) ||
                               (t->n == 8 && !strncasecmp(t->p, "infinity", 8))))
        v = INFINITY;
    else if (t->kind == T_IDENT && t->n == 3 && !strncasecmp(t->p, "nan", 3))
        v = NAN;
    else if (t->kind != T_NUM || float_literal(t, &v) != 0)
        return perr(ps, t, "'%s' needs a number (%s: 1, -2.5, 1e3, 1.5f, inf, nan), found %s", f->name,
                    type_name(f->type), describe_tok(ps, t, d, sizeof d));
    if (neg)
        v = -v;
    if (f->type == PROTOBUF_C_TYPE_FLOAT)
        *(float *)dst = (float)v;
    else
        *(double *)dst = v;
    return next(ps);
}

static int parse_bool(parser *ps, const ProtobufCFieldDescriptor *f, protobuf_c_boolean *dst)
{
    tok *t = &ps->cur;
    uint64_t u = 2;
    if (ident_is(t, "true") || ident_is(t, "True") || ident_is(t, "t"))
        u = 1;
    else if (ident_is(t, "false") || ident_is(t, "False") || ident_is(t, "f"))
        u = 0;
    else if (t->kind == T_NUM && int_literal(t, &u) != 0)
        u = 2;
    char d[64];
    if (u > 1)
        return perr(ps, t, "%s must be true or false (or True, False, t, f, 1, 0), found %s", f->name,
                    describe_tok(ps, t, d, sizeof d));
    *dst = u == 1;
    return next(ps);
}

static int parse_enum(parser *ps, const ProtobufCFieldDescriptor *f, int32_t *dst)
{
    const ProtobufCEnumDescriptor *ed = f->descriptor;
    tok start = ps->cur;
    bool neg;
    if (read_sign(ps, &neg) != 0)
        return -1;
    tok *t = &ps->cur;
    char d[64], name[128];
    const ProtobufCEnumValue *ev = NULL;
    if (t->kind == T_IDENT && !neg && t->n < sizeof name) {
        memcpy(name, t->p, t->n);
        name[t->n] = '\0';
        ev = protobuf_c_enum_descriptor_get_value_by_name(ed, name);
    } else if (t->kind == T_NUM) {
        uint64_t u;
        if (int_literal(t, &u) == 0 && u <= (uint64_t)INT32_MAX + neg)
            ev = protobuf_c_enum_descriptor_get_value(ed, neg ? (int)(-(int64_t)u) : (int)u);
    }
    if (!ev) {
        char names[256] = "";
        size_t used = 0;
        for (unsigned i = 0; i < ed->n_values && used + 1 < sizeof names; i++) {
            int w = snprintf(names + used, sizeof names - used, "%s%s", i ? ", " : "", ed->values[i].name);
            used += w > 0 ? (size_t)w : 0;
        }
        return perr(ps, &start, "'%s' needs a value of enum %s (%s), found %s", f->name, ed->name, names,
                    describe_tok(ps, t, d, sizeof d));
    }
    *dst = ev->value;
    return next(ps);
}

/* Appends one decoded character (or UTF-8 of a code point) of a string literal. */
static int put_byte(parser *ps, char *buf, size_t *n, size_t cap, unsigned char c)
{
    (void)ps;
    if (*n >= cap)
        return -1;
    buf[(*n)++] = (char)c;
    return 0;
}

/* One or more adjacent string literals, decoded into a buffer from the allocator (NUL-terminated,
 * *len bytes before the NUL). ps->cur is past them on return. */
static int parse_string(parser *ps, const ProtobufCFieldDescriptor *f, char **out, size_t *len)
{
    tok *t = &ps->cur;
    char d[64];
    if (t->kind != T_STR)
        return perr(ps, t, "'%s' wants a quoted string, found %s (expected a quoted string: \"...\" or '...')",
                    f->name, describe_tok(ps, t, d, sizeof d));
    /* the decoded text is never longer than the literals, quotes included */
    size_t cap = 0;
    {
        parser probe = *ps;
        while (probe.cur.kind == T_STR) {
            cap += probe.cur.n;
            if (next(&probe) != 0)
                break; /* reported when the real lexer gets there */
        }
    }
    char *buf = pa_alloc(ps, cap + 1);
    if (!buf)
        return -1;
    size_t n = 0;
    while (ps->cur.kind == T_STR) {
        const char *p = t->p + 1, *e = t->p + t->n - 1;
        while (p < e) {
            unsigned char c = (unsigned char)*p++;
            if (c != '\\') {
                put_byte(ps, buf, &n, cap, c);
                continue;
            }
            tok at = *t;
            at.col += (int)(p - 1 - t->p);
            char x = *p++;
            switch (x) {
            case 'a': c = '\a'; break;
            case 'b': c = '\b'; break;
            case 'f': c = '\f'; break;
            case 'n': c = '\n'; break;
            case 'r': c = '\r'; break;
            case 't': c = '\t'; break;
            case 'v': c = '\v'; break;
            case '\\': case '\'': case '"': case '?': c = (unsigned char)x; break;
            case 'x': case 'X': {
                unsigned v = 0, k = 0;
                while (k < 2 && p < e && hexval(*p) >= 0)
                    v = v * 16 + (unsigned)hexval(*p++), k++;
                if (!k) {
                    perr(ps, &at, "\\x without hex digits in a string");
                    goto fail;
                }
                c = (unsigned char)v;
                break;
            }
            case 'u': case 'U': {
                unsigned want = x == 'u' ? 4 : 8, k = 0;
                uint32_t cp = 0;
                while (k < want && p < e && hexval(*p) >= 0)
                    cp = cp * 16 + (uint32_t)hexval(*p++), k++;
                if (k < want || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) {
                    perr(ps, &at, "\\%c wants %u hex digits of a Unicode scalar value (not a surrogate, at most "
                         "10FFFF)", x, want);
                    goto fail;
                }
                unsigned char u8[4];
                size_t m;
                if (cp < 0x80)
                    u8[0] = (unsigned char)cp, m = 1;
                else if (cp < 0x800)
                    u8[0] = (unsigned char)(0xC0 | cp >> 6), u8[1] = (unsigned char)(0x80 | (cp & 0x3F)), m = 2;
                else if (cp < 0x10000)
                    u8[0] = (unsigned char)(0xE0 | cp >> 12), u8[1] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)),
                    u8[2] = (unsigned char)(0x80 | (cp & 0x3F)), m = 3;
                else
                    u8[0] = (unsigned char)(0xF0 | cp >> 18), u8[1] = (unsigned char)(0x80 | ((cp >> 12) & 0x3F)),
                    u8[2] = (unsigned char)(0x80 | ((cp >> 6) & 0x3F)), u8[3] = (unsigned char)(0x80 | (cp & 0x3F)),
                    m = 4;
                for (size_t i = 0; i + 1 < m; i++)
                    put_byte(ps, buf, &n, cap, u8[i]);
                c = u8[m - 1];
                break;
            }
            default:
                if (x >= '0' && x <= '7') {
                    unsigned v = (unsigned)(x - '0'), k = 1;
                    while (k < 3 && p < e && *p >= '0' && *p <= '7')
                        v = v * 8 + (unsigned)(*p++ - '0'), k++;
                    if (v > 255) {
                        perr(ps, &at, "octal escape above \\377 in a string");
                        goto fail;
                    }
                    c = (unsigned char)v;
                } else {
                    perr(ps, &at, "unknown escape '\\%c' in a string (known: \\n \\t \\r \\a \\b \\f \\v \\\\ \\' "
                         "\\\" \\? \\NNN \\xHH \\uXXXX \\UXXXXXXXX)", x);
                    goto fail;
                }
            }
            if (c == '\0' && f->type == PROTOBUF_C_TYPE_STRING) {
                perr(ps, &at, "NUL byte in string field '%s' (a bytes field may hold one)", f->name);
                goto fail;
            }
            put_byte(ps, buf, &n, cap, c);
        }
        if (next(ps) != 0)
            goto fail;
    }
    buf[n] = '\0';
    if (f->type == PROTOBUF_C_TYPE_STRING)
        for (size_t i = 0; i < n;) {
            size_t k = cl_utf8_seq_len((const unsigned char *)buf + i, n - i);
            if (!k) {
                tok at = *t;
                perr(ps, &at, "string field '%s' is not valid UTF-8 (byte %zu of its value; a bytes field takes "
                     "any bytes)", f->name, i);
                goto fail;
            }
            i += k;
        }
    *out = buf;
    *len = n;
    return 0;
fail:
    cl_memzero(buf, cap + 1);
    pa_free(ps->a, buf);
    return -1;
}

/* ---------------------------------------------------------------- messages */

static size_t elem_size(ProtobufCType t)
{
    switch (t) {
    case PROTOBUF_C_TYPE_INT64: case PROTOBUF_C_TYPE_SINT64: case PROTOBUF_C_TYPE_SFIXED64:
    case PROTOBUF_C_TYPE_UINT64: case PROTOBUF_C_TYPE_FIXED64: case PROTOBUF_C_TYPE_DOUBLE:
        return 8;
    case PROTOBUF_C_TYPE_BOOL:
        return sizeof(protobuf_c_boolean);
    case PROTOBUF_C_TYPE_STRING: case PROTOBUF_C_TYPE_MESSAGE:
        return sizeof(void *);
    case PROTOBUF_C_TYPE_BYTES:
        return sizeof(ProtobufCBinaryData);
    default:
        return 4;
    }
}

#define MEMBER(msg, off) ((void *)((char *)(msg) + (off)))

static void free_value(ProtobufCAllocator *a, const ProtobufCFieldDescriptor *f, void *slot);

static void free_msg(ProtobufCAllocator *a, ProtobufCMessage *m)
{
    if (!m)
        return;
    const ProtobufCMessageDescriptor *d = m->descriptor;
    for (unsigned i = 0; i < d->n_fields; i++) {
        const ProtobufCFieldDescriptor *f = &d->fields[i];
        if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
            *(uint32_t *)MEMBER(m, f->quantifier_offset) != f->id)
            continue;
        if (f->label == PROTOBUF_C_LABEL_REPEATED) {
            size_t n = *(size_t *)MEMBER(m, f->quantifier_offset);
            char *arr = *(char **)MEMBER(m, f->offset);
            for (size_t k = 0; arr && k < n; k++)
                free_value(a, f, arr + k * elem_size(f->type));
            pa_free(a, arr);
        } else {
            free_value(a, f, MEMBER(m, f->offset));
        }
    }
    pa_free(a, m);
}

static void free_value(ProtobufCAllocator *a, const ProtobufCFieldDescriptor *f, void *slot)
{
    if (f->type == PROTOBUF_C_TYPE_STRING) {
        char *s = *(char **)slot;
        if (s && s != protobuf_c_empty_string && s != (const char *)f->default_value)
            pa_free(a, s);
    } else if (f->type == PROTOBUF_C_TYPE_BYTES) {
        ProtobufCBinaryData *b = slot;
        const ProtobufCBinaryData *def = f->default_value;
        if (b->data && (!def || b->data != def->data))
            pa_free(a, b->data);
    } else if (f->type == PROTOBUF_C_TYPE_MESSAGE) {
        free_msg(a, *(ProtobufCMessage **)slot);
    }
}

static ProtobufCMessage *new_msg(parser *ps, const ProtobufCMessageDescriptor *d)
{
    ProtobufCMessage *m = pa_alloc(ps, d->sizeof_message);
    if (m)
        d->message_init(m);
    return m;
}

static int parse_fields(parser *ps, ProtobufCMessage *m, const tok *open, char close, unsigned depth);

/* A message value: '{' or '<', its fields, the matching close. `into` NULL: a new message. */
static int parse_msg_value(parser *ps, const ProtobufCFieldDescriptor *f, ProtobufCMessage **slot, unsigned depth)
{
    tok open = ps->cur;
    char d[64];
    const ProtobufCMessageDescriptor *md = f->descriptor;
    if (!is_punct(&open, '{') && !is_punct(&open, '<')) {
        if (is_wrapper(md)) {
            const char *v = md->fields[0].type == PROTOBUF_C_TYPE_STRING || md->fields[0].type == PROTOBUF_C_TYPE_BYTES
                                ? "\"...\"" : "N";
            bool sh = ps->o->flags & CL_TEXTPB_WRAPPER_SHORTHAND;
            return perr(ps, &open, "expected '{ value: %s }'%s%s%s after '%s' (%s), found %s", v, sh ? " or ': " : "",
                        sh ? v : "", sh ? "'" : "", f->name, md->name, describe_tok(ps, &open, d, sizeof d));
        }
        return perr(ps, &open, "expected '{' or '<' to open message field '%s' (%s), found %s", f->name, md->name,
                    describe_tok(ps, &open, d, sizeof d));
    }
    if (depth >= ps->max_depth)
        return perr(ps, &open, "messages nested deeper than %u levels", ps->max_depth);
    if (!*slot && !(*slot = new_msg(ps, f->descriptor)))
        return -1;
    if (next(ps) != 0)
        return -1;
    const char *saved = ps->parent;
    ps->parent = f->name;
    int rc = parse_fields(ps, *slot, &open, *open.p == '{' ? '}' : '>', depth + 1);
    ps->parent = saved;
    return rc;
}

/* One value of field f into slot (an element of a repeated field, or the field itself). */
static int parse_value(parser *ps, const ProtobufCFieldDescriptor *f, void *slot, unsigned depth)
{
    switch (f->type) {
    case PROTOBUF_C_TYPE_FLOAT: case PROTOBUF_C_TYPE_DOUBLE:
        return parse_float(ps, f, slot);
    case PROTOBUF_C_TYPE_BOOL:
        return parse_bool(ps, f, slot);
    case PROTOBUF_C_TYPE_ENUM:
        return parse_enum(ps, f, slot);
    case PROTOBUF_C_TYPE_STRING: {
        char *s;
        size_t n;
        if (parse_string(ps, f, &s, &n) != 0)
            return -1;
        free_value(ps->a, f, slot);
        *(char **)slot = s;
        return 0;
    }
    case PROTOBUF_C_TYPE_BYTES: {
        char *s;
        size_t n;
        if (parse_string(ps, f, &s, &n) != 0)
            return -1;
        free_value(ps->a, f, slot);
        *(ProtobufCBinaryData *)slot = (ProtobufCBinaryData){.len = n, .data = (uint8_t *)s};
        return 0;
    }
    case PROTOBUF_C_TYPE_MESSAGE:
        return parse_msg_value(ps, f, slot, depth);
    default:
        return parse_int(ps, f, slot);
    }
}

/* A new zeroed element at the end of repeated field f of m (capacity: the next power of two). */
static void *push(parser *ps, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f)
{
    size_t *n = MEMBER(m, f->quantifier_offset);
    char **arr = MEMBER(m, f->offset);
    size_t es = elem_size(f->type);
    if (*n == 0 || (*n & (*n - 1)) == 0) {
        size_t cap = *n ? *n * 2 : 1;
        if (cap > SIZE_MAX / es) {
            cl_err_set(ps->err, CL_E_NOMEM, "repeated field '%s' too long", f->name);
            return NULL;
        }
        char *g = pa_alloc(ps, cap * es);
        if (!g)
            return NULL;
        if (*n)
            memcpy(g, *arr, *n * es);
        pa_free(ps->a, *arr);
        *arr = g;
    }
    char *e = *arr + (*n)++ * es;
    memset(e, 0, es);
    if (f->type == PROTOBUF_C_TYPE_STRING)
        *(const char **)e = protobuf_c_empty_string;
    return e;
}

/* One value of f into slot; `field: N` for a wrapper message with the shorthand flag. */
static int parse_value_or_short(parser *ps, const ProtobufCFieldDescriptor *f, void *slot, unsigned depth)
{
    const ProtobufCMessageDescriptor *md = f->descriptor;
    if (f->type == PROTOBUF_C_TYPE_MESSAGE && ps->colon && (ps->o->flags & CL_TEXTPB_WRAPPER_SHORTHAND) && is_wrapper(md) &&
        !is_punct(&ps->cur, '{') && !is_punct(&ps->cur, '<')) {
        ProtobufCMessage **mp = slot;
        if (!*mp && !(*mp = new_msg(ps, md)))
            return -1;
        if (record(ps, *mp, &md->fields[0], 0, &ps->cur) != 0)
            return -1;
        return parse_value(ps, &md->fields[0], MEMBER(*mp, md->fields[0].offset), depth);
    }
    return parse_value(ps, f, slot, depth);
}

static int parse_repeated_one(parser *ps, ProtobufCMessage *m, const ProtobufCFieldDescriptor *f, const tok *at,
                              unsigned depth)
{
    void *e = push(ps, m, f);
    if (!e || record(ps, m, f, *(size_t *)MEMBER(m, f->quantifier_offset) - 1, at) != 0)
        return -1;
    return parse_value_or_short(ps, f, e, depth);
}

static int parse_field(parser *ps, ProtobufCMessage *m, uint8_t *seen, unsigned depth)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    tok name = ps->cur;
    char d[64], fname[128];
    if (name.kind != T_IDENT)
        return perr(ps, &name, "expected a field name of %s, found %s", md->name, describe_tok(ps, &name, d, sizeof d));
    const ProtobufCFieldDescriptor *f = NULL;
    if (name.n < sizeof fname) {
        memcpy(fname, name.p, name.n);
        fname[name.n] = '\0';
        f = protobuf_c_message_descriptor_get_field_by_name(md, fname);
    }
    if (next(ps) != 0)
        return -1;
    if (!f) {
        char list[240] = "expected ";
        size_t used = strlen(list);
        for (unsigned i = 0; i < md->n_fields && used + 1 < sizeof list; i++) {
            int w = snprintf(list + used, sizeof list - used, "%s'%s%s'", i ? ", " : "", md->fields[i].name,
                             md->fields[i].type == PROTOBUF_C_TYPE_MESSAGE ? " {" : ":");
            used += w > 0 ? (size_t)w : 0;
        }
        if (used + 1 < sizeof list)
            snprintf(list + used, sizeof list - used, "%s%s", md->n_fields ? " or " : "",
                     depth ? "'}'" : "the end of the input");
        const char *noun = "field";
        for (size_t i = 0; i < ps->o->n_nouns; i++)
            if (ps->o->nouns[i].type == md)
                noun = ps->o->nouns[i].noun;
        bool delim = is_punct(&ps->cur, ':') || is_punct(&ps->cur, '{') || is_punct(&ps->cur, '<');
        /* a name not followed by ':' or '{' may be a stray line of a key: describe_tok hides it */
        if (!delim)
            return perr(ps, &name, "unexpected text %s where a %s of %s was expected (%s)",
                        describe_tok(ps, &name, d, sizeof d), noun, md->name, list);
        if (!md->n_fields && ps->parent)
            return perr(ps, &name, "unknown %s '%.*s': %s {} has no fields", noun, (int)(name.n > 64 ? 64 : name.n),
                        name.p, ps->parent);
        return perr(ps, &name, "unknown %s '%.*s' in %s (%s)", noun, (int)(name.n > 64 ? 64 : name.n), name.p,
                    md->name, list);
    }
    unsigned idx = (unsigned)(f - md->fields);
    bool repeated = f->label == PROTOBUF_C_LABEL_REPEATED;
    if (!repeated) {
        if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) {
            uint32_t *c = MEMBER(m, f->quantifier_offset);
            if (*c && *c != f->id) {
                const ProtobufCFieldDescriptor *other = protobuf_c_message_descriptor_get_field(md, (unsigned)*c);
                char members[200] = "";
                size_t used = 0;
                for (unsigned i = 0; i < md->n_fields && used + 1 < sizeof members; i++)
                    if ((md->fields[i].flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
                        md->fields[i].quantifier_offset == f->quantifier_offset) {
                        int w = snprintf(members + used, sizeof members - used, "%s%s", used ? ", " : "",
                                         md->fields[i].name);
                        used += w > 0 ? (size_t)w : 0;
                    }
                return perr(ps, &name, "field '%s' is given along with '%s': %s takes one of %s", f->name,
                            other ? other->name : "?", md->name, members);
            }
        }
        if (seen[idx] && (ps->o->flags & CL_TEXTPB_FORBID_OVERWRITE))
            return perr(ps, &name, "field '%s' given twice (it is not repeated)", f->name);
    }
    seen[idx] = 1;
    bool colon = is_punct(&ps->cur, ':');
    if (colon && next(ps) != 0)
        return -1;
    ps->colon = colon;
    if (f->type != PROTOBUF_C_TYPE_MESSAGE && !colon)
        return perr(ps, &ps->cur, "expected ':' after '%s', found %s", f->name, describe_tok(ps, &ps->cur, d, sizeof d));
    if (is_punct(&ps->cur, '[') && (colon || f->type == PROTOBUF_C_TYPE_MESSAGE)) {
        tok open = ps->cur;
        if (!repeated)
            return perr(ps, &open, "a list [...] for '%s', which is not repeated", f->name);
        if (next(ps) != 0)
            return -1;
        if (!is_punct(&ps->cur, ']'))
            for (;;) {
                ps->colon = true; /* a nested message may have reset it */
                if (parse_repeated_one(ps, m, f, &name, depth) != 0)
                    return -1;
                if (is_punct(&ps->cur, ']'))
                    break;
                if (!is_punct(&ps->cur, ','))
                    return perr(ps, &ps->cur, "missing ']' or ',' in the list of '%s' opened at line %d, column %d; "
                                "found %s", f->name, open.line, open.col, describe_tok(ps, &ps->cur, d, sizeof d));
                if (next(ps) != 0)
                    return -1;
            }
        return next(ps);
    }
    if (repeated)
        return parse_repeated_one(ps, m, f, &name, depth);
    /* a singular message given again is merged into the first (protobuf's default) */
    void *slot = MEMBER(m, f->offset);
    if (f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) /* before the value: a message half read is freed with m */
        *(uint32_t *)MEMBER(m, f->quantifier_offset) = f->id;
    if (record(ps, m, f, 0, &name) != 0 || parse_value_or_short(ps, f, slot, depth) != 0)
        return -1;
    if (f->label == PROTOBUF_C_LABEL_OPTIONAL && f->type != PROTOBUF_C_TYPE_MESSAGE &&
             f->type != PROTOBUF_C_TYPE_STRING && f->quantifier_offset)
        *(protobuf_c_boolean *)MEMBER(m, f->quantifier_offset) = 1;
    return 0;
}

/* Fields up to `close` ('}' or '>'; 0: the end of the input), then past it. */
static int parse_fields(parser *ps, ProtobufCMessage *m, const tok *open, char close, unsigned depth)
{
    const ProtobufCMessageDescriptor *md = m->descriptor;
    uint8_t *seen = calloc(md->n_fields ? md->n_fields : 1, 1);
    if (!seen)
        return cl_err_nomem(ps->err);
    int rc = -1;
    char d[64];
    for (;;) {
        tok *t = &ps->cur;
        if (close && is_punct(t, close)) {
            rc = next(ps);
            break;
        }
        if (t->kind == T_EOF) {
            if (!close) {
                rc = 0;
            } else {
                perr(ps, t, "expected '%c' or a field name, found end of input (missing '%c' for the message "
                     "opened at line %d, column %d)", close, close, open->line, open->col);
            }
            break;
        }
        if (t->kind == T_PUNCT && (*t->p == '}' || *t->p == '>')) {
            if (close)
                perr(ps, t, "expected '%c' to close the message opened at line %d, column %d, or a field name; "
                     "found %s", close, open->line, open->col, describe_tok(ps, t, d, sizeof d));
            else
                perr(ps, t, "expected a field name, found %s (no message is open)", describe_tok(ps, t, d, sizeof d));
            break;
        }
        if (parse_field(ps, m, seen, depth) != 0)
            break;
        if ((is_punct(&ps->cur, ',') || is_punct(&ps->cur, ';')) && next(ps) != 0)
            break;
    }
    free(seen);
    return rc;
}

int cl_textpb_parse(const char *text, size_t len, const ProtobufCMessageDescriptor *desc,
                    const cl_textpb_options *opts, ProtobufCMessage **out, cl_err *err)
{
    static const cl_textpb_options defaults = {0};
    *out = NULL;
    const cl_textpb_options *o = opts ? opts : &defaults;
    size_t max_len = o->max_len ? o->max_len : CL_TEXTPB_DEFAULT_MAX_LEN;
    if (len > max_len)
        return cl_err_set(err, CL_E_FORMAT, "the text is %zu bytes, more than the %zu a %s may have", len, max_len,
                          desc->name);
    parser ps = {.p = text, .end = text + len, .line_start = text, .line = 1, .o = o,
                 .a = o->allocator ? o->allocator : &sys_allocator,
                 .max_depth = o->max_depth ? o->max_depth : CL_TEXTPB_DEFAULT_DEPTH, .err = err};
    if (o->locs) {
        *o->locs = NULL;
        if (!(ps.locs = calloc(1, sizeof *ps.locs)))
            return cl_err_nomem(err);
    }
    ProtobufCMessage *m = new_msg(&ps, desc);
    tok top = {.line = 1, .col = 1};
    if (!m || next(&ps) != 0 || parse_fields(&ps, m, &top, 0, 0) != 0) {
        free_msg(ps.a, m);
        cl_textpb_locs_free(ps.locs);
        return -1;
    }
    if (o->locs)
        *o->locs = ps.locs;
    *out = m;
    return 0;
}

void cl_textpb_free(ProtobufCMessage *msg, const cl_textpb_options *opts)
{
    free_msg(opts && opts->allocator ? opts->allocator : &sys_allocator, msg);
}
