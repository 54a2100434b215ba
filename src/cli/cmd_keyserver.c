/* cmd_keyserver.c — `cloister keyserver serve|secret put|secret list|secret rm|policy check|audit`:
 * running the key server and administering its store, policy and audit log. */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cloister/keyserver.h"

/* Opens the store with the master key (created on first use when `create`). */
static cl_store *open_store(const char *cmd, const char *db, const char *mk_path, bool create)
{
    cl_err err = {0};
    char *def = mk_path ? NULL : cl_store_master_key_default_path(db);
    uint8_t *mk = cl_secmem_alloc(CL_KS_MASTER_KEY_LEN, &err);
    cl_store *s = NULL;
    if (mk && cl_store_master_key_load(mk_path ? mk_path : def, create, mk, &err) == 0)
        s = cl_store_open(db, mk, &err);
    cl_secmem_free(mk);
    free(def);
    if (!s)
        cl_cli_fail(cmd, &err);
    return s;
}

static int serve(int argc, char **argv)
{
    const char *listen = "0.0.0.0:4433", *cert = NULL, *key = NULL, *policy = NULL, *db = NULL, *mk = NULL,
               *pid_file = NULL, *dcap_root = NULL;
    cl_strlist trust = {0}, dcap = {0};
    long threads = 32, timeout = 10000, conn_timeout = 30000, hs_threads = 0, hs_timeout = 5000, max_hs = 4096,
         max_hs_src = 64, queue = 0;
    bool tls12 = false;
    const cl_opt opts[] = {
        {"listen", CL_ARG_STRING, &listen, "HOST:PORT", "address to listen on (default 0.0.0.0:4433)", false},
        {"cert", CL_ARG_STRING, &cert, "FILE", "server certificate chain, PEM (e.g. from cloister tls init)", true},
        {"key", CL_ARG_STRING, &key, "FILE", "server private key, PEM", true},
        {"policy", CL_ARG_STRING, &policy, "FILE", "release policy (docs/policy.md); SIGHUP reloads it", true},
        {"db", CL_ARG_STRING, &db, "FILE", "secret store and audit log (SQLite)", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", "master key file (default DB.master-key)", false},
        {"trust-sim", CL_ARG_LIST, &trust, "CERT", "accept sim evidence signed by this simulated quoting key "
                                                   "(INSECURE: development only)", false},
        {"dcap-collateral", CL_ARG_LIST, &dcap, "FILE", "verify real SGX/TDX quotes with this Intel DCAP "
                                                        "collateral (one file per platform; docs/attest.md); SIGHUP reloads it", false},
        {"dcap-root-ca", CL_ARG_STRING, &dcap_root, "FILE", "the Intel SGX Root CA the collateral chains to (DER "
                                                            "or PEM)", false},
        {"threads", CL_ARG_LONG, &threads, "N", "worker threads (default 32)", false, 1, 1024},
        {"io-timeout-ms", CL_ARG_LONG, &timeout, "MS", "per-read/write timeout (default 10000)", false, 100,
         600000},
        {"connection-timeout-ms", CL_ARG_LONG, &conn_timeout, "MS", "whole-connection deadline (default 30000)",
         false, 100, 3600000},
        {"handshake-threads", CL_ARG_LONG, &hs_threads, "N", "event loops accepting connections and running their "
                                                             "TLS handshakes (default: one per CPU, at most 16)", false, 1, 256},
        {"handshake-timeout-ms", CL_ARG_LONG, &hs_timeout, "MS", "deadline from accept to the end of the TLS "
                                                                 "handshake (default 5000)", false, 100, 600000},
        {"max-handshakes", CL_ARG_LONG, &max_hs, "N", "connections in their handshake at once; when full the oldest "
                                                      "is closed for a new one (default 4096, lowered to fit "
                                                      "RLIMIT_NOFILE)", false, 16, 1000000},
        {"max-handshakes-per-source", CL_ARG_LONG, &max_hs_src, "N", "of those, from one IPv4 address or IPv6 /64; "
                                                                     "more are refused (default 64)", false, 1, 1000000},
        {"queue", CL_ARG_LONG, &queue, "N", "handshaken connections waiting for a worker; more are refused "
                                            "(default 8 per worker)", false, 1, 1000000},
        {"pid-file", CL_ARG_STRING, &pid_file, "FILE", "write the process id here (for keyserver reload)", false},
        {"allow-tls12", CL_ARG_FLAG, &tls12, NULL, "also accept TLS 1.2 (Gramine < 1.8 secret_prov clients)", false},
    };
    const cl_cmd_usage usage = {
        "cloister keyserver serve --cert CERT --key KEY --policy POLICY.json --db FILE [--listen HOST:PORT]",
        "Serves secrets over TLS 1.3 to clients that present an RA-TLS certificate whose evidence verifies and\n"
        "matches the policy. Speaks cloister's protocol and Gramine's secret_prov v1. Every release and denial\n"
        "goes to the audit log. SIGHUP reloads the policy (an invalid one denies everything) and the DCAP\n"
        "collateral (a bad file keeps the collateral in use); SIGTERM stops."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0) {
        cl_strlist_free(&trust);
        cl_strlist_free(&dcap);
        return rc;
    }
    cl_keyserver_config cfg = {.listen = listen, .cert_file = cert, .key_file = key, .policy_file = policy,
                               .db_file = db, .master_key_file = mk, .trust_sim_certs = trust.items,
                               .trust_sim_count = trust.count, .dcap_collateral_files = dcap.items,
                               .dcap_collateral_count = dcap.count, .dcap_root_ca_file = dcap_root,
                               .threads = (int)threads,
                               .io_timeout_ms = (int)timeout, .connection_timeout_ms = (int)conn_timeout,
                               .allow_tls12 = tls12, .handshake_threads = (int)hs_threads,
                               .handshake_timeout_ms = (int)hs_timeout, .max_handshakes = (int)max_hs,
                               .max_handshakes_per_source = (int)max_hs_src, .queue = (int)queue};
    cl_err err = {0};
    /* before any key is read: not dumpable, no core files, OpenSSL's secure heap for private keys */
    if (cl_process_harden(CL_SECURE_HEAP_DEFAULT, &err) != 0) {
        cl_strlist_free(&trust);
        cl_strlist_free(&dcap);
        return cl_cli_fail(argv[0], &err);
    }
    if (pid_file) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (cl_file_write_atomic(pid_file, pid, (size_t)n, 0644, true, &err) != 0) {
            cl_strlist_free(&trust);
            cl_strlist_free(&dcap);
            return cl_cli_fail(argv[0], &err);
        }
    }
    rc = cl_keyserver_run(&cfg, &err);
    if (pid_file)
        unlink(pid_file);
    cl_strlist_free(&trust);
    cl_strlist_free(&dcap);
    return rc == 0 ? CL_EXIT_OK : cl_cli_fail(argv[0], &err);
}

