/* test_retry.c — the retry schedules that --help and the docs state: the provisioning client's delays
 * between rounds (cl_provision_backoff_ms: doubling to 5 s, random jitter only ever shortening a delay,
 * so the sums `cloister serve --help` and `cloister provision --help` print hold), and the model
 * repository's waits before asking again for a key it was refused (cl_repo_key_retry_delay_s); and the
 * stop token that ends those waits at shutdown: its sleeps and socket waits, and a fetch from a key
 * server that is gone (in its backoff) or hung (in its TLS handshake) stopped from another thread. */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "cloister/keyserver.h"
#include "cloister/repo.h"
#include "testutil.h"

/* The longest total wait over `attempts` rounds: every jitter byte 0 (no shortening). */
static long longest_total_ms(int first, int attempts)
{
    long sum = 0;
    for (int round = 1; round < attempts; round++)
        sum += cl_provision_backoff_ms(first, round, 0);
    return sum;
}

static void test_provision_backoff(void **state)
{
    (void)state;
    /* 200 ms doubling: 200, 400, 800, 1600, 3200, then 5000 (the cap) */
    const int want[] = {200, 400, 800, 1600, 3200, 5000, 5000, 5000};
    for (int round = 1; round <= 8; round++)
        assert_int_equal(cl_provision_backoff_ms(200, round, 0), want[round - 1]);
    /* jitter shortens by up to half, never lengthens: no delay above the cap whatever the random byte */
    for (int round = 1; round <= 40; round++) {
        int full = cl_provision_backoff_ms(200, round, 0);
        for (int r = 0; r < 256; r++) {
            int d = cl_provision_backoff_ms(200, round, (uint8_t)r);
            assert_true(d <= full);
            assert_true(d >= full / 2);
            assert_true(d <= CL_KS_BACKOFF_CAP_MS);
        }
    }
    assert_true(cl_provision_backoff_ms(200, 3, 255) < cl_provision_backoff_ms(200, 3, 0));
    /* a first delay above the cap stays as given (no doubling), and is the most */
    assert_int_equal(cl_provision_backoff_ms(8000, 1, 0), 8000);
    assert_int_equal(cl_provision_backoff_ms(8000, 9, 0), 8000);
    /* the sums --help states: serve's 30 rounds 126.2 s at most, provision's 5 rounds 3 s at most */
    assert_int_equal(longest_total_ms(200, 30), 126200);
    assert_int_equal(longest_total_ms(200, 5), 3000);
}

static void test_repo_key_retry(void **state)
{
    (void)state;
    /* from the poll interval, doubling, at most every 5 minutes */
    assert_int_equal(cl_repo_key_retry_delay_s(1, 1), 1);
    assert_int_equal(cl_repo_key_retry_delay_s(1, 2), 2);
    assert_int_equal(cl_repo_key_retry_delay_s(1, 5), 16);
    assert_int_equal(cl_repo_key_retry_delay_s(1, 9), 256);
    assert_int_equal(cl_repo_key_retry_delay_s(1, 10), CL_REPO_KEY_RETRY_MAX_S);
    assert_int_equal(cl_repo_key_retry_delay_s(1, 100000), CL_REPO_KEY_RETRY_MAX_S);
    assert_int_equal(cl_repo_key_retry_delay_s(30, 1), 30);
    assert_int_equal(cl_repo_key_retry_delay_s(30, 4), 240);
    assert_int_equal(cl_repo_key_retry_delay_s(30, 5), CL_REPO_KEY_RETRY_MAX_S);
    assert_int_equal(cl_repo_key_retry_delay_s(0, 1), 1); /* no polling thread: 1 s */
    assert_int_equal(cl_repo_key_retry_delay_s(86400, 1), CL_REPO_KEY_RETRY_MAX_S);
}

/* ---- the stop token */

typedef struct raiser {
    cl_stop *stop;
    int after_ms;
    pthread_t thread;
} raiser;

static void *raise_main(void *arg)
{
    raiser *r = arg;
    usleep((useconds_t)r->after_ms * 1000);
    cl_stop_raise(r->stop);
    return NULL;
}

static void raise_later(raiser *r, cl_stop *s, int after_ms)
{
    *r = (raiser){.stop = s, .after_ms = after_ms};
    assert_int_equal(pthread_create(&r->thread, NULL, raise_main, r), 0);
}

