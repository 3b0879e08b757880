/* lifecycle.c — the supervisor's state × event loop (see lifecycle.h). */
#include "supervisor/lifecycle.h"

#include <dirent.h>
#include <errno.h>
#include <jansson.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/fsutil.h"
#include "common/log.h"
#include "supervisor/child.h"
#include "supervisor/consul_link.h"
#include "supervisor/dbs.h"
#include "supervisor/http.h"
#include "supervisor/probe.h"
#include "supervisor/push.h"
#include "supervisor/reaper.h"
#include "supervisor/signals.h"
#include "supervisor/state.h"
#include "supervisor/svcenv.h"
#include "common/banned.h"

/* After SIGKILL, how long to wait for the kernel to deliver the last exits. */
#define KILL_WAIT_MS 2000
/* The loop turns at least this often (heartbeat for /livez). */
#define TICK_MS 1000
/* While stopping, look this often for processes re-parented to litevisor (reaper.h). */
#define SWEEP_MS 100
/* How long restores get to stop and clean up after a stop signal. */
#define RESTORE_STOP_GRACE_MS 1000

struct sup {
	const struct config *cfg;
	char *const *argv;
	char **envp;
	struct child_creds creds;
	struct sup_state state;
	bool state_ok;
	struct http_server *http;
	struct sup_dbs *dbs;
	struct probe *probe;
	struct push *push;
	struct sup_consul *consul; /* NULL without a consul: section */
	bool lock_lost;          /* the writer lock went while the service ran: exit 111 */
	bool restore_lock_lost;  /* ... or during the restore step, which it stopped */
	int64_t restore_lock_lost_ms; /* ... then (mono ms) */
	int sfd;

	int tty;                 /* the controlling terminal: the first of stdin, stdout and
				  * stderr on it, else -1 (no job control) */
	pid_t pid;               /* the service, 0 when none runs */
	bool job_tty;            /* new-process-group on a terminal: the service's group holds
				  * it whenever litevisor's would (terminal_follow) */
	bool paused;             /* stopped by someone else (SIGSTOP), until continued: the
				  * terminal never continues it */
	bool tty_stopped;        /* shared group: stopped by a read or write of the terminal in
				  * the background, until continued (terminal_follow) */
	bool exec_failed;        /* the last start failed at exec: never restart */
	int code;                /* the exit code litevisor will return */
	bool stopping;           /* in the stop sequence */
	int64_t stop_began;      /* mono ms: the stop budget counts from here */
	int64_t grace_deadline;  /* mono ms: SIGKILL everything left then */
	int64_t give_up_at;      /* mono ms after SIGKILL: stop waiting */
	bool killed;
	pid_t termed_pgrp;       /* the service's own process group, once it got its TERM */
	int64_t next_sweep;      /* mono ms: next look for leftovers while stopping */
	int64_t restart_at;      /* mono ms when in backoff, else 0 */
	int64_t leftovers_termed; /* mono ms the failed run's leftovers got TERM (backoff), else 0 */
	int64_t backoff_ms;
	int restarts;            /* consecutive restarts (the policy's limit counts these) */
	int64_t started_at;      /* mono ms when the service was last started */
	uint64_t sent;           /* bit n-1: signal n reached this run from outside (forwarded,
				  * or the terminal's to the shared group) */
	int64_t quit_at;         /* mono ms a QUIT last reached this run from outside, else 0 */
};

static void set_phase(struct sup *s, enum sup_phase p, const char *reason)
{
	sup_state_set_phase(&s->state, p, reason);
}

/*
 * The controlling terminal, as the first of stdin, stdout and stderr that
 * is it; -1 when none is. Stdin alone missed `litevisor run </dev/null &`
 * on a terminal with `stty tostop`: a service stopped by its write to it
 * was never continued (QA144 D5).
 */
static int controlling_terminal(void)
{
	pid_t sid = getsid(0);
	for (int fd = 0; fd <= 2; fd++)
		if (isatty(fd) && tcgetsid(fd) == sid)
			return fd;
	return -1;
}

/*
 * Does litevisor's group hold the terminal? Both must be known: as PID 1
 * of a pid namespace started with &, the shell's group lies outside it,
 * and tcgetpgrp() and getpgrp() both say 0 (QA138 D1).
 */
static bool in_foreground(const struct sup *s)
{
	pid_t me = getpgrp();
	return me > 0 && s->tty >= 0 && tcgetpgrp(s->tty) == me;
}

/* Fork/exec the service; 0, or -1 when fork failed (code set). */
static int spawn(struct sup *s)
{
	/*
	 * The terminal goes to the service's own group only from litevisor in
	 * the foreground: one started with & took it from the shell, which lost
	 * its terminal and exited (QA134 D2).
	 */
	bool group = s->cfg->supervisor.new_process_group;
	s->job_tty = group && s->tty >= 0;
	struct child_spec spec = {
		.argv = s->argv,
		.envp = s->envp,
		.creds = &s->creds,
		.new_process_group = group,
		.take_terminal = s->job_tty && in_foreground(s) ? s->tty : -1,
		.mask = sig_original_mask(),
	};
	struct child_failure fail;
	pid_t pid = child_spawn(&spec, &fail);
	if (pid < 0) {
		s->code = SUP_EXIT_TEMPFAIL;
		return -1;
	}
	s->pid = pid;
	s->paused = s->tty_stopped = false;
	s->started_at = clock_mono_ms();
	s->sent = 0;
	s->quit_at = 0;
	s->exec_failed = fail.failed;
	sup_state_set_service(&s->state, pid, clock_wall_ns());
	if (fail.failed) {
		log_error("supervisor", "service failed to start", "error=\"%s\" code=%d",
			  fail.message, fail.exit_code);
		set_phase(s, SUP_STOPPING, "service failed to start");
	} else {
		log_info("supervisor", "service started", "pid=%d command=\"%s\"", (int)pid,
			 s->argv[0]);
		set_phase(s, SUP_RUNNING, "");
	}
	return 0;
}

/* The service's pid, or its group (-pid) when signal-group applies. */
static pid_t signal_target(const struct sup *s)
{
	bool group = s->cfg->supervisor.signal_group && s->cfg->supervisor.new_process_group;
	return group ? -s->pid : s->pid;
}

