/* Writing JSON into an evbuffer: the one escaping rule every room uses. */
#ifndef SLUICE_JSON_H
#define SLUICE_JSON_H

struct evbuffer;

/* S as a quoted JSON string: quotes, backslashes and control bytes
 * escaped. */
void json_write_string(struct evbuffer *out, const char *s);

#endif
