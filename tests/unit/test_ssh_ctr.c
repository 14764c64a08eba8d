/*
 * test_ssh_ctr.c - backends/ssh_ctr.c makes exactly OpenSSL's bytes: for
 * AES-128/192/256-CTR, in both directions, the data handed over in the
 * 16-byte blocks libssh2 1.10 uses and in odd chunks across the keystream's
 * 16 KiB strides; other ciphers and contexts pass through; a context set
 * up again starts over.  And ssh_ctr_install() finds libssh2's three
 * references (this binary links libssh2) unless SPOOLFS_SSH_CTR=0.
 */
#include <libssh2.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../backends/ssh_ctr.h"
#include "check.h"

#define LEN (200 * 1024 + 7)

/* OpenSSL's own CTR over IN, in one call */
static void reference(const EVP_CIPHER *type, const unsigned char *key,
		      const unsigned char *iv, const unsigned char *in,
		      unsigned char *out, size_t len)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();

	CHECK(EVP_CipherInit(c, type, key, iv, 1) == 1);
	CHECK(EVP_Cipher(c, out, in, (unsigned int)len) == (int)len);
	EVP_CIPHER_CTX_free(c);
}

/* ssh_ctr over IN in chunks of STEP bytes (0: random 1..40000) */
static void chunked(const EVP_CIPHER *type, const unsigned char *key,
		    const unsigned char *iv, int enc, const unsigned char *in,
		    unsigned char *out, size_t len, size_t step)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	size_t off = 0;

	CHECK(ssh_ctr_init(c, type, key, iv, enc) == 1);
	CHECK(EVP_CIPHER_CTX_get_app_data(c) != NULL);	/* it has a twin */
	while (off < len) {
		size_t n = step ? step : 1 + (size_t)rand() % 40000;

		if (n > len - off)
			n = len - off;
		CHECK_EQ_INT(ssh_ctr_cipher(c, out + off, in + off,
					    (unsigned int)n), (int)n);
		off += n;
	}
	ssh_ctr_free(c);
}

static void test_same_bytes_as_openssl(void)
{
	const EVP_CIPHER *types[] = { EVP_aes_128_ctr(), EVP_aes_192_ctr(),
				      EVP_aes_256_ctr() };
	const size_t steps[] = { 16, 1, 4096, 16384, 0 };
	unsigned char key[32], iv[16], *in = malloc(LEN), *want = malloc(LEN),
		      *got = malloc(LEN);

	CHECK(in && want && got);
	CHECK(RAND_bytes(in, LEN) == 1);
	for (size_t t = 0; t < sizeof(types) / sizeof(types[0]); t++) {
		CHECK(RAND_bytes(key, sizeof(key)) == 1);
		CHECK(RAND_bytes(iv, sizeof(iv)) == 1);
		iv[15] = 0xf0;	/* the counter carries over its low bytes */
		reference(types[t], key, iv, in, want, LEN);
		for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
			for (int enc = 0; enc <= 1; enc++) {
				memset(got, 0, LEN);
				chunked(types[t], key, iv, enc, in, got, LEN,
					steps[s]);
				CHECK(memcmp(got, want, LEN) == 0);
			}
		}
		/* in place, as libssh2 decrypts */
		memcpy(got, in, LEN);
		chunked(types[t], key, iv, 0, got, got, LEN, 16);
		CHECK(memcmp(got, want, LEN) == 0);
	}
	free(in);
	free(want);
	free(got);
}

static void test_others_pass_through(void)
{
	unsigned char key[16] = { 1 }, iv[16] = { 2 }, in[64], a[64], b[64];
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new(), *r = EVP_CIPHER_CTX_new();

	memset(in, 0x5a, sizeof(in));
	/* CBC: no twin, OpenSSL's result */
	CHECK(ssh_ctr_init(c, EVP_aes_128_cbc(), key, iv, 1) == 1);
	CHECK(EVP_CIPHER_CTX_get_app_data(c) == NULL);
	CHECK(EVP_CipherInit(r, EVP_aes_128_cbc(), key, iv, 1) == 1);
	CHECK_EQ_INT(ssh_ctr_cipher(c, a, in, 64), EVP_Cipher(r, b, in, 64));
	CHECK(memcmp(a, b, sizeof(a)) == 0);
	/* a CTR context set up elsewhere: OpenSSL's result */
	CHECK(EVP_CipherInit(c, EVP_aes_128_ctr(), key, iv, 1) == 1);
	CHECK(EVP_CipherInit(r, EVP_aes_128_ctr(), key, iv, 1) == 1);
	CHECK_EQ_INT(ssh_ctr_cipher(c, a, in, 16), 16);
	CHECK_EQ_INT(EVP_Cipher(r, b, in, 16), 16);
	CHECK(memcmp(a, b, 16) == 0);
	/* set up again (a rekey reusing the context): starts over */
	CHECK(ssh_ctr_init(c, EVP_aes_128_ctr(), key, iv, 1) == 1);
	CHECK_EQ_INT(ssh_ctr_cipher(c, a, in, 16), 16);
	CHECK(ssh_ctr_init(c, EVP_aes_128_ctr(), key, iv, 1) == 1);
	CHECK_EQ_INT(ssh_ctr_cipher(c, b, in, 16), 16);
	CHECK(memcmp(a, b, 16) == 0);
	ssh_ctr_free(c);
	ssh_ctr_free(NULL);
	EVP_CIPHER_CTX_free(r);
}

static void test_install(void)
{
	/* a reference, so that the linker keeps libssh2 */
	CHECK(libssh2_version(0) != NULL);
	setenv("SPOOLFS_SSH_CTR", "0", 1);
	CHECK_EQ_INT(ssh_ctr_install(), 0);
	unsetenv("SPOOLFS_SSH_CTR");
	/* libssh2 1.10 refers to each of the three once */
	CHECK_EQ_INT(ssh_ctr_install(), 3);
}

int main(void)
{
	srand(7);
	test_same_bytes_as_openssl();
	test_others_pass_through();
	test_install();
	return check_done();
}
