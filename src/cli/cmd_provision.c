/* cmd_provision.c — `cloister provision`: obtains secrets from a key server with RA-TLS, exactly as
 * the model server does at start-up, and writes them to files (mode 0600) for scripts and tests.
 * SIGTERM/SIGINT raise a stop token that ends the key server wait at once (connect, TLS I/O, backoff);
 * a signal before the secrets are written means none is written (the temporary files go). */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/keyserver.h"

static cl_stop *g_stop;
static volatile sig_atomic_t g_signal;

static void on_stop_signal(int sig)
{
    if (!g_signal)
        g_signal = sig;
    cl_stop_raise(g_stop);
}

/* on: the handler above; off: the default action again */
static int handle_stop_signals(bool on, cl_err *err)
{
    struct sigaction sa = {0};
    sa.sa_handler = on ? on_stop_signal : SIG_DFL;
    sa.sa_flags = SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (sigaction(SIGTERM, &sa, NULL) != 0 || sigaction(SIGINT, &sa, NULL) != 0)
        return cl_err_errno(err, CL_E_INTERNAL, errno, "cannot install the SIGTERM/SIGINT handlers");
    return 0;
}

/* Where a secret goes: --out, or DIR/NAME with '/' as '_' (name NULL: the secret_prov secret). */
static void output_path(const char *out, const char *out_dir, const char *name, char *path, size_t size)
{
    if (out) {
        snprintf(path, size, "%s", out);
        return;
    }
    char safe[CL_POLICY_MAX_SECRET_NAME + 1];
    snprintf(safe, sizeof safe, "%s", name ? name : "secret_prov");
    for (char *p = safe; *p; p++)
        if (*p == '/')
            *p = '_';
    snprintf(path, size, "%s/%s", out_dir, safe);
}

