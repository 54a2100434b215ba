/* cloister/seal.h — the interface of the seal module: model keys and the sealed file format
 * (authenticated, streaming, truncation-proof encryption at rest). The format is specified in
 * docs/sealed-format.md; this header is the only way the rest of cloister touches it.
 *
 * Ownership: key buffers are the caller's; plaintext returned by cl_seal_open_* lives in secure
 * memory (common.h: locked, non-dumpable, zeroized) and is released with cl_secmem_free().
 * Thread-safety: every function is safe to call concurrently on different objects; no global
 * state. */
#ifndef CLOISTER_SEAL_H
#define CLOISTER_SEAL_H

#include "cloister/common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CL_SEAL_KEY_LEN 32            /* AES-256 wrap key */
#define CL_SEAL_VERSION 1
#define CL_SEAL_MAGIC "CLSEALED"      /* 8 bytes, no terminator in the file */
#define CL_SEAL_NONCE_LEN 32
#define CL_SEAL_KEYCHECK_LEN 16
#define CL_SEAL_MAC_LEN 32
#define CL_SEAL_TAG_LEN 16
#define CL_SEAL_KEY_ID_MAX 255
#define CL_SEAL_CONTENT_TYPE_MAX 64
#define CL_SEAL_CHUNK_MIN 64u
#define CL_SEAL_CHUNK_MAX (64u << 20)
#define CL_SEAL_CHUNK_DEFAULT (256u << 10)
#define CL_SEAL_PLAINTEXT_MAX (1ull << 46) /* 64 TiB: refuse absurd headers before allocating */
#define CL_SEAL_HEADER_MAX (73 + CL_SEAL_KEY_ID_MAX + 1 + CL_SEAL_CONTENT_TYPE_MAX + CL_SEAL_MAC_LEN)

/* ---------------------------------------------------------------- keys */

/* Fills key with CL_SEAL_KEY_LEN random bytes from the OS CSPRNG (via OpenSSL). */
int cl_seal_key_generate(uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);
/* Parses a key file's contents: either exactly 32 raw bytes, or 64 hex digits optionally followed
 * by a newline. */
int cl_seal_key_parse(const uint8_t *buf, size_t len, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);
/* Reads and parses a key file. The file's bytes are zeroized after parsing. */
int cl_seal_key_load(const char *path, uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);
/* Writes 32 raw bytes with mode 0600, atomically; refuses to overwrite an existing file. */
int cl_seal_key_save(const char *path, const uint8_t key[CL_SEAL_KEY_LEN], cl_err *err);
/* Whether `key_id` may name the key of a new sealed file: the key server's secret-name rule
 * (cl_policy_secret_name_valid: 1..128 characters from [A-Za-z0-9._:/-]), so the key of every model
 * sealed can be stored in the key server and provisioned under that name. Opening a file accepts the
 * wider alphabet of the format (1..255 of [A-Za-z0-9._:/@+-], docs/sealed-format.md), so files sealed
 * by earlier releases still open with `cloister unseal`/`run`. */
bool cl_seal_key_id_valid(const char *key_id);
#define CL_SEAL_KEY_ID_RULE                                                                                     \
    "a key id must be a key server secret name: 1-128 characters from A-Z a-z 0-9 . _ : / -"

/* ---------------------------------------------------------------- header */

typedef struct cl_seal_header {
    uint16_t version;
    uint16_t algorithm; /* 1: AES-256-GCM chunks, HKDF-SHA256 per-file keys */
    uint32_t chunk_size;
    uint64_t plaintext_len;
    uint8_t file_nonce[CL_SEAL_NONCE_LEN];
    uint8_t key_check[CL_SEAL_KEYCHECK_LEN];
    char key_id[CL_SEAL_KEY_ID_MAX + 1];
    char content_type[CL_SEAL_CONTENT_TYPE_MAX + 1];
    uint8_t mac[CL_SEAL_MAC_LEN];
    /* derived */
    size_t header_len;    /* bytes of header on disk, MAC included */
    uint64_t chunk_count; /* at least 1: an empty payload is one empty final chunk */
    uint64_t sealed_len;  /* exact size of the whole sealed file */
} cl_seal_header;

