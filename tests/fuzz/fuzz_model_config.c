/* fuzz_model_config.c — fuzz target for the --model_config_file parser (ModelServerConfig text format
 * with version policies and labels): any input is parsed or refused with a message, and a parsed
 * config respects the documented bounds. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/repo.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_repo_model_config *m = NULL;
    size_t n = 0;
    cl_err err = {0};
    if (cl_repo_config_parse((const char *)data, size, &m, &n, &err) != 0) {
        if (!err.msg[0] || m || n)
            abort();
        return 0;
    }
    if (n == 0 || n > CL_REPO_CONFIG_MAX_MODELS)
        abort();
    for (size_t i = 0; i < n; i++) {
        if (!m[i].name || !m[i].base_path || m[i].n_versions > 64 || m[i].n_labels > 64 || m[i].num_versions > 64)
            abort();
        if (m[i].policy == CL_REPO_POLICY_SPECIFIC && m[i].n_versions == 0)
            abort();
        for (size_t k = 0; k < m[i].n_versions; k++)
            if (m[i].versions[k] <= 0)
                abort();
        for (size_t k = 0; k < m[i].n_labels; k++)
            if (!cl_repo_label_valid(m[i].labels[k].label) || m[i].labels[k].version <= 0)
                abort();
    }
    cl_repo_config_free(m, n);
    return 0;
}
