/* test_serve.c — the serve module below the network: TF Serving's SSLConfig text format (including
 * the file `cloister tls init` writes), the model registry (latest policy, replacement while in
 * use, refcounted destruction), input checking against signatures, protobuf Predict / metadata /
 * status (tensor_content and typed *_val inputs, round trips through protobuf-c), the REST JSON
 * formats and gRPC message framing; image inputs (DT_STRING / {"b64": ...} of encoded images decoded
 * and preprocessed before the model runs, their metadata and every refusal); when the worker pool
 * runs a call on the loop thread instead; the metrics and the access-log lines of finished requests.
 * The backends are the deterministic test models of
 * tests/serve/testmodel.c. */
#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <event2/event.h>
#include <time.h>
#include <unistd.h>

#include "cloister/pki.h"
#include "serve/serve_int.h"
#include "testmodel.h"
#include "testutil.h"

#include "tensorflow_serving/apis/get_model_metadata.pb-c.h"
#include "tensorflow_serving/apis/get_model_status.pb-c.h"
#include "tensorflow_serving/apis/predict.pb-c.h"

/* ---------------------------------------------------------------- SSLConfig */

static void test_ssl_config_parse(void **state)
{
    (void)state;
    const char *txt = "# comment\n"
                      "server_key: \"-----BEGIN PRIVATE KEY-----\\nAAA\\n\" \"-----END PRIVATE KEY-----\\n\"\n"
                      "server_cert: 'CERT\\x41\\102'\n"
                      "custom_ca: \"CA\\t\\\"q\\\"\"\n"
                      "client_verify: true\n";
    cl_serve_ssl_config c;
    cl_err err = {0};
    assert_int_equal(cl_serve_ssl_config_parse(txt, strlen(txt), &c, &err), 0);
    assert_string_equal(c.server_key, "-----BEGIN PRIVATE KEY-----\nAAA\n-----END PRIVATE KEY-----\n");
    assert_string_equal(c.server_cert, "CERTAB");
    assert_string_equal(c.custom_ca, "CA\t\"q\"");
    assert_true(c.client_verify);
    cl_serve_ssl_config_clear(&c);

    struct {
        const char *text, *msg;
    } bad[] = {
        {"server_key: \"k\"\nserver_cert: \"c\"\nbogus: 1\n", "line 3: unknown field 'bogus'"},
        {"server_key: \"k\"\nserver_key: \"k\"\nserver_cert: \"c\"\n", "line 2: field 'server_key' given twice"},
        {"server_key: \"k\nserver_cert: \"c\"\n", "line 1: unterminated string"},
        {"server_key: \"k\"\n", "needs both server_key and server_cert"},
        {"server_key: \"k\"\nserver_cert: \"c\"\nclient_verify: true\n", "no custom_ca"},
        {"server_key: \"k\"\nserver_cert: \"c\"\nclient_verify: maybe\n", "line 3: client_verify must be true or false"},
        {"server_key \"k\"\n", "line 1: expected ':'"},
        {"server_key: \"\\q\"\nserver_cert: \"c\"\n", "unknown escape"},
        {"server_key: k\n", "expected a quoted string"},
        {"server_key: \"a\\0b\"\nserver_cert: \"c\"\n", "NUL byte"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        cl_err e = {0};
        assert_int_equal(cl_serve_ssl_config_parse(bad[i].text, strlen(bad[i].text), &c, &e), -1);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("case %zu: message '%s' lacks '%s'", i, e.msg, bad[i].msg);
        assert_null(c.server_key);
    }
}

/* The ssl.cfg of `cloister tls init` parses to exactly the PEM files written beside it, and a TLS
 * context builds from it. */
static void test_ssl_config_from_tls_init(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *sub = tu_path(dir, "tls");
    const char *sans[] = {"127.0.0.1"};
    cl_pki_tls_init_options o = {.dir = sub, .server_name = "localhost", .extra_sans = sans, .extra_san_count = 1,
                                 .client_name = "client", .keytype = CL_PKI_EC_P256};
    cl_err err = {0};
    assert_int_equal(cl_pki_tls_init(&o, &err), 0);
    char *cfgp = tu_path(sub, "ssl.cfg"), *keyp = tu_path(sub, "server/key.pem"),
         *certp = tu_path(sub, "server/cert.pem"), *cap = tu_path(sub, "ca_cert.pem");
    cl_serve_ssl_config c;
    assert_int_equal(cl_serve_ssl_config_load(cfgp, &c, &err), 0);
    size_t n;
    char *key = (char *)tu_read_file(keyp, &n), *cert = (char *)tu_read_file(certp, &n),
         *ca = (char *)tu_read_file(cap, &n);
    assert_string_equal(c.server_key, key);
    assert_string_equal(c.server_cert, cert);
    assert_string_equal(c.custom_ca, ca);
    assert_true(c.client_verify);
    assert_true(cl_secmem_is_locked(c.server_key));
    /* with OpenSSL's secure heap (`cloister serve` sets it up first), the decoded key lives there: the
     * context adds its session ticket keys (64 bytes) and at least the P-256 scalar, and gives them back */
    assert_int_equal(cl_secure_heap_init(1 << 20, &err), 0);
    size_t base = cl_secure_heap_used();
    SSL_CTX *ctx = cl_serve_tls_ctx(&c, "h2", &err);
    assert_non_null(ctx);
    assert_true(cl_secure_heap_used() >= base + 64 + 32);
    SSL_CTX_free(ctx);
    assert_int_equal(cl_secure_heap_used(), base);

    /* from files gives the same; a key that does not match the certificate is refused */
    cl_serve_ssl_config f;
    assert_int_equal(cl_serve_ssl_config_from_files(certp, keyp, cap, true, &f, &err), 0);
    assert_string_equal(f.server_key, c.server_key);
    assert_true(cl_secmem_is_locked(f.server_key));
    cl_serve_ssl_config_clear(&f);
    char *ckeyp = tu_path(sub, "client/key.pem");
    assert_int_equal(cl_serve_ssl_config_from_files(certp, ckeyp, NULL, false, &f, &err), 0);
    assert_null(cl_serve_tls_ctx(&f, "h2", &err));
    assert_non_null(strstr(err.msg, "does not match"));
    cl_serve_ssl_config_clear(&f);
    assert_int_equal(cl_serve_ssl_config_from_files(certp, keyp, NULL, true, &f, &err), -1);

    cl_serve_ssl_config_clear(&c);
    free(key), free(cert), free(ca), free(cfgp), free(keyp), free(certp), free(cap), free(ckeyp);
    tu_rmrf(dir);
    free(sub);
    free(dir);
}

/* ---------------------------------------------------------------- registry */

static int destroyed;
static void count_destroy(void *ctx) { destroyed++; }
static const cl_serve_tensor_spec id_in[] = {{"x", CL_SERVE_DT_FLOAT, 1, {-1}}};
static const cl_serve_signature id_sig = {"serving_default", "tensorflow/serving/predict", id_in, 1, id_in, 1};
static int id_run(void *ctx, const cl_serve_tensor *in, size_t n, cl_serve_tensor **out, size_t *n_out, cl_err *err)
{
    cl_serve_tensor *o = calloc(1, sizeof *o);
    if (cl_serve_tensor_init(o, "x", CL_SERVE_DT_FLOAT, 1, in[0].dims, 0, err) != 0)
        return -1;
    memcpy(o->data, in[0].data, in[0].nbytes);
    ((float *)o->data)[0] += (float)(intptr_t)ctx; /* the version, so callers can tell them apart */
    *out = o;
    *n_out = 1;
    return 0;
}

static float run_id(cl_serve_model *m)
{
    cl_serve_tensor in;
    int64_t d = 1;
    cl_err err = {0};
    assert_int_equal(cl_serve_tensor_init(&in, "x", CL_SERVE_DT_FLOAT, 1, &d, 0, &err), 0);
    cl_serve_tensor *out;
    size_t n;
    assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n, &err), 0);
    float v = ((float *)out[0].data)[0];
    cl_serve_tensors_free(out, n);
    cl_serve_tensor_clear(&in);
    return v;
}

static void test_registry(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    destroyed = 0;
    for (intptr_t v = 1; v <= 3; v++) {
        cl_serve_backend b = {&id_sig, id_run, count_destroy, (void *)v};
        assert_int_equal(cl_serve_registry_add(r, "m", v, &b, &err), 0);
    }
    int64_t vs[8];
    assert_int_equal(cl_serve_registry_versions(r, "m", vs, 8), 3);
    assert_true(vs[0] == 3 && vs[1] == 2 && vs[2] == 1);
    assert_int_equal(cl_serve_registry_versions(r, "nope", vs, 8), 0);

    cl_serve_model *latest = cl_serve_registry_get(r, "m", 0, &err);
    assert_non_null(latest);
    assert_int_equal(cl_serve_model_version(latest), 3);
    assert_float_equal(run_id(latest), 3.0f, 0);
    cl_serve_model *v1 = cl_serve_registry_get(r, "m", 1, &err);
    assert_float_equal(run_id(v1), 1.0f, 0);
    assert_null(cl_serve_registry_get(r, "m", 9, &err));
    assert_non_null(strstr(err.msg, "Servable not found for request: Specific(m, 9)"));
    assert_null(cl_serve_registry_get(r, "zz", 0, &err));
    assert_non_null(strstr(err.msg, "Latest(zz)"));

    /* replace version 3 while `latest` still uses it: the old one lives until released */
    cl_serve_backend b7 = {&id_sig, id_run, count_destroy, (void *)7};
    assert_int_equal(cl_serve_registry_add(r, "m", 3, &b7, &err), 0);
    assert_int_equal(destroyed, 0);
    assert_float_equal(run_id(latest), 3.0f, 0);
    cl_serve_model_release(latest);
    assert_int_equal(destroyed, 1);
    latest = cl_serve_registry_get(r, "m", 0, &err);
    assert_float_equal(run_id(latest), 7.0f, 0);
    cl_serve_model_release(latest);

    assert_int_equal(cl_serve_registry_remove(r, "m", 1), 0);
    assert_int_equal(cl_serve_registry_remove(r, "m", 1), -1);
    assert_int_equal(destroyed, 1); /* v1 still referenced */
    cl_serve_model_release(v1);
    assert_int_equal(destroyed, 2);

    cl_serve_backend bad = {&id_sig, NULL, NULL, NULL};
    assert_int_equal(cl_serve_registry_add(r, "m", 5, &bad, &err), -1);
    assert_int_equal(cl_serve_registry_add(r, "m", 0, &b7, &err), -1);
    cl_serve_registry_free(r);
    assert_int_equal(destroyed, 4);
}

