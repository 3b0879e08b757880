/*
 * reaper.h — collect every child that exits: the service and any orphan the
 * kernel re-parents to litevisor (as PID 1, or as a child subreaper when not
 * PID 1, e.g. under Nomad raw_exec). An orphan's exit is counted and
 * forgotten; only the service's exit status matters.
 */
#ifndef LITEVISOR_SUP_REAPER_H
#define LITEVISOR_SUP_REAPER_H

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/*
 * Become a child subreaper unless PID 1 (then nothing is needed), and note
 * the children litevisor already has (an entrypoint's `helper & exec
 * litevisor run …`): the sweeps before a restart spare them. Call before
 * starting any child. Returns 0, or -1 (logged as a warning: orphans will go
 * to init instead, no zombies are left by litevisor itself).
 */
int reaper_setup(void);

struct reap_result {
	bool service_exited;   /* the service (pid given) was among them */
	int service_status;    /* its wait status when service_exited */
	int service_stopped;   /* the signal that stopped the service (WUNTRACED), else 0 */
	bool service_continued; /* it was continued since (WCONTINUED); the later of the two */
	unsigned orphans;      /* other children reaped */
	bool no_children;      /* ECHILD: nothing left to wait for */
};

/*
 * Reap everything that has exited, without blocking: waitpid(-1, WNOHANG)
 * until none is left. service is the service's pid (or 0 when none runs).
 */
void reaper_reap(pid_t service, struct reap_result *r);

/*
 * The stop sequence's two sweeps over litevisor's descendants (found in /proc).
 *
 * reaper_term_new(): SIGTERM (then SIGCONT, for a stopped one) every direct child that no earlier call has
 * signalled (by pid and start time), except skip_pid and the members of
 * skip_pgrp (> 0), which got theirs already. Called again and again while
 * stopping, it reaches processes as they are re-parented to litevisor (a
 * wrapper's worker once the wrapper died), and each gets one TERM, never a
 * second one (to many programs a second TERM means "quit now").
 *
 * reaper_kill_tree(): SIGKILL every descendant, however deep: a process
 * killed while its children ignore TERM would leave them re-parented to
 * litevisor, or to init once it exits, still writing to the database after
 * the final flush.
 *
 * Both return how many processes they signalled.
 */
unsigned reaper_term_new(pid_t skip_pid, pid_t skip_pgrp);
unsigned reaper_kill_tree(void);

/*
 * The same two sweeps before a restart: what the failed run left behind,
 * sparing the children litevisor had before it started any, and their
 * descendants while these stay theirs (reaper_setup): they are not the
 * service's (QA89 D3). One re-parented to litevisor since cannot be told
 * from the failed run's. At the final stop they get their TERM and KILL
 * with the rest.
 */
unsigned reaper_term_leftovers(void);
unsigned reaper_kill_leftovers(void);

/*
 * The name in /proc of pid, a process of litevisor's pid namespace: pid
 * itself when /proc is this namespace's; when it is another's (`unshare -pf`
 * without --mount-proc, a sandbox binding the host's /proc), its number
 * there. 0 when it cannot be found.
 */
pid_t reaper_proc_pid(pid_t pid);

/* Total orphans reaped since start (for metrics). */
uint64_t reaper_orphans_total(void);

/* Exit code for a wait status: the code, or 128+signal. */
int reaper_exit_code(int status);

#endif
