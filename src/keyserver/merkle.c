/* merkle.c — the Merkle tree of RFC 9162 (Certificate Transparency v2, the hashing of RFC 6962) over
 * a log's leaves: the tree head (MTH), inclusion proofs (PATH) and consistency proofs (PROOF /
 * SUBPROOF) as RFC 9162 §2.1 defines them, and their verification exactly as §2.1.3.2 and §2.1.4.2
 * write it, so that a verifier holding an earlier tree head detects a record changed, dropped,
 * reordered or a log forked. SHA-256 throughout: leaf = H(0x00 ‖ data), node = H(0x01 ‖ left ‖ right),
 * the empty tree's head H(""). Interface: keyserver.h ("Merkle log"); the key server's release log is
 * to move onto it (docs/keyserver.md, "Audit log").
 *
 * Generation works on the leaf hashes in memory and recomputes subtree heads (O(n) hashes per head or
 * proof); verification needs only the proof. Nothing here allocates except the proofs returned.
 */
#include "cloister/keyserver.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>

#define H CL_MERKLE_HASH_LEN

static int sha256_parts(const uint8_t *a, size_t an, const uint8_t *b, size_t bn, const uint8_t *c, size_t cn,
                        uint8_t out[H])
{
    EVP_MD_CTX *x = EVP_MD_CTX_new();
    unsigned len = 0;
    int ok = x && EVP_DigestInit_ex(x, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(x, a, an) == 1 &&
             (!bn || EVP_DigestUpdate(x, b, bn) == 1) && (!cn || EVP_DigestUpdate(x, c, cn) == 1) &&
             EVP_DigestFinal_ex(x, out, &len) == 1 && len == H;
    EVP_MD_CTX_free(x);
    return ok ? 0 : -1;
}

int cl_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[CL_MERKLE_HASH_LEN], cl_err *err)
{
    static const uint8_t zero = 0x00;
    if (sha256_parts(&zero, 1, data, len, NULL, 0, out) != 0)
        return cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed");
    return 0;
}

static int node_hash(const uint8_t l[H], const uint8_t r[H], uint8_t out[H])
{
    static const uint8_t one = 0x01;
    return sha256_parts(&one, 1, l, H, r, H, out);
}

/* The largest power of two smaller than n (n > 1). */
static uint64_t split(uint64_t n)
{
    uint64_t k = 1;
    while (k << 1 < n)
        k <<= 1;
    return k;
}

/* MTH(D[0:n]) over leaf hashes. */
static int mth(const uint8_t *d, uint64_t n, uint8_t out[H])
{
    if (n == 0)
        return sha256_parts(NULL, 0, NULL, 0, NULL, 0, out);
    if (n == 1) {
        memcpy(out, d, H);
        return 0;
    }
    uint64_t k = split(n);
    uint8_t l[H], r[H];
    if (mth(d, k, l) != 0 || mth(d + k * H, n - k, r) != 0)
        return -1;
    return node_hash(l, r, out);
}

int cl_merkle_root(const uint8_t *leaves, uint64_t n, uint8_t out[CL_MERKLE_HASH_LEN],
                   cl_err *err)
{
    if (n && !leaves)
        return cl_err_set(err, CL_E_INVALID, "a tree of %llu leaves needs its leaf hashes", (unsigned long long)n);
    if (mth(leaves, n, out) != 0)
        return cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed");
    return 0;
}

/* A proof under construction: at most 64 hashes (a tree of up to 2^64 leaves). */
typedef struct proof {
    uint8_t h[CL_MERKLE_MAX_PROOF][H];
    size_t n;
} proof;

static int append_mth(proof *p, const uint8_t *d, uint64_t n)
{
    if (p->n >= CL_MERKLE_MAX_PROOF)
        return -1;
    return mth(d, n, p->h[p->n++]);
}

/* PATH(m, D[0:n]) (RFC 9162 §2.1.3.1): from the leaf's sibling up to the root's child. */
static int path(proof *p, const uint8_t *d, uint64_t n, uint64_t m)
{
    if (n <= 1)
        return 0;
    uint64_t k = split(n);
    if (m < k)
        return path(p, d, k, m) != 0 ? -1 : append_mth(p, d + k * H, n - k);
    return path(p, d + k * H, n - k, m - k) != 0 ? -1 : append_mth(p, d, k);
}

/* SUBPROOF(m, D[0:n], b) (RFC 9162 §2.1.4.1). */
static int subproof(proof *p, const uint8_t *d, uint64_t n, uint64_t m, bool b)
{
    if (m == n)
        return b ? 0 : append_mth(p, d, n);
    uint64_t k = split(n);
    if (m <= k)
        return subproof(p, d, k, m, b) != 0 ? -1 : append_mth(p, d + k * H, n - k);
    return subproof(p, d + k * H, n - k, m - k, false) != 0 ? -1 : append_mth(p, d, k);
}

static int proof_out(const proof *p, uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    if (p->n) {
        if (!(*out = malloc(p->n * H)))
            return cl_err_nomem(err);
        memcpy(*out, p->h, p->n * H);
    }
    *len = p->n;
    return 0;
}

int cl_merkle_inclusion_proof(const uint8_t *leaves, uint64_t n, uint64_t m,
                              uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    if (m >= n)
        return cl_err_set(err, CL_E_INVALID, "leaf %llu is not in a tree of %llu leaves", (unsigned long long)m,
                          (unsigned long long)n);
    proof *p = malloc(sizeof *p);
    if (!p)
        return cl_err_nomem(err);
    p->n = 0;
    int rc = path(p, leaves, n, m) != 0 ? cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed")
                                        : proof_out(p, out, len, err);
    free(p);
    return rc;
}

