/*
 * ssh_ctr.c - AES-CTR for libssh2 1.10 in 16 KiB strides.
 *
 * libssh2 1.10 (Debian 12's) encrypts and decrypts every SSH packet one
 * 16-byte block per call of EVP_Cipher() (its transport.c), and OpenSSL 3
 * pays for every call: the provider's dispatch, CRYPTO_ctr128_encrypt_ctr32
 * for one block, and a one-block AES whose rounds cannot overlap with the
 * next block's.  Measured on a 1 GiB upload: 22% of the daemon's CPU,
 * and 13% of the time to the server (benchmarks/RESULTS.md, SFTP notes).
 *
 * ssh_ctr_install() points libssh2's own references to EVP_CipherInit,
 * EVP_Cipher and EVP_CIPHER_CTX_free -- its GOT entries, so the calls it
 * makes and nobody else's -- at the functions below.  A context set up in
 * CTR mode gets a twin with the same key and counter, which makes the
 * keystream KS_BYTES at a time (one EVP_Cipher() over zeros: OpenSSL's
 * many-block AES path); EVP_Cipher() then XORs the data with it.  CTR is a
 * stream cipher, so the bytes are exactly what libssh2 would have made
 * (tests/unit/test_ssh_ctr.c checks that against OpenSSL for every
 * chunking).  Every other context (CBC; anything libssh2 did not set up
 * through EVP_CipherInit) passes straight through, and the keystream is
 * wiped when its context goes.  A context's twin hangs off its app_data,
 * which libssh2 does not use.
 *
 * Where libssh2 is not the ELF shared object this expects (no such
 * references: another version, a static link, another platform), nothing
 * is patched and libssh2 runs as it is; so it does with SPOOLFS_SSH_CTR=0
 * in the environment.  Call it once, before the first libssh2 session.
 */
#include "ssh_ctr.h"

#include <elf.h>
#include <link.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define KS_BYTES 16384
#define TWIN_MAGIC 0x7373685f63747231ULL	/* "ssh_ctr1" */

struct twin {
	uint64_t magic;
	EVP_CIPHER_CTX *ks_ctx;		/* same key and counter: the keystream */
	size_t used;			/* bytes of ks already used */
	unsigned char ks[KS_BYTES];
};

typedef int (*init_fn)(EVP_CIPHER_CTX *, const EVP_CIPHER *,
		       const unsigned char *, const unsigned char *, int);
typedef int (*cipher_fn)(EVP_CIPHER_CTX *, unsigned char *,
			 const unsigned char *, unsigned int);
typedef void (*free_fn)(EVP_CIPHER_CTX *);

/* OpenSSL's own: this file is linked against libcrypto and defines none
 * of these names, so these are libcrypto's whatever libssh2's GOT holds */
static const init_fn real_init = EVP_CipherInit;
static const cipher_fn real_cipher = EVP_Cipher;
static const free_fn real_free = EVP_CIPHER_CTX_free;

static const unsigned char zeros[KS_BYTES];

static struct twin *twin_of(EVP_CIPHER_CTX *ctx)
{
	struct twin *t = EVP_CIPHER_CTX_get_app_data(ctx);

	return t && t->magic == TWIN_MAGIC ? t : NULL;
}

static void twin_free(EVP_CIPHER_CTX *ctx, struct twin *t)
{
	EVP_CIPHER_CTX_set_app_data(ctx, NULL);
	real_free(t->ks_ctx);
	OPENSSL_cleanse(t, sizeof(*t));
	free(t);
}

int ssh_ctr_init(EVP_CIPHER_CTX *ctx, const EVP_CIPHER *type,
		 const unsigned char *key, const unsigned char *iv, int enc)
{
	struct twin *t = twin_of(ctx);
	int rc;

	if (t)
		twin_free(ctx, t);
	rc = real_init(ctx, type, key, iv, enc);
	if (rc != 1 || !type || !key || !iv ||
	    EVP_CIPHER_get_mode(type) != EVP_CIPH_CTR_MODE ||
	    EVP_CIPHER_CTX_get_app_data(ctx))
		return rc;
	t = malloc(sizeof(*t));
	if (!t)
		return rc;	/* it works without */
	t->magic = TWIN_MAGIC;
	t->used = KS_BYTES;
	t->ks_ctx = EVP_CIPHER_CTX_new();
	if (!t->ks_ctx || real_init(t->ks_ctx, type, key, iv, 1) != 1) {
		real_free(t->ks_ctx);
		free(t);
		return rc;
	}
	EVP_CIPHER_CTX_set_app_data(ctx, t);
	return rc;
}

