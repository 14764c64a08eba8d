/*
 * file.c - the file:// backend: a local or NAS-mounted directory.
 *
 * The destination root is dest->path (absolute).  connect() opens it once
 * as an O_PATH directory fd and every later operation works relative to that
 * fd (openat2 with RESOLVE_BENEATH where the kernel has it, openat
 * otherwise), so a relative path can never reach outside the root, not even
 * through a symlink: one that points outside fails with "it leads outside the
 * destination directory".  Paths with ".", ".." or empty components are
 * refused as well, although the spool never sends them.
 *
 * The root is never created.  A NAS may be unmounted, remounted or not yet
 * mounted: every operation first checks that dest->path still names the
 * directory the fd holds; when it is gone the operation fails with
 * SPOOLFS_E_NOROOT (transient), and when another directory took its place
 * (remounted) the fd is reopened.  What this cannot tell apart: an empty
 * mount point directory left behind by an unmounted NAS looks like a root,
 * and files then land on the local disk below it.
 *
 * Data is copied in 1 MiB chunks with copy_file_range() (in-kernel, and
 * server-side on NFS 4.2 or SMB) and falls back to pread()/pwrite() as soon
 * as that fails for any reason, so an error is always reported by the call
 * that can say which side failed.  put() fsyncs the file, rename() fsyncs the
 * target directory: when they return 0 the data and the name are on disk.
 *
 * Threads: a connection is used by one thread at a time; there is no global
 * state.
 */
#include "backend.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#ifdef SYS_openat2
#include <linux/openat2.h>
#endif

#define FILE_CHUNK	(1u << 20)
#define FILE_MODE	0644
#define DIR_MODE	0755

struct file_conn {
	const char *root;	/* dest->path, absolute */
	int rootfd;		/* O_PATH | O_DIRECTORY */
	dev_t dev;		/* identity of rootfd, to notice a remount */
	ino_t ino;
	bool no_openat2;	/* the kernel said ENOSYS once */
	bool require_mount;	/* the root must be a mount point */
};

/* Lowercase strerror: "No space left on device" -> "no space left ...". */
static const char *reason(int e, char *buf, size_t len)
{
	const char *s = strerror_r(e, buf, len);

	if (s != buf)
		snprintf(buf, len, "%s", s);
	if (isupper((unsigned char)buf[0]) && islower((unsigned char)buf[1]))
		buf[0] = (char)tolower((unsigned char)buf[0]);
	return buf;
}

/* "/srv/up" + "a/b.jpg" -> "/srv/up/a/b.jpg", for messages. */
static const char *full_path(const struct file_conn *fc, const char *rel,
			     char *buf, size_t len)
{
	size_t rl = strlen(fc->root);
	const char *sep = (*rel && rl > 0 && fc->root[rl - 1] != '/') ? "/" : "";

	int n = snprintf(buf, len, "%s%s%s", fc->root, sep, rel);

	if (n >= 0 && (size_t)n >= len && len > 4)
		memcpy(buf + len - 4, "...", 4);	/* only for messages */
	return buf;
}

static int noroot(const struct file_conn *fc, struct spoolfs_error *err,
		  int e)
{
	char rbuf[128];

	if (e == ENOENT)
		return spoolfs_error_set(err, SPOOLFS_E_NOROOT,
					 "destination directory '%s' does not "
					 "exist", fc->root);
	if (e == ENOTDIR)
		return spoolfs_error_set(err, SPOOLFS_E_NOROOT,
					 "destination '%s' is not a directory",
					 fc->root);
	return spoolfs_error_set(err, spoolfs_err_from_errno(e),
				 "cannot open destination directory '%s': %s",
				 fc->root, reason(e, rbuf, sizeof(rbuf)));
}

/* (Re)open fc->root into fc->rootfd. */
/* A directory is a mount point when its parent is on another device
 * (or it is the root of the tree). */
static bool is_mount_point(int fd, const struct stat *st)
{
	struct stat up;

	if (fstatat(fd, "..", &up, 0) < 0)
		return false;
	return up.st_dev != st->st_dev || up.st_ino == st->st_ino;
}

