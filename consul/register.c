/*
 * register.c — the service registration and its TTL check (consul/register.h).
 */
#include "consul/register.h"

#include <jansson.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/utf8.h"
#include "consul/client.h"
#include "common/banned.h"

#define POLL_MS 1000
#define RETRY_MAX_MS 10000
#define OUTPUT_MAX 1024 /* of the check's output: the first problem is enough */
#define ESC_MAX (3 * (CONSUL_ID_MAX + 8) + 1) /* a check ID, percent-encoded */
/*
 * Why the request under way is abandoned: the thread stops, or the service
 * leaves and an update or a registration stands between it and the
 * deregistration. The thread clears CANCEL_LEAVE before deregistering, so
 * only a stop abandons that.
 */
#define CANCEL_STOP 1
#define CANCEL_LEAVE 2

struct consul_reg {
	const struct cfg_consul *cfg;
	struct consul_client *cl;
	char id[CONSUL_ID_MAX], name[CONSUL_ID_MAX], address[256];
	int port;
	char check_id[CONSUL_ID_MAX + 8];
	char id_path[ESC_MAX + 64], check_path[ESC_MAX + 64]; /* escaped, for the URL */
	consul_health_fn health;
	void *ctx;
	struct consul_stop stop;
	atomic_int leave;          /* deregister now */
	atomic_int cancel;         /* CANCEL_*: abandon the request under way (the client's abort flag) */
	bool registered;           /* the agent has it, as far as we know */
	bool tried;                /* a registration was sent (it may have landed unanswered) */
	bool gone;                 /* deregistered: nothing more to do */
	bool dereg_warned;         /* a failed deregistration was logged (WARN once) */
	int forgot;                /* check updates in a row answered "unknown check" */
	pthread_t thread;
	bool started;
	char last_err[300];        /* the last error logged, to log each once */
};

const char *consul_check_name(enum consul_check c)
{
	return c == CONSUL_PASSING ? "passing" : c == CONSUL_WARNING ? "warning" : "critical";
}

static void note_error(struct consul_reg *r, const char *what, const char *why)
{
	if (strcmp(r->last_err, why) == 0)
		return;
	snprintf(r->last_err, sizeof(r->last_err), "%s", why);
	log_warn("consul", what, "agent=%s service_id=\"%s\" error=\"%s\"", consul_client_addr(r->cl),
		 r->id, why);
}

static char *registration(const struct consul_reg *r)
{
	char ttl[32], dereg[32];
	const struct cfg_consul *c = r->cfg;
	snprintf(ttl, sizeof(ttl), "%lldms", (long long)c->check_ttl_ms);
	json_t *check = json_pack("{s:s, s:s, s:s, s:s, s:s}", "CheckID", r->check_id, "Name",
				  "litevisor health", "TTL", ttl, "Status", "critical", "Notes",
				  "driven by litevisor from its /healthz; critical until the service is ready");
	json_t *svc = json_pack("{s:s, s:s}", "ID", r->id, "Name", r->name);
	json_t *tags = json_array(), *meta = json_object();
	char *out = NULL;
	if (!check || !svc || !tags || !meta)
		goto out;
	if (c->deregister_after_ms) {
		snprintf(dereg, sizeof(dereg), "%lldms", (long long)c->deregister_after_ms);
		json_object_set_new(check, "DeregisterCriticalServiceAfter", json_string(dereg));
	}
	for (char **t = c->service_tags; t && *t; t++)
		json_array_append_new(tags, json_string(*t));
	for (char **m = c->service_meta; m && m[0] && m[1]; m += 2)
		json_object_set_new(meta, m[0], json_string(m[1]));
	if (json_array_size(tags))
		json_object_set(svc, "Tags", tags);
	if (json_object_size(meta))
		json_object_set(svc, "Meta", meta);
	if (r->address[0])
		json_object_set_new(svc, "Address", json_string(r->address));
	if (r->port)
		json_object_set_new(svc, "Port", json_integer(r->port));
	json_object_set(svc, "Check", check);
	out = json_dumps(svc, JSON_COMPACT);
out:
	json_decref(check);
	json_decref(svc);
	json_decref(tags);
	json_decref(meta);
	return out;
}

