/*
 * uploader.c - the worker pool that makes each destination match the spool.
 *
 * DESIGN
 * Every destination has `connections` worker threads and a queue (a list of
 * nodes whose next job goes to it, see node_job_dest_locked()).  A worker
 * takes the ready node with the oldest ready_at (multi-volume sets in volume
 * order), holds one persistent connection across jobs, and runs one of
 * three jobs without the lock:
 *   upload  - content to a temp name beside the target (resuming a partial
 *             temp of the same content generation), size check, mtime,
 *             then rename to the name the file has NOW (read at commit);
 *   meta    - the content on the server is current but the file was renamed
 *             or its mtime changed: rename / set the mtime remotely;
 *   trash   - remove a partial temp of a forgotten file (and, with
 *             delete_remote, its uploaded copy).
 * An idle worker may also take a big file that is still being written and
 * upload it as it grows (run_stream()), so that close() leaves only the
 * tail to send.
 * A job is cancelled when the file changes, moves, is removed or the daemon
 * stops: the progress callback sees it within one chunk.
 *
 * Errors: transient ones retry after min(backoff_max, backoff_min * 2^(n-1))
 * with jitter, up to `retries` times; permanent ones stop at once.  Then the
 * next destination of the fallback chain gets the file with fresh attempts;
 * when none is left the file moves to DEST/.failed/.
 */
#include "spool_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "../common/log.h"
#include "volume.h"

#define IDLE_DISCONNECT_MS 30000
#define WORKER_NICE 10
#define RATE_SLEEP_STEP_MS 100
/* streaming: send in segments of at least this; hand the file back when it
 * has not grown for STREAM_IDLE_MS */
#define STREAM_SEG (32ull << 20)
#define STREAM_IDLE_MS 2000
#define STREAM_WAIT_STEP_MS 100

enum job_kind { JOB_UPLOAD, JOB_META, JOB_TRASH };

struct job {
	struct spool *sp;
	struct spool_dest *d;
	struct spool_node *n;
	enum job_kind kind;
	uint64_t gen;
	uint64_t size;
	int64_t mtime;
	int64_t rmtime;		/* meta: the mtime the copy was given */
	char *mv_was;		/* meta: where an earlier try (a crash ago)
				 * may have moved the copy (node's mv_to);
				 * upload, trash: where it may have renamed
				 * the temp, its commit (node's tmp_to) */
	char *relpath;		/* at claim time */
	char *rtmp;		/* upload: the temp name; meta/trash: to remove */
	bool resume;		/* upload: rtmp may hold a partial upload */
	uint64_t resume_at;	/* ...from this byte (split temp), 0: its size */
	bool stream;		/* upload: the file is still being written */
	char *rpath;		/* meta/trash: where the content is now */
	bool remove_rpath;	/* trash: delete the uploaded copy */
	uint64_t last_done;
	int64_t blocked_until;	/* put back until then (owner_locked()) */
	char *moved;		/* meta: the copy was renamed to this on the
				 * server (aside, or to its name) */
	bool parked;		/* ...aside, to wait */
	bool batched;		/* one of a batch (run_batch()) */
	struct worker *w;	/* the worker running it */
};

/* A name a job of a batch renames a file to on the server (its commit),
 * held until the batch ends. */
struct held_name {
	struct spool_node *n;
	char *path;
};

struct worker {
	struct spool_dest *d;
	pthread_t thread;
	unsigned int seed;
	struct spool_node *cur;	/* [L] the node of its job, NULL when idle */
	bool busy;		/* [L] from taking a job (or batch) to its end */
	char *target;		/* [L] the name its job is renaming a file
				 * to on the server right now */
	struct held_name held[SPOOLFS_BATCH_MAX];	/* [L] a batch's
				 * commits, as target for one job */
	int nheld;
	const char *source;	/* [L] the name a meta job is renaming
				 * from (the job's rpath), or an upload or
				 * trash job has found its commit at
				 * (committed_already()) */
};

/* N has a copy on D's server at N->rpath (of its content now or, in the
 * trash with delete_remote, of a removed file). */
static bool has_remote_copy(const struct spool_node *n,
			    const struct spool_dest *d)
{
	return n->rdest == d && n->rpath;
}

/*
 * The queued nodes with a copy on D's server are indexed by that path
 * (qr_tab): a rename onto a name asks only the chain of that name, so
 * renaming a directory of many uploaded files stays linear.  A queued
 * node's rpath does not change (only jobs and unlinking change it, and
 * both take it off the queue first).
 */
static void qr_link(struct spool_node **tab, size_t size, struct spool_node *n)
{
	struct spool_node **head;

	head = &tab[spool_str_hash(n->rpath) & (size - 1)];
	n->qr_next = *head;
	*head = n;
}

static void qr_add_locked(struct spool_dest *d, struct spool_node *n)
{
	if (d->nq_remote >= d->qr_size) {
		size_t size = d->qr_size ? 2 * d->qr_size : 64;
		struct spool_node **tab = calloc(size, sizeof(*tab));

		if (tab) {
			for (size_t i = 0; i < d->qr_size; i++) {
				struct spool_node *k, *next;

				for (k = d->qr_tab[i]; k; k = next) {
					next = k->qr_next;
					qr_link(tab, size, k);
				}
			}
			free(d->qr_tab);
			d->qr_tab = tab;
			d->qr_size = size;
		} else if (!d->qr_tab) {
			return;		/* out of memory: unindexed */
		}
	}
	qr_link(d->qr_tab, d->qr_size, n);
	n->q_remote = true;
	d->nq_remote++;
}

/* The chain of queued copies that may be at PATH; NULL when none is. */
static struct spool_node *qr_chain(const struct spool_dest *d,
				   const char *path)
{
	if (d->nq_remote == 0)
		return NULL;
	return d->qr_tab[spool_str_hash(path) & (d->qr_size - 1)];
}

static void qr_del_locked(struct spool_dest *d, struct spool_node *n)
{
	struct spool_node **pp;

	pp = &d->qr_tab[spool_str_hash(n->rpath) & (d->qr_size - 1)];
	while (*pp && *pp != n)
		pp = &(*pp)->qr_next;
	/* not where its rpath says: it changed after all; never leave a
	 * node behind in a chain */
	for (size_t i = 0; !*pp && i < d->qr_size; i++)
		for (pp = &d->qr_tab[i]; *pp && *pp != n; pp = &(*pp)->qr_next)
			;
	if (*pp)
		*pp = n->qr_next;
	n->qr_next = NULL;
	n->q_remote = false;
	d->nq_remote--;
}

void queue_remove_locked(struct spool_node *n)
{
	struct spool_dest *d = n->queued_on;

	if (!d)
		return;
	if (n->qprev)
		n->qprev->qnext = n->qnext;
	else
		d->qhead = n->qnext;
	if (n->qnext)
		n->qnext->qprev = n->qprev;
	else
		d->qtail = n->qprev;
	if (n->q_remote)
		qr_del_locked(d, n);
	n->qprev = n->qnext = NULL;
	n->queued_on = NULL;
}

/* Before A goes before B in a queue. */
static bool queue_before(const struct spool_node *a, const struct spool_node *b)
{
	return a->ready_at < b->ready_at ||
	       (a->ready_at == b->ready_at && a->id < b->id);
}

/*
 * The queue is kept in (ready_at, id) order.  A new entry is usually the
 * latest (ready_at = now + settle), so the walk from the tail is short.
 */
void queue_add_locked(struct spool_dest *d, struct spool_node *n)
{
	struct spool_node *after;

	queue_remove_locked(n);
	for (after = d->qtail; after && queue_before(n, after);
	     after = after->qprev)
		;
	n->qprev = after;
	n->qnext = after ? after->qnext : d->qhead;
	if (n->qnext)
		n->qnext->qprev = n;
	else
		d->qtail = n;
	if (after)
		after->qnext = n;
	else
		d->qhead = n;
	n->queued_on = d;
	if (has_remote_copy(n, d))
		qr_add_locked(d, n);
}

uint64_t spool_backoff_ms(uint64_t min, uint64_t max, int attempt,
			  unsigned int *seed)
{
	uint64_t delay = min;

	for (int i = 1; i < attempt && delay < max; i++)
		delay *= 2;
	if (delay > max)
		delay = max;
	/* jitter: somewhere in [75%, 100%] of the delay */
	if (seed && delay >= 4)
		delay -= (uint64_t)rand_r(seed) % (delay / 4);
	return delay;
}

/* A volume of a multi-volume set waits while an earlier volume of the same
 * set in the same directory has not started uploading. */
static bool volume_blocked_locked(const struct spool_node *n)
{
	char set[NAME_MAX + 1], kset[NAME_MAX + 1];
	const struct spool_node *dir = n->parent;
	long idx, kidx;

	if (!dir || !spoolfs_volume_parse(n->name, set, sizeof(set), &idx))
		return false;
	for (size_t b = 0; b < dir->tabsize; b++) {
		for (const struct spool_node *k = dir->tab[b]; k; k = k->hnext) {
			if (k == n || k->is_dir || k->busy)
				continue;
			if (k->state != SPOOL_WRITING && k->state != SPOOL_QUEUED)
				continue;
			if (spoolfs_volume_parse(k->name, kset, sizeof(kset),
						 &kidx) &&
			    kidx < idx && strcmp(kset, set) == 0)
				return true;
		}
	}
	return false;
}

/* Whether a worker of D is renaming a copy away from PATH right now. */
static bool renaming_from_locked(const struct spool_dest *d, const char *path)
{
	for (int i = 0; i < d->nworkers; i++)
		if (d->workers[i].source &&
		    strcmp(d->workers[i].source, path) == 0)
			return true;
	return false;
}

static bool batchable_locked(const struct spool_dest *d,
			     const struct spool_node *n);

