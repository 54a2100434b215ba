/* cloister/attest.h — the interface of the attest module: Intel SGX/TDX quote parsing, evidence
 * providers (sim, gramine, tsm) that produce quotes carrying 64 bytes of caller-chosen report data,
 * and the pluggable evidence verifier that turns a quote into trusted claims.
 *
 * Ownership: objects returned by *_new belong to the caller and are released with the matching
 * *_free. A parsed quote (cl_attest_quote) points into the caller's buffer, which must outlive it.
 * Thread-safety: cl_attest_quote_parse is pure. A provider may be used by one thread at a time
 * (the gramine/tsm providers write then read files). A verifier is configured by one thread, then
 * cl_attest_verify may be called from any number of threads at once (it only reads the verifier).
 *
 * THE SIM PROVIDER IS INSECURE. It signs quotes with a software "simulated quoting key"; anyone with
 * that key can forge any measurement. It exists for development and tests. A verifier accepts sim
 * evidence only after cl_attest_verifier_trust_sim() names that key's certificate, and claims from
 * it carry insecure = true and evidence type "sim" so policies and audit logs can tell. */
#ifndef CLOISTER_ATTEST_H
#define CLOISTER_ATTEST_H

#include <openssl/evp.h>
#include <openssl/x509.h>

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_ATTEST_REPORT_DATA_LEN 64
#define CL_ATTEST_QUOTE_MAX (64 * 1024) /* larger evidence is refused */

/* ---------------------------------------------------------------- quotes */

enum {
    CL_QUOTE_TEE_SGX = 0x00000000,
    CL_QUOTE_TEE_TDX = 0x00000081,
};

typedef enum cl_quote_body_kind {
    CL_QUOTE_BODY_SGX = 1,  /* 384-byte SGX enclave report body */
    CL_QUOTE_BODY_TD10 = 2, /* 584-byte TDX 1.0 TD report body */
    CL_QUOTE_BODY_TD15 = 3, /* 648-byte TDX 1.5 TD report body */
} cl_quote_body_kind;

/* SGX attributes.flags bits (first byte of attributes) */
#define CL_SGX_FLAG_DEBUG 0x02
#define CL_SGX_FLAG_MODE64 0x04
/* TDX TD attributes: byte 0 bit 0 is TUD.DEBUG (the host can read and change the TD's state) */
#define CL_TDX_ATTR_DEBUG 0x01
#define CL_TDX_MEAS_LEN 48 /* MRTD, RTMRs, MRCONFIGID, ...: SHA-384 sized */

/* A parsed Intel quote (v3 SGX; v4 SGX/TDX; v5 TDX). All multi-byte integers are little-endian on
 * the wire and converted here. Pointers point into the buffer given to cl_attest_quote_parse. */
typedef struct cl_attest_quote {
    /* header (48 bytes) */
    uint16_t version;      /* 3, 4 or 5 */
    uint16_t att_key_type; /* 2 = ECDSA-256-with-P-256, 3 = ECDSA-384-with-P-384 */
    uint32_t tee_type;     /* CL_QUOTE_TEE_SGX or CL_QUOTE_TEE_TDX */
    uint16_t qe_svn, pce_svn;
    uint8_t qe_vendor_id[16];
    uint8_t user_data[20];
    cl_quote_body_kind body_kind;
    /* SGX report body (body_kind == CL_QUOTE_BODY_SGX) */
    uint8_t cpu_svn[16];
    uint32_t misc_select;
    uint8_t attributes[16]; /* flags (8 bytes) then xfrm (8 bytes) */
    uint8_t mr_enclave[32];
    uint8_t mr_signer[32];
    uint16_t isv_prod_id;
    uint16_t isv_svn;
    /* TD report body (TD10/TD15), every field in wire order (Intel TDX DCAP quote layout) */
    uint8_t tee_tcb_svn[16];
    uint8_t mr_seam[48];         /* the TDX module's measurement */
    uint8_t mr_signer_seam[48];  /* its signer (zero for Intel's module) */
    uint8_t seam_attributes[8];
    uint8_t td_attributes[8];    /* byte 0 bit 0: TUD.DEBUG */
    uint8_t xfam[8];
    uint8_t mr_td[48];           /* the TD's initial contents (firmware) */
    uint8_t mr_config_id[48], mr_owner[48], mr_owner_config[48];
    uint8_t rtmr[4][48];         /* run-time measurement registers RTMR0..RTMR3 */
    uint8_t tee_tcb_svn2[16];    /* TD15 only (zero for TD10) */
    uint8_t mr_servicetd[48];    /* TD15 only */
    /* both */
    uint8_t report_data[CL_ATTEST_REPORT_DATA_LEN];
    bool debug; /* SGX DEBUG attribute, or TDX TUD.DEBUG */
    /* what the attestation key signs: header and body */
    const uint8_t *signed_data;
    size_t signed_len;
    /* ECDSA-256 quote signature data */
    const uint8_t *signature;  /* 64 bytes r||s */
    const uint8_t *attest_key; /* 64 bytes x||y */
    uint16_t cert_type;        /* outer certification data type (v3: 5 = PCK chain; v4+: 6 = QE report) */
    const uint8_t *cert_data;
    size_t cert_len;
    size_t quote_len; /* bytes up to the end of the signature data */
    size_t padding;   /* trailing zero bytes after it (some platforms pad) */
} cl_attest_quote;

