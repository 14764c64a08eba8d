/*
 * fs.c - the FUSE operation table: a thin adapter from libfuse's path-based
 * API onto the spool core.  Everything that decides anything lives in
 * spool/; this file only unpacks arguments, picks the handle and passes
 * the result back.
 *
 * hard_remove is on: libfuse's default of renaming an unlinked open file to
 * .fuse_hidden* would look like a rename to the spool (and upload one).
 * With it, an unlinked open file is reached through its handle only
 * (nullpath_ok), which is why every op that gets a fuse_file_info prefers
 * the handle.
 *
 * The mount root also holds two read-only virtual files, .status (a table
 * for people) and .status.json (for scripts), rendered by
 * spool/status_render.c from a snapshot the spool takes at open(); see the
 * STATUS FILES comment below.  The root xattr user.spoolfs.spool names the
 * spool directory, so `spoolfs status` can find the mount of its spool.
 */
#include "fs.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../spool/status_render.h"

#define SPLICE_MAX_WRITE ((1u << 20) - 4096)

static struct fs_ctx *ctx(void)
{
	return fuse_get_context()->private_data;
}

static struct spool *sp(void)
{
	return ctx()->sp;
}

/*
 * fi->fh holds a struct spool_handle * for files and, tagged with the low
 * bit (malloc'd pointers are aligned), a copy of the path for directories:
 * with nullpath_ok, readdir is not given the path again.  Bit 1 tags a
 * struct status_file (an open .status or .status.json).
 */
#define FH_DIR 1u
#define FH_STATUS 2u
#define FH_TAGS 3u

static struct spool_handle *handle(const struct fuse_file_info *fi)
{
	if (!fi || (fi->fh & FH_TAGS))
		return NULL;
	return (struct spool_handle *)(uintptr_t)fi->fh;
}

/*
 * STATUS FILES.  MOUNT/.status and MOUNT/.status.json are generated at
 * open(): the open takes one snapshot (spool_status_snapshot, under the
 * spool lock), renders it, and every read of that descriptor serves the
 * same bytes, so `cat`, `less`, a Python read() or `jq <` see one
 * consistent document however they chunk their reads.
 *
 * They are opened with direct_io: the kernel neither caches their pages
 * nor clamps reads at the size it last saw, so a stat by path can honestly
 * say size 0 (like /proc: the content does not exist until opened) and a
 * reader still gets everything until read() returns 0.  Generating at
 * getattr instead would render twice per cat (getattr, then open) and the
 * size stat printed could still differ from what open gets.  An fstat() of
 * the open descriptor (when the kernel asks) gets the snapshot's real size.
 */
struct status_file {
	char *buf;
	size_t len;
};

enum status_kind { STATUS_NONE, STATUS_TEXT, STATUS_JSON };

static enum status_kind status_kind(const char *path)
{
	if (!path)
		return STATUS_NONE;
	while (*path == '/' && path[1] == '/')
		path++;
	if (strcmp(path, "/.status") == 0)
		return STATUS_TEXT;
	if (strcmp(path, "/.status.json") == 0)
		return STATUS_JSON;
	return STATUS_NONE;
}

static struct status_file *status_handle(const struct fuse_file_info *fi)
{
	if (!fi || (fi->fh & FH_TAGS) != FH_STATUS)
		return NULL;
	return (struct status_file *)(uintptr_t)(fi->fh & ~(uint64_t)FH_TAGS);
}

static bool is_root_path(const char *path)
{
	return path && path[strspn(path, "/")] == '\0' && *path;
}

static void status_stat(struct stat *st, size_t size)
{
	struct timespec now;

	clock_gettime(CLOCK_REALTIME, &now);
	memset(st, 0, sizeof(*st));
	st->st_mode = S_IFREG | 0444;
	st->st_nlink = 1;
	st->st_uid = getuid();
	st->st_gid = getgid();
	st->st_size = (off_t)size;
	st->st_blksize = 4096;
	st->st_mtim = st->st_ctim = st->st_atim = now;
}

