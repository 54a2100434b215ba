/* fuzz_pccs.c — fuzz target for what parses PCCS / Intel PCS answers (cl_dcap_collateral_from_pccs):
 * the TCB info and QE identity bodies (strict JSON, the signed span found in the raw bytes), the
 * percent-encoded issuer chain headers, CRLs in DER/PEM/hex; an accepted answer is checked against the
 * pinned root (chains, signatures, dates) and must round-trip through the cache format. The input is
 * the seven parts in order (TCB body, its chain header, QE body, its chain header, PCK CRL, its chain
 * header, root CA CRL), separated by the line "--8<--". The signed text kept must be a byte-exact
 * substring of the body it came from. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "attest/dcap_internal.h"
#include "cloister/dcap.h"

#ifndef CLOISTER_DCAP_VECTORS
#error "CLOISTER_DCAP_VECTORS must point at tests/data/dcap-qvl"
#endif

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define SEP "\n--8<--\n"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static X509 *root;
    if (!root) {
        cl_log_set_level(CL_LOG_OFF);
        cl_err e = {0};
        root = cl_dcap_root_ca_load(CLOISTER_DCAP_VECTORS "/Intel_SGX_Provisioning_Certification_RootCA.der", &e);
        if (!root)
            abort();
    }
    const uint8_t *part[7] = {0};
    size_t len[7] = {0}, n = 0;
    const uint8_t *p = data, *end = data + size;
    while (n < 7) {
        const uint8_t *s = memmem(p, (size_t)(end - p), SEP, strlen(SEP));
        part[n] = p;
        len[n] = (size_t)((s ? s : end) - p);
        n++;
        if (!s)
            break;
        p = s + strlen(SEP);
    }
    cl_dcap_pccs_answers a = {
        (const char *)part[0], len[0], (const char *)part[1], len[1], (const char *)part[2], len[2],
        (const char *)part[3], len[3], part[4], len[4], (const char *)part[5], len[5], part[6], len[6],
    };
    cl_err err = {0};
    cl_dcap_collateral *col = cl_dcap_collateral_from_pccs(&a, &err);
    if (!col)
        return 0;
    size_t tl = strlen(col->tcb_info), ql = strlen(col->qe_identity);
    if (!memmem(part[0], len[0], col->tcb_info, tl) || !memmem(part[2], len[2], col->qe_identity, ql))
        abort(); /* re-serialised instead of kept as served */
    (void)cl_dcap_collateral_check(col, root, 1750331571, &err);
    size_t jl;
    char *json = cl_dcap_collateral_to_json(col, &jl);
    cl_dcap_collateral *back = json ? cl_dcap_collateral_load_buffer(json, jl, &err) : NULL;
    if (!back || strcmp(back->tcb_info, col->tcb_info) != 0)
        abort();
    cl_dcap_collateral_free(back);
    free(json);
    cl_dcap_collateral_free(col);
    return 0;
}
