/*
 * config.c - load and validate the spoolfs INI configuration.
 *
 * libinih tokenizes; we feed it through our own reader (cfg_read_line) so
 * that we know the line of every key, since Debian's libinih hands the
 * handler no line number.  The reader returns one line per call and:
 *   - counts lines, for "FILE:LINE: ..." messages;
 *   - strips leading whitespace, because libinih would otherwise take an
 *     indented "key = value" for the continuation of the previous value;
 *   - handles [section] headers itself and hands libinih an empty line
 *     instead: libinih reports a section only when it holds a key, and
 *     truncates long names silently;
 *   - hands comment lines over as empty lines (so long comments are fine);
 *   - refuses lines longer than libinih's buffer instead of letting them be
 *     split in two;
 *   - stops the parse (returns NULL) after the first error.
 * What libinih still does: "key = value" (or "key: value") splitting,
 * trimming, and ';' inline comments (a ';' after whitespace).  '#' only
 * starts a comment at the beginning of a line.
 *
 * Keys are described by two tables (spool_keys, dest_keys): the type says
 * how the value is parsed, the offset where it goes.  Checks that need the
 * whole file (missing url, keys that do not fit the url's scheme, fallback
 * chains, no destination at all) run after parsing, in cfg_finish().
 *
 * Only the first error is reported, always as one line in errbuf.  Messages
 * never contain a password: a url is never echoed whole.
 */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ini.h>
#include <limits.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Bigger secret files are not a password. */
#define SECRET_FILE_MAX 4096

/* Which url schemes a key applies to. */
#define SCH_FILE	(1u << 0)
#define SCH_SFTP	(1u << 1)
#define SCH_FTP		(1u << 2)
#define SCH_FTPS	(1u << 3)
#define SCH_FTPANY	(SCH_FTP | SCH_FTPS)
#define SCH_NET		(SCH_SFTP | SCH_FTP | SCH_FTPS)
#define SCH_ALL		(SCH_FILE | SCH_NET)

enum key_type {
	KEY_URL,		/* the destination's url, parsed */
	KEY_STRING,		/* any text without control characters */
	KEY_PASSWORD,		/* text; the config must be 0600 */
	KEY_SECRET_FILE,	/* a path; the field gets the file's content */
	KEY_FILE,		/* a path to a readable file */
	KEY_DIR,		/* a path, not checked (created later) */
	KEY_BOOL,
	KEY_INT,		/* int in [min, max] */
	KEY_DURATION,		/* uint64_t ms, >= min */
	KEY_SIZE,		/* uint64_t bytes */
	KEY_BACKOFF,		/* MIN..MAX into backoff_min_ms, backoff_max_ms */
	KEY_FSYNC,
	KEY_TLS_MODE,
	KEY_HOST_KEY,		/* "SHA256:base64" */
	KEY_TLS_PIN,		/* "sha256//base64[;sha256//...]" */
	KEY_DEST_NAME,		/* another [dest]'s name, checked in cfg_finish() */
};

struct key_desc {
	const char *name;
	enum key_type type;
	size_t off;		/* into struct spoolfs_config or spoolfs_dest */
	unsigned schemes;	/* SCH_*; only for [dest] keys */
	long long min, max;	/* KEY_INT range, KEY_DURATION minimum */
	const char *expect;	/* what the value should look like */
};

#define DOFF(field) offsetof(struct spoolfs_dest, field)
#define COFF(field) offsetof(struct spoolfs_config, field)

#define EXPECT_BOOL "yes or no (true/false, on/off, 1/0)"
#define EXPECT_DURATION "a duration like 500ms, 30s, 5m, 1h or 1d"
#define EXPECT_SIZE "a size like 0, 4096, 10M, 1.5G or 50G"

static const struct key_desc spool_keys[] = {
	{ "dir", KEY_DIR, COFF(spool_dir), 0, 0, 0,
	  "a directory: absolute, ~/PATH, or relative to the config" },
	{ "max_size", KEY_SIZE, COFF(max_size), 0, 0, 0,
	  EXPECT_SIZE " (0 = only the disk limits)" },
	{ "fsync", KEY_FSYNC, COFF(fsync), 0, 0, 0, "close or never" },
	{ "settle", KEY_DURATION, COFF(settle_ms), 0, 0, 0, EXPECT_DURATION },
};

static const struct key_desc dest_keys[] = {
	{ "url", KEY_URL, 0, SCH_ALL, 0, 0,
	  "sftp://[USER@]HOST[:PORT]/PATH, ftp://..., ftps://... or file:///PATH" },
	{ "user", KEY_STRING, DOFF(user), SCH_NET, 0, 0, "a user name" },
	{ "password", KEY_PASSWORD, DOFF(password), SCH_NET, 0, 0,
	  "the password (better: password_file)" },
	{ "password_file", KEY_SECRET_FILE, DOFF(password), SCH_NET, 0, 0,
	  "a readable file that holds only the password" },
	{ "identity", KEY_FILE, DOFF(identity), SCH_SFTP, 0, 0,
	  "a readable SSH private key file" },
	{ "identity_passphrase_file", KEY_SECRET_FILE,
	  DOFF(identity_passphrase), SCH_SFTP, 0, 0,
	  "a readable file that holds only the key's passphrase" },
	{ "ssh_agent", KEY_BOOL, DOFF(ssh_agent), SCH_SFTP, 0, 0, EXPECT_BOOL },
	{ "known_hosts", KEY_FILE, DOFF(known_hosts), SCH_SFTP, 0, 0,
	  "a readable known_hosts file" },
	{ "host_key", KEY_HOST_KEY, DOFF(host_key), SCH_SFTP, 0, 0,
	  "SHA256:BASE64 as printed by ssh-keygen -lf" },
	{ "tls_mode", KEY_TLS_MODE, DOFF(tls_mode), SCH_FTPS, 0, 0,
	  "explicit or implicit" },
	{ "tls_ca", KEY_FILE, DOFF(tls_ca), SCH_FTPS, 0, 0,
	  "a readable CA certificate file (PEM)" },
	{ "tls_pin", KEY_TLS_PIN, DOFF(tls_pin), SCH_FTPS, 0, 0,
	  "sha256//BASE64, curl's pinned public key" },
	{ "tls_verify", KEY_BOOL, DOFF(tls_verify), SCH_FTPS, 0, 0, EXPECT_BOOL },
	{ "active", KEY_BOOL, DOFF(active), SCH_FTPANY, 0, 0, EXPECT_BOOL },
	{ "connections", KEY_INT, DOFF(connections), SCH_ALL, 1, 64,
	  "a number of workers from 1 to 64" },
	{ "retries", KEY_INT, DOFF(retries), SCH_ALL, 0, 1000,
	  "a number of retries from 0 to 1000" },
	{ "backoff", KEY_BACKOFF, 0, SCH_ALL, 0, 0,
	  "MIN..MAX durations like 1s..5m, MIN > 0" },
	{ "stall_timeout", KEY_DURATION, DOFF(stall_timeout_ms), SCH_ALL, 1, 0,
	  EXPECT_DURATION ", more than 0" },
	{ "connect_timeout", KEY_DURATION, DOFF(connect_timeout_ms), SCH_NET,
	  1, 0, EXPECT_DURATION ", more than 0" },
	{ "max_rate", KEY_SIZE, DOFF(max_rate), SCH_ALL, 0, 0,
	  "bytes per second like 0 (unlimited), 500K or 10M" },
	{ "fallback", KEY_DEST_NAME, DOFF(fallback), SCH_ALL, 0, 0,
	  "the name of another [dest]" },
	{ "delete_remote", KEY_BOOL, DOFF(delete_remote), SCH_ALL, 0, 0,
	  EXPECT_BOOL },
	{ "keep_uploaded", KEY_BOOL, DOFF(keep_uploaded), SCH_ALL, 0, 0,
	  EXPECT_BOOL },
	{ "require_mount", KEY_BOOL, DOFF(require_mount), SCH_FILE, 0, 0,
	  EXPECT_BOOL },
	{ "stream", KEY_BOOL, DOFF(stream), SCH_ALL, 0, 0, EXPECT_BOOL },
};

