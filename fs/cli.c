/*
 * cli.c - what the subcommands share: loading the config as the mount does,
 * and finding the running mount of a spool.
 *
 * Finding the mount: a daemon answers the xattr user.spoolfs.spool on its
 * mount root with its spool directory.  /proc/self/mountinfo lists the
 * fuse.spoolfs mounts; the one whose answer is our spool directory (both
 * resolved with realpath) is ours.  A dead mount (daemon killed) answers
 * ENOTCONN at once and is skipped; nothing here waits on a daemon.
 */
#include "cli.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <unistd.h>

int cli_load_config(const char *path, struct spoolfs_config *cfg)
{
	char err[1024] = "";
	char *def = NULL;
	struct stat st;
	int rc;

	if (path) {
		rc = spoolfs_config_load(cfg, path, err, sizeof(err));
	} else if ((def = spoolfs_config_default_path()) &&
		   stat(def, &st) == 0) {
		rc = spoolfs_config_load(cfg, def, err, sizeof(err));
	} else {
		rc = spoolfs_config_default(cfg, err, sizeof(err));
	}
	free(def);
	if (rc < 0)
		fprintf(stderr, "spoolfs: %s\n", err);
	return rc;
}

bool cli_is_config(const char *arg)
{
	struct stat st;

	return stat(arg, &st) == 0 && S_ISREG(st.st_mode);
}

/* mountinfo escapes ' ', '\t', '\n' and '\\' as \ooo. */
static void unescape(char *s)
{
	char *o = s;

	for (; *s; s++) {
		if (s[0] == '\\' && s[1] >= '0' && s[1] <= '7' &&
		    s[2] >= '0' && s[2] <= '7' && s[3] >= '0' && s[3] <= '7') {
			*o++ = (char)((s[1] - '0') << 6 | (s[2] - '0') << 3 |
				      (s[3] - '0'));
			s += 3;
		} else {
			*o++ = *s;
		}
	}
	*o = '\0';
}

char *cli_find_mount(const char *spool_dir)
{
	char want[PATH_MAX], got[PATH_MAX], real[PATH_MAX];
	char *line = NULL, *found = NULL;
	size_t cap = 0;
	FILE *f;

	if (!realpath(spool_dir, want))
		return NULL;
	f = fopen("/proc/self/mountinfo", "re");
	if (!f)
		return NULL;
	while (!found && getline(&line, &cap, f) > 0) {
		char *sep = strstr(line, " - "), *mnt, *save = NULL;
		ssize_t n;

		/* "36 35 0:42 / /mnt/up rw,... - fuse.spoolfs spoolfs rw,..." */
		if (!sep || strncmp(sep + 3, "fuse.spoolfs ", 13) != 0)
			continue;
		mnt = strtok_r(line, " ", &save);
		for (int i = 0; i < 4 && mnt; i++)
			mnt = strtok_r(NULL, " ", &save);
		if (!mnt)
			continue;
		unescape(mnt);
		n = getxattr(mnt, "user.spoolfs.spool", got, sizeof(got) - 1);
		if (n <= 0)
			continue;
		got[n] = '\0';
		if (realpath(got, real) && strcmp(real, want) == 0)
			found = strdup(mnt);
	}
	free(line);
	fclose(f);
	return found;
}

char *cli_read_file(const char *path)
{
	size_t len = 0, cap = 8192;
	char *buf = malloc(cap), *n;
	ssize_t r;
	int fd;

	if (!buf)
		return NULL;
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0) {
		free(buf);
		return NULL;
	}
	for (;;) {
		if (cap - len < 4096) {
			n = realloc(buf, cap * 2);
			if (!n)
				goto out_err;
			buf = n;
			cap *= 2;
		}
		r = read(fd, buf + len, cap - len - 1);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			goto out_err;
		if (r == 0)
			break;
		len += (size_t)r;
	}
	close(fd);
	buf[len] = '\0';
	return buf;

out_err:
	close(fd);
	free(buf);
	return NULL;
}
