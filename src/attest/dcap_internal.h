/* dcap_internal.h — pieces of src/attest/dcap.c exposed to the unit tests only (not a public
 * interface): the steps of cl_dcap_verify that judge collateral content, callable on unsigned JSON
 * so each rule can be tested with a mutated document. Never call them to make trust decisions:
 * they check no signature. TCB statuses are indexes into cl_dcap_status_names. */
#ifndef CLOISTER_DCAP_INTERNAL_H
#define CLOISTER_DCAP_INTERNAL_H

#include "cloister/dcap.h"

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
