/*
 * status.c - status snapshots: live from the daemon's tree, or read-only
 * from the journal for the command line.
 *
 * LIVE.  spool_status_snapshot() walks the tree once under sp->lock and
 * copies what it shows (counts, bytes, uploads in flight with their
 * progress, destination health); rendering happens after the lock is
 * dropped.  The walk is O(files) under the lock, done once per open() of
 * MOUNT/.status or .status.json, which is what users and watch loops do
 * about once a second; nothing on the upload path changes for it.
 *
 * Rate and ETA are derived, not measured on the hot path: the node records
 * when its upload started (node_set_state_locked, on entering uploading)
 * and the snapshot divides the bytes sent by the time since.  For a resumed
 * upload the resumed-from part counts as sent, so its first seconds show a
 * high rate; a max_rate destination converges to its limit.
 *
 * Health (last success, last error) in memory covers only what happened
 * since this daemon started; what is missing is filled in from the event
 * log through a separate read-only connection, after the lock is dropped.
 *
 * JOURNAL.  The command line opens SPOOL/journal.db with
 * SQLITE_OPEN_READONLY.  Beside a running daemon that is an ordinary WAL
 * reader (the -wal and -shm files exist).  With the daemon stopped cleanly
 * sqlite has checkpointed and removed the -wal: a read-only connection
 * would then create -wal/-shm files it cannot remove again, so it opens
 * the database as immutable instead (nothing else writes it; a daemon
 * starting at that moment is the one race, and a status read then fails
 * or shows the state just before).
 */
#include "spool_internal.h"
#include "status.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/sysmacros.h>
#include <unistd.h>

/* ---- live --------------------------------------------------------------- */

const char *spool_dir(const struct spool *sp)
{
	return sp->dir;
}

static int bucket_of(const struct spool_node *n)
{
	if (n->area == SPOOL_AREA_FAILED || n->state == SPOOL_FAILED)
		return SPOOL_BUCKET_FAILED;
	switch (n->state) {
	case SPOOL_UPLOADING:
		return SPOOL_BUCKET_UPLOADING;
	case SPOOL_UPLOADED:
		return SPOOL_BUCKET_UPLOADED;
	default:
		return SPOOL_BUCKET_PENDING;
	}
}

static struct spool_status_dest *sdest_of(struct spool *sp,
					  struct spool_status *st,
					  const struct spool_dest *d)
{
	return &st->dests[d - sp->dests];
}

static int add_upload(struct spool_status_dest *sd,
		      const struct spool_status_upload *u)
{
	struct spool_status_upload *n;

	n = realloc(sd->uploads, (sd->nuploads + 1) * sizeof(*n));
	if (!n)
		return -1;
	sd->uploads = n;
	n[sd->nuploads++] = *u;
	return 0;
}

static int upload_of_locked(struct spool *sp, struct spool_status *st,
			    const struct spool_node *n)
{
	struct spool_dest *jd = node_job_dest_locked(n);
	struct spool_status_upload u = {
		.attempt = n->attempts,
		.size = n->size,
		.live = true,
		.sent = n->progress,
		.started_ms = n->upload_start_ms,
		.eta_s = -1,
		.meta = n->rdest == jd && n->rgen == n->gen && n->rpath,
	};
	int64_t elapsed = st->now_ms - n->upload_start_ms;

	if (u.meta)
		u.sent = n->size;
	if (!u.meta && n->upload_start_ms && elapsed >= 500 && u.sent) {
		u.rate = u.sent * 1000 / (uint64_t)elapsed;
		if (u.rate)
			u.eta_s = (int64_t)((u.size > u.sent ?
					     u.size - u.sent : 0) / u.rate);
	}
	u.path = node_relpath_locked(n);
	u.target = strdup(jd->conf->name);
	if (!u.path || !u.target || add_upload(sdest_of(sp, st, n->dest), &u)) {
		free(u.path);
		free(u.target);
		return -1;
	}
	sdest_of(sp, st, n->dest)->rate += u.rate;
	return 0;
}

