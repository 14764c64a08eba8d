/*
 * ftp_ca.h - one certificate store per CA file, shared by every FTPS
 * connection of the process (see ftp_ca.c).
 */
#ifndef SPOOLFS_FTP_CA_H
#define SPOOLFS_FTP_CA_H

#include <curl/curl.h>
#include <stdbool.h>

/*
 * Make C verify the server against the store of CAFILE (NULL: curl's own
 * default CA file and directory) instead of curl loading the file again
 * for each connection.  Returns false when it cannot (curl's TLS library
 * is not OpenSSL, no default CA file, or the file does not load): then
 * nothing is set and the caller sets CURLOPT_CAINFO as usual, so that curl
 * reports the problem in its own words.
 */
#ifdef SPOOLFS_HAVE_FTP_CA
bool ftp_ca_attach(CURL *c, const char *cafile);

/* How many times a CA file was read since the start (for the tests). */
unsigned ftp_ca_loads(void);
#else
/* Built without libssl (meson.build): curl reads the CA file itself. */
static inline bool ftp_ca_attach(CURL *c, const char *cafile)
{
	(void)c;
	(void)cafile;
	return false;
}
#endif

#endif
