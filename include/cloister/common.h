/* cloister/common.h — the interface of the common module: errors, logging, secure memory (and OpenSSL's
 * secure heap), process hygiene, file helpers, hex and argument parsing. Every other module of libcloister builds on these.
 *
 * Conventions used across libcloister:
 *   - Fallible functions return 0 on success and -1 on failure, and fill a caller-owned `cl_err`
 *     (which may be NULL when the caller does not care). The message says what failed and, where
 *     possible, what the user can do about it.
 *   - Names are prefixed `cl_<module>_`.
 *   - Unless stated otherwise a function is thread-safe as long as threads do not share the objects
 *     passed to it.
 */
#ifndef CLOISTER_COMMON_H
#define CLOISTER_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CL_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define CL_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

/* CL_ASSERT(cond): an invariant of the code (never a check of input, which gets a cl_err). Active when
 * CL_ASSERTS is 1 (the build defines it for Debug and for the sanitizer build): a false condition
 * prints file:line and the condition to stderr and aborts. Otherwise compiled out: cond is type-checked
 * but not evaluated, so it must have no side effects. */
#if defined(CL_ASSERTS) && CL_ASSERTS
#define CL_ASSERT(cond) ((cond) ? (void)0 : cl_assert_fail(__FILE__, __LINE__, #cond))
#else
#define CL_ASSERT(cond) ((void)sizeof(!(cond)))
#endif
/* Reports a failed CL_ASSERT and aborts. */
void cl_assert_fail(const char *file, int line, const char *cond) __attribute__((noreturn));

/* ---------------------------------------------------------------- errors */

typedef enum cl_status {
    CL_OK = 0,
    CL_E_INVALID,     /* bad argument or input value */
    CL_E_IO,          /* a file or socket operation failed */
    CL_E_NOMEM,       /* allocation or memory locking failed */
    CL_E_EXISTS,      /* refused to overwrite an existing file */
    CL_E_FORMAT,      /* input is not in the expected format */
    CL_E_VERSION,     /* format version not supported */
    CL_E_KEY,         /* wrong key */
    CL_E_KEY_ID,      /* key id does not match */
    CL_E_AUTH,        /* authentication (MAC/tag/signature) failed */
    CL_E_TRUNCATED,   /* input ends early */
    CL_E_TRAILING,    /* input has data after its end */
    CL_E_CRYPTO,      /* the crypto library failed */
    CL_E_UNSUPPORTED, /* feature or operator not supported */
    CL_E_DENIED,      /* a policy refused the request */
    CL_E_INTERNAL,    /* a bug: please report */
    CL_E_EXPIRED,     /* a certificate, CRL or signed document is not valid at the given time */
} cl_status;

#define CL_ERR_MSG_MAX 512

typedef struct cl_err {
    cl_status code;
    char msg[CL_ERR_MSG_MAX];
} cl_err;

/* Records `code` and a formatted message in `err` (if non-NULL). Always returns -1 so callers can
 * write `return cl_err_set(err, CL_E_IO, "...")`. */
int cl_err_set(cl_err *err, cl_status code, const char *fmt, ...) CL_PRINTF(3, 4);
/* cl_err_set(err, CL_E_NOMEM, "out of memory"): an allocation failed. Returns -1. */
int cl_err_nomem(cl_err *err);
/* Like cl_err_set, and appends ": <strerror(errno_value)>". */
int cl_err_errno(cl_err *err, cl_status code, int errno_value, const char *fmt, ...) CL_PRINTF(4, 5);
/* Like cl_err_set, and appends the first queued OpenSSL error (and clears OpenSSL's queue). */
int cl_err_ssl(cl_err *err, cl_status code, const char *fmt, ...) CL_PRINTF(3, 4);
/* Prepends "<prefix>: " to an existing message (context while unwinding). Returns -1. */
int cl_err_prefix(cl_err *err, const char *fmt, ...) CL_PRINTF(2, 3);
void cl_err_clear(cl_err *err);
/* A short stable name for a status, e.g. "auth". */
const char *cl_status_name(cl_status code);

