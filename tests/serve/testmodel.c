/* testmodel.c — the deterministic test backends described in testmodel.h (test code only). */
#include "testmodel.h"

#include <math.h>
#include <png.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

float tm_affine_w(int i, int j) { return 0.1f * (float)(i + 1) - 0.2f * (float)j + 0.05f * (float)(i * j); }
float tm_affine_b(int j) { return 0.5f - 0.25f * (float)j; }

static const cl_serve_tensor_spec affine_in[] = {{"x", CL_SERVE_DT_FLOAT, 2, {-1, 4}}};
static const cl_serve_tensor_spec affine_out[] = {
    {"logits", CL_SERVE_DT_FLOAT, 2, {-1, 3}}, {"probs", CL_SERVE_DT_FLOAT, 2, {-1, 3}}, {"class", CL_SERVE_DT_INT64, 1, {-1}}};
static const cl_serve_signature affine_sig = {"serving_default", "tensorflow/serving/predict", affine_in, 1,
                                              affine_out, 3};

static int affine_run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out,
                      cl_err *err)
{
    int64_t rows = in[0].dims[0];
    cl_serve_tensor *o = calloc(3, sizeof *o);
    if (!o)
        return cl_err_nomem(err);
    int64_t d2[2] = {rows, 3};
    if (cl_serve_tensor_init(&o[0], "logits", CL_SERVE_DT_FLOAT, 2, d2, 0, err) != 0 ||
        cl_serve_tensor_init(&o[1], "probs", CL_SERVE_DT_FLOAT, 2, d2, 0, err) != 0 ||
        cl_serve_tensor_init(&o[2], "class", CL_SERVE_DT_INT64, 1, &rows, 0, err) != 0) {
        cl_serve_tensors_free(o, 3);
        return -1;
    }
    const float *x = in[0].data;
    float *lg = o[0].data, *pr = o[1].data;
    int64_t *cls = o[2].data;
    for (int64_t r = 0; r < rows; r++) {
        float mx = -INFINITY;
        int best = 0;
        for (int j = 0; j < 3; j++) {
            float acc = tm_affine_b(j);
            for (int i = 0; i < 4; i++)
                acc += x[r * 4 + i] * tm_affine_w(i, j);
            lg[r * 3 + j] = acc;
            if (acc > mx) {
                mx = acc;
                best = j;
            }
        }
        float sum = 0;
        for (int j = 0; j < 3; j++)
            sum += pr[r * 3 + j] = expf(lg[r * 3 + j] - mx);
        for (int j = 0; j < 3; j++)
            pr[r * 3 + j] /= sum;
        cls[r] = best;
    }
    *out = o;
    *n_out = 3;
    return 0;
}

static const cl_serve_tensor_spec adder_in[] = {{"a", CL_SERVE_DT_INT32, 1, {-1}}, {"b", CL_SERVE_DT_INT32, 1, {-1}}};
static const cl_serve_tensor_spec adder_out[] = {{"sum", CL_SERVE_DT_INT32, 1, {-1}}};
static const cl_serve_signature adder_sig = {"serving_default", "tensorflow/serving/predict", adder_in, 2,
                                             adder_out, 1};

static int adder_run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out,
                     cl_err *err)
{
    if (in[0].dims[0] != in[1].dims[0])
        return cl_err_set(err, CL_E_INVALID, "a and b must have the same length (%lld vs %lld)",
                          (long long)in[0].dims[0], (long long)in[1].dims[0]);
    cl_serve_tensor *o = calloc(1, sizeof *o);
    if (!o || cl_serve_tensor_init(o, "sum", CL_SERVE_DT_INT32, 1, in[0].dims, 0, err) != 0) {
        free(o);
        return -1;
    }
    const int32_t *a = in[0].data, *b = in[1].data;
    int32_t *s = o->data;
    for (int64_t i = 0; i < in[0].dims[0]; i++)
        s[i] = (int32_t)((uint32_t)a[i] + (uint32_t)b[i]);
    *out = o;
    *n_out = 1;
    return 0;
}

static const cl_serve_tensor_spec sleepy_in[] = {{"x", CL_SERVE_DT_FLOAT, 1, {-1}}};
static const cl_serve_tensor_spec sleepy_out[] = {{"y", CL_SERVE_DT_FLOAT, 1, {-1}}};
static const cl_serve_signature sleepy_sig = {"serving_default", "tensorflow/serving/predict", sleepy_in, 1,
                                              sleepy_out, 1};

