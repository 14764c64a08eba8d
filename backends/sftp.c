/*
 * sftp.c - the sftp:// backend: one libssh2 SSH session and SFTP channel per
 * connection (that is, per worker), reused across files.
 *
 * Design
 *
 * - Non-blocking I/O, one clock.  The session runs in libssh2's non-blocking
 *   mode; every call that returns EAGAIN is retried after poll() on the
 *   socket in the direction libssh2 asks for (sc_wait()).  Each operation
 *   has a deadline: connect_timeout for the whole connect (TCP, handshake,
 *   host key, auth, SFTP init, root check); stall_timeout without a reply for
 *   metadata operations (-> SPOOLFS_E_TIMEOUT); stall_timeout without a
 *   single acknowledged byte for put/get (-> SPOOLFS_E_STALL).  A transfer
 *   that makes progress is never cut off, and a dead or stalled server
 *   never holds a worker longer than stall_timeout.  TCP keepalive and
 *   TCP_USER_TIMEOUT on the socket catch a peer that vanished while the
 *   connection sat idle between files; SSH keepalives go out while we wait
 *   for a slow reply (only when they cannot be left half sent, see
 *   sc_keepalive()).
 *
 * - Throughput.  libssh2_sftp_write() splits what it is handed into 30000
 *   byte SSH_FXP_WRITE requests, sends all of them, and returns as soon as
 *   the first ones are acknowledged; called again with the same data
 *   (advanced by what was acknowledged) it only sends what is new.  put()
 *   keeps a sliding window of PUT_INFLIGHT bytes in flight that way, like
 *   OpenSSH's 64 outstanding requests.  What is left is libssh2's own CPU
 *   cost: 1.10 encrypts one 16-byte block per EVP call (about two thirds of
 *   the client's CPU time in a big upload).
 *
 * - Round trips per file.  put_file() is OPEN, WRITE(s), FSTAT of the
 *   handle (the size check, asked of the server) and SETSTAT of the mtime,
 *   then CLOSE.  FSTAT and SETSTAT go out as soon as the last WRITE has
 *   gone out whole, so their replies come back with its acknowledgement
 *   (the server answers one channel's requests in order, so the FSTAT sees
 *   every byte): a file that fits in one window (PUT_INFLIGHT) takes 3
 *   round trips, where put + set_mtime + stat take 5 (the rename comes on
 *   top of both).  Not 2: libssh2 1.10 frees a handle as soon as its CLOSE
 *   is answered, and FSTAT needs the handle until its own reply is
 *   collected (sc_put_tail()).  So a small file (up to RCHAN_PUT_MAX)
 *   goes over the side channel below instead, where we build the packets
 *   ourselves: OPEN, then WRITE, FSETSTAT, FSTAT and CLOSE at once, 2
 *   round trips (rchan_put()), as few as OpenSSH's sftp needs.
 *
 * - Host keys are always verified, before anything is sent that depends on
 *   the server: a `host_key = SHA256:...` pin, else the known_hosts file
 *   (OpenSSH format, hashed entries and [host]:port work).  The host key
 *   algorithms the file knows for this host are preferred in the handshake,
 *   so a server with several host keys shows the one we can check.
 *
 * - Overwriting rename.  OpenSSH's SSH_FXP_RENAME refuses an existing
 *   target, and libssh2 1.10 sends its OVERWRITE flag only to SFTP v5+
 *   servers and knows no posix-rename@openssh.com.  So a second, small SFTP
 *   channel on the same session (opened at the first rename or small put)
 *   speaks INIT/VERSION, the posix-rename extension and the requests of a
 *   small put; servers without the extension get remove + rename, servers
 *   that refuse the channel get libssh2's puts.
 *
 * - Errors are translated once, here: SFTP status codes (the session stays
 *   usable) and session/socket errors (the connection is marked dead, every
 *   later call fails at once with SPOOLFS_E_RESET, and the spool reconnects).
 *   Messages name the server as host:port and never hold a password.
 *
 * Limits: OpenSSH reports ENOSPC/EDQUOT as a plain "failure" (SFTP v3), so a
 * full disk there is SPOOLFS_E_IO; QUOTA/NOSPACE come only from servers that
 * send those codes.  Uploads are not fsync'ed on the server.
 *
 * Threads: a connection is used by one thread at a time; the only global
 * state is libssh2_init(), done once under pthread_once.
 */
#include "backend.h"
#include "../common/log.h"
#ifdef SPOOLFS_HAVE_SSH_CTR
#include "ssh_ctr.h"
#endif

#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <libssh2.h>
#include <libssh2_sftp.h>

#define SFTP_MAX_PACKET		30000u		/* libssh2's SSH_FXP_WRITE size */
#define PUT_INFLIGHT		(SFTP_MAX_PACKET * 64)
#define XFER_BUF		(SFTP_MAX_PACKET * 256)
/* libssh2_sftp_read() reads ahead 4x what it is handed. */
#define GET_CHUNK		(SFTP_MAX_PACKET * 16)
#define PROGRESS_EVERY		(256u * 1024)
#define DISCONNECT_MS		2000
#define SC_TIMEDOUT		(-10000)	/* our code: the deadline passed */

/* SFTP packet types, for the side channel (draft-ietf-secsh-filexfer-02). */
#define FXP_INIT		1
#define FXP_VERSION		2
#define FXP_OPEN		3
#define FXP_CLOSE		4
#define FXP_WRITE		6
#define FXP_FSTAT		8
#define FXP_FSETSTAT		10
#define FXP_STATUS		101
#define FXP_HANDLE		102
#define FXP_ATTRS		105
#define FXP_EXTENDED		200
#define RCHAN_MAX_PACKET	(256 * 1024)
/* A put_file of at most this many bytes goes over the side channel
 * (rchan_put()): one WRITE, within the 34000-byte packets every server
 * must take (draft-ietf-secsh-filexfer-02, section 3). */
#define RCHAN_PUT_MAX		32768u
_Static_assert(RCHAN_PUT_MAX >= SPOOLFS_BATCH_FILE_MAX,
	       "a batch's files fit the side channel's puts");
#define FXF_WRITE		0x02
#define FXF_CREAT		0x08
#define FXF_TRUNC		0x10
#define FX_ATTR_SIZE		0x01
#define FX_ATTR_PERMISSIONS	0x04
#define FX_ATTR_ACMODTIME	0x08
#define FX_HANDLE_MAX		256	/* the draft's limit */

struct sftp_conn {
	const struct spoolfs_dest *dest;
	char where[300];		/* "host:port" for messages */
	const char *user;		/* dest->user, or user_buf */
	char user_buf[256];
	int port;

	int sock;
	LIBSSH2_SESSION *session;
	LIBSSH2_SFTP *sftp;
	bool dead;			/* session unusable: fail fast */
	int kbd_rounds;			/* keyboard-interactive prompts answered */

	char *root;			/* absolute remote root, no trailing '/' */
	char known_types[512];		/* key types known_hosts has for us */

	/* the side channel: posix-rename and small puts */
	LIBSSH2_CHANNEL *rchan;
	int rename_ext;			/* -1 unknown, 0 absent, 1 offered */
	bool rchan_up;			/* its SFTP session is there */
	bool no_rchan_put;		/* SPOOLFS_SFTP_RAW_PUT=0: A/B only */
	uint32_t rchan_id;

	unsigned char *buf;		/* transfer buffer for put/get */
	size_t bufcap;			/* its size, at most XFER_BUF */

	/* a second session for the upper half of a big put (sc_split()),
	 * connected at the first one and kept like this one */
	struct sftp_conn *aux;
};

static pthread_once_t sc_init_once = PTHREAD_ONCE_INIT;
static int sc_init_rc;

static void sc_global_init(void)
{
#ifdef SPOOLFS_HAVE_SSH_CTR
	int n = ssh_ctr_install();

	if (n < 0)
		log_warn("sftp: cannot redirect libssh2's cipher calls "
			 "(mprotect: %m); AES-CTR runs one block per call");
	else if (n > 0)
		log_debug("sftp: libssh2's AES-CTR runs in 16 KiB strides (%d "
			  "references redirected, backends/ssh_ctr.c)", n);
	else
		log_debug("sftp: libssh2's AES-CTR runs one block per call "
			  "(SPOOLFS_SSH_CTR=0, or no references found)");
#endif
	sc_init_rc = libssh2_init(0);
}

static int64_t now_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static uint64_t stall_ms(const struct sftp_conn *c)
{
	return c->dest->stall_timeout_ms ? c->dest->stall_timeout_ms : 60000;
}

static uint64_t connect_ms(const struct sftp_conn *c)
{
	return c->dest->connect_timeout_ms ? c->dest->connect_timeout_ms
					   : 30000;
}

/* ------------------------------------------------------------ waiting */

/*
 * Send an SSH keepalive if one is due, but only when it cannot be left half
 * sent: libssh2 1.10 keeps a packet the socket did not take whole as
 * "pending" and then refuses any other packet (LIBSSH2_ERROR_BAD_USE).  So
 * nothing of libssh2's may be pending and the socket must have room.
 * Returns the seconds until the next one is due (0: none configured).
 */
static int sc_keepalive(struct sftp_conn *c, int dir)
{
	struct pollfd w = { .fd = c->sock, .events = POLLOUT };
	int next = 0;

	if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		return 0;
	if (poll(&w, 1, 0) != 1 || !(w.revents & POLLOUT))
		return 0;
	if (libssh2_keepalive_send(c->session, &next) != 0)
		return 0;
	return next;
}

/*
 * Wait until the socket is ready in the direction libssh2 is blocked on.
 * Returns 0 to try the call again, -1 once DEADLINE has passed.
 */
static int sc_wait(struct sftp_conn *c, int64_t deadline)
{
	int dir = libssh2_session_block_directions(c->session);
	struct pollfd pfd = { .fd = c->sock };
	int64_t left = deadline - now_ms();
	int keep_next, tmo;

	if (left <= 0)
		return -1;
	if (dir & LIBSSH2_SESSION_BLOCK_INBOUND)
		pfd.events |= POLLIN;
	if (dir & LIBSSH2_SESSION_BLOCK_OUTBOUND)
		pfd.events |= POLLOUT;
	keep_next = sc_keepalive(c, dir);
	if (!pfd.events) {
		/* EAGAIN from the SFTP layer with nothing pending on the
		 * socket: don't spin. */
		pfd.events = POLLIN;
		if (left > 10)
			left = 10;
	}
	tmo = left > 60000 ? 60000 : (int)left;
	if (keep_next > 0 && keep_next * 1000 < tmo)
		tmo = keep_next * 1000;
	if (poll(&pfd, 1, tmo) < 0 && errno != EINTR)
		return -1;
	return 0;
}

/* Retry EXPR (an int-returning libssh2 call) until it stops saying EAGAIN. */
#define SC_RETRY(c, deadline, rc, expr)					\
	while (((rc) = (expr)) == LIBSSH2_ERROR_EAGAIN)			\
		if (sc_wait((c), (deadline)) < 0) {			\
			(rc) = SC_TIMEDOUT;				\
			break;						\
		}

/* The same for calls that return a pointer and NULL on error. */
#define SC_RETRY_PTR(c, deadline, rc, ptr, expr)			\
	for (;;) {							\
		(ptr) = (expr);						\
		(rc) = (ptr) ? 0 : libssh2_session_last_errno((c)->session); \
		if ((ptr) || (rc) != LIBSSH2_ERROR_EAGAIN)		\
			break;						\
		if (sc_wait((c), (deadline)) < 0) {			\
			(rc) = SC_TIMEDOUT;				\
			break;						\
		}							\
	}

/* ------------------------------------------------------------ errors */

static enum spoolfs_err sc_status(unsigned long st, const char **text)
{
	switch (st) {
	case LIBSSH2_FX_NO_SUCH_FILE:
	case LIBSSH2_FX_NO_SUCH_PATH:
		*text = "no such file or directory";
		return SPOOLFS_E_NOTFOUND;
	case LIBSSH2_FX_NOT_A_DIRECTORY:
		*text = "not a directory";
		return SPOOLFS_E_NOTFOUND;
	case LIBSSH2_FX_PERMISSION_DENIED:
		*text = "permission denied";
		return SPOOLFS_E_PERM;
	case LIBSSH2_FX_WRITE_PROTECT:
		*text = "the server's filesystem is read-only";
		return SPOOLFS_E_PERM;
	case LIBSSH2_FX_QUOTA_EXCEEDED:
		*text = "over quota on the server";
		return SPOOLFS_E_QUOTA;
	case LIBSSH2_FX_NO_SPACE_ON_FILESYSTEM:
		*text = "no space left on the server";
		return SPOOLFS_E_NOSPACE;
	case LIBSSH2_FX_NO_MEDIA:
		*text = "no media on the server";
		return SPOOLFS_E_IO;
	case LIBSSH2_FX_FILE_ALREADY_EXISTS:
		*text = "file already exists";
		return SPOOLFS_E_IO;
	case LIBSSH2_FX_DIR_NOT_EMPTY:
		*text = "directory not empty";
		return SPOOLFS_E_IO;
	case LIBSSH2_FX_INVALID_FILENAME:
		*text = "invalid file name";
		return SPOOLFS_E_NAME;
	case LIBSSH2_FX_LINK_LOOP:
		*text = "too many symbolic links";
		return SPOOLFS_E_NAME;
	case LIBSSH2_FX_OP_UNSUPPORTED:
		*text = "operation not supported by the server";
		return SPOOLFS_E_UNSUPPORTED;
	case LIBSSH2_FX_NO_CONNECTION:
	case LIBSSH2_FX_CONNECTION_LOST:
		*text = "connection lost";
		return SPOOLFS_E_RESET;
	case LIBSSH2_FX_LOCK_CONFLICT:
		*text = "locked on the server";
		return SPOOLFS_E_BUSY;
	case LIBSSH2_FX_BAD_MESSAGE:
		*text = "the server rejected the request as malformed";
		return SPOOLFS_E_PROTO;
	case LIBSSH2_FX_INVALID_HANDLE:
		*text = "invalid handle";
		return SPOOLFS_E_PROTO;
	case LIBSSH2_FX_EOF:
		*text = "unexpected end of file";
		return SPOOLFS_E_PROTO;
	case LIBSSH2_FX_FAILURE:
	default:
		*text = "failure reported by the server (disk full, quota, "
			"or another server-side error)";
		return SPOOLFS_E_IO;
	}
}

