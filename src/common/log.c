/* log.c — levelled logging in text or JSON lines, with structured fields, to stderr or to a log
 * sink of its own (the access log); and the monotonic clock. Owns cl_log_*, cl_log_sink_* and
 * cl_now_ns.
 * The level and format are process-wide atomics, read from the environment once (CLOISTER_LOG,
 * CLOISTER_LOG_FORMAT) unless set first. Each line is built whole in memory (never cut: an audit
 * line names every secret of a request) and written with one write(2), so lines from several
 * threads never interleave. The strings of JSON lines are escaped by jansson. */
#include "cloister/common.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

static atomic_int g_level = -1;  /* -1: not yet set nor read from the environment */
static atomic_int g_format = -1; /* likewise */
static pthread_once_t g_env_once = PTHREAD_ONCE_INIT;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const format_names[] = {"text", "json"};

struct cl_log_sink {
    int fd;     /* the same number for the sink's life: a reopen swaps the file under it (dup3) */
    bool own;   /* opened here (closed with the sink) */
    char *path; /* when own: what a reopen opens again */
};

static void emit_msg(int fd, cl_log_level level, const char *module, const cl_log_field *fields, size_t n,
                     const char *msg, cl_log_format format);

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

int cl_log_parse_format(const char *name, cl_log_format *out)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(format_names); i++) {
        if (name && strcmp(name, format_names[i]) == 0) {
            *out = (cl_log_format)i;
            return 0;
        }
    }
    return -1;
}

/* Warns about an environment variable that holds no valid value (one line, the valid ones named).
 * Runs inside the pthread_once of read_env, so it writes without asking for the level or format. */
static void warn_env(const char *var, const char *value, const char *what, const char *valid, const char *using)
{
    if (atomic_load(&g_level) > CL_LOG_WARN)
        return;
    char shown[201], msg[400];
    size_t n = 0;
    for (; n < sizeof shown - 1 && value[n]; n++) /* one line, whatever the variable holds */
        shown[n] = (unsigned char)value[n] < 0x20 || value[n] == 0x7f ? '?' : value[n];
    shown[n] = '\0';
    snprintf(msg, sizeof msg, "%s='%s' is not a log %s: use %s (ignored; logging %s)", var, shown, what, valid, using);
    emit_msg(2, CL_LOG_WARN, "log", NULL, 0, msg, (cl_log_format)atomic_load(&g_format));
}

static void read_env(void)
{
    const char *lv = getenv("CLOISTER_LOG"), *fv = getenv("CLOISTER_LOG_FORMAT");
    cl_log_level level = CL_LOG_INFO;
    cl_log_format format = CL_LOG_TEXT;
    bool bad_level = lv && *lv && cl_log_parse_level(lv, &level) != 0;
    bool bad_format = fv && *fv && cl_log_parse_format(fv, &format) != 0;
    if (bad_level)
        level = CL_LOG_INFO;
    if (bad_format)
        format = CL_LOG_TEXT;
    int expected = -1;
    atomic_compare_exchange_strong(&g_level, &expected, (int)level);
    expected = -1;
    atomic_compare_exchange_strong(&g_format, &expected, (int)format);
    char using[32];
    if (bad_format) {
        snprintf(using, sizeof using, "as %s", format_names[atomic_load(&g_format)]);
        warn_env("CLOISTER_LOG_FORMAT", fv, "format", "text or json", using);
    }
    if (bad_level) {
        snprintf(using, sizeof using, "at %s", level_names[atomic_load(&g_level)]);
        warn_env("CLOISTER_LOG", lv, "level", "debug, info, warn, error or off", using);
    }
}

void cl_log_set_level(cl_log_level level) { atomic_store(&g_level, (int)level); }
void cl_log_set_format(cl_log_format format) { atomic_store(&g_format, (int)format); }

cl_log_level cl_log_get_level(void)
{
    pthread_once(&g_env_once, read_env);
    return (cl_log_level)atomic_load(&g_level);
}

