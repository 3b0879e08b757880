/*
 * client.c — requests to a Consul agent over libcurl (consul/client.h).
 */
#include "consul/client.h"

#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/lazy_curl.h"
#include "common/secret.h"
#include "common/utf8.h"
#include "common/version.h"
#include "common/banned.h"

struct consul_client {
	const struct cfg_consul *cfg;
	CURL *curl;
	char base[300];            /* "http(s)://host:port" */
	struct cfg_secret env_token; /* from CONSUL_HTTP_TOKEN(_FILE) when the config has none */
	const char *ca_file;
	const atomic_int *abort_flag;
	pthread_mutex_t fd_mu;     /* guards fd: curl opens and closes it, interrupt shuts it */
	curl_socket_t fd;          /* the connection's socket, CURL_SOCKET_BAD when none */
	bool interrupted;          /* consul_client_interrupt: no new connection either */
};

/* The agent's URL from the config, else CONSUL_HTTP_ADDR, else the default. */
static int resolve_base(struct consul_client *cl, char *err, size_t errlen)
{
	const char *a = cl->cfg->addr;
	const char *from = "consul.addr";
	if (!a || !*a) {
		a = getenv("CONSUL_HTTP_ADDR");
		from = "CONSUL_HTTP_ADDR";
		char why[600];
		/* checked as consul.addr is at load (QA142 D2) */
		if (a && *a && cfg_consul_addr_check(a, why, sizeof(why)) < 0) {
			snprintf(err, errlen, "CONSUL_HTTP_ADDR: %s", why);
			return -1;
		}
	}
	if (!a || !*a)
		a = "127.0.0.1:8500";
	const char *ssl = getenv("CONSUL_HTTP_SSL");
	bool https = ssl && (strcasecmp(ssl, "true") == 0 || strcmp(ssl, "1") == 0);
	const char *scheme = https ? "https://" : "http://";
	if (strncmp(a, "http://", 7) == 0 || strncmp(a, "https://", 8) == 0)
		scheme = "";
	else if (strstr(a, "://")) {
		snprintf(err, errlen, "%s \"%s\": litevisor talks to the agent over http(s) only", from,
			 strchr(a, '@') ? "(not shown: it contains user@)" : a);
		return -1;
	}
	size_t n = strlen(a);
	while (n && a[n - 1] == '/')
		n--;
	const char *hp = strstr(a, "://") ? strstr(a, "://") + 3 : a;
	size_t hl = n - (size_t)(hp - a);
	if (!hl || memchr(hp, '/', hl) || memchr(hp, '?', hl) || memchr(hp, '@', hl)) {
		/* a password in it would be sent and logged; a path would be joined to ours */
		snprintf(err, errlen, "%s: expected the agent's address only (HOST:PORT or http(s)://HOST:PORT)",
			 from);
		return -1;
	}
	int w = snprintf(cl->base, sizeof(cl->base), "%s%.*s", scheme, (int)n, a);
	if (w < 0 || (size_t)w >= sizeof(cl->base)) {
		snprintf(err, errlen, "%s is too long", from);
		return -1;
	}
	return 0;
}

/*
 * Everything of a client but its curl handle: the agent's URL, the token
 * (config, else CONSUL_HTTP_TOKEN, else CONSUL_HTTP_TOKEN_FILE) and the CA
 * bundle. Shared by consul_client_new and consul_agent_check, so both read
 * the environment the same way. Returns 0, or -1 with err set.
 */
static int client_setup(struct consul_client *cl, const struct cfg_consul *c, char *err, size_t errlen)
{
	cl->cfg = c;
	cl->fd = CURL_SOCKET_BAD;
	pthread_mutex_init(&cl->fd_mu, NULL);
	if (resolve_base(cl, err, errlen) < 0)
		return -1;
	if (!secret_is_set(&c->token)) {
		const char *t = getenv("CONSUL_HTTP_TOKEN"), *f = getenv("CONSUL_HTTP_TOKEN_FILE");
		if ((t && *t && !(cl->env_token.value = strdup(t))) ||
		    ((!t || !*t) && f && *f && !(cl->env_token.file = strdup(f)))) {
			snprintf(err, errlen, "out of memory");
			return -1;
		}
	}
	cl->ca_file = c->ca_file ? c->ca_file : getenv("CONSUL_CACERT");
	return 0;
}

/* The token a request sends: the config's, else the environment's (may be unset). */
static const struct cfg_secret *client_token(const struct consul_client *cl)
{
	return secret_is_set(&cl->cfg->token) ? &cl->cfg->token : &cl->env_token;
}