static void test_model_run_checks(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);
    cl_serve_model *m = cl_serve_registry_get(r, "adder", 0, &err);
    cl_serve_tensor in[3];
    int64_t d3 = 3, d2[2] = {3, 1};
    assert_int_equal(cl_serve_tensor_init(&in[0], "b", CL_SERVE_DT_INT32, 1, &d3, 0, &err), 0);
    assert_int_equal(cl_serve_tensor_init(&in[1], "a", CL_SERVE_DT_INT32, 1, &d3, 0, &err), 0);
    for (int i = 0; i < 3; i++)
        ((int32_t *)in[0].data)[i] = 10 * i, ((int32_t *)in[1].data)[i] = i + 1;
    cl_serve_tensor *out;
    size_t n;
    /* order does not matter: matched by name */
    assert_int_equal(cl_serve_model_run(m, in, 2, &out, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(((int32_t *)out[0].data)[2], 23);
    cl_serve_tensors_free(out, n);
    /* missing input */
    assert_int_equal(cl_serve_model_run(m, in, 1, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "missing input 'a'"));
    /* unknown and duplicate inputs */
    assert_int_equal(cl_serve_tensor_init(&in[2], "c", CL_SERVE_DT_INT32, 1, &d3, 0, &err), 0);
    assert_int_equal(cl_serve_model_run(m, in, 3, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "alias not found in signature: c"));
    free(in[2].name);
    in[2].name = strdup("a");
    assert_int_equal(cl_serve_model_run(m, in, 3, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "given twice"));
    cl_serve_tensor_clear(&in[2]);
    /* wrong dtype, wrong rank */
    in[0].dtype = CL_SERVE_DT_FLOAT;
    assert_int_equal(cl_serve_model_run(m, in, 2, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "to be DT_INT32 but DT_FLOAT is provided"));
    in[0].dtype = CL_SERVE_DT_INT32;
    in[0].ndim = 2;
    in[0].dims[0] = 3, in[0].dims[1] = 1;
    (void)d2;
    assert_int_equal(cl_serve_model_run(m, in, 2, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "has shape [3,1], the signature wants [-1]"));
    assert_int_equal(err.code, CL_E_INVALID);
    cl_serve_tensor_clear(&in[0]);
    cl_serve_tensor_clear(&in[1]);
    cl_serve_model_release(m);
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- protobuf */

static uint8_t *pack_predict(const char *model, int64_t version, Tensorflow__TensorProto *tp, const char *input,
                             size_t *len)
{
    Tensorflow__Serving__ModelSpec ms = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    Google__Protobuf__Int64Value v = GOOGLE__PROTOBUF__INT64_VALUE__INIT;
    ms.name = (char *)model;
    if (version) {
        v.value = version;
        ms.version_choice_case = TENSORFLOW__SERVING__MODEL_SPEC__VERSION_CHOICE_VERSION;
        ms.version = &v;
    }
    Tensorflow__Serving__PredictRequest__InputsEntry e = TENSORFLOW__SERVING__PREDICT_REQUEST__INPUTS_ENTRY__INIT;
    e.key = (char *)input;
    e.value = tp;
    Tensorflow__Serving__PredictRequest__InputsEntry *ep[1] = {&e};
    Tensorflow__Serving__PredictRequest req = TENSORFLOW__SERVING__PREDICT_REQUEST__INIT;
    req.model_spec = &ms;
    req.n_inputs = 1;
    req.inputs = ep;
    *len = protobuf_c_message_get_packed_size(&req.base);
    uint8_t *buf = malloc(*len + 1);
    protobuf_c_message_pack(&req.base, buf);
    return buf;
}

static void expect_affine(const cl_serve_tensor *outs, size_t n, const float *x, int rows)
{
    assert_int_equal(n, 3);
    for (int r = 0; r < rows; r++) {
        float lg[3], mx = -1e30f, sum = 0;
        for (int j = 0; j < 3; j++) {
            lg[j] = tm_affine_b(j);
            for (int i = 0; i < 4; i++)
                lg[j] += x[r * 4 + i] * tm_affine_w(i, j);
            mx = fmaxf(mx, lg[j]);
        }
        for (int j = 0; j < 3; j++)
            sum += expf(lg[j] - mx);
        for (int j = 0; j < 3; j++) {
            assert_float_equal(((float *)outs[0].data)[r * 3 + j], lg[j], 1e-5);
            assert_float_equal(((float *)outs[1].data)[r * 3 + j], expf(lg[j] - mx) / sum, 1e-5);
        }
    }
}

static void test_pb_predict(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, true, &err), 0);
    const float x[9] = {1, 2, 3, 4, -1, 0.5f, 0, 2, 7}; /* 8 for [2,4], one more for the too-many case */
    Tensorflow__TensorShapeProto__Dim d0 = TENSORFLOW__TENSOR_SHAPE_PROTO__DIM__INIT, d1 = d0;
    d0.size = 2;
    d1.size = 4;
    Tensorflow__TensorShapeProto__Dim *dims[2] = {&d0, &d1};
    Tensorflow__TensorShapeProto sh = TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
    sh.n_dim = 2;
    sh.dim = dims;
    for (int form = 0; form < 2; form++) {
        Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
        tp.dtype = TENSORFLOW__DATA_TYPE__DT_FLOAT;
        tp.tensor_shape = &sh;
        if (form == 0) {
            tp.tensor_content.data = (uint8_t *)x;
            tp.tensor_content.len = 8 * sizeof x[0];
        } else {
            tp.n_float_val = 8;
            tp.float_val = (float *)x;
        }
        size_t len;
        uint8_t *msg = pack_predict("affine", 0, &tp, "x", &len);
        cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
        assert_int_equal(cl_serve_pb_predict_parse(r, msg, len, 1 << 20, c), CL_SC_OK);
        assert_int_equal(cl_serve_model_version(c->model), 2); /* latest */
        assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
        expect_affine(c->outputs, c->n_outputs, x, 2);
        uint8_t *resp;
        size_t rlen;
        assert_int_equal(cl_serve_pb_predict_response(c, &resp, &rlen), CL_SC_OK);
        Tensorflow__Serving__PredictResponse *pr = tensorflow__serving__predict_response__unpack(NULL, rlen, resp);
        assert_non_null(pr);
        assert_string_equal(pr->model_spec->name, "affine");
        assert_int_equal(pr->model_spec->version->value, 2);
        assert_int_equal(pr->n_outputs, 3);
        for (size_t i = 0; i < pr->n_outputs; i++) {
            Tensorflow__TensorProto *o = pr->outputs[i]->value;
            if (strcmp(pr->outputs[i]->key, "class") == 0) {
                assert_int_equal(o->dtype, TENSORFLOW__DATA_TYPE__DT_INT64);
                assert_int_equal(o->n_int64_val, 2);
                assert_int_equal(o->int64_val[1], ((int64_t *)c->outputs[2].data)[1]);
            } else {
                assert_int_equal(o->n_float_val, 6);
                assert_int_equal(o->tensor_shape->n_dim, 2);
                assert_int_equal(o->tensor_shape->dim[1]->size, 3);
            }
        }
        tensorflow__serving__predict_response__free_unpacked(pr, NULL);
        free(resp);
        free(msg);
        cl_serve_call_free(c);
    }

    /* failures: byte count, value count, dtype, unknown model and version, size limit, garbage */
    struct {
        int content_len, nvals, dtype;
        const char *model;
        int64_t version;
        size_t limit;
        cl_serve_code code;
        const char *msg;
    } bad[] = {
        {12, 0, 1, "affine", 0, 1 << 20, CL_SC_INVALID_ARGUMENT, "tensor_content has 12 bytes, the shape and dtype need 32"},
        /* fewer values than elements are TF's padding now (test_serve_wire.c); more are refused */
        {0, 9, 1, "affine", 0, 1 << 20, CL_SC_INVALID_ARGUMENT, "9 values in float_val for a shape of 8 elements"},
        {0, 8, 14, "affine", 0, 1 << 20, CL_SC_INVALID_ARGUMENT, "dtype 14 is not supported"},
        {0, 8, 7, "affine", 0, 1 << 20, CL_SC_INVALID_ARGUMENT, "0 values in string_val for a shape of 8 elements"},
        {12, 0, 7, "affine", 0, 1 << 20, CL_SC_INVALID_ARGUMENT, "carries its values in string_val, not tensor_content"},
        {0, 8, 1, "nope", 0, 1 << 20, CL_SC_NOT_FOUND, "Servable not found for request: Latest(nope)"},
        {0, 8, 1, "affine", 5, 1 << 20, CL_SC_NOT_FOUND, "Specific(affine, 5)"},
        {0, 8, 1, "affine", 0, 16, CL_SC_INVALID_ARGUMENT, "above the limit of 16"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
        tp.dtype = (Tensorflow__DataType)bad[i].dtype;
        tp.tensor_shape = &sh;
        tp.tensor_content.data = (uint8_t *)x;
        tp.tensor_content.len = (size_t)bad[i].content_len;
        tp.n_float_val = (size_t)bad[i].nvals;
        tp.float_val = (float *)x;
        size_t len;
        uint8_t *msg = pack_predict(bad[i].model, bad[i].version, &tp, "x", &len);
        cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
        assert_int_equal(cl_serve_pb_predict_parse(r, msg, len, bad[i].limit, c), bad[i].code);
        if (!strstr(c->st.msg, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, c->st.msg, bad[i].msg);
        cl_serve_call_free(c);
        free(msg);
    }
    const uint8_t garbage[] = {0x0a, 0xff, 0x01, 0x02};
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    assert_int_equal(cl_serve_pb_predict_parse(r, garbage, sizeof garbage, 1 << 20, c), CL_SC_INVALID_ARGUMENT);
    assert_non_null(strstr(c->st.msg, "not a valid PredictRequest"));
    cl_serve_call_free(c);
    cl_serve_registry_free(r);
}

static void test_pb_metadata_status(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, true, &err), 0);
    Tensorflow__Serving__ModelSpec ms = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    ms.name = "affine";
    char *fields[] = {"signature_def"};
    Tensorflow__Serving__GetModelMetadataRequest mreq = TENSORFLOW__SERVING__GET_MODEL_METADATA_REQUEST__INIT;
    mreq.model_spec = &ms;
    mreq.n_metadata_field = 1;
    mreq.metadata_field = fields;
    uint8_t buf[512];
    size_t len = protobuf_c_message_pack(&mreq.base, buf);
    uint8_t *out;
    size_t olen;
    cl_serve_status st = {0};
    assert_int_equal(cl_serve_pb_metadata(r, buf, len, &out, &olen, &st), CL_SC_OK);
    Tensorflow__Serving__GetModelMetadataResponse *mr =
        tensorflow__serving__get_model_metadata_response__unpack(NULL, olen, out);
    assert_non_null(mr);
    assert_int_equal(mr->n_metadata, 1);
    assert_string_equal(mr->metadata[0]->key, "signature_def");
    assert_string_equal(mr->metadata[0]->value->type_url, "type.googleapis.com/tensorflow.serving.SignatureDefMap");
    Tensorflow__Serving__SignatureDefMap *sm = tensorflow__serving__signature_def_map__unpack(
        NULL, mr->metadata[0]->value->value.len, mr->metadata[0]->value->value.data);
    assert_non_null(sm);
    assert_string_equal(sm->signature_def[0]->key, "serving_default");
    Tensorflow__SignatureDef *sd = sm->signature_def[0]->value;
    assert_int_equal(sd->n_inputs, 1);
    assert_int_equal(sd->n_outputs, 3);
    assert_string_equal(sd->inputs[0]->key, "x");
    assert_int_equal(sd->inputs[0]->value->tensor_shape->dim[0]->size, -1);
    assert_int_equal(sd->inputs[0]->value->tensor_shape->dim[1]->size, 4);
    assert_string_equal(sd->method_name, "tensorflow/serving/predict");
    tensorflow__serving__signature_def_map__free_unpacked(sm, NULL);
    tensorflow__serving__get_model_metadata_response__free_unpacked(mr, NULL);
    free(out);
    fields[0] = "other";
    len = protobuf_c_message_pack(&mreq.base, buf);
    assert_int_equal(cl_serve_pb_metadata(r, buf, len, &out, &olen, &st), CL_SC_INVALID_ARGUMENT);

    Tensorflow__Serving__GetModelStatusRequest sreq = TENSORFLOW__SERVING__GET_MODEL_STATUS_REQUEST__INIT;
    sreq.model_spec = &ms;
    len = protobuf_c_message_pack(&sreq.base, buf);
    assert_int_equal(cl_serve_pb_status(r, buf, len, &out, &olen, &st), CL_SC_OK);
    Tensorflow__Serving__GetModelStatusResponse *sr = tensorflow__serving__get_model_status_response__unpack(NULL, olen,
                                                                                                           out);
    assert_int_equal(sr->n_model_version_status, 2);
    assert_int_equal(sr->model_version_status[0]->version, 2);
    assert_int_equal(sr->model_version_status[0]->state, TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE);
    tensorflow__serving__get_model_status_response__free_unpacked(sr, NULL);
    free(out);
    /* a version the repository keeps trying (its key not released yet) is LOADING with the reason */
    cl_serve_version_status waiting = {.version = 3, .code = CL_SC_PERMISSION_DENIED};
    snprintf(waiting.message, sizeof waiting.message, "key 'k2' not released");
    assert_int_equal(cl_serve_registry_set_loading(r, "affine", &waiting, 1, &err), 0);
    assert_int_equal(cl_serve_pb_status(r, buf, len, &out, &olen, &st), CL_SC_OK);
    sr = tensorflow__serving__get_model_status_response__unpack(NULL, olen, out);
    assert_int_equal(sr->n_model_version_status, 3);
    assert_int_equal(sr->model_version_status[0]->version, 3);
    assert_int_equal(sr->model_version_status[0]->state, TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__LOADING);
    assert_int_equal(sr->model_version_status[0]->status->error_code, TENSORFLOW__ERROR__CODE__PERMISSION_DENIED);
    assert_string_equal(sr->model_version_status[0]->status->error_message, "key 'k2' not released");
    assert_int_equal(sr->model_version_status[1]->state, TENSORFLOW__SERVING__MODEL_VERSION_STATUS__STATE__AVAILABLE);
    assert_int_equal(sr->model_version_status[1]->status->error_code, TENSORFLOW__ERROR__CODE__OK);
    tensorflow__serving__get_model_status_response__free_unpacked(sr, NULL);
    free(out);
    assert_int_equal(cl_serve_registry_set_loading(r, "affine", NULL, 0, &err), 0);
    ms.name = "nope";
    len = protobuf_c_message_pack(&sreq.base, buf);
    assert_int_equal(cl_serve_pb_status(r, buf, len, &out, &olen, &st), CL_SC_NOT_FOUND);
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- JSON */

static cl_serve_call *json_call(cl_serve_registry *r, const char *model, const char *body, cl_serve_code want)
{
    cl_err err = {0};
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_REST, CL_RPC_PREDICT);
    c->model = cl_serve_registry_get(r, model, 0, &err);
    assert_non_null(c->model);
    cl_serve_code got = cl_serve_json_predict_parse(body, strlen(body), 1 << 20, c);
    if (got != want)
        fail_msg("body %s: code %d (%s), want %d", body, got, c->st.msg, want);
    return c;
}

