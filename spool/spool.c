/*
 * spool.c - the filesystem core: the namespace, local content and the
 * state of every file, mirrored into the journal.
 *
 * The tree lives in memory (struct spool_node, see spool_internal.h for
 * locking and lifetime) and every change to it is written to the journal
 * before the call returns.  Content lives in SPOOL/data/ID, one file per
 * node, named by journal id and never by user path, or, for a new small
 * file, in memory (see "Small files in memory").
 *
 * Namespace: "/" lists the destinations; "/DEST" is the main area of a
 * destination, "/DEST/.failed" its failed area, "/DEST/.pending" a read-only
 * view of the main area restricted to files not uploaded yet.
 *
 * Close: spool_flush() makes the content durable (fsync = close: a small
 * file's content in the journal's commit, a bigger one's data file
 * fsynced), commits the file as queued with a durable journal write, and
 * only then returns: what close() acknowledged survives a crash.
 */
#include "spool_internal.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include "../common/log.h"

#define INCOMPLETE_MSG "incomplete: not closed before the daemon stopped"

enum view { VIEW_MAIN, VIEW_PENDING, VIEW_FAILED };

struct loc {
	struct spool_dest *d;	/* NULL: the mount root */
	enum view view;
	const char *rel;	/* path inside the view, "" for its root */
	bool new_at_root;	/* "/NAME" with no such destination */
};

struct spool_handle {
	struct spool *sp;
	struct spool_node *node;
	int fd;
	bool writable;
	int write_errno;	/* a write through this handle failed */
	uint64_t unkicked;	/* [L] bytes written since the last kick */
	struct spool_handle *hnext;	/* [L] next of node->handles */
};

/*
 * With fsync = close, close() waits for fdatasync() of everything written.
 * Starting the writeback of every KICK_BYTES as they arrive (without
 * waiting for it) lets the disk work while the writer still sends, so the
 * fdatasync at close has little left to do.  Every MiB, not every 8: a
 * photo-sized file (a few MiB) then also arrives mostly written back
 * (cp -r of 200 x 5 MiB: 0.81x the time, A/B 4 rounds; 1 GiB unchanged).
 */
#define KICK_BYTES (1u << 20)

int64_t spool_now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static struct timespec now_ts(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return ts;
}

