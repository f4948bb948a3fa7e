/* Routing.
 *
 * Covers: listener scoping (shared listeners vs an API's own), the host
 * groups (exact, then the longest "*.suffix", then no hosts) with no
 * fallback between them, the longest listen_path prefix and the bare
 * "/catalog" form, Host port and case, route_exclusive, route_is_host_only,
 * and the request target the upstream sees. The rules come from a real
 * rules file loaded by rules_load().
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/rules.h"
#include "front/route.h"

#define UP "upstream: \"http://127.0.0.1:9000\""

static const char rules_yaml[] =
    "listen: [\"127.0.0.1:8080\", \"127.0.0.1:8081\"]\n"
    "apis:\n"
    "  - {name: root, listen_path: /, " UP "}\n"
    "  - {name: catalog, listen_path: /catalog/, " UP "}\n"
    "  - {name: catalog-items, listen_path: /catalog/items/, " UP "}\n"
    "  - {name: shop, listen_path: /shop, " UP "}\n"
    "  - {name: shop-slash, listen_path: /shop/, " UP "}\n"
    "  - {name: exact, listen_path: /catalog/, hosts: [api.example.com], " UP
    "}\n"
    "  - {name: wild, listen_path: /, hosts: [\"*.example.com\"], " UP "}\n"
    "  - {name: deep-wild, listen_path: /v1/, hosts: "
    "[\"*.eu.example.com\"], " UP "}\n"
    "  - {name: own, listen: [\"127.0.0.1:9443\"], " UP "}\n"
    "  - {name: own-a, listen: [\"127.0.0.1:9444\"], listen_path: /a/, " UP
    "}\n"
    "  - {name: own-b, listen: [\"127.0.0.1:9444\", \"127.0.0.1:9446\"],"
    " listen_path: /b/, " UP "}\n"
    "  - {name: own-hooked, listen: [\"127.0.0.1:9445\"], " UP
    ", middleware: {}}\n"
    "  - {name: host-only, listen_path: /, hosts: [only.test], " UP "}\n";

static struct rules *rules;

static const char *route(const char *listener, const char *host,
			 const char *path)
{
	const struct rules_api *api = route_match(
	    rules, listener, host, host ? strlen(host) : 0, path, strlen(path));

	return api ? api->name : "(none)";
}

#define SHARED "127.0.0.1:8080"

struct route_case {
	const char *listener;
	const char *host;
	const char *path;
	const char *api;
};

static void check_routes(const struct route_case *cases, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const struct route_case *c = &cases[i];
		const char *got = route(c->listener, c->host, c->path);

		if (strcmp(got, c->api) != 0)
			fail_msg("%s Host=%s %s: got %s, want %s", c->listener,
				 c->host ? c->host : "-", c->path, got, c->api);
	}
}

#define CHECK_ROUTES(cases)                                                    \
	check_routes(cases, sizeof(cases) / sizeof(cases[0]))

static void test_longest_prefix_without_host(void **state)
{
	static const struct route_case cases[] = {
	    {SHARED, NULL, "/", "root"},
	    {SHARED, NULL, "/other", "root"},
	    {SHARED, NULL, "/catalog/", "catalog"},
	    {SHARED, NULL, "/catalog/42", "catalog"},
	    {SHARED, NULL, "/catalog/items/", "catalog-items"},
	    {SHARED, NULL, "/catalog/items/7", "catalog-items"},
	    {SHARED, NULL, "/catalog/itemsx", "catalog"},
	    {SHARED, "unknown.test", "/catalog/1", "catalog"},
	    {"127.0.0.1:8081", NULL, "/catalog/1", "catalog"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_bare_path_matches_slash_prefix(void **state)
{
	static const struct route_case cases[] = {
	    {SHARED, NULL, "/catalog", "catalog"},
	    {SHARED, NULL, "/catalog?q=1", "catalog"},
	    {SHARED, NULL, "/catalog/items", "catalog-items"},
	    {SHARED, NULL, "/catalogue", "root"},
	    /* a literal "/shop" keeps "/shop" over the bare form of "/shop/" */
	    {SHARED, NULL, "/shop", "shop"},
	    {SHARED, NULL, "/shop/", "shop-slash"},
	    {SHARED, NULL, "/shop/x", "shop-slash"},
	    {SHARED, NULL, "/shopping", "shop"},
	    /* the query is not part of the path */
	    {SHARED, NULL, "/?/catalog/", "root"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_exact_host_wins_and_never_falls_back(void **state)
{
	static const struct route_case cases[] = {
	    {SHARED, "api.example.com", "/catalog/1", "exact"},
	    {SHARED, "api.example.com", "/catalog", "exact"},
	    /* the exact group has only /catalog/: no fallback to "wild" or to
	     * the APIs without hosts */
	    {SHARED, "api.example.com", "/", "(none)"},
	    {SHARED, "api.example.com", "/catalog/items/1", "exact"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_longest_wildcard_wins(void **state)
{
	static const struct route_case cases[] = {
	    {SHARED, "www.example.com", "/anything", "wild"},
	    {SHARED, "a.b.example.com", "/catalog/1", "wild"},
	    {SHARED, "x.eu.example.com", "/v1/users", "deep-wild"},
	    {SHARED, "x.eu.example.com", "/v2/users", "(none)"},
	    /* "*.example.com" does not match example.com itself */
	    {SHARED, "example.com", "/catalog/1", "catalog"},
	    {SHARED, "badexample.com", "/", "root"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_host_port_and_case_ignored(void **state)
{
	static const struct route_case cases[] = {
	    {SHARED, "API.Example.COM", "/catalog/1", "exact"},
	    {SHARED, "api.example.com:8080", "/catalog/1", "exact"},
	    {SHARED, "api.example.com.", "/catalog/1", "exact"},
	    {SHARED, "WWW.EXAMPLE.COM:443", "/", "wild"},
	    {SHARED, "[::1]:8080", "/catalog/1", "catalog"},
	    {SHARED, "", "/catalog/1", "catalog"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_host_given_with_length(void **state)
{
	/* The host is not NUL-terminated where the request head holds it. */
	const char head[] = "api.example.comXYZ";
	const struct rules_api *api =
	    route_match(rules, SHARED, head, 15, "/catalog/x", 10);

	(void)state;
	assert_non_null(api);
	assert_string_equal(api->name, "exact");
	api = route_match(rules, SHARED, "/catalog/x", 0, "/catalog/xyz", 9);
	assert_string_equal(api->name, "catalog");
}

static void test_own_listener_scoping(void **state)
{
	static const struct route_case cases[] = {
	    {"127.0.0.1:9443", NULL, "/", "own"},
	    {"127.0.0.1:9443", "api.example.com", "/catalog/1", "own"},
	    {"127.0.0.1:9444", NULL, "/a/1", "own-a"},
	    {"127.0.0.1:9444", NULL, "/b/1", "own-b"},
	    {"127.0.0.1:9444", NULL, "/c", "(none)"},
	    {"127.0.0.1:9446", NULL, "/b/", "own-b"},
	    {"127.0.0.1:9446", NULL, "/a/1", "(none)"},
	    /* own-listener APIs are not served on the shared ones */
	    {SHARED, NULL, "/a/1", "root"},
	    {"127.0.0.1:9999", NULL, "/", "(none)"},
	};

	(void)state;
	CHECK_ROUTES(cases);
}

static void test_exclusive_listener(void **state)
{
	(void)state;
	assert_string_equal(route_exclusive(rules, "127.0.0.1:9443")->name,
			    "own");
	assert_string_equal(route_exclusive(rules, "127.0.0.1:9446")->name,
			    "own-b");
	assert_null(route_exclusive(rules, "127.0.0.1:9444"));
	assert_null(route_exclusive(rules, "127.0.0.1:9445"));
	assert_null(route_exclusive(rules, SHARED));
	assert_null(route_exclusive(rules, "127.0.0.1:9999"));
}

static void test_host_only(void **state)
{
	(void)state;
	assert_true(route_is_host_only(rules_find_api(rules, "host-only")));
	assert_true(route_is_host_only(rules_find_api(rules, "wild")));
	assert_false(route_is_host_only(rules_find_api(rules, "exact")));
	assert_false(route_is_host_only(rules_find_api(rules, "root")));
	assert_false(route_is_host_only(rules_find_api(rules, "own")));
}

/* ---- upstream targets ------------------------------------------------ */

struct target_case {
	const char *listen_path;
	bool strip;
	const char *base;
	const char *target;
	const char *want;
};

static void test_upstream_target(void **state)
{
	static const struct target_case cases[] = {
	    {"/catalog/", true, "", "/catalog/items?x=1", "/items?x=1"},
	    {"/catalog/", true, "", "/catalog/", "/"},
	    {"/catalog/", true, "", "/catalog", "/"},
	    {"/catalog/", true, "", "/catalog?q", "/?q"},
	    {"/catalog/", true, "", "/catalog/?q=1", "/?q=1"},
	    {"/catalog/", true, "/v1", "/catalog/items", "/v1/items"},
	    {"/catalog/", true, "/v1", "/catalog/", "/v1/"},
	    {"/catalog/", true, "/v1", "/catalog", "/v1"},
	    {"/catalog/", true, "/v1", "/catalog?a=b&c", "/v1?a=b&c"},
	    {"/catalog/", false, "", "/catalog/items?x", "/catalog/items?x"},
	    {"/catalog/", false, "/v1", "/catalog/items", "/v1/catalog/items"},
	    {"/catalog", true, "", "/catalog/items", "/items"},
	    {"/catalog", true, "", "/catalog", "/"},
	    {"/catalog", true, "", "/catalog?x=/y", "/?x=/y"},
	    {"/catalog", true, "", "/catalogue", "/ue"},
	    {"/", true, "", "/x?y", "/x?y"},
	    {"/", true, "/base", "/", "/base/"},
	    {"/", false, "", "/", "/"},
	};

	(void)state;
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const struct target_case *c = &cases[i];
		struct rules_api api = {.listen_path = (char *)c->listen_path,
					.strip_listen_path = c->strip};
		struct rules_upstream up = {.base_path = (char *)c->base};
		char out[64];
		int n = route_upstream_target(
		    &api, &up, c->target, strlen(c->target), out, sizeof(out));

		if (n < 0 || strcmp(out, c->want) != 0 ||
		    (size_t)n != strlen(c->want))
			fail_msg(
			    "%s strip=%d base=%s %s: got %d '%s', want '%s'",
			    c->listen_path, c->strip, c->base, c->target, n,
			    n < 0 ? "" : out, c->want);
	}
}

static void test_upstream_target_out_too_small(void **state)
{
	struct rules_api api = {.listen_path = "/catalog/",
				.strip_listen_path = true};
	struct rules_upstream up = {.base_path = "/v1"};
	const char *target = "/catalog/items?x=1";
	char out[32];

	(void)state;
	/* "/v1/items?x=1" is 13 bytes and needs 14 with its NUL */
	assert_int_equal(
	    route_upstream_target(&api, &up, target, strlen(target), out, 14),
	    13);
	assert_string_equal(out, "/v1/items?x=1");
	assert_int_equal(
	    route_upstream_target(&api, &up, target, strlen(target), out, 13),
	    -1);
	assert_int_equal(
	    route_upstream_target(&api, &up, target, strlen(target), out, 3),
	    -1);
	assert_int_equal(
	    route_upstream_target(&api, &up, target, strlen(target), out, 0),
	    -1);
	up.base_path = "";
	assert_int_equal(
	    route_upstream_target(&api, &up, "/catalog", 8, out, 1), -1);
	assert_int_equal(
	    route_upstream_target(&api, &up, "/catalog", 8, out, 2), 1);
	assert_string_equal(out, "/");
}

/* ---- fixture --------------------------------------------------------- */

static int group_setup(void **state)
{
	char path[] = "/tmp/sluice-route-XXXXXX";
	char err[RULES_ERR_MAX];
	int fd = mkstemp(path);
	FILE *f;

	(void)state;
	if (fd < 0)
		return -1;
	f = fdopen(fd, "w");
	if (!f || fputs(rules_yaml, f) < 0 || fclose(f) != 0) {
		unlink(path);
		return -1;
	}
	rules = rules_load(path, err, sizeof(err));
	unlink(path);
	if (!rules)
		fprintf(stderr, "%s\n", err);
	return rules ? 0 : -1;
}

static int group_teardown(void **state)
{
	(void)state;
	rules_unref(rules);
	return 0;
}

int main(void)
{
	static const struct CMUnitTest tests[] = {
	    cmocka_unit_test(test_longest_prefix_without_host),
	    cmocka_unit_test(test_bare_path_matches_slash_prefix),
	    cmocka_unit_test(test_exact_host_wins_and_never_falls_back),
	    cmocka_unit_test(test_longest_wildcard_wins),
	    cmocka_unit_test(test_host_port_and_case_ignored),
	    cmocka_unit_test(test_host_given_with_length),
	    cmocka_unit_test(test_own_listener_scoping),
	    cmocka_unit_test(test_exclusive_listener),
	    cmocka_unit_test(test_host_only),
	    cmocka_unit_test(test_upstream_target),
	    cmocka_unit_test(test_upstream_target_out_too_small),
	};

	return cmocka_run_group_tests_name("route", tests, group_setup,
					   group_teardown);
}
