/* cloister/keyserver.h — the interface of the keyserver module: the secret store (SQLite, values
 * encrypted under a master key kept outside the database, each bound to a version counter kept in a
 * keyed state), the HMAC-chained audit log with its keyed checkpoint, the key
 * server (TLS 1.3, RA-TLS client authentication, cloister's native protocol and Gramine's
 * secret_prov v1 protocol, policy reload without dropping connections; connections accepted and
 * handshaken on event loops within limits, requests run by worker threads). The provisioning client
 * (`cloister provision`, and the model server at start-up) is in provision.h, included here.
 *
 * Ownership: handles returned by the _open and _start functions belong to the caller. Secret values returned to the
 * caller are in secure memory (cl_secmem_*), released with the matching *_free function. An audit
 * record owns its variable-length strings (cl_audit_record_clear frees them).
 * Thread-safety: a cl_store may be shared by threads (it serializes access internally; audit appends
 * are atomic with respect to the hash chain). A cl_keyserver runs its own threads; its functions may
 * be called from any one thread (cl_keyserver_get_stats from any thread). */
#ifndef CLOISTER_KEYSERVER_H
#define CLOISTER_KEYSERVER_H

#include "cloister/attest.h"
#include "cloister/common.h"
#include "cloister/dcap.h"
#include "cloister/policy.h"
#include "cloister/provision.h"
#include "cloister/ratls.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_KS_MASTER_KEY_LEN 32
#define CL_KS_SECRET_MAX (1 << 20) /* largest secret value (1 MiB) */

/* ---------------------------------------------------------------- master key */

/* Loads the 32-byte master key file (the format of `cloister keygen`); with create, makes a new one
 * (mode 0600) when the file does not exist. */
int cl_store_master_key_load(const char *path, bool create, uint8_t key[CL_KS_MASTER_KEY_LEN], cl_err *err);
/* The environment variable that names the master key file when no explicit path is given. */
#define CL_KS_MASTER_KEY_ENV "CLOISTER_MASTER_KEY_FILE"
/* The master key path: `path` when not NULL, otherwise $CLOISTER_MASTER_KEY_FILE. There is no default
 * (in particular none beside the database): without either, NULL with CL_E_INVALID saying how to give
 * one. malloc()ed. */
char *cl_store_master_key_path(const char *path, cl_err *err);

/* ---------------------------------------------------------------- store */

typedef struct cl_store cl_store;

/* Opens (creating if needed) the database. The first open with a key records a key check value;
 * later opens with another key fail with CL_E_KEY. A database written by an earlier cloister (schema 1:
 * unversioned secrets, plain SHA-256 audit chain) is migrated in one transaction: every secret is
 * re-encrypted with a version, and the audit chain, verified in its old form first, is re-chained with
 * the keyed MAC (see docs/keyserver.md); a broken old chain or a secret that does not decrypt stops the
 * migration with nothing changed. */
cl_store *cl_store_open(const char *db_path, const uint8_t master_key[CL_KS_MASTER_KEY_LEN], cl_err *err);
/* Like cl_store_open, for the commands that read a store (audit, list, rm): never creates one. A
 * missing file fails (CL_E_IO), and so does a database with no key check, schema or keyed state
 * (CL_E_AUTH: never initialised, or emptied outside cloister), which cl_store_open would initialise. */
cl_store *cl_store_open_existing(const char *db_path, const uint8_t master_key[CL_KS_MASTER_KEY_LEN], cl_err *err);
void cl_store_close(cl_store *s);

/* Stores (replacing when `replace`) a secret value under the next version of the store's keyed
 * state. */
int cl_store_put(cl_store *s, const char *name, const uint8_t *value, size_t len, bool replace, cl_err *err);
/* Fetches a secret into secure memory. Returns 0 and *value (cl_secmem_free) or, when no such
 * secret exists, 1 with *value NULL; -1 on errors: CL_E_AUTH if the stored value fails to decrypt, or
 * if the row is not the version the keyed state records (an older copy restored into the database, a
 * row added or removed outside cloister). */
int cl_store_get(cl_store *s, const char *name, uint8_t **value, size_t *len, cl_err *err);
/* Like cl_store_get, into the caller's buffer (e.g. locked memory it already holds): fails with
 * CL_E_INVALID, before decrypting, when the value is longer than `cap`. */
