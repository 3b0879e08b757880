/* status.c — releasing status copies. */
#include "replication/status.h"

#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

void engine_status_release(struct engine_status *s)
{
	for (size_t i = 0; i < s->ndbs; i++)
		free(s->dbs[i].replicas);
	free(s->dbs);
	memset(s, 0, sizeof(*s));
}
