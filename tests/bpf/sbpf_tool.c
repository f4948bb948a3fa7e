/* sbpf_tool: drive user/bpf/ without the front, for tests/bpf/.
 *
 *   sbpf_tool -c RULES [-u USER] [-v] [run | pair-test BYTES [PRE]]
 *   sbpf_tool [-p PIN_DIR] [-i IFACE]... [-g] [-D DENY_FILE] [-a API]...
 *             [-u USER] [-v] [run | pair-test BYTES [PRE]]
 *
 * The configuration is a rules file (-c), as sluiced reads it, or the bpf
 * keys given one by one. -u drops privileges after the open, as sluiced
 * does after binding its listeners.
 *
 * run (default): sbpf_open, print "ok" or "error: SENTENCE" on stdout,
 * then serve signals: HUP re-reads RULES (or DENY_FILE, one CIDR a line)
 * and calls sbpf_update ("updated"); USR1 prints the /status "bpf" object
 * and the metrics; TERM or INT calls sbpf_close and exits 0. A SIGKILL
 * leaves the pins and attachments as a crash would.
 *
 * pair-test BYTES [PRE]: open, splice two loopback TCP connections through
 * sluice_pairs, send BYTES each way (the first PRE of them queued before
 * the hand-over), check them, pause the pair and check that new bytes stay
 * in user space's reach, print "pair ok" with the per-socket counts and the
 * status, close.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "bpf/bpf.h"
#include "common/log.h"
#include "common/privs.h"
#include "common/rules.h"

#define MAX_LIST 64

static struct rules rules;
static struct rules *loaded; /* from -c, replaces `rules` */
static const char *rules_file;
static char *iface_list[MAX_LIST];
static struct rules_api api_list[MAX_LIST];
static const char *deny_file;

static int parse_cidr(const char *text, struct rules_cidr *cidr)
{
	char addr[128], *slash;
	int max;

	memset(cidr, 0, sizeof(*cidr));
	snprintf(cidr->text, sizeof(cidr->text), "%.63s", text);
	snprintf(addr, sizeof(addr), "%s", text);
	slash = strchr(addr, '/');
	if (slash)
		*slash = '\0';
	if (inet_pton(AF_INET, addr, cidr->addr) == 1) {
		cidr->family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, addr, cidr->addr) == 1) {
		cidr->family = AF_INET6;
		max = 128;
	} else {
		return -EINVAL;
	}
	cidr->prefix_len = slash ? atoi(slash + 1) : max;
	return cidr->prefix_len > max ? -EINVAL : 0;
}

/* The deny list: one CIDR a line; blank lines and #comments skipped. */
static int read_deny(void)
{
	static struct rules_cidr deny[1024];
	char line[128];
	size_t n = 0;
	FILE *f;

	rules.bpf.deny = deny;
	rules.bpf.deny_count = 0;
	if (!deny_file)
		return 0;
	f = fopen(deny_file, "r");
	if (!f)
		return -errno;
	while (n < 1024 && fgets(line, sizeof(line), f)) {
		line[strcspn(line, " \t\r\n#")] = '\0';
		if (!line[0])
			continue;
		if (parse_cidr(line, &deny[n])) {
			fprintf(stderr, "bad CIDR: %s\n", line);
			fclose(f);
			return -EINVAL;
		}
		n++;
	}
	fclose(f);
	rules.bpf.deny_count = n;
	return 0;
}

static void print_status(struct sbpf *bpf);

static int connected_pair(int listener, int *a, int *b)
{
	struct sockaddr_in sa;
	socklen_t len = sizeof(sa);

	getsockname(listener, (struct sockaddr *)&sa, &len);
	*a = socket(AF_INET, SOCK_STREAM, 0);
	if (*a < 0 || connect(*a, (struct sockaddr *)&sa, len))
		return -errno;
	*b = accept(listener, NULL, NULL);
	return *b < 0 ? -errno : 0;
}

