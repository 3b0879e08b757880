/*
 * bounded.h — run a function in a thread of its own and wait for it no longer
 * than a deadline: for the way out of a process whose threads may be stuck in
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

#endif
