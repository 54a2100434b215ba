/* test_merkle.c — the RFC 9162 Merkle tree (keyserver.h "Merkle log", src/keyserver/merkle.c):
 * tree heads, inclusion and consistency proofs against Certificate Transparency's published test
 * vectors (the eight leaves and heads of its merkle tree tests), every proof of every tree up to 70
 * leaves verified, and every way a proof can lie refused: each hash flipped, a hash dropped or added,
 * proofs presented for another index, size or head, a forked log, sizes out of range. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cloister/keyserver.h"

#define H CL_MERKLE_HASH_LEN

/* Certificate Transparency's test leaves (hex) and the heads of the trees of their first 1..8. */
static const char *const ct_leaves[8] = {"", "00", "10", "2021", "3031", "40414243", "5051525354555657",
                                         "606162636465666768696a6b6c6d6e6f"};
static const char *const ct_roots[8] = {
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
};

static void unhex(const char *s, uint8_t *out, size_t *len)
{
    size_t n = strlen(s) / 2;
    for (size_t i = 0; i < n; i++) {
        unsigned v;
        assert_int_equal(sscanf(s + 2 * i, "%2x", &v), 1);
        out[i] = (uint8_t)v;
    }
    if (len)
        *len = n;
}

static void ct_leaf_hashes(uint8_t *lh)
{
    for (int i = 0; i < 8; i++) {
        uint8_t d[16];
        size_t n;
        unhex(ct_leaves[i], d, &n);
        assert_int_equal(cl_merkle_leaf_hash(d, n, lh + i * H, NULL), 0);
    }
}

static void test_ct_heads(void **state)
{
    (void)state;
    uint8_t lh[8 * H], root[H], want[H];
    ct_leaf_hashes(lh);
    for (int n = 1; n <= 8; n++) {
        assert_int_equal(cl_merkle_root(lh, (uint64_t)n, root, NULL), 0);
        unhex(ct_roots[n - 1], want, NULL);
        assert_memory_equal(root, want, H);
    }
    /* the empty tree: SHA-256 of nothing */
    unhex("e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855", want, NULL);
    assert_int_equal(cl_merkle_root(NULL, 0, root, NULL), 0);
    assert_memory_equal(root, want, H);
    cl_err err = {0};
    assert_int_equal(cl_merkle_root(NULL, 3, root, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
}

/* Proofs of the CT tests that are fixed by the tree's shape: leaf 0 of 8 is proved by the heads of
 * leaf 1, of leaves 2..3 and of leaves 4..7 (whose values the heads above already pin down). */
static void test_ct_proof_shapes(void **state)
{
    (void)state;
    uint8_t lh[8 * H], *p = NULL, want[H];
    size_t len;
    ct_leaf_hashes(lh);
    assert_int_equal(cl_merkle_inclusion_proof(lh, 8, 0, &p, &len, NULL), 0);
    assert_int_equal(len, 3);
    assert_memory_equal(p + 0 * H, lh + 1 * H, H);
    assert_int_equal(cl_merkle_root(lh + 2 * H, 2, want, NULL), 0);
    assert_memory_equal(p + 1 * H, want, H);
    assert_int_equal(cl_merkle_root(lh + 4 * H, 4, want, NULL), 0);
    assert_memory_equal(p + 2 * H, want, H);
    free(p);
    /* consistency 4 -> 8: the old tree is a complete subtree, so only the head of leaves 4..7 */
    assert_int_equal(cl_merkle_consistency_proof(lh, 8, 4, &p, &len, NULL), 0);
    assert_int_equal(len, 1);
    assert_memory_equal(p + 0 * H, want, H);
    free(p);
    /* consistency 6 -> 8: head(4,5), head(6,7), head(0..3) */
    assert_int_equal(cl_merkle_consistency_proof(lh, 8, 6, &p, &len, NULL), 0);
    assert_int_equal(len, 3);
    assert_int_equal(cl_merkle_root(lh + 4 * H, 2, want, NULL), 0);
    assert_memory_equal(p + 0 * H, want, H);
    assert_int_equal(cl_merkle_root(lh + 6 * H, 2, want, NULL), 0);
    assert_memory_equal(p + 1 * H, want, H);
    unhex(ct_roots[3], want, NULL);
    assert_memory_equal(p + 2 * H, want, H);
    free(p);
    /* a tree of one leaf: the empty proof */
    assert_int_equal(cl_merkle_inclusion_proof(lh, 1, 0, &p, &len, NULL), 0);
    assert_int_equal(len, 0);
    assert_null(p);
}

static uint8_t *make_leaves(uint64_t n)
{
    uint8_t *lh = malloc((size_t)n * H + 1);
    assert_non_null(lh);
    for (uint64_t i = 0; i < n; i++) {
        uint8_t d[8];
        for (int k = 0; k < 8; k++)
            d[k] = (uint8_t)(i >> (8 * k));
        assert_int_equal(cl_merkle_leaf_hash(d, sizeof d, lh + i * H, NULL), 0);
    }
    return lh;
}

/* Every inclusion proof of every tree of 1..70 leaves verifies, and fails with any hash flipped, one
 * dropped or one added, for the wrong index, the wrong size or the wrong head. */
static void test_inclusion_all(void **state)
{
    (void)state;
    const uint64_t max = 70;
    uint8_t *lh = make_leaves(max);
    for (uint64_t n = 1; n <= max; n++) {
        uint8_t root[H], other[H];
        assert_int_equal(cl_merkle_root(lh, n, root, NULL), 0);
        assert_int_equal(cl_merkle_root(lh, n - 1, other, NULL), 0);
        for (uint64_t m = 0; m < n; m++) {
            uint8_t *p = NULL;
            size_t len;
            cl_err err = {0};
            assert_int_equal(cl_merkle_inclusion_proof(lh, n, m, &p, &len, &err), 0);
            assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n, p, len, root, &err), 0);
            assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n, p, len, other, &err), -1);
            assert_int_equal(err.code, CL_E_AUTH);
            if (m + 1 < n)
                assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m + 1, n, p, len, root, NULL), -1);
            assert_int_equal(cl_merkle_verify_inclusion(lh + ((m + 1) % n) * H, m, n, p, len, root, NULL), n == 1 ? 0 : -1);
            /* another size: a proof is for one tree (the same path can fit a size with the same shape) */
            if (n + 1 <= max) {
                uint8_t bigger[H];
                assert_int_equal(cl_merkle_root(lh, n + 1, bigger, NULL), 0);
                assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n + 1, p, len, bigger, NULL), -1);
            }
            for (size_t i = 0; i < len; i++)
                for (int bit = 0; bit < 8; bit += 7) {
                    p[i * H + i % H] ^= (uint8_t)(1u << bit);
                    assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n, p, len, root, NULL), -1);
                    p[i * H + i % H] ^= (uint8_t)(1u << bit);
                }
            if (len)
                assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n, p, len - 1, root, NULL), -1);
            uint8_t *q = malloc((len + 1) * H);
            assert_non_null(q);
            if (len)
                memcpy(q, p, len * H);
            memcpy(q + (len) * H, root, H);
            assert_int_equal(cl_merkle_verify_inclusion(lh + m * H, m, n, q, len + 1, root, NULL), -1);
            free(q);
            free(p);
        }
    }
    free(lh);
}