#define MAX_KEYS 32
_Static_assert(ARRAY_SIZE(dest_keys) <= MAX_KEYS, "MAX_KEYS too small");
_Static_assert(ARRAY_SIZE(spool_keys) <= MAX_KEYS, "MAX_KEYS too small");

enum section_kind {
	SEC_NONE = 0,
	SEC_SPOOL,
	SEC_DEST,
};

/* What the parse knows about a destination beyond struct spoolfs_dest. */
struct dest_parse {
	int key_line[MAX_KEYS];	/* line of each dest_keys[] entry, 0 = unset */
	char *url_user;		/* user part of the url; `user =` wins */
	unsigned scheme;	/* SCH_* of the url, 0 before the url */
};

struct cfg_parse {
	struct spoolfs_config *cfg;
	struct dest_parse *dp;	/* parallel to cfg->dests */
	const char *file;	/* the config's name in messages, as given */
	char *dir;		/* its directory, for relative paths */
	struct stat st;
	FILE *fp;
	char *buf;		/* getline() buffer */
	size_t bufsz;
	int lineno;
	int err_line;		/* line of the first error */
	enum section_kind kind;
	int spool_line;		/* line of [spool], 0 if none yet */
	int spool_key_line[MAX_KEYS];
	char *errbuf;
	size_t errlen;
	bool failed;
};

static void cfg_verror(struct cfg_parse *p, int line, const char *fmt,
		       va_list ap)
{
	size_t n;
	int r;

	if (p->failed)
		return;
	p->failed = true;
	p->err_line = line;
	if (!p->errbuf || p->errlen == 0)
		return;
	if (line > 0)
		r = snprintf(p->errbuf, p->errlen, "%s:%d: ", p->file, line);
	else
		r = snprintf(p->errbuf, p->errlen, "%s: ", p->file);
	n = r < 0 ? 0 : (size_t)r;
	if (n < p->errlen)
		vsnprintf(p->errbuf + n, p->errlen - n, fmt, ap);
}

/* Record the first error at LINE (0: no line).  Returns -1. */
__attribute__((format(printf, 3, 4)))
static int cfg_error(struct cfg_parse *p, int line, const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	cfg_verror(p, line, fmt, ap);
	va_end(ap);
	return -1;
}

static int cfg_nomem(struct cfg_parse *p)
{
	return cfg_error(p, p->lineno, "out of memory");
}

/* ---- small string helpers ---- */

static char *trim(char *s)
{
	char *e;

	while (isspace((unsigned char)*s))
		s++;
	e = s + strlen(s);
	while (e > s && isspace((unsigned char)e[-1]))
		*--e = '\0';
	return s;
}

static bool has_ctrl(const char *s)
{
	for (; *s; s++)
		if ((unsigned char)*s < 0x20 || *s == 0x7f)
			return true;
	return false;
}

static char *join3(const char *a, const char *b, const char *c)
{
	size_t la = strlen(a), lb = strlen(b), lc = strlen(c);
	char *s = malloc(la + lb + lc + 1);

	if (!s)
		return NULL;
	memcpy(s, a, la);
	memcpy(s + la, b, lb);
	memcpy(s + la + lb, c, lc + 1);
	return s;
}

/* $HOME, else the password database; NULL if neither is usable. */
static const char *home_dir(void)
{
	const char *h = getenv("HOME");
	struct passwd *pw;

	if (h && h[0] == '/')
		return h;
	pw = getpwuid(getuid());
	if (pw && pw->pw_dir && pw->pw_dir[0] == '/')
		return pw->pw_dir;
	return NULL;
}

/* $HOME/SUFFIX */
static char *home_path(const char *suffix)
{
	const char *home = home_dir();

	return home ? join3(home, "/", suffix) : NULL;
}

/* $VAR/SUFFIX when VAR is an absolute path, else $HOME/HOMESUFFIX/SUFFIX. */
static char *xdg_path(const char *var, const char *homesuffix,
		      const char *suffix)
{
	const char *v = getenv(var), *home;
	char *base, *s;

	if (v && v[0] == '/')
		return join3(v, "/", suffix);
	home = home_dir();
	if (!home)
		return NULL;
	base = join3(home, "/", homesuffix);
	if (!base)
		return NULL;
	s = join3(base, "/", suffix);
	free(base);
	return s;
}

/* ---- numbers ---- */

/*
 * Parse digits with an optional fraction of up to 6 digits: "1.5" ->
 * whole 1, frac 5, fdiv 10.  Advances *sp past the number.
 */
static int parse_decimal(const char **sp, uint64_t *whole, uint64_t *frac,
			 uint64_t *fdiv)
{
	const char *s = *sp;
	uint64_t w = 0, f = 0, d = 1;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		uint64_t digit = (uint64_t)(*s - '0');

		if (w > (UINT64_MAX - digit) / 10)
			return -1;
		w = w * 10 + digit;
	}
	if (*s == '.') {
		s++;
		if (!isdigit((unsigned char)*s))
			return -1;
		for (; isdigit((unsigned char)*s); s++) {
			if (d >= 1000000)
				return -1;
			f = f * 10 + (uint64_t)(*s - '0');
			d *= 10;
		}
	}
	*whole = w;
	*frac = f;
	*fdiv = d;
	*sp = s;
	return 0;
}

/* whole.frac * mult, or -1 on overflow. */
static int scale(uint64_t whole, uint64_t frac, uint64_t fdiv, uint64_t mult,
		 uint64_t *out)
{
	uint64_t a, b;

	if (whole > UINT64_MAX / mult)
		return -1;
	a = whole * mult;
	b = frac * mult / fdiv;		/* frac < 10^6, mult < 2^41: no overflow */
	if (a > UINT64_MAX - b)
		return -1;
	*out = a + b;
	return 0;
}

