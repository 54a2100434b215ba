/* cmd_bench.c — `cloister bench`: load generation against a TF Serving server (as the seeds'
 * resnet_client_grpc.py -batch -cnum -loop): C threads, each with its own connection, send warm-up
 * requests, then together N Predict requests of batch B; prints throughput (requests/s and items/s),
 * latency (mean, p50, p90, p99, max) and errors by status code. Exit 1 if any measured request failed.
 * A connection that cannot be made (or breaks) is tried again after a delay that doubles from 10 ms
 * to 1 s, so a server that went away is not hammered with connection attempts; a thread that could
 * not reach the server for --max-unreachable-s stops, and its requests count as not sent. */
#include <pthread.h>
#include <stdio.h>
#include <time.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"

typedef struct bench_shared {
    cl_client *client;
    const cl_client_request *req;
    long warmup;
    long max_unreachable_ms;
    pthread_barrier_t start;
} bench_shared;

typedef struct bench_worker {
    bench_shared *sh;
    pthread_t tid;
    long requests;
    uint64_t *lat_ns; /* per successful request */
    long ok;
    long errors[17];
    long other_errors;
    cl_err first_err;
    bool connect_failed;
    long not_sent; /* given up: the server was unreachable for too long */
    uint64_t t0, t1;
} bench_worker;

static void count_error(bench_worker *w, cl_serve_code code, const cl_err *err)
{
    if ((unsigned)code <= 16)
        w->errors[code]++;
    else
        w->other_errors++;
    if (!w->first_err.msg[0])
        w->first_err = *err;
}

/* Waiting before the next attempt when the server could not be reached: 10 ms, doubling to 1 s, each
 * wait a random 50-100 % of that so the threads do not come back in step. */
typedef struct backoff {
    unsigned ms;
    uint64_t down_since; /* 0: up */
    unsigned seed;
} backoff;

