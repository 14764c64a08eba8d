/*
 * faulty.c - the failure-injecting backend for tests; see faulty.h.
 *
 * Each call takes its decision (count it, consume an armed fault, read the
 * delay) under fault_lock in one step, so when several workers race, exactly
 * N calls fail.  Then, without the lock, it sleeps, fails or passes the call
 * to the inner backend's own connection held in conn->priv.
 */
#include "faulty.h"

#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define DELAY_STEP_MS	10

struct fault {
	int remaining;			/* calls left to fail, < 0: all */
	enum spoolfs_err code;
	char msg[SPOOLFS_ERRMSG_MAX];	/* "" = the default message */
};

static pthread_mutex_t fault_lock = PTHREAD_MUTEX_INITIALIZER;
/* All of these are guarded by fault_lock. */
static struct fault faults[SPOOLFS_FAULTY__COUNT];
static unsigned calls[SPOOLFS_FAULTY__COUNT];
static unsigned injected[SPOOLFS_FAULTY__COUNT];
static unsigned delay_ms[SPOOLFS_FAULTY__COUNT];
static struct fault put_after;		/* remaining: 1 when armed */
static struct fault rename_lost;	/* remaining: 1 when armed */
static unsigned batched;
static uint64_t put_after_bytes;
static int64_t last_put_offset = -1;
static char last_put_path[PATH_MAX];

static const char *const op_names[SPOOLFS_FAULTY__COUNT] = {
	[SPOOLFS_FAULTY_CONNECT] = "connect",
	[SPOOLFS_FAULTY_DISCONNECT] = "disconnect",
	[SPOOLFS_FAULTY_MKDIRS] = "mkdirs",
	[SPOOLFS_FAULTY_PUT] = "put",
	[SPOOLFS_FAULTY_STAT] = "stat",
	[SPOOLFS_FAULTY_RENAME] = "rename",
	[SPOOLFS_FAULTY_REMOVE] = "remove",
	[SPOOLFS_FAULTY_SET_MTIME] = "set_mtime",
	[SPOOLFS_FAULTY_GET] = "get",
};

static bool op_valid(enum spoolfs_faulty_op op)
{
	return (int)op >= 0 && op < SPOOLFS_FAULTY__COUNT;
}

const char *spoolfs_faulty_op_name(enum spoolfs_faulty_op op)
{
	return op_valid(op) ? op_names[op] : "unknown";
}

static void fault_arm(struct fault *f, int n, enum spoolfs_err code,
		      const char *msg)
{
	f->remaining = n;
	f->code = code;
	snprintf(f->msg, sizeof(f->msg), "%s", msg ? msg : "");
}

void spoolfs_faulty_reset(void)
{
	pthread_mutex_lock(&fault_lock);
	memset(faults, 0, sizeof(faults));
	memset(calls, 0, sizeof(calls));
	memset(injected, 0, sizeof(injected));
	memset(delay_ms, 0, sizeof(delay_ms));
	memset(&put_after, 0, sizeof(put_after));
	memset(&rename_lost, 0, sizeof(rename_lost));
	put_after_bytes = 0;
	batched = 0;
	last_put_offset = -1;
	last_put_path[0] = '\0';
	pthread_mutex_unlock(&fault_lock);
}

void spoolfs_faulty_fail(enum spoolfs_faulty_op op, int n,
			 enum spoolfs_err code, const char *msg)
{
	if (!op_valid(op))
		return;
	pthread_mutex_lock(&fault_lock);
	fault_arm(&faults[op], n, code, msg);
	pthread_mutex_unlock(&fault_lock);
}

void spoolfs_faulty_fail_put_after(uint64_t bytes, enum spoolfs_err code,
				   const char *msg)
{
	pthread_mutex_lock(&fault_lock);
	fault_arm(&put_after, 1, code, msg);
	put_after_bytes = bytes;
	pthread_mutex_unlock(&fault_lock);
}

void spoolfs_faulty_fail_rename_after(enum spoolfs_err code, const char *msg)
{
	pthread_mutex_lock(&fault_lock);
	fault_arm(&rename_lost, 1, code, msg);
	pthread_mutex_unlock(&fault_lock);
}

void spoolfs_faulty_delay(enum spoolfs_faulty_op op, unsigned ms)
{
	if (!op_valid(op))
		return;
	pthread_mutex_lock(&fault_lock);
	delay_ms[op] = ms;
	pthread_mutex_unlock(&fault_lock);
}

unsigned spoolfs_faulty_batched(void)
{
	unsigned n;

	pthread_mutex_lock(&fault_lock);
	n = batched;
	pthread_mutex_unlock(&fault_lock);
	return n;
}

unsigned spoolfs_faulty_calls(enum spoolfs_faulty_op op)
{
	unsigned n;

	if (!op_valid(op))
		return 0;
	pthread_mutex_lock(&fault_lock);
	n = calls[op];
	pthread_mutex_unlock(&fault_lock);
	return n;
}

