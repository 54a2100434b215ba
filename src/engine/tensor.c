/* engine/tensor.c — tensors: element types, sizes with overflow checks, allocation, generic
 * element access, and the .npy reader/writer used by `cloister run` and the tests.
 */
#include <ctype.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "engine/internal.h"

const char *cl_engine_dtype_name(cl_engine_dtype dt)
{
    switch (dt) {
    case CL_ENGINE_DT_FLOAT: return "float";
    case CL_ENGINE_DT_UINT8: return "uint8";
    case CL_ENGINE_DT_INT8: return "int8";
    case CL_ENGINE_DT_UINT16: return "uint16";
    case CL_ENGINE_DT_INT16: return "int16";
    case CL_ENGINE_DT_INT32: return "int32";
    case CL_ENGINE_DT_INT64: return "int64";
    case CL_ENGINE_DT_STRING: return "string";
    case CL_ENGINE_DT_BOOL: return "bool";
    case CL_ENGINE_DT_FLOAT16: return "float16";
    case CL_ENGINE_DT_DOUBLE: return "double";
    case CL_ENGINE_DT_UINT32: return "uint32";
    case CL_ENGINE_DT_UINT64: return "uint64";
    default: return "?";
    }
}

size_t cl_engine_dtype_size(cl_engine_dtype dt)
{
    switch (dt) {
    case CL_ENGINE_DT_FLOAT: case CL_ENGINE_DT_INT32: case CL_ENGINE_DT_UINT32: return 4;
    case CL_ENGINE_DT_UINT8: case CL_ENGINE_DT_INT8: case CL_ENGINE_DT_BOOL: return 1;
    case CL_ENGINE_DT_UINT16: case CL_ENGINE_DT_INT16: return 2;
    case CL_ENGINE_DT_INT64: case CL_ENGINE_DT_DOUBLE: case CL_ENGINE_DT_UINT64: return 8;
    default: return 0;
    }
}

bool eng_dtype_supported(cl_engine_dtype dt)
{
    return cl_engine_dtype_size(dt) != 0;
}

bool eng_dtype_is_float(cl_engine_dtype dt)
{
    return dt == CL_ENGINE_DT_FLOAT || dt == CL_ENGINE_DT_DOUBLE;
}

int64_t eng_dims_numel(const int64_t *dims, int rank)
{
    int64_t n = 1;
    for (int i = 0; i < rank; i++) {
        if (dims[i] < 0)
            return -1;
        if (dims[i] == 0)
            n = 0;
        else if (n > CL_ENGINE_MAX_TENSOR_ELEMS / dims[i])
            return -1;
        else
            n *= dims[i];
    }
    return n > CL_ENGINE_MAX_TENSOR_ELEMS ? -1 : n;
}

