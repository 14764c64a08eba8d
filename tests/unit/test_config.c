/*
 * test_config.c - the config loader: good configs (DESIGN.md's example and
 * examples/spoolfs.conf among them), one bad config per kind of mistake with
 * the FILE:LINE it must name, the 0600 rule, url parsing, durations, sizes
 * and the embedded default.  Every config is written into a mkdtemp() dir.
 */
#include "check.h"
#include "../../common/config.h"

#include <errno.h>
#include <ftw.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef SPOOLFS_SOURCE_DIR
#define SPOOLFS_SOURCE_DIR "."
#endif

static char tmpdir[] = "/tmp/spoolfs-test-config-XXXXXX";
static char conf[512];		/* tmpdir/t.conf */

static void write_file(const char *path, const char *text, mode_t mode)
{
	FILE *f;

	unlink(path);
	f = fopen(path, "w");
	if (!f) {
		perror(path);
		exit(2);
	}
	fputs(text, f);
	fclose(f);
	if (chmod(path, mode) < 0) {
		perror(path);
		exit(2);
	}
}

/* tmpdir + "/" + name, in a static buffer. */
static const char *tmp(const char *name)
{
	static char buf[4][512];
	static int i;

	i = (i + 1) % 4;
	snprintf(buf[i], sizeof(buf[i]), "%s/%s", tmpdir, name);
	return buf[i];
}

/* Replace every "@T@" in TEXT by tmpdir; returns malloc'd text. */
static char *subst(const char *text, const char *from, const char *to)
{
	size_t nf = strlen(from), nt = strlen(to), n = 0;
	const char *s;
	char *out, *o;

	for (s = text; (s = strstr(s, from)); s += nf)
		n++;
	out = malloc(strlen(text) + n * nt + 1);
	for (o = out, s = text; *s;) {
		if (strncmp(s, from, nf) == 0) {
			memcpy(o, to, nt);
			o += nt;
			s += nf;
		} else {
			*o++ = *s++;
		}
	}
	*o = '\0';
	return out;
}

/* Write TEXT (with @T@ = tmpdir) as t.conf in MODE and load it. */
static int load_mode(struct spoolfs_config *cfg, const char *text, mode_t mode,
		     char *err, size_t errlen)
{
	char *t = subst(text, "@T@", tmpdir);
	int rc;

	write_file(conf, t, mode);
	free(t);
	rc = spoolfs_config_load(cfg, conf, err, errlen);
	if (rc == 0)
		CHECK_EQ_STR(err, "");
	return rc;
}

static int load(struct spoolfs_config *cfg, const char *text, char *err,
		size_t errlen)
{
	return load_mode(cfg, text, 0600, err, errlen);
}

/* TEXT must be refused with "t.conf:LINE: ...SUB..." */
#define BAD(text, line, sub) check_bad(__LINE__, text, 0600, line, sub)
#define BAD_MODE(text, mode, line, sub) check_bad(__LINE__, text, mode, line, sub)

static void check_bad(int at, const char *text, mode_t mode, int line,
		      const char *sub)
{
	struct spoolfs_config cfg;
	char err[1024], want[600];
	int rc;

	memset(&cfg, 0x5a, sizeof(cfg));
	rc = load_mode(&cfg, text, mode, err, sizeof(err));
	if (line > 0)
		snprintf(want, sizeof(want), "%s:%d: ", conf, line);
	else
		snprintf(want, sizeof(want), "%s: ", conf);
	if (rc != -1 || strncmp(err, want, strlen(want)) != 0 ||
	    !strstr(err, sub)) {
		check_failed++;
		fprintf(stderr,
			"test_config.c:%d: rc %d, message \"%s\", expected \"%s...%s...\"\n",
			at, rc, err, want, sub);
	} else {
		check_passed++;
	}
	/* a refused load leaves a released (zeroed) config */
	CHECK(cfg.dests == NULL && cfg.ndests == 0 && cfg.path == NULL);
	spoolfs_config_release(&cfg);
}

/* ---- good configs ---- */

static const char design_example[] =
	"[spool]\n"
	"dir = /var/spool/spoolfs      ; default: $XDG_CACHE_HOME/spoolfs\n"
	"max_size = 50G                ; quota for unsent data; past it writes get ENOSPC\n"
	"fsync = close                 ; close | never\n"
	"settle = 500ms                ; wait after close before uploading\n"
	"\n"
	"[dest nas]\n"
	"url = ftps://nas.example/photos   ; ftp:// plain, ftps:// explicit TLS (AUTH TLS)\n"
	"tls_mode = explicit               ; explicit | implicit (port 990)\n"
	"user = photo\n"
	"password_file = /etc/spoolfs/nas.pass\n"
	"tls_ca = /etc/spoolfs/nas-ca.pem  ; verification is on unless tls_verify = no\n"
	"connections = 2\n"
	"retries = 8\n"
	"backoff = 1s..5m\n"
	"stall_timeout = 60s\n"
	"max_rate = 0                      ; bytes/s per destination, 0 = unlimited\n"
	"fallback = nas-sftp\n"
	"\n"
	"[dest nas-sftp]\n"
	"url = sftp://photo@nas.example:22/photos\n"
	"identity = /etc/spoolfs/id_ed25519\n"
	"known_hosts = /etc/spoolfs/known_hosts   ; unknown host key = refused\n"
	"\n"
	"[dest archive]\n"
	"url = file:///srv/archive\n";

