/*
 * opstats.h — storage calls made outside the engine, per database and
 * replica: the restore opens storage of its own for its probes and
 * downloads (restore.c), and frees it when it is done. Its counts are added
 * here when it lets a storage go, and the engine adds them to its
 * replica's (engine_status_get), so /metrics counts every call a replica
 * answered or failed since the process started: a restore-only replica's
 * too, which the engine never calls.
 *
 * A slot lives as long as the process (a probe abandoned at its deadline
 * may outlive the restore and its config); slots are found by the
 * database's configured path and the replica's configured name.
 */
#ifndef LITEVISOR_OPSTATS_H
#define LITEVISOR_OPSTATS_H

#include "common/config.h"
#include "replication/storage.h"

/*
 * The counters of db's replica rep: ST_OP__COUNT entries, zero at first.
 * The same pointer for the same path and name, from any thread. NULL only
 * when out of memory (then nothing is carried).
 */
struct st_op_stats *opstats_slot(const struct cfg_db *db, const struct cfg_replica *rep);

/* Add from[0..ST_OP__COUNT) to slot's counters. slot may be NULL. */
void opstats_add(struct st_op_stats *slot, const struct st_op_stats *from);

#endif
