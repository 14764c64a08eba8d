/*
 * err.h - the one error type that crosses spoolfs's layers.
 *
 * Backends translate their library's codes (errno, libssh2, libcurl, FTP
 * replies) into an enum spoolfs_err exactly once, at the edge, and write a
 * human-readable message beside it.  The spool decides retry versus failure
 * from the code alone (spoolfs_err_transient()), so a new backend only has to
 * map its codes; the FUSE side turns what it needs into a negative errno.
 */
#ifndef SPOOLFS_ERR_H
#define SPOOLFS_ERR_H

#include <stdbool.h>
#include <stddef.h>

enum spoolfs_err {
	SPOOLFS_OK = 0,
	/* transient: worth retrying after a backoff */
	SPOOLFS_E_CONNECT,	/* refused, unreachable, DNS failure */
	SPOOLFS_E_TIMEOUT,	/* connect or reply timeout */
	SPOOLFS_E_RESET,	/* connection dropped mid-transfer */
	SPOOLFS_E_STALL,	/* no progress for stall_timeout */
	SPOOLFS_E_BUSY,		/* server said "try later" (FTP 4xx, too many users) */
	SPOOLFS_E_NOROOT,	/* destination root directory missing (NAS not mounted) */
	SPOOLFS_E_NOSPACE,	/* remote disk full (may clear up) */
	SPOOLFS_E_PROTO,	/* unexpected reply, short transfer, size mismatch */
	SPOOLFS_E_IO,		/* local or remote I/O error */
	/* permanent: retrying cannot help until the user changes something */
	SPOOLFS_E_AUTH,		/* login refused: user, password, key */
	SPOOLFS_E_HOSTKEY,	/* unknown or changed SSH host key */
	SPOOLFS_E_TLS,		/* certificate not verified, TLS refused */
	SPOOLFS_E_PERM,		/* permission denied on the destination */
	SPOOLFS_E_QUOTA,	/* over quota */
	SPOOLFS_E_NAME,		/* the name cannot exist on the destination */
	SPOOLFS_E_NOTFOUND,	/* the remote file asked for does not exist */
	SPOOLFS_E_CONFIG,	/* the destination's configuration is unusable */
	SPOOLFS_E_UNSUPPORTED,	/* the backend cannot do this */
	/* neither: the spool itself stopped the operation */
	SPOOLFS_E_CANCELLED,	/* the file changed, moved or the daemon stops */
	SPOOLFS_E__COUNT
};

#define SPOOLFS_ERRMSG_MAX 512

struct spoolfs_error {
	enum spoolfs_err code;
	char msg[SPOOLFS_ERRMSG_MAX];
};

/*
 * Record an error: code plus a printf-style message (lowercase, what failed
 * first, no trailing newline, never a password).  Returns -1 so that callers
 * can write "return spoolfs_error_set(err, ...)".  err may be NULL.
 */
int spoolfs_error_set(struct spoolfs_error *err, enum spoolfs_err code,
		      const char *fmt, ...)
	__attribute__((format(printf, 3, 4)));

/*
 * Copy SRC into DST (CAP bytes, CAP >= 16) whole if it fits, else its
 * start, "...", and its end: a message about a very long path keeps what
 * failed and why (the end), not only the path.  Never splits a UTF-8
 * character.  Returns DST.
 */
char *spoolfs_fit(char *dst, size_t cap, const char *src);

/* Reset to SPOOLFS_OK with an empty message. */
void spoolfs_error_clear(struct spoolfs_error *err);

/* True when a retry after a backoff may succeed. */
bool spoolfs_err_transient(enum spoolfs_err code);

/* A short stable name: "connect", "auth", "hostkey", ... (journal, JSON). */
const char *spoolfs_err_name(enum spoolfs_err code);

/* A negative errno that fits the code best, for the FUSE boundary. */
int spoolfs_err_to_errno(enum spoolfs_err code);

/* Map a local errno (from the file backend, say) to a code. */
enum spoolfs_err spoolfs_err_from_errno(int errnum);

#endif