static int walk_locked(struct spool *sp, struct spool_status *st,
		       const struct spool_node *dir)
{
	for (size_t b = 0; b < dir->tabsize; b++) {
		for (const struct spool_node *k = dir->tab[b]; k;
		     k = k->hnext) {
			struct spool_status_dest *sd;
			int bk;

			if (k->is_dir) {
				if (walk_locked(sp, st, k) < 0)
					return -1;
				continue;
			}
			sd = sdest_of(sp, st, k->dest);
			bk = bucket_of(k);
			sd->count[bk].files++;
			sd->count[bk].bytes += k->size;
			if (bk == SPOOL_BUCKET_UPLOADING && k->busy &&
			    upload_of_locked(sp, st, k) < 0)
				return -1;
			if (bk == SPOOL_BUCKET_PENDING &&
			    k->state == SPOOL_QUEUED && k->attempts > 0 &&
			    !k->busy) {
				struct spool_status_dest *jd =
					sdest_of(sp, st,
						 node_job_dest_locked(k));

				jd->waiting_retry++;
				if (!jd->next_retry_ms ||
				    k->ready_at < jd->next_retry_ms)
					jd->next_retry_ms = k->ready_at;
			}
		}
	}
	return 0;
}

int spool_status_snapshot(struct spool *sp, struct spool_status *st)
{
	struct statvfs vfs;
	struct spool_ro *ro;
	char err[256];
	int rc = 0;

	memset(st, 0, sizeof(*st));
	st->live = true;
	st->daemon_running = true;
	st->pid = (long)getpid();
	st->started_ms = (int64_t)sp->mounted_at.tv_sec * 1000 +
			 sp->mounted_at.tv_nsec / 1000000;
	st->max_size = sp->cfg->max_size;
	st->spool_dir = strdup(sp->dir);
	st->dests = calloc(sp->ndests, sizeof(*st->dests));
	if (!st->spool_dir || !st->dests)
		goto out_oom;
	st->ndests = sp->ndests;
	if (statvfs(sp->dir, &vfs) == 0) {
		st->disk_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		st->disk_known = true;
	}

	pthread_mutex_lock(&sp->lock);
	st->now_ms = spool_now_ms();
	st->used = sp->used;
	for (size_t i = 0; i < sp->ndests && rc == 0; i++) {
		struct spool_dest *d = &sp->dests[i];
		struct spool_status_dest *sd = &st->dests[i];

		sd->name = strdup(d->conf->name);
		sd->url = strdup(d->conf->url_display);
		sd->fallback = d->fallback ? strdup(d->fallback->conf->name) :
			       NULL;
		sd->last_ok_ms = d->last_ok_ms;
		sd->last_err_ms = d->last_err ? d->last_err_ms : 0;
		sd->last_err = d->last_err ? strdup(d->last_err) : NULL;
		if (!sd->name || !sd->url || (d->fallback && !sd->fallback) ||
		    (d->last_err && !sd->last_err))
			rc = -1;
	}
	for (size_t i = 0; i < sp->ndests && rc == 0; i++)
		for (int a = SPOOL_AREA_MAIN; a <= SPOOL_AREA_FAILED && rc == 0;
		     a++)
			rc = walk_locked(sp, st, sp->dests[i].root[a]);
	pthread_mutex_unlock(&sp->lock);
	if (rc < 0)
		goto out_oom;

	/* history from before this mount, without the lock */
	if (spool_ro_open(&ro, sp->dir, err, sizeof(err)) == 0) {
		spool_ro_health(ro, st);
		spool_ro_close(ro);
	}
	spool_status_redact(st, sp->cfg);
	return 0;

out_oom:
	spool_status_release(st);
	return -ENOMEM;
}

/* ---- read-only journal ---------------------------------------------------- */

struct spool_ro {
	sqlite3 *db;
};

int spool_ro_open(struct spool_ro **rp, const char *dir, char *errbuf,
		  size_t errlen)
{
	struct spool_ro *r;
	char *path = NULL, *wal = NULL, *uri = NULL;
	struct stat st;
	bool immutable;
	int rc = -1;

	*rp = NULL;
	r = calloc(1, sizeof(*r));
	if (!r || asprintf(&path, "%s/journal.db", dir) < 0 ||
	    asprintf(&wal, "%s/journal.db-wal", dir) < 0) {
		snprintf(errbuf, errlen, "out of memory");
		goto out;
	}
	if (stat(path, &st) < 0) {
		snprintf(errbuf, errlen, "no journal at '%s': %s (nothing was "
			 "ever mounted with this spool?)", path,
			 strerror(errno));
		goto out;
	}
	if (access(path, R_OK) < 0) {
		snprintf(errbuf, errlen, "cannot read journal '%s': %s", path,
			 strerror(errno));
		goto out;
	}
	immutable = stat(wal, &st) < 0 && errno == ENOENT;
	{
		/* a URI: percent-escape what URIs care about */
		struct spool_sbuf b = { 0 };

		spool_sbuf_printf(&b, "file:");
		for (const char *p = path; *p; p++) {
			if (*p == '%' || *p == '?' || *p == '#')
				spool_sbuf_printf(&b, "%%%02X",
						  (unsigned char)*p);
			else
				spool_sbuf_printf(&b, "%c", *p);
		}
		spool_sbuf_printf(&b, "?mode=ro%s", immutable ?
				  "&immutable=1" : "");
		uri = spool_sbuf_take(&b);
	}
	if (!uri || sqlite3_open_v2(uri, &r->db, SQLITE_OPEN_READONLY |
				    SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX,
				    NULL) != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot open journal '%s': %s", path,
			 r->db ? sqlite3_errmsg(r->db) : "out of memory");
		goto out;
	}
	sqlite3_busy_timeout(r->db, 5000);
	if (sqlite3_exec(r->db, "SELECT count(*) FROM nodes, events LIMIT 0",
			 NULL, NULL, NULL) != SQLITE_OK) {
		snprintf(errbuf, errlen, "cannot read journal '%s': %s", path,
			 sqlite3_errmsg(r->db));
		goto out;
	}
	*rp = r;
	r = NULL;
	rc = 0;
