/* store.c — the key server's SQLite store: secrets encrypted with AES-256-GCM under a key derived
 * from a master key that never enters the database, each bound (AAD) to a store-wide version
 * counter; the keyed state (a MAC'd row binding the audit checkpoint and a digest of every secret's
 * version) that makes a restored older row, a removed newest audit record or an emptied audit table
 * visible; the HMAC-chained audit log; and the migration of databases of the first format. One
 * connection guarded by a mutex (statements are microseconds; the state must change atomically). */
#include "cloister/keyserver.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "cloister/seal.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define SCHEMA_VERSION 2
#define AAD_V1 "cloister/keyserver/secret/v1" /* schema 1: AAD = AAD_V1 "\0" name */
#define AAD_V2 "cloister/keyserver/secret/v2" /* AAD = AAD_V2 "\0" u64be(version) name */
#define AUDIT_LABEL "cloister/keyserver/audit/v2"
#define STATE_LABEL "cloister/keyserver/state/v2"
#define GENESIS_HEX "0000000000000000000000000000000000000000000000000000000000000000"
#define AUDIT_FIELDS 17

/* the derived keys, in one block of secure memory */
/* K_CHECK1 is the first format's key check: a schema-2 database never holds it (K_CHECK2 instead), so
 * one cannot be made to pass as the first format, whose unkeyed chain anyone can recompute */
enum { K_ENC = 0, K_CHECK1 = 32, K_AUDIT = 64, K_STATE = 96, K_CHECK2 = 128, K_LEN = 160 };

/* The keyed state row (meta 'state'): audit checkpoint and secrets manifest digest, MAC'd. */
typedef struct state {
    int64_t audit_count;
    uint8_t audit_head[32]; /* MAC of the newest record; zeros when there is none */
    int64_t generation;     /* store-wide version counter: the version of the newest put */
    uint8_t manifest_digest[32];
} state;
#define STATE_BLOB 112 /* 8 + 32 + 8 + 32, then the 32-byte MAC */

/* one manifest entry: which version of a secret the keyed state records */
typedef struct mentry {
    char name[CL_POLICY_MAX_SECRET_NAME + 1];
    int64_t version;
} mentry;

struct cl_store {
    sqlite3 *db;
    pthread_mutex_t lock;
    uint8_t *keys; /* secure memory: enc | check | audit | state */
    EVP_MAC *hmac;           /* fetched once */
    EVP_MAC_CTX *audit_base; /* HMAC-SHA-256 keyed with the audit key, duplicated per record */
    sqlite3_stmt *cache[4]; /* the statements of every release and audit append, prepared once */
    /* the manifest, as last verified against the keyed state (cache keyed by its digest) */
    mentry *man;
    size_t man_n;
    bool man_valid;
    uint8_t man_digest[32];
    /* the highest counters this handle has verified: a drop means the file was rolled back under us */
    int64_t seen_generation, seen_audit_count;
};

static const char *k_tables_v2 =
    "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL, length INTEGER NOT NULL,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL, version INTEGER NOT NULL DEFAULT 0);"
    "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, peer TEXT NOT NULL,"
    " protocol TEXT NOT NULL, decision TEXT NOT NULL, evidence_type TEXT NOT NULL, insecure INTEGER NOT NULL,"
    " evidence_sha256 TEXT NOT NULL, mrenclave TEXT NOT NULL, mrsigner TEXT NOT NULL,"
    " isv_prod_id INTEGER NOT NULL, isv_svn INTEGER NOT NULL, debug INTEGER NOT NULL, identities TEXT NOT NULL,"
    " secrets TEXT NOT NULL, reason TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL,"
    " claims TEXT NOT NULL DEFAULT '');";

/* ---------------------------------------------------------------- master key */

char *cl_store_master_key_path(const char *path, cl_err *err)
{
    const char *p = path ? path : getenv(CL_KS_MASTER_KEY_ENV);
    if (!p || !*p) {
        cl_err_set(err, CL_E_INVALID, "no master key given: pass --master-key FILE or set %s=FILE (a file made "
                   "by `cloister keygen`, or created by the first `secret put`; keep it on other storage than "
                   "the database)", CL_KS_MASTER_KEY_ENV);
        return NULL;
    }
    char *copy = strdup(p);
    if (!copy)
        cl_err_nomem(err);
    return copy;
}

int cl_store_master_key_load(const char *path, bool create, uint8_t key[CL_KS_MASTER_KEY_LEN], cl_err *err)
{
    struct stat st;
    if (create && stat(path, &st) != 0 && errno == ENOENT) {
        if (cl_seal_key_generate(key, err) != 0 || cl_seal_key_save(path, key, err) != 0)
            return cl_err_prefix(err, "cannot create master key '%s'", path);
        CL_INFO("keyserver", "created a new master key in %s (keep it apart from the database and back it up)",
                path);
        return 0;
    }
    if (cl_seal_key_load(path, key, err) != 0) {
        if (stat(path, &st) != 0 && errno == ENOENT)
            return cl_err_set(err, CL_E_IO, "no master key at '%s': `cloister keygen --out FILE` makes one, or "
                              "the first `cloister keyserver secret put --master-key FILE` creates it", path);
        return cl_err_prefix(err, "master key");
    }
    return 0;
}

/* ---------------------------------------------------------------- small helpers */

static int db_err(cl_store *s, cl_err *err, const char *what)
{
    return cl_err_set(err, CL_E_IO, "database: %s: %s", what, sqlite3_errmsg(s->db));
}

static void put64(uint8_t *p, int64_t v)
{
    for (int i = 7; i >= 0; i--, v = (int64_t)((uint64_t)v >> 8))
        p[i] = (uint8_t)v;
}

static int64_t get64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = v << 8 | p[i];
    return (int64_t)v;
}

static int exec(cl_store *s, const char *sql, cl_err *err, const char *what)
{
    char *msg = NULL;
    if (sqlite3_exec(s->db, sql, NULL, NULL, &msg) != SQLITE_OK) {
        cl_err_set(err, CL_E_IO, "database: %s: %s", what, msg ? msg : sqlite3_errmsg(s->db));
        sqlite3_free(msg);
        return -1;
    }
    return 0;
}

static void rollback(cl_store *s) { sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL); }

enum { ST_META_GET, ST_META_PUT, ST_AUDIT_INSERT, ST_SECRET_GET };

/* a cached statement, ready to bind (cached_done resets it) */
static int cached(cl_store *s, int i, const char *sql, sqlite3_stmt **st)
{
    if (!s->cache[i] && sqlite3_prepare_v3(s->db, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->cache[i], NULL) != SQLITE_OK) {
        *st = NULL;
        return -1;
    }
    *st = s->cache[i];
    return 0;
}

static void cached_done(sqlite3_stmt *st)
{
    if (st) {
        sqlite3_reset(st);
        sqlite3_clear_bindings(st);
    }
}

