/* client_int.h — internals shared by the client module's files: the connection object, raw
 * transport I/O (conn.c), the gRPC (grpc.c) and REST (rest.c) call paths. Not installed. */
#ifndef CLOISTER_CLIENT_INT_H
#define CLOISTER_CLIENT_INT_H

#include <openssl/ssl.h>

#include "cloister/client.h"

#define CL_CLIENT_MOD "client"

struct cl_client {
    char *host;
    int port;
    char *authority;   /* host:port as sent in :authority / Host */
    char *server_name; /* checked name; NULL with attestation or plaintext */
    bool rest, plaintext;
    int timeout_ms;
    size_t max_response;
    SSL_CTX *ctx;      /* NULL for plaintext */
    const cl_policy *policy;
    const cl_attest_verifier *verifier;
    void *vctx;        /* cl_ratls_verify_ctx, when attesting */
};

struct nghttp2_session;
struct cl_client_h2call;

struct cl_client_conn {
    cl_client *cl;
    int fd;
    SSL *ssl;
    bool broken;                /* transport failed: reconnect before the next call */
    bool attested;
    cl_attest_claims claims;
    cl_serve_code last_code;
    /* gRPC */
    struct nghttp2_session *h2;
    void *h2user;                  /* the session's callback state (grpc.c) */
    struct cl_client_h2call *call; /* the call in progress */
    /* REST: bytes read past the last response */
    uint8_t *rbuf;
    size_t rlen, rcap;
};

/* Transport (conn.c). write_all returns 0 or -1; read returns >0 bytes, 0 at a clean end of stream,
 * -1 on error (err says what; CL_E_IO, timeouts say so). */
int cl_client_io_write(cl_client_conn *c, const void *buf, size_t len, cl_err *err);
/* Sends what io_write buffered (TLS writes are buffered; every request must end with a flush). */
int cl_client_io_flush(cl_client_conn *c, cl_err *err);
ssize_t cl_client_io_read(cl_client_conn *c, void *buf, size_t cap, cl_err *err);
/* Formats the pending TLS error (alerts with hints, timeouts, closed connections). Returns -1. */
int cl_client_tls_error(cl_client_conn *c, const char *what, cl_err *err);
/* Makes sure the connection is usable (reconnects a broken one). */
int cl_client_conn_ready(cl_client_conn *c, cl_err *err);
/* Marks a transport failure: err keeps its message, the code becomes UNAVAILABLE (or DEADLINE_EXCEEDED
 * for timeouts) and the connection is reconnected before the next call. Returns -1. */
int cl_client_conn_fail(cl_client_conn *c, cl_err *err);

/* gRPC (grpc.c) */
int cl_client_h2_start(cl_client_conn *c, cl_err *err);
void cl_client_h2_end(cl_client_conn *c);
/* One unary call: sends the request (already framed: 5-byte gRPC header, then the message), returns
 * the unframed response message in *resp. */
int cl_client_grpc_call(cl_client_conn *c, const char *path, const uint8_t *framed, size_t framed_len,
                        uint8_t **resp, size_t *resp_len, cl_err *err);
int cl_client_grpc_predict(cl_client_conn *c, const cl_client_request *req, cl_client_response *resp, cl_err *err);
int cl_client_grpc_metadata(cl_client_conn *c, const char *model, int64_t version, cl_client_metadata *md,
                            cl_err *err);
int cl_client_grpc_status_call(cl_client_conn *c, const char *model, int64_t version, cl_client_version_status **out,
                               size_t *n, cl_err *err);

/* REST (rest.c) */
int cl_client_rest_predict(cl_client_conn *c, const cl_client_request *req, cl_client_response *resp, cl_err *err);
int cl_client_rest_metadata(cl_client_conn *c, const char *model, int64_t version, cl_client_metadata *md,
                            cl_err *err);
int cl_client_rest_status(cl_client_conn *c, const char *model, int64_t version, cl_client_version_status **out,
                          size_t *n, cl_err *err);

/* Sorting helpers (util.c) */
void cl_client_sort_outputs(cl_client_response *r);
void cl_client_sort_specs(cl_serve_tensor_spec *s, size_t n);

#endif
