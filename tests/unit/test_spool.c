/*
 * test_spool.c - the spool core without FUSE: namespace calls straight into
 * spool/spool.h, every destination routed through the failure-injecting
 * backend (backends/faulty.c) over a real file:// directory, so each retry,
 * fallback, cancel and recovery path runs for real.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../backends/faulty.h"
#include "../../spool/journal.h"
#include "../../spool/spool.h"
#include "../../spool/spool_internal.h"
#include "check.h"

static char tmproot[256];

struct fixture {
	struct spoolfs_config cfg;
	struct spoolfs_dest dests[2];
	char spool[PATH_MAX];
	char root[2][PATH_MAX];
	struct spool *sp;
};

static void make_dest(struct spoolfs_dest *d, const char *name,
		      const char *path)
{
	char url[PATH_MAX + 16];

	memset(d, 0, sizeof(*d));
	snprintf(url, sizeof(url), "file://%s", path);
	d->name = strdup(name);
	d->scheme = strdup("file");
	d->path = strdup(path);
	d->url_display = strdup(url);
	d->connections = 2;
	d->retries = 2;
	d->backoff_min_ms = 1;
	d->backoff_max_ms = 5;
	d->stall_timeout_ms = 10000;
	d->connect_timeout_ms = 10000;
	d->tls_verify = true;
}

static void fixture_init(struct fixture *f, const char *name, int ndests)
{
	static int seq;

	memset(f, 0, sizeof(*f));
	snprintf(f->spool, sizeof(f->spool), "%s/%s-%d/spool", tmproot, name,
		 ++seq);
	for (int i = 0; i < ndests; i++) {
		char *slash;

		snprintf(f->root[i], sizeof(f->root[i]), "%s/%s-%d/dest%d",
			 tmproot, name, seq, i);
		slash = strrchr(f->root[i], '/');
		*slash = '\0';
		mkdir(f->root[i], 0700);
		*slash = '/';
		mkdir(f->root[i], 0700);
		make_dest(&f->dests[i], i == 0 ? "a" : "b", f->root[i]);
	}
	f->cfg.spool_dir = f->spool;
	f->cfg.fsync = SPOOLFS_FSYNC_CLOSE;
	f->cfg.settle_ms = 0;
	f->cfg.dests = f->dests;
	f->cfg.ndests = (size_t)ndests;
	spoolfs_faulty_reset();
}

static int fixture_open(struct fixture *f, bool start)
{
	char err[512] = "";

	if (spool_open(&f->sp, &f->cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "spool_open: %s\n", err);
		return -1;
	}
	if (start && spool_start(f->sp, err, sizeof(err)) < 0) {
		fprintf(stderr, "spool_start: %s\n", err);
		return -1;
	}
	return 0;
}

static void fixture_close(struct fixture *f)
{
	spool_close(f->sp);
	f->sp = NULL;
	for (size_t i = 0; i < f->cfg.ndests; i++) {
		free(f->dests[i].name);
		free(f->dests[i].scheme);
		free(f->dests[i].path);
		free(f->dests[i].url_display);
		free(f->dests[i].fallback);
	}
}

/* Write a whole file through the spool as cp would: create, write, close. */
static int put_file(struct spool *sp, const char *path, const char *data,
		    size_t len)
{
	struct spool_handle *h;
	int rc;

	rc = spool_create(sp, path, 0644, getuid(), getgid(),
			  O_WRONLY | O_CREAT | O_TRUNC, &h);
	if (rc < 0)
		return rc;
	if (len && spool_write(h, data, len, 0) != (ssize_t)len)
		rc = -EIO;
	if (spool_flush(h) < 0)
		rc = -EIO;
	spool_release(h);
	return rc;
}

/* Write DATA over a file through the spool as `cat > path` would: open
 * with O_TRUNC, write, close. */
static int rewrite_file(struct spool *sp, const char *path, const char *data,
			size_t len)
{
	struct spool_handle *h;
	int rc = spool_open_file(sp, path, O_WRONLY | O_TRUNC, &h);

	if (rc < 0)
		return rc;
	if (spool_write(h, data, len, 0) != (ssize_t)len)
		rc = -EIO;
	if (spool_flush(h) < 0)
		rc = -EIO;
	spool_release(h);
	return rc;
}

static char *xattr(struct spool *sp, const char *path, const char *name)
{
	static char buf[1024];
	int n = spool_getxattr(sp, path, name, buf, sizeof(buf) - 1);

	if (n < 0)
		return NULL;
	buf[n] = '\0';
	return buf;
}

static bool state_is(struct spool *sp, const char *path, const char *state)
{
	const char *s = xattr(sp, path, "user.spoolfs.state");

	return s && strcmp(s, state) == 0;
}

/* Poll until PATH is in STATE; false after 10 s. */
static bool wait_state(struct spool *sp, const char *path, const char *state)
{
	for (int i = 0; i < 2000; i++) {
		struct timespec ts = { 0, 5 * 1000 * 1000 };

		if (state_is(sp, path, state))
			return true;
		nanosleep(&ts, NULL);
	}
	fprintf(stderr, "timeout waiting for %s to be %s (is %s)\n", path,
		state, xattr(sp, path, "user.spoolfs.state") ?: "absent");
	return false;
}

static bool file_has(const char *dir, const char *rel, const char *data,
		     size_t len)
{
	char path[PATH_MAX * 2], *buf;
	struct stat st;
	bool ok;
	FILE *fp;

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	if (stat(path, &st) < 0 || (size_t)st.st_size != len)
		return false;
	buf = malloc(len + 1);
	fp = fopen(path, "rb");
	ok = fp && buf && fread(buf, 1, len, fp) == len &&
	     memcmp(buf, data, len) == 0;
	if (fp)
		fclose(fp);
	free(buf);
	return ok;
}

static bool exists(const char *dir, const char *rel)
{
	char path[PATH_MAX * 2];

	snprintf(path, sizeof(path), "%s/%s", dir, rel);
	return access(path, F_OK) == 0;
}

/* No .spoolfs-*.part left anywhere under DIR. */
static bool no_temps(const char *dir)
{
	char cmd[PATH_MAX + 64];
	FILE *p;
	int c;

	snprintf(cmd, sizeof(cmd), "find '%s' -name '.spoolfs-*'", dir);
	p = popen(cmd, "r");
	if (!p)
		return false;
	c = fgetc(p);
	pclose(p);
	return c == EOF;
}

static void test_upload_basic(void)
{
	struct fixture f;
	static const char data[] = "hello, spool";

	fixture_init(&f, "basic", 1);
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/dir", 0755, 0, 0), 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/dir/x.txt", data, sizeof(data) - 1), 0);
	CHECK(wait_state(f.sp, "/a/dir/x.txt", "uploaded"));
	CHECK(file_has(f.root[0], "dir/x.txt", data, sizeof(data) - 1));
	CHECK(no_temps(f.root[0]));
	CHECK_EQ_STR(xattr(f.sp, "/a/dir/x.txt", "user.spoolfs.attempts"), "1");
	/* content freed after upload, read back through the backend */
	{
		struct spool_handle *h;
		char buf[64] = "";

		CHECK_EQ_INT(spool_open_file(f.sp, "/a/dir/x.txt", O_RDONLY,
					     &h), 0);
		CHECK_EQ_INT(spool_read(h, buf, sizeof(buf), 0),
			     sizeof(data) - 1);
		CHECK(memcmp(buf, data, sizeof(data) - 1) == 0);
		spool_release(h);
		CHECK(spoolfs_faulty_calls(SPOOLFS_FAULTY_GET) >= 1);
	}
	/* the root is read-only */
	CHECK_EQ_INT(spool_mkdir(f.sp, "/newdest", 0755, 0, 0), -EACCES);
	fixture_close(&f);
}