static char *json_run(cl_serve_call *c)
{
    cl_err err = {0};
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
    char *out;
    size_t len;
    assert_int_equal(cl_serve_json_predict_response(c, &out, &len), CL_SC_OK);
    assert_int_equal(strlen(out), len);
    return out;
}

static void test_json(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);

    /* row format, single input: instances are the values */
    cl_serve_call *c = json_call(r, "adder", "{\"instances\": [{\"a\": 1, \"b\": 2}, {\"a\": -5, \"b\": 7}]}",
                                 CL_SC_OK);
    char *out = json_run(c);
    assert_string_equal(out, "{\"predictions\":[3,2]}");
    free(out);
    cl_serve_call_free(c);
    /* columnar */
    c = json_call(r, "adder", "{\"inputs\": {\"a\": [1, 2, 3], \"b\": [10, 20, 30]}}", CL_SC_OK);
    out = json_run(c);
    assert_string_equal(out, "{\"outputs\":[11,22,33]}");
    free(out);
    cl_serve_call_free(c);
    /* row format, multi-output model: objects per row */
    c = json_call(r, "affine", "{\"signature_name\":\"serving_default\",\"instances\": [[0,0,0,0]]}", CL_SC_OK);
    assert_int_equal(c->inputs[0].ndim, 2);
    assert_int_equal(c->inputs[0].dims[1], 4);
    out = json_run(c);
    assert_non_null(strstr(out, "{\"predictions\":[{\"logits\":[0.5,0.25,0],\"probs\":["));
    assert_non_null(strstr(out, "\"class\":0}]}"));
    free(out);
    cl_serve_call_free(c);
    c = json_call(r, "affine", "{\"inputs\": [[0,0,0,0],[1,1,1,1]]}", CL_SC_OK);
    out = json_run(c);
    assert_non_null(strstr(out, "{\"outputs\":{\"logits\":[[0.5,0.25,0],["));
    assert_non_null(strstr(out, "\"class\":[0,"));
    free(out);
    cl_serve_call_free(c);

    struct {
        const char *model, *body, *msg;
        cl_serve_code code;
    } bad[] = {
        {"adder", "{\"instances\": [1,2]", "not valid JSON", CL_SC_INVALID_ARGUMENT},
        {"adder", "[1]", "must be a JSON object", CL_SC_INVALID_ARGUMENT},
        {"adder", "{}", "Missing 'inputs' or 'instances'", CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"inputs\":{\"a\":[1]},\"instances\":[]}", "exactly one", CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"instances\": [1, 2]}", "the model has 2 inputs", CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"inputs\": {\"a\": [1.5], \"b\": [1]}}", "not an integer", CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"inputs\": {\"a\": [\"x\"], \"b\": [1]}}", "expected a number, found a string",
         CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"inputs\": {\"a\": [1e12], \"b\": [1]}}", "not an integer in range", CL_SC_INVALID_ARGUMENT},
        {"adder", "{\"inputs\": {\"c\": [1]}}", "alias not found in signature: c", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"inputs\": [[1,2],[3]]}", "ragged", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"inputs\": [[1,2],3]}", "ragged", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"inputs\": [[[1]],[2]]}", "ragged", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"instances\": [[1,2,3,4],[1,2,3]]}", "same shape", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"instances\": []}", "empty", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"inputs\": [[[[[[[[[1]]]]]]]]]}", "nested deeper", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"inputs\": {\"b64\": \"AA=A\"}}", "input 'x': base64: '=' at position 2", CL_SC_INVALID_ARGUMENT},
        {"affine", "{\"signature_name\": \"other\", \"inputs\": [[1,2,3,4]]}", "Serving signature key \"other\" not found.",
         CL_SC_FAILED_PRECONDITION}, /* TF Serving's code and text */
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        c = json_call(r, bad[i].model, bad[i].body, bad[i].code);
        if (!strstr(c->st.msg, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, c->st.msg, bad[i].msg);
        cl_serve_call_free(c);
    }

    /* metadata, status and error bodies are valid JSON with TF Serving's keys */
    cl_serve_model *m = cl_serve_registry_get(r, "affine", 0, &err);
    char *md = cl_serve_json_metadata(m);
    assert_non_null(strstr(md, "\"signature_def\":{\"signature_def\":{\"serving_default\":{\"inputs\":{\"x\":"
                               "{\"dtype\":\"DT_FLOAT\",\"tensor_shape\":{\"dim\":[{\"size\":\"-1\",\"name\":\"\"},"
                               "{\"size\":\"4\",\"name\":\"\"}],\"unknown_rank\":false}"));
    free(md);
    cl_serve_model_release(m);
    cl_serve_version_status vs[2] = {{.version = 2, .available = true}, {.version = 1, .available = true}};
    char *s = cl_serve_json_status(vs, 2);
    assert_string_equal(s, "{\"model_version_status\":[{\"version\":\"2\",\"state\":\"AVAILABLE\",\"status\":{"
                           "\"error_code\":\"OK\",\"error_message\":\"\"}},{\"version\":\"1\",\"state\":\"AVAILABLE\","
                           "\"status\":{\"error_code\":\"OK\",\"error_message\":\"\"}}]}");
    free(s);
    /* a version the repository is still trying to load is LOADING, with its last attempt's code */
    cl_serve_version_status waiting = {.version = 7, .code = CL_SC_PERMISSION_DENIED};
    snprintf(waiting.message, sizeof waiting.message, "key \"k\" not released; retried");
    assert_int_equal(cl_serve_registry_set_loading(r, "affine", &waiting, 1, &err), 0);
    cl_serve_version_status got[4];
    size_t ng = cl_serve_registry_status(r, "affine", got, 4);
    assert_true(ng >= 2);
    assert_int_equal(got[0].version, 7);
    assert_false(got[0].available);
    assert_true(got[1].available);
    s = cl_serve_json_status(got, 1);
    assert_string_equal(s, "{\"model_version_status\":[{\"version\":\"7\",\"state\":\"LOADING\",\"status\":{"
                           "\"error_code\":\"PERMISSION_DENIED\",\"error_message\":\"key \\\"k\\\" not released; "
                           "retried\"}}]}");
    free(s);
    assert_int_equal(cl_serve_registry_versions(r, "affine", NULL, 0), ng - 1); /* not a loaded version */
    assert_int_equal(cl_serve_registry_set_loading(r, "affine", NULL, 0, &err), 0);
    assert_int_equal(cl_serve_registry_status(r, "affine", got, 4), ng - 1);
    assert_int_equal(cl_serve_registry_set_loading(r, "other", &waiting, 1, &err), 0);
    assert_int_equal(cl_serve_registry_status(r, "other", got, 4), 1); /* known only as loading */
    assert_null(cl_serve_registry_get(r, "other", 0, &err));
    s = cl_serve_json_error("bad \"thing\"\n");
    assert_string_equal(s, "{\"error\":\"bad \\\"thing\\\"\\u000a\"}");
    free(s);
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- image inputs */

static char *b64_encode(const uint8_t *in, size_t n)
{
    static const char a[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    char *out = malloc(4 * ((n + 2) / 3) + 1), *o = out;
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)in[i] << 16 | (i + 1 < n ? (uint32_t)in[i + 1] << 8 : 0) | (i + 2 < n ? in[i + 2] : 0);
        *o++ = a[v >> 18];
        *o++ = a[(v >> 12) & 63];
        *o++ = i + 1 < n ? a[(v >> 6) & 63] : '=';
        *o++ = i + 2 < n ? a[v & 63] : '=';
    }
    *o = '\0';
    return out;
}