/* ---------------------------------------------------------------- logging */

typedef enum cl_log_level {
    CL_LOG_DEBUG = 0,
    CL_LOG_INFO,
    CL_LOG_WARN,
    CL_LOG_ERROR,
    CL_LOG_OFF,
} cl_log_level;

/* Log lines go to stderr, one line each, never cut and never interleaved with another thread's.
 * Two formats, chosen process-wide:
 *   text (default)  "<time> <level> [<module>] message key=value key=\"quoted value\" ..."
 *   json            {"time":"<time>","level":"<level>","module":"<module>","msg":"message",key:value,...}
 * <time> is RFC 3339 UTC with milliseconds (2026-12-03T05:33:46.123Z). The level starts at INFO, or
 * at the value of CLOISTER_LOG (debug|info|warn|error|off); the format at text, or at the value of
 * CLOISTER_LOG_FORMAT (text|json). An unknown value in either is ignored with one warning naming
 * the valid ones (at the first log line, or when the CLI has parsed its options). Setting the level
 * or format explicitly (--log-level, --log-format) overrides the environment. Thread-safe. */
void cl_log_set_level(cl_log_level level);
cl_log_level cl_log_get_level(void);
/* Parses "debug", "info", ... Returns -1 on an unknown name. */
int cl_log_parse_level(const char *name, cl_log_level *out);
typedef enum cl_log_format { CL_LOG_TEXT = 0, CL_LOG_JSON } cl_log_format;
void cl_log_set_format(cl_log_format format);
cl_log_format cl_log_get_format(void);
/* Parses "text" or "json". Returns -1 on an unknown name. */
int cl_log_parse_format(const char *name, cl_log_format *out);
void cl_log(cl_log_level level, const char *module, const char *fmt, ...) CL_PRINTF(3, 4);

/* Structured fields of a log line: in JSON, members after "msg" (strings escaped by jansson, bytes
 * that are not UTF-8 replaced by '?'; numbers as numbers); in text, key=value after the message,
 * values quoted with \" \\ \n \t \xNN escapes when they hold anything but printable ASCII without
 * spaces, quotes or '='. Keys are the caller's constants (not "time", "level", "module", "msg"). A
 * string field whose value is NULL is left out. */
typedef enum cl_log_field_type { CL_LOGF_STR, CL_LOGF_INT, CL_LOGF_UINT, CL_LOGF_REAL } cl_log_field_type;
typedef struct cl_log_field {
    const char *key;
    cl_log_field_type type;
    union {
        const char *s;
        long long i;
        unsigned long long u;
        double d;
    } v;
} cl_log_field;
#define CL_LOGF_S(k, val) ((cl_log_field){.key = (k), .type = CL_LOGF_STR, .v.s = (val)})
#define CL_LOGF_I(k, val) ((cl_log_field){.key = (k), .type = CL_LOGF_INT, .v.i = (long long)(val)})
#define CL_LOGF_U(k, val) ((cl_log_field){.key = (k), .type = CL_LOGF_UINT, .v.u = (unsigned long long)(val)})
#define CL_LOGF_R(k, val) ((cl_log_field){.key = (k), .type = CL_LOGF_REAL, .v.d = (double)(val)})
/* cl_log with fields. */
void cl_log_fields(cl_log_level level, const char *module, const cl_log_field *fields, size_t n_fields,
                   const char *fmt, ...) CL_PRINTF(5, 6);

/* A log of its own (the serve module's access log): lines in the process-wide format, written
 * whatever the level, each with one write(2) to a file opened for appending (so `logrotate
 * copytruncate` works and lines from several threads and processes never interleave) or to stderr.
 * Thread-safe; close it only when no thread writes to it any more. */
typedef struct cl_log_sink cl_log_sink;
/* path "stderr" or "-": standard error; otherwise a file, created with mode 0640 if missing and
 * appended to. Fails with an actionable message (a directory, no permission, ...). */
