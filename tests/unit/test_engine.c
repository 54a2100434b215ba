/* test_engine.c — unit tests of the inference engine: the loader's validation (malformed,
 * truncated, hostile and unsupported models get errors, never crashes; every attribute of the wrong
 * type or out of range is refused at load naming node and attribute), the signature, execution
 * of small graphs against values computed here, Conv+BN+Relu fusion against a naive convolution,
 * dynamic batch, concurrent runs on one model, and the .npy reader/writer.
 * Models are built in memory with the protobuf-c code generated from onnx.proto.
 */
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

#include "cloister/engine.h"
#include "engine/dnnl/dnnl.h" /* a Conv's primitive cache (test_load_constants_memory) */
#include "engine/internal.h"    /* the operator table (test_op_table) */
#include "onnx.pb-c.h"

#include "onnx_build.h"

static int load(const uint8_t *buf, size_t len, cl_engine_model **m, cl_err *err)
{
    return cl_engine_load(buf, len, &(cl_engine_options){.threads = 2}, m, err);
}

/* Packs (at `opset`), loads (expecting failure with `code` and `needle` in the message) and cleans up. */
static void expect_load_error_at(mb *m, int64_t opset, cl_status code, const char *needle)
{
    size_t len;
    uint8_t *buf = mb_pack(m, opset, &len);
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), -1);
    assert_null(model);
    if (err.code != code || !strstr(err.msg, needle))
        fail_msg("expected %s with '%s', got %s: %s", cl_status_name(code), needle, cl_status_name(err.code), err.msg);
    free(buf);
    arena_free();
}

static void expect_load_error(mb *m, cl_status code, const char *needle)
{
    expect_load_error_at(m, 13, code, needle);
}

/* A model: y = Relu(Add(x[N,3], c[3])) */
static uint8_t *add_relu_model(size_t *len)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {-1, 3}, cd[] = {3};
    const float c[] = {1.0f, -2.0f, 0.5f};
    mb_input(&m, "x", 1, 2, xd);
    mb_output(&m, "y", 1, 2, xd);
    mb_init_tensor(&m, "c", 1, 1, cd, c, sizeof c);
    mb_node(&m, "Add", "add", "x,c", "s");
    mb_node(&m, "Relu", "relu", "s", "y");
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

/* ---------------------------------------------------------------- loader validation */

static void test_load_garbage(void **state)
{
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load((const uint8_t *)"", 0, &m, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    uint8_t junk[4096];
    for (uint64_t seed = 1; seed <= 64; seed++) {
        tu_fill_random(junk, sizeof junk, seed);
        cl_err_clear(&err);
        assert_int_equal(load(junk, (size_t)(seed * 61) % sizeof junk + 1, &m, &err), -1);
        assert_null(m);
        assert_true(err.code == CL_E_FORMAT || err.code == CL_E_UNSUPPORTED || err.code == CL_E_VERSION);
    }
}

/* Every prefix of a valid model either loads or fails cleanly; the whole model loads. */
static void test_load_truncations(void **state)
{
    size_t len;
    uint8_t *buf = add_relu_model(&len);
    int loaded = 0;
    for (size_t cut = 0; cut <= len; cut++) {
        uint8_t *copy = malloc(cut ? cut : 1);
        memcpy(copy, buf, cut);
        cl_err err = {0};
        cl_engine_model *m = NULL;
        if (load(copy, cut, &m, &err) == 0) {
            loaded++;
            cl_engine_free(m);
        } else {
            assert_true(err.msg[0] != 0);
        }
        free(copy);
    }
    assert_true(loaded >= 1);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load(buf, len, &m, &err), 0);
    cl_engine_free(m);
    free(buf);
}

static void test_unsupported_operator(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t d[] = {2};
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_node(&m, "FrobnicateV2", "my_node", "x", "y");
    expect_load_error(&m, CL_E_UNSUPPORTED, "unsupported operator 'FrobnicateV2' (node 'my_node', opset 13)");
}

static void test_external_data_refused(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t d[] = {2};
    const float w[] = {1, 2};
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    Onnx__TensorProto *t = mb_init_tensor(&m, "w", 1, 1, d, w, sizeof w);
    t->has_raw_data = 0;
    t->has_data_location = 1;
    t->data_location = ONNX__TENSOR_PROTO__DATA_LOCATION__EXTERNAL;
    mb_node(&m, "Add", "a", "x,w", "y");
    expect_load_error(&m, CL_E_UNSUPPORTED, "external data");
}

static void test_initializer_size_mismatch(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t d[] = {2, 3};
    const float w[5] = {0};
    mb_input(&m, "x", 1, 2, d);
    mb_output(&m, "y", 1, 2, d);
    mb_init_tensor(&m, "w", 1, 2, d, w, sizeof w); /* 20 bytes for 6 floats */
    mb_node(&m, "Add", "a", "x,w", "y");
    expect_load_error(&m, CL_E_FORMAT, "needs 24 raw_data bytes, found 20");
}

static void test_absurd_dims(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t d[] = {2}, huge[] = {(int64_t)1 << 40, (int64_t)1 << 40};
    const float w[2] = {0};
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_init_tensor(&m, "w", 1, 2, huge, w, sizeof w);
    mb_node(&m, "Add", "a", "x,w", "y");
    expect_load_error(&m, CL_E_FORMAT, "too large");

    mb_init(&m);
    const int64_t neg[] = {-3};
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_init_tensor(&m, "w", 1, 1, neg, w, 0);
    mb_node(&m, "Add", "a", "x,w", "y");
    expect_load_error(&m, CL_E_FORMAT, "negative dimension");
}

static void test_graph_errors(void **state)
{
    mb m;
    const int64_t d[] = {2};
    /* cycle */
    mb_init(&m);
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "b", 1, 1, d);
    mb_node(&m, "Add", "n1", "x,b", "a");
    mb_node(&m, "Relu", "n2", "a", "b");
    expect_load_error(&m, CL_E_FORMAT, "cycle");
    /* dangling input */
    mb_init(&m);
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_node(&m, "Add", "n1", "x,nowhere", "y");
    expect_load_error(&m, CL_E_FORMAT, "input 'nowhere' is not produced");
    /* two producers */
    mb_init(&m);
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_node(&m, "Relu", "n1", "x", "y");
    mb_node(&m, "Relu", "n2", "x", "y");
    expect_load_error(&m, CL_E_FORMAT, "already defined");
    /* wrong arity */
    mb_init(&m);
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_node(&m, "Relu", "n1", "x,x", "y");
    expect_load_error(&m, CL_E_FORMAT, "has 2 inputs");
    /* missing output */
    mb_init(&m);
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "zzz", 1, 1, d);
    mb_node(&m, "Relu", "n1", "x", "y");
    expect_load_error(&m, CL_E_FORMAT, "graph output 'zzz'");
}

