/* cmd_run.c — `cloister run`: loads a model (ONNX or a frozen TensorFlow GraphDef file, or a TensorFlow
 * SavedModel directory; plain, or sealed and decrypted into locked memory; the plaintext model never
 * touches the disk), runs it on .npy inputs, prints a summary of the outputs or writes them as .npy, and
 * with --repeat prints per-run timings.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cli.h"
#include "cloister/engine.h"
#include "cloister/repo.h"
#include "cloister/seal.h"

#define MAX_MODEL_FILE ((size_t)2 << 30)
#define MAX_NPY_FILE ((size_t)4 << 30)

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static bool is_sealed(const uint8_t *buf, size_t len)
{
    return len >= 8 && memcmp(buf, CL_SEAL_MAGIC, 8) == 0;
}

/* Reads the model: plaintext in *buf (malloc) or, when sealed, in secure memory (*secure = true). */
static int read_model(const char *path, const char *key_path, const char *key_id, uint8_t **buf, size_t *len,
                      bool *secure, cl_err *err)
{
    *secure = false;
    if (cl_file_read(path, MAX_MODEL_FILE, buf, len, err) != 0)
        return -1;
    if (!is_sealed(*buf, *len))
        return 0;
    free(*buf);
    *buf = NULL;
    if (!key_path)
        return cl_err_set(err, CL_E_INVALID, "%s is sealed: give its key with --key FILE", path);
    uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, err);
    if (!key)
        return -1;
    int rc = cl_seal_key_load(key_path, key, err);
    if (rc == 0)
        rc = cl_seal_open_file(path, key, key_id, buf, len, NULL, err);
    cl_secmem_free(key);
    if (rc == 0)
        *secure = true;
    return rc;
}

/* The key of a sealed SavedModel's files: --key, checked against --key-id when given. */
typedef struct run_key {
    const char *path, *id;
} run_key;

static int run_key_fn(void *arg, const char *key_id, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    const run_key *k = arg;
    if (!k->path)
        return cl_err_set(err, CL_E_INVALID, "the model is sealed (key id '%s'): give its key with --key FILE", key_id);
    if (k->id && strcmp(k->id, key_id) != 0)
        return cl_err_set(err, CL_E_KEY_ID, "the model is sealed for key id '%s', not '%s'", key_id, k->id);
    return cl_seal_key_load(k->path, key, err);
}

static bool is_dir(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISDIR(st.st_mode);
}

static void print_summary(const cl_engine_io_info *info, const cl_engine_tensor *t)
{
    char shape[160] = "";
    size_t o = 0;
    for (int i = 0; i < t->rank && o < sizeof shape; i++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, i ? "x%lld" : "%lld", (long long)t->dims[i]);
    int64_t n = cl_engine_tensor_numel(t);
    printf("%s: %s [%s]", info->name, cl_engine_dtype_name(t->dtype), shape);
    if (t->dtype == CL_ENGINE_DT_FLOAT && n > 0) {
        const float *p = t->data;
        double mn = p[0], mx = p[0], sum = 0;
        for (int64_t i = 0; i < n; i++) {
            mn = fmin(mn, p[i]);
            mx = fmax(mx, p[i]);
            sum += p[i];
        }
        printf(" min=%.6g max=%.6g mean=%.6g", mn, mx, sum / (double)n);
        if (t->rank == 2 && t->dims[1] > 1) {
            printf(" argmax=");
            for (int64_t r = 0; r < t->dims[0] && r < 16; r++) {
                int64_t best = 0;
                for (int64_t c = 1; c < t->dims[1]; c++)
                    if (p[r * t->dims[1] + c] > p[r * t->dims[1] + best])
                        best = c;
                printf(r ? ",%lld" : "%lld", (long long)best);
            }
        }
    }
    printf("\n");
}

