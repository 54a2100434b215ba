/* fuzz_evidence.c — fuzz target for the evidence parser: cl_attest_quote_parse on arbitrary bytes,
 * and cl_attest_verify with a verifier that trusts nothing (must fail closed, never crash). */
#include <stdlib.h>
#include <string.h>

#include "cloister/attest.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cl_attest_verifier *v;
    if (!v) {
        cl_log_set_level(CL_LOG_OFF);
        v = cl_attest_verifier_new(NULL);
    }
    cl_attest_quote q;
    cl_err err;
    if (cl_attest_quote_parse(data, size, &q, &err) == 0) {
        /* everything the parser points at must be inside the input */
        if (q.signed_len > size || q.quote_len + q.padding != size ||
            (q.cert_data && (q.cert_data < data || q.cert_data + q.cert_len > data + size)))
            abort();
    }
    cl_attest_claims c;
    if (cl_attest_verify(v, data, size, &c, &err) == 0)
        abort(); /* nothing is trusted: nothing may verify */
    return 0;
}
