/* The store behind store_data/get_data (user/pool/kv.c).
 *
 * Covers: set and get, overwrite in place, binary keys and empty values,
 * expiry on read and by the sweep, the size bound (refusal, room made by
 * expired entries, overwrites that fit), and growth of the table past its
 * first size with every key still found.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pool/pool_int.h"

static struct kv_store *kv;

static int setup(void **state)
{
	(void)state;
	kv = kv_new(4096);
	return kv ? 0 : -1;
}

static int teardown(void **state)
{
	(void)state;
	kv_free(kv);
	return 0;
}

static void sleep_ms(long ms)
{
	struct timespec ts = {ms / 1000, (ms % 1000) * 1000000};

	nanosleep(&ts, NULL);
}

static const char *get(const char *key)
{
	static char buf[256];
	size_t len;
	const void *v = kv_get(kv, key, strlen(key), &len);

	if (!v)
		return NULL;
	snprintf(buf, sizeof(buf), "%.*s", (int)len, (const char *)v);
	return buf;
}

static void set(const char *key, const char *value, int ttl)
{
	kv_set(kv, key, strlen(key), value, strlen(value), ttl);
}

static void test_set_get_overwrite(void **state)
{
	(void)state;
	assert_null(get("a"));
	set("a", "one", 0);
	assert_string_equal(get("a"), "one");
	set("a", "two!", 0);
	assert_string_equal(get("a"), "two!");
	assert_int_equal(kv_count(kv), 1);
	set("empty", "", 0);
	assert_string_equal(get("empty"), "");
}

static void test_binary_keys_are_distinct(void **state)
{
	size_t len;

	(void)state;
	kv_set(kv, "k\0x", 3, "1", 1, 0);
	kv_set(kv, "k\0y", 3, "2", 1, 0);
	assert_memory_equal(kv_get(kv, "k\0x", 3, &len), "1", 1);
	assert_memory_equal(kv_get(kv, "k\0y", 3, &len), "2", 1);
	assert_null(kv_get(kv, "k", 1, &len));
}

static void test_ttl_expires_on_read_and_by_sweep(void **state)
{
	(void)state;
	set("short", "x", 1);
	set("other", "y", 1);
	set("long", "z", 0);
	assert_string_equal(get("short"), "x");
	sleep_ms(1100);
	assert_null(get("short"));
	assert_int_equal(kv_count(kv), 2);
	kv_sweep(kv);
	assert_int_equal(kv_count(kv), 1);
	assert_string_equal(get("long"), "z");
}

static void test_bound_refuses_then_makes_room_from_expired(void **state)
{
	char big[1500];

	(void)state;
	memset(big, 'b', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	set("b1", big, 1);
	set("b2", big, 0);
	set("b3", big, 0); /* past 4096 bytes: refused */
	assert_null(get("b3"));
	assert_true(kv_bytes(kv) <= 4096);
	/* Overwriting with something as large still fits. */
	set("b2", big, 0);
	assert_non_null(get("b2"));

	sleep_ms(1100);
	set("b3", big, 0); /* b1 has expired: room */
	assert_non_null(get("b3"));
	assert_null(get("b1"));
}

static void test_table_grows_and_keeps_every_key(void **state)
{
	struct kv_store *big = kv_new(64u << 20);
	char key[32], val[32];
	size_t len;

	(void)state;
	for (int i = 0; i < 5000; i++) {
		int k = snprintf(key, sizeof(key), "key-%d", i);
		int v = snprintf(val, sizeof(val), "val-%d", i);

		kv_set(big, key, k, val, v, 0);
	}
	assert_int_equal(kv_count(big), 5000);
	for (int i = 0; i < 5000; i++) {
		int k = snprintf(key, sizeof(key), "key-%d", i);
		const char *got = kv_get(big, key, k, &len);

		snprintf(val, sizeof(val), "val-%d", i);
		assert_non_null(got);
		assert_memory_equal(got, val, len);
	}
	kv_free(big);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
	    cmocka_unit_test_setup_teardown(test_set_get_overwrite, setup,
					    teardown),
	    cmocka_unit_test_setup_teardown(test_binary_keys_are_distinct,
					    setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_ttl_expires_on_read_and_by_sweep, setup, teardown),
	    cmocka_unit_test_setup_teardown(
		test_bound_refuses_then_makes_room_from_expired, setup,
		teardown),
	    cmocka_unit_test(test_table_grows_and_keeps_every_key),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
