/* test_serve_wire.c — wire compatibility with TF Serving, below the sockets: TensorProto value
 * lists as TensorFlow reads them (one value fills the shape, fewer are padded with the last, none are
 * zeros, more are refused), DT_HALF into float inputs, DT_INT16/UINT16/UINT32/UINT64 into integer
 * inputs (range-checked), duplicate output_filter aliases, REST NaN/Infinity/-Infinity, exact DT_INT64
 * beyond 2^53, the shortest round-trip float printing, and the bounded gRPC decompressor. Expected
 * values are computed here (IEEE half bit patterns, decimal literals), not taken from the code. */
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <zlib.h>

#include "serve/jsonnum.h"
#include "serve/serve_int.h"
#include "tensorflow/core/framework/tensor.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"
#include "testmodel.h"
#include "testutil.h"

/* ---- a model with a DT_INT64 input: y = v (for the exact-int64 REST checks) */
static const cl_serve_tensor_spec id64_in[] = {{"v", CL_SERVE_DT_INT64, 1, {-1}}};
static const cl_serve_tensor_spec id64_out[] = {{"y", CL_SERVE_DT_INT64, 1, {-1}}};
static const cl_serve_signature id64_sig = {"serving_default", "tensorflow/serving/predict", id64_in, 1, id64_out, 1};

static int id64_run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out,
                    cl_err *err)
{
    (void)ctx, (void)n_in;
    cl_serve_tensor *o = calloc(1, sizeof *o);
    if (!o || cl_serve_tensor_init(o, "y", CL_SERVE_DT_INT64, 1, in[0].dims, 0, err) != 0) {
        free(o);
        return -1;
    }
    memcpy(o->data, in[0].data, in[0].nbytes);
    *out = o;
    *n_out = 1;
    return 0;
}

static void nop_destroy(void *ctx) { (void)ctx; }

static cl_serve_registry *registry(void)
{
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_non_null(r);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);
    cl_serve_backend b = {.signature = &id64_sig, .run = id64_run, .destroy = nop_destroy};
    assert_int_equal(cl_serve_registry_add(r, "id64", 1, &b, &err), 0);
    return r;
}

/* A PredictRequest for model with one or two inputs, parsed; returns the call (code checked). */
static cl_serve_call *pb_call(cl_serve_registry *r, const char *model, Tensorflow__TensorProto **tps,
                              const char **names, size_t n, char **filter, size_t n_filter, cl_serve_code want,
                              const char *msg)
{
    Tensorflow__Serving__ModelSpec ms = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    ms.name = (char *)model;
    Tensorflow__Serving__PredictRequest__InputsEntry e[2], *ep[2];
    for (size_t i = 0; i < n; i++) {
        tensorflow__serving__predict_request__inputs_entry__init(&e[i]);
        e[i].key = (char *)names[i];
        e[i].value = tps[i];
        ep[i] = &e[i];
    }
    Tensorflow__Serving__PredictRequest req = TENSORFLOW__SERVING__PREDICT_REQUEST__INIT;
    req.model_spec = &ms;
    req.n_inputs = n;
    req.inputs = ep;
    req.n_output_filter = n_filter;
    req.output_filter = filter;
    size_t len = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *buf = malloc(len + 1);
    protobuf_c_message_pack(&req.base, buf);
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    cl_serve_code got = cl_serve_pb_predict_parse(r, buf, len, 1 << 20, c);
    free(buf);
    if (got != want)
        fail_msg("%s: code %d (%s), want %d", model, got, c->st.msg, want);
    if (msg && !strstr(c->st.msg, msg))
        fail_msg("'%s' lacks '%s'", c->st.msg, msg);
    return c;
}

static Tensorflow__TensorShapeProto__Dim g_dims[2];
static Tensorflow__TensorShapeProto__Dim *g_dimp[2] = {&g_dims[0], &g_dims[1]};
static Tensorflow__TensorShapeProto g_shape;

