/* cloister/policy.h — the interface of the policy module: which attested identities may receive
 * which secrets. A policy is JSON (schema and a complete example in docs/policy.md); it is
 * fail-closed: an empty policy, or one that does not parse or validate, grants nothing.
 *
 * Ownership: cl_policy objects are immutable once parsed and belong to the caller (cl_policy_free).
 * Thread-safety: all functions taking a const cl_policy * may run concurrently on the same policy;
 * to reload, build a new policy and swap pointers under the caller's own lock (see keyserver). */
#ifndef CLOISTER_POLICY_H
#define CLOISTER_POLICY_H

#include "cloister/attest.h"
#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_POLICY_MAX_IDENTITIES 256
#define CL_POLICY_MAX_SECRET_NAME 128

typedef struct cl_policy cl_policy;

/* Parses and validates a policy. Unknown fields, wrong types, bad hex and out-of-range numbers are
 * errors (CL_E_FORMAT) that name the JSON path, e.g. "identities[1].min_isv_svn". */
cl_policy *cl_policy_parse(const char *json, size_t len, cl_err *err);
cl_policy *cl_policy_load(const char *path, cl_err *err);
/* A policy with no identities: denies everything. */
cl_policy *cl_policy_deny_all(void);
void cl_policy_free(cl_policy *p);
size_t cl_policy_identity_count(const cl_policy *p);

typedef struct cl_policy_decision {
    bool allowed;               /* at least one identity matched */
    char identities[256];       /* names of the matching identities, comma-separated */
    char reason[768];           /* when denied: why each identity did not match */
} cl_policy_decision;

/* Matches verified claims against every identity. Returns 0 if at least one matched, -1 if not
 * (with d->reason). */
int cl_policy_evaluate(const cl_policy *p, const cl_attest_claims *c, cl_policy_decision *d);
/* Whether some identity matching `c` lists `secret`. */
bool cl_policy_grants(const cl_policy *p, const cl_attest_claims *c, const char *secret);
/* The secret served over Gramine's secret_prov protocol to `c`: the first matching identity's
 * "secret_prov" entry, or its only secret. NULL if none; the pointer lives as long as the policy. */
const char *cl_policy_secret_prov(const cl_policy *p, const cl_attest_claims *c);
/* Whether a secret name is acceptable ([A-Za-z0-9._:/-], 1..128 characters). */
bool cl_policy_secret_name_valid(const char *name);

#ifdef __cplusplus
}
#endif
#endif
