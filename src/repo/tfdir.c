/* repo/tfdir.c — reading a TensorFlow SavedModel directory into memory for the engine
 * (cl_engine_load_files): saved_model.pb, variables/variables.index and the variables.data-NNNNN-of-NNNNN
 * shards, each either plain or sealed on its own (NAME.sealed, `cloister seal` applied per file; then
 * opened with the key source's key and kept in secure memory only). A legacy SessionBundle export
 * (export.meta) is read too, so that the engine refuses it with a message saying what it is.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "cloister/repo.h"

#define MAX_FILES 4100

static bool is_file(const char *p)
{
    struct stat st;
    return stat(p, &st) == 0 && S_ISREG(st.st_mode);
}

static int read_one(const char *dir, const char *name, bool sealed, cl_repo_key_fn key_fn, void *key_arg,
                    cl_repo_files *out, bool *key_failed, cl_err *err)
{
    if (out->n >= MAX_FILES)
        return cl_err_set(err, CL_E_FORMAT, "'%s' holds more than %d model files", dir, MAX_FILES);
    char path[4200];
    snprintf(path, sizeof path, "%s/%s%s", dir, name, sealed ? ".sealed" : "");
    uint8_t *buf = NULL;
    size_t len = 0;
    if (sealed) {
        cl_seal_header h;
        if (cl_seal_header_read_file(path, &h, err) != 0)
            return -1;
        if (!key_fn)
            return cl_err_set(err, CL_E_KEY, "'%s' is sealed (key id '%s') but no key source is configured", path,
                              h.key_id);
        uint8_t *key = cl_secmem_alloc(CL_SEAL_KEY_LEN, err);
        if (!key)
            return -1;
        int rc = key_fn(key_arg, h.key_id, key, err);
        if (rc != 0 && key_failed)
            *key_failed = true;
        if (rc == 0)
            rc = cl_seal_open_file(path, key, h.key_id, &buf, &len, NULL, err);
        cl_secmem_free(key);
        if (rc != 0)
            return cl_err_prefix(err, "cannot open sealed model file '%s'", path);
    } else if (cl_file_read(path, CL_ENGINE_MAX_MODEL_BYTES, &buf, &len, err) != 0) {
        return -1;
    }
    size_t k = out->n;
    out->f[k].name = strdup(name);
    out->secure[k] = sealed;
    out->f[k].data = buf;
    out->f[k].len = len;
    out->n++;
    if (!out->f[k].name)
        return cl_err_nomem(err);
    return 0;
}

/* name, or name.sealed, in dir: which one (an error when both exist). 0 neither, 1 plain, 2 sealed. */
static int which(const char *dir, const char *name, cl_err *err)
{
    char p[4200], s[4200];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    snprintf(s, sizeof s, "%s/%s.sealed", dir, name);
    bool hp = is_file(p), hs = is_file(s);
    if (hp && hs)
        return cl_err_set(err, CL_E_INVALID, "'%s' holds both %s and %s.sealed: remove one", dir, name, name), -1;
    return hs ? 2 : hp ? 1 : 0;
}

int cl_repo_savedmodel_read(const char *dir, cl_repo_key_fn key_fn, void *key_arg, cl_repo_files *out,
                            bool *key_failed, cl_err *err)
{
    memset(out, 0, sizeof *out);
    if (key_failed)
        *key_failed = false;
    out->f = calloc(MAX_FILES, sizeof *out->f);
    out->secure = calloc(MAX_FILES, sizeof *out->secure);
    if (!out->f || !out->secure) {
        cl_repo_files_free(out);
        return cl_err_nomem(err);
    }
    int w = which(dir, "saved_model.pb", err);
    if (w < 0)
        goto fail;
    if (w == 0) {
        if (which(dir, "export.meta", err) <= 0) {
            cl_err_set(err, CL_E_IO, "'%s' holds no saved_model.pb", dir);
            goto fail;
        }
        if (read_one(dir, "export.meta", false, NULL, NULL, out, key_failed, err) != 0)
            goto fail;
        return 0;
    }
    if (read_one(dir, "saved_model.pb", w == 2, key_fn, key_arg, out, key_failed, err) != 0)
        goto fail;
    char vdir[4200];
    snprintf(vdir, sizeof vdir, "%s/variables", dir);
    w = which(vdir, "variables.index", err);
    if (w < 0)
        goto fail;
    if (w == 0)
        return 0; /* no variables */
    if (read_one(dir, "variables/variables.index", w == 2, key_fn, key_arg, out, key_failed, err) != 0)
        goto fail;
    DIR *d = opendir(vdir);
    if (!d) {
        cl_err_errno(err, CL_E_IO, errno, "cannot read '%s'", vdir);
        goto fail;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(d))) {
        const char *nm = e->d_name;
        if (strncmp(nm, "variables.data-", 15) != 0)
            continue;
        size_t l = strlen(nm);
        bool sealed = l > 7 && strcmp(nm + l - 7, ".sealed") == 0;
        char base[512];
        snprintf(base, sizeof base, "variables/%.*s", (int)(sealed ? l - 7 : l), nm);
        char chk[4200];
        snprintf(chk, sizeof chk, "%s/%s", dir, base);
        if (sealed && is_file(chk)) {
            rc = cl_err_set(err, CL_E_INVALID, "'%s' holds both %s and its .sealed form: remove one", vdir, base + 10);
            break;
        }
        rc = read_one(dir, base, sealed, key_fn, key_arg, out, key_failed, err);
    }
    closedir(d);
    if (rc != 0)
        goto fail;
    return 0;
fail:
    cl_repo_files_free(out);
    return -1;
}

void cl_repo_files_free(cl_repo_files *fs)
{
    for (size_t i = 0; fs->f && i < fs->n; i++) {
        free((char *)fs->f[i].name);
        if (fs->secure[i])
            cl_secmem_free((uint8_t *)fs->f[i].data);
        else
            free((uint8_t *)fs->f[i].data);
    }
    free(fs->f);
    free(fs->secure);
    memset(fs, 0, sizeof *fs);
}