static int secret_put(int argc, char **argv)
{
    const char *db = NULL, *name = NULL, *file = NULL, *mk = NULL;
    bool force = false;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"name", CL_ARG_STRING, &name, "NAME", "secret name (A-Z a-z 0-9 . _ : / -)", true},
        {"file", CL_ARG_STRING, &file, "FILE", "file holding the value (at most 1 MiB)", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", "master key file (default DB.master-key; created if missing)",
         false},
        {"force", CL_ARG_FLAG, &force, NULL, "replace an existing secret", false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret put --db FILE --name NAME --file VALUE",
                                "Stores a secret, encrypted under the master key (which never enters the database)."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    uint8_t *buf;
    size_t len;
    if (cl_file_read(file, CL_KS_SECRET_MAX, &buf, &len, &err) != 0)
        return cl_cli_fail(argv[0], &err);
    cl_store *s = open_store(argv[0], db, mk, true);
    if (!s) {
        cl_memzero(buf, len);
        free(buf);
        return CL_EXIT_FAIL;
    }
    rc = cl_store_put(s, name, buf, len, force, &err);
    cl_memzero(buf, len);
    free(buf);
    cl_store_close(s);
    if (rc != 0)
        return cl_cli_fail(argv[0], &err);
    fprintf(stderr, "cloister keyserver secret put: stored '%s' (%zu bytes)\n", name, len);
    return CL_EXIT_OK;
}

