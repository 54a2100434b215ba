/* test_repo.c — the model repository with the real demo model (models/digits): versions found on disk,
 * plain and sealed models served through the engine with PyTorch's answers, hot swap of new versions
 * while requests run, and every way a version can fail leaving the previous one serving; versions
 * with image preprocessing (preprocess.json) answering the sample PNGs, and every bad declaration
 * failing its version. */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cjson/cJSON.h>

#include "cloister/image.h"
#include "cloister/repo.h"
#include "testutil.h"

#ifndef CLOISTER_SOURCE_DIR
#error "CLOISTER_SOURCE_DIR must be defined by the build"
#endif

#define N_SAMPLES 20

static uint8_t model_key[CL_SEAL_KEY_LEN], other_key[CL_SEAL_KEY_LEN];
static float sample_input[N_SAMPLES][64];
static float sample_probs[N_SAMPLES][10];
static int sample_label[N_SAMPLES];
static uint8_t *model_bytes;
static size_t model_len;
static uint8_t *sample_png[N_SAMPLES];
static size_t sample_png_len[N_SAMPLES];

/* The 20 sample PNGs, preprocessed as the model expects, and PyTorch's probabilities for them. */
static int setup(void **state)
{
    (void)state;
    tu_fill_random(model_key, sizeof model_key, 11);
    tu_fill_random(other_key, sizeof other_key, 12);
    char path[1024];
    snprintf(path, sizeof path, "%s/models/digits/1/model.onnx", CLOISTER_SOURCE_DIR);
    model_bytes = tu_read_file(path, &model_len);
    snprintf(path, sizeof path, "%s/models/digits/samples/expected.json", CLOISTER_SOURCE_DIR);
    size_t len;
    char *text = (char *)tu_read_file(path, &len);
    cJSON *root = cJSON_Parse(text);
    assert_non_null(root);
    int i = 0;
    for (cJSON *e = root->child; e; e = e->next, i++) {
        assert_true(i < N_SAMPLES);
        sample_label[i] = cJSON_GetObjectItem(e, "label")->valueint;
        cJSON *p = cJSON_GetObjectItem(e, "probabilities");
        for (int k = 0; k < 10; k++)
            sample_probs[i][k] = (float)cJSON_GetArrayItem(p, k)->valuedouble;
        snprintf(path, sizeof path, "%s/models/digits/samples/%s", CLOISTER_SOURCE_DIR, e->string);
        size_t png_len;
        uint8_t *png = tu_read_file(path, &png_len);
        cl_image img;
        assert_int_equal(cl_image_decode(png, png_len, 1, 0, &img, NULL), 0);
        cl_image_preproc pp = {.width = 8, .height = 8, .resize = CL_IMAGE_RESIZE_AREA, .channels = 1,
                               .scale = 1.0f / 255};
        assert_int_equal(cl_image_to_tensor(&img, &pp, sample_input[i], NULL), 0);
        cl_image_free(&img);
        sample_png[i] = png;
        sample_png_len[i] = png_len;
    }
    assert_int_equal(i, N_SAMPLES);
    cJSON_Delete(root);
    free(text);
    return 0;
}

static int teardown(void **state)
{
    (void)state;
    free(model_bytes);
    for (int i = 0; i < N_SAMPLES; i++)
        free(sample_png[i]);
    return 0;
}

typedef struct keys {
    const uint8_t *key; /* what the "key server" hands out for digits-key */
    bool deny;
    int calls;
} keys;

static int key_source(void *arg, const char *key_id, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    keys *k = arg;
    k->calls++;
    if (k->deny || strcmp(key_id, "digits-key") != 0)
        return cl_err_set(err, CL_E_DENIED, "key server denied '%s'", key_id);
    memcpy(key, k->key, CL_SEAL_KEY_LEN);
    return 0;
}

static void put_version(const char *base, int version, bool sealed, const uint8_t *bytes, size_t len)
{
    char dir[1024], path[1100];
    snprintf(dir, sizeof dir, "%s/%d", base, version);
    mkdir(dir, 0700);
    if (!sealed) {
        snprintf(path, sizeof path, "%s/%s", dir, CL_REPO_PLAIN_NAME);
        tu_write_file(path, bytes, len);
        return;
    }
    uint8_t *out;
    size_t out_len;
    cl_seal_options o = {.key_id = "digits-key", .content_type = "application/x-onnx", .chunk_size = 4096};
    assert_int_equal(cl_seal_buffer(bytes, len, model_key, &o, &out, &out_len, NULL), 0);
    snprintf(path, sizeof path, "%s/%s", dir, CL_REPO_SEALED_NAME);
    tu_write_file(path, out, out_len);
    free(out);
}

