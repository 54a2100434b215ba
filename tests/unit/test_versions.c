/* test_versions.c — model versions as TF Serving manages them, with the real demo model
 * (models/digits) in the repository: the version policies (latest N, all, specific) as version
 * directories appear and disappear (rollback to the previous version, in-flight requests finishing on
 * an unloaded version), version labels and TF's rule for them, configuration reloads (models added,
 * removed, changed; a refused configuration changing nothing), load retries, the config parser's new
 * fields, TFRecord framing (CRC-32C against the published check value; damaged, truncated, oversized
 * records) and warm-up (PredictLog replays, skipped record kinds, synthetic requests, a bad file
 * failing its version). */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloister/repo.h"
#include "testutil.h"
#include "tensorflow_serving/apis/prediction_log.pb-c.h"

#ifndef CLOISTER_SOURCE_DIR
#error "CLOISTER_SOURCE_DIR must be defined by the build"
#endif

static uint8_t *model_bytes;
static size_t model_len;

static int setup(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/digits/1/model.onnx", CLOISTER_SOURCE_DIR);
    model_bytes = tu_read_file(path, &model_len);
    cl_log_set_level(CL_LOG_OFF);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(model_bytes);
    return 0;
}

static void put_version(const char *base, int version, const uint8_t *bytes, size_t len)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%d", base, version);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/%s", dir, CL_REPO_PLAIN_NAME);
    tu_write_file(path, bytes, len);
}

static void drop_version(const char *base, int version)
{
    char dir[1024];
    snprintf(dir, sizeof dir, "%s/%d", base, version);
    tu_rmrf(dir);
}

/* The loaded versions of `name`, highest first, as "3,2" ("" for none). */
static const char *versions_of(cl_serve_registry *reg, const char *name)
{
    static char buf[256];
    int64_t v[64];
    size_t n = cl_serve_registry_versions(reg, name, v, 64);
    buf[0] = '\0';
    for (size_t i = 0; i < n && i < 64; i++)
        snprintf(buf + strlen(buf), sizeof buf - strlen(buf), "%s%lld", i ? "," : "", (long long)v[i]);
    return buf;
}

/* One run of a zero image through m: the model answers (two outputs). */
static void run_once(cl_serve_model *m)
{
    cl_err err = {0};
    cl_serve_tensor in;
    int64_t dims[4] = {1, 1, 8, 8};
    assert_int_equal(cl_serve_tensor_init(&in, "image", CL_SERVE_DT_FLOAT, 4, dims, 0, &err), 0);
    cl_serve_tensor *out = NULL;
    size_t n_out = 0;
    if (cl_serve_model_run(m, &in, 1, &out, &n_out, &err) != 0)
        fail_msg("run: %s", err.msg);
    assert_int_equal(n_out, 2);
    cl_serve_tensors_free(out, n_out);
    cl_serve_tensor_clear(&in);
}

