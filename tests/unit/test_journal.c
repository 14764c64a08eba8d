/*
 * test_journal.c - the sqlite journal: rows survive a reopen (what a crash
 * leaves behind is what was committed), whole-row saves, deletes, ids that
 * are never reused, the event log, and the state machine's transition
 * table.
 */
#include <limits.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../spool/journal.h"
#include "check.h"

struct seen {
	int n;
	struct spool_row last;
	char name[64], rpath[64], mv_to[64], tmp_to[64];
};

static int collect(void *arg, const struct spool_row *r)
{
	struct seen *s = arg;

	s->n++;
	s->last = *r;
	snprintf(s->name, sizeof(s->name), "%s", r->name);
	snprintf(s->rpath, sizeof(s->rpath), "%s", r->rpath ? r->rpath : "");
	snprintf(s->mv_to, sizeof(s->mv_to), "%s", r->mv_to ? r->mv_to : "");
	snprintf(s->tmp_to, sizeof(s->tmp_to), "%s",
		 r->tmp_to ? r->tmp_to : "");
	return 0;
}

static void test_roundtrip(const char *dir)
{
	char path[PATH_MAX], err[256];
	struct spool_journal *j;
	struct spool_row r = {
		.parent = 0, .dest = "nas", .area = SPOOL_AREA_MAIN,
		.name = "DSC_0042.NEF", .state = SPOOL_WRITING, .size = 0,
		.mode = 0644, .gen = 1, .has_data = true,
	};
	struct seen s = { 0 };

	snprintf(path, sizeof(path), "%s/journal.db", dir);
	CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
	CHECK(r.id > 0);
	r.state = SPOOL_QUEUED;
	r.size = 52428800;
	r.open = true;
	CHECK_EQ_INT(spool_journal_save(j, &r), 0);
	CHECK_EQ_INT(spool_journal_sync(j), 0);
	CHECK_EQ_INT(spool_journal_event(j, r.id, "nas", "DSC_0042.NEF",
					 "queued", NULL), 0);
	/* no orderly close: reopen a second connection, as after kill -9 */
	{
		struct spool_journal *j2;

		CHECK_EQ_INT(spool_journal_open(&j2, path, err, sizeof(err)),
			     0);
		CHECK_EQ_INT(spool_journal_load(j2, collect, &s), 0);
		CHECK_EQ_INT(s.n, 1);
		CHECK_EQ_INT(s.last.state, SPOOL_QUEUED);
		CHECK_EQ_INT(s.last.size, 52428800);
		CHECK_EQ_INT(s.last.open, 1);
		CHECK_EQ_STR(s.name, "DSC_0042.NEF");
		spool_journal_close(j2);
	}
	r.state = SPOOL_UPLOADED;
	r.rdest = "nas";
	r.rpath = "2026/DSC_0042.NEF";
	r.rgen = 1;
	r.open = false;
	CHECK_EQ_INT(spool_journal_begin(j), 0);
	CHECK_EQ_INT(spool_journal_save(j, &r), 0);
	CHECK_EQ_INT(spool_journal_commit(j), 0);
	spool_journal_close(j);

	memset(&s, 0, sizeof(s));
	CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_load(j, collect, &s), 0);
	CHECK_EQ_INT(s.last.state, SPOOL_UPLOADED);
	CHECK_EQ_STR(s.rpath, "2026/DSC_0042.NEF");
	CHECK_EQ_INT(spool_journal_delete(j, r.id), 0);
	memset(&s, 0, sizeof(s));
	CHECK_EQ_INT(spool_journal_load(j, collect, &s), 0);
	CHECK_EQ_INT(s.n, 0);
	spool_journal_close(j);

	/* a journal that is not a database is refused with its path */
	snprintf(path, sizeof(path), "%s/garbage.db", dir);
	{
		FILE *fp = fopen(path, "w");

		fputs("this is not sqlite, not even close, really not\n", fp);
		fclose(fp);
	}
	CHECK(spool_journal_open(&j, path, err, sizeof(err)) < 0);
	CHECK(strstr(err, "garbage.db") != NULL);
}

/* The id of a gone row is never given to a new one, not even the highest,
 * in this connection or the next: spool.c keeps a dropped data file as
 * data/drop.ID until the journal's forgetting it is on disk. */
