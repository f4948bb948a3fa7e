#include "ctl/client.h"

#include "ctl/json.h"

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* The admin endpoint answers from sluiced's main loop in microseconds; these
 * bounds only keep sluicectl from hanging on something else on the port. */
#define CLIENT_CONNECT_MS 2000
#define CLIENT_TOTAL_MS	  5000
#define CLIENT_REPLY_MAX  (16 << 20)

static const char hint[] = "is sluiced running with `admin:` set?";

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* "host:port", "[v6]:port", with an optional "http://" and trailing "/". */
static int split_addr(const char *addr, char *host, size_t host_len, char *port,
		      size_t port_len)
{
	const char *p = addr, *colon, *hend;
	size_t n;

	if (strncmp(p, "http://", 7) == 0)
		p += 7;
	if (*p == '[') {
		hend = strchr(p, ']');
		if (!hend || hend[1] != ':')
			return -EINVAL;
		p++;
		colon = hend + 1;
	} else {
		colon = strrchr(p, ':');
		if (!colon)
			return -EINVAL;
		hend = colon;
	}
	n = (size_t)(hend - p);
	if (n == 0 || n >= host_len)
		return -EINVAL;
	memcpy(host, p, n);
	host[n] = '\0';
	n = strcspn(colon + 1, "/");
	if (n == 0 || n >= port_len)
		return -EINVAL;
	memcpy(port, colon + 1, n);
	port[n] = '\0';
	return 0;
}

static int wait_fd(int fd, short events, long long deadline)
{
	struct pollfd pfd = {.fd = fd, .events = events};
	long long left;
	int n;

	for (;;) {
		left = deadline - now_ms();
		if (left <= 0)
			return -ETIMEDOUT;
		n = poll(&pfd, 1, (int)left);
		if (n > 0)
			return 0;
		if (n == 0)
			return -ETIMEDOUT;
		if (errno != EINTR)
			return -errno;
	}
}

static int connect_one(const struct addrinfo *ai, long long deadline)
{
	socklen_t len = sizeof(int);
	int fd, err = 0;

	fd = socket(ai->ai_family,
		    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
		    ai->ai_protocol);
	if (fd < 0)
		return -errno;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	if (errno != EINPROGRESS) {
		err = -errno;
		goto close_fd;
	}
	err = wait_fd(fd, POLLOUT, deadline);
	if (err < 0)
		goto close_fd;
	if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0)
		err = errno;
	if (err) {
		err = -err;
		goto close_fd;
	}
	return fd;
close_fd:
	close(fd);
	return err;
}

static int connect_addr(const char *addr, char *err, size_t err_len)
{
	struct addrinfo hints = {.ai_socktype = SOCK_STREAM};
	struct addrinfo *res, *ai;
	char host[256], port[32];
	long long deadline = now_ms() + CLIENT_CONNECT_MS;
	int fd = -EINVAL, rc;

	if (split_addr(addr, host, sizeof(host), port, sizeof(port)) < 0) {
		snprintf(err, err_len,
			 "bad admin address '%s': expected host:port", addr);
		return -EINVAL;
	}
	rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0) {
		snprintf(err, err_len,
			 "cannot reach the admin endpoint at %s: %s; %s", addr,
			 gai_strerror(rc), hint);
		return -EHOSTUNREACH;
	}
	for (ai = res; ai; ai = ai->ai_next) {
		fd = connect_one(ai, deadline);
		if (fd >= 0)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0)
		snprintf(err, err_len,
			 "cannot reach the admin endpoint at %s: %s; %s", addr,
			 strerror(-fd), hint);
	return fd;
}

static int send_all(int fd, const char *buf, size_t len, long long deadline)
{
	ssize_t n;
	int err;

	while (len > 0) {
		n = send(fd, buf, len, MSG_NOSIGNAL);
		if (n > 0) {
			buf += n;
			len -= (size_t)n;
			continue;
		}
		if (n < 0 && errno != EAGAIN && errno != EINTR)
			return -errno;
		err = wait_fd(fd, POLLOUT, deadline);
		if (err < 0)
			return err;
	}
	return 0;
}

/* Read to EOF into a growing buffer, NUL-terminated. */
static int recv_all(int fd, char **out, size_t *out_len, long long deadline)
{
	size_t cap = 8192, len = 0;
	char *buf = malloc(cap), *grown;
	ssize_t n;
	int err = 0;

	if (!buf)
		return -ENOMEM;
	for (;;) {
		if (cap - len < 4096) {
			grown = cap < CLIENT_REPLY_MAX ? realloc(buf, cap * 2)
						       : NULL;
			if (!grown) {
				err = -EFBIG;
				goto fail;
			}
			buf = grown;
			cap *= 2;
		}
		n = recv(fd, buf + len, cap - len - 1, 0);
		if (n > 0) {
			len += (size_t)n;
			continue;
		}
		if (n == 0)
			break;
		if (errno != EAGAIN && errno != EINTR) {
			err = -errno;
			goto fail;
		}
		err = wait_fd(fd, POLLIN, deadline);
		if (err < 0)
			goto fail;
	}
	buf[len] = '\0';
	*out = buf;
	*out_len = len;
	return 0;
fail:
	free(buf);
	return err;
}

