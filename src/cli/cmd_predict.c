/* cmd_predict.c — `cloister predict`: one Predict call to a TF Serving server (gRPC or REST, TLS /
 * mutual TLS, optionally attesting the server) with images preprocessed to the model's signature,
 * encoded images, or .npy tensors; prints the top-k classes per batch element (with labels), or the
 * shapes and first values of non-classification outputs, or JSON. Parsing and printing only. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/engine.h"

#define MAX_LABELS_FILE ((size_t)16 << 20)

typedef struct labels {
    char **items;
    size_t n;
    uint8_t *buf;
} labels;

static int labels_load(const char *path, labels *l, cl_err *err)
{
    size_t len;
    memset(l, 0, sizeof *l);
    if (cl_file_read(path, MAX_LABELS_FILE, &l->buf, &len, err) != 0)
        return cl_err_prefix(err, "--labels");
    size_t lines = 1;
    for (size_t i = 0; i < len; i++)
        lines += l->buf[i] == '\n';
    if (!(l->items = calloc(lines, sizeof *l->items)))
        return cl_err_nomem(err);
    char *p = (char *)l->buf, *end = p + len;
    while (p < end) {
        char *nl = memchr(p, '\n', (size_t)(end - p));
        char *e = nl ? nl : end;
        if (e > p && e[-1] == '\r')
            e[-1] = '\0';
        *e = '\0';
        l->items[l->n++] = p;
        p = e + 1;
    }
    return 0;
}

static void labels_free(labels *l)
{
    free(l->items);
    free(l->buf);
}

static bool is_classifier_output(const cl_serve_tensor *t)
{
    return t->ndim == 2 && t->dims[1] >= 2 && cl_serve_dtype_size(t->dtype) && t->dtype != CL_SERVE_DT_BOOL;
}

/* The output to rank: --output, else (with --softmax) one called logits, else one whose name says
 * probabilities/scores, else the only classifier-shaped one ([batch, classes]); NULL when none fits. */
static const cl_serve_tensor *pick_output(const cl_client_response *r, const char *want, bool logits, cl_err *err,
                                          bool *bad)
{
    *bad = false;
    if (!want && logits) /* --softmax: the logits, when the model also answers probabilities */
        for (size_t i = 0; i < r->n_outputs; i++)
            if (strcmp(r->outputs[i].name, "logits") == 0 && is_classifier_output(&r->outputs[i]))
                return &r->outputs[i];
    if (want) {
        for (size_t i = 0; i < r->n_outputs; i++)
            if (strcmp(r->outputs[i].name, want) == 0)
                return &r->outputs[i];
        *bad = true;
        cl_err_set(err, CL_E_INVALID, "the response has no output '%s'", want);
        return NULL;
    }
    static const char *preferred[] = {"probabilities", "probs", "prob", "scores", "softmax", "predictions"};
    for (size_t k = 0; k < CL_ARRAY_LEN(preferred); k++)
        for (size_t i = 0; i < r->n_outputs; i++)
            if (strcmp(r->outputs[i].name, preferred[k]) == 0 && is_classifier_output(&r->outputs[i]))
                return &r->outputs[i];
    const cl_serve_tensor *only = NULL;
    for (size_t i = 0; i < r->n_outputs; i++)
        if (is_classifier_output(&r->outputs[i])) {
            if (only)
                return only; /* several: the first by name (e.g. "logits" before "probabilities" is handled above) */
            only = &r->outputs[i];
        }
    return only;
}

