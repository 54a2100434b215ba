/* dcap_opts.c — the DCAP collateral options every command that verifies real SGX/TDX evidence takes
 * (`keyserver serve`, `attest verify`, `predict`/`bench --attest`): one table, one meaning. Parsing
 * and wiring only; the collateral source is in the attest module (cloister/dcap.h). */
#include <string.h>

#include "cli.h"

size_t cl_cli_dcap_opts(cl_cli_dcap_args *a, cl_opt *o)
{
    const cl_opt t[CL_CLI_DCAP_OPTS] = {
        {"dcap-root-ca", CL_ARG_STRING, &a->root, "FILE", "the Intel SGX Root CA (DER or PEM) every DCAP chain must "
                                                          "end at", false},
        {"dcap-collateral", CL_ARG_LIST, &a->files, "FILE", "DCAP collateral JSON for one platform (any number; "
                                                            "docs/attest.md)", false},
        {"pccs-url", CL_ARG_STRING, &a->pccs_url, "URL", "fetch DCAP collateral from this PCCS or Intel PCS "
                                                         "(https://HOST[:PORT])", false},
        {"pccs-api-version", CL_ARG_LONG, &a->api_version, "3|4", "PCCS/PCS API version (default 4; TDX needs 4)",
         false, 3, 4},
        {"pccs-ca", CL_ARG_STRING, &a->pccs_ca, "FILE", "CA of the PCCS's TLS certificate (default: the system's)",
         false},
        {"pccs-timeout-ms", CL_ARG_LONG, &a->timeout_ms, "MS", "bound on one collateral fetch, all requests "
                                                               "(default 5000)", false, 100, 120000},
        {"collateral-cache", CL_ARG_STRING, &a->cache, "DIR", "keep fetched collateral here (verified again on every "
                                                              "use)", false},
        {"collateral-max-age", CL_ARG_LONG, &a->max_age, "SECONDS", "refuse collateral issued longer ago than this "
                                                                    "(default: only after its nextUpdate)", false, 1,
         10L * 365 * 86400},
        {"collateral-refresh", CL_ARG_LONG, &a->refresh, "SECONDS", "fetch anew this long before nextUpdate "
                                                                    "(default 86400)", false, 1, 365L * 86400},
    };
    memcpy(o, t, sizeof t);
    return CL_CLI_DCAP_OPTS;
}

bool cl_cli_dcap_given(const cl_cli_dcap_args *a)
{
    return a->root || a->files.count || a->pccs_url || a->api_version || a->pccs_ca || a->timeout_ms || a->cache ||
           a->max_age || a->refresh;
}

const cl_dcap_config *cl_cli_dcap_config(cl_cli_dcap_args *a, int64_t now_unix)
{
    if (!cl_cli_dcap_given(a))
        return NULL;
    a->cfg = (cl_dcap_config){.root_ca_file = a->root, .collateral_files = a->files.items,
                              .collateral_count = a->files.count, .pccs_url = a->pccs_url,
                              .pccs_api_version = (int)a->api_version, .pccs_ca_file = a->pccs_ca,
                              .pccs_timeout_ms = (int)a->timeout_ms, .cache_dir = a->cache, .max_age_s = a->max_age,
                              .refresh_s = a->refresh, .now_unix = now_unix};
    return &a->cfg;
}

void cl_cli_dcap_free(cl_cli_dcap_args *a) { cl_strlist_free(&a->files); }
