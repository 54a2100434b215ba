/* compress.c — gRPC message compression for the gRPC front end (grpc.c): the grpc-encoding and
 * grpc-accept-encoding header values, the compressed flag of a request message (inflated with zlib,
 * never past the request size limit: a "zip bomb" is refused with RESOURCE_EXHAUSTED once its output
 * reaches the limit, and memory never grows beyond it), and compressed responses. gRPC's "deflate" is
 * the zlib format (RFC 1950), "gzip" RFC 1952, as gRPC core writes and reads them. Thread-safe (no
 * shared state). */
#include "serve_int.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <zlib.h>

int cl_serve_compression_parse(const char *name, cl_serve_compression *out, cl_err *err)
{
    if (!name || !*name || strcasecmp(name, "identity") == 0 || strcasecmp(name, "none") == 0)
        *out = CL_SERVE_COMPRESS_NONE;
    else if (strcasecmp(name, "deflate") == 0)
        *out = CL_SERVE_COMPRESS_DEFLATE;
    else if (strcasecmp(name, "gzip") == 0)
        *out = CL_SERVE_COMPRESS_GZIP;
    else
        return cl_err_set(err, CL_E_INVALID, "unknown compression algorithm '%s' (use identity, deflate or gzip)",
                          name);
    return 0;
}

const char *cl_serve_compression_name(cl_serve_compression c)
{
    return c == CL_SERVE_COMPRESS_GZIP ? "gzip" : c == CL_SERVE_COMPRESS_DEFLATE ? "deflate" : "identity";
}

/* Whether value[0..len) (one token, surrounding blanks ignored) is name, case-insensitively. */
static bool token_is(const char *value, size_t len, const char *name)
{
    while (len && (*value == ' ' || *value == '\t'))
        value++, len--;
    while (len && (value[len - 1] == ' ' || value[len - 1] == '\t'))
        len--;
    return len == strlen(name) && strncasecmp(value, name, len) == 0;
}

int cl_serve_grpc_encoding(const char *value, size_t len, cl_serve_compression *out)
{
    static const cl_serve_compression all[] = {CL_SERVE_COMPRESS_NONE, CL_SERVE_COMPRESS_DEFLATE,
                                               CL_SERVE_COMPRESS_GZIP};
    for (size_t i = 0; i < CL_ARRAY_LEN(all); i++) {
        if (token_is(value, len, cl_serve_compression_name(all[i]))) {
            *out = all[i];
            return 0;
        }
    }
    return -1;
}

bool cl_serve_grpc_accepts(const char *value, size_t len, cl_serve_compression alg)
{
    const char *name = cl_serve_compression_name(alg);
    while (len) {
        const char *comma = memchr(value, ',', len);
        size_t n = comma ? (size_t)(comma - value) : len;
        if (token_is(value, n, name))
            return true;
        if (!comma)
            break;
        value += n + 1;
        len -= n + 1;
    }
    return false;
}

/* zlib's windowBits for a gRPC algorithm: 15 (zlib wrapper) for deflate, 15 + 16 for gzip. */
static int window_bits(cl_serve_compression alg)
{
    return alg == CL_SERVE_COMPRESS_GZIP ? 15 + 16 : 15;
}

