/*
 * journal.c - the sqlite journal (see journal.h for what it holds and its
 * durability rules).
 *
 * One connection, prepared statements kept for the life of the journal.
 * Every row write is a whole-row REPLACE: the nodes table is small per row
 * and writing all columns keeps the tree and the journal from drifting.
 */
#include "journal.h"

#include "../common/log.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCHEMA_VERSION 4

struct spool_journal {
	sqlite3 *db;
	sqlite3_stmt *st_insert;
	sqlite3_stmt *st_save;
	sqlite3_stmt *st_delete;
	sqlite3_stmt *st_event;
	sqlite3_stmt *st_inline_put;
	sqlite3_stmt *st_inline_delete;
	int walfd;		/* the -wal file, for spool_journal_sync() */
	int64_t next_id;	/* the id the next insert gets */
	int depth;		/* nesting of spool_journal_begin() */
	int die_at;		/* tests: _exit() at this commit (0: never) */
	int last_err;		/* sqlite code of the last failed write */
	char last_msg[256];
};

static const char schema[] =
	"CREATE TABLE IF NOT EXISTS nodes ("
	" id INTEGER PRIMARY KEY,"
	" parent INTEGER NOT NULL,"
	" dest TEXT NOT NULL,"
	" area INTEGER NOT NULL,"
	" name TEXT NOT NULL,"
	" is_dir INTEGER NOT NULL,"
	" state INTEGER NOT NULL,"
	" size INTEGER NOT NULL,"
	" mtime_ns INTEGER NOT NULL,"
	" ctime_ns INTEGER NOT NULL,"
	" mode INTEGER NOT NULL,"
	" uid INTEGER NOT NULL,"
	" gid INTEGER NOT NULL,"
	" attempts INTEGER NOT NULL,"
	" error TEXT,"
	" ready_at INTEGER NOT NULL,"
	" gen INTEGER NOT NULL,"
	" has_data INTEGER NOT NULL,"
	" target TEXT,"
	" rdest TEXT,"
	" rpath TEXT,"
	" rgen INTEGER NOT NULL,"
	" rmtime INTEGER NOT NULL,"
	" rtmp TEXT,"
	" tmp_dest TEXT,"
	" tmp_gen INTEGER NOT NULL,"
	" open INTEGER NOT NULL,"
	" mv_to TEXT,"
	" tmp_to TEXT);"
	"CREATE TABLE IF NOT EXISTS events ("
	" id INTEGER PRIMARY KEY,"
	" time_ms INTEGER NOT NULL,"
	" node INTEGER NOT NULL,"
	" dest TEXT NOT NULL,"
	" path TEXT NOT NULL,"
	" kind TEXT NOT NULL,"
	" msg TEXT);"
	"CREATE INDEX IF NOT EXISTS events_node ON events(node);"
	/* schema 4: the content of small files, committed with their row */
	"CREATE TABLE IF NOT EXISTS inline ("
	" id INTEGER PRIMARY KEY,"
	" data BLOB NOT NULL);";

#define COLS "id, parent, dest, area, name, is_dir, state, size, mtime_ns, " \
	"ctime_ns, mode, uid, gid, attempts, error, ready_at, gen, has_data, " \
	"target, rdest, rpath, rgen, rmtime, rtmp, tmp_dest, tmp_gen, open, " \
	"mv_to, tmp_to"

const char *spool_state_name(int state)
{
	static const char *const names[] = {
		"writing", "queued", "uploading", "uploaded", "failed",
	};

	if (state < 0 || state > SPOOL_FAILED)
		return "unknown";
	return names[state];
}

bool spool_state_transition_ok(int from, int to)
{
#define B(s) (1u << (s))
	static const unsigned int allowed[] = {
		[SPOOL_WRITING] = B(SPOOL_QUEUED) | B(SPOOL_FAILED),
		[SPOOL_QUEUED] = B(SPOOL_UPLOADING) | B(SPOOL_WRITING) |
				 B(SPOOL_UPLOADED) | B(SPOOL_FAILED),
		[SPOOL_UPLOADING] = B(SPOOL_UPLOADED) | B(SPOOL_QUEUED) |
				    B(SPOOL_WRITING) | B(SPOOL_FAILED),
		[SPOOL_UPLOADED] = B(SPOOL_QUEUED) | B(SPOOL_WRITING),
		[SPOOL_FAILED] = B(SPOOL_QUEUED),
	};
#undef B
	if (from < 0 || from > SPOOL_FAILED || to < 0 || to > SPOOL_FAILED)
		return false;
	return from == to || (allowed[from] & (1u << to));
}

const char *spool_journal_errmsg(struct spool_journal *j)
{
	if (j && j->last_err)
		return j->last_msg;
	return j && j->db ? sqlite3_errmsg(j->db) : "no journal";
}