static int root_open(struct file_conn *fc, struct spoolfs_error *err)
{
	struct stat st;
	int fd, e;

	fd = open(fc->root, O_PATH | O_DIRECTORY | O_CLOEXEC);
	if (fd < 0)
		return noroot(fc, err, errno);
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return noroot(fc, err, e);
	}
	if (fc->require_mount && !is_mount_point(fd, &st)) {
		close(fd);
		return spoolfs_error_set(err, SPOOLFS_E_NOROOT,
					 "destination directory '%s' is not a "
					 "mount point (require_mount = yes): is "
					 "the NAS mounted?", fc->root);
	}
	if (fc->rootfd >= 0)
		close(fc->rootfd);
	fc->rootfd = fd;
	fc->dev = st.st_dev;
	fc->ino = st.st_ino;
	return 0;
}

/*
 * Before each operation: is fc->root still the directory rootfd holds?
 * Missing -> NOROOT; another directory (remounted) -> reopen.
 */
static int root_check(struct file_conn *fc, struct spoolfs_error *err)
{
	struct stat st;

	if (stat(fc->root, &st) < 0)
		return noroot(fc, err, errno);
	if (!S_ISDIR(st.st_mode))
		return noroot(fc, err, ENOTDIR);
	if (st.st_dev == fc->dev && st.st_ino == fc->ino)
		return 0;
	return root_open(fc, err);
}

/* After a failure: did the root vanish while we were working in it? */
static bool root_gone(const struct file_conn *fc)
{
	struct stat st, fst;

	if (stat(fc->root, &st) < 0 || !S_ISDIR(st.st_mode))
		return true;
	if (fstat(fc->rootfd, &fst) < 0 || fst.st_nlink == 0)
		return true;
	return st.st_dev != fc->dev || st.st_ino != fc->ino;
}

/*
 * Record errno E: "<what>: <reason>", with the code from
 * spoolfs_err_from_errno() -- or NOROOT when the root itself went away.
 * EXDEV only comes from RESOLVE_BENEATH: a symlink pointing outside.
 */
static int fail(const struct file_conn *fc, struct spoolfs_error *err, int e,
		const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int fail(const struct file_conn *fc, struct spoolfs_error *err, int e,
		const char *fmt, ...)
{
	enum spoolfs_err code = spoolfs_err_from_errno(e);
	char what[SPOOLFS_ERRMSG_MAX], rbuf[128];
	const char *why;
	va_list ap;

	if (root_gone(fc))
		return noroot(fc, err, ENOENT);
	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);
	if (e == EXDEV) {
		code = SPOOLFS_E_PERM;
		why = "it leads outside the destination directory";
	} else {
		why = reason(e, rbuf, sizeof(rbuf));
	}
	return spoolfs_error_set(err, code, "%s: %s", what, why);
}

/* '/'-separated, no leading '/', no "", "." or ".." components. */
static bool rel_valid(const char *rel)
{
	const char *p = rel;

	if (!*rel)
		return false;
	for (;;) {
		const char *slash = strchr(p, '/');
		size_t n = slash ? (size_t)(slash - p) : strlen(p);

		if (n == 0 || (n == 1 && p[0] == '.') ||
		    (n == 2 && p[0] == '.' && p[1] == '.'))
			return false;
		if (!slash)
			return true;
		p = slash + 1;
	}
}

static int bad_path(struct spoolfs_error *err, const char *rel)
{
	return spoolfs_error_set(err, SPOOLFS_E_NAME,
				 "invalid destination path '%s'", rel);
}

/* openat() below the root that cannot escape it.  "" is the root. */
static int open_beneath(struct file_conn *fc, const char *rel, int flags,
			mode_t mode)
{
	const char *p = *rel ? rel : ".";

#ifdef SYS_openat2
	if (!fc->no_openat2) {
		struct open_how how = {
			.flags = (uint64_t)(flags | O_CLOEXEC),
			.mode = (flags & O_CREAT) ? mode : 0,
			.resolve = RESOLVE_BENEATH | RESOLVE_NO_MAGICLINKS,
		};
		long fd;
		int tries = 0;

		do
			fd = syscall(SYS_openat2, fc->rootfd, p, &how,
				     sizeof(how));
		while (fd < 0 && (errno == EAGAIN || errno == EINTR) &&
		       ++tries < 16);
		if (fd >= 0 || errno != ENOSYS)
			return (int)fd;
		fc->no_openat2 = true;
	}
#endif
	return openat(fc->rootfd, p, flags | O_CLOEXEC, mode);
}

