/*
 * restore_same.c — is the replica's database this database at all?
 *
 * The on-storage format names no database: a replica path copied from
 * another job's config, or two databases' paths swapped in one config, puts
 * another database's history where this one's is expected, and its newer
 * data would replace the live database (restore_int.h, rs_same_database).
 * Before that replacement, the two files' tables are compared: a database
 * migrated since keeps most of its tables (or all of them, adding more:
 * full-text indexes bring five each), another application's shares few.
 * Only when the replica's data continues the local generation is this not
 * asked (restore_records.c): that is the database's own history.
 */
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "replication/restore_int.h"
#include "common/banned.h"

#define SAME_MAX_TABLES 65536 /* more is read as a failure to compare (-1) */
#define SAME_FEW_TABLES 3     /* fewer local tables, all in another file, tell little */
#define SAME_NAME_MAX 128

struct tables {
	char (*name)[SAME_NAME_MAX];
	size_t n;
	unsigned app_id;
};

static int by_name(const void *a, const void *b)
{
	return strcmp(a, b);
}

/* The tables of path (SQLite's own left out), sorted, and its application_id. 0, or -1 (why). */
static int read_tables(const char *path, struct tables *t, char *why, size_t len)
{
	sqlite3 *db = NULL;
	sqlite3_stmt *q = NULL;
	int rc = -1;
	memset(t, 0, sizeof(*t));
	if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK ||
	    sqlite3_prepare_v2(db, "SELECT name FROM sqlite_master WHERE type = 'table' AND "
			       "name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND "
			       /* Litestream's own (_litestream_seq, _litestream_lock), not the app's */
			       "name NOT LIKE '\\_litestream\\_%' ESCAPE '\\'", -1, &q, NULL) != SQLITE_OK) {
		snprintf(why, len, "%s: %s", path, db ? sqlite3_errmsg(db) : "out of memory");
		goto out;
	}
	size_t cap = 0;
	int step;
	while ((step = sqlite3_step(q)) == SQLITE_ROW) {
		if (t->n == cap) {
			size_t ncap = cap ? cap * 2 : 64;
			void *p = ncap <= SAME_MAX_TABLES ? realloc(t->name, ncap * sizeof(*t->name)) : NULL;
			if (!p) {
				snprintf(why, len, "%s: %s", path, ncap > SAME_MAX_TABLES ?
					 "more than 65536 tables" : "out of memory");
				goto out;
			}
			t->name = p;
			cap = ncap;
		}
		const unsigned char *s = sqlite3_column_text(q, 0);
		snprintf(t->name[t->n++], SAME_NAME_MAX, "%s", s ? (const char *)s : "");
	}
	if (step != SQLITE_DONE) {
		snprintf(why, len, "%s: %s", path, sqlite3_errmsg(db));
		goto out;
	}
	sqlite3_finalize(q);
	q = NULL;
	if (sqlite3_prepare_v2(db, "PRAGMA application_id", -1, &q, NULL) == SQLITE_OK &&
	    sqlite3_step(q) == SQLITE_ROW)
		t->app_id = (unsigned)sqlite3_column_int64(q, 0);
	qsort(t->name, t->n, sizeof(*t->name), by_name);
	rc = 0;
out:
	sqlite3_finalize(q);
	sqlite3_close(db);
	if (rc < 0) {
		free(t->name);
		t->name = NULL;
	}
	return rc;
}

int rs_same_database(const char *local, const char *restored, const char *other_id, char *why,
		     size_t len)
{
	if (other_id) {
		/*
		 * Another database id: two instances of one app (radarr and
		 * radarr-4k) have the very same tables, so tables cannot vouch here.
		 */
		snprintf(why, len, "its generation is labelled with another database id (%s) than the "
			 "local database's (another instance's replica at this location?; if it is "
			 "this very database, whose local state was lost on the node that wrote it, "
			 "move the local database aside and start again: it is restored then)",
			 other_id);
		return 0;
	}
	struct tables a, b;
	if (read_tables(local, &a, why, len) < 0)
		return -1;
	if (read_tables(restored, &b, why, len) < 0) {
		free(a.name);
		return -1;
	}
	int same = 1;
	size_t shared = 0;
	for (size_t i = 0, j = 0; i < a.n && j < b.n;) {
		int c = strcmp(a.name[i], b.name[j]);
		shared += c == 0;
		i += c <= 0;
		j += c >= 0;
	}
	size_t most = a.n > b.n ? a.n : b.n;
	if (a.n > 0 && shared == a.n && (shared * 2 >= most || a.n >= SAME_FEW_TABLES)) {
		/*
		 * every local table is there: the same database, migrated (an
		 * upgrade adds tables, full-text indexes five each; a new version
		 * may set another application_id). A local database of a table or
		 * two that another app's database also has (an app's first start
		 * that died in its first migration) tells nothing of the kind
		 * unless they are most of its.
		 */
	} else if (a.n == 0) {
		/* a local database without tables has nothing to tell (an app's first start) */
	} else if (a.app_id && b.app_id && a.app_id != b.app_id) {
		snprintf(why, len, "its application_id is %u, the local database's %u", b.app_id, a.app_id);
		same = 0;
	} else if (shared * 2 < most) {
		size_t k = 0;
		while (k < b.n && bsearch(b.name[k], a.name, a.n, sizeof(*a.name), by_name))
			k++;
		if (k < b.n)
			snprintf(why, len, "it shares %zu of its %zu tables with the local database's %zu "
				 "(it has \"%s\", which the local one has not)", shared, b.n, a.n,
				 b.name[k]);
		else
			snprintf(why, len, "it has %zu tables, the local database %zu", b.n, a.n);
		same = 0;
	}
	free(a.name);
	free(b.name);
	return same;
}
