/* cloister/dcap.h — Intel DCAP quote verification (part of the attest module): checks an SGX/TDX
 * ECDSA quote parsed by cl_attest_quote_parse against collateral (CRLs, TCB info, QE identity and
 * their issuer chains, as served by Intel's PCS or a PCCS) and a pinned Intel SGX Root CA, at a given
 * time. Collateral comes from files, or from a PCCS/PCS fetched on demand per FMSPC and PCK CA and
 * cached on disk (cl_dcap_source); the cache is untrusted: every use verifies everything.
 *
 * Ownership: cl_dcap_collateral_load* / _from_pccs return an object owned by the caller, released
 * with cl_dcap_collateral_free. cl_dcap_verify borrows everything it is given. A cl_dcap_backend
 * borrows its root CA and collateral; they must outlive every verifier it is added to. A
 * cl_dcap_source owns what it loads and fetches; it must outlive every verifier it is added to.
 * Thread-safety: a loaded collateral is immutable; cl_dcap_verify and cl_dcap_backend_verify only
 * read their inputs and may run from many threads at once on the same collateral and root.
 * cl_dcap_source_verify (and its back end) may run from many threads at once, also while another
 * thread calls cl_dcap_source_reload. */
#ifndef CLOISTER_DCAP_H
#define CLOISTER_DCAP_H

#include <stdint.h>

#include <openssl/x509.h>

#include "cloister/attest.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_DCAP_MAX_ADVISORIES 32

typedef struct cl_dcap_collateral cl_dcap_collateral;

/* Loads collateral JSON (fields pck_crl_issuer_chain, tcb_info_issuer_chain, qe_identity_issuer_chain:
 * PEM; root_ca_crl, pck_crl: hex DER; tcb_info, qe_identity: the exact signed JSON text;
 * tcb_info_signature, qe_identity_signature: hex raw r||s). Every field is required and decoded here;
 * nothing is trusted until cl_dcap_verify. CL_E_FORMAT names the bad field. */
cl_dcap_collateral *cl_dcap_collateral_load(const char *path, cl_err *err);
cl_dcap_collateral *cl_dcap_collateral_load_buffer(const char *json, size_t len, cl_err *err);
void cl_dcap_collateral_free(cl_dcap_collateral *col);

/* The answers of a PCCS or Intel PCS (API v3 or v4), as served:
 *  - TCB info (/tcb?fmspc=) and QE identity (/qe/identity) bodies: {"tcbInfo"|"enclaveIdentity":
 *    {...}, "signature": "<128 hex>"}; the signature covers the exact bytes of that value, which are
 *    kept as served (never re-serialised);
 *  - their issuer chains: the response header's value (TCB-Info-Issuer-Chain in v4,
 *    SGX-TCB-Info-Issuer-Chain in v3; SGX-Enclave-Identity-Issuer-Chain), percent-encoded PEM;
 *  - the PCK CRL (/pckcrl?ca=) and its SGX-PCK-CRL-Issuer-Chain header; the root CA CRL (/rootcacrl
 *    or the root CA's distribution point). A CRL may be DER, PEM or hex of the DER.
 * Lengths are byte counts; nothing needs a NUL. CL_E_FORMAT names the bad part. */
typedef struct cl_dcap_pccs_answers {
    const char *tcb_info;
    size_t tcb_info_len;
    const char *tcb_info_chain;
    size_t tcb_info_chain_len;
    const char *qe_identity;
    size_t qe_identity_len;
    const char *qe_identity_chain;
    size_t qe_identity_chain_len;
    const uint8_t *pck_crl;
    size_t pck_crl_len;
    const char *pck_crl_chain;
    size_t pck_crl_chain_len;
    const uint8_t *root_crl;
    size_t root_crl_len;
} cl_dcap_pccs_answers;
cl_dcap_collateral *cl_dcap_collateral_from_pccs(const cl_dcap_pccs_answers *a, cl_err *err);