/* Send sig to the service (or its group when configured and it has its own). */
static void forward(struct sup *s, int sig)
{
	if (s->pid <= 0)
		return;
	pid_t target = signal_target(s);
	if (target < 0 && sig == SIGTERM)
		s->termed_pgrp = s->pid;
	if (kill(target, sig) < 0 && errno != ESRCH)
		log_warn("supervisor", "cannot forward signal", "signal=%s pid=%d error=\"%s\"",
			 sig_name(sig), (int)s->pid, strerror(errno));
	else
		log_debug("supervisor", "forwarded signal", "signal=%s pid=%d", sig_name(sig),
			  (int)target);
}

/*
 * After a stop signal: a stopped service (SIGSTOP, ^Z) would only act on it
 * once continued, so the grace would run out and end in SIGKILL. SIGCONT
 * right after it, as systemd and s6-supervise do; the kernel delivers the
 * lower-numbered pending TERM/INT first.
 */
static void resume(pid_t target)
{
	if (kill(target, SIGCONT) < 0 && errno != ESRCH)
		log_warn("supervisor", "cannot continue process after its stop signal",
			 "pid=%d error=\"%s\"", (int)target, strerror(errno));
}

static pid_t service_group(const struct sup *s, pid_t pid)
{
	return s->cfg->supervisor.new_process_group ? pid : 0;
}

/* Enter the stop sequence (once): the grace period starts now. */
static void begin_stop(struct sup *s, const char *why)
{
	if (s->stopping)
		return;
	s->stopping = true;
	s->restart_at = 0;
	s->stop_began = clock_mono_ms();
	/*
	 * Stopped during a backoff: what the failed run left behind had its TERM
	 * then, and its grace runs from there. A new one would hold the stop a
	 * whole stop-grace for processes that already ignored one (QA77 D2).
	 * Unless some came since (a grandchild re-parented once its parent obeyed
	 * that TERM): they get theirs now, and a whole grace (QA80 D3).
	 */
	int64_t from = s->stop_began;
	if (s->pid <= 0 && s->leftovers_termed) {
		unsigned fresh = reaper_term_new(0, 0);
		if (fresh)
			log_info("supervisor", "terminating leftover processes", "count=%u", fresh);
		else
			from = s->leftovers_termed;
	}
	s->grace_deadline = from + s->cfg->supervisor.stop_grace_ms;
	int64_t grace = s->grace_deadline - s->stop_began;
	log_info("supervisor", "stopping", "reason=\"%s\" grace_ms=%lld", why,
		 (long long)(grace > 0 ? grace : 0));
	set_phase(s, SUP_STOPPING, why);
	sup_consul_leave(s->consul);
}

/* new-process-group: hand the terminal litevisor holds to the service's group, and continue it. */
static void give_terminal(struct sup *s)
{
	(void)tcsetpgrp(s->tty, s->pid); /* SIGTTOU is ignored (signals.h) */
	if (kill(-s->pid, SIGCONT) < 0 && errno != ESRCH)
		log_warn("supervisor", "cannot continue the service", "error=\"%s\"", strerror(errno));
}

/*
 * Continue what the terminal stopped of the service: its group, or
 * litevisor's shared one (the terminal stops a whole group; litevisor's own
 * SIGCONT is not forwarded, signals.h), as a shell's fg does.
 */
static void continue_job(struct sup *s)
{
	if (kill(s->job_tty ? -s->pid : 0, SIGCONT) < 0 && errno != ESRCH)
		log_warn("supervisor", "cannot continue the service", "error=\"%s\"", strerror(errno));
}

/*
 * At every turn of the loop: whenever litevisor's group holds the terminal,
 * the service's gets it (and is continued, as a shell's fg does). A shell's
 * fg of a running job sends no SIGCONT, so nothing else tells litevisor that
 * it is the foreground again: after ^Z and bg, or a start with &, the service
 * never got the terminal, and one that read it stopped for good (QA138 D2,
 * D3). Stopping too: a TERM handler restoring the terminal's settings from
 * the background stopped on SIGTTOU until the grace's SIGKILL (QA139 D2).
 * Sharing litevisor's group, a service the terminal stopped is continued
 * once that group holds it (QA141 D1). A paused service is left alone.
 */
static void terminal_follow(struct sup *s)
{
	if (s->pid <= 0 || s->paused || (!s->job_tty && !s->tty_stopped) || !in_foreground(s))
		return;
	if (s->job_tty) {
		give_terminal(s);
	} else {
		s->tty_stopped = false;
		continue_job(s);
	}
}

/* Does the thread whose /proc syscall file is path stand in kill, tkill or tgkill? -1: unreadable. */
static int in_kill(const char *path)
{
	char buf[256], *end;
	if (fs_read_text(path, buf, sizeof(buf)) < 0)
		return -1;
	long nr = strtol(buf, &end, 10);
	if (end == buf)
		return -1; /* "running": continued meanwhile */
	return nr == SYS_kill || nr == SYS_tkill || nr == SYS_tgkill;
}

/*
 * Did the stopped service stop itself: top ends its ^Z handling with
 * raise(SIGSTOP), nano and mutt with kill(0, SIGSTOP)? Stopped so, it
 * stands in that kill, tkill or tgkill (/proc/<pid>/syscall); stopped by a
 * kill -STOP from elsewhere, in whatever it was doing. Taken before from
 * its catching TSTP, a kill -STOP of a service that merely catches it (a Go
 * program's signal.Notify) stopped litevisor as its job, and the kill -CONT
 * that followed continued the service alone (QA147 D2); that is still the
 * guess where the file cannot be read (another user's service, litevisor
 * not root). A thread that sent its process (not itself) a SIGSTOP has
 * usually left its kill by the time it stops, so a multi-threaded service
 * stopping itself so is taken for a pause: ^C then reaches litevisor, which
 * holds the terminal. Read where /proc names the service (QA147 D1: a /proc of
 * another pid namespace names another process). False when it cannot be told.
 */