int spoolfs_parse_duration(const char *s, uint64_t *ms)
{
	static const struct {
		const char *unit;
		uint64_t mult;
	} units[] = {
		{ "", 1000 }, { "ms", 1 }, { "s", 1000 }, { "sec", 1000 },
		{ "m", 60000 }, { "min", 60000 }, { "h", 3600000 },
		{ "d", 86400000 },
	};
	uint64_t whole, frac, fdiv;
	size_t i;

	if (!s || parse_decimal(&s, &whole, &frac, &fdiv) < 0)
		return -1;
	for (i = 0; i < ARRAY_SIZE(units); i++)
		if (strcasecmp(s, units[i].unit) == 0)
			return scale(whole, frac, fdiv, units[i].mult, ms);
	return -1;
}

int spoolfs_parse_size(const char *s, uint64_t *bytes)
{
	static const char units[] = "kmgt";
	uint64_t whole, frac, fdiv, mult = 1;
	const char *u;

	if (!s || parse_decimal(&s, &whole, &frac, &fdiv) < 0)
		return -1;
	if (*s && (u = strchr(units, tolower((unsigned char)*s)))) {
		mult = 1ull << (10 * (u - units + 1));
		s++;
		if (tolower((unsigned char)*s) == 'i')
			s++;
	} else if (frac) {
		return -1;	/* a fraction of a byte */
	}
	if (tolower((unsigned char)*s) == 'b')
		s++;
	if (*s)
		return -1;
	return scale(whole, frac, fdiv, mult, bytes);
}

static int parse_bool(const char *v, bool *out)
{
	static const char *const yes[] = { "yes", "true", "on", "1" };
	static const char *const no[] = { "no", "false", "off", "0" };
	size_t i;

	for (i = 0; i < ARRAY_SIZE(yes); i++) {
		if (strcasecmp(v, yes[i]) == 0) {
			*out = true;
			return 0;
		}
		if (strcasecmp(v, no[i]) == 0) {
			*out = false;
			return 0;
		}
	}
	return -1;
}

static int parse_int(const char *v, long long min, long long max, int *out)
{
	long long n = 0;
	const char *s = v;

	if (!isdigit((unsigned char)*s))
		return -1;
	for (; isdigit((unsigned char)*s); s++) {
		n = n * 10 + (*s - '0');
		if (n > max)
			return -1;
	}
	if (*s || n < min)
		return -1;
	*out = (int)n;
	return 0;
}

static bool is_base64(const char *s)
{
	if (!*s)
		return false;
	for (; *s; s++)
		if (!isalnum((unsigned char)*s) && !strchr("+/=", *s))
			return false;
	return true;
}

/* "sha256//B64" or several joined by ';'. */
static bool is_tls_pin(const char *v)
{
	char buf[1024], *tok, *save;

	if (strlen(v) >= sizeof(buf))
		return false;
	strcpy(buf, v);
	for (tok = strtok_r(buf, ";", &save); tok;
	     tok = strtok_r(NULL, ";", &save))
		if (strncmp(tok, "sha256//", 8) != 0 || !is_base64(tok + 8))
			return false;
	return buf[0] != '\0';
}

/* ---- paths and secret files ---- */

/* Resolve a path from the config: "~/x", "/x", or relative to its dir. */
static int cfg_path(struct cfg_parse *p, const char *key, const char *v,
		    char **out)
{
	const char *home;

	if (v[0] == '~') {
		if (v[1] != '/' && v[1] != '\0')
			return cfg_error(p, p->lineno,
					 "%s '%s': ~user paths are not supported; expected an absolute path, ~/PATH or a path relative to the config",
					 key, v);
		home = home_dir();
		if (!home)
			return cfg_error(p, p->lineno,
					 "%s '%s': cannot tell the home directory; expected $HOME to be set",
					 key, v);
		*out = join3(home, "", v + 1);
	} else if (v[0] == '/') {
		*out = strdup(v);
	} else {
		*out = join3(p->dir, "/", v);
	}
	return *out ? 0 : cfg_nomem(p);
}

static int check_readable(struct cfg_parse *p, const struct key_desc *k,
			  const char *path)
{
	struct stat st;
	int fd;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cfg_error(p, p->lineno, "cannot read %s '%s': %s; expected %s",
				 k->name, path, strerror(errno), k->expect);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		close(fd);
		return cfg_error(p, p->lineno, "%s '%s' is not a regular file; expected %s",
				 k->name, path, k->expect);
	}
	close(fd);
	return 0;
}

/* Read a one-line secret; a single trailing newline is dropped. */
static int read_secret(struct cfg_parse *p, const struct key_desc *k,
		       const char *path, char **out)
{
	char buf[SECRET_FILE_MAX + 1];
	struct stat st;
	size_t n = 0;
	ssize_t r;
	int fd, rc = -1;

	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return cfg_error(p, p->lineno, "cannot read %s '%s': %s; expected %s",
				 k->name, path, strerror(errno), k->expect);
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		cfg_error(p, p->lineno, "%s '%s' is not a regular file; expected %s",
			  k->name, path, k->expect);
		goto out_close;
	}
	while (n < sizeof(buf)) {
		r = read(fd, buf + n, sizeof(buf) - n);
		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0) {
			cfg_error(p, p->lineno, "cannot read %s '%s': %s; expected %s",
				  k->name, path, strerror(errno), k->expect);
			goto out_wipe;
		}
		if (r == 0)
			break;
		n += (size_t)r;
	}
	if (n > SECRET_FILE_MAX) {
		cfg_error(p, p->lineno, "%s '%s' is larger than %d bytes; expected %s",
			  k->name, path, SECRET_FILE_MAX, k->expect);
		goto out_wipe;
	}
	if (n > 0 && buf[n - 1] == '\n')
		n--;
	if (n > 0 && buf[n - 1] == '\r')
		n--;
	buf[n] = '\0';
	if (memchr(buf, '\n', n) || memchr(buf, '\r', n) || strlen(buf) != n) {
		cfg_error(p, p->lineno, "%s '%s' holds more than one line; expected %s",
			  k->name, path, k->expect);
		goto out_wipe;
	}
	*out = strdup(buf);
	rc = *out ? 0 : cfg_nomem(p);
out_wipe:
	explicit_bzero(buf, sizeof(buf));
out_close:
	close(fd);
	return rc;
}

/* ---- urls ---- */

static int hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	c = tolower(c);
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

/* Percent-decode [s, s+n) into a new string; NULL on a bad %XX or NUL. */
static char *pct_decode(const char *s, size_t n, bool *bad)
{
	char *out = malloc(n + 1), *o = out;
	size_t i;
	int hi, lo;

	*bad = false;
	if (!out)
		return NULL;
	for (i = 0; i < n; i++) {
		if (s[i] != '%') {
			*o++ = s[i];
			continue;
		}
		if (i + 2 >= n ||
		    (hi = hexval((unsigned char)s[i + 1])) < 0 ||
		    (lo = hexval((unsigned char)s[i + 2])) < 0 ||
		    (hi == 0 && lo == 0)) {
			*bad = true;
			free(out);
			return NULL;
		}
		*o++ = (char)(hi << 4 | lo);
		i += 2;
	}
	*o = '\0';
	return out;
}