/* The first job of D's queue a worker may run now; SKIP_SMALL: not one
 * that could go in a batch (another worker sends those). */
static struct spool_node *pick_locked(struct spool_dest *d, int64_t now,
				      int64_t *next_ready, bool skip_small)
{
	*next_ready = INT64_MAX;
	for (struct spool_node *n = d->qhead; n; n = n->qnext) {
		if (n->ready_at > now) {
			/* sorted: nothing after this one is ready either */
			*next_ready = n->ready_at;
			return NULL;
		}
		/* still open for writing: not complete yet (see OPEN FILES) */
		if (n->busy || (n->writers > 0 && n->area != SPOOL_AREA_TRASH))
			continue;
		/* the removal of a copy a rename is carrying away: it
		 * follows the copy when the rename is done (finish_locked()) */
		if (n->area == SPOOL_AREA_TRASH && has_remote_copy(n, d) &&
		    renaming_from_locked(d, n->rpath))
			continue;
		/* volume order is upload order; a rename waits for none */
		if (!(has_remote_copy(n, d) && n->rgen == n->gen) &&
		    volume_blocked_locked(n))
			continue;
		if (skip_small && batchable_locked(d, n))
			continue;
		return n;
	}
	return NULL;
}

static bool job_cancelled_locked(const struct job *job)
{
	const struct spool_node *n = job->n;

	if (job->sp->stopping)
		return true;
	if (job->kind == JOB_TRASH)
		return false;
	return !n->linked || n->gen != job->gen ||
	       n->area != SPOOL_AREA_MAIN || node_job_dest_locked(n) != job->d;
}

