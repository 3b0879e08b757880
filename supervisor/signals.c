/* signals.c — block, ignore and read the signals `run` handles (see signals.h). */
#include "supervisor/signals.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common/bounded.h"
#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "common/banned.h"

/* Never blocked: cannot be caught, or synchronous faults of the thread that caused them. */
static const int unblockable[] = { SIGKILL, SIGSTOP, SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT,
				   SIGSYS, SIGTRAP };
/* Ignored rather than blocked (signals.h says why). */
static const int ignored[] = { SIGPIPE, SIGXFSZ, SIGTTIN, SIGTTOU };

static sigset_t original_mask;
static sigset_t handled;
static bool blocked;

static bool among(int sig, const int *v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (v[i] == sig)
			return true;
	return false;
}

/* Every catchable asynchronous signal: 1..31 less the above, then SIGRTMIN..SIGRTMAX. */
static void handled_set(sigset_t *set)
{
	sigemptyset(set);
	for (int sig = 1; sig <= SIGRTMAX; sig++) {
		if (sig < SIGRTMIN && sig >= 32)
			continue; /* glibc's own (SIGRTMIN is already past them) */
		if (among(sig, unblockable, sizeof(unblockable) / sizeof(unblockable[0])) ||
		    among(sig, ignored, sizeof(ignored) / sizeof(ignored[0])))
			continue;
		sigaddset(set, sig);
	}
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
	return sig_read_ex(fd, NULL, NULL);
}

