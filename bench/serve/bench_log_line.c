/* bench_log_line.c — what one access-log line costs to build and write, in CPU time (so neighbours on
 * a shared machine disturb it little), text against JSON, to /dev/null (building only) and to a file
 * (with the write), the fields of a REST :predict line. Its peer is the text format: the ratio JSON /
 * text is printed. bench/serve/access_log.sh measures the same against whole requests.
 * Usage: bench_log_line [LINES] */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "cloister/common.h"

static double cpu_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (double)t.tv_sec + (double)t.tv_nsec / 1e9;
}

/* µs of CPU per line; best of 3 */
static double run(cl_log_format format, const char *path, long n)
{
    cl_err err = {0};
    double best = 1e9;
    for (int r = 0; r < 3; r++) {
        cl_log_set_format(format);
        cl_log_sink *s = cl_log_sink_open(path, &err);
        if (!s) {
            fprintf(stderr, "bench_log_line: %s\n", err.msg);
            exit(1);
        }
        double t0 = cpu_s();
        for (long i = 0; i < n; i++) {
            cl_log_field f[] = {CL_LOGF_S("api", "rest"), CL_LOGF_S("method", "POST"),
                                CL_LOGF_S("path", "/v1/models/digits:predict"), CL_LOGF_S("rpc", "predict"),
                                CL_LOGF_S("model", "digits"), CL_LOGF_I("version", 1), CL_LOGF_S("status", "OK"),
                                CL_LOGF_I("http_status", 200), CL_LOGF_R("latency_ms", 0.123 + (double)(i % 7)),
                                CL_LOGF_U("bytes_in", 487), CL_LOGF_U("bytes_out", 309),
                                CL_LOGF_S("peer", "127.0.0.1:55555"), CL_LOGF_S("client", "CN=client,O=cloister")};
            cl_log_sink_write(s, CL_LOG_INFO, "access", f, CL_ARRAY_LEN(f), "request");
        }
        double us = (cpu_s() - t0) / (double)n * 1e6;
        best = us < best ? us : best;
        cl_log_sink_close(s);
        if (path[0] == '/' && path[1] == 't')
            unlink(path);
    }
    return best;
}

int main(int argc, char **argv)
{
    long n = argc > 1 ? atol(argv[1]) : 200000;
    char file[64];
    snprintf(file, sizeof file, "/tmp/cloister-bench-log-%d", (int)getpid());
    double t_null = run(CL_LOG_TEXT, "/dev/null", n), j_null = run(CL_LOG_JSON, "/dev/null", n);
    double t_file = run(CL_LOG_TEXT, file, n), j_file = run(CL_LOG_JSON, file, n);
    printf("bench_log_line: %ld access-log lines of a REST :predict, CPU time per line (best of 3)\n", n);
    printf("  built only (/dev/null): text %.2f us, json %.2f us; json/text %.2f\n", t_null, j_null, j_null / t_null);
    printf("  built and written to a file: text %.2f us, json %.2f us; json/text %.2f\n", t_file, j_file,
           j_file / t_file);
    return 0;
}