/* Every consistency proof m -> n for 1 <= m <= n <= 40 verifies; a changed, dropped or reordered
 * record under the old head, a forked head, and every mutation of the proof are refused. */
static void test_consistency_all(void **state)
{
    (void)state;
    const uint64_t max = 40;
    uint8_t *lh = make_leaves(max);
    uint8_t roots[41][H];
    for (uint64_t n = 0; n <= max; n++)
        assert_int_equal(cl_merkle_root(lh, n, roots[n], NULL), 0);
    for (uint64_t n = 1; n <= max; n++)
        for (uint64_t m = 1; m <= n; m++) {
            uint8_t *p = NULL;
            size_t len;
            cl_err err = {0};
            assert_int_equal(cl_merkle_consistency_proof(lh, n, m, &p, &len, &err), 0);
            assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[n], p, len, &err), 0);
            if (m == n) {
                assert_int_equal(len, 0);
                assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[m > 1 ? m - 1 : 0], p, len, &err),
                                 -1);
                assert_non_null(strstr(err.msg, "forked"));
                continue;
            }
            /* the wrong old or new head */
            assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m - 1], roots[n], p, len, &err), -1);
            assert_int_equal(err.code, CL_E_AUTH);
            assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[n - 1], p, len, NULL), -1);
            for (size_t i = 0; i < len; i++) {
                p[i * H + (i * 5) % H] ^= 0x80;
                assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[n], p, len, NULL), -1);
                p[i * H + (i * 5) % H] ^= 0x80;
            }
            assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[n], p, len - 1, NULL), -1);
            if (len >= 2) {
                uint8_t t[H];
                memcpy(t, p + 0 * H, H);
                memcpy(p + 0 * H, p + 1 * H, H);
                memcpy(p + 1 * H, t, H);
                assert_int_equal(cl_merkle_verify_consistency(m, n, roots[m], roots[n], p, len, NULL), -1);
            }
            free(p);
        }
    /* the log rewritten: record 3 changed, then 5 more appended; the honest old head (5 records) does
     * not extend to the new tree, whatever proof the log hands out for it */
    uint8_t *forged = make_leaves(max);
    assert_int_equal(cl_merkle_leaf_hash((const uint8_t *)"changed", 7, forged + 3 * H, NULL), 0);
    uint8_t froot[H];
    assert_int_equal(cl_merkle_root(forged, 10, froot, NULL), 0);
    uint8_t *p = NULL;
    size_t len;
    assert_int_equal(cl_merkle_consistency_proof(forged, 10, 5, &p, &len, NULL), 0);
    assert_int_equal(cl_merkle_verify_consistency(5, 10, roots[5], froot, p, len, NULL), -1);
    free(p);
    /* a record dropped: leaves 0..2, 4..10 */
    memmove(forged + 3 * H, lh + 4 * H, 7 * H);
    memcpy(forged + 0 * H, lh + 0 * H, 3 * H);
    assert_int_equal(cl_merkle_root(forged, 10, froot, NULL), 0);
    assert_int_equal(cl_merkle_consistency_proof(forged, 10, 5, &p, &len, NULL), 0);
    assert_int_equal(cl_merkle_verify_consistency(5, 10, roots[5], froot, p, len, NULL), -1);
    free(p);
    /* two records swapped */
    memcpy(forged + 0 * H, lh + 0 * H, 10 * H);
    memcpy(forged + 1 * H, lh + 2 * H, H);
    memcpy(forged + 2 * H, lh + 1 * H, H);
    assert_int_equal(cl_merkle_root(forged, 10, froot, NULL), 0);
    assert_int_equal(cl_merkle_consistency_proof(forged, 10, 5, &p, &len, NULL), 0);
    assert_int_equal(cl_merkle_verify_consistency(5, 10, roots[5], froot, p, len, NULL), -1);
    free(p);
    free(forged);
    free(lh);
}

