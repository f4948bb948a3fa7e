/* The rules file parser.
 *
 * Covers: every mistake a person can make in a rules file, each as its exact
 * "FILE:LINE:COL: message" (one table row per mistake, one cmocka test per
 * row); a complete valid file read back field by field; the defaults of a
 * minimal file; Tyk plugin bundles read from a manifest.json; reference
 * counting and lookup by name.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <limits.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/rules.h"

static char tmp_dir[64];
static char rules_path[128];
static char bundle_dir[128];

static void write_file(const char *path, const char *text)
{
	FILE *f = fopen(path, "w");

	assert_non_null(f);
	assert_int_equal(fputs(text, f) >= 0, 1);
	assert_int_equal(fclose(f), 0);
}

static struct rules *load_text(const char *text, char *err, size_t err_len)
{
	write_file(rules_path, text);
	err[0] = '\0';
	return rules_load(rules_path, err, err_len);
}

static struct rules *load_ok(const char *text)
{
	char err[RULES_ERR_MAX];
	struct rules *r = load_text(text, err, sizeof(err));

	if (!r)
		fail_msg("unexpected error: %s", err);
	return r;
}

static void write_manifest(const char *text)
{
	char path[PATH_MAX + 32];

	snprintf(path, sizeof(path), "%s/manifest.json", bundle_dir);
	write_file(path, text);
}

/* ---- every mistake, with its exact message --------------------------- */

struct error_case {
	const char *name;
	const char *yaml;
	/* "LINE:COL: message" after "FILE:"; a trailing '*' makes the rest a
	 * prefix match (for messages that quote the resolver). */
	const char *expect;
	const char *manifest; /* written to the bundle dir first, if set */
};

/* Unresolvable without asking a DNS server: a 64-byte label is refused
 * before any query is sent, so the test is quick even offline. */
#define NOHOST                                                                 \
	"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa."    \
	"invalid"
#define L  "listen: [\"127.0.0.1:8080\"]\n"
#define UP "upstream: \"http://127.0.0.1:9000\""

