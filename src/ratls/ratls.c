/* ratls.c — RA-TLS: identities (fresh key + self-signed certificate carrying the evidence in
 * Gramine's legacy quote extension and in TCG DICE tagged evidence), the small CBOR codec those
 * extensions need, and certificate verification hooked into OpenSSL (cert_verify_callback), with
 * per-connection results kept on the SSL object. No global lock anywhere. */
#include "cloister/ratls.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/bn.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509v3.h>

#define CLAIM_PUBKEY_HASH "pubkey-hash"

/* ---------------------------------------------------------------- CBOR (the subset we need) */

enum { CBOR_UINT = 0, CBOR_NINT = 1, CBOR_BSTR = 2, CBOR_TSTR = 3, CBOR_ARRAY = 4, CBOR_MAP = 5, CBOR_TAG = 6 };

static size_t cbor_head(uint8_t *out, int major, uint64_t v)
{
    uint8_t m = (uint8_t)(major << 5);
    if (v < 24) {
        out[0] = m | (uint8_t)v;
        return 1;
    }
    int n = v <= 0xff ? 1 : v <= 0xffff ? 2 : v <= 0xffffffffu ? 4 : 8;
    out[0] = m | (uint8_t)(n == 1 ? 24 : n == 2 ? 25 : n == 4 ? 26 : 27);
    for (int i = 0; i < n; i++)
        out[1 + i] = (uint8_t)(v >> (8 * (n - 1 - i)));
    return 1 + (size_t)n;
}

typedef struct cbor_rd {
    const uint8_t *p;
    size_t len, off;
} cbor_rd;

/* Reads one head; definite lengths only. Returns 0 or -1. */
static int cbor_read_head(cbor_rd *r, int *major, uint64_t *v)
{
    if (r->off >= r->len)
        return -1;
    uint8_t b = r->p[r->off++];
    *major = b >> 5;
    uint8_t ai = b & 31;
    if (ai < 24) {
        *v = ai;
        return 0;
    }
    if (ai > 27)
        return -1; /* indefinite lengths and reserved values */
    size_t n = (size_t)1 << (ai - 24);
    if (n > r->len - r->off)
        return -1;
    uint64_t x = 0;
    for (size_t i = 0; i < n; i++)
        x = x << 8 | r->p[r->off++];
    *v = x;
    return 0;
}

static int cbor_read_bytes(cbor_rd *r, int want_major, const uint8_t **out, size_t *len)
{
    int major;
    uint64_t v;
    if (cbor_read_head(r, &major, &v) != 0 || major != want_major || v > r->len - r->off)
        return -1;
    *out = r->p + r->off;
    *len = (size_t)v;
    r->off += (size_t)v;
    return 0;
}

/* Skips one simple item (integers, byte and text strings). */
static int cbor_skip_simple(cbor_rd *r)
{
    int major;
    uint64_t v;
    if (cbor_read_head(r, &major, &v) != 0)
        return -1;
    if (major == CBOR_UINT || major == CBOR_NINT)
        return 0;
    if ((major == CBOR_BSTR || major == CBOR_TSTR) && v <= r->len - r->off) {
        r->off += (size_t)v;
        return 0;
    }
    return -1;
}

int cl_ratls_claims_encode(const uint8_t hash[32], uint8_t **out, size_t *len, cl_err *err)
{
    uint8_t entry[40];
    size_t e = cbor_head(entry, CBOR_ARRAY, 2);
    e += cbor_head(entry + e, CBOR_UINT, CL_RATLS_HASH_SHA256);
    e += cbor_head(entry + e, CBOR_BSTR, 32);
    memcpy(entry + e, hash, 32);
    e += 32;
    uint8_t *b = malloc(64);
    if (!b)
        return cl_err_nomem(err);
    size_t n = cbor_head(b, CBOR_MAP, 1);
    n += cbor_head(b + n, CBOR_TSTR, strlen(CLAIM_PUBKEY_HASH));
    memcpy(b + n, CLAIM_PUBKEY_HASH, strlen(CLAIM_PUBKEY_HASH));
    n += strlen(CLAIM_PUBKEY_HASH);
    n += cbor_head(b + n, CBOR_BSTR, e);
    memcpy(b + n, entry, e);
    n += e;
    *out = b;
    *len = n;
    return 0;
}

