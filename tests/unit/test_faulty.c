/*
 * test_faulty.c - the failure-injecting backend itself: pass-through,
 * injected failures (counted, exactly N, also under threads), partial puts
 * that leave a real partial file, delays that stay cancellable, reset.
 * The inner backend is file:// in a fresh temp directory.
 */
#include "../../backends/faulty.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "check.h"

static struct spoolfs_dest dest;
static char root[PATH_MAX];
static struct spoolfs_error err;

static int local_fd(const void *data, size_t n)
{
	int fd = open("/tmp", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

	if (fd < 0 || (n && write(fd, data, n) != (ssize_t)n)) {
		perror("test_faulty: local temp file");
		exit(2);
	}
	return fd;
}

static unsigned char *pattern(size_t n)
{
	unsigned char *p = malloc(n);

	if (!p)
		exit(2);
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(i * 131 + (i >> 8) * 7 + (i >> 16));
	return p;
}

static int put(struct spoolfs_conn *c, const char *path, const void *data,
	       uint64_t offset, size_t n)
{
	int fd = local_fd(data, n);
	int rc = spoolfs_conn_put(c, path, fd, offset, n, NULL, NULL, &err);

	close(fd);
	return rc;
}

/* The file under the root holds exactly DATA[0..n). */
static bool holds(const char *rel, const void *data, size_t n)
{
	char p[PATH_MAX * 2];
	unsigned char *buf = malloc(n + 1);
	ssize_t got;
	bool ok;
	int fd;

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	fd = open(p, O_RDONLY);
	if (fd < 0 || !buf) {
		free(buf);
		if (fd >= 0)
			close(fd);
		return false;
	}
	got = read(fd, buf, n + 1);
	ok = got == (ssize_t)n && memcmp(buf, data, n) == 0;
	close(fd);
	free(buf);
	return ok;
}

static int rmdir_below(const char *rel)
{
	char p[PATH_MAX * 2];

	snprintf(p, sizeof(p), "%s/%s", root, rel);
	return rmdir(p);
}

static double now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void test_pass_through(void)
{
	struct spoolfs_conn *c;
	struct spoolfs_rstat st;

	spoolfs_faulty_reset();
	c = spoolfs_conn_open(&dest, &err);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK(c->backend == &spoolfs_backend_faulty);
	CHECK(spoolfs_conn_can(c, SPOOLFS_CAP_RESUME | SPOOLFS_CAP_MTIME));
	CHECK_EQ_INT(spoolfs_conn_mkdirs(c, "d/e", &err), 0);
	CHECK_EQ_INT(put(c, "d/e/f.part", "hello", 0, 5), 0);
	CHECK_EQ_INT(spoolfs_conn_rename(c, "d/e/f.part", "d/e/f", &err), 0);
	CHECK_EQ_INT(spoolfs_conn_set_mtime(c, "d/e/f", 1234567890, &err), 0);
	CHECK_EQ_INT(spoolfs_conn_stat(c, "d/e/f", &st, &err), 0);
	CHECK_EQ_INT(st.size, 5);
	CHECK_EQ_INT(st.mtime, 1234567890);
	CHECK(holds("d/e/f", "hello", 5));
	CHECK_EQ_INT(spoolfs_conn_remove(c, "d/e/f", &err), 0);
	/* The inner backend's own errors come through unchanged. */
	CHECK_EQ_INT(spoolfs_conn_stat(c, "d/e/f", &st, &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_NOTFOUND);
	CHECK(strstr(err.msg, "d/e/f") != NULL);

	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_CONNECT), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_MKDIRS), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_PUT), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_RENAME), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_SET_MTIME), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_STAT), 2);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_REMOVE), 1);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_GET), 0);
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_STAT), 0);
	spoolfs_conn_close(c);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_DISCONNECT), 1);
	CHECK_EQ_INT(rmdir_below("d/e"), 0);
	CHECK_EQ_INT(rmdir_below("d"), 0);
}