/* meta(key) as a blob: 0 and a malloc()ed copy, 1 when absent, -1 on errors */
static int meta_get(cl_store *s, const char *key, uint8_t **val, size_t *len, cl_err *err)
{
    *val = NULL;
    *len = 0;
    sqlite3_stmt *st = NULL;
    if (cached(s, ST_META_GET, "SELECT value FROM meta WHERE key=?", &st) != 0)
        return db_err(s, err, "reading meta");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st), result = 1;
    if (rc == SQLITE_ROW) {
        const void *b = sqlite3_column_blob(st, 0);
        size_t n = (size_t)sqlite3_column_bytes(st, 0);
        if ((*val = malloc(n ? n : 1)) == NULL) {
            result = cl_err_nomem(err);
        } else {
            if (n)
                memcpy(*val, b, n);
            *len = n;
            result = 0;
        }
    } else if (rc != SQLITE_DONE) {
        result = db_err(s, err, "reading meta");
    }
    cached_done(st);
    return result;
}

static int meta_put(cl_store *s, const char *key, const void *val, size_t len, cl_err *err)
{
    sqlite3_stmt *st = NULL;
    int result = 0;
    if (cached(s, ST_META_PUT, "INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET "
               "value=excluded.value", &st) != 0)
        return db_err(s, err, "writing meta");
    sqlite3_bind_text(st, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, len ? val : "", (int)len, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE)
        result = db_err(s, err, "writing meta");
    cached_done(st);
    return result;
}

static int64_t count_rows(cl_store *s, const char *table)
{
    char sql[64];
    snprintf(sql, sizeof sql, "SELECT COUNT(*) FROM %s", table);
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return n; /* -1 also when the table does not exist */
}

/* ---------------------------------------------------------------- keyed state */

static void state_encode(const cl_store *s, const state *x, uint8_t out[STATE_BLOB])
{
    put64(out, x->audit_count);
    memcpy(out + 8, x->audit_head, 32);
    put64(out + 40, x->generation);
    memcpy(out + 48, x->manifest_digest, 32);
    unsigned int n = 32;
    uint8_t msg[sizeof STATE_LABEL + 80];
    memcpy(msg, STATE_LABEL, sizeof STATE_LABEL);
    memcpy(msg + sizeof STATE_LABEL, out, 80);
    if (!HMAC(EVP_sha256(), s->keys + K_STATE, 32, msg, sizeof msg, out + 80, &n))
        memset(out + 80, 0, 32); /* cannot verify later: fails closed */
}

/* The keyed state, verified. CL_E_AUTH when it is missing, edited, or older than one this handle saw. */
static int state_load(cl_store *s, state *x, cl_err *err)
{
    uint8_t *b;
    size_t n;
    int rc = meta_get(s, "state", &b, &n, err);
    if (rc < 0)
        return -1;
    if (rc == 1)
        return cl_err_set(err, CL_E_AUTH, "the store's keyed state is missing from the database (its meta table "
                          "was edited outside cloister): the audit log and secret versions cannot be trusted");
    uint8_t want[STATE_BLOB];
    bool ok = n == STATE_BLOB;
    if (ok) {
        x->audit_count = get64(b);
        memcpy(x->audit_head, b + 8, 32);
        x->generation = get64(b + 40);
        memcpy(x->manifest_digest, b + 48, 32);
        state_encode(s, x, want);
        ok = cl_memeq_ct(want + 80, b + 80, 32) == 0;
    }
    free(b);
    if (!ok)
        return cl_err_set(err, CL_E_AUTH, "the store's keyed state does not verify (edited outside cloister, or "
                          "written under another master key)");
    if (x->generation < s->seen_generation || x->audit_count < s->seen_audit_count)
        return cl_err_set(err, CL_E_AUTH, "the database was rolled back to an older copy while this process had it "
                          "open (secret version %lld < %lld, audit records %lld < %lld)", (long long)x->generation,
                          (long long)s->seen_generation, (long long)x->audit_count, (long long)s->seen_audit_count);
    s->seen_generation = x->generation;
    s->seen_audit_count = x->audit_count;
    return 0;
}

static int state_store(cl_store *s, const state *x, cl_err *err)
{
    uint8_t b[STATE_BLOB];
    state_encode(s, x, b);
    return meta_put(s, "state", b, sizeof b, err); /* seen_* advance when it is read back, committed */
}

/* manifest blob: entries sorted by name, each u8 name_len, name, u64be version */
static int man_cmp(const void *a, const void *b) { return strcmp(((const mentry *)a)->name, ((const mentry *)b)->name); }

static void man_encode(const mentry *m, size_t n, cl_strbuf *b)
{
    for (size_t i = 0; i < n; i++) {
        uint8_t hdr = (uint8_t)strlen(m[i].name), v[8];
        put64(v, m[i].version);
        cl_strbuf_put(b, &hdr, 1);
        cl_strbuf_put(b, m[i].name, hdr);
        cl_strbuf_put(b, v, 8);
    }
}

static void digest(const void *p, size_t n, uint8_t out[32]) { SHA256(p, n, out); }

/* Loads the manifest the keyed state `x` records into s->man (cached by digest). */
static int man_load(cl_store *s, const state *x, cl_err *err)
{
    if (s->man_valid && memcmp(s->man_digest, x->manifest_digest, 32) == 0)
        return 0;
    s->man_valid = false;
    uint8_t *b;
    size_t n;
    int rc = meta_get(s, "manifest", &b, &n, err);
    if (rc < 0)
        return -1;
    uint8_t d[32];
    digest(rc == 0 ? b : (const uint8_t *)"", rc == 0 ? n : 0, d);
    if (rc == 1 || cl_memeq_ct(d, x->manifest_digest, 32) != 0) {
        free(b);
        return cl_err_set(err, CL_E_AUTH, "the store's list of secret versions %s the keyed state (edited or "
                          "restored from an older copy outside cloister)", rc == 1 ? "is missing, unlike" :
                          "does not match");
    }
    size_t cnt = 0;
    for (size_t o = 0; o < n; cnt++)
        o += 1 + (size_t)b[o] + 8; /* digest matched: well formed, as written by man_store */
    mentry *m = calloc(cnt ? cnt : 1, sizeof(*m));
    if (!m) {
        free(b);
        return cl_err_nomem(err);
    }
    size_t o = 0;
    for (size_t i = 0; i < cnt; i++) {
        size_t l = b[o++];
        memcpy(m[i].name, b + o, l);
        m[i].name[l] = 0;
        o += l;
        m[i].version = get64(b + o);
        o += 8;
    }
    free(b);
    free(s->man);
    s->man = m;
    s->man_n = cnt;
    memcpy(s->man_digest, x->manifest_digest, 32);
    s->man_valid = true;
    return 0;
}

/* Writes `m` (sorted here) as the manifest and its digest into *x (the caller stores the state). */
static int man_store(cl_store *s, mentry *m, size_t n, state *x, cl_err *err)
{
    if (n)
        qsort(m, n, sizeof(*m), man_cmp);
    cl_strbuf b = {0};
    man_encode(m, n, &b);
    size_t len = 0;
    char *blob = n ? cl_strbuf_take(&b, &len) : NULL;
    if (n && !blob)
        return cl_err_nomem(err);
    int rc = meta_put(s, "manifest", blob, len, err);
    digest(blob ? blob : "", len, x->manifest_digest);
    free(blob);
    s->man_valid = false; /* reloaded (and so re-verified) on next use */
    return rc;
}

