/* Rate limits and quotas per key (user/front/limit.c), on a made-up clock.
 *
 * Covers: a burst of RATE then one request per PER/RATE, keys and APIs
 * counted apart, rates under one, a quota and its renewal, the quota left
 * and when it renews, a request
 * refused for its rate using no quota, limits that change between
 * requests, and a full table (keys at rest dropped, at most one sweep a
 * second, busy keys kept, new keys passing when none can go), and long
 * keys bounded by bytes.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>

#include "front/limit.h"

static struct limits *lim;

static int setup(void **state)
{
	(void)state;
	lim = limits_new(4, 1 << 20);
	return lim ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	limits_free(lim);
	return 0;
}

static struct limit_state st; /* as the last call left it */

static enum limit_verdict take(const char *api, const char *key,
			       struct limit_spec spec, int64_t now_ms)
{
	return limit_take(lim, api, key, strlen(key), &spec, now_ms, &st);
}

static const struct limit_spec three_per_minute = {.rate = 3, .per = 60};

static void test_burst_then_refill(void **state)
{
	(void)state;
	for (int i = 0; i < 3; i++)
		assert_int_equal(take("a", "k", three_per_minute, 1000),
				 LIMIT_PASS);
	assert_int_equal(take("a", "k", three_per_minute, 1000), LIMIT_RATE);
	assert_in_range(st.wait_ms, 20000, 20001);
	/* One token comes back every 20 s. */
	assert_int_equal(take("a", "k", three_per_minute, 20999), LIMIT_RATE);
	assert_in_range(st.wait_ms, 1, 2);
	assert_int_equal(take("a", "k", three_per_minute, 21000), LIMIT_PASS);
	assert_int_equal(take("a", "k", three_per_minute, 21000), LIMIT_RATE);
}