static void sleep_ms(int64_t ms)
{
	struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

static int job_progress(void *arg, uint64_t done)
{
	struct job *job = arg;
	struct spool *sp = job->sp;
	struct spool_dest *d = job->d;
	uint64_t rate = d->conf->max_rate;
	int64_t until = 0, now;
	bool cancelled;

	pthread_mutex_lock(&sp->lock);
	job->n->progress = done;
	cancelled = job_cancelled_locked(job);
	if (rate && done > job->last_done) {
		/* a virtual clock per destination: every byte moves it on
		 * by 1/rate seconds; workers sleep until it */
		now = spool_now_ms();
		if (d->rate_epoch_ms < now - 1000)
			d->rate_epoch_ms = now - 1000;
		d->rate_epoch_ms += (int64_t)((done - job->last_done) * 1000 /
					      rate);
		until = d->rate_epoch_ms;
	}
	job->last_done = done;
	pthread_mutex_unlock(&sp->lock);

	while (!cancelled && until && (now = spool_now_ms()) < until) {
		int64_t step = until - now;

		sleep_ms(step > RATE_SLEEP_STEP_MS ? RATE_SLEEP_STEP_MS : step);
		pthread_mutex_lock(&sp->lock);
		cancelled = job_cancelled_locked(job);
		pthread_mutex_unlock(&sp->lock);
	}
	return cancelled;
}

/*
 * RENAMES ON THE SERVER
 * Every upload and meta job ends in a rename onto the name its file has
 * now.  Another file's copy may still sit at that name: one renamed away
 * here whose meta job has not moved it yet (mv a a.old; cp new a), or one
 * removed with delete_remote whose removal has not run.  Renaming onto it
 * first would destroy the only copy of a.old and then carry new's content
 * to a.old, or delete new's upload.  So such a job is put back, not
 * counted as an attempt, until the owner's job has run; a rename under way
 * holds its new name (worker->target).  A meta job whose wait closes a
 * circle (two files that swapped names would wait for each other forever)
 * moves its own copy aside first (.spoolfs-TAG-ID-GEN.mv beside it),
 * freeing its old name.
 */
#define BLOCKED_RETRY_MS 100
#define BLOCKED_STUCK_MS 5000

/* K's copy on D's server at PATH must move or go before SELF's rename
 * onto PATH. */
static bool blocks_locked(const struct spool_dest *d,
			  const struct spool_node *self,
			  const struct spool_node *k, const char *path)
{
	char *now;
	bool moving;

	if (k == self || !has_remote_copy(k, d) || strcmp(k->rpath, path) != 0)
		return false;
	if (k->area == SPOOL_AREA_TRASH)
		return true;	/* a removal (delete_remote, or a stale copy) */
	if (!k->linked || k->area != SPOOL_AREA_MAIN || k->rgen != k->gen)
		return false;
	now = node_relpath_locked(k);
	moving = !now || strcmp(now, path) != 0;
	free(now);
	return moving;
}

/* N's rename on D gave up: remember it, for owner_locked(). */
static void stuck_add_locked(struct spool_dest *d, struct spool_node *n)
{
	if (d->nstuck == d->capstuck) {
		size_t cap = d->capstuck ? 2 * d->capstuck : 4;
		struct spool_node **v = realloc(d->stuck, cap * sizeof(*v));

		if (!v)
			return;
		d->stuck = v;
		d->capstuck = cap;
	}
	n->refs++;
	d->stuck[d->nstuck++] = n;
}

/*
 * The file whose copy on D's server at PATH is still to move or go, if
 * any: queued (qr_tab), in a job, or one whose rename gave up (its copy
 * stays where it is until the file is renamed or touched again, or the
 * next mount retries it: until then a file that wants its name waits, and
 * says why).
 */
static struct spool_node *owner_locked(struct spool_dest *d,
				       const struct spool_node *self,
				       const char *path)
{
	struct spool_node *k;

	for (size_t i = 0; i < d->nstuck;) {
		k = d->stuck[i];
		if (!k->meta_gave_up || !k->linked) {
			d->stuck[i] = d->stuck[--d->nstuck];
			node_put_locked(d->sp, k);
			continue;
		}
		if (blocks_locked(d, self, k, path))
			return k;
		i++;
	}

	for (k = qr_chain(d, path); k; k = k->qr_next)
		if (blocks_locked(d, self, k, path))
			return k;
	for (int i = 0; i < d->nworkers; i++) {
		struct worker *w = &d->workers[i];

		/* a batch's renames, sent together (run_batch()) */
		for (int j = 0; j < w->nheld; j++)
			if (w->held[j].n != self && (!w->held[j].path ||
			    strcmp(w->held[j].path, path) == 0))
				return w->held[j].n;
		k = w->cur;
		if (!k || k == self)
			continue;
		/* a rename onto PATH under way: that copy holds it next;
		 * one from PATH: it may not have left yet (its file can
		 * have been rewritten meanwhile, see
		 * node_stale_copy_locked()) */
		if ((w->target && strcmp(w->target, path) == 0) ||
		    (w->source && strcmp(w->source, path) == 0) ||
		    blocks_locked(d, self, k, path))
			return k;
	}
	return NULL;
}

/*
 * Whether SELF (a meta job for its copy at MINE) waiting for OWNER
 * closes a circle: OWNER waits for the owner of its own new name, and so
 * on, back to SELF's copy (two files that swapped names).  Only then does
 * SELF move its copy aside; else it waits.  A chain longer than it can
 * follow counts as a circle.
 */
static bool circle_locked(struct spool_dest *d, const struct spool_node *self,
			  const char *mine, struct spool_node *owner)
{
	struct spool_node *k = owner;

	for (int i = 0; i < 64; i++) {
		char *want = node_relpath_locked(k);
		struct spool_node *next;

		if (!want)
			return true;
		if (strcmp(want, mine) == 0) {
			free(want);
			return true;
		}
		next = owner_locked(d, k, want);
		free(want);
		if (!next)
			return false;
		if (next == self)
			return true;
		k = next;
	}
	return true;
}

/* JOB's rename onto PATH starts: no other job may rename onto it now. */
static void reserve_locked(struct job *job, const char *path)
{
	struct worker *w = job->w;

	if (job->batched && w->nheld < SPOOLFS_BATCH_MAX) {
		w->held[w->nheld].n = job->n;
		w->held[w->nheld++].path = strdup(path);
		return;
	}
	free(w->target);
	w->target = strdup(path);
}

/* JOB waits for OWNER: when to look again. */
static void block_on_locked(struct job *job, struct spool_node *owner,
			    const char *path)
{
	int64_t now = spool_now_ms();
	int64_t at = owner->busy || owner->ready_at < now ? now
							  : owner->ready_at;
	char *orel, msg[512];

	if (!owner->meta_gave_up) {
		job->blocked_until = at + BLOCKED_RETRY_MS;
		log_debug("%s: '%s' waits: the server's '%s' is still "
			  "another file's copy, which %s first",
			  job->d->conf->name, path, path,
			  owner->area == SPOOL_AREA_TRASH ? "is removed"
							  : "moves");
		return;
	}
	/* no job of its own will move it: look again now and then, and
	 * tell the user once */
	job->blocked_until = now + BLOCKED_STUCK_MS;
	orel = node_relpath_locked(owner);
	snprintf(msg, sizeof(msg), "%s: waiting: '%s' on the server is still "
		 "the only copy of '%s', whose rename there failed; fix that "
		 "and touch '%s' (or remount) to retry it",
		 job->d->conf->name, path, orel ? orel : "?",
		 orel ? orel : "?");
	if (!job->n->error || strcmp(job->n->error, msg) != 0) {
		log_warn("%s", msg);
		node_set_error_locked(job->n, msg);
	}
	free(orel);
}

static char *dir_of(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
}

/*
 * EMPTIED DIRECTORIES
 *
 * A rename in the mount moves each uploaded file on the server on its own
 * (a renamed directory's files too, one by one), and delete_remote deletes
 * file by file, so the server directories they leave can end up empty.
 * Each such directory is noted here, and so is each directory removed in
 * the mount (whose files' moves or removals may have run before); a
 * worker with a connection and nothing else to do removes it, then its
 * parents, while the mount has no directory of that name.  The server
 * refuses one that still holds anything (a file spoolfs did not write,
 * one whose move has not run yet, a temp), and spoolfs then leaves it:
 * one rmdir per directory, not one per file.  Not journaled: after a
 * crash an emptied directory may stay.
 *
 * It runs only while the destination's other workers are idle, and they
 * take no job until it is done (d->pruning): an upload under way puts its
 * temp where the file was when it started, maybe a directory the mount no
 * longer has, and must not find that directory gone between its mkdir and
 * its write (FTP's 553 would then read as a refusal).  Found by the
 * torture test.
 */
void uploader_prune_locked(struct spool_dest *d, char *dir)
{
	bool keep = dir && *dir;

	for (size_t i = 0; keep && i < d->nprune; i++)
		keep = strcmp(d->prune[i], dir) != 0;
	/* more than fit: those stay on the server */
	if (keep && d->nprune < sizeof(d->prune) / sizeof(d->prune[0])) {
		d->prune[d->nprune++] = dir;
		pthread_cond_broadcast(&d->sp->cond);
		return;
	}
	free(dir);
}

/* A file left LEFT on the server (for TO, when moved). */
static void prune_note(struct spool_dest *d, const char *left,
		       const char *to)
{
	char *dir = dir_of(left), *dto = to ? dir_of(to) : NULL;

	pthread_mutex_lock(&d->sp->lock);
	if (dir && dto && strcmp(dir, dto) == 0) {
		free(dir);
		dir = NULL;
	}
	uploader_prune_locked(d, dir);
	pthread_mutex_unlock(&d->sp->lock);
	free(dto);
}

/* Whether another worker of W's destination is under way with a job. */
static bool others_busy_locked(const struct worker *w)
{
	const struct spool_dest *d = w->d;

	for (int i = 0; i < d->nworkers; i++)
		if (&d->workers[i] != w && d->workers[i].busy)
			return true;
	return false;
}

/* Remove DIR (changed in place) and its parents while they are empty on
 * the server and no directory in the mount. */
static void prune_dirs(struct spool_dest *d, struct spoolfs_conn *conn,
		       char *dir)
{
	struct spool *sp = d->sp;
	struct spoolfs_error err;
	char *slash;

	while (*dir) {
		struct spool_node *n;
		bool keep;

		pthread_mutex_lock(&sp->lock);
		n = node_at_locked(d, dir);
		keep = (n && n->is_dir) || sp->stopping;
		pthread_mutex_unlock(&sp->lock);
		if (keep)
			return;
		if (spoolfs_conn_rmdir(conn, dir, &err) < 0) {
			log_debug("%s: '%s' stays on the server: %s",
				  d->conf->name, dir, err.msg);
			return;
		}
		log_info("%s: removed the directory '%s' from the server: "
			 "its files moved away", d->conf->name, dir);
		slash = strrchr(dir, '/');
		if (!slash)
			return;
		*slash = '\0';
	}
}

static void job_release(struct job *job)
{
	free(job->moved);
	free(job->mv_was);
	free(job->relpath);
	free(job->rtmp);
	free(job->rpath);
}

/* A temp name for JOB's content beside the name its file has (relpath):
 * ".spoolfs-TAG-ID-GEN.part", malloc'd, or NULL. */
static char *tmp_name(const struct job *job)
{
	char *dir = dir_of(job->relpath), *name;

	if (!dir || asprintf(&name, "%s%s.spoolfs-%s-%" PRId64 "-%" PRIu64
			     ".part", dir, *dir ? "/" : "", job->sp->tmp_tag,
			     job->n->id, job->gen) < 0)
		name = NULL;
	free(dir);
	return name;
}

/* Take N for this worker: mark it busy and copy what the job needs.  With
 * STREAM, N is still being written (see run_stream()). */
static int claim_locked(struct job *job, struct spool_dest *d,
			struct spool_node *n, bool stream)
{
	memset(job, 0, sizeof(*job));
	job->sp = d->sp;
	job->d = d;
	job->n = n;
	job->gen = n->gen;
	job->size = n->size;
	job->mtime = n->mtime.tv_sec;
	job->relpath = node_relpath_locked(n);
	if (!job->relpath)
		return -1;
	if (n->area == SPOOL_AREA_TRASH) {
		job->kind = JOB_TRASH;
		if (n->rtmp && n->tmp_dest == d) {
			job->rtmp = strdup(n->rtmp);
			if (n->tmp_to)
				job->mv_was = strdup(n->tmp_to);
		}
		if (n->rdest == d && n->rpath) {
			job->rpath = strdup(n->rpath);
			job->remove_rpath = true;
		}
	} else if (n->rdest == d && n->rgen == n->gen && n->rpath) {
		job->kind = JOB_META;
		job->rpath = strdup(n->rpath);
		job->rmtime = n->rmtime;
		if (n->mv_to)
			job->mv_was = strdup(n->mv_to);
	} else {
		/* resume a partial temp of this content, or start a new one
		 * (recorded by record_tmp() once connected) */
		job->kind = JOB_UPLOAD;
		job->stream = stream;
		if (n->rtmp && n->tmp_dest == d && n->tmp_gen == n->gen) {
			job->resume = true;
			job->rtmp = strdup(n->rtmp);
			if (n->tmp_to)
				job->mv_was = strdup(n->tmp_to);
		} else {
			job->rtmp = tmp_name(job);
			/* a split put's temp of this content: from its
			 * last progress (see split_begin()) */
			if (job->rtmp && n->rtmp && n->tmp_dest == d &&
			    n->tmp_gen == 0 && n->tmp_safe > 0 &&
			    strcmp(n->rtmp, job->rtmp) == 0) {
				job->resume = true;
				job->resume_at = n->tmp_safe;
			}
		}
		if (!job->rtmp)
			return -1;
	}
	queue_remove_locked(n);
	n->busy = true;
	n->refs++;
	n->progress = 0;
	if (stream) {
		/* state and attempts change when the writer has closed it */
		n->streaming = true;
		n->upload_start_ms = spool_now_ms();
	} else if (job->kind != JOB_TRASH) {
		/* saved by run_upload() or when the job ends: one journal
		 * write fewer per file */
		n->attempts++;
		node_set_state_locked(d->sp, n, SPOOL_UPLOADING);
	}
	return 0;
}

/*
 * Split puts (SPOOLFS_CAP_SPLIT): until one returns 0 the temp may have a
 * gap, so its size must never be taken as a resume offset.  tmp_gen 0
 * matches no generation, so neither a retry nor the next mount resumes from
 * the size; a retry resumes from tmp_safe, the last progress of the failed
 * put (what the server holds without a gap), and after a restart the file
 * is sent again from byte 0 under that mount's temp name (the old temp goes
 * to the trash: the tag in temp names changes, sp->tmp_tag).  Recorded
 * durably before the put: after a power cut the journal must not call a
 * temp with a gap resumable.
 */
static bool may_split(struct spoolfs_conn *conn, uint64_t offset,
		      uint64_t end)
{
	return spoolfs_conn_can(conn, SPOOLFS_CAP_SPLIT) &&
	       spoolfs_split_allowed(conn->dest, offset, end);
}

static int split_begin(struct job *job, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	int rc = 0;

	pthread_mutex_lock(&sp->lock);
	if (n->linked && n->tmp_gen == job->gen && n->tmp_dest == job->d) {
		n->tmp_gen = 0;
		n->tmp_safe = 0;
		if (node_save_durable_locked(sp, n) < 0)
			rc = spoolfs_error_set(err, SPOOLFS_E_IO,
				"cannot record the temp of '%s' in the "
				"journal: %s", job->relpath,
				spool_journal_errmsg(sp->j));
	}
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

static void split_end(struct job *job, uint64_t offset, bool whole)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;

	pthread_mutex_lock(&sp->lock);
	if (n->tmp_gen == 0 && n->tmp_dest == job->d && n->gen == job->gen) {
		if (whole) {
			n->tmp_gen = job->gen;
			n->tmp_safe = 0;
			node_save_locked(sp, n);
		} else {
			n->tmp_safe = job->last_done > offset ? job->last_done
							      : offset;
		}
	}
	pthread_mutex_unlock(&sp->lock);
}

/*
 * Bytes [offset, end) of FD into TMP.  RSIZE NULL: a segment of a stream
 * (more follows); else the whole tail of the upload: mtime set and the
 * server's size in *RSIZE.
 */
static int put_once(struct spoolfs_conn *conn, struct job *job,
		    const char *tmp, int fd, uint64_t offset, uint64_t end,
		    uint64_t *rsize, struct spoolfs_error *err)
{
	bool split = may_split(conn, offset, end);
	int rc;

	if (split && split_begin(job, err) < 0)
		return -1;
	if (!rsize)
		rc = spoolfs_conn_put(conn, tmp, fd, offset, end,
				      job_progress, job, err);
	else
		rc = spoolfs_conn_put_file(conn, tmp, fd, offset, end,
					   job->mtime, job_progress, job,
					   rsize, err);
	if (split || rc == 0)
		split_end(job, offset, rc == 0);
	return rc;
}

/* put_once(), creating the temp's directory when the backend says it is
 * missing */
static int put_mkdirs(struct spoolfs_conn *conn, struct job *job,
		      const char *tmp, int fd, uint64_t offset, uint64_t end,
		      uint64_t *rsize, struct spoolfs_error *err)
{
	char *dir;
	int rc;

	if (put_once(conn, job, tmp, fd, offset, end, rsize, err) == 0)
		return 0;
	if (err->code != SPOOLFS_E_NOTFOUND || !strchr(tmp, '/'))
		return -1;
	dir = dir_of(tmp);
	if (!dir)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	rc = spoolfs_conn_mkdirs(conn, dir, err);
	free(dir);
	if (rc < 0)
		return -1;
	return put_once(conn, job, tmp, fd, 0, end, rsize, err);
}

static int rename_mkdirs(struct spoolfs_conn *conn, const char *from,
			 const char *to, struct spoolfs_error *err)
{
	char *dir;
	int rc;

	if (spoolfs_conn_rename(conn, from, to, err) == 0)
		return 0;
	if (err->code != SPOOLFS_E_NOTFOUND)
		return -1;
	dir = dir_of(to);
	if (!dir || !*dir) {
		free(dir);
		return -1;
	}
	rc = spoolfs_conn_mkdirs(conn, dir, err);
	free(dir);
	if (rc < 0)
		return -1;
	return spoolfs_conn_rename(conn, from, to, err);
}

/*
 * Record the temp (and the state) before a byte is sent: after a crash the
 * journal knows every temp that may be on a server.  A temp of older
 * content goes to the trash.
 */
static int record_tmp(struct job *job, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	bool cancelled;
	int rc = 0;

	pthread_mutex_lock(&sp->lock);
	cancelled = job_cancelled_locked(job);
	if (cancelled) {
		rc = spoolfs_error_set(err, SPOOLFS_E_CANCELLED, "cancelled");
	} else if (!job->resume && n->rtmp && n->tmp_dest == job->d &&
		   strcmp(n->rtmp, job->rtmp) == 0) {
		/* the same name, not resumable (split_guard()): the put
		 * from byte 0 truncates it */
		n->tmp_gen = job->gen;
		free(n->tmp_to);
		n->tmp_to = NULL;
	} else if (!job->resume) {
		char *copy = strdup(job->rtmp);

		if (!copy) {
			rc = spoolfs_error_set(err, SPOOLFS_E_IO,
					       "out of memory");
			goto out;
		}
		node_trash_tmp_locked(sp, n);
		free(n->rtmp);
		n->rtmp = copy;
		n->tmp_dest = job->d;
		n->tmp_gen = job->gen;
	}
	if (!cancelled)
		node_save_locked(sp, n);
out:
	pthread_mutex_unlock(&sp->lock);
	return rc;
}

/* Wait for news of a streamed file (stream_cond) until UNTIL, at most
 * STREAM_WAIT_STEP_MS from NOW. */
static void stream_wait_locked(struct spool *sp, int64_t until, int64_t now)
{
	struct timespec ts;

	if (until > now + STREAM_WAIT_STEP_MS)
		until = now + STREAM_WAIT_STEP_MS;
	ts.tv_sec = until / 1000;
	ts.tv_nsec = (until % 1000) * 1000000;
	pthread_cond_timedwait(&sp->stream_cond, &sp->lock, &ts);
}

/*
 * Whether JOB's copy is at TO already although the rename that was to take
 * it there (of job->rpath, or of the temp: its commit) finds its source
 * gone: the daemon can stop (kill -9, a power cut), or the connection
 * drop, between a rename on the server and the journal's record of it, and
 * the next try asks for the same rename again.  It counts as done when TO
 * holds the copy's size and one of the two mtimes it can have (the
 * upload's, or a meta job's, set just after its rename); anything else
 * stays the error it was.
 */
static bool moved_already(struct spoolfs_conn *conn, const struct job *job,
			  const char *to)
{
	struct spoolfs_rstat st;
	struct spoolfs_error ignored;

	spoolfs_error_clear(&ignored);
	if (spoolfs_conn_stat(conn, to, &st, &ignored) < 0 || st.is_dir ||
	    st.size != job->size || st.mtime < 0)
		return false;
	return st.mtime == job->rmtime || st.mtime == job->mtime;
}

/*
 * Whether PATH on D's server is spoken for by a file other than N: one in
 * the mount at that name, or a copy on its way there or away
 * (owner_locked()).  What is at PATH then is not N's to take or remove.
 */
static bool name_taken_locked(struct spool_dest *d,
			      const struct spool_node *n, const char *path)
{
	struct spool_node *k = node_at_locked(n->dest, path);

	if (k && k != n)
		return true;
	if (d != n->dest && (k = node_at_locked(d, path)) && k != n)
		return true;
	return owner_locked(d, n, path) != NULL;
}

/*
 * JOB's temp is gone from the server: the rename that commits it may have
 * been done there before the daemon stopped or the connection dropped,
 * unknown to the journal but for the note made before it (tmp_to, now
 * job->mv_was).  True when the copy is there: that name holds the
 * content's size and mtime, and no other file speaks for it.  The worker
 * then holds the name as a meta job holds its copy's (w->source) until
 * the job ends: no other file commits onto it meanwhile.
 */
static bool committed_already(struct spoolfs_conn *conn, struct job *job)
{
	struct spool *sp = job->sp;
	bool found;

	if (!job->mv_was)
		return false;
	pthread_mutex_lock(&sp->lock);
	found = !name_taken_locked(job->d, job->n, job->mv_was);
	if (found)
		job->w->source = job->mv_was;
	pthread_mutex_unlock(&sp->lock);
	if (!found)
		return false;
	found = moved_already(conn, job, job->mv_was);
	if (!found) {
		pthread_mutex_lock(&sp->lock);
		job->w->source = NULL;
		pthread_mutex_unlock(&sp->lock);
	}
	return found;
}

/*
 * N's journal note *NOTE (mv_to, tmp_to: where a rename about to go out
 * takes a copy) says TO: 1 when it changed and was saved, 0 when it said
 * so already, -1 when the journal could not take it.
 */
static int note_locked(struct spool *sp, struct spool_node *n, char **note,
		       const char *to)
{
	if (*note && strcmp(*note, to) == 0)
		return 0;
	free(*note);
	*note = strdup(to);
	if (!*note || node_save_checked_locked(sp, n) < 0)
		return -1;
	return 1;
}

/*
 * Before the rename that commits JOB's temp to FINAL: the journal says so
 * (tmp_to), for committed_already().  Not synced: the note outlives the
 * daemon (kill -9), and a power cut that takes it costs at worst a second
 * copy on the server, never a file.  0, or -1 when the journal could not
 * take it.
 */
static int note_commit(struct job *job, const char *final)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	int rc = 0;

	pthread_mutex_lock(&sp->lock);
	if (n->rtmp && strcmp(n->rtmp, job->rtmp) == 0)
		rc = note_locked(sp, n, &n->tmp_to, final);
	pthread_mutex_unlock(&sp->lock);
	return rc < 0 ? -1 : 0;
}