int64_t eng_numel(const eng_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

int64_t cl_engine_tensor_numel(const cl_engine_tensor *t)
{
    int64_t n = 1;
    for (int i = 0; i < t->rank; i++)
        n *= t->dims[i];
    return n;
}

void cl_engine_tensor_release(cl_engine_tensor *t)
{
    if (!t)
        return;
    free(t->data);
    memset(t, 0, sizeof *t);
}

/* ---------------------------------------------------------------- buffer pool
 * Tensor buffers are recycled: freed buffers are kept (up to pool_max bytes) and handed out again
 * for the same size, so steady-state runs do not mmap/munmap and page-fault their activations on
 * every operator. Each buffer has a 64-byte header holding its size.
 *
 * Two levels: each thread first keeps up to TCACHE_BUFS buffers (TCACHE_MAX bytes) of its own,
 * without a lock, then the process-wide pool under pool_lock. The thread level exists because the
 * model server runs small models on several event-loop threads at once, where one shared lock for
 * every operator's buffers was contended (futex waits in the REST benchmark's profile). A thread's
 * own buffers are freed when it exits; eng_buf_pool_flush empties the shared pool and the calling
 * thread's own. The shared pool keeps at most pool_max bytes (cl_engine_set_pool_limit). Thread-safe.
 *
 * A run's working memory is measured here too (eng_run_mem_*): while a run is active on a thread,
 * every buffer it takes is counted (its header says so) until it is given back, and the high-water
 * mark is the run's peak: activations, kernel scratchpads and the output copies (eng_run_mem_add). */
#define POOL_HDR 64
#define POOL_MAX_DEFAULT ((size_t)1 << 30)
/* Buffers from this size up are mapped from the kernel directly (and unmapped when the pool does
 * not keep them), not taken from malloc's heap: activations of varying sizes (a batch of another
 * size) never fit the holes the last ones left, so the heap grew by every new size (measured:
 * ResNet-18 at batches 1..48 in turn, 2.9 GB of heap, 30 MB of it in use, with glibc's default
 * settings; 5.7 GB with cloister's). A mapping comes back zero-filled and page-faults in on first
 * use, which the pool spares steady-state runs. */
#define MAP_MIN ((size_t)1 << 20)
#define TCACHE_BUFS 32
#define TCACHE_MAX ((size_t)8 << 20)

typedef struct pool_buf {
    size_t size; /* of the data; mapped buffers (size >= MAP_MIN) span map_len(size) from `color` bytes before */
    struct pool_buf *next;
    unsigned color;
    bool counted; /* taken by the measured run active on this thread, not given back yet */
} pool_buf;

static pthread_mutex_t pool_lock = PTHREAD_MUTEX_INITIALIZER;
static pool_buf *pool_head;
static size_t pool_bytes;
static size_t pool_max = POOL_MAX_DEFAULT; /* under pool_lock */

typedef struct run_mem {
    bool active;
    size_t live, peak;
} run_mem;
static _Thread_local run_mem rm;

static void run_mem_take(size_t n)
{
    rm.live += n;
    if (rm.live > rm.peak)
        rm.peak = rm.live;
}

void eng_run_mem_begin(void)
{
    rm = (run_mem){.active = true};
}

void eng_run_mem_add(size_t n)
{
    if (rm.active)
        run_mem_take(n);
}

size_t eng_run_mem_end(void)
{
    size_t peak = rm.peak;
    rm = (run_mem){0};
    return peak;
}

typedef struct tcache {
    pool_buf *head;
    size_t bytes;
    unsigned n;
    bool registered; /* with tcache_key, so the thread's exit frees its buffers */
} tcache;
static _Thread_local tcache tc;
static pthread_key_t tcache_key;
static pthread_once_t tcache_once = PTHREAD_ONCE_INIT;
static bool tcache_key_ok;

/* A mapping is one page longer than its buffer needs, and the buffer starts at a rotating multiple of
 * 64 bytes into it: buffers that all began at the same offset in a page compete for the same cache
 * sets (a convolution reads one while it writes another at equal offsets). */
static size_t map_len(size_t size)
{
    size_t page = 4096;
    return ((size + POOL_HDR + page - 1) & ~(page - 1)) + page;
}

static atomic_uint map_colors;

static void buf_release(pool_buf *b)
{
    if (b->size >= MAP_MIN)
        munmap((char *)b - b->color, map_len(b->size));
    else
        free(b);
}

static void free_list(pool_buf *b)
{
    while (b) {
        pool_buf *nx = b->next;
        buf_release(b);
        b = nx;
    }
}

static void tcache_exit(void *arg)
{
    tcache *t = arg;
    free_list(t->head);
    t->head = NULL;
    t->bytes = 0;
    t->n = 0;
}

static void tcache_key_init(void)
{
    tcache_key_ok = pthread_key_create(&tcache_key, tcache_exit) == 0;
}

/* Takes a buffer of exactly `size` from a list; NULL when there is none. */
static pool_buf *take(pool_buf **head, size_t size)
{
    for (pool_buf **pp = head; *pp; pp = &(*pp)->next)
        if ((*pp)->size == size) {
            pool_buf *b = *pp;
            *pp = b->next;
            return b;
        }
    return NULL;
}

/* The buffer handed out, counted when a measured run is active on this thread. */
static void *buf_out(pool_buf *b)
{
    b->counted = rm.active;
    if (rm.active)
        run_mem_take(b->size);
    return (char *)b + POOL_HDR;
}

void *eng_buf_alloc(size_t size)
{
    size = (size + 63) & ~(size_t)63;
    if (!size)
        size = 64;
    pool_buf *b = take(&tc.head, size);
    if (b) {
        tc.bytes -= size;
        tc.n--;
        return buf_out(b);
    }
    pthread_mutex_lock(&pool_lock);
    if ((b = take(&pool_head, size)) != NULL)
        pool_bytes -= size;
    pthread_mutex_unlock(&pool_lock);
    if (b)
        return buf_out(b);
    if (size > SIZE_MAX - POOL_HDR)
        return NULL;
    if (size >= MAP_MIN) {
        void *p = size <= SIZE_MAX - 2 * 4096 ? mmap(NULL, map_len(size), PROT_READ | PROT_WRITE,
                                                     MAP_PRIVATE | MAP_ANONYMOUS, -1, 0)
                                              : MAP_FAILED;
        if (p == MAP_FAILED)
            return NULL;
        unsigned color = (atomic_fetch_add(&map_colors, 1) * 7u % 63u) * 64u;
        b = (pool_buf *)((char *)p + color);
        b->color = color;
    } else if (!(b = aligned_alloc(64, size + POOL_HDR))) {
        return NULL;
    }
    b->size = size;
    return buf_out(b);
}

void eng_buf_free(void *p)
{
    if (!p)
        return;
    pool_buf *b = (pool_buf *)((char *)p - POOL_HDR);
    if (b->counted && rm.active)
        rm.live -= b->size < rm.live ? b->size : rm.live;
    b->counted = false;
    if (tc.n < TCACHE_BUFS && b->size <= TCACHE_MAX - tc.bytes) {
        if (!tc.registered) {
            pthread_once(&tcache_once, tcache_key_init);
            tc.registered = tcache_key_ok && pthread_setspecific(tcache_key, &tc) == 0;
        }
        if (tc.registered) {
            b->next = tc.head;
            tc.head = b;
            tc.bytes += b->size;
            tc.n++;
            return;
        }
    }
    pthread_mutex_lock(&pool_lock);
    if (pool_bytes + b->size <= pool_max) {
        b->next = pool_head;
        pool_head = b;
        pool_bytes += b->size;
        b = NULL;
    }
    pthread_mutex_unlock(&pool_lock);
    if (b)
        buf_release(b);
}

void eng_buf_pool_flush(void)
{
    tcache_exit(&tc);
    pthread_mutex_lock(&pool_lock);
    pool_buf *b = pool_head;
    pool_head = NULL;
    pool_bytes = 0;
    pthread_mutex_unlock(&pool_lock);
    free_list(b);
}

void cl_engine_release_memory(void)
{
    eng_buf_pool_flush();
}

void cl_engine_set_pool_limit(size_t bytes)
{
    pool_buf *drop = NULL;
    pthread_mutex_lock(&pool_lock);
    pool_max = bytes;
    while (pool_head && pool_bytes > pool_max) {
        pool_buf *b = pool_head;
        pool_head = b->next;
        pool_bytes -= b->size;
        b->next = drop;
        drop = b;
    }
    pthread_mutex_unlock(&pool_lock);
    free_list(drop);
}

static int tensor_alloc(eng_tensor *t, bool secure, cl_err *err);

int eng_tensor_alloc(eng_tensor *t, cl_err *err)
{
    return tensor_alloc(t, false, err);
}

int eng_tensor_alloc_const(eng_tensor *t, cl_err *err)
{
    return tensor_alloc(t, true, err);
}

static int tensor_alloc(eng_tensor *t, bool secure, cl_err *err)
{
    if (t->rank < 0 || t->rank > CL_ENGINE_MAX_RANK)
        return cl_err_set(err, CL_E_UNSUPPORTED, "tensor rank %d is not supported", t->rank);
    int64_t n = eng_dims_numel(t->dims, t->rank);
    size_t es = cl_engine_dtype_size(t->dtype);
    if (n < 0)
        return cl_err_set(err, CL_E_FORMAT, "tensor %s is too large (more than %lld elements)",
                          eng_dims_str(t->dims, t->rank, (char[128]){0}, 128), (long long)CL_ENGINE_MAX_TENSOR_ELEMS);
    if (!es)
        return cl_err_set(err, CL_E_UNSUPPORTED, "data type %s is not supported", cl_engine_dtype_name(t->dtype));
    t->nbytes = (size_t)n * es;
    if (t->nbytes > CL_ENGINE_MAX_TENSOR_BYTES)
        return cl_err_set(err, CL_E_FORMAT, "tensor %s of %s needs %zu bytes (more than the %zu allowed)",
                          eng_dims_str(t->dims, t->rank, (char[128]){0}, 128), cl_engine_dtype_name(t->dtype),
                          t->nbytes, CL_ENGINE_MAX_TENSOR_BYTES);
    size_t cap = (t->nbytes + 63) & ~(size_t)63;
    if (!cap)
        cap = 64;
    if (secure) {
        t->data = cl_secmem_alloc(cap, err); /* zero-filled */
        if (!t->data)
            return -1;
    } else {
        t->data = eng_buf_alloc(cap);
        if (!t->data)
            return cl_err_set(err, CL_E_NOMEM, "out of memory allocating a %zu-byte tensor", t->nbytes);
        memset(t->data, 0, cap);
    }
    t->secure = secure;
    t->owned = true;
    t->blocked = false;
    t->borrowed = false;
    return 0;
}

void eng_tensor_free(eng_tensor *t)
{
    if (t->owned && t->secure)
        cl_secmem_free(t->data);
    else if (t->owned)
        eng_buf_free(t->data);
    t->data = NULL;
    t->owned = false;
    t->secure = false;
    t->borrowed = false;
}

double eng_get_f(const eng_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case CL_ENGINE_DT_FLOAT: return ((const float *)t->data)[i];
    case CL_ENGINE_DT_DOUBLE: return ((const double *)t->data)[i];
    case CL_ENGINE_DT_UINT8: case CL_ENGINE_DT_BOOL: return ((const uint8_t *)t->data)[i];
    case CL_ENGINE_DT_INT8: return ((const int8_t *)t->data)[i];
    case CL_ENGINE_DT_UINT16: return ((const uint16_t *)t->data)[i];
    case CL_ENGINE_DT_INT16: return ((const int16_t *)t->data)[i];
    case CL_ENGINE_DT_INT32: return ((const int32_t *)t->data)[i];
    case CL_ENGINE_DT_UINT32: return ((const uint32_t *)t->data)[i];
    case CL_ENGINE_DT_INT64: return (double)((const int64_t *)t->data)[i];
    case CL_ENGINE_DT_UINT64: return (double)((const uint64_t *)t->data)[i];
    default: return 0;
    }
}

