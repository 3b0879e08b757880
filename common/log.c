/* log.c — text and JSON log lines on stderr, one write(2) per event. */
#include "common/log.h"

#include <poll.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/utf8.h"
#include "common/banned.h"

#define LOG_LINE_MAX 4096
/*
 * How long a line waits for room in a full stderr pipe (a log collector that
 * stopped reading) before it is dropped, counted, and reported with the next
 * line that goes through. Once one was dropped, lines do not wait until one
 * goes through again. Forwarding a TERM, the stop deadlines and the final
 * flush all log: none may hang on the reader of our stderr.
 */
#define LOG_WAIT_MS 100

static _Atomic unsigned long dropped;

static _Atomic int min_level = LOG_INFO;
static _Atomic bool json_mode = false;

static const char *const level_names[] = { "DEBUG", "INFO", "WARN", "ERROR" };

void log_configure(enum log_level level, bool json)
{
	atomic_store(&min_level, (int)level);
	atomic_store(&json_mode, json);
}

int log_parse_level(const char *s, enum log_level *out)
{
	static const struct { const char *name; enum log_level level; } names[] = {
		{ "debug", LOG_DEBUG }, { "info", LOG_INFO }, { "warn", LOG_WARN },
		{ "warning", LOG_WARN }, { "error", LOG_ERROR },
	};
	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		if (strcasecmp(s, names[i].name) == 0) {
			*out = names[i].level;
			return 0;
		}
	}
	return -1;
}

bool log_enabled(enum log_level level)
{
	return (int)level >= atomic_load(&min_level);
}

/* Bounded appender: never writes past the end, remembers truncation. */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
};

static void emit(struct line *l);

static void put(struct line *l, const char *s, size_t n)
{
	size_t room = sizeof(l->buf) - 2 - l->len; /* keep room for "\n\0" */
	if (n > room)
		n = room;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void puts_(struct line *l, const char *s) { put(l, s, strlen(s)); }

/* Append s as the inside of a JSON string (n bytes). */
static void put_json(struct line *l, const char *s, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		char esc[8];
		if (c == '"' || c == '\\') {
			esc[0] = '\\';
			esc[1] = (char)c;
			put(l, esc, 2);
		} else if (c == '\n') {
			put(l, "\\n", 2);
		} else if (c == '\t') {
			put(l, "\\t", 2);
		} else if (c < 0x20) {
			snprintf(esc, sizeof(esc), "\\u%04x", c);
			put(l, esc, 6);
		} else {
			put(l, (const char *)&c, 1);
		}
	}
}

/*
 * Turn "k=v k2=\"a b\"" into ,"k":"v","k2":"a b". A token without '=' is
 * kept under the key "context" so nothing is lost.
 */
static void put_json_kv(struct line *l, const char *kv)
{
	const char *p = kv;
	while (*p) {
		while (*p == ' ')
			p++;
		if (!*p)
			break;
		const char *k = p;
		while (*p && *p != '=' && *p != ' ')
			p++;
		if (*p != '=') {
			puts_(l, ",\"context\":\"");
			put_json(l, k, (size_t)(p - k));
			puts_(l, "\"");
			continue;
		}
		size_t klen = (size_t)(p - k);
		p++;
		puts_(l, ",\"");
		put_json(l, k, klen);
		puts_(l, "\":\"");
		if (*p == '"') {
			p++;
			while (*p && !(*p == '"' && (p[1] == ' ' || p[1] == '\0'))) {
				if (*p == '\\' && p[1] == '"')
					p++;
				put_json(l, p, 1);
				p++;
			}
			if (*p == '"')
				p++;
		} else {
			const char *v = p;
			while (*p && *p != ' ')
				p++;
			put_json(l, v, (size_t)(p - v));
		}
		puts_(l, "\"");
	}
}

/* A token that is not key=value: no '=' before the next space. */
static bool bare_word(const char *p)
{
	for (; *p && *p != ' '; p++)
		if (*p == '=')
			return false;
	return true;
}

/*
 * Copy kv to out (cap bytes), quoting the values a bare %s spread over
 * several words: "db=my app n=1" becomes "db=\"my app\" n=1". Words without
 * '=' that follow an unquoted value are that value's; a quoted value is
 * copied as it is. A name holding '=' still reads ambiguously: rare enough.
 */