cl_serve_code cl_serve_inflate(cl_serve_compression alg, const uint8_t *in, size_t len, size_t max, uint8_t **out,
                               size_t *out_len, cl_serve_status *st)
{
    *out = NULL;
    *out_len = 0;
    const char *name = cl_serve_compression_name(alg);
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (inflateInit2(&zs, window_bits(alg)) != Z_OK)
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory for decompressing the request");
    /* grow with what the stream really produces, never beyond max (+1 byte to tell "exactly max" from
     * "more than max") */
    size_t cap = len < max / 4 ? 4 * len : max;
    if (cap < 4096)
        cap = max < 4096 ? max : 4096;
    size_t hard = max + 1;
    if (cap > hard)
        cap = hard;
    uint8_t *buf = malloc(cap ? cap : 1);
    if (!buf) {
        inflateEnd(&zs);
        return cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory for decompressing the request");
    }
    size_t used = 0;
    size_t left_in = len;
    const uint8_t *next_in = in;
    cl_serve_code code = CL_SC_OK;
    int zr = Z_OK;
    for (;;) {
        if (used == cap) {
            if (cap >= hard) {
                code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "the %s-compressed request message "
                                       "decompresses to more than the server's limit of %zu bytes "
                                       "(--max_request_bytes)", name, max);
                break;
            }
            size_t ncap = cap > hard / 2 ? hard : 2 * cap;
            uint8_t *nb = realloc(buf, ncap);
            if (!nb) {
                code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "out of memory for decompressing the request");
                break;
            }
            buf = nb;
            cap = ncap;
        }
        /* zlib counts in uInt: feed and drain at most 1 GiB at a time */
        uInt in_chunk = left_in > (1u << 30) ? (1u << 30) : (uInt)left_in;
        uInt out_chunk = cap - used > (1u << 30) ? (1u << 30) : (uInt)(cap - used);
        zs.next_in = (Bytef *)next_in;
        zs.avail_in = in_chunk;
        zs.next_out = buf + used;
        zs.avail_out = out_chunk;
        zr = inflate(&zs, Z_NO_FLUSH);
        next_in += in_chunk - zs.avail_in;
        left_in -= in_chunk - zs.avail_in;
        used += out_chunk - zs.avail_out;
        if (zr == Z_STREAM_END)
            break;
        if (zr == Z_BUF_ERROR && zs.avail_out != 0 && left_in == 0) {
            code = cl_serve_st_set(st, CL_SC_INTERNAL, "the %s-compressed request message is truncated (the "
                                   "compressed stream ends before its end marker)", name);
            break;
        }
        if (zr != Z_OK && zr != Z_BUF_ERROR) {
            code = cl_serve_st_set(st, CL_SC_INTERNAL, "the request message is not valid %s data: %s", name,
                                   zs.msg ? zs.msg : "corrupt stream");
            break;
        }
    }
    inflateEnd(&zs);
    if (code == CL_SC_OK && used > max)
        code = cl_serve_st_set(st, CL_SC_RESOURCE_EXHAUSTED, "the %s-compressed request message decompresses to "
                               "more than the server's limit of %zu bytes (--max_request_bytes)", name, max);
    if (code == CL_SC_OK && left_in != 0)
        code = cl_serve_st_set(st, CL_SC_INTERNAL, "the %s-compressed request message has %zu bytes after the end "
                               "of its compressed stream", name, left_in);
    if (code != CL_SC_OK) {
        free(buf);
        return code;
    }
    *out = buf;
    *out_len = used;
    return CL_SC_OK;
}

int cl_serve_compress(cl_serve_compression alg, const uint8_t *in, size_t len, uint8_t **out, size_t *out_len)
{
    *out = NULL;
    *out_len = 0;
    if (alg == CL_SERVE_COMPRESS_NONE || len > (1u << 30))
        return -1;
    z_stream zs;
    memset(&zs, 0, sizeof zs);
    if (deflateInit2(&zs, Z_DEFAULT_COMPRESSION, Z_DEFLATED, window_bits(alg), 8, Z_DEFAULT_STRATEGY) != Z_OK)
        return -1;
    uLong bound = deflateBound(&zs, (uLong)len) + 32; /* + room for the gzip header and trailer */
    uint8_t *buf = malloc(bound);
    if (!buf) {
        deflateEnd(&zs);
        return -1;
    }
    zs.next_in = (Bytef *)in;
    zs.avail_in = (uInt)len;
    zs.next_out = buf;
    zs.avail_out = (uInt)bound;
    int zr = deflate(&zs, Z_FINISH);
    size_t n = bound - zs.avail_out;
    deflateEnd(&zs);
    if (zr != Z_STREAM_END) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = n;
    return 0;
}

cl_serve_code cl_serve_grpc_unframe_enc(const uint8_t *buf, size_t len, size_t max_msg, int encoding,
                                        const char *encoding_name, uint8_t **owned, const uint8_t **msg,
                                        size_t *msg_len, cl_serve_status *st)
{
    *owned = NULL;
    bool compressed;
    const uint8_t *data;
    size_t n;
    cl_serve_code code = cl_serve_grpc_frame(buf, len, max_msg, &compressed, &data, &n, st);
    if (code != CL_SC_OK)
        return code;
    if (!compressed) {
        *msg = data;
        *msg_len = n;
        return CL_SC_OK;
    }
    /* compressed: the message inflated within max_msg */
    if (encoding < 0)
        return cl_serve_st_set(st, CL_SC_UNIMPLEMENTED, "the message is compressed with '%s', which this server "
                               "does not support (grpc-accept-encoding: identity,deflate,gzip)",
                               encoding_name && *encoding_name ? encoding_name : "?");
    if (encoding == CL_SERVE_COMPRESS_NONE)
        return cl_serve_st_set(st, CL_SC_INTERNAL, "the message is flagged compressed but the call's grpc-encoding "
                               "is identity (or absent)");
    uint8_t *out;
    size_t out_len;
    code = cl_serve_inflate((cl_serve_compression)encoding, data, n, max_msg, &out, &out_len, st);
    if (code != CL_SC_OK)
        return code;
    *owned = out;
    *msg = out;
    *msg_len = out_len;
    return CL_SC_OK;
}
