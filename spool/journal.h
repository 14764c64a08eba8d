/*
 * journal.h - the sqlite journal: every node of the namespace, its upload
 * state, and an event log.
 *
 * The journal is SPOOL/journal.db in WAL mode.  It mirrors the in-memory
 * tree of spool.c row for row (one row per file or directory, linked by
 * parent id), so that after a crash the tree, every file's state and where
 * its content is on the destination come back exactly.
 *
 * Durability: writes commit with synchronous=NORMAL (they survive a killed
 * daemon, not a power cut); spool_journal_sync() fsyncs the WAL, which makes
 * every commit so far durable.  close() of a written file commits its row
 * after fsyncing the data, then syncs; or, for a small file, commits its
 * content too (the inline table) and syncs, with no fsync of the data file:
 * one flush of the disk per close instead of two or three.  The mount
 * after a crash writes such content back into the data file (spool.c).
 *
 * Threads: the journal has no lock of its own; spool.c calls it only with
 * spool->lock held, except spool_journal_sync(), which may run without it
 * (so that other threads go on while the disk flushes).
 */
#ifndef SPOOL_JOURNAL_H
#define SPOOL_JOURNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct spool_journal;

enum spool_state {
	SPOOL_WRITING = 0,
	SPOOL_QUEUED = 1,
	SPOOL_UPLOADING = 2,
	SPOOL_UPLOADED = 3,
	SPOOL_FAILED = 4,
};

enum spool_area {
	SPOOL_AREA_MAIN = 0,	/* DEST/... */
	SPOOL_AREA_FAILED = 1,	/* DEST/.failed/... */
	SPOOL_AREA_TRASH = 2,	/* unlinked, remote delete pending (delete_remote) */
};

/* One row; strings are owned by whoever filled the struct. */
struct spool_row {
	int64_t id;
	int64_t parent;		/* 0: the area's root */
	const char *dest;	/* home destination (namespace) */
	int area;
	const char *name;
	bool is_dir;
	int state;
	uint64_t size;
	int64_t mtime_ns, ctime_ns;
	uint32_t mode, uid, gid;
	int attempts;
	const char *error;	/* last error, NULL if none */
	int64_t ready_at;	/* ms since the epoch */
	uint64_t gen;		/* content generation */
	bool has_data;		/* SPOOL/data/ID holds the content */
	const char *target;	/* destination being tried (fallback), NULL = dest */
	const char *rdest;	/* where the content is on a server, NULL = nowhere */
	const char *rpath;
	uint64_t rgen;
	int64_t rmtime;
	const char *rtmp;	/* partial upload (temp name) on tmp_dest, for resume */
	const char *tmp_dest;
	uint64_t tmp_gen;
	bool open;		/* a write handle was still open at this save */
	const char *mv_to;	/* a rename of the copy to this may be done */
	const char *tmp_to;	/* a rename of rtmp to this may be done */
};

int spool_journal_open(struct spool_journal **jp, const char *path,
		       char *errbuf, size_t errlen);
void spool_journal_close(struct spool_journal *j);

/* Call fn for every row, parents before children (ordered by id works
 * because a parent always exists before its child... except after a rename
 * into a newer directory, so callers must link in a second pass). */
int spool_journal_load(struct spool_journal *j,
		       int (*fn)(void *arg, const struct spool_row *row),
		       void *arg);

/* Insert a row; sets row->id. */
int spool_journal_insert(struct spool_journal *j, struct spool_row *row);
/* Write every column of an existing row. */
int spool_journal_save(struct spool_journal *j, const struct spool_row *row);
/* Make every commit so far durable: 0 or -errno.  Needs no lock. */
int spool_journal_sync(struct spool_journal *j);
int spool_journal_delete(struct spool_journal *j, int64_t id);

/*
 * The inline table: the content of a small file as its close committed it,
 * kept while the data file is not known to be on disk (spool.c).
 */
int spool_journal_inline_put(struct spool_journal *j, int64_t id,
			     const void *data, size_t len);
int spool_journal_inline_delete(struct spool_journal *j, int64_t id);
int spool_journal_inline_load(struct spool_journal *j,
			      int (*fn)(void *arg, int64_t id,
					const void *data, size_t len),
			      void *arg);
int spool_journal_inline_clear(struct spool_journal *j);
/* Batch several writes into one transaction (e.g. a directory rename). */
/*
 * Tests only: the process dies (_exit(0), as at a kill -9) when the
 * journal is about to make its COMMIT-th commit from now: what the journal
 * holds then is exactly COMMIT - 1 commits on.  0 turns it off.
 */
void spool_journal_die_at(struct spool_journal *j, int commit);
int spool_journal_begin(struct spool_journal *j);
int spool_journal_commit(struct spool_journal *j);

/* Append to the event log: kind is "queued", "uploaded", "retry", ... */
int spool_journal_event(struct spool_journal *j, int64_t node, const char *dest,
			const char *path, const char *kind, const char *msg);

/* The last sqlite error, for messages. */
const char *spool_journal_errmsg(struct spool_journal *j);
/* The last sqlite error as a negative errno (-ENOSPC for SQLITE_FULL). */
int spool_journal_errno(struct spool_journal *j);

const char *spool_state_name(int state);

/*
 * The state machine, in one place:
 *   writing   -> queued (close) | failed (crash recovery, incomplete)
 *   queued    -> uploading | writing (rewritten) | uploaded (already in
 *                sync) | failed (nothing left to try)
 *   uploading -> uploaded | queued (retry, cancel) | writing | failed
 *   uploaded  -> queued (renamed, touched) | writing (rewritten)
 *   failed    -> queued (mv out of .failed/)
 * Staying in a state is always allowed.
 */
bool spool_state_transition_ok(int from, int to);

#endif