static void kv_normalise(const char *in, char *out, size_t cap)
{
	size_t o = 0;
#define OUT(c) do { if (o + 1 < cap) out[o++] = (c); } while (0)
	const char *p = in;
	while (*p) {
		if (*p == ' ') {
			OUT(*p++);
			continue;
		}
		const char *eq = p;
		while (*eq && *eq != '=' && *eq != ' ')
			eq++;
		if (*eq != '=' || eq[1] == '"') {
			/* a lone word, or key="quoted": up to the closing quote */
			const char *e = eq;
			if (*eq == '=') {
				e = eq + 2;
				while (*e && !(*e == '"' && (e[1] == ' ' || e[1] == '\0')))
					e += (*e == '\\' && e[1] == '"') ? 2 : 1;
				if (*e == '"')
					e++;
			}
			while (p < e)
				OUT(*p++);
			continue;
		}
		/* key=bare value, and the bare words that follow it */
		const char *v = eq + 1, *end = v;
		while (*end && *end != ' ')
			end++;
		for (;;) {
			const char *q = end;
			while (*q == ' ')
				q++;
			if (!*q || !bare_word(q))
				break;
			while (*q && *q != ' ')
				q++;
			end = q;
		}
		bool spread = memchr(v, ' ', (size_t)(end - v)) != NULL;
		while (p <= eq)
			OUT(*p++);
		if (spread)
			OUT('"');
		for (; p < end; p++) {
			if (spread && *p == '"')
				OUT('\\');
			OUT(*p);
		}
		if (spread)
			OUT('"');
	}
	out[o] = '\0';
#undef OUT
}

void log_eventv(enum log_level level, const char *component, const char *msg,
		const char *kvfmt, va_list ap)
{
	struct line l = { .len = 0 };
	char ts[40], kv[LOG_LINE_MAX / 2] = "";

	if (!log_enabled(level))
		return;
	clock_rfc3339(clock_wall_ns(), ts, sizeof(ts));
	if (kvfmt) {
		char raw[sizeof(kv)], clean[sizeof(kv)];
		vsnprintf(raw, sizeof(raw), kvfmt, ap);
		/* a server's Latin-1 message, or text cut mid-character: never an invalid line */
		utf8_repair(raw, clean, sizeof(clean));
		kv_normalise(clean, kv, sizeof(kv));
	}

	if (atomic_load(&json_mode)) {
		puts_(&l, "{\"time\":\"");
		puts_(&l, ts);
		puts_(&l, "\",\"level\":\"");
		puts_(&l, level_names[level]);
		puts_(&l, "\",\"component\":\"");
		put_json(&l, component, strlen(component));
		puts_(&l, "\",\"msg\":\"");
		put_json(&l, msg, strlen(msg));
		puts_(&l, "\"");
		put_json_kv(&l, kv);
		puts_(&l, "}");
	} else {
		char head[96];
		int n = snprintf(head, sizeof(head), "%s %-5s %s: ", ts, level_names[level], component);
		put(&l, head, n > 0 ? (size_t)n : 0);
		puts_(&l, msg);
		if (kv[0]) {
			puts_(&l, " ");
			/* one line per event: fold any newline a message carried in */
			for (char *c = kv; *c; c++)
				if (*c == '\n')
					*c = ' ';
			puts_(&l, kv);
		}
	}
	l.buf[l.len++] = '\n';
	emit(&l);
}

/* Room for a line of at most PIPE_BUF bytes within the wait, else false. */
static bool room(void)
{
	struct pollfd p = { .fd = STDERR_FILENO, .events = POLLOUT };
	int r = poll(&p, 1, atomic_load(&dropped) ? 0 : LOG_WAIT_MS);
	return r != 0; /* an error (no stderr) is for write(2) to find */
}

static void emit(struct line *l)
{
	if (!room()) {
		atomic_fetch_add(&dropped, 1);
		return;
	}
	unsigned long lost = atomic_exchange(&dropped, 0);
	if (lost) {
		char note[160];
		int n = snprintf(note, sizeof(note), "log: %lu line(s) dropped: stderr was not being "
				 "read (a full pipe)\n", lost);
		if (n > 0 && write(STDERR_FILENO, note, (size_t)n) < 0)
			return;
		if (!room()) {
			atomic_fetch_add(&dropped, 1);
			return;
		}
	}
	/* one write per line; a short write to a pipe of < PIPE_BUF is atomic */
	for (size_t off = 0; off < l->len;) {
		ssize_t w = write(STDERR_FILENO, l->buf + off, l->len - off);
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

void log_event(enum log_level level, const char *component, const char *msg,
	       const char *kvfmt, ...)
{
	va_list ap;
	va_start(ap, kvfmt);
	log_eventv(level, component, msg, kvfmt, ap);
	va_end(ap);
}
