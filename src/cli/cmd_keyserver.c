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

#define MK_HELP "the store's master key file, or $" CL_KS_MASTER_KEY_ENV " (required; keep it on other storage " \
                "than the database)"

/* Opens the store with the master key (--master-key or $CLOISTER_MASTER_KEY_FILE); with `create`, both
 * are created on first use, without it neither (a command that reads a store never makes one). */
static cl_store *open_store(const char *cmd, const char *db, const char *mk_opt, bool create)
{
    cl_err err = {0};
    char *path = cl_store_master_key_path(mk_opt, &err);
    uint8_t *mk = path ? cl_secmem_alloc(CL_KS_MASTER_KEY_LEN, &err) : NULL;
    cl_store *s = NULL;
    if (mk && cl_store_master_key_load(path, create, mk, &err) == 0)
        s = create ? cl_store_open(db, mk, &err) : cl_store_open_existing(db, mk, &err);
    cl_secmem_free(mk);
    free(path);
    if (!s)
        cl_cli_fail(cmd, &err);
    return s;
}

static int serve(int argc, char **argv)
{
    const char *listen = "0.0.0.0:4433", *cert = NULL, *key = NULL, *policy = NULL, *db = NULL, *mk = NULL,
               *pid_file = NULL;
    cl_strlist trust = {0};
    cl_cli_dcap_args dcap = {0};
    long threads = 32, timeout = 10000, conn_timeout = 30000, hs_threads = 0, hs_timeout = 5000, max_hs = 4096,
         max_hs_src = 64, queue = 0, audit_unverified = 10;
    long locked_conn = (long)(CL_KS_LOCKED_PER_CONNECTION / 1024), locked_total = (long)(CL_KS_LOCKED_TOTAL / 1024);
    bool tls12 = false;
    const cl_opt opts[] = {
        {"listen", CL_ARG_STRING, &listen, "HOST:PORT", "address to listen on (default 0.0.0.0:4433)", false},
        {"cert", CL_ARG_STRING, &cert, "FILE", "server certificate chain, PEM (e.g. from cloister tls init)", true},
        {"key", CL_ARG_STRING, &key, "FILE", "server private key, PEM", true},
        {"policy", CL_ARG_STRING, &policy, "FILE", "release policy (docs/policy.md); SIGHUP reloads it", true},
        {"db", CL_ARG_STRING, &db, "FILE", "secret store and audit log (SQLite)", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", MK_HELP, false},
        {"trust-sim", CL_ARG_LIST, &trust, "CERT", "accept sim evidence signed by this simulated quoting key "
                                                   "(INSECURE: development only)", false},
        {"threads", CL_ARG_LONG, &threads, "N", "worker threads (default 32)", false, 1, 1024},
        {"io-timeout-ms", CL_ARG_LONG, &timeout, "MS", "per-read/write timeout (default 10000)", false, 100,
         600000},
        {"connection-timeout-ms", CL_ARG_LONG, &conn_timeout, "MS", "whole-connection deadline (default 30000)",
         false, 100, 3600000},
        {"locked-memory-per-connection", CL_ARG_LONG, &locked_conn, "KIB", "locked memory one release may hold for "
         "secret values (default 1088 KiB: one 1 MiB secret; a larger secret is denied)", false,
         (long)(CL_KS_LOCKED_MIN / 1024), 1L << 30},
        {"locked-memory-total", CL_ARG_LONG, &locked_total, "KIB", "locked memory all releases in flight may hold "
         "(default 32768 KiB; a release that would exceed it waits 2 s, then is refused: native clients retry)",
         false, (long)(CL_KS_LOCKED_MIN / 1024), 1L << 30},
        {"handshake-threads", CL_ARG_LONG, &hs_threads, "N", "event loops accepting connections and running their "
                                                             "TLS handshakes (default: one per CPU, at most 16)", false, 1, 256},
        {"handshake-timeout-ms", CL_ARG_LONG, &hs_timeout, "MS", "deadline from accept to the end of the TLS "
                                                                 "handshake (default 5000)", false, 100, 600000},
        {"max-handshakes", CL_ARG_LONG, &max_hs, "N", "connections in their handshake at once; when full the oldest "
                                                      "is closed for a new one (default 4096, lowered to fit "
                                                      "RLIMIT_NOFILE)", false, 16, 1000000},
        {"max-handshakes-per-source", CL_ARG_LONG, &max_hs_src, "N", "of those, from one IPv4 address or IPv6 /64; "
                                                                     "more are refused (default 64)", false, 1, 1000000},
        {"audit-unverified-per-second", CL_ARG_LONG, &audit_unverified, "N", "refusals of clients whose evidence "
         "never verified recorded one by one per second (anyone can cause them); the rest are summarised in one "
         "record every 10 s (default 10; -1: record every one)", false, -1, 1000000},
        {"queue", CL_ARG_LONG, &queue, "N", "handshaken connections waiting for a worker; more are refused "
                                            "(default 8 per worker)", false, 1, 1000000},
        {"pid-file", CL_ARG_STRING, &pid_file, "FILE", "write the process id here (for keyserver reload)", false},
        {"allow-tls12", CL_ARG_FLAG, &tls12, NULL, "also accept TLS 1.2 (Gramine < 1.8 secret_prov clients)", false},
    };
    cl_opt all[CL_ARRAY_LEN(opts) + CL_CLI_DCAP_OPTS];
    memcpy(all, opts, sizeof opts);
    size_t nopts = CL_ARRAY_LEN(opts) + cl_cli_dcap_opts(&dcap, all + CL_ARRAY_LEN(opts));
    const cl_cmd_usage usage = {
        "cloister keyserver serve --cert CERT --key KEY --policy POLICY.json --db FILE --master-key FILE\n"
        "                         [--listen HOST:PORT] [--dcap-root-ca FILE (--dcap-collateral FILE... | --pccs-url URL ...)]",
        "Serves secrets over TLS 1.3 to clients that present an RA-TLS certificate whose evidence verifies and\n"
        "matches the policy. Speaks cloister's protocol and Gramine's secret_prov v1. Every release and denial\n"
        "goes to the audit log. Real SGX/TDX quotes are verified with Intel DCAP collateral from files or a\n"
        "PCCS (docs/attest.md). SIGHUP reloads the policy (an invalid one denies everything) and the DCAP\n"
        "collateral files (a bad file keeps the collateral in use); SIGTERM stops."};
    int rc = cl_cli_parse(argc, argv, &usage, all, nopts, NULL);
    if (rc >= 0) {
        cl_strlist_free(&trust);
        cl_cli_dcap_free(&dcap);
        return rc;
    }
    cl_keyserver_config cfg = {.listen = listen, .cert_file = cert, .key_file = key, .policy_file = policy,
                               .db_file = db, .master_key_file = mk, .trust_sim_certs = trust.items,
                               .trust_sim_count = trust.count, .dcap = cl_cli_dcap_config(&dcap, 0),
                               .threads = (int)threads,
                               .io_timeout_ms = (int)timeout, .connection_timeout_ms = (int)conn_timeout,
                               .allow_tls12 = tls12, .handshake_threads = (int)hs_threads,
                               .handshake_timeout_ms = (int)hs_timeout, .max_handshakes = (int)max_hs,
                               .max_handshakes_per_source = (int)max_hs_src, .queue = (int)queue,
                               .audit_unverified_per_second = (int)audit_unverified,
                               .locked_memory_per_connection = (size_t)locked_conn * 1024,
                               .locked_memory_total = (size_t)locked_total * 1024};
    cl_err err = {0};
    /* before any key is read: not dumpable, no core files, OpenSSL's secure heap for private keys */
    if (cl_process_harden(CL_SECURE_HEAP_DEFAULT, &err) != 0) {
        cl_strlist_free(&trust);
        cl_cli_dcap_free(&dcap);
        return cl_cli_fail(argv[0], &err);
    }
    if (pid_file) {
        char pid[32];
        int n = snprintf(pid, sizeof pid, "%ld\n", (long)getpid());
        if (cl_file_write_atomic(pid_file, pid, (size_t)n, 0644, true, &err) != 0) {
            cl_strlist_free(&trust);
            cl_cli_dcap_free(&dcap);
            return cl_cli_fail(argv[0], &err);
        }
    }
    rc = cl_keyserver_run(&cfg, &err);
    if (pid_file)
        unlink(pid_file);
    cl_strlist_free(&trust);
    cl_cli_dcap_free(&dcap);
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
        {"master-key", CL_ARG_STRING, &mk, "FILE", MK_HELP "; created if missing", false},
        {"force", CL_ARG_FLAG, &force, NULL, "replace an existing secret", false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret put --db FILE --master-key FILE --name NAME --file VALUE",
                                "Stores a secret, encrypted under the master key (which never enters the database),\n"
                                "as the next version of the store's keyed state (an older copy restored into the\n"
                                "database is refused)."};
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
        printf("{\"name\":\"%s\",\"length\":%zu,\"updated\":\"%s\",\"version\":%lld}\n", e->name, e->length, when,
               (long long)e->version);
    else
        printf("%-40s %8zu bytes  updated %s  version %lld\n", e->name, e->length, when, (long long)e->version);
    return 0;
}

static int secret_list(int argc, char **argv)
{
    const char *db = NULL, *mk = NULL;
    bool json = false;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", MK_HELP, false},
        {"json", CL_ARG_FLAG, &json, NULL, "one JSON object per line", false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret list --db FILE --master-key FILE",
                                "Lists secret names, sizes and versions (never values)."};
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
        {"master-key", CL_ARG_STRING, &mk, "FILE", MK_HELP, false},
    };
    const cl_cmd_usage usage = {"cloister keyserver secret rm --db FILE --master-key FILE --name NAME",
                                "Deletes a secret."};
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
                                "Validates a release policy (docs/policy.md) and summarises each identity (SGX or\n"
                                "TDX, what it pins, warnings for sim evidence, debug and RTMRs left at \"any\").\n"
                                "Exit 0 if valid, 1 if not, naming the JSON path (or line and column) of the first\n"
                                "problem."};
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
    char *text = cl_policy_describe(p);
    if (text)
        fputs(text, stdout);
    free(text);
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
    cJSON *claims = r->claims[0] ? cJSON_Parse(r->claims) : NULL;
    if (claims)
        cJSON_AddItemToObject(o, "claims", claims);
    else if (r->claims[0])
        cJSON_AddStringToObject(o, "claims", r->claims); /* as recorded */
    else
        cJSON_AddNullToObject(o, "claims");
    cJSON_AddStringToObject(o, "prev_hash", r->prev_hash);
    cJSON_AddStringToObject(o, "hash", r->hash);
    char *t = cJSON_PrintUnformatted(o);
    if (t)
        puts(t);
    cJSON_free(t);
    cJSON_Delete(o);
    return 0;
}

