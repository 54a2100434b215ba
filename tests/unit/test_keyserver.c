/* test_keyserver.c — end-to-end tests of the key server with the provisioning client, in process on
 * 127.0.0.1 with an ephemeral port: the allow/deny matrix of the release policy (one test per case), Gramine's
 * secret_prov v1 protocol spoken byte for byte by a raw client, 100 concurrent clients, the encrypted
 * store; and the audit: records that name every secret whole (with the claims), every request
 * after verification audited, the keyed audit chain and checkpoint against an attacker who has the
 * database but not the master key (edits with the plain chain recomputed, deletions, truncation,
 * reordering, insertion), secrets bound to versions in the keyed state (older copies restored),
 * the migration of a first-format database, no implicit master key, and bounded locked memory. */
#include "testutil.h"

#include <arpa/inet.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/pem.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>
#include <sqlite3.h>

#include "cloister/keyserver.h"
#include "keyserver/ks_internal.h"
#include "cloister/pki.h"

typedef struct env {
    char *dir, *db, *mk, *policy, *ca, *cert, *key, *sim_cert;
    EVP_PKEY *qe_key;
    X509 *qe_cert;
    cl_keyserver *ks;
    char server[64];
    uint8_t exe[32];
    uint8_t signer[32];
} env;

static env *E;

/* ---- test PKI: a CA and a server certificate for 127.0.0.1 */

static X509 *issue(EVP_PKEY *key, const char *cn, X509 *ca, EVP_PKEY *ca_key, bool is_ca)
{
    X509 *c = X509_new();
    X509_set_version(c, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(c), is_ca ? 1 : 2);
    X509_NAME *n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_ASC, (const uint8_t *)cn, -1, -1, 0);
    X509_set_subject_name(c, n);
    X509_set_issuer_name(c, ca ? X509_get_subject_name(ca) : n);
    X509_NAME_free(n);
    X509_gmtime_adj(X509_getm_notBefore(c), -300);
    X509_gmtime_adj(X509_getm_notAfter(c), 86400);
    X509_set_pubkey(c, key);
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, ca ? ca : c, c, NULL, NULL, 0);
    const char *exts[][2] = {{"basicConstraints", is_ca ? "critical,CA:TRUE" : "CA:FALSE"},
                             {"subjectAltName", is_ca ? NULL : "IP:127.0.0.1"}};
    for (int i = 0; i < 2; i++) {
        if (!exts[i][1])
            continue;
        X509_EXTENSION *e = X509V3_EXT_conf(NULL, &ctx, exts[i][0], exts[i][1]);
        assert_non_null(e);
        X509_add_ext(c, e, -1);
        X509_EXTENSION_free(e);
    }
    assert_true(X509_sign(c, ca_key ? ca_key : key, EVP_sha256()) > 0);
    return c;
}

static void write_pem_cert(const char *path, X509 *c)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    PEM_write_X509(f, c);
    fclose(f);
}

static void write_policy(const char *text)
{
    tu_write_file(E->policy, text, strlen(text));
}

static void write_default_policy(void)
{
    char mre[65], mrs[65], buf[2048];
    cl_hex_encode(E->exe, 32, mre);
    cl_hex_encode(E->signer, 32, mrs);
    snprintf(buf, sizeof buf,
             "{\"version\": 1, \"identities\": ["
             "{\"name\": \"model-server\", \"mrenclave\": \"%s\", \"mrsigner\": \"%s\", \"isv_prod_id\": 0,"
             " \"min_isv_svn\": 2, \"evidence_types\": [\"sim\"], \"secrets\": [\"model-key\", \"tls-key\"],"
             " \"secret_prov\": \"model-key\"},"
             "{\"name\": \"other\", \"mrenclave\": \"%064d\", \"evidence_types\": [\"sim\"], \"secrets\": [\"other-key\"]}"
             "]}",
             mre, mrs, 7);
    write_policy(buf);
}

static int group_setup(void **state)
{
    (void)state;
    E = calloc(1, sizeof(*E));
    cl_log_set_level(CL_LOG_ERROR);
    cl_err err = {0};
    E->dir = tu_tmpdir();
    E->db = tu_path(E->dir, "ks.db");
    E->mk = tu_path(E->dir, "ks.db.master-key");
    E->policy = tu_path(E->dir, "policy.json");
    E->ca = tu_path(E->dir, "ca.pem");
    E->cert = tu_path(E->dir, "server.pem");
    E->key = tu_path(E->dir, "server.key");
    E->sim_cert = tu_path(E->dir, "sim_qe_cert.pem");

    EVP_PKEY *ca_key = EVP_EC_gen("P-256"), *srv_key = EVP_EC_gen("P-256");
    X509 *ca = issue(ca_key, "test CA", NULL, NULL, true);
    X509 *srv = issue(srv_key, "127.0.0.1", ca, ca_key, false);
    write_pem_cert(E->ca, ca);
    write_pem_cert(E->cert, srv);
    FILE *f = fopen(E->key, "w");
    PEM_write_PrivateKey(f, srv_key, NULL, NULL, 0, NULL, NULL);
    fclose(f);
    X509_free(ca);
    X509_free(srv);
    EVP_PKEY_free(ca_key);
    EVP_PKEY_free(srv_key);

    assert_int_equal(cl_attest_sim_qe_generate(&E->qe_key, &E->qe_cert, &err), 0);
    write_pem_cert(E->sim_cert, E->qe_cert);
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM};
    cl_attest_quote id;
    assert_int_equal(cl_attest_sim_identity(&cfg, &id, &err), 0);
    memcpy(E->exe, id.mr_enclave, 32);
    memcpy(E->signer, id.mr_signer, 32);

    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, true, mk, &err), 0);
    cl_store *s = cl_store_open(E->db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_store_put(s, "model-key", (const uint8_t *)"MODEL-KEY-0123456789abcdef", 26, false, &err), 0);
    assert_int_equal(cl_store_put(s, "tls-key", (const uint8_t *)"TLS-KEY", 7, false, &err), 0);
    assert_int_equal(cl_store_put(s, "other-key", (const uint8_t *)"OTHER", 5, false, &err), 0);
    cl_store_close(s);

    write_default_policy();
    const char *trust[] = {E->sim_cert};
    /* every client here connects from 127.0.0.1, 100 at once in test_100_concurrent_clients: more than
     * the default 64 handshakes per source */
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk, .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = 16, .io_timeout_ms = 5000,
                              .max_handshakes_per_source = 256};
    E->ks = cl_keyserver_start(&kc, &err);
    if (!E->ks)
        fail_msg("%s", err.msg);
    snprintf(E->server, sizeof E->server, "127.0.0.1:%d", cl_keyserver_port(E->ks));
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    cl_keyserver_stop(E->ks);
    EVP_PKEY_free(E->qe_key);
    X509_free(E->qe_cert);
    tu_rmrf(E->dir);
    free(E->dir); free(E->db); free(E->mk); free(E->policy); free(E->ca); free(E->cert); free(E->key);
    free(E->sim_cert);
    free(E);
    return 0;
}

/* Restores the default policy after each test (some edit it). */
static int reset(void **state)
{
    (void)state;
    write_default_policy();
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    return 0;
}

typedef struct sim_opts {
    const uint8_t *mrenclave, *mrsigner;
    uint16_t svn;
    bool debug;
    EVP_PKEY *qe_key; /* default: the trusted one */
} sim_opts;

static cl_ratls_identity *make_identity(const sim_opts *o)
{
    cl_err err = {0};
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = o->qe_key ? o->qe_key : E->qe_key,
                                     .sim_mrenclave = o->mrenclave, .sim_mrsigner = o->mrsigner,
                                     .sim_isv_svn = o->svn, .sim_debug = o->debug};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    assert_non_null(p);
    cl_ratls_identity *id = cl_ratls_identity_new(p, NULL, &err);
    assert_non_null(id);
    cl_attest_provider_free(p);
    return id;
}

static int fetch_with(const cl_ratls_identity *id, const char *const *names, size_t n, cl_provision_result *res,
                      cl_err *err)
{
    const char *servers[] = {E->server};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                              .names = names, .name_count = n, .attempts = 1, .timeout_ms = 5000};
    return cl_provision_fetch(&o, res, err);
}

static int fetch(const sim_opts *so, const char *const *names, size_t n, cl_provision_result *res, cl_err *err)
{
    cl_ratls_identity *id = make_identity(so);
    int rc = fetch_with(id, names, n, res, err);
    cl_ratls_identity_free(id);
    return rc;
}

/* The newest audit record. */
static int last_cb(void *ctx, const cl_audit_record *r)
{
    cl_audit_record *dst = ctx;
    cl_audit_record_clear(dst);
    cl_err err = {0};
    assert_int_equal(cl_audit_record_copy(dst, r, &err), 0);
    return 0;
}

static cl_audit_record *last_audit(void)
{
    static cl_audit_record r;
    cl_err err = {0};
    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, mk, &err), 0);
    cl_store *s = cl_store_open(E->db, mk, &err);
    assert_non_null(s);
    cl_audit_record_clear(&r);
    memset(&r, 0, sizeof r);
    assert_int_equal(cl_audit_list(s, 1, last_cb, &r, &err), 0);
    cl_store_close(s);
    return &r;
}

/* A refusal is audited by a worker while the loop sends the denial frame (or the alert): wait for the
 * record. */
static cl_audit_record *audit_after(int64_t seq)
{
    cl_audit_record *r = last_audit();
    for (int i = 0; i < 300 && r->seq <= seq; i++) {
        usleep(10000);
        r = last_audit();
    }
    assert_true(r->seq > seq);
    return r;
}

/* The client is refused with the reason code `wire_reason` (its name in the client's message, and the
 * actionable words `says`), the audit record has the whole reason, and the client's message never the
 * expected values (the policy's mrenclave is not in it). */
static void expect_denied_handshake(const sim_opts *so, const char *audit_reason, const char *wire_reason,
                                    const char *says)
{
    const char *names[] = {"model-key"};
    cl_provision_result res;
    cl_err err = {0};
    int64_t before = last_audit()->seq;
    assert_int_equal(fetch(so, names, 1, &res, &err), -1);
    if (err.code != CL_E_DENIED)
        fail_msg("expected a denial, got: %s", err.msg);
    char want[96];
    snprintf(want, sizeof want, "(reason: %s: ", wire_reason);
    if (!strstr(err.msg, want) || !strstr(err.msg, says))
        fail_msg("the client's message does not give reason %s ('%s'): %s", wire_reason, says, err.msg);
    if (strstr(err.msg, "alert"))
        fail_msg("a TLS alert instead of the denial frame: %s", err.msg);
    char mre[65];
    cl_hex_encode(E->exe, 32, mre);
    if (strstr(err.msg, mre) || strstr(err.msg, "0000000000000000000000000000000000000000000000000000000000000007"))
        fail_msg("the client's message reveals a measurement of the policy: %s", err.msg);
    assert_int_equal(res.count, 0);
    cl_audit_record *r = audit_after(before);
    assert_string_equal(r->decision, "deny");
    if (!strstr(r->reason, audit_reason))
        fail_msg("audit reason '%s' does not mention '%s'", r->reason, audit_reason);
    cl_provision_result_free(&res);
}

/* ---- the allow/deny matrix */

