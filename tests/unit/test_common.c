/* test_common.c — the common module: errors, hex, argument tables, secure memory, atomic files. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <linux/capability.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cloister/common.h"
#include "cloister/json.h"
#include "testutil.h"

#include <openssl/crypto.h>

#if defined(__SANITIZE_ADDRESS__)
#define CL_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define CL_TEST_ASAN 1
#endif
#endif
#ifndef CL_TEST_ASAN
#define CL_TEST_ASAN 0
#endif

static void test_errors(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_int_equal(cl_err_set(&err, CL_E_IO, "cannot open '%s'", "x"), -1);
    assert_int_equal(err.code, CL_E_IO);
    assert_string_equal(err.msg, "cannot open 'x'");
    cl_err_prefix(&err, "loading model %d", 3);
    assert_string_equal(err.msg, "loading model 3: cannot open 'x'");
    cl_err_errno(&err, CL_E_IO, 2, "reading");
    assert_string_equal(err.msg, "reading: No such file or directory");
    assert_int_equal(cl_err_set(NULL, CL_E_IO, "ignored"), -1); /* NULL err is allowed */
    assert_int_equal(cl_err_nomem(&err), -1);
    assert_int_equal(err.code, CL_E_NOMEM);
    assert_string_equal(err.msg, "out of memory");
    assert_int_equal(cl_err_nomem(NULL), -1);
    assert_string_equal(cl_status_name(CL_E_AUTH), "auth");
    assert_string_equal(cl_status_name((cl_status)999), "unknown");
    /* a long prefix never overflows */
    char big[2000];
    memset(big, 'p', sizeof big - 1);
    big[sizeof big - 1] = 0;
    cl_err_prefix(&err, "%s", big);
    assert_true(strlen(err.msg) < CL_ERR_MSG_MAX);
    cl_err_clear(&err);
    assert_int_equal(err.code, CL_OK);
    assert_string_equal(err.msg, "");
}

static void test_hex(void **state)
{
    (void)state;
    const uint8_t in[] = {0x00, 0x01, 0xab, 0xff};
    char out[9];
    cl_hex_encode(in, 4, out);
    assert_string_equal(out, "0001abff");
    uint8_t back[4];
    assert_int_equal(cl_hex_decode("0001ABff", 8, back, 4), 0);
    assert_memory_equal(back, in, 4);
    assert_int_equal(cl_hex_decode("0001abf", 7, back, 4), -1);
    assert_int_equal(cl_hex_decode("0001abfz", 8, back, 4), -1);
}

/* Decodes `in` and compares with `want` (NULL: must be refused, with `msg` in the error). */
static void b64_case(const char *in, const char *want, const char *msg)
{
    uint8_t out[64];
    size_t n = 12345;
    cl_err err = {0};
    assert_true(cl_b64_decoded_max(strlen(in)) <= sizeof out);
    int rc = cl_b64_decode(in, strlen(in), out, &n, &err);
    if (want) {
        if (rc != 0)
            fail_msg("'%s' refused: %s", in, err.msg);
        assert_int_equal(n, strlen(want));
        assert_true(n <= cl_b64_decoded_max(strlen(in)));
        assert_memory_equal(out, want, n);
    } else {
        if (rc == 0)
            fail_msg("'%s' accepted", in);
        assert_int_equal(err.code, CL_E_FORMAT);
        if (!strstr(err.msg, msg))
            fail_msg("'%s': message '%s' lacks '%s'", in, err.msg, msg);
    }
}

static void test_strbuf(void **state)
{
    (void)state;
    cl_strbuf b = {0};
    size_t len = 0;
    char *s = cl_strbuf_take(&b, &len); /* nothing appended: an empty string, not NULL */
    assert_non_null(s);
    assert_string_equal(s, "");
    assert_int_equal(len, 0);
    free(s);
    cl_strbuf_str(&b, "{");
    cl_strbuf_json_string(&b, "a\"b\\c\n\x01");
    for (int i = 0; i < 1000; i++) /* grows well past the first allocation */
        cl_strbuf_fmt(&b, ",%d", i);
    char big[700];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = '\0';
    cl_strbuf_fmt(&b, "%s}", big); /* one formatted piece longer than any fixed scratch buffer */
    s = cl_strbuf_take(&b, &len);
    assert_non_null(s);
    assert_int_equal(len, strlen(s));
    assert_memory_equal(s, "{\"a\\\"b\\\\c\\u000a\\u0001\",0,1,2,", 27);
    assert_non_null(strstr(s, ",998,999xxx"));
    assert_int_equal(s[len - 1], '}');
    assert_null(b.p); /* take hands the memory over */
    free(s);
    /* after a failure appends do nothing and take gives NULL (and frees) */
    cl_strbuf_str(&b, "abc");
    b.failed = true;
    cl_strbuf_str(&b, "def");
    assert_int_equal(b.len, 3);
    assert_null(cl_strbuf_take(&b, &len));
    assert_null(b.p);
    /* bytes that are not UTF-8 become U+FFFD; well-formed multibyte sequences are kept as they are */
    cl_strbuf_json_string(&b, "m\xff\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xc3(\xed\xa0\x80\xc0\xaf\xe2\x82");
    s = cl_strbuf_take(&b, &len);
    assert_non_null(s);
    assert_string_equal(s, "\"m\xef\xbf\xbd\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\xef\xbf\xbd("
                           "\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\"");
    free(s);
}

