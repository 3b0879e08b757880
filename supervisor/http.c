/* http.c — libmicrohttpd server for /livez /readyz /healthz /metrics (see http.h). */
#include "supervisor/http.h"

#include <arpa/inet.h>
#include <errno.h>
#include <microhttpd.h>
#include <netdb.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "common/lazy_mhd.h"
#include "common/log.h"
#include "nomad/env.h"
#include "supervisor/http_deadline.h"
#include "supervisor/health.h"
#include "supervisor/metrics.h"
#include "supervisor/reaper.h"
#include "supervisor/text.h"
#include "common/banned.h"

/* Bounds /metrics with many databases and replicas (~1 KiB per replica and family set). */
#define METRICS_MAX (8 * 1024 * 1024)

struct http_server {
	struct MHD_Daemon *daemon;
	struct sup_state *state;
	const struct config *cfg;
	enum http_mode mode;
	struct http_deadline *deadline; /* NULL: none (it could not start) */
	pthread_mutex_t lock;   /* guards status_fn/status_ctx */
	http_status_fn status_fn;
	void *status_ctx;
	int port;
};

/* Can this host take IPv6 and IPv4 on one socket? (ipv6.disable=1 kernels cannot) */
static bool ipv6_available(void)
{
	int fd = socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return false;
	int off = 0;
	bool ok = setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &off, sizeof(off)) == 0;
	close(fd);
	return ok;
}

/*
 * Every interface on port: ":9090" as Go's listener (and so Litestream)
 * takes it, IPv6 too: one dual-stack socket on [::], or 0.0.0.0 where the
 * kernel has no IPv6. 1, or -1 (err set).
 */
static int any_addr(const char *port, struct sockaddr_storage *sa, socklen_t *salen, char *desc,
		    size_t desclen, char *err, size_t errlen)
{
	char *end;
	long p = strtol(port, &end, 10);
	if (*end || p < 0 || p > 65535) {
		snprintf(err, errlen, "invalid port \"%s\"", port);
		return -1;
	}
	memset(sa, 0, sizeof(*sa));
	if (ipv6_available()) {
		struct sockaddr_in6 *in6 = (struct sockaddr_in6 *)sa;
		in6->sin6_family = AF_INET6;
		in6->sin6_port = htons((uint16_t)p);
		in6->sin6_addr = in6addr_any;
		*salen = sizeof(*in6);
		snprintf(desc, desclen, "[::]:%s", port);
		return 1;
	}
	struct sockaddr_in *in = (struct sockaddr_in *)sa;
	in->sin_family = AF_INET;
	in->sin_port = htons((uint16_t)p);
	in->sin_addr.s_addr = htonl(INADDR_ANY);
	*salen = sizeof(*in);
	snprintf(desc, desclen, "0.0.0.0:%s", port);
	return 1;
}

int http_resolve_addr(const struct config *cfg, struct sockaddr_storage *sa, socklen_t *salen,
		      char *desc, size_t desclen, char *err, size_t errlen)
{
	char host[256] = "", port[16] = "";
	const char *label = cfg->health.port_label;
	int nport = label ? nomad_port(label) : 0;
	if (nport < 0) {
		snprintf(err, errlen, "NOMAD_PORT_%s is not a port number", label);
		return -1;
	}
	if (nport > 0) {
		const char *ip = nomad_ip(label);
		snprintf(host, sizeof(host), "%s", ip ? ip : "");
		snprintf(port, sizeof(port), "%d", nport);
	} else if (cfg->addr && *cfg->addr) {
		if (config_addr_split(cfg->addr, host, sizeof(host), port, sizeof(port)) < 0) {
			snprintf(err, errlen, "addr: invalid address \"%s\" (expected HOST:PORT, "
				 "[IPV6]:PORT or :PORT)", cfg->addr);
			return -1;
		}
	} else {
		return 0;
	}
	memset(sa, 0, sizeof(*sa));
	if (!*host)
		return any_addr(port, sa, salen, desc, desclen, err, errlen);
	struct addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	int rc = getaddrinfo(host, port, &hints, &res);
	if (rc != 0 || !res) {
		snprintf(err, errlen, "cannot resolve listen address \"%s\": %s", host,
			 rc ? gai_strerror(rc) : "no address");
		return -1;
	}
	memcpy(sa, res->ai_addr, res->ai_addrlen);
	*salen = res->ai_addrlen;
	freeaddrinfo(res);
	snprintf(desc, desclen, "%s%s%s:%s", strchr(host, ':') ? "[" : "", host,
		 strchr(host, ':') ? "]" : "", port);
	return 1;
}