cl_log_format cl_log_get_format(void)
{
    pthread_once(&g_env_once, read_env);
    return (cl_log_format)atomic_load(&g_format);
}

/* ---------------------------------------------------------------- building a line */

/* A line: in a stack buffer while it fits, on the heap beyond. Out of memory (failed) stops it
 * growing: what was built is written, marked with "...". */
typedef struct line {
    char *p;
    size_t len, cap;
    bool failed;
    char stack[2048];
} line;

static void line_init(line *l)
{
    l->p = l->stack;
    l->len = 0;
    l->cap = sizeof l->stack;
    l->failed = false;
}

static bool line_reserve(line *l, size_t n)
{
    if (l->failed)
        return false;
    if (l->len + n + 1 <= l->cap)
        return true;
    size_t cap = l->cap * 2;
    while (cap < l->len + n + 1)
        cap *= 2;
    char *q = l->p == l->stack ? malloc(cap) : realloc(l->p, cap);
    if (!q) {
        l->failed = true;
        return false;
    }
    if (l->p == l->stack)
        memcpy(q, l->stack, l->len);
    l->p = q;
    l->cap = cap;
    return true;
}

static void line_put(line *l, const char *s, size_t n)
{
    if (line_reserve(l, n)) {
        memcpy(l->p + l->len, s, n);
        l->len += n;
    }
}

static void line_str(line *l, const char *s) { line_put(l, s, strlen(s)); }

/* Decimal integers without printf (a log line has several; printf was most of a line's cost). */
static void line_u64(line *l, unsigned long long v)
{
    char d[24];
    size_t i = sizeof d;
    do {
        d[--i] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    line_put(l, d + i, sizeof d - i);
}

static void line_i64(line *l, long long v)
{
    if (v < 0) {
        line_put(l, "-", 1);
        line_u64(l, 0ull - (unsigned long long)v);
    } else {
        line_u64(l, (unsigned long long)v);
    }
}

static void line_vfmt(line *l, const char *fmt, va_list ap) CL_PRINTF(2, 0);
static void line_vfmt(line *l, const char *fmt, va_list ap)
{
    if (l->failed)
        return;
    va_list again;
    va_copy(again, ap);
    int n = vsnprintf(l->p + l->len, l->cap - l->len, fmt, ap);
    if (n >= 0 && (size_t)n >= l->cap - l->len && line_reserve(l, (size_t)n))
        n = vsnprintf(l->p + l->len, l->cap - l->len, fmt, again);
    va_end(again);
    if (n < 0)
        return;
    l->len += (size_t)n < l->cap - l->len ? (size_t)n : l->cap - l->len - 1;
}

static void line_fmt(line *l, const char *fmt, ...) CL_PRINTF(2, 3);
static void line_fmt(line *l, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    line_vfmt(l, fmt, ap);
    va_end(ap);
}

static void line_free(line *l)
{
    if (l->p != l->stack)
        free(l->p);
}

/* One write of the whole line (the loop only for a short write, e.g. a signal mid-way). */
static void line_write(int fd, line *l)
{
    const char *p = l->p;
    size_t n = l->len;
    while (n > 0) {
        ssize_t w = write(fd, p, n);
        if (w < 0 && errno == EINTR)
            continue;
        if (w <= 0)
            return;
        p += w;
        n -= (size_t)w;
    }
    if (l->failed) /* out of memory: what was built, marked as incomplete */
        (void)!write(fd, "...\n", 4);
}

/* RFC 3339 UTC with milliseconds: 2026-12-03T05:33:46.123Z (24 characters and a NUL). The date and
 * time of the current second are kept per thread: gmtime_r takes glibc's time-zone lock, which the
 * threads writing access-log lines would otherwise take for every line. */
static void timestamp(char out[32])
{
    static _Thread_local time_t sec = -1;
    static _Thread_local char cached[32] = "0000-00-00T00:00:00.000Z";
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (ts.tv_sec != sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        int v[] = {tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec};
        v[0] = v[0] < 0 ? 0 : v[0] > 9999 ? 9999 : v[0]; /* RFC 3339 has four digits */
        static const int at[] = {3, 6, 9, 12, 15, 18}; /* the last digit of each part */
        for (size_t i = 0; i < 6; i++) {
            int x = v[i];
            for (int k = at[i], d = i ? 2 : 4; d > 0; k--, d--, x /= 10)
                cached[k] = (char)('0' + x % 10);
        }
        sec = ts.tv_sec;
    }
    memcpy(out, cached, 25);
    for (int k = 22, x = (int)(ts.tv_nsec / 1000000L), d = 3; d > 0; k--, d--, x /= 10)
        out[k] = (char)('0' + x % 10);
}

/* A text value is quoted when it holds anything but printable ASCII without spaces, quotes or '=';
 * then quotes and backslashes are escaped, control characters and bytes that are not UTF-8 too. */
static void text_value(line *l, const char *s)
{
    bool plain = *s != '\0';
    for (const unsigned char *p = (const unsigned char *)s; *p && plain; p++)
        plain = *p > 0x20 && *p < 0x7f && *p != '"' && *p != '=' && *p != '\\';
    if (plain) {
        line_str(l, s);
        return;
    }
    line_put(l, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\') {
            char e[2] = {'\\', (char)*p};
            line_put(l, e, 2);
        } else if (*p == '\n') {
            line_put(l, "\\n", 2);
        } else if (*p == '\t') {
            line_put(l, "\\t", 2);
        } else if (*p < 0x20 || *p == 0x7f) {
            line_fmt(l, "\\x%02x", *p);
        } else if (*p < 0x80) {
            line_put(l, (const char *)p, 1);
        } else {
            /* UTF-8 as it is, any other byte escaped */
            size_t k = cl_utf8_seq_len(p, strlen((const char *)p));
            if (k == 0) {
                line_fmt(l, "\\x%02x", *p);
            } else {
                line_put(l, (const char *)p, k);
                p += k - 1;
            }
        }
    }
    line_put(l, "\"", 1);
}