cl_log_sink *cl_log_sink_open(const char *path, cl_err *err);
/* Opens the sink's path again (log rotation: the file was renamed or removed) and swaps it in
 * atomically: safe while other threads write (each line goes whole to the old file or the new one).
 * Nothing to do for stderr. On failure the sink keeps writing to the file it had. */
int cl_log_sink_reopen(cl_log_sink *s, cl_err *err);
void cl_log_sink_close(cl_log_sink *s);
void cl_log_sink_write(cl_log_sink *s, cl_log_level level, const char *module, const cl_log_field *fields,
                       size_t n_fields, const char *fmt, ...) CL_PRINTF(6, 7);
#define CL_DEBUG(mod, ...) cl_log(CL_LOG_DEBUG, mod, __VA_ARGS__)
#define CL_INFO(mod, ...) cl_log(CL_LOG_INFO, mod, __VA_ARGS__)
#define CL_WARN(mod, ...) cl_log(CL_LOG_WARN, mod, __VA_ARGS__)
#define CL_ERROR(mod, ...) cl_log(CL_LOG_ERROR, mod, __VA_ARGS__)

/* ---------------------------------------------------------------- secure memory */

/* Secure buffers hold secrets and decrypted models. They are page-aligned anonymous mappings that
 * are mlock()ed (never swapped), excluded from core dumps (MADV_DONTDUMP), not inherited by child
 * processes (MADV_DONTFORK), and zeroized before they are unmapped.
 *
 * If the memory cannot be locked (RLIMIT_MEMLOCK too low and no CAP_IPC_LOCK) allocation fails with
 * CL_E_NOMEM and a message saying how to fix it, unless cl_secmem_set_require_lock(false) was
 * called, in which case a warning is logged once and the memory stays unlocked.
 * All functions are thread-safe. */
void *cl_secmem_alloc(size_t size, cl_err *err);
/* Zeroizes and unmaps. Accepts NULL. */
void cl_secmem_free(void *p);
/* Usable size of a block from cl_secmem_alloc. */
size_t cl_secmem_size(const void *p);
/* Whether the block is locked in RAM. */
bool cl_secmem_is_locked(const void *p);
void cl_secmem_set_require_lock(bool require);
/* OpenSSL's secure heap (CRYPTO_secure_malloc_init): once initialised, OpenSSL keeps private key
 * material there (EC and RSA private components, X25519 keys, PEM/DER buffers of keys it decodes), in
 * one mmap()ed arena that is mlock()ed, excluded from core dumps and fenced by guard pages. `bytes` is
 * rounded up to a power of two; it counts against RLIMIT_MEMLOCK like cl_secmem (whose soft limit is
 * raised to the hard one first). When the arena cannot be locked this fails with CL_E_NOMEM and the
 * same advice as cl_secmem_alloc, unless cl_secmem_set_require_lock(false) was called (then it warns
 * and keeps the unlocked arena). Once per process: later calls return the first call's result. */
int cl_secure_heap_init(size_t bytes, cl_err *err);
/* Bytes of the secure heap in use (0 when it is not initialised). */
size_t cl_secure_heap_used(void);
/* Whether p points into the secure heap. */
bool cl_secure_heap_holds(const void *p);
/* Zeroizes memory in a way the compiler cannot remove. */
void cl_memzero(void *p, size_t n);
/* Constant-time comparison; returns 0 when equal. */
int cl_memeq_ct(const void *a, const void *b, size_t n);

/* ---------------------------------------------------------------- network */

/* True when `host` is an IPv4 or IPv6 address literal rather than a name. */
bool cl_net_is_ip(const char *host);
/* The one HOST:PORT parser (command lines, key server lists, --listen). Splits "HOST:PORT" or
 * "[IPv6]:PORT" (an IPv6 address needs its brackets: "::1:80" is refused) and copies the host without
 * brackets into `host` (size bytes; longer is an error). With default_port >= 0 ":PORT" may be left out
 * and means default_port; with default_port < 0 it is required. Ports are 1..65535, and 0 too when
 * allow_port0 (a listener's "any free port"). Errors are CL_E_INVALID and quote `s`. */
