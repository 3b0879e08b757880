/* push.c — Uptime-Kuma push heartbeat (see push.h). */
#include "supervisor/push.h"

#include <curl/curl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "supervisor/health.h"
#include "supervisor/probe.h"
#include "common/banned.h"

#define PUSH_TIMEOUT_MS 10000

struct push {
	const struct config *cfg;
	const struct cfg_health *h;
	struct sup_state *st;
	bool service;                /* false: `replicate`, replication alone */
	push_status_fn status;
	void *status_ctx;
	struct probe_worker k;
};

/* Percent-encode everything but RFC 3986 unreserved characters. */
static int encode(const char *s, char *out, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (; *s; s++) {
		unsigned char c = (unsigned char)*s;
		bool plain = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			     (c >= '0' && c <= '9') || c == '-' || c == '_' || c == '.' || c == '~';
		if (o + (plain ? 1 : 3) >= len)
			return -1;
		if (plain) {
			out[o++] = (char)c;
		} else {
			out[o++] = '%';
			out[o++] = hex[c >> 4];
			out[o++] = hex[c & 15];
		}
	}
	out[o] = '\0';
	return 0;
}

/* Is the query parameter starting at p (up to '&' or the end) one of ours? */
static bool our_param(const char *p)
{
	static const char *const keys[] = { "status", "msg", "ping" };
	size_t k = strcspn(p, "=&");
	for (size_t i = 0; i < sizeof(keys) / sizeof(keys[0]); i++)
		if (k == strlen(keys[i]) && strncmp(p, keys[i], k) == 0)
			return true;
	return false;
}

int push_url(const char *base, bool up, const char *msg, long long ping_ms, char *buf,
	     size_t len)
{
	char emsg[768];
	if (encode(msg, emsg, sizeof(emsg)) < 0)
		return -1;
	char ping[32] = "";
	if (ping_ms >= 0)
		snprintf(ping, sizeof(ping), "%lld", ping_ms);
	/* the base up to its query, then the parameters that are not ours */
	const char *q = strchr(base, '?');
	size_t o = q ? (size_t)(q - base) : strlen(base);
	if (o >= len)
		return -1;
	memcpy(buf, base, o);
	char sep = '?';
	for (const char *p = q ? q + 1 : NULL; p && *p; p += strcspn(p, "&"), p += *p == '&') {
		size_t n = strcspn(p, "&");
		if (n == 0 || our_param(p))
			continue;
		if (o + 1 + n >= len)
			return -1;
		buf[o++] = sep;
		memcpy(buf + o, p, n);
		o += n;
		sep = '&';
	}
	int n = snprintf(buf + o, len - o, "%cstatus=%s&msg=%s&ping=%s", sep, up ? "up" : "down",
			 emsg, ping);
	return n < 0 || (size_t)n >= len - o ? -1 : 0;
}

/*
 * What /healthz says of replication, for a ready service: false with its
 * output in why when it warns or fails (*up false then), true when it passes
 * or cannot be known.
 */
static bool replication_health(struct push *p, const struct sup_snapshot *s, bool *up, char *why,
			       size_t whylen)
{
	struct engine_status es;
	if (!p->status)
		return true;
	memset(&es, 0, sizeof(es));
	if (p->status(p->status_ctx, &es) != 0)
		return true;
	struct health_view v = { s, &es, p->cfg, clock_wall_ns(), clock_mono_ns(),
				 !p->service };
	enum health_status hs = health_overall(&v, why, whylen);
	engine_status_release(&es);
	if (hs == HEALTH_FAIL)
		*up = false;
	return hs == HEALTH_PASS;
}

static void *push_main(void *arg)
{
	struct push *p = arg;
	int last_ok = -1;
	int64_t ready_start = 0; /* the service start since which it has been ready once */
	do {
		struct sup_snapshot s;
		char why[256] = "", url[4096], err[256] = "";
		sup_state_get(p->st, &s);
		if (s.phase != SUP_RUNNING && s.phase != SUP_BACKOFF)
			continue; /* starting, restoring, stopping: no alert for a deploy */
		bool up = !p->service || health_ready(&s, why, sizeof(why));
		if (up)
			ready_start = s.service_started_wall_ns;
		/* a service still coming up (radarr answers /ping after a while) is no alert either */
		if (!up && s.phase == SUP_RUNNING && ready_start != s.service_started_wall_ns)
			continue;
		const char *msg = up ? "OK" : why;
		if (up && !replication_health(p, &s, &up, why, sizeof(why)))
			msg = why;
		long long ping = s.probe == SUP_PROBE_OK ? (long long)s.probe_latency_ms : -1;
		if (push_url(p->h->push_url, up, msg, ping, url, sizeof(url)) < 0) {
			log_error("push", "push URL too long", NULL);
			break;
		}
		int64_t timeout = p->h->push_interval_ms < PUSH_TIMEOUT_MS ? p->h->push_interval_ms
									    : PUSH_TIMEOUT_MS;
		long code = probe_http_get(p->k.curl, url, timeout, false, err, sizeof(err));
		int ok = code >= 200 && code < 300;
		if (code > 0 && !ok)
			snprintf(err, sizeof(err), "HTTP %ld", code);
		if (ok != last_ok)
			log_event(ok ? LOG_DEBUG : LOG_WARN, "push",
				  ok ? "Uptime-Kuma push delivered" : "Uptime-Kuma push failed",
				  "status=%s error=\"%s\"", up ? "up" : "down", err);
		last_ok = ok;
	} while (!probe_waiter_wait(&p->k.w, p->h->push_interval_ms));
	return NULL;
}

struct push *push_start(const struct config *cfg, struct sup_state *st, bool service,
			push_status_fn status, void *ctx)
{
	struct push *p = calloc(1, sizeof(*p));
	if (!p) {
		log_error("push", "out of memory", NULL);
		return NULL;
	}
	p->cfg = cfg;
	p->h = &cfg->health;
	p->st = st;
	p->service = service;
	p->status = status;
	p->status_ctx = ctx;
	if (probe_worker_start(&p->k, "push", push_main, p) < 0) {
		free(p);
		return NULL;
	}
	return p;
}

void push_stop(struct push *p)
{
	if (!p)
		return;
	probe_worker_stop(&p->k);
	free(p);
}
