/* store.c — the key server's SQLite store: secrets encrypted with AES-256-GCM under a key derived
 * from a master key that never enters the database, and the hash-chained audit log. One connection
 * guarded by a mutex (statements are microseconds; the chain head must be updated atomically). */
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
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <sqlite3.h>

#include "cloister/seal.h"

#define NONCE_LEN 12
#define TAG_LEN 16
#define AAD_PREFIX "cloister/keyserver/secret/v1"
#define GENESIS "0000000000000000000000000000000000000000000000000000000000000000"

struct cl_store {
    sqlite3 *db;
    pthread_mutex_t lock;
    uint8_t *keys; /* secure memory: enc key (32) | check value (32) */
    char head[65]; /* hash of the newest audit record */
    bool head_known;
};

static const char *k_schema =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
    "CREATE TABLE IF NOT EXISTS secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL, length INTEGER NOT NULL,"
    " created INTEGER NOT NULL, updated INTEGER NOT NULL);"
    "CREATE TABLE IF NOT EXISTS audit (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, peer TEXT NOT NULL,"
    " protocol TEXT NOT NULL, decision TEXT NOT NULL, evidence_type TEXT NOT NULL, insecure INTEGER NOT NULL,"
    " evidence_sha256 TEXT NOT NULL, mrenclave TEXT NOT NULL, mrsigner TEXT NOT NULL,"
    " isv_prod_id INTEGER NOT NULL, isv_svn INTEGER NOT NULL, debug INTEGER NOT NULL, identities TEXT NOT NULL,"
    " secrets TEXT NOT NULL, reason TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);";

/* ---------------------------------------------------------------- master key */

char *cl_store_master_key_default_path(const char *db_path)
{
    size_t n = strlen(db_path) + sizeof ".master-key";
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s.master-key", db_path);
    return p;
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
            return cl_err_set(err, CL_E_IO, "no master key at '%s': the first `cloister keyserver secret put` "
                              "creates it beside the database, or pass --master-key FILE", path);
        return cl_err_prefix(err, "master key");
    }
    return 0;
}

/* ---------------------------------------------------------------- open/close */

static int db_err(cl_store *s, cl_err *err, const char *what)
{
    return cl_err_set(err, CL_E_IO, "database: %s: %s", what, sqlite3_errmsg(s->db));
}

void cl_store_close(cl_store *s)
{
    if (!s)
        return;
    sqlite3_close(s->db);
    cl_secmem_free(s->keys);
    pthread_mutex_destroy(&s->lock);
    free(s);
}

cl_store *cl_store_open(const char *db_path, const uint8_t master[CL_KS_MASTER_KEY_LEN], cl_err *err)
{
    cl_store *s = calloc(1, sizeof(*s));
    if (!s) {
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        return NULL;
    }
    pthread_mutex_init(&s->lock, NULL);
    s->keys = cl_secmem_alloc(64, err);
    if (!s->keys)
        goto fail;
    unsigned int n = 32;
    if (!HMAC(EVP_sha256(), master, CL_KS_MASTER_KEY_LEN, (const uint8_t *)"cloister/keyserver/enc/v1", 25,
              s->keys, &n) ||
        !HMAC(EVP_sha256(), master, CL_KS_MASTER_KEY_LEN, (const uint8_t *)"cloister/keyserver/check/v1", 27,
              s->keys + 32, &n)) {
        cl_err_ssl(err, CL_E_CRYPTO, "key derivation failed");
        goto fail;
    }
    if (sqlite3_open_v2(db_path, &s->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX,
                        NULL) != SQLITE_OK) {
        cl_err_set(err, CL_E_IO, "cannot open database '%s': %s", db_path,
                   s->db ? sqlite3_errmsg(s->db) : "out of memory");
        goto fail;
    }
    chmod(db_path, 0600);
    sqlite3_busy_timeout(s->db, 5000);
    char *msg = NULL;
    if (sqlite3_exec(s->db, k_schema, NULL, NULL, &msg) != SQLITE_OK) {
        cl_err_set(err, CL_E_IO, "cannot initialise database '%s': %s", db_path, msg ? msg : "?");
        sqlite3_free(msg);
        goto fail;
    }
    /* key check value: record on first use, compare afterwards */
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "INSERT OR IGNORE INTO meta(key, value) VALUES('key_check', ?)", -1, &st,
                           NULL) != SQLITE_OK ||
        sqlite3_bind_blob(st, 1, s->keys + 32, 32, SQLITE_STATIC) != SQLITE_OK || sqlite3_step(st) != SQLITE_DONE) {
        sqlite3_finalize(st);
        db_err(s, err, "key check");
        goto fail;
    }
    sqlite3_finalize(st);
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM meta WHERE key='key_check'", -1, &st, NULL) != SQLITE_OK ||
        sqlite3_step(st) != SQLITE_ROW) {
        sqlite3_finalize(st);
        db_err(s, err, "key check");
        goto fail;
    }
    bool match = sqlite3_column_bytes(st, 0) == 32 && cl_memeq_ct(sqlite3_column_blob(st, 0), s->keys + 32, 32) == 0;
    sqlite3_finalize(st);
    if (!match) {
        cl_err_set(err, CL_E_KEY, "the master key does not belong to database '%s' (wrong --master-key?)", db_path);
        goto fail;
    }
    return s;
