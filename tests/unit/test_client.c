/* test_client.c — the client module's pure parts: gRPC framing (every truncation, compressed and
 * trailing data refused), grpc-status / grpc-message trailers (percent-decoding, codes, malformed
 * values), PredictResponse / metadata / status decoding (protobuf and REST JSON, TF Serving's error
 * bodies with their HTTP codes), top-k (order, ties, NaN, k beyond the classes), HOST:PORT parsing, and
 * image preprocessing from a signature (layouts, sizes, normalisation; the demo samples become exactly
 * the inputs PyTorch was given); and the calls themselves against the real serve module in-process
 * (h2c and plain HTTP, with the test models): status, metadata, predict, one connection reused,
 * server errors with their codes, and a stopped server. */
#include <pthread.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/client.h"
#include "testmodel.h"
#include "testutil.h"

#include "google/protobuf/wrappers.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

#include <cjson/cJSON.h>

#ifndef CLOISTER_SOURCE_DIR
#error "CLOISTER_SOURCE_DIR must be defined by the build"
#endif

/* ---------------------------------------------------------------- framing */

static void test_frame_roundtrip(void **state)
{
    (void)state;
    const uint8_t msg[] = {1, 2, 3, 0xff, 0};
    uint8_t *f;
    size_t flen;
    cl_err err = {0};
    flen = sizeof msg + 5;
    f = malloc(flen);
    assert_int_equal(cl_client_grpc_frame_header(f, sizeof msg, &err), 0);
    memcpy(f + 5, msg, sizeof msg);
    const uint8_t hdr[] = {0, 0, 0, 0, 5};
    assert_memory_equal(f, hdr, 5);
    const uint8_t *m;
    size_t mlen;
    assert_int_equal(cl_client_grpc_unframe(f, flen, 1024, &m, &mlen, &err), 0);
    assert_int_equal(mlen, sizeof msg);
    assert_memory_equal(m, msg, sizeof msg);
    /* every truncation is refused */
    for (size_t n = 0; n < flen; n++) {
        assert_int_equal(cl_client_grpc_unframe(f, n, 1024, &m, &mlen, &err), -1);
        assert_int_equal(err.code, CL_E_TRUNCATED);
    }
    /* trailing bytes (a second message) */
    uint8_t two[32];
    memcpy(two, f, flen);
    memcpy(two + flen, f, flen);
    assert_int_equal(cl_client_grpc_unframe(two, 2 * flen, 1024, &m, &mlen, &err), -1);
    assert_int_equal(err.code, CL_E_TRAILING);
    /* above the limit */
    assert_int_equal(cl_client_grpc_unframe(f, flen, 4, &m, &mlen, &err), -1);
    assert_non_null(strstr(err.msg, "above the limit"));
    /* compressed, and an invalid flag */
    f[0] = 1;
    assert_int_equal(cl_client_grpc_unframe(f, flen, 1024, &m, &mlen, &err), -1);
    assert_int_equal(err.code, CL_E_UNSUPPORTED);
    f[0] = 2;
    assert_int_equal(cl_client_grpc_unframe(f, flen, 1024, &m, &mlen, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    free(f);
    /* an empty message is valid */
    f = malloc(flen = 5);
    assert_int_equal(cl_client_grpc_frame_header(f, 0, &err), 0);
    assert_int_equal(cl_client_grpc_unframe(f, flen, 1024, &m, &mlen, &err), 0);
    assert_int_equal(mlen, 0);
    free(f);
}

/* ---------------------------------------------------------------- trailers */

static void test_grpc_status(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_code code;
    assert_int_equal(cl_client_grpc_status("0", 1, NULL, 0, &code, &err), 0);
    assert_int_equal(code, CL_SC_OK);
    const char *m = "the server is at capacity";
    assert_int_equal(cl_client_grpc_status("14", 2, m, strlen(m), &code, &err), -1);
    assert_int_equal(code, CL_SC_UNAVAILABLE);
    assert_string_equal(err.msg, "UNAVAILABLE: the server is at capacity");
    /* percent-encoded message (what the server sends for non-ASCII and '%') */
    m = "Servable not found: 100%25 sure %E2%9C%93";
    assert_int_equal(cl_client_grpc_status("5", 1, m, strlen(m), &code, &err), -1);
    assert_int_equal(code, CL_SC_NOT_FOUND);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_string_equal(err.msg, "NOT_FOUND: Servable not found: 100% sure \xe2\x9c\x93");
    /* no message */
    assert_int_equal(cl_client_grpc_status("3", 1, NULL, 0, &code, &err), -1);
    assert_string_equal(err.msg, "INVALID_ARGUMENT: (no message)");
    /* malformed, missing, out of range: INTERNAL */
    const char *bad[] = {"", "x", "-1", "17", "1000", "1a"};
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        assert_int_equal(cl_client_grpc_status(bad[i], strlen(bad[i]), NULL, 0, &code, &err), -1);
        assert_int_equal(code, CL_SC_INTERNAL);
        assert_non_null(strstr(err.msg, "INTERNAL"));
    }
    assert_int_equal(cl_client_grpc_status(NULL, 0, NULL, 0, &code, &err), -1);
    assert_non_null(strstr(err.msg, "no grpc-status"));
}

static void test_percent_decode(void **state)
{
    (void)state;
    char out[16];
    cl_client_percent_decode("a%20b%zz%4", 10, out, sizeof out);
    assert_string_equal(out, "a b%zz%4"); /* invalid escapes stay as they are */
    cl_client_percent_decode("%00x", 4, out, sizeof out);
    assert_string_equal(out, "?x"); /* never an embedded NUL */
    cl_client_percent_decode("0123456789abcdefghij", 20, out, 8);
    assert_string_equal(out, "0123456"); /* truncated to fit */
}

/* ---------------------------------------------------------------- protobuf responses */

static uint8_t *predict_response(size_t *len, bool typed)
{
    Tensorflow__Serving__PredictResponse r = TENSORFLOW__SERVING__PREDICT_RESPONSE__INIT;
    Tensorflow__Serving__ModelSpec spec = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    Google__Protobuf__Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    spec.name = "m";
    v.value = 3;
    spec.version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
    spec.version = &v;
    r.model_spec = &spec;
    Tensorflow__TensorShapeProto__Dim d0 = TENSORFLOW__TENSOR_SHAPE_PROTO__DIM__INIT,
                                      d1 = TENSORFLOW__TENSOR_SHAPE_PROTO__DIM__INIT;
    d0.size = 2;
    d1.size = 3;
    Tensorflow__TensorShapeProto__Dim *dims[] = {&d0, &d1};
    Tensorflow__TensorShapeProto sh = TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
    sh.n_dim = 2;
    sh.dim = dims;
    float probs[6] = {0.1f, 0.7f, 0.2f, 0.5f, 0.25f, 0.25f};
    Tensorflow__TensorProto t1 = TENSORFLOW__TENSOR_PROTO__INIT, t2 = TENSORFLOW__TENSOR_PROTO__INIT;
    t1.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
    t1.tensor_shape = &sh;
    if (typed) {
        t1.n_float_val = 6;
        t1.float_val = probs;
    } else {
        t1.tensor_content.data = (uint8_t *)probs;
        t1.tensor_content.len = sizeof probs;
    }
    Tensorflow__TensorShapeProto__Dim *dims2[] = {&d0};
    Tensorflow__TensorShapeProto sh2 = TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
    sh2.n_dim = 1;
    sh2.dim = dims2;
    int64_t cls[1] = {7}; /* one value fills the whole tensor */
    t2.dtype = TENSORFLOW__DATA_TYPE__DT_INT64;
    t2.tensor_shape = &sh2;
    t2.n_int64_val = 1;
    t2.int64_val = cls;
    Tensorflow__Serving__PredictResponse__OutputsEntry e1 = TENSORFLOW__SERVING__PREDICT_RESPONSE__OUTPUTS_ENTRY__INIT,
                                                       e2 = TENSORFLOW__SERVING__PREDICT_RESPONSE__OUTPUTS_ENTRY__INIT;
    e1.key = "probs";
    e1.value = &t1;
    e2.key = "class";
    e2.value = &t2;
    Tensorflow__Serving__PredictResponse__OutputsEntry *es[] = {&e1, &e2};
    r.n_outputs = 2;
    r.outputs = es;
    *len = protobuf_c_message_get_packed_size(&r.base);
    uint8_t *b = malloc(*len);
    protobuf_c_message_pack(&r.base, b);
    return b;
}

static void test_pb_predict(void **state)
{
    (void)state;
    for (int typed = 0; typed < 2; typed++) {
        size_t len;
        uint8_t *b = predict_response(&len, typed);
        cl_client_response r;
        cl_err err = {0};
        assert_int_equal(cl_client_pb_predict_response(b, len, &r, &err), 0);
        assert_string_equal(r.model, "m");
        assert_int_equal(r.version, 3);
        assert_int_equal(r.n_outputs, 2);
        const cl_serve_tensor *p = NULL, *c = NULL;
        for (size_t i = 0; i < r.n_outputs; i++) {
            if (strcmp(r.outputs[i].name, "probs") == 0)
                p = &r.outputs[i];
            if (strcmp(r.outputs[i].name, "class") == 0)
                c = &r.outputs[i];
        }
        assert_non_null(p);
        assert_non_null(c);
        assert_int_equal(p->dtype, CL_SERVE_DT_FLOAT);
        assert_int_equal(p->ndim, 2);
        assert_int_equal(p->dims[1], 3);
        assert_true(fabs(cl_client_tensor_value(p, 1) - 0.7) < 1e-6);
        assert_int_equal(c->dtype, CL_SERVE_DT_INT64);
        assert_true(cl_client_tensor_value(c, 1) == 7);
        cl_client_response_clear(&r);
        /* every truncation either fails cleanly or decodes fewer fields; never crashes */
        for (size_t n = 0; n < len; n++) {
            if (cl_client_pb_predict_response(b, n, &r, &err) == 0)
                cl_client_response_clear(&r);
        }
        free(b);
    }
    cl_client_response r;
    cl_err err = {0};
    const uint8_t junk[] = {0xff, 0xff, 0xff};
    assert_int_equal(cl_client_pb_predict_response(junk, sizeof junk, &r, &err), -1);
    assert_non_null(strstr(err.msg, "not a valid PredictResponse"));
}

/* ---------------------------------------------------------------- JSON responses */

static void test_json_predict(void **state)
{
    (void)state;
    cl_client_response r;
    cl_err err = {0};
    cl_serve_code code;
    const char *named = "{\"outputs\": {\"probs\": [[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], \"class\": [1, 0]}}";
    assert_int_equal(cl_client_json_predict_response(named, strlen(named), 200, &r, &code, &err), 0);
    assert_int_equal(code, CL_SC_OK);
    assert_int_equal(r.n_outputs, 2);
    assert_int_equal(r.outputs[1].ndim, 2);
    assert_int_equal(r.outputs[1].dims[0], 2);
    assert_int_equal(r.outputs[1].dims[1], 3);
    assert_int_equal(r.outputs[1].dtype, CL_SERVE_DT_DOUBLE);
    assert_true(cl_client_tensor_value(&r.outputs[1], 4) == 0.25);
    cl_client_response_clear(&r);

    const char *single = "{\"outputs\": [[1, 2], [3, 4]]}";
    assert_int_equal(cl_client_json_predict_response(single, strlen(single), 200, &r, &code, &err), 0);
    assert_int_equal(r.n_outputs, 1);
    assert_string_equal(r.outputs[0].name, "outputs");
    cl_client_response_clear(&r);

    const char *rows = "{\"predictions\": [{\"a\": [1, 2], \"b\": 3}, {\"a\": [4, 5], \"b\": 6}]}";
    assert_int_equal(cl_client_json_predict_response(rows, strlen(rows), 200, &r, &code, &err), 0);
    assert_int_equal(r.n_outputs, 2);
    assert_int_equal(r.outputs[0].dims[1], 2);
    assert_int_equal(r.outputs[1].ndim, 1);
    assert_true(cl_client_tensor_value(&r.outputs[1], 1) == 6);
    cl_client_response_clear(&r);

    const char *bools = "{\"predictions\": [[true, false]]}";
    assert_int_equal(cl_client_json_predict_response(bools, strlen(bools), 200, &r, &code, &err), 0);
    assert_true(cl_client_tensor_value(&r.outputs[0], 0) == 1);
    cl_client_response_clear(&r);

    /* TF Serving's error bodies, code from the HTTP status */
    const char *e404 = "{ \"error\": \"Servable not found for request: Latest(x)\" }";
    assert_int_equal(cl_client_json_predict_response(e404, strlen(e404), 404, &r, &code, &err), -1);
    assert_int_equal(code, CL_SC_NOT_FOUND);
    assert_string_equal(err.msg, "NOT_FOUND: Servable not found for request: Latest(x)");
    const char *e429 = "{\"error\": \"the server is at capacity\"}";
    assert_int_equal(cl_client_json_predict_response(e429, strlen(e429), 429, &r, &code, &err), -1);
    assert_int_equal(code, CL_SC_RESOURCE_EXHAUSTED);
    const char *html = "<html>413 Request Entity Too Large</html>";
    assert_int_equal(cl_client_json_predict_response(html, strlen(html), 413, &r, &code, &err), -1);
    assert_non_null(strstr(err.msg, "HTTP 413 from the server: <html>"));

    const char *bad[] = {"", "[]", "{}", "{\"outputs\": [[1, 2], [3]]}", "{\"outputs\": [\"x\"]}",
                         "{\"outputs\": {\"a\": 1, \"a\": 2}}", "{\"predictions\": [{\"a\": 1}, {\"b\": 2}]}",
                         "{\"outputs\": [[[[[[[[[[1]]]]]]]]]]}", "{\"outputs\": [[1,2],[3,[4]]]}"};
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        assert_int_equal(cl_client_json_predict_response(bad[i], strlen(bad[i]), 200, &r, &code, &err), -1);
        assert_int_equal(code, CL_SC_INTERNAL);
        assert_int_equal(r.n_outputs, 0);
    }
}

