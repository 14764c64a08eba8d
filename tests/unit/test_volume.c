/*
 * test_volume.c - multi-volume archive names: which set, which position,
 * and that sorting a directory by (set, index) gives archive order.
 */
#include "check.h"
#include "../../spool/volume.h"

#include <stdlib.h>
#include <string.h>

static const struct {
	const char *name, *set;
	long index;
} volumes[] = {
	/* old-style rar */
	{ "x.rar", "x.rar", 0 },
	{ "x.r00", "x.rar", 1 },
	{ "x.r01", "x.rar", 2 },
	{ "x.r99", "x.rar", 100 },
	{ "x.s00", "x.rar", 101 },
	{ "x.s01", "x.rar", 102 },
	{ "x.y99", "x.rar", 800 },
	{ "Holiday 2026.RAR", "Holiday 2026.rar", 0 },
	{ "Holiday 2026.R07", "Holiday 2026.rar", 8 },
	/* new-style rar */
	{ "x.part1.rar", "x.part.rar", 1 },
	{ "x.part2.rar", "x.part.rar", 2 },
	{ "x.part10.rar", "x.part.rar", 10 },
	{ "x.part01.rar", "x.part.rar", 1 },
	{ "x.part001.rar", "x.part.rar", 1 },
	{ "X.Part3.RAR", "X.part.rar", 3 },
	{ "a.b.part7.rar", "a.b.part.rar", 7 },
	/* numeric splits */
	{ "x.7z.001", "x.7z", 1 },
	{ "x.7z.002", "x.7z", 2 },
	{ "x.7z.010", "x.7z", 10 },
	{ "x.7z.1000", "x.7z", 1000 },
	{ "x.zip.001", "x.zip", 1 },
	{ "backup.tar.gz.000", "backup.tar.gz", 0 },
	{ "disk.001", "disk", 1 },
	/* split zip: .z01, .z02 ... then .zip */
	{ "x.z01", "x.zip", 1 },
	{ "x.z02", "x.zip", 2 },
	{ "x.z100", "x.zip", 100 },
	{ "x.zip", "x.zip", SPOOLFS_VOLUME_LAST },
	{ "X.ZIP", "X.zip", SPOOLFS_VOLUME_LAST },
	{ "X.Z03", "X.zip", 3 },
};

static const char *const not_volumes[] = {
	"x", "x.txt", "x.jpg", "DSC_0042.NEF", ".rar", ".r00", ".zip", ".001",
	"x.r0", "x.r000", "x.rxx", "x.q00", "x.part.rar.bak", "x.7z",
	"x.log.1", "x.01", "x.z00", "x.z1", "x.z", "x.r", "x.", "",
	"x.001x", "x.99999999",
};

/* The order a spool must upload one directory in. */
static const char *const dir_order[] = {
	"a.part1.rar", "a.part2.rar", "a.part10.rar",
	"b.rar", "b.r00", "b.r01", "b.r99", "b.s00",
	"c.7z.001", "c.7z.002", "c.7z.003",
	"d.z01", "d.z02", "d.zip",
};

struct entry {
	const char *name;
	char set[64];
	long index;
};

static int cmp_entry(const void *a, const void *b)
{
	const struct entry *x = a, *y = b;
	int c = strcmp(x->set, y->set);

	if (c)
		return c;
	return x->index < y->index ? -1 : x->index > y->index;
}

int main(void)
{
	struct entry e[sizeof(dir_order) / sizeof(dir_order[0])];
	size_t n = sizeof(e) / sizeof(e[0]), i;
	char set[64];
	long idx;

	for (i = 0; i < sizeof(volumes) / sizeof(volumes[0]); i++) {
		idx = -42;
		set[0] = '\0';
		CHECK(spoolfs_volume_parse(volumes[i].name, set, sizeof(set), &idx));
		CHECK_EQ_STR(set, volumes[i].set);
		if (idx != volumes[i].index)
			fprintf(stderr, "  %s\n", volumes[i].name);
		CHECK_EQ_INT(idx, volumes[i].index);
	}
	for (i = 0; i < sizeof(not_volumes) / sizeof(not_volumes[0]); i++) {
		bool v = spoolfs_volume_parse(not_volumes[i], set, sizeof(set), &idx);

		if (v)
			fprintf(stderr, "  '%s' taken for a volume of '%s' (%ld)\n",
				not_volumes[i], set, idx);
		CHECK(!v);
	}

	/* SET and INDEX are optional; a SET too small is "not a volume" */
	CHECK(spoolfs_volume_parse("x.r00", NULL, 0, NULL));
	CHECK(spoolfs_volume_parse("x.r00", NULL, 0, &idx) && idx == 1);
	CHECK(spoolfs_volume_parse("x.r00", set, 6, NULL));
	CHECK_EQ_STR(set, "x.rar");
	CHECK(!spoolfs_volume_parse("x.r00", set, 5, NULL));

	/* sorting a shuffled directory by (set, index) gives archive order */
	for (i = 0; i < n; i++) {
		size_t j = (i * 5 + 3) % n;	/* 5 and n=14 are coprime */

		e[i].name = dir_order[j];
		CHECK(spoolfs_volume_parse(e[i].name, e[i].set, sizeof(e[i].set),
					   &e[i].index));
	}
	qsort(e, n, sizeof(e[0]), cmp_entry);
	for (i = 0; i < n; i++)
		CHECK_EQ_STR(e[i].name, dir_order[i]);

	return check_done();
}
