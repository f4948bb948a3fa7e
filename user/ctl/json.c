#include "ctl/json.h"

#include <errno.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Deeper documents than this are refused: /status nests four levels, and a
 * bound keeps the recursion safe whatever answers on the admin port. */
#define JSON_DEPTH_MAX 64

struct json_parser {
	const char *start;
	const char *p;
	const char *end;
	int depth;
	char *err;
	size_t err_len;
};

static struct json *parse_value(struct json_parser *ps);

static void parse_fail(struct json_parser *ps, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

static void parse_fail(struct json_parser *ps, const char *fmt, ...)
{
	va_list ap;
	int n;

	/* Keep the first error: it is the one nearest the cause. */
	if (ps->err_len == 0 || ps->err[0])
		return;
	n = snprintf(ps->err, ps->err_len,
		     "offset %zu: ", (size_t)(ps->p - ps->start));
	if (n < 0 || (size_t)n >= ps->err_len)
		return;
	va_start(ap, fmt);
	vsnprintf(ps->err + n, ps->err_len - n, fmt, ap);
	va_end(ap);
}

static void skip_space(struct json_parser *ps)
{
	while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' ||
				   *ps->p == '\n' || *ps->p == '\r'))
		ps->p++;
}

static struct json *node_new(enum json_type type)
{
	struct json *node = calloc(1, sizeof(*node));

	if (node)
		node->type = type;
	return node;
}

static int node_append(struct json *parent, struct json *child)
{
	struct json **items;

	items = realloc(parent->items, (parent->count + 1) * sizeof(*items));
	if (!items)
		return -ENOMEM;
	parent->items = items;
	parent->items[parent->count++] = child;
	return 0;
}

void json_free(struct json *node)
{
	if (!node)
		return;
	for (size_t i = 0; i < node->count; i++)
		json_free(node->items[i]);
	free(node->items);
	free(node->string);
	free(node->key);
	free(node);
}

static int hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int read_hex4(struct json_parser *ps, uint32_t *out)
{
	uint32_t v = 0;

	if (ps->end - ps->p < 4)
		return -EINVAL;
	for (int i = 0; i < 4; i++) {
		int h = hex_value(ps->p[i]);

		if (h < 0)
			return -EINVAL;
		v = v << 4 | (uint32_t)h;
	}
	ps->p += 4;
	*out = v;
	return 0;
}

static size_t utf8_encode(uint32_t cp, char *out)
{
	if (cp < 0x80) {
		out[0] = (char)cp;
		return 1;
	}
	if (cp < 0x800) {
		out[0] = (char)(0xc0 | cp >> 6);
		out[1] = (char)(0x80 | (cp & 0x3f));
		return 2;
	}
	if (cp < 0x10000) {
		out[0] = (char)(0xe0 | cp >> 12);
		out[1] = (char)(0x80 | (cp >> 6 & 0x3f));
		out[2] = (char)(0x80 | (cp & 0x3f));
		return 3;
	}
	out[0] = (char)(0xf0 | cp >> 18);
	out[1] = (char)(0x80 | (cp >> 12 & 0x3f));
	out[2] = (char)(0x80 | (cp >> 6 & 0x3f));
	out[3] = (char)(0x80 | (cp & 0x3f));
	return 4;
}

/* \uXXXX, with a surrogate pair joined into one code point. */
static int read_unicode_escape(struct json_parser *ps, uint32_t *cp)
{
	uint32_t lo;

	if (read_hex4(ps, cp) < 0)
		return -EINVAL;
	if (*cp < 0xd800 || *cp > 0xdbff)
		return (*cp >= 0xdc00 && *cp <= 0xdfff) ? -EINVAL : 0;
	if (ps->end - ps->p < 2 || ps->p[0] != '\\' || ps->p[1] != 'u')
		return -EINVAL;
	ps->p += 2;
	if (read_hex4(ps, &lo) < 0 || lo < 0xdc00 || lo > 0xdfff)
		return -EINVAL;
	*cp = 0x10000 + ((*cp - 0xd800) << 10) + (lo - 0xdc00);
	return 0;
}