static void test_transient_then_ok(void)
{
	struct fixture f;
	static const char data[] = "retry me";

	fixture_init(&f, "transient", 1);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_PUT, 2, SPOOLFS_E_RESET,
			    "connection reset by peer");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/r.bin", data, sizeof(data) - 1), 0);
	CHECK(wait_state(f.sp, "/a/r.bin", "uploaded"));
	CHECK_EQ_STR(xattr(f.sp, "/a/r.bin", "user.spoolfs.attempts"), "3");
	CHECK(file_has(f.root[0], "r.bin", data, sizeof(data) - 1));
	CHECK(no_temps(f.root[0]));
	fixture_close(&f);
}

static void test_out_of_retries(void)
{
	struct fixture f;
	static const char data[] = "doomed";
	const char *err;

	fixture_init(&f, "retries", 1);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_PUT, 100, SPOOLFS_E_TIMEOUT,
			    "timed out");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/d", 0755, 0, 0), 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/d/x", data, sizeof(data) - 1), 0);
	CHECK(wait_state(f.sp, "/a/.failed/d/x", "failed"));
	struct stat st;
	CHECK_EQ_INT(spool_getattr(f.sp, "/a/d/x", &st), -ENOENT);
	CHECK_EQ_STR(xattr(f.sp, "/a/.failed/d/x", "user.spoolfs.attempts"),
		     "3");
	err = xattr(f.sp, "/a/.failed/d/x", "user.spoolfs.error");
	CHECK(err && strstr(err, "timed out") && strstr(err, "'d/x'"));
	CHECK(!exists(f.root[0], "d/x"));

	/* mv out of .failed retries with fresh attempts */
	spoolfs_faulty_reset();
	CHECK_EQ_INT(spool_rename(f.sp, "/a/.failed/d/x", "/a/d/x", 0), 0);
	CHECK(wait_state(f.sp, "/a/d/x", "uploaded"));
	CHECK_EQ_STR(xattr(f.sp, "/a/d/x", "user.spoolfs.attempts"), "1");
	CHECK(file_has(f.root[0], "d/x", data, sizeof(data) - 1));
	CHECK_EQ_INT(spool_getattr(f.sp, "/a/.failed/d", &st), -ENOENT);
	CHECK(no_temps(f.root[0]));
	fixture_close(&f);
}

static void test_permanent_fails_at_once(void)
{
	struct fixture f;

	fixture_init(&f, "perm", 1);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_CONNECT, 1, SPOOLFS_E_AUTH,
			    "530 login incorrect");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/p", "x", 1), 0);
	CHECK(wait_state(f.sp, "/a/.failed/p", "failed"));
	CHECK_EQ_STR(xattr(f.sp, "/a/.failed/p", "user.spoolfs.attempts"), "1");
	CHECK(strstr(xattr(f.sp, "/a/.failed/p", "user.spoolfs.error"),
		     "530 login incorrect") != NULL);
	/* rm in .failed discards it */
	CHECK_EQ_INT(spool_unlink(f.sp, "/a/.failed/p"), 0);
	fixture_close(&f);
}

static void test_fallback(void)
{
	struct fixture f;
	static const char data[] = "to the fallback";
	const char *remote;

	fixture_init(&f, "fallback", 2);
	/* a's root is missing: transient, so a's retries are spent first */
	rmdir(f.root[0]);
	f.dests[0].fallback = strdup("b");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/fb.txt", data, sizeof(data) - 1), 0);
	CHECK(wait_state(f.sp, "/a/fb.txt", "uploaded"));
	CHECK(file_has(f.root[1], "fb.txt", data, sizeof(data) - 1));
	remote = xattr(f.sp, "/a/fb.txt", "user.spoolfs.remote");
	CHECK(remote && strstr(remote, f.root[1]));
	fixture_close(&f);
}

static void test_resume(void)
{
	struct fixture f;
	size_t len = 3 << 20;
	char *data = malloc(len), path[PATH_MAX];

	for (size_t i = 0; i < len; i++)
		data[i] = (char)(i * 7 + i / 4096);
	fixture_init(&f, "resume", 1);
	f.dests[0].connections = 1;
	spoolfs_faulty_fail_put_after(1 << 20, SPOOLFS_E_RESET,
				      "connection lost");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/big", data, len), 0);
	CHECK(wait_state(f.sp, "/a/big", "uploaded"));
	CHECK_EQ_INT(spoolfs_faulty_last_put(path, sizeof(path)), 1 << 20);
	CHECK(file_has(f.root[0], "big", data, len));
	CHECK(no_temps(f.root[0]));
	free(data);
	fixture_close(&f);
}

/*
 * The upload dies with a partial temp on the server and the file goes to
 * .failed/; removing the temp fails while the server is "down" and is
 * retried until it works, not dropped after one try.
 */
static void test_leftover_temp_removed_after_failures(void)
{
	struct fixture f;
	size_t len = 2 << 20;
	char *data = malloc(len);

	memset(data, 'p', len);
	fixture_init(&f, "leftover", 1);
	f.dests[0].connections = 1;
	f.dests[0].retries = 0;
	spoolfs_faulty_fail_put_after(1 << 20, SPOOLFS_E_RESET,
				      "connection lost");
	spoolfs_faulty_fail(SPOOLFS_FAULTY_REMOVE, 6, SPOOLFS_E_CONNECT,
			    "connection refused");
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/part", data, len), 0);
	CHECK(wait_state(f.sp, "/a/.failed/part", "failed"));
	for (int i = 0; i < 500 && !no_temps(f.root[0]); i++)
		usleep(10000);
	CHECK(no_temps(f.root[0]));
	CHECK_EQ_INT((int)spoolfs_faulty_injected(SPOOLFS_FAULTY_REMOVE), 6);
	CHECK(spoolfs_faulty_calls(SPOOLFS_FAULTY_REMOVE) >= 7);
	CHECK(!exists(f.root[0], "part"));
	free(data);
	fixture_close(&f);
}