unsigned spoolfs_faulty_injected(enum spoolfs_faulty_op op)
{
	unsigned n;

	if (!op_valid(op))
		return 0;
	pthread_mutex_lock(&fault_lock);
	n = injected[op];
	pthread_mutex_unlock(&fault_lock);
	return n;
}

int64_t spoolfs_faulty_last_put(char *path, size_t len)
{
	int64_t off;

	pthread_mutex_lock(&fault_lock);
	off = last_put_offset;
	if (path && len > 0)
		snprintf(path, len, "%s", last_put_path);
	pthread_mutex_unlock(&fault_lock);
	return off;
}

/* What one call does, decided under the lock. */
struct decision {
	bool fail;			/* fail at once with code/msg */
	bool fail_after;		/* put: write put_bytes, then fail;
					 * rename: rename, then fail */
	uint64_t put_bytes;
	enum spoolfs_err code;
	char msg[SPOOLFS_ERRMSG_MAX];
	unsigned delay;
};

/* Take F's next failure, if one is armed, into D.  Caller holds the lock. */
static bool fault_take_locked(struct fault *f, struct decision *d,
			      enum spoolfs_faulty_op op)
{
	if (f->remaining == 0)
		return false;
	if (f->remaining > 0)
		f->remaining--;
	injected[op]++;
	d->code = f->code;
	if (f->msg[0])
		snprintf(d->msg, sizeof(d->msg), "%s", f->msg);
	else
		snprintf(d->msg, sizeof(d->msg), "injected %s failure",
			 op_names[op]);
	return true;
}

static void decide(enum spoolfs_faulty_op op, struct decision *d)
{
	memset(d, 0, sizeof(*d));
	pthread_mutex_lock(&fault_lock);
	calls[op]++;
	d->delay = delay_ms[op];
	d->fail = fault_take_locked(&faults[op], d, op);
	if (!d->fail && op == SPOOLFS_FAULTY_PUT) {
		d->fail_after = fault_take_locked(&put_after, d, op);
		d->put_bytes = put_after_bytes;
	}
	if (!d->fail && op == SPOOLFS_FAULTY_RENAME)
		d->fail_after = fault_take_locked(&rename_lost, d, op);
	pthread_mutex_unlock(&fault_lock);
}

static void sleep_ms(unsigned ms)
{
	struct timespec ts = {
		.tv_sec = ms / 1000,
		.tv_nsec = (long)(ms % 1000) * 1000000L,
	};

	while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

/* Sleep D's delay; for transfers, keep calling progress.  -1: cancelled. */
static int delay(const struct decision *d, spoolfs_progress_fn progress,
		 void *arg, uint64_t done)
{
	for (unsigned left = d->delay; left > 0;) {
		unsigned step = left < DELAY_STEP_MS ? left : DELAY_STEP_MS;

		sleep_ms(step);
		left -= step;
		if (progress && progress(arg, done) != 0)
			return -1;
	}
	return 0;
}

static int injected_error(const struct decision *d, struct spoolfs_error *err)
{
	return spoolfs_error_set(err, d->code, "%s", d->msg);
}

static struct spoolfs_conn *inner(struct spoolfs_conn *conn)
{
	return conn->priv;
}

static int faulty_connect(struct spoolfs_conn *conn, struct spoolfs_error *err)
{
	const struct spoolfs_backend *be;
	struct spoolfs_conn *ic;
	struct decision d;

	decide(SPOOLFS_FAULTY_CONNECT, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	be = spoolfs_backend_find(conn->dest->scheme);
	if (!be || be == &spoolfs_backend_faulty)
		return spoolfs_error_set(err, SPOOLFS_E_UNSUPPORTED,
					 "no backend for '%s://' in this build",
					 conn->dest->scheme);
	ic = calloc(1, sizeof(*ic));
	if (!ic)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	ic->backend = be;
	ic->dest = conn->dest;
	if (be->connect(ic, err) < 0) {
		free(ic);
		return -1;
	}
	conn->priv = ic;
	return 0;
}

static void faulty_disconnect(struct spoolfs_conn *conn)
{
	struct spoolfs_conn *ic = inner(conn);

	pthread_mutex_lock(&fault_lock);
	calls[SPOOLFS_FAULTY_DISCONNECT]++;
	pthread_mutex_unlock(&fault_lock);
	if (!ic)
		return;
	ic->backend->disconnect(ic);
	free(ic);
	conn->priv = NULL;
}

static int faulty_mkdirs(struct spoolfs_conn *conn, const char *dir,
			 struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_MKDIRS, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	return ic->backend->mkdirs(ic, dir, err);
}

/*
 * The inner put failed on its own (a missing directory, say) before the cut
 * could happen: re-arm the cut for the next put, unless a test armed a new
 * one meanwhile.
 */
static void put_after_give_back(const struct decision *d)
{
	pthread_mutex_lock(&fault_lock);
	if (put_after.remaining == 0) {
		put_after.remaining = 1;
		put_after.code = d->code;
		snprintf(put_after.msg, sizeof(put_after.msg), "%s", d->msg);
		put_after_bytes = d->put_bytes;
		injected[SPOOLFS_FAULTY_PUT]--;
	}
	pthread_mutex_unlock(&fault_lock);
}

static int faulty_put(struct spoolfs_conn *conn, const char *path, int fd,
		      uint64_t offset, uint64_t size,
		      spoolfs_progress_fn progress, void *arg,
		      struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	uint64_t end = size;
	struct decision d;

	pthread_mutex_lock(&fault_lock);
	last_put_offset = (int64_t)offset;
	snprintf(last_put_path, sizeof(last_put_path), "%s", path);
	pthread_mutex_unlock(&fault_lock);

	decide(SPOOLFS_FAULTY_PUT, &d);
	if (offset > 0 && !(ic->backend->caps & SPOOLFS_CAP_RESUME))
		offset = 0;
	if (delay(&d, progress, arg, offset) < 0)
		return spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
					 "upload of '%s' cancelled", path);
	if (d.fail)
		return injected_error(&d, err);
	if (d.fail_after && d.put_bytes < size - offset)
		end = offset + d.put_bytes;
	if (ic->backend->put(ic, path, fd, offset, end, progress, arg, err) < 0) {
		if (d.fail_after)
			put_after_give_back(&d);
		return -1;
	}
	if (d.fail_after)
		return injected_error(&d, err);
	return 0;
}

static int faulty_stat(struct spoolfs_conn *conn, const char *path,
		       struct spoolfs_rstat *st, struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_STAT, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	return ic->backend->stat(ic, path, st, err);
}

static int faulty_rename(struct spoolfs_conn *conn, const char *from,
			 const char *to, struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_RENAME, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	if (ic->backend->rename(ic, from, to, err) < 0)
		return -1;
	return d.fail_after ? injected_error(&d, err) : 0;
}

static int faulty_remove(struct spoolfs_conn *conn, const char *path,
			 struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_REMOVE, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	return ic->backend->remove(ic, path, err);
}

static int faulty_rmdir(struct spoolfs_conn *conn, const char *dir,
			struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);

	return spoolfs_conn_rmdir(ic, dir, err);
}

