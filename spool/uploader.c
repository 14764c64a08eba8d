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

enum job_kind { JOB_UPLOAD, JOB_META, JOB_TRASH };

struct job {
	struct spool *sp;
	struct spool_dest *d;
	struct spool_node *n;
	enum job_kind kind;
	uint64_t gen;
	uint64_t size;
	int64_t mtime;
	char *relpath;		/* at claim time */
	char *rtmp;		/* upload: the temp name; meta/trash: to remove */
	bool resume;		/* upload: rtmp may hold a partial upload */
	char *rpath;		/* meta/trash: where the content is now */
	bool remove_rpath;	/* trash: delete the uploaded copy */
	uint64_t last_done;
};

struct worker {
	struct spool_dest *d;
	pthread_t thread;
	unsigned int seed;
};

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

static struct spool_node *pick_locked(struct spool_dest *d, int64_t now,
				      int64_t *next_ready)
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
		if (volume_blocked_locked(n))
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

static char *dir_of(const char *rel)
{
	const char *slash = strrchr(rel, '/');

	return slash ? strndup(rel, (size_t)(slash - rel)) : strdup("");
}

static void job_release(struct job *job)
{
	free(job->relpath);
	free(job->rtmp);
	free(job->rpath);
}

/* Take N for this worker: mark it busy and copy what the job needs. */
static int claim_locked(struct job *job, struct spool_dest *d,
			struct spool_node *n)
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
		if (n->rtmp && n->tmp_dest == d)
			job->rtmp = strdup(n->rtmp);
		if (n->rdest == d && n->rpath) {
			job->rpath = strdup(n->rpath);
			job->remove_rpath = true;
		}
	} else if (n->rdest == d && n->rgen == n->gen && n->rpath) {
		job->kind = JOB_META;
		job->rpath = strdup(n->rpath);
	} else {
		/* resume a partial temp of this content, or start a new one
		 * (recorded by run_upload() once connected) */
		job->kind = JOB_UPLOAD;
		if (n->rtmp && n->tmp_dest == d && n->tmp_gen == n->gen) {
			job->resume = true;
			job->rtmp = strdup(n->rtmp);
		} else {
			char *dir = dir_of(job->relpath);

			if (!dir || asprintf(&job->rtmp, "%s%s.spoolfs-%" PRId64
					     "-%" PRIu64 ".part", dir,
					     *dir ? "/" : "", n->id,
					     n->gen) < 0)
				job->rtmp = NULL;
			free(dir);
		}
		if (!job->rtmp)
			return -1;
	}
	queue_remove_locked(n);
	n->busy = true;
	n->refs++;
	n->progress = 0;
	if (job->kind != JOB_TRASH) {
		/* saved by run_upload() or when the job ends: one journal
		 * write fewer per file */
		n->attempts++;
		node_set_state_locked(d->sp, n, SPOOL_UPLOADING);
	}
	return 0;
}

