/* The messages between sluiced and sluice-worker.
 *
 * Transport: a unix SOCK_SEQPACKET socketpair, one per worker; the worker
 * gets its end as file descriptor 3. A message is one msgpack map. Because a
 * seqpacket record is bounded by the socket buffer, a message travels as one
 * or more records: each record is one flag byte, then up to MSG_RECORD_MAX
 * payload bytes; flag MSG_FLAG_MORE says another record of the same message
 * follows. Almost every message fits in one record.
 *
 * Every map has "t", the message type. Strings are msgpack str, bodies are
 * msgpack bin. Headers are arrays of [name, value] pairs in order, duplicates
 * allowed.
 *
 * sluiced -> worker
 *   {"t":"init", "check":bool, "limits_in_result":bool, "path":[str],
 *    "concurrency":int, "log_level":str,
 *    "apis":[{"name":str, "org_id":str, "pre":[str], "auth_check":str|nil,
 *             "post_key_auth":[str], "post":[str], "response":[str],
 *             "config_data":str, "bundle_dir":str|nil,
 *             "bundle_modules":[str]}]}
 *       First message, once. The worker imports every module named, then
 *       answers "ready". "bundle_dir" (absolute) is set for a Tyk plugin
 *       bundle: the worker puts it on sys.path for that API, imports
 *       "bundle_modules", and the hook names are bare function names looked
 *       up in those modules. Paths in "path" are absolute. With "check"
 *       (`sluiced -t`) import errors are only reported in "ready", not
 *       logged as well. "limits_in_result": see "limit" below.
 *   {"t":"call", "id":uint, "c":CALL}
 *     CALL = {"api":str, "phase":"request"|"response",
 *             "req":{"method":str, "path":str, "headers":[[str,str]],
 *                    "body":bin, "scheme":str, "remote_addr":str,
 *                    "listen_path":str},
 *             "resp":{"status":int, "headers":[[str,str]], "body":bin},
 *             "sess":SESS}
 *       CALL is encoded by the front; the pool wraps it with "t" and "id".
 *       One visit: the whole request chain (pre, auth_check, post_key_auth,
 *       post), or the response chain. "resp" only in the response phase;
 *       "sess" only there too, as the request visit's result gave it.
 *       "path" is the path and query the upstream would see (after
 *       strip_listen_path).
 *   {"t":"kv", "id":uint, "value":bin|nil}
 *       Answer to kv_get.
 *   {"t":"lim", "id":uint, "v":"pass"|"rate"|"quota", "wait_ms":int,
 *    "remaining":int, "renews_ms":int}
 *       Answer to limit: refused for its rate (the worker answers 429) or
 *       its quota (403), with the wait until a request could pass (-1:
 *       never); or passed, with the quota left after it (-1: no quota) and
 *       the time until the quota renews (-1: never).
 *
 * worker -> sluiced
 *   {"t":"ready", "pid":int, "errors":{api_name: str},
 *    "async_apis":[api_name]}
 *       Import finished; "errors" holds a traceback for each API whose
 *       modules failed to import (those APIs answer 503). "async_apis" names
 *       the APIs whose every hook (request and response chains) is an
 *       `async def`: sluiced may send a worker several calls of such APIs at
 *       once (up to "concurrency"), and never mixes them with a call of any
 *       other API. Calls of other APIs come one at a time per worker. The
 *       worker must therefore keep reading its socket while async calls
 *       run, and answer each call by its id in any order.
 *       Every call read must be answered: sluiced takes a call without a
 *       result for a hung hook and SIGKILLs the worker at the deadline. (A
 *       call read by the event loop just as its last task finished must
 *       still run: leaving the loop with a task pending loses it.)
 *   {"t":"result", "id":uint, "ok":bool, "error":str,
 *    "reply":{"status":int, "headers":[[str,str]], "body":bin} | nil,
 *    "req":{"method":str?, "path":str?, "headers":[[str,str]]?, "body":bin?}
 *          | nil,
 *    "resp":{"status":int?, "headers":[[str,str]]?, "body":bin?} | nil,
 *    "sess":SESS | nil,
 *    "quota":{"max":int, "remaining":int, "reset":int} | nil,
 *    "lim":{"key":str, "rate":num, "per":num, "quota_max":int,
 *           "quota_period":int} | nil}
 *       SESS = {"s":{field: value}, "m":{...}}: the session's fields and the
 *       metadata as the request chain left them. Only for APIs with
 *       response hooks, only when not empty; the front keeps it as it came
 *       and hands it back in the response call.
 *       "quota": what is left of the key's quota after this request, as
 *       "limit" answered it ("reset": unix seconds, 0 if it never renews),
 *       for the client's X-RateLimit-* headers; only when a quota is set.
 *       "lim": the limits of "limit" below, sent with the result instead
 *       of asked for (see there); the front counts the request against
 *       them before it goes on, and answers 429 or 403 itself.
 *       ok=false: the hook raised; "error" is the traceback, the front
 *       applies on_error. "reply": answer the client now with this (request
 *       phase: the upstream is never contacted). Otherwise "req" (request
 *       phase) or "resp" (response phase) carries only what changed; a
 *       present "headers" replaces the whole header list, "path" already
 *       includes query changes. Absent keys mean unchanged.
 *       sluice-worker sends only the keys that carry something: "error"
 *       only when ok=false, no "reply"/"req"/"resp" for a call that changed
 *       nothing ({"t":"result","id":N,"ok":true}). A reply made in the
 *       response phase (sluice.reply from a response hook) arrives as a
 *       complete "resp" {status, headers, body}.
 *   {"t":"log", "level":"error"|"warn"|"info"|"debug", "api":str|nil,
 *    "msg":str}
 *       A line from a hook's logging/print/TykGateway.log; sluiced logs it
 *       with the API name and the worker's pid.
 *   {"t":"kv_set", "key":str, "value":bin, "ttl":int}
 *       TykGateway.store_data; ttl in seconds, 0 = no expiry. The store lives
 *       in sluiced, shared by all workers and kept across their restarts.
 *   {"t":"kv_get", "id":uint, "key":str}
 *       TykGateway.get_data; sluiced answers with "kv" and the same id.
 *   {"t":"limit", "id":uint, "api":str, "key":str, "rate":num, "per":num,
 *    "quota_max":int, "quota_period":int}
 *       Sent right after auth_check passes a key whose session sets a rate
 *       limit or a quota (Tyk's rate, per, quota_max, quota_renewal_rate;
 *       the key is metadata["token"]), before post_key_auth and post run,
 *       as Tyk checks them. sluiced counts the request (front/limit.h:
 *       counters of every key, shared by all workers) and answers "lim"
 *       with the same id; the worker waits for it. When init said
 *       "limits_in_result" (the limits are counted in sluiced's memory)
 *       and no hook of the API runs after auth_check, in either visit,
 *       none could see when the count happened: the worker puts the same
 *       map in its result as "lim" instead, and saves the round trip.
 */
#ifndef SLUICE_MSG_H
#define SLUICE_MSG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <msgpack.h>

#define MSG_WORKER_FD  3
#define MSG_RECORD_MAX 65536
#define MSG_FLAG_MORE  0x01

/* Reading decoded messages, for both ends. */

/* The value of KEY in a map; NULL when absent, nil, or MAP is no map. */
const msgpack_object *msg_get(const msgpack_object *map, const char *key);
/* Whether O is the string STR. */
bool msg_is(const msgpack_object *o, const char *str);
/* The bytes of a str or bin; false for anything else. */
bool msg_bytes(const msgpack_object *o, const char **ptr, size_t *len);
/* An integer or float as a double; false for anything else. */
bool msg_number(const msgpack_object *o, double *out);

#endif