static int status_open(enum status_kind kind, struct fuse_file_info *fi)
{
	struct spool_status snap;
	struct status_file *f;
	int rc;

	if ((fi->flags & O_ACCMODE) != O_RDONLY || (fi->flags & O_TRUNC))
		return -EACCES;
	f = calloc(1, sizeof(*f));
	if (!f)
		return -ENOMEM;
	rc = spool_status_snapshot(sp(), &snap);
	if (rc < 0) {
		free(f);
		return rc;
	}
	f->buf = kind == STATUS_JSON ? spool_status_render_json(&snap) :
		 spool_status_render_text(&snap);
	spool_status_release(&snap);
	if (!f->buf) {
		free(f);
		return -ENOMEM;
	}
	f->len = strlen(f->buf);
	fi->direct_io = 1;
	fi->keep_cache = 0;
	fi->nonseekable = 0;
	fi->fh = (uintptr_t)f | FH_STATUS;
	return 0;
}

static int status_read(struct status_file *f, char *buf, size_t size,
		       off_t off)
{
	if (off < 0)
		return -EINVAL;
	if ((uint64_t)off >= f->len)
		return 0;
	if (size > f->len - (size_t)off)
		size = f->len - (size_t)off;
	if (size > INT_MAX)
		size = INT_MAX;
	memcpy(buf, f->buf + off, size);
	return (int)size;
}

static void status_release(struct status_file *f)
{
	if (!f)
		return;
	free(f->buf);
	free(f);
}

static const char *dir_path(const struct fuse_file_info *fi)
{
	if (!fi || (fi->fh & FH_TAGS) != FH_DIR)
		return NULL;
	return (const char *)(uintptr_t)(fi->fh & ~(uint64_t)FH_TAGS);
}

/*
 * The daemon moved PATH away on its own: drop the attributes the kernel
 * caches for it (attr_timeout), so stat(PATH) asks again and gets ENOENT
 * now rather than up to a second later.
 */
void fs_invalidate(void *arg, const char *path)
{
	(void)fuse_invalidate_path(arg, path);	/* -ENOENT: not cached */
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_ctx *c = ctx();

	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	cfg->use_ino = 0;
	/* entry_timeout and attr_timeout stay libfuse's (1 s, or what -o
	 * says); negative_timeout 0: a file that moves into .failed/ must
	 * show up at once */
	cfg->negative_timeout = 0.0;
	/*
	 * libfuse splices a write from /dev/fuse only when its pipe holds a
	 * whole request (max_write + one page of header); an unprivileged
	 * pipe grows to fs.pipe-max-size, 1 MiB by default.  Past that it
	 * silently copies every byte through user space instead.
	 */
	if (conn->max_write > SPLICE_MAX_WRITE)
		conn->max_write = SPLICE_MAX_WRITE;
	if (c->conn_opts)
		fuse_apply_conn_info_opts(c->conn_opts, conn);
	/* splice the written pages from /dev/fuse straight into the spool */
	if (conn->capable & FUSE_CAP_SPLICE_READ)
		conn->want |= FUSE_CAP_SPLICE_READ;
	return c;
}

static int fs_getattr(const char *path, struct stat *st,
		      struct fuse_file_info *fi)
{
	if (status_handle(fi)) {
		status_stat(st, status_handle(fi)->len);
		return 0;
	}
	if (status_kind(path)) {
		status_stat(st, 0);
		return 0;
	}
	if (!path && handle(fi))
		return spool_handle_getattr(handle(fi), st);
	if (!path)
		path = dir_path(fi);
	return path ? spool_getattr(sp(), path, st) : -ENOENT;
}

struct fill_ctx {
	void *buf;
	fuse_fill_dir_t filler;
};

static int fill_one(void *arg, const char *name, const struct stat *st)
{
	struct fill_ctx *fc = arg;

	return fc->filler(fc->buf, name, st, 0, 0);
}

