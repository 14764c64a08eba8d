/*
 * backend.h - one small table of operations per upload protocol.
 *
 * A backend knows how to talk to one kind of destination (file, sftp, ftp,
 * ftps) and nothing else: no FUSE, no sqlite, no retry policy.  The spool's
 * workers each hold one connection (struct spoolfs_conn) and drive it through
 * the wrappers below; nothing calls the function pointers directly.
 *
 * Paths handed to a backend are RELATIVE to the destination's root (the URL
 * path): '/'-separated, no leading '/', no "." or ".." or empty components,
 * "" meaning the root itself.  The spool has already checked them.  The
 * backend joins them onto the root its own way (curl's rules: sftp://h/x is
 * /x, sftp://h/~/x is x under the login directory, ftp://h/x is x under the
 * FTP login directory).
 *
 * Every operation returns 0 on success or -1 after filling *err with a code
 * (which decides retry versus failure) and a lowercase message that names
 * what failed and, where it helps, the server's own words.  Messages never
 * contain a password.
 *
 * Threads: a connection is used by one thread at a time.  Different
 * connections of the same backend run in parallel, so backends keep no
 * unguarded global state.
 */
#ifndef SPOOLFS_BACKEND_H
#define SPOOLFS_BACKEND_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#include "../common/config.h"
#include "../common/err.h"

/* Capability bits. */
#define SPOOLFS_CAP_RESUME	(1u << 0)	/* put() at offset > 0 appends */
#define SPOOLFS_CAP_MTIME	(1u << 1)	/* set_mtime() works */
#define SPOOLFS_CAP_HASH	(1u << 2)	/* a server-side hash can be checked */
/*
 * put() of at least SPOOLFS_SPLIT_MIN bytes to a destination without
 * max_rate may send parts of the range over more than one connection at
 * once: until it has returned 0, PATH may hold bytes beyond a gap, so its
 * size says nothing about what is there.  Such a put reports as progress
 * only the bytes from its offset on that the server holds without a gap,
 * and a put at offset > 0 writes from there on over whatever PATH holds
 * beyond it: an interrupted put is resumed from its last progress, never
 * from the size.
 */
#define SPOOLFS_CAP_SPLIT	(1u << 3)
#define SPOOLFS_SPLIT_MIN	(64ull << 20)

struct spoolfs_conn {
	const struct spoolfs_backend *backend;
	const struct spoolfs_dest *dest;
	void *priv;			/* the backend's own state */
};

/*
 * Progress callback: called by put() and get() with the total number of bytes
 * of the file transferred so far (including the resume offset).  A non-zero
 * return asks the backend to stop; it must then return -1 with
 * SPOOLFS_E_CANCELLED promptly.  The spool also throttles (max_rate) from
 * here, so the callback may sleep.  Backends call it at least every few
 * hundred kilobytes.
 */
typedef int (*spoolfs_progress_fn)(void *arg, uint64_t done);

/*
 * One file of a batch (put_batch): PATH gets bytes [0, SIZE) of FD and the
 * mtime MTIME (< 0: leave it).  The backend fills RC (0 done, -1 failed
 * with ERR set, 1 not tried: the caller puts it the usual way) and, when
 * done, RSIZE: the size the server holds, asked of the server.
 */
struct spoolfs_put_item {
	const char *path;
	int fd;
	uint64_t size;
	int64_t mtime;
	spoolfs_progress_fn progress;	/* called once, with SIZE, when done */
	void *arg;
	int rc;
	uint64_t rsize;
	struct spoolfs_error err;
};

/* One rename of a batch (rename_batch): FROM to TO, RC and ERR as in
 * struct spoolfs_put_item. */
struct spoolfs_rename_item {
	const char *from;
	const char *to;
	int rc;
	struct spoolfs_error err;
};

/* A batch holds at most this many files, each of at most
 * SPOOLFS_BATCH_FILE_MAX bytes. */
#define SPOOLFS_BATCH_MAX	32
#define SPOOLFS_BATCH_FILE_MAX	32768

struct spoolfs_rstat {
	uint64_t size;
	int64_t mtime;		/* seconds since the epoch, -1 if unknown */
	bool is_dir;
};

struct spoolfs_backend {
	const char *scheme;	/* "file", "sftp", "ftp", "ftps" */
	int default_port;	/* 0 when there is no network */
	unsigned caps;		/* SPOOLFS_CAP_* */

