/* args.c — declarative option tables for the CLI subcommands (on top of getopt_long): parsing,
 * range checks, required options, duplicate detection and generated --help text.
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

void cl_args_print_help(const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts)
{
    printf("usage: %s\n\n", usage->usage);
    if (usage->summary)
        printf("%s\n\n", usage->summary);
    printf("options:\n");
    for (size_t i = 0; i < nopts; i++) {
        char left[64];
        if (opts[i].metavar)
            snprintf(left, sizeof left, "--%s %s", opts[i].name, opts[i].metavar);
        else
            snprintf(left, sizeof left, "--%s", opts[i].name);
        printf("  %-28s %s%s%s\n", left, opts[i].help ? opts[i].help : "",
               opts[i].required ? " (required)" : "",
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
        cl_err_set(err, CL_E_NOMEM, "out of memory");
        goto out;
    }
    for (size_t i = 0; i < nopts; i++) {
        lo[i].name = opts[i].name;
        lo[i].has_arg = opts[i].kind == CL_ARG_FLAG ? no_argument : required_argument;
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
            cl_err_set(err, CL_E_INVALID, "unknown option '%s' (see --help)", argv[optind - 1]);
            goto out;
        }
        if (c == ':') {
            cl_err_set(err, CL_E_INVALID, "option '%s' needs a value (see --help)", argv[optind - 1]);
            goto out;
        }
        size_t i = (size_t)(c - 1000);
        const cl_opt *o = &opts[i];
        if (seen[i] && o->kind != CL_ARG_LIST) {
            cl_err_set(err, CL_E_INVALID, "option --%s given more than once", o->name);
            goto out;
        }
        seen[i] = true;
        switch (o->kind) {
        case CL_ARG_FLAG:
            *(bool *)o->dest = true;
            break;
        case CL_ARG_STRING:
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
                cl_err_set(err, CL_E_NOMEM, "out of memory");
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
            cl_err_set(err, CL_E_NOMEM, "out of memory");
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
