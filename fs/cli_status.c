/*
 * cli_status.c - `spoolfs status [CONFIG] [--json] [--watch] [-i SECS]` and
 * `spoolfs log [CONFIG] [-n N] [DEST/PATH]`.
 *
 * DESIGN: where live progress comes from.  How far an upload has got, its
 * rate and the destination's in-memory health live in the daemon only.
 * Two ways to show them were possible: the daemon persisting progress into
 * the journal (at most once a second per upload), or the command reading
 * the running mount.  status reads the mount: when the daemon that owns
 * this spool is mounted (found through /proc/self/mountinfo and the root
 * xattr user.spoolfs.spool, cli.c), `spoolfs status` prints
 * MOUNT/.status (or .status.json) as the daemon rendered it — the same
 * bytes `cat` shows, by construction.  The upload hot path gains nothing:
 * no journal write per second per upload, no WAL growth, no extra lock
 * hold beside the progress callback, and the journal keeps meaning "what
 * must survive a crash", which progress does not.
 *
 * When no mount is found, status reads the journal itself, read-only
 * (spool_ro_*, SQLITE_OPEN_READONLY; it never takes the spool lock, so it
 * cannot disturb a daemon starting up): counts and bytes by state, files
 * waiting to retry, health from the event log.  If a daemon still holds the
 * spool (its mount is in another namespace, or not ours to read), that is
 * said, and its uploads show without progress.
 *
 * --watch redraws every interval until SIGINT (exit 0).  On a terminal it
 * homes the cursor and clears the screen before each frame (the only
 * escape sequence used; no colour); otherwise it prints one plain snapshot
 * after another, separated by a blank line (with --json: one JSON
 * document per line).
 *
 * log reads the journal's event table read-only: one file's history (each
 * failed attempt, fallbacks, the upload, renames) and its current state,
 * or without a PATH the most recent events.
 */
#include "cli.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../backends/backend.h"
#include "../common/log.h"
#include "../spool/journal.h"
#include "../spool/status.h"

static volatile sig_atomic_t interrupted;

static void on_signal(int sig)
{
	(void)sig;
	interrupted = 1;
}

/* One snapshot as text or JSON: through the mount, else from the journal. */
static char *status_once(const struct spoolfs_config *cfg, bool json,
			 char *errbuf, size_t errlen)
{
	struct spool_status st;
	struct spool_ro *ro;
	char *mnt, *path = NULL, *out = NULL;
	bool running;

	mnt = cli_find_mount(cfg->spool_dir);
	if (mnt && asprintf(&path, "%s/.status%s", mnt, json ? ".json" : "") >
	    0)
		out = cli_read_file(path);
	free(path);
	free(mnt);
	if (out)
		return out;

	running = spool_daemon_running(cfg->spool_dir);
	if (spool_ro_open(&ro, cfg->spool_dir, errbuf, errlen) < 0)
		return NULL;
	if (spool_ro_status(ro, cfg, running, &st) < 0) {
		snprintf(errbuf, errlen, "cannot read the journal in '%s'",
			 cfg->spool_dir);
		spool_ro_close(ro);
		return NULL;
	}
	spool_ro_close(ro);
	out = json ? spool_status_render_json(&st) :
	      spool_status_render_text(&st);
	spool_status_release(&st);
	if (!out)
		snprintf(errbuf, errlen, "out of memory");
	return out;
}

static void sleep_interruptible(double secs)
{
	struct timespec ts = {
		(time_t)secs, (long)((secs - (double)(time_t)secs) * 1e9)
	};

	/* SIGINT ends the sleep (no SA_RESTART) and the loop */
	while (!interrupted && nanosleep(&ts, &ts) < 0 && errno == EINTR)
		;
}

int cli_status(int argc, char **argv)
{
	struct spoolfs_config cfg = { 0 };
	const char *config = NULL;
	bool json = false, watch = false, tty;
	double interval = 1.0;
	char err[1024] = "";
	int rc = 1;

	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "--json") == 0) {
			json = true;
		} else if (strcmp(a, "--watch") == 0 || strcmp(a, "-w") == 0) {
			watch = true;
		} else if ((strcmp(a, "--interval") == 0 ||
			    strcmp(a, "-i") == 0) && i + 1 < argc) {
			char *end;

			interval = strtod(argv[++i], &end);
			if (*end || interval < 0.1 || interval > 3600) {
				fprintf(stderr, "spoolfs: status: bad interval "
					"'%s' (seconds, 0.1 to 3600)\n",
					argv[i]);
				return 2;
			}
		} else if (!config && a[0] != '-' && cli_is_config(a)) {
			config = a;
		} else {
			fprintf(stderr, "spoolfs: status: unexpected argument "
				"'%s'\nusage: spoolfs status [CONFIG] [--json] "
				"[--watch] [--interval SECS]\n", a);
			return 2;
		}
	}
	if (cli_load_config(config, &cfg) < 0)
		return 1;
	tty = isatty(STDOUT_FILENO);
	if (watch) {
		struct sigaction sa = { .sa_handler = on_signal };

		sigemptyset(&sa.sa_mask);
		sigaction(SIGINT, &sa, NULL);
		sigaction(SIGTERM, &sa, NULL);
	}
	for (bool first = true; !interrupted; first = false) {
		char *out = status_once(&cfg, json, err, sizeof(err));

		if (!out) {
			fprintf(stderr, "spoolfs: status: %s\n", err);
			goto out;
		}
		if (watch && tty)
			fputs("\033[H\033[2J", stdout);
		else if (watch && !first && !json)
			fputc('\n', stdout);
		fputs(out, stdout);
		fflush(stdout);
		free(out);
		if (!watch)
			break;
		sleep_interruptible(interval);
	}
	rc = 0;
