/* Logging: one line per event on stderr, `key=value` fields.
 *
 *   log_info("listener open addr=%s thread=%d", addr, id);
 *
 * Every line starts with a timestamp, the level and the process name, so the
 * lines of sluiced and of its workers interleave readably in one journal.
 */
#ifndef SLUICE_LOG_H
#define SLUICE_LOG_H

#include <stdarg.h>

enum log_level {
	LOG_ERROR = 0,
	LOG_WARN,
	LOG_INFO,
	LOG_DEBUG,
};

extern enum log_level log_threshold;

/* Name printed on each line ("sluiced", "worker"). */
void log_set_ident(const char *ident);

/* Parse "error", "warn", "info" or "debug"; -1 when it is none of them. */
int log_level_parse(const char *name);

void log_write(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
void log_vwrite(enum log_level level, const char *fmt, va_list ap)
    __attribute__((format(printf, 2, 0)));

#define log_error(...) log_write(LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_write(LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_write(LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                         \
	do {                                                                   \
		if (log_threshold >= LOG_DEBUG)                                \
			log_write(LOG_DEBUG, __VA_ARGS__);                     \
	} while (0)

#endif
