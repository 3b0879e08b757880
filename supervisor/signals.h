/*
 * signals.h — the signals `run` handles, as data read from a signalfd.
 *
 * sig_block() must run first thing in the command, before any thread exists:
 * every thread created afterwards inherits the mask, so a TERM can only ever
 * be read by the main loop (never kill litevisor on a worker thread before
 * the final flush). Like tini, litevisor takes every signal it can catch: one
 * it left at its default action (ALRM, PWR, a real-time signal…) would kill
 * it when it is not PID 1 (Nomad raw_exec), orphaning the service and losing
 * the final flush.
 *
 * Blocked and read from the signalfd ("handled"): every signal from 1 to
 * SIGRTMAX except those below. All but CHLD are forwarded to the service
 * (TSTP also stops litevisor itself, see sig_job_stop; an XCPU the kernel
 * sends is about litevisor's own RLIMIT_CPU and is not, see lifecycle.c).
 * Never blocked:
 *   KILL STOP                     cannot be caught;
 *   SEGV BUS FPE ILL ABRT SYS TRAP synchronous faults of the faulting thread:
 *                                 blocked, they would hang or be undefined;
 *   32 .. SIGRTMIN-1              reserved by glibc (thread cancellation, setxid);
 *   PIPE XFSZ (ignored)           sent to the thread whose write failed: the
 *                                 write reports EPIPE/EFBIG instead (libcurl with
 *                                 CURLOPT_NOSIGNAL and libmicrohttpd rely on an
 *                                 ignored PIPE);
 *   TTIN TTOU (ignored)           so a background litevisor is not stopped by its
 *                                 terminal (as tini).
 * libcurl runs with CURLOPT_NOSIGNAL everywhere, so no thread needs ALRM.
 * The child puts every disposition and the original mask back before exec
 * (child.h).
 */
#ifndef LITEVISOR_SUP_SIGNALS_H
#define LITEVISOR_SUP_SIGNALS_H

#include <signal.h>
#include <stdbool.h>

/*
 * Block the handled signals in the calling thread, ignore PIPE/XFSZ/TTIN/TTOU
 * and remember the original mask for the child. A second call does nothing.
 * Returns 0, or -1 (logged).
 */
int sig_block(void);

/* The mask the process had before sig_block() (what the child gets back). */
const sigset_t *sig_original_mask(void);

/* A non-blocking, close-on-exec signalfd for the handled signals, or -1 (logged). */
int sig_open_fd(void);

/*
 * Read one pending signal from the signalfd. Returns its number, 0 when none
 * is pending, -1 on error (logged). sig_read_ex also says whether the kernel
 * sent it (SI_KERNEL: a terminal's INT/QUIT/WINCH to its foreground process
 * group) rather than a process (kill(2): SI_USER), when kernel is not NULL,
 * and which process sent it (0: not a process), when from is not NULL. One
 * litevisor sent itself is never returned.
 */
int sig_read(int fd);
int sig_read_ex(int fd, bool *kernel, pid_t *from);

/* True for the signals forwarded to the service: every handled one but CHLD. */
bool sig_is_forwarded(int sig);

/*
 * After a TSTP (^Z, or kill -TSTP): stop litevisor itself with SIGSTOP, as
 * dumb-init does, so a shell's job control sees its job stopped; a SIGCONT
 * resumes it (and is forwarded). Replication stops with it. Does nothing
 * as PID 1 (the kernel ignores a SIGSTOP init sends itself), nor when
 * litevisor's process group is orphaned (no shell could continue it; the
 * kernel ignores a terminal's stop for a plain program there). Returns true
 * once continued, false when litevisor did not stop.
 */
bool sig_job_stop(void);

/*
 * sig_job_stop, with whole: stop litevisor's whole process group, as the
 * terminal's ^Z stops a job: with new-process-group the service's stop came
 * to its own group, and a wrapper that did not exec litevisor (`bash -c
 * '…; echo done'`) or a pipeline's other member ran on, so the shell saw its
 * job running and gave no prompt (QA146 D5).
 */
bool sig_job_stop_group(bool whole);

/*
 * Could a stop of litevisor be continued: not PID 1, and its process group
 * is not orphaned (some member's parent, a shell, lies in another group of
 * the session)? sig_job_stop stops nothing otherwise.
 */
bool sig_job_control(void);

/* True for the signals that also start the stop sequence (TERM, INT). */
bool sig_is_stop(int sig);

/*
 * With no service to forward it to (a restore, a restart's backoff, the wait
 * for the writer lock): does sig end litevisor? TERM and INT, and QUIT, which
 * orchestrators send to stop (a `STOPSIGNAL SIGQUIT`, a Nomad kill_signal).
 * Not HUP: Nomad sends it at every template re-render (change_signal), a
 * reload for the service, and a standby waiting for the lock must live on.
 */
bool sig_ends_idle(int sig);

/*
 * After a first stop signal has asked something to stop: wait up to grace_ms
 * for done_fd to become readable (it stopped). A further signal read from
 * sfd for which is_stop is true (NULL: any signal) ends the wait at once;
 * others are dropped. Returns true when done_fd fired, false when the grace
 * ran out or was cut short (the caller then stops it the hard way).
 */
bool sig_wait_done(int sfd, int done_fd, int grace_ms, bool (*is_stop)(int sig));

/*
 * Before there is a service: wait for fd to become readable while reading
 * signals from sfd. A stop signal (TERM, INT) ends the wait; TSTP stops
 * litevisor (sig_job_stop); the others are dropped with a note, as nobody is
 * there to get them. tick(arg) runs at every turn, at least once a second
 * (the heartbeat, reaping strays). Returns 0 once fd fired, or the stop signal.
 */
int sig_wait_fd(int sfd, int fd, void (*tick)(void *arg), void *arg);

/*
 * Run fn(arg) to its end on a thread of its own (inline if none can be
 * made) while this thread reads sfd, so a signal that comes meanwhile is not
 * left unread: a stop signal (a second TERM, a ^C or a QUIT during the
 * final flush: sig_ends_idle, since fn runs with no service left) is logged, saying that what (e.g. "the final flush") goes on and that only
 * KILL cuts it short; TSTP is dropped with a note (stopped, the flush's
 * deadline would run on); others are dropped. tick(arg) runs
 * at every turn, at least once a second (the heartbeat, reaping strays).
 */
void sig_run_noting(int sfd, const char *what, void (*fn)(void *arg), void *arg,
		    void (*tick)(void *targ), void *targ);

/* "TERM", "USR1", "RTMIN+5"…; "SIG?" for others. Static storage. */
const char *sig_name(int sig);

#endif