int cl_store_get_into(cl_store *s, const char *name, uint8_t *buf, size_t cap, size_t *len, cl_err *err);
/* Whether a secret exists, and its length, with the same version checks as cl_store_get but without
 * decrypting it: 0, 1 (no such secret), -1. */
int cl_store_stat(cl_store *s, const char *name, size_t *len, cl_err *err);
/* Deletes a secret; CL_E_INVALID if it does not exist. */
int cl_store_delete(cl_store *s, const char *name, cl_err *err);

typedef struct cl_store_entry {
    const char *name;
    size_t length;
    int64_t created, updated; /* Unix seconds */
    int64_t version;          /* the store-wide version counter when it was last stored */
} cl_store_entry;
typedef int (*cl_store_list_fn)(void *ctx, const cl_store_entry *e);
int cl_store_list(cl_store *s, cl_store_list_fn fn, void *ctx, cl_err *err);
/* Checks every secret row against the keyed state (without decrypting): 0 and *count, or -1 with
 * CL_E_AUTH naming the first secret that was restored, added or removed outside cloister. */
int cl_store_verify(cl_store *s, int64_t *count, cl_err *err);

/* ---------------------------------------------------------------- audit */

typedef struct cl_audit_record {
    int64_t seq;             /* filled by append */
    char time[32];           /* filled by append: UTC ISO 8601 with milliseconds */
    char peer[64];           /* "ip:port" */
    char protocol[16];       /* "native", "secret_prov", "tls", "unknown" */
    char decision[16];       /* "release", "deny", "partial" */
    char evidence_type[16];  /* "" when no evidence was verified */
    bool insecure;           /* sim evidence */
    char evidence_sha256[65];
    char mrenclave[65], mrsigner[65];
    int isv_prod_id, isv_svn; /* -1 when unknown */
    int debug;                /* -1 when unknown */
    /* Owned (malloc()ed) and of any length; NULL reads as "". Records handed to a cl_audit_list_fn
     * always have them set; they are freed after the callback returns (cl_audit_record_copy keeps one). */
    char *identities;         /* policy identities that matched, comma-separated */
    char *secrets;            /* "name=released; other=denied", every name of the request */
    char *reason;             /* why each secret was denied, or the request refused */
    char *claims;             /* the verified claims as JSON (cl_attest_claims_json), "" when none */
    char prev_hash[65], hash[65]; /* filled by append: HMAC-SHA-256 chain, hex */
} cl_audit_record;

/* Frees the owned strings and sets them to NULL. */
void cl_audit_record_clear(cl_audit_record *r);
/* A deep copy (dst's strings are overwritten, not freed). */
int cl_audit_record_copy(cl_audit_record *dst, const cl_audit_record *src, cl_err *err);

/* Appends a record, filling seq, time, prev_hash and hash (HMAC-SHA-256 under a key derived from the
 * master key, over the previous MAC and every field, see docs/keyserver.md) and advancing the keyed
 * checkpoint. CL_E_INVALID when a fixed-size field is not NUL-terminated within its array; CL_E_AUTH
 * (and nothing appended) when the checkpoint does not verify or rows were inserted beyond it. */
int cl_audit_append(cl_store *s, cl_audit_record *r, cl_err *err);

typedef int (*cl_audit_list_fn)(void *ctx, const cl_audit_record *r);
/* The last `limit` records (0: all) in order. */
int cl_audit_list(cl_store *s, int64_t limit, cl_audit_list_fn fn, void *ctx, cl_err *err);
/* Recomputes the keyed chain and checks it against the keyed checkpoint. Returns 0 if intact (count
 * and head MAC filled), -1 with CL_E_AUTH naming what is wrong: an edited, inserted, reordered or
 * removed record, the newest records removed (or all of them), a missing or edited checkpoint. A
 * rollback of the whole database to an older copy cannot be seen from the database alone: compare
 * the head with one recorded elsewhere. */
int cl_audit_verify(cl_store *s, int64_t *count, char head_hash[65], cl_err *err);

/* ---------------------------------------------------------------- Merkle log (RFC 9162)
 * The Merkle tree of RFC 9162 §2.1 (RFC 6962's hashing; merkle.c): SHA-256, leaf = H(0x00 ‖ data),
 * node = H(0x01 ‖ left ‖ right), the empty tree's head H(""). Generation takes the leaf hashes in
 * memory (n × 32 bytes); verification only the proof. Proofs (len × 32 bytes) run from the leaf (or
 * the older tree) up; at most CL_MERKLE_MAX_PROOF hashes. A refused proof is CL_E_AUTH with what did not hold. Pure functions:
 * thread-safe. Proofs returned are malloc()ed (free()); NULL when empty. */