static const mentry *man_find(const cl_store *s, const char *name)
{
    mentry key = {0};
    snprintf(key.name, sizeof key.name, "%s", name);
    return s->man_n ? bsearch(&key, s->man, s->man_n, sizeof(mentry), man_cmp) : NULL;
}

/* ---------------------------------------------------------------- secrets: crypto */

static int gcm(const uint8_t *key, bool enc, const uint8_t *nonce, const char *name, int64_t version, const uint8_t *in,
               size_t len, uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 0, n;
    if (!c)
        return -1;
    uint8_t ver[8];
    put64(ver, version);
    bool v1 = version < 0; /* schema 1 (only while migrating) */
    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) &&
        EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) &&
        EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)(v1 ? AAD_V1 : AAD_V2),
                         (int)(v1 ? sizeof AAD_V1 : sizeof AAD_V2)) &&
        (v1 || EVP_CipherUpdate(c, NULL, &n, ver, 8)) &&
        EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)name, (int)strlen(name)) &&
        (len == 0 || EVP_CipherUpdate(c, out, &n, in, (int)len)) &&
        (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag)) && EVP_CipherFinal_ex(c, out + len, &n) &&
        (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag)))
        ok = 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

/* nonce ‖ ciphertext ‖ tag, malloc()ed */
static uint8_t *seal_value(cl_store *s, const char *name, int64_t version, const uint8_t *value, size_t len,
                           size_t *blob_len, cl_err *err)
{
    *blob_len = NONCE_LEN + len + TAG_LEN;
    uint8_t *blob = malloc(*blob_len);
    if (!blob) {
        cl_err_nomem(err);
        return NULL;
    }
    if (RAND_bytes(blob, NONCE_LEN) != 1 ||
        gcm(s->keys + K_ENC, true, blob, name, version, value, len, blob + NONCE_LEN, blob + NONCE_LEN + len) != 0) {
        free(blob);
        cl_err_ssl(err, CL_E_CRYPTO, "cannot encrypt secret '%s'", name);
        return NULL;
    }
    return blob;
}

static int open_value(cl_store *s, const char *name, int64_t version, const uint8_t *blob, size_t blob_len,
                      uint8_t *out, cl_err *err)
{
    size_t n = blob_len - NONCE_LEN - TAG_LEN;
    uint8_t tag[TAG_LEN];
    memcpy(tag, blob + NONCE_LEN + n, TAG_LEN);
    if (gcm(s->keys + K_ENC, false, blob, name, version, blob + NONCE_LEN, n, out, tag) != 0) {
        cl_memzero(out, n);
        return cl_err_set(err, CL_E_AUTH, "secret '%s' does not decrypt (tampered with, or another master key)", name);
    }
    return 0;
}

/* ---------------------------------------------------------------- audit: MAC */

/* mac = HMAC-SHA-256(audit key, AUDIT_LABEL "\0" ‖ prev(32) ‖ for each field: u32be len ‖ bytes) */
static int audit_mac(const cl_store *s, const uint8_t prev[32], const char *const f[AUDIT_FIELDS],
                     const size_t len[AUDIT_FIELDS], uint8_t out[32])
{
    EVP_MAC_CTX *c = EVP_MAC_CTX_dup(s->audit_base);
    int ok = c && EVP_MAC_update(c, (const uint8_t *)AUDIT_LABEL, sizeof AUDIT_LABEL) && EVP_MAC_update(c, prev, 32);
    for (int i = 0; ok && i < AUDIT_FIELDS; i++) {
        uint8_t l[4] = {(uint8_t)(len[i] >> 24), (uint8_t)(len[i] >> 16), (uint8_t)(len[i] >> 8), (uint8_t)len[i]};
        ok = EVP_MAC_update(c, l, 4) && (len[i] == 0 || EVP_MAC_update(c, (const uint8_t *)f[i], len[i]));
    }
    size_t outl = 0;
    ok = ok && EVP_MAC_final(c, out, &outl, 32) && outl == 32;
    EVP_MAC_CTX_free(c);
    return ok ? 0 : -1;
}

static const char *str0(const char *p) { return p ? p : ""; }

/* the 17 fields of a record, as the MAC sees them */
static void record_fields(const cl_audit_record *r, char num[5][24], const char *f[AUDIT_FIELDS],
                          size_t len[AUDIT_FIELDS])
{
    snprintf(num[0], 24, "%lld", (long long)r->seq);
    snprintf(num[1], 24, "%d", r->insecure ? 1 : 0);
    snprintf(num[2], 24, "%d", r->isv_prod_id);
    snprintf(num[3], 24, "%d", r->isv_svn);
    snprintf(num[4], 24, "%d", r->debug);
    const char *v[AUDIT_FIELDS] = {num[0], r->time, r->peer, r->protocol, r->decision, r->evidence_type, num[1],
                                   r->evidence_sha256, r->mrenclave, r->mrsigner, num[2], num[3], num[4],
                                   str0(r->identities), str0(r->secrets), str0(r->reason), str0(r->claims)};
    for (int i = 0; i < AUDIT_FIELDS; i++) {
        f[i] = v[i];
        len[i] = strlen(v[i]);
    }
}

/* the columns, in the order of record_fields, then prev_hash and hash */
#define AUDIT_COLS "seq, time, peer, protocol, decision, evidence_type, insecure, evidence_sha256, mrenclave, " \
                   "mrsigner, isv_prod_id, isv_svn, debug, identities, secrets, reason, claims, prev_hash, hash"

static void row_fields(sqlite3_stmt *st, const char *f[AUDIT_FIELDS], size_t len[AUDIT_FIELDS])
{
    for (int i = 0; i < AUDIT_FIELDS; i++) {
        const unsigned char *t = sqlite3_column_text(st, i);
        f[i] = t ? (const char *)t : "";
        len[i] = t ? (size_t)sqlite3_column_bytes(st, i) : 0;
    }
}

/* The first format's chain (schema 1), only to check a database before migrating it:
 * SHA-256(prev_hash "\n" seq 0x1F time 0x1F ... 0x1F reason), every column as text. */
static void legacy_hash(const char *prev, const char *const f[16], uint8_t out[32])
{
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    memset(out, 0, 32);
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
        EVP_DigestUpdate(c, prev, strlen(prev));
        EVP_DigestUpdate(c, "\n", 1);
        for (int i = 0; i < 16; i++) {
            if (i)
                EVP_DigestUpdate(c, "\x1f", 1);
            EVP_DigestUpdate(c, f[i], strlen(f[i]));
        }
        EVP_DigestFinal_ex(c, out, NULL);
    }
    EVP_MD_CTX_free(c);
}

/* ---------------------------------------------------------------- open, create, migrate */