out:
	spool_ro_close(r);
	free(path);
	free(wal);
	free(uri);
	return rc;
}

void spool_ro_close(struct spool_ro *r)
{
	if (!r)
		return;
	sqlite3_close(r->db);
	free(r);
}

bool spool_daemon_running(const char *dir)
{
	char *path = NULL, line[256];
	struct stat st;
	bool held = false;
	FILE *f;

	if (asprintf(&path, "%s/lock", dir) < 0)
		return false;
	if (stat(path, &st) < 0) {
		free(path);
		return false;
	}
	free(path);
	f = fopen("/proc/locks", "re");
	if (!f)
		return false;
	/* "1: FLOCK  ADVISORY  WRITE 1234 08:01:5678 0 EOF" */
	while (!held && fgets(line, sizeof(line), f)) {
		unsigned int maj, min;
		unsigned long ino;
		char type[16], *p = strstr(line, "FLOCK");

		if (!p || sscanf(p, "%15s %*s %*s %*d %x:%x:%lu", type, &maj,
				 &min, &ino) != 4)
			continue;
		held = ino == (unsigned long)st.st_ino &&
		       maj == major(st.st_dev) && min == minor(st.st_dev);
	}
	fclose(f);
	return held;
}

static const char *col_text(sqlite3_stmt *s, int i)
{
	return (const char *)sqlite3_column_text(s, i);
}

struct ro_row {
	int64_t id, parent;
	char *name;
	int dest;		/* index in cfg, -1 unknown */
	int area;
};

static int row_cmp(const void *a, const void *b)
{
	const struct ro_row *x = a, *y = b;

	return x->id < y->id ? -1 : x->id > y->id;
}

/* "a/b/c" of row R (parents looked up by id).  malloc'd. */
static char *ro_path(const struct ro_row *rows, size_t n, const struct ro_row *r)
{
	struct spool_sbuf b = { 0 };
	const struct ro_row *chain[256];
	size_t depth = 0;

	for (const struct ro_row *p = r; p && depth < 256;) {
		struct ro_row key = { .id = p->parent };

		chain[depth++] = p;
		p = p->parent ? bsearch(&key, rows, n, sizeof(*rows), row_cmp) :
		    NULL;
	}
	while (depth-- > 0)
		spool_sbuf_printf(&b, "%s%s", chain[depth]->name,
				  depth ? "/" : "");
	return spool_sbuf_take(&b);
}

static int dest_index(const struct spool_status *st, const char *name)
{
	for (size_t i = 0; name && i < st->ndests; i++)
		if (strcmp(st->dests[i].name, name) == 0)
			return (int)i;
	return -1;
}