static void backoff_wait(backoff *b)
{
    b->ms = b->ms ? (b->ms >= 500 ? 1000 : b->ms * 2) : 10;
    unsigned ms = b->ms / 2 + (unsigned)rand_r(&b->seed) % (b->ms / 2 + 1);
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static void *bench_run(void *arg)
{
    bench_worker *w = arg;
    bench_shared *sh = w->sh;
    cl_err err = {0};
    backoff bo = {.seed = (unsigned)(uintptr_t)w ^ (unsigned)cl_now_ns()};
    cl_client_conn *conn = cl_client_connect(sh->client, &err);
    if (!conn) {
        w->connect_failed = true;
        w->first_err = err;
    }
    for (long i = 0; conn && i < sh->warmup; i++) {
        cl_client_response r;
        if (cl_client_predict(conn, sh->req, &r, &err) == 0)
            cl_client_response_clear(&r);
    }
    pthread_barrier_wait(&sh->start);
    w->t0 = cl_now_ns();
    for (long i = 0; i < w->requests; i++) {
        bool down = !conn || !cl_client_conn_up(conn);
        if (down) {
            uint64_t now = cl_now_ns();
            if (!bo.down_since)
                bo.down_since = now;
            else if (now - bo.down_since >= (uint64_t)sh->max_unreachable_ms * 1000000u) {
                w->not_sent = w->requests - i;
                break;
            }
            if (i > 0 || !conn)
                backoff_wait(&bo);
        }
        if (!conn && !(conn = cl_client_connect(sh->client, &err))) {
            count_error(w, CL_SC_UNAVAILABLE, &err);
            continue;
        }
        cl_client_response r;
        uint64_t s = cl_now_ns();
        if (cl_client_predict(conn, sh->req, &r, &err) == 0) {
            w->lat_ns[w->ok++] = cl_now_ns() - s;
            cl_client_response_clear(&r);
            bo.ms = 0;
            bo.down_since = 0;
        } else {
            count_error(w, cl_client_conn_last_code(conn), &err);
            if (cl_client_conn_up(conn)) /* the server answered: it is reachable */
                bo.ms = 0, bo.down_since = 0;
        }
    }
    w->t1 = cl_now_ns();
    cl_client_conn_free(conn);
    return NULL;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct_ms(const uint64_t *v, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p / 100.0 * (double)n + 0.5);
    if (i > 0)
        i--;
    if (i >= n)
        i = n - 1;
    return (double)v[i] / 1e6;
}

int cl_cmd_bench(int argc, char **argv)
{
    cl_cli_client_args ca = {0};
    cl_cli_input_args ia = {.seed = 1};
    const char *model = NULL, *signature = NULL;
    long version = 0, batch = 1, conc = 1, requests = 100, warmup = 5, max_unreachable_s = 10;
    cl_opt opts[CL_CLI_CLIENT_OPTS + CL_CLI_INPUT_OPTS + 8];
    size_t n = cl_cli_client_opts(&ca, opts);
    const cl_opt own[] = {
        {"model", CL_ARG_STRING, &model, "NAME", "model name", true},
        {"version", CL_ARG_LONG, &version, "V", "model version (default: the latest)", false, 1, INT64_MAX},
        {"signature", CL_ARG_STRING, &signature, "NAME", "signature (default: serving_default)", false},
        {"batch", CL_ARG_LONG, &batch, "B", "batch size of each request (default 1)", false, 1, 65536},
        {"concurrency", CL_ARG_LONG, &conc, "C", "parallel connections, one thread each (default 1)", false, 1, 1024},
        {"requests", CL_ARG_LONG, &requests, "N", "measured requests in total (default 100)", false, 1, 100000000},
        {"warmup", CL_ARG_LONG, &warmup, "W", "unmeasured requests per connection first (default 5)", false, 0,
         1000000},
        {"max-unreachable-s", CL_ARG_LONG, &max_unreachable_s, "S", "a connection that cannot reach the server for "
                                                                   "this long stops; its requests count as not sent "
                                                                   "(default 10; reconnection waits double from "
                                                                   "10 ms to 1 s)", false, 1, 86400},
    };
    memcpy(opts + n, own, sizeof own);
    n += CL_ARRAY_LEN(own);
    n += cl_cli_input_opts(&ia, opts + n, true);
    const cl_cmd_usage usage = {
        "cloister bench --server HOST:PORT [--rest] [TLS options] --model NAME (--image FILE | --input X.npy |\n"
        "               --random) --batch B --concurrency C --requests N [--warmup W]",
        "Measures a TensorFlow Serving server: C threads, each with its own connection (gRPC, or REST with --rest;\n"
        "TLS, mutual TLS or --attest as for `cloister predict`), send W warm-up requests each, then N Predict\n"
        "requests of batch B in total. Prints throughput (requests/s, items/s), latency (mean, p50, p90, p99,\n"
        "max) and failed requests by status code. Exit 1 if any measured request failed."};
    int rc = cl_cli_parse(argc, argv, &usage, opts, n, NULL);
    if (rc >= 0) {
        cl_cli_client_close(&ca);
        cl_strlist_free(&ia.images);
        cl_strlist_free(&ia.npys);
        return rc;
    }
    cl_err err = {0};
    cl_client_conn *conn = NULL;
    cl_cli_inputs in = {0};
    bench_worker *ws = NULL;
    uint64_t *all = NULL;
    bench_shared sh = {0};
    bool barrier = false;
    rc = CL_EXIT_FAIL;
    if (cl_cli_client_open(&ca, &err) != 0) {
        rc = err.code == CL_E_INVALID ? cl_cli_usage_error("bench", &err) : cl_cli_fail("bench", &err);
        goto out;
    }
    if (!(conn = cl_client_connect(ca.client, &err))) {
        cl_cli_fail("bench", &err);
        goto out;
    }
    cl_cli_print_attested("bench", conn);
    if (cl_cli_inputs_build(conn, model, version, &ia, batch, &in, &err) != 0) {
        rc = err.code == CL_E_INVALID && cl_client_conn_last_code(conn) == CL_SC_OK ? cl_cli_usage_error("bench", &err)
                                                                                    : cl_cli_fail("bench", &err);
        goto out;
    }
    cl_client_conn_free(conn);
    conn = NULL;
    cl_client_request req = {.model = model, .version = version, .signature = signature};
    cl_cli_inputs_request(&in, &req);
    int64_t items = in.batch > 0 ? in.batch : batch;
    sh.client = ca.client;
    sh.req = &req;
    sh.warmup = warmup;
    sh.max_unreachable_ms = max_unreachable_s * 1000;
    ws = calloc((size_t)conc, sizeof *ws);
    all = calloc((size_t)requests, sizeof *all);
    if (!ws || !all || pthread_barrier_init(&sh.start, NULL, (unsigned)conc) != 0) {
        cl_err_nomem(&err);
        cl_cli_fail("bench", &err);
        goto out;
    }
    barrier = true;
    size_t off = 0;
    for (long i = 0; i < conc; i++) {
        ws[i].sh = &sh;
        ws[i].requests = requests / conc + (i < requests % conc ? 1 : 0);
        ws[i].lat_ns = all + off;
        off += (size_t)ws[i].requests;
    }
    fprintf(stderr, "cloister bench: %ld connection%s (%s), batch %lld, %ld request%s after %ld warm-up request%s "
            "on each connection\n", conc, conc == 1 ? "" : "s", ca.rest ? "REST" : "gRPC", (long long)items, requests,
            requests == 1 ? "" : "s", warmup, warmup == 1 ? "" : "s");
    long started = 0;
    for (; started < conc; started++)
        if (pthread_create(&ws[started].tid, NULL, bench_run, &ws[started]) != 0)
            break;
    if (started < conc) {
        /* cannot happen in practice; the barrier would wait forever */
        cl_err_set(&err, CL_E_NOMEM, "cannot start %ld threads", conc);
        cl_cli_fail("bench", &err);
        exit(CL_EXIT_FAIL);
    }
    for (long i = 0; i < conc; i++)
        pthread_join(ws[i].tid, NULL);
    uint64_t t0 = UINT64_MAX, t1 = 0;
    long ok = 0, failed = 0, connect_failed = 0, not_sent = 0;
    long errors[17] = {0}, other = 0;
    const cl_err *first = NULL;
    size_t nlat = 0;
    for (long i = 0; i < conc; i++) {
        if (ws[i].t0 < t0)
            t0 = ws[i].t0;
        if (ws[i].t1 > t1)
            t1 = ws[i].t1;
        ok += ws[i].ok;
        connect_failed += ws[i].connect_failed;
        not_sent += ws[i].not_sent;
        for (int c = 0; c <= 16; c++) {
            errors[c] += ws[i].errors[c];
            failed += ws[i].errors[c];
        }
        other += ws[i].other_errors;
        failed += ws[i].other_errors;
        if (!first && ws[i].first_err.msg[0])
            first = &ws[i].first_err;
        memmove(all + nlat, ws[i].lat_ns, (size_t)ws[i].ok * sizeof *all);
        nlat += (size_t)ws[i].ok;
    }
    qsort(all, nlat, sizeof *all, cmp_u64);
    double secs = t1 > t0 ? (double)(t1 - t0) / 1e9 : 0;
    double sum = 0;
    for (size_t i = 0; i < nlat; i++)
        sum += (double)all[i];
    printf("requests: %ld ok, %ld failed in %.3f s\n", ok, failed, secs);
    printf("throughput: %.1f req/s, %.1f items/s\n", secs > 0 ? (double)ok / secs : 0,
           secs > 0 ? (double)ok * (double)items / secs : 0);
    printf("latency ms: mean %.3f  p50 %.3f  p90 %.3f  p99 %.3f  max %.3f\n", nlat ? sum / (double)nlat / 1e6 : 0,
           pct_ms(all, nlat, 50), pct_ms(all, nlat, 90), pct_ms(all, nlat, 99), nlat ? (double)all[nlat - 1] / 1e6 : 0);
    printf("errors: %ld", failed);
    for (int c = 0; c <= 16; c++)
        if (errors[c])
            printf("  %s %ld", cl_serve_code_name((cl_serve_code)c), errors[c]);
    if (other)
        printf("  other %ld", other);
    printf("\n");
    if (not_sent)
        printf("not sent: %ld (the server was unreachable for %ld s)\n", not_sent, max_unreachable_s);
    fflush(stdout);
    if (failed || not_sent) {
        fprintf(stderr, "cloister bench: %ld of %ld request%s failed%s%s; first error: %s\n", failed + not_sent,
                requests, requests == 1 ? "" : "s", connect_failed ? " (some connections could not be made)" : "",
                not_sent ? " or were not sent" : "", first ? first->msg : "?");
        goto out;
    }
    rc = CL_EXIT_OK;
out:
    if (barrier)
        pthread_barrier_destroy(&sh.start);
    free(ws);
    free(all);
    cl_cli_inputs_clear(&in);
    cl_client_conn_free(conn);
    cl_cli_client_close(&ca);
    cl_strlist_free(&ia.images);
    cl_strlist_free(&ia.npys);
    return rc;
}