/* A JSON string for jansson: s itself when it is UTF-8 (jansson checks), else a copy with each byte
 * that is not part of a UTF-8 sequence replaced by '?' (a log line stays valid JSON whatever a peer
 * sent). */
static json_t *json_text(const char *s)
{
    size_t n = strlen(s);
    json_t *j = json_stringn(s, n);
    if (j)
        return j;
    char *copy = malloc(n + 1);
    if (!copy)
        return NULL;
    for (size_t i = 0; i < n;) {
        size_t k = cl_utf8_seq_len((const unsigned char *)s + i, n - i);
        if (k == 0) {
            copy[i++] = '?';
        } else {
            memcpy(copy + i, s + i, k);
            i += k;
        }
    }
    j = json_stringn_nocheck(copy, n);
    free(copy);
    return j;
}

/* A JSON string literal of s, escaped by jansson (json_text: bytes that are not UTF-8 become '?').
 * A string of printable ASCII without quotes or backslashes needs no escaping and is copied as it is:
 * most are (names, paths, addresses), and jansson's string, dump and free cost more than the rest of
 * the line. */
static void json_put_string(line *l, const char *s)
{
    size_t n = 0;
    while (s[n] >= 0x20 && s[n] < 0x7f && s[n] != '"' && s[n] != '\\')
        n++;
    if (s[n] == '\0') {
        line_put(l, "\"", 1);
        line_put(l, s, n);
        line_put(l, "\"", 1);
        return;
    }
    json_t *j = json_text(s);
    if (!j) {
        l->failed = true;
        return;
    }
    size_t need = json_dumpb(j, l->p + l->len, l->cap - l->len - 1, JSON_ENCODE_ANY);
    if (need > l->cap - l->len - 1 && line_reserve(l, need))
        need = json_dumpb(j, l->p + l->len, l->cap - l->len - 1, JSON_ENCODE_ANY);
    json_decref(j);
    if (need == 0 || need > l->cap - l->len - 1)
        l->failed = true;
    else
        l->len += need;
}

