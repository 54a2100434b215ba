/* engine/tf/bundle.c — the TensorBundle reader (a SavedModel's variables/): variables.index is an SSTable
 * (LevelDB's table format: data blocks of prefix-compressed key/value entries with a restart array, an
 * index block of block handles, a 48-byte footer ending in the table magic; each block followed by its
 * compression type and the masked CRC32C of both) whose values are BundleEntryProto (under the empty key
 * the BundleHeaderProto); each entry's bytes are at its offset in the variables.data-NNNNN-of-NNNNN shard
 * it names, checked against its masked CRC32C. Everything is read from memory buffers (a sealed model
 * is never plaintext on disk); every count, offset and size is checked before use.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <snappy-c.h>

#include "tensorflow/core/protobuf/tensor_bundle.pb-c.h"

#include "engine/tf/tf.h"

#define TABLE_MAGIC 0xdb4775248b80fb57ull
#define FOOTER_LEN 48
#define MAX_ENTRIES 1000000           /* keys in one index */
#define MAX_BLOCK ((size_t)64 << 20)   /* one block, uncompressed */
#define MAX_SHARDS 4096



static uint32_t le32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

typedef struct bentry {
    char *key;
    uint8_t *val; /* BundleEntryProto bytes */
    size_t val_len;
} bentry;

struct eng_bundle {
    bentry *e;
    size_t n, cap;
    const cl_engine_file **shards;
    int n_shards;
};

static int bad(cl_err *err, const char *fmt, const char *detail)
{
    return cl_err_set(err, CL_E_FORMAT, "variables.index: %s%s%s", fmt, detail ? ": " : "", detail ? detail : "");
}

/* Reads the block at handle (offset, size) of the table: CRC checked, uncompressed when snappy. *out
 * is either inside tbl (*owned NULL) or a malloc()ed buffer (*owned = it). */
static int read_block(const uint8_t *tbl, size_t len, uint64_t off, uint64_t size, const uint8_t **out,
                      size_t *out_len, uint8_t **owned, cl_err *err)
{
    *owned = NULL;
    if (off > len || size > len - off || len - off - size < 5)
        return bad(err, "a block handle points outside the file (truncated?)", NULL);
    const uint8_t *b = tbl + off;
    uint8_t type = b[size];
    uint32_t want = cl_crc32c_unmask(le32(b + size + 1));
    uint32_t got = cl_crc32c(0, b, size + 1);
    if (got != want)
        return cl_err_set(err, CL_E_FORMAT, "variables.index: block at offset %llu fails its CRC32C check "
                          "(stored %08x, computed %08x): the file is corrupt", (unsigned long long)off, want, got);
    if (type == 0) {
        *out = b;
        *out_len = size;
        return 0;
    }
    if (type != 1)
        return cl_err_set(err, CL_E_UNSUPPORTED, "variables.index: block compression type %u is not supported "
                          "(none or snappy)", type);
    size_t ulen;
    if (snappy_uncompressed_length((const char *)b, size, &ulen) != SNAPPY_OK)
        return bad(err, "a snappy block is malformed", NULL);
    if (ulen > MAX_BLOCK)
        return cl_err_set(err, CL_E_FORMAT, "variables.index: a block uncompresses to %zu bytes (at most %zu)",
                          ulen, MAX_BLOCK);
    uint8_t *u = malloc(ulen ? ulen : 1);
    if (!u)
        return cl_err_nomem(err);
    size_t got_len = ulen;
    if (snappy_uncompress((const char *)b, size, (char *)u, &got_len) != SNAPPY_OK || got_len != ulen) {
        free(u);
        return bad(err, "a snappy block does not uncompress", NULL);
    }
    *out = u;
    *out_len = ulen;
    *owned = u;
    return 0;
}

/* Iterates the entries of a block: calls fn(key, key_len, val, val_len). Keys are rebuilt from their
 * shared prefixes in a buffer of at most 64 KiB. */
typedef int (*entry_fn)(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, cl_err *err);

