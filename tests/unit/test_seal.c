/* test_seal.c — the sealed format as specification: round trips at every size boundary, and one
 * test per way a sealed file can be wrong (each must fail with its own status, and no plaintext may
 * come out). */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloister/policy.h"
#include "cloister/seal.h"
#include "testutil.h"

#define SMALL_CHUNK 64u

static uint8_t key_a[CL_SEAL_KEY_LEN], key_b[CL_SEAL_KEY_LEN];

static int setup(void **state)
{
    (void)state;
    tu_fill_random(key_a, sizeof key_a, 1);
    tu_fill_random(key_b, sizeof key_b, 2);
    return 0;
}

static cl_seal_options opts_chunk(uint32_t chunk)
{
    return (cl_seal_options){.key_id = "model-key", .content_type = "application/x-onnx", .chunk_size = chunk};
}

/* Seals `len` pseudo-random bytes with the given chunk size and opens them again from memory and
 * from a file; both must give the original bytes and the same header. */
static void roundtrip(size_t len, uint32_t chunk)
{
    uint8_t *plain = malloc(len ? len : 1);
    assert_non_null(plain);
    tu_fill_random(plain, len, len + 7);
    cl_seal_options o = opts_chunk(chunk);
    uint8_t *sealed = NULL;
    size_t sealed_len = 0;
    cl_err err = {0};
    assert_int_equal(cl_seal_buffer(plain, len, key_a, &o, &sealed, &sealed_len, &err), 0);

    cl_seal_header h;
    assert_int_equal(cl_seal_header_parse(sealed, sealed_len, &h, &err), 0);
    assert_int_equal(h.plaintext_len, len);
    assert_int_equal(h.sealed_len, sealed_len);
    uint32_t eff = chunk ? chunk : CL_SEAL_CHUNK_DEFAULT;
    assert_int_equal(h.chunk_size, eff);
    uint64_t chunks = len == 0 ? 1 : (len + eff - 1) / eff;
    assert_int_equal(h.chunk_count, chunks);
    assert_int_equal(sealed_len, h.header_len + len + chunks * CL_SEAL_TAG_LEN);
    assert_string_equal(h.key_id, "model-key");
    assert_string_equal(h.content_type, "application/x-onnx");
    if (len >= 32) /* the payload is not in the clear */
        assert_null(memmem(sealed, sealed_len, plain, 32));

    uint8_t *out = NULL;
    size_t out_len = 0;
    assert_int_equal(cl_seal_open_buffer(sealed, sealed_len, key_a, "model-key", &out, &out_len, NULL, &err), 0);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, plain, len);
    cl_secmem_free(out);

    char *dir = tu_tmpdir(), *in_path = tu_path(dir, "m.onnx"), *s_path = tu_path(dir, "m.sealed");
    char *o_path = tu_path(dir, "m.out");
    tu_write_file(in_path, plain, len);
    assert_int_equal(cl_seal_file(in_path, s_path, key_a, &o, &err), 0);
    assert_int_equal(cl_seal_open_file(s_path, key_a, NULL, &out, &out_len, &h, &err), 0);
    assert_int_equal(out_len, len);
    assert_memory_equal(out, plain, len);
    assert_true(cl_secmem_is_locked(out));
    cl_secmem_free(out);
    assert_int_equal(cl_seal_unseal_file(s_path, o_path, key_a, "model-key", false, NULL, NULL, &err), 0);
    size_t got_len;
    uint8_t *got = tu_read_file(o_path, &got_len);
    assert_int_equal(got_len, len);
    assert_memory_equal(got, plain, len);
    struct stat st;
    assert_int_equal(stat(o_path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(tu_count_entries(dir), 3); /* no temporary files left */
    free(got);
    tu_rmrf(dir);
    free(dir); free(in_path); free(s_path); free(o_path);
    free(sealed);
    free(plain);
}

static void test_roundtrip_sizes(void **state)
{
    (void)state;
    const size_t sizes[] = {0, 1, SMALL_CHUNK - 1, SMALL_CHUNK, SMALL_CHUNK + 1, 3 * SMALL_CHUNK, 1000};
    for (size_t i = 0; i < CL_ARRAY_LEN(sizes); i++)
        roundtrip(sizes[i], SMALL_CHUNK);
    /* the same boundaries with the default chunk size */
    const size_t big[] = {0, 1, CL_SEAL_CHUNK_DEFAULT - 1, CL_SEAL_CHUNK_DEFAULT, CL_SEAL_CHUNK_DEFAULT + 1};
    for (size_t i = 0; i < CL_ARRAY_LEN(big); i++)
        roundtrip(big[i], 0);
}

static void test_roundtrip_large(void **state)
{
    (void)state;
    roundtrip((size_t)(9u << 20) + 12345, 0); /* ~9 MiB, 37 chunks, partial last chunk */
}

static void seal_small(size_t len, uint8_t **sealed, size_t *sealed_len, uint8_t **plain)
{
    *plain = malloc(len);
    tu_fill_random(*plain, len, 99);
    cl_seal_options o = opts_chunk(SMALL_CHUNK);
    cl_err err = {0};
    assert_int_equal(cl_seal_buffer(*plain, len, key_a, &o, sealed, sealed_len, &err), 0);
}

static cl_status open_status(const uint8_t *buf, size_t len, const uint8_t *key, const char *kid, cl_err *err)
{
    uint8_t *out = (uint8_t *)1;
    size_t out_len = 1;
    cl_err_clear(err);
    int rc = cl_seal_open_buffer(buf, len, key, kid, &out, &out_len, NULL, err);
    if (rc == 0) {
        cl_secmem_free(out);
        return CL_OK;
    }
    assert_null(out); /* nothing comes out of a failed open */
    assert_int_equal(out_len, 0);
    assert_true(err->msg[0] != '\0');
    return err->code;
}

static void test_tamper_every_byte(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(200, &sealed, &len, &plain); /* 4 chunks of 64, last one 8 bytes */
    cl_err err;
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_OK);
    for (size_t pos = 0; pos < len; pos++) {
        for (int bit = 0; bit < 8; bit += 7) { /* lowest and highest bit of every byte */
            sealed[pos] ^= (uint8_t)(1u << bit);
            cl_status s = open_status(sealed, len, key_a, NULL, &err);
            if (s == CL_OK)
                fail_msg("flipping bit %d of byte %zu went undetected", bit, pos);
            sealed[pos] ^= (uint8_t)(1u << bit);
        }
    }
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_OK);
    free(sealed);
    free(plain);
}

