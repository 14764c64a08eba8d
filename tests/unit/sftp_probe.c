/*
 * sftp_probe.c - drive one backend connection from the command line, for
 * the integration tests (tests/integration/test_sftp_backend.py) and for
 * poking at a server by hand.  Not a meson test.
 *
 *   sftp_probe CONFIG DEST check [DIR]     spoolfs_backend_probe()
 *   sftp_probe CONFIG DEST CMD ARGS... [-- CMD ARGS...]...
 *
 * The second form connects once and runs the commands in order on that one
 * connection (so a test can see what a call after a failure does):
 *
 *   connect                      (implicit; alone it just connects)
 *   put LOCAL REMOTE [OFFSET]    upload LOCAL[OFFSET..] into REMOTE
 *   get REMOTE LOCAL             download
 *   stat PATH | rm PATH | mkdirs DIR | rename FROM TO | mtime PATH SECONDS
 *   sleep MS
 *
 * Each command prints one line: "ok CMD [details]" or
 * "error CMD CODE MS: MESSAGE" (CODE from spoolfs_err_name(), MS how long
 * the call took).  Transfers also print "progress BYTES" lines as the
 * backend reports them; SFTP_PROBE_DELAY_MS=N sleeps N ms in each progress
 * callback (a crude max_rate, so that a test can kill the server mid-put).
 * Exit status: 0 when everything succeeded, 1 after the first failure
 * (later commands still run), 2 on a usage or config error.
 */
#include "../../backends/backend.h"
#include "../../common/config.h"

#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static long delay_ms;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_progress(void *arg, uint64_t done)
{
	(void)arg;
	printf("progress %llu\n", (unsigned long long)done);
	fflush(stdout);
	if (delay_ms > 0) {
		struct timespec ts = { delay_ms / 1000,
				       (delay_ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: sftp_probe CONFIG DEST check [DIR]\n"
		"       sftp_probe CONFIG DEST CMD ARGS... [-- CMD ARGS...]...\n"
		"commands: connect, put LOCAL REMOTE [OFFSET], get REMOTE "
		"LOCAL, stat PATH,\n"
		"          rm PATH, mkdirs DIR, rename FROM TO, mtime PATH "
		"SECONDS, sleep MS\n");
	return 2;
}

static int nargs(char **argv, int argc)
{
	int n = 0;

	while (n < argc && strcmp(argv[n], "--") != 0)
		n++;
	return n;
}

/* Run one command on CONN; fills *err on failure; *info for "ok". */
static int run(struct spoolfs_conn *conn, char **a, int n, char *info,
	       size_t il, struct spoolfs_error *err)
{
	const char *cmd = a[0];

	*info = '\0';
	if (!strcmp(cmd, "connect") && n == 1)
		return 0;
	if (!strcmp(cmd, "sleep") && n == 2) {
		usleep((useconds_t)atol(a[1]) * 1000);
		return 0;
	}
	if (!strcmp(cmd, "put") && (n == 3 || n == 4)) {
		uint64_t off = n == 4 ? strtoull(a[3], NULL, 10) : 0;
		int fd = open(a[1], O_RDONLY | O_CLOEXEC);
		off_t size;
		int rc;

		if (fd < 0)
			return spoolfs_error_set(err, SPOOLFS_E_IO,
						 "cannot open '%s': %m", a[1]);
		size = lseek(fd, 0, SEEK_END);
		rc = spoolfs_conn_put(conn, a[2], fd, off, (uint64_t)size,
				      on_progress, NULL, err);
		close(fd);
		snprintf(info, il, "%lld", (long long)size);
		return rc;
	}
	if (!strcmp(cmd, "get") && n == 3) {
		int fd = open(a[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC,
			      0644);
		int rc;

		if (fd < 0)
			return spoolfs_error_set(err, SPOOLFS_E_IO,
						 "cannot create '%s': %m",
						 a[2]);
		rc = spoolfs_conn_get(conn, a[1], fd, on_progress, NULL, err);
		snprintf(info, il, "%lld", (long long)lseek(fd, 0, SEEK_END));
		close(fd);
		return rc;
	}
	if (!strcmp(cmd, "stat") && n == 2) {
		struct spoolfs_rstat st;

		if (spoolfs_conn_stat(conn, a[1], &st, err) < 0)
			return -1;
		snprintf(info, il, "size=%llu mtime=%lld dir=%d",
			 (unsigned long long)st.size, (long long)st.mtime,
			 st.is_dir);
		return 0;
	}
	if (!strcmp(cmd, "rm") && n == 2)
		return spoolfs_conn_remove(conn, a[1], err);
	if (!strcmp(cmd, "mkdirs") && n == 2)
		return spoolfs_conn_mkdirs(conn, a[1], err);
	if (!strcmp(cmd, "rename") && n == 3)
		return spoolfs_conn_rename(conn, a[1], a[2], err);
	if (!strcmp(cmd, "mtime") && n == 3)
		return spoolfs_conn_set_mtime(conn, a[1], atoll(a[2]), err);
	return spoolfs_error_set(err, SPOOLFS_E_CONFIG,
				 "unknown command or wrong arguments: '%s'",
				 cmd);
}

int main(int argc, char **argv)
{
	struct spoolfs_config cfg;
	const struct spoolfs_dest *dest;
	struct spoolfs_conn *conn;
	struct spoolfs_error err;
	char ebuf[1024], info[128];
	long long t0;
	int i, status = 0;

	if (argc < 4)
		return usage();
	if (getenv("SFTP_PROBE_DELAY_MS"))
		delay_ms = atol(getenv("SFTP_PROBE_DELAY_MS"));
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (spoolfs_config_load(&cfg, argv[1], ebuf, sizeof(ebuf)) < 0) {
		fprintf(stderr, "sftp_probe: %s\n", ebuf);
		return 2;
	}
	dest = spoolfs_config_dest(&cfg, argv[2]);
	if (!dest) {
		fprintf(stderr, "sftp_probe: no [dest %s] in %s\n", argv[2],
			argv[1]);
		spoolfs_config_release(&cfg);
		return 2;
	}

	if (!strcmp(argv[3], "check")) {
		const char *step = "";

		t0 = now_ms();
		if (spoolfs_backend_probe(dest, argc > 4 ? argv[4] : "",
					  &step, &err) < 0) {
			printf("error %s %s %lld: %s\n", step,
			       spoolfs_err_name(err.code), now_ms() - t0,
			       err.msg);
			status = 1;
		} else {
			printf("ok check\n");
		}
		spoolfs_config_release(&cfg);
		return status;
	}

	t0 = now_ms();
	conn = spoolfs_conn_open(dest, &err);
	if (!conn) {
		printf("error connect %s %lld: %s\n", spoolfs_err_name(err.code),
		       now_ms() - t0, err.msg);
		spoolfs_config_release(&cfg);
		return 1;
	}
	printf("ok connect\n");
	for (i = 3; i < argc;) {
		int n = nargs(argv + i, argc - i);

		if (n == 0) {
			i++;
			continue;
		}
		if (!(n == 1 && !strcmp(argv[i], "connect"))) {
			t0 = now_ms();
			if (run(conn, argv + i, n, info, sizeof(info),
				&err) < 0) {
				printf("error %s %s %lld: %s\n", argv[i],
				       spoolfs_err_name(err.code),
				       now_ms() - t0, err.msg);
				status = 1;
			} else {
				printf("ok %s%s%s\n", argv[i], *info ? " " : "",
				       info);
			}
		}
		i += n + 1;
	}
	spoolfs_conn_close(conn);
	spoolfs_config_release(&cfg);
	return status;
}
