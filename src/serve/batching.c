/* batching.c — TF Serving's --batching_parameters_file (BatchingParameters in protobuf text format)
 * into cl_serve_batching. The batching itself lives in the worker pool (pool.c).
 *
 * The accepted subset: `field { value: N }` (the wrapper-message form TF Serving writes) or
 * `field: N` for max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches;
 * '#' comments. Options that would change results or need padding (allowed_batch_sizes,
 * pad_variable_length_inputs) and unknown fields are errors that name the line. */
#include "cloister/serve.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

typedef struct scan {
    const char *p, *end;
    int line;
} scan;

static void skip(scan *s)
{
    while (s->p < s->end) {
        if (*s->p == '#') {
            while (s->p < s->end && *s->p != '\n')
                s->p++;
        } else if (isspace((unsigned char)*s->p)) {
            s->line += *s->p == '\n';
            s->p++;
        } else {
            break;
        }
    }
}

static bool punct(scan *s, char c)
{
    skip(s);
    if (s->p < s->end && *s->p == c) {
        s->p++;
        return true;
    }
    return false;
}

static size_t word(scan *s, char *out, size_t cap)
{
    skip(s);
    size_t n = 0;
    while (s->p < s->end && (isalnum((unsigned char)*s->p) || *s->p == '_')) {
        if (n + 1 < cap)
            out[n] = *s->p;
        n++;
        s->p++;
    }
    out[n < cap ? n : cap - 1] = '\0';
    return n;
}

int cl_serve_batching_parse(const char *text, size_t len, cl_serve_batching *out, unsigned *workers,
                            unsigned *queue, cl_err *err)
{
    static const char *const fields[] = {"max_batch_size", "batch_timeout_micros", "num_batch_threads",
                                         "max_enqueued_batches"};
    scan s = {text, text + len, 1};
    cl_serve_batching b = {.max_batch_size = 32, .batch_timeout_us = 0}; /* TF Serving's defaults */
    unsigned long long val[4] = {0};
    bool seen[4] = {false};
    char name[64], num[32];
    for (;;) {
        skip(&s);
        if (s.p >= s.end)
            break;
        int line = s.line;
        if (!word(&s, name, sizeof name))
            return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: expected a field name", line);
        size_t f = 0;
        while (f < CL_ARRAY_LEN(fields) && strcmp(fields[f], name) != 0)
            f++;
        if (f == CL_ARRAY_LEN(fields))
            return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: '%s' is not supported (supported: "
                              "max_batch_size, batch_timeout_micros, num_batch_threads, max_enqueued_batches)",
                              line, name);
        if (seen[f])
            return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: '%s' is given twice", line, name);
        bool braced = false;
        if (!punct(&s, ':')) {
            if (!punct(&s, '{'))
                return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: expected '{ value: N }' or ': N' "
                                  "after '%s'", line, name);
            braced = true;
            char v[16];
            if (!word(&s, v, sizeof v) || strcmp(v, "value") != 0 || !punct(&s, ':'))
                return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: expected 'value:' in '%s'", line,
                                  name);
        }
        size_t n = word(&s, num, sizeof num);
        char *e = NULL;
        unsigned long long x = n && n < sizeof num && isdigit((unsigned char)num[0]) ? strtoull(num, &e, 10) : 0;
        if (!e || *e || x > 100000000ull)
            return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: '%s' needs a whole number between 0 "
                              "and 100000000", s.line, name);
        if (braced && !punct(&s, '}'))
            return cl_err_set(err, CL_E_FORMAT, "batching parameters line %d: expected '}' after the value of '%s'",
                              s.line, name);
        seen[f] = true;
        val[f] = x;
    }
    if (seen[0]) {
        if (val[0] < 1 || val[0] > 4096)
            return cl_err_set(err, CL_E_FORMAT, "batching parameters: max_batch_size must be 1..4096");
        b.max_batch_size = (unsigned)val[0];
    }
    if (seen[1]) {
        if (val[1] > 10000000)
            return cl_err_set(err, CL_E_FORMAT, "batching parameters: batch_timeout_micros above 10 s is not useful");
        b.batch_timeout_us = (unsigned)val[1];
    }
    if (seen[2] && (val[2] < 1 || val[2] > 1024))
        return cl_err_set(err, CL_E_FORMAT, "batching parameters: num_batch_threads must be 1..1024");
    if (seen[3] && (val[3] < 1 || val[3] > 1000000))
        return cl_err_set(err, CL_E_FORMAT, "batching parameters: max_enqueued_batches must be 1..1000000");
    if (workers && seen[2])
        *workers = (unsigned)val[2];
    if (queue && seen[3])
        *queue = (unsigned)val[3];
    *out = b;
    return 0;
}