static void shape(int ndim, int64_t d0, int64_t d1)
{
    tensorflow__tensor_shape_proto__init(&g_shape);
    tensorflow__tensor_shape_proto__dim__init(&g_dims[0]);
    tensorflow__tensor_shape_proto__dim__init(&g_dims[1]);
    g_dims[0].size = d0;
    g_dims[1].size = d1;
    g_shape.n_dim = (size_t)ndim;
    g_shape.dim = g_dimp;
}

static void test_value_lists(void **state)
{
    (void)state;
    cl_serve_registry *r = registry();
    const char *x = "x";
    /* affine x [2,4] DT_FLOAT */
    shape(2, 2, 4);
    float vals[9] = {1.5f, -2, 3, 4, 5, 6, 7, 8, 9};
    struct {
        size_t n;
        float want[8];
    } cases[] = {
        {1, {1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f, 1.5f}}, /* one value fills the shape */
        {3, {1.5f, -2, 3, 3, 3, 3, 3, 3}},                     /* fewer: the last one repeated */
        {0, {0, 0, 0, 0, 0, 0, 0, 0}},                         /* none: zeros */
        {8, {1.5f, -2, 3, 4, 5, 6, 7, 8}},
    };
    for (size_t k = 0; k < CL_ARRAY_LEN(cases); k++) {
        Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
        tp.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
        tp.tensor_shape = &g_shape;
        tp.n_float_val = cases[k].n;
        tp.float_val = vals;
        Tensorflow__TensorProto *tps[1] = {&tp};
        cl_serve_call *c = pb_call(r, "affine", tps, &x, 1, NULL, 0, CL_SC_OK, NULL);
        assert_int_equal(c->n_inputs, 1);
        assert_int_equal(c->inputs[0].nbytes, 32);
        assert_memory_equal(c->inputs[0].data, cases[k].want, 32);
        cl_serve_call_free(c);
    }
    /* more values than elements: refused (TF ignores them) */
    Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
    tp.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
    tp.tensor_shape = &g_shape;
    tp.n_float_val = 9;
    tp.float_val = vals;
    Tensorflow__TensorProto *tps[1] = {&tp};
    cl_serve_call_free(pb_call(r, "affine", tps, &x, 1, NULL, 0, CL_SC_INVALID_ARGUMENT,
                               "9 values in float_val for a shape of 8 elements"));
    /* integers too: adder a [3] from one int_val, b [3] from two (the last repeated) */
    shape(1, 3, 0);
    int32_t a1[1] = {5}, b2[2] = {1, -4};
    Tensorflow__TensorProto ta = TENSORFLOW__TENSOR_PROTO__INIT, tb = TENSORFLOW__TENSOR_PROTO__INIT;
    ta.dtype = tb.dtype = TENSORFLOW__DATA_TYPE__DT_INT32;
    ta.tensor_shape = tb.tensor_shape = &g_shape;
    ta.n_int_val = 1, ta.int_val = a1;
    tb.n_int_val = 2, tb.int_val = b2;
    Tensorflow__TensorProto *two[2] = {&ta, &tb};
    const char *ab[2] = {"a", "b"};
    cl_serve_call *c = pb_call(r, "adder", two, ab, 2, NULL, 0, CL_SC_OK, NULL);
    cl_err err = {0};
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
    const int32_t want_sum[3] = {6, 1, 1};
    assert_memory_equal(c->outputs[0].data, want_sum, sizeof want_sum);
    cl_serve_call_free(c);
    cl_serve_registry_free(r);
}

