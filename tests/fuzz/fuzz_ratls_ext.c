/* fuzz_ratls_ext.c — fuzz target for the RA-TLS extension parsers: TCG DICE tagged evidence, the
 * claims map, and whole certificates through cl_ratls_verify_cert (with an untrusting verifier). */
#include <stdlib.h>
#include <string.h>

#include <openssl/x509.h>

#include "cloister/ratls.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static cl_attest_verifier *v;
    if (!v) {
        cl_log_set_level(CL_LOG_OFF);
        v = cl_attest_verifier_new(NULL);
    }
    cl_err err;
    const uint8_t *quote, *claims;
    size_t quote_len, claims_len;
    uint8_t hash[32];
    if (cl_ratls_evidence_parse(data, size, &quote, &quote_len, &claims, &claims_len, &err) == 0) {
        if (quote < data || quote + quote_len > data + size || claims < data || claims + claims_len > data + size)
            abort();
        cl_ratls_claims_pubkey_hash(claims, claims_len, hash, &err);
    }
    cl_ratls_claims_pubkey_hash(data, size, hash, &err);
    const uint8_t *p = data;
    X509 *cert = d2i_X509(NULL, &p, (long)size);
    if (cert) {
        cl_attest_claims c;
        if (cl_ratls_verify_cert(cert, v, &c, NULL, &err) == 0)
            abort();
        X509_free(cert);
    }
    return 0;
}
