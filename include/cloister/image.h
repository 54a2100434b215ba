/* cloister/image.h — the interface of the image module: decoding JPEG and PNG from memory (libjpeg-turbo,
 * libpng) and turning an image into a model's input tensor (resize, scale, normalise, layout).
 * Used by the server (image bytes sent by clients are decoded inside the TEE) and by the clients.
 *
 * Ownership: cl_image pixels are malloc()ed by cl_image_decode and released by cl_image_free.
 * Thread-safety: no shared state; every function may be called concurrently on different images. */
#ifndef CLOISTER_IMAGE_H
#define CLOISTER_IMAGE_H

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_IMAGE_MAX_PIXELS_DEFAULT (64u * 1024 * 1024) /* decompression-bomb guard: 64 Mpixel */

/* 8-bit pixels, rows top to bottom, channels interleaved (HWC): 1 = grey, 3 = RGB. */
typedef struct cl_image {
    uint32_t width, height, channels;
    uint8_t *pixels;
} cl_image;

/* Decodes JPEG or PNG (recognised by signature) into `channels` (1 or 3) channels: colour is converted to
 * grey with ITU-R 601 weights, grey is replicated to RGB, alpha is dropped, 16-bit PNG is reduced to 8.
 * Dimensions are checked against max_pixels (0: CL_IMAGE_MAX_PIXELS_DEFAULT) before any pixel is decoded.
 * Errors: CL_E_FORMAT (not an image, corrupt data), CL_E_INVALID (too large), CL_E_NOMEM. */
int cl_image_decode(const uint8_t *data, size_t len, uint32_t channels, uint32_t max_pixels, cl_image *out,
                    cl_err *err);
void cl_image_free(cl_image *img);

typedef enum cl_image_layout {
    CL_IMAGE_NCHW = 0, /* planes: C x H x W (PyTorch, ONNX convention) */
    CL_IMAGE_NHWC,     /* interleaved: H x W x C (TensorFlow convention) */
} cl_image_layout;

typedef enum cl_image_resize {
    CL_IMAGE_RESIZE_BILINEAR = 0, /* triangle filter, widened when shrinking (PIL/torchvision antialias) */
    CL_IMAGE_RESIZE_AREA,         /* when shrinking, each output is the exact area average of the input
                                   * pixels it covers (OpenCV INTER_AREA); bilinear when enlarging */
} cl_image_resize;

/* How a model wants its image input. out[c] = (pixel[c] * scale - mean[c]) / std[c]. */
typedef struct cl_image_preproc {
    uint32_t width, height; /* target size; 0 = keep the image's */
    cl_image_resize resize;
    uint32_t channels;      /* 1 or 3 */
    float scale;            /* e.g. 1/255; 0 means 1 */
    float mean[3], std[3];  /* std 0 means 1 */
    cl_image_layout layout;
} cl_image_preproc;

/* Number of floats cl_image_to_tensor writes for an image of this size under p. */
size_t cl_image_tensor_len(const cl_image_preproc *p, const cl_image *img);

/* Resizes (separable filter chosen by p->resize), then scales, normalises and lays out `img` into `out`,
 * which holds cl_image_tensor_len() floats. The image must have p->channels channels. */
int cl_image_to_tensor(const cl_image *img, const cl_image_preproc *p, float *out, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
