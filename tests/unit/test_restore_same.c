/* Unit tests for the same-database check before run replaces a local database (restore_same.c). */
#include "tests/unit/unit.h"

#include <sqlite3.h>

#include "replication/restore_int.h"

/*
 * A database at a temporary path with the tables "a,b,c" (comma-separated),
 * then tenant_<i> for i in [0, extra_tables) made from `first` on (wrapping
 * round: a file whose tables were recreated in another order), and app_id.
 */
static char *make_db_from(const char *tables, unsigned app_id, int extra_tables, int first)
{
	static int seq;
	char *path = NULL, sql[256];
	sqlite3 *db;
	CHECK(asprintf(&path, "/tmp/lv-unit-same-%d-%d.db", (int)getpid(), seq++) > 0);
	unlink(path);
	CHECK(sqlite3_open(path, &db) == SQLITE_OK);
	char *copy = strdup(tables), *save = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		snprintf(sql, sizeof(sql), "CREATE TABLE \"%s\"(x)", t);
		CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	}
	free(copy);
	sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
	for (int i = 0; i < extra_tables; i++) {
		snprintf(sql, sizeof(sql), "CREATE TABLE tenant_%05d(x)", (first + i) % extra_tables);
		CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	}
	sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
	snprintf(sql, sizeof(sql), "PRAGMA application_id = %u", app_id);
	CHECK(sqlite3_exec(db, sql, NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	return path;
}

static char *make_db(const char *tables, unsigned app_id, int extra_tables)
{
	return make_db_from(tables, app_id, extra_tables, 0);
}

static int same(const char *local, unsigned la, const char *restored, unsigned ra, char *why)
{
	char *a = make_db(local, la, 0), *b = make_db(restored, ra, 0);
	int rc = rs_same_database(a, b, NULL, why, 400);
	unlink(a);
	unlink(b);
	free(a);
	free(b);
	return rc;
}

TEST(another_applications_tables_are_another_database)
{
	char why[400] = "";
	CHECK_INT(same("Movies,History,Config,VersionInfo", 0, "Logs,VersionInfo", 0, why), 0);
	CHECK(strstr(why, "\"Logs\"") != NULL);
}

TEST(an_upgrade_adding_tables_is_the_same_database)
{
	/* an FTS5 index (five shadow tables with it) on a database of a dozen tables */
	char why[400] = "";
	CHECK_INT(same("users,notes,settings,tags,files,shares,links,groups,roles,jobs,log,meta", 0,
		       "users,notes,settings,tags,files,shares,links,groups,roles,jobs,log,meta,"
		       "notes_fts,notes_fts_data,notes_fts_idx,notes_fts_content,notes_fts_docsize,"
		       "notes_fts_config", 0, why), 1);
	/* QA36 #3: more tables added than there were (two FTS5 indexes and an audit log) */
	CHECK_INT(same("users,notes,settings", 0,
		       "users,notes,settings,audit,notes_fts,notes_fts_data,notes_fts_idx,"
		       "notes_fts_content,notes_fts_docsize,notes_fts_config", 0, why), 1);
}

TEST(a_few_local_tables_inside_another_database_are_not_it)
{
	/*
	 * QA35 #1: a first start that died with only VersionInfo, against another app's
	 * database holding that table too; and two apps with their own application_ids,
	 * the local one's tables a few of the other's. (An upgrade of that size on the
	 * database's own generation is not compared at all: restore_records.c.)
	 */
	char why[400] = "";
	CHECK_INT(same("VersionInfo", 0, "Config,Movies,History,Credits,VersionInfo", 0, why), 0);
	CHECK_INT(same("settings,users", 0x534f4e52,
		       "settings,users,movies,people,credits,jobs", 0x52414452, why), 0);
	CHECK(strstr(why, "application_id") != NULL);
}

TEST(a_new_application_id_with_every_table_kept_is_the_same_database)
{
	/* QA34 #5: GeoPackage 1.1 ('GP11') upgraded to 1.2 ('GPKG') */
	char why[400] = "";
	CHECK_INT(same("gpkg_contents,gpkg_spatial_ref_sys,features", 0x47503131,
		       "gpkg_contents,gpkg_spatial_ref_sys,features,gpkg_extensions", 0x47504B47, why), 1);
}

TEST(another_application_id_and_lost_tables_are_another_database)
{
	char why[400] = "";
	CHECK_INT(same("a,b,c,d", 1, "a,b,c,e", 2, why), 0);
	CHECK(strstr(why, "application_id") != NULL);
}

TEST(another_database_id_is_another_database_whatever_its_tables)
{
	/*
	 * Two apps of one code base (Sonarr's tables against Radarr's) share most tables;
	 * two instances of one app (radarr, radarr-4k: QA36 #1) share all of them
	 */
	char why[400] = "";
	char *a = make_db("Config,History,Series,Episodes,Tags,Users,Commands", 0, 0);
	char *b = make_db("Config,History,Movies,Tags,Users,Commands,Credits", 0, 0);
	char *c = make_db("Config,History,Series,Episodes,Tags,Users,Commands", 0, 0);
	CHECK_INT(rs_same_database(a, b, NULL, why, sizeof(why)), 1);
	CHECK_INT(rs_same_database(a, b, "0123456789abcdef0123456789abcdef", why, sizeof(why)), 0);
	CHECK(strstr(why, "another database id") != NULL);
	CHECK_INT(rs_same_database(a, c, "0123456789abcdef0123456789abcdef", why, sizeof(why)), 0);
	for (char **p = (char *[]){ a, b, c, NULL }; *p; p++) {
		unlink(*p);
		free(*p);
	}
}

TEST(more_than_4096_tables_compare_whole)
{
	/* QA34 #7: the same 6501 names, 4000 of them recreated (moved to the end), are the
	 * same database */
	char why[400] = "";
	char *a = make_db("meta", 0, 6500), *b = make_db_from("", 0, 6500, 4000);
	sqlite3 *db;
	CHECK(sqlite3_open(b, &db) == SQLITE_OK);
	CHECK(sqlite3_exec(db, "CREATE TABLE meta(x)", NULL, NULL, NULL) == SQLITE_OK);
	sqlite3_close(db);
	CHECK_INT(rs_same_database(a, b, NULL, why, sizeof(why)), 1);
	unlink(a);
	unlink(b);
	free(a);
	free(b);
}

UNIT_MAIN(T(another_applications_tables_are_another_database),
	  T(an_upgrade_adding_tables_is_the_same_database),
	  T(a_few_local_tables_inside_another_database_are_not_it),
	  T(a_new_application_id_with_every_table_kept_is_the_same_database),
	  T(another_application_id_and_lost_tables_are_another_database),
	  T(another_database_id_is_another_database_whatever_its_tables),
	  T(more_than_4096_tables_compare_whole))
