/*
 * check.h - the few assertion macros the C unit tests share.
 *
 * CHECK(cond) records a failure (file:line and the expression) and goes on;
 * CHECK_EQ_INT/CHECK_EQ_STR also print both values.  check_done() prints
 * "N passed, N failed" and returns the exit status.
 */
#ifndef SPOOLFS_CHECK_H
#define SPOOLFS_CHECK_H

#include <stdio.h>
#include <string.h>

extern int check_passed, check_failed;

#define CHECK(cond)                                                        \
	do {                                                               \
		if (cond) {                                                \
			check_passed++;                                    \
		} else {                                                   \
			check_failed++;                                    \
			fprintf(stderr, "%s:%d: check failed: %s\n",       \
				__FILE__, __LINE__, #cond);                \
		}                                                          \
	} while (0)

#define CHECK_EQ_INT(a, b)                                                 \
	do {                                                               \
		long long a_ = (long long)(a), b_ = (long long)(b);        \
		if (a_ == b_) {                                            \
			check_passed++;                                    \
		} else {                                                   \
			check_failed++;                                    \
			fprintf(stderr, "%s:%d: %s == %lld, expected %s == %lld\n", \
				__FILE__, __LINE__, #a, a_, #b, b_);       \
		}                                                          \
	} while (0)

#define CHECK_EQ_STR(a, b)                                                 \
	do {                                                               \
		const char *a_ = (a), *b_ = (b);                           \
		if (a_ && b_ && strcmp(a_, b_) == 0) {                     \
			check_passed++;                                    \
		} else {                                                   \
			check_failed++;                                    \
			fprintf(stderr, "%s:%d: %s is \"%s\", expected \"%s\"\n", \
				__FILE__, __LINE__, #a, a_ ? a_ : "(null)", \
				b_ ? b_ : "(null)");                       \
		}                                                          \
	} while (0)

/* Print the summary line; returns 0 if nothing failed, 1 otherwise. */
int check_done(void);

#endif