int cl_net_split_hostport(const char *s, char *host, size_t size, int *port, int default_port, bool allow_port0,
                          cl_err *err);
/* Receive and send timeouts of `ms` and TCP_NODELAY on a connected TCP socket: blocking I/O then
 * fails (EAGAIN) after the timeout instead of hanging. */
void cl_net_set_timeouts(int fd, int ms);
/* Connects to host:port, trying every address getaddrinfo gives, each within timeout_ms, and returns
 * a blocking socket (close-on-exec) with cl_net_set_timeouts(timeout_ms) applied. On failure returns
 * -1 with err set ("cannot resolve 'HOST': ..." or "cannot connect to HOST:PORT: <reason>") and, when
 * sys_errno is not NULL, the last connect error there (0 when the name did not resolve). A name that
 * does not exist (EAI_NONAME, EAI_NODATA) is CL_E_INVALID; a resolver that could not answer
 * (EAI_AGAIN, ...) and connection failures are CL_E_IO. */
int cl_net_connect(const char *host, int port, int timeout_ms, int *sys_errno, cl_err *err);
typedef struct cl_stop cl_stop; /* below */
/* Like cl_net_connect, but the name lookup and the connect also end (CL_E_IO "stopped ...", *sys_errno
 * ECANCELED) when `stop` (may be NULL) is raised, and the socket is returned NON-blocking, without
 * socket timeouts, for callers that wait with cl_net_wait. With a token, the lookup runs on a detached
 * thread of its own (getaddrinfo cannot be interrupted), which a stop leaves to finish by itself. */
int cl_net_connect_stop(const char *host, int port, int timeout_ms, const cl_stop *stop, int *sys_errno,
                        cl_err *err);

/* A stop token: raised once (at shutdown), it ends every wait made through it: cl_stop_sleep,
 * cl_net_wait, cl_net_connect_stop, and the provisioning client's I/O and backoff. Raising is
 * async-signal-safe (a signal handler may call it); the rest is thread-safe. NULL is a token that is
 * never raised. */
cl_stop *cl_stop_new(cl_err *err);
void cl_stop_free(cl_stop *s);
void cl_stop_raise(cl_stop *s);
bool cl_stop_raised(const cl_stop *s);
/* A file descriptor that becomes readable once the token is raised (for poll/event loops); -1 for NULL. */
int cl_stop_fd(const cl_stop *s);
/* Sleeps ms milliseconds, or until the token is raised: true when it was (then at once). */
bool cl_stop_sleep(const cl_stop *s, int ms);
/* Waits up to timeout_ms (-1: no limit) for `events` (POLLIN, POLLOUT) on fd: 1 ready, 0 timed out,
 * -1 the token was raised (or poll failed). */
int cl_net_wait(int fd, short events, int timeout_ms, const cl_stop *stop);

/* ---------------------------------------------------------------- growing strings */

/* A NUL-terminated string that grows as text is appended (request and response bodies, metrics).
 * Start from {0}. An allocation failure sets `failed` and later appends do nothing, so callers check
 * once at the end. Owned by its user; not thread-safe. */
typedef struct cl_strbuf {
    char *p;
    size_t len, cap;
    bool failed;
} cl_strbuf;

void cl_strbuf_put(cl_strbuf *b, const void *s, size_t n);
void cl_strbuf_str(cl_strbuf *b, const char *s);
void cl_strbuf_fmt(cl_strbuf *b, const char *fmt, ...) CL_PRINTF(2, 3);
/* A JSON string literal: quotes, and \\, \" and \u00XX escapes for control characters; each byte that does
 * not belong to a well-formed UTF-8 sequence becomes U+FFFD, so the literal is always valid UTF-8. */
void cl_strbuf_json_string(cl_strbuf *b, const char *s);
/* The string (malloc()ed, NUL-terminated, length in *len when not NULL), or NULL after a failure
 * (then the buffer is freed). */
char *cl_strbuf_take(cl_strbuf *b, size_t *len);

/* ---------------------------------------------------------------- files */