static void test_matching_identity_gets_exactly_its_secrets(void **state)
{
    (void)state;
    sim_opts so = {.svn = 2};
    const char *names[] = {"model-key", "tls-key"};
    cl_provision_result res;
    cl_err err = {0};
    if (fetch(&so, names, 2, &res, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(res.count, 2);
    assert_true(res.secrets[0].granted && res.secrets[1].granted);
    assert_int_equal(res.secrets[0].len, 26);
    assert_memory_equal(res.secrets[0].value, "MODEL-KEY-0123456789abcdef", 26);
    assert_true(cl_secmem_is_locked(res.secrets[0].value));
    assert_memory_equal(res.secrets[1].value, "TLS-KEY", 7);
    cl_provision_result_free(&res);
    cl_audit_record *r = last_audit();
    assert_string_equal(r->decision, "release");
    assert_string_equal(r->identities, "model-server");
    assert_string_equal(r->evidence_type, "sim");
    assert_true(r->insecure);
    assert_int_equal(r->isv_svn, 2);

    /* another identity's secret is not among them */
    const char *mixed[] = {"model-key", "other-key"};
    assert_int_equal(fetch(&so, mixed, 2, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_int_equal(res.count, 2);
    assert_true(res.secrets[0].granted);
    assert_false(res.secrets[1].granted);
    assert_null(res.secrets[1].value);
    cl_provision_result_free(&res);
    r = last_audit();
    assert_string_equal(r->decision, "partial");
    assert_non_null(strstr(r->reason, "other-key: not granted"));
}

static void test_wrong_mrenclave(void **state)
{
    (void)state;
    uint8_t other[32] = {0xee};
    sim_opts so = {.svn = 5, .mrenclave = other};
    expect_denied_handshake(&so, "mrenclave", "measurement_mismatch", "the key server's policy did not accept this server's evidence");
}

static void test_wrong_mrsigner(void **state)
{
    (void)state;
    uint8_t other[32] = {0x51};
    sim_opts so = {.svn = 5, .mrsigner = other};
    expect_denied_handshake(&so, "mrsigner", "measurement_mismatch", "measurement is not one the policy lists");
}

static void test_svn_below_minimum(void **state)
{
    (void)state;
    sim_opts so = {.svn = 1};
    expect_denied_handshake(&so, "below minimum", "svn_too_low", "below the policy's minimum");
}

static void test_debug_enclave_not_allowed(void **state)
{
    (void)state;
    sim_opts so = {.svn = 5, .debug = true};
    expect_denied_handshake(&so, "debug", "debug_not_allowed", "debug mode");
}

static void test_report_data_not_binding_key(void **state)
{
    (void)state;
    cl_err err = {0};
    /* genuine evidence for key A, in a certificate (and TLS session) of key B */
    EVP_PKEY *a = EVP_EC_gen("P-256"), *b = EVP_EC_gen("P-256");
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = E->qe_key, .sim_isv_svn = 5};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    uint8_t rd[64] = {0}, *quote;
    size_t qlen;
    assert_int_equal(cl_ratls_spki_sha256(a, rd, &err), 0);
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);
    X509 *cert = cl_ratls_cert_build(b, quote, qlen, NULL, 0, 1, &err);
    cl_ratls_identity *id = cl_ratls_identity_wrap(b, cert, &err);
    const char *names[] = {"model-key"};
    cl_provision_result res;
    int64_t before = last_audit()->seq;
    assert_int_equal(fetch_with(id, names, 1, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    if (!strstr(err.msg, "(reason: evidence_invalid: "))
        fail_msg("%s", err.msg);
    assert_non_null(strstr(audit_after(before)->reason, "does not bind"));
    cl_ratls_identity_free(id);
    X509_free(cert);
    free(quote);
    cl_attest_provider_free(p);
    EVP_PKEY_free(a);
    EVP_PKEY_free(b);
}

static void test_untrusted_quoting_key(void **state)
{
    (void)state;
    cl_err err = {0};
    EVP_PKEY *k;
    X509 *c;
    assert_int_equal(cl_attest_sim_qe_generate(&k, &c, &err), 0);
    sim_opts so = {.svn = 5, .qe_key = k};
    expect_denied_handshake(&so, "untrusted simulated quoting key", "evidence_invalid", "the key server could not verify this server's evidence");
    EVP_PKEY_free(k);
    X509_free(c);
}

static void test_client_without_certificate(void **state)
{
    (void)state;
    int64_t before = last_audit()->seq;
    int port = cl_keyserver_port(E->ks);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1); /* TLS 1.3: the server decides after this */
    SSL_write(ssl, "CLKS1\0\0\1\11model-key", 18);
    char buf[16];
    assert_true(SSL_read(ssl, buf, sizeof buf) <= 0);
    SSL_free(ssl);
    SSL_CTX_free(ctx);
    close(fd);
    cl_audit_record *r = audit_after(before);
    assert_string_equal(r->decision, "deny");
    assert_non_null(strstr(r->reason, "no client certificate"));
}

static void test_unknown_secret_name(void **state)
{
    (void)state;
    sim_opts so = {.svn = 2};
    const char *names[] = {"no-such-secret"};
    cl_provision_result res;
    cl_err err = {0};
    assert_int_equal(fetch(&so, names, 1, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_false(res.secrets[0].granted);
    cl_provision_result_free(&res);
    cl_audit_record *r = last_audit();
    assert_string_equal(r->decision, "deny");
    assert_non_null(strstr(r->reason, "no-such-secret: not granted"));
}

static void test_empty_policy(void **state)
{
    (void)state;
    write_policy("{\"version\": 1, \"identities\": []}");
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    sim_opts so = {.svn = 5};
    expect_denied_handshake(&so, "policy is empty", "policy_empty", "allows nothing");
    /* an invalid policy also denies everything */
    write_policy("{\"version\": 1, \"identities\": [{\"typo\": 1}]}");
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), -1);
    expect_denied_handshake(&so, "policy is empty", "policy_empty", "allows nothing");
}

/* One identity only, with this evidence type list and TCB status list (JSON arrays). */
static void write_identity_policy(const char *evidence_types, const char *tcb_statuses)
{
    char mre[65], mrs[65], buf[1024];
    cl_hex_encode(E->exe, 32, mre);
    cl_hex_encode(E->signer, 32, mrs);
    snprintf(buf, sizeof buf,
             "{\"version\": 1, \"identities\": [{\"name\": \"model-server\", \"mrenclave\": \"%s\", \"mrsigner\": "
             "\"%s\", \"evidence_types\": %s%s%s, \"secrets\": [\"model-key\"]}]}",
             mre, mrs, evidence_types, tcb_statuses ? ", \"tcb_statuses\": " : "", tcb_statuses ? tcb_statuses : "");
    write_policy(buf);
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
}

static void test_evidence_type_not_allowed(void **state)
{
    (void)state;
    write_identity_policy("[\"sgx-dcap\"]", NULL);
    sim_opts so = {.svn = 5};
    expect_denied_handshake(&so, "evidence type 'sim' not accepted", "evidence_type_not_allowed",
                            "accepts this kind of evidence");
}

static void test_tcb_status_not_allowed(void **state)
{
    (void)state;
    write_identity_policy("[\"sim\"]", "[\"SWHardeningNeeded\"]"); /* sim evidence is UpToDate */
    sim_opts so = {.svn = 5};
    expect_denied_handshake(&so, "TCB status", "tcb_status_not_allowed", "TCB status is not one the policy accepts");
}

/* The reason told is the closest identity's: one identity fails on the measurement, another (with
 * this server's measurement) only on its TCB status. */
static void test_denial_reason_is_the_closest_identity(void **state)
{
    (void)state;
    char mre[65], buf[1024];
    cl_hex_encode(E->exe, 32, mre);
    snprintf(buf, sizeof buf,
             "{\"version\": 1, \"identities\": ["
             "{\"name\": \"a\", \"mrenclave\": \"%064d\", \"evidence_types\": [\"sim\"], \"secrets\": [\"x\"]},"
             "{\"name\": \"b\", \"mrenclave\": \"%s\", \"evidence_types\": [\"sim\"], \"tcb_statuses\": "
             "[\"OutOfDate\"], \"secrets\": [\"model-key\"]},"
             "{\"name\": \"c\", \"mrenclave\": \"%064d\", \"evidence_types\": [\"sgx-dcap\"], \"secrets\": [\"y\"]}]}",
             7, mre, 8);
    write_policy(buf);
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    sim_opts so = {.svn = 5};
    expect_denied_handshake(&so, "'b': TCB status", "tcb_status_not_allowed", "TCB status");
}

/* Evidence failures found by a (DCAP) back end are told by kind too: a back end that reports the
 * collateral out of date (CL_E_EXPIRED) or unobtainable (CL_E_IO) gives collateral_unavailable, one
 * that finds the TCB below every level (CL_E_DENIED) tcb_status_not_allowed, a bad signature
 * (CL_E_AUTH) evidence_invalid. The "real" quote is a sim quote with another QE vendor id, so that the
 * verifier hands it to the test back end. */
static int test_backend(void *ctx, const cl_attest_quote *q, cl_attest_claims *claims, cl_err *err)
{
    (void)q;
    (void)claims;
    cl_status code = *(const cl_status *)ctx;
    return cl_err_set(err, code, "test back end: failing with %s", cl_status_name(code));
}

static void test_backend_failures_are_told_by_kind(void **state)
{
    (void)state;
    cl_err err = {0};
    cl_status mode = CL_E_EXPIRED;
    cl_attest_verifier *v = cl_attest_verifier_new(&err);
    assert_non_null(v);
    assert_int_equal(cl_attest_verifier_add_backend(v, "test", test_backend, &mode, &err), 0);
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk,
                              .verifier = v, .threads = 2};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", cl_keyserver_port(ks));
    /* a quote bound to key k, with a vendor id that is not the sim one */
    EVP_PKEY *k = EVP_EC_gen("P-256");
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = E->qe_key, .sim_isv_svn = 5};
    cl_attest_provider *p = cl_attest_provider_new(&cfg, &err);
    uint8_t rd[64] = {0}, *quote;
    size_t qlen;
    assert_int_equal(cl_ratls_spki_sha256(k, rd, &err), 0);
    assert_int_equal(cl_attest_provider_quote(p, rd, &quote, &qlen, &err), 0);
    memcpy(quote + 12, "NOT-THE-SIM-QE!!", 16); /* SGX quote header: qe_vendor_id at offset 12 */
    X509 *cert = cl_ratls_cert_build(k, quote, qlen, NULL, 0, 1, &err);
    assert_non_null(cert);
    cl_ratls_identity *id = cl_ratls_identity_wrap(k, cert, &err);
    assert_non_null(id);
    const struct {
        cl_status code;
        const char *reason;
    } cases[] = {{CL_E_EXPIRED, "collateral_unavailable"},
                 {CL_E_IO, "collateral_unavailable"},
                 {CL_E_DENIED, "tcb_status_not_allowed"},
                 {CL_E_AUTH, "evidence_invalid"}};
    for (size_t i = 0; i < CL_ARRAY_LEN(cases); i++) {
        mode = cases[i].code;
        const char *servers[] = {server}, *names[] = {"model-key"};
        cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                                  .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 5000};
        cl_provision_result res;
        assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
        assert_int_equal(err.code, CL_E_DENIED);
        char want[64];
        snprintf(want, sizeof want, "(reason: %s: ", cases[i].reason);
        if (!strstr(err.msg, want))
            fail_msg("back end failing with %s: want %s, got: %s", cl_status_name(cases[i].code), cases[i].reason,
                     err.msg);
        if (strstr(err.msg, "test back end"))
            fail_msg("the key server's own error text reached the client: %s", err.msg);
        cl_provision_result_free(&res);
    }
    cl_keyserver_stop(ks);
    cl_ratls_identity_free(id);
    X509_free(cert);
    free(quote);
    cl_attest_provider_free(p);
    EVP_PKEY_free(k);
    cl_attest_verifier_free(v);
}

/* A raw native client with this identity: handshake, request; returns the SSL (its fd in *fd). */
static SSL *raw_native(const cl_ratls_identity *id, SSL_CTX **ctx_out, int *fd_out, const void *req, size_t len)
{
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl_keyserver_port(E->ks))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    assert_int_equal(SSL_write(ssl, req, (int)len), (int)len);
    *ctx_out = ctx;
    *fd_out = fd;
    return ssl;
}

/* Everything the server still sends until it closes (at most `size` bytes). */
static size_t read_rest(SSL *ssl, uint8_t *buf, size_t size)
{
    size_t got = 0;
    for (int n; got < size && (n = SSL_read(ssl, buf + got, (int)(size - got))) > 0;)
        got += (size_t)n;
    return got;
}

/* Hostile: a refused client is sent the 9-byte denial frame and nothing else, whatever it sends after
 * it (garbage, another request); the refusal is one audit record; a client whose first bytes are not
 * the native magic is sent nothing at all. */