int64_t eng_get_i(const eng_tensor *t, int64_t i)
{
    switch (t->dtype) {
    case CL_ENGINE_DT_INT64: return ((const int64_t *)t->data)[i];
    case CL_ENGINE_DT_UINT64: return (int64_t)((const uint64_t *)t->data)[i];
    case CL_ENGINE_DT_FLOAT: case CL_ENGINE_DT_DOUBLE: {
        double d = eng_get_f(t, i);
        if (!(d == d))
            return 0;
        if (d >= 9.2e18)
            return INT64_MAX;
        if (d <= -9.2e18)
            return INT64_MIN;
        return (int64_t)d;
    }
    default: return (int64_t)eng_get_f(t, i);
    }
}

void eng_set_f(eng_tensor *t, int64_t i, double v)
{
    switch (t->dtype) {
    case CL_ENGINE_DT_FLOAT: ((float *)t->data)[i] = (float)v; break;
    case CL_ENGINE_DT_DOUBLE: ((double *)t->data)[i] = v; break;
    case CL_ENGINE_DT_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
    default: {
        int64_t x;
        if (!(v == v))
            x = 0;
        else if (v >= 9.2e18)
            x = INT64_MAX;
        else if (v <= -9.2e18)
            x = INT64_MIN;
        else
            x = (int64_t)v;
        eng_set_i(t, i, x);
    }
    }
}

