/* The admin endpoint (`admin:` in the rules), served by libevent's evhttp on
 * sluiced's main thread.
 *
 *   GET  /status   JSON, below
 *   GET  /metrics  Prometheus text format
 *   GET  /stats    a self-contained HTML page drawing /status live
 *   POST /reload   same as HUP; 200 with {"reloaded":true} or 400 with
 *                  {"error":"FILE:LINE:COL: message"}
 *
 * /status:
 *   {"version":str, "pid":int, "uptime_s":float, "rules":str,
 *    "reloads":int, "threads":int, "connections":int,
 *    "apis":[{"name":str, "kind":"plain"|"hooked",
 *             "requests":{"1xx":int,"2xx":int,"3xx":int,"4xx":int,
 *                         "5xx":int},
 *             "total":int, "inflight":int,
 *             "latency_ms":{"p50":float,"p99":float},
 *             "bytes_in":int, "bytes_out":int, "spliced":int}],
 *    "pool":{"min":int, "max":int, "queued":int,
 *            "workers":[{"pid":int, "state":"starting"|"idle"|"busy",
 *                        "calls":int, "inflight":int, "rss_kb":int}],
 *            "apis":{NAME:{"inflight":int, "queued":int,
 *                          "rejected":int, "timeouts":int,
 *                          "errors":int, "status":"ok"|str}},
 *            "spawned":int, "killed":int, "recycled":int,
 *            "store":{"kind":"memory", "entries":int, "bytes":int} |
 *                    {"kind":"redis", "addr":str, "links":int,
 *                     "links_down":int, "missed":int, "lost":int}} | null,
 *    "bpf":{"loaded":bool, "splice":str, "reason":str|null,
 *           "spliced_bytes":{NAME:int},
 *           "edge":[{"port":int, "passed":int, "dropped":int}]}}
 *
 * Counters are cumulative since start; sluicectl top and /stats derive
 * rates from two samples.
 */
#ifndef SLUICE_ADMIN_H
#define SLUICE_ADMIN_H

struct event_base;
struct sluiced;

int admin_start(struct sluiced *d, struct event_base *base);
void admin_stop(struct sluiced *d);

#endif
