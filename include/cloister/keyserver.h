/* cloister/keyserver.h — the interface of the keyserver module: the secret store (SQLite, values
 * encrypted under a master key kept outside the database), the hash-chained audit log, the key
 * server (TLS 1.3, RA-TLS client authentication, cloister's native protocol and Gramine's
 * secret_prov v1 protocol, policy reload without dropping connections; connections accepted and
 * handshaken on event loops within limits, requests run by worker threads) and the provisioning client
 * (`cloister provision`, and the model server at start-up).
 *
 * Ownership: handles returned by the _open and _start functions belong to the caller. Secret values returned to the
 * caller are in secure memory (cl_secmem_*), released with the matching *_free function.
 * Thread-safety: a cl_store may be shared by threads (it serializes access internally; audit appends
 * are atomic with respect to the hash chain). A cl_keyserver runs its own threads; its functions may
 * be called from any one thread (cl_keyserver_get_stats from any thread). cl_provision_fetch is thread-safe given distinct results. */
#ifndef CLOISTER_KEYSERVER_H
#define CLOISTER_KEYSERVER_H

#include "cloister/attest.h"
#include "cloister/common.h"
#include "cloister/policy.h"
#include "cloister/ratls.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_KS_MASTER_KEY_LEN 32
#define CL_KS_SECRET_MAX (1 << 20) /* largest secret value (1 MiB) */
#define CL_KS_DEFAULT_PORT 4433

/* ---------------------------------------------------------------- master key */

/* Loads the 32-byte master key file (the format of `cloister keygen`); with create, makes a new one
 * (mode 0600) when the file does not exist. */
int cl_store_master_key_load(const char *path, bool create, uint8_t key[CL_KS_MASTER_KEY_LEN], cl_err *err);
/* The default master key path for a database: DB + ".master-key". malloc()ed. */
char *cl_store_master_key_default_path(const char *db_path);

/* ---------------------------------------------------------------- store */

typedef struct cl_store cl_store;

/* Opens (creating if needed) the database. The first open with a key records a key check value;
 * later opens with another key fail with CL_E_KEY. */
cl_store *cl_store_open(const char *db_path, const uint8_t master_key[CL_KS_MASTER_KEY_LEN], cl_err *err);
void cl_store_close(cl_store *s);

/* Stores (replacing when `replace`) a secret value. */
int cl_store_put(cl_store *s, const char *name, const uint8_t *value, size_t len, bool replace, cl_err *err);
/* Fetches a secret into secure memory. Returns 0 and *value (cl_secmem_free) or, when no such
 * secret exists, 1 with *value NULL; -1 on errors (CL_E_AUTH if the stored value fails to decrypt). */
int cl_store_get(cl_store *s, const char *name, uint8_t **value, size_t *len, cl_err *err);
/* Deletes a secret; CL_E_INVALID if it does not exist. */
int cl_store_delete(cl_store *s, const char *name, cl_err *err);

typedef struct cl_store_entry {
    const char *name;
    size_t length;
    int64_t created, updated; /* Unix seconds */
} cl_store_entry;
typedef int (*cl_store_list_fn)(void *ctx, const cl_store_entry *e);
int cl_store_list(cl_store *s, cl_store_list_fn fn, void *ctx, cl_err *err);

/* ---------------------------------------------------------------- audit */

typedef struct cl_audit_record {
    int64_t seq;             /* filled by append */
    char time[32];           /* filled by append: UTC ISO 8601 with milliseconds */
    char peer[64];           /* "ip:port" */
    char protocol[16];       /* "native", "secret_prov", "tls" */
    char decision[16];       /* "release", "deny", "partial" */
    char evidence_type[16];  /* "" when no evidence was verified */
    bool insecure;           /* sim evidence */
    char evidence_sha256[65];
    char mrenclave[65], mrsigner[65];
    int isv_prod_id, isv_svn; /* -1 when unknown */
    int debug;                /* -1 when unknown */
    char identities[256];     /* policy identities that matched */
    char secrets[1024];       /* "name=released,other=denied" */
    char reason[1024];        /* full reason for denials */
    char prev_hash[65], hash[65]; /* filled by append */
} cl_audit_record;

/* Appends a record, filling seq, time, prev_hash and hash (SHA-256 over the previous hash and every
 * field, see docs/keyserver.md). */
int cl_audit_append(cl_store *s, cl_audit_record *r, cl_err *err);

typedef int (*cl_audit_list_fn)(void *ctx, const cl_audit_record *r);
/* The last `limit` records (0: all) in order. */
int cl_audit_list(cl_store *s, int64_t limit, cl_audit_list_fn fn, void *ctx, cl_err *err);
/* Recomputes the chain. Returns 0 if intact (count and head hash filled), -1 with CL_E_AUTH naming the
 * first bad record if a record was edited, inserted or removed (removal of the newest records is only
 * detectable by comparing the head hash with one recorded elsewhere). */
int cl_audit_verify(cl_store *s, int64_t *count, char head_hash[65], cl_err *err);

/* ---------------------------------------------------------------- server */

