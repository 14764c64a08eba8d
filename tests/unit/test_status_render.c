/*
 * test_status_render.c - the status renderer: JSON escaping of odd names,
 * 80 columns in the text whatever the names, human units, redaction.
 */
#include <stdlib.h>
#include <string.h>

#include "../../spool/status_render.h"
#include "check.h"

static void test_json_string(void)
{
	struct spool_sbuf b = { 0 };
	char *s;

	spool_sbuf_json_string(&b, "a\"b\\c\nd\x01\xff\xc3\xa9");
	s = spool_sbuf_take(&b);
	CHECK_EQ_STR(s, "\"a\\\"b\\\\c\\nd\\u0001\\ufffd\xc3\xa9\"");
	free(s);
}

static void test_units(void)
{
	char buf[32];

	CHECK_EQ_STR(spool_status_human_bytes(0, buf, sizeof(buf)), "0 B");
	CHECK_EQ_STR(spool_status_human_bytes(1536, buf, sizeof(buf)),
		     "1.50 KiB");
	CHECK_EQ_STR(spool_status_human_bytes(50u << 20, buf, sizeof(buf)),
		     "50.0 MiB");
	CHECK_EQ_STR(spool_status_human_duration(5, buf, sizeof(buf)), "5s");
	CHECK_EQ_STR(spool_status_human_duration(125, buf, sizeof(buf)),
		     "2m05s");
	CHECK_EQ_STR(spool_status_human_duration(3720, buf, sizeof(buf)),
		     "1h02m");
}

static void test_text_fits(void)
{
	struct spool_status_upload up = {
		.path = strdup("a/very/long/directory/name/that/goes/on/and/on/"
			       "and/on/for/ever/and/ever/DSC_0042\n.NEF"),
		.target = strdup("nas"), .attempt = 3, .size = 50u << 20,
		.live = true, .sent = 20u << 20, .rate = 2u << 20, .eta_s = 15,
	};
	struct spool_status_dest d = {
		.name = strdup("nas"),
		.url = strdup("ftps://photo@nas.example/a/really/long/base/path/"
			      "on/the/server/that/does/not/fit/either"),
		.last_err_ms = 1, .last_err = strdup("nas: upload failed: "
			"530 login incorrect for hunter2 and a long tail of text "
			"that wraps over more than one line of the table, and "
			"then some more, and more, and more, and more"),
		.uploads = malloc(sizeof(up)), .nuploads = 1,
	};
	struct spool_status st = {
		.now_ms = 1000, .live = true, .pid = 1,
		.spool_dir = strdup("/var/spool/spoolfs"), .max_size = 100,
		.used = 50, .dests = malloc(sizeof(d)), .ndests = 1,
	};
	struct spoolfs_dest cd = { .password = (char *)"hunter2" };
	struct spoolfs_config cfg = { .dests = &cd, .ndests = 1 };
	char *text, *json, *line, *save = NULL;

	d.uploads[0] = up;
	st.dests[0] = d;
	spool_status_redact(&st, &cfg);
	text = spool_status_render_text(&st);
	json = spool_status_render_json(&st);
	CHECK(text && json);
	CHECK(!strstr(text, "hunter2") && !strstr(json, "hunter2"));
	CHECK(strstr(text, "[########............]  40%") != NULL);
	CHECK(strstr(json, "\"progress_percent\":40.0") != NULL);
	CHECK(strstr(json, "DSC_0042\\n.NEF") != NULL);
	for (line = strtok_r(text, "\n", &save); line;
	     line = strtok_r(NULL, "\n", &save))
		CHECK(strlen(line) <= SPOOL_STATUS_WIDTH);
	free(text);
	free(json);
	spool_status_release(&st);
}

int main(void)
{
	test_json_string();
	test_units();
	test_text_fits();
	return check_done();
}
