/*
 * restore_prune.c — the copies that moving aside leaves behind.
 *
 * Every time a replica's newer data replaces a local database, the old
 * database (with its -wal/-shm) and its state directory are moved aside
 * (restore_local.c). A job that moves between nodes leaves one more copy on
 * each return. restore.keep-replaced bounds that: only the newest N copies
 * are kept, of the database and of the state directory (renamed beside it,
 * or "<statedir>/.old-<time>" within one that cannot be renamed). Without
 * it nothing is deleted, and a warning says how much the copies take once
 * there are more than a few.
 */
#include "replication/restore_int.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/banned.h"

/* More copies than this, with no keep-replaced set, earn a warning. */
#define WARN_ABOVE 3

struct names {
	char **v;
	size_t n, cap;
};

static void names_free(struct names *l)
{
	for (size_t i = 0; i < l->n; i++)
		free(l->v[i]);
	free(l->v);
	memset(l, 0, sizeof(*l));
}

static int newest_first(const void *a, const void *b)
{
	/* "<prefix><RFC 3339 UTC time>[.N]": the later name is the newer copy */
	return strcmp(*(char *const *)b, *(char *const *)a);
}

/* "2026-12-03T…": the time fs_move_aside() puts in a name (not a user's own "…-mybackup"). */
static bool stamped(const char *s)
{
	static const char shape[] = "dddd-dd-ddT";
	for (size_t i = 0; shape[i]; i++)
		if (shape[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != shape[i])
			return false;
	return true;
}

static bool has_suffix(const char *s, const char *suf)
{
	size_t a = strlen(s), b = strlen(suf);
	return a >= b && strcmp(s + a - b, suf) == 0;
}

/*
 * The entries of dir named prefix…, newest first; companions (…-wal,
 * …-shm) are not copies of their own. 0 or -1 (errno set).
 */
static int list_copies(const char *dir, const char *prefix, struct names *out)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	size_t pl = strlen(prefix);

	if (!d)
		return -1;
	while ((de = readdir(d))) {
		if (strncmp(de->d_name, prefix, pl) != 0 || !stamped(de->d_name + pl) ||
		    has_suffix(de->d_name, "-wal") || has_suffix(de->d_name, "-shm"))
			continue;
		if (out->n == out->cap) {
			size_t cap = out->cap ? out->cap * 2 : 8;
			char **v = realloc(out->v, cap * sizeof(*v));
			if (!v)
				goto fail;
			out->v = v;
			out->cap = cap;
		}
		if (!(out->v[out->n] = strdup(de->d_name)))
			goto fail;
		out->n++;
	}
	closedir(d);
	if (out->n)
		qsort(out->v, out->n, sizeof(*out->v), newest_first);
	return 0;
fail:
	closedir(d);
	errno = ENOMEM;
	return -1;
}

/*
 * Bytes under path: a file, or a directory's files down to depth levels (a
 * state copy's shadow WALs are generations/<gen>/wal/<index>.wal).
 */
static unsigned long long size_of(const char *path, int depth)
{
	struct stat st;
	unsigned long long total = 0;
	if (lstat(path, &st) < 0)
		return 0;
	if (S_ISREG(st.st_mode))
		return (unsigned long long)st.st_size;
	if (!S_ISDIR(st.st_mode) || depth <= 0)
		return 0;
	DIR *d = opendir(path);
	struct dirent *de;
	char p[PATH_MAX];
	if (!d)
		return 0;
	while ((de = readdir(d)))
		if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") &&
		    snprintf(p, sizeof(p), "%s/%s", path, de->d_name) < (int)sizeof(p))
			total += size_of(p, depth - 1);
	closedir(d);
	return total;
}

static const char *const parts[] = { "", "-wal", "-shm" };
#define NPARTS (sizeof(parts) / sizeof(parts[0]))

/* Bytes of dir/name and its -wal/-shm. */
static unsigned long long copy_bytes(const char *dir, const char *name)
{
	char p[PATH_MAX];
	unsigned long long bytes = 0;
	for (size_t i = 0; i < NPARTS; i++)
		if (snprintf(p, sizeof(p), "%s/%s%s", dir, name, parts[i]) < (int)sizeof(p))
			bytes += size_of(p, 4);
	return bytes;
}

