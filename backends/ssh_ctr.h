/*
 * ssh_ctr.h - AES-CTR for libssh2 1.10 in 16 KiB strides (see ssh_ctr.c).
 */
#ifndef SPOOLFS_SSH_CTR_H
#define SPOOLFS_SSH_CTR_H

#include <openssl/evp.h>

/*
 * Point libssh2's calls of EVP_CipherInit, EVP_Cipher and
 * EVP_CIPHER_CTX_free at the three below.  Once, before the first session.
 * Returns how many references were redirected: 0 when nothing was (not
 * found, or SPOOLFS_SSH_CTR=0), -1 when one could not be written (the
 * ones before it were).
 */
int ssh_ctr_install(void);

/* What libssh2 then calls; any other context passes through to OpenSSL. */
int ssh_ctr_init(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type,
		 const unsigned char *key, const unsigned char *iv, int enc);
int ssh_ctr_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out,
		   const unsigned char *in, unsigned int len);
void ssh_ctr_free(EVP_CIPHER_CTX *ctx);

#endif
