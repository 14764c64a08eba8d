/*
 * fuse_floor.c - the FUSE floor for benchmarks/run: the least a libfuse 3
 * high-level filesystem does to store files in a local directory.
 *
 *   fuse_floor [--fsync] BACKING_DIR MOUNTPOINT [-f] [-o opts]
 *
 * It speaks to the kernel like spoolfs does (high-level API, multithreaded
 * loop, same fuse_config timeouts, 1 MiB st_blksize for files so that cp
 * writes 1 MiB at a time, splice read wanted, write_buf into the
 * file, getxattr answering ENODATA so the kernel keeps asking for
 * security.capability on every first write), but keeps no journal, no queue
 * and never fsyncs.  The difference between spoolfs (fsync=never) and this
 * is what spoolfs itself costs; the difference between this and a plain
 * directory is what FUSE costs.  With --fsync every close() of a file
 * written to waits for an fdatasync of it, as close() into spoolfs does
 * with fsync=close (but with no journal commit after it), and, as spoolfs
 * does, the disk is told to start writing every MiB as it arrives, so
 * that close() has little left to wait for: the least a FUSE spool with a
 * durable close can cost.  A benchmark fixture, not part of spoolfs.
 */
#define FUSE_USE_VERSION 35
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <fuse.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

static int rootfd = -1;
static int durable;		/* --fsync */
/* By descriptor, for --fsync: written since its last flush (only those
 * are synced), and bytes written since the disk was last told to start
 * writing. */
#define FD_SLOTS (1 << 16)
static unsigned char dirty[FD_SLOTS];
static unsigned unkicked[FD_SLOTS];
#define KICK_BYTES (1u << 20)	/* spool.c's */

static void mark_dirty(int fd, size_t written)
{
	if (!durable || fd < 0 || fd >= FD_SLOTS)
		return;
	__atomic_store_n(&dirty[fd], 1, __ATOMIC_RELAXED);
	/* one writer per file in a benchmark: no lock needed for a hint */
	unkicked[fd] += (unsigned)written;
	if (unkicked[fd] >= KICK_BYTES) {
		unkicked[fd] = 0;
		(void)sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
	}
}

static const char *rel(const char *path)
{
	return (!path || !path[1]) ? "." : path + 1;
}

static void *ff_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	cfg->use_ino = 0;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
	cfg->negative_timeout = 0.0;
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	return NULL;
}

static int ff_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	int rc = (fi && fi->fh) ? fstat((int)fi->fh, st)
				: fstatat(rootfd, rel(path), st,
					  AT_SYMLINK_NOFOLLOW);

	if (rc < 0)
		return -errno;
	if (S_ISREG(st->st_mode))
		st->st_blksize = 1 << 20;	/* as spoolfs: cp writes 1 MiB */
	return 0;
}

static int ff_readdir(const char *path, void *buf, fuse_fill_dir_t fill,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	int fd = openat(rootfd, rel(path), O_RDONLY | O_DIRECTORY);
	DIR *d;
	struct dirent *e;

	(void)off;
	(void)fi;
	(void)flags;
	if (fd < 0)
		return -errno;
	d = fdopendir(fd);
	if (!d) {
		close(fd);
		return -ENOMEM;
	}
	while ((e = readdir(d)))
		fill(buf, e->d_name, NULL, 0, 0);
	closedir(d);
	return 0;
}

static int ff_mkdir(const char *path, mode_t mode)
{
	return mkdirat(rootfd, rel(path), mode) < 0 ? -errno : 0;
}

static int ff_unlink(const char *path)
{
	return unlinkat(rootfd, rel(path), 0) < 0 ? -errno : 0;
}

static int ff_rmdir(const char *path)
{
	return unlinkat(rootfd, rel(path), AT_REMOVEDIR) < 0 ? -errno : 0;
}

static int ff_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int rc = (fi && fi->fh) ? fchmod((int)fi->fh, mode)
				: fchmodat(rootfd, rel(path), mode, 0);

	return rc < 0 ? -errno : 0;
}

static int ff_chown(const char *path, uid_t u, gid_t g,
		    struct fuse_file_info *fi)
{
	(void)path;
	(void)u;
	(void)g;
	(void)fi;
	return 0;
}

static int ff_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	int rc = (fi && fi->fh) ? futimens((int)fi->fh, tv)
				: utimensat(rootfd, rel(path), tv, 0);

	return rc < 0 ? -errno : 0;
}