/* Open the directory that holds REL; *base is REL's last component. */
static int open_parent(struct file_conn *fc, const char *rel, int flags,
		       const char **base)
{
	const char *slash = strrchr(rel, '/');
	size_t n = slash ? (size_t)(slash - rel) : 0;
	char dir[PATH_MAX];

	*base = slash ? slash + 1 : rel;
	if (n >= sizeof(dir)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	memcpy(dir, rel, n);
	dir[n] = '\0';
	return open_beneath(fc, dir, flags | O_DIRECTORY, 0);
}

/* Open a regular file without blocking on a FIFO, then clear O_NONBLOCK. */
static int open_regular(struct file_conn *fc, const char *rel, int flags,
			mode_t mode)
{
	struct stat st;
	int fd = open_beneath(fc, rel, flags | O_NONBLOCK, mode);
	int fl, e;

	if (fd < 0)
		return -1;
	if (fstat(fd, &st) < 0) {
		e = errno;
		goto out_close;
	}
	if (!S_ISREG(st.st_mode)) {
		e = S_ISDIR(st.st_mode) ? EISDIR : EINVAL;
		goto out_close;
	}
	fl = fcntl(fd, F_GETFL);
	if (fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0) {
		e = errno;
		goto out_close;
	}
	return fd;
out_close:
	close(fd);
	errno = e;
	return -1;
}

/* ---- copying ---- */

enum copy_result {
	COPY_OK,
	COPY_READ,		/* reading IN failed (c->errnum) */
	COPY_WRITE,		/* writing OUT failed (c->errnum) */
	COPY_SHORT,		/* IN ended before c->end */
	COPY_CANCELLED,		/* the progress callback said stop */
};

struct copy {
	int in, out;
	uint64_t pos;		/* same offset in both files */
	uint64_t end;		/* UINT64_MAX: until IN's end */
	int errnum;
};

/* Copy [c->pos, c->end) from c->in to c->out at the same offsets. */
static enum copy_result copy_data(struct copy *c, spoolfs_progress_fn progress,
				  void *arg)
{
	enum copy_result res = COPY_OK;
	bool use_cfr = true;
	char *buf = NULL;

	while (c->pos < c->end) {
		size_t want = c->end - c->pos < FILE_CHUNK ?
			(size_t)(c->end - c->pos) : FILE_CHUNK;
		ssize_t n;

		if (use_cfr) {
			loff_t ip = (loff_t)c->pos, op = (loff_t)c->pos;

			n = copy_file_range(c->in, &ip, c->out, &op, want, 0);
			if (n < 0) {
				/* EXDEV, EINVAL, ENOSYS... or a real error:
				 * pread/pwrite will tell which side. */
				use_cfr = false;
				continue;
			}
		} else {
			if (!buf && !(buf = malloc(FILE_CHUNK))) {
				c->errnum = ENOMEM;
				res = COPY_READ;
				break;
			}
			n = pread(c->in, buf, want, (off_t)c->pos);
			if (n < 0) {
				if (errno == EINTR)
					continue;
				c->errnum = errno;
				res = COPY_READ;
				break;
			}
			for (ssize_t w = 0; w < n;) {
				ssize_t k = pwrite(c->out, buf + w,
						   (size_t)(n - w),
						   (off_t)c->pos + w);

				if (k < 0 && errno == EINTR)
					continue;
				if (k <= 0) {
					c->errnum = k < 0 ? errno : EIO;
					res = COPY_WRITE;
					goto out;
				}
				w += k;
			}
		}
		if (n == 0) {
			if (c->end != UINT64_MAX)
				res = COPY_SHORT;
			break;
		}
		c->pos += (uint64_t)n;
		if (progress && progress(arg, c->pos) != 0) {
			res = COPY_CANCELLED;
			break;
		}
	}
out:
	free(buf);
	return res;
}

/* ---- operations ---- */

static int file_connect(struct spoolfs_conn *conn, struct spoolfs_error *err)
{
	const char *root = conn->dest->path;
	struct file_conn *fc;

	if (!root || root[0] != '/')
		return spoolfs_error_set(err, SPOOLFS_E_CONFIG,
					 "destination path '%s' is not absolute",
					 root ? root : "");
	fc = calloc(1, sizeof(*fc));
	if (!fc)
		return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
	fc->root = root;
	fc->rootfd = -1;
	fc->require_mount = conn->dest->require_mount;
	if (root_open(fc, err) < 0) {
		free(fc);
		return -1;
	}
	conn->priv = fc;
	return 0;
}

static void file_disconnect(struct spoolfs_conn *conn)
{
	struct file_conn *fc = conn->priv;

	if (!fc)
		return;
	if (fc->rootfd >= 0)
		close(fc->rootfd);
	free(fc);
	conn->priv = NULL;
}

static int file_mkdirs(struct spoolfs_conn *conn, const char *dir,
		       struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	char prefix[PATH_MAX], p1[PATH_MAX], p2[PATH_MAX];
	size_t len = strlen(dir);
	int fd, parent = -1, rc = -1;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(dir))
		return bad_path(err, dir);
	if (len >= sizeof(prefix))
		return fail(fc, err, ENAMETOOLONG,
			    "cannot create directory '%s'",
			    full_path(fc, dir, p1, sizeof(p1)));

	/* The common case: it is already there. */
	fd = open_beneath(fc, dir, O_PATH | O_DIRECTORY, 0);
	if (fd >= 0) {
		close(fd);
		return 0;
	}

	parent = open_beneath(fc, "", O_PATH | O_DIRECTORY, 0);
	if (parent < 0)
		return noroot(fc, err, errno);
	for (size_t i = 0; i <= len; i++) {
		const char *base;

		if (dir[i] != '/' && dir[i] != '\0')
			continue;
		memcpy(prefix, dir, i);
		prefix[i] = '\0';
		base = strrchr(prefix, '/');
		base = base ? base + 1 : prefix;
		if (mkdirat(parent, base, DIR_MODE) < 0 && errno != EEXIST) {
			fail(fc, err, errno, "cannot create directory '%s'",
			     full_path(fc, prefix, p1, sizeof(p1)));
			goto out_close;
		}
		fd = open_beneath(fc, prefix, O_PATH | O_DIRECTORY, 0);
		if (fd < 0 && errno == ENOTDIR) {
			spoolfs_error_set(err, SPOOLFS_E_NAME,
					  "cannot create directory '%s': '%s' "
					  "exists and is not a directory",
					  full_path(fc, dir, p1, sizeof(p1)),
					  full_path(fc, prefix, p2,
						    sizeof(p2)));
			goto out_close;
		}
		if (fd < 0) {
			fail(fc, err, errno, "cannot create directory '%s'",
			     full_path(fc, prefix, p1, sizeof(p1)));
			goto out_close;
		}
		close(parent);
		parent = fd;
	}
	rc = 0;
out_close:
	close(parent);
	return rc;
}