/* Remove dir/name and its -wal/-shm. 0 or -1 (logged). */
static int remove_copy(const char *dir, const char *name, const char *what)
{
	char p[PATH_MAX];
	unsigned long long bytes = copy_bytes(dir, name);
	for (size_t i = 0; i < NPARTS; i++) {
		if (snprintf(p, sizeof(p), "%s/%s%s", dir, name, parts[i]) >= (int)sizeof(p))
			return -1;
		if (fs_remove_tree(p) < 0) {
			log_warn("restore", "cannot delete an old moved-aside copy", "path=\"%s\" err=\"%s\"",
				 p, strerror(errno));
			return -1;
		}
	}
	log_info("restore", "deleted an old moved-aside copy (restore.keep-replaced)",
		 "what=%s path=\"%s/%s\" bytes=%llu", what, dir, name, bytes);
	return 0;
}

/*
 * Keep the newest `keep` entries of dir named prefix… (0: keep all), the one
 * named protect (may be NULL) first whatever its name says: names carry the
 * clock's time when moved, and a clock that was ahead then (or stepped back
 * since) must not cost the copy this very restore made. Returns how many are
 * left; *bytes gets what they take.
 */
static size_t prune(const char *dir, const char *prefix, int keep, const char *what,
		    const char *protect, unsigned long long *bytes)
{
	struct names l = { 0 };
	size_t left = 0;

	*bytes = 0;
	if (list_copies(dir, prefix, &l) < 0) {
		if (errno != ENOENT)
			log_warn("restore", "cannot list moved-aside copies", "dir=\"%s\" err=\"%s\"",
				 dir, strerror(errno));
		return 0;
	}
	for (size_t i = 1; protect && i < l.n; i++) {
		if (strcmp(l.v[i], protect) == 0) {
			char *p = l.v[i];
			memmove(l.v + 1, l.v, i * sizeof(*l.v));
			l.v[0] = p;
			break;
		}
	}
	/* no fsync after deleting: a deletion lost in a crash only keeps a copy longer */
	for (size_t i = 0; i < l.n; i++) {
		if (keep > 0 && i >= (size_t)keep && remove_copy(dir, l.v[i], what) == 0)
			continue;
		left++;
		*bytes += copy_bytes(dir, l.v[i]);
	}
	names_free(&l);
	return left;
}

/* Split path into its directory and "<base><tag>" as the prefix of its moved-aside names. */
static int split(const char *path, const char *tag, char *dir, size_t dl, char *prefix, size_t pl)
{
	char a[PATH_MAX], b[PATH_MAX];
	if (snprintf(a, sizeof(a), "%s", path) >= (int)sizeof(a) ||
	    snprintf(b, sizeof(b), "%s", path) >= (int)sizeof(b))
		return -1;
	if (snprintf(dir, dl, "%s", dirname(a)) >= (int)dl ||
	    snprintf(prefix, pl, "%s.%s-", basename(b), tag) >= (int)pl)
		return -1;
	return 0;
}

/* The last part of path (copied into buf), or NULL for none. */
static const char *base_of(const char *path, char *buf, size_t len)
{
	if (!path || !path[0] || snprintf(buf, len, "%s", path) >= (int)len)
		return NULL;
	return basename(buf);
}

void rs_prune_aside(const char *target, const char *statedir, int keep, const char *just_moved,
		    const char *state_moved)
{
	char dir[PATH_MAX], prefix[NAME_MAX + 32], moved[PATH_MAX], smoved[PATH_MAX];
	unsigned long long bytes = 0, sbytes = 0;
	size_t copies = 0, states = 0;
	const char *protect = base_of(just_moved, moved, sizeof(moved));
	const char *sprotect = base_of(state_moved, smoved, sizeof(smoved));

	if (split(target, "replaced", dir, sizeof(dir), prefix, sizeof(prefix)) == 0)
		copies = prune(dir, prefix, keep, "database", protect, &bytes);
	if (statedir && split(statedir, "old", dir, sizeof(dir), prefix, sizeof(prefix)) == 0)
		states = prune(dir, prefix, keep, "state", sprotect, &sbytes);
	/* a state directory that cannot be renamed keeps its old contents inside it */
	if (statedir) {
		unsigned long long within = 0;
		states += prune(statedir, ".old-", keep, "state", sprotect, &within);
		sbytes += within;
	}
	/* state directories alone pile up too: one per restore of a database that was gone */
	if (keep == 0 && (copies > WARN_ABOVE || states > WARN_ABOVE))
		log_warn("restore", "old copies of the database pile up: restore.keep-replaced "
			 "deletes all but the newest N", "db=\"%s\" copies=%zu state_copies=%zu "
			 "bytes=%llu", target, copies, states, bytes + sbytes);
}
