/* client_common.c — what `cloister predict` and `cloister bench` share: the connection options
 * (server, --rest, TLS, --attest with --trust-sim and the DCAP collateral options) and the input options (--image, --image-bytes,
 * --input x.npy, --random, normalisation), turned into a cl_client and a request's tensors. Parsing and
 * wiring only: the work is done by the client, image and engine (.npy) modules. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/engine.h"

#define MAX_INPUT_FILE ((size_t)1 << 30)

size_t cl_cli_client_opts(cl_cli_client_args *a, cl_opt *o)
{
    const cl_opt t[CL_CLI_CLIENT_OPTS] = {
        {"server", CL_ARG_STRING, &a->server, "HOST:PORT", "the TF Serving server (gRPC port, or REST port with --rest)",
         true},
        {"rest", CL_ARG_FLAG, &a->rest, NULL, "use the REST API (HTTP/1.1) instead of gRPC", false},
        {"ca", CL_ARG_STRING, &a->ca, "FILE", "CA of the server certificate (default: the system's CAs)", false},
        {"cert", CL_ARG_STRING, &a->cert, "FILE", "client certificate for mutual TLS (PEM)", false},
        {"key", CL_ARG_STRING, &a->key, "FILE", "client private key (PEM)", false},
        {"server-name", CL_ARG_STRING, &a->server_name, "NAME", "name to check in the server certificate (default: "
                                                                "HOST)", false},
        {"attest", CL_ARG_STRING, &a->attest, "POLICY.json", "require an RA-TLS server whose attested identity matches "
                                                             "this policy (replaces the CA check)", false},
        {"trust-sim", CL_ARG_LIST, &a->trust_sim, "CERT", "with --attest: accept sim evidence signed by this "
                                                          "simulated quoting key (INSECURE, development)", false},
        {"plaintext", CL_ARG_FLAG, &a->plaintext, NULL, "no TLS (h2c / http); only for servers started with "
                                                        "--plaintext", false},
        {"timeout-ms", CL_ARG_LONG, &a->timeout_ms, "MS", "connect, handshake and per-request timeout (default "
                                                          "30000)", false, 100, 3600000},
    };
    size_t n = 0;
    for (size_t i = 0; i < CL_ARRAY_LEN(t); i++)
        if (t[i].dest)
            o[n++] = t[i];
    return n + cl_cli_dcap_opts(&a->dcap, o + n);
}

size_t cl_cli_input_opts(cl_cli_input_args *a, cl_opt *o, bool with_random)
{
    const cl_opt t[CL_CLI_INPUT_OPTS] = {
        {"image", CL_ARG_LIST, &a->images, "FILE", "a JPEG or PNG image (repeat: a batch), preprocessed here to the "
                                                   "model's input shape", false},
        {"image-bytes", CL_ARG_FLAG, &a->image_bytes, NULL, "send the encoded images as a DT_STRING tensor (servers "
                                                            "that decode images)", false},
        {"input", CL_ARG_LIST, &a->npys, "[NAME=]X.npy", "an input tensor from a .npy file (repeat for several "
                                                         "inputs)", false},
        {"random", CL_ARG_FLAG, &a->random, NULL, "random inputs valid for the model's signature: numbers of each "
                                                  "input's dtype and shape, random PNG images for DT_STRING inputs",
         false},
        {"seed", CL_ARG_LONG, &a->seed, "N", "with --random: the seed (default 1; the same seed, the same inputs)",
         false, 0, INT64_MAX},
        {"dim", CL_ARG_LONG, &a->dim, "N", "with --random: the size of every dynamic dimension after the batch "
                                           "(default: such inputs are refused)", false, 1, 1 << 20},
        {"input-name", CL_ARG_STRING, &a->input_name, "NAME", "the input the images go to (default: the model's only "
                                                              "image input)", false},
        {"size", CL_ARG_STRING, &a->size, "WxH", "image size, when the model leaves it dynamic (with --random: the "
                                                 "size of the PNG images, default 224x224)", false},
        {"preprocess", CL_ARG_STRING, &a->preprocess, "torchvision", "torchvision's ImageNet eval transform: PIL "
                                                                     "bilinear resize of the shorter side to 256 (for "
                                                                     "224; 8/7 of the input size), centre crop, /255, "
                                                                     "ImageNet mean and std (each can be changed by "
                                                                     "its own option)", false},
        {"resize", CL_ARG_STRING, &a->resize, "area|bilinear|pil", "resize filter (default area; pil: PIL's 8-bit "
                                                                   "bilinear, as torchvision's Resize on PIL "
                                                                   "images)", false},
        {"center-crop", CL_ARG_FLAG, &a->center_crop, NULL, "keep the aspect ratio: resize to cover the input size, "
                                                            "then take the centre (default: stretch)", false},
        {"shorter-side", CL_ARG_LONG, &a->shorter_side, "S", "with a centre crop: resize the shorter side to S first "
                                                             "(torchvision Resize(S) + CenterCrop; implies "
                                                             "--center-crop)", false, 1, 65536},
        {"scale", CL_ARG_STRING, &a->scale, "S", "pixel scale before mean/std (default 1/255: pixels in [0,1])", false},
        {"mean", CL_ARG_STRING, &a->mean, "M[,M,M]", "per-channel mean subtracted after scaling (default 0)", false},
        {"std", CL_ARG_STRING, &a->std, "S[,S,S]", "per-channel divisor after the mean (default 1); ImageNet: --mean "
                                                   "0.485,0.456,0.406 --std 0.229,0.224,0.225", false},
    };
    size_t n = 0;
    for (size_t i = 0; i < CL_ARRAY_LEN(t); i++) {
        bool random_only = strcmp(t[i].name, "random") == 0 || strcmp(t[i].name, "seed") == 0 ||
                           strcmp(t[i].name, "dim") == 0;
        if (with_random || !random_only)
            o[n++] = t[i];
    }
    return n;
}

int cl_cli_client_open(cl_cli_client_args *a, cl_err *err)
{
    if (a->attest) {
        if (!(a->policy = cl_policy_load(a->attest, err)))
            return cl_err_prefix(err, "--attest %s", a->attest);
        if (cl_policy_identity_count(a->policy) == 0)
            return cl_err_set(err, CL_E_INVALID, "--attest %s: the policy names no identity, so every server would be "
                              "refused", a->attest);
        if (!(a->verifier = cl_attest_verifier_new(err)))
            return -1;
        for (size_t i = 0; i < a->trust_sim.count; i++)
            if (cl_attest_verifier_trust_sim_file(a->verifier, a->trust_sim.items[i], err) != 0)
                return cl_err_prefix(err, "--trust-sim %s", a->trust_sim.items[i]);
        const cl_dcap_config *dc = cl_cli_dcap_config(&a->dcap, 0);
        if (dc && (!(a->dcap_source = cl_dcap_source_new(dc, err)) ||
                   cl_attest_verifier_add_backend(a->verifier, "dcap", cl_dcap_source_backend, a->dcap_source,
                                                  err) != 0))
            return -1;
    } else if (a->trust_sim.count || cl_cli_dcap_given(&a->dcap)) {
        return cl_err_set(err, CL_E_INVALID, "%s only used with --attest POLICY.json",
                          a->trust_sim.count ? "--trust-sim is" : "the DCAP collateral options are");
    }
    cl_client_options o = {.server = a->server, .rest = a->rest, .plaintext = a->plaintext, .ca_file = a->ca,
                           .cert_file = a->cert, .key_file = a->key, .server_name = a->server_name,
                           .attest_policy = a->policy, .verifier = a->verifier, .timeout_ms = (int)a->timeout_ms};
    if (!(a->client = cl_client_new(&o, err)))
        return -1;
    return 0;
}

void cl_cli_client_close(cl_cli_client_args *a)
{
    cl_client_free(a->client);
    cl_attest_verifier_free(a->verifier);
    cl_dcap_source_free(a->dcap_source);
    cl_policy_free(a->policy);
    cl_strlist_free(&a->trust_sim);
    cl_cli_dcap_free(&a->dcap);
    a->client = NULL;
    a->verifier = NULL;
    a->dcap_source = NULL;
    a->policy = NULL;
}

void cl_cli_print_attested(const char *cmd, const cl_client_conn *conn)
{
    const cl_attest_claims *c = cl_client_conn_claims(conn);
    if (!c)
        return;
    char mr[2 * CL_TDX_MEAS_LEN + 1];
    if (c->tee_type == CL_QUOTE_TEE_TDX) {
        cl_hex_encode(c->tdx.mr_td, CL_TDX_MEAS_LEN, mr);
        fprintf(stderr, "cloister %s: server attested (%s evidence%s, TDX): mrtd %.16s...; it matches the policy\n",
                cmd, c->evidence_type, c->insecure ? ", INSECURE" : "", mr);
        return;
    }
    cl_hex_encode(c->mr_enclave, 32, mr);
    fprintf(stderr, "cloister %s: server attested (%s evidence%s): mrenclave %.16s..., isv_svn %u; it matches the "
            "policy\n", cmd, c->evidence_type, c->insecure ? ", INSECURE" : "", mr, c->isv_svn);
}

/* ---------------------------------------------------------------- inputs */