int cl_ratls_evidence_encode(const uint8_t *quote, size_t quote_len, const uint8_t *claims, size_t claims_len,
                             uint8_t **out, size_t *len, cl_err *err)
{
    uint8_t *b = malloc(quote_len + claims_len + 32);
    if (!b)
        return cl_err_nomem(err);
    size_t n = cbor_head(b, CBOR_TAG, CL_RATLS_CBOR_TAG_TEE_QUOTE);
    n += cbor_head(b + n, CBOR_ARRAY, 2);
    n += cbor_head(b + n, CBOR_BSTR, quote_len);
    memcpy(b + n, quote, quote_len);
    n += quote_len;
    n += cbor_head(b + n, CBOR_BSTR, claims_len);
    memcpy(b + n, claims, claims_len);
    n += claims_len;
    *out = b;
    *len = n;
    return 0;
}

int cl_ratls_evidence_parse(const uint8_t *buf, size_t len, const uint8_t **quote, size_t *quote_len,
                            const uint8_t **claims, size_t *claims_len, cl_err *err)
{
    cbor_rd r = {buf, len, 0};
    int major;
    uint64_t v;
    if (cbor_read_head(&r, &major, &v) != 0 || major != CBOR_TAG)
        return cl_err_set(err, CL_E_FORMAT, "TCG evidence: not a CBOR tag");
    if (v != CL_RATLS_CBOR_TAG_TEE_QUOTE)
        return cl_err_set(err, CL_E_UNSUPPORTED, "TCG evidence: CBOR tag %llu is not a TEE quote (%d)",
                          (unsigned long long)v, CL_RATLS_CBOR_TAG_TEE_QUOTE);
    if (cbor_read_head(&r, &major, &v) != 0 || major != CBOR_ARRAY || v != 2)
        return cl_err_set(err, CL_E_FORMAT, "TCG evidence: expected an array [quote, claims]");
    if (cbor_read_bytes(&r, CBOR_BSTR, quote, quote_len) != 0 ||
        cbor_read_bytes(&r, CBOR_BSTR, claims, claims_len) != 0)
        return cl_err_set(err, CL_E_FORMAT, "TCG evidence: quote and claims must be byte strings");
    if (r.off != len)
        return cl_err_set(err, CL_E_TRAILING, "TCG evidence: %zu bytes after the evidence", len - r.off);
    return 0;
}

int cl_ratls_claims_pubkey_hash(const uint8_t *claims, size_t len, uint8_t hash[32], cl_err *err)
{
    cbor_rd r = {claims, len, 0};
    int major;
    uint64_t count, n;
    if (cbor_read_head(&r, &major, &count) != 0 || major != CBOR_MAP || count > 64)
        return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: not a CBOR map");
    bool found = false;
    for (uint64_t i = 0; i < count; i++) {
        const uint8_t *key;
        size_t key_len;
        if (cbor_read_bytes(&r, CBOR_TSTR, &key, &key_len) != 0)
            return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: keys must be text strings");
        if (key_len != strlen(CLAIM_PUBKEY_HASH) || memcmp(key, CLAIM_PUBKEY_HASH, key_len) != 0) {
            if (cbor_skip_simple(&r) != 0)
                return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: unsupported claim value");
            continue;
        }
        const uint8_t *entry, *h;
        size_t entry_len, h_len;
        uint64_t alg;
        if (found || cbor_read_bytes(&r, CBOR_BSTR, &entry, &entry_len) != 0)
            return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: bad or repeated pubkey-hash");
        cbor_rd e = {entry, entry_len, 0};
        if (cbor_read_head(&e, &major, &n) != 0 || major != CBOR_ARRAY || n != 2 ||
            cbor_read_head(&e, &major, &alg) != 0 || major != CBOR_UINT ||
            cbor_read_bytes(&e, CBOR_BSTR, &h, &h_len) != 0 || e.off != entry_len)
            return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: pubkey-hash is not [alg, hash]");
        if (alg != CL_RATLS_HASH_SHA256 || h_len != 32)
            return cl_err_set(err, CL_E_UNSUPPORTED, "RA-TLS claims: pubkey-hash algorithm %llu is not "
                              "supported (SHA-256 is)", (unsigned long long)alg);
        memcpy(hash, h, 32);
        found = true;
    }
    if (r.off != len)
        return cl_err_set(err, CL_E_TRAILING, "RA-TLS claims: trailing bytes");
    if (!found)
        return cl_err_set(err, CL_E_FORMAT, "RA-TLS claims: no pubkey-hash claim");
    return 0;
}

