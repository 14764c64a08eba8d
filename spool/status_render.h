/*
 * status_render.h - a status snapshot as plain data, and the two ways it is
 * shown: the text of MOUNT/.status and `spoolfs status`, and the JSON of
 * MOUNT/.status.json and `spoolfs status --json` (schema:
 * docs/status-schema.json, fields: docs/STATUS.md).
 *
 * A snapshot is filled either by the running daemon from its in-memory tree
 * (spool_status_snapshot(), live) or by the command line from the journal,
 * read-only (spool_status_from_journal(), see status.c).  Both render here,
 * so the daemon and the CLI print the same thing.  Rendering needs no lock
 * and no spool: the snapshot owns copies of everything it shows.
 *
 * Secrets: a snapshot holds names, URLs (url_display, never a password)
 * and error messages.  spool_status_redact() scrubs the configured
 * passwords out of every string once more before rendering, in case a
 * server echoed one back in an error.
 */
#ifndef SPOOL_STATUS_RENDER_H
#define SPOOL_STATUS_RENDER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/config.h"

#define SPOOL_STATUS_VERSION 1
#define SPOOL_STATUS_WIDTH 80		/* the text fits this many columns */

/* The four buckets a user counts files in. */
enum spool_status_bucket {
	SPOOL_BUCKET_PENDING = 0,	/* writing or queued (incl. waiting to retry) */
	SPOOL_BUCKET_UPLOADING,		/* a worker has it */
	SPOOL_BUCKET_UPLOADED,
	SPOOL_BUCKET_FAILED,		/* in DEST/.failed/ */
	SPOOL_BUCKET_COUNT,
};

struct spool_status_count {
	uint64_t files;
	uint64_t bytes;
};

/* One upload in flight. */
struct spool_status_upload {
	char *path;		/* relative to the destination root */
	char *target;		/* destination doing it (a fallback, or home) */
	bool meta;		/* only a remote rename / mtime, no content */
	int attempt;		/* 1 for the first try */
	uint64_t size;
	bool live;		/* sent/rate/eta below are known */
	uint64_t sent;		/* bytes sent so far */
	int64_t started_ms;	/* 0: unknown */
	uint64_t rate;		/* bytes/s, average since start; 0: unknown */
	int64_t eta_s;		/* -1: unknown */
};

struct spool_status_dest {
	char *name;
	char *url;		/* url_display: never a password */
	char *fallback;		/* NULL: none */
	struct spool_status_count count[SPOOL_BUCKET_COUNT];
	int64_t last_ok_ms;	/* last successful upload/rename, 0: none known */
	int64_t last_err_ms;	/* 0: none known */
	char *last_err;
	int64_t next_retry_ms;	/* earliest retry of a file waiting, 0: none */
	uint64_t waiting_retry;	/* files waiting for a retry (in pending) */
	uint64_t rate;		/* sum of its uploads' rates, bytes/s */
	struct spool_status_upload *uploads;
	size_t nuploads;
};

struct spool_status {
	int64_t now_ms;
	bool live;		/* from the running daemon, else the journal */
	bool daemon_running;	/* journal source: a daemon holds the spool */
	long pid;		/* live: the daemon's pid */
	int64_t started_ms;	/* live: when the daemon mounted */
	char *spool_dir;
	uint64_t used;		/* bytes of content not uploaded yet */
	uint64_t max_size;	/* quota ([spool] max_size), 0: none */
	uint64_t disk_free;	/* free bytes on the spool's filesystem */
	bool disk_known;
	struct spool_status_dest *dests;
	size_t ndests;
};

void spool_status_release(struct spool_status *st);

/* Replace every configured password found in the snapshot's strings. */
void spool_status_redact(struct spool_status *st,
			 const struct spoolfs_config *cfg);
/* The same for one malloc'd or stack string, in place. */
void spoolfs_redact(char *s, const struct spoolfs_config *cfg);

/* The human table (always fits SPOOL_STATUS_WIDTH columns). malloc'd. */
char *spool_status_render_text(const struct spool_status *st);
/* The JSON document, one object, newline-terminated.  malloc'd. */
char *spool_status_render_json(const struct spool_status *st);

/* "1.5 MiB", "0 B": into buf, returns buf. */
const char *spool_status_human_bytes(uint64_t n, char *buf, size_t len);
/* "4s", "2m05s", "1h02m", "3d04h": into buf, returns buf. */
const char *spool_status_human_duration(int64_t s, char *buf, size_t len);
/* Local "YYYY-MM-DD HH:MM:SS". */
const char *spool_status_human_time(int64_t ms, char *buf, size_t len);

/* A JSON string literal (with quotes) of s appended to a growing buffer:
 * control characters escaped, invalid UTF-8 bytes become U+FFFD. */
struct spool_sbuf {
	char *s;
	size_t len, cap;
	bool oom;
};
void spool_sbuf_printf(struct spool_sbuf *b, const char *fmt, ...)
	__attribute__((format(printf, 2, 3)));
void spool_sbuf_json_string(struct spool_sbuf *b, const char *s);
/* The string (never NULL unless out of memory); the buffer is reset. */
char *spool_sbuf_take(struct spool_sbuf *b);

#endif