/* Runs `in` (all samples, as floats or as encoded images) through model version m and checks every
 * probability and the predicted class against PyTorch's; releases `in` and m; returns m's version. */
static int64_t run_and_check(cl_serve_model *m, cl_serve_tensor *in)
{
    cl_err err = {0};
    cl_serve_tensor *out = NULL;
    size_t n_out = 0;
    if (cl_serve_model_run(m, in, 1, &out, &n_out, &err) != 0)
        fail_msg("run failed: %s", err.msg);
    assert_int_equal(n_out, 2);
    const cl_serve_tensor *probs = strcmp(out[0].name, "probabilities") == 0 ? &out[0] : &out[1];
    assert_string_equal(probs->name, "probabilities");
    assert_int_equal(probs->dtype, CL_SERVE_DT_FLOAT);
    assert_int_equal(probs->ndim, 2);
    assert_int_equal(probs->dims[0], N_SAMPLES);
    assert_int_equal(probs->dims[1], 10);
    const float *p = probs->data;
    for (int i = 0; i < N_SAMPLES; i++) {
        int best = 0;
        for (int k = 0; k < 10; k++) {
            assert_float_equal(p[i * 10 + k], sample_probs[i][k], 2e-4);
            if (p[i * 10 + k] > p[i * 10 + best])
                best = k;
        }
        assert_int_equal(best, sample_label[i]);
    }
    int64_t version = cl_serve_model_version(m);
    cl_serve_tensors_free(out, n_out);
    cl_serve_tensor_clear(in);
    cl_serve_model_release(m);
    return version;
}

/* Runs all samples as one batch through the latest version; checks every probability. */
static int64_t predict_all(cl_serve_registry *reg)
{
    cl_err err = {0};
    cl_serve_model *m = cl_serve_registry_get(reg, "digits", 0, &err);
    assert_non_null(m);
    cl_serve_tensor in;
    int64_t dims[4] = {N_SAMPLES, 1, 8, 8};
    assert_int_equal(cl_serve_tensor_init(&in, "image", CL_SERVE_DT_FLOAT, 4, dims, 0, &err), 0);
    memcpy(in.data, sample_input, sizeof sample_input);
    return run_and_check(m, &in);
}

