/* imagein.c — image inputs of served models: whether an input's image preprocessing (cl_image_spec)
 * fits the input it declares, and decoding the DT_STRING tensors of encoded JPEG/PNG images that
 * clients send for such inputs into the float batch the model takes (image module: decode, resize,
 * normalise, layout). Runs in the thread that runs the model (a worker, in the server). Thread-safe:
 * no shared state; specs are read-only. */
#include "cloister/serve.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int cl_serve_spec_check_image(const cl_serve_tensor_spec *ts, const cl_image_spec *img, cl_err *err)
{
    int64_t want[4] = {-1};
    cl_image_spec_dims(img, want + 1);
    char wants[96];
    cl_serve_shape_str(wants, sizeof wants, 4, want);
    const char *lay = img->pre.layout == CL_IMAGE_NCHW ? "NCHW" : "NHWC";
    if (ts->dtype != CL_SERVE_DT_FLOAT)
        return cl_err_set(err, CL_E_INVALID, "input '%s' is %s, but image preprocessing makes DT_FLOAT", ts->name,
                          cl_serve_dtype_name(ts->dtype));
    if (ts->ndim != 4) {
        char got[160];
        cl_serve_shape_str(got, sizeof got, ts->ndim, ts->dims);
        return cl_err_set(err, CL_E_INVALID, "input '%s' has shape %s, but image preprocessing makes rank 4 %s "
                          "tensors %s", ts->name, ts->ndim < 0 ? "of unknown rank" : got, lay, wants);
    }
    for (int d = 1; d < 4; d++) {
        if (ts->dims[d] >= 0 && ts->dims[d] != want[d]) {
            char got[160];
            cl_serve_shape_str(got, sizeof got, 4, ts->dims);
            return cl_err_set(err, CL_E_INVALID, "input '%s' has shape %s, but the declared preprocessing (%s, %ux%u, "
                              "%u channel%s) makes %s: check color, width, height and layout", ts->name, got, lay,
                              img->pre.width, img->pre.height, img->pre.channels, img->pre.channels == 1 ? "" : "s",
                              wants);
        }
    }
    return 0;
}

/* The images of DT_STRING tensor `t` (shape [N]) as a new float tensor [N, ...] for input `ts`. Every
 * failure is CL_E_INVALID (the client's images) or CL_E_NOMEM. */
static int decode_one(const cl_serve_tensor_spec *ts, const cl_serve_tensor *t, cl_serve_tensor *out, cl_err *err)
{
    const cl_image_spec *img = ts->image;
    if (t->ndim != 1)
        return cl_err_set(err, CL_E_INVALID, "input '%s': encoded images must come as a list (shape [N]), not a "
                          "rank %d tensor", ts->name, t->ndim);
    int64_t n = t->dims[0];
    if (n < 1)
        return cl_err_set(err, CL_E_INVALID, "input '%s': the list of images is empty", ts->name);
    if (n > (int64_t)img->max_batch)
        return cl_err_set(err, CL_E_INVALID, "input '%s': %lld images in one request, more than the %u this model "
                          "accepts (max_batch): split the request", ts->name, (long long)n, img->max_batch);
    int64_t dims[4] = {n};
    cl_image_spec_dims(img, dims + 1);
    if (cl_serve_tensor_init(out, ts->name, CL_SERVE_DT_FLOAT, 4, dims, 0, err) != 0)
        return -1;
    const cl_serve_string *el = t->data;
    size_t per = cl_image_spec_len(img);
    for (int64_t i = 0; i < n; i++) {
        if (cl_image_spec_apply(img, el[i].data, el[i].len, (float *)out->data + (size_t)i * per, err) != 0) {
            cl_serve_tensor_clear(out);
            if (err && err->code != CL_E_NOMEM)
                err->code = CL_E_INVALID; /* whatever is wrong with an image is the client's to fix */
            return n == 1 ? cl_err_prefix(err, "input '%s'", ts->name)
                          : cl_err_prefix(err, "input '%s', image %lld of %lld", ts->name, (long long)i + 1,
                                          (long long)n);
        }
    }
    return 0;
}

size_t cl_serve_model_decode_bytes(const cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs,
                                   size_t *batches_out)
{
    const cl_serve_signature *sig = cl_serve_model_signature(m);
    size_t batches = 0, one = 0; /* the float batches, and the largest image's decode buffers */
    for (size_t i = 0; i < n_inputs; i++) {
        const cl_serve_tensor *t = &inputs[i];
        if (t->dtype != CL_SERVE_DT_STRING || t->ndim != 1)
            continue;
        size_t k = 0;
        while (k < sig->n_inputs && strcmp(sig->inputs[k].name, t->name) != 0)
            k++;
        if (k == sig->n_inputs || !sig->inputs[k].image)
            continue;
        const cl_image_spec *img = sig->inputs[k].image;
        batches += (size_t)t->dims[0] * cl_image_spec_len(img) * sizeof(float);
        const cl_serve_string *el = t->data;
        for (int64_t j = 0; j < t->dims[0]; j++) {
            uint32_t w, h;
            if (cl_image_probe(el[j].data, el[j].len, &w, &h, NULL) != 0 || (uint64_t)w * h > img->max_pixels)
                continue; /* decoding refuses it before allocating */
            size_t b = cl_image_decode_bytes(w, h, img->pre.channels, img->pre.width);
            if (b > one)
                one = b;
        }
    }
    if (batches_out)
        *batches_out = batches;
    return batches + one;
}

int cl_serve_model_decode_images(const cl_serve_model *m, const cl_serve_tensor *inputs, size_t n_inputs,
                                 cl_serve_tensor *decoded, cl_err *err)
{
    const cl_serve_signature *sig = cl_serve_model_signature(m);
    int count = 0;
    for (size_t i = 0; i < n_inputs; i++) {
        const cl_serve_tensor *t = &inputs[i];
        if (t->dtype != CL_SERVE_DT_STRING)
            continue;
        size_t k = 0;
        while (k < sig->n_inputs && strcmp(sig->inputs[k].name, t->name) != 0)
            k++;
        if (k == sig->n_inputs)
            continue; /* an unknown input: the signature check reports it */
        const cl_serve_tensor_spec *ts = &sig->inputs[k];
        int rc = ts->image ? decode_one(ts, t, &decoded[i], err)
                           : cl_err_set(err, CL_E_INVALID, "Expects arg[%zu] ('%s') to be %s but DT_STRING is provided: "
                                        "this input does not take encoded images (the model version declares no "
                                        "image preprocessing for it)", k, ts->name, cl_serve_dtype_name(ts->dtype));
        if (rc != 0) {
            for (size_t j = 0; j < i; j++)
                cl_serve_tensor_clear(&decoded[j]);
            return -1;
        }
        count++;
    }
    return count;
}