static void test_policies(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    for (int v = 1; v <= 3; v++)
        put_version(base, v, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    cl_repo_model_config mc = {.name = "digits", .base_path = base, .policy = CL_REPO_POLICY_LATEST,
                               .num_versions = 2};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .engine_threads = 1};
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    assert_string_equal(versions_of(reg, "digits"), "3,2");
    assert_int_equal(cl_repo_poll(r), 0);

    /* the newest directory removed: latest 2 rolls back to 2 and 1 */
    drop_version(base, 3);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_string_equal(versions_of(reg, "digits"), "2,1");

    /* a request holding version 2 while its directory goes: it finishes on version 2 */
    cl_serve_model *held = cl_serve_registry_get(reg, "digits", 2, &err);
    assert_non_null(held);
    drop_version(base, 2);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_string_equal(versions_of(reg, "digits"), "1");
    assert_null(cl_serve_registry_get(reg, "digits", 2, &err));
    assert_non_null(strstr(err.msg, "Servable not found for request: Specific(digits, 2)"));
    run_once(held); /* the backend is still there for it */
    assert_int_equal(cl_serve_model_version(held), 2);
    cl_serve_model_release(held);

    /* all: every directory */
    put_version(base, 4, model_bytes, model_len);
    put_version(base, 5, model_bytes, model_len);
    cl_serve_code code;
    cl_repo_model_config all = {.name = "digits", .base_path = base, .policy = CL_REPO_POLICY_ALL};
    if (cl_repo_reload(r, &all, 1, &code, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(code, CL_SC_OK);
    assert_string_equal(versions_of(reg, "digits"), "5,4,1");

    /* specific [1, 4]: 5 unloaded, and a new 6 is not taken */
    int64_t spec[] = {1, 4};
    cl_repo_model_config sp = {.name = "digits", .base_path = base, .policy = CL_REPO_POLICY_SPECIFIC,
                               .versions = spec, .n_versions = 2};
    assert_int_equal(cl_repo_reload(r, &sp, 1, &code, &err), 0);
    assert_string_equal(versions_of(reg, "digits"), "4,1");
    put_version(base, 6, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_string_equal(versions_of(reg, "digits"), "4,1");
    /* and a listed version that comes back is served again */
    drop_version(base, 4);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_string_equal(versions_of(reg, "digits"), "1");
    put_version(base, 4, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_string_equal(versions_of(reg, "digits"), "4,1");

    /* latest (default 1) again */
    cl_repo_model_config latest = {.name = "digits", .base_path = base};
    assert_int_equal(cl_repo_reload(r, &latest, 1, &code, &err), 0);
    assert_string_equal(versions_of(reg, "digits"), "6");

    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

static void test_policy_select(void **state)
{
    (void)state;
    int64_t avail[] = {3, 10, 1, 7}, out[4];
    cl_repo_model_config l2 = {.policy = CL_REPO_POLICY_LATEST, .num_versions = 2};
    assert_int_equal(cl_repo_policy_select(&l2, avail, 4, out), 2);
    assert_int_equal(out[0], 10);
    assert_int_equal(out[1], 7);
    cl_repo_model_config l0 = {.policy = CL_REPO_POLICY_LATEST};
    assert_int_equal(cl_repo_policy_select(&l0, avail, 4, out), 1);
    assert_int_equal(out[0], 10);
    cl_repo_model_config all = {.policy = CL_REPO_POLICY_ALL};
    assert_int_equal(cl_repo_policy_select(&all, avail, 4, out), 4);
    assert_int_equal(out[3], 1);
    int64_t want[] = {7, 2, 1};
    cl_repo_model_config sp = {.policy = CL_REPO_POLICY_SPECIFIC, .versions = want, .n_versions = 3};
    assert_int_equal(cl_repo_policy_select(&sp, avail, 4, out), 2);
    assert_int_equal(out[0], 7);
    assert_int_equal(out[1], 1);
    assert_int_equal(cl_repo_policy_select(&sp, avail, 0, out), 0);
    char d[64];
    cl_repo_policy_describe(&sp, d, sizeof d);
    assert_string_equal(d, "specific [7, 2, 1]");
    cl_repo_policy_describe(&l2, d, sizeof d);
    assert_string_equal(d, "latest 2");
    assert_true(cl_repo_label_valid("stable"));
    assert_true(cl_repo_label_valid("canary-2.b_x"));
    assert_false(cl_repo_label_valid(""));
    assert_false(cl_repo_label_valid("a/b"));
    assert_false(cl_repo_label_valid("a b"));
    assert_false(cl_repo_label_valid("%2e"));
}

static void test_labels_and_reload(void **state)
{
    (void)state;
    char *base = tu_tmpdir(), *base2 = tu_tmpdir();
    for (int v = 1; v <= 2; v++)
        put_version(base, v, model_bytes, model_len);
    put_version(base2, 7, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    cl_repo_version_label labels[] = {{"stable", 1}, {"canary", 2}};
    cl_repo_model_config mc = {.name = "digits", .base_path = base, .policy = CL_REPO_POLICY_ALL,
                               .labels = labels, .n_labels = 2};
    /* TF applies labels before the versions load: at start-up they need the flag */
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .engine_threads = 1};
    assert_null(cl_repo_new(&o, &err));
    assert_string_equal(err.msg, "Request to assign label to version 1 of model digits, which is not currently "
                                 "available for inference");
    assert_string_equal(versions_of(reg, "digits"), "");
    o.allow_unavailable_labels = true;
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    int64_t v = 0;
    assert_int_equal(cl_serve_registry_label(reg, "digits", "stable", &v, &err), 0);
    assert_int_equal(v, 1);
    assert_int_equal(cl_serve_registry_label(reg, "digits", "canary", &v, &err), 0);
    assert_int_equal(v, 2);
    assert_int_equal(cl_serve_registry_label(reg, "digits", "beta", &v, &err), -1);
    assert_string_equal(err.msg, "Unrecognized servable version label: beta");
    assert_int_equal(cl_serve_registry_label(reg, "other", "stable", &v, &err), -1);

    /* moving a label to a version that is not available: refused even with the flag, nothing changes */
    cl_repo_version_label moved[] = {{"stable", 9}, {"canary", 2}};
    cl_repo_model_config mc2 = mc;
    mc2.labels = moved;
    mc2.policy = CL_REPO_POLICY_LATEST;
    cl_serve_code code;
    assert_int_equal(cl_repo_reload(r, &mc2, 1, &code, &err), -1);
    assert_int_equal(code, CL_SC_FAILED_PRECONDITION);
    assert_non_null(strstr(err.msg, "version 9 of model digits, which is not currently available"));
    assert_string_equal(versions_of(reg, "digits"), "2,1"); /* the old policy (all) stays */
    assert_int_equal(cl_serve_registry_label(reg, "digits", "stable", &v, &err), 0);
    assert_int_equal(v, 1);
    /* a new label on a version not loaded is fine with the flag */
    cl_repo_version_label newl[] = {{"stable", 2}, {"next", 3}};
    mc2.labels = newl;
    assert_int_equal(cl_repo_reload(r, &mc2, 1, &code, &err), 0);
    assert_string_equal(versions_of(reg, "digits"), "2");
    assert_int_equal(cl_serve_registry_label(reg, "digits", "next", &v, &err), 0);
    assert_int_equal(v, 3);
    assert_int_equal(cl_serve_registry_label(reg, "digits", "canary", &v, &err), -1);

    /* models added and removed */
    cl_repo_model_config two[2] = {{.name = "digits", .base_path = base}, {.name = "other", .base_path = base2}};
    assert_int_equal(cl_repo_reload(r, two, 2, &code, &err), 0);
    assert_string_equal(versions_of(reg, "other"), "7");
    assert_int_equal(cl_serve_registry_label(reg, "digits", "next", &v, &err), -1); /* labels replaced whole */
    assert_int_equal(cl_repo_reload(r, &two[1], 1, &code, &err), 0);
    assert_string_equal(versions_of(reg, "digits"), "");
    assert_string_equal(versions_of(reg, "other"), "7");
    /* bad configurations change nothing */
    cl_repo_model_config dup[2] = {{.name = "x", .base_path = base}, {.name = "x", .base_path = base2}};
    assert_int_equal(cl_repo_reload(r, dup, 2, &code, &err), -1);
    assert_int_equal(code, CL_SC_INVALID_ARGUMENT);
    assert_non_null(strstr(err.msg, "configured twice"));
    cl_repo_model_config bad_name = {.name = "../x", .base_path = base};
    assert_int_equal(cl_repo_reload(r, &bad_name, 1, &code, &err), -1);
    cl_repo_model_config none = {.name = "none", .base_path = "/nonexistent/cloister"};
    assert_int_equal(cl_repo_reload(r, &none, 1, &code, &err), -1); /* applied, but nothing to load */
    assert_int_equal(code, CL_SC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "model 'none'"));
    assert_string_equal(versions_of(reg, "other"), "");

    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    tu_rmrf(base2);
    free(base);
    free(base2);
}

static void test_load_retries(void **state)
{
    (void)state;
    char *base = tu_tmpdir(), *broken = tu_tmpdir();
    put_version(base, 1, model_bytes, model_len);
    put_version(broken, 1, (const uint8_t *)"not onnx", 8);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    cl_repo_model_config mc = {.name = "broken", .base_path = broken};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .max_load_retries = 2,
                         .load_retry_interval_us = 1000};
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "cannot load model"));
    assert_non_null(strstr(err.msg, "(after 2 load retries)"));
    mc = (cl_repo_model_config){.name = "digits", .base_path = base};
    cl_repo *r = cl_repo_new(&o, &err);
    assert_non_null(r);
    cl_repo_model_config two[2] = {{.name = "digits", .base_path = base}, {.name = "broken", .base_path = broken}};
    cl_serve_code code;
    assert_int_equal(cl_repo_reload(r, two, 2, &code, &err), -1);
    assert_int_equal(code, CL_SC_UNAVAILABLE);
    assert_non_null(strstr(err.msg, "(after 2 load retries)"));
    assert_string_equal(versions_of(reg, "digits"), "1");
    /* the file fixed: loaded at the next poll */
    put_version(broken, 1, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_string_equal(versions_of(reg, "broken"), "1");
    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    tu_rmrf(broken);
    free(base);
    free(broken);
}

static void test_config_fields(void **state)
{
    (void)state;
    const char *good = "model_config_list {\n"
                       "  config {\n"
                       "    name: 'a' base_path: '/m/a'\n"
                       "    model_version_policy { specific { versions: 3 versions: [1, 2] } }\n"
                       "    version_labels { key: 'stable' value: 1 }\n"
                       "    version_labels: { key: \"canary\", value: 3 };\n"
                       "  },\n"
                       "  config { name: 'b' base_path: '/m/b' model_version_policy: { latest: { num_versions: 3 } } }\n"
                       "  config { name: 'c' base_path: '/m/c' model_version_policy { all {} } }\n"
                       "}\n";
    cl_repo_model_config *m;
    size_t n;
    cl_err err = {0};
    if (cl_repo_config_parse(good, strlen(good), &m, &n, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, 3);
    assert_int_equal(m[0].policy, CL_REPO_POLICY_SPECIFIC);
    assert_int_equal(m[0].n_versions, 3);
    assert_int_equal(m[0].versions[0], 3);
    assert_int_equal(m[0].versions[2], 2);
    assert_int_equal(m[0].n_labels, 2);
    assert_string_equal(m[0].labels[1].label, "canary");
    assert_int_equal(m[0].labels[1].version, 3);
    assert_int_equal(m[1].policy, CL_REPO_POLICY_LATEST);
    assert_int_equal(m[1].num_versions, 3);
    assert_int_equal(m[2].policy, CL_REPO_POLICY_ALL);
    cl_repo_config_free(m, n);

    const struct {
        const char *text, *msg;
    } bad[] = {
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { all {} latest {} } } }",
         "takes one of latest, all, specific"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { specific { } } } }",
         "specific lists no version"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { specific { versions: 0 } } } }",
         "not a positive integer"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { specific { versions: [1, 2 } } } }",
         "missing ']'"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { latest { num_versions: 65 } } } }",
         "num_versions must be 0 to 64"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { latest { num_versions: "
         "99999999999999999999 } } } }", "number out of range"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { all { x: 1 } } } }",
         "all {} has no fields"},
        {"model_config_list { config { name: 'a' base_path: 'b' version_labels { key: 'x' } } }",
         "needs a key and a value"},
        {"model_config_list { config { name: 'a' base_path: 'b' version_labels { key: 'a/b' value: 1 } } }",
         "is not valid"},
        {"model_config_list { config { name: 'a' base_path: 'b' version_labels { key: 'x' value: -1 } } }",
         "positive integer"},
        {"model_config_list { config { name: 'a' base_path: 'b' version_labels { key: 'x' value: 1 } "
         "version_labels { key: 'x' value: 2 } } }", "'x' is given twice"},
        {"model_config_list { config { name: 'a' base_path: 'b' version_labels { key: 'x' value: 1.5 } } }",
         "not an integer"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_version_policy { } model_version_policy { } } }",
         "given twice"},
        {"model_config_list { config { name: 'a' base_path: 'b' \x01 } }", "unexpected byte 0x01"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        m = (cl_repo_model_config *)1;
        assert_int_equal(cl_repo_config_parse(bad[i].text, strlen(bad[i].text), &m, &n, &err), -1);
        assert_null(m);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: '%s' does not contain '%s'", i, err.msg, bad[i].msg);
    }
}