/* ---------------------------------------------------------------- certificates */

int cl_ratls_spki_sha256(EVP_PKEY *key, uint8_t out[32], cl_err *err)
{
    uint8_t *der = NULL;
    int n = i2d_PUBKEY(key, &der);
    if (n <= 0)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot encode the public key");
    SHA256(der, (size_t)n, out);
    OPENSSL_free(der);
    return 0;
}

static int add_raw_ext(X509 *cert, const char *oid_txt, const uint8_t *val, size_t len)
{
    ASN1_OBJECT *obj = OBJ_txt2obj(oid_txt, 1);
    ASN1_OCTET_STRING *os = ASN1_OCTET_STRING_new();
    X509_EXTENSION *ext = NULL;
    int ok = obj && os && ASN1_OCTET_STRING_set(os, val, (int)len) &&
             (ext = X509_EXTENSION_create_by_OBJ(NULL, obj, 0, os)) && X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    ASN1_OCTET_STRING_free(os);
    ASN1_OBJECT_free(obj);
    return ok ? 0 : -1;
}

static int add_v3(X509 *cert, int nid, const char *value)
{
    X509V3_CTX ctx;
    X509V3_set_ctx_nodb(&ctx);
    X509V3_set_ctx(&ctx, cert, cert, NULL, NULL, 0);
    X509_EXTENSION *ext = X509V3_EXT_conf_nid(NULL, &ctx, nid, value);
    int ok = ext && X509_add_ext(cert, ext, -1);
    X509_EXTENSION_free(ext);
    return ok ? 0 : -1;
}

X509 *cl_ratls_cert_build(EVP_PKEY *key, const uint8_t *legacy_quote, size_t legacy_len,
                          const uint8_t *tcg_evidence, size_t tcg_len, int validity_days, cl_err *err)
{
    if (!legacy_quote && !tcg_evidence) {
        cl_err_set(err, CL_E_INVALID, "an RA-TLS certificate needs evidence");
        return NULL;
    }
    X509 *cert = X509_new();
    X509_NAME *name = X509_NAME_new();
    BIGNUM *bn = NULL;
    uint8_t serial[16];
    if (!cert || !name || RAND_bytes(serial, sizeof serial) != 1)
        goto fail;
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    bn = BN_bin2bn(serial, sizeof serial, NULL);
    if (!bn || !BN_to_ASN1_INTEGER(bn, X509_get_serialNumber(cert)) || !X509_set_version(cert, 2) ||
        !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const uint8_t *)"RATLS", -1, -1, 0) ||
        !X509_NAME_add_entry_by_txt(name, "O", MBSTRING_ASC, (const uint8_t *)"cloister", -1, -1, 0) ||
        !X509_set_subject_name(cert, name) || !X509_set_issuer_name(cert, name) ||
        !X509_gmtime_adj(X509_getm_notBefore(cert), -3600) ||
        !X509_gmtime_adj(X509_getm_notAfter(cert), (long)(validity_days > 0 ? validity_days : 30) * 86400) ||
        !X509_set_pubkey(cert, key) || add_v3(cert, NID_basic_constraints, "critical,CA:FALSE") != 0 ||
        add_v3(cert, NID_subject_key_identifier, "hash") != 0 ||
        add_v3(cert, NID_key_usage, "critical,digitalSignature") != 0)
        goto fail;
    if (legacy_quote && add_raw_ext(cert, CL_RATLS_OID_LEGACY_QUOTE, legacy_quote, legacy_len) != 0)
        goto fail;
    if (tcg_evidence && add_raw_ext(cert, CL_RATLS_OID_TCG_EVIDENCE, tcg_evidence, tcg_len) != 0)
        goto fail;
    const EVP_MD *md = EVP_PKEY_get_bits(key) > 256 ? EVP_sha384() : EVP_sha256();
    if (!X509_sign(cert, key, md))
        goto fail;
    BN_free(bn);
    X509_NAME_free(name);
    return cert;