static int block_entries(const uint8_t *b, size_t n, entry_fn fn, void *arg, cl_err *err)
{
    if (n < 4)
        return bad(err, "a block is too short", NULL);
    uint32_t nrestart = le32(b + n - 4);
    if (nrestart == 0 || nrestart > (n - 4) / 4)
        return bad(err, "a block's restart count is out of range", NULL);
    const uint8_t *p = b, *end = b + n - 4 - (size_t)nrestart * 4;
    uint8_t *key = NULL;
    size_t klen = 0, kcap = 0;
    int rc = 0;
    while (p < end) {
        uint64_t shared, nonshared, vlen;
        if (eng_pb_varint(&p, end, &shared) || eng_pb_varint(&p, end, &nonshared) ||
            eng_pb_varint(&p, end, &vlen) || shared > klen || nonshared > (size_t)(end - p) ||
            vlen > (size_t)(end - p) - nonshared ||
            shared + nonshared > 65536) {
            rc = bad(err, "a block entry is malformed", NULL);
            break;
        }
        size_t nk = shared + nonshared;
        if (nk > kcap || !key) {
            uint8_t *k2 = realloc(key, nk + 1);
            if (!k2) {
                rc = cl_err_nomem(err);
                break;
            }
            key = k2;
            kcap = nk;
        }
        memcpy(key + shared, p, nonshared);
        klen = nk;
        p += nonshared;
        if ((rc = fn(arg, key, klen, p, vlen, err)) != 0)
            break;
        p += vlen;
    }
    free(key);
    return rc;
}

/* a (NUL-terminated) against b[0..bl) bytewise, shorter first on a common prefix. */
static int keycmp(const char *a, const uint8_t *b, size_t bl)
{
    size_t al = strlen(a);
    int c = memcmp(a, b, al < bl ? al : bl);
    return c ? c : al < bl ? -1 : al > bl;
}

static int add_entry(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, cl_err *err)
{
    eng_bundle *bd = arg;
    if (memchr(key, 0, klen))
        return bad(err, "a key holds a NUL byte", NULL);
    if (bd->n && keycmp(bd->e[bd->n - 1].key, key, klen) >= 0)
        return bad(err, "keys are not in strictly increasing order", NULL);
    if (bd->n >= MAX_ENTRIES)
        return cl_err_set(err, CL_E_FORMAT, "variables.index: more than %d entries", MAX_ENTRIES);
    if (bd->n == bd->cap) {
        size_t nc = bd->cap ? bd->cap * 2 : 64;
        bentry *e2 = realloc(bd->e, nc * sizeof *e2);
        if (!e2)
            return cl_err_nomem(err);
        bd->e = e2;
        bd->cap = nc;
    }
    bentry *e = &bd->e[bd->n];
    e->key = strndup((const char *)key, klen);
    e->val = malloc(vlen ? vlen : 1);
    if (!e->key || !e->val) {
        free(e->key);
        free(e->val);
        return cl_err_nomem(err);
    }
    memcpy(e->val, val, vlen);
    e->val_len = vlen;
    bd->n++;
    return 0;
}

typedef struct idx_ctx {
    const uint8_t *tbl;
    size_t len;
    eng_bundle *bd;
} idx_ctx;

static int index_entry(void *arg, const uint8_t *key, size_t klen, const uint8_t *val, size_t vlen, cl_err *err)
{
    (void)key;
    (void)klen;
    idx_ctx *c = arg;
    const uint8_t *p = val, *end = val + vlen;
    uint64_t off, size;
    if (eng_pb_varint(&p, end, &off) || eng_pb_varint(&p, end, &size))
        return bad(err, "an index entry is not a block handle", NULL);
    const uint8_t *blk;
    size_t blen;
    uint8_t *owned;
    if (read_block(c->tbl, c->len, off, size, &blk, &blen, &owned, err) != 0)
        return -1;
    int rc = block_entries(blk, blen, add_entry, c->bd, err);
    free(owned);
    return rc;
}

void eng_bundle_free(eng_bundle *b)
{
    if (!b)
        return;
    for (size_t i = 0; i < b->n; i++) {
        free(b->e[i].key);
        free(b->e[i].val);
    }
    free(b->e);
    free(b->shards);
    free(b);
}

