/* sluice-worker: runs Python hooks for sluiced.
 *
 *   sluice-worker HOOKS_DIR
 *
 * sluiced starts it with its end of a SOCK_SEQPACKET socketpair as fd 3
 * (common/msg.h). The C part only embeds Debian's CPython, puts HOOKS_DIR
 * first on sys.path, and hands the socket to the Python runtime
 * (hooks/sluice/_worker.py) through the built-in `_sluice` module, which does
 * the framing and the msgpack codec in C.
 */
#include "common/log.h"
#include "common/msg.h"
#include "worker/pymodule.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <unistd.h>

/* Hook code that runs `sys.executable` must get Debian's interpreter, not
 * whatever python3 is first on PATH. */
#define WORKER_PYTHON "/usr/bin/python3"

/* Where Debian's site.py would look for packages ("%d.%d" is the Python
 * version). The site module itself is not run: its .pth files and
 * sitecustomize cost a worker time and memory at every start and serve no
 * hook. */
static const char *const worker_site_dirs[] = {
    "/usr/local/lib/python%d.%d/dist-packages",
    "/usr/lib/python3/dist-packages",
    "/usr/lib/python%d.%d/dist-packages",
};

/* Under LeakSanitizer (make SANITIZE=1): CPython keeps some allocations
 * until the process ends by design; only leaks outside it are reported. */
__attribute__((used)) const char *__lsan_default_suppressions(void);

const char *__lsan_default_suppressions(void)
{
	return "leak:libpython3\n";
}

static int worker_check_fd(void)
{
	int type = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(MSG_WORKER_FD, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
	    type != SOCK_SEQPACKET) {
		log_error("worker: fd %d is not a seqpacket socket; "
			  "sluice-worker is started by sluiced",
			  MSG_WORKER_FD);
		return -EBADF;
	}
	/* Processes a hook spawns must not hold the channel open. */
	if (fcntl(MSG_WORKER_FD, F_SETFD, FD_CLOEXEC) < 0)
		return -errno;
	return 0;
}

/* sys.path: HOOKS_DIR first, then the standard library, then Debian's
 * package directories. */
static int worker_python_path(const char *hooks_dir)
{
	PyObject *path = PySys_GetObject("path");
	PyObject *dir;
	int err;

	if (!path)
		return -1;
	dir = PyUnicode_DecodeFSDefault(hooks_dir);
	err = dir ? PyList_Insert(path, 0, dir) : -1;
	Py_XDECREF(dir);
	for (size_t i = 0;
	     !err && i < sizeof(worker_site_dirs) / sizeof(worker_site_dirs[0]);
	     i++) {
		char buf[128];

		snprintf(buf, sizeof(buf), worker_site_dirs[i],
			 PY_MAJOR_VERSION, PY_MINOR_VERSION);
		if (access(buf, F_OK))
			continue;
		dir = PyUnicode_DecodeFSDefault(buf);
		err = dir ? PyList_Append(path, dir) : -1;
		Py_XDECREF(dir);
	}
	return err;
}

static int worker_python_init(const char *hooks_dir)
{
	PyConfig config;
	PyStatus status;
	char *argv[] = {"sluice-worker", NULL};
	int err = -1;

	/* Isolated: no PYTHON* variables, no user site, no signal handlers
	 * (sluiced owns the signals), no site module (see above). */
	PyConfig_InitIsolatedConfig(&config);
	config.install_signal_handlers = 0;
	config.parse_argv = 0;
	config.site_import = 0;
	status =
	    PyConfig_SetBytesString(&config, &config.executable, WORKER_PYTHON);
	if (PyStatus_Exception(status))
		goto out_config;
	status = PyConfig_SetBytesArgv(&config, 1, argv);
	if (PyStatus_Exception(status))
		goto out_config;
	status = Py_InitializeFromConfig(&config);
	if (PyStatus_Exception(status))
		goto out_config;

	err = worker_python_path(hooks_dir);
	if (err)
		PyErr_Print();
out_config:
	if (PyStatus_Exception(status))
		log_error("worker: cannot start Python: %s",
			  status.err_msg ? status.err_msg : "unknown error");
	PyConfig_Clear(&config);
	return err;
}

/* Import the runtime and run its loop until sluiced closes the socket. */
static int worker_run(void)
{
	PyObject *mod, *res;
	int code = 1;

	mod = PyImport_ImportModule("sluice._worker");
	if (!mod)
		goto out_error;
	res = PyObject_CallMethod(mod, "main", NULL);
	Py_DECREF(mod);
	if (!res)
		goto out_error;
	code = PyLong_Check(res) ? (int)PyLong_AsLong(res) : 0;
	Py_DECREF(res);
	return code;

out_error:
	/* Prints the traceback, or exits with a SystemExit's code. */
	PyErr_Print();
	return 1;
}

int main(int argc, char **argv)
{
	int code;

	log_set_ident("worker");
	if (argc != 2) {
		fprintf(stderr,
			"usage: sluice-worker HOOKS_DIR\n"
			"(started by sluiced with its socket as fd 3)\n");
		return 2;
	}
	/* ^C reaches the whole process group; sluiced decides what stops. A
	 * worker must not outlive it either, even stuck in a hook. */
	signal(SIGINT, SIG_IGN);
	signal(SIGPIPE, SIG_IGN);
	prctl(PR_SET_PDEATHSIG, SIGKILL);

	if (worker_check_fd())
		return 1;
	if (pymodule_register(MSG_WORKER_FD)) {
		log_error("worker: out of memory");
		return 1;
	}
	if (worker_python_init(argv[1]))
		return 1;

	code = worker_run();

	/* No Py_FinalizeEx(): it waits for every non-daemon thread a hook
	 * started, and a worker whose socket is closed must go now. The
	 * runtime has already run the atexit handlers. */
	fflush(NULL);
	_exit(code);
}