static int dtype_from_engine(cl_engine_dtype d, cl_serve_dtype *out)
{
    switch (d) {
    case CL_ENGINE_DT_FLOAT: *out = CL_SERVE_DT_FLOAT; return 0;
    case CL_ENGINE_DT_DOUBLE: *out = CL_SERVE_DT_DOUBLE; return 0;
    case CL_ENGINE_DT_INT32: *out = CL_SERVE_DT_INT32; return 0;
    case CL_ENGINE_DT_INT64: *out = CL_SERVE_DT_INT64; return 0;
    case CL_ENGINE_DT_UINT8: *out = CL_SERVE_DT_UINT8; return 0;
    case CL_ENGINE_DT_INT8: *out = CL_SERVE_DT_INT8; return 0;
    case CL_ENGINE_DT_BOOL: *out = CL_SERVE_DT_BOOL; return 0;
    default: return -1;
    }
}

static int add_tensor(cl_cli_inputs *in, cl_serve_tensor *t, cl_err *err)
{
    cl_serve_tensor *p = realloc(in->tensors, (in->n_tensors + 1) * sizeof *p);
    if (!p) {
        cl_serve_tensor_clear(t);
        return cl_err_nomem(err);
    }
    in->tensors = p;
    in->tensors[in->n_tensors++] = *t;
    return 0;
}

