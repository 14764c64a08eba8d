/*
 * main.c - the spoolfs command: parse the command line, load the config,
 * open the spool, mount, and run the FUSE loop until unmounted.
 *
 *   spoolfs [-f] [-d] [-o OPTS] [CONFIG] MOUNTPOINT
 *
 * CONFIG comes first so that an fstab line works as-is
 * (mount.fuse3 runs "spoolfs CONFIG MOUNTPOINT -o OPTS").  Everything that
 * can go wrong with the config or the spool is checked before the mount and
 * before daemonizing, so the user sees the reason on the terminal.  The
 * spool is opened again after fuse_daemonize(): sqlite connections and
 * threads must not cross a fork.
 */
#include <errno.h>
#include <signal.h>
#include <stdarg.h>
#include <fuse.h>
#include <fuse_lowlevel.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../common/config.h"
#include "../backends/backend.h"
#include "../common/log.h"
#include "cli.h"
#include "fs.h"

struct options {
	bool foreground;
	bool debug;
	bool fuse_debug;
	bool single_thread;
	char *fuse_opts;	/* comma-joined -o values we pass on */
	const char *config;
	const char *mountpoint;
};

static void usage(FILE *out)
{
	fprintf(out,
		"usage: spoolfs [-f] [-d] [-o OPTIONS] [CONFIG] MOUNTPOINT\n"
		"       spoolfs check [CONFIG] [DEST...]\n"
		"       spoolfs status [CONFIG] [--json] [--watch] "
		"[--interval SECS]\n"
		"       spoolfs retry [CONFIG] [DEST[/PATH]]\n"
		"       spoolfs log [CONFIG] [-n N] [DEST/PATH]\n"
		"\n"
		"Mount spoolfs: every [dest NAME] of CONFIG becomes a directory\n"
		"MOUNTPOINT/NAME; files written there are spooled to local disk\n"
		"and uploaded in the background.\n"
		"\n"
		"  CONFIG       INI file (default: $XDG_CONFIG_HOME/spoolfs/"
		"spoolfs.conf,\n"
		"               else a built-in destination 'local' under\n"
		"               $XDG_DATA_HOME/spoolfs/local)\n"
		"  -f           stay in the foreground, log to stderr\n"
		"  -d           log protocol detail (implies nothing else)\n"
		"  -o OPTIONS   mount options: allow_other, ro is refused, "
		"FUSE options\n"
		"  check        connect to each destination (or those named),\n"
		"               log in, write, rename and remove a probe file;\n"
		"               exit 0 when all work, 1 with the failing step\n"
		"  status       per destination: files and bytes pending,\n"
		"               uploading, uploaded, failed; uploads in flight\n"
		"               with progress; last success and error (live\n"
		"               from the mount, else read-only from the journal;\n"
		"               the same as MOUNT/.status and .status.json)\n"
		"  retry        requeue failed files (all, a destination's, or\n"
		"               DEST/PATH), like mv out of DEST/.failed/\n"
		"  log          the history of one file DEST/PATH from the\n"
		"               journal, or the last N events (default 50)\n"
		"  -h, --help   this text\n"
		"  -V, --version\n");
}

/* Options that only mount(8) and fstab care about. */
static bool mount_only_option(const char *o)
{
	static const char *const skip[] = {
		"defaults", "_netdev", "nofail", "noauto", "auto", "user",
		"users", "nouser", "rw", "dev", "suid", "nodev", "nosuid",
		"exec", "noexec", "atime", "noatime", "relatime",
	};

	if (strncmp(o, "x-", 2) == 0 || strncmp(o, "comment=", 8) == 0)
		return true;
	for (size_t i = 0; i < sizeof(skip) / sizeof(skip[0]); i++)
		if (strcmp(o, skip[i]) == 0)
			return true;
	return false;
}

static int add_opts(struct options *o, const char *list)
{
	char *copy = strdup(list), *save = NULL, *tok;

	if (!copy)
		return -1;
	for (tok = strtok_r(copy, ",", &save); tok;
	     tok = strtok_r(NULL, ",", &save)) {
		size_t old = o->fuse_opts ? strlen(o->fuse_opts) : 0;
		char *n;

		if (mount_only_option(tok))
			continue;
		if (strcmp(tok, "debug") == 0) {
			o->fuse_debug = true;
			continue;
		}
		n = realloc(o->fuse_opts, old + strlen(tok) + 2);
		if (!n) {
			free(copy);
			return -1;
		}
		if (old)
			n[old++] = ',';
		strcpy(n + old, tok);
		o->fuse_opts = n;
	}
	free(copy);
	return 0;
}