static int fs_readdir(const char *path, void *buf, fuse_fill_dir_t filler,
		      off_t off, struct fuse_file_info *fi,
		      enum fuse_readdir_flags flags)
{
	struct fill_ctx fc = { buf, filler };
	struct stat st;
	int rc;

	(void)off;
	(void)flags;
	if (!path)
		path = dir_path(fi);
	if (!path)
		return -ENOENT;
	rc = spool_readdir(sp(), path, fill_one, &fc);
	if (rc == 0 && is_root_path(path)) {
		status_stat(&st, 0);
		filler(buf, ".status", &st, 0, 0);
		filler(buf, ".status.json", &st, 0, 0);
	}
	return rc;
}

static int fs_opendir(const char *path, struct fuse_file_info *fi)
{
	struct stat st;
	char *copy;
	int rc;

	rc = spool_getattr(sp(), path, &st);
	if (rc < 0)
		return rc;
	if (!S_ISDIR(st.st_mode))
		return -ENOTDIR;
	copy = strdup(path);
	if (!copy)
		return -ENOMEM;
	fi->fh = (uintptr_t)copy | FH_DIR;
	return 0;
}

static int fs_releasedir(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	free((void *)dir_path(fi));
	return 0;
}

static int fs_mkdir(const char *path, mode_t mode)
{
	struct fuse_context *fc = fuse_get_context();

	return spool_mkdir(sp(), path, mode & ~fc->umask, fc->uid, fc->gid);
}

static int fs_rmdir(const char *path)
{
	return spool_rmdir(sp(), path);
}

static int fs_unlink(const char *path)
{
	if (status_kind(path))
		return -EACCES;
	return spool_unlink(sp(), path);
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	if (status_kind(from) || status_kind(to))
		return -EACCES;
	return spool_rename(sp(), from, to, flags);
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (status_kind(path) || status_handle(fi))
		return -EACCES;
	if (!path)
		return fi ? 0 : -ENOENT;	/* unlinked: nothing to keep */
	return spool_chmod(sp(), path, mode);
}

static int fs_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	if (status_kind(path) || status_handle(fi))
		return -EACCES;
	if (!path)
		return fi ? 0 : -ENOENT;
	return spool_chown(sp(), path, uid, gid);
}

static int fs_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	if (status_kind(path) || status_handle(fi))
		return -EACCES;
	if (!path)
		return fi ? 0 : -ENOENT;
	return spool_utimens(sp(), path, tv);
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
	if (status_kind(path) || status_handle(fi))
		return -EACCES;
	return spool_truncate(sp(), path, handle(fi), size);
}

static int fs_statfs(const char *path, struct statvfs *st)
{
	(void)path;
	return spool_statfs(sp(), st);
}

static int fs_create(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	struct fuse_context *fc = fuse_get_context();
	struct spool_handle *h;
	int rc;

	if (status_kind(path))
		return -EACCES;
	rc = spool_create(sp(), path, mode & ~fc->umask, fc->uid, fc->gid,
			  fi->flags, &h);
	if (rc == 0)
		fi->fh = (uintptr_t)h;
	return rc;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct spool_handle *h;
	enum status_kind kind = status_kind(path);
	int rc;

	if (kind)
		return status_open(kind, fi);
	rc = spool_open_file(sp(), path, fi->flags, &h);
	if (rc == 0)
		fi->fh = (uintptr_t)h;
	return rc;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)path;
	if (status_handle(fi))
		return status_read(status_handle(fi), buf, size, off);
	return (int)spool_read(handle(fi), buf, size, off);
}

static int fs_write(const char *path, const char *buf, size_t size, off_t off,
		    struct fuse_file_info *fi)
{
	(void)path;
	return (int)spool_write(handle(fi), buf, size, off);
}

static int fs_write_buf(const char *path, struct fuse_bufvec *src, off_t off,
			struct fuse_file_info *fi)
{
	struct spool_handle *h = handle(fi);
	size_t size = fuse_buf_size(src);
	struct fuse_bufvec dst = FUSE_BUFVEC_INIT(size);
	ssize_t w;
	int rc;