/* ---------------------------------------------------------------- attributes, checked at load */

/* One node `op` named "nd" from x[1,4,6,6] to y (its attributes set by the caller). */
static Onnx__NodeProto *one_node(mb *m, const char *op, const char *ins)
{
    mb_init(m);
    const int64_t d[] = {1, 4, 6, 6};
    mb_input(m, "x", 1, 4, d);
    mb_output(m, "y", 1, 0, d);
    m->outs[0]->type->tensor_type->shape = NULL; /* no declared shape */
    return mb_node(m, op, "nd", ins, "y");
}

static void conv_weights(mb *m, int64_t oc)
{
    static float w[4 * 4 * 3 * 3];
    const int64_t wd[] = {oc, 4, 3, 3};
    mb_init_tensor(m, "w", 1, 4, wd, w, sizeof(float) * (size_t)(oc * 4 * 9));
}

static void resize_scales(mb *m)
{
    const float sc[4] = {1, 1, 2, 2};
    mb_init_tensor(m, "s", 1, 1, (const int64_t[]){4}, sc, sizeof sc);
}

/* Every attribute of the wrong type, out of range or not implemented fails the load, the message naming
 * the node and the attribute; none of these reaches a kernel. */
static void test_bad_attributes(void **state)
{
    mb m;
    Onnx__NodeProto *n;
    /* wrong types */
    n = one_node(&m, "LeakyRelu", "x");
    attr_i(n, "alpha", 2);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (LeakyRelu): attribute 'alpha' must be a float, got an int");
    n = one_node(&m, "Transpose", "x");
    attr_f(n, "perm", 1.0f);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Transpose): attribute 'perm' must be ints, got a float");
    n = one_node(&m, "Flatten", "x");
    attr_s(n, "axis", "1");
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Flatten): attribute 'axis' must be an int, got a string");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_s(n, "strides", "1,1");
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Conv): attribute 'strides' must be ints, got a string");
    n = one_node(&m, "Resize", "x,-,s");
    resize_scales(&m);
    attr_i(n, "mode", 1);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Resize): attribute 'mode' must be a string, got an int");
    n = one_node(&m, "ConstantOfShape", "x");
    attr_f(n, "value", 0.0f);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (ConstantOfShape): attribute 'value' must be a tensor, got a float");

    /* out of range */
    n = one_node(&m, "Transpose", "x");
    attr_ints(n, "perm", 4, (const int64_t[]){0, 1, 1, 3});
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Transpose): attribute 'perm' is not a permutation");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_ints(n, "strides", 2, (const int64_t[]){0, 1});
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Conv): attribute 'strides' has the value 0, out of range");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_ints(n, "pads", 4, (const int64_t[]){0, -1, 0, 0});
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Conv): attribute 'pads' has the value -1, out of range");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_i(n, "group", 0);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Conv): attribute 'group' is 0, out of range");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_ints(n, "strides", 2, (const int64_t[]){1, 1});
    attr_ints(n, "pads", 6, (const int64_t[]){0, 0, 0, 0, 0, 0});
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Conv): attribute 'pads' has 6 entries where the other attributes "
                      "imply 2 spatial dimensions");
    n = one_node(&m, "Conv", "x,w");
    conv_weights(&m, 4);
    attr_ints(n, "dilations", 4, (const int64_t[]){1, 1, 1, 1});
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (Conv): attribute 'dilations' has 4 entries: at most 3 spatial");
    n = one_node(&m, "MaxPool", "x");
    attr_ints(n, "strides", 2, (const int64_t[]){1, 1});
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (MaxPool): attribute 'kernel_shape' with 1-3 entries is required");
    n = one_node(&m, "Gemm", "x,x");
    attr_i(n, "transA", 2);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Gemm): attribute 'transA' is 2, out of range (0..1)");
    n = one_node(&m, "Softmax", "x");
    attr_i(n, "axis", 100);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Softmax): attribute 'axis' is 100, out of range");
    n = one_node(&m, "DepthToSpace", "x");
    attr_i(n, "blocksize", 0);
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (DepthToSpace): attribute 'blocksize' is 0, out of range");
    n = one_node(&m, "Concat", "x,x");
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Concat): attribute 'axis' is required");
    n = one_node(&m, "Cast", "x");
    expect_load_error(&m, CL_E_FORMAT, "node 'nd' (Cast): attribute 'to' is required");

    /* values the engine does not implement */
    n = one_node(&m, "Cast", "x");
    attr_i(n, "to", 8);
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (Cast): attribute 'to' is 8 (string)");
    n = one_node(&m, "Pad", "x,p");
    mb_init_tensor(&m, "p", 7, 1, (const int64_t[]){8}, (const int64_t[8]){0}, 64);
    attr_s(n, "mode", "wrap");
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (Pad): attribute 'mode' 'wrap' is not supported (supported: "
                      "'constant', 'reflect', 'edge')");
    n = one_node(&m, "Resize", "x,-,s");
    resize_scales(&m);
    attr_s(n, "coordinate_transformation_mode", "bogus");
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (Resize): attribute 'coordinate_transformation_mode' 'bogus'");
    n = one_node(&m, "Resize", "x,-,s");
    resize_scales(&m);
    attr_i(n, "antialias", 1);
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (Resize): attribute 'antialias' is not supported");
    n = one_node(&m, "AveragePool", "x");
    attr_ints(n, "kernel_shape", 2, (const int64_t[]){2, 2});
    attr_s(n, "auto_pad", "SAME_SIDEWAYS");
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (AveragePool): attribute 'auto_pad' 'SAME_SIDEWAYS'");
    n = one_node(&m, "LRN", "x");
    attr_i(n, "size", 4);
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (LRN): attribute 'size' 4 is not supported");
    n = one_node(&m, "BitShift", "x,x");
    attr_s(n, "direction", "UP");
    expect_load_error(&m, CL_E_UNSUPPORTED, "node 'nd' (BitShift): attribute 'direction' 'UP' is not supported");
    n = one_node(&m, "BatchNormalization", "x,x,x,x,x");
    attr_i(n, "training_mode", 1);
    expect_load_error_at(&m, 15, CL_E_UNSUPPORTED, "node 'nd' (BatchNormalization): training mode");

    /* a bad attribute on a node whose output nobody uses still fails the load */
    mb_init(&m);
    const int64_t d[] = {2};
    mb_input(&m, "x", 1, 1, d);
    mb_output(&m, "y", 1, 1, d);
    mb_node(&m, "Relu", "r", "x", "y");
    n = mb_node(&m, "Elu", "dead", "x", "unused");
    attr_ints(n, "alpha", 1, (const int64_t[]){1});
    expect_load_error(&m, CL_E_FORMAT, "node 'dead' (Elu): attribute 'alpha' must be a float, got ints");
}