static int get_status(struct http_server *srv, struct engine_status *st)
{
	int rc = 1; /* nothing to show */
	memset(st, 0, sizeof(*st));
	pthread_mutex_lock(&srv->lock);
	if (srv->status_fn)
		rc = srv->status_fn(srv->status_ctx, st);
	pthread_mutex_unlock(&srv->lock);
	return rc;
}

static enum MHD_Result respond(struct MHD_Connection *c, unsigned code, const char *type,
			       char *body, size_t len)
{
	struct MHD_Response *r =
		MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_FREE);
	if (!r) {
		free(body);
		return MHD_NO;
	}
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONTENT_TYPE, type);
	MHD_add_response_header(r, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store");
	if (code == 405)
		MHD_add_response_header(r, MHD_HTTP_HEADER_ALLOW, "GET, HEAD"); /* RFC 9110 §15.5.6 */
	/* Keep-alive clients could hold every slot of the connection limit. */
	MHD_add_response_header(r, MHD_HTTP_HEADER_CONNECTION, "close");
	enum MHD_Result ret = MHD_queue_response(c, code, r);
	MHD_destroy_response(r);
	return ret;
}

/* A one-line plain answer: prefix + msg + "\n". */
static enum MHD_Result respond_text(struct MHD_Connection *c, unsigned code, const char *prefix,
				    const char *msg)
{
	char *body = NULL;
	int n = asprintf(&body, "%s%s\n", prefix, msg);
	if (n < 0)
		return MHD_NO;
	return respond(c, code, "text/plain; charset=utf-8", body, (size_t)n);
}

/* /readyz's rule: health.h's for a service; without one, replication has started. */
static bool ready(const struct http_server *srv, const struct sup_snapshot *snap, char *why,
		  size_t whylen)
{
	if (srv->mode == HTTP_SERVICE)
		return health_ready(snap, why, whylen);
	if (snap->phase != SUP_RUNNING) {
		snprintf(why, whylen, "%s", snap->reason[0] ? snap->reason : sup_phase_name(snap->phase));
		return false;
	}
	return true;
}

/*
 * ?warn=CODE: the status code a "warn" document answers instead of 200, for
 * checkers with a warning state of their own (Consul: 429 is "warning").
 * 0 when absent; -1 when not a code from 200 to 599.
 */
static int warn_code(struct MHD_Connection *c)
{
	const char *w = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "warn");
	if (!w)
		return 0;
	if (strlen(w) != 3 || strspn(w, "0123456789") != 3 || w[0] < '2' || w[0] > '5')
		return -1;
	return (w[0] - '0') * 100 + (w[1] - '0') * 10 + (w[2] - '0');
}

static enum MHD_Result serve_health(struct http_server *srv, struct MHD_Connection *c,
				    const struct sup_snapshot *snap)
{
	struct engine_status st;
	int warn = warn_code(c);
	if (warn < 0)
		return respond_text(c, 400, "", "warn: expected an HTTP status code from 200 to 599");
	int have = get_status(srv, &st) == 0;
	struct health_view v = { snap, have ? &st : NULL, srv->cfg, clock_wall_ns(), clock_mono_ns(),
				 srv->mode == HTTP_NO_SERVICE };
	int code = 503;
	char *body = health_render(&v, &code);
	char why[8];
	if (body && warn && code == 200 && health_overall(&v, why, sizeof(why)) == HEALTH_WARN)
		code = warn;
	if (have)
		engine_status_release(&st);
	if (!body)
		return respond_text(c, 500, "", "out of memory");
	return respond(c, (unsigned)code, "application/health+json", body, strlen(body));
}

static enum MHD_Result serve_metrics(struct http_server *srv, struct MHD_Connection *c,
				     const struct sup_snapshot *snap)
{
	struct engine_status st;
	struct metrics_proc proc;
	struct text t = TEXT_INIT(METRICS_MAX);
	char why[8];
	int have = get_status(srv, &st) == 0;
	metrics_proc_read(&proc);
	struct metrics_view v = { snap, have ? &st : NULL, &proc, reaper_orphans_total(),
				  ready(srv, snap, why, sizeof(why)), srv->mode == HTTP_NO_SERVICE };
	int rc = metrics_render(&v, &t);
	if (have)
		engine_status_release(&st);
	size_t len = 0;
	char *body = rc == 0 ? text_detach(&t, &len) : NULL;
	text_release(&t);
	if (!body)
		return respond_text(c, 500, "", "metrics too large or out of memory");
	return respond(c, 200, METRICS_CONTENT_TYPE, body, len);
}