static void test_plain_then_sealed_then_failures(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    put_version(base, 1, false, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    keys k = {.key = model_key};
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .key_fn = key_source, .key_arg = &k,
                         .engine_threads = 1};
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    assert_int_equal(predict_all(reg), 1);
    assert_int_equal(k.calls, 0); /* plain models need no key */

    /* the signature the server advertises */
    cl_serve_model *m = cl_serve_registry_get(reg, "digits", 1, &err);
    const cl_serve_signature *sig = cl_serve_model_signature(m);
    assert_string_equal(sig->name, "serving_default");
    assert_int_equal(sig->n_inputs, 1);
    assert_string_equal(sig->inputs[0].name, "image");
    assert_int_equal(sig->inputs[0].ndim, 4);
    assert_int_equal(sig->inputs[0].dims[0], -1); /* dynamic batch */
    assert_int_equal(sig->inputs[0].dims[3], 8);
    assert_int_equal(sig->n_outputs, 2);
    cl_serve_model_release(m);

    /* nothing new: a poll changes nothing */
    assert_int_equal(cl_repo_poll(r), 0);

    /* version 2, sealed: loaded with the key from the key source, version 1 retired */
    put_version(base, 2, true, model_bytes, model_len);
    char **ids;
    size_t n_ids;
    assert_int_equal(cl_repo_key_ids(&mc, 1, &ids, &n_ids, &err), 0);
    assert_int_equal(n_ids, 1);
    assert_string_equal(ids[0], "digits-key");
    cl_repo_key_ids_free(ids, n_ids);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_int_equal(k.calls, 1);
    assert_int_equal(predict_all(reg), 2);
    int64_t versions[4];
    assert_int_equal(cl_serve_registry_versions(reg, "digits", versions, 4), 1);
    assert_int_equal(versions[0], 2);

    /* version 3 is not a model: refused, remembered, version 2 keeps serving */
    put_version(base, 3, false, (const uint8_t *)"this is not onnx", 16);
    cl_log_set_level(CL_LOG_OFF);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(predict_all(reg), 2);

    /* version 4 sealed under another key: the key source's key does not open it */
    k.key = other_key;
    put_version(base, 4, true, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(predict_all(reg), 2);

    /* version 5 whose key is denied by the key server */
    k.key = model_key;
    k.deny = true;
    put_version(base, 5, true, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(predict_all(reg), 2);

    /* version 6 with both a plain and a sealed file is ambiguous */
    k.deny = false;
    put_version(base, 6, false, model_bytes, model_len);
    put_version(base, 6, true, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 0);

    /* version 7 fine again (the failed ones are skipped, not retried) */
    put_version(base, 7, true, model_bytes, model_len);
    int calls = k.calls;
    assert_int_equal(cl_repo_poll(r), 1);
    assert_int_equal(k.calls, calls + 1);
    assert_int_equal(predict_all(reg), 7);
    cl_log_set_level(CL_LOG_INFO);

    cl_repo_free(r);
    assert_int_equal(predict_all(reg), 7); /* the registry keeps what was loaded */
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

static void put_preprocess(const char *base, int version, const char *json)
{
    char path[1100];
    snprintf(path, sizeof path, "%s/%d/%s", base, version, CL_REPO_PREPROCESS_NAME);
    tu_write_file(path, json, strlen(json));
}

/* The 20 sample PNGs as one DT_STRING batch through the latest version: PyTorch's answers. */
static int64_t predict_pngs(cl_serve_registry *reg)
{
    cl_err err = {0};
    cl_serve_model *m = cl_serve_registry_get(reg, "digits", 0, &err);
    assert_non_null(m);
    cl_serve_tensor in;
    int64_t n = N_SAMPLES;
    assert_int_equal(cl_serve_tensor_init_strings(&in, "image", 1, &n, sample_png_len, 0, &err), 0);
    for (int i = 0; i < N_SAMPLES; i++)
        memcpy((uint8_t *)cl_serve_tensor_strings(&in)[i].data, sample_png[i], sample_png_len[i]);
    return run_and_check(m, &in);
}

static void test_image_preprocessing(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/digits/1/%s", CLOISTER_SOURCE_DIR, CL_REPO_PREPROCESS_NAME);
    size_t pp_len;
    char *demo_pp = (char *)tu_read_file(path, &pp_len);
    char *base = tu_tmpdir();
    put_version(base, 1, false, model_bytes, model_len);
    put_preprocess(base, 1, demo_pp);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    keys k = {.key = model_key};
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .key_fn = key_source, .key_arg = &k,
                         .engine_threads = 1};
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    /* the PNGs themselves, and the float tensors as before */
    assert_int_equal(predict_pngs(reg), 1);
    assert_int_equal(predict_all(reg), 1);
    cl_serve_model *m = cl_serve_registry_get(reg, "digits", 0, &err);
    const cl_image_spec *img = cl_serve_model_signature(m)->inputs[0].image;
    assert_non_null(img);
    assert_string_equal(img->input, "image");
    cl_serve_model_release(m);

    /* bad declarations, each failing the load with a message naming the file and the problem */
    put_version(base, 2, false, model_bytes, model_len);
    snprintf(path, sizeof path, "%s/2/%s", base, CL_REPO_PLAIN_NAME);
    static const struct {
        const char *json, *msg;
    } bad[] = {
        {"{\"input\": \"image\"", "preprocess.json: preprocessing declaration: line 1, column 17"},
        {"{\"input\":\"pixels\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}",
         "\"input\": \"pixels\" is not an input of the model (its inputs: 'image')"},
        {"{\"input\":\"image\",\"color\":\"RGB\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}",
         "preprocess.json does not fit the model: input 'image' has shape [-1,1,8,8], but the declared preprocessing "
         "(NCHW, 8x8, 3 channels) makes [-1,3,8,8]"},
        {"{\"input\":\"image\",\"color\":\"GRAY\",\"width\":28,\"height\":28,\"layout\":\"NCHW\"}",
         "makes [-1,1,28,28]"},
        {"{\"input\":\"image\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NHWC\"}",
         "makes [-1,8,8,1]"},
        {"{\"input\":\"image\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\",\"std\":[0]}",
         "\"std\"[0] must be a finite number above 0"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        put_preprocess(base, 2, bad[i].json);
        cl_serve_backend b;
        assert_int_equal(cl_repo_load_backend(path, false, NULL, NULL, 1, &b, &err), -1);
        if (!strstr(err.msg, bad[i].msg) || !strstr(err.msg, "/2/preprocess.json"))
            fail_msg("case %zu: '%s' lacks '%s' or the path", i, err.msg, bad[i].msg);
    }
    /* polled: version 2 is refused and remembered, version 1 keeps serving */
    cl_log_set_level(CL_LOG_OFF);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(predict_pngs(reg), 1);
    /* fixing the declaration (the model file unchanged) is noticed: version 2 loads */
    put_preprocess(base, 2, demo_pp);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_int_equal(predict_pngs(reg), 2);
    /* a sealed version with a declaration, and one without: image bytes refused there */
    put_version(base, 3, true, model_bytes, model_len);
    put_preprocess(base, 3, demo_pp);
    assert_int_equal(cl_repo_poll(r), 1);
    assert_int_equal(predict_pngs(reg), 3);
    put_version(base, 4, false, model_bytes, model_len);
    assert_int_equal(cl_repo_poll(r), 1);
    cl_log_set_level(CL_LOG_INFO);
    assert_int_equal(predict_all(reg), 4);
    m = cl_serve_registry_get(reg, "digits", 0, &err);
    assert_null(cl_serve_model_signature(m)->inputs[0].image);
    cl_serve_tensor in;
    int64_t one = 1;
    assert_int_equal(cl_serve_tensor_init_strings(&in, "image", 1, &one, sample_png_len, 0, &err), 0);
    memcpy((uint8_t *)cl_serve_tensor_strings(&in)[0].data, sample_png[0], sample_png_len[0]);
    cl_serve_tensor *out;
    size_t n_out;
    assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n_out, &err), -1);
    assert_non_null(strstr(err.msg, "this input does not take encoded images"));
    cl_serve_tensor_clear(&in);
    cl_serve_model_release(m);

    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
    free(demo_pp);
}

typedef struct runner {
    cl_serve_registry *reg;
    volatile bool stop;
    int runs;
} runner;

static void *run_loop(void *arg)
{
    runner *x = arg;
    while (!x->stop) {
        predict_all(x->reg);
        x->runs++;
    }
    return NULL;
}

static void test_swap_under_load(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    put_version(base, 1, false, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    keys k = {.key = model_key};
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .key_fn = key_source, .key_arg = &k};
    cl_repo *r = cl_repo_new(&o, &err);
    assert_non_null(r);
    runner x[2] = {{.reg = reg}, {.reg = reg}};
    pthread_t t[2];
    for (int i = 0; i < 2; i++)
        assert_int_equal(pthread_create(&t[i], NULL, run_loop, &x[i]), 0);
    for (int v = 2; v <= 6; v++) {
        put_version(base, v, v % 2 == 0, model_bytes, model_len);
        assert_int_equal(cl_repo_poll(r), 1);
    }
    for (int i = 0; i < 2; i++) {
        x[i].stop = true;
        pthread_join(t[i], NULL);
        assert_true(x[i].runs > 0);
    }
    assert_int_equal(predict_all(reg), 6);
    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

static void test_polling_thread(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    put_version(base, 1, false, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1};
    cl_repo *r = cl_repo_new(&o, &err);
    assert_non_null(r);
    assert_int_equal(cl_repo_start_polling(r, 1, &err), 0);
    put_version(base, 9, false, model_bytes, model_len);
    int64_t v = 0;
    for (int i = 0; i < 100 && v != 9; i++) { /* up to 10 s */
        struct timespec ts = {0, 100000000};
        nanosleep(&ts, NULL);
        cl_serve_model *m = cl_serve_registry_get(reg, "digits", 0, &err);
        v = cl_serve_model_version(m);
        cl_serve_model_release(m);
    }
    assert_int_equal(v, 9);
    cl_repo_free(r); /* stops the thread */
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

/* before_sealed: what it saw of the registry when called, and whether to refuse */
typedef struct hook {
    cl_serve_registry *reg;
    int calls;
    size_t n_ids;
    char first_id[64];
    bool plain_loaded; /* the plain model was in the registry already */
    bool refuse;
} hook;

static int before_sealed(void *arg, char *const *ids, size_t n, cl_err *err)
{
    hook *h = arg;
    h->calls++;
    h->n_ids = n;
    snprintf(h->first_id, sizeof h->first_id, "%s", n ? ids[0] : "");
    int64_t v;
    h->plain_loaded = cl_serve_registry_versions(h->reg, "plain", &v, 1) == 1;
    return h->refuse ? cl_err_set(err, CL_E_DENIED, "the key server refused") : 0;
}

/* Every check that needs no key runs before before_sealed (where `cloister serve` contacts the key
 * server): a plain model that does not load, a sealed header that is not readable, an ambiguous version,
 * a bad preprocess.json, a key id no key server can hold, no key source; only then the keys. */
static void test_local_checks_before_keys(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    char *plain = tu_tmpdir(), *sealed = tu_tmpdir();
    put_version(plain, 1, false, model_bytes, model_len);
    put_version(sealed, 1, true, model_bytes, model_len);
    keys k = {.key = model_key};
    hook h = {.reg = reg};
    cl_repo_model_config mc[2] = {{"sealed", sealed}, {"plain", plain}};
    cl_repo_options o = {.registry = reg, .models = mc, .n_models = 2, .key_fn = key_source, .key_arg = &k,
                         .engine_threads = 1, .before_sealed = before_sealed, .before_sealed_arg = &h};
    /* all well: the plain model (listed second) is loaded before the keys are asked for */
    cl_repo *r = cl_repo_new(&o, &err);
    if (!r)
        fail_msg("%s", err.msg);
    assert_int_equal(h.calls, 1);
    assert_int_equal(h.n_ids, 1);
    assert_string_equal(h.first_id, "digits-key");
    assert_true(h.plain_loaded);
    assert_int_equal(k.calls, 1); /* the sealed model opened after the hook */
    cl_repo_free(r);
    cl_serve_registry_free(reg);

    /* each local mistake fails cl_repo_new without the hook being called */
    char path[1100];
    struct {
        const char *what, *msg;
    } cases[] = {
        {"plain model broken", "cannot load model"},
        {"sealed header broken", "not a cloister sealed file"},
        {"ambiguous version", "has both model.onnx and model.onnx.sealed"},
        {"preprocess.json broken", "preprocess.json"},
        {"no key source", "needed for a sealed model: start the server with --keyserver"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        char *p2 = tu_tmpdir(), *s2 = tu_tmpdir();
        put_version(p2, 1, false, model_bytes, model_len);
        put_version(s2, 1, true, model_bytes, model_len);
        if (i == 0) {
            snprintf(path, sizeof path, "%s/1/%s", p2, CL_REPO_PLAIN_NAME);
            tu_write_file(path, "not onnx", 8);
        } else if (i == 1) {
            snprintf(path, sizeof path, "%s/1/%s", s2, CL_REPO_SEALED_NAME);
            tu_write_file(path, "not sealed at all, not at all", 29);
        } else if (i == 2) {
            put_version(s2, 1, false, model_bytes, model_len);
        } else if (i == 3) {
            snprintf(path, sizeof path, "%s/1/%s", s2, CL_REPO_PREPROCESS_NAME);
            tu_write_file(path, "{\"input\": ", 10);
        }
        reg = cl_serve_registry_new(&err);
        h = (hook){.reg = reg};
        k.calls = 0;
        cl_repo_model_config m2[2] = {{"sealed", s2}, {"plain", p2}};
        o.models = m2;
        o.registry = reg;
        o.key_fn = i == 4 ? NULL : key_source;
        assert_null(cl_repo_new(&o, &err));
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("%s: '%s' lacks '%s'", cases[i].what, err.msg, cases[i].msg);
        assert_int_equal(h.calls, 0);
        assert_int_equal(k.calls, 0);
        cl_serve_registry_free(reg);
        tu_rmrf(p2);
        tu_rmrf(s2);
        free(p2);
        free(s2);
    }
    /* the hook's refusal fails the start, and no sealed model is opened */
    reg = cl_serve_registry_new(&err);
    h = (hook){.reg = reg, .refuse = true};
    k.calls = 0;
    o.models = mc;
    o.registry = reg;
    o.key_fn = key_source;
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "the key server refused"));
    assert_int_equal(k.calls, 0);
    cl_serve_registry_free(reg);

    /* a file sealed for a key id no key server can hold (the fixture from an earlier release) */
    char *legacy = tu_tmpdir();
    snprintf(path, sizeof path, "%s/1", legacy);
    mkdir(path, 0700);
    size_t len;
    char src[1024];
    snprintf(src, sizeof src, "%s/tests/data/sealed-v1-keyid/plain.txt.sealed", CLOISTER_SOURCE_DIR);
    uint8_t *bytes = tu_read_file(src, &len);
    snprintf(path, sizeof path, "%s/1/%s", legacy, CL_REPO_SEALED_NAME);
    tu_write_file(path, bytes, len);
    free(bytes);
    cl_repo_model_config lm = {"legacy", legacy};
    char **ids;
    size_t n_ids;
    assert_int_equal(cl_repo_key_ids(&lm, 1, &ids, &n_ids, &err), -1);
    assert_non_null(strstr(err.msg, "sealed for key id 'owner+team@models/v1', which is not a key server secret name"));
    reg = cl_serve_registry_new(&err);
    h = (hook){.reg = reg};
    o.models = &lm;
    o.n_models = 1;
    o.registry = reg;
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "seal it again with a valid --key-id"));
    assert_int_equal(h.calls, 0);
    cl_serve_registry_free(reg);
    tu_rmrf(legacy);
    free(legacy);
    tu_rmrf(plain);
    tu_rmrf(sealed);
    free(plain);
    free(sealed);
}