static bool stopped_itself(pid_t pid)
{
	char path[96], buf[512];
	pid_t named = reaper_proc_pid(pid);
	if (named <= 0)
		return false;
	/* every thread's: raise() from a worker thread stops the process there (QA150 D3) */
	snprintf(path, sizeof(path), "/proc/%d/task", (int)named);
	DIR *d = opendir(path);
	int seen = -1;
	struct dirent *e;
	while (d && seen != 1 && (e = readdir(d))) {
		if (e->d_name[0] < '1' || e->d_name[0] > '9')
			continue;
		snprintf(path, sizeof(path), "/proc/%d/task/%.20s/syscall", (int)named, e->d_name);
		int k = in_kill(path);
		if (k >= 0)
			seen = k;
	}
	if (d)
		closedir(d);
	if (seen >= 0)
		return seen == 1;
	snprintf(path, sizeof(path), "/proc/%d/status", (int)named);
	FILE *f = fopen(path, "re");
	if (!f)
		return false;
	bool yes = false;
	while (fgets(buf, sizeof(buf), f))
		if (!strncmp(buf, "SigCgt:", 7)) {
			unsigned long long mask = strtoull(buf + 7, NULL, 16);
			yes = (mask >> (SIGTSTP - 1)) & 1;
			break;
		}
	fclose(f);
	return yes;
}

/*
 * The service stopped (the reaper's WUNTRACED), on a terminal:
 * - While stopping, no job stop: the grace runs on. A TSTP or SIGSTOP is
 *   dropped, as litevisor's own TSTP is: the service is continued to act on
 *   its TERM (QA141 D3, QA144 D2). One stopped by a read or write of the
 *   terminal waits for litevisor's group to hold it (terminal_follow; QA141
 *   D1).
 * - SIGSTOP, which no terminal sends: the job's stop when the service holds
 *   the terminal, stopped itself (a ^Z handler ending in SIGSTOP: top, nano,
 *   mutt; stopped_itself) and a shell can continue litevisor; else a pause (a kill -STOP
 *   taken for the job's stop left litevisor stopped once the service was
 *   continued by whoever stopped it: QA146 D4). A paused service stays stopped until continued, and
 *   litevisor runs on (replication, health): a job stop would never end
 *   without a shell that continues litevisor (tini, script, ssh -t: QA141
 *   D4). A stopped group holding the terminal would get the ^C and ^Z typed
 *   meanwhile and act on none (QA139 D4): litevisor's takes it back.
 * - Sharing litevisor's group (the default): a read or write in the
 *   background stops the service alone (litevisor ignores SIGTTIN/SIGTTOU,
 *   signals.h): litevisor stops as the job, so the shell shows it stopped and
 *   its fg continues both (QA139 D3). If the group holds the terminal again
 *   by the time litevisor looks (bg then fg at once), the service is
 *   continued: it can use it now (QA141 D2). A TSTP stopped litevisor too.
 * - new-process-group: ^Z while the service holds the terminal, or a read or
 *   write of it in the background; the shell waits on litevisor, not on the
 *   service, and saw nothing: its prompt never came back (QA134 D1). As a
 *   shell does for a job: the terminal back to litevisor, which stops too;
 *   once continued, in the foreground (fg) the service gets the terminal, in
 *   the background (bg, kill %1) the shell keeps it (taken, the shell exited:
 *   QA137 D2). A read of the terminal litevisor holds (a fg that came without
 *   a SIGCONT) just hands it over. A TSTP to the service in the background
 *   came from elsewhere: a pause.
 */
static void on_service_stopped(struct sup *s, int sig)
{
	bool tty_io = sig == SIGTTIN || sig == SIGTTOU;
	/*
	 * A stopped process reports no second stop: it ran since the last one.
	 * Continued and stopped again between two reaps, the report of its
	 * continuing was lost (the reaper keeps the later), and a pause that
	 * had ended kept the terminal from it (QA147 O3).
	 */
	s->paused = false;
	if ((!tty_io && sig != SIGTSTP && sig != SIGSTOP) || s->tty < 0)
		return;
	pid_t me = getpgrp(), fg = tcgetpgrp(s->tty);
	/* shared-group mode, a service that made a group of its own: not the job (QA144 D3) */
	if (!s->job_tty && getpgid(s->pid) != me)
		return;
	/* before the groups are looked at: a ^Z in a pid namespace let the grace run out (QA147 D3) */
	if (s->stopping) {
		if (tty_io) {
			s->tty_stopped = true; /* terminal_follow continues it (job_tty: hands it the terminal) */
		} else {
			log_info("supervisor", "the service was stopped while stopping: continued",
				 "signal=%s", sig_name(sig));
			/*
			 * The group's, as a shell's fg: the terminal's ^Z stopped the
			 * service's children too, and a master waiting on a stopped
			 * worker sat out the grace (QA146 D1; a pipeline member paused
			 * by hand is continued with them, QA144 D6).
			 */
			continue_job(s);
		}
		return;
	}
	if (me <= 0 || fg <= 0)
		return; /* the terminal's groups lie outside this pid namespace: no job control */
	/*
	 * A SIGSTOP of the job holding the terminal, under a shell that can
	 * continue litevisor, is the job's stop: top, nano and mutt end their
	 * ^Z handling with one (QA144 D1). Any other is a pause.
	 */
	if ((sig == SIGSTOP || (s->job_tty && sig == SIGTSTP && fg != s->pid)) &&
	    !(s->job_tty && sig == SIGSTOP && fg == s->pid && stopped_itself(s->pid) &&
	      sig_job_control())) {
		s->paused = true;
		if (s->job_tty && fg == s->pid)
			(void)tcsetpgrp(s->tty, me); /* SIGTTOU is ignored (signals.h) */
		log_info("supervisor", "the service was stopped from elsewhere: paused until continued",
			 "signal=%s", sig_name(sig));
		return;
	}
	if (!s->job_tty) {
		if (!tty_io)
			return;
		if (fg == me) {
			continue_job(s);
			return;
		}
		s->tty_stopped = true;
		log_info("supervisor", "the service was stopped by the terminal: stopping as a job",
			 "signal=%s", sig_name(sig));
		sig_job_stop(); /* the shell's fg continues the whole group */
		return;
	}
	if (fg == me) {
		if (tty_io)
			give_terminal(s);
		return;
	}
	if (fg == s->pid)
		(void)tcsetpgrp(s->tty, me); /* SIGTTOU is ignored (signals.h) */
	log_info("supervisor", "the service was stopped by the terminal: stopping as a job",
		 "signal=%s", sig_name(sig));
	if (!sig_job_stop_group(true)) {
		give_terminal(s); /* PID 1 is no job: nothing can stop it, so the service goes on */
		return;
	}
	if (in_foreground(s))
		give_terminal(s);
	else if (kill(-s->pid, SIGCONT) < 0 && errno != ESRCH)
		log_warn("supervisor", "cannot continue the service", "error=\"%s\"", strerror(errno));
}

