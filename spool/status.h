/*
 * status.h - status from the journal, read-only, for the command line
 * (`spoolfs status`, `spoolfs log`), whether a daemon runs or not.
 *
 * The live snapshot of a running daemon is spool_status_snapshot() in
 * spool.h; both fill a struct spool_status (status_render.h).
 */
#ifndef SPOOL_STATUS_H
#define SPOOL_STATUS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/config.h"
#include "status_render.h"

struct spool_ro;

/*
 * Open SPOOL_DIR/journal.db read-only (SQLITE_OPEN_READONLY): never writes,
 * never takes the spool lock, works beside a running daemon.  -1 with a
 * message when there is no journal or it cannot be read.
 */
int spool_ro_open(struct spool_ro **rp, const char *spool_dir, char *errbuf,
		  size_t errlen);
void spool_ro_close(struct spool_ro *r);

/* Is a daemon holding SPOOL_DIR's lock?  (Looked up in /proc/locks, so
 * asking takes no lock that could make a starting daemon fail.) */
bool spool_daemon_running(const char *spool_dir);

/* Fill ST from the journal: counts, bytes, health from the event log.
 * daemon_running says whether journal "uploading" rows are real. */
int spool_ro_status(struct spool_ro *r, const struct spoolfs_config *cfg,
		    bool daemon_running, struct spool_status *st);

/* Add to ST's destinations the health the event log knows and ST lacks
 * (the daemon only knows what happened since it started). */
void spool_ro_health(struct spool_ro *r, struct spool_status *st);

struct spool_event {
	int64_t id;
	int64_t time_ms;
	int64_t node;
	const char *dest;
	const char *path;
	const char *kind;	/* uploaded, renamed, retry, fallback, failed */
	const char *msg;
};

/* The current journal row of a file, for `spoolfs log`. */
struct spool_ro_file {
	int64_t id;
	bool found;
	bool failed_area;
	int state;
	int attempts;
	uint64_t size;
	char *error;
	char *rdest, *rpath;
};
void spool_ro_file_release(struct spool_ro_file *f);

/*
 * Events of the file DEST/REL (REL may start with ".failed/"): every event
 * of the journal row now at that path and of rows that had that path in an
 * event, oldest first.  f is filled with the current row (found = false
 * when the file is gone).  With dest NULL: the last LIMIT events of all.
 * Returns the number of events or -1.
 */
int spool_ro_events(struct spool_ro *r, const struct spoolfs_config *cfg,
		    const char *dest, const char *rel, int limit,
		    struct spool_ro_file *f,
		    int (*fn)(void *arg, const struct spool_event *ev),
		    void *arg);

#endif