/* An operator outside the opsets its descriptor implements is refused at load with its name and node. */
static void test_operator_opset_range(void **state)
{
    mb m;
    one_node(&m, "HardSwish", "x");
    expect_load_error_at(&m, 13, CL_E_UNSUPPORTED, "operator 'HardSwish' (node 'nd') is not supported at opset 13");
    one_node(&m, "HardSwish", "x");
    size_t len;
    uint8_t *buf = mb_pack(&m, 14, &len);
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), 0);
    cl_engine_free(model);
    free(buf);
    arena_free();
}

/* The one operator table: each name once (a second entry would never be found), every descriptor
 * runnable and consistent, found by eng_op_find inside its opset range and refused outside it. */
static void test_op_table(void **state)
{
    assert_true(eng_ops_count >= 117);
    for (size_t i = 0; i < eng_ops_count; i++) {
        const eng_op *op = &eng_ops[i];
        for (size_t j = i + 1; j < eng_ops_count; j++)
            if (strcmp(op->name, eng_ops[j].name) == 0)
                fail_msg("operator '%s' is in the table twice", op->name);
        if (!op->run)
            fail_msg("operator '%s' has no kernel", op->name);
        if (op->since < 1 || op->since > op->until || op->until > 18)
            fail_msg("operator '%s': opset range %d..%d", op->name, op->since, op->until);
        if (op->min_in < 0 || (op->max_in >= 0 && op->max_in < op->min_in) || op->min_out < 1 ||
            op->max_out < op->min_out)
            fail_msg("operator '%s': arity %d..%d -> %d..%d", op->name, op->min_in, op->max_in, op->min_out,
                     op->max_out);
        if (!(op->consumes & ENG_LAYOUT_ANY) || !(op->produces & ENG_LAYOUT_ANY))
            fail_msg("operator '%s' declares no layout", op->name);
        if ((op->produces & ENG_LAYOUT_BLOCKED) && !op->free_state)
            fail_msg("operator '%s' makes blocked outputs (oneDNN primitives) but frees no kernel state", op->name);
        cl_err err = {0};
        if (eng_op_find(op->name, op->until, "n", &err) != op || eng_op_find(op->name, op->since, "n", &err) != op)
            fail_msg("operator '%s' is not found in its opset range: %s", op->name, err.msg);
        if (op->since > 1) {
            assert_null(eng_op_find(op->name, op->since - 1, "n", &err));
            assert_int_equal(err.code, CL_E_UNSUPPORTED);
        }
    }
    cl_err err = {0};
    assert_null(eng_op_find("Conv2D", 13, "n", &err)); /* names are exact, case included */
    assert_null(eng_op_find("conv", 13, "n", &err));
    assert_non_null(strstr(err.msg, "unsupported operator 'conv' (node 'n', opset 13)"));
}

/* Attributes decoded at load are the ones the kernels use. */
static void test_attributes_applied(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {2, 3}, td[] = {3, 2};
    mb_input(&m, "x", 1, 2, xd);
    mb_output(&m, "y", 1, 2, td);
    Onnx__NodeProto *lr = mb_node(&m, "LeakyRelu", "lr", "x", "l");
    attr_f(lr, "alpha", 0.25f);
    Onnx__NodeProto *tr = mb_node(&m, "Transpose", "tr", "l", "t");
    attr_ints(tr, "perm", 2, (const int64_t[]){1, 0});
    Onnx__NodeProto *cl = mb_node(&m, "Clip", "cl", "t", "y");
    attr_f(cl, "min", -0.5f);
    attr_f(cl, "max", 2.5f);
    size_t len;
    uint8_t *buf = mb_pack(&m, 10, &len); /* Clip with min/max attributes */
    arena_free();
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), 0);
    free(buf);
    float x[6] = {-4, 1, 3, -1, 0, 8};
    cl_engine_tensor in = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 2, .dims = {2, 3}, .data = x, .nbytes = sizeof x};
    cl_engine_tensor out = {0};
    assert_int_equal(cl_engine_run(model, &in, 1, &out, 1, &err), 0);
    assert_int_equal(out.rank, 2);
    assert_int_equal(out.dims[0], 3);
    assert_int_equal(out.dims[1], 2);
    /* LeakyRelu(0.25): [-1, 1, 3, -0.25, 0, 8]; transposed: [-1, -0.25, 1, 0, 3, 8]; clipped to [-0.5, 2.5] */
    const float want[6] = {-0.5f, -0.25f, 1, 0, 2.5f, 2.5f};
    for (int i = 0; i < 6; i++)
        assert_true(fabsf(((float *)out.data)[i] - want[i]) < 1e-6f);
    cl_engine_tensor_release(&out);
    cl_engine_free(model);
}

