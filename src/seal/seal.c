/* seal.c — the sealed file format (docs/sealed-format.md): model keys, header encoding and
 * parsing, per-file key derivation, chunked AES-256-GCM sealing and opening, from files or memory.
 *
 * Reading guide: header_encode/cl_seal_header_parse are the format; derive_keys is the key
 * schedule; chunk_crypt is the only place a chunk is encrypted or decrypted; unsealer_* holds the
 * ordered checks every opening path goes through. Derived keys live in secure memory. */
#include "cloister/seal.h"
#include "cloister/policy.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/kdf.h>
#include <openssl/rand.h>

#define FIXED_LEN 73 /* magic .. key_id_len, see docs/sealed-format.md */
#define ALG_AES256GCM_HKDF 1
#define KDF_INFO "cloister/seal/v1"
#define AAD_LEN (CL_SEAL_MAC_LEN + 8 + 1)

/* ---------------------------------------------------------------- byte order */

static void put16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)(v >> 8); p[1] = (uint8_t)v; }
static void put32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (24 - 8 * i)); }
static void put64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (56 - 8 * i)); }
static uint16_t get16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static uint64_t get64(const uint8_t *p) { return (uint64_t)get32(p) << 32 | get32(p + 4); }

/* ---------------------------------------------------------------- keys */

int cl_seal_key_generate(uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    if (RAND_priv_bytes(key, CL_SEAL_KEY_LEN) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot get random bytes for a key");
    return 0;
}

int cl_seal_key_parse(const uint8_t *buf, size_t len, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    if (len == CL_SEAL_KEY_LEN) {
        memcpy(key, buf, CL_SEAL_KEY_LEN);
        return 0;
    }
    size_t hex_len = len;
    while (hex_len > 0 && (buf[hex_len - 1] == '\n' || buf[hex_len - 1] == '\r'))
        hex_len--;
    if (hex_len == 2 * CL_SEAL_KEY_LEN && len - hex_len <= 2 &&
        cl_hex_decode((const char *)buf, hex_len, key, CL_SEAL_KEY_LEN) == 0)
        return 0;
    cl_memzero(key, CL_SEAL_KEY_LEN);
    return cl_err_set(err, CL_E_FORMAT,
                      "a key must be exactly 32 raw bytes or 64 hex digits (this one is %zu bytes); "
                      "create one with `cloister keygen`",
                      len);
}

int cl_seal_key_load(const char *path, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    uint8_t *buf;
    size_t len;
    if (cl_file_read(path, 4096, &buf, &len, err) != 0)
        return cl_err_prefix(err, "cannot read key file");
    int rc = cl_seal_key_parse(buf, len, key, err);
    cl_memzero(buf, len);
    free(buf);
    if (rc != 0)
        return cl_err_prefix(err, "key file '%s'", path);
    return 0;
}

int cl_seal_key_save(const char *path, const uint8_t key[CL_SEAL_KEY_LEN], cl_err *err)
{
    return cl_file_write_atomic(path, key, CL_SEAL_KEY_LEN, 0600, false, err);
}

/* The characters the format allows in a key id (docs/sealed-format.md): what files sealed before the
 * key id alphabet became the key server's secret-name alphabet may hold, so they can still be opened. */
static bool key_id_char(unsigned char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           strchr("._:/@+-", c) != NULL;
}

static bool key_id_format_valid(const char *key_id)
{
    size_t n = strlen(key_id);
    if (n == 0 || n > CL_SEAL_KEY_ID_MAX)
        return false;
    for (size_t i = 0; i < n; i++)
        if (!key_id_char((unsigned char)key_id[i]))
            return false;
    return true;
}

bool cl_seal_key_id_valid(const char *key_id)
{
    /* one alphabet with the key server's secret names, so every sealed model can be provisioned */
    return key_id && cl_policy_secret_name_valid(key_id);
}

static bool content_type_valid(const char *ct, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)ct[i] < 0x21 || (unsigned char)ct[i] > 0x7e)
            return false;
    return true;
}

/* ---------------------------------------------------------------- key schedule */

typedef struct seal_keys {
    uint8_t enc[32];   /* AES-256-GCM key for the chunks */
    uint8_t mac[32];   /* HMAC-SHA256 key for the header */
    uint8_t check[CL_SEAL_KEYCHECK_LEN];
} seal_keys;

/* HKDF-SHA256(ikm = wrap key, salt = file nonce, info = KDF_INFO) -> enc || mac || check.
 * Returns the keys in secure memory. */
