/* bench_seal.c — sealing and unsealing throughput against the peer `openssl speed -evp aes-256-gcm`
 * (16 KiB blocks, one core), measured in the same run. Prints one line per path with MB/s and the
 * ratio to OpenSSL; the target is >= 0.80 for the streaming paths.
 *
 * A second line of reference, "plain copy", copies the same file with no crypto: on machines where
 * writing a file is slower than AES-GCM (tmpfs here writes ~1.4 GB/s), it is the real ceiling of
 * the file -> file paths. CLOISTER_SEAL_THREADS=N overrides the number of worker threads.
 *
 * Usage: bench_seal [--size MiB] [--dir DIR] [--repeat N] [--only SUBSTRING]
 *   --dir defaults to /dev/shm when it exists, so the figures measure cloister's streaming pipeline
 *   (read, encrypt, write) rather than the disk; the final fsync is included.
 * With $CLOISTER_BENCH_OUT set, the same figures also go to seal.jsonl there (bench_out.h). */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bench_out.h"
#include "cloister/seal.h"

static double openssl_speed_mbs(void)
{
    FILE *p = popen("openssl speed -evp aes-256-gcm -bytes 16384 -seconds 3 2>/dev/null", "r");
    if (!p)
        return 0;
    char line[512];
    double kbs = 0;
    while (fgets(line, sizeof line, p)) {
        if (strncmp(line, "AES-256-GCM", 11) == 0 || strncmp(line, "aes-256-gcm", 11) == 0) {
            char *last = strrchr(line, ' ');
            if (last)
                kbs = strtod(last + 1, NULL); /* "2631657.36k" = 1000s of bytes per second */
        }
    }
    pclose(p);
    return kbs / 1000.0; /* MB/s (10^6) */
}

static double best_of(int repeat, double (*fn)(void *), void *ctx)
{
    double best = 1e30;
    for (int i = 0; i < repeat; i++) {
        double t = fn(ctx);
        if (t < 0) {
            fprintf(stderr, "bench_seal: run failed\n");
            exit(1);
        }
        if (t < best)
            best = t;
    }
    return best;
}

typedef struct job {
    const char *in, *sealed, *out;
    uint8_t key[CL_SEAL_KEY_LEN];
    uint8_t *buf;
    size_t len;
} job;

static double secs_since(uint64_t t0) { return (double)(cl_now_ns() - t0) / 1e9; }

static double run_seal_file(void *ctx)
{
    job *j = ctx;
    cl_seal_options o = {.key_id = "bench", .overwrite = true};
    cl_err err = {0};
    uint64_t t0 = cl_now_ns();
    if (cl_seal_file(j->in, j->sealed, j->key, &o, &err) != 0) {
        fprintf(stderr, "seal: %s\n", err.msg);
        return -1;
    }
    return secs_since(t0);
}

static double run_open_locked(void *ctx)
{
    job *j = ctx;
    cl_err err = {0};
    uint8_t *plain;
    size_t n;
    uint64_t t0 = cl_now_ns();
    if (cl_seal_open_file(j->sealed, j->key, "bench", &plain, &n, NULL, &err) != 0) {
        fprintf(stderr, "open: %s\n", err.msg);
        return -1;
    }
    double t = secs_since(t0);
    cl_secmem_free(plain);
    return t;
}

static double run_unseal_file(void *ctx)
{
    job *j = ctx;
    cl_err err = {0};
    uint64_t t0 = cl_now_ns();
    if (cl_seal_unseal_file(j->sealed, j->out, j->key, NULL, true, NULL, NULL, &err) != 0) {
        fprintf(stderr, "unseal: %s\n", err.msg);
        return -1;
    }
    return secs_since(t0);
}

/* The machine's own ceiling for file -> file: the same bytes copied with no crypto at all, in the
 * same block size, then fsync'ed and renamed like cloister's output. */
static double run_plain_copy(void *ctx)
{
    job *j = ctx;
    cl_err err = {0};
    uint64_t t0 = cl_now_ns();
    int in = open(j->in, O_RDONLY);
    cl_atomic_file f;
    if (in < 0 || cl_atomic_open(&f, j->out, 0600, true, &err) != 0)
        return -1;
    uint8_t *buf = malloc(CL_SEAL_CHUNK_DEFAULT);
    ssize_t n;
    while ((n = read(in, buf, CL_SEAL_CHUNK_DEFAULT)) > 0)
        if (cl_atomic_write(&f, buf, (size_t)n, &err) != 0)
            return -1;
    close(in);
    free(buf);
    if (cl_atomic_commit(&f, &err) != 0)
        return -1;
    return secs_since(t0);
}