fail:
    cl_err_ssl(err, CL_E_CRYPTO, "cannot build the RA-TLS certificate");
    BN_free(bn);
    X509_NAME_free(name);
    X509_free(cert);
    return NULL;
}

struct cl_ratls_identity {
    EVP_PKEY *key;
    X509 *cert;
};

cl_ratls_identity *cl_ratls_identity_new(cl_attest_provider *provider, const cl_ratls_identity_options *opts,
                                         cl_err *err)
{
    cl_ratls_identity_options o = {0};
    if (opts)
        o = *opts;
    const char *curve = o.curve ? o.curve : "P-256";
    if (strcmp(curve, "P-256") != 0 && strcmp(curve, "P-384") != 0) {
        cl_err_set(err, CL_E_INVALID, "RA-TLS key curve '%s' is not supported (P-256 or P-384)", curve);
        return NULL;
    }
    cl_ratls_identity *id = calloc(1, sizeof(*id));
    uint8_t *legacy = NULL, *tcg_quote = NULL, *claims = NULL, *evidence = NULL;
    size_t legacy_len = 0, tcg_quote_len = 0, claims_len = 0, evidence_len = 0;
    uint8_t rd[CL_ATTEST_REPORT_DATA_LEN] = {0}, hash[32];
    if (!id) {
        cl_err_nomem(err);
        return NULL;
    }
    id->key = EVP_EC_gen(curve);
    if (!id->key) {
        cl_err_ssl(err, CL_E_CRYPTO, "cannot generate the RA-TLS key");
        goto fail;
    }
    if (cl_ratls_spki_sha256(id->key, hash, err) != 0)
        goto fail;
    if (!o.no_legacy) {
        memcpy(rd, hash, 32);
        if (cl_attest_provider_quote(provider, rd, &legacy, &legacy_len, err) != 0)
            goto fail;
    }
    if (cl_ratls_claims_encode(hash, &claims, &claims_len, err) != 0)
        goto fail;
    memset(rd, 0, sizeof rd);
    SHA256(claims, claims_len, rd);
    if (cl_attest_provider_quote(provider, rd, &tcg_quote, &tcg_quote_len, err) != 0 ||
        cl_ratls_evidence_encode(tcg_quote, tcg_quote_len, claims, claims_len, &evidence, &evidence_len, err) != 0)
        goto fail;
    id->cert = cl_ratls_cert_build(id->key, legacy, legacy_len, evidence, evidence_len, o.validity_days, err);
    if (!id->cert)
        goto fail;
    free(legacy);
    free(tcg_quote);
    free(claims);
    free(evidence);
    return id;
fail:
    cl_err_prefix(err, "RA-TLS identity");
    free(legacy);
    free(tcg_quote);
    free(claims);
    free(evidence);
    cl_ratls_identity_free(id);
    return NULL;
}

cl_ratls_identity *cl_ratls_identity_wrap(EVP_PKEY *key, X509 *cert, cl_err *err)
{
    cl_ratls_identity *id = calloc(1, sizeof(*id));
    if (!id) {
        cl_err_nomem(err);
        return NULL;
    }
    EVP_PKEY_up_ref(key);
    X509_up_ref(cert);
    id->key = key;
    id->cert = cert;
    return id;
}

void cl_ratls_identity_free(cl_ratls_identity *id)
{
    if (!id)
        return;
    EVP_PKEY_free(id->key);
    X509_free(id->cert);
    free(id);
}