/*
 * The server holds RSIZE bytes in the temp, at FROM (job->rtmp, or where
 * an earlier commit took it): check them, wait out what is left of
 * `settle` (not for a stream), and get ready to rename them to the name
 * the file has NOW (*FINAL): reserved, and noted in the journal.  0 when
 * that rename is to be done, 1 when FROM is that name, -1 on error.
 */
static int commit_prepare(struct job *job, struct spoolfs_conn *conn,
			  const char *from, uint64_t rsize, char **final,
			  struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	struct spool_node *owner;
	struct spoolfs_error ignored;
	bool cancelled;
	int64_t now;

	if (rsize != job->size) {
		spoolfs_conn_remove(conn, from, &ignored);
		return spoolfs_error_set(err, SPOOLFS_E_PROTO,
					 "the server holds %" PRIu64 " bytes "
					 "after the upload, expected %" PRIu64,
					 rsize, job->size);
	}
	pthread_mutex_lock(&sp->lock);
	/*
	 * Only a streamed file gets here before its ready_at, and it does
	 * not wait: `settle` keeps an upload from starting before a rename
	 * or touch that follows the close, but this one started long before
	 * the close.  Waiting would only hold back a file that is on the
	 * server already; a rename or touch after the commit is a remote
	 * rename or mtime, as for any uploaded file.
	 */
	while (!(cancelled = job_cancelled_locked(job)) && !job->stream &&
	       (now = spool_now_ms()) < n->ready_at)
		stream_wait_locked(sp, n->ready_at, now);
	*final = cancelled ? NULL : node_relpath_locked(n);
	if (*final && (owner = owner_locked(job->d, n, *final))) {
		/* the temp stays recorded: the next claim resumes it whole */
		block_on_locked(job, owner, *final);
		free(*final);
		*final = NULL;
		cancelled = true;
	} else if (*final) {
		reserve_locked(job, *final);
	}
	pthread_mutex_unlock(&sp->lock);
	if (cancelled)
		return spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
					 "cancelled");
	if (!*final)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	if (note_commit(job, *final) < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "cannot record the "
					 "commit in the journal");
	return strcmp(from, *final) == 0;
}

/* commit_prepare(), then the rename. */
static int commit_tmp(struct job *job, struct spoolfs_conn *conn,
		      const char *from, uint64_t rsize, char **final,
		      struct spoolfs_error *err)
{
	int rc = commit_prepare(job, conn, from, rsize, final, err);

	if (rc != 0)
		return rc < 0 ? -1 : 0;
	return rename_mkdirs(conn, from, *final, err);
}

/* Bytes FROM.. of FD into the temp, then commit it (run_upload(),
 * run_stream()). */
static int put_rest_and_commit(struct job *job, struct spoolfs_conn *conn,
			       int fd, uint64_t from, char **final,
			       struct spoolfs_error *err)
{
	uint64_t rsize = 0;

	if (put_mkdirs(conn, job, job->rtmp, fd, from, job->size, &rsize,
		       err) < 0)
		return -1;
	return commit_tmp(job, conn, job->rtmp, rsize, final, err);
}

/* JOB's spool copy, open for reading, if the server can take its name:
 * the descriptor, or -1 with *err set. */
static int open_copy(struct job *job, struct spoolfs_conn *conn,
		     struct spoolfs_error *err)
{
	int fd = node_data_open(job->sp, job->n, O_RDONLY);

	if (fd < 0)
		return spoolfs_error_set(err, SPOOLFS_E_NOTFOUND,
					 "the spool copy is missing: %m");
	/* a name the server can never take: not one byte goes out */
	if (spoolfs_conn_check_name(conn, job->relpath, err) < 0) {
		close(fd);
		return -1;
	}
	return fd;
}