int main(int argc, char **argv)
{
    long mib = 256;
    int repeat = 3;
    const char *only = NULL; /* run just the path whose name contains this */
    struct stat st;
    const char *dir = stat("/dev/shm", &st) == 0 ? "/dev/shm" : "/tmp";
    for (int i = 1; i + 1 < argc; i += 2) {
        if (strcmp(argv[i], "--size") == 0)
            mib = atol(argv[i + 1]);
        else if (strcmp(argv[i], "--dir") == 0)
            dir = argv[i + 1];
        else if (strcmp(argv[i], "--repeat") == 0)
            repeat = atoi(argv[i + 1]);
        else if (strcmp(argv[i], "--only") == 0)
            only = argv[i + 1];
    }
    if (mib <= 0 || repeat <= 0) {
        fprintf(stderr, "usage: bench_seal [--size MiB] [--dir DIR] [--repeat N]\n");
        return 2;
    }
    char in[512], sealed[600], out[600];
    snprintf(in, sizeof in, "%s/cloister-bench-%d.bin", dir, (int)getpid());
    snprintf(sealed, sizeof sealed, "%s.sealed", in);
    snprintf(out, sizeof out, "%s.out", in);

    job j = {.in = in, .sealed = sealed, .out = out, .len = (size_t)mib << 20};
    j.buf = malloc(j.len);
    if (!j.buf)
        return 1;
    for (size_t i = 0; i < j.len; i++)
        j.buf[i] = (uint8_t)(i * 2654435761u >> 13);
    memset(j.key, 7, sizeof j.key);
    cl_err err = {0};
    if (cl_file_write_atomic(in, j.buf, j.len, 0600, true, &err) != 0) {
        fprintf(stderr, "bench_seal: %s\n", err.msg);
        return 1;
    }

    printf("bench_seal: %ld MiB, files in %s, best of %d, chunk %u bytes\n", mib, dir, repeat, CL_SEAL_CHUNK_DEFAULT);
    double peer = openssl_speed_mbs();
    printf("%-34s %9.0f MB/s\n", "peer: openssl speed aes-256-gcm 16K", peer);
    bench_out_config("seal", "%ld MiB, files in %s, best of %d, chunk %u bytes; peer: openssl speed -evp aes-256-gcm "
                     "-bytes 16384 (one core)", mib, dir, repeat, CL_SEAL_CHUNK_DEFAULT);
    const char *peer_name = "openssl speed aes-256-gcm 16K";
    double peer_j = peer > 0 ? peer : NAN; /* the report shows a peer that did not run as "no figure" */
    double copy_mbs = (double)j.len / 1e6 / best_of(repeat, run_plain_copy, &j);
    printf("%-34s %9.0f MB/s   ratio %.2f  (no crypto: the I/O ceiling for file -> file)\n",
           "ceiling: plain copy file -> file", copy_mbs, peer > 0 ? copy_mbs / peer : 0);
    bench_out_figure("seal", &(bench_figure){.metric = "ceiling: plain copy file -> file", .value = copy_mbs, .unit = "MB/s",
                                             .peer = peer_name, .peer_value = peer_j, .ratio_of = "cloister/openssl",
                                             .ratio = copy_mbs / peer_j,
                                             .note = "no crypto: the I/O ceiling for file -> file"});
    struct {
        const char *name;
        double (*fn)(void *);
        const char *note;
    } runs[] = {
        {"seal file -> file", run_seal_file, NULL},
        {"open file -> locked memory", run_open_locked, "what the server does"},
        {"unseal file -> file", run_unseal_file, NULL},
    };
    for (size_t i = 0; i < CL_ARRAY_LEN(runs); i++) {
        if (only && !strstr(runs[i].name, only))
            continue;
        double t = best_of(repeat, runs[i].fn, &j);
        double mbs = (double)j.len / 1e6 / t;
        printf("%-34s %9.0f MB/s   ratio %.2f\n", runs[i].name, mbs, peer > 0 ? mbs / peer : 0);
        bench_out_figure("seal", &(bench_figure){.metric = runs[i].name, .value = mbs, .unit = "MB/s", .peer = peer_name,
                                                 .peer_value = peer_j, .ratio_of = "cloister/openssl",
                                                 .ratio = mbs / peer_j, .goal = ">= 0.80",
                                                 .note = runs[i].note});
    }
    unlink(in);
    unlink(sealed);
    unlink(out);
    free(j.buf);
    return 0;
}