/* A session-level libssh2 error: which code, and is the session gone? */
static enum spoolfs_err sc_session_code(int rc)
{
	switch (rc) {
	case SC_TIMEDOUT:
	case LIBSSH2_ERROR_TIMEOUT:
	case LIBSSH2_ERROR_SOCKET_TIMEOUT:
		return SPOOLFS_E_TIMEOUT;
	case LIBSSH2_ERROR_ALLOC:
		return SPOOLFS_E_IO;
	case LIBSSH2_ERROR_PROTO:
	case LIBSSH2_ERROR_CHANNEL_PACKET_EXCEEDED:
	case LIBSSH2_ERROR_CHANNEL_WINDOW_EXCEEDED:
		return SPOOLFS_E_PROTO;
	default:
		return SPOOLFS_E_RESET;
	}
}

/* "WHAT: TEXT" for SFTP status ST; the session stays usable unless ST
 * says the connection is gone. */
static int sc_fail_msg(struct sftp_conn *c, struct spoolfs_error *err,
		       unsigned long st, const char *what)
{
	const char *text;
	enum spoolfs_err code = sc_status(st, &text);

	if (code == SPOOLFS_E_RESET)
		c->dead = true;
	return spoolfs_error_set(err, code, "%s: %s", what, text);
}

/*
 * Fill *err for a failed libssh2 call that returned RC (SC_TIMEDOUT when
 * our deadline passed): "WHAT: reason".  An SFTP status (read now: call
 * this before the next request) leaves the session usable; anything else
 * marks it dead.  STALL: a transfer's stall rather than a reply timeout.
 * Returns -1.
 */
static int sc_fail(struct sftp_conn *c, struct spoolfs_error *err, int rc,
		   bool stall, const char *fmt, ...)
	__attribute__((format(printf, 5, 6)));

static int sc_fail(struct sftp_conn *c, struct spoolfs_error *err, int rc,
		   bool stall, const char *fmt, ...)
{
	char what[SPOOLFS_ERRMSG_MAX];
	const char *text = NULL;
	enum spoolfs_err code;
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(what, sizeof(what), fmt, ap);
	va_end(ap);

	if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL && c->sftp)
		return sc_fail_msg(c, err, libssh2_sftp_last_error(c->sftp),
				   what);
	c->dead = true;
	if (rc == SC_TIMEDOUT) {
		unsigned long s = (unsigned long)(stall_ms(c) / 1000);

		if (stall)
			return spoolfs_error_set(err, SPOOLFS_E_STALL,
				"%s: stalled, no progress for %lu s "
				"(stall_timeout)", what, s);
		return spoolfs_error_set(err, SPOOLFS_E_TIMEOUT,
			"%s: no reply for %lu s", what, s);
	}
	code = sc_session_code(rc);
	if (c->session)
		libssh2_session_last_error(c->session, (char **)&text, NULL,
					   0);
	if (code == SPOOLFS_E_RESET)
		return spoolfs_error_set(err, code, "%s: connection lost (%s)",
			what, text && *text ? text : "socket error");
	return spoolfs_error_set(err, code, "%s: %s", what,
				 text && *text ? text : "ssh error");
}

static int sc_check_alive(struct sftp_conn *c, struct spoolfs_error *err)
{
	if (!c->dead)
		return 0;
	return spoolfs_error_set(err, SPOOLFS_E_RESET,
				 "connection to %s was lost; reconnecting",
				 c->where);
}

/* ------------------------------------------------------------ paths */

/* The remote path of REL (relative to the root): malloc'd. */
static char *sc_path(const struct sftp_conn *c, const char *rel)
{
	size_t n = strlen(c->root) + strlen(rel) + 2;
	char *s = malloc(n);
	bool slash = strcmp(c->root, "/") != 0;

	if (!s)
		return NULL;
	if (!*rel)
		snprintf(s, n, "%s", c->root);
	else
		snprintf(s, n, "%s%s%s", c->root, slash ? "/" : "", rel);
	return s;
}

static int sc_oom(struct spoolfs_error *err)
{
	return spoolfs_error_set(err, SPOOLFS_E_IO, "out of memory");
}

/* ------------------------------------------------------------ TCP */

static int tcp_connect(struct sftp_conn *c, int64_t deadline,
		       struct spoolfs_error *err)
{
	struct addrinfo hints = { .ai_family = AF_UNSPEC,
				  .ai_socktype = SOCK_STREAM };
	struct addrinfo *res, *ai;
	char portstr[16];
	int rc, fd = -1, last_errno = 0;
	bool timed_out = false;

	snprintf(portstr, sizeof(portstr), "%d", c->port);
	rc = getaddrinfo(c->dest->host, portstr, &hints, &res);
	if (rc != 0)
		return spoolfs_error_set(err, SPOOLFS_E_CONNECT,
					 "cannot resolve host '%s': %s",
					 c->dest->host, gai_strerror(rc));
	for (ai = res; ai; ai = ai->ai_next) {
		struct pollfd pfd;
		socklen_t sl = sizeof(int);
		int soerr = 0;
		int64_t left;

		fd = socket(ai->ai_family,
			    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
			    ai->ai_protocol);
		if (fd < 0) {
			last_errno = errno;
			continue;
		}
		if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
			break;
		if (errno != EINPROGRESS) {
			last_errno = errno;
			goto next;
		}
		pfd.fd = fd;
		pfd.events = POLLOUT;
		for (;;) {
			left = deadline - now_ms();
			if (left <= 0) {
				timed_out = true;
				goto next;
			}
			rc = poll(&pfd, 1, left > 60000 ? 60000 : (int)left);
			if (rc > 0)
				break;
			if (rc < 0 && errno != EINTR) {
				last_errno = errno;
				goto next;
			}
		}
		if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) < 0)
			soerr = errno;
		if (soerr == 0)
			break;
		last_errno = soerr;
next:
		close(fd);
		fd = -1;
		if (timed_out)
			break;
	}
	freeaddrinfo(res);
	if (fd < 0) {
		if (timed_out)
			return spoolfs_error_set(err, SPOOLFS_E_TIMEOUT,
				"cannot connect to %s: timed out after %lu s",
				c->where,
				(unsigned long)(connect_ms(c) / 1000));
		return spoolfs_error_set(err, SPOOLFS_E_CONNECT,
					 "cannot connect to %s: %s", c->where,
					 strerror(last_errno));
	}
	{
		int one = 1, idle = 30, intvl = 10, cnt = 3;
		unsigned int utmo = (unsigned int)stall_ms(c);

		setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
		setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl,
			   sizeof(intvl));
		setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt));
		setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &utmo,
			   sizeof(utmo));
	}
	c->sock = fd;
	return 0;
}

/* ------------------------------------------------------------ host keys */

static const char *hostkey_method(int type)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: return "ssh-rsa";
	case LIBSSH2_HOSTKEY_TYPE_DSS: return "ssh-dss";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256: return "ecdsa-sha2-nistp256";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384: return "ecdsa-sha2-nistp384";
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521: return "ecdsa-sha2-nistp521";
	case LIBSSH2_HOSTKEY_TYPE_ED25519: return "ssh-ed25519";
	default: return NULL;
	}
}

static int hostkey_kh_type(int type)
{
	switch (type) {
	case LIBSSH2_HOSTKEY_TYPE_RSA: return LIBSSH2_KNOWNHOST_KEY_SSHRSA;
	case LIBSSH2_HOSTKEY_TYPE_DSS: return LIBSSH2_KNOWNHOST_KEY_SSHDSS;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_256:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_256;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_384:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_384;
	case LIBSSH2_HOSTKEY_TYPE_ECDSA_521:
		return LIBSSH2_KNOWNHOST_KEY_ECDSA_521;
	case LIBSSH2_HOSTKEY_TYPE_ED25519:
		return LIBSSH2_KNOWNHOST_KEY_ED25519;
	default: return LIBSSH2_KNOWNHOST_KEY_UNKNOWN;
	}
}

static const char *kh_type_method(int typemask)
{
	switch (typemask & LIBSSH2_KNOWNHOST_KEY_MASK) {
	case LIBSSH2_KNOWNHOST_KEY_SSHRSA: return "ssh-rsa";
	case LIBSSH2_KNOWNHOST_KEY_SSHDSS: return "ssh-dss";
	case LIBSSH2_KNOWNHOST_KEY_ECDSA_256: return "ecdsa-sha2-nistp256";
	case LIBSSH2_KNOWNHOST_KEY_ECDSA_384: return "ecdsa-sha2-nistp384";
	case LIBSSH2_KNOWNHOST_KEY_ECDSA_521: return "ecdsa-sha2-nistp521";
	case LIBSSH2_KNOWNHOST_KEY_ED25519: return "ssh-ed25519";
	default: return NULL;
	}
}

/* Base64 (standard alphabet) without '=' padding, as OpenSSH prints it. */
static void b64_nopad(const unsigned char *in, size_t n, char *out)
{
	static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				  "abcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t i;
	char *o = out;

	for (i = 0; i + 2 < n; i += 3) {
		*o++ = tab[in[i] >> 2];
		*o++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*o++ = tab[((in[i + 1] & 15) << 2) | (in[i + 2] >> 6)];
		*o++ = tab[in[i + 2] & 63];
	}
	if (n - i == 1) {
		*o++ = tab[in[i] >> 2];
		*o++ = tab[(in[i] & 3) << 4];
	} else if (n - i == 2) {
		*o++ = tab[in[i] >> 2];
		*o++ = tab[((in[i] & 3) << 4) | (in[i + 1] >> 4)];
		*o++ = tab[(in[i + 1] & 15) << 2];
	}
	*o = '\0';
}

static const char *known_hosts_path(const struct sftp_conn *c, char *buf,
				    size_t n)
{
	const char *home;

	if (c->dest->known_hosts && *c->dest->known_hosts)
		return c->dest->known_hosts;
	home = getenv("HOME");
	if (!home || !*home) {
		struct passwd pwbuf, *pw = NULL;
		char tmp[4096];

		if (getpwuid_r(geteuid(), &pwbuf, tmp, sizeof(tmp), &pw) == 0 &&
		    pw) {
			snprintf(buf, n, "%s/.ssh/known_hosts", pw->pw_dir);
			return buf;
		}
		home = "";
	}
	snprintf(buf, n, "%s/.ssh/known_hosts", home);
	return buf;
}

/*
 * Load the known_hosts file line by line, so that one line libssh2 cannot
 * parse (a key type it does not know, @cert-authority) does not hide the
 * rest.  A missing file is an empty one.
 */
static LIBSSH2_KNOWNHOSTS *kh_load(struct sftp_conn *c, const char *file,
				   struct spoolfs_error *err)
{
	LIBSSH2_KNOWNHOSTS *kh = libssh2_knownhost_init(c->session);
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	FILE *f;

	if (!kh) {
		sc_oom(err);
		return NULL;
	}
	f = fopen(file, "re");
	if (!f) {
		if (errno == ENOENT)
			return kh;
		spoolfs_error_set(err, SPOOLFS_E_CONFIG,
				  "cannot read known_hosts file '%s': %s",
				  file, strerror(errno));
		libssh2_knownhost_free(kh);
		return NULL;
	}
	while ((len = getline(&line, &cap, f)) > 0) {
		while (len > 0 && (line[len - 1] == '\n' ||
				   line[len - 1] == '\r'))
			line[--len] = '\0';
		if (len == 0 || line[0] == '#')
			continue;
		(void)libssh2_knownhost_readline(kh, line, (size_t)len,
					LIBSSH2_KNOWNHOST_FILE_OPENSSH);
	}
	free(line);
	fclose(f);
	return kh;
}

/*
 * Put the host key algorithms that KH knows for our host first in the
 * handshake's preference list (hashed entries included: every stored key is
 * checked against our host name), the rest of libssh2's list after them.
 */
static void kh_prefer_known(struct sftp_conn *c, LIBSSH2_KNOWNHOSTS *kh)
{
	struct libssh2_knownhost *e = NULL;
	const char **algs = NULL;
	char prefs[512] = "";
	size_t used = 0;
	int nalgs;

	while (libssh2_knownhost_get(kh, &e, e) == 0) {
		const char *m = kh_type_method(e->typemask);
		int rc;

		if (!m || strstr(prefs, m))
			continue;
		rc = libssh2_knownhost_checkp(kh, c->dest->host, c->port,
			e->key, strlen(e->key),
			LIBSSH2_KNOWNHOST_TYPE_PLAIN |
			LIBSSH2_KNOWNHOST_KEYENC_BASE64 |
			(e->typemask & LIBSSH2_KNOWNHOST_KEY_MASK), NULL);
		if (rc != LIBSSH2_KNOWNHOST_CHECK_MATCH)
			continue;
		used += (size_t)snprintf(prefs + used, sizeof(prefs) - used,
					 "%s%s", used ? "," : "", m);
		if (used >= sizeof(prefs))
			return;
	}
	if (!used)
		return;
	snprintf(c->known_types, sizeof(c->known_types), "%s", prefs);
	nalgs = libssh2_session_supported_algs(c->session,
					       LIBSSH2_METHOD_HOSTKEY, &algs);
	for (int i = 0; i < nalgs; i++) {
		const char *p = prefs;
		size_t l = strlen(algs[i]);
		bool have = false;

		while ((p = strstr(p, algs[i]))) {
			if ((p == prefs || p[-1] == ',') &&
			    (p[l] == ',' || p[l] == '\0')) {
				have = true;
				break;
			}
			p += l;
		}
		if (!have && used + l + 2 < sizeof(prefs))
			used += (size_t)snprintf(prefs + used,
						 sizeof(prefs) - used, ",%s",
						 algs[i]);
	}
	if (nalgs > 0)
		libssh2_free(c->session, algs);
	libssh2_session_method_pref(c->session, LIBSSH2_METHOD_HOSTKEY, prefs);
}

/* The host as known_hosts names it: "host" on port 22, else "[host]:port". */
static void kh_hostname(const struct sftp_conn *c, char *buf, size_t n)
{
	if (c->port == 22)
		snprintf(buf, n, "%s", c->dest->host);
	else
		snprintf(buf, n, "[%s]:%d", c->dest->host, c->port);
}