int spool_journal_errno(struct spool_journal *j)
{
	int rc = j && j->last_err ? j->last_err : SQLITE_ERROR;

	switch (rc & 0xff) {
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_READONLY:
		return -EROFS;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static int exec(struct spool_journal *j, const char *sql)
{
	return sqlite3_exec(j->db, sql, NULL, NULL, NULL) == SQLITE_OK ? 0 : -1;
}

static int prepare(struct spool_journal *j, sqlite3_stmt **st, const char *sql)
{
	return sqlite3_prepare_v3(j->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st,
				  NULL) == SQLITE_OK ? 0 : -1;
}

int spool_journal_open(struct spool_journal **jp, const char *path,
		       char *errbuf, size_t errlen)
{
	struct spool_journal *j;
	int version = 0;
	sqlite3_stmt *st;

	*jp = NULL;
	j = calloc(1, sizeof(*j));
	if (!j) {
		snprintf(errbuf, errlen, "out of memory");
		return -1;
	}
	j->walfd = -1;
	if (sqlite3_open_v2(path, &j->db,
			    SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE |
			    SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot open journal '%s': %s", path,
			 j->db ? sqlite3_errmsg(j->db) : "out of memory");
		goto out_close;
	}
	chmod(path, 0600);
	sqlite3_busy_timeout(j->db, 5000);
	if (exec(j, "PRAGMA journal_mode=WAL") < 0 ||
	    exec(j, "PRAGMA synchronous=NORMAL") < 0 ||
	    exec(j, "PRAGMA foreign_keys=OFF") < 0)
		goto out_sqlerr;
	if (sqlite3_prepare_v2(j->db, "PRAGMA user_version", -1, &st, NULL) !=
	    SQLITE_OK)
		goto out_sqlerr;
	if (sqlite3_step(st) == SQLITE_ROW)
		version = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	if (version > SCHEMA_VERSION) {
		snprintf(errbuf, errlen,
			 "journal '%s' was written by a newer spoolfs "
			 "(schema %d, this one knows %d)", path, version,
			 SCHEMA_VERSION);
		goto out_close;
	}
	/* schema 1 had no mv_to, 2 no tmp_to, 3 no inline table */
	if ((version == 1 &&
	     exec(j, "ALTER TABLE nodes ADD COLUMN mv_to TEXT") < 0) ||
	    (version >= 1 && version < 3 &&
	     exec(j, "ALTER TABLE nodes ADD COLUMN tmp_to TEXT") < 0) ||
	    exec(j, schema) < 0 ||
	    exec(j, "PRAGMA user_version=" "4") < 0)
		goto out_sqlerr;
	/*
	 * sqlite keeps the -wal file (the same inode) while a connection is
	 * open in WAL mode; fsyncing it through a descriptor of our own makes
	 * every commit so far durable, as synchronous=FULL would at the
	 * commit, but without the lock the commit is made under.
	 */
	{
		char wal[4096];

		snprintf(wal, sizeof(wal), "%s-wal", path);
		j->walfd = open(wal, O_RDWR | O_CLOEXEC);
		if (j->walfd < 0) {
			snprintf(errbuf, errlen, "cannot open the journal's "
				 "write-ahead log '%s': %s (sqlite uses one only "
				 "on a local filesystem: is the spool on one?)",
				 wal, strerror(errno));
			goto out_close;
		}
	}
	if (prepare(j, &j->st_insert,
		    "INSERT INTO nodes (" COLS ") VALUES (?,"
		    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)") < 0 ||
	    prepare(j, &j->st_save,
		    "REPLACE INTO nodes (" COLS ") VALUES (?,"
		    "?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)") < 0 ||
	    prepare(j, &j->st_delete, "DELETE FROM nodes WHERE id=?") < 0 ||
	    prepare(j, &j->st_event,
		    "INSERT INTO events (time_ms, node, dest, path, kind, msg)"
		    " VALUES (?,?,?,?,?,?)") < 0 ||
	    prepare(j, &j->st_inline_put,
		    "REPLACE INTO inline (id, data) VALUES (?,?)") < 0 ||
	    prepare(j, &j->st_inline_delete,
		    "DELETE FROM inline WHERE id=?") < 0)
		goto out_sqlerr;
	/*
	 * Ids are never reused, not even the highest after its row went (as
	 * sqlite's own rowids would be): a data file or an event still under
	 * a gone id must never be taken for a new file's (spool.c, drops).
	 */
	if (sqlite3_prepare_v2(j->db, "SELECT max("
			       "(SELECT coalesce(max(id), 0) FROM nodes),"
			       "(SELECT coalesce(max(node), 0) FROM events))",
			       -1, &st, NULL) != SQLITE_OK)
		goto out_sqlerr;
	j->next_id = sqlite3_step(st) == SQLITE_ROW ?
		     sqlite3_column_int64(st, 0) + 1 : 1;
	sqlite3_finalize(st);
	*jp = j;
	return 0;

out_sqlerr:
	snprintf(errbuf, errlen, "cannot use journal '%s': %s", path,
		 sqlite3_errmsg(j->db));
out_close:
	spool_journal_close(j);
	return -1;
}

void spool_journal_close(struct spool_journal *j)
{
	if (!j)
		return;
	sqlite3_finalize(j->st_insert);
	sqlite3_finalize(j->st_save);
	sqlite3_finalize(j->st_delete);
	sqlite3_finalize(j->st_event);
	sqlite3_finalize(j->st_inline_put);
	sqlite3_finalize(j->st_inline_delete);
	sqlite3_close(j->db);
	if (j->walfd >= 0)
		close(j->walfd);
	free(j);
}

static void bind_text(sqlite3_stmt *st, int i, const char *s)
{
	if (s)
		sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(st, i);
}

/* Bind every column of COLS but id, from parameter I on. */
static void bind_row(sqlite3_stmt *st, const struct spool_row *r, int i)
{

	sqlite3_bind_int64(st, i++, r->parent);
	bind_text(st, i++, r->dest);
	sqlite3_bind_int(st, i++, r->area);
	bind_text(st, i++, r->name);
	sqlite3_bind_int(st, i++, r->is_dir);
	sqlite3_bind_int(st, i++, r->state);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->size);
	sqlite3_bind_int64(st, i++, r->mtime_ns);
	sqlite3_bind_int64(st, i++, r->ctime_ns);
	sqlite3_bind_int64(st, i++, r->mode);
	sqlite3_bind_int64(st, i++, r->uid);
	sqlite3_bind_int64(st, i++, r->gid);
	sqlite3_bind_int(st, i++, r->attempts);
	bind_text(st, i++, r->error);
	sqlite3_bind_int64(st, i++, r->ready_at);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->gen);
	sqlite3_bind_int(st, i++, r->has_data);
	bind_text(st, i++, r->target);
	bind_text(st, i++, r->rdest);
	bind_text(st, i++, r->rpath);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->rgen);
	sqlite3_bind_int64(st, i++, r->rmtime);
	bind_text(st, i++, r->rtmp);
	bind_text(st, i++, r->tmp_dest);
	sqlite3_bind_int64(st, i++, (sqlite3_int64)r->tmp_gen);
	sqlite3_bind_int(st, i++, r->open);
	bind_text(st, i++, r->mv_to);
	bind_text(st, i++, r->tmp_to);
}

