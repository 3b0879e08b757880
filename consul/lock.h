/*
 * lock.h — the single-writer lock: one Consul session and
 * `PUT /v1/kv/<key>?acquire=<session>` (api-docs/session.mdx, kv.mdx), so two
 * allocations never restore and replicate the same databases at once (a
 * zero-downtime deploy, a node that comes back: Litestream #1119).
 *
 * A thread of its own does all of it, so the caller's loop keeps reading
 * signals:
 *  - waiting: creates the session (TTL, LockDelay, Behavior "release", Name
 *    "litevisor: <holder>"), tries to acquire, and while another session holds
 *    the key waits on it with blocking queries (index and wait, the index
 *    reset rules of features/blocking.mdx), renewing its own session
 *    meanwhile; a key that is free but refused is in its lock delay (the
 *    last holder's session was invalidated) and is tried again every second.
 *    Waits at most cfg->lock_wait_ms (0: no limit), then FAILED;
 *  - held: renews the session every TTL/2 (a larger TTL in the answer is
 *    adopted, as the docs ask) and watches the key with blocking queries.
 *    LOST when Consul says the session is gone (renew answers 404), when the
 *    key is no longer held by it (an operator released or deleted it), when
 *    no renewal succeeded for a whole TTL (Consul may invalidate the session
 *    from then on; its lock delay keeps a new writer out for a while after),
 *    or when reads of the key failed for a whole TTL (it may be another's).
 *    No request outlasts the lease, so a hanging agent is LOST within a TTL.
 * An ACL refusal (403) is FAILED at once: waiting does not grant permissions.
 *
 * Every change of state makes consul_lock_fd() readable.
 */
#ifndef LITEVISOR_CONSUL_LOCK_H
#define LITEVISOR_CONSUL_LOCK_H

#include <stddef.h>
#include <stdint.h>

#include "common/config.h"

enum consul_lock_state {
	CONSUL_LOCK_WAITING = 0,
	CONSUL_LOCK_HELD,
	CONSUL_LOCK_FAILED,   /* never held: gave up (wait over, ACL refused) */
	CONSUL_LOCK_LOST,     /* was held, is not any more */
};

struct consul_lock;

/*
 * Start taking the lock cfg->lock_key (must be set; cfg borrowed, must
 * outlive the lock). holder names this process to other waiters ("node1
 * alloc 8f3c…"). Returns the lock, or NULL with err set (no libcurl, no
 * memory, no thread).
 */
struct consul_lock *consul_lock_start(const struct cfg_consul *cfg, const char *holder, char *err,
				      size_t errlen);

/* Readable after every change of state (an eventfd; consul_lock_state drains it). */
int consul_lock_fd(const struct consul_lock *l);

/* The state now; unless WAITING or HELD, why into why. */
enum consul_lock_state consul_lock_state(struct consul_lock *l, char *why, size_t whylen);

/*
 * Once HELD: was it taken from a holder that did not release it after its
 * final flush (its session invalidated, an operator's release or delete,
 * or a key with no litevisor holder's record)? That holder may still be
 * stopping, its service committing, however long ago it last wrote: the
 * restore must wait for its open generation (QA142 D7, D8). A release marks
 * the key's record "released" once that is settled (consul_lock_settled).
 * False for NULL.
 */
bool consul_lock_unclean(struct consul_lock *l);

/*
 * Unclean, and taken with no lock delay before: an operator's release or
 * delete (the holder's record replaced or gone), or a key with no holder's
 * record. Consul sets a lock delay only when it ends a session, and keeps
 * the key's value then; without one, nothing gave that holder time to
 * learn of its loss (up to a TTL late, with its agent out of reach) and to
 * stop (QA149 D1). False for NULL.
 */
bool consul_lock_undelayed(struct consul_lock *l);

/*
 * What was owed to an unclean take is settled (the restore waited for the
 * old holder's generation, or `replicate` took over as it does): the
 * release may mark the key released. Until then it does not, so a writer
 * stopped before its restore ended passes the wait on (QA145 D1).
 */
void consul_lock_settled(struct consul_lock *l);

/*
 * Ask the thread to stop (a request under way is abandoned at once: its
 * socket is shut) without waiting: lets the caller stop several things at
 * once before consul_lock_release. NULL is fine.
 */
void consul_lock_halt(struct consul_lock *l);

/*
 * Stop the thread, then, if the lock is held, release the key and destroy
 * the session (so the next writer need not wait out a lock delay), within
 * budget_ms in all. Frees l. NULL is fine.
 */
void consul_lock_release(struct consul_lock *l, int64_t budget_ms);

#endif
