/* warmup.c — TF Serving's model warm-up (--enable_model_warmup): before a version is served, the
 * requests logged in its assets.extra/tf_serving_warmup_requests are run through it, or one synthetic
 * request per signature when it has none. The file is TFRecord framing around PredictionLog protobufs
 * and is hostile input (whoever writes a model directory writes it): every length is checked against
 * what is left and CL_REPO_WARMUP_MAX_BYTES, both CRCs of each record are verified, at most
 * CL_REPO_WARMUP_MAX_RECORDS records are read, and the requests go through the same conversion and
 * signature checks as a Predict (cl_serve_pb_request_inputs, cl_serve_model_run).
 * The CRCs are CRC-32C (cl_crc32c, common: Debian packages no C library for it). Thread-safe. */
#include "cloister/repo.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "tensorflow_serving/apis/prediction_log.pb-c.h"

#define LOG "repo"

/* ---------------------------------------------------------------- TFRecord */

uint32_t cl_repo_tfrecord_crc(const uint8_t *p, size_t n) { return cl_crc32c_mask(cl_crc32c(0, p, n)); }

static uint64_t le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = v << 8 | p[i];
    return v;
}

static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

int cl_repo_tfrecord_each(const uint8_t *buf, size_t len, size_t max_record,
                          int (*fn)(void *arg, const uint8_t *rec, size_t n, cl_err *err), void *arg, cl_err *err)
{
    size_t off = 0;
    int count = 0;
    while (off < len) {
        if (count == CL_REPO_WARMUP_MAX_RECORDS)
            return cl_err_set(err, CL_E_FORMAT, "more than %d records (at offset %zu)", CL_REPO_WARMUP_MAX_RECORDS,
                              off);
        if (len - off < 12)
            return cl_err_set(err, CL_E_FORMAT, "record %d at offset %zu: truncated header (%zu of 12 bytes)", count,
                              off, len - off);
        const uint8_t *h = buf + off;
        if (cl_repo_tfrecord_crc(h, 8) != le32(h + 8))
            return cl_err_set(err, CL_E_FORMAT, "record %d at offset %zu: the length's CRC does not match (damaged "
                              "file)", count, off);
        uint64_t n = le64(h);
        if (n > max_record)
            return cl_err_set(err, CL_E_FORMAT, "record %d at offset %zu: %llu bytes, more than the %zu allowed",
                              count, off, (unsigned long long)n, max_record);
        if (n > len - off - 12 || len - off - 12 - n < 4)
            return cl_err_set(err, CL_E_FORMAT, "record %d at offset %zu: truncated (%llu bytes of data and 4 of CRC "
                              "announced, %zu left)", count, off, (unsigned long long)n, len - off - 12);
        const uint8_t *d = h + 12;
        if (cl_repo_tfrecord_crc(d, (size_t)n) != le32(d + n))
            return cl_err_set(err, CL_E_FORMAT, "record %d at offset %zu: the data's CRC does not match (damaged "
                              "file)", count, off);
        if (fn && fn(arg, d, (size_t)n, err) != 0)
            return cl_err_prefix(err, "record %d", count);
        off += 12 + (size_t)n + 4;
        count++;
    }
    return count;
}

/* ---------------------------------------------------------------- replays */

typedef struct warm {
    cl_serve_model *m;
    unsigned iterations;
    int runs, skipped;
} warm;

static int run_inputs(warm *w, cl_serve_tensor *in, size_t n, cl_err *err)
{
    for (unsigned it = 0; it < w->iterations; it++) {
        cl_serve_tensor *out = NULL;
        size_t n_out = 0;
        if (cl_serve_model_run(w->m, in, n, &out, &n_out, err) != 0)
            return -1;
        cl_serve_tensors_free(out, n_out);
        w->runs++;
    }
    return 0;
}

