/*
 * layout.h — names of objects in a Litestream v0.3 replica.
 *
 *   generations/<gen>/snapshots/<%08x index>.snapshot.lz4
 *   generations/<gen>/wal/<%08x index>_<%08x offset>.wal.lz4
 *
 * and one name of litevisor's own, which Litestream never lists (it reads only
 * snapshots/ and wal/) and deletes with the generation:
 *
 *   generations/<gen>/closed/<%08x index>_<%08x offset>
 *
 * an empty object saying that the node writing the generation stopped
 * cleanly with this replica holding everything up to that position, and
 * writes no more to it (see docs/replication.md, "Handing a generation over");
 * and, likewise never listed by Litestream and deleted with the generation:
 *
 *   generations/<gen>/database/<32 hex>
 *
 * an empty object naming the database whose history the generation is (its
 * database id: random, kept in the local state, carried over by restore), so
 * that a database's retention never deletes another database's generations
 * when two databases' replicas point at one location (see
 * docs/replication.md, "Database id").
 *
 * <gen> is 16 lowercase hex digits. Parsers accept exactly what Litestream
 * v0.3.13 writes and reads (8 lowercase hex digits per number), so a replica
 * either tool wrote lists the same in the other.
 */
#ifndef LITEVISOR_LAYOUT_H
#define LITEVISOR_LAYOUT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define LAYOUT_GEN_LEN 16
#define LAYOUT_DBID_LEN 32
#define LAYOUT_KEY_MAX 128 /* longest key below a replica root, with NUL */

/* True if s is a generation name (16 lowercase hex digits). */
bool layout_generation_valid(const char *s);

/* A new random generation name (getrandom) into out[17]. Returns 0 or -1. */
int layout_generation_new(char out[LAYOUT_GEN_LEN + 1]);

/* True if s is a database id (32 lowercase hex digits). */
bool layout_database_id_valid(const char *s);

/* A new random database id (getrandom) into out[33]. Returns 0 or -1. */
int layout_database_id_new(char out[LAYOUT_DBID_LEN + 1]);

/* "generations/" */
#define LAYOUT_GENERATIONS_PREFIX "generations/"

/* Keys below a replica root; buf must have LAYOUT_KEY_MAX bytes. Return buf. */
char *layout_generation_prefix(char *buf, const char *gen); /* generations/<gen>/ */
char *layout_snapshots_prefix(char *buf, const char *gen);  /* generations/<gen>/snapshots/ */
char *layout_wal_prefix(char *buf, const char *gen);        /* generations/<gen>/wal/ */
char *layout_snapshot_key(char *buf, const char *gen, uint32_t index);
char *layout_wal_key(char *buf, const char *gen, uint32_t index, uint32_t offset);
char *layout_closed_key(char *buf, const char *gen, uint32_t index, uint32_t offset);
char *layout_database_key(char *buf, const char *gen, const char *dbid);

/* Parse a base name; return 0, or -1 if it is not such a name. */
int layout_parse_snapshot(const char *name, uint32_t *index);
int layout_parse_wal(const char *name, uint32_t *index, uint32_t *offset);
int layout_parse_closed(const char *name, uint32_t *index, uint32_t *offset);
/* A label's base name (a database id) into id[33]. */
int layout_parse_database(const char *name, char id[LAYOUT_DBID_LEN + 1]);

#endif
