/* test_image.c — image decoding and preprocessing: exact PNG round trips, JPEG within codec error,
 * colour conversions, the resampler on inputs whose right answer is known, layouts, normalisation, and
 * refusal of corrupt, foreign and oversized images before allocating. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>
#include <png.h>
#include <zlib.h>

#include "cloister/image.h"
#include "testutil.h"

#ifndef CLOISTER_SOURCE_DIR
#error "CLOISTER_SOURCE_DIR must be defined by the build"
#endif

/* ---- encoders for test inputs */

typedef struct membuf {
    uint8_t *data;
    size_t len;
} membuf;

static void png_write_mem(png_structp png, png_bytep d, size_t n)
{
    membuf *m = png_get_io_ptr(png);
    m->data = realloc(m->data, m->len + n);
    memcpy(m->data + m->len, d, n);
    m->len += n;
}

static membuf encode_png(const uint8_t *px, uint32_t w, uint32_t h, int color_type, int channels, bool interlace)
{
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, NULL, NULL, NULL);
    png_infop info = png_create_info_struct(png);
    assert_int_equal(setjmp(png_jmpbuf(png)), 0);
    png_set_write_fn(png, &m, png_write_mem, NULL);
    png_set_IHDR(png, info, w, h, 8, color_type, interlace ? PNG_INTERLACE_ADAM7 : PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    png_set_interlace_handling(png);
    for (int pass = 0; pass < (interlace ? 7 : 1); pass++)
        for (uint32_t y = 0; y < h; y++)
            png_write_row(png, (png_const_bytep)(px + (size_t)y * w * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    return m;
}

static membuf encode_jpeg(const uint8_t *rgb, uint32_t w, uint32_t h, int quality)
{
    struct jpeg_compress_struct c;
    struct jpeg_error_mgr e;
    unsigned char *out = NULL;
    unsigned long out_len = 0;
    c.err = jpeg_std_error(&e);
    jpeg_create_compress(&c);
    jpeg_mem_dest(&c, &out, &out_len);
    c.image_width = w;
    c.image_height = h;
    c.input_components = 3;
    c.in_color_space = JCS_RGB;
    jpeg_set_defaults(&c);
    jpeg_set_quality(&c, quality, TRUE);
    jpeg_start_compress(&c, TRUE);
    while (c.next_scanline < h) {
        JSAMPROW r = (JSAMPROW)(rgb + (size_t)c.next_scanline * w * 3);
        jpeg_write_scanlines(&c, &r, 1);
    }
    jpeg_finish_compress(&c);
    jpeg_destroy_compress(&c);
    return (membuf){out, out_len};
}

static uint8_t *gradient_rgb(uint32_t w, uint32_t h)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (uint32_t y = 0; y < h; y++)
        for (uint32_t x = 0; x < w; x++) {
            uint8_t *p = px + ((size_t)y * w + x) * 3;
            p[0] = (uint8_t)(x * 255 / (w - 1));
            p[1] = (uint8_t)(y * 255 / (h - 1));
            p[2] = (uint8_t)((x + y) & 0xff);
        }
    return px;
}

/* ---- tests */

static void test_png_exact(void **state)
{
    (void)state;
    uint32_t w = 37, h = 23;
    uint8_t *rgb = gradient_rgb(w, h);
    for (int interlace = 0; interlace <= 1; interlace++) {
        membuf m = encode_png(rgb, w, h, PNG_COLOR_TYPE_RGB, 3, interlace);
        cl_image img;
        cl_err err = {0};
        assert_int_equal(cl_image_decode(m.data, m.len, 3, 0, &img, &err), 0);
        assert_int_equal(img.width, w);
        assert_int_equal(img.height, h);
        assert_memory_equal(img.pixels, rgb, (size_t)w * h * 3);
        cl_image_free(&img);
        /* to grey: ITU-R 601 weights */
        assert_int_equal(cl_image_decode(m.data, m.len, 1, 0, &img, &err), 0);
        const uint8_t *p = rgb + (5 * w + 7) * 3;
        assert_int_equal(img.pixels[5 * w + 7], (299 * p[0] + 587 * p[1] + 114 * p[2] + 500) / 1000);
        cl_image_free(&img);
        free(m.data);
    }
    /* grey PNG replicated to RGB; RGBA drops alpha */
    uint8_t grey[4] = {0, 85, 170, 255};
    membuf g = encode_png(grey, 2, 2, PNG_COLOR_TYPE_GRAY, 1, false);
    cl_image img;
    assert_int_equal(cl_image_decode(g.data, g.len, 3, 0, &img, NULL), 0);
    assert_int_equal(img.pixels[3 * 1 + 0], 85);
    assert_int_equal(img.pixels[3 * 1 + 2], 85);
    cl_image_free(&img);
    free(g.data);
    uint8_t rgba[8] = {10, 20, 30, 0, 40, 50, 60, 255};
    membuf a = encode_png(rgba, 2, 1, PNG_COLOR_TYPE_RGB_ALPHA, 4, false);
    assert_int_equal(cl_image_decode(a.data, a.len, 3, 0, &img, NULL), 0);
    const uint8_t want[6] = {10, 20, 30, 40, 50, 60};
    assert_memory_equal(img.pixels, want, 6);
    cl_image_free(&img);
    free(a.data);
    free(rgb);
}

static void test_jpeg(void **state)
{
    (void)state;
    uint32_t w = 64, h = 48;
    uint8_t *rgb = gradient_rgb(w, h);
    for (size_t i = 0; i < (size_t)w * h * 3; i += 3)
        rgb[i + 2] = 128; /* smooth content: the codec's error stays small */
    membuf m = encode_jpeg(rgb, w, h, 95);
    cl_image img;
    cl_err err = {0};
    assert_int_equal(cl_image_decode(m.data, m.len, 3, 0, &img, &err), 0);
    assert_int_equal(img.width, w);
    assert_int_equal(img.height, h);
    double total = 0;
    for (size_t i = 0; i < (size_t)w * h * 3; i++)
        total += fabs((double)img.pixels[i] - rgb[i]);
    assert_true(total / ((double)w * h * 3) < 3.0); /* mean absolute error of a q95 JPEG */
    cl_image_free(&img);

    /* damaged entropy data is an error with a message, never a crash */
    membuf bad = {malloc(m.len), m.len};
    memcpy(bad.data, m.data, m.len);
    memset(bad.data + 4, 0x00, 40); /* wipe the first segment after SOI */
    assert_int_equal(cl_image_decode(bad.data, bad.len, 3, 0, &img, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "corrupt JPEG"));
    free(bad.data);
    free(m.data);
    free(rgb);
}

static void test_refusals(void **state)
{
    (void)state;
    cl_image img;
    cl_err err = {0};
    assert_int_equal(cl_image_decode((const uint8_t *)"GIF89a....", 10, 3, 0, &img, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "not a JPEG or PNG"));
    assert_int_equal(cl_image_decode((const uint8_t *)"", 0, 3, 0, &img, &err), -1);
    assert_int_equal(cl_image_decode((const uint8_t *)"x", 1, 2, 0, &img, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);

    uint8_t *rgb = gradient_rgb(16, 16);
    membuf m = encode_png(rgb, 16, 16, PNG_COLOR_TYPE_RGB, 3, false);
    /* truncated PNG */
    assert_int_equal(cl_image_decode(m.data, m.len / 2, 3, 0, &img, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "corrupt PNG"));
    /* too many pixels for the caller's limit */
    assert_int_equal(cl_image_decode(m.data, m.len, 3, 255, &img, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    /* a decompression bomb: IHDR claims 60000 x 60000 (CRC fixed up so only the size is wrong) */
    uint8_t *bomb = malloc(m.len);
    memcpy(bomb, m.data, m.len);
    const uint8_t big[8] = {0, 0, 0xea, 0x60, 0, 0, 0xea, 0x60};
    memcpy(bomb + 16, big, 8); /* IHDR data starts at 16: width, height */
    uLong crc = crc32(0, bomb + 12, 17);
    bomb[29] = (uint8_t)(crc >> 24);
    bomb[30] = (uint8_t)(crc >> 16);
    bomb[31] = (uint8_t)(crc >> 8);
    bomb[32] = (uint8_t)crc;
    assert_int_equal(cl_image_decode(bomb, m.len, 3, 0, &img, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "60000x60000"));
    free(bomb);
    free(m.data);
    free(rgb);
}

static void test_resize_and_layout(void **state)
{
    (void)state;
    /* identity size: exact values, both layouts */
    uint8_t px[2 * 3 * 3];
    for (size_t i = 0; i < sizeof px; i++)
        px[i] = (uint8_t)(i * 10);
    cl_image img = {3, 2, 3, px};
    float out[18];
    cl_image_preproc p = {.channels = 3, .layout = CL_IMAGE_NHWC};
    assert_int_equal(cl_image_tensor_len(&p, &img), 18);
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    for (size_t i = 0; i < 18; i++)
        assert_float_equal(out[i], px[i], 1e-4);
    p.layout = CL_IMAGE_NCHW;
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    /* NCHW: channel c, row y, column x */
    assert_float_equal(out[(2 * 2 + 1) * 3 + 2], px[(1 * 3 + 2) * 3 + 2], 1e-4);
    /* normalisation */
    p.scale = 1.0f / 255;
    p.mean[0] = 0.5f;
    p.std[0] = 0.25f;
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    assert_float_equal(out[0], (0 / 255.0f - 0.5f) / 0.25f, 1e-5);
    assert_float_equal(out[1], (30 / 255.0f - 0.5f) / 0.25f, 1e-5);

    /* a constant image stays constant at any size */
    uint8_t flat[5 * 7];
    memset(flat, 77, sizeof flat);
    cl_image f = {7, 5, 1, flat};
    float big[13 * 11];
    cl_image_preproc up = {.width = 13, .height = 11, .channels = 1};
    assert_int_equal(cl_image_to_tensor(&f, &up, big, NULL), 0);
    for (size_t i = 0; i < CL_ARRAY_LEN(big); i++)
        assert_float_equal(big[i], 77, 1e-3);

    /* channel mismatch is refused */
    cl_image_preproc rgb = {.channels = 3};
    cl_err err = {0};
    assert_int_equal(cl_image_to_tensor(&f, &rgb, big, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
}

/* The demo's sample images are 8x8 digits blown up 4x: shrinking them back with the area filter must
 * give each 4x4 block's value exactly. */
static void test_digit_samples_shrink_exactly(void **state)
{
    (void)state;
    char path[1024];
    for (int d = 0; d < 10; d++) {
        snprintf(path, sizeof path, "%s/models/digits/samples/digit-%d-0.png", CLOISTER_SOURCE_DIR, d);
        size_t len;
        uint8_t *data = tu_read_file(path, &len);
        cl_image img;
        cl_err err = {0};
        assert_int_equal(cl_image_decode(data, len, 1, 0, &img, &err), 0);
        assert_int_equal(img.width, 32);
        float t[64];
        cl_image_preproc p = {.width = 8, .height = 8, .resize = CL_IMAGE_RESIZE_AREA, .channels = 1,
                              .scale = 1.0f / 255};
        assert_int_equal(cl_image_to_tensor(&img, &p, t, &err), 0);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                assert_float_equal(t[y * 8 + x], img.pixels[(4 * y + 1) * 32 + 4 * x + 2] / 255.0f, 1e-5);
        cl_image_free(&img);
        free(data);
    }
}

static void test_downscale_averages(void **state)
{
    (void)state;
    /* 2x shrink of alternating columns 0/200. Area: every output is exactly the average, 100.
     * Bilinear (antialiased): weights 1/8, 3/8, 3/8, 1/8 over two pairs give 100 away from the edges,
     * and at the left edge (weights 3/8, 3/8, 1/8 renormalised) 200 * 3/7. */
    uint8_t stripes[8 * 8];
    for (int i = 0; i < 64; i++)
        stripes[i] = (i % 2) ? 200 : 0;
    cl_image img = {8, 8, 1, stripes};
    float out[16];
    cl_image_preproc p = {.width = 4, .height = 4, .resize = CL_IMAGE_RESIZE_AREA, .channels = 1};
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    for (int i = 0; i < 16; i++)
        assert_float_equal(out[i], 100, 1e-3);
    p.resize = CL_IMAGE_RESIZE_BILINEAR;
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    for (int y = 0; y < 4; y++) {
        assert_float_equal(out[y * 4 + 0], 200.0f * 3 / 7, 1e-3);
        assert_float_equal(out[y * 4 + 1], 100, 1e-3);
        assert_float_equal(out[y * 4 + 2], 100, 1e-3);
    }
}

/* ---- PIL's 8-bit bilinear resize: the float filter's weights, but each pass rounds to 0..255 */
static void test_resize_pil(void **state)
{
    (void)state;
    uint8_t stripes[64];
    for (int i = 0; i < 64; i++)
        stripes[i] = (i % 2) ? 200 : 0;
    cl_image img = {8, 8, 1, stripes, 1};
    float out[16];
    cl_image_preproc p = {.width = 4, .height = 4, .resize = CL_IMAGE_RESIZE_PIL, .channels = 1};
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    /* halving: weights 1/8, 3/8, 3/8, 1/8 inside; at the edges the window is cut and renormalised:
     * 200 * 3/7 = 85.71 and 200 * 4/7 = 114.29, which PIL (and so torchvision) rounds to 86 and 114 where the
     * float filter keeps 85.71 */
    const float want[4] = {86, 100, 100, 114};
    for (int y = 0; y < 4; y++)
        assert_memory_equal(out + 4 * y, want, sizeof want);
    p.resize = CL_IMAGE_RESIZE_BILINEAR;
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    assert_float_equal(out[0], 200.0f * 3 / 7, 1e-3);
    /* the same size is the identity; enlarging 2 -> 3 interpolates and rounds: 0, 100, 200 */
    uint8_t px[12] = {0, 200, 7, 9, 11, 13, 250, 3, 1, 2, 3, 4};
    cl_image same = {4, 3, 1, px, 1};
    cl_image_preproc q = {.width = 4, .height = 3, .resize = CL_IMAGE_RESIZE_PIL, .channels = 1};
    float o12[12];
    assert_int_equal(cl_image_to_tensor(&same, &q, o12, NULL), 0);
    for (int i = 0; i < 12; i++)
        assert_float_equal(o12[i], px[i], 0);
    uint8_t two[2] = {0, 200};
    cl_image wide = {2, 1, 1, two, 1};
    cl_image_preproc r = {.width = 3, .height = 1, .resize = CL_IMAGE_RESIZE_PIL, .channels = 1};
    float o3[3];
    assert_int_equal(cl_image_to_tensor(&wide, &r, o3, NULL), 0);
    /* output centres 1/3, 1, 5/3 in input pixels: 0, 100 and 200 (clamped windows) */
    assert_float_equal(o3[0], 0, 0);
    assert_float_equal(o3[1], 100, 0);
    assert_float_equal(o3[2], 200, 0);
    /* scale, mean, std and layout apply after the 8-bit pixels: RGB 1x1 -> 2x2 NCHW */
    uint8_t rgb[3] = {51, 102, 255};
    cl_image one = {1, 1, 3, rgb, 3};
    cl_image_preproc s = {.width = 2, .height = 2, .resize = CL_IMAGE_RESIZE_PIL, .channels = 3, .scale = 1.0 / 255,
                          .mean = {0.2, 0.4, 0.5}, .std = {0.5, 0.5, 0.25}};
    float o[12];
    assert_int_equal(cl_image_to_tensor(&one, &s, o, NULL), 0);
    for (int i = 0; i < 4; i++) {
        assert_float_equal(o[i], 0, 1e-6);
        assert_float_equal(o[4 + i], 0, 1e-6);
        assert_float_equal(o[8 + i], 2, 1e-6);
    }
}

/* ---- PNG encoding: what is encoded decodes to the same pixels */
static void test_encode_png(void **state)
{
    (void)state;
    for (uint32_t ch = 1; ch <= 3; ch += 2) {
        uint8_t px[17 * 5 * 3];
        for (size_t i = 0; i < sizeof px; i++)
            px[i] = (uint8_t)(i * 37 + 11);
        cl_image img = {17, 5, ch, px, ch};
        uint8_t *png;
        size_t len;
        assert_int_equal(cl_image_encode_png(&img, &png, &len, NULL), 0);
        assert_true(len > 8 && memcmp(png, "\x89PNG", 4) == 0);
        cl_image back;
        assert_int_equal(cl_image_decode(png, len, ch, 0, &back, NULL), 0);
        assert_int_equal(back.width, 17);
        assert_int_equal(back.height, 5);
        assert_int_equal(back.source_channels, ch);
        assert_memory_equal(back.pixels, px, (size_t)17 * 5 * ch);
        cl_image_free(&back);
        free(png);
    }
    cl_err err = {0};
    uint8_t *png = (uint8_t *)"x";
    size_t len = 1;
    cl_image two = {1, 1, 2, (uint8_t *)"ab", 2};
    assert_int_equal(cl_image_encode_png(&two, &png, &len, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_null(png);
    assert_int_equal(len, 0);
}

/* ---- centre crop (torchvision's Resize + CenterCrop geometry) */

static void test_crop(void **state)
{
    (void)state;
    /* 6x2 image whose columns are 0, 10, ..., 50 */
    uint8_t ramp[12];
    for (int i = 0; i < 12; i++)
        ramp[i] = (uint8_t)(10 * (i % 6));
    cl_image img = {6, 2, 1, ramp, 1};
    float out[4];
    /* cover 2x2: the height fits (2), the width stays 6, the centre columns 2 and 3 are taken as they are */
    cl_image_preproc p = {.width = 2, .height = 2, .channels = 1, .fit = CL_IMAGE_FIT_CROP};
    assert_int_equal(cl_image_tensor_len(&p, &img), 4);
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    const float cover[4] = {20, 30, 20, 30};
    assert_memory_equal(out, cover, sizeof cover);
    /* shorter side 4: resized to 12x4 (a linear ramp stays linear), window at left 5, top 1: sample
     * centres 2.75 and 3.25 in input pixels -> 22.5 and 27.5 */
    p.shorter_side = 4;
    assert_int_equal(cl_image_to_tensor(&img, &p, out, NULL), 0);
    for (int y = 0; y < 2; y++) {
        assert_float_equal(out[y * 2], 22.5, 1e-4);
        assert_float_equal(out[y * 2 + 1], 27.5, 1e-4);
    }
    /* the vertical offset rounds halves to even like Python: 2x3 -> rows 0-1, 2x5 -> rows 2-3 */
    uint8_t rows[10];
    for (int i = 0; i < 10; i++)
        rows[i] = (uint8_t)(100 + i / 2);
    cl_image three = {2, 3, 1, rows, 1}, five = {2, 5, 1, rows, 1};
    cl_image_preproc q = {.width = 2, .height = 2, .channels = 1, .fit = CL_IMAGE_FIT_CROP};
    assert_int_equal(cl_image_to_tensor(&three, &q, out, NULL), 0);
    assert_float_equal(out[0], 100, 0);
    assert_float_equal(out[2], 101, 0);
    assert_int_equal(cl_image_to_tensor(&five, &q, out, NULL), 0);
    assert_float_equal(out[0], 102, 0);
    assert_float_equal(out[2], 103, 0);
    /* a shorter side below the crop, and a crop without a size, are refused */
    cl_err err = {0};
    q.shorter_side = 1;
    assert_int_equal(cl_image_to_tensor(&three, &q, out, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "smaller than the 2x2 crop"));
    cl_image_preproc nosize = {.channels = 1, .fit = CL_IMAGE_FIT_CROP};
    assert_int_equal(cl_image_to_tensor(&three, &nosize, out, &err), -1);
    assert_non_null(strstr(err.msg, "needs a target width and height"));
}

/* ---- preprocess.json */

static void test_spec_parse(void **state)
{
    (void)state;
    const char *full = "{\"input\": \"pixels\", \"color\": \"RGB\", \"width\": 224, \"height\": 200,\n"
                       " \"resize\": \"crop\", \"shorter_side\": 256, \"filter\": \"area\", \"scale\": 0.5,\n"
                       " \"mean\": [0.485, 0.456, 0.406], \"std\": [0.229, 0.224, 0.225], \"layout\": \"NHWC\",\n"
                       " \"max_pixels\": 1000000, \"max_batch\": 8, \"convert_color\": false}";
    cl_image_spec s;
    cl_err err = {0};
    if (cl_image_spec_parse(full, strlen(full), &s, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(s.input, "pixels");
    assert_int_equal(s.pre.channels, 3);
    assert_int_equal(s.pre.width, 224);
    assert_int_equal(s.pre.height, 200);
    assert_int_equal(s.pre.fit, CL_IMAGE_FIT_CROP);
    assert_int_equal(s.pre.shorter_side, 256);
    assert_int_equal(s.pre.resize, CL_IMAGE_RESIZE_AREA);
    assert_true(s.pre.scale == 0.5);
    assert_true(s.pre.mean[1] == 0.456 && s.pre.std[2] == 0.225);
    assert_int_equal(s.pre.layout, CL_IMAGE_NHWC);
    assert_int_equal(s.max_pixels, 1000000);
    assert_int_equal(s.max_batch, 8);
    assert_false(s.convert_color);
    assert_int_equal(cl_image_spec_len(&s), 224 * 200 * 3);
    int64_t dims[3];
    cl_image_spec_dims(&s, dims);
    assert_true(dims[0] == 200 && dims[1] == 224 && dims[2] == 3);

    /* the smallest declaration: defaults for everything optional */
    const char *min = "{\"input\":\"image\",\"color\":\"GRAY\",\"width\":8,\"height\":6,\"layout\":\"NCHW\"}";
    assert_int_equal(cl_image_spec_parse(min, strlen(min), &s, &err), 0);
    assert_int_equal(s.pre.channels, 1);
    assert_int_equal(s.pre.fit, CL_IMAGE_FIT_STRETCH);
    assert_int_equal(s.pre.resize, CL_IMAGE_RESIZE_BILINEAR);
    assert_true(s.pre.scale == 1 && s.pre.mean[0] == 0 && s.pre.std[0] == 1);
    assert_int_equal(s.max_pixels, CL_IMAGE_SPEC_MAX_PIXELS_DEFAULT);
    assert_int_equal(s.max_batch, CL_IMAGE_SPEC_MAX_BATCH_DEFAULT);
    assert_true(s.convert_color);
    cl_image_spec_dims(&s, dims);
    assert_true(dims[0] == 1 && dims[1] == 6 && dims[2] == 8);
    /* "filter": "pil": PIL's 8-bit resize, as torchvision's Resize on PIL images */
    const char *pil = "{\"input\":\"image\",\"color\":\"RGB\",\"width\":8,\"height\":6,\"layout\":\"NCHW\","
                      "\"filter\":\"pil\"}";
    assert_int_equal(cl_image_spec_parse(pil, strlen(pil), &s, &err), 0);
    assert_int_equal(s.pre.resize, CL_IMAGE_RESIZE_PIL);

    /* the demo model's declaration is valid and is what the model was trained on */
    char path[1024];
    snprintf(path, sizeof path, "%s/models/digits/1/preprocess.json", CLOISTER_SOURCE_DIR);
    if (cl_image_spec_load(path, &s, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(s.input, "image");
    assert_true(s.pre.channels == 1 && s.pre.width == 8 && s.pre.height == 8 && s.pre.layout == CL_IMAGE_NCHW);
    assert_int_equal(s.pre.resize, CL_IMAGE_RESIZE_AREA);
    assert_true(s.pre.scale == 1.0 / 255);
}

static void test_spec_refusals(void **state)
{
    (void)state;
#define BASE "\"input\":\"x\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\""
    static const struct {
        const char *json, *msg;
    } cases[] = {
        {"", "preprocessing declaration: line 1, column 0"},
        {"{" BASE, "preprocessing declaration: line 1, column 64: '}' expected"},
        {"[1]", "expected a JSON object"},
        {"{" BASE ",\"colour\":\"RGB\"}", "unknown key \"colour\" (known: input, color"},
        {"{" BASE ",\"width\":9}", "duplicate object key near '\"width\"'"},
        /* what the lenient reader let through: data after the object, "\u0000" cutting a name, bad
         * UTF-8, an integer too large to hold, a real where an integer belongs */
        {"{" BASE "} {}", "line 1, column 67: end of file expected"},
        {"{" BASE "}x", "line 1"},
        {"{\"input\":\"x\\u0000y\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "\\u0000"},
        {"{\"input\":\"\xc3\x28\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "unable to decode byte 0xc3"},
        {"{" BASE ",\"max_batch\":123456789012345678901234567890}", "too big"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8.0,\"height\":8,\"layout\":\"NCHW\"}", "\"width\" must be"},
        {"{\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "\"input\" is missing"},
        {"{\"input\":\"x\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "\"color\" is missing"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"height\":8,\"layout\":\"NCHW\"}", "\"width\" is missing"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8,\"height\":8}", "\"layout\" is missing"},
        {"{\"input\":\"\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "\"input\" must be"},
        {"{\"input\":3,\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}", "\"input\" must be"},
        {"{\"input\":\"x\",\"color\":\"BGR\",\"width\":8,\"height\":8,\"layout\":\"NCHW\"}",
         "\"color\" must be one of \"GRAY\", \"RGB\""},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":0,\"height\":8,\"layout\":\"NCHW\"}",
         "\"width\" must be an integer from 1 to 8192"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8.5,\"height\":8,\"layout\":\"NCHW\"}", "\"width\" must be"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8,\"height\":9000,\"layout\":\"NCHW\"}", "\"height\" must be"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8,\"height\":\"8\",\"layout\":\"NCHW\"}", "\"height\" must be"},
        {"{\"input\":\"x\",\"color\":\"GRAY\",\"width\":8,\"height\":8,\"layout\":\"CHW\"}",
         "\"layout\" must be one of \"NCHW\", \"NHWC\""},
        {"{" BASE ",\"resize\":\"fit\"}", "\"resize\" must be one of \"stretch\", \"crop\""},
        {"{" BASE ",\"shorter_side\":16}", "only applies to \"resize\": \"crop\""},
        {"{" BASE ",\"resize\":\"crop\",\"shorter_side\":7}", "must fit in the resized image"},
        {"{" BASE ",\"filter\":\"nearest\"}", "\"filter\" must be one of \"bilinear\", \"area\""},
        {"{" BASE ",\"scale\":0}", "\"scale\" must be a finite number above 0"},
        {"{" BASE ",\"scale\":\"1/255\"}", "\"scale\" must be"},
        {"{" BASE ",\"mean\":[0.5,0.5,0.5]}", "\"mean\" must be a list of 1 number"},
        {"{" BASE ",\"mean\":0.5}", "\"mean\" must be a list"},
        {"{" BASE ",\"mean\":[\"a\"]}", "\"mean\"[0] must be a finite number"},
        {"{" BASE ",\"std\":[0]}", "\"std\"[0] must be a finite number above 0"},
        {"{" BASE ",\"std\":[-1]}", "above 0"},
        {"{" BASE ",\"max_pixels\":0}", "\"max_pixels\" must be an integer from 1 to"},
        {"{" BASE ",\"max_pixels\":1e12}", "\"max_pixels\" must be"},
        {"{" BASE ",\"max_batch\":5000}", "\"max_batch\" must be an integer from 1 to 4096"},
        {"{\"input\":\"x\",\"color\":\"RGB\",\"width\":8192,\"height\":8192,\"layout\":\"NCHW\",\"max_batch\":2}",
         "above the 1024 MiB allowed: lower max_batch"},
        {"{" BASE ",\"convert_color\":1}", "\"convert_color\" must be true or false"},
    };
#undef BASE
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        cl_image_spec s;
        cl_err err = {0};
        if (cl_image_spec_parse(cases[i].json, strlen(cases[i].json), &s, &err) == 0)
            fail_msg("accepted: %s", cases[i].json);
        assert_int_equal(err.code, CL_E_FORMAT);
        if (!strstr(err.msg, cases[i].msg))
            fail_msg("%s\n  message '%s' lacks '%s'", cases[i].json, err.msg, cases[i].msg);
        assert_int_equal(s.pre.width, 0); /* nothing half-parsed is left behind */
    }
    cl_image_spec s;
    cl_err err = {0};
    assert_int_equal(cl_image_spec_load("/nonexistent/preprocess.json", &s, &err), -1);
    assert_non_null(strstr(err.msg, "/nonexistent/preprocess.json"));
}

/* Applying a spec to encoded bytes: the demo's 32x32 samples become exactly float32(pixel / 255.0),
 * the value PyTorch computed its reference from; colour conversion and the limits. */
static void test_spec_apply(void **state)
{
    (void)state;
    char path[1024];
    snprintf(path, sizeof path, "%s/models/digits/1/preprocess.json", CLOISTER_SOURCE_DIR);
    cl_image_spec s;
    cl_err err = {0};
    assert_int_equal(cl_image_spec_load(path, &s, &err), 0);
    for (int d = 0; d < 10; d++) {
        snprintf(path, sizeof path, "%s/models/digits/samples/digit-%d-1.png", CLOISTER_SOURCE_DIR, d);
        size_t len;
        uint8_t *data = tu_read_file(path, &len);
        float t[64], want[64];
        if (cl_image_spec_apply(&s, data, len, t, &err) != 0)
            fail_msg("%s", err.msg);
        cl_image img;
        assert_int_equal(cl_image_decode(data, len, 1, 0, &img, NULL), 0);
        for (int y = 0; y < 8; y++)
            for (int x = 0; x < 8; x++)
                want[y * 8 + x] = (float)(img.pixels[(4 * y) * 32 + 4 * x] / 255.0);
        assert_memory_equal(t, want, sizeof want); /* bit for bit */
        cl_image_free(&img);
        free(data);
    }
    /* colour: converted by default, refused when the declaration says not to convert */
    uint8_t *rgb = gradient_rgb(16, 16);
    membuf m = encode_png(rgb, 16, 16, PNG_COLOR_TYPE_RGB, 3, false);
    float t[64];
    assert_int_equal(cl_image_spec_apply(&s, m.data, m.len, t, &err), 0);
    s.convert_color = false;
    assert_int_equal(cl_image_spec_apply(&s, m.data, m.len, t, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "the image is colour but this model takes greyscale images"));
    uint8_t grey[256] = {0};
    membuf g = encode_png(grey, 16, 16, PNG_COLOR_TYPE_GRAY, 1, false);
    assert_int_equal(cl_image_spec_apply(&s, g.data, g.len, t, &err), 0);
    /* a colour JPEG is refused the same way */
    membuf j = encode_jpeg(rgb, 16, 16, 90);
    assert_int_equal(cl_image_spec_apply(&s, j.data, j.len, t, &err), -1);
    assert_non_null(strstr(err.msg, "colour"));
    /* the pixel limit of the declaration */
    s.convert_color = true;
    s.max_pixels = 255;
    assert_int_equal(cl_image_spec_apply(&s, g.data, g.len, t, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_non_null(strstr(err.msg, "16x16, more than the 255 pixels allowed"));
    /* not an image */
    assert_int_equal(cl_image_spec_apply(&s, (const uint8_t *)"hello", 5, t, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    free(m.data);
    free(g.data);
    free(j.data);
    free(rgb);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_exact),        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_refusals),         cmocka_unit_test(test_resize_and_layout),
        cmocka_unit_test(test_digit_samples_shrink_exactly), cmocka_unit_test(test_downscale_averages),
        cmocka_unit_test(test_resize_pil),       cmocka_unit_test(test_encode_png),
        cmocka_unit_test(test_crop),             cmocka_unit_test(test_spec_parse),
        cmocka_unit_test(test_spec_refusals),    cmocka_unit_test(test_spec_apply),
    };
    return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