static const struct error_case error_cases[] = {
    /* YAML itself */
    {"syntax_error", "listen: [\"127.0.0.1:8080\"\nadmin: x\n",
     "2:1: did not find expected ',' or ']' while parsing a flow sequence",
     NULL},
    {"bad_indent", L "apis:\n  - name: a\n   listen_path: /\n",
     "4:4: did not find expected '-' indicator while parsing a block "
     "collection",
     NULL},
    {"empty_file", "", "1:1: the file is empty", NULL},
    {"two_documents", L "---\n" L, "3:1: only one YAML document is allowed",
     NULL},
    {"top_not_mapping", "- a\n", "1:1: the rules file: expected a mapping",
     NULL},

    /* unknown keys */
    {"unknown_top_key", L "listne: x\n",
     "2:1: unknown key 'listne' in the rules file (allowed: listen, admin, "
     "threads, user, limits, bpf, python, access_log, apis)",
     NULL},
    {"unknown_limits_key", L "limits:\n  body: 1\n",
     "3:3: unknown key 'body' in limits (allowed: header_bytes, body_bytes, "
     "header_timeout_ms, idle_timeout_ms, upstream_connect_ms, "
     "upstream_timeout_ms)",
     NULL},
    {"unknown_xdp_key", L "bpf:\n  xdp: {iface: [eth0]}\n",
     "3:9: unknown key 'iface' in bpf.xdp (allowed: interfaces, mode)", NULL},
    {"unknown_workers_key", L "python:\n  workers: {maximum: 3}\n",
     "3:13: unknown key 'maximum' in python.workers (allowed: min, max, "
     "idle_s)",
     NULL},
    {"unknown_api_key", L "apis:\n  - name: a\n    path: /\n    " UP "\n",
     "4:5: unknown key 'path' in an apis entry (allowed: name, listen_path, "
     "hosts, strip_listen_path, upstream, upstreams, listen, middleware, "
     "splice)",
     NULL},
    {"unknown_middleware_key",
     L "apis:\n  - name: a\n    listen_path: /\n    " UP "\n"
       "    middleware:\n      pres: [a.b]\n",
     "7:7: unknown key 'pres' in middleware (allowed: pre, auth_check, "
     "post_key_auth, post, response, timeout_ms, on_error, max_inflight, "
     "queue, queue_timeout_ms, config, bundle)",
     NULL},
    {"unknown_access_log_key", L "access_log: {file: x}\n",
     "2:14: unknown key 'file' in access_log (allowed: path, format)", NULL},

    /* duplicate keys */
    {"duplicate_top_key", L "threads: 2\nthreads: 3\n",
     "3:1: duplicate key 'threads' (first at line 2)", NULL},
    {"duplicate_api_key",
     L "apis:\n  - name: a\n    listen_path: /\n    name: b\n    " UP "\n",
     "5:5: duplicate key 'name' (first at line 3)", NULL},
    {"duplicate_config_key",
     L "apis:\n  - {name: a, listen_path: /, " UP ",\n"
       "     middleware: {config: {k: 1, k: 2}}}\n",
     "4:34: duplicate key 'k' (first at line 4)", NULL},

    /* wrong types */
    {"threads_not_int", L "threads: many\n",
     "2:10: threads: expected an integer or \"auto\"", NULL},
    {"limit_not_int", L "limits: {header_timeout_ms: \"10\"}\n",
     "2:29: header_timeout_ms: expected an integer", NULL},
    {"limit_float", L "limits: {idle_timeout_ms: 1.5}\n",
     "2:27: idle_timeout_ms: expected an integer", NULL},
    {"bool_not_bool", L "bpf: {required: yes}\n",
     "2:17: required: expected true or false", NULL},
    {"listen_not_list", "listen: \"0.0.0.0:8080\"\n",
     "1:9: listen: expected a list of host:port strings", NULL},
    {"hosts_not_list",
     L "apis:\n  - {name: a, listen_path: /, hosts: a.test, " UP "}\n",
     "3:38: hosts: expected a list of host names", NULL},
    {"hosts_item_not_string",
     L "apis:\n  - {name: a, listen_path: /, hosts: [[a]], " UP "}\n",
     "3:39: bad host '': expected a name like api.example.com or "
     "*.example.com",
     NULL},
    {"limits_not_mapping", L "limits: [1]\n", "2:9: limits: expected a mapping",
     NULL},
    {"apis_not_list", L "apis: {name: a}\n",
     "2:7: apis: expected a list of APIs", NULL},
    {"api_not_mapping", L "apis:\n  - catalog\n",
     "3:5: apis: each entry must be a mapping", NULL},
    {"user_not_string", L "user: [a]\n",
     "2:7: user: expected a non-empty string", NULL},
    {"user_empty", L "user: \"\"\n", "2:7: user: expected a non-empty string",
     NULL},
    {"upstreams_null", L "apis:\n  - {name: a, listen_path: /, upstreams: }\n",
     "3:42: upstreams: the list is empty", NULL},
    {"python_path_empty_item", L "python: {path: [\"\"]}\n",
     "2:17: expected a directory path", NULL},
    {"path_list_of_ints", L "python: {path: [[1]]}\n",
     "2:17: expected a directory path", NULL},
    {"config_not_mapping",
     L "apis:\n  - {name: a, listen_path: /, " UP ", middleware: {config: "
       "[1]}}\n",
     "3:87: config: expected a mapping", NULL},
    {"middleware_not_mapping",
     L "apis:\n  - {name: a, listen_path: /, " UP ", middleware: [a.b]}\n",
     "3:78: middleware: expected a mapping", NULL},

    /* host:port */
    {"listen_no_port", "listen: [\"0.0.0.0\"]\n",
     "1:10: bad address '0.0.0.0': expected host:port, e.g. 0.0.0.0:8080 or "
     "[::1]:9901",
     NULL},
    {"listen_port_zero", "listen: [\"0.0.0.0:0\"]\n",
     "1:10: bad port in '0.0.0.0:0': expected 1-65535", NULL},
    {"listen_port_too_big", "listen: [\"0.0.0.0:65536\"]\n",
     "1:10: bad port in '0.0.0.0:65536': expected 1-65535", NULL},
    {"listen_port_not_number", "listen: [\"0.0.0.0:http\"]\n",
     "1:10: bad port in '0.0.0.0:http': expected 1-65535", NULL},
    {"listen_short_ipv4", "listen: [\"1.2.3:80\"]\n",
     "1:10: bad address '1.2.3:80': not a valid IP address", NULL},
    {"listen_bad_ipv6", "listen: [\"[::g]:80\"]\n",
     "1:10: bad address '[::g]:80': not a valid IP address", NULL},
    {"listen_ipv6_unbracketed", "listen: [\"::1:80\"]\n",
     "1:10: bad address '::1:80': expected host:port, e.g. 0.0.0.0:8080 or "
     "[::1]:9901",
     NULL},
    {"listen_unresolvable", "listen: [\"" NOHOST ":80\"]\n",
     "1:10: bad address '" NOHOST ":80': *", NULL},
    {"listen_twice", "listen: [\"127.0.0.1:80\", \"127.0.0.1:80\"]\n",
     "1:26: listen: '127.0.0.1:80' is listed twice", NULL},
    {"admin_bad", L "admin: \"127.0.0.1\"\n",
     "2:8: bad address '127.0.0.1': expected host:port, e.g. 0.0.0.0:8080 "
     "or [::1]:9901",
     NULL},
    {"admin_is_listener", L "admin: \"127.0.0.1:8080\"\n",
     "2:8: admin: '127.0.0.1:8080' is also a listener", NULL},
    {"admin_is_api_listener",
     "admin: \"127.0.0.1:9901\"\napis:\n  - {name: a, listen: "
     "[\"127.0.0.1:9901\"], " UP "}\n",
     "1:8: admin: '127.0.0.1:9901' is also the listener of API 'a'", NULL},

    /* upstream URLs */
    {"upstream_https",
     L "apis:\n  - {name: a, listen_path: /, upstream: "
       "\"https://127.0.0.1\"}\n",
     "3:41: upstream 'https://127.0.0.1': TLS to upstreams is not supported, "
     "use http://",
     NULL},
    {"upstream_no_scheme",
     L "apis:\n  - {name: a, listen_path: /, upstream: 127.0.0.1:9000}\n",
     "3:41: bad upstream URL '127.0.0.1:9000': expected "
     "http://host[:port][/base]",
     NULL},
    {"upstream_no_host",
     L "apis:\n  - {name: a, listen_path: /, upstream: \"http:///x\"}\n",
     "3:41: bad upstream URL 'http:///x': expected http://host[:port][/base]",
     NULL},
    {"upstream_query",
     L "apis:\n  - {name: a, listen_path: /, upstream: "
       "\"http://127.0.0.1/a?b=c\"}\n",
     "3:41: bad upstream URL 'http://127.0.0.1/a?b=c': no query or fragment "
     "allowed, only http://host[:port][/base]",
     NULL},
    {"upstream_bad_port",
     L "apis:\n  - {name: a, listen_path: /, upstream: "
       "\"http://127.0.0.1:0\"}\n",
     "3:41: bad upstream URL 'http://127.0.0.1:0': expected "
     "http://host[:port][/base], port 1-65535",
     NULL},
    {"upstream_unresolvable",
     L "apis:\n  - {name: a, listen_path: /, upstream: "
       "\"http://" NOHOST "\"}\n",
     "3:41: upstream 'http://" NOHOST "': cannot resolve "
     "'" NOHOST "': *",
     NULL},
    {"upstreams_item_bad",
     L "apis:\n  - name: a\n    listen_path: /\n    upstreams:\n"
       "      - http://127.0.0.1:9000\n      - https://127.0.0.1:9001\n",
     "7:9: upstream 'https://127.0.0.1:9001': TLS to upstreams is not "
     "supported, use http://",
     NULL},
    {"upstreams_empty",
     L "apis:\n  - {name: a, listen_path: /, upstreams: []}\n",
     "3:42: upstreams: the list is empty", NULL},
    {"upstream_and_upstreams",
     L "apis:\n  - name: a\n    listen_path: /\n    " UP "\n"
       "    upstreams: [\"http://127.0.0.1:9001\"]\n",
     "6:16: use upstream or upstreams, not both", NULL},

    /* API names */
    {"api_name_upper", L "apis:\n  - {name: Catalog, listen_path: /, " UP "}\n",
     "3:12: bad API name 'Catalog': use only a-z, 0-9, '_' and '-'", NULL},
    {"api_name_space",
     L "apis:\n  - {name: \"cat alog\", listen_path: /, " UP "}\n",
     "3:12: bad API name 'cat alog': use only a-z, 0-9, '_' and '-'", NULL},
    {"api_name_empty", L "apis:\n  - {name: \"\", listen_path: /, " UP "}\n",
     "3:12: bad API name '': use only a-z, 0-9, '_' and '-'", NULL},
    {"api_name_too_long",
     L "apis:\n  - {name: "
       "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa, "
       "listen_path: /, " UP "}\n",
     "3:12: API name 'aaaaaaaaaaaaaaaaaaaa...' is too long (at most 63 "
     "characters)",
     NULL},
    {"api_name_duplicate",
     L "apis:\n  - {name: a, listen_path: /a/, " UP "}\n"
       "  - {name: a, listen_path: /b/, " UP "}\n",
     "4:12: duplicate API name 'a' (first at line 3)", NULL},

    /* routes */
    {"same_route_no_hosts",
     L "apis:\n  - {name: a, listen_path: /x/, " UP "}\n"
       "  - {name: b, listen_path: /x/, " UP "}\n",
     "4:28: API 'b' has the same route as API 'a' (line 3): listen_path "
     "'/x/' and no hosts on the same listener",
     NULL},
    {"same_route_common_host",
     L "apis:\n  - {name: a, listen_path: /x/, hosts: [a.test, B.test], " UP
       "}\n"
       "  - {name: b, listen_path: /x/, hosts: [b.test], " UP "}\n",
     "4:28: API 'b' has the same route as API 'a' (line 3): listen_path "
     "'/x/', host 'b.test' on the same listener",
     NULL},
    {"same_route_own_listener",
     "apis:\n  - {name: a, listen: [\"127.0.0.1:81\"], " UP "}\n"
     "  - {name: b, listen: [\"127.0.0.1:82\", \"127.0.0.1:81\"], " UP "}\n",
     "3:5: API 'b' has the same route as API 'a' (line 2): listen_path '/' "
     "and no hosts on the same listener",
     NULL},
    {"own_listen_is_shared",
     L "apis:\n  - {name: a, listen: [\"127.0.0.1:8080\"], " UP "}\n",
     "3:24: API 'a': '127.0.0.1:8080' is a shared listener (top-level "
     "listen); an API's own listen must differ",
     NULL},
    {"listen_path_relative",
     L "apis:\n  - {name: a, listen_path: x/, " UP "}\n",
     "3:28: bad listen_path 'x/': it must start with '/' and hold no query, "
     "fragment or space",
     NULL},
    {"bad_host_pattern",
     L "apis:\n  - {name: a, listen_path: /, hosts: [\"a.*.test\"], " UP "}\n",
     "3:39: bad host 'a.*.test': expected a name like api.example.com or "
     "*.example.com",
     NULL},

    /* missing keys */
    {"missing_name", L "apis:\n  - {listen_path: /, " UP "}\n",
     "3:5: missing key 'name' in this apis entry", NULL},
    {"missing_listen_path", L "apis:\n  - {name: a, " UP "}\n",
     "3:5: API 'a': missing key 'listen_path' (or its own 'listen')", NULL},
    {"missing_upstream", L "apis:\n  - {name: a, listen_path: /}\n",
     "3:5: API 'a': missing key 'upstream' (or 'upstreams')", NULL},
    {"no_listener", "threads: 1\n",
     "1:1: no listener: set the top-level 'listen' or give an API its own "
     "'listen'",
     NULL},
    {"api_unreachable",
     "apis:\n  - {name: a, listen: [\"127.0.0.1:81\"], " UP "}\n"
     "  - {name: b, listen_path: /, " UP "}\n",
     "3:5: API 'b' cannot be reached: it has no listen of its own and there "
     "is no top-level listen",
     NULL},

    /* enums */
    {"splice_enum", L "bpf: {splice: fast}\n",
     "2:15: splice: 'fast' is not auto, sockmap, pipe or copy", NULL},
    {"xdp_mode_enum", L "bpf: {xdp: {mode: offload}}\n",
     "2:19: mode: 'offload' is not native or generic", NULL},
    {"on_error_enum",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {on_error: drop}}\n",
     "3:89: on_error: 'drop' is not reject or continue", NULL},
    {"access_log_format_enum", L "access_log: {path: \"-\", format: clf}\n",
     "2:33: format: 'clf' is not json or combined", NULL},

    /* address blocks */
    {"deny_bad_v4", L "bpf: {deny: [\"203.0.113/24\"]}\n",
     "2:14: bad CIDR '203.0.113/24': expected an address block like "
     "203.0.113.0/24 or 2001:db8::/32",
     NULL},
    {"deny_prefix_too_long", L "bpf: {deny: [\"10.0.0.0/33\"]}\n",
     "2:14: bad prefix length in '10.0.0.0/33': expected 0-32", NULL},
    {"deny_host_bits", L "bpf: {deny: [\"10.0.0.1/8\"]}\n",
     "2:14: bad CIDR '10.0.0.1/8': address bits set beyond the /8 prefix",
     NULL},
    {"deny_bad_v6", L "bpf: {deny: [\"2001:db8::zz/32\"]}\n",
     "2:14: bad CIDR '2001:db8::zz/32': expected an address block like "
     "203.0.113.0/24 or 2001:db8::/32",
     NULL},
    {"deny_v6_prefix", L "bpf: {deny: [\"2001:db8::/129\"]}\n",
     "2:14: bad prefix length in '2001:db8::/129': expected 0-128", NULL},
    {"deny_not_list", L "bpf: {deny: 10.0.0.0/8}\n",
     "2:13: deny: expected a list of address blocks (CIDR)", NULL},

    /* numbers out of range */
    {"threads_zero", L "threads: 0\n",
     "2:10: threads must be between 1 and 256, not 0", NULL},
    {"threads_too_many", L "threads: 257\n",
     "2:10: threads must be between 1 and 256, not 257", NULL},
    {"workers_min_above_max", L "python:\n  workers: {min: 5, max: 4}\n",
     "3:12: python.workers: min (5) is larger than max (4)", NULL},
    {"workers_max_zero", L "python: {workers: {max: 0}}\n",
     "2:25: max must be between 1 and 4096, not 0", NULL},
    {"python_timeout_zero", L "python: {timeout_ms: 0}\n",
     "2:22: timeout_ms must be at least 1, not 0", NULL},
    {"store_without_redis", L "python: {store: {db: 2}}\n",
     "2:17: python.store: 'redis' is missing (host:port of the Redis "
     "server); without it the store lives in sluiced and has no settings",
     NULL},
    {"store_redis_not_address", L "python: {store: {redis: localhost}}\n",
     "2:25: bad address 'localhost': expected host:port, e.g. "
     "0.0.0.0:8080 or [::1]:9901",
     NULL},
    {"store_db_negative",
     L "python: {store: {redis: \"127.0.0.1:6379\", db: -1}}\n",
     "2:47: db must be between 0 and 65535, not -1", NULL},
    {"store_prefix_not_string",
     L "python: {store: {redis: \"127.0.0.1:6379\", prefix: [a]}}\n",
     "2:51: prefix: expected a string", NULL},
    {"upstream_timeout_zero", L "limits: {upstream_timeout_ms: 0}\n",
     "2:31: upstream_timeout_ms must be at least 1, not 0", NULL},
    {"header_bytes_small", L "limits: {header_bytes: 100}\n",
     "2:24: header_bytes must be between 1024 and 1048576, not 100", NULL},
    {"middleware_timeout_negative",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {timeout_ms: -5}}\n",
     "3:91: timeout_ms must be at least 1, not -5", NULL},
    {"queue_timeout_zero",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {queue_timeout_ms: 0}}\n",
     "3:97: queue_timeout_ms must be at least 1, not 0", NULL},
    {"pin_dir_relative", L "bpf: {pin_dir: sluice}\n",
     "2:16: pin_dir must be an absolute path", NULL},

    /* hooks and bundles */
    {"config_contains_itself",
     L "apis:\n  - name: a\n    listen_path: /\n    " UP "\n"
       "    middleware:\n      config: &c {self: *c}\n",
     "7:15: config: nested too deeply", NULL},
    {"config_alias_bomb",
     L "apis:\n  - name: a\n    listen_path: /\n    " UP "\n"
       "    middleware:\n      config:\n"
       "        a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n"
       "        b: &b [*a, *a, *a, *a, *a, *a, *a, *a, *a, *a]\n"
       "        c: &c [*b, *b, *b, *b, *b, *b, *b, *b, *b, *b]\n"
       "        d: &d [*c, *c, *c, *c, *c, *c, *c, *c, *c, *c]\n"
       "        e: &e [*d, *d, *d, *d, *d, *d, *d, *d, *d, *d]\n"
       "        f: &f [*e, *e, *e, *e, *e, *e, *e, *e, *e, *e]\n"
       "        g: &g [*f, *f, *f, *f, *f, *f, *f, *f, *f, *f]\n",
     "8:9: config: larger than 1024 KiB as JSON", NULL},
    {"hook_not_dotted",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {pre: [sign]}}\n",
     "3:85: bad hook name 'sign': expected module.function", NULL},
    {"hook_bad_identifier",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {auth_check: billing.2fa}}\n",
     "3:91: bad hook name 'billing.2fa': expected module.function", NULL},
    {"hook_list_not_list",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {post: a.b}}\n",
     "3:85: post: expected a list of hook names (module.function)", NULL},
    {"bundle_missing",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {bundle: no-such-dir}}\n",
     "3:87: bundle: cannot open %DIR%/no-such-dir/manifest.json: No such "
     "file or directory",
     NULL},
    {"bundle_and_hooks",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {pre: [a.b], bundle: bundle}}\n",
     "3:99: bundle: the hooks come from the bundle's manifest.json; list no "
     "pre, auth_check, post_key_auth, post or response beside it",
     NULL},
    {"bundle_bad_driver",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {bundle: bundle}}\n",
     "@MANIFEST@:3:13: driver 'grpc' is not supported: sluice runs Python "
     "bundles only",
     "{\n\t\"custom_middleware\": {\n\t\t\"driver\": \"grpc\"\n\t}\n}\n"},
    {"bundle_hook_without_name",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {bundle: bundle}}\n",
     "@MANIFEST@:1:32: middleware entry without a \"name\"",
     "{\"custom_middleware\": {\"pre\": [{\"path\": \"x.py\"}]}}"},
    {"bundle_bad_json",
     L "apis:\n  - {name: a, listen_path: /, " UP
       ", middleware: {bundle: bundle}}\n",
     "@MANIFEST@:2:1: did not find expected ',' or '}' while parsing a flow "
     "mapping",
     "{\"file_list\": [\"a.py\"]\n"},
};