static void test_rename_and_rewrite_mid_upload(void)
{
	struct fixture f;

	fixture_init(&f, "midway", 1);
	spoolfs_faulty_delay(SPOOLFS_FAULTY_PUT, 300);
	CHECK(fixture_open(&f, true) == 0);
	/* rename while uploading: it lands under the new name */
	CHECK_EQ_INT(put_file(f.sp, "/a/tmpname", "renamed", 7), 0);
	CHECK(wait_state(f.sp, "/a/tmpname", "uploading"));
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/final", 0755, 0, 0), 0);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/tmpname", "/a/final/name", 0), 0);
	CHECK(wait_state(f.sp, "/a/final/name", "uploaded"));
	CHECK(file_has(f.root[0], "final/name", "renamed", 7));
	CHECK(!exists(f.root[0], "tmpname"));

	/* rewrite while uploading: the new content wins */
	CHECK_EQ_INT(put_file(f.sp, "/a/rw", "old content", 11), 0);
	CHECK(wait_state(f.sp, "/a/rw", "uploading"));
	CHECK_EQ_INT(rewrite_file(f.sp, "/a/rw", "new", 3), 0);
	CHECK(wait_state(f.sp, "/a/rw", "uploaded"));
	CHECK(file_has(f.root[0], "rw", "new", 3));

	/* unlink while uploading: nothing arrives, no temp is left */
	CHECK_EQ_INT(put_file(f.sp, "/a/gone", "bye", 3), 0);
	CHECK(wait_state(f.sp, "/a/gone", "uploading"));
	CHECK_EQ_INT(spool_unlink(f.sp, "/a/gone"), 0);
	for (int i = 0; i < 200 && !no_temps(f.root[0]); i++)
		usleep(10000);
	CHECK(!exists(f.root[0], "gone"));
	CHECK(no_temps(f.root[0]));

	/* rename of an uploaded file renames it on the destination */
	CHECK_EQ_INT(spool_rename(f.sp, "/a/rw", "/a/rw2", 0), 0);
	CHECK(wait_state(f.sp, "/a/rw2", "uploaded"));
	CHECK(file_has(f.root[0], "rw2", "new", 3));
	CHECK(!exists(f.root[0], "rw"));
	fixture_close(&f);
}

static size_t trash_entries(struct spool *sp)
{
	size_t n;

	pthread_mutex_lock(&sp->lock);
	n = sp->trash->nkids;
	pthread_mutex_unlock(&sp->lock);
	return n;
}

/* Poll until the trash area is empty; false after 10 s. */
static bool wait_trash_empty(struct spool *sp)
{
	for (int i = 0; i < 2000 && trash_entries(sp) > 0; i++)
		usleep(5000);
	return trash_entries(sp) == 0;
}

/* Regular files under DIR, as "a b c" (find's order sorted). */
static const char *files_under(const char *dir)
{
	static char out[1024];
	char cmd[PATH_MAX + 128];
	size_t n;
	FILE *p;

	snprintf(cmd, sizeof(cmd), "cd '%s' && find . -type f | cut -c3- | "
		 "sort | tr '\\n' ' '", dir);
	p = popen(cmd, "r");
	n = p ? fread(out, 1, sizeof(out) - 1, p) : 0;
	if (p)
		pclose(p);
	out[n] = '\0';
	return out;
}

/*
 * f uploaded; mv f g, and while the server renames f to g, mv g h and
 * rewrite h.  The copy the rename carries to g is stale: its removal
 * must follow it there (it used to stay at g for good, found by the kill
 * -9 torture test), whichever worker is free first.
 */
static void test_rewrite_while_the_copy_is_renamed(void)
{
	struct fixture f;
	unsigned renames;

	fixture_init(&f, "follow", 1);
	CHECK(fixture_open(&f, true) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/f", "old", 3), 0);
	CHECK(wait_state(f.sp, "/a/f", "uploaded"));
	/* the rename on the server takes 300 ms; a removal free to start
	 * at once would run after it */
	renames = spoolfs_faulty_calls(SPOOLFS_FAULTY_RENAME);
	spoolfs_faulty_delay(SPOOLFS_FAULTY_RENAME, 300);
	spoolfs_faulty_delay(SPOOLFS_FAULTY_REMOVE, 600);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/f", "/a/g", 0), 0);
	for (int i = 0; i < 2000 &&
	     spoolfs_faulty_calls(SPOOLFS_FAULTY_RENAME) == renames; i++)
		usleep(1000);
	CHECK(spoolfs_faulty_calls(SPOOLFS_FAULTY_RENAME) == renames + 1);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/g", "/a/h", 0), 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/h", "new!", 4), 0);
	CHECK(wait_state(f.sp, "/a/h", "uploaded"));
	CHECK(wait_trash_empty(f.sp));
	CHECK(file_has(f.root[0], "h", "new!", 4));
	CHECK_EQ_STR(files_under(f.root[0]), "h ");
	fixture_close(&f);
}

/*
 * What a crash leaves just after the server renamed an uploaded file:
 * "content" uploaded as a/FROM, renamed in the spool to a/[DIR/]NAME with
 * no worker running (the journal still has the copy at FROM), and moved
 * there on the server by hand.  The spool is left closed.
 */
static void renamed_on_server_only(struct fixture *f, const char *from,
				   const char *dir, const char *name)
{
	char src[PATH_MAX * 2], dst[PATH_MAX * 2], to[PATH_MAX];

	snprintf(to, sizeof(to), "%s%s%s", dir ? dir : "", dir ? "/" : "",
		 name);
	CHECK(fixture_open(f, true) == 0);
	snprintf(src, sizeof(src), "/a/%s", from);
	CHECK_EQ_INT(put_file(f->sp, src, "content", 7), 0);
	CHECK(wait_state(f->sp, src, "uploaded"));
	spool_close(f->sp);
	CHECK(fixture_open(f, false) == 0);	/* no workers: it stays queued */
	if (dir) {
		snprintf(dst, sizeof(dst), "/a/%s", dir);
		CHECK_EQ_INT(spool_mkdir(f->sp, dst, 0755, 0, 0), 0);
		snprintf(dst, sizeof(dst), "%s/%s", f->root[0], dir);
		CHECK(mkdir(dst, 0755) == 0);
	}
	snprintf(dst, sizeof(dst), "/a/%s", to);
	CHECK_EQ_INT(spool_rename(f->sp, src, dst, 0), 0);
	spool_close(f->sp);			/* the "crash" */
	f->sp = NULL;
	snprintf(src, sizeof(src), "%s/%s", f->root[0], from);
	snprintf(dst, sizeof(dst), "%s/%s", f->root[0], to);
	CHECK(rename(src, dst) == 0);
}

/*
 * The daemon stopped between a rename on the server and the journal's
 * record of it: the next mount asks the server for the same rename, whose
 * source is gone.  The copy is found at the new name (its size and mtime)
 * and the rename counts as done; before, it gave up ("the file stays at
 * 'f'") and a later rename or read of the file failed the same way.
 */
static void test_rename_done_just_before_a_crash(void)
{
	struct fixture f;
	const char *err;

	fixture_init(&f, "renamed", 1);
	renamed_on_server_only(&f, "f", "d", "g");
	CHECK(fixture_open(&f, true) == 0);
	CHECK(wait_state(f.sp, "/a/d/g", "uploaded"));
	err = xattr(f.sp, "/a/d/g", "user.spoolfs.error");
	CHECK(err && strcmp(err, "") == 0);
	/* the journal follows the copy: a further rename works */
	CHECK_EQ_INT(spool_rename(f.sp, "/a/d/g", "/a/h", 0), 0);
	for (int i = 0; i < 2000 && !exists(f.root[0], "h"); i++)
		usleep(5000);
	CHECK(file_has(f.root[0], "h", "content", 7));
	CHECK(!exists(f.root[0], "d/g"));
	err = xattr(f.sp, "/a/h", "user.spoolfs.error");
	CHECK(err && strcmp(err, "") == 0);
	fixture_close(&f);
}

