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
 */
#include "fs.h"

#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

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
 * with nullpath_ok, readdir is not given the path again.
 */
static struct spool_handle *handle(const struct fuse_file_info *fi)
{
	if (!fi || (fi->fh & 1))
		return NULL;
	return (struct spool_handle *)(uintptr_t)fi->fh;
}

static const char *dir_path(const struct fuse_file_info *fi)
{
	if (!fi || !(fi->fh & 1))
		return NULL;
	return (const char *)(uintptr_t)(fi->fh & ~(uint64_t)1);
}

static void *fs_init(struct fuse_conn_info *conn, struct fuse_config *cfg)
{
	struct fs_ctx *c = ctx();

	cfg->hard_remove = 1;
	cfg->nullpath_ok = 1;
	cfg->use_ino = 0;
	cfg->entry_timeout = 1.0;
	cfg->attr_timeout = 1.0;
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

	(void)off;
	(void)flags;
	if (!path)
		path = dir_path(fi);
	return path ? spool_readdir(sp(), path, fill_one, &fc) : -ENOENT;
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
	fi->fh = (uintptr_t)copy | 1;
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
	return spool_unlink(sp(), path);
}

static int fs_rename(const char *from, const char *to, unsigned int flags)
{
	return spool_rename(sp(), from, to, flags);
}

static int fs_chmod(const char *path, mode_t mode, struct fuse_file_info *fi)
{
	if (!path)
		return fi ? 0 : -ENOENT;	/* unlinked: nothing to keep */
	return spool_chmod(sp(), path, mode);
}

static int fs_chown(const char *path, uid_t uid, gid_t gid,
		    struct fuse_file_info *fi)
{
	if (!path)
		return fi ? 0 : -ENOENT;
	return spool_chown(sp(), path, uid, gid);
}

static int fs_utimens(const char *path, const struct timespec tv[2],
		      struct fuse_file_info *fi)
{
	if (!path)
		return fi ? 0 : -ENOENT;
	return spool_utimens(sp(), path, tv);
}

static int fs_truncate(const char *path, off_t size, struct fuse_file_info *fi)
{
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

	rc = spool_create(sp(), path, mode & ~fc->umask, fc->uid, fc->gid,
			  fi->flags, &h);
	if (rc == 0)
		fi->fh = (uintptr_t)h;
	return rc;
}

static int fs_open(const char *path, struct fuse_file_info *fi)
{
	struct spool_handle *h;
	int rc;

	rc = spool_open_file(sp(), path, fi->flags, &h);
	if (rc == 0)
		fi->fh = (uintptr_t)h;
	return rc;
}

static int fs_read(const char *path, char *buf, size_t size, off_t off,
		   struct fuse_file_info *fi)
{
	(void)path;
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
	return spool_flush(handle(fi));
}

static int fs_fsync(const char *path, int datasync, struct fuse_file_info *fi)
{
	(void)path;
	return spool_fsync(handle(fi), datasync);
}

static int fs_release(const char *path, struct fuse_file_info *fi)
{
	(void)path;
	spool_release(handle(fi));
	return 0;
}

static int fs_getxattr(const char *path, const char *name, char *value,
		       size_t size)
{
	if (!path)
		return -ENODATA;
	return spool_getxattr(sp(), path, name, value, size);
}

static int fs_listxattr(const char *path, char *list, size_t size)
{
	if (!path)
		return 0;
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