/* Repeats a batch-1 tensor `batch` times along its first dimension. */
static int tile(cl_serve_tensor *t, int64_t batch, cl_err *err)
{
    if (batch <= 0 || t->ndim < 1 || t->dims[0] == batch)
        return 0;
    if (t->dims[0] != 1)
        return cl_err_set(err, CL_E_INVALID, "input '%s' has a batch of %lld; --batch %lld needs the same batch or a "
                          "batch of 1 to repeat", t->name, (long long)t->dims[0], (long long)batch);
    size_t one = t->nbytes;
    if (one && (size_t)batch > ((size_t)1 << 31) / one)
        return cl_err_set(err, CL_E_INVALID, "--batch %lld makes input '%s' larger than 2 GiB", (long long)batch,
                          t->name);
    uint8_t *d = malloc(one * (size_t)batch + 1);
    if (!d)
        return cl_err_nomem(err);
    for (int64_t i = 0; i < batch; i++)
        memcpy(d + (size_t)i * one, t->data, one);
    free(t->data);
    t->data = d;
    t->nbytes = one * (size_t)batch;
    t->dims[0] = batch;
    return 0;
}

static const cl_serve_tensor_spec *find_spec(const cl_client_metadata *md, const char *name)
{
    for (size_t i = 0; i < md->n_inputs; i++)
        if (strcmp(md->inputs[i].name, name) == 0)
            return &md->inputs[i];
    return NULL;
}