static void test_crash_recovery(void)
{
	struct fixture f;
	struct spool_handle *h;
	const char *err;

	fixture_init(&f, "crash", 1);
	CHECK(fixture_open(&f, false) == 0);	/* no workers: stays queued */
	CHECK_EQ_INT(put_file(f.sp, "/a/closed", "complete", 8), 0);
	CHECK(state_is(f.sp, "/a/closed", "queued"));
	CHECK_EQ_INT(spool_create(f.sp, "/a/open", 0644, 0, 0,
				  O_WRONLY | O_CREAT, &h), 0);
	CHECK_EQ_INT(spool_write(h, "half", 4, 0), 4);
	/* "crash": the handle is never closed */
	spool_close(f.sp);
	f.sp = NULL;

	CHECK(fixture_open(&f, true) == 0);
	CHECK(wait_state(f.sp, "/a/closed", "uploaded"));
	CHECK(file_has(f.root[0], "closed", "complete", 8));
	CHECK(state_is(f.sp, "/a/.failed/open", "failed"));
	err = xattr(f.sp, "/a/.failed/open", "user.spoolfs.error");
	CHECK(err && strstr(err, "incomplete"));
	CHECK(!exists(f.root[0], "open"));
	free(h);		/* the leaked handle of the "crashed" daemon */
	fixture_close(&f);
}

/*
 * As above, and the file was renamed again (g to h) before the next mount
 * retried: the copy is at neither 'f' (the journal's) nor 'h'.  The
 * journal's note of the rename under way (mv_to, written before it) leads
 * to 'g'; before, the rename gave up and the copy stayed at 'g'.
 */
static void test_renamed_again_after_a_crash_mid_rename(void)
{
	struct fixture f;
	char db[PATH_MAX + 16];
	const char *err;
	sqlite3 *sq;

	fixture_init(&f, "chain", 1);
	renamed_on_server_only(&f, "f", NULL, "g");
	/* ...after the worker noted the rename to 'g' */
	snprintf(db, sizeof(db), "%s/journal.db", f.spool);
	CHECK(sqlite3_open(db, &sq) == SQLITE_OK);
	CHECK(sqlite3_exec(sq, "UPDATE nodes SET mv_to='g' WHERE name='g'",
			   NULL, NULL, NULL) == SQLITE_OK);
	CHECK(sqlite3_changes(sq) == 1);
	sqlite3_close(sq);
	/* the user renames it again before the next try */
	CHECK(fixture_open(&f, false) == 0);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/g", "/a/h", 0), 0);
	spool_close(f.sp);

	CHECK(fixture_open(&f, true) == 0);
	for (int i = 0; i < 2000 && !exists(f.root[0], "h"); i++)
		usleep(5000);
	CHECK(wait_state(f.sp, "/a/h", "uploaded"));
	CHECK(file_has(f.root[0], "h", "content", 7));
	CHECK_EQ_STR(files_under(f.root[0]), "h ");
	err = xattr(f.sp, "/a/h", "user.spoolfs.error");
	CHECK(err && strcmp(err, "") == 0);
	fixture_close(&f);
}

/*
 * The rename that commits an upload (temp to final name) is done on the
 * server, and the reply is lost (a reset).  "content" is put as a/f; the
 * rename gives up before the retry, BACKOFF_MS later.
 */
static void commit_reply_lost(struct fixture *f, unsigned backoff_ms)
{
	f->dests[0].backoff_min_ms = f->dests[0].backoff_max_ms = backoff_ms;
	CHECK(fixture_open(f, true) == 0);
	spoolfs_faulty_fail_rename_after(SPOOLFS_E_RESET, "connection reset");
	CHECK_EQ_INT(put_file(f->sp, "/a/f", "content", 7), 0);
	for (int i = 0; i < 2000 &&
	     !spoolfs_faulty_injected(SPOOLFS_FAULTY_RENAME); i++)
		usleep(1000);
	CHECK(spoolfs_faulty_injected(SPOOLFS_FAULTY_RENAME) == 1);
	CHECK(exists(f->root[0], "f"));
}

/*
 * ...and the file is renamed to g before the retry: the retry finds no
 * temp, and the journal's note of the commit (tmp_to) leads to 'f', from
 * where it moves the copy on.  Before, it uploaded the file again as 'g'
 * and the copy at 'f' stayed on the server.
 */
static void test_commit_reply_lost_then_renamed(void)
{
	struct fixture f;
	const char *err;

	fixture_init(&f, "committed", 1);
	commit_reply_lost(&f, 500);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/f", "/a/g", 0), 0);
	CHECK(wait_state(f.sp, "/a/g", "uploaded"));
	CHECK(file_has(f.root[0], "g", "content", 7));
	CHECK_EQ_STR(files_under(f.root[0]), "g ");
	CHECK_EQ_INT((int)spoolfs_faulty_calls(SPOOLFS_FAULTY_PUT), 1);
	err = xattr(f.sp, "/a/g", "user.spoolfs.error");
	CHECK(err && strcmp(err, "") == 0);
	fixture_close(&f);
}

/*
 * The same across a restart: the daemon stops before the retry (2 s
 * later), the file is renamed while no worker runs, and the next mount
 * finds the copy by the note in the journal.
 */
static void test_commit_reply_lost_then_crash_and_rename(void)
{
	struct fixture f;

	fixture_init(&f, "committed-crash", 1);
	commit_reply_lost(&f, 2000);
	spool_close(f.sp);
	CHECK(fixture_open(&f, false) == 0);
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/d", 0755, 0, 0), 0);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/f", "/a/d/g", 0), 0);
	spool_close(f.sp);
	spoolfs_faulty_reset();
	CHECK(fixture_open(&f, true) == 0);
	CHECK(wait_state(f.sp, "/a/d/g", "uploaded"));
	CHECK(file_has(f.root[0], "d/g", "content", 7));
	CHECK_EQ_STR(files_under(f.root[0]), "d/g ");
	CHECK_EQ_INT((int)spoolfs_faulty_calls(SPOOLFS_FAULTY_PUT), 0);
	fixture_close(&f);
}

/*
 * ...and the file is removed before the retry: with delete_remote the copy
 * the lost commit made goes too; without, it stays, as an uploaded file's
 * copy would.
 */
static void test_commit_reply_lost_then_removed(void)
{
	for (int del = 0; del < 2; del++) {
		struct fixture f;

		fixture_init(&f, del ? "committed-rm-del" : "committed-rm", 1);
		f.dests[0].delete_remote = del;
		commit_reply_lost(&f, 500);
		CHECK_EQ_INT(spool_unlink(f.sp, "/a/f"), 0);
		CHECK(wait_trash_empty(f.sp));
		CHECK_EQ_STR(files_under(f.root[0]), del ? "" : "f ");
		fixture_close(&f);
	}
}

/*
 * The first put of d1/f fails before anything reaches the server (so d1
 * is never made there), and d1 is renamed d2 before the retry.  The temp
 * recorded in d1 is gone, so the retry starts a new one in d2.  Before, it
 * sent the temp to d1 again, made d2 (the file's directory) when the
 * server said d1 was missing, failed the same way, and put the file in
 * .failed/ for good ("no such file or directory"; found by the torture
 * test).
 */