void eng_set_i(eng_tensor *t, int64_t i, int64_t v)
{
    switch (t->dtype) {
    case CL_ENGINE_DT_FLOAT: ((float *)t->data)[i] = (float)v; break;
    case CL_ENGINE_DT_DOUBLE: ((double *)t->data)[i] = (double)v; break;
    case CL_ENGINE_DT_UINT8: ((uint8_t *)t->data)[i] = (uint8_t)v; break;
    case CL_ENGINE_DT_BOOL: ((uint8_t *)t->data)[i] = v != 0; break;
    case CL_ENGINE_DT_INT8: ((int8_t *)t->data)[i] = (int8_t)v; break;
    case CL_ENGINE_DT_UINT16: ((uint16_t *)t->data)[i] = (uint16_t)v; break;
    case CL_ENGINE_DT_INT16: ((int16_t *)t->data)[i] = (int16_t)v; break;
    case CL_ENGINE_DT_INT32: ((int32_t *)t->data)[i] = (int32_t)v; break;
    case CL_ENGINE_DT_UINT32: ((uint32_t *)t->data)[i] = (uint32_t)v; break;
    case CL_ENGINE_DT_INT64: ((int64_t *)t->data)[i] = v; break;
    case CL_ENGINE_DT_UINT64: ((uint64_t *)t->data)[i] = (uint64_t)v; break;
    default: break;
    }
}

