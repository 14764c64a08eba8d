/*
 * ftp_probe.c - drive one ftp:// or ftps:// backend connection from the
 * command line, for tests/integration/test_ftp_backend.py and for poking at
 * a server by hand.  Not a meson test.
 *
 *   ftp_probe CONFIG DEST check [DIR]     spoolfs_backend_probe()
 *   ftp_probe CONFIG DEST CMD ARGS... [-- CMD ARGS...]...
 *
 * The second form connects once and runs the commands in order on that one
 * connection, so a test sees what an operation after a failure does:
 *
 *   connect                      (implicit; alone it just connects)
 *   put LOCAL REMOTE [OFFSET]    upload LOCAL[OFFSET..] into REMOTE
 *   get REMOTE LOCAL             download
 *   stat PATH | rm PATH | mkdirs DIR | rename FROM TO | mtime PATH SECONDS
 *   sleep MS
 *   reconnect                    close the connection, open a new one
 *   install SRC DST              copy local SRC over DST (a temp + rename),
 *                                e.g. to change tls_ca between commands
 *   ca_loads                     how often the process read a CA file
 *                                ("ok ca_loads N"; "off" without ftp_ca.c)
 *
 * Each command prints one line: "ok CMD [details]" or
 * "error CMD CODE MS: MESSAGE" (CODE from spoolfs_err_name(), MS how long
 * the call took).  Transfers print "progress BYTES" when the count moves.
 * FTP_PROBE_RATE=N holds transfers to N bytes/s from the progress callback
 * (as the spool's max_rate does), so a test can kill the server mid-put.
 * FTP_PROBE_DEBUG=1 turns on debug logging (the protocol dialogue).
 * Exit status: 0 when everything succeeded, 1 after the first failure
 * (later commands still run), 2 on a usage or config error.
 */
#include "../../backends/backend.h"
#include "../../common/config.h"
#include "../../common/log.h"
#ifdef SPOOLFS_HAVE_FTP_CA
#include "../../backends/ftp_ca.h"
#endif

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

struct rate {
	uint64_t limit;		/* bytes/s, 0 = none */
	long long t0;		/* ms when the transfer started */
	uint64_t first, last;	/* progress counts */
	bool started;
};

static struct rate rate;

static long long now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int on_progress(void *arg, uint64_t done)
{
	struct rate *r = arg;
	long long due;

	if (!r->started) {
		r->started = true;
		r->t0 = now_ms();
		r->first = done;
		r->last = done;
		printf("progress %llu\n", (unsigned long long)done);
	} else if (done != r->last) {
		r->last = done;
		printf("progress %llu\n", (unsigned long long)done);
	}
	if (!r->limit)
		return 0;
	/* Sleep until DONE bytes are due at the given rate. */
	due = r->t0 + (long long)((done - r->first) * 1000 / r->limit);
	while (now_ms() < due) {
		long long ms = due - now_ms();
		struct timespec ts = { ms / 1000, (ms % 1000) * 1000000 };

		nanosleep(&ts, NULL);
	}
	return 0;
}

static int usage(void)
{
	fprintf(stderr,
		"usage: ftp_probe CONFIG DEST check [DIR]\n"
		"       ftp_probe CONFIG DEST CMD ARGS... [-- CMD ARGS...]...\n"
		"commands: connect, put LOCAL REMOTE [OFFSET], get REMOTE "
		"LOCAL, stat PATH,\n"
		"          rm PATH, mkdirs DIR, rename FROM TO, mtime PATH "
		"SECONDS, sleep MS,\n"
		"          reconnect, install SRC DST, ca_loads\n");
	return 2;
}

static int nargs(char **argv, int argc)
{
	int n = 0;

	while (n < argc && strcmp(argv[n], "--") != 0)
		n++;
	return n;
}