static void test_retry_after_the_directory_was_renamed(void)
{
	struct fixture f;
	const char *err;

	fixture_init(&f, "tmpdir", 1);
	f.dests[0].backoff_min_ms = f.dests[0].backoff_max_ms = 500;
	CHECK(fixture_open(&f, true) == 0);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_PUT, 1, SPOOLFS_E_RESET,
			    "connection reset");
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/d1", 0755, 0, 0), 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/d1/f", "content", 7), 0);
	for (int i = 0; i < 2000 &&
	     !spoolfs_faulty_injected(SPOOLFS_FAULTY_PUT); i++)
		usleep(1000);
	CHECK_EQ_INT(spool_rename(f.sp, "/a/d1", "/a/d2", 0), 0);
	CHECK(wait_state(f.sp, "/a/d2/f", "uploaded"));
	CHECK(file_has(f.root[0], "d2/f", "content", 7));
	CHECK_EQ_STR(files_under(f.root[0]), "d2/f ");
	CHECK(!exists(f.root[0], "d1"));
	err = xattr(f.sp, "/a/d2/f", "user.spoolfs.error");
	CHECK(err && strcmp(err, "") == 0);
	fixture_close(&f);
}

/*
 * Stopped between create()'s journal row and its data file: the file was
 * never created as far as the caller knew.  It is an empty incomplete file
 * in .failed/, also after a second mount (the daemon's preflight opens the
 * spool twice): before, the second pass called its spool copy lost.
 */
static bool data_file_path(const struct fixture *f, char *path, size_t len)
{
	char dir[PATH_MAX + 8];
	struct dirent *de;
	DIR *d;

	path[0] = '\0';
	snprintf(dir, sizeof(dir), "%s/data", f->spool);
	d = opendir(dir);
	while (d && (de = readdir(d)))
		if (de->d_name[0] >= '0' && de->d_name[0] <= '9')
			snprintf(path, len, "%s/%s", dir, de->d_name);
	if (d)
		closedir(d);
	return path[0] != '\0';
}

static void test_crash_between_row_and_data_file(void)
{
	struct fixture f;
	struct spool_handle *h;
	char path[PATH_MAX * 2];
	const char *err;

	fixture_init(&f, "nodata", 1);
	CHECK(fixture_open(&f, false) == 0);
	CHECK_EQ_INT(spool_create(f.sp, "/a/new", 0644, 0, 0,
				  O_WRONLY | O_CREAT, &h), 0);
	spool_close(f.sp);			/* the "crash" */
	f.sp = NULL;
	free(h);
	/* ...before data_create(): its data file, the only one, is not
	 * there (a new small file starts in memory: there never was one) */
	if (data_file_path(&f, path, sizeof(path)))
		CHECK(unlink(path) == 0);
	for (int pass = 0; pass < 2; pass++) {
		CHECK(fixture_open(&f, false) == 0);
		err = xattr(f.sp, "/a/.failed/new", "user.spoolfs.error");
		CHECK(err && strstr(err, "incomplete"));
		CHECK(data_file_path(&f, path, sizeof(path)));
		spool_close(f.sp);
		f.sp = NULL;
	}
	fixture_close(&f);
}

/*
 * A new file starts in memory (no data file) and moves to data/ when it
 * outgrows 32 KiB or is fsynced while written: every open handle then
 * reads and writes the data file, which holds everything written so far.
 */
static void test_memory_files_spill(void)
{
	static char big[40000], small[1000], got[40000];
	struct spool_handle *w, *r, *g;
	char path[PATH_MAX * 2], *slash;
	struct fixture f;

	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)(i * 7 + 1);
	memcpy(small, big, sizeof(small));
	fixture_init(&f, "memfiles", 1);
	f.cfg.settle_ms = 60000;	/* nothing leaves: look at the spool */
	CHECK(fixture_open(&f, true) == 0);

	/* outgrown: a second handle, opened while in memory, follows */
	CHECK_EQ_INT(spool_create(f.sp, "/a/grow", 0644, 0, 0,
				  O_RDWR | O_CREAT, &w), 0);
	CHECK(spool_write(w, small, sizeof(small), 0) == sizeof(small));
	CHECK(!data_file_path(&f, path, sizeof(path)));
	CHECK_EQ_INT(spool_open_file(f.sp, "/a/grow", O_RDWR, &r), 0);
	CHECK(spool_write(w, big + sizeof(small), sizeof(big) - sizeof(small),
			  sizeof(small)) == sizeof(big) - sizeof(small));
	CHECK(data_file_path(&f, path, sizeof(path)));
	CHECK(spool_read(r, got, sizeof(got), 0) == sizeof(big) &&
	      memcmp(got, big, sizeof(big)) == 0);
	CHECK(spool_write(r, "R", 1, 5) == 1);	/* into the data file */
	big[5] = 'R';
	CHECK(spool_flush(w) == 0);
	spool_release(r);
	spool_release(w);
	slash = strrchr(path, '/');
	*slash = '\0';
	CHECK(file_has(path, slash + 1, big, sizeof(big)));
	*slash = '/';
	CHECK(state_is(f.sp, "/a/grow", "queued"));
	CHECK(unlink(path) == 0);	/* the only data file so far */

	/* fsync()ed while written: on disk at once, then closed */
	CHECK_EQ_INT(spool_create(f.sp, "/a/synced", 0644, 0, 0,
				  O_WRONLY | O_CREAT, &g), 0);
	CHECK(spool_write(g, small, sizeof(small), 0) == sizeof(small));
	CHECK(!data_file_path(&f, path, sizeof(path)));
	CHECK_EQ_INT(spool_fsync(g, 1), 0);
	CHECK(data_file_path(&f, path, sizeof(path)));
	CHECK(spool_flush(g) == 0);
	spool_release(g);
	CHECK(state_is(f.sp, "/a/synced", "queued"));
	fixture_close(&f);
}

static void *flush_thread(void *arg)
{
	spool_flush(arg);
	return NULL;
}

/*
 * One handle closes while another's write is under way (two processes
 * writing one file): that close must not commit the file as it was before
 * the write.  Before, it did, and the write then landed in a file already
 * queued: its own close() committed nothing, the journal kept the
 * content of before (a small file's only durable copy), and after a crash
 * that was uploaded instead: the acknowledged write was lost.  The close
 * waits for the write in flight instead; the thread gets 300 ms to show
 * it does not (it never commits a stale state when it does wait).
 */
static void test_close_during_another_write(void)
{
	static const char data[] = "written by the second handle";
	struct spool_handle *a, *b;
	struct timespec until;
	struct fixture f;
	pthread_t t;
	void *ret;

	fixture_init(&f, "closemid", 1);
	CHECK(fixture_open(&f, false) == 0);	/* no workers: stays queued */
	CHECK_EQ_INT(spool_create(f.sp, "/a/f", 0644, 0, 0,
				  O_RDWR | O_CREAT | O_TRUNC, &a), 0);
	CHECK_EQ_INT(spool_open_file(f.sp, "/a/f", O_RDWR, &b), 0);
	CHECK_EQ_INT(spool_write_begin(b, sizeof(data), 0), 0);
	CHECK(pthread_create(&t, NULL, flush_thread, a) == 0);
	clock_gettime(CLOCK_REALTIME, &until);
	until.tv_nsec += 300 * 1000 * 1000;
	if (until.tv_nsec >= 1000 * 1000 * 1000) {
		until.tv_sec++;
		until.tv_nsec -= 1000 * 1000 * 1000;
	}
	if (pthread_timedjoin_np(t, &ret, &until) == 0)
		CHECK(!"a close did not wait for another handle's write");
	CHECK(pwrite(spool_handle_fd(b), data, sizeof(data), 0) ==
	      sizeof(data));
	spool_write_end(b, sizeof(data), sizeof(data), 0);
	pthread_join(t, &ret);
	CHECK_EQ_INT(spool_flush(b), 0);
	spool_release(b);
	spool_release(a);
	CHECK(state_is(f.sp, "/a/f", "queued"));
	spool_close(f.sp);			/* the "crash" */
	f.sp = NULL;

	CHECK(fixture_open(&f, true) == 0);
	CHECK(wait_state(f.sp, "/a/f", "uploaded"));
	CHECK(file_has(f.root[0], "f", data, sizeof(data)));
	fixture_close(&f);
}

