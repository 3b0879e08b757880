/* http_deadline.c — a deadline for each HTTP request to arrive whole (see http_deadline.h). */
#include "supervisor/http_deadline.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/banned.h"

#define WATCH_EVERY_MS 1000 /* a deadline of seconds needs no finer look; idle, one wakeup a second */

struct slot {
	struct MHD_Connection *c; /* NULL: free */
	int fd;
	int64_t since_mono;       /* accepted */
	bool done;                /* its request arrived whole, or it was shut down */
};

struct http_deadline {
	pthread_mutex_t mu;       /* guards slots */
	struct slot *slots;
	unsigned n;
	int64_t ns;
	int stop_fd;              /* eventfd: the watcher ends when it is written */
	pthread_t watcher;
};

/* Shut down every connection past the deadline; its next read in the daemon ends it. */
static void shut_late(struct http_deadline *dl)
{
	int64_t now = clock_mono_ns();
	unsigned late = 0;
	pthread_mutex_lock(&dl->mu);
	for (unsigned i = 0; i < dl->n; i++) {
		struct slot *s = &dl->slots[i];
		if (!s->c || s->done || now - s->since_mono < dl->ns)
			continue;
		/* under mu: the daemon closes the socket only after its CLOSED notice */
		(void)shutdown(s->fd, SHUT_RDWR);
		s->done = true;
		late++;
	}
	pthread_mutex_unlock(&dl->mu);
	if (late)
		log_debug("http", "connections shut down: no whole request within the deadline",
			  "count=%u deadline_ms=%lld", late, (long long)(dl->ns / NS_PER_MS));
}

static void *watch(void *arg)
{
	struct http_deadline *dl = arg;
	struct pollfd p = { .fd = dl->stop_fd, .events = POLLIN };
	while (poll(&p, 1, WATCH_EVERY_MS) >= 0 || errno == EINTR) {
		if (p.revents)
			break;
		shut_late(dl);
	}
	return NULL;
}

struct http_deadline *http_deadline_new(unsigned slots, int64_t ms)
{
	struct http_deadline *dl = calloc(1, sizeof(*dl));
	if (!dl || !(dl->slots = calloc(slots, sizeof(*dl->slots)))) {
		log_warn("http", "out of memory: no deadline for requests", NULL);
		free(dl);
		return NULL;
	}
	dl->n = slots;
	dl->ns = ms * NS_PER_MS;
	pthread_mutex_init(&dl->mu, NULL);
	int rc = -1;
	if ((dl->stop_fd = eventfd(0, EFD_CLOEXEC)) >= 0 &&
	    (rc = pthread_create(&dl->watcher, NULL, watch, dl)) == 0)
		return dl;
	log_warn("http", "cannot start the request deadline's watcher: no deadline for requests",
		 "error=\"%s\"", strerror(dl->stop_fd < 0 ? errno : rc));
	if (dl->stop_fd >= 0)
		close(dl->stop_fd);
	pthread_mutex_destroy(&dl->mu);
	free(dl->slots);
	free(dl);
	return NULL;
}

void http_deadline_notify(void *cls, struct MHD_Connection *c, void **socket_context,
			  enum MHD_ConnectionNotificationCode code)
{
	struct http_deadline *dl = cls;
	pthread_mutex_lock(&dl->mu);
	if (code == MHD_CONNECTION_NOTIFY_STARTED) {
		const union MHD_ConnectionInfo *fd = MHD_get_connection_info(
			c, MHD_CONNECTION_INFO_CONNECTION_FD);
		*socket_context = NULL;
		for (unsigned i = 0; fd && i < dl->n; i++) {
			if (dl->slots[i].c)
				continue;
			dl->slots[i] = (struct slot){ c, fd->connect_fd, clock_mono_ns(), false };
			*socket_context = &dl->slots[i];
			break;
		}
	} else if (code == MHD_CONNECTION_NOTIFY_CLOSED && *socket_context) {
		memset(*socket_context, 0, sizeof(struct slot));
		*socket_context = NULL;
	}
	pthread_mutex_unlock(&dl->mu);
}

void http_deadline_answered(struct http_deadline *dl, struct MHD_Connection *c)
{
	if (!dl)
		return;
	const union MHD_ConnectionInfo *i = MHD_get_connection_info(
		c, MHD_CONNECTION_INFO_SOCKET_CONTEXT);
	pthread_mutex_lock(&dl->mu);
	struct slot *s = i ? i->socket_context : NULL;
	if (s && s->c == c)
		s->done = true;
	pthread_mutex_unlock(&dl->mu);
}

void http_deadline_free(struct http_deadline *dl)
{
	if (!dl)
		return;
	uint64_t one = 1;
	if (write(dl->stop_fd, &one, sizeof(one)) != (ssize_t)sizeof(one)) {
		/* an eventfd that cannot count to 1: left as it is, never freed under its watcher */
		log_warn("http", "cannot stop the request deadline's watcher", "error=\"%s\"",
			 strerror(errno));
		return;
	}
	pthread_join(dl->watcher, NULL);
	close(dl->stop_fd);
	pthread_mutex_destroy(&dl->mu);
	free(dl->slots);
	free(dl);
}
