/*
 * conformance.c - the suite every backend must pass.
 *
 *	conformance               a fresh file:// destination in a temp dir
 *	conformance CONFIG DEST   destination DEST of config file CONFIG
 *
 * Everything goes through the public wrappers (spoolfs_conn_*) and is
 * verified by reading it back with get(), so the same cases hold for every
 * protocol.  All files live in a directory of this run,
 * "spoolfs-conformance-PID", below the destination root; each case removes
 * the files it wrote, and at the end every one of them must be gone.  The
 * backend contract has no rmdir: for file:// the suite removes its
 * directories itself and checks that the root lists exactly what it did
 * before; for other schemes the (empty) run directory stays behind and is
 * named on stdout, for the caller to remove.
 *
 * Cases that only make sense for file:// (paths escaping the root, a root
 * that vanishes, file modes) run only there.
 */
#include "../../backends/backend.h"
#include "../../common/config.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"

#define MiB		(1024u * 1024u)
#define MAX_TRACKED	256

static const struct spoolfs_dest *dest;
static struct spoolfs_conn *conn;
static struct spoolfs_error err;
static char run[64];			/* the run's directory, relative */
static bool is_file;			/* file:// : extra cases, local cleanup */

/* Every file and directory the suite created, to prove they are gone. */
static char *files_written[MAX_TRACKED];
static size_t nfiles_written;
static char *dirs_made[MAX_TRACKED];
static size_t ndirs_made;

#define CHECK_OK(call)                                                     \
	do {                                                               \
		int rc_ = (call);                                          \
		if (rc_ != 0)                                              \
			fprintf(stderr, "%s:%d: %s: %s: %s\n", __FILE__,   \
				__LINE__, #call,                           \
				spoolfs_err_name(err.code), err.msg);      \
		CHECK_EQ_INT(rc_, 0);                                      \
	} while (0)

/* The call failed with WANT and a one-line message without the password. */
#define CHECK_FAIL(call, want)                                             \
	do {                                                               \
		int rc_ = (call);                                          \
		CHECK_EQ_INT(rc_, -1);                                     \
		CHECK_EQ_STR(spoolfs_err_name(err.code),                   \
			     spoolfs_err_name(want));                      \
		CHECK(err.msg[0] != '\0' && !strchr(err.msg, '\n'));       \
		CHECK(!dest->password || !*dest->password ||               \
		      !strstr(err.msg, dest->password));                   \
	} while (0)

/* ---- helpers ---- */

static void track(char **list, size_t *n, const char *path)
{
	for (size_t i = 0; i < *n; i++)
		if (strcmp(list[i], path) == 0)
			return;
	if (*n < MAX_TRACKED)
		list[(*n)++] = strdup(path);
}

static void *xmalloc(size_t n) __attribute__((returns_nonnull, malloc));

static void *xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (!p) {
		fprintf(stderr, "conformance: out of memory\n");
		exit(2);
	}
	return p;
}