static int sleepy_run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out,
                      cl_err *err)
{
    const float *x = in[0].data;
    if (in[0].dims[0] > 0 && x[0] > 0 && x[0] <= 10000) {
        long ms = (long)x[0];
        struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
        while (nanosleep(&ts, &ts) != 0) {
        }
    }
    cl_serve_tensor *o = calloc(1, sizeof *o);
    if (!o || cl_serve_tensor_init(o, "y", CL_SERVE_DT_FLOAT, 1, in[0].dims, 0, err) != 0) {
        free(o);
        return -1;
    }
    memcpy(o->data, in[0].data, in[0].nbytes);
    *out = o;
    *n_out = 1;
    return 0;
}

const cl_image_spec tm_vision_image = {
    .input = "image",
    .pre = {.width = 4, .height = 4, .resize = CL_IMAGE_RESIZE_AREA, .channels = 1, .scale = 1.0 / 255,
            .std = {1, 1, 1}, .layout = CL_IMAGE_NCHW},
    .max_pixels = 4096,
    .max_batch = 4,
    .convert_color = true,
};
static const cl_serve_tensor_spec vision_in[] = {{"image", CL_SERVE_DT_FLOAT, 4, {-1, 1, 4, 4}, &tm_vision_image}};
static const cl_serve_tensor_spec vision_out[] = {{"pixels", CL_SERVE_DT_FLOAT, 2, {-1, 16}}};
static const cl_serve_signature vision_sig = {"serving_default", "tensorflow/serving/predict", vision_in, 1,
                                              vision_out, 1};

static int vision_run(void *ctx, const cl_serve_tensor *in, size_t n_in, cl_serve_tensor **out, size_t *n_out,
                      cl_err *err)
{
    int64_t dims[2] = {in[0].dims[0], 16};
    cl_serve_tensor *o = calloc(1, sizeof *o);
    if (!o || cl_serve_tensor_init(o, "pixels", CL_SERVE_DT_FLOAT, 2, dims, 0, err) != 0) {
        free(o);
        return -1;
    }
    memcpy(o->data, in[0].data, in[0].nbytes);
    *out = o;
    *n_out = 1;
    return 0;
}

typedef struct png_mem {
    uint8_t *data;
    size_t len;
    bool failed;
} png_mem;

static void png_mem_write(png_structp png, png_bytep d, size_t n)
{
    png_mem *m = png_get_io_ptr(png);
    uint8_t *p = m->failed ? NULL : realloc(m->data, m->len + n);
    if (!p) {
        m->failed = true;
        return;
    }
    memcpy(p + m->len, d, n);
    m->data = p;
    m->len += n;
}

static void png_mem_flush(png_structp png) { (void)png; }

uint8_t *tm_png(const uint8_t *px, uint32_t w, uint32_t h, int channels, size_t *len)
{
    png_mem m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info || setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.data);
        return NULL;
    }
    png_set_write_fn(png, &m, png_mem_write, png_mem_flush);
    png_set_IHDR(png, info, w, h, 8, channels == 1 ? PNG_COLOR_TYPE_GRAY : PNG_COLOR_TYPE_RGB, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (uint32_t y = 0; y < h; y++)
        png_write_row(png, (png_const_bytep)(px + (size_t)y * w * (size_t)channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (m.failed) {
        free(m.data);
        return NULL;
    }
    *len = m.len;
    return m.data;
}

int tm_register(cl_serve_registry *reg, const char *name, int64_t version, cl_err *err)
{
    static const struct {
        const char *name;
        cl_serve_backend b;
    } models[] = {
        {"affine", {&affine_sig, affine_run, NULL, NULL}},
        {"adder", {&adder_sig, adder_run, NULL, NULL}},
        {"sleepy", {&sleepy_sig, sleepy_run, NULL, NULL}},
        {"vision", {&vision_sig, vision_run, NULL, NULL}},
    };
    for (size_t i = 0; i < sizeof models / sizeof models[0]; i++)
        if (strcmp(models[i].name, name) == 0) {
            cl_serve_backend b = models[i].b;
            return cl_serve_registry_add(reg, name, version, &b, err);
        }
    return cl_err_set(err, CL_E_INVALID, "no test model named '%s'", name);
}

int tm_register_all(cl_serve_registry *reg, int64_t version, bool two_versions, cl_err *err)
{
    if (tm_register(reg, "affine", version, err) != 0 || tm_register(reg, "adder", version, err) != 0 ||
        tm_register(reg, "sleepy", version, err) != 0 || tm_register(reg, "vision", version, err) != 0)
        return -1;
    if (two_versions && tm_register(reg, "affine", version + 1, err) != 0)
        return -1;
    return 0;
}
