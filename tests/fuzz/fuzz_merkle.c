/* fuzz_merkle.c — fuzz target for the Merkle proof verifiers (keyserver.h "Merkle log"), the part of
 * the log a client runs on what a key server hands it. The input picks a tree (n of 1..64 leaves, fixed
 * contents), an index or an older size, and supplies the proof bytes. The oracle: a proof that
 * verifies against the true head must be the one the generator makes (proofs are unique up to SHA-256
 * collisions), and nothing read past the proof given. Input: u8 n, u8 m, u8 flags, then proof hashes
 * (bit 0 of flags: consistency instead of inclusion; bit 1: the generator's proof with the input bytes
 * XORed into it, so the fuzzer starts next to valid proofs). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "cloister/keyserver.h"

#define H CL_MERKLE_HASH_LEN
#define MAXN 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint8_t leaves[MAXN * H];
static int ready;

static void setup(void)
{
    for (int i = 0; i < MAXN; i++) {
        uint8_t d[2] = {(uint8_t)i, 0x5a};
        if (cl_merkle_leaf_hash(d, sizeof d, leaves + i * H, NULL) != 0)
            abort();
    }
    ready = 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!ready)
        setup();
    if (size < 3)
        return 0;
    uint64_t n = (uint64_t)(data[0] % MAXN) + 1, m = data[1];
    bool consistency = data[2] & 1, near = data[2] & 2;
    data += 3;
    size -= 3;
    m = consistency ? m % n + 1 : m % n;
    uint8_t root[H], old[H];
    if (cl_merkle_root(leaves, n, root, NULL) != 0 || (consistency && cl_merkle_root(leaves, m, old, NULL) != 0))
        abort();
    uint8_t *want = NULL;
    size_t want_len = 0;
    int rc = consistency ? cl_merkle_consistency_proof(leaves, n, m, &want, &want_len, NULL)
                         : cl_merkle_inclusion_proof(leaves, n, m, &want, &want_len, NULL);
    if (rc != 0)
        abort();
    /* the proof under test, in a buffer of exactly its size so ASan sees any read past it */
    size_t len = near ? want_len : size / H;
    uint8_t *p = len ? malloc(len * H) : NULL;
    if (len && !p)
        abort();
    if (near) {
        if (len)
            memcpy(p, want, len * H);
        for (size_t i = 0; i < size && i < len * H; i++)
            p[i] ^= data[i];
    } else if (len) {
        memcpy(p, data, len * H);
    }
    rc = consistency ? cl_merkle_verify_consistency(m, n, old, root, p, len, NULL)
                     : cl_merkle_verify_inclusion(leaves + m * H, m, n, p, len, root, NULL);
    if (rc == 0 && (len != want_len || (len && memcmp(p, want, len * H) != 0)))
        abort(); /* a second proof accepted */
    free(p);
    free(want);
    return 0;
}