static int run_upload(struct job *job, struct spoolfs_conn *conn,
		      char **final, struct spoolfs_error *err)
{
	struct spoolfs_error serr;
	struct spoolfs_rstat st;
	bool can_resume = spoolfs_conn_can(conn, SPOOLFS_CAP_RESUME);
	uint64_t offset = 0;
	int fd, rc = -1;

	fd = open_copy(job, conn, err);
	if (fd < 0)
		return -1;
	if (job->resume && (can_resume || job->mv_was)) {
		if (spoolfs_conn_stat(conn, job->rtmp, &st, &serr) == 0) {
			if (can_resume && st.size <= job->size)
				offset = st.size;
		} else if (serr.code == SPOOLFS_E_NOTFOUND &&
			   committed_already(conn, job)) {
			log_info("%s: '%s' is on the server already, as "
				 "'%s' (the reply to an earlier try's last "
				 "step was lost)", job->d->conf->name,
				 job->relpath, job->mv_was);
			rc = commit_tmp(job, conn, job->mv_was, job->size,
					final, err);
			goto out;
		} else if (serr.code == SPOOLFS_E_NOTFOUND) {
			/* nothing to resume: a new temp, beside the name the
			 * file has now (the old one's directory may be one
			 * it has left, never made on the server) */
			char *fresh = tmp_name(job);

			if (!fresh) {
				spoolfs_error_set(err, SPOOLFS_E_IO,
						  "out of memory");
				goto out;
			}
			free(job->rtmp);
			job->rtmp = fresh;
			job->resume = false;
			job->resume_at = 0;
		}
	}
	/* a split temp may hold more, beyond a gap: the put overwrites it */
	if (job->resume_at)
		offset = offset >= job->resume_at ? job->resume_at : 0;
	if (record_tmp(job, err) < 0)
		goto out;
	if (offset)
		log_info("%s: resuming '%s' at byte %" PRIu64 " of %" PRIu64,
			 job->d->conf->name, job->relpath, offset, job->size);
	rc = put_rest_and_commit(job, conn, fd, offset, final, err);
out:
	close(fd);
	return rc;
}

/* The last writer has closed N: it is queued, no longer streamed. */
static bool writer_done_locked(const struct spool_node *n)
{
	return n->state != SPOOL_WRITING && n->writers == 0;
}

/*
 * Upload a file while it is still being written: a big file that grew at
 * its end was offered by the writer (stream_offer_locked()) and an idle
 * worker took it.  Every STREAM_SEG bytes written go to the temp as one
 * resumed put; stream_mark tells the spool how far the temp may hold this
 * content, and a write below it starts a new content generation, which
 * cancels this job and sends the temp to the trash (spool.c,
 * stream_check_locked()).  Once the writer has closed the file it is an
 * ordinary upload of the rest: the attempt counts from there, and the
 * commit follows the tail at once, without waiting for `settle` (see
 * commit_tmp()).
 *
 * Returns 0 when uploaded, -1 on an error (ERR; before close only when
 * cancelled), 1 when the file is handed back before it was closed (it
 * stopped growing, or the server failed: then ERR says why): never an
 * attempt; the temp stays recorded and the upload after close resumes it.
 */
static int run_stream(struct job *job, struct spoolfs_conn *conn,
		      char **final, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	int64_t grew_ms = spool_now_ms();
	uint64_t sent = 0, end;
	bool closed;
	int fd, rc = 1;

	if (job->resume || !spoolfs_conn_can(conn, SPOOLFS_CAP_RESUME))
		return 1;
	fd = node_data_open(sp, n, O_RDONLY);
	if (fd < 0)
		return 1;
	if (spoolfs_conn_check_name(conn, job->relpath, err) < 0)
		goto out;	/* handed back; after close run_upload() says why */
	if (record_tmp(job, err) < 0) {
		rc = err->code == SPOOLFS_E_CANCELLED ? -1 : 1;
		goto out;
	}
	pthread_mutex_lock(&sp->lock);
	for (;;) {
		int64_t now = spool_now_ms();

		if (job_cancelled_locked(job)) {
			pthread_mutex_unlock(&sp->lock);
			rc = spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
					       "cancelled");
			goto out;
		}
		if (writer_done_locked(n))
			break;		/* closed and queued */
		if (n->state == SPOOL_WRITING &&
		    n->size - sent >= STREAM_SEG) {
			end = n->size;
			n->stream_mark = end;
			pthread_mutex_unlock(&sp->lock);
			if (put_mkdirs(conn, job, job->rtmp, fd, sent,
				       end, NULL, err) < 0) {
				if (err->code == SPOOLFS_E_CANCELLED) {
					rc = -1;
					goto out;
				}
				/* ERR stays: the worker drops a broken
				 * connection */
				pthread_mutex_lock(&sp->lock);
				closed = writer_done_locked(n);
				pthread_mutex_unlock(&sp->lock);
				if (closed)
					log_info("%s: streaming '%s' stopped: "
						 "%s; an upload attempt "
						 "resumes it",
						 job->d->conf->name,
						 job->relpath, err->msg);
				else
					log_info("%s: '%s' is uploaded once "
						 "it is closed: %s",
						 job->d->conf->name,
						 job->relpath, err->msg);
				goto out;	/* handed back */
			}
			sent = end;
			grew_ms = spool_now_ms();
			pthread_mutex_lock(&sp->lock);
			continue;
		}
		if (now - grew_ms > STREAM_IDLE_MS) {
			pthread_mutex_unlock(&sp->lock);
			log_debug("%s: '%s' stopped growing at %" PRIu64
				  " bytes sent; it is uploaded once it is "
				  "closed", job->d->conf->name, job->relpath,
				  sent);
			goto out;	/* handed back */
		}
		stream_wait_locked(sp, now + STREAM_WAIT_STEP_MS, now);
		if (n->size - sent >= STREAM_SEG)
			grew_ms = spool_now_ms();
	}
	/* closed: from here on an ordinary attempt (lock held) */
	{
		int64_t started = n->upload_start_ms;

		job->size = n->size;
		job->mtime = n->mtime.tv_sec;
		n->stream_mark = n->size;
		n->attempts++;
		node_set_state_locked(sp, n, SPOOL_UPLOADING);
		n->upload_start_ms = started;	/* the rate counts it all */
	}
	pthread_mutex_unlock(&sp->lock);
	log_debug("%s: '%s' closed with %" PRIu64 " of %" PRIu64 " bytes "
		  "sent", job->d->conf->name, job->relpath, sent, job->size);
	rc = put_rest_and_commit(job, conn, fd, sent, final, err);
out:
	close(fd);
	return rc;
}

/*
 * Before JOB renames its copy on the server to TO: the journal says so
 * (mv_to), on disk where close() is durable, so that a crash between the
 * server's rename and finish_locked()'s record of it leaves a trace the
 * next try follows (job->mv_was) even when the file has been renamed
 * again since.  0, or -1 when the journal could not take it.
 */
static int note_move(struct job *job, const char *to)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	int rc = 0;

	pthread_mutex_lock(&sp->lock);
	if (n->rpath)
		rc = note_locked(sp, n, &n->mv_to, to);
	pthread_mutex_unlock(&sp->lock);
	if (rc > 0 && sp->cfg->fsync == SPOOLFS_FSYNC_CLOSE)
		rc = spool_sync(sp);
	return rc < 0 ? -1 : 0;
}

/*
 * JOB's rename to FINAL failed with ERR.  When the source was gone, an
 * earlier try (before a crash) may have moved the copy: to FINAL itself
 * (done), or to job->mv_was, a name the file has left again since (the
 * rename goes on from there).  0 with ERR cleared, or -1 with ERR.
 */
static int rename_from_where_it_went(struct job *job,
				     struct spoolfs_conn *conn,
				     const char *final,
				     struct spoolfs_error *err)
{
	const char *name = job->d->conf->name;

	if (err->code != SPOOLFS_E_NOTFOUND)
		return -1;
	if (moved_already(conn, job, final)) {
		log_info("%s: '%s' was renamed to '%s' on the server before "
			 "the daemon stopped", name, job->rpath, final);
	} else if (job->mv_was && strcmp(job->mv_was, final) != 0 &&
		   moved_already(conn, job, job->mv_was)) {
		if (rename_mkdirs(conn, job->mv_was, final, err) < 0)
			return -1;
		log_info("%s: '%s' was at '%s' on the server (renamed before "
			 "the daemon stopped); renamed it to '%s'", name,
			 job->rpath, job->mv_was, final);
	} else {
		return -1;
	}
	spoolfs_error_clear(err);
	return 0;
}

