/* sluiced's process-wide state and its front threads.
 *
 * The main thread loads the rules, opens listeners, runs the admin endpoint,
 * the worker pool and signal handling. Each front thread runs one event loop
 * with its own SO_REUSEPORT listeners, client connections and upstream
 * keep-alive pool; it never blocks and never takes a lock on the request
 * path.
 */
#ifndef SLUICE_SLUICED_H
#define SLUICE_SLUICED_H

#include <limits.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/queue.h>
#include <time.h>

#include "common/clock.h"
#include "common/rules.h"
#include "front/stats.h"

struct event;
struct event_base;
struct evconnlistener;
struct evhttp;
struct pool;
struct limits;
struct sbpf;
struct conn;
struct upconn;
struct handoff;

/* One listening socket of one thread. */
struct front_listener {
	struct evconnlistener *ev;
	struct front_thread *thread;
	char addr[80]; /* rules_addr.text; routes name listeners by it */
	int fd;
	bool closed;
};

struct front_thread {
	int id;
	struct sluiced *d;
	struct event_base *base;
	pthread_t tid;
	bool started;

	struct front_listener *listeners;
	size_t listener_count;

	/* The rules this thread routes with; swapped on reload by the main
	 * thread through `control`. */
	struct rules *rules;
	struct rules *next_rules; /* under d->lock */
	struct event *control;

	LIST_HEAD(conn_list, conn) conns;
	LIST_HEAD(handoff_list, handoff)
	handoffs;	/* connections given to relays */
	int conn_count; /* both kinds */
	/* Idle keep-alive upstream connections, most recent first. */
	TAILQ_HEAD(upconn_list, upconn) idle;
	int idle_count;

	struct stats_thread stats;
};

struct sluiced {
	const char *rules_path;
	struct rules *rules; /* the main thread's current generation */
	struct event_base *base;
	pthread_mutex_t lock;

	struct front_thread *threads;
	int thread_count;

	struct pool *pool;
	struct limits *limits; /* rate limits and quotas per key (limit.h) */
	struct sbpf *bpf;
	enum rules_splice splice; /* resolved: never AUTO */
	char bpf_reason[512];

	char worker_path[PATH_MAX];
	char hooks_dir[PATH_MAX];

	struct evhttp *admin;
	FILE *access_log;
	pthread_mutex_t access_lock;

	struct timespec started;
	uint64_t reloads;
	struct event *drain_deadline, *drain_tick;
	/* Set by the main thread, read by the front threads: use the
	 * accessors below. */
	int draining;
	int stopping;
};

static inline bool sluiced_draining(const struct sluiced *d)
{
	return __atomic_load_n(&d->draining, __ATOMIC_ACQUIRE);
}

static inline bool sluiced_stopping(const struct sluiced *d)
{
	return __atomic_load_n(&d->stopping, __ATOMIC_ACQUIRE);
}

static inline void sluiced_set(int *flag)
{
	__atomic_store_n(flag, 1, __ATOMIC_RELEASE);
}

/* Load RULES_PATH again and hand the new rules to every part. Returns 0, or
 * -1 with err holding "FILE:LINE:COL: message" (the old rules stay). */
int sluiced_reload(struct sluiced *d, char *err, size_t err_len);

/* Threads (thread.c). */
/* Bind every listener (as root), then, after privileges are dropped,
 * start the loops. */
int front_threads_start(struct sluiced *d);
int front_threads_run(struct sluiced *d);
void front_threads_publish(struct sluiced *d, struct rules *rules);
void front_threads_drain(struct sluiced *d);
void front_threads_join(struct sluiced *d);
/* After the pool stopped: run what it delivered, free the loops. */
void front_threads_free(struct sluiced *d);
int front_connection_count(struct sluiced *d);
/* While draining, stop the thread's loop once its last connection went. */
void front_thread_check_drained(struct front_thread *t);

#endif