static int check_hostkey(struct sftp_conn *c, LIBSSH2_KNOWNHOSTS *kh,
			 const char *khfile, struct spoolfs_error *err)
{
	const unsigned char *sha;
	const char *key, *method;
	char fp[64], khname[300];
	size_t keylen;
	int type, rc;

	key = libssh2_session_hostkey(c->session, &keylen, &type);
	sha = (const unsigned char *)libssh2_hostkey_hash(c->session,
						LIBSSH2_HOSTKEY_HASH_SHA256);
	if (!key || !sha)
		return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
			"cannot read the host key of %s", c->where);
	memcpy(fp, "SHA256:", 7);
	b64_nopad(sha, 32, fp + 7);
	method = hostkey_method(type);
	if (!method)
		method = "unknown key type";
	kh_hostname(c, khname, sizeof(khname));

	if (c->dest->host_key && *c->dest->host_key) {
		const char *pin = c->dest->host_key;
		size_t pl;

		if (strncasecmp(pin, "SHA256:", 7) == 0)
			pin += 7;
		pl = strlen(pin);
		while (pl > 0 && pin[pl - 1] == '=')
			pl--;
		if (pl == strlen(fp + 7) && memcmp(pin, fp + 7, pl) == 0)
			return 0;
		return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
			"host key of %s does not match the pinned host_key: "
			"the server offers %s %s, host_key is %s",
			khname, method, fp, c->dest->host_key);
	}

	rc = libssh2_knownhost_checkp(kh, c->dest->host, c->port, key, keylen,
				      LIBSSH2_KNOWNHOST_TYPE_PLAIN |
				      LIBSSH2_KNOWNHOST_KEYENC_RAW |
				      hostkey_kh_type(type), NULL);
	switch (rc) {
	case LIBSSH2_KNOWNHOST_CHECK_MATCH:
		return 0;
	case LIBSSH2_KNOWNHOST_CHECK_MISMATCH:
		return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
			"host key of %s has CHANGED: the server offers %s %s, "
			"which does not match %s (possible man-in-the-middle "
			"attack; if the key was changed on purpose, replace "
			"the host's line in that file)",
			khname, method, fp, khfile);
	case LIBSSH2_KNOWNHOST_CHECK_NOTFOUND:
		if (c->known_types[0])
			return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
				"host key of %s not in %s: the file knows it "
				"only by %s, which the server did not offer "
				"in a form libssh2 1.10 speaks (RSA needs "
				"SHA-1 ssh-rsa); the server offers %s %s, add "
				"it: ssh-keyscan -p %d -t %s %s >> %s",
				khname, khfile, c->known_types, method, fp,
				c->port, method, c->dest->host, khfile);
		return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
			"host key of %s not in %s (the server offers %s %s); "
			"check the fingerprint, then add it: ssh-keyscan -p %d "
			"-t %s %s >> %s",
			khname, khfile, method, fp, c->port, method,
			c->dest->host, khfile);
	default:
		return spoolfs_error_set(err, SPOOLFS_E_HOSTKEY,
			"cannot check the host key of %s (%s %s) against %s",
			khname, method, fp, khfile);
	}
}

/* ------------------------------------------------------------ auth */

static LIBSSH2_USERAUTH_KBDINT_RESPONSE_FUNC(kbd_answer)
{
	struct sftp_conn *c = *abstract;
	const char *pw = c->dest->password;

	(void)name;
	(void)name_len;
	(void)instruction;
	(void)instruction_len;
	if (num_prompts > 0)
		c->kbd_rounds++;
	for (int i = 0; i < num_prompts; i++) {
		/* Answer hidden prompts ("Password:") with the password, a
		 * few rounds at most: an OTP prompt gets nothing. */
		const char *a = (!prompts[i].echo && c->kbd_rounds <= 2 && pw)
				? pw : "";

		responses[i].text = strdup(a);
		responses[i].length = responses[i].text
				      ? (unsigned int)strlen(a) : 0;
	}
}

static bool has_method(const char *list, const char *m)
{
	size_t l = strlen(m);
	const char *p = list;

	while (p && (p = strstr(p, m))) {
		if ((p == list || p[-1] == ',') &&
		    (p[l] == ',' || p[l] == '\0'))
			return true;
		p += l;
	}
	return false;
}

static void tried_add(char *tried, size_t n, const char *m)
{
	size_t l = strlen(tried);

	if (!has_method(tried, m))
		snprintf(tried + l, n - l, "%s%s", l ? ", " : "", m);
}

/*
 * Whether the identity file holds an RSA key (its .pub says "ssh-rsa", or
 * it is a PEM RSA key): libssh2 1.10 signs RSA only with SHA-1 ("ssh-rsa"),
 * which OpenSSH 8.8 and later refuse by default.
 */
static bool identity_is_rsa(const char *identity)
{
	char path[4096], line[64] = "";
	FILE *f;

	snprintf(path, sizeof(path), "%s.pub", identity);
	f = fopen(path, "re");
	if (f) {
		bool rsa = fgets(line, sizeof(line), f) &&
			   strncmp(line, "ssh-rsa ", 8) == 0;

		fclose(f);
		return rsa;
	}
	f = fopen(identity, "re");
	if (!f)
		return false;
	if (!fgets(line, sizeof(line), f))
		line[0] = '\0';
	fclose(f);
	return strncmp(line, "-----BEGIN RSA PRIVATE KEY-----", 31) == 0;
}

static int try_agent(struct sftp_conn *c, int64_t deadline, char *detail,
		     size_t dn, struct spoolfs_error *err)
{
	struct libssh2_agent_publickey *id = NULL;
	LIBSSH2_AGENT *agent = libssh2_agent_init(c->session);
	int rc, ok = 1;

	if (!agent)
		return 1;
	if (libssh2_agent_connect(agent) != 0) {
		snprintf(detail, dn, "; cannot reach ssh-agent (SSH_AUTH_SOCK)");
		goto out;
	}
	if (libssh2_agent_list_identities(agent) != 0) {
		snprintf(detail, dn, "; ssh-agent lists no keys");
		goto out_disconnect;
	}
	while (libssh2_agent_get_identity(agent, &id, id) == 0) {
		SC_RETRY(c, deadline, rc,
			 libssh2_agent_userauth(agent, c->user, id));
		if (rc == 0) {
			ok = 0;
			break;
		}
		if (rc == SC_TIMEDOUT || rc == LIBSSH2_ERROR_SOCKET_SEND ||
		    rc == LIBSSH2_ERROR_SOCKET_RECV ||
		    rc == LIBSSH2_ERROR_SOCKET_DISCONNECT) {
			ok = sc_fail(c, err, rc, false,
				     "authentication on %s", c->where);
			break;
		}
	}
out_disconnect:
	libssh2_agent_disconnect(agent);
out:
	libssh2_agent_free(agent);
	return ok;
}

/*
 * Whether the server has closed the connection: libssh2 1.10 reports a
 * connection lost while it waits for an authentication reply (a server
 * restarting, or OpenSSH's MaxStartups dropping it) as a failed
 * authentication, which must not send a file to .failed/ at once.  A
 * server that refused our key keeps the connection open for another try.
 */
static bool peer_closed(int sock)
{
	char b;
	ssize_t n = recv(sock, &b, 1, MSG_PEEK | MSG_DONTWAIT);

	return n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK &&
			  errno != EINTR);
}

/* Returns 0 when authenticated, -1 with *err set otherwise. */
static int authenticate(struct sftp_conn *c, int64_t deadline,
			struct spoolfs_error *err)
{
	const struct spoolfs_dest *d = c->dest;
	unsigned int ulen = (unsigned int)strlen(c->user);
	char tried[128] = "", detail[300] = "";
	char *methods;
	int rc;

	SC_RETRY_PTR(c, deadline, rc, methods,
		     libssh2_userauth_list(c->session, c->user, ulen));
	if (!methods) {
		if (libssh2_userauth_authenticated(c->session))
			return 0;
		return sc_fail(c, err, rc, false,
			       "authentication on %s", c->where);
	}
	methods = strdup(methods);
	if (!methods)
		return sc_oom(err);

	if (d->identity && *d->identity && has_method(methods, "publickey")) {
		tried_add(tried, sizeof(tried), "publickey");
		SC_RETRY(c, deadline, rc,
			 libssh2_userauth_publickey_fromfile_ex(c->session,
				c->user, ulen, NULL, d->identity,
				d->identity_passphrase));
		if (rc == 0)
			goto ok;
		if (rc == LIBSSH2_ERROR_FILE) {
			snprintf(detail, sizeof(detail),
				 "; cannot use identity '%s' (%s)", d->identity,
				 d->identity_passphrase
				 ? "wrong identity_passphrase_file, or a key "
				   "format libssh2 cannot read"
				 : "encrypted key without "
				   "identity_passphrase_file, or a key format "
				   "libssh2 cannot read");
		} else if (rc != LIBSSH2_ERROR_AUTHENTICATION_FAILED &&
			   rc != LIBSSH2_ERROR_PUBLICKEY_UNVERIFIED) {
			goto fail_session;
		} else if (identity_is_rsa(d->identity)) {
			snprintf(detail, sizeof(detail),
				 "; '%s' is an RSA key, which this libssh2 can "
				 "only sign with ssh-rsa (SHA-1), refused by "
				 "OpenSSH 8.8 and later: use an ed25519 or "
				 "ecdsa key", d->identity);
		}
	}
	if (d->ssh_agent && has_method(methods, "publickey")) {
		tried_add(tried, sizeof(tried), "publickey (ssh-agent)");
		rc = try_agent(c, deadline, detail + strlen(detail),
			       sizeof(detail) - strlen(detail), err);
		if (rc == 0)
			goto ok;
		if (c->dead)
			goto out;
	}
	if (d->password && has_method(methods, "password")) {
		tried_add(tried, sizeof(tried), "password");
		SC_RETRY(c, deadline, rc,
			 libssh2_userauth_password_ex(c->session, c->user,
				ulen, d->password,
				(unsigned int)strlen(d->password), NULL));
		if (rc == 0)
			goto ok;
		if (rc == LIBSSH2_ERROR_PASSWORD_EXPIRED)
			snprintf(detail, sizeof(detail),
				 "; the password has expired");
		else if (rc != LIBSSH2_ERROR_AUTHENTICATION_FAILED)
			goto fail_session;
	}
	if (d->password && has_method(methods, "keyboard-interactive")) {
		tried_add(tried, sizeof(tried), "keyboard-interactive");
		c->kbd_rounds = 0;
		SC_RETRY(c, deadline, rc,
			 libssh2_userauth_keyboard_interactive_ex(c->session,
				c->user, ulen, kbd_answer));
		if (rc == 0)
			goto ok;
		if (rc != LIBSSH2_ERROR_AUTHENTICATION_FAILED)
			goto fail_session;
	}
	if (peer_closed(c->sock)) {
		c->dead = true;
		spoolfs_error_set(err, SPOOLFS_E_RESET,
			"%s closed the connection during authentication",
			c->where);
	} else if (!*tried)
		spoolfs_error_set(err, SPOOLFS_E_AUTH,
			"authentication failed for user '%s' on %s: nothing to "
			"try (the server accepts: %s; set identity, ssh_agent "
			"or password)", c->user, c->where, methods);
	else
		spoolfs_error_set(err, SPOOLFS_E_AUTH,
			"authentication failed for user '%s' on %s (tried: %s)"
			"%s", c->user, c->where, tried, detail);
	goto out;
fail_session:
	sc_fail(c, err, rc, false, "authentication on %s", c->where);
	goto out;
ok:
	/* the method that worked is the last one tried */
	log_debug("%s: sftp: logged in as '%s' on %s (server offers: %s; "
		  "tried: %s)", d->name, c->user, c->where, methods, tried);
	free(methods);
	return 0;
out:
	free(methods);
	return -1;
}

/* ------------------------------------------------------------ connect */

static void sc_free(struct sftp_conn *c);

static int resolve_root(struct sftp_conn *c, int64_t deadline,
			struct spoolfs_error *err)
{
	const char *path = c->dest->path && *c->dest->path ? c->dest->path
							   : "/";
	LIBSSH2_SFTP_ATTRIBUTES a;
	char *root;
	size_t n;
	int rc;

	if (path[0] == '~' && (path[1] == '\0' || path[1] == '/')) {
		char home[4096];

		SC_RETRY(c, deadline, rc,
			 libssh2_sftp_symlink_ex(c->sftp, ".", 1, home,
						 sizeof(home) - 1,
						 LIBSSH2_SFTP_REALPATH));
		if (rc < 0)
			return sc_fail(c, err, rc, false,
				       "cannot find the login directory on %s",
				       c->where);
		home[rc] = '\0';
		path += 1;
		while (*path == '/')
			path++;
		n = strlen(home) + strlen(path) + 2;
		root = malloc(n);
		if (!root)
			return sc_oom(err);
		snprintf(root, n, "%s%s%s", home,
			 *path && strcmp(home, "/") ? "/" : "", path);
	} else {
		root = strdup(path);
		if (!root)
			return sc_oom(err);
	}
	n = strlen(root);
	while (n > 1 && root[n - 1] == '/')
		root[--n] = '\0';
	c->root = root;

	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_stat_ex(c->sftp, root, (unsigned int)n,
				      LIBSSH2_SFTP_STAT, &a));
	if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL &&
	    libssh2_sftp_last_error(c->sftp) == LIBSSH2_FX_NO_SUCH_FILE)
		return spoolfs_error_set(err, SPOOLFS_E_NOROOT,
			"destination root '%s' does not exist on %s", root,
			c->where);
	if (rc < 0)
		return sc_fail(c, err, rc, false,
			       "cannot check destination root '%s' on %s",
			       root, c->where);
	if ((a.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
	    !LIBSSH2_SFTP_S_ISDIR(a.permissions))
		return spoolfs_error_set(err, SPOOLFS_E_NOROOT,
			"destination root '%s' on %s is not a directory",
			root, c->where);
	return 0;
}