void spool_ro_health(struct spool_ro *r, struct spool_status *st)
{
	sqlite3_stmt *s = NULL;

	/* last success per destination */
	if (sqlite3_prepare_v2(r->db,
			       "SELECT dest, max(time_ms) FROM events WHERE "
			       "kind IN ('uploaded','renamed') GROUP BY dest",
			       -1, &s, NULL) == SQLITE_OK) {
		while (sqlite3_step(s) == SQLITE_ROW) {
			int i = dest_index(st, col_text(s, 0));
			int64_t t = sqlite3_column_int64(s, 1);

			if (i >= 0 && t > st->dests[i].last_ok_ms)
				st->dests[i].last_ok_ms = t;
		}
	}
	sqlite3_finalize(s);
	s = NULL;

	/*
	 * Last error: the messages start with the destination that failed
	 * ("nas: upload of ..."); a fallback event is filed under the
	 * destination taking over, its message names the one that failed.
	 * Crash recovery's "incomplete" is no destination's fault.
	 */
	if (sqlite3_prepare_v2(r->db,
			       "SELECT time_ms, msg FROM events WHERE kind IN "
			       "('retry','failed','fallback') AND "
			       "substr(msg, 1, length(?1) + 2) = ?1 || ': ' "
			       "ORDER BY id DESC LIMIT 1", -1, &s,
			       NULL) != SQLITE_OK)
		return;
	for (size_t i = 0; i < st->ndests; i++) {
		struct spool_status_dest *d = &st->dests[i];

		sqlite3_bind_text(s, 1, d->name, -1, SQLITE_STATIC);
		if (sqlite3_step(s) == SQLITE_ROW &&
		    sqlite3_column_int64(s, 0) > d->last_err_ms) {
			char *m = strdup(col_text(s, 1) ? col_text(s, 1) : "");

			if (m) {
				free(d->last_err);
				d->last_err = m;
				d->last_err_ms = sqlite3_column_int64(s, 0);
			}
		}
		sqlite3_reset(s);
	}
	sqlite3_finalize(s);
}

int spool_ro_status(struct spool_ro *r, const struct spoolfs_config *cfg,
		    bool daemon_running, struct spool_status *st)
{
	struct ro_row *rows = NULL;
	size_t nrows = 0, cap = 0;
	sqlite3_stmt *s = NULL;
	struct statvfs vfs;
	int rc = -1, step;

	memset(st, 0, sizeof(*st));
	st->now_ms = spool_now_ms();
	st->daemon_running = daemon_running;
	st->max_size = cfg->max_size;
	st->spool_dir = strdup(cfg->spool_dir);
	st->dests = calloc(cfg->ndests ? cfg->ndests : 1, sizeof(*st->dests));
	if (!st->spool_dir || !st->dests)
		goto out;
	st->ndests = cfg->ndests;
	if (statvfs(cfg->spool_dir, &vfs) == 0) {
		st->disk_free = (uint64_t)vfs.f_bavail * vfs.f_frsize;
		st->disk_known = true;
	}
	for (size_t i = 0; i < cfg->ndests; i++) {
		struct spool_status_dest *d = &st->dests[i];

		d->name = strdup(cfg->dests[i].name);
		d->url = strdup(cfg->dests[i].url_display);
		d->fallback = cfg->dests[i].fallback ?
			      strdup(cfg->dests[i].fallback) : NULL;
		if (!d->name || !d->url ||
		    (cfg->dests[i].fallback && !d->fallback))
			goto out;
	}

	/* "uploading" rows: real beside a running daemon (but how far they
	 * are is only in its memory); after a stop they are interrupted and
	 * queued again at the next mount, so they count as pending */
	if (sqlite3_prepare_v2(r->db,
			       "SELECT id, parent, dest, area, name, is_dir, "
			       "state, size, attempts, ready_at, has_data, "
			       "target FROM nodes WHERE area != 2 ORDER BY id",
			       -1, &s, NULL) != SQLITE_OK)
		goto out;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		int di = dest_index(st, col_text(s, 2));
		int state = sqlite3_column_int(s, 6);
		int area = sqlite3_column_int(s, 3);
		uint64_t size = (uint64_t)sqlite3_column_int64(s, 7);
		int attempts = sqlite3_column_int(s, 8);
		struct ro_row *row;
		int bk;

		if (nrows == cap) {
			struct ro_row *n;

			cap = cap ? cap * 2 : 256;
			n = realloc(rows, cap * sizeof(*rows));
			if (!n)
				goto out;
			rows = n;
		}
		row = &rows[nrows++];
		row->id = sqlite3_column_int64(s, 0);
		row->parent = sqlite3_column_int64(s, 1);
		row->name = strdup(col_text(s, 4) ? col_text(s, 4) : "");
		row->dest = di;
		row->area = area;
		if (!row->name)
			goto out;
		if (sqlite3_column_int(s, 5) || di < 0)
			continue;
		if (sqlite3_column_int(s, 10) && state != SPOOL_UPLOADED)
			st->used += size;
		if (area == SPOOL_AREA_FAILED || state == SPOOL_FAILED)
			bk = SPOOL_BUCKET_FAILED;
		else if (state == SPOOL_UPLOADED)
			bk = SPOOL_BUCKET_UPLOADED;
		else if (state == SPOOL_UPLOADING && daemon_running)
			bk = SPOOL_BUCKET_UPLOADING;
		else
			bk = SPOOL_BUCKET_PENDING;
		st->dests[di].count[bk].files++;
		st->dests[di].count[bk].bytes += size;
		if (bk == SPOOL_BUCKET_PENDING && state == SPOOL_QUEUED &&
		    attempts > 0) {
			int ti = dest_index(st, col_text(s, 11));
			struct spool_status_dest *jd =
				&st->dests[ti >= 0 ? ti : di];
			int64_t ready = sqlite3_column_int64(s, 9);

			jd->waiting_retry++;
			if (!jd->next_retry_ms || ready < jd->next_retry_ms)
				jd->next_retry_ms = ready;
		}
		if (bk == SPOOL_BUCKET_UPLOADING) {
			const char *t = col_text(s, 11);
			struct spool_status_upload u = {
				.attempt = attempts,
				.size = size,
				.eta_s = -1,
				.target = strdup(t ? t : st->dests[di].name),
			};

			/* the path needs every row: filled in below */
			u.path = NULL;
			if (!u.target || add_upload(&st->dests[di], &u) < 0) {
				free(u.target);
				goto out;
			}
			/* remember which row: stash the id in started_ms
			 * until the paths are known */
			st->dests[di].uploads[st->dests[di].nuploads - 1]
				.started_ms = row->id;
		}
	}
	if (step != SQLITE_DONE)
		goto out;
	/* rows come ordered by id: paths by binary search on parent ids */
	for (size_t i = 0; i < st->ndests; i++) {
		for (size_t k = 0; k < st->dests[i].nuploads; k++) {
			struct spool_status_upload *u = &st->dests[i].uploads[k];
			struct ro_row key = { .id = u->started_ms };
			struct ro_row *row = bsearch(&key, rows, nrows,
						     sizeof(*rows), row_cmp);

			u->started_ms = 0;
			u->path = row ? ro_path(rows, nrows, row) : strdup("?");
			if (!u->path)
				goto out;
		}
	}
	spool_ro_health(r, st);
	spool_status_redact(st, cfg);
	rc = 0;
