/* cmd_serve.c — `cloister serve`: the TF Serving-compatible model server (gRPC on --port, REST on
 * --rest_api_port, TLS or mutual TLS from --ssl_config_file or PEM files). Parsing and wiring only, in
 * an order that puts every local check first: flags, model config, TLS material, the attestation
 * identity, the server (TLS contexts, ports bound, not listening yet), the key server options, the
 * model directories and plain models (repo); only then, with --keyserver, does it attest to the key
 * server and fetch the keys of the sealed models (repo keysource), open those (decrypted in locked
 * memory), start polling for new versions and run the serve module's server (listening from here).
 * --allow-empty starts a server with no models, to check ports, TLS and metrics. --attested-tls presents
 * a fresh RA-TLS identity (evidence from --evidence) on both ports instead of a configured certificate.
 * SIGTERM/SIGINT raise one stop token that every wait of the start-up and of the key fetches (the
 * key source's connects, TLS I/O and backoff, the version poller) ends on; a watcher thread then stops
 * the server (it drains requests in flight), or the start-up ends with a non-zero status.
 * --access_log opens the access log (a file appended to, or stderr) among the local checks; SIGHUP
 * reopens it (log rotation), on the watcher thread.
 * TF Serving's other flags (tfs_flags.c) join the table: honoured, or warned about, or refused. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "cloister/repo.h"
#include "cloister/serve.h"

/* SIGTERM and SIGINT, from the start on: the handler raises the stop token (async-signal-safe), which
 * ends every wait of the start-up and of the key fetches (connects, TLS I/O, backoff: the key source's
 * options carry it) and the version poller; a watcher thread logs the signal and stops the server. */
static cl_stop *g_stop;
static volatile sig_atomic_t g_signal;

static void on_stop_signal(int sig)
{
    if (!g_signal)
        g_signal = sig;
    cl_stop_raise(g_stop);
}

static const char *signal_name(void) { return g_signal == SIGINT ? "SIGINT" : "SIGTERM"; }

/* SIGHUP: a byte down this pipe wakes the watcher, which reopens the access log (write(2) is
 * async-signal-safe; the reopen is not, so it is not done in the handler). */
static int g_hup_pipe[2] = {-1, -1};

static void on_hup_signal(int sig)
{
    (void)sig;
    int e = errno;
    (void)!write(g_hup_pipe[1], "h", 1); /* non-blocking: a full pipe already has a reopen pending */
    errno = e;
}

typedef struct stop_watcher {
    pthread_t thread;
    bool started;
    cl_serve_server *srv;
    cl_log_sink *access_log;
} stop_watcher;

static void *watch_main(void *arg)
{
    stop_watcher *w = arg;
    while (!cl_stop_raised(g_stop)) {
        /* ends at once when the token is raised */
        if (cl_net_wait(g_hup_pipe[0], POLLIN, 1000, g_stop) != 1)
            continue;
        char drain[64];
        while (read(g_hup_pipe[0], drain, sizeof drain) > 0) {
        }
        cl_err err = {0};
        if (!w->access_log)
            CL_INFO("serve", "received SIGHUP: no --access_log file to reopen");
        else if (cl_log_sink_reopen(w->access_log, &err) != 0)
            CL_WARN("serve", "received SIGHUP: %s (the access log goes on to the file it had)", err.msg);
        else
            CL_INFO("serve", "received SIGHUP: access log reopened");
    }
    if (g_signal) {
        CL_INFO("serve", "received %s: stopping", signal_name());
        cl_serve_server_stop(w->srv);
    }
    return NULL;
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
    if (on && g_hup_pipe[0] < 0 && pipe2(g_hup_pipe, O_NONBLOCK | O_CLOEXEC) != 0)
        return cl_err_errno(err, CL_E_INTERNAL, errno, "cannot create the pipe for SIGHUP");
    sa.sa_handler = on ? on_hup_signal : SIG_DFL;
    if (sigaction(SIGHUP, &sa, NULL) != 0)
        return cl_err_errno(err, CL_E_INTERNAL, errno, "cannot install the SIGHUP handler");
    if (!on && g_hup_pipe[0] >= 0) {
        close(g_hup_pipe[0]);
        close(g_hup_pipe[1]);
        g_hup_pipe[0] = g_hup_pipe[1] = -1;
    }
    return 0;
}