static void test_ids_are_never_reused(const char *dir)
{
	char path[PATH_MAX], err[256];
	struct spool_journal *j;
	struct spool_row r = {
		.parent = 0, .dest = "nas", .area = SPOOL_AREA_MAIN,
		.name = "a", .state = SPOOL_QUEUED, .mode = 0644, .gen = 1,
		.has_data = true,
	};
	int64_t first, second, third;

	snprintf(path, sizeof(path), "%s/ids.db", dir);
	CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
	first = r.id;
	CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
	second = r.id;
	CHECK(second > first);
	CHECK_EQ_INT(spool_journal_delete(j, second), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
	third = r.id;
	CHECK(third > second);
	/* the highest row goes, but an event still names it */
	CHECK_EQ_INT(spool_journal_event(j, third, "nas", "a", "uploaded",
					 NULL), 0);
	CHECK_EQ_INT(spool_journal_delete(j, third), 0);
	spool_journal_close(j);

	CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
	CHECK(r.id > third);
	spool_journal_close(j);
}

static int user_version(const char *path)
{
	sqlite3_stmt *st;
	sqlite3 *db;
	int v = -1;

	if (sqlite3_open(path, &db) != SQLITE_OK)
		return -1;
	if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) ==
	    SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
		v = sqlite3_column_int(st, 0);
	sqlite3_finalize(st);
	sqlite3_close(db);
	return v;
}

/*
 * A journal written by an older spoolfs (schema 1: no mv_to; 2: no
 * tmp_to; 3: no inline table) keeps its rows and gains the columns and
 * the table when it is opened.
 */
static void test_older_schemas(const char *dir)
{
	static const char *const drop[] = {
		"ALTER TABLE nodes DROP COLUMN tmp_to;"
		"ALTER TABLE nodes DROP COLUMN mv_to;"
		"PRAGMA user_version=1",
		"ALTER TABLE nodes DROP COLUMN tmp_to;"
		"PRAGMA user_version=2",
		"DROP TABLE inline;"
		"PRAGMA user_version=3",
	};

	for (int v = 1; v <= 3; v++) {
		char path[PATH_MAX], err[256];
		struct spool_journal *j;
		struct spool_row r = {
			.parent = 0, .dest = "nas", .area = SPOOL_AREA_MAIN,
			.name = "old", .state = SPOOL_QUEUED, .mode = 0644,
			.gen = 1, .has_data = true,
		};
		struct seen s = { 0 };
		sqlite3 *db;

		snprintf(path, sizeof(path), "%s/v%d.db", dir, v);
		CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)),
			     0);
		CHECK_EQ_INT(spool_journal_insert(j, &r), 0);
		spool_journal_close(j);
		CHECK(sqlite3_open(path, &db) == SQLITE_OK);
		CHECK(sqlite3_exec(db, drop[v - 1], NULL, NULL, NULL) ==
		      SQLITE_OK);
		sqlite3_close(db);
		CHECK_EQ_INT(user_version(path), v);

		CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)),
			     0);
		CHECK_EQ_INT(user_version(path), 4);
		CHECK_EQ_INT(spool_journal_load(j, collect, &s), 0);
		CHECK_EQ_INT(s.n, 1);
		CHECK_EQ_STR(s.name, "old");
		r.rtmp = "d/.spoolfs-x.part";
		r.tmp_dest = "nas";
		r.tmp_to = "d/old";
		r.mv_to = "e/old";
		CHECK_EQ_INT(spool_journal_save(j, &r), 0);
		memset(&s, 0, sizeof(s));
		CHECK_EQ_INT(spool_journal_load(j, collect, &s), 0);
		CHECK_EQ_STR(s.tmp_to, "d/old");
		CHECK_EQ_STR(s.mv_to, "e/old");
		CHECK_EQ_INT(spool_journal_inline_put(j, r.id, "x", 1), 0);
		spool_journal_close(j);
	}
}

struct copies {
	int n;
	int64_t id[4];
	char data[4][16];
	size_t len[4];
};

static int collect_copy(void *arg, int64_t id, const void *data, size_t len)
{
	struct copies *c = arg;

	if (c->n == 4 || len > sizeof(c->data[0]))
		return -1;
	c->id[c->n] = id;
	memcpy(c->data[c->n], data, len);
	c->len[c->n++] = len;
	return 0;
}

/*
 * Inline copies: committed with the row, there after a kill -9 (a second
 * connection reads them), replaced by a later put, gone with their row's
 * delete or one of their own, and all gone after a clear.  An empty file's
 * copy is an empty blob, not "no copy".
 */