static void test_half_and_other_ints(void **state)
{
    (void)state;
    /* IEEE binary16 bit patterns and their exact values */
    assert_true(cl_serve_half_to_float(0x3c00) == 1.0f);
    assert_true(cl_serve_half_to_float(0xc100) == -2.5f);
    assert_true(cl_serve_half_to_float(0x7bff) == 65504.0f);
    assert_true(cl_serve_half_to_float(0x0001) == ldexpf(1, -24)); /* the smallest subnormal */
    assert_true(cl_serve_half_to_float(0x0400) == ldexpf(1, -14)); /* the smallest normal */
    assert_true(cl_serve_half_to_float(0x3555) == 0x1.554p-2f);    /* 0.333251953125 */
    assert_true(isinf(cl_serve_half_to_float(0x7c00)) && cl_serve_half_to_float(0xfc00) < 0);
    assert_true(isnan(cl_serve_half_to_float(0x7e00)));
    assert_true(signbit(cl_serve_half_to_float(0x8000)) && cl_serve_half_to_float(0x8000) == 0);

    cl_serve_registry *r = registry();
    const char *x = "x";
    shape(2, 2, 4);
    /* half_val: one value per element, and padding with the last */
    int32_t hv[3] = {0x3c00, 0xc100, 0x7bff};
    Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
    tp.dtype = TENSORFLOW__DATA_TYPE__DT_HALF;
    tp.tensor_shape = &g_shape;
    tp.n_half_val = 3;
    tp.half_val = hv;
    Tensorflow__TensorProto *tps[1] = {&tp};
    cl_serve_call *c = pb_call(r, "affine", tps, &x, 1, NULL, 0, CL_SC_OK, NULL);
    assert_int_equal(c->inputs[0].dtype, CL_SERVE_DT_FLOAT);
    const float want[8] = {1, -2.5f, 65504, 65504, 65504, 65504, 65504, 65504};
    assert_memory_equal(c->inputs[0].data, want, sizeof want);
    cl_err err = {0};
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
    cl_serve_call_free(c);
    /* tensor_content of 2-byte halves (little-endian) */
    uint8_t raw[16];
    for (int i = 0; i < 8; i++)
        raw[2 * i] = 0x00, raw[2 * i + 1] = i % 2 ? 0xc1 : 0x3c; /* 1, -2.5, ... */
    Tensorflow__TensorProto tc = TENSORFLOW__TENSOR_PROTO__INIT;
    tc.dtype = TENSORFLOW__DATA_TYPE__DT_HALF;
    tc.tensor_shape = &g_shape;
    tc.tensor_content.data = raw;
    tc.tensor_content.len = 16;
    tps[0] = &tc;
    c = pb_call(r, "affine", tps, &x, 1, NULL, 0, CL_SC_OK, NULL);
    for (int i = 0; i < 8; i++)
        assert_true(((float *)c->inputs[0].data)[i] == (i % 2 ? -2.5f : 1.0f));
    cl_serve_call_free(c);
    tc.tensor_content.len = 15;
    cl_serve_call_free(pb_call(r, "affine", tps, &x, 1, NULL, 0, CL_SC_INVALID_ARGUMENT,
                               "tensor_content has 15 bytes, the shape and dtype need 16"));

    /* the other integer types into adder's DT_INT32 inputs */
    shape(1, 2, 0);
    const char *ab[2] = {"a", "b"};
    int32_t i16[2] = {-32768, 32767};
    uint32_t u32[2] = {7, 2147483647u};
    Tensorflow__TensorProto ta = TENSORFLOW__TENSOR_PROTO__INIT, tb = TENSORFLOW__TENSOR_PROTO__INIT;
    ta.dtype = TENSORFLOW__DATA_TYPE__DT_INT16;
    ta.tensor_shape = tb.tensor_shape = &g_shape;
    ta.n_int_val = 2, ta.int_val = i16;
    tb.dtype = TENSORFLOW__DATA_TYPE__DT_UINT32;
    tb.n_uint32_val = 2, tb.uint32_val = u32;
    Tensorflow__TensorProto *two[2] = {&ta, &tb};
    c = pb_call(r, "adder", two, ab, 2, NULL, 0, CL_SC_OK, NULL);
    assert_int_equal(c->inputs[0].dtype, CL_SERVE_DT_INT32);
    assert_int_equal(((int32_t *)c->inputs[0].data)[0], -32768);
    assert_int_equal(((int32_t *)c->inputs[1].data)[1], 2147483647);
    cl_serve_call_free(c);
    /* a DT_INT16 value beyond int16 (int_val carries int32) is refused, so is a uint32 beyond int32 */
    i16[1] = 40000;
    cl_serve_call_free(pb_call(r, "adder", two, ab, 2, NULL, 0, CL_SC_INVALID_ARGUMENT,
                               "value 40000 out of range for DT_INT16"));
    i16[1] = 1;
    u32[1] = 2147483648u;
    cl_serve_call_free(pb_call(r, "adder", two, ab, 2, NULL, 0, CL_SC_INVALID_ARGUMENT,
                               "value 2147483648 out of range for DT_INT32"));
    /* DT_UINT16 and DT_UINT64 from tensor_content; a uint64 above INT64_MAX into DT_INT64 is refused */
    uint8_t u16raw[4] = {0xff, 0xff, 0x01, 0x00}; /* 65535, 1 */
    uint64_t u64[2] = {9007199254740993ull, 3};
    Tensorflow__TensorProto tu = TENSORFLOW__TENSOR_PROTO__INIT, tv = TENSORFLOW__TENSOR_PROTO__INIT;
    tu.dtype = TENSORFLOW__DATA_TYPE__DT_UINT16;
    tu.tensor_shape = tv.tensor_shape = &g_shape;
    tu.tensor_content.data = u16raw, tu.tensor_content.len = 4;
    tv.dtype = TENSORFLOW__DATA_TYPE__DT_UINT64;
    tv.n_uint64_val = 2, tv.uint64_val = u64;
    two[0] = &tu, two[1] = &tv;
    u64[0] = 5;
    c = pb_call(r, "adder", two, ab, 2, NULL, 0, CL_SC_OK, NULL);
    assert_int_equal(((int32_t *)c->inputs[0].data)[0], 65535);
    assert_int_equal(((int32_t *)c->inputs[1].data)[0], 5);
    cl_serve_call_free(c);
    const char *v = "v";
    Tensorflow__TensorProto *one[1] = {&tv};
    u64[0] = 9007199254740993ull;
    c = pb_call(r, "id64", one, &v, 1, NULL, 0, CL_SC_OK, NULL);
    assert_true(((int64_t *)c->inputs[0].data)[0] == 9007199254740993ll);
    cl_serve_call_free(c);
    u64[0] = 9223372036854775808ull;
    cl_serve_call_free(pb_call(r, "id64", one, &v, 1, NULL, 0, CL_SC_INVALID_ARGUMENT,
                               "value 9223372036854775808 out of range for DT_INT64"));
    /* DT_HALF for an integer input, DT_INT16 for a float one: TF Serving's dtype message */
    tps[0] = &tp;
    shape(1, 2, 0);
    cl_serve_call_free(pb_call(r, "adder", (Tensorflow__TensorProto *[]){&tp, &tb}, ab, 2, NULL, 0,
                               CL_SC_INVALID_ARGUMENT, "Expects arg[0] ('a') to be DT_INT32 but DT_HALF is provided"));
    shape(2, 2, 4);
    ta.tensor_shape = &g_shape;
    cl_serve_call_free(pb_call(r, "affine", (Tensorflow__TensorProto *[]){&ta}, &x, 1, NULL, 0,
                               CL_SC_INVALID_ARGUMENT, "Expects arg[0] ('x') to be DT_FLOAT but DT_INT16 is provided"));
    cl_serve_registry_free(r);
}

