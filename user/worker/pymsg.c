#include "worker/pymsg.h"

#include <string.h>

/* Messages are shallow (a call is four levels deep); the limit only stops a
 * broken peer or a self-referencing hook result from exhausting the stack. */
#define PYMSG_DEPTH_MAX 32

/* Short strings repeat from message to message: map keys, methods, header
 * names, common values. A direct-mapped cache of them saves an allocation
 * and a UTF-8 decode each, and hands dict lookups the same objects. */
#define PYMSG_CACHE_SLOTS 512
#define PYMSG_CACHE_LEN	  32

struct pymsg_cached {
	PyObject *str;
	uint32_t len;
	char bytes[PYMSG_CACHE_LEN];
};

static struct pymsg_cached pymsg_cache[PYMSG_CACHE_SLOTS];

static uint32_t pymsg_hash(const char *p, uint32_t len)
{
	uint32_t h = 2166136261u;

	for (uint32_t i = 0; i < len; i++)
		h = (h ^ (uint8_t)p[i]) * 16777619u;
	return h;
}

static PyObject *pymsg_str(const char *p, uint32_t len)
{
	struct pymsg_cached *c;
	PyObject *str;

	if (len > PYMSG_CACHE_LEN)
		return PyUnicode_DecodeUTF8(p, len, "surrogateescape");
	c = &pymsg_cache[pymsg_hash(p, len) & (PYMSG_CACHE_SLOTS - 1)];
	if (c->str && c->len == len && memcmp(c->bytes, p, len) == 0) {
		Py_INCREF(c->str);
		return c->str;
	}
	str = PyUnicode_DecodeUTF8(p, len, "surrogateescape");
	if (!str)
		return NULL;
	Py_XSETREF(c->str, Py_NewRef(str));
	c->len = len;
	memcpy(c->bytes, p, len);
	return str;
}

static PyObject *pymsg_from_object(const msgpack_object *o, int depth);

static PyObject *pymsg_from_array(const msgpack_object_array *a, int depth)
{
	PyObject *list = PyList_New(a->size);

	if (!list)
		return NULL;
	for (uint32_t i = 0; i < a->size; i++) {
		PyObject *item = pymsg_from_object(&a->ptr[i], depth + 1);

		if (!item) {
			Py_DECREF(list);
			return NULL;
		}
		PyList_SET_ITEM(list, i, item);
	}
	return list;
}

static PyObject *pymsg_from_map(const msgpack_object_map *m, int depth)
{
	PyObject *dict = PyDict_New();

	if (!dict)
		return NULL;
	for (uint32_t i = 0; i < m->size; i++) {
		PyObject *key = pymsg_from_object(&m->ptr[i].key, depth + 1);
		PyObject *val =
		    key ? pymsg_from_object(&m->ptr[i].val, depth + 1) : NULL;
		int err = val ? PyDict_SetItem(dict, key, val) : -1;

		Py_XDECREF(key);
		Py_XDECREF(val);
		if (err) {
			Py_DECREF(dict);
			return NULL;
		}
	}
	return dict;
}

static PyObject *pymsg_from_object(const msgpack_object *o, int depth)
{
	if (depth > PYMSG_DEPTH_MAX) {
		PyErr_SetString(PyExc_ValueError, "message nested too deeply");
		return NULL;
	}
	switch (o->type) {
	case MSGPACK_OBJECT_NIL:
		return Py_NewRef(Py_None);
	case MSGPACK_OBJECT_BOOLEAN:
		return PyBool_FromLong(o->via.boolean);
	case MSGPACK_OBJECT_POSITIVE_INTEGER:
		return PyLong_FromUnsignedLongLong(o->via.u64);
	case MSGPACK_OBJECT_NEGATIVE_INTEGER:
		return PyLong_FromLongLong(o->via.i64);
	case MSGPACK_OBJECT_FLOAT32:
	case MSGPACK_OBJECT_FLOAT64:
		return PyFloat_FromDouble(o->via.f64);
	case MSGPACK_OBJECT_STR:
		return pymsg_str(o->via.str.ptr, o->via.str.size);
	case MSGPACK_OBJECT_BIN:
		return PyBytes_FromStringAndSize(o->via.bin.ptr,
						 o->via.bin.size);
	case MSGPACK_OBJECT_EXT:
		return PyBytes_FromStringAndSize(o->via.ext.ptr,
						 o->via.ext.size);
	case MSGPACK_OBJECT_ARRAY:
		return pymsg_from_array(&o->via.array, depth);
	case MSGPACK_OBJECT_MAP:
		return pymsg_from_map(&o->via.map, depth);
	}
	PyErr_SetString(PyExc_ValueError, "unknown msgpack type");
	return NULL;
}

PyObject *pymsg_decode(msgpack_zone *zone, const char *data, size_t len)
{
	msgpack_object obj;
	size_t off = 0;
	PyObject *res = NULL;
	int ret;

	ret = msgpack_unpack(data, len, &off, zone, &obj);
	if (ret == MSGPACK_UNPACK_SUCCESS)
		res = pymsg_from_object(&obj, 0);
	else
		PyErr_Format(PyExc_ValueError,
			     "malformed message (msgpack error %d, %zu bytes)",
			     ret, len);
	msgpack_zone_clear(zone);
	return res;
}