void cl_store_close(cl_store *s)
{
    if (!s)
        return;
    for (size_t i = 0; i < CL_ARRAY_LEN(s->cache); i++)
        sqlite3_finalize(s->cache[i]);
    sqlite3_close(s->db);
    cl_secmem_free(s->keys);
    EVP_MAC_CTX_free(s->audit_base);
    EVP_MAC_free(s->hmac);
    free(s->man);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

static int derive_keys(cl_store *s, const uint8_t master[CL_KS_MASTER_KEY_LEN], cl_err *err)
{
    static const char *labels[] = {"cloister/keyserver/enc/v1", "cloister/keyserver/check/v1",
                                   "cloister/keyserver/audit/v1", "cloister/keyserver/state/v1",
                                   "cloister/keyserver/check/v2"};
    for (int i = 0; i < 5; i++) {
        unsigned int n = 32;
        if (!HMAC(EVP_sha256(), master, CL_KS_MASTER_KEY_LEN, (const uint8_t *)labels[i], strlen(labels[i]),
                  s->keys + 32 * i, &n))
            return cl_err_ssl(err, CL_E_CRYPTO, "key derivation failed");
    }
    return 0;
}

/* The key check of a database that claims schema `schema` (1: the first format, 2: this one). A
 * schema-2 database holds K_CHECK2 only: the first format's value (K_CHECK1) in it means it was
 * written before the two were told apart, and it is replaced (*upgrade). A database that claims the
 * first format but holds K_CHECK2 had its schema taken away outside cloister: refused, since
 * migrating it would re-chain, under the keyed MAC, a history anyone can rewrite in the first format. */
static int check_key(cl_store *s, const char *db_path, int schema, bool *upgrade, cl_err *err)
{
    uint8_t *b;
    size_t n;
    *upgrade = false;
    int rc = meta_get(s, "key_check", &b, &n, err);
    if (rc != 0)
        return rc < 0 ? -1 : cl_err_set(err, CL_E_AUTH, "database '%s' has no key check value (its meta table was "
                                        "edited outside cloister)", db_path);
    bool v1 = n == 32 && cl_memeq_ct(b, s->keys + K_CHECK1, 32) == 0;
    bool v2 = n == 32 && cl_memeq_ct(b, s->keys + K_CHECK2, 32) == 0;
    free(b);
    if (schema == 1 && v2)
        return cl_err_set(err, CL_E_AUTH, "database '%s' claims the first format (no schema), but its key check is "
                          "that of schema %d: its schema was removed outside cloister (a downgrade to the unkeyed "
                          "first format, whose audit chain anyone can rewrite); refusing it (restore a backup)",
                          db_path, SCHEMA_VERSION);
    if (!v1 && !v2)
        return cl_err_set(err, CL_E_KEY, "the master key does not belong to database '%s' (wrong --master-key?)",
                          db_path);
    *upgrade = schema != 1 && v1;
    return 0;
}

static int write_schema(cl_store *s, cl_err *err)
{
    char v[8];
    snprintf(v, sizeof v, "%d", SCHEMA_VERSION);
    return meta_put(s, "schema", v, strlen(v), err);
}

/* a new database: tables, key check, empty manifest and state */
static int create_fresh(cl_store *s, cl_err *err)
{
    if (exec(s, k_tables_v2, err, "creating the tables") != 0 ||
        meta_put(s, "key_check", s->keys + K_CHECK2, 32, err) != 0)
        return -1;
    state x = {0};
    return man_store(s, NULL, 0, &x, err) == 0 && state_store(s, &x, err) == 0 ? write_schema(s, err) : -1;
}

/* schema 1 -> 2: secrets re-encrypted with versions 1..n, the audit chain checked in its old form and
 * re-chained with the keyed MAC, then the state. Inside the caller's transaction. */
static int migrate_v1(cl_store *s, const char *db_path, cl_err *err)
{
    if (exec(s, "ALTER TABLE secrets ADD COLUMN version INTEGER NOT NULL DEFAULT 0;"
                "ALTER TABLE audit ADD COLUMN claims TEXT NOT NULL DEFAULT ''", err, "migrating the tables") != 0)
        return -1;
    int result = -1;
    sqlite3_stmt *q = NULL, *u = NULL;
    mentry *m = NULL;
    size_t n = 0;
    state x = {0};
    int64_t nsecrets = count_rows(s, "secrets");
    if (nsecrets < 0 || !(m = calloc((size_t)nsecrets + 1, sizeof(*m))))
        goto out;
    if (sqlite3_prepare_v2(s->db, "SELECT name, value FROM secrets ORDER BY name", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "UPDATE secrets SET value=?, version=? WHERE name=?", -1, &u, NULL) != SQLITE_OK) {
        db_err(s, err, "migrating secrets");
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW && n < (size_t)nsecrets) {
        const char *name = (const char *)sqlite3_column_text(q, 0);
        const uint8_t *blob = sqlite3_column_blob(q, 1);
        size_t blob_len = (size_t)sqlite3_column_bytes(q, 1);
        if (!name || !cl_policy_secret_name_valid(name) || blob_len < NONCE_LEN + TAG_LEN ||
            blob_len - NONCE_LEN - TAG_LEN > CL_KS_SECRET_MAX) {
            cl_err_set(err, CL_E_FORMAT, "secret '%s' is corrupt", name ? name : "?");
            goto out;
        }
        size_t len = blob_len - NONCE_LEN - TAG_LEN, new_len;
        uint8_t *v = cl_secmem_alloc(len ? len : 1, err);
        if (!v || open_value(s, name, -1, blob, blob_len, v, err) != 0) {
            cl_secmem_free(v);
            goto out;
        }
        snprintf(m[n].name, sizeof m[n].name, "%s", name);
        m[n].version = ++x.generation;
        uint8_t *sealed = seal_value(s, name, m[n].version, v, len, &new_len, err);
        cl_secmem_free(v);
        if (!sealed)
            goto out;
        sqlite3_reset(u);
        sqlite3_bind_blob(u, 1, sealed, (int)new_len, SQLITE_TRANSIENT);
        sqlite3_bind_int64(u, 2, m[n].version);
        sqlite3_bind_text(u, 3, m[n].name, -1, SQLITE_STATIC);
        free(sealed);
        if (sqlite3_step(u) != SQLITE_DONE) {
            db_err(s, err, "migrating secrets");
            goto out;
        }
        n++;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "migrating secrets");
        goto out;
    }
    sqlite3_finalize(q);
    sqlite3_finalize(u);
    q = u = NULL;

    /* the audit chain: the old hashes must hold, then every row gets its MAC */
    if (sqlite3_prepare_v2(s->db, "SELECT " AUDIT_COLS " FROM audit ORDER BY seq", -1, &q, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(s->db, "UPDATE audit SET prev_hash=?, hash=? WHERE seq=?", -1, &u, NULL) != SQLITE_OK) {
        db_err(s, err, "migrating the audit log");
        goto out;
    }
    char old_prev[65] = GENESIS_HEX;
    int64_t expect = 1;
    while ((rc = sqlite3_step(q)) == SQLITE_ROW) {
        const char *f[AUDIT_FIELDS];
        size_t len[AUDIT_FIELDS];
        row_fields(q, f, len);
        int64_t seq = sqlite3_column_int64(q, 0);
        const char *prev_col = (const char *)sqlite3_column_text(q, AUDIT_FIELDS);
        const char *hash_col = (const char *)sqlite3_column_text(q, AUDIT_FIELDS + 1);
        uint8_t h[32];
        char hx[65];
        legacy_hash(old_prev, f, h);
        cl_hex_encode(h, 32, hx);
        if (seq != expect || !prev_col || strcmp(prev_col, old_prev) != 0 || !hash_col || strcmp(hash_col, hx) != 0) {
            cl_err_set(err, CL_E_AUTH, "cannot migrate database '%s': its audit log (first format) is broken at "
                       "record %lld; nothing was changed (inspect it with `cloister` of the version that wrote it, "
                       "or restore a backup)", db_path, (long long)expect);
            goto out;
        }
        snprintf(old_prev, sizeof old_prev, "%s", hx);
        uint8_t mac[32];
        char prev_hex[65], mac_hex[65];
        if (audit_mac(s, x.audit_head, f, len, mac) != 0) {
            cl_err_ssl(err, CL_E_CRYPTO, "audit MAC failed");
            goto out;
        }
        cl_hex_encode(x.audit_head, 32, prev_hex);
        cl_hex_encode(mac, 32, mac_hex);
        sqlite3_reset(u);
        sqlite3_bind_text(u, 1, prev_hex, -1, SQLITE_TRANSIENT);
        sqlite3_bind_text(u, 2, mac_hex, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(u, 3, seq);
        if (sqlite3_step(u) != SQLITE_DONE) {
            db_err(s, err, "migrating the audit log");
            goto out;
        }
        memcpy(x.audit_head, mac, 32);
        x.audit_count = expect++;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "migrating the audit log");
        goto out;
    }
    if (man_store(s, m, n, &x, err) != 0 || state_store(s, &x, err) != 0 || write_schema(s, err) != 0 ||
        meta_put(s, "key_check", s->keys + K_CHECK2, 32, err) != 0)
        goto out;
    CL_INFO("keyserver", "migrated database '%s' to schema %d: %zu secret(s) re-encrypted with versions, %lld audit "
            "record(s) re-chained with the keyed MAC", db_path, SCHEMA_VERSION, n, (long long)x.audit_count);
    result = 0;
out:
    if (result != 0 && err && err->code == CL_OK)
        cl_err_set(err, CL_E_NOMEM, "out of memory migrating the database");
    sqlite3_finalize(q);
    sqlite3_finalize(u);
    free(m);
    return result;
}

/* creates (when `create`), checks the key of, or migrates the database; one write transaction */
static int prepare(cl_store *s, const char *db_path, bool create, cl_err *err)
{
    if (!create && count_rows(s, "meta") < 0)
        return cl_err_set(err, CL_E_FORMAT, "'%s' is not a key server database (it has no meta table)", db_path);
    if (exec(s, "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL)", err,
             "initialising") != 0 ||
        exec(s, "BEGIN IMMEDIATE", err, "initialising") != 0)
        return -1;
    uint8_t *b;
    size_t n;
    int rc = meta_get(s, "schema", &b, &n, err);
    if (rc < 0)
        goto fail;
    if (rc == 0) {
        char v[16] = "";
        memcpy(v, b, n < sizeof v - 1 ? n : sizeof v - 1);
        free(b);
        if (strcmp(v, "2") != 0) {
            cl_err_set(err, CL_E_VERSION, "database '%s' has schema '%s'; this cloister reads schema %d (written by a "
                       "newer cloister?)", db_path, v, SCHEMA_VERSION);
            goto fail;
        }
        bool upgrade;
        if (check_key(s, db_path, 2, &upgrade, err) != 0)
            goto fail;
        if (upgrade) {
            if (meta_put(s, "key_check", s->keys + K_CHECK2, 32, err) != 0)
                goto fail;
            CL_INFO("keyserver", "database '%s': key check value replaced by schema %d's own", db_path,
                    SCHEMA_VERSION);
        }
    } else {
        rc = meta_get(s, "key_check", &b, &n, err);
        if (rc < 0)
            goto fail;
        free(b);
        if (rc == 0) { /* schema 1: written by the first format */
            bool upgrade;
            if (check_key(s, db_path, 1, &upgrade, err) != 0 || migrate_v1(s, db_path, err) != 0)
                goto fail;
        } else {
            int64_t secrets = count_rows(s, "secrets"), audit = count_rows(s, "audit");
            if (secrets > 0 || audit > 0) {
                cl_err_set(err, CL_E_AUTH, "database '%s' holds %lld secret(s) and %lld audit record(s) but no key "
                           "check value or schema (its meta table was emptied outside cloister)", db_path,
                           (long long)(secrets > 0 ? secrets : 0), (long long)(audit > 0 ? audit : 0));
                goto fail;
            }
            if (!create) {
                cl_err_set(err, CL_E_AUTH, "database '%s' holds no key check value, schema or keyed state: it was "
                           "never initialised, or every row of it was removed outside cloister (its audit log with "
                           "them)", db_path);
                goto fail;
            }
            if (create_fresh(s, err) != 0)
                goto fail;
        }
    }
    if (exec(s, "COMMIT", err, "initialising") != 0)
        goto fail;
    return 0;
fail:
    rollback(s);
    return -1;
}

static cl_store *store_open(const char *db_path, const uint8_t master[CL_KS_MASTER_KEY_LEN], bool create,
                            cl_err *err)
{
    struct stat st;
    if (!create && stat(db_path, &st) != 0) {
        cl_err_errno(err, CL_E_IO, errno, "no database at '%s'", db_path);
        return NULL;
    }
    cl_store *s = calloc(1, sizeof(*s));
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->keys = cl_secmem_alloc(K_LEN, err);
    if (!s->keys || derive_keys(s, master, err) != 0)
        goto fail;
    OSSL_PARAM params[] = {OSSL_PARAM_construct_utf8_string("digest", (char *)"SHA256", 0), OSSL_PARAM_construct_end()};
    if (!(s->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)) || !(s->audit_base = EVP_MAC_CTX_new(s->hmac)) ||
        !EVP_MAC_init(s->audit_base, s->keys + K_AUDIT, 32, params)) {
        cl_err_ssl(err, CL_E_CRYPTO, "HMAC-SHA-256 is not available");
        goto fail;
    }
    if (sqlite3_open_v2(db_path, &s->db, SQLITE_OPEN_READWRITE | (create ? SQLITE_OPEN_CREATE : 0) |
                        SQLITE_OPEN_FULLMUTEX, NULL) != SQLITE_OK) {
        cl_err_set(err, CL_E_IO, "cannot open database '%s': %s", db_path,
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    chmod(db_path, 0600);
    sqlite3_busy_timeout(s->db, 5000);
    if (exec(s, "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL", err, "initialising") != 0 ||
        prepare(s, db_path, create, err) != 0)
        goto fail;
    return s;
fail:
    cl_store_close(s);
    return NULL;
}

cl_store *cl_store_open(const char *db_path, const uint8_t master[CL_KS_MASTER_KEY_LEN], cl_err *err)
{
    return store_open(db_path, master, true, err);
}

cl_store *cl_store_open_existing(const char *db_path, const uint8_t master[CL_KS_MASTER_KEY_LEN], cl_err *err)
{
    return store_open(db_path, master, false, err);
}

/* ---------------------------------------------------------------- secrets */

int cl_store_put(cl_store *s, const char *name, const uint8_t *value, size_t len, bool replace, cl_err *err)
{
    if (!cl_policy_secret_name_valid(name))
        return cl_err_set(err, CL_E_INVALID, "'%s' is not a valid secret name (A-Z a-z 0-9 . _ : / -, 1-128)", name);
    if (len > CL_KS_SECRET_MAX)
        return cl_err_set(err, CL_E_INVALID, "secret '%s' is %zu bytes; the limit is %d", name, len, CL_KS_SECRET_MAX);
    pthread_mutex_lock(&s->lock);
    int result = -1;
    uint8_t *blob = NULL;
    sqlite3_stmt *st = NULL;
    mentry *m = NULL;
    state x;
    if (exec(s, "BEGIN IMMEDIATE", err, "storing a secret") != 0)
        goto unlock;
    if (state_load(s, &x, err) != 0 || man_load(s, &x, err) != 0)
        goto fail;
    const mentry *cur = man_find(s, name);
    if (cur && !replace) {
        cl_err_set(err, CL_E_EXISTS, "secret '%s' already exists (use --force to replace it)", name);
        goto fail;
    }
    int64_t version = x.generation + 1;
    size_t blob_len;
    if (!(blob = seal_value(s, name, version, value, len, &blob_len, err)))
        goto fail;
    /* the keyed state decides what exists: a row it does not know (added outside cloister) is replaced
     * only with --force */
    const char *sql = replace ? "INSERT INTO secrets(name, value, length, created, updated, version) "
                                "VALUES(?1,?2,?3,?4,?4,?5) "
                                "ON CONFLICT(name) DO UPDATE SET value=?2, length=?3, updated=?4, version=?5"
                              : "INSERT INTO secrets(name, value, length, created, updated, version) "
                                "VALUES(?1,?2,?3,?4,?4,?5)";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, "storing a secret");
        goto fail;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    sqlite3_bind_blob(st, 2, blob, (int)blob_len, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, (sqlite3_int64)len);
    sqlite3_bind_int64(st, 4, (int64_t)time(NULL));
    sqlite3_bind_int64(st, 5, version);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT) {
        cl_err_set(err, CL_E_EXISTS, "a row for secret '%s' exists although the store's keyed state does not list it "
                   "(added outside cloister); use --force to replace it", name);
        goto fail;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "storing a secret");
        goto fail;
    }
    size_t n = s->man_n + (cur ? 0 : 1);
    if (!(m = calloc(n, sizeof(*m)))) {
        cl_err_nomem(err);
        goto fail;
    }
    if (s->man_n)
        memcpy(m, s->man, s->man_n * sizeof(*m));
    mentry *e = cur ? &m[cur - s->man] : &m[n - 1];
    snprintf(e->name, sizeof e->name, "%s", name);
    e->version = version;
    x.generation = version;
    if (man_store(s, m, n, &x, err) != 0 || state_store(s, &x, err) != 0 ||
        exec(s, "COMMIT", err, "storing a secret") != 0)
        goto fail;
    result = 0;
    goto unlock;
