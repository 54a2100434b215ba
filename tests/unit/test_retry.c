/* test_retry.c — the retry schedules that --help and the docs state: the provisioning client's delays
 * between rounds (cl_provision_backoff_ms: doubling to 5 s, random jitter only ever shortening a delay,
 * so the sums `cloister serve --help` and `cloister provision --help` print hold), and the model
 * repository's waits before asking again for a key it was refused (cl_repo_key_retry_delay_s). */
#include <string.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_provision_backoff),
        cmocka_unit_test(test_repo_key_retry),
    };
    return cmocka_run_group_tests_name("retry", tests, NULL, NULL);
}