/* run + "/" + printf(fmt): in one of a few rotating buffers. */
static const char *rp(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

static const char *rp(const char *fmt, ...)
{
	static char bufs[8][PATH_MAX];
	static unsigned next;
	char *buf = bufs[next++ % 8];
	int n = snprintf(buf, PATH_MAX, "%s/", run);
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(buf + n, PATH_MAX - (size_t)n, fmt, ap);
	va_end(ap);
	return buf;
}

/* Non-repeating bytes (xorshift64*), different per seed. */
static unsigned char *pattern(size_t n, uint64_t seed)
{
	unsigned char *p = xmalloc(n);
	uint64_t x = seed * 0x9e3779b97f4a7c15ull + 1;

	for (size_t i = 0; i < n; i++) {
		if (i % 8 == 0) {
			x ^= x >> 12;
			x ^= x << 25;
			x ^= x >> 27;
		}
		p[i] = (unsigned char)((x * 0x2545f4914f6cdd1dull) >> (8 * (i % 8)));
	}
	return p;
}

static int write_all(int fd, const void *data, size_t n)
{
	const char *p = data;

	while (n > 0) {
		ssize_t k = write(fd, p, n);

		if (k < 0 && errno == EINTR)
			continue;
		if (k <= 0)
			return -1;
		p += k;
		n -= (size_t)k;
	}
	return 0;
}

/* An anonymous local file holding DATA (a disk file, like the spool's). */
static int local_fd(const void *data, size_t n)
{
	const char *tmp = getenv("TMPDIR");
	char tmpl[PATH_MAX];
	int fd;

	if (!tmp || !*tmp)
		tmp = "/tmp";
	fd = open(tmp, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
	if (fd < 0) {
		snprintf(tmpl, sizeof(tmpl), "%s/conformance-XXXXXX", tmp);
		fd = mkstemp(tmpl);
		if (fd >= 0)
			unlink(tmpl);
	}
	if (fd < 0) {
		perror("conformance: local temp file");
		exit(2);
	}
	if (n && write_all(fd, data, n) < 0) {
		perror("conformance: write local temp file");
		exit(2);
	}
	return fd;
}

/* The same in memory: copy_file_range() cannot use it. */
static int local_memfd(const void *data, size_t n)
{
	int fd = memfd_create("conformance", MFD_CLOEXEC);

	if (fd < 0)
		return local_fd(data, n);
	if (n && write_all(fd, data, n) < 0) {
		perror("conformance: write memfd");
		exit(2);
	}
	return fd;
}

static int put_data(const char *path, const void *data, size_t n)
{
	int fd = local_fd(data, n);
	int rc;

	track(files_written, &nfiles_written, path);
	rc = spoolfs_conn_put(conn, path, fd, 0, n, NULL, NULL, &err);
	close(fd);
	return rc;
}

static int put_str(const char *path, const char *s)
{
	return put_data(path, s, strlen(s));
}

static int mkdirs(const char *dir)
{
	char buf[PATH_MAX];

	/* Remember every level below the run directory, parents first. */
	snprintf(buf, sizeof(buf), "%s", dir);
	for (char *p = buf + strlen(run) + 1; *p; p++) {
		if (*p == '/') {
			*p = '\0';
			track(dirs_made, &ndirs_made, buf);
			*p = '/';
		}
	}
	track(dirs_made, &ndirs_made, buf);
	return spoolfs_conn_mkdirs(conn, dir, &err);
}

/* Download PATH; NULL (and err set) on failure. *n gets the size. */
static unsigned char *fetch(const char *path, size_t *n)
{
	unsigned char *buf = NULL;
	struct stat st;
	int fd = local_fd(NULL, 0);

	*n = 0;
	if (write(fd, "stale", 5) != 5)		/* get must truncate */
		goto out;
	if (spoolfs_conn_get(conn, path, fd, NULL, NULL, &err) < 0)
		goto out;
	if (fstat(fd, &st) < 0)
		goto out;
	buf = xmalloc((size_t)st.st_size + 1);
	if (pread(fd, buf, (size_t)st.st_size, 0) != st.st_size) {
		free(buf);
		buf = NULL;
		goto out;
	}
	*n = (size_t)st.st_size;
out:
	close(fd);
	return buf;
}

/* PATH holds exactly DATA[0..n). */
static void check_content_at(const char *path, const void *data, size_t n,
			     int line)
{
	size_t got;
	unsigned char *buf = fetch(path, &got);

	if (!buf) {
		fprintf(stderr, "%s:%d: get '%s': %s: %s\n", __FILE__, line,
			path, spoolfs_err_name(err.code), err.msg);
		CHECK(buf != NULL);
		return;
	}
	if (got != n || memcmp(buf, data, n) != 0)
		fprintf(stderr, "%s:%d: content of '%s' differs (%zu bytes, "
			"expected %zu)\n", __FILE__, line, path, got, n);
	CHECK(got == n && memcmp(buf, data, n) == 0);
	free(buf);
}

#define CHECK_CONTENT(path, data, n) check_content_at(path, data, n, __LINE__)

static void check_size_at(const char *path, uint64_t size, int line)
{
	struct spoolfs_rstat st;

	if (spoolfs_conn_stat(conn, path, &st, &err) < 0) {
		fprintf(stderr, "%s:%d: stat '%s': %s: %s\n", __FILE__, line,
			path, spoolfs_err_name(err.code), err.msg);
		CHECK(!"stat failed");
		return;
	}
	CHECK_EQ_INT(st.size, size);
	CHECK(!st.is_dir);
}

#define CHECK_SIZE(path, size) check_size_at(path, size, __LINE__)

static void check_gone(const char *path)
{
	struct spoolfs_rstat st;

	CHECK_FAIL(spoolfs_conn_stat(conn, path, &st, &err),
		   SPOOLFS_E_NOTFOUND);
}

/* Remove PATH, which must exist. */
static void cleanup(const char *path)
{
	CHECK_OK(spoolfs_conn_remove(conn, path, &err));
	check_gone(path);
}

/* Remove PATH if it exists (after an interrupted upload). */
static void cleanup_maybe(const char *path)
{
	if (spoolfs_conn_remove(conn, path, &err) < 0)
		CHECK_EQ_STR(spoolfs_err_name(err.code),
			     spoolfs_err_name(SPOOLFS_E_NOTFOUND));
}

struct progress {
	unsigned calls;
	uint64_t first, last;
	bool backwards;
	unsigned cancel_at;		/* say stop at this call, 0 never */
};

static int progress_cb(void *arg, uint64_t done)
{
	struct progress *p = arg;

	if (p->calls == 0)
		p->first = done;
	else if (done < p->last)
		p->backwards = true;
	p->last = done;
	p->calls++;
	return p->cancel_at && p->calls >= p->cancel_at;
}

/* backend.h: progress "at least every few hundred kilobytes". */
static void check_progress_calls(const struct progress *p, size_t n,
				 const char *what)
{
	if (p->calls < n / MiB)
		fprintf(stderr, "%s:%d: %s of %zu bytes called progress %u "
			"times, expected at least %zu\n", __FILE__, __LINE__,
			what, n, p->calls, n / MiB);
	CHECK(p->calls >= n / MiB);
}

/* "a/b" + "c" with the destination's path rules ("" is the login dir). */
static char *path_join(const char *base, const char *name)
	__attribute__((returns_nonnull));

static char *path_join(const char *base, const char *name)
{
	size_t bl = strlen(base);
	char *s;

	if (asprintf(&s, "%s%s%s", base,
		     bl && base[bl - 1] != '/' ? "/" : "", name) < 0) {
		fprintf(stderr, "conformance: out of memory\n");
		exit(2);
	}
	return s;
}

static void begin(const char *name)
{
	printf("-- %s\n", name);
	fflush(stdout);
}

/* ---- cases ---- */

static void case_connect_noroot(void)
{
	struct spoolfs_dest d = *dest;
	struct spoolfs_conn *c;
	char *missing = path_join(dest->path, rp("no-such-root"));

	begin("connect to a missing root");
	d.path = missing;
	d.url_display = path_join(dest->url_display, rp("no-such-root"));
	c = spoolfs_conn_open(&d, &err);
	CHECK(c == NULL);
	CHECK_EQ_STR(spoolfs_err_name(err.code),
		     spoolfs_err_name(SPOOLFS_E_NOROOT));
	CHECK(err.msg[0] != '\0');
	CHECK(spoolfs_err_transient(err.code));
	spoolfs_conn_close(c);
	free(d.url_display);
	free(missing);
}

static void case_mkdirs(void)
{
	struct spoolfs_rstat st;

	begin("mkdirs");
	CHECK_OK(mkdirs(rp("a/b/c")));
	CHECK_OK(mkdirs(rp("a/b/c")));		/* idempotent */
	CHECK_OK(mkdirs(rp("a/b")));
	CHECK_OK(mkdirs(rp("a/b2")));		/* next to an existing one */
	CHECK_OK(spoolfs_conn_stat(conn, rp("a/b/c"), &st, &err));
	CHECK(st.is_dir);
	CHECK_OK(spoolfs_conn_stat(conn, rp("a/b2"), &st, &err));
	CHECK(st.is_dir);
	/* A file in the way is an error that names it. */
	CHECK_OK(put_str(rp("blocker"), "not a directory"));
	CHECK_EQ_INT(spoolfs_conn_mkdirs(conn, rp("blocker/sub/dir"), &err),
		     -1);
	CHECK(err.code != SPOOLFS_OK);
	CHECK(strstr(err.msg, "blocker") != NULL);
	CHECK_SIZE(rp("blocker"), 15);
	cleanup(rp("blocker"));
}

static void case_put_big(void)
{
	size_t n = 5 * MiB + 12345;
	unsigned char *data = pattern(n, 1);
	struct progress pr = { 0 };
	int fd = local_fd(data, n);

	begin("put a new file of 5 MiB");
	lseek(fd, 17, SEEK_SET);	/* the fd's position must not matter */
	track(files_written, &nfiles_written, rp("big.bin"));
	CHECK_OK(spoolfs_conn_put(conn, rp("big.bin"), fd, 0, n, progress_cb,
				  &pr, &err));
	close(fd);
	CHECK(!pr.backwards);
	CHECK(pr.last <= n);
	check_progress_calls(&pr, n, "put");
	CHECK_SIZE(rp("big.bin"), n);
	CHECK_CONTENT(rp("big.bin"), data, n);

	/* get reports progress too. */
	memset(&pr, 0, sizeof(pr));
	fd = local_fd(NULL, 0);
	CHECK_OK(spoolfs_conn_get(conn, rp("big.bin"), fd, progress_cb, &pr,
				  &err));
	close(fd);
	CHECK(!pr.backwards);
	check_progress_calls(&pr, n, "get");
	CHECK(pr.last <= n);
	cleanup(rp("big.bin"));
	free(data);
}

static void case_put_memfd(void)
{
	size_t n = 2 * MiB + 3;
	unsigned char *data = pattern(n, 2);
	int fd = local_memfd(data, n);

	begin("put from a memfd");
	track(files_written, &nfiles_written, rp("memfd.bin"));
	CHECK_OK(spoolfs_conn_put(conn, rp("memfd.bin"), fd, 0, n, NULL, NULL,
				  &err));
	close(fd);
	CHECK_CONTENT(rp("memfd.bin"), data, n);
	cleanup(rp("memfd.bin"));
	free(data);
}

static void case_put_missing_dir(void)
{
	begin("put into a missing directory");
	CHECK_FAIL(put_str(rp("nodir/deeper/x.txt"), "x"), SPOOLFS_E_NOTFOUND);
	/* What the spool does next. */
	CHECK_OK(mkdirs(rp("nodir/deeper")));
	CHECK_OK(put_str(rp("nodir/deeper/x.txt"), "x"));
	CHECK_CONTENT(rp("nodir/deeper/x.txt"), "x", 1);
	cleanup(rp("nodir/deeper/x.txt"));
}

static void case_stat(void)
{
	unsigned char *data = pattern(1000, 3);
	struct spoolfs_rstat st;
	const int64_t when = 1500000000;	/* 2017-07-14 */

	begin("stat and mtime");
	CHECK_OK(put_data(rp("stat.bin"), data, 1000));
	CHECK_SIZE(rp("stat.bin"), 1000);
	CHECK_OK(spoolfs_conn_set_mtime(conn, rp("stat.bin"), when, &err));
	CHECK_OK(spoolfs_conn_stat(conn, rp("stat.bin"), &st, &err));
	if (spoolfs_conn_can(conn, SPOOLFS_CAP_MTIME))
		CHECK_EQ_INT(st.mtime, when);
	else
		printf("   (no CAP_MTIME: mtime not checked)\n");
	CHECK_EQ_INT(st.size, 1000);
	cleanup(rp("stat.bin"));
	free(data);
}

static void case_put_file(void)
{
	size_t n = 2 * MiB + 333, k = 700001;
	unsigned char *data = pattern(n, 9);
	const int64_t when = 1400000000;	/* 2014-05-13 */
	struct progress pr = { 0 };
	struct spoolfs_rstat st;
	uint64_t rsize = 0;
	int fd;

	begin("put_file: content, mtime and the server's size at once");
	fd = local_fd(data, n);
	track(files_written, &nfiles_written, rp("pf.bin"));
	CHECK_OK(spoolfs_conn_put_file(conn, rp("pf.bin"), fd, 0, n, when,
				       progress_cb, &pr, &rsize, &err));
	CHECK_EQ_INT(rsize, n);
	CHECK(pr.calls > 0);
	CHECK_EQ_INT(pr.last, n);
	CHECK_CONTENT(rp("pf.bin"), data, n);
	CHECK_OK(spoolfs_conn_stat(conn, rp("pf.bin"), &st, &err));
	if (spoolfs_conn_can(conn, SPOOLFS_CAP_MTIME))
		CHECK_EQ_INT(st.mtime, when);
	/* over a longer file: truncated, and the size says so */
	CHECK_OK(spoolfs_conn_put_file(conn, rp("pf.bin"), fd, 0, k, -1, NULL,
				       NULL, &rsize, &err));
	CHECK_EQ_INT(rsize, k);
	CHECK_CONTENT(rp("pf.bin"), data, k);
	/* resumed at the remote size */
	if (spoolfs_conn_can(conn, SPOOLFS_CAP_RESUME)) {
		CHECK_OK(spoolfs_conn_put_file(conn, rp("pf.bin"), fd, k, n,
					       when, NULL, NULL, &rsize,
					       &err));
		CHECK_EQ_INT(rsize, n);
		CHECK_CONTENT(rp("pf.bin"), data, n);
	}
	/* a missing directory is SPOOLFS_E_NOTFOUND, as for put */
	CHECK_FAIL(spoolfs_conn_put_file(conn, rp("pfdir/x/pf.bin"), fd, 0, k,
					 when, NULL, NULL, &rsize, &err),
		   SPOOLFS_E_NOTFOUND);
	close(fd);
	cleanup(rp("pf.bin"));
	free(data);
}

static void case_resume(void)
{
	size_t n = 3 * MiB + 77, k = MiB + 5;
	unsigned char *data = pattern(n, 4);
	struct progress pr = { 0 };
	struct spoolfs_rstat st;
	int fd;

	begin("resume");
	if (!spoolfs_conn_can(conn, SPOOLFS_CAP_RESUME)) {
		printf("   (no CAP_RESUME: skipped)\n");
		free(data);
		return;
	}
	fd = local_fd(data, n);
	track(files_written, &nfiles_written, rp("resume.bin"));
	/* The first part, as an interrupted upload leaves it. */
	CHECK_OK(spoolfs_conn_put(conn, rp("resume.bin"), fd, 0, k, NULL, NULL,
				  &err));
	CHECK_OK(spoolfs_conn_stat(conn, rp("resume.bin"), &st, &err));
	CHECK_EQ_INT(st.size, k);
	/* The rest, from the remote size. */
	CHECK_OK(spoolfs_conn_put(conn, rp("resume.bin"), fd, st.size, n,
				  progress_cb, &pr, &err));
	close(fd);
	CHECK(pr.calls > 0);
	CHECK(pr.first >= k);		/* counts include the offset */
	CHECK(!pr.backwards);
	CHECK(pr.last <= n);
	CHECK_SIZE(rp("resume.bin"), n);
	CHECK_CONTENT(rp("resume.bin"), data, n);
	cleanup(rp("resume.bin"));
	free(data);
}

static void case_overwrite(void)
{
	unsigned char *data = pattern(100000, 5);

	begin("put over a longer file truncates it");
	CHECK_OK(put_data(rp("over.bin"), data, 100000));
	CHECK_OK(put_str(rp("over.bin"), "short"));
	CHECK_SIZE(rp("over.bin"), 5);
	CHECK_CONTENT(rp("over.bin"), "short", 5);
	CHECK_OK(put_data(rp("over.bin"), "", 0));
	CHECK_SIZE(rp("over.bin"), 0);
	cleanup(rp("over.bin"));
	free(data);
}

static void case_rename(void)
{
	unsigned char *a = pattern(3000, 6);

	begin("rename");
	CHECK_OK(put_data(rp("a.part"), a, 3000));
	CHECK_OK(put_str(rp("b.txt"), "old target"));
	/* Over an existing file: the target is replaced. */
	CHECK_OK(spoolfs_conn_rename(conn, rp("a.part"), rp("b.txt"), &err));
	check_gone(rp("a.part"));
	CHECK_SIZE(rp("b.txt"), 3000);
	CHECK_CONTENT(rp("b.txt"), a, 3000);
	/* Into another directory. */
	CHECK_OK(mkdirs(rp("moved")));
	track(files_written, &nfiles_written, rp("moved/b.txt"));
	CHECK_OK(spoolfs_conn_rename(conn, rp("b.txt"), rp("moved/b.txt"),
				     &err));
	check_gone(rp("b.txt"));
	CHECK_CONTENT(rp("moved/b.txt"), a, 3000);
	cleanup(rp("moved/b.txt"));
	/* A missing source fails. */
	CHECK_EQ_INT(spoolfs_conn_rename(conn, rp("nothing"), rp("b.txt"),
					 &err), -1);
	CHECK(err.code != SPOOLFS_OK && err.msg[0]);
	check_gone(rp("b.txt"));
	free(a);
}

static void case_missing(void)
{
	size_t n;
	unsigned char *buf;

	begin("remove, stat and get of a missing file");
	CHECK_FAIL(spoolfs_conn_remove(conn, rp("missing"), &err),
		   SPOOLFS_E_NOTFOUND);
	check_gone(rp("missing"));
	check_gone(rp("missing-dir/missing"));
	buf = fetch(rp("missing"), &n);
	CHECK(buf == NULL);
	CHECK(err.code != SPOOLFS_OK && err.msg[0]);
	free(buf);
}

static void case_empty(void)
{
	size_t n = 1;
	unsigned char *buf;

	begin("a 0-byte file");
	CHECK_OK(put_data(rp("empty.part"), "", 0));
	CHECK_SIZE(rp("empty.part"), 0);
	track(files_written, &nfiles_written, rp("empty"));
	CHECK_OK(spoolfs_conn_rename(conn, rp("empty.part"), rp("empty"),
				     &err));
	CHECK_SIZE(rp("empty"), 0);
	buf = fetch(rp("empty"), &n);
	CHECK(buf != NULL);
	CHECK_EQ_INT(n, 0);
	free(buf);
	cleanup(rp("empty"));
}

static void case_names(void)
{
	static const char *const names[] = {
		"with space.txt",
		"é 日本.txt",
		"hash#1.txt",
		"100%.txt",
		"%41%2F%20.txt",
		"it's.txt",
		"say \"hi\".txt",
		"-leading-dash.txt",
		"what?.txt",
		"semi;colon&x=1.txt",
		"brackets [1] {2}.txt",
		"back\\slash.txt",
		"tilde~.txt",
		NULL,			/* 255 bytes */
	};
	char longname[256];
	const char *dir = "dir é #%'\" x";

	begin("odd names");
	memset(longname, 'L', 251);
	memcpy(longname + 251, ".txt", 5);
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *name = names[i] ? names[i] : longname;
		char path[PATH_MAX];
		size_t len = strlen(name);

		snprintf(path, sizeof(path), "%s/%s", run, name);
		/* Directly... */
		CHECK_OK(put_str(path, name));
		CHECK_SIZE(path, len);
		CHECK_CONTENT(path, name, len);
		cleanup(path);
		/* ...and as the spool does: a temp name, then rename. */
		CHECK_OK(put_str(rp("name.part"), name));
		CHECK_OK(spoolfs_conn_rename(conn, rp("name.part"), path,
					     &err));
		check_gone(rp("name.part"));
		CHECK_CONTENT(path, name, len);
		cleanup(path);
	}
	/* In an oddly named directory. */
	CHECK_OK(mkdirs(rp("%s/%s", dir, names[1])));
	CHECK_OK(put_str(rp("%s/%s/%s", dir, names[1], names[3]), "inside"));
	CHECK_CONTENT(rp("%s/%s/%s", dir, names[1], names[3]), "inside", 6);
	cleanup(rp("%s/%s/%s", dir, names[1], names[3]));
}

static void case_cancel(void)
{
	size_t n = 3 * MiB;
	unsigned char *data = pattern(n, 7);
	struct progress pr = { .cancel_at = 1 };
	int fd = local_fd(data, n);

	begin("progress callback cancels");
	track(files_written, &nfiles_written, rp("cancel.bin"));
	CHECK_FAIL(spoolfs_conn_put(conn, rp("cancel.bin"), fd, 0, n,
				    progress_cb, &pr, &err),
		   SPOOLFS_E_CANCELLED);
	CHECK_EQ_INT(pr.calls, 1);	/* it stopped at once */
	close(fd);
	cleanup_maybe(rp("cancel.bin"));

	/* The connection is still usable, and get can be cancelled too. */
	CHECK_OK(put_data(rp("cancel.bin"), data, n));
	memset(&pr, 0, sizeof(pr));
	pr.cancel_at = 1;
	fd = local_fd(NULL, 0);
	CHECK_FAIL(spoolfs_conn_get(conn, rp("cancel.bin"), fd, progress_cb,
				    &pr, &err),
		   SPOOLFS_E_CANCELLED);
	CHECK_EQ_INT(pr.calls, 1);
	close(fd);
	CHECK_CONTENT(rp("cancel.bin"), data, n);
	cleanup(rp("cancel.bin"));
	free(data);
}

static void case_rmdir(void)
{
	begin("rmdir: only an empty directory, never the root");
	CHECK_OK(mkdirs(rp("rd/sub")));
	CHECK_OK(put_str(rp("rd/sub/f"), "keeps it"));
	/* not empty: refused, everything stays */
	CHECK_EQ_INT(spoolfs_conn_rmdir(conn, rp("rd/sub"), &err), -1);
	CHECK(err.code != SPOOLFS_OK && err.msg[0] != '\0');
	CHECK_EQ_INT(spoolfs_conn_rmdir(conn, rp("rd"), &err), -1);
	CHECK_SIZE(rp("rd/sub/f"), 8);
	cleanup(rp("rd/sub/f"));
	CHECK_OK(spoolfs_conn_rmdir(conn, rp("rd/sub"), &err));
	check_gone(rp("rd/sub"));
	CHECK_OK(spoolfs_conn_rmdir(conn, rp("rd"), &err));
	check_gone(rp("rd"));
	CHECK_EQ_INT(spoolfs_conn_rmdir(conn, rp("rd"), &err), -1);
	CHECK_FAIL(spoolfs_conn_rmdir(conn, "", &err), SPOOLFS_E_PERM);
}

static void case_probe(void)
{
	const char *step = NULL;
	char probe[64];

	begin("spoolfs_backend_probe");
	CHECK_OK(spoolfs_backend_probe(dest, run, &step, &err));
	CHECK_OK(spoolfs_backend_probe(dest, "", &step, &err));
	CHECK_OK(spoolfs_backend_probe(dest, rp("probe/new"), &step, &err));
	track(dirs_made, &ndirs_made, rp("probe"));
	track(dirs_made, &ndirs_made, rp("probe/new"));
	/* It leaves nothing behind. */
	snprintf(probe, sizeof(probe), ".spoolfs-probe-%ld", (long)getpid());
	check_gone(probe);
	check_gone(rp("%s", probe));
	check_gone(rp("probe/new/%s", probe));
	check_gone(rp("probe/new/%s.part", probe));
}

/* ---- file:// only ---- */

static char *local_path(const char *rel)
{
	return path_join(dest->path, rel);
}

/* A put that is expected to be refused: not tracked. */
static int put_refused(const char *path)
{
	int fd = local_fd("x", 1);
	int rc = spoolfs_conn_put(conn, path, fd, 0, 1, NULL, NULL, &err);

	close(fd);
	return rc;
}

static void file_bad_paths(void)
{
	struct spoolfs_rstat st;

	begin("file: paths that are not below the root");
	CHECK_FAIL(put_refused("../escape"), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused(rp("../../escape")), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused(rp("a//b")), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused(rp("./b")), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused(rp("b/")), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused("/etc/spoolfs-escape"), SPOOLFS_E_NAME);
	CHECK_FAIL(put_refused(""), SPOOLFS_E_NAME);
	CHECK_FAIL(spoolfs_conn_stat(conn, "../", &st, &err), SPOOLFS_E_NAME);
	CHECK_FAIL(spoolfs_conn_mkdirs(conn, rp("x/../.."), &err),
		   SPOOLFS_E_NAME);
	CHECK_FAIL(spoolfs_conn_rename(conn, rp("a"), "../b", &err),
		   SPOOLFS_E_NAME);
	CHECK_FAIL(spoolfs_conn_remove(conn, "..", &err), SPOOLFS_E_NAME);
	CHECK(access("/etc/spoolfs-escape", F_OK) < 0);
}

static void file_symlinks(void)
{
	char *link = local_path(rp("escape"));
	char *inside = local_path(rp("inlink"));
	struct spoolfs_rstat st;
	struct stat lst;

	begin("file: symlinks");
	/* One that leads outside the root is refused... */
	CHECK_EQ_INT(symlink("/tmp", link), 0);
	CHECK_FAIL(put_refused(rp("escape/spoolfs-conformance-escape")),
		   SPOOLFS_E_PERM);
	CHECK(strstr(err.msg, "outside") != NULL);
	CHECK(lstat("/tmp/spoolfs-conformance-escape", &lst) < 0);
	CHECK_FAIL(spoolfs_conn_stat(conn, rp("escape"), &st, &err),
		   SPOOLFS_E_PERM);
	/* ...but can be removed (remove does not follow it). */
	CHECK_OK(spoolfs_conn_remove(conn, rp("escape"), &err));
	CHECK(lstat(link, &lst) < 0);
	/* One that stays inside works. */
	CHECK_OK(mkdirs(rp("real")));
	CHECK_EQ_INT(symlink("real", inside), 0);
	CHECK_OK(put_str(rp("inlink/f"), "via link"));
	CHECK_CONTENT(rp("real/f"), "via link", 8);
	cleanup(rp("real/f"));
	CHECK_OK(spoolfs_conn_remove(conn, rp("inlink"), &err));
	free(link);
	free(inside);
}

static void file_modes(void)
{
	mode_t mask = umask(022);
	char *f = local_path(rp("mode.txt"));
	char *d = local_path(rp("modedir"));
	struct stat st;

	umask(mask);
	begin("file: modes");
	CHECK_OK(put_str(rp("mode.txt"), "x"));
	CHECK_EQ_INT(stat(f, &st), 0);
	CHECK_EQ_INT(st.st_mode & 07777, 0644 & ~mask);
	CHECK_OK(mkdirs(rp("modedir")));
	CHECK_EQ_INT(stat(d, &st), 0);
	CHECK_EQ_INT(st.st_mode & 07777, 0755 & ~mask);
	cleanup(rp("mode.txt"));
	free(f);
	free(d);
}

static void file_messages(void)
{
	char want[PATH_MAX + 64];
	char *p = local_path(rp("nodir2/x.jpg"));
	unsigned char *small = pattern(100, 8);
	int fd;

	begin("file: messages and local errors");
	CHECK_FAIL(put_str(rp("nodir2/x.jpg"), "x"), SPOOLFS_E_NOTFOUND);
	snprintf(want, sizeof(want),
		 "cannot write '%s': no such file or directory", p);
	CHECK_EQ_STR(err.msg, want);
	/* A file in the way of mkdirs: NAME, naming it. */
	CHECK_OK(put_str(rp("file"), "x"));
	CHECK_FAIL(spoolfs_conn_mkdirs(conn, rp("file/sub"), &err),
		   SPOOLFS_E_NAME);
	CHECK(strstr(err.msg, "is not a directory") != NULL);
	cleanup(rp("file"));
	/* A local file shorter than announced. */
	fd = local_fd(small, 100);
	track(files_written, &nfiles_written, rp("short.bin"));
	CHECK_FAIL(spoolfs_conn_put(conn, rp("short.bin"), fd, 0, 200, NULL,
				    NULL, &err),
		   SPOOLFS_E_IO);
	close(fd);
	cleanup_maybe(rp("short.bin"));
	/* Resuming a file shorter than the offset. */
	CHECK_OK(put_data(rp("short.bin"), small, 10));
	fd = local_fd(small, 100);
	CHECK_FAIL(spoolfs_conn_put(conn, rp("short.bin"), fd, 50, 100, NULL,
				    NULL, &err),
		   SPOOLFS_E_PROTO);
	close(fd);
	cleanup(rp("short.bin"));
	free(small);
	free(p);
}

static void file_root_changes(void)
{
	struct spoolfs_dest d = *dest;
	struct spoolfs_conn *c;
	char *root = local_path(rp("second-root"));
	char *url = path_join(dest->url_display, rp("second-root"));
	struct spoolfs_rstat st;
	int fd = local_fd("data", 4);

	begin("file: the root goes away and comes back");
	d.path = root;
	d.url_display = url;
	CHECK_EQ_INT(mkdir(root, 0755), 0);
	c = spoolfs_conn_open(&d, &err);
	CHECK(c != NULL);
	if (!c)
		goto out;
	CHECK_EQ_INT(rmdir(root), 0);
	CHECK_FAIL(spoolfs_conn_put(c, "x", fd, 0, 4, NULL, NULL, &err),
		   SPOOLFS_E_NOROOT);
	CHECK(strstr(err.msg, root) != NULL);
	CHECK_FAIL(spoolfs_conn_stat(c, "x", &st, &err), SPOOLFS_E_NOROOT);
	CHECK_FAIL(spoolfs_conn_mkdirs(c, "a", &err), SPOOLFS_E_NOROOT);
	/* Mounted again: the same connection works again. */
	CHECK_EQ_INT(mkdir(root, 0755), 0);
	CHECK_OK(spoolfs_conn_put(c, "x", fd, 0, 4, NULL, NULL, &err));
	CHECK_OK(spoolfs_conn_stat(c, "x", &st, &err));
	CHECK_EQ_INT(st.size, 4);
	CHECK_OK(spoolfs_conn_remove(c, "x", &err));
	spoolfs_conn_close(c);
	/* A file where the root should be. */
	CHECK_EQ_INT(rmdir(root), 0);
	CHECK_OK(put_str(rp("second-root"), "x"));
	c = spoolfs_conn_open(&d, &err);
	CHECK(c == NULL);
	CHECK_EQ_STR(spoolfs_err_name(err.code),
		     spoolfs_err_name(SPOOLFS_E_NOROOT));
	spoolfs_conn_close(c);
	cleanup(rp("second-root"));
	/* A relative root is a configuration error. */
	d.path = "relative/root";
	c = spoolfs_conn_open(&d, &err);
	CHECK(c == NULL);
	CHECK_EQ_STR(spoolfs_err_name(err.code),
		     spoolfs_err_name(SPOOLFS_E_CONFIG));
	spoolfs_conn_close(c);
out:
	rmdir(root);
	close(fd);
	free(root);
	free(url);
}

/* ---- setup and the final check ---- */

static int cmp_str(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

/* The root's entries, sorted, joined by '/' (which no name contains). */
static char *list_root(void)
{
	DIR *d = opendir(dest->path);
	struct dirent *de;
	char *names[4096], *s;
	size_t n = 0, len = 1;

	if (!d)
		return strdup("(cannot list)");
	while ((de = readdir(d)) && n < 4096) {
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, ".."))
			names[n++] = strdup(de->d_name);
	}
	closedir(d);
	qsort(names, n, sizeof(names[0]), cmp_str);
	for (size_t i = 0; i < n; i++)
		len += strlen(names[i]) + 1;
	s = xmalloc(len);
	s[0] = '\0';
	for (size_t i = 0; i < n; i++) {
		strcat(s, names[i]);
		strcat(s, "/");
		free(names[i]);
	}
	return s;
}

