/*
 * replica_look_int.h — a replica's first look at its storage (not for other
 * modules): where it stands in the database's generation, and whether it
 * may write there at all.
 */
#ifndef LITEVISOR_REPLICA_LOOK_INT_H
#define LITEVISOR_REPLICA_LOOK_INT_H

#include <stdint.h>

#include "replication/engine_int.h"

/*
 * Where does r's replica stand? Sets r->pos, pos_known, need_snapshot (and
 * *next_snapshot from its newest snapshot's age), or refuses the database
 * as older than r's data (replica_older_refuse), or asks the monitor for a
 * new generation (replica_leave_generation). r's thread, mu not held.
 * Returns 0, or -1 (noted in r's status, or refused).
 */
int replica_look_init_position(struct eng_replica *r, int64_t *next_snapshot);

#endif
