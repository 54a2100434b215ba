/* fuzz_ssl_config.c — fuzz target for the TF Serving SSLConfig text-format parser (--ssl_config_file):
 * any input is parsed or refused with a message, and a parsed config always has NUL-terminated
 * key and certificate strings. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static int init;
    if (!init) {
        cl_secmem_set_require_lock(false);
        cl_log_set_level(CL_LOG_ERROR);
        init = 1;
    }
    cl_serve_ssl_config c;
    cl_err err = {0};
    if (cl_serve_ssl_config_parse((const char *)data, size, &c, &err) == 0) {
        if (!c.server_key || !c.server_cert || strlen(c.server_key) > size || strlen(c.server_cert) > size)
            abort();
        if (c.client_verify && !c.custom_ca)
            abort();
        cl_serve_ssl_config_clear(&c);
    } else if (!err.msg[0] || c.server_key || c.server_cert) {
        abort();
    }
    return 0;
}
