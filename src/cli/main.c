/* main.c — entry point of the `cloister` CLI: global options, process-wide settings made before a
 * subcommand runs (malloc tuning, the OpenMP wait policy of `serve`), subcommand dispatch, help. */
#include <errno.h>
#include <malloc.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "cli.h"

typedef struct command {
    const char *name;
    int (*fn)(int argc, char **argv);
    const char *help;
} command;

static const command commands[] = {
#define CL_COMMAND(name, fn, help) {name, fn, help},
#include "commands.def"
#undef CL_COMMAND
};

static void print_help(FILE *out)
{
    fprintf(out,
            "cloister %s — confidential model serving\n\n"
            "usage: cloister [--log-level debug|info|warn|error|off] [--log-format text|json] [--allow-unlocked-memory]\n"
            "                <command> [options]   (--log-level and --log-format also after the command)\n"
            "       cloister help <command>   (or: cloister <command> --help)\n\n"
            "commands:\n",
            CLOISTER_VERSION);
    for (size_t i = 0; i < CL_ARRAY_LEN(commands); i++)
        fprintf(out, "  %-10s %s\n", commands[i].name, commands[i].help);
}

void cl_cli_say(cl_log_level level, const char *cmd, const char *fmt, ...)
{
    char msg[CL_ERR_MSG_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    cl_log_sink *s = cl_log_get_format() == CL_LOG_JSON ? cl_log_sink_open("stderr", NULL) : NULL;
    if (s) {
        cl_log_field f[] = {CL_LOGF_S("command", cmd)};
        cl_log_sink_write(s, level, "cli", f, 1, "%s", msg);
        cl_log_sink_close(s);
    } else {
        fprintf(stderr, "cloister %s: %s\n", cmd, msg);
    }
}

int cl_cli_fail(const char *cmd, const cl_err *err)
{
    cl_cli_say(CL_LOG_ERROR, cmd, "%s", err->msg[0] ? err->msg : "failed");
    return CL_EXIT_FAIL;
}

int cl_cli_usage_error(const char *cmd, const cl_err *err)
{
    cl_cli_say(CL_LOG_ERROR, cmd, "%s", err->msg);
    return CL_EXIT_USAGE;
}

int cl_cli_parse(int argc, char **argv, const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts,
                 cl_strlist *positional)
{
    cl_err err = {0};
    int rc = cl_args_parse(argc, argv, usage, opts, nopts, positional, &err);
    if (rc == 1)
        return CL_EXIT_OK;
    if (rc < 0)
        return cl_cli_usage_error(argv[0], &err);
    return -1;
}

static const command *find(const char *name)
{
    for (size_t i = 0; i < CL_ARRAY_LEN(commands); i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* Request and response tensors are large (one 224x224 RGB image is 600 KB) and short-lived. glibc
 * serves blocks that size with a fresh mmap() each time, so every request page-faults its buffers in
 * again: 1.6 ms per 600 KB measured on the development VM, about 5 ms per ResNet-50 gRPC request
 * (and page faults cost more still inside an SGX enclave). Freed memory is kept for reuse instead,
 * unless the user tuned malloc through the environment: blocks below 4 MiB come from the heap, and
 * the heap keeps up to 256 MiB of free space. Blocks from 4 MiB up (a batch of 7 or more images, a
 * model file being loaded) still get their own mapping, given back when freed: kept in the heap,
 * blocks of varying sizes left holes no later block fit, and a burst of odd batch sizes grew the
 * heap by gigabytes (the engine maps its own large buffers for the same reason, tensor.c). What the
 * heap keeps is given back when `cloister serve` is idle after a burst (serve's on_release_tick). */
static void keep_freed_memory(void)
{
    const char *t = getenv("GLIBC_TUNABLES");
    if ((t && strstr(t, "glibc.malloc.")) || getenv("MALLOC_MMAP_THRESHOLD_") || getenv("MALLOC_TRIM_THRESHOLD_"))
        return;
    mallopt(M_MMAP_THRESHOLD, 4 << 20);
    mallopt(M_TRIM_THRESHOLD, 256 << 20);
}

bool cl_cli_omp_wait_valid(const char *policy)
{
    return strcasecmp(policy, "passive") == 0 || strcasecmp(policy, "active") == 0 ||
           strcmp(policy, "runtime-default") == 0;
}

/* main's argv, whole: what cl_cli_omp_wait_policy re-executes */
static char **g_argv;

/* `cloister serve` shares the cores with its own network and worker threads. With libgomp's default
 * (OMP_WAIT_POLICY unset) a thread that finished its part of a parallel region spins for 300,000
 * iterations before it sleeps (OMP_WAIT_POLICY=active: 30 billion, i.e. it keeps spinning), taking the
 * cores from the threads that read requests and write answers, and from other processes; passive
 * waiting sleeps at once. libgomp reads OMP_WAIT_POLICY in its constructor, which runs when the library
 * is loaded, before main: so the variable is set (or, for runtime-default, removed) here and the program
 * re-executes itself (same pid, same arguments, /proc/self/exe) once, a few milliseconds at start. An
 * explicit --omp-wait-policy (`want`, as the option parser read it) wins over the environment, the
 * environment over the default (passive). */
void cl_cli_omp_wait_policy(const char *want)
{
    const char *have = getenv("OMP_WAIT_POLICY");
    if (!want) {
        if (have)
            return;
        want = "passive";
    }
    bool unset = strcmp(want, "runtime-default") == 0;
    if (unset ? !have : have && strcasecmp(have, want) == 0)
        return;
    char *saved = have ? strdup(have) : NULL;
    if ((unset ? unsetenv("OMP_WAIT_POLICY") : setenv("OMP_WAIT_POLICY", want, 1)) != 0) {
        free(saved);
        return;
    }
    execv("/proc/self/exe", g_argv);
    fprintf(stderr, "cloister serve: cannot re-execute /proc/self/exe to apply --omp-wait-policy %s (%s); the "
            "engine's OpenMP threads wait as the runtime started (set OMP_WAIT_POLICY in the environment)\n", want,
            strerror(errno));
    if (saved)
        setenv("OMP_WAIT_POLICY", saved, 1);
    else
        unsetenv("OMP_WAIT_POLICY");
    free(saved);
}

int main(int argc, char **argv)
{
    g_argv = argv;
    keep_freed_memory();
    int i = 1;
    for (; i < argc && argv[i][0] == '-'; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            print_help(stdout);
            return CL_EXIT_OK;
        } else if (strcmp(argv[i], "--version") == 0) {
            printf("cloister %s\n", CLOISTER_VERSION);
            return CL_EXIT_OK;
        } else if (strcmp(argv[i], "--allow-unlocked-memory") == 0) {
            /* Secrets normally live only in mlock()ed memory; this accepts swappable memory where the
             * memlock limit cannot be raised. A warning is logged when it happens. */
            cl_secmem_set_require_lock(false);
        } else if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            cl_log_level level;
            if (cl_log_parse_level(argv[++i], &level) != 0) {
                fprintf(stderr, "cloister: unknown log level '%s' (debug, info, warn, error, off)\n", argv[i]);
                return CL_EXIT_USAGE;
            }
            cl_log_set_level(level);
        } else if (strcmp(argv[i], "--log-format") == 0 && i + 1 < argc) {
            cl_log_format format;
            if (cl_log_parse_format(argv[++i], &format) != 0) {
                fprintf(stderr, "cloister: unknown log format '%s' (text, json)\n", argv[i]);
                return CL_EXIT_USAGE;
            }
            cl_log_set_format(format);
        } else {
            fprintf(stderr, "cloister: unknown option '%s' (see cloister --help)\n", argv[i]);
            return CL_EXIT_USAGE;
        }
    }
    if (i >= argc) {
        print_help(stderr);
        return CL_EXIT_USAGE;
    }
    if (strcmp(argv[i], "help") == 0) {
        if (i + 1 >= argc) {
            print_help(stdout);
            return CL_EXIT_OK;
        }
        const command *c = find(argv[i + 1]);
        if (!c) {
            fprintf(stderr, "cloister: unknown command '%s' (see cloister help)\n", argv[i + 1]);
            return CL_EXIT_USAGE;
        }
        char *help_argv[] = {argv[i + 1], "--help", NULL};
        return c->fn(2, help_argv);
    }
    const command *c = find(argv[i]);
    if (!c) {
        fprintf(stderr, "cloister: unknown command '%s' (see cloister help)\n", argv[i]);
        return CL_EXIT_USAGE;
    }
    return c->fn(argc - i, argv + i);
}