/* Two test images for the vision model (4x4 grey): A is 4x4 with pixels 16*i, exactly what reaches the
 * model (/255); B is 8x8 whose 2x2 blocks average to 10*i, shrunk by the area filter to exactly that. */
static uint8_t *image_a(size_t *len)
{
    uint8_t px[16];
    for (int i = 0; i < 16; i++)
        px[i] = (uint8_t)(16 * i);
    return tm_png(px, 4, 4, 1, len);
}

static uint8_t *image_b(size_t *len)
{
    uint8_t px[64];
    for (int y = 0; y < 8; y++)
        for (int x = 0; x < 8; x++) /* block (y/2, x/2) holds 10*i-3, 10*i+3, 10*i+1, 10*i-1 */
            px[y * 8 + x] = (uint8_t)(10 * ((y / 2) * 4 + x / 2) + 10 + ((y % 2) * 2 + x % 2 == 0   ? -3
                                                                         : (y % 2) * 2 + x % 2 == 1 ? 3
                                                                         : (y % 2) * 2 + x % 2 == 2 ? 1
                                                                                                    : -1));
    return tm_png(px, 8, 8, 1, len);
}

static void expect_pixels(const float *got, int image)
{
    for (int i = 0; i < 16; i++) {
        float want = image == 0 ? (float)(16 * i / 255.0) : (float)((10 * i + 10) / 255.0);
        if (got[i] != want)
            fail_msg("image %d pixel %d: %.9g, want %.9g", image, i, got[i], want);
    }
}

/* A DT_STRING [n] tensor of the given byte strings. */
static void strings_tensor(cl_serve_tensor *t, const char *name, const uint8_t *const *data, const size_t *lens,
                           int64_t n)
{
    assert_int_equal(cl_serve_tensor_init_strings(t, name, 1, &n, lens, 0, NULL), 0);
    cl_serve_string *el = cl_serve_tensor_strings(t);
    for (int64_t i = 0; i < n; i++)
        memcpy((uint8_t *)el[i].data, data[i], lens[i]);
}

static void test_image_inputs(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);
    cl_serve_model *m = cl_serve_registry_get(r, "vision", 0, &err);
    assert_non_null(m);
    size_t la, lb;
    uint8_t *a = image_a(&la), *b = image_b(&lb);
    const uint8_t *imgs[5] = {a, b, a, b, a};
    size_t lens[5] = {la, lb, la, lb, la};

    /* two images in one request: decoded, shrunk, scaled, batched */
    cl_serve_tensor in;
    strings_tensor(&in, "image", imgs, lens, 2);
    cl_serve_tensor *out;
    size_t n;
    if (cl_serve_model_run(m, &in, 1, &out, &n, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(out[0].ndim, 2);
    assert_int_equal(out[0].dims[0], 2);
    expect_pixels(out[0].data, 0);
    expect_pixels((float *)out[0].data + 16, 1);
    cl_serve_tensors_free(out, n);
    cl_serve_tensor_clear(&in);

    /* floats of the model's own shape are still accepted */
    int64_t fd[4] = {1, 1, 4, 4};
    assert_int_equal(cl_serve_tensor_init(&in, "image", CL_SERVE_DT_FLOAT, 4, fd, 0, &err), 0);
    ((float *)in.data)[5] = 0.25f;
    assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n, &err), 0);
    assert_true(((float *)out[0].data)[5] == 0.25f);
    cl_serve_tensors_free(out, n);
    cl_serve_tensor_clear(&in);

    /* refusals, each CL_E_INVALID with a message a client can act on */
    uint8_t big[65 * 65] = {0};
    size_t lbig;
    uint8_t *bigpng = tm_png(big, 65, 65, 1, &lbig);
    const uint8_t *garbage = (const uint8_t *)"this is not an image";
    struct {
        const uint8_t *const *data;
        const size_t *lens;
        int64_t n;
        const char *msg;
    } bad[] = {
        {(const uint8_t *const[]){a, garbage}, (const size_t[]){la, 20}, 2,
         "input 'image', image 2 of 2: not a JPEG or PNG image (20 bytes)"},
        {(const uint8_t *const[]){a}, (const size_t[]){la / 2}, 1, "input 'image': corrupt PNG"},
        {(const uint8_t *const[]){bigpng}, (const size_t[]){lbig}, 1, "65x65, more than the 4096 pixels allowed"},
        {imgs, lens, 5, "5 images in one request, more than the 4 this model accepts (max_batch)"},
        {imgs, lens, 0, "the list of images is empty"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        strings_tensor(&in, "image", bad[i].data, bad[i].lens, bad[i].n);
        assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n, &err), -1);
        assert_int_equal(err.code, CL_E_INVALID);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
        cl_serve_tensor_clear(&in);
    }
    int64_t d2[2] = {1, 1};
    assert_int_equal(cl_serve_tensor_init_strings(&in, "image", 2, d2, &la, 0, &err), 0);
    assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "must come as a list (shape [N]), not a rank 2 tensor"));
    cl_serve_tensor_clear(&in);
    /* image bytes for an input without preprocessing */
    cl_serve_model *aff = cl_serve_registry_get(r, "affine", 0, &err);
    strings_tensor(&in, "x", imgs, lens, 1);
    assert_int_equal(cl_serve_model_run(aff, &in, 1, &out, &n, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "Expects arg[0] ('x') to be DT_FLOAT but DT_STRING is provided: this input does "
                                    "not take encoded images"));
    cl_serve_tensor_clear(&in);
    cl_serve_model_release(aff);
    /* a tensor of another dtype is refused as for any input */
    assert_int_equal(cl_serve_tensor_init(&in, "image", CL_SERVE_DT_INT32, 4, fd, 0, &err), 0);
    assert_int_equal(cl_serve_model_run(m, &in, 1, &out, &n, &err), -1);
    assert_non_null(strstr(err.msg, "Expects arg[0] ('image') to be DT_FLOAT but DT_INT32 is provided"));
    cl_serve_tensor_clear(&in);
    /* decoding on its own (what a batching caller uses): decoded[i] set only for image tensors */
    cl_serve_tensor two[2], dec[2] = {{0}};
    strings_tensor(&two[0], "image", imgs, lens, 3);
    assert_int_equal(cl_serve_tensor_init(&two[1], "other", CL_SERVE_DT_FLOAT, 1, fd, 0, &err), 0);
    assert_int_equal(cl_serve_model_decode_images(m, two, 2, dec, &err), 1);
    assert_int_equal(dec[0].dtype, CL_SERVE_DT_FLOAT);
    assert_true(dec[0].ndim == 4 && dec[0].dims[0] == 3 && dec[0].dims[1] == 1 && dec[0].dims[3] == 4);
    expect_pixels((float *)dec[0].data + 32, 0);
    assert_null(dec[1].data);
    cl_serve_tensor_clear(&dec[0]);
    cl_serve_tensor_clear(&two[0]);
    cl_serve_tensor_clear(&two[1]);

    /* metadata: the input shows as DT_STRING [-1] (gRPC and REST) */
    char *md = cl_serve_json_metadata(m);
    assert_non_null(strstr(md, "\"inputs\":{\"image\":{\"dtype\":\"DT_STRING\",\"tensor_shape\":{\"dim\":[{\"size\":"
                               "\"-1\",\"name\":\"\"}],\"unknown_rank\":false}"));
    free(md);
    Tensorflow__Serving__ModelSpec ms = TENSORFLOW__SERVING__MODEL_SPEC__INIT;
    ms.name = "vision";
    char *fields[] = {"signature_def"};
    Tensorflow__Serving__GetModelMetadataRequest mreq = TENSORFLOW__SERVING__GET_MODEL_METADATA_REQUEST__INIT;
    mreq.model_spec = &ms;
    mreq.n_metadata_field = 1;
    mreq.metadata_field = fields;
    uint8_t buf[256], *mo;
    size_t blen = protobuf_c_message_pack(&mreq.base, buf), mlen;
    cl_serve_status st = {0};
    assert_int_equal(cl_serve_pb_metadata(r, buf, blen, &mo, &mlen, &st), CL_SC_OK);
    Tensorflow__Serving__GetModelMetadataResponse *mr = tensorflow__serving__get_model_metadata_response__unpack(
        NULL, mlen, mo);
    Tensorflow__Serving__SignatureDefMap *sm = tensorflow__serving__signature_def_map__unpack(
        NULL, mr->metadata[0]->value->value.len, mr->metadata[0]->value->value.data);
    const Tensorflow__TensorInfo *ti = sm->signature_def[0]->value->inputs[0]->value;
    assert_int_equal(ti->dtype, TENSORFLOW__DATA_TYPE__DT_STRING);
    assert_int_equal(ti->tensor_shape->n_dim, 1);
    assert_int_equal(ti->tensor_shape->dim[0]->size, -1);
    tensorflow__serving__signature_def_map__free_unpacked(sm, NULL);
    tensorflow__serving__get_model_metadata_response__free_unpacked(mr, NULL);
    free(mo);

    /* gRPC: string_val */
    Tensorflow__TensorShapeProto__Dim dim = TENSORFLOW__TENSOR_SHAPE_PROTO__DIM__INIT;
    dim.size = 2;
    Tensorflow__TensorShapeProto__Dim *dims[1] = {&dim};
    Tensorflow__TensorShapeProto sh = TENSORFLOW__TENSOR_SHAPE_PROTO__INIT;
    sh.n_dim = 1;
    sh.dim = dims;
    ProtobufCBinaryData sv[2] = {{lb, b}, {la, a}};
    Tensorflow__TensorProto tp = TENSORFLOW__TENSOR_PROTO__INIT;
    tp.dtype = TENSORFLOW__DATA_TYPE__DT_STRING;
    tp.tensor_shape = &sh;
    tp.n_string_val = 2;
    tp.string_val = sv;
    size_t plen;
    uint8_t *msg = pack_predict("vision", 0, &tp, "image", &plen);
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    assert_int_equal(cl_serve_pb_predict_parse(r, msg, plen, 1 << 20, c), CL_SC_OK);
    assert_int_equal(c->inputs[0].dtype, CL_SERVE_DT_STRING);
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), 0);
    expect_pixels(c->outputs[0].data, 1);
    expect_pixels((float *)c->outputs[0].data + 16, 0);
    cl_serve_call_free(c);
    free(msg);
    /* the request size limit counts the strings */
    msg = pack_predict("vision", 0, &tp, "image", &plen);
    c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    assert_int_equal(cl_serve_pb_predict_parse(r, msg, plen, la + lb, c), CL_SC_INVALID_ARGUMENT);
    assert_non_null(strstr(c->st.msg, "above the limit"));
    cl_serve_call_free(c);
    free(msg);

    /* REST: row, named row, columnar and single-input columnar forms */
    char *ea = b64_encode(a, la), *eb = b64_encode(b, lb);
    char body[4096];
    /* '@' stands for image A's base64, then image B's */
    const char *forms[] = {"{\"instances\": [{\"b64\": \"@\"}, {\"b64\": \"@\"}]}",
                           "{\"instances\": [{\"image\": {\"b64\": \"@\"}}, {\"image\": {\"b64\": \"@\"}}]}",
                           "{\"inputs\": {\"image\": [{\"b64\": \"@\"}, {\"b64\": \"@\"}]}}",
                           "{\"inputs\": [{\"b64\": \"@\"}, {\"b64\": \"@\"}]}"};
    for (size_t f = 0; f < CL_ARRAY_LEN(forms); f++) {
        size_t o = 0, k = 0;
        for (const char *t = forms[f]; *t; t++) {
            const char *ins = *t == '@' ? (k++ ? eb : ea) : NULL;
            size_t l = ins ? strlen(ins) : 1;
            assert_true(o + l < sizeof body);
            memcpy(body + o, ins ? ins : t, l);
            o += l;
        }
        body[o] = '\0';
        c = json_call(r, "vision", body, CL_SC_OK);
        assert_int_equal(c->inputs[0].dtype, CL_SERVE_DT_STRING);
        assert_int_equal(c->inputs[0].ndim, 1);
        assert_int_equal(c->inputs[0].dims[0], 2);
        char *resp = json_run(c);
        expect_pixels(c->outputs[0].data, 0);
        expect_pixels((float *)c->outputs[0].data + 16, 1);
        assert_non_null(strstr(resp, f < 2 ? "{\"predictions\":[[0,0.0627451" : "{\"outputs\":[[0,0.0627451"));
        free(resp);
        cl_serve_call_free(c);
    }
    struct {
        const char *model, *body, *msg;
    } jbad[] = {
        {"vision", "{\"instances\": [{\"b64\": \"iVBO\"}, 1]}", "must all be {\"b64\": \"<base64 string>\"}"},
        {"vision", "{\"inputs\": [{\"b64\": \"iVBO\"}, 1]}", "must all be {\"b64\": \"<base64 string>\"}"},
        {"vision", "{\"inputs\": [1, {\"b64\": \"iVBO\"}]}", "{\"b64\": ...} among numbers"},
        {"vision", "{\"inputs\": [{\"b64\": 5}]}", "must all be {\"b64\": \"<base64 string>\"}"},
        {"vision", "{\"inputs\": [{\"b64\": \"iVBO\"}, {\"b64\": \"iVB\\nO\"}]}",
         "input 'image', value 2 of 2: base64: character (line break) 0x0a at position 3"},
        {"vision", "{\"inputs\": [\"iVBO\"]}", "found a string (binary values such as images go in {\"b64\": ...})"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(jbad); i++) {
        c = json_call(r, jbad[i].model, jbad[i].body, CL_SC_INVALID_ARGUMENT);
        if (!strstr(c->st.msg, jbad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, c->st.msg, jbad[i].msg);
        cl_serve_call_free(c);
    }
    /* parsed, then refused by the model: bytes that are not an image, and b64 for a float-only input */
    c = json_call(r, "vision", "{\"instances\": [{\"b64\": \"aGVsbG8=\"}]}", CL_SC_OK);
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), -1);
    assert_non_null(strstr(err.msg, "input 'image': not a JPEG or PNG image (5 bytes)"));
    cl_serve_call_free(c);
    c = json_call(r, "affine", "{\"instances\": [{\"b64\": \"aGVsbG8=\"}]}", CL_SC_OK);
    assert_int_equal(cl_serve_model_run(c->model, c->inputs, c->n_inputs, &c->outputs, &c->n_outputs, &err), -1);
    assert_non_null(strstr(err.msg, "DT_STRING is provided: this input does not take encoded images"));
    cl_serve_call_free(c);

    free(ea);
    free(eb);
    free(a);
    free(b);
    free(bigpng);
    cl_serve_model_release(m);
    cl_serve_registry_free(r);
}

