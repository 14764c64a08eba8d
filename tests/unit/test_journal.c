/*
 * test_journal.c - the sqlite journal: rows survive a reopen (what a crash
 * leaves behind is what was committed), whole-row saves, deletes, ids that
 * are never reused, the event log, and the state machine's transition
 * table.
 */
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../spool/journal.h"
#include "check.h"

struct seen {
	int n;
	struct spool_row last;
	char name[64], rpath[64];
};

static int collect(void *arg, const struct spool_row *r)
{
	struct seen *s = arg;

	s->n++;
	s->last = *r;
	snprintf(s->name, sizeof(s->name), "%s", r->name);
	snprintf(s->rpath, sizeof(s->rpath), "%s", r->rpath ? r->rpath : "");
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
	test_transitions();
	snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
	if (system(cmd) != 0)
		fprintf(stderr, "cannot remove %s\n", dir);
	return check_done();
}
