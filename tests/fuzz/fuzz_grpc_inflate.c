/* fuzz_grpc_inflate.c — fuzz target for gRPC request decompression (src/serve/compress.c): the first
 * byte picks the algorithm (deflate or gzip) and the limit (64 bytes to 64 KiB); the rest is the
 * compressed message. Whatever the input, the answer is a status with a message, an accepted message
 * never exceeds the limit, and a refusal for size is RESOURCE_EXHAUSTED. The input is also compressed
 * and inflated back, which must give it back exactly. The same bytes framed as a gRPC message go
 * through cl_serve_grpc_unframe_enc, as grpc.c calls it. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "serve/serve_int.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    cl_serve_compression alg = data[0] & 1 ? CL_SERVE_COMPRESS_GZIP : CL_SERVE_COMPRESS_DEFLATE;
    size_t max = (size_t)64 << ((data[0] >> 1) % 11); /* 64 B .. 64 KiB */
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    cl_serve_status st = {0};
    uint8_t *out = NULL;
    size_t out_len = 0;
    cl_serve_code code = cl_serve_inflate(alg, in, len, max, &out, &out_len, &st);
    if (code == CL_SC_OK) {
        if (out_len > max || (out_len && !out))
            abort();
        free(out);
    } else if (!st.msg[0] || out || (code != CL_SC_INTERNAL && code != CL_SC_RESOURCE_EXHAUSTED)) {
        abort();
    }
    /* round trip: what we compress, we inflate back exactly */
    uint8_t *z = NULL, *back = NULL;
    size_t zlen = 0, blen = 0;
    if (cl_serve_compress(alg, in, len, &z, &zlen) != 0)
        abort();
    if (cl_serve_inflate(alg, z, zlen, len ? len : 1, &back, &blen, &st) != CL_SC_OK || blen != len ||
        (len && memcmp(back, in, len) != 0))
        abort();
    free(back);
    free(z);
    /* framed, as grpc.c sees a request body */
    uint8_t *framed = malloc(len + 5);
    if (!framed)
        return 0;
    framed[0] = 1;
    framed[1] = (uint8_t)(len >> 24), framed[2] = (uint8_t)(len >> 16), framed[3] = (uint8_t)(len >> 8);
    framed[4] = (uint8_t)len;
    memcpy(framed + 5, in, len);
    uint8_t *owned = NULL;
    const uint8_t *msg = NULL;
    size_t msg_len = 0;
    memset(&st, 0, sizeof st);
    code = cl_serve_grpc_unframe_enc(framed, len + 5, max, (int)alg, cl_serve_compression_name(alg), &owned, &msg,
                                     &msg_len, &st);
    if (code == CL_SC_OK) {
        if (!owned || msg != owned || msg_len > max)
            abort();
    } else if (!st.msg[0] || owned) {
        abort();
    }
    free(owned);
    free(framed);
    return 0;
}