/* A signature whose image preprocessing does not fit its input is refused when it is added. */
static void test_image_signature_checks(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    cl_image_spec rgb = tm_vision_image;
    rgb.pre.channels = 3;
    cl_image_spec nhwc = tm_vision_image;
    nhwc.pre.layout = CL_IMAGE_NHWC;
    struct {
        cl_serve_tensor_spec in;
        const char *msg;
    } bad[] = {
        {{"image", CL_SERVE_DT_FLOAT, 4, {-1, 1, 4, 4}, &rgb}, "the declared preprocessing (NCHW, 4x4, 3 channels) "
                                                               "makes [-1,3,4,4]"},
        {{"image", CL_SERVE_DT_FLOAT, 4, {-1, 1, 4, 4}, &nhwc}, "makes [-1,4,4,1]"},
        {{"image", CL_SERVE_DT_FLOAT, 4, {-1, 1, 8, 8}, &tm_vision_image}, "has shape [-1,1,8,8]"},
        {{"image", CL_SERVE_DT_FLOAT, 2, {-1, 16}, &tm_vision_image}, "makes rank 4 NCHW tensors [-1,1,4,4]"},
        {{"image", CL_SERVE_DT_DOUBLE, 4, {-1, 1, 4, 4}, &tm_vision_image}, "is DT_DOUBLE, but image preprocessing"},
    };
    static const cl_serve_tensor_spec out[] = {{"y", CL_SERVE_DT_FLOAT, 1, {-1}}};
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        cl_serve_signature sig = {"serving_default", NULL, &bad[i].in, 1, out, 1};
        cl_serve_backend be = {&sig, id_run, NULL, NULL};
        assert_int_equal(cl_serve_registry_add(r, "m", 1, &be, &err), -1);
        assert_int_equal(err.code, CL_E_INVALID);
        if (!strstr(err.msg, bad[i].msg))
            fail_msg("case %zu: '%s' lacks '%s'", i, err.msg, bad[i].msg);
    }
    /* dynamic dimensions accept any size; image preprocessing on an output is refused */
    cl_serve_tensor_spec dyn = {"image", CL_SERVE_DT_FLOAT, 4, {-1, -1, 4, -1}, &tm_vision_image};
    cl_serve_signature sig = {"serving_default", NULL, &dyn, 1, out, 1};
    cl_serve_backend be = {&sig, id_run, NULL, NULL};
    assert_int_equal(cl_serve_registry_add(r, "m", 1, &be, &err), 0);
    cl_serve_tensor_spec oi = {"y", CL_SERVE_DT_FLOAT, 4, {-1, 1, 4, 4}, &tm_vision_image};
    cl_serve_signature sig2 = {"serving_default", NULL, &dyn, 1, &oi, 1};
    cl_serve_backend be2 = {&sig2, id_run, NULL, NULL};
    assert_int_equal(cl_serve_registry_add(r, "m", 2, &be2, &err), -1);
    assert_non_null(strstr(err.msg, "output 'y' declares image preprocessing"));
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- gRPC framing */

static void test_grpc_framing(void **state)
{
    (void)state;
    cl_serve_status st;
    const uint8_t *msg;
    size_t len;
    uint8_t ok[] = {0, 0, 0, 0, 3, 'a', 'b', 'c'};
    assert_int_equal(cl_serve_grpc_unframe(ok, sizeof ok, 100, &msg, &len, &st), CL_SC_OK);
    assert_int_equal(len, 3);
    assert_memory_equal(msg, "abc", 3);
    uint8_t empty[] = {0, 0, 0, 0, 0};
    assert_int_equal(cl_serve_grpc_unframe(empty, sizeof empty, 100, &msg, &len, &st), CL_SC_OK);
    assert_int_equal(len, 0);
    assert_int_equal(cl_serve_grpc_unframe(ok, 4, 100, &msg, &len, &st), CL_SC_INVALID_ARGUMENT);
    assert_int_equal(cl_serve_grpc_unframe(ok, 7, 100, &msg, &len, &st), CL_SC_INVALID_ARGUMENT);
    uint8_t two[] = {0, 0, 0, 0, 1, 'a', 0, 0, 0, 0, 1, 'b'};
    assert_int_equal(cl_serve_grpc_unframe(two, sizeof two, 100, &msg, &len, &st), CL_SC_INVALID_ARGUMENT);
    assert_non_null(strstr(st.msg, "exactly one message"));
    uint8_t comp[] = {1, 0, 0, 0, 0};
    assert_int_equal(cl_serve_grpc_unframe(comp, sizeof comp, 100, &msg, &len, &st), CL_SC_UNIMPLEMENTED);
    uint8_t big[] = {0, 0, 0, 1, 0};
    assert_int_equal(cl_serve_grpc_unframe(big, sizeof big, 100, &msg, &len, &st), CL_SC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(st.msg, "256 bytes is above the server's limit of 100"));
    char enc[64];
    cl_serve_grpc_percent_encode("a b%\n\xc3\xa9", enc);
    assert_string_equal(enc, "a b%25%0A%C3%A9");
    assert_int_equal(cl_serve_code_http(CL_SC_NOT_FOUND), 404);
    assert_int_equal(cl_serve_code_http(CL_SC_INVALID_ARGUMENT), 400);
    assert_int_equal(cl_serve_code_http(CL_SC_UNAVAILABLE), 503);
    assert_int_equal(cl_serve_code_http(CL_SC_RESOURCE_EXHAUSTED), 429);
}

/* ---------------------------------------------------------------- batching */