#define CL_MERKLE_HASH_LEN 32
#define CL_MERKLE_MAX_PROOF 64
int cl_merkle_leaf_hash(const uint8_t *data, size_t len, uint8_t out[CL_MERKLE_HASH_LEN], cl_err *err);
/* MTH over leaves[0..n) (leaf hashes). */
int cl_merkle_root(const uint8_t *leaves, uint64_t n, uint8_t out[CL_MERKLE_HASH_LEN],
                   cl_err *err);
/* PATH(m, D[n]): the proof that leaf m (0-based) is in the tree of the first n leaves. */
int cl_merkle_inclusion_proof(const uint8_t *leaves, uint64_t n, uint64_t m,
                              uint8_t **proof, size_t *len, cl_err *err);
/* PROOF(m, D[n]): the proof that the tree of the first m leaves (1 <= m <= n) is a prefix of the tree
 * of the first n. */
int cl_merkle_consistency_proof(const uint8_t *leaves, uint64_t n, uint64_t m,
                                uint8_t **proof, size_t *len, cl_err *err);
/* 0 when `leaf` (a leaf hash) is leaf m of the tree of n leaves whose head is `root`. `leaf` must be
 * the hash the verifier computed from the record itself (cl_merkle_leaf_hash), never one handed over
 * with the proof, and n and root must come from a tree head it trusts: an inner node's hash is leaf 0
 * of a smaller tree with the same head. */
int cl_merkle_verify_inclusion(const uint8_t leaf[CL_MERKLE_HASH_LEN], uint64_t m, uint64_t n,
                               const uint8_t *proof, size_t len,
                               const uint8_t root[CL_MERKLE_HASH_LEN], cl_err *err);
/* 0 when the tree of m leaves with head old_root is a prefix of the tree of n with head new_root
 * (m == n: an empty proof and equal heads). */
int cl_merkle_verify_consistency(uint64_t m, uint64_t n, const uint8_t old_root[CL_MERKLE_HASH_LEN],
                                 const uint8_t new_root[CL_MERKLE_HASH_LEN],
                                 const uint8_t *proof, size_t len, cl_err *err);

/* ---------------------------------------------------------------- server */

typedef struct cl_keyserver_config {
    const char *listen;          /* "HOST:PORT"; default "0.0.0.0:4433"; port 0 picks a free port */
    const char *cert_file;       /* server certificate chain (PEM) */
    const char *key_file;        /* its private key (PEM) */
    const char *policy_file;     /* release policy (docs/policy.md); required unless `policy` */
    cl_policy *policy;           /* or a parsed policy (ownership passes to the server) */
    const char *db_file;         /* SQLite store */
    const char *master_key_file; /* required, or $CLOISTER_MASTER_KEY_FILE; never a default beside db_file */
    const char *const *trust_sim_certs; /* simulated quoting keys to trust (INSECURE) */
    size_t trust_sim_count;
    /* Real SGX/TDX evidence: where DCAP collateral comes from (dcap.h: files, one per platform, and/or
     * a PCCS; the Intel SGX Root CA). Borrowed during cl_keyserver_start only. NULL: real quotes are
     * refused. */
    const cl_dcap_config *dcap;
    cl_attest_verifier *verifier; /* optional, borrowed: replaces the built-in verifier */
    int threads;                 /* worker threads running requests (default 32) */
    int io_timeout_ms;           /* per-read/write timeout of a request (default 10000) */
    int connection_timeout_ms;   /* whole-connection deadline from accept, then it is cut off (default 30000) */
    bool allow_tls12;            /* also accept TLS 1.2 (Gramine < 1.8 secret_prov clients: mbedTLS < 3.6) */
    /* Locked memory for secret values on their way out. A request holds at most one buffer of at most
     * locked_memory_per_connection bytes (secrets are decrypted and sent one buffer at a time, after
     * the audit); all requests in flight together hold at most locked_memory_total. A request that
     * would exceed the total waits up to 2 s, then is refused (audited; native clients are told to
     * retry); a secret larger than the per-connection limit is denied (audited). */
    size_t locked_memory_per_connection; /* default CL_KS_LOCKED_PER_CONNECTION */
    size_t locked_memory_total;          /* default CL_KS_LOCKED_TOTAL; at least the per-connection limit */
    /* Connections are accepted and handshaken on event loops, without a worker (docs/keyserver.md). */
    int handshake_threads;       /* event loops (default: online CPUs, at most 16) */
    int handshake_timeout_ms;    /* deadline from accept to the end of the handshake (default 5000) */
    int max_handshakes;          /* connections in their handshake at once (default 4096, lowered to fit
                                    RLIMIT_NOFILE); when all are taken, the oldest is closed for a new one */
    int max_handshakes_per_source; /* of those, from one IPv4 address or IPv6 /64 (default 64); more are refused */
    int queue;                   /* handshaken connections waiting for a worker (default 8 per worker);
                                    when full, a new one is refused (audited) */
    /* Refusals of clients whose evidence never verified (or who sent no certificate) can be caused by
     * anyone who can connect, so they are recorded one by one at most this many per second (a burst of
     * ten seconds' worth); the others are counted and summarised in one audit record every 10 s, naming
     * the sources. Default 10; negative: every one is recorded. Refusals after the evidence verified
     * are always recorded one by one. */
    int audit_unverified_per_second;
} cl_keyserver_config;

