/*
 * cli_retry.c - `spoolfs retry [CONFIG] [DEST[/PATH]]`: requeue failed
 * files, exactly as `mv DEST/.failed/P DEST/P` does (attempts reset), and
 * say how many.
 *
 * DESIGN.  The daemon's in-memory tree is the truth while it runs, so a
 * retry never edits the journal behind its back:
 *   - mounted: every file under MOUNT/DEST/.failed/[PATH] is renamed to
 *     MOUNT/DEST/P through the mount (missing parent directories are
 *     created first), with RENAME_NOREPLACE: a file written there since
 *     is never overwritten, that one is reported and stays in .failed/;
 *   - not mounted: the command opens the spool itself with spool_open() —
 *     taking the spool lock as a daemon would, so no daemon can start
 *     meanwhile — and does the same renames through spool_rename(), the
 *     code the mount uses; the files upload at the next mount;
 *   - a daemon holds the spool but its mount is not visible here: refuse,
 *     and say so.
 */
#include "cli.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/log.h"
#include "../spool/spool.h"
#include "../spool/status.h"

struct retry_ops {
	void *ctx;		/* the mount point, or a struct spool * */
	int (*stat)(void *ctx, const char *path, struct stat *st);
	/* names in the directory PATH, NULL-terminated, malloc'd */
	char **(*list)(void *ctx, const char *path);
	int (*mkdir)(void *ctx, const char *path);
	int (*rename)(void *ctx, const char *from, const char *to);
};

/* ---- through the mount ------------------------------------------------ */

static char *mnt_path(void *ctx, const char *path)
{
	char *s;

	return asprintf(&s, "%s%s", (const char *)ctx, path) < 0 ? NULL : s;
}

static int mnt_stat(void *ctx, const char *path, struct stat *st)
{
	char *p = mnt_path(ctx, path);
	int rc = p && lstat(p, st) == 0 ? 0 : -errno;

	free(p);
	return rc;
}

static char **names_add(char **v, size_t *n, const char *name)
{
	char **nv = realloc(v, (*n + 2) * sizeof(*v));

	if (!nv)
		return v;
	nv[*n] = strdup(name);
	if (nv[*n])
		(*n)++;
	nv[*n] = NULL;
	return nv;
}

static char **mnt_list(void *ctx, const char *path)
{
	char *p = mnt_path(ctx, path);
	DIR *dir = p ? opendir(p) : NULL;
	struct dirent *e;
	char **v = calloc(1, sizeof(*v));
	size_t n = 0;

	free(p);
	if (!dir || !v) {
		if (dir)
			closedir(dir);
		return v;
	}
	while ((e = readdir(dir)))
		if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
			v = names_add(v, &n, e->d_name);
	closedir(dir);
	return v;
}

static int mnt_mkdir(void *ctx, const char *path)
{
	char *p = mnt_path(ctx, path);
	int rc = p && mkdir(p, 0755) == 0 ? 0 : -errno;

	free(p);
	return rc;
}

static int mnt_rename(void *ctx, const char *from, const char *to)
{
	char *f = mnt_path(ctx, from), *t = mnt_path(ctx, to);
	int rc = f && t && renameat2(AT_FDCWD, f, AT_FDCWD, t,
				     RENAME_NOREPLACE) == 0 ? 0 : -errno;

	free(f);
	free(t);
	return rc;
}

/* ---- through the spool (no daemon) -------------------------------------- */

static int sp_stat(void *ctx, const char *path, struct stat *st)
{
	return spool_getattr(ctx, path, st);
}

struct name_list {
	char **v;
	size_t n;
};

static int sp_fill(void *arg, const char *name, const struct stat *st)
{
	struct name_list *l = arg;

	(void)st;
	if (strcmp(name, ".") && strcmp(name, ".."))
		l->v = names_add(l->v, &l->n, name);
	return 0;
}

static char **sp_list(void *ctx, const char *path)
{
	struct name_list l = { calloc(1, sizeof(char *)), 0 };

	if (l.v)
		spool_readdir(ctx, path, sp_fill, &l);
	return l.v;
}

static int sp_mkdir(void *ctx, const char *path)
{
	return spool_mkdir(ctx, path, 0755, getuid(), getgid());
}

static int sp_rename(void *ctx, const char *from, const char *to)
{
	return spool_rename(ctx, from, to, RENAME_NOREPLACE);
}

/* ---- the walk ------------------------------------------------------------ */

struct retry_run {
	const struct retry_ops *ops;
	const char *dest;
	unsigned long moved, failed;
};

static void free_names(char **v)
{
	for (size_t i = 0; v && v[i]; i++)
		free(v[i]);
	free(v);
}

/* mkdir -p of the parents of /DEST/REL in the main area. */
static int make_parents(struct retry_run *r, const char *rel)
{
	char *p;
	int rc = 0;

	if (asprintf(&p, "/%s/%s", r->dest, rel) < 0)
		return -ENOMEM;
	for (char *s = p + strlen(r->dest) + 2; (s = strchr(s, '/')); s++) {
		struct stat st;

		*s = '\0';
		if (r->ops->stat(r->ops->ctx, p, &st) < 0)
			rc = r->ops->mkdir(r->ops->ctx, p);
		else if (!S_ISDIR(st.st_mode))
			rc = -ENOTDIR;
		*s = '/';
		if (rc < 0 && rc != -EEXIST)
			break;
		rc = 0;
	}
	free(p);
	return rc;
}

