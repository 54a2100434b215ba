/* fuzz_policy.c — fuzz target for the release policy parser: arbitrary JSON must either be refused
 * or give a policy that evaluates without crashing; an empty policy never grants anything. */
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
    cl_attest_claims c = {0};
    snprintf(c.evidence_type, sizeof c.evidence_type, "sim");
    snprintf(c.tcb_status, sizeof c.tcb_status, "UpToDate");
    for (int i = 0; i < 3; i++) {
        memset(c.mr_enclave, i == 0 ? 0 : 0x33, 32);
        c.isv_svn = (uint16_t)(i * 30000);
        c.debug = i == 2;
        cl_policy_decision d = {0};
        int rc = cl_policy_evaluate(p, &c, &d);
        bool any = cl_policy_grants(p, &c, "a");
        const char *sp = cl_policy_secret_prov(p, &c);
        if (cl_policy_identity_count(p) == 0 && (rc == 0 || any || sp))
            abort();
        if (rc != 0 && (any || sp)) /* nothing is granted to claims no identity matches */
            abort();
        cl_policy_decision_clear(&d);
    }
    cl_policy_free(p);
    return 0;
}