/* The message expected for CASE: "FILE:" + expect, with the bundle dir and
 * the manifest path put in. */
static void expected_message(const struct error_case *c, char *out, size_t len)
{
	const char *e = c->expect;
	char body[RULES_ERR_MAX + sizeof(tmp_dir)];
	const char *dir = strstr(e, "%DIR%");

	if (strncmp(e, "@MANIFEST@:", 11) == 0) {
		snprintf(out, len, "%s/manifest.json:%s", bundle_dir, e + 11);
		return;
	}
	if (dir)
		snprintf(body, sizeof(body), "%.*s%s%s", (int)(dir - e), e,
			 tmp_dir, dir + 5);
	else
		snprintf(body, sizeof(body), "%s", e);
	snprintf(out, len, "%s:%s", rules_path, body);
}

static void test_error_case(void **state)
{
	const struct error_case *c = *state;
	char err[RULES_ERR_MAX], want[RULES_ERR_MAX * 2];
	struct rules *r;
	size_t n;

	if (c->manifest)
		write_manifest(c->manifest);
	r = load_text(c->yaml, err, sizeof(err));
	if (r) {
		rules_unref(r);
		fail_msg("%s: loaded, expected an error", c->name);
	}
	expected_message(c, want, sizeof(want));
	n = strlen(want);
	if (n && want[n - 1] == '*') {
		if (strncmp(err, want, n - 1) != 0 || strlen(err) <= n - 1)
			fail_msg("%s:\n  got  %s\n  want %s", c->name, err,
				 want);
		return;
	}
	if (strcmp(err, want) != 0)
		fail_msg("%s:\n  got  %s\n  want %s", c->name, err, want);
}