static void print_json_string(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_shape(const cl_serve_tensor *t)
{
    printf("[");
    for (int d = 0; d < t->ndim; d++)
        printf("%s%lld", d ? "," : "", (long long)t->dims[d]);
    printf("]");
}

/* The softmax of each row of a [rows, classes] numeric tensor, as a new DT_DOUBLE tensor of the same
 * name and shape (computed in double, the row's maximum subtracted first). */
static int softmax_rows(const cl_serve_tensor *t, cl_serve_tensor *out, cl_err *err)
{
    if (cl_serve_tensor_init(out, t->name, CL_SERVE_DT_DOUBLE, t->ndim, t->dims, 0, err) != 0)
        return -1;
    size_t rows = (size_t)t->dims[0], cols = (size_t)t->dims[1];
    double *d = out->data;
    for (size_t r = 0; r < rows; r++) {
        double mx = -INFINITY, sum = 0;
        for (size_t j = 0; j < cols; j++) {
            d[r * cols + j] = cl_client_tensor_value(t, r * cols + j);
            if (d[r * cols + j] > mx)
                mx = d[r * cols + j];
        }
        for (size_t j = 0; j < cols; j++)
            sum += d[r * cols + j] = exp(d[r * cols + j] - mx);
        for (size_t j = 0; j < cols; j++)
            d[r * cols + j] /= sum;
    }
    return 0;
}

/* Whether every row is already a probability distribution (non-negative, summing to 1). */
static bool rows_are_probabilities(const cl_serve_tensor *t)
{
    size_t rows = (size_t)t->dims[0], cols = (size_t)t->dims[1];
    for (size_t r = 0; r < rows; r++) {
        double sum = 0;
        for (size_t j = 0; j < cols; j++) {
            double v = cl_client_tensor_value(t, r * cols + j);
            if (v < 0)
                return false;
            sum += v;
        }
        if (fabs(sum - 1) > 1e-3)
            return false;
    }
    return rows > 0;
}

/* Writes the tensors this command decoded and preprocessed (the image batch) as .npy. */
static int dump_input(const char *path, const cl_cli_inputs *in, cl_err *err)
{
    if (in->n_tensors != 1 || in->n_bytes) /* a model whose image input is DT_STRING: sent encoded */
        return cl_err_set(err, CL_E_UNSUPPORTED, "--dump-input: the model takes encoded images (DT_STRING), so "
                          "nothing was preprocessed here");
    const cl_serve_tensor *t = &in->tensors[0];
    cl_engine_tensor et = {.dtype = t->dtype == CL_SERVE_DT_UINT8 ? CL_ENGINE_DT_UINT8 : CL_ENGINE_DT_FLOAT,
                           .rank = t->ndim, .data = t->data, .nbytes = t->nbytes};
    for (int d = 0; d < t->ndim; d++)
        et.dims[d] = t->dims[d];
    uint8_t *buf;
    size_t len;
    if (cl_engine_npy_write(&et, &buf, &len, err) != 0)
        return -1;
    int rc = cl_file_write_atomic(path, buf, len, 0644, true, err);
    free(buf);
    return rc != 0 ? cl_err_prefix(err, "--dump-input %s", path) : 0;
}

static const char *base_name(const char *p)
{
    const char *s = strrchr(p, '/');
    return s ? s + 1 : p;
}

int cl_cmd_predict(int argc, char **argv)
{
    cl_cli_client_args ca = {0};
    cl_cli_input_args ia = {.seed = 1};
    const char *model = NULL, *labels_file = NULL, *output = NULL, *signature = NULL, *dump = NULL;
    long version = 0, top = 5;
    bool json = false, softmax = false;
    cl_opt opts[CL_CLI_CLIENT_OPTS + CL_CLI_INPUT_OPTS + 12];
    size_t n = cl_cli_client_opts(&ca, opts);
    const cl_opt own[] = {
        {"model", CL_ARG_STRING, &model, "NAME", "model name", true},
        {"version", CL_ARG_LONG, &version, "V", "model version (default: the latest)", false, 1, INT64_MAX},
        {"signature", CL_ARG_STRING, &signature, "NAME", "signature (default: serving_default)", false},
        {"labels", CL_ARG_STRING, &labels_file, "FILE", "class labels, one per line (line 1 is class 0)", false},
        {"top", CL_ARG_LONG, &top, "K", "classes to print per batch element (default 5)", false, 1, 1000},
        {"output", CL_ARG_STRING, &output, "NAME", "the output holding class scores (default: probabilities-like, or "
                                                   "the only [batch, classes] output)", false},
        {"output-json", CL_ARG_FLAG, &json, NULL, "print the results as JSON", false},
        {"softmax", CL_ARG_FLAG, &softmax, NULL, "rank and print the softmax of the ranked output (for models that "
                                                 "answer logits)", false},
        {"dump-input", CL_ARG_STRING, &dump, "F.npy", "also write the preprocessed image tensor sent to the model as "
                                                      ".npy", false},
    };
    memcpy(opts + n, own, sizeof own);
    n += CL_ARRAY_LEN(own);
    n += cl_cli_input_opts(&ia, opts + n, true);
    const cl_cmd_usage usage = {
        "cloister predict --server HOST:PORT [--rest] [--ca CA --cert CERT --key KEY | --attest POLICY.json]\n"
        "                 --model NAME [--version V] (--image FILE... [--image-bytes] | --input [NAME=]X.npy... |\n"
        "                 --random [--seed N])\n"
        "                 [--preprocess torchvision | --resize F --center-crop --shorter-side S --mean M --std S]\n"
        "                 [--labels FILE] [--top K] [--softmax] [--output-json] [--dump-input F.npy]",
        "Sends one Predict request to a TensorFlow Serving server (gRPC, or REST with --rest) over TLS or mutual\n"
        "TLS and prints the top-K classes of each batch element. Images (JPEG/PNG; several form a batch; extra\n"
        "arguments are images too) are decoded here and preprocessed to the model's input as GetModelMetadata\n"
        "describes it: size and channels from the signature, NCHW or NHWC from where the channel dimension is,\n"
        "area resize, pixels scaled to [0,1] (--scale, --mean, --std to change). --preprocess torchvision is\n"
        "torchvision's ImageNet eval transform (Resize(256), CenterCrop(224), ToTensor, Normalize), to the pixel.\n"
        "--image-bytes sends the encoded files instead, as a DT_STRING tensor, for servers that decode images\n"
        "themselves.\n"
        "--attest POLICY.json: the server must present an RA-TLS certificate whose evidence verifies (sim evidence\n"
        "only with --trust-sim CERT; real SGX/TDX quotes with --dcap-root-ca and --dcap-collateral or --pccs-url,\n"
        "the key server's collateral options) and matches the policy; otherwise nothing is sent.\n"
        "Exit status: 0 success, 1 the request failed (the server's error is printed), 2 usage error."};
    cl_strlist positional = {0};
    int rc = cl_cli_parse(argc, argv, &usage, opts, n, &positional);
    if (rc >= 0) {
        cl_cli_client_close(&ca);
        cl_strlist_free(&ia.images);
        cl_strlist_free(&ia.npys);
        cl_strlist_free(&positional);
        return rc;
    }
    cl_err err = {0};
    cl_client_conn *conn = NULL;
    cl_cli_inputs in = {0};
    cl_client_response resp = {0};
    cl_serve_tensor soft = {0};
    labels lab = {0};
    const char **all_images = NULL;
    rc = CL_EXIT_USAGE;
    if (positional.count && !ia.images.count) {
        cl_err_set(&err, CL_E_INVALID, "unexpected argument '%s' (images are given with --image)", positional.items[0]);
        cl_cli_usage_error("predict", &err);
        goto out;
    }
    if (positional.count) {
        all_images = calloc(ia.images.count + positional.count, sizeof *all_images);
        if (!all_images)
            goto out;
        memcpy(all_images, ia.images.items, ia.images.count * sizeof *all_images);
        memcpy(all_images + ia.images.count, positional.items, positional.count * sizeof *all_images);
    }
    cl_strlist images = ia.images;
    if (all_images) {
        ia.images.items = all_images;
        ia.images.count += positional.count;
    }
    if (!ia.images.count && !ia.npys.count && !ia.random) {
        cl_err_set(&err, CL_E_INVALID, "nothing to send: give --image FILE, --input X.npy or --random");
        ia.images = images;
        cl_cli_usage_error("predict", &err);
        goto out;
    }
    if (dump && (!ia.images.count || ia.image_bytes)) {
        cl_err_set(&err, CL_E_INVALID, "--dump-input writes the preprocessed image tensor: it needs --image without "
                   "--image-bytes");
        ia.images = images;
        cl_cli_usage_error("predict", &err);
        goto out;
    }
    if (labels_file && labels_load(labels_file, &lab, &err) != 0) {
        ia.images = images;
        cl_cli_usage_error("predict", &err);
        goto out;
    }
    rc = CL_EXIT_FAIL;
    if (cl_cli_client_open(&ca, &err) != 0) {
        ia.images = images;
        rc = err.code == CL_E_INVALID ? cl_cli_usage_error("predict", &err) : cl_cli_fail("predict", &err);
        goto out;
    }
    if (!(conn = cl_client_connect(ca.client, &err))) {
        ia.images = images;
        cl_cli_fail("predict", &err);
        goto out;
    }
    cl_cli_print_attested("predict", conn);
    int brc = cl_cli_inputs_build(conn, model, version, &ia, 0, &in, &err);
    ia.images = images;
    if (brc != 0) {
        rc = err.code == CL_E_INVALID && cl_client_conn_last_code(conn) == CL_SC_OK ? cl_cli_usage_error("predict", &err)
                                                                                    : cl_cli_fail("predict", &err);
        goto out;
    }
    if (dump && dump_input(dump, &in, &err) != 0) {
        rc = err.code == CL_E_INVALID ? cl_cli_usage_error("predict", &err) : cl_cli_fail("predict", &err);
        goto out;
    }
    cl_client_request req = {.model = model, .version = version, .signature = signature};
    cl_cli_inputs_request(&in, &req);
    if (cl_client_predict(conn, &req, &resp, &err) != 0) {
        cl_cli_fail("predict", &err);
        goto out;
    }
    bool bad;
    const cl_serve_tensor *cls = pick_output(&resp, output, softmax, &err, &bad);
    if (bad) {
        cl_cli_fail("predict", &err);
        goto out;
    }
    if (softmax && !cls) {
        cl_err_set(&err, CL_E_INVALID, "--softmax: the response has no [batch, classes] output to rank%s",
                   output ? "" : " (choose one with --output NAME)");
        cl_cli_fail("predict", &err);
        goto out;
    }
    if (softmax) {
        if (rows_are_probabilities(cls))
            fprintf(stderr, "cloister predict: --softmax: output '%s' already holds probabilities (its rows sum to "
                    "1); the softmax of probabilities is not what it means (--output NAME picks the logits)\n",
                    cls->name);
        if (softmax_rows(cls, &soft, &err) != 0) {
            cl_cli_fail("predict", &err);
            goto out;
        }
        cls = &soft;
    }
    size_t k = (size_t)top;
    size_t *idx = calloc(k, sizeof *idx);
    double *score = calloc(k, sizeof *score);
    if (!idx || !score) {
        free(idx);
        free(score);
        goto out;
    }
    size_t rows = cls ? (size_t)cls->dims[0] : 0;
    if (json) {
        printf("{\"model\":");
        print_json_string(resp.model ? resp.model : model);
        printf(",\"version\":%lld", (long long)resp.version);
        if (cls) {
            printf(",\"output\":");
            print_json_string(cls->name);
            printf(",\"softmax\":%s,\"results\":[", softmax ? "true" : "false");
            for (size_t r = 0; r < rows; r++) {
                size_t got = cl_client_topk(cls, r, k, idx, score);
                printf("%s{\"input\":", r ? "," : "");
                if (r < in.n_sources)
                    print_json_string(in.sources[r]);
                else
                    printf("%zu", r);
                printf(",\"top\":[");
                for (size_t j = 0; j < got; j++) {
                    printf("%s{\"index\":%zu", j ? "," : "", idx[j]);
                    if (idx[j] < lab.n) {
                        printf(",\"label\":");
                        print_json_string(lab.items[idx[j]]);
                    }
                    printf(",\"score\":%.9g}", score[j]);
                }
                printf("]}");
            }
            printf("]");
        }
        printf(",\"outputs\":{");
        for (size_t i = 0; i < resp.n_outputs; i++) {
            const cl_serve_tensor *t = &resp.outputs[i];
            size_t cnt = t->nbytes / cl_serve_dtype_size(t->dtype);
            printf("%s", i ? "," : "");
            print_json_string(t->name);
            printf(":{\"dtype\":\"%s\",\"shape\":", cl_serve_dtype_name(t->dtype));
            print_shape(t);
            printf(",\"values\":[");
            for (size_t j = 0; j < cnt && j < 1000000; j++)
                printf("%s%.9g", j ? "," : "", cl_client_tensor_value(t, j));
            printf("]}");
        }
        printf("}}\n");
    } else if (cls) {
        for (size_t r = 0; r < rows; r++) {
            size_t got = cl_client_topk(cls, r, k, idx, score);
            if (r < in.n_sources)
                printf("%s:", base_name(in.sources[r]));
            else
                printf("[%zu]:", r);
            for (size_t j = 0; j < got; j++) {
                printf("%s %zu", j ? "," : "", idx[j]);
                if (idx[j] < lab.n)
                    printf(" \"%s\"", lab.items[idx[j]]);
                printf(" (%.6f)", score[j]);
            }
            printf("\n");
        }
    } else {
        for (size_t i = 0; i < resp.n_outputs; i++) {
            const cl_serve_tensor *t = &resp.outputs[i];
            size_t cnt = t->nbytes / cl_serve_dtype_size(t->dtype);
            printf("%s %s ", t->name, cl_serve_dtype_name(t->dtype));
            print_shape(t);
            printf(":");
            for (size_t j = 0; j < cnt && j < 10; j++)
                printf(" %.6g", cl_client_tensor_value(t, j));
            printf("%s\n", cnt > 10 ? " ..." : "");
        }
    }
    free(idx);
    free(score);
    if (fflush(stdout) != 0) {
        cl_err_set(&err, CL_E_IO, "cannot write the results");
        cl_cli_fail("predict", &err);
        goto out;
    }
    rc = CL_EXIT_OK;
out:
    free(all_images);
    cl_serve_tensor_clear(&soft);
    cl_client_response_clear(&resp);
    cl_cli_inputs_clear(&in);
    cl_client_conn_free(conn);
    cl_cli_client_close(&ca);
    labels_free(&lab);
    cl_strlist_free(&ia.images);
    cl_strlist_free(&ia.npys);
    cl_strlist_free(&positional);
    return rc;
}
