/* tests/conformance/onnx_conformance.c — runs ONNX's own node tests (Debian libonnx-testdata:
 * <dir>/<test>/model.onnx + test_data_set_N/{input,output}_K.pb) through the engine and compares
 * the outputs with the suite's tolerances (rtol 1e-3, atol 1e-7, as onnx's backend tests).
 *
 * A test whose model the engine refuses with CL_E_UNSUPPORTED (operator, type or attribute not
 * implemented) counts as "unsupported"; every other test must pass. Prints the counts and exits 1 if
 * any test failed. Usage: onnx_conformance [DATA_DIR] [-v] [-k SUBSTRING]
 */
#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/engine.h"
#include "engine/internal.h"

static int verbose;

static uint8_t *slurp(const char *path, size_t *len)
{
    uint8_t *b = NULL;
    cl_err err = {0};
    if (cl_file_read(path, (size_t)1 << 30, &b, len, &err) != 0)
        return NULL;
    return b;
}

static int load_pb(const char *path, eng_tensor *t, char **name, cl_err *err)
{
    size_t len;
    uint8_t *b = slurp(path, &len);
    if (!b)
        return cl_err_set(err, CL_E_IO, "cannot read %s", path);
    int rc = eng_onnx_tensor_parse(b, len, t, name, err);
    free(b);
    return rc;
}

static bool close_enough(const eng_tensor *exp, const cl_engine_tensor *got, char *why, size_t wlen)
{
    if (exp->dtype != (cl_engine_dtype)got->dtype) {
        snprintf(why, wlen, "type %s, expected %s", cl_engine_dtype_name(got->dtype), cl_engine_dtype_name(exp->dtype));
        return false;
    }
    bool shape_ok = exp->rank == got->rank;
    for (int i = 0; shape_ok && i < exp->rank; i++)
        shape_ok = exp->dims[i] == got->dims[i];
    if (!shape_ok) {
        char a[128], b[128];
        snprintf(why, wlen, "shape %s, expected %s", eng_dims_str(got->dims, got->rank, a, sizeof a),
                 eng_dims_str(exp->dims, exp->rank, b, sizeof b));
        return false;
    }
    eng_tensor g = {.dtype = got->dtype, .rank = got->rank, .data = got->data, .nbytes = got->nbytes};
    memcpy(g.dims, got->dims, sizeof g.dims);
    int64_t n = eng_numel(exp);
    for (int64_t i = 0; i < n; i++) {
        if (eng_dtype_is_float(exp->dtype)) {
            double e = eng_get_f(exp, i), v = eng_get_f(&g, i);
            if (isnan(e) && isnan(v))
                continue;
            if (isinf(e) && e == v)
                continue;
            if (!(fabs(e - v) <= 1e-7 + 1e-3 * fabs(e))) {
                snprintf(why, wlen, "element %lld is %.9g, expected %.9g", (long long)i, v, e);
                return false;
            }
        } else if (eng_get_i(exp, i) != eng_get_i(&g, i)) {
            snprintf(why, wlen, "element %lld is %lld, expected %lld", (long long)i, (long long)eng_get_i(&g, i),
                     (long long)eng_get_i(exp, i));
            return false;
        }
    }
    return true;
}

typedef enum { R_PASS, R_FAIL, R_UNSUPPORTED } result;

