/* tfs_flags.c — TensorFlow Serving's `tensorflow_model_server` flags for `cloister serve`: the
 * catalogue of every flag of TF Serving's main.cc with what cloister does with it (honoured, accepted
 * without effect and why, refused and why), the option-table entries for the flags cmd_serve.c does
 * not declare itself, last-wins for all of them (as TF's parser), and the start-up step that prints
 * --version, refuses what cannot be honoured safely and warns, one line each, about the flags that
 * have no effect here. Not thread-safe: the CLI's main thread only. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "cloister/serve.h"

typedef enum {
    TFS_SERVE,     /* declared and honoured by cmd_serve.c's own table */
    TFS_HONOURED,  /* declared here, honoured (cl_tfs_flags_apply) */
    TFS_NO_EFFECT, /* accepted, a warning at start-up */
    TFS_REFUSED,   /* accepted only with TF's default value (off / empty), else refused */
} tfs_status;

typedef struct tfs_flag {
    const char *name;
    cl_arg_kind kind;
    tfs_status status;
    const char *why; /* TFS_NO_EFFECT / TFS_REFUSED: the reason; TFS_HONOURED: what it sets */
} tfs_flag;

/* Every flag of tensorflow_model_server (TF Serving 2.x model_servers/main.cc), plus use_tflite_model
 * (the older name of prefer_tflite_model) and response_compression_algorithm. docs/serve.md has the
 * same table; tests/integration/serve_tfs_flags.sh passes every one of them. */