/* A version whose key is denied is retried at the polls (not only when its files change): LOADING with
 * PERMISSION_DENIED meanwhile, loaded once the key source grants it. */
static void test_denied_key_retried(void **state)
{
    (void)state;
    char *base = tu_tmpdir();
    put_version(base, 1, false, model_bytes, model_len);
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    keys k = {.key = model_key, .deny = true};
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1, .key_fn = key_source, .key_arg = &k,
                         .engine_threads = 1};
    cl_repo *r = cl_repo_new(&o, &err);
    assert_non_null(r);
    put_version(base, 2, true, model_bytes, model_len);
    cl_log_set_level(CL_LOG_OFF);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(k.calls, 1);
    cl_serve_version_status st[4];
    assert_int_equal(cl_serve_registry_status(reg, "digits", st, 4), 2);
    assert_int_equal(st[0].version, 2);
    assert_false(st[0].available);
    assert_int_equal(st[0].code, CL_SC_PERMISSION_DENIED);
    assert_non_null(strstr(st[0].message, "key server denied 'digits-key'"));
    assert_non_null(strstr(st[0].message, "its key is asked for again in 1 s"));
    assert_true(st[1].available);
    /* not before its time (1 s without a polling thread) */
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(k.calls, 1);
    /* still denied after the wait: asked again, the next wait doubles */
    struct timespec ts = {1, 100000000};
    nanosleep(&ts, NULL);
    assert_int_equal(cl_repo_poll(r), 0);
    assert_int_equal(k.calls, 2);
    assert_int_equal(cl_serve_registry_status(reg, "digits", st, 4), 2);
    assert_non_null(strstr(st[0].message, "asked for again in 2 s"));
    /* granted: loaded at the first poll after the wait, nothing LOADING any more */
    k.deny = false;
    ts.tv_sec = 2;
    nanosleep(&ts, NULL);
    assert_int_equal(cl_repo_poll(r), 1);
    cl_log_set_level(CL_LOG_INFO);
    assert_int_equal(k.calls, 3);
    assert_int_equal(predict_all(reg), 2);
    assert_int_equal(cl_serve_registry_status(reg, "digits", st, 4), 1);
    assert_true(st[0].available);
    assert_int_equal(st[0].version, 2);
    cl_repo_free(r);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

