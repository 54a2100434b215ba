/* fuzz_image_spec.c — fuzz target for the preprocess.json parser (cl_image_spec_parse): a model
 * version's declaration must parse into a spec within every documented bound, or be refused with a
 * message; never crash. An accepted spec is applied to a small PNG made once here. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_image_spec s;
    cl_err err = {0};
    if (cl_image_spec_parse((const char *)data, size, &s, &err) != 0) {
        if (!err.msg[0])
            abort(); /* every refusal says why */
        return 0;
    }
    const cl_image_preproc *p = &s.pre;
    if (!s.input[0] || (p->channels != 1 && p->channels != 3) || p->width < 1 || p->height < 1 ||
        p->width > CL_IMAGE_SPEC_MAX_SIDE || p->height > CL_IMAGE_SPEC_MAX_SIDE || s.max_batch < 1 ||
        s.max_batch > CL_IMAGE_SPEC_MAX_BATCH || s.max_pixels < 1 || !(p->scale > 0))
        abort();
    if ((uint64_t)s.max_batch * cl_image_spec_len(&s) * sizeof(float) > CL_IMAGE_SPEC_MAX_TENSOR_BYTES)
        abort();
    for (uint32_t c = 0; c < p->channels; c++)
        if (!(p->std[c] > 0))
            abort();
    if (p->fit == CL_IMAGE_FIT_CROP && p->shorter_side && p->shorter_side < (p->width > p->height ? p->width : p->height))
        abort();
    /* a 2x3 greyscale PNG (pixels 0, 10, ..., 50), written once with zlib and hex-dumped */
    static const uint8_t png[] = {
        0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48, 0x44, 0x52, 0x00,
        0x00, 0x00, 0x02, 0x00, 0x00, 0x00, 0x03, 0x08, 0x00, 0x00, 0x00, 0x00, 0x9c, 0x81, 0x81, 0x5d, 0x00,
        0x00, 0x00, 0x11, 0x49, 0x44, 0x41, 0x54, 0x78, 0x9c, 0x63, 0x60, 0xe0, 0x62, 0x10, 0x91, 0x63, 0xd0,
        0x30, 0x02, 0x00, 0x01, 0xad, 0x00, 0x97, 0x5a, 0x36, 0xb5, 0x78, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45,
        0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};
    size_t n = cl_image_spec_len(&s);
    if (n <= 64 * 64 * 3) {
        float *out = malloc(n * sizeof *out);
        err.msg[0] = '\0';
        if (out && cl_image_spec_apply(&s, png, sizeof png, out, &err) != 0 && !err.msg[0])
            abort(); /* refused (a colour mismatch, too many pixels) only with a reason */
        free(out);
    }
    return 0;
}
