/* bounded.c — a call on a thread of its own, waited for no longer than a deadline (see bounded.h). */
#include "common/bounded.h"

#include <errno.h>
#include <poll.h>
#include <pthread.h>
#include <stdlib.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/banned.h"

/* Heap, never freed when abandoned: the thread may still read it. */
struct bounded {
	void (*fn)(void *arg);
	void *arg;
	int efd;
	pthread_t thread;
};

static void *bounded_main(void *p)
{
	struct bounded *b = p;
	b->fn(b->arg);
	uint64_t one = 1;
	ssize_t n = write(b->efd, &one, sizeof(one));
	(void)n; /* an eventfd counter cannot overflow from one write */
	return NULL;
}

struct bounded *bounded_start(void (*fn)(void *arg), void *arg)
{
	struct bounded *b = malloc(sizeof(*b));
	if (!b)
		return NULL;
	*b = (struct bounded){ .fn = fn, .arg = arg, .efd = eventfd(0, EFD_CLOEXEC) };
	if (b->efd < 0 || pthread_create(&b->thread, NULL, bounded_main, b) != 0) {
		if (b->efd >= 0)
			close(b->efd);
		free(b);
		return NULL;
	}
	return b;
}

int bounded_done_fd(const struct bounded *b)
{
	return b->efd;
}

void bounded_finish(struct bounded *b)
{
	pthread_join(b->thread, NULL);
	close(b->efd);
	free(b);
}

int bounded_run(void (*fn)(void *arg), void *arg, int64_t deadline_ms)
{
	struct bounded *b = bounded_start(fn, arg);
	int rc;

	if (!b) {
		fn(arg);
		return 0;
	}
	struct pollfd pfd = { .fd = b->efd, .events = POLLIN };
	int64_t end = clock_mono_ms() + deadline_ms;
	do {
		int64_t left = end - clock_mono_ms();
		rc = poll(&pfd, 1, left > 0 ? (int)left : 0);
	} while (rc < 0 && errno == EINTR);
	if (rc <= 0)
		return -1;
	bounded_finish(b);
	return 0;
}