static int run_meta(struct job *job, struct spoolfs_conn *conn,
		    char **final, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *owner = NULL;
	char *park = NULL, *dir;
	bool move;

	pthread_mutex_lock(&sp->lock);
	*final = node_relpath_locked(job->n);
	move = *final && strcmp(*final, job->rpath) != 0;
	if (move)
		owner = owner_locked(job->d, job->n, *final);
	if (owner) {
		block_on_locked(job, owner, *final);
		/* job->rpath: the node's own is gone if it was removed */
		dir = circle_locked(job->d, job->n, job->rpath, owner) ?
		      dir_of(job->rpath) : NULL;
		if (dir && asprintf(&park, "%s%s.spoolfs-%s-%" PRId64 "-%"
				    PRIu64 ".mv", dir, *dir ? "/" : "",
				    sp->tmp_tag, job->n->id, job->gen) < 0)
			park = NULL;
		free(dir);
	} else if (move) {
		reserve_locked(job, *final);
	}
	pthread_mutex_unlock(&sp->lock);
	if (!*final)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	if (owner) {
		free(*final);
		*final = NULL;
		if (park && strcmp(park, job->rpath) != 0) {
			if (spoolfs_conn_rename(conn, job->rpath, park,
						err) < 0) {
				free(park);
				return -1;
			}
			log_info("%s: moved '%s' aside to '%s' on the server "
				 "until the file there now moves",
				 job->d->conf->name, job->rpath, park);
			job->moved = park;
			job->parked = true;
		} else {
			free(park);	/* waits as it is, or aside already */
		}
		return spoolfs_error_set(err, SPOOLFS_E_CANCELLED, "waiting");
	}
	if (move) {
		if (note_move(job, *final) < 0)
			return spoolfs_error_set(err, SPOOLFS_E_IO, "cannot "
						 "record the rename in the "
						 "journal");
		if (rename_mkdirs(conn, job->rpath, *final, err) < 0 &&
		    rename_from_where_it_went(job, conn, *final, err) < 0)
			return -1;
		/* done on the server, whatever the mtime does */
		job->moved = strdup(*final);
		if (!job->moved)
			return spoolfs_error_set(err, SPOOLFS_E_IO,
						 "out of memory");
		prune_note(job->d, job->rpath, *final);
	}
	return spoolfs_conn_set_mtime(conn, *final, job->mtime, err);
}

static int run_trash(struct job *job, struct spoolfs_conn *conn,
		     struct spoolfs_error *err)
{
	if (job->rtmp && spoolfs_conn_remove(conn, job->rtmp, err) < 0) {
		if (err->code != SPOOLFS_E_NOTFOUND)
			return -1;
		/* committed unknown to the journal (a removed file's, with
		 * delete_remote): the copy goes as the file did */
		if (committed_already(conn, job) &&
		    spoolfs_conn_remove(conn, job->mv_was, err) < 0 &&
		    err->code != SPOOLFS_E_NOTFOUND)
			return -1;
	}
	if (job->remove_rpath &&
	    spoolfs_conn_remove(conn, job->rpath, err) < 0 &&
	    err->code != SPOOLFS_E_NOTFOUND)
		return -1;
	if (job->rtmp)
		prune_note(job->d, job->rtmp, NULL);
	if (job->remove_rpath)
		prune_note(job->d, job->rpath, NULL);
	spoolfs_error_clear(err);
	return 0;
}

/*
 * A leftover on a server is harmless but untidy, and cheap to retry: a
 * transient error keeps the trash entry and tries again on the backoff
 * schedule, without a limit (the server may be down for days); only a
 * permanent error gives up.  The first failure is logged, the rest only
 * in debug, so a dead server does not flood the log.
 */
static void finish_trash_locked(struct job *job, int rc,
				const struct spoolfs_error *err,
				unsigned int *seed)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	const struct spoolfs_dest *dc = job->d->conf;
	const char *what = job->rtmp ? job->rtmp : job->rpath;

	n->busy = false;
	if (rc < 0 && sp->stopping) {
		node_requeue_locked(sp, n);	/* the journal keeps it */
		return;
	}
	if (rc < 0 && spoolfs_err_transient(err->code)) {
		uint64_t delay;

		n->attempts++;
		delay = spool_backoff_ms(dc->backoff_min_ms, dc->backoff_max_ms,
					 n->attempts, seed);
		n->ready_at = spool_now_ms() + (int64_t)delay;
		if (n->attempts == 1)
			log_warn("%s: cannot remove '%s' from the server: %s; "
				 "will retry", dc->name, what, err->msg);
		else
			log_debug("%s: cannot remove '%s' from the server: %s "
				  "(attempt %d, next in %.1fs)", dc->name, what,
				  err->msg, n->attempts, (double)delay / 1000);
		node_save_locked(sp, n);
		node_requeue_locked(sp, n);
		return;
	}
	if (rc < 0 && err->code == SPOOLFS_E_NAME)
		/* a name the server cannot take cannot be there either */
		log_debug("%s: no '%s' to remove: %s", dc->name, what,
			  err->msg);
	else if (rc < 0)
		log_error("%s: cannot remove '%s' from the server: %s; "
			  "leaving it there", dc->name, what, err->msg);
	else if (n->attempts > 0)
		log_info("%s: removed '%s' from the server", dc->name, what);
	if (job->rtmp)
		node_forget_tmp(n);
	if (job->remove_rpath)
		node_forget_copy(n);
	if (!n->rtmp && !n->rdest) {
		node_drop_locked(sp, n);
		return;
	}
	n->attempts = 0;
	node_save_locked(sp, n);
	node_requeue_locked(sp, n);
}

static void finish_ok_locked(struct job *job, char *final)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	struct spool_dest *d = job->d;
	bool drop, mine;

	if (job->kind == JOB_UPLOAD) {
		node_forget_tmp(n);
		n->rdest = d;
		n->rgen = job->gen;
	}
	/* a meta job's file may have let go of its copy meanwhile (rewritten
	 * and moved: node_stale_copy_locked()) */
	mine = n->rdest == d;
	if (mine) {
		free(n->rpath);
		n->rpath = final;
		n->rmtime = job->mtime;
		free(n->mv_to);
		n->mv_to = NULL;
	}
	d->last_ok_ms = spool_now_ms();
	node_set_error_locked(n, NULL);
	n->busy = false;
	node_requeue_locked(sp, n);
	if (n->state == SPOOL_UPLOADED)
		n->progress = n->size;
	/* the row and the event in one commit; the copy goes after it */
	spool_journal_begin(sp->j);
	drop = n->state == SPOOL_UPLOADED && n->openers == 0 &&
	       !n->dest->conf->keep_uploaded && node_forget_data_locked(sp, n);
	node_save_locked(sp, n);
	if (job->kind == JOB_UPLOAD) {
		char *url = spoolfs_remote_url(d->conf, final);

		spool_event_locked(sp, n, d->conf->name, "uploaded", url);
		log_info("%s: uploaded '%s' to %s (%" PRIu64 " bytes, attempt "
			 "%d)", d->conf->name, final, url ? url : "?",
			 job->size, n->attempts);
		free(url);
	} else if (strcmp(job->rpath, final) != 0) {
		spool_event_locked(sp, n, d->conf->name, "renamed", final);
		log_info("%s: renamed '%s' to '%s' on the server",
			 d->conf->name, job->rpath, final);
	} else {
		log_debug("%s: set the mtime of '%s' on the server",
			  d->conf->name, final);
	}
	spool_journal_commit(sp->j);
	if (drop)
		node_recycle_data_locked(sp, n);
	if (!mine)
		free(final);
}

static struct spool_dest *next_fallback(const struct spool_node *n)
{
	const struct spool_dest *cur = n->target ? n->target : n->dest;
	struct spool_dest *next = cur->fallback;

	/* config.c refuses cycles; guard anyway */
	if (next == n->dest)
		return NULL;
	return next;
}

static void finish_error_locked(struct job *job, struct spoolfs_error *err,
				unsigned int *seed)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	struct spool_dest *d = job->d, *fb;
	const struct spoolfs_dest *dc = d->conf;
	char *url = spoolfs_remote_url(dc, job->relpath), *full = NULL;
	char msg[SPOOLFS_ERRMSG_MAX + 512];
	bool transient = spoolfs_err_transient(err->code);

	n->busy = false;
	if (asprintf(&full, "%s: %s of '%s' to %s failed: %s", dc->name,
		     job->kind == JOB_UPLOAD ? "upload" : "rename",
		     job->relpath, url ? url : dc->url_display, err->msg) < 0)
		full = NULL;
	spoolfs_fit(msg, sizeof(msg), full ? full : err->msg);
	free(full);
	free(url);
	free(d->last_err);
	d->last_err = strdup(msg);
	d->last_err_ms = spool_now_ms();
	node_set_error_locked(n, msg);

	if (transient && n->attempts <= dc->retries) {
		uint64_t delay = spool_backoff_ms(dc->backoff_min_ms,
						  dc->backoff_max_ms,
						  n->attempts, seed);

		n->ready_at = spool_now_ms() + (int64_t)delay;
		node_set_state_locked(sp, n, SPOOL_QUEUED);
		node_requeue_locked(sp, n);
		spool_event_locked(sp, n, dc->name, "retry", msg);
		log_info("%s (attempt %d of %d, next in %.1fs)", msg,
			 n->attempts, dc->retries + 1, (double)delay / 1000);
	} else if (job->kind == JOB_META) {
		if (!n->meta_gave_up)
			stuck_add_locked(d, n);
		n->meta_gave_up = true;
		node_requeue_locked(sp, n);
		spool_event_locked(sp, n, dc->name, "failed", msg);
		log_error("%s; the file stays at '%s' on the server", msg,
			  n->rpath ? n->rpath : job->rpath);
	} else if ((fb = next_fallback(n))) {
		node_trash_tmp_locked(sp, n);
		n->target = fb;
		n->attempts = 0;
		n->ready_at = spool_now_ms();
		node_set_state_locked(sp, n, SPOOL_QUEUED);
		node_requeue_locked(sp, n);
		spool_event_locked(sp, n, fb->conf->name, "fallback", msg);
		log_warn("%s; trying fallback destination '%s'", msg,
			 fb->conf->name);
	} else {
		spool_event_locked(sp, n, dc->name, "failed", msg);
		log_error("%s%s; kept in %s/.failed/%s", msg,
			  transient ? " (out of retries)" : "",
			  n->dest->conf->name, job->relpath);
		node_fail_locked(sp, n, msg);
	}
	node_save_locked(sp, n);
}

/*
 * JOB moved N's copy on the server (to job->moved: its name, or aside)
 * while N let go of that copy (rewritten after a rename, so the copy is
 * stale: node_stale_copy_locked()).  The removal queued then for the name
 * the copy had (job->rpath) waits for this job and would find nothing
 * there: it follows the copy instead.  Without such a removal the copy
 * was meant to stay where it is, and stays where it went.
 */
