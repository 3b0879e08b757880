/*
 * lock.c — the single-writer lock's thread (consul/lock.h).
 */
#include "consul/lock.h"

#include <errno.h>
#include <jansson.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/duration.h"
#include "common/log.h"
#include "common/utf8.h"
#include "consul/client.h"
#include "common/banned.h"

#define RETRY_MS 1000       /* after a failed request, and while a lock delay lasts */
#define RETRY_MAX_MS 5000
#define PACE_MS 1000        /* blocking queries: one a second on average (pace()) */
#define PACE_BURST 2        /* and two at once */

struct consul_lock {
	const struct cfg_consul *cfg;
	struct consul_client *cl;
	char holder[256];
	char *value;               /* what the key holds while ours (holder, pid, since), or NULL */
	char key[3 * CFG_CONSUL_KEY_MAX + 1]; /* the key, escaped for a URL path */
	char session[64];          /* our session's ID, "" when none */
	int64_t ttl_ms;            /* the session's TTL, as Consul last gave it */
	int64_t renewed;           /* mono ms of the last successful create or renew */
	int64_t look_failing;      /* held: mono ms of the first failed read of the key in a run
				    * of them, 0 when the last read worked */
	int64_t latency_ms;        /* held: how long the agent took to answer the last renewal
				    * (the acquire, until one) */
	bool too_slow;             /* held: the agent leaves no time to watch the key (logged once) */
	uint64_t index;            /* of the key, for blocking queries */
	int64_t credit, credit_at; /* the blocking queries' token bucket, in ms (pace()) */
	bool held;                 /* from acquisition on: no request may outlast the lease */
	bool unclean;              /* taken from a holder that did not release it after its final
				    * flush (or from a key whose history is unknown); under mu */
	bool undelayed;            /* ... with no lock delay first (set once held) */
	bool warned;               /* held: a failed renewal was logged (once per run of them) */
	int64_t give_up;           /* mono ms: the end of consul.lock.wait while waiting, 0 = none */
	int efd;
	pthread_t thread;
	bool started;
	struct consul_stop stop;
	pthread_mutex_t mu;        /* guards state and why */
	enum consul_lock_state state;
	char why[512];
};