static void test_tamper_regions_have_their_own_errors(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(200, &sealed, &len, &plain);
    cl_seal_header h;
    cl_err err;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), 0);

    sealed[0] ^= 1; /* magic */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_FORMAT);
    assert_non_null(strstr(err.msg, "not a cloister sealed file"));
    sealed[0] ^= 1;

    sealed[9] = 2; /* version 2 */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_VERSION);
    assert_non_null(strstr(err.msg, "version 2"));
    sealed[9] = 1;

    sealed[60] ^= 0x10; /* key check value */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_KEY);
    sealed[60] ^= 0x10;

    sealed[20] ^= 0x01; /* plaintext length field, covered by the header MAC */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    assert_non_null(strstr(err.msg, "header"));
    sealed[20] ^= 0x01;

    sealed[h.header_len - 1] ^= 0x80; /* the MAC itself */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    sealed[h.header_len - 1] ^= 0x80;

    sealed[h.header_len + 64 + 16 + 5] ^= 0x04; /* second chunk's ciphertext */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    assert_non_null(strstr(err.msg, "chunk 2 of 4"));
    sealed[h.header_len + 64 + 16 + 5] ^= 0x04;

    sealed[len - 1] ^= 0x01; /* final tag */
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    assert_non_null(strstr(err.msg, "chunk 4 of 4"));
    sealed[len - 1] ^= 0x01;
    free(sealed);
    free(plain);
}

static void test_wrong_key_and_key_id(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(100, &sealed, &len, &plain);
    cl_err err;
    assert_int_equal(open_status(sealed, len, key_b, NULL, &err), CL_E_KEY);
    assert_non_null(strstr(err.msg, "wrong key"));
    assert_int_equal(open_status(sealed, len, key_a, "other-key", &err), CL_E_KEY_ID);
    assert_non_null(strstr(err.msg, "model-key"));
    assert_int_equal(open_status(sealed, len, key_a, "model-key", &err), CL_OK);
    free(sealed);
    free(plain);
}

static void test_truncation_and_extension(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(200, &sealed, &len, &plain);
    cl_seal_header h;
    cl_err err;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), 0);
    /* every possible truncation point fails, and with the right status */
    for (size_t cut = 0; cut < len; cut++) {
        cl_status s = open_status(sealed, cut, key_a, NULL, &err);
        assert_int_equal(s, cut == 0 ? CL_E_FORMAT : CL_E_TRUNCATED);
    }
    /* a whole final chunk dropped */
    assert_int_equal(open_status(sealed, len - (8 + CL_SEAL_TAG_LEN), key_a, NULL, &err), CL_E_TRUNCATED);
    /* extension by one byte and by a copied chunk */
    uint8_t *ext = malloc(len + 80);
    memcpy(ext, sealed, len);
    ext[len] = 0;
    assert_int_equal(open_status(ext, len + 1, key_a, NULL, &err), CL_E_TRAILING);
    assert_non_null(strstr(err.msg, "extended"));
    memcpy(ext + len, sealed + h.header_len, 80);
    assert_int_equal(open_status(ext, len + 80, key_a, NULL, &err), CL_E_TRAILING);
    free(ext);
    free(sealed);
    free(plain);
}