/* put, creating the directory when the backend says it is missing */
static int put_mkdirs(struct spoolfs_conn *conn, struct job *job,
		      const char *dir, const char *tmp, int fd,
		      uint64_t offset, uint64_t *rsize,
		      struct spoolfs_error *err)
{
	if (spoolfs_conn_put_file(conn, tmp, fd, offset, job->size,
				  job->mtime, job_progress, job, rsize,
				  err) == 0)
		return 0;
	if (err->code != SPOOLFS_E_NOTFOUND || !*dir)
		return -1;
	if (spoolfs_conn_mkdirs(conn, dir, err) < 0)
		return -1;
	return spoolfs_conn_put_file(conn, tmp, fd, 0, job->size, job->mtime,
				     job_progress, job, rsize, err);
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

static int run_upload(struct job *job, struct spoolfs_conn *conn,
		      char **final, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;
	struct spoolfs_error ignored;
	struct spoolfs_rstat st;
	uint64_t offset = 0, rsize = 0;
	const char *tmp = job->rtmp;
	char *dir = NULL;
	bool cancelled;
	int fd, rc = -1;

	fd = spool_data_open(sp, n->id, O_RDONLY);
	if (fd < 0)
		return spoolfs_error_set(err, SPOOLFS_E_NOTFOUND,
					 "the spool copy is missing: %m");
	dir = dir_of(job->relpath);
	if (!dir)
		goto out_nomem;
	if (job->resume && spoolfs_conn_can(conn, SPOOLFS_CAP_RESUME) &&
	    spoolfs_conn_stat(conn, tmp, &st, &ignored) == 0 &&
	    st.size <= job->size)
		offset = st.size;

	/*
	 * Record the temp (and the state) before a byte is sent: after a
	 * crash the journal knows every temp that may be on a server.  A
	 * temp of older content goes to the trash.
	 */
	pthread_mutex_lock(&sp->lock);
	cancelled = job_cancelled_locked(job);
	if (!cancelled && !job->resume) {
		char *copy = strdup(tmp);

		if (!copy) {
			pthread_mutex_unlock(&sp->lock);
			goto out_nomem;
		}
		node_trash_tmp_locked(sp, n);
		free(n->rtmp);
		n->rtmp = copy;
		n->tmp_dest = job->d;
		n->tmp_gen = job->gen;
	}
	if (!cancelled)
		node_save_locked(sp, n);
	pthread_mutex_unlock(&sp->lock);
	if (cancelled) {
		spoolfs_error_set(err, SPOOLFS_E_CANCELLED, "cancelled");
		goto out;
	}
	if (offset)
		log_info("%s: resuming '%s' at byte %" PRIu64 " of %" PRIu64,
			 job->d->conf->name, job->relpath, offset, job->size);

	if (put_mkdirs(conn, job, dir, tmp, fd, offset, &rsize, err) < 0)
		goto out;
	if (rsize != job->size) {
		spoolfs_conn_remove(conn, tmp, &ignored);
		spoolfs_error_set(err, SPOOLFS_E_PROTO,
				  "the server holds %" PRIu64 " bytes after "
				  "the upload, expected %" PRIu64,
				  rsize, job->size);
		goto out;
	}

	/* commit: the final name is the one the file has now */
	pthread_mutex_lock(&sp->lock);
	cancelled = job_cancelled_locked(job);
	*final = cancelled ? NULL : node_relpath_locked(n);
	pthread_mutex_unlock(&sp->lock);
	if (cancelled) {
		spoolfs_error_set(err, SPOOLFS_E_CANCELLED, "cancelled");
		goto out;
	}
	if (!*final)
		goto out_nomem;
	if (rename_mkdirs(conn, tmp, *final, err) < 0)
		goto out;
	rc = 0;
	goto out;

out_nomem:
	spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
out:
	close(fd);
	free(dir);
	return rc;
}

static int run_meta(struct job *job, struct spoolfs_conn *conn,
		    char **final, struct spoolfs_error *err)
{
	struct spool *sp = job->sp;

	pthread_mutex_lock(&sp->lock);
	*final = node_relpath_locked(job->n);
	pthread_mutex_unlock(&sp->lock);
	if (!*final)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	if (strcmp(*final, job->rpath) != 0 &&
	    rename_mkdirs(conn, job->rpath, *final, err) < 0)
		return -1;
	return spoolfs_conn_set_mtime(conn, *final, job->mtime, err);
}

static int run_trash(struct job *job, struct spoolfs_conn *conn,
		     struct spoolfs_error *err)
{
	if (job->rtmp && spoolfs_conn_remove(conn, job->rtmp, err) < 0 &&
	    err->code != SPOOLFS_E_NOTFOUND)
		return -1;
	if (job->remove_rpath &&
	    spoolfs_conn_remove(conn, job->rpath, err) < 0 &&
	    err->code != SPOOLFS_E_NOTFOUND)
		return -1;
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
	if (job->rtmp) {
		free(n->rtmp);
		n->rtmp = NULL;
		n->tmp_dest = NULL;
	}
	if (job->remove_rpath) {
		free(n->rpath);
		n->rpath = NULL;
		n->rdest = NULL;
	}
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