static void trash_follows_copy_locked(struct job *job)
{
	struct spool_dest *d = job->d;
	struct spool_node *t;

	for (t = qr_chain(d, job->rpath); t; t = t->qr_next)
		if (t->area == SPOOL_AREA_TRASH && has_remote_copy(t, d) &&
		    strcmp(t->rpath, job->rpath) == 0)
			break;
	if (!t)
		return;
	log_debug("%s: the stale copy at '%s' went to '%s' on the server: "
		  "its removal follows it", d->conf->name, job->rpath,
		  job->moved);
	queue_remove_locked(t);		/* indexed by rpath */
	free(t->rpath);
	t->rpath = job->moved;
	job->moved = NULL;
	node_save_locked(job->sp, t);
	node_requeue_locked(job->sp, t);
}

static void finish_locked(struct job *job, int rc, char *final,
			  struct spoolfs_error *err, unsigned int *seed)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	bool parked = job->parked;

	n->streaming = false;
	if (job->moved && n->rpath) {
		/* renamed on the server: the row must say so, whatever
		 * happens next */
		free(n->rpath);
		n->rpath = job->moved;
		job->moved = NULL;
		free(n->mv_to);
		n->mv_to = NULL;
	} else if (job->moved) {
		trash_follows_copy_locked(job);
	}
	if (job->blocked_until && n->ready_at < job->blocked_until)
		n->ready_at = job->blocked_until;
	if (rc > 0) {
		/* a stream handed back before close: not an attempt; the
		 * upload after close resumes its temp */
		n->busy = false;
		n->no_stream = true;
		node_requeue_locked(sp, n);
		free(final);
	} else if (job->kind == JOB_TRASH) {
		finish_trash_locked(job, rc, err, seed);
		free(final);
	} else if (rc == 0) {
		finish_ok_locked(job, final);
	} else if (err->code == SPOOLFS_E_CANCELLED ||
		   job_cancelled_locked(job)) {
		/* changed, moved, removed or stopping: not an attempt */
		n->busy = false;
		if (!n->linked)
			node_trash_tmp_locked(sp, n);	/* removed: no leftovers */
		if (n->attempts > 0)
			n->attempts--;
		if (n->state == SPOOL_UPLOADING)
			node_set_state_locked(sp, n, SPOOL_QUEUED);
		node_requeue_locked(sp, n);
		if (parked && n->linked)
			node_save_durable_locked(sp, n);
		else if (n->linked)
			node_save_locked(sp, n);
		free(final);
	} else {
		finish_error_locked(job, err, seed);
		free(final);
	}
	node_put_locked(sp, n);
	pthread_cond_broadcast(&sp->cond);
}

void stream_offer_locked(struct spool *sp, struct spool_node *n)
{
	struct spool_dest *d;

	if (n->area != SPOOL_AREA_MAIN || !n->linked || !sp->started)
		return;
	d = node_job_dest_locked(n);
	if (d->stream_offer || !d->conf->stream)
		return;
	d->stream_offer = n;
	n->refs++;
	pthread_cond_broadcast(&sp->cond);
}

/* The offered file, if it still wants streaming; the caller drops the
 * offer's ref. */
static struct spool_node *take_offer_locked(struct spool_dest *d)
{
	struct spool_node *n = d->stream_offer;

	d->stream_offer = NULL;
	if (n->linked && n->area == SPOOL_AREA_MAIN &&
	    n->state == SPOOL_WRITING && !n->busy && !n->no_stream &&
	    node_job_dest_locked(n) == d)
		return n;
	node_put_locked(d->sp, n);
	return NULL;
}

static bool keeps_connection(enum spoolfs_err code)
{
	switch (code) {
	case SPOOLFS_OK:
	case SPOOLFS_E_NOTFOUND:
	case SPOOLFS_E_NAME:
	case SPOOLFS_E_PERM:
	case SPOOLFS_E_QUOTA:
	case SPOOLFS_E_NOSPACE:
		return true;
	default:
		return false;
	}
}

/* Whether a job that returned RC has used up its connection: a job that
 * only waits for another has not. */
static bool conn_spent(const struct job *job, int rc,
		       const struct spoolfs_error *err)
{
	return rc != 0 && !keeps_connection(err->code) && !job->blocked_until;
}

/* JOB has run (RC, FINAL, ERR as run_upload()'s): its worker lets go of
 * it and the journal learns how it went. */
static void job_end_locked(struct worker *w, struct job *job, int rc,
			   char *final, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;

	if (rc >= 0)
		spoolfs_error_clear(err);
	w->cur = NULL;
	w->source = NULL;
	free(w->target);
	w->target = NULL;
	finish_locked(job, rc, final, err, &w->seed);
	job_release(job);
	spool_drops_tend_locked(sp, false, NULL);
}

/*
 * SMALL FILES IN BATCHES
 * Over a network a small file costs round trips, not bytes: creating the
 * temp, writing it, the size check and the mtime take two even when the
 * backend pipelines them (sftp), the rename a third.  Where the backend
 * can (put_batch), a worker that picks a small file takes the other small
 * files ready behind it too, up to SPOOLFS_BATCH_MAX, puts them all at
 * once, prepares each one's commit as run_upload() would
 * (commit_prepare()), and renames them all at once (rename_batch): the
 * batch costs the round trips of one file.  Each file is still a job of
 * its own, ended in queue order; one whose batched put or rename did not
 * work out gets the single path (put_rest_and_commit(), rename_mkdirs(),
 * which also make a missing directory).
 *
 * Only files that have never been on this server (no temp, no copy) go
 * in a batch: while they wait for their turn they are no worker's cur,
 * and owner_locked() need not see them, as they move no copy; the names
 * their renames go to are held (worker->held) until the batch ends.
 * Small files go through one worker of a destination at a time
 * (small_taken): a session keeps up with a batch, and sessions creating
 * files in one directory at once only slow each other down on the server.
 */
static bool batchable_locked(const struct spool_dest *d,
			     const struct spool_node *n)
{
	return n->area == SPOOL_AREA_MAIN && !n->rtmp && n->rdest != d &&
	       n->size <= SPOOLFS_BATCH_FILE_MAX && !d->conf->max_rate;
}

/* Claim N (batchable, picked) into JOBS[0] and the batchable files ready
 * behind it (the conditions of pick_locked()) into JOBS[1..]: the number
 * of jobs claimed, 0 when not even N's. */
static int claim_batch_locked(struct spool_dest *d, struct spool_node *n,
			      struct job *jobs, int64_t now)
{
	struct spool_node *k = n->qnext, *next;
	int nj = 1;

	if (claim_locked(&jobs[0], d, n, false) < 0) {
		job_release(&jobs[0]);
		return 0;
	}
	for (; k && nj < SPOOLFS_BATCH_MAX; k = next) {
		next = k->qnext;
		if (k->ready_at > now)
			break;
		if (k->busy || k->writers > 0 || !batchable_locked(d, k) ||
		    volume_blocked_locked(k))
			continue;
		/* an upload from byte 0 (no temp, no copy): JOB_UPLOAD,
		 * not resumed */
		if (claim_locked(&jobs[nj], d, k, false) < 0) {
			job_release(&jobs[nj]);
			break;
		}
		nj++;
	}
	return nj;
}

/* What run_batch() knows of one of its files. */
struct batch_file {
	int fd;
	int rc;			/* as run_upload()'s; 1: still to put */
	bool single;		/* goes the single path (put_rest_and_commit) */
	char *final;
	struct spoolfs_error err;
};

/* JOB is the one its worker is busy with now (owner_locked()). */
static void batch_turn(struct worker *w, struct job *job)
{
	pthread_mutex_lock(&w->d->sp->lock);
	w->cur = job->n;
	pthread_mutex_unlock(&w->d->sp->lock);
}

/*
 * Run the NJ upload jobs of a batch (claimed, the lock not held) on *CONNP
 * and end each.  Returns with the lock held.
 */
static void run_batch(struct worker *w, struct spoolfs_conn **connp,
		      struct job *jobs, int nj)
{
	struct spool *sp = w->d->sp;
	size_t z = (size_t)nj;
	struct batch_file *bf = calloc(z, sizeof(*bf));
	struct spoolfs_put_item *puts = calloc(z, sizeof(*puts));
	struct spoolfs_rename_item *rens = calloc(z, sizeof(*rens));
	int *at = calloc(2 * z, sizeof(*at)), *rat = at ? at + nj : NULL;
	struct spoolfs_error err;
	bool handed_back = false;
	int i, k, n = 0, nr = 0;

	spoolfs_error_clear(&err);
	for (i = 0; i < nj; i++) {
		jobs[i].w = w;
		jobs[i].batched = true;
	}
	if (!bf || !puts || !rens || !at)
		spoolfs_error_set(&err, SPOOLFS_E_IO, "out of memory");
	else if (!*connp)
		*connp = spoolfs_conn_open(w->d->conf, &err);
	if (!bf || !puts || !rens || !at || !*connp) {
		/* each file fails as its own upload would have */
		pthread_mutex_lock(&sp->lock);
		for (i = 0; i < nj; i++)
			job_end_locked(w, &jobs[i], -1, NULL, &err);
		goto out;
	}

	/* 1. each file's spool copy, name and temp (record_tmp()) */
	for (i = 0; i < nj; i++) {
		struct job *job = &jobs[i];

		bf[i].rc = -1;
		bf[i].fd = open_copy(job, *connp, &bf[i].err);
		if (bf[i].fd >= 0 && record_tmp(job, &bf[i].err) == 0)
			bf[i].rc = 1;
	}

	/* 2. the puts, together */
	for (i = 0; i < nj; i++) {
		if (bf[i].rc != 1)
			continue;
		at[n] = i;
		puts[n++] = (struct spoolfs_put_item){
			.path = jobs[i].rtmp, .fd = bf[i].fd,
			.size = jobs[i].size, .mtime = jobs[i].mtime,
			.progress = job_progress, .arg = &jobs[i] };
	}
	spoolfs_conn_put_batch(*connp, puts, (size_t)n);

