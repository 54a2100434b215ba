/* fileio.c — whole-file reads, EINTR-safe read/write loops, and atomic (temp + fsync + rename)
 * output files, so no command ever leaves a half-written result behind. */
#include "cloister/common.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int cl_write_all(int fd, const void *buf, size_t len)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
    }
    return 0;
}

ssize_t cl_read_full(int fd, void *buf, size_t len)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, p + got, len - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int cl_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t n = pwrite(fd, p, len, (off_t)offset);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        p += n;
        len -= (size_t)n;
        offset += (uint64_t)n;
    }
    return 0;
}

ssize_t cl_pread_full(int fd, void *buf, size_t len, uint64_t offset)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, p + got, len - got, (off_t)(offset + got));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += (size_t)n;
    }
    return (ssize_t)got;
}

int cl_fd_read_all(int fd, const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    size_t cap = max_size < 4096 ? max_size + 1 : 4096, have = 0;
    uint8_t *buf = malloc(cap + 1);
    for (;;) {
        if (!buf)
            return cl_err_set(err, CL_E_NOMEM, "out of memory reading '%s'", path);
        if (have == cap) {
            if (cap > max_size) {
                free(buf);
                return cl_err_set(err, CL_E_INVALID, "'%s' carries more than the %zu bytes allowed", path,
                                  max_size);
            }
            cap = cap > max_size / 2 ? max_size + 1 : cap * 2;
            uint8_t *nb = realloc(buf, cap + 1);
            if (!nb)
                free(buf);
            buf = nb;
            continue;
        }
        ssize_t n = read(fd, buf + have, cap - have);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            free(buf);
            return cl_err_errno(err, CL_E_IO, e, "cannot read '%s'", path);
        }
        if (n == 0)
            break;
        have += (size_t)n;
    }
    buf[have] = '\0';
    *out = buf;
    *len = have;
    return 0;
}

int cl_file_read(const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cl_err_errno(err, CL_E_IO, e, "cannot stat '%s'", path);
    }
    if (S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode)) {
        /* a pipe (`--file /dev/stdin`): no size to trust, so read up to one byte past the limit */
        int rc = cl_fd_read_all(fd, path, max_size, out, len, err);
        close(fd);
        return rc;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return cl_err_set(err, CL_E_IO, "'%s' is not a regular file or a pipe", path);
    }
    if ((uint64_t)st.st_size > max_size) {
        close(fd);
        return cl_err_set(err, CL_E_INVALID, "'%s' is %lld bytes, more than the %zu allowed", path,
                          (long long)st.st_size, max_size);
    }
    size_t size = (size_t)st.st_size;
    uint8_t *buf = malloc(size + 1);
    if (!buf) {
        close(fd);
        return cl_err_set(err, CL_E_NOMEM, "out of memory reading '%s'", path);
    }
    ssize_t n = cl_read_full(fd, buf, size);
    int e = errno;
    close(fd);
    if (n < 0 || (size_t)n != size) {
        free(buf);
        if (n < 0)
            return cl_err_errno(err, CL_E_IO, e, "cannot read '%s'", path);
        return cl_err_set(err, CL_E_IO, "'%s' changed size while being read", path);
    }
    buf[size] = '\0';
    *out = buf;
    *len = size;
    return 0;
}

int cl_atomic_open(cl_atomic_file *f, const char *path, unsigned mode, bool overwrite, cl_err *err)
{
    memset(f, 0, sizeof *f);
    f->fd = -1;
    struct stat st;
    if (!overwrite && lstat(path, &st) == 0)
        return cl_err_set(err, CL_E_EXISTS, "'%s' already exists; refusing to overwrite it", path);
    if (lstat(path, &st) == 0 && S_ISDIR(st.st_mode))
        return cl_err_set(err, CL_E_IO, "'%s' is a directory", path);
    size_t n = strlen(path);
    f->path = strdup(path);
    f->tmp_path = malloc(n + 16);
    if (!f->path || !f->tmp_path) {
        cl_atomic_abort(f);
        return cl_err_nomem(err);
    }
    /* The temporary file lives in the same directory so rename() is atomic. */
    snprintf(f->tmp_path, n + 16, "%s.tmp.XXXXXX", path);
    f->fd = mkostemp(f->tmp_path, O_CLOEXEC);
    if (f->fd < 0) {
        int e = errno;
        free(f->tmp_path);
        f->tmp_path = NULL;
        cl_atomic_abort(f);
        return cl_err_errno(err, CL_E_IO, e, "cannot create a file beside '%s'", path);
    }
    if (fchmod(f->fd, mode) != 0) {
        int e = errno;
        cl_atomic_abort(f);
        return cl_err_errno(err, CL_E_IO, e, "cannot set permissions on '%s'", path);
    }
    return 0;
}

