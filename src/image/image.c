/* image.c — JPEG/PNG decoding from memory and image -> tensor preprocessing.
 *
 * Both decoders report errors through longjmp (libjpeg's error_exit, libpng's png_jmpbuf); each
 * decode function sets its jump point before touching the data and frees everything it allocated
 * on the way out. Image dimensions are validated from the header before the pixel buffer is
 * allocated. The resampler is a separable triangle (bilinear) filter whose support grows with the
 * downscale factor, as in PIL's antialiased resize, or an exact area average (box) filter, both in float;
 * or PIL's own 8-bit bilinear resize reproduced step by step (fixed-point weights, pixels rounded to 8 bits
 * after each pass), which is what torchvision's Resize does to PIL images. */
#include "cloister/image.h"

#include <math.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>

void cl_image_free(cl_image *img)
{
    if (img) {
        free(img->pixels);
        memset(img, 0, sizeof *img);
    }
}

static int check_dims(uint64_t w, uint64_t h, uint32_t max_pixels, cl_err *err)
{
    if (w == 0 || h == 0)
        return cl_err_set(err, CL_E_FORMAT, "the image has no pixels (%llux%llu)", (unsigned long long)w,
                          (unsigned long long)h);
    if (w * h > max_pixels)
        return cl_err_set(err, CL_E_INVALID, "the image is %llux%llu, more than the %u pixels allowed",
                          (unsigned long long)w, (unsigned long long)h, max_pixels);
    return 0;
}

