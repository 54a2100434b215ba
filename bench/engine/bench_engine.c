/* bench_engine.c — cloister's side of the engine benchmarks (bench/engine/run.sh and the suite,
 * bench/engine/suite/run.sh, run it and the ONNX Runtime peer, bench/engine/ort_bench.js, on the same
 * model with the same thread count and the same protocol).
 * Prints one line: "load_ms=... b1_p50_ms=... b1_mean_ms=... b1_min_ms=... b1_runs=... bN_ips=...
 * bN_runs=... peak_rss_mb=..." and, with --ref, "max_abs_err=... out_range=... rel_err=..." after it
 * (PyTorch's output for the reference input; checked after peak_rss_mb was read, so the check's batch
 * does not count in it). A model that does not load prints "load_error=MESSAGE" and exits 1.
 *
 * The input of the timed runs is the model's first input with its batch dimension set (1, then BATCH)
 * and its other dynamic dimensions 1, any rank ([N,3,224,224] images, [N,128,768] sequences), filled
 * with sin(i/1000). Each phase has two warm-up runs (one when the first took over 2 s) and then up to
 * RUNS timed runs, stopping early once the timed runs exceed BUDGET seconds (at least one run): a model
 * that takes seconds per run is measured in a bounded time, with its run count printed. With
 * --skip-batch-over SECONDS, the batch-N phase is skipped (bN_ips=skipped) when a batch-1 run took
 * longer than that.
 *
 * Usage: bench_engine MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS] [--budget SECONDS]
 *                     [--skip-batch-over SECONDS] [--ref INPUT.npy OUTPUT.npy] */
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

/* One run of the model on t; its wall time in ms, or -1 (message printed). */
static double run_once(cl_engine_model *m, const cl_engine_tensor *t)
{
    size_t nout = cl_engine_num_outputs(m);
    cl_engine_tensor *out = calloc(nout, sizeof *out);
    cl_err err = {0};
    uint64_t a = cl_now_ns();
    int rc = cl_engine_run(m, t, 1, out, nout, &err);
    double ms = (double)(cl_now_ns() - a) / 1e6;
    if (rc != 0)
        fprintf(stderr, "bench_engine: run_error=%s\n", err.msg);
    for (size_t k = 0; k < nout; k++)
        cl_engine_tensor_release(&out[k]);
    free(out);
    return rc == 0 ? ms : -1;
}

/* Warm-up and up to `runs` timed runs at `batch` within `budget_s`; the sorted times in `times`, their
 * count returned (-1 on failure). */
static int run_batch(cl_engine_model *m, int64_t batch, int runs, double budget_s, double *times)
{
    const cl_engine_io_info *in = cl_engine_input(m, 0);
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = in->rank};
    for (int i = 0; i < in->rank; i++)
        t.dims[i] = in->dims[i] < 0 ? 1 : in->dims[i];
    t.dims[0] = batch;
    int64_t n = cl_engine_tensor_numel(&t);
    t.nbytes = (size_t)n * 4;
    float *x = malloc(t.nbytes ? t.nbytes : 1);
    for (int64_t i = 0; i < n; i++)
        x[i] = (float)sin((double)i * 0.001);
    t.data = x;
    int done = -1;
    double w = run_once(m, &t);
    if (w >= 0 && w < 2000)
        w = run_once(m, &t);
    if (w >= 0) {
        double spent = 0;
        for (done = 0; done < runs && (done == 0 || spent < budget_s * 1000); done++) {
            double ms = run_once(m, &t);
            if (ms < 0) {
                done = -1;
                break;
            }
            times[done] = ms;
            spent += ms;
        }
    }
    if (done > 0)
        qsort(times, (size_t)done, sizeof *times, cmp_double);
    free(x);
    return done;
}

static int read_npy(const char *path, cl_engine_tensor *t)
{
    uint8_t *buf;
    size_t len;
    cl_err err = {0};
    if (cl_file_read(path, (size_t)1 << 30, &buf, &len, &err) != 0 || cl_engine_npy_parse(buf, len, t, &err) != 0) {
        fprintf(stderr, "bench_engine: %s: %s\n", path, err.msg);
        return -1;
    }
    free(buf);
    return 0;
}