static void test_batching_parse(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_batching b;
    unsigned w = 2, q = 64;
    const char *tf = "# TF Serving's format\nmax_batch_size { value: 16 }\nbatch_timeout_micros { value: 2500 }\n"
                     "num_batch_threads { value: 3 }\nmax_enqueued_batches { value: 100 }\n";
    assert_int_equal(cl_serve_batching_parse(tf, strlen(tf), &b, &w, &q, &err), 0);
    assert_int_equal(b.max_batch_size, 16);
    assert_int_equal(b.batch_timeout_us, 2500);
    assert_int_equal(w, 3);
    assert_int_equal(q, 100);
    /* defaults, and the short `field: N` form */
    assert_int_equal(cl_serve_batching_parse("", 0, &b, NULL, NULL, &err), 0);
    assert_int_equal(b.max_batch_size, 32);
    assert_int_equal(b.batch_timeout_us, 0);
    assert_int_equal(cl_serve_batching_parse("max_batch_size: 4", 17, &b, NULL, NULL, &err), 0);
    assert_int_equal(b.max_batch_size, 4);
    static const struct {
        const char *text, *msg;
    } bad[] = {
        {"max_batch_size { value: 0 }", "must be 1..4096"},
        {"max_batch_size { value: -1 }", "needs a whole number"},
        {"max_batch_size { value: 8 ", "expected '}'"},
        {"max_batch_size 8", "expected '{ value: N }'"},
        {"max_batch_size { valu: 8 }", "expected 'value:'"},
        {"max_batch_size: 8\nmax_batch_size: 9", "given twice"},
        {"\n\npad_variable_length_inputs: true", "line 3: 'pad_variable_length_inputs' is not supported"},
        {"allowed_batch_sizes: 8", "not supported"},
        {"batch_timeout_micros: 99999999", "above 10 s"},
        {"num_batch_threads: 0", "num_batch_threads must be 1..1024"},
        {"{", "expected a field name"},
        {"max_batch_size: 12345678901234567890", "needs a whole number"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        cl_err e = {0};
        assert_int_equal(cl_serve_batching_parse(bad[i].text, strlen(bad[i].text), &b, &w, &q, &e), -1);
        if (!strstr(e.msg, bad[i].msg))
            fail_msg("'%s': got '%s', want '%s'", bad[i].text, e.msg, bad[i].msg);
    }
}

/* Inputs put in signature order in place, for the batching pool. */
static void test_monitoring_parse(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_monitoring m;
    /* TF Serving's documented form */
    const char *tf = "prometheus_config {\n  enable: true,\n  path: \"/monitoring/prometheus/metrics\"\n}\n";
    assert_int_equal(cl_serve_monitoring_parse(tf, strlen(tf), &m, &err), 0);
    assert_string_equal(cl_serve_monitoring_path(&m), "/monitoring/prometheus/metrics");
    const char *custom = "# ours\nprometheus_config: < path: '/a' \"/b\" ; enable: True >";
    assert_int_equal(cl_serve_monitoring_parse(custom, strlen(custom), &m, &err), 0);
    assert_string_equal(cl_serve_monitoring_path(&m), "/a/b");
    /* as in TF Serving: an empty path is the default one; no `enable: true`, no endpoint */
    const char *empty_path = "prometheus_config { enable: 1 path: \"\" }";
    assert_int_equal(cl_serve_monitoring_parse(empty_path, strlen(empty_path), &m, &err), 0);
    assert_string_equal(cl_serve_monitoring_path(&m), CL_SERVE_METRICS_PATH);
    const char *off[] = {"", "# nothing\n", "prometheus_config {}", "prometheus_config { path: \"/m\" }",
                         "prometheus_config { enable: false path: \"/m\" }"};
    for (size_t i = 0; i < CL_ARRAY_LEN(off); i++) {
        m.off = false;
        assert_int_equal(cl_serve_monitoring_parse(off[i], strlen(off[i]), &m, &err), 0);
        assert_null(cl_serve_monitoring_path(&m));
    }
    /* the zero value (no file) is cloister's default: served */
    cl_serve_monitoring zero = {0};
    assert_string_equal(cl_serve_monitoring_path(&zero), CL_SERVE_METRICS_PATH);
    char longp[400] = "prometheus_config { enable: true path: \"/";
    memset(longp + strlen(longp), 'a', 256);
    strcat(longp, "\" }");
    char exact[400] = "prometheus_config { enable: true path: \"/";
    memset(exact + strlen(exact), 'a', 255);
    strcat(exact, "\" }");
    assert_int_equal(cl_serve_monitoring_parse(exact, strlen(exact), &m, &err), 0);
    assert_int_equal(strlen(cl_serve_monitoring_path(&m)), 256);
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"prometheus_config { enable: true path: \"metrics\" }", "must start with '/'"},
        {"prometheus_config { enable: true path: \"/v1/models/m\" }", "under /v1/"},
        {"prometheus_config { enable: true path: \"/v1\" }", "under /v1/"},
        {"prometheus_config { enable: true path: \"/a b\" }", "0x20"},
        {"prometheus_config { enable: true path: \"/a?b\" }", "0x3f"},
        {"prometheus_config { enable: true path: \"/a%2f\" }", "0x25"},
        {"prometheus_config { enable: true path: \"/a\\tb\" }", "0x09"},
        {"prometheus_config { enable: true path: \"/\xc3\xa9\" }", "0xc3"},
        {"prometheus_config { enable: true path: \"/a\n\" }", "unterminated string"},
        {"prometheus_config { enable: true path: /a }", "unexpected character '/'"},
        {"prometheus_config { enable: yes }", "true or false"},
        {"prometheus_config { enable: true enable: false }", "given twice"},
        {"prometheus_config { enable: true }\nprometheus_config { }", "line 2: field 'prometheus_config' given twice"},
        {"prometheus_config { enable: true port: 9090 }", "unknown field 'port'"},
        {"prometheus_config { enable: true", "found end of input"},
        {"prometheus_config { enable: true >", "expected '}' to close"},
        {"prometheus_config enable: true", "expected '{'"},
        {"\n\nlogging_config { }", "line 3: unknown field 'logging_config'"},
        {"prometheus_config { enable: true }}", "expected a field name"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        memset(&err, 0, sizeof err);
        if (cl_serve_monitoring_parse(bad[i].text, strlen(bad[i].text), &m, &err) == 0)
            fail_msg("accepted: %s", bad[i].text);
        if (!strstr(err.msg, bad[i].why))
            fail_msg("%s: '%s' does not say '%s'", bad[i].text, err.msg, bad[i].why);
    }
    memset(&err, 0, sizeof err);
    assert_int_not_equal(cl_serve_monitoring_parse(longp, strlen(longp), &m, &err), 0);
    assert_non_null(strstr(err.msg, "longer than 256"));
    assert_int_not_equal(cl_serve_monitoring_parse("prometheus_config {\0}", 20, &m, &err), 0);
    assert_non_null(strstr(err.msg, "unexpected byte 0x00"));
}

static void test_order_inputs(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);
    cl_serve_model *m = cl_serve_registry_get(r, "adder", 0, &err);
    cl_serve_tensor in[2];
    int64_t d = 2;
    assert_int_equal(cl_serve_tensor_init(&in[0], "b", CL_SERVE_DT_INT32, 1, &d, 0, &err), 0);
    assert_int_equal(cl_serve_tensor_init(&in[1], "a", CL_SERVE_DT_INT32, 1, &d, 0, &err), 0);
    assert_int_equal(cl_serve_model_order_inputs(m, in, 2, &err), 0);
    assert_string_equal(in[0].name, "a");
    assert_string_equal(in[1].name, "b");
    assert_int_equal(cl_serve_model_order_inputs(m, in, 1, &err), -1);
    in[1].dtype = CL_SERVE_DT_FLOAT;
    assert_int_equal(cl_serve_model_order_inputs(m, in, 2, &err), -1);
    assert_non_null(strstr(err.msg, "DT_INT32 but DT_FLOAT"));
    in[1].dtype = CL_SERVE_DT_INT32;
    cl_serve_tensor_clear(&in[0]);
    cl_serve_tensor_clear(&in[1]);
    cl_serve_model_release(m);
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- running calls on the loop thread */

/* Like the identity model, but first burns x[0] ms of this thread's CPU time (the inline decision
 * measures CPU time, so a sleeping model would count as cheap). */
static int spin_run(void *ctx, const cl_serve_tensor *in, size_t n, cl_serve_tensor **out, size_t *n_out, cl_err *err)
{
    struct timespec t0, t;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t0);
    double ms = ((const float *)in[0].data)[0];
    do
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
    while ((double)(t.tv_sec - t0.tv_sec) * 1e3 + (double)(t.tv_nsec - t0.tv_nsec) / 1e6 < ms);
    return id_run(ctx, in, n, out, n_out, err);
}

/* A call on the latest version of `model` (the call holds its own reference) with input x = [v]. */
static cl_serve_call *float_call(cl_serve_registry *r, const char *model, float v)
{
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    int64_t d = 1;
    cl_err err = {0};
    assert_non_null(c->model = cl_serve_registry_get(r, model, 0, &err));
    c->inputs = calloc(1, sizeof *c->inputs);
    c->n_inputs = 1;
    assert_int_equal(cl_serve_tensor_init(&c->inputs[0], "x", CL_SERVE_DT_FLOAT, 1, &d, 0, &err), 0);
    ((float *)c->inputs[0].data)[0] = v;
    c->done = cl_serve_call_free; /* the pool hands finished calls back through done */
    return c;
}

/* cl_serve_pool_run_inline runs a call in the caller's thread only when that is cheap: the model has a
 * measured typical run time within the limit, batching is off, no images need decoding. Calls queued
 * for the workers do not prevent it. */