out:
	sqlite3_finalize(s);
	for (size_t i = 0; i < nrows; i++)
		free(rows[i].name);
	free(rows);
	if (rc < 0)
		spool_status_release(st);
	return rc;
}

/* ---- event log ------------------------------------------------------------- */

void spool_ro_file_release(struct spool_ro_file *f)
{
	if (!f)
		return;
	free(f->error);
	free(f->rdest);
	free(f->rpath);
	memset(f, 0, sizeof(*f));
}

/* Find the row at DEST/REL in AREA by walking names from the root. */
static int64_t ro_lookup(struct spool_ro *r, const char *dest, int area,
			 const char *rel)
{
	sqlite3_stmt *s;
	int64_t parent = 0, id = 0;
	const char *p = rel;

	if (sqlite3_prepare_v2(r->db, "SELECT id FROM nodes WHERE dest=? AND "
			       "area=? AND parent=? AND name=?", -1, &s,
			       NULL) != SQLITE_OK)
		return 0;
	while (*p) {
		const char *e = strchrnul(p, '/');

		sqlite3_bind_text(s, 1, dest, -1, SQLITE_STATIC);
		sqlite3_bind_int(s, 2, area);
		sqlite3_bind_int64(s, 3, parent);
		sqlite3_bind_text(s, 4, p, (int)(e - p), SQLITE_STATIC);
		id = sqlite3_step(s) == SQLITE_ROW ? sqlite3_column_int64(s, 0)
			: 0;
		sqlite3_reset(s);
		if (!id)
			break;
		parent = id;
		p = *e ? e + 1 : e;
	}
	sqlite3_finalize(s);
	return id;
}

static void ro_file(struct spool_ro *r, int64_t id, struct spool_ro_file *f)
{
	sqlite3_stmt *s;

	if (sqlite3_prepare_v2(r->db, "SELECT area, state, attempts, size, "
			       "error, rdest, rpath FROM nodes WHERE id=?", -1,
			       &s, NULL) != SQLITE_OK)
		return;
	sqlite3_bind_int64(s, 1, id);
	if (sqlite3_step(s) == SQLITE_ROW) {
		f->found = true;
		f->id = id;
		f->failed_area = sqlite3_column_int(s, 0) == SPOOL_AREA_FAILED;
		f->state = sqlite3_column_int(s, 1);
		f->attempts = sqlite3_column_int(s, 2);
		f->size = (uint64_t)sqlite3_column_int64(s, 3);
		f->error = col_text(s, 4) ? strdup(col_text(s, 4)) : NULL;
		f->rdest = col_text(s, 5) ? strdup(col_text(s, 5)) : NULL;
		f->rpath = col_text(s, 6) ? strdup(col_text(s, 6)) : NULL;
	}
	sqlite3_finalize(s);
}