static void test_output_filter_duplicates(void **state)
{
    (void)state;
    cl_serve_registry *r = registry();
    shape(2, 1, 4);
    float vals[4] = {1, 2, 3, 4};
    Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
    tp.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
    tp.tensor_shape = &g_shape;
    tp.n_float_val = 4;
    tp.float_val = vals;
    const char *x = "x";
    char *ok[2] = {"class", "probs"}, *dup[3] = {"class", "probs", "class"};
    cl_serve_call_free(pb_call(r, "affine", (Tensorflow__TensorProto *[]){&tp}, &x, 1, ok, 2, CL_SC_OK, NULL));
    cl_serve_call_free(pb_call(r, "affine", (Tensorflow__TensorProto *[]){&tp}, &x, 1, dup, 3, CL_SC_INVALID_ARGUMENT,
                               "duplicate output tensor alias: class"));
    cl_serve_registry_free(r);
}

static void test_float_printing(void **state)
{
    (void)state;
    char b[40];
    struct {
        float f;
        const char *want;
    } f[] = {{3.05f, "3.05"},       {0.1f, "0.1"},           {1.0f / 3, "0.33333334"}, {1e10f, "1e+10"},
             {-0.0f, "-0"},         {16777216.0f, "16777216"}, {0.059977796f, "0.059977796"},
             {FLT_MAX, "3.4028235e+38"}, {FLT_TRUE_MIN, "1.4013e-45"}};
    for (size_t i = 0; i < CL_ARRAY_LEN(f); i++) {
        cl_json_float(b, sizeof b, f[i].f);
        assert_string_equal(b, f[i].want);
    }
    cl_json_double(b, sizeof b, 0.1);
    assert_string_equal(b, "0.1");
    cl_json_double(b, sizeof b, 1.0 / 3);
    assert_string_equal(b, "0.3333333333333333"); /* 16 digits: Python's repr too */
    /* floats of a spread of bit patterns: each reads back exactly, is never longer than %.9g, and a
     * %g with one digit less than it has would not read back (the fewest digits; in characters
     * "1.23457e+06" can be longer than %.9g's "1234570") */
    uint32_t s = 12345;
    int shorter_than_9 = 0;
    for (int i = 0; i < 20000; i++) {
        s = s * 1664525u + 1013904223u;
        float v;
        memcpy(&v, &s, 4);
        if (!isfinite(v))
            continue;
        size_t n = cl_json_float(b, sizeof b, v);
        assert_int_equal(strlen(b), n);
        assert_true(strtof(b, NULL) == v);
        char nine[40], less[40];
        snprintf(nine, sizeof nine, "%.9g", (double)v);
        shorter_than_9 += n < strlen(nine);
        int prec = 6;
        while (prec < 9) {
            snprintf(less, sizeof less, "%.*g", prec, (double)v);
            if (strcmp(less, b) == 0)
                break;
            prec++;
        }
        if (prec > 6) {
            snprintf(less, sizeof less, "%.*g", prec - 1, (double)v);
            assert_false(strtof(less, NULL) == v);
        }
    }
    assert_true(shorter_than_9 > 1000);
}

