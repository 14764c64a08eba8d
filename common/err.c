/*
 * err.c - names, verdicts and errno mapping for enum spoolfs_err.
 */
#include "err.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const struct {
	const char *name;
	bool transient;
	int errnum;
} err_table[SPOOLFS_E__COUNT] = {
	[SPOOLFS_OK] = { "ok", false, 0 },
	[SPOOLFS_E_CONNECT] = { "connect", true, EHOSTUNREACH },
	[SPOOLFS_E_TIMEOUT] = { "timeout", true, ETIMEDOUT },
	[SPOOLFS_E_RESET] = { "reset", true, ECONNRESET },
	[SPOOLFS_E_STALL] = { "stall", true, ETIMEDOUT },
	[SPOOLFS_E_BUSY] = { "busy", true, EAGAIN },
	[SPOOLFS_E_NOROOT] = { "noroot", true, ENOENT },
	[SPOOLFS_E_NOSPACE] = { "nospace", true, ENOSPC },
	[SPOOLFS_E_PROTO] = { "protocol", true, EPROTO },
	[SPOOLFS_E_IO] = { "io", true, EIO },
	[SPOOLFS_E_AUTH] = { "auth", false, EACCES },
	[SPOOLFS_E_HOSTKEY] = { "hostkey", false, EACCES },
	[SPOOLFS_E_TLS] = { "tls", false, EACCES },
	[SPOOLFS_E_PERM] = { "permission", false, EACCES },
	[SPOOLFS_E_QUOTA] = { "quota", false, EDQUOT },
	[SPOOLFS_E_NAME] = { "name", false, EINVAL },
	[SPOOLFS_E_NOTFOUND] = { "notfound", false, ENOENT },
	[SPOOLFS_E_CONFIG] = { "config", false, EINVAL },
	[SPOOLFS_E_UNSUPPORTED] = { "unsupported", false, ENOTSUP },
	[SPOOLFS_E_CANCELLED] = { "cancelled", false, ECANCELED },
};

/* Back from P (inside S) to the start of a UTF-8 character. */
static const char *char_start(const char *s, const char *p)
{
	while (p > s && ((unsigned char)*p & 0xc0) == 0x80)
		p--;
	return p;
}

char *spoolfs_fit(char *dst, size_t cap, const char *src)
{
	static const char dots[] = "...";
	size_t len = strlen(src), head, tail;
	const char *h, *t;

	if (len < cap) {
		memcpy(dst, src, len + 1);
		return dst;
	}
	/* a third of the room for the start, the rest for the end */
	head = (cap - sizeof(dots)) / 3;
	tail = cap - sizeof(dots) - head;
	h = char_start(src, src + head);
	t = char_start(src, src + len - tail);
	if (t < src + len - tail)	/* went back: skip that character */
		for (t++; ((unsigned char)*t & 0xc0) == 0x80; t++)
			;
	memcpy(dst, src, (size_t)(h - src));
	memcpy(dst + (h - src), dots, sizeof(dots) - 1);
	memcpy(dst + (h - src) + sizeof(dots) - 1, t, strlen(t) + 1);
	return dst;
}

int spoolfs_error_set(struct spoolfs_error *err, enum spoolfs_err code,
		      const char *fmt, ...)
{
	char buf[8192];
	va_list ap;

	if (!err)
		return -1;
	err->code = code;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	spoolfs_fit(err->msg, sizeof(err->msg), buf);
	return -1;
}

void spoolfs_error_clear(struct spoolfs_error *err)
{
	if (!err)
		return;
	err->code = SPOOLFS_OK;
	err->msg[0] = '\0';
}

static bool code_valid(enum spoolfs_err code)
{
	return (int)code >= 0 && code < SPOOLFS_E__COUNT;
}

bool spoolfs_err_transient(enum spoolfs_err code)
{
	return code_valid(code) && err_table[code].transient;
}

const char *spoolfs_err_name(enum spoolfs_err code)
{
	return code_valid(code) ? err_table[code].name : "unknown";
}

int spoolfs_err_to_errno(enum spoolfs_err code)
{
	return code_valid(code) ? -err_table[code].errnum : -EIO;
}

enum spoolfs_err spoolfs_err_from_errno(int errnum)
{
	switch (errnum) {
	case 0:
		return SPOOLFS_OK;
	case EACCES:
	case EPERM:
	case EROFS:
		return SPOOLFS_E_PERM;
	case ENOSPC:
		return SPOOLFS_E_NOSPACE;
	case EDQUOT:
		return SPOOLFS_E_QUOTA;
	case ENAMETOOLONG:
	case EILSEQ:
	case EINVAL:
		return SPOOLFS_E_NAME;
	case ENOENT:
	case ENOTDIR:
		return SPOOLFS_E_NOTFOUND;
	case ETIMEDOUT:
		return SPOOLFS_E_TIMEOUT;
	case ECONNREFUSED:
	case EHOSTUNREACH:
	case ENETUNREACH:
		return SPOOLFS_E_CONNECT;
	case ECONNRESET:
	case EPIPE:
	case ENOTCONN:
	case ESTALE:
		return SPOOLFS_E_RESET;
	case ECANCELED:
		return SPOOLFS_E_CANCELLED;
	default:
		return SPOOLFS_E_IO;
	}
}
