/*
 * replica_older_int.h — the "older database" gate, shared by the replica
 * thread (replica.c) and its first look (replica_look.c), not by other
 * modules (the monitor's part, replica_count_closed_records and
 * replica_older_clock_start, is in engine_int.h).
 *
 * Invariant: no replica of d writes while another that must look first has
 * not looked (d->older_pending > 0), until REPLICA_OLDER_WAIT_MS after the
 * clock started, and none at all once one found the database older
 * (d->older_req). A final flush never waits for a look.
 */
#ifndef LITEVISOR_REPLICA_OLDER_INT_H
#define LITEVISOR_REPLICA_OLDER_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "replication/engine_int.h"

/* r has looked at its replica once: one fewer to wait for (takes mu). */
void replica_older_checked(struct eng_replica *r);
/* Under mu: the replicas that have not looked yet, comma-separated into names[len]. */
void replica_older_pending_names(const struct eng_db *d, char *names, size_t len);
/*
 * Under mu: must r wait (or, d->older_req set, write nothing) before
 * writing? Logs the first wait and the deadline passing, once each.
 */
bool replica_older_gate(struct eng_replica *r, bool flush);
/*
 * The database is older than r's data (why): log it, note r's error, stop
 * replicating the database (monitor_request_stop_older) and, record set,
 * write the refusal for the later starts (the first replica to refuse
 * only). Takes id_mu and mu.
 */
void replica_older_refuse_as(struct eng_replica *r, const char *why, bool record);
/* replica_older_refuse_as(r, why, true). */
void replica_older_refuse(struct eng_replica *r, const char *why);

#endif