static int parse_args(int argc, char **argv, struct options *o)
{
	const char *pos[2];
	int npos = 0;

	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];

		if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
			usage(stdout);
			exit(0);
		} else if (strcmp(a, "-V") == 0 || strcmp(a, "--version") == 0) {
			printf("spoolfs %s (libfuse %d.%d)\n", SPOOLFS_VERSION,
			       FUSE_MAJOR_VERSION, FUSE_MINOR_VERSION);
			exit(0);
		} else if (strcmp(a, "-f") == 0) {
			o->foreground = true;
		} else if (strcmp(a, "-d") == 0) {
			o->debug = true;
		} else if (strcmp(a, "-s") == 0) {
			o->single_thread = true;
		} else if (strcmp(a, "-o") == 0) {
			if (++i == argc) {
				fprintf(stderr, "spoolfs: -o needs options\n");
				return -1;
			}
			if (add_opts(o, argv[i]) < 0)
				return -1;
		} else if (strncmp(a, "-o", 2) == 0) {
			if (add_opts(o, a + 2) < 0)
				return -1;
		} else if (a[0] == '-' && a[1]) {
			fprintf(stderr, "spoolfs: unknown option '%s'\n", a);
			usage(stderr);
			return -1;
		} else if (npos < 2) {
			pos[npos++] = a;
		} else {
			fprintf(stderr, "spoolfs: too many arguments ('%s')\n",
				a);
			usage(stderr);
			return -1;
		}
	}
	if (npos == 0) {
		fprintf(stderr, "spoolfs: no mount point given\n");
		usage(stderr);
		return -1;
	}
	o->mountpoint = pos[npos - 1];
	o->config = npos == 2 ? pos[0] : NULL;
	return 0;
}

static void warn_config(const struct spoolfs_config *cfg)
{
	for (size_t i = 0; i < cfg->ndests; i++) {
		const struct spoolfs_dest *d = &cfg->dests[i];

		if (!d->tls_verify && strcmp(d->scheme, "ftps") == 0)
			log_warn("%s: tls_verify = no: the server's certificate "
				 "is NOT checked; anyone on the path can read "
				 "the password and the files", d->name);
	}
}

/* libfuse's own messages, once stderr is gone: into our log (syslog) */
static void fuse_log_to_ours(enum fuse_log_level level, const char *fmt,
			     va_list ap)
{
	enum spoolfs_log_level ours = SPOOLFS_LOG_INFO;
	char line[1024];
	size_t n;

	if (level <= FUSE_LOG_ERR)
		ours = SPOOLFS_LOG_ERROR;
	else if (level == FUSE_LOG_WARNING)
		ours = SPOOLFS_LOG_WARN;
	else if (level == FUSE_LOG_DEBUG)
		ours = SPOOLFS_LOG_DEBUG;
	if (ours == SPOOLFS_LOG_DEBUG && !spoolfs_log_debug_enabled())
		return;
	vsnprintf(line, sizeof(line), fmt, ap);
	n = strlen(line);
	while (n > 0 && line[n - 1] == '\n')
		line[--n] = '\0';
	spoolfs_log(ours, "fuse: %s", line);
}

/* spoolfs check [CONFIG] [DEST...] */
static int cmd_check(int argc, char **argv)
{
	struct options o = { 0 };
	struct spoolfs_config cfg = { 0 };
	int first = 2, failures = 0, checked = 0;
	struct stat st;

	spoolfs_log_init(false, false);
	if (argc > 2 && stat(argv[2], &st) == 0 && S_ISREG(st.st_mode)) {
		o.config = argv[2];
		first = 3;
	}
	if (cli_load_config(o.config, &cfg) < 0)
		return 1;
	for (int i = first; i < argc; i++) {
		if (!spoolfs_config_dest(&cfg, argv[i])) {
			fprintf(stderr, "spoolfs: check: no destination '%s' in "
				"%s\n", argv[i], cfg.path ? cfg.path :
				"the built-in config");
			spoolfs_config_release(&cfg);
			return 1;
		}
	}
	for (size_t i = 0; i < cfg.ndests; i++) {
		const struct spoolfs_dest *d = &cfg.dests[i];
		struct spoolfs_error err = { 0 };
		const char *step = "connect";
		bool wanted = first == argc;

		for (int k = first; k < argc && !wanted; k++)
			wanted = strcmp(argv[k], d->name) == 0;
		if (!wanted)
			continue;
		checked++;
		if (spoolfs_backend_probe(d, "", &step, &err) == 0) {
			printf("%s: ok (%s: connect, write, rename, remove)\n",
			       d->name, d->url_display);
		} else {
			failures++;
			printf("%s: FAILED at %s: %s\n", d->name, step, err.msg);
		}
	}
	spoolfs_config_release(&cfg);
	return failures || !checked ? 1 : 0;
}

