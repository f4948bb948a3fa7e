/* The floor under a hook visit: one message to another process and one
 * back, over a unix SOCK_SEQPACKET pair as between sluiced and a worker,
 * with nothing done on either side.
 *
 *   round_trip COUNT [CPU]
 *
 * With CPU both processes are pinned to it (the wake-ups stay on one core);
 * without, the scheduler places them. Prints one line of JSON: wall time
 * and each side's CPU per round trip, in microseconds. tests/bench/hooks.py
 * prints it beside the cost of a no-op hook. */
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* About the sizes of a small call and its empty result. */
#define CALL_BYTES   200
#define RESULT_BYTES 40

static double cpu_seconds(int who)
{
	struct rusage ru;

	getrusage(who, &ru);
	return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6 +
	       (double)ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}

static double now_seconds(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The "worker": answer every message until end of file. */
static void echo_loop(int fd)
{
	char buf[CALL_BYTES];

	while (recv(fd, buf, sizeof(buf), 0) > 0)
		if (send(fd, buf, RESULT_BYTES, 0) < 0)
			break;
	_exit(0);
}

int main(int argc, char **argv)
{
	char buf[CALL_BYTES] = {0};
	long count = argc > 1 ? atol(argv[1]) : 0;
	double start, wall;
	int sv[2], status;
	pid_t pid;

	if (count <= 0) {
		fprintf(stderr, "usage: %s COUNT [CPU]\n", argv[0]);
		return 2;
	}
	if (argc > 2) {
		cpu_set_t set;

		CPU_ZERO(&set);
		CPU_SET(atoi(argv[2]), &set);
		if (sched_setaffinity(0, sizeof(set), &set) < 0) {
			perror("round_trip: sched_setaffinity");
			return 1;
		}
	}
	if (socketpair(AF_UNIX, SOCK_SEQPACKET, 0, sv) < 0) {
		perror("round_trip: socketpair");
		return 1;
	}
	pid = fork();
	if (pid < 0) {
		perror("round_trip: fork");
		return 1;
	}
	if (pid == 0) {
		close(sv[0]);
		echo_loop(sv[1]);
	}
	close(sv[1]);

	start = now_seconds();
	for (long i = 0; i < count; i++) {
		if (send(sv[0], buf, CALL_BYTES, 0) < 0 ||
		    recv(sv[0], buf, sizeof(buf), 0) <= 0) {
			perror("round_trip: the echo process went away");
			return 1;
		}
	}
	wall = now_seconds() - start;
	close(sv[0]);
	if (waitpid(pid, &status, 0) < 0 || !WIFEXITED(status)) {
		fprintf(stderr, "round_trip: the echo process did not exit\n");
		return 1;
	}
	printf("{\"wall_us\": %.2f, \"caller_cpu_us\": %.2f, "
	       "\"echo_cpu_us\": %.2f}\n",
	       wall * 1e6 / count, cpu_seconds(RUSAGE_SELF) * 1e6 / count,
	       cpu_seconds(RUSAGE_CHILDREN) * 1e6 / count);
	return 0;
}