const char *eng_dims_str(const int64_t *dims, int rank, char *buf, size_t len)
{
    size_t o = 0;
    o += (size_t)snprintf(buf + o, len - o, "[");
    for (int i = 0; i < rank && o < len; i++)
        o += (size_t)snprintf(buf + o, len - o, i ? ",%lld" : "%lld", (long long)dims[i]);
    if (o < len)
        snprintf(buf + o, len - o, "]");
    return buf;
}

/* ---------------------------------------------------------------- .npy */

static const struct {
    const char *descr;
    cl_engine_dtype dt;
} npy_types[] = {
    {"f4", CL_ENGINE_DT_FLOAT}, {"f8", CL_ENGINE_DT_DOUBLE}, {"i1", CL_ENGINE_DT_INT8}, {"i2", CL_ENGINE_DT_INT16}, {"i4", CL_ENGINE_DT_INT32},
    {"i8", CL_ENGINE_DT_INT64}, {"u1", CL_ENGINE_DT_UINT8}, {"u2", CL_ENGINE_DT_UINT16}, {"u4", CL_ENGINE_DT_UINT32}, {"u8", CL_ENGINE_DT_UINT64},
    {"b1", CL_ENGINE_DT_BOOL},
};

int cl_engine_npy_parse(const uint8_t *buf, size_t len, cl_engine_tensor *out, cl_err *err)
{
    memset(out, 0, sizeof *out);
    if (len < 10 || memcmp(buf, "\x93NUMPY", 6) != 0)
        return cl_err_set(err, CL_E_FORMAT, "not a .npy file (bad magic)");
    size_t hlen, off;
    if (buf[6] == 1) {
        hlen = buf[8] | (size_t)buf[9] << 8;
        off = 10;
    } else if (buf[6] == 2 || buf[6] == 3) {
        if (len < 12)
            return cl_err_set(err, CL_E_TRUNCATED, ".npy header is truncated");
        hlen = buf[8] | (size_t)buf[9] << 8 | (size_t)buf[10] << 16 | (size_t)buf[11] << 24;
        off = 12;
    } else {
        return cl_err_set(err, CL_E_VERSION, ".npy format version %u is not supported", buf[6]);
    }
    if (hlen > len - off || hlen > 65536)
        return cl_err_set(err, CL_E_TRUNCATED, ".npy header is truncated");
    char hdr[65537];
    memcpy(hdr, buf + off, hlen);
    hdr[hlen] = 0;
    const char *d = strstr(hdr, "'descr'");
    const char *f = strstr(hdr, "'fortran_order'");
    const char *s = strstr(hdr, "'shape'");
    if (!d || !f || !s)
        return cl_err_set(err, CL_E_FORMAT, ".npy header lacks descr, fortran_order or shape");
    d = strchr(d + 7, '\'');
    if (!d || strlen(d) < 5)
        return cl_err_set(err, CL_E_FORMAT, ".npy header has a malformed descr");
    char order = d[1];
    cl_engine_dtype dt = CL_ENGINE_DT_UNDEFINED;
    for (size_t i = 0; i < CL_ARRAY_LEN(npy_types); i++)
        if (strncmp(d + 2, npy_types[i].descr, 2) == 0 && d[4] == '\'')
            dt = npy_types[i].dt;
    if (dt == CL_ENGINE_DT_UNDEFINED || (order != '<' && order != '|'))
        return cl_err_set(err, CL_E_UNSUPPORTED, ".npy dtype '%.8s' is not supported (use little-endian float32, "
                          "float64, int8..int64, uint8..uint64 or bool)", d + 1);
    f = strchr(f + 15, ':');
    while (f && isspace((unsigned char)*++f))
        ;
    if (!f || strncmp(f, "False", 5) != 0)
        return cl_err_set(err, CL_E_UNSUPPORTED, ".npy array is in Fortran order; save it in C order");
    s = strchr(s + 7, '(');
    if (!s)
        return cl_err_set(err, CL_E_FORMAT, ".npy header has a malformed shape");
    s++;
    int rank = 0;
    int64_t dims[CL_ENGINE_MAX_RANK];
    for (;;) {
        while (isspace((unsigned char)*s) || *s == ',')
            s++;
        if (*s == ')')
            break;
        if (!isdigit((unsigned char)*s))
            return cl_err_set(err, CL_E_FORMAT, ".npy header has a malformed shape");
        if (rank == CL_ENGINE_MAX_RANK)
            return cl_err_set(err, CL_E_UNSUPPORTED, ".npy array has more than %d dimensions", CL_ENGINE_MAX_RANK);
        char *e;
        long long v = strtoll(s, &e, 10);
        if (v < 0 || v > CL_ENGINE_MAX_TENSOR_ELEMS)
            return cl_err_set(err, CL_E_FORMAT, ".npy dimension %lld is out of range", v);
        dims[rank++] = v;
        s = e;
    }
    int64_t n = eng_dims_numel(dims, rank);
    if (n < 0)
        return cl_err_set(err, CL_E_FORMAT, ".npy array is too large");
    size_t nb = (size_t)n * cl_engine_dtype_size(dt);
    size_t have = len - off - hlen;
    if (have < nb)
        return cl_err_set(err, CL_E_TRUNCATED, ".npy data is truncated (%zu of %zu bytes)", have, nb);
    if (have > nb)
        return cl_err_set(err, CL_E_TRAILING, ".npy file has %zu bytes after the array", have - nb);
    out->data = malloc(nb ? nb : 1);
    if (!out->data)
        return cl_err_nomem(err);
    memcpy(out->data, buf + off + hlen, nb);
    out->dtype = dt;
    out->rank = rank;
    memcpy(out->dims, dims, sizeof(int64_t) * (size_t)rank);
    out->nbytes = nb;
    return 0;
}

