/* bench_engine.c — cloister's side of the engine benchmark (bench/engine/run.sh runs it and the
 * ONNX Runtime peer, bench/engine/ort_bench.js, on the same model with the same thread count).
 * Prints one line: "load_ms=... b1_p50_ms=... b1_mean_ms=... b1_min_ms=... bN_ips=... peak_rss_mb=...".
 * Usage: bench_engine MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS] */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

#include "cloister/engine.h"

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int run_batch(cl_engine_model *m, int64_t batch, int runs, double *times)
{
    const cl_engine_io_info *in = cl_engine_input(m, 0);
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = in->rank};
    for (int i = 0; i < in->rank; i++)
        t.dims[i] = in->dims[i] < 0 ? (i == 0 ? batch : 1) : in->dims[i];
    t.dims[0] = batch;
    int64_t n = cl_engine_tensor_numel(&t);
    t.nbytes = (size_t)n * 4;
    float *x = malloc(t.nbytes);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)sin((double)i * 0.001);
    t.data = x;
    size_t nout = cl_engine_num_outputs(m);
    cl_engine_tensor *out = calloc(nout, sizeof *out);
    cl_err err = {0};
    for (int r = -2; r < runs; r++) { /* two warm-up runs */
        uint64_t a = cl_now_ns();
        if (cl_engine_run(m, &t, 1, out, nout, &err) != 0) {
            fprintf(stderr, "bench_engine: %s\n", err.msg);
            return -1;
        }
        if (r >= 0)
            times[r] = (double)(cl_now_ns() - a) / 1e6;
        for (size_t k = 0; k < nout; k++)
            cl_engine_tensor_release(&out[k]);
    }
    free(out);
    free(x);
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: bench_engine MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS]\n");
        return 2;
    }
    int threads = atoi(argv[2]), b1_runs = argc > 3 ? atoi(argv[3]) : 20;
    int batch = argc > 4 ? atoi(argv[4]) : 8, bn_runs = argc > 5 ? atoi(argv[5]) : 5;
    cl_err err = {0};
    cl_secmem_set_require_lock(false); /* ResNet-50's weights exceed a non-root RLIMIT_MEMLOCK */
    uint8_t *buf;
    size_t len;
    if (cl_file_read(argv[1], (size_t)2 << 30, &buf, &len, &err) != 0) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    cl_engine_model *m;
    uint64_t t0 = cl_now_ns();
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = threads}, &m, &err) != 0) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    double load_ms = (double)(cl_now_ns() - t0) / 1e6;
    free(buf);
    double *t1 = calloc((size_t)b1_runs, sizeof *t1), *tn = calloc((size_t)bn_runs, sizeof *tn);
    if (run_batch(m, 1, b1_runs, t1) != 0 || run_batch(m, batch, bn_runs, tn) != 0)
        return 1;
    double s1 = 0;
    for (int i = 0; i < b1_runs; i++)
        s1 += t1[i];
    qsort(t1, (size_t)b1_runs, sizeof *t1, cmp_double);
    qsort(tn, (size_t)bn_runs, sizeof *tn, cmp_double);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("load_ms=%.1f b1_p50_ms=%.2f b1_mean_ms=%.2f b1_min_ms=%.2f b%d_ips=%.2f peak_rss_mb=%.0f\n", load_ms,
           t1[b1_runs / 2], s1 / b1_runs, t1[0], batch, batch / (tn[bn_runs / 2] / 1000.0), ru.ru_maxrss / 1024.0);
    cl_engine_free(m);
    free(t1);
    free(tn);
    return 0;
}