/* Parses an SGX/TDX quote. Every length is checked against the buffer; unknown versions, body types
 * or key types fail with CL_E_FORMAT/CL_E_VERSION/CL_E_UNSUPPORTED; trailing bytes are accepted only
 * if they are all zero (CL_E_TRAILING otherwise). Does not verify any signature. */
int cl_attest_quote_parse(const uint8_t *buf, size_t len, cl_attest_quote *q, cl_err *err);

/* ---------------------------------------------------------------- providers */

typedef enum cl_attest_kind {
    CL_ATTEST_SIM = 0,
    CL_ATTEST_GRAMINE,
    CL_ATTEST_TSM,
} cl_attest_kind;

/* Parses "sim", "gramine", "tsm". */
int cl_attest_kind_parse(const char *name, cl_attest_kind *out, cl_err *err);
const char *cl_attest_kind_name(cl_attest_kind kind);

typedef struct cl_attest_provider_config {
    cl_attest_kind kind;
    /* gramine: directory holding user_report_data, quote, attestation_type (default /dev/attestation).
     * tsm: the configfs-tsm report directory (default /sys/kernel/config/tsm/report). */
    const char *root;
    /* sim: the simulated quoting key, either loaded (borrowed; up-ref'ed) or from a PEM file. */
    EVP_PKEY *sim_qe_key;
    const char *sim_qe_key_file;
    /* sim identity overrides (for tests and demos); zero/NULL means the default:
     * MRENCLAVE = SHA-256 of /proc/self/exe; MRSIGNER = SHA-256("cloister simulated signer");
     * ISV_PROD_ID = 0; ISV_SVN = 0; not debug. */
    const uint8_t *sim_mrenclave; /* 32 bytes */
    const uint8_t *sim_mrsigner;  /* 32 bytes */
    uint16_t sim_isv_prod_id;
    uint16_t sim_isv_svn;
    bool sim_debug;
    /* sim TDX mode: present a trust domain (a v4 quote with a TD 1.0 body, tee_type TDX) instead of
     * an enclave. MRTD = SHA-384 of /proc/self/exe unless given; RTMRs zero unless given; sim_debug
     * sets TUD.DEBUG. Just as INSECURE as the SGX sim. */
    bool sim_tdx;
    const uint8_t *sim_mrtd;    /* 48 bytes */
    const uint8_t *sim_rtmr[4]; /* 48 bytes each; NULL: zero */
} cl_attest_provider_config;

typedef struct cl_attest_provider cl_attest_provider;

/* Creates a provider. The sim provider logs a loud warning that it is insecure. */
cl_attest_provider *cl_attest_provider_new(const cl_attest_provider_config *cfg, cl_err *err);
void cl_attest_provider_free(cl_attest_provider *p);
cl_attest_kind cl_attest_provider_kind(const cl_attest_provider *p);
/* Produces a quote whose report_data equals `report_data`. *quote is malloc()ed. */
int cl_attest_provider_quote(cl_attest_provider *p, const uint8_t report_data[CL_ATTEST_REPORT_DATA_LEN],
                             uint8_t **quote, size_t *quote_len, cl_err *err);

/* The identity a sim provider with this configuration presents (MRENCLAVE etc., or with sim_tdx the
 * TD report fields and body_kind CL_QUOTE_BODY_TD10), without signing. */
int cl_attest_sim_identity(const cl_attest_provider_config *cfg, cl_attest_quote *out, cl_err *err);
/* SHA-256 of a file (used for the sim MRENCLAVE of /proc/self/exe). */
int cl_attest_file_sha256(const char *path, uint8_t out[32], cl_err *err);
/* SHA-384 of a file (the sim MRTD of /proc/self/exe). */
int cl_attest_file_sha384(const char *path, uint8_t out[CL_TDX_MEAS_LEN], cl_err *err);
/* One RTMR extend as the TDX module does it (TDG.MR.RTMR.EXTEND):
 * rtmr = SHA-384(rtmr || digest). An RTMR starts as 48 zero bytes at TD creation. */
int cl_attest_rtmr_extend(uint8_t rtmr[CL_TDX_MEAS_LEN], const uint8_t digest[CL_TDX_MEAS_LEN], cl_err *err);

/* Creates a simulated quoting key (ECDSA P-256) and a self-signed certificate for it, written to
 * dir/sim_qe_key.pem (0600) and dir/sim_qe_cert.pem. Refuses to overwrite unless force. */
int cl_attest_sim_qe_create(const char *dir, bool force, cl_err *err);
/* In-memory variant for tests: a new key and its certificate. */
int cl_attest_sim_qe_generate(EVP_PKEY **key, X509 **cert, cl_err *err);

/* ---------------------------------------------------------------- verification */

/* The identity of a TDX trust domain, from its TD report body (all zero in SGX claims). Matching a
 * TD needs MRTD (the firmware) and RTMR0..3 (what the firmware and the guest measured after it:
 * configuration, kernel, initrd and command line, application); docs/attest.md, "TDX". */