/* Reads a whole regular file, or a pipe to its end (`/dev/stdin`), at most max_size bytes, into
 * malloc()ed memory; *out must be freed by the caller. A trailing NUL is added (not counted in *len)
 * so text can be used as a C string. */
int cl_file_read(const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err);
/* Like cl_file_read, but into secure memory (cl_secmem_free it): for files that hold private keys,
 * so the key's text is never in ordinary heap or a stdio buffer. */
int cl_file_read_secure(const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err);
/* Reads fd to its end (a pipe, or a pseudo-file whose size stat() does not tell), refusing more than
 * max_size bytes; the buffer grows with what arrives. NUL-terminated like cl_file_read; `path` names
 * the source in messages. */
int cl_fd_read_all(int fd, const char *path, size_t max_size, uint8_t **out, size_t *len, cl_err *err);

/* Atomic output: bytes are written to a temporary file beside `path` and only renamed to `path`
 * by cl_atomic_commit(), after fsync. cl_atomic_abort() (or a failed commit) removes the temporary
 * file, so a reader never sees a half-written output. Not thread-safe per object. */
typedef struct cl_atomic_file {
    int fd;
    char *path;     /* final name */
    char *tmp_path; /* temporary name in the same directory */
} cl_atomic_file;

/* `mode` is the final permission (e.g. 0600). Fails with CL_E_EXISTS when `path` exists and
 * `overwrite` is false. */
int cl_atomic_open(cl_atomic_file *f, const char *path, unsigned mode, bool overwrite, cl_err *err);
int cl_atomic_write(cl_atomic_file *f, const void *buf, size_t len, cl_err *err);
int cl_atomic_commit(cl_atomic_file *f, cl_err *err);
void cl_atomic_abort(cl_atomic_file *f);
/* Whole-buffer convenience wrapper around the three calls above. */
int cl_file_write_atomic(const char *path, const void *buf, size_t len, unsigned mode, bool overwrite,
                         cl_err *err);

/* write() and read() loops that handle EINTR and short transfers. read_full returns the number of
 * bytes read (less than len only at end of file) or -1. */
int cl_write_all(int fd, const void *buf, size_t len);
ssize_t cl_read_full(int fd, void *buf, size_t len);
/* Positioned variants (thread-safe on a shared fd: they do not move the file offset). */
int cl_pwrite_all(int fd, const void *buf, size_t len, uint64_t offset);
ssize_t cl_pread_full(int fd, void *buf, size_t len, uint64_t offset);

/* ---------------------------------------------------------------- encoding */

/* The length (1-4) of the UTF-8 sequence at p, of which `left` bytes (at least 1) are there; 0 when it is
 * not one (a stray continuation byte, a truncated or overlong form, a surrogate, above U+10FFFF). */
size_t cl_utf8_seq_len(const unsigned char *p, size_t left);
/* Lower-case hex of `len` bytes into `out` (2*len+1 bytes). */
void cl_hex_encode(const uint8_t *in, size_t len, char *out);
/* Decodes exactly out_len bytes from a hex string of exactly 2*out_len digits. */
int cl_hex_decode(const char *in, size_t in_len, uint8_t *out, size_t out_len);
/* Bytes that decoding `in_len` characters of base64 can yield at most (the size to give `out`). */
size_t cl_b64_decoded_max(size_t in_len);
/* Decodes standard base64 (RFC 4648 section 4: A-Z a-z 0-9 + /, '=' padding) into `out`, which has room
 * for cl_b64_decoded_max(in_len) bytes; *out_len receives the byte count. Strict: no whitespace or
 * other characters, padding optional but correct when present, no non-zero bits after the last byte.
 * Returns 0, or -1 with a message naming the offending position. */
int cl_b64_decode(const char *in, size_t in_len, uint8_t *out, size_t *out_len, cl_err *err);
/* CRC-32C (Castagnoli, as in TFRecord files and LevelDB/TensorBundle tables) of n bytes, continuing
 * from crc (0 to start). Thread-safe. */
