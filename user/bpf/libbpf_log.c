/* libbpf's and libxdp's own messages, through sluice's logger.
 *
 * Both libraries print multi-line diagnostics at warning level for failures
 * that sbpf_open() turns into one sentence of its own (a load refused for
 * lack of privilege, libxdp probing for its dispatcher and falling back).
 * While sbpf_open() runs their warnings therefore go to the debug log;
 * afterwards they are warnings.
 */
#include <bpf/libbpf.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <xdp/libxdp.h>

#include "bpf/internal.h"
#include "common/log.h"

static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;
static bool capturing;
static bool dispatcher_refused;
static char dispatcher_reason[256];

/* Format one message, drop the trailing newline. */
static void format_line(char *line, size_t len, const char *fmt, va_list ap)
{
	size_t n;

	vsnprintf(line, len, fmt, ap);
	n = strlen(line);
	while (n > 0 && (line[n - 1] == '\n' || line[n - 1] == ' '))
		line[--n] = '\0';
}

/* Most messages already name their library ("libbpf: ..."). */
static const char *unprefixed(const char *lib, const char *line)
{
	size_t lib_len = strlen(lib);

	if (strncmp(line, lib, lib_len) == 0 && line[lib_len] == ':')
		line += lib_len + 1 + (line[lib_len + 1] == ' ');
	return line;
}

static void route(const char *lib, bool warn, const char *line)
{
	line = unprefixed(lib, line);
	if (warn) {
		pthread_mutex_lock(&log_lock);
		warn = !capturing;
		pthread_mutex_unlock(&log_lock);
	}
	if (warn)
		log_warn("%s: %s", lib, line);
	else
		log_debug("%s: %s", lib, line);
}

static int libbpf_print(enum libbpf_print_level level, const char *fmt,
			va_list ap)
{
	char line[2048];

	if (level == LIBBPF_DEBUG && log_threshold < LOG_DEBUG)
		return 0;
	format_line(line, sizeof(line), fmt, ap);
	route("libbpf", level == LIBBPF_WARN, line);
	return 0;
}

/* libxdp explains a dispatcher refusal in one message and announces the
 * fallback in the next; keep the explanation for sbpf's own log line. */
static void note_dispatcher(const char *line)
{
	pthread_mutex_lock(&log_lock);
	if (strstr(line, "ompatibility check for dispatcher") ||
	    strstr(line, "Failed to load dispatcher"))
		snprintf(dispatcher_reason, sizeof(dispatcher_reason), "%s",
			 line);
	if (strstr(line, "without dispatcher"))
		dispatcher_refused = true;
	pthread_mutex_unlock(&log_lock);
}

static int libxdp_print(enum libxdp_print_level level, const char *fmt,
			va_list ap)
{
	char line[512];

	format_line(line, sizeof(line), fmt, ap);
	note_dispatcher(unprefixed("libxdp", line));
	route("libxdp", level == LIBXDP_WARN, line);
	return 0;
}

void sbpf_log_init(void)
{
	libbpf_set_print(libbpf_print);
	libxdp_set_print(libxdp_print);
}

void sbpf_log_capture_begin(void)
{
	pthread_mutex_lock(&log_lock);
	capturing = true;
	dispatcher_refused = false;
	dispatcher_reason[0] = '\0';
	pthread_mutex_unlock(&log_lock);
}

void sbpf_log_capture_end(void)
{
	pthread_mutex_lock(&log_lock);
	capturing = false;
	pthread_mutex_unlock(&log_lock);
}

bool sbpf_log_dispatcher_refused(char *reason, size_t reason_len)
{
	bool refused;

	pthread_mutex_lock(&log_lock);
	refused = dispatcher_refused;
	snprintf(reason, reason_len, "%s", dispatcher_reason);
	pthread_mutex_unlock(&log_lock);
	return refused;
}
