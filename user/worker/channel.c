#include "worker/channel.h"

#include "common/msg.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/uio.h>

static int channel_reserve(struct channel_buf *buf, size_t need)
{
	size_t cap = buf->cap ? buf->cap : 4096;
	char *data;

	if (buf->len + need <= buf->cap)
		return 0;
	while (cap < buf->len + need)
		cap *= 2;
	data = realloc(buf->data, cap);
	if (!data)
		return -ENOMEM;
	buf->data = data;
	buf->cap = cap;
	return 0;
}

/* One record: the flag byte goes to FLAG, the payload is appended to BUF.
 * MSG_TRUNC tells a record longer than the protocol allows, which can only
 * come from a broken peer. */
static int channel_recv_record(int fd, struct channel_buf *buf, int flags,
			       uint8_t *flag)
{
	struct iovec iov[2];
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	ssize_t n;
	int err;

	err = channel_reserve(buf, MSG_RECORD_MAX);
	if (err)
		return err;
	iov[0].iov_base = flag;
	iov[0].iov_len = 1;
	iov[1].iov_base = buf->data + buf->len;
	iov[1].iov_len = MSG_RECORD_MAX;

	do
		n = recvmsg(fd, &mh, flags);
	while (n < 0 && errno == EINTR);
	if (n < 0)
		return -errno;
	if (n == 0)
		return 0;
	if (mh.msg_flags & MSG_TRUNC)
		return -EMSGSIZE;
	buf->len += (size_t)n - 1;
	return 1;
}

int channel_recv(int fd, struct channel_buf *buf, bool nowait)
{
	uint8_t flag = 0;
	int ret;

	buf->len = 0;
	ret = channel_recv_record(fd, buf, nowait ? MSG_DONTWAIT : 0, &flag);
	while (ret == 1 && (flag & MSG_FLAG_MORE))
		ret = channel_recv_record(fd, buf, 0, &flag);
	return ret;
}

int channel_send(int fd, const char *data, size_t len)
{
	uint8_t flag;
	struct iovec iov[2];
	struct msghdr mh = {.msg_iov = iov, .msg_iovlen = 2};
	size_t chunk;
	ssize_t n;

	do {
		chunk = len > MSG_RECORD_MAX ? MSG_RECORD_MAX : len;
		flag = chunk < len ? MSG_FLAG_MORE : 0;
		iov[0].iov_base = &flag;
		iov[0].iov_len = 1;
		iov[1].iov_base = (void *)data;
		iov[1].iov_len = chunk;
		do
			n = sendmsg(fd, &mh, MSG_NOSIGNAL);
		while (n < 0 && errno == EINTR);
		if (n < 0)
			return -errno;
		data += chunk;
		len -= chunk;
	} while (len > 0);
	return 0;
}

void channel_buf_free(struct channel_buf *buf)
{
	free(buf->data);
	memset(buf, 0, sizeof(*buf));
}