static void test_b64(void **state)
{
    (void)state;
    /* RFC 4648 section 10, padded and unpadded */
    b64_case("", "", NULL);
    b64_case("Zg==", "f", NULL);
    b64_case("Zm8=", "fo", NULL);
    b64_case("Zm9v", "foo", NULL);
    b64_case("Zm9vYg==", "foob", NULL);
    b64_case("Zm9vYmE=", "fooba", NULL);
    b64_case("Zm9vYmFy", "foobar", NULL);
    b64_case("Zg", "f", NULL);
    b64_case("Zm9vYmE", "fooba", NULL);
    b64_case("+/+/", "\xfb\xff\xbf", NULL);
    /* refusals */
    b64_case("Zg=", NULL, "padding");
    b64_case("Zm9vY", NULL, "whole bytes");
    b64_case("Zm=v", NULL, "inside the data");
    b64_case("Zm9v\nYmFy", NULL, "line break");
    b64_case("Zm9v Ymk", NULL, "position 4");
    b64_case("-_8=", NULL, "URL-safe");
    b64_case("Zh==", NULL, "bits set beyond");
    b64_case("Zm9=", NULL, "bits set beyond");
    /* every byte value, against an independent encoder */
    static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    uint8_t raw[256], back[256];
    char enc[345];
    for (int i = 0; i < 256; i++)
        raw[i] = (uint8_t)(255 - i);
    size_t e = 0;
    for (size_t i = 0; i < 256; i += 3) {
        uint32_t v = (uint32_t)raw[i] << 16 | (i + 1 < 256 ? (uint32_t)raw[i + 1] << 8 : 0) |
                     (i + 2 < 256 ? raw[i + 2] : 0);
        enc[e++] = alphabet[v >> 18];
        enc[e++] = alphabet[(v >> 12) & 63];
        enc[e++] = i + 1 < 256 ? alphabet[(v >> 6) & 63] : '=';
        enc[e++] = i + 2 < 256 ? alphabet[v & 63] : '=';
    }
    assert_int_equal(e, 344);
    size_t n = 0;
    assert_true(cl_b64_decoded_max(e) >= 256);
    assert_int_equal(cl_b64_decode(enc, e, back, &n, NULL), 0);
    assert_int_equal(n, 256);
    assert_memory_equal(back, raw, 256);
}

typedef struct parsed {
    const char *name;
    bool flag;
    long n;
    cl_strlist list;
} parsed;

static int parse(parsed *p, int argc, char **argv, cl_strlist *pos, cl_err *err)
{
    memset(p, 0, sizeof *p);
    p->n = 5;
    const cl_opt opts[] = {
        {"name", CL_ARG_STRING, &p->name, "NAME", "a name", true},
        {"flag", CL_ARG_FLAG, &p->flag, NULL, "a flag", false},
        {"n", CL_ARG_LONG, &p->n, "N", "a number", false, 1, 10},
        {"item", CL_ARG_LIST, &p->list, "X", "items", false},
    };
    const cl_cmd_usage usage = {"test --name NAME", NULL};
    return cl_args_parse(argc, argv, &usage, opts, CL_ARRAY_LEN(opts), pos, err);
}

/* TensorFlow-style options: booleans --x / --x=true|false|1|0, last-wins, empty string resets, `given`,
 * and the closest option suggested for a typo */