/* GraphProto -> NodeProto -> AttributeProto -> GraphProto ... nested far too deep. */
static void test_deep_nesting(void **state)
{
    size_t depth = 19998, cap = depth * 16 + 64, len = 0;
    uint8_t *buf = malloc(cap), *tmp = malloc(cap);
    /* innermost: empty GraphProto; wrap alternately: Attribute.g (6), Node.attribute (5), Graph.node (1) */
    const uint8_t fields[3] = {6 << 3 | 2, 5 << 3 | 2, 1 << 3 | 2};
    for (size_t i = 0; i < depth; i++) {
        uint8_t hdr[12];
        size_t h = 0;
        hdr[h++] = fields[i % 3];
        size_t v = len;
        do {
            hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
            v >>= 7;
        } while (v);
        memcpy(tmp, hdr, h);
        memcpy(tmp + h, buf, len);
        len += h;
        memcpy(buf, tmp, len);
    }
    /* ModelProto.graph (7) around the outermost GraphProto (depth % 3 == 0: the last wrap was Graph.node) */
    uint8_t hdr[12];
    size_t h = 0, v = len;
    hdr[h++] = 7 << 3 | 2;
    do {
        hdr[h++] = (uint8_t)((v & 0x7f) | (v > 0x7f ? 0x80 : 0));
        v >>= 7;
    } while (v);
    memcpy(tmp, hdr, h);
    memcpy(tmp + h, buf, len);
    len += h;
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load(tmp, len, &m, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "levels deep"));
    free(buf);
    free(tmp);
}

/* ---------------------------------------------------------------- signature and running */