static int64_t ts_ns(struct timespec ts)
{
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static struct timespec ns_ts(int64_t ns)
{
	struct timespec ts = { ns / 1000000000, ns % 1000000000 };

	return ts;
}

/* ---- children hash ---------------------------------------------------- */

uint64_t spool_str_hash(const char *s)
{
	uint64_t h = 1469598103934665603ull;

	while (*s)
		h = (h ^ (unsigned char)*s++) * 1099511628211ull;
	return h;
}

static struct spool_node *dir_lookup(const struct spool_node *dir,
				     const char *name, size_t len)
{
	char buf[NAME_MAX + 1];
	struct spool_node *n;

	if (!dir->tabsize || len > NAME_MAX)
		return NULL;
	memcpy(buf, name, len);
	buf[len] = '\0';
	for (n = dir->tab[spool_str_hash(buf) & (dir->tabsize - 1)]; n;
	     n = n->hnext)
		if (strcmp(n->name, buf) == 0)
			return n;
	return NULL;
}

struct spool_node *node_at_locked(const struct spool_dest *d, const char *rel)
{
	struct spool_node *n = d->root[SPOOL_AREA_MAIN];
	const char *p = rel;

	while (n && *p) {
		const char *e = strchrnul(p, '/');

		n = n->is_dir ? dir_lookup(n, p, (size_t)(e - p)) : NULL;
		p = *e ? e + 1 : e;
	}
	return n;
}

static int dir_grow(struct spool_node *dir)
{
	size_t size = dir->tabsize ? dir->tabsize * 2 : 16;
	struct spool_node **tab = calloc(size, sizeof(*tab));

	if (!tab)
		return -ENOMEM;
	for (size_t i = 0; i < dir->tabsize; i++) {
		struct spool_node *n = dir->tab[i], *next;

		for (; n; n = next) {
			size_t b = spool_str_hash(n->name) & (size - 1);

			next = n->hnext;
			n->hnext = tab[b];
			tab[b] = n;
		}
	}
	free(dir->tab);
	dir->tab = tab;
	dir->tabsize = size;
	return 0;
}

/* ---- counters: pending files per directory, bytes not uploaded -------- */

static bool is_pending(const struct spool_node *n)
{
	return !n->is_dir && n->area == SPOOL_AREA_MAIN &&
	       (n->state == SPOOL_WRITING || n->state == SPOOL_QUEUED ||
		n->state == SPOOL_UPLOADING);
}

static uint64_t pend_of(const struct spool_node *n)
{
	return n->is_dir ? n->npend : is_pending(n);
}

static void pend_add(struct spool_node *from, int64_t delta)
{
	for (struct spool_node *p = from; p && delta; p = p->parent)
		p->npend += delta;
}

static uint64_t charge_of(const struct spool_node *n)
{
	if (n->is_dir || !n->has_data || n->state == SPOOL_UPLOADED ||
	    n->area == SPOOL_AREA_TRASH || !n->linked)
		return 0;
	return n->size;
}

#define UNCHARGE(sp, n) ((sp)->used -= charge_of(n))
#define CHARGE(sp, n) ((sp)->used += charge_of(n))

static int dir_attach(struct spool *sp, struct spool_node *dir,
		      struct spool_node *n)
{
	size_t b;

	if (dir->nkids + 1 > dir->tabsize * 2 && dir_grow(dir) < 0)
		return -ENOMEM;
	b = spool_str_hash(n->name) & (dir->tabsize - 1);
	n->hnext = dir->tab[b];
	dir->tab[b] = n;
	dir->nkids++;
	n->parent = dir;
	n->linked = true;
	pend_add(dir, (int64_t)pend_of(n));
	CHARGE(sp, n);
	return 0;
}

static void dir_detach(struct spool *sp, struct spool_node *n)
{
	struct spool_node *dir = n->parent, **pp;

	if (!dir)
		return;
	UNCHARGE(sp, n);
	pend_add(dir, -(int64_t)pend_of(n));
	for (pp = &dir->tab[spool_str_hash(n->name) & (dir->tabsize - 1)]; *pp;
	     pp = &(*pp)->hnext) {
		if (*pp == n) {
			*pp = n->hnext;
			break;
		}
	}
	dir->nkids--;
	n->hnext = NULL;
	n->parent = NULL;
	n->linked = false;
}

/* ---- nodes ------------------------------------------------------------- */

static struct spool_node *node_new(struct spool_dest *d, const char *name,
				   bool is_dir)
{
	struct spool_node *n = calloc(1, sizeof(*n));

	if (!n)
		return NULL;
	n->name = strdup(name);
	if (!n->name) {
		free(n);
		return NULL;
	}
	n->dest = d;
	n->is_dir = is_dir;
	n->rmtime = -1;
	n->mfd = -1;
	return n;
}

static void node_free(struct spool_node *n)
{
	if (!n)
		return;
	free(n->tab);
	free(n->name);
	free(n->error);
	free(n->rpath);
	free(n->mv_to);
	free(n->rtmp);
	free(n->tmp_to);
	if (n->mfd >= 0)
		close(n->mfd);
	free(n);
}

static void mem_release_locked(struct spool *sp, struct spool_node *n);

void node_put_locked(struct spool *sp, struct spool_node *n)
{
	if (--n->refs <= 0 && !n->linked && !n->is_root) {
		/* its row went, and its inline copy with it */
		if (n->inlined)
			sp->inline_bytes -= n->inline_len;
		mem_release_locked(sp, n);
		node_free(n);
	}
}

static struct spool_dest *dest_by_name(struct spool *sp, const char *name,
				       size_t len)
{
	for (size_t i = 0; i < sp->ndests; i++) {
		const char *dn = sp->dests[i].conf->name;

		if (strlen(dn) == len && memcmp(dn, name, len) == 0)
			return &sp->dests[i];
	}
	return NULL;
}

char *node_relpath_locked(const struct spool_node *n)
{
	const struct spool_node *p;
	size_t len = 0, pos;
	char *s;

	for (p = n; p && !p->is_root; p = p->parent)
		len += strlen(p->name) + 1;
	if (len == 0)
		return strdup("");
	len--;			/* no '/' before the first component */
	s = malloc(len + 1);
	if (!s)
		return NULL;
	pos = len;
	s[pos] = '\0';
	for (p = n; p && !p->is_root; p = p->parent) {
		size_t l = strlen(p->name);

		pos -= l;
		memcpy(s + pos, p->name, l);
		if (pos > 0)
			s[--pos] = '/';
	}
	return s;
}

static bool dest_in_chain(const struct spool_dest *home,
			  const struct spool_dest *d)
{
	const struct spool_dest *p = home;

	for (size_t i = 0; p && i <= home->sp->ndests; i++, p = p->fallback)
		if (p == d)
			return true;
	return false;
}

bool node_synced_locked(const struct spool_node *n)
{
	char *rel;
	bool same;

	if (!n->rdest || !n->rpath || n->rgen != n->gen ||
	    !dest_in_chain(n->dest, n->rdest))
		return false;
	if (n->meta_gave_up)
		return true;
	if (n->rmtime != (int64_t)n->mtime.tv_sec)
		return false;
	rel = node_relpath_locked(n);
	same = rel && strcmp(rel, n->rpath) == 0;
	free(rel);
	return same;
}

struct spool_dest *node_job_dest_locked(const struct spool_node *n)
{
	if (n->area == SPOOL_AREA_TRASH)
		return n->tmp_dest && n->rtmp ? n->tmp_dest : n->rdest;
	if (n->rdest && n->rgen == n->gen && dest_in_chain(n->dest, n->rdest))
		return n->rdest;
	return n->target ? n->target : n->dest;
}

/*
 * Inline copies.  With fsync = close, a file is on disk when its close()
 * returns.  For a small file, fdatasync of its data file (and for a
 * recycled one, of the data directory that holds its new name) would be
 * two or three flushes of the disk per close, on top of the journal's; so
 * commit_written() puts the content into the journal's inline table in the
 * transaction that queues the file, and the one fsync of the journal makes
 * both durable.  The data file is then not known to be on disk, and the
 * inline copy stays until:
 *  - the row no longer wants content (uploaded and freed, removed,
 *    superseded): the save that says so drops it (node_save_checked_locked,
 *    spool_journal_delete);
 *  - the content is about to change (content_changed_locked()): the data
 *    file is fsynced first, because from then on the journal may say
 *    "writing", and the next mount takes such a data file as it is;
 *  - the next close commits the file again: replaced, or dropped when that
 *    close goes the fsync way.
 * The mount after a crash writes every inline copy whose row wants content
 * back into its data file, fsyncs, and empties the table (restore_inline()).
 * N->inlined is true whenever the table may hold a copy for N: a stale copy
 * left behind would be written back over newer content.
 */
static void inline_drop_locked(struct spool *sp, struct spool_node *n)
{
	if (spool_journal_inline_delete(sp->j, n->id) < 0)
		return;		/* stays inlined: dropped at a later save */
	sp->inline_bytes -= n->inline_len;
	n->inline_len = 0;
	n->inlined = false;
}

static int mem_spill_locked(struct spool *sp, struct spool_node *n);

/* The data file of N on disk, then N's inline copy dropped.  0 or -errno. */
static int inline_unguard_locked(struct spool *sp, struct spool_node *n)
{
	int fd, rc = 0;

	if (!n->inlined)
		return 0;
	if (n->has_data && n->mfd >= 0 && (rc = mem_spill_locked(sp, n)) < 0)
		return rc;
	if (n->has_data) {
		fd = spool_data_open(sp, n->id, O_RDONLY);
		if (fd < 0 || fdatasync(fd) < 0 ||
		    (n->data_renamed && fsync(sp->datafd) < 0))
			rc = -errno;
		if (fd >= 0)
			close(fd);
		if (rc < 0) {
			log_error("%s: cannot fsync spool copy of '%s': %s",
				  n->dest->conf->name, n->name, strerror(-rc));
			return rc;
		}
		n->data_renamed = false;
	}
	inline_drop_locked(sp, n);
	return 0;
}

static void node_to_row(const struct spool_node *n, struct spool_row *r)
{
	memset(r, 0, sizeof(*r));
	r->id = n->id;
	r->parent = n->parent && !n->parent->is_root ? n->parent->id : 0;
	r->dest = n->dest->conf->name;
	r->area = n->area;
	r->name = n->name;
	r->is_dir = n->is_dir;
	r->state = n->state;
	r->size = n->size;
	r->mtime_ns = ts_ns(n->mtime);
	r->ctime_ns = ts_ns(n->ctime);
	r->mode = n->mode;
	r->uid = n->uid;
	r->gid = n->gid;
	r->attempts = n->attempts;
	r->error = n->error;
	r->ready_at = n->ready_at;
	r->gen = n->gen;
	r->has_data = n->has_data;
	r->target = n->target ? n->target->conf->name : NULL;
	r->rdest = n->rdest ? n->rdest->conf->name : NULL;
	r->rpath = n->rpath;
	r->rgen = n->rgen;
	r->rmtime = n->rmtime;
	r->rtmp = n->rtmp;
	r->tmp_dest = n->tmp_dest ? n->tmp_dest->conf->name : NULL;
	r->tmp_gen = n->tmp_gen;
	r->open = n->writers > 0;
	r->mv_to = n->mv_to;
	r->tmp_to = n->tmp_to;
}

int node_save_checked_locked(struct spool *sp, struct spool_node *n)
{
	struct spool_row r;

	/* an unlinked node has no row any more: never bring it back */
	if (n->is_root || !n->id || !n->linked)
		return 0;
	node_to_row(n, &r);
	if (spool_journal_save(sp->j, &r) < 0)
		return spool_journal_errno(sp->j);
	/* after the row that no longer wants it */
	if (n->inlined && !n->has_data)
		inline_drop_locked(sp, n);
	return 0;
}

void node_save_locked(struct spool *sp, struct spool_node *n)
{
	if (node_save_checked_locked(sp, n) < 0)
		log_error("journal: cannot save '%s': %s", n->name,
			  spool_journal_errmsg(sp->j));
}

int node_save_durable_locked(struct spool *sp, struct spool_node *n)
{
	int rc = node_save_checked_locked(sp, n);

	if (rc == 0 && sp->cfg->fsync == SPOOLFS_FSYNC_CLOSE)
		rc = spool_sync(sp);
	return rc;
}

void node_set_state_locked(struct spool *sp, struct spool_node *n, int state)
{
	int64_t before = (int64_t)is_pending(n);

	if (!spool_state_transition_ok(n->state, state))
		log_error("internal: '%s' went from %s to %s", n->name,
			  spool_state_name(n->state), spool_state_name(state));
	UNCHARGE(sp, n);
	if (state == SPOOL_UPLOADING && n->state != SPOOL_UPLOADING)
		n->upload_start_ms = spool_now_ms();	/* rate in status.c */
	n->state = state;
	CHARGE(sp, n);
	if (n->parent)
		pend_add(n->parent, (int64_t)is_pending(n) - before);
}

void node_set_error_locked(struct spool_node *n, const char *msg)
{
	size_t cap = msg ? 4 * strlen(msg) + 1 : 0;

	free(n->error);
	n->error = NULL;
	/* the message names the file: keep its control characters out */
	if (msg && *msg && (n->error = malloc(cap)))
		spoolfs_escape_ctl(n->error, cap, msg);
}

void spool_event_locked(struct spool *sp, struct spool_node *n,
			const char *dest, const char *kind, const char *msg)
{
	char *rel = node_relpath_locked(n);

	spool_journal_event(sp->j, n->id, dest ? dest : n->dest->conf->name,
			    rel ? rel : n->name, kind, msg);
	free(rel);
}

int spool_data_open(struct spool *sp, int64_t id, int flags)
{
	char name[32];

	snprintf(name, sizeof(name), "%" PRId64, id);
	return openat(sp->datafd, name, flags | O_CLOEXEC, 0600);
}

static void data_unlink(struct spool *sp, int64_t id)
{
	char name[32];

	snprintf(name, sizeof(name), "%" PRId64, id);
	if (unlinkat(sp->datafd, name, 0) < 0 && errno != ENOENT)
		log_warn("cannot remove spool file '%s/data/%s': %m", sp->dir,
			 name);
}

/*
 * The data files of uploaded small files are recycled rather than
 * unlinked: emptied, renamed to "free.K", and renamed to the next file
 * created.  A stream of small files then costs no inode allocation, which
 * on ext4 without a journal scans past every inode freed in the last
 * minutes (recently_deleted(): half the daemon's CPU in a 2000-file copy).
 * Only files nobody has open are recycled, so no descriptor ever sees a
 * recycled file change; only small ones, so emptying one costs what
 * unlinking it would.  Pool files belong to no row: the mount-time sweep
 * removes them after a crash, spool_close() after a clean stop.
 */
static void pool_name(char *buf, size_t len, int slot)
{
	snprintf(buf, len, "free.%d", slot);
}

static void drop_name(char *buf, size_t len, int64_t id)
{
	snprintf(buf, len, "drop.%" PRId64, id);
}

/*
 * Dropping a data file.  The journal learns first that a file's content is
 * gone (uploaded, removed, superseded), then the content goes; but a commit
 * is on disk only after the next spool_sync(), and until then a power cut
 * can take the commit back: the row would want its content again, find
 * none, and the file would come back as "spool copy lost" in .failed/ --
 * although it was uploaded, or worse, restored with no content.  So a
 * dropped data file is only renamed to drop.ID, and emptied into the pool
 * or unlinked once a sync that began after its commit has succeeded.  The
 * mount-time sweep gives a drop.ID back to a row that still wants it
 * (recover_drop()) and removes the others.  Ids are never reused
 * (journal.c), so drop.ID is always the content row ID last had.
 */
int spool_sync(struct spool *sp)
{
	uint64_t ticket = atomic_fetch_add(&sp->syncs_begun, 1) + 1;
	uint64_t done = atomic_load(&sp->synced);
	int rc = spool_journal_sync(sp->j);

	while (rc == 0 && done < ticket &&
	       !atomic_compare_exchange_weak(&sp->synced, &done, ticket))
		;
	return rc;
}

static bool data_recyclable(const struct spool_node *n)
{
	return n->openers == 0 && !n->busy && !n->fetching &&
	       n->size <= POOL_FILE_MAX;
}

static void data_drop_locked(struct spool *sp, int64_t id, uint64_t size,
			     bool recyclable)
{
	char name[32], dname[32];
	struct spool_drop *dr;

	if (sp->ndrops == sp->drops_cap) {
		size_t cap = sp->drops_cap ? 2 * sp->drops_cap : 64;
		void *p = realloc(sp->drops, cap * sizeof(*sp->drops));

		if (!p) {
			data_unlink(sp, id);
			return;
		}
		sp->drops = p;
		sp->drops_cap = cap;
	}
	snprintf(name, sizeof(name), "%" PRId64, id);
	drop_name(dname, sizeof(dname), id);
	if (renameat(sp->datafd, name, sp->datafd, dname) < 0) {
		if (errno != ENOENT)
			data_unlink(sp, id);
		return;
	}
	/* a copy fetched back after an earlier drop: that drop.ID was
	 * just replaced, and its commit is older than this one */
	for (size_t i = sp->ndrops; i-- > 0;)
		if (sp->drops[i].id == id) {
			sp->drop_bytes -= sp->drops[i].size;
			memmove(&sp->drops[i], &sp->drops[i + 1],
				(sp->ndrops - i - 1) * sizeof(*sp->drops));
			sp->ndrops--;
			break;
		}
	dr = &sp->drops[sp->ndrops++];
	dr->id = id;
	dr->size = size;
	dr->ticket = 0;
	dr->at_ms = spool_now_ms();
	dr->recyclable = recyclable;
	sp->drop_bytes += size;
}

/* The content of DR is no longer wanted by any row on disk: empty it into
 * the pool, or unlink it. */
static void drop_finish_locked(struct spool *sp, const struct spool_drop *dr,
			       bool pool)
{
	char dname[32], fname[32];
	int slot = 0, fd = -1;

	drop_name(dname, sizeof(dname), dr->id);
	if (pool && dr->recyclable && sp->npool < POOL_MAX) {
		while (sp->pool[slot])
			slot++;
		pool_name(fname, sizeof(fname), slot);
		fd = openat(sp->datafd, dname, O_WRONLY | O_TRUNC | O_CLOEXEC);
		if (fd >= 0 &&
		    renameat(sp->datafd, dname, sp->datafd, fname) == 0) {
			close(fd);
			sp->pool[slot] = true;
			sp->npool++;
			return;
		}
		if (fd >= 0)
			close(fd);
	}
	if (unlinkat(sp->datafd, dname, 0) < 0 && errno != ENOENT)
		log_warn("cannot remove spool file '%s/data/%s': %m", sp->dir,
			 dname);
}

/* Finish the drops whose commits are on disk; ALL: every one (the caller
 * has synced after the last commit). */
static void drops_reap_locked(struct spool *sp, bool all)
{
	uint64_t begun = atomic_load(&sp->syncs_begun);
	uint64_t synced = atomic_load(&sp->synced);
	size_t k = 0;

	for (size_t i = 0; i < sp->ndrops; i++) {
		struct spool_drop *dr = &sp->drops[i];

		/* not inside a transaction: its commit is done by now */
		if (dr->ticket == 0)
			dr->ticket = begun;
		if (all || synced > dr->ticket) {
			sp->drop_bytes -= dr->size;
			drop_finish_locked(sp, dr, !all);
		} else {
			sp->drops[k++] = *dr;
		}
	}
	sp->ndrops = k;
}

/*
 * Called by a worker between jobs, never inside a transaction: finish the
 * drops a sync has covered.  Writers sync at every close, which covers
 * drops as it goes; when they are quiet, a worker with nothing to do
 * (IDLE) syncs for drops older than DROP_SYNC_MS, and any worker as soon
 * as the drops hold DROP_SYNC_BYTES.  Returns whether it let go of the
 * lock; otherwise *WAKE is lowered to when a sync would be due.
 */
bool spool_drops_tend_locked(struct spool *sp, bool idle, int64_t *wake)
{
	int64_t now = spool_now_ms(), due;
	bool big;
	int rc;

	if (sp->ndrops == 0)
		return false;
	drops_reap_locked(sp, false);
	if (sp->ndrops == 0)
		return false;
	/* the oldest drop comes first; after a failed sync, wait a second */
	due = sp->drops[0].at_ms + DROP_SYNC_MS;
	if (due < sp->drops_retry_ms)
		due = sp->drops_retry_ms;
	big = sp->drop_bytes >= DROP_SYNC_BYTES && now >= sp->drops_retry_ms;
	if (!big && !(idle && now >= due)) {
		if (wake && due < *wake)
			*wake = due;
		return false;
	}
	pthread_mutex_unlock(&sp->lock);
	rc = spool_sync(sp);
	pthread_mutex_lock(&sp->lock);
	if (rc < 0) {
		log_error("cannot fsync the journal: %s", strerror(-rc));
		sp->drops_retry_ms = spool_now_ms() + 1000;
	}
	drops_reap_locked(sp, false);
	return true;
}

void node_recycle_data_locked(struct spool *sp, struct spool_node *n)
{
	if (n->mfd >= 0)
		mem_release_locked(sp, n);
	else
		data_drop_locked(sp, n->id, n->size, data_recyclable(n));
}

/*
 * Create (or empty) the data file of N, from the pool when it has one.  A
 * file created is durable under its name once fdatasync()ed; a renamed one
 * needs the directory fsynced too (data_renamed, commit_written()).
 */
static int data_create(struct spool *sp, struct spool_node *n)
{
	char name[32], fname[32];

	if (sp->npool > 0) {
		int slot = 0;

		while (!sp->pool[slot])
			slot++;
		sp->pool[slot] = false;
		sp->npool--;
		snprintf(name, sizeof(name), "%" PRId64, n->id);
		pool_name(fname, sizeof(fname), slot);
		if (renameat(sp->datafd, fname, sp->datafd, name) == 0)
			n->data_renamed = true;
		else
			unlinkat(sp->datafd, fname, 0);
	}
	return spool_data_open(sp, n->id, O_RDWR | O_CREAT | O_TRUNC);
}

static void pool_empty(struct spool *sp)
{
	char fname[32];

	for (int slot = 0; slot < POOL_MAX; slot++) {
		if (!sp->pool[slot])
			continue;
		pool_name(fname, sizeof(fname), slot);
		unlinkat(sp->datafd, fname, 0);
		sp->pool[slot] = false;
	}
	sp->npool = 0;
}

/*
 * Small files in memory.  With fsync = close a small file's close() makes
 * it durable through its copy in the journal ("Inline copies"), so its
 * data file only has to hold the content until the upload (with fsync =
 * never the copy is made too, unsynced: it outlives a killed daemon as the
 * rest of the journal does, which is all fsync = never promises).  A file
 * created in the mount therefore starts in a memfd rather than in data/ID:
 * that spares it the inode allocation (on ext4 without a journal a scan past
 * every inode freed in the last minutes, 0.3 ms per file on the benchmark
 * machine, under the spool lock), the page-cache writes, and the recycling
 * or unlink after the upload.
 *
 * A file leaves memory for data/ID ("spills", mem_spill_locked()) when
 *  - a write or truncate takes it past INLINE_FILE_MAX, or the memory
 *    files past MEM_TOTAL_MAX;
 *  - its close cannot put the copy into the journal;
 *  - a committed file changes again (inline_unguard_locked(): from then on
 *    the journal may say "writing", and the next mount takes data/ID as it
 *    is), or is fsync()ed while it is being written;
 *  - it goes to .failed/ before it was committed (a failed write).
 * A spill waits for the node's writes in flight, copies the memfd into a
 * new data file and puts that file under every open handle's descriptor
 * (dup3(): the numbers fs/ holds stay valid).  A worker uploading the file
 * keeps reading the memfd: a spill comes before the file's first close, or
 * with a change that makes a new content generation and so cancels that
 * upload.
 *
 * A memory file that was never closed does not survive the daemon: the
 * next mount puts it in .failed/ as incomplete and empty (recover()); its
 * writer got an error and it was never acknowledged.  A closed one comes
 * back from its inline copy.  Each memory file holds a descriptor, placed
 * at MEM_FD_BASE or above so that sockets keep numbers below FD_SETSIZE
 * (backends/ftp.c asks curl with fd_sets).
 */
#define MEM_FD_BASE 1024

/* Raise the descriptor limit to what the memory files may take. */
static void mem_limit_init(struct spool *sp)
{
	rlim_t want = MEM_FD_BASE + MEM_FILES_MAX + 64;
	struct rlimit rl;
	const char *e;

	sp->mem_files_max = 0;
	/* for A/B measurements and the tests of data files */
	if ((e = getenv("SPOOLFS_MEM_FILES")) && strcmp(e, "0") == 0)
		return;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	if (rl.rlim_cur < want && rl.rlim_cur < rl.rlim_max) {
		rl.rlim_cur = rl.rlim_max < want ? rl.rlim_max : want;
		if (setrlimit(RLIMIT_NOFILE, &rl) < 0 &&
		    getrlimit(RLIMIT_NOFILE, &rl) < 0)
			return;
	}
	if (rl.rlim_cur > MEM_FD_BASE + 64)
		sp->mem_files_max = rl.rlim_cur - MEM_FD_BASE - 64 <
				    MEM_FILES_MAX ?
				    (size_t)(rl.rlim_cur - MEM_FD_BASE - 64) :
				    MEM_FILES_MAX;
}

static void mem_release_locked(struct spool *sp, struct spool_node *n)
{
	if (n->mfd < 0)
		return;
	close(n->mfd);
	n->mfd = -1;
	sp->mem_bytes -= n->mem_size;
	n->mem_size = 0;
	sp->nmem--;
}

/* N's size changed: account for it if it is in memory. */
static void mem_resize_locked(struct spool *sp, struct spool_node *n)
{
	if (n->mfd < 0)
		return;
	sp->mem_bytes = sp->mem_bytes - n->mem_size + n->size;
	n->mem_size = n->size;
}

static void *inline_read(int fd, uint64_t size);

/* Copy LEN bytes from IN to OUT, both from offset 0.  0 or -errno. */
static int copy_small(int in, int out, size_t len)
{
	size_t put = 0;
	char *buf;
	int rc = 0;

	errno = 0;
	buf = inline_read(in, len);
	if (!buf)
		return errno ? -errno : -EIO;	/* 0: shorter than LEN */
	while (rc == 0 && put < len) {
		ssize_t w = pwrite(out, buf + put, len - put, (off_t)put);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			rc = w < 0 ? -errno : -EIO;
		else
			put += (size_t)w;
	}
	free(buf);
	return rc;
}

static int mem_spill_locked(struct spool *sp, struct spool_node *n)
{
	struct stat st;
	int fd, rc;

	while (n->mfd >= 0 && n->wflight > 0)
		pthread_cond_wait(&sp->write_cond, &sp->lock);
	if (n->mfd < 0)
		return 0;
	if (fstat(n->mfd, &st) < 0)
		return -errno;
	fd = data_create(sp, n);
	rc = fd < 0 ? -errno : copy_small(n->mfd, fd, (size_t)st.st_size);
	if (rc < 0) {
		log_error("%s: cannot write the spool copy of '%s' to %s/data: "
			  "%s", n->dest->conf->name, n->name, sp->dir,
			  strerror(-rc));
		if (fd >= 0) {
			close(fd);
			data_unlink(sp, n->id);
		}
		n->data_renamed = false;
		return rc;
	}
	for (struct spool_handle *h = n->handles; h; h = h->hnext) {
		while (dup3(fd, h->fd, O_CLOEXEC) < 0) {
			if (errno == EINTR || errno == EBUSY)
				continue;
			/* writes through it would be lost: make them fail */
			log_error("%s: cannot move an open descriptor of '%s' "
				  "to its spool file: %m", n->dest->conf->name,
				  n->name);
			h->write_errno = EIO;
			break;
		}
	}
	close(fd);
	mem_release_locked(sp, n);
	return 0;
}

/* The content of new file N: in memory when it may be, else data/ID.
 * Returns a descriptor for N's first handle. */
static int data_create_new(struct spool *sp, struct spool_node *n)
{
	int mfd, fd;

	if (sp->nmem >= sp->mem_files_max ||
	    sp->mem_bytes + INLINE_FILE_MAX > MEM_TOTAL_MAX)
		return data_create(sp, n);
	mfd = memfd_create("spoolfs", MFD_CLOEXEC);
	if (mfd >= 0) {
		int hi = fcntl(mfd, F_DUPFD_CLOEXEC, MEM_FD_BASE);

		close(mfd);
		mfd = hi;
	}
	fd = mfd >= 0 ? fcntl(mfd, F_DUPFD_CLOEXEC, 0) : -1;
	if (fd < 0) {
		if (mfd >= 0)
			close(mfd);
		return data_create(sp, n);
	}
	n->mfd = mfd;
	n->mem_size = 0;
	sp->nmem++;
	return fd;
}

static int node_data_open_locked(struct spool *sp, struct spool_node *n,
				 int flags)
{
	if (n->mfd >= 0)
		return fcntl(n->mfd, F_DUPFD_CLOEXEC, 0);
	return spool_data_open(sp, n->id, flags);
}

int node_data_open(struct spool *sp, struct spool_node *n, int flags)
{
	int fd;

	pthread_mutex_lock(&sp->lock);
	fd = node_data_open_locked(sp, n, flags);
	pthread_mutex_unlock(&sp->lock);
	return fd;
}

/*
 * The journal learns first that the copy is gone, then it goes: a crash in
 * between leaves an orphan file (swept at the next mount), never a row
 * whose content has vanished (which the next mount would try to upload).
 * Saves N.
 */
void node_free_data_locked(struct spool *sp, struct spool_node *n)
{
	if (!node_forget_data_locked(sp, n))
		return;
	node_save_locked(sp, n);
	node_recycle_data_locked(sp, n);
}

bool node_forget_data_locked(struct spool *sp, struct spool_node *n)
{
	if (!n->has_data)
		return false;
	UNCHARGE(sp, n);
	n->has_data = false;
	return true;
}

void node_drop_locked(struct spool *sp, struct spool_node *n)
{
	queue_remove_locked(n);
	spool_journal_delete(sp->j, n->id);
	dir_detach(sp, n);
}

void node_requeue_locked(struct spool *sp, struct spool_node *n)
{
	if (!n->linked) {
		queue_remove_locked(n);
		return;
	}
	if (n->is_dir || n->busy)
		return;
	if (n->area == SPOOL_AREA_TRASH) {
		queue_add_locked(node_job_dest_locked(n), n);
		pthread_cond_broadcast(&sp->cond);
		return;
	}
	if (n->area == SPOOL_AREA_FAILED) {
		queue_remove_locked(n);
		node_set_state_locked(sp, n, SPOOL_FAILED);
		return;
	}
	if (n->state == SPOOL_WRITING) {
		queue_remove_locked(n);
		return;
	}
	if (node_synced_locked(n)) {
		queue_remove_locked(n);
		node_set_state_locked(sp, n, SPOOL_UPLOADED);
		return;
	}
	if (n->state != SPOOL_QUEUED) {
		node_set_state_locked(sp, n, SPOOL_QUEUED);
		if (n->ready_at > spool_now_ms() + 1000 && n->attempts == 0)
			n->ready_at = spool_now_ms();
	}
	queue_add_locked(node_job_dest_locked(n), n);
	pthread_cond_broadcast(&sp->cond);
}

/* Find or create the directory REL (may be "") in an area of D. */
static struct spool_node *area_mkdirs_locked(struct spool *sp,
					     struct spool_dest *d, int area,
					     const char *rel)
{
	struct spool_node *dir = d->root[area];
	const char *p = rel;

	while (*p) {
		const char *e = strchrnul(p, '/');
		struct spool_node *k = dir_lookup(dir, p, (size_t)(e - p));

		if (!k) {
			char *name = strndup(p, (size_t)(e - p));
			struct spool_row r;

			if (!name)
				return NULL;
			k = node_new(d, name, true);
			free(name);
			if (!k)
				return NULL;
			k->area = area;
			k->mode = 0755;
			k->uid = sp->uid;
			k->gid = sp->gid;
			k->mtime = k->ctime = now_ts();
			k->parent = dir;
			node_to_row(k, &r);
			if (spool_journal_insert(sp->j, &r) < 0 ||
			    dir_attach(sp, dir, k) < 0) {
				node_free(k);
				return NULL;
			}
			k->id = r.id;
		} else if (!k->is_dir) {
			return NULL;
		}
		dir = k;
		p = *e ? e + 1 : e;
	}
	return dir;
}

void node_forget_tmp(struct spool_node *n)
{
	free(n->rtmp);
	n->rtmp = NULL;
	n->tmp_dest = NULL;
	free(n->tmp_to);
	n->tmp_to = NULL;
}

void node_forget_copy(struct spool_node *n)
{
	free(n->rpath);
	n->rpath = NULL;
	n->rdest = NULL;
	free(n->mv_to);
	n->mv_to = NULL;
}

/* A trash entry under N's name, to carry a removal on a server (the caller
 * hands it N's temp or copy), then trash_add_locked(). */
static struct spool_node *trash_new(struct spool *sp,
				    const struct spool_node *n)
{
	struct spool_node *t = node_new(n->dest, n->name, false);

	if (t) {
		t->area = SPOOL_AREA_TRASH;
		t->state = SPOOL_QUEUED;
		t->ready_at = spool_now_ms();
		t->parent = sp->trash;
	}
	return t;
}

/* Journal T and queue its removal; if that fails, T goes, with what it
 * was handed (a leftover on the server, as without the entry). */
static void trash_add_locked(struct spool *sp, struct spool_node *t)
{
	struct spool_row r;

	node_to_row(t, &r);
	if (spool_journal_insert(sp->j, &r) < 0 ||
	    dir_attach(sp, sp->trash, t) < 0) {
		node_free(t);
		return;
	}
	t->id = r.id;
	node_requeue_locked(sp, t);
}

void node_trash_tmp_locked(struct spool *sp, struct spool_node *n)
{
	struct spool_node *t;

	if (!n->rtmp || !n->tmp_dest)
		return;
	t = trash_new(sp, n);
	if (!t)
		return;
	t->rtmp = n->rtmp;
	t->tmp_dest = n->tmp_dest;
	t->tmp_gen = n->tmp_gen;
	/* handed over; where a commit may have taken it is not followed
	 * from here (the entry knows no size or mtime to tell the copy by) */
	n->rtmp = NULL;
	node_forget_tmp(n);
	trash_add_locked(sp, t);
}

/*
 * N forgets its uploaded copy.  With TRASH, a copy on N's own destination
 * is removed there through the trash (an entry that holds the name until
 * done: blocks_locked()); a copy elsewhere, or without TRASH, stays on the
 * server.  Call with N off the queue (the qr_tab index is by rpath).
 */
void node_let_go_of_copy_locked(struct spool *sp, struct spool_node *n,
				bool trash)
{
	struct spool_node *t;

	if (!n->rdest || !n->rpath)
		return;
	/* one commit: a trash entry for the copy with N still pointing at it
	 * would remove what N's next job (a rename) still counts on */
	spool_journal_begin(sp->j);
	if (trash && n->rdest == n->dest && (t = trash_new(sp, n))) {
		t->rdest = n->rdest;
		t->rpath = n->rpath;
		t->rgen = n->rgen;
		n->rpath = NULL;
		trash_add_locked(sp, t);
	}
	node_forget_copy(n);
	node_save_locked(sp, n);
	spool_journal_commit(sp->j);
}

/*
 * N's copy at N->rpath is stale (N was rewritten since) and not at N's
 * name (N was renamed before its rename reached the server, or after the
 * rewrite): nothing keeps another file from landing on that name now
 * (blocks_locked() lets a stale copy be overwritten), so N must not point
 * at it any more, or a later job of N's (a removal with delete_remote)
 * could remove another file's copy.  On N's own destination the copy is
 * what the rename would have carried to N's name for the new content to
 * overwrite: it goes to the trash (TRASH, in the main area).
 */
void node_stale_copy_locked(struct spool *sp, struct spool_node *n,
			    bool trash)
{
	char *rel;
	bool away;

	if (n->is_dir || !n->rdest || !n->rpath || n->rgen == n->gen)
		return;
	rel = node_relpath_locked(n);
	away = !rel || strcmp(rel, n->rpath) != 0 || n->area != SPOOL_AREA_MAIN;
	free(rel);
	if (away)
		node_let_go_of_copy_locked(sp, n,
					   trash && n->area == SPOOL_AREA_MAIN);
}

void spool_set_inval(struct spool *sp, spool_inval_fn fn, void *arg)
{
	pthread_mutex_lock(&sp->lock);
	sp->inval_fn = fn;
	sp->inval_arg = arg;
	pthread_mutex_unlock(&sp->lock);
}

void node_inval_locked(struct spool *sp, const struct spool_node *n,
		       const char *rel)
{
	char *path;

	if (!sp->inval_fn)
		return;
	if (sp->ninval == sp->invalcap) {
		size_t cap = sp->invalcap ? 2 * sp->invalcap : 16;
		char **nv = realloc(sp->inval, cap * sizeof(*nv));

		if (!nv)
			return;		/* the kernel's cache expires anyway */
		sp->inval = nv;
		sp->invalcap = cap;
	}
	if (asprintf(&path, "/%s/%s", n->dest->conf->name, rel) < 0)
		return;
	sp->inval[sp->ninval++] = path;
	pthread_cond_broadcast(&sp->cond);	/* a worker drains them */
}

void spool_stop(struct spool *sp)
{
	if (!sp)
		return;
	uploader_stop(sp);
	/* the workers, who call it, are gone */
	spool_set_inval(sp, NULL, NULL);
	pthread_mutex_lock(&sp->lock);
	while (sp->ninval > 0)
		free(sp->inval[--sp->ninval]);
	pthread_mutex_unlock(&sp->lock);
}

void spool_inval_drain_locked(struct spool *sp)
{
	while (sp->ninval > 0) {
		char **v = sp->inval;
		size_t nv = sp->ninval;

		sp->inval = NULL;
		sp->ninval = sp->invalcap = 0;
		pthread_mutex_unlock(&sp->lock);
		for (size_t i = 0; i < nv; i++) {
			sp->inval_fn(sp->inval_arg, v[i]);
			free(v[i]);
		}
		free(v);
		pthread_mutex_lock(&sp->lock);
	}
}

void node_fail_locked(struct spool *sp, struct spool_node *n, const char *msg)
{
	char *rel = node_relpath_locked(n), *slash;
	struct spool_node *fdir = NULL, *old;
	int64_t gone_id = 0;
	uint64_t gone_size = 0;
	bool gone_pool = false;

	queue_remove_locked(n);
	/* kept in .failed/: on disk unless its inline copy guards it */
	if (n->mfd >= 0 && !n->inlined)
		mem_spill_locked(sp, n);
	node_set_error_locked(n, msg);
	n->target = NULL;
	node_trash_tmp_locked(sp, n);
	/* an older content's copy: in .failed/ nothing guards its name on
	 * the server any more, so it is left there, as the last version
	 * that arrived */
	if (n->rgen != n->gen)
		node_let_go_of_copy_locked(sp, n, false);
	if (rel && n->area == SPOOL_AREA_MAIN) {
		node_inval_locked(sp, n, rel);
		slash = strrchr(rel, '/');
		if (slash)
			*slash = '\0';
		fdir = area_mkdirs_locked(sp, n->dest, SPOOL_AREA_FAILED,
					  slash ? rel : "");
	}
	spool_journal_begin(sp->j);
	if (fdir) {
		old = dir_lookup(fdir, n->name, strlen(n->name));
		if (old && !old->is_dir) {
			/* an older failed copy of the same path: superseded */
			UNCHARGE(sp, old);
			dir_detach(sp, old);
			queue_remove_locked(old);
			spool_journal_delete(sp->j, old->id);
			if (old->has_data && old->mfd >= 0) {
				mem_release_locked(sp, old);
			} else if (old->has_data) {
				gone_id = old->id;	/* after the commit */
				gone_size = old->size;
				gone_pool = data_recyclable(old);
			}
			old->has_data = false;
			old->refs++;
			node_put_locked(sp, old);
		} else if (old) {
			fdir = NULL;	/* a directory is in the way */
		}
	}
	if (fdir) {
		dir_detach(sp, n);
		n->area = SPOOL_AREA_FAILED;
		n->state = SPOOL_FAILED;
		dir_attach(sp, fdir, n);
	} else {
		node_set_state_locked(sp, n, SPOOL_FAILED);
	}
	node_save_locked(sp, n);
	spool_journal_commit(sp->j);
	if (gone_id)
		data_drop_locked(sp, gone_id, gone_size, gone_pool);
	free(rel);
}

/* ---- path resolution ---------------------------------------------------- */

static int parse_path(struct spool *sp, const char *path, struct loc *l)
{
	const char *p = path, *e;

	memset(l, 0, sizeof(*l));
	while (*p == '/')
		p++;
	l->rel = "";
	if (!*p)
		return 0;
	e = strchrnul(p, '/');
	l->d = dest_by_name(sp, p, (size_t)(e - p));
	if (!l->d) {
		l->new_at_root = !e[strspn(e, "/")];
		return -ENOENT;
	}
	p = e;
	while (*p == '/')
		p++;
	e = strchrnul(p, '/');
	if ((size_t)(e - p) == 8 && memcmp(p, ".pending", 8) == 0) {
		l->view = VIEW_PENDING;
		p = e;
	} else if ((size_t)(e - p) == 7 && memcmp(p, ".failed", 7) == 0) {
		l->view = VIEW_FAILED;
		p = e;
	}
	while (*p == '/')
		p++;
	l->rel = p;
	return 0;
}

static bool visible(const struct spool_node *n, enum view v)
{
	if (v != VIEW_PENDING)
		return true;
	return n->is_dir ? n->npend > 0 : is_pending(n);
}

static struct spool_node *view_root(const struct loc *l)
{
	return l->d->root[l->view == VIEW_FAILED ? SPOOL_AREA_FAILED :
			  SPOOL_AREA_MAIN];
}

/* Walk l->rel; returns the node or NULL with *err set. */
static struct spool_node *lookup(const struct loc *l, int *err)
{
	struct spool_node *n = view_root(l);
	const char *p = l->rel;

	while (*p) {
		const char *e = strchrnul(p, '/');

		if (!n->is_dir) {
			*err = -ENOTDIR;
			return NULL;
		}
		if ((size_t)(e - p) > NAME_MAX) {
			*err = -ENAMETOOLONG;
			return NULL;
		}
		n = dir_lookup(n, p, (size_t)(e - p));
		if (!n || !visible(n, l->view)) {
			*err = -ENOENT;
			return NULL;
		}
		p = *e ? e + 1 : e;
	}
	return n;
}

/*
 * Split l->rel into its parent directory node and the last name, which
 * must fit in a directory entry (ext4's and every destination's limit):
 * a longer name is refused here, before a node for it exists.
 */
static struct spool_node *lookup_parent(const struct loc *l, const char **name,
					int *err)
{
	const char *slash = strrchr(l->rel, '/');
	struct loc pl = *l;
	char *prel;
	struct spool_node *dir;

	if (!*l->rel) {
		*err = -EEXIST;
		return NULL;
	}
	if (strlen(slash ? slash + 1 : l->rel) > NAME_MAX) {
		*err = -ENAMETOOLONG;
		return NULL;
	}
	if (!slash) {
		*name = l->rel;
		return view_root(l);
	}
	*name = slash + 1;
	prel = strndup(l->rel, (size_t)(slash - l->rel));
	if (!prel) {
		*err = -ENOMEM;
		return NULL;
	}
	pl.rel = prel;
	dir = lookup(&pl, err);
	free(prel);
	if (dir && !dir->is_dir) {
		*err = -ENOTDIR;
		return NULL;
	}
	return dir;
}

/* ---- attributes ---------------------------------------------------------- */

static void virtual_dir_stat(struct spool *sp, struct stat *st, mode_t mode)
{
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFDIR | mode;
	st->st_nlink = 2;
	st->st_uid = sp->uid;
	st->st_gid = sp->gid;
	st->st_size = 4096;
	st->st_blksize = 4096;
	st->st_mtim = st->st_ctim = st->st_atim = sp->mounted_at;
}

static void node_stat(struct spool *sp, const struct spool_node *n,
		      enum view v, struct stat *st)
{
	if (n->is_root) {
		virtual_dir_stat(sp, st, v == VIEW_PENDING ? 0555 : 0755);
		st->st_mtim = st->st_ctim = st->st_atim = n->mtime;
		return;
	}
	memset(st, 0, sizeof(*st));
	st->st_uid = n->uid;
	st->st_gid = n->gid;
	st->st_mtim = n->mtime;
	st->st_atim = n->mtime;
	st->st_ctim = n->ctime;
	if (n->is_dir) {
		st->st_mode = S_IFDIR | (n->mode & 07777);
		st->st_nlink = 2;
		st->st_size = 4096;
		st->st_blksize = 4096;
	} else {
		st->st_mode = S_IFREG | (n->mode & 07777);
		st->st_nlink = 1;
		st->st_size = (off_t)n->size;
		st->st_blocks = (blkcnt_t)((n->size + 511) / 512);
		/* big writes from cp and friends: fewer FUSE round trips */
		st->st_blksize = 1 << 20;
	}
	if (v == VIEW_PENDING)
		st->st_mode &= ~(mode_t)0222;
}

int spool_getattr(struct spool *sp, const char *path, struct stat *st)
{
	struct spool_node *n;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0)
		goto out;
	if (!l.d) {
		virtual_dir_stat(sp, st, 0755);
		goto out;
	}
	n = lookup(&l, &rc);
	if (n) {
		node_stat(sp, n, l.view, st);
		rc = 0;
	}
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

int spool_readdir(struct spool *sp, const char *path, spool_fill_fn fill,
		  void *ctx)
{
	struct spool_node *dir;
	struct stat st;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0)
		goto out;
	virtual_dir_stat(sp, &st, 0755);
	fill(ctx, ".", &st);
	fill(ctx, "..", &st);
	if (!l.d) {
		for (size_t i = 0; i < sp->ndests; i++)
			fill(ctx, sp->dests[i].conf->name, &st);
		goto out;
	}
	dir = lookup(&l, &rc);
	if (!dir)
		goto out;
	if (!dir->is_dir) {
		rc = -ENOTDIR;
		goto out;
	}
	rc = 0;
	if (l.view == VIEW_MAIN && !*l.rel) {
		virtual_dir_stat(sp, &st, 0555);
		fill(ctx, ".pending", &st);
		virtual_dir_stat(sp, &st, 0755);
		fill(ctx, ".failed", &st);
	}
	for (size_t b = 0; b < dir->tabsize; b++) {
		for (struct spool_node *k = dir->tab[b]; k; k = k->hnext) {
			if (!visible(k, l.view))
				continue;
			node_stat(sp, k, l.view, &st);
			if (fill(ctx, k->name, &st))
				goto out;
		}
	}
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* Resolve a path that must name a node a user may change.  Dest roots and
 * view roots come back as the root node with *is_root set. */
static struct spool_node *lookup_mutable(struct spool *sp, const char *path,
					 struct loc *l, int *err)
{
	struct spool_node *n;

	*err = parse_path(sp, path, l);
	if (*err < 0)
		return NULL;
	if (!l->d || l->view == VIEW_PENDING) {
		*err = -EACCES;
		return NULL;
	}
	n = lookup(l, err);
	return n;
}

int spool_mkdir(struct spool *sp, const char *path, mode_t mode, uid_t uid,
		gid_t gid)
{
	struct spool_node *dir, *n;
	const char *name;
	struct spool_row r;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0 || !l.d || l.view != VIEW_MAIN) {
		rc = rc == 0 || l.new_at_root ? -EACCES : rc;
		goto out;
	}
	dir = lookup_parent(&l, &name, &rc);
	if (!dir)
		goto out;
	if (dir_lookup(dir, name, strlen(name))) {
		rc = -EEXIST;
		goto out;
	}
	n = node_new(l.d, name, true);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	n->mode = mode & 07777;
	n->uid = uid;
	n->gid = gid;
	n->mtime = n->ctime = now_ts();
	n->parent = dir;
	node_to_row(n, &r);
	if (spool_journal_insert(sp->j, &r) < 0) {
		rc = spool_journal_errno(sp->j);
		node_free(n);
		goto out;
	}
	n->id = r.id;
	rc = dir_attach(sp, dir, n);
	if (rc < 0) {
		spool_journal_delete(sp->j, n->id);
		node_free(n);
		goto out;
	}
	dir->mtime = dir->ctime = n->mtime;
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

int spool_rmdir(struct spool *sp, const char *path)
{
	struct spool_node *n;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	n = lookup_mutable(sp, path, &l, &rc);
	if (!n)
		goto out;
	if (!n->is_dir) {
		rc = -ENOTDIR;
		goto out;
	}
	if (n->is_root) {
		rc = -EACCES;
		goto out;
	}
	if (n->nkids) {
		rc = -ENOTEMPTY;
		goto out;
	}
	if (spool_journal_delete(sp->j, n->id) < 0) {
		rc = spool_journal_errno(sp->j);
		goto out;
	}
	/* its files may have left the server's copy of it already */
	if (n->area == SPOOL_AREA_MAIN)
		uploader_prune_locked(n->dest, node_relpath_locked(n));
	dir_detach(sp, n);
	n->refs++;
	node_put_locked(sp, n);
	rc = 0;
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* Forget a file: cancel its upload, free its content.  A partial upload
 * on a server (and, with delete_remote, the uploaded copy) is removed by a
 * worker through the trash area. */
static void file_unlink_locked(struct spool *sp, struct spool_node *n)
{
	/* only a copy on the file's own destination: one on a fallback
	 * destination may since have been overwritten by that destination's
	 * own file of the same name, which nothing there kept from it */
	bool del_remote = n->area == SPOOL_AREA_MAIN && n->rdest == n->dest &&
			  n->rpath && n->dest->conf->delete_remote;
	bool had_data = n->has_data;

	queue_remove_locked(n);
	dir_detach(sp, n);
	n->gen++;		/* cancels a running upload */
	if (n->streaming)
		pthread_cond_broadcast(&sp->stream_cond);
	/* the content goes only after the journal forgot it (see
	 * node_free_data_locked()) */
	n->has_data = false;
	if (!del_remote)
		node_forget_copy(n);
	/* a commit done unknown to the journal (tmp_to) made an uploaded
	 * copy: it goes or stays as one would */
	if (!(n->area == SPOOL_AREA_MAIN && n->tmp_dest == n->dest &&
	      n->dest->conf->delete_remote)) {
		free(n->tmp_to);
		n->tmp_to = NULL;
	}
	if (n->rtmp || del_remote) {
		n->area = SPOOL_AREA_TRASH;
		n->attempts = 0;
		n->ready_at = spool_now_ms();
		dir_attach(sp, sp->trash, n);
		node_save_locked(sp, n);
		node_requeue_locked(sp, n);
		if (had_data)
			node_recycle_data_locked(sp, n);
		return;
	}
	spool_journal_delete(sp->j, n->id);
	if (had_data)
		node_recycle_data_locked(sp, n);
	n->refs++;
	node_put_locked(sp, n);
}

int spool_unlink(struct spool *sp, const char *path)
{
	struct spool_node *n;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	n = lookup_mutable(sp, path, &l, &rc);
	if (!n)
		goto out;
	if (n->is_dir) {
		rc = n->is_root ? -EACCES : -EISDIR;
		goto out;
	}
	if (n->parent) {
		n->parent->mtime = n->parent->ctime = now_ts();
	}
	file_unlink_locked(sp, n);
	rc = 0;
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* After a move: every file beneath N is re-evaluated (and, when it came
 * out of .failed or changed destination, retried from scratch).  A file
 * moved to another destination forgets its copy on the first one (it stays
 * there); a stale copy left behind by the move goes (see
 * node_stale_copy_locked()). */
static void subtree_moved_locked(struct spool *sp, struct spool_node *n,
				 bool fresh_start, bool other_dest)
{
	if (n->is_dir) {
		for (size_t b = 0; b < n->tabsize; b++)
			for (struct spool_node *k = n->tab[b]; k; k = k->hnext)
				subtree_moved_locked(sp, k, fresh_start,
						     other_dest);
		node_save_locked(sp, n);
		return;
	}
	queue_remove_locked(n);		/* before its rpath changes */
	if (other_dest)
		node_let_go_of_copy_locked(sp, n, false);
	else
		node_stale_copy_locked(sp, n, true);
	n->meta_gave_up = false;
	if (fresh_start) {
		n->attempts = 0;
		n->target = NULL;
		node_set_error_locked(n, NULL);
		n->ready_at = spool_now_ms();
		if (n->state == SPOOL_FAILED)
			node_set_state_locked(sp, n, SPOOL_QUEUED);
	}
	node_requeue_locked(sp, n);
	node_save_locked(sp, n);
}

static void set_subtree_home(struct spool_node *n, struct spool_dest *d,
			     int area)
{
	n->dest = d;
	n->area = area;
	if (n->is_dir)
		for (size_t b = 0; b < n->tabsize; b++)
			for (struct spool_node *k = n->tab[b]; k; k = k->hnext)
				set_subtree_home(k, d, area);
}

static bool subtree_all_local(const struct spool_node *n)
{
	if (!n->is_dir)
		return n->has_data;
	for (size_t b = 0; b < n->tabsize; b++)
		for (struct spool_node *k = n->tab[b]; k; k = k->hnext)
			if (!subtree_all_local(k))
				return false;
	return true;
}

/* Remove directories of the failed area left empty by a move. */
static void prune_failed_dirs_locked(struct spool *sp, struct spool_node *dir)
{
	while (dir && !dir->is_root && dir->area == SPOOL_AREA_FAILED &&
	       dir->nkids == 0) {
		struct spool_node *up = dir->parent;

		spool_journal_delete(sp->j, dir->id);
		dir_detach(sp, dir);
		dir->refs++;
		node_put_locked(sp, dir);
		dir = up;
	}
}

int spool_rename(struct spool *sp, const char *from, const char *to,
		 unsigned int flags)
{
	struct spool_node *src, *tdir, *old, *oldparent;
	struct loc lf, lt;
	const char *tname;
	bool fresh;
	char *newname;
	int rc;

	if (flags & ~(unsigned int)RENAME_NOREPLACE)
		return -EINVAL;
	pthread_mutex_lock(&sp->lock);
	src = lookup_mutable(sp, from, &lf, &rc);
	if (!src)
		goto out;
	rc = parse_path(sp, to, &lt);
	if (rc < 0) {
		rc = lt.new_at_root ? -EACCES : rc;
		goto out;
	}
	if (src->is_root || !lt.d || lt.view != VIEW_MAIN) {
		rc = -EACCES;
		goto out;
	}
	tdir = lookup_parent(&lt, &tname, &rc);
	if (!tdir)
		goto out;
	if (!*tname) {
		rc = -EACCES;
		goto out;
	}
	for (struct spool_node *p = tdir; p; p = p->parent) {
		if (p == src) {
			rc = -EINVAL;
			goto out;
		}
	}
	if (lf.d != lt.d && !subtree_all_local(src)) {
		/* content only on the server: let mv copy it across */
		rc = -EXDEV;
		goto out;
	}
	old = dir_lookup(tdir, tname, strlen(tname));
	if (old == src) {
		rc = 0;
		goto out;
	}
	if (old) {
		if (flags & RENAME_NOREPLACE) {
			rc = -EEXIST;
			goto out;
		}
		if (old->is_dir && !src->is_dir) {
			rc = -EISDIR;
			goto out;
		}
		if (!old->is_dir && src->is_dir) {
			rc = -ENOTDIR;
			goto out;
		}
		if (old->is_dir && old->nkids) {
			rc = -ENOTEMPTY;
			goto out;
		}
	}
	newname = strdup(tname);
	if (!newname) {
		rc = -ENOMEM;
		goto out;
	}
	spool_journal_begin(sp->j);
	if (old && old->is_dir) {
		spool_journal_delete(sp->j, old->id);
		dir_detach(sp, old);
		old->refs++;
		node_put_locked(sp, old);
	} else if (old) {
		file_unlink_locked(sp, old);
	}
	fresh = lf.view == VIEW_FAILED || lf.d != lt.d;
	oldparent = src->parent;
	dir_detach(sp, src);
	free(src->name);
	src->name = newname;
	set_subtree_home(src, lt.d, SPOOL_AREA_MAIN);
	rc = dir_attach(sp, tdir, src);
	oldparent->mtime = oldparent->ctime = now_ts();
	tdir->mtime = tdir->ctime = oldparent->mtime;
	src->ctime = oldparent->mtime;
	subtree_moved_locked(sp, src, fresh, lf.d != lt.d);
	if (lf.view == VIEW_FAILED)
		prune_failed_dirs_locked(sp, oldparent);
	if (spool_journal_commit(sp->j) < 0)
		rc = spool_journal_errno(sp->j);
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

static int setattr_common(struct spool *sp, const char *path,
			  void (*apply)(struct spool_node *n, const void *arg),
			  const void *arg)
{
	struct spool_node *n;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	n = lookup_mutable(sp, path, &l, &rc);
	if (!n)
		goto out;
	rc = 0;
	if (n->is_root)		/* rsync sets times on the dest root: accept */
		goto out;
	apply(n, arg);
	n->ctime = now_ts();
	if (!n->is_dir && !n->busy && n->state == SPOOL_UPLOADED) {
		n->meta_gave_up = false;
		node_requeue_locked(sp, n);
	}
	node_save_locked(sp, n);
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

static void apply_mode(struct spool_node *n, const void *arg)
{
	n->mode = *(const mode_t *)arg & 07777;
}

int spool_chmod(struct spool *sp, const char *path, mode_t mode)
{
	return setattr_common(sp, path, apply_mode, &mode);
}

struct owner {
	uid_t uid;
	gid_t gid;
};

static void apply_owner(struct spool_node *n, const void *arg)
{
	const struct owner *o = arg;

	if (o->uid != (uid_t)-1)
		n->uid = o->uid;
	if (o->gid != (gid_t)-1)
		n->gid = o->gid;
}

int spool_chown(struct spool *sp, const char *path, uid_t uid, gid_t gid)
{
	struct owner o = { uid, gid };

	return setattr_common(sp, path, apply_owner, &o);
}

static void apply_times(struct spool_node *n, const void *arg)
{
	const struct timespec *tv = arg;

	if (tv[1].tv_nsec == UTIME_NOW)
		n->mtime = now_ts();
	else if (tv[1].tv_nsec != UTIME_OMIT)
		n->mtime = tv[1];
}

int spool_utimens(struct spool *sp, const char *path,
		  const struct timespec tv[2])
{
	return setattr_common(sp, path, apply_times, tv);
}

int spool_statfs(struct spool *sp, struct statvfs *st)
{
	uint64_t max = sp->cfg->max_size, used;

	if (statvfs(sp->dir, st) < 0)
		return -errno;
	st->f_namemax = NAME_MAX;
	if (!max || !st->f_frsize)
		return 0;
	pthread_mutex_lock(&sp->lock);
	used = sp->used;
	pthread_mutex_unlock(&sp->lock);
	st->f_blocks = max / st->f_frsize;
	if (used >= max) {
		st->f_bfree = st->f_bavail = 0;
	} else {
		fsblkcnt_t left = (max - used) / st->f_frsize;

		if (left < st->f_bavail)
			st->f_bavail = left;
		if (left < st->f_bfree)
			st->f_bfree = left;
	}
	return 0;
}

/* ---- content -------------------------------------------------------------- */

/*
 * Bytes below stream_mark may already be in a server temp of this content
 * generation (a stream, see uploader.c).  A change there makes that temp
 * stale: a new generation cancels the stream, and its temp is never resumed
 * but goes to the trash.
 */
static void stream_check_locked(struct spool *sp, struct spool_node *n,
				uint64_t from)
{
	if (from >= n->stream_mark)
		return;
	n->gen++;
	n->stream_mark = 0;
	n->no_stream = true;
	pthread_cond_broadcast(&sp->stream_cond);
}

/*
 * The file's content is about to change from byte FROM on: cancel an
 * upload in progress, leave the queue until the next close commits it
 * again.
 *
 * When that overwrites bytes of a committed spool copy (a rewrite, not an
 * append), the journal's "writing" must be on disk before they change:
 * else a power cut could bring back the row that says "queued, N bytes"
 * over a data file already half rewritten, and that mix would be uploaded
 * as the file.  With the row on disk the next mount puts the file in
 * .failed/ as incomplete instead (an append needs no sync: the row's N
 * bytes are still the old ones).  One fsync of the journal, only for a
 * rewrite of a file whose spool copy is still there.
 */
static int content_changed_locked(struct spool *sp, struct spool_node *n,
				  uint64_t from)
{
	bool overwrite = n->has_data && from < n->size;
	int rc;

	/* an inline copy no longer guards it once the row says "writing" */
	if (n->state != SPOOL_WRITING &&
	    (rc = inline_unguard_locked(sp, n)) < 0)
		return rc;
	n->wseq++;
	n->mtime = n->ctime = now_ts();
	if (n->state == SPOOL_WRITING) {
		stream_check_locked(sp, n, from);
		return 0;
	}
	/*
	 * One commit: the stale copy's trash entry (node_stale_copy_locked()
	 * saves N with it) must not reach the journal before N says
	 * "writing".  Else a kill in between leaves a row that is still
	 * queued, with a spool copy just emptied (spool_open_file(O_TRUNC)
	 * of an uploaded file makes a new one first): at the next mount it
	 * is "lost", and the trash entry removes the server's copy, the
	 * last one of what close() had acknowledged.
	 */
	spool_journal_begin(sp->j);
	queue_remove_locked(n);
	n->gen++;
	node_stale_copy_locked(sp, n, true);
	n->stream_mark = 0;
	n->no_stream = false;
	n->attempts = 0;
	n->target = NULL;
	n->meta_gave_up = false;
	node_set_error_locked(n, NULL);
	node_set_state_locked(sp, n, SPOOL_WRITING);
	node_save_locked(sp, n);
	spool_journal_commit(sp->j);
	if (overwrite && sp->cfg->fsync == SPOOLFS_FSYNC_CLOSE) {
		rc = spool_sync(sp);
		if (rc < 0) {
			log_error("%s: cannot fsync the journal before '%s' is "
				  "rewritten: %s", n->dest->conf->name, n->name,
				  strerror(-rc));
			return rc;
		}
	}
	return 0;
}

static struct spool_handle *handle_new(struct spool *sp, struct spool_node *n,
				       int fd, bool writable)
{
	struct spool_handle *h = calloc(1, sizeof(*h));

	if (!h)
		return NULL;
	h->sp = sp;
	h->node = n;
	h->fd = fd;
	h->writable = writable;
	h->hnext = n->handles;
	n->handles = h;
	n->refs++;
	n->openers++;
	if (writable)
		n->writers++;
	return h;
}

int spool_create(struct spool *sp, const char *path, mode_t mode, uid_t uid,
		 gid_t gid, int flags, struct spool_handle **hp)
{
	struct spool_node *dir, *n;
	struct spool_row r;
	const char *name;
	struct loc l;
	int rc, fd;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0 || !l.d || l.view != VIEW_MAIN) {
		rc = rc == 0 || l.new_at_root ? -EACCES : rc;
		goto out;
	}
	dir = lookup_parent(&l, &name, &rc);
	if (!dir)
		goto out;
	n = dir_lookup(dir, name, strlen(name));
	if (n) {
		pthread_mutex_unlock(&sp->lock);
		if (flags & O_EXCL)
			return -EEXIST;
		return spool_open_file(sp, path, flags, hp);
	}
	n = node_new(l.d, name, false);
	if (!n) {
		rc = -ENOMEM;
		goto out;
	}
	n->mode = mode & 07777;
	n->uid = uid;
	n->gid = gid;
	n->mtime = n->ctime = now_ts();
	n->state = SPOOL_WRITING;
	n->gen = 1;
	n->has_data = true;
	n->ready_at = spool_now_ms();
	n->parent = dir;
	node_to_row(n, &r);
	if (spool_journal_insert(sp->j, &r) < 0) {
		rc = spool_journal_errno(sp->j);
		node_free(n);
		goto out;
	}
	n->id = r.id;
	fd = data_create_new(sp, n);
	if (fd < 0) {
		rc = -errno;
		spool_journal_delete(sp->j, n->id);
		node_free(n);
		goto out;
	}
	rc = dir_attach(sp, dir, n);
	if (rc < 0) {
		close(fd);
		if (n->mfd >= 0)
			mem_release_locked(sp, n);
		else
			data_unlink(sp, n->id);
		spool_journal_delete(sp->j, n->id);
		node_free(n);
		goto out;
	}
	dir->mtime = dir->ctime = n->mtime;
	*hp = handle_new(sp, n, fd, true);
	if (!*hp) {
		close(fd);
		rc = -ENOMEM;
	}
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* Download RPATH from DC into the spool file TMPNAME (no lock held). */
static int fetch_once(struct spool *sp, const struct spoolfs_dest *dc,
		      const char *rpath, const char *tmpname,
		      struct spoolfs_error *err)
{
	struct spoolfs_conn *conn;
	int fd, rc = 0;

	fd = openat(sp->datafd, tmpname, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot create spool file: %m");
	conn = spoolfs_conn_open(dc, err);
	if (!conn || spoolfs_conn_get(conn, rpath, fd, NULL, NULL, err) < 0)
		rc = -1;
	spoolfs_conn_close(conn);
	close(fd);
	return rc;
}

/*
 * Fetch an uploaded file's content back from its destination.  Called and
 * returns with the lock held; drops it for the transfer.  A worker may be
 * renaming the file on the server meanwhile: when the name we asked for is
 * gone, wait for it and ask for the name the file has now.
 */
static int fetch_locked(struct spool *sp, struct spool_node *n)
{
	struct spoolfs_error err = { 0 };
	const struct spoolfs_dest *dc;
	char *rpath = NULL, tmpname[48];
	uint64_t gen = n->gen;
	int rc = -1;

	while (n->fetching)
		pthread_cond_wait(&sp->cond, &sp->lock);
	if (n->has_data)
		return 0;
	n->fetching = true;
	n->refs++;
	snprintf(tmpname, sizeof(tmpname), "%" PRId64 ".fetch", n->id);
	for (int tries = 0; tries < 5; tries++) {
		if (!n->rdest || !n->rpath) {
			spoolfs_error_set(&err, SPOOLFS_E_NOTFOUND,
					  "the file is not on any server");
			break;
		}
		if (rpath && strcmp(rpath, n->rpath) == 0 && tries > 0)
			break;	/* same name again: it really is gone */
		free(rpath);
		rpath = strdup(n->rpath);
		dc = n->rdest->conf;
		if (!rpath)
			break;
		pthread_mutex_unlock(&sp->lock);
		rc = fetch_once(sp, dc, rpath, tmpname, &err);
		pthread_mutex_lock(&sp->lock);
		if (rc == 0 || err.code != SPOOLFS_E_NOTFOUND)
			break;
		while (n->busy)
			pthread_cond_wait(&sp->cond, &sp->lock);
	}
	if (rc < 0) {
		log_error("%s: cannot read back '%s' from the server: %s",
			  n->rdest ? n->rdest->conf->name : n->dest->conf->name,
			  rpath ? rpath : n->name, err.msg);
		rc = spoolfs_err_to_errno(err.code);
		if (rc == -ENOENT)
			rc = -EIO;
	}
	if (rc == 0 && n->gen == gen && !n->has_data) {
		char name[32];

		snprintf(name, sizeof(name), "%" PRId64, n->id);
		if (renameat(sp->datafd, tmpname, sp->datafd, name) < 0) {
			rc = -errno;
		} else {
			UNCHARGE(sp, n);
			n->has_data = true;
			CHARGE(sp, n);
		}
	}
	if (rc < 0 || !n->has_data)
		unlinkat(sp->datafd, tmpname, 0);
	n->fetching = false;
	pthread_cond_broadcast(&sp->cond);
	free(rpath);
	node_put_locked(sp, n);
	return rc;
}

int spool_open_file(struct spool *sp, const char *path, int flags,
		    struct spool_handle **hp)
{
	bool writable = (flags & O_ACCMODE) != O_RDONLY;
	bool trunc = writable && (flags & O_TRUNC);
	struct spool_node *n;
	struct loc l;
	int rc, fd = -1;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0)
		goto out;
	if (!l.d) {
		rc = -EISDIR;
		goto out;
	}
	n = lookup(&l, &rc);
	if (!n)
		goto out;
	if (n->is_dir) {
		rc = -EISDIR;
		goto out;
	}
	if (writable && l.view != VIEW_MAIN) {
		rc = -EACCES;
		goto out;
	}
	n->refs++;		/* n may be unlinked while we fetch */
	if (!n->has_data) {
		if (trunc) {
			fd = data_create(sp, n);
			if (fd < 0) {
				rc = -errno;
				goto out_put;
			}
			n->has_data = true;
		} else {
			rc = fetch_locked(sp, n);
			if (rc < 0)
				goto out_put;
		}
	}
	if (!n->linked) {
		rc = -ENOENT;
		goto out_put;
	}
	if (fd < 0)
		fd = node_data_open_locked(sp, n, writable ? O_RDWR : O_RDONLY);
	if (fd < 0) {
		rc = -errno;
		log_error("%s: spool copy of '%s' is missing: %m",
			  n->dest->conf->name, n->name);
		goto out_put;
	}
	if (trunc) {
		bool mem = n->mfd >= 0;

		rc = content_changed_locked(sp, n, 0);
		if (rc < 0)
			goto out_put;
		if (mem && n->mfd < 0) {
			/* spilled: fd is the memfd that was */
			close(fd);
			fd = spool_data_open(sp, n->id, O_RDWR);
			if (fd < 0) {
				rc = -errno;
				goto out_put;
			}
		}
		if (ftruncate(fd, 0) < 0) {
			rc = -errno;
			goto out_put;
		}
		UNCHARGE(sp, n);
		n->size = 0;
		CHARGE(sp, n);
		mem_resize_locked(sp, n);
	}
	*hp = handle_new(sp, n, fd, writable);
	if (!*hp)
		rc = -ENOMEM;
	else
		fd = -1;
out_put:
	if (fd >= 0)
		close(fd);
	node_put_locked(sp, n);
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

int spool_handle_fd(const struct spool_handle *h)
{
	return h->fd;
}

int spool_handle_getattr(struct spool_handle *h, struct stat *st)
{
	pthread_mutex_lock(&h->sp->lock);
	node_stat(h->sp, h->node, VIEW_MAIN, st);
	pthread_mutex_unlock(&h->sp->lock);
	return 0;
}

ssize_t spool_read(struct spool_handle *h, char *buf, size_t size, off_t off)
{
	ssize_t n = pread(h->fd, buf, size, off);

	return n < 0 ? -errno : n;
}

/*
 * Data may not take the last few megabytes of the spool disk: the journal
 * needs them to record what happens to the files already there.
 */
#define JOURNAL_HEADROOM (4ull << 20)

static bool disk_has_room(struct spool *sp, uint64_t delta)
{
	struct statvfs sv;
	uint64_t avail, size, reserve;

	if (fstatvfs(sp->datafd, &sv) < 0)
		return true;	/* the write itself will tell */
	avail = (uint64_t)sv.f_bavail * sv.f_frsize;
	size = (uint64_t)sv.f_blocks * sv.f_frsize;
	reserve = size / 20 < JOURNAL_HEADROOM ? size / 20 : JOURNAL_HEADROOM;
	return avail >= delta + reserve;
}

int spool_write_begin(struct spool_handle *h, size_t size, off_t off)
{
	struct spool *sp = h->sp;
	struct spool_node *n = h->node;
	uint64_t end = (uint64_t)off + size, delta = 0;
	int rc = 0;

	if (!h->writable)
		return -EBADF;
	pthread_mutex_lock(&sp->lock);
	if (n->mfd >= 0 &&
	    (end > INLINE_FILE_MAX ||
	     (end > n->size && sp->mem_bytes + (end - n->size) > MEM_TOTAL_MAX))) {
		rc = mem_spill_locked(sp, n);
		if (rc < 0) {
			h->write_errno = -rc;
			goto out;
		}
	}
	if (end > n->size)
		delta = end - n->size;
	if (delta && ((sp->cfg->max_size &&
		       sp->used + delta > sp->cfg->max_size) ||
		      !disk_has_room(sp, delta))) {
		rc = -ENOSPC;
		h->write_errno = ENOSPC;
		goto out;
	}
	rc = content_changed_locked(sp, n, (uint64_t)off);
	if (rc < 0) {
		h->write_errno = -rc;
		goto out;
	}
	sp->used += delta;	/* reserved until spool_write_end() */
	n->wflight++;
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

void spool_write_end(struct spool_handle *h, size_t reserved, ssize_t written,
		     off_t off)
{
	struct spool *sp = h->sp;
	struct spool_node *n = h->node;
	uint64_t end, delta = 0;
	bool kick;

	pthread_mutex_lock(&sp->lock);
	end = (uint64_t)off + reserved;
	if (end > n->size)
		delta = end - n->size;
	/* delta can be smaller than reserved now if another writer grew the
	 * file meanwhile; the reservation was never more than 'reserved'. */
	sp->used -= delta <= sp->used ? delta : sp->used;
	if (written > 0 && (uint64_t)off + (uint64_t)written > n->size) {
		UNCHARGE(sp, n);
		n->size = (uint64_t)off + (uint64_t)written;
		CHARGE(sp, n);
		mem_resize_locked(sp, n);
	}
	if (--n->wflight == 0)
		pthread_cond_broadcast(&sp->write_cond);
	n->wseq++;
	/* a stream may have read past OFF while this write was under way */
	stream_check_locked(sp, n, (uint64_t)off);
	if (written < 0)
		h->write_errno = errno ? errno : EIO;
	else
		h->unkicked += (uint64_t)written;
	if (written > 0 && n->state == SPOOL_WRITING &&
	    n->size >= STREAM_MIN && !n->busy && !n->no_stream &&
	    (uint64_t)off + (uint64_t)written == n->size)
		stream_offer_locked(sp, n);
	kick = h->unkicked >= KICK_BYTES &&
	       sp->cfg->fsync == SPOOLFS_FSYNC_CLOSE;
	if (kick)
		h->unkicked = 0;
	pthread_mutex_unlock(&sp->lock);
	/* a hint: a failure shows up at the fdatasync of close() */
	if (kick)
		(void)sync_file_range(h->fd, 0, 0, SYNC_FILE_RANGE_WRITE);
}

ssize_t spool_write(struct spool_handle *h, const char *buf, size_t size,
		    off_t off)
{
	ssize_t w;
	int rc;

	rc = spool_write_begin(h, size, off);
	if (rc < 0)
		return rc;
	w = pwrite(h->fd, buf, size, off);
	rc = errno;
	spool_write_end(h, size, w, off);
	errno = rc;
	return w < 0 ? -rc : w;
}

int spool_truncate(struct spool *sp, const char *path, struct spool_handle *h,
		   off_t size)
{
	struct spool_handle *own = NULL;
	struct spool_node *n;
	int rc;

	if (!h) {
		rc = spool_open_file(sp, path, size ? O_RDWR : O_RDWR | O_TRUNC,
				     &own);
		if (rc < 0)
			return rc;
		h = own;
	}
	if (!h->writable)
		return -EBADF;
	n = h->node;
	pthread_mutex_lock(&sp->lock);
	if ((uint64_t)size > n->size && sp->cfg->max_size &&
	    sp->used + ((uint64_t)size - n->size) > sp->cfg->max_size) {
		rc = -ENOSPC;
		pthread_mutex_unlock(&sp->lock);
		goto out;
	}
	rc = 0;
	if (n->mfd >= 0 && (uint64_t)size > INLINE_FILE_MAX)
		rc = mem_spill_locked(sp, n);
	if (rc == 0)
		rc = content_changed_locked(sp, n, (uint64_t)size);
	if (rc < 0) {
		/* the spool copy is as it was */
	} else if (ftruncate(h->fd, size) < 0) {
		rc = -errno;
	} else {
		UNCHARGE(sp, n);
		n->size = (uint64_t)size;
		CHARGE(sp, n);
		mem_resize_locked(sp, n);
		rc = 0;
	}
	pthread_mutex_unlock(&sp->lock);
out:
	if (own) {
		int frc = spool_flush(own);

		spool_release(own);
		if (rc == 0)
			rc = frc;
	}
	return rc;
}

/* Read the SIZE bytes of a small written file for its inline copy. */
static void *inline_read(int fd, uint64_t size)
{
	char *buf = malloc(size ? size : 1);
	size_t got = 0;

	while (buf && got < size) {
		ssize_t r = pread(fd, buf + got, size - got, (off_t)got);

		if (r <= 0) {
			if (r < 0 && errno == EINTR)
				continue;
			free(buf);
			return NULL;	/* short: the fsync way, which knows */
		}
		got += (size_t)r;
	}
	return buf;
}

/*
 * Commit a written file: make it durable, queue it, then fsync the
 * journal.  A small file's content goes into the journal with its row (see
 * "Inline copies"); a bigger one's data file is fsynced first (and, for a
 * recycled data file, the data directory that holds its new name).  The
 * journal's fsync runs without the lock: workers and other writers go on
 * meanwhile.  Its failure fails the close() but leaves the file queued.
 */
static int commit_written(struct spool_handle *h)
{
	struct spool *sp = h->sp;
	struct spool_node *n = h->node;
	bool durable = sp->cfg->fsync == SPOOLFS_FSYNC_CLOSE, renamed, saved;
	bool small;
	uint64_t seq, size;
	void *copy;
	int rc = 0;

	pthread_mutex_lock(&sp->lock);
	/*
	 * Another handle's write under way (two writers of one file) has
	 * moved wseq on, but not yet the size: committing now would queue
	 * the file as it was before that write, which then lands in a file
	 * already queued (its own close() commits nothing, and a small
	 * file's only durable copy, the inline one, stays the old content).
	 * A write that starts from here on moves wseq on: no commit then,
	 * the next close commits.
	 */
	while (n->wflight > 0)
		pthread_cond_wait(&sp->write_cond, &sp->lock);
	if (!n->linked || n->state != SPOOL_WRITING || n->area != SPOOL_AREA_MAIN) {
		pthread_mutex_unlock(&sp->lock);
		return 0;
	}
	if (h->write_errno) {
		/* the writer was told; the file is not what it meant to write */
		rc = -h->write_errno;
		pthread_mutex_unlock(&sp->lock);
		return rc;
	}
	seq = n->wseq;
	size = n->size;
	/* a file in memory has its own budget (MEM_TOTAL_MAX), and always
	 * its copy in the journal, also with fsync = never (not synced:
	 * like the rest of the journal it outlives a killed daemon) */
	small = size <= INLINE_FILE_MAX &&
		(n->mfd >= 0 ||
		 (durable && sp->inline_bytes -
			     (n->inlined ? n->inline_len : 0) + size <=
			     INLINE_TOTAL_MAX));
	if (!small && n->mfd >= 0)
		rc = mem_spill_locked(sp, n);
	renamed = n->data_renamed;
	pthread_mutex_unlock(&sp->lock);
	if (rc < 0)
		return rc;

	copy = small ? inline_read(h->fd, size) : NULL;
	if (small && !copy) {
		/* the fsync way, which needs a data file */
		pthread_mutex_lock(&sp->lock);
		rc = mem_spill_locked(sp, n);
		renamed = n->data_renamed;
		pthread_mutex_unlock(&sp->lock);
		if (rc < 0)
			return rc;
	}
	if (durable && !copy && (fdatasync(h->fd) < 0 ||
				 (renamed && fsync(sp->datafd) < 0))) {
		rc = -errno;
		log_error("%s: cannot fsync spool copy of '%s': %m",
			  n->dest->conf->name, n->name);
		return rc;
	}

	pthread_mutex_lock(&sp->lock);
	saved = false;
	if (durable && renamed && !copy)
		n->data_renamed = false;
	if (n->linked && n->state == SPOOL_WRITING && n->wseq == seq &&
	    n->area == SPOOL_AREA_MAIN) {
		spool_journal_begin(sp->j);
		if (copy) {
			/* inlined first: a copy may be there from now on */
			sp->inline_bytes += size -
					    (n->inlined ? n->inline_len : 0);
			n->inlined = true;
			n->inline_len = (uint32_t)size;
			if (spool_journal_inline_put(sp->j, n->id, copy,
						     size) < 0)
				rc = spool_journal_errno(sp->j);
		} else if (n->inlined) {
			/* the fsync way: an older copy must not come back */
			inline_drop_locked(sp, n);
			if (n->inlined)
				rc = spool_journal_errno(sp->j);
		}
		if (rc == 0) {
			n->committed_wseq = seq;
			node_set_state_locked(sp, n, SPOOL_QUEUED);
			n->ready_at = spool_now_ms() +
				      (int64_t)sp->cfg->settle_ms;
			rc = node_save_checked_locked(sp, n);
			if (rc < 0)
				node_set_state_locked(sp, n, SPOOL_WRITING);
		}
		if (spool_journal_commit(sp->j) < 0 && rc == 0) {
			rc = spool_journal_errno(sp->j);
			node_set_state_locked(sp, n, SPOOL_WRITING);
		}
		if (rc < 0) {
			log_error("%s: cannot queue '%s': journal: %s",
				  n->dest->conf->name, n->name,
				  spool_journal_errmsg(sp->j));
			/* still "writing": the next mount takes data/ID */
			if (n->mfd >= 0)
				mem_spill_locked(sp, n);
		} else {
			node_requeue_locked(sp, n);
			saved = true;
		}
	}
	if (n->streaming)
		pthread_cond_broadcast(&sp->stream_cond);
	pthread_mutex_unlock(&sp->lock);
	free(copy);
	if (saved && durable) {
		rc = spool_sync(sp);
		if (rc < 0)
			log_error("%s: cannot fsync the journal after queueing "
				  "'%s': %s", n->dest->conf->name, n->name,
				  strerror(-rc));
	}
	return rc;
}

int spool_flush(struct spool_handle *h)
{
	return h->writable ? commit_written(h) : 0;
}

int spool_fsync(struct spool_handle *h, int datasync)
{
	struct spool *sp = h->sp;
	int rc = 0;

	/* being written: only data/ID can be made durable (a committed
	 * file in memory is durable through its inline copy) */
	pthread_mutex_lock(&sp->lock);
	if (h->node->mfd >= 0 && h->node->state == SPOOL_WRITING)
		rc = mem_spill_locked(sp, h->node);
	pthread_mutex_unlock(&sp->lock);
	if (rc < 0)
		return rc;
	rc = datasync ? fdatasync(h->fd) : fsync(h->fd);
	return rc < 0 ? -errno : 0;
}

void spool_release(struct spool_handle *h)
{
	struct spool *sp = h->sp;
	struct spool_node *n = h->node;
	bool last_writer;

	if (!h)
		return;
	pthread_mutex_lock(&sp->lock);
	last_writer = h->writable && n->writers == 1;
	pthread_mutex_unlock(&sp->lock);
	/* every close() flushed already; this catches a writer whose flush
	 * was overtaken by another handle's write */
	if (last_writer)
		commit_written(h);
	pthread_mutex_lock(&sp->lock);
	if (h->write_errno && n->writers == 1 && n->linked &&
	    n->state == SPOOL_WRITING && n->area == SPOOL_AREA_MAIN) {
		char msg[160];

		snprintf(msg, sizeof(msg), "incomplete: a write failed (%s); "
			 "not uploaded", strerror(h->write_errno));
		log_warn("%s: '%s' %s", n->dest->conf->name, n->name, msg);
		n->writers--;	/* not open any more: the row says so */
		node_fail_locked(sp, n, msg);
		n->writers++;
	}
	for (struct spool_handle **pp = &n->handles; *pp; pp = &(*pp)->hnext)
		if (*pp == h) {
			*pp = h->hnext;
			break;
		}
	close(h->fd);
	n->openers--;
	if (h->writable && n->writers == 1 && n->streaming)
		pthread_cond_broadcast(&sp->stream_cond);
	if (h->writable && --n->writers == 0 && n->linked &&
	    n->state == SPOOL_QUEUED) {
		/* the writer is done: the file may go now */
		node_save_locked(sp, n);
		pthread_cond_broadcast(&sp->cond);
	}
	if (n->openers == 0 && n->linked && n->state == SPOOL_UPLOADED &&
	    !n->busy && !n->dest->conf->keep_uploaded)
		node_free_data_locked(sp, n);
	node_put_locked(sp, n);
	pthread_mutex_unlock(&sp->lock);
	free(h);
}

/* ---- xattrs ---------------------------------------------------------------- */

static const char *const xattr_names[] = {
	"user.spoolfs.state", "user.spoolfs.attempts", "user.spoolfs.error",
	"user.spoolfs.remote", "user.spoolfs.progress",
	"user.spoolfs.next_retry",
};

/* Format attribute I of N into buf (malloc'd); NULL: not present. */
static char *xattr_value_locked(const struct spool_node *n, size_t i)
{
	char *s = NULL;

	switch (i) {
	case 0:
		return strdup(spool_state_name(n->state));
	case 1:
		if (asprintf(&s, "%d", n->attempts) < 0)
			return NULL;
		return s;
	case 2:
		return strdup(n->error ? n->error : "");
	case 3:
		if (!n->rdest || !n->rpath)
			return NULL;
		return spoolfs_remote_url(n->rdest->conf, n->rpath);
	case 4:
		if (asprintf(&s, "%" PRIu64,
			     n->state == SPOOL_UPLOADED ? n->size :
			     n->progress) < 0)
			return NULL;
		return s;
	case 5: {
		time_t t = (time_t)(n->ready_at / 1000);
		struct tm tm;
		char buf[40];

		if (n->state != SPOOL_QUEUED || n->attempts == 0)
			return strdup("");
		localtime_r(&t, &tm);
		strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S%z", &tm);
		return strdup(buf);
	}
	}
	return NULL;
}

int spool_getxattr(struct spool *sp, const char *path, const char *name,
		   char *buf, size_t size)
{
	struct spool_node *n;
	struct loc l;
	char *v = NULL;
	size_t i, len;
	int rc;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0 || !l.d) {
		rc = rc < 0 ? rc : -ENODATA;
		goto out;
	}
	n = lookup(&l, &rc);
	if (!n)
		goto out;
	rc = -ENODATA;
	if (n->is_dir)
		goto out;
	for (i = 0; i < sizeof(xattr_names) / sizeof(xattr_names[0]); i++)
		if (strcmp(name, xattr_names[i]) == 0)
			break;
	if (i == sizeof(xattr_names) / sizeof(xattr_names[0]))
		goto out;
	v = xattr_value_locked(n, i);
	if (!v)
		goto out;
	len = strlen(v);
	if (size == 0) {
		rc = (int)len;
	} else if (size < len) {
		rc = -ERANGE;
	} else {
		memcpy(buf, v, len);
		rc = (int)len;
	}
out:
	pthread_mutex_unlock(&sp->lock);
	free(v);
	return rc;
}

int spool_listxattr(struct spool *sp, const char *path, char *buf, size_t size)
{
	struct spool_node *n;
	size_t need = 0;
	struct loc l;
	int rc;

	pthread_mutex_lock(&sp->lock);
	rc = parse_path(sp, path, &l);
	if (rc < 0 || !l.d) {
		rc = rc < 0 ? rc : 0;
		goto out;
	}
	n = lookup(&l, &rc);
	if (!n)
		goto out;
	rc = 0;
	if (n->is_dir)
		goto out;
	for (size_t i = 0; i < sizeof(xattr_names) / sizeof(xattr_names[0]);
	     i++) {
		size_t len = strlen(xattr_names[i]) + 1;

		if (i == 3 && !n->rdest)
			continue;
		if (size) {
			if (need + len > size) {
				rc = -ERANGE;
				goto out;
			}
			memcpy(buf + need, xattr_names[i], len);
		}
		need += len;
	}
	rc = (int)need;
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* ---- open, recovery, close -------------------------------------------------- */

struct loader {
	struct spool *sp;
	struct spool_node **nodes;
	int64_t *parents;
	size_t n, cap;
	size_t orphans;
};

static struct spool_dest *dest_by_cname(struct spool *sp, const char *name)
{
	return name ? dest_by_name(sp, name, strlen(name)) : NULL;
}

static char *strdup_or_null(const char *s)
{
	return s ? strdup(s) : NULL;
}

static int load_row(void *arg, const struct spool_row *r)
{
	struct loader *ld = arg;
	struct spool *sp = ld->sp;
	struct spool_dest *d = dest_by_cname(sp, r->dest);
	struct spool_node *n;

	if (!d) {
		ld->orphans++;
		return 0;
	}
	if (ld->n == ld->cap) {
		size_t cap = ld->cap ? ld->cap * 2 : 256;
		void *a = realloc(ld->nodes, cap * sizeof(*ld->nodes));
		void *b = realloc(ld->parents, cap * sizeof(*ld->parents));

		if (a)
			ld->nodes = a;
		if (b)
			ld->parents = b;
		if (!a || !b)
			return -1;
		ld->cap = cap;
	}
	n = node_new(d, r->name, r->is_dir);
	if (!n)
		return -1;
	n->id = r->id;
	n->area = r->area;
	n->state = r->state;
	n->size = r->size;
	n->mtime = ns_ts(r->mtime_ns);
	n->ctime = ns_ts(r->ctime_ns);
	n->mode = r->mode;
	n->uid = r->uid;
	n->gid = r->gid;
	n->attempts = r->attempts;
	n->error = strdup_or_null(r->error);
	n->ready_at = r->ready_at;
	n->gen = r->gen;
	n->has_data = r->has_data;
	n->target = dest_by_cname(sp, r->target);
	n->rdest = dest_by_cname(sp, r->rdest);
	n->rpath = n->rdest ? strdup_or_null(r->rpath) : NULL;
	n->mv_to = n->rpath ? strdup_or_null(r->mv_to) : NULL;
	n->rgen = r->rgen;
	/* as node_fail_locked() does now (older journals) */
	if (n->area == SPOOL_AREA_FAILED && n->rgen != n->gen)
		node_forget_copy(n);
	n->rmtime = r->rmtime;
	n->tmp_dest = dest_by_cname(sp, r->tmp_dest);
	n->rtmp = n->tmp_dest ? strdup_or_null(r->rtmp) : NULL;
	n->tmp_to = n->rtmp ? strdup_or_null(r->tmp_to) : NULL;
	n->tmp_gen = r->tmp_gen;
	n->was_open = r->open;
	ld->nodes[ld->n] = n;
	ld->parents[ld->n] = r->parent;
	ld->n++;
	return 0;
}

static struct spool_node *find_loaded(struct loader *ld, int64_t id)
{
	size_t lo = 0, hi = ld->n;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;

		if (ld->nodes[mid]->id < id)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo < ld->n && ld->nodes[lo]->id == id ? ld->nodes[lo] : NULL;
}

static bool data_file_ok(struct spool *sp, const struct spool_node *n)
{
	struct stat st;
	char name[32];

	snprintf(name, sizeof(name), "%" PRId64, n->id);
	return fstatat(sp->datafd, name, &st, 0) == 0 &&
	       (uint64_t)st.st_size >= n->size;
}

/* Remove data files that belong to no node (left by a crash mid-unlink). */
/* Mount-time sweep: DROP is data/drop.ID.  A row that still wants content
 * and has none (the commit dropping it did not reach the disk) gets it
 * back; otherwise it goes. */
static void recover_drop(struct spool *sp, struct loader *ld,
			 const char *dname)
{
	char *end, name[32];
	long long id = strtoll(dname + 5, &end, 10);
	struct spool_node *n = *end || end == dname + 5 ? NULL
			       : find_loaded(ld, id);
	struct stat st;

	snprintf(name, sizeof(name), "%lld", id);
	/* a file still being written is not what drop.ID held */
	if (n && n->has_data && n->state != SPOOL_WRITING &&
	    fstatat(sp->datafd, name, &st, 0) < 0 && errno == ENOENT &&
	    renameat(sp->datafd, dname, sp->datafd, name) == 0) {
		log_info("%s: spool copy of '%s' (id %lld) kept: the journal "
			 "had not recorded that it was dropped",
			 n->dest->conf->name, n->name, id);
		fsync(sp->datafd);
		return;
	}
	unlinkat(sp->datafd, dname, 0);
}

static void sweep_data_dir(struct spool *sp, struct loader *ld)
{
	int fd = dup(sp->datafd);
	DIR *dir = fd >= 0 ? fdopendir(fd) : NULL;
	struct dirent *de;

	if (!dir) {
		if (fd >= 0)
			close(fd);
		return;
	}
	while ((de = readdir(dir))) {
		char *end;
		long long id;
		struct spool_node *n;

		if (de->d_name[0] == '.')
			continue;
		if (strncmp(de->d_name, "drop.", 5) == 0) {
			recover_drop(sp, ld, de->d_name);
			continue;
		}
		id = strtoll(de->d_name, &end, 10);
		n = *end ? NULL : find_loaded(ld, id);
		if (!n || !n->has_data)
			unlinkat(sp->datafd, de->d_name, 0);
	}
	closedir(dir);
}

struct inline_restore {
	struct loader *ld;
	size_t restored;
	int err;		/* the first failure, as -errno */
	char what[160];
};

/* Write the inline copy of row ID back into its data file, if the row
 * wants content ("writing": the data file as it is, which the change of
 * state had fsynced; see "Inline copies"). */
static int restore_one(void *arg, int64_t id, const void *data, size_t len)
{
	struct inline_restore *ir = arg;
	struct spool *sp = ir->ld->sp;
	struct spool_node *n = find_loaded(ir->ld, id);
	size_t done = 0;
	int fd;

	if (!n || n->is_dir || !n->has_data || n->state == SPOOL_WRITING)
		return 0;
	if (n->size != len) {
		/* not what its row committed: the data file is as good */
		log_warn("%s: inline copy of '%s' (id %" PRId64 ") is %zu "
			 "bytes, its row says %" PRIu64 ": not used",
			 n->dest->conf->name, n->name, id, len, n->size);
		return 0;
	}
	fd = spool_data_open(sp, id, O_WRONLY | O_CREAT | O_TRUNC);
	while (fd >= 0 && done < len) {
		ssize_t w = write(fd, (const char *)data + done, len - done);

		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			if (w == 0)
				errno = EIO;
			break;
		}
		done += (size_t)w;
	}
	if (fd < 0 || done < len || fdatasync(fd) < 0) {
		ir->err = -errno;
		snprintf(ir->what, sizeof(ir->what), "'%s' (id %" PRId64 ")",
			 n->name, id);
		if (fd >= 0)
			close(fd);
		return -1;
	}
	close(fd);
	ir->restored++;
	return 0;
}

/*
 * After a crash, the data files of small files committed inline may not be
 * on disk: write them back from the journal, fsync, then empty the inline
 * table.  A failure fails the mount (nothing is lost: the journal keeps
 * the copies for the next one).
 */
static int restore_inline(struct spool *sp, struct loader *ld, char *errbuf,
			  size_t errlen)
{
	struct inline_restore ir = { .ld = ld };

	if (spool_journal_inline_load(sp->j, restore_one, &ir) < 0) {
		if (ir.err)
			snprintf(errbuf, errlen, "cannot write the spool copy "
				 "of %s back from the journal into %s/data: %s",
				 ir.what, sp->dir, strerror(-ir.err));
		else
			snprintf(errbuf, errlen, "cannot read the inline "
				 "copies in the journal: %s",
				 spool_journal_errmsg(sp->j));
		return -1;
	}
	if (ir.restored && fsync(sp->datafd) < 0) {
		snprintf(errbuf, errlen, "cannot fsync %s/data: %s", sp->dir,
			 strerror(errno));
		return -1;
	}
	if (spool_journal_inline_clear(sp->j) < 0) {
		snprintf(errbuf, errlen, "cannot empty the inline copies in "
			 "the journal: %s", spool_journal_errmsg(sp->j));
		return -1;
	}
	if (ir.restored)
		log_info("recovered spool: %zu small files written back from "
			 "the journal", ir.restored);
	return 0;
}

static int recover(struct spool *sp, struct loader *ld, char *errbuf,
		   size_t errlen)
{
	size_t incomplete = 0, resumed = 0, lost = 0;

	/* link children to parents */
	for (size_t i = 0; i < ld->n; i++) {
		struct spool_node *n = ld->nodes[i], *p;

		if (n->area == SPOOL_AREA_TRASH)
			p = sp->trash;
		else if (ld->parents[i] == 0)
			p = n->dest->root[n->area == SPOOL_AREA_FAILED];
		else
			p = find_loaded(ld, ld->parents[i]);
		if (!p || !p->is_dir || dir_attach(sp, p, n) < 0) {
			snprintf(errbuf, errlen,
				 "journal is inconsistent: node %" PRId64
				 " ('%s') has no parent %" PRId64
				 "; move %s/journal.db away to start afresh",
				 n->id, n->name, ld->parents[i], sp->dir);
			return -1;
		}
	}
	if (restore_inline(sp, ld, errbuf, errlen) < 0)
		return -1;
	sweep_data_dir(sp, ld);
	spool_journal_begin(sp->j);
	for (size_t i = 0; i < ld->n; i++) {
		struct spool_node *n = ld->nodes[i];

		if (n->is_dir)
			continue;
		if (n->has_data && n->state != SPOOL_WRITING &&
		    !data_file_ok(sp, n)) {
			UNCHARGE(sp, n);
			n->has_data = false;
			if (n->state != SPOOL_UPLOADED &&
			    n->area != SPOOL_AREA_TRASH) {
				lost++;
				log_error("%s: spool copy of '%s' (id %" PRId64
					  ") is missing or short",
					  n->dest->conf->name, n->name, n->id);
				node_fail_locked(sp, n,
						 "spool copy lost: the data file "
						 "is missing or short");
				continue;
			}
		}
		if (n->area == SPOOL_AREA_MAIN &&
		    (n->state == SPOOL_WRITING ||
		     (n->was_open && (n->state == SPOOL_QUEUED ||
				      n->state == SPOOL_UPLOADING)))) {
			struct stat st;
			char name[32];

			/* writes don't touch the journal: the data file
			 * knows how much was written */
			snprintf(name, sizeof(name), "%" PRId64, n->id);
			if (n->has_data &&
			    fstatat(sp->datafd, name, &st, 0) == 0) {
				UNCHARGE(sp, n);
				n->size = (uint64_t)st.st_size;
				CHARGE(sp, n);
			} else if (n->has_data && errno == ENOENT) {
				/* stopped between the row and its data file:
				 * create() never returned; empty, not lost */
				int fd = spool_data_open(sp, n->id,
							 O_RDWR | O_CREAT);

				UNCHARGE(sp, n);
				n->size = 0;
				n->has_data = fd >= 0;
				CHARGE(sp, n);
				if (fd >= 0)
					close(fd);
			}
			incomplete++;
			log_warn("%s: '%s' was still being written when the "
				 "daemon stopped: moved to .failed/",
				 n->dest->conf->name, n->name);
			spool_event_locked(sp, n, NULL, "failed", INCOMPLETE_MSG);
			node_fail_locked(sp, n, INCOMPLETE_MSG);
			continue;
		}
		if (n->state == SPOOL_UPLOADING) {
			resumed++;
			node_set_state_locked(sp, n, SPOOL_QUEUED);
		}
		node_requeue_locked(sp, n);
		if (n->state == SPOOL_UPLOADED && n->has_data &&
		    !n->dest->conf->keep_uploaded)
			node_free_data_locked(sp, n);	/* saves */
		else
			node_save_locked(sp, n);
	}
	spool_journal_commit(sp->j);
	if (incomplete || resumed || lost)
		log_info("recovered spool: %zu interrupted uploads resume, %zu "
			 "incomplete files moved to .failed/, %zu lost",
			 resumed, incomplete, lost);
	if (ld->orphans)
		log_warn("the journal holds %zu entries for destinations no "
			 "longer configured; they are kept until the "
			 "destination comes back", ld->orphans);
	return 0;
}

static struct spool_node *root_new(struct spool_dest *d, int area)
{
	struct spool_node *n = node_new(d, "", true);

	if (!n)
		return NULL;
	n->is_root = true;
	n->linked = true;
	n->area = area;
	n->mode = 0755;
	n->mtime = n->ctime = now_ts();
	return n;
}

static int mkdir_p(const char *path, mode_t mode)
{
	char *p = strdup(path), *s;
	int rc = 0;

	if (!p)
		return -1;
	for (s = p + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(p, mode) < 0 && errno != EEXIST)
			rc = -1;
		*s = '/';
	}
	if (mkdir(p, mode) < 0 && errno != EEXIST)
		rc = -1;
	free(p);
	return rc;
}

/* sp->tmp_tag: 32 random bits, or the clock and pid without entropy yet */
static void tmp_tag_init(struct spool *sp)
{
	uint32_t r;

	if (getrandom(&r, sizeof(r), GRND_NONBLOCK) != (ssize_t)sizeof(r))
		r = (uint32_t)sp->mounted_at.tv_nsec ^
		    ((uint32_t)getpid() << 16) ^ (uint32_t)sp->mounted_at.tv_sec;
	snprintf(sp->tmp_tag, sizeof(sp->tmp_tag), "%08" PRIx32, r);
}

int spool_open(struct spool **spp, const struct spoolfs_config *cfg,
	       char *errbuf, size_t errlen)
{
	struct loader ld = { 0 };
	struct spool *sp;
	char *path = NULL;
	int rc = -1;

	*spp = NULL;
	sp = calloc(1, sizeof(*sp));
	if (!sp) {
		snprintf(errbuf, errlen, "out of memory");
		return -1;
	}
	ld.sp = sp;
	sp->cfg = cfg;
	sp->datafd = sp->lockfd = -1;
	sp->uid = getuid();
	sp->gid = getgid();
	sp->mounted_at = now_ts();
	tmp_tag_init(sp);
	pthread_mutex_init(&sp->lock, NULL);
	pthread_cond_init(&sp->cond, NULL);
	pthread_cond_init(&sp->stream_cond, NULL);
	pthread_cond_init(&sp->write_cond, NULL);
	mem_limit_init(sp);
	sp->dir = strdup(cfg->spool_dir);
	if (!sp->dir || asprintf(&path, "%s/data", cfg->spool_dir) < 0) {
		snprintf(errbuf, errlen, "out of memory");
		goto out;
	}
	if (mkdir_p(cfg->spool_dir, 0700) < 0 || mkdir_p(path, 0700) < 0) {
		snprintf(errbuf, errlen, "cannot create spool directory '%s': %m",
			 path);
		goto out;
	}
	sp->datafd = open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	free(path);
	path = NULL;
	if (sp->datafd < 0) {
		snprintf(errbuf, errlen, "cannot open '%s/data': %m", sp->dir);
		goto out;
	}
	if (asprintf(&path, "%s/lock", sp->dir) < 0)
		goto out;
	sp->lockfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
	if (sp->lockfd < 0 || flock(sp->lockfd, LOCK_EX | LOCK_NB) < 0) {
		snprintf(errbuf, errlen,
			 errno == EWOULDBLOCK ?
			 "spool directory '%s' is in use by another spoolfs" :
			 "cannot lock spool directory '%s': %m", sp->dir);
		goto out;
	}
	free(path);
	path = NULL;
	if (asprintf(&path, "%s/journal.db", sp->dir) < 0)
		goto out;
	if (spool_journal_open(&sp->j, path, errbuf, errlen) < 0)
		goto out;

	sp->ndests = cfg->ndests;
	sp->dests = calloc(cfg->ndests, sizeof(*sp->dests));
	if (!sp->dests)
		goto out;
	for (size_t i = 0; i < cfg->ndests; i++) {
		struct spool_dest *d = &sp->dests[i];

		d->conf = &cfg->dests[i];
		d->sp = sp;
		d->root[SPOOL_AREA_MAIN] = root_new(d, SPOOL_AREA_MAIN);
		d->root[SPOOL_AREA_FAILED] = root_new(d, SPOOL_AREA_FAILED);
		if (!d->root[0] || !d->root[1])
			goto out;
	}
	for (size_t i = 0; i < cfg->ndests; i++)
		if (cfg->dests[i].fallback)
			sp->dests[i].fallback = dest_by_cname(sp,
						cfg->dests[i].fallback);
	sp->trash = root_new(&sp->dests[0], SPOOL_AREA_TRASH);
	if (!sp->trash)
		goto out;

	pthread_mutex_lock(&sp->lock);
	if (spool_journal_load(sp->j, load_row, &ld) < 0) {
		snprintf(errbuf, errlen, "cannot read journal: %s",
			 spool_journal_errmsg(sp->j));
		pthread_mutex_unlock(&sp->lock);
		goto out;
	}
	rc = recover(sp, &ld, errbuf, errlen);
	pthread_mutex_unlock(&sp->lock);
	if (rc == 0) {
		*spp = sp;
		sp = NULL;
		ld.n = 0;	/* the tree owns the nodes now */
	}
out:
	if (rc < 0 && errbuf[0] == '\0')
		snprintf(errbuf, errlen, "out of memory");
	for (size_t i = 0; i < ld.n; i++)
		if (!ld.nodes[i]->linked)
			node_free(ld.nodes[i]);
	free(ld.nodes);
	free(ld.parents);
	free(path);
	spool_close(sp);
	return rc;
}

static void tree_free(struct spool_node *n)
{
	if (!n)
		return;
	for (size_t b = 0; b < n->tabsize; b++) {
		struct spool_node *k = n->tab[b], *next;

		for (; k; k = next) {
			next = k->hnext;
			tree_free(k);
		}
	}
	node_free(n);
}

int spool_start(struct spool *sp, char *errbuf, size_t errlen)
{
	if (uploader_start(sp) < 0) {
		snprintf(errbuf, errlen, "cannot start upload workers: %m");
		return -1;
	}
	return 0;
}

void spool_close(struct spool *sp)
{
	if (!sp)
		return;
	spool_stop(sp);
	if (sp->ndrops > 0) {
		/* the drops' commits go to disk before their content goes */
		pthread_mutex_lock(&sp->lock);
		if (spool_sync(sp) == 0)
			drops_reap_locked(sp, true);
		pthread_mutex_unlock(&sp->lock);
	}
	free(sp->drops);
	for (size_t i = 0; i < sp->ndests; i++) {
		tree_free(sp->dests[i].root[0]);
		tree_free(sp->dests[i].root[1]);
		free(sp->dests[i].last_err);
	}
	tree_free(sp->trash);
	for (size_t i = 0; i < sp->ndests; i++)
		free(sp->dests[i].qr_tab);
	free(sp->inval);		/* spool_stop() emptied it */
	free(sp->dests);
	spool_journal_close(sp->j);
	if (sp->datafd >= 0) {
		pool_empty(sp);
		close(sp->datafd);
	}
	if (sp->lockfd >= 0)
		close(sp->lockfd);
	pthread_mutex_destroy(&sp->lock);
	pthread_cond_destroy(&sp->cond);
	pthread_cond_destroy(&sp->stream_cond);
	pthread_cond_destroy(&sp->write_cond);
	free(sp->dir);
	free(sp);
}