out:
	spoolfs_config_release(&cfg);
	return rc;
}

/* ---- log ------------------------------------------------------------------ */

struct log_ctx {
	bool with_path;
};

/* A name or message on one line: control characters as \xNN.  Free it. */
static char *one_line(const char *s)
{
	size_t cap = 4 * strlen(s) + 1;
	char *o = malloc(cap);

	return o ? spoolfs_escape_ctl(o, cap, s) : NULL;
}

static int print_event(void *arg, const struct spool_event *ev)
{
	const struct log_ctx *lc = arg;
	const char *kind = ev->kind ? ev->kind : "?";
	char *path = one_line(ev->path ? ev->path : "");
	char *safe = one_line(ev->msg ? ev->msg : "");
	const char *msg = safe ? safe : "?";
	char when[40];

	spool_status_human_time(ev->time_ms, when, sizeof(when));
	printf("%s  %-8s  ", when, kind);
	if (!lc->with_path)
		printf("%s/%s: ", ev->dest, path ? path : "?");
	free(path);
	if (strcmp(kind, "uploaded") == 0)
		printf("uploaded to %s\n", msg);
	else if (strcmp(kind, "renamed") == 0)
		printf("renamed to '%s' on %s\n", msg, ev->dest);
	else if (strcmp(kind, "retry") == 0)
		printf("%s; will retry\n", msg);
	else if (strcmp(kind, "fallback") == 0)
		printf("%s; trying %s\n", msg, ev->dest);
	else
		printf("%s\n", msg);
	free(safe);
	return 0;
}

int cli_log(int argc, char **argv)
{
	struct spoolfs_config cfg = { 0 };
	struct spool_ro_file f = { 0 };
	struct log_ctx lc = { 0 };
	const char *config = NULL, *target = NULL;
	char *dest = NULL, err[1024] = "";
	struct spool_ro *ro = NULL;
	int limit = 50, n, rc = 1;

	for (int i = 2; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-n") == 0 && i + 1 < argc) {
			limit = atoi(argv[++i]);
		} else if (!config && !target && a[0] != '-' &&
			   cli_is_config(a)) {
			config = a;
		} else if (!target && a[0] != '-') {
			target = a;
		} else {
			fprintf(stderr, "spoolfs: log: unexpected argument "
				"'%s'\nusage: spoolfs log [CONFIG] [-n N] "
				"[DEST/PATH]\n", a);
			return 2;
		}
	}
	if (cli_load_config(config, &cfg) < 0)
		return 1;
	if (spool_ro_open(&ro, cfg.spool_dir, err, sizeof(err)) < 0) {
		fprintf(stderr, "spoolfs: log: %s\n", err);
		goto out;
	}
	if (target) {
		const char *slash;
		const struct spoolfs_dest *d;

		while (*target == '/')
			target++;
		slash = strchr(target, '/');
		dest = slash ? strndup(target, (size_t)(slash - target)) :
		       strdup(target);
		d = dest ? spoolfs_config_dest(&cfg, dest) : NULL;
		if (!d || !slash || !slash[1]) {
			fprintf(stderr, "spoolfs: log: '%s' is not DEST/PATH "
				"with a destination of %s\n", target,
				cfg.path ? cfg.path : "the built-in config");
			goto out;
		}
		lc.with_path = true;
		{
			char *t = one_line(target);

			printf("%s\n", t ? t : "?");
			free(t);
		}
		n = spool_ro_events(ro, &cfg, dest, slash + 1, 0, &f,
				    print_event, &lc);
		if (n < 0) {
			fprintf(stderr, "spoolfs: log: cannot read the event "
				"log\n");
			goto out;
		}
		if (n == 0 && !f.found) {
			fprintf(stderr, "spoolfs: log: no file '%s' in the "
				"journal of %s\n", target, cfg.spool_dir);
			goto out;
		}
		if (f.found) {
			const struct spoolfs_dest *rd =
				f.rdest ? spoolfs_config_dest(&cfg, f.rdest) :
				NULL;
			char *url = rd && f.rpath ?
				    spoolfs_remote_url(rd, f.rpath) : NULL;
			char size[24];

			printf("now: %s%s, %s, attempts %d", spool_state_name(
				       f.state), f.failed_area ?
			       " (in .failed/)" : "",
			       spool_status_human_bytes(f.size, size,
							sizeof(size)),
			       f.attempts);
			if (url)
				printf(", remote %s", url);
			printf("\n");
			if (f.error && f.state != SPOOL_UPLOADED) {
				char *e = one_line(f.error);

				printf("last error: %s\n", e ? e : "?");
				free(e);
			}
			free(url);
		} else {
			printf("now: no longer in the spool (removed or "
			       "renamed since)\n");
		}
	} else {
		n = spool_ro_events(ro, &cfg, NULL, NULL, limit, NULL,
				    print_event, &lc);
		if (n < 0) {
			fprintf(stderr, "spoolfs: log: cannot read the event "
				"log\n");
			goto out;
		}
		if (n == 0)
			printf("no events yet\n");
	}
	rc = 0;
out:
	spool_ro_file_release(&f);
	spool_ro_close(ro);
	free(dest);
	spoolfs_config_release(&cfg);
	return rc;
}