static void test_signature_and_run(void **state)
{
    size_t len;
    uint8_t *buf = add_relu_model(&len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load(buf, len, &m, &err), 0);
    free(buf);
    assert_int_equal(cl_engine_num_inputs(m), 1);
    assert_int_equal(cl_engine_num_outputs(m), 1);
    const cl_engine_io_info *in = cl_engine_input(m, 0);
    assert_string_equal(in->name, "x");
    assert_int_equal(in->dtype, CL_ENGINE_DT_FLOAT);
    assert_int_equal(in->rank, 2);
    assert_int_equal(in->dims[0], -1);
    assert_int_equal(in->dims[1], 3);
    assert_string_equal(cl_engine_output(m, 0)->name, "y");
    assert_int_equal(cl_engine_find_input(m, "x"), 0);
    assert_int_equal(cl_engine_find_input(m, "nope"), -1);

    float x[4 * 3];
    tu_fill_random(x, sizeof x, 7);
    for (int i = 0; i < 12; i++)
        x[i] = (float)((int32_t)((uint32_t *)x)[i] % 1000) / 250.0f;
    const float c[] = {1.0f, -2.0f, 0.5f};
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 2, .dims = {4, 3}, .data = x, .nbytes = sizeof x};
    cl_engine_tensor y = {0};
    assert_int_equal(cl_engine_run(m, &t, 1, &y, 1, &err), 0);
    assert_int_equal(y.rank, 2);
    assert_int_equal(y.dims[0], 4);
    assert_int_equal(y.dims[1], 3);
    for (int i = 0; i < 12; i++) {
        float e = x[i] + c[i % 3];
        assert_float_equal(((float *)y.data)[i], e > 0 ? e : 0, 1e-6);
    }
    cl_engine_tensor_release(&y);
    assert_null(y.data);

    /* input errors */
    cl_engine_tensor bad = t;
    bad.dims[1] = 4;
    bad.nbytes = 4 * 4 * 4;
    float big[16] = {0};
    bad.data = big;
    assert_int_equal(cl_engine_run(m, &bad, 1, &y, 1, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "must have shape [-1,3]"));
    bad = t;
    bad.dtype = CL_ENGINE_DT_INT32;
    assert_int_equal(cl_engine_run(m, &bad, 1, &y, 1, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    bad = t;
    bad.nbytes = 8;
    assert_int_equal(cl_engine_run(m, &bad, 1, &y, 1, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_int_equal(cl_engine_run(m, &t, 0, &y, 1, &err), -1);
    cl_engine_free(m);
}

/* Conv (+bias) -> BatchNormalization -> Relu, checked against a naive convolution. */
enum { IC = 3, OC = 4, KH = 3, H = 7, W = 6 };
static float cw[OC * IC * KH * KH], cb[OC], bn_s[OC], bn_b[OC], bn_m[OC], bn_v[OC];

static uint8_t *conv_model(size_t *len)
{
    uint64_t seed = 11;
    float *arrs[] = {cw, cb, bn_s, bn_b, bn_m, bn_v};
    size_t sizes[] = {CL_ARRAY_LEN(cw), OC, OC, OC, OC, OC};
    for (int a = 0; a < 6; a++) {
        uint32_t r[OC * IC * KH * KH];
        tu_fill_random(r, sizes[a] * 4, seed++);
        for (size_t i = 0; i < sizes[a]; i++)
            arrs[a][i] = (float)(r[i] % 2001) / 1000.0f - 1.0f;
    }
    for (int i = 0; i < OC; i++)
        bn_v[i] = fabsf(bn_v[i]) + 0.5f;
    mb m;
    mb_init(&m);
    const int64_t xd[] = {-1, IC, H, W}, yd[] = {-1, OC, H, W}, wd[] = {OC, IC, KH, KH}, od[] = {OC};
    mb_input(&m, "x", 1, 4, xd);
    mb_output(&m, "y", 1, 4, yd);
    mb_init_tensor(&m, "w", 1, 4, wd, cw, sizeof cw);
    mb_init_tensor(&m, "b", 1, 1, od, cb, sizeof cb);
    mb_init_tensor(&m, "s", 1, 1, od, bn_s, sizeof bn_s);
    mb_init_tensor(&m, "bb", 1, 1, od, bn_b, sizeof bn_b);
    mb_init_tensor(&m, "mean", 1, 1, od, bn_m, sizeof bn_m);
    mb_init_tensor(&m, "var", 1, 1, od, bn_v, sizeof bn_v);
    Onnx__NodeProto *c = mb_node(&m, "Conv", "conv", "x,w,b", "c");
    const int64_t pads[] = {1, 1, 1, 1}, ks[] = {KH, KH};
    attr_ints(c, "pads", 4, pads);
    attr_ints(c, "kernel_shape", 2, ks);
    mb_node(&m, "BatchNormalization", "bn", "c,s,bb,mean,var", "n");
    mb_node(&m, "Relu", "relu", "n", "y");
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

static void conv_reference(const float *x, int64_t batch, float *y)
{
    for (int64_t b = 0; b < batch; b++)
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double s = cb[o];
                    for (int c = 0; c < IC; c++)
                        for (int ki = 0; ki < KH; ki++)
                            for (int kj = 0; kj < KH; kj++) {
                                int ii = i + ki - 1, jj = j + kj - 1;
                                if (ii < 0 || ii >= H || jj < 0 || jj >= W)
                                    continue;
                                s += (double)x[((b * IC + c) * H + ii) * W + jj] * cw[((o * IC + c) * KH + ki) * KH + kj];
                            }
                    double v = (s - bn_m[o]) / sqrt(bn_v[o] + 1e-5) * bn_s[o] + bn_b[o];
                    y[((b * OC + o) * H + i) * W + j] = v > 0 ? (float)v : 0.0f;
                }
}

static float *random_input(int64_t batch, uint64_t seed)
{
    size_t n = (size_t)batch * IC * H * W;
    float *x = malloc(n * sizeof *x);
    uint32_t *r = malloc(n * 4);
    tu_fill_random(r, n * 4, seed);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(r[i] % 4001) / 1000.0f - 2.0f;
    free(r);
    return x;
}

static void check_conv_run(cl_engine_model *m, int64_t batch, uint64_t seed)
{
    float *x = random_input(batch, seed);
    size_t on = (size_t)batch * OC * H * W;
    float *ref = malloc(on * sizeof *ref);
    conv_reference(x, batch, ref);
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 4, .dims = {batch, IC, H, W}, .data = x,
                          .nbytes = (size_t)batch * IC * H * W * 4};
    cl_engine_tensor y = {0};
    cl_err err = {0};
    if (cl_engine_run(m, &t, 1, &y, 1, &err) != 0)
        fail_msg("run: %s", err.msg);
    assert_int_equal(y.rank, 4);
    assert_int_equal(y.dims[0], batch);
    assert_int_equal(y.dims[1], OC);
    assert_int_equal(y.nbytes, on * 4);
    for (size_t i = 0; i < on; i++)
        if (fabsf(((float *)y.data)[i] - ref[i]) > 1e-4f * (1 + fabsf(ref[i])))
            fail_msg("element %zu: %g, expected %g", i, ((float *)y.data)[i], ref[i]);
    cl_engine_tensor_release(&y);
    free(ref);
    free(x);
}

static void test_conv_bn_relu_fused(void **state)
{
    size_t len;
    uint8_t *buf = conv_model(&len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load(buf, len, &m, &err), 0);
    free(buf);
    assert_int_equal(cl_engine_num_nodes(m), 1); /* BN folded, Relu fused */
    check_conv_run(m, 1, 100);
    check_conv_run(m, 3, 101); /* dynamic batch: a second plan */
    check_conv_run(m, 1, 102); /* back to the first */
    cl_engine_free(m);
}

/* y = Relu(Conv(x) + z): the Add and Relu are fused into the Conv (sum post-op) when z has the
 * output's shape, and still correct when z broadcasts ([1,OC,1,1]) or enlarges the result. */
static void check_residual(const int64_t *zd, int zrank)
{
    size_t len;
    free(conv_model(&len)); /* initializes cw/cb */
    mb m;
    mb_init(&m);
    const int64_t xd[] = {1, IC, H, W}, wd[] = {OC, IC, KH, KH}, od[] = {OC};
    mb_input(&m, "x", 1, 4, xd);
    mb_input(&m, "z", 1, zrank, zd);
    mb_output(&m, "y", 1, 0, NULL);
    m.outs[0]->type->tensor_type->shape = NULL;
    mb_init_tensor(&m, "w", 1, 4, wd, cw, sizeof cw);
    mb_init_tensor(&m, "b", 1, 1, od, cb, sizeof cb);
    Onnx__NodeProto *c = mb_node(&m, "Conv", "conv", "x,w,b", "c");
    const int64_t pads[] = {1, 1, 1, 1};
    attr_ints(c, "pads", 4, pads);
    mb_node(&m, "Add", "add", "z,c", "s");
    mb_node(&m, "Relu", "relu", "s", "y");
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), 0);
    free(buf);
    assert_int_equal(cl_engine_num_nodes(model), 1); /* Add and Relu fused into the Conv */
    const cl_engine_io_info *oi = cl_engine_output(model, 0); /* inferred: conv output broadcast with z */
    assert_int_equal(oi->rank, 4);
    assert_int_equal(oi->dims[0], zrank == 4 ? zd[0] : 1);
    assert_int_equal(oi->dims[1], OC);
    assert_int_equal(oi->dims[3], W);
    float *x = random_input(1, 77);
    int64_t zn = 1;
    for (int i = 0; i < zrank; i++)
        zn *= zd[i];
    float *z = malloc((size_t)zn * sizeof *z);
    for (int64_t i = 0; i < zn; i++)
        z[i] = (float)((i * 37) % 11) / 5.0f - 1.0f;
    cl_engine_tensor in[2] = {{.dtype = CL_ENGINE_DT_FLOAT, .rank = 4, .dims = {1, IC, H, W}, .data = x,
                               .nbytes = sizeof(float) * IC * H * W},
                              {.dtype = CL_ENGINE_DT_FLOAT, .rank = zrank, .data = z, .nbytes = (size_t)zn * 4}};
    memcpy(in[1].dims, zd, sizeof(int64_t) * (size_t)zrank);
    cl_engine_tensor y = {0};
    if (cl_engine_run(model, in, 2, &y, 1, &err) != 0)
        fail_msg("run: %s", err.msg);
    /* reference: conv without BN, + z broadcast over [bz, OC, H, W] */
    int64_t bz = zrank == 4 ? zd[0] : 1;
    assert_int_equal(y.rank, 4);
    assert_int_equal(y.dims[0], bz);
    assert_int_equal(y.dims[1], OC);
    for (int64_t bb = 0; bb < bz; bb++)
        for (int o = 0; o < OC; o++)
            for (int i = 0; i < H; i++)
                for (int j = 0; j < W; j++) {
                    double sacc = cb[o];
                    for (int ci = 0; ci < IC; ci++)
                        for (int ki = 0; ki < KH; ki++)
                            for (int kj = 0; kj < KH; kj++) {
                                int ii = i + ki - 1, jj = j + kj - 1;
                                if (ii >= 0 && ii < H && jj >= 0 && jj < W)
                                    sacc += (double)x[(ci * H + ii) * W + jj] * cw[((o * IC + ci) * KH + ki) * KH + kj];
                            }
                    int64_t zi = 0, st = 1;
                    const int64_t full[4] = {bb, o, i, j};
                    for (int d = 3; d >= 0; d--) {
                        int zdim = d - (4 - zrank);
                        if (zdim < 0)
                            continue;
                        if (zd[zdim] != 1)
                            zi += full[d] * st;
                        st *= zd[zdim];
                    }
                    double v = sacc + z[zi];
                    float got = ((float *)y.data)[((bb * OC + o) * H + i) * W + j];
                    if (fabs(got - (v > 0 ? v : 0)) > 1e-4 * (1 + fabs(v)))
                        fail_msg("z rank %d: element (%lld,%d,%d,%d) is %g, expected %g", zrank, (long long)bb, o, i,
                                 j, got, v > 0 ? v : 0);
                }
    cl_engine_tensor_release(&y);
    free(x);
    free(z);
    cl_engine_free(model);
}

