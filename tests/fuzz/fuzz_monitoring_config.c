/* fuzz_monitoring_config.c — fuzz target for the TF Serving MonitoringConfig text-format parser
 * (--monitoring_config_file, moncfg.c): any input is parsed or refused with a message; a parsed
 * config serves no endpoint or one at an absolute path of printable characters, at most
 * CL_SERVE_METRICS_PATH_MAX long and not under /v1/. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/serve.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_serve_monitoring m = {.off = false, .path = "unchanged"};
    cl_err err = {0};
    if (cl_serve_monitoring_parse((const char *)data, size, &m, &err) == 0) {
        const char *p = cl_serve_monitoring_path(&m);
        if (!p)
            return 0;
        size_t n = strnlen(p, CL_SERVE_METRICS_PATH_MAX + 1);
        if (n == 0 || n > CL_SERVE_METRICS_PATH_MAX || p[0] != '/' || strncmp(p, "/v1/", 4) == 0 ||
            strcmp(p, "/v1") == 0)
            abort();
        for (size_t i = 0; i < n; i++)
            if (p[i] <= ' ' || p[i] > '~' || strchr("?#%\\\"", p[i]))
                abort();
    } else if (!err.msg[0] || strcmp(m.path, "unchanged") != 0 || m.off) {
        abort(); /* a refusal leaves *out alone */
    }
    return 0;
}