/* rmdir below the file:// root; the directory must be empty by now. */
/* Remove the directory REL through the backend, unless gone already. */
static void rmdir_remote(const char *rel)
{
	if (spoolfs_conn_rmdir(conn, rel, &err) < 0 &&
	    err.code != SPOOLFS_E_NOTFOUND) {
		fprintf(stderr, "conformance: cannot remove '%s': %s\n", rel,
			err.msg);
		CHECK(!"a directory left behind");
	}
	check_gone(rel);
}

static void check_nothing_left(const char *before)
{
	begin("nothing left behind");
	for (size_t i = 0; i < nfiles_written; i++) {
		check_gone(files_written[i]);
		free(files_written[i]);
	}
	for (size_t i = ndirs_made; i-- > 0;)
		rmdir_remote(dirs_made[i]);
	rmdir_remote(run);
	if (is_file) {
		char *after = list_root();

		CHECK_EQ_STR(after, before);
		free(after);
	}
	for (size_t i = 0; i < ndirs_made; i++)
		free(dirs_made[i]);
}

static struct spoolfs_dest *temp_dest(void)
{
	static struct spoolfs_dest d;
	static char root[PATH_MAX], url[PATH_MAX + 8];
	const char *tmp = getenv("TMPDIR");

	if (!tmp || !*tmp)
		tmp = "/tmp";
	snprintf(root, sizeof(root), "%s/spoolfs-conformance-XXXXXX", tmp);
	if (!mkdtemp(root)) {
		perror("conformance: mkdtemp");
		exit(2);
	}
	snprintf(url, sizeof(url), "file://%s", root);
	d = (struct spoolfs_dest){
		.name = "conformance",
		.line = 0,
		.url_display = url,
		.scheme = "file",
		.path = root,
		.ssh_agent = false,
		.tls_mode = SPOOLFS_TLS_EXPLICIT,
		.tls_verify = true,
		.connections = 1,
		.retries = 8,
		.backoff_min_ms = 1000,
		.backoff_max_ms = 300000,
		.stall_timeout_ms = 60000,
		.connect_timeout_ms = 30000,
	};
	return &d;
}

