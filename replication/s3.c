/*
 * s3.c — the S3 backend (interim: the client lands in the next commit; until
 * then opening an S3 replica fails with a clear message instead of a link error).
 */
#include "replication/storage.h"

#include "common/banned.h"

struct storage *storage_s3_open(const struct cfg_replica *r, struct st_error *err)
{
	st_error_set(err, ST_PERMANENT, 0, "replica %s: the S3 backend is not available in this build yet",
		     r->name ? r->name : "s3");
	return NULL;
}