static const bentry *find(const eng_bundle *b, const char *key)
{
    size_t lo = 0, hi = b->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(b->e[mid].key, key);
        if (c == 0)
            return &b->e[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

bool eng_bundle_has(const eng_bundle *b, const char *key) { return b && find(b, key) != NULL; }

int eng_bundle_open(const uint8_t *tbl, size_t len, const cl_engine_file *files, size_t n_files,
                    const char *data_prefix, eng_bundle **out, cl_err *err)
{
    *out = NULL;
    if (len < FOOTER_LEN)
        return bad(err, "shorter than an SSTable footer (truncated?)", NULL);
    const uint8_t *f = tbl + len - FOOTER_LEN;
    uint64_t magic = (uint64_t)le32(f + 40) | (uint64_t)le32(f + 44) << 32;
    if (magic != TABLE_MAGIC)
        return bad(err, "no SSTable magic at its end (not a TensorBundle index, or truncated)", NULL);
    const uint8_t *p = f, *fend = f + 40;
    uint64_t moff, msize, ioff, isize;
    if (eng_pb_varint(&p, fend, &moff) || eng_pb_varint(&p, fend, &msize) || eng_pb_varint(&p, fend, &ioff) ||
        eng_pb_varint(&p, fend, &isize))
        return bad(err, "the footer's block handles are malformed", NULL);
    (void)moff;
    (void)msize;
    eng_bundle *bd = calloc(1, sizeof *bd);
    if (!bd)
        return cl_err_nomem(err);
    const uint8_t *ib;
    size_t ilen;
    uint8_t *owned;
    idx_ctx c = {tbl, len - FOOTER_LEN, bd};
    if (read_block(tbl, len - FOOTER_LEN, ioff, isize, &ib, &ilen, &owned, err) != 0) {
        eng_bundle_free(bd);
        return -1;
    }
    int rc = block_entries(ib, ilen, index_entry, &c, err);
    free(owned);
    if (rc != 0) {
        eng_bundle_free(bd);
        return -1;
    }
    /* the header, under the empty key */
    const bentry *h = find(bd, "");
    if (!h) {
        eng_bundle_free(bd);
        return bad(err, "no BundleHeaderProto (empty key)", NULL);
    }
    if (eng_tf_pb_check(&tensorflow__bundle_header_proto__descriptor, h->val, h->val_len, "variables.index header", err) != 0) {
        eng_bundle_free(bd);
        return -1;
    }
    Tensorflow__BundleHeaderProto *hp = tensorflow__bundle_header_proto__unpack(NULL, h->val_len, h->val);
    if (!hp) {
        eng_bundle_free(bd);
        return bad(err, "the BundleHeaderProto does not parse", NULL);
    }
    int nsh = hp->num_shards, endian = hp->endianness;
    tensorflow__bundle_header_proto__free_unpacked(hp, NULL);
    if (endian != TENSORFLOW__BUNDLE_HEADER_PROTO__ENDIANNESS__LITTLE) {
        eng_bundle_free(bd);
        return cl_err_set(err, CL_E_UNSUPPORTED, "variables.index: the bundle is big-endian; not supported");
    }
    if (nsh < 1 || nsh > MAX_SHARDS) {
        eng_bundle_free(bd);
        return cl_err_set(err, CL_E_FORMAT, "variables.index: num_shards %d out of range (1..%d)", nsh, MAX_SHARDS);
    }
    bd->shards = calloc((size_t)nsh, sizeof *bd->shards);
    if (!bd->shards) {
        eng_bundle_free(bd);
        return cl_err_nomem(err);
    }
    bd->n_shards = nsh;
    for (int s = 0; s < nsh; s++) {
        char nm[512];
        snprintf(nm, sizeof nm, "%s.data-%05d-of-%05d", data_prefix, s, nsh);
        for (size_t i = 0; i < n_files; i++)
            if (strcmp(files[i].name, nm) == 0)
                bd->shards[s] = &files[i];
    }
    *out = bd;
    return 0;
}

int eng_bundle_read(const eng_bundle *b, const char *key, eng_tensor *t, cl_err *err)
{
    memset(t, 0, sizeof *t);
    const bentry *e = b ? find(b, key) : NULL;
    if (!e || !key[0])
        return cl_err_set(err, CL_E_FORMAT, "variable '%s' has no value in the checkpoint (variables.index)", key);
    if (eng_tf_pb_check(&tensorflow__bundle_entry_proto__descriptor, e->val, e->val_len, "a variables.index entry", err) != 0)
        return cl_err_prefix(err, "variable '%s'", key);
    Tensorflow__BundleEntryProto *ep = tensorflow__bundle_entry_proto__unpack(NULL, e->val_len, e->val);
    if (!ep)
        return cl_err_set(err, CL_E_FORMAT, "variables.index: the entry of '%s' does not parse", key);
    int rc = -1;
    cl_engine_dtype dt = eng_tf_dtype(ep->dtype);
    if (ep->n_slices) {
        cl_err_set(err, CL_E_UNSUPPORTED, "variable '%s' is partitioned into slices; not supported", key);
        goto out;
    }
    if (dt == CL_ENGINE_DT_UNDEFINED) {
        cl_err_set(err, CL_E_UNSUPPORTED, "variable '%s' has type %s, which the engine does not support", key,
                   eng_tf_dtype_name(ep->dtype));
        goto out;
    }
    t->dtype = dt;
    if (ep->shape) {
        if (ep->shape->n_dim > CL_ENGINE_MAX_RANK) {
            cl_err_set(err, CL_E_UNSUPPORTED, "variable '%s' has rank %zu (at most %d)", key, ep->shape->n_dim,
                       CL_ENGINE_MAX_RANK);
            goto out;
        }
        t->rank = (int)ep->shape->n_dim;
        for (int i = 0; i < t->rank; i++) {
            if (ep->shape->dim[i]->size < 0) {
                cl_err_set(err, CL_E_FORMAT, "variable '%s' has a negative dimension", key);
                goto out;
            }
            t->dims[i] = ep->shape->dim[i]->size;
        }
    }
    int64_t n = eng_dims_numel(t->dims, t->rank);
    if (n < 0) {
        cl_err_set(err, CL_E_FORMAT, "variable '%s' is too large", key);
        goto out;
    }
    size_t nb = (size_t)n * cl_engine_dtype_size(dt);
    if (ep->size < 0 || (uint64_t)ep->size != nb) {
        cl_err_set(err, CL_E_FORMAT, "variable '%s': shape %s needs %zu bytes, the entry says %lld", key,
                   eng_dims_str(t->dims, t->rank, (char[96]){0}, 96), nb, (long long)ep->size);
        goto out;
    }
    if (ep->shard_id < 0 || ep->shard_id >= b->n_shards || !b->shards[ep->shard_id]) {
        cl_err_set(err, CL_E_FORMAT, "variable '%s' is in data shard %d of %d, which is missing", key, ep->shard_id,
                   b->n_shards);
        goto out;
    }
    const cl_engine_file *sh = b->shards[ep->shard_id];
    if (ep->offset < 0 || (uint64_t)ep->offset > sh->len || nb > sh->len - (size_t)ep->offset) {
        cl_err_set(err, CL_E_FORMAT, "variable '%s': bytes %lld..%lld are outside %s (%zu bytes; truncated?)", key,
                   (long long)ep->offset, (long long)ep->offset + (long long)nb, sh->name, sh->len);
        goto out;
    }
    const uint8_t *src = sh->data + ep->offset;
    uint32_t got = cl_crc32c(0, src, nb), want = cl_crc32c_unmask(ep->crc32c);
    if (got != want) {
        cl_err_set(err, CL_E_FORMAT, "variable '%s' fails its CRC32C check in %s (stored %08x, computed %08x): the "
                   "checkpoint is corrupt", key, sh->name, want, got);
        goto out;
    }
    if (eng_tensor_alloc_const(t, err) != 0)
        goto out;
    if (nb)
        memcpy(t->data, src, nb);
    rc = 0;
out:
    tensorflow__bundle_entry_proto__free_unpacked(ep, NULL);
    return rc;
}
