/* util.c — the client module's pure helpers: releasing responses and metadata, sorting outputs and
 * specs by name, numeric access and top-k over output tensors, and images (JPEG/PNG, decoded by the
 * image module) turned into a model's input batch from its signature shape. */
#include "client_int.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cl_client_response_clear(cl_client_response *r)
{
    if (!r)
        return;
    cl_serve_tensors_free(r->outputs, r->n_outputs);
    free(r->model);
    memset(r, 0, sizeof *r);
}

static void specs_free(cl_serve_tensor_spec *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free((char *)s[i].name);
    free(s);
}

void cl_client_metadata_clear(cl_client_metadata *md)
{
    if (!md)
        return;
    free(md->model);
    free(md->signature);
    free(md->method_name);
    specs_free(md->inputs, md->n_inputs);
    specs_free(md->outputs, md->n_outputs);
    memset(md, 0, sizeof *md);
}

static int cmp_tensor(const void *a, const void *b)
{
    return strcmp(((const cl_serve_tensor *)a)->name, ((const cl_serve_tensor *)b)->name);
}

static int cmp_spec(const void *a, const void *b)
{
    return strcmp(((const cl_serve_tensor_spec *)a)->name, ((const cl_serve_tensor_spec *)b)->name);
}

void cl_client_sort_outputs(cl_client_response *r)
{
    if (r->n_outputs > 1)
        qsort(r->outputs, r->n_outputs, sizeof *r->outputs, cmp_tensor);
}

void cl_client_sort_specs(cl_serve_tensor_spec *s, size_t n)
{
    if (n > 1)
        qsort(s, n, sizeof *s, cmp_spec);
}

double cl_client_tensor_value(const cl_serve_tensor *t, size_t i)
{
    size_t es = cl_serve_dtype_size(t->dtype);
    if (!es || i >= t->nbytes / es)
        return 0;
    switch (t->dtype) {
    case CL_SERVE_DT_FLOAT: return ((const float *)t->data)[i];
    case CL_SERVE_DT_DOUBLE: return ((const double *)t->data)[i];
    case CL_SERVE_DT_INT32: return ((const int32_t *)t->data)[i];
    case CL_SERVE_DT_UINT8: return ((const uint8_t *)t->data)[i];
    case CL_SERVE_DT_INT8: return ((const int8_t *)t->data)[i];
    case CL_SERVE_DT_INT64: return (double)((const int64_t *)t->data)[i];
    case CL_SERVE_DT_BOOL: return ((const uint8_t *)t->data)[i] ? 1 : 0;
    default: return 0;
    }
}

size_t cl_client_topk(const cl_serve_tensor *t, size_t row, size_t k, size_t *idx, double *score)
{
    size_t es = cl_serve_dtype_size(t->dtype);
    if (!es || k == 0 || (t->ndim != 1 && t->ndim != 2))
        return 0;
    size_t rows = t->ndim == 2 ? (size_t)t->dims[0] : 1;
    size_t cols = (size_t)t->dims[t->ndim - 1];
    if (row >= rows || cols == 0 || t->nbytes / es < rows * cols)
        return 0;
    if (k > cols)
        k = cols;
    size_t n = 0;
    /* insertion into a sorted list of k: fine for the class counts classifiers have */
    for (size_t j = 0; j < cols; j++) {
        double v = cl_client_tensor_value(t, row * cols + j);
        if (isnan(v))
            continue;
        size_t pos = n;
        while (pos > 0 && score[pos - 1] < v)
            pos--;
        if (pos >= k)
            continue;
        size_t last = n < k ? n : k - 1;
        for (size_t m = last; m > pos; m--) {
            score[m] = score[m - 1];
            idx[m] = idx[m - 1];
        }
        score[pos] = v;
        idx[pos] = j;
        if (n < k)
            n++;
    }
    return n;
}

int cl_client_parse_floats3(const char *s, float out[3], cl_err *err)
{
    char *end;
    const char *p = s;
    int n = 0;
    float v[3];
    while (n < 3) {
        errno = 0;
        v[n] = strtof(p, &end);
        if (end == p || errno || !isfinite(v[n]))
            return cl_err_set(err, CL_E_INVALID, "'%s' is not a number or a list of three numbers (e.g. "
                              "0.485,0.456,0.406)", s);
        n++;
        if (*end == '\0')
            break;
        if (*end != ',')
            return cl_err_set(err, CL_E_INVALID, "'%s': numbers are separated by commas", s);
        p = end + 1;
    }
    if (*end != '\0' || n == 2)
        return cl_err_set(err, CL_E_INVALID, "'%s': give one number or three (one per channel)", s);
    for (int i = 0; i < 3; i++)
        out[i] = n == 1 ? v[0] : v[i];
    return 0;
}