/* One JSON object: "time", "level", "module", "msg", then the fields in order. The object is written
 * member by member rather than built as a json_t and dumped: building it (a hash table and a node
 * per member) cost 10 us a line, a fifth of a whole REST request (bench/serve/access_log.sh); the
 * string members are still escaped by jansson. Keys are the callers' constants (identifiers). */
static void build_json(line *l, const char *when, cl_log_level level, const char *module, const char *msg,
                       const cl_log_field *fields, size_t n)
{
    line_str(l, "{\"time\":\"");
    line_str(l, when);
    line_str(l, "\",\"level\":\"");
    line_str(l, level_names[level]);
    line_str(l, "\",\"module\":");
    json_put_string(l, module);
    line_str(l, ",\"msg\":");
    json_put_string(l, msg);
    for (size_t i = 0; i < n; i++) {
        const cl_log_field *f = &fields[i];
        if (f->type == CL_LOGF_STR && !f->v.s)
            continue;
        line_str(l, ",\"");
        line_str(l, f->key);
        line_str(l, "\":");
        switch (f->type) {
        case CL_LOGF_STR:
            json_put_string(l, f->v.s);
            break;
        case CL_LOGF_INT:
            line_i64(l, f->v.i);
            break;
        case CL_LOGF_UINT:
            line_u64(l, f->v.u);
            break;
        case CL_LOGF_REAL:
            if (!isfinite(f->v.d)) {
                line_str(l, "null"); /* JSON has no NaN or infinity */
            } else {
                char num[40];
                int k = snprintf(num, sizeof num, "%.9g", f->v.d);
                /* always a real: 15.0, not 15 */
                line_str(l, num);
                if (k > 0 && !strpbrk(num, ".e"))
                    line_str(l, ".0");
            }
            break;
        }
    }
    line_str(l, "}\n");
}

static void build_text(line *l, const char *when, cl_log_level level, const char *module, const char *msg,
                       const cl_log_field *fields, size_t n)
{
    static const char *const padded[] = {"debug", "info ", "warn ", "error", "off  "};
    line_str(l, when);
    line_put(l, " ", 1);
    line_str(l, padded[level]);
    line_put(l, " [", 2);
    line_str(l, module);
    line_put(l, "] ", 2);
    line_str(l, msg);
    for (size_t i = 0; i < n; i++) {
        const cl_log_field *f = &fields[i];
        if (f->type == CL_LOGF_STR && !f->v.s)
            continue;
        line_put(l, " ", 1);
        line_str(l, f->key);
        line_put(l, "=", 1);
        switch (f->type) {
        case CL_LOGF_STR:
            text_value(l, f->v.s);
            break;
        case CL_LOGF_INT:
            line_i64(l, f->v.i);
            break;
        case CL_LOGF_UINT:
            line_u64(l, f->v.u);
            break;
        case CL_LOGF_REAL:
            line_fmt(l, "%.6g", f->v.d);
            break;
        }
    }
    line_put(l, "\n", 1);
}

static void emit_msg(int fd, cl_log_level level, const char *module, const cl_log_field *fields, size_t n,
                     const char *msg, cl_log_format format)
{
    char when[32];
    timestamp(when);
    line l;
    line_init(&l);
    if (format == CL_LOG_JSON)
        build_json(&l, when, level, module ? module : "-", msg, fields, n);
    else
        build_text(&l, when, level, module ? module : "-", msg, fields, n);
    line_write(fd, &l);
    line_free(&l);
}

static void emit(int fd, cl_log_level level, const char *module, const cl_log_field *fields, size_t n,
                 const char *fmt, va_list ap) CL_PRINTF(6, 0);
