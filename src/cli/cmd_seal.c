/* cmd_seal.c — `cloister seal`, `cloister unseal` and `cloister inspect`: the sealed file format
 * from the command line. */
#include <stdio.h>
#include <string.h>

#include <cjson/cJSON.h>

#include "cli.h"
#include "cloister/seal.h"

static const char *guess_content_type(const char *path)
{
    size_t n = strlen(path);
    if (n >= 5 && strcmp(path + n - 5, ".onnx") == 0)
        return "application/x-onnx";
    return NULL;
}

/* Loads a key file into secure memory; prints the failure. */
static uint8_t *load_key(const char *cmd, const char *path)
{
    cl_err err = {0};
    uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, &err);
    if (!key || cl_seal_key_load(path, key, &err) != 0) {
        cl_secmem_free(key);
        cl_cli_fail(cmd, &err);
        return NULL;
    }
    return key;
}

int cl_cmd_seal(int argc, char **argv)
{
    const char *key_path = NULL, *key_id = NULL, *in = NULL, *out = NULL, *ctype = NULL;
    long chunk = CL_SEAL_CHUNK_DEFAULT;
    bool force = false;
    const cl_opt opts[] = {
        {"key", CL_ARG_STRING, &key_path, "FILE", "wrap key file (from cloister keygen)", true},
        {"key-id", CL_ARG_STRING, &key_id, "NAME", "name of the key, recorded in the header; the server asks "
                                                     "the key server for this name (1-128 of A-Z a-z 0-9 . _ : / -, "
                                                     "as `keyserver secret put --name`)", true},
        {"in", CL_ARG_STRING, &in, "FILE", "plaintext input file", true},
        {"out", CL_ARG_STRING, &out, "FILE", "sealed output file", true},
        {"content-type", CL_ARG_STRING, &ctype, "TYPE", "recorded content type (default from the extension)", false},
        {"chunk-size", CL_ARG_LONG, &chunk, "BYTES", "chunk size (default 262144)", false, CL_SEAL_CHUNK_MIN,
         CL_SEAL_CHUNK_MAX},
        {"force", CL_ARG_FLAG, &force, NULL, "overwrite an existing output file", false},
    };
    const cl_cmd_usage usage = {
        "cloister seal --key FILE --key-id NAME --in FILE --out FILE",
        "Encrypts a file (a model) at rest: AES-256-GCM in authenticated chunks under a per-file key, so any\n"
        "change, truncation, extension or reordering is detected when it is opened. The output is written\n"
        "to a temporary name and renamed only when complete."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    if (!cl_seal_key_id_valid(key_id)) {
        cl_err err = {0};
        cl_err_set(&err, CL_E_INVALID, "--key-id '%s': %s (the model server asks the key server for the key by "
                   "this name, and `keyserver secret put` takes no other)", key_id, CL_SEAL_KEY_ID_RULE);
        return cl_cli_usage_error("seal", &err);
    }
    uint8_t *key = load_key("seal", key_path);
    if (!key)
        return CL_EXIT_FAIL;
    cl_progress bar = {.label = "sealing"};
    cl_seal_options o = {.key_id = key_id, .content_type = ctype ? ctype : guess_content_type(in),
                         .chunk_size = (uint32_t)chunk, .overwrite = force,
                         .progress = cl_progress_cb, .progress_ctx = &bar};
    cl_err err = {0};
    cl_seal_header h;
    rc = cl_seal_file(in, out, key, &o, &err);
    cl_secmem_free(key);
    cl_progress_finish(&bar);
    if (rc != 0)
        return cl_cli_fail("seal", &err);
    if (cl_seal_header_read_file(out, &h, &err) != 0)
        return cl_cli_fail("seal", &err);
    fprintf(stderr, "cloister seal: sealed %llu bytes into %s (key id '%s', %llu chunk%s)\n",
            (unsigned long long)h.plaintext_len, out, h.key_id, (unsigned long long)h.chunk_count,
            h.chunk_count == 1 ? "" : "s");
    return CL_EXIT_OK;
}

int cl_cmd_unseal(int argc, char **argv)
{
    const char *key_path = NULL, *key_id = NULL, *in = NULL, *out = NULL;
    bool force = false;
    const cl_opt opts[] = {
        {"key", CL_ARG_STRING, &key_path, "FILE", "wrap key file", true},
        {"key-id", CL_ARG_STRING, &key_id, "NAME", "refuse the file unless it was sealed for this key id", false},
        {"in", CL_ARG_STRING, &in, "FILE", "sealed input file", true},
        {"out", CL_ARG_STRING, &out, "FILE", "plaintext output file (mode 0600)", true},
        {"force", CL_ARG_FLAG, &force, NULL, "overwrite an existing output file", false},
    };
    const cl_cmd_usage usage = {
        "cloister unseal --key FILE [--key-id NAME] --in FILE --out FILE",
        "Decrypts a sealed file, for debugging. The server never does this: it decrypts into locked memory.\n"
        "The plaintext is written only to --out, and only if every chunk verifies."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL);
    if (rc >= 0)
        return rc;
    cl_err err = {0};
    uint8_t *key = load_key("unseal", key_path);
    if (!key)
        return CL_EXIT_FAIL;
    /* The total is only known once the library has verified the header: the callback starts the bar. */
    cl_progress bar = {.label = "unsealing"};
    rc = cl_seal_unseal_file(in, out, key, key_id, force, cl_progress_cb, &bar, &err);
    cl_secmem_free(key);
    cl_progress_finish(&bar);
    if (rc != 0)
        return cl_cli_fail("unseal", &err);
    fprintf(stderr, "cloister unseal: wrote %llu bytes to %s\n", (unsigned long long)bar.total, out);
    return CL_EXIT_OK;
}

int cl_cmd_inspect(int argc, char **argv)
{
    bool json = false;
    cl_strlist files = {0};
    const cl_opt opts[] = {
        {"json", CL_ARG_FLAG, &json, NULL, "print JSON", false},
    };
    const cl_cmd_usage usage = {"cloister inspect [--json] FILE...",
                                "Prints the header of sealed files (no key needed; nothing is decrypted).\n"
                                "The header is only authenticated when the file is opened with its key."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), &files);
    if (rc >= 0)
        return rc;
    if (files.count == 0) {
        cl_strlist_free(&files);
        fprintf(stderr, "cloister inspect: name at least one sealed file (see --help)\n");
        return CL_EXIT_USAGE;
    }
    rc = CL_EXIT_OK;
    for (size_t i = 0; i < files.count; i++) {
        cl_err err = {0};
        cl_seal_header h;
        if (cl_seal_header_read_file(files.items[i], &h, &err) != 0) {
            fprintf(stderr, "cloister inspect: %s\n", err.msg); /* it names the file */
            rc = CL_EXIT_FAIL;
            continue;
        }
        char nonce[2 * CL_SEAL_NONCE_LEN + 1];
        cl_hex_encode(h.file_nonce, CL_SEAL_NONCE_LEN, nonce);
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", files.items[i]);
            cJSON_AddNumberToObject(o, "version", h.version);
            cJSON_AddStringToObject(o, "algorithm", "AES-256-GCM/HKDF-SHA256");
            cJSON_AddStringToObject(o, "key_id", h.key_id);
            cJSON_AddStringToObject(o, "content_type", h.content_type);
            cJSON_AddNumberToObject(o, "chunk_size", h.chunk_size);
            cJSON_AddNumberToObject(o, "plaintext_length", (double)h.plaintext_len);
            cJSON_AddNumberToObject(o, "chunks", (double)h.chunk_count);
            cJSON_AddNumberToObject(o, "header_length", (double)h.header_len);
            cJSON_AddNumberToObject(o, "sealed_length", (double)h.sealed_len);
            cJSON_AddStringToObject(o, "file_nonce", nonce);
            char *text = cJSON_PrintUnformatted(o);
            if (text)
                puts(text);
            cJSON_free(text);
            cJSON_Delete(o);
        }
        else
            printf("%s:\n  format:       cloister sealed v%u (AES-256-GCM chunks, HKDF-SHA256 file key)\n"
                   "  key id:       %s\n  content type: %s\n  plaintext:    %llu bytes\n"
                   "  chunks:       %llu of %u bytes\n  sealed size:  %llu bytes (header %zu)\n"
                   "  file nonce:   %s\n",
                   files.items[i], h.version, h.key_id, h.content_type[0] ? h.content_type : "(none)",
                   (unsigned long long)h.plaintext_len, (unsigned long long)h.chunk_count, h.chunk_size,
                   (unsigned long long)h.sealed_len, h.header_len, nonce);
    }
    cl_strlist_free(&files);
    return rc;
}