/* The collateral as the JSON file format above (malloc()ed, NUL-terminated; *len without it): what
 * the on-disk cache holds. NULL when out of memory. */
char *cl_dcap_collateral_to_json(const cl_dcap_collateral *col, size_t *len);

/* What a collateral set says it is for and how long it says it is valid, read without verifying
 * anything (for choosing and refreshing collateral; cl_dcap_verify checks all of it). */
typedef struct cl_dcap_collateral_info {
    char tee[4];         /* "SGX" or "TDX": the TCB info's id */
    char fmspc_hex[13];  /* the TCB info's FMSPC, upper case */
    char ca[10];         /* "processor" or "platform": the CA that issued the PCK CRL */
    int64_t issued;      /* the older issueDate of the TCB info and QE identity (Unix time) */
    int64_t next_update; /* the earliest nextUpdate of its parts (Unix time) */
} cl_dcap_collateral_info;
const cl_dcap_collateral_info *cl_dcap_collateral_info_get(const cl_dcap_collateral *col);

/* Reads the Intel SGX Root CA certificate (DER or PEM). */
X509 *cl_dcap_root_ca_load(const char *path, cl_err *err);

typedef struct cl_dcap_result {
    char evidence_type[16]; /* "sgx-dcap" or "tdx-dcap" */
    char tcb_status[48];    /* Intel's name, after merging the QE (and TDX module) status */
    char platform_tcb_status[48]; /* the TCB info level matched by the platform alone */
    char qe_tcb_status[48];       /* the QE identity level matched by the QE's ISVSVN */
    char advisories[CL_DCAP_MAX_ADVISORIES][32]; /* advisory IDs of the matched levels, no duplicates */
    size_t n_advisories;
    uint8_t fmspc[6];
    char fmspc_hex[13];     /* upper case, as in TCB info */
    bool debug;
} cl_dcap_result;

/* Verifies q (ECDSA-P256 SGX or TDX quote, v3/v4/v5) with the collateral at Unix time now. Every
 * certificate chain (the quote's PCK chain, the TCB info, QE identity and PCK CRL issuer chains) must
 * verify to root_ca, may hold only certificates on that path, and any root certificate it carries
 * must be root_ca itself, byte for byte (not merely one with its name or key).
 *  1. the PCK chain in the quote's certification data verifies to root_ca, with the root CA CRL and
 *     the PCK CRL checked (each valid at now); the PCK CRL issuer chain verifies and its leaf
 *     issued the PCK CRL;
 *  2. the QE report is signed by the PCK leaf key; 3. its report_data binds the attestation key and
 *     the QE authentication data; 4. the quote is signed by the attestation key;
 *  5. TCB info: issuer chain (with CRL), signature over the exact text, issueDate <= now <=
 *     nextUpdate, FMSPC/PCE ID equal the PCK certificate's, first matching TCB level (SGX components,
 *     PCESVN and for TDX the TEE TCB SVN and the TDX module identity);
 *  6. QE identity: issuer chain, signature, dates, MRSIGNER/ISVPRODID/MISCSELECT/ATTRIBUTES, ISVSVN level.
 * Returns 0 with out filled (statuses other than Revoked are reported, not judged: that is the
 * policy's job), or -1: CL_E_AUTH for a bad signature, an untrusted or revoked chain, a certificate in
 * the wrong role or a Revoked TCB; CL_E_EXPIRED for a certificate, CRL, TCB info or QE identity not
 * valid at now; CL_E_DENIED when no TCB level matches; CL_E_INVALID for collateral of another platform
 * or TEE; CL_E_FORMAT/CL_E_UNSUPPORTED for evidence or collateral it cannot read. */
int cl_dcap_verify(const cl_attest_quote *q, const cl_dcap_collateral *col, X509 *root_ca, int64_t now_unix,
                   cl_dcap_result *out, cl_err *err);