/* Continued (WCONTINUED): by whoever paused it, a shell's fg or bg, or litevisor. */
static void on_service_continued(struct sup *s)
{
	if (s->paused)
		log_info("supervisor", "the service was continued", NULL);
	s->paused = s->tty_stopped = false;
}

/*
 * A terminal sends INT, QUIT and TSTP (^C, ^\, ^Z) and WINCH to its whole
 * foreground process group, the kernel as sender. The service shares
 * litevisor's group unless new-process-group: it got that signal already, and
 * forwarding it would deliver it twice (a second ^C is "quit now" to many
 * programs).
 */
static bool delivered_by_terminal(const struct sup *s, int sig, bool kernel, pid_t from)
{
	if (s->pid <= 0 || (sig != SIGINT && sig != SIGQUIT && sig != SIGTSTP && sig != SIGWINCH))
		return false;
	/*
	 * The service's own TSTP to its group (a ^Z handler's kill(0, SIGTSTP)):
	 * it has it. Forwarded back, its handler sent it again, hundreds of
	 * times a second where litevisor declines to stop (QA146 D6).
	 */
	if (sig == SIGTSTP && from == s->pid)
		return getpgid(s->pid) == getpgrp();
	return kernel && getpgid(s->pid) == getpgrp();
}

static void on_signal(struct sup *s, int sig, bool kernel, pid_t from)
{
	if (sig == SIGCHLD || !sig_is_forwarded(sig))
		return;
	if (sig == SIGXCPU && kernel) {
		/* litevisor's own RLIMIT_CPU soft limit: the service's default action would be to die */
		log_warn("supervisor", "litevisor exceeded its CPU time soft limit (RLIMIT_CPU); "
			 "not forwarded", "signal=XCPU");
		return;
	}
	if (sig == SIGTSTP && s->stopping) {
		/* a service stopped now would sit out the grace instead of acting on its TERM */
		log_info("supervisor", "signal dropped while stopping", "signal=TSTP");
		return;
	}
	if (s->pid > 0 && sig >= 1 && sig <= 64)
		s->sent |= 1ULL << (sig - 1);
	if (s->pid > 0 && sig == SIGQUIT)
		s->quit_at = clock_mono_ms();
	if (delivered_by_terminal(s, sig, kernel, from)) {
		log_info("supervisor", "signal from the terminal: the service got it too, not forwarded",
			 "signal=%s pid=%d", sig_name(sig), (int)s->pid);
	} else if (s->pid > 0) {
		log_info("supervisor", "forwarding signal", "signal=%s pid=%d", sig_name(sig),
			 (int)s->pid);
		forward(s, sig);
	} else if (!sig_ends_idle(sig) && sig != SIGTSTP) {
		log_info("supervisor", "signal dropped: no service running", "signal=%s", sig_name(sig));
	}
	if (sig_is_stop(sig) && s->pid > 0)
		resume(signal_target(s));
	if (sig == SIGTSTP)
		sig_job_stop_group(s->job_tty);
	/* no service to forward QUIT to (a restart's backoff): a stop, not dropped */
	if (sig_is_stop(sig) || (s->pid <= 0 && sig_ends_idle(sig))) {
		char why[64];
		snprintf(why, sizeof(why), "received SIG%s", sig_name(sig));
		if (!s->stopping && s->pid <= 0)
			s->code = 128 + sig; /* stopped during a backoff: no service code to return */
		begin_stop(s, why);
	}
}

static bool may_restart(const struct sup *s, int code)
{
	const struct cfg_supervisor *c = &s->cfg->supervisor;
	return !s->stopping && c->restart == RESTART_ON_FAILURE && code != 0 && !s->exec_failed &&
	       s->restarts < c->restart_limit;
}

/*
 * Before a restart, what the failed run left behind (its process group, its
 * children re-parented to litevisor) gets TERM now and, if still there when
 * the backoff ends, KILL (respawn_leftovers): a leftover holding the port
 * or writing the database beside the new run is what systemd's
 * KillMode=control-group prevents too.
 */
static void term_leftovers(struct sup *s, pid_t old)
{
	unsigned n = reaper_term_leftovers();
	pid_t grp = service_group(s, old);
	if (grp > 0 && grp != getpgrp() && kill(-grp, SIGTERM) == 0) {
		resume(-grp);
		n++;
	}
	s->leftovers_termed = n ? clock_mono_ms() : 0;
	if (n)
		log_info("supervisor", "terminating what the failed run left behind", "count=%u", n);
}

static void kill_leftovers(void)
{
	unsigned n = reaper_kill_leftovers();
	if (n)
		log_warn("supervisor", "killed what the failed run left behind before restarting",
			 "count=%u", n);
}

