/* The sluiced side of the worker protocol (common/msg.h): records on a
 * SOCK_SEQPACKET socket, one flag byte each, and the msgpack maps they carry.
 *
 * Sending never blocks: a record the socket cannot take now is queued whole
 * (a seqpacket record is all or nothing) and sent when the socket is
 * writable again.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/log.h"
#include "common/msg.h"
#include "pool/pool_int.h"

/* ---- encoding ----------------------------------------------------------- */

static void pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t len = strlen(s);

	msgpack_pack_str(pk, len);
	msgpack_pack_str_body(pk, s, len);
}

static void pack_hooks(msgpack_packer *pk, const struct rules_hooks *hooks)
{
	msgpack_pack_array(pk, hooks->count);
	for (size_t i = 0; i < hooks->count; i++)
		pack_cstr(pk, hooks->names[i]);
}

/* python.path entries are relative to the rules file; a worker runs from
 * sluiced's working directory, so hand it absolute paths. */
static void pack_path(msgpack_packer *pk, const struct rules *rules,
		      const char *entry)
{
	const char *slash = rules->file ? strrchr(rules->file, '/') : NULL;
	char buf[4096];

	if (entry[0] == '/' || !slash) {
		pack_cstr(pk, entry);
		return;
	}
	snprintf(buf, sizeof(buf), "%.*s/%s", (int)(slash - rules->file),
		 rules->file, entry);
	pack_cstr(pk, buf);
}

static void pack_api(msgpack_packer *pk, const struct rules *rules,
		     const struct rules_api *api)
{
	const struct rules_middleware *mw = api->middleware;

	msgpack_pack_map(pk, 10);
	pack_cstr(pk, "name");
	pack_cstr(pk, api->name);
	pack_cstr(pk, "org_id");
	pack_cstr(pk, "");
	pack_cstr(pk, "pre");
	pack_hooks(pk, &mw->pre);
	pack_cstr(pk, "auth_check");
	if (mw->auth_check)
		pack_cstr(pk, mw->auth_check);
	else
		msgpack_pack_nil(pk);
	pack_cstr(pk, "post_key_auth");
	pack_hooks(pk, &mw->post_key_auth);
	pack_cstr(pk, "post");
	pack_hooks(pk, &mw->post);
	pack_cstr(pk, "response");
	pack_hooks(pk, &mw->response);
	pack_cstr(pk, "config_data");
	pack_cstr(pk, mw->config_json ? mw->config_json : "{}");
	pack_cstr(pk, "bundle_dir");
	if (mw->bundle_dir)
		pack_path(pk, rules, mw->bundle_dir);
	else
		msgpack_pack_nil(pk);
	pack_cstr(pk, "bundle_modules");
	pack_hooks(pk, &mw->bundle_modules);
}

static void pack_bool(msgpack_packer *pk, bool b)
{
	if (b)
		msgpack_pack_true(pk);
	else
		msgpack_pack_false(pk);
}

/* The "init" message for RULES: every hooked API with its hooks. */
int wire_encode_init(const struct rules *rules, bool check,
		     bool limits_in_result, msgpack_sbuffer *sb)
{
	static const char *const levels[] = {"error", "warn", "info", "debug"};
	const struct rules_python *py = &rules->python;
	msgpack_packer pk;
	size_t hooked = 0;

	msgpack_sbuffer_init(sb);
	msgpack_packer_init(&pk, sb, msgpack_sbuffer_write);
	for (size_t i = 0; i < rules->api_count; i++)
		hooked += rules->apis[i].middleware != NULL;

	msgpack_pack_map(&pk, 7);
	pack_cstr(&pk, "t");
	pack_cstr(&pk, "init");
	/* `sluiced -t` prints import errors itself, where they belong. */
	pack_cstr(&pk, "check");
	pack_bool(&pk, check);
	pack_cstr(&pk, "limits_in_result");
	pack_bool(&pk, limits_in_result);
	pack_cstr(&pk, "path");
	msgpack_pack_array(&pk, py->path_count);
	for (size_t i = 0; i < py->path_count; i++)
		pack_path(&pk, rules, py->path[i]);
	pack_cstr(&pk, "concurrency");
	msgpack_pack_int(&pk, py->concurrency > 0 ? py->concurrency : 1);
	pack_cstr(&pk, "log_level");
	pack_cstr(&pk, levels[log_threshold]);
	pack_cstr(&pk, "apis");
	msgpack_pack_array(&pk, hooked);
	for (size_t i = 0; i < rules->api_count; i++)
		if (rules->apis[i].middleware)
			pack_api(&pk, rules, &rules->apis[i]);
	return sb->data ? 0 : -ENOMEM;
}