/*
 * The request under way was cut on purpose. The cancel bits are set before the
 * interrupt that shuts its socket, leave only after it (consul_reg_leave), so a
 * call failing from the interrupt must be judged by them: libcurl may even have
 * tried a fresh connection, refused, and said "Couldn't connect" (seen in CI).
 */
static bool abandoned(struct consul_reg *r)
{
	return atomic_load(&r->cancel) != 0 || atomic_load(&r->leave);
}

static int do_register(struct consul_reg *r)
{
	char err[256], why[300];
	struct consul_reply rep;
	char *body = registration(r);
	r->tried = true;
	if (!body) {
		note_error(r, "cannot register the service", "out of memory");
		return -1;
	}
	int rc = consul_call(r->cl, "PUT", "/v1/agent/service/register?replace-existing-checks=true",
			     body, r->cfg->timeout_ms, &rep, err, sizeof(err));
	free(body);
	if (rc < 0 && abandoned(r)) {
		rc = -1; /* abandoned for the deregistration or the stop: nothing to say */
	} else if (rc == 0 && rep.status == 200) {
		/* forgotten again and again: that was said once (update) */
		if (r->forgot < 2)
			log_info("consul", "service registered", "agent=%s service=\"%s\" service_id=\"%s\" check_id=\"%s\"",
				 consul_client_addr(r->cl), r->name, r->id, r->check_id);
		r->registered = true;
		r->last_err[0] = '\0';
	} else {
		consul_call_error(rc, &rep, err, why, sizeof(why));
		note_error(r, "cannot register the service; trying again", why);
		rc = -1;
	}
	consul_reply_release(&rep);
	return rc;
}

/*
 * 0 updated; -1 failed; -2 the agent does not know the check (r->forgot
 * counts those in a row: the first is logged, and the second, once).
 */
static int update(struct consul_reg *r, enum consul_check st, const char *output)
{
	char err[256], why[300];
	struct consul_reply rep;
	/* /healthz's text may quote a server's non-UTF-8 bytes; jansson refuses those */
	char text[OUTPUT_MAX];
	utf8_repair(output, text, sizeof(text));
	json_t *j = json_pack("{s:s, s:s}", "Status", consul_check_name(st), "Output", text);
	char *body = j ? json_dumps(j, JSON_COMPACT) : NULL;
	json_decref(j);
	if (!body) {
		note_error(r, "cannot update the check", "out of memory");
		return -1;
	}
	int rc = consul_call(r->cl, "PUT", r->check_path, body, r->cfg->timeout_ms, &rep, err, sizeof(err));
	free(body);
	if (rc < 0 && abandoned(r)) {
		rc = -1; /* abandoned for the deregistration or the stop: nothing to say */
	} else if (rc == 0 && rep.status == 200) {
		r->last_err[0] = '\0';
		r->forgot = 0;
	} else {
		consul_call_error(rc, &rep, err, why, sizeof(why));
		/*
		 * agent/acl.go: an unknown check is a 404 (an agent restarted without its
		 * data); older agents answered 500 "Unknown check" or, from
		 * updateTTLCheck, "... does not have associated TTL"
		 */
		if (rc == 0 && (rep.status == 404 ||
				(rep.status == 500 && (strstr(rep.body, "Unknown check") ||
						       strstr(rep.body, "does not have associated TTL"))))) {
			if (r->forgot == 0)
				log_warn("consul", "the agent no longer knows the check; registering again",
					 "service_id=\"%s\" error=\"%s\"", r->id, why);
			else if (r->forgot == 1)
				log_warn("consul", "the agent forgot the check again right after its registration "
					 "(several agents behind one address?); registering again after a pause, "
					 "up to 10s", "agent=%s service_id=\"%s\" error=\"%s\"",
					 consul_client_addr(r->cl), r->id, why);
			r->forgot++;
			r->registered = false;
			rc = -2;
		} else {
			note_error(r, "cannot update the check; trying again", why);
			rc = -1;
		}
	}
	consul_reply_release(&rep);
	return rc;
}