static void test_fail_next(void)
{
	struct spoolfs_conn *c;
	struct spoolfs_rstat st;

	spoolfs_faulty_reset();
	spoolfs_faulty_fail(SPOOLFS_FAULTY_CONNECT, 1, SPOOLFS_E_AUTH,
			    "login refused");
	c = spoolfs_conn_open(&dest, &err);
	CHECK(c == NULL);
	CHECK_EQ_INT(err.code, SPOOLFS_E_AUTH);
	CHECK_EQ_STR(err.msg, "login refused");
	c = spoolfs_conn_open(&dest, &err);
	CHECK(c != NULL);
	if (!c)
		return;
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_CONNECT), 2);
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_CONNECT), 1);

	spoolfs_faulty_fail(SPOOLFS_FAULTY_PUT, 2, SPOOLFS_E_RESET,
			    "connection reset by peer");
	CHECK_EQ_INT(put(c, "x", "abc", 0, 3), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_RESET);
	CHECK_EQ_STR(err.msg, "connection reset by peer");
	CHECK_EQ_INT(put(c, "x", "abc", 0, 3), -1);
	CHECK_EQ_INT(put(c, "x", "abc", 0, 3), 0);
	CHECK(holds("x", "abc", 3));
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_PUT), 3);
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_PUT), 2);

	/* The default message; every op can be made to fail. */
	for (int op = SPOOLFS_FAULTY_MKDIRS; op < SPOOLFS_FAULTY__COUNT; op++) {
		char want[64];
		int rc = 0, fd = local_fd(NULL, 0);

		spoolfs_faulty_fail((enum spoolfs_faulty_op)op, 1,
				    SPOOLFS_E_BUSY, NULL);
		switch (op) {
		case SPOOLFS_FAULTY_MKDIRS:
			rc = spoolfs_conn_mkdirs(c, "m", &err);
			break;
		case SPOOLFS_FAULTY_PUT:
			rc = put(c, "x", "abc", 0, 3);
			break;
		case SPOOLFS_FAULTY_STAT:
			rc = spoolfs_conn_stat(c, "x", &st, &err);
			break;
		case SPOOLFS_FAULTY_RENAME:
			rc = spoolfs_conn_rename(c, "x", "y", &err);
			break;
		case SPOOLFS_FAULTY_REMOVE:
			rc = spoolfs_conn_remove(c, "x", &err);
			break;
		case SPOOLFS_FAULTY_SET_MTIME:
			rc = spoolfs_conn_set_mtime(c, "x", 1, &err);
			break;
		case SPOOLFS_FAULTY_GET:
			rc = spoolfs_conn_get(c, "x", fd, NULL, NULL, &err);
			break;
		}
		close(fd);
		snprintf(want, sizeof(want), "injected %s failure",
			 spoolfs_faulty_op_name((enum spoolfs_faulty_op)op));
		CHECK_EQ_INT(rc, -1);
		CHECK_EQ_INT(err.code, SPOOLFS_E_BUSY);
		CHECK_EQ_STR(err.msg, want);
		CHECK_EQ_INT(spoolfs_faulty_injected((enum spoolfs_faulty_op)op),
			     op == SPOOLFS_FAULTY_PUT ? 3 : 1);
	}
	/* Nothing reached the real backend: x is still there, unchanged. */
	CHECK(holds("x", "abc", 3));

	/* n < 0: until disarmed. */
	spoolfs_faulty_fail(SPOOLFS_FAULTY_STAT, -1, SPOOLFS_E_TIMEOUT, NULL);
	for (int i = 0; i < 5; i++)
		CHECK_EQ_INT(spoolfs_conn_stat(c, "x", &st, &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_TIMEOUT);
	spoolfs_faulty_fail(SPOOLFS_FAULTY_STAT, 0, SPOOLFS_OK, NULL);
	CHECK_EQ_INT(spoolfs_conn_stat(c, "x", &st, &err), 0);
	CHECK_EQ_INT(st.size, 3);

	CHECK_EQ_INT(spoolfs_conn_remove(c, "x", &err), 0);
	spoolfs_conn_close(c);
}