/* Context of the verifier back end. now_unix == 0 means the current time (time(NULL)). */
typedef struct cl_dcap_backend {
    X509 *root_ca;                  /* borrowed */
    const cl_dcap_collateral *col;  /* borrowed */
    int64_t now_unix;               /* test clock override; 0 = real time */
} cl_dcap_backend;

/* A cl_attest_backend_fn: cl_attest_verifier_add_backend(v, "dcap", cl_dcap_backend_verify, &ctx, err).
 * Fills claims->evidence_type and claims->tcb_status; fails closed on any error or unknown status. */
int cl_dcap_backend_verify(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims, cl_err *err);

/* ---------------------------------------------------------------- collateral sources */

/* Where collateral comes from, for the key server and the clients alike (one option set:
 * --dcap-root-ca, --dcap-collateral, --pccs-url, --pccs-api-version, --pccs-ca, --pccs-timeout-ms,
 * --collateral-cache, --collateral-max-age, --collateral-refresh). */
typedef struct cl_dcap_config {
    const char *root_ca_file;                /* the Intel SGX Root CA (required) */
    const char *const *collateral_files;     /* collateral JSON files, any number */
    size_t collateral_count;
    const char *pccs_url;    /* PCCS or PCS base, e.g. https://pccs:8081 or https://api.trustedservices.intel.com */
    int pccs_api_version;    /* 3 or 4 (0: 4) */
    const char *pccs_ca_file; /* CA of the PCCS's TLS certificate (default: the system's) */
    int pccs_timeout_ms;      /* bound on one whole collateral fetch (0: 5000) */
    const char *cache_dir;    /* on-disk cache of fetched collateral (NULL: memory only) */
    int64_t max_age_s;        /* refuse collateral issued longer ago than this (0: no limit beyond nextUpdate) */
    int64_t refresh_s;        /* fetch anew this long before nextUpdate (0: 86400); a failed fetch is
                                 retried after min(refresh_s / 24, 60) s */
    int64_t now_unix;         /* test clock (0: time(NULL)) */
} cl_dcap_config;

typedef struct cl_dcap_source cl_dcap_source;

/* Loads the root CA and collateral files (all or none); checks the PCCS options. */
cl_dcap_source *cl_dcap_source_new(const cl_dcap_config *cfg, cl_err *err);
void cl_dcap_source_free(cl_dcap_source *s);
/* Re-reads the collateral files (all or none: on failure the ones loaded before stay in use) and
 * forgets fetched collateral in memory (the disk cache is read again, and verified, on next use).
 * A verification in progress keeps the collateral it started with. */
int cl_dcap_source_reload(cl_dcap_source *s, cl_err *err);
/* The test clock (0: the real one). */
void cl_dcap_source_set_time(cl_dcap_source *s, int64_t now_unix);
/* Verifies q with the collateral for its TEE, FMSPC and PCK CA: a matching file (when it has expired
 * and a PCCS is configured, the PCCS instead), else the cached or fetched PCCS collateral (fetched when missing or within refresh_s of nextUpdate; a failed fetch
 * keeps the cached collateral, which is then used until its nextUpdate). CL_E_INVALID when no file
 * matches and no PCCS is configured, CL_E_IO when the PCCS cannot be reached (or answers badly) and
 * nothing usable is cached; otherwise as cl_dcap_verify, plus CL_E_EXPIRED for collateral issued
 * longer than max_age_s ago. */
int cl_dcap_source_verify(cl_dcap_source *s, const cl_attest_quote *q, cl_dcap_result *out, cl_err *err);
/* Counters for tests and logs. */
typedef struct cl_dcap_source_stats {
    uint64_t fetches, fetch_failures, cache_reads, cache_writes;
} cl_dcap_source_stats;
void cl_dcap_source_stats_get(cl_dcap_source *s, cl_dcap_source_stats *out);
/* A cl_attest_backend_fn over a source (ctx = the cl_dcap_source). */
int cl_dcap_source_backend(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
