/* `_sluice`, the built-in module through which the Python runtime
 * (hooks/sluice/_worker.py) talks to sluiced:
 *
 *   _sluice.recv()         next message as Python objects; None at end of
 *                          file. Blocks without holding the GIL.
 *   _sluice.recv_nowait()  the same, or False when nothing is waiting.
 *   _sluice.send(obj)      encode obj and send it as one message.
 *   _sluice.packb(obj), _sluice.unpackb(bytes)   the codec alone.
 *   _sluice.fd             the socket, for an asyncio reader.
 *
 * send() holds the GIL throughout, so threads a hook starts may log without
 * interleaving records. recv() is for the runtime's main thread only.
 */
#ifndef SLUICE_WORKER_PYMODULE_H
#define SLUICE_WORKER_PYMODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* Register `_sluice` as a built-in module served on socket FD. Call before
 * the interpreter is initialized. */
int pymodule_register(int fd);

#endif