fail:
    rollback(s);
    s->man_valid = false;
unlock:
    sqlite3_finalize(st);
    free(blob);
    free(m);
    pthread_mutex_unlock(&s->lock);
    return result;
}

/* The row of `name`, checked against the keyed state; with `buf`, decrypted into it (at most cap).
 * 0, 1 (no such secret), -1. Holds the lock; inside a read transaction for a consistent view. */
static int fetch(cl_store *s, const char *name, uint8_t **alloc, uint8_t *buf, size_t cap, size_t *len, bool decrypt,
                 cl_err *err)
{
    *len = 0;
    int result = -1;
    sqlite3_stmt *st = NULL;
    state x;
    if (exec(s, "BEGIN", err, "reading a secret") != 0)
        return -1;
    if (state_load(s, &x, err) != 0 || man_load(s, &x, err) != 0)
        goto out;
    const mentry *want = man_find(s, name);
    if (cached(s, ST_SECRET_GET, "SELECT value, version FROM secrets WHERE name=?", &st) != 0) {
        db_err(s, err, "reading a secret");
        goto out;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        result = want ? cl_err_set(err, CL_E_AUTH, "secret '%s' (version %lld) is missing from the database although "
                                   "the store's keyed state lists it (deleted outside cloister)", name,
                                   (long long)want->version) : 1;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        db_err(s, err, "reading a secret");
        goto out;
    }
    int64_t version = sqlite3_column_int64(st, 1);
    if (!want) {
        cl_err_set(err, CL_E_AUTH, "secret '%s' is in the database but not in the store's keyed state (added or "
                   "restored outside cloister); refusing it", name);
        goto out;
    }
    if (version != want->version) {
        cl_err_set(err, CL_E_AUTH, "secret '%s' in the database is version %lld, %s than version %lld that the store's "
                   "keyed state records (restored from an older copy, or edited); refusing it (store it again with "
                   "`secret put --force`)", name, (long long)version, version < want->version ? "older" : "other",
                   (long long)want->version);
        goto out;
    }
    const uint8_t *blob = sqlite3_column_blob(st, 0);
    size_t blob_len = (size_t)sqlite3_column_bytes(st, 0);
    if (blob_len < NONCE_LEN + TAG_LEN || blob_len - NONCE_LEN - TAG_LEN > CL_KS_SECRET_MAX) {
        cl_err_set(err, CL_E_FORMAT, "secret '%s' is corrupt in the database", name);
        goto out;
    }
    size_t n = blob_len - NONCE_LEN - TAG_LEN;
    if (decrypt) {
        if (alloc) {
            if (!(buf = *alloc = cl_secmem_alloc(n ? n : 1, err)))
                goto out;
        } else if (n > cap) {
            cl_err_set(err, CL_E_INVALID, "secret '%s' is %zu bytes, more than the %zu-byte buffer for it (changed "
                       "meanwhile?)", name, n, cap);
            goto out;
        }
        if (open_value(s, name, version, blob, blob_len, buf, err) != 0) {
            if (alloc) {
                cl_secmem_free(*alloc);
                *alloc = NULL;
            }
            goto out;
        }
    }
    *len = n;
    result = 0;
out:
    cached_done(st);
    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
    return result;
}