static void test_design_example(void)
{
	struct spoolfs_config cfg;
	const struct spoolfs_dest *d;
	char err[1024], *text;
	int rc;

	write_file(tmp("nas.pass"), "pa ss;word\n", 0600);
	write_file(tmp("nas-ca.pem"), "pem\n", 0644);
	write_file(tmp("id_ed25519"), "key\n", 0600);
	write_file(tmp("known_hosts"), "kh\n", 0644);
	text = subst(design_example, "/etc/spoolfs", tmpdir);
	/* no password key: any mode will do */
	rc = load_mode(&cfg, text, 0644, err, sizeof(err));
	free(text);
	CHECK_EQ_INT(rc, 0);
	if (rc) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	CHECK_EQ_STR(cfg.path, conf);
	CHECK_EQ_STR(cfg.spool_dir, "/var/spool/spoolfs");
	CHECK(cfg.max_size == 50ull << 30);
	CHECK_EQ_INT(cfg.fsync, SPOOLFS_FSYNC_CLOSE);
	CHECK_EQ_INT(cfg.settle_ms, 500);
	CHECK_EQ_INT(cfg.ndests, 3);

	d = spoolfs_config_dest(&cfg, "nas");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_INT(d->line, 7);
		CHECK_EQ_STR(d->scheme, "ftps");
		CHECK_EQ_STR(d->host, "nas.example");
		CHECK_EQ_INT(d->port, 0);
		CHECK_EQ_STR(d->path, "photos");
		CHECK_EQ_STR(d->user, "photo");
		CHECK_EQ_STR(d->password, "pa ss;word");
		CHECK_EQ_STR(d->tls_ca, tmp("nas-ca.pem"));
		CHECK_EQ_INT(d->tls_mode, SPOOLFS_TLS_EXPLICIT);
		CHECK(d->tls_verify);
		CHECK(!d->active);
		CHECK_EQ_INT(d->connections, 2);
		CHECK_EQ_INT(d->retries, 8);
		CHECK_EQ_INT(d->backoff_min_ms, 1000);
		CHECK_EQ_INT(d->backoff_max_ms, 300000);
		CHECK_EQ_INT(d->stall_timeout_ms, 60000);
		CHECK_EQ_INT(d->connect_timeout_ms, 30000);
		CHECK_EQ_INT(d->max_rate, 0);
		CHECK_EQ_STR(d->fallback, "nas-sftp");
		CHECK_EQ_STR(d->url_display, "ftps://photo@nas.example/photos");
		CHECK(!d->delete_remote && !d->keep_uploaded);
		CHECK(d->stream);	/* a network destination */
	}
	d = spoolfs_config_dest(&cfg, "nas-sftp");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_INT(d->line, 20);
		CHECK_EQ_STR(d->scheme, "sftp");
		CHECK_EQ_STR(d->user, "photo");
		CHECK_EQ_INT(d->port, 22);
		CHECK_EQ_STR(d->path, "/photos");
		CHECK_EQ_STR(d->identity, tmp("id_ed25519"));
		CHECK_EQ_STR(d->known_hosts, tmp("known_hosts"));
		CHECK(d->password == NULL);
		CHECK(d->fallback == NULL);
		CHECK_EQ_STR(d->url_display, "sftp://photo@nas.example:22/photos");
	}
	d = spoolfs_config_dest(&cfg, "archive");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_STR(d->scheme, "file");
		CHECK(d->host == NULL && d->user == NULL);
		CHECK_EQ_STR(d->path, "/srv/archive");
		CHECK_EQ_STR(d->url_display, "file:///srv/archive");
	}
	CHECK(spoolfs_config_dest(&cfg, "nope") == NULL);
	spoolfs_config_release(&cfg);
	CHECK(cfg.dests == NULL && cfg.path == NULL);
	spoolfs_config_release(&cfg);	/* twice is fine */
}

/*
 * examples/spoolfs.conf must always load.  Every /etc/spoolfs/NAME it
 * mentions is created in tmpdir, and the paths rewritten to point there.
 */
