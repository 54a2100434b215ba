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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_png_exact),        cmocka_unit_test(test_jpeg),
        cmocka_unit_test(test_refusals),         cmocka_unit_test(test_resize_and_layout),
        cmocka_unit_test(test_digit_samples_shrink_exactly), cmocka_unit_test(test_downscale_averages),
    };
    return cmocka_run_group_tests_name("image", tests, NULL, NULL);
}
