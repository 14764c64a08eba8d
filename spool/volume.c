/*
 * volume.c - multi-volume archive names, see volume.h.
 *
 * Checks run from the most specific pattern to the least: "x.part1.rar"
 * must not be taken for an old-style "x.rar" set, and ".zNN" belongs to
 * split zips (old-style rar volumes stop at ".y99"; nobody writes 800).
 */
#include "volume.h"

#include <ctype.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

/* Volume numbers above this are not volume numbers. */
#define VOLUME_MAX 999999L

/* Parse exactly the digits in [s, s+n), at least MIN of them. */
static bool parse_digits(const char *s, size_t n, size_t min, long *out)
{
	long v = 0;
	size_t i;

	if (n < min)
		return false;
	for (i = 0; i < n; i++) {
		if (!isdigit((unsigned char)s[i]))
			return false;
		v = v * 10 + (s[i] - '0');
		if (v > VOLUME_MAX)
			return false;
	}
	*out = v;
	return true;
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
	size_t n = strlen(suffix);

	return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

/* SET = the first BASELEN bytes of NAME + SUFFIX. */
static bool make_set(char *set, size_t setlen, const char *name,
		     size_t baselen, const char *suffix)
{
	int n;

	if (!set || setlen == 0)
		return true;
	n = snprintf(set, setlen, "%.*s%s", (int)baselen, name, suffix);
	return n >= 0 && (size_t)n < setlen;
}

static bool found(const char *name, size_t baselen, const char *suffix,
		  long idx, char *set, size_t setlen, long *index)
{
	if (baselen == 0 || !make_set(set, setlen, name, baselen, suffix))
		return false;
	if (index)
		*index = idx;
	return true;
}

bool spoolfs_volume_parse(const char *name, char *set, size_t setlen,
			  long *index)
{
	size_t len = strlen(name), i, base;
	const char *dot, *ext;
	long n;
	int c;

	dot = strrchr(name, '.');
	if (!dot)
		return false;
	ext = dot + 1;
	base = (size_t)(dot - name);

	/* x.partN.rar */
	if (ends_with(name, len, ".rar")) {
		for (i = base; i > 0 && isdigit((unsigned char)name[i - 1]); i--)
			;
		if (i < base && i >= 5 &&
		    strncasecmp(name + i - 5, ".part", 5) == 0 &&
		    parse_digits(name + i, base - i, 1, &n))
			return found(name, i - 5, ".part.rar", n, set, setlen,
				     index);
		/* x.rar: the first volume of an old-style set */
		return found(name, base, ".rar", 0, set, setlen, index);
	}

	/* x.r00 ... x.y99 (old-style rar), x.z01 ... (split zip) */
	c = tolower((unsigned char)ext[0]);
	if (c >= 'r' && c <= 'y' && parse_digits(ext + 1, strlen(ext + 1), 2, &n) &&
	    strlen(ext + 1) == 2)
		return found(name, base, ".rar", (c - 'r') * 100 + n + 1, set,
			     setlen, index);
	if (c == 'z' && parse_digits(ext + 1, strlen(ext + 1), 2, &n) && n > 0)
		return found(name, base, ".zip", n, set, setlen, index);
	if (strcasecmp(ext, "zip") == 0)
		return found(name, base, ".zip", SPOOLFS_VOLUME_LAST, set,
			     setlen, index);

	/* NAME.NNN: 7z, HJSplit, split(1) -d with a suffix */
	if (parse_digits(ext, strlen(ext), 3, &n))
		return found(name, base, "", n, set, setlen, index);
	return false;
}