/* Requeue /DEST/.failed/REL: a file, or everything under a directory. */
static void retry_rel(struct retry_run *r, const char *rel)
{
	char *from = NULL, *to = NULL;
	struct stat st;
	int rc;

	if (asprintf(&from, "/%s/.failed%s%s", r->dest, *rel ? "/" : "",
		     rel) < 0)
		return;
	if (r->ops->stat(r->ops->ctx, from, &st) < 0) {
		if (*rel) {
			fprintf(stderr, "spoolfs: retry: no failed file '%s/%s'"
				"\n", r->dest, rel);
			r->failed++;
		}
		goto out;
	}
	if (S_ISDIR(st.st_mode)) {
		char **names = r->ops->list(r->ops->ctx, from);

		for (size_t i = 0; names && names[i]; i++) {
			char *sub;

			if (asprintf(&sub, "%s%s%s", rel, *rel ? "/" : "",
				     names[i]) < 0)
				continue;
			retry_rel(r, sub);
			free(sub);
		}
		free_names(names);
		goto out;
	}
	if (asprintf(&to, "/%s/%s", r->dest, rel) < 0)
		goto out;
	rc = make_parents(r, rel);
	if (rc == 0)
		rc = r->ops->rename(r->ops->ctx, from, to);
	if (rc == 0) {
		r->moved++;
	} else {
		r->failed++;
		fprintf(stderr, "spoolfs: retry: cannot requeue '%s/%s': %s%s\n",
			r->dest, rel, strerror(-rc), rc == -EEXIST ?
			" (a file of that name was written since; it stays in "
			".failed/)" : "");
	}
out:
	free(from);
	free(to);
}

int cli_retry(int argc, char **argv)
{
	struct spoolfs_config cfg = { 0 };
	struct retry_ops ops;
	const char *config = NULL, *target = NULL;
	char *mnt = NULL, *dest = NULL, err[1024] = "";
	struct spool *sp = NULL;
	const char *rel = "";
	unsigned long moved = 0, failed = 0;
	int rc = 1;

	for (int i = 2; i < argc; i++) {
		if (!config && !target && argv[i][0] != '-' &&
		    cli_is_config(argv[i])) {
			config = argv[i];
		} else if (!target && argv[i][0] != '-') {
			target = argv[i];
		} else {
			fprintf(stderr, "spoolfs: retry: unexpected argument "
				"'%s'\nusage: spoolfs retry [CONFIG] "
				"[DEST[/PATH]]\n", argv[i]);
			return 2;
		}
	}
	if (cli_load_config(config, &cfg) < 0)
		return 1;
	if (target) {
		const char *slash;

		while (*target == '/')
			target++;
		slash = strchr(target, '/');
		dest = slash ? strndup(target, (size_t)(slash - target)) :
		       strdup(target);
		if (!dest || !spoolfs_config_dest(&cfg, dest)) {
			fprintf(stderr, "spoolfs: retry: no destination '%s' "
				"in %s\n", dest ? dest : target, cfg.path ?
				cfg.path : "the built-in config");
			goto out;
		}
		rel = slash ? slash + 1 : "";
		if (strncmp(rel, ".failed", 7) == 0 &&
		    (rel[7] == '/' || rel[7] == '\0'))
			rel += rel[7] ? 8 : 7;
		while (*rel == '/')
			rel++;
	}

	mnt = cli_find_mount(cfg.spool_dir);
	if (mnt) {
		ops = (struct retry_ops){ mnt, mnt_stat, mnt_list, mnt_mkdir,
					  mnt_rename };
	} else if (spool_daemon_running(cfg.spool_dir)) {
		fprintf(stderr, "spoolfs: retry: a spoolfs daemon uses the "
			"spool '%s' but its mount is not visible here; run "
			"retry where it is mounted (or mv DEST/.failed/PATH "
			"DEST/PATH in the mount)\n", cfg.spool_dir);
		goto out;
	} else {
		spoolfs_log_init(false, false);
		if (spool_open(&sp, &cfg, err, sizeof(err)) < 0) {
			fprintf(stderr, "spoolfs: retry: %s\n", err);
			goto out;
		}
		ops = (struct retry_ops){ sp, sp_stat, sp_list, sp_mkdir,
					  sp_rename };
	}

	for (size_t i = 0; i < cfg.ndests; i++) {
		struct retry_run r = { &ops, cfg.dests[i].name, 0, 0 };

		if (dest && strcmp(dest, r.dest) != 0)
			continue;
		retry_rel(&r, rel);
		if (r.moved)
			printf("%s: requeued %lu file%s\n", r.dest, r.moved,
			       r.moved == 1 ? "" : "s");
		moved += r.moved;
		failed += r.failed;
	}
	printf("requeued %lu failed file%s%s\n", moved, moved == 1 ? "" : "s",
	       !moved ? "" : mnt ? "; uploading now" :
	       "; spoolfs is not mounted: they upload at the next mount");
	rc = failed ? 1 : 0;
out:
	spool_close(sp);
	free(mnt);
	free(dest);
	spoolfs_config_release(&cfg);
	return rc;
}