static void test_denied_client_gets_the_frame_and_nothing_else(void **state)
{
    (void)state;
    uint8_t other[32] = {0xee};
    sim_opts so = {.svn = 5, .mrenclave = other};
    cl_ratls_identity *id = make_identity(&so);
    int64_t before = last_audit()->seq;
    SSL_CTX *ctx;
    int fd;
    SSL *ssl = raw_native(id, &ctx, &fd, "CLKS1\0\0\1\11model-key", 18);
    uint8_t buf[256];
    size_t got = 0;
    for (int n; got < 9 && (n = SSL_read(ssl, buf + got, (int)(9 - got))) > 0;)
        got += (size_t)n;
    assert_int_equal(got, 9);
    assert_memory_equal(buf, "CLKS1\0\4\0\3", 9); /* denied, measurement_mismatch */
    uint8_t junk[4096];
    memset(junk, 0xa5, sizeof junk);
    SSL_write(ssl, junk, sizeof junk);              /* may fail: the server has closed its side */
    SSL_write(ssl, "CLKS1\0\0\1\11model-key", 18);
    assert_int_equal(read_rest(ssl, buf, sizeof buf), 0);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    cl_audit_record *r = audit_after(before);
    assert_string_equal(r->decision, "deny");
    assert_non_null(strstr(r->reason, "mrenclave"));
    usleep(200000);
    assert_int_equal(last_audit()->seq, before + 1); /* one record for the connection */

    /* not the native protocol: no frame, nothing */
    before = last_audit()->seq;
    ssl = raw_native(id, &ctx, &fd, "GARBAGE-GARBAGE", 15);
    assert_int_equal(read_rest(ssl, buf, sizeof buf), 0);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    assert_string_equal(audit_after(before)->decision, "deny");

    /* secret_prov: closed without a secret, as before */
    before = last_audit()->seq;
    ssl = raw_native(id, &ctx, &fd, "SECRET_PROVISION_RA_TLS_REQUEST_V1", 35);
    assert_int_equal(read_rest(ssl, buf, sizeof buf), 0);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    assert_string_equal(audit_after(before)->decision, "deny");
    cl_ratls_identity_free(id);
}

/* The library client speaking secret_prov, refused: the connection is closed without a secret (that
 * protocol has no denial message). */
static void test_denied_secret_prov_client_is_closed(void **state)
{
    (void)state;
    write_policy("{\"version\": 1, \"identities\": []}");
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    sim_opts so = {.svn = 5};
    cl_ratls_identity *id = make_identity(&so);
    const char *servers[] = {E->server};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                              .secret_prov = true, .attempts = 1};
    cl_provision_result res;
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_non_null(strstr(err.msg, "secret_prov denial"));
    cl_ratls_identity_free(id);
}

static void test_policy_edit_revokes_identity(void **state)
{
    (void)state;
    sim_opts so = {.svn = 2};
    const char *names[] = {"model-key"};
    cl_provision_result res;
    cl_err err = {0};
    cl_ratls_identity *id = make_identity(&so);
    assert_int_equal(fetch_with(id, names, 1, &res, &err), 0);
    cl_provision_result_free(&res);
    /* raise the minimum SVN: the same client is now revoked */
    char mre[65], buf[512];
    cl_hex_encode(E->exe, 32, mre);
    snprintf(buf, sizeof buf, "{\"version\": 1, \"identities\": [{\"name\": \"model-server\", \"mrenclave\": \"%s\","
             " \"min_isv_svn\": 3, \"evidence_types\": \"sim\", \"secrets\": [\"model-key\"]}]}", mre);
    write_policy(buf);
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    int64_t before = last_audit()->seq;
    assert_int_equal(fetch_with(id, names, 1, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_non_null(strstr(audit_after(before)->reason, "below minimum 3"));
    cl_ratls_identity_free(id);
}

/* A connection accepted before a reload finishes under the policy it started with. */
static void test_reload_does_not_disturb_connections(void **state)
{
    (void)state;
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl_keyserver_port(E->ks))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    /* SSL_connect returned: a worker has accepted the connection (and taken its policy snapshot) */
    assert_int_equal(SSL_connect(ssl), 1);

    write_policy("{\"version\": 1, \"identities\": []}");
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);

    static const uint8_t req[] = {'C', 'L', 'K', 'S', '1', 0, 0, 1, 9, 'm', 'o', 'd', 'e', 'l', '-', 'k', 'e', 'y'};
    assert_int_equal(SSL_write(ssl, req, sizeof req), (int)sizeof req);
    uint8_t buf[128];
    int got = 0;
    for (int n; (n = SSL_read(ssl, buf + got, (int)sizeof buf - got)) > 0;)
        got += n;
    assert_int_equal(got, 9 + 1 + 9 + 1 + 4 + 26);
    assert_int_equal(buf[6], 0);      /* handled */
    assert_int_equal(buf[19], 0);     /* released */
    assert_memory_equal(buf + 24, "MODEL-KEY-0123456789abcdef", 26);
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);

    /* a new connection sees the new (empty) policy */
    const char *names[] = {"model-key"};
    cl_provision_result res;
    assert_int_equal(fetch_with(id, names, 1, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    cl_ratls_identity_free(id);
}

/* ---- Gramine secret_prov v1, byte for byte */

static void test_gramine_secret_prov_protocol(void **state)
{
    (void)state;
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl_keyserver_port(E->ks))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    static const char request[] = "SECRET_PROVISION_RA_TLS_REQUEST_V1"; /* sizeof: 35 with the NUL */
    assert_int_equal(sizeof request, 35);
    assert_int_equal(SSL_write(ssl, request, sizeof request), 35);
    uint8_t buf[128];
    size_t got = 0;
    for (int n; got < 37 + 4 + 26 && (n = SSL_read(ssl, buf + got, (int)(sizeof buf - got))) > 0;)
        got += (size_t)n;
    assert_int_equal(got, 37 + 4 + 26);
    assert_memory_equal(buf, "SECRET_PROVISION_RA_TLS_RESPONSE_V1:\0", 37);
    assert_memory_equal(buf + 37, "\x00\x00\x00\x1a", 4); /* 26, big-endian (htonl) */
    assert_memory_equal(buf + 41, "MODEL-KEY-0123456789abcdef", 26);
    assert_true(SSL_read(ssl, buf, sizeof buf) <= 0); /* then the server closes */
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    cl_audit_record *r = last_audit();
    assert_string_equal(r->protocol, "secret_prov");
    assert_string_equal(r->decision, "release");

    /* the library client speaks it too */
    const char *servers[] = {E->server};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                              .secret_prov = true, .attempts = 1};
    cl_provision_result res;
    assert_int_equal(cl_provision_fetch(&o, &res, &err), 0);
    assert_int_equal(res.secrets[0].len, 26);
    cl_provision_result_free(&res);
    cl_ratls_identity_free(id);
}

/* Gramine < 1.8 links mbedTLS without TLS 1.3: refused by default, served with allow_tls12. */
static int secret_prov_tls12(int port, uint8_t *buf, size_t size)
{
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_set_max_proto_version(ctx, TLS1_2_VERSION);
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    int got = -1;
    if (SSL_connect(ssl) == 1 && SSL_write(ssl, "SECRET_PROVISION_RA_TLS_REQUEST_V1", 35) == 35) {
        got = 0;
        for (int n; (size_t)got < size && (n = SSL_read(ssl, buf + got, (int)(size - (size_t)got))) > 0;)
            got += n;
    }
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    cl_ratls_identity_free(id);
    return got;
}

static void test_tls12_only_when_allowed(void **state)
{
    (void)state;
    uint8_t buf[128];
    assert_int_equal(secret_prov_tls12(cl_keyserver_port(E->ks), buf, sizeof buf), -1);

    cl_err err = {0};
    const char *trust[] = {E->sim_cert};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk, .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = 2, .allow_tls12 = true};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    int got = secret_prov_tls12(cl_keyserver_port(ks), buf, sizeof buf);
    cl_keyserver_stop(ks);
    assert_int_equal(got, 37 + 4 + 26);
    assert_memory_equal(buf + 41, "MODEL-KEY-0123456789abcdef", 26);
}

/* ---- refusals after the evidence verified are audited */

/* A stolen (or replayed) RA-TLS certificate: genuine, verifying evidence for key A, presented by a
 * client that holds only key B, so its CertificateVerify cannot verify. The client's OpenSSL checks
 * that certificate and key match when they are installed; the certificate object is given key B's
 * public key for that and A's again before the handshake (an X509 is re-encoded from its fields, so
 * what goes on the wire is exactly the genuine certificate). */
static void test_stolen_certificate_is_audited(void **state)
{
    (void)state;
    cl_err err = {0};
    sim_opts so = {.svn = 2};
    cl_ratls_identity *victim = make_identity(&so); /* allowed by the policy */
    X509 *genuine = cl_ratls_identity_cert(victim);
    EVP_PKEY *b = EVP_EC_gen("P-256");
    X509 *copy = X509_dup(genuine);
    assert_non_null(copy);
    assert_int_equal(X509_set_pubkey(copy, b), 1);
    cl_ratls_identity *thief = cl_ratls_identity_wrap(b, copy, &err);
    const char *servers[] = {E->server}, *names[] = {"model-key"};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = thief,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 5000};
    cl_provision_client *c = cl_provision_client_new(&o, &err);
    if (!c)
        fail_msg("%s", err.msg);
    assert_int_equal(X509_set_pubkey(copy, X509_get0_pubkey(genuine)), 1);
    uint8_t *d1 = NULL, *d2 = NULL;
    int n1 = i2d_X509(genuine, &d1), n2 = i2d_X509(copy, &d2);
    assert_true(n1 > 0 && n1 == n2 && memcmp(d1, d2, (size_t)n1) == 0);
    OPENSSL_free(d1);
    OPENSSL_free(d2);

    int64_t before = last_audit()->seq;
    cl_provision_result res;
    assert_int_equal(cl_provision_client_fetch(c, &res, &err), -1);
    assert_int_equal(res.count, 0);
    cl_provision_result_free(&res);
    cl_audit_record *r = audit_after(before);
    assert_string_equal(r->protocol, "tls");
    assert_string_equal(r->decision, "deny");
    if (!strstr(r->reason, "after the evidence verified") || !strstr(r->reason, "bad signature"))
        fail_msg("audit reason: %s", r->reason);
    char mre[65];
    cl_hex_encode(E->exe, 32, mre);
    assert_string_equal(r->mrenclave, mre); /* the record names the evidence that was presented */
    assert_string_equal(r->evidence_type, "sim");
    assert_string_equal(r->secrets, "");
    /* and the owner of the key still gets its secret */
    assert_int_equal(fetch_with(victim, names, 1, &res, &err), 0);
    cl_provision_result_free(&res);
    cl_provision_client_free(c);
    cl_ratls_identity_free(thief);
    X509_free(copy);
    EVP_PKEY_free(b);
    cl_ratls_identity_free(victim);
}

/* Verified evidence that no identity of the policy matches: refused in the handshake, audited with the
 * claims and the policy's reason. */