static void on_service_exit(struct sup *s, int status)
{
	int code = reaper_exit_code(status);
	pid_t old = s->pid;
	s->pid = 0;
	s->code = code;
	sup_state_service_exited(&s->state, code);
	if (WIFSIGNALED(status))
		log_info("supervisor", "service exited", "pid=%d signal=%s code=%d", (int)old,
			 sig_name(WTERMSIG(status)), code);
	else
		log_info("supervisor", "service exited", "pid=%d code=%d", (int)old, code);

	/*
	 * Consecutive restarts: a run that outlasted the longest backoff was a
	 * fresh start, so a service that fails once a week is never given up on,
	 * and its next restart waits the first delay again.
	 */
	int64_t ran_ms = clock_mono_ms() - s->started_at;
	/*
	 * With new-process-group the service took the terminal (child.c), so a
	 * ^C or ^\ reached it alone: the user asked everything to stop, not for
	 * a restart. Take the terminal back either way.
	 */
	/* back to litevisor only from the service: after a bg the shell holds it (QA137 D2) */
	bool tty = s->job_tty && tcgetpgrp(s->tty) == old;
	if (tty)
		(void)tcsetpgrp(s->tty, getpgrp()); /* SIGTTOU is ignored (signals.h) */
	if (tty && WIFSIGNALED(status) &&
	    (WTERMSIG(status) == SIGINT || WTERMSIG(status) == SIGQUIT) && !s->stopping) {
		log_info("supervisor", "the service was interrupted from the terminal: stopping, "
			 "not restarting", "signal=%s", sig_name(WTERMSIG(status)));
		begin_stop(s, "service interrupted from the terminal");
	}
	/*
	 * Killed by a signal sent to it from outside (a STOPSIGNAL SIGQUIT, a
	 * Nomad kill_signal other than TERM, `docker kill -s HUP`): someone asked
	 * it to end. Restarted, it ran on until the orchestrator's SIGKILL, and
	 * the final flush never ran (QA89 O1).
	 */
	int died_of = WIFSIGNALED(status) ? WTERMSIG(status) : 0;
	if (died_of >= 1 && died_of <= 64 && (s->sent & (1ULL << (died_of - 1))) && !s->stopping) {
		log_info("supervisor", "the service died of a signal sent to it from outside: "
			 "stopping, not restarting", "signal=%s", sig_name(died_of));
		begin_stop(s, "service killed by a signal from outside");
	}
	/*
	 * Or it ended on that QUIT with a code of its own: Go programs exit 2, a
	 * service that catches it for a graceful stop may exit non-zero. Within
	 * stop-grace of the QUIT, taken as asked to end; restarted, it ran until
	 * the orchestrator's SIGKILL cut the final flush (QA114 O10). One that
	 * only dumps its threads on QUIT (Java) and fails later is restarted.
	 */
	if (!s->stopping && s->quit_at && !WIFSIGNALED(status) && code != 0 &&
	    clock_mono_ms() - s->quit_at <= s->cfg->supervisor.stop_grace_ms) {
		log_info("supervisor", "the service exited on a QUIT sent to it from outside: "
			 "stopping, not restarting", "code=%d", code);
		begin_stop(s, "service exited on a QUIT from outside");
	}
	if (s->restarts > 0 && ran_ms >= s->cfg->supervisor.restart_reset_ms) {
		log_info("supervisor", "the service had run at least restart-reset: "
			 "restart count and delay start over", "ran_ms=%lld restarts=%d",
			 (long long)ran_ms, s->restarts);
		s->restarts = 0;
		s->backoff_ms = 0;
	}
	if (may_restart(s, code)) {
		const struct cfg_supervisor *c = &s->cfg->supervisor;
		if (s->backoff_ms == 0)
			s->backoff_ms = c->restart_delay_ms;
		s->restart_at = clock_mono_ms() + s->backoff_ms;
		log_warn("supervisor", "service failed; restarting after backoff",
			 "code=%d delay_ms=%lld restart=%d limit=%d", code, (long long)s->backoff_ms,
			 s->restarts + 1, c->restart_limit);
		/* the restart's time, not a countdown: true whenever /readyz is read */
		char why[160], at[40];
		clock_rfc3339(clock_wall_ns() + s->backoff_ms * NS_PER_MS, at, sizeof(at));
		snprintf(why, sizeof(why), "backoff: service exited with code %d, restarting at %s "
			 "(after %lld ms)", code, at, (long long)s->backoff_ms);
		s->backoff_ms = s->backoff_ms * 2 > c->restart_delay_max_ms ? c->restart_delay_max_ms
									   : s->backoff_ms * 2;
		set_phase(s, SUP_BACKOFF, why);
		term_leftovers(s, old);
		return;
	}
	const struct cfg_supervisor *sc = &s->cfg->supervisor;
	bool gave_up = !s->stopping && sc->restart == RESTART_ON_FAILURE && code != 0 &&
		       !s->exec_failed && s->restarts >= sc->restart_limit;
	if (gave_up)
		log_error("supervisor", "service failed: restart-limit reached, not restarting",
			  "code=%d restarts=%d limit=%d", code, s->restarts, sc->restart_limit);
	begin_stop(s, gave_up ? "service failed: restart-limit reached" : "service exited");
	if (s->killed) {
		reaper_kill_tree(); /* past the deadline: whatever it left goes at once */
		return;
	}
	/* Whatever the service left behind gets TERM now (see sweep()) and KILL at the deadline. */
	pid_t grp = service_group(s, old);
	if (grp > 0 && s->termed_pgrp != grp && grp != getpgrp() && kill(-grp, SIGTERM) == 0) {
		resume(-grp);
		s->termed_pgrp = grp;
		log_info("supervisor", "terminating the service's process group", "pgrp=%d", (int)grp);
	}
	s->next_sweep = 0;
}

/*
 * While stopping: every process re-parented to litevisor since the last look
 * gets its one TERM (a wrapper script's worker once the wrapper is gone) and,
 * after the deadline, every descendant gets KILL again until none is left.
 */
static void sweep(struct sup *s, int64_t now)
{
	if (!s->stopping || now < s->next_sweep)
		return;
	s->next_sweep = now + SWEEP_MS;
	if (s->killed) {
		reaper_kill_tree();
		return;
	}
	unsigned n = reaper_term_new(s->pid, s->termed_pgrp);
	if (n)
		log_info("supervisor", "terminating leftover processes", "count=%u", n);
}

