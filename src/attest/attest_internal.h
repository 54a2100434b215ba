/* attest_internal.h — helpers shared by the attest module's sources (not a public interface):
 * the sim quote marker, raw ECDSA signature conversion, bounded pseudo-file I/O. */
#ifndef CLOISTER_ATTEST_INTERNAL_H
#define CLOISTER_ATTEST_INTERNAL_H

#include "cloister/attest.h"

/* qe_vendor_id of quotes made by the sim provider */
extern const uint8_t cl_attest_sim_vendor_id[16];
/* certification data type of sim quotes (not an Intel type) */
#define CL_ATTEST_SIM_CERT_TYPE 0xC15A

/* Checks a raw ECDSA-P256/SHA-256 signature (r || s, 32 bytes each, as in quotes and Intel's
 * collateral) over msg. 1: valid, 0: invalid, -1: cannot encode or verify (OpenSSL failure). */
int cl_attest_verify_raw_sig(EVP_PKEY *key, const uint8_t sig[64], const void *msg, size_t len);
/* The uncompressed P-256 public point of key as x||y (64 bytes). */
int cl_attest_p256_raw_pub(EVP_PKEY *key, uint8_t out[64], cl_err *err);
/* Reads a (pseudo-)file of unknown size, at most max bytes. *out malloc()ed. */
int cl_attest_read_file(const char *path, size_t max, uint8_t **out, size_t *len, cl_err *err);
int cl_attest_write_file(const char *path, const void *buf, size_t len, cl_err *err);

#endif