static seal_keys *derive_keys(const uint8_t wrap[CL_SEAL_KEY_LEN], const uint8_t nonce[CL_SEAL_NONCE_LEN],
                              cl_err *err)
{
    seal_keys *k = cl_secmem_alloc(sizeof *k, err);
    if (!k)
        return NULL;
    EVP_KDF *kdf = EVP_KDF_fetch(NULL, "HKDF", NULL);
    EVP_KDF_CTX *kctx = kdf ? EVP_KDF_CTX_new(kdf) : NULL;
    EVP_KDF_free(kdf);
    OSSL_PARAM params[] = {
        OSSL_PARAM_construct_utf8_string(OSSL_KDF_PARAM_DIGEST, "SHA256", 0),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_KEY, (void *)wrap, CL_SEAL_KEY_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_SALT, (void *)nonce, CL_SEAL_NONCE_LEN),
        OSSL_PARAM_construct_octet_string(OSSL_KDF_PARAM_INFO, (void *)KDF_INFO, strlen(KDF_INFO)),
        OSSL_PARAM_construct_end(),
    };
    if (!kctx || EVP_KDF_derive(kctx, (uint8_t *)k, sizeof *k, params) != 1) {
        EVP_KDF_CTX_free(kctx);
        cl_secmem_free(k);
        cl_err_ssl(err, CL_E_CRYPTO, "key derivation (HKDF-SHA256) failed");
        return NULL;
    }
    EVP_KDF_CTX_free(kctx);
    return k;
}

static int header_mac(const seal_keys *k, const uint8_t *hdr, size_t len, uint8_t out[CL_SEAL_MAC_LEN],
                      cl_err *err)
{
    unsigned int out_len = 0;
    if (!HMAC(EVP_sha256(), k->mac, sizeof k->mac, hdr, len, out, &out_len) || out_len != CL_SEAL_MAC_LEN)
        return cl_err_ssl(err, CL_E_CRYPTO, "HMAC-SHA256 failed");
    return 0;
}

/* ---------------------------------------------------------------- header */

static void header_derive_sizes(cl_seal_header *h)
{
    h->header_len = FIXED_LEN + strlen(h->key_id) + 1 + strlen(h->content_type) + CL_SEAL_MAC_LEN;
    h->chunk_count = h->plaintext_len == 0 ? 1 : (h->plaintext_len + h->chunk_size - 1) / h->chunk_size;
    h->sealed_len = h->header_len + h->plaintext_len + h->chunk_count * CL_SEAL_TAG_LEN;
}

/* Writes every header field except the MAC; returns the number of bytes written. */
static size_t header_encode(const cl_seal_header *h, uint8_t *p)
{
    size_t kid = strlen(h->key_id), ct = strlen(h->content_type);
    memcpy(p, CL_SEAL_MAGIC, 8);
    put16(p + 8, h->version);
    put16(p + 10, h->algorithm);
    put32(p + 12, h->chunk_size);
    put64(p + 16, h->plaintext_len);
    memcpy(p + 24, h->file_nonce, CL_SEAL_NONCE_LEN);
    memcpy(p + 56, h->key_check, CL_SEAL_KEYCHECK_LEN);
    p[72] = (uint8_t)kid;
    memcpy(p + FIXED_LEN, h->key_id, kid);
    p[FIXED_LEN + kid] = (uint8_t)ct;
    memcpy(p + FIXED_LEN + kid + 1, h->content_type, ct);
    return FIXED_LEN + kid + 1 + ct;
}