static void test_policy_refusal_is_audited(void **state)
{
    (void)state;
    uint8_t other[32] = {0x42};
    sim_opts so = {.svn = 2, .mrenclave = other};
    const char *names[] = {"model-key"};
    cl_provision_result res;
    cl_err err = {0};
    int64_t before = last_audit()->seq;
    assert_int_equal(fetch(&so, names, 1, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    cl_provision_result_free(&res);
    cl_audit_record *r = audit_after(before);
    assert_string_equal(r->protocol, "tls");
    assert_string_equal(r->decision, "deny");
    assert_non_null(strstr(r->reason, "policy: no identity matched"));
    char mre[65];
    cl_hex_encode(other, 32, mre);
    assert_string_equal(r->mrenclave, mre);
    assert_int_equal(r->isv_svn, 2);
}

/* Refusals of clients whose evidence never verified can be caused by anyone who can connect (one
 * host made 250 audit rows a second with junk evidence): they are recorded one by one up to a rate
 * (a burst of ten seconds' worth), and the rest are summarised in one record naming the source, so
 * every refusal is accounted for; a refusal after the evidence verified is always recorded whole. */
static int after_cb(void *ctx, const cl_audit_record *r)
{
    cl_strbuf *b = ctx;
    cl_strbuf_fmt(b, "%s|%s\n", r->peer, r->reason);
    return 0;
}

static void test_unverified_refusals_are_rate_limited(void **state)
{
    (void)state;
    cl_err err = {0};
    int64_t before = last_audit()->seq;
    const char *trust[] = {E->sim_cert};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk,
                              .trust_sim_certs = trust, .trust_sim_count = 1, .threads = 2, .handshake_threads = 1,
                              .audit_unverified_per_second = 1};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    char server[32];
    snprintf(server, sizeof server, "127.0.0.1:%d", cl_keyserver_port(ks));
    EVP_PKEY *k;
    X509 *c;
    assert_int_equal(cl_attest_sim_qe_generate(&k, &c, &err), 0);
    sim_opts junk = {.svn = 5, .qe_key = k};
    cl_ratls_identity *forger = make_identity(&junk);
    uint8_t other[32] = {0x42};
    sim_opts denied = {.svn = 2, .mrenclave = other};
    cl_ratls_identity *verified = make_identity(&denied);
    const char *servers[] = {server}, *names[] = {"model-key"};
    enum { N = 30 };
    uint64_t t0 = cl_now_ns();
    for (int i = 0; i <= N; i++) {
        cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca,
                                  .identity = i < N ? forger : verified, .names = names, .name_count = 1,
                                  .attempts = 1, .timeout_ms = 5000};
        cl_provision_result res;
        assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
        cl_provision_result_free(&res);
    }
    double secs = (double)(cl_now_ns() - t0) / 1e9;
    usleep(300000); /* the last refusals are written by the workers */
    cl_keyserver_stop(ks); /* writes the summary of what was not recorded one by one */

    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, mk, &err), 0);
    cl_store *st = cl_store_open(E->db, mk, &err);
    assert_non_null(st);
    cl_strbuf b = {0};
    assert_int_equal(cl_audit_list(st, last_audit()->seq - before, after_cb, &b, &err), 0);
    cl_store_close(st);
    assert_false(b.failed);
    int one_by_one = 0, policy = 0;
    long summarised = -1;
    for (char *line = b.p, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next)
            *next++ = 0;
        if (strstr(line, "untrusted simulated quoting key"))
            one_by_one++;
        else if (strstr(line, "policy: no identity matched"))
            policy++;
        else if (!strncmp(line, "(summary)|", 10)) {
            assert_int_equal(summarised, -1); /* one summary */
            summarised = strtol(line + 10, NULL, 10);
            assert_non_null(strstr(line, "127.0.0.1 x")); /* it names the source */
        }
    }
    free(b.p);
    /* a burst of 10, then 1 a second; every refusal accounted for; the verified client's refusal whole */
    if (one_by_one < 10 || one_by_one > 10 + (int)secs + 1 || summarised <= 0 || one_by_one + summarised != N ||
        policy != 1)
        fail_msg("%d recorded one by one, %ld summarised, %d policy refusals, in %.1f s", one_by_one, summarised,
                 policy, secs);
    cl_ratls_identity_free(forger);
    cl_ratls_identity_free(verified);
    EVP_PKEY_free(k);
    X509_free(c);
}

/* The key server's TLS private key is in OpenSSL's secure heap (locked, not in core dumps) once the
 * process has one (`cloister keyserver serve` sets it up before loading anything): the heap grows by
 * exactly what the key and a TLS context take (OpenSSL keeps its session ticket keys there) when the
 * server starts, and shrinks back when it stops. */
static void test_tls_key_in_secure_heap(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_int_equal(cl_secure_heap_init(1 << 20, &err), 0);
    size_t base = cl_secure_heap_used();
    EVP_PKEY *k = cl_pki_key_load(E->key, &err);
    assert_non_null(k);
    size_t key_bytes = cl_secure_heap_used() - base;
    assert_true(key_bytes >= 32); /* at least the P-256 scalar */
    EVP_PKEY_free(k);
    assert_int_equal(cl_secure_heap_used(), base);
    SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
    size_t ctx_bytes = cl_secure_heap_used() - base;
    SSL_CTX_free(ctx);

    const char *trust[] = {E->sim_cert};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk, .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = 1, .handshake_threads = 1};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    assert_int_equal(cl_secure_heap_used() - base, key_bytes + ctx_bytes);
    cl_keyserver_stop(ks);
    assert_int_equal(cl_secure_heap_used(), base);
}

/* ---- client fail-over and backoff */

static void test_client_failover_and_backoff(void **state)
{
    (void)state;
    /* a port nobody listens on: bind one, note it, close it */
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    char dead[64];
    snprintf(dead, sizeof dead, "127.0.0.1:%d", ntohs(sa.sin_port));
    close(fd);

    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    const char *names[] = {"model-key"};
    const char *servers[] = {dead, E->server};
    cl_provision_options o = {.servers = servers, .server_count = 2, .ca_file = E->ca, .identity = id,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 2000};
    cl_provision_result res;
    cl_err err = {0};
    if (cl_provision_fetch(&o, &res, &err) != 0)
        fail_msg("%s", err.msg);
    assert_string_equal(res.server, E->server);
    cl_provision_result_free(&res);

    /* only dead servers: three rounds with 30 ms then 60 ms between them (each shortened at random by up
     * to half: cl_provision_backoff_ms), then a clear error */
    o.server_count = 1;
    o.attempts = 3;
    o.backoff_ms = 30;
    uint64_t t0 = cl_now_ns();
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    uint64_t ms = (cl_now_ns() - t0) / 1000000;
    assert_int_equal(err.code, CL_E_IO);
    assert_non_null(strstr(err.msg, "after 3 rounds"));
    assert_true(ms >= 45);
    assert_int_equal(res.count, 0);

    /* a server whose certificate the CA did not issue is not trusted */
    o.servers = (const char *const[]){E->server};
    o.attempts = 1;
    o.ca_file = E->sim_cert; /* some other certificate */
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "server certificate rejected"));
    /* and the name must match */
    o.ca_file = E->ca;
    o.server_name = "keys.example.com";
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    cl_ratls_identity_free(id);
}

/* A client that trickles bytes (each read succeeds before the I/O timeout) is cut off: in its
 * handshake at the handshake deadline (here the connection deadline, which is shorter), in its
 * request at the connection deadline, and the only worker serves the next client. */
static void test_trickling_client_is_cut_off(void **state)
{
    (void)state;
    cl_err err = {0};
    const char *trust[] = {E->sim_cert};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk, .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = 1, .io_timeout_ms = 400,
                              .connection_timeout_ms = 800};
    cl_log_level saved = cl_log_get_level();
    cl_log_set_level(CL_LOG_OFF);
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)cl_keyserver_port(ks))};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    /* a TLS handshake record header announcing 16 KiB, then its body one byte every 200 ms */
    static const uint8_t head[5] = {0x16, 0x03, 0x01, 0x40, 0x00};
    assert_int_equal(send(fd, head, sizeof head, MSG_NOSIGNAL), 5);
    uint64_t t0 = cl_now_ns();
    bool closed = false;
    for (int i = 0; i < 50 && !closed; i++) {
        usleep(200000);
        uint8_t b = 0, r;
        if (send(fd, &b, 1, MSG_NOSIGNAL) != 1)
            closed = true;
        else if (recv(fd, &r, 1, MSG_DONTWAIT) == 0)
            closed = true;
    }
    uint64_t ms = (cl_now_ns() - t0) / 1000000;
    close(fd);
    assert_true(closed);
    assert_true(ms >= 700 && ms < 3000);
    /* the only worker is free again */
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    const char *servers[] = {NULL}, *names[] = {"model-key"};
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", cl_keyserver_port(ks));
    servers[0] = server;
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                              .names = names, .name_count = 1, .attempts = 1, .timeout_ms = 5000};
    cl_provision_result res;
    assert_int_equal(cl_provision_fetch(&o, &res, &err), 0);
    cl_provision_result_free(&res);

    /* an attested client that trickles its request after the handshake holds the only worker until
     * the connection deadline (the watchdog), then the worker is free again */
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    fd = socket(AF_INET, SOCK_STREAM, 0);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    assert_int_equal(SSL_connect(ssl), 1);
    t0 = cl_now_ns();
    closed = false;
    for (int i = 0; i < 50 && !closed; i++) {
        if (SSL_write(ssl, "C", 1) != 1) /* "CLKS1\0..." one byte every 200 ms, never complete */
            closed = true;
        else if (recv(fd, &(uint8_t){0}, 1, MSG_DONTWAIT | MSG_PEEK) == 0)
            closed = true;
        else
            usleep(200000);
    }
    ms = (cl_now_ns() - t0) / 1000000;
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    assert_true(closed);
    assert_true(ms >= 500 && ms < 3000); /* 800 ms from accept, the handshake included */
    assert_int_equal(cl_provision_fetch(&o, &res, &err), 0);
    cl_provision_result_free(&res);
    cl_ratls_identity_free(id);
    cl_keyserver_stop(ks);
    cl_log_set_level(saved);
}

/* Until its first TLS record has arrived whole, a connection holds no TLS object; something that is
 * not TLS, or a client that half-closes before its ClientHello is complete, is closed at once instead
 * of at the handshake deadline (5 s here). */
static int raw_connect(int port)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    struct timeval tv = {3, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    return fd;
}

static void test_not_tls_closed_at_once(void **state)
{
    (void)state;
    int port = cl_keyserver_port(E->ks);
    char buf[64];
    int fd = raw_connect(port);
    uint64_t t0 = cl_now_ns();
    assert_int_equal(send(fd, "GET / HTTP/1.1\r\n\r\n", 18, MSG_NOSIGNAL), 18);
    assert_true(recv(fd, buf, sizeof buf, 0) <= 0);
    assert_true(cl_now_ns() - t0 < 2000000000ull);
    close(fd);
    /* half of a ClientHello record, then a half-close */
    fd = raw_connect(port);
    t0 = cl_now_ns();
    static const uint8_t part[] = {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00};
    assert_int_equal(send(fd, part, sizeof part, MSG_NOSIGNAL), (ssize_t)sizeof part);
    shutdown(fd, SHUT_WR);
    assert_true(recv(fd, buf, sizeof buf, 0) <= 0);
    assert_true(cl_now_ns() - t0 < 2000000000ull);
    close(fd);
    cl_keyserver_stats st;
    cl_keyserver_get_stats(E->ks, &st);
    assert_true(st.accepted >= 2 && st.handshake_failed >= 2);
}

/* ---- concurrency */

typedef struct worker_arg {
    const cl_ratls_identity *id;
    int rc;
    char msg[CL_ERR_MSG_MAX];
} worker_arg;

static void *client_thread(void *p)
{
    worker_arg *a = p;
    const char *names[] = {"model-key"};
    cl_provision_result res;
    cl_err err = {0};
    const char *servers[] = {E->server};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = a->id,
                              .names = names, .name_count = 1, .attempts = 3, .backoff_ms = 50,
                              .timeout_ms = 20000};
    a->rc = cl_provision_fetch(&o, &res, &err);
    if (a->rc == 0 && (res.count != 1 || res.secrets[0].len != 26 ||
                       memcmp(res.secrets[0].value, "MODEL-KEY-0123456789abcdef", 26) != 0))
        a->rc = -2;
    snprintf(a->msg, sizeof a->msg, "%s", err.msg);
    cl_provision_result_free(&res);
    return NULL;
}

static int count_cb(void *ctx, const cl_audit_record *r)
{
    (void)r;
    (*(int64_t *)ctx)++;
    return 0;
}

static int64_t audit_count(void)
{
    cl_err err = {0};
    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, mk, &err), 0);
    cl_store *s = cl_store_open(E->db, mk, &err);
    int64_t n = 0;
    assert_int_equal(cl_audit_list(s, 0, count_cb, &n, &err), 0);
    cl_store_close(s);
    return n;
}

static void test_100_concurrent_clients(void **state)
{
    (void)state;
    enum { N = 100 };
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    int64_t before = audit_count();
    pthread_t t[N];
    worker_arg *args = calloc(N, sizeof(*args));
    for (int i = 0; i < N; i++) {
        args[i].id = id;
        assert_int_equal(pthread_create(&t[i], NULL, client_thread, &args[i]), 0);
    }
    int ok = 0;
    for (int i = 0; i < N; i++) {
        pthread_join(t[i], NULL);
        if (args[i].rc == 0)
            ok++;
        else
            print_message("client %d failed (%d): %s\n", i, args[i].rc, args[i].msg);
    }
    assert_int_equal(ok, N);
    assert_int_equal(audit_count() - before, N);
    free(args);
    cl_ratls_identity_free(id);
}

/* ---- store and audit */

