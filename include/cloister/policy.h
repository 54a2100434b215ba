/* cloister/policy.h — the interface of the policy module: which attested identities may receive
 * which secrets. A policy is JSON (schema and a complete example in docs/policy.md); it is
 * fail-closed: an empty policy, or one that does not parse or validate, grants nothing.
 *
 * Ownership: cl_policy objects are immutable once parsed and belong to the caller (cl_policy_free);
 * so do decisions (cl_policy_decision_clear) and the text of cl_policy_describe (free).
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
#define CL_POLICY_MAX_NAME 63          /* identity name */
#define CL_POLICY_MAX_MEASUREMENTS 32  /* values of one measurement list (mrenclave, mrtd, rtmr1, ...) */
#define CL_POLICY_MAX_SECRETS 1024     /* secrets of one identity */
#define CL_POLICY_MAX_FILE (4 << 20)   /* a policy file's size */

typedef struct cl_policy cl_policy;

/* Parses and validates a policy with the strict JSON reader (cloister/json.h: repeated keys,
 * trailing data, \u0000 and bad UTF-8 refused with line and column). Unknown fields, wrong types,
 * bad hex, out-of-range numbers, lists longer than their bound and identities that would match too
 * much (a TDX identity without MRTD or without a decision for each RTMR, SGX and TDX fields mixed)
 * are errors (CL_E_FORMAT; CL_E_VERSION for another version) that name the JSON path, e.g.
 * "identities[1].rtmr2". Every list append checks its bound. */
cl_policy *cl_policy_parse(const char *json, size_t len, cl_err *err);
cl_policy *cl_policy_load(const char *path, cl_err *err);
/* A policy with no identities: denies everything. */
cl_policy *cl_policy_deny_all(void);
void cl_policy_free(cl_policy *p);
size_t cl_policy_identity_count(const cl_policy *p);
/* A human-readable summary, one line per identity (its kind, evidence types, what it pins, its
 * secrets), plus warnings for RTMRs left at "any". malloc()ed; NULL when out of memory. */
char *cl_policy_describe(const cl_policy *p);

/* A decision owns its two strings (nothing is ever cut). Start from {0}; cl_policy_evaluate releases
 * what a decision held before filling it again; cl_policy_decision_clear releases it for good. */
/* Why a client was refused, as a short code the key server may tell it (docs/keyserver.md, "Denial"):
 * the kind of check that failed, never the values the policy expects. Values are on the wire (16 bits):
 * never renumber. For a policy refusal it is the failure of the identity that came closest (the later
 * the check in the order evidence type, measurement, SVN, debug, TCB status, the closer). */
typedef enum cl_policy_deny {
    CL_DENY_NONE = 0,              /* not denied (or no reason known: "unspecified") */
    CL_DENY_EVIDENCE_INVALID = 1,  /* the evidence did not verify (signature, quoting key, binding to the TLS key) */
    CL_DENY_EVIDENCE_TYPE = 2,     /* no identity accepts this evidence type (sim, sgx-dcap, tdx-dcap) or TEE kind */
    CL_DENY_MEASUREMENT = 3,       /* mrenclave, mrsigner, isv_prod_id or a TDX measurement is not one allowed */
    CL_DENY_SVN = 4,               /* isv_svn below the identity's minimum */
    CL_DENY_DEBUG = 5,             /* a debug enclave or TD where the identity does not allow debug */
    CL_DENY_TCB_STATUS = 6,        /* the platform's TCB status is not one the identity accepts */
    CL_DENY_COLLATERAL = 7,        /* the key server could not check the evidence: its collateral is missing or out of date */
    CL_DENY_POLICY_EMPTY = 8,      /* the policy has no identity (deny-all: none loaded, or an invalid one) */
} cl_policy_deny;
#define CL_DENY_MAX CL_DENY_POLICY_EMPTY
/* The code's name ("tcb_status_not_allowed"), "unspecified" for 0 and NULL for codes beyond CL_DENY_MAX. */
const char *cl_policy_deny_name(unsigned code);

typedef struct cl_policy_decision {
    bool allowed;      /* at least one identity matched */
    cl_policy_deny deny; /* when denied: the closest identity's failed check (CL_DENY_NONE when allowed) */
    char *identities;  /* names of the matching identities, comma-separated ("" when none) */
    char *reason;      /* when denied: why each identity did not match ("" when allowed) */
} cl_policy_decision;

void cl_policy_decision_clear(cl_policy_decision *d);

/* Matches verified claims against every identity. Returns 0 if at least one matched, -1 if not
 * (with d->reason). When memory runs out it denies (-1) with both strings NULL. */
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