static void test_quota(void)
{
	struct fixture f;
	static char buf[6000];
	struct spool_handle *h;
	struct statvfs sv;

	fixture_init(&f, "quota", 1);
	f.cfg.max_size = 10000;
	CHECK(fixture_open(&f, false) == 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/one", buf, sizeof(buf)), 0);
	CHECK_EQ_INT(spool_create(f.sp, "/a/two", 0644, 0, 0,
				  O_WRONLY | O_CREAT, &h), 0);
	CHECK_EQ_INT(spool_write(h, buf, sizeof(buf), 0), -ENOSPC);
	CHECK_EQ_INT(spool_write(h, buf, 4000, 0), 4000);
	/* a file whose write failed is never queued as if complete */
	CHECK_EQ_INT(spool_flush(h), -ENOSPC);
	spool_release(h);
	CHECK(state_is(f.sp, "/a/.failed/two", "failed"));
	CHECK(strstr(xattr(f.sp, "/a/.failed/two", "user.spoolfs.error"),
		     "incomplete") != NULL);
	CHECK_EQ_INT(spool_statfs(f.sp, &sv), 0);
	CHECK_EQ_INT(sv.f_bavail * sv.f_frsize, 0);
	CHECK(state_is(f.sp, "/a/one", "queued"));
	/* discarding the failed copy frees its room */
	CHECK_EQ_INT(spool_unlink(f.sp, "/a/.failed/two"), 0);
	CHECK_EQ_INT(put_file(f.sp, "/a/three", buf, 4000), 0);
	CHECK(state_is(f.sp, "/a/three", "queued"));
	fixture_close(&f);
}

static int64_t uploaded_order(const char *spool, const char *name)
{
	char db[PATH_MAX + 16];
	sqlite3 *h;
	sqlite3_stmt *st;
	int64_t id = -1;

	snprintf(db, sizeof(db), "%s/journal.db", spool);
	if (sqlite3_open_v2(db, &h, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(h, "SELECT id FROM events WHERE kind='uploaded'"
			       " AND path=?", -1, &st, NULL) == SQLITE_OK) {
		sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
		if (sqlite3_step(st) == SQLITE_ROW)
			id = sqlite3_column_int64(st, 0);
		sqlite3_finalize(st);
	}
	sqlite3_close(h);
	return id;
}

static void test_volume_order(void)
{
	static const char *const names[] = {
		"set.r01", "set.r00", "set.rar", "other.bin",
	};
	struct fixture f;

	fixture_init(&f, "volumes", 1);
	f.dests[0].connections = 1;
	CHECK(fixture_open(&f, false) == 0);
	for (size_t i = 0; i < 4; i++) {
		char path[64];

		snprintf(path, sizeof(path), "/a/%s", names[i]);
		CHECK_EQ_INT(put_file(f.sp, path, names[i], strlen(names[i])),
			     0);
	}
	spool_close(f.sp);
	CHECK(fixture_open(&f, true) == 0);
	CHECK(wait_state(f.sp, "/a/set.r01", "uploaded"));
	CHECK(wait_state(f.sp, "/a/other.bin", "uploaded"));
	CHECK(uploaded_order(f.spool, "set.rar") <
	      uploaded_order(f.spool, "set.r00"));
	CHECK(uploaded_order(f.spool, "set.r00") <
	      uploaded_order(f.spool, "set.r01"));
	fixture_close(&f);
}

static void test_backoff(void)
{
	unsigned int seed = 42;

	CHECK_EQ_INT(spool_backoff_ms(1000, 300000, 1, NULL), 1000);
	CHECK_EQ_INT(spool_backoff_ms(1000, 300000, 2, NULL), 2000);
	CHECK_EQ_INT(spool_backoff_ms(1000, 300000, 4, NULL), 8000);
	CHECK_EQ_INT(spool_backoff_ms(1000, 300000, 30, NULL), 300000);
	for (int a = 1; a < 12; a++) {
		uint64_t full = spool_backoff_ms(1000, 300000, a, NULL);
		uint64_t j = spool_backoff_ms(1000, 300000, a, &seed);

		CHECK(j <= full && j >= full * 3 / 4);
	}
}

/*
 * Forty small files written before the workers start are ready together:
 * they go in batches (uploader.c, run_batch()).  FAULT (if not __COUNT)
 * fails once, resetting the connection: that costs its file one attempt
 * and nothing to the files sent with it (those not done are handed back,
 * not counted).  Without MKDIR the directory is missing on the
 * destination: every put of the batch finds it missing, and each file
 * goes the single way, which makes it.  Every file arrives whole, no temp
 * is left.  Returns the attempts beyond the first, summed over the files.
 */
static unsigned batch_round(enum spoolfs_faulty_op fault, bool mkdir_first)
{
	struct fixture f;
	char path[64], data[64], rel[64], err[512];
	unsigned extra = 0;

	fixture_init(&f, "batches", 1);
	f.dests[0].connections = 1;
	if (fault != SPOOLFS_FAULTY__COUNT)
		spoolfs_faulty_fail(fault, 1, SPOOLFS_E_RESET,
				    "connection reset by peer");
	if (mkdir_first) {
		char dir[PATH_MAX + 2];

		snprintf(dir, sizeof(dir), "%s/d", f.root[0]);
		CHECK(mkdir(dir, 0755) == 0);
	}
	CHECK(fixture_open(&f, false) == 0);
	CHECK_EQ_INT(spool_mkdir(f.sp, "/a/d", 0755, 0, 0), 0);
	for (int i = 0; i < 40; i++) {
		snprintf(path, sizeof(path), "/a/d/x%02d", i);
		snprintf(data, sizeof(data), "small file number %d", i);
		CHECK_EQ_INT(put_file(f.sp, path, data, strlen(data)), 0);
	}
	CHECK(spool_start(f.sp, err, sizeof(err)) == 0);
	for (int i = 0; i < 40; i++) {
		const char *a;

		snprintf(path, sizeof(path), "/a/d/x%02d", i);
		snprintf(rel, sizeof(rel), "d/x%02d", i);
		snprintf(data, sizeof(data), "small file number %d", i);
		CHECK(wait_state(f.sp, path, "uploaded"));
		CHECK(file_has(f.root[0], rel, data, strlen(data)));
		a = xattr(f.sp, path, "user.spoolfs.attempts");
		extra += a ? (unsigned)atoi(a) - 1 : 100;
	}
	CHECK(no_temps(f.root[0]));
	CHECK(spoolfs_faulty_batched() >= 2);
	fixture_close(&f);
	return extra;
}

static void test_small_files_in_batches(void)
{
	CHECK_EQ_INT(batch_round(SPOOLFS_FAULTY__COUNT, true), 0);
	CHECK_EQ_INT(batch_round(SPOOLFS_FAULTY__COUNT, false), 0);
	CHECK_EQ_INT(batch_round(SPOOLFS_FAULTY_PUT, true), 1);
	CHECK_EQ_INT(batch_round(SPOOLFS_FAULTY_RENAME, true), 1);
}

/*
 * Files renamed, removed and rewritten while their batch is being put
 * (each put takes 100 ms): the renamed one lands under its new name, the
 * removed one not at all, the rewritten one with its new content, and the
 * rest as written; no temp is left.
 */
static void test_batch_changed_midway(void)
{
	struct fixture f;
	char path[64], rel[64], err[512];

	fixture_init(&f, "batchmid", 1);
	f.dests[0].connections = 1;
	spoolfs_faulty_delay(SPOOLFS_FAULTY_PUT, 100);
	CHECK(fixture_open(&f, false) == 0);
	for (int i = 0; i < 8; i++) {
		snprintf(path, sizeof(path), "/a/x%d", i);
		CHECK_EQ_INT(put_file(f.sp, path, "first", 5), 0);
	}
	CHECK(spool_start(f.sp, err, sizeof(err)) == 0);
	CHECK(wait_state(f.sp, "/a/x7", "uploading"));
	CHECK_EQ_INT(spool_rename(f.sp, "/a/x7", "/a/y7", 0), 0);
	CHECK_EQ_INT(spool_unlink(f.sp, "/a/x6"), 0);
	CHECK_EQ_INT(rewrite_file(f.sp, "/a/x5", "second", 6), 0);
	CHECK(wait_state(f.sp, "/a/y7", "uploaded"));
	CHECK(file_has(f.root[0], "y7", "first", 5));
	CHECK(wait_state(f.sp, "/a/x5", "uploaded"));
	CHECK(file_has(f.root[0], "x5", "second", 6));
	for (int i = 0; i < 5; i++) {
		snprintf(path, sizeof(path), "/a/x%d", i);
		snprintf(rel, sizeof(rel), "x%d", i);
		CHECK(wait_state(f.sp, path, "uploaded"));
		CHECK(file_has(f.root[0], rel, "first", 5));
	}
	for (int i = 0; i < 200 && !no_temps(f.root[0]); i++)
		usleep(10000);
	CHECK(no_temps(f.root[0]));
	CHECK(!exists(f.root[0], "x6"));
	CHECK(!exists(f.root[0], "x7"));
	CHECK(spoolfs_faulty_batched() >= 2);
	fixture_close(&f);
}

/* What the mount shows at PATH: its content into BUF (NUL-terminated), or
 * NULL when it is not there. */
static const char *mount_content(struct spool *sp, const char *path,
				 char *buf, size_t len)
{
	struct spool_handle *h;
	ssize_t n;

	if (spool_open_file(sp, path, O_RDONLY, &h) < 0)
		return NULL;
	n = spool_read(h, buf, len - 1, 0);
	spool_release(h);
	if (n < 0)
		return NULL;
	buf[n] = '\0';
	return buf;
}

/*
 * A namespace change killed at each of the journal's commits in turn: SETUP
 * leaves uploaded files in F's spool (closed); for k = 1, 2, ... a child
 * process opens a copy of it (no workers), dies at its k-th commit while
 * ACT runs, and the parent mounts the copy with workers and hands it to
 * CHECK, which waits until the uploads settle and says what the server
 * must hold.  Ends when ACT returns before its k-th commit.
 */
struct kill_case {
	const char *name;
	void (*setup)(struct fixture *f);
	int (*act)(struct spool *sp);
	void (*check)(struct fixture *f, struct spool *sp, int k);
};

static void kill_at_every_commit(const struct kill_case *kc)
{
	struct fixture f;
	char copy[PATH_MAX + 16], cmd[3 * PATH_MAX + 128], err[512];
	int k, status = 0;

	fixture_init(&f, kc->name, 1);
	CHECK(fixture_open(&f, true) == 0);
	kc->setup(&f);
	spool_close(f.sp);
	f.sp = NULL;
	spoolfs_faulty_reset();		/* the setup's failures end with it */
	for (k = 1; k < 100; k++) {
		struct spool *sp;
		pid_t pid;

		snprintf(copy, sizeof(copy), "%s.%d", f.spool, k);
		snprintf(cmd, sizeof(cmd), "rm -rf '%s' && cp -a '%s' '%s'",
			 copy, f.spool, copy);
		CHECK(system(cmd) == 0);
		f.cfg.spool_dir = copy;
		fflush(NULL);
		pid = fork();
		if (pid == 0) {
			if (spool_open(&sp, &f.cfg, err, sizeof(err)) < 0)
				_exit(2);
			spool_journal_die_at(sp->j, k);
			if (kc->act(sp) < 0)
				_exit(2);
			_exit(3);	/* all done: no commit left to die at */
		}
		CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) != 2);
		/* the server as the setup left it: each round starts there */
		snprintf(cmd, sizeof(cmd), "rm -rf '%s.k' && cp -a '%s' '%s.k'",
			 f.root[0], f.root[0], f.root[0]);
		CHECK(system(cmd) == 0);
		f.sp = NULL;
		CHECK(fixture_open(&f, true) == 0);
		kc->check(&f, f.sp, k);
		spool_close(f.sp);
		f.sp = NULL;
		snprintf(cmd, sizeof(cmd), "rm -rf '%s' && mv '%s.k' '%s'",
			 f.root[0], f.root[0], f.root[0]);
		CHECK(system(cmd) == 0);
		if (WEXITSTATUS(status) == 3)
			break;
	}
	CHECK(k > 1 && k < 100);
	f.cfg.spool_dir = f.spool;
	fixture_close(&f);
}