static int sftp_connect(struct spoolfs_conn *conn, struct spoolfs_error *err)
{
	const struct spoolfs_dest *d = conn->dest;
	LIBSSH2_KNOWNHOSTS *kh = NULL;
	char khbuf[4096];
	const char *khfile = NULL;
	struct sftp_conn *c;
	int64_t deadline;
	int rc;

	pthread_once(&sc_init_once, sc_global_init);
	if (sc_init_rc != 0)
		return spoolfs_error_set(err, SPOOLFS_E_IO,
					 "cannot initialize libssh2");
	if (!d->host || !*d->host)
		return spoolfs_error_set(err, SPOOLFS_E_CONFIG,
					 "sftp:// url without a host");
	if (d->identity && *d->identity && access(d->identity, R_OK) != 0)
		return spoolfs_error_set(err, SPOOLFS_E_CONFIG,
					 "cannot read identity file '%s': %s",
					 d->identity, strerror(errno));
	c = calloc(1, sizeof(*c));
	if (!c)
		return sc_oom(err);
	c->dest = d;
	c->sock = -1;
	c->rename_ext = -1;
	c->no_rchan_put = getenv("SPOOLFS_SFTP_RAW_PUT") &&
			  strcmp(getenv("SPOOLFS_SFTP_RAW_PUT"), "0") == 0;
	c->port = d->port > 0 ? d->port : 22;
	c->user = d->user;
	if (!c->user || !*c->user) {
		struct passwd pwbuf, *pw = NULL;
		char tmp[4096];

		/* workers connect in parallel: the reentrant lookup */
		if (getpwuid_r(geteuid(), &pwbuf, tmp, sizeof(tmp), &pw) == 0 &&
		    pw)
			snprintf(c->user_buf, sizeof(c->user_buf), "%s",
				 pw->pw_name);
		else
			snprintf(c->user_buf, sizeof(c->user_buf), "%ld",
				 (long)geteuid());
		c->user = c->user_buf;
	}
	if (strchr(d->host, ':'))
		snprintf(c->where, sizeof(c->where), "[%s]:%d", d->host,
			 c->port);
	else
		snprintf(c->where, sizeof(c->where), "%s:%d", d->host,
			 c->port);
	if (!(d->host_key && *d->host_key))
		khfile = known_hosts_path(c, khbuf, sizeof(khbuf));

	deadline = now_ms() + (int64_t)connect_ms(c);
	if (tcp_connect(c, deadline, err) < 0)
		goto fail;
	c->session = libssh2_session_init_ex(NULL, NULL, NULL, c);
	if (!c->session) {
		sc_oom(err);
		goto fail;
	}
	libssh2_session_set_blocking(c->session, 0);
	if (khfile) {
		kh = kh_load(c, khfile, err);
		if (!kh)
			goto fail;
		kh_prefer_known(c, kh);
	}
	SC_RETRY(c, deadline, rc,
		 libssh2_session_handshake(c->session, c->sock));
	if (rc == SC_TIMEDOUT) {
		c->dead = true;
		spoolfs_error_set(err, SPOOLFS_E_TIMEOUT,
				  "ssh handshake with %s timed out after %lu s",
				  c->where,
				  (unsigned long)(connect_ms(c) / 1000));
		goto fail;
	}
	if (rc < 0) {
		char *msg = NULL;

		c->dead = true;
		libssh2_session_last_error(c->session, &msg, NULL, 0);
		spoolfs_error_set(err, SPOOLFS_E_CONNECT,
				  "ssh handshake with %s failed: %s", c->where,
				  msg && *msg ? msg : "unknown error");
		goto fail;
	}
	if (check_hostkey(c, kh, khfile, err) < 0)
		goto fail;
	if (spoolfs_log_debug_enabled()) {
		const char *banner = libssh2_session_banner_get(c->session);
		const char *kex = libssh2_session_methods(c->session,
							  LIBSSH2_METHOD_KEX);
		const char *cipher =
			libssh2_session_methods(c->session,
						LIBSSH2_METHOD_CRYPT_CS);

		log_debug("%s: sftp: %s is '%s', kex %s, cipher %s, host key "
			  "verified (%s)", d->name, c->where,
			  banner ? banner : "?", kex ? kex : "?",
			  cipher ? cipher : "?",
			  khfile ? khfile : "host_key pin");
	}
	if (kh)
		libssh2_knownhost_free(kh);
	kh = NULL;

	if (authenticate(c, deadline, err) < 0)
		goto fail;
	/* Not before: OpenSSH rejects global requests before auth. */
	{
		uint64_t ka = stall_ms(c) / 3000;

		libssh2_keepalive_config(c->session, 1,
					 ka < 5 ? 5 : ka > 30 ? 30 : (unsigned)ka);
	}
	SC_RETRY_PTR(c, deadline, rc, c->sftp, libssh2_sftp_init(c->session));
	if (!c->sftp) {
		sc_fail(c, err, rc, false, "cannot start the sftp subsystem on %s",
			c->where);
		goto fail;
	}
	if (resolve_root(c, deadline, err) < 0)
		goto fail;
	log_debug("%s: sftp: connected to %s, root '%s'", d->name, c->where,
		  c->root);
	conn->priv = c;
	return 0;
fail:
	if (kh)
		libssh2_knownhost_free(kh);
	sc_free(c);
	return -1;
}

/*
 * Tear down: politely (SFTP close, SSH disconnect) within DISCONNECT_MS when
 * the session is alive; a dead one gets its socket shut first, so nothing
 * in libssh2 can wait on it.
 */
static void sc_free(struct sftp_conn *c)
{
	int64_t deadline = now_ms() + DISCONNECT_MS;
	int rc;

	if (!c)
		return;
	if (c->dead && c->sock >= 0)
		shutdown(c->sock, SHUT_RDWR);
	if (c->rchan) {
		SC_RETRY(c, deadline, rc, libssh2_channel_free(c->rchan));
		if (rc < 0 && c->sock >= 0) {
			shutdown(c->sock, SHUT_RDWR);
			(void)libssh2_channel_free(c->rchan);
		}
	}
	if (c->sftp) {
		SC_RETRY(c, deadline, rc, libssh2_sftp_shutdown(c->sftp));
		if (rc < 0 && c->sock >= 0) {
			shutdown(c->sock, SHUT_RDWR);
			(void)libssh2_sftp_shutdown(c->sftp);
		}
	}
	if (c->session) {
		if (!c->dead) {
			SC_RETRY(c, deadline, rc,
				 libssh2_session_disconnect(c->session,
							    "spoolfs done"));
		}
		if (c->sock >= 0)
			shutdown(c->sock, SHUT_RDWR);
		for (int i = 0; i < 100 &&
		     libssh2_session_free(c->session) == LIBSSH2_ERROR_EAGAIN;
		     i++)
			;
	}
	if (c->sock >= 0)
		close(c->sock);
	sc_free(c->aux);
	free(c->root);
	free(c->buf);
	free(c);
}

static void sftp_disconnect(struct spoolfs_conn *conn)
{
	sc_free(conn->priv);
	conn->priv = NULL;
}

/* ------------------------------------------------------------ metadata */

static int sc_stat_path(struct sftp_conn *c, const char *rpath,
			LIBSSH2_SFTP_ATTRIBUTES *a, int64_t deadline)
{
	int rc;

	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_stat_ex(c->sftp, rpath,
				      (unsigned int)strlen(rpath),
				      LIBSSH2_SFTP_STAT, a));
	return rc;
}

static bool sc_is_status(const struct sftp_conn *c, int rc, unsigned long st)
{
	return rc == LIBSSH2_ERROR_SFTP_PROTOCOL &&
	       libssh2_sftp_last_error(c->sftp) == st;
}

/*
 * mkdir RPATH, first its missing parents below the root (RPATH is cut at
 * each '/' and restored).  An existing directory is fine: OpenSSH answers
 * mkdir of one with a bare "failure", and another worker may race us.
 */
static int mkdir_p(struct sftp_conn *c, char *rpath, size_t rootlen,
		   struct spoolfs_error *err)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	LIBSSH2_SFTP_ATTRIBUTES a;
	unsigned long st;
	char *slash;
	int rc;

	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_mkdir_ex(c->sftp, rpath,
				       (unsigned int)strlen(rpath), 0777));
	if (rc == 0)
		return 0;
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
		goto fail;
	st = libssh2_sftp_last_error(c->sftp);
	slash = strrchr(rpath, '/');
	if (st == LIBSSH2_FX_NO_SUCH_FILE && slash &&
	    (size_t)(slash - rpath) > rootlen) {
		*slash = '\0';
		rc = mkdir_p(c, rpath, rootlen, err);
		*slash = '/';
		if (rc < 0)
			return -1;
		deadline = now_ms() + (int64_t)stall_ms(c);
		SC_RETRY(c, deadline, rc,
			 libssh2_sftp_mkdir_ex(c->sftp, rpath,
					       (unsigned int)strlen(rpath),
					       0777));
		if (rc == 0)
			return 0;
		if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
			goto fail;
		st = libssh2_sftp_last_error(c->sftp);
	}
	rc = sc_stat_path(c, rpath, &a, deadline);
	if (rc == 0 && LIBSSH2_SFTP_S_ISDIR(a.permissions))
		return 0;
	if (rc == 0)
		return spoolfs_error_set(err, SPOOLFS_E_NAME,
			"cannot create directory '%s' on %s: a file of that "
			"name exists", rpath, c->where);
	if (rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
		goto fail;
	{
		char what[SPOOLFS_ERRMSG_MAX];

		snprintf(what, sizeof(what), "cannot create directory '%s' on %s",
			 rpath, c->where);
		return sc_fail_msg(c, err, st, what);
	}
fail:
	return sc_fail(c, err, rc, false, "cannot create directory '%s' on %s",
		       rpath, c->where);
}

static int sftp_mkdirs(struct spoolfs_conn *conn, const char *dir,
		       struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	LIBSSH2_SFTP_ATTRIBUTES a;
	char *rpath;
	int rc;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: mkdir -p '%s'", c->dest->name, dir);
	rpath = sc_path(c, dir);
	if (!rpath)
		return sc_oom(err);
	/* Most of the time the directory is there already: one stat. */
	rc = sc_stat_path(c, rpath, &a, now_ms() + (int64_t)stall_ms(c));
	if (rc == 0 && LIBSSH2_SFTP_S_ISDIR(a.permissions))
		rc = 0;
	else if (rc < 0 && !sc_is_status(c, rc, LIBSSH2_FX_NO_SUCH_FILE))
		rc = sc_fail(c, err, rc, false,
			     "cannot create directory '%s' on %s", rpath,
			     c->where);
	else
		rc = mkdir_p(c, rpath, strlen(c->root), err);
	free(rpath);
	return rc < 0 ? -1 : 0;
}

static int sftp_stat(struct spoolfs_conn *conn, const char *path,
		     struct spoolfs_rstat *st, struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	LIBSSH2_SFTP_ATTRIBUTES a;
	char *rpath;
	int rc;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: stat '%s'", c->dest->name, path);
	rpath = sc_path(c, path);
	if (!rpath)
		return sc_oom(err);
	rc = sc_stat_path(c, rpath, &a, now_ms() + (int64_t)stall_ms(c));
	if (rc < 0) {
		sc_fail(c, err, rc, false, "cannot stat '%s' on %s", rpath,
			c->where);
		free(rpath);
		return -1;
	}
	free(rpath);
	st->size = (a.flags & LIBSSH2_SFTP_ATTR_SIZE) ? a.filesize : 0;
	st->mtime = (a.flags & LIBSSH2_SFTP_ATTR_ACMODTIME)
		    ? (int64_t)a.mtime : -1;
	st->is_dir = (a.flags & LIBSSH2_SFTP_ATTR_PERMISSIONS) &&
		     LIBSSH2_SFTP_S_ISDIR(a.permissions);
	return 0;
}

static int sc_unlink(struct sftp_conn *c, const char *rpath)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	int rc;

	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_unlink_ex(c->sftp, rpath,
					(unsigned int)strlen(rpath)));
	return rc;
}

static int sc_rmdir(struct sftp_conn *c, const char *rpath)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	int rc;

	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_rmdir_ex(c->sftp, rpath,
				       (unsigned int)strlen(rpath)));
	return rc;
}

/* Delete the file PATH, or with DIR remove the (empty) directory PATH. */
static int sftp_delete(struct spoolfs_conn *conn, const char *path, bool dir,
		       struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	char *rpath;
	int rc;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: %s '%s'", c->dest->name,
		  dir ? "rmdir" : "remove", path);
	rpath = sc_path(c, path);
	if (!rpath)
		return sc_oom(err);
	rc = dir ? sc_rmdir(c, rpath) : sc_unlink(c, rpath);
	if (rc < 0)
		sc_fail(c, err, rc, false, dir ? "cannot remove directory "
			"'%s' on %s" : "cannot delete '%s' on %s", rpath,
			c->where);
	free(rpath);
	return rc < 0 ? -1 : 0;
}

static int sftp_remove(struct spoolfs_conn *conn, const char *path,
		       struct spoolfs_error *err)
{
	return sftp_delete(conn, path, false, err);
}

static int sftp_rmdir(struct spoolfs_conn *conn, const char *dir,
		      struct spoolfs_error *err)
{
	return sftp_delete(conn, dir, true, err);
}

static int sftp_set_mtime(struct spoolfs_conn *conn, const char *path,
			  int64_t mtime, struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	LIBSSH2_SFTP_ATTRIBUTES a = { .flags = LIBSSH2_SFTP_ATTR_ACMODTIME };
	int64_t deadline;
	char *rpath;
	int rc;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: set mtime of '%s' to %lld", c->dest->name, path,
		  (long long)mtime);
	if (mtime < 0 || mtime > UINT32_MAX)
		return spoolfs_error_set(err, SPOOLFS_E_UNSUPPORTED,
			"cannot set mtime %lld on %s: sftp v3 times are "
			"32-bit", (long long)mtime, c->where);
	rpath = sc_path(c, path);
	if (!rpath)
		return sc_oom(err);
	a.atime = (unsigned long)mtime;
	a.mtime = (unsigned long)mtime;
	deadline = now_ms() + (int64_t)stall_ms(c);
	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_stat_ex(c->sftp, rpath,
				      (unsigned int)strlen(rpath),
				      LIBSSH2_SFTP_SETSTAT, &a));
	if (rc < 0)
		sc_fail(c, err, rc, false, "cannot set mtime of '%s' on %s",
			rpath, c->where);
	free(rpath);
	return rc < 0 ? -1 : 0;
}

/* ------------------------------------------------------------ rename */

static void put_u32(unsigned char *p, uint32_t v)
{
	p[0] = (unsigned char)(v >> 24);
	p[1] = (unsigned char)(v >> 16);
	p[2] = (unsigned char)(v >> 8);
	p[3] = (unsigned char)v;
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 |
	       (uint32_t)p[2] << 8 | p[3];
}

static int rchan_write(struct sftp_conn *c, const unsigned char *buf,
		       size_t len, int64_t deadline)
{
	while (len > 0) {
		ssize_t n = libssh2_channel_write(c->rchan, (const char *)buf,
						  len);

		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (sc_wait(c, deadline) < 0)
				return SC_TIMEDOUT;
			continue;
		}
		if (n < 0)
			return (int)n;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

static int rchan_read(struct sftp_conn *c, unsigned char *buf, size_t len,
		      int64_t deadline)
{
	while (len > 0) {
		ssize_t n = libssh2_channel_read(c->rchan, (char *)buf, len);

		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (sc_wait(c, deadline) < 0)
				return SC_TIMEDOUT;
			continue;
		}
		if (n < 0)
			return (int)n;
		if (n == 0)
			return LIBSSH2_ERROR_CHANNEL_CLOSED;
		buf += n;
		len -= (size_t)n;
	}
	return 0;
}