static enum MHD_Result handler(void *cls, struct MHD_Connection *c, const char *url,
			       const char *method, const char *version, const char *upload_data,
			       size_t *upload_data_size, void **con_cls)
{
	struct http_server *srv = cls;
	static const char *const paths[] = { "/livez", "/readyz", "/healthz", "/status", "/metrics" };
	http_deadline_answered(srv->deadline, c); /* the request is here whole */
	bool known = false;
	for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]) && !known; i++)
		known = !strcmp(url, paths[i]);
	if (!known)
		return respond_text(c, 404, "",
				    "not found (try /livez, /readyz, /healthz, /status, /metrics)");
	if (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0)
		return respond_text(c, 405, "", "method not allowed (GET or HEAD)");
	struct sup_snapshot snap;
	char why[300];
	sup_state_get(srv->state, &snap);
	if (!strcmp(url, "/livez")) {
		if (health_alive(&snap, clock_mono_ns(), why, sizeof(why)))
			return respond_text(c, 200, "", "ok");
		return respond_text(c, 503, "not alive: ", why);
	}
	if (!strcmp(url, "/readyz")) {
		if (ready(srv, &snap, why, sizeof(why)))
			return respond_text(c, 200, "", "ok");
		return respond_text(c, 503, "not ready: ", why);
	}
	if (!strcmp(url, "/healthz") || !strcmp(url, "/status"))
		return serve_health(srv, c, &snap);
	return serve_metrics(srv, c, &snap); /* the last known path */
}

/*
 * libmicrohttpd's own messages, at most MHD_LOG_BURST per MHD_LOG_WINDOW_MS: out of
 * descriptors, it retries accept() in a busy loop and says so at every turn (QA49 #2:
 * 13 GB of log in 10 minutes from one health check). The rest are counted, and the
 * count is logged when the next window opens.
 */
#define MHD_LOG_BURST 10
#define MHD_LOG_WINDOW_MS 60000

