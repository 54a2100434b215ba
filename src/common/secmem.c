/* secmem.c — locked, non-dumpable, zeroized-on-free memory for secrets and decrypted models, and the
 * set-up of OpenSSL's secure heap (where OpenSSL itself keeps private keys).
 *
 * Layout of one block (all page-aligned, one anonymous mapping):
 *   [ header page: magic, sizes, locked flag ][ data pages ... ][ guard page, PROT_NONE ]
 * The pointer handed out is the start of the data pages. The guard page turns a linear overrun into
 * a fault instead of a silent read of other memory. Thread-safe: the only shared state is the
 * require-lock switch and a warn-once flag, both atomics, and the secure heap's one-time set-up. */
#include "cloister/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <stdlib.h>
#include <unistd.h>

#include <openssl/crypto.h>

#define SECMEM_MAGIC 0x636c7365636d656dULL /* "clsecmem" */

typedef struct secmem_hdr {
    uint64_t magic;
    size_t size;    /* bytes requested */
    size_t map_len; /* whole mapping, header and guard included */
    bool locked;
} secmem_hdr;

static atomic_bool g_require_lock = true;
static atomic_bool g_warned = false;

void cl_secmem_set_require_lock(bool require) { atomic_store(&g_require_lock, require); }

void cl_memzero(void *p, size_t n)
{
    if (p && n)
        OPENSSL_cleanse(p, n);
}

int cl_memeq_ct(const void *a, const void *b, size_t n) { return CRYPTO_memcmp(a, b, n); }

static size_t page_size(void)
{
    long ps = sysconf(_SC_PAGESIZE);
    return ps > 0 ? (size_t)ps : 4096;
}

/* Raises the soft RLIMIT_MEMLOCK to the hard limit, once; harmless if it is already there. */
static void raise_memlock_limit(void)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_MEMLOCK, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        (void)setrlimit(RLIMIT_MEMLOCK, &rl);
    }
}

/* Locks a range. MLOCK_ONFAULT locks each page as it is first touched instead of faulting the whole
 * range in up front: a page is never present without being locked, and large buffers (models) are
 * populated by whichever threads fill them, in parallel. Falls back to plain mlock(). */
/* The ways out of a locked-memory refusal, for both messages below. */
#define MEMLOCK_FIXES                                                                                  \
    "raise it (`ulimit -l unlimited`; systemd LimitMEMLOCK=infinity; docker --ulimit memlock=-1), grant " \
    "CAP_IPC_LOCK (Kubernetes: securityContext capabilities add IPC_LOCK), or accept unlocked memory "    \
    "(`cloister --allow-unlocked-memory COMMAND ...`)"

static bool lock_range(void *p, size_t len)
{
#ifdef MLOCK_ONFAULT
    if (mlock2(p, len, MLOCK_ONFAULT) == 0)
        return true;
    if (errno != EINVAL && errno != ENOSYS)
        return false;
#endif
    return mlock(p, len) == 0;
}

static secmem_hdr *header_of(const void *p)
{
    return (secmem_hdr *)((uint8_t *)p - page_size());
}