struct consul_client *consul_client_new(const struct cfg_consul *c, char *err, size_t errlen)
{
	struct consul_client *cl = calloc(1, sizeof(*cl));
	if (!cl) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	if (client_setup(cl, c, err, errlen) < 0 || lazy_curl_load(err, errlen) < 0)
		goto fail;
	if (!(cl->curl = curl_easy_init())) {
		snprintf(err, errlen, "curl_easy_init failed");
		goto fail;
	}
	return cl;
fail:
	consul_client_free(cl);
	return NULL;
}

void consul_client_free(struct consul_client *cl)
{
	if (!cl)
		return;
	if (cl->curl)
		curl_easy_cleanup(cl->curl);
	if (cl->env_token.value) {
		explicit_bzero(cl->env_token.value, strlen(cl->env_token.value));
		free(cl->env_token.value);
	}
	free(cl->env_token.file);
	pthread_mutex_destroy(&cl->fd_mu);
	free(cl);
}

/*
 * The sockets of cl's connections go through these, so that an interrupt
 * can shut the one in use: libcurl looks at the abort flag only about once a
 * second in a blocking query, and that second came out of the release that
 * the next writer waits for (QA142 D4). Under fd_mu, so a socket curl has
 * closed (its number then free for reuse) is never shut.
 */
static curl_socket_t on_open_socket(void *arg, curlsocktype purpose, struct curl_sockaddr *a)
{
	struct consul_client *cl = arg;
	(void)purpose;
	pthread_mutex_lock(&cl->fd_mu);
	curl_socket_t fd = cl->interrupted ? CURL_SOCKET_BAD
					   : socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	if (fd != CURL_SOCKET_BAD)
		cl->fd = fd;
	pthread_mutex_unlock(&cl->fd_mu);
	return fd;
}

static int on_close_socket(void *arg, curl_socket_t fd)
{
	struct consul_client *cl = arg;
	pthread_mutex_lock(&cl->fd_mu);
	if (cl->fd == fd)
		cl->fd = CURL_SOCKET_BAD;
	int rc = close(fd);
	pthread_mutex_unlock(&cl->fd_mu);
	return rc;
}

void consul_client_interrupt(struct consul_client *cl, bool on)
{
	if (!cl)
		return;
	pthread_mutex_lock(&cl->fd_mu);
	cl->interrupted = on;
	if (on && cl->fd != CURL_SOCKET_BAD)
		(void)shutdown(cl->fd, SHUT_RDWR);
	pthread_mutex_unlock(&cl->fd_mu);
}

void consul_stop_init(struct consul_stop *s)
{
	atomic_init(&s->flag, 0);
	s->wakes = 0;
	pthread_mutex_init(&s->mu, NULL);
	/* pauses time out on the monotonic clock: a wall clock stepped back must not
	 * make the lock's thread sleep through its lease */
	pthread_condattr_t a;
	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	pthread_cond_init(&s->cv, &a);
	pthread_condattr_destroy(&a);
}

void consul_stop_destroy(struct consul_stop *s)
{
	pthread_cond_destroy(&s->cv);
	pthread_mutex_destroy(&s->mu);
}