static void test_configuration_errors(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    char *base = tu_tmpdir();
    cl_repo_model_config mc = {"digits", base};
    cl_repo_options o = {.registry = reg, .models = &mc, .n_models = 1};
    /* empty base path */
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "no model version under"));
    /* a sealed model and no key source */
    put_version(base, 1, true, model_bytes, model_len);
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "--keyserver"));
    /* missing base path */
    cl_repo_model_config missing = {"digits", "/nonexistent/models/digits"};
    o.models = &missing;
    assert_null(cl_repo_new(&o, &err));
    assert_int_equal(err.code, CL_E_IO);
    /* bad and duplicate names */
    cl_repo_model_config bad = {"../etc", base};
    o.models = &bad;
    assert_null(cl_repo_new(&o, &err));
    assert_int_equal(err.code, CL_E_INVALID);
    cl_repo_model_config twice[2] = {{"a", base}, {"a", base}};
    o.models = twice;
    o.n_models = 2;
    assert_null(cl_repo_new(&o, &err));
    assert_non_null(strstr(err.msg, "configured twice"));
    o.n_models = 0;
    assert_null(cl_repo_new(&o, &err));
    /* version directory names: only positive integers count */
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/007x", base);
    mkdir(dir, 0700);
    snprintf(dir, sizeof dir, "%s/0", base);
    mkdir(dir, 0700);
    int64_t v;
    bool sealed;
    assert_int_equal(cl_repo_latest_version(base, &v, &sealed, &err), 0);
    assert_int_equal(v, 1);
    assert_true(sealed);
    cl_serve_registry_free(reg);
    tu_rmrf(base);
    free(base);
}

