#include "common/msg.h"

#include <string.h>

bool msg_is(const msgpack_object *o, const char *str)
{
	size_t len = strlen(str);

	return o && o->type == MSGPACK_OBJECT_STR && o->via.str.size == len &&
	       memcmp(o->via.str.ptr, str, len) == 0;
}

const msgpack_object *msg_get(const msgpack_object *map, const char *key)
{
	if (!map || map->type != MSGPACK_OBJECT_MAP)
		return NULL;
	for (uint32_t i = 0; i < map->via.map.size; i++) {
		const msgpack_object_kv *kv = &map->via.map.ptr[i];

		if (msg_is(&kv->key, key))
			return kv->val.type == MSGPACK_OBJECT_NIL ? NULL
								  : &kv->val;
	}
	return NULL;
}

bool msg_bytes(const msgpack_object *o, const char **ptr, size_t *len)
{
	if (o && o->type == MSGPACK_OBJECT_STR) {
		*ptr = o->via.str.ptr;
		*len = o->via.str.size;
		return true;
	}
	if (o && o->type == MSGPACK_OBJECT_BIN) {
		*ptr = o->via.bin.ptr;
		*len = o->via.bin.size;
		return true;
	}
	return false;
}

bool msg_number(const msgpack_object *o, double *out)
{
	if (!o)
		return false;
	switch (o->type) {
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		*out = (double)o->via.u64;
		return true;
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		*out = (double)o->via.i64;
		return true;
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		*out = o->via.f64;
		return true;
	default:
		return false;
	}
}
