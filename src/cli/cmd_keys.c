/* cmd_keys.c — `cloister keygen`: creates a model key file. */
#include <stdio.h>

#include "cli.h"
#include "cloister/seal.h"

int cl_cmd_keygen(int argc, char **argv)
{
    const char *out = NULL;
    bool hex = false;
    const cl_opt opts[] = {
        {"out", CL_ARG_STRING, &out, "FILE", "where to write the key (mode 0600; never overwritten)", true},
        {"hex", CL_ARG_FLAG, &hex, NULL, "write 64 hex digits instead of 32 raw bytes", false},
    };
    const cl_cmd_usage usage = {"cloister keygen --out FILE [--hex]",
                                "Creates a new random 256-bit key for sealing models (a wrap key)."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;

    cl_err err = {0};
    uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, &err);
    if (!key || cl_seal_key_generate(key, &err) != 0) {
        cl_secmem_free(key);
        return cl_cli_fail("keygen", &err);
    }
    if (hex) {
        char text[2 * CL_SEAL_KEY_LEN + 2];
        cl_hex_encode(key, CL_SEAL_KEY_LEN, text);
        text[2 * CL_SEAL_KEY_LEN] = '\n';
        rc = cl_file_write_atomic(out, text, sizeof text - 1, 0600, false, &err);
        cl_memzero(text, sizeof text);
    } else {
        rc = cl_seal_key_save(out, key, &err);
    }
    cl_secmem_free(key);
    if (rc != 0)
        return cl_cli_fail("keygen", &err);
    fprintf(stderr, "cloister keygen: wrote a new 256-bit key to %s (mode 0600)\n", out);
    return CL_EXIT_OK;
}
