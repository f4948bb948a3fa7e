/* relay_probe: a small TCP proxy on user/front/relay, for tests/bpf/.
 *
 *   relay_probe [-v] [-c N] [-u N] [-L LEN] [-p PIN_DIR]
 *               MODE LISTEN_PORT UPSTREAM_PORT [RULES]
 *
 * Listens on 127.0.0.1:LISTEN_PORT (0: any free port), and for each
 * connection connects to 127.0.0.1:UPSTREAM_PORT and hands both sockets to
 * relay_start() in MODE (copy, pipe, sockmap, auto).
 *
 *   -c N    read N bytes from the client before the hand-over (they become
 *           pending_up: bytes the front already read)
 *   -u N    the same from the upstream (pending_down)
 *   -L LEN  body test: first move LEN bytes client -> upstream with
 *           relay_body_start(), then relay the rest of the connection
 *   -p DIR  pin dir for sockmap mode (default /sys/fs/bpf/sluice_probe_PID)
 *   RULES   a rules file for sbpf_open() instead of the built-in defaults
 *
 * Prints "listening PORT" when ready. SIGUSR1 prints "relays active=N
 * done=N failed_body=N". SIGTERM or SIGINT aborts every relay, closes the
 * BPF objects (removing the pins) and exits 0.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/bpf.h"
#include "common/log.h"
#include "common/rules.h"
#include "front/relay.h"

struct conn {
	struct conn *prev, *next;
	struct relay *relay;
	struct relay_body *body;
	int client, upstream;
};

static struct event_base *base;
static struct sbpf *bpf;
static enum rules_splice mode;
static int upstream_port;
static size_t pre_client, pre_upstream;
static uint64_t body_len;
static bool body_mode;
static struct conn conns = {.prev = &conns, .next = &conns};
static unsigned long active, finished, failed_body;

static void conn_unlink(struct conn *conn)
{
	conn->prev->next = conn->next;
	conn->next->prev = conn->prev;
	free(conn);
	active--;
}

static void relay_done(void *arg, const struct relay_counts *counts)
{
	(void)counts;
	finished++;
	conn_unlink(arg);
}

static int upstream_connect(void)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_port = htons(upstream_port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0)
		return -1;
	if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

/* Blocking read of exactly N bytes (5 s at most): the bytes a front would
 * have read before it handed the connection over. */
static int read_exact(int fd, struct evbuffer *out, size_t n)
{
	struct pollfd pfd = {.fd = fd, .events = POLLIN};
	char buf[4096];
	ssize_t got;

	while (n > 0) {
		if (poll(&pfd, 1, 5000) <= 0)
			return -1;
		got = recv(fd, buf, n < sizeof(buf) ? n : sizeof(buf),
			   MSG_DONTWAIT);
		if (got <= 0)
			return -1;
		evbuffer_add(out, buf, got);
		n -= got;
	}
	return 0;
}

static void conn_relay(struct conn *conn, struct evbuffer *up,
		       struct evbuffer *down, enum rules_splice how)
{
	conn->relay = relay_start(base, how, bpf, 0, conn->client,
				  conn->upstream, up, down, relay_done, conn);
	if (!conn->relay) {
		fprintf(stderr, "relay_start: %s\n", strerror(errno));
		close(conn->client);
		close(conn->upstream);
		conn_unlink(conn);
	}
}

static void body_done(void *arg, int err)
{
	struct conn *conn = arg;

	conn->body = NULL;
	if (err) {
		failed_body++;
		close(conn->client);
		close(conn->upstream);
		conn_unlink(conn);
		return;
	}
	conn_relay(conn, NULL, NULL, RULES_SPLICE_COPY);
}

static void conn_start(struct conn *conn)
{
	struct evbuffer *up = evbuffer_new(), *down = evbuffer_new();

	if (read_exact(conn->client, up, pre_client) < 0 ||
	    read_exact(conn->upstream, down, pre_upstream) < 0) {
		close(conn->client);
		close(conn->upstream);
		conn_unlink(conn);
	} else if (body_mode) {
		conn->body =
		    relay_body_start(base, conn->client, conn->upstream,
				     body_len, body_done, conn);
		if (!conn->body) {
			close(conn->client);
			close(conn->upstream);
			conn_unlink(conn);
		}
	} else {
		conn_relay(conn, up, down, mode);
	}
	evbuffer_free(up);
	evbuffer_free(down);
}

static void accept_cb(struct evconnlistener *lst, evutil_socket_t fd,
		      struct sockaddr *sa, int len, void *arg)
{
	struct conn *conn = calloc(1, sizeof(*conn));

	(void)lst;
	(void)sa;
	(void)len;
	(void)arg;
	if (!conn) {
		close(fd);
		return;
	}
	conn->client = fd;
	conn->upstream = upstream_connect();
	if (conn->upstream < 0) {
		close(fd);
		free(conn);
		return;
	}
	conn->next = &conns;
	conn->prev = conns.prev;
	conns.prev->next = conn;
	conns.prev = conn;
	active++;
	conn_start(conn);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
	(void)what;
	(void)arg;
	if (sig == SIGUSR1) {
		printf("relays active=%lu done=%lu failed_body=%lu\n", active,
		       finished, failed_body);
		fflush(stdout);
		return;
	}
	event_base_loopbreak(base);
}

