/* sluicectl's HTTP client for the admin endpoint: one blocking request per
 * connection (HTTP/1.0, `Connection: close`), bounded in time.
 */
#ifndef SLUICE_CTL_CLIENT_H
#define SLUICE_CTL_CLIENT_H

#include <stddef.h>

struct client_reply {
	int status; /* HTTP status code */
	char *body; /* NUL-terminated; the caller frees it */
	size_t body_len;
};

/* Send METHOD PATH to ADDR ("host:port", "[v6]:port", optional "http://").
 * Returns 0 with *reply filled, or -errno. A failure to connect leaves a
 * sentence naming the address and the cause in err. */
int client_request(const char *addr, const char *method, const char *path,
		   struct client_reply *reply, char *err, size_t err_len);

void client_reply_free(struct client_reply *reply);

struct json;

/* GET /status and parse it. Returns 0 with *doc set (free it with
 * json_free), or -errno with a sentence in err. */
int client_get_status(const char *addr, struct json **doc, char *err,
		      size_t err_len);

#endif