static void test_missing_file_is_cannot_open(void **state)
{
	char err[RULES_ERR_MAX], want[PATH_MAX + 64];

	(void)state;
	unlink(rules_path);
	assert_null(rules_load(rules_path, err, sizeof(err)));
	snprintf(want, sizeof(want),
		 "%s: cannot open: No such file or directory", rules_path);
	assert_string_equal(err, want);
}

static void test_directory_is_cannot_open(void **state)
{
	char err[RULES_ERR_MAX], want[PATH_MAX + 64];

	(void)state;
	assert_null(rules_load(tmp_dir, err, sizeof(err)));
	snprintf(want, sizeof(want), "%s: cannot open: Is a directory",
		 tmp_dir);
	assert_string_equal(err, want);
}

static void test_long_message_is_truncated_not_overrun(void **state)
{
	char err[24];

	(void)state;
	memset(err, 'x', sizeof(err));
	assert_null(load_text(L "listne: x\n", err, 16));
	assert_int_equal(strlen(err), 15);
	assert_int_equal(err[16], 'x');
}

/* ---- a complete valid file ------------------------------------------- */

static const char full_yaml[] =
    "listen: [\"0.0.0.0:18080\", \"[::1]:18081\"]\n"
    "admin: \"127.0.0.1:19901\"\n"
    "threads: 3\n"
    "user: sluice\n"
    "limits:\n"
    "  header_bytes: 16384\n"
    "  body_bytes: 1048576\n"
    "  header_timeout_ms: 5000\n"
    "  idle_timeout_ms: 30000\n"
    "  upstream_connect_ms: 1000\n"
    "  upstream_timeout_ms: 20000\n"
    "bpf:\n"
    "  pin_dir: /sys/fs/bpf/test\n"
    "  splice: pipe\n"
    "  required: true\n"
    "  xdp: {interfaces: [eth0, lo], mode: generic}\n"
    "  deny: [\"203.0.113.0/24\", \"2001:db8::/32\", \"198.51.100.7\"]\n"
    "python:\n"
    "  path: [hooks/examples, /opt/hooks]\n"
    "  workers: {min: 1, max: 4, idle_s: 10}\n"
    "  concurrency: 16\n"
    "  max_requests: 100\n"
    "  max_rss_mb: 256\n"
    "  timeout_ms: 750\n"
    "  store: {redis: \"127.0.0.1:6390\", db: 3, password: s3cret, "
    "prefix: \"\", timeout_ms: 250, shared_rates: true}\n"
    "access_log: {path: \"-\", format: combined}\n"
    "apis:\n"
    "  - name: catalog\n"
    "    listen_path: /catalog/\n"
    "    hosts: [\"API.example.com\", \"*.example.org\"]\n"
    "    strip_listen_path: true\n"
    "    upstream: http://127.0.0.1:9000/v1/\n"
    "  - name: billing\n"
    "    listen_path: /billing/\n"
    "    upstreams: [\"http://127.0.0.1:9001\", \"http://localhost\","
    " \"http://[::1]:9003\"]\n"
    "    middleware:\n"
    "      pre: [billing.sign, pkg.billing.check]\n"
    "      auth_check: billing.auth\n"
    "      post_key_auth: []\n"
    "      post: [billing.audit]\n"
    "      response: [billing.scrub]\n"
    "      timeout_ms: 1000\n"
    "      on_error: continue\n"
    "      max_inflight: 4\n"
    "      queue: 32\n"
    "      queue_timeout_ms: 500\n"
    "      config: {secret_ref: \"x\", n: [1, -2.5, true, null, \"7\"],"
    " nested: {q: \"a\\\"b\"}}\n"
    "  - name: reports\n"
    "    listen: [\"127.0.0.1:18443\"]\n"
    "    upstream: http://127.0.0.1:9002\n"
    "  - name: plain-hooked\n"
    "    listen_path: /hooked/\n"
    "    upstream: http://127.0.0.1:9004\n"
    "    middleware: {}\n";

