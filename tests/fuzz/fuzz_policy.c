/* fuzz_policy.c — fuzz target for the release policy parser: arbitrary bytes must either be refused
 * or give a policy that describes itself and evaluates SGX and TDX claims without crashing; an empty
 * policy never grants anything, nothing is granted to claims no identity matches, and a decision always
 * holds both its strings. (fuzz_policy_reload loads the same bytes into a running key server.) */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/policy.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    cl_err err;
    cl_policy *p = cl_policy_parse((const char *)data, size, &err);
    if (!p)
        return 0;
    free(cl_policy_describe(p));
    cl_policy_decision d = {0};
    for (int i = 0; i < 6; i++) {
        cl_attest_claims c = {0};
        snprintf(c.evidence_type, sizeof c.evidence_type, "%s", i % 3 == 0 ? "sim" : i % 3 == 1 ? "sgx-dcap" : "tdx-dcap");
        snprintf(c.tcb_status, sizeof c.tcb_status, "%s", i < 4 ? "UpToDate" : "OutOfDate");
        if (i % 3 == 2 || i == 3) { /* a TD: zeros, or the 0x33/0x22 values the corpus pins */
            c.tee_type = CL_QUOTE_TEE_TDX;
            memset(c.tdx.mr_td, i == 2 ? 0 : 0x22, sizeof c.tdx.mr_td);
            memset(c.tdx.rtmr[1], i == 2 ? 0 : 0x33, sizeof c.tdx.rtmr[1]);
            c.tdx.td_attributes[0] = i == 5 ? CL_TDX_ATTR_DEBUG : 0;
        } else {
            memset(c.mr_enclave, i == 0 ? 0 : 0x33, 32);
            c.isv_svn = (uint16_t)(i * 30000);
        }
        c.debug = i == 4 || i == 5;
        int rc = cl_policy_evaluate(p, &c, &d);
        if (!d.identities || !d.reason || (rc == 0) != d.allowed || (rc == 0 && d.reason[0]))
            abort();
        bool any = cl_policy_grants(p, &c, "a");
        const char *sp = cl_policy_secret_prov(p, &c);
        if (cl_policy_identity_count(p) == 0 && (rc == 0 || any || sp))
            abort();
        if (rc != 0 && (any || sp)) /* nothing is granted to claims no identity matches */
            abort();
    }
    cl_policy_decision_clear(&d);
    cl_policy_free(p);
    return 0;
}
