#include "worker/pymodule.h"

#include "worker/channel.h"
#include "worker/pymsg.h"

#include <errno.h>

/* Buffers above this size are freed after use rather than kept: one large
 * body should not pin its size in every idle worker. */
#define PYMODULE_KEEP_MAX (1 << 20)

/* One socket per process and one interpreter: module state is static. */
static int chan_fd = -1;
static struct channel_buf chan_in;
static msgpack_zone chan_zone;
static msgpack_sbuffer chan_out;

static PyObject *pymodule_errno(int err)
{
	errno = -err;
	return PyErr_SetFromErrno(PyExc_OSError);
}

static PyObject *pymodule_recv_common(bool nowait)
{
	PyObject *msg;
	int ret;

	Py_BEGIN_ALLOW_THREADS;
	ret = channel_recv(chan_fd, &chan_in, nowait);
	Py_END_ALLOW_THREADS;

	if (ret == 0)
		return Py_NewRef(Py_None);
	if (ret == -EAGAIN && nowait)
		return Py_NewRef(Py_False);
	if (ret < 0)
		return pymodule_errno(ret);
	msg = pymsg_decode(&chan_zone, chan_in.data, chan_in.len);
	if (chan_in.cap > PYMODULE_KEEP_MAX)
		channel_buf_free(&chan_in);
	return msg;
}

static PyObject *pymodule_recv(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return pymodule_recv_common(false);
}

static PyObject *pymodule_recv_nowait(PyObject *self, PyObject *unused)
{
	(void)self;
	(void)unused;
	return pymodule_recv_common(true);
}

static PyObject *pymodule_send(PyObject *self, PyObject *obj)
{
	int err;

	(void)self;
	msgpack_sbuffer_clear(&chan_out);
	if (pymsg_encode(&chan_out, obj))
		return NULL;
	err = channel_send(chan_fd, chan_out.data, chan_out.size);
	if (chan_out.alloc > PYMODULE_KEEP_MAX) {
		msgpack_sbuffer_destroy(&chan_out);
		msgpack_sbuffer_init(&chan_out);
	}
	if (err)
		return pymodule_errno(err);
	return Py_NewRef(Py_None);
}

static PyObject *pymodule_packb(PyObject *self, PyObject *obj)
{
	msgpack_sbuffer sbuf;
	PyObject *res = NULL;

	(void)self;
	msgpack_sbuffer_init(&sbuf);
	if (pymsg_encode(&sbuf, obj) == 0)
		res = PyBytes_FromStringAndSize(sbuf.data ? sbuf.data : "",
						sbuf.size);
	msgpack_sbuffer_destroy(&sbuf);
	return res;
}

static PyObject *pymodule_unpackb(PyObject *self, PyObject *obj)
{
	Py_buffer view;
	PyObject *res;

	(void)self;
	if (PyObject_GetBuffer(obj, &view, PyBUF_SIMPLE))
		return NULL;
	res = pymsg_decode(&chan_zone, view.buf, view.len);
	PyBuffer_Release(&view);
	return res;
}

static PyMethodDef pymodule_methods[] = {
    {"recv", pymodule_recv, METH_NOARGS,
     "Next message from sluiced; None at end of file."},
    {"recv_nowait", pymodule_recv_nowait, METH_NOARGS,
     "Next message, None at end of file, False when none is waiting."},
    {"send", pymodule_send, METH_O, "Send one message to sluiced."},
    {"packb", pymodule_packb, METH_O, "Encode an object as msgpack."},
    {"unpackb", pymodule_unpackb, METH_O, "Decode one msgpack value."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef pymodule_def = {
    PyModuleDef_HEAD_INIT,
    "_sluice",
    "The worker's channel to sluiced (common/msg.h).",
    -1,
    pymodule_methods,
    NULL,
    NULL,
    NULL,
    NULL,
};

static PyObject *pymodule_init(void)
{
	PyObject *mod = PyModule_Create(&pymodule_def);

	if (mod && PyModule_AddIntConstant(mod, "fd", chan_fd)) {
		Py_DECREF(mod);
		return NULL;
	}
	return mod;
}

int pymodule_register(int fd)
{
	chan_fd = fd;
	if (!msgpack_zone_init(&chan_zone, 4096))
		return -ENOMEM;
	msgpack_sbuffer_init(&chan_out);
	if (PyImport_AppendInittab("_sluice", pymodule_init))
		return -ENOMEM;
	return 0;
}
