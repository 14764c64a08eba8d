/*
 * ftp_ca.c - one certificate store per CA file, shared by every FTPS
 * connection of the process.
 *
 * libcurl 7.88 builds a new TLS context for every connection, and an FTP
 * upload is two of them: the control connection, kept, and one data
 * connection per file.  Each context read and parsed the CA file again:
 * measured with 2000 files of 4 KiB to vsftpd, 2000 opens of the file and
 * about 0.35 ms of CPU per file for a one-certificate tls_ca (curl 7.88's
 * own store cache did not take effect for these connections); the system
 * bundle a CA-signed server is checked against holds over a hundred.
 *
 * Here each CA file (or curl's default file and directory) is read once
 * into an X509_STORE; every connection's context gets that store through
 * CURLOPT_SSL_CTX_FUNCTION, and curl is told to load nothing itself.  The
 * file is stat()ed at each connection and read again when it changed, so
 * a renewed certificate is seen as soon as it would have been before.
 * The store is set up as curl sets up its own: the file, curl's default
 * CA directory when the file is curl's default, and X509_V_FLAG_PARTIAL_CHAIN
 * (curl's default since 7.68: a certificate in the file is trusted as
 * given, even if not self-signed).
 *
 * Only with OpenSSL, the library Debian's libcurl uses; elsewhere (and
 * when the file does not load) ftp_ca_attach() declines and curl loads the
 * file as before, with its own error messages.
 *
 * Threads: the list of stores is guarded by one mutex; OpenSSL's stores are
 * reference counted and may be shared by contexts in several threads.
 */
#include "ftp_ca.h"

#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "../common/log.h"

struct ca_store {
	char *file;
	char *dir;		/* NULL unless curl's default directory */
	struct stat st;		/* of FILE when STORE was read */
	X509_STORE *store;
	struct ca_store *next;
};

static pthread_mutex_t ca_lock = PTHREAD_MUTEX_INITIALIZER;
static struct ca_store *ca_list;
static unsigned ca_nloads;

static bool same_file(const struct stat *a, const struct stat *b)
{
	return a->st_dev == b->st_dev && a->st_ino == b->st_ino &&
	       a->st_size == b->st_size &&
	       a->st_mtim.tv_sec == b->st_mtim.tv_sec &&
	       a->st_mtim.tv_nsec == b->st_mtim.tv_nsec &&
	       a->st_ctim.tv_sec == b->st_ctim.tv_sec &&
	       a->st_ctim.tv_nsec == b->st_ctim.tv_nsec;
}

static X509_STORE *store_load(const char *file, const char *dir)
{
	X509_STORE *s = X509_STORE_new();

	if (!s)
		return NULL;
	if (!X509_STORE_load_file(s, file) ||
	    (dir && !X509_STORE_load_path(s, dir))) {
		X509_STORE_free(s);
		return NULL;
	}
	X509_STORE_set_flags(s, X509_V_FLAG_PARTIAL_CHAIN);
	ca_nloads++;
	return s;
}

/*
 * The current store of E, read again if its file changed; a new
 * reference, or NULL when the file no longer loads.  Under ca_lock.
 */
static X509_STORE *store_get_locked(struct ca_store *e)
{
	struct stat st;

	if (stat(e->file, &st) < 0)
		return NULL;
	if (!same_file(&st, &e->st)) {
		X509_STORE *s = store_load(e->file, e->dir);

		if (!s)
			return NULL;
		log_debug("ftps: CA file '%s' changed; read again", e->file);
		X509_STORE_free(e->store);
		e->store = s;
		e->st = st;
	}
	return X509_STORE_up_ref(e->store) ? e->store : NULL;
}

static CURLcode ssl_ctx_cb(CURL *c, void *sslctx, void *arg)
{
	struct ca_store *e = arg;
	X509_STORE *s;

	(void)c;
	pthread_mutex_lock(&ca_lock);
	s = store_get_locked(e);
	pthread_mutex_unlock(&ca_lock);
	if (!s)
		return CURLE_SSL_CACERT_BADFILE;
	SSL_CTX_set1_cert_store(sslctx, s);
	X509_STORE_free(s);	/* the context holds its own reference */
	return CURLE_OK;
}

static bool same_str(const char *a, const char *b)
{
	return a == b || (a && b && strcmp(a, b) == 0);
}

/* The entry for FILE and DIR, made and read the first time. */
static struct ca_store *store_find(const char *file, const char *dir)
{
	struct ca_store *e;

	pthread_mutex_lock(&ca_lock);
	for (e = ca_list; e; e = e->next)
		if (same_str(e->file, file) && same_str(e->dir, dir))
			break;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (e && (!(e->file = strdup(file)) ||
			  (dir && !(e->dir = strdup(dir))) ||
			  stat(file, &e->st) < 0 ||
			  !(e->store = store_load(file, dir)))) {
			free(e->file);
			free(e->dir);
			free(e);
			e = NULL;
		} else if (e) {
			e->next = ca_list;
			ca_list = e;
		}
	}
	pthread_mutex_unlock(&ca_lock);
	return e;
}

static pthread_once_t ca_once = PTHREAD_ONCE_INIT;
static bool ca_openssl;		/* curl's TLS library is OpenSSL */

static void ca_init(void)
{
	const char *v = curl_version_info(CURLVERSION_NOW)->ssl_version;

	ca_openssl = v && strncmp(v, "OpenSSL/", 8) == 0;
}

bool ftp_ca_attach(CURL *c, const char *cafile)
{
	const char *file = cafile, *dir = NULL;
	struct ca_store *e;

	pthread_once(&ca_once, ca_init);
	if (!ca_openssl)
		return false;
	if (!file) {
		/* curl's built-in defaults (CURLINFO_CAINFO: curl 7.84) */
		if (curl_easy_getinfo(c, CURLINFO_CAINFO, &file) != CURLE_OK ||
		    !file)
			return false;
		if (curl_easy_getinfo(c, CURLINFO_CAPATH, &dir) != CURLE_OK)
			dir = NULL;
	}
	e = store_find(file, dir);
	if (!e)
		return false;
	if (curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, ssl_ctx_cb) !=
		    CURLE_OK ||
	    curl_easy_setopt(c, CURLOPT_SSL_CTX_DATA, e) != CURLE_OK) {
		curl_easy_setopt(c, CURLOPT_SSL_CTX_FUNCTION, NULL);
		return false;
	}
	curl_easy_setopt(c, CURLOPT_CAINFO, NULL);
	curl_easy_setopt(c, CURLOPT_CAPATH, NULL);
	return true;
}

unsigned ftp_ca_loads(void)
{
	unsigned n;

	pthread_mutex_lock(&ca_lock);
	n = ca_nloads;
	pthread_mutex_unlock(&ca_lock);
	return n;
}