int cl_cmd_provision(int argc, char **argv)
{
    cl_strlist servers = {0}, names = {0};
    const char *ca = NULL, *evidence = "sim", *root = NULL, *sim_key = getenv("CLOISTER_SIM_QE_KEY"), *out = NULL,
               *out_dir = NULL, *server_name = NULL;
    long attempts = 5, backoff = 200, timeout = 10000, prod = 0, svn = 0;
    bool debug = false, secret_prov = false, force = false;
    cl_cli_sim_tdx tdx = {0};
    cl_opt opts[17 + CL_CLI_SIM_TDX_OPTS] = {
        {"keyserver", CL_ARG_LIST, &servers, "HOST:PORT", "key server (repeat for fail-over, tried in order)", true},
        {"ca", CL_ARG_STRING, &ca, "CA.pem", "CA that issued the key server's certificate", true},
        {"server-name", CL_ARG_STRING, &server_name, "NAME", "name to check in its certificate (default HOST)", false},
        {"evidence", CL_ARG_STRING, &evidence, "sim|gramine|tsm", "evidence provider (default sim)", false},
        {"attest-root", CL_ARG_STRING, &root, "DIR", "gramine/tsm: where the attestation files are", false},
        {"sim-key", CL_ARG_STRING, &sim_key, "FILE", "sim: simulated quoting key (or $CLOISTER_SIM_QE_KEY)", false},
        {"sim-isv-prod-id", CL_ARG_LONG, &prod, "N", "sim: ISV_PROD_ID to present", false, 0, 65535},
        {"sim-isv-svn", CL_ARG_LONG, &svn, "N", "sim: ISV_SVN to present", false, 0, 65535},
        {"sim-debug", CL_ARG_FLAG, &debug, NULL, "sim: present a debug enclave", false},
        {"secret", CL_ARG_LIST, &names, "NAME", "secret to fetch", false},
        {"secret-prov", CL_ARG_FLAG, &secret_prov, NULL, "use Gramine's secret_prov v1 protocol (one unnamed secret)",
         false},
        {"out", CL_ARG_STRING, &out, "FILE", "write the (single) secret here, mode 0600", false},
        {"out-dir", CL_ARG_STRING, &out_dir, "DIR", "write each secret to DIR/NAME ('/' becomes '_')", false},
        {"force", CL_ARG_FLAG, &force, NULL, "overwrite existing output files", false},
        {"attempts", CL_ARG_LONG, &attempts, "N", "rounds over the key servers while they cannot be reached "
                                                  "(default 5: with the default backoff at most 3 s of delays in "
                                                  "all, plus up to --timeout-ms per connection attempt); a name "
                                                  "that does not resolve is not retried, a resolver that does not "
                                                  "answer for 30 s at most", false, 1, 1000},
        {"backoff-ms", CL_ARG_LONG, &backoff, "MS", "first delay between rounds (default 200), doubling each round "
                                                    "up to 5 s (or MS if larger), each delay shortened at random "
                                                    "by up to half", false, 1, 60000},
        {"timeout-ms", CL_ARG_LONG, &timeout, "MS", "connect and I/O timeout (default 10000)", false, 100, 600000},
    };
    const cl_cmd_usage usage = {
        "cloister provision --keyserver HOST:PORT --ca CA.pem [--evidence sim] --secret NAME --out FILE",
        "Creates a fresh RA-TLS identity (key + certificate carrying evidence bound to it), connects to the key\n"
        "server(s) with retries and backoff, and writes the granted secrets. Exit 1 if anything is denied.\n"
        "SIGTERM/SIGINT end the wait for the key server at once: exit 1, and no secret is written."};
    size_t nopts = 17 + cl_cli_sim_tdx_opts(&tdx, opts + 17);
    int rc = cl_cli_parse(argc, argv, &usage, opts, nopts, NULL);
    cl_err err = {0};
    cl_attest_provider *prov = NULL;
    cl_ratls_identity *id = NULL;
    cl_provision_result res = {0};
    cl_atomic_file *files = NULL;
    size_t expect = 0;
    if (rc >= 0)
        goto done;
    rc = CL_EXIT_USAGE;
    if (secret_prov ? names.count != 0 : names.count == 0) {
        fprintf(stderr, "cloister provision: give --secret NAME (one or more), or --secret-prov alone\n");
        goto done;
    }
    expect = secret_prov ? 1 : names.count;
    if ((out && out_dir) || (!out && !out_dir) || (out && expect != 1)) {
        fprintf(stderr, "cloister provision: use --out FILE for one secret, or --out-dir DIR\n");
        goto done;
    }
    cl_attest_kind kind;
    if (cl_attest_kind_parse(evidence, &kind, &err) != 0) {
        rc = cl_cli_usage_error(argv[0], &err);
        goto done;
    }
    rc = CL_EXIT_FAIL;
    /* SIGTERM/SIGINT from here on raise the stop token, before any temporary file exists */
    if (!(g_stop = cl_stop_new(&err)) || handle_stop_signals(true, &err) != 0) {
        cl_cli_fail(argv[0], &err);
        goto done;
    }
    /* Every local check before the key server is contacted, so nothing is released that cannot be
     * written: the output files are opened now (an existing one without --force, a missing or
     * unwritable directory, two secrets mapped to one file are refused here), and committed after. */
    if (!(files = calloc(expect, sizeof *files))) {
        cl_err_nomem(&err);
        cl_cli_fail(argv[0], &err);
        goto done;
    }
    for (size_t i = 0; i < expect; i++)
        files[i].fd = -1;
    for (size_t i = 0; i < expect; i++) {
        char path[4096];
        output_path(out, out_dir, secret_prov ? NULL : names.items[i], path, sizeof path);
        for (size_t j = 0; j < i; j++) {
            if (files[j].path && strcmp(files[j].path, path) == 0) {
                cl_err_set(&err, CL_E_INVALID, "--secret '%s' and --secret '%s' would both be written to %s%s",
                           names.items[j], names.items[i], path,
                           strcmp(names.items[j], names.items[i]) == 0 ? "" : " ('/' becomes '_')");
                rc = cl_cli_usage_error(argv[0], &err);
                goto done;
            }
        }
        if (cl_atomic_open(&files[i], path, 0600, force, &err) != 0) {
            if (err.code == CL_E_EXISTS) {
                char msg[sizeof err.msg];
                memcpy(msg, err.msg, sizeof msg);
                cl_err_set(&err, CL_E_EXISTS, "%.400s (nothing was asked of the key server; --force overwrites)", msg);
            }
            cl_cli_fail(argv[0], &err);
            goto done;
        }
    }
    cl_attest_provider_config pc = {.kind = kind, .root = root, .sim_qe_key_file = sim_key,
                                    .sim_isv_prod_id = (uint16_t)prod, .sim_isv_svn = (uint16_t)svn,
                                    .sim_debug = debug};
    if (cl_cli_sim_tdx_apply(&tdx, &pc, &err) != 0) {
        rc = cl_cli_usage_error(argv[0], &err);
        goto done;
    }
    if (!(prov = cl_attest_provider_new(&pc, &err)) || !(id = cl_ratls_identity_new(prov, NULL, &err))) {
        cl_cli_fail(argv[0], &err);
        goto done;
    }
    cl_provision_options o = {.servers = servers.items, .server_count = servers.count, .ca_file = ca,
                              .server_name = server_name, .identity = id, .names = names.items,
                              .name_count = names.count, .secret_prov = secret_prov, .attempts = (int)attempts,
                              .backoff_ms = (int)backoff, .timeout_ms = (int)timeout, .stop = g_stop};
    int frc = cl_provision_fetch(&o, &res, &err);
    if (cl_stop_raised(g_stop)) { /* a signal during the fetch, or just after it: nothing is written */
        cl_err_set(&err, CL_E_IO, "stopped by %s while waiting for the key server: no secret was written",
                   g_signal == SIGINT ? "SIGINT" : "SIGTERM");
        cl_cli_fail(argv[0], &err);
        goto done;
    }
    /* write what was granted, even when something else was denied */
    for (size_t i = 0; i < res.count && i < expect; i++) {
        if (!res.secrets[i].granted)
            continue;
        cl_err werr = {0};
        if (cl_atomic_write(&files[i], res.secrets[i].value, res.secrets[i].len, &werr) != 0) {
            cl_cli_fail(argv[0], &werr);
            goto done;
        }
        char path[4096];
        snprintf(path, sizeof path, "%s", files[i].path);
        if (cl_atomic_commit(&files[i], &werr) != 0) {
            cl_cli_fail(argv[0], &werr);
            goto done;
        }
        fprintf(stderr, "cloister provision: wrote '%s' (%zu byte%s) to %s\n", res.secrets[i].name,
                res.secrets[i].len, res.secrets[i].len == 1 ? "" : "s", path);
    }
    if (frc != 0) {
        cl_cli_fail(argv[0], &err);
        goto done;
    }
    rc = CL_EXIT_OK;
done:
    for (size_t i = 0; files && i < expect; i++)
        cl_atomic_abort(&files[i]); /* what was not committed: the temporary files go */
    free(files);
    cl_provision_result_free(&res); /* the secrets' memory is wiped as it is freed */
    cl_ratls_identity_free(id);
    cl_attest_provider_free(prov);
    cl_strlist_free(&servers);
    cl_strlist_free(&names);
    cl_strlist_free(&tdx.rtmrs);
    if (g_stop) {
        cl_err ignored = {0};
        handle_stop_signals(false, &ignored);
        cl_stop_free(g_stop);
        g_stop = NULL;
    }
    return rc;
}