static void test_json_metadata_status(void **state)
{
    (void)state;
    const char *md_json =
        "{\"model_spec\":{\"name\":\"digits\",\"signature_name\":\"\",\"version\":\"4\"},\"metadata\":{\"signature_def\":"
        "{\"signature_def\":{\"serving_default\":{\"inputs\":{\"image\":{\"dtype\":\"DT_FLOAT\",\"tensor_shape\":{\"dim\":"
        "[{\"size\":\"-1\",\"name\":\"\"},{\"size\":\"1\",\"name\":\"\"},{\"size\":\"8\",\"name\":\"\"},{\"size\":\"8\","
        "\"name\":\"\"}],\"unknown_rank\":false},\"name\":\"image\"},\"bytes\":{\"dtype\":\"DT_STRING\",\"tensor_shape\":"
        "{\"dim\":[],\"unknown_rank\":true}}},\"outputs\":{\"probabilities\":{\"dtype\":\"DT_FLOAT\",\"tensor_shape\":"
        "{\"dim\":[{\"size\":\"-1\"},{\"size\":\"10\"}],\"unknown_rank\":false}}},\"method_name\":"
        "\"tensorflow/serving/predict\"}}}}}";
    cl_client_metadata md;
    cl_err err = {0};
    cl_serve_code code;
    assert_int_equal(cl_client_json_metadata_response(md_json, strlen(md_json), 200, &md, &code, &err), 0);
    assert_string_equal(md.model, "digits");
    assert_int_equal(md.version, 4);
    assert_string_equal(md.signature, "serving_default");
    assert_int_equal(md.n_inputs, 2);
    assert_string_equal(md.inputs[0].name, "bytes"); /* sorted */
    assert_int_equal(md.inputs[0].dtype, CL_SERVE_DT_STRING);
    assert_int_equal(md.inputs[0].ndim, -1);
    assert_int_equal(md.inputs[1].ndim, 4);
    assert_int_equal(md.inputs[1].dims[0], -1);
    assert_int_equal(md.inputs[1].dims[3], 8);
    assert_int_equal(md.outputs[0].dims[1], 10);
    cl_client_metadata_clear(&md);
    const char *none = "{\"metadata\":{}}";
    assert_int_equal(cl_client_json_metadata_response(none, strlen(none), 200, &md, &code, &err), -1);

    const char *st = "{\"model_version_status\":[{\"version\":\"2\",\"state\":\"AVAILABLE\",\"status\":{\"error_code\":"
                     "\"OK\",\"error_message\":\"\"}},{\"version\":\"1\",\"state\":\"END\",\"status\":{\"error_code\":"
                     "\"NOT_FOUND\",\"error_message\":\"gone\"}}]}";
    cl_client_version_status *vs;
    size_t n;
    assert_int_equal(cl_client_json_status_response(st, strlen(st), 200, &vs, &n, &code, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(vs[0].version, 2);
    assert_string_equal(vs[0].state, "AVAILABLE");
    assert_int_equal(vs[1].code, CL_SC_NOT_FOUND);
    assert_string_equal(vs[1].message, "gone");
    free(vs);
    assert_int_equal(cl_client_code_from_http(503), CL_SC_UNAVAILABLE);
    assert_int_equal(cl_client_code_from_http(400), CL_SC_INVALID_ARGUMENT);
    assert_int_equal(cl_client_code_from_http(418), CL_SC_INVALID_ARGUMENT);
    assert_int_equal(cl_client_code_from_http(502), CL_SC_UNKNOWN);
}

/* ---------------------------------------------------------------- top-k */

static void test_topk(void **state)
{
    (void)state;
    cl_serve_tensor t;
    int64_t dims[2] = {2, 5};
    assert_int_equal(cl_serve_tensor_init(&t, "p", CL_SERVE_DT_FLOAT, 2, dims, 0, NULL), 0);
    float v[10] = {0.1f, 0.4f, 0.1f, 0.3f, 0.1f, NAN, 2, -1, 2, 0};
    memcpy(t.data, v, sizeof v);
    size_t idx[8];
    double sc[8];
    assert_int_equal(cl_client_topk(&t, 0, 3, idx, sc), 3);
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 0); /* ties: lower index first */
    assert_true(fabs(sc[0] - 0.4) < 1e-6);
    assert_int_equal(cl_client_topk(&t, 0, 8, idx, sc), 5); /* k beyond the classes */
    assert_int_equal(idx[3], 2);
    assert_int_equal(idx[4], 4);
    assert_int_equal(cl_client_topk(&t, 1, 3, idx, sc), 3); /* NaN skipped; indices within the row */
    assert_int_equal(idx[0], 1);
    assert_int_equal(idx[1], 3);
    assert_int_equal(idx[2], 4);
    assert_int_equal(cl_client_topk(&t, 2, 3, idx, sc), 0); /* row out of range */
    assert_int_equal(cl_client_topk(&t, 0, 0, idx, sc), 0);
    cl_serve_tensor_clear(&t);
    int64_t d1[1] = {4};
    assert_int_equal(cl_serve_tensor_init(&t, "q", CL_SERVE_DT_INT64, 1, d1, 0, NULL), 0);
    int64_t iv[4] = {5, -3, 9, 9};
    memcpy(t.data, iv, sizeof iv);
    assert_int_equal(cl_client_topk(&t, 0, 2, idx, sc), 2);
    assert_int_equal(idx[0], 2);
    assert_int_equal(idx[1], 3);
    cl_serve_tensor_clear(&t);
}

/* ---------------------------------------------------------------- arguments */

/* HOST:PORT is common.h's cl_net_split_hostport (test_common.c) */
static void test_floats3(void **state)
{
    (void)state;
    cl_err err = {0};
    float f[3];
    assert_int_equal(cl_client_parse_floats3("0.5", f, &err), 0);
    assert_true(f[0] == 0.5f && f[1] == 0.5f && f[2] == 0.5f);
    assert_int_equal(cl_client_parse_floats3("0.485,0.456,0.406", f, &err), 0);
    assert_true(fabsf(f[2] - 0.406f) < 1e-7f);
    const char *badf[] = {"", "a", "1,2", "1,2,3,4", "1;2;3", "1,,3", "inf"};
    for (size_t i = 0; i < CL_ARRAY_LEN(badf); i++)
        assert_int_equal(cl_client_parse_floats3(badf[i], f, &err), -1);
}

/* ---------------------------------------------------------------- images */

static void test_image_preproc(void **state)
{
    (void)state;
    cl_image_preproc p;
    cl_err err = {0};
    cl_serve_tensor_spec nchw = {"x", CL_SERVE_DT_FLOAT, 4, {-1, 3, 224, 200}};
    assert_int_equal(cl_client_image_preproc(&nchw, NULL, &p, &err), 0);
    assert_int_equal(p.layout, CL_IMAGE_NCHW);
    assert_int_equal(p.channels, 3);
    assert_int_equal(p.height, 224);
    assert_int_equal(p.width, 200);
    assert_true(fabs(p.scale - 1.0f / 255) < 1e-9f);
    assert_true(p.std[0] == 1 && p.mean[0] == 0);
    cl_serve_tensor_spec nhwc = {"x", CL_SERVE_DT_UINT8, 4, {-1, 32, 48, 1}};
    assert_int_equal(cl_client_image_preproc(&nhwc, NULL, &p, &err), 0);
    assert_int_equal(p.layout, CL_IMAGE_NHWC);
    assert_int_equal(p.channels, 1);
    assert_int_equal(p.width, 48);
    assert_true(p.scale == 1); /* raw pixels for uint8 inputs */
    cl_client_image_opts o = {.scale = 1, .mean = {0.5f, 0.5f, 0.5f}, .std = {0.25f, 0, 0}};
    assert_int_equal(cl_client_image_preproc(&nchw, &o, &p, &err), 0);
    assert_true(p.scale == 1 && p.mean[1] == 0.5f && p.std[0] == 0.25f && p.std[1] == 1);
    /* dynamic size needs --size, which must agree with fixed dimensions */
    cl_serve_tensor_spec dyn = {"x", CL_SERVE_DT_FLOAT, 4, {-1, 3, -1, -1}};
    assert_int_equal(cl_client_image_preproc(&dyn, NULL, &p, &err), -1);
    assert_non_null(strstr(err.msg, "--size"));
    cl_client_image_opts sz = {.width = 64, .height = 32};
    assert_int_equal(cl_client_image_preproc(&dyn, &sz, &p, &err), 0);
    assert_int_equal(p.width, 64);
    assert_int_equal(p.height, 32);
    assert_int_equal(cl_client_image_preproc(&nchw, &sz, &p, &err), -1);
    cl_serve_tensor_spec refused[] = {{"x", CL_SERVE_DT_INT32, 4, {1, 3, 8, 8}}, {"x", CL_SERVE_DT_FLOAT, 2, {1, 64}},
                                      {"x", CL_SERVE_DT_FLOAT, 4, {1, 2, 8, 8}}, {"x", CL_SERVE_DT_FLOAT, -1, {0}},
                                      {"x", CL_SERVE_DT_STRING, 1, {-1}}};
    for (size_t i = 0; i < CL_ARRAY_LEN(refused); i++) {
        assert_int_equal(cl_client_image_preproc(&refused[i], NULL, &p, &err), -1);
        assert_non_null(strstr(err.msg, "'x'"));
    }
}

/* The demo samples (32x32 PNGs, each source pixel a 4x4 block) become exactly the inputs in their
 * REST bodies, which are what PyTorch was given. */
static void test_digit_samples(void **state)
{
    (void)state;
    const char *names[] = {"digit-0-0", "digit-3-1", "digit-9-0"};
    cl_serve_tensor_spec spec = {"image", CL_SERVE_DT_FLOAT, 4, {-1, 1, 8, 8}};
    uint8_t *pngs[3];
    size_t lens[3];
    char path[4096];
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/models/digits/samples/%s.png", CLOISTER_SOURCE_DIR, names[i]);
        pngs[i] = tu_read_file(path, &lens[i]);
    }
    cl_serve_tensor t;
    cl_err err = {0};
    assert_int_equal(cl_client_images_to_tensor(&spec, NULL, (const uint8_t *const *)pngs, lens, 3, &t, &err), 0);
    assert_int_equal(t.ndim, 4);
    assert_int_equal(t.dims[0], 3);
    assert_int_equal(t.dims[1], 1);
    assert_int_equal(t.nbytes, 3 * 64 * sizeof(float));
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/models/digits/samples/%s.json", CLOISTER_SOURCE_DIR, names[i]);
        size_t jl;
        char *js = (char *)tu_read_file(path, &jl);
        cJSON *j = cJSON_ParseWithLength(js, jl);
        const cJSON *img = cJSON_GetArrayItem(cJSON_GetObjectItem(cJSON_GetObjectItem(j, "inputs"), "image"), 0);
        const cJSON *plane = cJSON_GetArrayItem(img, 0);
        int k = 0;
        for (const cJSON *row = plane->child; row; row = row->next)
            for (const cJSON *x = row->child; x; x = x->next, k++)
                assert_true(fabs(((float *)t.data)[i * 64 + k] - x->valuedouble) < 1e-6);
        assert_int_equal(k, 64);
        cJSON_Delete(j);
        free(js);
    }
    cl_serve_tensor_clear(&t);
    /* a broken image is named by its position */
    lens[1] = 40;
    assert_int_equal(cl_client_images_to_tensor(&spec, NULL, (const uint8_t *const *)pngs, lens, 3, &t, &err), -1);
    assert_non_null(strstr(err.msg, "image 2"));
    for (int i = 0; i < 3; i++)
        free(pngs[i]);
}

