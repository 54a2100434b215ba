/* spec.c — preprocessing declarations (a model version's preprocess.json): the validator of
 * cl_image_spec on the strict JSON reader (cloister/json.h), and applying a spec to one encoded image (decode under its limits, then
 * cl_image_to_tensor). The schema is documented in docs/serve.md, "Image inputs". Thread-safe (no
 * shared state). */
#include "cloister/image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/json.h"

#define SPEC_MAX_FILE (64 * 1024)

static const char *const known_keys[] = {"input", "color", "width", "height", "resize", "shorter_side", "filter",
                                         "scale", "mean", "std", "layout", "max_pixels", "max_batch", "convert_color"};
#define KEYS_HELP "input, color, width, height, resize, shorter_side, filter, scale, mean, std, layout, " \
                  "max_pixels, max_batch, convert_color"

/* An integer in [lo, hi] (a JSON integer: 8.0 or 8e0 are refused, as they would be by a schema). */
static int get_uint(const json_t *v, const char *key, uint32_t lo, uint32_t hi, uint32_t *out, cl_err *err)
{
    if (!json_is_integer(v) || json_integer_value(v) < lo || json_integer_value(v) > hi)
        return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be an integer from %u to %u", key, lo, hi);
    *out = (uint32_t)json_integer_value(v);
    return 0;
}

/* One of `names` (matched exactly); *out is its index. */
static int get_choice(const json_t *v, const char *key, const char *const *names, size_t n, int *out, cl_err *err)
{
    if (json_is_string(v))
        for (size_t i = 0; i < n; i++)
            if (strcmp(json_string_value(v), names[i]) == 0) {
                *out = (int)i;
                return 0;
            }
    char allowed[160] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s\"%s\"", i ? ", " : "", names[i]);
    return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be one of %s", key, allowed);
}

/* A finite JSON number (integer or real). */
static bool get_number(const json_t *v, double *out)
{
    if (!json_is_number(v) || !isfinite(json_number_value(v)))
        return false;
    *out = json_number_value(v);
    return true;
}

/* A list of exactly `n` finite numbers; with `positive`, each above 0. */
static int get_floats(const json_t *v, const char *key, uint32_t n, bool positive, double *out, cl_err *err)
{
    if (!json_is_array(v) || json_array_size(v) != n)
        return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be a list of %u number%s (one per channel of \"color\")",
                          key, n, n == 1 ? "" : "s");
    for (uint32_t i = 0; i < n; i++)
        if (!get_number(json_array_get(v, i), &out[i]) || (positive && !(out[i] > 0)))
            return cl_err_set(err, CL_E_FORMAT, "\"%s\"[%u] must be a finite number%s", key, i,
                              positive ? " above 0" : "");
    return 0;
}