int cl_store_get(cl_store *s, const char *name, uint8_t **value, size_t *len, cl_err *err)
{
    *value = NULL;
    pthread_mutex_lock(&s->lock);
    int rc = fetch(s, name, value, NULL, 0, len, true, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int cl_store_get_into(cl_store *s, const char *name, uint8_t *buf, size_t cap, size_t *len, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    int rc = fetch(s, name, NULL, buf, cap, len, true, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int cl_store_stat(cl_store *s, const char *name, size_t *len, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    int rc = fetch(s, name, NULL, NULL, 0, len, false, err);
    pthread_mutex_unlock(&s->lock);
    return rc;
}

int cl_store_delete(cl_store *s, const char *name, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    int result = -1;
    sqlite3_stmt *st = NULL;
    mentry *m = NULL;
    state x;
    if (exec(s, "BEGIN IMMEDIATE", err, "deleting a secret") != 0)
        goto unlock;
    if (state_load(s, &x, err) != 0 || man_load(s, &x, err) != 0)
        goto fail;
    const mentry *cur = man_find(s, name);
    if (sqlite3_prepare_v2(s->db, "DELETE FROM secrets WHERE name=?", -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, "deleting a secret");
        goto fail;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        db_err(s, err, "deleting a secret");
        goto fail;
    }
    if (!cur && sqlite3_changes(s->db) == 0) {
        cl_err_set(err, CL_E_INVALID, "no secret named '%s'", name);
        goto fail;
    }
    size_t n = 0;
    if (!(m = calloc(s->man_n + 1, sizeof(*m)))) {
        cl_err_nomem(err);
        goto fail;
    }
    for (size_t i = 0; i < s->man_n; i++)
        if (&s->man[i] != cur)
            m[n++] = s->man[i];
    x.generation++;
    if (man_store(s, m, n, &x, err) != 0 || state_store(s, &x, err) != 0 ||
        exec(s, "COMMIT", err, "deleting a secret") != 0)
        goto fail;
    result = 0;
    goto unlock;
fail:
    rollback(s);
    s->man_valid = false;
unlock:
    sqlite3_finalize(st);
    free(m);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_store_list(cl_store *s, cl_store_list_fn fn, void *ctx, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT name, length, created, updated, version FROM secrets ORDER BY name", -1,
                           &st, NULL) != SQLITE_OK) {
        result = db_err(s, err, "listing secrets");
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cl_store_entry e = {(const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_int64(st, 1),
                            sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3), sqlite3_column_int64(st, 4)};
        if (fn(ctx, &e) != 0)
            break;
    }
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        result = db_err(s, err, "listing secrets");
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_store_verify(cl_store *s, int64_t *count, cl_err *err)
{
    *count = 0;
    pthread_mutex_lock(&s->lock);
    int result = -1;
    sqlite3_stmt *st = NULL;
    state x;
    if (exec(s, "BEGIN", err, "checking secrets") != 0)
        goto unlock;
    if (state_load(s, &x, err) != 0 || man_load(s, &x, err) != 0)
        goto out;
    if (sqlite3_prepare_v2(s->db, "SELECT name, version FROM secrets ORDER BY name", -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, "checking secrets");
        goto out;
    }
    size_t i = 0;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        const char *name = (const char *)sqlite3_column_text(st, 0);
        int64_t v = sqlite3_column_int64(st, 1);
        const mentry *want = name ? man_find(s, name) : NULL;
        if (!want) {
            cl_err_set(err, CL_E_AUTH, "secret '%s' is in the database but not in the store's keyed state (added or "
                       "restored outside cloister)", name ? name : "?");
            goto out;
        }
        if (want->version != v) {
            cl_err_set(err, CL_E_AUTH, "secret '%s' in the database is version %lld; the store's keyed state records "
                       "version %lld (restored from an older copy, or edited)", name, (long long)v,
                       (long long)want->version);
            goto out;
        }
        i++;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "checking secrets");
        goto out;
    }
    if (i != s->man_n) {
        for (size_t j = 0; j < s->man_n; j++) {
            sqlite3_stmt *q = NULL;
            bool present = false;
            if (sqlite3_prepare_v2(s->db, "SELECT 1 FROM secrets WHERE name=?", -1, &q, NULL) == SQLITE_OK) {
                sqlite3_bind_text(q, 1, s->man[j].name, -1, SQLITE_STATIC);
                present = sqlite3_step(q) == SQLITE_ROW;
            }
            sqlite3_finalize(q);
            if (!present) {
                cl_err_set(err, CL_E_AUTH, "secret '%s' (version %lld) is missing from the database although the "
                           "store's keyed state lists it (deleted outside cloister)", s->man[j].name,
                           (long long)s->man[j].version);
                goto out;
            }
        }
    }
    *count = (int64_t)i;
    result = 0;
out:
    sqlite3_finalize(st);
    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&s->lock);
    return result;
}

/* ---------------------------------------------------------------- audit */

void cl_audit_record_clear(cl_audit_record *r)
{
    if (!r)
        return;
    free(r->identities);
    free(r->secrets);
    free(r->reason);
    free(r->claims);
    r->identities = r->secrets = r->reason = r->claims = NULL;
}

int cl_audit_record_copy(cl_audit_record *dst, const cl_audit_record *src, cl_err *err)
{
    *dst = *src;
    dst->identities = strdup(str0(src->identities));
    dst->secrets = strdup(str0(src->secrets));
    dst->reason = strdup(str0(src->reason));
    dst->claims = strdup(str0(src->claims));
    if (!dst->identities || !dst->secrets || !dst->reason || !dst->claims) {
        cl_audit_record_clear(dst);
        return cl_err_nomem(err);
    }
    return 0;
}

/* a fixed-size field must end within its array (nothing is cut to fit) */
#define TERMINATED(f) (memchr((f), 0, sizeof(f)) != NULL)

int cl_audit_append(cl_store *s, cl_audit_record *r, cl_err *err)
{
    if (!TERMINATED(r->peer) || !TERMINATED(r->protocol) || !TERMINATED(r->decision) || !TERMINATED(r->evidence_type) ||
        !TERMINATED(r->evidence_sha256) || !TERMINATED(r->mrenclave) || !TERMINATED(r->mrsigner))
        return cl_err_set(err, CL_E_INVALID, "audit record: a fixed-size field is not terminated within its size");
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(r->time, sizeof r->time, "%s.%03dZ", base, (int)(tv.tv_usec / 1000));
    pthread_mutex_lock(&s->lock);
    int result = -1;
    sqlite3_stmt *st = NULL;
    state x;
    /* another process may have appended: the checkpoint is read inside the write transaction */
    if (exec(s, "BEGIN IMMEDIATE", err, "audit") != 0)
        goto unlock;
    if (state_load(s, &x, err) != 0) {
        cl_err_prefix(err, "audit log");
        goto fail;
    }
    r->seq = x.audit_count + 1;
    cl_hex_encode(x.audit_head, 32, r->prev_hash);
    char num[5][24];
    const char *f[AUDIT_FIELDS];
    size_t len[AUDIT_FIELDS];
    record_fields(r, num, f, len);
    uint8_t mac[32];
    if (audit_mac(s, x.audit_head, f, len, mac) != 0) {
        cl_err_ssl(err, CL_E_CRYPTO, "audit MAC failed");
        goto fail;
    }
    cl_hex_encode(mac, 32, r->hash);
    if (cached(s, ST_AUDIT_INSERT, "INSERT INTO audit(" AUDIT_COLS ") VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
               &st) != 0) {
        db_err(s, err, "audit");
        goto fail;
    }
    sqlite3_bind_int64(st, 1, r->seq);
    for (int i = 1; i < AUDIT_FIELDS; i++)
        sqlite3_bind_text(st, i + 1, f[i], (int)len[i], SQLITE_STATIC);
    /* the integer columns (their text form is what the MAC covered) */
    sqlite3_bind_int(st, 7, r->insecure ? 1 : 0);
    sqlite3_bind_int(st, 11, r->isv_prod_id);
    sqlite3_bind_int(st, 12, r->isv_svn);
    sqlite3_bind_int(st, 13, r->debug);
    sqlite3_bind_text(st, 18, r->prev_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 19, r->hash, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_CONSTRAINT) {
        cl_err_set(err, CL_E_AUTH, "audit log: a record %lld already exists beyond the keyed checkpoint (rows were "
                   "inserted outside cloister; see `cloister keyserver audit --verify`)", (long long)r->seq);
        goto fail;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "audit");
        goto fail;
    }
    x.audit_count = r->seq;
    memcpy(x.audit_head, mac, 32);
    if (state_store(s, &x, err) != 0 || exec(s, "COMMIT", err, "audit commit") != 0)
        goto fail;
    result = 0;
    goto unlock;
fail:
    rollback(s);
unlock:
    cached_done(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

/* copies a column into a fixed field; a longer value was not written by cloister */
static int copy_fixed(sqlite3_stmt *st, int col, char *dst, size_t size, int64_t seq, cl_err *err)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    size_t n = t ? (size_t)sqlite3_column_bytes(st, col) : 0;
    if (n >= size)
        return cl_err_set(err, CL_E_AUTH, "audit record %lld: its %s is %zu bytes, longer than any record cloister "
                          "writes (edited outside cloister)", (long long)seq, sqlite3_column_name(st, col), n);
    memcpy(dst, t ? (const char *)t : "", n);
    dst[n] = 0;
    return 0;
}

static char *copy_text(sqlite3_stmt *st, int col)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    return strdup(t ? (const char *)t : "");
}