static int ff_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	int rc;

	if (fi && fi->fh)
		rc = ftruncate((int)fi->fh, size);
	else {
		int fd = openat(rootfd, rel(path), O_WRONLY);

		if (fd < 0)
			return -errno;
		rc = ftruncate(fd, size);
		close(fd);
	}
	return rc < 0 ? -errno : 0;
}

static int ff_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	int fd = openat(rootfd, rel(path), fi->flags | O_CREAT | O_CLOEXEC, mode);

	if (fd < 0)
		return -errno;
	mark_dirty(fd, 0);
	fi->fh = (uint64_t)fd;
	return 0;
}

static int ff_open(const char *path, struct fuse_file_info *fi)
{
	int fd = openat(rootfd, rel(path), fi->flags | O_CLOEXEC);

	if (fd < 0)
		return -errno;
	fi->fh = (uint64_t)fd;
	return 0;
}

static int ff_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	ssize_t r = pread((int)fi->fh, buf, size, off);

	(void)path;
	return r < 0 ? -errno : (int)r;
}

static int ff_write_buf(const char *path, struct fuse_bufvec *src, off_t off,
			struct fuse_file_info *fi)
{
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(fuse_buf_size(src));
	ssize_t w;

	(void)path;
	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	dst.buf[0].fd = (int)fi->fh;
	dst.buf[0].pos = off;
	w = fuse_buf_copy(&dst, src, FUSE_BUF_SPLICE_NONBLOCK);
	if (w > 0)
		mark_dirty((int)fi->fh, (size_t)w);
	return (int)w;
}

static int ff_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	ssize_t w = pwrite((int)fi->fh, buf, size, off);

	(void)path;
	if (w > 0)
		mark_dirty((int)fi->fh, (size_t)w);
	return w < 0 ? -errno : (int)w;
}

static int ff_flush(const char *path, struct fuse_file_info *fi)
{
	int fd = (int)fi->fh;

	(void)path;
	if (!durable || fd < 0 || fd >= FD_SLOTS)
		return 0;
	unkicked[fd] = 0;
	if (!__atomic_exchange_n(&dirty[fd], 0, __ATOMIC_RELAXED))
		return 0;
	return fdatasync(fd) < 0 ? -errno : 0;
}

static int ff_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	close((int)fi->fh);
	return 0;
}

static int ff_fsync(const char *path, int ds, struct fuse_file_info *fi)
{
	(void)path;
	return (ds ? fdatasync((int)fi->fh) : fsync((int)fi->fh)) < 0 ? -errno : 0;
}

static int ff_statfs(const char *path, struct statvfs *s)
{
	(void)path;
	return fstatvfs(rootfd, s) < 0 ? -errno : 0;
}

static int ff_getxattr(const char *path, const char *name, char *value,
		       size_t size)
{
	(void)path;
	(void)name;
	(void)value;
	(void)size;
	return -ENODATA;	/* like spoolfs: it has xattrs, not this one */
}

static const struct fuse_operations ops = {
	.init = ff_init,
	.getattr = ff_getattr,
	.readdir = ff_readdir,
	.mkdir = ff_mkdir,
	.unlink = ff_unlink,
	.rmdir = ff_rmdir,
	.chmod = ff_chmod,
	.chown = ff_chown,
	.utimens = ff_utimens,
	.truncate = ff_truncate,
	.create = ff_create,
	.open = ff_open,
	.read = ff_read,
	.write = ff_write,
	.write_buf = ff_write_buf,
	.flush = ff_flush,
	.release = ff_release,
	.fsync = ff_fsync,
	.statfs = ff_statfs,
	.getxattr = ff_getxattr,
};

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--fsync") == 0) {
		durable = 1;
		argv[1] = argv[0];
		argc--;
		argv++;
	}
	if (argc < 3) {
		fprintf(stderr, "usage: fuse_floor [--fsync] BACKING_DIR "
			"MOUNTPOINT [fuse options]\n");
		return 2;
	}
	rootfd = open(argv[1], O_RDONLY | O_DIRECTORY | O_CLOEXEC);
	if (rootfd < 0) {
		perror(argv[1]);
		return 1;
	}
	argv[1] = argv[0];
	return fuse_main(argc - 1, argv + 1, &ops, NULL);
}
