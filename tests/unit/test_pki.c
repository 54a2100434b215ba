/* test_pki.c — certificates and `tls init` material: chains verify with OpenSSL, names are what was
 * asked for (and nothing else), keys are private, nothing is clobbered. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "cloister/pki.h"
#include "testutil.h"

static X509 *load_cert(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    X509 *c = PEM_read_X509(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(c);
    return c;
}

/* Verifies leaf against ca for `purpose` (X509_PURPOSE_SSL_SERVER/CLIENT) and, if host is given,
 * the host name; returns the X509_V_ result. */
static int verify(X509 *ca, X509 *leaf, int purpose, const char *host)
{
    X509_STORE *store = X509_STORE_new();
    X509_STORE_add_cert(store, ca);
    X509_STORE_CTX *ctx = X509_STORE_CTX_new();
    X509_STORE_CTX_init(ctx, store, leaf, NULL);
    X509_STORE_CTX_set_purpose(ctx, purpose);
    if (host)
        X509_VERIFY_PARAM_set1_host(X509_STORE_CTX_get0_param(ctx), host, 0);
    int ok = X509_verify_cert(ctx);
    int e = ok == 1 ? X509_V_OK : X509_STORE_CTX_get_error(ctx);
    X509_STORE_CTX_free(ctx);
    X509_STORE_free(store);
    return e;
}

static void test_issue_chain(void **state)
{
    (void)state;
    const cl_pki_keytype types[] = {CL_PKI_EC_P256, CL_PKI_EC_P384, CL_PKI_RSA3072};
    for (size_t t = 0; t < CL_ARRAY_LEN(types); t++) {
        cl_err err = {0};
        EVP_PKEY *ca_key = cl_pki_keygen(types[t], &err), *key = cl_pki_keygen(types[t], &err);
        assert_non_null(ca_key);
        assert_non_null(key);
        cl_pki_cert_spec ca_spec = {.role = CL_PKI_ROLE_CA, .common_name = "test CA", .days = 10};
        X509 *ca = cl_pki_issue(&ca_spec, ca_key, &err);
        assert_non_null(ca);
        const char *sans[] = {"grpc.tf-serving.service.com", "127.0.0.1"};
        cl_pki_cert_spec s = {.role = CL_PKI_ROLE_SERVER, .common_name = sans[0], .sans = sans, .san_count = 2,
                              .days = 10, .issuer = ca, .issuer_key = ca_key};
        X509 *leaf = cl_pki_issue(&s, key, &err);
        assert_non_null(leaf);
        assert_int_equal(verify(ca, leaf, X509_PURPOSE_SSL_SERVER, "grpc.tf-serving.service.com"), X509_V_OK);
        assert_int_equal(verify(ca, leaf, X509_PURPOSE_SSL_SERVER, "other.example"), X509_V_ERR_HOSTNAME_MISMATCH);
        assert_int_equal(X509_check_ip_asc(leaf, "127.0.0.1", 0), 1);
        /* a server certificate is not a client certificate */
        assert_int_equal(verify(ca, leaf, X509_PURPOSE_SSL_CLIENT, NULL), X509_V_ERR_INVALID_PURPOSE);
        /* and a leaf cannot act as a CA */
        assert_int_equal(X509_check_ca(leaf), 0);
        assert_int_not_equal(X509_check_ca(ca), 0);
        X509_free(leaf);
        X509_free(ca);
        EVP_PKEY_free(key);
        EVP_PKEY_free(ca_key);
    }
}

