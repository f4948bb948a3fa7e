/* `sluiced -t`: start one worker, let it import every hook module, and
 * report what does not import. Runs before any event loop exists, so it
 * waits with poll(2) and reaps with waitpid(2) directly. */
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "common/log.h"
#include "common/msg.h"
#include "pool/pool_int.h"

#define CHECK_EXIT_GRACE_MS 2000

static int check_send_init(int fd, const struct rules *rules)
{
	struct wire_out *head = NULL, *tail = NULL;
	msgpack_sbuffer sb;
	struct iovec iov;
	int err;

	err = wire_encode_init(rules, true, false, &sb);
	if (err)
		return err;
	iov.iov_base = sb.data;
	iov.iov_len = sb.size;
	err = wire_queue(&head, &tail, &iov, 1);
	msgpack_sbuffer_destroy(&sb);
	while (!err && head) {
		struct pollfd pfd = {fd, POLLOUT, 0};

		err = wire_flush(fd, &head, &tail);
		if (err == -EAGAIN)
			err = poll(&pfd, 1, 1000) < 0 ? -errno : 0;
	}
	wire_out_free(&head, &tail);
	return err;
}

/* Print each import error at its API's entry ("FILE:LINE:COL: API name:
 * cannot load ..." and the traceback); returns how many there were. */
static int check_report(const struct rules *rules, const msgpack_object *msg)
{
	const msgpack_object *errs = msg_get(msg, "errors");
	int n = 0;

	if (!errs || errs->type != MSGPACK_OBJECT_MAP)
		return 0;
	for (uint32_t i = 0; i < errs->via.map.size; i++) {
		char *name = wire_strdup(&errs->via.map.ptr[i].key);
		char *tb = wire_strdup(&errs->via.map.ptr[i].val);
		const struct rules_api *api =
		    name ? rules_find_api(rules, name) : NULL;

		fprintf(stderr, "%s:%d:%d: %s%s", rules->file,
			api ? api->line : 1, api ? api->col : 1,
			tb ? tb : "import failed",
			tb && tb[0] && tb[strlen(tb) - 1] == '\n' ? "" : "\n");
		free(name);
		free(tb);
		n++;
	}
	return n;
}

static void check_log(const msgpack_object *msg)
{
	const msgpack_object *text = msg_get(msg, "msg");
	char *level = wire_strdup(msg_get(msg, "level"));
	int lvl = level ? log_level_parse(level) : -1;
	char esc[1800];

	if (text && text->type == MSGPACK_OBJECT_STR) {
		wire_escape(text->via.str.ptr, text->via.str.size, esc,
			    sizeof(esc));
		log_write(lvl < 0 ? LOG_INFO : lvl, "import msg=\"%s\"", esc);
	}
	free(level);
}

/* Answer a get_data made at import time: the store is empty here. */
static void check_kv_get(int fd, const msgpack_object *msg)
{
	msgpack_sbuffer sb;
	struct iovec iov;

	if (wire_encode_kv(&sb, wire_int(msg_get(msg, "id"), 0), NULL, 0))
		return;
	iov.iov_base = sb.data;
	iov.iov_len = sb.size;
	wire_send_record(fd, &iov, 1);
	msgpack_sbuffer_destroy(&sb);
}

/* Handle one message: 1 when it was "ready" (*errors set), else 0. */
static int check_message(int fd, const struct rules *rules, const char *raw,
			 size_t len, int *errors)
{
	msgpack_unpacked up;
	size_t off = 0;
	int ready = 0;

	msgpack_unpacked_init(&up);
	if (msgpack_unpack_next(&up, raw, len, &off) ==
	    MSGPACK_UNPACK_SUCCESS) {
		const msgpack_object *t = msg_get(&up.data, "t");

		if (msg_is(t, "ready")) {
			*errors = check_report(rules, &up.data);
			ready = 1;
		} else if (msg_is(t, "log")) {
			check_log(&up.data);
		} else if (msg_is(t, "kv_get")) {
			check_kv_get(fd, &up.data);
		}
	}
	msgpack_unpacked_destroy(&up);
	return ready;
}

/* Wait for "ready": 0 with *errors set, or -errno. */
static int check_wait_ready(int fd, const struct rules *rules, int *errors)
{
	int64_t end = now_ms() + POOL_START_TIMEOUT;
	struct wire_in in = {0};
	char *rxbuf = malloc(1 + MSG_RECORD_MAX);
	int err = -ENOMEM;

	while (rxbuf) {
		struct pollfd pfd = {fd, POLLIN, 0};
		int64_t left = end - now_ms();
		const char *msg;
		size_t len;

		if (left <= 0) {
			err = -ETIMEDOUT;
			break;
		}
		if (poll(&pfd, 1, (int)left) < 0 && errno != EINTR) {
			err = -errno;
			break;
		}
		err = wire_recv(fd, &in, rxbuf, 64u << 20, &msg, &len);
		if (err == -EAGAIN || err == 0)
			continue;
		if (err < 0)
			break;
		err = 0;
		if (check_message(fd, rules, msg, len, errors))
			break;
		wire_in_reset(&in);
	}
	wire_in_reset(&in);
	free(rxbuf);
	return err;
}

static void check_reap(pid_t pid)
{
	struct timespec pause = {0, 10 * 1000 * 1000};

	for (int waited = 0; waited < CHECK_EXIT_GRACE_MS; waited += 10) {
		if (waitpid(pid, NULL, WNOHANG) != 0)
			return;
		nanosleep(&pause, NULL);
	}
	kill(pid, SIGKILL);
	waitpid(pid, NULL, 0);
}

int pool_check_imports(struct rules *rules, const char *worker_path,
		       const char *hooks_dir)
{
	int fd, err, errors = 0;
	pid_t pid;

	if (!rules->has_middleware)
		return 0;
	err = worker_process_start(worker_path, hooks_dir, &pid, &fd);
	if (err) {
		fprintf(stderr, "%s: cannot start the python worker %s: %s\n",
			rules->file, worker_path, strerror(-err));
		return 1;
	}
	err = check_send_init(fd, rules);
	if (!err)
		err = check_wait_ready(fd, rules, &errors);
	close(fd);
	if (err) {
		kill(pid, SIGKILL);
		fprintf(stderr, "%s: the python worker %s %s\n", rules->file,
			worker_path,
			err == -ETIMEDOUT
			    ? "did not finish importing the hooks in time"
			    : "exited before it finished importing the hooks");
	}
	check_reap(pid);
	return err || errors ? 1 : 0;
}
