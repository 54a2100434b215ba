/* moncfg.c — TF Serving's --monitoring_config_file (MonitoringConfig in protobuf text format, see
 * proto/tensorflow_serving/config/monitoring_config.proto) into cl_serve_monitoring: whether the
 * Prometheus endpoint is served and at which path. The endpoint itself is in rest.c, the metrics in
 * server.c.
 *
 * The reader is a small one of its own in the manner of batching.c's, kept in this file alone so that
 * it can move to the project's shared text-format reader once there is one. Accepted: the message
 * `prometheus_config` written `prometheus_config { ... }`, `prometheus_config: { ... }` or with `< >`;
 * inside it `enable: true|false|True|False|t|f|1|0` and `path: "..."` (double or single quotes, the
 * escapes \\ \" \' only, adjacent strings joined); fields separated by spaces, ',' or ';'; '#'
 * comments. Everything else is an error that names the line. */
#include "cloister/serve.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>

typedef struct scan {
    const char *p, *end;
    int line;
} scan;

static void skip(scan *s)
{
    while (s->p < s->end) {
        if (*s->p == '#') {
            while (s->p < s->end && *s->p != '\n')
                s->p++;
        } else if (isspace((unsigned char)*s->p)) {
            s->line += *s->p == '\n';
            s->p++;
        } else {
            break;
        }
    }
}

static bool punct(scan *s, char c)
{
    skip(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

/* An identifier into out (truncated to cap-1; the length read is returned, 0 when none). */
static size_t word(scan *s, char *out, size_t cap)
{
    skip(s);
    size_t n = 0;
    while (s->p < s->end && (isalnum((unsigned char)*s->p) || *s->p == '_')) {
        if (n + 1 < cap)
            out[n] = *s->p;
        n++;
        s->p++;
    }
    out[n < cap ? n : cap - 1] = '\0';
    return n;
}

/* One or more adjacent quoted strings into out (at most cap-1 bytes). */
static int string_value(scan *s, char *out, size_t cap, cl_err *err)
{
    size_t n = 0;
    bool any = false;
    for (;;) {
        skip(s);
        if (s->p >= s->end || (*s->p != '"' && *s->p != '\'')) {
            if (any)
                break;
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'path' needs a quoted string", s->line);
        }
        char q = *s->p++;
        any = true;
        for (;;) {
            if (s->p >= s->end || *s->p == '\n')
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: the string of 'path' is not closed",
                                  s->line);
            char c = *s->p++;
            if (c == q)
                break;
            if (c == '\\') {
                if (s->p >= s->end || (*s->p != '\\' && *s->p != '"' && *s->p != '\''))
                    return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: only the escapes \\\\, \\\" and "
                                      "\\' are supported in 'path'", s->line);
                c = *s->p++;
            }
            if (n + 1 >= cap)
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'path' is longer than %d characters",
                                  s->line, CL_SERVE_METRICS_PATH_MAX);
            out[n++] = c;
        }
    }
    out[n] = '\0';
    return 0;
}

/* The endpoint's path: absolute, printable ASCII without spaces or the characters that would make it
 * something else in a request line ('?', '#') or need decoding ('%', '\'), and not under /v1/, where
 * the model API answers. */
static int check_path(const char *p, int line, cl_err *err)
{
    if (p[0] != '/')
        return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' must start with '/'", line, p);
    for (const char *c = p; *c; c++)
        if (*c <= ' ' || *c > '~' || strchr("?#%\\\"", *c))
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' may hold only printable "
                              "characters other than space, '?', '#', '%%', '\\' and '\"' (character %d is 0x%02x)",
                              line, p, (int)(c - p) + 1, (unsigned char)*c);
    if (strcmp(p, "/v1") == 0 || strncmp(p, "/v1/", 4) == 0)
        return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: path '%.64s' lies under /v1/, where the "
                          "model API is served; choose another (the default is %s)", line, p, CL_SERVE_METRICS_PATH);
    return 0;
}

static int prometheus_config(scan *s, char close, cl_serve_monitoring *m, cl_err *err)
{
    bool seen_enable = false, seen_path = false, enable = false;
    char name[64];
    for (;;) {
        skip(s);
        if (s->p >= s->end)
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: prometheus_config is not closed with '%c'",
                              s->line, close);
        if (punct(s, close))
            break;
        int line = s->line;
        if (!word(s, name, sizeof name))
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: expected a field name in "
                              "prometheus_config", line);
        if (strcmp(name, "enable") == 0) {
            if (seen_enable)
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'enable' is given twice", line);
            seen_enable = true;
            char v[16];
            if (!punct(s, ':') || !word(s, v, sizeof v))
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: expected 'enable: true' or "
                                  "'enable: false'", line);
            if (!strcmp(v, "true") || !strcmp(v, "True") || !strcmp(v, "t") || !strcmp(v, "1"))
                enable = true;
            else if (!strcmp(v, "false") || !strcmp(v, "False") || !strcmp(v, "f") || !strcmp(v, "0"))
                enable = false;
            else
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'enable' is true or false, not '%s'",
                                  line, v);
        } else if (strcmp(name, "path") == 0) {
            if (seen_path)
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'path' is given twice", line);
            seen_path = true;
            if (!punct(s, ':'))
                return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: expected 'path: \"/...\"'", line);
            if (string_value(s, m->path, sizeof m->path, err) != 0)
                return -1;
            if (m->path[0] && check_path(m->path, line, err) != 0)
                return -1;
        } else {
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: prometheus_config has no field '%s' "
                              "(its fields: enable, path)", line, name);
        }
        if (!punct(s, ','))
            punct(s, ';');
    }
    m->off = !enable;
    return 0;
}

int cl_serve_monitoring_parse(const char *text, size_t len, cl_serve_monitoring *out, cl_err *err)
{
    scan s = {text, text + len, 1};
    cl_serve_monitoring m = {.off = true}; /* an empty MonitoringConfig: no endpoint, as in TF Serving */
    bool seen = false;
    char name[64];
    if (len && memchr(text, '\0', len))
        return cl_err_set(err, CL_E_FORMAT, "monitoring config: the file holds a NUL byte (it is not text)");
    for (;;) {
        skip(&s);
        if (s.p >= s.end)
            break;
        int line = s.line;
        if (!word(&s, name, sizeof name))
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: expected a field name", line);
        if (strcmp(name, "prometheus_config") != 0)
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: MonitoringConfig has no field '%s' "
                              "(its field: prometheus_config)", line, name);
        if (seen)
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: 'prometheus_config' is given twice", line);
        seen = true;
        punct(&s, ':');
        char close = punct(&s, '{') ? '}' : punct(&s, '<') ? '>' : 0;
        if (!close)
            return cl_err_set(err, CL_E_FORMAT, "monitoring config line %d: expected '{' after prometheus_config",
                              line);
        if (prometheus_config(&s, close, &m, err) != 0)
            return -1;
        if (!punct(&s, ','))
            punct(&s, ';');
    }
    *out = m;
    return 0;
}

const char *cl_serve_monitoring_path(const cl_serve_monitoring *m)
{
    if (m->off)
        return NULL;
    return m->path[0] ? m->path : CL_SERVE_METRICS_PATH;
}