static void test_full_file_top_level(void **state)
{
	struct rules *r = load_ok(full_yaml);
	const struct sockaddr_in6 *v6 = (const void *)&r->listen[1].sa;
	char path[PATH_MAX + 32];

	(void)state;
	assert_string_equal(r->file, rules_path);
	assert_int_equal(r->listen_count, 2);
	assert_string_equal(r->listen[0].text, "0.0.0.0:18080");
	assert_int_equal(r->listen[0].sa.ss_family, AF_INET);
	assert_int_equal(
	    ntohs(((struct sockaddr_in *)&r->listen[0].sa)->sin_port), 18080);
	assert_int_equal(r->listen[0].sa_len, sizeof(struct sockaddr_in));
	assert_string_equal(r->listen[1].text, "[::1]:18081");
	assert_int_equal(v6->sin6_family, AF_INET6);
	assert_int_equal(ntohs(v6->sin6_port), 18081);
	assert_true(IN6_IS_ADDR_LOOPBACK(&v6->sin6_addr));
	assert_true(r->has_admin);
	assert_string_equal(r->admin.text, "127.0.0.1:19901");
	assert_int_equal(r->threads, 3);
	assert_string_equal(r->user, "sluice");

	assert_int_equal(r->limits.header_bytes, 16384);
	assert_int_equal(r->limits.body_bytes, 1048576);
	assert_int_equal(r->limits.header_timeout_ms, 5000);
	assert_int_equal(r->limits.idle_timeout_ms, 30000);
	assert_int_equal(r->limits.upstream_connect_ms, 1000);
	assert_int_equal(r->limits.upstream_timeout_ms, 20000);

	assert_string_equal(r->bpf.pin_dir, "/sys/fs/bpf/test");
	assert_int_equal(r->bpf.splice, RULES_SPLICE_PIPE);
	assert_true(r->bpf.required);
	assert_int_equal(r->bpf.xdp_interface_count, 2);
	assert_string_equal(r->bpf.xdp_interfaces[1], "lo");
	assert_int_equal(r->bpf.xdp_mode, RULES_XDP_GENERIC);
	assert_int_equal(r->bpf.deny_count, 3);
	assert_int_equal(r->bpf.deny[0].family, AF_INET);
	assert_int_equal(r->bpf.deny[0].prefix_len, 24);
	assert_memory_equal(r->bpf.deny[0].addr, "\xcb\x00\x71\x00", 4);
	assert_string_equal(r->bpf.deny[0].text, "203.0.113.0/24");
	assert_int_equal(r->bpf.deny[1].family, AF_INET6);
	assert_int_equal(r->bpf.deny[1].prefix_len, 32);
	assert_memory_equal(r->bpf.deny[1].addr, "\x20\x01\x0d\xb8", 4);
	assert_int_equal(r->bpf.deny[2].prefix_len, 32);

	snprintf(path, sizeof(path), "%s/hooks/examples", tmp_dir);
	assert_int_equal(r->python.path_count, 2);
	assert_string_equal(r->python.path[0], path);
	assert_string_equal(r->python.path[1], "/opt/hooks");
	assert_int_equal(r->python.workers_min, 1);
	assert_int_equal(r->python.workers_max, 4);
	assert_int_equal(r->python.workers_idle_s, 10);
	assert_int_equal(r->python.concurrency, 16);
	assert_int_equal(r->python.max_requests, 100);
	assert_int_equal(r->python.max_rss_mb, 256);
	assert_int_equal(r->python.timeout_ms, 750);
	assert_true(r->python.store.has_redis);
	assert_string_equal(r->python.store.redis.text, "127.0.0.1:6390");
	assert_int_equal(r->python.store.db, 3);
	assert_string_equal(r->python.store.password, "s3cret");
	assert_string_equal(r->python.store.prefix, "");
	assert_int_equal(r->python.store.timeout_ms, 250);
	assert_true(r->python.store.shared_rates);
	assert_string_equal(r->access_log.path, "-");
	assert_int_equal(r->access_log.format, RULES_LOG_COMBINED);
	assert_int_equal(r->api_count, 4);
	assert_true(r->has_middleware);
	rules_unref(r);
}

