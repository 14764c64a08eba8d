/*
 * log.c - see log.h.  Lines go to stderr prefixed "spoolfs: " (with the
 * level for warnings and errors) or to syslog with the daemon facility.
 */
#include "log.h"

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

bool spoolfs_log_debug_enabled(void)
{
	return log_debug_on;
}

void spoolfs_log(enum spoolfs_log_level level, const char *fmt, ...)
{
	const char *prefix = "";
	va_list ap;

	va_start(ap, fmt);
	if (log_syslog) {
		vsyslog((int)level, fmt, ap);
	} else {
		if (level == SPOOLFS_LOG_ERROR)
			prefix = "error: ";
		else if (level == SPOOLFS_LOG_WARN)
			prefix = "warning: ";
		pthread_mutex_lock(&log_lock);
		fprintf(stderr, "spoolfs: %s", prefix);
		vfprintf(stderr, fmt, ap);
		fputc('\n', stderr);
		pthread_mutex_unlock(&log_lock);
	}
	va_end(ap);
}