static void test_store_encryption_and_master_key(void **state)
{
    (void)state;
    cl_err err = {0};
    /* the value never appears in the database file in clear */
    size_t n;
    uint8_t *raw = tu_read_file(E->db, &n);
    assert_null(memmem(raw, n, "MODEL-KEY-0123456789abcdef", 26));
    free(raw);
    /* another master key is refused */
    uint8_t wrong[32] = {1};
    assert_null(cl_store_open(E->db, wrong, &err));
    assert_int_equal(err.code, CL_E_KEY);
    /* a scratch store: tampered ciphertext, replace, delete */
    char *db = tu_path(E->dir, "scratch.db");
    uint8_t mk[32] = {9};
    cl_store *s = cl_store_open(db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"one", 3, false, &err), 0);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"two", 3, false, &err), -1);
    assert_int_equal(err.code, CL_E_EXISTS);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"three", 5, true, &err), 0);
    uint8_t *v;
    size_t len;
    assert_int_equal(cl_store_get(s, "a", &v, &len, &err), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(v, "three", 5);
    cl_secmem_free(v);
    assert_int_equal(cl_store_get(s, "b", &v, &len, &err), 1);
    assert_int_equal(cl_store_put(s, "bad name", (const uint8_t *)"x", 1, false, &err), -1);
    cl_store_close(s);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db3, "UPDATE secrets SET value = zeroblob(33) WHERE name='a'", NULL, NULL, NULL),
                     SQLITE_OK);
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_get(s, "a", &v, &len, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_int_equal(cl_store_delete(s, "a", &err), 0);
    assert_int_equal(cl_store_delete(s, "a", &err), -1);
    cl_store_close(s);
    free(db);
}

static void test_audit_chain_detects_tampering(void **state)
{
    (void)state;
    cl_err err = {0};
    char *db = tu_path(E->dir, "audit.db");
    uint8_t mk[32] = {4};
    cl_store *s = cl_store_open(db, mk, &err);
    for (int i = 0; i < 5; i++) {
        cl_audit_record r = {.isv_prod_id = 1, .isv_svn = i, .debug = 0};
        snprintf(r.peer, sizeof r.peer, "127.0.0.1:%d", 1000 + i);
        snprintf(r.decision, sizeof r.decision, "%s", i % 2 ? "deny" : "release");
        snprintf(r.protocol, sizeof r.protocol, "native");
        assert_int_equal(cl_audit_append(s, &r, &err), 0);
        assert_int_equal(r.seq, i + 1);
    }
    int64_t count;
    char head[65];
    assert_int_equal(cl_audit_verify(s, &count, head, &err), 0);
    assert_int_equal(count, 5);
    cl_store_close(s);

    sqlite3 *db3;
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    /* an edited decision */
    assert_int_equal(sqlite3_exec(db3, "UPDATE audit SET decision='release' WHERE seq=2", NULL, NULL, NULL), SQLITE_OK);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "record 2"));
    cl_store_close(s);
    assert_int_equal(sqlite3_exec(db3, "UPDATE audit SET decision='deny' WHERE seq=2", NULL, NULL, NULL), SQLITE_OK);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), 0);
    cl_store_close(s);
    /* an edited row whose hash was recomputed naively still breaks the link to the next row */
    assert_int_equal(sqlite3_exec(db3, "UPDATE audit SET hash='00' WHERE seq=3", NULL, NULL, NULL), SQLITE_OK);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), -1);
    cl_store_close(s);
    /* a removed row */
    assert_int_equal(sqlite3_exec(db3, "DELETE FROM audit WHERE seq IN (3)", NULL, NULL, NULL), SQLITE_OK);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), -1);
    assert_non_null(strstr(err.msg, "record 3 is missing"));
    cl_store_close(s);
    sqlite3_close(db3);
    free(db);

    /* and the live server's log is intact after all the tests above */
    uint8_t live_mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, live_mk, &err), 0);
    s = cl_store_open(E->db, live_mk, &err);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), 0);
    assert_true(count > 10);
    cl_store_close(s);
}


/* ---- audit completeness, keyed chain, anti-rollback, master key */

/* A hostile request: eight long bogus names, then a real one. The real one is released
 * and the audit row (and the log line) names all nine, whole. */
static void test_audit_names_every_secret_whole(void **state)
{
    (void)state;
    char bogus[8][CL_POLICY_MAX_SECRET_NAME + 1];
    const char *names[9];
    for (int i = 0; i < 8; i++) {
        memset(bogus[i], 'a' + i, CL_POLICY_MAX_SECRET_NAME);
        bogus[i][CL_POLICY_MAX_SECRET_NAME] = 0;
        names[i] = bogus[i];
    }
    names[8] = "model-key";
    /* capture the server's log line */
    char *log_path = tu_path(E->dir, "hostile.log");
    fflush(stderr);
    int saved_fd = dup(2);
    FILE *lf = fopen(log_path, "w");
    assert_non_null(lf);
    dup2(fileno(lf), 2);
    cl_log_level saved = cl_log_get_level();
    cl_log_set_level(CL_LOG_INFO);
    sim_opts so = {.svn = 2};
    cl_provision_result res;
    cl_err err = {0};
    int rc = fetch(&so, names, 9, &res, &err);
    cl_audit_record *r = last_audit();
    fflush(stderr);
    cl_log_set_level(saved);
    dup2(saved_fd, 2);
    close(saved_fd);
    fclose(lf);
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_int_equal(res.count, 9);
    assert_true(res.secrets[8].granted);
    cl_provision_result_free(&res);
    assert_string_equal(r->decision, "partial");
    for (int i = 0; i < 8; i++) {
        char want[CL_POLICY_MAX_SECRET_NAME + 32];
        memset(want, 0, sizeof want);
        snprintf(want, sizeof want, "%.128s=denied", bogus[i]);
        if (!strstr(r->secrets, want))
            fail_msg("audit secrets do not name bogus secret %d whole: %.80s...", i, r->secrets);
        snprintf(want, sizeof want, "%.128s: not granted", bogus[i]);
        if (!strstr(r->reason, want))
            fail_msg("audit reason does not name bogus secret %d whole", i);
    }
    if (!strstr(r->secrets, "model-key=released"))
        fail_msg("the audit row hides the release of model-key: ...%s", r->secrets + strlen(r->secrets) - 40);
    size_t n;
    char *log = (char *)tu_read_file(log_path, &n);
    char *line = strstr(log, "partial ");
    assert_non_null(line);
    char *eol = strchr(line, '\n');
    assert_non_null(eol);
    *eol = 0;
    if (!strstr(line, "model-key=released") || !strstr(line, bogus[7]))
        fail_msg("the log line is cut: %zu bytes", strlen(line));
    free(log);
    free(log_path);
}

/* ---- an attacker who has the database file but not the master key */

static sqlite3 *attack_open(const char *base, const char *path)
{
    /* each attack starts from a copy of the pristine database */
    size_t n;
    uint8_t *raw = tu_read_file(base, &n);
    tu_write_file(path, raw, n);
    free(raw);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(path, &db3), SQLITE_OK);
    return db3;
}

static void attack_exec(sqlite3 *db3, const char *sql)
{
    char *msg = NULL;
    if (sqlite3_exec(db3, sql, NULL, NULL, &msg) != SQLITE_OK)
        fail_msg("attack SQL failed: %s: %s", sql, msg ? msg : "?");
}

/* What the attacker can compute: the plain SHA-256 chain of the first audit format, over the
 * columns seq..reason as text, from the first row on. */
static void attack_rehash(sqlite3 *db3, int64_t from)
{
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db3, "SELECT seq, time, peer, protocol, decision, evidence_type, insecure, "
                                        "evidence_sha256, mrenclave, mrsigner, isv_prod_id, isv_svn, debug, identities, "
                                        "secrets, reason FROM audit ORDER BY seq", -1, &st, NULL), SQLITE_OK);
    char prev[65];
    memset(prev, '0', 64);
    prev[64] = 0;
    int64_t seqs[64];
    char hashes[64][65], prevs[64][65];
    int n = 0;
    while (sqlite3_step(st) == SQLITE_ROW && n < 64) {
        if (sqlite3_column_int64(st, 0) < from) {
            /* rows before the edit keep their hash: the chain continues from it */
            sqlite3_stmt *h;
            assert_int_equal(sqlite3_prepare_v2(db3, "SELECT hash FROM audit WHERE seq=?", -1, &h, NULL), SQLITE_OK);
            sqlite3_bind_int64(h, 1, sqlite3_column_int64(st, 0));
            assert_int_equal(sqlite3_step(h), SQLITE_ROW);
            snprintf(prev, sizeof prev, "%.64s", (const char *)sqlite3_column_text(h, 0));
            sqlite3_finalize(h);
            continue;
        }
        EVP_MD_CTX *c = EVP_MD_CTX_new();
        assert_non_null(c);
        assert_int_equal(EVP_DigestInit_ex(c, EVP_sha256(), NULL), 1);
        EVP_DigestUpdate(c, prev, 64);
        EVP_DigestUpdate(c, "\n", 1);
        for (int i = 0; i < 16; i++) {
            if (i)
                EVP_DigestUpdate(c, "\x1f", 1);
            const unsigned char *t = sqlite3_column_text(st, i);
            EVP_DigestUpdate(c, t ? (const char *)t : "", t ? strlen((const char *)t) : 0);
        }
        uint8_t h[32];
        EVP_DigestFinal_ex(c, h, NULL);
        EVP_MD_CTX_free(c);
        seqs[n] = sqlite3_column_int64(st, 0);
        memcpy(prevs[n], prev, 65);
        cl_hex_encode(h, 32, hashes[n]);
        memcpy(prev, hashes[n], 65);
        n++;
    }
    sqlite3_finalize(st);
    for (int i = 0; i < n; i++) {
        char sql[256];
        snprintf(sql, sizeof sql, "UPDATE audit SET prev_hash='%.64s', hash='%.64s' WHERE seq=%lld", prevs[i], hashes[i],
                 (long long)seqs[i]);
        attack_exec(db3, sql);
    }
}

/* Runs one attack (SQL, then, unless rehash_from is 0, the plain chain recomputed from that record on)
 * and expects audit verification to fail naming `expect` (NULL: any CL_E_AUTH). */
static void expect_attack_detected(const char *base, const char *what, const char *sql, int64_t rehash_from,
                                   const uint8_t *mk, const char *expect)
{
    char *path = tu_path(E->dir, "attacked.db");
    sqlite3 *db3 = attack_open(base, path);
    attack_exec(db3, sql);
    if (rehash_from > 0)
        attack_rehash(db3, rehash_from);
    sqlite3_close(db3);
    cl_err err = {0};
    cl_store *s = cl_store_open(path, mk, &err);
    if (!s)
        fail_msg("%s: the store does not open: %s", what, err.msg);
    int64_t count = -1;
    char head[65];
    int rc = cl_audit_verify(s, &count, head, &err);
    cl_store_close(s);
    if (rc == 0)
        fail_msg("%s: audit --verify passed (%lld records)", what, (long long)count);
    assert_int_equal(err.code, CL_E_AUTH);
    if (expect && !strstr(err.msg, expect))
        fail_msg("%s: '%s' does not say '%s'", what, err.msg, expect);
    unlink(path);
    free(path);
}