/* Parses and structurally validates a header without a key (the MAC is not checked: that needs
 * the key). `len` may be longer than the header. Errors: CL_E_FORMAT (not a sealed file or
 * malformed), CL_E_VERSION (unknown version or algorithm), CL_E_TRUNCATED (too short). */
int cl_seal_header_parse(const uint8_t *buf, size_t len, cl_seal_header *hdr, cl_err *err);
/* Reads and parses the header of a sealed file, and compares the file's size with the header:
 * CL_E_TRUNCATED when it is shorter, CL_E_TRAILING when longer. */
int cl_seal_header_read_file(const char *path, cl_seal_header *hdr, cl_err *err);

/* ---------------------------------------------------------------- sealing */

typedef void (*cl_seal_progress_fn)(void *ctx, uint64_t done, uint64_t total);

typedef struct cl_seal_options {
    const char *key_id;       /* required */
    const char *content_type; /* NULL: "application/octet-stream" */
    uint32_t chunk_size;      /* 0: CL_SEAL_CHUNK_DEFAULT */
    bool overwrite;           /* replace an existing output file */
    cl_seal_progress_fn progress;
    void *progress_ctx;
} cl_seal_options;

/* Seals the regular file in_path into out_path (written atomically: temporary file, fsync, rename).
 * The input is streamed chunk by chunk; its size must not change while sealing. */
int cl_seal_file(const char *in_path, const char *out_path, const uint8_t key[CL_SEAL_KEY_LEN],
                 const cl_seal_options *opts, cl_err *err);
/* Seals a buffer into a new malloc()ed buffer (*out, *out_len), for tests and small secrets. */
int cl_seal_buffer(const uint8_t *in, size_t in_len, const uint8_t key[CL_SEAL_KEY_LEN],
                   const cl_seal_options *opts, uint8_t **out, size_t *out_len, cl_err *err);

/* ---------------------------------------------------------------- opening */

/* Checks applied before any payload is decrypted, in this order:
 *   1. structure and version (CL_E_FORMAT / CL_E_VERSION / CL_E_TRUNCATED),
 *   2. the expected key id if one is given (CL_E_KEY_ID),
 *   3. the key check value: a different key fails with CL_E_KEY,
 *   4. the header MAC (CL_E_AUTH: the header was modified),
 *   5. the total size (CL_E_TRUNCATED / CL_E_TRAILING),
 * then each chunk's GCM tag, which binds the header, the chunk index and the final-chunk flag
 * (CL_E_AUTH naming the chunk: modified, reordered or spliced data). */

/* Decrypts a sealed file straight into secure memory. *plain (cl_secmem_free it) holds *plain_len
 * bytes; hdr (optional) receives the verified header. Nothing is returned unless every chunk
 * verified. expected_key_id may be NULL. */
int cl_seal_open_file(const char *path, const uint8_t key[CL_SEAL_KEY_LEN], const char *expected_key_id,
                      uint8_t **plain, size_t *plain_len, cl_seal_header *hdr, cl_err *err);
/* The same for a sealed image already in memory. */
int cl_seal_open_buffer(const uint8_t *sealed, size_t sealed_len, const uint8_t key[CL_SEAL_KEY_LEN],
                        const char *expected_key_id, uint8_t **plain, size_t *plain_len,
                        cl_seal_header *hdr, cl_err *err);
/* Decrypts a sealed file to out_path (mode 0600, atomically: on any failure, including a bad chunk
 * near the end, no output file is left behind). */
int cl_seal_unseal_file(const char *in_path, const char *out_path, const uint8_t key[CL_SEAL_KEY_LEN],
                        const char *expected_key_id, bool overwrite, cl_seal_progress_fn progress,
                        void *progress_ctx, cl_err *err);

#ifdef __cplusplus
}
#endif
#endif