static int step_done(struct spool_journal *j, sqlite3_stmt *st)
{
	int rc = sqlite3_step(st);

	if (rc != SQLITE_DONE) {
		j->last_err = rc;
		snprintf(j->last_msg, sizeof(j->last_msg), "%s",
			 sqlite3_errmsg(j->db));
		log_error("journal: %s", j->last_msg);
	}
	sqlite3_reset(st);
	sqlite3_clear_bindings(st);
	return rc == SQLITE_DONE ? 0 : -1;
}

int spool_journal_insert(struct spool_journal *j, struct spool_row *row)
{
	sqlite3_bind_int64(j->st_insert, 1, j->next_id);
	bind_row(j->st_insert, row, 2);
	if (step_done(j, j->st_insert) < 0)
		return -1;
	row->id = j->next_id++;
	return 0;
}

int spool_journal_save(struct spool_journal *j, const struct spool_row *row)
{
	sqlite3_bind_int64(j->st_save, 1, row->id);
	bind_row(j->st_save, row, 2);
	return step_done(j, j->st_save);
}

int spool_journal_sync(struct spool_journal *j)
{
	return fdatasync(j->walfd) < 0 ? -errno : 0;
}

int spool_journal_delete(struct spool_journal *j, int64_t id)
{
	sqlite3_bind_int64(j->st_delete, 1, id);
	if (step_done(j, j->st_delete) < 0)
		return -1;
	/* after the row: a row never outlives the content it wants */
	return spool_journal_inline_delete(j, id);
}

int spool_journal_inline_put(struct spool_journal *j, int64_t id,
			     const void *data, size_t len)
{
	sqlite3_bind_int64(j->st_inline_put, 1, id);
	/* a zero-length blob is still a blob, not NULL */
	sqlite3_bind_blob64(j->st_inline_put, 2, len ? data : "", len,
			    SQLITE_STATIC);
	return step_done(j, j->st_inline_put);
}

int spool_journal_inline_delete(struct spool_journal *j, int64_t id)
{
	sqlite3_bind_int64(j->st_inline_delete, 1, id);
	return step_done(j, j->st_inline_delete);
}