int main(int argc, char **argv)
{
	struct spoolfs_config cfg = { 0 };
	struct spoolfs_dest *tmpdest = NULL;
	char errbuf[1024], *before = NULL;
	bool loaded = false;

	if (argc == 1) {
		tmpdest = temp_dest();
		dest = tmpdest;
	} else if (argc == 3) {
		if (spoolfs_config_load(&cfg, argv[1], errbuf,
					sizeof(errbuf)) < 0) {
			fprintf(stderr, "conformance: %s\n", errbuf);
			return 2;
		}
		loaded = true;
		dest = spoolfs_config_dest(&cfg, argv[2]);
		if (!dest) {
			fprintf(stderr, "conformance: no [dest %s] in %s\n",
				argv[2], argv[1]);
			spoolfs_config_release(&cfg);
			return 2;
		}
	} else {
		fprintf(stderr, "usage: conformance [CONFIG DEST]\n");
		return 2;
	}
	is_file = strcmp(dest->scheme, "file") == 0;
	snprintf(run, sizeof(run), "spoolfs-conformance-%ld", (long)getpid());
	printf("conformance: %s (%s)\n", dest->url_display, run);

	begin("connect");
	conn = spoolfs_conn_open(dest, &err);
	CHECK(conn != NULL);
	if (!conn) {
		fprintf(stderr, "conformance: connect: %s: %s\n",
			spoolfs_err_name(err.code), err.msg);
		goto out;
	}
	if (is_file)
		before = list_root();
	CHECK_OK(spoolfs_conn_mkdirs(conn, run, &err));

	case_connect_noroot();
	case_mkdirs();
	case_put_big();
	case_put_memfd();
	case_put_missing_dir();
	case_stat();
	case_put_file();
	case_resume();
	case_overwrite();
	case_rename();
	case_missing();
	case_empty();
	case_names();
	case_cancel();
	case_rmdir();
	case_probe();
	if (is_file) {
		file_bad_paths();
		file_symlinks();
		file_modes();
		file_messages();
		file_root_changes();
	}
	check_nothing_left(before);
	spoolfs_conn_close(conn);
out:
	free(before);
	if (tmpdest) {
		CHECK_EQ_INT(rmdir(tmpdest->path), 0);	/* empty at the end */
	}
	if (loaded)
		spoolfs_config_release(&cfg);
	return check_done();
}