static int list_cb(void *ctx, const cl_store_entry *e)
{
    bool json = *(bool *)ctx;
    char when[32];
    time_t t = (time_t)e->updated;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(when, sizeof when, "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (json)
        printf("{\"name\":\"%s\",\"length\":%zu,\"updated\":\"%s\"}\n", e->name, e->length, when);
    else
        printf("%-40s %8zu bytes  updated %s\n", e->name, e->length, when);
    return 0;
}

static int secret_list(int argc, char **argv)
{
    const char *db = NULL, *mk = NULL;
    bool json = false;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", "master key file (default DB.master-key)", false},
        {"json", CL_ARG_FLAG, &json, NULL, "one JSON object per line", false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret list --db FILE", "Lists secret names and sizes (never values)."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_store *s = open_store(argv[0], db, mk, false);
    if (!s)
        return CL_EXIT_FAIL;
    cl_err err = {0};
    rc = cl_store_list(s, list_cb, &json, &err);
    cl_store_close(s);
    return rc == 0 ? CL_EXIT_OK : cl_cli_fail(argv[0], &err);
}

static int secret_rm(int argc, char **argv)
{
    const char *db = NULL, *name = NULL, *mk = NULL;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"name", CL_ARG_STRING, &name, "NAME", "secret to delete", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", "master key file (default DB.master-key)", false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret rm --db FILE --name NAME", "Deletes a secret."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_store *s = open_store(argv[0], db, mk, false);
    if (!s)
        return CL_EXIT_FAIL;
    cl_err err = {0};
    rc = cl_store_delete(s, name, &err);
    cl_store_close(s);
    if (rc != 0)
        return cl_cli_fail(argv[0], &err);
    fprintf(stderr, "cloister keyserver secret rm: deleted '%s'\n", name);
    return CL_EXIT_OK;
}

static int policy_check(int argc, char **argv)
{
    cl_strlist files = {0};
    const cl_cmd_usage usage = {"cloister keyserver policy check FILE",
                                "Validates a release policy (docs/policy.md). Exit 0 if valid, 1 if not."};
    int rc = cl_cli_parse(argc, argv, &usage, NULL, 0, &files);
    if (rc >= 0)
        return rc;
    if (files.count != 1) {
        cl_strlist_free(&files);
        fprintf(stderr, "cloister keyserver policy check: name exactly one policy file\n");
        return CL_EXIT_USAGE;
    }
    cl_err err = {0};
    cl_policy *p = cl_policy_load(files.items[0], &err);
    if (!p) {
        cl_strlist_free(&files);
        return cl_cli_fail(argv[0], &err);
    }
    size_t n = cl_policy_identity_count(p);
    printf("%s: valid, %zu identit%s%s\n", files.items[0], n, n == 1 ? "y" : "ies",
           n ? "" : " (denies everything)");
    cl_policy_free(p);
    cl_strlist_free(&files);
    return CL_EXIT_OK;
}

static int audit_cb(void *ctx, const cl_audit_record *r)
{
    bool json = *(bool *)ctx;
    if (!json) {
        printf("%6lld %s %-21s %-11s %-7s %s%s %s%s%s%s\n", (long long)r->seq, r->time, r->peer, r->protocol,
               r->decision, r->evidence_type[0] ? r->evidence_type : "-", r->insecure ? "(INSECURE)" : "",
               r->secrets[0] ? r->secrets : "-", r->reason[0] ? " [" : "", r->reason, r->reason[0] ? "]" : "");
        return 0;
    }
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return -1;
    cJSON_AddNumberToObject(o, "seq", (double)r->seq);
    cJSON_AddStringToObject(o, "time", r->time);
    cJSON_AddStringToObject(o, "peer", r->peer);
    cJSON_AddStringToObject(o, "protocol", r->protocol);
    cJSON_AddStringToObject(o, "decision", r->decision);
    cJSON_AddStringToObject(o, "evidence_type", r->evidence_type);
    cJSON_AddBoolToObject(o, "insecure", r->insecure);
    cJSON_AddStringToObject(o, "evidence_sha256", r->evidence_sha256);
    cJSON_AddStringToObject(o, "mrenclave", r->mrenclave);
    cJSON_AddStringToObject(o, "mrsigner", r->mrsigner);
    cJSON_AddNumberToObject(o, "isv_prod_id", r->isv_prod_id);
    cJSON_AddNumberToObject(o, "isv_svn", r->isv_svn);
    cJSON_AddNumberToObject(o, "debug", r->debug);
    cJSON_AddStringToObject(o, "identities", r->identities);
    cJSON_AddStringToObject(o, "secrets", r->secrets);
    cJSON_AddStringToObject(o, "reason", r->reason);
    cJSON_AddStringToObject(o, "prev_hash", r->prev_hash);
    cJSON_AddStringToObject(o, "hash", r->hash);
    char *t = cJSON_PrintUnformatted(o);
    if (t)
        puts(t);
    cJSON_free(t);
    cJSON_Delete(o);
    return 0;
}

static int audit(int argc, char **argv)
{
    const char *db = NULL, *mk = NULL;
    bool verify = false, json = false;
    long limit = 50;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", "master key file (default DB.master-key)", false},
        {"verify", CL_ARG_FLAG, &verify, NULL, "recompute the hash chain; exit 1 if it is broken", false},
        {"limit", CL_ARG_LONG, &limit, "N", "show the last N records (default 50; 0: all)", false, 0, 1L << 40},
        {"json", CL_ARG_FLAG, &json, NULL, "one JSON object per line", false},
    };
    const cl_cmd_usage usage = {
        "cloister keyserver audit --db FILE [--verify] [--limit N] [--json]",
        "Shows the audit log (every release and denial), or with --verify checks its hash chain and prints\n"
        "the head hash: record it elsewhere to also detect removal of the newest records."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_store *s = open_store(argv[0], db, mk, false);
    if (!s)
        return CL_EXIT_FAIL;
    cl_err err = {0};
    if (verify) {
        int64_t count;
        char head[65];
        rc = cl_audit_verify(s, &count, head, &err);
        cl_store_close(s);
        if (rc != 0)
            return cl_cli_fail(argv[0], &err);
        printf("audit log intact: %lld records, head %s\n", (long long)count, head);
        return CL_EXIT_OK;
    }
    rc = cl_audit_list(s, limit, audit_cb, &json, &err);
    cl_store_close(s);
    return rc == 0 ? CL_EXIT_OK : cl_cli_fail(argv[0], &err);
}

static int reload(int argc, char **argv)
{
    const char *pid_file = NULL;
    const cl_opt opts[] = {
        {"pid-file", CL_ARG_STRING, &pid_file, "FILE", "the --pid-file of the running server", true},
    };
    const cl_cmd_usage usage = {"cloister keyserver reload --pid-file FILE",
                                "Asks a running key server to reload its policy and DCAP collateral (sends\n"
                                "SIGHUP). Connections in progress are not disturbed; an invalid policy makes the\n"
                                "server deny everything; a bad collateral file keeps the collateral in use."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    uint8_t *buf;
    size_t len;
    if (cl_file_read(pid_file, 64, &buf, &len, &err) != 0)
        return cl_cli_fail(argv[0], &err);
    char *end;
    long pid = strtol((char *)buf, &end, 10);
    bool ok = pid > 1 && (*end == '\n' || *end == 0);
    free(buf);
    if (!ok) {
        fprintf(stderr, "cloister keyserver reload: '%s' does not hold a process id\n", pid_file);
        return CL_EXIT_FAIL;
    }
    if (kill((pid_t)pid, SIGHUP) != 0) {
        cl_err_errno(&err, CL_E_IO, errno, "cannot signal process %ld (is the server running?)", pid);
        return cl_cli_fail(argv[0], &err);
    }
    fprintf(stderr, "cloister keyserver reload: asked process %ld to reload its policy and collateral\n", pid);
    return CL_EXIT_OK;
}

typedef struct sub {
    const char *name;
    int (*fn)(int, char **);
    const char *help;
} sub;

static int dispatch(const char *group, const sub *subs, size_t n, int argc, char **argv)
{
    if (argc >= 2) {
        for (size_t i = 0; i < n; i++) {
            if (strcmp(argv[1], subs[i].name) == 0) {
                static char name[96];
                snprintf(name, sizeof name, "%s %s", group, subs[i].name);
                argv[1] = name;
                return subs[i].fn(argc - 1, argv + 1);
            }
        }
    }
    FILE *out = argc >= 2 && (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) ? stdout : stderr;
    if (argc >= 2 && out == stderr)
        fprintf(stderr, "cloister %s: unknown subcommand '%s'\n", group, argv[1]);
    fprintf(out, "usage: cloister %s <subcommand> [options]   (cloister %s <subcommand> --help)\n\n", group, group);
    for (size_t i = 0; i < n; i++)
        fprintf(out, "  %-14s %s\n", subs[i].name, subs[i].help);
    return out == stdout ? CL_EXIT_OK : CL_EXIT_USAGE;
}

static int secret(int argc, char **argv)
{
    static const sub subs[] = {
        {"put", secret_put, "store a secret"},
        {"list", secret_list, "list secret names"},
        {"rm", secret_rm, "delete a secret"},
    };
    return dispatch("keyserver secret", subs, CL_ARRAY_LEN(subs), argc, argv);
}

static int policy(int argc, char **argv)
{
    static const sub subs[] = {{"check", policy_check, "validate a policy file"}};
    return dispatch("keyserver policy", subs, CL_ARRAY_LEN(subs), argc, argv);
}

int cl_cmd_keyserver(int argc, char **argv)
{
    static const sub subs[] = {
        {"serve", serve, "run the key server"},
        {"secret", secret, "put|list|rm secrets"},
        {"policy", policy, "check a policy file"},
        {"audit", audit, "show or --verify the audit log"},
        {"reload", reload, "make a running server reload its policy and DCAP collateral"},
    };
    return dispatch("keyserver", subs, CL_ARRAY_LEN(subs), argc, argv);
}