static void test_pool_inline(void **state)
{
    (void)state;
    const uint64_t second = 1000000000ull;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    assert_int_equal(tm_register_all(r, 1, false, &err), 0);
    cl_serve_backend b = {&id_sig, id_run, NULL, (void *)1}, spin = {&id_sig, spin_run, NULL, (void *)1};
    assert_int_equal(cl_serve_registry_add(r, "id", 1, &b, &err), 0);
    assert_int_equal(cl_serve_registry_add(r, "spin", 1, &spin, &err), 0);
    struct event_base *base = event_base_new();
    cl_serve_pool *p = cl_serve_pool_new(base, 1, 8, NULL, &err);
    assert_non_null(p);

    /* not measured yet: never inline, however generous the limit */
    cl_serve_call *c = float_call(r, "id", 2.0f);
    assert_int_equal(cl_serve_model_typical_ns(c->model), UINT64_MAX);
    assert_false(cl_serve_pool_run_inline(p, c, second));
    assert_null(c->outputs);
    for (int i = 0; i < 7; i++)
        run_id(c->model);
    assert_int_equal(cl_serve_model_typical_ns(c->model), UINT64_MAX); /* 7 runs are not enough */
    run_id(c->model);
    uint64_t typical = cl_serve_model_typical_ns(c->model);
    assert_true(typical > 0 && typical < second);
    assert_false(cl_serve_pool_run_inline(p, c, 0)); /* 0: never */
    assert_true(cl_serve_pool_run_inline(p, c, second));
    assert_int_equal(c->st.code, CL_SC_OK);
    assert_int_equal(c->n_outputs, 1);
    assert_float_equal(((float *)c->outputs[0].data)[0], 3.0f, 0); /* x + version */
    cl_serve_call_free(c);

    /* a model slower than the limit goes to the workers: spin computes for x ms */
    c = float_call(r, "spin", 2.0f);
    for (int i = 0; i < 8; i++) {
        cl_serve_tensor *out;
        size_t n;
        assert_int_equal(cl_serve_model_run(c->model, c->inputs, 1, &out, &n, &err), 0);
        cl_serve_tensors_free(out, n);
    }
    assert_true(cl_serve_model_typical_ns(c->model) >= 2000000u);
    assert_false(cl_serve_pool_run_inline(p, c, 50000));
    assert_true(cl_serve_pool_run_inline(p, c, second));
    cl_serve_call_free(c);

    /* encoded images are not decoded on the loop thread */
    c = float_call(r, "id", 1.0f);
    c->inputs[0].dtype = CL_SERVE_DT_STRING;
    assert_false(cl_serve_pool_run_inline(p, c, second));
    c->inputs[0].dtype = CL_SERVE_DT_FLOAT;
    cl_serve_call_free(c);

    /* a call waiting in the queue does not hold it back: the worker busy for 300 ms, one call queued */
    assert_int_equal(cl_serve_pool_submit(p, float_call(r, "sleepy", 300.0f)), 0);
    assert_int_equal(cl_serve_pool_submit(p, float_call(r, "sleepy", 1.0f)), 0);
    for (int i = 0; i < 200 && cl_serve_pool_queued(p) != 1; i++) { /* until the worker took the first */
        struct timespec ts = {0, 10000000};
        nanosleep(&ts, NULL);
    }
    assert_int_equal(cl_serve_pool_queued(p), 1);
    c = float_call(r, "id", 1.0f);
    assert_true(cl_serve_pool_run_inline(p, c, second));
    assert_int_equal(c->st.code, CL_SC_OK);
    assert_int_equal(cl_serve_pool_queued(p), 1);
    cl_serve_call_free(c);
    cl_serve_pool_free(p); /* waits for both and frees them through done */

    /* with batching, calls always go through the pool (they may join a batch) */
    cl_serve_batching bat = {.max_batch_size = 8};
    p = cl_serve_pool_new(base, 1, 8, &bat, &err);
    assert_non_null(p);
    c = float_call(r, "id", 1.0f);
    assert_false(cl_serve_pool_run_inline(p, c, second));
    cl_serve_call_free(c);
    cl_serve_pool_free(p);

    event_base_free(base);
    cl_serve_registry_free(r);
}

/* ---- memory limits (pool.c): a backend that says each byte of input needs 1000 bytes of working memory
 * and keeps count of the rows it was given per run: y[i] = the sum of row i of x [-1,4] (sleeping x[0][0]
 * milliseconds first, so a call can be kept running). */
static const cl_serve_tensor_spec rows_in[] = {{"x", CL_SERVE_DT_FLOAT, 2, {-1, 4}}};
static const cl_serve_tensor_spec rows_out[] = {{"y", CL_SERVE_DT_FLOAT, 1, {-1}}};
static const cl_serve_signature rows_sig = {"serving_default", "tensorflow/serving/predict", rows_in, 1, rows_out, 1};
static atomic_int rows_max, rows_total, rows_runs;

static int rows_run(void *ctx, const cl_serve_tensor *in, size_t n, cl_serve_tensor **out, size_t *n_out, cl_err *err)
{
    (void)ctx;
    (void)n;
    int64_t r = in[0].dims[0];
    const float *x = in[0].data;
    if (x[0] > 0) {
        struct timespec ts = {0, (long)x[0] * 1000000L};
        nanosleep(&ts, NULL);
    }
    int prev = atomic_load(&rows_max);
    while (r > prev && !atomic_compare_exchange_weak(&rows_max, &prev, (int)r)) {
    }
    atomic_fetch_add(&rows_total, (int)r);
    atomic_fetch_add(&rows_runs, 1);
    *out = calloc(1, sizeof **out);
    if (!*out || cl_serve_tensor_init(*out, "y", CL_SERVE_DT_FLOAT, 1, &r, 0, err) != 0) {
        free(*out);
        return -1;
    }
    for (int64_t i = 0; i < r; i++)
        ((float *)(*out)->data)[i] = x[4 * i] + x[4 * i + 1] + x[4 * i + 2] + x[4 * i + 3];
    *n_out = 1;
    return 0;
}

static size_t rows_memory(void *ctx, size_t input_bytes)
{
    (void)ctx;
    return 1000 * input_bytes;
}

static cl_serve_call *rows_call(cl_serve_registry *r, int64_t rows, float sleep_ms)
{
    cl_serve_call *c = cl_serve_call_new(NULL, CL_API_GRPC, CL_RPC_PREDICT);
    int64_t d[2] = {rows, 4};
    cl_err err = {0};
    assert_non_null(c->model = cl_serve_registry_get(r, "rows", 0, &err));
    c->inputs = calloc(1, sizeof *c->inputs);
    c->n_inputs = 1;
    assert_int_equal(cl_serve_tensor_init(&c->inputs[0], "x", CL_SERVE_DT_FLOAT, 2, d, 0, &err), 0);
    float *x = c->inputs[0].data;
    for (int64_t i = 0; i < 4 * rows; i++)
        x[i] = (float)i;
    x[0] = sleep_ms;
    c->done = cl_serve_call_free;
    return c;
}

static cl_serve_call *done_call;
static void keep_done(cl_serve_call *c) { done_call = c; }

/* Runs the loop until a call submitted with done = keep_done comes back. */
static cl_serve_call *wait_done(struct event_base *base)
{
    done_call = NULL;
    for (int i = 0; i < 1000 && !done_call; i++)
        event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK), nanosleep(&(struct timespec){0, 2000000}, NULL);
    assert_non_null(done_call);
    return done_call;
}

/* A call above the per-request limit runs in pieces (its rows in order), one that cannot fit a row is
 * refused, and one beyond the total budget is refused until the memory held is given back. */
static void test_pool_memory(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_registry *r = cl_serve_registry_new(&err);
    cl_serve_backend b = {&rows_sig, rows_run, NULL, NULL, rows_memory};
    assert_int_equal(cl_serve_registry_add(r, "rows", 1, &b, &err), 0);
    struct event_base *base = event_base_new();
    cl_serve_pool *p = cl_serve_pool_new(base, 1, 8, NULL, &err);
    assert_non_null(p);
    /* 64 KiB per request: 40 rows hold 640 bytes of input and 160 of output, and a run of k rows needs
     * 16000 k bytes: 4 rows at a time */
    cl_serve_pool_set_memory(p, 64 << 10, 100 << 10);
    cl_serve_call *c = rows_call(r, 40, 0);
    c->done = keep_done;
    assert_int_equal(cl_serve_pool_submit(p, c), 0);
    assert_int_equal(c->run_rows, 4);
    c = wait_done(base);
    assert_int_equal(c->st.code, CL_SC_OK);
    assert_int_equal(atomic_load(&rows_max), 4);
    assert_int_equal(atomic_load(&rows_total), 40);
    assert_int_equal(atomic_load(&rows_runs), 10);
    assert_int_equal(c->n_outputs, 1);
    assert_int_equal(c->outputs[0].ndim, 1);
    assert_int_equal(c->outputs[0].dims[0], 40);
    for (int i = 0; i < 40; i++) /* row i of x is 4i .. 4i+3 (x[0] = 0 here) */
        assert_float_equal(((float *)c->outputs[0].data)[i], (float)(16 * i + 6), 0);
    assert_int_equal(c->n_inputs, 1);
    assert_null(c->inputs[0].data); /* freed when the run ended */
    assert_int_equal(cl_serve_pool_memory_held(p), 0);
    cl_serve_call_free(c);

    /* 8 KiB per request: not even one row (16000 bytes) fits */
    cl_serve_pool_set_memory(p, 8 << 10, 100 << 10);
    c = rows_call(r, 3, 0);
    assert_int_equal(cl_serve_pool_submit(p, c), -1);
    assert_int_equal(c->st.code, CL_SC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(c->st.msg, "for one row"));
    assert_non_null(strstr(c->st.msg, "--max_request_memory_mb"));
    cl_serve_call_free(c);
    uint64_t refused[2];
    cl_serve_pool_memory_refused(p, refused);
    assert_int_equal(refused[0], 1);

    /* 80 KiB in all: a call holding ~48 KiB runs for 300 ms; another of the same size is refused
     * meanwhile, and admitted once the first is done */
    cl_serve_pool_set_memory(p, 64 << 10, 80 << 10);
    c = rows_call(r, 3, 300.0f);
    c->done = keep_done;
    assert_int_equal(cl_serve_pool_submit(p, c), 0);
    size_t held = cl_serve_pool_memory_held(p);
    assert_true(held > 40000 && held <= 64 << 10);
    cl_serve_call *d = rows_call(r, 3, 0);
    assert_int_equal(cl_serve_pool_submit(p, d), -1);
    assert_int_equal(d->st.code, CL_SC_RESOURCE_EXHAUSTED);
    assert_non_null(strstr(d->st.msg, "--memory_budget_mb"));
    cl_serve_call_free(d);
    cl_serve_pool_memory_refused(p, refused);
    assert_int_equal(refused[1], 1);
    assert_true(cl_serve_pool_memory_peak(p, false) >= held);
    c = wait_done(base);
    assert_int_equal(c->st.code, CL_SC_OK);
    cl_serve_call_free(c);
    assert_int_equal(cl_serve_pool_memory_held(p), 0);
    d = rows_call(r, 3, 0);
    d->done = keep_done;
    assert_int_equal(cl_serve_pool_submit(p, d), 0);
    d = wait_done(base);
    assert_int_equal(d->st.code, CL_SC_OK);
    cl_serve_call_free(d);

    /* a full queue says so, and gives the share back */
    cl_serve_pool_free(p);
    p = cl_serve_pool_new(base, 1, 1, NULL, &err);
    cl_serve_pool_set_memory(p, 64 << 10, 1 << 20);
    assert_int_equal(cl_serve_pool_submit(p, rows_call(r, 1, 200.0f)), 0);
    for (int i = 0; i < 200 && cl_serve_pool_queued(p); i++)
        nanosleep(&(struct timespec){0, 5000000}, NULL);
    assert_int_equal(cl_serve_pool_submit(p, rows_call(r, 1, 0)), 0);
    held = cl_serve_pool_memory_held(p);
    c = rows_call(r, 1, 0);
    assert_int_equal(cl_serve_pool_submit(p, c), -1);
    assert_int_equal(c->st.code, CL_SC_UNAVAILABLE);
    assert_int_equal(cl_serve_pool_memory_held(p), held);
    cl_serve_call_free(c);
    cl_serve_pool_free(p);
    event_base_free(base);
    cl_serve_registry_free(r);
}