static int load_npy(const char *arg, const cl_client_metadata *md, int64_t batch, cl_cli_inputs *in, cl_err *err)
{
    const char *eq = strchr(arg, '=');
    const char *file = eq ? eq + 1 : arg;
    char name[256];
    if (eq) {
        if ((size_t)(eq - arg) >= sizeof name || eq == arg)
            return cl_err_set(err, CL_E_INVALID, "--input %s: the input name is empty or too long", arg);
        memcpy(name, arg, (size_t)(eq - arg));
        name[eq - arg] = '\0';
    } else {
        if (!md || md->n_inputs != 1)
            return cl_err_set(err, CL_E_INVALID, "--input %s: the model has %zu inputs; name it: --input NAME=%s", arg,
                              md ? md->n_inputs : 0, file);
        snprintf(name, sizeof name, "%s", md->inputs[0].name);
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    cl_engine_tensor et = {0};
    if (cl_file_read(file, MAX_INPUT_FILE, &buf, &len, err) != 0 || cl_engine_npy_parse(buf, len, &et, err) != 0) {
        free(buf);
        return cl_err_prefix(err, "--input %s", file);
    }
    free(buf);
    cl_serve_tensor t = {0};
    cl_serve_dtype dt;
    int rc = -1;
    if (dtype_from_engine(et.dtype, &dt) != 0) {
        cl_err_set(err, CL_E_UNSUPPORTED, "--input %s: dtype %s cannot be sent (float32/64, int8/32/64, uint8 and bool "
                   "can)", file, cl_engine_dtype_name(et.dtype));
        goto out;
    }
    if (et.rank > CL_SERVE_MAX_DIMS) {
        cl_err_set(err, CL_E_UNSUPPORTED, "--input %s: rank %d is too high", file, et.rank);
        goto out;
    }
    if (cl_serve_tensor_init(&t, name, dt, et.rank, et.dims, 0, err) != 0)
        goto out;
    memcpy(t.data, et.data, t.nbytes);
    if (tile(&t, batch, err) != 0) {
        cl_serve_tensor_clear(&t);
        goto out;
    }
    if (t.ndim >= 1 && (in->batch < 0 || in->batch == 1))
        in->batch = t.dims[0];
    rc = add_tensor(in, &t, err);
out:
    cl_engine_tensor_release(&et);
    return rc;
}

/* xorshift64*: a small seeded generator, so that --random inputs are the same from run to run */
static uint64_t rnd_next(uint64_t *x)
{
    *x ^= *x >> 12, *x ^= *x << 25, *x ^= *x >> 27;
    return *x * 0x2545f4914f6cdd1dull;
}

static double rnd_unit(uint64_t *x) { return (double)(rnd_next(x) >> 11) / 9007199254740992.0; }

static int parse_size(const char *s, uint32_t *w, uint32_t *h, cl_err *err)
{
    unsigned a, b;
    char extra;
    if (sscanf(s, "%ux%u%c", &a, &b, &extra) != 2 || a == 0 || b == 0 || a > 65536 || b > 65536)
        return cl_err_set(err, CL_E_INVALID, "--size must be WIDTHxHEIGHT, e.g. 224x224");
    *w = a;
    *h = b;
    return 0;
}

/* n random RGB PNG images of w x h (noise: as costly to decode as a photo), one per batch element. */
static int random_images(const cl_serve_tensor_spec *s, int64_t n, uint32_t w, uint32_t h, uint64_t *x,
                         cl_cli_inputs *in, cl_err *err)
{
    if (in->bytes_name)
        return cl_err_set(err, CL_E_UNSUPPORTED, "--random: the model has two DT_STRING inputs ('%s', '%s'); only "
                          "one can be sent as images", in->bytes_name, s->name);
    if (s->ndim == 0 || s->ndim > 1 || (s->ndim == 1 && s->dims[0] > 0 && s->dims[0] != n && n != 1))
        return cl_err_set(err, CL_E_UNSUPPORTED, "--random: DT_STRING input '%s' is not a batch of encoded images "
                          "(shape [N]); use --input or --image", s->name);
    if (s->ndim == 1 && s->dims[0] > 0)
        n = s->dims[0];
    if ((uint64_t)w * h > CL_IMAGE_MAX_PIXELS_DEFAULT)
        return cl_err_set(err, CL_E_INVALID, "--size %ux%u: too large for random images", w, h);
    if ((uint64_t)n * w * h * 3 > ((uint64_t)1 << 30)) /* noise does not compress: about 3 bytes a pixel */
        return cl_err_set(err, CL_E_INVALID, "--random: %lld images of %ux%u would be more than 1 GiB of PNG; use a "
                          "smaller --batch or --size", (long long)n, w, h);
    in->bytes = calloc((size_t)n, sizeof *in->bytes);
    in->bytes_len = calloc((size_t)n, sizeof *in->bytes_len);
    in->bytes_name = strdup(s->name);
    cl_image img = {.width = w, .height = h, .channels = 3, .pixels = malloc((size_t)w * h * 3)};
    if (!in->bytes || !in->bytes_len || !in->bytes_name || !img.pixels) {
        free(img.pixels);
        return cl_err_nomem(err);
    }
    for (int64_t i = 0; i < n; i++) {
        for (size_t k = 0; k < (size_t)w * h * 3; k += 8) {
            uint64_t r = rnd_next(x);
            for (size_t j = 0; j < 8 && k + j < (size_t)w * h * 3; j++)
                img.pixels[k + j] = (uint8_t)(r >> (8 * j));
        }
        if (cl_image_encode_png(&img, &in->bytes[i], &in->bytes_len[i], err) != 0) {
            free(img.pixels);
            return -1;
        }
        in->n_bytes++;
    }
    free(img.pixels);
    in->batch = n;
    return 0;
}

/* Random values valid for input `s`: the dtype and shape the signature gives (the batch for a dynamic
 * first dimension, --dim for other dynamic ones); floats in [0, 1), uint8 0..255, int8 -128..127, other
 * integers 0..9 (valid indices for any dimension of 10 or more), bools false/true; encoded images for
 * DT_STRING. */
static int random_input(const cl_serve_tensor_spec *s, const cl_cli_input_args *a, int64_t batch, uint64_t *x,
                        cl_cli_inputs *in, cl_err *err)
{
    if (s->dtype == CL_SERVE_DT_STRING) {
        uint32_t w = 224, h = 224;
        if (a->size && parse_size(a->size, &w, &h, err) != 0)
            return -1;
        return random_images(s, batch > 0 ? batch : 1, w, h, x, in, err);
    }
    if (s->ndim < 0)
        return cl_err_set(err, CL_E_UNSUPPORTED, "--random: input '%s' has no fixed rank; use --input", s->name);
    if (!cl_serve_dtype_size(s->dtype))
        return cl_err_set(err, CL_E_UNSUPPORTED, "--random: input '%s' is %s, which cannot be generated", s->name,
                          cl_serve_dtype_name(s->dtype));
    int64_t dims[CL_SERVE_MAX_DIMS];
    for (int d = 0; d < s->ndim; d++) {
        dims[d] = s->dims[d];
        if (dims[d] < 0 && d == 0)
            dims[d] = batch > 0 ? batch : 1;
        else if (dims[d] < 0 && a->dim > 0)
            dims[d] = a->dim;
        else if (dims[d] < 0)
            return cl_err_set(err, CL_E_INVALID, "--random: input '%s' has a dynamic dimension %d besides the batch; "
                              "give its size with --dim N", s->name, d);
    }
    cl_serve_tensor t;
    if (cl_serve_tensor_init(&t, s->name, s->dtype, s->ndim, dims, (size_t)1 << 31, err) != 0)
        return cl_err_prefix(err, "--random");
    size_t n = t.nbytes / cl_serve_dtype_size(t.dtype);
    for (size_t i = 0; i < n; i++) {
        double v = rnd_unit(x);
        switch (t.dtype) {
        case CL_SERVE_DT_FLOAT: ((float *)t.data)[i] = (float)v; break;
        case CL_SERVE_DT_DOUBLE: ((double *)t.data)[i] = v; break;
        case CL_SERVE_DT_UINT8: ((uint8_t *)t.data)[i] = (uint8_t)(v * 256); break;
        case CL_SERVE_DT_INT8: ((int8_t *)t.data)[i] = (int8_t)((int)(v * 256) - 128); break;
        case CL_SERVE_DT_INT32: ((int32_t *)t.data)[i] = (int32_t)(v * 10); break;
        case CL_SERVE_DT_INT64: ((int64_t *)t.data)[i] = (int64_t)(v * 10); break;
        case CL_SERVE_DT_BOOL: ((uint8_t *)t.data)[i] = v >= 0.5; break;
        default: break;
        }
    }
    if (s->ndim >= 1 && (in->batch < 0 || in->batch == 1))
        in->batch = t.dims[0];
    return add_tensor(in, &t, err);
}

static const float imagenet_mean[3] = {0.485f, 0.456f, 0.406f}, imagenet_std[3] = {0.229f, 0.224f, 0.225f};

static int image_opts(const cl_cli_input_args *a, cl_client_image_opts *o, cl_err *err)
{
    memset(o, 0, sizeof *o);
    o->resize = CL_IMAGE_RESIZE_AREA;
    if (a->preprocess) {
        if (strcmp(a->preprocess, "torchvision") != 0)
            return cl_err_set(err, CL_E_INVALID, "--preprocess knows 'torchvision' (ImageNet eval transform), not '%s'",
                              a->preprocess);
        o->resize = CL_IMAGE_RESIZE_PIL;
        o->fit = CL_IMAGE_FIT_CROP;
        o->crop_fraction = 0.875; /* the crop is 7/8 of the shorter side: 224 of 256 */
        memcpy(o->mean, imagenet_mean, sizeof o->mean);
        memcpy(o->std, imagenet_std, sizeof o->std);
    }
    if (a->resize) {
        if (strcmp(a->resize, "area") == 0)
            o->resize = CL_IMAGE_RESIZE_AREA;
        else if (strcmp(a->resize, "bilinear") == 0)
            o->resize = CL_IMAGE_RESIZE_BILINEAR;
        else if (strcmp(a->resize, "pil") == 0)
            o->resize = CL_IMAGE_RESIZE_PIL;
        else
            return cl_err_set(err, CL_E_INVALID, "--resize must be area, bilinear or pil, not '%s'", a->resize);
    }
    if (a->center_crop || a->shorter_side)
        o->fit = CL_IMAGE_FIT_CROP;
    if (a->shorter_side)
        o->shorter_side = (uint32_t)a->shorter_side;
    else if (a->center_crop)
        o->crop_fraction = 0; /* just cover the input size */
    if (a->scale) {
        char *end;
        errno = 0;
        o->scale = strtof(a->scale, &end);
        if (*end || end == a->scale || errno || o->scale == 0)
            return cl_err_set(err, CL_E_INVALID, "--scale must be a non-zero number, e.g. 0.00392157 (1/255)");
    }
    if (a->mean && cl_client_parse_floats3(a->mean, o->mean, err) != 0)
        return cl_err_prefix(err, "--mean");
    if (a->std) {
        if (cl_client_parse_floats3(a->std, o->std, err) != 0)
            return cl_err_prefix(err, "--std");
        for (int i = 0; i < 3; i++)
            if (o->std[i] == 0)
                return cl_err_set(err, CL_E_INVALID, "--std values must not be 0");
    }
    if (a->size && parse_size(a->size, &o->width, &o->height, err) != 0)
        return -1;
    return 0;
}

int cl_cli_inputs_build(cl_client_conn *conn, const char *model, int64_t version, const cl_cli_input_args *a,
                        int64_t batch, cl_cli_inputs *in, cl_err *err)
{
    memset(in, 0, sizeof *in);
    in->batch = -1;
    int sources = (a->images.count > 0) + (a->npys.count > 0) + a->random;
    if (sources != 1)
        return cl_err_set(err, CL_E_INVALID, sources ? "give only one of --image, --input and --random"
                                                     : "nothing to send: give --image FILE, --input X.npy or --random");
    if (a->image_bytes && !a->images.count)
        return cl_err_set(err, CL_E_INVALID, "--image-bytes goes with --image");
    if (!a->images.count && (a->mean || a->std || a->scale || a->resize || a->preprocess || a->center_crop ||
                             a->shorter_side))
        return cl_err_set(err, CL_E_INVALID, "--mean, --std, --scale, --resize, --preprocess, --center-crop and "
                          "--shorter-side apply to --image");
    if (a->size && !a->images.count && !a->random)
        return cl_err_set(err, CL_E_INVALID, "--size applies to --image and --random");
    if (!a->random && a->dim)
        return cl_err_set(err, CL_E_INVALID, "--dim applies to --random");
    if (a->image_bytes && (a->mean || a->std || a->scale || a->resize || a->preprocess || a->center_crop ||
                           a->shorter_side))
        return cl_err_set(err, CL_E_INVALID, "--image-bytes sends the files as they are: the preprocessing options "
                          "do not apply (the server preprocesses)");
    cl_client_image_opts io;
    if (a->images.count && image_opts(a, &io, err) != 0)
        return -1;
    bool need_md = (a->images.count && !(a->image_bytes && a->input_name)) || a->random;
    for (size_t i = 0; i < a->npys.count; i++)
        if (!strchr(a->npys.items[i], '='))
            need_md = true;
    cl_client_metadata md = {0};
    bool have_md = false;
    int rc = -1;
    if (need_md) {
        if (cl_client_get_metadata(conn, model, version, &md, err) != 0) {
            cl_err_prefix(err, "reading the model's signature (GetModelMetadata)");
            goto out;
        }
        have_md = true;
    }
    if (a->random) {
        uint64_t x = 0x9e3779b97f4a7c15ull ^ ((uint64_t)a->seed * 0xbf58476d1ce4e5b9ull);
        if (!x)
            x = 1;
        for (size_t i = 0; i < md.n_inputs; i++)
            if (random_input(&md.inputs[i], a, batch, &x, in, err) != 0)
                goto out;
    }
    for (size_t i = 0; i < a->npys.count; i++)
        if (load_npy(a->npys.items[i], have_md ? &md : NULL, batch, in, err) != 0)
            goto out;
    if (a->images.count) {
        size_t n = batch > 0 ? (size_t)batch : a->images.count;
        if (batch > 0 && a->images.count != 1 && (size_t)batch != a->images.count) {
            cl_err_set(err, CL_E_INVALID, "--batch %lld with %zu images: give one image (repeated) or exactly %lld",
                       (long long)batch, a->images.count, (long long)batch);
            goto out;
        }
        uint8_t **files = calloc(a->images.count, sizeof *files);
        size_t *lens = calloc(a->images.count, sizeof *lens);
        in->sources = calloc(n, sizeof *in->sources);
        if (!files || !lens || !in->sources) {
            free(files);
            free(lens);
            cl_err_nomem(err);
            goto out;
        }
        in->n_sources = n;
        bool ok = true;
        for (size_t i = 0; ok && i < a->images.count; i++)
            if (cl_file_read(a->images.items[i], MAX_INPUT_FILE, &files[i], &lens[i], err) != 0) {
                cl_err_prefix(err, "--image");
                ok = false;
            }
        for (size_t i = 0; i < n; i++)
            in->sources[i] = a->images.items[a->images.count == 1 ? 0 : i];
        const cl_serve_tensor_spec *spec = NULL;
        if (ok && have_md) {
            if (a->input_name && !(spec = find_spec(&md, a->input_name))) {
                cl_err_set(err, CL_E_INVALID, "the model has no input '%s'", a->input_name);
                ok = false;
            } else if (!spec) {
                /* encoded images go to a DT_STRING input, else (a server that decodes them for its image
                 * input) to the image input; decoded images go to the rank-4 input */
                for (int pass = a->image_bytes ? 0 : 1; ok && !spec && pass < 2; pass++)
                    for (size_t i = 0; i < md.n_inputs; i++) {
                        bool fits = pass == 0 ? md.inputs[i].dtype == CL_SERVE_DT_STRING
                                              : md.inputs[i].ndim == 4;
                        if (fits && spec) {
                            cl_err_set(err, CL_E_INVALID, "the model has several inputs that could take the images "
                                       "('%s', '%s'): choose with --input-name", spec->name, md.inputs[i].name);
                            ok = false;
                            break;
                        }
                        if (fits)
                            spec = &md.inputs[i];
                    }
                if (ok && !spec && md.n_inputs == 1)
                    spec = &md.inputs[0];
                if (ok && !spec) {
                    cl_err_set(err, CL_E_INVALID, "the model has no input that takes %s (inputs: %zu); choose one with "
                               "--input-name", a->image_bytes ? "encoded images (DT_STRING)" : "images (rank 4)",
                               md.n_inputs);
                    ok = false;
                }
            }
        }
        /* a server that shows the input as DT_STRING decodes images itself: send them encoded */
        bool send_bytes = a->image_bytes || (spec && spec->dtype == CL_SERVE_DT_STRING);
        if (ok && send_bytes) {
            in->bytes = calloc(n, sizeof *in->bytes);
            in->bytes_len = calloc(n, sizeof *in->bytes_len);
            in->bytes_name = strdup(spec ? spec->name : a->input_name);
            if (!in->bytes || !in->bytes_len || !in->bytes_name) {
                cl_err_nomem(err);
                ok = false;
            }
            for (size_t i = 0; ok && i < n; i++) {
                size_t src = a->images.count == 1 ? 0 : i;
                in->bytes[i] = malloc(lens[src] ? lens[src] : 1);
                if (!in->bytes[i]) {
                    cl_err_nomem(err);
                    ok = false;
                    break;
                }
                memcpy(in->bytes[i], files[src], lens[src]);
                in->bytes_len[i] = lens[src];
                in->n_bytes++;
            }
            in->batch = (int64_t)n;
        } else if (ok) {
            const uint8_t **imgs = calloc(n, sizeof *imgs);
            size_t *ilens = calloc(n, sizeof *ilens);
            cl_serve_tensor t;
            if (!imgs || !ilens) {
                cl_err_nomem(err);
                ok = false;
            }
            for (size_t i = 0; ok && i < n; i++) {
                size_t src = a->images.count == 1 ? 0 : i;
                imgs[i] = files[src];
                ilens[i] = lens[src];
            }
            if (ok && cl_client_images_to_tensor(spec, &io, imgs, ilens, n, &t, err) != 0) {
                /* name the file rather than its index */
                const char *p = strstr(err->msg, "image ");
                size_t idx = p ? strtoul(p + 6, NULL, 10) : 0;
                if (idx >= 1 && idx <= n) {
                    cl_err e2 = *err;
                    const char *rest = strchr(p, ':');
                    cl_err_set(err, e2.code, "--image %s%s", in->sources[idx - 1], rest ? rest : "");
                }
                ok = false;
            }
            if (ok) {
                ok = add_tensor(in, &t, err) == 0;
                in->batch = (int64_t)n;
            }
            free(imgs);
            free(ilens);
        }
        for (size_t i = 0; i < a->images.count; i++)
            free(files[i]);
        free(files);
        free(lens);
        if (!ok)
            goto out;
    }
    rc = 0;
out:
    cl_client_metadata_clear(&md);
    if (rc != 0)
        cl_cli_inputs_clear(in);
    return rc;
}

void cl_cli_inputs_request(const cl_cli_inputs *in, cl_client_request *req)
{
    req->inputs = in->tensors;
    req->n_inputs = in->n_tensors;
    req->bytes_input = in->bytes_name;
    req->bytes = (const uint8_t *const *)in->bytes;
    req->bytes_len = in->bytes_len;
    req->n_bytes = in->n_bytes;
}

void cl_cli_inputs_clear(cl_cli_inputs *in)
{
    cl_serve_tensors_free(in->tensors, in->n_tensors);
    for (size_t i = 0; i < in->n_bytes; i++)
        free(in->bytes[i]);
    free(in->bytes);
    free(in->bytes_len);
    free(in->bytes_name);
    free(in->sources);
    memset(in, 0, sizeof *in);
    in->batch = -1;
}