/* Collapse "//", drop a trailing '/' (a lone "/" stays). In place. */
static void normalize_path(char *s)
{
	char *r = s, *w = s;

	for (; *r; r++) {
		if (*r == '/' && w > s && w[-1] == '/')
			continue;
		*w++ = *r;
	}
	*w = '\0';
	if (w - s > 1 && w[-1] == '/')
		w[-1] = '\0';
}

static bool has_dot_component(const char *s)
{
	const char *c = s, *e;
	size_t n;

	while (*c) {
		e = strchr(c, '/');
		n = e ? (size_t)(e - c) : strlen(c);
		if ((n == 1 && c[0] == '.') || (n == 2 && c[0] == '.' && c[1] == '.'))
			return true;
		if (!e)
			break;
		c = e + 1;
	}
	return false;
}

static unsigned scheme_bit(const char *scheme)
{
	if (strcmp(scheme, "file") == 0)
		return SCH_FILE;
	if (strcmp(scheme, "sftp") == 0)
		return SCH_SFTP;
	if (strcmp(scheme, "ftp") == 0)
		return SCH_FTP;
	if (strcmp(scheme, "ftps") == 0)
		return SCH_FTPS;
	return 0;
}

static bool valid_host(const char *h, bool v6)
{
	const char *ok = v6 ? "0123456789abcdefABCDEF:." : NULL;

	if (!*h)
		return false;
	for (; *h; h++) {
		if (v6 ? !strchr(ok, *h)
		       : !(isalnum((unsigned char)*h) || strchr("-._", *h)))
			return false;
	}
	return true;
}

/*
 * Parse URL into d->scheme, host, port, path and dp->url_user.  The url is
 * never quoted in messages: it may hold a password.
 */
static int parse_url(struct cfg_parse *p, struct spoolfs_dest *d,
		     struct dest_parse *dp, const char *url)
{
	const char *sep, *auth, *auth_end, *at, *hp, *colon = NULL;
	const char *hs, *he, *rawpath, *c;
	char scheme[16], *host = NULL, *path = NULL, *user = NULL;
	unsigned bit;
	size_t i, n;
	bool bad, v6 = false;
	long port = 0;

	sep = strstr(url, "://");
	n = sep ? (size_t)(sep - url) : 0;
	if (!sep || n == 0 || n >= sizeof(scheme))
		return cfg_error(p, p->lineno,
				 "url has no scheme; expected %s", dest_keys[0].expect);
	for (i = 0; i < n; i++) {
		if (!isalnum((unsigned char)url[i]) && !strchr("+.-", url[i]))
			return cfg_error(p, p->lineno,
					 "url has a bad scheme; expected %s",
					 dest_keys[0].expect);
		scheme[i] = (char)tolower((unsigned char)url[i]);
	}
	scheme[n] = '\0';
	bit = scheme_bit(scheme);
	if (!bit)
		return cfg_error(p, p->lineno,
				 "unsupported url scheme '%s'; expected file, sftp, ftp or ftps",
				 scheme);

	auth = sep + 3;
	auth_end = strchr(auth, '/');
	if (!auth_end)
		auth_end = auth + strlen(auth);
	rawpath = auth_end;

	/* Refuse a password before anything else can quote the url. */
	at = NULL;
	for (c = auth; c < auth_end; c++)
		if (*c == '@')
			at = c;
	if (at && memchr(auth, ':', (size_t)(at - auth)))
		return cfg_error(p, p->lineno,
				 "url holds a password; expected none in the url: put it in password_file (or password) instead");
	for (c = url; *c; c++) {
		if (isspace((unsigned char)*c))
			return cfg_error(p, p->lineno,
					 "url holds whitespace; expected a space written as %%20 (an inline comment starts with ';')");
		if ((unsigned char)*c < 0x20 || *c == 0x7f)
			return cfg_error(p, p->lineno,
					 "url holds a control character; expected %s",
					 dest_keys[0].expect);
		if (*c == '?' || *c == '#')
			return cfg_error(p, p->lineno,
					 "url holds '%c'; expected no query or fragment (write '%s' in a name as %s)",
					 *c, *c == '?' ? "?" : "#",
					 *c == '?' ? "%3F" : "%23");
	}

	if (at) {
		user = pct_decode(auth, (size_t)(at - auth), &bad);
		if (!user && !bad)
			return cfg_nomem(p);
		if (bad || !*user || has_ctrl(user)) {
			free(user);
			return cfg_error(p, p->lineno,
					 "url has a bad user part; expected USER@ with %%XX escapes for special characters");
		}
		hp = at + 1;
	} else {
		hp = auth;
	}

	/* host[:port], host may be [IPv6] */
	if (*hp == '[') {
		hs = hp + 1;
		he = memchr(hs, ']', (size_t)(auth_end - hs));
		if (!he) {
			cfg_error(p, p->lineno,
				  "url has '[' without ']'; expected an IPv6 address as [::1]");
			goto out_fail;
		}
		v6 = true;
		if (he + 1 < auth_end) {
			if (he[1] != ':') {
				cfg_error(p, p->lineno,
					  "url has text after ']'; expected [IPv6] or [IPv6]:PORT");
				goto out_fail;
			}
			colon = he + 1;
		}
	} else {
		hs = hp;
		colon = memchr(hp, ':', (size_t)(auth_end - hp));
		he = colon ? colon : auth_end;
	}
	host = strndup(hs, (size_t)(he - hs));
	if (!host) {
		cfg_nomem(p);
		goto out_fail;
	}
	if (colon) {
		char *end;

		errno = 0;
		port = isdigit((unsigned char)colon[1]) ?
			strtol(colon + 1, &end, 10) : -1;
		if (port < 1 || port > 65535 || errno || end != auth_end) {
			cfg_error(p, p->lineno,
				  "url has a bad port '%.*s'; expected a number from 1 to 65535",
				  (int)(auth_end - colon - 1), colon + 1);
			goto out_fail;
		}
	}

	if (bit == SCH_FILE) {
		if (user || colon) {
			cfg_error(p, p->lineno,
				  "file:// url with a user or port; expected file:///ABSOLUTE/PATH");
			goto out_fail;
		}
		if (*host && strcasecmp(host, "localhost") != 0) {
			cfg_error(p, p->lineno,
				  "file:// url with host '%s'; expected file:///ABSOLUTE/PATH (three slashes)",
				  host);
			goto out_fail;
		}
		free(host);
		host = NULL;
	} else if (!*host) {
		cfg_error(p, p->lineno, "url has no host; expected %s://HOST/PATH",
			  scheme);
		goto out_fail;
	} else if (!valid_host(host, v6)) {
		cfg_error(p, p->lineno,
			  "url has a bad host '%s'; expected a host name, an IPv4 address or [IPv6]",
			  host);
		goto out_fail;
	}