/* Read one SFTP packet from the side channel: malloc'd into *pkt. */
static int rchan_packet(struct sftp_conn *c, unsigned char **pkt,
			uint32_t *len, int64_t deadline)
{
	unsigned char hdr[4];
	int rc = rchan_read(c, hdr, 4, deadline);

	if (rc < 0)
		return rc;
	*len = get_u32(hdr);
	if (*len < 1 || *len > RCHAN_MAX_PACKET)
		return LIBSSH2_ERROR_PROTO;
	*pkt = malloc(*len);
	if (!*pkt)
		return LIBSSH2_ERROR_ALLOC;
	rc = rchan_read(c, *pkt, *len, deadline);
	if (rc < 0) {
		free(*pkt);
		*pkt = NULL;
	}
	return rc;
}

/*
 * Open the side channel and learn whether the server offers
 * posix-rename@openssh.com.  Returns a libssh2 code; a server that refuses
 * the channel (MaxSessions) just has no extension.
 */
static int rchan_open(struct sftp_conn *c, int64_t deadline)
{
	static const unsigned char init[9] = { 0, 0, 0, 5, FXP_INIT,
					       0, 0, 0, 3 };
	unsigned char *pkt = NULL, *p, *end;
	uint32_t len;
	int rc;

	c->rename_ext = 0;
	c->rchan_up = false;
	SC_RETRY_PTR(c, deadline, rc, c->rchan,
		     libssh2_channel_open_session(c->session));
	if (!c->rchan)
		return rc == LIBSSH2_ERROR_CHANNEL_FAILURE ? 0 : rc;
	libssh2_channel_handle_extended_data2(c->rchan,
			LIBSSH2_CHANNEL_EXTENDED_DATA_IGNORE);
	SC_RETRY(c, deadline, rc,
		 libssh2_channel_subsystem(c->rchan, "sftp"));
	if (rc == LIBSSH2_ERROR_CHANNEL_REQUEST_DENIED ||
	    rc == LIBSSH2_ERROR_CHANNEL_FAILURE)
		return 0;
	if (rc < 0)
		return rc;
	rc = rchan_write(c, init, sizeof(init), deadline);
	if (rc < 0)
		return rc;
	rc = rchan_packet(c, &pkt, &len, deadline);
	if (rc < 0)
		return rc;
	if (pkt[0] != FXP_VERSION || len < 5) {
		free(pkt);
		return LIBSSH2_ERROR_PROTO;
	}
	c->rchan_up = true;
	/* extensions: (string name, string data)* */
	p = pkt + 5;
	end = pkt + len;
	while (end - p >= 4) {
		uint32_t nl = get_u32(p), dl;
		const unsigned char *name = p + 4;

		if ((size_t)(end - p) < 8 + (size_t)nl)
			break;
		dl = get_u32(p + 4 + nl);
		if ((size_t)(end - p) < 8 + (size_t)nl + dl)
			break;
		if (nl == strlen("posix-rename@openssh.com") &&
		    memcmp(name, "posix-rename@openssh.com", nl) == 0)
			c->rename_ext = 1;
		p += 8 + nl + dl;
	}
	free(pkt);
	return 0;
}

/* rchan_open() once per connection: the side channel, if not tried yet. */
static int rchan_once(struct sftp_conn *c, int64_t deadline)
{
	return c->rename_ext < 0 ? rchan_open(c, deadline) : 0;
}

/* A packet being built in a buffer sized for it beforehand. */
struct rpkt {
	unsigned char *p;
	size_t len;
};

static size_t rp_begin(struct rpkt *b, unsigned char type, uint32_t id)
{
	size_t at = b->len;

	b->p[at + 4] = type;
	put_u32(b->p + at + 5, id);
	b->len += 9;
	return at;
}

static void rp_end(struct rpkt *b, size_t at)
{
	put_u32(b->p + at, (uint32_t)(b->len - at - 4));
}

static void rp_u32(struct rpkt *b, uint32_t v)
{
	put_u32(b->p + b->len, v);
	b->len += 4;
}

static void rp_u64(struct rpkt *b, uint64_t v)
{
	rp_u32(b, (uint32_t)(v >> 32));
	rp_u32(b, (uint32_t)v);
}