int cl_client_image_preproc(const cl_serve_tensor_spec *spec, const cl_client_image_opts *o, cl_image_preproc *p,
                            cl_err *err)
{
    memset(p, 0, sizeof *p);
    if (spec->dtype != CL_SERVE_DT_FLOAT && spec->dtype != CL_SERVE_DT_UINT8)
        return cl_err_set(err, CL_E_UNSUPPORTED, "input '%s' is %s, not an image tensor (DT_FLOAT or DT_UINT8); "
                          "servers that decode images take --image-bytes", spec->name,
                          cl_serve_dtype_name(spec->dtype));
    if (spec->ndim != 4)
        return cl_err_set(err, CL_E_UNSUPPORTED, "input '%s' has %s %d, not an image batch [N,C,H,W] or [N,H,W,C]",
                          spec->name, spec->ndim < 0 ? "unknown rank" : "rank", spec->ndim < 0 ? 0 : spec->ndim);
    int64_t h, w, c;
    if (spec->dims[1] == 1 || spec->dims[1] == 3) {
        p->layout = CL_IMAGE_NCHW;
        c = spec->dims[1];
        h = spec->dims[2];
        w = spec->dims[3];
    } else if (spec->dims[3] == 1 || spec->dims[3] == 3) {
        p->layout = CL_IMAGE_NHWC;
        c = spec->dims[3];
        h = spec->dims[1];
        w = spec->dims[2];
    } else {
        return cl_err_set(err, CL_E_UNSUPPORTED, "input '%s' has shape [%lld,%lld,%lld,%lld]: no channel dimension "
                          "of 1 or 3 after the batch or at the end", spec->name, (long long)spec->dims[0],
                          (long long)spec->dims[1], (long long)spec->dims[2], (long long)spec->dims[3]);
    }
    if (h <= 0)
        h = o && o->height ? o->height : 0;
    if (w <= 0)
        w = o && o->width ? o->width : 0;
    if (o && o->height && (uint32_t)h != o->height)
        return cl_err_set(err, CL_E_INVALID, "input '%s' takes images of height %lld, not %u", spec->name,
                          (long long)h, o->height);
    if (o && o->width && (uint32_t)w != o->width)
        return cl_err_set(err, CL_E_INVALID, "input '%s' takes images of width %lld, not %u", spec->name, (long long)w,
                          o->width);
    if (h <= 0 || w <= 0)
        return cl_err_set(err, CL_E_INVALID, "input '%s' does not fix the image size: give --size WxH", spec->name);
    if (h > 65536 || w > 65536)
        return cl_err_set(err, CL_E_UNSUPPORTED, "input '%s' wants %lldx%lld images, too large", spec->name,
                          (long long)w, (long long)h);
    p->width = (uint32_t)w;
    p->height = (uint32_t)h;
    p->channels = (uint32_t)c;
    p->resize = o ? o->resize : CL_IMAGE_RESIZE_AREA;
    p->fit = o ? o->fit : CL_IMAGE_FIT_STRETCH;
    p->shorter_side = o && p->fit == CL_IMAGE_FIT_CROP ? o->shorter_side : 0;
    if (p->fit == CL_IMAGE_FIT_CROP && !p->shorter_side && o->crop_fraction > 0 && o->crop_fraction <= 1)
        p->shorter_side = (uint32_t)floor((double)(p->width > p->height ? p->width : p->height) / o->crop_fraction);
    if (p->shorter_side && p->shorter_side < (p->width > p->height ? p->width : p->height))
        return cl_err_set(err, CL_E_INVALID, "a shorter side of %u is smaller than the %ux%u centre crop that "
                          "input '%s' takes", p->shorter_side, p->width, p->height, spec->name);
    if (spec->dtype == CL_SERVE_DT_UINT8) {
        p->scale = 1; /* raw 0..255 pixels */
        for (int i = 0; i < 3; i++)
            p->std[i] = 1;
        return 0;
    }
    p->scale = o && o->scale != 0 ? o->scale : 1.0f / 255.0f;
    for (int i = 0; i < 3; i++) {
        p->mean[i] = o ? o->mean[i] : 0;
        p->std[i] = o && o->std[i] != 0 ? o->std[i] : 1;
    }
    return 0;
}

int cl_client_images_to_tensor(const cl_serve_tensor_spec *spec, const cl_client_image_opts *o,
                               const uint8_t *const *images, const size_t *lens, size_t n, cl_serve_tensor *out,
                               cl_err *err)
{
    memset(out, 0, sizeof *out);
    cl_image_preproc p;
    if (n == 0)
        return cl_err_set(err, CL_E_INVALID, "no image given");
    if (cl_client_image_preproc(spec, o, &p, err) != 0)
        return -1;
    size_t per = (size_t)p.width * p.height * p.channels;
    int64_t dims[4] = {(int64_t)n, 0, 0, 0};
    if (p.layout == CL_IMAGE_NCHW) {
        dims[1] = p.channels;
        dims[2] = p.height;
        dims[3] = p.width;
    } else {
        dims[1] = p.height;
        dims[2] = p.width;
        dims[3] = p.channels;
    }
    if (cl_serve_tensor_init(out, spec->name, spec->dtype, 4, dims, (size_t)1 << 31, err) != 0)
        return -1;
    float *tmp = spec->dtype == CL_SERVE_DT_UINT8 ? malloc(per * sizeof *tmp) : NULL;
    if (spec->dtype == CL_SERVE_DT_UINT8 && !tmp) {
        cl_serve_tensor_clear(out);
        return cl_err_nomem(err);
    }
    for (size_t i = 0; i < n; i++) {
        cl_image img;
        if (cl_image_decode(images[i], lens[i], p.channels, 0, &img, err) != 0) {
            free(tmp);
            cl_serve_tensor_clear(out);
            return cl_err_prefix(err, "image %zu", i + 1);
        }
        float *dst = tmp ? tmp : (float *)out->data + i * per;
        int rc = cl_image_to_tensor(&img, &p, dst, err);
        cl_image_free(&img);
        if (rc != 0) {
            free(tmp);
            cl_serve_tensor_clear(out);
            return cl_err_prefix(err, "image %zu", i + 1);
        }
        if (tmp) {
            uint8_t *d8 = (uint8_t *)out->data + i * per;
            for (size_t k = 0; k < per; k++) {
                float v = roundf(tmp[k]);
                d8[k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
            }
        }
    }
    free(tmp);
    return 0;
}