int ssh_ctr_cipher(EVP_CIPHER_CTX *ctx, unsigned char *out,
		   const unsigned char *in, unsigned int len)
{
	struct twin *t = twin_of(ctx);
	unsigned int left = len;

	if (!t)
		return real_cipher(ctx, out, in, len);
	while (left > 0) {
		const unsigned char *ks;
		size_t n, i = 0;

		if (t->used == KS_BYTES) {
			if (real_cipher(t->ks_ctx, t->ks, zeros, KS_BYTES) < 0)
				return -1;
			t->used = 0;
		}
		n = KS_BYTES - t->used < left ? KS_BYTES - t->used : left;
		ks = t->ks + t->used;
		for (; i + 8 <= n; i += 8) {
			uint64_t a, b;

			memcpy(&a, in + i, 8);
			memcpy(&b, ks + i, 8);
			a ^= b;
			memcpy(out + i, &a, 8);
		}
		for (; i < n; i++)
			out[i] = in[i] ^ ks[i];
		t->used += n;
		in += n;
		out += n;
		left -= (unsigned int)n;
	}
	return (int)len;
}

void ssh_ctr_free(EVP_CIPHER_CTX *ctx)
{
	struct twin *t;

	if (!ctx)
		return;
	t = twin_of(ctx);
	if (t)
		twin_free(ctx, t);
	real_free(ctx);
}

/* ------------------------------------------------ libssh2's GOT entries */

#if defined(__x86_64__)
#define JUMP_SLOT R_X86_64_JUMP_SLOT
#define GLOB_DAT R_X86_64_GLOB_DAT
#elif defined(__aarch64__)
#define JUMP_SLOT R_AARCH64_JUMP_SLOT
#define GLOB_DAT R_AARCH64_GLOB_DAT
#endif

#if defined(JUMP_SLOT) && defined(__LP64__)
struct lib {
	ElfW(Addr) base;
	const ElfW(Dyn) *dyn;
	ElfW(Addr) relro, relro_end;
	bool found;
};

static int find_libssh2(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct lib *l = arg;
	const char *slash = strrchr(info->dlpi_name, '/');
	const char *name = slash ? slash + 1 : info->dlpi_name;

	(void)size;
	if (strncmp(name, "libssh2.so", 10) != 0)
		return 0;
	l->base = info->dlpi_addr;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];

		if (ph->p_type == PT_DYNAMIC)
			l->dyn = (const ElfW(Dyn) *)(l->base + ph->p_vaddr);
		else if (ph->p_type == PT_GNU_RELRO) {
			l->relro = l->base + ph->p_vaddr;
			l->relro_end = l->relro + ph->p_memsz;
		}
	}
	l->found = l->dyn != NULL;
	return 1;
}

/* A d_ptr of the dynamic section: glibc has made most of them absolute. */
static ElfW(Addr) dyn_ptr(const struct lib *l, ElfW(Addr) p)
{
	return p < l->base ? l->base + p : p;
}

static bool set_slot(const struct lib *l, void **slot, void *fn)
{
	long pg = sysconf(_SC_PAGESIZE);
	uintptr_t page = (uintptr_t)slot & ~(uintptr_t)(pg - 1);
	bool ro = (ElfW(Addr))slot >= l->relro &&
		  (ElfW(Addr))slot < l->relro_end;

	if (ro && mprotect((void *)page, (size_t)pg, PROT_READ | PROT_WRITE))
		return false;
	__atomic_store_n(slot, fn, __ATOMIC_RELEASE);
	if (ro)
		mprotect((void *)page, (size_t)pg, PROT_READ);
	return true;
}