/* Deadline handling; returns true when the loop should end. */
static bool on_tick(struct sup *s, int64_t now)
{
	if (s->restart_at && now >= s->restart_at && !s->stopping) {
		s->restart_at = 0;
		s->leftovers_termed = 0;
		kill_leftovers();
		s->restarts++;
		sup_state_add_restart(&s->state);
		if (spawn(s) < 0)
			begin_stop(s, "cannot restart the service");
		return false;
	}
	if (s->stopping && !s->killed && now >= s->grace_deadline) {
		if (s->pid > 0)
			log_warn("supervisor", "grace period over; killing remaining processes",
				 "service_pid=%d", (int)s->pid);
		else
			log_warn("supervisor", "grace period over; killing remaining processes", NULL);
		if (s->pid > 0) {
			kill(s->pid, SIGKILL); /* also where /proc cannot be read */
			if (s->cfg->supervisor.new_process_group)
				kill(-s->pid, SIGKILL);
		}
		unsigned n = reaper_kill_tree(); /* every descendant, however deep */
		if (n)
			log_info("supervisor", "killed remaining processes", "count=%u", n);
		s->killed = true;
		s->next_sweep = now + SWEEP_MS;
		s->give_up_at = now + KILL_WAIT_MS;
	}
	if (s->killed && now >= s->give_up_at) {
		log_error("supervisor", "processes still not gone after SIGKILL; not waiting longer",
			  NULL);
		return true;
	}
	return false;
}

static int64_t next_timeout(const struct sup *s, int64_t now)
{
	int64_t t = s->stopping ? SWEEP_MS : TICK_MS;
	int64_t d = 0;
	if (s->restart_at)
		d = s->restart_at;
	else if (s->stopping && !s->killed)
		d = s->grace_deadline;
	else if (s->killed)
		d = s->give_up_at;
	if (d) {
		int64_t left = d - now;
		if (left < t)
			t = left < 0 ? 0 : left;
	}
	return t;
}

/* The writer lock changed while the service runs: lost (consul/lock.h), so stop. */
static void on_lock_change(struct sup *s)
{
	char why[512];
	enum consul_lock_state st = sup_consul_lock_state(s->consul, why, sizeof(why));
	if (st != CONSUL_LOCK_LOST || s->lock_lost)
		return;
	if (s->stopping) {
		/* the stop was asked for anyway: its flush still ends inside the lock delay */
		log_warn("supervisor", "the writer lock is lost while stopping", "key=\"%s\" error=\"%s\"",
			 s->cfg->consul.lock_key, why);
		return;
	}
	s->lock_lost = true;
	log_error("supervisor", "the writer lock is lost: stopping the service, exiting 111 after the final flush",
		  "key=\"%s\" error=\"%s\"", s->cfg->consul.lock_key, why);
	if (s->pid > 0) {
		forward(s, SIGTERM);
		resume(signal_target(s));
	}
	begin_stop(s, "the writer lock is lost");
}

/* The run loop: from the first spawn until every child is gone. */
static void loop(struct sup *s)
{
	for (;;) {
		int64_t now = clock_mono_ms();
		struct pollfd pfd[2] = { { .fd = s->sfd, .events = POLLIN },
					 { .fd = sup_consul_lock_fd(s->consul), .events = POLLIN } };
		int rc = poll(pfd, 2, (int)next_timeout(s, now));
		if (rc > 0 && (pfd[1].revents & POLLIN))
			on_lock_change(s);
		if (rc < 0 && errno != EINTR) {
			log_error("supervisor", "poll failed", "error=\"%s\"", strerror(errno));
			clock_sleep_ms(100);
		}
		sup_state_heartbeat(&s->state);
		int sig;
		bool kernel;
		pid_t from;
		while ((sig = sig_read_ex(s->sfd, &kernel, &from)) > 0)
			on_signal(s, sig, kernel, from);
		struct reap_result r;
		reaper_reap(s->pid, &r);
		if (r.service_continued && !r.service_exited)
			on_service_continued(s);
		if (r.service_stopped && !r.service_exited)
			on_service_stopped(s, r.service_stopped);
		if (r.service_exited)
			on_service_exit(s, r.service_status);
		terminal_follow(s);
		if (s->stopping && s->pid <= 0 && r.no_children)
			return;
		if (on_tick(s, clock_mono_ms()))
			return;
		sweep(s, clock_mono_ms());
	}
}

/* A turn of a wait before the service exists: the heartbeat, and strays reaped (PID 1 inherits them). */
static void unserved_tick(void *arg)
{
	struct sup *s = arg;
	struct reap_result r;
	sup_state_heartbeat(&s->state);
	reaper_reap(0, &r);
}

struct flush_job {
	struct sup_dbs *dbs;
	int64_t ms;
};

static void flush_main(void *arg)
{
	struct flush_job *j = arg;
	dbs_flush(j->dbs, j->ms);
}

/* Steps before the service exists. Returns 0, or the exit code to leave with. */
static int prepare(struct sup *s)
{
	char err[512];

	if (child_creds_resolve(s->cfg, &s->creds, err, sizeof(err)) < 0) {
		log_error("supervisor", "invalid service identity", "error=\"%s\"", err);
		return SUP_EXIT_CONFIG;
	}
	if (s->creds.set && geteuid() != 0 &&
	    (s->creds.uid != geteuid() || s->creds.gid != getegid())) {
		/* Found now rather than after a long restore, when the exec would fail. */
		log_error("supervisor", "switching the service's user or group needs litevisor to run as root",
			  "uid=%d gid=%d euid=%d", (int)s->creds.uid, (int)s->creds.gid, (int)geteuid());
		return SUP_EXIT_CONFIG;
	}
	s->envp = svcenv_build(s->cfg, &s->creds);
	if (!s->envp) {
		log_error("supervisor", "out of memory", NULL);
		return SUP_EXIT_TEMPFAIL;
	}
	reaper_setup();
	s->sfd = sig_open_fd();
	if (s->sfd < 0)
		return SUP_EXIT_TEMPFAIL;

	int code = http_serve_configured(s->cfg, &s->state, HTTP_SERVICE, &s->http);
	if (code)
		return code; /* 100 or 111: SUP_EXIT_CONFIG, SUP_EXIT_TEMPFAIL */
	s->consul = sup_consul_new(s->cfg, &code);
	if (code || (code = sup_consul_register(s->consul, &s->state)) != 0)
		return code;
	return sup_consul_take_lock(s->consul, s->sfd, &s->state, unserved_tick, s);
}

