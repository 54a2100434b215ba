/* spec.c — preprocessing declarations (a model version's preprocess.json): the strict JSON parser and
 * validator of cl_image_spec, and applying a spec to one encoded image (decode under its limits, then
 * cl_image_to_tensor). The schema is documented in docs/serve.md, "Image inputs". Thread-safe (no
 * shared state). */
#include "cloister/image.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cjson/cJSON.h>

#define SPEC_MAX_FILE (64 * 1024)

static const char *const known_keys[] = {"input", "color", "width", "height", "resize", "shorter_side", "filter",
                                         "scale", "mean", "std", "layout", "max_pixels", "max_batch", "convert_color"};
#define KEYS_HELP "input, color, width, height, resize, shorter_side, filter, scale, mean, std, layout, " \
                  "max_pixels, max_batch, convert_color"

/* An integer in [lo, hi] (JSON number without a fraction). */
static int get_uint(const cJSON *v, const char *key, uint32_t lo, uint32_t hi, uint32_t *out, cl_err *err)
{
    if (!cJSON_IsNumber(v) || v->valuedouble != floor(v->valuedouble) || v->valuedouble < lo ||
        v->valuedouble > hi)
        return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be an integer from %u to %u", key, lo, hi);
    *out = (uint32_t)v->valuedouble;
    return 0;
}

/* One of `names` (matched exactly); *out is its index. */
static int get_choice(const cJSON *v, const char *key, const char *const *names, size_t n, int *out, cl_err *err)
{
    if (cJSON_IsString(v))
        for (size_t i = 0; i < n; i++)
            if (strcmp(v->valuestring, names[i]) == 0) {
                *out = (int)i;
                return 0;
            }
    char allowed[160] = "";
    for (size_t i = 0; i < n; i++)
        snprintf(allowed + strlen(allowed), sizeof allowed - strlen(allowed), "%s\"%s\"", i ? ", " : "", names[i]);
    return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be one of %s", key, allowed);
}

/* A list of exactly `n` finite numbers; with `positive`, each above 0. */
static int get_floats(const cJSON *v, const char *key, uint32_t n, bool positive, double *out, cl_err *err)
{
    if (!cJSON_IsArray(v) || (uint32_t)cJSON_GetArraySize(v) != n)
        return cl_err_set(err, CL_E_FORMAT, "\"%s\" must be a list of %u number%s (one per channel of \"color\")",
                          key, n, n == 1 ? "" : "s");
    uint32_t i = 0;
    const cJSON *e;
    cJSON_ArrayForEach(e, v)
    {
        if (!cJSON_IsNumber(e) || !isfinite(e->valuedouble) || (positive && !(e->valuedouble > 0)))
            return cl_err_set(err, CL_E_FORMAT, "\"%s\"[%u] must be a finite number%s", key, i,
                              positive ? " above 0" : "");
        out[i++] = e->valuedouble;
    }
    return 0;
}

static int spec_from_json(const cJSON *root, cl_image_spec *s, cl_err *err)
{
    if (!cJSON_IsObject(root))
        return cl_err_set(err, CL_E_FORMAT, "the preprocessing declaration must be a JSON object");
    const cJSON *e;
    cJSON_ArrayForEach(e, root)
    {
        size_t k = 0;
        while (k < CL_ARRAY_LEN(known_keys) && strcmp(e->string, known_keys[k]) != 0)
            k++;
        if (k == CL_ARRAY_LEN(known_keys))
            return cl_err_set(err, CL_E_FORMAT, "unknown key \"%.64s\" (known: " KEYS_HELP ")", e->string);
        for (const cJSON *d = root->child; d != e; d = d->next)
            if (strcmp(d->string, e->string) == 0)
                return cl_err_set(err, CL_E_FORMAT, "key \"%s\" is given twice", e->string);
    }
#define ITEM(k) cJSON_GetObjectItemCaseSensitive(root, k)
    static const char *const required[] = {"input", "color", "width", "height", "layout"};
    for (size_t i = 0; i < CL_ARRAY_LEN(required); i++)
        if (!ITEM(required[i]))
            return cl_err_set(err, CL_E_FORMAT, "\"%s\" is missing (required: input, color, width, height, layout)",
                              required[i]);

    const cJSON *in = ITEM("input");
    if (!cJSON_IsString(in) || !in->valuestring[0] || strlen(in->valuestring) >= sizeof s->input)
        return cl_err_set(err, CL_E_FORMAT, "\"input\" must be the name of a model input (1 to %zu characters)",
                          sizeof s->input - 1);
    snprintf(s->input, sizeof s->input, "%s", in->valuestring);

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
    static const char *const filters[] = {"bilinear", "area"};
    int filter = 0;
    if (ITEM("filter") && get_choice(ITEM("filter"), "filter", filters, 2, &filter, err) != 0)
        return -1;
    p->resize = filter == 0 ? CL_IMAGE_RESIZE_BILINEAR : CL_IMAGE_RESIZE_AREA;

    p->scale = 1.0;
    const cJSON *sc = ITEM("scale");
    if (sc && (!cJSON_IsNumber(sc) || !isfinite(sc->valuedouble) || !(sc->valuedouble > 0)))
        return cl_err_set(err, CL_E_FORMAT, "\"scale\" must be a finite number above 0 (e.g. 0.00392156862745098 "
                          "for 1/255)");
    if (sc)
        p->scale = sc->valuedouble;
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
    const cJSON *cc = ITEM("convert_color");
    if (cc && !cJSON_IsBool(cc))
        return cl_err_set(err, CL_E_FORMAT, "\"convert_color\" must be true or false");
    if (cc)
        s->convert_color = cJSON_IsTrue(cc);
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
    const char *end = NULL; /* where parsing stopped (not cJSON's global error pointer: thread-safe) */
    cJSON *root = cJSON_ParseWithLengthOpts(json, len, &end, false);
    if (!root)
        return cl_err_set(err, CL_E_FORMAT, "not valid JSON (near byte %zu)",
                          end && end >= json && end <= json + len ? (size_t)(end - json) : (size_t)0);
    int rc = spec_from_json(root, out, err);
    cJSON_Delete(root);
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