/* Write BUF to WFD (from byte SENT on) while reading LEN bytes from RFD. */
static int transfer(int wfd, int rfd, const char *buf, char *got, size_t len,
		    size_t sent)
{
	size_t recvd = 0;
	struct pollfd p[2];
	ssize_t n;

	while (recvd < len) {
		p[0] = (struct pollfd){.fd = wfd,
				       .events = sent < len ? POLLOUT : 0};
		p[1] = (struct pollfd){.fd = rfd, .events = POLLIN};
		if (poll(p, 2, 5000) <= 0)
			return -ETIMEDOUT;
		if (p[0].revents & POLLOUT) {
			n = send(wfd, buf + sent, len - sent, MSG_DONTWAIT);
			if (n > 0)
				sent += n;
		}
		if (p[1].revents & POLLIN) {
			n = recv(rfd, got + recvd, len - recvd, MSG_DONTWAIT);
			if (n <= 0)
				return -EPIPE;
			recvd += n;
		}
	}
	return memcmp(buf, got, len) ? -EILSEQ : 0;
}

/* Out of the verdict, bytes from the client wait in proxy_a for user
 * space instead of reaching proxy_b. */
static int pause_check(struct sbpf *bpf, int client, int proxy_a, int proxy_b)
{
	char got[16] = "";
	ssize_t n;
	int ret;

	ret = sbpf_pair_pause(bpf, proxy_a, proxy_b);
	if (ret)
		return ret;
	if (send(client, "paused", 6, 0) != 6)
		return -EIO;
	usleep(50000);
	if (recv(proxy_b, got, sizeof(got), MSG_DONTWAIT) >= 0)
		return -EILSEQ; /* nothing may come out of the other side */
	n = recv(proxy_a, got, sizeof(got), MSG_DONTWAIT);
	return n == 6 && memcmp(got, "paused", 6) == 0 ? 0 : -EILSEQ;
}

/* client <-> proxy_a ... proxy_b <-> server, with proxy_a and proxy_b
 * spliced by the kernel. The first PRE bytes from the client are sent, and
 * wait in proxy_a's receive queue, before the pair enters the maps. */
static int pair_test(struct sbpf *bpf, size_t len, size_t pre)
{
	int lst, client = -1, proxy_a = -1, proxy_b = -1, server = -1, ret;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	uint64_t bytes_a = 0, bytes_b = 0;
	char *buf = malloc(len + 1), *got = malloc(len + 1);

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lst = socket(AF_INET, SOCK_STREAM, 0);
	if (!buf || !got || lst < 0 ||
	    bind(lst, (struct sockaddr *)&sa, sizeof(sa)) || listen(lst, 4))
		return -errno;
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(i * 7 + i / 251);

	ret = connected_pair(lst, &client, &proxy_a);
	if (!ret)
		ret = connected_pair(lst, &proxy_b, &server);
	pre = pre < len ? pre : len;
	if (!ret && pre && send(client, buf, pre, 0) != (ssize_t)pre)
		ret = -EIO;
	usleep(50000);
	if (!ret)
		ret = sbpf_pair_add(bpf, proxy_a, proxy_b, 0);
	if (!ret)
		ret = transfer(client, server, buf, got, len, pre);
	if (!ret)
		ret = transfer(server, client, buf, got, len, 0);
	if (!ret)
		ret = pause_check(bpf, client, proxy_a, proxy_b);
	if (!ret)
		ret = sbpf_pair_bytes(bpf, proxy_a, &bytes_a);
	if (!ret)
		ret = sbpf_pair_bytes(bpf, proxy_b, &bytes_b);
	sbpf_pair_remove(bpf, proxy_a, proxy_b);
	if (!ret) {
		printf("pair ok bytes_a=%llu bytes_b=%llu\n",
		       (unsigned long long)bytes_a,
		       (unsigned long long)bytes_b);
		print_status(bpf);
	} else
		printf("pair failed: %s\n", strerror(-ret));
	close(client);
	close(proxy_a);
	close(proxy_b);
	close(server);
	close(lst);
	free(buf);
	free(got);
	return ret;
}

/* Write from SERVER without reading at the client until the kernel pushes
 * back (EAGAIN for a while); the bytes written so far. */
static size_t fill_until_blocked(int server, const char *buf, size_t len)
{
	size_t sent = 0;
	int idle = 0;
	ssize_t n;

	while (sent < len && idle < 20) {
		n = send(server, buf + sent, len - sent, MSG_DONTWAIT);
		if (n > 0) {
			sent += n;
			idle = 0;
		} else {
			idle++;
			usleep(10000);
		}
	}
	return sent;
}

/* Forward what waits in FROM (held by the limit) to TO while the rest is
 * written by SERVER and read at CLIENT; true when CLIENT got all LEN bytes
 * of BUF in order. */