enum { H_INIT, H_CIPHER, H_FREE, NHOOKS };	/* patched FREE first */

static const struct {
	const char *name;
	void *fn;
} hooks[NHOOKS] = {
	[H_INIT] = { "EVP_CipherInit", (void *)ssh_ctr_init },
	[H_CIPHER] = { "EVP_Cipher", (void *)ssh_ctr_cipher },
	[H_FREE] = { "EVP_CIPHER_CTX_free", (void *)ssh_ctr_free },
};

#define MAX_SLOTS 8

struct slots {
	void **at[MAX_SLOTS];
	int hook[MAX_SLOTS];
	int n;
	int per_hook[NHOOKS];
};

/* The GOT slots of RELS (COUNT relocations) that hold one of our names. */
static void find_slots(const struct lib *l, const ElfW(Rela) *rels,
		       size_t count, const ElfW(Sym) *syms, const char *strs,
		       struct slots *sl)
{
	for (size_t i = 0; i < count; i++) {
		unsigned long type = ELF64_R_TYPE(rels[i].r_info);
		const char *name;

		if (type != JUMP_SLOT && type != GLOB_DAT)
			continue;
		name = strs + syms[ELF64_R_SYM(rels[i].r_info)].st_name;
		for (int h = 0; h < NHOOKS; h++) {
			if (strcmp(name, hooks[h].name) != 0 ||
			    sl->n == MAX_SLOTS)
				continue;
			sl->at[sl->n] = (void **)(l->base + rels[i].r_offset);
			sl->hook[sl->n++] = h;
			sl->per_hook[h]++;
		}
	}
}

int ssh_ctr_install(void)
{
	const ElfW(Rela) *jmprel = NULL, *rela = NULL;
	const ElfW(Sym) *syms = NULL;
	const char *strs = NULL;
	size_t jmpsz = 0, relasz = 0;
	struct lib l = { 0 };
	struct slots sl = { 0 };
	const char *env = getenv("SPOOLFS_SSH_CTR");

	if (env && strcmp(env, "0") == 0)
		return 0;
	dl_iterate_phdr(find_libssh2, &l);
	if (!l.found)
		return 0;
	for (const ElfW(Dyn) *d = l.dyn; d->d_tag != DT_NULL; d++) {
		switch (d->d_tag) {
		case DT_JMPREL:
			jmprel = (const ElfW(Rela) *)dyn_ptr(&l, d->d_un.d_ptr);
			break;
		case DT_PLTRELSZ:
			jmpsz = d->d_un.d_val;
			break;
		case DT_PLTREL:
			if (d->d_un.d_val != DT_RELA)
				return 0;	/* REL: not on these */
			break;
		case DT_RELA:
			rela = (const ElfW(Rela) *)dyn_ptr(&l, d->d_un.d_ptr);
			break;
		case DT_RELASZ:
			relasz = d->d_un.d_val;
			break;
		case DT_SYMTAB:
			syms = (const ElfW(Sym) *)dyn_ptr(&l, d->d_un.d_ptr);
			break;
		case DT_STRTAB:
			strs = (const char *)dyn_ptr(&l, d->d_un.d_ptr);
			break;
		}
	}
	if (!syms || !strs)
		return 0;
	if (jmprel)
		find_slots(&l, jmprel, jmpsz / sizeof(*jmprel), syms, strs, &sl);
	if (rela)
		find_slots(&l, rela, relasz / sizeof(*rela), syms, strs, &sl);
	/* all three or none: a twin made but never freed, or a context
	 * freed with its twin, must not happen */
	for (int h = 0; h < NHOOKS; h++)
		if (sl.per_hook[h] == 0)
			return 0;
	/* init last: until it is redirected no twin is made, so a failure
	 * on the way leaves every context as OpenSSL's own */
	for (int h = NHOOKS - 1; h >= 0; h--)
		for (int i = 0; i < sl.n; i++)
			if (sl.hook[i] == h &&
			    !set_slot(&l, sl.at[i], hooks[h].fn))
				return -1;
	return sl.n;
}
#else
int ssh_ctr_install(void)
{
	return 0;
}
#endif