uint32_t cl_crc32c(uint32_t crc, const uint8_t *p, size_t n);
/* The masked form those formats store (rotated right by 15, plus 0xa282ead8), and back. */
uint32_t cl_crc32c_mask(uint32_t crc);
uint32_t cl_crc32c_unmask(uint32_t masked);

/* ---------------------------------------------------------------- argument parsing */

/* A declarative option table for CLI subcommands, built on getopt_long. Each option writes into the
 * storage it points to: a `const char **` for CL_ARG_STRING, a `bool *` for CL_ARG_FLAG and
 * CL_ARG_BOOL, a `long *` for CL_ARG_LONG (the string is range-checked against min/max). Repeated
 * string options go into a `cl_strlist *` for CL_ARG_LIST. CL_ARG_FLAG takes no value (`--x`);
 * CL_ARG_BOOL is a boolean as TensorFlow's flag parser takes it: `--x` or `--x=true|false|1|0`.
 * Values follow `--name=VALUE` or `--name VALUE` (not for CL_ARG_BOOL, whose value needs the `=`).
 * An option given twice is an error unless it is a list or `last_wins` is set (the last one counts,
 * as in TensorFlow's parser); with last_wins an empty string value leaves a CL_ARG_STRING option unset
 * (TensorFlow's default for its string flags). `given`, when set, is set to true when it appears. */
typedef enum { CL_ARG_FLAG, CL_ARG_STRING, CL_ARG_LONG, CL_ARG_LIST, CL_ARG_BOOL } cl_arg_kind;

typedef struct cl_strlist {
    const char **items;
    size_t count;
} cl_strlist;

typedef struct cl_opt {
    const char *name;    /* long name, without "--" */
    cl_arg_kind kind;
    void *dest;
    const char *metavar; /* e.g. "FILE"; NULL for flags */
    const char *help;
    bool required;
    long min, max;       /* CL_ARG_LONG only */
    bool last_wins;      /* given twice: the last value counts (else a usage error) */
    bool *given;         /* optional: set to true when the option appears */
} cl_opt;

typedef struct cl_cmd_usage {
    const char *usage;   /* e.g. "cloister seal --key FILE --in FILE --out FILE" */
    const char *summary; /* one paragraph shown by --help */
} cl_cmd_usage;

/* Parses argv (argv[0] is the subcommand name). An unknown option is refused naming it, with the
 * closest option of the table suggested when one is near (a typo). Returns 0 on success, 1 if --help was printed
 * (caller exits 0), -1 on a usage error (message in err; caller exits 2). Positional arguments
 * are refused unless `positional` is non-NULL, in which case they are collected there. Every
 * table also takes --log-level LEVEL and --log-format text|json (the global options of
 * `cloister`, accepted after the command's name too), which set the process-wide log level and
 * format as they are parsed. */
int cl_args_parse(int argc, char **argv, const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts,
                  cl_strlist *positional, cl_err *err);
void cl_args_print_help(const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts);
void cl_strlist_free(cl_strlist *l);

/* ---------------------------------------------------------------- process hygiene */

/* For the long-running commands that hold keys (keyserver, serve), before they load any: the process
 * is made non-dumpable (PR_SET_DUMPABLE 0: no core dump, no ptrace or /proc/PID/mem access by other
 * processes of the same user), core files are disabled (RLIMIT_CORE 0, soft and hard), and OpenSSL's
 * secure heap is set up with `secure_heap_bytes` (cl_secure_heap_init). */
#define CL_SECURE_HEAP_DEFAULT (1u << 20)
int cl_process_harden(size_t secure_heap_bytes, cl_err *err);
/* Raises the soft RLIMIT_NOFILE to the hard limit. Returns the soft limit now in effect (and the one
 * before in *before when not NULL); RLIM_INFINITY is reported as UINT64_MAX. */
uint64_t cl_raise_nofile_limit(uint64_t *before);

/* ---------------------------------------------------------------- time */

/* Monotonic clock in nanoseconds. */
uint64_t cl_now_ns(void);

#ifdef __cplusplus
}
#endif
#endif
