/* opstats.c — storage calls made outside the engine (see opstats.h). */
#include "replication/opstats.h"

#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

struct slot {
	struct slot *next;
	char *db, *replica;
	struct st_op_stats stats[ST_OP__COUNT];
};

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static struct slot *slots;

struct st_op_stats *opstats_slot(const struct cfg_db *db, const struct cfg_replica *rep)
{
	const char *name = rep->name ? rep->name : "";
	struct st_op_stats *out = NULL;
	pthread_mutex_lock(&mu);
	for (struct slot *s = slots; s && !out; s = s->next)
		if (!strcmp(s->db, db->path) && !strcmp(s->replica, name))
			out = s->stats;
	if (!out) {
		struct slot *s = calloc(1, sizeof(*s));
		if (s && (s->db = strdup(db->path)) && (s->replica = strdup(name))) {
			s->next = slots;
			slots = s;
			out = s->stats;
		} else if (s) {
			free(s->db);
			free(s);
		}
	}
	pthread_mutex_unlock(&mu);
	return out;
}

void opstats_add(struct st_op_stats *slot, const struct st_op_stats *from)
{
	if (!slot)
		return;
	for (int k = 0; k < ST_OP__COUNT; k++) {
		atomic_fetch_add(&slot[k].count, atomic_load(&from[k].count));
		atomic_fetch_add(&slot[k].errors, atomic_load(&from[k].errors));
		atomic_fetch_add(&slot[k].answered, atomic_load(&from[k].answered));
		atomic_fetch_add(&slot[k].bytes, atomic_load(&from[k].bytes));
		atomic_fetch_add(&slot[k].latency_ns, atomic_load(&from[k].latency_ns));
	}
}