int cl_engine_npy_write(const cl_engine_tensor *t, uint8_t **out, size_t *out_len, cl_err *err)
{
    const char *descr = NULL;
    for (size_t i = 0; i < CL_ARRAY_LEN(npy_types); i++)
        if (npy_types[i].dt == t->dtype)
            descr = npy_types[i].descr;
    if (!descr)
        return cl_err_set(err, CL_E_UNSUPPORTED, "cannot write %s tensors as .npy", cl_engine_dtype_name(t->dtype));
    char shape[256] = "";
    size_t o = 0;
    for (int i = 0; i < t->rank; i++)
        o += (size_t)snprintf(shape + o, sizeof shape - o, "%lld,%s", (long long)t->dims[i],
                              i + 1 < t->rank ? " " : "");
    if (t->rank > 1)
        shape[o - 1] = 0; /* numpy writes (1, 2) but (3,) */
    char dict[400];
    int dl = snprintf(dict, sizeof dict, "{'descr': '%c%s', 'fortran_order': False, 'shape': (%s), }",
                      descr[0] == 'f' || descr[1] != '1' ? '<' : '|', descr, shape);
    size_t hl = (size_t)dl + 1;
    size_t total_h = 10 + hl;
    size_t pad = (64 - total_h % 64) % 64;
    hl += pad;
    size_t len = 10 + hl + t->nbytes;
    uint8_t *b = malloc(len);
    if (!b)
        return cl_err_nomem(err);
    memcpy(b, "\x93NUMPY\x01\x00", 8);
    b[8] = (uint8_t)(hl & 0xff);
    b[9] = (uint8_t)(hl >> 8);
    memcpy(b + 10, dict, (size_t)dl);
    memset(b + 10 + dl, ' ', pad);
    b[10 + hl - 1] = '\n';
    if (t->nbytes)
        memcpy(b + 10 + hl, t->data, t->nbytes);
    *out = b;
    *out_len = len;
    return 0;
}
