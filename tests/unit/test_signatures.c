/* test_signatures.c — signatures.json (cl_serve_sigset_parse) against a fixed model signature: what a
 * declaration becomes (aliases, tensor mapping, defaults, labels), and hostile and mistaken
 * declarations refused with a message naming the key: strict JSON, unknown keys, bounds, tensors the
 * model lacks, inputs left out or aliased twice, the rules of classification and regression
 * signatures. Also the model's signatures through the registry (cl_serve_model_sig_*). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/serve.h"
#include "testutil.h"

static const cl_serve_tensor_spec ins[] = {
    {.name = "x", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 4}},
    {.name = "ids", .dtype = CL_SERVE_DT_INT64, .ndim = 2, .dims = {-1, 2}},
};
static const cl_serve_tensor_spec outs[] = {
    {.name = "probs", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 3}},
    {.name = "value", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, 1}},
    {.name = "top", .dtype = CL_SERVE_DT_INT64, .ndim = 2, .dims = {-1, 1}},
    {.name = "free", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, -1}},
};
static const cl_serve_signature model = {"serving_default", CL_SERVE_METHOD_PREDICT, ins, 2, outs, 4};
static const cl_serve_tensor_spec dyn_ins[] = {{.name = "x", .dtype = CL_SERVE_DT_FLOAT, .ndim = 2, .dims = {-1, -1}}};
static const cl_serve_signature dyn_model = {"serving_default", CL_SERVE_METHOD_PREDICT, dyn_ins, 1, outs, 4};

static cl_serve_sigset *parse_ok(const char *doc)
{
    cl_serve_sigset *s = NULL;
    cl_err err = {0};
    int rc = cl_serve_sigset_parse(doc, strlen(doc), "sigs.json", &model, &s, &err);
    if (rc != 0)
        fail_msg("refused: %s\n%s", err.msg, doc);
    return s;
}

static void refused(const cl_serve_signature *m, const char *doc, const char *want)
{
    cl_serve_sigset *s = NULL;
    cl_err err = {0};
    if (cl_serve_sigset_parse(doc, strlen(doc), "sigs.json", m, &s, &err) == 0)
        fail_msg("accepted: %s", doc);
    assert_null(s);
    if (!strstr(err.msg, want))
        fail_msg("message '%s' does not contain '%s' (for %s)", err.msg, want, doc);
    assert_non_null(strstr(err.msg, "sigs.json"));
}

static void test_parse(void **state)
{
    (void)state;
    cl_serve_sigset *s = parse_ok(
        "{\"signatures\": {\"serving_default\": {},"
        " \"p\": {\"inputs\": {\"ids_alias\": \"ids\", \"feat\": \"x\"}, \"outputs\": {\"o1\": \"value\", \"o2\": \"value\"}},"
        " \"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\"},"
        "        \"labels\": [\"a\", \"b\", \"c\"]},"
        " \"r\": {\"method_name\": \"tensorflow/serving/regress\", \"outputs\": {\"outputs\": \"value\"}}}}");
    size_t n;
    const cl_serve_sigdef *d = cl_serve_sigset_defs(s, &n);
    assert_int_equal(n, 4);
    /* file order; no inputs/outputs: every tensor under its own name */
    assert_string_equal(d[0].sig.name, "serving_default");
    assert_string_equal(d[0].sig.method_name, CL_SERVE_METHOD_PREDICT);
    assert_int_equal(d[0].sig.n_inputs, 2);
    assert_int_equal(d[0].sig.n_outputs, 4);
    assert_string_equal(d[0].sig.outputs[3].name, "free");
    /* aliases, in declaration order, with the model tensor's dtype and shape */
    assert_string_equal(d[1].sig.inputs[0].name, "ids_alias");
    assert_int_equal(d[1].input_of[0], 1);
    assert_string_equal(d[1].input_tensor[0], "ids");
    assert_int_equal(d[1].sig.inputs[0].dtype, CL_SERVE_DT_INT64);
    assert_int_equal(d[1].sig.inputs[1].dims[1], 4);
    assert_int_equal(d[1].sig.n_outputs, 2); /* a subset, one output under two aliases */
    assert_string_equal(d[1].output_tensor[1], "value");
    assert_string_equal(d[2].sig.method_name, CL_SERVE_METHOD_CLASSIFY);
    assert_int_equal(d[2].n_labels, 3);
    assert_string_equal(d[2].labels[2], "c");
    assert_string_equal(d[3].sig.outputs[0].name, "outputs");
    cl_serve_sigset_free(s);
}

