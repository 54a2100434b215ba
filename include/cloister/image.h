/* cloister/image.h — the interface of the image module: decoding JPEG and PNG from memory (libjpeg-turbo,
 * libpng) and encoding PNG, turning an image into a model's input tensor (resize or centre crop, scale, normalise, layout),
 * and the declarations of that preprocessing that model versions carry (preprocess.json, cl_image_spec).
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
    uint32_t source_channels; /* colour of the encoded image before conversion: 1 grey, 3 colour */
} cl_image;

/* Decodes JPEG or PNG (recognised by signature) into `channels` (1 or 3) channels: colour is converted to
 * grey with ITU-R 601 weights, grey is replicated to RGB, alpha is dropped, 16-bit PNG is reduced to 8.
 * Dimensions are checked against max_pixels (0: CL_IMAGE_MAX_PIXELS_DEFAULT) before any pixel is decoded.
 * Errors: CL_E_FORMAT (not an image, corrupt data), CL_E_INVALID (too large), CL_E_NOMEM. */
int cl_image_decode(const uint8_t *data, size_t len, uint32_t channels, uint32_t max_pixels, cl_image *out,
                    cl_err *err);
void cl_image_free(cl_image *img);
/* Encodes an 8-bit grey or RGB image as PNG into a malloc()ed buffer (for generated test and benchmark
 * inputs: `cloister bench --random`). Errors: CL_E_INVALID (no pixels, channels other than 1 or 3),
 * CL_E_NOMEM. */
int cl_image_encode_png(const cl_image *img, uint8_t **out, size_t *out_len, cl_err *err);
/* Reads only the header of a JPEG or PNG image (recognised by signature): its width and height, no pixel
 * decoded. CL_E_FORMAT when it is neither or its header is damaged. */
int cl_image_probe(const uint8_t *data, size_t len, uint32_t *width, uint32_t *height, cl_err *err);
/* The most memory cl_image_decode and cl_image_to_tensor need at once for an image of width x height
 * decoded to `channels` and resized to `out_width` columns (its pixel buffers), in bytes. */
size_t cl_image_decode_bytes(uint32_t width, uint32_t height, uint32_t channels, uint32_t out_width);

typedef enum cl_image_layout {
    CL_IMAGE_NCHW = 0, /* planes: C x H x W (PyTorch, ONNX convention) */
    CL_IMAGE_NHWC,     /* interleaved: H x W x C (TensorFlow convention) */
} cl_image_layout;

typedef enum cl_image_resize {
    CL_IMAGE_RESIZE_BILINEAR = 0, /* triangle filter, widened when shrinking (PIL/torchvision antialias) */
    CL_IMAGE_RESIZE_AREA,         /* when shrinking, each output is the exact area average of the input
                                   * pixels it covers (OpenCV INTER_AREA); bilinear when enlarging */
    CL_IMAGE_RESIZE_PIL,          /* PIL's own bilinear resize of 8-bit images (Image.resize, BILINEAR), to
                                   * the pixel: fixed-point weights, pixels rounded to 0..255 after each
                                   * pass; what torchvision's Resize does to PIL images */
} cl_image_resize;

typedef enum cl_image_fit {
    CL_IMAGE_FIT_STRETCH = 0, /* resize to width x height; the aspect ratio is not kept */
    CL_IMAGE_FIT_CROP,        /* keep the aspect ratio: resize so the shorter side is `shorter_side` (0: just
                               * large enough to cover width x height), then take the centre width x height,
                               * as torchvision's Resize(shorter_side) + CenterCrop((height, width)) */
} cl_image_fit;

/* How a model wants its image input. out[c] = (pixel[c] * scale - mean[c]) / std[c], computed in double
 * and rounded once to float (so scale 1/255 gives exactly float32(pixel / 255.0), like NumPy/PyTorch). */
typedef struct cl_image_preproc {
    uint32_t width, height; /* target size; 0 = keep the image's (stretch only) */
    cl_image_resize resize; /* the resampling filter */
    uint32_t channels;      /* 1 or 3 */
    double scale;           /* e.g. 1/255; 0 means 1 */
    double mean[3], std[3]; /* std 0 means 1 */
    cl_image_layout layout;
    cl_image_fit fit;       /* CROP needs width and height */
    uint32_t shorter_side;  /* CROP: size of the shorter side before cropping; 0: cover the target */
} cl_image_preproc;

/* Number of floats cl_image_to_tensor writes for an image of this size under p. */
size_t cl_image_tensor_len(const cl_image_preproc *p, const cl_image *img);

/* Resizes (separable filter chosen by p->resize, crop chosen by p->fit), then scales, normalises and lays
 * out `img` into `out`, which holds cl_image_tensor_len() floats. The image must have p->channels channels.
 * Errors: CL_E_INVALID (channel count, a crop without a target size, a shorter side below the target). */
int cl_image_to_tensor(const cl_image *img, const cl_image_preproc *p, float *out, cl_err *err);

/* ---------------------------------------------------------------- preprocessing declarations */

#define CL_IMAGE_SPEC_MAX_SIDE 8192u                      /* target width, height, shorter_side */
#define CL_IMAGE_SPEC_MAX_PIXELS_DEFAULT (4096u * 4096u)  /* decoded pixels per image, unless declared */
#define CL_IMAGE_SPEC_MAX_BATCH_DEFAULT 64u               /* images per request, unless declared */
#define CL_IMAGE_SPEC_MAX_BATCH 4096u
#define CL_IMAGE_SPEC_MAX_TENSOR_BYTES (1024u * 1024 * 1024) /* max_batch x one image's floats */

/* The image preprocessing a model version declares for one of its inputs (a model version's
 * preprocess.json; docs/serve.md "Image inputs" has the schema). Plain data: copy freely. */
typedef struct cl_image_spec {
    char input[129];        /* the model input it applies to */
    cl_image_preproc pre;   /* fixed width and height always */
    uint32_t max_pixels;    /* decoded width x height allowed per image */
    uint32_t max_batch;     /* images per request */
    bool convert_color;     /* false: an image whose colour differs from pre.channels is refused */
} cl_image_spec;

/* Parses and fully validates a preprocess.json document. Unknown keys, duplicate keys, wrong types and
 * out-of-range values are CL_E_FORMAT errors naming the key and what is allowed. */
int cl_image_spec_parse(const char *json, size_t len, cl_image_spec *out, cl_err *err);
/* Reads `path` (at most 64 KiB) and parses it; errors are prefixed with the path. */
int cl_image_spec_load(const char *path, cl_image_spec *out, cl_err *err);
/* Floats one image becomes: width * height * channels. */
size_t cl_image_spec_len(const cl_image_spec *s);
/* The tensor shape one image becomes, without the batch dimension: {C, H, W} (NCHW) or {H, W, C}. */
void cl_image_spec_dims(const cl_image_spec *s, int64_t dims[3]);
/* Decodes one encoded JPEG/PNG under the spec's limits and preprocesses it into `out`
 * (cl_image_spec_len floats). Errors as cl_image_decode / cl_image_to_tensor, and CL_E_INVALID for an
 * image whose colour differs from the spec's when convert_color is false. Thread-safe. */
int cl_image_spec_apply(const cl_image_spec *s, const uint8_t *data, size_t len, float *out, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
