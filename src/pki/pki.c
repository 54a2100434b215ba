/* pki.c — key pairs, X.509 certificate issuing and PEM encoding with OpenSSL 3, and
 * `cloister tls init`: the CA / server / client material and TF Serving's ssl.cfg.
 *
 * Names that go into certificates are validated before use (cl_pki_name_valid), so a server
 * name can never smuggle extra entries into an extension. All output is generated in memory
 * first and then written file by file atomically. */
#include "cloister/pki.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/rand.h>
#include <openssl/x509v3.h>

int cl_pki_keytype_parse(const char *name, cl_pki_keytype *out, cl_err *err)
{
    static const struct {
        const char *name;
        cl_pki_keytype type;
    } types[] = {{"ecdsa-p256", CL_PKI_EC_P256}, {"ecdsa-p384", CL_PKI_EC_P384}, {"rsa-3072", CL_PKI_RSA3072}};
    for (size_t i = 0; i < CL_ARRAY_LEN(types); i++) {
        if (strcmp(name, types[i].name) == 0) {
            *out = types[i].type;
            return 0;
        }
    }
    return cl_err_set(err, CL_E_INVALID, "unknown key type '%s' (ecdsa-p256, ecdsa-p384 or rsa-3072)", name);
}

EVP_PKEY *cl_pki_keygen(cl_pki_keytype type, cl_err *err)
{
    EVP_PKEY *k = NULL;
    switch (type) {
    case CL_PKI_EC_P256: k = EVP_EC_gen("P-256"); break;
    case CL_PKI_EC_P384: k = EVP_EC_gen("P-384"); break;
    case CL_PKI_RSA3072: k = EVP_RSA_gen(3072); break;
    }
    if (!k)
        cl_err_ssl(err, CL_E_CRYPTO, "key generation failed");
    return k;
}

bool cl_pki_name_valid(const char *name)
{
    if (!name || !*name || strlen(name) > 253)
        return false;
    if (cl_net_is_ip(name))
        return true;
    const char *p = name;
    if (p[0] == '*' && p[1] == '.')
        p += 2;
    size_t label = 0;
    for (; *p; p++) {
        char c = *p;
        if (c == '.') {
            if (label == 0)
                return false;
            label = 0;
        } else if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '-' ||
                   c == '_') {
            if (++label > 63)
                return false;
        } else {
            return false;
        }
    }
    return label > 0;
}

static const EVP_MD *digest_for(EVP_PKEY *key)
{
    return EVP_PKEY_get_bits(key) > 256 && EVP_PKEY_is_a(key, "EC") ? EVP_sha384() : EVP_sha256();
}

static int add_ext(X509 *cert, X509V3_CTX *ctx, int nid, const char *value, cl_err *err)
{
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, ctx, nid, value);
    if (!ext || !X509_add_ext(cert, ext, -1)) {
        X509_EXTENSION_free(ext);
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot add certificate extension %s", OBJ_nid2sn(nid));
    }
    X509_EXTENSION_free(ext);
    return 0;
}

/* "DNS:a,IP:1.2.3.4,..." from names already checked by cl_pki_name_valid. */
static char *san_string(const char *const *sans, size_t n, cl_err *err)
{
    size_t cap = 1;
    for (size_t i = 0; i < n; i++)
        cap += strlen(sans[i]) + 5;
    char *s = calloc(1, cap);
    if (!s) {
        cl_err_nomem(err);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        if (i)
            strcat(s, ",");
        strcat(s, cl_net_is_ip(sans[i]) ? "IP:" : "DNS:");
        strcat(s, sans[i]);
    }
    return s;
}

static int set_name(X509_NAME *name, const char *cn, cl_err *err)
{
    if (!X509_NAME_add_entry_by_txt(name, "O", MBSTRING_UTF8, (const unsigned char *)"cloister", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8, (const unsigned char *)cn, -1, -1, 0))
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot set certificate name '%s'", cn);
    return 0;
}