fail:
    cl_store_close(s);
    return NULL;
}

/* ---------------------------------------------------------------- secrets */

static int gcm(const uint8_t *key, bool enc, const uint8_t *nonce, const char *name, const uint8_t *in, size_t len,
               uint8_t *out, uint8_t *tag)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int ok = 0, n;
    if (!c)
        return -1;
    if (EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, NULL, NULL, enc) &&
        EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, NONCE_LEN, NULL) &&
        EVP_CipherInit_ex(c, NULL, NULL, key, nonce, enc) &&
        EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)AAD_PREFIX, (int)sizeof AAD_PREFIX) &&
        EVP_CipherUpdate(c, NULL, &n, (const uint8_t *)name, (int)strlen(name)) &&
        (len == 0 || EVP_CipherUpdate(c, out, &n, in, (int)len)) &&
        (enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, TAG_LEN, tag)) && EVP_CipherFinal_ex(c, out + len, &n) &&
        (!enc || EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, TAG_LEN, tag)))
        ok = 1;
    EVP_CIPHER_CTX_free(c);
    return ok ? 0 : -1;
}

int cl_store_put(cl_store *s, const char *name, const uint8_t *value, size_t len, bool replace, cl_err *err)
{
    if (!cl_policy_secret_name_valid(name))
        return cl_err_set(err, CL_E_INVALID, "'%s' is not a valid secret name (A-Z a-z 0-9 . _ : / -, 1-128)", name);
    if (len > CL_KS_SECRET_MAX)
        return cl_err_set(err, CL_E_INVALID, "secret '%s' is %zu bytes; the limit is %d", name, len, CL_KS_SECRET_MAX);
    size_t blob_len = NONCE_LEN + len + TAG_LEN;
    uint8_t *blob = malloc(blob_len);
    if (!blob)
        return cl_err_set(err, CL_E_NOMEM, "out of memory");
    if (RAND_bytes(blob, NONCE_LEN) != 1 ||
        gcm(s->keys, true, blob, name, value, len, blob + NONCE_LEN, blob + NONCE_LEN + len) != 0) {
        free(blob);
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot encrypt secret '%s'", name);
    }
    int64_t now = (int64_t)time(NULL);
    const char *sql = replace ? "INSERT INTO secrets(name, value, length, created, updated) VALUES(?1,?2,?3,?4,?4) "
                                "ON CONFLICT(name) DO UPDATE SET value=?2, length=?3, updated=?4"
                              : "INSERT INTO secrets(name, value, length, created, updated) VALUES(?1,?2,?3,?4,?4)";
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(s->db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, blob, (int)blob_len, SQLITE_STATIC);
        sqlite3_bind_int64(st, 3, (sqlite3_int64)len);
        sqlite3_bind_int64(st, 4, now);
        rc = sqlite3_step(st);
    }
    int result = 0;
    if (rc == SQLITE_CONSTRAINT)
        result = cl_err_set(err, CL_E_EXISTS, "secret '%s' already exists (use --force to replace it)", name);
    else if (rc != SQLITE_DONE)
        result = db_err(s, err, "storing a secret");
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    free(blob);
    return result;
}