/* The model on the reference input against the reference output: max |y - ref| and ref's range. */
static int check_ref(cl_engine_model *m, const char *in_path, const char *out_path)
{
    cl_engine_tensor x = {0}, ref = {0}, y = {0};
    cl_err err = {0};
    int rc = -1;
    if (read_npy(in_path, &x) != 0 || read_npy(out_path, &ref) != 0)
        goto out;
    if (cl_engine_run(m, &x, 1, &y, 1, &err) != 0) {
        fprintf(stderr, "bench_engine: run_error=%s\n", err.msg);
        goto out;
    }
    int64_t n = cl_engine_tensor_numel(&ref);
    if (y.dtype != CL_ENGINE_DT_FLOAT || ref.dtype != CL_ENGINE_DT_FLOAT || cl_engine_tensor_numel(&y) != n) {
        fprintf(stderr, "bench_engine: the output does not have the reference's type and size\n");
        goto out;
    }
    const float *a = y.data, *b = ref.data;
    double e = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - b[i]);
        e = isnan(d) ? INFINITY : fmax(e, d);
        lo = fmin(lo, b[i]);
        hi = fmax(hi, b[i]);
    }
    printf(" max_abs_err=%.3g out_range=%.4g rel_err=%.3g", e, hi - lo, hi > lo ? e / (hi - lo) : e);
    rc = 0;
out:
    cl_engine_tensor_release(&x);
    cl_engine_tensor_release(&ref);
    cl_engine_tensor_release(&y);
    return rc;
}

int main(int argc, char **argv)
{
    const char *pos[5] = {0}, *ref_in = NULL, *ref_out = NULL;
    double budget_s = 1e9, skip_over_s = 0;
    int npos = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--budget") == 0 && i + 1 < argc)
            budget_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--skip-batch-over") == 0 && i + 1 < argc)
            skip_over_s = atof(argv[++i]);
        else if (strcmp(argv[i], "--ref") == 0 && i + 2 < argc) {
            ref_in = argv[++i];
            ref_out = argv[++i];
        } else if (npos < 5 && argv[i][0] != '-')
            pos[npos++] = argv[i];
        else
            npos = -99;
    }
    if (npos < 2) {
        fprintf(stderr, "usage: bench_engine MODEL.onnx THREADS [B1_RUNS] [BATCH] [BATCH_RUNS] [--budget SECONDS] "
                        "[--skip-batch-over SECONDS] [--ref INPUT.npy OUTPUT.npy]\n");
        return 2;
    }
    int threads = atoi(pos[1]), b1_runs = pos[2] ? atoi(pos[2]) : 20;
    int batch = pos[3] ? atoi(pos[3]) : 8, bn_runs = pos[4] ? atoi(pos[4]) : 5;
    if (b1_runs < 1 || bn_runs < 1 || batch < 1) {
        fprintf(stderr, "bench_engine: run counts and the batch must be positive\n");
        return 2;
    }
    cl_err err = {0};
    cl_secmem_set_require_lock(false); /* ResNet-50's weights exceed a non-root RLIMIT_MEMLOCK */
    uint8_t *buf;
    size_t len;
    if (cl_file_read(pos[0], (size_t)2 << 30, &buf, &len, &err) != 0) {
        printf("load_error=%s\n", err.msg);
        return 1;
    }
    cl_engine_model *m;
    uint64_t t0 = cl_now_ns();
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = threads}, &m, &err) != 0) {
        printf("load_error=%s\n", err.msg);
        return 1;
    }
    double load_ms = (double)(cl_now_ns() - t0) / 1e6;
    free(buf);
    if (cl_engine_num_inputs(m) != 1 || cl_engine_input(m, 0)->dtype != CL_ENGINE_DT_FLOAT ||
        cl_engine_input(m, 0)->rank < 1) {
        fprintf(stderr, "bench_engine: the model must have one float input of known rank\n");
        return 1;
    }
    double *t1 = calloc((size_t)b1_runs, sizeof *t1), *tn = calloc((size_t)bn_runs, sizeof *tn);
    int n1 = run_batch(m, 1, b1_runs, budget_s, t1);
    if (n1 <= 0)
        return 1;
    bool skip = skip_over_s > 0 && t1[0] > skip_over_s * 1000;
    int nn = skip ? 0 : run_batch(m, batch, bn_runs, budget_s, tn);
    if (nn < 0)
        return 1;
    double s1 = 0;
    for (int i = 0; i < n1; i++)
        s1 += t1[i];
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    printf("load_ms=%.1f b1_p50_ms=%.2f b1_mean_ms=%.2f b1_min_ms=%.2f b1_runs=%d ", load_ms, t1[n1 / 2], s1 / n1,
           t1[0], n1);
    if (skip)
        printf("b%d_ips=skipped b%d_runs=0", batch, batch);
    else
        printf("b%d_ips=%.2f b%d_runs=%d", batch, batch / (tn[nn / 2] / 1000.0), batch, nn);
    printf(" peak_rss_mb=%.0f", ru.ru_maxrss / 1024.0);
    fflush(stdout);
    int rc = ref_in && check_ref(m, ref_in, ref_out) != 0 ? 1 : 0;
    printf("\n");
    cl_engine_free(m);
    free(t1);
    free(tn);
    return rc;
}
