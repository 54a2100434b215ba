/* fuzz_ks_request.c — fuzz target for the key server's native request parser (what an attested but
 * untrusted client sends after "CLKS1\0"): arbitrary bytes are either refused with a reason, or give
 * 1..64 names that are each a valid secret name; the parser never reads past the input. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "keyserver/ks_internal.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct input {
    const uint8_t *p;
    size_t left;
} input;

static int rd(void *ctx, void *buf, size_t n)
{
    input *in = ctx;
    if (n > in->left)
        return -1;
    memcpy(buf, in->p, n);
    in->p += n;
    in->left -= n;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static char names[CL_KS_MAX_NAMES][CL_POLICY_MAX_SECRET_NAME + 1];
    char detail[KS_DETAIL_MAX];
    input in = {data, size};
    size_t count, parsed;
    int rc = ks_parse_native_request(rd, &in, names, &count, &parsed, detail);
    if (rc == 0) {
        if (count == 0 || count > CL_KS_MAX_NAMES || parsed != count)
            abort();
        for (size_t i = 0; i < count; i++)
            if (!cl_policy_secret_name_valid(names[i]))
                abort();
    } else {
        if (parsed > CL_KS_MAX_NAMES || !memchr(detail, 0, sizeof detail) || !detail[0])
            abort();
        for (size_t i = 0; i < parsed; i++)
            if (!cl_policy_secret_name_valid(names[i]))
                abort();
    }
    return 0;
}
