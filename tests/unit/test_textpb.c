/* test_textpb.c — the common text-format reader (textpb.h) on TensorFlow's generated messages
 * (TensorProto: every scalar type as repeated fields; AttrValue: a oneof and recursion; the
 * google.protobuf wrappers: each integer type singular), its refusals with line and column, hostile
 * inputs, and the three configs that use it accepting what their own lexers refused. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cloister/repo.h"
#include "cloister/serve.h"
#include "cloister/textpb.h"
#include "google/protobuf/wrappers.pb-c.h"
#include "tensorflow/core/framework/attr_value.pb-c.h"
#include "tensorflow/core/framework/tensor.pb-c.h"

static ProtobufCMessage *parse_ok(const char *text, const ProtobufCMessageDescriptor *d, unsigned flags)
{
    cl_textpb_options o = {.flags = flags};
    ProtobufCMessage *m = NULL;
    cl_err err = {0};
    if (cl_textpb_parse(text, strlen(text), d, &o, &m, &err) != 0)
        fail_msg("'%s': %s", text, err.msg);
    return m;
}

/* The text is refused with a message containing `want`. */
static void refused(const char *text, size_t len, const ProtobufCMessageDescriptor *d, unsigned flags,
                    const char *want)
{
    cl_textpb_options o = {.flags = flags};
    ProtobufCMessage *m = (ProtobufCMessage *)1;
    cl_err err = {0};
    if (cl_textpb_parse(text, len, d, &o, &m, &err) == 0)
        fail_msg("'%.60s' parsed, want an error with '%s'", text, want);
    assert_null(m);
    assert_int_equal(err.code, CL_E_FORMAT);
    if (!strstr(err.msg, want))
        fail_msg("'%.60s': message '%s' lacks '%s'", text, err.msg, want);
}

#define REFUSED(text, d, want) refused(text, strlen(text), d, 0, want)

static const ProtobufCMessageDescriptor *const tensor_d = &tensorflow__tensor_proto__descriptor;

