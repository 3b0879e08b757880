/* layout.c — Litestream v0.3 object names: build and parse. */
#include "replication/layout.h"

#include <stdio.h>
#include <string.h>
#include <sys/random.h>

#include "common/banned.h"

static bool is_lower_hex(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}

/* Parse exactly n lowercase hex digits. */
static int hex_n(const char *s, int n, uint32_t *out)
{
	uint32_t v = 0;
	for (int i = 0; i < n; i++) {
		if (!is_lower_hex(s[i]))
			return -1;
		v = (v << 4) | (uint32_t)(s[i] <= '9' ? s[i] - '0' : s[i] - 'a' + 10);
	}
	*out = v;
	return 0;
}

bool layout_generation_valid(const char *s)
{
	if (strlen(s) != LAYOUT_GEN_LEN)
		return false;
	for (int i = 0; i < LAYOUT_GEN_LEN; i++)
		if (!is_lower_hex(s[i]))
			return false;
	return true;
}

int layout_generation_new(char out[LAYOUT_GEN_LEN + 1])
{
	unsigned char b[8];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -1;
	for (int i = 0; i < 8; i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}

bool layout_database_id_valid(const char *s)
{
	if (strlen(s) != LAYOUT_DBID_LEN)
		return false;
	for (int i = 0; i < LAYOUT_DBID_LEN; i++)
		if (!is_lower_hex(s[i]))
			return false;
	return true;
}

int layout_database_id_new(char out[LAYOUT_DBID_LEN + 1])
{
	unsigned char b[LAYOUT_DBID_LEN / 2];
	if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
		return -1;
	for (size_t i = 0; i < sizeof(b); i++)
		snprintf(out + 2 * i, 3, "%02x", b[i]);
	return 0;
}

char *layout_generation_prefix(char *buf, const char *gen)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/", gen);
	return buf;
}

char *layout_snapshots_prefix(char *buf, const char *gen)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/snapshots/", gen);
	return buf;
}

char *layout_wal_prefix(char *buf, const char *gen)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/wal/", gen);
	return buf;
}

char *layout_snapshot_key(char *buf, const char *gen, uint32_t index)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/snapshots/%08x.snapshot.lz4", gen, index);
	return buf;
}

char *layout_wal_key(char *buf, const char *gen, uint32_t index, uint32_t offset)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/wal/%08x_%08x.wal.lz4", gen, index, offset);
	return buf;
}

char *layout_closed_key(char *buf, const char *gen, uint32_t index, uint32_t offset)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/closed/%08x_%08x", gen, index, offset);
	return buf;
}

char *layout_database_key(char *buf, const char *gen, const char *dbid)
{
	snprintf(buf, LAYOUT_KEY_MAX, "generations/%s/database/%s", gen, dbid);
	return buf;
}

int layout_parse_snapshot(const char *name, uint32_t *index)
{
	if (strlen(name) != 8 + strlen(".snapshot.lz4") || strcmp(name + 8, ".snapshot.lz4") != 0)
		return -1;
	return hex_n(name, 8, index);
}

/* "<%08x index>_<%08x offset>" followed by exactly suffix. */
static int parse_position(const char *name, const char *suffix, uint32_t *index, uint32_t *offset)
{
	if (strlen(name) != 17 + strlen(suffix) || name[8] != '_' || strcmp(name + 17, suffix) != 0)
		return -1;
	if (hex_n(name, 8, index) < 0 || hex_n(name + 9, 8, offset) < 0)
		return -1;
	return 0;
}

int layout_parse_wal(const char *name, uint32_t *index, uint32_t *offset)
{
	return parse_position(name, ".wal.lz4", index, offset);
}

int layout_parse_closed(const char *name, uint32_t *index, uint32_t *offset)
{
	return parse_position(name, "", index, offset);
}

int layout_parse_database(const char *name, char id[LAYOUT_DBID_LEN + 1])
{
	if (!layout_database_id_valid(name))
		return -1;
	memcpy(id, name, LAYOUT_DBID_LEN + 1);
	return 0;
}