int cl_seal_header_parse(const uint8_t *buf, size_t len, cl_seal_header *h, cl_err *err)
{
    memset(h, 0, sizeof *h);
    size_t magic_have = len < 8 ? len : 8;
    if (len == 0 || memcmp(buf, CL_SEAL_MAGIC, magic_have) != 0)
        return cl_err_set(err, CL_E_FORMAT, "not a cloister sealed file (bad magic)");
    if (len < FIXED_LEN)
        return cl_err_set(err, CL_E_TRUNCATED, "truncated: the file ends inside the sealed header");
    h->version = get16(buf + 8);
    if (h->version != CL_SEAL_VERSION)
        return cl_err_set(err, CL_E_VERSION,
                          "unsupported sealed format version %u (this cloister reads version %u)",
                          h->version, CL_SEAL_VERSION);
    h->algorithm = get16(buf + 10);
    if (h->algorithm != ALG_AES256GCM_HKDF)
        return cl_err_set(err, CL_E_VERSION, "unsupported sealing algorithm %u", h->algorithm);
    h->chunk_size = get32(buf + 12);
    if (h->chunk_size < CL_SEAL_CHUNK_MIN || h->chunk_size > CL_SEAL_CHUNK_MAX)
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: chunk size %u is outside %u..%u",
                          h->chunk_size, CL_SEAL_CHUNK_MIN, CL_SEAL_CHUNK_MAX);
    h->plaintext_len = get64(buf + 16);
    if (h->plaintext_len > CL_SEAL_PLAINTEXT_MAX)
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: payload length %llu is absurd",
                          (unsigned long long)h->plaintext_len);
    memcpy(h->file_nonce, buf + 24, CL_SEAL_NONCE_LEN);
    memcpy(h->key_check, buf + 56, CL_SEAL_KEYCHECK_LEN);
    size_t kid = buf[72];
    if (kid == 0)
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: empty key id");
    if (len < FIXED_LEN + kid + 1)
        return cl_err_set(err, CL_E_TRUNCATED, "truncated: the file ends inside the sealed header");
    memcpy(h->key_id, buf + FIXED_LEN, kid);
    h->key_id[kid] = '\0';
    if (!key_id_format_valid(h->key_id))
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: the key id has invalid characters");
    size_t ct = buf[FIXED_LEN + kid];
    if (ct > CL_SEAL_CONTENT_TYPE_MAX)
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: content type longer than %d bytes",
                          CL_SEAL_CONTENT_TYPE_MAX);
    size_t mac_off = FIXED_LEN + kid + 1 + ct;
    if (len < mac_off + CL_SEAL_MAC_LEN)
        return cl_err_set(err, CL_E_TRUNCATED, "truncated: the file ends inside the sealed header");
    memcpy(h->content_type, buf + FIXED_LEN + kid + 1, ct);
    h->content_type[ct] = '\0';
    if (!content_type_valid(h->content_type, ct))
        return cl_err_set(err, CL_E_FORMAT, "corrupted header: the content type has invalid characters");
    memcpy(h->mac, buf + mac_off, CL_SEAL_MAC_LEN);
    header_derive_sizes(h);
    return 0;
}

static int check_size(const cl_seal_header *h, uint64_t actual, cl_err *err)
{
    if (actual < h->sealed_len)
        return cl_err_set(err, CL_E_TRUNCATED,
                          "truncated: the sealed file is %llu bytes but its header says %llu",
                          (unsigned long long)actual, (unsigned long long)h->sealed_len);
    if (actual > h->sealed_len)
        return cl_err_set(err, CL_E_TRAILING,
                          "extended: %llu unexpected bytes after the final chunk",
                          (unsigned long long)(actual - h->sealed_len));
    return 0;
}

/* Reads up to CL_SEAL_HEADER_MAX bytes from the start of fd and parses them. */
static int read_header_fd(int fd, const char *path, cl_seal_header *h, uint64_t *file_size, cl_err *err)
{
    struct stat st;
    if (fstat(fd, &st) != 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot stat '%s'", path);
    if (!S_ISREG(st.st_mode))
        return cl_err_set(err, CL_E_IO, "'%s' is not a regular file", path);
    *file_size = (uint64_t)st.st_size;
    uint8_t buf[CL_SEAL_HEADER_MAX];
    ssize_t n = pread(fd, buf, sizeof buf, 0);
    if (n < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", path);
    return cl_seal_header_parse(buf, (size_t)n, h, err);
}

int cl_seal_header_read_file(const char *path, cl_seal_header *h, cl_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s'", path);
    uint64_t size;
    int rc = read_header_fd(fd, path, h, &size, err);
    close(fd);
    if (rc == 0)
        rc = check_size(h, size, err);
    /* an empty, truncated or damaged file: the message names it (a server's log line is about one of
     * many version files) */
    if (rc != 0 && err && !strstr(err->msg, path))
        cl_err_prefix(err, "'%s'", path);
    return rc;
}

/* ---------------------------------------------------------------- chunks */

/* Encrypts (enc=1) or decrypts (enc=0) chunk `index` in place or from in to out. On decryption the
 * tag is checked; a mismatch is CL_E_AUTH. The AAD binds the header (through its MAC), the index
 * and the final flag. */
static int chunk_crypt(EVP_CIPHER_CTX *c, int enc, const cl_seal_header *h, uint64_t index,
                       const uint8_t *in, size_t n, uint8_t *out, uint8_t tag[CL_SEAL_TAG_LEN], cl_err *err)
{
    uint8_t iv[12] = {0}, aad[AAD_LEN];
    put64(iv + 4, index);
    memcpy(aad, h->mac, CL_SEAL_MAC_LEN);
    put64(aad + CL_SEAL_MAC_LEN, index);
    aad[CL_SEAL_MAC_LEN + 8] = index + 1 == h->chunk_count ? 1 : 0;
    int outl = 0;
    if (EVP_CipherInit_ex(c, NULL, NULL, NULL, iv, enc) != 1 ||
        EVP_CipherUpdate(c, NULL, &outl, aad, sizeof aad) != 1 ||
        (n > 0 && EVP_CipherUpdate(c, out, &outl, in, (int)n) != 1))
        return cl_err_ssl(err, CL_E_CRYPTO, "AES-256-GCM failed on chunk %llu", (unsigned long long)index);
    if (!enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, CL_SEAL_TAG_LEN, tag) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "AES-256-GCM failed on chunk %llu", (unsigned long long)index);
    if (EVP_CipherFinal_ex(c, out + n, &outl) != 1) {
        if (enc)
            return cl_err_ssl(err, CL_E_CRYPTO, "AES-256-GCM failed on chunk %llu", (unsigned long long)index);
        return cl_err_set(err, CL_E_AUTH,
                          "chunk %llu of %llu failed authentication: the sealed data was modified, "
                          "reordered or spliced from another file",
                          (unsigned long long)index + 1, (unsigned long long)h->chunk_count);
    }
    if (enc && EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_GET_TAG, CL_SEAL_TAG_LEN, tag) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "AES-256-GCM failed on chunk %llu", (unsigned long long)index);
    return 0;
}