static void test_conv_residual(void **state)
{
    const int64_t same[] = {1, OC, H, W}, chan[] = {1, OC, 1, 1}, bigger[] = {2, OC, H, W}, vec[] = {W};
    check_residual(same, 4);   /* fused sum post-op */
    check_residual(chan, 4);   /* broadcast: added after the conv */
    check_residual(bigger, 4); /* the Add's result is larger than the conv output */
    check_residual(vec, 1);
}

/* Conv whose weights are a graph input: they must be used as given on every run (not cached from
 * the first run, e.g. the load-time warm-up on zeros), also when their shape changes. */
static void test_conv_runtime_weights(void **state)
{
    mb m;
    mb_init(&m);
    const int64_t xd[] = {1, 2, 2, 2}, wd[] = {-1, 2, 1, 1};
    mb_input(&m, "x", 1, 4, xd);
    mb_input(&m, "w", 1, 4, wd);
    mb_output(&m, "y", 1, 0, NULL);
    m.outs[0]->type->tensor_type->shape = NULL;
    mb_node(&m, "Conv", "conv", "x,w", "y");
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), 0); /* warms up with zero weights */
    free(buf);
    float x[8] = {1, 2, 3, 4, 10, 20, 30, 40};
    const float wsets[3][6] = {{1, 0}, {0.5f, -1}, {1, 1, 2, 0, 0, 3}};
    const int64_t ocs[3] = {1, 1, 3};
    for (int k = 0; k < 3; k++) {
        cl_engine_tensor in[2] = {{.dtype = CL_ENGINE_DT_FLOAT, .rank = 4, .dims = {1, 2, 2, 2}, .data = x, .nbytes = sizeof x},
                                  {.dtype = CL_ENGINE_DT_FLOAT, .rank = 4, .dims = {ocs[k], 2, 1, 1}, .data = (void *)wsets[k],
                                   .nbytes = (size_t)ocs[k] * 2 * 4}};
        cl_engine_tensor y = {0};
        if (cl_engine_run(model, in, 2, &y, 1, &err) != 0)
            fail_msg("run %d: %s", k, err.msg);
        assert_int_equal(y.dims[1], ocs[k]);
        for (int64_t o = 0; o < ocs[k]; o++)
            for (int p = 0; p < 4; p++)
                assert_float_equal(((float *)y.data)[o * 4 + p], wsets[k][o * 2] * x[p] + wsets[k][o * 2 + 1] * x[4 + p],
                                   1e-5);
        cl_engine_tensor_release(&y);
    }
    cl_engine_free(model);
}

typedef struct {
    cl_engine_model *m;
    int id;
} worker_arg;

static void *worker(void *p)
{
    worker_arg *a = p;
    for (int i = 0; i < 15; i++)
        check_conv_run(a->m, 1 + (a->id + i) % 3, (uint64_t)(1000 + a->id * 100 + i));
    return NULL;
}

static void test_concurrent_runs(void **state)
{
    size_t len;
    uint8_t *buf = conv_model(&len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(load(buf, len, &m, &err), 0);
    free(buf);
    pthread_t th[4];
    worker_arg args[4];
    for (int i = 0; i < 4; i++) {
        args[i] = (worker_arg){m, i};
        assert_int_equal(pthread_create(&th[i], NULL, worker, &args[i]), 0);
    }
    for (int i = 0; i < 4; i++)
        pthread_join(th[i], NULL);
    cl_engine_free(m);
}

/* x[-1,3,8,8] -> Conv(w[5,wc,3,3], stride 2, pad 1) -> MaxPool(2,2) -> Flatten -> y (shape undeclared) */
static void shape_model(mb *m, int64_t wc)
{
    static float w[5 * 4 * 9];
    mb_init(m);
    const int64_t xd[] = {-1, 3, 8, 8}, wd[] = {5, wc, 3, 3};
    mb_input(m, "x", 1, 4, xd);
    mb_output(m, "y", 1, 0, NULL);
    m->outs[0]->type->tensor_type->shape = NULL;
    mb_init_tensor(m, "w", 1, 4, wd, w, sizeof(float) * (size_t)(5 * wc * 9));
    Onnx__NodeProto *c = mb_node(m, "Conv", "conv", "x,w", "c");
    const int64_t two[] = {2, 2}, pads[] = {1, 1, 1, 1};
    attr_ints(c, "strides", 2, two);
    attr_ints(c, "pads", 4, pads);
    Onnx__NodeProto *p = mb_node(m, "MaxPool", "pool", "c", "p");
    attr_ints(p, "kernel_shape", 2, two);
    attr_ints(p, "strides", 2, two);
    mb_node(m, "Flatten", "flat", "p", "y");
}

static void test_shape_inference(void **state)
{
    mb m;
    shape_model(&m, 3);
    size_t len;
    uint8_t *buf = mb_pack(&m, 13, &len);
    arena_free();
    cl_err err = {0};
    cl_engine_model *model = NULL;
    assert_int_equal(load(buf, len, &model, &err), 0);
    free(buf);
    const cl_engine_io_info *o = cl_engine_output(model, 0);
    assert_int_equal(o->rank, 2);
    assert_int_equal(o->dims[0], -1); /* the dynamic batch stays dynamic */
    assert_int_equal(o->dims[1], 20); /* 5 channels x 2 x 2 */
    float x[2 * 3 * 8 * 8] = {0};
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 4, .dims = {2, 3, 8, 8}, .data = x, .nbytes = sizeof x};
    cl_engine_tensor y = {0};
    assert_int_equal(cl_engine_run(model, &t, 1, &y, 1, &err), 0);
    assert_int_equal(y.dims[0], 2);
    assert_int_equal(y.dims[1], 20);
    cl_engine_tensor_release(&y);
    cl_engine_free(model);
    /* weights for 4 input channels on a 3-channel input: refused at load time, naming the node */
    shape_model(&m, 4);
    expect_load_error(&m, CL_E_FORMAT, "node 'conv' (Conv): weights [5,4,3,3] expect 4 input channels");
}