static void test_reordered_and_spliced_chunks(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(256, &sealed, &len, &plain); /* exactly 4 full chunks */
    cl_seal_header h;
    cl_err err;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), 0);
    size_t rec = SMALL_CHUNK + CL_SEAL_TAG_LEN;
    uint8_t tmp[SMALL_CHUNK + CL_SEAL_TAG_LEN];
    uint8_t *c1 = sealed + h.header_len + rec, *c2 = c1 + rec;
    memcpy(tmp, c1, rec);
    memcpy(c1, c2, rec);
    memcpy(c2, tmp, rec);
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    assert_non_null(strstr(err.msg, "reordered"));
    memcpy(c2, c1, rec);
    memcpy(c1, tmp, rec);
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_OK);

    /* the last full chunk is the final one: moving a non-final chunk to the end is caught */
    uint8_t *last = sealed + h.header_len + 3 * rec;
    memcpy(tmp, last, rec);
    memcpy(last, sealed + h.header_len + 2 * rec, rec);
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    memcpy(last, tmp, rec);

    /* a chunk from another file sealed under the same key and key id does not fit */
    uint8_t *other, *other_plain;
    size_t other_len;
    seal_small(256, &other, &other_len, &other_plain);
    memcpy(sealed + h.header_len, other + h.header_len, rec);
    assert_int_equal(open_status(sealed, len, key_a, NULL, &err), CL_E_AUTH);
    assert_non_null(strstr(err.msg, "chunk 1 of 4"));
    free(other);
    free(other_plain);
    free(sealed);
    free(plain);
}

