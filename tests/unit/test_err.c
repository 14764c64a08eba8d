/*
 * test_err.c - common/err.c: names, transient verdicts, errno mapping and
 * the message buffer.
 */
#include "../../common/err.h"
#include "../../common/log.h"

#include <errno.h>
#include <string.h>

#include "check.h"

static void test_names(void)
{
	for (int i = 0; i < SPOOLFS_E__COUNT; i++) {
		const char *name = spoolfs_err_name((enum spoolfs_err)i);

		CHECK(name && *name);
		CHECK(strcmp(name, "unknown") != 0);
		/* Stable names go into the journal: lowercase, no spaces. */
		for (const char *p = name; *p; p++)
			CHECK((*p >= 'a' && *p <= 'z') || *p == '_');
		for (int j = 0; j < i; j++)
			CHECK(strcmp(name,
				     spoolfs_err_name((enum spoolfs_err)j)) != 0);
	}
	CHECK_EQ_STR(spoolfs_err_name(SPOOLFS_OK), "ok");
	CHECK_EQ_STR(spoolfs_err_name(SPOOLFS_E_AUTH), "auth");
	CHECK_EQ_STR(spoolfs_err_name(SPOOLFS_E_NOROOT), "noroot");
	CHECK_EQ_STR(spoolfs_err_name(SPOOLFS_E__COUNT), "unknown");
	CHECK_EQ_STR(spoolfs_err_name((enum spoolfs_err)-1), "unknown");
}

static void test_transient(void)
{
	static const enum spoolfs_err transient[] = {
		SPOOLFS_E_CONNECT, SPOOLFS_E_TIMEOUT, SPOOLFS_E_RESET,
		SPOOLFS_E_STALL, SPOOLFS_E_BUSY, SPOOLFS_E_NOROOT,
		SPOOLFS_E_NOSPACE, SPOOLFS_E_PROTO, SPOOLFS_E_IO,
	};
	static const enum spoolfs_err permanent[] = {
		SPOOLFS_E_AUTH, SPOOLFS_E_HOSTKEY, SPOOLFS_E_TLS,
		SPOOLFS_E_PERM, SPOOLFS_E_QUOTA, SPOOLFS_E_NAME,
		SPOOLFS_E_NOTFOUND, SPOOLFS_E_CONFIG, SPOOLFS_E_UNSUPPORTED,
	};
	size_t nt = sizeof(transient) / sizeof(transient[0]);
	size_t np = sizeof(permanent) / sizeof(permanent[0]);

	for (size_t i = 0; i < nt; i++)
		CHECK(spoolfs_err_transient(transient[i]));
	for (size_t i = 0; i < np; i++)
		CHECK(!spoolfs_err_transient(permanent[i]));
	/* Every code is in exactly one of the lists, plus OK and CANCELLED. */
	CHECK_EQ_INT(nt + np + 2, SPOOLFS_E__COUNT);
	CHECK(!spoolfs_err_transient(SPOOLFS_OK));
	CHECK(!spoolfs_err_transient(SPOOLFS_E_CANCELLED));
	CHECK(!spoolfs_err_transient(SPOOLFS_E__COUNT));
	CHECK(!spoolfs_err_transient((enum spoolfs_err)-1));
}

static void test_from_errno(void)
{
	static const struct {
		int errnum;
		enum spoolfs_err code;
	} map[] = {
		{ 0, SPOOLFS_OK },
		{ EACCES, SPOOLFS_E_PERM },
		{ EPERM, SPOOLFS_E_PERM },
		{ EROFS, SPOOLFS_E_PERM },
		{ ENOSPC, SPOOLFS_E_NOSPACE },
		{ EDQUOT, SPOOLFS_E_QUOTA },
		{ ENAMETOOLONG, SPOOLFS_E_NAME },
		{ EILSEQ, SPOOLFS_E_NAME },
		{ ENOENT, SPOOLFS_E_NOTFOUND },
		{ ENOTDIR, SPOOLFS_E_NOTFOUND },
		{ ETIMEDOUT, SPOOLFS_E_TIMEOUT },
		{ ECONNREFUSED, SPOOLFS_E_CONNECT },
		{ EHOSTUNREACH, SPOOLFS_E_CONNECT },
		{ ENETUNREACH, SPOOLFS_E_CONNECT },
		{ ECONNRESET, SPOOLFS_E_RESET },
		{ EPIPE, SPOOLFS_E_RESET },
		{ ESTALE, SPOOLFS_E_RESET },
		{ ECANCELED, SPOOLFS_E_CANCELLED },
		{ EIO, SPOOLFS_E_IO },
		{ EBADMSG, SPOOLFS_E_IO },	/* anything else */
	};

	for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
		CHECK_EQ_INT(spoolfs_err_from_errno(map[i].errnum),
			     map[i].code);
}

