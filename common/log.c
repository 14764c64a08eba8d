/*
 * log.c - see log.h.  Lines go to stderr prefixed "spoolfs: " (with the
 * level for warnings and errors) or to syslog with the daemon facility.
 */
#include "log.h"

#include "err.h"

#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <syslog.h>

static bool log_syslog;
static bool log_debug_on;
static pthread_mutex_t log_lock = PTHREAD_MUTEX_INITIALIZER;

void spoolfs_log_init(bool to_syslog, bool debug)
{
	log_syslog = to_syslog;
	log_debug_on = debug;
	if (to_syslog)
		openlog("spoolfs", LOG_PID, LOG_DAEMON);
}

char *spoolfs_escape_ctl(char *dst, size_t cap, const char *src)
{
	static const char hex[] = "0123456789abcdef";
	size_t o = 0;

	if (cap == 0)
		return dst;
	for (; *src; src++) {
		unsigned char ch = (unsigned char)*src;

		if (ch >= 0x20 && ch != 0x7f) {
			if (o + 1 >= cap)
				break;
			dst[o++] = (char)ch;
			continue;
		}
		if (o + 4 >= cap)
			break;
		dst[o++] = '\\';
		dst[o++] = 'x';
		dst[o++] = hex[ch >> 4];
		dst[o++] = hex[ch & 15];
	}
	dst[o] = '\0';
	return dst;
}

bool spoolfs_log_debug_enabled(void)
{
	return log_debug_on;
}

void spoolfs_log(enum spoolfs_log_level level, const char *fmt, ...)
{
	const char *prefix = "";
	char full[16384], line[4096], safe[4 * sizeof(line)];
	va_list ap;

	/* one line per event, whatever the names in it contain; a line too
	 * long keeps its end, which says what happened */
	va_start(ap, fmt);
	vsnprintf(full, sizeof(full), fmt, ap);
	va_end(ap);
	spoolfs_fit(line, sizeof(line), full);
	spoolfs_escape_ctl(safe, sizeof(safe), line);
	if (log_syslog) {
		syslog((int)level, "%s", safe);
	} else {
		if (level == SPOOLFS_LOG_ERROR)
			prefix = "error: ";
		else if (level == SPOOLFS_LOG_WARN)
			prefix = "warning: ";
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "spoolfs: %s%s\n", prefix, safe);
		pthread_mutex_unlock(&log_lock);
	}
}