static int faulty_set_mtime(struct spoolfs_conn *conn, const char *path,
			    int64_t mtime, struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_SET_MTIME, &d);
	delay(&d, NULL, NULL, 0);
	if (d.fail)
		return injected_error(&d, err);
	if (!(ic->backend->caps & SPOOLFS_CAP_MTIME) || !ic->backend->set_mtime)
		return 0;
	return ic->backend->set_mtime(ic, path, mtime, err);
}

static int faulty_get(struct spoolfs_conn *conn, const char *path, int fd,
		      spoolfs_progress_fn progress, void *arg,
		      struct spoolfs_error *err)
{
	struct spoolfs_conn *ic = inner(conn);
	struct decision d;

	decide(SPOOLFS_FAULTY_GET, &d);
	if (delay(&d, progress, arg, 0) < 0)
		return spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
					 "download of '%s' cancelled", path);
	if (d.fail)
		return injected_error(&d, err);
	return ic->backend->get(ic, path, fd, progress, arg, err);
}

/* the inner backend's rule, never a fault: no round trip to fail */
static int faulty_check_name(struct spoolfs_conn *conn, const char *path,
			     struct spoolfs_error *err)
{
	return spoolfs_conn_check_name(inner(conn), path, err);
}

/*
 * Batches, so that the spool's batch path (uploader.c, run_batch()) meets
 * the faults too: each file is its own put, set_mtime and stat, each
 * rename its own rename, counted and failed as those are.
 */
static void faulty_put_batch(struct spoolfs_conn *conn,
			     struct spoolfs_put_item *items, size_t n)
{
	pthread_mutex_lock(&fault_lock);
	if (n >= 2)
		batched += (unsigned)n;
	pthread_mutex_unlock(&fault_lock);
	for (size_t i = 0; i < n; i++) {
		struct spoolfs_put_item *it = &items[i];

		it->rc = spoolfs_conn_put_file(conn, it->path, it->fd, 0,
					       it->size, it->mtime,
					       it->progress, it->arg,
					       &it->rsize, &it->err);
	}
}

static void faulty_rename_batch(struct spoolfs_conn *conn,
				struct spoolfs_rename_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++)
		items[i].rc = spoolfs_conn_rename(conn, items[i].from,
						  items[i].to, &items[i].err);
}

const struct spoolfs_backend spoolfs_backend_faulty = {
	.scheme = "faulty",
	.default_port = 0,
	.caps = SPOOLFS_CAP_RESUME | SPOOLFS_CAP_MTIME,
	.connect = faulty_connect,
	.disconnect = faulty_disconnect,
	.mkdirs = faulty_mkdirs,
	.put = faulty_put,
	.put_batch = faulty_put_batch,
	.rename_batch = faulty_rename_batch,
	.stat = faulty_stat,
	.rename = faulty_rename,
	.remove = faulty_remove,
	.rmdir = faulty_rmdir,
	.set_mtime = faulty_set_mtime,
	.get = faulty_get,
	.check_name = faulty_check_name,
};