void consul_stop_request(struct consul_stop *s)
{
	pthread_mutex_lock(&s->mu);
	atomic_store(&s->flag, 1);
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

void consul_stop_wake(struct consul_stop *s)
{
	pthread_mutex_lock(&s->mu);
	s->wakes++;
	pthread_cond_broadcast(&s->cv);
	pthread_mutex_unlock(&s->mu);
}

unsigned consul_stop_wakes(struct consul_stop *s)
{
	pthread_mutex_lock(&s->mu);
	unsigned w = s->wakes;
	pthread_mutex_unlock(&s->mu);
	return w;
}

bool consul_stop_nap(struct consul_stop *s, int64_t ms)
{
	return consul_stop_nap_since(s, ms, consul_stop_wakes(s));
}

bool consul_stop_nap_since(struct consul_stop *s, int64_t ms, unsigned seen)
{
	struct timespec ts;
	if (ms < 0)
		ms = 0;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	int64_t ns = ts.tv_nsec + (ms % 1000) * 1000000;
	ts.tv_sec += ms / 1000 + ns / 1000000000;
	ts.tv_nsec = ns % 1000000000;
	pthread_mutex_lock(&s->mu);
	while (!atomic_load(&s->flag) && s->wakes == seen)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
			break;
	pthread_mutex_unlock(&s->mu);
	return atomic_load(&s->flag) != 0;
}

void consul_client_abort_on(struct consul_client *cl, const atomic_int *flag)
{
	cl->abort_flag = flag;
}

static int on_progress(void *arg, curl_off_t dt, curl_off_t dn, curl_off_t ut, curl_off_t un)
{
	const atomic_int *flag = arg;
	return atomic_load(flag) != 0;
}

int consul_agent_check(const struct cfg_consul *c, char *err, size_t errlen)
{
	char tok[SECRET_MAX + 1], why[256];
	struct consul_client *cl = calloc(1, sizeof(*cl));
	int rc = -1;
	if (!cl) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	if (client_setup(cl, c, err, errlen) < 0)
		goto out;
	const struct cfg_secret *s = client_token(cl);
	const char *name = s == &cl->env_token ? (s->file ? "CONSUL_HTTP_TOKEN_FILE" : "CONSUL_HTTP_TOKEN")
					       : (s->file ? "consul.token-file" : "consul.token");
	tok[0] = '\0';
	if (secret_is_set(s) && secret_get(s, tok, sizeof(tok), why, sizeof(why)) < 0) {
		snprintf(err, errlen, "%s: %s", name, why);
		goto out;
	}
	if (strpbrk(tok, "\r\n")) {
		/* consul_call would refuse every request: a wait of lock.wait, then 111, forever */
		snprintf(err, errlen, "%s: the token contains a line break: it cannot be sent as the "
			 "X-Consul-Token header", name);
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(tok, sizeof(tok));
	consul_client_free(cl); /* no curl handle: frees the environment's token only */
	return rc;
}

const char *consul_client_addr(const struct consul_client *cl)
{
	return cl->base;
}

struct sink {
	struct consul_reply *r;
	size_t cap;
	bool too_large;
};

static size_t on_body(char *p, size_t size, size_t n, void *arg)
{
	struct sink *s = arg;
	size_t len = size * n;
	if (s->r->len + len > CONSUL_BODY_MAX) {
		s->too_large = true;
		return 0;
	}
	if (s->r->len + len + 1 > s->cap) {
		size_t cap = s->cap ? s->cap : 1024;
		while (cap < s->r->len + len + 1)
			cap *= 2;
		char *b = realloc(s->r->body, cap);
		if (!b)
			return 0;
		s->r->body = b;
		s->cap = cap;
	}
	memcpy(s->r->body + s->r->len, p, len);
	s->r->len += len;
	s->r->body[s->r->len] = '\0';
	return len;
}

static size_t on_header(char *p, size_t size, size_t n, void *arg)
{
	struct sink *s = arg;
	size_t len = size * n;
	static const char name[] = "x-consul-index:";
	if (len > sizeof(name) - 1 && strncasecmp(p, name, sizeof(name) - 1) == 0) {
		uint64_t v = 0;
		size_t i = sizeof(name) - 1;
		while (i < len && p[i] == ' ')
			i++;
		for (; i < len && p[i] >= '0' && p[i] <= '9'; i++)
			v = v * 10 + (uint64_t)(p[i] - '0');
		s->r->index = v;
	}
	return len;
}

int consul_call(struct consul_client *cl, const char *method, const char *path, const char *body,
		int64_t timeout_ms, struct consul_reply *r, char *err, size_t errlen)
{
	char url[2048], token[SECRET_MAX + 32], hdr[SECRET_MAX + 32], why[256];
	char ebuf[CURL_ERROR_SIZE] = "";
	struct curl_slist *hdrs = NULL;
	struct sink s = { .r = r };
	int rc = -1;
	CURL *h = cl->curl;

	memset(r, 0, sizeof(*r));
	if (timeout_ms < 1)
		timeout_ms = 1; /* 0 would be no limit to libcurl */
	int n = snprintf(url, sizeof(url), "%s%s", cl->base, path);
	if (n < 0 || (size_t)n >= sizeof(url)) {
		snprintf(err, errlen, "request path too long");
		return -1;
	}
	const struct cfg_secret *tok = client_token(cl);
	token[0] = '\0';
	if (secret_is_set(tok) && secret_get(tok, token, sizeof(token), why, sizeof(why)) < 0) {
		snprintf(err, errlen, "Consul token: %s", why);
		goto out;
	}
	if (strpbrk(token, "\r\n")) {
		/* it would end the header and start another: never sent */
		snprintf(err, errlen, "Consul token: it contains a line break");
		explicit_bzero(token, sizeof(token));
		goto out;
	}
	if (token[0]) {
		snprintf(hdr, sizeof(hdr), "X-Consul-Token: %s", token);
		hdrs = curl_slist_append(hdrs, hdr);
		explicit_bzero(hdr, sizeof(hdr));
	}
	explicit_bzero(token, sizeof(token));
	/* no "Expect: 100-continue" round trip for a small body */
	hdrs = curl_slist_append(hdrs, "Expect:");
	if (body)
		hdrs = curl_slist_append(hdrs, "Content-Type: application/json");
	if (!hdrs) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	curl_easy_reset(h);
	lazy_curl_defaults(h);
	curl_easy_setopt(h, CURLOPT_URL, url);
	curl_easy_setopt(h, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(h, CURLOPT_CUSTOMREQUEST, method);
	if (strcmp(method, "GET") == 0)
		curl_easy_setopt(h, CURLOPT_HTTPGET, 1L);
	else {
		curl_easy_setopt(h, CURLOPT_POSTFIELDS, body ? body : "");
		curl_easy_setopt(h, CURLOPT_POSTFIELDSIZE, (long)(body ? strlen(body) : 0));
	}
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, hdrs);
	curl_easy_setopt(h, CURLOPT_TIMEOUT_MS, (long)timeout_ms);
	curl_easy_setopt(h, CURLOPT_CONNECTTIMEOUT_MS, (long)(timeout_ms < 2000 ? timeout_ms : 2000));
	curl_easy_setopt(h, CURLOPT_WRITEFUNCTION, on_body);
	curl_easy_setopt(h, CURLOPT_WRITEDATA, &s);
	curl_easy_setopt(h, CURLOPT_HEADERFUNCTION, on_header);
	curl_easy_setopt(h, CURLOPT_HEADERDATA, &s);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, ebuf);
	curl_easy_setopt(h, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, on_open_socket);
	curl_easy_setopt(h, CURLOPT_OPENSOCKETDATA, cl);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETFUNCTION, on_close_socket);
	curl_easy_setopt(h, CURLOPT_CLOSESOCKETDATA, cl);
	if (cl->abort_flag) {
		curl_easy_setopt(h, CURLOPT_NOPROGRESS, 0L);
		curl_easy_setopt(h, CURLOPT_XFERINFOFUNCTION, on_progress);
		curl_easy_setopt(h, CURLOPT_XFERINFODATA, (void *)cl->abort_flag);
	}
	if (cl->ca_file && *cl->ca_file)
		curl_easy_setopt(h, CURLOPT_CAINFO, cl->ca_file);
	char ua[96];
	snprintf(ua, sizeof(ua), "litevisor/%s", litevisor_version());
	curl_easy_setopt(h, CURLOPT_USERAGENT, ua);
	CURLcode cc = curl_easy_perform(h);
	curl_easy_setopt(h, CURLOPT_ERRORBUFFER, NULL);
	curl_easy_setopt(h, CURLOPT_HTTPHEADER, NULL);
	if (cc != CURLE_OK) {
		if (s.too_large)
			snprintf(err, errlen, "answer larger than %u bytes", CONSUL_BODY_MAX);
		else
			snprintf(err, errlen, "%s", ebuf[0] ? ebuf : curl_easy_strerror(cc));
		goto out;
	}
	curl_easy_getinfo(h, CURLINFO_RESPONSE_CODE, &r->status);
	if (!r->body && !(r->body = strdup(""))) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	rc = 0;
out:
	if (hdrs) {
		/* the token header's text lives in the list's copy: wipe it before freeing */
		for (struct curl_slist *l = hdrs; l; l = l->next)
			explicit_bzero(l->data, strlen(l->data));
		curl_slist_free_all(hdrs);
	}
	return rc;
}