typedef struct head_search {
    const char *head;
    int64_t seq;
} head_search;

static int head_cb(void *ctx, const cl_audit_record *r)
{
    head_search *h = ctx;
    if (strcmp(r->hash, h->head) == 0) {
        h->seq = r->seq;
        return 1;
    }
    return 0;
}

static int audit(int argc, char **argv)
{
    const char *db = NULL, *mk = NULL, *expect_head = NULL;
    bool verify = false, json = false;
    long limit = 50;
    const cl_opt opts[] = {
        {"db", CL_ARG_STRING, &db, "FILE", "the key server database", true},
        {"master-key", CL_ARG_STRING, &mk, "FILE", MK_HELP, false},
        {"verify", CL_ARG_FLAG, &verify, NULL, "check the keyed chain, its checkpoint and the secrets' versions; exit 1 "
                                               "if anything was changed", false},
        {"expect-head", CL_ARG_STRING, &expect_head, "HEX", "with --verify: also fail unless the log contains this "
         "head (printed by an earlier --verify and kept elsewhere): detects a rollback to an older copy", false},
        {"limit", CL_ARG_LONG, &limit, "N", "show the last N records (default 50; 0: all)", false, 0, 1L << 40},
        {"json", CL_ARG_FLAG, &json, NULL, "one JSON object per line", false},
    };
    const cl_cmd_usage usage = {
        "cloister keyserver audit --db FILE --master-key FILE [--verify [--expect-head HEX]] [--limit N] [--json]",
        "Shows the audit log (every release and denial), or with --verify checks its HMAC chain against the keyed\n"
        "checkpoint (an edited, inserted, reordered or removed record, the newest records or all of them removed)\n"
        "and every secret's version, and prints the head. A rollback of the whole database to an older copy is\n"
        "only visible against a head recorded elsewhere: keep the printed head, and pass it to --expect-head."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    if (expect_head && !verify) {
        fprintf(stderr, "%s: --expect-head needs --verify\n", argv[0]);
        return CL_EXIT_USAGE;
    }
    if (expect_head && strlen(expect_head) != 64) {
        fprintf(stderr, "%s: --expect-head takes the 64 hex digits printed by --verify\n", argv[0]);
        return CL_EXIT_USAGE;
    }
    cl_store *s = open_store(argv[0], db, mk, false);
    if (!s)
        return CL_EXIT_FAIL;
    cl_err err = {0};
    if (verify) {
        int64_t count, secrets;
        char head[65];
        head_search hs = {expect_head, 0};
        rc = cl_audit_verify(s, &count, head, &err);
        if (rc == 0)
            rc = cl_store_verify(s, &secrets, &err);
        if (rc == 0 && expect_head && cl_audit_list(s, 0, head_cb, &hs, &err) == 0 && hs.seq == 0)
            rc = cl_err_set(&err, CL_E_AUTH, "the log does not contain head %s: the database was rolled back to a "
                            "copy older than the one that head was recorded from (or it is another database)",
                            expect_head);
        cl_store_close(s);
        if (rc != 0)
            return cl_cli_fail(argv[0], &err);
        printf("audit log intact: %lld record%s, head %s\n", (long long)count, count == 1 ? "" : "s", head);
        if (expect_head)
            printf("the expected head is record %lld\n", (long long)hs.seq);
        printf("secrets intact: %lld, each at the version the keyed state records\n", (long long)secrets);
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