static void test_model_config_file(void **state)
{
    (void)state;
    const char *good = "# two models\n"
                       "model_config_list {\n"
                       "  config {\n"
                       "    name: 'digits'\n"
                       "    base_path: \"/models/digits\"  # comment\n"
                       "    model_platform: \"onnx\"\n"
                       "  }\n"
                       "  config: { name: \"resnet\" base_path: '/models/r\\'n' model_platform: 'tensorflow' }\n"
                       "}\n";
    cl_repo_model_config *m;
    size_t n;
    cl_err err = {0};
    if (cl_repo_config_parse(good, strlen(good), &m, &n, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(n, 2);
    assert_string_equal(m[0].name, "digits");
    assert_string_equal(m[0].base_path, "/models/digits");
    assert_string_equal(m[1].name, "resnet");
    assert_string_equal(m[1].base_path, "/models/r'n");
    cl_repo_config_free(m, n);

    const struct {
        const char *text, *msg;
    } bad[] = {
        {"", "expected 'model_config_list'"},
        {"model_config_list { }", "has no config"},
        {"model_config_list { config { name: 'a' } }", "needs both name and base_path"},
        {"model_config_list { config { name: 'a' base_path: 'b' name: 'c' } }", "given twice"},
        {"model_config_list {\n config { name: 'a' base_path: 'b'\n model_version_policy { newest {} } } }",
         "line 3: unknown version policy 'newest'"},
        {"model_config_list { config { name: 'a' base_path: 'b' model_platform: 'pytorch' } }", "not supported"},
        {"model_config_list { config { name: 'a' base_path: 'b' colour: 'red' } }", "unknown field 'colour'"},
        {"model_config_list { config { name: 'a base_path: 'b' } }", "unterminated string"},
        {"model_config_list { config { name: 'a' base_path: 'b' }", "missing '}'"},
        {"model_config_list { config { name: 'a' base_path: 'b' } } extra", "unexpected text"},
        {"model_config_list { config { name: 5 } }", "'name' wants a quoted string"},
        {"model_config_list { config { name: 'a' base_path: 'b' } config { name: 'a' base_path: 'c' } }",
         "model 'a' is configured twice"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        m = (cl_repo_model_config *)1;
        assert_int_equal(cl_repo_config_parse(bad[i].text, strlen(bad[i].text), &m, &n, &err), -1);
        assert_null(m);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: '%s' does not contain '%s'", i, err.msg, bad[i].msg);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_then_sealed_then_failures),
        cmocka_unit_test(test_image_preprocessing), cmocka_unit_test(test_swap_under_load),
        cmocka_unit_test(test_polling_thread),
        cmocka_unit_test(test_configuration_errors),
        cmocka_unit_test(test_local_checks_before_keys),
        cmocka_unit_test(test_denied_key_retried),
        cmocka_unit_test(test_model_config_file),
    };
    return cmocka_run_group_tests_name("repo", tests, setup, teardown);
}