static int read_escape(struct json_parser *ps, char *out, size_t *n)
{
	static const char plain[] = "\"\\/bfnrt";
	static const char value[] = "\"\\/\b\f\n\r\t";
	const char *hit;
	uint32_t cp;

	if (ps->p >= ps->end)
		return -EINVAL;
	hit = strchr(plain, *ps->p);
	if (hit && *ps->p) {
		out[(*n)++] = value[hit - plain];
		ps->p++;
		return 0;
	}
	if (*ps->p != 'u')
		return -EINVAL;
	ps->p++;
	if (read_unicode_escape(ps, &cp) < 0)
		return -EINVAL;
	*n += utf8_encode(cp, out + *n);
	return 0;
}

/* A string starting at the opening quote. The decoded text is never longer
 * than the escaped one, so one buffer of the remaining length suffices. */
static char *parse_string_raw(struct json_parser *ps)
{
	char *out;
	size_t n = 0;

	ps->p++;
	out = malloc((size_t)(ps->end - ps->p) + 1);
	if (!out) {
		parse_fail(ps, "out of memory");
		return NULL;
	}
	while (ps->p < ps->end && *ps->p != '"') {
		unsigned char c = (unsigned char)*ps->p;

		if (c < 0x20) {
			parse_fail(ps, "control character in a string");
			goto fail;
		}
		if (c != '\\') {
			out[n++] = (char)c;
			ps->p++;
			continue;
		}
		ps->p++;
		if (read_escape(ps, out, &n) < 0) {
			parse_fail(ps, "bad escape in a string");
			goto fail;
		}
	}
	if (ps->p >= ps->end) {
		parse_fail(ps, "unterminated string");
		goto fail;
	}
	ps->p++;
	out[n] = '\0';
	return out;
fail:
	free(out);
	return NULL;
}

static struct json *parse_string(struct json_parser *ps)
{
	struct json *node;
	char *text = parse_string_raw(ps);

	if (!text)
		return NULL;
	node = node_new(JSON_STRING);
	if (!node) {
		free(text);
		parse_fail(ps, "out of memory");
		return NULL;
	}
	node->string = text;
	return node;
}

static struct json *parse_number(struct json_parser *ps)
{
	char buf[64];
	size_t len = 0;
	char *stop;
	struct json *node;

	while (ps->p + len < ps->end && len < sizeof(buf) - 1 &&
	       strchr("+-0123456789.eE", ps->p[len]) && ps->p[len])
		len++;
	memcpy(buf, ps->p, len);
	buf[len] = '\0';
	node = node_new(JSON_NUMBER);
	if (!node) {
		parse_fail(ps, "out of memory");
		return NULL;
	}
	node->number = strtod(buf, &stop);
	if (len == 0 || *stop) {
		parse_fail(ps, "bad number");
		free(node);
		return NULL;
	}
	ps->p += len;
	return node;
}

static struct json *parse_word(struct json_parser *ps)
{
	static const struct {
		const char *word;
		enum json_type type;
		bool value;
	} words[] = {
	    {"true", JSON_BOOL, true},
	    {"false", JSON_BOOL, false},
	    {"null", JSON_NULL, false},
	};

	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++) {
		size_t len = strlen(words[i].word);
		struct json *node;

		if ((size_t)(ps->end - ps->p) < len ||
		    memcmp(ps->p, words[i].word, len) != 0)
			continue;
		node = node_new(words[i].type);
		if (!node) {
			parse_fail(ps, "out of memory");
			return NULL;
		}
		node->boolean = words[i].value;
		ps->p += len;
		return node;
	}
	parse_fail(ps, "unexpected character '%c'", *ps->p);
	return NULL;
}

/* One member of an object: "key": value. */
static struct json *parse_member(struct json_parser *ps)
{
	struct json *value;
	char *key;