/*
 * in_thread: the registration thread's, which the stop's halt may cut (its
 * cancel bit set before the interrupt): that is no failure to warn of, and
 * the stop's own last try, after the thread, says how the deregistration went.
 */
static int deregister(struct consul_reg *r, int64_t timeout_ms, bool in_thread)
{
	char err[256], why[300];
	struct consul_reply rep;
	int rc = consul_call(r->cl, "PUT", r->id_path, NULL, timeout_ms, &rep, err, sizeof(err));
	/* 404 (older agents: 500 "Unknown service"): it has it no more (its reaper, or never
	 * registered): the same outcome */
	if (rc < 0 && in_thread && (atomic_load(&r->cancel) & CANCEL_STOP)) {
		rc = -1; /* cut by the stop: its last try comes next */
	} else if (rc == 0 && (rep.status == 200 || rep.status == 404 ||
			       (rep.status == 500 && strstr(rep.body, "Unknown service")))) {
		log_info("consul", "service deregistered", "service_id=\"%s\"", r->id);
		r->gone = true;
	} else {
		consul_call_error(rc, &rep, err, why, sizeof(why));
		/* once: the stop's last try after the thread's would say it again (QA110 O4) */
		log_event(r->dereg_warned ? LOG_DEBUG : LOG_WARN, "consul", "cannot deregister the "
			  "service; the agent removes it after deregister-critical-after",
			  "service_id=\"%s\" error=\"%s\"", r->id, why);
		r->dereg_warned = true;
		rc = -1;
	}
	consul_reply_release(&rep);
	return rc;
}

static void *reg_main(void *arg)
{
	struct consul_reg *r = arg;
	int64_t backoff = POLL_MS, last_update = 0;
	int last_status = -1;
	char last_output[OUTPUT_MAX] = "";
	while (!atomic_load(&r->stop.flag)) {
		int64_t wait = POLL_MS;
		/* before leave: consul_reg_leave's wake after this look ends the nap below (QA172 D2) */
		unsigned seen = consul_stop_wakes(&r->stop);
		bool leaving = atomic_load(&r->leave);
		if (leaving) {
			atomic_fetch_and(&r->cancel, ~CANCEL_LEAVE);
			if (!atomic_load(&r->stop.flag))
				consul_client_interrupt(r->cl, false); /* set before leave (consul_reg_leave) */
			if (!r->gone && deregister(r, r->cfg->timeout_ms, true) < 0) {
				wait = backoff;
				backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
			} else if (r->gone) {
				wait = 3600 * 1000;
			}
		} else if (!r->registered) {
			if (do_register(r) < 0) {
				wait = backoff;
				backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
			} else {
				if (!r->forgot)
					backoff = POLL_MS;
				last_status = -1;
				continue;
			}
		} else {
			char output[OUTPUT_MAX] = "";
			enum consul_check st = r->health(r->ctx, output, sizeof(output));
			int64_t now = clock_mono_ms();
			if ((int)st != last_status || strcmp(output, last_output) != 0 ||
			    now - last_update >= r->cfg->check_ttl_ms / 3) {
				int rc = update(r, st, output);
				if (rc == 0) {
					if ((int)st != last_status)
						log_info("consul", "check status", "check_id=\"%s\" status=%s",
							 r->check_id, consul_check_name(st));
					last_status = (int)st;
					snprintf(last_output, sizeof(last_output), "%s", output);
					last_update = now;
					backoff = POLL_MS;
				} else if (rc == -2 && r->forgot == 1) {
					/* an agent restarted without its data: register again now */
					continue;
				} else {
					/*
					 * the agent is away, or forgets the check as soon as it is
					 * registered: not a request every few milliseconds
					 */
					wait = backoff;
					backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
					goto nap;
				}
			}
			/* look each second, but never miss the third of the TTL by that second */
			int64_t due = last_update + r->cfg->check_ttl_ms / 3 - clock_mono_ms();
			if (due < wait)
				wait = due > 10 ? due : 10;
		}
nap:
		/* a leave during this round's request woke no nap: deregister now */
		if (!leaving && atomic_load(&r->leave))
			continue;
		if (consul_stop_nap_since(&r->stop, wait, seen))
			break;
	}
	return NULL;
}