	/* The path, by curl's rules. */
	if (bit & SCH_FTPANY && *rawpath == '/')
		rawpath++;	/* ftp://h/x is x in the login directory */
	path = pct_decode(rawpath, strlen(rawpath), &bad);
	if (!path) {
		if (bad)
			cfg_error(p, p->lineno,
				  "url path has a bad %%-escape; expected %%XX with two hex digits, not %%00");
		else
			cfg_nomem(p);
		goto out_fail;
	}
	if (has_ctrl(path)) {
		cfg_error(p, p->lineno,
			  "url path holds a control character; expected printable names");
		goto out_fail;
	}
	if (bit == SCH_SFTP) {
		if (!*path) {
			free(path);
			path = strdup("/");
			if (!path) {
				cfg_nomem(p);
				goto out_fail;
			}
		} else if (strncmp(path, "/~/", 3) == 0 || strcmp(path, "/~") == 0) {
			memmove(path, path + 1, strlen(path));	/* "~/x" */
		}
	} else if (bit == SCH_FILE && path[0] != '/') {
		cfg_error(p, p->lineno,
			  "file:// url without a path; expected file:///ABSOLUTE/PATH");
		goto out_fail;
	}
	normalize_path(path);	/* "~/" becomes "~" */
	if (has_dot_component(path)) {
		cfg_error(p, p->lineno,
			  "url path has a '.' or '..' component; expected a plain path");
		goto out_fail;
	}

	d->scheme = strdup(scheme);
	if (!d->scheme) {
		cfg_nomem(p);
		goto out_fail;
	}
	d->host = host;
	d->port = (int)port;
	d->path = path;
	dp->url_user = user;
	dp->scheme = bit;
	return 0;

out_fail:
	free(user);
	free(host);
	free(path);
	return -1;
}

/* Append S to *buf, %-escaping bytes that cannot stand in a url. */
static void pct_append(char *buf, size_t *len, const char *s,
		       const char *extra)
{
	static const char hex[] = "0123456789ABCDEF";
	unsigned char c;

	for (; *s; s++) {
		c = (unsigned char)*s;
		if (c <= 0x20 || c == 0x7f || strchr("%?#", c) ||
		    (extra && strchr(extra, c))) {
			buf[(*len)++] = '%';
			buf[(*len)++] = hex[c >> 4];
			buf[(*len)++] = hex[c & 15];
		} else {
			buf[(*len)++] = (char)c;
		}
	}
	buf[*len] = '\0';
}

/* scheme://[user@]host[:port]/path, never with a password. */
static char *make_url_display(const struct spoolfs_dest *d, unsigned bit)
{
	size_t cap, len = 0;
	const char *path = d->path;
	char *s;

	cap = strlen(d->scheme) + 3 * (strlen(d->user ? d->user : "") +
				       strlen(d->host ? d->host : "") +
				       strlen(path)) + 32;
	s = malloc(cap);
	if (!s)
		return NULL;
	len = (size_t)sprintf(s, "%s://", d->scheme);
	if (d->user && bit != SCH_FILE) {
		pct_append(s, &len, d->user, "@:/[]");
		s[len++] = '@';
	}
	if (d->host) {
		if (strchr(d->host, ':'))
			len += (size_t)sprintf(s + len, "[%s]", d->host);
		else
			len += (size_t)sprintf(s + len, "%s", d->host);
	}
	if (d->port)
		len += (size_t)sprintf(s + len, ":%d", d->port);
	s[len++] = '/';
	s[len] = '\0';
	if (bit & SCH_FTPANY) {
		if (path[0] == '/') {	/* absolute: ftp://h/%2Fsrv */
			pct_append(s, &len, "/", "/");
			path++;
		}
	} else {
		path++;	/* "/x" -> "x"; sftp "~/x" gets its '/' back below */
		if (d->path[0] == '~')
			path = d->path;
	}
	pct_append(s, &len, path, NULL);
	return s;
}

/* ---- sections ---- */

static bool valid_dest_name(const char *n)
{
	if (!*n || *n == '.' || strlen(n) > 255)
		return false;
	for (; *n; n++)
		if (!isalnum((unsigned char)*n) && !strchr("._-", *n))
			return false;
	return true;
}

static void dest_defaults(struct spoolfs_dest *d)
{
	memset(d, 0, sizeof(*d));
	d->tls_mode = SPOOLFS_TLS_EXPLICIT;
	d->tls_verify = true;
	d->connections = 2;
	d->retries = 8;
	d->backoff_min_ms = 1000;
	d->backoff_max_ms = 300000;
	d->stall_timeout_ms = 60000;
	d->connect_timeout_ms = 30000;
}

static int add_dest(struct cfg_parse *p, const char *name, int line)
{
	struct spoolfs_config *cfg = p->cfg;
	struct spoolfs_dest *nd;
	struct dest_parse *np;
	size_t n = cfg->ndests + 1;

	nd = realloc(cfg->dests, n * sizeof(*nd));
	if (!nd)
		return cfg_nomem(p);
	cfg->dests = nd;
	np = realloc(p->dp, n * sizeof(*np));
	if (!np)
		return cfg_nomem(p);
	p->dp = np;
	memset(&np[n - 1], 0, sizeof(np[n - 1]));
	dest_defaults(&nd[n - 1]);
	nd[n - 1].name = strdup(name);
	if (!nd[n - 1].name)
		return cfg_nomem(p);
	nd[n - 1].line = line;
	cfg->ndests = n;
	return 0;
}

/* A "[...]" line (leading whitespace gone).  Modifies S. */
static int parse_section(struct cfg_parse *p, char *s)
{
	char *end = strchr(s, ']'), *tail, *inner, *name;
	const struct spoolfs_dest *old;

	if (!end)
		return cfg_error(p, p->lineno,
				 "section header without ']'; expected [spool] or [dest NAME]");
	tail = end + 1;
	while (isspace((unsigned char)*tail))
		tail++;
	if (*tail && *tail != ';' && *tail != '#')
		return cfg_error(p, p->lineno,
				 "text after a section header; expected nothing or a comment after ']'");
	*end = '\0';
	inner = trim(s + 1);

	if (strcmp(inner, "spool") == 0) {
		if (p->spool_line)
			return cfg_error(p, p->lineno,
					 "second [spool] section (the first is at line %d); expected one",
					 p->spool_line);
		p->spool_line = p->lineno;
		p->kind = SEC_SPOOL;
		return 0;
	}
	if (strncmp(inner, "dest", 4) != 0 ||
	    (inner[4] && !isspace((unsigned char)inner[4])))
		return cfg_error(p, p->lineno,
				 "unknown section [%s]; expected [spool] or [dest NAME]",
				 inner);
	name = trim(inner + 4);
	if (!*name)
		return cfg_error(p, p->lineno,
				 "[dest] without a name; expected [dest NAME]");
	if (!valid_dest_name(name))
		return cfg_error(p, p->lineno,
				 "bad destination name '%s'; expected letters, digits, '.', '_' and '-', not starting with '.'",
				 name);
	old = spoolfs_config_dest(p->cfg, name);
	if (old)
		return cfg_error(p, p->lineno,
				 "second [dest %s] (the first is at line %d); expected each name once",
				 name, old->line);
	p->kind = SEC_DEST;
	return add_dest(p, name, p->lineno);
}