	skip_space(ps);
	if (ps->p >= ps->end || *ps->p != '"') {
		parse_fail(ps, "expected a member name");
		return NULL;
	}
	key = parse_string_raw(ps);
	if (!key)
		return NULL;
	skip_space(ps);
	if (ps->p >= ps->end || *ps->p != ':') {
		parse_fail(ps, "expected ':'");
		free(key);
		return NULL;
	}
	ps->p++;
	value = parse_value(ps);
	if (!value) {
		free(key);
		return NULL;
	}
	value->key = key;
	return value;
}

/* An array or an object: the same loop, with members instead of values. */
static struct json *parse_container(struct json_parser *ps, enum json_type t)
{
	char close = t == JSON_ARRAY ? ']' : '}';
	struct json *node = node_new(t);
	struct json *child;

	if (!node) {
		parse_fail(ps, "out of memory");
		return NULL;
	}
	ps->p++;
	skip_space(ps);
	if (ps->p < ps->end && *ps->p == close) {
		ps->p++;
		return node;
	}
	for (;;) {
		child = t == JSON_ARRAY ? parse_value(ps) : parse_member(ps);
		if (!child)
			goto fail;
		if (node_append(node, child) < 0) {
			json_free(child);
			parse_fail(ps, "out of memory");
			goto fail;
		}
		skip_space(ps);
		if (ps->p < ps->end && *ps->p == ',') {
			ps->p++;
			continue;
		}
		if (ps->p < ps->end && *ps->p == close) {
			ps->p++;
			return node;
		}
		parse_fail(ps, "expected ',' or '%c'", close);
		goto fail;
	}
fail:
	json_free(node);
	return NULL;
}

static struct json *parse_value(struct json_parser *ps)
{
	struct json *node;

	skip_space(ps);
	if (ps->p >= ps->end) {
		parse_fail(ps, "unexpected end of input");
		return NULL;
	}
	if (++ps->depth > JSON_DEPTH_MAX) {
		parse_fail(ps, "nested deeper than %d", JSON_DEPTH_MAX);
		return NULL;
	}
	switch (*ps->p) {
	case '{':
		node = parse_container(ps, JSON_OBJECT);
		break;
	case '[':
		node = parse_container(ps, JSON_ARRAY);
		break;
	case '"':
		node = parse_string(ps);
		break;
	case '-':
	case '0' ... '9':
		node = parse_number(ps);
		break;
	default:
		node = parse_word(ps);
		break;
	}
	ps->depth--;
	return node;
}

struct json *json_parse(const char *text, size_t len, char *err, size_t err_len)
{
	struct json_parser ps = {
	    .start = text,
	    .p = text,
	    .end = text + len,
	    .err = err,
	    .err_len = err_len,
	};
	struct json *root;

	if (err_len)
		err[0] = '\0';
	root = parse_value(&ps);
	if (!root)
		return NULL;
	skip_space(&ps);
	if (ps.p != ps.end) {
		parse_fail(&ps, "trailing characters after the document");
		json_free(root);
		return NULL;
	}
	return root;
}

const struct json *json_get(const struct json *obj, const char *key)
{
	if (!obj || obj->type != JSON_OBJECT)
		return NULL;
	for (size_t i = 0; i < obj->count; i++)
		if (strcmp(obj->items[i]->key, key) == 0)
			return obj->items[i];
	return NULL;
}

const struct json *json_at(const struct json *node, size_t i)
{
	if (!node || (node->type != JSON_ARRAY && node->type != JSON_OBJECT))
		return NULL;
	return i < node->count ? node->items[i] : NULL;
}

size_t json_count(const struct json *node)
{
	if (!node || (node->type != JSON_ARRAY && node->type != JSON_OBJECT))
		return 0;
	return node->count;
}

double json_number(const struct json *node, double dflt)
{
	return node && node->type == JSON_NUMBER ? node->number : dflt;
}

const char *json_string(const struct json *node, const char *dflt)
{
	return node && node->type == JSON_STRING ? node->string : dflt;
}

bool json_bool(const struct json *node, bool dflt)
{
	return node && node->type == JSON_BOOL ? node->boolean : dflt;
}

bool json_is_null(const struct json *node)
{
	return !node || node->type == JSON_NULL;
}