struct consul_reg *consul_reg_start(const struct cfg_consul *cfg, const struct consul_service *svc,
				    consul_health_fn health, void *ctx, char *err, size_t errlen)
{
	struct consul_reg *r = calloc(1, sizeof(*r));
	char esc[ESC_MAX];
	if (!r) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	r->cfg = cfg;
	r->health = health;
	r->ctx = ctx;
	r->port = svc->port;
	consul_stop_init(&r->stop);
	if (strlen(svc->id) >= sizeof(r->id) || strlen(svc->name) >= sizeof(r->name) ||
	    (svc->address && strlen(svc->address) >= sizeof(r->address))) {
		/* cut, two instances could share one entry and deregister each other */
		snprintf(err, errlen, "service ID, name or address too long");
		goto fail;
	}
	snprintf(r->id, sizeof(r->id), "%s", svc->id);
	snprintf(r->name, sizeof(r->name), "%s", svc->name);
	snprintf(r->address, sizeof(r->address), "%s", svc->address ? svc->address : "");
	/* the ID Consul gives a service's single check when none is named (agent/structs) */
	snprintf(r->check_id, sizeof(r->check_id), "service:%s", r->id);
	if (consul_escape(r->id, false, esc, sizeof(esc)) < 0) {
		snprintf(err, errlen, "service ID too long");
		goto fail;
	}
	snprintf(r->id_path, sizeof(r->id_path), "/v1/agent/service/deregister/%s", esc);
	if (consul_escape(r->check_id, false, esc, sizeof(esc)) < 0) {
		snprintf(err, errlen, "service ID too long");
		goto fail;
	}
	snprintf(r->check_path, sizeof(r->check_path), "/v1/agent/check/update/%s", esc);
	if (!(r->cl = consul_client_new(cfg, err, errlen)))
		goto fail;
	consul_client_abort_on(r->cl, &r->cancel);
	int rc = pthread_create(&r->thread, NULL, reg_main, r);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start thread: %s", strerror(rc));
		goto fail;
	}
	r->started = true;
	return r;
fail:
	consul_reg_stop(r, 0);
	return NULL;
}

void consul_reg_leave(struct consul_reg *r)
{
	/* once: again, it would cut the deregistration it started (the interrupt) */
	if (!r || !r->started || atomic_load(&r->leave))
		return;
	/*
	 * now rather than at its next second or the end of an update under way:
	 * the stop sequence has begun, clients must stop being sent here. The
	 * cancel first, so the call the interrupt cuts is known as abandoned; then
	 * leave: the thread clears the cancel and the interrupt once it sees leave,
	 * before it deregisters, so neither aborts the deregistration itself.
	 */
	atomic_fetch_or(&r->cancel, CANCEL_LEAVE);
	consul_client_interrupt(r->cl, true); /* a slow agent's update: not a second more (QA142 D4) */
	atomic_store(&r->leave, 1);
	consul_stop_wake(&r->stop);
}

void consul_reg_halt(struct consul_reg *r)
{
	if (r && r->started) {
		atomic_fetch_or(&r->cancel, CANCEL_STOP);
		consul_stop_request(&r->stop);
		consul_client_interrupt(r->cl, true);
	}
}

void consul_reg_stop(struct consul_reg *r, int64_t budget_ms)
{
	if (!r)
		return;
	if (r->started) {
		consul_reg_halt(r);
		pthread_join(r->thread, NULL);
		consul_client_interrupt(r->cl, false);
	}
	if (r->cl && r->tried && !r->gone && budget_ms > 0) {
		consul_client_abort_on(r->cl, NULL);
		deregister(r, budget_ms, false);
	} else if (r->cl && r->tried && !r->gone && !r->dereg_warned) {
		/* the thread's try, cut by the halt, said nothing: this was to be the last word */
		log_warn("consul", "cannot deregister the service: no time left in the stop to try "
			 "again; the agent removes it after deregister-critical-after",
			 "service_id=\"%s\"", r->id);
	}
	consul_client_free(r->cl);
	consul_stop_destroy(&r->stop);
	free(r);
}