	/*
	 * MUST: connect and authenticate; set conn->priv.  The destination
	 * root must already exist; if it does not, fail with SPOOLFS_E_NOROOT
	 * (transient: a NAS may simply not be mounted yet).
	 */
	int (*connect)(struct spoolfs_conn *conn, struct spoolfs_error *err);
	/* MUST: close the connection and free conn->priv (may be NULL). */
	void (*disconnect)(struct spoolfs_conn *conn);
	/*
	 * MUST: create DIR and every missing parent below the root (never the
	 * root itself).  Existing directories are fine.
	 */
	int (*mkdirs)(struct spoolfs_conn *conn, const char *dir,
		      struct spoolfs_error *err);
	/*
	 * MUST: write bytes [offset, size) of the local file FD (read with
	 * pread, FD's position is not used) into PATH.  offset == 0 creates
	 * or truncates PATH; offset > 0 (only with SPOOLFS_CAP_RESUME) appends
	 * to a PATH that the caller checked holds exactly offset bytes.  The
	 * data must be on the server (flushed, closed) when it returns 0.
	 */
	int (*put)(struct spoolfs_conn *conn, const char *path, int fd,
		   uint64_t offset, uint64_t size, spoolfs_progress_fn progress,
		   void *arg, struct spoolfs_error *err);
	/*
	 * MAY: the whole tail of an upload in as few round trips as the
	 * protocol allows: put() as above, then set PATH's mtime to MTIME
	 * (only with SPOOLFS_CAP_MTIME and MTIME >= 0; may be done on the
	 * still open handle) and report in *RSIZE the size the server holds
	 * now, asked of the server, not counted.  Without it the wrapper
	 * spoolfs_conn_put_file() does put + set_mtime + stat.
	 */
	int (*put_file)(struct spoolfs_conn *conn, const char *path, int fd,
			uint64_t offset, uint64_t size, int64_t mtime,
			spoolfs_progress_fn progress, void *arg,
			uint64_t *rsize, struct spoolfs_error *err);
	/*
	 * MAY: put_file() from byte 0 of N small files at once, their
	 * requests pipelined, so that the batch costs the round trips of one
	 * file.  Each item gets its own result; a failure of one does not
	 * stop the others, but a connection that fails fails the rest.
	 */
	void (*put_batch)(struct spoolfs_conn *conn,
			  struct spoolfs_put_item *items, size_t n);
	/* MAY: rename() of N files at once, pipelined, results as put_batch */
	void (*rename_batch)(struct spoolfs_conn *conn,
			     struct spoolfs_rename_item *items, size_t n);
	/* MUST: size (and mtime) of PATH; SPOOLFS_E_NOTFOUND when absent. */
	int (*stat)(struct spoolfs_conn *conn, const char *path,
		    struct spoolfs_rstat *st, struct spoolfs_error *err);
	/* MUST: rename FROM to TO, replacing TO if it exists. */
	int (*rename)(struct spoolfs_conn *conn, const char *from,
		      const char *to, struct spoolfs_error *err);
	/* MUST: delete the file PATH; SPOOLFS_E_NOTFOUND when absent. */
	int (*remove)(struct spoolfs_conn *conn, const char *path,
		      struct spoolfs_error *err);
	/*
	 * MAY: remove the directory DIR (below the root, never the root) if
	 * it is empty; a directory that holds anything stays, with an error
	 * (SPOOLFS_E_NOTFOUND when it is not there, where the protocol
	 * tells).  Without it, emptied directories stay on the server.
	 */
	int (*rmdir)(struct spoolfs_conn *conn, const char *dir,
		     struct spoolfs_error *err);
	/* MAY (SPOOLFS_CAP_MTIME): set PATH's modification time. */
	int (*set_mtime)(struct spoolfs_conn *conn, const char *path,
			 int64_t mtime, struct spoolfs_error *err);
	/* MUST: download PATH into FD (from its offset 0, FD is truncated). */
	int (*get)(struct spoolfs_conn *conn, const char *path, int fd,
		   spoolfs_progress_fn progress, void *arg,
		   struct spoolfs_error *err);
	/*
	 * MAY: whether a file can ever be stored under PATH, asked before a
	 * byte of it is sent (no round trip: the protocol's own rules, e.g.
	 * no line break on an FTP command line).  SPOOLFS_E_NAME when not;
	 * without it every name is taken to be fine.  The content goes to a
	 * temp name first, so without this check a name that only the final
	 * rename can refuse would cost a whole upload.
	 */
	int (*check_name)(struct spoolfs_conn *conn, const char *path,
			  struct spoolfs_error *err);
};

/* The backend for SCHEME ("file", "sftp", ...), NULL if unknown. */
const struct spoolfs_backend *spoolfs_backend_find(const char *scheme);