/* ---------------------------------------------------------------- metrics and the access log */

/* cl_serve_request_done on a server that never listens: the metrics it renders (counts by model and
 * status, latency histograms by model with cumulative buckets from 0.1 ms, a model that is not served
 * not a label of its own, label values escaped and made UTF-8, full tables counted as dropped, build
 * info) and the access-log line it writes (every field, none for what is not known). */
static void test_metrics_and_access_log(void **state)
{
    (void)state;
    char dir[] = "/tmp/cloister-metrics-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/access.log", dir);
    cl_err err = {0};
    cl_log_sink *sink = cl_log_sink_open(path, &err);
    assert_non_null(sink);
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    assert_non_null(reg);
    cl_serve_config cfg = {.host = "127.0.0.1", .grpc_port = 0, .rest_port = 0, .allow_plaintext = true,
                           .listen_in_run = true, .access_log = sink, .build_version = "1.2.3",
                           .build_engine_isa = "avx2", .build_evidence = "sim"};
    cl_serve_server *srv = cl_serve_server_new(&cfg, reg, &err);
    if (!srv)
        fail_msg("server: %s", err.msg);
    uint64_t now = cl_now_ns() - 200000; /* every request took at least 0.2 ms */
    cl_serve_request_info ok = {.api = CL_API_REST, .rpc = CL_RPC_PREDICT, .method = "POST",
                                .path = "/v1/models/m:predict", .model = "m", .version = 3, .code = CL_SC_OK,
                                .http_status = 200, .start_ns = now, .bytes_in = 10, .bytes_out = 20,
                                .peer = "127.0.0.1:9", .client = "CN=c"};
    cl_serve_request_done(srv, &ok);
    ok.code = CL_SC_INVALID_ARGUMENT;
    ok.http_status = 400;
    cl_serve_request_done(srv, &ok);
    cl_serve_request_info nf = {.api = CL_API_GRPC, .rpc = CL_RPC_PREDICT, .model = "x\"y\nz\xff", .code = CL_SC_NOT_FOUND,
                                .start_ns = now};
    cl_serve_request_done(srv, &nf);
    cl_serve_request_info scrape = {.api = CL_API_REST, .rpc = CL_RPC_COUNT, .method = "GET",
                                    .path = "/monitoring/prometheus/metrics", .http_status = 200, .start_ns = now};
    cl_serve_request_done(srv, &scrape);
    /* m answered OK over gRPC too, Predict and Classify: TF Serving's count sums APIs and entrypoints */
    ok.code = CL_SC_OK;
    ok.api = CL_API_GRPC;
    cl_serve_request_done(srv, &ok);
    ok.rpc = CL_RPC_CLASSIFY;
    cl_serve_request_done(srv, &ok);
    char name[32];
    for (int i = 0; i < 300; i++) { /* beyond both tables */
        snprintf(name, sizeof name, "model-%d", i);
        cl_serve_request_info r = {.api = CL_API_REST, .rpc = CL_RPC_STATUS, .model = name, .start_ns = now};
        cl_serve_request_done(srv, &r);
    }
    char *m = cl_serve_metrics_render(srv);
    assert_non_null(m);
    assert_non_null(strstr(m, "cloister_serve_requests_total{model_name=\"m\",API=\"predict\",entrypoint=\"REST\","
                              "status=\"OK\"} 1\n"));
    assert_non_null(strstr(m, "status=\"INVALID_ARGUMENT\"} 1\n"));
    /* the hostile name: escaped, and the stray byte made '?' */
    assert_non_null(strstr(m, "{model_name=\"x\\\"y\\nz?\",API=\"predict\",entrypoint=\"GRPC\",status=\"NOT_FOUND\"} 1\n"));
    /* both requests of m in one histogram: not within 0.1 ms, within 10 s */
    assert_non_null(strstr(m, "cloister_serve_request_latency_seconds_bucket{model_name=\"m\",API=\"predict\","
                              "entrypoint=\"REST\",le=\"0.0001\"} 0\n"));
    assert_non_null(strstr(m, "le=\"10\"} 2\n"));
    assert_non_null(strstr(m, "cloister_serve_request_latency_seconds_count{model_name=\"m\",API=\"predict\","
                              "entrypoint=\"REST\"} 2\n"));
    /* the unknown model counts under model_name="" in the histograms */
    assert_non_null(strstr(m, "cloister_serve_request_latency_seconds_count{model_name=\"\",API=\"predict\","
                              "entrypoint=\"GRPC\"} 1\n"));
    assert_null(strstr(m, "request_latency_count{model_name=\"x"));
    /* TF Serving's series: the count by model_name and status only (Predict, Classify and Regress over
     * both APIs; status calls are not counted), the hostile name escaped the same way */
    assert_non_null(strstr(m, "# TYPE :tensorflow:serving:request_count counter\n"));
    assert_non_null(strstr(m, "\n:tensorflow:serving:request_count{model_name=\"m\",status=\"OK\"} 3\n"));
    assert_non_null(strstr(m, "\n:tensorflow:serving:request_count{model_name=\"m\",status=\"INVALID_ARGUMENT\"} 1\n"));
    assert_non_null(strstr(m, "\n:tensorflow:serving:request_count{model_name=\"x\\\"y\\nz?\",status=\"NOT_FOUND\"} 1\n"));
    assert_null(strstr(m, ":tensorflow:serving:request_count{model_name=\"model-"));
    const char *once = strstr(m, ":tensorflow:serving:request_count{model_name=\"m\",status=\"OK\"}");
    assert_null(strstr(once + 1, ":tensorflow:serving:request_count{model_name=\"m\",status=\"OK\"}"));
    /* ... and its latency: successful requests only, microseconds, TF's bucket bounds from 10 us */
    assert_non_null(strstr(m, "# TYPE :tensorflow:serving:request_latency histogram\n"));
    assert_non_null(strstr(m, "\n:tensorflow:serving:request_latency_bucket{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\",le=\"10\"} 0\n"
                              ":tensorflow:serving:request_latency_bucket{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\",le=\"18\"} 0\n"
                              ":tensorflow:serving:request_latency_bucket{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\",le=\"32.4\"} 0\n"));
    assert_non_null(strstr(m, ":tensorflow:serving:request_latency_bucket{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\",le=\"1.47476e+09\"} 1\n"
                              ":tensorflow:serving:request_latency_bucket{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\",le=\"+Inf\"} 1\n"));
    assert_non_null(strstr(m, ":tensorflow:serving:request_latency_count{model_name=\"m\",API=\"Predict\","
                              "entrypoint=\"REST\"} 1\n"));
    assert_non_null(strstr(m, ":tensorflow:serving:request_latency_count{model_name=\"m\",API=\"Classify\","
                              "entrypoint=\"GRPC\"} 1\n"));
    const char *sum = strstr(m, ":tensorflow:serving:request_latency_sum{model_name=\"m\",API=\"Predict\","
                                "entrypoint=\"REST\"} ");
    assert_non_null(sum);
    assert_true(strtod(strchr(sum, '}') + 2, NULL) >= 200); /* at least the 0.2 ms, in microseconds */
    assert_null(strstr(m, "request_latency_count{model_name=\"x"));
    /* the scrape is not counted; the tables are full: 256 request-count series (5 used before the
     * 300 names: 49 dropped), 64 latency series (4 before: 240 dropped) */
    assert_null(strstr(m, "API=\"metrics\""));
    assert_non_null(strstr(m, "cloister_serve_metric_series_dropped_total{metric=\"request_count\"} 49\n"));
    assert_non_null(strstr(m, "cloister_serve_metric_series_dropped_total{metric=\"request_latency\"} 240\n"));
    assert_non_null(strstr(m, "cloister_build_info{version=\"1.2.3\",engine_isa=\"avx2\",evidence_provider=\"sim\"} 1\n"));
    assert_non_null(strstr(m, "\nprocess_threads "));
    assert_non_null(strstr(m, "\nprocess_open_fds "));
    free(m);
    cl_serve_server_free(srv);
    cl_serve_registry_free(reg);
    cl_log_sink_close(sink);

    uint8_t *log;
    size_t len;
    assert_int_equal(cl_file_read(path, 1 << 20, &log, &len, &err), 0);
    size_t lines = 0;
    for (size_t i = 0; i < len; i++)
        lines += log[i] == '\n';
    assert_int_equal(lines, 306); /* one a request, the scrape included */
    /* the first line, in the text format (the process default here) */
    char *first = strtok((char *)log, "\n");
    assert_non_null(first);
    if (!strstr(first, "info  [access] request api=rest method=POST path=/v1/models/m:predict rpc=predict model=m "
                       "version=3 status=OK http_status=200 latency_ms=") ||
        !strstr(first, " bytes_in=10 bytes_out=20 peer=127.0.0.1:9 client=\"CN=c\""))
        fail_msg("access line: %s", first);
    strtok(NULL, "\n");
    char *third = strtok(NULL, "\n");
    /* nothing unknown is made up: no method, path, version, HTTP status, peer or client */
    if (!strstr(third, "request api=grpc rpc=predict model=\"x\\\"y\\nz\\xff\" status=NOT_FOUND latency_ms=") ||
        strstr(third, "version=") || strstr(third, "peer=") || strstr(third, "http_status="))
        fail_msg("access line: %s", third);
    char *fourth = strtok(NULL, "\n");
    if (!strstr(fourth, "method=GET path=/monitoring/prometheus/metrics status=OK http_status=200") ||
        strstr(fourth, "rpc="))
        fail_msg("access line: %s", fourth);
    free(log);
    unlink(path);
    rmdir(dir);
}

int main(void)
{
    cl_secmem_set_require_lock(false);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_image_inputs),      cmocka_unit_test(test_image_signature_checks),
        cmocka_unit_test(test_ssl_config_parse),  cmocka_unit_test(test_ssl_config_from_tls_init),
        cmocka_unit_test(test_registry),          cmocka_unit_test(test_model_run_checks),
        cmocka_unit_test(test_pb_predict),        cmocka_unit_test(test_pb_metadata_status),
        cmocka_unit_test(test_json),              cmocka_unit_test(test_grpc_framing),
        cmocka_unit_test(test_batching_parse),    cmocka_unit_test(test_order_inputs),
        cmocka_unit_test(test_pool_inline),       cmocka_unit_test(test_pool_memory),
        cmocka_unit_test(test_metrics_and_access_log),
        cmocka_unit_test(test_monitoring_parse),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