static void test_inline(const char *dir)
{
	char path[PATH_MAX], err[256];
	struct spool_journal *j, *j2;
	struct spool_row a = {
		.dest = "nas", .name = "a.xmp", .state = SPOOL_QUEUED,
		.mode = 0644, .gen = 1, .has_data = true, .size = 5,
	}, b = a, c = a;
	struct copies got = { 0 };

	snprintf(path, sizeof(path), "%s/inline.db", dir);
	CHECK_EQ_INT(spool_journal_open(&j, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &a), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &b), 0);
	CHECK_EQ_INT(spool_journal_insert(j, &c), 0);
	CHECK_EQ_INT(spool_journal_begin(j), 0);
	CHECK_EQ_INT(spool_journal_inline_put(j, a.id, "old!!", 5), 0);
	CHECK_EQ_INT(spool_journal_save(j, &a), 0);
	CHECK_EQ_INT(spool_journal_commit(j), 0);
	CHECK_EQ_INT(spool_journal_inline_put(j, a.id, "newer", 5), 0);
	CHECK_EQ_INT(spool_journal_inline_put(j, b.id, "bb", 2), 0);
	CHECK_EQ_INT(spool_journal_inline_put(j, c.id, "", 0), 0);
	CHECK_EQ_INT(spool_journal_sync(j), 0);

	CHECK_EQ_INT(spool_journal_open(&j2, path, err, sizeof(err)), 0);
	CHECK_EQ_INT(spool_journal_inline_load(j2, collect_copy, &got), 0);
	CHECK_EQ_INT(got.n, 3);
	CHECK(got.id[0] == a.id && got.len[0] == 5 &&
	      memcmp(got.data[0], "newer", 5) == 0);
	CHECK(got.id[1] == b.id && got.len[1] == 2);
	CHECK(got.id[2] == c.id && got.len[2] == 0);
	spool_journal_close(j2);

	CHECK_EQ_INT(spool_journal_delete(j, a.id), 0);
	CHECK_EQ_INT(spool_journal_inline_delete(j, b.id), 0);
	memset(&got, 0, sizeof(got));
	CHECK_EQ_INT(spool_journal_inline_load(j, collect_copy, &got), 0);
	CHECK_EQ_INT(got.n, 1);
	CHECK(got.id[0] == c.id);
	CHECK_EQ_INT(spool_journal_inline_clear(j), 0);
	memset(&got, 0, sizeof(got));
	CHECK_EQ_INT(spool_journal_inline_load(j, collect_copy, &got), 0);
	CHECK_EQ_INT(got.n, 0);
	spool_journal_close(j);
}

static void test_transitions(void)
{
	CHECK(spool_state_transition_ok(SPOOL_WRITING, SPOOL_QUEUED));
	CHECK(spool_state_transition_ok(SPOOL_QUEUED, SPOOL_UPLOADING));
	CHECK(spool_state_transition_ok(SPOOL_UPLOADING, SPOOL_UPLOADED));
	CHECK(spool_state_transition_ok(SPOOL_UPLOADING, SPOOL_QUEUED));
	CHECK(spool_state_transition_ok(SPOOL_UPLOADING, SPOOL_FAILED));
	CHECK(spool_state_transition_ok(SPOOL_FAILED, SPOOL_QUEUED));
	CHECK(spool_state_transition_ok(SPOOL_UPLOADED, SPOOL_WRITING));
	CHECK(spool_state_transition_ok(SPOOL_QUEUED, SPOOL_QUEUED));
	/* a file is never uploaded without being closed and queued first */
	CHECK(!spool_state_transition_ok(SPOOL_WRITING, SPOOL_UPLOADING));
	CHECK(!spool_state_transition_ok(SPOOL_WRITING, SPOOL_UPLOADED));
	CHECK(!spool_state_transition_ok(SPOOL_FAILED, SPOOL_UPLOADED));
	CHECK(!spool_state_transition_ok(SPOOL_FAILED, SPOOL_UPLOADING));
	CHECK(!spool_state_transition_ok(SPOOL_UPLOADED, SPOOL_FAILED));
	CHECK(!spool_state_transition_ok(7, SPOOL_QUEUED));
	CHECK_EQ_STR(spool_state_name(SPOOL_UPLOADING), "uploading");
}

int main(void)
{
	char dir[] = "/tmp/spoolfs-test-journal-XXXXXX";
	char cmd[64];

	if (!mkdtemp(dir))
		return 1;
	test_roundtrip(dir);
	test_ids_are_never_reused(dir);
	test_older_schemas(dir);
	test_inline(dir);
	test_transitions();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return check_done();
}