/* ---- keys ---- */

static void key_list(char *buf, size_t len, const struct key_desc *keys,
		     size_t nkeys)
{
	size_t i, n = 0;

	buf[0] = '\0';
	for (i = 0; i < nkeys && n < len; i++)
		n += (size_t)snprintf(buf + n, len - n, "%s%s", i ? ", " : "",
				      keys[i].name);
}

static int bad_value(struct cfg_parse *p, const char *section,
		     const struct key_desc *k, const char *value)
{
	if (k->type == KEY_PASSWORD)
		value = "...";
	return cfg_error(p, p->lineno, "bad value '%s' for %s in %s; expected %s%s",
			 value, k->name, section, k->expect,
			 strstr(value, " #") ?
			 " (an inline comment starts with ';', not '#')" : "");
}

static int set_key(struct cfg_parse *p, const char *section,
		   const struct key_desc *k, char *base, const char *v)
{
	struct spoolfs_dest *d = (struct spoolfs_dest *)base;
	char **sfield = (char **)(base + k->off);
	uint64_t *u64 = (uint64_t *)(base + k->off);
	char *path = NULL, *s;
	uint64_t lo, hi;
	int rc;

	switch (k->type) {
	case KEY_URL:
		return parse_url(p, d, &p->dp[p->cfg->ndests - 1], v);
	case KEY_STRING:
	case KEY_DEST_NAME:
		if (has_ctrl(v))
			return bad_value(p, section, k, v);
		*sfield = strdup(v);
		return *sfield ? 0 : cfg_nomem(p);
	case KEY_PASSWORD:
		if (p->st.st_mode & 077)
			return cfg_error(p, p->lineno,
					 "password in a config that others can read (mode %04o); expected mode 0600: run chmod 600 %s, or move the password to password_file",
					 (unsigned)(p->st.st_mode & 07777), p->file);
		*sfield = strdup(v);
		return *sfield ? 0 : cfg_nomem(p);
	case KEY_SECRET_FILE:
		if (cfg_path(p, k->name, v, &path) < 0)
			return -1;
		rc = read_secret(p, k, path, sfield);
		free(path);
		return rc;
	case KEY_FILE:
	case KEY_DIR:
		if (cfg_path(p, k->name, v, &path) < 0)
			return -1;
		if (k->type == KEY_FILE && check_readable(p, k, path) < 0) {
			free(path);
			return -1;
		}
		*sfield = path;
		return 0;
	case KEY_BOOL:
		return parse_bool(v, (bool *)(base + k->off)) < 0 ?
			bad_value(p, section, k, v) : 0;
	case KEY_INT:
		return parse_int(v, k->min, k->max, (int *)(base + k->off)) < 0 ?
			bad_value(p, section, k, v) : 0;
	case KEY_DURATION:
		if (spoolfs_parse_duration(v, &lo) < 0 || lo < (uint64_t)k->min)
			return bad_value(p, section, k, v);
		*u64 = lo;
		return 0;
	case KEY_SIZE:
		return spoolfs_parse_size(v, u64) < 0 ?
			bad_value(p, section, k, v) : 0;
	case KEY_BACKOFF:
		s = strstr(v, "..");
		if (!s)
			return bad_value(p, section, k, v);
		{
			char buf[64];
			size_t n = (size_t)(s - v);

			if (n >= sizeof(buf))
				return bad_value(p, section, k, v);
			memcpy(buf, v, n);
			buf[n] = '\0';
			if (spoolfs_parse_duration(trim(buf), &lo) < 0 ||
			    snprintf(buf, sizeof(buf), "%s", s + 2) >= (int)sizeof(buf) ||
			    spoolfs_parse_duration(trim(buf), &hi) < 0 ||
			    lo == 0 || hi < lo)
				return bad_value(p, section, k, v);
		}
		d->backoff_min_ms = lo;
		d->backoff_max_ms = hi;
		return 0;
	case KEY_FSYNC:
		if (strcmp(v, "close") == 0)
			p->cfg->fsync = SPOOLFS_FSYNC_CLOSE;
		else if (strcmp(v, "never") == 0)
			p->cfg->fsync = SPOOLFS_FSYNC_NEVER;
		else
			return bad_value(p, section, k, v);
		return 0;
	case KEY_TLS_MODE:
		if (strcmp(v, "explicit") == 0)
			d->tls_mode = SPOOLFS_TLS_EXPLICIT;
		else if (strcmp(v, "implicit") == 0)
			d->tls_mode = SPOOLFS_TLS_IMPLICIT;
		else
			return bad_value(p, section, k, v);
		return 0;
	case KEY_HOST_KEY:
		if (strncmp(v, "SHA256:", 7) != 0 || !is_base64(v + 7))
			return bad_value(p, section, k, v);
		*sfield = strdup(v);
		return *sfield ? 0 : cfg_nomem(p);
	case KEY_TLS_PIN:
		if (!is_tls_pin(v))
			return bad_value(p, section, k, v);
		*sfield = strdup(v);
		return *sfield ? 0 : cfg_nomem(p);
	}
	return cfg_error(p, p->lineno, "internal error: key type %d", k->type);
}

static int cfg_handler(void *user, const char *section, const char *name,
		       const char *value)
{
	struct cfg_parse *p = user;
	const struct key_desc *keys, *k = NULL;
	char label[300], list[512], *base;
	int *lines;
	size_t nkeys, i;

	(void)section;	/* we track sections ourselves, see cfg_read_line() */
	if (p->failed)
		return 0;
	if (p->kind == SEC_NONE) {
		cfg_error(p, p->lineno,
			  "key '%s' outside any section; expected [spool] or [dest NAME] first",
			  name);
		return 0;
	}
	if (p->kind == SEC_SPOOL) {
		keys = spool_keys;
		nkeys = ARRAY_SIZE(spool_keys);
		lines = p->spool_key_line;
		base = (char *)p->cfg;
		snprintf(label, sizeof(label), "[spool]");
	} else {
		struct spoolfs_dest *d = &p->cfg->dests[p->cfg->ndests - 1];

		keys = dest_keys;
		nkeys = ARRAY_SIZE(dest_keys);
		lines = p->dp[p->cfg->ndests - 1].key_line;
		base = (char *)d;
		snprintf(label, sizeof(label), "[dest %s]", d->name);
	}
	for (i = 0; i < nkeys; i++) {
		if (strcmp(keys[i].name, name) == 0) {
			k = &keys[i];
			break;
		}
	}
	if (!k) {
		key_list(list, sizeof(list), keys, nkeys);
		cfg_error(p, p->lineno, "unknown key '%s' in %s; expected one of: %s",
			  name, label, list);
		return 0;
	}
	if (lines[i]) {
		cfg_error(p, p->lineno,
			  "%s set twice in %s (first at line %d); expected it once",
			  name, label, lines[i]);
		return 0;
	}
	if (!*value) {
		cfg_error(p, p->lineno, "%s in %s has no value; expected %s",
			  name, label, k->expect);
		return 0;
	}
	/* Two keys, one field: password and password_file. */
	for (size_t j = 0; j < nkeys; j++) {
		if (j != i && lines[j] && keys[j].off == k->off &&
		    (k->type == KEY_PASSWORD || k->type == KEY_SECRET_FILE) &&
		    (keys[j].type == KEY_PASSWORD ||
		     keys[j].type == KEY_SECRET_FILE)) {
			cfg_error(p, p->lineno,
				  "both %s (line %d) and %s in %s; expected only one of them",
				  keys[j].name, lines[j], name, label);
			return 0;
		}
	}
	if (set_key(p, label, k, base, value) < 0)
		return 0;
	lines[i] = p->lineno;
	return 1;
}

