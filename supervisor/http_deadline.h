/*
 * http_deadline.h — a deadline for each HTTP request to arrive whole.
 *
 * libmicrohttpd's connection timeout is an idle timeout: a client that
 * trickles its request a byte at a time keeps its connection for ever. The
 * per-address limit keeps one such host from taking every slot, but a few
 * addresses (or one IPv6 host with several) could still take them all, and
 * the checkers (Nomad, Consul, Uptime-Kuma, Prometheus) got no answer: a
 * Nomad check_restart then restarted a healthy service in a loop (QA136 D2).
 * Every connection here carries one request (answers say Connection: close),
 * so a connection whose request has not been read whole within the deadline
 * of its accept is shut down, as nginx's client_header_timeout does.
 *
 * Contract: http_deadline_new() before the daemon starts; the daemon gets
 * http_deadline_notify as MHD_OPTION_NOTIFY_CONNECTION with the returned
 * object; the access handler calls http_deadline_answered() for each
 * request; http_deadline_free() after the daemon stopped.
 */
#ifndef LITEVISOR_SUP_HTTP_DEADLINE_H
#define LITEVISOR_SUP_HTTP_DEADLINE_H

#include <stdint.h>
#include <microhttpd.h>

struct http_deadline;

/*
 * Track up to slots connections, shutting down those whose request has not
 * arrived whole ms after their accept (a watcher thread looks every second).
 * NULL on failure (logged): the server then runs without the deadline.
 */
struct http_deadline *http_deadline_new(unsigned slots, int64_t ms);

/* MHD_NotifyConnectionCallback: cls is the http_deadline. */
void http_deadline_notify(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code);

/* The request on c was read whole (the access handler runs): no deadline for it now. */
void http_deadline_answered(struct http_deadline *dl, struct MHD_Connection *c);

/* Stop the watcher and free dl (NULL is fine). */
void http_deadline_free(struct http_deadline *dl);

#endif