int main(int argc, char **argv)
{
	struct options o = { 0 };
	struct spoolfs_config cfg = { 0 };
	struct fuse_args args = FUSE_ARGS_INIT(0, NULL);
	struct fs_ctx fctx = { 0 };
	struct fuse_loop_config *loop_cfg = NULL;
	struct fuse *fuse = NULL;
	struct spool *sp = NULL;
	char err[1024] = "";
	int rc = 1;

	/* a server closing a connection must be an error return, not death */
	signal(SIGPIPE, SIG_IGN);
	if (argc > 1 && strcmp(argv[1], "check") == 0)
		return cmd_check(argc, argv);
	if (argc > 1 && strcmp(argv[1], "status") == 0)
		return cli_status(argc, argv);
	if (argc > 1 && strcmp(argv[1], "retry") == 0)
		return cli_retry(argc, argv);
	if (argc > 1 && strcmp(argv[1], "log") == 0)
		return cli_log(argc, argv);
	if (parse_args(argc, argv, &o) < 0)
		return 1;
	spoolfs_log_init(false, o.debug);
	if (cli_load_config(o.config, &cfg) < 0)
		goto out;
	warn_config(&cfg);

	/* preflight: every spool problem is reported on the terminal */
	if (spool_open(&sp, &cfg, err, sizeof(err)) < 0) {
		fprintf(stderr, "spoolfs: %s\n", err);
		goto out;
	}
	spool_close(sp);
	sp = NULL;

	if (fuse_opt_add_arg(&args, argv[0]) < 0 ||
	    fuse_opt_add_arg(&args, "-o") < 0 ||
	    fuse_opt_add_arg(&args, "default_permissions,fsname=spoolfs,"
			     "subtype=spoolfs") < 0)
		goto out;
	if (o.fuse_opts && (fuse_opt_add_arg(&args, "-o") < 0 ||
			    fuse_opt_add_arg(&args, o.fuse_opts) < 0))
		goto out;
	if (o.fuse_debug && fuse_opt_add_arg(&args, "-d") < 0)
		goto out;
	fctx.conn_opts = fuse_parse_conn_info_opts(&args);
	fuse = fuse_new(&args, &spoolfs_fs_ops, sizeof(spoolfs_fs_ops), &fctx);
	if (!fuse)
		goto out;	/* libfuse said why on stderr */
	if (fuse_mount(fuse, o.mountpoint) != 0)
		goto out_destroy;
	if (fuse_set_signal_handlers(fuse_get_session(fuse)) != 0)
		goto out_unmount;
	if (fuse_daemonize(o.foreground) != 0)
		goto out_signals;
	if (!o.foreground) {
		spoolfs_log_init(true, o.debug);
		fuse_set_log_func(fuse_log_to_ours);
		warn_config(&cfg);	/* the terminal may be long gone */
	}

	if (spool_open(&sp, &cfg, err, sizeof(err)) == 0)
		spool_set_inval(sp, fs_invalidate, fuse);
	if (!sp || spool_start(sp, err, sizeof(err)) < 0) {
		log_error("%s", err);
		goto out_signals;
	}
	fctx.sp = sp;
	log_info("mounted %s on %s (%zu destination%s, spool %s)",
		 cfg.path ? cfg.path : "built-in config", o.mountpoint,
		 cfg.ndests, cfg.ndests == 1 ? "" : "s", cfg.spool_dir);

	if (o.single_thread) {
		rc = fuse_loop(fuse);
	} else {
		loop_cfg = fuse_loop_cfg_create();
		if (!loop_cfg)
			goto out_signals;
		fuse_loop_cfg_set_clone_fd(loop_cfg, 0);
		fuse_loop_cfg_set_idle_threads(loop_cfg, 10);
		rc = fuse_loop_mt(fuse, loop_cfg);
	}
	rc = rc == 0 ? 0 : 1;
	log_info("unmounting; unfinished uploads resume at the next mount");

out_signals:
	fuse_remove_signal_handlers(fuse_get_session(fuse));
	/* no worker may call into fuse (fs_invalidate) once it is gone */
	spool_stop(sp);
out_unmount:
	fuse_unmount(fuse);
out_destroy:
	fuse_destroy(fuse);
	spool_close(sp);
out:
	if (loop_cfg)
		fuse_loop_cfg_destroy(loop_cfg);
	free(fctx.conn_opts);
	fuse_opt_free_args(&args);
	spoolfs_config_release(&cfg);
	free(o.fuse_opts);
	return rc;
}