/* REL is not under DIR, or goes within 10 s (a removal from the trash
 * comes after the state the test waited for). */
static bool gone_soon(const char *dir, const char *rel)
{
	for (int i = 0; i < 1000 && exists(dir, rel); i++)
		usleep(10000);
	return !exists(dir, rel);
}

/* Wait until PATH is uploaded; its server copy then holds what the mount
 * shows, and only there. */
static void check_arrived(struct fixture *f, struct spool *sp,
			  const char *path, const char *want, int k)
{
	char buf[64];
	const char *got = mount_content(sp, path, buf, sizeof(buf));

	CHECK(got && strcmp(got, want) == 0);
	CHECK(wait_state(sp, path, "uploaded"));
	CHECK(file_has(f->root[0], path + 3, want, strlen(want)));
	CHECK(no_temps(f->root[0]));
	if (!got || strcmp(got, want) != 0 ||
	    !file_has(f->root[0], path + 3, want, strlen(want)))
		fprintf(stderr, "killed at commit %d: %s is '%s'\n", k, path,
			got ? got : "(gone)");
}

static void rename_setup(struct fixture *f)
{
	CHECK_EQ_INT(spool_mkdir(f->sp, "/a/d", 0755, 0, 0), 0);
	CHECK_EQ_INT(spool_mkdir(f->sp, "/a/e", 0755, 0, 0), 0);
	CHECK_EQ_INT(put_file(f->sp, "/a/d/f", "content", 7), 0);
	CHECK(wait_state(f->sp, "/a/d/f", "uploaded"));
}