static const tfs_flag g_flags[CL_TFS_FLAGS] = {
    {"port", CL_ARG_LONG, TFS_SERVE, NULL},
    {"grpc_socket_path", CL_ARG_STRING, TFS_REFUSED,
     "gRPC is served over TLS on --port only; a UNIX socket would be an unauthenticated plaintext endpoint"},
    {"rest_api_port", CL_ARG_LONG, TFS_SERVE, NULL},
    {"rest_api_num_threads", CL_ARG_LONG, TFS_SERVE, NULL},
    {"rest_api_timeout_in_ms", CL_ARG_LONG, TFS_HONOURED,
     "the request timeout (--request_timeout_ms): one timeout for REST, gRPC and TLS handshakes"},
    {"rest_api_enable_cors_support", CL_ARG_BOOL, TFS_NO_EFFECT, "no CORS headers are sent"},
    {"enable_batching", CL_ARG_BOOL, TFS_SERVE, NULL},
    {"allow_version_labels_for_unavailable_models", CL_ARG_BOOL, TFS_HONOURED,
     "a version label may point at a version not loaded yet (unless it moves an existing label)"},
    {"batching_parameters_file", CL_ARG_STRING, TFS_SERVE, NULL},
    {"enable_per_model_batching_parameters", CL_ARG_BOOL, TFS_NO_EFFECT,
     "no per-model batching_params.pbtxt is read: --batching_parameters_file applies to every model"},
    {"model_config_file", CL_ARG_STRING, TFS_SERVE, NULL},
    {"model_config_file_poll_wait_seconds", CL_ARG_LONG, TFS_HONOURED,
     "re-read --model_config_file every N seconds and apply it when it changed (0: never)"},
    {"model_name", CL_ARG_STRING, TFS_SERVE, NULL},
    {"model_base_path", CL_ARG_STRING, TFS_SERVE, NULL},
    {"num_load_threads", CL_ARG_LONG, TFS_NO_EFFECT, "models are loaded one after another"},
    {"num_unload_threads", CL_ARG_LONG, TFS_NO_EFFECT, "models are unloaded one after another"},
    {"max_num_load_retries", CL_ARG_LONG, TFS_HONOURED,
     "a version whose load fails is tried again N times (default 0 here, TF: 5)"},
    {"load_retry_interval_micros", CL_ARG_LONG, TFS_HONOURED,
     "the wait before each load retry (default 60000000, as TF)"},
    {"file_system_poll_wait_seconds", CL_ARG_LONG, TFS_SERVE, NULL},
    {"flush_filesystem_caches", CL_ARG_BOOL, TFS_NO_EFFECT, "model files are read once into memory"},
    {"tensorflow_session_parallelism", CL_ARG_LONG, TFS_HONOURED,
     "the engine's threads per model run (--engine-threads), unless --tensorflow_intra_op_parallelism is given"},
    {"tensorflow_session_config_file", CL_ARG_STRING, TFS_NO_EFFECT,
     "there is no TensorFlow session (use --tensorflow_intra_op_parallelism for the engine's threads)"},
    {"tensorflow_intra_op_parallelism", CL_ARG_LONG, TFS_HONOURED,
     "the engine's threads per model run (--engine-threads; 0: all cores)"},
    {"tensorflow_inter_op_parallelism", CL_ARG_LONG, TFS_NO_EFFECT,
     "the engine runs a model's operators one after another; concurrent requests run on --workers"},
    {"use_alts_credentials", CL_ARG_BOOL, TFS_REFUSED,
     "ALTS is not available; cloister authenticates with TLS (--ssl_config_file) or attested TLS"},
    {"ssl_config_file", CL_ARG_STRING, TFS_SERVE, NULL},
    {"platform_config_file", CL_ARG_STRING, TFS_NO_EFFECT,
     "models are ONNX files run by cloister's engine, not TensorFlow platforms"},
    {"per_process_gpu_memory_fraction", CL_ARG_STRING, TFS_NO_EFFECT, "no GPU is used (CPU inference in the TEE)"},
    {"saved_model_tags", CL_ARG_STRING, TFS_NO_EFFECT, "a SavedModel loads its MetaGraphDef tagged `serve` whatever this says"},
    {"grpc_channel_arguments", CL_ARG_STRING, TFS_HONOURED,
     "grpc.max_receive_message_length=N sets --max_request_bytes (both APIs); other arguments are warned about"},
    {"grpc_max_threads", CL_ARG_LONG, TFS_NO_EFFECT,
     "gRPC is served by an event loop; models run on --workers threads"},
    {"enable_model_warmup", CL_ARG_BOOL, TFS_HONOURED,
     "replay assets.extra/tf_serving_warmup_requests (or one synthetic request per signature) before a version "
     "is served (default off here, TF: on)"},
    {"num_request_iterations_for_warmup", CL_ARG_LONG, TFS_HONOURED, "how often each warm-up request runs (default 1)"},
    {"version", CL_ARG_BOOL, TFS_HONOURED, "print the version and exit"},
    {"monitoring_config_file", CL_ARG_STRING, TFS_NO_EFFECT,
     "Prometheus metrics are always served at /monitoring/prometheus/metrics on the REST port, over its TLS"},
    {"remove_unused_fields_from_bundle_metagraph", CL_ARG_BOOL, TFS_NO_EFFECT, "there is no MetaGraphDef"},
    {"prefer_tflite_model", CL_ARG_BOOL, TFS_NO_EFFECT, "TensorFlow Lite models are not supported"},
    {"use_tflite_model", CL_ARG_BOOL, TFS_NO_EFFECT, "TensorFlow Lite models are not supported"},
    {"num_tflite_pools", CL_ARG_LONG, TFS_NO_EFFECT, "TensorFlow Lite models are not supported"},
    {"num_tflite_interpreters_per_pool", CL_ARG_LONG, TFS_NO_EFFECT, "TensorFlow Lite models are not supported"},
    {"enable_signature_method_name_check", CL_ARG_BOOL, TFS_NO_EFFECT,
     "Classify, Regress and MultiInference always check the method_name of a signatures.json signature"},
    {"xla_cpu_compilation_enabled", CL_ARG_BOOL, TFS_NO_EFFECT, "there is no XLA JIT"},
    {"xla_gpu_compilation_enabled", CL_ARG_BOOL, TFS_NO_EFFECT, "there is no XLA JIT and no GPU"},
    {"enable_profiler", CL_ARG_BOOL, TFS_NO_EFFECT, "no profiler service is offered (it would expose the models' "
                                                    "execution to the host)"},
    {"thread_pool_factory_config_file", CL_ARG_STRING, TFS_NO_EFFECT, "there are no TensorFlow thread pools"},
    {"mixed_precision", CL_ARG_STRING, TFS_NO_EFFECT, "the engine computes in float32"},
    {"skip_initialize_tpu", CL_ARG_BOOL, TFS_NO_EFFECT, "no TPU is used"},
    {"enable_grpc_healthcheck_service", CL_ARG_BOOL, TFS_HONOURED,
     "serve grpc.health.v1.Health (Check, Watch) on the gRPC port: \"\" is SERVING while the server runs"},
    {"enable_serialization_as_tensor_content", CL_ARG_BOOL, TFS_NO_EFFECT,
     "responses carry typed value fields; TF's clients (tf.make_ndarray) read both forms"},
    {"response_compression_algorithm", CL_ARG_STRING, TFS_HONOURED,
     "gRPC responses compressed with identity, deflate or gzip when the client accepts it"},
};