/* ---------------------------------------------------------------- .npy */

static void test_npy_roundtrip(void **state)
{
    int64_t v[6] = {1, -2, 3, 1LL << 40, 5, -6};
    cl_engine_tensor t = {.dtype = CL_ENGINE_DT_INT64, .rank = 2, .dims = {2, 3}, .data = v, .nbytes = sizeof v};
    uint8_t *buf;
    size_t len;
    cl_err err = {0};
    assert_int_equal(cl_engine_npy_write(&t, &buf, &len, &err), 0);
    assert_int_equal(len % 64, (sizeof v) % 64);
    assert_non_null(strstr((char *)buf + 10, "'shape': (2, 3)"));
    cl_engine_tensor r;
    assert_int_equal(cl_engine_npy_parse(buf, len, &r, &err), 0);
    assert_int_equal(r.dtype, CL_ENGINE_DT_INT64);
    assert_int_equal(r.rank, 2);
    assert_int_equal(r.dims[1], 3);
    assert_memory_equal(r.data, v, sizeof v);
    cl_engine_tensor_release(&r);
    /* truncated, trailing, bad magic */
    assert_int_equal(cl_engine_npy_parse(buf, len - 1, &r, &err), -1);
    assert_int_equal(err.code, CL_E_TRUNCATED);
    uint8_t *longer = malloc(len + 1);
    memcpy(longer, buf, len);
    longer[len] = 0;
    assert_int_equal(cl_engine_npy_parse(longer, len + 1, &r, &err), -1);
    assert_int_equal(err.code, CL_E_TRAILING);
    longer[1] = 'X';
    assert_int_equal(cl_engine_npy_parse(longer, len, &r, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    free(longer);
    /* every prefix fails cleanly */
    for (size_t cut = 0; cut < len; cut++)
        assert_int_equal(cl_engine_npy_parse(buf, cut, &r, &err), -1);
    free(buf);
    /* a scalar and a 1-D array */
    float f = 2.5f;
    cl_engine_tensor s = {.dtype = CL_ENGINE_DT_FLOAT, .rank = 0, .data = &f, .nbytes = 4};
    assert_int_equal(cl_engine_npy_write(&s, &buf, &len, &err), 0);
    assert_non_null(strstr((char *)buf + 10, "'shape': ()"));
    assert_int_equal(cl_engine_npy_parse(buf, len, &r, &err), 0);
    assert_int_equal(r.rank, 0);
    assert_float_equal(*(float *)r.data, 2.5, 0);
    cl_engine_tensor_release(&r);
    free(buf);
}

/* The load copies the weights once (konst.c): initializers point into the caller's buffer during the
 * load only. Checked: (1) after the load, the caller's buffer overwritten and freed, the model still
 * computes Conv -> Relu (weights used directly) and Conv -> BN -> Relu (weights folded) at batch 1 and
 * at a new batch; (2) every constant is in secure memory or released, none borrowed; (3) where the
 * warm-up reordered a Conv's weights into a blocked layout their plain copy is gone, and
 * eng_conv_weights_plain rebuilds it from the reordered copy bit for bit (what a plan for another
 * layout does); (4) without the warm-up, the plain weights stay (copied) and runs still match. */
static uint8_t *conv_relu_model(size_t *len)
{
    free(conv_model(len)); /* initializes cw/cb */
    mb m;
    mb_init(&m);
    const int64_t xd[] = {-1, IC, H, W}, yd[] = {-1, OC, H, W}, wd[] = {OC, IC, KH, KH}, od[] = {OC};
    mb_input(&m, "x", 1, 4, xd);
    mb_output(&m, "y", 1, 4, yd);
    mb_init_tensor(&m, "w", 1, 4, wd, cw, sizeof cw);
    mb_init_tensor(&m, "b", 1, 1, od, cb, sizeof cb);
    mb_init_tensor(&m, "unused", 1, 1, od, cb, sizeof cb); /* read by no node: released */
    Onnx__NodeProto *c = mb_node(&m, "Conv", "conv", "x,w,b", "c");
    const int64_t pads[] = {1, 1, 1, 1};
    attr_ints(c, "pads", 4, pads);
    mb_node(&m, "Relu", "relu", "c", "y");
    uint8_t *buf = mb_pack(&m, 13, len);
    arena_free();
    return buf;
}

/* conv_reference without the BatchNormalization: BN set to the identity for it, then restored. */
static void check_conv_relu_run(cl_engine_model *m, int64_t batch, uint64_t seed)
{
    float save[4][OC];
    float *arrs[] = {bn_s, bn_b, bn_m, bn_v};
    for (int a = 0; a < 4; a++)
        memcpy(save[a], arrs[a], sizeof save[a]);
    for (int o = 0; o < OC; o++) {
        bn_s[o] = 1.0f;
        bn_b[o] = 0.0f;
        bn_m[o] = 0.0f;
        bn_v[o] = 1.0f - 1e-5f;
    }
    check_conv_run(m, batch, seed);
    for (int a = 0; a < 4; a++)
        memcpy(arrs[a], save[a], sizeof save[a]);
}

static const eng_node *conv_node(const cl_engine_model *m)
{
    for (size_t oi = 0; oi < m->n_order; oi++)
        if (strcmp(m->nodes[m->order[oi]].op_type, "Conv") == 0)
            return &m->nodes[m->order[oi]];
    fail_msg("no Conv node");
    return NULL;
}

static void check_constants_settled(const cl_engine_model *m)
{
    for (size_t v = 0; v < m->n_values; v++) {
        const eng_tensor *t = m->values[v].konst;
        if (!t)
            continue;
        if (t->borrowed)
            fail_msg("constant '%s' still points into the caller's buffer", m->values[v].name);
        if (t->data && !(t->owned && t->secure && cl_secmem_size(t->data) >= t->nbytes))
            fail_msg("constant '%s' is not in secure memory", m->values[v].name);
        if (m->values[v].n_consumers == 0 && m->values[v].graph_output < 0 && t->data)
            fail_msg("constant '%s' is read by no node but kept", m->values[v].name);
    }
}

static void test_load_constants_memory(void **state)
{
    (void)state;
    for (int model = 0; model < 2; model++) {
        for (int warm = 0; warm < 3; warm++) { /* 0 no warm-up, 1 warm-up, 2 warm-up and direct convolution */
            size_t len;
            uint8_t *buf = model == 0 ? conv_relu_model(&len) : conv_model(&len);
            cl_err err = {0};
            cl_engine_model *m = NULL;
            assert_int_equal(cl_engine_load(buf, len,
                                            &(cl_engine_options){.threads = 2, .no_warmup = !warm, .direct_conv = warm == 2},
                                            &m, &err), 0);
            memset(buf, 0xA5, len); /* nothing may still read it */
            free(buf);
            check_constants_settled(m);
            const eng_node *n = conv_node(m);
            const eng_tensor *w = m->values[n->in[1]].konst;
            assert_non_null(w);
            const prim_cache *c = n->state;
            const prim_entry *blocked = NULL;
            for (const prim_entry *e = c ? c->head : NULL; e; e = e->next)
                if (e->wei && e->wei_md.format_kind == dnnl_blocked)
                    blocked = e;
            if (!warm)
                assert_non_null(w->data); /* no plan: the plain weights are kept */
            if (blocked) {
                assert_null(w->data); /* reordered: no plain copy left */
                eng_run r = {.m = m};
                assert_int_equal(dnnl_stream_create(&r.stream, m->dnnl, dnnl_stream_default_flags), dnnl_success);
                dnnl_memory_desc_t wplain;
                dnnl_dims_t wd = {OC, IC, KH, KH};
                dnnl_memory_desc_init_by_tag(&wplain, 4, wd, dnnl_f32, dnnl_abcd);
                void *tmp = NULL;
                assert_int_equal(eng_conv_weights_plain(&r, c, &wplain, &tmp), dnnl_success);
                if (model == 0) /* the weights as given (model 1's were scaled by the BN folding) */
                    assert_memory_equal(tmp, cw, sizeof cw);
                assert_true(cl_secmem_size(tmp) >= sizeof cw);
                cl_secmem_free(tmp);
                dnnl_stream_destroy(r.stream);
            } else if (warm) {
                assert_int_equal(warm, 1); /* direct convolution's layouts are blocked */
                assert_non_null(w->data); /* e.g. Winograd's layout: the plain copy stays */
            }
            for (int rep = 0; rep < 2; rep++) {
                if (model == 0) {
                    check_conv_relu_run(m, 1, 200 + rep);
                    check_conv_relu_run(m, 5, 210 + rep); /* a new plan after the load */
                } else {
                    check_conv_run(m, 1, 220 + rep);
                    check_conv_run(m, 5, 230 + rep);
                }
            }
            cl_engine_free(m);
        }
    }
    /* a new plan of a Conv whose plain weights are gone, when no entry has the layout it needs: the
     * plain weights are rebuilt from a reordered copy. The cache's entries are set aside and replaced
     * by one holding the weights in another layout (dcab, which no convolution picks), so the runs
     * below must create their primitives and weights from it. Direct convolution: not Winograd, whose
     * weights cannot be reordered back (their plain copy is kept instead). */
    size_t len;
    uint8_t *buf = conv_relu_model(&len);
    cl_err err = {0};
    cl_engine_model *m = NULL;
    assert_int_equal(cl_engine_load(buf, len, &(cl_engine_options){.threads = 2, .direct_conv = true}, &m, &err), 0);
    free(buf);
    const eng_node *n = conv_node(m);
    prim_cache *c = n->state;
    assert_non_null(c);
    assert_non_null(c->head);
    assert_null(m->values[n->in[1]].konst->data);
    eng_run r = {.m = m};
    assert_int_equal(dnnl_stream_create(&r.stream, m->dnnl, dnnl_stream_default_flags), dnnl_success);
    prim_entry *probe = calloc(1, sizeof *probe);
    assert_non_null(probe);
    dnnl_dims_t wd = {OC, IC, KH, KH};
    dnnl_memory_desc_init_by_tag(&probe->wei_md, 4, wd, dnnl_f32, dnnl_dcab);
    probe->wei = cl_secmem_alloc(sizeof cw, NULL);
    assert_non_null(probe->wei);
    prim_entry *old = c->head;
    assert_int_equal(eng_do_reorder(&r, &old->wei_md, old->wei, &probe->wei_md, probe->wei, NULL, NULL, false, 0),
                     dnnl_success);
    dnnl_stream_destroy(r.stream);
    c->head = probe;
    check_conv_relu_run(m, 1, 240);
    check_conv_relu_run(m, 2, 241);
    assert_true(c->head != probe); /* new entries were made */
    while (old) {
        prim_entry *nx = old->next;
        eng_prim_entry_free(old);
        old = nx;
    }
    cl_engine_free(m);
}

int main(void)
{
    cl_secmem_set_require_lock(false); /* model constants live in secure memory */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_load_garbage),
        cmocka_unit_test(test_load_truncations),
        cmocka_unit_test(test_unsupported_operator),
        cmocka_unit_test(test_external_data_refused),
        cmocka_unit_test(test_initializer_size_mismatch),
        cmocka_unit_test(test_absurd_dims),
        cmocka_unit_test(test_graph_errors),
        cmocka_unit_test(test_bad_attributes),
        cmocka_unit_test(test_operator_opset_range),
        cmocka_unit_test(test_op_table),
        cmocka_unit_test(test_attributes_applied),
        cmocka_unit_test(test_deep_nesting),
        cmocka_unit_test(test_signature_and_run),
        cmocka_unit_test(test_conv_bn_relu_fused),
        cmocka_unit_test(test_conv_residual),
        cmocka_unit_test(test_conv_runtime_weights),
        cmocka_unit_test(test_concurrent_runs),
        cmocka_unit_test(test_shape_inference),
        cmocka_unit_test(test_npy_roundtrip),
        cmocka_unit_test(test_load_constants_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