static void test_refusals(void **state)
{
    (void)state;
    const cl_serve_signature *m = &model;
    /* strict JSON */
    refused(m, "{\"signatures\": {\"a\": {}, \"a\": {}}}", "duplicate");
    refused(m, "{\"signatures\": {\"a\": {}}} {}", "line 1");
    refused(m, "{\"signatures\": {\"a\\u0000b\": {}}}", "line 1");
    refused(m, "{\"signatures\": {\"a\": {}}, \"extra\": 1}", "extra: unknown field");
    refused(m, "{\"signatures\": {\"a\": {\"method\": \"x\"}}}", "signatures.a.method: unknown field");
    refused(m, "[]", "");
    /* shapes of the document */
    refused(m, "{}", "signatures: an object of 1 to 64 signatures");
    refused(m, "{\"signatures\": {}}", "an object of 1 to 64");
    refused(m, "{\"signatures\": []}", "an object of 1 to 64");
    refused(m, "{\"signatures\": {\"a\": 1}}", "signatures.a: an object is needed");
    refused(m, "{\"signatures\": {\"\": {}}}", "a name of 1 to 128 bytes");
    refused(m, "{\"signatures\": {\"a\\tb\": {}}}", "control character 0x09");
    refused(m, "{\"signatures\": {\"a\": {\"method_name\": \"tensorflow/serving/train\"}}}", "is not a method");
    refused(m, "{\"signatures\": {\"a\": {\"method_name\": 3}}}", "method_name");
    refused(m, "{\"signatures\": {\"a\": {\"inputs\": []}}}", "an object of alias: tensor name");
    refused(m, "{\"signatures\": {\"a\": {\"inputs\": {\"q\": 1, \"r\": \"ids\"}}}}", "signatures.a.inputs.q");
    refused(m, "{\"signatures\": {\"a\": {\"outputs\": {}}}}", "at least one output");
    /* tensors */
    refused(m, "{\"signatures\": {\"a\": {\"inputs\": {\"q\": \"nosuch\", \"r\": \"ids\"}}}}",
            "'nosuch' is not an input of the model (its inputs: 'x', 'ids')");
    refused(m, "{\"signatures\": {\"a\": {\"outputs\": {\"q\": \"x\"}}}}", "'x' is not an output of the model");
    refused(m, "{\"signatures\": {\"a\": {\"inputs\": {\"q\": \"x\"}}}}", "the model input 'ids' has no alias");
    refused(m, "{\"signatures\": {\"a\": {\"inputs\": {\"q\": \"x\", \"r\": \"x\", \"s\": \"ids\"}}}}",
            "the model input 'x' already has the alias 'q'");
    /* classification and regression rules */
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\"}}}",
            "needs a \"scores\" or a \"classes\" output");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\", "
               "\"x\": \"value\"}}}}", "signatures.c.outputs.x: a classification signature has only the outputs");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"top\"}}}}",
            "the scores must be DT_FLOAT");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"classes\": \"value\"}}}}",
            "the classes must be DT_INT64 or DT_INT32");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\", "
               "\"classes\": \"top\"}}}}", "the scores have 3 columns but the classes 1");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\"}, "
               "\"labels\": [\"a\"]}}}", "1 labels for 3 score columns");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\"}, "
               "\"labels\": []}}}", "a list of 1 to 65536 strings");
    refused(m, "{\"signatures\": {\"c\": {\"method_name\": \"tensorflow/serving/classify\", \"outputs\": {\"scores\": \"probs\"}, "
               "\"labels\": [\"a\", \"\", \"c\"]}}}", "labels[1]");
    refused(m, "{\"signatures\": {\"p\": {\"labels\": [\"a\"]}}}", "only a classification signature");
    refused(m, "{\"signatures\": {\"r\": {\"method_name\": \"tensorflow/serving/regress\", \"outputs\": {\"outputs\": \"probs\"}}}}",
            "a regression output must be DT_FLOAT of shape [batch] or [batch, 1]");
    refused(m, "{\"signatures\": {\"r\": {\"method_name\": \"tensorflow/serving/regress\", \"outputs\": {\"value\": \"value\"}}}}",
            "exactly one output, \"outputs\"");
    refused(&dyn_model, "{\"signatures\": {\"r\": {\"method_name\": \"tensorflow/serving/regress\", \"outputs\": {\"outputs\": \"value\"}}}}",
            "dimension 1 of the input is dynamic");
    /* bounds */
    char *big = malloc(CL_SERVE_SIGS_FILE_MAX + 2);
    memset(big, ' ', CL_SERVE_SIGS_FILE_MAX + 1);
    big[CL_SERVE_SIGS_FILE_MAX + 1] = '\0';
    refused(m, big, "more than the");
    free(big);
    char doc[8192] = "{\"signatures\": {";
    for (int i = 0; i < 65; i++)
        snprintf(doc + strlen(doc), sizeof doc - strlen(doc), "%s\"s%d\": {}", i ? "," : "", i);
    strcat(doc, "}}");
    refused(m, doc, "1 to 64 signatures");
    char name[200];
    memset(name, 'n', 129);
    name[129] = '\0';
    snprintf(doc, sizeof doc, "{\"signatures\": {\"%s\": {}}}", name);
    refused(m, doc, "a name of 1 to 128 bytes is needed, not 129");
}