static void test_names(void **state)
{
    (void)state;
    assert_true(cl_pki_name_valid("localhost"));
    assert_true(cl_pki_name_valid("grpc.tf-serving.service.com"));
    assert_true(cl_pki_name_valid("*.svc.cluster.local"));
    assert_true(cl_pki_name_valid("10.0.0.1"));
    assert_true(cl_pki_name_valid("::1"));
    assert_false(cl_pki_name_valid(""));
    assert_false(cl_pki_name_valid("a,DNS:evil.com")); /* no extension injection */
    assert_false(cl_pki_name_valid("a b"));
    assert_false(cl_pki_name_valid("a..b"));
    assert_false(cl_pki_name_valid("trailing."));
    assert_false(cl_pki_name_valid("x.*.y"));
    char label[80];
    memset(label, 'a', 64);
    label[64] = 0;
    assert_false(cl_pki_name_valid(label)); /* labels are at most 63 */

    cl_err err = {0};
    EVP_PKEY *k = cl_pki_keygen(CL_PKI_EC_P256, &err);
    const char *bad[] = {"ok.example", "IP:1.2.3.4"};
    cl_pki_cert_spec s = {.role = CL_PKI_ROLE_SERVER, .common_name = "x", .sans = bad, .san_count = 2, .days = 1};
    assert_null(cl_pki_issue(&s, k, &err));
    assert_int_equal(err.code, CL_E_INVALID);
    s.san_count = 1;
    s.days = 0;
    assert_null(cl_pki_issue(&s, k, &err));
    EVP_PKEY_free(k);
    cl_pki_keytype t;
    assert_int_equal(cl_pki_keytype_parse("rsa-3072", &t, &err), 0);
    assert_int_equal(t, CL_PKI_RSA3072);
    assert_int_equal(cl_pki_keytype_parse("dsa", &t, &err), -1);
}

static void check_mode(const char *dir, const char *rel, unsigned mode)
{
    char *p = tu_path(dir, rel);
    struct stat st;
    assert_int_equal(stat(p, &st), 0);
    if ((st.st_mode & 0777) != mode)
        fail_msg("%s has mode %o, want %o", rel, st.st_mode & 0777, mode);
    free(p);
}

static void test_tls_init_two_way(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *out = tu_path(dir, "ssl_configure");
    cl_pki_tls_init_options o = {.dir = out, .server_name = "grpc.tf-serving.service.com",
                                 .client_name = "client.tf-serving.service.com"};
    cl_err err = {0};
    assert_int_equal(cl_pki_tls_init(&o, &err), 0);
    check_mode(out, "ca_key.pem", 0600);
    check_mode(out, "server/key.pem", 0600);
    check_mode(out, "client/key.pem", 0600);
    check_mode(out, "ssl.cfg", 0600);
    check_mode(out, "ca_cert.pem", 0644);

    char *p;
    X509 *ca = load_cert(p = tu_path(out, "ca_cert.pem"));
    free(p);
    X509 *srv = load_cert(p = tu_path(out, "server/cert.pem"));
    free(p);
    X509 *cli = load_cert(p = tu_path(out, "client/cert.pem"));
    free(p);
    assert_int_equal(verify(ca, srv, X509_PURPOSE_SSL_SERVER, "grpc.tf-serving.service.com"), X509_V_OK);
    assert_int_equal(verify(ca, cli, X509_PURPOSE_SSL_CLIENT, "client.tf-serving.service.com"), X509_V_OK);

    /* the server key matches the server certificate */
    FILE *f = fopen(p = tu_path(out, "server/key.pem"), "r");
    free(p);
    EVP_PKEY *k = PEM_read_PrivateKey(f, NULL, NULL, NULL);
    fclose(f);
    assert_non_null(k);
    assert_int_equal(X509_check_private_key(srv, k), 1);
    EVP_PKEY_free(k);

    /* ssl.cfg in TF Serving's text format, PEM inline with escaped newlines */
    size_t n;
    char *cfg = (char *)tu_read_file(p = tu_path(out, "ssl.cfg"), &n);
    free(p);
    assert_non_null(strstr(cfg, "server_key: \"-----BEGIN PRIVATE KEY-----\\n"));
    assert_non_null(strstr(cfg, "server_cert: \"-----BEGIN CERTIFICATE-----\\n"));
    assert_non_null(strstr(cfg, "custom_ca: \"-----BEGIN CERTIFICATE-----\\n"));
    assert_non_null(strstr(cfg, "client_verify: true\n"));
    assert_int_equal(strchr(cfg, '\n') - cfg, strstr(cfg, "\nserver_cert") - cfg); /* one line per field */
    free(cfg);

    /* a second run refuses to clobber, and changes nothing */
    size_t before_len;
    uint8_t *before = tu_read_file(p = tu_path(out, "ca_key.pem"), &before_len);
    assert_int_equal(cl_pki_tls_init(&o, &err), -1);
    assert_int_equal(err.code, CL_E_EXISTS);
    size_t after_len;
    uint8_t *after = tu_read_file(p, &after_len);
    assert_int_equal(before_len, after_len);
    assert_memory_equal(before, after, before_len);
    free(after);
    /* --force replaces */
    o.force = true;
    assert_int_equal(cl_pki_tls_init(&o, &err), 0);
    after = tu_read_file(p, &after_len);
    assert_true(after_len != before_len || memcmp(before, after, before_len) != 0);
    free(before);
    free(after);
    free(p);

    X509_free(ca);
    X509_free(srv);
    X509_free(cli);
    tu_rmrf(dir);
    free(dir);
    free(out);
}