static void test_args_tf_style(void **state)
{
    (void)state;
    bool b = false, b_given = false;
    const char *s = "preset";
    long n = 0;
    const cl_opt opts[] = {
        {"enable_thing", CL_ARG_BOOL, &b, NULL, "a TF bool", false, 0, 0, true, &b_given},
        {"path", CL_ARG_STRING, &s, "P", "a TF string", false, 0, 0, true, NULL},
        {"count", CL_ARG_LONG, &n, "N", "a TF number", false, 0, 100, true, NULL},
        {"strict", CL_ARG_LONG, &n, "N", "not last-wins", false, 0, 100},
    };
    const cl_cmd_usage usage = {"test", NULL};
    cl_err err = {0};
    struct { const char *arg; int rc; bool want; } bools[] = {
        {"--enable_thing", 0, true}, {"--enable_thing=true", 0, true}, {"--enable_thing=1", 0, true},
        {"--enable_thing=false", 0, false}, {"--enable_thing=0", 0, false}, {"--enable_thing=yes", -1, false},
        {"--enable_thing=", -1, false}, {"--enable_thing=TRUE", -1, false},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bools); i++) {
        char *argv[] = {"cmd", (char *)bools[i].arg, NULL};
        b = !bools[i].want;
        b_given = false;
        assert_int_equal(cl_args_parse(2, argv, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), bools[i].rc);
        if (bools[i].rc == 0) {
            assert_int_equal(b, bools[i].want);
            assert_true(b_given);
        } else {
            assert_non_null(strstr(err.msg, "wants true or false (or 1 or 0)"));
        }
    }
    /* a bool's value needs the '=': the next word is a positional argument, refused here */
    char *spaced[] = {"cmd", "--enable_thing", "false", NULL};
    assert_int_equal(cl_args_parse(3, spaced, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unexpected argument 'false'"));

    char *last[] = {"cmd", "--count=3", "--enable_thing", "--count", "7", "--enable_thing=false", "--path=a",
                    "--path", "b", NULL};
    assert_int_equal(cl_args_parse(9, last, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), 0);
    assert_int_equal(n, 7);
    assert_false(b);
    assert_string_equal(s, "b");
    char *reset[] = {"cmd", "--path=a", "--path=", NULL};
    assert_int_equal(cl_args_parse(3, reset, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), 0);
    assert_null(s);
    char *strict[] = {"cmd", "--strict=1", "--strict=2", NULL};
    assert_int_equal(cl_args_parse(3, strict, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_non_null(strstr(err.msg, "option --strict given more than once"));

    char *typo[] = {"cmd", "--enable_thnig=true", NULL};
    assert_int_equal(cl_args_parse(2, typo, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_string_equal(err.msg, "unknown option '--enable_thnig=true' (did you mean --enable_thing? see --help)");
    char *far[] = {"cmd", "--frobnicate", NULL};
    assert_int_equal(cl_args_parse(2, far, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_string_equal(err.msg, "unknown option '--frobnicate' (see --help)");
    char *shortname[] = {"cmd", "--pth", NULL}; /* 3 letters: one edit allowed */
    assert_int_equal(cl_args_parse(2, shortname, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_string_equal(err.msg, "unknown option '--pth' (did you mean --path? see --help)");
    char *dashes[] = {"cmd", "--", "x", NULL};
    assert_int_equal(cl_args_parse(3, dashes, &usage, opts, CL_ARRAY_LEN(opts), NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unexpected argument 'x'"));
}

static void test_args(void **state)
{
    (void)state;
    parsed p;
    cl_err err = {0};
    char *ok[] = {"cmd", "--name", "a", "--flag", "--n=7", "--item", "x", "--item", "y", NULL};
    assert_int_equal(parse(&p, 9, ok, NULL, &err), 0);
    assert_string_equal(p.name, "a");
    assert_true(p.flag);
    assert_int_equal(p.n, 7);
    assert_int_equal(p.list.count, 2);
    assert_string_equal(p.list.items[1], "y");
    cl_strlist_free(&p.list);

    char *missing[] = {"cmd", "--flag", NULL};
    assert_int_equal(parse(&p, 2, missing, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "missing required option --name"));

    char *unknown[] = {"cmd", "--name", "a", "--bogus", NULL};
    assert_int_equal(parse(&p, 4, unknown, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unknown option '--bogus'"));

    char *novalue[] = {"cmd", "--name", NULL};
    assert_int_equal(parse(&p, 2, novalue, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "needs a value"));

    char *twice[] = {"cmd", "--name", "a", "--name", "b", NULL};
    assert_int_equal(parse(&p, 5, twice, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "more than once"));

    char *range[] = {"cmd", "--name", "a", "--n", "11", NULL};
    assert_int_equal(parse(&p, 5, range, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "from 1 to 10"));
    char *notnum[] = {"cmd", "--name", "a", "--n", "3x", NULL};
    assert_int_equal(parse(&p, 5, notnum, NULL, &err), -1);

    char *empty[] = {"cmd", "--name", "", NULL};
    assert_int_equal(parse(&p, 3, empty, NULL, &err), -1);

    char *positional[] = {"cmd", "--name", "a", "file1", "file2", NULL};
    assert_int_equal(parse(&p, 5, positional, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unexpected argument 'file1'"));
    cl_strlist pos = {0};
    assert_int_equal(parse(&p, 5, positional, &pos, &err), 0);
    assert_int_equal(pos.count, 2);
    assert_string_equal(pos.items[0], "file1");
    cl_strlist_free(&pos);

    /* the global logging options are taken by every table, anywhere among its options */
    char *logopts[] = {"cmd", "--log-level", "warn", "--name", "a", "--log-format=json", NULL};
    assert_int_equal(parse(&p, 6, logopts, NULL, &err), 0);
    assert_int_equal(cl_log_get_level(), CL_LOG_WARN);
    assert_int_equal(cl_log_get_format(), CL_LOG_JSON);
    cl_log_set_level(CL_LOG_INFO);
    cl_log_set_format(CL_LOG_TEXT);
    char *badlevel[] = {"cmd", "--name", "a", "--log-level", "verbose", NULL};
    assert_int_equal(parse(&p, 5, badlevel, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unknown log level 'verbose' (debug, info, warn, error, off)"));
    assert_int_equal(cl_log_get_level(), CL_LOG_INFO);
    char *badformat[] = {"cmd", "--name", "a", "--log-format", "yaml", NULL};
    assert_int_equal(parse(&p, 5, badformat, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "unknown log format 'yaml' (text, json)"));

    /* --help short-circuits, even with required options missing */
    char *help[] = {"cmd", "--help", NULL};
    FILE *saved = stdout;
    stdout = fopen("/dev/null", "w");
    int rc = parse(&p, 2, help, NULL, &err);
    fclose(stdout);
    stdout = saved;
    assert_int_equal(rc, 1);
}

static void test_secmem(void **state)
{
    (void)state;
    cl_err err = {0};
    const size_t sizes[] = {0, 1, 4095, 4096, 4097, 1 << 20};
    for (size_t i = 0; i < CL_ARRAY_LEN(sizes); i++) {
        uint8_t *p = cl_secmem_alloc(sizes[i], &err);
        assert_non_null(p);
        assert_int_equal(cl_secmem_size(p), sizes[i]);
        assert_true(cl_secmem_is_locked(p)); /* the test runs where locking is possible */
        assert_int_equal(((uintptr_t)p) % 4096, 0);
        memset(p, 0xa5, sizes[i]); /* the whole region is usable */
        cl_secmem_free(p);
    }
    cl_secmem_free(NULL);

    /* absurd sizes fail cleanly */
    assert_null(cl_secmem_alloc(SIZE_MAX - 10, &err));
    assert_int_equal(err.code, CL_E_NOMEM);

    uint8_t a[8] = {1, 2, 3}, b[8] = {1, 2, 3};
    assert_int_equal(cl_memeq_ct(a, b, 8), 0);
    b[7] = 1;
    assert_int_not_equal(cl_memeq_ct(a, b, 8), 0);
    cl_memzero(a, sizeof a);
    assert_int_equal(a[0] | a[1] | a[2], 0);
}

/* Runs in a child without CAP_IPC_LOCK and with a 64 KiB memlock limit: an 8 MiB secure allocation
 * must fail with a message telling the user what to do, unless unlocked memory was explicitly
 * allowed. Exit status 0 means every check held. */
static int lock_failure_child(void)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    if (syscall(SYS_capget, &hdr, caps) != 0)
        return 10;
    caps[0].effective &= ~(1u << CAP_IPC_LOCK);
    caps[0].permitted &= ~(1u << CAP_IPC_LOCK);
    if (syscall(SYS_capset, &hdr, caps) != 0)
        return 11;
    struct rlimit low = {64 * 1024, 64 * 1024};
    if (setrlimit(RLIMIT_MEMLOCK, &low) != 0)
        return 12;
    cl_err err = {0};
    void *p = cl_secmem_alloc(8 << 20, &err);
    if (p || err.code != CL_E_NOMEM || !strstr(err.msg, "ulimit -l") || !strstr(err.msg, "CAP_IPC_LOCK"))
        return 13;
    cl_log_set_level(CL_LOG_OFF);
    cl_secmem_set_require_lock(false);
    p = cl_secmem_alloc(8 << 20, &err);
    if (!p || cl_secmem_is_locked(p))
        return 14;
    memset(p, 1, 8 << 20);
    cl_secmem_free(p);
    return 0;
}

static void test_secmem_lock_failure_is_actionable(void **state)
{
    (void)state;
#if CL_TEST_ASAN
    skip(); /* AddressSanitizer replaces mlock() with a no-op that always succeeds */
#endif
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0)
        _exit(lock_failure_child());
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);
}

static void test_atomic_files(void **state)
{
    (void)state;
    char *dir = tu_tmpdir(), *path = tu_path(dir, "out.bin");
    cl_err err = {0};
    cl_atomic_file f;
    assert_int_equal(cl_atomic_open(&f, path, 0640, false, &err), 0);
    assert_int_equal(cl_atomic_write(&f, "hello", 5, &err), 0);
    assert_false(tu_file_exists(path)); /* not visible until committed */
    assert_int_equal(tu_count_entries(dir), 1);
    assert_int_equal(cl_atomic_commit(&f, &err), 0);
    size_t n;
    uint8_t *data = tu_read_file(path, &n);
    assert_int_equal(n, 5);
    assert_memory_equal(data, "hello", 5);
    free(data);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0640);

    assert_int_equal(cl_atomic_open(&f, path, 0600, false, &err), -1);
    assert_int_equal(err.code, CL_E_EXISTS);

    assert_int_equal(cl_atomic_open(&f, path, 0600, true, &err), 0);
    assert_int_equal(cl_atomic_write(&f, "partial", 7, &err), 0);
    cl_atomic_abort(&f);
    data = tu_read_file(path, &n); /* the old content survives an aborted write */
    assert_int_equal(n, 5);
    free(data);
    assert_int_equal(tu_count_entries(dir), 1);

    assert_int_equal(cl_file_write_atomic(path, "x", 1, 0600, true, &err), 0);
    uint8_t *buf;
    assert_int_equal(cl_file_read(path, 10, &buf, &n, &err), 0);
    assert_int_equal(n, 1);
    assert_int_equal(buf[1], 0); /* NUL-terminated */
    free(buf);
    assert_int_equal(cl_file_write_atomic(path, "0123456789ab", 12, 0600, true, &err), 0);
    assert_int_equal(cl_file_read(path, 10, &buf, &n, &err), -1);
    assert_int_equal(err.code, CL_E_INVALID);
    assert_int_equal(cl_file_read(dir, 10, &buf, &n, &err), -1);
    assert_non_null(strstr(err.msg, "not a regular file"));
    /* a pipe (as with `--file /dev/stdin`) is read to its end, within the same limit */
    for (int over = 0; over <= 1; over++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        const char *msg = over ? "0123456789a" : "secret";
        assert_int_equal(write(fds[1], msg, strlen(msg)), (ssize_t)strlen(msg));
        close(fds[1]);
        char fdpath[64];
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fds[0]);
        if (!over) {
            assert_int_equal(cl_file_read(fdpath, 10, &buf, &n, &err), 0);
            assert_int_equal(n, 6);
            assert_string_equal((char *)buf, "secret");
            free(buf);
        } else {
            assert_int_equal(cl_file_read(fdpath, 10, &buf, &n, &err), -1);
            assert_int_equal(err.code, CL_E_INVALID);
            assert_non_null(strstr(err.msg, "more than the 10 bytes"));
        }
        close(fds[0]);
    }
    char *nodir = tu_path(dir, "missing/x");
    assert_int_equal(cl_file_write_atomic(nodir, "x", 1, 0600, false, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    free(nodir);
    tu_rmrf(dir);
    free(dir);
    free(path);
}

static void test_log_levels(void **state)
{
    (void)state;
    cl_log_level l;
    assert_int_equal(cl_log_parse_level("warn", &l), 0);
    assert_int_equal(l, CL_LOG_WARN);
    assert_int_equal(cl_log_parse_level("loud", &l), -1);
    cl_log_set_level(CL_LOG_ERROR);
    assert_int_equal(cl_log_get_level(), CL_LOG_ERROR);
    cl_log_set_level(CL_LOG_INFO);

    /* a long line is written whole (an audit line names every secret of a request) */
    char tmpl[] = "/tmp/cloister-log-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    char *long_msg = malloc(5001);
    memset(long_msg, 'x', 5000);
    long_msg[4999] = 'E';
    long_msg[5000] = 0;
    CL_INFO("test", "%s", long_msg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    uint8_t *got;
    size_t len;
    cl_err err = {0};
    assert_int_equal(cl_file_read(tmpl, 1 << 20, &got, &len, &err), 0);
    assert_non_null(memmem(got, len, long_msg, 5000));
    free(got);
    free(long_msg);
    close(fd);
    unlink(tmpl);
}

/* Runs fn with fd 2 sent to a file; returns what was written (malloc()ed, NUL-terminated). */
static char *capture_stderr(void (*fn)(void *), void *arg)
{
    char tmpl[] = "/tmp/cloister-log-XXXXXX";
    int fd = mkstemp(tmpl);
    assert_true(fd >= 0);
    fflush(stderr);
    int saved = dup(2);
    dup2(fd, 2);
    fn(arg);
    fflush(stderr);
    dup2(saved, 2);
    close(saved);
    close(fd);
    uint8_t *got;
    size_t len;
    cl_err err = {0};
    assert_int_equal(cl_file_read(tmpl, 1 << 20, &got, &len, &err), 0);
    unlink(tmpl);
    return (char *)got;
}

static void log_hostile(void *arg)
{
    (void)arg;
    /* a message and values with quotes, a newline, a tab, a control byte and bytes that are not UTF-8 */
    cl_log_field f[] = {CL_LOGF_S("model", "a\"b\nc\td\x01" "e\xff\xfe"), CL_LOGF_I("version", -3),
                        CL_LOGF_U("bytes", 1ull << 40), CL_LOGF_R("latency_ms", 1.25),
                        CL_LOGF_S("absent", NULL), CL_LOGF_S("plain", "127.0.0.1:80"), CL_LOGF_S("empty", "")};
    cl_log_fields(CL_LOG_WARN, "mod\"x", f, CL_ARRAY_LEN(f), "line one\nline \"two\" \xc3\xa9 \xff");
    cl_log_fields(CL_LOG_DEBUG, "test", f, 1, "below the level: not written");
}

/* The JSON format: one valid JSON object a line whatever the message and values hold, the four keys
 * first, fields typed; the text format: one line, values quoted and escaped where needed. */
static void test_log_formats(void **state)
{
    (void)state;
    cl_log_set_level(CL_LOG_INFO);
    cl_log_set_format(CL_LOG_JSON);
    assert_int_equal(cl_log_get_format(), CL_LOG_JSON);
    char *out = capture_stderr(log_hostile, NULL);
    size_t len = strlen(out);
    assert_true(len > 0 && out[len - 1] == '\n');
    assert_null(memchr(out, '\n', len - 1)); /* one line */
    cl_err err = {0};
    json_t *j = cl_json_parse(out, len, "line", &err); /* strict: valid UTF-8, no duplicates */
    if (!j)
        fail_msg("not a JSON line: %s: %s", err.msg, out);
    const char *keys[] = {"time", "level", "module", "msg", "model", "version", "bytes", "latency_ms", "plain", "empty"};
    const char *k;
    json_t *v;
    size_t i = 0;
    json_object_foreach(j, k, v) {
        assert_true(i < CL_ARRAY_LEN(keys));
        assert_string_equal(k, keys[i]);
        i++;
    }
    assert_int_equal(i, CL_ARRAY_LEN(keys)); /* "absent" (NULL) left out */
    const char *t = json_string_value(json_object_get(j, "time"));
    assert_non_null(t);
    /* RFC 3339, UTC, milliseconds: 2026-12-03T05:33:46.123Z */
    assert_int_equal(strlen(t), 24);
    assert_true(t[4] == '-' && t[7] == '-' && t[10] == 'T' && t[13] == ':' && t[16] == ':' && t[19] == '.' && t[23] == 'Z');
    assert_string_equal(json_string_value(json_object_get(j, "level")), "warn");
    assert_string_equal(json_string_value(json_object_get(j, "module")), "mod\"x");
    assert_string_equal(json_string_value(json_object_get(j, "msg")), "line one\nline \"two\" \xc3\xa9 ?");
    assert_string_equal(json_string_value(json_object_get(j, "model")), "a\"b\nc\td\x01" "e??");
    assert_int_equal(json_integer_value(json_object_get(j, "version")), -3);
    assert_int_equal(json_integer_value(json_object_get(j, "bytes")), 1ll << 40);
    assert_true(json_real_value(json_object_get(j, "latency_ms")) == 1.25);
    json_decref(j);
    free(out);

    cl_log_set_format(CL_LOG_TEXT);
    out = capture_stderr(log_hostile, NULL);
    len = strlen(out);
    /* the message itself is written as given (it is the program's), the fields are escaped */
    assert_non_null(strstr(out, "] line one\nline \"two\""));
    assert_non_null(strstr(out, " model=\"a\\\"b\\nc\\td\\x01e\\xff\\xfe\""));
    assert_non_null(strstr(out, " version=-3 bytes=1099511627776 latency_ms=1.25 plain=127.0.0.1:80 empty=\"\"\n"));
    assert_null(strstr(out, "absent"));
    assert_null(strstr(out, "below the level"));
    free(out);
}

static void log_long_json(void *arg)
{
    cl_log_fields(CL_LOG_INFO, "test", NULL, 0, "%s", (const char *)arg);
}

/* Long lines are written whole in JSON too, and a sink appends to its file whatever the level. */
typedef struct sink_writer {
    cl_log_sink *s;
    int id, lines;
    atomic_int *done;
} sink_writer;

static void *sink_writer_main(void *arg)
{
    sink_writer *w = arg;
    for (int i = 0; i < w->lines; i++)
        cl_log_sink_write(w->s, CL_LOG_INFO, "access", NULL, 0, "writer %d line %d %s", w->id, i,
                          "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefghijklmnopqrstuvwxyz-end");
    atomic_fetch_add(w->done, 1);
    return NULL;
}

/* Log rotation under load: the file renamed and the sink reopened while four threads write; every
 * line is whole, in one of the files, exactly once. */
static void test_log_sink_reopen(void **state)
{
    (void)state;
    char dir[] = "/tmp/cloister-reopen-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[96], rotated[96];
    snprintf(path, sizeof path, "%s/access.log", dir);
    cl_err err = {0};
    cl_log_sink *s = cl_log_sink_open(path, &err);
    assert_non_null(s);
    enum { WRITERS = 4, LINES = 5000, MAX_ROTATIONS = 1000 };
    sink_writer w[WRITERS];
    pthread_t t[WRITERS];
    atomic_int done = 0;
    for (int i = 0; i < WRITERS; i++) {
        w[i] = (sink_writer){.s = s, .id = i, .lines = LINES, .done = &done};
        assert_int_equal(pthread_create(&t[i], NULL, sink_writer_main, &w[i]), 0);
    }
    int rotations = 0; /* renamed and reopened while the writers write (at least once) */
    do {
        snprintf(rotated, sizeof rotated, "%s/access.log.%d", dir, rotations++);
        assert_int_equal(rename(path, rotated), 0);
        assert_int_equal(cl_log_sink_reopen(s, &err), 0);
        usleep(200);
    } while (atomic_load(&done) < WRITERS && rotations < MAX_ROTATIONS);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(t[i], NULL);
    cl_log_sink_close(s);
    static unsigned char seen[WRITERS][LINES];
    memset(seen, 0, sizeof seen);
    size_t total = 0;
    for (int r = 0; r <= rotations; r++) {
        if (r < rotations)
            snprintf(rotated, sizeof rotated, "%s/access.log.%d", dir, r);
        else
            snprintf(rotated, sizeof rotated, "%s", path); /* the file in use at the end */
        uint8_t *got;
        size_t len;
        assert_int_equal(cl_file_read(rotated, 64 << 20, &got, &len, &err), 0);
        char *p = (char *)got, *end = p + len;
        while (p < end) {
            char *nl = memchr(p, '\n', (size_t)(end - p));
            assert_non_null(nl);
            *nl = '\0';
            const char *m = strstr(p, "writer ");
            int id = -1, line = -1;
            assert_non_null(m);
            assert_int_equal(sscanf(m, "writer %d line %d", &id, &line), 2);
            assert_true(id >= 0 && id < WRITERS && line >= 0 && line < LINES);
            assert_non_null(strstr(m, "uvwxyz-end"));
            assert_int_equal(seen[id][line]++, 0);
            total++;
            p = nl + 1;
        }
        free(got);
        unlink(rotated);
    }
    rmdir(dir);
    assert_int_equal(total, WRITERS * LINES);
    /* stderr: nothing to reopen */
    cl_log_sink *e = cl_log_sink_open("stderr", &err);
    assert_non_null(e);
    assert_int_equal(cl_log_sink_reopen(e, &err), 0);
    cl_log_sink_close(e);
}

static void test_log_long_and_sink(void **state)
{
    (void)state;
    char *long_msg = malloc(20001);
    memset(long_msg, 'y', 20000);
    long_msg[19999] = 'E';
    long_msg[20000] = 0;
    cl_log_set_format(CL_LOG_JSON);
    char *out = capture_stderr(log_long_json, long_msg);
    cl_err err = {0};
    json_t *j = cl_json_parse(out, strlen(out), "line", &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "msg")), long_msg);
    json_decref(j);
    free(out);

    char dir[] = "/tmp/cloister-sink-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof path, "%s/access.log", dir);
    assert_int_equal(cl_file_write_atomic(path, (const uint8_t *)"earlier\n", 8, 0600, false, &err), 0);
    cl_log_sink *s = cl_log_sink_open(path, &err);
    assert_non_null(s);
    cl_log_set_level(CL_LOG_ERROR); /* a sink writes whatever the level */
    cl_log_field f[] = {CL_LOGF_S("peer", "127.0.0.1:1")};
    cl_log_sink_write(s, CL_LOG_INFO, "access", f, 1, "request");
    cl_log_sink_write(s, CL_LOG_INFO, "access", f, 1, "%s", long_msg);
    cl_log_sink_close(s);
    cl_log_set_level(CL_LOG_INFO);
    uint8_t *got;
    size_t len;
    assert_int_equal(cl_file_read(path, 1 << 20, &got, &len, &err), 0);
    assert_true(len > 8 && memcmp(got, "earlier\n", 8) == 0); /* appended, not truncated */
    char *second = memchr(got + 8, '\n', len - 8);
    assert_non_null(second);
    j = cl_json_parse((char *)got + 8, (size_t)(second - (char *)got - 8 + 1), "line", &err);
    assert_non_null(j);
    assert_string_equal(json_string_value(json_object_get(j, "module")), "access");
    assert_string_equal(json_string_value(json_object_get(j, "peer")), "127.0.0.1:1");
    json_decref(j);
    assert_non_null(memmem(got, len, long_msg, 20000));
    free(got);
    cl_log_set_format(CL_LOG_TEXT);

    /* a directory, a file in a missing directory: refused with a message naming it */
    assert_null(cl_log_sink_open(dir, &err));
    assert_non_null(strstr(err.msg, "is a directory"));
    snprintf(path, sizeof path, "%s/no/such.log", dir);
    assert_null(cl_log_sink_open(path, &err));
    assert_non_null(strstr(err.msg, path));
    snprintf(path, sizeof path, "%s/access.log", dir);
    unlink(path);
    rmdir(dir);
    free(long_msg);

    /* the UTF-8 check behind both formats' escaping (and the metrics' label values) */
    static const struct {
        const char *s;
        size_t want;
    } seqs[] = {{"a", 1}, {"\xc3\xa9", 2}, {"\xe2\x82\xac", 3}, {"\xf0\x9f\x98\x80", 4},
                {"\xc0\x80", 0} /* overlong NUL */, {"\xe0\x80\xaf", 0} /* overlong '/' */,
                {"\xed\xa0\x80", 0} /* surrogate */, {"\xf4\x90\x80\x80", 0} /* above U+10FFFF */,
                {"\xe2\x82", 0} /* truncated */, {"\x80", 0} /* stray continuation */, {"\xff", 0}};
    for (size_t i = 0; i < CL_ARRAY_LEN(seqs); i++)
        if (cl_utf8_seq_len((const unsigned char *)seqs[i].s, strlen(seqs[i].s)) != seqs[i].want)
            fail_msg("UTF-8 sequence %zu: want %zu", i, seqs[i].want);

    cl_log_format fmt;
    assert_int_equal(cl_log_parse_format("json", &fmt), 0);
    assert_int_equal(fmt, CL_LOG_JSON);
    assert_int_equal(cl_log_parse_format("JSON", &fmt), -1);
    assert_int_equal(cl_log_parse_format(NULL, &fmt), -1);
}

/* The strict reader refuses what a lenient one resolves silently, and says where. */
static void test_json_strict(void **state)
{
    (void)state;
    static const struct {
        const char *text, *why;
    } bad[] = {
        {"{\"a\": 1, \"a\": 2}", "duplicate"},          /* repeated key: first or last would win */
        {"{\"a\": {\"b\": 1, \"b\": 1}}", "duplicate"}, /* at any depth */
        {"{\"a\": 1} {\"a\": 2}", "end of file"},       /* a second object */
        {"{\"a\": 1}x", "end of file"},                 /* trailing garbage */
        {"{\"a\": \"x\\u0000y\"}", "\\u0000"},          /* NUL would cut the C string */
        {"{\"a\": \"\xff\"}", "decode byte"},            /* invalid UTF-8 */
        {"{\"a\": 99999999999999999999999}", "too big"}, /* integer overflow */
        {"{\"a\": 1,}", "'}'"},                         /* trailing comma */
        {"[1, 2]", "object"},                             /* not an object */
        {"", "end of file"},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        cl_err err = {0};
        json_t *j = cl_json_parse(bad[i].text, strlen(bad[i].text), "doc", &err);
        if (j)
            fail_msg("accepted: %s", bad[i].text);
        assert_int_equal(err.code, CL_E_FORMAT);
        if (!strstr(err.msg, bad[i].why) || strncmp(err.msg, "doc: ", 5) != 0)
            fail_msg("'%s': message '%s' lacks '%s'", bad[i].text, err.msg, bad[i].why);
    }
    /* the position is given */
    cl_err err = {0};
    const char *two_lines = "{\"a\": 1,\n \"a\": 2}";
    assert_null(cl_json_parse(two_lines, strlen(two_lines), "p.json", &err));
    assert_non_null(strstr(err.msg, "p.json: line 2, column"));
    /* a NUL byte in the buffer (not escaped) is refused as well */
    assert_null(cl_json_parse("{\"a\": 1}\0{}", 11, "doc", &err));

    const char *good = "{\"n\": 7, \"r\": 7.5, \"s\": \"x\", \"b\": true, \"big\": 70000}";
    json_t *j = cl_json_parse(good, strlen(good), "doc", &err);
    assert_non_null(j);
    long long n;
    const char *str;
    bool b;
    assert_int_equal(cl_json_get_int(json_object_get(j, "n"), "doc", "n", 0, 10, &n, &err), 0);
    assert_int_equal(n, 7);
    assert_int_equal(cl_json_get_int(json_object_get(j, "r"), "doc", "r", 0, 10, &n, &err), -1); /* a real */
    assert_int_equal(cl_json_get_int(json_object_get(j, "s"), "doc", "s", 0, 10, &n, &err), -1);
    assert_int_equal(cl_json_get_int(json_object_get(j, "big"), "doc", "big", 0, 65535, &n, &err), -1);
    assert_non_null(strstr(err.msg, "doc: big must be an integer from 0 to 65535"));
    assert_int_equal(cl_json_get_str(json_object_get(j, "s"), "doc", "s", 1, &str, &err), 0);
    assert_string_equal(str, "x");
    assert_int_equal(cl_json_get_str(json_object_get(j, "n"), "doc", "n", 0, &str, &err), -1);
    assert_int_equal(cl_json_get_bool(json_object_get(j, "b"), "doc", "b", &b, &err), 0);
    assert_true(b);
    assert_int_equal(cl_json_get_bool(json_object_get(j, "n"), "doc", "n", &b, &err), -1);
    static const char *const known[] = {"n", "r", "s", "b", NULL};
    assert_int_equal(cl_json_check_keys(j, "doc", "top", known, &err), -1);
    assert_non_null(strstr(err.msg, "doc: top.big: unknown field"));
    json_decref(j);
}

/* Key files are read straight into secure memory, from files and pipes, within the size limit. */
static void test_file_read_secure(void **state)
{
    (void)state;
    cl_err err = {0};
    char *dir = tu_tmpdir(), *path = tu_path(dir, "key.pem");
    tu_write_file(path, "-----BEGIN PRIVATE KEY-----\n", 28);
    uint8_t *buf = NULL;
    size_t len = 0;
    assert_int_equal(cl_file_read_secure(path, 1024, &buf, &len, &err), 0);
    assert_int_equal(len, 28);
    assert_memory_equal(buf, "-----BEGIN PRIVATE KEY-----\n", 29); /* NUL-terminated */
    assert_true(cl_secmem_size(buf) == 29 && cl_secmem_is_locked(buf));
    cl_secmem_free(buf);
    assert_int_equal(cl_file_read_secure(path, 27, &buf, &len, &err), -1);
    assert_non_null(strstr(err.msg, "more than the 27 allowed"));
    assert_int_equal(cl_file_read_secure(dir, 1024, &buf, &len, &err), -1);
    assert_int_equal(cl_file_read_secure("/nonexistent/key.pem", 1024, &buf, &len, &err), -1);
    assert_int_equal(err.code, CL_E_IO);
    /* a pipe: read to its end, refused past the limit */
    for (int big = 0; big < 2; big++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        char fdpath[64];
        snprintf(fdpath, sizeof fdpath, "/proc/self/fd/%d", fds[0]);
        assert_int_equal(write(fds[1], "0123456789", 10), 10);
        close(fds[1]);
        int rc = cl_file_read_secure(fdpath, big ? 9 : 10, &buf, &len, &err);
        close(fds[0]);
        if (big) {
            assert_int_equal(rc, -1);
            assert_non_null(strstr(err.msg, "more than the 9 bytes allowed"));
        } else {
            assert_int_equal(rc, 0);
            assert_int_equal(len, 10);
            assert_memory_equal(buf, "0123456789", 11);
            cl_secmem_free(buf);
        }
    }
    tu_rmrf(dir);
    free(path);
    free(dir);
}

/* Like lock_failure_child for OpenSSL's secure heap: with memlock at 64 KiB and no CAP_IPC_LOCK a 1 MiB
 * heap cannot be locked, so setting it up fails with advice and leaves no heap behind; with unlocked
 * memory allowed it is set up (unlocked) and usable. */
static int heap_lock_failure_child(bool allow_unlocked)
{
    struct __user_cap_header_struct hdr = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct caps[2];
    if (syscall(SYS_capget, &hdr, caps) != 0)
        return 10;
    caps[0].effective &= ~(1u << CAP_IPC_LOCK);
    caps[0].permitted &= ~(1u << CAP_IPC_LOCK);
    if (syscall(SYS_capset, &hdr, caps) != 0)
        return 11;
    struct rlimit low = {64 * 1024, 64 * 1024};
    if (setrlimit(RLIMIT_MEMLOCK, &low) != 0)
        return 12;
    cl_log_set_level(CL_LOG_OFF);
    cl_secmem_set_require_lock(!allow_unlocked);
    cl_err err = {0};
    int rc = cl_secure_heap_init(1 << 20, &err);
    if (!allow_unlocked)
        return rc == -1 && err.code == CL_E_NOMEM && strstr(err.msg, "RLIMIT_MEMLOCK is 64 KiB") &&
                       strstr(err.msg, "--allow-unlocked-memory") && !CRYPTO_secure_malloc_initialized()
                   ? 0
                   : 13;
    if (rc != 0 || !CRYPTO_secure_malloc_initialized())
        return 14;
    void *p = OPENSSL_secure_malloc(1000);
    if (!p || !cl_secure_heap_holds(p))
        return 15;
    OPENSSL_secure_free(p);
    return 0;
}

static void test_secure_heap_lock_failure(void **state)
{
    (void)state;
#if CL_TEST_ASAN
    skip(); /* AddressSanitizer replaces mlock() with a no-op that always succeeds */
#endif
    for (int allow = 0; allow < 2; allow++) {
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0)
            _exit(heap_lock_failure_child(allow));
        int status = 0;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        assert_true(WIFEXITED(status));
        assert_int_equal(WEXITSTATUS(status), 0);
    }
}

/* cl_process_harden: not dumpable, no core files (soft and hard), and OpenSSL's secure heap in place
 * (what OPENSSL_secure_malloc returns is inside it and counted). Last: it changes the process. */
static void test_process_harden(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_int_equal(cl_secure_heap_used(), 0); /* not set up yet */
    assert_int_equal(cl_process_harden(CL_SECURE_HEAP_DEFAULT, &err), 0);
    assert_int_equal(prctl(PR_GET_DUMPABLE, 0, 0, 0, 0), 0);
    struct rlimit rl;
    assert_int_equal(getrlimit(RLIMIT_CORE, &rl), 0);
    assert_true(rl.rlim_cur == 0 && rl.rlim_max == 0);
    /* the kernel's view: /proc/self/limits shows core files disabled, soft and hard */
    FILE *f = fopen("/proc/self/limits", "r");
    assert_non_null(f);
    char line[256];
    unsigned long long soft = 1, hard = 1;
    int found = 0;
    while (fgets(line, sizeof line, f))
        if (strncmp(line, "Max core file size", 18) == 0)
            found = sscanf(line + 18, " %llu %llu", &soft, &hard);
    fclose(f);
    assert_int_equal(found, 2);
    assert_true(soft == 0 && hard == 0);
    size_t before = cl_secure_heap_used();
    void *p = OPENSSL_secure_malloc(100);
    assert_non_null(p);
    assert_true(cl_secure_heap_holds(p));
    assert_true(cl_secure_heap_used() >= before + 100);
    OPENSSL_secure_free(p);
    assert_int_equal(cl_secure_heap_used(), before);
    void *q = OPENSSL_malloc(100);
    assert_false(cl_secure_heap_holds(q));
    OPENSSL_free(q);
    /* once per process: a second call reports the first one's result */
    assert_int_equal(cl_secure_heap_init(4096, &err), 0);
    /* RLIMIT_NOFILE: raised to the hard limit */
    uint64_t was = 0, now = cl_raise_nofile_limit(&was);
    assert_int_equal(getrlimit(RLIMIT_NOFILE, &rl), 0);
    assert_true(now == (rl.rlim_max == RLIM_INFINITY ? UINT64_MAX : (uint64_t)rl.rlim_max));
    assert_true(rl.rlim_cur == rl.rlim_max && was <= now);
}

/* CL_ASSERT where the build checks invariants (CL_ASSERTS: Debug, sanitizers): a false condition ends
 * the process with SIGABRT after naming the condition; a true one does nothing. Elsewhere a false
 * condition is not even evaluated. */
static int assert_evals;
static int __attribute__((unused)) assert_count(int v)
{
    assert_evals++;
    return v;
}

/* The one HOST:PORT parser, as clients (port required, 1..65535) and key server lists and --listen
 * (default port; 0 for a listener) use it. */
static void test_net_split_hostport(void **state)
{
    (void)state;
    char host[16];
    int port = -7;
    cl_err err = {0};
    assert_int_equal(cl_net_split_hostport("localhost:8500", host, sizeof host, &port, -1, false, &err), 0);
    assert_string_equal(host, "localhost");
    assert_int_equal(port, 8500);
    assert_int_equal(cl_net_split_hostport("[::1]:1", host, sizeof host, &port, -1, false, &err), 0);
    assert_string_equal(host, "::1");
    assert_int_equal(port, 1);
    /* a default port: the ":PORT" may be left out, with or without brackets */
    assert_int_equal(cl_net_split_hostport("ks.example", host, sizeof host, &port, 4433, false, &err), 0);
    assert_string_equal(host, "ks.example");
    assert_int_equal(port, 4433);
    assert_int_equal(cl_net_split_hostport("[fe80::1]", host, sizeof host, &port, 4433, false, &err), 0);
    assert_string_equal(host, "fe80::1");
    assert_int_equal(port, 4433);
    /* port 0 only for a listener */
    assert_int_equal(cl_net_split_hostport("127.0.0.1:0", host, sizeof host, &port, 4433, true, &err), 0);
    assert_int_equal(port, 0);
    assert_int_equal(cl_net_split_hostport("127.0.0.1:0", host, sizeof host, &port, 4433, false, &err), -1);
    assert_non_null(strstr(err.msg, "from 1 to 65535"));
    const char *bad[] = {"", "localhost", "localhost:", ":80", "h:65536", "h:8x", "h: 80", "h:+80", "h:-1",
                         "::1:80", "a:b:80", "[::1]80", "[::1", "[]:80", "h:99999999999999999999",
                         "sixteen-chars-xx:80" /* the host does not fit 16 bytes */};
    for (size_t i = 0; i < CL_ARRAY_LEN(bad); i++) {
        port = -7;
        err.msg[0] = '\0';
        assert_int_equal(cl_net_split_hostport(bad[i], host, sizeof host, &port, -1, true, &err), -1);
        assert_int_equal(err.code, CL_E_INVALID);
        assert_true(err.msg[0] != '\0');
        assert_int_equal(port, -7); /* nothing written on failure */
    }
    assert_int_equal(cl_net_split_hostport(NULL, host, sizeof host, &port, 80, false, &err), -1);
}

static void test_assert(void **state)
{
    (void)state;
    assert_evals = 0;
    CL_ASSERT(assert_count(1) == 1);
#if defined(CL_ASSERTS) && CL_ASSERTS
    assert_int_equal(assert_evals, 1);
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        dup2(fds[1], 2);
        close(fds[0]);
        int zero = 0;
        CL_ASSERT(zero == 1);
        _exit(0); /* not reached when the assert works */
    }
    close(fds[1]);
    char msg[256] = {0};
    size_t got = 0;
    ssize_t r;
    while (got < sizeof msg - 1 && (r = read(fds[0], msg + got, sizeof msg - 1 - got)) > 0)
        got += (size_t)r;
    close(fds[0]);
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFSIGNALED(st));
    assert_int_equal(WTERMSIG(st), SIGABRT);
    assert_non_null(strstr(msg, "test_common.c:"));
    assert_non_null(strstr(msg, "assertion failed: zero == 1"));
#else
    /* compiled out: neither evaluated nor fatal */
    assert_int_equal(assert_evals, 0);
    CL_ASSERT(assert_count(0) == 1);
    assert_int_equal(assert_evals, 0);
#endif
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_errors), cmocka_unit_test(test_net_split_hostport),       cmocka_unit_test(test_hex), cmocka_unit_test(test_b64),
        cmocka_unit_test(test_args), cmocka_unit_test(test_args_tf_style),         cmocka_unit_test(test_secmem),
        cmocka_unit_test(test_secmem_lock_failure_is_actionable),
        cmocka_unit_test(test_atomic_files), cmocka_unit_test(test_log_levels),
        cmocka_unit_test(test_log_formats),  cmocka_unit_test(test_log_long_and_sink),
        cmocka_unit_test(test_log_sink_reopen),
        cmocka_unit_test(test_strbuf),
        cmocka_unit_test(test_json_strict),
        cmocka_unit_test(test_file_read_secure),
        cmocka_unit_test(test_secure_heap_lock_failure),
        cmocka_unit_test(test_process_harden),
        cmocka_unit_test(test_assert),
    };
    return cmocka_run_group_tests_name("common", tests, NULL, NULL);
}
