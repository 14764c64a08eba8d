/*
 * backend.c - the registry of backends and the wrappers every caller uses.
 *
 * The wrappers check the few things every backend would otherwise check
 * again (a connection exists, the capability is there) and keep *err
 * consistent, so a backend's own code only talks protocol.
 */
#include "backend.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const struct spoolfs_backend *spoolfs_backend_override;

static const struct spoolfs_backend *const backends[] = {
	&spoolfs_backend_file,
#ifdef SPOOLFS_HAVE_SFTP
	&spoolfs_backend_sftp,
#endif
#ifdef SPOOLFS_HAVE_FTP
	&spoolfs_backend_ftp,
	&spoolfs_backend_ftps,
#endif
};

const struct spoolfs_backend *spoolfs_backend_find(const char *scheme)
{
	for (size_t i = 0; i < sizeof(backends) / sizeof(backends[0]); i++)
		if (strcmp(backends[i]->scheme, scheme) == 0)
			return backends[i];
	return NULL;
}

/* The backend DEST's connections use. */
static const struct spoolfs_backend *dest_backend(
	const struct spoolfs_dest *dest)
{
	if (spoolfs_backend_override)
		return spoolfs_backend_override;
	return spoolfs_backend_find(dest->scheme);
}

struct spoolfs_conn *spoolfs_conn_open(const struct spoolfs_dest *dest,
				       struct spoolfs_error *err)
{
	const struct spoolfs_backend *be = dest_backend(dest);
	struct spoolfs_conn *conn;

	spoolfs_error_clear(err);
	if (!be) {
		spoolfs_error_set(err, SPOOLFS_E_UNSUPPORTED,
				  "no backend for '%s://' in this build",
				  dest->scheme);
		return NULL;
	}
	conn = calloc(1, sizeof(*conn));
	if (!conn) {
		spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
		return NULL;
	}
	conn->backend = be;
	conn->dest = dest;
	if (be->connect(conn, err) < 0) {
		if (err && err->code == SPOOLFS_OK)
			spoolfs_error_set(err, SPOOLFS_E_CONNECT,
					  "connect failed");
		free(conn);
		return NULL;
	}
	return conn;
}

void spoolfs_conn_close(struct spoolfs_conn *conn)
{
	if (!conn)
		return;
	conn->backend->disconnect(conn);
	free(conn);
}

/* Make sure a failing op always leaves a code behind. */
static int op_result(int rc, struct spoolfs_error *err, const char *what)
{
	if (rc < 0 && err && err->code == SPOOLFS_OK)
		spoolfs_error_set(err, SPOOLFS_E_IO, "%s failed", what);
	return rc < 0 ? -1 : 0;
}

int spoolfs_conn_mkdirs(struct spoolfs_conn *conn, const char *dir,
			struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	if (!*dir)
		return 0;
	return op_result(conn->backend->mkdirs(conn, dir, err), err, "mkdir");
}

/* Where a put of SIZE bytes starts: OFFSET only where it can resume. */
static uint64_t put_start(const struct spoolfs_conn *conn, uint64_t offset,
			  uint64_t size)
{
	if (!(conn->backend->caps & SPOOLFS_CAP_RESUME) || offset > size)
		return 0;
	return offset;
}

bool spoolfs_split_allowed(const struct spoolfs_dest *dest, uint64_t offset,
			   uint64_t end)
{
	/* under max_rate a second connection gains nothing: the limit is
	 * per destination */
	return !dest->max_rate && end >= offset &&
	       end - offset >= SPOOLFS_SPLIT_MIN;
}

int spoolfs_conn_put(struct spoolfs_conn *conn, const char *path, int fd,
		     uint64_t offset, uint64_t size,
		     spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	offset = put_start(conn, offset, size);
	return op_result(conn->backend->put(conn, path, fd, offset, size,
					    progress, arg, err),
			 err, "upload");
}