/* cl_repo_options.before_sealed: the model keys from the key server, in one exchange, once every
 * local check has passed. */
static int fetch_model_keys(void *arg, char *const *key_ids, size_t n, cl_err *err)
{
    cl_repo_keysource *keys = arg;
    if (!keys) /* cl_repo_new refuses sealed models without a key source before this */
        return cl_err_set(err, CL_E_KEY, "sealed models need --keyserver");
    if (cl_repo_keysource_prefetch(keys, key_ids, n, err) != 0) {
        if (cl_stop_raised(g_stop))
            return cl_err_set(err, CL_E_IO, "stopped by %s while waiting for the key server for the model keys: "
                              "nothing was started", signal_name());
        return cl_err_prefix(err, "the key server did not release the model keys, so nothing was started");
    }
    CL_INFO("serve", "attested to the key server: received %zu model key%s", n, n == 1 ? "" : "s");
    return 0;
}

/* cl_serve_config.reload_config: ModelService/HandleReloadConfigRequest into the repository. */
static int reload_config(void *arg, const uint8_t *msg, size_t len, cl_serve_code *code, cl_err *err)
{
    cl_repo *repo = *(cl_repo **)arg;
    if (!repo) {
        *code = CL_SC_FAILED_PRECONDITION;
        return cl_err_set(err, CL_E_INVALID, "the server started without models (--allow-empty): it has no model "
                          "configuration to reload");
    }
    return cl_repo_reload_request(repo, msg, len, code, err);
}

/* The TF flags of model versions and loading (tfs_flags.c declares them), checked. */
typedef struct tfs_repo_flags {
    long labels_any, cfg_poll, retries, retry_us, warmup, warmup_iter;
} tfs_repo_flags;

static int tfs_repo_flags_get(const cl_tfs_flags *tf, tfs_repo_flags *o)
{
    *o = (tfs_repo_flags){0, 0, 0, 60000000, 0, 1};
    cl_tfs_flag_value(tf, "allow_version_labels_for_unavailable_models", &o->labels_any);
    cl_tfs_flag_value(tf, "model_config_file_poll_wait_seconds", &o->cfg_poll);
    cl_tfs_flag_value(tf, "max_num_load_retries", &o->retries);
    cl_tfs_flag_value(tf, "load_retry_interval_micros", &o->retry_us);
    cl_tfs_flag_value(tf, "enable_model_warmup", &o->warmup);
    cl_tfs_flag_value(tf, "num_request_iterations_for_warmup", &o->warmup_iter);
    const struct {
        const char *name;
        long v, min, max;
    } ranges[] = {{"model_config_file_poll_wait_seconds", o->cfg_poll, 0, 86400},
                  {"max_num_load_retries", o->retries, 0, 1000},
                  {"load_retry_interval_micros", o->retry_us, 0, 3600000000L},
                  {"num_request_iterations_for_warmup", o->warmup_iter, 0, 1000}};
    for (size_t i = 0; i < CL_ARRAY_LEN(ranges); i++) {
        if (ranges[i].v < ranges[i].min || ranges[i].v > ranges[i].max) {
            fprintf(stderr, "cloister serve: option --%s wants %ld to %ld, not %ld\n", ranges[i].name, ranges[i].min,
                    ranges[i].max, ranges[i].v);
            return CL_EXIT_USAGE;
        }
    }
    return -1;
}