static bool finish_by_hand(int server, int from, int to, int client,
			   const char *buf, size_t len, size_t sent)
{
	char *got = malloc(len), chunk[65536];
	size_t recvd = 0, have = 0, off = 0;
	bool ok;

	while (got && recvd < len) {
		struct pollfd p[3] = {
		    {.fd = server, .events = sent < len ? POLLOUT : 0},
		    {.fd = from, .events = have ? 0 : POLLIN},
		    {.fd = client, .events = POLLIN},
		};
		ssize_t n;

		if (poll(p, 3, 5000) <= 0)
			break;
		if (p[0].revents & POLLOUT) {
			n = send(server, buf + sent, len - sent, MSG_DONTWAIT);
			sent += n > 0 ? n : 0;
		}
		if (!have) {
			n = recv(from, chunk, sizeof(chunk), MSG_DONTWAIT);
			have = n > 0 ? n : 0;
			off = 0;
		}
		if (have) {
			n = send(to, chunk + off, have, MSG_DONTWAIT);
			off += n > 0 ? n : 0;
			have -= n > 0 ? n : 0;
		}
		n = recv(client, got + recvd, len - recvd, MSG_DONTWAIT);
		recvd += n > 0 ? n : 0;
	}
	ok = got && recvd == len && memcmp(buf, got, len) == 0;
	if (!ok)
		fprintf(stderr, "limit-test: client got %zu of %zu bytes\n",
			recvd, len);
	free(got);
	return ok;
}

/* limit-test LIMIT BYTES: server -> client through the pair with the
 * server side limited to LIMIT redirected bytes, the client not reading:
 * how much the server can write before the kernel pushes back, then the
 * held rest forwarded by hand; everything must arrive in order. */
static int limit_test(struct sbpf *bpf, size_t limit, size_t len)
{
	int lst, client = -1, proxy_a = -1, proxy_b = -1, server = -1, ret;
	struct sockaddr_in sa = {.sin_family = AF_INET};
	char *buf = malloc(len);
	uint64_t redirected = 0;
	bool held = false;
	size_t blocked_at;

	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	lst = socket(AF_INET, SOCK_STREAM, 0);
	if (!buf || lst < 0 || bind(lst, (struct sockaddr *)&sa, sizeof(sa)) ||
	    listen(lst, 4))
		return -errno;
	for (size_t i = 0; i < len; i++)
		buf[i] = (char)(i * 13 + i / 4093);

	ret = connected_pair(lst, &client, &proxy_a);
	if (!ret)
		ret = connected_pair(lst, &proxy_b, &server);
	if (!ret)
		ret = sbpf_pair_add(bpf, proxy_a, proxy_b, 0);
	if (!ret)
		ret = sbpf_pair_limit(bpf, proxy_b, limit);
	blocked_at = ret ? 0 : fill_until_blocked(server, buf, len);
	if (!ret)
		ret = sbpf_pair_bytes(bpf, proxy_b, &redirected);
	if (!ret)
		ret = sbpf_pair_held(bpf, proxy_b, &held);
	if (!ret && !finish_by_hand(server, proxy_b, proxy_a, client, buf, len,
				    blocked_at))
		ret = -EILSEQ;
	sbpf_pair_remove(bpf, proxy_a, proxy_b);
	if (!ret)
		printf("limit ok written_before_block=%zu redirected=%llu "
		       "held=%d\n",
		       blocked_at, (unsigned long long)redirected, held);
	else
		printf("limit failed: %s\n", strerror(-ret));
	close(client);
	close(proxy_a);
	close(proxy_b);
	close(server);
	close(lst);
	free(buf);
	return ret;
}

static void print_status(struct sbpf *bpf)
{
	struct evbuffer *out = evbuffer_new();
	size_t len;

	sbpf_status_json(bpf, out);
	evbuffer_add(out, "\n", 1);
	sbpf_metrics(bpf, out);
	len = evbuffer_get_length(out);
	fwrite(evbuffer_pullup(out, len), 1, len, stdout);
	printf("end\n");
	fflush(stdout);
	evbuffer_free(out);
}

/* The configuration in force: the rules file's, or the one built from
 * the command line. HUP reads it again. */
