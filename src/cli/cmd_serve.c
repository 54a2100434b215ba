/* cmd_serve.c — `cloister serve`: the TF Serving-compatible model server (gRPC on --port, REST on
 * --rest_api_port, TLS or mutual TLS from --ssl_config_file or PEM files). Parsing and wiring only;
 * the server is libcloister's serve module.
 *
 * Not yet wired (their modules are other issues): loading models (needs the ONNX engine, issue 4)
 * and fetching keys from a key server (issue 3). Those options are accepted and refused with a
 * message saying so, rather than pretending. --allow-empty starts a server with no models, to check
 * ports, TLS and metrics. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "cloister/serve.h"

int cl_cmd_serve(int argc, char **argv)
{
    long port = 8500, rest_port = 8501, max_bytes = 64L << 20, timeout_ms = 30000, workers = 2, queue = 64;
    const char *host = NULL, *ssl_cfg = NULL, *cert = NULL, *key = NULL, *ca = NULL;
    const char *model_name = NULL, *model_base = NULL, *model_cfg = NULL, *keyserver = NULL, *keyserver_ca = NULL,
               *evidence = NULL;
    bool client_verify = false, plaintext = false, allow_empty = false;
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
        {"plaintext", CL_ARG_FLAG, &plaintext, NULL, "serve without TLS (h2c and http); never in production", false},
        {"model_name", CL_ARG_STRING, &model_name, "NAME", "name of the served model", false},
        {"model_base_path", CL_ARG_STRING, &model_base, "DIR", "model directory: DIR/<version>/model.onnx[.sealed]",
         false},
        {"model_config_file", CL_ARG_STRING, &model_cfg, "FILE", "several models", false},
        {"keyserver", CL_ARG_STRING, &keyserver, "HOST:PORT", "key server to attest to for model keys", false},
        {"keyserver-ca", CL_ARG_STRING, &keyserver_ca, "FILE", "CA of the key server", false},
        {"evidence", CL_ARG_STRING, &evidence, "sim|gramine|tsm", "attestation evidence provider", false},
        {"max_request_bytes", CL_ARG_LONG, &max_bytes, "BYTES", "largest request body (default 64 MiB)", false, 1024,
         1L << 31},
        {"request_timeout_ms", CL_ARG_LONG, &timeout_ms, "MS", "a TLS handshake or request not received within "
                                                                "this is cut (default 30000)", false, 100, 3600000},
        {"workers", CL_ARG_LONG, &workers, "N", "threads running models (default 2)", false, 1, 1024},
        {"queue", CL_ARG_LONG, &queue, "N", "requests waiting for a worker before new ones get UNAVAILABLE / HTTP "
                                           "429 (default 64)", false, 1, 1000000},
        {"allow-empty", CL_ARG_FLAG, &allow_empty, NULL, "start with no models (to check ports, TLS, metrics)", false},
    };
    const cl_cmd_usage usage = {
        "cloister serve (--ssl_config_file FILE | --tls-cert FILE --tls-key FILE [--tls-ca FILE --client-verify] |\n"
        "                --plaintext) [--port 8500] [--rest_api_port 8501] (--model_name NAME --model_base_path DIR |\n"
        "                --model_config_file FILE | --allow-empty)",
        "Serves models with TensorFlow Serving's APIs: gRPC (tensorflow.serving.PredictionService Predict and\n"
        "GetModelMetadata, ModelService GetModelStatus) on --port and REST (/v1/models/...) on --rest_api_port,\n"
        "both over TLS or mutual TLS, with Prometheus metrics at /monitoring/prometheus/metrics on the REST port.\n"
        "SIGTERM stops accepting connections and lets requests in flight finish.\n"
        "Model loading (the ONNX engine) and key release (the key server) are not part of this build yet."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    if (ssl_cfg && (cert || key || ca || client_verify)) {
        cl_err_set(&err, CL_E_INVALID, "give either --ssl_config_file or --tls-cert/--tls-key/--tls-ca, not both");
        return cl_cli_usage_error("serve", &err);
    }
    if (!ssl_cfg && !cert && !plaintext) {
        cl_err_set(&err, CL_E_INVALID, "no TLS configuration: give --ssl_config_file (see `cloister tls init`) or "
                   "--tls-cert and --tls-key; --plaintext serves without TLS");
        return cl_cli_usage_error("serve", &err);
    }
    if ((ssl_cfg || cert) && plaintext) {
        cl_err_set(&err, CL_E_INVALID, "--plaintext contradicts the TLS options");
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
    if ((model_name != NULL) != (model_base != NULL)) {
        cl_err_set(&err, CL_E_INVALID, "--model_name and --model_base_path go together");
        return cl_cli_usage_error("serve", &err);
    }
    if (!model_base && !model_cfg && !allow_empty) {
        cl_err_set(&err, CL_E_INVALID, "no model to serve: give --model_name and --model_base_path, or "
                   "--model_config_file (or --allow-empty to start without models)");
        return cl_cli_usage_error("serve", &err);
    }
    if (keyserver || keyserver_ca || evidence) {
        cl_err_set(&err, CL_E_UNSUPPORTED, "attestation and key release (--keyserver, --keyserver-ca, --evidence) "
                   "are not in this build yet: the attest/keyserver modules (issue 3) are not merged");
        return cl_cli_fail("serve", &err);
    }
    if (model_base || model_cfg) {
        cl_err_set(&err, CL_E_UNSUPPORTED, "cannot load models yet: the ONNX engine (issue 4) is not merged into "
                   "this build, so %s cannot be served; nothing was started",
                   model_base ? model_base : model_cfg);
        return cl_cli_fail("serve", &err);
    }

    cl_serve_ssl_config tls = {0};
    if (ssl_cfg && cl_serve_ssl_config_load(ssl_cfg, &tls, &err) != 0)
        return cl_cli_fail("serve", &err);
    if (cert && cl_serve_ssl_config_from_files(cert, key, ca, client_verify, &tls, &err) != 0)
        return cl_cli_fail("serve", &err);
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    if (!reg) {
        cl_serve_ssl_config_clear(&tls);
        return cl_cli_fail("serve", &err);
    }
    cl_serve_config cfg = {.host = host, .grpc_port = port ? (int)port : -1, .rest_port = rest_port ? (int)rest_port : -1,
                           .tls = plaintext ? NULL : &tls, .allow_plaintext = plaintext,
                           .max_request_bytes = (size_t)max_bytes, .request_timeout_ms = (unsigned)timeout_ms,
                           .workers = (unsigned)workers, .queue_limit = (unsigned)queue, .handle_signals = true};
    cl_serve_server *srv = cl_serve_server_new(&cfg, reg, &err);
    /* the TLS contexts hold their own copies of the key now */
    cl_serve_ssl_config_clear(&tls);
    if (!srv) {
        cl_serve_registry_free(reg);
        return cl_cli_fail("serve", &err);
    }
    if (allow_empty)
        CL_WARN("serve", "no models loaded (--allow-empty): every model request answers NOT_FOUND");
    rc = cl_serve_server_run(srv, &err);
    cl_serve_server_free(srv);
    cl_serve_registry_free(reg);
    if (rc != 0)
        return cl_cli_fail("serve", &err);
    fprintf(stderr, "cloister serve: stopped\n");
    return CL_EXIT_OK;
}