/* ---------------------------------------------------------------- against the real server */

typedef struct live {
    cl_serve_registry *reg;
    cl_serve_server *srv;
    pthread_t tid;
    char grpc[32], rest[32];
} live;

static void *live_run(void *arg)
{
    live *l = arg;
    cl_serve_server_run(l->srv, NULL);
    return NULL;
}

static void live_start(live *l)
{
    cl_err err = {0};
    assert_non_null(l->reg = cl_serve_registry_new(&err));
    assert_int_equal(tm_register_all(l->reg, 1, true, &err), 0);
    cl_serve_config cfg = {.host = "127.0.0.1", .allow_plaintext = true, .workers = 1, .queue_limit = 4};
    l->srv = cl_serve_server_new(&cfg, l->reg, &err);
    assert_non_null(l->srv);
    snprintf(l->grpc, sizeof l->grpc, "127.0.0.1:%d", cl_serve_server_grpc_port(l->srv));
    snprintf(l->rest, sizeof l->rest, "127.0.0.1:%d", cl_serve_server_rest_port(l->srv));
    assert_int_equal(pthread_create(&l->tid, NULL, live_run, l), 0);
}

static void live_stop(live *l)
{
    cl_serve_server_stop(l->srv);
    pthread_join(l->tid, NULL);
    cl_serve_server_free(l->srv);
    cl_serve_registry_free(l->reg);
}

