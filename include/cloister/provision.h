/* cloister/provision.h — the key server's client side, part of the keyserver module: the wire
 * protocols' constants (cloister's native protocol and Gramine's secret_prov v1) and the provisioning
 * client with retries and fail-over over a list of key servers (`cloister provision`, and the model
 * server's key source in repo). Split from keyserver.h so that a client of the key server does not
 * depend on the store and the server.
 *
 * Ownership: a cl_provision_result owns its secrets, whose values are in secure memory (cl_secmem_*),
 * released with cl_provision_result_free. Options are borrowed for the duration of the call (for a
 * cl_provision_client, for its whole life).
 * Thread-safety: cl_provision_fetch is thread-safe given distinct results; cl_provision_client_fetch
 * may run concurrently on one client. */
#ifndef CLOISTER_PROVISION_H
#define CLOISTER_PROVISION_H

#include "cloister/common.h"
#include "cloister/policy.h"
#include "cloister/ratls.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_KS_DEFAULT_PORT 4433

/* ---------------------------------------------------------------- wire protocols */

#define CL_KS_MAGIC "CLKS1" /* sent with its NUL: 6 bytes */
/* native response status: 0 handled, 2 malformed request, 3 busy (locked-memory budget; retry), 4 denied:
 * the client's evidence did not verify or the policy matched no identity; the two bytes that follow
 * are a cl_policy_deny reason code (big-endian) and nothing else is sent (docs/keyserver.md) */
#define CL_KS_STATUS_OK 0
#define CL_KS_STATUS_MALFORMED 2
#define CL_KS_STATUS_BUSY 3
#define CL_KS_STATUS_DENIED 4
#define CL_KS_MAX_NAMES 64
#define CL_SECRET_PROV_REQUEST "SECRET_PROVISION_RA_TLS_REQUEST_V1"   /* sent with its NUL */
#define CL_SECRET_PROV_RESPONSE "SECRET_PROVISION_RA_TLS_RESPONSE_V1:" /* sent with its NUL */

/* ---------------------------------------------------------------- client */

typedef struct cl_secret {
    char name[CL_POLICY_MAX_SECRET_NAME + 1];
    bool granted;
    uint8_t *value; /* secure memory; NULL unless granted */
    size_t len;
} cl_secret;

typedef struct cl_provision_result {
    cl_secret *secrets;
    size_t count;
    char server[128]; /* the key server that answered */
} cl_provision_result;

typedef struct cl_provision_options {
    const cl_stop *stop;         /* optional: once raised, every wait (connect, TLS I/O, backoff) ends and the
                                    fetch fails at once (cl_stop_raised tells the caller why) */
    const char *const *servers;  /* "HOST:PORT", tried in order, round after round */
    size_t server_count;
    const char *ca_file;         /* CA that issued the key servers' certificates */
    const char *server_name;     /* name to check in the server certificate (default: each HOST) */
    const cl_ratls_identity *identity; /* our RA-TLS identity (client certificate) */
    const char *const *names;    /* secrets to ask for (native protocol) */
    size_t name_count;
    bool secret_prov;            /* speak Gramine's secret_prov v1 instead (one unnamed secret) */
    int attempts;                /* rounds over the server list (default 5) */
    int backoff_ms;              /* first delay between rounds (default 200); see cl_provision_backoff_ms */
    int timeout_ms;              /* connect and I/O timeout (default 10000) */
} cl_provision_options;

/* The retry schedule. Delays between rounds double from backoff_ms up to CL_KS_BACKOFF_CAP_MS (or
 * backoff_ms when that is larger), each shortened at random by up to half; no delay is longer than the
 * cap. A server whose name does not exist (EAI_NONAME) is not asked again; one whose resolver cannot
 * answer (EAI_AGAIN) is retried with the others for CL_KS_RESOLVE_RETRY_MS, then dropped too; when no
 * server is left, the fetch fails at once. */
#define CL_KS_BACKOFF_CAP_MS 5000
#define CL_KS_RESOLVE_RETRY_MS 30000
/* The delay before round `round` (1 = the first retry) with the given random byte (0..255). */
int cl_provision_backoff_ms(int first_ms, int round, uint8_t random_byte);

/* Connects, retrying with backoff on network and TLS errors, and returns what the server granted.
 * Returns 0 only if every requested secret was granted; CL_E_DENIED (no retry) if the server refused
 * the attestation (the message names the denial frame's reason code, docs/keyserver.md "Denial") or
 * some secret (the result still lists what was granted). With o->stop raised, fails at once. The
 * servers' HOST:PORT syntax, the CA file and the names are checked before anything is sent. */
int cl_provision_fetch(const cl_provision_options *o, cl_provision_result *res, cl_err *err);
void cl_provision_result_free(cl_provision_result *res);

/* A reusable client (one TLS context, CA and identity loaded once) for callers that fetch more than
 * once. The options and everything they point to are borrowed and must outlive the client.
 * cl_provision_client_fetch may run concurrently on one client. */
typedef struct cl_provision_client cl_provision_client;
cl_provision_client *cl_provision_client_new(const cl_provision_options *o, cl_err *err);
int cl_provision_client_fetch(cl_provision_client *c, cl_provision_result *res, cl_err *err);
void cl_provision_client_free(cl_provision_client *c);

#ifdef __cplusplus
}
#endif
#endif