static void test_audit_chain_is_keyed(void **state)
{
    (void)state;
    cl_err err = {0};
    char *base = tu_path(E->dir, "keyed.db");
    uint8_t mk[32] = {5};
    cl_store *s = cl_store_open(base, mk, &err);
    assert_non_null(s);
    for (int i = 0; i < 6; i++) {
        cl_audit_record r = {.isv_prod_id = 1, .isv_svn = i, .debug = 0};
        snprintf(r.peer, sizeof r.peer, "10.0.0.%d:4000", i);
        snprintf(r.decision, sizeof r.decision, "%s", i % 2 ? "deny" : "release");
        snprintf(r.protocol, sizeof r.protocol, "native");
        assert_int_equal(cl_audit_append(s, &r, &err), 0);
    }
    int64_t count;
    char head[65];
    assert_int_equal(cl_audit_verify(s, &count, head, &err), 0);
    assert_int_equal(count, 6);
    cl_store_close(s);

    expect_attack_detected(base, "edit + recomputed plain chain", "UPDATE audit SET decision='release' WHERE seq=2",
                           2, mk, "record 2: its content was changed");
    expect_attack_detected(base, "edit without recomputing", "UPDATE audit SET reason='nothing' WHERE seq=4", 0, mk,
                           "record 4");
    expect_attack_detected(base, "deletion + renumbering + recomputed chain",
                           "DELETE FROM audit WHERE seq=3; UPDATE audit SET seq=seq-1 WHERE seq>3", 3, mk, "record 3");
    expect_attack_detected(base, "deletion in the middle", "DELETE FROM audit WHERE seq=3", 0, mk,
                           "record 3 is missing");
    expect_attack_detected(base, "truncation of the newest records", "DELETE FROM audit WHERE seq>=5", 0, mk,
                           "newest records were removed");
    expect_attack_detected(base, "deletion of all records", "DELETE FROM audit", 0, mk, "newest records were removed");
    expect_attack_detected(base, "reordering + recomputed chain",
                           "UPDATE audit SET seq=100 WHERE seq=2; UPDATE audit SET seq=2 WHERE seq=3;"
                           "UPDATE audit SET seq=3 WHERE seq=100",
                           2, mk, "record 2");
    expect_attack_detected(base, "insertion at the end + recomputed chain",
                           "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq=6; UPDATE t SET seq=7, "
                           "peer='6.6.6.6:6'; INSERT INTO audit SELECT * FROM t",
                           7, mk, "record 7");
    expect_attack_detected(base, "insertion in the middle + renumbering + recomputed chain",
                           "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq=3; UPDATE t SET seq=4, "
                           "decision='release'; UPDATE audit SET seq=seq+100 WHERE seq>=4; "
                           "UPDATE audit SET seq=seq-99 WHERE seq>=104; INSERT INTO audit SELECT * FROM t",
                           4, mk, "record 4");
    /* the keyed checkpoint itself */
    expect_attack_detected(base, "checkpoint deleted, newest records removed",
                           "DELETE FROM meta WHERE key='state'; DELETE FROM audit WHERE seq>=5", 0, mk,
                           "keyed state is missing");
    {
        /* the checkpoint's count and head set to those of record 4, then the newer records removed */
        char *path = tu_path(E->dir, "attacked.db");
        sqlite3 *db3 = attack_open(base, path);
        sqlite3_stmt *st;
        assert_int_equal(sqlite3_prepare_v2(db3, "SELECT value FROM meta WHERE key='state'", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        uint8_t blob[112];
        assert_int_equal(sqlite3_column_bytes(st, 0), (int)sizeof blob);
        memcpy(blob, sqlite3_column_blob(st, 0), sizeof blob);
        sqlite3_finalize(st);
        blob[7] = 4;
        assert_int_equal(sqlite3_prepare_v2(db3, "SELECT hash FROM audit WHERE seq=4", -1, &st, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        assert_int_equal(cl_hex_decode((const char *)sqlite3_column_text(st, 0), 64, blob + 8, 32), 0);
        sqlite3_finalize(st);
        assert_int_equal(sqlite3_prepare_v2(db3, "UPDATE meta SET value=? WHERE key='state'", -1, &st, NULL), SQLITE_OK);
        sqlite3_bind_blob(st, 1, blob, sizeof blob, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
        attack_exec(db3, "DELETE FROM audit WHERE seq>=5");
        sqlite3_close(db3);
        cl_store *a = cl_store_open(path, mk, &err);
        assert_non_null(a);
        int64_t n;
        char h[65];
        assert_int_equal(cl_audit_verify(a, &n, h, &err), -1);
        assert_int_equal(err.code, CL_E_AUTH);
        assert_non_null(strstr(err.msg, "does not verify"));
        /* and nothing more can be appended on top of it (which would launder the removal) */
        cl_audit_record r = {.isv_prod_id = -1, .isv_svn = -1, .debug = -1};
        assert_int_equal(cl_audit_append(a, &r, &err), -1);
        assert_int_equal(err.code, CL_E_AUTH);
        cl_store_close(a);
        unlink(path);
        free(path);
    }
    /* the MACs are keyed: another master key cannot recompute (nor verify) them */
    uint8_t other[32] = {6};
    cl_store *o = cl_store_open(base, other, &err);
    assert_null(o);
    assert_int_equal(err.code, CL_E_KEY);
    free(base);
}

static void test_older_secret_restored_is_refused(void **state)
{
    (void)state;
    cl_err err = {0};
    char *db = tu_path(E->dir, "rollback.db");
    uint8_t mk[32] = {6};
    cl_store *s = cl_store_open(db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"old-value", 9, false, &err), 0);
    assert_int_equal(cl_store_put(s, "b", (const uint8_t *)"b-value", 7, false, &err), 0);
    cl_store_close(s);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "CREATE TABLE saved AS SELECT * FROM secrets WHERE name='a'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"new-value", 9, true, &err), 0);
    cl_store_close(s);
    /* the older row (ciphertext and every column) is put back */
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "DELETE FROM secrets WHERE name='a'; INSERT INTO secrets SELECT * FROM saved");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    uint8_t *v = NULL;
    size_t len;
    int rc = cl_store_get(s, "a", &v, &len, &err);
    if (rc == 0) {
        fail_msg("an older ciphertext restored into the database was served: '%.*s'", (int)len, (const char *)v);
    }
    assert_int_equal(rc, -1);
    assert_int_equal(err.code, CL_E_AUTH);
    if (!strstr(err.msg, "older"))
        fail_msg("unclear error: %s", err.msg);
    /* the other secret is still served */
    assert_int_equal(cl_store_get(s, "b", &v, &len, &err), 0);
    assert_memory_equal(v, "b-value", 7);
    cl_secmem_free(v);
    cl_store_close(s);
    free(db);
}

/* No master key is looked for beside the database: the server needs an explicit path. */
static void test_master_key_is_never_implicit(void **state)
{
    (void)state;
    cl_err err = {0};
    const char *trust[] = {E->sim_cert};
    unsetenv("CLOISTER_MASTER_KEY_FILE");
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .trust_sim_certs = trust,
                              .trust_sim_count = 1, .threads = 1};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (ks) {
        cl_keyserver_stop(ks);
        fail_msg("the server found a master key beside the database without being told where it is");
    }
    if (!strstr(err.msg, "--master-key") || !strstr(err.msg, "CLOISTER_MASTER_KEY_FILE"))
        fail_msg("unclear error: %s", err.msg);
    /* the environment variable names it */
    setenv("CLOISTER_MASTER_KEY_FILE", E->mk, 1);
    ks = cl_keyserver_start(&kc, &err);
    unsetenv("CLOISTER_MASTER_KEY_FILE");
    if (!ks)
        fail_msg("%s", err.msg);
    cl_keyserver_stop(ks);
}

/* ---- migration of a database of the first format (schema 1), replicated here byte for byte:
 * its tables, key check value, secrets sealed with AAD "cloister/keyserver/secret/v1\0" ‖ name, and
 * the plain SHA-256 audit chain */

static void v1_seal(const uint8_t mk[32], const char *name, const char *value, uint8_t *blob, size_t *blob_len)
{
    uint8_t key[32];
    unsigned int kl = 32;
    assert_non_null(HMAC(EVP_sha256(), mk, 32, (const uint8_t *)"cloister/keyserver/enc/v1", 25, key, &kl));
    size_t n = strlen(value);
    tu_fill_random(blob, 12, (uint64_t)n + 1);
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    int l;
    static const char aad[] = "cloister/keyserver/secret/v1";
    assert_int_equal(EVP_EncryptInit_ex(c, EVP_aes_256_gcm(), NULL, key, blob), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &l, (const uint8_t *)aad, sizeof aad), 1);
    assert_int_equal(EVP_EncryptUpdate(c, NULL, &l, (const uint8_t *)name, (int)strlen(name)), 1);
    if (n)
        assert_int_equal(EVP_EncryptUpdate(c, blob + 12, &l, (const uint8_t *)value, (int)n), 1);
    assert_int_equal(EVP_EncryptFinal_ex(c, blob + 12 + n, &l), 1);
    assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, 16, blob + 12 + n), 1);
    EVP_CIPHER_CTX_free(c);
    *blob_len = 12 + n + 16;
}

static void make_v1_db(const char *path, const uint8_t mk[32], bool break_chain)
{
    unlink(path);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(path, &db3), SQLITE_OK);
    attack_exec(db3, "PRAGMA journal_mode=WAL;"
                     "CREATE TABLE meta (key TEXT PRIMARY KEY, value BLOB NOT NULL);"
                     "CREATE TABLE secrets (name TEXT PRIMARY KEY, value BLOB NOT NULL, length INTEGER NOT NULL,"
                     " created INTEGER NOT NULL, updated INTEGER NOT NULL);"
                     "CREATE TABLE audit (seq INTEGER PRIMARY KEY, time TEXT NOT NULL, peer TEXT NOT NULL,"
                     " protocol TEXT NOT NULL, decision TEXT NOT NULL, evidence_type TEXT NOT NULL, insecure INTEGER NOT NULL,"
                     " evidence_sha256 TEXT NOT NULL, mrenclave TEXT NOT NULL, mrsigner TEXT NOT NULL,"
                     " isv_prod_id INTEGER NOT NULL, isv_svn INTEGER NOT NULL, debug INTEGER NOT NULL, identities TEXT NOT NULL,"
                     " secrets TEXT NOT NULL, reason TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);");
    uint8_t check[32];
    unsigned int cl = 32;
    assert_non_null(HMAC(EVP_sha256(), mk, 32, (const uint8_t *)"cloister/keyserver/check/v1", 27, check, &cl));
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db3, "INSERT INTO meta VALUES('key_check', ?)", -1, &st, NULL), SQLITE_OK);
    sqlite3_bind_blob(st, 1, check, 32, SQLITE_STATIC);
    assert_int_equal(sqlite3_step(st), SQLITE_DONE);
    sqlite3_finalize(st);
    const char *secrets[][2] = {{"model-key", "MODEL-KEY-0123456789abcdef"}, {"empty", ""}, {"tls-key", "TLS-KEY"}};
    for (int i = 0; i < 3; i++) {
        uint8_t blob[128];
        size_t n;
        v1_seal(mk, secrets[i][0], secrets[i][1], blob, &n);
        assert_int_equal(sqlite3_prepare_v2(db3, "INSERT INTO secrets VALUES(?, ?, ?, 1700000000, 1700000000)", -1, &st,
                                            NULL), SQLITE_OK);
        sqlite3_bind_text(st, 1, secrets[i][0], -1, SQLITE_STATIC);
        sqlite3_bind_blob(st, 2, blob, (int)n, SQLITE_STATIC);
        sqlite3_bind_int(st, 3, (int)strlen(secrets[i][1]));
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_finalize(st);
    }
    attack_exec(db3, "INSERT INTO audit VALUES(1, '2025-01-01T00:00:00.000Z', '127.0.0.1:1000', 'native', 'release', "
                     "'sim', 1, 'aa', 'bb', 'cc', 0, 2, 0, 'model-server', 'model-key=released', '', '', '');"
                     "INSERT INTO audit VALUES(2, '2025-01-01T00:00:01.000Z', '127.0.0.1:1001', 'tls', 'deny', "
                     "'sim', 1, 'aa', 'bb', 'cc', 0, 1, 0, '', '', 'min_isv_svn 1 below minimum 2', '', '');"
                     "INSERT INTO audit VALUES(3, '2025-01-01T00:00:02.000Z', '127.0.0.1:1002', 'secret_prov', "
                     "'release', 'sim', 1, 'aa', 'bb', 'cc', 0, 2, 0, 'model-server', 'model-key=released', '', '', '');");
    attack_rehash(db3, 1);
    if (break_chain)
        attack_exec(db3, "UPDATE audit SET decision='release' WHERE seq=2");
    sqlite3_close(db3);
}

static int collect_cb(void *ctx, const cl_audit_record *r)
{
    cl_strbuf *b = ctx;
    cl_strbuf_fmt(b, "%lld|%s|%s|%s|%s|%s|%s\n", (long long)r->seq, r->time, r->peer, r->protocol, r->decision,
                  r->secrets, r->reason);
    return 0;
}