/*
 * Cut an inline comment: ';' after whitespace, libinih's own rule, applied
 * here so that a long comment does not count against the line limit.
 */
static void strip_comment(char *s)
{
	char *c;

	for (c = s; *c; c++) {
		if (*c == ';' && c > s && isspace((unsigned char)c[-1])) {
			*c = '\0';
			trim(s);
			return;
		}
	}
}

/*
 * libinih's reader: one line per call, see the comment at the top.  Returns
 * STR, or NULL at the end of the file or after an error.
 */
static char *cfg_read_line(char *str, int num, void *stream)
{
	struct cfg_parse *p = stream;
	ssize_t n;
	char *s;

	if (p->failed)
		return NULL;
	errno = 0;
	n = getline(&p->buf, &p->bufsz, p->fp);
	if (n < 0) {
		if (ferror(p->fp))
			cfg_error(p, p->lineno + 1, "cannot read: %s",
				  strerror(errno ? errno : EIO));
		return NULL;
	}
	p->lineno++;
	s = p->buf;
	if ((size_t)n != strlen(s)) {
		cfg_error(p, p->lineno, "NUL byte in the line; expected a text file");
		return NULL;
	}
	if (p->lineno == 1 && strncmp(s, "\xEF\xBB\xBF", 3) == 0)
		s += 3;		/* UTF-8 byte order mark */
	while (n > 0 && (s[n - 1] == '\n' || s[n - 1] == '\r'))
		s[--n] = '\0';
	while (isspace((unsigned char)*s))
		s++;

	str[0] = '\0';
	if (*s == ';' || *s == '#')
		return str;
	if (*s == '[')
		return parse_section(p, s) < 0 ? NULL : str;
	strip_comment(s);
	if (strlen(s) + 1 > (size_t)num) {
		cfg_error(p, p->lineno,
			  "line too long (%zu characters); expected at most %d",
			  strlen(s), num - 1);
		return NULL;
	}
	memcpy(str, s, strlen(s) + 1);
	return str;
}

/* ---- after the last line ---- */

static const char *scheme_names(unsigned schemes)
{
	switch (schemes) {
	case SCH_SFTP:
		return "sftp://";
	case SCH_FTPS:
		return "ftps://";
	case SCH_FTPANY:
		return "ftp:// and ftps://";
	case SCH_NET:
		return "sftp://, ftp:// and ftps://";
	}
	return "other";
}

static int finish_dest(struct cfg_parse *p, struct spoolfs_dest *d,
		       struct dest_parse *dp)
{
	size_t i;

	if (!d->scheme)
		return cfg_error(p, d->line, "[dest %s] has no url; expected url = %s",
				 d->name, dest_keys[0].expect);
	for (i = 0; i < ARRAY_SIZE(dest_keys); i++) {
		if (dp->key_line[i] && !(dest_keys[i].schemes & dp->scheme))
			return cfg_error(p, dp->key_line[i],
					 "%s does not apply to %s:// destinations like [dest %s]; expected it only with %s urls",
					 dest_keys[i].name, d->scheme, d->name,
					 scheme_names(dest_keys[i].schemes));
	}
	if (!d->user && dp->url_user) {
		d->user = dp->url_user;
		dp->url_user = NULL;
	}
	/* default: stream where the upload is the slow part, not into a
	 * directory that competes with the writer for the same disk */
	for (i = 0; i < ARRAY_SIZE(dest_keys); i++)
		if (strcmp(dest_keys[i].name, "stream") == 0 &&
		    !dp->key_line[i])
			d->stream = dp->scheme != SCH_FILE;
	if (!d->known_hosts) {
		d->known_hosts = home_path(".ssh/known_hosts");
		if (!d->known_hosts)
			return cfg_error(p, d->line,
					 "cannot tell the home directory for ~/.ssh/known_hosts; expected $HOME to be set");
	}
	d->url_display = make_url_display(d, dp->scheme);
	if (!d->url_display)
		return cfg_nomem(p);
	return 0;
}

/* Report the loop through D: "a -> b -> a". */
static int fallback_cycle(struct cfg_parse *p, const struct spoolfs_dest *d)
{
	const struct spoolfs_dest *f = d;
	char chain[512];
	size_t n = 0;

	chain[0] = '\0';
	do {
		n += (size_t)snprintf(chain + n, sizeof(chain) - n, "%s -> ",
				      f->name);
		f = spoolfs_config_dest(p->cfg, f->fallback);
	} while (f != d && n < sizeof(chain));
	if (n < sizeof(chain))
		snprintf(chain + n, sizeof(chain) - n, "%s", d->name);
	return cfg_error(p, d->line,
			 "[dest %s]'s fallback chain loops (%s); expected a chain that ends",
			 d->name, chain);
}

/* Every fallback names another dest, and no chain loops. */
static int check_fallbacks(struct cfg_parse *p)
{
	struct spoolfs_config *cfg = p->cfg;
	const struct spoolfs_dest *d, *f;
	size_t i, steps;

	for (i = 0; i < cfg->ndests; i++) {
		d = &cfg->dests[i];
		if (!d->fallback)
			continue;
		if (strcmp(d->fallback, d->name) == 0)
			return cfg_error(p, d->line,
					 "[dest %s] falls back to itself; expected the name of another [dest]",
					 d->name);
		if (!spoolfs_config_dest(cfg, d->fallback))
			return cfg_error(p, d->line,
					 "[dest %s] falls back to '%s', which is no [dest]; expected the name of another [dest]",
					 d->name, d->fallback);
	}
	for (i = 0; i < cfg->ndests; i++) {
		d = &cfg->dests[i];
		f = d;
		for (steps = 0; f && f->fallback && steps <= cfg->ndests; steps++) {
			f = spoolfs_config_dest(cfg, f->fallback);
			if (f == d)
				return fallback_cycle(p, d);
		}
	}
	return 0;
}