static int spec_from_json(const json_t *root, cl_image_spec *s, cl_err *err)
{
    const char *key;
    json_t *e;
    json_object_foreach((json_t *)root, key, e)
    {
        size_t k = 0;
        while (k < CL_ARRAY_LEN(known_keys) && strcmp(key, known_keys[k]) != 0)
            k++;
        if (k == CL_ARRAY_LEN(known_keys))
            return cl_err_set(err, CL_E_FORMAT, "unknown key \"%.64s\" (known: " KEYS_HELP ")", key);
    }
#define ITEM(k) json_object_get(root, k)
    static const char *const required[] = {"input", "color", "width", "height", "layout"};
    for (size_t i = 0; i < CL_ARRAY_LEN(required); i++)
        if (!ITEM(required[i]))
            return cl_err_set(err, CL_E_FORMAT, "\"%s\" is missing (required: input, color, width, height, layout)",
                              required[i]);

    const json_t *in = ITEM("input");
    if (!json_is_string(in) || !json_string_length(in) || json_string_length(in) >= sizeof s->input)
        return cl_err_set(err, CL_E_FORMAT, "\"input\" must be the name of a model input (1 to %zu characters)",
                          sizeof s->input - 1);
    snprintf(s->input, sizeof s->input, "%s", json_string_value(in));

    static const char *const colors[] = {"GRAY", "RGB"};
    int color;
    if (get_choice(ITEM("color"), "color", colors, 2, &color, err) != 0)
        return -1;
    cl_image_preproc *p = &s->pre;
    p->channels = color == 0 ? 1 : 3;
    if (get_uint(ITEM("width"), "width", 1, CL_IMAGE_SPEC_MAX_SIDE, &p->width, err) != 0 ||
        get_uint(ITEM("height"), "height", 1, CL_IMAGE_SPEC_MAX_SIDE, &p->height, err) != 0)
        return -1;
    static const char *const layouts[] = {"NCHW", "NHWC"};
    int layout;
    if (get_choice(ITEM("layout"), "layout", layouts, 2, &layout, err) != 0)
        return -1;
    p->layout = layout == 0 ? CL_IMAGE_NCHW : CL_IMAGE_NHWC;

    static const char *const fits[] = {"stretch", "crop"};
    int fit = 0;
    if (ITEM("resize") && get_choice(ITEM("resize"), "resize", fits, 2, &fit, err) != 0)
        return -1;
    p->fit = fit == 0 ? CL_IMAGE_FIT_STRETCH : CL_IMAGE_FIT_CROP;
    if (ITEM("shorter_side")) {
        if (p->fit != CL_IMAGE_FIT_CROP)
            return cl_err_set(err, CL_E_FORMAT, "\"shorter_side\" only applies to \"resize\": \"crop\"");
        uint32_t big = p->width > p->height ? p->width : p->height;
        if (get_uint(ITEM("shorter_side"), "shorter_side", big, CL_IMAGE_SPEC_MAX_SIDE, &p->shorter_side, err) != 0)
            return cl_err_prefix(err, "the crop of %ux%u must fit in the resized image", p->width, p->height);
    }
    static const char *const filters[] = {"bilinear", "area", "pil"};
    static const cl_image_resize filter_kind[] = {CL_IMAGE_RESIZE_BILINEAR, CL_IMAGE_RESIZE_AREA,
                                                  CL_IMAGE_RESIZE_PIL};
    int filter = 0;
    if (ITEM("filter") && get_choice(ITEM("filter"), "filter", filters, 3, &filter, err) != 0)
        return -1;
    p->resize = filter_kind[filter];

    p->scale = 1.0;
    const json_t *sc = ITEM("scale");
    if (sc && (!get_number(sc, &p->scale) || !(p->scale > 0)))
        return cl_err_set(err, CL_E_FORMAT, "\"scale\" must be a finite number above 0 (e.g. 0.00392156862745098 "
                          "for 1/255)");
    for (uint32_t c = 0; c < 3; c++) {
        p->mean[c] = 0;
        p->std[c] = 1;
    }
    if (ITEM("mean") && get_floats(ITEM("mean"), "mean", p->channels, false, p->mean, err) != 0)
        return -1;
    if (ITEM("std") && get_floats(ITEM("std"), "std", p->channels, true, p->std, err) != 0)
        return -1;

    s->max_pixels = CL_IMAGE_SPEC_MAX_PIXELS_DEFAULT;
    s->max_batch = CL_IMAGE_SPEC_MAX_BATCH_DEFAULT;
    if (ITEM("max_pixels") &&
        get_uint(ITEM("max_pixels"), "max_pixels", 1, CL_IMAGE_MAX_PIXELS_DEFAULT, &s->max_pixels, err) != 0)
        return -1;
    if (ITEM("max_batch") && get_uint(ITEM("max_batch"), "max_batch", 1, CL_IMAGE_SPEC_MAX_BATCH, &s->max_batch,
                                      err) != 0)
        return -1;
    s->convert_color = true;
    const json_t *cc = ITEM("convert_color");
    if (cc && !json_is_boolean(cc))
        return cl_err_set(err, CL_E_FORMAT, "\"convert_color\" must be true or false");
    if (cc)
        s->convert_color = json_is_true(cc);
#undef ITEM
    uint64_t bytes = (uint64_t)s->max_batch * cl_image_spec_len(s) * sizeof(float);
    if (bytes > CL_IMAGE_SPEC_MAX_TENSOR_BYTES)
        return cl_err_set(err, CL_E_FORMAT, "\"max_batch\" %u images of %ux%ux%u floats need %llu MiB, above the "
                          "%u MiB allowed: lower max_batch", s->max_batch, p->width, p->height, p->channels,
                          (unsigned long long)(bytes >> 20), CL_IMAGE_SPEC_MAX_TENSOR_BYTES >> 20);
    return 0;
}

int cl_image_spec_parse(const char *json, size_t len, cl_image_spec *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    /* the strict reader: repeated keys, trailing data, \u0000 and bad UTF-8 are refused with a position */
    json_t *root = cl_json_parse(json, len, "preprocessing declaration", err);
    if (!root)
        return -1;
    int rc = spec_from_json(root, out, err);
    json_decref(root);
    if (rc != 0)
        memset(out, 0, sizeof *out);
    return rc;
}

int cl_image_spec_load(const char *path, cl_image_spec *out, cl_err *err)
{
    uint8_t *buf;
    size_t len;
    memset(out, 0, sizeof *out);
    if (cl_file_read(path, SPEC_MAX_FILE, &buf, &len, err) != 0)
        return -1;
    int rc = cl_image_spec_parse((const char *)buf, len, out, err);
    free(buf);
    if (rc != 0)
        return cl_err_prefix(err, "%s", path);
    return 0;
}

size_t cl_image_spec_len(const cl_image_spec *s)
{
    return (size_t)s->pre.width * s->pre.height * s->pre.channels;
}

void cl_image_spec_dims(const cl_image_spec *s, int64_t dims[3])
{
    const cl_image_preproc *p = &s->pre;
    if (p->layout == CL_IMAGE_NCHW) {
        dims[0] = p->channels;
        dims[1] = p->height;
        dims[2] = p->width;
    } else {
        dims[0] = p->height;
        dims[1] = p->width;
        dims[2] = p->channels;
    }
}

int cl_image_spec_apply(const cl_image_spec *s, const uint8_t *data, size_t len, float *out, cl_err *err)
{
    cl_image img;
    if (cl_image_decode(data, len, s->pre.channels, s->max_pixels, &img, err) != 0)
        return -1;
    if (!s->convert_color && img.source_channels != s->pre.channels) {
        cl_err_set(err, CL_E_INVALID, "the image is %s but this model takes %s images (its preprocessing does not "
                   "convert colours): send a %s image", img.source_channels == 1 ? "greyscale" : "colour",
                   s->pre.channels == 1 ? "greyscale" : "RGB", s->pre.channels == 1 ? "greyscale" : "colour");
        cl_image_free(&img);
        return -1;
    }
    int rc = cl_image_to_tensor(&img, &s->pre, out, err);
    cl_image_free(&img);
    return rc;
}