static void test_migration_from_first_format(void **state)
{
    (void)state;
    cl_err err = {0};
    char *db = tu_path(E->dir, "v1.db");
    uint8_t mk[32] = {8};
    make_v1_db(db, mk, false);
    /* another key is refused before anything changes */
    uint8_t wrong[32] = {9};
    assert_null(cl_store_open(db, wrong, &err));
    assert_int_equal(err.code, CL_E_KEY);

    cl_store *s = cl_store_open(db, mk, &err);
    if (!s)
        fail_msg("the first format does not open: %s", err.msg);
    uint8_t *v;
    size_t len;
    assert_int_equal(cl_store_get(s, "model-key", &v, &len, &err), 0);
    assert_int_equal(len, 26);
    assert_memory_equal(v, "MODEL-KEY-0123456789abcdef", 26);
    cl_secmem_free(v);
    assert_int_equal(cl_store_get(s, "empty", &v, &len, &err), 0);
    assert_int_equal(len, 0);
    cl_secmem_free(v);
    assert_int_equal(cl_store_get(s, "tls-key", &v, &len, &err), 0);
    assert_memory_equal(v, "TLS-KEY", 7);
    cl_secmem_free(v);
    int64_t count, nsecrets;
    char head[65];
    if (cl_audit_verify(s, &count, head, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(count, 3);
    assert_int_equal(cl_store_verify(s, &nsecrets, &err), 0);
    assert_int_equal(nsecrets, 3);
    /* every record kept, field for field */
    cl_strbuf b = {0};
    assert_int_equal(cl_audit_list(s, 0, collect_cb, &b, &err), 0);
    char *text = cl_strbuf_take(&b, NULL);
    assert_string_equal(text,
                        "1|2025-01-01T00:00:00.000Z|127.0.0.1:1000|native|release|model-key=released|\n"
                        "2|2025-01-01T00:00:01.000Z|127.0.0.1:1001|tls|deny||min_isv_svn 1 below minimum 2\n"
                        "3|2025-01-01T00:00:02.000Z|127.0.0.1:1002|secret_prov|release|model-key=released|\n");
    free(text);
    /* and the log goes on */
    cl_audit_record r = {.isv_prod_id = -1, .isv_svn = -1, .debug = -1};
    snprintf(r.decision, sizeof r.decision, "deny");
    assert_int_equal(cl_audit_append(s, &r, &err), 0);
    assert_int_equal(r.seq, 4);
    cl_store_close(s);
    /* the migrated database is of the new schema: reopening changes nothing */
    s = cl_store_open(db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_audit_verify(s, &count, head, &err), 0);
    assert_int_equal(count, 4);
    cl_store_close(s);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db3, "SELECT value FROM meta WHERE key='schema'", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "2");
    sqlite3_finalize(st);
    sqlite3_close(db3);

    /* a first-format database whose chain is already broken is not migrated (that would bless the
     * edit): refused, and left as it was */
    make_v1_db(db, mk, true);
    assert_null(cl_store_open(db, mk, &err));
    assert_int_equal(err.code, CL_E_AUTH);
    if (!strstr(err.msg, "cannot migrate") || !strstr(err.msg, "record 2") || !strstr(err.msg, "nothing was changed"))
        fail_msg("unclear error: %s", err.msg);
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    assert_int_equal(sqlite3_prepare_v2(db3, "SELECT COUNT(*) FROM meta WHERE key='schema'", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db3, "SELECT COUNT(*) FROM pragma_table_info('secrets') WHERE name='version'",
                                        -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_int_equal(sqlite3_column_int(st, 0), 0);
    sqlite3_finalize(st);
    sqlite3_close(db3);
    free(db);
}

/* ---- more restorations an attacker with the database can try */

static void test_secret_rows_are_bound_to_the_keyed_state(void **state)
{
    (void)state;
    cl_err err = {0};
    char *db = tu_path(E->dir, "bound.db");
    uint8_t mk[32] = {10};
    cl_store *s = cl_store_open(db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"one", 3, false, &err), 0);
    assert_int_equal(cl_store_put(s, "b", (const uint8_t *)"bee", 3, false, &err), 0);
    cl_store_close(s);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "CREATE TABLE saved AS SELECT * FROM secrets");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"two", 3, true, &err), 0);
    assert_int_equal(cl_store_delete(s, "b", &err), 0);
    cl_store_close(s);

    uint8_t *v;
    size_t len;
    /* the older ciphertext with its version column set to the current version: does not decrypt */
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "UPDATE secrets SET value=(SELECT value FROM saved WHERE name='a') WHERE name='a'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_get(s, "a", &v, &len, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "does not decrypt"));
    /* storing it again repairs it */
    assert_int_equal(cl_store_put(s, "a", (const uint8_t *)"three", 5, true, &err), 0);
    assert_int_equal(cl_store_get(s, "a", &v, &len, &err), 0);
    assert_memory_equal(v, "three", 5);
    cl_secmem_free(v);
    cl_store_close(s);
    /* a deleted secret put back from the older copy */
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "INSERT INTO secrets SELECT * FROM saved WHERE name='b'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_get(s, "b", &v, &len, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "not in the store's keyed state"));
    int64_t n;
    assert_int_equal(cl_store_verify(s, &n, &err), -1);
    assert_non_null(strstr(err.msg, "'b'"));
    /* a secret removed outside cloister is reported, not just missing */
    cl_store_close(s);
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "DELETE FROM secrets WHERE name='b'; DELETE FROM secrets WHERE name='a'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_stat(s, "a", &len, &err), -1);
    assert_non_null(strstr(err.msg, "deleted outside cloister"));
    assert_int_equal(cl_store_stat(s, "never-stored", &len, &err), 1);
    /* the older list of versions put back with the older rows: the keyed state no longer matches it */
    cl_store_close(s);
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "CREATE TABLE saved_meta AS SELECT * FROM meta WHERE key='manifest'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_put(s, "c", (const uint8_t *)"c", 1, false, &err), 0);
    cl_store_close(s);
    assert_int_equal(sqlite3_open(db, &db3), SQLITE_OK);
    attack_exec(db3, "UPDATE meta SET value=(SELECT value FROM saved_meta) WHERE key='manifest'");
    sqlite3_close(db3);
    s = cl_store_open(db, mk, &err);
    assert_int_equal(cl_store_get(s, "c", &v, &len, &err), -1);
    assert_int_equal(err.code, CL_E_AUTH);
    assert_non_null(strstr(err.msg, "does not match the keyed state"));
    cl_store_close(s);
    free(db);
}

/* ---- every decision after verification is audited */

/* An attested raw TLS session: sends `req` (then close_notify when `close_after`), reads the answer
 * (at most cap bytes) and returns its length, or -1 if the handshake failed. */
static int raw_session(int port, const void *req, size_t n, bool close_after, uint8_t *resp, size_t cap)
{
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    cl_err err = {0};
    SSL_CTX *ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(ctx, E->ca, NULL);
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(id, ctx, &err), 0);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    SSL *ssl = SSL_new(ctx);
    SSL_set_fd(ssl, fd);
    int got = -1;
    if (SSL_connect(ssl) == 1) {
        if (n)
            assert_int_equal(SSL_write(ssl, req, (int)n), (int)n);
        if (close_after)
            SSL_shutdown(ssl);
        got = 0;
        for (int r; (size_t)got < cap && (r = SSL_read(ssl, resp + got, (int)(cap - (size_t)got))) > 0;)
            got += r;
    }
    SSL_free(ssl);
    close(fd);
    SSL_CTX_free(ctx);
    cl_ratls_identity_free(id);
    return got;
}

static void expect_audited(int64_t before, const char *protocol, const char *decision, const char *secrets,
                           const char *reason)
{
    cl_audit_record *r = audit_after(before);
    assert_int_equal(r->seq, before + 1); /* exactly one record */
    assert_string_equal(r->protocol, protocol);
    assert_string_equal(r->decision, decision);
    if (secrets && strcmp(r->secrets, secrets) != 0)
        fail_msg("audit secrets '%s', expected '%s'", r->secrets, secrets);
    if (!strstr(r->reason, reason))
        fail_msg("audit reason '%s' does not say '%s'", r->reason, reason);
    assert_string_equal(r->identities, "model-server");
    assert_non_null(strstr(r->claims, "\"evidence_types\":[\"sim\"]"));
}

static void test_every_request_is_audited(void **state)
{
    (void)state;
    int port = cl_keyserver_port(E->ks);
    uint8_t resp[256];
    int64_t before = last_audit()->seq;
    /* an unknown request */
    static const char junk[35] = "GET / HTTP/1.1\r\nHost: x\r\n\r\n";
    assert_true(raw_session(port, junk, sizeof junk, false, resp, sizeof resp) >= 0);
    expect_audited(before, "unknown", "deny", "", "unknown request");
    /* the connection closed after the attested handshake, no request */
    before = last_audit()->seq;
    assert_true(raw_session(port, NULL, 0, true, resp, sizeof resp) >= 0);
    expect_audited(before, "unknown", "deny", "", "no request");
    /* malformed native requests: answered with status 2, and audited with what was wrong */
    static const uint8_t zero[] = {'C', 'L', 'K', 'S', '1', 0, 0, 0};
    before = last_audit()->seq;
    assert_int_equal(raw_session(port, zero, sizeof zero, false, resp, sizeof resp), 9);
    assert_int_equal(resp[6], CL_KS_STATUS_MALFORMED);
    expect_audited(before, "native", "deny", "", "malformed native request: 0 names");
    static const uint8_t badname[] = {'C', 'L', 'K', 'S', '1', 0, 0, 2, 9, 'm', 'o', 'd', 'e', 'l', '-', 'k', 'e', 'y',
                                      4, 'b', 'a', 'd', '!'};
    before = last_audit()->seq;
    assert_int_equal(raw_session(port, badname, sizeof badname, false, resp, sizeof resp), 9);
    expect_audited(before, "native", "deny", "model-key=denied", "name 2 of 2 is not a valid secret name");
    static const uint8_t cut[] = {'C', 'L', 'K', 'S', '1', 0, 0, 3, 9, 'm', 'o', 'd', 'e', 'l', '-', 'k', 'e', 'y'};
    before = last_audit()->seq;
    assert_int_equal(raw_session(port, cut, sizeof cut, true, resp, sizeof resp), 9);
    expect_audited(before, "native", "deny", "model-key=denied", "name 2 of 3 is missing");

    /* secret_prov: the identity's secret is not in the store */
    char mre[65], buf[1024];
    cl_hex_encode(E->exe, 32, mre);
    snprintf(buf, sizeof buf, "{\"version\": 1, \"identities\": [{\"name\": \"model-server\", \"mrenclave\": \"%s\","
             " \"evidence_types\": \"sim\", \"secrets\": [\"model-key\", \"rolled-back\", \"not-stored\"], "
             "\"secret_prov\": \"not-stored\"}]}", mre);
    write_policy(buf);
    cl_err err = {0};
    assert_int_equal(cl_keyserver_reload_policy(E->ks, &err), 0);
    before = last_audit()->seq;
    assert_int_equal(raw_session(port, CL_SECRET_PROV_REQUEST, sizeof CL_SECRET_PROV_REQUEST, false, resp, sizeof resp), 0);
    expect_audited(before, "secret_prov", "deny", "not-stored=denied", "not-stored: granted but not in the store");

    /* a store error: an older copy of a granted secret restored into the live database */
    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, mk, &err), 0);
    cl_store *s = cl_store_open(E->db, mk, &err);
    assert_non_null(s);
    assert_int_equal(cl_store_put(s, "rolled-back", (const uint8_t *)"v1", 2, false, &err), 0);
    cl_store_close(s);
    sqlite3 *db3;
    assert_int_equal(sqlite3_open(E->db, &db3), SQLITE_OK);
    attack_exec(db3, "CREATE TABLE saved_rb AS SELECT * FROM secrets WHERE name='rolled-back'");
    sqlite3_close(db3);
    s = cl_store_open(E->db, mk, &err);
    assert_int_equal(cl_store_put(s, "rolled-back", (const uint8_t *)"v2", 2, true, &err), 0);
    cl_store_close(s);
    assert_int_equal(sqlite3_open(E->db, &db3), SQLITE_OK);
    attack_exec(db3, "DELETE FROM secrets WHERE name='rolled-back'; INSERT INTO secrets SELECT * FROM saved_rb;"
                     "DROP TABLE saved_rb");
    sqlite3_close(db3);
    const char *names[] = {"model-key", "rolled-back"};
    sim_opts so = {.svn = 2};
    cl_provision_result res;
    before = last_audit()->seq;
    assert_int_equal(fetch(&so, names, 2, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    assert_true(res.secrets[0].granted);
    assert_false(res.secrets[1].granted);
    cl_provision_result_free(&res);
    expect_audited(before, "native", "partial", "model-key=released; rolled-back=denied",
                   "rolled-back: secret 'rolled-back' in the database is version");
    assert_non_null(strstr(last_audit()->reason, "older copy"));
    /* repaired by storing it again */
    s = cl_store_open(E->db, mk, &err);
    assert_int_equal(cl_store_put(s, "rolled-back", (const uint8_t *)"v3", 2, true, &err), 0);
    cl_store_close(s);
    assert_int_equal(fetch(&so, names, 2, &res, &err), 0);
    assert_memory_equal(res.secrets[1].value, "v3", 2);
    cl_provision_result_free(&res);
}

/* ---- bounded locked memory */

static void test_budget_reservations(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_null(ks_budget_new(1024, 1 << 20, 100, &err));
    assert_int_equal(err.code, CL_E_INVALID);
    assert_null(ks_budget_new(64 * 1024, 64 * 1024, 100, &err)); /* one buffer and its header page do not fit */
    assert_int_equal(err.code, CL_E_INVALID);
    ks_budget *b = ks_budget_new(16 * 1024, 64 * 1024, 100, &err);
    assert_non_null(b);
    size_t in_use, peak;
    assert_int_equal(ks_budget_reserve(b, 40 * 1024, &in_use), 0);
    uint64_t t0 = cl_now_ns();
    assert_int_equal(ks_budget_reserve(b, 30 * 1024, &in_use), -1); /* waits 100 ms, then gives up */
    uint64_t ms = (cl_now_ns() - t0) / 1000000;
    assert_true(ms >= 90);
    assert_int_equal(in_use, 40 * 1024);
    t0 = cl_now_ns();
    assert_int_equal(ks_budget_reserve(b, 65 * 1024, NULL), -1); /* can never fit: no wait */
    assert_true((cl_now_ns() - t0) / 1000000 < 50);
    ks_budget_release(b, 40 * 1024);
    assert_int_equal(ks_budget_reserve(b, 30 * 1024, NULL), 0);
    assert_int_equal(ks_budget_reserve(b, 34 * 1024, NULL), 0);
    ks_budget_stats(b, &in_use, &peak);
    assert_int_equal(in_use, 64 * 1024);
    assert_int_equal(peak, 64 * 1024);
    ks_budget_release(b, 64 * 1024);
    ks_budget_stats(b, &in_use, &peak);
    assert_int_equal(in_use, 0);
    ks_budget_free(b);
}

static long vmlck_kb(void)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmLck: %ld kB", &kb) == 1)
            break;
    if (f)
        fclose(f);
    return kb;
}