/* {"t":"call","id":ID,"c": — the front's CALL map follows as is. */
size_t wire_encode_call_head(char *buf, size_t cap, uint64_t id)
{
	msgpack_sbuffer sb;
	msgpack_packer pk;
	size_t len;

	msgpack_sbuffer_init(&sb);
	msgpack_packer_init(&pk, &sb, msgpack_sbuffer_write);
	msgpack_pack_map(&pk, 3);
	pack_cstr(&pk, "t");
	pack_cstr(&pk, "call");
	pack_cstr(&pk, "id");
	msgpack_pack_uint64(&pk, id);
	pack_cstr(&pk, "c");
	len = sb.size <= cap ? sb.size : 0;
	if (len)
		memcpy(buf, sb.data, len);
	msgpack_sbuffer_destroy(&sb);
	return len;
}

/* Start an answer of type T to the worker's question ID: a map of N
 * entries, "t" and "id" among them. */
static void answer_begin(msgpack_sbuffer *sb, msgpack_packer *pk, int n,
			 const char *t, uint64_t id)
{
	msgpack_sbuffer_init(sb);
	msgpack_packer_init(pk, sb, msgpack_sbuffer_write);
	msgpack_pack_map(pk, n);
	pack_cstr(pk, "t");
	pack_cstr(pk, t);
	pack_cstr(pk, "id");
	msgpack_pack_uint64(pk, id);
}

int wire_encode_kv(msgpack_sbuffer *sb, uint64_t id, const void *value,
		   size_t len)
{
	msgpack_packer pk;

	answer_begin(sb, &pk, 3, "kv", id);
	pack_cstr(&pk, "value");
	if (value) {
		msgpack_pack_bin(&pk, len);
		msgpack_pack_bin_body(&pk, value, len);
	} else {
		msgpack_pack_nil(&pk);
	}
	return sb->data ? 0 : -ENOMEM;
}

int wire_encode_lim(msgpack_sbuffer *sb, uint64_t id,
		    const struct pool_limit_verdict *v)
{
	msgpack_packer pk;

	answer_begin(sb, &pk, 6, "lim", id);
	pack_cstr(&pk, "v");
	pack_cstr(&pk, v->verdict);
	pack_cstr(&pk, "wait_ms");
	msgpack_pack_int64(&pk, v->wait_ms);
	pack_cstr(&pk, "remaining");
	msgpack_pack_int64(&pk, v->quota_remaining);
	pack_cstr(&pk, "renews_ms");
	msgpack_pack_int64(&pk, v->quota_renews_ms);
	return sb->data ? 0 : -ENOMEM;
}

/* ---- records out -------------------------------------------------------- */

static size_t iov_total(const struct iovec *iov, int iovcnt)
{
	size_t total = 0;

	for (int i = 0; i < iovcnt; i++)
		total += iov[i].iov_len;
	return total;
}

/* Send one record made of a flag byte (0) and IOV. Returns 0, -EAGAIN or
 * another -errno. */
