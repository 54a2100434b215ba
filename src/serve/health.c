/* health.c — the gRPC health checking protocol (grpc.health.v1.Health, proto/grpc/health/v1/health.proto)
 * as gRPC's default health service answers it, which TF Serving enables with
 * --enable_grpc_healthcheck_service: the whole server is the service "" and is SERVING while it runs
 * (NOT_SERVING once it stops); any other service name is unknown (Check: NOT_FOUND; Watch: a
 * SERVICE_UNKNOWN message, the stream kept open). This file decodes the request and encodes the
 * responses; grpc.c routes the calls and keeps Watch streams open. Thread-safe (no shared state). */
#include "serve_int.h"

#include <stdlib.h>
#include <string.h>

#include "grpc/health/v1/health.pb-c.h"

cl_serve_code cl_serve_health_request(const uint8_t *msg, size_t len, bool *known, cl_serve_status *st)
{
    Grpc__Health__V1__HealthCheckRequest *req = grpc__health__v1__health_check_request__unpack(NULL, len, msg);
    if (!req)
        return cl_serve_st_set(st, CL_SC_INVALID_ARGUMENT, "the request is not a valid HealthCheckRequest protobuf");
    *known = !req->service || !*req->service;
    grpc__health__v1__health_check_request__free_unpacked(req, NULL);
    return CL_SC_OK;
}

uint8_t *cl_serve_health_response(cl_serve_health_status status, size_t *len)
{
    Grpc__Health__V1__HealthCheckResponse resp = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    resp.status = (Grpc__Health__V1__HealthCheckResponse__ServingStatus)status;
    size_t n = grpc__health__v1__health_check_response__get_packed_size(&resp);
    uint8_t *buf = malloc(n ? n : 1);
    if (!buf)
        return NULL;
    *len = grpc__health__v1__health_check_response__pack(&resp, buf);
    return buf;
}
