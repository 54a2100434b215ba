/* fuzz_ks_response.c — fuzz target for what the provisioning client reads from a key server after its
 * native request (ks_read_native_response): the response head ("CLKS1\0", status, count or denial
 * reason code) and the secrets that follow. The first input byte picks how many names were asked
 * (1-4, from a fixed list); the parser must never read past the input, and its result must agree with
 * its return value: every secret granted (0), some denied (1, CL_E_DENIED), or an error with a message
 * (-1; CL_E_DENIED with a "reason:" for a denial frame). */
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
    static const char *const names[] = {"model-key", "tls-key", "a", "x/y:z"};
    static bool init;
    if (!init) {
        cl_secmem_set_require_lock(false);
        cl_log_set_level(CL_LOG_OFF);
        init = true;
    }
    if (size < 1 + KS_RESPONSE_HEAD)
        return 0;
    size_t n_names = 1 + data[0] % 4;
    const uint8_t *head = data + 1;
    input in = {data + 1 + KS_RESPONSE_HEAD, size - 1 - KS_RESPONSE_HEAD};
    cl_provision_result res = {0};
    cl_err err = {0};
    int rc = ks_read_native_response(head, rd, &in, "fuzz", names, n_names, &res, &err);
    if (rc == 0 || rc == 1) {
        if (res.count != n_names)
            abort();
        size_t denied = 0;
        for (size_t i = 0; i < res.count; i++) {
            const cl_secret *s = &res.secrets[i];
            if (strcmp(s->name, names[i]) != 0)
                abort();
            if (s->granted && (!s->value || s->len > CL_KS_SECRET_MAX || cl_secmem_size(s->value) < s->len))
                abort();
            if (!s->granted && (s->value || s->len))
                abort();
            denied += !s->granted;
        }
        if ((rc == 0) != (denied == 0) || (rc == 1 && err.code != CL_E_DENIED))
            abort();
    } else if (rc == -1) {
        if (!err.msg[0] || !memchr(err.msg, 0, sizeof err.msg))
            abort();
        bool denial = memcmp(head, CL_KS_MAGIC, 6) == 0 && head[6] == CL_KS_STATUS_DENIED;
        if (denial && (err.code != CL_E_DENIED || !strstr(err.msg, "(reason: ")))
            abort();
    } else {
        abort();
    }
    cl_provision_result_free(&res);
    return 0;
}
