/* fuzz_image.c — fuzz target for the JPEG/PNG decoders and the preprocessing that follows: image bytes
 * come from untrusted clients, so any input must decode or fail cleanly, within the pixel limit, and
 * the header probe (cl_image_probe, which the server's memory budget uses) must read the size of
 * every image that decodes. The first byte picks channels (bit 0), filter (bit 1), and stretch or
 * centre crop (bit 2; bits 3-7 then give the shorter side above 7, 0 meaning "cover"). */
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "cloister/image.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    uint32_t channels = (data[0] & 1) ? 3 : 1;
    cl_image img;
    uint32_t pw, ph;
    /* the header reader must agree with the decoder on what it accepts and on the size */
    bool probed = cl_image_probe(data + 1, size - 1, &pw, &ph, NULL) == 0;
    if (cl_image_decode(data + 1, size - 1, channels, 1u << 20, &img, NULL) == 0) {
        if (!probed || pw != img.width || ph != img.height)
            abort(); /* what decodes has a header the probe reads, with the same size */
        cl_image_preproc p = {.width = 7, .height = 5, .channels = channels,
                              .resize = (data[0] & 2) ? CL_IMAGE_RESIZE_AREA
                                        : (size & 1)  ? CL_IMAGE_RESIZE_PIL
                                                      : CL_IMAGE_RESIZE_BILINEAR,
                              .scale = 1.0f / 255,
                              .fit = (data[0] & 4) ? CL_IMAGE_FIT_CROP : CL_IMAGE_FIT_STRETCH,
                              .shorter_side = (data[0] >> 3) ? 7u + (data[0] >> 3) : 0};
        float out[7 * 5 * 3];
        if (cl_image_to_tensor(&img, &p, out, NULL) != 0)
            abort(); /* a decoded image with matching channels must always convert */
        cl_image_free(&img);
    }
    return 0;
}
