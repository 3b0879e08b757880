/*
 * client.h — a small client of a Consul agent's HTTP API (api-docs/index.mdx):
 * one request at a time over one libcurl handle, so each thread that talks to
 * Consul owns a client of its own.
 *
 * Where the agent is and how to authenticate come from the `consul:` section,
 * else from Consul's own variables, read when the client is made:
 * CONSUL_HTTP_ADDR (HOST:PORT or http(s)://HOST:PORT; default
 * http://127.0.0.1:8500), CONSUL_HTTP_SSL=true (https for a bare HOST:PORT),
 * CONSUL_HTTP_TOKEN / CONSUL_HTTP_TOKEN_FILE, CONSUL_CACERT. The token is
 * sent as X-Consul-Token (not ?token=, which the docs discourage) and a token
 * file is re-read when it changes (common/secret.h), so a rotated token works
 * without a restart. Neither the token nor a request body is ever logged.
 *
 * Knows nothing of what the requests are for: consul/lock.c and
 * consul/register.c build them.
 */
#ifndef LITEVISOR_CONSUL_CLIENT_H
#define LITEVISOR_CONSUL_CLIENT_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

/* Answers larger than this are refused (a single KV entry or session is tiny). */
#define CONSUL_BODY_MAX (1u << 20)

struct consul_client;

struct consul_reply {
	long status;       /* HTTP status */
	char *body;        /* NUL-terminated answer (owned), "" when empty */
	size_t len;
	uint64_t index;    /* X-Consul-Index, 0 when absent */
};

/*
 * A client for c's agent (c is borrowed and must outlive it). Returns it, or
 * NULL with err set (libcurl cannot be loaded, a bad CONSUL_HTTP_ADDR, no memory).
 */
struct consul_client *consul_client_new(const struct cfg_consul *c, char *err, size_t errlen);
void consul_client_free(struct consul_client *cl);

/*
 * What consul_client_new would refuse, found before anything starts: the
 * agent's address (config or CONSUL_HTTP_ADDR: http(s) only, no password or
 * path in it), a token file that cannot be read, and a token (config,
 * CONSUL_HTTP_TOKEN or the file's current content) with a line break, which
 * consul_call never sends. Returns 0, or -1 with err naming the setting,
 * never the token (a configuration error: waiting does not mend it).
 */
int consul_agent_check(const struct cfg_consul *c, char *err, size_t errlen);

/*
 * A stop request for a thread that talks to Consul: the flag its client
 * checks (consul_client_abort_on) and a wake-up for its pauses.
 */
struct consul_stop {
	atomic_int flag;
	unsigned wakes;            /* under mu: consul_stop_wake calls */
	pthread_mutex_t mu;
	pthread_cond_t cv;
};
void consul_stop_init(struct consul_stop *s);
void consul_stop_destroy(struct consul_stop *s);
/* Set the flag and wake the pause. */
void consul_stop_request(struct consul_stop *s);
/* End the current pause (if any) early, without asking to stop. */
void consul_stop_wake(struct consul_stop *s);
/* Pause ms, or less once stop is requested or a wake comes. Returns true when stop is requested. */
bool consul_stop_nap(struct consul_stop *s, int64_t ms);
/*
 * The wakes so far, and consul_stop_nap counting from them: a wake that came
 * after consul_stop_wakes, before the nap began, ends it at once. A thread
 * whose wake follows a flag it looks at (consul_reg_leave) reads the count
 * before the flag: a wake between its look and its nap is not lost.
 */
unsigned consul_stop_wakes(struct consul_stop *s);
bool consul_stop_nap_since(struct consul_stop *s, int64_t ms, unsigned seen);

/*
 * Abandon any request of cl as soon as *flag is non-zero (checked by libcurl
 * at least once a second and on every byte): how a thread in a blocking
 * query is told to stop. flag must outlive cl; NULL turns it off.
 */
void consul_client_abort_on(struct consul_client *cl, const atomic_int *flag);

/*
 * on: shut the connection a request of cl is using now, and open none until
 * called with false; that request fails at once (a blocking query would see
 * an abort flag only at libcurl's next progress call, about a second). Any
 * thread; cl's requests are made by one.
 */
void consul_client_interrupt(struct consul_client *cl, bool on);

/* "http://127.0.0.1:8500": the agent, for messages. */
const char *consul_client_addr(const struct consul_client *cl);

/*
 * One request: method "GET", "PUT" or "DELETE", path from "/v1/…" with its
 * query, body (may be NULL) sent as is. Waits at most timeout_ms in all.
 * Returns 0 with *r filled for any HTTP answer (the caller looks at r->status),
 * or -1 with err set when none came (refused, timed out, token file
 * unreadable, answer too large); release *r with consul_reply_release in both
 * cases.
 */
int consul_call(struct consul_client *cl, const char *method, const char *path, const char *body,
		int64_t timeout_ms, struct consul_reply *r, char *err, size_t errlen);
void consul_reply_release(struct consul_reply *r);

/*
 * Percent-encode s for a URL path (a KV key keeps its '/' when keep_slash) or
 * a query value into buf. Returns 0, or -1 if it does not fit.
 */
int consul_escape(const char *s, bool keep_slash, char *buf, size_t len);

/*
 * The first line of an error answer, cut to fit, for a log message
 * ("Permission denied", "Invalid session ..."); "" for an empty body.
 */
void consul_reply_text(const struct consul_reply *r, char *buf, size_t len);

/*
 * What went wrong with a consul_call that returned rc, for a log message:
 * err when no answer came, else "HTTP <status>: <first line of the answer>".
 */
void consul_call_error(int rc, const struct consul_reply *r, const char *err, char *buf, size_t len);

#endif