typedef struct cl_attest_tdx_identity {
    uint8_t mr_td[CL_TDX_MEAS_LEN];
    uint8_t rtmr[4][CL_TDX_MEAS_LEN];
    uint8_t mr_config_id[CL_TDX_MEAS_LEN]; /* set by the host at TD creation (zero if unused) */
    uint8_t mr_owner[CL_TDX_MEAS_LEN];
    uint8_t mr_owner_config[CL_TDX_MEAS_LEN];
    uint8_t td_attributes[8];              /* as in the quote; CL_TDX_ATTR_DEBUG in byte 0 */
    uint8_t xfam[8];                       /* as in the quote (little-endian bit mask) */
    uint8_t mr_seam[CL_TDX_MEAS_LEN];      /* the TDX module */
    uint8_t mr_signer_seam[CL_TDX_MEAS_LEN];
    uint8_t seam_attributes[8];
    uint8_t tee_tcb_svn[16];
    bool td15;                             /* TD 1.5 body: the two fields below are set */
    uint8_t tee_tcb_svn2[16];
    uint8_t mr_servicetd[CL_TDX_MEAS_LEN];
} cl_attest_tdx_identity;

/* What verified evidence says about the attester. tee_type says which identity is filled: SGX
 * (mr_enclave, mr_signer, isv_prod_id, isv_svn) or TDX (tdx); the other is all zero. */
typedef struct cl_attest_claims {
    char evidence_type[16]; /* "sim", "sgx-dcap", "tdx-dcap", ... */
    bool insecure;          /* true for sim evidence */
    uint32_t tee_type;      /* CL_QUOTE_TEE_SGX or CL_QUOTE_TEE_TDX */
    uint8_t mr_enclave[32]; /* SGX only */
    uint8_t mr_signer[32];  /* SGX only */
    uint16_t isv_prod_id;   /* SGX only */
    uint16_t isv_svn;       /* SGX only */
    cl_attest_tdx_identity tdx; /* TDX only */
    bool debug;             /* SGX DEBUG attribute or TDX TUD.DEBUG */
    char tcb_status[48];    /* "UpToDate", "OutOfDate", ... as reported by the verifier */
    uint8_t report_data[CL_ATTEST_REPORT_DATA_LEN];
    uint8_t evidence_sha256[32]; /* SHA-256 of the whole quote, for audit */
} cl_attest_claims;

/* The TDX identity of a parsed TD quote (zero for an SGX quote). */
void cl_attest_tdx_identity_from_quote(const cl_attest_quote *q, cl_attest_tdx_identity *out);

/* A verifier back end: checks the quote's signatures and fills claims->evidence_type (a name the
 * policy knows: "sgx-dcap", "tdx-dcap") and claims->tcb_status (Intel's names: "UpToDate", ...);
 * cl_attest_verify fills the measurements from the parsed quote. Returns 0, or -1 with err (CL_E_AUTH
 * for a bad or untrusted signature). Called concurrently from many threads. */
typedef int (*cl_attest_backend_fn)(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims,
                                    cl_err *err);

typedef struct cl_attest_verifier cl_attest_verifier;

cl_attest_verifier *cl_attest_verifier_new(cl_err *err);
void cl_attest_verifier_free(cl_attest_verifier *v);
/* Trusts sim evidence signed by the key of this certificate (up-ref'ed). May be called more than
 * once. Without it, sim evidence is refused. */
int cl_attest_verifier_trust_sim(cl_attest_verifier *v, X509 *qe_cert, cl_err *err);
int cl_attest_verifier_trust_sim_file(cl_attest_verifier *v, const char *pem_path, cl_err *err);
/* Adds a back end for real evidence (DCAP: dcap.h, cl_dcap_backend_verify or cl_dcap_source_backend).
 * `ctx` is borrowed. */
int cl_attest_verifier_add_backend(cl_attest_verifier *v, const char *name, cl_attest_backend_fn fn, void *ctx,
                                   cl_err *err);
/* Parses and verifies a quote: the sim back end for sim quotes, otherwise each added back end in
 * turn. Fails closed: no back end, or a back end error, is a failure. Thread-safe. */
int cl_attest_verify(const cl_attest_verifier *v, const uint8_t *quote, size_t len, cl_attest_claims *claims,
                     cl_err *err);

/* Claims as a policy-ready JSON object (malloc()ed text), with policy field names: for SGX
 * mrenclave, mrsigner, isv_prod_id, min_isv_svn; for TDX mrtd, rtmr0..rtmr3, mrconfigid, mrowner,
 * mrownerconfig, xfam, td_attributes, mrseam, mrsignerseam, and (not policy fields; they describe
 * the TDX module's version) seam_attributes, tee_tcb_svn and for a TD 1.5 body tee_tcb_svn2 and
 * mrservicetd; then allow_debug and evidence_types. Measurements are lower-case hex. NULL when out
 * of memory. */
char *cl_attest_claims_json(const cl_attest_claims *c, bool pretty);

#ifdef __cplusplus
}
#endif
#endif