	(void)path;
	rc = spool_write_begin(h, size, off);
	if (rc < 0)
		return rc;
	dst.buf[0].flags = FUSE_BUF_IS_FD | FUSE_BUF_FD_SEEK;
	dst.buf[0].fd = spool_handle_fd(h);
	dst.buf[0].pos = off;
	w = fuse_buf_copy(&dst, src, FUSE_BUF_SPLICE_NONBLOCK);
	spool_write_end(h, size, w, off);
	return (int)w;
}

static int fs_flush(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (status_handle(fi))
		return 0;
	return spool_flush(handle(fi));
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	if (status_handle(fi))
		return 0;
	return spool_fsync(handle(fi), datasync);
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	if (status_handle(fi))
		status_release(status_handle(fi));
	else
		spool_release(handle(fi));
	return 0;
}

#define ROOT_XATTR "user.spoolfs.spool"

static int fs_getxattr(const char *path, const char *name, char *value,
		       size_t size)
{
	const char *dir;
	size_t len;

	if (!path || status_kind(path))
		return -ENODATA;
	if (is_root_path(path)) {
		/* the spool directory: how `spoolfs status` finds its mount */
		if (strcmp(name, ROOT_XATTR) != 0)
			return -ENODATA;
		dir = spool_dir(sp());
		len = strlen(dir);
		if (size == 0)
			return (int)len;
		if (size < len)
			return -ERANGE;
		memcpy(value, dir, len);
		return (int)len;
	}
	return spool_getxattr(sp(), path, name, value, size);
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
	if (!path || status_kind(path))
		return 0;
	if (is_root_path(path)) {
		if (size == 0)
			return (int)sizeof(ROOT_XATTR);
		if (size < sizeof(ROOT_XATTR))
			return -ERANGE;
		memcpy(list, ROOT_XATTR, sizeof(ROOT_XATTR));
		return (int)sizeof(ROOT_XATTR);
	}
	return spool_listxattr(sp(), path, list, size);
}

static int fs_setxattr(const char *path, const char *name, const char *value,
		       size_t size, int flags)
{
	(void)path;
	(void)name;
	(void)value;
	(void)size;
	(void)flags;
	return -ENOTSUP;
}

static int fs_removexattr(const char *path, const char *name)
{
	(void)path;
	(void)name;
	return -ENOTSUP;
}

/* Links and device nodes cannot be uploaded anywhere. */
static int fs_symlink(const char *target, const char *path)
{
	(void)target;
	(void)path;
	return -EPERM;
}

static int fs_link(const char *from, const char *to)
{
	(void)from;
	(void)to;
	return -EPERM;
}

static int fs_mknod(const char *path, mode_t mode, dev_t dev)
{
	(void)path;
	(void)mode;
	(void)dev;
	return -EPERM;
}

const struct fuse_operations spoolfs_fs_ops = {
	.init = fs_init,
	.getattr = fs_getattr,
	.opendir = fs_opendir,
	.readdir = fs_readdir,
	.releasedir = fs_releasedir,
	.mkdir = fs_mkdir,
	.rmdir = fs_rmdir,
	.unlink = fs_unlink,
	.rename = fs_rename,
	.chmod = fs_chmod,
	.chown = fs_chown,
	.utimens = fs_utimens,
	.truncate = fs_truncate,
	.statfs = fs_statfs,
	.create = fs_create,
	.open = fs_open,
	.read = fs_read,
	.write = fs_write,
	.write_buf = fs_write_buf,
	.flush = fs_flush,
	.fsync = fs_fsync,
	.release = fs_release,
	.getxattr = fs_getxattr,
	.listxattr = fs_listxattr,
	.setxattr = fs_setxattr,
	.removexattr = fs_removexattr,
	.symlink = fs_symlink,
	.link = fs_link,
	.mknod = fs_mknod,
};