/* --grpc_channel_arguments "k=v,k=v": grpc.max_receive_message_length is the largest request (-1:
 * cloister's largest, 2 GiB); every other argument gets a warning. Returns -1 to go on, or CL_EXIT_USAGE. */
static int channel_arguments(const char *list, long *max_bytes)
{
    const char *p = list;
    while (*p) {
        size_t n = strcspn(p, ",");
        char item[256];
        if (n == 0 || n >= sizeof item) {
            fprintf(stderr, "cloister serve: --grpc_channel_arguments: '%.*s' is not KEY=VALUE\n", (int)n, p);
            return CL_EXIT_USAGE;
        }
        memcpy(item, p, n);
        item[n] = '\0';
        p += n + (p[n] == ',');
        char *eq = strchr(item, '=');
        if (!eq || eq == item) {
            fprintf(stderr, "cloister serve: --grpc_channel_arguments: '%s' is not KEY=VALUE\n", item);
            return CL_EXIT_USAGE;
        }
        *eq = '\0';
        const char *value = eq + 1;
        if (strcmp(item, "grpc.max_receive_message_length") == 0) {
            char *end = NULL;
            errno = 0;
            long v = strtol(value, &end, 10);
            if (errno || end == value || *end || (v != -1 && (v < 1024 || v > (1L << 31)))) {
                fprintf(stderr, "cloister serve: --grpc_channel_arguments: grpc.max_receive_message_length wants "
                                "1024 to 2147483648 bytes (or -1), not '%s'\n", value);
                return CL_EXIT_USAGE;
            }
            *max_bytes = v == -1 ? 1L << 31 : v;
            CL_INFO("serve", "largest request: %ld bytes (grpc.max_receive_message_length, both APIs)", *max_bytes);
        } else {
            CL_WARN("serve", "--grpc_channel_arguments: %s has no effect in cloister serve: its gRPC server is not "
                    "gRPC core (only grpc.max_receive_message_length is honoured)", item);
        }
    }
    return -1;
}

static const tfs_flag *find_flag(const char *name)
{
    for (size_t i = 0; i < CL_TFS_FLAGS; i++)
        if (strcmp(g_flags[i].name, name) == 0)
            return &g_flags[i];
    return NULL;
}

size_t cl_tfs_flags_table(cl_tfs_flags *f, const cl_opt *opts, size_t nopts, cl_opt *out, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < nopts && n < cap; i++) {
        out[n] = opts[i];
        if (find_flag(opts[i].name))
            out[n].last_wins = true;
        n++;
    }
    for (size_t i = 0; i < CL_TFS_FLAGS && n < cap; i++) {
        const tfs_flag *t = &g_flags[i];
        bool declared = false;
        for (size_t j = 0; j < nopts; j++)
            declared = declared || strcmp(opts[j].name, t->name) == 0;
        if (declared)
            continue;
        cl_opt o = {.name = t->name, .kind = t->kind, .last_wins = true, .given = &f->given[i],
                    .min = LONG_MIN, .max = LONG_MAX};
        o.dest = t->kind == CL_ARG_BOOL ? (void *)&f->b[i] : t->kind == CL_ARG_LONG ? (void *)&f->l[i]
                                                                                    : (void *)&f->s[i];
        o.metavar = t->kind == CL_ARG_LONG ? "N" : t->kind == CL_ARG_STRING ? "VALUE" : NULL;
        if (strcmp(t->name, "rest_api_timeout_in_ms") == 0) {
            o.dest = f->timeout_ms;
            o.metavar = "MS";
            o.min = 100;
            o.max = 3600000;
        } else if (strcmp(t->name, "tensorflow_intra_op_parallelism") == 0) {
            o.dest = f->engine_threads;
            o.min = 0;
            o.max = 1024;
        } else if (strcmp(t->name, "grpc_channel_arguments") == 0) {
            int rc = f->s[i] ? channel_arguments(f->s[i], f->max_bytes) : -1;
            if (rc >= 0)
                return rc;
        } else if (strcmp(t->name, "tensorflow_session_parallelism") == 0) {
            o.min = 0;
            o.max = 1024;
        }
        snprintf(f->help[i], sizeof f->help[i], "TF Serving: %s%s", t->status == TFS_HONOURED ? ""
                 : t->status == TFS_REFUSED ? "refused unless off/empty: " : "no effect: ", t->why);
        o.help = f->help[i];
        out[n++] = o;
    }
    return n;
}