static result run_test(const char *dir, char *why, size_t wlen)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/model.onnx", dir);
    size_t len;
    uint8_t *buf = slurp(path, &len);
    if (!buf) {
        snprintf(why, wlen, "cannot read model.onnx");
        return R_FAIL;
    }
    cl_err err = {0};
    cl_engine_model *m = NULL;
    int rc = cl_engine_load(buf, len, &(cl_engine_options){.threads = 0}, &m, &err);
    free(buf);
    if (rc != 0) {
        snprintf(why, wlen, "load: %s", err.msg);
        return err.code == CL_E_UNSUPPORTED ? R_UNSUPPORTED : R_FAIL;
    }
    result res = R_PASS;
    int sets = 0;
    for (int ds = 0; res == R_PASS; ds++) {
        char sdir[4096];
        snprintf(sdir, sizeof sdir, "%s/test_data_set_%d", dir, ds);
        DIR *d = opendir(sdir);
        if (!d)
            break;
        closedir(d);
        sets++;
        size_t nin = cl_engine_num_inputs(m), nout = cl_engine_num_outputs(m);
        cl_engine_tensor *ins = calloc(nin + 1, sizeof *ins);
        cl_engine_tensor *outs = calloc(nout + 1, sizeof *outs);
        eng_tensor *tin = calloc(nin + 1, sizeof *tin);
        size_t got_in = 0;
        for (size_t k = 0;; k++) {
            snprintf(path, sizeof path, "%s/input_%zu.pb", sdir, k);
            FILE *f = fopen(path, "rb");
            if (!f)
                break;
            fclose(f);
            eng_tensor t;
            char *name = NULL;
            if (load_pb(path, &t, &name, &err) != 0) {
                snprintf(why, wlen, "input_%zu.pb: %s", k, err.msg);
                res = err.code == CL_E_UNSUPPORTED ? R_UNSUPPORTED : R_FAIL;
                free(name);
                break;
            }
            int idx = name && name[0] ? cl_engine_find_input(m, name) : -1;
            if (idx < 0)
                idx = (int)k;
            free(name);
            if ((size_t)idx >= nin || tin[idx].data) {
                eng_tensor_free(&t);
                snprintf(why, wlen, "input_%zu.pb does not match the model's %zu inputs", k, nin);
                res = R_FAIL;
                break;
            }
            tin[idx] = t;
            got_in++;
        }
        if (res == R_PASS && got_in != nin) {
            snprintf(why, wlen, "test has %zu inputs, model %zu (optional inputs?)", got_in, nin);
            res = R_UNSUPPORTED;
        }
        if (res == R_PASS) {
            for (size_t k = 0; k < nin; k++) {
                ins[k].dtype = tin[k].dtype;
                ins[k].rank = tin[k].rank;
                memcpy(ins[k].dims, tin[k].dims, sizeof ins[k].dims);
                ins[k].data = tin[k].data;
                ins[k].nbytes = tin[k].nbytes;
            }
            if (cl_engine_run(m, ins, nin, outs, nout, &err) != 0) {
                snprintf(why, wlen, "run: %s", err.msg);
                res = err.code == CL_E_UNSUPPORTED ? R_UNSUPPORTED : R_FAIL;
            } else {
                for (size_t k = 0; k < nout && res == R_PASS; k++) {
                    snprintf(path, sizeof path, "%s/output_%zu.pb", sdir, k);
                    eng_tensor exp;
                    if (load_pb(path, &exp, NULL, &err) != 0) {
                        snprintf(why, wlen, "output_%zu.pb: %s", k, err.msg);
                        res = err.code == CL_E_UNSUPPORTED ? R_UNSUPPORTED : R_FAIL;
                        break;
                    }
                    char w2[300];
                    if (!close_enough(&exp, &outs[k], w2, sizeof w2)) {
                        snprintf(why, wlen, "output %zu (%s): %s", k, cl_engine_output(m, k)->name, w2);
                        res = R_FAIL;
                    }
                    eng_tensor_free(&exp);
                }
                for (size_t k = 0; k < nout; k++)
                    cl_engine_tensor_release(&outs[k]);
            }
        }
        for (size_t k = 0; k < nin; k++)
            eng_tensor_free(&tin[k]);
        free(tin);
        free(ins);
        free(outs);
    }
    cl_engine_free(m);
    if (res == R_PASS && sets == 0) {
        snprintf(why, wlen, "no test data sets");
        return R_UNSUPPORTED;
    }
    return res;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int main(int argc, char **argv)
{
    const char *root = "/usr/share/libonnx-testdata/data/node";
    const char *filter = NULL;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "-v") == 0)
            verbose = 1;
        else if (strcmp(argv[i], "-k") == 0 && i + 1 < argc)
            filter = argv[++i];
        else
            root = argv[i];
    }
    cl_log_set_level(CL_LOG_WARN);
    cl_secmem_set_require_lock(false); /* constants live in secure memory; do not depend on RLIMIT_MEMLOCK */
    DIR *d = opendir(root);
    if (!d) {
        fprintf(stderr, "onnx_conformance: cannot open %s (install Debian's libonnx-testdata)\n", root);
        return 2;
    }
    char **names = NULL;
    size_t nn = 0, cap = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (strncmp(de->d_name, "test_", 5) != 0 || (filter && !strstr(de->d_name, filter)))
            continue;
        if (nn == cap) {
            cap = cap ? cap * 2 : 256;
            names = realloc(names, cap * sizeof *names);
        }
        names[nn++] = strdup(de->d_name);
    }
    closedir(d);
    qsort(names, nn, sizeof *names, cmp_str);
    int counts[3] = {0};
    for (size_t i = 0; i < nn; i++) {
        char dir[4096], why[1024] = "";
        snprintf(dir, sizeof dir, "%s/%s", root, names[i]);
        result r = run_test(dir, why, sizeof why);
        counts[r]++;
        if (r == R_FAIL)
            printf("FAIL %s: %s\n", names[i], why);
        else if (verbose)
            printf("%s %s%s%s\n", r == R_PASS ? "pass" : "unsupported", names[i], r == R_PASS ? "" : ": ",
                   r == R_PASS ? "" : why);
        free(names[i]);
    }
    free(names);
    printf("onnx conformance (node tests): passed=%d failed=%d unsupported=%d total=%zu\n", counts[R_PASS],
           counts[R_FAIL], counts[R_UNSUPPORTED], nn);
    return counts[R_FAIL] ? 1 : 0;
}
