/*
 * config.h - the parsed spoolfs configuration.
 *
 * The INI file (see README "Configuration") is parsed once at mount time
 * with libinih.  Every bad key, value or URL is refused with
 * "FILE:LINE: what was wrong; what is expected".  After a successful load
 * every field below is filled in (defaults applied, durations in
 * milliseconds, sizes in bytes, password files read), so no other module
 * parses strings.  The struct is immutable once loaded and may be read from
 * any thread without a lock.
 */
#ifndef SPOOLFS_CONFIG_H
#define SPOOLFS_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

enum spoolfs_fsync {
	SPOOLFS_FSYNC_CLOSE = 0,	/* fsync data + journal before close() returns */
	SPOOLFS_FSYNC_NEVER,		/* trust the page cache (survives kill -9 only) */
};

enum spoolfs_tls_mode {
	SPOOLFS_TLS_EXPLICIT = 0,	/* AUTH TLS on the normal port */
	SPOOLFS_TLS_IMPLICIT,		/* TLS from the first byte, port 990 */
};

struct spoolfs_dest {
	char *name;		/* [dest NAME]; [A-Za-z0-9._-], not starting with '.' */
	int line;		/* line of the [dest NAME] header, for messages */

	/* The URL, parsed.  url_display never holds a password. */
	char *url_display;	/* "sftp://photo@nas.example:22/photos" */
	char *scheme;		/* "file", "sftp", "ftp", "ftps" */
	char *user;		/* from `user =` or the URL's user part; NULL if none */
	char *host;		/* NULL for file:// */
	int port;		/* 0 = the scheme's default */
	char *path;		/* decoded path, curl rules: "/srv/x", "~/x", "x" (ftp) */

	/* Credentials, already read from their files; never logged. */
	char *password;		/* `password` or the content of `password_file` */
	char *identity;		/* SSH private key file */
	char *identity_passphrase; /* content of `identity_passphrase_file` */
	bool ssh_agent;
	char *known_hosts;	/* default: ~/.ssh/known_hosts */
	char *host_key;		/* "SHA256:..." pin, or NULL */

	/* TLS (ftps) */
	enum spoolfs_tls_mode tls_mode;
	char *tls_ca;		/* CA file, NULL = system CAs */
	char *tls_pin;		/* curl pinned public key "sha256//...", or NULL */
	bool tls_verify;	/* default true */
	bool active;		/* FTP active mode; default passive */

	/* Upload behaviour */
	int connections;	/* workers, default 2, 1..64 */
	int retries;		/* attempts after the first, default 8 */
	uint64_t backoff_min_ms;	/* default 1000 */
	uint64_t backoff_max_ms;	/* default 300000 */
	uint64_t stall_timeout_ms;	/* default 60000 */
	uint64_t connect_timeout_ms;	/* default 30000 */
	uint64_t max_rate;	/* bytes/s per destination, 0 = unlimited */
	char *fallback;		/* name of another [dest], or NULL */
	bool delete_remote;	/* rm of an uploaded file deletes it remotely */
	bool keep_uploaded;	/* keep spool content after upload */
	bool stream;		/* upload big files while they are written
				 * (default: network destinations) */
	bool require_mount;	/* file://: the root must be a mount point */
};

struct spoolfs_config {
	char *path;		/* absolute config path, NULL for the embedded default */

	/* [spool] */
	char *spool_dir;	/* default $XDG_CACHE_HOME/spoolfs (~/.cache/spoolfs) */
	uint64_t max_size;	/* bytes of unsent data, 0 = only the disk limits */
	enum spoolfs_fsync fsync;
	uint64_t settle_ms;	/* default 500 */

	struct spoolfs_dest *dests;
	size_t ndests;
};

/*
 * Load and validate CONFIG.  On failure returns -1 and writes one line,
 * e.g. "/etc/spoolfs.conf:12: unknown key 'retires' in [dest nas]; expected
 * one of: url, user, ...", into errbuf.  On success returns 0; release with
 * spoolfs_config_release().
 */
int spoolfs_config_load(struct spoolfs_config *cfg, const char *path,
			char *errbuf, size_t errlen);

/*
 * The embedded default: spool in $XDG_CACHE_HOME/spoolfs, one destination
 * "local" -> file://$XDG_DATA_HOME/spoolfs/local (created if missing).
 */
int spoolfs_config_default(struct spoolfs_config *cfg, char *errbuf,
			   size_t errlen);

/*
 * Where a config is looked for when none is named:
 * $XDG_CONFIG_HOME/spoolfs/spoolfs.conf (~/.config/spoolfs/spoolfs.conf).
 * Returns a malloc'd path (which may not exist) or NULL.
 */
char *spoolfs_config_default_path(void);

void spoolfs_config_release(struct spoolfs_config *cfg);

/* Find a destination by name, NULL if none. */
const struct spoolfs_dest *spoolfs_config_dest(const struct spoolfs_config *cfg,
					       const char *name);

/* "30s", "500ms", "5m", "1h", "2" (seconds) -> milliseconds; -1 on error. */
int spoolfs_parse_duration(const char *s, uint64_t *ms);

/* "50G", "10M", "4096", "1.5G", "0" -> bytes (K/M/G/T are powers of 1024). */
int spoolfs_parse_size(const char *s, uint64_t *bytes);

#endif
