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
/* "cloister <cmd>: <message>" on stderr; with --log-format json a JSON log line instead (module
 * "cli", field "command"), written whatever the log level. cl_cli_fail and cl_cli_usage_error print
 * through it. */
void cl_cli_say(cl_log_level level, const char *cmd, const char *fmt, ...) CL_PRINTF(3, 4);

/* Parses a subcommand's options; returns -1 to continue, or the exit code to return now. */
int cl_cli_parse(int argc, char **argv, const cl_cmd_usage *usage, const cl_opt *opts, size_t nopts,
                 cl_strlist *positional);

/* `cloister serve --omp-wait-policy passive|active|runtime-default` (main.c): whether a value is one of
 * those, and, called by `serve` right after its options are parsed (before anything is opened or
 * started), setting OMP_WAIT_POLICY to `want` (NULL: passive unless the environment sets it;
 * runtime-default removes it) and re-executing the program once, with main's whole argv, when that
 * changes it, since libgomp reads the variable only when it is loaded. Returns only when nothing had to
 * change or the re-execution failed (a warning is printed). */
bool cl_cli_omp_wait_valid(const char *policy);
void cl_cli_omp_wait_policy(const char *want);

/* TensorFlow Serving's flags for `cloister serve` (tfs_flags.c): every flag of tensorflow_model_server
 * is accepted. cl_tfs_flags_table copies serve's own table into `out` (room for nopts + CL_TFS_FLAGS),
 * makes TF's flags among them last-wins, and appends the TF flags serve does not declare, writing into
 * `f` (and into the targets below for the ones that set serve's values). After parsing,
 * cl_tfs_flags_apply prints --version (returns CL_EXIT_OK), refuses a flag that cannot be honoured
 * safely (CL_EXIT_USAGE, message on stderr), warns once per flag given that has no effect here, maps
 * the honoured ones, and returns -1 to go on. */
#define CL_TFS_FLAGS 50
typedef struct cl_tfs_flags {
    long *timeout_ms, *engine_threads, *rest_threads, *max_bytes; /* serve's values, set before the table */
    bool *grpc_health;              /* --enable_grpc_healthcheck_service */
    int *response_compression;      /* --response_compression_algorithm: a cl_serve_compression */
    bool given[CL_TFS_FLAGS], b[CL_TFS_FLAGS];
    long l[CL_TFS_FLAGS];
    const char *s[CL_TFS_FLAGS];
    char help[CL_TFS_FLAGS][256];
} cl_tfs_flags;
size_t cl_tfs_flags_table(cl_tfs_flags *f, const cl_opt *opts, size_t nopts, cl_opt *out, size_t cap);
int cl_tfs_flags_apply(cl_tfs_flags *f);
/* The value of a TF flag declared by tfs_flags.c (booleans as 0/1) when it was given; false if not. */
bool cl_tfs_flag_value(const cl_tfs_flags *f, const char *name, long *value);

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

/* ---- the DCAP collateral options (dcap_opts.c), shared by keyserver serve, attest verify and the
 * clients' --attest */
#include "cloister/dcap.h"

typedef struct cl_cli_dcap_args {
    const char *root, *pccs_url, *pccs_ca, *cache;
    cl_strlist files;
    long api_version, timeout_ms, max_age, refresh;
    cl_dcap_config cfg; /* filled by cl_cli_dcap_config */
} cl_cli_dcap_args;

#define CL_CLI_DCAP_OPTS 9
/* Writes the CL_CLI_DCAP_OPTS option table entries to opts. */
size_t cl_cli_dcap_opts(cl_cli_dcap_args *a, cl_opt *opts);
/* Whether any of them was given. */
bool cl_cli_dcap_given(const cl_cli_dcap_args *a);
/* The configuration they make (pointing into a and argv), or NULL when none was given. */
const cl_dcap_config *cl_cli_dcap_config(cl_cli_dcap_args *a, int64_t now_unix);
void cl_cli_dcap_free(cl_cli_dcap_args *a);