/* ---------------------------------------------------------------- TFRecord and warm-up */

typedef struct rec_buf {
    uint8_t *p;
    size_t n;
} rec_buf;

static void put_le(uint8_t *p, uint64_t v, int n)
{
    for (int i = 0; i < n; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void append_record(rec_buf *b, const uint8_t *data, size_t n)
{
    b->p = realloc(b->p, b->n + 16 + n);
    uint8_t *h = b->p + b->n;
    put_le(h, n, 8);
    put_le(h + 8, cl_repo_tfrecord_crc(h, 8), 4);
    memcpy(h + 12, data, n);
    put_le(h + 12 + n, cl_repo_tfrecord_crc(h + 12, n), 4);
    b->n += 16 + n;
}

/* A PredictionLog holding a PredictRequest with one float input `name` of shape [rows,1,8,8]. */
static uint8_t *predict_log(const char *name, int rows, size_t *len)
{
    static float zeros[4 * 64];
    Tensorflow__TensorShapeProto__Dim d[4], *dp[4];
    int64_t dims[4] = {rows, 1, 8, 8};
    for (int i = 0; i < 4; i++) {
        tensorflow__tensor_shape_proto__dim__init(&d[i]);
        d[i].size = dims[i];
        dp[i] = &d[i];
    }
    Tensorflow__TensorShapeProto shape = TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
    shape.n_dim = 4;
    shape.dim = dp;
    Tensorflow__TensorProto t = TENSORFLOW__TENSOR_PROTO__INIT;
    t.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
    t.tensor_shape = &shape;
    t.tensor_content.data = (uint8_t *)zeros;
    t.tensor_content.len = (size_t)rows * 64 * sizeof(float);
    Tensorflow__Serving__PredictRequest__InputsEntry e = TENSORFLOW__SERVING__PREDICT_REQUEST__INPUTS_ENTRY__INIT;
    e.key = (char *)name;
    e.value = &t;
    Tensorflow__Serving__PredictRequest__InputsEntry *ep = &e;
    Tensorflow__Serving__PredictRequest req = TENSORFLOW__SERVING__PREDICT_REQUEST__INIT;
    req.n_inputs = 1;
    req.inputs = &ep;
    Tensorflow__Serving__PredictLog pl = TENSORFLOW__SERVING__PREDICT_LOG__INIT;
    pl.request = &req;
    Tensorflow__Serving__PredictionLog log = TENSORFLOW__SERVING__PREDICTION_LOG__INIT;
    log.log_type_case = TENSORFLOW__SERVING__PREDICTION_LOG__LOG_TYPE_PREDICT_LOG;
    log.predict_log = &pl;
    *len = tensorflow__serving__prediction_log__get_packed_size(&log);
    uint8_t *out = malloc(*len);
    tensorflow__serving__prediction_log__pack(&log, out);
    return out;
}

static int count_cb(void *arg, const uint8_t *rec, size_t n, cl_err *err)
{
    (void)rec;
    (void)err;
    *(size_t *)arg += n;
    return 0;
}

static void test_tfrecord(void **state)
{
    (void)state;
    /* CRC-32C's check value (RFC 3720 / the Castagnoli polynomial): crc("123456789") = 0xe3069283,
     * unmasked from TFRecord's masking */
    uint32_t masked = cl_repo_tfrecord_crc((const uint8_t *)"123456789", 9), m = masked - 0xa282ead8u;
    assert_int_equal((m >> 17) | (m << 15), 0xe3069283u);
    rec_buf b = {0};
    append_record(&b, (const uint8_t *)"hello", 5);
    append_record(&b, (const uint8_t *)"", 0);
    append_record(&b, (const uint8_t *)"world!", 6);
    cl_err err = {0};
    size_t bytes = 0;
    assert_int_equal(cl_repo_tfrecord_each(b.p, b.n, 1024, count_cb, &bytes, &err), 3);
    assert_int_equal(bytes, 11);
    assert_int_equal(cl_repo_tfrecord_each(b.p, 0, 1024, NULL, NULL, &err), 0);
    /* every truncation is an error naming the record */
    for (size_t cut = 1; cut < b.n; cut++) {
        if (cut == 21 || cut == 37) /* record boundaries: a shorter valid file */
            continue;
        if (cl_repo_tfrecord_each(b.p, cut, 1024, NULL, NULL, &err) != -1)
            fail_msg("cut at %zu accepted", cut);
        assert_non_null(strstr(err.msg, "truncated"));
    }
    /* every flipped bit is caught by a CRC (or makes a length that does not fit) */
    for (size_t i = 0; i < b.n; i++) {
        b.p[i] ^= 0x10;
        if (cl_repo_tfrecord_each(b.p, b.n, 1024, NULL, NULL, &err) != -1)
            fail_msg("flip at %zu accepted", i);
        b.p[i] ^= 0x10;
    }
    b.p[14] ^= 1; /* data of the first record */
    assert_int_equal(cl_repo_tfrecord_each(b.p, b.n, 1024, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "record 0 at offset 0: the data's CRC does not match"));
    b.p[14] ^= 1;
    /* a record above the limit, before its bytes are looked at */
    assert_int_equal(cl_repo_tfrecord_each(b.p, b.n, 4, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "5 bytes, more than the 4 allowed"));
    /* a length of 2^64-1 with a valid CRC */
    uint8_t huge[16];
    put_le(huge, UINT64_MAX, 8);
    put_le(huge + 8, cl_repo_tfrecord_crc(huge, 8), 4);
    assert_int_equal(cl_repo_tfrecord_each(huge, sizeof huge, SIZE_MAX, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "truncated"));
    free(b.p);
}

static void write_warmup(const char *vdir, const rec_buf *b)
{
    char dir[1100], path[1200];
    snprintf(dir, sizeof dir, "%s/assets.extra", vdir);
    mkdir(dir, 0700);
    snprintf(path, sizeof path, "%s/tf_serving_warmup_requests", dir);
    tu_write_file(path, b->p, b->n);
}

static void test_warmup(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    put_version(base, 1, model_bytes, model_len);
    char vdir[1100], mpath[1200];
    snprintf(vdir, sizeof vdir, "%s/1", base);
    snprintf(mpath, sizeof mpath, "%s/%s", vdir, CL_REPO_PLAIN_NAME);
    cl_err err = {0};
    cl_serve_backend b;
    assert_int_equal(cl_repo_load_backend(mpath, false, NULL, NULL, 1, &b, &err), 0);
    /* no file: one synthetic request */
    assert_int_equal(cl_repo_warmup(&b, vdir, 1, &err), 1);
    /* two PredictLogs and a ClassifyLog (field 2: skipped), three iterations */
    rec_buf f = {0};
    size_t n;
    uint8_t *r1 = predict_log("image", 1, &n);
    append_record(&f, r1, n);
    free(r1);
    static const uint8_t classify[] = {0x12, 0x00}; /* PredictionLog.classify_log = {} */
    append_record(&f, classify, sizeof classify);
    uint8_t *r2 = predict_log("image", 4, &n);
    append_record(&f, r2, n);
    free(r2);
    write_warmup(vdir, &f);
    assert_int_equal(cl_repo_warmup(&b, vdir, 3, &err), 6);
    /* a record the model refuses: the warm-up fails, naming it */
    uint8_t *r3 = predict_log("pixels", 1, &n);
    append_record(&f, r3, n);
    free(r3);
    write_warmup(vdir, &f);
    assert_int_equal(cl_repo_warmup(&b, vdir, 1, &err), -1);
    assert_non_null(strstr(err.msg, "record 3"));
    assert_non_null(strstr(err.msg, "pixels"));
    /* not a PredictionLog */
    rec_buf g = {0};
    append_record(&g, (const uint8_t *)"\xff\xff\xff", 3);
    write_warmup(vdir, &g);
    assert_int_equal(cl_repo_warmup(&b, vdir, 1, &err), -1);
    assert_non_null(strstr(err.msg, "not a PredictionLog protobuf"));
    b.destroy(b.ctx);

    /* through the repository: a version with a damaged warm-up file does not load; fixed, it does */
    g.p[g.n - 1] ^= 1;
    write_warmup(vdir, &g);
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    cl_repo_model_config mc = {.name = "digits", .base_path = base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .warmup = true, .warmup_iterations = 2};
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "warm-up"));
    assert_non_null(strstr(err.msg, "the data's CRC does not match"));
    rec_buf ok = {0};
    r1 = predict_log("image", 2, &n);
    append_record(&ok, r1, n);
    free(r1);
    write_warmup(vdir, &ok);
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    assert_string_equal(versions_of(reg, "digits"), "1");
    cl_repo_free(r);
    cl_serve_registry_free(reg);
    free(f.p);
    free(g.p);
    free(ok.p);
    tu_rmrf(base);
    free(base);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_policy_select), cmocka_unit_test(test_policies),
        cmocka_unit_test(test_labels_and_reload), cmocka_unit_test(test_load_retries),
        cmocka_unit_test(test_config_fields), cmocka_unit_test(test_tfrecord), cmocka_unit_test(test_warmup),
    };
    return cmocka_run_group_tests_name("versions", tests, setup, teardown);
}