EVP_PKEY *cl_ratls_identity_key(const cl_ratls_identity *id) { return id->key; }
X509 *cl_ratls_identity_cert(const cl_ratls_identity *id) { return id->cert; }

int cl_ratls_identity_use(const cl_ratls_identity *id, SSL_CTX *ctx, cl_err *err)
{
    if (SSL_CTX_use_certificate(ctx, id->cert) != 1 || SSL_CTX_use_PrivateKey(ctx, id->key) != 1 ||
        SSL_CTX_check_private_key(ctx) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot install the RA-TLS certificate");
    return 0;
}

/* ---------------------------------------------------------------- verification */

/* The value of the first extension whose OID content bytes equal those of oid_txt. */
static const ASN1_OCTET_STRING *find_ext(X509 *cert, const char *oid_txt)
{
    ASN1_OBJECT *want = OBJ_txt2obj(oid_txt, 1);
    const ASN1_OCTET_STRING *val = NULL;
    if (!want)
        return NULL;
    int n = X509_get_ext_count(cert);
    for (int i = 0; i < n && !val; i++) {
        X509_EXTENSION *ext = X509_get_ext(cert, i);
        if (OBJ_cmp(X509_EXTENSION_get_object(ext), want) == 0)
            val = X509_EXTENSION_get_data(ext);
    }
    ASN1_OBJECT_free(want);
    return val;
}

int cl_ratls_verify_cert(X509 *cert, const cl_attest_verifier *verifier, cl_attest_claims *claims,
                         cl_ratls_format *format, cl_err *err)
{
    memset(claims, 0, sizeof(*claims));
    EVP_PKEY *pub = X509_get0_pubkey(cert);
    if (!pub)
        return cl_err_ssl(err, CL_E_FORMAT, "RA-TLS certificate: no usable public key");
    if (X509_verify(cert, pub) != 1) {
        ERR_clear_error();
        return cl_err_set(err, CL_E_AUTH, "RA-TLS certificate: not validly self-signed");
    }
    if (X509_cmp_current_time(X509_get0_notBefore(cert)) > 0 ||
        X509_cmp_current_time(X509_get0_notAfter(cert)) < 0)
        return cl_err_set(err, CL_E_AUTH, "RA-TLS certificate: outside its validity period");
    /* SHA-256 of the certificate's own SubjectPublicKeyInfo encoding (cheaper than re-encoding the key) */
    uint8_t spki_hash[32], *spki = NULL;
    int spki_len = i2d_X509_PUBKEY(X509_get_X509_PUBKEY(cert), &spki);
    if (spki_len <= 0)
        return cl_err_ssl(err, CL_E_FORMAT, "RA-TLS certificate: cannot encode its public key");
    SHA256(spki, (size_t)spki_len, spki_hash);
    OPENSSL_free(spki);

    const ASN1_OCTET_STRING *tcg = find_ext(cert, CL_RATLS_OID_TCG_EVIDENCE);
    const ASN1_OCTET_STRING *legacy = tcg ? NULL : find_ext(cert, CL_RATLS_OID_LEGACY_QUOTE);
    if (!tcg && !legacy)
        legacy = find_ext(cert, CL_RATLS_OID_LEGACY_QUOTE_FIXED);
    if (tcg) {
        const uint8_t *quote, *cl;
        size_t quote_len, cl_len;
        uint8_t claimed[32], digest[32];
        if (cl_ratls_evidence_parse(ASN1_STRING_get0_data(tcg), (size_t)ASN1_STRING_length(tcg), &quote,
                                    &quote_len, &cl, &cl_len, err) != 0 ||
            cl_ratls_claims_pubkey_hash(cl, cl_len, claimed, err) != 0 ||
            cl_attest_verify(verifier, quote, quote_len, claims, err) != 0)
            return -1;
        SHA256(cl, cl_len, digest);
        if (CRYPTO_memcmp(claims->report_data, digest, 32) != 0)
            return cl_err_set(err, CL_E_AUTH, "RA-TLS: the quote's report_data does not bind the claims");
        if (CRYPTO_memcmp(claimed, spki_hash, 32) != 0)
            return cl_err_set(err, CL_E_AUTH, "RA-TLS: the evidence is for another key (pubkey-hash mismatch)");
        if (format)
            *format = CL_RATLS_TCG;
    } else if (legacy) {
        if (cl_attest_verify(verifier, ASN1_STRING_get0_data(legacy), (size_t)ASN1_STRING_length(legacy), claims,
                             err) != 0)
            return -1;
        if (CRYPTO_memcmp(claims->report_data, spki_hash, 32) != 0)
            return cl_err_set(err, CL_E_AUTH, "RA-TLS: the quote's report_data does not bind the certificate key");
        if (format)
            *format = CL_RATLS_LEGACY;
    } else {
        return cl_err_set(err, CL_E_FORMAT, "not an RA-TLS certificate: no evidence extension (%s or %s)",
                          CL_RATLS_OID_TCG_EVIDENCE, CL_RATLS_OID_LEGACY_QUOTE);
    }
    return 0;
}

typedef struct peer_state {
    bool verified;
    bool failed;
    cl_attest_claims claims;
    cl_err err;
} peer_state;

static int g_ex_index = -1;
static pthread_once_t g_ex_once = PTHREAD_ONCE_INIT;

static void peer_state_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl, void *argp)
{
    (void)parent; (void)ad; (void)idx; (void)argl; (void)argp;
    free(ptr);
}