typedef struct slow_reader {
    int port;
    uint8_t req[8 + 64 * 6];
    size_t req_len;
    int fd;
    SSL_CTX *ctx;
    SSL *ssl;
    cl_ratls_identity *id;
} slow_reader;

/* connects with a tiny receive buffer and sends the request, reading nothing yet */
static void slow_start(slow_reader *sr)
{
    sim_opts so = {.svn = 2};
    cl_err err = {0};
    sr->id = make_identity(&so);
    sr->ctx = SSL_CTX_new(TLS_client_method());
    SSL_CTX_load_verify_locations(sr->ctx, E->ca, NULL);
    SSL_CTX_set_verify(sr->ctx, SSL_VERIFY_PEER, NULL);
    assert_int_equal(cl_ratls_identity_use(sr->id, sr->ctx, &err), 0);
    sr->fd = socket(AF_INET, SOCK_STREAM, 0);
    int small = 4096;
    setsockopt(sr->fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)sr->port)};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    assert_int_equal(connect(sr->fd, (struct sockaddr *)&sa, sizeof sa), 0);
    sr->ssl = SSL_new(sr->ctx);
    SSL_set_fd(sr->ssl, sr->fd);
    assert_int_equal(SSL_connect(sr->ssl), 1);
    assert_int_equal(SSL_write(sr->ssl, sr->req, (int)sr->req_len), (int)sr->req_len);
}

static size_t slow_finish(slow_reader *sr)
{
    size_t got = 0;
    uint8_t buf[65536];
    for (int r; (r = SSL_read(sr->ssl, buf, sizeof buf)) > 0;)
        got += (size_t)r;
    SSL_free(sr->ssl);
    close(sr->fd);
    SSL_CTX_free(sr->ctx);
    cl_ratls_identity_free(sr->id);
    return got;
}

/* The slow-reader attack (an authorised client asking for 64 large secrets and reading slowly) holds
 * one buffer of locked memory, not 64; the server's total is bounded, and a request that would exceed
 * it is refused (audited) and told to retry; a secret over the per-connection limit is denied. */
static void test_locked_memory_is_bounded(void **state)
{
    (void)state;
    cl_err err = {0};
    enum { HALF = 400 * 1024, BIG = 600 * 1024 };
    uint8_t mk[32];
    assert_int_equal(cl_store_master_key_load(E->mk, false, mk, &err), 0);
    cl_store *s = cl_store_open(E->db, mk, &err);
    uint8_t *val = calloc(1, BIG);
    tu_fill_random(val, BIG, 42);
    assert_int_equal(cl_store_put(s, "half", val, HALF, true, &err), 0);
    assert_int_equal(cl_store_put(s, "big", val, BIG, true, &err), 0);
    cl_store_close(s);
    char mre[65], buf[1024];
    cl_hex_encode(E->exe, 32, mre);
    snprintf(buf, sizeof buf, "{\"version\": 1, \"identities\": [{\"name\": \"model-server\", \"mrenclave\": \"%s\","
             " \"evidence_types\": \"sim\", \"secrets\": [\"model-key\", \"half\", \"big\"]}]}", mre);
    write_policy(buf);
    const char *trust[] = {E->sim_cert};
    cl_keyserver_config kc = {.listen = "127.0.0.1:0", .cert_file = E->cert, .key_file = E->key,
                              .policy_file = E->policy, .db_file = E->db, .master_key_file = E->mk,
                              .trust_sim_certs = trust, .trust_sim_count = 1, .threads = 4, .io_timeout_ms = 20000,
                              .locked_memory_per_connection = 512 * 1024, .locked_memory_total = 640 * 1024};
    cl_keyserver *ks = cl_keyserver_start(&kc, &err);
    if (!ks)
        fail_msg("%s", err.msg);
    int port = cl_keyserver_port(ks);
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", port);

    /* 64 x "half" (25 MiB to send) to a client that does not read: the server blocks in the middle */
    slow_reader sr = {.port = port};
    memcpy(sr.req, "CLKS1", 6);
    sr.req[6] = 0;
    sr.req[7] = 64;
    sr.req_len = 8;
    for (int i = 0; i < 64; i++) {
        sr.req[sr.req_len++] = 4;
        memcpy(sr.req + sr.req_len, "half", 4);
        sr.req_len += 4;
    }
    long base_kb = vmlck_kb();
    slow_start(&sr);
    size_t in_use = 0, peak = 0;
    for (int i = 0; i < 500 && in_use == 0; i++) {
        usleep(10000);
        cl_keyserver_locked_memory(ks, &in_use, &peak);
    }
    assert_true(in_use > 0);
    assert_true(in_use <= 512 * 1024 + 8192); /* one buffer and its header page */
    usleep(200000);                            /* let it write what the socket takes */
    long held_kb = vmlck_kb() - base_kb;
    if (held_kb > 2048)
        fail_msg("the slow client pins %ld KiB of locked memory", held_kb);

    /* another release would exceed the total: it waits, then is refused (audited) as busy */
    int64_t before = last_audit()->seq;
    sim_opts so = {.svn = 2};
    cl_ratls_identity *id = make_identity(&so);
    const char *half[] = {"half"}, *servers[] = {server};
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = E->ca, .identity = id,
                              .names = half, .name_count = 1, .attempts = 1, .timeout_ms = 10000};
    cl_provision_result res;
    uint64_t t0 = cl_now_ns();
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    assert_true((cl_now_ns() - t0) / 1000000 >= 1900);
    assert_int_equal(err.code, CL_E_IO); /* retried by the client, not a denial */
    assert_non_null(strstr(err.msg, "busy"));
    cl_provision_result_free(&res);
    cl_audit_record *r = last_audit();
    assert_true(r->seq > before);
    assert_string_equal(r->decision, "deny");
    assert_string_equal(r->secrets, "half=denied");
    assert_non_null(strstr(r->reason, "locked-memory budget is in use"));

    /* the slow client gets all 64, whole */
    size_t got = slow_finish(&sr);
    assert_int_equal(got, 9 + 64 * (size_t)(1 + 4 + 1 + 4 + HALF));
    for (int i = 0; i < 300; i++) {
        cl_keyserver_locked_memory(ks, &in_use, &peak);
        if (in_use == 0)
            break;
        usleep(10000);
    }
    assert_int_equal(in_use, 0);
    assert_true(peak <= 640 * 1024);
    /* now it fits */
    if (cl_provision_fetch(&o, &res, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(res.secrets[0].len, HALF);
    assert_memory_equal(res.secrets[0].value, val, HALF);
    cl_provision_result_free(&res);
    /* a secret larger than the per-connection limit is denied, and audited */
    const char *big[] = {"big"};
    o.names = big;
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    assert_int_equal(err.code, CL_E_DENIED);
    cl_provision_result_free(&res);
    r = last_audit();
    assert_string_equal(r->secrets, "big=denied");
    assert_non_null(strstr(r->reason, "exceed the per-connection locked-memory limit"));
    cl_ratls_identity_free(id);
    cl_keyserver_stop(ks);
    free(val);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup(test_matching_identity_gets_exactly_its_secrets, reset),
        cmocka_unit_test_setup(test_wrong_mrenclave, reset),
        cmocka_unit_test_setup(test_wrong_mrsigner, reset),
        cmocka_unit_test_setup(test_svn_below_minimum, reset),
        cmocka_unit_test_setup(test_debug_enclave_not_allowed, reset),
        cmocka_unit_test_setup(test_report_data_not_binding_key, reset),
        cmocka_unit_test_setup(test_untrusted_quoting_key, reset),
        cmocka_unit_test_setup(test_client_without_certificate, reset),
        cmocka_unit_test_setup(test_unknown_secret_name, reset),
        cmocka_unit_test_setup(test_empty_policy, reset),
        cmocka_unit_test_setup(test_evidence_type_not_allowed, reset),
        cmocka_unit_test_setup(test_tcb_status_not_allowed, reset),
        cmocka_unit_test_setup(test_denial_reason_is_the_closest_identity, reset),
        cmocka_unit_test_setup(test_backend_failures_are_told_by_kind, reset),
        cmocka_unit_test_setup(test_denied_client_gets_the_frame_and_nothing_else, reset),
        cmocka_unit_test_setup(test_denied_secret_prov_client_is_closed, reset),
        cmocka_unit_test_setup(test_policy_edit_revokes_identity, reset),
        cmocka_unit_test_setup(test_reload_does_not_disturb_connections, reset),
        cmocka_unit_test_setup(test_gramine_secret_prov_protocol, reset),
        cmocka_unit_test_setup(test_tls12_only_when_allowed, reset),
        cmocka_unit_test_setup(test_stolen_certificate_is_audited, reset),
        cmocka_unit_test_setup(test_policy_refusal_is_audited, reset),
        cmocka_unit_test_setup(test_tls_key_in_secure_heap, reset),
        cmocka_unit_test_setup(test_not_tls_closed_at_once, reset),
        cmocka_unit_test_setup(test_client_failover_and_backoff, reset),
        cmocka_unit_test_setup(test_trickling_client_is_cut_off, reset),
        cmocka_unit_test_setup(test_100_concurrent_clients, reset),
        cmocka_unit_test(test_store_encryption_and_master_key),
        cmocka_unit_test(test_audit_chain_detects_tampering),
        cmocka_unit_test_setup(test_audit_names_every_secret_whole, reset),
        cmocka_unit_test(test_audit_chain_is_keyed),
        cmocka_unit_test(test_older_secret_restored_is_refused),
        cmocka_unit_test(test_master_key_is_never_implicit),
        cmocka_unit_test(test_migration_from_first_format),
        cmocka_unit_test(test_secret_rows_are_bound_to_the_keyed_state),
        cmocka_unit_test_setup(test_every_request_is_audited, reset),
        cmocka_unit_test(test_budget_reservations),
        cmocka_unit_test(test_unverified_refusals_are_rate_limited),
        cmocka_unit_test_setup_teardown(test_locked_memory_is_bounded, reset, reset),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
