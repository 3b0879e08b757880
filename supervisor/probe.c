/* probe.c — the service's readiness probe thread (see probe.h). */
#include "supervisor/probe.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "common/clock.h"
#include "common/lazy_curl.h"
#include "common/log.h"
#include "common/version.h"
#include "common/banned.h"

struct probe {
	const struct cfg_health *h;
	struct sup_state *st;
	struct probe_worker k;
};

int probe_waiter_init(struct probe_waiter *w)
{
	pthread_condattr_t a;
	w->stop = 0;
	if (pthread_mutex_init(&w->lock, NULL) != 0)
		return -1;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	int rc = pthread_cond_init(&w->cond, &a);
	pthread_condattr_destroy(&a);
	if (rc != 0) {
		pthread_mutex_destroy(&w->lock);
		return -1;
	}
	return 0;
}

void probe_waiter_destroy(struct probe_waiter *w)
{
	pthread_cond_destroy(&w->cond);
	pthread_mutex_destroy(&w->lock);
}

int probe_waiter_wait(struct probe_waiter *w, int64_t ms)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = (int64_t)ts.tv_nsec + (ms % 1000) * NS_PER_MS;
	ts.tv_sec += (time_t)(ms / 1000 + ns / NS_PER_SEC);
	ts.tv_nsec = (long)(ns % NS_PER_SEC);
	pthread_mutex_lock(&w->lock);
	while (!w->stop) {
		if (pthread_cond_timedwait(&w->cond, &w->lock, &ts) == ETIMEDOUT)
			break;
	}
	int stop = w->stop;
	pthread_mutex_unlock(&w->lock);
	return stop;
}

void probe_waiter_stop(struct probe_waiter *w)
{
	pthread_mutex_lock(&w->lock);
	w->stop = 1;
	pthread_cond_broadcast(&w->cond);
	pthread_mutex_unlock(&w->lock);
}

static size_t discard(char *ptr, size_t size, size_t n, void *ctx)
{
	return size * n;
}

long probe_http_get(void *curl, const char *url, int64_t timeout_ms, bool skip_verify, char *err,
		    size_t errlen)
{
	CURL *c = curl;
	char ebuf[CURL_ERROR_SIZE] = "";
	long code = 0;
	curl_easy_setopt(c, CURLOPT_URL, url);
	curl_easy_setopt(c, CURLOPT_HTTPGET, 1L);
	curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
	lazy_curl_defaults(c);
	curl_easy_setopt(c, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, discard);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(c, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYPEER, skip_verify ? 0L : 1L);
	curl_easy_setopt(c, CURLOPT_SSL_VERIFYHOST, skip_verify ? 0L : 2L);
	char ua[96];
	snprintf(ua, sizeof(ua), "litevisor/%s", litevisor_version());
	curl_easy_setopt(c, CURLOPT_USERAGENT, ua);
	CURLcode rc = curl_easy_perform(c);
	curl_easy_setopt(c, CURLOPT_ERRORBUFFER, NULL);
	if (rc != CURLE_OK) {
		/* curl's message may quote the URL (and so a push token): keep the code's text. */
		snprintf(err, errlen, "%s", curl_easy_strerror(rc));
		return -1;
	}
	curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &code);
	return code;
}

static void *probe_main(void *arg)
{
	struct probe *p = arg;
	enum sup_probe last = SUP_PROBE_UNKNOWN;
	int64_t fast = p->h->probe_interval_ms < 1000 ? p->h->probe_interval_ms : 1000;
	int64_t wait_ms = fast;
	while (!probe_waiter_wait(&p->k.w, wait_ms)) {
		struct sup_snapshot s;
		sup_state_get(p->st, &s);
		if (s.service_pid <= 0) {
			wait_ms = fast;
			continue;
		}
		char err[256] = "";
		int64_t t0 = clock_mono_ms();
		long code = probe_http_get(p->k.curl, p->h->probe_url, p->h->probe_timeout_ms,
					   p->h->probe_skip_verify, err, sizeof(err));
		int64_t took = clock_mono_ms() - t0;
		enum sup_probe now = code >= 200 && code < 300 ? SUP_PROBE_OK : SUP_PROBE_FAIL;
		if (code > 0 && now == SUP_PROBE_FAIL)
			snprintf(err, sizeof(err), "HTTP %ld", code);
		/* dropped if the service exited or restarted meanwhile: no stale pass */
		sup_state_set_probe(p->st, s.service_pid, now, took, now == SUP_PROBE_OK ? "" : err);
		/*
		 * Judged after the probe: the stop's TERM, forwarded before the phase
		 * says stopping, made a service that closes its listener first fail
		 * it, a WARN at every graceful stop (QA172 D3).
		 */
		struct sup_snapshot after;
		sup_state_get(p->st, &after);
		bool stopping = after.phase == SUP_STOPPING || after.phase == SUP_EXITING ||
				after.service_pid != s.service_pid;
		if (now != last)
			log_event(now == SUP_PROBE_OK ? LOG_INFO : stopping ? LOG_DEBUG : LOG_WARN, "probe",
				  now == SUP_PROBE_OK ? "service probe passes" : "service probe fails",
				  "duration_ms=%lld error=\"%s\"", (long long)took, err);
		last = now;
		wait_ms = now == SUP_PROBE_OK ? p->h->probe_interval_ms : fast;
	}
	return NULL;
}

int probe_worker_start(struct probe_worker *k, const char *component, void *(*fn)(void *),
		       void *arg)
{
	if (probe_waiter_init(&k->w) < 0) {
		log_error(component, "out of memory", NULL);
		return -1;
	}
	char why[512];
	if (lazy_curl_load(why, sizeof(why)) < 0) {
		log_error(component, "cannot use libcurl", "error=\"%s\"", why);
		goto fail;
	}
	if (!(k->curl = curl_easy_init())) {
		log_error(component, "curl_easy_init failed", NULL);
		goto fail;
	}
	int rc = pthread_create(&k->thread, NULL, fn, arg);
	if (rc != 0) {
		log_error(component, "cannot start thread", "error=\"%s\"", strerror(rc));
		goto fail;
	}
	return 0;
fail:
	if (k->curl)
		curl_easy_cleanup(k->curl);
	k->curl = NULL;
	probe_waiter_destroy(&k->w);
	return -1;
}

void probe_worker_stop(struct probe_worker *k)
{
	probe_waiter_stop(&k->w);
	pthread_join(k->thread, NULL);
	curl_easy_cleanup(k->curl);
	probe_waiter_destroy(&k->w);
}

struct probe *probe_start(const struct cfg_health *h, struct sup_state *st)
{
	struct probe *p = calloc(1, sizeof(*p));
	if (!p) {
		log_error("probe", "out of memory", NULL);
		return NULL;
	}
	p->h = h;
	p->st = st;
	sup_state_set_probe(st, 0, SUP_PROBE_UNKNOWN, 0, "not probed yet");
	if (probe_worker_start(&p->k, "probe", probe_main, p) < 0) {
		sup_state_set_probe(st, 0, SUP_PROBE_NONE, 0, "");
		free(p);
		return NULL;
	}
	return p;
}

void probe_stop(struct probe *p)
{
	if (!p)
		return;
	probe_worker_stop(&p->k);
	free(p);
}