X509 *cl_pki_issue(const cl_pki_cert_spec *spec, EVP_PKEY *subject_key, cl_err *err)
{
    if (!spec->common_name || !*spec->common_name || strlen(spec->common_name) > 64) {
        cl_err_set(err, CL_E_INVALID, "a certificate needs a common name of 1-64 characters");
        return NULL;
    }
    for (size_t i = 0; i < spec->san_count; i++) {
        if (!cl_pki_name_valid(spec->sans[i])) {
            cl_err_set(err, CL_E_INVALID, "'%s' is not a valid DNS name or IP address", spec->sans[i]);
            return NULL;
        }
    }
    if (spec->days <= 0 || spec->days > 36500) {
        cl_err_set(err, CL_E_INVALID, "validity must be 1-36500 days, not %d", spec->days);
        return NULL;
    }
    X509 *cert = X509_new();
    X509 *issuer = spec->issuer ? spec->issuer : cert;
    EVP_PKEY *signer = spec->issuer_key ? spec->issuer_key : subject_key;
    BIGNUM *serial = BN_new();
    char *sans = NULL;
    if (!cert || !serial || !X509_set_version(cert, 2) || !BN_rand(serial, 127, BN_RAND_TOP_ANY, BN_RAND_BOTTOM_ANY) ||
        !BN_to_ASN1_INTEGER(serial, X509_get_serialNumber(cert)) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -300) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)spec->days * 86400) ||
        !X509_set_pubkey(cert, subject_key)) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot build a certificate");
        goto fail;
    }
    if (set_name(X509_get_subject_name(cert), spec->common_name, err) != 0)
        goto fail;
    if (!X509_set_issuer_name(cert, X509_get_subject_name(issuer))) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot set the issuer name");
        goto fail;
    }
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, issuer, cert, NULL, NULL, 0);
    bool rsa = EVP_PKEY_is_a(subject_key, "RSA");
    switch (spec->role) {
    case CL_PKI_ROLE_CA:
        if (add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:TRUE,pathlen:0", err) ||
            add_ext(cert, &ctx, NID_key_usage, "critical,keyCertSign,cRLSign", err))
            goto fail;
        break;
    case CL_PKI_ROLE_SERVER:
    case CL_PKI_ROLE_CLIENT:
        if (add_ext(cert, &ctx, NID_basic_constraints, "critical,CA:FALSE", err) ||
            add_ext(cert, &ctx, NID_key_usage, rsa ? "critical,digitalSignature,keyEncipherment" : "critical,digitalSignature", err) ||
            add_ext(cert, &ctx, NID_ext_key_usage, spec->role == CL_PKI_ROLE_SERVER ? "serverAuth" : "clientAuth", err))
            goto fail;
        break;
    }
    if (add_ext(cert, &ctx, NID_subject_key_identifier, "hash", err))
        goto fail;
    if (spec->issuer && add_ext(cert, &ctx, NID_authority_key_identifier, "keyid:always", err))
        goto fail;
    if (spec->san_count) {
        if (!(sans = san_string(spec->sans, spec->san_count, err)) ||
            add_ext(cert, &ctx, NID_subject_alt_name, sans, err))
            goto fail;
    }
    if (!X509_sign(cert, signer, digest_for(signer))) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot sign the certificate for '%s'", spec->common_name);
        goto fail;
    }
    BN_free(serial);
    free(sans);
    return cert;
fail:
    BN_free(serial);
    free(sans);
    X509_free(cert);
    return NULL;
}

char *cl_pki_cert_pem(X509 *cert, size_t *len, cl_err *err)
{
    BIO *b = BIO_new(BIO_s_mem());
    char *data = NULL, *out = NULL;
    if (!b || !PEM_write_bio_X509(b, cert)) {
        BIO_free(b);
        cl_err_ssl(err, CL_E_CRYPTO, "cannot encode a certificate as PEM");
        return NULL;
    }
    long n = BIO_get_mem_data(b, &data);
    if (n > 0 && (out = malloc((size_t)n + 1))) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        *len = (size_t)n;
    } else {
        cl_err_nomem(err);
    }
    BIO_free(b);
    return out;
}

char *cl_pki_key_pem(EVP_PKEY *key, size_t *len, cl_err *err)
{
    BIO *b = BIO_new(BIO_s_secmem());
    char *data = NULL, *out = NULL;
    if (!b || !PEM_write_bio_PrivateKey(b, key, NULL, NULL, 0, NULL, NULL)) {
        BIO_free(b);
        cl_err_ssl(err, CL_E_CRYPTO, "cannot encode a private key as PEM");
        return NULL;
    }
    long n = BIO_get_mem_data(b, &data);
    if (n > 0 && (out = cl_secmem_alloc((size_t)n + 1, err))) {
        memcpy(out, data, (size_t)n);
        out[n] = '\0';
        *len = (size_t)n;
    }
    BIO_free(b); /* a secmem BIO cleanses its buffer */
    return out;
}

#define KEY_FILE_MAX (64u << 10)

static int no_passphrase(char *buf, int size, int rwflag, void *u)
{
    (void)buf; (void)size; (void)rwflag; (void)u;
    return -1;
}