int wire_send_record(int fd, const struct iovec *iov, int iovcnt)
{
	struct iovec parts[8];
	struct msghdr mh = {.msg_iov = parts};
	static const char flag;

	if (iovcnt > 7)
		return -EINVAL;
	parts[0].iov_base = (void *)&flag;
	parts[0].iov_len = 1;
	memcpy(parts + 1, iov, iovcnt * sizeof(*iov));
	mh.msg_iovlen = iovcnt + 1;
	if (sendmsg(fd, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	return 0;
}

/* Split the message IOV into records at the end of the queue. */
int wire_queue(struct wire_out **head, struct wire_out **tail,
	       const struct iovec *iov, int iovcnt)
{
	size_t total = iov_total(iov, iovcnt), done = 0, off = 0;
	int i = 0;

	do {
		size_t chunk = total - done;
		struct wire_out *rec;

		if (chunk > MSG_RECORD_MAX)
			chunk = MSG_RECORD_MAX;
		rec = malloc(sizeof(*rec) + 1 + chunk);
		if (!rec)
			return -ENOMEM;
		rec->next = NULL;
		rec->len = 1 + chunk;
		rec->data[0] = done + chunk < total ? MSG_FLAG_MORE : 0;
		for (size_t got = 0; got < chunk;) {
			size_t n = iov[i].iov_len - off;

			if (n > chunk - got)
				n = chunk - got;
			memcpy(rec->data + 1 + got,
			       (const char *)iov[i].iov_base + off, n);
			got += n;
			off += n;
			if (off == iov[i].iov_len) {
				i++;
				off = 0;
			}
		}
		done += chunk;
		if (*tail)
			(*tail)->next = rec;
		else
			*head = rec;
		*tail = rec;
	} while (done < total);
	return 0;
}

/* Send queued records until the socket is full. Returns 0 when the queue is
 * empty, -EAGAIN when records remain, another -errno on failure. */
int wire_flush(int fd, struct wire_out **head, struct wire_out **tail)
{
	while (*head) {
		struct wire_out *rec = *head;

		if (send(fd, rec->data, rec->len, MSG_NOSIGNAL | MSG_DONTWAIT) <
		    0)
			return errno == EWOULDBLOCK ? -EAGAIN : -errno;
		*head = rec->next;
		if (!*head)
			*tail = NULL;
		free(rec);
	}
	return 0;
}

void wire_out_free(struct wire_out **head, struct wire_out **tail)
{
	while (*head) {
		struct wire_out *rec = *head;

		*head = rec->next;
		free(rec);
	}
	*tail = NULL;
}

/* ---- records in --------------------------------------------------------- */

void wire_in_reset(struct wire_in *in)
{
	free(in->buf);
	in->buf = NULL;
	in->len = in->cap = 0;
}

static int wire_in_append(struct wire_in *in, const char *data, size_t len,
			  size_t max)
{
	if (in->len + len > max)
		return -EMSGSIZE;
	if (in->len + len > in->cap) {
		size_t cap = in->cap ? in->cap * 2 : 2 * MSG_RECORD_MAX;
		char *buf;

		while (cap < in->len + len)
			cap *= 2;
		buf = realloc(in->buf, cap);
		if (!buf)
			return -ENOMEM;
		in->buf = buf;
		in->cap = cap;
	}
	memcpy(in->buf + in->len, data, len);
	in->len += len;
	return 0;
}

/* Read one record. Returns 1 when a message is complete (*msg points into
 * rxbuf or in->buf; the caller resets IN after using it), 0 when more
 * records of it are due, -EAGAIN when nothing is there, -EPIPE at end of
 * stream, another -errno on failure. RXBUF holds 1 + MSG_RECORD_MAX bytes;
 * a message above MAX bytes is -EMSGSIZE. */
int wire_recv(int fd, struct wire_in *in, char *rxbuf, size_t max,
	      const char **msg, size_t *len)
{
	struct iovec iov = {rxbuf, 1 + MSG_RECORD_MAX};
	struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
	ssize_t n;
	int err;

	n = recvmsg(fd, &mh, MSG_DONTWAIT);
	if (n < 0)
		return errno == EWOULDBLOCK ? -EAGAIN : -errno;
	if (n == 0)
		return -EPIPE;
	if (mh.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;

	if ((rxbuf[0] & MSG_FLAG_MORE) || in->len) {
		err = wire_in_append(in, rxbuf + 1, n - 1, max);
		if (err)
			return err;
		if (rxbuf[0] & MSG_FLAG_MORE)
			return 0;
		*msg = in->buf;
		*len = in->len;
		return 1;
	}
	*msg = rxbuf + 1;
	*len = n - 1;
	return 1;
}

/* ---- decoding helpers --------------------------------------------------- */

/* A str or bin as a malloc'd C string; NULL for anything else. */
char *wire_strdup(const msgpack_object *o)
{
	const char *ptr;
	size_t len;
	char *s;

	if (o && o->type == MSGPACK_OBJECT_STR) {
		ptr = o->via.str.ptr;
		len = o->via.str.size;
	} else if (o && o->type == MSGPACK_OBJECT_BIN) {
		ptr = o->via.bin.ptr;
		len = o->via.bin.size;
	} else {
		return NULL;
	}
	s = malloc(len + 1);
	if (!s)
		return NULL;
	memcpy(s, ptr, len);
	s[len] = '\0';
	return s;
}

int64_t wire_int(const msgpack_object *o, int64_t dflt)
{
	if (o && o->type == MSGPACK_OBJECT_POSITIVE_INTEGER)
		return o->via.u64 > INT64_MAX ? INT64_MAX : (int64_t)o->via.u64;
	if (o && o->type == MSGPACK_OBJECT_NEGATIVE_INTEGER)
		return o->via.i64;
	return dflt;
}

/* Text for a quoted log field: quotes, backslashes and control characters
 * escaped so that a traceback stays on one line. Keeps the tail when OUT is
 * too small, because the end of a traceback says what went wrong. */
void wire_escape(const char *in, size_t len, char *out, size_t cap)
{
	size_t o = 0, start = 0;

	if (cap < 8) {
		if (cap)
			out[0] = '\0';
		return;
	}
	if (len > cap / 2 - 4) {
		start = len - (cap / 2 - 4);
		memcpy(out, "...", 3);
		o = 3;
	}
	for (size_t i = start; i < len && o + 3 < cap; i++) {
		unsigned char c = in[i];

		if (c == '\n' || c == '\t' || c == '"' || c == '\\') {
			out[o++] = '\\';
			out[o++] = c == '\n' ? 'n' : c == '\t' ? 't' : c;
		} else if (c == '\r' || c < 0x20) {
			out[o++] = ' ';
		} else {
			out[o++] = c;
		}
	}
	out[o] = '\0';
}

/* The last non-empty line of TEXT (a traceback's "KindError: message"). */
char *wire_last_line(const char *text)
{
	const char *end = text + strlen(text), *start;

	while (end > text && (end[-1] == '\n' || end[-1] == ' '))
		end--;
	start = end;
	while (start > text && start[-1] != '\n')
		start--;
	return strndup(start, end - start);
}
