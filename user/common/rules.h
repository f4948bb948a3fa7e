/* The rules file, parsed into one immutable struct.
 *
 * rules_load() reads a YAML file (libyaml) and either returns a complete,
 * validated `struct rules` or fails with one message of the form
 * "FILE:LINE:COL: message" (lines and columns count from 1). Nothing else in
 * sluice reads YAML; everything else reads this struct.
 *
 * A loaded struct never changes. A reload builds a new one and swaps it in
 * (see front/config.h); requests in flight keep the generation they started
 * with through rules_ref()/rules_unref().
 */
#ifndef SLUICE_RULES_H
#define SLUICE_RULES_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#define RULES_ERR_MAX  512
#define RULES_NAME_MAX 64

/* A "host:port" to listen on, resolved. */
struct rules_addr {
	struct sockaddr_storage sa;
	socklen_t sa_len;
	char text[80]; /* as written, for logs: "0.0.0.0:8080" */
};

/* One upstream URL, "http://host[:port][/base]". */
struct rules_upstream {
	char *url;	 /* as written */
	char *host_port; /* "host:port" as written, for logs */
	char *base_path; /* "" or "/base" without a trailing slash */
	struct sockaddr_storage sa;
	socklen_t sa_len;
};

/* An address block for the deny list: IPv4 or IPv6, prefix length. */
struct rules_cidr {
	int family;	  /* AF_INET or AF_INET6 */
	uint8_t addr[16]; /* network byte order; IPv4 uses the first 4 */
	uint8_t prefix_len;
	char text[64];
};

enum rules_on_error {
	RULES_ON_ERROR_REJECT = 0,
	RULES_ON_ERROR_CONTINUE,
};

/* A list of hook names, "module.function". */
struct rules_hooks {
	char **names;
	size_t count;
};

struct rules_middleware {
	struct rules_hooks pre;
	char *auth_check; /* NULL when absent */
	struct rules_hooks post_key_auth;
	struct rules_hooks post;
	struct rules_hooks response;
	int timeout_ms; /* defaults to python.timeout_ms */
	enum rules_on_error on_error;
	int max_inflight;     /* default 8 */
	int queue;	      /* default 256 */
	int queue_timeout_ms; /* default 2000 */
	char *config_json;    /* `config:` as JSON text, "{}" when absent */
	/* `bundle: DIR`, a Tyk plugin bundle: the hook lists above come from
	 * DIR/manifest.json's custom_middleware and hold bare function names,
	 * looked up in the modules of its file_list. NULL when not a bundle. */
	char *bundle_dir;
	struct rules_hooks bundle_modules;
};

struct rules_api {
	char name[RULES_NAME_MAX]; /* [a-z0-9_-]+, unique */
	int index;		   /* position in rules.apis */
	char *listen_path;	   /* prefix, default "/" */
	bool strip_listen_path;
	char **hosts; /* exact "a.example" or wildcard "*.example" */
	size_t host_count;
	struct rules_upstream *upstreams; /* `upstream` is one of these */
	size_t upstream_count;
	struct rules_addr *listen; /* own listeners; API reachable only there */
	size_t listen_count;
	struct rules_middleware *middleware; /* NULL: a plain API */
	int line, col;			     /* where the entry starts */
	/* Plain, `hosts:` set, listen_path "/", and no other API on its
	 * listeners lists one of its hosts: the Host alone picks it. */
	bool host_only;
	/* `splice:` hand a stable route's connections to a relay after the
	 * first answer. Default: true with an own `listen:`, else false. */
	bool splice;
	unsigned rr; /* round-robin cursor: the one mutable field (atomic) */
};

enum rules_splice {
	RULES_SPLICE_AUTO = 0,
	RULES_SPLICE_SOCKMAP,
	RULES_SPLICE_PIPE,
	RULES_SPLICE_COPY,
};

enum rules_xdp_mode {
	RULES_XDP_NATIVE = 0,
	RULES_XDP_GENERIC,
};

enum rules_log_format {
	RULES_LOG_JSON = 0,
	RULES_LOG_COMBINED,
};

struct rules_limits {
	size_t header_bytes;	 /* 32768 */
	size_t body_bytes;	 /* 10485760 */
	int header_timeout_ms;	 /* 10000 */
	int idle_timeout_ms;	 /* 60000 */
	int upstream_connect_ms; /* 3000 */
	int upstream_timeout_ms; /* 30000 */
};

struct rules_bpf {
	char *pin_dir; /* "/sys/fs/bpf/sluice" */
	enum rules_splice splice;
	bool required;
	char **xdp_interfaces;
	size_t xdp_interface_count;
	enum rules_xdp_mode xdp_mode;
	struct rules_cidr *deny;
	size_t deny_count;
};

/* `python.store:` — where store_data/get_data keep their data. No redis
 * address: in sluiced's memory. */
struct rules_store {
	struct rules_addr redis;
	bool has_redis;
	int db;		   /* 0 */
	char *password;	   /* NULL: no AUTH */
	char *prefix;	   /* "coprocess-data:", as Tyk's */
	int timeout_ms;	   /* 1000 */
	bool shared_rates; /* rate limits in Redis too */
};

struct rules_python {
	char **path; /* prepended to sys.path; relative to the rules file */
	size_t path_count;
	int workers_min;    /* 2 */
	int workers_max;    /* 16 */
	int workers_idle_s; /* 30 */
	int concurrency;    /* 64 */
	int max_requests;   /* 10000 */
	int max_rss_mb;	    /* 512 */
	int timeout_ms;	    /* 5000 */
	struct rules_store store;
};

/* `access_log:` — off unless `path` is set. "-" is stderr. */
struct rules_access_log {
	char *path;
	enum rules_log_format format;
};

struct rules {
	char *file; /* the path it was loaded from */
	struct rules_addr *listen;
	size_t listen_count;
	struct rules_addr admin;
	bool has_admin;
	int threads; /* 0 = auto (online CPUs) */
	char *user;  /* NULL: keep the starting user */
	struct rules_limits limits;
	struct rules_bpf bpf;
	struct rules_python python;
	struct rules_access_log access_log;
	struct rules_api *apis;
	size_t api_count;
	bool has_middleware; /* some API has hooks: start the worker pool */

	int refs; /* atomic; see rules_ref() */
};

/* Load and validate FILE. On failure returns NULL and writes
 * "FILE:LINE:COL: message" (no trailing newline) into err. */
struct rules *rules_load(const char *file, char *err, size_t err_len);

/* Reference counting across threads. rules_load() returns one reference. */
struct rules *rules_ref(struct rules *rules);
void rules_unref(struct rules *rules);

/* "auto", "sockmap", "pipe" or "copy". */
const char *rules_splice_name(enum rules_splice mode);

/* Find an API by name; NULL when there is none. */
const struct rules_api *rules_find_api(const struct rules *rules,
				       const char *name);

#endif