/* Converts one row of `in_ch` channels to `out_ch` (1 or 3). */
static void convert_row(const uint8_t *in, uint32_t in_ch, uint8_t *out, uint32_t out_ch, uint32_t width)
{
    for (uint32_t x = 0; x < width; x++) {
        const uint8_t *p = in + (size_t)x * in_ch;
        if (out_ch == 3) {
            if (in_ch >= 3) {
                out[3 * x] = p[0];
                out[3 * x + 1] = p[1];
                out[3 * x + 2] = p[2];
            } else {
                out[3 * x] = out[3 * x + 1] = out[3 * x + 2] = p[0];
            }
        } else {
            out[x] = in_ch >= 3 ? (uint8_t)((299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000) : p[0];
        }
    }
}

/* ---------------------------------------------------------------- JPEG */

typedef struct jpeg_err {
    struct jpeg_error_mgr mgr;
    jmp_buf jump;
    char msg[JMSG_LENGTH_MAX];
} jpeg_err;

static void jpeg_error_exit(j_common_ptr cinfo)
{
    jpeg_err *e = (jpeg_err *)cinfo->err;
    (*cinfo->err->format_message)(cinfo, e->msg);
    longjmp(e->jump, 1);
}

static void jpeg_quiet(j_common_ptr cinfo, int level) { (void)cinfo; (void)level; }

static int decode_jpeg(const uint8_t *data, size_t len, uint32_t channels, uint32_t max_pixels, cl_image *out,
                       cl_err *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err je;
    uint8_t *volatile pixels = NULL;
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_error_exit;
    je.mgr.emit_message = jpeg_quiet;
    if (setjmp(je.jump)) {
        jpeg_destroy_decompress(&cinfo);
        free(pixels);
        return cl_err_set(err, CL_E_FORMAT, "corrupt JPEG: %s", je.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    if (check_dims(cinfo.image_width, cinfo.image_height, max_pixels, err) != 0) {
        jpeg_destroy_decompress(&cinfo);
        return -1;
    }
    /* Let libjpeg do colour conversion to grey or RGB (CMYK is refused). */
    if (cinfo.jpeg_color_space == JCS_CMYK || cinfo.jpeg_color_space == JCS_YCCK) {
        jpeg_destroy_decompress(&cinfo);
        return cl_err_set(err, CL_E_UNSUPPORTED, "CMYK JPEG images are not supported; convert to RGB");
    }
    cinfo.out_color_space = channels == 1 ? JCS_GRAYSCALE : JCS_RGB;
    uint32_t source_channels = cinfo.jpeg_color_space == JCS_GRAYSCALE ? 1 : 3;
    jpeg_start_decompress(&cinfo);
    uint32_t w = cinfo.output_width, h = cinfo.output_height;
    pixels = malloc((size_t)w * h * channels);
    if (!pixels) {
        jpeg_destroy_decompress(&cinfo);
        return cl_err_set(err, CL_E_NOMEM, "out of memory decoding a %ux%u JPEG", w, h);
    }
    while (cinfo.output_scanline < h) {
        JSAMPROW r = pixels + (size_t)cinfo.output_scanline * w * channels;
        jpeg_read_scanlines(&cinfo, &r, 1);
    }
    jpeg_finish_decompress(&cinfo);
    jpeg_destroy_decompress(&cinfo);
    out->width = w;
    out->height = h;
    out->channels = channels;
    out->pixels = pixels;
    out->source_channels = source_channels;
    return 0;
}

/* ---------------------------------------------------------------- PNG */

typedef struct png_src {
    const uint8_t *data;
    size_t len, pos;
} png_src;

static void png_read_mem(png_structp png, png_bytep out, size_t n)
{
    png_src *s = png_get_io_ptr(png);
    if (n > s->len - s->pos)
        png_error(png, "unexpected end of data");
    memcpy(out, s->data + s->pos, n);
    s->pos += n;
}

static void png_on_error(png_structp png, png_const_charp msg)
{
    char *buf = png_get_error_ptr(png);
    snprintf(buf, 200, "%s", msg);
    png_longjmp(png, 1);
}

static void png_on_warning(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

static int decode_png(const uint8_t *data, size_t len, uint32_t channels, uint32_t max_pixels, cl_image *out,
                      cl_err *err)
{
    char msg[200] = "unknown error";
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, msg, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* volatile: these must keep their values across the longjmp back to setjmp */
    uint8_t *volatile raw = NULL, *volatile pixels = NULL;
    png_bytep *volatile rows = NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return cl_err_set(err, CL_E_NOMEM, "out of memory starting a PNG decoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        free(rows);
        free(raw);
        free(pixels);
        return cl_err_set(err, CL_E_FORMAT, "corrupt PNG: %s", msg);
    }
    png_src src = {data, len, 0};
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    uint32_t w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    if (check_dims(w, h, max_pixels, err) != 0) {
        png_destroy_read_struct(&png, &info, NULL);
        return -1;
    }
    /* Normalise every PNG flavour to 8-bit grey or RGB, without alpha. */
    png_set_strip_16(png);
    png_set_packing(png);
    png_set_strip_alpha(png);
    int ct = png_get_color_type(png, info);
    if (ct == PNG_COLOR_TYPE_PALETTE)
        png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && png_get_bit_depth(png, info) < 8)
        png_set_expand_gray_1_2_4_to_8(png);
    if (png_get_valid(png, info, PNG_INFO_tRNS))
        png_set_tRNS_to_alpha(png); /* then stripped above */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    uint32_t in_ch = png_get_channels(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if (rowbytes != (size_t)w * in_ch)
        png_error(png, "unexpected row layout");
    /* Interlaced images need the whole image at once: decode with in_ch channels, then convert. */
    raw = malloc((size_t)h * rowbytes);
    pixels = malloc((size_t)w * h * channels);
    rows = malloc(h * sizeof(png_bytep));
    if (!raw || !pixels || !rows)
        png_error(png, "out of memory");
    for (uint32_t y = 0; y < h; y++)
        rows[y] = raw + (size_t)y * rowbytes;
    png_read_image(png, rows);
    png_read_end(png, NULL);
    for (uint32_t y = 0; y < h; y++)
        convert_row(raw + (size_t)y * rowbytes, in_ch, pixels + (size_t)y * w * channels, channels, w);
    png_destroy_read_struct(&png, &info, NULL);
    free(rows);
    free(raw);
    out->width = w;
    out->height = h;
    out->channels = channels;
    out->pixels = pixels;
    out->source_channels = in_ch >= 3 ? 3 : 1;
    return 0;
}

/* Encoding: libpng's writer into a growing memory buffer. */
typedef struct png_sink {
    uint8_t *data;
    size_t len, cap;
} png_sink;

static void png_write_mem(png_structp png, png_bytep in, size_t n)
{
    png_sink *s = png_get_io_ptr(png);
    if (s->len + n > s->cap) {
        size_t cap = s->cap ? s->cap : 4096;
        while (cap < s->len + n)
            cap *= 2;
        uint8_t *d = realloc(s->data, cap);
        if (!d)
            png_error(png, "out of memory");
        s->data = d;
        s->cap = cap;
    }
    memcpy(s->data + s->len, in, n);
    s->len += n;
}

static void png_flush_mem(png_structp png) { (void)png; }

int cl_image_encode_png(const cl_image *img, uint8_t **out, size_t *out_len, cl_err *err)
{
    *out = NULL;
    *out_len = 0;
    if ((img->channels != 1 && img->channels != 3) || !img->width || !img->height || !img->pixels)
        return cl_err_set(err, CL_E_INVALID, "an image to encode needs pixels and 1 or 3 channels");
    char msg[200] = "unknown error";
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, msg, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* on the heap, and rows too: both are written between setjmp and a possible longjmp */
    png_sink *sink = calloc(1, sizeof *sink);
    png_bytep *rows = malloc(img->height * sizeof(png_bytep));
    if (!info || !sink || !rows) {
        png_destroy_write_struct(&png, info ? &info : NULL);
        free(sink);
        free(rows);
        return cl_err_set(err, CL_E_NOMEM, "out of memory starting a PNG encoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(rows);
        free(sink->data);
        free(sink);
        return cl_err_set(err, CL_E_NOMEM, "cannot encode a PNG: %s", msg);
    }
    for (uint32_t y = 0; y < img->height; y++)
        rows[y] = img->pixels + (size_t)y * img->width * img->channels;
    png_set_write_fn(png, sink, png_write_mem, png_flush_mem);
    png_set_IHDR(png, info, img->width, img->height, 8, img->channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY,
                 PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_set_compression_level(png, 1);
    png_set_rows(png, info, rows);
    png_write_png(png, info, PNG_TRANSFORM_IDENTITY, NULL);
    png_destroy_write_struct(&png, &info);
    free(rows);
    *out = sink->data;
    *out_len = sink->len;
    free(sink);
    return 0;
}

/* The header only: the decoders' own header readers, no pixel decoded, nothing kept. */
static int probe_jpeg(const uint8_t *data, size_t len, uint32_t *w, uint32_t *h, cl_err *err)
{
    struct jpeg_decompress_struct cinfo;
    jpeg_err je;
    cinfo.err = jpeg_std_error(&je.mgr);
    je.mgr.error_exit = jpeg_error_exit;
    je.mgr.emit_message = jpeg_quiet;
    if (setjmp(je.jump)) {
        jpeg_destroy_decompress(&cinfo);
        return cl_err_set(err, CL_E_FORMAT, "corrupt JPEG: %s", je.msg);
    }
    jpeg_create_decompress(&cinfo);
    jpeg_mem_src(&cinfo, data, (unsigned long)len);
    jpeg_read_header(&cinfo, TRUE);
    *w = cinfo.image_width;
    *h = cinfo.image_height;
    jpeg_destroy_decompress(&cinfo);
    return 0;
}

static int probe_png(const uint8_t *data, size_t len, uint32_t *w, uint32_t *h, cl_err *err)
{
    char msg[200] = "unknown error";
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, msg, png_on_error, png_on_warning);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!info) {
        png_destroy_read_struct(&png, NULL, NULL);
        return cl_err_set(err, CL_E_NOMEM, "out of memory starting a PNG decoder");
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_read_struct(&png, &info, NULL);
        return cl_err_set(err, CL_E_FORMAT, "corrupt PNG: %s", msg);
    }
    png_src src = {data, len, 0};
    png_set_read_fn(png, &src, png_read_mem);
    png_read_info(png, info);
    *w = png_get_image_width(png, info);
    *h = png_get_image_height(png, info);
    png_destroy_read_struct(&png, &info, NULL);
    return 0;
}

int cl_image_probe(const uint8_t *data, size_t len, uint32_t *width, uint32_t *height, cl_err *err)
{
    *width = *height = 0;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(data, png_sig, 8) == 0)
        return probe_png(data, len, width, height, err);
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return probe_jpeg(data, len, width, height, err);
    return cl_err_set(err, CL_E_FORMAT, "not a JPEG or PNG image (%zu bytes)", len);
}

size_t cl_image_decode_bytes(uint32_t width, uint32_t height, uint32_t channels, uint32_t out_width)
{
    /* PNG: the rows as decoded (at most 3 bytes a pixel once 16-bit samples and alpha are stripped)
     * and the converted pixels; JPEG: the pixels. Then the resize's horizontal pass: one float per
     * source row, output column and channel. */
    size_t px = (size_t)width * height;
    return px * 3 + px * channels + (size_t)height * sizeof(void *) + (size_t)height * out_width * channels * 4;
}

int cl_image_decode(const uint8_t *data, size_t len, uint32_t channels, uint32_t max_pixels, cl_image *out,
                    cl_err *err)
{
    memset(out, 0, sizeof *out);
    if (channels != 1 && channels != 3)
        return cl_err_set(err, CL_E_INVALID, "images can be decoded to 1 or 3 channels, not %u", channels);
    if (max_pixels == 0)
        max_pixels = CL_IMAGE_MAX_PIXELS_DEFAULT;
    static const uint8_t png_sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    if (len >= 8 && memcmp(data, png_sig, 8) == 0)
        return decode_png(data, len, channels, max_pixels, out, err);
    if (len >= 3 && data[0] == 0xff && data[1] == 0xd8 && data[2] == 0xff)
        return decode_jpeg(data, len, channels, max_pixels, out, err);
    return cl_err_set(err, CL_E_FORMAT, "not a JPEG or PNG image (%zu bytes)", len);
}

/* ---------------------------------------------------------------- preprocessing */

size_t cl_image_tensor_len(const cl_image_preproc *p, const cl_image *img)
{
    size_t w = p->width ? p->width : img->width, h = p->height ? p->height : img->height;
    return w * h * p->channels;
}

/* Filter weights for resampling `in` samples to `out` samples: for each output index, the first
 * contributing input index and `taps` normalised weights. */
typedef struct resample {
    uint32_t taps;
    uint32_t *first;
    float *w; /* out x taps */
} resample;

static float triangle(float x)
{
    x = fabsf(x);
    return x < 1.0f ? 1.0f - x : 0.0f;
}

/* Length of the overlap of [a0, a1) and [b0, b1). */
static double overlap(double a0, double a1, double b0, double b1)
{
    double lo = a0 > b0 ? a0 : b0, hi = a1 < b1 ? a1 : b1;
    return hi > lo ? hi - lo : 0;
}

/* Output i of `out` samples is sample i + offset of `in` resized to `resized` samples (offset > 0 crops). */
static int resample_init(resample *r, uint32_t in, uint64_t resized, uint32_t out, uint64_t offset,
                         cl_image_resize kind)
{
    double scale = (double)in / (double)resized;
    double support = scale > 1.0 ? scale : 1.0; /* widen the filter when shrinking */
    bool area = kind == CL_IMAGE_RESIZE_AREA && scale > 1.0;
    r->taps = (uint32_t)ceil(support) * 2 + 1;
    r->first = calloc(out, sizeof *r->first);
    r->w = calloc((size_t)out * r->taps, sizeof *r->w);
    if (!r->first || !r->w)
        return -1;
    for (uint32_t i = 0; i < out; i++) {
        double center = ((double)i + (double)offset + 0.5) * scale;
        long lo = (long)floor(center - support), hi = (long)ceil(center + support);
        if (lo < 0)
            lo = 0;
        if (hi > (long)in)
            hi = (long)in;
        r->first[i] = (uint32_t)lo;
        float total = 0;
        float *w = r->w + (size_t)i * r->taps;
        for (long j = lo; j < hi && (uint32_t)(j - lo) < r->taps; j++) {
            w[j - lo] = area ? (float)overlap(j, j + 1, center - scale / 2, center + scale / 2)
                             : triangle((float)((j + 0.5 - center) / support));
            total += w[j - lo];
        }
        for (uint32_t t = 0; t < r->taps; t++)
            w[t] = total > 0 ? w[t] / total : 0;
        if (total == 0) /* cannot happen for in, out >= 1, but never divide by zero */
            w[0] = 1;
    }
    return 0;
}

static void resample_free(resample *r)
{
    free(r->first);
    free(r->w);
}

/* Python's round() of d / 2 for a non-negative integer d: halves go to the even neighbour (torchvision's
 * CenterCrop computes its offsets this way). */
static uint64_t half_round_even(uint64_t d) { return d / 2 + ((d & 1) && ((d / 2) & 1)); }

/* Where the output comes from: the image is resized to rw x rh and the output is the W x H window at
 * (left, top) of that. */
typedef struct geometry {
    uint64_t rw, rh, left, top;
} geometry;

static int fit_geometry(const cl_image_preproc *p, uint32_t iw, uint32_t ih, uint32_t W, uint32_t H, geometry *g,
                        cl_err *err)
{
    *g = (geometry){W, H, 0, 0};
    if (p->fit == CL_IMAGE_FIT_STRETCH)
        return 0;
    if (p->fit != CL_IMAGE_FIT_CROP)
        return cl_err_set(err, CL_E_INVALID, "unknown resize mode %d", (int)p->fit);
    if (!p->width || !p->height)
        return cl_err_set(err, CL_E_INVALID, "a centre crop needs a target width and height");
    uint64_t S = p->shorter_side;
    if (S) { /* torchvision Resize(S): the shorter side becomes S, the longer int(S * long / short) */
        if (iw <= ih) {
            g->rw = S;
            g->rh = S * ih / iw;
        } else {
            g->rh = S;
            g->rw = S * iw / ih;
        }
    } else if ((uint64_t)iw * H >= (uint64_t)W * ih) { /* relatively wider than the target: fit the height */
        g->rh = H;
        g->rw = (uint64_t)H * iw / ih;
    } else {
        g->rw = W;
        g->rh = (uint64_t)W * ih / iw;
    }
    if (g->rw < W || g->rh < H)
        return cl_err_set(err, CL_E_INVALID, "resizing the %ux%u image to a shorter side of %llu gives %llux%llu, "
                          "smaller than the %ux%u crop", iw, ih, (unsigned long long)S, (unsigned long long)g->rw,
                          (unsigned long long)g->rh, W, H);
    g->left = half_round_even(g->rw - W);
    g->top = half_round_even(g->rh - H);
    return 0;
}

/* ---- PIL's 8-bit bilinear resize (Pillow's Resample.c: precompute_coeffs, normalize_coeffs_8bpc and the
 * 8-bit horizontal and vertical passes), so that torchvision's Resize on a PIL image is matched to the
 * pixel. Every expression is evaluated in the same order and precision as there: the weights in double,
 * then fixed point with 22 fractional bits; each pass rounds (adds half, shifts) and clamps to 0..255. */
#define PIL_PRECISION_BITS 22

typedef struct pil_resample {
    uint32_t taps;
    uint32_t *first, *count;
    int32_t *k; /* out x taps */
} pil_resample;

static void pil_resample_free(pil_resample *r)
{
    free(r->first);
    free(r->count);
    free(r->k);
}

/* Output i of `out` is output i + offset of PIL resizing `in` samples to `resized`. */
static int pil_resample_init(pil_resample *r, uint32_t in, uint64_t resized, uint32_t out, uint64_t offset)
{
    double scale = (double)in / (double)resized, filterscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * filterscale; /* the bilinear filter's support is 1 */
    r->taps = (uint32_t)ceil(support) * 2 + 1;
    r->first = calloc(out, sizeof *r->first);
    r->count = calloc(out, sizeof *r->count);
    r->k = calloc((size_t)out * r->taps, sizeof *r->k);
    double *w = calloc(r->taps, sizeof *w);
    if (!r->first || !r->count || !r->k || !w) {
        free(w);
        return -1;
    }
    double ss = 1.0 / filterscale;
    for (uint32_t i = 0; i < out; i++) {
        double center = ((double)((uint64_t)i + offset) + 0.5) * scale;
        long xmin = (long)(center - support + 0.5), xmax = (long)(center + support + 0.5);
        if (xmin < 0)
            xmin = 0;
        if (xmax > (long)in)
            xmax = (long)in;
        xmax -= xmin;
        if (xmax > (long)r->taps) /* cannot happen: the window is at most 2 * support + 1 wide */
            xmax = (long)r->taps;
        double ww = 0.0;
        for (long x = 0; x < xmax; x++) {
            double t = ((double)(x + xmin) - center + 0.5) * ss;
            if (t < 0.0)
                t = -t;
            w[x] = t < 1.0 ? 1.0 - t : 0.0;
            ww += w[x];
        }
        int32_t *k = r->k + (size_t)i * r->taps;
        for (long x = 0; x < xmax; x++) {
            double v = ww != 0.0 ? w[x] / ww : w[x];
            k[x] = (int32_t)(v < 0 ? -0.5 + v * (1 << PIL_PRECISION_BITS) : 0.5 + v * (1 << PIL_PRECISION_BITS));
        }
        r->first[i] = (uint32_t)xmin;
        r->count[i] = (uint32_t)xmax;
    }
    free(w);
    return 0;
}

static uint8_t pil_clip8(int64_t v)
{
    v >>= PIL_PRECISION_BITS;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Resizes and crops img into W x H x C 8-bit pixels (malloc()ed), horizontal pass first, as PIL does. */
static uint8_t *pil_resize(const cl_image *img, const geometry *g, uint32_t W, uint32_t H)
{
    uint32_t C = img->channels, iw = img->width, ih = img->height;
    pil_resample rx = {0}, ry = {0};
    uint8_t *tmp = NULL, *out = NULL;
    if (pil_resample_init(&rx, iw, g->rw, W, g->left) != 0 || pil_resample_init(&ry, ih, g->rh, H, g->top) != 0)
        goto done;
    /* only the source rows the vertical pass reads */
    uint32_t y0 = ry.first[0], y1 = ry.first[H - 1] + ry.count[H - 1];
    for (uint32_t y = 0; y < H; y++) {
        if (ry.first[y] < y0)
            y0 = ry.first[y];
        if (ry.first[y] + ry.count[y] > y1)
            y1 = ry.first[y] + ry.count[y];
    }
    tmp = malloc((size_t)(y1 - y0 ? y1 - y0 : 1) * W * C);
    out = malloc((size_t)H * W * C);
    if (!tmp || !out) {
        free(out);
        out = NULL;
        goto done;
    }
    for (uint32_t y = y0; y < y1; y++) {
        const uint8_t *src = img->pixels + (size_t)y * iw * C;
        uint8_t *dst = tmp + (size_t)(y - y0) * W * C;
        for (uint32_t x = 0; x < W; x++) {
            const int32_t *k = rx.k + (size_t)x * rx.taps;
            for (uint32_t c = 0; c < C; c++) {
                int64_t acc = 1 << (PIL_PRECISION_BITS - 1);
                for (uint32_t t = 0; t < rx.count[x]; t++)
                    acc += (int64_t)src[(size_t)(rx.first[x] + t) * C + c] * k[t];
                dst[(size_t)x * C + c] = pil_clip8(acc);
            }
        }
    }
    for (uint32_t y = 0; y < H; y++) {
        const int32_t *k = ry.k + (size_t)y * ry.taps;
        for (uint32_t x = 0; x < W; x++)
            for (uint32_t c = 0; c < C; c++) {
                int64_t acc = 1 << (PIL_PRECISION_BITS - 1);
                for (uint32_t t = 0; t < ry.count[y]; t++)
                    acc += (int64_t)tmp[((size_t)(ry.first[y] - y0 + t) * W + x) * C + c] * k[t];
                out[((size_t)y * W + x) * C + c] = pil_clip8(acc);
            }
    }
done:
    free(tmp);
    pil_resample_free(&rx);
    pil_resample_free(&ry);
    return out;
}

static void normalise(const cl_image_preproc *p, uint32_t W, uint32_t H, uint32_t x, uint32_t y, uint32_t c,
                      double v, float *out)
{
    double scale = p->scale != 0 ? p->scale : 1.0, sd = p->std[c] != 0 ? p->std[c] : 1.0;
    size_t idx = p->layout == CL_IMAGE_NCHW ? ((size_t)c * H + y) * W + x : ((size_t)y * W + x) * p->channels + c;
    out[idx] = (float)((v * scale - p->mean[c]) / sd);
}

int cl_image_to_tensor(const cl_image *img, const cl_image_preproc *p, float *out, cl_err *err)
{
    if (p->channels != img->channels)
        return cl_err_set(err, CL_E_INVALID, "the image has %u channels but the model wants %u", img->channels,
                          p->channels);
    uint32_t W = p->width ? p->width : img->width, H = p->height ? p->height : img->height;
    uint32_t C = p->channels, iw = img->width, ih = img->height;
    geometry g;
    if (fit_geometry(p, iw, ih, W, H, &g, err) != 0)
        return -1;
    if (p->resize == CL_IMAGE_RESIZE_PIL) {
        uint8_t *px = pil_resize(img, &g, W, H);
        if (!px)
            return cl_err_set(err, CL_E_NOMEM, "out of memory resizing an image to %ux%u", W, H);
        for (uint32_t y = 0; y < H; y++)
            for (uint32_t x = 0; x < W; x++)
                for (uint32_t c = 0; c < C; c++)
                    normalise(p, W, H, x, y, c, px[((size_t)y * W + x) * C + c], out);
        free(px);
        return 0;
    }
    resample rx = {0}, ry = {0};
    float *tmp = malloc((size_t)ih * W * C * sizeof *tmp); /* after the horizontal pass */
    if (!tmp || resample_init(&rx, iw, g.rw, W, g.left, p->resize) != 0 ||
        resample_init(&ry, ih, g.rh, H, g.top, p->resize) != 0) {
        free(tmp);
        resample_free(&rx);
        resample_free(&ry);
        return cl_err_set(err, CL_E_NOMEM, "out of memory resizing an image to %ux%u", W, H);
    }
    for (uint32_t y = 0; y < ih; y++) {
        const uint8_t *src = img->pixels + (size_t)y * iw * C;
        for (uint32_t x = 0; x < W; x++) {
            const float *w = rx.w + (size_t)x * rx.taps;
            for (uint32_t c = 0; c < C; c++) {
                float acc = 0;
                for (uint32_t t = 0; t < rx.taps && rx.first[x] + t < iw; t++)
                    acc += w[t] * src[(size_t)(rx.first[x] + t) * C + c];
                tmp[((size_t)y * W + x) * C + c] = acc;
            }
        }
    }
    for (uint32_t y = 0; y < H; y++) {
        const float *w = ry.w + (size_t)y * ry.taps;
        for (uint32_t x = 0; x < W; x++) {
            for (uint32_t c = 0; c < C; c++) {
                float acc = 0;
                for (uint32_t t = 0; t < ry.taps && ry.first[y] + t < ih; t++)
                    acc += w[t] * tmp[((size_t)(ry.first[y] + t) * W + x) * C + c];
                normalise(p, W, H, x, y, c, acc, out);
            }
        }
    }
    free(tmp);
    resample_free(&rx);
    resample_free(&ry);
    return 0;
}