static void rp_str(struct rpkt *b, const void *s, size_t n)
{
	rp_u32(b, (uint32_t)n);
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* Read the reply to request ID into *pkt (its type is (*pkt)[0]).  A
 * reply to another request is a protocol error: the side channel has one
 * caller, and it reads every reply it asked for. */
static int rchan_reply(struct sftp_conn *c, uint32_t id, unsigned char **pkt,
		       uint32_t *len, int64_t deadline)
{
	int rc = rchan_packet(c, pkt, len, deadline);

	if (rc < 0)
		return rc;
	if (*len < 9 || get_u32(*pkt + 1) != id) {
		free(*pkt);
		*pkt = NULL;
		return LIBSSH2_ERROR_PROTO;
	}
	return 0;
}

/*
 * posix-rename@openssh.com FROM[i] TO[i], i < N, over the side channel:
 * all sent at once, the replies read in order.  Returns 0 with each
 * rename's SFTP status in STATUS[i], or a libssh2 session code (< 0).
 */
static int rchan_renames(struct sftp_conn *c, size_t n, char *const *from,
			 char *const *to, unsigned long *status,
			 int64_t deadline)
{
	static const char ext[] = "posix-rename@openssh.com";
	size_t el = sizeof(ext) - 1, total = 0, at, i;
	uint32_t id0 = c->rchan_id + 1, plen;
	unsigned char *pkt = NULL;
	struct rpkt b;
	int rc;

	if (n == 0)
		return 0;
	for (i = 0; i < n; i++)
		total += 9 + 4 + el + 4 + strlen(from[i]) + 4 + strlen(to[i]);
	b = (struct rpkt){ calloc(1, total), 0 };
	if (!b.p)
		return LIBSSH2_ERROR_ALLOC;
	for (i = 0; i < n; i++) {
		at = rp_begin(&b, FXP_EXTENDED, ++c->rchan_id);
		rp_str(&b, ext, el);
		rp_str(&b, from[i], strlen(from[i]));
		rp_str(&b, to[i], strlen(to[i]));
		rp_end(&b, at);
	}
	rc = rchan_write(c, b.p, b.len, deadline);
	free(b.p);
	for (i = 0; i < n && rc == 0; i++) {
		rc = rchan_reply(c, id0 + (uint32_t)i, &pkt, &plen, deadline);
		if (rc < 0)
			break;
		if (pkt[0] != FXP_STATUS)
			rc = LIBSSH2_ERROR_PROTO;
		else
			status[i] = get_u32(pkt + 5);
		free(pkt);
	}
	return rc;
}

/* A rename's SFTP status ST (not OK) into *err. */
static int sc_rename_status(struct spoolfs_error *err, unsigned long st,
			    const char *rfrom, const char *rto,
			    const char *where)
{
	const char *text;
	enum spoolfs_err code = sc_status(st, &text);

	return spoolfs_error_set(err, code, "cannot rename '%s' to '%s' on "
				 "%s: %s", rfrom, rto, where, text);
}

static int sftp_rename(struct spoolfs_conn *conn, const char *from,
		       const char *to, struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	char *rfrom = NULL, *rto = NULL;
	int64_t deadline;
	unsigned long st;
	int rc, ret = -1;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: rename '%s' to '%s'", c->dest->name, from, to);
	rfrom = sc_path(c, from);
	rto = sc_path(c, to);
	if (!rfrom || !rto) {
		sc_oom(err);
		goto out;
	}
	deadline = now_ms() + (int64_t)stall_ms(c);
	rc = rchan_once(c, deadline);
	if (rc < 0) {
		sc_fail(c, err, rc, false, "cannot rename '%s' to '%s' on %s",
			rfrom, rto, c->where);
		goto out;
	}
	if (c->rename_ext > 0) {
		rc = rchan_renames(c, 1, &rfrom, &rto, &st, deadline);
		if (rc < 0) {
			sc_fail(c, err, rc, false,
				"cannot rename '%s' to '%s' on %s", rfrom, rto,
				c->where);
			goto out;
		}
		if (st != LIBSSH2_FX_OK) {
			sc_rename_status(err, st, rfrom, rto, c->where);
			goto out;
		}
		ret = 0;
		goto out;
	}
	/* No overwriting rename: try plain, then remove the target. */
	SC_RETRY(c, deadline, rc,
		 libssh2_sftp_rename_ex(c->sftp, rfrom,
					(unsigned int)strlen(rfrom), rto,
					(unsigned int)strlen(rto),
					LIBSSH2_SFTP_RENAME_OVERWRITE |
					LIBSSH2_SFTP_RENAME_ATOMIC |
					LIBSSH2_SFTP_RENAME_NATIVE));
	if (rc < 0 && (sc_is_status(c, rc, LIBSSH2_FX_FAILURE) ||
		       sc_is_status(c, rc, LIBSSH2_FX_FILE_ALREADY_EXISTS))) {
		int urc = sc_unlink(c, rto);

		if (urc == 0 || sc_is_status(c, urc, LIBSSH2_FX_NO_SUCH_FILE)) {
			deadline = now_ms() + (int64_t)stall_ms(c);
			SC_RETRY(c, deadline, rc,
				 libssh2_sftp_rename_ex(c->sftp, rfrom,
					(unsigned int)strlen(rfrom), rto,
					(unsigned int)strlen(rto),
					LIBSSH2_SFTP_RENAME_OVERWRITE |
					LIBSSH2_SFTP_RENAME_ATOMIC |
					LIBSSH2_SFTP_RENAME_NATIVE));
		} else if (urc != LIBSSH2_ERROR_SFTP_PROTOCOL) {
			rc = urc;
		}
	}
	if (rc < 0) {
		sc_fail(c, err, rc, false, "cannot rename '%s' to '%s' on %s",
			rfrom, rto, c->where);
		goto out;
	}
	ret = 0;
out:
	free(rfrom);
	free(rto);
	return ret;
}

/*
 * rename_batch: all over the side channel (rchan_renames()) where the
 * server has posix-rename, else none (sftp_rename() then removes and
 * renames, one at a time).
 */
static void sftp_rename_batch(struct spoolfs_conn *conn,
			      struct spoolfs_rename_item *items, size_t n)
{
	struct sftp_conn *c = conn->priv;
	char **rfrom = calloc(n, sizeof(*rfrom));
	char **rto = calloc(n, sizeof(*rto));
	unsigned long *st = calloc(n, sizeof(*st));
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	size_t i;
	int rc = 0;

	if (c->dead)
		goto out;
	if (!rfrom || !rto || !st)
		rc = LIBSSH2_ERROR_ALLOC;
	for (i = 0; i < n && rc == 0; i++) {
		rfrom[i] = sc_path(c, items[i].from);
		rto[i] = sc_path(c, items[i].to);
		if (!rfrom[i] || !rto[i])
			rc = LIBSSH2_ERROR_ALLOC;
	}
	if (rc == 0)
		rc = rchan_once(c, deadline);
	if (rc == 0 && c->rename_ext <= 0)
		goto out;
	log_debug("%s: sftp: rename %zu files at once", c->dest->name, n);
	if (rc == 0)
		rc = rchan_renames(c, n, rfrom, rto, st, deadline);
	for (i = 0; i < n; i++) {
		const char *f = rfrom && rfrom[i] ? rfrom[i] : items[i].from;
		const char *t = rto && rto[i] ? rto[i] : items[i].to;

		if (rc == LIBSSH2_ERROR_ALLOC)
			items[i].rc = sc_oom(&items[i].err);
		else if (rc < 0)
			items[i].rc = sc_fail(c, &items[i].err, rc, false,
					      "cannot rename '%s' to '%s' on "
					      "%s", f, t, c->where);
		else if (st[i] != LIBSSH2_FX_OK)
			items[i].rc = sc_rename_status(&items[i].err, st[i], f,
						       t, c->where);
		else
			items[i].rc = 0;
	}
out:
	for (i = 0; i < n && rfrom && rto; i++) {
		free(rfrom[i]);
		free(rto[i]);
	}
	free(rfrom);
	free(rto);
	free(st);
}

/* ------------------------------------------------------------ small puts */

enum { RP_WRITE, RP_SETSTAT, RP_FSTAT, RP_CLOSE, RP_OPS };

/* What request OP of a small put was about, for an error message. */
static void rp_what(char *buf, size_t n, int op, const char *rpath,
		    const char *where)
{
	switch (op) {
	case RP_WRITE:
		snprintf(buf, n, "cannot write '%s' on %s at byte 0", rpath,
			 where);
		break;
	case RP_SETSTAT:
		snprintf(buf, n, "cannot set mtime of '%s' on %s", rpath,
			 where);
		break;
	case RP_FSTAT:
		snprintf(buf, n, "cannot check the size of '%s' on %s after "
			 "writing it", rpath, where);
		break;
	default:
		snprintf(buf, n, "cannot close '%s' on %s after writing it",
			 rpath, where);
		break;
	}
}

/* One file of a small put on the side channel (rchan_put_batch()). */
struct rp_file {
	struct spoolfs_put_item *it;
	char *rpath;
	/* the OPEN goes out from the start of MEM; the data is read to
	 * DATA_AT, with room before it for the WRITE's header and after it
	 * for the requests that follow */
	unsigned char *mem;
	size_t data_at;
	unsigned char handle[FX_HANDLE_MAX];
	size_t hl;
	uint32_t open_id;
	uint32_t ids[RP_OPS];
	unsigned long status[RP_OPS];
	bool sent;			/* its OPEN went out, its reply is still
					 * to read; then: its write went out */
};

/* Read F's file into its buffer; 0, or -1 with its item's error set. */
static int rp_load(struct rp_file *f)
{
	struct spoolfs_put_item *it = f->it;
	size_t got = 0;

	f->data_at = 320 + strlen(f->rpath);
	f->mem = malloc(f->data_at + (size_t)it->size +
			RP_OPS * (32 + FX_HANDLE_MAX));
	if (!f->mem)
		return sc_oom(&it->err);
	while (got < it->size) {
		ssize_t r = pread(it->fd, f->mem + f->data_at + got,
				  (size_t)(it->size - got), (off_t)got);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			return spoolfs_error_set(&it->err, SPOOLFS_E_IO,
				"cannot read the spool copy of '%s' at byte "
				"%zu: %s", it->path, got,
				r < 0 ? strerror(errno)
				      : "file is shorter than expected");
		got += (size_t)r;
	}
	return 0;
}

/* F's OPEN (write, create, truncate; mode as libssh2 sends it), at the
 * end of B. */
static void rp_open(struct rpkt *b, struct sftp_conn *c, struct rp_file *f)
{
	size_t at;

	f->open_id = ++c->rchan_id;
	at = rp_begin(b, FXP_OPEN, f->open_id);
	rp_str(b, f->rpath, strlen(f->rpath));
	rp_u32(b, FXF_WRITE | FXF_CREAT | FXF_TRUNC);
	rp_u32(b, FX_ATTR_PERMISSIONS);
	rp_u32(b, LIBSSH2_SFTP_S_IFREG | 0666);
	rp_end(b, at);
}

/* F's OPEN reply PKT: its handle kept, or 0 when it said no (F's item
 * failed), LIBSSH2_ERROR_PROTO when it made no sense. */
static int rp_opened(struct sftp_conn *c, struct rp_file *f,
		     const unsigned char *pkt, uint32_t plen)
{
	char what[SPOOLFS_ERRMSG_MAX];

	if (pkt[0] == FXP_STATUS) {
		snprintf(what, sizeof(what), "cannot create '%s' on %s",
			 f->rpath, c->where);
		f->it->rc = sc_fail_msg(c, &f->it->err, get_u32(pkt + 5),
					what);
		return 0;
	}
	f->hl = plen >= 9 ? get_u32(pkt + 5) : 0;
	if (pkt[0] != FXP_HANDLE || f->hl == 0 || f->hl > FX_HANDLE_MAX ||
	    plen < 9 + f->hl)
		return LIBSSH2_ERROR_PROTO;
	memcpy(f->handle, pkt + 9, f->hl);
	return 1;
}

/* F's WRITE, FSETSTAT (with an mtime), FSTAT and CLOSE, built around its
 * data; they go out from *OUT, *OUTLEN bytes. */
static void rp_batch(struct sftp_conn *c, struct rp_file *f,
		     unsigned char **out, size_t *outlen)
{
	struct spoolfs_put_item *it = f->it;
	size_t hl = f->hl, at;
	struct rpkt b;

	/* the WRITE's header goes right before the data */
	b = (struct rpkt){ f->mem + f->data_at - (4 + 1 + 4 + 4 + hl + 8 + 4),
			   0 };
	f->ids[RP_WRITE] = ++c->rchan_id;
	at = rp_begin(&b, FXP_WRITE, f->ids[RP_WRITE]);
	rp_str(&b, f->handle, hl);
	rp_u64(&b, 0);
	rp_u32(&b, (uint32_t)it->size);
	b.len += (size_t)it->size;
	rp_end(&b, at);
	f->ids[RP_SETSTAT] = 0;
	if (it->mtime >= 0) {
		f->ids[RP_SETSTAT] = ++c->rchan_id;
		at = rp_begin(&b, FXP_FSETSTAT, f->ids[RP_SETSTAT]);
		rp_str(&b, f->handle, hl);
		rp_u32(&b, FX_ATTR_ACMODTIME);
		rp_u32(&b, (uint32_t)it->mtime);
		rp_u32(&b, (uint32_t)it->mtime);
		rp_end(&b, at);
	}
	f->ids[RP_FSTAT] = ++c->rchan_id;
	at = rp_begin(&b, FXP_FSTAT, f->ids[RP_FSTAT]);
	rp_str(&b, f->handle, hl);
	rp_end(&b, at);
	f->ids[RP_CLOSE] = ++c->rchan_id;
	at = rp_begin(&b, FXP_CLOSE, f->ids[RP_CLOSE]);
	rp_str(&b, f->handle, hl);
	rp_end(&b, at);
	*out = b.p;
	*outlen = b.len;
}

/* Read the replies to F's batch: 0, or a libssh2 code when the channel
 * failed (then it is out of step: so is the connection). */
static int rp_replies(struct sftp_conn *c, struct rp_file *f)
{
	struct spoolfs_put_item *it = f->it;
	unsigned char *pkt;
	uint32_t plen;
	int rc;

	it->rsize = 0;
	for (int op = 0; op < RP_OPS; op++) {
		if (op == RP_SETSTAT && it->mtime < 0)
			continue;
		rc = rchan_reply(c, f->ids[op], &pkt, &plen,
				 now_ms() + (int64_t)stall_ms(c));
		if (rc < 0)
			return rc;
		if (pkt[0] == FXP_STATUS) {
			f->status[op] = get_u32(pkt + 5);
		} else if (op == RP_FSTAT && pkt[0] == FXP_ATTRS && plen >= 9) {
			if ((get_u32(pkt + 5) & FX_ATTR_SIZE) && plen >= 17)
				it->rsize = (uint64_t)get_u32(pkt + 9) << 32 |
					    get_u32(pkt + 13);
		} else {
			rc = LIBSSH2_ERROR_PROTO;
		}
		free(pkt);
		if (rc < 0)
			return rc;
	}
	return 0;
}

/* F's result from the statuses of its batch. */
static void rp_result(struct sftp_conn *c, struct rp_file *f)
{
	struct spoolfs_put_item *it = f->it;
	char what[SPOOLFS_ERRMSG_MAX];
	int first = -1;

	for (int op = 0; op < RP_OPS && first < 0; op++)
		if (f->status[op] != LIBSSH2_FX_OK)
			first = op;
	if (first == RP_SETSTAT && (f->status[first] ==
				    LIBSSH2_FX_OP_UNSUPPORTED ||
				    f->status[first] ==
				    LIBSSH2_FX_PERMISSION_DENIED)) {
		/* no FSETSTAT here (sftp-server -P fsetstat refuses it):
		 * libssh2's puts set the mtime by path */
		if (!c->no_rchan_put)
			log_info("%s: sftp: %s does not set times through a "
				 "handle; small files go the longer way",
				 c->dest->name, c->where);
		c->no_rchan_put = true;
		it->rc = 1;
		return;
	}
	if (first >= 0) {
		rp_what(what, sizeof(what), first, f->rpath, c->where);
		it->rc = sc_fail_msg(c, &it->err, f->status[first], what);
		return;
	}
	log_debug("%s: sftp: '%s' holds %llu bytes on the server%s (side "
		  "channel: open, then write, %sfstat and close in one round "
		  "trip)", c->dest->name, it->path,
		  (unsigned long long)it->rsize,
		  it->mtime >= 0 ? ", mtime set" : "",
		  it->mtime >= 0 ? "fsetstat, " : "");
	if (it->progress && it->progress(it->arg, it->size) != 0) {
		it->rc = spoolfs_error_set(&it->err, SPOOLFS_E_CANCELLED,
					   "upload of '%s' to %s cancelled",
					   f->rpath, c->where);
		return;
	}
	it->rc = 0;
}

/*
 * put_file of N small files from their first byte, over the side channel,
 * in two round trips for all of them: the N OPENs at once; then for each
 * file WRITE, FSETSTAT (with an mtime), FSTAT (the size check) and CLOSE,
 * all files' at once, their replies read in order.  libssh2's calls take
 * three round trips per file (OPEN; WRITE with FSTAT and SETSTAT; CLOSE:
 * see sc_put_tail() for why not fewer).  The server answers a channel's
 * requests in order, so each FSTAT sees every byte of the WRITE before it.
 * Each item gets its own result (rc 1: a server that cannot FSETSTAT,
 * from then on for the whole connection: the caller puts it its own way);
 * every reply asked for is read whatever happens, so the channel stays in
 * step.  A failed channel fails every item not done.
 */
static void rchan_put_batch(struct sftp_conn *c, struct spoolfs_put_item *items,
			    size_t n)
{
	struct rp_file *fs = calloc(n, sizeof(*fs));
	size_t olen = 0, i;
	struct rpkt b = { NULL, 0 };
	int rc = 0;

	if (!fs) {
		for (i = 0; i < n; i++)
			items[i].rc = sc_oom(&items[i].err);
		return;
	}
	for (i = 0; i < n; i++) {
		fs[i].it = &items[i];
		fs[i].rpath = sc_path(c, items[i].path);
		if (!fs[i].rpath)
			items[i].rc = sc_oom(&items[i].err);
		else if (items[i].size > RCHAN_PUT_MAX ||
			 items[i].mtime > UINT32_MAX)
			items[i].rc = 1;	/* for sftp_put_file() */
		else if (rp_load(&fs[i]) < 0)
			items[i].rc = -1;
		else
			olen += 9 + 4 + strlen(fs[i].rpath) + 12;
	}
	b.p = malloc(olen ? olen : 1);
	if (!b.p)
		rc = LIBSSH2_ERROR_ALLOC;
	for (i = 0; i < n && rc == 0; i++)
		if (items[i].rc == 1 && fs[i].mem) {
			rp_open(&b, c, &fs[i]);
			fs[i].sent = true;
		}
	if (rc == 0 && b.len)
		rc = rchan_write(c, b.p, b.len, now_ms() + (int64_t)stall_ms(c));
	free(b.p);
	/* the OPENs' replies; each file opened goes out at once */
	for (i = 0; i < n && rc == 0; i++) {
		unsigned char *pkt, *out;
		uint32_t plen;
		size_t len;

		if (!fs[i].sent)
			continue;
		fs[i].sent = false;
		rc = rchan_reply(c, fs[i].open_id, &pkt, &plen,
				 now_ms() + (int64_t)stall_ms(c));
		if (rc < 0)
			break;
		rc = rp_opened(c, &fs[i], pkt, plen);
		free(pkt);
		if (rc <= 0)
			continue;
		rp_batch(c, &fs[i], &out, &len);
		rc = rchan_write(c, out, len, now_ms() + (int64_t)stall_ms(c));
		fs[i].sent = rc == 0;
	}
	for (i = 0; i < n && rc == 0; i++) {
		if (!fs[i].sent)
			continue;
		rc = rp_replies(c, &fs[i]);
		if (rc == 0)
			rp_result(c, &fs[i]);
	}
	for (i = 0; i < n; i++) {
		if (rc < 0 && items[i].rc == 1 && fs[i].mem)
			/* the channel is out of step or gone: so is the
			 * connection (sent: its write went out) */
			items[i].rc = sc_fail(c, &items[i].err, rc, false,
					      "cannot %s '%s' on %s",
					      fs[i].sent ? "write" : "create",
					      fs[i].rpath, c->where);
		free(fs[i].rpath);
		free(fs[i].mem);
	}
	free(fs);
}

/* rchan_put_batch() of one file: 0 with *RSIZE set, -1 with *ERR set, or
 * 1 when the caller must put it its own way. */
static int rchan_put(struct sftp_conn *c, const char *path, int fd,
		     uint64_t size, int64_t mtime, uint64_t *rsize,
		     spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err)
{
	struct spoolfs_put_item it = { .path = path, .fd = fd, .size = size,
				       .mtime = mtime, .progress = progress,
				       .arg = arg, .rc = 1 };

	spoolfs_error_clear(&it.err);
	rchan_put_batch(c, &it, 1);
	if (it.rc < 0)
		*err = it.err;
	else if (it.rc == 0)
		*rsize = it.rsize;
	return it.rc;
}

/* ------------------------------------------------------------ transfers */

/*
 * Close HANDLE within the stall timeout.  Returns the libssh2 code; a
 * timeout marks the connection dead; sc_drop_handle() then frees it.
 */
static int sc_close_handle(struct sftp_conn *c, LIBSSH2_SFTP_HANDLE *h)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	int rc;

	SC_RETRY(c, deadline, rc, libssh2_sftp_close_handle(h));
	if (rc == SC_TIMEDOUT)
		c->dead = true;
	return rc;
}

/*
 * Close H and free it, whatever state the session is in.  libssh2 frees a
 * handle (with its queue of unacknowledged writes, up to PUT_INFLIGHT
 * bytes) only in libssh2_sftp_close_handle(), which keeps returning EAGAIN
 * on a session whose peer is gone.  On a dead session the socket is shut
 * down first, so the close fails at once and frees the handle.  Returns
 * the close status, or LIBSSH2_ERROR_SOCKET_DISCONNECT on a dead session.
 */
static int sc_drop_handle(struct sftp_conn *c, LIBSSH2_SFTP_HANDLE *h)
{
	int rc = LIBSSH2_ERROR_SOCKET_DISCONNECT;

	if (!h)
		return 0;
	if (!c->dead) {
		rc = sc_close_handle(c, h);
		if (rc != SC_TIMEDOUT)
			return rc;		/* closed and freed */
	}
	if (c->sock >= 0)
		shutdown(c->sock, SHUT_RDWR);
	for (int i = 0; i < 100; i++)
		if (libssh2_sftp_close_handle(h) != LIBSSH2_ERROR_EAGAIN)
			break;
	return rc;
}

/* Make the transfer buffer hold min(NEED, XFER_BUF) bytes. */
static int sc_buf(struct sftp_conn *c, uint64_t need,
		  struct spoolfs_error *err)
{
	unsigned char *nb;

	if (need > XFER_BUF)
		need = XFER_BUF;
	if (need < 4096)
		need = 4096;
	if (c->bufcap >= need)
		return 0;
	nb = realloc(c->buf, (size_t)need);
	if (!nb)
		return sc_oom(err);
	c->buf = nb;
	c->bufcap = (size_t)need;
	return 0;
}

/* Open RPATH for writing at OFFSET: created, and truncated when OFFSET is 0. */
static LIBSSH2_SFTP_HANDLE *sc_open_write(struct sftp_conn *c,
					  const char *rpath, uint64_t offset,
					  struct spoolfs_error *err)
{
	unsigned long flags = LIBSSH2_FXF_WRITE | LIBSSH2_FXF_CREAT;
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	LIBSSH2_SFTP_HANDLE *h;
	int rc;

	if (offset == 0)
		flags |= LIBSSH2_FXF_TRUNC;
	SC_RETRY_PTR(c, deadline, rc, h,
		     libssh2_sftp_open_ex(c->sftp, rpath,
					  (unsigned int)strlen(rpath), flags,
					  0666, LIBSSH2_SFTP_OPENFILE));
	if (!h) {
		sc_fail(c, err, rc, false, "cannot create '%s' on %s", rpath,
			c->where);
		return NULL;
	}
	if (offset > 0)
		libssh2_sftp_seek64(h, offset);
	return h;
}