static int row_to_record(sqlite3_stmt *st, cl_audit_record *r, cl_err *err)
{
    memset(r, 0, sizeof(*r));
    r->seq = sqlite3_column_int64(st, 0);
    if (copy_fixed(st, 1, r->time, sizeof r->time, r->seq, err) != 0 ||
        copy_fixed(st, 2, r->peer, sizeof r->peer, r->seq, err) != 0 ||
        copy_fixed(st, 3, r->protocol, sizeof r->protocol, r->seq, err) != 0 ||
        copy_fixed(st, 4, r->decision, sizeof r->decision, r->seq, err) != 0 ||
        copy_fixed(st, 5, r->evidence_type, sizeof r->evidence_type, r->seq, err) != 0 ||
        copy_fixed(st, 7, r->evidence_sha256, sizeof r->evidence_sha256, r->seq, err) != 0 ||
        copy_fixed(st, 8, r->mrenclave, sizeof r->mrenclave, r->seq, err) != 0 ||
        copy_fixed(st, 9, r->mrsigner, sizeof r->mrsigner, r->seq, err) != 0 ||
        copy_fixed(st, 17, r->prev_hash, sizeof r->prev_hash, r->seq, err) != 0 ||
        copy_fixed(st, 18, r->hash, sizeof r->hash, r->seq, err) != 0)
        return -1;
    r->insecure = sqlite3_column_int(st, 6) != 0;
    r->isv_prod_id = sqlite3_column_int(st, 10);
    r->isv_svn = sqlite3_column_int(st, 11);
    r->debug = sqlite3_column_int(st, 12);
    r->identities = copy_text(st, 13);
    r->secrets = copy_text(st, 14);
    r->reason = copy_text(st, 15);
    r->claims = copy_text(st, 16);
    if (!r->identities || !r->secrets || !r->reason || !r->claims) {
        cl_audit_record_clear(r);
        return cl_err_nomem(err);
    }
    return 0;
}