static size_t chunk_plain_len(const cl_seal_header *h, uint64_t index)
{
    if (index + 1 < h->chunk_count)
        return h->chunk_size;
    return (size_t)(h->plaintext_len - (h->chunk_count - 1) * (uint64_t)h->chunk_size);
}

static EVP_CIPHER_CTX *gcm_new(const uint8_t key[32], int enc, cl_err *err)
{
    EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
    if (!c || EVP_CipherInit_ex(c, EVP_aes_256_gcm(), NULL, key, NULL, enc) != 1) {
        EVP_CIPHER_CTX_free(c);
        cl_err_ssl(err, CL_E_CRYPTO, "cannot set up AES-256-GCM");
        return NULL;
    }
    return c;
}

/* ---------------------------------------------------------------- sealing */

typedef struct sealer {
    cl_seal_header hdr;
    seal_keys *keys;
    uint8_t header[CL_SEAL_HEADER_MAX];
} sealer;

static void sealer_end(sealer *s)
{
    cl_secmem_free(s->keys);
    s->keys = NULL;
}

static int sealer_begin(sealer *s, uint64_t plaintext_len, const uint8_t key[CL_SEAL_KEY_LEN],
                        const cl_seal_options *o, cl_err *err)
{
    memset(s, 0, sizeof *s);
    if (!o || !cl_seal_key_id_valid(o->key_id))
        return cl_err_set(err, CL_E_INVALID,
                          CL_SEAL_KEY_ID_RULE);
    const char *ct = o->content_type ? o->content_type : "application/octet-stream";
    if (strlen(ct) > CL_SEAL_CONTENT_TYPE_MAX || !content_type_valid(ct, strlen(ct)))
        return cl_err_set(err, CL_E_INVALID, "the content type must be 0-64 printable ASCII characters without spaces");
    uint32_t chunk = o->chunk_size ? o->chunk_size : CL_SEAL_CHUNK_DEFAULT;
    if (chunk < CL_SEAL_CHUNK_MIN || chunk > CL_SEAL_CHUNK_MAX)
        return cl_err_set(err, CL_E_INVALID, "the chunk size must be from %u to %u bytes", CL_SEAL_CHUNK_MIN,
                          CL_SEAL_CHUNK_MAX);
    if (plaintext_len > CL_SEAL_PLAINTEXT_MAX)
        return cl_err_set(err, CL_E_INVALID, "the input is larger than the format allows");

    cl_seal_header *h = &s->hdr;
    h->version = CL_SEAL_VERSION;
    h->algorithm = ALG_AES256GCM_HKDF;
    h->chunk_size = chunk;
    h->plaintext_len = plaintext_len;
    snprintf(h->key_id, sizeof h->key_id, "%s", o->key_id);
    snprintf(h->content_type, sizeof h->content_type, "%s", ct);
    if (RAND_bytes(h->file_nonce, CL_SEAL_NONCE_LEN) != 1)
        return cl_err_ssl(err, CL_E_CRYPTO, "cannot get random bytes for the file nonce");
    if (!(s->keys = derive_keys(key, h->file_nonce, err)))
        return -1;
    memcpy(h->key_check, s->keys->check, CL_SEAL_KEYCHECK_LEN);
    header_derive_sizes(h);
    size_t n = header_encode(h, s->header);
    if (header_mac(s->keys, s->header, n, h->mac, err) != 0) {
        sealer_end(s);
        return -1;
    }
    memcpy(s->header + n, h->mac, CL_SEAL_MAC_LEN);
    return 0;
}