struct sc_tail;
static bool sc_awaiting_reply(struct sftp_conn *c);
static int sc_tail_start(struct sftp_conn *c, struct sc_tail *t,
			 int64_t deadline);

/*
 * Write bytes [OFFSET, SIZE) of FD through the open handle H, until the
 * server has acknowledged all of them.  With TAIL (put_file), the tail's
 * requests go out as soon as the last WRITE has gone out whole, so their
 * replies come back with its acknowledgement (sc_put_tail()).  Returns 0,
 * or -1 with *err set; H stays open either way.
 */
static int sc_write_all(struct sftp_conn *c, LIBSSH2_SFTP_HANDLE *h, int fd,
			const char *path, const char *rpath, uint64_t offset,
			uint64_t size, spoolfs_progress_fn progress, void *arg,
			struct sc_tail *tail, struct spoolfs_error *err)
{
	uint64_t acked = offset, readpos = offset, reported = offset;
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	size_t lo = 0, hi = 0;

	while (acked < size) {
		size_t count;
		ssize_t n;
		bool last;

		/*
		 * Keep PUT_INFLIGHT bytes ahead of what the server acked.
		 * Only what libssh2 has not sent yet is ever read from the
		 * buffer again, so it is refilled in big reads and shifted
		 * down (at most PUT_INFLIGHT bytes) only when its end is
		 * near.
		 */
		if (readpos < size && hi - lo < PUT_INFLIGHT) {
			size_t want;
			ssize_t r;

			if (c->bufcap - hi < PUT_INFLIGHT / 2) {
				memmove(c->buf, c->buf + lo, hi - lo);
				hi -= lo;
				lo = 0;
			}
			want = c->bufcap - hi;
			if (want > size - readpos)
				want = (size_t)(size - readpos);
			r = pread(fd, c->buf + hi, want, (off_t)readpos);
			if (r < 0 && errno == EINTR)
				continue;
			if (r <= 0)
				return spoolfs_error_set(err, SPOOLFS_E_IO,
					"cannot read the spool copy of '%s' at "
					"byte %llu: %s", path,
					(unsigned long long)readpos,
					r < 0 ? strerror(errno)
					      : "file is shorter than expected");
			hi += (size_t)r;
			readpos += (uint64_t)r;
		}
		count = hi - lo;
		if (count > PUT_INFLIGHT)
			count = PUT_INFLIGHT;
		/* the last bytes: what this call leaves says if they are out */
		last = tail && readpos == size && count == hi - lo;
		if (last)
			libssh2_session_set_last_error(c->session, 0, NULL);
		n = libssh2_sftp_write(h, (const char *)c->buf + lo, count);
		if (n == LIBSSH2_ERROR_EAGAIN || n == 0) {
			if (last && sc_awaiting_reply(c)) {
				if (sc_tail_start(c, tail, deadline) < 0)
					return sc_fail(c, err, SC_TIMEDOUT,
						false, "cannot write '%s' on "
						"%s at byte %llu", rpath,
						c->where,
						(unsigned long long)acked);
				tail = NULL;	/* sent; now the acks */
				continue;
			}
			if (sc_wait(c, deadline) < 0)
				return sc_fail(c, err, SC_TIMEDOUT, true,
					"cannot write '%s' on %s at byte %llu",
					rpath, c->where,
					(unsigned long long)acked);
			continue;
		}
		if (n < 0)
			return sc_fail(c, err, (int)n, false,
				"cannot write '%s' on %s at byte %llu",
				rpath, c->where, (unsigned long long)acked);
		lo += (size_t)n;
		acked += (uint64_t)n;
		if (progress && (acked - reported >= PROGRESS_EVERY ||
				 acked == size)) {
			reported = acked;
			if (progress(arg, acked) != 0)
				return spoolfs_error_set(err,
					SPOOLFS_E_CANCELLED,
					"upload of '%s' to %s cancelled",
					rpath, c->where);
		}
		deadline = now_ms() + (int64_t)stall_ms(c);
	}
	return 0;
}

/*
 * The tail of put_file: FSTAT of the open handle (the size the server holds)
 * and, with an mtime, SETSTAT of the path, both in flight at once, and
 * usually with the last WRITE (its acknowledgement is a reply of a third
 * kind, collected by libssh2_sftp_write() from the same queue).
 *
 * libssh2 1.10 keeps one state machine per kind of request, not per request:
 * fstat_state (FSTAT and FSETSTAT), stat_state (STAT, LSTAT, SETSTAT), each
 * handle's close_state...  A call sends its request and returns EAGAIN; the
 * same call made again collects the reply, and replies to other requests
 * that arrive meanwhile are queued by id.  So one request of each kind can
 * be in flight, with three catches, which decide the order here:
 *
 * - A request must have gone out whole before the next one is started: a
 *   channel has one outgoing packet header (channel->write_packet), and a
 *   second request started while the first is still being sent (socket
 *   full, or a key re-exchange in between) would go out under the first
 *   one's header.  libssh2 cannot be asked whether a call is past sending;
 *   sc_awaiting_reply() tells it from the error the call left, and when in
 *   doubt the call is simply finished first (one round trip more, never a
 *   wrong packet).
 * - libssh2_sftp_fstat() uses its handle until it has returned its reply,
 *   and libssh2_sftp_close_handle() frees the handle as soon as the CLOSE
 *   is answered, which can happen within its first call.  So the CLOSE is
 *   sent only after the FSTAT has returned: the last WRITE + FSTAT +
 *   SETSTAT are one round trip, CLOSE another (sc_drop_handle()).
 * - A request left in flight on a live session would hand its stale reply
 *   to the next call of its kind, so every request that was started is
 *   finished unless the session is dead (then the connection is dropped).
 *   And the SFTP status of a failed request (sftp->last_errno, shared) is
 *   read the moment its call returns.
 *
 * Returns 0 with *RSIZE set, or -1 with *err set (the first failure in
 * request order); H stays open.
 */
enum { TAIL_FSTAT, TAIL_SETSTAT, TAIL_OPS };

struct sc_tail {
	LIBSSH2_SFTP_HANDLE *h;
	const char *rpath;
	int nops;			/* FSTAT, and SETSTAT with an mtime */
	bool started;			/* sc_tail_start() ran */
	bool with_write;		/* ... while the last WRITE was acked */
	bool pipelined;			/* both requests were in flight */
	bool called[TAIL_OPS];		/* a request went (partly) out */
	LIBSSH2_SFTP_ATTRIBUTES attrs[TAIL_OPS];
	int rc[TAIL_OPS];		/* LIBSSH2_ERROR_EAGAIN until done */
	unsigned long status[TAIL_OPS];	/* when rc is SFTP_PROTOCOL */
};

static void sc_tail_init(struct sc_tail *t, LIBSSH2_SFTP_HANDLE *h,
			 const char *rpath, int64_t mtime)
{
	*t = (struct sc_tail){
		.h = h,
		.rpath = rpath,
		.nops = mtime >= 0 ? TAIL_OPS : 1,
		.rc = { LIBSSH2_ERROR_EAGAIN, LIBSSH2_ERROR_EAGAIN },
	};
	t->attrs[TAIL_SETSTAT].flags = LIBSSH2_SFTP_ATTR_ACMODTIME;
	t->attrs[TAIL_SETSTAT].atime = (unsigned long)mtime;
	t->attrs[TAIL_SETSTAT].mtime = (unsigned long)mtime;
}

/* Call OP (once more); once it has finished, its result stays. */
static int sc_tail_call(struct sftp_conn *c, struct sc_tail *t, int op)
{
	int rc;

	if (t->rc[op] != LIBSSH2_ERROR_EAGAIN)
		return t->rc[op];
	t->called[op] = true;
	/* for sc_awaiting_reply(): what this call leaves is its own */
	libssh2_session_set_last_error(c->session, 0, NULL);
	if (op == TAIL_FSTAT)
		rc = libssh2_sftp_fstat_ex(t->h, &t->attrs[op], 0);
	else
		rc = libssh2_sftp_stat_ex(c->sftp, t->rpath,
					  (unsigned int)strlen(t->rpath),
					  LIBSSH2_SFTP_SETSTAT, &t->attrs[op]);
	if (rc == LIBSSH2_ERROR_SFTP_PROTOCOL)
		t->status[op] = libssh2_sftp_last_error(c->sftp);
	t->rc[op] = rc;
	return rc;
}

/*
 * After a call returned EAGAIN: is its request out whole, the call waiting
 * for the reply?  In libssh2 1.10 that wait ends in _libssh2_channel_read()
 * saying "would block" with nothing to send; a request still being sent
 * leaves "Unable to send channel data", a pending window adjust the
 * outbound direction.  Anything unrecognized counts as no.
 */
static bool sc_awaiting_reply(struct sftp_conn *c)
{
	char *msg = NULL;

	if (libssh2_session_block_directions(c->session) &
	    LIBSSH2_SESSION_BLOCK_OUTBOUND)
		return false;
	if (libssh2_session_last_error(c->session, &msg, NULL, 0) !=
	    LIBSSH2_ERROR_EAGAIN)
		return false;
	return msg && strcmp(msg, "would block") == 0;
}

/* Send OP's request: call it until it has finished or awaits its reply. */
static int sc_tail_send(struct sftp_conn *c, struct sc_tail *t, int op,
			int64_t deadline)
{
	while (sc_tail_call(c, t, op) == LIBSSH2_ERROR_EAGAIN) {
		if (sc_awaiting_reply(c))
			return 0;
		if (sc_wait(c, deadline) < 0)
			return SC_TIMEDOUT;
	}
	return 0;
}

/* Finish OP: call it until its reply is in. */
static int sc_tail_finish(struct sftp_conn *c, struct sc_tail *t, int op,
			  int64_t deadline)
{
	while (sc_tail_call(c, t, op) == LIBSSH2_ERROR_EAGAIN)
		if (sc_wait(c, deadline) < 0)
			return SC_TIMEDOUT;
	return 0;
}

/* Whether OP failed in a way that leaves the session unusable. */
static bool sc_tail_broke(const struct sc_tail *t, int op)
{
	return t->rc[op] < 0 && t->rc[op] != LIBSSH2_ERROR_EAGAIN &&
	       t->rc[op] != LIBSSH2_ERROR_SFTP_PROTOCOL;
}

/*
 * Send the tail's requests, in order, each once the one before has gone out
 * whole.  Called by sc_write_all() while the last WRITE awaits its
 * acknowledgement (the same rule: that WRITE is out whole), else by
 * sc_put_tail().  Returns 0, or SC_TIMEDOUT (the session is then dead).
 */
static int sc_tail_start(struct sftp_conn *c, struct sc_tail *t,
			 int64_t deadline)
{
	int op, rc = 0;

	if (t->started)
		return 0;
	t->started = true;
	for (op = 0; op < t->nops && rc == 0; op++) {
		if (op > 0 && sc_tail_broke(t, op - 1))
			break;
		if (op > 0 && t->rc[op - 1] == LIBSSH2_ERROR_EAGAIN)
			t->pipelined = true;
		rc = sc_tail_send(c, t, op, deadline);
	}
	if (rc < 0)
		c->dead = true;
	return rc;
}

/*
 * After a failed write: collect the replies of tail requests already sent,
 * which would otherwise be handed to the next call of their kind.
 */
static void sc_tail_drain(struct sftp_conn *c, struct sc_tail *t)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);

	if (t->started && !c->dead)
		log_debug("%s: sftp: collecting the replies to fstat/setstat "
			  "of '%s' sent before its write failed",
			  c->dest->name, t->rpath);
	for (int op = 0; op < t->nops && !c->dead; op++)
		if (t->called[op] && !sc_tail_broke(t, op) &&
		    sc_tail_finish(c, t, op, deadline) < 0)
			c->dead = true;
}

static int sc_put_tail(struct sftp_conn *c, struct sc_tail *t,
		       const char *path, uint64_t *rsize,
		       struct spoolfs_error *err)
{
	int64_t deadline = now_ms() + (int64_t)stall_ms(c);
	const LIBSSH2_SFTP_ATTRIBUTES *a = &t->attrs[TAIL_FSTAT];
	char what[SPOOLFS_ERRMSG_MAX];
	int op, rc;

	t->with_write = t->started;
	rc = sc_tail_start(c, t, deadline);
	for (op = 0; op < t->nops && rc == 0; op++) {
		if (sc_tail_broke(t, op))
			break;
		rc = sc_tail_finish(c, t, op, deadline);
	}
	for (op = 0; op < t->nops; op++) {
		if (op == TAIL_FSTAT)
			snprintf(what, sizeof(what),
				 "cannot check the size of '%s' on %s after "
				 "writing it", t->rpath, c->where);
		else
			snprintf(what, sizeof(what),
				 "cannot set mtime of '%s' on %s", t->rpath,
				 c->where);
		if (t->rc[op] == LIBSSH2_ERROR_SFTP_PROTOCOL)
			return sc_fail_msg(c, err, t->status[op], what);
		if (t->rc[op] == LIBSSH2_ERROR_EAGAIN)
			/* never answered: timed out */
			return sc_fail(c, err, rc < 0 ? rc : SC_TIMEDOUT,
				       false, "%s", what);
		if (t->rc[op] < 0)
			return sc_fail(c, err, t->rc[op], false, "%s", what);
	}
	*rsize = (a->flags & LIBSSH2_SFTP_ATTR_SIZE) ? a->filesize : 0;
	log_debug("%s: sftp: '%s' holds %llu bytes on the server%s (%s%s)",
		  c->dest->name, path, (unsigned long long)*rsize,
		  t->nops > 1 ? ", mtime set" : "",
		  t->nops == 1 ? "fstat"
		  : t->pipelined ? "fstat and setstat in one round trip"
				 : "fstat, then setstat",
		  t->with_write ? ", sent with the last write" : "");
	return 0;
}

/*
 * put and put_file: open, write, for put_file the tail (RSIZE non-NULL),
 * close.  The close is always done, and a failed close is a failed upload.
 */