static cl_serve_call *json_call(cl_serve_registry *r, const char *model, const char *body, cl_serve_code want,
                                const char *msg)
{
    cl_err err = {0};
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_REST, CL_RPC_PREDICT);
    c->model = cl_serve_registry_get(r, model, 0, &err);
    assert_non_null(c->model);
    cl_serve_code got = cl_serve_json_predict_parse(body, strlen(body), 1 << 20, c);
    if (got != want)
        fail_msg("body %s: code %d (%s), want %d", body, got, c->st.msg, want);
    if (msg && !strstr(c->st.msg, msg))
        fail_msg("body %s: '%s' lacks '%s'", body, c->st.msg, msg);
    return c;
}

static char *json_run(cl_serve_call *c)
{
    cl_err err = {0};
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
    char *out;
    size_t len;
    assert_int_equal(cl_serve_json_predict_response(c, &out, &len), CL_SC_OK);
    return out;
}

static void test_rest_numbers(void **state)
{
    (void)state;
    cl_serve_registry *r = registry();
    /* NaN, Infinity, -Infinity as TF Serving reads them; strings that spell them are left alone */
    cl_serve_call *c = json_call(r, "affine", "{\"inputs\": {\"x\":[[NaN, Infinity,-Infinity ,1.5]]}}", CL_SC_OK, NULL);
    const float *x = c->inputs[0].data;
    assert_true(isnan(x[0]) && isinf(x[1]) && x[1] > 0 && isinf(x[2]) && x[2] < 0 && x[3] == 1.5f);
    char *out = json_run(c);
    assert_non_null(strstr(out, "\"logits\":[[NaN,NaN,NaN]]")); /* inf - inf in the sums: written as TF writes it */
    free(out);
    cl_serve_call_free(c);
    c = json_call(r, "affine", "{\"instances\": [[0,0,0,Infinity]], \"signature_name\": \"serving_default\"}", CL_SC_OK,
                  NULL);
    out = json_run(c);
    assert_non_null(strstr(out, "Infinity")); /* an infinite logit, written as TF writes it */
    free(out);
    cl_serve_call_free(c);
    cl_serve_call_free(json_call(r, "affine", "{\"signature_name\": \"NaN Infinity\", \"inputs\": [[1,2,3,4]]}",
                                 CL_SC_FAILED_PRECONDITION, "key \"NaN Infinity\" not found"));
    cl_serve_call_free(json_call(r, "affine", "{\"inputs\": [[NaNx, 1, 2, 3]]}", CL_SC_INVALID_ARGUMENT, "not valid JSON"));
    cl_serve_call_free(json_call(r, "affine", "{\"inputs\": [[nan, 1, 2, 3]]}", CL_SC_INVALID_ARGUMENT, "not valid JSON"));
    cl_serve_call_free(json_call(r, "adder", "{\"inputs\": {\"a\": [NaN], \"b\": [1]}}", CL_SC_INVALID_ARGUMENT,
                                 "is not an integer in range"));
    /* DT_INT64 exact beyond 2^53, both ends of the range; out of range and fractions refused */
    c = json_call(r, "id64",
                  "{\"instances\": [9007199254740993, -9223372036854775808, 9223372036854775807, 1.0, -0, 1e3]}",
                  CL_SC_OK, NULL);
    const int64_t *v = c->inputs[0].data;
    assert_true(v[0] == 9007199254740993ll && v[1] == INT64_MIN && v[2] == INT64_MAX && v[3] == 1 && v[4] == 0 &&
                v[5] == 1000);
    out = json_run(c);
    assert_string_equal(out, "{\"predictions\":[9007199254740993,-9223372036854775808,9223372036854775807,1,0,1000]}");
    free(out);
    cl_serve_call_free(c);
    c = json_call(r, "id64", "{\"inputs\": {\"v\": [\"x\", 9007199254740995]}}", CL_SC_INVALID_ARGUMENT, "a string");
    cl_serve_call_free(c);
    c = json_call(r, "id64", "{\"inputs\": [12345678901234567, 2]}", CL_SC_OK, NULL);
    assert_true(((int64_t *)c->inputs[0].data)[0] == 12345678901234567ll);
    cl_serve_call_free(c);
    cl_serve_call_free(json_call(r, "id64", "{\"inputs\": [9223372036854775808]}", CL_SC_INVALID_ARGUMENT,
                                 "out of its range"));
    cl_serve_call_free(json_call(r, "id64", "{\"inputs\": [1.5]}", CL_SC_INVALID_ARGUMENT, "not an integer"));
    /* keys and strings with digits and minus signs do not shift the tokens */
    c = json_call(r, "id64", "{\"signature_name\": \"serving_default\", \"x-1\": \"-2 3\", \"inputs\": "
                  "{\"v\": [9007199254740993]}}", CL_SC_OK, NULL);
    assert_true(((int64_t *)c->inputs[0].data)[0] == 9007199254740993ll);
    cl_serve_call_free(c);
    cl_serve_registry_free(r);
}