static void stop_all(void)
{
	while (conns.next != &conns) {
		struct conn *conn = conns.next;

		if (conn->relay) {
			relay_abort(conn->relay);
		} else {
			relay_body_abort(conn->body);
			close(conn->client);
			close(conn->upstream);
		}
		conn_unlink(conn);
	}
}

static int open_bpf(const char *rules_file, const char *pin_dir)
{
	static struct rules defaults;
	struct rules *rules = &defaults;
	char err[512], pins[256];

	if (rules_file) {
		rules = rules_load(rules_file, err, sizeof(err));
		if (!rules) {
			fprintf(stderr, "%s\n", err);
			return -1;
		}
	} else {
		snprintf(pins, sizeof(pins), "/sys/fs/bpf/sluice_probe_%d",
			 (int)getpid());
		defaults.bpf.pin_dir = (char *)(pin_dir ? pin_dir : pins);
		defaults.bpf.splice = RULES_SPLICE_SOCKMAP;
	}
	bpf = sbpf_open(rules, err, sizeof(err));
	if (!bpf) {
		fprintf(stderr, "sbpf_open: %s\n", err);
		return -1;
	}
	return 0;
}

static int parse_mode(const char *name)
{
	static const char *const names[] = {"auto", "sockmap", "pipe", "copy"};

	for (int i = 0; i < 4; i++)
		if (strcmp(name, names[i]) == 0)
			return i;
	return -1;
}

static void raise_fd_limit(void)
{
	struct rlimit lim;

	if (getrlimit(RLIMIT_NOFILE, &lim) == 0) {
		lim.rlim_cur = lim.rlim_max;
		setrlimit(RLIMIT_NOFILE, &lim);
	}
}

static struct evconnlistener *listen_on(int port)
{
	struct sockaddr_in addr = {.sin_family = AF_INET,
				   .sin_port = htons(port),
				   .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
	struct evconnlistener *lst;
	socklen_t len = sizeof(addr);

	lst = evconnlistener_new_bind(
	    base, accept_cb, NULL,
	    LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE | LEV_OPT_CLOSE_ON_EXEC,
	    1024, (struct sockaddr *)&addr, sizeof(addr));
	if (!lst)
		return NULL;
	getsockname(evconnlistener_get_fd(lst), (struct sockaddr *)&addr, &len);
	printf("listening %d\n", ntohs(addr.sin_port));
	fflush(stdout);
	return lst;
}

static void usage(void)
{
	fprintf(stderr, "usage: relay_probe [-v] [-c N] [-u N] [-L LEN] "
			"[-p PIN_DIR] MODE LISTEN_PORT UPSTREAM_PORT "
			"[RULES]\n");
	exit(2);
}

int main(int argc, char **argv)
{
	const char *pin_dir = NULL;
	struct evconnlistener *lst;
	struct event *sigs[3];
	int sig_list[3] = {SIGTERM, SIGINT, SIGUSR1};
	int opt, m;

	while ((opt = getopt(argc, argv, "vc:u:L:p:")) != -1) {
		switch (opt) {
		case 'v':
			log_threshold = LOG_DEBUG;
			break;
		case 'c':
			pre_client = strtoul(optarg, NULL, 10);
			break;
		case 'u':
			pre_upstream = strtoul(optarg, NULL, 10);
			break;
		case 'L':
			body_mode = true;
			body_len = strtoull(optarg, NULL, 10);
			break;
		case 'p':
			pin_dir = optarg;
			break;
		default:
			usage();
		}
	}
	if (argc - optind < 3 || (m = parse_mode(argv[optind])) < 0)
		usage();
	mode = m;
	upstream_port = atoi(argv[optind + 2]);
	log_set_ident("relay_probe");
	signal(SIGPIPE, SIG_IGN);
	raise_fd_limit();

	if ((mode == RULES_SPLICE_SOCKMAP || mode == RULES_SPLICE_AUTO) &&
	    open_bpf(argc - optind > 3 ? argv[optind + 3] : NULL, pin_dir))
		return 1;
	base = event_base_new();
	lst = base ? listen_on(atoi(argv[optind + 1])) : NULL;
	if (!lst) {
		fprintf(stderr, "listen: %s\n", strerror(errno));
		return 1;
	}
	for (int i = 0; i < 3; i++) {
		sigs[i] = evsignal_new(base, sig_list[i], signal_cb, NULL);
		event_add(sigs[i], NULL);
	}

	event_base_dispatch(base);

	stop_all();
	evconnlistener_free(lst);
	for (int i = 0; i < 3; i++)
		event_free(sigs[i]);
	event_base_free(base);
	sbpf_close(bpf);
	return 0;
}