void consul_reply_release(struct consul_reply *r)
{
	free(r->body);
	memset(r, 0, sizeof(*r));
}

int consul_escape(const char *s, bool keep_slash, char *buf, size_t len)
{
	static const char hex[] = "0123456789ABCDEF";
	size_t o = 0;
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		bool plain = (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') ||
			     (*p >= '0' && *p <= '9') || strchr("-_.~", *p) || (keep_slash && *p == '/');
		if (o + (plain ? 1 : 3) >= len)
			return -1;
		if (plain) {
			buf[o++] = (char)*p;
		} else {
			buf[o++] = '%';
			buf[o++] = hex[*p >> 4];
			buf[o++] = hex[*p & 15];
		}
	}
	if (o >= len)
		return -1;
	buf[o] = '\0';
	return 0;
}

void consul_reply_text(const struct consul_reply *r, char *buf, size_t len)
{
	char line[200];
	const char *b = r->body ? r->body : "";
	size_t n = strcspn(b, "\r\n");
	if (n >= sizeof(line))
		n = sizeof(line) - 1;
	memcpy(line, b, n);
	line[n] = '\0';
	/* cut inside a UTF-8 character or not UTF-8 at all: never garble a JSON log line */
	utf8_repair(line, buf, len);
}

void consul_call_error(int rc, const struct consul_reply *r, const char *err, char *buf, size_t len)
{
	char text[200];
	if (rc < 0) {
		snprintf(buf, len, "%s", err);
		return;
	}
	consul_reply_text(r, text, sizeof(text));
	snprintf(buf, len, "HTTP %ld%s%s", r->status, text[0] ? ": " : "", text);
}