#define CL_KS_LOCKED_PER_CONNECTION ((size_t)CL_KS_SECRET_MAX + 64 * 1024)
#define CL_KS_LOCKED_TOTAL ((size_t)32 << 20)
#define CL_KS_LOCKED_MIN ((size_t)16 * 1024) /* smallest per-connection limit */

typedef struct cl_keyserver cl_keyserver;

/* Loads everything, binds, and starts the event loops and worker threads. Raises the soft RLIMIT_NOFILE
 * to the hard limit (process-wide; logged). */
cl_keyserver *cl_keyserver_start(const cl_keyserver_config *cfg, cl_err *err);
/* The bound TCP port. */
int cl_keyserver_port(const cl_keyserver *ks);
/* Re-reads the policy file. An invalid file installs the deny-all policy (fail-closed) and returns -1.
 * Connections keep the policy they started with. */
int cl_keyserver_reload_policy(cl_keyserver *ks, cl_err *err);
/* Re-reads the DCAP collateral files (all or none) and forgets PCCS collateral held in memory (it is
 * fetched, or read from the cache, again on next use). When a file cannot be loaded, the collateral
 * loaded before stays in use (it is public data; once past its nextUpdate, quotes are refused) and -1
 * is returned. A handshake verifies against the collateral it started with. 0 without DCAP. */
int cl_keyserver_reload_dcap(cl_keyserver *ks, cl_err *err);
/* Installs a parsed policy (ownership passes to the server); NULL installs deny-all. */
void cl_keyserver_set_policy(cl_keyserver *ks, cl_policy *p);
/* Locked memory held for releases now, and the most held at once since start (bytes, as reserved:
 * page-rounded, secure-memory header pages included). */
void cl_keyserver_locked_memory(const cl_keyserver *ks, size_t *in_use, size_t *peak);
/* What the network side has done since start, and holds now. */
typedef struct cl_keyserver_stats {
    uint64_t accepted;          /* TCP connections accepted */
    uint64_t handshaken;        /* handshakes completed and handed to a worker */
    uint64_t handshake_failed;  /* handshakes that failed (bad TLS, no/invalid evidence, policy, ...) */
    uint64_t timed_out;         /* closed at the handshake deadline */
    uint64_t refused_source;    /* refused at accept: the source already had its limit in handshakes */
    uint64_t evicted;           /* oldest handshake closed to admit a new connection (all slots taken) */
    uint64_t refused_busy;      /* handshaken, but the worker queue was full */
    unsigned in_handshake;      /* connections in their handshake now */
    unsigned queued;            /* handshaken connections waiting for a worker now */
    unsigned max_handshakes, max_handshakes_per_source; /* the limits in effect */
} cl_keyserver_stats;
void cl_keyserver_get_stats(cl_keyserver *ks, cl_keyserver_stats *st);
/* Stops accepting, finishes connections in progress, frees everything. */
void cl_keyserver_stop(cl_keyserver *ks);
/* Serves until SIGINT/SIGTERM; SIGHUP reloads the policy and the DCAP collateral
 * (cl_keyserver_reload_policy, cl_keyserver_reload_dcap). For the CLI. */
int cl_keyserver_run(const cl_keyserver_config *cfg, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