/* The end of a SELECT loop: RC from the callback, S from the last step. */
static int select_done(sqlite3_stmt *st, int rc, int s)
{
	if (rc == 0 && s != SQLITE_DONE)
		rc = -1;
	sqlite3_finalize(st);
	return rc;
}

int spool_journal_inline_load(struct spool_journal *j,
			      int (*fn)(void *arg, int64_t id,
					const void *data, size_t len),
			      void *arg)
{
	sqlite3_stmt *st;
	int rc = 0, s;

	if (sqlite3_prepare_v2(j->db, "SELECT id, data FROM inline ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		const void *data = sqlite3_column_blob(st, 1);
		size_t len = (size_t)sqlite3_column_bytes(st, 1);

		if (!data)
			data = "";	/* an empty copy: sqlite gives NULL */
		rc = fn(arg, sqlite3_column_int64(st, 0), data, len);
		if (rc < 0)
			break;
	}
	return select_done(st, rc, s);
}

int spool_journal_inline_clear(struct spool_journal *j)
{
	return exec(j, "DELETE FROM inline");
}

static int die_hook(void *arg)
{
	struct spool_journal *j = arg;

	if (--j->die_at == 0)
		_exit(0);
	return 0;
}

void spool_journal_die_at(struct spool_journal *j, int commit)
{
	j->die_at = commit;
	sqlite3_commit_hook(j->db, commit > 0 ? die_hook : NULL, j);
}

int spool_journal_begin(struct spool_journal *j)
{
	if (j->depth++ > 0)
		return 0;
	return exec(j, "BEGIN");
}

int spool_journal_commit(struct spool_journal *j)
{
	if (j->depth == 0 || --j->depth > 0)
		return 0;
	if (exec(j, "COMMIT") < 0) {
		exec(j, "ROLLBACK");
		return -1;
	}
	return 0;
}

int spool_journal_event(struct spool_journal *j, int64_t node, const char *dest,
			const char *path, const char *kind, const char *msg)
{
	struct timespec ts;
	sqlite3_stmt *st = j->st_event;

	clock_gettime(CLOCK_REALTIME, &ts);
	sqlite3_bind_int64(st, 1, (sqlite3_int64)ts.tv_sec * 1000 +
			   ts.tv_nsec / 1000000);
	sqlite3_bind_int64(st, 2, node);
	bind_text(st, 3, dest);
	bind_text(st, 4, path);
	bind_text(st, 5, kind);
	bind_text(st, 6, msg);
	return step_done(j, st);
}

static const char *col_text(sqlite3_stmt *st, int i)
{
	return (const char *)sqlite3_column_text(st, i);
}

int spool_journal_load(struct spool_journal *j,
		       int (*fn)(void *arg, const struct spool_row *row),
		       void *arg)
{
	sqlite3_stmt *st;
	int rc = 0, s;

	if (sqlite3_prepare_v2(j->db, "SELECT " COLS " FROM nodes ORDER BY id",
			       -1, &st, NULL) != SQLITE_OK)
		return -1;
	while ((s = sqlite3_step(st)) == SQLITE_ROW) {
		struct spool_row r = {
			.id = sqlite3_column_int64(st, 0),
			.parent = sqlite3_column_int64(st, 1),
			.dest = col_text(st, 2),
			.area = sqlite3_column_int(st, 3),
			.name = col_text(st, 4),
			.is_dir = sqlite3_column_int(st, 5),
			.state = sqlite3_column_int(st, 6),
			.size = (uint64_t)sqlite3_column_int64(st, 7),
			.mtime_ns = sqlite3_column_int64(st, 8),
			.ctime_ns = sqlite3_column_int64(st, 9),
			.mode = (uint32_t)sqlite3_column_int64(st, 10),
			.uid = (uint32_t)sqlite3_column_int64(st, 11),
			.gid = (uint32_t)sqlite3_column_int64(st, 12),
			.attempts = sqlite3_column_int(st, 13),
			.error = col_text(st, 14),
			.ready_at = sqlite3_column_int64(st, 15),
			.gen = (uint64_t)sqlite3_column_int64(st, 16),
			.has_data = sqlite3_column_int(st, 17),
			.target = col_text(st, 18),
			.rdest = col_text(st, 19),
			.rpath = col_text(st, 20),
			.rgen = (uint64_t)sqlite3_column_int64(st, 21),
			.rmtime = sqlite3_column_int64(st, 22),
			.rtmp = col_text(st, 23),
			.tmp_dest = col_text(st, 24),
			.tmp_gen = (uint64_t)sqlite3_column_int64(st, 25),
			.open = sqlite3_column_int(st, 26),
			.mv_to = col_text(st, 27),
			.tmp_to = col_text(st, 28),
		};
		rc = fn(arg, &r);
		if (rc < 0)
			break;
	}
	return select_done(st, rc, s);
}