static int pymsg_pack_str(msgpack_packer *pk, PyObject *obj)
{
	Py_ssize_t len;
	const char *s = PyUnicode_AsUTF8AndSize(obj, &len);
	PyObject *bytes;
	int err;

	if (s) {
		msgpack_pack_str(pk, len);
		return msgpack_pack_str_body(pk, s, len);
	}
	/* Lone surrogates: bytes that arrived as invalid UTF-8 go back as
	 * they came. */
	PyErr_Clear();
	bytes = PyUnicode_AsEncodedString(obj, "utf-8", "surrogateescape");
	if (!bytes)
		return -1;
	msgpack_pack_str(pk, PyBytes_GET_SIZE(bytes));
	err = msgpack_pack_str_body(pk, PyBytes_AS_STRING(bytes),
				    PyBytes_GET_SIZE(bytes));
	Py_DECREF(bytes);
	return err;
}

static int pymsg_pack_int(msgpack_packer *pk, PyObject *obj)
{
	int overflow;
	long long v = PyLong_AsLongLongAndOverflow(obj, &overflow);
	unsigned long long u;

	if (v == -1 && PyErr_Occurred())
		return -1;
	if (!overflow)
		return msgpack_pack_int64(pk, v);
	u = PyLong_AsUnsignedLongLong(obj);
	if (u == (unsigned long long)-1 && PyErr_Occurred())
		return -1;
	return msgpack_pack_uint64(pk, u);
}

static int pymsg_pack(msgpack_packer *pk, PyObject *obj, int depth);

static int pymsg_pack_seq(msgpack_packer *pk, PyObject *obj, int depth)
{
	Py_ssize_t n = PySequence_Fast_GET_SIZE(obj);
	PyObject **items = PySequence_Fast_ITEMS(obj);

	msgpack_pack_array(pk, n);
	for (Py_ssize_t i = 0; i < n; i++)
		if (pymsg_pack(pk, items[i], depth + 1))
			return -1;
	return 0;
}

static int pymsg_pack_dict(msgpack_packer *pk, PyObject *obj, int depth)
{
	Py_ssize_t pos = 0;
	PyObject *key, *val;

	msgpack_pack_map(pk, PyDict_GET_SIZE(obj));
	while (PyDict_Next(obj, &pos, &key, &val))
		if (pymsg_pack(pk, key, depth + 1) ||
		    pymsg_pack(pk, val, depth + 1))
			return -1;
	return 0;
}

static int pymsg_pack_buffer(msgpack_packer *pk, PyObject *obj)
{
	Py_buffer view;

	if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE))
		return -1;
	msgpack_pack_bin(pk, view.len);
	msgpack_pack_bin_body(pk, view.buf, view.len);
	PyBuffer_Release(&view);
	return 0;
}

static int pymsg_pack(msgpack_packer *pk, PyObject *obj, int depth)
{
	if (depth > PYMSG_DEPTH_MAX) {
		PyErr_SetString(PyExc_ValueError, "value nested too deeply");
		return -1;
	}
	if (obj == Py_None)
		return msgpack_pack_nil(pk);
	if (obj == Py_True)
		return msgpack_pack_true(pk);
	if (obj == Py_False)
		return msgpack_pack_false(pk);
	if (PyUnicode_Check(obj))
		return pymsg_pack_str(pk, obj);
	if (PyLong_Check(obj))
		return pymsg_pack_int(pk, obj);
	if (PyBytes_Check(obj)) {
		msgpack_pack_bin(pk, PyBytes_GET_SIZE(obj));
		return msgpack_pack_bin_body(pk, PyBytes_AS_STRING(obj),
					     PyBytes_GET_SIZE(obj));
	}
	if (PyDict_Check(obj))
		return pymsg_pack_dict(pk, obj, depth);
	if (PyList_Check(obj) || PyTuple_Check(obj))
		return pymsg_pack_seq(pk, obj, depth);
	if (PyFloat_Check(obj))
		return msgpack_pack_double(pk, PyFloat_AS_DOUBLE(obj));
	if (PyByteArray_Check(obj) || PyMemoryView_Check(obj))
		return pymsg_pack_buffer(pk, obj);
	PyErr_Format(PyExc_TypeError, "cannot send a %s to sluiced",
		     Py_TYPE(obj)->tp_name);
	return -1;
}

int pymsg_encode(msgpack_sbuffer *sbuf, PyObject *obj)
{
	msgpack_packer pk;

	msgpack_packer_init(&pk, sbuf, msgpack_sbuffer_write);
	if (pymsg_pack(&pk, obj, 0) == 0)
		return 0;
	/* msgpack-c reports a failed buffer allocation without a message. */
	if (!PyErr_Occurred())
		PyErr_NoMemory();
	return -1;
}