static int file_put(struct spoolfs_conn *conn, const char *path, int fd,
		    uint64_t offset, uint64_t size,
		    spoolfs_progress_fn progress, void *arg,
		    struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	struct copy c = { .in = fd, .pos = offset, .end = size };
	char p[PATH_MAX], rbuf[128];
	struct stat st;
	int flags = O_WRONLY | O_CREAT | (offset == 0 ? O_TRUNC : 0);
	int out;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(path))
		return bad_path(err, path);
	full_path(fc, path, p, sizeof(p));
	out = open_regular(fc, path, flags, FILE_MODE);
	if (out < 0)
		return fail(fc, err, errno, "cannot write '%s'", p);
	c.out = out;

	if (offset > 0) {
		if (fstat(out, &st) < 0) {
			fail(fc, err, errno, "cannot write '%s'", p);
			goto out_close;
		}
		if ((uint64_t)st.st_size < offset) {
			spoolfs_error_set(err, SPOOLFS_E_PROTO,
					  "cannot resume '%s': it holds %llu "
					  "bytes, expected %llu", p,
					  (unsigned long long)st.st_size,
					  (unsigned long long)offset);
			goto out_close;
		}
		if ((uint64_t)st.st_size > offset &&
		    ftruncate(out, (off_t)offset) < 0) {
			fail(fc, err, errno, "cannot write '%s'", p);
			goto out_close;
		}
	}

	switch (copy_data(&c, progress, arg)) {
	case COPY_OK:
		break;
	case COPY_READ:
		spoolfs_error_set(err, SPOOLFS_E_IO,
				  "cannot read local copy of '%s': %s", p,
				  reason(c.errnum, rbuf, sizeof(rbuf)));
		goto out_close;
	case COPY_WRITE:
		fail(fc, err, c.errnum, "cannot write '%s'", p);
		goto out_close;
	case COPY_SHORT:
		spoolfs_error_set(err, SPOOLFS_E_IO,
				  "cannot upload '%s': the local copy ends "
				  "at %llu bytes, expected %llu", p,
				  (unsigned long long)c.pos,
				  (unsigned long long)size);
		goto out_close;
	case COPY_CANCELLED:
		spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
				  "upload of '%s' cancelled at %llu bytes", p,
				  (unsigned long long)c.pos);
		goto out_close;
	}

	if (fsync(out) < 0) {
		fail(fc, err, errno, "cannot write '%s'", p);
		goto out_close;
	}
	if (close(out) < 0)
		return fail(fc, err, errno, "cannot write '%s'", p);
	return 0;