static void mhd_log(void *cls, const char *fmt, va_list ap)
{
	static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
	static int64_t window_start;
	static unsigned in_window;
	static unsigned long long dropped;
	(void)cls;
	int64_t now = clock_mono_ms();
	unsigned long long said_dropped = 0;
	pthread_mutex_lock(&mu);
	if (!window_start || now - window_start >= MHD_LOG_WINDOW_MS) {
		window_start = now;
		in_window = 0;
		said_dropped = dropped;
		dropped = 0;
	}
	bool say = in_window < MHD_LOG_BURST;
	if (say)
		in_window++;
	else
		dropped++;
	bool last = say && in_window == MHD_LOG_BURST;
	pthread_mutex_unlock(&mu);
	if (said_dropped)
		log_warn("http", "libmicrohttpd messages not logged", "count=%llu window_s=%d",
			 said_dropped, MHD_LOG_WINDOW_MS / 1000);
	if (!say)
		return;
	char msg[512];
	vsnprintf(msg, sizeof(msg), fmt, ap);
	size_t n = strlen(msg);
	while (n && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
		msg[--n] = '\0';
	log_warn("http", "libmicrohttpd", "detail=\"%s\"%s", msg,
		 last ? " more=\"further messages this minute are counted, "
					    "not logged\"" : "");
}

int http_serve_configured(const struct config *cfg, struct sup_state *state, enum http_mode mode,
			  struct http_server **srv)
{
	struct sockaddr_storage sa;
	socklen_t salen;
	char where[300], err[512];

	*srv = NULL;
	int have = http_resolve_addr(cfg, &sa, &salen, where, sizeof(where), err, sizeof(err));
	if (have < 0) {
		log_error("http", "invalid listen address", "error=\"%s\"", err);
		return 100;
	}
	if (have == 0) {
		if (cfg->health.port_label)
			log_warn("http", "no HTTP server: health.port-label is set but Nomad gave no such port and addr is unset",
				 "label=%s", cfg->health.port_label);
		return 0;
	}
	errno = 0;
	*srv = http_start_mode(&sa, state, cfg, mode);
	const char *label = cfg->health.port_label;
	char port[16];
	if (!*srv && errno == EADDRNOTAVAIL && label && nomad_port(label) > 0 && nomad_ip(label)) {
		/*
		 * NOMAD_IP_<label> is the host's address: a Docker task (its own
		 * network namespace, the port mapped to NOMAD_PORT_<label>) has no
		 * such address, and the Docker port map reaches every interface of
		 * the container (QA93 O4).
		 */
		snprintf(port, sizeof(port), "%d", nomad_port(label));
		log_info("http", "NOMAD_IP_<label> is not an address here (a task in its own network "
			 "namespace, as under Docker): listening on every interface",
			 "label=%s ip=%s port=%s", label, nomad_ip(label), port);
		if (any_addr(port, &sa, &salen, where, sizeof(where), err, sizeof(err)) > 0) {
			errno = 0;
			*srv = http_start_mode(&sa, state, cfg, mode);
		}
	}
	if (!*srv) {
		int e = errno ? errno : EADDRINUSE;
		/* a port below 1024 without the right: no retry will get it (QA89 O3) */
		log_error("http", "cannot listen", "addr=%s error=\"%s\"%s", where, strerror(e),
			  e == EACCES ? " hint=\"a port below 1024 needs root or "
					"CAP_NET_BIND_SERVICE\"" : "");
		return e == EACCES ? 100 : 111;
	}
	log_info("http", "listening", "addr=%s port=%d", where, http_port(*srv));
	return 0;
}

struct http_server *http_start_mode(const struct sockaddr_storage *sa, struct sup_state *state,
				    const struct config *cfg, enum http_mode mode)
{
	char why[512];
	if (lazy_mhd_load(why, sizeof(why)) < 0) {
		log_error("http", "cannot serve health and metrics", "error=\"%s\"", why);
		errno = ELIBACC;
		return NULL;
	}
	struct http_server *srv = calloc(1, sizeof(*srv));
	if (!srv) {
		log_error("http", "out of memory", NULL);
		return NULL;
	}
	srv->state = state;
	srv->cfg = cfg;
	srv->mode = mode;
	pthread_mutex_init(&srv->lock, NULL);
	srv->deadline = http_deadline_new(HTTP_CONNECTION_LIMIT, HTTP_REQUEST_DEADLINE_S * 1000);
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_AUTO | MHD_USE_ERROR_LOG;
	if (sa->ss_family == AF_INET6)
		flags |= IN6_IS_ADDR_UNSPECIFIED(&((const struct sockaddr_in6 *)sa)->sin6_addr)
			 ? MHD_USE_DUAL_STACK : MHD_USE_IPv6;
	uint16_t port = sa->ss_family == AF_INET6 ? ntohs(((const struct sockaddr_in6 *)sa)->sin6_port)
						  : ntohs(((const struct sockaddr_in *)sa)->sin_port);
	srv->daemon = MHD_start_daemon(flags, port, NULL, NULL, handler, srv,
				       MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
				       MHD_OPTION_SOCK_ADDR, (const struct sockaddr *)sa,
				       MHD_OPTION_CONNECTION_LIMIT, (unsigned)HTTP_CONNECTION_LIMIT,
				       MHD_OPTION_PER_IP_CONNECTION_LIMIT,
				       (unsigned)HTTP_PER_IP_CONNECTION_LIMIT,
				       MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)HTTP_CONNECTION_TIMEOUT_S,
				       srv->deadline ? MHD_OPTION_NOTIFY_CONNECTION : MHD_OPTION_END,
				       http_deadline_notify, srv->deadline,
				       MHD_OPTION_END);
	if (!srv->daemon) {
		int e = errno;
		http_deadline_free(srv->deadline);
		pthread_mutex_destroy(&srv->lock);
		free(srv);
		errno = e;
		return NULL;
	}
	const union MHD_DaemonInfo *info = MHD_get_daemon_info(srv->daemon, MHD_DAEMON_INFO_BIND_PORT);
	srv->port = info ? info->port : port;
	return srv;
}

int http_port(const struct http_server *srv)
{
	return srv ? srv->port : 0;
}

void http_set_status_source(struct http_server *srv, http_status_fn fn, void *ctx)
{
	if (!srv)
		return;
	pthread_mutex_lock(&srv->lock);
	srv->status_fn = fn;
	srv->status_ctx = ctx;
	pthread_mutex_unlock(&srv->lock);
}

void http_stop(struct http_server *srv)
{
	if (!srv)
		return;
	MHD_stop_daemon(srv->daemon);
	http_deadline_free(srv->deadline);
	pthread_mutex_destroy(&srv->lock);
	free(srv);
}