static void test_file_errors_leave_nothing_behind(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    char *in = tu_path(dir, "in.bin"), *s = tu_path(dir, "in.sealed"), *o = tu_path(dir, "out.bin");
    uint8_t data[5000];
    tu_fill_random(data, sizeof data, 5);
    tu_write_file(in, data, sizeof data);
    cl_seal_options opts = opts_chunk(1024);
    cl_err err = {0};
    assert_int_equal(cl_seal_file(in, s, key_a, &opts, &err), 0);

    /* refuses to overwrite without the flag */
    assert_int_equal(cl_seal_file(in, s, key_a, &opts, &err), -1);
    assert_int_equal(err.code, CL_E_EXISTS);

    /* corrupt the last chunk: unseal must fail and leave no output (nor temp file) */
    size_t n;
    uint8_t *buf = tu_read_file(s, &n);
    buf[n - 3] ^= 0x20;
    tu_write_file(s, buf, n);
    assert_int_equal(cl_seal_unseal_file(s, o, key_a, NULL, false, NULL, NULL, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_false(tu_file_exists(o));
    assert_int_equal(tu_count_entries(dir), 2);
    uint8_t *plain = NULL;
    size_t plain_len = 0;
    assert_int_equal(cl_seal_open_file(s, key_a, NULL, &plain, &plain_len, NULL, &err), -1);
    assert_null(plain);

    /* a truncated file is rejected before any chunk is decrypted */
    tu_write_file(s, buf, n - 100);
    assert_int_equal(cl_seal_header_read_file(s, &(cl_seal_header){0}, &err), -1);
    assert_int_equal(err.code, CL_E_TRUNCATED);
    assert_int_equal(cl_seal_open_file(s, key_a, NULL, &plain, &plain_len, NULL, &err), -1);
    assert_int_equal(err.code, CL_E_TRUNCATED);

    /* unreadable input */
    assert_int_equal(cl_seal_open_file("/nonexistent/x.sealed", key_a, NULL, &plain, &plain_len, NULL, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    assert_int_equal(cl_seal_file(dir, o, key_a, &opts, &err), -1); /* a directory */
    assert_false(tu_file_exists(o));
    free(buf);
    tu_rmrf(dir);
    free(dir); free(in); free(s); free(o);
}

static void test_absurd_header_is_refused_before_allocating(void **state)
{
    (void)state;
    uint8_t *sealed, *plain;
    size_t len;
    seal_small(10, &sealed, &len, &plain);
    cl_seal_header h;
    cl_err err;
    /* plaintext length of 2^62: structurally rejected */
    memset(sealed + 16, 0, 8);
    sealed[16] = 0x40;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    /* 1 TiB: structurally fine, but the file is far too small, so nothing is allocated */
    memset(sealed + 16, 0, 8);
    sealed[19] = 0x01;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), 0);
    assert_int_not_equal(open_status(sealed, len, key_a, NULL, &err), CL_OK);
    /* chunk size out of range */
    sealed[12] = 0x7f;
    assert_int_equal(cl_seal_header_parse(sealed, len, &h, &err), -1);
    assert_int_equal(err.code, CL_E_FORMAT);
    free(sealed);
    free(plain);
}

static void test_keys(void **state)
{
    (void)state;
    uint8_t k[CL_SEAL_KEY_LEN], k2[CL_SEAL_KEY_LEN];
    cl_err err = {0};
    assert_int_equal(cl_seal_key_generate(k, &err), 0);
    assert_int_equal(cl_seal_key_generate(k2, &err), 0);
    assert_memory_not_equal(k, k2, sizeof k);

    char hex[2 * CL_SEAL_KEY_LEN + 2];
    cl_hex_encode(k, sizeof k, hex);
    strcat(hex, "\n");
    assert_int_equal(cl_seal_key_parse((uint8_t *)hex, strlen(hex), k2, &err), 0);
    assert_memory_equal(k, k2, sizeof k);
    assert_int_equal(cl_seal_key_parse(k, sizeof k, k2, &err), 0);
    assert_memory_equal(k, k2, sizeof k);
    assert_int_equal(cl_seal_key_parse(k, 16, k2, &err), -1); /* an AES-128 key */
    assert_int_equal(err.code, CL_E_FORMAT);
    hex[5] = 'g';
    assert_int_equal(cl_seal_key_parse((uint8_t *)hex, strlen(hex), k2, &err), -1);

    char *dir = tu_tmpdir(), *p = tu_path(dir, "k");
    assert_int_equal(cl_seal_key_save(p, k, &err), 0);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);
    assert_int_equal(st.st_size, CL_SEAL_KEY_LEN);
    assert_int_equal(cl_seal_key_save(p, k2, &err), -1); /* never overwritten */
    assert_int_equal(err.code, CL_E_EXISTS);
    assert_int_equal(cl_seal_key_load(p, k2, &err), 0);
    assert_memory_equal(k, k2, sizeof k);
    tu_rmrf(dir);
    free(dir);
    free(p);

    assert_true(cl_seal_key_id_valid("resnet50/v1:prod-2.a_b"));
    /* one alphabet with the key server's secret names: what `secret put` refuses, seal refuses */
    const char *ids[] = {"a+b@c", "resnet50/v1@prod", "x+y", "resnet50", "a/b:c.d_e-f"};
    for (size_t i = 0; i < sizeof ids / sizeof ids[0]; i++)
        assert_int_equal(cl_seal_key_id_valid(ids[i]), cl_policy_secret_name_valid(ids[i]));
    char id129[130];
    memset(id129, 'k', 129);
    id129[129] = 0;
    assert_false(cl_seal_key_id_valid(id129)); /* the format allows 255; a secret name 128 */
    id129[128] = 0;
    assert_true(cl_seal_key_id_valid(id129));
    assert_false(cl_seal_key_id_valid(""));
    assert_false(cl_seal_key_id_valid("has space"));
    assert_false(cl_seal_key_id_valid("quote\""));
    char long_id[300];
    memset(long_id, 'a', sizeof long_id - 1);
    long_id[299] = 0;
    assert_false(cl_seal_key_id_valid(long_id));
    cl_seal_options o = {.key_id = "bad id"};
    uint8_t *out;
    size_t out_len;
    assert_int_equal(cl_seal_buffer(k, 1, k, &o, &out, &out_len, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
}

static void test_same_input_seals_differently(void **state)
{
    (void)state;
    uint8_t data[100] = {0}, *a, *b;
    size_t alen, blen;
    cl_seal_options o = opts_chunk(SMALL_CHUNK);
    cl_err err;
    assert_int_equal(cl_seal_buffer(data, sizeof data, key_a, &o, &a, &alen, &err), 0);
    assert_int_equal(cl_seal_buffer(data, sizeof data, key_a, &o, &b, &blen, &err), 0);
    assert_int_equal(alen, blen);
    assert_memory_not_equal(a, b, alen); /* fresh file nonce, fresh file key */
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip_sizes),
        cmocka_unit_test(test_roundtrip_large),
        cmocka_unit_test(test_tamper_every_byte),
        cmocka_unit_test(test_tamper_regions_have_their_own_errors),
        cmocka_unit_test(test_wrong_key_and_key_id),
        cmocka_unit_test(test_truncation_and_extension),
        cmocka_unit_test(test_reordered_and_spliced_chunks),
        cmocka_unit_test(test_file_errors_leave_nothing_behind),
        cmocka_unit_test(test_absurd_header_is_refused_before_allocating),
        cmocka_unit_test(test_keys),
        cmocka_unit_test(test_same_input_seals_differently),
    };
    return cmocka_run_group_tests_name("seal", tests, setup, NULL);
}
