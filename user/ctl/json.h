/* A small JSON reader for sluicectl: enough for the admin endpoint's /status
 * document (objects, arrays, strings, numbers, booleans, null).
 *
 * json_parse() builds a tree that the caller frees with json_free(). The
 * accessors accept NULL and nodes of the wrong type and then return the
 * default they were given, so a field the server does not send (a room that
 * has not landed, `pool: null`) reads as "absent" instead of crashing.
 */
#ifndef SLUICE_CTL_JSON_H
#define SLUICE_CTL_JSON_H

#include <stdbool.h>
#include <stddef.h>

enum json_type {
	JSON_NULL = 0,
	JSON_BOOL,
	JSON_NUMBER,
	JSON_STRING,
	JSON_ARRAY,
	JSON_OBJECT,
};

struct json {
	enum json_type type;
	bool boolean;
	double number;
	char *string;	     /* JSON_STRING: decoded UTF-8, NUL-terminated */
	char *key;	     /* member name when the parent is an object */
	struct json **items; /* array elements or object members, in order */
	size_t count;
};

/* Parse LEN bytes of TEXT. On failure returns NULL and writes
 * "offset N: message" into err. */
struct json *json_parse(const char *text, size_t len, char *err,
			size_t err_len);
void json_free(struct json *node);

/* The member KEY of an object; NULL when absent or not an object. */
const struct json *json_get(const struct json *obj, const char *key);

/* Element I of an array or member I of an object; NULL past the end. */
const struct json *json_at(const struct json *node, size_t i);
size_t json_count(const struct json *node);

double json_number(const struct json *node, double dflt);
const char *json_string(const struct json *node, const char *dflt);
bool json_bool(const struct json *node, bool dflt);
bool json_is_null(const struct json *node);

#endif