static void test_full_file_apis(void **state)
{
	struct rules *r = load_ok(full_yaml);
	const struct rules_api *a = &r->apis[0], *b = &r->apis[1];
	const struct rules_api *c = &r->apis[2], *d = &r->apis[3];

	(void)state;
	assert_string_equal(a->name, "catalog");
	assert_int_equal(a->index, 0);
	assert_int_equal(a->line, 28);
	assert_string_equal(a->listen_path, "/catalog/");
	assert_true(a->strip_listen_path);
	assert_int_equal(a->host_count, 2);
	assert_string_equal(a->hosts[0], "api.example.com");
	assert_string_equal(a->hosts[1], "*.example.org");
	assert_int_equal(a->upstream_count, 1);
	assert_string_equal(a->upstreams[0].url, "http://127.0.0.1:9000/v1/");
	assert_string_equal(a->upstreams[0].host_port, "127.0.0.1:9000");
	assert_string_equal(a->upstreams[0].base_path, "/v1");
	assert_int_equal(a->upstreams[0].sa.ss_family, AF_INET);
	assert_int_equal(a->listen_count, 0);
	assert_null(a->middleware);

	assert_int_equal(b->upstream_count, 3);
	assert_string_equal(b->upstreams[0].base_path, "");
	assert_string_equal(b->upstreams[1].host_port, "localhost:80");
	assert_int_equal(b->upstreams[1].sa.ss_family, AF_INET);
	assert_string_equal(b->upstreams[2].host_port, "[::1]:9003");
	assert_int_equal(b->upstreams[2].sa.ss_family, AF_INET6);
	assert_false(b->strip_listen_path);

	assert_string_equal(c->name, "reports");
	assert_string_equal(c->listen_path, "/");
	assert_int_equal(c->listen_count, 1);
	assert_string_equal(c->listen[0].text, "127.0.0.1:18443");

	assert_non_null(d->middleware);
	assert_int_equal(d->middleware->pre.count, 0);
	assert_null(d->middleware->auth_check);
	assert_string_equal(d->middleware->config_json, "{}");
	assert_int_equal(d->middleware->timeout_ms, 750);
	rules_unref(r);
}

static void test_full_file_middleware(void **state)
{
	struct rules *r = load_ok(full_yaml);
	const struct rules_middleware *mw = r->apis[1].middleware;

	(void)state;
	assert_non_null(mw);
	assert_int_equal(mw->pre.count, 2);
	assert_string_equal(mw->pre.names[0], "billing.sign");
	assert_string_equal(mw->pre.names[1], "pkg.billing.check");
	assert_string_equal(mw->auth_check, "billing.auth");
	assert_int_equal(mw->post_key_auth.count, 0);
	assert_int_equal(mw->post.count, 1);
	assert_string_equal(mw->post.names[0], "billing.audit");
	assert_int_equal(mw->response.count, 1);
	assert_string_equal(mw->response.names[0], "billing.scrub");
	assert_int_equal(mw->timeout_ms, 1000);
	assert_int_equal(mw->on_error, RULES_ON_ERROR_CONTINUE);
	assert_int_equal(mw->max_inflight, 4);
	assert_int_equal(mw->queue, 32);
	assert_int_equal(mw->queue_timeout_ms, 500);
	assert_string_equal(mw->config_json,
			    "{\"secret_ref\":\"x\",\"n\":[1,-2.5,true,null,"
			    "\"7\"],\"nested\":{\"q\":\"a\\\"b\"}}");
	assert_null(mw->bundle_dir);
	rules_unref(r);
}

/* ---- defaults -------------------------------------------------------- */