static const struct rules *config(bool reread, char *err, size_t err_len)
{
	struct rules *fresh;

	if (!rules_file) {
		int ret = reread ? read_deny() : 0;

		snprintf(err, err_len, "cannot read %s: %s", deny_file,
			 strerror(-ret));
		return ret ? NULL : &rules;
	}
	if (!loaded || reread) {
		fresh = rules_load(rules_file, err, err_len);
		if (!fresh)
			return NULL;
		if (loaded)
			rules_unref(loaded);
		loaded = fresh;
	}
	return loaded;
}

static int serve(struct sbpf *bpf)
{
	char err[RULES_ERR_MAX];
	sigset_t set;
	int sig;

	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	for (;;) {
		if (sigwait(&set, &sig))
			return 1;
		if (sig == SIGUSR1) {
			print_status(bpf);
		} else if (sig == SIGHUP) {
			const struct rules *r = config(true, err, sizeof(err));
			int ret = r ? sbpf_update(bpf, r) : -EINVAL;

			if (!r)
				printf("update failed: %s\n", err);
			else if (ret)
				printf("update failed: %s\n", strerror(-ret));
			else
				printf("updated\n");
		} else {
			sbpf_close(bpf);
			printf("closed\n");
			return 0;
		}
	}
}

int main(int argc, char **argv)
{
	const struct rules *r;
	const char *user = NULL;
	char err[512];
	struct sbpf *bpf;
	sigset_t set;
	int opt, ret;

	setvbuf(stdout, NULL, _IOLBF, 0);
	log_set_ident("sbpf_tool");
	rules.bpf.pin_dir = "/sys/fs/bpf/sluice";
	rules.bpf.xdp_interfaces = iface_list;
	rules.apis = api_list;
	while ((opt = getopt(argc, argv, "c:p:i:gD:a:u:v")) != -1) {
		switch (opt) {
		case 'c':
			rules_file = optarg;
			break;
		case 'p':
			rules.bpf.pin_dir = optarg;
			break;
		case 'i':
			if (rules.bpf.xdp_interface_count < MAX_LIST)
				iface_list[rules.bpf.xdp_interface_count++] =
				    optarg;
			break;
		case 'g':
			rules.bpf.xdp_mode = RULES_XDP_GENERIC;
			break;
		case 'D':
			deny_file = optarg;
			break;
		case 'a':
			if (rules.api_count < MAX_LIST) {
				struct rules_api *api =
				    &api_list[rules.api_count];

				snprintf(api->name, sizeof(api->name), "%s",
					 optarg);
				api->index = (int)rules.api_count++;
			}
			break;
		case 'u':
			user = optarg;
			rules.user = optarg;
			break;
		case 'v':
			log_threshold = LOG_DEBUG;
			break;
		default:
			fprintf(stderr,
				"usage: see the comment in sbpf_tool.c\n");
			return 2;
		}
	}
	if (read_deny())
		return 2;
	r = config(false, err, sizeof(err));
	if (!r) {
		printf("rules: %s\n", err);
		return 2;
	}

	/* Signals are taken with sigwait; block them before anything. */
	sigemptyset(&set);
	sigaddset(&set, SIGHUP);
	sigaddset(&set, SIGUSR1);
	sigaddset(&set, SIGTERM);
	sigaddset(&set, SIGINT);
	sigprocmask(SIG_BLOCK, &set, NULL);

	bpf = sbpf_open(r, err, sizeof(err));
	if (!bpf) {
		printf("error: %s\n", err);
		return 1;
	}
	if (!user && r->user)
		user = r->user;
	if (user && privs_drop(user)) {
		sbpf_close(bpf);
		return 1;
	}
	printf("ok\n");

	if (optind + 2 < argc && strcmp(argv[optind], "limit-test") == 0) {
		ret = limit_test(bpf, strtoul(argv[optind + 1], NULL, 0),
				 strtoul(argv[optind + 2], NULL, 0));
		sbpf_close(bpf);
		return ret ? 1 : 0;
	}
	if (optind < argc && strcmp(argv[optind], "pair-test") == 0) {
		size_t len = 65536, pre = 0;

		if (optind + 1 < argc)
			len = strtoul(argv[optind + 1], NULL, 0);
		if (optind + 2 < argc)
			pre = strtoul(argv[optind + 2], NULL, 0);
		ret = pair_test(bpf, len, pre);
		sbpf_close(bpf);
		return ret ? 1 : 0;
	}
	return serve(bpf);
}