static int cfg_finish(struct cfg_parse *p)
{
	struct spoolfs_config *cfg = p->cfg;
	size_t i;

	if (cfg->ndests == 0)
		return cfg_error(p, p->lineno > 0 ? p->lineno : 1,
				 "no destination; expected at least one [dest NAME] section with a url");
	for (i = 0; i < cfg->ndests; i++)
		if (finish_dest(p, &cfg->dests[i], &p->dp[i]) < 0)
			return -1;
	if (check_fallbacks(p) < 0)
		return -1;
	if (!cfg->spool_dir) {
		cfg->spool_dir = xdg_path("XDG_CACHE_HOME", ".cache", "spoolfs");
		if (!cfg->spool_dir)
			return cfg_error(p, 0,
					 "cannot tell where the spool goes; expected dir in [spool], $XDG_CACHE_HOME or $HOME");
	}
	return 0;
}

/* ---- public ---- */

static void cfg_defaults(struct spoolfs_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->fsync = SPOOLFS_FSYNC_CLOSE;
	cfg->settle_ms = 500;
}

static char *absolute_path(const char *path)
{
	char cwd[PATH_MAX];

	if (path[0] == '/')
		return strdup(path);
	if (!getcwd(cwd, sizeof(cwd)))
		return NULL;
	return join3(cwd, "/", path);
}

int spoolfs_config_load(struct spoolfs_config *cfg, const char *path,
			char *errbuf, size_t errlen)
{
	struct cfg_parse p = {
		.cfg = cfg,
		.file = path,
		.errbuf = errbuf,
		.errlen = errlen,
	};
	char *slash;
	size_t i;
	int r, rc = -1;

	cfg_defaults(cfg);
	if (errbuf && errlen)
		errbuf[0] = '\0';
	cfg->path = absolute_path(path);
	if (!cfg->path) {
		cfg_error(&p, 0, "cannot make the path absolute: %s",
			  strerror(errno));
		goto out;
	}
	p.dir = strdup(cfg->path);
	if (!p.dir) {
		cfg_nomem(&p);
		goto out;
	}
	slash = strrchr(p.dir, '/');
	slash[slash == p.dir ? 1 : 0] = '\0';

	p.fp = fopen(path, "re");
	if (!p.fp) {
		cfg_error(&p, 0, "cannot open the config: %s; expected a readable spoolfs config",
			  strerror(errno));
		goto out;
	}
	if (fstat(fileno(p.fp), &p.st) < 0 || !S_ISREG(p.st.st_mode)) {
		cfg_error(&p, 0, "the config is not a regular file; expected a spoolfs config file");
		goto out;
	}

	r = ini_parse_stream(cfg_read_line, &p, cfg_handler, &p);
	/* libinih's own complaints (a line without '=') come before ours. */
	if (r > 0 && (!p.failed || r < p.err_line)) {
		p.failed = false;
		cfg_error(&p, r, "cannot parse the line; expected key = value, [section] or a comment");
	} else if (r == -2) {
		cfg_nomem(&p);
	}
	if (p.failed)
		goto out;
	if (cfg_finish(&p) < 0)
		goto out;
	rc = 0;
out:
	if (p.fp)
		fclose(p.fp);
	free(p.buf);
	for (i = 0; p.dp && i < cfg->ndests; i++)
		free(p.dp[i].url_user);
	free(p.dp);
	free(p.dir);
	if (rc < 0)
		spoolfs_config_release(cfg);
	return rc;
}

/* mkdir -p PATH, 0700 for what it creates. */
static int mkdir_p(char *path)
{
	char *s;

	for (s = path + 1; *s; s++) {
		if (*s != '/')
			continue;
		*s = '\0';
		if (mkdir(path, 0700) < 0 && errno != EEXIST) {
			*s = '/';
			return -1;
		}
		*s = '/';
	}
	if (mkdir(path, 0700) < 0 && errno != EEXIST)
		return -1;
	return 0;
}

int spoolfs_config_default(struct spoolfs_config *cfg, char *errbuf,
			   size_t errlen)
{
	struct cfg_parse p = {
		.cfg = cfg,
		.file = "(embedded default config)",
		.errbuf = errbuf,
		.errlen = errlen,
	};
	struct spoolfs_dest *d;
	char *dir;

	cfg_defaults(cfg);
	if (errbuf && errlen)
		errbuf[0] = '\0';
	cfg->spool_dir = xdg_path("XDG_CACHE_HOME", ".cache", "spoolfs");
	dir = xdg_path("XDG_DATA_HOME", ".local/share", "spoolfs/local");
	if (!cfg->spool_dir || !dir) {
		cfg_error(&p, 0, "cannot tell the home directory; expected $HOME or $XDG_CACHE_HOME and $XDG_DATA_HOME to be set");
		goto out_fail;
	}
	if (mkdir_p(dir) < 0) {
		cfg_error(&p, 0, "cannot create '%s': %s; expected a writable data directory",
			  dir, strerror(errno));
		goto out_fail;
	}
	cfg->dests = calloc(1, sizeof(*cfg->dests));
	if (!cfg->dests) {
		cfg_nomem(&p);
		goto out_fail;
	}
	cfg->ndests = 1;
	d = &cfg->dests[0];
	dest_defaults(d);
	d->name = strdup("local");
	d->scheme = strdup("file");
	d->path = dir;
	dir = NULL;
	d->known_hosts = home_path(".ssh/known_hosts");
	if (!d->name || !d->scheme || !d->known_hosts) {
		cfg_nomem(&p);
		goto out_fail;
	}
	d->url_display = make_url_display(d, SCH_FILE);
	if (!d->url_display) {
		cfg_nomem(&p);
		goto out_fail;
	}
	return 0;

out_fail:
	free(dir);
	spoolfs_config_release(cfg);
	return -1;
}

char *spoolfs_config_default_path(void)
{
	return xdg_path("XDG_CONFIG_HOME", ".config", "spoolfs/spoolfs.conf");
}

static void free_secret(char *s)
{
	if (s) {
		explicit_bzero(s, strlen(s));
		free(s);
	}
}

static void dest_release(struct spoolfs_dest *d)
{
	free(d->name);
	free(d->url_display);
	free(d->scheme);
	free(d->user);
	free(d->host);
	free(d->path);
	free_secret(d->password);
	free(d->identity);
	free_secret(d->identity_passphrase);
	free(d->known_hosts);
	free(d->host_key);
	free(d->tls_ca);
	free(d->tls_pin);
	free(d->fallback);
}

void spoolfs_config_release(struct spoolfs_config *cfg)
{
	size_t i;

	if (!cfg)
		return;
	for (i = 0; cfg->dests && i < cfg->ndests; i++)
		dest_release(&cfg->dests[i]);
	free(cfg->dests);
	free(cfg->path);
	free(cfg->spool_dir);
	memset(cfg, 0, sizeof(*cfg));
}

const struct spoolfs_dest *spoolfs_config_dest(const struct spoolfs_config *cfg,
					       const char *name)
{
	size_t i;

	for (i = 0; i < cfg->ndests; i++)
		if (strcmp(cfg->dests[i].name, name) == 0)
			return &cfg->dests[i];
	return NULL;
}