static void check_calls(const char *server, bool rest)
{
    cl_err err = {0};
    cl_client_options o = {.server = server, .rest = rest, .plaintext = true, .timeout_ms = 5000};
    cl_client *c = cl_client_new(&o, &err);
    assert_non_null(c);
    cl_client_conn *conn = cl_client_connect(c, &err);
    assert_non_null(conn);
    assert_null(cl_client_conn_claims(conn));

    cl_client_version_status *vs;
    size_t n;
    assert_int_equal(cl_client_get_status(conn, "affine", 0, &vs, &n, &err), 0);
    assert_int_equal(n, 2);
    assert_int_equal(vs[0].version, 2);
    assert_string_equal(vs[0].state, "AVAILABLE");
    assert_int_equal(vs[1].version, 1);
    free(vs);

    cl_client_metadata md;
    assert_int_equal(cl_client_get_metadata(conn, "affine", 1, &md, &err), 0);
    assert_string_equal(md.signature, "serving_default");
    assert_int_equal(md.n_inputs, 1);
    assert_string_equal(md.inputs[0].name, "x");
    assert_int_equal(md.inputs[0].dtype, CL_SERVE_DT_FLOAT);
    assert_int_equal(md.inputs[0].ndim, 2);
    assert_int_equal(md.inputs[0].dims[0], -1);
    assert_int_equal(md.inputs[0].dims[1], 4);
    assert_int_equal(md.n_outputs, 3);
    assert_string_equal(md.outputs[0].name, "class");
    assert_string_equal(md.outputs[2].name, "probs");
    cl_client_metadata_clear(&md);

    /* affine on two rows, many times over the same connection */
    cl_serve_tensor x;
    int64_t dims[2] = {2, 4};
    assert_int_equal(cl_serve_tensor_init(&x, "x", CL_SERVE_DT_FLOAT, 2, dims, 0, &err), 0);
    float xv[8] = {1, 2, 3, 4, -1, 0.5f, 0, 2};
    memcpy(x.data, xv, sizeof xv);
    cl_client_request req = {.model = "affine", .inputs = &x, .n_inputs = 1};
    for (int it = 0; it < 50; it++) {
        cl_client_response r;
        assert_int_equal(cl_client_predict(conn, &req, &r, &err), 0);
        assert_int_equal(cl_client_conn_last_code(conn), CL_SC_OK);
        assert_int_equal(r.n_outputs, 3);
        const cl_serve_tensor *logits = &r.outputs[1];
        assert_string_equal(logits->name, "logits");
        assert_int_equal(logits->dims[0], 2);
        assert_int_equal(logits->dims[1], 3);
        for (int row = 0; row < 2; row++)
            for (int j = 0; j < 3; j++) {
                double want = tm_affine_b(j);
                for (int i = 0; i < 4; i++)
                    want += xv[row * 4 + i] * tm_affine_w(i, j);
                assert_true(fabs(cl_client_tensor_value(logits, (size_t)(row * 3 + j)) - want) < 1e-4);
            }
        cl_client_response_clear(&r);
    }
    /* two int32 inputs */
    cl_serve_tensor ab[2];
    int64_t d1[1] = {3};
    assert_int_equal(cl_serve_tensor_init(&ab[0], "a", CL_SERVE_DT_INT32, 1, d1, 0, &err), 0);
    assert_int_equal(cl_serve_tensor_init(&ab[1], "b", CL_SERVE_DT_INT32, 1, d1, 0, &err), 0);
    int32_t av[3] = {1, -5, 100}, bv[3] = {2, 1, -100};
    memcpy(ab[0].data, av, sizeof av);
    memcpy(ab[1].data, bv, sizeof bv);
    cl_client_request req2 = {.model = "adder", .inputs = ab, .n_inputs = 2};
    cl_client_response r;
    assert_int_equal(cl_client_predict(conn, &req2, &r, &err), 0);
    assert_int_equal(r.n_outputs, 1);
    assert_true(cl_client_tensor_value(&r.outputs[0], 0) == 3);
    assert_true(cl_client_tensor_value(&r.outputs[0], 1) == -4);
    assert_true(cl_client_tensor_value(&r.outputs[0], 2) == 0);
    cl_client_response_clear(&r);
    cl_serve_tensor_clear(&ab[0]);
    cl_serve_tensor_clear(&ab[1]);

    /* the server's errors, with their codes; the connection stays usable */
    req.model = "nosuch";
    assert_int_equal(cl_client_predict(conn, &req, &r, &err), -1);
    assert_int_equal(cl_client_conn_last_code(conn), CL_SC_NOT_FOUND);
    assert_non_null(strstr(err.msg, "NOT_FOUND: Servable not found"));
    req.model = "affine";
    req.version = 9;
    assert_int_equal(cl_client_predict(conn, &req, &r, &err), -1);
    assert_int_equal(cl_client_conn_last_code(conn), CL_SC_NOT_FOUND);
    req.version = 0;
    x.dims[1] = 2;
    x.dims[0] = 4;
    assert_int_equal(cl_client_predict(conn, &req, &r, &err), -1);
    assert_int_equal(cl_client_conn_last_code(conn), CL_SC_INVALID_ARGUMENT);
    x.dims[0] = 2;
    x.dims[1] = 4;
    assert_int_equal(cl_client_predict(conn, &req, &r, &err), 0);
    cl_client_response_clear(&r);
    assert_int_equal(cl_client_get_status(conn, "nosuch", 0, &vs, &n, &err), -1);
    assert_int_equal(cl_client_conn_last_code(conn), CL_SC_NOT_FOUND);
    assert_int_equal(cl_client_get_metadata(conn, "bad/name", 0, &md, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    cl_serve_tensor_clear(&x);
    cl_client_conn_free(conn);
    cl_client_free(c);
}

static void test_live_grpc_rest(void **state)
{
    (void)state;
    live l;
    live_start(&l);
    check_calls(l.grpc, false);
    check_calls(l.rest, true);
    /* a gRPC client on the REST port (and the reverse) fails with a message, not a hang */
    cl_err err = {0};
    cl_client_options o = {.server = l.rest, .plaintext = true, .timeout_ms = 2000};
    cl_client *c = cl_client_new(&o, &err);
    assert_non_null(c);
    assert_null(cl_client_connect(c, &err));
    cl_client_free(c);
    live_stop(&l);
    /* the server is gone: connecting fails, naming the address */
    o.server = l.grpc;
    c = cl_client_new(&o, &err);
    assert_null(cl_client_connect(c, &err));
    assert_non_null(strstr(err.msg, l.grpc));
    cl_client_free(c);
}

static void test_options(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_client_options o = {.server = "localhost:1", .cert_file = "x.pem"};
    assert_null(cl_client_new(&o, &err));
    assert_non_null(strstr(err.msg, "--cert and --key"));
    cl_client_options p = {.server = "localhost:1", .plaintext = true, .ca_file = "ca.pem"};
    assert_null(cl_client_new(&p, &err));
    assert_non_null(strstr(err.msg, "plaintext"));
    cl_client_options q = {.server = "localhost:1", .ca_file = "/nonexistent/ca.pem"};
    assert_null(cl_client_new(&q, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/ca.pem"));
    cl_client_options r = {.server = "nocolon"};
    assert_null(cl_client_new(&r, &err));
    assert_non_null(strstr(err.msg, "HOST:PORT"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_frame_roundtrip),      cmocka_unit_test(test_grpc_status),
        cmocka_unit_test(test_percent_decode),       cmocka_unit_test(test_pb_predict),
        cmocka_unit_test(test_json_predict),         cmocka_unit_test(test_json_metadata_status),
        cmocka_unit_test(test_topk),                 cmocka_unit_test(test_floats3),
        cmocka_unit_test(test_image_preproc),        cmocka_unit_test(test_digit_samples),
        cmocka_unit_test(test_live_grpc_rest),       cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
