/*
 * bounded.h — run a function in a thread of its own and wait for it no longer
 * than a deadline (or wait on it with other things: bounded_start): for the way out of a process whose threads may be stuck in
 * a call nothing can interrupt (a replica that accepts connections and never
 * answers), so they cannot keep it past its orchestrator's kill timeout.
 */
#ifndef LITEVISOR_BOUNDED_H
#define LITEVISOR_BOUNDED_H

#include <stdint.h>

/*
 * Run fn(arg) in a new thread and wait at most deadline_ms for it to return.
 * Returns 0 when it returned in time (the thread is joined); -1 when it did
 * not: the thread and everything fn uses are then abandoned to the process,
 * which must leave with _exit() without freeing any of it. When no thread can
 * be created, fn runs in the caller, unbounded, and 0 is returned.
 */
int bounded_run(void (*fn)(void *arg), void *arg, int64_t deadline_ms);

/*
 * The same in parts, for a caller that waits on other things meanwhile:
 * start fn(arg) in a new thread (NULL when none can be made: nothing ran);
 * its done fd turns readable (POLLIN) once fn returned; then finish joins
 * the thread and frees b.
 */
struct bounded *bounded_start(void (*fn)(void *arg), void *arg);
int bounded_done_fd(const struct bounded *b);
void bounded_finish(struct bounded *b);

#endif