static void test_tls_init_one_way(void **state)
{
    (void)state;
    char *dir = tu_tmpdir();
    const char *extra[] = {"127.0.0.1", "localhost"};
    cl_pki_tls_init_options o = {.dir = dir, .server_name = "grpc.example", .extra_sans = extra,
                                 .extra_san_count = 2, .keytype = CL_PKI_EC_P384, .days = 30};
    cl_err err = {0};
    assert_int_equal(cl_pki_tls_init(&o, &err), 0);
    char *p = tu_path(dir, "client");
    assert_false(tu_file_exists(p));
    free(p);
    size_t n;
    char *cfg = (char *)tu_read_file(p = tu_path(dir, "ssl.cfg"), &n);
    free(p);
    assert_null(strstr(cfg, "custom_ca"));
    assert_non_null(strstr(cfg, "client_verify: false"));
    free(cfg);
    X509 *srv = load_cert(p = tu_path(dir, "server/cert.pem"));
    free(p);
    assert_int_equal(X509_check_host(srv, "localhost", 0, 0, NULL), 1);
    assert_int_equal(X509_check_ip_asc(srv, "127.0.0.1", 0), 1);
    X509_free(srv);

    cl_pki_tls_init_options bad = {.dir = dir, .server_name = "bad name"};
    assert_int_equal(cl_pki_tls_init(&bad, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    tu_rmrf(dir);
    free(dir);
}

/* Private keys from PEM files: read into secure memory and decoded there, into the secure heap
 * when there is one; RSA too; encrypted or malformed keys are refused with a message. */
static void test_key_load(void **state)
{
    (void)state;
    cl_err err = {0};
    char *dir = tu_tmpdir(), *path = tu_path(dir, "key.pem");
    assert_int_equal(cl_secure_heap_init(1 << 20, &err), 0);
    for (int t = 0; t < 2; t++) {
        EVP_PKEY *k = cl_pki_keygen(t ? CL_PKI_RSA3072 : CL_PKI_EC_P256, &err);
        assert_non_null(k);
        size_t len;
        char *pem = cl_pki_key_pem(k, &len, &err);
        tu_write_file(path, pem, len);
        cl_secmem_free(pem);
        size_t base = cl_secure_heap_used();
        EVP_PKEY *got = cl_pki_key_load(path, &err);
        if (!got)
            fail_msg("%s", err.msg);
        assert_int_equal(EVP_PKEY_eq(k, got), 1);
        assert_true(cl_secure_heap_used() >= base + (t ? 384 : 32)); /* RSA: d (3072 bits) at least */
        EVP_PKEY_free(got);
        assert_int_equal(cl_secure_heap_used(), base);
        /* the same key under a passphrase: refused, nobody is asked for it */
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        assert_int_equal(PEM_write_PKCS8PrivateKey(f, k, EVP_aes_256_cbc(), NULL, 0, NULL, (void *)"pass"), 1);
        fclose(f);
        assert_null(cl_pki_key_load(path, &err));
        assert_int_equal(err.code, CL_E_FORMAT);
        assert_non_null(strstr(err.msg, "not an unencrypted PEM private key"));
        EVP_PKEY_free(k);
    }
    tu_write_file(path, "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", 58);
    assert_null(cl_pki_key_load(path, &err));
    assert_non_null(strstr(err.msg, path));
    assert_null(cl_pki_key_load("/nonexistent.pem", &err));
    assert_int_equal(err.code, CL_E_IO);
    tu_rmrf(dir);
    free(path);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_issue_chain),
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_tls_init_two_way),
        cmocka_unit_test(test_tls_init_one_way),
        cmocka_unit_test(test_key_load),
    };
    return cmocka_run_group_tests_name("pki", tests, NULL, NULL);
}
