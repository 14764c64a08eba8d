/*
 * fs.h - the FUSE side: the operation table that maps FUSE calls onto the
 * spool core (spool/spool.h).
 */
#ifndef SPOOLFS_FS_H
#define SPOOLFS_FS_H

#include <fuse.h>

#include "../spool/spool.h"

/* What the operations reach through fuse_get_context()->private_data. */
struct fs_ctx {
	struct spool *sp;
	struct fuse_conn_info_opts *conn_opts;
};

extern const struct fuse_operations spoolfs_fs_ops;

/* spool_inval_fn for spool_set_inval(): ARG is the struct fuse. */
void fs_invalidate(void *arg, const char *path);

#endif