int spool_ro_events(struct spool_ro *r, const struct spoolfs_config *cfg,
		    const char *dest, const char *rel, int limit,
		    struct spool_ro_file *f,
		    int (*fn)(void *arg, const struct spool_event *ev),
		    void *arg)
{
	sqlite3_stmt *s = NULL;
	int n = 0, step, rc;
	int64_t id = 0;

	if (f)
		memset(f, 0, sizeof(*f));
	if (!dest) {
		rc = sqlite3_prepare_v2(r->db,
			"SELECT * FROM (SELECT id, time_ms, node, dest, path, "
			"kind, msg FROM events ORDER BY id DESC LIMIT ?) "
			"ORDER BY id", -1, &s, NULL);
		if (rc == SQLITE_OK)
			sqlite3_bind_int(s, 1, limit > 0 ? limit : -1);
	} else {
		const char *frel = rel;
		int area = SPOOL_AREA_MAIN;

		if (strncmp(rel, ".failed/", 8) == 0) {
			frel = rel + 8;
			area = SPOOL_AREA_FAILED;
		}
		id = ro_lookup(r, dest, area, frel);
		if (!id && area == SPOOL_AREA_MAIN)
			id = ro_lookup(r, dest, SPOOL_AREA_FAILED, frel);
		if (id && f)
			ro_file(r, id, f);
		/*
		 * The row now at the path, and rows whose events carried the
		 * path under this destination or its fallbacks (the file may
		 * be gone, or have been renamed since).  Row ids are never
		 * reused while a row exists, but a removed file's id can
		 * come back for a new one: their histories then show as one.
		 */
		rc = sqlite3_prepare_v2(r->db,
			"SELECT id, time_ms, node, dest, path, kind, msg "
			"FROM events WHERE node = ?1 OR node IN (SELECT node "
			"FROM events WHERE path = ?2 AND (dest IN (SELECT "
			"value FROM json_each(?4)) OR "
			"substr(msg, 1, length(?3) + 2) = ?3 || ': '))"
			" ORDER BY id", -1, &s, NULL);
		if (rc == SQLITE_OK) {
			struct spool_sbuf b = { 0 };
			const struct spoolfs_dest *d =
				spoolfs_config_dest(cfg, dest);
			char *chain;

			/* the fallback chain, as a JSON array of names */
			spool_sbuf_printf(&b, "[");
			for (size_t i = 0; d && i <= cfg->ndests; i++) {
				spool_sbuf_printf(&b, "%s", i ? "," : "");
				spool_sbuf_json_string(&b, d->name);
				d = d->fallback ? spoolfs_config_dest(cfg,
						d->fallback) : NULL;
			}
			spool_sbuf_printf(&b, "]");
			chain = spool_sbuf_take(&b);
			sqlite3_bind_int64(s, 1, id ? id : -1);
			sqlite3_bind_text(s, 2, frel, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(s, 3, dest, -1, SQLITE_TRANSIENT);
			sqlite3_bind_text(s, 4, chain ? chain : "[]", -1,
					  SQLITE_TRANSIENT);
			free(chain);
		}
	}
	if (rc != SQLITE_OK)
		return -1;
	while ((step = sqlite3_step(s)) == SQLITE_ROW) {
		char *msg = col_text(s, 6) ? strdup(col_text(s, 6)) : NULL;
		struct spool_event ev = {
			.id = sqlite3_column_int64(s, 0),
			.time_ms = sqlite3_column_int64(s, 1),
			.node = sqlite3_column_int64(s, 2),
			.dest = col_text(s, 3),
			.path = col_text(s, 4),
			.kind = col_text(s, 5),
			.msg = msg,
		};

		spoolfs_redact(msg, cfg);
		rc = fn(arg, &ev);
		free(msg);
		n++;
		if (rc < 0)
			break;
	}
	sqlite3_finalize(s);
	if (f)
		spoolfs_redact(f->error, cfg);
	return step == SQLITE_DONE || step == SQLITE_ROW ? n : -1;
}