/* Sizes and lengths out of range: refused with a message, never read past the proof. */
static void test_bounds(void **state)
{
    (void)state;
    uint8_t lh[8 * H], root[H], *p = NULL;
    size_t len = 99;
    ct_leaf_hashes(lh);
    assert_int_equal(cl_merkle_root(lh, 8, root, NULL), 0);
    cl_err err = {0};
    assert_int_equal(cl_merkle_inclusion_proof(lh, 8, 8, &p, &len, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_null(p);
    assert_int_equal(len, 0);
    assert_int_equal(cl_merkle_consistency_proof(lh, 8, 0, &p, &len, &err), -1);
    assert_int_equal(cl_merkle_consistency_proof(lh, 8, 9, &p, &len, &err), -1);
    assert_int_equal(cl_merkle_verify_inclusion(lh + 0 * H, 8, 8, NULL, 0, root, &err), -1);
    assert_int_equal(cl_merkle_verify_inclusion(lh + 0 * H, 0, 0, NULL, 0, root, &err), -1);
    assert_int_equal(cl_merkle_verify_inclusion(lh + 0 * H, 0, 8, NULL, 3, root, &err), -1); /* no hashes given */
    assert_int_equal(cl_merkle_verify_inclusion(lh + 0 * H, 0, 8, lh, CL_MERKLE_MAX_PROOF + 1, root, &err), -1);
    assert_int_equal(cl_merkle_verify_consistency(0, 8, root, root, NULL, 0, &err), -1);
    assert_int_equal(cl_merkle_verify_consistency(9, 8, root, root, NULL, 0, &err), -1);
    assert_int_equal(cl_merkle_verify_consistency(3, 8, root, root, NULL, 0, &err), -1); /* empty */
    assert_non_null(strstr(err.msg, "empty"));
    /* a huge claimed tree with a short proof: ends, refused */
    assert_int_equal(cl_merkle_verify_inclusion(lh + 0 * H, 5, UINT64_MAX, lh, 8, root, &err), -1);
    assert_int_equal(cl_merkle_verify_consistency(UINT64_MAX / 3, UINT64_MAX, root, root, lh, 8, &err), -1);
    /* an inner node passed off as a leaf: the head of leaves 0..1 with the rest of leaf 0's path
     * reaches the root, but in one step less than a leaf of a tree of 8 needs */
    uint8_t inner[H], rest[2 * H];
    assert_int_equal(cl_merkle_root(lh, 2, inner, NULL), 0);
    assert_int_equal(cl_merkle_root(lh + 2 * H, 2, rest, NULL), 0);
    assert_int_equal(cl_merkle_root(lh + 4 * H, 4, rest + H, NULL), 0);
    assert_int_equal(cl_merkle_verify_inclusion(inner, 0, 8, rest, 2, root, &err), -1);
    assert_non_null(strstr(err.msg, "shorter"));
    /* ...and it does prove "leaf" 0 of a tree of 4 with that head, whose leaves are the pairs: which is
     * why a verifier hashes the record itself (the 0x00 prefix) and takes the size from a head it trusts */
    assert_int_equal(cl_merkle_verify_inclusion(inner, 0, 4, rest, 2, root, &err), 0);
    /* a single-leaf tree: its head is the leaf hash, proved by nothing */
    assert_int_equal(cl_merkle_verify_inclusion(lh + 2 * H, 0, 1, NULL, 0, lh + 2 * H, &err), 0);
    assert_int_equal(cl_merkle_verify_inclusion(lh + 2 * H, 0, 1, lh, 1, lh + 2 * H, &err), -1); /* longer than the path */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ct_heads),      cmocka_unit_test(test_ct_proof_shapes),
        cmocka_unit_test(test_inclusion_all), cmocka_unit_test(test_consistency_all),
        cmocka_unit_test(test_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