int cl_tfs_flags_apply(cl_tfs_flags *f)
{
    for (size_t i = 0; i < CL_TFS_FLAGS; i++) {
        const tfs_flag *t = &g_flags[i];
        if (!f->given[i])
            continue;
        if (strcmp(t->name, "version") == 0 && f->b[i]) {
            printf("cloister serve %s (a TensorFlow Serving-compatible model server; TensorFlow ModelServer "
                   "flags accepted, see docs/serve.md)\n", CLOISTER_VERSION);
            return CL_EXIT_OK;
        }
    }
    for (size_t i = 0; i < CL_TFS_FLAGS; i++) {
        const tfs_flag *t = &g_flags[i];
        if (!f->given[i])
            continue;
        if (t->status == TFS_REFUSED) {
            bool on = t->kind == CL_ARG_BOOL ? f->b[i] : t->kind == CL_ARG_STRING ? f->s[i] != NULL : f->l[i] != 0;
            if (on) {
                fprintf(stderr, "cloister serve: --%s is not supported: %s\n", t->name, t->why);
                return CL_EXIT_USAGE;
            }
        } else if (t->status == TFS_NO_EFFECT) {
            if (strcmp(t->name, "per_process_gpu_memory_fraction") == 0 && f->s[i]) {
                char *end = NULL;
                errno = 0;
                double v = strtod(f->s[i], &end);
                if (errno || end == f->s[i] || *end || v < 0 || v > 1) {
                    fprintf(stderr, "cloister serve: option --%s wants a number from 0 to 1, not '%s'\n", t->name,
                            f->s[i]);
                    return CL_EXIT_USAGE;
                }
            }
            CL_WARN("serve", "--%s has no effect in cloister serve: %s", t->name, t->why);
        } else if (strcmp(t->name, "grpc_channel_arguments") == 0) {
            int rc = f->s[i] ? channel_arguments(f->s[i], f->max_bytes) : -1;
            if (rc >= 0)
                return rc;
        } else if (strcmp(t->name, "enable_grpc_healthcheck_service") == 0) {
            *f->grpc_health = f->b[i];
            if (f->b[i])
                CL_INFO("serve", "gRPC health checking served (grpc.health.v1.Health: Check, Watch)");
        } else if (strcmp(t->name, "response_compression_algorithm") == 0) {
            cl_serve_compression alg = CL_SERVE_COMPRESS_NONE;
            cl_err err = {0};
            if (cl_serve_compression_parse(f->s[i], &alg, &err) != 0) {
                fprintf(stderr, "cloister serve: --%s: %s\n", t->name, err.msg);
                return CL_EXIT_USAGE;
            }
            *f->response_compression = (int)alg;
            if (alg != CL_SERVE_COMPRESS_NONE)
                CL_INFO("serve", "gRPC responses are compressed with %s for clients that accept it",
                        cl_serve_compression_name(alg));
        } else if (strcmp(t->name, "tensorflow_session_parallelism") == 0) {
            size_t intra = 0;
            while (strcmp(g_flags[intra].name, "tensorflow_intra_op_parallelism") != 0)
                intra++;
            if (!f->given[intra] && *f->engine_threads == 0)
                *f->engine_threads = f->l[i];
        }
    }
    if (*f->rest_threads > 64)
        CL_WARN("serve", "--rest_api_num_threads %ld: cloister serves REST on event loops, at most 64 are started",
                *f->rest_threads);
    CL_INFO("serve", "engine threads per model run: %ld%s", *f->engine_threads,
            *f->engine_threads ? "" : " (all cores)");
    return -1;
}

bool cl_tfs_flag_value(const cl_tfs_flags *f, const char *name, long *value)
{
    for (size_t i = 0; i < CL_TFS_FLAGS; i++) {
        if (strcmp(g_flags[i].name, name) != 0)
            continue;
        if (!f->given[i])
            return false;
        *value = g_flags[i].kind == CL_ARG_BOOL ? (long)f->b[i] : f->l[i];
        return true;
    }
    return false;
}