out_close:
	close(out);
	return -1;
}

static int file_stat(struct spoolfs_conn *conn, const char *path,
		     struct spoolfs_rstat *rst, struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	char p[PATH_MAX];
	struct stat st;
	int fd, e;

	if (root_check(fc, err) < 0)
		return -1;
	if (*path && !rel_valid(path))
		return bad_path(err, path);
	fd = open_beneath(fc, path, O_PATH, 0);
	if (fd < 0)
		return fail(fc, err, errno, "cannot stat '%s'",
			    full_path(fc, path, p, sizeof(p)));
	if (fstat(fd, &st) < 0) {
		e = errno;
		close(fd);
		return fail(fc, err, e, "cannot stat '%s'",
			    full_path(fc, path, p, sizeof(p)));
	}
	close(fd);
	rst->size = S_ISREG(st.st_mode) ? (uint64_t)st.st_size : 0;
	rst->mtime = (int64_t)st.st_mtim.tv_sec;
	rst->is_dir = S_ISDIR(st.st_mode);
	return 0;
}

static int file_rename(struct spoolfs_conn *conn, const char *from,
		       const char *to, struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	char pf[PATH_MAX], pt[PATH_MAX];
	const char *fbase, *tbase;
	int fdir, tdir, rc = -1;
	bool sync_dir = true;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(from))
		return bad_path(err, from);
	if (!rel_valid(to))
		return bad_path(err, to);
	full_path(fc, from, pf, sizeof(pf));
	full_path(fc, to, pt, sizeof(pt));

	fdir = open_parent(fc, from, O_PATH, &fbase);
	if (fdir < 0)
		return fail(fc, err, errno, "cannot rename '%s' to '%s'", pf,
			    pt);
	/* Readable, so that it can be fsynced (unless it is a drop box). */
	tdir = open_parent(fc, to, O_RDONLY, &tbase);
	if (tdir < 0 && errno == EACCES) {
		tdir = open_parent(fc, to, O_PATH, &tbase);
		sync_dir = false;
	}
	if (tdir < 0) {
		fail(fc, err, errno, "cannot rename '%s' to '%s'", pf, pt);
		goto out_fdir;
	}
	if (renameat(fdir, fbase, tdir, tbase) < 0) {
		if (errno == EXDEV)
			spoolfs_error_set(err, SPOOLFS_E_UNSUPPORTED,
					  "cannot rename '%s' to '%s': they "
					  "are on different filesystems", pf,
					  pt);
		else
			fail(fc, err, errno, "cannot rename '%s' to '%s'", pf,
			     pt);
		goto out_tdir;
	}
	/* Some filesystems cannot fsync a directory; that is not an error. */
	if (sync_dir && fsync(tdir) < 0 && errno != EINVAL &&
	    errno != ENOTSUP && errno != EROFS) {
		fail(fc, err, errno, "cannot sync directory of '%s'", pt);
		goto out_tdir;
	}
	rc = 0;