static void test_stop_token(void **state)
{
    (void)state;
    cl_err err = {0};
    assert_false(cl_stop_sleep(NULL, 1)); /* no token: a plain sleep */
    assert_false(cl_stop_raised(NULL));
    assert_int_equal(cl_stop_fd(NULL), -1);
    cl_stop *s = cl_stop_new(&err);
    assert_non_null(s);
    assert_false(cl_stop_sleep(s, 10)); /* not raised: the whole sleep */
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    assert_int_equal(cl_net_wait(sv[0], POLLIN, 10, s), 0); /* nothing to read: timed out */
    assert_int_equal(write(sv[1], "x", 1), 1);
    assert_int_equal(cl_net_wait(sv[0], POLLIN, 1000, s), 1);
    char c;
    assert_int_equal(read(sv[0], &c, 1), 1);
    /* raised by another thread while waiting: a sleep of 10 minutes and a wait without a limit end */
    raiser r;
    raise_later(&r, s, 50);
    assert_true(cl_stop_sleep(s, 600000));
    pthread_join(r.thread, NULL);
    assert_true(cl_stop_raised(s));
    assert_int_equal(cl_net_wait(sv[0], POLLIN, -1, s), -1);
    assert_true(cl_stop_sleep(s, 600000)); /* raised stays raised: every later wait ends at once */
    int se = 0;
    assert_int_equal(cl_net_connect_stop("127.0.0.1", 9, 10000, s, &se, &err), -1);
    assert_int_equal(se, ECANCELED);
    assert_non_null(strstr(err.msg, "stopped"));
    close(sv[0]);
    close(sv[1]);
    cl_stop_free(s);
}

/* A provisioning client (a sim RA-TLS identity, any certificate as its CA file) for server `addr`,
 * 30 rounds from 200 ms (the serve defaults: 126 s of backoff), 10 s I/O timeout. */
typedef struct client_env {
    char *dir, *ca;
    EVP_PKEY *qe_key;
    X509 *qe_cert;
    cl_attest_provider *prov;
    cl_ratls_identity *id;
} client_env;

static void client_env_init(client_env *e)
{
    cl_err err = {0};
    e->dir = tu_tmpdir();
    e->ca = tu_path(e->dir, "ca.pem");
    assert_int_equal(cl_attest_sim_qe_generate(&e->qe_key, &e->qe_cert, &err), 0);
    FILE *f = fopen(e->ca, "w");
    assert_non_null(f);
    PEM_write_X509(f, e->qe_cert);
    fclose(f);
    cl_attest_provider_config cfg = {.kind = CL_ATTEST_SIM, .sim_qe_key = e->qe_key};
    assert_non_null(e->prov = cl_attest_provider_new(&cfg, &err));
    assert_non_null(e->id = cl_ratls_identity_new(e->prov, NULL, &err));
}

static void client_env_free(client_env *e)
{
    cl_ratls_identity_free(e->id);
    cl_attest_provider_free(e->prov);
    EVP_PKEY_free(e->qe_key);
    X509_free(e->qe_cert);
    tu_rmrf(e->dir);
    free(e->dir);
    free(e->ca);
}

/* A listening socket on 127.0.0.1: with `listening` false it is closed again (connections refused). */
static int local_port(bool listening, int *fd_out)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    inet_pton(AF_INET, "127.0.0.1", &sa.sin_addr);
    socklen_t sl = sizeof sa;
    assert_int_equal(bind(fd, (struct sockaddr *)&sa, sizeof sa), 0);
    assert_int_equal(listen(fd, 16), 0);
    assert_int_equal(getsockname(fd, (struct sockaddr *)&sa, &sl), 0);
    if (!listening) {
        close(fd);
        fd = -1;
    }
    *fd_out = fd;
    return ntohs(sa.sin_port);
}

static void fetch_until_stopped(client_env *e, bool hung)
{
    int lfd;
    char server[64];
    snprintf(server, sizeof server, "127.0.0.1:%d", local_port(hung, &lfd));
    const char *servers[] = {server}, *names[] = {"model-key"};
    cl_err err = {0};
    cl_stop *s = cl_stop_new(&err);
    assert_non_null(s);
    cl_provision_options o = {.servers = servers, .server_count = 1, .ca_file = e->ca, .identity = e->id,
                              .names = names, .name_count = 1, .attempts = 30, .backoff_ms = 200,
                              .timeout_ms = 10000, .stop = s};
    raiser r;
    raise_later(&r, s, hung ? 300 : 700); /* gone: in the backoff after 2 rounds; hung: in the handshake */
    cl_provision_result res;
    assert_int_equal(cl_provision_fetch(&o, &res, &err), -1);
    pthread_join(r.thread, NULL);
    if (!strstr(err.msg, "stopped while waiting for the key server (shutdown)"))
        fail_msg("not ended by the stop: %s", err.msg);
    if (hung && !strstr(err.msg, "stopped during the TLS handshake"))
        fail_msg("the hung server's fetch did not end inside its handshake: %s", err.msg);
    if (!hung && !strstr(err.msg, "connect"))
        fail_msg("%s", err.msg);
    assert_int_equal(res.count, 0);
    cl_provision_result_free(&res);
    cl_stop_free(s);
    if (lfd >= 0)
        close(lfd);
}

static void test_fetch_stops_at_once(void **state)
{
    (void)state;
    client_env e = {0};
    client_env_init(&e);
    fetch_until_stopped(&e, false); /* key server gone: connection refused, rounds of backoff */
    fetch_until_stopped(&e, true);  /* hung: TCP accepted by the kernel, no TLS answer (10 s reads) */
    client_env_free(&e);
}

int main(void)
{
    cl_log_set_level(CL_LOG_ERROR);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provision_backoff),
        cmocka_unit_test(test_repo_key_retry),
        cmocka_unit_test(test_stop_token),
        cmocka_unit_test(test_fetch_stops_at_once),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
