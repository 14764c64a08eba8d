/*
 * status_render.c - render a status snapshot as the text table and as JSON
 * (see status_render.h).  Pure formatting: no lock, no spool, no I/O.
 *
 * The text is for people and fits 80 columns: long paths are shortened in
 * the middle ("2026/05/…/DSC_0042.NEF"), control characters in names are
 * shown as '?', one upload in flight takes two lines (its name, then a
 * progress bar with percent, bytes, rate and ETA).  The JSON is for scripts
 * and carries everything unshortened; times are milliseconds since the
 * epoch, unknown values are null (docs/STATUS.md).
 */
#include "status_render.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define BAR_WIDTH 20

/* ---- buffer ---------------------------------------------------------- */

static void sbuf_grow(struct spool_sbuf *b, size_t need)
{
	size_t cap;
	char *n;

	if (b->oom || b->len + need + 1 <= b->cap)
		return;
	cap = b->cap ? b->cap : 1024;
	while (cap < b->len + need + 1)
		cap *= 2;
	n = realloc(b->s, cap);
	if (!n) {
		b->oom = true;
		return;
	}
	b->s = n;
	b->cap = cap;
}

void spool_sbuf_printf(struct spool_sbuf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		return;
	sbuf_grow(b, (size_t)n);
	if (b->oom)
		return;
	va_start(ap, fmt);
	vsnprintf(b->s + b->len, b->cap - b->len, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

static void sbuf_putc(struct spool_sbuf *b, char c)
{
	sbuf_grow(b, 1);
	if (b->oom)
		return;
	b->s[b->len++] = c;
	b->s[b->len] = '\0';
}

static void sbuf_put(struct spool_sbuf *b, const char *s, size_t n)
{
	sbuf_grow(b, n);
	if (b->oom)
		return;
	memcpy(b->s + b->len, s, n);
	b->len += n;
	b->s[b->len] = '\0';
}

char *spool_sbuf_take(struct spool_sbuf *b)
{
	char *s = b->s;

	if (b->oom) {
		free(s);
		s = NULL;
	} else if (!s) {
		s = strdup("");
	}
	memset(b, 0, sizeof(*b));
	return s;
}

/* Length of the valid UTF-8 sequence at s, 0 if it is not one. */
static size_t utf8_len(const unsigned char *s)
{
	size_t n;
	uint32_t c;

	if (s[0] < 0x80)
		return 1;
	if ((s[0] & 0xe0) == 0xc0)
		n = 2, c = s[0] & 0x1f;
	else if ((s[0] & 0xf0) == 0xe0)
		n = 3, c = s[0] & 0x0f;
	else if ((s[0] & 0xf8) == 0xf0)
		n = 4, c = s[0] & 0x07;
	else
		return 0;
	for (size_t i = 1; i < n; i++) {
		if ((s[i] & 0xc0) != 0x80)
			return 0;
		c = c << 6 | (s[i] & 0x3f);
	}
	/* overlong, surrogate or out of range */
	if ((n == 2 && c < 0x80) || (n == 3 && c < 0x800) ||
	    (n == 4 && (c < 0x10000 || c > 0x10ffff)) ||
	    (c >= 0xd800 && c <= 0xdfff))
		return 0;
	return n;
}

void spool_sbuf_json_string(struct spool_sbuf *b, const char *str)
{
	const unsigned char *s = (const unsigned char *)str;

	if (!s) {
		spool_sbuf_printf(b, "null");
		return;
	}
	sbuf_putc(b, '"');
	while (*s) {
		size_t n = utf8_len(s);

		if (n == 0) {
			spool_sbuf_printf(b, "\\ufffd");
			s++;
		} else if (*s == '"' || *s == '\\') {
			sbuf_putc(b, '\\');
			sbuf_putc(b, (char)*s++);
		} else if (*s == '\n') {
			spool_sbuf_printf(b, "\\n");
			s++;
		} else if (*s == '\t') {
			spool_sbuf_printf(b, "\\t");
			s++;
		} else if (*s < 0x20 || *s == 0x7f) {
			spool_sbuf_printf(b, "\\u%04x", *s++);
		} else {
			sbuf_put(b, (const char *)s, n);
			s += n;
		}
	}
	sbuf_putc(b, '"');
}

/* ---- small formatters ------------------------------------------------- */

const char *spool_status_human_bytes(uint64_t n, char *buf, size_t len)
{
	static const char *const unit[] = { "KiB", "MiB", "GiB", "TiB", "PiB" };
	double v = (double)n;
	int u = -1;

	if (n < 1024) {
		snprintf(buf, len, "%" PRIu64 " B", n);
		return buf;
	}
	while (v >= 1024 && u < 4) {
		v /= 1024;
		u++;
	}
	snprintf(buf, len, v < 10 ? "%.2f %s" : v < 100 ? "%.1f %s" :
		 "%.0f %s", v, unit[u]);
	return buf;
}

const char *spool_status_human_duration(int64_t s, char *buf, size_t len)
{
	if (s < 0)
		s = 0;
	if (s < 60)
		snprintf(buf, len, "%" PRId64 "s", s);
	else if (s < 3600)
		snprintf(buf, len, "%" PRId64 "m%02" PRId64 "s", s / 60, s % 60);
	else if (s < 86400)
		snprintf(buf, len, "%" PRId64 "h%02" PRId64 "m", s / 3600,
			 s / 60 % 60);
	else
		snprintf(buf, len, "%" PRId64 "d%02" PRId64 "h", s / 86400,
			 s / 3600 % 24);
	return buf;
}

const char *spool_status_human_time(int64_t ms, char *buf, size_t len)
{
	time_t t = (time_t)(ms / 1000);
	struct tm tm;

	if (!localtime_r(&t, &tm) ||
	    strftime(buf, len, "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(buf, len, "?");
	return buf;
}

/* ---- text ------------------------------------------------------------- */

/* Columns S takes (code points; invalid bytes count one each). */
static size_t text_width(const char *s)
{
	size_t w = 0;

	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if ((*p & 0xc0) != 0x80)
			w++;
	return w;
}

/*
 * S for the text table: control characters as '?', and at most MAX
 * columns, shortened in the middle with "...".  malloc'd.
 */
static char *text_fit(const char *s, size_t max)
{
	struct spool_sbuf b = { 0 };
	size_t w, head, tail, col = 0;
	const unsigned char *p;

	if (!s)
		s = "";
	w = text_width(s);
	head = w;
	tail = 0;
	if (w > max && max > 3) {
		head = (max - 3) / 2;
		tail = max - 3 - head;
	}
	for (p = (const unsigned char *)s; *p; p++) {
		bool start = (*p & 0xc0) != 0x80;

		if (start)
			col++;
		if (w > max && col > head && col <= w - tail) {
			if (start && col == head + 1)
				sbuf_put(&b, "...", 3);
			continue;
		}
		if (*p < 0x20 || *p == 0x7f)
			sbuf_putc(&b, '?');
		else
			sbuf_putc(&b, (char)*p);
	}
	return spool_sbuf_take(&b);
}

static void text_line_fit(struct spool_sbuf *b, size_t indent, const char *s)
{
	char *t = text_fit(s, SPOOL_STATUS_WIDTH - indent);

	spool_sbuf_printf(b, "%*s%s\n", (int)indent, "", t ? t : "");
	free(t);
}

/*
 * S over at most MAXLINES lines of INDENT + the rest of the width, broken
 * at spaces where possible; what does not fit is shortened in the middle
 * of the last line.
 */
static void text_wrap(struct spool_sbuf *b, size_t indent, const char *s,
		      int maxlines)
{
	size_t width = SPOOL_STATUS_WIDTH - indent;

	for (int line = 1; *s; line++) {
		size_t cols = 0, cut = 0, brk = 0;
		const unsigned char *p = (const unsigned char *)s;
		char *piece;

		if (line == maxlines || text_width(s) <= width) {
			text_line_fit(b, indent, s);
			return;
		}
		/* the byte offset where WIDTH columns end */
		for (; p[cut]; cut++) {
			if ((p[cut] & 0xc0) != 0x80 && ++cols > width)
				break;
			if (p[cut] == ' ')
				brk = cut;
		}
		if (brk > width / 2)
			cut = brk;
		piece = strndup(s, cut);
		text_line_fit(b, indent, piece ? piece : "");
		free(piece);
		s += cut;
		while (*s == ' ')
			s++;
	}
}

static const char *const bucket_name[SPOOL_BUCKET_COUNT] = {
	"pending", "uploading", "uploaded", "failed",
};

static void text_when(struct spool_sbuf *b, const char *label, int64_t ms,
		      int64_t now)
{
	char t[40], d[24];

	if (!ms) {
		spool_sbuf_printf(b, "  %-13s none\n", label);
		return;
	}
	spool_status_human_time(ms, t, sizeof(t));
	if (ms > now)
		spool_status_human_duration((ms - now + 999) / 1000, d,
					    sizeof(d));
	else
		spool_status_human_duration((now - ms) / 1000, d, sizeof(d));
	spool_sbuf_printf(b, "  %-13s %s (%s%s%s)\n", label, t,
			  ms > now ? "in " : "", d, ms > now ? "" : " ago");
}

static void text_upload(struct spool_sbuf *b,
			const struct spool_status_dest *d,
			const struct spool_status_upload *u)
{
	char head[64], line[SPOOL_STATUS_WIDTH * 2], sent[24], size[24];
	char rate[24], eta[24];
	char *name;
	size_t hl;
	int pct = 0, fill;

	snprintf(head, sizeof(head), " (attempt %d%s%s%s)", u->attempt,
		 u->meta ? ", rename" : "",
		 strcmp(u->target, d->name) ? ", via " : "",
		 strcmp(u->target, d->name) ? u->target : "");
	hl = text_width(head);
	name = text_fit(u->path, SPOOL_STATUS_WIDTH - 4 - (hl < 40 ? hl : 40));
	spool_sbuf_printf(b, "  > %s%s\n", name ? name : "", head);
	free(name);

	if (!u->live) {
		spool_sbuf_printf(b, "    [%*s]  progress unknown (no live "
				  "daemon)\n", BAR_WIDTH, "");
		return;
	}
	if (u->size)
		pct = (int)(u->sent * 100 / u->size);
	else
		pct = 100;
	if (pct > 100)
		pct = 100;
	fill = pct * BAR_WIDTH / 100;
	spool_status_human_bytes(u->sent, sent, sizeof(sent));
	spool_status_human_bytes(u->size, size, sizeof(size));
	if (u->rate) {
		spool_status_human_bytes(u->rate, rate, sizeof(rate));
		strcat(rate, "/s");
	} else {
		snprintf(rate, sizeof(rate), "-");
	}
	if (u->eta_s >= 0) {
		char dur[16];

		snprintf(eta, sizeof(eta), "ETA %s",
			 spool_status_human_duration(u->eta_s, dur, sizeof(dur)));
	} else {
		snprintf(eta, sizeof(eta), "ETA -");
	}
	snprintf(line, sizeof(line), "    [%.*s%.*s] %3d%%  %s/%s  %s  %s",
		 fill, "####################", BAR_WIDTH - fill,
		 "....................", pct, sent, size, rate, eta);
	line[SPOOL_STATUS_WIDTH] = '\0';
	spool_sbuf_printf(b, "%s\n", line);
}

static void text_dest(struct spool_sbuf *b, const struct spool_status *st,
		      const struct spool_status_dest *d)
{
	char num[24], bytes[24], line[256];

	snprintf(line, sizeof(line), "%s  %s%s%s", d->name, d->url,
		 d->fallback ? "  fallback: " : "",
		 d->fallback ? d->fallback : "");
	sbuf_putc(b, '\n');
	text_line_fit(b, 0, line);
	for (int i = 0; i < SPOOL_BUCKET_COUNT; i++) {
		const struct spool_status_count *c = &d->count[i];

		snprintf(num, sizeof(num), "%" PRIu64, c->files);
		spool_status_human_bytes(c->bytes, bytes, sizeof(bytes));
		spool_sbuf_printf(b, "  %-10s %8s file%s %12s", bucket_name[i],
				  num, c->files == 1 ? " " : "s", bytes);
		if (i == SPOOL_BUCKET_PENDING && d->waiting_retry)
			spool_sbuf_printf(b, "   %" PRIu64 " waiting to retry",
					  d->waiting_retry);
		if (i == SPOOL_BUCKET_UPLOADING && d->rate) {
			spool_status_human_bytes(d->rate, bytes, sizeof(bytes));
			spool_sbuf_printf(b, "   %s/s", bytes);
		}
		sbuf_putc(b, '\n');
	}
	text_when(b, "last success", d->last_ok_ms, st->now_ms);
	text_when(b, "last error", d->last_err_ms, st->now_ms);
	if (d->last_err_ms && d->last_err)
		text_wrap(b, 4, d->last_err, 3);
	text_when(b, "next retry", d->next_retry_ms, st->now_ms);
	for (size_t i = 0; i < d->nuploads; i++)
		text_upload(b, d, &d->uploads[i]);
}

char *spool_status_render_text(const struct spool_status *st)
{
	struct spool_sbuf b = { 0 };
	char when[40], used[24], max[24], fr[24], line[512];

	spool_status_human_time(st->now_ms, when, sizeof(when));
	if (st->live)
		snprintf(line, sizeof(line), "spoolfs status at %s, live from "
			 "the daemon (pid %ld)", when, st->pid);
	else
		snprintf(line, sizeof(line), "spoolfs status at %s, from the "
			 "journal (%s)", when, st->daemon_running ?
			 "a daemon runs but its mount was not found: no live "
			 "progress" : "daemon not running");
	text_line_fit(&b, 0, line);
	snprintf(line, sizeof(line), "spool  %s", st->spool_dir);
	text_line_fit(&b, 0, line);
	spool_status_human_bytes(st->used, used, sizeof(used));
	if (st->max_size) {
		spool_status_human_bytes(st->max_size, max, sizeof(max));
		snprintf(line, sizeof(line), "%s to upload of a %s quota (%d%%)",
			 used, max, (int)(st->used * 100 / st->max_size));
	} else {
		snprintf(line, sizeof(line), "%s to upload (no quota)", used);
	}
	if (st->disk_known) {
		size_t l = strlen(line);

		snprintf(line + l, sizeof(line) - l, ", %s free on disk",
			 spool_status_human_bytes(st->disk_free, fr,
						  sizeof(fr)));
	}
	text_line_fit(&b, 2, line);
	for (size_t i = 0; i < st->ndests; i++)
		text_dest(&b, st, &st->dests[i]);
	return spool_sbuf_take(&b);
}

/* ---- JSON --------------------------------------------------------------- */

static void json_ms(struct spool_sbuf *b, const char *key, int64_t ms,
		    bool comma)
{
	if (ms)
		spool_sbuf_printf(b, "\"%s\":%" PRId64 "%s", key, ms,
				  comma ? "," : "");
	else
		spool_sbuf_printf(b, "\"%s\":null%s", key, comma ? "," : "");
}

static void json_upload(struct spool_sbuf *b, const struct spool_status_upload *u)
{
	spool_sbuf_printf(b, "{\"path\":");
	spool_sbuf_json_string(b, u->path);
	spool_sbuf_printf(b, ",\"target\":");
	spool_sbuf_json_string(b, u->target);
	spool_sbuf_printf(b, ",\"kind\":\"%s\",\"attempt\":%d,"
			  "\"size_bytes\":%" PRIu64 ",", u->meta ? "meta" :
			  "upload", u->attempt, u->size);
	if (u->live) {
		spool_sbuf_printf(b, "\"sent_bytes\":%" PRIu64 ","
				  "\"progress_percent\":%.1f,", u->sent,
				  u->size ? (double)(u->sent > u->size ?
						     u->size : u->sent) * 100 /
				  (double)u->size : 100.0);
	} else {
		spool_sbuf_printf(b, "\"sent_bytes\":null,"
				  "\"progress_percent\":null,");
	}
	if (u->rate)
		spool_sbuf_printf(b, "\"rate_bps\":%" PRIu64 ",", u->rate);
	else
		spool_sbuf_printf(b, "\"rate_bps\":null,");
	if (u->eta_s >= 0)
		spool_sbuf_printf(b, "\"eta_seconds\":%" PRId64 ",", u->eta_s);
	else
		spool_sbuf_printf(b, "\"eta_seconds\":null,");
	json_ms(b, "started_ms", u->started_ms, false);
	spool_sbuf_printf(b, "}");
}

static void json_dest(struct spool_sbuf *b, const struct spool_status_dest *d)
{
	spool_sbuf_printf(b, "{\"name\":");
	spool_sbuf_json_string(b, d->name);
	spool_sbuf_printf(b, ",\"url\":");
	spool_sbuf_json_string(b, d->url);
	spool_sbuf_printf(b, ",\"fallback\":");
	spool_sbuf_json_string(b, d->fallback);
	for (int i = 0; i < SPOOL_BUCKET_COUNT; i++)
		spool_sbuf_printf(b, ",\"%s\":{\"files\":%" PRIu64
				  ",\"bytes\":%" PRIu64 "}", bucket_name[i],
				  d->count[i].files, d->count[i].bytes);
	spool_sbuf_printf(b, ",\"rate_bps\":%" PRIu64 ",\"health\":{", d->rate);
	json_ms(b, "last_success_ms", d->last_ok_ms, true);
	json_ms(b, "last_error_ms", d->last_err_ms, true);
	spool_sbuf_printf(b, "\"last_error\":");
	spool_sbuf_json_string(b, d->last_err_ms ? d->last_err : NULL);
	spool_sbuf_printf(b, ",");
	json_ms(b, "next_retry_ms", d->next_retry_ms, true);
	spool_sbuf_printf(b, "\"waiting_retry\":%" PRIu64 "},\"uploads\":[",
			  d->waiting_retry);
	for (size_t i = 0; i < d->nuploads; i++) {
		if (i)
			sbuf_putc(b, ',');
		json_upload(b, &d->uploads[i]);
	}
	spool_sbuf_printf(b, "]}");
}

char *spool_status_render_json(const struct spool_status *st)
{
	struct spool_sbuf b = { 0 };

	spool_sbuf_printf(&b, "{\"version\":%d,\"generated_ms\":%" PRId64
			  ",\"source\":\"%s\",\"daemon\":{\"running\":%s,",
			  SPOOL_STATUS_VERSION, st->now_ms,
			  st->live ? "daemon" : "journal",
			  st->live || st->daemon_running ? "true" : "false");
	if (st->live)
		spool_sbuf_printf(&b, "\"pid\":%ld,", st->pid);
	else
		spool_sbuf_printf(&b, "\"pid\":null,");
	json_ms(&b, "started_ms", st->live ? st->started_ms : 0, false);
	spool_sbuf_printf(&b, "},\"spool\":{\"dir\":");
	spool_sbuf_json_string(&b, st->spool_dir);
	spool_sbuf_printf(&b, ",\"used_bytes\":%" PRIu64 ",", st->used);
	if (st->max_size)
		spool_sbuf_printf(&b, "\"max_bytes\":%" PRIu64 ",",
				  st->max_size);
	else
		spool_sbuf_printf(&b, "\"max_bytes\":null,");
	if (st->disk_known)
		spool_sbuf_printf(&b, "\"free_bytes\":%" PRIu64 "}",
				  st->disk_free);
	else
		spool_sbuf_printf(&b, "\"free_bytes\":null}");
	spool_sbuf_printf(&b, ",\"destinations\":[");
	for (size_t i = 0; i < st->ndests; i++) {
		if (i)
			sbuf_putc(&b, ',');
		json_dest(&b, &st->dests[i]);
	}
	spool_sbuf_printf(&b, "]}\n");
	return spool_sbuf_take(&b);
}

/* ---- lifetime, secrets ---------------------------------------------------- */

void spool_status_release(struct spool_status *st)
{
	if (!st)
		return;
	for (size_t i = 0; i < st->ndests; i++) {
		struct spool_status_dest *d = &st->dests[i];

		for (size_t k = 0; k < d->nuploads; k++) {
			free(d->uploads[k].path);
			free(d->uploads[k].target);
		}
		free(d->uploads);
		free(d->name);
		free(d->url);
		free(d->fallback);
		free(d->last_err);
	}
	free(st->dests);
	free(st->spool_dir);
	memset(st, 0, sizeof(*st));
}

void spoolfs_redact(char *s, const struct spoolfs_config *cfg)
{
	if (!s || !cfg)
		return;
	for (size_t i = 0; i < cfg->ndests; i++) {
		const char *secrets[] = { cfg->dests[i].password,
					  cfg->dests[i].identity_passphrase };

		for (size_t k = 0; k < 2; k++) {
			const char *pw = secrets[k];
			size_t pl;
			char *p;

			/* a one- or two-letter password would blot out
			 * half the text; those are not worth hiding */
			if (!pw || (pl = strlen(pw)) < 3)
				continue;
			while ((p = strstr(s, pw))) {
				memset(p, '*', 3);
				memmove(p + 3, p + pl, strlen(p + pl) + 1);
			}
		}
	}
}

void spool_status_redact(struct spool_status *st,
			 const struct spoolfs_config *cfg)
{
	for (size_t i = 0; i < st->ndests; i++) {
		struct spool_status_dest *d = &st->dests[i];

		spoolfs_redact(d->url, cfg);
		spoolfs_redact(d->last_err, cfg);
		for (size_t k = 0; k < d->nuploads; k++)
			spoolfs_redact(d->uploads[k].path, cfg);
	}
}
