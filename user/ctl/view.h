/* sluicectl's one-shot views of a /status document: `status`, `apis`,
 * `workers`, and the formatting helpers `top` shares with them.
 *
 * Every view reads the schema in front/admin.h and treats a missing member
 * as absent (0, "-", or a line saying why), so it works against a gateway
 * built without the pool or without BPF.
 */
#ifndef SLUICE_CTL_VIEW_H
#define SLUICE_CTL_VIEW_H

#include <stddef.h>
#include <stdio.h>

struct json;

void view_status(FILE *out, const struct json *st);
void view_apis(FILE *out, const struct json *st);
void view_workers(FILE *out, const struct json *st);

/* "1.2 MiB", "512 B" */
const char *view_bytes(double n, char *buf, size_t len);
/* "3d 04h", "1h 02m 03s", "12.3s" */
const char *view_duration(double seconds, char *buf, size_t len);
/* Width of the widest API name, at least MIN. */
int view_name_width(const struct json *apis, int min);
/* Workers per state: busy, idle, starting (anything else counts as such). */
void view_worker_states(const struct json *pool, int *busy, int *idle,
			int *starting);

#endif
