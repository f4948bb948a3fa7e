/* The worker's end of the sluiced socket: message framing (common/msg.h).
 *
 * A message is one or more seqpacket records, each a flag byte then up to
 * MSG_RECORD_MAX payload bytes. These functions know nothing of msgpack or
 * Python; they move byte strings.
 */
#ifndef SLUICE_WORKER_CHANNEL_H
#define SLUICE_WORKER_CHANNEL_H

#include <stdbool.h>
#include <stddef.h>

/* A growable receive buffer, reused for every message. */
struct channel_buf {
	char *data;
	size_t len;
	size_t cap;
};

/* Receive one whole message into BUF. With NOWAIT the first record is read
 * without blocking (later records of the same message are already on their
 * way and are waited for). Returns 1 for a message, 0 at end of file,
 * -EAGAIN when NOWAIT found nothing, or another -errno. */
int channel_recv(int fd, struct channel_buf *buf, bool nowait);

/* Send DATA as one message, split into records as needed. 0 or -errno. */
int channel_send(int fd, const char *data, size_t len);

void channel_buf_free(struct channel_buf *buf);

#endif
