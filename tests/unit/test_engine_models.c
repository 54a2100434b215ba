/* test_engine_models.c — whole networks against PyTorch: for every NAME.onnx in $CLOISTER_MODELS_DIR
 * (default: the committed small fixtures; `make check-models` points it at full-size exports) the
 * engine's output for NAME.input.npy must match PyTorch's NAME.output.npy within 1e-4 of the
 * reference output's range (max absolute error). Each model is also run on the first sample alone
 * (batch 1 after batch N: a second plan) and must give the same row. Each model is its own cmocka test
 * (named after it), so one that does not load or differs is reported and the others still run
 * (`make check-models` runs this over the suite of bench/engine/suite too).
 */
#include <dirent.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "cloister/engine.h"

static const char *models_dir(void)
{
    const char *d = getenv("CLOISTER_MODELS_DIR");
    return d && d[0] ? d : "tests/models/fixtures";
}

static cl_engine_tensor read_npy(const char *dir, const char *name, const char *suffix)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, suffix);
    size_t len;
    uint8_t *buf = tu_read_file(path, &len);
    cl_engine_tensor t;
    cl_err err = {0};
    if (cl_engine_npy_parse(buf, len, &t, &err) != 0)
        fail_msg("%s: %s", path, err.msg);
    free(buf);
    return t;
}

/* Max |a-b| over n floats, and the range of b. */
static double max_err(const float *a, const float *b, int64_t n, double *range)
{
    double e = 0, lo = INFINITY, hi = -INFINITY;
    for (int64_t i = 0; i < n; i++) {
        e = fmax(e, fabs((double)a[i] - b[i]));
        if (isnan(a[i]))
            e = INFINITY;
        lo = fmin(lo, b[i]);
        hi = fmax(hi, b[i]);
    }
    *range = hi - lo;
    return e;
}

/* Runs the model at its batch and at batch 1 against PyTorch's outputs; `direct` forces direct
 * convolution (the default uses Winograd kernels for 3x3 stride-1 convolutions where oneDNN has them),
 * so both paths are held to the same tolerance. */
static void check_model(const char *dir, const char *name, bool direct)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
    size_t len;
    uint8_t *buf = tu_read_file(path, &len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = 2, .direct_conv = direct}, &m, &err) != 0)
        fail_msg("%s: %s", path, err.msg);
    free(buf);
    cl_engine_tensor x = read_npy(dir, name, ".input.npy"), ref = read_npy(dir, name, ".output.npy");
    cl_engine_tensor y = {0};
    /* the warm-up measured a run at batch 1: its working memory holds at least the activations of the
     * first layer, more than the input; larger inputs are estimated in proportion until measured */
    size_t row_in = x.nbytes / (size_t)x.dims[0], est1 = cl_engine_memory_estimate(m, row_in);
    if (est1 <= row_in || cl_engine_memory_estimate(m, 4 * row_in) < 4 * est1)
        fail_msg("%s: working memory estimated %zu bytes at batch 1 (input %zu), %zu at batch 4", name, est1, row_in,
                 cl_engine_memory_estimate(m, 4 * row_in));
    if (cl_engine_run(m, &x, 1, &y, 1, &err) != 0)
        fail_msg("%s: %s", name, err.msg);
    /* measured now: at least what batch 1 needed */
    if (cl_engine_memory_estimate(m, x.nbytes) < est1)
        fail_msg("%s: working memory of batch %lld estimated below batch 1's", name, (long long)x.dims[0]);
    assert_int_equal(y.dtype, CL_ENGINE_DT_FLOAT);
    assert_int_equal(y.rank, ref.rank);
    for (int i = 0; i < y.rank; i++)
        assert_int_equal(y.dims[i], ref.dims[i]);
    int64_t n = cl_engine_tensor_numel(&ref);
    double range, e = max_err(y.data, ref.data, n, &range);
    printf("%-24s %-14s max_abs_err=%.3g range=%.3g (%.2g of range), %zu nodes\n", name,
           direct ? "batch, direct" : "batch", e, range, e / range, cl_engine_num_nodes(m));
    if (!(e <= 1e-4 * range))
        fail_msg("%s: max abs error %g exceeds 1e-4 of the output range %g", name, e, range);
    /* first sample alone */
    cl_engine_tensor x1 = x;
    x1.dims[0] = 1;
    x1.nbytes = x.nbytes / (size_t)x.dims[0];
    cl_engine_tensor y1 = {0};
    if (cl_engine_run(m, &x1, 1, &y1, 1, &err) != 0)
        fail_msg("%s (batch 1): %s", name, err.msg);
    int64_t row = n / ref.dims[0];
    assert_int_equal(cl_engine_tensor_numel(&y1), row);
    e = max_err(y1.data, ref.data, row, &range);
    if (!(e <= 1e-4 * range))
        fail_msg("%s (batch 1): max abs error %g exceeds 1e-4 of the output range %g", name, e, range);
    cl_engine_tensor_release(&y1);
    cl_engine_release_memory(); /* the pool's free buffers go; the model runs on */
    if (cl_engine_run(m, &x1, 1, &y1, 1, &err) != 0)
        fail_msg("%s (after the pool was emptied): %s", name, err.msg);
    cl_engine_tensor_release(&y1);
    cl_engine_tensor_release(&y);
    cl_engine_tensor_release(&x);
    cl_engine_tensor_release(&ref);
    cl_engine_free(m);
}