static void test_grammar(void **state)
{
    (void)state;
    const char *text = "# every delimiter, separator and literal form\n"
                       "dtype: DT_STRING\n"
                       "tensor_shape < dim { size: 2 name: 'a' }, dim: { size: 0x3 }; dim <size: 010> unknown_rank: t >\n"
                       "float_val: [1.5, -2, 1e3, 1.5f, inf, -Infinity, nan, .5, 2E-1, 0x10]\n"
                       "float_val: 7 ; float_val: - 8\n"
                       "double_val: 1e308, double_val: 1e999\n"
                       "int_val: [-2147483648, 2147483647, 0x7fffffff, 017, 0]\n"
                       "int64_val: -9223372036854775808 int64_val: 9223372036854775807\n"
                       "uint64_val: 18446744073709551615 uint64_val: 0xFFFFFFFFFFFFFFFF\n"
                       "uint32_val: 4294967295\n"
                       "bool_val: [true, false, True, False, t, f, 1, 0]\n"
                       "string_val: \"a\\x41\\101\\n\" 'b\\'' \"\\u00e9\\U0001F600\" # adjacent literals concatenate\n"
                       "string_val: \"nul\\0byte\\a\\b\\f\\r\\t\\v\\\\\\?\\\"\"\n"
                       "string_val: []\n"
                       "version_number: 3,\n";
    Tensorflow__TensorProto *t = (Tensorflow__TensorProto *)parse_ok(text, tensor_d, 0);
    assert_int_equal(t->dtype, TENSORFLOW__DATA_TYPE__DT_STRING);
    assert_non_null(t->tensor_shape);
    assert_int_equal(t->tensor_shape->n_dim, 3);
    assert_int_equal(t->tensor_shape->dim[0]->size, 2);
    assert_string_equal(t->tensor_shape->dim[0]->name, "a");
    assert_int_equal(t->tensor_shape->dim[1]->size, 3);
    assert_int_equal(t->tensor_shape->dim[2]->size, 8); /* octal */
    assert_true(t->tensor_shape->unknown_rank);
    assert_int_equal(t->n_float_val, 12);
    const float fv[] = {1.5f, -2, 1000, 1.5f, INFINITY, -INFINITY, 0, .5f, .2f, 16, 7, -8};
    for (size_t i = 0; i < 12; i++)
        if (i == 6)
            assert_true(isnan(t->float_val[i]));
        else
            assert_true(t->float_val[i] == fv[i]);
    assert_int_equal(t->n_double_val, 2);
    assert_true(t->double_val[0] == 1e308);
    assert_true(isinf(t->double_val[1])); /* too large for a double: infinity, as protobuf's parser */
    assert_int_equal(t->n_int_val, 5);
    assert_int_equal(t->int_val[0], INT32_MIN);
    assert_int_equal(t->int_val[1], INT32_MAX);
    assert_int_equal(t->int_val[2], INT32_MAX);
    assert_int_equal(t->int_val[3], 15);
    assert_true(t->int64_val[0] == INT64_MIN && t->int64_val[1] == INT64_MAX);
    assert_true(t->uint64_val[0] == UINT64_MAX && t->uint64_val[1] == UINT64_MAX);
    assert_true(t->n_uint32_val == 1 && t->uint32_val[0] == UINT32_MAX);
    assert_int_equal(t->n_bool_val, 8);
    for (size_t i = 0; i < 8; i++)
        assert_int_equal(t->bool_val[i], i % 2 == 0);
    assert_int_equal(t->n_string_val, 2);
    const char s0[] = "aAA\nb'\xc3\xa9\xf0\x9f\x98\x80";
    assert_int_equal(t->string_val[0].len, sizeof s0 - 1);
    assert_memory_equal(t->string_val[0].data, s0, sizeof s0 - 1);
    const char s1[] = "nul\0byte\a\b\f\r\t\v\\?\"";
    assert_int_equal(t->string_val[1].len, sizeof s1 - 1); /* bytes hold a NUL */
    assert_memory_equal(t->string_val[1].data, s1, sizeof s1 - 1);
    assert_int_equal(t->version_number, 3);
    /* what it built is a well-formed message: it packs and unpacks to the same values */
    size_t n = protobuf_c_message_get_packed_size(&t->base);
    uint8_t *buf = malloc(n);
    protobuf_c_message_pack(&t->base, buf);
    Tensorflow__TensorProto *u = tensorflow__tensor_proto__unpack(NULL, n, buf);
    assert_non_null(u);
    assert_int_equal(u->n_int64_val, 2);
    assert_int_equal(u->tensor_shape->n_dim, 3);
    assert_memory_equal(u->string_val[0].data, s0, sizeof s0 - 1);
    tensorflow__tensor_proto__free_unpacked(u, NULL);
    free(buf);
    cl_textpb_free(&t->base, NULL);

    /* enums by number; an empty text is the empty message */
    t = (Tensorflow__TensorProto *)parse_ok("dtype: 9", tensor_d, 0);
    assert_int_equal(t->dtype, TENSORFLOW__DATA_TYPE__DT_INT64);
    cl_textpb_free(&t->base, NULL);
    t = (Tensorflow__TensorProto *)parse_ok("  # nothing\n", tensor_d, 0);
    assert_int_equal(t->n_float_val, 0);
    assert_null(t->tensor_shape);
    cl_textpb_free(&t->base, NULL);
}

/* protobuf's default keeps a non-repeated field's last value and merges a message given twice;
 * CL_TEXTPB_FORBID_OVERWRITE refuses both; a second oneof member is refused either way. */
static void test_duplicates(void **state)
{
    (void)state;
    const char *dup = "version_number: 1 version_number: 2 tensor_shape { unknown_rank: true } "
                      "tensor_shape { dim { size: 4 } }";
    Tensorflow__TensorProto *t = (Tensorflow__TensorProto *)parse_ok(dup, tensor_d, 0);
    assert_int_equal(t->version_number, 2);
    assert_true(t->tensor_shape->unknown_rank);
    assert_int_equal(t->tensor_shape->n_dim, 1);
    cl_textpb_free(&t->base, NULL);
    refused(dup, strlen(dup), tensor_d, CL_TEXTPB_FORBID_OVERWRITE, "line 1: field 'version_number' given twice");
    refused("tensor_shape {} tensor_shape {}", 31, tensor_d, CL_TEXTPB_FORBID_OVERWRITE,
            "field 'tensor_shape' given twice (it is not repeated) (column 17)");
    /* a string given twice: the first value is freed (the sanitizer build checks) */
    Tensorflow__AttrValue *a = (Tensorflow__AttrValue *)parse_ok("func { name: 'x' name: 'y' }",
                                                                 &tensorflow__attr_value__descriptor, 0);
    assert_string_equal(a->func->name, "y");
    cl_textpb_free(&a->base, NULL);
    REFUSED("s: 'x'\ni: 1", &tensorflow__attr_value__descriptor,
            "line 2: field 'i' is given along with 's': tensorflow.AttrValue takes one of");
}