int cl_store_get(cl_store *s, const char *name, uint8_t **value, size_t *len, cl_err *err)
{
    *value = NULL;
    *len = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result;
    if (sqlite3_prepare_v2(s->db, "SELECT value FROM secrets WHERE name=?", -1, &st, NULL) != SQLITE_OK) {
        result = db_err(s, err, "reading a secret");
        goto out;
    }
    sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
    int rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) {
        result = 1;
        goto out;
    }
    if (rc != SQLITE_ROW) {
        result = db_err(s, err, "reading a secret");
        goto out;
    }
    const uint8_t *blob = sqlite3_column_blob(st, 0);
    size_t blob_len = (size_t)sqlite3_column_bytes(st, 0);
    if (blob_len < NONCE_LEN + TAG_LEN) {
        result = cl_err_set(err, CL_E_FORMAT, "secret '%s' is corrupt in the database", name);
        goto out;
    }
    size_t n = blob_len - NONCE_LEN - TAG_LEN;
    uint8_t *v = cl_secmem_alloc(n ? n : 1, err);
    if (!v) {
        result = -1;
        goto out;
    }
    uint8_t tag[TAG_LEN];
    memcpy(tag, blob + NONCE_LEN + n, TAG_LEN);
    if (gcm(s->keys, false, blob, name, blob + NONCE_LEN, n, v, tag) != 0) {
        cl_secmem_free(v);
        result = cl_err_set(err, CL_E_AUTH, "secret '%s' does not decrypt (tampered with, or another master key)",
                            name);
        goto out;
    }
    *value = v;
    *len = n;
    result = 0;
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_store_delete(cl_store *s, const char *name, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = 0;
    if (sqlite3_prepare_v2(s->db, "DELETE FROM secrets WHERE name=?", -1, &st, NULL) != SQLITE_OK) {
        result = db_err(s, err, "deleting a secret");
    } else {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        if (sqlite3_step(st) != SQLITE_DONE)
            result = db_err(s, err, "deleting a secret");
        else if (sqlite3_changes(s->db) == 0)
            result = cl_err_set(err, CL_E_INVALID, "no secret named '%s'", name);
    }
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_store_list(cl_store *s, cl_store_list_fn fn, void *ctx, cl_err *err)
{
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = 0;
    if (sqlite3_prepare_v2(s->db, "SELECT name, length, created, updated FROM secrets ORDER BY name", -1, &st,
                           NULL) != SQLITE_OK) {
        result = db_err(s, err, "listing secrets");
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        cl_store_entry e = {(const char *)sqlite3_column_text(st, 0), (size_t)sqlite3_column_int64(st, 1),
                            sqlite3_column_int64(st, 2), sqlite3_column_int64(st, 3)};
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

/* ---------------------------------------------------------------- audit */

/* hash = SHA-256(prev_hash "\n" seq "\x1f" time "\x1f" ... "\x1f" reason), all fields as text. */
static void record_hash(const cl_audit_record *r, char out[65])
{
    char num[5][24];
    snprintf(num[0], sizeof num[0], "%lld", (long long)r->seq);
    snprintf(num[1], sizeof num[1], "%d", r->insecure ? 1 : 0);
    snprintf(num[2], sizeof num[2], "%d", r->isv_prod_id);
    snprintf(num[3], sizeof num[3], "%d", r->isv_svn);
    snprintf(num[4], sizeof num[4], "%d", r->debug);
    const char *fields[] = {num[0], r->time, r->peer, r->protocol, r->decision, r->evidence_type, num[1],
                            r->evidence_sha256, r->mrenclave, r->mrsigner, num[2], num[3], num[4],
                            r->identities, r->secrets, r->reason};
    EVP_MD_CTX *c = EVP_MD_CTX_new();
    uint8_t h[32] = {0};
    if (c && EVP_DigestInit_ex(c, EVP_sha256(), NULL)) {
        EVP_DigestUpdate(c, r->prev_hash, strlen(r->prev_hash));
        EVP_DigestUpdate(c, "\n", 1);
        for (size_t i = 0; i < CL_ARRAY_LEN(fields); i++) {
            if (i)
                EVP_DigestUpdate(c, "\x1f", 1);
            EVP_DigestUpdate(c, fields[i], strlen(fields[i]));
        }
        EVP_DigestFinal_ex(c, h, NULL);
    }
    EVP_MD_CTX_free(c);
    cl_hex_encode(h, 32, out);
}

static int load_head(cl_store *s, cl_err *err)
{
    if (s->head_known)
        return 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(s->db, "SELECT hash FROM audit ORDER BY seq DESC LIMIT 1", -1, &st, NULL) != SQLITE_OK)
        return db_err(s, err, "reading the audit head");
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW)
        snprintf(s->head, sizeof s->head, "%s", (const char *)sqlite3_column_text(st, 0));
    else
        snprintf(s->head, sizeof s->head, "%s", GENESIS);
    sqlite3_finalize(st);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return db_err(s, err, "reading the audit head");
    s->head_known = true;
    return 0;
}

int cl_audit_append(cl_store *s, cl_audit_record *r, cl_err *err)
{
    struct timeval tv;
    gettimeofday(&tv, NULL);
    struct tm tm;
    gmtime_r(&tv.tv_sec, &tm);
    char base[24];
    strftime(base, sizeof base, "%Y-%m-%dT%H:%M:%S", &tm);
    snprintf(r->time, sizeof r->time, "%s.%03dZ", base, (int)(tv.tv_usec / 1000));
    pthread_mutex_lock(&s->lock);
    int result = 0;
    sqlite3_stmt *st = NULL;
    /* another process (the CLI) may have appended: re-read the head inside a write transaction */
    s->head_known = false;
    if (sqlite3_exec(s->db, "BEGIN IMMEDIATE", NULL, NULL, NULL) != SQLITE_OK) {
        result = db_err(s, err, "audit");
        goto out;
    }
    if (load_head(s, err) != 0)
        goto rollback;
    sqlite3_stmt *q = NULL;
    int64_t seq = 1;
    if (sqlite3_prepare_v2(s->db, "SELECT COALESCE(MAX(seq), 0) + 1 FROM audit", -1, &q, NULL) == SQLITE_OK &&
        sqlite3_step(q) == SQLITE_ROW)
        seq = sqlite3_column_int64(q, 0);
    sqlite3_finalize(q);
    r->seq = seq;
    snprintf(r->prev_hash, sizeof r->prev_hash, "%s", s->head);
    record_hash(r, r->hash);
    if (sqlite3_prepare_v2(s->db,
                           "INSERT INTO audit(seq, time, peer, protocol, decision, evidence_type, insecure, "
                           "evidence_sha256, mrenclave, mrsigner, isv_prod_id, isv_svn, debug, identities, secrets, "
                           "reason, prev_hash, hash) VALUES(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                           -1, &st, NULL) != SQLITE_OK) {
        db_err(s, err, "audit");
        goto rollback;
    }
    const char *texts[] = {r->time, r->peer, r->protocol, r->decision, r->evidence_type};
    sqlite3_bind_int64(st, 1, r->seq);
    for (int i = 0; i < 5; i++)
        sqlite3_bind_text(st, 2 + i, texts[i], -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 7, r->insecure ? 1 : 0);
    sqlite3_bind_text(st, 8, r->evidence_sha256, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 9, r->mrenclave, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 10, r->mrsigner, -1, SQLITE_STATIC);
    sqlite3_bind_int(st, 11, r->isv_prod_id);
    sqlite3_bind_int(st, 12, r->isv_svn);
    sqlite3_bind_int(st, 13, r->debug);
    sqlite3_bind_text(st, 14, r->identities, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 15, r->secrets, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 16, r->reason, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 17, r->prev_hash, -1, SQLITE_STATIC);
    sqlite3_bind_text(st, 18, r->hash, -1, SQLITE_STATIC);
    if (sqlite3_step(st) != SQLITE_DONE) {
        db_err(s, err, "audit");
        goto rollback;
    }
    if (sqlite3_exec(s->db, "COMMIT", NULL, NULL, NULL) != SQLITE_OK) {
        db_err(s, err, "audit commit");
        goto rollback;
    }
    snprintf(s->head, sizeof s->head, "%s", r->hash);
    s->head_known = true;
    goto out;
rollback:
    sqlite3_exec(s->db, "ROLLBACK", NULL, NULL, NULL);
    s->head_known = false;
    result = -1;
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

static void copy_col(sqlite3_stmt *st, int col, char *dst, size_t size)
{
    const unsigned char *t = sqlite3_column_text(st, col);
    snprintf(dst, size, "%s", t ? (const char *)t : "");
}

static void row_to_record(sqlite3_stmt *st, cl_audit_record *r)
{
    memset(r, 0, sizeof(*r));
    r->seq = sqlite3_column_int64(st, 0);
    copy_col(st, 1, r->time, sizeof r->time);
    copy_col(st, 2, r->peer, sizeof r->peer);
    copy_col(st, 3, r->protocol, sizeof r->protocol);
    copy_col(st, 4, r->decision, sizeof r->decision);
    copy_col(st, 5, r->evidence_type, sizeof r->evidence_type);
    r->insecure = sqlite3_column_int(st, 6) != 0;
    copy_col(st, 7, r->evidence_sha256, sizeof r->evidence_sha256);
    copy_col(st, 8, r->mrenclave, sizeof r->mrenclave);
    copy_col(st, 9, r->mrsigner, sizeof r->mrsigner);
    r->isv_prod_id = sqlite3_column_int(st, 10);
    r->isv_svn = sqlite3_column_int(st, 11);
    r->debug = sqlite3_column_int(st, 12);
    copy_col(st, 13, r->identities, sizeof r->identities);
    copy_col(st, 14, r->secrets, sizeof r->secrets);
    copy_col(st, 15, r->reason, sizeof r->reason);
    copy_col(st, 16, r->prev_hash, sizeof r->prev_hash);
    copy_col(st, 17, r->hash, sizeof r->hash);
}

#define AUDIT_COLS "seq, time, peer, protocol, decision, evidence_type, insecure, evidence_sha256, mrenclave, " \
                   "mrsigner, isv_prod_id, isv_svn, debug, identities, secrets, reason, prev_hash, hash"

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
    cl_audit_record *r = malloc(sizeof(*r));
    while (r && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_to_record(st, r);
        if (fn(ctx, r) != 0)
            break;
    }
    free(r);
out:
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}

int cl_audit_verify(cl_store *s, int64_t *count, char head_hash[65], cl_err *err)
{
    *count = 0;
    pthread_mutex_lock(&s->lock);
    sqlite3_stmt *st = NULL;
    int result = 0;
    char prev[65] = GENESIS, h[65];
    int64_t expect_seq = 1;
    cl_audit_record *r = malloc(sizeof(*r));
    if (!r || sqlite3_prepare_v2(s->db, "SELECT " AUDIT_COLS " FROM audit ORDER BY seq", -1, &st, NULL) != SQLITE_OK) {
        result = r ? db_err(s, err, "reading the audit log") : cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto out;
    }
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        row_to_record(st, r);
        if (r->seq != expect_seq) {
            result = cl_err_set(err, CL_E_AUTH, "audit log broken: record %lld is missing (next is %lld)",
                                (long long)expect_seq, (long long)r->seq);
            goto out;
        }
        if (strcmp(r->prev_hash, prev) != 0) {
            result = cl_err_set(err, CL_E_AUTH, "audit log broken at record %lld: it does not follow record %lld",
                                (long long)r->seq, (long long)r->seq - 1);
            goto out;
        }
        record_hash(r, h);
        if (strcmp(h, r->hash) != 0) {
            result = cl_err_set(err, CL_E_AUTH, "audit log broken at record %lld: its content was changed",
                                (long long)r->seq);
            goto out;
        }
        snprintf(prev, sizeof prev, "%s", r->hash);
        expect_seq++;
        (*count)++;
    }
    if (rc != SQLITE_DONE)
        result = db_err(s, err, "reading the audit log");
    snprintf(head_hash, 65, "%s", prev);
out:
    free(r);
    sqlite3_finalize(st);
    pthread_mutex_unlock(&s->lock);
    return result;
}
