/* dcap_internal.h — what the DCAP sources share (dcap.c: verification; dcap_collateral.c: the
 * collateral formats; dcap_source.c and pccs.c: where collateral comes from), not a public interface;
 * and pieces of dcap.c exposed to the unit tests: the steps of cl_dcap_verify that judge collateral
 * content, callable on unsigned JSON so each rule can be tested with a mutated document. Never call
 * those to make trust decisions: they check no signature. TCB statuses are indexes into
 * cl_dcap_status_names. */
#ifndef CLOISTER_DCAP_INTERNAL_H
#define CLOISTER_DCAP_INTERNAL_H

#include <pthread.h>

#include <jansson.h>

#include "cloister/dcap.h"

/* A loaded collateral set. Nothing in it is trusted until cl_dcap_verify checks it. */
struct cl_dcap_collateral {
    STACK_OF(X509) *pck_crl_chain, *tcb_chain, *qe_chain;
    X509_CRL *root_crl, *pck_crl;
    char *tcb_info, *qe_identity; /* exact signed text */
    uint8_t tcb_sig[64], qe_sig[64];
    json_t *tcb_json, *qe_json; /* parsed from the text above (read only, never re-serialised) */
    cl_dcap_collateral_info info;
    /* the window in which every certificate, CRL and document of it is valid (inclusive), and the memo
     * of cl_dcap_collateral_check: it passed with memo_root (up-ref'ed) at a time inside the window */
    int64_t lo, hi;
    pthread_mutex_t memo_lock;
    X509 *memo_root;
    struct {
        uint8_t h[32];   /* SHA-256 of a quote's PCK chain (PEM) that verified with this collateral */
        int64_t lo, hi;  /* while every certificate of its path and both CRLs are valid */
        X509 *root;      /* up-ref'ed; NULL: empty */
    } pck_memo[16];
    size_t pck_memo_next;
};

/* The TEE ("SGX"/"TDX"), FMSPC (upper-case hex) and PCK CA ("processor"/"platform") a quote's PCK
 * certificate names: which collateral it needs. Verifies nothing. */
int cl_dcap_quote_platform(const cl_attest_quote *q, char tee[4], char fmspc_hex[13], char ca[10], cl_err *err);
/* Whether the quote's PCK chain verifies to the pinned root at `now` (signatures, dates, path, the
 * leaf's role; no CRLs: those come with the collateral) — the platform the quote names is vouched for
 * by Intel, and worth fetching collateral for. Not a verification of the quote. */
int cl_dcap_quote_pck_chain_check(const cl_attest_quote *q, X509 *root, int64_t now, cl_err *err);
/* Everything cl_dcap_verify checks of the collateral alone at `now`: the PCK CRL issuer chain and its
 * CRL, the TCB info and QE identity issuer chains, signatures and dates (roots pinned as there). */
int cl_dcap_collateral_check(const cl_dcap_collateral *col, X509 *root, int64_t now, cl_err *err);

/* The collateral of one platform from a PCCS / PCS (pccs.c): the four answers fetched within
 * cfg->pccs_timeout_ms in all, then cl_dcap_collateral_from_pccs. Checks nothing else. */
cl_dcap_collateral *cl_pccs_fetch(const cl_dcap_config *cfg, X509 *root, const char *tee, const char *fmspc_hex,
                                  const char *ca, cl_err *err);

/* "YYYY-MM-DDThh:mm:ssZ" (Intel's dates) to Unix time; -1 if malformed. */
int cl_dcap_parse_time(const char *s, int64_t *out);

enum {
    CL_DCAP_UP_TO_DATE = 0,
    CL_DCAP_SW_HARDENING_NEEDED,
    CL_DCAP_CONFIGURATION_NEEDED,
    CL_DCAP_CONFIGURATION_AND_SW_HARDENING_NEEDED,
    CL_DCAP_OUT_OF_DATE,
    CL_DCAP_OUT_OF_DATE_CONFIGURATION_NEEDED,
    CL_DCAP_REVOKED,
    CL_DCAP_STATUS_COUNT
};
extern const char *const cl_dcap_status_names[CL_DCAP_STATUS_COUNT];

typedef enum cl_dcap_role { CL_DCAP_ROLE_PCK, CL_DCAP_ROLE_TCB_SIGNER } cl_dcap_role;
/* The certificate's subject/issuer names are those of Intel's PCK certificate or TCB signing one. */
int cl_dcap_check_role(X509 *cert, cl_dcap_role role, cl_err *err);
/* issueDate <= now <= nextUpdate of a TCB info / QE identity JSON text (CL_E_EXPIRED otherwise). */
int cl_dcap_check_dates(const char *what, const char *json_text, int64_t now, cl_err *err);
/* The QE report (384 bytes, inside the quote) and the PCK leaf certificate (caller frees) of a quote. */
int cl_dcap_quote_qe(const cl_attest_quote *q, const uint8_t **qe_report, X509 **pck_leaf, cl_err *err);
/* Step 5 without signature/dates: ids, FMSPC, PCE ID, TDX module identity, first matching TCB level. */
int cl_dcap_match_tcb_info(const cl_attest_quote *q, const char *tcb_json, X509 *pck_leaf, int *platform_status,
                           int *module_status, cl_dcap_result *out, cl_err *err);
/* Step 6 without signature/dates: id, MRSIGNER, ISVPRODID, MISCSELECT, ATTRIBUTES, ISVSVN level. */
int cl_dcap_match_qe_identity(const cl_attest_quote *q, const char *qe_json, const uint8_t *qe_report,
                              int *qe_status, cl_dcap_result *out, cl_err *err);
/* The reported status from the three levels; Revoked anywhere is an error (CL_E_AUTH). */
int cl_dcap_converge(int platform_status, int qe_status, int module_status, cl_dcap_result *out, cl_err *err);

#endif