int cl_seal_buffer(const uint8_t *in, size_t in_len, const uint8_t key[CL_SEAL_KEY_LEN],
                   const cl_seal_options *opts, uint8_t **out, size_t *out_len, cl_err *err)
{
    *out = NULL;
    *out_len = 0;
    sealer s;
    if (sealer_begin(&s, in_len, key, opts, err) != 0)
        return -1;
    const cl_seal_header *h = &s.hdr;
    EVP_CIPHER_CTX *gcm = gcm_new(s.keys->enc, 1, err);
    uint8_t *buf = gcm ? malloc(h->sealed_len) : NULL;
    if (!buf) {
        EVP_CIPHER_CTX_free(gcm);
        sealer_end(&s);
        return gcm ? cl_err_set(err, CL_E_NOMEM, "out of memory sealing %zu bytes", in_len) : -1;
    }
    memcpy(buf, s.header, h->header_len);
    uint8_t *p = buf + h->header_len;
    int rc = 0;
    for (uint64_t i = 0; rc == 0 && i < h->chunk_count; i++) {
        size_t n = chunk_plain_len(h, i);
        rc = chunk_crypt(gcm, 1, h, i, in + i * (uint64_t)h->chunk_size, n, p, p + n, err);
        p += n + CL_SEAL_TAG_LEN;
    }
    EVP_CIPHER_CTX_free(gcm);
    sealer_end(&s);
    if (rc != 0) {
        free(buf);
        return -1;
    }
    *out = buf;
    *out_len = (size_t)h->sealed_len;
    return 0;
}

/* ---------------------------------------------------------------- parallel file streaming */

/* The file paths process chunks in parallel: every chunk has a fixed place in the plaintext and in
 * the sealed file, so workers claim chunk indices from a shared counter and each does
 * pread -> AES-GCM -> pwrite (or decrypts straight into the destination) with its own cipher
 * context. This overlaps the kernel's copying and page clearing with the crypto and uses every
 * core (see bench/seal). If several chunks fail, the error of the lowest index is reported, so
 * results do not depend on scheduling. */

typedef enum { JOB_SEAL, JOB_UNSEAL_TO_FILE, JOB_OPEN_TO_MEMORY } job_kind;

typedef struct stream_job {
    job_kind kind;
    const cl_seal_header *h;
    const uint8_t *enc_key;
    int in_fd, out_fd;
    const char *in_path, *out_path;
    uint8_t *dest; /* JOB_OPEN_TO_MEMORY: the plaintext, in secure memory */
    cl_seal_progress_fn progress;
    void *progress_ctx;

    atomic_uint_fast64_t next; /* next chunk index to claim */
    atomic_bool failed;
    pthread_mutex_t lock;      /* guards the fields below and progress callbacks */
    uint64_t done;
    uint64_t fail_index;
    cl_err err;
} stream_job;

static uint64_t plain_off(const cl_seal_header *h, uint64_t i) { return i * (uint64_t)h->chunk_size; }
static uint64_t sealed_off(const cl_seal_header *h, uint64_t i)
{
    return h->header_len + i * ((uint64_t)h->chunk_size + CL_SEAL_TAG_LEN);
}