/* Several threads run one loaded model at once, each from a fresh model state (plans created
 * concurrently) and with alternating batch sizes; every result must match the reference. */
typedef struct {
    cl_engine_model *m;
    const cl_engine_tensor *x, *ref;
    int id, bad;
} conc_arg;

static void *conc_worker(void *p)
{
    conc_arg *a = p;
    for (int i = 0; i < 4; i++) {
        cl_engine_tensor x = *a->x;
        if ((a->id + i) % 2) {
            x.dims[0] = 1;
            x.nbytes = a->x->nbytes / (size_t)a->x->dims[0];
        }
        cl_engine_tensor y = {0};
        cl_err err = {0};
        if (cl_engine_run(a->m, &x, 1, &y, 1, &err) != 0) {
            a->bad++;
            continue;
        }
        double range, e = max_err(y.data, a->ref->data, cl_engine_tensor_numel(&y), &range);
        if (!(e <= 1e-4 * range))
            a->bad++;
        cl_engine_tensor_release(&y);
    }
    return NULL;
}

static void check_concurrent(const char *dir, const char *name)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s.onnx", dir, name);
    size_t len;
    uint8_t *buf = tu_read_file(path, &len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    if (cl_engine_load(buf, len, &(cl_engine_options){.threads = 1}, &m, &err) != 0)
        fail_msg("%s: %s", path, err.msg);
    free(buf);
    cl_engine_tensor x = read_npy(dir, name, ".input.npy"), ref = read_npy(dir, name, ".output.npy");
    pthread_t th[3];
    conc_arg args[3];
    for (int i = 0; i < 3; i++) {
        args[i] = (conc_arg){m, &x, &ref, i, 0};
        assert_int_equal(pthread_create(&th[i], NULL, conc_worker, &args[i]), 0);
    }
    for (int i = 0; i < 3; i++) {
        pthread_join(th[i], NULL);
        if (args[i].bad)
            fail_msg("%s: %d concurrent runs of thread %d failed or differed", name, args[i].bad, i);
    }
    cl_engine_tensor_release(&x);
    cl_engine_tensor_release(&ref);
    cl_engine_free(m);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* One model: both convolution paths, then concurrent runs. */
static void test_model(void **state)
{
    const char *name = *state;
    check_model(models_dir(), name, false);
    check_model(models_dir(), name, true);
    if (!getenv("CLOISTER_MODELS_SKIP_CONCURRENT"))
        check_concurrent(models_dir(), name);
}

/* One cmocka test per NAME.onnx of the directory, named after the model: a model that fails (does not
 * load, or differs) is reported with its reason and the others are still checked; cmocka lists the
 * failed ones at the end. */
int main(void)
{
    /* full-size models exceed a typical non-root RLIMIT_MEMLOCK; locking is tested by common's tests */
    cl_secmem_set_require_lock(false);
    const char *dir = models_dir();
    DIR *d = opendir(dir);
    if (!d) {
        fprintf(stderr, "test_engine_models: cannot open %s (set CLOISTER_MODELS_DIR)\n", dir);
        return 1;
    }
    char *names[64];
    int n = 0;
    struct dirent *de;
    while ((de = readdir(d)) && n < 64) {
        size_t l = strlen(de->d_name);
        if (l > 5 && strcmp(de->d_name + l - 5, ".onnx") == 0)
            names[n++] = strndup(de->d_name, l - 5);
    }
    closedir(d);
    if (n == 0) {
        fprintf(stderr, "test_engine_models: no NAME.onnx in %s\n", dir);
        return 1;
    }
    qsort(names, (size_t)n, sizeof *names, cmp_str);
    struct CMUnitTest tests[64];
    for (int i = 0; i < n; i++)
        tests[i] = (struct CMUnitTest){.name = names[i], .test_func = test_model, .initial_state = names[i]};
    int rc = _cmocka_run_group_tests("engine_models", tests, (size_t)n, NULL, NULL);
    for (int i = 0; i < n; i++)
        free(names[i]);
    return rc;
}