void *cl_secmem_alloc(size_t size, cl_err *err)
{
    size_t ps = page_size();
    if (size > SIZE_MAX / 2 - 2 * ps) {
        cl_err_set(err, CL_E_NOMEM, "secure allocation of %zu bytes is too large", size);
        return NULL;
    }
    size_t data_len = (size + ps - 1) / ps * ps;
    if (data_len == 0)
        data_len = ps;
    size_t map_len = ps + data_len + ps;
    uint8_t *base = mmap(NULL, map_len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) {
        cl_err_errno(err, CL_E_NOMEM, errno, "cannot map %zu bytes of secure memory", size);
        return NULL;
    }
    (void)madvise(base, map_len, MADV_DONTDUMP);
    (void)madvise(base, map_len, MADV_DONTFORK);
#ifdef MADV_HUGEPAGE
    /* Big buffers (models) fault in 2 MiB at a time: far fewer faults and page locks. */
    if (data_len >= (4u << 20))
        (void)madvise(base, map_len, MADV_HUGEPAGE);
#endif
    if (mprotect(base + ps + data_len, ps, PROT_NONE) != 0) {
        int e = errno;
        munmap(base, map_len);
        cl_err_errno(err, CL_E_NOMEM, e, "cannot set up the guard page of secure memory");
        return NULL;
    }

    bool locked = lock_range(base, ps + data_len);
    if (!locked) {
        raise_memlock_limit();
        locked = lock_range(base, ps + data_len);
    }
    if (!locked) {
        int e = errno;
        struct rlimit rl = {0};
        getrlimit(RLIMIT_MEMLOCK, &rl);
        if (atomic_load(&g_require_lock)) {
            munmap(base, map_len);
            cl_err_errno(err, CL_E_NOMEM, e,
                         "cannot lock %zu bytes in RAM (RLIMIT_MEMLOCK is %llu KiB): " MEMLOCK_FIXES,
                         size, (unsigned long long)(rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur / 1024));
            return NULL;
        }
        if (!atomic_exchange(&g_warned, true))
            CL_WARN("secmem", "secrets are held in memory that could not be locked (%s); they may be "
                    "swapped to disk", strerror(e));
    }
    secmem_hdr *h = (secmem_hdr *)base;
    h->magic = SECMEM_MAGIC;
    h->size = size;
    h->map_len = map_len;
    h->locked = locked;
    return base + ps;
}

size_t cl_secmem_size(const void *p) { return p ? header_of(p)->size : 0; }

bool cl_secmem_is_locked(const void *p) { return p && header_of(p)->locked; }

void cl_secmem_free(void *p)
{
    if (!p)
        return;
    secmem_hdr *h = header_of(p);
    if (h->magic != SECMEM_MAGIC)
        abort(); /* not ours, or the header was overwritten: never unmap blindly */
    size_t ps = page_size();
    size_t map_len = h->map_len;
    cl_memzero(p, map_len - 2 * ps);
    if (h->locked)
        munlock(h, map_len - ps);
    cl_memzero(h, sizeof *h);
    munmap(h, map_len);
}

/* ---------------------------------------------------------------- OpenSSL's secure heap */

static pthread_once_t g_sh_once = PTHREAD_ONCE_INIT;
static atomic_size_t g_sh_bytes;
static int g_sh_rc;
static cl_err g_sh_err;

static void secure_heap_setup(void)
{
    size_t size = 4096;
    while (size < atomic_load(&g_sh_bytes) && size < ((size_t)1 << 30))
        size <<= 1;
    raise_memlock_limit();
    /* minimum block 32 bytes: an X25519 or P-256 private key is one block */
    int rc = CRYPTO_secure_malloc_init(size, 32);
    if (rc == 0) {
        g_sh_rc = cl_err_set(&g_sh_err, CL_E_NOMEM, "cannot set up OpenSSL's secure heap (%zu KiB)", size / 1024);
        return;
    }
    if (rc == 2) { /* mapped, but not locked (or not fenced): the arena is usable */
        struct rlimit rl = {0};
        getrlimit(RLIMIT_MEMLOCK, &rl);
        if (atomic_load(&g_require_lock)) {
            CRYPTO_secure_malloc_done();
            g_sh_rc = cl_err_set(&g_sh_err, CL_E_NOMEM,
                                 "cannot lock OpenSSL's secure heap for private keys (%zu KiB) in RAM "
                                 "(RLIMIT_MEMLOCK is %llu KiB): " MEMLOCK_FIXES,
                                 size / 1024,
                                 (unsigned long long)(rl.rlim_cur == RLIM_INFINITY ? 0 : rl.rlim_cur / 1024));
            return;
        }
        CL_WARN("secmem", "OpenSSL's secure heap (%zu KiB) could not be locked in RAM; private keys may be "
                "swapped to disk", size / 1024);
    }
    g_sh_rc = 0;
}

int cl_secure_heap_init(size_t bytes, cl_err *err)
{
    atomic_store(&g_sh_bytes, bytes); /* read by the first caller's once-function */
    pthread_once(&g_sh_once, secure_heap_setup);
    if (g_sh_rc != 0 && err)
        *err = g_sh_err;
    return g_sh_rc;
}

size_t cl_secure_heap_used(void) { return CRYPTO_secure_malloc_initialized() ? CRYPTO_secure_used() : 0; }

bool cl_secure_heap_holds(const void *p) { return p && CRYPTO_secure_allocated(p); }
