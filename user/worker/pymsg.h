/* msgpack <-> Python objects, with msgpack-c.
 *
 * The mapping: nil/None, bool, int, float, str/str (UTF-8, invalid bytes
 * kept through surrogateescape so a header value survives a round trip),
 * bin/bytes, array/list (tuples encode as arrays too), map/dict. Anything
 * else raises TypeError on encode.
 */
#ifndef SLUICE_WORKER_PYMSG_H
#define SLUICE_WORKER_PYMSG_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include <msgpack.h>

/* Decode one msgpack value from DATA. New reference, or NULL with a Python
 * exception set. ZONE is scratch memory, cleared on return. */
PyObject *pymsg_decode(msgpack_zone *zone, const char *data, size_t len);

/* Append OBJ to SBUF as msgpack. 0, or -1 with a Python exception set. */
int pymsg_encode(msgpack_sbuffer *sbuf, PyObject *obj);

#endif
