/* bench_out.h — the C benchmarks' machine-readable results, owned by bench/ (not part of libcloister).
 * When $CLOISTER_BENCH_OUT names a directory (bench/run_all.sh sets it), each call appends one JSON object
 * as one line to $CLOISTER_BENCH_OUT/BENCH.jsonl, which bench/report/make_report.py turns into the report;
 * when it is unset, nothing is written. The benchmarks' text output does not change either way.
 * Thread-safety: call from one thread (the benchmarks report from main() after measuring). A failed
 * write is said on stderr and does not stop the benchmark (the report then shows the figure as missing). */
#ifndef CLOISTER_BENCH_OUT_H
#define CLOISTER_BENCH_OUT_H

#include <stdbool.h>

/* One figure as the text output prints it. Only `metric`, `value` and `unit` are required; the rest is
 * written when set (strings non-NULL). The record format is described in bench/report/make_report.py. */
typedef struct bench_figure {
    const char *metric;   /* what was measured, e.g. "seal file -> file" */
    const char *model;    /* the model, for the engine and server benches */
    double value;         /* cloister's figure */
    const char *unit;     /* e.g. "MB/s", "us", "releases/s" */
    const char *better;   /* "higher" (default) or "lower" */
    const char *peer;     /* the peer measured in the same run; NULL: no peer */
    double peer_value;    /* the peer's figure (with `peer`), in `unit` */
    const char *ratio_of; /* how `ratio` is formed, e.g. "cloister/openssl"; NULL: no ratio */
    double ratio;         /* the ratio as the text output prints it (with `ratio_of`) */
    const char *goal;     /* e.g. ">= 0.80"; NULL: no goal set */
    bool goal_on_value;   /* the goal is on `value` (in `unit`), not on the ratio */
    const char *note;     /* a short remark shown with the figure */
} bench_figure;

void bench_out_figure(const char *bench, const bench_figure *f);

/* A line describing the run (settings, sizes, thread counts), shown at the top of the bench's section. */
void bench_out_config(const char *bench, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

#endif
