/* serve_testd.c — a test server: the real serve module (gRPC + REST, TLS / mTLS) with the test
 * backends of testmodel.c registered, for the integration tests. Listens on 127.0.0.1 on free
 * ports (port 0) and writes "GRPC_PORT REST_PORT" to --port-file once listening; stops gracefully
 * on SIGTERM. Test code only. */
#include <stdio.h>
#include <stdlib.h>

#include "cloister/serve.h"
#include "testmodel.h"

int main(int argc, char **argv)
{
    const char *ssl_cfg = NULL, *cert = NULL, *key = NULL, *ca = NULL, *port_file = NULL;
    bool verify = false, plaintext = false, health = false;
    const char *compression = NULL;
    long max_bytes = 1 << 20, timeout_ms = 2000, workers = 2, queue = 16, max_batch = 0, batch_us = 0;
    const cl_opt opts[] = {
        {"ssl-config", CL_ARG_STRING, &ssl_cfg, "FILE", "TF Serving SSLConfig text file", false},
        {"cert", CL_ARG_STRING, &cert, "FILE", "server certificate", false},
        {"key", CL_ARG_STRING, &key, "FILE", "server key", false},
        {"ca", CL_ARG_STRING, &ca, "FILE", "client CA", false},
        {"verify", CL_ARG_FLAG, &verify, NULL, "require client certificates", false},
        {"plaintext", CL_ARG_FLAG, &plaintext, NULL, "no TLS", false},
        {"port-file", CL_ARG_STRING, &port_file, "FILE", "where to write the ports", true},
        {"max-bytes", CL_ARG_LONG, &max_bytes, "N", "request limit", false, 64, 1L << 30},
        {"timeout-ms", CL_ARG_LONG, &timeout_ms, "MS", "request timeout", false, 50, 600000},
        {"workers", CL_ARG_LONG, &workers, "N", "worker threads", false, 1, 64},
        {"queue", CL_ARG_LONG, &queue, "N", "queue limit", false, 1, 100000},
        {"max-batch", CL_ARG_LONG, &max_batch, "N", "dynamic batching: rows per model call (0: off)", false, 0, 4096},
        {"batch-timeout-us", CL_ARG_LONG, &batch_us, "US", "dynamic batching: wait for a batch to fill", false, 0,
         10000000},
        {"health", CL_ARG_FLAG, &health, NULL, "serve grpc.health.v1", false},
        {"response-compression", CL_ARG_STRING, &compression, "ALG", "gRPC response compression", false},
    };
    const cl_cmd_usage usage = {"serve_testd --port-file FILE [TLS options]", "test server"};
    cl_err err = {0};
    int rc = cl_args_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err);
    if (rc != 0) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 2;
    }
    cl_secmem_set_require_lock(false);
    cl_serve_ssl_config tls = {0};
    if (ssl_cfg && cl_serve_ssl_config_load(ssl_cfg, &tls, &err) != 0) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 1;
    }
    if (cert && cl_serve_ssl_config_from_files(cert, key, ca, verify, &tls, &err) != 0) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 1;
    }
    cl_serve_compression alg = CL_SERVE_COMPRESS_NONE;
    if (cl_serve_compression_parse(compression, &alg, &err) != 0) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 2;
    }
    cl_serve_registry *reg = cl_serve_registry_new(&err);
    if (!reg || tm_register_all(reg, 1, true, &err) != 0) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 1;
    }
    cl_serve_config cfg = {.host = "127.0.0.1", .grpc_port = 0, .rest_port = 0,
                           .tls = (ssl_cfg || cert) ? &tls : NULL, .allow_plaintext = plaintext,
                           .max_request_bytes = (size_t)max_bytes, .request_timeout_ms = (unsigned)timeout_ms,
                           .workers = (unsigned)workers, .queue_limit = (unsigned)queue,
                           .batching = {(unsigned)max_batch, (unsigned)batch_us}, .handle_signals = true,
                           .grpc_health = health, .response_compression = alg};
    cl_serve_server *srv = cl_serve_server_new(&cfg, reg, &err);
    if (!srv) {
        fprintf(stderr, "serve_testd: %s\n", err.msg);
        return 1;
    }
    char tmp[4096];
    snprintf(tmp, sizeof tmp, "%s.tmp", port_file);
    FILE *f = fopen(tmp, "w");
    if (!f || fprintf(f, "%d %d\n", cl_serve_server_grpc_port(srv), cl_serve_server_rest_port(srv)) < 0 ||
        fclose(f) != 0 || rename(tmp, port_file) != 0) {
        fprintf(stderr, "serve_testd: cannot write %s\n", port_file);
        return 1;
    }
    rc = cl_serve_server_run(srv, &err);
    if (rc != 0)
        fprintf(stderr, "serve_testd: %s\n", err.msg);
    cl_serve_server_free(srv);
    cl_serve_registry_free(reg);
    cl_serve_ssl_config_clear(&tls);
    fprintf(stderr, "serve_testd: stopped cleanly\n");
    return rc ? 1 : 0;
}