int cl_cmd_run(int argc, char **argv)
{
    const char *model_path = NULL, *key_path = NULL, *key_id = NULL, *signature = NULL;
    cl_strlist inputs = {0}, outputs = {0};
    long threads = 0, repeat = 0, warmup = 0;
    bool force = false;
    const cl_opt opts[] = {
        {"model", CL_ARG_STRING, &model_path, "FILE|DIR", "ONNX model or frozen TensorFlow GraphDef (.pb), or a "
                                                         "TensorFlow SavedModel directory; plain or sealed (cloister seal)",
         true},
        {"signature", CL_ARG_STRING, &signature, "NAME", "SavedModel signature_def to run (default serving_default)",
         false},
        {"key", CL_ARG_STRING, &key_path, "FILE", "key file of a sealed model", false},
        {"key-id", CL_ARG_STRING, &key_id, "NAME", "refuse a sealed model not sealed for this key id", false},
        {"input", CL_ARG_LIST, &inputs, "[NAME=]FILE.npy", "an input (repeat for several; without NAME, inputs are "
                                                          "taken in the model's order)", true},
        {"output", CL_ARG_LIST, &outputs, "[NAME=]FILE.npy", "write an output as .npy (without NAME: the outputs in "
                                                            "order)", false},
        {"force", CL_ARG_FLAG, &force, NULL, "overwrite existing output files", false},
        {"threads", CL_ARG_LONG, &threads, "N", "compute threads (default: all cores)", false, 0, 1024},
        {"repeat", CL_ARG_LONG, &repeat, "N", "time N runs and print mean_ms, p50_ms, min_ms", false, 0, 1000000},
        {"warmup", CL_ARG_LONG, &warmup, "N", "untimed runs before --repeat (default 0)", false, 0, 1000000},
    };
    const cl_cmd_usage usage = {
        "cloister run --model FILE|DIR [--signature NAME] [--key FILE] --input [NAME=]X.npy... [--output [NAME=]Y.npy...] [--threads N]\n"
        "             [--repeat N --warmup W]",
        "Runs an ONNX model on .npy inputs with cloister's engine and prints a summary of each output (or writes\n"
        "them as .npy). A sealed model is decrypted into locked memory and never written to disk. With --repeat,\n"
        "prints one line 'mean_ms=... p50_ms=... min_ms=...' of per-run times (model loading excluded)."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    uint8_t *buf = NULL;
    size_t len = 0;
    bool secure = false;
    cl_engine_model *m = NULL;
    cl_engine_tensor *in = NULL, *out = NULL;
    size_t nin = 0, nout = 0;
    double *times = NULL;
    rc = CL_EXIT_FAIL;
    cl_engine_options eo = {.threads = (int)threads, .signature = signature};
    uint64_t t0, t1;
    int lrc;
    if (is_dir(model_path)) {
        run_key rk = {key_path, key_id};
        cl_repo_files fs;
        if (cl_repo_savedmodel_read(model_path, run_key_fn, &rk, &fs, NULL, &err) != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        t0 = cl_now_ns();
        lrc = cl_engine_load_files(fs.f, fs.n, &eo, &m, &err);
        t1 = cl_now_ns();
        cl_repo_files_free(&fs);
    } else {
        if (read_model(model_path, key_path, key_id, &buf, &len, &secure, &err) != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        t0 = cl_now_ns();
        lrc = cl_engine_load(buf, len, &eo, &m, &err);
        t1 = cl_now_ns();
    }
    if (secure)
        cl_secmem_free(buf);
    else
        free(buf);
    buf = NULL;
    if (lrc != 0) {
        cl_err_prefix(&err, "%s", model_path);
        cl_cli_fail("run", &err);
        goto out;
    }
    fprintf(stderr, "cloister run: loaded %s in %.1f ms (%zu nodes)\n", model_path, (double)(t1 - t0) / 1e6,
            cl_engine_num_nodes(m));
    nin = cl_engine_num_inputs(m);
    nout = cl_engine_num_outputs(m);
    in = calloc(nin + 1, sizeof *in);
    out = calloc(nout + 1, sizeof *out);
    if (!in || !out) {
        fprintf(stderr, "cloister run: out of memory\n");
        goto out;
    }
    if (inputs.count != nin) {
        fprintf(stderr, "cloister run: the model takes %zu input(s), %zu given:", nin, inputs.count);
        for (size_t i = 0; i < nin; i++)
            fprintf(stderr, " %s", cl_engine_input(m, i)->name);
        fprintf(stderr, "\n");
        rc = CL_EXIT_USAGE;
        goto out;
    }
    for (size_t i = 0; i < inputs.count; i++) {
        const char *spec = inputs.items[i], *eq = strchr(spec, '=');
        int idx = (int)i;
        const char *file = spec;
        if (eq) {
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)(eq - spec), spec);
            idx = cl_engine_find_input(m, name);
            file = eq + 1;
            if (idx < 0) {
                fprintf(stderr, "cloister run: the model has no input named '%s'\n", name);
                rc = CL_EXIT_USAGE;
                goto out;
            }
        }
        if (in[idx].data) {
            fprintf(stderr, "cloister run: input '%s' given twice\n", cl_engine_input(m, (size_t)idx)->name);
            rc = CL_EXIT_USAGE;
            goto out;
        }
        uint8_t *nb = NULL;
        size_t nl;
        if (cl_file_read(file, MAX_NPY_FILE, &nb, &nl, &err) != 0 || cl_engine_npy_parse(nb, nl, &in[idx], &err) != 0) {
            free(nb);
            cl_err_prefix(&err, "%s", file);
            cl_cli_fail("run", &err);
            goto out;
        }
        free(nb);
    }
    for (long i = 0; i < warmup; i++) {
        if (cl_engine_run(m, in, nin, out, nout, &err) != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        for (size_t k = 0; k < nout; k++)
            cl_engine_tensor_release(&out[k]);
    }
    long runs = repeat > 0 ? repeat : 1;
    times = calloc((size_t)runs, sizeof *times);
    if (!times)
        goto out;
    for (long i = 0; i < runs; i++) {
        if (i > 0)
            for (size_t k = 0; k < nout; k++)
                cl_engine_tensor_release(&out[k]);
        uint64_t a = cl_now_ns();
        if (cl_engine_run(m, in, nin, out, nout, &err) != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        times[i] = (double)(cl_now_ns() - a) / 1e6;
    }
    if (outputs.count == 0) {
        for (size_t k = 0; k < nout; k++)
            print_summary(cl_engine_output(m, k), &out[k]);
    }
    for (size_t i = 0; i < outputs.count; i++) {
        const char *spec = outputs.items[i], *eq = strchr(spec, '=');
        size_t idx = i;
        const char *file = spec;
        if (eq) {
            file = eq + 1;
            idx = nout;
            for (size_t k = 0; k < nout; k++)
                if ((size_t)(eq - spec) == strlen(cl_engine_output(m, k)->name) &&
                    strncmp(cl_engine_output(m, k)->name, spec, (size_t)(eq - spec)) == 0)
                    idx = k;
        }
        if (idx >= nout) {
            fprintf(stderr, "cloister run: no such output for --output %s (the model has %zu)\n", spec, nout);
            rc = CL_EXIT_USAGE;
            goto out;
        }
        uint8_t *nb;
        size_t nl;
        if (cl_engine_npy_write(&out[idx], &nb, &nl, &err) != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        int wrc = cl_file_write_atomic(file, nb, nl, 0644, force, &err);
        free(nb);
        if (wrc != 0) {
            cl_cli_fail("run", &err);
            goto out;
        }
        fprintf(stderr, "cloister run: wrote output '%s' to %s\n", cl_engine_output(m, idx)->name, file);
    }
    if (repeat > 0) {
        double sum = 0;
        for (long i = 0; i < runs; i++)
            sum += times[i];
        qsort(times, (size_t)runs, sizeof *times, cmp_double);
        printf("mean_ms=%.3f p50_ms=%.3f min_ms=%.3f\n", sum / (double)runs, times[runs / 2], times[0]);
    }
    rc = CL_EXIT_OK;
out:
    for (size_t k = 0; in && k < nin; k++)
        cl_engine_tensor_release(&in[k]);
    for (size_t k = 0; out && k < nout; k++)
        cl_engine_tensor_release(&out[k]);
    free(in);
    free(out);
    free(times);
    cl_engine_free(m);
    cl_strlist_free(&inputs);
    cl_strlist_free(&outputs);
    return rc;
}
