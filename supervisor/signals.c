/* signals.c — block, ignore and read the signals `run` handles (see signals.h). */
#include "supervisor/signals.h"

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "common/banned.h"

static const int forwarded[] = { SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2,
				 SIGWINCH, SIGCONT };

static sigset_t original_mask;
static sigset_t handled;
static bool blocked;

static void handled_set(sigset_t *set)
{
	sigemptyset(set);
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		sigaddset(set, forwarded[i]);
	sigaddset(set, SIGCHLD);
}

int sig_block(void)
{
	if (blocked)
		return 0;
	handled_set(&handled);
	int rc = pthread_sigmask(SIG_BLOCK, &handled, &original_mask);
	if (rc != 0) {
		log_error("signals", "cannot block signals", "error=\"%s\"", strerror(rc));
		return -1;
	}
	blocked = true;
	struct sigaction sa;
	memset(&sa, 0, sizeof(sa));
	sa.sa_handler = SIG_IGN;
	sigemptyset(&sa.sa_mask);
	static const int ignored[] = { SIGPIPE, SIGTTIN, SIGTTOU };
	for (size_t i = 0; i < sizeof(ignored) / sizeof(ignored[0]); i++) {
		if (sigaction(ignored[i], &sa, NULL) < 0) {
			log_error("signals", "cannot ignore signal", "signal=%s error=\"%s\"",
				  sig_name(ignored[i]), strerror(errno));
			return -1;
		}
	}
	return 0;
}

const sigset_t *sig_original_mask(void)
{
	if (!blocked)
		pthread_sigmask(SIG_BLOCK, NULL, &original_mask);
	return &original_mask;
}

int sig_open_fd(void)
{
	int fd = signalfd(-1, &handled, SFD_NONBLOCK | SFD_CLOEXEC);
	if (fd < 0)
		log_error("signals", "signalfd failed", "error=\"%s\"", strerror(errno));
	return fd;
}

int sig_read(int fd)
{
	return sig_read_ex(fd, NULL);
}

int sig_read_ex(int fd, bool *kernel)
{
	struct signalfd_siginfo si;
	for (;;) {
		ssize_t n = read(fd, &si, sizeof(si));
		if (n == (ssize_t)sizeof(si)) {
			if (kernel)
				*kernel = si.ssi_code == SI_KERNEL;
			return (int)si.ssi_signo;
		}
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
			return 0;
		log_error("signals", "reading signalfd failed", "error=\"%s\"",
			  n < 0 ? strerror(errno) : "short read");
		return -1;
	}
}

bool sig_wait_done(int sfd, int done_fd, int grace_ms, bool (*is_stop)(int sig))
{
	int64_t deadline = clock_mono_ms() + grace_ms;
	bool watch = true; /* the signalfd, until it fails (then only the grace counts) */
	for (int64_t left; (left = deadline - clock_mono_ms()) > 0;) {
		struct pollfd pfd[2] = { { .fd = watch ? sfd : -1, .events = POLLIN },
					 { .fd = done_fd, .events = POLLIN } };
		if (poll(pfd, 2, (int)left) <= 0)
			continue; /* EINTR, or the deadline: the loop condition decides */
		if (pfd[1].revents & POLLIN)
			return true;
		int sig;
		while ((sig = sig_read(sfd)) > 0)
			if (!is_stop || is_stop(sig))
				return false;
		watch = sig == 0;
	}
	return false;
}

bool sig_is_forwarded(int sig)
{
	for (size_t i = 0; i < sizeof(forwarded) / sizeof(forwarded[0]); i++)
		if (forwarded[i] == sig)
			return true;
	return false;
}

bool sig_is_stop(int sig)
{
	return sig == SIGTERM || sig == SIGINT;
}

const char *sig_name(int sig)
{
	switch (sig) {
	case SIGHUP: return "HUP";
	case SIGINT: return "INT";
	case SIGQUIT: return "QUIT";
	case SIGTERM: return "TERM";
	case SIGUSR1: return "USR1";
	case SIGUSR2: return "USR2";
	case SIGWINCH: return "WINCH";
	case SIGCONT: return "CONT";
	case SIGCHLD: return "CHLD";
	case SIGKILL: return "KILL";
	case SIGPIPE: return "PIPE";
	case SIGTTIN: return "TTIN";
	case SIGTTOU: return "TTOU";
	case SIGSEGV: return "SEGV";
	case SIGABRT: return "ABRT";
	case SIGALRM: return "ALRM";
	case SIGSTOP: return "STOP";
	default: return "SIG?";
	}
}