static void emit(int fd, cl_log_level level, const char *module, const cl_log_field *fields, size_t n,
                 const char *fmt, va_list ap)
{
    /* the message first, whole: a stack buffer, or the heap for a long one */
    line m;
    line_init(&m);
    line_vfmt(&m, fmt, ap);
    if (m.failed && m.len >= 3) /* out of memory: the part that fitted, marked */
        memcpy(m.p + m.len - 3, "...", 3);
    m.p[m.len] = '\0';
    emit_msg(fd, level, module, fields, n, m.p, cl_log_get_format());
    line_free(&m);
}

void cl_log(cl_log_level level, const char *module, const char *fmt, ...)
{
    if (level < cl_log_get_level() || level >= CL_LOG_OFF)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(2, level, module, NULL, 0, fmt, ap);
    va_end(ap);
}

void cl_log_fields(cl_log_level level, const char *module, const cl_log_field *fields, size_t n_fields,
                   const char *fmt, ...)
{
    if (level < cl_log_get_level() || level >= CL_LOG_OFF)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(2, level, module, fields, n_fields, fmt, ap);
    va_end(ap);
}

/* ---------------------------------------------------------------- sinks */

/* The file of a sink, opened to append (created 0640); -1 with an actionable message. */
static int sink_open_file(const char *path, cl_err *err)
{
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY, 0640);
    if (fd < 0) {
        int e = errno;
        cl_err_errno(err, CL_E_IO, e, "cannot open log file '%s' for appending%s", path,
                     e == EISDIR ? " (it is a directory: name a file in it)"
                     : e == EACCES ? " (no permission: choose a path this user may write, or 'stderr')" : "");
        return -1;
    }
    struct stat st;
    if (fstat(fd, &st) == 0 && !S_ISREG(st.st_mode) && !S_ISFIFO(st.st_mode) && !S_ISCHR(st.st_mode)) {
        close(fd);
        cl_err_set(err, CL_E_INVALID, "log file '%s' is not a regular file, pipe or terminal", path);
        return -1;
    }
    return fd;
}

cl_log_sink *cl_log_sink_open(const char *path, cl_err *err)
{
    cl_log_sink *s = calloc(1, sizeof *s);
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    if (strcmp(path, "stderr") == 0 || strcmp(path, "-") == 0) {
        s->fd = 2;
        return s;
    }
    if (!(s->path = strdup(path))) {
        free(s);
        cl_err_nomem(err);
        return NULL;
    }
    if ((s->fd = sink_open_file(path, err)) < 0) {
        free(s->path);
        free(s);
        return NULL;
    }
    s->own = true;
    return s;
}

int cl_log_sink_reopen(cl_log_sink *s, cl_err *err)
{
    if (!s || !s->own)
        return 0;
    int fd = sink_open_file(s->path, err);
    if (fd < 0)
        return -1;
    /* dup3 closes the old file and puts the new one under the same number in one step: a write racing
     * with it goes whole to one file or the other, and the number is never free for another open. */
    int rc = dup3(fd, s->fd, O_CLOEXEC);
    int e = errno;
    close(fd);
    if (rc < 0)
        return cl_err_errno(err, CL_E_IO, e, "cannot reopen log file '%s'", s->path);
    return 0;
}

void cl_log_sink_close(cl_log_sink *s)
{
    if (!s)
        return;
    if (s->own)
        close(s->fd);
    free(s->path);
    free(s);
}

void cl_log_sink_write(cl_log_sink *s, cl_log_level level, const char *module, const cl_log_field *fields,
                       size_t n_fields, const char *fmt, ...)
{
    if (!s || (unsigned)level >= CL_LOG_OFF)
        return;
    va_list ap;
    va_start(ap, fmt);
    emit(s->fd, level, module, fields, n_fields, fmt, ap);
    va_end(ap);
}

uint64_t cl_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}
