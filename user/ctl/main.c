/* sluicectl: a small client of sluiced's admin endpoint.
 *
 *   sluicectl [-a ADMIN] status|apis|workers|reload|top [-n N]
 *
 * ADMIN is "host:port", default 127.0.0.1:9901 or $SLUICE_ADMIN. Exit codes:
 * 0 done, 1 the endpoint is unreachable or refused the command, 2 usage.
 */
#include "ctl/client.h"
#include "ctl/json.h"
#include "ctl/top.h"
#include "ctl/view.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_DEFAULT "127.0.0.1:9901"

static void usage(FILE *out)
{
	fprintf(
	    out,
	    "usage: sluicectl [-a ADMIN] COMMAND\n"
	    "\n"
	    "  status       version, uptime, requests, pool and BPF summary\n"
	    "  apis         per-API requests, status classes, latency\n"
	    "  workers      the Python worker pool and per-API bulkheads\n"
	    "  reload       reload the rules file (like SIGHUP)\n"
	    "  top [-n N]   live view, refreshed each second; q quits\n"
	    "\n"
	    "  -a ADMIN     admin endpoint host:port (default %s,\n"
	    "               or $SLUICE_ADMIN)\n",
	    ADMIN_DEFAULT);
}

static int run_view(const char *addr,
		    void (*view)(FILE *out, const struct json *st))
{
	struct json *doc;
	char err[512];

	if (client_get_status(addr, &doc, err, sizeof(err)) < 0) {
		fprintf(stderr, "sluicectl: %s\n", err);
		return 1;
	}
	view(stdout, doc);
	json_free(doc);
	return 0;
}

/* POST /reload: 200 {"reloaded":true} or 400 {"error":"FILE:LINE:COL: .."}.
 * The rules path comes from /status so the user sees what was read. */
static int run_reload(const char *addr)
{
	struct client_reply reply;
	struct json *doc;
	char err[512];
	int code = 1;

	if (client_request(addr, "POST", "/reload", &reply, err, sizeof(err)) <
	    0) {
		fprintf(stderr, "sluicectl: %s\n", err);
		return 1;
	}
	doc = json_parse(reply.body, reply.body_len, err, sizeof(err));
	if (reply.status == 200 && json_bool(json_get(doc, "reloaded"), 0)) {
		json_free(doc);
		doc = NULL;
		client_get_status(addr, &doc, err, sizeof(err));
		printf("reloaded %s (reload %.0f)\n",
		       json_string(json_get(doc, "rules"), "the rules"),
		       json_number(json_get(doc, "reloads"), 0));
		code = 0;
	} else if (json_string(json_get(doc, "error"), NULL)) {
		fprintf(stderr, "sluicectl: reload failed: %s\n",
			json_string(json_get(doc, "error"), ""));
	} else {
		fprintf(stderr, "sluicectl: reload failed: HTTP %d: %.300s\n",
			reply.status, reply.body);
	}
	json_free(doc);
	client_reply_free(&reply);
	return code;
}

static int run_top(const char *addr, int argc, char **argv)
{
	int iterations = 0, opt;
	char *end;

	optind = 1;
	while ((opt = getopt(argc, argv, "n:")) != -1) {
		if (opt != 'n')
			return 2;
		iterations = (int)strtol(optarg, &end, 10);
		if (*end || iterations < 1) {
			fprintf(stderr,
				"sluicectl: top -n wants a count >= 1\n");
			return 2;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "sluicectl: top: unexpected '%s'\n",
			argv[optind]);
		return 2;
	}
	return top_run(addr, iterations);
}

int main(int argc, char **argv)
{
	const char *addr = getenv("SLUICE_ADMIN");
	const char *cmd;
	int opt;

	if (!addr || !*addr)
		addr = ADMIN_DEFAULT;
	while ((opt = getopt(argc, argv, "+a:h")) != -1) {
		switch (opt) {
		case 'a':
			addr = optarg;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (optind >= argc) {
		usage(stderr);
		return 2;
	}
	cmd = argv[optind];
	if (strcmp(cmd, "top") == 0)
		return run_top(addr, argc - optind, argv + optind);
	if (optind + 1 != argc) {
		fprintf(stderr, "sluicectl: %s takes no arguments\n", cmd);
		return 2;
	}
	if (strcmp(cmd, "status") == 0)
		return run_view(addr, view_status);
	if (strcmp(cmd, "apis") == 0)
		return run_view(addr, view_apis);
	if (strcmp(cmd, "workers") == 0)
		return run_view(addr, view_workers);
	if (strcmp(cmd, "reload") == 0)
		return run_reload(addr);
	fprintf(stderr, "sluicectl: unknown command '%s'\n", cmd);
	usage(stderr);
	return 2;
}