/* After a restore step: 0 while the writer lock is still held, else the exit code (logged). */
static int lock_kept(struct sup *s)
{
	char why[512];
	if (sup_consul_lock_held(s->consul, why, sizeof(why)))
		return 0;
	/* another writer may hold it now: not one commit of ours may reach the replicas */
	log_error("supervisor", "the writer lock was lost during the restore: nothing replicated, "
		  "the service was not started", "key=\"%s\" error=\"%s\"", s->cfg->consul.lock_key,
		  why);
	return SUP_EXIT_TEMPFAIL;
}

/* Restores still running past their grace: their files removed under them (the caller _exits). */
static void abandon_restores(void)
{
	log_warn("supervisor", "restore did not stop in time: removing its files under it",
		 "grace_ms=%d", RESTORE_STOP_GRACE_MS);
	dbs_restore_abandon();
}

/*
 * A stop signal during the restore step: ask the restores to stop and
 * remove their temp files, and give them RESTORE_STOP_GRACE_MS to do so
 * (a second stop signal cuts it short). One still running then (a peer
 * that sends nothing never lets the download notice) has its files
 * removed from under it: the caller _exits at once either way, since
 * threads may still be inside libcurl.
 */
static void stop_restores(struct sup *s, int first)
{
	dbs_restore_abort(sig_name(first));
	if (sig_wait_done(s->sfd, dbs_restore_fd(s->dbs), RESTORE_STOP_GRACE_MS, sig_is_stop))
		return; /* every restore ended and cleaned up after itself */
	abandon_restores();
}

/* Leave from the restore step: the next writer need not wait out our session's TTL. */
static void __attribute__((noreturn)) exit_restoring(struct sup *s, int code)
{
	sup_consul_close(s->consul, SUP_CONSUL_CLOSE_MS);
	log_info("supervisor", "exiting", "code=%d", code); /* every exit's last line */
	_exit(code);
}

/*
 * The restore step's tick: a writer lock lost meanwhile stops the restores
 * at once (lock_kept says so once they end), not after a handover wait of
 * half a minute or a long download whose result may not be used. As after
 * a stop signal, a restore still running RESTORE_STOP_GRACE_MS later (stuck
 * in a call: a peer that sends nothing, a hung disk) is not waited for: its
 * files are removed under it and litevisor _exits (QA165 D2).
 */
static void restore_tick(void *arg)
{
	struct sup *s = arg;
	unserved_tick(s);
	if (!s->restore_lock_lost && !sup_consul_lock_held(s->consul, NULL, 0)) {
		s->restore_lock_lost = true;
		s->restore_lock_lost_ms = clock_mono_ms();
		dbs_restore_abort("the writer lock was lost");
		return;
	}
	if (!s->restore_lock_lost || clock_mono_ms() - s->restore_lock_lost_ms < RESTORE_STOP_GRACE_MS)
		return;
	/* every one ended meanwhile: sig_wait_fd returns after this tick, and lock_kept says why */
	struct pollfd done = { .fd = dbs_restore_fd(s->dbs), .events = POLLIN };
	if (poll(&done, 1, 0) > 0)
		return;
	abandon_restores();
	int code = lock_kept(s);
	exit_restoring(s, code ? code : SUP_EXIT_TEMPFAIL);
}

/*
 * Restore every database while still reading signals: a TERM/INT now ends
 * litevisor at once (nothing runs yet; a restore leaves nothing half-written
 * at its target, and its threads cannot be interrupted, so _exit).
 * Returns 0 when the service may start, else the exit code.
 */
static int restore_all(struct sup *s)
{
	int64_t duration = 0;
	set_phase(s, SUP_RESTORING, "restoring databases");
	/* On a failed start the fd still fires once the started ones are done; finish fails then. */
	(void)dbs_restore_start(s->dbs, sup_consul_unclean_wait_ms(s->consul));
	int sig = sig_wait_fd(s->sfd, dbs_restore_fd(s->dbs), restore_tick, s);
	if (sig) {
		log_warn("supervisor", "stopped while restoring; the service was not started",
			 "signal=%s", sig_name(sig));
		stop_restores(s, sig);
		exit_restoring(s, 128 + sig);
	}
	int code = dbs_restore_finish(s->dbs, &duration);
	sup_state_set_restore(&s->state, code == 0, duration);
	if (s->restore_lock_lost)
		return lock_kept(s); /* why the restores stopped: 111 */
	if (code == 0)
		log_info("supervisor", "restore done", "databases=%zu duration_ms=%lld",
			 s->cfg->ndbs, (long long)duration);
	else
		set_phase(s, SUP_EXITING, "a required database could not be restored");
	return code;
}

/* Start replicating (dbs_start): 0, or the exit code (logged). */
static int start_replication(struct sup *s)
{
	if (dbs_start(s->dbs) == 0)
		return 0;
	log_error("supervisor", "replication could not start (above); not starting the service",
		  NULL);
	return SUP_EXIT_TEMPFAIL;
}

/*
 * A stop signal (TERM, INT, QUIT) that came while replication's first look
 * was awaited (dbs_start, dbs_refused: up to seconds, with no signal read):
 * then the service is not started. Returns the signal, with s->code and the
 * stop's start set, or 0. Other signals then are dropped, said as while
 * restoring (nobody to take them), and TSTP stops litevisor as a job.
 */
static int stopped_before_start(struct sup *s)
{
	int sig, stop = 0;
	while ((sig = sig_read(s->sfd)) > 0) {
		if (sig == SIGTSTP && !stop)
			sig_job_stop();
		else if (sig_ends_idle(sig) && !stop)
			stop = sig;
		else if (sig != SIGCHLD) /* as while restoring (sig_wait_fd) */
			log_info("signals", "signal dropped: no service running yet", "signal=%s",
				 sig_name(sig));
	}
	if (!stop)
		return 0;
	log_warn("supervisor", "stopped before starting the service; it was not started",
		 "signal=%s", sig_name(stop));
	s->code = 128 + stop;
	s->stop_began = clock_mono_ms();
	return stop;
}