out_tdir:
	close(tdir);
out_fdir:
	close(fdir);
	return rc;
}

/* unlinkat(FLAGS) of PATH, "cannot WHAT '...'" when it fails */
static int file_unlink(struct spoolfs_conn *conn, const char *path,
		       int flags, const char *what, struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	const char *base;
	char p[PATH_MAX];
	int dir, rc = 0;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(path))
		return bad_path(err, path);
	full_path(fc, path, p, sizeof(p));
	dir = open_parent(fc, path, O_PATH, &base);
	if (dir < 0)
		return fail(fc, err, errno, "cannot %s '%s'", what, p);
	if (unlinkat(dir, base, flags) < 0)
		rc = fail(fc, err, errno, "cannot %s '%s'", what, p);
	close(dir);
	return rc;
}

static int file_remove(struct spoolfs_conn *conn, const char *path,
		       struct spoolfs_error *err)
{
	return file_unlink(conn, path, 0, "delete", err);
}

static int file_rmdir(struct spoolfs_conn *conn, const char *dir,
		      struct spoolfs_error *err)
{
	return file_unlink(conn, dir, AT_REMOVEDIR, "remove directory", err);
}

static int file_set_mtime(struct spoolfs_conn *conn, const char *path,
			  int64_t mtime, struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	const struct timespec ts[2] = {
		{ .tv_sec = 0, .tv_nsec = UTIME_OMIT },
		{ .tv_sec = (time_t)mtime, .tv_nsec = 0 },
	};
	const char *base;
	char p[PATH_MAX];
	int dir, rc = 0;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(path))
		return bad_path(err, path);
	full_path(fc, path, p, sizeof(p));
	dir = open_parent(fc, path, O_PATH, &base);
	if (dir < 0)
		return fail(fc, err, errno, "cannot set mtime of '%s'", p);
	/* NOFOLLOW: a final symlink could point outside the root. */
	if (utimensat(dir, base, ts, AT_SYMLINK_NOFOLLOW) < 0)
		rc = fail(fc, err, errno, "cannot set mtime of '%s'", p);
	close(dir);
	return rc;
}

static int file_get(struct spoolfs_conn *conn, const char *path, int fd,
		    spoolfs_progress_fn progress, void *arg,
		    struct spoolfs_error *err)
{
	struct file_conn *fc = conn->priv;
	struct copy c = { .out = fd, .pos = 0, .end = UINT64_MAX };
	char p[PATH_MAX], rbuf[128];
	int in, rc = -1;

	if (root_check(fc, err) < 0)
		return -1;
	if (!rel_valid(path))
		return bad_path(err, path);
	full_path(fc, path, p, sizeof(p));
	in = open_regular(fc, path, O_RDONLY, 0);
	if (in < 0)
		return fail(fc, err, errno, "cannot read '%s'", p);
	c.in = in;
	switch (copy_data(&c, progress, arg)) {
	case COPY_OK:
	case COPY_SHORT:
		rc = 0;
		break;
	case COPY_READ:
		fail(fc, err, c.errnum, "cannot read '%s'", p);
		break;
	case COPY_WRITE:
		spoolfs_error_set(err, SPOOLFS_E_IO,
				  "cannot write local copy of '%s': %s", p,
				  reason(c.errnum, rbuf, sizeof(rbuf)));
		break;
	case COPY_CANCELLED:
		spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
				  "download of '%s' cancelled at %llu bytes",
				  p, (unsigned long long)c.pos);
		break;
	}
	close(in);
	return rc;
}

const struct spoolfs_backend spoolfs_backend_file = {
	.scheme = "file",
	.default_port = 0,
	.caps = SPOOLFS_CAP_RESUME | SPOOLFS_CAP_MTIME,
	.connect = file_connect,
	.disconnect = file_disconnect,
	.mkdirs = file_mkdirs,
	.put = file_put,
	.stat = file_stat,
	.rename = file_rename,
	.remove = file_remove,
	.rmdir = file_rmdir,
	.set_mtime = file_set_mtime,
	.get = file_get,
};