	if (job->kind == JOB_UPLOAD) {
		free(n->rtmp);
		n->rtmp = NULL;
		n->tmp_dest = NULL;
		n->rdest = d;
		n->rgen = job->gen;
	}
	free(n->rpath);
	n->rpath = final;
	n->rmtime = job->mtime;
	d->last_ok_ms = spool_now_ms();
	node_set_error_locked(n, NULL);
	n->busy = false;
	node_requeue_locked(sp, n);
	if (n->state == SPOOL_UPLOADED) {
		n->progress = n->size;
		if (n->openers == 0 && !n->dest->conf->keep_uploaded)
			node_free_data_locked(sp, n);
	}
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
	char *url = spoolfs_remote_url(dc, job->relpath);
	char msg[SPOOLFS_ERRMSG_MAX + 512];
	bool transient = spoolfs_err_transient(err->code);

	n->busy = false;
	snprintf(msg, sizeof(msg), "%s: %s of '%s' to %s failed: %s", dc->name,
		 job->kind == JOB_UPLOAD ? "upload" : "rename",
		 job->relpath, url ? url : dc->url_display, err->msg);
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
		n->meta_gave_up = true;
		node_requeue_locked(sp, n);
		spool_event_locked(sp, n, dc->name, "failed", msg);
		log_error("%s; the file stays at '%s' on the server", msg,
			  job->rpath);
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

static void finish_locked(struct job *job, int rc, char *final,
			  struct spoolfs_error *err, unsigned int *seed)
{
	struct spool *sp = job->sp;
	struct spool_node *n = job->n;

	if (job->kind == JOB_TRASH) {
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
		if (n->linked)
			node_save_locked(sp, n);
		free(final);
	} else {
		finish_error_locked(job, err, seed);
		free(final);
	}
	node_put_locked(sp, n);
	pthread_cond_broadcast(&sp->cond);
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

static void *worker_main(void *arg)
{
	struct worker *w = arg;
	struct spool_dest *d = w->d;
	struct spool *sp = d->sp;
	struct spoolfs_conn *conn = NULL;
	int64_t idle_since = spool_now_ms();
	id_t tid = (id_t)syscall(SYS_gettid);
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
		int rc;

		if (sp->ninval) {
			spool_inval_drain_locked(sp);
			continue;
		}
		n = pick_locked(d, now, &next);
		if (!n) {
			struct timespec ts;
			int64_t until = next;

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
		if (claim_locked(&job, d, n) < 0) {
			log_error("%s: out of memory", d->conf->name);
			break;
		}
		pthread_mutex_unlock(&sp->lock);

		spoolfs_error_clear(&err);
		rc = 0;
		if (!conn)
			conn = spoolfs_conn_open(d->conf, &err);
		if (!conn)
			rc = -1;
		else if (job.kind == JOB_UPLOAD)
			rc = run_upload(&job, conn, &final, &err);
		else if (job.kind == JOB_META)
			rc = run_meta(&job, conn, &final, &err);
		else
			rc = run_trash(&job, conn, &err);
		if (rc < 0 && conn && !keeps_connection(err.code)) {
			spoolfs_conn_close(conn);
			conn = NULL;
		}
		if (rc == 0)
			spoolfs_error_clear(&err);
		idle_since = spool_now_ms();

		pthread_mutex_lock(&sp->lock);
		finish_locked(&job, rc, final, &err, &w->seed);
		job_release(&job);
	}
	pthread_mutex_unlock(&sp->lock);
	spoolfs_conn_close(conn);
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
	pthread_mutex_unlock(&sp->lock);
	for (size_t i = 0; i < sp->ndests; i++) {
		struct spool_dest *d = &sp->dests[i];
		struct worker *ws = d->workers;

		for (int k = 0; k < d->nworkers; k++)
			pthread_join(ws[k].thread, NULL);
		free(d->workers);
		d->workers = NULL;
		d->nworkers = 0;
	}
}
