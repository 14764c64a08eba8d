/*
 * log.h - daemon logging: stderr in the foreground, syslog otherwise.
 *
 * One line per event, lowercase, naming the destination and the file.
 * Never log a password: callers pass url_display, never raw credentials.
 */
#ifndef SPOOLFS_LOG_H
#define SPOOLFS_LOG_H

#include <stdbool.h>
#include <stddef.h>

enum spoolfs_log_level {
	SPOOLFS_LOG_ERROR = 3,	/* LOG_ERR */
	SPOOLFS_LOG_WARN = 4,	/* LOG_WARNING */
	SPOOLFS_LOG_INFO = 6,	/* LOG_INFO */
	SPOOLFS_LOG_DEBUG = 7,	/* LOG_DEBUG: only with -d */
};

/* to_syslog: after daemonizing.  debug: let SPOOLFS_LOG_DEBUG through. */
void spoolfs_log_init(bool to_syslog, bool debug);
bool spoolfs_log_debug_enabled(void);

/*
 * Copy SRC to DST (CAP bytes, always terminated) with control characters
 * written as \xNN: a file name may contain a newline, and must not be
 * able to forge a log line or an error message.  Returns DST.
 */
char *spoolfs_escape_ctl(char *dst, size_t cap, const char *src);

void spoolfs_log(enum spoolfs_log_level level, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));

#define log_error(...) spoolfs_log(SPOOLFS_LOG_ERROR, __VA_ARGS__)
#define log_warn(...) spoolfs_log(SPOOLFS_LOG_WARN, __VA_ARGS__)
#define log_info(...) spoolfs_log(SPOOLFS_LOG_INFO, __VA_ARGS__)
#define log_debug(...)                                                  \
	do {                                                            \
		if (spoolfs_log_debug_enabled())                        \
			spoolfs_log(SPOOLFS_LOG_DEBUG, __VA_ARGS__);    \
	} while (0)

#endif