	/* 3. what arrived: checked, its name reserved and noted */
	for (k = 0; k < n; k++) {
		struct spoolfs_put_item *it = &puts[k];
		struct job *job = &jobs[i = at[k]];
		int rc;

		if (it->rc == 1 || (it->rc < 0 &&
				    it->err.code == SPOOLFS_E_NOTFOUND)) {
			bf[i].single = true;	/* e.g. a directory to make */
			continue;
		}
		if (it->rc < 0) {
			bf[i].err = it->err;
			continue;
		}
		batch_turn(w, job);
		rc = commit_prepare(job, *connp, job->rtmp, it->rsize,
				    &bf[i].final, &bf[i].err);
		if (rc != 0) {
			bf[i].rc = rc < 0 ? -1 : 0;
			continue;
		}
		rat[nr] = i;
		rens[nr++] = (struct spoolfs_rename_item){
			.from = job->rtmp, .to = bf[i].final };
	}

	/* 4. the renames, together */
	spoolfs_conn_rename_batch(*connp, rens, (size_t)nr);
	for (k = 0; k < nr; k++) {
		struct spoolfs_rename_item *r = &rens[k];

		i = rat[k];
		if (r->rc == 0)
			bf[i].rc = 0;
		else if (r->rc == 1 || r->err.code == SPOOLFS_E_NOTFOUND)
			bf[i].rc = rename_mkdirs(*connp, r->from, r->to,
						 &bf[i].err);
		else
			bf[i].err = r->err;
	}

	/* 5. those the batch could not do, one by one */
	for (i = 0; i < nj; i++) {
		if (!bf[i].single)
			continue;
		batch_turn(w, &jobs[i]);
		bf[i].rc = put_rest_and_commit(&jobs[i], *connp, bf[i].fd, 0,
					       &bf[i].final, &bf[i].err);
	}

	/* 6. each ends, in order; after a connection failed, those not done
	 * are handed back, not counted as an attempt (a temp put already is
	 * resumed whole) */
	for (i = 0; i < nj; i++) {
		if (bf[i].fd >= 0)
			close(bf[i].fd);
		if (handed_back && bf[i].rc != 0) {
			bf[i].rc = -1;
			spoolfs_error_set(&bf[i].err, SPOOLFS_E_CANCELLED,
					  "cancelled");
		} else if (*connp && conn_spent(&jobs[i], bf[i].rc,
						&bf[i].err)) {
			spoolfs_conn_close(*connp);
			*connp = NULL;
			handed_back = true;
		}
		pthread_mutex_lock(&sp->lock);
		job_end_locked(w, &jobs[i], bf[i].rc, bf[i].final, &bf[i].err);
		if (i + 1 < nj)
			pthread_mutex_unlock(&sp->lock);
	}
out:
	while (w->nheld > 0)
		free(w->held[--w->nheld].path);
	free(bf);
	free(puts);
	free(rens);
	free(at);
}

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct spool_dest *d = w->d;
	struct spool *sp = d->sp;
	struct spoolfs_conn *conn = NULL;
	int64_t idle_since = spool_now_ms();
	id_t tid = (id_t)syscall(SYS_gettid);
	bool can_batch = spoolfs_dest_can_batch(d->conf);
	struct job *jobs = NULL;
	int prio;

	/*
	 * Uploads are background work: on Linux the nice value is per
	 * thread, so the workers yield the CPU to the threads answering
	 * the writer (a `cp` into the mount) and take what is left.
	 */
	errno = 0;
	prio = getpriority(PRIO_PROCESS, tid);
	if (errno == 0)
		(void)setpriority(PRIO_PROCESS, tid, prio + WORKER_NICE);

	pthread_mutex_lock(&sp->lock);
	while (!sp->stopping) {
		struct spoolfs_error err;
		struct spool_node *n;
		int64_t now = spool_now_ms(), next;
		char *final = NULL;
		struct job job;
		bool stream, small = false;
		int rc;

		if (sp->ninval) {
			spool_inval_drain_locked(sp);
			continue;
		}
		if (d->pruning) {
			pthread_cond_wait(&sp->cond, &sp->lock);
			continue;
		}
		n = pick_locked(d, now, &next, can_batch && d->small_taken);
		stream = false;
		if (!n && d->stream_offer && (n = take_offer_locked(d)))
			stream = true;
		if (!n) {
			struct timespec ts;
			int64_t until = next;

			/* nothing to send: let go of what was sent */
			if (spool_drops_tend_locked(sp, true, &until))
				continue;
			if (conn && d->nprune > 0 && !others_busy_locked(w)) {
				char *dir = d->prune[--d->nprune];

				d->pruning = true;
				pthread_mutex_unlock(&sp->lock);
				prune_dirs(d, conn, dir);
				free(dir);
				pthread_mutex_lock(&sp->lock);
				d->pruning = false;
				pthread_cond_broadcast(&sp->cond);
				continue;
			}

			if (conn && now - idle_since > IDLE_DISCONNECT_MS) {
				pthread_mutex_unlock(&sp->lock);
				spoolfs_conn_close(conn);
				conn = NULL;
				pthread_mutex_lock(&sp->lock);
				continue;
			}
			if (conn && until > idle_since + IDLE_DISCONNECT_MS)
				until = idle_since + IDLE_DISCONNECT_MS + 1;
			if (until == INT64_MAX)
				until = now + 3600 * 1000;
			ts.tv_sec = until / 1000;
			ts.tv_nsec = (until % 1000) * 1000000;
			pthread_cond_timedwait(&sp->cond, &sp->lock, &ts);
			continue;
		}
		w->busy = true;
		if (!stream && can_batch && batchable_locked(d, n) &&
		    (jobs || (jobs = calloc(SPOOLFS_BATCH_MAX,
					    sizeof(*jobs))))) {
			int nj = claim_batch_locked(d, n, jobs, now);

			if (nj == 0) {
				log_error("%s: out of memory", d->conf->name);
				break;
			}
			d->small_taken = true;
			if (nj > 1) {
				pthread_mutex_unlock(&sp->lock);
				run_batch(w, &conn, jobs, nj);
				d->small_taken = false;
				w->busy = false;
				idle_since = spool_now_ms();
				continue;
			}
			job = jobs[0];
			small = true;
			rc = 0;
		} else {
			rc = claim_locked(&job, d, n, stream);
		}
		if (stream)
			node_put_locked(sp, n);		/* the offer's ref */
		if (rc < 0) {
			log_error("%s: out of memory", d->conf->name);
			break;
		}
		w->cur = n;
		w->source = job.kind == JOB_META ? job.rpath : NULL;
		job.w = w;
		pthread_mutex_unlock(&sp->lock);

		spoolfs_error_clear(&err);
		rc = 0;
		if (!conn)
			conn = spoolfs_conn_open(d->conf, &err);
		if (!conn)
			rc = job.stream ? 1 : -1;	/* a stream only hands back */
		else if (job.kind == JOB_UPLOAD && job.stream)
			rc = run_stream(&job, conn, &final, &err);
		else if (job.kind == JOB_UPLOAD)
			rc = run_upload(&job, conn, &final, &err);
		else if (job.kind == JOB_META)
			rc = run_meta(&job, conn, &final, &err);
		else
			rc = run_trash(&job, conn, &err);
		if (conn && conn_spent(&job, rc, &err)) {
			spoolfs_conn_close(conn);
			conn = NULL;
		}
		idle_since = spool_now_ms();

		pthread_mutex_lock(&sp->lock);
		if (small)
			d->small_taken = false;
		job_end_locked(w, &job, rc, final, &err);
		w->busy = false;
	}
	w->busy = false;	/* also after a break out of memory */
	pthread_mutex_unlock(&sp->lock);
	spoolfs_conn_close(conn);
	free(jobs);
	return NULL;
}

int uploader_start(struct spool *sp)
{
	for (size_t i = 0; i < sp->ndests; i++) {
		struct spool_dest *d = &sp->dests[i];
		int nw = d->conf->connections > 0 ? d->conf->connections : 1;

		d->workers = calloc((size_t)nw, sizeof(struct worker));
		if (!d->workers)
			return -1;
		for (int k = 0; k < nw; k++) {
			struct worker *w = &d->workers[k];

			w->d = d;
			w->seed = (unsigned int)(spool_now_ms() ^ (i << 8) ^
						 (unsigned)k);
			errno = pthread_create(&w->thread, NULL, worker_main, w);
			if (errno)
				return -1;
			d->nworkers = k + 1;
		}
	}
	sp->started = true;
	return 0;
}

void uploader_stop(struct spool *sp)
{
	pthread_mutex_lock(&sp->lock);
	sp->stopping = true;
	pthread_cond_broadcast(&sp->cond);
	pthread_cond_broadcast(&sp->stream_cond);
	pthread_mutex_unlock(&sp->lock);
	for (size_t i = 0; i < sp->ndests; i++) {
		struct spool_dest *d = &sp->dests[i];
		struct worker *ws = d->workers;

		for (int k = 0; k < d->nworkers; k++)
			pthread_join(ws[k].thread, NULL);
		pthread_mutex_lock(&sp->lock);
		if (d->stream_offer) {
			node_put_locked(sp, d->stream_offer);
			d->stream_offer = NULL;
		}
		while (d->nstuck > 0)
			node_put_locked(sp, d->stuck[--d->nstuck]);
		while (d->nprune > 0)
			free(d->prune[--d->nprune]);
		free(d->stuck);
		d->stuck = NULL;
		d->capstuck = 0;
		pthread_mutex_unlock(&sp->lock);
		free(d->workers);
		d->workers = NULL;
		d->nworkers = 0;
	}
}