static void test_inflate_bounds(void **state)
{
    (void)state;
    /* 4 MiB of zeros in a few KB: inflating with a 1 MiB limit is refused, exactly the size is fine */
    size_t big = 4u << 20;
    uint8_t *zeros = calloc(1, big);
    uint8_t *z;
    size_t zlen;
    cl_serve_status st = {0};
    for (int alg = CL_SERVE_COMPRESS_DEFLATE; alg <= CL_SERVE_COMPRESS_GZIP; alg++) {
        assert_int_equal(cl_serve_compress((cl_serve_compression)alg, zeros, big, &z, &zlen), 0);
        assert_true(zlen < 64 * 1024);
        uint8_t *out;
        size_t out_len;
        assert_int_equal(cl_serve_inflate((cl_serve_compression)alg, z, zlen, 1u << 20, &out, &out_len, &st),
                         CL_SC_RESOURCE_EXHAUSTED);
        assert_null(out);
        assert_non_null(strstr(st.msg, "more than the server's limit of 1048576 bytes"));
        assert_int_equal(cl_serve_inflate((cl_serve_compression)alg, z, zlen, big, &out, &out_len, &st), CL_SC_OK);
        assert_int_equal(out_len, big);
        assert_memory_equal(out, zeros, big);
        free(out);
        assert_int_equal(cl_serve_inflate((cl_serve_compression)alg, z, zlen, big - 1, &out, &out_len, &st),
                         CL_SC_RESOURCE_EXHAUSTED);
        /* the other algorithm's format is corrupt data */
        assert_int_equal(cl_serve_inflate(alg == CL_SERVE_COMPRESS_GZIP ? CL_SERVE_COMPRESS_DEFLATE : CL_SERVE_COMPRESS_GZIP,
                                          z, zlen, big, &out, &out_len, &st), CL_SC_INTERNAL);
        free(z);
    }
    free(zeros);
    /* zlib's own gzip output (gzip(1) format) is read */
    const char msg[] = "a gRPC message";
    uLongf cap = 128;
    uint8_t zbuf[128];
    assert_int_equal(compress(zbuf, &cap, (const Bytef *)msg, sizeof msg), Z_OK);
    uint8_t *out;
    size_t out_len;
    assert_int_equal(cl_serve_inflate(CL_SERVE_COMPRESS_DEFLATE, zbuf, cap, 1024, &out, &out_len, &st), CL_SC_OK);
    assert_int_equal(out_len, sizeof msg);
    assert_memory_equal(out, msg, sizeof msg);
    free(out);
    /* header values */
    cl_serve_compression a;
    assert_int_equal(cl_serve_grpc_encoding("GZIP", 4, &a), 0);
    assert_int_equal(a, CL_SERVE_COMPRESS_GZIP);
    assert_int_equal(cl_serve_grpc_encoding("snappy", 6, &a), -1);
    assert_true(cl_serve_grpc_accepts("identity, deflate ,gzip", 23, CL_SERVE_COMPRESS_GZIP));
    assert_true(cl_serve_grpc_accepts("identity, deflate ,gzip", 23, CL_SERVE_COMPRESS_DEFLATE));
    assert_false(cl_serve_grpc_accepts("identity,gzipx", 14, CL_SERVE_COMPRESS_GZIP));
    cl_err err = {0};
    assert_int_equal(cl_serve_compression_parse("zstd", &a, &err), -1);
    assert_non_null(strstr(err.msg, "use identity, deflate or gzip"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_value_lists),
        cmocka_unit_test(test_half_and_other_ints),
        cmocka_unit_test(test_output_filter_duplicates),
        cmocka_unit_test(test_float_printing),
        cmocka_unit_test(test_rest_numbers),
        cmocka_unit_test(test_inflate_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