static void test_example_file(void)
{
	char path[1024], err[1024], name[256], *text, *t;
	struct spoolfs_config cfg;
	const char *s;
	FILE *f;
	long n;
	int rc;

	snprintf(path, sizeof(path), "%s/examples/spoolfs.conf",
		 SPOOLFS_SOURCE_DIR);
	f = fopen(path, "r");
	CHECK(f != NULL);
	if (!f) {
		fprintf(stderr, "  cannot open %s: %s\n", path, strerror(errno));
		return;
	}
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	rewind(f);
	text = calloc(1, (size_t)n + 1);
	CHECK(fread(text, 1, (size_t)n, f) == (size_t)n);
	fclose(f);

	for (s = text; (s = strstr(s, "/etc/spoolfs/")); ) {
		size_t k = 0;

		s += strlen("/etc/spoolfs/");
		while (s[k] && !strchr(" \t\n;", s[k]) && k < sizeof(name) - 1) {
			name[k] = s[k];
			k++;
		}
		name[k] = '\0';
		if (k)
			write_file(tmp(name), "secret\n", 0600);
	}
	t = subst(text, "/etc/spoolfs/", tmp(""));
	free(text);
	write_file(conf, t, 0600);
	free(t);
	rc = spoolfs_config_load(&cfg, conf, err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	if (rc) {
		fprintf(stderr, "  examples/spoolfs.conf: %s\n", err);
		return;
	}
	CHECK(cfg.ndests >= 3);
	CHECK(spoolfs_config_dest(&cfg, "nas") != NULL);
	spoolfs_config_release(&cfg);
}

static void test_syntax(void)
{
	struct spoolfs_config cfg;
	const struct spoolfs_dest *d;
	char err[1024];
	int rc;

	mkdir(tmp("sub"), 0700);
	write_file(tmp("sub/pw"), "hunter2\r\n", 0600);
	write_file(tmp("home/.ssh/idk"), "k", 0600);
	rc = load(&cfg,
		  "\xEF\xBB\xBF# a comment\n"
		  "; another\n"
		  "   [spool]   ; the spool\n"
		  "\tdir = ~/spool\n"
		  "  settle: 0\n"
		  "fsync = never\n"
		  "max_size = 1.5G\n"
		  "[ dest  a.b_c-1 ]\n"
		  "    url = SFTP://h/~/up\n"
		  "    user = me\n"
		  "    password_file = sub/pw\n"
		  "    identity = ~/.ssh/idk\n"
		  "    ssh_agent = on\n"
		  "    host_key = SHA256:abc+/DEF=\n"
		  "    connections = 64\n"
		  "    retries = 0\n"
		  "    backoff = 250ms .. 2h\n"
		  "    stall_timeout = 1m\n"
		  "    connect_timeout = 5\n"
		  "    max_rate = 10MiB\n"
		  "    delete_remote = TRUE\n"
		  "    keep_uploaded = 1\n"
		  "    fallback = z\n"
		  "[dest z]\n"
		  "url = ftp://u@h:2121/\n"
		  "user = other\n"
		  "password = se;cret ; comment\n"
		  "active = yes\n"
		  "[dest s]\n"
		  "url = ftps://h/x\n"
		  "tls_mode = implicit\n"
		  "tls_verify = off\n"
		  "tls_pin = sha256//AAA=;sha256//BBB=\n",
		  err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	if (rc) {
		fprintf(stderr, "  %s\n", err);
		return;
	}
	CHECK_EQ_STR(cfg.spool_dir, tmp("home/spool"));
	CHECK_EQ_INT(cfg.settle_ms, 0);
	CHECK_EQ_INT(cfg.fsync, SPOOLFS_FSYNC_NEVER);
	CHECK(cfg.max_size == 3ull << 29);
	d = spoolfs_config_dest(&cfg, "a.b_c-1");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_INT(d->line, 8);
		CHECK_EQ_STR(d->scheme, "sftp");
		CHECK_EQ_STR(d->path, "~/up");
		CHECK_EQ_STR(d->user, "me");
		CHECK_EQ_STR(d->password, "hunter2");
		CHECK_EQ_STR(d->identity, tmp("home/.ssh/idk"));
		CHECK_EQ_STR(d->known_hosts, tmp("home/.ssh/known_hosts"));
		CHECK(d->ssh_agent);
		CHECK_EQ_STR(d->host_key, "SHA256:abc+/DEF=");
		CHECK_EQ_INT(d->connections, 64);
		CHECK_EQ_INT(d->retries, 0);
		CHECK_EQ_INT(d->backoff_min_ms, 250);
		CHECK_EQ_INT(d->backoff_max_ms, 7200000);
		CHECK_EQ_INT(d->stall_timeout_ms, 60000);
		CHECK_EQ_INT(d->connect_timeout_ms, 5000);
		CHECK_EQ_INT(d->max_rate, 10 << 20);
		CHECK(d->delete_remote && d->keep_uploaded);
		CHECK_EQ_STR(d->url_display, "sftp://me@h/~/up");
	}
	d = spoolfs_config_dest(&cfg, "z");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_STR(d->user, "other");	/* user = wins over the url */
		CHECK_EQ_STR(d->password, "se;cret");
		CHECK_EQ_STR(d->path, "");
		CHECK_EQ_INT(d->port, 2121);
		CHECK(d->active);
		CHECK_EQ_STR(d->url_display, "ftp://other@h:2121/");
	}
	d = spoolfs_config_dest(&cfg, "s");
	CHECK(d != NULL);
	if (d) {
		CHECK_EQ_INT(d->tls_mode, SPOOLFS_TLS_IMPLICIT);
		CHECK(!d->tls_verify);
		CHECK_EQ_STR(d->tls_pin, "sha256//AAA=;sha256//BBB=");
		CHECK_EQ_STR(d->url_display, "ftps://h/x");
	}
	spoolfs_config_release(&cfg);

	/* defaults when nothing is set: spool under $XDG_CACHE_HOME */
	setenv("XDG_CACHE_HOME", tmp("cache"), 1);
	rc = load(&cfg, "[dest only]\nurl=file:///x\n", err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	if (rc == 0) {
		CHECK_EQ_STR(cfg.spool_dir, tmp("cache/spoolfs"));
		CHECK_EQ_INT(cfg.fsync, SPOOLFS_FSYNC_CLOSE);
		CHECK_EQ_INT(cfg.settle_ms, 500);
		CHECK_EQ_INT(cfg.max_size, 0);
		CHECK_EQ_INT(cfg.dests[0].connections, 2);
		CHECK_EQ_INT(cfg.dests[0].retries, 8);
		CHECK(cfg.dests[0].tls_verify);
		/* a local directory shares the writer's disk */
		CHECK(!cfg.dests[0].stream);
	}
	spoolfs_config_release(&cfg);
	/* stream: on for network destinations, off for file://, as set */
	rc = load(&cfg, "[dest a]\nurl=file:///x\nstream = yes\n"
		  "[dest b]\nurl=sftp://u@h/x\n"
		  "[dest c]\nurl=ftp://h/x\nstream = no\n", err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	if (rc == 0) {
		CHECK(cfg.dests[0].stream);
		CHECK(cfg.dests[1].stream);
		CHECK(!cfg.dests[2].stream);
	}
	spoolfs_config_release(&cfg);
	unsetenv("XDG_CACHE_HOME");
	rc = load(&cfg, "[dest only]\nurl=file:///x\n", err, sizeof(err));
	CHECK_EQ_INT(rc, 0);
	if (rc == 0)
		CHECK_EQ_STR(cfg.spool_dir, tmp("home/.cache/spoolfs"));
	spoolfs_config_release(&cfg);

	/* a relative config path is made absolute */
	{
		char cwd[1024];

		CHECK(getcwd(cwd, sizeof(cwd)) != NULL);
		CHECK_EQ_INT(chdir(tmpdir), 0);
		rc = spoolfs_config_load(&cfg, "t.conf", err, sizeof(err));
		CHECK_EQ_INT(rc, 0);
		if (rc == 0)
			CHECK_EQ_STR(cfg.path, conf);
		spoolfs_config_release(&cfg);
		CHECK_EQ_INT(chdir(cwd), 0);
	}
}

/* ---- bad configs ---- */

static void test_bad(void)
{
	char big[800];

	BAD("[foo]\n", 1, "unknown section [foo]; expected [spool] or [dest NAME]");
	BAD("[dest d]\nurl = file:///x\n\n[spoolz]\n", 4, "unknown section [spoolz]");
	BAD("[dest d]\nurl = file:///x\nretires = 3\n", 3,
	    "unknown key 'retires' in [dest d]; expected one of: url, user, password,");
	BAD("[spool]\nsize = 3\n[dest d]\nurl = file:///x\n", 2,
	    "unknown key 'size' in [spool]; expected one of: dir, max_size, fsync, settle");
	BAD("url = file:///x\n", 1, "key 'url' outside any section");
	BAD("[dest d]\nurl = file:///x\nurl = file:///y\n", 3,
	    "url set twice in [dest d] (first at line 2)");
	BAD("[dest d]\nurl =\n", 2, "url in [dest d] has no value; expected");
	BAD("[dest d]\nurl = file:///x\njunk\n", 3, "cannot parse the line");
	BAD("[dest d\nurl = file:///x\n", 1, "section header without ']'");
	BAD("[dest d] x\nurl = file:///x\n", 1, "text after a section header");
	snprintf(big, sizeof(big), "[dest d]\nurl = file:///%0300d\n", 0);
	BAD(big, 2, "line too long (314 characters); expected at most 199");
	/* a long comment is fine, inline or not */
	{
		struct spoolfs_config cfg;
		char err[1024];

		snprintf(big, sizeof(big), ";%0300d\n[dest d]\nurl = file:///x  ; %0300d\n", 0, 0);
		CHECK_EQ_INT(load(&cfg, big, err, sizeof(err)), 0);
		if (cfg.ndests == 1)
			CHECK_EQ_STR(cfg.dests[0].path, "/x");
		spoolfs_config_release(&cfg);
	}

	/* values */
	BAD("[dest d]\nurl = file:///x\nconnections = 0\n", 3,
	    "bad value '0' for connections in [dest d]; expected a number of workers from 1 to 64");
	BAD("[dest d]\nurl = file:///x\nconnections = 65\n", 3, "from 1 to 64");
	BAD("[dest d]\nurl = file:///x\nconnections = two\n", 3, "bad value 'two'");
	BAD("[dest d]\nurl = file:///x\nretries = -1\n", 3, "bad value '-1' for retries");
	BAD("[dest d]\nurl = file:///x\nkeep_uploaded = maybe\n", 3,
	    "bad value 'maybe' for keep_uploaded in [dest d]; expected yes or no");
	BAD("[dest d]\nurl = file:///x\nstall_timeout = 10 years\n", 3,
	    "expected a duration like 500ms, 30s");
	BAD("[dest d]\nurl = file:///x\nstall_timeout = 0\n", 3, "more than 0");
	BAD("[dest d]\nurl = file:///x\nbackoff = 5m..1s\n", 3,
	    "bad value '5m..1s' for backoff in [dest d]; expected MIN..MAX");
	BAD("[dest d]\nurl = file:///x\nbackoff = 0..1s\n", 3, "for backoff");
	BAD("[dest d]\nurl = file:///x\nbackoff = 5s\n", 3, "for backoff");
	BAD("[dest d]\nurl = file:///x\nmax_rate = 10X\n", 3,
	    "bad value '10X' for max_rate");
	BAD("[spool]\nmax_size = lots\n", 2, "bad value 'lots' for max_size in [spool]; expected a size");
	BAD("[spool]\nfsync = always\n", 2, "expected close or never");
	BAD("[spool]\nsettle = 1s # wait\n", 2, "an inline comment starts with ';'");
	BAD("[dest d]\nurl = ftps://h/\ntls_mode = auto\n", 3, "expected explicit or implicit");
	BAD("[dest d]\nurl = sftp://h/\nhost_key = MD5:aa\n", 3, "expected SHA256:");
	BAD("[dest d]\nurl = ftps://h/\ntls_pin = abc\n", 3, "expected sha256//");
	BAD("[dest d]\nurl = sftp://h/\nidentity = /nonexistent/key\n", 3,
	    "cannot read identity '/nonexistent/key': No such file or directory; expected");
	BAD("[dest d]\nurl = sftp://h/\nknown_hosts = @T@\n", 3, "is not a regular file");
	BAD("[dest d]\nurl = sftp://h/\nidentity = ~bob/key\n", 3, "~user paths are not supported");
	BAD("[dest d]\nurl = sftp://h/\nuser = a\x01\n", 3, "bad value");

	/* scheme and keys that do not fit it */
	BAD("[dest d]\nurl = http://h/x\n", 2,
	    "unsupported url scheme 'http'; expected file, sftp, ftp or ftps");
	BAD("[dest d]\nidentity = ~/.ssh/idk\nurl = ftp://h/x\n", 2,
	    "identity does not apply to ftp:// destinations like [dest d]; expected it only with sftp:// urls");
	BAD("[dest d]\nurl = ftp://h/x\ntls_mode = implicit\n", 3,
	    "tls_mode does not apply to ftp:// destinations");
	BAD("[dest d]\nurl = file:///x\nuser = me\n", 3,
	    "user does not apply to file:// destinations");
	BAD("[dest d]\nurl = sftp://h/x\nactive = yes\n", 3,
	    "expected it only with ftp:// and ftps:// urls");

	/* passwords */
	BAD("[dest d]\nurl = ftp://u:s3cret@h/\n", 2,
	    "url holds a password; expected none in the url: put it in password_file");
	BAD("[dest d]\nurl = ftp://u:@h/\n", 2, "url holds a password");
	BAD("[dest d]\nurl = ftp://h/\npassword_file = nothere\n", 3,
	    "cannot read password_file '");
	BAD("[dest d]\nurl = ftp://h/\npassword_file = nothere\n", 3,
	    "/nothere': No such file or directory; expected a readable file that holds only the password");
	write_file(tmp("two-lines"), "a\nb\n", 0600);
	BAD("[dest d]\nurl = ftp://h/\npassword_file = two-lines\n", 3,
	    "holds more than one line");
	write_file(tmp("pw"), "pw\n", 0600);
	BAD("[dest d]\nurl = ftp://h/\npassword = x\npassword_file = pw\n", 4,
	    "both password (line 3) and password_file in [dest d]; expected only one");
	BAD_MODE("[dest d]\nurl = ftp://h/\npassword = x\n", 0644, 3,
		 "mode 0644); expected mode 0600: run chmod 600 ");
	BAD_MODE("[dest d]\nurl = ftp://h/\npassword = x\n", 0640, 3, "chmod 600");
	BAD_MODE("[dest d]\nurl = ftp://h/\npassword = x\n", 0604, 3, "chmod 600");
	{
		struct spoolfs_config cfg;
		char err[1024];

		/* never echo a password */
		CHECK_EQ_INT(load(&cfg, "[dest d]\nurl = ftp://u:s3cret@h/\n",
				  err, sizeof(err)), -1);
		CHECK(strstr(err, "s3cret") == NULL);
		CHECK_EQ_INT(load_mode(&cfg, "[dest d]\nurl = ftp://h/\npassword = s3cret\n",
				       0400, err, sizeof(err)), 0);
		spoolfs_config_release(&cfg);
	}

	/* destinations */
	BAD("[dest d]\nurl = file:///x\n[dest d]\nurl = file:///y\n", 3,
	    "second [dest d] (the first is at line 1)");
	BAD("[spool]\n[spool]\n", 2, "second [spool] section (the first is at line 1)");
	BAD("[dest a b]\nurl = file:///x\n", 1,
	    "bad destination name 'a b'; expected letters, digits");
	BAD("[dest .hidden]\n", 1, "bad destination name '.hidden'");
	BAD("[dest .status]\n", 1, "bad destination name '.status'");
	BAD("[dest x/y]\n", 1, "bad destination name 'x/y'");
	BAD("[dest]\n", 1, "[dest] without a name; expected [dest NAME]");
	BAD("[spool]\ndir = /s\n", 2, "no destination; expected at least one [dest NAME]");
	BAD("", 1, "no destination");
	BAD("[dest d]\nurl = file:///x\n\n[dest e]\n; nothing\n", 4,
	    "[dest e] has no url; expected url = ");
	BAD("[dest d]\nurl = file:///x\nfallback = e\n", 1,
	    "[dest d] falls back to 'e', which is no [dest]");
	BAD("[dest d]\nurl = file:///x\nfallback = d\n", 1, "[dest d] falls back to itself");
	BAD("[dest a]\nurl = file:///x\nfallback = b\n"
	    "[dest b]\nurl = file:///x\nfallback = c\n"
	    "[dest c]\nurl = file:///x\nfallback = b\n", 4,
	    "[dest b]'s fallback chain loops (b -> c -> b); expected a chain that ends");
	BAD("[dest a]\nurl = file:///x\nfallback = b\n"
	    "[dest b]\nurl = file:///x\nfallback = a\n", 1,
	    "[dest a]'s fallback chain loops (a -> b -> a)");

	/* the file itself */
	{
		struct spoolfs_config cfg;
		char err[1024];

		CHECK_EQ_INT(spoolfs_config_load(&cfg, tmp("missing.conf"), err,
						 sizeof(err)), -1);
		CHECK(strstr(err, "missing.conf: cannot open the config: No such file or directory") != NULL);
		CHECK_EQ_INT(spoolfs_config_load(&cfg, tmpdir, err, sizeof(err)), -1);
		CHECK(strstr(err, "not a regular file") != NULL);
		/* no errbuf at all */
		CHECK_EQ_INT(spoolfs_config_load(&cfg, tmpdir, NULL, 0), -1);
	}
}

/* ---- urls ---- */

struct url_case {
	const char *url;
	const char *scheme, *user, *host;
	int port;
	const char *path, *display;
};

static const struct url_case good_urls[] = {
	{ "sftp://user@host:2222/abs/path", "sftp", "user", "host", 2222,
	  "/abs/path", "sftp://user@host:2222/abs/path" },
	{ "sftp://host/~/x", "sftp", NULL, "host", 0, "~/x", "sftp://host/~/x" },
	{ "sftp://host/~/", "sftp", NULL, "host", 0, "~", "sftp://host/~" },
	{ "sftp://host/~", "sftp", NULL, "host", 0, "~", "sftp://host/~" },
	{ "sftp://host", "sftp", NULL, "host", 0, "/", "sftp://host/" },
	{ "sftp://host/", "sftp", NULL, "host", 0, "/", "sftp://host/" },
	{ "sftp://host/a/", "sftp", NULL, "host", 0, "/a", "sftp://host/a" },
	{ "SFTP://Host//a//b", "sftp", NULL, "Host", 0, "/a/b", "sftp://Host/a/b" },
	{ "ftp://host/x/y", "ftp", NULL, "host", 0, "x/y", "ftp://host/x/y" },
	{ "ftp://host/", "ftp", NULL, "host", 0, "", "ftp://host/" },
	{ "ftp://host", "ftp", NULL, "host", 0, "", "ftp://host/" },
	{ "ftp://host/%2Fsrv/up", "ftp", NULL, "host", 0, "/srv/up",
	  "ftp://host/%2Fsrv/up" },
	{ "ftps://h.example:990/a/b/", "ftps", NULL, "h.example", 990, "a/b",
	  "ftps://h.example:990/a/b" },
	{ "ftp://h/a%3Fb%23c", "ftp", NULL, "h", 0, "a?b#c", "ftp://h/a%3Fb%23c" },
	{ "ftp://h/%C3%A9t%C3%A9", "ftp", NULL, "h", 0, "\xC3\xA9t\xC3\xA9",
	  "ftp://h/\xC3\xA9t\xC3\xA9" },
	{ "sftp://us%40er@[::1]:22/p%20q", "sftp", "us@er", "::1", 22, "/p q",
	  "sftp://us%40er@[::1]:22/p%20q" },
	{ "sftp://[fe80::1]/x", "sftp", NULL, "fe80::1", 0, "/x",
	  "sftp://[fe80::1]/x" },
	{ "ftp://10.0.0.1:21/", "ftp", NULL, "10.0.0.1", 21, "", "ftp://10.0.0.1:21/" },
	{ "file:///srv/archive", "file", NULL, NULL, 0, "/srv/archive",
	  "file:///srv/archive" },
	{ "file:///srv/archive/", "file", NULL, NULL, 0, "/srv/archive",
	  "file:///srv/archive" },
	{ "file://localhost/srv/x", "file", NULL, NULL, 0, "/srv/x",
	  "file:///srv/x" },
	{ "file:///", "file", NULL, NULL, 0, "/", "file:///" },
	{ "file:///a%20b", "file", NULL, NULL, 0, "/a b", "file:///a%20b" },
};

static const struct {
	const char *url, *msg;
} bad_urls[] = {
	{ "nourl", "url has no scheme; expected sftp://" },
	{ "://h/x", "url has no scheme" },
	{ "h\\ttp://h/x", "url has a bad scheme" },
	{ "http://h/x", "unsupported url scheme 'http'" },
	{ "ftp://u:pw@h/", "url holds a password" },
	{ "sftp://u:@h/", "url holds a password" },
	{ "file://host/x", "file:// url with host 'host'; expected file:///ABSOLUTE/PATH" },
	{ "file://srv", "file:// url with host 'srv'" },
	{ "file://", "file:// url without a path" },
	{ "file://u@/x", "file:// url with a user or port" },
	{ "sftp:///x", "url has no host; expected sftp://HOST/PATH" },
	{ "sftp://@h/x", "url has a bad user part" },
	{ "sftp://h:0/x", "url has a bad port '0'; expected a number from 1 to 65535" },
	{ "sftp://h:65536/x", "bad port '65536'" },
	{ "sftp://h:/x", "bad port ''" },
	{ "sftp://h:2x/x", "bad port '2x'" },
	{ "sftp://[::1/x", "url has '[' without ']'" },
	{ "sftp://[::1]x/", "url has text after ']'" },
	{ "sftp://[zz::1]/", "url has a bad host 'zz::1'" },
	{ "sftp://h_st!/", "url has a bad host 'h_st!'" },
	{ "ftp://h/a%zz", "bad %-escape" },
	{ "ftp://h/a%4", "bad %-escape" },
	{ "ftp://h/a%00b", "bad %-escape" },
	{ "ftp://h/a%0Ab", "url path holds a control character" },
	{ "ftp://h/a b", "url holds whitespace; expected a space written as %20" },
	{ "ftp://h/x?y", "url holds '?'" },
	{ "ftp://h/x#y", "url holds '#'" },
	{ "sftp://h/a/../b", "'.' or '..' component" },
	{ "sftp://h/./b", "'.' or '..' component" },
};

static void test_urls(void)
{
	struct spoolfs_config cfg;
	char text[512], err[1024];
	size_t i;
	int rc;

	for (i = 0; i < sizeof(good_urls) / sizeof(good_urls[0]); i++) {
		const struct url_case *u = &good_urls[i];
		const struct spoolfs_dest *d;

		snprintf(text, sizeof(text), "[dest d]\nurl = %s\n", u->url);
		rc = load(&cfg, text, err, sizeof(err));
		CHECK_EQ_INT(rc, 0);
		if (rc) {
			fprintf(stderr, "  %s: %s\n", u->url, err);
			continue;
		}
		d = &cfg.dests[0];
		CHECK_EQ_STR(d->scheme, u->scheme);
		if (u->user)
			CHECK_EQ_STR(d->user, u->user);
		else
			CHECK(d->user == NULL);
		if (u->host)
			CHECK_EQ_STR(d->host, u->host);
		else
			CHECK(d->host == NULL);
		CHECK_EQ_INT(d->port, u->port);
		CHECK_EQ_STR(d->path, u->path);
		CHECK_EQ_STR(d->url_display, u->display);
		spoolfs_config_release(&cfg);
	}
	for (i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
		snprintf(text, sizeof(text), "[dest d]\nurl = %s\n", bad_urls[i].url);
		check_bad(__LINE__, text, 0600, 2, bad_urls[i].msg);
	}
}

/* ---- durations and sizes ---- */

static void test_numbers(void)
{
	static const struct {
		const char *s;
		uint64_t v;
	} durations[] = {
		{ "0", 0 }, { "2", 2000 }, { "500ms", 500 }, { "30s", 30000 },
		{ "5m", 300000 }, { "1h", 3600000 }, { "1d", 86400000 },
		{ "1.5s", 1500 }, { "10min", 600000 }, { "30S", 30000 },
		{ "0.5", 500 },
	}, sizes[] = {
		{ "0", 0 }, { "4096", 4096 }, { "4096B", 4096 }, { "10K", 10240 },
		{ "10k", 10240 }, { "10KB", 10240 }, { "10KiB", 10240 },
		{ "3M", 3 << 20 }, { "50G", 50ull << 30 }, { "1.5G", 3ull << 29 },
		{ "2T", 2ull << 40 }, { "0.5K", 512 },
		{ "18446744073709551615", UINT64_MAX },
	};
	static const char *const bad_durations[] = {
		"", "s", "-1", " 5s", "5s ", "5 s", "5x", "1.", ".5", "1e3",
		"5sec5", "99999999999999999999", "18446744073709551615d",
		"1.1234567s",
	};
	static const char *const bad_sizes[] = {
		"", "K", "-1", "1.5", "10X", "10KK", "10 K", "1.G", "16777216T",
		"18446744073709551616", "10Bi", "0x10",
	};
	uint64_t v;
	size_t i;

	for (i = 0; i < sizeof(durations) / sizeof(durations[0]); i++) {
		v = 12345;
		CHECK_EQ_INT(spoolfs_parse_duration(durations[i].s, &v), 0);
		if (v != durations[i].v)
			fprintf(stderr, "  duration '%s'\n", durations[i].s);
		CHECK(v == durations[i].v);
	}
	for (i = 0; i < sizeof(bad_durations) / sizeof(bad_durations[0]); i++) {
		if (spoolfs_parse_duration(bad_durations[i], &v) != -1)
			fprintf(stderr, "  duration '%s' accepted\n", bad_durations[i]);
		CHECK_EQ_INT(spoolfs_parse_duration(bad_durations[i], &v), -1);
	}
	for (i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		v = 12345;
		CHECK_EQ_INT(spoolfs_parse_size(sizes[i].s, &v), 0);
		if (v != sizes[i].v)
			fprintf(stderr, "  size '%s'\n", sizes[i].s);
		CHECK(v == sizes[i].v);
	}
	for (i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		if (spoolfs_parse_size(bad_sizes[i], &v) != -1)
			fprintf(stderr, "  size '%s' accepted\n", bad_sizes[i]);
		CHECK_EQ_INT(spoolfs_parse_size(bad_sizes[i], &v), -1);
	}
}

/* ---- the embedded default ---- */

static void test_default(void)
{
	struct spoolfs_config cfg;
	struct stat st;
	char err[512], *p;

	memset(&cfg, 0x5a, sizeof(cfg));
	CHECK_EQ_INT(spoolfs_config_default(&cfg, err, sizeof(err)), 0);
	CHECK(cfg.path == NULL);
	CHECK_EQ_STR(cfg.spool_dir, tmp("home/.cache/spoolfs"));
	CHECK_EQ_INT(cfg.ndests, 1);
	CHECK_EQ_STR(cfg.dests[0].name, "local");
	CHECK_EQ_STR(cfg.dests[0].scheme, "file");
	CHECK_EQ_STR(cfg.dests[0].path, tmp("home/.local/share/spoolfs/local"));
	CHECK(stat(tmp("home/.local/share/spoolfs/local"), &st) == 0 &&
	      S_ISDIR(st.st_mode) && (st.st_mode & 07777) == 0700);
	CHECK(strncmp(cfg.dests[0].url_display, "file:///", 8) == 0);
	CHECK_EQ_INT(cfg.dests[0].connections, 2);
	CHECK(spoolfs_config_dest(&cfg, "local") == &cfg.dests[0]);
	spoolfs_config_release(&cfg);

	setenv("XDG_DATA_HOME", tmp("data dir"), 1);
	setenv("XDG_CACHE_HOME", tmp("cache"), 1);
	CHECK_EQ_INT(spoolfs_config_default(&cfg, err, sizeof(err)), 0);
	CHECK_EQ_STR(cfg.spool_dir, tmp("cache/spoolfs"));
	CHECK_EQ_STR(cfg.dests[0].path, tmp("data dir/spoolfs/local"));
	CHECK(stat(tmp("data dir/spoolfs/local"), &st) == 0 && S_ISDIR(st.st_mode));
	CHECK(strstr(cfg.dests[0].url_display, "/data%20dir/spoolfs/local") != NULL);
	spoolfs_config_release(&cfg);

	/* a data dir that cannot be created */
	write_file(tmp("file"), "", 0600);
	setenv("XDG_DATA_HOME", tmp("file"), 1);
	CHECK_EQ_INT(spoolfs_config_default(&cfg, err, sizeof(err)), -1);
	CHECK(strstr(err, "cannot create") != NULL);
	unsetenv("XDG_DATA_HOME");
	unsetenv("XDG_CACHE_HOME");

	p = spoolfs_config_default_path();
	CHECK_EQ_STR(p, tmp("home/.config/spoolfs/spoolfs.conf"));
	free(p);
	setenv("XDG_CONFIG_HOME", tmp("cfg"), 1);
	p = spoolfs_config_default_path();
	CHECK_EQ_STR(p, tmp("cfg/spoolfs/spoolfs.conf"));
	free(p);
	setenv("XDG_CONFIG_HOME", "relative/is/ignored", 1);
	p = spoolfs_config_default_path();
	CHECK_EQ_STR(p, tmp("home/.config/spoolfs/spoolfs.conf"));
	free(p);
	unsetenv("XDG_CONFIG_HOME");

	/* release accepts a zeroed struct */
	memset(&cfg, 0, sizeof(cfg));
	spoolfs_config_release(&cfg);
}

static int rm_one(const char *path, const struct stat *st, int flag,
		  struct FTW *ftw)
{
	(void)st;
	(void)flag;
	(void)ftw;
	remove(path);
	return 0;
}

int main(void)
{
	if (!mkdtemp(tmpdir)) {
		perror("mkdtemp");
		return 2;
	}
	snprintf(conf, sizeof(conf), "%s/t.conf", tmpdir);
	mkdir(tmp("home"), 0700);
	mkdir(tmp("home/.ssh"), 0700);
	setenv("HOME", tmp("home"), 1);
	unsetenv("XDG_CACHE_HOME");
	unsetenv("XDG_DATA_HOME");
	unsetenv("XDG_CONFIG_HOME");

	test_design_example();
	test_example_file();
	test_syntax();
	test_bad();
	test_urls();
	test_numbers();
	test_default();

	nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
	return check_done();
}