int cl_cmd_serve(int argc, char **argv)
{
    long port = 8500, rest_port = 8501, max_bytes = 64L << 20, timeout_ms = 30000, workers = 2, queue = 64,
         inline_us = 200, rest_threads = 0, request_mem_mb = 256, budget_mb = 1024, release_idle_ms = 1000,
         engine_pool_mb = 128;
    const char *host = NULL, *ssl_cfg = NULL, *cert = NULL, *key = NULL, *ca = NULL;
    const char *model_name = NULL, *model_base = NULL, *model_cfg = NULL, *keyserver_ca = NULL, *evidence = "sim",
               *attest_root = NULL, *sim_key = getenv("CLOISTER_SIM_QE_KEY"), *keyserver_name = NULL;
    cl_strlist keyservers = {0};
    long poll_seconds = 1, engine_threads = 0, ks_attempts = 30, ks_backoff = 200;
    bool client_verify = false, plaintext = false, allow_empty = false, batching = false, attested = false;
    const char *batching_file = NULL, *omp_wait = NULL, *access_log_path = NULL;
    long max_batch = -1, batch_timeout = -1;
    const cl_opt opts[] = {
        {"port", CL_ARG_LONG, &port, "PORT", "gRPC port (default 8500; 0: no gRPC)", false, 0, 65535},
        {"rest_api_port", CL_ARG_LONG, &rest_port, "PORT", "REST port (default 8501; 0: no REST)", false, 0, 65535},
        {"host", CL_ARG_STRING, &host, "ADDR", "listen address (default 0.0.0.0)", false},
        {"ssl_config_file", CL_ARG_STRING, &ssl_cfg, "FILE", "TF Serving SSLConfig text file (cloister tls init "
                                                             "writes one)", false},
        {"tls-cert", CL_ARG_STRING, &cert, "FILE", "server certificate (PEM), instead of --ssl_config_file", false},
        {"tls-key", CL_ARG_STRING, &key, "FILE", "server private key (PEM)", false},
        {"tls-ca", CL_ARG_STRING, &ca, "FILE", "CA for client certificates (PEM)", false},
        {"client-verify", CL_ARG_FLAG, &client_verify, NULL, "require client certificates (mutual TLS)", false},
        {"attested-tls", CL_ARG_FLAG, &attested, NULL, "present a fresh RA-TLS certificate (evidence from --evidence) "
                                                       "instead of a configured one; clients verify it with --attest",
         false},
        {"plaintext", CL_ARG_FLAG, &plaintext, NULL, "serve without TLS (h2c and http); never in production", false},
        {"model_name", CL_ARG_STRING, &model_name, "NAME", "name of the served model (default: default)", false},
        {"model_base_path", CL_ARG_STRING, &model_base, "DIR", "model directory: DIR/<version>/model.onnx[.sealed]",
         false},
        {"model_config_file", CL_ARG_STRING, &model_cfg, "FILE", "several models", false},
        {"file_system_poll_wait_seconds", CL_ARG_LONG, &poll_seconds, "S", "look for new model versions every S "
                                                                          "seconds (default 1; 0: never)", false, 0,
         86400},
        {"engine-threads", CL_ARG_LONG, &engine_threads, "N", "threads per model run (default: all cores)", false, 0,
         1024},
        {"keyserver", CL_ARG_LIST, &keyservers, "HOST:PORT", "key server to attest to for model keys (repeat for "
                                                             "fail-over)", false},
        {"keyserver-ca", CL_ARG_STRING, &keyserver_ca, "FILE", "CA of the key server's certificate", false},
        {"keyserver-name", CL_ARG_STRING, &keyserver_name, "NAME", "name to check in its certificate (default HOST)",
         false},
        {"keyserver-attempts", CL_ARG_LONG, &ks_attempts, "N", "rounds over the key servers while they cannot be "
                                                               "reached (default 30: with the default backoff at "
                                                               "most 126.2 s of delays in all, plus up to 10 s per "
                                                               "connection attempt); a name that does not resolve "
                                                               "is not retried, a resolver that does not answer "
                                                               "for 30 s at most", false, 1, 100000},
        {"keyserver-backoff-ms", CL_ARG_LONG, &ks_backoff, "MS", "first delay between rounds (default 200), "
                                                                 "doubling each round up to 5 s (or MS if larger), "
                                                                 "each delay shortened at random by up to half",
         false, 1, 60000},
        {"evidence", CL_ARG_STRING, &evidence, "sim|gramine|tsm", "attestation evidence provider (default sim: "
                                                                  "INSECURE, development only)", false},
        {"attest-root", CL_ARG_STRING, &attest_root, "DIR", "gramine/tsm: where the attestation files are", false},
        {"sim-key", CL_ARG_STRING, &sim_key, "FILE", "sim: simulated quoting key (or $CLOISTER_SIM_QE_KEY)", false},
        {"max_request_bytes", CL_ARG_LONG, &max_bytes, "BYTES", "largest request body (default 64 MiB)", false, 1024,
         1L << 31},
        {"request_timeout_ms", CL_ARG_LONG, &timeout_ms, "MS", "a TLS handshake or request not received within "
                                                                "this is cut (default 30000)", false, 100, 3600000},
        {"workers", CL_ARG_LONG, &workers, "N", "threads running models (default 2)", false, 1, 1024},
        {"max_request_memory_mb", CL_ARG_LONG, &request_mem_mb, "MB", "memory one request may use: inputs, outputs "
                                                                      "and the model's working memory; larger "
                                                                      "batches run in pieces, what cannot fit gets "
                                                                      "RESOURCE_EXHAUSTED / HTTP 429 (default 256; "
                                                                      "0: no limit)", false, 0, 1L << 22},
        {"memory_budget_mb", CL_ARG_LONG, &budget_mb, "MB", "memory all requests in flight may hold together; beyond "
                                                            "it new ones get RESOURCE_EXHAUSTED / HTTP 429 (default "
                                                            "1024; 0: no limit)", false, 0, 1L << 22},
        {"engine_pool_mb", CL_ARG_LONG, &engine_pool_mb, "MB", "free activation buffers the engine keeps for reuse "
                                                               "(default 128; beyond, freed buffers go back to the "
                                                               "system at once)", false, 0, 1L << 20},
        {"memory_release_idle_ms", CL_ARG_LONG, &release_idle_ms, "MS", "after a burst, give memory kept for reuse "
                                                                        "back to the system once no request ran for "
                                                                        "this long (default 1000)", false, 1,
         3600000},
        {"queue", CL_ARG_LONG, &queue, "N", "requests waiting for a worker before new ones get UNAVAILABLE / HTTP "
                                           "429 (default 64)", false, 1, 1000000},
        {"rest_api_num_threads", CL_ARG_LONG, &rest_threads, "N", "event loops (threads) serving REST (default: "
                                                                  "one per CPU, at most 4; above 64: 64)", false, 1,
         1000000},
        {"inline_max_us", CL_ARG_LONG, &inline_us, "US", "models that typically run within this long run on the "
                                                        "network thread, without a worker hand-off (default 200; 0: "
                                                        "never)", false, 0, 100000},
        {"enable_batching", CL_ARG_BOOL, &batching, NULL, "run concurrent requests for a model as one batch (models "
                                                          "whose inputs and outputs have a dynamic first dim)", false},
        {"batching_parameters_file", CL_ARG_STRING, &batching_file, "FILE", "TF Serving BatchingParameters text "
                                                                             "file", false},
        {"max_batch_size", CL_ARG_LONG, &max_batch, "N", "rows per batched model call (default 32)", false, 2, 4096},
        {"batch_timeout_micros", CL_ARG_LONG, &batch_timeout, "US", "wait this long for a batch to fill (default 0: "
                                                                     "batch what is already queued)", false, 0,
         10000000},
        {"allow-empty", CL_ARG_FLAG, &allow_empty, NULL, "start with no models (to check ports, TLS, metrics)", false},
        {"omp-wait-policy", CL_ARG_STRING, &omp_wait, "passive|active|runtime-default",
         "how the engine's OpenMP threads wait for work: passive sleeps at once, active spins, runtime-default "
         "spins briefly (libgomp's own; OMP_WAIT_POLICY unset). Default passive, or OMP_WAIT_POLICY from the "
         "environment (docs/serve.md)", false},
        {"access_log", CL_ARG_STRING, &access_log_path, "FILE|stderr", "one line per request on either API (method, "
                                                                      "model, version, status, latency, bytes, peer, "
                                                                      "client certificate; no tensor contents), "
                                                                      "appended to FILE, in the --log-format "
                                                                      "(default: none)", false},
    };
    const cl_cmd_usage usage = {
        "cloister serve (--ssl_config_file FILE | --tls-cert FILE --tls-key FILE [--tls-ca FILE --client-verify] |\n"
        "                --attested-tls [--evidence sim|gramine|tsm] | --plaintext) [--port 8500] [--rest_api_port 8501] (--model_name NAME --model_base_path DIR |\n"
        "                --model_config_file FILE | --allow-empty)",
        "Serves models with TensorFlow Serving's APIs: gRPC (tensorflow.serving.PredictionService Predict and\n"
        "GetModelMetadata, ModelService GetModelStatus) on --port and REST (/v1/models/...) on --rest_api_port,\n"
        "both over TLS or mutual TLS, with Prometheus metrics at /monitoring/prometheus/metrics on the REST port.\n"
        "SIGTERM stops accepting connections and lets requests in flight finish; during the start-up (or a key\n"
        "fetch of the version poller) it ends the wait for the key server at once.\n"
        "Models: DIR/<version>/model.onnx or model.onnx.sealed, latest version served, new versions swapped in.\n"
        "Sealed models need --keyserver: the server attests to it (RA-TLS) and receives their keys at start-up.\n"
        "Every tensorflow_model_server flag is accepted (--flag=value or --flag value; booleans --flag or\n"
        "--flag=true|false|1|0; repeated: the last counts); those marked 'TF Serving: no effect' only warn.\n"
        "Differences on purpose (docs/serve.md has the table): TLS is required on both ports unless\n"
        "--plaintext; REST is served over the same TLS, on 8501 by default (TF: off unless --rest_api_port);\n"
        "--grpc_socket_path and --use_alts_credentials are refused; an unknown flag is an error (TF: ignored)."};
    bool grpc_health = false;
    int response_compression = 0;
    cl_tfs_flags tf = {.timeout_ms = &timeout_ms, .engine_threads = &engine_threads, .rest_threads = &rest_threads,
                       .max_bytes = &max_bytes, .grpc_health = &grpc_health,
                       .response_compression = &response_compression};
    cl_opt all[CL_ARRAY_LEN(opts) + CL_TFS_FLAGS];
    size_t nall = cl_tfs_flags_table(&tf, opts, CL_ARRAY_LEN(opts), all, CL_ARRAY_LEN(all));
    int rc = cl_cli_parse(argc, argv, &usage, all, nall, NULL);
    if (rc >= 0)
        return rc;
    if (omp_wait && !cl_cli_omp_wait_valid(omp_wait)) {
        fprintf(stderr, "cloister serve: --omp-wait-policy must be passive, active or runtime-default, not '%s'\n",
                omp_wait);
        return CL_EXIT_USAGE;
    }
    /* before anything is opened, started or warned about: this may re-execute the program */
    cl_cli_omp_wait_policy(omp_wait);
    if ((rc = cl_tfs_flags_apply(&tf)) >= 0)
        return rc;
    tfs_repo_flags rf;
    if ((rc = tfs_repo_flags_get(&tf, &rf)) >= 0)
        return rc;
    if (rf.cfg_poll && !model_cfg) {
        fprintf(stderr, "cloister serve: --model_config_file_poll_wait_seconds needs --model_config_file\n");
        return CL_EXIT_USAGE;
    }
    const char *omp_env = getenv("OMP_WAIT_POLICY");
    CL_INFO("serve", "the engine's OpenMP threads wait %s (OMP_WAIT_POLICY%s)",
            omp_env ? omp_env : "spinning briefly, then sleeping", omp_env ? "" : " unset: libgomp's default");
    cl_err err = {0};
    /* before any key or model is read: not dumpable, no core files, OpenSSL's secure heap for keys */
    if (cl_process_harden(CL_SECURE_HEAP_DEFAULT, &err) != 0)
        return cl_cli_fail("serve", &err);

    cl_serve_batching bat = {0};
    if ((batching_file || max_batch >= 0 || batch_timeout >= 0) && !batching) {
        fprintf(stderr, "cloister serve: --batching_parameters_file, --max_batch_size and --batch_timeout_micros "
                        "need --enable_batching\n");
        return CL_EXIT_USAGE;
    }
    if (batching) {
        unsigned w = (unsigned)workers, q = (unsigned)queue;
        uint8_t *text = NULL;
        size_t len = 0;
        if (cl_serve_batching_parse("", 0, &bat, NULL, NULL, &err) != 0 ||
            (batching_file && (cl_file_read(batching_file, 1 << 20, &text, &len, &err) != 0 ||
                               cl_serve_batching_parse((const char *)text, len, &bat, &w, &q, &err) != 0))) {
            free(text);
            fprintf(stderr, "cloister serve: %s: %s\n", batching_file ? batching_file : "batching", err.msg);
            return CL_EXIT_USAGE;
        }
        free(text);
        workers = w;
        queue = q;
        if (max_batch >= 0)
            bat.max_batch_size = (unsigned)max_batch;
        if (batch_timeout >= 0)
            bat.batch_timeout_us = (unsigned)batch_timeout;
    }
    if (ssl_cfg && (cert || key || ca || client_verify)) {
        cl_err_set(&err, CL_E_INVALID, "give either --ssl_config_file or --tls-cert/--tls-key/--tls-ca, not both");
        return cl_cli_usage_error("serve", &err);
    }
    if (!ssl_cfg && !cert && !plaintext && !attested) {
        cl_err_set(&err, CL_E_INVALID, "no TLS configuration: give --ssl_config_file (see `cloister tls init`) or "
                   "--tls-cert and --tls-key, or --attested-tls; --plaintext serves without TLS");
        return cl_cli_usage_error("serve", &err);
    }
    if ((ssl_cfg || cert || attested) && plaintext) {
        cl_err_set(&err, CL_E_INVALID, "--plaintext contradicts the TLS options");
        return cl_cli_usage_error("serve", &err);
    }
    if (attested && (cert || key)) {
        cl_err_set(&err, CL_E_INVALID, "--attested-tls makes its own key and certificate: drop --tls-cert and "
                   "--tls-key (--tls-ca with --client-verify still asks clients for certificates)");
        return cl_cli_usage_error("serve", &err);
    }
    if (attested && client_verify && !ca) {
        cl_err_set(&err, CL_E_INVALID, "--client-verify needs --tls-ca (the CA of the client certificates)");
        return cl_cli_usage_error("serve", &err);
    }
    if (cert && !key) {
        cl_err_set(&err, CL_E_INVALID, "--tls-cert needs --tls-key");
        return cl_cli_usage_error("serve", &err);
    }
    if (port == 0 && rest_port == 0) {
        cl_err_set(&err, CL_E_INVALID, "--port 0 and --rest_api_port 0 leave nothing to serve");
        return cl_cli_usage_error("serve", &err);
    }
    if (port == rest_port) {
        cl_err_set(&err, CL_E_INVALID, "--port and --rest_api_port must differ");
        return cl_cli_usage_error("serve", &err);
    }
    if (model_base && !model_name)
        model_name = "default"; /* TF Serving's default name */
    if (model_name && !model_base && !model_cfg) { /* with a config file TF ignores both */
        cl_err_set(&err, CL_E_INVALID, "--model_name needs --model_base_path (they go together)");
        return cl_cli_usage_error("serve", &err);
    }
    if (!model_base && !model_cfg && !allow_empty) {
        cl_err_set(&err, CL_E_INVALID, "no model to serve: give --model_name and --model_base_path, or "
                   "--model_config_file (or --allow-empty to start without models)");
        return cl_cli_usage_error("serve", &err);
    }
    if (keyservers.count && !keyserver_ca) {
        cl_err_set(&err, CL_E_INVALID, "--keyserver needs --keyserver-ca (the CA of the key server's certificate)");
        cl_strlist_free(&keyservers);
        return cl_cli_usage_error("serve", &err);
    }
    cl_attest_kind kind;
    if (cl_attest_kind_parse(evidence, &kind, &err) != 0) {
        cl_strlist_free(&keyservers);
        return cl_cli_usage_error("serve", &err);
    }
    /* the access log is opened here, with the other local checks, before any key is asked for */
    cl_log_sink *access_log = NULL;
    if (access_log_path && !(access_log = cl_log_sink_open(access_log_path, &err))) {
        cl_strlist_free(&keyservers);
        cl_err_prefix(&err, "--access_log");
        return cl_cli_fail("serve", &err);
    }

    /* Everything below is released at `out`. Every local check comes first (flags above; then the
     * model config, TLS material, attestation provider, ports, key server options, model directories
     * and plain models); the key server is contacted only after all of them passed, so a key is
     * released only to a server that will use it. */
    rc = CL_EXIT_FAIL;
    cl_repo_model_config one = {model_name, model_base}, *models = NULL;
    size_t n_models = 0;
    cl_attest_provider *prov = NULL;
    cl_ratls_identity *id = NULL;
    cl_repo_keysource *keys = NULL;
    cl_repo *repo = NULL;
    cl_serve_registry *reg = NULL;
    cl_serve_server *srv = NULL;
    cl_serve_ssl_config tls = {0};
    stop_watcher watcher = {0};
    /* 0. From here on SIGTERM/SIGINT raise the stop token: every later wait ends on it. */
    g_signal = 0;
    if (!(g_stop = cl_stop_new(&err)) || handle_stop_signals(true, &err) != 0)
        goto out;
    if (model_cfg && cl_repo_config_load(model_cfg, &models, &n_models, &err) != 0)
        goto out;
    const cl_repo_model_config *mlist = models ? models : &one;
    size_t mcount = models ? n_models : (model_base ? 1 : 0);

    /* 1. TLS material. */
    if (ssl_cfg && cl_serve_ssl_config_load(ssl_cfg, &tls, &err) != 0)
        goto out;
    if (cert && cl_serve_ssl_config_from_files(cert, key, ca, client_verify, &tls, &err) != 0)
        goto out;
    bool have_tls = ssl_cfg || cert;
    if (attested && !ssl_cfg && ca) {
        uint8_t *pem = NULL;
        size_t len;
        if (cl_file_read(ca, 1 << 20, &pem, &len, &err) != 0) {
            cl_err_prefix(&err, "--tls-ca");
            goto out;
        }
        tls.custom_ca = (char *)pem;
        tls.client_verify = client_verify;
        have_tls = true;
    }

    /* 2. The RA-TLS identity: one for the key server and --attested-tls (same key, same evidence). */
    if (keyservers.count || attested) {
        cl_attest_provider_config pc = {.kind = kind, .root = attest_root, .sim_qe_key_file = sim_key};
        if (!(prov = cl_attest_provider_new(&pc, &err)) || !(id = cl_ratls_identity_new(prov, NULL, &err))) {
            if (!keyservers.count)
                cl_err_prefix(&err, "--attested-tls");
            goto out;
        }
    }
    if (attested) {
        if (ssl_cfg)
            CL_INFO("serve", "--attested-tls: the certificate and key of %s are not used (client_verify and custom_ca "
                    "are)", ssl_cfg);
        CL_INFO("serve", "attested TLS: presenting a fresh RA-TLS certificate with %s evidence",
                cl_attest_kind_name(kind));
    }

    /* 3. The server: TLS contexts (certificate, key and CA checked), worker pool, ports bound. It
     * listens only once it runs, after the models are loaded. */
    if (!(reg = cl_serve_registry_new(&err)))
        goto out;
    cl_serve_config cfg = {.host = host, .grpc_port = port ? (int)port : -1, .rest_port = rest_port ? (int)rest_port : -1,
                           .tls = have_tls ? &tls : NULL, .ratls_identity = attested ? id : NULL,
                           .allow_plaintext = plaintext,
                           .max_request_bytes = (size_t)max_bytes, .request_timeout_ms = (unsigned)timeout_ms,
                           .workers = (unsigned)workers, .queue_limit = (unsigned)queue, .batching = bat,
                           .inline_max_us = inline_us ? inline_us : -1, .rest_threads = (unsigned)rest_threads,
                           .request_memory_bytes = request_mem_mb ? (size_t)request_mem_mb << 20 : SIZE_MAX,
                           .memory_budget_bytes = budget_mb ? (size_t)budget_mb << 20 : SIZE_MAX,
                           .release_idle_ms = (unsigned)release_idle_ms, .release_memory = cl_engine_release_memory,
                           .handle_signals = false /* ours: the stop token and its watcher */, .listen_in_run = true,
                           .access_log = access_log, .build_version = CLOISTER_VERSION,
                           .reload_config = reload_config, .reload_config_arg = &repo,
                           .build_engine_isa = cl_engine_cpu_isa(),
                           .build_evidence = keyservers.count || attested ? cl_attest_kind_name(kind) : "none",
                           .grpc_health = grpc_health,
                           .response_compression = (cl_serve_compression)response_compression};
    cl_engine_set_pool_limit((size_t)engine_pool_mb << 20);
    srv = cl_serve_server_new(&cfg, reg, &err);
    /* the TLS contexts hold their own copies of the key now */
    cl_serve_ssl_config_clear(&tls);
    if (!srv)
        goto out;
    watcher.srv = srv;
    watcher.access_log = access_log;
    int te = pthread_create(&watcher.thread, NULL, watch_main, &watcher);
    if (te != 0) {
        cl_err_errno(&err, CL_E_INTERNAL, te, "cannot start the thread that watches for SIGTERM");
        goto out;
    }
    watcher.started = true;

    /* 4. The key server's options (servers, CA file), checked without contacting it. */
    if (keyservers.count) {
        cl_provision_options po = {.servers = keyservers.items, .server_count = keyservers.count,
                                   .ca_file = keyserver_ca, .server_name = keyserver_name, .identity = id,
                                   .attempts = (int)ks_attempts, .backoff_ms = (int)ks_backoff, .stop = g_stop};
        if (!(keys = cl_repo_keysource_new(&po, &err)))
            goto out;
    }

    /* 5. The models: model directories, sealed headers and plain models first; then the keys of the
     * sealed ones from the key server (before_sealed), then the sealed models. */
    if (mcount) {
        cl_repo_options ro = {.registry = reg, .models = mlist, .n_models = mcount,
                              .key_fn = keys ? cl_repo_keysource_get : NULL, .key_arg = keys,
                              .engine_threads = (int)engine_threads, .before_sealed = fetch_model_keys,
                              .before_sealed_arg = keys, .stop = g_stop,
                              .allow_unavailable_labels = rf.labels_any, .max_load_retries = (unsigned)rf.retries,
                              .load_retry_interval_us = (uint64_t)rf.retry_us, .warmup = rf.warmup,
                              .warmup_iterations = (unsigned)rf.warmup_iter};
        if (!(repo = cl_repo_new(&ro, &err)))
            goto out;
        if (poll_seconds > 0 && cl_repo_start_polling(repo, (unsigned)poll_seconds, &err) != 0)
            goto out;
        if (rf.cfg_poll && cl_repo_start_config_polling(repo, model_cfg, (unsigned)rf.cfg_poll, &err) != 0)
            goto out;
    }

    /* 6. Serve, unless a signal came during the start-up. */
    if (cl_stop_raised(g_stop)) {
        cl_err_set(&err, CL_E_IO, "stopped by %s during the start-up: nothing was started", signal_name());
        goto out;
    }
    if (allow_empty && !mcount)
        CL_WARN("serve", "no models loaded (--allow-empty): every model request answers NOT_FOUND");
    if (cl_serve_server_run(srv, &err) != 0)
        goto out;
    cl_cli_say(CL_LOG_INFO, "serve", "stopped");
    rc = CL_EXIT_OK;
out:
    if (rc != CL_EXIT_OK) {
        if (cl_stop_raised(g_stop) && !strstr(err.msg, "nothing was started"))
            cl_err_prefix(&err, "stopped by %s during the start-up, nothing was started", signal_name());
        cl_cli_fail("serve", &err);
    }
    if (watcher.started) {
        cl_stop_raise(g_stop); /* ends the watcher (it stops the server only for a signal) */
        pthread_join(watcher.thread, NULL);
    }
    cl_serve_ssl_config_clear(&tls);
    cl_serve_server_free(srv);
    cl_repo_free(repo); /* stops polling before the registry goes */
    cl_serve_registry_free(reg);
    cl_repo_keysource_free(keys);
    cl_ratls_identity_free(id);
    cl_attest_provider_free(prov);
    cl_repo_config_free(models, n_models);
    cl_strlist_free(&keyservers);
    cl_log_sink_close(access_log);
    if (g_stop) {
        handle_stop_signals(false, NULL);
        cl_stop_free(g_stop);
        g_stop = NULL;
    }
    return rc;
}