typedef struct cl_keyserver_config {
    const char *listen;          /* "HOST:PORT"; default "0.0.0.0:4433"; port 0 picks a free port */
    const char *cert_file;       /* server certificate chain (PEM) */
    const char *key_file;        /* its private key (PEM) */
    const char *policy_file;     /* release policy (docs/policy.md); required unless `policy` */
    cl_policy *policy;           /* or a parsed policy (ownership passes to the server) */
    const char *db_file;         /* SQLite store */
    const char *master_key_file; /* default: db_file + ".master-key" */
    const char *const *trust_sim_certs; /* simulated quoting keys to trust (INSECURE) */
    size_t trust_sim_count;
    /* Real SGX/TDX evidence: DCAP collateral files (dcap.h; one per platform FMSPC, each tried in turn)
     * and the Intel SGX Root CA they chain to (required with them). Loaded at start; a restart picks
     * up refreshed collateral. Without them, real quotes are refused. */
    const char *const *dcap_collateral_files;
    size_t dcap_collateral_count;
    const char *dcap_root_ca_file;
    cl_attest_verifier *verifier; /* optional, borrowed: replaces the built-in verifier */
    int threads;                 /* worker threads running requests (default 32) */
    int io_timeout_ms;           /* per-read/write timeout of a request (default 10000) */
    int connection_timeout_ms;   /* whole-connection deadline from accept, then it is cut off (default 30000) */
    bool allow_tls12;            /* also accept TLS 1.2 (Gramine < 1.8 secret_prov clients: mbedTLS < 3.6) */
    /* Connections are accepted and handshaken on event loops, without a worker (docs/keyserver.md). */
    int handshake_threads;       /* event loops (default: online CPUs, at most 16) */
    int handshake_timeout_ms;    /* deadline from accept to the end of the handshake (default 5000) */
    int max_handshakes;          /* connections in their handshake at once (default 4096, lowered to fit
                                    RLIMIT_NOFILE); when all are taken, the oldest is closed for a new one */
    int max_handshakes_per_source; /* of those, from one IPv4 address or IPv6 /64 (default 64); more are refused */
    int queue;                   /* handshaken connections waiting for a worker (default 8 per worker);
                                    when full, a new one is refused (audited) */
} cl_keyserver_config;

typedef struct cl_keyserver cl_keyserver;

/* Loads everything, binds, and starts the event loops and worker threads. Raises the soft RLIMIT_NOFILE
 * to the hard limit (process-wide; logged). */
cl_keyserver *cl_keyserver_start(const cl_keyserver_config *cfg, cl_err *err);
/* The bound TCP port. */
int cl_keyserver_port(const cl_keyserver *ks);
/* Re-reads the policy file. An invalid file installs the deny-all policy (fail-closed) and returns -1.
 * Connections keep the policy they started with. */
int cl_keyserver_reload_policy(cl_keyserver *ks, cl_err *err);
/* Re-reads the DCAP collateral files (all or none). When one cannot be loaded, the collateral loaded
 * before stays in use (it is public data; once past its nextUpdate, quotes are refused) and -1 is
 * returned. A handshake verifies against the set it started with. 0 without DCAP collateral. */
int cl_keyserver_reload_dcap(cl_keyserver *ks, cl_err *err);
/* Installs a parsed policy (ownership passes to the server); NULL installs deny-all. */
void cl_keyserver_set_policy(cl_keyserver *ks, cl_policy *p);
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
/* Serves until SIGINT/SIGTERM; SIGHUP reloads the policy. For the CLI. */
int cl_keyserver_run(const cl_keyserver_config *cfg, cl_err *err);

/* ---------------------------------------------------------------- wire protocols */

#define CL_KS_MAGIC "CLKS1" /* sent with its NUL: 6 bytes */
#define CL_KS_MAX_NAMES 64
#define CL_SECRET_PROV_REQUEST "SECRET_PROVISION_RA_TLS_REQUEST_V1"   /* sent with its NUL */
#define CL_SECRET_PROV_RESPONSE "SECRET_PROVISION_RA_TLS_RESPONSE_V1:" /* sent with its NUL */

/* ---------------------------------------------------------------- client */

typedef struct cl_secret {
    char name[CL_POLICY_MAX_SECRET_NAME + 1];
    bool granted;
    uint8_t *value; /* secure memory; NULL unless granted */
    size_t len;
} cl_secret;

typedef struct cl_provision_result {
    cl_secret *secrets;
    size_t count;
    char server[128]; /* the key server that answered */
} cl_provision_result;

typedef struct cl_provision_options {
    const char *const *servers;  /* "HOST:PORT", tried in order, round after round */
    size_t server_count;
    const char *ca_file;         /* CA that issued the key servers' certificates */
    const char *server_name;     /* name to check in the server certificate (default: each HOST) */
    const cl_ratls_identity *identity; /* our RA-TLS identity (client certificate) */
    const char *const *names;    /* secrets to ask for (native protocol) */
    size_t name_count;
    bool secret_prov;            /* speak Gramine's secret_prov v1 instead (one unnamed secret) */
    int attempts;                /* rounds over the server list (default 5) */
    int backoff_ms;              /* first delay between rounds (default 200), doubling, max 5000 */
    int timeout_ms;              /* connect and I/O timeout (default 10000) */
} cl_provision_options;

/* Connects, retrying with backoff on network and TLS errors, and returns what the server granted.
 * Returns 0 only if every requested secret was granted; CL_E_DENIED (no retry) if the server refused
 * the attestation or some secret (the result still lists what was granted). */
int cl_provision_fetch(const cl_provision_options *o, cl_provision_result *res, cl_err *err);
void cl_provision_result_free(cl_provision_result *res);

/* A reusable client (one TLS context, CA and identity loaded once) for callers that fetch more than
 * once. The options and everything they point to are borrowed and must outlive the client.
 * cl_provision_client_fetch may run concurrently on one client. */
typedef struct cl_provision_client cl_provision_client;
cl_provision_client *cl_provision_client_new(const cl_provision_options *o, cl_err *err);
int cl_provision_client_fetch(cl_provision_client *c, cl_provision_result *res, cl_err *err);
void cl_provision_client_free(cl_provision_client *c);

/* Splits "HOST:PORT" / "[v6]:PORT"; host is copied into `host` (size bytes). */
int cl_keyserver_split_hostport(const char *s, char *host, size_t size, int *port, int default_port,
                                cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
