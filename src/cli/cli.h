/* cli.h — the internal interface of the `cloister` command-line tool: subcommand handlers and the
 * small helpers they share. The CLI is a thin layer: parsing, printing and exit codes; all work is
 * done by libcloister. Exit codes: 0 success, 1 the operation failed, 2 usage error. */
#ifndef CLOISTER_CLI_H
#define CLOISTER_CLI_H

#include "cloister/common.h"

enum { CL_EXIT_OK = 0, CL_EXIT_FAIL = 1, CL_EXIT_USAGE = 2 };

#define CL_COMMAND(name, fn, help) int fn(int argc, char **argv);
#include "commands.def"
#undef CL_COMMAND

/* Prints "cloister <cmd>: <message>" to stderr and returns CL_EXIT_FAIL (or CL_EXIT_USAGE for
 * CL_E_INVALID errors raised by argument parsing). */
int cl_cli_fail(const char *cmd, const cl_err *err);
int cl_cli_usage_error(const char *cmd, const cl_err *err);

/* Parses a subcommand's options; returns -1 to continue, or the exit code to return now. */
int cl_cli_parse(int argc, char **argv, const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts,
                 cl_strlist *positional);

/* A progress bar on stderr, drawn only when stderr is a terminal and total >= min_total.
 * Not thread-safe. */
typedef struct cl_progress {
    const char *label;
    uint64_t total;
    uint64_t start_ns, last_draw_ns;
    bool active;
} cl_progress;

void cl_progress_start(cl_progress *p, const char *label, uint64_t total);
void cl_progress_update(cl_progress *p, uint64_t done);
void cl_progress_finish(cl_progress *p);
/* Adapter matching libcloister's progress callbacks (ctx is a cl_progress). A zero-initialised
 * cl_progress with only .label set is started by its first callback, which brings the total. */
void cl_progress_cb(void *ctx, uint64_t done, uint64_t total);

#endif
