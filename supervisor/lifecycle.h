/*
 * lifecycle.h — `litevisor run`: the whole life of a supervised service.
 *
 *   load config (caller) → [take the Consul writer lock] → restore every database →
 *   start replication → spawn the service → run: forward signals, reap
 *   everything → stop: grace, then SIGKILL the service (and its group) →
 *   wait for ALL children → final flush (own deadline) → [release the lock] →
 *   exit with the service's code (128+signal when it was killed).
 *
 * One thread, the caller's, runs the loop: it waits on a signalfd (SIGCHLD
 * included) with a timeout taken from the next deadline (grace, backoff,
 * heartbeat), so it never waits on the data path. The HTTP server, the probe,
 * the push heartbeat and the replication engine have threads of their own.
 *
 * The state × event table of the loop:
 *
 *   state \ event   | TERM/INT           | other fwd sig | service exit              | deadline
 *   RUNNING         | forward+CONT,      | forward (TSTP:| on-failure? →BACKOFF      | —
 *                   | →STOPPING          | then stop     | else TERM+CONT leftovers, |
 *                   |                    | self)         | →STOPPING                 |
 *   BACKOFF         | →STOPPING          | dropped (TSTP:| (orphans only)            | respawn →RUNNING
 *                   |                    | stop self)    |                           |
 *   STOPPING        | forward+CONT       | forward (not  | TERM+CONT leftovers       | SIGKILL all, wait
 *                   |                    | TSTP)         |                           |
 *   (no children left in STOPPING) → FLUSHING → EXITING
 *
 * With a `consul:` section, the writer lock is taken before the restore and
 * released after the final flush, and the service is registered while it
 * runs (supervisor/consul_link.h).
 */
#ifndef LITEVISOR_SUP_LIFECYCLE_H
#define LITEVISOR_SUP_LIFECYCLE_H

#include "common/config.h"

/* litevisor's own exit codes before the service runs (same values as cmd/cli.h). */
#define SUP_EXIT_CONFIG   100 /* bad configuration (unknown user, bad addr) */
#define SUP_EXIT_TEMPFAIL 111 /* temporary failure: replica unreachable, cannot listen, fork failed */

/*
 * The stop budget (docs/supervisor.md), counted from the stop signal:
 * stop-grace + flush-timeout + SUP_STOP_THREADS_MS for the replication threads
 * to stop (`replicate` without a service: no stop-grace), of which the last
 * SUP_EXIT_MARGIN_MS are kept for the exit itself, so that an orchestrator
 * whose kill timeout is exactly that sum finds litevisor gone.
 */
#define SUP_STOP_THREADS_MS 2000
#define SUP_EXIT_MARGIN_MS 300

/*
 * Run the lifecycle for cfg (borrowed) and the service command argv
 * (NULL-terminated, argv[0] searched in $PATH).
 * Requires sig_block() to have run before any thread was created. Returns the exit code for the process.
 */
int sup_run(const struct config *cfg, char *const *argv);

/*
 * Everything `run` does after loading its config: block signals (if not done
 * yet), seed jansson, then sup_run. For `replicate -exec CMD` as well.
 * Must be called before the caller creates any thread. Returns the exit code.
 */
int run_supervised(const struct config *cfg, char *const *argv);

#endif