static int run_none(void *ctx, const cl_serve_tensor *in, size_t n, cl_serve_tensor **out, size_t *n_out, cl_err *err)
{
    (void)ctx, (void)in, (void)n, (void)out, (void)n_out;
    return cl_err_set(err, CL_E_INVALID, "not run here");
}

static void test_registry(void **state)
{
    (void)state;
    cl_serve_registry *r = cl_serve_registry_new(NULL);
    cl_serve_backend plain = {.signature = &model, .run = run_none};
    assert_int_equal(cl_serve_registry_add(r, "plain", 1, &plain, NULL), 0);
    cl_serve_sigset *s = parse_ok("{\"signatures\": {\"first\": {}, \"second\": {\"outputs\": {\"v\": \"value\"}}}}");
    cl_serve_backend b = {.signature = &model, .run = run_none};
    b.sigdefs = cl_serve_sigset_defs(s, &b.n_sigdefs);
    assert_int_equal(cl_serve_registry_add(r, "sigs", 1, &b, NULL), 0);
    cl_serve_model *m = cl_serve_registry_get(r, "plain", 0, NULL);
    cl_serve_sigdef d;
    assert_int_equal(cl_serve_model_sig_count(m), 1);
    assert_true(cl_serve_model_sig_find(m, "", &d));
    assert_string_equal(d.sig.name, "serving_default");
    assert_null(d.input_of); /* the identity view */
    assert_true(cl_serve_model_sig_find(m, "serving_default", &d));
    assert_false(cl_serve_model_sig_find(m, "other", &d));
    cl_serve_model_release(m);
    m = cl_serve_registry_get(r, "sigs", 0, NULL);
    assert_int_equal(cl_serve_model_sig_count(m), 2);
    assert_false(cl_serve_model_sig_find(m, NULL, &d)); /* no serving_default declared */
    assert_true(cl_serve_model_sig_find(m, "second", &d));
    assert_int_equal(d.sig.n_outputs, 1);
    cl_serve_model_sig_at(m, 0, &d);
    assert_string_equal(d.sig.name, "first");
    cl_serve_model_release(m);
    cl_serve_registry_free(r);
    cl_serve_sigset_free(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_refusals),
        cmocka_unit_test(test_registry),
    };
    return cmocka_run_group_tests_name("signatures", tests, NULL, NULL);
}
