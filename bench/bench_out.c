/* bench_out.c — appends the C benchmarks' results as JSON lines to $CLOISTER_BENCH_OUT/BENCH.jsonl
 * (bench_out.h); jansson does the JSON. */
#include "bench_out.h"

#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <jansson.h>

static void emit(const char *bench, json_t *rec)
{
    const char *dir = getenv("CLOISTER_BENCH_OUT");
    if (!dir || !*dir || !rec) {
        json_decref(rec);
        return;
    }
    json_object_set_new(rec, "bench", json_string(bench));
    char when[32];
    time_t now = time(NULL);
    struct tm tm;
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", gmtime_r(&now, &tm));
    json_object_set_new(rec, "time", json_string(when));
    char *line = json_dumps(rec, JSON_COMPACT | JSON_SORT_KEYS);
    json_decref(rec);
    char path[4096];
    int fd = -1;
    if (line && snprintf(path, sizeof path, "%s/%s.jsonl", dir, bench) < (int)sizeof path)
        fd = open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    size_t n = line ? strlen(line) : 0;
    if (fd < 0 || write(fd, line, n) != (ssize_t)n || write(fd, "\n", 1) != 1)
        fprintf(stderr, "%s: could not append a result to %s/%s.jsonl (CLOISTER_BENCH_OUT): the report will miss it\n",
                bench, dir, bench);
    if (fd >= 0)
        close(fd);
    free(line);
}

static void set_str(json_t *o, const char *k, const char *v)
{
    if (v)
        json_object_set_new(o, k, json_string(v));
}

/* jansson refuses NaN and infinities: those become null, which the report shows as "no figure" */
static json_t *num(double v)
{
    json_t *r = json_real(v);
    return r ? r : json_null();
}

void bench_out_figure(const char *bench, const bench_figure *f)
{
    json_t *o = json_object();
    if (!o)
        return;
    json_object_set_new(o, "kind", json_string("figure"));
    set_str(o, "metric", f->metric);
    set_str(o, "model", f->model);
    json_object_set_new(o, "value", num(f->value));
    set_str(o, "unit", f->unit);
    set_str(o, "better", f->better ? f->better : "higher");
    if (f->peer) {
        set_str(o, "peer", f->peer);
        json_object_set_new(o, "peer_value", num(f->peer_value));
    }
    if (f->ratio_of) {
        set_str(o, "ratio_of", f->ratio_of);
        json_object_set_new(o, "ratio", num(f->ratio));
    }
    if (f->goal) {
        set_str(o, "goal", f->goal);
        set_str(o, "goal_on", f->goal_on_value ? "value" : "ratio");
    }
    set_str(o, "note", f->note);
    emit(bench, o);
}

void bench_out_config(const char *bench, const char *fmt, ...)
{
    char text[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    emit(bench, json_pack("{s:s, s:s}", "kind", "config", "text", text));
}