int cl_atomic_write(cl_atomic_file *f, const void *buf, size_t len, cl_err *err)
{
    if (cl_write_all(f->fd, buf, len) != 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot write '%s'", f->path);
    return 0;
}

int cl_atomic_commit(cl_atomic_file *f, cl_err *err)
{
    int rc = 0;
    if (fsync(f->fd) != 0) {
        rc = cl_err_errno(err, CL_E_IO, errno, "cannot flush '%s' to disk", f->path);
    } else if (close(f->fd) != 0) {
        f->fd = -1;
        rc = cl_err_errno(err, CL_E_IO, errno, "cannot close '%s'", f->path);
    } else {
        f->fd = -1;
        if (rename(f->tmp_path, f->path) != 0) {
            rc = cl_err_errno(err, CL_E_IO, errno, "cannot rename the finished output to '%s'", f->path);
        } else {
            /* Make the rename itself durable. */
            char *dir = strdup(f->path);
            if (dir) {
                int dfd = open(dirname(dir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                if (dfd >= 0) {
                    (void)fsync(dfd);
                    close(dfd);
                }
                free(dir);
            }
            free(f->tmp_path);
            f->tmp_path = NULL;
        }
    }
    cl_atomic_abort(f);
    return rc;
}

void cl_atomic_abort(cl_atomic_file *f)
{
    if (f->fd >= 0)
        close(f->fd);
    f->fd = -1;
    if (f->tmp_path)
        unlink(f->tmp_path);
    free(f->tmp_path);
    free(f->path);
    f->tmp_path = NULL;
    f->path = NULL;
}

int cl_file_write_atomic(const char *path, const void *buf, size_t len, unsigned mode, bool overwrite,
                         cl_err *err)
{
    cl_atomic_file f;
    if (cl_atomic_open(&f, path, mode, overwrite, err) != 0)
        return -1;
    if (cl_atomic_write(&f, buf, len, err) != 0) {
        cl_atomic_abort(&f);
        return -1;
    }
    return cl_atomic_commit(&f, err);
}

int cl_file_read_secure(const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err)
{
    *out = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return cl_err_errno(err, CL_E_IO, errno, "cannot open '%s'", path);
    struct stat st;
    if (fstat(fd, &st) != 0) {
        int e = errno;
        close(fd);
        return cl_err_errno(err, CL_E_IO, e, "cannot stat '%s'", path);
    }
    bool stream = S_ISFIFO(st.st_mode) || S_ISCHR(st.st_mode) || S_ISSOCK(st.st_mode);
    if (!stream && !S_ISREG(st.st_mode)) {
        close(fd);
        return cl_err_set(err, CL_E_IO, "'%s' is not a regular file or a pipe", path);
    }
    if (!stream && (uint64_t)st.st_size > max_size) {
        close(fd);
        return cl_err_set(err, CL_E_INVALID, "'%s' is %lld bytes, more than the %zu allowed", path,
                          (long long)st.st_size, max_size);
    }
    /* a pipe has no size to trust: room for the limit and one byte more, to tell "too long" */
    size_t cap = stream ? max_size + 1 : (size_t)st.st_size;
    uint8_t *buf = cl_secmem_alloc(cap + 1, err);
    if (!buf) {
        close(fd);
        return cl_err_prefix(err, "reading '%s'", path);
    }
    ssize_t n = cl_read_full(fd, buf, cap);
    int e = errno;
    close(fd);
    if (n < 0 || (!stream && (size_t)n != cap) || (stream && (size_t)n > max_size)) {
        cl_secmem_free(buf);
        if (n < 0)
            return cl_err_errno(err, CL_E_IO, e, "cannot read '%s'", path);
        if (stream)
            return cl_err_set(err, CL_E_INVALID, "'%s' carries more than the %zu bytes allowed", path, max_size);
        return cl_err_set(err, CL_E_IO, "'%s' changed size while being read", path);
    }
    buf[n] = '\0';
    *out = buf;
    *len = (size_t)n;
    return 0;
}