/* ---- the sim provider's TDX mode (cmd_attest.c; `attest measure` and `provision`) */
#include "cloister/attest.h"

/* --sim-tdx, --sim-mrtd HEX and --sim-rtmr I=HEX (repeatable) into a provider configuration; the
 * values live in `store`, which must outlive cfg. CL_E_INVALID for bad values or MRTD/RTMRs without
 * --sim-tdx. */
typedef struct cl_cli_sim_tdx {
    bool tdx;
    const char *mrtd;
    cl_strlist rtmrs;
    uint8_t store[5][CL_TDX_MEAS_LEN];
} cl_cli_sim_tdx;
#define CL_CLI_SIM_TDX_OPTS 3
size_t cl_cli_sim_tdx_opts(cl_cli_sim_tdx *a, cl_opt *opts);
int cl_cli_sim_tdx_apply(cl_cli_sim_tdx *a, cl_attest_provider_config *cfg, cl_err *err);

/* ---- shared by `cloister predict` and `cloister bench` (client_common.c) */
#include "cloister/client.h"

/* Connection options: server, protocol, TLS, attestation. */
typedef struct cl_cli_client_args {
    const char *server, *ca, *cert, *key, *server_name, *attest;
    cl_strlist trust_sim;
    cl_cli_dcap_args dcap; /* with --attest: real SGX/TDX evidence */
    long timeout_ms;
    bool rest, plaintext;
    /* built by cl_cli_client_open */
    cl_policy *policy;
    cl_attest_verifier *verifier;
    cl_dcap_source *dcap_source;
    cl_client *client;
} cl_cli_client_args;

/* Input options: images (decoded and preprocessed here, or sent encoded), .npy files, random data. */
typedef struct cl_cli_input_args {
    cl_strlist images, npys;
    bool image_bytes, random, center_crop;
    const char *mean, *std, *scale, *resize, *size, *input_name, *preprocess;
    long shorter_side;
    long seed; /* --random (set the default, 1, before parsing) */
    long dim;  /* --random: the size of dynamic dimensions besides the batch */
} cl_cli_input_args;

/* What a request is built from; owned, released by cl_cli_inputs_clear. */
typedef struct cl_cli_inputs {
    cl_serve_tensor *tensors;
    size_t n_tensors;
    uint8_t **bytes;
    size_t *bytes_len;
    size_t n_bytes;
    char *bytes_name;
    const char **sources; /* per batch element: file name or NULL */
    size_t n_sources;
    int64_t batch;        /* batch size of the request (first dimension), -1 if unknown */
} cl_cli_inputs;

/* Appends the option table entries (at most CL_CLI_CLIENT_OPTS / CL_CLI_INPUT_OPTS) to opts. */
#define CL_CLI_CLIENT_OPTS (11 + CL_CLI_DCAP_OPTS)
#define CL_CLI_INPUT_OPTS 15
size_t cl_cli_client_opts(cl_cli_client_args *a, cl_opt *opts);
size_t cl_cli_input_opts(cl_cli_input_args *a, cl_opt *opts, bool with_random);
/* Loads the policy and sim trust, creates the client. */
int cl_cli_client_open(cl_cli_client_args *a, cl_err *err);
void cl_cli_client_close(cl_cli_client_args *a);
/* Prints the attested identity of the server (stderr) once. */
void cl_cli_print_attested(const char *cmd, const cl_client_conn *conn);
/* Builds the inputs. The model's metadata is fetched over `conn` when needed (images, nameless .npy,
 * random data). batch > 0 replicates images / batch-1 .npy tensors (bench); 0 sends what was given. */
int cl_cli_inputs_build(cl_client_conn *conn, const char *model, int64_t version, const cl_cli_input_args *a,
                        int64_t batch, cl_cli_inputs *in, cl_err *err);
void cl_cli_inputs_request(const cl_cli_inputs *in, cl_client_request *req);
void cl_cli_inputs_clear(cl_cli_inputs *in);

#endif
