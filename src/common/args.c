/* args.c — declarative option tables for the CLI subcommands (on top of getopt_long): parsing,
 * range checks, required options, duplicate detection (or last-wins, per option), TensorFlow-style
 * booleans (--x, --x=true|false|1|0), the closest option suggested for an unknown one, and
 * generated --help text.
 * Not thread-safe (getopt keeps global state); only the CLI's main thread calls it. */
#include "cloister/common.h"

#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void cl_strlist_free(cl_strlist *l)
{
    if (!l)
        return;
    free(l->items);
    l->items = NULL;
    l->count = 0;
}

static int strlist_push(cl_strlist *l, const char *s)
{
    const char **n = realloc(l->items, (l->count + 1) * sizeof *n);
    if (!n)
        return -1;
    n[l->count++] = s;
    l->items = n;
    return 0;
}

/* edit distance between a and b (at most 63 characters each are compared) */
static size_t edit_distance(const char *a, const char *b)
{
    size_t la = strnlen(a, 63), lb = strnlen(b, 63), row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = j;
    for (size_t i = 1; i <= la; i++) {
        size_t diag = row[0];
        row[0] = i;
        for (size_t j = 1; j <= lb; j++) {
            size_t up = row[j], best = diag + (a[i - 1] != b[j - 1]);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

/* the option of the table nearest to the unknown `arg` ("--name" or "--name=value"), if it is near:
 * at most a third of the name's length (and 3) edits away */
static const char *closest_option(const char *arg, const cl_opt *opts, size_t nopts)
{
    char name[64];
    while (*arg == '-')
        arg++;
    size_t n = strcspn(arg, "=");
    if (n == 0 || n >= sizeof name)
        return NULL;
    memcpy(name, arg, n);
    name[n] = '\0';
    const char *best = NULL;
    size_t best_d = n / 3 < 3 ? n / 3 : 3;
    for (size_t i = 0; i < nopts; i++) {
        size_t d = edit_distance(name, opts[i].name);
        if (d <= best_d && (!best || d < best_d)) {
            best = opts[i].name;
            best_d = d;
        }
    }
    return best;
}

void cl_args_print_help(const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts)
{
    printf("usage: %s\n\n", usage->usage);
    if (usage->summary)
        printf("%s\n\n", usage->summary);
    printf("options:\n");
    for (size_t i = 0; i < nopts; i++) {
        char left[64];
        if (opts[i].metavar && opts[i].kind != CL_ARG_BOOL)
            snprintf(left, sizeof left, "--%s %s", opts[i].name, opts[i].metavar);
        else
            snprintf(left, sizeof left, "--%s", opts[i].name);
        printf("  %-28s %s%s%s%s\n", left, opts[i].help ? opts[i].help : "",
               opts[i].kind == CL_ARG_BOOL ? " (or =true|false)" : "", opts[i].required ? " (required)" : "",
               opts[i].kind == CL_ARG_LIST ? " (repeatable)" : "");
    }
    printf("  %-28s %s\n", "--log-level LEVEL", "debug, info, warn, error or off (default info, or $CLOISTER_LOG)");
    printf("  %-28s %s\n", "--log-format text|json", "log lines as text or JSON (default text, or $CLOISTER_LOG_FORMAT)");
    printf("  %-28s %s\n", "--help", "show this help");
}

int cl_args_parse(int argc, char **argv, const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts,
                  cl_strlist *positional, cl_err *err)
{
    struct option *lo = calloc(nopts + 4, sizeof *lo);
    bool *seen = calloc(nopts + 1, sizeof *seen);
    int rc = -1;
    if (!lo || !seen) {
        cl_err_nomem(err);
        goto out;
    }
    for (size_t i = 0; i < nopts; i++) {
        lo[i].name = opts[i].name;
        lo[i].has_arg = opts[i].kind == CL_ARG_FLAG   ? no_argument
                        : opts[i].kind == CL_ARG_BOOL ? optional_argument
                                                      : required_argument;
        lo[i].val = 1000 + (int)i;
    }
    lo[nopts].name = "help";
    lo[nopts].val = 'h';
    /* the global logging options are also accepted after the command's name */
    lo[nopts + 1] = (struct option){"log-level", required_argument, NULL, 'L'};
    lo[nopts + 2] = (struct option){"log-format", required_argument, NULL, 'F'};

    optind = 0; /* GNU: full re-initialisation, so subcommands can parse more than once (tests) */
    opterr = 0;
    for (;;) {
        int longindex = -1;
        int c = getopt_long(argc, argv, ":h", lo, &longindex);
        if (c == -1)
            break;
        if (c == 'h') {
            cl_args_print_help(usage, opts, nopts);
            rc = 1;
            goto out;
        }
        if (c == 'L' || c == 'F') {
            cl_log_level level;
            cl_log_format format;
            if (c == 'L' && cl_log_parse_level(optarg, &level) == 0) {
                cl_log_set_level(level);
            } else if (c == 'F' && cl_log_parse_format(optarg, &format) == 0) {
                cl_log_set_format(format);
            } else {
                cl_err_set(err, CL_E_INVALID, c == 'L' ? "unknown log level '%s' (debug, info, warn, error, off)"
                                                       : "unknown log format '%s' (text, json)", optarg);
                goto out;
            }
            continue;
        }
        if (c == '?') {
            const char *arg = argv[optind - 1], *near = closest_option(arg, opts, nopts);
            if (strncmp(arg, "--", 2) == 0 && arg[2] && near)
                cl_err_set(err, CL_E_INVALID, "unknown option '%s' (did you mean --%s? see --help)", arg, near);
            else
                cl_err_set(err, CL_E_INVALID, "unknown option '%s' (see --help)", arg);
            goto out;
        }
        if (c == ':') {
            cl_err_set(err, CL_E_INVALID, "option '%s' needs a value (see --help)", argv[optind - 1]);
            goto out;
        }
        size_t i = (size_t)(c - 1000);
        const cl_opt *o = &opts[i];
        if (seen[i] && o->kind != CL_ARG_LIST && !o->last_wins) {
            cl_err_set(err, CL_E_INVALID, "option --%s given more than once", o->name);
            goto out;
        }
        seen[i] = true;
        if (o->given)
            *o->given = true;
        switch (o->kind) {
        case CL_ARG_FLAG:
            *(bool *)o->dest = true;
            break;
        case CL_ARG_BOOL:
            if (!optarg || strcmp(optarg, "true") == 0 || strcmp(optarg, "1") == 0) {
                *(bool *)o->dest = true;
            } else if (strcmp(optarg, "false") == 0 || strcmp(optarg, "0") == 0) {
                *(bool *)o->dest = false;
            } else {
                cl_err_set(err, CL_E_INVALID, "option --%s wants true or false (or 1 or 0), not '%s'", o->name,
                           optarg);
                goto out;
            }
            break;
        case CL_ARG_STRING:
            if (optarg[0] == '\0' && o->last_wins) { /* TF's flags: empty is the default, unset */
                *(const char **)o->dest = NULL;
                break;
            }
            if (optarg[0] == '\0') {
                cl_err_set(err, CL_E_INVALID, "option --%s needs a non-empty value", o->name);
                goto out;
            }
            *(const char **)o->dest = optarg;
            break;
        case CL_ARG_LONG: {
            char *end = NULL;
            errno = 0;
            long v = strtol(optarg, &end, 10);
            if (errno || end == optarg || *end != '\0' || v < o->min || v > o->max) {
                cl_err_set(err, CL_E_INVALID, "option --%s wants a whole number from %ld to %ld, not '%s'",
                           o->name, o->min, o->max, optarg);
                goto out;
            }
            *(long *)o->dest = v;
            break;
        }
        case CL_ARG_LIST:
            if (strlist_push((cl_strlist *)o->dest, optarg) != 0) {
                cl_err_nomem(err);
                goto out;
            }
            break;
        }
    }
    for (int i = optind; i < argc; i++) {
        if (!positional) {
            cl_err_set(err, CL_E_INVALID, "unexpected argument '%s' (see --help)", argv[i]);
            goto out;
        }
        if (strlist_push(positional, argv[i]) != 0) {
            cl_err_nomem(err);
            goto out;
        }
    }
    for (size_t i = 0; i < nopts; i++) {
        if (opts[i].required && !seen[i]) {
            cl_err_set(err, CL_E_INVALID, "missing required option --%s (see --help)", opts[i].name);
            goto out;
        }
    }
    /* the options are known now: the environment's logging settings are read (and a bad value
     * warned about) in the format the options chose */
    (void)cl_log_get_level();
    rc = 0;
out:
    free(lo);
    free(seen);
    return rc;
}
