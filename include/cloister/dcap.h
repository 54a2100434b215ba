/* cloister/dcap.h — offline Intel DCAP quote verification (part of the attest module): checks an
 * SGX/TDX ECDSA quote parsed by cl_attest_quote_parse against collateral (CRLs, TCB info, QE identity
 * and their issuer chains, as served by Intel's PCS) and a pinned Intel SGX Root CA, at a given time.
 * Collateral is given as a file or buffer; nothing is fetched from the network (no PCCS client).
 *
 * Ownership: cl_dcap_collateral_load* return an object owned by the caller, released with
 * cl_dcap_collateral_free. cl_dcap_verify borrows everything it is given. A cl_dcap_backend borrows
 * its root CA and collateral; they must outlive every verifier it is added to.
 * Thread-safety: a loaded collateral is immutable; cl_dcap_verify and cl_dcap_backend_verify only
 * read their inputs and may run from many threads at once on the same collateral and root. */
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

/* Verifies q (ECDSA-P256 SGX or TDX quote, v3/v4/v5) with the collateral at Unix time now:
 *  1. the PCK chain in the quote's certification data verifies to root_ca, with the root CA CRL and
 *     the PCK CRL checked (each valid at now);
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

#ifdef __cplusplus
}
#endif
#endif