static int replay_record(void *arg, const uint8_t *rec, size_t n, cl_err *err)
{
    warm *w = arg;
    Tensorflow__Serving__PredictionLog *log = tensorflow__serving__prediction_log__unpack(NULL, n, rec);
    if (!log)
        return cl_err_set(err, CL_E_FORMAT, "not a PredictionLog protobuf");
    int rc = 0;
    if (log->log_type_case != TENSORFLOW__SERVING__PREDICTION_LOG__LOG_TYPE_PREDICT_LOG || !log->predict_log->request) {
        w->skipped++;
        goto out;
    }
    size_t len = protobuf_c_message_get_packed_size(&log->predict_log->request->base);
    uint8_t *pb = malloc(len ? len : 1);
    if (!pb) {
        rc = cl_err_nomem(err);
        goto out;
    }
    protobuf_c_message_pack(&log->predict_log->request->base, pb);
    cl_serve_tensor *in = NULL;
    size_t n_in = 0;
    rc = cl_serve_pb_request_inputs(pb, len, CL_REPO_WARMUP_MAX_BYTES, &in, &n_in, err);
    free(pb);
    if (rc == 0) {
        rc = run_inputs(w, in, n_in, err);
        cl_serve_tensors_free(in, n_in);
    }
out:
    tensorflow__serving__prediction_log__free_unpacked(log, NULL);
    return rc;
}

/* One request of zeros per signature: dynamic dimensions 1, an unknown rank [1]. */
static int synthetic(warm *w, const cl_serve_signature *sig, cl_err *err)
{
    cl_serve_tensor *in = calloc(sig->n_inputs ? sig->n_inputs : 1, sizeof *in);
    if (!in)
        return cl_err_nomem(err);
    size_t n = 0;
    int rc = 0;
    for (; n < sig->n_inputs && rc == 0; n++) {
        const cl_serve_tensor_spec *ts = &sig->inputs[n];
        int64_t dims[CL_SERVE_MAX_DIMS];
        int ndim = ts->ndim < 0 ? 1 : ts->ndim;
        for (int d = 0; d < ndim; d++)
            dims[d] = ts->ndim < 0 || ts->dims[d] < 0 ? 1 : ts->dims[d];
        rc = cl_serve_tensor_init(&in[n], ts->name, ts->dtype, ndim, dims, CL_REPO_WARMUP_MAX_BYTES, err);
    }
    if (rc == 0)
        rc = run_inputs(w, in, n, err);
    cl_serve_tensors_free(in, n);
    return rc;
}

/* cl_repo_warmup on the file's contents (buf NULL: no file, the synthetic requests). */
static int warmup_run(const cl_serve_backend *b, const uint8_t *buf, size_t len, const char *path,
                      unsigned iterations, cl_err *err)
{
    bool has_file = buf != NULL;
    /* a registry of its own holds the version while it is warmed up: the same input checks and image
     * decoding as a served request; the backend stays the caller's (no destroy) */
    cl_serve_registry *reg = cl_serve_registry_new(err);
    cl_serve_backend shadow = *b;
    shadow.destroy = NULL;
    int rc = -1;
    warm w = {.iterations = iterations ? iterations : 1};
    if (!reg || cl_serve_registry_add(reg, "warmup", 1, &shadow, err) != 0 ||
        !(w.m = cl_serve_registry_get(reg, "warmup", 1, err)))
        goto out;
    if (has_file) {
        int n = cl_repo_tfrecord_each(buf, len, CL_REPO_WARMUP_MAX_BYTES, replay_record, &w, err);
        if (n < 0) {
            cl_err_prefix(err, "%s", path);
            goto out;
        }
        if (w.skipped)
            CL_INFO(LOG, "%s: %d of %d records skipped (only PredictLog records are replayed)", path, w.skipped, n);
    } else if (synthetic(&w, b->signature, err) != 0) {
        cl_err_prefix(err, "synthetic request for signature '%s'", b->signature->name);
        goto out;
    }
    rc = w.runs;
out:
    if (w.m)
        cl_serve_model_release(w.m);
    cl_serve_registry_free(reg);
    return rc;
}

int cl_repo_warmup_buffer(const cl_serve_backend *b, const uint8_t *buf, size_t len, unsigned iterations, cl_err *err)
{
    static const uint8_t empty[1];
    return warmup_run(b, buf ? buf : empty, len, CL_REPO_WARMUP_FILE, iterations, err);
}

int cl_repo_warmup(const cl_serve_backend *b, const char *dir, unsigned iterations, cl_err *err)
{
    char path[4200];
    snprintf(path, sizeof path, "%s/%s", dir, CL_REPO_WARMUP_FILE);
    struct stat st;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (stat(path, &st) == 0 && cl_file_read(path, CL_REPO_WARMUP_MAX_BYTES, &buf, &len, err) != 0)
        return -1;
    int rc = warmup_run(b, buf, len, path, iterations, err);
    free(buf);
    return rc;
}