int spoolfs_conn_put_file(struct spoolfs_conn *conn, const char *path,
			  int fd, uint64_t offset, uint64_t size,
			  int64_t mtime, spoolfs_progress_fn progress,
			  void *arg, uint64_t *rsize,
			  struct spoolfs_error *err)
{
	const struct spoolfs_backend *b = conn->backend;
	struct spoolfs_rstat st;

	if (!b->put_file) {
		if (spoolfs_conn_put(conn, path, fd, offset, size, progress,
				     arg, err) < 0)
			return -1;
		if (mtime >= 0 &&
		    spoolfs_conn_set_mtime(conn, path, mtime, err) < 0)
			return -1;
		if (spoolfs_conn_stat(conn, path, &st, err) < 0)
			return -1;
		*rsize = st.size;
		return 0;
	}
	spoolfs_error_clear(err);
	offset = put_start(conn, offset, size);
	if (!(b->caps & SPOOLFS_CAP_MTIME))
		mtime = -1;
	*rsize = UINT64_MAX;
	return op_result(b->put_file(conn, path, fd, offset, size, mtime,
				     progress, arg, rsize, err),
			 err, "upload");
}

bool spoolfs_dest_can_batch(const struct spoolfs_dest *dest)
{
	const struct spoolfs_backend *be = dest_backend(dest);

	return be && be->put_batch;
}

void spoolfs_conn_put_batch(struct spoolfs_conn *conn,
			    struct spoolfs_put_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		spoolfs_error_clear(&items[i].err);
		items[i].rc = 1;
		items[i].rsize = UINT64_MAX;
		if (!(conn->backend->caps & SPOOLFS_CAP_MTIME))
			items[i].mtime = -1;
	}
	if (conn->backend->put_batch)
		conn->backend->put_batch(conn, items, n);
	for (size_t i = 0; i < n; i++)
		op_result(items[i].rc, &items[i].err, "upload");
}

void spoolfs_conn_rename_batch(struct spoolfs_conn *conn,
			       struct spoolfs_rename_item *items, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		spoolfs_error_clear(&items[i].err);
		items[i].rc = 1;
	}
	if (conn->backend->rename_batch)
		conn->backend->rename_batch(conn, items, n);
	for (size_t i = 0; i < n; i++)
		op_result(items[i].rc, &items[i].err, "rename");
}

int spoolfs_conn_check_name(struct spoolfs_conn *conn, const char *path,
			    struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	if (!conn->backend->check_name)
		return 0;
	return op_result(conn->backend->check_name(conn, path, err), err,
			 "name check");
}

int spoolfs_conn_stat(struct spoolfs_conn *conn, const char *path,
		      struct spoolfs_rstat *st, struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	memset(st, 0, sizeof(*st));
	st->mtime = -1;
	return op_result(conn->backend->stat(conn, path, st, err), err, "stat");
}

int spoolfs_conn_rename(struct spoolfs_conn *conn, const char *from,
			const char *to, struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	return op_result(conn->backend->rename(conn, from, to, err), err,
			 "rename");
}

int spoolfs_conn_remove(struct spoolfs_conn *conn, const char *path,
			struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	return op_result(conn->backend->remove(conn, path, err), err, "delete");
}

int spoolfs_conn_rmdir(struct spoolfs_conn *conn, const char *dir,
		       struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	if (!*dir)
		return spoolfs_error_set(err, SPOOLFS_E_PERM, "the "
					 "destination's root is never removed");
	if (!conn->backend->rmdir)
		return spoolfs_error_set(err, SPOOLFS_E_PERM, "%s: cannot "
					 "remove directories",
					 conn->backend->scheme);
	return op_result(conn->backend->rmdir(conn, dir, err), err,
			 "remove directory");
}

int spoolfs_conn_set_mtime(struct spoolfs_conn *conn, const char *path,
			   int64_t mtime, struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	if (!(conn->backend->caps & SPOOLFS_CAP_MTIME) ||
	    !conn->backend->set_mtime)
		return 0;
	return op_result(conn->backend->set_mtime(conn, path, mtime, err), err,
			 "set mtime");
}