static void test_defaults_of_a_minimal_file(void **state)
{
	struct rules *r =
	    load_ok(L "apis:\n  - name: a\n    listen_path: /\n"
		      "    " UP "\n    hosts:\n    middleware:\n");
	const struct rules_middleware *mw = r->apis[0].middleware;

	(void)state;
	assert_false(r->has_admin);
	assert_int_equal(r->threads, 0);
	assert_null(r->user);
	assert_int_equal(r->limits.header_bytes, 32768);
	assert_int_equal(r->limits.body_bytes, 10485760);
	assert_int_equal(r->limits.header_timeout_ms, 10000);
	assert_int_equal(r->limits.idle_timeout_ms, 60000);
	assert_int_equal(r->limits.upstream_connect_ms, 3000);
	assert_int_equal(r->limits.upstream_timeout_ms, 30000);
	assert_string_equal(r->bpf.pin_dir, "/sys/fs/bpf/sluice");
	assert_int_equal(r->bpf.splice, RULES_SPLICE_AUTO);
	assert_false(r->bpf.required);
	assert_int_equal(r->bpf.xdp_interface_count, 0);
	assert_int_equal(r->bpf.xdp_mode, RULES_XDP_NATIVE);
	assert_int_equal(r->bpf.deny_count, 0);
	assert_int_equal(r->python.path_count, 0);
	assert_int_equal(r->python.workers_min, 2);
	assert_int_equal(r->python.workers_max, 16);
	assert_int_equal(r->python.workers_idle_s, 30);
	assert_int_equal(r->python.concurrency, 64);
	assert_int_equal(r->python.max_requests, 10000);
	assert_int_equal(r->python.max_rss_mb, 512);
	assert_int_equal(r->python.timeout_ms, 5000);
	assert_false(r->python.store.has_redis);
	assert_string_equal(r->python.store.prefix, "coprocess-data:");
	assert_int_equal(r->python.store.timeout_ms, 1000);
	assert_false(r->python.store.shared_rates);
	assert_null(r->access_log.path);
	assert_int_equal(r->access_log.format, RULES_LOG_JSON);
	assert_false(r->apis[0].strip_listen_path);
	assert_int_equal(r->apis[0].host_count, 0);

	/* `middleware:` with nothing under it still makes the API hooked. */
	assert_true(r->has_middleware);
	assert_non_null(mw);
	assert_int_equal(mw->timeout_ms, 5000);
	assert_int_equal(mw->on_error, RULES_ON_ERROR_REJECT);
	assert_int_equal(mw->max_inflight, 8);
	assert_int_equal(mw->queue, 256);
	assert_int_equal(mw->queue_timeout_ms, 2000);
	assert_string_equal(mw->config_json, "{}");
	rules_unref(r);
}

static void test_hook_timeout_defaults_to_python_timeout(void **state)
{
	/* python comes after apis: the default is applied once all is read */
	struct rules *r = load_ok(L "apis:\n  - {name: a, listen_path: /, " UP
				    ", middleware: {pre: [m.f]}}\n"
				    "python: {timeout_ms: 1234}\n");

	(void)state;
	assert_int_equal(r->apis[0].middleware->timeout_ms, 1234);
	assert_false(r->has_admin);
	rules_unref(r);
}

static void test_threads_auto_and_relative_log_path(void **state)
{
	struct rules *r =
	    load_ok(L "threads: auto\naccess_log: {path: logs/access.log}\n");
	char want[PATH_MAX + 32];

	(void)state;
	snprintf(want, sizeof(want), "%s/logs/access.log", tmp_dir);
	assert_int_equal(r->threads, 0);
	assert_string_equal(r->access_log.path, want);
	assert_int_equal(r->api_count, 0);
	rules_unref(r);
}

/* Routes that differ in one of listener, path or hosts load fine. */
static void test_distinct_routes_load(void **state)
{
	struct rules *r = load_ok(
	    L "apis:\n"
	      "  - {name: a, listen_path: /x/, " UP "}\n"
	      "  - {name: b, listen_path: /x/, hosts: [b.test], " UP "}\n"
	      "  - {name: c, listen_path: /x/, hosts: [c.test], " UP "}\n"
	      "  - {name: d, listen_path: /x, " UP "}\n"
	      "  - {name: e, listen_path: /x/, listen: [\"127.0.0.1:81\"], " UP
	      "}\n"
	      "  - {name: f, listen_path: /x/, listen: [\"127.0.0.1:82\"], " UP
	      "}\n");

	(void)state;
	assert_int_equal(r->api_count, 6);
	assert_non_null(rules_find_api(r, "f"));
	rules_unref(r);
}

static void test_host_only_needs_unique_hosts(void **state)
{
	struct rules *r = load_ok(
	    L
	    "apis:\n"
	    "  - {name: solo, listen_path: /, hosts: [solo.test], " UP "}\n"
	    "  - {name: wild, listen_path: /, hosts: [\"*.w.test\"], " UP "}\n"
	    "  - {name: shared-a, listen_path: /, hosts: [s.test], " UP "}\n"
	    "  - {name: shared-b, listen_path: /b/, hosts: [S.test], " UP "}\n"
	    "  - {name: pathed, listen_path: /p/, hosts: [p.test], " UP "}\n"
	    "  - {name: hooked, listen_path: /, hosts: [h.test], " UP
	    ", middleware: {}}\n"
	    "  - {name: nohost, listen_path: /, " UP "}\n");

	(void)state;
	assert_true(rules_find_api(r, "solo")->host_only);
	assert_true(rules_find_api(r, "wild")->host_only);
	assert_false(rules_find_api(r, "shared-a")->host_only);
	assert_false(rules_find_api(r, "shared-b")->host_only);
	assert_false(rules_find_api(r, "pathed")->host_only);
	assert_false(rules_find_api(r, "hooked")->host_only);
	assert_false(rules_find_api(r, "nohost")->host_only);
	rules_unref(r);
}

/* Splicing after the first answer: on by default for an API on its own
 * listener, off elsewhere (the front keeps adding X-Forwarded-*). */
static void test_splice_defaults_and_override(void **state)
{
	struct rules *r = load_ok(
	    L "apis:\n"
	      "  - {name: own, listen: [\"127.0.0.1:18555\"], " UP "}\n"
	      "  - {name: own-off, listen: [\"127.0.0.1:18556\"], splice: "
	      "false, " UP "}\n"
	      "  - {name: host, listen_path: /, hosts: [h.test], " UP "}\n"
	      "  - {name: host-on, listen_path: /, hosts: [o.test], splice: "
	      "true, " UP "}\n");

	(void)state;
	assert_true(rules_find_api(r, "own")->splice);
	assert_false(rules_find_api(r, "own-off")->splice);
	assert_false(rules_find_api(r, "host")->splice);
	assert_true(rules_find_api(r, "host-on")->splice);
	rules_unref(r);
}

/* ---- Tyk bundles ----------------------------------------------------- */