/*
 * Tests only: when set, every destination uses this backend instead of the
 * one its scheme names (e.g. the failure-injecting wrapper).
 */
extern const struct spoolfs_backend *spoolfs_backend_override;

/* Wrappers: the only way callers reach a backend. */

/* Allocate a connection for DEST and connect it.  NULL on failure. */
struct spoolfs_conn *spoolfs_conn_open(const struct spoolfs_dest *dest,
				       struct spoolfs_error *err);
/* Disconnect and free; accepts NULL. */
void spoolfs_conn_close(struct spoolfs_conn *conn);

int spoolfs_conn_mkdirs(struct spoolfs_conn *conn, const char *dir,
			struct spoolfs_error *err);
int spoolfs_conn_put(struct spoolfs_conn *conn, const char *path, int fd,
		     uint64_t offset, uint64_t size,
		     spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err);
/*
 * Upload the whole of a file (bytes [offset, size) of FD) into PATH, set
 * its mtime (MTIME < 0: leave it) and put the size the server then holds
 * in *RSIZE.  One backend call where the backend has put_file.
 */
int spoolfs_conn_put_file(struct spoolfs_conn *conn, const char *path,
			  int fd, uint64_t offset, uint64_t size,
			  int64_t mtime, spoolfs_progress_fn progress,
			  void *arg, uint64_t *rsize,
			  struct spoolfs_error *err);
/* Whether DEST's backend can put small files in batches (put_batch). */
bool spoolfs_dest_can_batch(const struct spoolfs_dest *dest);
/* put_batch; an item the backend did not try has rc 1. */
void spoolfs_conn_put_batch(struct spoolfs_conn *conn,
			    struct spoolfs_put_item *items, size_t n);
/* rename_batch; an item the backend did not try has rc 1. */
void spoolfs_conn_rename_batch(struct spoolfs_conn *conn,
			       struct spoolfs_rename_item *items, size_t n);
int spoolfs_conn_stat(struct spoolfs_conn *conn, const char *path,
		      struct spoolfs_rstat *st, struct spoolfs_error *err);
int spoolfs_conn_rename(struct spoolfs_conn *conn, const char *from,
			const char *to, struct spoolfs_error *err);
int spoolfs_conn_remove(struct spoolfs_conn *conn, const char *path,
			struct spoolfs_error *err);
/* -1 with SPOOLFS_E_PERM where the backend cannot remove directories. */
int spoolfs_conn_rmdir(struct spoolfs_conn *conn, const char *dir,
		       struct spoolfs_error *err);
/* Sets the mtime where the backend can; a no-op returning 0 where not. */
int spoolfs_conn_set_mtime(struct spoolfs_conn *conn, const char *path,
			   int64_t mtime, struct spoolfs_error *err);
int spoolfs_conn_get(struct spoolfs_conn *conn, const char *path, int fd,
		     spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err);
/* 0 where the backend has no check_name. */
int spoolfs_conn_check_name(struct spoolfs_conn *conn, const char *path,
			    struct spoolfs_error *err);
bool spoolfs_conn_can(const struct spoolfs_conn *conn, unsigned cap);
/*
 * Whether a put of bytes [OFFSET, END) to DEST may be split
 * (SPOOLFS_CAP_SPLIT): the one rule the backend that splits and the spool
 * that must then not resume from the size both follow.
 */
bool spoolfs_split_allowed(const struct spoolfs_dest *dest, uint64_t offset,
			   uint64_t end);

/*
 * The connection test of `spoolfs check`: connect, create DIR (relative,
 * "" for the root), write a small probe file under a temp name, stat it,
 * rename it, remove it.  On failure *step names the step that failed
 * ("connect", "mkdir", "write", "stat", "rename", "remove").
 */
int spoolfs_backend_probe(const struct spoolfs_dest *dest, const char *dir,
			  const char **step, struct spoolfs_error *err);

/*
 * Join a relative path onto a destination root for display:
 * "sftp://u@h:22/srv/up" + "a/b.jpg" -> "sftp://u@h:22/srv/up/a/b.jpg".
 * Returns a malloc'd string.
 */
char *spoolfs_remote_url(const struct spoolfs_dest *dest, const char *relpath);

extern const struct spoolfs_backend spoolfs_backend_file;
extern const struct spoolfs_backend spoolfs_backend_sftp;
extern const struct spoolfs_backend spoolfs_backend_ftp;
extern const struct spoolfs_backend spoolfs_backend_ftps;
extern const struct spoolfs_backend spoolfs_backend_faulty;	/* tests */

#endif