/* Decode a chunked body in place; returns its new length or -EBADMSG. */
static long dechunk(char *body, size_t len)
{
	char *in = body, *end = body + len, *line_end, *out = body;
	unsigned long size;

	for (;;) {
		line_end = strstr(in, "\r\n");
		if (!line_end)
			return -EBADMSG;
		size = strtoul(in, NULL, 16);
		in = line_end + 2;
		if (size == 0)
			break;
		if ((size_t)(end - in) < size)
			return -EBADMSG;
		memmove(out, in, size);
		out += size;
		in += size + 2;
		if (in > end)
			return -EBADMSG;
	}
	*out = '\0';
	return out - body;
}

static const char *find_header(const char *head, const char *name)
{
	size_t n = strlen(name);
	const char *line = strstr(head, "\r\n");

	while (line && line[2] != '\r') {
		line += 2;
		if (strncasecmp(line, name, n) == 0 && line[n] == ':')
			return line + n + 1 + strspn(line + n + 1, " \t");
		line = strstr(line, "\r\n");
	}
	return NULL;
}

static int parse_reply(char *raw, size_t len, struct client_reply *reply)
{
	char *body;
	const char *te, *cl;
	size_t head_len, body_len;
	long n;

	if (sscanf(raw, "HTTP/%*d.%*d %d", &reply->status) != 1)
		return -EBADMSG;
	body = strstr(raw, "\r\n\r\n");
	if (!body)
		return -EBADMSG;
	head_len = (size_t)(body - raw) + 4;
	body_len = len - head_len;
	te = find_header(raw, "Transfer-Encoding");
	cl = find_header(raw, "Content-Length");
	if (te && strncasecmp(te, "chunked", 7) == 0) {
		n = dechunk(raw + head_len, body_len);
		if (n < 0)
			return (int)n;
		body_len = (size_t)n;
	} else if (cl && strtoul(cl, NULL, 10) < body_len) {
		body_len = strtoul(cl, NULL, 10);
	}
	reply->body = malloc(body_len + 1);
	if (!reply->body)
		return -ENOMEM;
	memcpy(reply->body, raw + head_len, body_len);
	reply->body[body_len] = '\0';
	reply->body_len = body_len;
	return 0;
}

int client_request(const char *addr, const char *method, const char *path,
		   struct client_reply *reply, char *err, size_t err_len)
{
	long long deadline = now_ms() + CLIENT_TOTAL_MS;
	char req[512], *raw = NULL;
	size_t raw_len = 0;
	int fd, rc, n;

	memset(reply, 0, sizeof(*reply));
	fd = connect_addr(addr, err, err_len);
	if (fd < 0)
		return fd;
	n = snprintf(req, sizeof(req),
		     "%s %s HTTP/1.0\r\nHost: %s\r\nContent-Length: 0\r\n"
		     "Connection: close\r\n\r\n",
		     method, path, addr);
	rc = n > 0 && (size_t)n < sizeof(req) ? 0 : -EINVAL;
	if (rc == 0)
		rc = send_all(fd, req, (size_t)n, deadline);
	if (rc == 0)
		rc = recv_all(fd, &raw, &raw_len, deadline);
	if (rc == 0)
		rc = parse_reply(raw, raw_len, reply);
	if (rc < 0)
		snprintf(err, err_len, "admin endpoint at %s: %s %s failed: %s",
			 addr, method, path,
			 rc == -EBADMSG ? "not an HTTP reply" : strerror(-rc));
	free(raw);
	close(fd);
	return rc;
}

void client_reply_free(struct client_reply *reply)
{
	free(reply->body);
	reply->body = NULL;
	reply->body_len = 0;
}

int client_get_status(const char *addr, struct json **doc, char *err,
		      size_t err_len)
{
	struct client_reply reply;
	char why[128];
	int rc;

	rc = client_request(addr, "GET", "/status", &reply, err, err_len);
	if (rc < 0)
		return rc;
	if (reply.status != 200) {
		snprintf(
		    err, err_len,
		    "admin endpoint at %s: GET /status answered %d: %.200s",
		    addr, reply.status, reply.body);
		rc = -EPROTO;
		goto free_reply;
	}
	*doc = json_parse(reply.body, reply.body_len, why, sizeof(why));
	if (!*doc) {
		snprintf(err, err_len,
			 "admin endpoint at %s: /status is not JSON: %s", addr,
			 why);
		rc = -EBADMSG;
	}
free_reply:
	client_reply_free(&reply);
	return rc;
}