static void test_integer_ranges(void **state)
{
    (void)state;
    struct {
        const ProtobufCMessageDescriptor *d;
        const char *text, *want;
    } bad[] = {
        {&google__protobuf__int32_value__descriptor, "value: 2147483648", "number out of range for 'value'"},
        {&google__protobuf__int32_value__descriptor, "value: -2147483649", "from -2147483648 to 2147483647 (int32)"},
        {&google__protobuf__int64_value__descriptor, "value: 9223372036854775808", "(int64)"},
        {&google__protobuf__int64_value__descriptor, "value: -9223372036854775809", "number out of range"},
        {&google__protobuf__uint32_value__descriptor, "value: 4294967296", "from 0 to 4294967295 (uint32)"},
        {&google__protobuf__uint32_value__descriptor, "value: -1", "number out of range"},
        {&google__protobuf__uint64_value__descriptor, "value: 18446744073709551616", "(uint64)"},
        {&google__protobuf__uint64_value__descriptor, "value: 99999999999999999999999999999999", "out of range"},
        {&google__protobuf__int64_value__descriptor, "value: 1.5", "'1.5' is not an integer"},
        {&google__protobuf__int64_value__descriptor, "value: 10bar", "'10bar' is not an integer"},
        {&google__protobuf__int64_value__descriptor, "value: 08", "not an integer"},
        {&google__protobuf__int64_value__descriptor, "value: x", "'value' needs a whole number"},
        {&google__protobuf__float_value__descriptor, "value: 1.5.5", "'value' needs a number"},
        {&google__protobuf__float_value__descriptor, "value: 1e", "needs a number"},
        {&google__protobuf__float_value__descriptor, "value: infinite", "needs a number"},
        {&google__protobuf__bool_value__descriptor, "value: yes", "value must be true or false"},
        {&google__protobuf__bool_value__descriptor, "value: 2", "must be true or false"},
        {&google__protobuf__bool_value__descriptor, "value: TRUE", "must be true or false"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++)
        refused(bad[i].text, strlen(bad[i].text), bad[i].d, 0, bad[i].want);
    Google__Protobuf__UInt64Value *u = (Google__Protobuf__UInt64Value *)parse_ok(
        "value: 01777777777777777777777", &google__protobuf__uint64_value__descriptor, 0);
    assert_true(u->value == UINT64_MAX);
    cl_textpb_free(&u->base, NULL);
    Google__Protobuf__DoubleValue *dv = (Google__Protobuf__DoubleValue *)parse_ok(
        "value: -nan", &google__protobuf__double_value__descriptor, 0);
    assert_true(isnan(dv->value));
    cl_textpb_free(&dv->base, NULL);
}

/* Every refusal names the line and column of what is wrong and what was expected there. */
static void test_errors(void **state)
{
    (void)state;
    REFUSED("version_number: 1\n  bogus: 2", tensor_d, "line 2: unknown field 'bogus' in tensorflow.TensorProto");
    REFUSED("version_number: 1\n  bogus: 2", tensor_d, "(column 3)");
    REFUSED("tensor_shape { dim { sise: 1 } }", tensor_d,
            "unknown field 'sise' in tensorflow.TensorShapeProto.Dim (expected 'size:', 'name:' or '}')");
    REFUSED("version_number 3", tensor_d, "line 1: expected ':' after 'version_number', found '3' (column 16)");
    REFUSED("tensor_shape: 3", tensor_d, "expected '{' or '<' to open message field 'tensor_shape'");
    REFUSED("tensor_shape { dim { size: 1 }", tensor_d, "missing '}' for the message opened at line 1, column 14");
    REFUSED("tensor_shape < dim { size: 1 } }", tensor_d, "expected '>' to close the message opened at line 1");
    REFUSED("}", tensor_d, "expected a field name, found '}' (no message is open)");
    REFUSED("int_val: [1, 2", tensor_d, "missing ']' or ',' in the list of 'int_val'");
    REFUSED("int_val: [1 2]", tensor_d, "missing ']'");
    REFUSED("version_number: [1]", tensor_d, "a list [...] for 'version_number', which is not repeated");
    REFUSED("dtype: DT_NOPE", tensor_d, "'dtype' needs a value of enum tensorflow.DataType (DT_INVALID, DT_FLOAT");
    REFUSED("dtype: 12345", tensor_d, "needs a value of enum");
    REFUSED("string_val: 'abc", tensor_d, "line 1: unterminated string");
    REFUSED("string_val: 'abc\ndef'", tensor_d, "unterminated string");
    REFUSED("string_val: 'abc\\", tensor_d, "unterminated string");
    REFUSED("string_val: '\\q'", tensor_d, "line 1: unknown escape '\\q' in a string");
    REFUSED("string_val: '\\q'", tensor_d, "(column 14)");
    REFUSED("string_val: '\\400'", tensor_d, "octal escape above \\377");
    REFUSED("string_val: '\\x'", tensor_d, "\\x without hex digits");
    REFUSED("string_val: '\\ud800'", tensor_d, "\\u wants 4 hex digits of a Unicode scalar value");
    REFUSED("string_val: '\\U00110000'", tensor_d, "\\U wants 8 hex digits");
    REFUSED("string_val: 5", tensor_d, "'string_val' wants a quoted string, found '5'");
    /* string (not bytes) fields: C strings of UTF-8 */
    REFUSED("func { name: 'a\\0b' }", &tensorflow__attr_value__descriptor, "NUL byte in string field 'name'");
    REFUSED("func { name: '\\xff' }", &tensorflow__attr_value__descriptor, "string field 'name' is not valid UTF-8");
    REFUSED("[ext.field]: 1", tensor_d, "expected a field name of tensorflow.TensorProto, found '['");
    REFUSED("version_number: 1 @", tensor_d, "line 1: unexpected character '@' (column 19)");
    REFUSED("version_number: 1 extra", tensor_d, "unexpected text 'extra' where a field of tensorflow.TensorProto");
    REFUSED("tensor_shape { dim { size: 1 } } }", tensor_d, "(no message is open)");
}

static void test_hostile(void **state)
{
    (void)state;
    /* NUL and other control bytes in the text */
    refused("version_number: 1\0 dtype: 1", 27, tensor_d, 0, "line 1: unexpected byte 0x00 (column 18)");
    refused("version_number: 1\x01", 18, tensor_d, 0, "unexpected byte 0x01");
    refused("string_val: 'a\0b'", 18, tensor_d, 0, "");
    /* nesting: AttrValue -> func -> attr (map entry) -> value -> ... */
    size_t levels = 40, cap = levels * 40 + 16;
    char *deep = malloc(cap);
    size_t n = 0;
    for (size_t i = 0; i < levels; i++)
        n += (size_t)snprintf(deep + n, cap - n, "func { attr { key: 'k' value { ");
    for (size_t i = 0; i < levels; i++)
        n += (size_t)snprintf(deep + n, cap - n, "} } } ");
    refused(deep, n, &tensorflow__attr_value__descriptor, 0, "messages nested deeper than 64 levels");
    cl_textpb_options o = {.max_depth = 200};
    ProtobufCMessage *m = NULL;
    cl_err err = {0};
    assert_int_equal(cl_textpb_parse(deep, n, &tensorflow__attr_value__descriptor, &o, &m, &err), 0);
    cl_textpb_free(m, &o);
    o.max_depth = 3;
    assert_int_equal(cl_textpb_parse(deep, n, &tensorflow__attr_value__descriptor, &o, &m, &err), -1);
    assert_non_null(strstr(err.msg, "deeper than 3 levels"));
    /* an unclosed deep nest fails cleanly (everything half-built is freed: the sanitizer build checks) */
    assert_int_equal(cl_textpb_parse(deep, n / 2 + 7, &tensorflow__attr_value__descriptor, &o, &m, &err), -1);
    free(deep);

    /* a 10 MB input: one long string and many list entries */
    size_t big = 10u << 20;
    char *t = malloc(big + 64);
    n = (size_t)sprintf(t, "string_val: '");
    memset(t + n, 'x', big - 64);
    n += big - 64;
    n += (size_t)sprintf(t + n, "' int_val: [");
    while (n < big)
        n += (size_t)sprintf(t + n, "7,");
    n += (size_t)sprintf(t + n, "7]");
    o = (cl_textpb_options){0};
    assert_int_equal(cl_textpb_parse(t, n, tensor_d, &o, &m, &err), 0);
    Tensorflow__TensorProto *tp = (Tensorflow__TensorProto *)m;
    assert_int_equal(tp->string_val[0].len, big - 64);
    assert_true(tp->n_int_val > 20);
    for (size_t i = 0; i < tp->n_int_val; i++)
        assert_int_equal(tp->int_val[i], 7);
    cl_textpb_free(m, &o);
    o.max_len = 1u << 20;
    assert_int_equal(cl_textpb_parse(t, n, tensor_d, &o, &m, &err), -1);
    assert_non_null(strstr(err.msg, "more than the 1048576"));
    free(t);

    /* huge numbers of digits */
    char num[600] = "version_number: ";
    memset(num + 16, '9', 500);
    num[516] = '\0';
    REFUSED(num, tensor_d, "number out of range");
}

/* Where each field was given, for a caller's own checks. */
static void test_locations(void **state)
{
    (void)state;
    cl_textpb_locs *locs = NULL;
    cl_textpb_options o = {.locs = &locs};
    ProtobufCMessage *m = NULL;
    cl_err err = {0};
    const char *text = "dtype: DT_FLOAT\n  tensor_shape {\n dim { size: 1 }\n   dim { size: 2 } }\nint_val: [1,\n 2]";
    assert_int_equal(cl_textpb_parse(text, strlen(text), tensor_d, &o, &m, &err), 0);
    Tensorflow__TensorProto *t = (Tensorflow__TensorProto *)m;
    int line = 0, col = 0;
    assert_true(cl_textpb_where(locs, t, "tensor_shape", 0, &line, &col));
    assert_int_equal(line, 2);
    assert_int_equal(col, 3);
    assert_true(cl_textpb_where(locs, t->tensor_shape, "dim", 1, &line, &col));
    assert_int_equal(line, 4);
    assert_int_equal(col, 4);
    assert_true(cl_textpb_where(locs, t->tensor_shape->dim[1], "size", 0, &line, &col));
    assert_int_equal(col, 10);
    assert_true(cl_textpb_where(locs, t, "int_val", 1, &line, &col));
    assert_int_equal(line, 5);
    assert_false(cl_textpb_where(locs, t, "version_number", 0, &line, &col));
    assert_false(cl_textpb_where(locs, t, "int_val", 2, &line, &col));
    cl_textpb_free(m, &o);
    cl_textpb_locs_free(locs);
    /* on failure nothing is handed out */
    locs = (cl_textpb_locs *)1;
    assert_int_equal(cl_textpb_parse("dtype: 1 x", 10, tensor_d, &o, &m, &err), -1);
    assert_null(locs);
}

/* The three configs read with it accept what protobuf's parser accepts and their own lexers did not. */
static void test_configs_accept_text_format(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_serve_batching b;
    unsigned w = 0, q = 0;
    const char *bt = "max_batch_size: { value: 8 }, batch_timeout_micros < value: 0x10 >;\n"
                     "num_batch_threads { value: 2 }; max_enqueued_batches: 5, thread_pool_name { value: 'p' }\n"
                     "pad_variable_length_inputs: false";
    if (cl_serve_batching_parse(bt, strlen(bt), &b, &w, &q, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(b.max_batch_size, 8);
    assert_int_equal(b.batch_timeout_us, 16);
    assert_int_equal(w, 2);
    assert_int_equal(q, 5);

    cl_secmem_set_require_lock(false);
    cl_serve_ssl_config c;
    const char *st = "server_key: 'K';\nserver_cert: \"C\" \"2\",\ncustom_ca: '\\101'; client_verify: t";
    if (cl_serve_ssl_config_parse(st, strlen(st), &c, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(c.server_key, "K");
    assert_string_equal(c.server_cert, "C2");
    assert_string_equal(c.custom_ca, "A");
    assert_true(c.client_verify);
    cl_serve_ssl_config_clear(&c);
    assert_int_equal(cl_serve_ssl_config_parse("server_key: 'K' server_cert: 'C' tls: 1", 39, &c, &err), -1);
    assert_non_null(strstr(err.msg, "line 1: unknown field 'tls' in tensorflow.serving.SSLConfig"));

    const char *mt = "model_config_list < config: [{ name: 'a' base_path: '/a' }, { name: 'b', base_path: '/b', "
                     "model_version_policy < specific { versions: [2, 0x3] } > }] >";
    cl_repo_model_config *mc;
    size_t nm;
    if (cl_repo_config_parse(mt, strlen(mt), &mc, &nm, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(nm, 2);
    assert_string_equal(mc[1].base_path, "/b");
    assert_int_equal(mc[1].n_versions, 2);
    assert_int_equal(mc[1].versions[1], 3);
    cl_repo_config_free(mc, nm);
    const char *bad = "model_config_list { config { name: 'a' base_path: 'b'\n"
                      "model_version_policy { latest { num_versions: 65 } } } }";
    assert_int_equal(cl_repo_config_parse(bad, strlen(bad), &mc, &nm, &err), -1);
    if (!strstr(err.msg, "line 2: num_versions must be 0 to 64"))
        fail_msg("%s", err.msg);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_grammar),     cmocka_unit_test(test_duplicates),
        cmocka_unit_test(test_integer_ranges), cmocka_unit_test(test_errors),
        cmocka_unit_test(test_hostile),     cmocka_unit_test(test_locations),
        cmocka_unit_test(test_configs_accept_text_format),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