/* Indented with tabs, as Tyk's own tooling writes it. */
static const char manifest_json[] =
    "{\n"
    "\t\"file_list\": [\"middleware.py\", \"helpers.py\", \"data.txt\"],\n"
    "\t\"custom_middleware\": {\n"
    "\t\t\"pre\": [{\"name\": \"MyPreHook\"}],\n"
    "\t\t\"post\": [{\"name\": \"MyPostHook\", \"require_session\": "
    "false}],\n"
    "\t\t\"post_key_auth\": [{\"name\": \"AfterAuth\", \"path\": "
    "\"middleware.py\"}],\n"
    "\t\t\"auth_check\": {\"name\": \"MyAuthCheck\"},\n"
    "\t\t\"response\": [{\"name\": \"ResponseHook\", \"raw_body_only\": "
    "true}],\n"
    "\t\t\"driver\": \"python\"\n"
    "\t},\n"
    "\t\"checksum\": \"\",\n"
    "\t\"signature\": \"\"\n"
    "}\n";

static void test_bundle_loads_manifest(void **state)
{
	struct rules *r;
	const struct rules_middleware *mw;

	(void)state;
	write_manifest(manifest_json);
	r = load_ok(L "apis:\n  - name: tyk\n    listen_path: /tyk/\n    " UP
		      "\n    middleware: {bundle: bundle/, config: {a: 1}}\n");
	mw = r->apis[0].middleware;
	assert_string_equal(mw->bundle_dir, bundle_dir);
	assert_int_equal(mw->bundle_modules.count, 2);
	assert_string_equal(mw->bundle_modules.names[0], "middleware");
	assert_string_equal(mw->bundle_modules.names[1], "helpers");
	assert_int_equal(mw->pre.count, 1);
	assert_string_equal(mw->pre.names[0], "MyPreHook");
	assert_int_equal(mw->post.count, 1);
	assert_string_equal(mw->post.names[0], "MyPostHook");
	assert_int_equal(mw->post_key_auth.count, 1);
	assert_string_equal(mw->post_key_auth.names[0], "AfterAuth");
	assert_string_equal(mw->auth_check, "MyAuthCheck");
	assert_int_equal(mw->response.count, 1);
	assert_string_equal(mw->response.names[0], "ResponseHook");
	assert_string_equal(mw->config_json, "{\"a\":1}");
	assert_true(r->has_middleware);
	rules_unref(r);
}

static void test_bundle_absolute_dir(void **state)
{
	char yaml[PATH_MAX + 256];
	struct rules *r;

	(void)state;
	write_manifest("{\"file_list\": [], \"custom_middleware\": {}}");
	snprintf(yaml, sizeof(yaml),
		 L "apis:\n  - {name: a, listen_path: /, " UP
		   ", middleware: {bundle: \"%s\"}}\n",
		 bundle_dir);
	r = load_ok(yaml);
	assert_string_equal(r->apis[0].middleware->bundle_dir, bundle_dir);
	assert_int_equal(r->apis[0].middleware->bundle_modules.count, 0);
	assert_int_equal(r->apis[0].middleware->pre.count, 0);
	rules_unref(r);
}

/* ---- references and lookup ------------------------------------------- */

static void test_ref_unref_and_find(void **state)
{
	struct rules *r = load_ok(full_yaml);

	(void)state;
	assert_int_equal(r->refs, 1);
	assert_ptr_equal(rules_ref(r), r);
	assert_int_equal(r->refs, 2);
	rules_unref(r);
	assert_int_equal(r->refs, 1);
	assert_ptr_equal(rules_find_api(r, "billing"), &r->apis[1]);
	assert_null(rules_find_api(r, "bill"));
	assert_null(rules_find_api(r, ""));
	rules_unref(r);
}

/* ---- fixture --------------------------------------------------------- */

static int group_setup(void **state)
{
	(void)state;
	snprintf(tmp_dir, sizeof(tmp_dir), "/tmp/sluice-rules-XXXXXX");
	if (!mkdtemp(tmp_dir))
		return -1;
	snprintf(rules_path, sizeof(rules_path), "%s/rules.yaml", tmp_dir);
	snprintf(bundle_dir, sizeof(bundle_dir), "%s/bundle", tmp_dir);
	return mkdir(bundle_dir, 0700);
}

static int group_teardown(void **state)
{
	char path[PATH_MAX + 32];

	(void)state;
	snprintf(path, sizeof(path), "%s/manifest.json", bundle_dir);
	unlink(path);
	unlink(rules_path);
	rmdir(bundle_dir);
	return rmdir(tmp_dir);
}

int main(void)
{
	static const struct CMUnitTest fixed[] = {
	    cmocka_unit_test(test_missing_file_is_cannot_open),
	    cmocka_unit_test(test_directory_is_cannot_open),
	    cmocka_unit_test(test_long_message_is_truncated_not_overrun),
	    cmocka_unit_test(test_full_file_top_level),
	    cmocka_unit_test(test_full_file_apis),
	    cmocka_unit_test(test_full_file_middleware),
	    cmocka_unit_test(test_defaults_of_a_minimal_file),
	    cmocka_unit_test(test_hook_timeout_defaults_to_python_timeout),
	    cmocka_unit_test(test_threads_auto_and_relative_log_path),
	    cmocka_unit_test(test_distinct_routes_load),
	    cmocka_unit_test(test_host_only_needs_unique_hosts),
	    cmocka_unit_test(test_splice_defaults_and_override),
	    cmocka_unit_test(test_bundle_loads_manifest),
	    cmocka_unit_test(test_bundle_absolute_dir),
	    cmocka_unit_test(test_ref_unref_and_find),
	};
	size_t n_errors = sizeof(error_cases) / sizeof(error_cases[0]);
	size_t n_fixed = sizeof(fixed) / sizeof(fixed[0]);
	struct CMUnitTest *tests = calloc(n_errors + n_fixed, sizeof(*tests));
	int failed;

	if (!tests)
		return 1;
	memcpy(tests, fixed, sizeof(fixed));
	for (size_t i = 0; i < n_errors; i++) {
		tests[n_fixed + i].name = error_cases[i].name;
		tests[n_fixed + i].test_func = test_error_case;
		tests[n_fixed + i].initial_state = (void *)&error_cases[i];
	}
	failed = _cmocka_run_group_tests("rules", tests, n_errors + n_fixed,
					 group_setup, group_teardown);
	free(tests);
	return failed;
}