static void test_partial_put(void)
{
	size_t n = 3 * 1024 * 1024 + 11;
	unsigned char *data = pattern(n);
	struct spoolfs_conn *c;
	struct spoolfs_rstat st;
	char path[64];
	int fd;

	spoolfs_faulty_reset();
	CHECK_EQ_INT(spoolfs_faulty_last_put(NULL, 0), -1);
	c = spoolfs_conn_open(&dest, &err);
	CHECK(c != NULL);
	if (!c)
		goto out;
	fd = local_fd(data, n);

	/* Cut after 1000 bytes: a real partial file is left. */
	spoolfs_faulty_fail_put_after(1000, SPOOLFS_E_RESET, "link dropped");
	CHECK_EQ_INT(spoolfs_conn_put(c, "big.part", fd, 0, n, NULL, NULL,
				      &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_RESET);
	CHECK_EQ_STR(err.msg, "link dropped");
	CHECK_EQ_INT(spoolfs_conn_stat(c, "big.part", &st, &err), 0);
	CHECK_EQ_INT(st.size, 1000);
	CHECK(holds("big.part", data, 1000));
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_PUT), 1);

	/* One shot: resuming from the remote size works, and is visible. */
	CHECK_EQ_INT(spoolfs_conn_put(c, "big.part", fd, st.size, n, NULL,
				      NULL, &err), 0);
	CHECK_EQ_INT(spoolfs_faulty_last_put(path, sizeof(path)), 1000);
	CHECK_EQ_STR(path, "big.part");
	CHECK(holds("big.part", data, n));

	/* Counted from the put's own offset; a second cut during a resume. */
	spoolfs_faulty_fail_put_after(5000, SPOOLFS_E_STALL, NULL);
	CHECK_EQ_INT(spoolfs_conn_put(c, "big.part", fd, 2000, n, NULL, NULL,
				      &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_STALL);
	CHECK_EQ_STR(err.msg, "injected put failure");
	CHECK_EQ_INT(spoolfs_conn_stat(c, "big.part", &st, &err), 0);
	CHECK_EQ_INT(st.size, 7000);
	CHECK(holds("big.part", data, 7000));
	CHECK_EQ_INT(spoolfs_faulty_last_put(NULL, 0), 2000);

	/* Everything written, the reply lost. */
	spoolfs_faulty_fail_put_after(UINT64_MAX, SPOOLFS_E_RESET, NULL);
	CHECK_EQ_INT(spoolfs_conn_put(c, "big.part", fd, 0, n, NULL, NULL,
				      &err), -1);
	CHECK(holds("big.part", data, n));

	/* A put that fails on its own before the cut does not use it up. */
	spoolfs_faulty_reset();
	spoolfs_faulty_fail_put_after(10, SPOOLFS_E_RESET, NULL);
	CHECK_EQ_INT(spoolfs_conn_put(c, "newdir/f", fd, 0, n, NULL, NULL,
				      &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_NOTFOUND);
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_PUT), 0);
	CHECK_EQ_INT(spoolfs_conn_mkdirs(c, "newdir", &err), 0);
	CHECK_EQ_INT(spoolfs_conn_put(c, "newdir/f", fd, 0, n, NULL, NULL,
				      &err), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_RESET);
	CHECK(holds("newdir/f", data, 10));
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_PUT), 1);
	CHECK_EQ_INT(spoolfs_conn_remove(c, "newdir/f", &err), 0);
	CHECK_EQ_INT(rmdir_below("newdir"), 0);

	CHECK_EQ_INT(spoolfs_conn_remove(c, "big.part", &err), 0);
	close(fd);
	spoolfs_conn_close(c);
out:
	free(data);
}

static int cancel_cb(void *arg, uint64_t done)
{
	unsigned *calls = arg;

	(*calls)++;
	return 1;
}