static void test_keys_and_apis_apart(void **state)
{
	struct limit_spec one = {.rate = 1, .per = 1};

	(void)state;
	assert_int_equal(take("a", "k1", one, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k1", one, 0), LIMIT_RATE);
	assert_int_equal(take("a", "k2", one, 0), LIMIT_PASS);
	assert_int_equal(take("b", "k1", one, 0), LIMIT_PASS);
	/* "a" + "k1" is not "ak" + "1". */
	assert_int_equal(take("ak", "1", one, 0), LIMIT_PASS);
}

static void test_rate_under_one(void **state)
{
	struct limit_spec half = {.rate = 0.5, .per = 1}; /* one per 2 s */

	(void)state;
	assert_int_equal(take("a", "k", half, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k", half, 1000), LIMIT_RATE);
	assert_int_equal(take("a", "k", half, 2000), LIMIT_PASS);
}

static void test_no_limits_set(void **state)
{
	struct limit_spec none = {0};

	(void)state;
	for (int i = 0; i < 100; i++)
		assert_int_equal(take("a", "k", none, 0), LIMIT_PASS);
}

static void test_quota_and_renewal(void **state)
{
	struct limit_spec q = {.quota_max = 2, .quota_period_s = 10};

	(void)state;
	assert_int_equal(take("a", "k", q, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k", q, 5000), LIMIT_PASS);
	assert_int_equal(take("a", "k", q, 9999), LIMIT_QUOTA);
	assert_int_equal(st.wait_ms, 1);
	assert_int_equal(take("a", "k", q, 10000), LIMIT_PASS);
	/* Without a period the quota never comes back. */
	q.quota_period_s = 0;
	assert_int_equal(take("a", "once", q, 0), LIMIT_PASS);
	assert_int_equal(take("a", "once", q, 0), LIMIT_PASS);
	assert_int_equal(take("a", "once", q, 999999999), LIMIT_QUOTA);
	assert_int_equal(st.wait_ms, -1);
}

/* The quota the last call reported: what is left, and when it renews. */
static void quota_left(int64_t remaining, int64_t renews_ms)
{
	assert_int_equal(st.quota_remaining, remaining);
	assert_int_equal(st.quota_renews_ms, renews_ms);
}

static void test_quota_left_is_reported(void **state)
{
	struct limit_spec q = {
	    .rate = 1, .per = 1, .quota_max = 3, .quota_period_s = 60};

	(void)state;
	assert_int_equal(take("a", "k", q, 0), LIMIT_PASS);
	quota_left(2, 60000);
	/* Refused for its rate: the quota is as it was. */
	assert_int_equal(take("a", "k", q, 500), LIMIT_RATE);
	quota_left(2, 59500);
	assert_int_equal(take("a", "k", q, 1000), LIMIT_PASS);
	assert_int_equal(take("a", "k", q, 2000), LIMIT_PASS);
	quota_left(0, 58000);
	assert_int_equal(take("a", "k", q, 3000), LIMIT_QUOTA);
	quota_left(0, 57000);
	assert_int_equal(st.wait_ms, 57000);
	/* A new period. */
	assert_int_equal(take("a", "k", q, 60000), LIMIT_PASS);
	quota_left(2, 60000);
	/* No quota: nothing to report. */
	assert_int_equal(take("a", "rate-only", three_per_minute, 0),
			 LIMIT_PASS);
	assert_int_equal(st.quota_remaining, -1);
	/* A quota that never renews. */
	q.quota_period_s = 0;
	assert_int_equal(take("a", "once", q, 0), LIMIT_PASS);
	quota_left(2, -1);
}

static void test_refused_for_rate_uses_no_quota(void **state)
{
	struct limit_spec both = {.rate = 1, .per = 10, .quota_max = 2};

	(void)state;
	assert_int_equal(take("a", "k", both, 0), LIMIT_PASS);
	for (int i = 0; i < 5; i++)
		assert_int_equal(take("a", "k", both, 1000), LIMIT_RATE);
	assert_int_equal(take("a", "k", both, 10000), LIMIT_PASS);
	assert_int_equal(take("a", "k", both, 20000), LIMIT_QUOTA);
}

static void test_changed_limits_apply_from_now(void **state)
{
	struct limit_spec wide = {.rate = 10, .per = 1};
	struct limit_spec narrow = {.rate = 2, .per = 1};

	(void)state;
	assert_int_equal(take("a", "k", wide, 0), LIMIT_PASS);
	/* Nine tokens left, but the bucket is now two deep. */
	assert_int_equal(take("a", "k", narrow, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k", narrow, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k", narrow, 0), LIMIT_RATE);
}

static void test_full_table(void **state)
{
	struct limit_spec one = {.rate = 1, .per = 1};
	char key[8];

	(void)state;
	for (int i = 0; i < 4; i++) {
		snprintf(key, sizeof(key), "k%d", i);
		assert_int_equal(take("a", key, one, 0), LIMIT_PASS);
	}
	/* Every key is busy: a fifth passes unlimited, every time. */
	assert_int_equal(take("a", "new", one, 500), LIMIT_PASS);
	assert_int_equal(take("a", "new", one, 500), LIMIT_PASS);
	/* The busy keys are still counted. */
	assert_int_equal(take("a", "k0", one, 500), LIMIT_RATE);
	/* At rest from 1000 on, but the table was swept at 500 and is not
	 * swept again within a second: still no room. */
	assert_int_equal(take("a", "new", one, 1200), LIMIT_PASS);
	assert_int_equal(take("a", "new", one, 1200), LIMIT_PASS);
	/* Then the keys at rest make room. */
	assert_int_equal(take("a", "new", one, 1500), LIMIT_PASS);
	assert_int_equal(take("a", "new", one, 1500), LIMIT_RATE);
}

static void test_bytes_bound_long_keys(void **state)
{
	struct limit_spec one = {.rate = 1, .per = 60};
	char long_key[1000];

	(void)state;
	limits_free(lim);
	lim = limits_new(100, 2500); /* room for two long keys, not three */
	memset(long_key, 'x', sizeof(long_key) - 1);
	long_key[sizeof(long_key) - 1] = 0;
	for (char c = 'a'; c <= 'c'; c++) {
		long_key[0] = c;
		assert_int_equal(take("a", long_key, one, 0), LIMIT_PASS);
		assert_int_equal(take("a", long_key, one, 0),
				 c < 'c' ? LIMIT_RATE : LIMIT_PASS);
	}
	/* Short keys still fit. */
	assert_int_equal(take("a", "k", one, 0), LIMIT_PASS);
	assert_int_equal(take("a", "k", one, 0), LIMIT_RATE);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_burst_then_refill, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_keys_and_apis_apart, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_rate_under_one, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_no_limits_set, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_quota_and_renewal, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_quota_left_is_reported, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_refused_for_rate_uses_no_quota,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_changed_limits_apply_from_now,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(test_full_table, setup, teardown),
	    cmocka_unit_test_setup_teardown(test_bytes_bound_long_keys, setup,
					    teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
