/*
 * spool.h - the filesystem core: namespace, local content, upload state.
 *
 * fs/ is a thin adapter from FUSE to these calls.  Paths are the mount's
 * own paths ("/", "/nas", "/nas/a/b.jpg", "/nas/.failed/a/b.jpg",
 * "/nas/.pending/a").  Every call returns 0 (or a byte count) on success
 * and a negative errno on failure, ready for FUSE.
 *
 * What the calls mean (close, fsync, rename, rm, .failed) is written down in
 * docs/SEMANTICS.md; the integration tests check those claims.
 */
#ifndef SPOOL_SPOOL_H
#define SPOOL_SPOOL_H

#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <sys/types.h>

#include "../common/config.h"

struct spool;
struct spool_handle;

/*
 * Open the spool directory of CFG: lock it against a second daemon, open
 * the journal, recover from a crash (uploading -> queued; files still open
 * for writing -> .failed/ as incomplete) and build the tree.  Starts no
 * thread.  On failure returns -1 with a message in errbuf.
 */
int spool_open(struct spool **sp, const struct spoolfs_config *cfg,
	       char *errbuf, size_t errlen);
/*
 * FN(ARG, PATH) is called, from an upload worker and without any spool
 * lock held, for every mount path the daemon itself moved away (a file
 * that failed for good goes to .failed/), so that the kernel forgets what
 * it cached about PATH.  Set before spool_start().
 */
typedef void (*spool_inval_fn)(void *arg, const char *path);
void spool_set_inval(struct spool *sp, spool_inval_fn fn, void *arg);

/* Start the upload workers. */
int spool_start(struct spool *sp, char *errbuf, size_t errlen);
/* Stop the workers (interrupted uploads resume next time) and forget the
 * spool_set_inval() callback: call it before what that callback uses goes
 * away.  spool_close() does it too.  NULL ok. */
void spool_stop(struct spool *sp);
/* Stop workers (interrupted uploads resume next time), close.  NULL ok. */
void spool_close(struct spool *sp);

typedef int (*spool_fill_fn)(void *ctx, const char *name,
			     const struct stat *st);

int spool_getattr(struct spool *sp, const char *path, struct stat *st);
int spool_readdir(struct spool *sp, const char *path, spool_fill_fn fill,
		  void *ctx);
int spool_mkdir(struct spool *sp, const char *path, mode_t mode, uid_t uid,
		gid_t gid);
int spool_rmdir(struct spool *sp, const char *path);
int spool_unlink(struct spool *sp, const char *path);
/* flags: 0 or RENAME_NOREPLACE. */
int spool_rename(struct spool *sp, const char *from, const char *to,
		 unsigned int flags);
int spool_chmod(struct spool *sp, const char *path, mode_t mode);
int spool_chown(struct spool *sp, const char *path, uid_t uid, gid_t gid);
/* tv[1] is the mtime; UTIME_NOW / UTIME_OMIT as in utimensat. */
int spool_utimens(struct spool *sp, const char *path,
		  const struct timespec tv[2]);
/* h may be NULL (truncate by path). */
int spool_truncate(struct spool *sp, const char *path,
		   struct spool_handle *h, off_t size);
int spool_statfs(struct spool *sp, struct statvfs *st);

int spool_create(struct spool *sp, const char *path, mode_t mode, uid_t uid,
		 gid_t gid, int flags, struct spool_handle **hp);
int spool_open_file(struct spool *sp, const char *path, int flags,
		    struct spool_handle **hp);
ssize_t spool_read(struct spool_handle *h, char *buf, size_t size, off_t off);
ssize_t spool_write(struct spool_handle *h, const char *buf, size_t size,
		    off_t off);
/*
 * Zero-copy writes: spool_write_begin() checks quota and marks the file
 * changed, then the caller writes up to size bytes at off into
 * spool_handle_fd() itself and reports what it wrote with spool_write_end().
 */
int spool_write_begin(struct spool_handle *h, size_t size, off_t off);
void spool_write_end(struct spool_handle *h, size_t reserved, ssize_t written,
		     off_t off);
int spool_handle_fd(const struct spool_handle *h);
/* fstat() of an open file, also after it was unlinked. */
int spool_handle_getattr(struct spool_handle *h, struct stat *st);
/* close(): when the file was written, fsync it and queue it durably. */
int spool_flush(struct spool_handle *h);
int spool_fsync(struct spool_handle *h, int datasync);
void spool_release(struct spool_handle *h);

int spool_getxattr(struct spool *sp, const char *path, const char *name,
		   char *buf, size_t size);
int spool_listxattr(struct spool *sp, const char *path, char *buf,
		    size_t size);

/*
 * Status (status.c).  spool_status_snapshot() copies, under the lock, what
 * MOUNT/.status shows: per destination counts and bytes by state, uploads
 * in flight with progress, rate and ETA, health, spool use.  Release with
 * spool_status_release(); render with status_render.h.
 */
struct spool_status;
int spool_status_snapshot(struct spool *sp, struct spool_status *st);
/* The spool directory, as configured. */
const char *spool_dir(const struct spool *sp);

#endif