int sup_run(const struct config *cfg, char *const *argv)
{
	struct sup s;
	memset(&s, 0, sizeof(s));
	s.cfg = cfg;
	s.argv = argv;
	s.sfd = -1;
	s.tty = controlling_terminal();
	int64_t stop_end = 0; /* mono ms, once the service ran: the exit is due then */
	int code;

	if (sup_state_init(&s.state) < 0) {
		log_error("supervisor", "cannot initialise state", NULL);
		return SUP_EXIT_TEMPFAIL;
	}
	s.state_ok = true;
	code = prepare(&s);
	if (code)
		goto out;

	s.dbs = dbs_open(cfg);
	if (!s.dbs) {
		code = SUP_EXIT_CONFIG;
		goto out;
	}
	http_set_status_source(s.http, dbs_status, s.dbs);
	sup_consul_set_status_source(s.consul, dbs_status, s.dbs);
	if (dbs_lock(s.dbs) < 0) {
		/* another litevisor uses a state directory: it may stop, so temporary */
		set_phase(&s, SUP_EXITING, "a state directory is in use by another litevisor process");
		code = SUP_EXIT_TEMPFAIL;
		goto out;
	}
	/*
	 * Replication refusing a database the restore step kept (another node
	 * went on since this node's file) is known before the service has
	 * written: the newer data is restored then, once (the refusal is
	 * recorded, so the restore step takes it), instead of a whole run on a
	 * file whose commits reach no replica and go aside at the next start.
	 */
	for (int round = 0;; round++) {
		code = restore_all(&s);
		if (code || (code = lock_kept(&s)) != 0 || (code = start_replication(&s)) != 0)
			goto out;
		if (!dbs_refused(s.dbs))
			break;
		if (round > 0) {
			log_error("supervisor", "replication refused the database again after the second "
				  "restore: the service starts, and its commits reach no replica until "
				  "the database is restored or restore.existing is keep-local", NULL);
			break;
		}
		log_warn("supervisor", "replication refused a database the restore step kept (another "
			 "node went on since): restoring again before the service starts", NULL);
		if (dbs_reset(s.dbs) < 0) {
			set_phase(&s, SUP_EXITING, "replication could not be started again");
			code = SUP_EXIT_TEMPFAIL;
			goto out;
		}
	}
	/* the old holder's generation waited for: a clean stop from now on says so (consul/lock.h) */
	sup_consul_lock_settled(s.consul);
	if (cfg->health.probe_url)
		s.probe = probe_start(&cfg->health, &s.state);
	if (cfg->health.push_url)
		s.push = push_start(cfg, &s.state, true, dbs_status, s.dbs);
	/* a stop then: the final flush below (its closed marks), never the service (QA114 D3) */
	bool stopped = stopped_before_start(&s) != 0;
	/*
	 * The lock, looked at last after the restore, could go while replication
	 * started (its first looks take seconds): the service would start
	 * without it, beside the next writer's (QA142 D1). Not started then; the
	 * flush below ships nothing of it.
	 */
	char lwhy[512];
	if (!stopped && !sup_consul_lock_held(s.consul, lwhy, sizeof(lwhy))) {
		log_error("supervisor", "the writer lock was lost before the service could start: it was "
			  "not started, exiting 111", "key=\"%s\" error=\"%s\"", cfg->consul.lock_key, lwhy);
		s.lock_lost = true;
		s.code = SUP_EXIT_TEMPFAIL;
		s.stop_began = clock_mono_ms();
		stopped = true;
	}
	if (!stopped && spawn(&s) < 0) {
		code = s.code;
		goto out;
	}
	if (!stopped)
		loop(&s);
	code = s.code;
	/*
	 * The flush ends when the budget says, even if the grace (or the wait
	 * after SIGKILL) took longer than stop-grace: what the kernel took to
	 * deliver the last exits comes out of the flush, not out of the margin.
	 */
	stop_end = s.stop_began + cfg->supervisor.stop_grace_ms + cfg->supervisor.flush_timeout_ms +
		   SUP_STOP_THREADS_MS - SUP_EXIT_MARGIN_MS;
	int64_t flush_ms = stop_end - SUP_STOP_THREADS_MS - clock_mono_ms();
	if (flush_ms > cfg->supervisor.flush_timeout_ms)
		flush_ms = cfg->supervisor.flush_timeout_ms;
	set_phase(&s, SUP_FLUSHING, "final flush");
	struct flush_job fj = { s.dbs, flush_ms > 0 ? flush_ms : 0 };
	sig_run_noting(s.sfd, "the final flush", flush_main, &fj, unserved_tick, &s);
	if (s.lock_lost)
		code = SUP_EXIT_TEMPFAIL;
out:
	/* after the final flush: the next writer restores all of it */
	sup_consul_close(s.consul, SUP_CONSUL_CLOSE_MS);
	s.consul = NULL;
	if (s.state_ok)
		set_phase(&s, SUP_EXITING, "exiting");
	push_stop(s.push);
	probe_stop(s.probe);
	http_stop(s.http);
	/* at most SUP_STOP_THREADS_MS, and not past the budget: a stop quicker than
	 * stop-grace is not a reason to wait on stuck threads longer */
	int64_t close_ms = stop_end ? stop_end - clock_mono_ms() : SUP_STOP_THREADS_MS;
	if (close_ms > SUP_STOP_THREADS_MS)
		close_ms = SUP_STOP_THREADS_MS;
	if (dbs_close(s.dbs, close_ms > 0 ? close_ms : 0) < 0) {
		log_info("supervisor", "exiting", "code=%d", code);
		_exit(code);
	}
	if (s.sfd >= 0)
		close(s.sfd);
	svcenv_free(s.envp);
	child_creds_release(&s.creds);
	if (s.state_ok)
		sup_state_release(&s.state);
	log_info("supervisor", "exiting", "code=%d", code);
	return code;
}

int run_supervised(const struct config *cfg, char *const *argv)
{
	if (sig_block() < 0)
		return SUP_EXIT_TEMPFAIL;
	/* jansson hashes with a random seed; seed it before any thread can race on it. */
	json_object_seed(0);
	return sup_run(cfg, argv);
}
