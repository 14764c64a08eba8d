/*
 * volume.h - multi-volume archive ordering.
 *
 * Within one directory the spool uploads the volumes of a multi-volume
 * archive in archive order, as the old upload service did, so that a
 * receiver that starts extracting early finds the first volume first:
 *
 *   x.rar, x.r00 ... x.r99, x.s00 ... x.y99    set "x.rar"       index 0, 1 ...
 *   x.part1.rar, x.part2.rar ...  (part01, part001 too)
 *                                              set "x.part.rar"  index = N
 *   x.7z.001, x.7z.002 ...  (any NAME.NNN, 3+ digits: x.zip.001, x.tar.000)
 *                                              set "x.7z"        index = NNN
 *   x.z01, x.z02 ... then x.zip               set "x.zip"       index = NN,
 *                                              x.zip is SPOOLFS_VOLUME_LAST
 *
 * Extensions match case-insensitively; the set keeps the base as written and
 * spells the suffix in lowercase ("X.R00" -> "X.rar").  A lone x.rar or x.zip
 * is a volume too (a set of one): parsing looks at one name, not the
 * directory.  Two names belong to the same set when their directories and
 * sets are equal; order them by index.
 *
 * Pure functions, no state: safe from any thread.
 */
#ifndef SPOOLFS_VOLUME_H
#define SPOOLFS_VOLUME_H

#include <stdbool.h>
#include <stddef.h>

/* The index of a split zip's final x.zip, after every x.zNN. */
#define SPOOLFS_VOLUME_LAST 2147483647L

/*
 * Is NAME (a file name, no directory) a volume of a multi-volume archive?
 * If so, returns true, writes the set key into SET (SETLEN bytes; SET may be
 * NULL when SETLEN is 0) and the order index into *INDEX (may be NULL).
 * Returns false for other names, and when the set key does not fit in SET.
 */
bool spoolfs_volume_parse(const char *name, char *set, size_t setlen,
			  long *index);

#endif
