/* encoding.c — hex encoding and decoding (constant pattern of work per byte; used for keys), strict
 * base64 decoding (image bytes in TF Serving's REST {"b64": ...} values) and UTF-8 sequence checks
 * (log lines and metric labels made from what a peer sent), and CRC-32C (TFRecord warm-up files,
 * TensorBundle tables). */
#include <pthread.h>

#include "cloister/common.h"

void cl_hex_encode(const uint8_t *in, size_t len, char *out)
{
    static const char digits[] = "0123456789abcdef";
    for (size_t i = 0; i < len; i++) {
        out[2 * i] = digits[in[i] >> 4];
        out[2 * i + 1] = digits[in[i] & 15];
    }
    out[2 * len] = '\0';
}

static int nibble(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

int cl_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_len)
{
    if (in_len != 2 * out_len)
        return -1;
    int bad = 0;
    for (size_t i = 0; i < out_len; i++) {
        int hi = nibble(in[2 * i]), lo = nibble(in[2 * i + 1]);
        bad |= (hi < 0) | (lo < 0);
        out[i] = (uint8_t)((hi & 15) << 4 | (lo & 15));
    }
    return bad ? -1 : 0;
}

static int b64_value(unsigned char c)
{
    if (c >= 'A' && c <= 'Z')
        return c - 'A';
    if (c >= 'a' && c <= 'z')
        return c - 'a' + 26;
    if (c >= '0' && c <= '9')
        return c - '0' + 52;
    if (c == '+')
        return 62;
    if (c == '/')
        return 63;
    return -1;
}

size_t cl_b64_decoded_max(size_t in_len) { return in_len / 4 * 3 + (in_len % 4 ? 2 : 0); }

int cl_b64_decode(const char *in, size_t in_len, uint8_t *out, size_t *out_len, cl_err *err)
{
    size_t n = in_len;
    /* '=' only as the last one or two characters of a 4-character group */
    size_t pad = 0;
    while (pad < 2 && n > 0 && in[n - 1] == '=') {
        n--;
        pad++;
    }
    if (pad && in_len % 4 != 0)
        return cl_err_set(err, CL_E_FORMAT, "base64: padding '=' must complete a group of 4 characters "
                          "(%zu characters given)", in_len);
    uint32_t acc = 0;
    int bits = 0;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int v = b64_value((unsigned char)in[i]);
        if (v < 0) {
            unsigned char c = (unsigned char)in[i];
            if (c == '=')
                return cl_err_set(err, CL_E_FORMAT, "base64: '=' at position %zu is inside the data", i);
            return cl_err_set(err, CL_E_FORMAT, "base64: character %s0x%02x at position %zu is not in the standard "
                              "alphabet (A-Z a-z 0-9 + /; no line breaks, not the URL-safe variant)",
                              c == '\n' || c == '\r' ? "(line break) " : c == '-' || c == '_' ? "(URL-safe) " : "", c, i);
        }
        acc = (acc << 6) | (uint32_t)v;
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out[o++] = (uint8_t)(acc >> bits);
            acc &= (1u << bits) - 1;
        }
    }
    if (n % 4 == 1)
        return cl_err_set(err, CL_E_FORMAT, "base64: %zu characters cannot encode whole bytes (truncated?)", n);
    if (acc != 0)
        return cl_err_set(err, CL_E_FORMAT, "base64: the last character has bits set beyond the data");
    *out_len = o;
    return 0;
}

size_t cl_utf8_seq_len(const unsigned char *p, size_t left)
{
    unsigned c = p[0], cp, min;
    size_t n;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf)
        n = 2, min = 0x80;
    else if ((c & 0xf0) == 0xe0)
        n = 3, min = 0x800;
    else if (c >= 0xf0 && c <= 0xf4)
        n = 4, min = 0x10000;
    else
        return 0;
    if (left < n)
        return 0;
    cp = c & (0x3fu >> (n - 1));
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    return cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff) ? 0 : n;
}

/* CRC-32C, reflected polynomial 0x82f63b78, table-driven (Debian ships no C library for it), sliced by 8
 * bytes: a SavedModel's tensor data is checked once at load, ~100 MB for ResNet-50. */
static uint32_t crc_table[8][256];
static pthread_once_t crc_once = PTHREAD_ONCE_INIT;

static void crc_init(void)
{
    for (uint32_t i = 0; i < 256; i++) {
        uint32_t c = i;
        for (int k = 0; k < 8; k++)
            c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
        crc_table[0][i] = c;
    }
    for (uint32_t i = 0; i < 256; i++)
        for (int t = 1; t < 8; t++)
            crc_table[t][i] = (crc_table[t - 1][i] >> 8) ^ crc_table[0][crc_table[t - 1][i] & 0xff];
}

uint32_t cl_crc32c(uint32_t crc, const uint8_t *p, size_t n)
{
    pthread_once(&crc_once, crc_init);
    uint32_t c = ~crc;
    while (n >= 8) { /* slicing by 8 */
        uint32_t lo = c ^ ((uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24);
        c = crc_table[7][lo & 0xff] ^ crc_table[6][(lo >> 8) & 0xff] ^ crc_table[5][(lo >> 16) & 0xff] ^
            crc_table[4][lo >> 24] ^ crc_table[3][p[4]] ^ crc_table[2][p[5]] ^ crc_table[1][p[6]] ^
            crc_table[0][p[7]];
        p += 8;
        n -= 8;
    }
    while (n--)
        c = (c >> 8) ^ crc_table[0][(c ^ *p++) & 0xff];
    return ~c;
}

uint32_t cl_crc32c_mask(uint32_t crc) { return ((crc >> 15) | (crc << 17)) + 0xa282ead8u; }

uint32_t cl_crc32c_unmask(uint32_t masked)
{
    uint32_t r = masked - 0xa282ead8u;
    return (r >> 17) | (r << 15);
}