EVP_PKEY *cl_pki_key_from_pem(const char *pem, size_t len, const char *what, cl_err *err)
{
    if (len > INT32_MAX) {
        cl_err_set(err, CL_E_INVALID, "%s is too large for a private key", what);
        return NULL;
    }
    ERR_clear_error();
    BIO *b = BIO_new_mem_buf(pem, (int)len);
    EVP_PKEY *key = b ? PEM_read_bio_PrivateKey(b, NULL, no_passphrase, NULL) : NULL;
    BIO_free(b);
    if (!key)
        cl_err_ssl(err, CL_E_FORMAT, "%s is not an unencrypted PEM private key", what);
    return key;
}

EVP_PKEY *cl_pki_key_load(const char *path, cl_err *err)
{
    uint8_t *pem = NULL;
    size_t len = 0;
    if (cl_file_read_secure(path, KEY_FILE_MAX, &pem, &len, err) != 0)
        return NULL;
    char what[300];
    snprintf(what, sizeof what, "'%s'", path);
    EVP_PKEY *key = cl_pki_key_from_pem((const char *)pem, len, what, err);
    cl_secmem_free(pem);
    return key;
}

/* ---------------------------------------------------------------- tls init */

/* A protobuf text-format string literal: "..." with \n and \" escaped. */
static void textproto_string(char *out, const char *pem)
{
    *out++ = '"';
    for (; *pem; pem++) {
        if (*pem == '\n') {
            *out++ = '\\';
            *out++ = 'n';
        } else if (*pem == '"' || *pem == '\\') {
            *out++ = '\\';
            *out++ = *pem;
        } else {
            *out++ = *pem;
        }
    }
    *out++ = '"';
    *out = '\0';
}

typedef struct out_file {
    const char *rel; /* path under dir */
    char *data;
    size_t len;
    unsigned mode;
    bool secret; /* data is in secure memory */
} out_file;

static int make_dir(const char *path, cl_err *err)
{
    if (mkdir(path, 0700) != 0 && errno != EEXIST)
        return cl_err_errno(err, CL_E_IO, errno, "cannot create directory '%s'", path);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return cl_err_set(err, CL_E_IO, "'%s' exists and is not a directory", path);
    return 0;
}

static char *join(const char *dir, const char *rel)
{
    size_t n = strlen(dir) + strlen(rel) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, rel);
    return p;
}

/* Issues one leaf (server or client) and appends its cert and key to files[]. */
static int issue_leaf(const cl_pki_tls_init_options *o, cl_pki_role role, const char *name,
                      const char *const *sans, size_t nsans, X509 *ca, EVP_PKEY *ca_key, out_file *cert_f,
                      out_file *key_f, cl_err *err)
{
    EVP_PKEY *key = cl_pki_keygen(o->keytype, err);
    if (!key)
        return -1;
    cl_pki_cert_spec spec = {.role = role, .common_name = name, .sans = sans, .san_count = nsans,
                             .days = o->days ? o->days : 365, .issuer = ca, .issuer_key = ca_key};
    X509 *cert = cl_pki_issue(&spec, key, err);
    int rc = -1;
    if (cert && (cert_f->data = cl_pki_cert_pem(cert, &cert_f->len, err)) &&
        (key_f->data = cl_pki_key_pem(key, &key_f->len, err)))
        rc = 0;
    key_f->secret = true;
    X509_free(cert);
    EVP_PKEY_free(key);
    return rc;
}

static void free_files(out_file *f, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (f[i].secret)
            cl_secmem_free(f[i].data);
        else
            free(f[i].data);
    }
}