static void set_state(struct consul_lock *l, enum consul_lock_state st, const char *why)
{
	pthread_mutex_lock(&l->mu);
	l->state = st;
	snprintf(l->why, sizeof(l->why), "%s", why ? why : "");
	pthread_mutex_unlock(&l->mu);
	uint64_t one = 1;
	if (write(l->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
		log_warn("consul", "eventfd write failed", "error=\"%s\"", strerror(errno));
}

/*
 * The deadline of one request: timeout, but never past the end of
 * consul.lock.wait while waiting, and while the lock is held never past the
 * end of the session's lease (its TTL from the last renewal sent), so a
 * hanging agent cannot keep the thread from giving up or from declaring the
 * lock lost in time.
 */
static int64_t bounded(const struct consul_lock *l, int64_t timeout)
{
	int64_t end = l->held ? l->renewed + l->ttl_ms : l->give_up;
	if (!end)
		return timeout;
	int64_t left = end - clock_mono_ms();
	return left < timeout ? (left > 1 ? left : 1) : timeout;
}

static int create_session(struct consul_lock *l, char *why, size_t whylen)
{
	char ttl[32], delay[32], err[256];
	struct consul_reply r;
	int rc = -1;
	snprintf(ttl, sizeof(ttl), "%lldms", (long long)l->cfg->lock_ttl_ms);
	snprintf(delay, sizeof(delay), "%lldms", (long long)l->cfg->lock_delay_ms);
	json_t *req = json_pack("{s:s, s:s, s:s, s:s}", "Name", l->holder, "TTL", ttl, "LockDelay",
				delay, "Behavior", "release");
	char *body = req ? json_dumps(req, JSON_COMPACT) : NULL;
	json_decref(req);
	if (!body) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	/* the lease counts from the request: Consul starts the TTL when it gets it */
	int64_t sent = clock_mono_ms();
	int crc = consul_call(l->cl, "PUT", "/v1/session/create", body, bounded(l, l->cfg->timeout_ms),
			      &r, err, sizeof(err));
	free(body);
	if (crc < 0 || r.status != 200) {
		consul_call_error(crc, &r, err, why, whylen);
		rc = crc == 0 && r.status == 403 ? -2 : -1;
		goto out;
	}
	json_t *doc = json_loads(r.body, 0, NULL);
	const char *id = json_string_value(json_object_get(doc, "ID"));
	if (id && *id && strlen(id) < sizeof(l->session) && !strpbrk(id, "/?#% ")) {
		snprintf(l->session, sizeof(l->session), "%s", id);
		l->ttl_ms = l->cfg->lock_ttl_ms;
		l->renewed = sent;
		rc = 0;
	} else {
		snprintf(why, whylen, "session create answered without an ID");
	}
	json_decref(doc);
out:
	consul_reply_release(&r);
	return rc;
}

/*
 * Renew our session, waiting timeout_ms at most. 0; -1 failed (try again);
 * -2 the session is gone (404).
 */
static int renew_within(struct consul_lock *l, int64_t timeout_ms, char *why, size_t whylen)
{
	char path[128], err[256];
	struct consul_reply r;
	snprintf(path, sizeof(path), "/v1/session/renew/%s", l->session);
	int64_t sent = clock_mono_ms();
	int crc = consul_call(l->cl, "PUT", path, NULL, bounded(l, timeout_ms), &r, err,
			      sizeof(err));
	int rc = 0;
	if (crc < 0 || r.status != 200) {
		consul_call_error(crc, &r, err, why, whylen);
		rc = crc == 0 && r.status == 404 ? -2 : -1;
	} else {
		l->renewed = sent;
		/* "the returned TTL ... should be used to determine the renewal period" (session.mdx) */
		json_t *doc = json_loads(r.body, 0, NULL);
		const char *ttl = json_string_value(json_object_get(json_array_get(doc, 0), "TTL"));
		int64_t ms;
		char bad[64];
		if (ttl && duration_parse(ttl, &ms, bad, sizeof(bad)) == 0 && ms >= l->cfg->lock_ttl_ms)
			l->ttl_ms = ms;
		json_decref(doc);
	}
	consul_reply_release(&r);
	return rc;
}

static int renew(struct consul_lock *l, char *why, size_t whylen)
{
	return renew_within(l, l->cfg->timeout_ms, why, whylen);
}

struct kv_look {
	bool exists;
	char session[64];   /* holder's session, "" when free */
	bool released;      /* its value: a litevisor holder's, released after its final flush */
	bool foreign;       /* its value: something else than a litevisor holder's record */
	bool record;        /* its value: a litevisor holder's record */
	bool undelayed;     /* ... released unsettled by a writer that took it with no lock
			     * delay: what it owed passes on (consul_lock_release) */
};

/* Standard padded base64 (Consul's KV values) into out[cap]; the length, or -1. */
static long b64_decode(const char *in, unsigned char *out, size_t cap)
{
	static const char set[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
	size_t o = 0;
	unsigned acc = 0;
	int bits = 0;
	for (; *in && *in != '='; in++) {
		const char *c = strchr(set, *in);
		if (!c)
			return -1;
		acc = acc << 6 | (unsigned)(c - set);
		bits += 6;
		if (bits >= 8) {
			bits -= 8;
			if (o >= cap)
				return -1;
			out[o++] = (unsigned char)(acc >> bits);
			acc &= (1u << bits) - 1;
		}
	}
	return (long)o;
}

/*
 * What a KV value (base64) says: a litevisor holder's record, marked
 * released (consul_lock_release), or something else (foreign). An empty
 * value is neither: a key made for the lock (`consul kv put KEY` with no
 * value). Consul's own api.Lock goes by the key's flags instead, and takes
 * only keys it made; litevisor's records carry none.
 */
static void value_read(const char *b64, struct kv_look *k)
{
	unsigned char buf[4096];
	long n = b64 && *b64 ? b64_decode(b64, buf, sizeof(buf)) : 0;
	if (n == 0)
		return;
	json_t *doc = n > 0 ? json_loadb((const char *)buf, (size_t)n, 0, NULL) : NULL;
	bool ours = json_is_string(json_object_get(doc, "holder"));
	k->released = ours && json_is_true(json_object_get(doc, "released"));
	k->foreign = !ours;
	k->record = ours;
	k->undelayed = ours && json_is_true(json_object_get(doc, "undelayed"));
	json_decref(doc);
}

/*
 * The token bucket blocking.mdx asks of a client: one blocking query a
 * second, a burst of two. A key written again and again (a script PUTting
 * it without ?acquire, which Consul allows while it is held) answers each
 * query at once; without this, the lock would send a query and, while
 * waiting, an acquire (a Raft write) per write of it. Naps until a token is
 * there and takes it; the nap comes off *wait_ms. False when stopped.
 */
static bool pace(struct consul_lock *l, int64_t *wait_ms)
{
	int64_t now = clock_mono_ms();
	l->credit += now - l->credit_at;
	l->credit_at = now;
	if (l->credit > PACE_BURST * PACE_MS)
		l->credit = PACE_BURST * PACE_MS;
	if (l->credit < PACE_MS) {
		int64_t need = PACE_MS - l->credit;
		if (consul_stop_nap(&l->stop, need))
			return false;
		l->credit = PACE_MS;
		l->credit_at = clock_mono_ms();
		*wait_ms -= need;
	}
	l->credit -= PACE_MS;
	return true;
}

/*
 * GET the key, blocking up to wait_ms for a change past l->index when
 * wait_ms > 0 (paced, see pace()). Returns 0 with *k filled, -2 refused by
 * the ACLs (403: waiting grants no permission), or -1 (why set).
 */
static int look(struct consul_lock *l, int64_t wait_ms, struct kv_look *k, char *why, size_t whylen)
{
	char path[3 * CFG_CONSUL_KEY_MAX + 100], err[256];
	struct consul_reply r;
	memset(k, 0, sizeof(*k));
	if (wait_ms > 0 && l->index > 0 && !pace(l, &wait_ms)) {
		snprintf(why, whylen, "stopped");
		return -1;
	}
	/* held: as Consul's api/lock.go monitorLock, never a stale answer from a past leader */
	const char *mode = l->held ? "consistent&" : "";
	if (wait_ms > 0 && l->index > 0)
		snprintf(path, sizeof(path), "/v1/kv/%s?%sindex=%llu&wait=%lldms", l->key, mode,
			 (unsigned long long)l->index, (long long)wait_ms);
	else
		snprintf(path, sizeof(path), "/v1/kv/%s%s%.*s", l->key, *mode ? "?" : "",
			 *mode ? (int)strlen(mode) - 1 : 0, mode);
	/* a blocking query may be answered up to wait/16 late (blocking.mdx) */
	bool blocking = wait_ms > 0 && l->index > 0;
	int64_t timeout = l->cfg->timeout_ms + (blocking ? wait_ms + wait_ms / 16 : 0);
	/*
	 * Held, the blocking query ends by then, when the renewal is due: one
	 * sent just as the agent turned slow took its wait plus the agent's delay,
	 * and the renewal after it came too late for the lease (a lock that
	 * renewals alone keep, lost).
	 */
	if (blocking && l->held)
		timeout = wait_ms + wait_ms / 16 + l->latency_ms + l->latency_ms / 4;
	int crc = consul_call(l->cl, "GET", path, NULL, bounded(l, timeout), &r, err, sizeof(err));
	int rc = -1;
	if (crc < 0 || (r.status != 200 && r.status != 404)) {
		consul_call_error(crc, &r, err, why, whylen);
		if (crc == 0 && r.status == 403)
			rc = -2;
		goto out;
	}
	/*
	 * blocking.mdx: an index that went backwards starts over; one of 0 (a Consul
	 * bug it warns of, or no header at all) is taken as 1, or every blocking
	 * query would return at once, unpaced.
	 */
	l->index = r.index < l->index ? 0 : r.index;
	if (l->index == 0)
		l->index = 1;
	rc = 0;
	if (r.status == 404)
		goto out;
	k->exists = true;
	json_t *doc = json_loads(r.body, 0, NULL);
	const char *s = json_string_value(json_object_get(json_array_get(doc, 0), "Session"));
	if (s)
		snprintf(k->session, sizeof(k->session), "%s", s);
	value_read(json_string_value(json_object_get(json_array_get(doc, 0), "Value")), k);
	json_decref(doc);
out:
	consul_reply_release(&r);
	return rc;
}

/*
 * PUT ?acquire. 1 acquired, 0 refused, -1 failed, -2 ACL refused, -3 our session
 * is invalid, -4 the key is refused.
 */
static int acquire(struct consul_lock *l, char *why, size_t whylen)
{
	char path[3 * CFG_CONSUL_KEY_MAX + 200], err[256], since[40];
	struct consul_reply r;
	snprintf(path, sizeof(path), "/v1/kv/%s?acquire=%s", l->key, l->session);
	json_t *v = json_pack("{s:s, s:I, s:s}", "holder", l->holder, "pid", (json_int_t)getpid(),
			      "since", clock_rfc3339(clock_wall_ns(), since, sizeof(since)));
	char *body = v ? json_dumps(v, JSON_COMPACT) : NULL;
	json_decref(v);
	if (!body) {
		snprintf(why, whylen, "out of memory");
		return -1;
	}
	int crc = consul_call(l->cl, "PUT", path, body, bounded(l, l->cfg->timeout_ms), &r, err,
			      sizeof(err));
	int rc;
	if (crc == 0 && r.status == 200) {
		rc = strncmp(r.body, "true", 4) == 0 ? 1 : 0;
		if (rc == 1) {
			free(l->value);
			l->value = body; /* kept for the release */
			body = NULL;
		}
	} else {
		consul_call_error(crc, &r, err, why, whylen);
		rc = crc == 0 && r.status == 403 ? -2 : -1;
		/* state/kvs.go kvsLockTxn: `invalid session "<id>"` for one that expired or was destroyed */
		if (crc == 0 && r.status == 500 && strstr(r.body, "invalid session"))
			rc = -3;
		/* a key name this Consul refuses (1.21.5: "invalid key name"): waiting will not mend it */
		if (crc == 0 && (r.status == 400 || (r.status == 500 && strstr(r.body, "invalid key"))))
			rc = -4;
	}
	free(body);
	consul_reply_release(&r);
	return rc;
}

/*
 * The name of the session holding the key, for the log ("litevisor: node2
 * …"; "session <id>" when it has none or is not known). Returns true when
 * the session was read, whatever its name (none: another program's, as
 * plain HTTP clients make them), false when it could not be (a failed call,
 * a session gone meanwhile).
 */
static bool holder_name(struct consul_lock *l, const char *session, char *buf, size_t len)
{
	char path[128], err[256];
	struct consul_reply r;
	bool known = false;
	snprintf(buf, len, "session %s", session);
	snprintf(path, sizeof(path), "/v1/session/info/%s", session);
	if (consul_call(l->cl, "GET", path, NULL, bounded(l, l->cfg->timeout_ms), &r, err, sizeof(err)) == 0 &&
	    r.status == 200) {
		json_t *doc = json_loads(r.body, 0, NULL);
		json_t *info = json_array_get(doc, 0);
		const char *name = json_string_value(json_object_get(info, "Name"));
		known = json_is_object(info);
		if (name && *name)
			snprintf(buf, len, "%s (session %s)", name, session);
		json_decref(doc);
	}
	consul_reply_release(&r);
	return known;
}

static bool renew_due(const struct consul_lock *l)
{
	return clock_mono_ms() - l->renewed >= l->ttl_ms / 2;
}

/* The waiting phase. Returns true once held; false when stopped or failed (state set). */
static bool take(struct consul_lock *l)
{
	int64_t backoff = RETRY_MS;
	l->give_up = l->cfg->lock_wait_ms ? clock_mono_ms() + l->cfg->lock_wait_ms : 0;
	char why[512] = "", last[512] = "", seen[64] = "";
	struct kv_look prev; /* the key as last read before an acquire */
	bool have_prev = false;
	struct kv_look basis = { 0 }; /* what a take is judged from: prev, or the key before an
			       * acquire whose answer was lost (it may have landed) */
	bool lost = false;    /* the last acquire's answer was lost */
	bool foreign = false; /* prev holds another value, not under our session: never acquired */
	bool delayed = false; /* the last refused acquire met a free key: a lock delay */
	bool free_before = false; /* the key was free when read before the last acquire */
	for (;;) {
		if (l->give_up && clock_mono_ms() >= l->give_up) {
			char d[32], msg[700];
			snprintf(msg, sizeof(msg), "not acquired within consul.lock.wait (%s): %s",
				 duration_format(l->cfg->lock_wait_ms, d, sizeof(d)),
				 last[0] ? last : "still held by another writer");
			set_state(l, CONSUL_LOCK_FAILED, msg);
			return false;
		}
		if (atomic_load(&l->stop.flag))
			return false;
		int rc = 0;
		if (!l->session[0])
			rc = create_session(l, why, sizeof(why));
		else if (renew_due(l))
			rc = renew(l, why, sizeof(why));
		if (rc == -2 && !l->session[0]) {
			char msg[700];
			snprintf(msg, sizeof(msg), "Consul refused the session: %s", why);
			set_state(l, CONSUL_LOCK_FAILED, msg);
			return false;
		}
		if (rc == -2) { /* our waiting session expired: make another */
			l->session[0] = '\0';
			continue;
		}
		/*
		 * Whom it is taken from (one that did not release it may still be
		 * stopping), and whether it holds someone's data: never acquired
		 * unread (Consul's api.Lock gives up on a failed read; this tries it
		 * again). A failed read (a 429 of Consul's read rate limit, an
		 * election's 500) let a foreign value be replaced, for good (QA148 D2).
		 */
		if (rc == 0 && l->session[0] && !have_prev) {
			rc = look(l, 0, &prev, why, sizeof(why));
			if (rc == -2) {
				char msg[700];
				snprintf(msg, sizeof(msg), "Consul refused to read the lock's key: %s", why);
				set_state(l, CONSUL_LOCK_FAILED, msg);
				return false;
			}
			have_prev = rc == 0;
		}
		if (rc == 0 && l->session[0]) {
			/*
			 * Its value would be replaced by ours, for good (QA142 D5), also
			 * when its holder lets it go between this read and our acquire
			 * (QA156 D2): never acquired over another value. Refused, unless
			 * a litevisor holds it (someone wrote the key under it: its
			 * release puts its record back, QA157 D2) or who holds it is not
			 * known yet: then waited on, without an acquire.
			 */
			char who[300] = "";
			/* held by our own session (a lost acquire landed): ours, whatever it holds (QA158 D2) */
			foreign = prev.foreign && strcmp(prev.session, l->session) != 0;
			bool known = foreign && prev.session[0] &&
				     holder_name(l, prev.session, who, sizeof(who));
			/* a session with no name is another program's (QA159 D2) */
			bool held_by_ours = prev.session[0] &&
					    (!known || !strncmp(who, "litevisor: ", 11));
			if (foreign && !held_by_ours) {
				char msg[700];
				snprintf(msg, sizeof(msg), "the key %s holds a value that is not a litevisor "
					 "holder's record: it is not taken over; give consul.lock.key a key "
					 "of its own", l->cfg->lock_key);
				set_state(l, CONSUL_LOCK_FAILED, msg);
				return false;
			}
			free_before = !prev.session[0];
		}
		if (rc == 0 && l->session[0] && !foreign) {
			/*
			 * After an acquire whose answer was lost, a key read held by our
			 * own session is that acquire landed: what it took the key from
			 * is what was read before it (QA156 D1).
			 */
			if (!lost || strcmp(prev.session, l->session) != 0)
				basis = prev;
			int64_t sent = clock_mono_ms();
			rc = acquire(l, why, sizeof(why));
			lost = rc == -1;
			if (rc == 1) {
				/* the agent's answer time until a renewal measures it (QA151 O1) */
				l->latency_ms = clock_mono_ms() - sent;
				pthread_mutex_lock(&l->mu);
				l->unclean = !basis.exists || !basis.released;
				/*
				 * No lock delay seen: taken after a release or delete by hand,
				 * or after a delay that ended before this node looked (a
				 * crashed holder's replacement). Consul keeps the value of a
				 * key whose session it ended, and a PUT ?release or a DELETE
				 * replaces or removes it: an unreleased holder's record still
				 * there means a delay was set (lock-delay is never 0), whose start-up
				 * check covers the holder's stop (QA151 D3), unless a writer
				 * that took it with none released it unsettled (QA152 D1).
				 */
				bool delay_set = basis.record && !basis.undelayed;
				/*
				 * Read held, yet taken: freed between the read and the
				 * acquire, how is not known (a release marked undelayed, or
				 * by hand): the longer wait, which a clean release leaves
				 * nothing to wait for (QA153 D1). Held by our own session
				 * with no acquire of ours lost before: not known either.
				 */
				bool changed = basis.session[0] != '\0';
				if (changed)
					l->unclean = true;
				l->undelayed = l->unclean && (changed || (!delayed && !delay_set));
				pthread_mutex_unlock(&l->mu);
				if (changed)
					log_info("consul", "writer lock taken right as its holder let it go, "
						 "whether after its final flush is not known: the restore waits "
						 "as for a holder that did not release it (unless "
						 "restore.handover-wait is 0)",
						 "key=\"%s\"", l->cfg->lock_key);
				else if (l->unclean)
					log_info("consul", "writer lock taken from a holder that did not release it "
						 "after its final flush, or from a key with no holder's record: the "
						 "restore waits for its open generation, however old (unless "
						 "restore.handover-wait is 0)",
						 "key=\"%s\"", l->cfg->lock_key);
				return true;
			}
			have_prev = false;
			if (rc == -2 || rc == -4) {
				char msg[700];
				snprintf(msg, sizeof(msg), "Consul refused the lock: %s", why);
				set_state(l, CONSUL_LOCK_FAILED, msg);
				return false;
			}
			if (rc == -3) {
				l->session[0] = '\0';
				continue;
			}
		}
		if (rc < 0) {
			if (atomic_load(&l->stop.flag))
				return false; /* the request was abandoned for it: nothing to report */
			if (strcmp(why, last) != 0)
				log_warn("consul", "writer lock: request failed; trying again",
					 "agent=%s key=\"%s\" error=\"%s\"", consul_client_addr(l->cl),
					 l->cfg->lock_key, why);
			snprintf(last, sizeof(last), "%s", why);
			if (consul_stop_nap(&l->stop, bounded(l, backoff)))
				return false;
			backoff = backoff * 2 > RETRY_MAX_MS ? RETRY_MAX_MS : backoff * 2;
			continue;
		}
		backoff = RETRY_MS;
		last[0] = '\0';
		/* refused: held by another session, or free but in its lock delay */
		struct kv_look k;
		if (look(l, 0, &k, why, sizeof(why)) < 0) {
			if (consul_stop_nap(&l->stop, bounded(l, RETRY_MS)))
				return false;
			continue;
		}
		prev = k;
		have_prev = true;
		if (!strcmp(k.session, l->session)) {
			/* an acquire of ours whose answer was lost landed after all (QA157 D1) */
			lost = true;
			continue;
		}
		/*
		 * Free before and after a refused acquire: a lock delay, which Consul
		 * sets when it ends a holder's session. Free only after it: released
		 * in between (an operator's release sets none).
		 */
		delayed = free_before && !k.session[0];
		if (!k.session[0]) {
			if (delayed)
				log_debug("consul", "writer lock: the key is free but in its lock delay",
					  "key=\"%s\"", l->cfg->lock_key);
			if (consul_stop_nap(&l->stop, bounded(l, RETRY_MS)))
				return false;
			continue;
		}
		if (strcmp(k.session, seen) != 0) {
			char who[300];
			(void)holder_name(l, k.session, who, sizeof(who));
			log_info("consul", "waiting for the writer lock", "key=\"%s\" held_by=\"%s\"",
				 l->cfg->lock_key, who);
			snprintf(seen, sizeof(seen), "%s", k.session);
		}
		/* wait for the key to change, but wake to renew our own session in time */
		int64_t wait = bounded(l, l->ttl_ms / 2 - (clock_mono_ms() - l->renewed));
		if (wait >= 1000)
			have_prev = look(l, wait, &prev, why, sizeof(why)) == 0;
		else if (consul_stop_nap(&l->stop, bounded(l, RETRY_MS)))
			return false; /* not another acquire at once: each refused one is a write */
	}
}

/* The held phase, until lost or stopped. */
static void hold(struct consul_lock *l)
{
	char why[512] = "", msg[700];
	bool renewed_now = false;
	l->look_failing = 0;
	for (;;) {
		if (atomic_load(&l->stop.flag))
			return;
		/* first: a renewal answered after the lease's end may come too late */
		if (clock_mono_ms() - l->renewed >= l->ttl_ms) {
			char d[32];
			snprintf(msg, sizeof(msg), "the session could not be renewed for its whole TTL (%s): %s",
				 duration_format(l->ttl_ms, d, sizeof(d)), why);
			set_state(l, CONSUL_LOCK_LOST, msg);
			return;
		}
		/*
		 * Reads of the key failing for as long: renewals alone do not say it
		 * is still ours (an operator's release, another session's acquire).
		 * Reads refused while renewals passed (Consul's read rate limit) kept
		 * two writers going for good (QA142 D6); Consul's own api.Lock takes
		 * one failed read for a loss. (Reads left out for a slow agent, below,
		 * are not failures.)
		 */
		if (l->look_failing && clock_mono_ms() - l->look_failing >= l->ttl_ms) {
			char d[32];
			snprintf(msg, sizeof(msg), "the key could not be read for the session's whole TTL "
				 "(%s), so it may be another's: %s", duration_format(l->ttl_ms, d, sizeof(d)),
				 why);
			set_state(l, CONSUL_LOCK_LOST, msg);
			return;
		}
		if (renew_due(l)) {
			int64_t sent = clock_mono_ms();
			int rc = renew(l, why, sizeof(why));
			if (rc == -2) {
				snprintf(msg, sizeof(msg), "Consul no longer knows the session (%s)", why);
				set_state(l, CONSUL_LOCK_LOST, msg);
				return;
			}
			if (rc < 0) {
				if (!l->warned && !atomic_load(&l->stop.flag)) {
					char d[32];
					int64_t left = l->renewed + l->ttl_ms - clock_mono_ms();
					log_warn("consul", "writer lock: renewal failed; trying again, the lock is "
						 "lost if none succeeds within the session's TTL",
						 "key=\"%s\" error=\"%s\" left=%s", l->cfg->lock_key, why,
						 duration_format(left > 0 ? left : 0, d, sizeof(d)));
					l->warned = true;
				}
				/* again in a second, or lost at the lease's end just above */
				if (consul_stop_nap(&l->stop, bounded(l, RETRY_MS)))
					return;
				continue;
			}
			if (l->warned)
				log_info("consul", "writer lock: renewed again", "key=\"%s\"", l->cfg->lock_key);
			l->warned = false;
			renewed_now = true;
			l->latency_ms = clock_mono_ms() - sent;
		}
		int64_t wait = l->ttl_ms / 2 - (clock_mono_ms() - l->renewed);
		/*
		 * A blocking query is answered its wait plus the agent's own time
		 * later: it must be back before the renewal is due. Timed as if
		 * the agent answered at once, every read of one taking a second or
		 * more timed out, taken each time for a query cut short for the
		 * renewal: the key was never watched, and nothing said so (QA145 D4).
		 */
		int64_t block = wait - wait / 16 - l->latency_ms - l->latency_ms / 4;
		/*
		 * No time left for a blocking query before the next renewal: an agent
		 * that takes most of TTL/2 to answer. A read of the key in between
		 * would push the renewal past the lease's end and lose a lock that
		 * renewals alone keep, so renewals come first; a released or deleted
		 * key goes unseen until the agent is quicker, which is said once.
		 * Judged right after a renewal: a look that returned early (the key
		 * written, a failed read) leaves little time too, from a fast agent
		 * (QA142 D3).
		 */
		bool no_room = block < 1000;
		bool slow = no_room && renewed_now;
		renewed_now = false;
		if (slow)
			l->look_failing = 0; /* reads left out for a slow agent are no failures (QA145 D2) */
		if (slow && !l->too_slow) {
			char d[32], t[32];
			log_warn("consul", "writer lock: the agent answers too slowly to watch the key "
				 "between renewals; a key released or deleted by someone else goes "
				 "unseen until it is quicker", "key=\"%s\" since_renewal=%s ttl=%s",
				 l->cfg->lock_key, duration_format(clock_mono_ms() - l->renewed, d, sizeof(d)),
				 duration_format(l->ttl_ms, t, sizeof(t)));
			l->too_slow = true;
		} else if (!no_room && l->too_slow) {
			log_info("consul", "writer lock: watching the key again", "key=\"%s\"",
				 l->cfg->lock_key);
			l->too_slow = false;
		}
		/*
		 * After a failed read, one that returns at once: a blocking one kept
		 * the failing clock running while the agent answered, and an agent
		 * dropping connections now and then lost the lock between answers
		 * (QA148 O5).
		 */
		struct kv_look k;
		int lrc = no_room ? 0 : look(l, l->look_failing ? 0 : block, &k, why, sizeof(why));
		if (no_room || lrc < 0) {
			if (lrc < 0 && !l->look_failing && !atomic_load(&l->stop.flag)) {
				char d[32];
				l->look_failing = clock_mono_ms();
				log_warn("consul", "writer lock: reading the key failed; trying again, the lock "
					 "is lost if no read succeeds within the session's TTL",
					 "key=\"%s\" error=\"%s\" ttl=%s", l->cfg->lock_key, why,
					 duration_format(l->ttl_ms, d, sizeof(d)));
			}
			/* a read that ended as the renewal came due: that renewal now, no pause */
			if (!no_room && renew_due(l) && !atomic_load(&l->stop.flag))
				continue;
			/*
			 * Not past the lease's end (the top of the loop declares it lost
			 * right then), nor past the renewal's time: a read failing just
			 * before it, then a second's pause, left a slow agent's renewal
			 * too little of the lease.
			 */
			int64_t due = l->ttl_ms / 2 - (clock_mono_ms() - l->renewed);
			int64_t pause = bounded(l, due < RETRY_MS ? (due > 0 ? due : 0) : RETRY_MS);
			if (atomic_load(&l->stop.flag) || consul_stop_nap(&l->stop, pause))
				return;
			continue;
		}
		if (atomic_load(&l->stop.flag))
			return;
		if (l->look_failing)
			log_info("consul", "writer lock: the key read again", "key=\"%s\"", l->cfg->lock_key);
		l->look_failing = 0;
		if (strcmp(k.session, l->session) != 0) {
			if (k.session[0]) {
				snprintf(msg, sizeof(msg), "the key is held by another session (released "
					 "or deleted by someone else)");
				set_state(l, CONSUL_LOCK_LOST, msg);
				return;
			}
			/*
			 * Consul frees the key of a session it ended (a destroy, a failed
			 * node check, a TTL it saw pass), and then no longer knows it
			 * (404); someone else's release or delete leaves the session alive
			 * (QA142 O1). Asked within a few of the agent's answer times: a
			 * release by hand sets no lock delay, and the next writer may hold
			 * the key already (QA150 O2).
			 */
			int64_t quick = 4 * l->latency_ms + 200;
			int rc = renew_within(l, quick < l->cfg->timeout_ms ? quick : l->cfg->timeout_ms,
					      why, sizeof(why));
			snprintf(msg, sizeof(msg), "the key %s%s", !k.exists ? "was deleted" :
				 "is no longer held", rc == -2 ? ": Consul ended the lock's session (a "
				 "destroy, its node's check failing, or its TTL passing unrenewed on the "
				 "servers' clock)" : rc == 0 ? " (released or deleted by someone else; "
				 "the lock's session lives on)" : "");
			set_state(l, CONSUL_LOCK_LOST, msg);
			return;
		}
	}
}

static void *lock_main(void *arg)
{
	struct consul_lock *l = arg;
	if (!take(l))
		return NULL;
	l->held = true;
	set_state(l, CONSUL_LOCK_HELD, NULL);
	hold(l);
	return NULL;
}

struct consul_lock *consul_lock_start(const struct cfg_consul *cfg, const char *holder, char *err,
				      size_t errlen)
{
	struct consul_lock *l = calloc(1, sizeof(*l));
	if (!l) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	l->cfg = cfg;
	l->efd = -1;
	l->credit = PACE_BURST * PACE_MS;
	l->credit_at = clock_mono_ms();
	pthread_mutex_init(&l->mu, NULL);
	consul_stop_init(&l->stop);
	char name[sizeof(l->holder)];
	snprintf(name, sizeof(name), "litevisor: %s", holder);
	utf8_repair(name, l->holder, sizeof(l->holder)); /* a cut or Latin-1 host name: jansson refuses it */
	if (consul_escape(cfg->lock_key, true, l->key, sizeof(l->key)) < 0) {
		snprintf(err, errlen, "lock key too long");
		goto fail;
	}
	if (!(l->cl = consul_client_new(cfg, err, errlen)))
		goto fail;
	consul_client_abort_on(l->cl, &l->stop.flag);
	l->efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	if (l->efd < 0) {
		snprintf(err, errlen, "eventfd: %s", strerror(errno));
		goto fail;
	}
	int rc = pthread_create(&l->thread, NULL, lock_main, l);
	if (rc != 0) {
		snprintf(err, errlen, "cannot start thread: %s", strerror(rc));
		goto fail;
	}
	l->started = true;
	log_info("consul", "taking the writer lock", "agent=%s key=\"%s\"", consul_client_addr(l->cl),
		 cfg->lock_key);
	return l;
fail:
	consul_lock_release(l, 0);
	return NULL;
}

int consul_lock_fd(const struct consul_lock *l)
{
	return l->efd;
}

enum consul_lock_state consul_lock_state(struct consul_lock *l, char *why, size_t whylen)
{
	uint64_t n;
	if (read(l->efd, &n, sizeof(n)) < 0 && errno != EAGAIN)
		log_warn("consul", "eventfd read failed", "error=\"%s\"", strerror(errno));
	pthread_mutex_lock(&l->mu);
	enum consul_lock_state st = l->state;
	if (why)
		snprintf(why, whylen, "%s", l->why);
	pthread_mutex_unlock(&l->mu);
	return st;
}

void consul_lock_settled(struct consul_lock *l)
{
	if (!l)
		return;
	pthread_mutex_lock(&l->mu);
	l->unclean = false;
	pthread_mutex_unlock(&l->mu);
}

bool consul_lock_unclean(struct consul_lock *l)
{
	if (!l)
		return false;
	pthread_mutex_lock(&l->mu);
	bool u = l->unclean;
	pthread_mutex_unlock(&l->mu);
	return u;
}

bool consul_lock_undelayed(struct consul_lock *l)
{
	if (!l)
		return false;
	pthread_mutex_lock(&l->mu);
	bool u = l->unclean && l->undelayed;
	pthread_mutex_unlock(&l->mu);
	return u;
}

void consul_lock_halt(struct consul_lock *l)
{
	if (l && l->started) {
		consul_stop_request(&l->stop);
		consul_client_interrupt(l->cl, true); /* not a second more in a blocking query */
	}
}

void consul_lock_release(struct consul_lock *l, int64_t budget_ms)
{
	if (!l)
		return;
	if (l->started) {
		consul_lock_halt(l);
		pthread_join(l->thread, NULL);
		consul_client_interrupt(l->cl, false);
	}
	if (l->cl && l->session[0]) {
		char path[3 * CFG_CONSUL_KEY_MAX + 200], err[256], why[300];
		struct consul_reply r;
		int64_t end = clock_mono_ms() + budget_ms;
		consul_client_abort_on(l->cl, NULL);
		if (l->state == CONSUL_LOCK_HELD) {
			snprintf(path, sizeof(path), "/v1/kv/%s?release=%s", l->key, l->session);
			/*
			 * The key keeps its text, as Consul's own api.Lock leaves it (QA93
			 * O7), marked released: this writer's final flush is done, so the
			 * next one need not wait for its generation (consul_lock_unclean).
			 */
			json_t *v = l->value ? json_loads(l->value, 0, NULL) : NULL;
			char *body = NULL;
			/*
			 * Not when taken from a holder that may still be stopping and
			 * never settled (stopped before its restore ended): the next
			 * writer must wait for that holder's generation (QA145 D1).
			 */
			if (v && !consul_lock_unclean(l) &&
			    json_object_set_new(v, "released", json_true()) == 0)
				body = json_dumps(v, JSON_COMPACT);
			/*
			 * And taken with no lock delay, the longer wait it owed passes on:
			 * its own record left on the key read as a session Consul ended
			 * (QA152 D1).
			 */
			else if (v && consul_lock_undelayed(l) &&
				 json_object_set_new(v, "undelayed", json_true()) == 0)
				body = json_dumps(v, JSON_COMPACT);
			json_decref(v);
			int rc = consul_call(l->cl, "PUT", path, body ? body : l->value, budget_ms, &r, err,
					     sizeof(err));
			free(body);
			if (rc == 0 && r.status == 200 && strncmp(r.body, "true", 4) == 0)
				log_info("consul", "writer lock released", "key=\"%s\"", l->cfg->lock_key);
			else if (rc == 0 && r.status == 200)
				log_warn("consul", "the writer lock was no longer ours to release",
					 "key=\"%s\"", l->cfg->lock_key);
			else {
				consul_call_error(rc, &r, err, why, sizeof(why));
				log_warn("consul", "cannot release the writer lock; it goes with the session's TTL",
					 "key=\"%s\" error=\"%s\"", l->cfg->lock_key, why);
			}
			consul_reply_release(&r);
		}
		int64_t left = end - clock_mono_ms();
		snprintf(path, sizeof(path), "/v1/session/destroy/%s", l->session);
		if (left > 0) {
			int rc = consul_call(l->cl, "PUT", path, NULL, left, &r, err, sizeof(err));
			if (rc < 0 || r.status != 200) {
				consul_call_error(rc, &r, err, why, sizeof(why));
				log_warn("consul", "cannot destroy the lock's session; Consul drops it after its TTL",
					 "error=\"%s\"", why);
			}
			consul_reply_release(&r);
		}
	}
	consul_client_free(l->cl);
	free(l->value);
	if (l->efd >= 0)
		close(l->efd);
	consul_stop_destroy(&l->stop);
	pthread_mutex_destroy(&l->mu);
	free(l);
}