static void test_to_errno(void)
{
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_OK), 0);
	for (int i = 1; i < SPOOLFS_E__COUNT; i++)
		CHECK(spoolfs_err_to_errno((enum spoolfs_err)i) < 0);
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_E_NOSPACE), -ENOSPC);
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_E_PERM), -EACCES);
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_E_QUOTA), -EDQUOT);
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_E_NOTFOUND), -ENOENT);
	CHECK_EQ_INT(spoolfs_err_to_errno(SPOOLFS_E__COUNT), -EIO);
	/* errno -> code -> errno keeps the meaning for the usual suspects. */
	CHECK_EQ_INT(spoolfs_err_to_errno(spoolfs_err_from_errno(ENOSPC)),
		     -ENOSPC);
	CHECK_EQ_INT(spoolfs_err_to_errno(spoolfs_err_from_errno(EACCES)),
		     -EACCES);
	CHECK_EQ_INT(spoolfs_err_to_errno(spoolfs_err_from_errno(ENOENT)),
		     -ENOENT);
	CHECK_EQ_INT(spoolfs_err_to_errno(spoolfs_err_from_errno(EDQUOT)),
		     -EDQUOT);
}

static void test_error_buffer(void)
{
	struct spoolfs_error err;
	char big[2 * SPOOLFS_ERRMSG_MAX];

	memset(&err, 0x55, sizeof(err));
	spoolfs_error_clear(&err);
	CHECK_EQ_INT(err.code, SPOOLFS_OK);
	CHECK_EQ_STR(err.msg, "");

	CHECK_EQ_INT(spoolfs_error_set(&err, SPOOLFS_E_NOSPACE,
				       "cannot write '%s': %s", "/srv/a.jpg",
				       "no space left on device"), -1);
	CHECK_EQ_INT(err.code, SPOOLFS_E_NOSPACE);
	CHECK_EQ_STR(err.msg,
		     "cannot write '/srv/a.jpg': no space left on device");

	/* Too long: cut in the middle, so the reason at the end stays. */
	memset(big, 'p', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	CHECK_EQ_INT(spoolfs_error_set(&err, SPOOLFS_E_IO,
				       "cannot write '%s': file name too long",
				       big), -1);
	CHECK_EQ_INT(strlen(err.msg), SPOOLFS_ERRMSG_MAX - 1);
	CHECK(strncmp(err.msg, "cannot write 'ppp", 17) == 0);
	CHECK(strstr(err.msg, "pp...pp") != NULL);
	CHECK(strcmp(err.msg + strlen(err.msg) - 22,
		     "': file name too long") == 0 ||
	      strcmp(err.msg + strlen(err.msg) - 21,
		     "': file name too long") == 0);

	/* A NULL err is allowed and still says -1. */
	CHECK_EQ_INT(spoolfs_error_set(NULL, SPOOLFS_E_IO, "ignored"), -1);
	spoolfs_error_clear(NULL);

	spoolfs_error_clear(&err);
	CHECK_EQ_INT(err.code, SPOOLFS_OK);
	CHECK_EQ_STR(err.msg, "");
}

static void test_fit(void)
{
	char out[16];

	CHECK_EQ_STR(spoolfs_fit(out, sizeof(out), "short"), "short");
	CHECK_EQ_STR(spoolfs_fit(out, sizeof(out), "fifteen chars.."),
		     "fifteen chars..");
	/* 16 bytes: 4 of the start, "...", 8 of the end */
	CHECK_EQ_STR(spoolfs_fit(out, sizeof(out), "0123456789abcdefghij"),
		     "0123...cdefghij");
	/* never half a character: "é" is 2 bytes, "€" 3 */
	CHECK_EQ_STR(spoolfs_fit(out, sizeof(out), "abcé€€€€€€€xyz"),
		     "abc...€xyz");
	CHECK(strlen(spoolfs_fit(out, sizeof(out), "ééééééééééééééé")) < 16);
}

/* A file name must not be able to forge a log line or error message. */
static void test_escape_ctl(void)
{
	char out[64];

	CHECK_EQ_STR(spoolfs_escape_ctl(out, sizeof(out), "a b/ü#%.jpg"),
		     "a b/ü#%.jpg");
	CHECK_EQ_STR(spoolfs_escape_ctl(out, sizeof(out), "y\nDELE x\r\t\x7f"),
		     "y\\x0aDELE x\\x0d\\x09\\x7f");
	/* cut at the buffer's end, never in the middle of an escape */
	CHECK_EQ_STR(spoolfs_escape_ctl(out, 8, "abcd\nef"), "abcd");
	CHECK_EQ_STR(spoolfs_escape_ctl(out, 9, "abcd\nef"), "abcd\\x0a");
	CHECK_EQ_STR(spoolfs_escape_ctl(out, 1, "abc"), "");
}

int main(void)
{
	test_names();
	test_transient();
	test_from_errno();
	test_to_errno();
	test_error_buffer();
	test_fit();
	test_escape_ctl();
	return check_done();
}