static int cmd_put(struct spoolfs_conn *conn, char **a, int n, char *info,
		   size_t il, struct spoolfs_error *err)
{
	uint64_t off = n == 4 ? strtoull(a[3], NULL, 10) : 0;
	int fd = open(a[1], O_RDONLY | O_CLOEXEC);
	off_t size;
	int rc;

	if (fd < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot open '%s': %m", a[1]);
	size = lseek(fd, 0, SEEK_END);
	rate.started = false;
	rc = spoolfs_conn_put(conn, a[2], fd, off, (uint64_t)size,
			      on_progress, &rate, err);
	close(fd);
	snprintf(info, il, "%lld", (long long)size);
	return rc;
}

static int cmd_get(struct spoolfs_conn *conn, char **a, char *info,
		   size_t il, struct spoolfs_error *err)
{
	int fd = open(a[2], O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	int rc;

	if (fd < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot create '%s': %m", a[2]);
	rate.started = false;
	rc = spoolfs_conn_get(conn, a[1], fd, on_progress, &rate, err);
	snprintf(info, il, "%lld", (long long)lseek(fd, 0, SEEK_END));
	close(fd);
	return rc;
}

/* Copy SRC to DST.tmp and rename that over DST. */
static int cmd_install(const char *src, const char *dst,
		       struct spoolfs_error *err)
{
	char tmp[4096], buf[65536];
	int in, out = -1;
	ssize_t n = -1;
	bool ok;

	snprintf(tmp, sizeof(tmp), "%s.tmp", dst);
	in = open(src, O_RDONLY | O_CLOEXEC);
	if (in >= 0)
		out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	while (out >= 0 && (n = read(in, buf, sizeof(buf))) > 0)
		if (write(out, buf, (size_t)n) != n) {
			n = -1;
			break;
		}
	if (in >= 0)
		close(in);
	ok = out >= 0 && n == 0;
	if (out >= 0 && close(out) < 0)
		ok = false;
	if (!ok || rename(tmp, dst) < 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot copy '%s' to '%s': %m", src,
					 dst);
	return 0;
}

/* Run one command on *CONN; fills *err on failure, *info for "ok". */
static int run(const struct spoolfs_dest *dest, struct spoolfs_conn **connp,
	       char **a, int n, char *info, size_t il,
	       struct spoolfs_error *err)
{
	struct spoolfs_conn *conn = *connp;
	const char *cmd = a[0];

	*info = '\0';
	if (!strcmp(cmd, "sleep") && n == 2) {
		usleep((useconds_t)atol(a[1]) * 1000);
		return 0;
	}
	if (!strcmp(cmd, "reconnect") && n == 1) {
		if (conn)
			spoolfs_conn_close(conn);
		*connp = spoolfs_conn_open(dest, err);
		return *connp ? 0 : -1;
	}
	if (!strcmp(cmd, "install") && n == 3)
		return cmd_install(a[1], a[2], err);
	if (!strcmp(cmd, "ca_loads") && n == 1) {
#ifdef SPOOLFS_HAVE_FTP_CA
		snprintf(info, il, "%u", ftp_ca_loads());
#else
		snprintf(info, il, "off");
#endif
		return 0;
	}
	if (!conn)
		return spoolfs_error_set(err, SPOOLFS_E_CONNECT,
					 "not connected");
	if (!strcmp(cmd, "put") && (n == 3 || n == 4))
		return cmd_put(conn, a, n, info, il, err);
	if (!strcmp(cmd, "get") && n == 3)
		return cmd_get(conn, a, info, il, err);
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

static int check(const struct spoolfs_dest *dest, const char *dir)
{
	struct spoolfs_error err;
	const char *step = "";
	long long t0 = now_ms();

	if (spoolfs_backend_probe(dest, dir, &step, &err) < 0) {
		printf("error %s %s %lld: %s\n", step,
		       spoolfs_err_name(err.code), now_ms() - t0, err.msg);
		return 1;
	}
	printf("ok check\n");
	return 0;
}

int main(int argc, char **argv)
{
	struct spoolfs_config cfg;
	const struct spoolfs_dest *dest;
	struct spoolfs_conn *conn;
	struct spoolfs_error err;
	char ebuf[1024], info[128];
	long long t0;
	int status = 0;

	if (argc < 4)
		return usage();
	if (getenv("FTP_PROBE_RATE"))
		rate.limit = strtoull(getenv("FTP_PROBE_RATE"), NULL, 10);
	setvbuf(stdout, NULL, _IOLBF, 0);
	spoolfs_log_init(false, getenv("FTP_PROBE_DEBUG") &&
			 !strcmp(getenv("FTP_PROBE_DEBUG"), "1"));
	if (spoolfs_config_load(&cfg, argv[1], ebuf, sizeof(ebuf)) < 0) {
		fprintf(stderr, "ftp_probe: %s\n", ebuf);
		return 2;
	}
	dest = spoolfs_config_dest(&cfg, argv[2]);
	if (!dest) {
		fprintf(stderr, "ftp_probe: no [dest %s] in %s\n", argv[2],
			argv[1]);
		spoolfs_config_release(&cfg);
		return 2;
	}
	if (!strcmp(argv[3], "check")) {
		status = check(dest, argc > 4 ? argv[4] : "");
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
	for (int i = 3; i < argc;) {
		int n = nargs(argv + i, argc - i);

		if (n == 0 || (n == 1 && !strcmp(argv[i], "connect"))) {
			i += n + 1;
			continue;
		}
		t0 = now_ms();
		if (run(dest, &conn, argv + i, n, info, sizeof(info),
			&err) < 0) {
			printf("error %s %s %lld: %s\n", argv[i],
			       spoolfs_err_name(err.code), now_ms() - t0,
			       err.msg);
			status = 1;
		} else {
			printf("ok %s%s%s\n", argv[i], *info ? " " : "", info);
		}
		i += n + 1;
	}
	if (conn)
		spoolfs_conn_close(conn);
	spoolfs_config_release(&cfg);
	return status;
}