static int rename_act(struct spool *sp)
{
	return spool_rename(sp, "/a/d/f", "/a/e/g", 0);
}

/* in the mount at one of the two names, and on the server there only */
static void rename_check(struct fixture *f, struct spool *sp, int k)
{
	char buf[64];
	bool moved = !mount_content(sp, "/a/d/f", buf, sizeof(buf));

	check_arrived(f, sp, moved ? "/a/e/g" : "/a/d/f", "content", k);
	/* a server rename is done once the state says uploaded */
	CHECK(!exists(f->root[0], moved ? "d/f" : "e/g"));
}

static void overwrite_setup(struct fixture *f)
{
	CHECK_EQ_INT(put_file(f->sp, "/a/x", "x content", 9), 0);
	CHECK_EQ_INT(put_file(f->sp, "/a/y", "y", 1), 0);
	CHECK(wait_state(f->sp, "/a/x", "uploaded"));
	CHECK(wait_state(f->sp, "/a/y", "uploaded"));
}

static int overwrite_act(struct spool *sp)
{
	return spool_rename(sp, "/a/x", "/a/y", 0);
}

/* x renamed over y, or both as they were: y is never lost */
static void overwrite_check(struct fixture *f, struct spool *sp, int k)
{
	char buf[64];

	if (mount_content(sp, "/a/x", buf, sizeof(buf))) {
		check_arrived(f, sp, "/a/x", "x content", k);
		check_arrived(f, sp, "/a/y", "y", k);
	} else {
		check_arrived(f, sp, "/a/y", "x content", k);
		CHECK(!exists(f->root[0], "x"));
	}
}

static void dir_rewrite_setup(struct fixture *f)
{
	CHECK_EQ_INT(spool_mkdir(f->sp, "/a/d1", 0755, 0, 0), 0);
	CHECK_EQ_INT(put_file(f->sp, "/a/d1/f", "old content", 11), 0);
	CHECK(wait_state(f->sp, "/a/d1/f", "uploaded"));
}

static int dir_rewrite_act(struct spool *sp)
{
	if (spool_rename(sp, "/a/d1", "/a/d2", 0) < 0)
		return -1;
	return rewrite_file(sp, "/a/d2/f", "new!", 4);
}

/* the directory at either name; the file old, new, or in .failed/ as
 * incomplete when the kill came while it was rewritten */
static void dir_rewrite_check(struct fixture *f, struct spool *sp, int k)
{
	char buf[64];
	const char *got;
	bool moved = !mount_content(sp, "/a/d1/f", buf, sizeof(buf));
	const char *path = moved ? "/a/d2/f" : "/a/d1/f";

	got = mount_content(sp, path, buf, sizeof(buf));
	if (got) {
		check_arrived(f, sp, path, strcmp(got, "new!") == 0 ?
			      "new!" : "old content", k);
	} else {
		const char *ferr = xattr(sp, "/a/.failed/d2/f",
					 "user.spoolfs.error");

		CHECK(moved && ferr && strstr(ferr, "incomplete"));
		if (!ferr)
			fprintf(stderr, "killed at commit %d: f is gone\n", k);
	}
	/* the old content's copy goes with the trash, after the state */
	CHECK(gone_soon(f->root[0], moved ? "d1/f" : "d2/f"));
}

/*
 * A file uploaded, then renamed while its server is unreachable (the
 * rename on the server waits), then rewritten (open with O_TRUNC, write,
 * close).  Killed at any commit, the next mount has the file in the mount
 * (its old content or the new one, arriving) or in .failed/ as incomplete,
 * and never as "spool copy lost": a row must not say "queued" over the
 * empty copy the rewrite starts with, nor the old copy's removal be
 * recorded before the row says "writing" (content_changed_locked()).
 */
static void renamed_rewrite_setup(struct fixture *f)
{
	dir_rewrite_setup(f);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_RENAME, -1, SPOOLFS_E_RESET,
			    "connection reset by peer");
	CHECK_EQ_INT(spool_rename(f->sp, "/a/d1/f", "/a/g", 0), 0);
}

static int renamed_rewrite_act(struct spool *sp)
{
	return rewrite_file(sp, "/a/g", "new!", 4);
}

static void renamed_rewrite_check(struct fixture *f, struct spool *sp, int k)
{
	char buf[64];
	const char *got = mount_content(sp, "/a/g", buf, sizeof(buf));

	if (got) {
		check_arrived(f, sp, "/a/g", strcmp(got, "new!") == 0 ?
			      "new!" : "old content", k);
	} else {
		const char *ferr = xattr(sp, "/a/.failed/g",
					 "user.spoolfs.error");

		CHECK(ferr && strstr(ferr, "incomplete"));
		if (!ferr || !strstr(ferr, "incomplete"))
			fprintf(stderr, "killed at commit %d: %s\n", k,
				ferr ? ferr : "g is gone");
	}
	CHECK(gone_soon(f->root[0], "d1/f"));
}

/*
 * Renames killed at every commit: a file into another directory, a file
 * over another one, a directory and then a rewrite of a file in it, a
 * rewrite of a file whose rename on the server waits.  The
 * next mount always has each file at one name, with content that close()
 * acknowledged, and brings the server to the same (no copy left at the
 * other name, none lost).
 */
static void test_renames_killed_at_every_commit(void)
{
	static const struct kill_case cases[] = {
		{ "rnkill", rename_setup, rename_act, rename_check },
		{ "owkill", overwrite_setup, overwrite_act, overwrite_check },
		{ "drkill", dir_rewrite_setup, dir_rewrite_act,
		  dir_rewrite_check },
		{ "rwkill", renamed_rewrite_setup, renamed_rewrite_act,
		  renamed_rewrite_check },
	};

	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
		kill_at_every_commit(&cases[i]);
}

int main(void)
{
	snprintf(tmproot, sizeof(tmproot), "/tmp/spoolfs-test-spool-XXXXXX");
	if (!mkdtemp(tmproot)) {
		perror("mkdtemp");
		return 1;
	}
	spoolfs_backend_override = &spoolfs_backend_faulty;
	test_backoff();
	test_upload_basic();
	test_transient_then_ok();
	test_out_of_retries();
	test_permanent_fails_at_once();
	test_fallback();
	test_resume();
	test_leftover_temp_removed_after_failures();
	test_rename_and_rewrite_mid_upload();
	test_crash_recovery();
	test_rewrite_while_the_copy_is_renamed();
	test_rename_done_just_before_a_crash();
	test_renamed_again_after_a_crash_mid_rename();
	test_commit_reply_lost_then_renamed();
	test_commit_reply_lost_then_crash_and_rename();
	test_commit_reply_lost_then_removed();
	test_retry_after_the_directory_was_renamed();
	test_crash_between_row_and_data_file();
	test_memory_files_spill();
	test_close_during_another_write();
	test_quota();
	test_volume_order();
	test_small_files_in_batches();
	test_renames_killed_at_every_commit();
	test_batch_changed_midway();
	{
		char cmd[PATH_MAX + 16];

		snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmproot);
		if (system(cmd) != 0)
			fprintf(stderr, "cannot remove %s\n", tmproot);
	}
	return check_done();
}