static void ex_init(void)
{
    g_ex_index = SSL_get_ex_new_index(0, (void *)"cloister ratls", NULL, NULL, peer_state_free);
}

static int verify_cb(X509_STORE_CTX *sctx, void *arg)
{
    const cl_ratls_verify_ctx *vctx = arg;
    SSL *ssl = X509_STORE_CTX_get_ex_data(sctx, SSL_get_ex_data_X509_STORE_CTX_idx());
    X509 *cert = X509_STORE_CTX_get0_cert(sctx);
    if (!ssl || !cert) {
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_UNSPECIFIED);
        return 0;
    }
    peer_state *st = SSL_get_ex_data(ssl, g_ex_index);
    if (!st) {
        st = calloc(1, sizeof(*st));
        if (!st || !SSL_set_ex_data(ssl, g_ex_index, st)) {
            free(st);
            X509_STORE_CTX_set_error(sctx, X509_V_ERR_OUT_OF_MEM);
            return 0;
        }
    }
    memset(st, 0, sizeof(*st));
    if (cl_ratls_verify_cert(cert, vctx->verifier, &st->claims, NULL, &st->err) != 0 ||
        (vctx->policy && vctx->policy(vctx->policy_arg, ssl, &st->claims, &st->err) != 0)) {
        st->failed = true;
        if (vctx->complete_on_failure) { /* recorded: the caller refuses on the connection */
            X509_STORE_CTX_set_error(sctx, X509_V_OK);
            return 1;
        }
        X509_STORE_CTX_set_error(sctx, X509_V_ERR_APPLICATION_VERIFICATION);
        return 0;
    }
    st->verified = true;
    X509_STORE_CTX_set_error(sctx, X509_V_OK);
    return 1;
}

int cl_ratls_ssl_ctx_require_peer(SSL_CTX *ctx, const cl_ratls_verify_ctx *vctx, cl_err *err)
{
    pthread_once(&g_ex_once, ex_init);
    if (g_ex_index < 0)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot allocate SSL ex_data");
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
    SSL_CTX_set_cert_verify_callback(ctx, verify_cb, (void *)vctx);
    return 0;
}

const cl_attest_claims *cl_ratls_peer_claims(const SSL *ssl)
{
    if (g_ex_index < 0)
        return NULL;
    const peer_state *st = SSL_get_ex_data(ssl, g_ex_index);
    return st && st->verified ? &st->claims : NULL;
}

const cl_err *cl_ratls_peer_error(const SSL *ssl)
{
    if (g_ex_index < 0)
        return NULL;
    const peer_state *st = SSL_get_ex_data(ssl, g_ex_index);
    return st && st->failed ? &st->err : NULL;
}