int spoolfs_conn_get(struct spoolfs_conn *conn, const char *path, int fd,
		     spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err)
{
	spoolfs_error_clear(err);
	if (ftruncate(fd, 0) < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot truncate local copy: %m");
	return op_result(conn->backend->get(conn, path, fd, progress, arg,
					    err),
			 err, "download");
}

bool spoolfs_conn_can(const struct spoolfs_conn *conn, unsigned cap)
{
	return (conn->backend->caps & cap) == cap;
}

static char *join_rel(const char *dir, const char *name)
{
	size_t n = strlen(dir) + strlen(name) + 2;
	char *s = malloc(n);

	if (s)
		snprintf(s, n, "%s%s%s", dir, *dir ? "/" : "", name);
	return s;
}

int spoolfs_backend_probe(const struct spoolfs_dest *dest, const char *dir,
			  const char **step, struct spoolfs_error *err)
{
	static const char probe_data[] = "spoolfs probe file, safe to delete\n";
	char tmpname[64], finalname[64], tmpl[] = "/tmp/spoolfs-probe-XXXXXX";
	char *tmp = NULL, *final = NULL;
	struct spoolfs_conn *conn;
	struct spoolfs_rstat st;
	int fd = -1, rc = -1;

	*step = "connect";
	conn = spoolfs_conn_open(dest, err);
	if (!conn)
		return -1;
	snprintf(tmpname, sizeof(tmpname), ".spoolfs-probe-%ld.part",
		 (long)getpid());
	snprintf(finalname, sizeof(finalname), ".spoolfs-probe-%ld",
		 (long)getpid());
	tmp = join_rel(dir, tmpname);
	final = join_rel(dir, finalname);
	if (!tmp || !final) {
		spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
		goto out;
	}
	*step = "mkdir";
	if (spoolfs_conn_mkdirs(conn, dir, err) < 0)
		goto out;
	*step = "write";
	fd = mkstemp(tmpl);
	if (fd < 0) {
		spoolfs_error_set(err, SPOOLFS_E_IO,
				  "cannot create local probe file: %m");
		goto out;
	}
	unlink(tmpl);
	if (write(fd, probe_data, sizeof(probe_data) - 1) !=
	    (ssize_t)(sizeof(probe_data) - 1)) {
		spoolfs_error_set(err, SPOOLFS_E_IO,
				  "cannot write local probe file: %m");
		goto out;
	}
	if (spoolfs_conn_put(conn, tmp, fd, 0, sizeof(probe_data) - 1, NULL,
			     NULL, err) < 0)
		goto out;
	*step = "stat";
	if (spoolfs_conn_stat(conn, tmp, &st, err) < 0)
		goto out;
	if (st.size != sizeof(probe_data) - 1) {
		spoolfs_error_set(err, SPOOLFS_E_PROTO,
				  "probe file has %llu bytes on the server, "
				  "expected %zu",
				  (unsigned long long)st.size,
				  sizeof(probe_data) - 1);
		goto out;
	}
	*step = "rename";
	if (spoolfs_conn_rename(conn, tmp, final, err) < 0)
		goto out;
	*step = "remove";
	if (spoolfs_conn_remove(conn, final, err) < 0)
		goto out;
	rc = 0;
out:
	if (fd >= 0)
		close(fd);
	free(tmp);
	free(final);
	spoolfs_conn_close(conn);
	return rc;
}

char *spoolfs_remote_url(const struct spoolfs_dest *dest, const char *relpath)
{
	const char *base = dest->url_display;
	size_t bl = strlen(base), n;
	char *s;

	while (bl > 0 && base[bl - 1] == '/')
		bl--;
	n = bl + strlen(relpath) + 2;
	s = malloc(n);
	if (s)
		snprintf(s, n, "%.*s%s%s", (int)bl, base, *relpath ? "/" : "",
			 relpath);
	return s;
}
