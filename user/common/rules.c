/* The rules file: YAML in, one validated `struct rules` out.
 *
 * libyaml's document API builds the node tree; the walk over it is driven by
 * tables. Each mapping has a table of the keys it allows, and each key names
 * a handler that checks one node and stores the result at an offset in the
 * struct being filled. A handler that refuses a node writes one message
 * "FILE:LINE:COL: ..." pointing at that node and returns -EINVAL; the walk
 * stops at the first error. Checks that need the whole file (routes that
 * collide, listeners that clash, defaults taken from another section) run
 * after the walk, in rules_check().
 *
 * Every allocation is attached to the struct at once, so a failed load frees
 * everything through the same rules_free() a last rules_unref() uses.
 */
#include "common/rules.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <limits.h>
#include <netdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <yaml.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* State of one walk: over the rules file, or over a bundle's manifest. */
struct parser {
	const char *file; /* named in messages */
	const char *dir;  /* relative paths are taken from here */
	yaml_document_t *doc;
	char *err;
	size_t err_len;
	struct rules *rules;
	yaml_node_t *root;
	yaml_node_t *apis_node;
	yaml_node_t *bundle_node; /* the `bundle:` value being loaded */
};

struct key;
typedef int (*key_fn)(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base);

/* One allowed key of a mapping. The handler writes at base + offset; lists
 * keep their length at base + count. */
struct key {
	const char *name;
	key_fn parse;
	size_t offset;
	size_t count;
	long long min, max;
	const void *extra;
};

/* Table entries. */
#define KEY(n, fn, off)                                                        \
	{                                                                      \
		.name = (n), .parse = (fn), .offset = (off)                    \
	}
#define KEY_RANGE(n, fn, off, lo, hi)                                          \
	{                                                                      \
		.name = (n), .parse = (fn), .offset = (off), .min = (lo),      \
		.max = (hi)                                                    \
	}
#define KEY_EXTRA(n, fn, off, x)                                               \
	{                                                                      \
		.name = (n), .parse = (fn), .offset = (off), .extra = (x)      \
	}
#define KEY_LIST(n, off, cnt, kind)                                            \
	{                                                                      \
		.name = (n), .parse = key_list, .offset = (off),               \
		.count = (cnt), .extra = (kind)                                \
	}
#define KEY_ENUM(n, off, ...)                                                  \
	{                                                                      \
		.name = (n), .parse = key_enum, .offset = (off),               \
		.extra = (const char *const[])                                 \
		{                                                              \
			__VA_ARGS__, NULL                                      \
		}                                                              \
	}
#define KEY_END                                                                \
	{                                                                      \
		.name = NULL                                                   \
	}

/* A nested mapping: its table and the name used in messages. */
struct map_kind {
	const char *where;
	const struct key *keys;
};

typedef int (*elem_fn)(struct parser *p, yaml_node_t *node, void *elem);

/* A list: what its items are called in messages, their size, their parser. */
struct list_kind {
	const char *noun;
	size_t size;
	elem_fn parse;
};

/* ---- messages -------------------------------------------------------- */

static int fail_mark(struct parser *p, const char *file, yaml_mark_t mark,
		     const char *fmt, va_list ap)
{
	int n;

	n = snprintf(p->err, p->err_len, "%s:%zu:%zu: ", file, mark.line + 1,
		     mark.column + 1);
	if (n >= 0 && (size_t)n < p->err_len)
		vsnprintf(p->err + n, p->err_len - n, fmt, ap);
	return -EINVAL;
}