int cl_pki_tls_init(const cl_pki_tls_init_options *o, cl_err *err)
{
    if (!o->dir || !*o->dir)
        return cl_err_set(err, CL_E_INVALID, "an output directory is required");
    if (!cl_pki_name_valid(o->server_name))
        return cl_err_set(err, CL_E_INVALID, "server name '%s' is not a valid DNS name or IP address",
                          o->server_name ? o->server_name : "");
    if (o->client_name && !cl_pki_name_valid(o->client_name))
        return cl_err_set(err, CL_E_INVALID, "client name '%s' is not a valid DNS name or IP address",
                          o->client_name);
    if (o->extra_san_count > 32)
        return cl_err_set(err, CL_E_INVALID, "at most 32 extra names");

    enum { CA_CERT, CA_KEY, SRV_CERT, SRV_KEY, CLI_CERT, CLI_KEY, SSL_CFG, NFILES };
    out_file f[NFILES] = {
        [CA_CERT] = {"ca_cert.pem", .mode = 0644},      [CA_KEY] = {"ca_key.pem", .mode = 0600},
        [SRV_CERT] = {"server/cert.pem", .mode = 0644}, [SRV_KEY] = {"server/key.pem", .mode = 0600},
        [CLI_CERT] = {"client/cert.pem", .mode = 0644}, [CLI_KEY] = {"client/key.pem", .mode = 0600},
        [SSL_CFG] = {"ssl.cfg", .mode = 0600, .secret = true},
    };
    size_t nfiles = NFILES;
    bool two_way = o->client_name != NULL;
    int rc = -1;
    EVP_PKEY *ca_key = NULL;
    X509 *ca = NULL;
    const char *sans[33];
    char *written[NFILES] = {0};

    /* 1. Everything in memory. */
    sans[0] = o->server_name;
    for (size_t i = 0; i < o->extra_san_count; i++)
        sans[i + 1] = o->extra_sans[i];
    cl_pki_cert_spec ca_spec = {.role = CL_PKI_ROLE_CA, .common_name = "cloister TLS CA",
                                .days = (o->days ? o->days : 365) + 1};
    f[CA_KEY].secret = true;
    if (!(ca_key = cl_pki_keygen(o->keytype, err)) || !(ca = cl_pki_issue(&ca_spec, ca_key, err)) ||
        !(f[CA_CERT].data = cl_pki_cert_pem(ca, &f[CA_CERT].len, err)) ||
        !(f[CA_KEY].data = cl_pki_key_pem(ca_key, &f[CA_KEY].len, err)))
        goto out;
    if (issue_leaf(o, CL_PKI_ROLE_SERVER, o->server_name, sans, 1 + o->extra_san_count, ca, ca_key,
                   &f[SRV_CERT], &f[SRV_KEY], err) != 0)
        goto out;
    if (two_way && issue_leaf(o, CL_PKI_ROLE_CLIENT, o->client_name, &o->client_name, 1, ca, ca_key,
                              &f[CLI_CERT], &f[CLI_KEY], err) != 0)
        goto out;

    /* ssl.cfg: tensorflow.serving.SSLConfig in protobuf text format, PEM inline. */
    size_t cap = 256 + 2 * (f[SRV_KEY].len + f[SRV_CERT].len + f[CA_CERT].len);
    if (!(f[SSL_CFG].data = cl_secmem_alloc(cap, err)))
        goto out;
    char *p = f[SSL_CFG].data;
    p += sprintf(p, "server_key: ");
    textproto_string(p, f[SRV_KEY].data);
    p += strlen(p);
    p += sprintf(p, "\nserver_cert: ");
    textproto_string(p, f[SRV_CERT].data);
    p += strlen(p);
    if (two_way) {
        p += sprintf(p, "\ncustom_ca: ");
        textproto_string(p, f[CA_CERT].data);
        p += strlen(p);
    }
    p += sprintf(p, "\nclient_verify: %s\n", two_way ? "true" : "false");
    f[SSL_CFG].len = (size_t)(p - f[SSL_CFG].data);

    /* 2. Refuse to clobber anything unless forced, before writing a byte. */
    char *sub[2] = {join(o->dir, "server"), join(o->dir, "client")};
    if (!sub[0] || !sub[1]) {
        free(sub[0]);
        free(sub[1]);
        cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < nfiles && !o->force; i++) {
        if (!f[i].data)
            continue;
        char *path = join(o->dir, f[i].rel);
        struct stat st;
        bool exists = path && stat(path, &st) == 0;
        if (exists) {
            cl_err_set(err, CL_E_EXISTS, "'%s' already exists; use --force to replace the TLS material", path);
            free(path);
            free(sub[0]);
            free(sub[1]);
            goto out;
        }
        free(path);
    }
    int drc = make_dir(o->dir, err);
    if (drc == 0)
        drc = make_dir(sub[0], err);
    if (drc == 0 && two_way)
        drc = make_dir(sub[1], err);
    free(sub[0]);
    free(sub[1]);
    if (drc != 0)
        goto out;

    /* 3. Write, remembering what we created so a failure can take it back. */
    for (size_t i = 0; i < nfiles; i++) {
        if (!f[i].data)
            continue;
        char *path = join(o->dir, f[i].rel);
        if (!path || cl_file_write_atomic(path, f[i].data, f[i].len, f[i].mode, o->force, err) != 0) {
            free(path);
            for (size_t j = 0; j < i; j++)
                if (written[j])
                    unlink(written[j]);
            goto out;
        }
        written[i] = path;
    }
    rc = 0;
out:
    for (size_t i = 0; i < NFILES; i++)
        free(written[i]);
    free_files(f, nfiles);
    X509_free(ca);
    EVP_PKEY_free(ca_key);
    return rc;
}
