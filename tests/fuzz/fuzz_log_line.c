/* fuzz_log_line.c — fuzz target for the log line builders (cl_log_sink_write): whatever a message
 * and a field value hold (they come from peers: model names, paths, certificate subjects), a JSON
 * line is one line that a strict JSON reader accepts, with the message and value as given where they
 * are UTF-8 (else with '?' for each stray byte); a text line is one line with the value escaped. The
 * input is the message, a NUL, then the field value. */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

#include "cloister/common.h"
#include "cloister/json.h"

static char path[64];
static cl_log_sink *sink;
static int rfd = -1;

/* What the sink wrote for one line (malloc()ed, NUL-terminated), the file emptied again. */
static char *written(size_t *len)
{
    off_t n = lseek(rfd, 0, SEEK_END);
    char *p = malloc((size_t)n + 1);
    if (!p || pread(rfd, p, (size_t)n, 0) != n)
        abort();
    p[n] = '\0';
    if (ftruncate(rfd, 0) != 0)
        abort();
    *len = (size_t)n;
    return p;
}

static int utf8(const char *s, size_t n)
{
    for (size_t i = 0; i < n;) {
        size_t k = cl_utf8_seq_len((const unsigned char *)s + i, n - i);
        if (!k)
            return 0;
        i += k;
    }
    return 1;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!sink) {
        snprintf(path, sizeof path, "/tmp/cloister-fuzz-log-%d", (int)getpid());
        cl_err err = {0};
        if (!(sink = cl_log_sink_open(path, &err)) || (rfd = open(path, O_RDWR | O_CLOEXEC)) < 0)
            abort();
        unlink(path);
    }
    char *in = malloc(size + 2);
    if (!in)
        return 0;
    memcpy(in, data, size);
    in[size] = in[size + 1] = '\0';
    const char *msg = in, *value = in + strlen(in) + 1;
    if (value > in + size)
        value = "";
    cl_log_field f[] = {CL_LOGF_S("value", value), CL_LOGF_I("n", (long long)size)};

    cl_log_set_format(CL_LOG_JSON);
    cl_log_sink_write(sink, CL_LOG_INFO, "fuzz", f, 2, "%s", msg);
    size_t len;
    char *line = written(&len);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1))
        abort(); /* one line */
    cl_err err = {0};
    json_t *j = cl_json_parse(line, len, "line", &err);
    if (!j)
        abort();
    const char *m = json_string_value(json_object_get(j, "msg")), *v = json_string_value(json_object_get(j, "value"));
    if (!m || !v || strlen(m) != strlen(msg) || strlen(v) != strlen(value))
        abort();
    if ((utf8(msg, strlen(msg)) && strcmp(m, msg) != 0) || (utf8(value, strlen(value)) && strcmp(v, value) != 0))
        abort();
    json_decref(j);
    free(line);

    cl_log_set_format(CL_LOG_TEXT);
    cl_log_sink_write(sink, CL_LOG_INFO, "fuzz", f, 1, "m");
    line = written(&len);
    if (len == 0 || line[len - 1] != '\n' || memchr(line, '\n', len - 1) || strlen(line) != len)
        abort(); /* one line, no NUL */
    free(line);
    free(in);
    return 0;
}
