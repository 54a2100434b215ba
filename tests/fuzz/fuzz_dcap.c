/* fuzz_dcap.c — fuzz target for the DCAP verifier: a quote and its collateral JSON through
 * cl_dcap_collateral_load_buffer and cl_dcap_verify against the pinned Intel root at a time inside one
 * of the real vectors' windows (so the seeds from tests/data/dcap-qvl reach every step), and the
 * on-disk cache format round trip (a collateral that loads must serialise and load again).
 * Input: 1 byte picking the time, 4 bytes (little-endian) of quote length, the quote, then the
 * collateral JSON. A verification that passes must report a known status for the quote's TEE. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/dcap_internal.h"
#include "cloister/dcap.h"

#ifndef CLOISTER_DCAP_VECTORS
#error "CLOISTER_DCAP_VECTORS must point at tests/data/dcap-qvl"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static X509 *root;
    if (!root) {
        cl_log_set_level(CL_LOG_OFF);
        cl_err e = {0};
        root = cl_dcap_root_ca_load(CLOISTER_DCAP_VECTORS "/Intel_SGX_Provisioning_Certification_RootCA.der", &e);
        if (!root) {
            fprintf(stderr, "fuzz_dcap: %s\n", e.msg);
            abort();
        }
    }
    static const int64_t times[] = {1750331571, 1750330147, 1771413331, 1752919278};
    if (size < 5)
        return 0;
    int64_t now = times[data[0] % 4];
    size_t qlen = (size_t)data[1] | (size_t)data[2] << 8 | (size_t)data[3] << 16 | (size_t)data[4] << 24;
    data += 5;
    size -= 5;
    if (qlen > size)
        return 0;
    cl_err err = {0};
    cl_dcap_collateral *col = cl_dcap_collateral_load_buffer((const char *)data + qlen, size - qlen, &err);
    if (!col)
        return 0;
    size_t jl;
    char *json = cl_dcap_collateral_to_json(col, &jl);
    cl_dcap_collateral *back = json ? cl_dcap_collateral_load_buffer(json, jl, &err) : NULL;
    if (!back || strcmp(back->tcb_info, col->tcb_info) != 0 || strcmp(back->qe_identity, col->qe_identity) != 0 ||
        memcmp(back->tcb_sig, col->tcb_sig, 64) != 0)
        abort(); /* the cache must hold exactly what was loaded */
    cl_dcap_collateral_free(back);
    free(json);
    cl_attest_quote q;
    if (cl_attest_quote_parse(data, qlen, &q, &err) == 0) {
        cl_dcap_result r;
        char tee[4], fmspc[13], ca[10];
        (void)cl_dcap_quote_platform(&q, tee, fmspc, ca, &err);
        (void)cl_dcap_collateral_check(col, root, now, &err);
        if (cl_dcap_verify(&q, col, root, now, &r, &err) == 0) {
            bool known = false;
            for (int i = 0; i < CL_DCAP_STATUS_COUNT - 1; i++) /* never Revoked */
                known |= !strcmp(r.tcb_status, cl_dcap_status_names[i]);
            if (!known || strcmp(r.evidence_type, q.tee_type == CL_QUOTE_TEE_TDX ? "tdx-dcap" : "sgx-dcap") != 0)
                abort();
        } else if (r.tcb_status[0]) {
            abort(); /* a refusal reports no status */
        }
    }
    cl_dcap_collateral_free(col);
    return 0;
}
