/* lineage.c — a replica's last index against the local shadow (see lineage.h). */
#include "replication/lineage.h"

#include <stdio.h>
#include <string.h>

#include "replication/localstate.h"
#include "common/banned.h"

static uint32_t be32(const uint8_t *p)
{
	return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int lineage_check(struct storage *st, const struct cat_generation *g, uint32_t index,
		  const char *statedir, char *why, size_t len, const struct st_call *call,
		  struct st_error *err)
{
	uint8_t local[WAL_HEADER_SIZE], remote[WAL_HEADER_SIZE];
	if (localstate_shadow_header(statedir, g->id, index, local) < 0)
		return LINEAGE_UNKNOWN;
	int rc = catalog_index_header(st, g, index, remote, call, err);
	if (rc == ST_NOT_FOUND)
		return LINEAGE_UNKNOWN;
	if (rc < 0)
		return rc;
	if (wal_header_is_placeholder(remote))
		return LINEAGE_UNKNOWN; /* the index was entered, no session written into it yet */
	if (memcmp(local, remote, WAL_HEADER_SIZE) == 0)
		return LINEAGE_SAME;
	snprintf(why, len, "index %08x of generation %s was written by another WAL session "
		 "(salts %08x %08x) than the local one (%08x %08x): the generation was continued "
		 "elsewhere from an earlier point", index, g->id, be32(remote + 16), be32(remote + 20),
		 be32(local + 16), be32(local + 20));
	return LINEAGE_DIVERGED;
}