int cl_audit_list(cl_store *s, int64_t limit, cl_audit_list_fn fn, void *ctx, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = 0;
    const char *sql = "SELECT " AUDIT_COLS " FROM (SELECT * FROM audit ORDER BY seq DESC LIMIT ?) ORDER BY seq";
    if (sqlite3_prepare_v2(s->db, sql, -1, &st, NULL) != SQLITE_OK) {
        result = db_err(s, err, "reading the audit log");
        goto out;
    }
    sqlite3_bind_int64(st, 1, limit > 0 ? limit : -1);
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cl_audit_record r;
        if (row_to_record(st, &r, err) != 0) {
            result = -1;
            goto out;
        }
        int stop = fn(ctx, &r);
        cl_audit_record_clear(&r);
        if (stop != 0)
            goto out;
    }
    if (rc != SQLITE_DONE)
        result = db_err(s, err, "reading the audit log");
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_audit_verify(cl_store *s, int64_t *count, char head_hash[65], cl_err *err)
{
    *count = 0;
    snprintf(head_hash, 65, "%s", GENESIS_HEX);
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = -1;
    state x;
    if (exec(s, "BEGIN", err, "reading the audit log") != 0)
        goto unlock;
    if (state_load(s, &x, err) != 0) {
        cl_err_prefix(err, "audit log not verifiable");
        goto out;
    }
    if (sqlite3_prepare_v2(s->db, "SELECT " AUDIT_COLS " FROM audit ORDER BY seq", -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, "reading the audit log");
        goto out;
    }
    uint8_t prev[32] = {0};
    int64_t expect = 1;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        int64_t seq = sqlite3_column_int64(st, 0);
        if (seq != expect) {
            cl_err_set(err, CL_E_AUTH, "audit log broken: record %lld is missing (next is %lld)", (long long)expect,
                       (long long)seq);
            goto out;
        }
        if (seq > x.audit_count) {
            cl_err_set(err, CL_E_AUTH, "audit log broken: record %lld is beyond the keyed checkpoint of %lld records "
                       "(inserted outside cloister)", (long long)seq, (long long)x.audit_count);
            goto out;
        }
        const char *prev_col = (const char *)sqlite3_column_text(st, AUDIT_FIELDS);
        const char *hash_col = (const char *)sqlite3_column_text(st, AUDIT_FIELDS + 1);
        char prev_hex[65], mac_hex[65];
        cl_hex_encode(prev, 32, prev_hex);
        if (!prev_col || strcmp(prev_col, prev_hex) != 0) {
            cl_err_set(err, CL_E_AUTH, "audit log broken at record %lld: it does not follow record %lld",
                       (long long)seq, (long long)seq - 1);
            goto out;
        }
        const char *f[AUDIT_FIELDS];
        size_t len[AUDIT_FIELDS];
        row_fields(st, f, len);
        uint8_t mac[32];
        if (audit_mac(s, prev, f, len, mac) != 0) {
            cl_err_ssl(err, CL_E_CRYPTO, "audit MAC failed");
            goto out;
        }
        cl_hex_encode(mac, 32, mac_hex);
        if (!hash_col || strlen(hash_col) != 64 || cl_memeq_ct(hash_col, mac_hex, 64) != 0) {
            cl_err_set(err, CL_E_AUTH, "audit log broken at record %lld: its content was changed (or the record was "
                       "not written by this key server)", (long long)seq);
            goto out;
        }
        memcpy(prev, mac, 32);
        expect++;
    }
    if (rc != SQLITE_DONE) {
        db_err(s, err, "reading the audit log");
        goto out;
    }
    if (expect - 1 < x.audit_count) {
        cl_err_set(err, CL_E_AUTH, "audit log broken: the newest records were removed: the keyed checkpoint counts %lld "
                   "records, the log has %lld", (long long)x.audit_count, (long long)(expect - 1));
        goto out;
    }
    if (cl_memeq_ct(prev, x.audit_head, 32) != 0) {
        cl_err_set(err, CL_E_AUTH, "audit log broken: record %lld is not the one the keyed checkpoint records",
                   (long long)x.audit_count);
        goto out;
    }
    *count = expect - 1;
    cl_hex_encode(prev, 32, head_hash);
    result = 0;
out:
    sqlite3_finalize(st);
    sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL);
unlock:
    pthread_mutex_unlock(&s->lock);
    return result;
}