static int stream_chunk(stream_job *j, EVP_CIPHER_CTX *c, uint8_t *buf, uint64_t i, cl_err *err)
{
    const cl_seal_header *h = j->h;
    size_t n = chunk_plain_len(h, i);
    ssize_t got;
    switch (j->kind) {
    case JOB_SEAL:
        got = cl_pread_full(j->in_fd, buf, n, plain_off(h, i));
        if (got < 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", j->in_path);
        if ((size_t)got != n)
            return cl_err_set(err, CL_E_IO, "input '%s' shrank while it was being sealed", j->in_path);
        if (chunk_crypt(c, 1, h, i, buf, n, buf, buf + n, err) != 0)
            return -1;
        if (cl_pwrite_all(j->out_fd, buf, n + CL_SEAL_TAG_LEN, sealed_off(h, i)) != 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot write '%s'", j->out_path);
        return 0;
    case JOB_UNSEAL_TO_FILE:
        got = cl_pread_full(j->in_fd, buf, n + CL_SEAL_TAG_LEN, sealed_off(h, i));
        if (got < 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", j->in_path);
        if ((size_t)got != n + CL_SEAL_TAG_LEN)
            return cl_err_set(err, CL_E_TRUNCATED, "truncated: '%s' shrank while chunk %llu was read",
                              j->in_path, (unsigned long long)i + 1);
        if (chunk_crypt(c, 0, h, i, buf, n, buf, buf + n, err) != 0)
            return -1;
        if (cl_pwrite_all(j->out_fd, buf, n, plain_off(h, i)) != 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot write '%s'", j->out_path);
        return 0;
    case JOB_OPEN_TO_MEMORY: {
        uint8_t *dst = j->dest + plain_off(h, i);
        got = cl_pread_full(j->in_fd, dst, n, sealed_off(h, i));
        ssize_t tag_got = got == (ssize_t)n ? cl_pread_full(j->in_fd, buf, CL_SEAL_TAG_LEN, sealed_off(h, i) + n) : 0;
        if (got < 0 || tag_got < 0)
            return cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", j->in_path);
        if ((size_t)got != n || tag_got != CL_SEAL_TAG_LEN)
            return cl_err_set(err, CL_E_TRUNCATED, "truncated: '%s' shrank while chunk %llu was read",
                              j->in_path, (unsigned long long)i + 1);
        return chunk_crypt(c, 0, h, i, dst, n, dst, buf, err);
    }
    }
    return cl_err_set(err, CL_E_INTERNAL, "unknown stream job");
}

static void stream_fail(stream_job *j, uint64_t index, const cl_err *err)
{
    pthread_mutex_lock(&j->lock);
    if (!atomic_load(&j->failed) || index < j->fail_index) {
        j->fail_index = index;
        j->err = *err;
    }
    atomic_store(&j->failed, true);
    pthread_mutex_unlock(&j->lock);
}

static void *stream_worker(void *arg)
{
    stream_job *j = arg;
    cl_err err = {0};
    /* Seal and unseal-to-file pass plaintext through this buffer: secure memory. */
    size_t buf_len = j->kind == JOB_OPEN_TO_MEMORY ? CL_SEAL_TAG_LEN : (size_t)j->h->chunk_size + CL_SEAL_TAG_LEN;
    uint8_t *buf = cl_secmem_alloc(buf_len, &err);
    EVP_CIPHER_CTX *c = buf ? gcm_new(j->enc_key, j->kind == JOB_SEAL, &err) : NULL;
    if (!c) {
        stream_fail(j, 0, &err);
        cl_secmem_free(buf);
        return NULL;
    }
    while (!atomic_load(&j->failed)) {
        uint64_t i = atomic_fetch_add(&j->next, 1);
        if (i >= j->h->chunk_count)
            break;
        if (stream_chunk(j, c, buf, i, &err) != 0) {
            stream_fail(j, i, &err);
            break;
        }
        if (j->progress) {
            pthread_mutex_lock(&j->lock);
            j->done += chunk_plain_len(j->h, i);
            j->progress(j->progress_ctx, j->done, j->h->plaintext_len);
            pthread_mutex_unlock(&j->lock);
        }
    }
    EVP_CIPHER_CTX_free(c);
    cl_secmem_free(buf);
    return NULL;
}

/* Runs the job on up to 4 threads (no more than the CPUs online or the chunks); the calling
 * thread is one of them. */
static int stream_run(stream_job *j, cl_err *err)
{
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint64_t want = cpus > 0 ? (uint64_t)cpus : 1;
    const char *env = getenv("CLOISTER_SEAL_THREADS");
    if (env && atoi(env) > 0)
        want = (uint64_t)atoi(env);
    if (want > 4)
        want = 4;
    if (want > j->h->chunk_count)
        want = j->h->chunk_count;
    atomic_init(&j->next, 0);
    atomic_init(&j->failed, false);
    pthread_mutex_init(&j->lock, NULL);
    pthread_t tids[3];
    size_t started = 0;
    for (uint64_t t = 1; t < want; t++) {
        if (pthread_create(&tids[started], NULL, stream_worker, j) != 0)
            break; /* fewer helpers is fine: the work is shared dynamically */
        started++;
    }
    stream_worker(j);
    for (size_t t = 0; t < started; t++)
        pthread_join(tids[t], NULL);
    pthread_mutex_destroy(&j->lock);
    if (atomic_load(&j->failed)) {
        if (err)
            *err = j->err;
        return -1;
    }
    return 0;
}

int cl_seal_file(const char *in_path, const char *out_path, const uint8_t key[CL_SEAL_KEY_LEN],
                 const cl_seal_options *opts, cl_err *err)
{
    int in = open(in_path, O_RDONLY | O_CLOEXEC);
    if (in < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open input '%s'", in_path);
    struct stat st;
    if (fstat(in, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(in);
        return cl_err_set(err, CL_E_IO, "input '%s' is not a regular file", in_path);
    }
    sealer s;
    if (sealer_begin(&s, (uint64_t)st.st_size, key, opts, err) != 0) {
        close(in);
        return -1;
    }
    cl_atomic_file out = {.fd = -1};
    int rc = -1;
    if (cl_atomic_open(&out, out_path, 0644, opts->overwrite, err) != 0)
        goto done;
    if (cl_pwrite_all(out.fd, s.header, s.hdr.header_len, 0) != 0) {
        cl_err_errno(err, CL_E_IO, errno, "cannot write '%s'", out_path);
        goto done;
    }
    stream_job j = {.kind = JOB_SEAL, .h = &s.hdr, .enc_key = s.keys->enc, .in_fd = in, .out_fd = out.fd,
                    .in_path = in_path, .out_path = out_path, .progress = opts->progress,
                    .progress_ctx = opts->progress_ctx};
    if (stream_run(&j, err) != 0)
        goto done;
    struct stat after;
    if (fstat(in, &after) != 0 || after.st_size != st.st_size) {
        cl_err_set(err, CL_E_IO, "input '%s' changed size while it was being sealed", in_path);
        goto done;
    }
    rc = cl_atomic_commit(&out, err);
done:
    if (rc != 0 && out.path)
        cl_atomic_abort(&out);
    sealer_end(&s);
    close(in);
    return rc;
}

/* ---------------------------------------------------------------- opening */

typedef struct unsealer {
    cl_seal_header hdr;
    seal_keys *keys;
} unsealer;

static void unsealer_end(unsealer *u)
{
    cl_secmem_free(u->keys);
    u->keys = NULL;
}

/* Runs checks 1-5 of seal.h on a header image `buf` (len bytes available) of a sealed object whose
 * total size is `total`. */
static int unsealer_begin(unsealer *u, const uint8_t *buf, size_t len, uint64_t total,
                          const uint8_t key[CL_SEAL_KEY_LEN], const char *expected_key_id, cl_err *err)
{
    memset(u, 0, sizeof *u);
    cl_seal_header *h = &u->hdr;
    if (cl_seal_header_parse(buf, len, h, err) != 0)
        return -1;
    if (expected_key_id && strcmp(expected_key_id, h->key_id) != 0)
        return cl_err_set(err, CL_E_KEY_ID, "wrong key id: the file was sealed for key '%s', not '%s'",
                          h->key_id, expected_key_id);
    if (!(u->keys = derive_keys(key, h->file_nonce, err)))
        return -1;
    uint8_t mac[CL_SEAL_MAC_LEN];
    if (cl_memeq_ct(u->keys->check, h->key_check, CL_SEAL_KEYCHECK_LEN) != 0) {
        unsealer_end(u);
        return cl_err_set(err, CL_E_KEY, "wrong key: this file was sealed under a different key (key id '%s')",
                          h->key_id);
    }
    if (header_mac(u->keys, buf, h->header_len - CL_SEAL_MAC_LEN, mac, err) != 0) {
        unsealer_end(u);
        return -1;
    }
    if (cl_memeq_ct(mac, h->mac, CL_SEAL_MAC_LEN) != 0) {
        unsealer_end(u);
        return cl_err_set(err, CL_E_AUTH, "header authentication failed: the sealed header was modified");
    }
    if (check_size(h, total, err) != 0) {
        unsealer_end(u);
        return -1;
    }
    return 0;
}

int cl_seal_open_buffer(const uint8_t *sealed, size_t sealed_len, const uint8_t key[CL_SEAL_KEY_LEN],
                        const char *expected_key_id, uint8_t **plain, size_t *plain_len,
                        cl_seal_header *hdr, cl_err *err)
{
    *plain = NULL;
    *plain_len = 0;
    unsealer u;
    if (unsealer_begin(&u, sealed, sealed_len, sealed_len, key, expected_key_id, err) != 0)
        return -1;
    const cl_seal_header *h = &u.hdr;
    EVP_CIPHER_CTX *gcm = gcm_new(u.keys->enc, 0, err);
    uint8_t *out = gcm ? cl_secmem_alloc((size_t)h->plaintext_len, err) : NULL;
    int rc = out ? 0 : -1;
    const uint8_t *p = sealed + h->header_len;
    for (uint64_t i = 0; rc == 0 && i < h->chunk_count; i++) {
        size_t n = chunk_plain_len(h, i);
        uint8_t tag[CL_SEAL_TAG_LEN];
        memcpy(tag, p + n, CL_SEAL_TAG_LEN);
        rc = chunk_crypt(gcm, 0, h, i, p, n, out + i * (uint64_t)h->chunk_size, tag, err);
        p += n + CL_SEAL_TAG_LEN;
    }
    EVP_CIPHER_CTX_free(gcm);
    if (rc == 0) {
        if (hdr)
            *hdr = *h;
        *plain = out;
        *plain_len = (size_t)h->plaintext_len;
    } else {
        cl_secmem_free(out);
    }
    unsealer_end(&u);
    return rc;
}

/* Opens fd: header checks 1-5 of seal.h against the file's size. */
static int open_fd(int fd, const char *path, const uint8_t key[CL_SEAL_KEY_LEN], const char *expected_key_id,
                   unsealer *u, cl_err *err)
{
    uint64_t size;
    cl_seal_header probe;
    if (read_header_fd(fd, path, &probe, &size, err) != 0)
        return -1;
    uint8_t buf[CL_SEAL_HEADER_MAX];
    ssize_t n = cl_pread_full(fd, buf, probe.header_len, 0);
    if (n != (ssize_t)probe.header_len)
        return cl_err_set(err, CL_E_IO, "cannot re-read the header of '%s'", path);
    return unsealer_begin(u, buf, (size_t)n, size, key, expected_key_id, err);
}

int cl_seal_open_file(const char *path, const uint8_t key[CL_SEAL_KEY_LEN], const char *expected_key_id,
                      uint8_t **plain, size_t *plain_len, cl_seal_header *hdr, cl_err *err)
{
    *plain = NULL;
    *plain_len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open sealed file '%s'", path);
    unsealer u;
    if (open_fd(fd, path, key, expected_key_id, &u, err) != 0) {
        close(fd);
        return -1;
    }
    uint8_t *out = cl_secmem_alloc((size_t)u.hdr.plaintext_len, err);
    int rc = -1;
    if (out) {
        stream_job j = {.kind = JOB_OPEN_TO_MEMORY, .h = &u.hdr, .enc_key = u.keys->enc, .in_fd = fd,
                        .in_path = path, .dest = out};
        rc = stream_run(&j, err);
    }
    close(fd);
    if (rc == 0) {
        if (hdr)
            *hdr = u.hdr;
        *plain = out;
        *plain_len = (size_t)u.hdr.plaintext_len;
    } else {
        cl_secmem_free(out);
    }
    unsealer_end(&u);
    return rc;
}

int cl_seal_unseal_file(const char *in_path, const char *out_path, const uint8_t key[CL_SEAL_KEY_LEN],
                        const char *expected_key_id, bool overwrite, cl_seal_progress_fn progress,
                        void *progress_ctx, cl_err *err)
{
    int fd = open(in_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open sealed file '%s'", in_path);
    unsealer u;
    if (open_fd(fd, in_path, key, expected_key_id, &u, err) != 0) {
        close(fd);
        return -1;
    }
    cl_atomic_file out = {.fd = -1};
    int rc = cl_atomic_open(&out, out_path, 0600, overwrite, err);
    if (rc == 0) {
        stream_job j = {.kind = JOB_UNSEAL_TO_FILE, .h = &u.hdr, .enc_key = u.keys->enc, .in_fd = fd,
                        .out_fd = out.fd, .in_path = in_path, .out_path = out_path, .progress = progress,
                        .progress_ctx = progress_ctx};
        rc = stream_run(&j, err);
    }
    /* Only a fully verified plaintext is renamed into place; anything else is removed. */
    if (rc == 0)
        rc = cl_atomic_commit(&out, err);
    else if (out.path)
        cl_atomic_abort(&out);
    unsealer_end(&u);
    close(fd);
    return rc;
}
