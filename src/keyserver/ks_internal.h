/* ks_internal.h — what the keyserver module's files share (not a public interface): the attested
 * connection server.c hands to release.c, exact-length TLS reads and writes, big-endian integers. */
#ifndef CLOISTER_KS_INTERNAL_H
#define CLOISTER_KS_INTERNAL_H

#include <openssl/ssl.h>

#include "cloister/keyserver.h"

/* release.c: the server-wide budget of locked memory that releases reserve their buffer from.
 * Thread-safe. per_conn/total 0 take the defaults of keyserver.h; a reservation that would exceed the
 * total waits up to wait_ms (-1: 2000) for others to finish, then fails. */
typedef struct ks_budget ks_budget;
ks_budget *ks_budget_new(size_t per_conn, size_t total, int wait_ms, cl_err *err);
void ks_budget_free(ks_budget *b);
/* 0 and n bytes reserved, or -1 (*in_use, when not NULL, says how much was held) */
int ks_budget_reserve(ks_budget *b, size_t n, size_t *in_use);
void ks_budget_release(ks_budget *b, size_t n);
void ks_budget_stats(ks_budget *b, size_t *in_use, size_t *peak);

/* An attested connection: set up by server.c (peer, policy snapshot, claims and decision from the
 * handshake, the server's budget), read and answered by release.c. Everything it points to outlives
 * it. */
typedef struct ks_conn {
    cl_store *store;
    ks_budget *budget;       /* the server's; NULL: a process-wide one with the default limits */
    struct policy_ref *pol;  /* server.c's reference that keeps `policy` alive */
    const cl_policy *policy; /* the snapshot this connection is decided by */
    char peer[64];
    bool have_claims;
    cl_attest_claims claims;
    cl_policy_decision decision;
} ks_conn;

/* release.c: parses a native request ("CLKS1\0" already read) from `rd` (0 when all n bytes were read):
 * 0 with *count names, or -1 with what is wrong in `detail` and the names parsed before it (*parsed).
 * `names` holds CL_KS_MAX_NAMES entries. */
#define KS_DETAIL_MAX 160
typedef int (*ks_read_fn)(void *ctx, void *buf, size_t n);
int ks_parse_native_request(ks_read_fn rd, void *ctx, char names[][CL_POLICY_MAX_SECRET_NAME + 1], size_t *count,
                            size_t *parsed, char detail[KS_DETAIL_MAX]);
/* client.c: reads a native response whose first KS_RESPONSE_HEAD bytes ("CLKS1\0", status, 16-bit
 * count or reason code) are `head`, the rest from `rd`, for the `n_names` names asked. 0: every secret
 * granted (in res, secure memory); 1: some denied (err CL_E_DENIED; res lists them all, the granted
 * with values); -1: err says why (CL_E_DENIED for a denial frame, with its reason code turned into a
 * message; CL_E_IO for a busy server), and res holds whatever was allocated (cl_provision_result_free). */
#define KS_RESPONSE_HEAD 9
int ks_read_native_response(const uint8_t head[KS_RESPONSE_HEAD], ks_read_fn rd, void *ctx, const char *server,
                            const char *const *names, size_t n_names, cl_provision_result *res, cl_err *err);
/* release.c: reads one request from an attested connection and answers it (audited). */
void ks_serve_request(ks_conn *c, SSL *ssl);
/* release.c: audits a refused connection (decision "deny") with its reason, whole. */
void ks_audit_refusal(ks_conn *c, const char *protocol, const char *reason);

/* 0 when all n bytes moved; -1 otherwise (*ssl_error gets SSL_get_error's value, or 0 at EOF). */
int cl_ks_ssl_read_full(SSL *ssl, void *buf, size_t n, int *ssl_error);
int cl_ks_ssl_write_full(SSL *ssl, const void *buf, size_t n);

static inline void cl_ks_put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static inline void cl_ks_put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}
static inline uint16_t cl_ks_get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t cl_ks_get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

#endif