__attribute__((format(printf, 3, 4))) static int
fail(struct parser *p, const yaml_node_t *node, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_mark(p, p->file, node->start_mark, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

static int fail_nomem(struct parser *p, const yaml_node_t *node)
{
	fail(p, node, "out of memory");
	return -ENOMEM;
}

/* ---- nodes ----------------------------------------------------------- */

static yaml_node_t *node_get(struct parser *p, int id)
{
	return yaml_document_get_node(p->doc, id);
}

static const char *scalar(const yaml_node_t *node)
{
	return (const char *)node->data.scalar.value;
}

static bool is_plain(const yaml_node_t *node)
{
	return node->type == YAML_SCALAR_NODE &&
	       node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* An empty value, `~` or `null`, written without quotes. */
static bool is_null(const yaml_node_t *node)
{
	static const char *const nulls[] = {"", "~", "null", "Null", "NULL"};

	if (!is_plain(node))
		return false;
	for (size_t i = 0; i < ARRAY_SIZE(nulls); i++)
		if (strcmp(scalar(node), nulls[i]) == 0)
			return true;
	return false;
}

static bool is_string(const yaml_node_t *node)
{
	return node->type == YAML_SCALAR_NODE && !is_null(node) &&
	       node->data.scalar.length > 0 &&
	       strlen(scalar(node)) == node->data.scalar.length;
}

/* The value of KEY in mapping MAP, or NULL. */
static yaml_node_t *map_get(struct parser *p, yaml_node_t *map, const char *key)
{
	yaml_node_pair_t *pair;

	if (!map || map->type != YAML_MAPPING_NODE)
		return NULL;
	for (pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = node_get(p, pair->key);

		if (k->type == YAML_SCALAR_NODE && strcmp(scalar(k), key) == 0)
			return node_get(p, pair->value);
	}
	return NULL;
}

/* ---- small helpers --------------------------------------------------- */

static void strv_free(char **v, size_t n)
{
	for (size_t i = 0; v && i < n; i++)
		free(v[i]);
	free(v);
}

/* PATH as is when absolute, else DIR/PATH. */
static char *path_from(const char *dir, const char *path)
{
	char *out;

	if (path[0] == '/' || !dir)
		return strdup(path);
	if (asprintf(&out, "%s/%s", dir, path) < 0)
		return NULL;
	return out;
}

static bool is_ident(const char *s, size_t len)
{
	if (len == 0 || !(isalpha((unsigned char)s[0]) || s[0] == '_'))
		return false;
	for (size_t i = 1; i < len; i++)
		if (!(isalnum((unsigned char)s[i]) || s[i] == '_'))
			return false;
	return true;
}

/* "module.function", "package.module.function": dotted identifiers, at
 * least two of them. */
static bool is_hook_name(const char *s)
{
	const char *dot;
	int parts = 0;

	for (;;) {
		dot = strchr(s, '.');
		if (!is_ident(s, dot ? (size_t)(dot - s) : strlen(s)))
			return false;
		parts++;
		if (!dot)
			return parts >= 2;
		s = dot + 1;
	}
}

/* ---- scalars --------------------------------------------------------- */

static int parse_integer(struct parser *p, const struct key *k,
			 yaml_node_t *node, long long *out)
{
	const char *s = scalar(node);
	char *end;

	if (!is_plain(node) || is_null(node) ||
	    !(isdigit((unsigned char)s[0]) || s[0] == '-'))
		return fail(p, node, "%s: expected an integer", k->name);
	errno = 0;
	*out = strtoll(s, &end, 10);
	if (*end || end == s)
		return fail(p, node, "%s: expected an integer", k->name);
	if (errno || *out < k->min || *out > k->max) {
		if (k->max == INT_MAX || k->max == LLONG_MAX)
			return fail(p, node, "%s must be at least %lld, not %s",
				    k->name, k->min, s);
		return fail(p, node, "%s must be between %lld and %lld, not %s",
			    k->name, k->min, k->max, s);
	}
	return 0;
}

static int key_int(struct parser *p, const struct key *k, yaml_node_t *node,
		   void *base)
{
	long long v;
	int err = parse_integer(p, k, node, &v);

	if (!err)
		*(int *)((char *)base + k->offset) = (int)v;
	return err;
}

static int key_size(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	long long v;
	int err = parse_integer(p, k, node, &v);

	if (!err)
		*(size_t *)((char *)base + k->offset) = (size_t)v;
	return err;
}

static int key_bool(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	bool *dst = (bool *)((char *)base + k->offset);

	if (is_plain(node) && strcmp(scalar(node), "true") == 0)
		*dst = true;
	else if (is_plain(node) && strcmp(scalar(node), "false") == 0)
		*dst = false;
	else
		return fail(p, node, "%s: expected true or false", k->name);
	return 0;
}

/* The string NODE into the char * at BASE + K's offset. */
static int set_string(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	char **dst = (char **)((char *)base + k->offset);

	free(*dst);
	*dst = strdup(scalar(node));
	return *dst ? 0 : fail_nomem(p, node);
}

static int key_string(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	if (!is_string(node))
		return fail(p, node, "%s: expected a non-empty string",
			    k->name);
	return set_string(p, k, node, base);
}

static int key_abs_path(struct parser *p, const struct key *k,
			yaml_node_t *node, void *base)
{
	if (is_string(node) && scalar(node)[0] != '/')
		return fail(p, node, "%s must be an absolute path", k->name);
	return key_string(p, k, node, base);
}

/* A file path, or "-" for stderr; relative paths start at the rules file. */
static int key_log_path(struct parser *p, const struct key *k,
			yaml_node_t *node, void *base)
{
	char **dst = (char **)((char *)base + k->offset);

	if (!is_string(node))
		return fail(p, node, "%s: expected \"-\" or a file path",
			    k->name);
	free(*dst);
	if (strcmp(scalar(node), "-") == 0)
		*dst = strdup("-");
	else
		*dst = path_from(p->dir, scalar(node));
	return *dst ? 0 : fail_nomem(p, node);
}

/* extra: NULL-terminated names; the value stored is the index. */
static int key_enum(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	const char *const *names = k->extra;
	char allowed[128] = "";

	for (int i = 0; names[i]; i++) {
		if (is_string(node) && strcmp(scalar(node), names[i]) == 0) {
			*(int *)((char *)base + k->offset) = i;
			return 0;
		}
		snprintf(allowed + strlen(allowed),
			 sizeof(allowed) - strlen(allowed), "%s%s",
			 i ? (names[i + 1] ? ", " : " or ") : "", names[i]);
	}
	if (node->type != YAML_SCALAR_NODE)
		return fail(p, node, "%s: expected %s", k->name, allowed);
	return fail(p, node, "%s: '%s' is not %s", k->name, scalar(node),
		    allowed);
}

/* ---- mappings and lists ---------------------------------------------- */

static const struct key *key_find(const struct key *keys, const char *name)
{
	for (; keys->name; keys++)
		if (strcmp(keys->name, name) == 0)
			return keys;
	return NULL;
}

static int fail_unknown(struct parser *p, yaml_node_t *node,
			const struct key *keys, const char *where)
{
	char allowed[384] = "";
	size_t len = 0;

	for (const struct key *k = keys; k->name && len < sizeof(allowed); k++)
		len += snprintf(allowed + len, sizeof(allowed) - len, "%s%s",
				k == keys ? "" : ", ", k->name);
	return fail(p, node, "unknown key '%s' in %s (allowed: %s)",
		    scalar(node), where, allowed);
}

static int check_duplicate(struct parser *p, yaml_node_t *map,
			   yaml_node_pair_t *pair)
{
	yaml_node_t *key = node_get(p, pair->key);

	for (yaml_node_pair_t *prev = map->data.mapping.pairs.start;
	     prev < pair; prev++) {
		yaml_node_t *k = node_get(p, prev->key);

		if (k->type == YAML_SCALAR_NODE &&
		    strcmp(scalar(k), scalar(key)) == 0)
			return fail(p, key,
				    "duplicate key '%s' (first at line %zu)",
				    scalar(key), k->start_mark.line + 1);
	}
	return 0;
}

/* Walk MAP with the table KEYS into BASE. SEEN, when given, gets one bit
 * per table entry that was present. An empty value is an empty mapping. */
static int parse_mapping(struct parser *p, yaml_node_t *map,
			 const struct key *keys, const char *where, void *base,
			 uint64_t *seen)
{
	yaml_node_pair_t *pair;
	int err;

	if (seen)
		*seen = 0;
	if (is_null(map))
		return 0;
	if (map->type != YAML_MAPPING_NODE)
		return fail(p, map, "%s: expected a mapping", where);

	for (pair = map->data.mapping.pairs.start;
	     pair < map->data.mapping.pairs.top; pair++) {
		yaml_node_t *kn = node_get(p, pair->key);
		const struct key *k;

		if (!is_string(kn))
			return fail(p, kn, "%s: expected a key name", where);
		err = check_duplicate(p, map, pair);
		if (err)
			return err;
		k = key_find(keys, scalar(kn));
		if (!k)
			return fail_unknown(p, kn, keys, where);
		err = k->parse(p, k, node_get(p, pair->value), base);
		if (err)
			return err;
		if (seen)
			*seen |= 1ULL << (k - keys);
	}
	return 0;
}

static int key_map(struct parser *p, const struct key *k, yaml_node_t *node,
		   void *base)
{
	const struct map_kind *kind = k->extra;

	return parse_mapping(p, node, kind->keys, kind->where,
			     (char *)base + k->offset, NULL);
}

/* A sequence of items of one kind into a calloc'd array. The count is set
 * as soon as the array exists, so a failure half-way frees cleanly. */
static int parse_list(struct parser *p, yaml_node_t *node,
		      const struct list_kind *kind, void **arr, size_t *count)
{
	yaml_node_item_t *item;
	size_t n;
	char *elems;
	int err;

	if (node->type != YAML_SEQUENCE_NODE)
		return fail(p, node, "expected a list of %s", kind->noun);
	n = node->data.sequence.items.top - node->data.sequence.items.start;
	elems = calloc(n ? n : 1, kind->size);
	if (!elems)
		return fail_nomem(p, node);
	*arr = elems;
	*count = n;

	for (item = node->data.sequence.items.start;
	     item < node->data.sequence.items.top; item++) {
		err = kind->parse(p, node_get(p, *item), elems);
		if (err)
			return err;
		elems += kind->size;
	}
	return 0;
}

static int key_list(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	void **arr = (void **)((char *)base + k->offset);
	size_t *count = (size_t *)((char *)base + k->count);
	const struct list_kind *kind = k->extra;

	if (is_null(node))
		return 0;
	if (node->type != YAML_SEQUENCE_NODE)
		return fail(p, node, "%s: expected a list of %s", k->name,
			    kind->noun);
	return parse_list(p, node, kind, arr, count);
}

/* ---- list items ------------------------------------------------------ */

static int elem_string(struct parser *p, yaml_node_t *node, void *elem)
{
	if (!is_string(node))
		return fail(p, node, "expected a non-empty string");
	*(char **)elem = strdup(scalar(node));
	return *(char **)elem ? 0 : fail_nomem(p, node);
}

static int elem_iface(struct parser *p, yaml_node_t *node, void *elem)
{
	if (is_string(node) && strlen(scalar(node)) >= 16)
		return fail(p, node, "interface name '%s' is too long",
			    scalar(node));
	return elem_string(p, node, elem);
}

static int elem_dir(struct parser *p, yaml_node_t *node, void *elem)
{
	if (!is_string(node))
		return fail(p, node, "expected a directory path");
	*(char **)elem = path_from(p->dir, scalar(node));
	return *(char **)elem ? 0 : fail_nomem(p, node);
}

static int elem_hook(struct parser *p, yaml_node_t *node, void *elem)
{
	if (!is_string(node) || !is_hook_name(scalar(node)))
		return fail(p, node,
			    "bad hook name '%s': expected module.function",
			    node->type == YAML_SCALAR_NODE ? scalar(node) : "");
	return elem_string(p, node, elem);
}

/* "api.example.com", "*.example.com", "[2001:db8::1]"; stored lower case. */
static bool is_host_pattern(const char *s)
{
	if (s[0] == '[')
		return strlen(s) > 2 && s[strlen(s) - 1] == ']' &&
		       strspn(s + 1, "0123456789abcdefABCDEF:.") ==
			   strlen(s) - 2;
	if (strncmp(s, "*.", 2) == 0)
		s += 2;
	return s[0] && s[0] != '.' &&
	       strspn(s,
		      "abcdefghijklmnopqrstuvwxyz"
		      "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._") == strlen(s);
}

static int elem_host(struct parser *p, yaml_node_t *node, void *elem)
{
	char *host;

	if (!is_string(node) || !is_host_pattern(scalar(node)))
		return fail(p, node,
			    "bad host '%s': expected a name like "
			    "api.example.com or *.example.com",
			    node->type == YAML_SCALAR_NODE ? scalar(node) : "");
	host = strdup(scalar(node));
	if (!host)
		return fail_nomem(p, node);
	for (char *c = host; *c; c++)
		*c = (char)tolower((unsigned char)*c);
	*(char **)elem = host;
	return 0;
}

/* ---- addresses ------------------------------------------------------- */

static int parse_port(const char *s)
{
	long port;
	char *end;

	if (!isdigit((unsigned char)s[0]) || strlen(s) > 5)
		return -1;
	port = strtol(s, &end, 10);
	if (*end || port < 1 || port > 65535)
		return -1;
	return (int)port;
}

/* Split "host:port" or "[v6]:port" in place. Returns -1 when the shape is
 * wrong; *bracketed tells whether the host was an IPv6 literal. */
static int split_host_port(char *s, char **host, char **port, bool *bracketed)
{
	char *colon;

	*bracketed = s[0] == '[';
	if (*bracketed) {
		char *close = strchr(s, ']');

		if (!close || close[1] != ':')
			return -1;
		*close = '\0';
		*host = s + 1;
		*port = close + 2;
		return 0;
	}
	colon = strchr(s, ':');
	if (!colon || colon == s || strchr(colon + 1, ':'))
		return -1;
	*colon = '\0';
	*host = s;
	*port = colon + 1;
	return 0;
}

/* An IPv4 or bracketed IPv6 literal, parsed strictly: "1.2.3" is refused
 * rather than read the way inet_aton would. */
static int resolve_numeric(const char *host, int port, bool v6,
			   struct sockaddr_storage *sa, socklen_t *sa_len)
{
	struct sockaddr_in6 *sin6 = (struct sockaddr_in6 *)sa;
	struct sockaddr_in *sin = (struct sockaddr_in *)sa;

	memset(sa, 0, sizeof(*sa));
	if (v6) {
		sin6->sin6_family = AF_INET6;
		sin6->sin6_port = htons((uint16_t)port);
		*sa_len = sizeof(*sin6);
		return inet_pton(AF_INET6, host, &sin6->sin6_addr) == 1 ? 0
									: -1;
	}
	sin->sin_family = AF_INET;
	sin->sin_port = htons((uint16_t)port);
	*sa_len = sizeof(*sin);
	return inet_pton(AF_INET, host, &sin->sin_addr) == 1 ? 0 : -1;
}

/* Literals as they are, names through getaddrinfo. Returns 0, or -1 with
 * *why set. */
static int resolve(const char *host, int port, bool bracketed,
		   struct sockaddr_storage *sa, socklen_t *sa_len,
		   const char **why)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM}, *res, *pick;
	char service[8];
	int err;

	*why = "not a valid IP address";
	if (bracketed || strspn(host, "0123456789.") == strlen(host))
		return resolve_numeric(host, port, bracketed, sa, sa_len);
	if (strchr(host, ':')) {
		*why = "IPv6 addresses need brackets, e.g. [::1]:8080";
		return -1;
	}
	snprintf(service, sizeof(service), "%d", port);
	err = getaddrinfo(host, service, &hints, &res);
	if (err) {
		*why = gai_strerror(err);
		return -1;
	}
	/* A name with both families ("localhost") means IPv4 first: that is
	 * where small upstreams listen. */
	for (pick = res; pick; pick = pick->ai_next)
		if (pick->ai_family == AF_INET)
			break;
	if (!pick)
		pick = res;
	memcpy(sa, pick->ai_addr, pick->ai_addrlen);
	*sa_len = pick->ai_addrlen;
	freeaddrinfo(res);
	return 0;
}

static int elem_addr(struct parser *p, yaml_node_t *node, void *elem)
{
	struct rules_addr *addr = elem;
	char buf[sizeof(addr->text)], *host, *port_text;
	const char *why;
	bool bracketed;
	int port;

	if (!is_string(node))
		return fail(p, node, "expected a host:port string");
	if (strlen(scalar(node)) >= sizeof(buf))
		return fail(p, node, "address '%.40s...' is too long",
			    scalar(node));
	strcpy(addr->text, scalar(node));
	strcpy(buf, scalar(node));

	if (split_host_port(buf, &host, &port_text, &bracketed))
		return fail(p, node,
			    "bad address '%s': expected host:port, "
			    "e.g. 0.0.0.0:8080 or [::1]:9901",
			    addr->text);
	port = parse_port(port_text);
	if (port < 0)
		return fail(p, node, "bad port in '%s': expected 1-65535",
			    addr->text);
	if (resolve(host, port, bracketed, &addr->sa, &addr->sa_len, &why))
		return fail(p, node, "bad address '%s': %s", addr->text, why);
	return 0;
}

static int key_addr(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	if (!is_string(node))
		return fail(p, node, "%s: expected a host:port string",
			    k->name);
	return elem_addr(p, node, (char *)base + k->offset);
}

/* The shape of "http://host[:port][/base]"; *auth_len gets the length of
 * the host[:port] part. */
static int upstream_check_shape(struct parser *p, yaml_node_t *node,
				const char *text, size_t *auth_len)
{
	const char *rest = text + 7;

	if (strncasecmp(text, "https://", 8) == 0)
		return fail(p, node,
			    "upstream '%s': TLS to upstreams is not supported, "
			    "use http://",
			    text);
	if (strncasecmp(text, "http://", 7) != 0)
		return fail(p, node,
			    "bad upstream URL '%s': expected "
			    "http://host[:port][/base]",
			    text);
	*auth_len = strcspn(rest, "/?#");
	if (strpbrk(rest, "?# "))
		return fail(p, node,
			    "bad upstream URL '%s': no query or fragment "
			    "allowed, only http://host[:port][/base]",
			    text);
	if (*auth_len == 0 || memchr(rest, '@', *auth_len))
		return fail(p, node,
			    "bad upstream URL '%s': expected "
			    "http://host[:port][/base]",
			    text);
	return 0;
}

/* AUTH is "host", "host:port", "[v6]" or "[v6]:port" (changed in place):
 * resolve it into UP's address and its "host:port" text. */
static int upstream_resolve(struct parser *p, yaml_node_t *node,
			    const char *text, char *auth,
			    struct rules_upstream *up)
{
	size_t len = strlen(auth);
	char *host = auth, *port_text;
	bool bracketed = false;
	const char *why;
	int port = 80, n;

	if (auth[0] == '[' && auth[len - 1] == ']') {
		auth[len - 1] = '\0';
		host = auth + 1;
		bracketed = true;
	} else if (auth[0] == '[' || strchr(auth, ':')) {
		if (split_host_port(auth, &host, &port_text, &bracketed) ||
		    (port = parse_port(port_text)) < 0)
			return fail(p, node,
				    "bad upstream URL '%s': expected "
				    "http://host[:port][/base], port 1-65535",
				    text);
	}
	if (resolve(host, port, bracketed, &up->sa, &up->sa_len, &why))
		return fail(p, node, "upstream '%s': cannot resolve '%s': %s",
			    text, host, why);
	n = asprintf(&up->host_port, bracketed ? "[%s]:%d" : "%s:%d", host,
		     port);
	if (n < 0) {
		up->host_port = NULL;
		return fail_nomem(p, node);
	}
	return 0;
}

/* An upstream URL. The host is resolved now: an upstream that cannot be
 * found is a mistake in the file, not a runtime surprise. */
static int elem_upstream(struct parser *p, yaml_node_t *node, void *elem)
{
	struct rules_upstream *up = elem;
	const char *text, *base;
	size_t auth_len = 0, len;
	char *auth;
	int err;

	if (!is_string(node))
		return fail(p, node, "expected an upstream URL");
	text = scalar(node);
	err = upstream_check_shape(p, node, text, &auth_len);
	if (err)
		return err;
	auth = strndup(text + 7, auth_len);
	if (!auth)
		return fail_nomem(p, node);
	err = upstream_resolve(p, node, text, auth, up);
	free(auth);
	if (err)
		return err;

	base = text + 7 + auth_len;
	len = strlen(base);
	while (len > 0 && base[len - 1] == '/')
		len--;
	up->url = strdup(text);
	up->base_path = strndup(base, len);
	return up->url && up->base_path ? 0 : fail_nomem(p, node);
}

static bool cidr_host_bits_clear(const struct rules_cidr *c)
{
	int bytes = c->family == AF_INET ? 4 : 16;

	for (int i = 0; i < bytes; i++) {
		int keep = c->prefix_len - i * 8;
		uint8_t mask = keep >= 8   ? 0xff
			       : keep <= 0 ? 0
					   : (uint8_t)(0xff << (8 - keep));

		if (c->addr[i] & ~mask)
			return false;
	}
	return true;
}

static int elem_cidr(struct parser *p, yaml_node_t *node, void *elem)
{
	struct rules_cidr *c = elem;
	char addr[64], *slash;
	int max, prefix;

	if (!is_string(node) || strlen(scalar(node)) >= sizeof(c->text))
		return fail(p, node,
			    "expected an address block like 203.0.113.0/24 "
			    "or 2001:db8::/32");
	strcpy(c->text, scalar(node));
	strcpy(addr, c->text);
	slash = strchr(addr, '/');
	if (slash)
		*slash = '\0';
	c->family = strchr(addr, ':') ? AF_INET6 : AF_INET;
	max = c->family == AF_INET ? 32 : 128;
	if (inet_pton(c->family, addr, c->addr) != 1)
		return fail(p, node,
			    "bad CIDR '%s': expected an address block like "
			    "203.0.113.0/24 or 2001:db8::/32",
			    c->text);
	prefix = max;
	if (slash) {
		char *end;

		prefix = (int)strtol(slash + 1, &end, 10);
		if (!isdigit((unsigned char)slash[1]) || *end || prefix > max)
			return fail(p, node,
				    "bad prefix length in '%s': expected 0-%d",
				    c->text, max);
	}
	c->prefix_len = (uint8_t)prefix;
	if (!cidr_host_bits_clear(c))
		return fail(p, node,
			    "bad CIDR '%s': address bits set beyond the /%d "
			    "prefix",
			    c->text, prefix);
	return 0;
}

static const struct list_kind list_strings = {"strings", sizeof(char *),
					      elem_string};
static const struct list_kind list_ifaces = {"interface names", sizeof(char *),
					     elem_iface};
static const struct list_kind list_dirs = {"directory paths", sizeof(char *),
					   elem_dir};
static const struct list_kind list_hooks = {"hook names (module.function)",
					    sizeof(char *), elem_hook};
static const struct list_kind list_hosts = {"host names", sizeof(char *),
					    elem_host};
static const struct list_kind list_addrs = {
    "host:port strings", sizeof(struct rules_addr), elem_addr};
static const struct list_kind list_upstreams = {
    "upstream URLs", sizeof(struct rules_upstream), elem_upstream};
static const struct list_kind list_cidrs = {
    "address blocks (CIDR)", sizeof(struct rules_cidr), elem_cidr};

/* ---- config: any mapping, kept as JSON text -------------------------- */

#define CONFIG_JSON_MAX (1024 * 1024)

struct buf {
	char *s;
	size_t len, cap;
	bool nomem;
};

static void buf_add(struct buf *b, const char *s, size_t n)
{
	if (b->nomem)
		return;
	if (b->len + n + 1 > b->cap) {
		size_t cap = (b->len + n + 1) * 2;
		char *s2 = realloc(b->s, cap);

		if (!s2) {
			b->nomem = true;
			return;
		}
		b->s = s2;
		b->cap = cap;
	}
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

static void buf_str(struct buf *b, const char *s)
{
	buf_add(b, s, strlen(s));
}

static void json_string(struct buf *b, const char *s)
{
	char esc[8];

	buf_str(b, "\"");
	for (; *s; s++) {
		if (*s == '"' || *s == '\\') {
			esc[0] = '\\';
			esc[1] = *s;
			buf_add(b, esc, 2);
		} else if ((unsigned char)*s < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x",
				 (unsigned char)*s);
			buf_str(b, esc);
		} else {
			buf_add(b, s, 1);
		}
	}
	buf_str(b, "\"");
}

/* The JSON number grammar: -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)? */
static bool is_json_number(const char *s)
{
	if (*s == '-')
		s++;
	if (*s == '0')
		s++;
	else if (isdigit((unsigned char)*s))
		s += strspn(s, "0123456789");
	else
		return false;
	if (*s == '.') {
		if (!isdigit((unsigned char)s[1]))
			return false;
		s += 1 + strspn(s + 1, "0123456789");
	}
	if (*s == 'e' || *s == 'E') {
		s++;
		if (*s == '+' || *s == '-')
			s++;
		if (!isdigit((unsigned char)*s))
			return false;
		s += strspn(s, "0123456789");
	}
	return *s == '\0';
}

static int json_node(struct parser *p, yaml_node_t *node, struct buf *b,
		     int depth);

static int json_mapping(struct parser *p, yaml_node_t *node, struct buf *b,
			int depth)
{
	yaml_node_pair_t *pair;
	int err;

	buf_str(b, "{");
	for (pair = node->data.mapping.pairs.start;
	     pair < node->data.mapping.pairs.top; pair++) {
		yaml_node_t *k = node_get(p, pair->key);

		if (k->type != YAML_SCALAR_NODE)
			return fail(p, k, "config: keys must be strings");
		err = check_duplicate(p, node, pair);
		if (err)
			return err;
		if (pair != node->data.mapping.pairs.start)
			buf_str(b, ",");
		json_string(b, scalar(k));
		buf_str(b, ":");
		err = json_node(p, node_get(p, pair->value), b, depth + 1);
		if (err)
			return err;
	}
	buf_str(b, "}");
	return 0;
}

static int json_node(struct parser *p, yaml_node_t *node, struct buf *b,
		     int depth)
{
	yaml_node_item_t *item;
	int err;

	/* Aliases make both of these cheap to write: a node that contains
	 * itself, and a few lines that expand to gigabytes. */
	if (depth > 32)
		return fail(p, node, "config: nested too deeply");
	if (b->len > CONFIG_JSON_MAX)
		return -E2BIG;
	switch (node->type) {
	case YAML_MAPPING_NODE:
		return json_mapping(p, node, b, depth);
	case YAML_SEQUENCE_NODE:
		buf_str(b, "[");
		for (item = node->data.sequence.items.start;
		     item < node->data.sequence.items.top; item++) {
			if (item != node->data.sequence.items.start)
				buf_str(b, ",");
			err = json_node(p, node_get(p, *item), b, depth + 1);
			if (err)
				return err;
		}
		buf_str(b, "]");
		return 0;
	default:
		if (is_null(node))
			buf_str(b, "null");
		else if (is_plain(node) &&
			 (strcmp(scalar(node), "true") == 0 ||
			  strcmp(scalar(node), "false") == 0 ||
			  is_json_number(scalar(node))))
			buf_str(b, scalar(node));
		else
			json_string(b, scalar(node));
		return 0;
	}
}

static int key_config(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	char **dst = (char **)((char *)base + k->offset);
	struct buf b = {0};
	int err;

	if (is_null(node))
		return 0;
	if (node->type != YAML_MAPPING_NODE)
		return fail(p, node, "%s: expected a mapping", k->name);
	err = json_mapping(p, node, &b, 0);
	if (err == -E2BIG)
		err = fail(p, node, "config: larger than %d KiB as JSON",
			   CONFIG_JSON_MAX / 1024);
	if (!err && b.nomem)
		err = fail_nomem(p, node);
	if (err) {
		free(b.s);
		return err;
	}
	free(*dst);
	*dst = b.s;
	return 0;
}

/* ---- Tyk plugin bundles ---------------------------------------------- */

/* One entry of a custom_middleware list: {"name": "Fn", ...}. */
struct manifest_hook {
	char *name;
	char *path;
	bool require_session;
	bool raw_body_only;
};

static const struct key manifest_hook_keys[] = {
    KEY("name", key_string, offsetof(struct manifest_hook, name)),
    KEY("path", key_string, offsetof(struct manifest_hook, path)),
    KEY("require_session", key_bool,
	offsetof(struct manifest_hook, require_session)),
    KEY("raw_body_only", key_bool,
	offsetof(struct manifest_hook, raw_body_only)),
    KEY_END,
};

static int elem_manifest_hook(struct parser *p, yaml_node_t *node, void *elem)
{
	struct manifest_hook hook = {0};
	int err;

	if (node->type != YAML_MAPPING_NODE)
		return fail(p, node, "expected {\"name\": \"function\"}");
	err = parse_mapping(p, node, manifest_hook_keys, "a middleware entry",
			    &hook, NULL);
	if (!err && !hook.name)
		err = fail(p, node, "middleware entry without a \"name\"");
	if (!err && !is_ident(hook.name, strlen(hook.name)))
		err = fail(p, node,
			   "bad hook name '%s': expected a Python function "
			   "name",
			   hook.name);
	free(hook.path);
	if (err) {
		free(hook.name);
		return err;
	}
	*(char **)elem = hook.name;
	return 0;
}

static const struct list_kind list_manifest_hooks = {
    "{\"name\": ...} entries", sizeof(char *), elem_manifest_hook};

static int key_manifest_auth(struct parser *p, const struct key *k,
			     yaml_node_t *node, void *base)
{
	char **dst = (char **)((char *)base + k->offset);

	if (is_null(node))
		return 0;
	free(*dst);
	*dst = NULL;
	return elem_manifest_hook(p, node, dst);
}

static int key_driver(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	(void)k;
	(void)base;
	if (!is_string(node) || strcmp(scalar(node), "python") != 0)
		return fail(p, node,
			    "driver '%s' is not supported: sluice runs "
			    "Python bundles only",
			    node->type == YAML_SCALAR_NODE ? scalar(node) : "");
	return 0;
}

/* Keys Tyk writes that mean nothing here. */
static int key_ignore(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	(void)p;
	(void)k;
	(void)node;
	(void)base;
	return 0;
}

/* file_list: the .py files become module names; other files ride along. */
static int key_file_list(struct parser *p, const struct key *k,
			 yaml_node_t *node, void *base)
{
	struct rules_hooks *mods =
	    (struct rules_hooks *)((char *)base + k->offset);
	size_t n = 0;
	int err;

	err = parse_list(p, node, &list_strings, (void **)&mods->names,
			 &mods->count);
	if (err)
		return err;
	for (size_t i = 0; i < mods->count; i++) {
		char *name = mods->names[i];
		size_t len = strlen(name);

		if (len < 4 || strcmp(name + len - 3, ".py") != 0) {
			free(name);
			continue;
		}
		name[len - 3] = '\0';
		for (char *c = name; *c; c++)
			if (*c == '/')
				*c = '.';
		mods->names[n++] = name;
	}
	mods->count = n;
	return 0;
}

#define MW(field) offsetof(struct rules_middleware, field)
#define MW_LIST(n, field)                                                      \
	KEY_LIST(n, MW(field.names), MW(field.count), &list_manifest_hooks)

static const struct key manifest_mw_keys[] = {
    MW_LIST("pre", pre),
    MW_LIST("post", post),
    MW_LIST("post_key_auth", post_key_auth),
    MW_LIST("response", response),
    KEY("auth_check", key_manifest_auth, MW(auth_check)),
    KEY("driver", key_driver, 0),
    KEY("id_extractor", key_ignore, 0),
    KEY_END,
};

static const struct map_kind manifest_mw_map = {"custom_middleware",
						manifest_mw_keys};

static const struct key manifest_keys[] = {
    KEY("file_list", key_file_list, MW(bundle_modules)),
    KEY_EXTRA("custom_middleware", key_map, 0, &manifest_mw_map),
    KEY("checksum", key_ignore, 0),
    KEY("signature", key_ignore, 0),
    KEY_END,
};

static int read_all(const char *path, char **out)
{
	FILE *f = fopen(path, "r");
	struct buf b = {0};
	char chunk[4096];
	size_t n;
	int err = 0;

	if (!f)
		return -errno;
	while ((n = fread(chunk, 1, sizeof(chunk), f)) > 0)
		buf_add(&b, chunk, n);
	if (ferror(f))
		err = -EIO;
	else if (b.nomem)
		err = -ENOMEM;
	fclose(f);
	if (!err && !b.s)
		b.s = strdup("");
	if (err || !b.s) {
		free(b.s);
		return err ? err : -ENOMEM;
	}
	*out = b.s;
	return 0;
}

__attribute__((format(printf, 3, 4))) static int
fail_at(struct parser *p, yaml_mark_t mark, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	fail_mark(p, p->file, mark, fmt, ap);
	va_end(ap);
	return -EINVAL;
}

/* libyaml's own words: "did not find expected key while parsing a block
 * mapping". Reader errors (bad UTF-8) carry no problem mark. */
static int fail_syntax(struct parser *p, yaml_parser_t *yp)
{
	const char *problem = yp->problem ? yp->problem : "cannot parse";

	if (yp->error == YAML_READER_ERROR)
		return fail_at(p, yp->mark, "%s", problem);
	if (yp->context)
		return fail_at(p, yp->problem_mark, "%s %s", problem,
			       yp->context);
	return fail_at(p, yp->problem_mark, "%s", problem);
}

/* Parse TEXT into DOC; on a syntax error, a message at its place. */
static int load_document(struct parser *p, yaml_parser_t *yp,
			 yaml_document_t *doc)
{
	if (!yaml_parser_load(yp, doc))
		return fail_syntax(p, yp);
	if (!yaml_document_get_root_node(doc)) {
		yaml_document_delete(doc);
		snprintf(p->err, p->err_len, "%s:1:1: the file is empty",
			 p->file);
		return -EINVAL;
	}
	return 0;
}

static int bundle_parse(struct parser *bp, yaml_node_t *root,
			struct rules_middleware *mw)
{
	bp->root = root;
	return parse_mapping(bp, root, manifest_keys, "manifest.json", mw,
			     NULL);
}

/* Read BUNDLE_DIR/manifest.json (JSON is YAML to libyaml) and fill MW's hook
 * lists from it. Errors inside the manifest point into the manifest. */
static int bundle_load(struct parser *p, yaml_node_t *at,
		       struct rules_middleware *mw)
{
	struct parser bp = *p;
	yaml_parser_t yp;
	yaml_document_t doc;
	char *path, *text = NULL;
	int err;

	if (asprintf(&path, "%s/manifest.json", mw->bundle_dir) < 0)
		return fail_nomem(p, at);
	err = read_all(path, &text);
	if (err) {
		fail(p, at, "bundle: cannot open %s: %s", path, strerror(-err));
		goto free_path;
	}
	/* JSON allows tabs where YAML does not; outside strings they are
	 * only spacing, and inside strings JSON forbids them raw. */
	for (char *c = text; *c; c++)
		if (*c == '\t')
			*c = ' ';

	bp.file = path;
	bp.dir = mw->bundle_dir;
	bp.doc = &doc;
	yaml_parser_initialize(&yp);
	yaml_parser_set_input_string(&yp, (unsigned char *)text, strlen(text));
	err = load_document(&bp, &yp, &doc);
	if (!err) {
		err = bundle_parse(&bp, yaml_document_get_root_node(&doc), mw);
		yaml_document_delete(&doc);
	}
	yaml_parser_delete(&yp);
	free(text);
free_path:
	free(path);
	return err;
}

/* ---- middleware ------------------------------------------------------ */

static int key_auth_check(struct parser *p, const struct key *k,
			  yaml_node_t *node, void *base)
{
	char **dst = (char **)((char *)base + k->offset);

	if (!is_string(node))
		return fail(p, node,
			    "%s: expected a hook name (module.function)",
			    k->name);
	free(*dst);
	*dst = NULL;
	return elem_hook(p, node, dst);
}

static int key_bundle(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	char **dst = (char **)((char *)base + k->offset);
	size_t len;

	if (!is_string(node))
		return fail(p, node, "%s: expected a directory path", k->name);
	free(*dst);
	*dst = path_from(p->dir, scalar(node));
	if (!*dst)
		return fail_nomem(p, node);
	len = strlen(*dst);
	while (len > 1 && (*dst)[len - 1] == '/')
		(*dst)[--len] = '\0';
	p->bundle_node = node;
	return 0;
}

#define HOOK_LIST(n, field)                                                    \
	KEY_LIST(n, MW(field.names), MW(field.count), &list_hooks)

/* The five hook keys come first: HOOK_KEYS masks them in `seen`. */
static const struct key middleware_keys[] = {
    HOOK_LIST("pre", pre),
    KEY("auth_check", key_auth_check, MW(auth_check)),
    HOOK_LIST("post_key_auth", post_key_auth),
    HOOK_LIST("post", post),
    HOOK_LIST("response", response),
    KEY_RANGE("timeout_ms", key_int, MW(timeout_ms), 1, INT_MAX),
    KEY_ENUM("on_error", MW(on_error), "reject", "continue"),
    KEY_RANGE("max_inflight", key_int, MW(max_inflight), 1, 65536),
    KEY_RANGE("queue", key_int, MW(queue), 0, 1000000),
    KEY_RANGE("queue_timeout_ms", key_int, MW(queue_timeout_ms), 1, INT_MAX),
    KEY("config", key_config, MW(config_json)),
    KEY("bundle", key_bundle, MW(bundle_dir)),
    KEY_END,
};
#define HOOK_KEYS 0x1fULL

static int key_middleware(struct parser *p, const struct key *k,
			  yaml_node_t *node, void *base)
{
	struct rules_api *api = base;
	struct rules_middleware *mw;
	uint64_t seen;
	int err;

	(void)k;
	mw = calloc(1, sizeof(*mw));
	if (!mw)
		return fail_nomem(p, node);
	api->middleware = mw;
	mw->on_error = RULES_ON_ERROR_REJECT;
	mw->max_inflight = 8;
	mw->queue = 256;
	mw->queue_timeout_ms = 2000;
	p->bundle_node = NULL;

	err = parse_mapping(p, node, middleware_keys, "middleware", mw, &seen);
	if (err)
		return err;
	if (!mw->config_json) {
		mw->config_json = strdup("{}");
		if (!mw->config_json)
			return fail_nomem(p, node);
	}
	if (!mw->bundle_dir)
		return 0;
	if (seen & HOOK_KEYS)
		return fail(p, p->bundle_node,
			    "bundle: the hooks come from the bundle's "
			    "manifest.json; list no pre, auth_check, "
			    "post_key_auth, post or response beside it");
	return bundle_load(p, p->bundle_node, mw);
}

/* ---- APIs ------------------------------------------------------------ */

static int key_api_name(struct parser *p, const struct key *k,
			yaml_node_t *node, void *base)
{
	struct rules_api *api = base;
	const char *name;

	(void)k;
	if (node->type != YAML_SCALAR_NODE || is_null(node))
		return fail(p, node, "name: expected a string");
	name = scalar(node);
	if (strlen(name) >= RULES_NAME_MAX)
		return fail(p, node,
			    "API name '%.20s...' is too long (at most %d "
			    "characters)",
			    name, RULES_NAME_MAX - 1);
	if (!name[0] ||
	    strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789_-") !=
		strlen(name))
		return fail(p, node,
			    "bad API name '%s': use only a-z, 0-9, '_' and '-'",
			    name);
	strcpy(api->name, name);
	return 0;
}

static int key_listen_path(struct parser *p, const struct key *k,
			   yaml_node_t *node, void *base)
{
	if (is_string(node) &&
	    (scalar(node)[0] != '/' || strpbrk(scalar(node), "?# \t")))
		return fail(p, node,
			    "bad listen_path '%s': it must start with '/' and "
			    "hold no query, fragment or space",
			    scalar(node));
	return key_string(p, k, node, base);
}

static int key_upstream(struct parser *p, const struct key *k,
			yaml_node_t *node, void *base)
{
	struct rules_api *api = base;

	if (api->upstreams)
		return fail(p, node, "use upstream or upstreams, not both");
	if (k->extra) {
		if (is_null(node) || (node->type == YAML_SEQUENCE_NODE &&
				      node->data.sequence.items.top ==
					  node->data.sequence.items.start))
			return fail(p, node, "upstreams: the list is empty");
		return key_list(p, k, node, base);
	}
	api->upstreams = calloc(1, sizeof(*api->upstreams));
	if (!api->upstreams)
		return fail_nomem(p, node);
	api->upstream_count = 1;
	return elem_upstream(p, node, api->upstreams);
}

#define API(field) offsetof(struct rules_api, field)

static const struct key api_keys[] = {
    KEY("name", key_api_name, 0),
    KEY("listen_path", key_listen_path, API(listen_path)),
    KEY_LIST("hosts", API(hosts), API(host_count), &list_hosts),
    KEY("strip_listen_path", key_bool, API(strip_listen_path)),
    KEY("upstream", key_upstream, 0),
    {.name = "upstreams",
     .parse = key_upstream,
     .offset = API(upstreams),
     .count = API(upstream_count),
     .extra = &list_upstreams},
    KEY_LIST("listen", API(listen), API(listen_count), &list_addrs),
    KEY("middleware", key_middleware, 0),
    KEY("splice", key_bool, API(splice)),
    KEY_END,
};
/* Bits of `seen` for the entries above: name (0), upstream(s) (4, 5),
 * splice (8). */
#define API_NAME      (1ULL << 0)
#define API_UPSTREAMS (3ULL << 4)
#define API_SPLICE    (1ULL << 8)

static int parse_api(struct parser *p, yaml_node_t *node, struct rules_api *api)
{
	uint64_t seen;
	int err;

	if (node->type != YAML_MAPPING_NODE)
		return fail(p, node, "apis: each entry must be a mapping");
	api->line = (int)node->start_mark.line + 1;
	api->col = (int)node->start_mark.column + 1;
	err = parse_mapping(p, node, api_keys, "an apis entry", api, &seen);
	if (err)
		return err;

	if (!(seen & API_NAME))
		return fail(p, node, "missing key 'name' in this apis entry");
	if (!(seen & API_UPSTREAMS))
		return fail(p, node,
			    "API '%s': missing key 'upstream' (or "
			    "'upstreams')",
			    api->name);
	if (!api->listen_path && !api->listen_count)
		return fail(p, node,
			    "API '%s': missing key 'listen_path' (or its own "
			    "'listen')",
			    api->name);
	if (!api->listen_path) {
		api->listen_path = strdup("/");
		if (!api->listen_path)
			return fail_nomem(p, node);
	}
	/* An API put on its own listener is an L4 pass-through unless it
	 * says otherwise; any other route stays in the front (and keeps
	 * adding X-Forwarded-*) unless it asks to be spliced. */
	if (!(seen & API_SPLICE))
		api->splice = api->listen_count > 0;
	return 0;
}

static int key_apis(struct parser *p, const struct key *k, yaml_node_t *node,
		    void *base)
{
	struct rules *r = base;
	yaml_node_item_t *item;
	int err;

	(void)k;
	if (node->type != YAML_SEQUENCE_NODE)
		return fail(p, node, "apis: expected a list of APIs");
	p->apis_node = node;
	r->api_count =
	    node->data.sequence.items.top - node->data.sequence.items.start;
	r->apis = calloc(r->api_count ? r->api_count : 1, sizeof(*r->apis));
	if (!r->apis) {
		r->api_count = 0;
		return fail_nomem(p, node);
	}
	for (item = node->data.sequence.items.start;
	     item < node->data.sequence.items.top; item++) {
		struct rules_api *api =
		    &r->apis[item - node->data.sequence.items.start];

		api->index = (int)(api - r->apis);
		err = parse_api(p, node_get(p, *item), api);
		if (err)
			return err;
	}
	return 0;
}

/* ---- top level ------------------------------------------------------- */

static int key_threads(struct parser *p, const struct key *k, yaml_node_t *node,
		       void *base)
{
	if (is_string(node) && strcmp(scalar(node), "auto") == 0) {
		*(int *)((char *)base + k->offset) = 0;
		return 0;
	}
	if (!is_plain(node) || !isdigit((unsigned char)scalar(node)[0]))
		return fail(p, node,
			    "threads: expected an integer or \"auto\"");
	return key_int(p, k, node, base);
}

#define LIM(field) offsetof(struct rules_limits, field)
static const struct key limits_keys[] = {
    KEY_RANGE("header_bytes", key_size, LIM(header_bytes), 1024, 1048576),
    KEY_RANGE("body_bytes", key_size, LIM(body_bytes), 0, LLONG_MAX),
    KEY_RANGE("header_timeout_ms", key_int, LIM(header_timeout_ms), 1, INT_MAX),
    KEY_RANGE("idle_timeout_ms", key_int, LIM(idle_timeout_ms), 1, INT_MAX),
    KEY_RANGE("upstream_connect_ms", key_int, LIM(upstream_connect_ms), 1,
	      INT_MAX),
    KEY_RANGE("upstream_timeout_ms", key_int, LIM(upstream_timeout_ms), 1,
	      INT_MAX),
    KEY_END,
};

#define BPF(field) offsetof(struct rules_bpf, field)
static const struct key xdp_keys[] = {
    KEY_LIST("interfaces", BPF(xdp_interfaces), BPF(xdp_interface_count),
	     &list_ifaces),
    KEY_ENUM("mode", BPF(xdp_mode), "native", "generic"),
    KEY_END,
};
static const struct map_kind xdp_map = {"bpf.xdp", xdp_keys};

static const struct key bpf_keys[] = {
    KEY("pin_dir", key_abs_path, BPF(pin_dir)),
    KEY_ENUM("splice", BPF(splice), "auto", "sockmap", "pipe", "copy"),
    KEY("required", key_bool, BPF(required)),
    KEY_EXTRA("xdp", key_map, 0, &xdp_map),
    KEY_LIST("deny", BPF(deny), BPF(deny_count), &list_cidrs),
    KEY_END,
};

#define PY(field) offsetof(struct rules_python, field)
static const struct key workers_keys[] = {
    KEY_RANGE("min", key_int, PY(workers_min), 0, 4096),
    KEY_RANGE("max", key_int, PY(workers_max), 1, 4096),
    KEY_RANGE("idle_s", key_int, PY(workers_idle_s), 1, INT_MAX),
    KEY_END,
};
static const struct map_kind workers_map = {"python.workers", workers_keys};

/* Any string, the empty one included. */
static int key_any_string(struct parser *p, const struct key *k,
			  yaml_node_t *node, void *base)
{
	if (node->type != YAML_SCALAR_NODE || is_null(node) ||
	    strlen(scalar(node)) != node->data.scalar.length)
		return fail(p, node, "%s: expected a string", k->name);
	return set_string(p, k, node, base);
}

static int key_store_redis(struct parser *p, const struct key *k,
			   yaml_node_t *node, void *base)
{
	struct rules_store *store = base;

	store->has_redis = true;
	return key_addr(p, k, node, base);
}

#define ST(field) offsetof(struct rules_store, field)
static const struct key store_keys[] = {
    KEY("redis", key_store_redis, ST(redis)),
    KEY_RANGE("db", key_int, ST(db), 0, 65535),
    KEY("password", key_string, ST(password)),
    KEY("prefix", key_any_string, ST(prefix)),
    KEY_RANGE("timeout_ms", key_int, ST(timeout_ms), 1, INT_MAX),
    KEY("shared_rates", key_bool, ST(shared_rates)),
    KEY_END,
};

/* The other keys mean nothing without a Redis to talk to. */
static int key_store(struct parser *p, const struct key *k, yaml_node_t *node,
		     void *base)
{
	struct rules_store *store =
	    (struct rules_store *)((char *)base + k->offset);
	int err =
	    parse_mapping(p, node, store_keys, "python.store", store, NULL);

	if (!err && !is_null(node) && !store->has_redis)
		return fail(p, node,
			    "python.store: 'redis' is missing (host:port of "
			    "the Redis server); without it the store lives "
			    "in sluiced and has no settings");
	return err;
}

static const struct key python_keys[] = {
    KEY_LIST("path", PY(path), PY(path_count), &list_dirs),
    KEY_EXTRA("workers", key_map, 0, &workers_map),
    KEY_RANGE("concurrency", key_int, PY(concurrency), 1, 100000),
    KEY_RANGE("max_requests", key_int, PY(max_requests), 0, INT_MAX),
    KEY_RANGE("max_rss_mb", key_int, PY(max_rss_mb), 0, INT_MAX),
    KEY_RANGE("timeout_ms", key_int, PY(timeout_ms), 1, INT_MAX),
    KEY("store", key_store, PY(store)),
    KEY_END,
};

static int key_python(struct parser *p, const struct key *k, yaml_node_t *node,
		      void *base)
{
	struct rules_python *py =
	    (struct rules_python *)((char *)base + k->offset);
	int err;

	err = parse_mapping(p, node, python_keys, "python", py, NULL);
	if (err)
		return err;
	if (py->workers_min > py->workers_max)
		return fail(p, map_get(p, node, "workers"),
			    "python.workers: min (%d) is larger than max (%d)",
			    py->workers_min, py->workers_max);
	return 0;
}

#define LOG(field) offsetof(struct rules_access_log, field)
static const struct key access_log_keys[] = {
    KEY("path", key_log_path, LOG(path)),
    KEY_ENUM("format", LOG(format), "json", "combined"),
    KEY_END,
};

static const struct map_kind limits_map = {"limits", limits_keys};
static const struct map_kind bpf_map = {"bpf", bpf_keys};
static const struct map_kind access_log_map = {"access_log", access_log_keys};

static int key_admin(struct parser *p, const struct key *k, yaml_node_t *node,
		     void *base)
{
	struct rules *r = base;

	r->has_admin = true;
	return key_addr(p, k, node, base);
}

#define R(field) offsetof(struct rules, field)
static const struct key top_keys[] = {
    KEY_LIST("listen", R(listen), R(listen_count), &list_addrs),
    KEY("admin", key_admin, R(admin)),
    KEY_RANGE("threads", key_threads, R(threads), 1, 256),
    KEY("user", key_string, R(user)),
    KEY_EXTRA("limits", key_map, R(limits), &limits_map),
    KEY_EXTRA("bpf", key_map, R(bpf), &bpf_map),
    KEY("python", key_python, R(python)),
    KEY_EXTRA("access_log", key_map, R(access_log), &access_log_map),
    KEY("apis", key_apis, 0),
    KEY_END,
};

/* ---- whole-file checks ----------------------------------------------- */

static bool addr_equal(const struct rules_addr *a, const struct rules_addr *b)
{
	const struct sockaddr_in *a4 = (const void *)&a->sa;
	const struct sockaddr_in *b4 = (const void *)&b->sa;
	const struct sockaddr_in6 *a6 = (const void *)&a->sa;
	const struct sockaddr_in6 *b6 = (const void *)&b->sa;

	if (a->sa.ss_family != b->sa.ss_family)
		return false;
	if (a->sa.ss_family == AF_INET)
		return a4->sin_port == b4->sin_port &&
		       a4->sin_addr.s_addr == b4->sin_addr.s_addr;
	return a6->sin6_port == b6->sin6_port &&
	       memcmp(&a6->sin6_addr, &b6->sin6_addr, 16) == 0;
}

static yaml_node_t *api_node(struct parser *p, const struct rules_api *api)
{
	return node_get(p, p->apis_node->data.sequence.items.start[api->index]);
}

/* The node of item I of list KEY in MAP, for messages. */
static yaml_node_t *list_item(struct parser *p, yaml_node_t *map,
			      const char *key, size_t i)
{
	yaml_node_t *list = map_get(p, map, key);

	return node_get(p, list->data.sequence.items.start[i]);
}

static int check_listeners(struct parser *p, struct rules *r)
{
	for (size_t i = 0; i < r->listen_count; i++)
		for (size_t j = 0; j < i; j++)
			if (addr_equal(&r->listen[i], &r->listen[j]))
				return fail(p,
					    list_item(p, p->root, "listen", i),
					    "listen: '%s' is listed twice",
					    r->listen[i].text);
	for (size_t a = 0; a < r->api_count; a++) {
		const struct rules_api *api = &r->apis[a];

		for (size_t i = 0; i < api->listen_count; i++)
			for (size_t j = 0; j < r->listen_count; j++)
				if (addr_equal(&api->listen[i], &r->listen[j]))
					return fail(
					    p,
					    list_item(p, api_node(p, api),
						      "listen", i),
					    "API '%s': '%s' is a shared "
					    "listener (top-level listen); an "
					    "API's own listen must differ",
					    api->name, api->listen[i].text);
		if (!api->listen_count && !r->listen_count)
			return fail(p, api_node(p, api),
				    "API '%s' cannot be reached: it has no "
				    "listen of its own and there is no "
				    "top-level listen",
				    api->name);
	}
	return 0;
}

static int check_admin(struct parser *p, struct rules *r)
{
	yaml_node_t *node = map_get(p, p->root, "admin");

	if (!r->has_admin)
		return 0;
	for (size_t i = 0; i < r->listen_count; i++)
		if (addr_equal(&r->admin, &r->listen[i]))
			return fail(p, node, "admin: '%s' is also a listener",
				    r->admin.text);
	for (size_t a = 0; a < r->api_count; a++)
		for (size_t i = 0; i < r->apis[a].listen_count; i++)
			if (addr_equal(&r->admin, &r->apis[a].listen[i]))
				return fail(p, node,
					    "admin: '%s' is also the listener "
					    "of API '%s'",
					    r->admin.text, r->apis[a].name);
	return 0;
}

/* Whether two APIs are served on the same listeners: both on the shared
 * ones, or naming one address in common. */
static bool same_scope(const struct rules_api *a, const struct rules_api *b)
{
	if (!a->listen_count || !b->listen_count)
		return !a->listen_count && !b->listen_count;
	for (size_t i = 0; i < a->listen_count; i++)
		for (size_t j = 0; j < b->listen_count; j++)
			if (addr_equal(&a->listen[i], &b->listen[j]))
				return true;
	return false;
}

/* A host both APIs list (hosts are stored lower case), or NULL. */
static const char *common_host(const struct rules_api *a,
			       const struct rules_api *b)
{
	for (size_t i = 0; i < a->host_count; i++)
		for (size_t j = 0; j < b->host_count; j++)
			if (strcmp(a->hosts[i], b->hosts[j]) == 0)
				return a->hosts[i];
	return NULL;
}

static int check_names_and_routes(struct parser *p, struct rules *r)
{
	for (size_t j = 0; j < r->api_count; j++) {
		const struct rules_api *b = &r->apis[j];

		for (size_t i = 0; i < j; i++) {
			const struct rules_api *a = &r->apis[i];
			const char *host = common_host(a, b);
			yaml_node_t *at;

			if (strcmp(a->name, b->name) == 0)
				return fail(p,
					    map_get(p, api_node(p, b), "name"),
					    "duplicate API name '%s' (first at "
					    "line %d)",
					    b->name, a->line);
			if (!same_scope(a, b) ||
			    strcmp(a->listen_path, b->listen_path) != 0)
				continue;
			if (!host && (a->host_count || b->host_count))
				continue;
			at = map_get(p, api_node(p, b), "listen_path");
			return fail(p, at ? at : api_node(p, b),
				    "API '%s' has the same route as API '%s' "
				    "(line %d): listen_path '%s'%s%s%s on the "
				    "same listener",
				    b->name, a->name, a->line, b->listen_path,
				    host ? ", host '" : " and no hosts",
				    host ? host : "", host ? "'" : "");
		}
	}
	return 0;
}

/* Host-only routes: a Host picks this API and no path can pick another, so
 * a keep-alive connection may be spliced after its first response. */
static void mark_host_only(struct rules *r)
{
	for (size_t i = 0; i < r->api_count; i++) {
		struct rules_api *a = &r->apis[i];

		a->host_only = a->host_count && !a->middleware &&
			       strcmp(a->listen_path, "/") == 0;
		for (size_t j = 0; j < r->api_count && a->host_only; j++)
			if (j != i && same_scope(a, &r->apis[j]) &&
			    common_host(a, &r->apis[j]))
				a->host_only = false;
	}
}

static int rules_check(struct parser *p, struct rules *r)
{
	bool own_listener = false;
	int err;

	for (size_t i = 0; i < r->api_count; i++) {
		struct rules_middleware *mw = r->apis[i].middleware;

		own_listener |= r->apis[i].listen_count > 0;
		if (mw && !mw->timeout_ms)
			mw->timeout_ms = r->python.timeout_ms;
		r->has_middleware |= mw != NULL;
	}
	if (!r->listen_count && !own_listener)
		return fail(p, p->root,
			    "no listener: set the top-level 'listen' or give "
			    "an API its own 'listen'");
	err = check_listeners(p, r);
	if (!err)
		err = check_admin(p, r);
	if (!err)
		err = check_names_and_routes(p, r);
	if (!err)
		mark_host_only(r);
	return err;
}

/* ---- load, ref, free ------------------------------------------------- */

static void middleware_free(struct rules_middleware *mw)
{
	if (!mw)
		return;
	strv_free(mw->pre.names, mw->pre.count);
	free(mw->auth_check);
	strv_free(mw->post_key_auth.names, mw->post_key_auth.count);
	strv_free(mw->post.names, mw->post.count);
	strv_free(mw->response.names, mw->response.count);
	free(mw->config_json);
	free(mw->bundle_dir);
	strv_free(mw->bundle_modules.names, mw->bundle_modules.count);
	free(mw);
}

static void api_free(struct rules_api *api)
{
	free(api->listen_path);
	strv_free(api->hosts, api->host_count);
	for (size_t i = 0; api->upstreams && i < api->upstream_count; i++) {
		free(api->upstreams[i].url);
		free(api->upstreams[i].host_port);
		free(api->upstreams[i].base_path);
	}
	free(api->upstreams);
	free(api->listen);
	middleware_free(api->middleware);
}

static void rules_free(struct rules *r)
{
	for (size_t i = 0; r->apis && i < r->api_count; i++)
		api_free(&r->apis[i]);
	free(r->apis);
	free(r->file);
	free(r->listen);
	free(r->user);
	free(r->bpf.pin_dir);
	strv_free(r->bpf.xdp_interfaces, r->bpf.xdp_interface_count);
	free(r->bpf.deny);
	strv_free(r->python.path, r->python.path_count);
	free(r->python.store.prefix);
	free(r->python.store.password);
	free(r->access_log.path);
	free(r);
}

static struct rules *rules_new(const char *file)
{
	struct rules *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->refs = 1;
	r->file = strdup(file);
	r->bpf.pin_dir = strdup("/sys/fs/bpf/sluice");
	r->limits = (struct rules_limits){
	    .header_bytes = 32768,
	    .body_bytes = 10485760,
	    .header_timeout_ms = 10000,
	    .idle_timeout_ms = 60000,
	    .upstream_connect_ms = 3000,
	    .upstream_timeout_ms = 30000,
	};
	r->bpf.splice = RULES_SPLICE_AUTO;
	r->bpf.xdp_mode = RULES_XDP_NATIVE;
	r->python = (struct rules_python){
	    .workers_min = 2,
	    .workers_max = 16,
	    .workers_idle_s = 30,
	    .concurrency = 64,
	    .max_requests = 10000,
	    .max_rss_mb = 512,
	    .timeout_ms = 5000,
	    .store = {.prefix = strdup("coprocess-data:"), .timeout_ms = 1000},
	};
	r->access_log.format = RULES_LOG_JSON;
	if (!r->file || !r->bpf.pin_dir || !r->python.store.prefix) {
		rules_free(r);
		return NULL;
	}
	return r;
}

/* The directory holding FILE, absolute: relative paths in it start there. */
static char *rules_dir(const char *file)
{
	char *real = realpath(file, NULL), *slash;

	if (!real)
		return NULL;
	slash = strrchr(real, '/');
	if (slash == real)
		slash[1] = '\0';
	else
		*slash = '\0';
	return real;
}

/* A second document in the stream is a mistake, not something to ignore. */
static int check_single_document(struct parser *p, yaml_parser_t *yp)
{
	yaml_document_t extra;
	yaml_node_t *root;
	int err = 0;

	if (!yaml_parser_load(yp, &extra))
		return fail_syntax(p, yp);
	root = yaml_document_get_root_node(&extra);
	if (root)
		err = fail(p, root, "only one YAML document is allowed");
	yaml_document_delete(&extra);
	return err;
}

/* Parse F into p->rules, through the document p->doc points at. */
static int rules_parse(struct parser *p, FILE *f)
{
	yaml_parser_t yp;
	int err;

	yaml_parser_initialize(&yp);
	yaml_parser_set_input_file(&yp, f);
	err = load_document(p, &yp, p->doc);
	if (err)
		goto free_parser;

	p->root = yaml_document_get_root_node(p->doc);
	err = parse_mapping(p, p->root, top_keys, "the rules file", p->rules,
			    NULL);
	if (!err)
		err = rules_check(p, p->rules);
	if (!err)
		err = check_single_document(p, &yp);
	yaml_document_delete(p->doc);
free_parser:
	yaml_parser_delete(&yp);
	return err;
}

struct rules *rules_load(const char *file, char *err, size_t err_len)
{
	yaml_document_t doc;
	struct parser p = {
	    .file = file, .err = err, .err_len = err_len, .doc = &doc};
	char *dir = NULL;
	struct stat st;
	FILE *f;
	int rc = -ENOMEM;

	f = fopen(file, "r");
	if (f && fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
		fclose(f);
		f = NULL;
		errno = EISDIR;
	}
	if (!f) {
		snprintf(err, err_len, "%s: cannot open: %s", file,
			 strerror(errno));
		return NULL;
	}
	p.rules = rules_new(file);
	dir = rules_dir(file);
	if (p.rules && dir) {
		p.dir = dir;
		rc = rules_parse(&p, f);
	} else {
		snprintf(err, err_len, "%s: %s", file, strerror(errno));
	}
	fclose(f);
	free(dir);
	if (rc) {
		if (p.rules)
			rules_free(p.rules);
		return NULL;
	}
	return p.rules;
}

struct rules *rules_ref(struct rules *rules)
{
	__atomic_add_fetch(&rules->refs, 1, __ATOMIC_RELAXED);
	return rules;
}

void rules_unref(struct rules *rules)
{
	if (rules && __atomic_sub_fetch(&rules->refs, 1, __ATOMIC_ACQ_REL) == 0)
		rules_free(rules);
}

const struct rules_api *rules_find_api(const struct rules *rules,
				       const char *name)
{
	for (size_t i = 0; i < rules->api_count; i++)
		if (strcmp(rules->apis[i].name, name) == 0)
			return &rules->apis[i];
	return NULL;
}

const char *rules_splice_name(enum rules_splice mode)
{
	switch (mode) {
	case RULES_SPLICE_SOCKMAP:
		return "sockmap";
	case RULES_SPLICE_PIPE:
		return "pipe";
	case RULES_SPLICE_COPY:
		return "copy";
	default:
		return "auto";
	}
}