int cl_merkle_consistency_proof(const uint8_t *leaves, uint64_t n, uint64_t m,
                                uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    if (m == 0 || m > n)
        return cl_err_set(err, CL_E_INVALID, "no consistency proof from a tree of %llu leaves to one of %llu "
                          "(the earlier tree must have 1 to %llu leaves)", (unsigned long long)m,
                          (unsigned long long)n, (unsigned long long)n);
    proof *p = malloc(sizeof *p);
    if (!p)
        return cl_err_nomem(err);
    p->n = 0;
    int rc = subproof(p, leaves, n, m, true) != 0 ? cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed")
                                                  : proof_out(p, out, len, err);
    free(p);
    return rc;
}

/* RFC 9162 §2.1.3.2, step by step. */
int cl_merkle_verify_inclusion(const uint8_t leaf[CL_MERKLE_HASH_LEN], uint64_t m, uint64_t n,
                               const uint8_t *proof_hashes, size_t len,
                               const uint8_t root[CL_MERKLE_HASH_LEN], cl_err *err)
{
    if (m >= n)
        return cl_err_set(err, CL_E_AUTH, "inclusion proof refused: leaf %llu is not in a tree of %llu leaves",
                          (unsigned long long)m, (unsigned long long)n);
    if (len > CL_MERKLE_MAX_PROOF || (len && !proof_hashes))
        return cl_err_set(err, CL_E_AUTH, "inclusion proof refused: %zu hashes is not a proof", len);
    uint64_t fn = m, sn = n - 1;
    uint8_t r[H];
    memcpy(r, leaf, H);
    for (size_t i = 0; i < len; i++) {
        if (sn == 0)
            return cl_err_set(err, CL_E_AUTH, "inclusion proof refused: longer than the path to the root");
        int rc;
        if ((fn & 1) || fn == sn) {
            rc = node_hash(proof_hashes + i * H, r, r);
            if (!(fn & 1))
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
        } else {
            rc = node_hash(r, proof_hashes + i * H, r);
        }
        if (rc != 0)
            return cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed");
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0)
        return cl_err_set(err, CL_E_AUTH, "inclusion proof refused: shorter than the path to the root");
    if (CRYPTO_memcmp(r, root, H) != 0)
        return cl_err_set(err, CL_E_AUTH, "inclusion proof refused: it does not lead to the tree head given");
    return 0;
}

/* RFC 9162 §2.1.4.2, step by step; m == n takes an empty proof and equal heads. */
int cl_merkle_verify_consistency(uint64_t m, uint64_t n, const uint8_t old_root[CL_MERKLE_HASH_LEN],
                                 const uint8_t new_root[CL_MERKLE_HASH_LEN],
                                 const uint8_t *proof_hashes, size_t len, cl_err *err)
{
    if (m == 0 || m > n)
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: a tree of %llu leaves cannot precede one of %llu",
                          (unsigned long long)m, (unsigned long long)n);
    if (len > CL_MERKLE_MAX_PROOF || (len && !proof_hashes))
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: %zu hashes is not a proof", len);
    if (m == n) {
        if (len != 0)
            return cl_err_set(err, CL_E_AUTH, "consistency proof refused: trees of one size need no proof");
        if (CRYPTO_memcmp(old_root, new_root, H) != 0)
            return cl_err_set(err, CL_E_AUTH, "consistency proof refused: two different heads for a tree of %llu "
                              "leaves (the log forked)", (unsigned long long)m);
        return 0;
    }
    if (len == 0)
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: it is empty");
    /* the proof, with the old head in front when the old tree is a complete subtree (m a power of 2) */
    const uint8_t *first = proof_hashes;
    size_t next = 1;
    if ((m & (m - 1)) == 0) {
        first = old_root;
        next = 0;
    }
    uint64_t fn = m - 1, sn = n - 1;
    while (fn & 1) {
        fn >>= 1;
        sn >>= 1;
    }
    uint8_t fr[H], sr[H];
    memcpy(fr, first, H);
    memcpy(sr, first, H);
    for (size_t i = next; i < len; i++) {
        const uint8_t *c = proof_hashes + i * H;
        if (sn == 0)
            return cl_err_set(err, CL_E_AUTH, "consistency proof refused: longer than the trees allow");
        if ((fn & 1) || fn == sn) {
            if (node_hash(c, fr, fr) != 0 || node_hash(c, sr, sr) != 0)
                return cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed");
            if (!(fn & 1))
                while (!(fn & 1) && fn != 0) {
                    fn >>= 1;
                    sn >>= 1;
                }
        } else if (node_hash(sr, c, sr) != 0) {
            return cl_err_ssl(err, CL_E_INTERNAL, "SHA-256 failed");
        }
        fn >>= 1;
        sn >>= 1;
    }
    if (sn != 0)
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: shorter than the trees need");
    if (CRYPTO_memcmp(fr, old_root, H) != 0)
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: it does not lead to the earlier tree head "
                          "(records changed, dropped or reordered, or the log forked)");
    if (CRYPTO_memcmp(sr, new_root, H) != 0)
        return cl_err_set(err, CL_E_AUTH, "consistency proof refused: it does not lead to the later tree head");
    return 0;
}