int sig_read_ex(int fd, bool *kernel, pid_t *from)
{
	struct signalfd_siginfo si;
	for (;;) {
		ssize_t n = read(fd, &si, sizeof(si));
		if (n == (ssize_t)sizeof(si)) {
			/*
			 * litevisor's own, to its process group (a service stopped by the
			 * terminal continued, lifecycle.c): not news to forward, or the
			 * service is continued again and again (QA144 D3)
			 */
			if (si.ssi_code == SI_USER && (pid_t)si.ssi_pid == getpid())
				continue;
			if (kernel)
				*kernel = si.ssi_code == SI_KERNEL;
			if (from)
				*from = si.ssi_code == SI_USER ? (pid_t)si.ssi_pid : 0;
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

int sig_wait_fd(int sfd, int fd, void (*tick)(void *arg), void *arg)
{
	for (;;) {
		struct pollfd pfd[2] = { { .fd = sfd, .events = POLLIN }, { .fd = fd, .events = POLLIN } };
		int rc = poll(pfd, 2, 1000);
		if (rc < 0 && errno != EINTR) {
			log_error("signals", "poll failed", "error=\"%s\"", strerror(errno));
			clock_sleep_ms(100);
		}
		tick(arg);
		int sig;
		while ((sig = sig_read(sfd)) > 0) {
			if (sig_ends_idle(sig))
				return sig;
			if (sig == SIGTSTP)
				sig_job_stop();
			else if (sig != SIGCHLD)
				log_info("signals", "signal dropped: no service running yet", "signal=%s",
					 sig_name(sig));
		}
		if (rc > 0 && (pfd[1].revents & POLLIN))
			return 0;
	}
}

void sig_run_noting(int sfd, const char *what, void (*fn)(void *arg), void *arg,
		    void (*tick)(void *targ), void *targ)
{
	struct bounded *b = bounded_start(fn, arg);
	if (!b) {
		fn(arg);
		return;
	}
	for (bool done = false; !done;) {
		struct pollfd pfd[2] = { { .fd = bounded_done_fd(b), .events = POLLIN },
					 { .fd = sfd, .events = POLLIN } };
		int rc = poll(pfd, sfd >= 0 ? 2 : 1, 1000);
		if (rc < 0 && errno != EINTR) {
			log_error("signals", "poll failed", "error=\"%s\"", strerror(errno));
			clock_sleep_ms(100);
		}
		done = rc > 0 && (pfd[0].revents & POLLIN);
		if (tick)
			tick(targ);
		int sig;
		while (sfd >= 0 && (sig = sig_read(sfd)) > 0) {
			if (sig_ends_idle(sig)) /* QUIT too: no service is left to take it */
				log_warn("signals", "signal received while stopping: the stop goes on; only "
					 "SIGKILL cuts it short, losing what is not done", "signal=%s "
					 "doing=\"%s\"", sig_name(sig), what);
			else if (sig == SIGTSTP)
				/* stopped, the flush's deadline and the orchestrator's would run on */
				log_info("signals", "signal dropped while stopping", "signal=%s doing=\"%s\"",
					 sig_name(sig), what);
		}
	}
	bounded_finish(b);
}

bool sig_is_forwarded(int sig)
{
	return sig > 0 && sig != SIGCHLD && sigismember(&handled, sig) == 1;
}

/* ppid, pgrp and session of /proc/<pid>/stat, in /proc's numbering. 0, or -1. */
static int proc_ids(const char *pid, pid_t *ppid, pid_t *pgrp, pid_t *sid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	if (fs_read_text(path, buf, sizeof(buf)) < 0)
		return -1;
	const char *p = strrchr(buf, ')'); /* the name may hold anything */
	long a, b, c;
	if (!p || sscanf(p + 1, " %*c %ld %ld %ld", &a, &b, &c) != 3)
		return -1;
	*ppid = (pid_t)a;
	*pgrp = (pid_t)b;
	*sid = (pid_t)c;
	return 0;
}

/*
 * Is litevisor's process group orphaned (POSIX): no member has a parent in
 * another group of the same session? Then no job-control shell waits on it,
 * and the kernel ignores the terminal's stops for a plain program there.
 * Read in /proc's numbering throughout (/proc/self for litevisor's own).
 * False when it cannot be told.
 */
static bool group_orphaned(void)
{
	pid_t ppid, pgrp, sid;
	if (proc_ids("self", &ppid, &pgrp, &sid) < 0)
		return false;
	DIR *d = opendir("/proc");
	if (!d)
		return false;
	bool seen = false, orphaned = true, unknown = false;
	struct dirent *e;
	while (orphaned && (e = readdir(d))) {
		pid_t pp, g, s, pg, ps;
		if (!isdigit((unsigned char)e->d_name[0]) || proc_ids(e->d_name, &pp, &g, &s) < 0 ||
		    g != pgrp)
			continue;
		seen = true;
		char parent[32];
		snprintf(parent, sizeof(parent), "%ld", (long)pp);
		if (pp <= 0)
			continue; /* its parent lies outside this pid namespace: not in the session */
		if (proc_ids(parent, &(pid_t){ 0 }, &pg, &ps) < 0)
			unknown = true; /* hidden (hidepid) or gone: cannot be told (QA146 D3) */
		else if (pg != pgrp && ps == sid)
			orphaned = false;
	}
	closedir(d);
	return seen && orphaned && !unknown;
}

bool sig_job_control(void)
{
	return getpid() != 1 && !group_orphaned();
}

bool sig_job_stop(void)
{
	return sig_job_stop_group(false);
}

bool sig_job_stop_group(bool whole)
{
	if (getpid() == 1)
		return false;
	if (group_orphaned()) {
		/*
		 * Nothing would continue it (ssh -t, docker exec -it, script: litevisor
		 * leads the session), replication and health stopped for good while a
		 * service in its group ran on (QA144 D4): as the kernel does for a
		 * plain program there, the stop is not made.
		 */
		log_info("signals", "not stopping litevisor itself: its process group is orphaned "
			 "(no job-control shell could continue it)", NULL);
		return false;
	}
	log_info("signals", whole ? "stopping litevisor's process group until SIGCONT (job control)"
				  : "stopping litevisor itself until SIGCONT (job control)", NULL);
	/* a signal to oneself is acted on before kill() returns: this returns once continued */
	if (kill(whole ? 0 : getpid(), SIGSTOP) < 0)
		return false;
	log_info("signals", "continued", NULL);
	return true;
}

bool sig_is_stop(int sig)
{
	return sig == SIGTERM || sig == SIGINT;
}

bool sig_ends_idle(int sig)
{
	return sig_is_stop(sig) || sig == SIGQUIT;
}

/* "RTMIN+n" for n up to 32 (Linux has SIGRTMAX - SIGRTMIN = 30). */
static const char *const rt_names[] = {
	"RTMIN",    "RTMIN+1",  "RTMIN+2",  "RTMIN+3",  "RTMIN+4",  "RTMIN+5",  "RTMIN+6",
	"RTMIN+7",  "RTMIN+8",  "RTMIN+9",  "RTMIN+10", "RTMIN+11", "RTMIN+12", "RTMIN+13",
	"RTMIN+14", "RTMIN+15", "RTMIN+16", "RTMIN+17", "RTMIN+18", "RTMIN+19", "RTMIN+20",
	"RTMIN+21", "RTMIN+22", "RTMIN+23", "RTMIN+24", "RTMIN+25", "RTMIN+26", "RTMIN+27",
	"RTMIN+28", "RTMIN+29", "RTMIN+30", "RTMIN+31", "RTMIN+32",
};

const char *sig_name(int sig)
{
	switch (sig) {
	case SIGHUP: return "HUP";
	case SIGINT: return "INT";
	case SIGQUIT: return "QUIT";
	case SIGILL: return "ILL";
	case SIGTRAP: return "TRAP";
	case SIGABRT: return "ABRT";
	case SIGBUS: return "BUS";
	case SIGFPE: return "FPE";
	case SIGKILL: return "KILL";
	case SIGUSR1: return "USR1";
	case SIGSEGV: return "SEGV";
	case SIGUSR2: return "USR2";
	case SIGPIPE: return "PIPE";
	case SIGALRM: return "ALRM";
	case SIGTERM: return "TERM";
#ifdef SIGSTKFLT
	case SIGSTKFLT: return "STKFLT";
#endif
	case SIGCHLD: return "CHLD";
	case SIGCONT: return "CONT";
	case SIGSTOP: return "STOP";
	case SIGTSTP: return "TSTP";
	case SIGTTIN: return "TTIN";
	case SIGTTOU: return "TTOU";
	case SIGURG: return "URG";
	case SIGXCPU: return "XCPU";
	case SIGXFSZ: return "XFSZ";
	case SIGVTALRM: return "VTALRM";
	case SIGPROF: return "PROF";
	case SIGWINCH: return "WINCH";
	case SIGIO: return "IO";
#ifdef SIGPWR
	case SIGPWR: return "PWR";
#endif
	case SIGSYS: return "SYS";
	default: break;
	}
	if (sig == SIGRTMAX)
		return "RTMAX";
	if (sig >= SIGRTMIN && sig - SIGRTMIN < (int)(sizeof(rt_names) / sizeof(rt_names[0])))
		return rt_names[sig - SIGRTMIN];
	return "SIG?";
}