/*
 * Split puts.  libssh2 1.10 encrypts one 16-byte block per call, so one
 * session is CPU-bound on one core well below what the link and OpenSSH's
 * sftp reach.  A put of at least SPOOLFS_SPLIT_MIN bytes therefore sends
 * its upper half over a second session (c->aux, in a thread of its own)
 * while this one sends the lower half into the same open file: the temp
 * has a gap until both are done, which SPOOLFS_CAP_SPLIT tells the spool
 * (it never resumes such a temp from its size).  The lower half's handle
 * is opened first, so its truncation cannot hit bytes of the upper half;
 * the tail (fstat, mtime, close) runs on this session after both halves
 * were acknowledged and the upper half's handle closed.  Progress is what
 * the server holds without a gap (the lower half, then the upper one), so
 * the spool resumes an interrupted put from there; it is reported under a
 * mutex, and a failure or cancel of one half stops the other at its next
 * report.  Not under max_rate (the limit is per destination); when the
 * second session cannot be had, the put simply runs on one.
 */
struct split {
	pthread_mutex_t mu;
	spoolfs_progress_fn progress;
	void *arg;
	uint64_t base;			/* the put's offset */
	uint64_t lo_len;		/* the lower half's length */
	uint64_t lo_done, hi_done;	/* bytes acked of each half */
	bool stop;			/* one half failed or was cancelled */
};

struct split_half {
	struct split *sp;
	struct sftp_conn *c;
	const char *path, *rpath;
	int fd;
	uint64_t from, to;
	bool upper;
	struct spoolfs_error err;
	int rc;
};

static int split_progress(void *arg, uint64_t acked)
{
	struct split_half *h = arg;
	struct split *sp = h->sp;
	int stop;

	pthread_mutex_lock(&sp->mu);
	if (h->upper)
		sp->hi_done = acked - h->from;
	else
		sp->lo_done = acked - h->from;
	stop = sp->stop;
	/* what the server holds without a gap: the resume point */
	if (!stop && sp->progress &&
	    sp->progress(sp->arg, sp->base + sp->lo_done +
			 (sp->lo_done == sp->lo_len ? sp->hi_done : 0)) != 0)
		stop = sp->stop = true;
	pthread_mutex_unlock(&sp->mu);
	return stop;
}

static void split_failed(struct split *sp)
{
	pthread_mutex_lock(&sp->mu);
	sp->stop = true;
	pthread_mutex_unlock(&sp->mu);
}

static void *split_upper(void *arg)
{
	struct split_half *h = arg;
	struct sftp_conn *c = h->c;
	LIBSSH2_SFTP_HANDLE *fh;
	int rc;

	spoolfs_error_clear(&h->err);
	h->rc = -1;
	if (sc_buf(c, h->to - h->from, &h->err) < 0)
		goto out;
	fh = sc_open_write(c, h->rpath, h->from, &h->err);
	if (!fh)
		goto out;
	h->rc = sc_write_all(c, fh, h->fd, h->path, h->rpath, h->from, h->to,
			     split_progress, h, NULL, &h->err);
	rc = sc_drop_handle(c, fh);
	if (h->rc == 0 && rc < 0)
		h->rc = sc_fail(c, &h->err, rc, false,
				"cannot close '%s' on %s after writing it",
				h->rpath, c->where);
	else if (rc < 0 && rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
		c->dead = true;
out:
	if (h->rc < 0)
		split_failed(h->sp);
	return NULL;
}

/* The second session, connected (again) when needed; NULL: go on alone. */
static struct sftp_conn *sc_aux(struct sftp_conn *c)
{
	struct spoolfs_conn ac = { .backend = &spoolfs_backend_sftp,
				   .dest = c->dest };
	struct spoolfs_error e;

	if (c->aux && !c->aux->dead)
		return c->aux;
	sc_free(c->aux);
	c->aux = NULL;
	if (sftp_connect(&ac, &e) < 0) {
		log_debug("%s: sftp: no second session for big files: %s",
			  c->dest->name, e.msg);
		return NULL;
	}
	c->aux = ac.priv;
	return c->aux;
}

/*
 * Write bytes [OFFSET, SIZE) of FD through H (open on RPATH), the upper
 * half over the second session when the range is big enough and there is
 * one.
 */
static int sc_write_split(struct sftp_conn *c, LIBSSH2_SFTP_HANDLE *h,
			  int fd, const char *path, const char *rpath,
			  uint64_t offset, uint64_t size,
			  spoolfs_progress_fn progress, void *arg,
			  struct sc_tail *tail, struct spoolfs_error *err)
{
	struct split sp = { .progress = progress, .arg = arg, .base = offset };
	struct split_half lo, hi;
	struct sftp_conn *aux = NULL;
	uint64_t mid;
	pthread_t t;
	int rc;

	if (spoolfs_split_allowed(c->dest, offset, size))
		aux = sc_aux(c);
	if (!aux)
		return sc_write_all(c, h, fd, path, rpath, offset, size,
				    progress, arg, tail, err);
	/* halves in whole MiB, the upper one no bigger */
	mid = offset + ((size - offset + (1u << 20)) / 2 & ~((1ull << 20) - 1));
	log_debug("%s: sftp: '%s' bytes %llu..%llu here, %llu..%llu over a "
		  "second session", c->dest->name, path,
		  (unsigned long long)offset, (unsigned long long)mid,
		  (unsigned long long)mid, (unsigned long long)size);
	pthread_mutex_init(&sp.mu, NULL);
	sp.lo_len = mid - offset;
	lo = (struct split_half){ .sp = &sp, .c = c, .path = path,
				  .rpath = rpath, .fd = fd, .from = offset,
				  .to = mid };
	hi = lo;
	hi.c = aux;
	hi.from = mid;
	hi.to = size;
	hi.upper = true;
	if (pthread_create(&t, NULL, split_upper, &hi) != 0) {
		pthread_mutex_destroy(&sp.mu);
		return sc_write_all(c, h, fd, path, rpath, offset, size,
				    progress, arg, tail, err);
	}
	rc = sc_write_all(c, h, fd, path, rpath, offset, mid, split_progress,
			  &lo, NULL, err);
	if (rc < 0)
		split_failed(&sp);
	pthread_join(t, NULL);
	pthread_mutex_destroy(&sp.mu);
	if (rc < 0) {
		/* a cancel caused by the other half's failure is not news */
		if (err->code == SPOOLFS_E_CANCELLED && hi.rc < 0 &&
		    hi.err.code != SPOOLFS_E_CANCELLED)
			*err = hi.err;
		return -1;
	}
	if (hi.rc < 0) {
		*err = hi.err;
		return -1;
	}
	return 0;
}

static int sc_upload(struct sftp_conn *c, const char *path, int fd,
		     uint64_t offset, uint64_t size, int64_t mtime,
		     uint64_t *rsize, spoolfs_progress_fn progress, void *arg,
		     struct spoolfs_error *err)
{
	LIBSSH2_SFTP_HANDLE *h;
	struct sc_tail tail;
	char *rpath;
	int rc, ret = -1;

	rpath = sc_path(c, path);
	if (!rpath)
		return sc_oom(err);
	if (rsize && offset == 0 && size <= RCHAN_PUT_MAX && !c->no_rchan_put) {
		int64_t deadline = now_ms() + (int64_t)stall_ms(c);

		if ((rc = rchan_once(c, deadline)) < 0) {
			sc_fail(c, err, rc, false, "cannot create '%s' on %s",
				rpath, c->where);
			goto out;
		}
		if (c->rchan_up) {
			ret = rchan_put(c, path, fd, size, mtime, rsize,
					progress, arg, err);
			if (ret <= 0)
				goto out;
			ret = -1;
		}
	}
	if (sc_buf(c, size - offset, err) < 0)
		goto out;
	h = sc_open_write(c, rpath, offset, err);
	if (!h)
		goto out;
	sc_tail_init(&tail, h, rpath, mtime);
	if (sc_write_split(c, h, fd, path, rpath, offset, size, progress, arg,
			   rsize ? &tail : NULL, err) < 0) {
		sc_tail_drain(c, &tail);
		goto out_close;
	}
	if (rsize && sc_put_tail(c, &tail, path, rsize, err) < 0)
		goto out_close;
	rc = sc_drop_handle(c, h);
	if (rc < 0) {
		sc_fail(c, err, rc, false,
			"cannot close '%s' on %s after writing it", rpath,
			c->where);
		goto out;
	}
	ret = 0;
	goto out;
out_close:
	/* The first error is the one to report; a failing close only
	 * tells whether the session survived. */
	rc = sc_drop_handle(c, h);
	if (rc < 0 && rc != LIBSSH2_ERROR_SFTP_PROTOCOL)
		c->dead = true;
out:
	free(rpath);
	return ret;
}

static int sftp_put(struct spoolfs_conn *conn, const char *path, int fd,
		    uint64_t offset, uint64_t size,
		    spoolfs_progress_fn progress, void *arg,
		    struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: put '%s' bytes %llu..%llu", c->dest->name, path,
		  (unsigned long long)offset, (unsigned long long)size);
	return sc_upload(c, path, fd, offset, size, -1, NULL, progress, arg,
			 err);
}

static int sftp_put_file(struct spoolfs_conn *conn, const char *path, int fd,
			 uint64_t offset, uint64_t size, int64_t mtime,
			 spoolfs_progress_fn progress, void *arg,
			 uint64_t *rsize, struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: put '%s' bytes %llu..%llu, then fstat%s and "
		  "close", c->dest->name, path, (unsigned long long)offset,
		  (unsigned long long)size, mtime >= 0 ? ", set mtime" : "");
	if (mtime > UINT32_MAX)
		return spoolfs_error_set(err, SPOOLFS_E_UNSUPPORTED,
			"cannot set mtime %lld on %s: sftp v3 times are "
			"32-bit", (long long)mtime, c->where);
	return sc_upload(c, path, fd, offset, size, mtime, rsize, progress,
			 arg, err);
}

/*
 * put_batch: all over the side channel (rchan_put_batch()), or none: an
 * item left at rc 1 goes through sftp_put_file(), which says what is
 * wrong with it (a lost connection, an mtime sftp cannot carry).
 */
static void sftp_put_batch(struct spoolfs_conn *conn,
			   struct spoolfs_put_item *items, size_t n)
{
	struct sftp_conn *c = conn->priv;
	int rc;

	if (c->dead || c->no_rchan_put)
		return;
	rc = rchan_once(c, now_ms() + (int64_t)stall_ms(c));
	if (rc < 0) {
		for (size_t i = 0; i < n; i++)
			items[i].rc = sc_fail(c, &items[i].err, rc, false,
					      "cannot create '%s' on %s",
					      items[i].path, c->where);
		return;
	}
	if (!c->rchan_up)
		return;
	log_debug("%s: sftp: put %zu small files at once", c->dest->name, n);
	rchan_put_batch(c, items, n);
}

static int sftp_get(struct spoolfs_conn *conn, const char *path, int fd,
		    spoolfs_progress_fn progress, void *arg,
		    struct spoolfs_error *err)
{
	struct sftp_conn *c = conn->priv;
	uint64_t done = 0, reported = 0;
	LIBSSH2_SFTP_HANDLE *h;
	int64_t deadline;
	char *rpath;
	int rc, ret = -1;

	if (sc_check_alive(c, err) < 0)
		return -1;
	log_debug("%s: sftp: get '%s'", c->dest->name, path);
	if (sc_buf(c, GET_CHUNK, err) < 0)
		return -1;
	rpath = sc_path(c, path);
	if (!rpath)
		return sc_oom(err);
	deadline = now_ms() + (int64_t)stall_ms(c);
	SC_RETRY_PTR(c, deadline, rc, h,
		     libssh2_sftp_open_ex(c->sftp, rpath,
					  (unsigned int)strlen(rpath),
					  LIBSSH2_FXF_READ, 0,
					  LIBSSH2_SFTP_OPENFILE));
	if (!h) {
		sc_fail(c, err, rc, false, "cannot open '%s' on %s", rpath,
			c->where);
		goto out;
	}
	deadline = now_ms() + (int64_t)stall_ms(c);
	for (;;) {
		ssize_t n = libssh2_sftp_read(h, (char *)c->buf, GET_CHUNK);
		size_t off = 0;

		if (n == LIBSSH2_ERROR_EAGAIN) {
			if (sc_wait(c, deadline) < 0) {
				sc_fail(c, err, SC_TIMEDOUT, true,
					"cannot read '%s' on %s at byte %llu",
					rpath, c->where,
					(unsigned long long)done);
				goto out_close;
			}
			continue;
		}
		if (n < 0) {
			sc_fail(c, err, (int)n, false,
				"cannot read '%s' on %s at byte %llu",
				rpath, c->where, (unsigned long long)done);
			goto out_close;
		}
		if (n == 0)
			break;
		while (off < (size_t)n) {
			ssize_t w = pwrite(fd, c->buf + off, (size_t)n - off,
					   (off_t)(done + off));

			if (w < 0 && errno == EINTR)
				continue;
			if (w < 0) {
				spoolfs_error_set(err,
					spoolfs_err_from_errno(errno),
					"download of '%s' from %s: cannot "
					"write the local copy: %s", rpath,
					c->where, strerror(errno));
				goto out_close;
			}
			off += (size_t)w;
		}
		done += (uint64_t)n;
		if (progress && done - reported >= PROGRESS_EVERY) {
			reported = done;
			if (progress(arg, done) != 0) {
				spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
					"download of '%s' from %s cancelled",
					rpath, c->where);
				goto out_close;
			}
		}
		deadline = now_ms() + (int64_t)stall_ms(c);
	}
	if (progress && done != reported && progress(arg, done) != 0) {
		spoolfs_error_set(err, SPOOLFS_E_CANCELLED,
				  "download of '%s' from %s cancelled", rpath,
				  c->where);
		goto out_close;
	}
	rc = sc_drop_handle(c, h);
	if (rc < 0 && rc != LIBSSH2_ERROR_SFTP_PROTOCOL) {
		sc_fail(c, err, rc, false, "download of '%s' from %s", rpath,
			c->where);
		goto out;
	}
	ret = 0;
	goto out;
out_close:
	(void)sc_drop_handle(c, h);
out:
	free(rpath);
	return ret;
}

const struct spoolfs_backend spoolfs_backend_sftp = {
	.scheme = "sftp",
	.default_port = 22,
	.caps = SPOOLFS_CAP_RESUME | SPOOLFS_CAP_MTIME | SPOOLFS_CAP_SPLIT,
	.connect = sftp_connect,
	.disconnect = sftp_disconnect,
	.mkdirs = sftp_mkdirs,
	.put = sftp_put,
	.put_file = sftp_put_file,
	.put_batch = sftp_put_batch,
	.rename_batch = sftp_rename_batch,
	.stat = sftp_stat,
	.rename = sftp_rename,
	.remove = sftp_remove,
	.rmdir = sftp_rmdir,
	.set_mtime = sftp_set_mtime,
	.get = sftp_get,
};