static void test_delay(void)
{
	struct spoolfs_conn *c;
	struct spoolfs_rstat st;
	unsigned calls = 0;
	double t;
	int fd;

	spoolfs_faulty_reset();
	c = spoolfs_conn_open(&dest, &err);
	CHECK(c != NULL);
	if (!c)
		return;
	spoolfs_faulty_delay(SPOOLFS_FAULTY_STAT, 60);
	t = now_ms();
	CHECK_EQ_INT(spoolfs_conn_stat(c, "", &st, &err), 0);
	CHECK(now_ms() - t >= 60);
	CHECK(st.is_dir);

	/* A long delay on put is still cancelled within a step. */
	spoolfs_faulty_delay(SPOOLFS_FAULTY_PUT, 10000);
	fd = local_fd("abc", 3);
	t = now_ms();
	CHECK_EQ_INT(spoolfs_conn_put(c, "slow", fd, 0, 3, cancel_cb, &calls,
				      &err), -1);
	CHECK(now_ms() - t < 1000);
	CHECK_EQ_INT(err.code, SPOOLFS_E_CANCELLED);
	CHECK_EQ_INT(calls, 1);
	close(fd);
	spoolfs_faulty_reset();		/* drops the delays */
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_PUT), 0);
	CHECK_EQ_INT(spoolfs_faulty_last_put(NULL, 0), -1);
	t = now_ms();
	CHECK_EQ_INT(spoolfs_conn_stat(c, "", &st, &err), 0);
	CHECK(now_ms() - t < 50);
	spoolfs_conn_close(c);
}

#define THREADS		4
#define PER_THREAD	50

static void *stat_worker(void *arg)
{
	struct spoolfs_error e;
	struct spoolfs_rstat st;
	struct spoolfs_conn *c = spoolfs_conn_open(&dest, &e);
	unsigned *failed = arg;

	if (!c)
		return NULL;
	for (int i = 0; i < PER_THREAD; i++)
		if (spoolfs_conn_stat(c, "", &st, &e) < 0 &&
		    e.code == SPOOLFS_E_BUSY)
			(*failed)++;
	spoolfs_conn_close(c);
	return NULL;
}

static void test_threads(void)
{
	pthread_t th[THREADS];
	unsigned failed[THREADS] = { 0 }, total = 0;

	spoolfs_faulty_reset();
	spoolfs_faulty_fail(SPOOLFS_FAULTY_STAT, 77, SPOOLFS_E_BUSY, NULL);
	for (int i = 0; i < THREADS; i++)
		pthread_create(&th[i], NULL, stat_worker, &failed[i]);
	for (int i = 0; i < THREADS; i++) {
		pthread_join(th[i], NULL);
		total += failed[i];
	}
	CHECK_EQ_INT(total, 77);
	CHECK_EQ_INT(spoolfs_faulty_injected(SPOOLFS_FAULTY_STAT), 77);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_STAT),
		     THREADS * PER_THREAD);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_CONNECT), THREADS);
	CHECK_EQ_INT(spoolfs_faulty_calls(SPOOLFS_FAULTY_DISCONNECT), THREADS);
}

static void test_unknown_scheme(void)
{
	struct spoolfs_dest d = dest;
	struct spoolfs_conn *c;

	spoolfs_faulty_reset();
	d.scheme = "gopher";
	c = spoolfs_conn_open(&d, &err);
	CHECK(c == NULL);
	CHECK_EQ_INT(err.code, SPOOLFS_E_UNSUPPORTED);
	CHECK_EQ_STR(spoolfs_faulty_op_name(SPOOLFS_FAULTY_SET_MTIME),
		     "set_mtime");
	CHECK_EQ_STR(spoolfs_faulty_op_name(SPOOLFS_FAULTY__COUNT), "unknown");
}

int main(void)
{
	char url[PATH_MAX + 8];

	snprintf(root, sizeof(root), "/tmp/spoolfs-test-faulty-XXXXXX");
	if (!mkdtemp(root)) {
		perror("test_faulty: mkdtemp");
		return 2;
	}
	snprintf(url, sizeof(url), "file://%s", root);
	dest = (struct spoolfs_dest){
		.name = "faulty",
		.url_display = url,
		.scheme = "file",
		.path = root,
		.tls_verify = true,
		.connections = 1,
		.retries = 8,
		.backoff_min_ms = 1000,
		.backoff_max_ms = 300000,
		.stall_timeout_ms = 60000,
		.connect_timeout_ms = 30000,
	};
	spoolfs_backend_override = &spoolfs_backend_faulty;

	test_pass_through();
	test_fail_next();
	test_partial_put();
	test_delay();
	test_threads();
	test_unknown_scheme();

	CHECK_EQ_INT(rmdir(root), 0);	/* every test cleaned up */
	return check_done();
}
