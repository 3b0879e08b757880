/*
 * localstate.c — the state directory beside a database: generation, shadow
 * WALs, restore marker, closed and failure records (localstate.h).
 */
#include "replication/localstate.h"

#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/pathnorm.h"
#include "replication/layout.h"
#include "replication/xxh32.h"
#include "common/banned.h"

char *localstate_dir(const struct cfg_db *db, char *buf, size_t len)
{
	char spelled[PATH_MAX], tmp[PATH_MAX], tmp2[PATH_MAX];
	if (db->meta_path) {
		snprintf(spelled, sizeof(spelled), "%s", db->meta_path);
	} else {
		snprintf(tmp, sizeof(tmp), "%s", db->path);
		snprintf(tmp2, sizeof(tmp2), "%s", db->path);
		snprintf(spelled, sizeof(spelled), "%s/.%s-litevisor", dirname(tmp), basename(tmp2));
	}
	/*
	 * Its physical path: a meta-path symlinked to another volume stays
	 * there when a restore moves the stale directory aside and makes a new
	 * one (the link would go aside instead, and the new directory be made
	 * beside it, off the volume and away from the lock: statelock.h). A
	 * link left dangling (its directory moved aside by a restore, or not
	 * made yet) names where the directory is to be made.
	 */
	struct stat st;
	for (int hops = 0; hops < 8 && lstat(spelled, &st) == 0 && S_ISLNK(st.st_mode) &&
			   stat(spelled, &st) < 0 && errno == ENOENT; hops++) {
		char to[PATH_MAX];
		ssize_t n = readlink(spelled, to, sizeof(to) - 1);
		if (n <= 0)
			break;
		to[n] = '\0';
		if (to[0] == '/') {
			snprintf(spelled, sizeof(spelled), "%s", to);
		} else {
			snprintf(tmp, sizeof(tmp), "%s", spelled);
			if ((size_t)snprintf(tmp2, sizeof(tmp2), "%s/%s", dirname(tmp), to) >= sizeof(tmp2))
				break;
			snprintf(spelled, sizeof(spelled), "%s", tmp2);
		}
		pathnorm_clean(spelled);
	}
	if (pathnorm_resolve(spelled, buf, len) < 0)
		snprintf(buf, len, "%s", spelled);
	return buf;
}

/* Was meta-path given (the config fills in <dir>/.<file>-litevisor when not)? */
static bool meta_path_given(const struct cfg_db *db)
{
	if (!db->meta_path)
		return false;
	const char *slash = strrchr(db->path, '/'), *base = slash ? slash + 1 : db->path;
	size_t dl = (size_t)(base - db->path), bl = strlen(base);
	return !(strlen(db->meta_path) == dl + 1 + bl + strlen("-litevisor") &&
		 !strncmp(db->meta_path, db->path, dl) && db->meta_path[dl] == '.' &&
		 !strncmp(db->meta_path + dl + 1, base, bl) &&
		 !strcmp(db->meta_path + dl + 1 + bl, "-litevisor"));
}

char *localstate_litestream_dir(const struct cfg_db *db, char *buf, size_t len)
{
	if (meta_path_given(db))
		return localstate_dir(db, buf, len);
	char tmp[PATH_MAX], tmp2[PATH_MAX];
	snprintf(tmp, sizeof(tmp), "%s", db->path);
	snprintf(tmp2, sizeof(tmp2), "%s", db->path);
	snprintf(buf, len, "%s/.%s-litestream", dirname(tmp), basename(tmp2));
	return buf;
}

void localstate_owner(const struct cfg_db *db, uid_t *uid, gid_t *gid)
{
	struct stat st;
	char tmp[PATH_MAX];

	*uid = (uid_t)-1;
	*gid = (gid_t)-1;
	if (stat(db->path, &st) < 0) {
		snprintf(tmp, sizeof(tmp), "%s", db->path);
		if (stat(dirname(tmp), &st) < 0)
			return;
	}
	/* only chown when we can (root); as the app's own user everything is already ours */
	if (geteuid() == 0) {
		*uid = st.st_uid;
		*gid = st.st_gid;
	}
}

int localstate_ensure(const struct cfg_db *db, const char *dir)
{
	uid_t uid;
	gid_t gid;
	localstate_owner(db, &uid, &gid);
	return fs_mkdir_p(dir, 0750, uid, gid) < 0 ? -1 : 0;
}

int localstate_read_generation(const char *dir, char gen[17])
{
	char path[PATH_MAX], *text = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/generation", dir);
	if (fs_read_small(path, 64, &text, &len) < 0)
		return -1;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	if (!layout_generation_valid(text)) {
		free(text);
		errno = EINVAL;
		return -1;
	}
	memcpy(gen, text, 17);
	free(text);
	return 0;
}

int localstate_clean_file_id(const char *dir, dev_t *dev, ino_t *ino)
{
	char path[PATH_MAX], *text = NULL;
	unsigned long long d, i;
	int rc = -1;

	snprintf(path, sizeof(path), "%s/clean", dir);
	if (fs_read_small(path, 1024, &text, NULL) < 0)
		return -1;
	if (sscanf(text, "%*16s %*x %*u %llu %llu", &d, &i) == 2) {
		*dev = (dev_t)d;
		*ino = (ino_t)i;
		rc = 0;
	}
	free(text);
	return rc;
}

int localstate_write_generation(const char *dir, const char *gen, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], line[32];
	int n = snprintf(line, sizeof(line), "%s\n", gen);
	snprintf(path, sizeof(path), "%s/generation", dir);
	return fs_write_atomic(path, line, (size_t)n, 0640, uid, gid);
}

int localstate_read_database_id(const char *dir, char id[33])
{
	char path[PATH_MAX], *text = NULL;
	size_t len;

	snprintf(path, sizeof(path), "%s/database-id", dir);
	if (fs_read_small(path, 128, &text, &len) < 0)
		return -1;
	while (len > 0 && (text[len - 1] == '\n' || text[len - 1] == '\r'))
		text[--len] = '\0';
	if (!layout_database_id_valid(text)) {
		free(text);
		errno = EINVAL;
		return -1;
	}
	memcpy(id, text, LAYOUT_DBID_LEN + 1);
	free(text);
	return 0;
}

/*
 * A past position record, <dir>/<name>: "gen index offset[ open][ restored]\n"
 * ("previous", "aside"; "earlier" holds several such lines).
 */
static int format_past(char *line, size_t len, const struct wal_pos *end, bool open,
		       bool restored)
{
	return snprintf(line, len, "%s %08x %08x%s%s\n", end->generation, end->index, end->offset,
			open ? " open" : "", restored ? " restored" : "");
}

/* One record's line at text; *next: just past its "\n". 0, or -1 (malformed). */
static int parse_past(const char *text, const char **next, struct wal_pos *end, bool *open,
		      bool *restored)
{
	char gen[32];
	unsigned idx, off;
	int rest = 0;

	memset(end, 0, sizeof(*end));
	if (sscanf(text, "%31s %8x %8x%n", gen, &idx, &off, &rest) != 3 ||
	    !layout_generation_valid(gen))
		return -1;
	const char *t = text + rest;
	bool is_open = false, by_restore = false;
	if (!strncmp(t, " open", 5) && (is_open = true))
		t += 5;
	if (!strncmp(t, " restored", 9) && (by_restore = true))
		t += 9;
	if (*t != '\n')
		return -1;
	*next = t + 1;
	memcpy(end->generation, gen, sizeof(end->generation));
	end->index = idx;
	end->offset = off;
	if (open)
		*open = is_open;
	if (restored)
		*restored = by_restore;
	return 0;
}

static int read_past(const char *dir, const char *name, struct wal_pos *end, bool *open,
		     bool *restored)
{
	char path[PATH_MAX], *text = NULL;
	const char *next;

	memset(end, 0, sizeof(*end));
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	if (fs_read_small(path, 128, &text, NULL) < 0)
		return -1;
	bool ok = parse_past(text, &next, end, open, restored) == 0 && !*next;
	free(text);
	if (!ok) {
		memset(end, 0, sizeof(*end));
		errno = EINVAL;
		return -1;
	}
	return 0;
}

#define EARLIER_LINE_MAX 64 /* a record's line: 16 + 2 * 9 + " open restored\n" */

/*
 * Before a new "previous" record for end: the one it replaces goes first in
 * "earlier" (newest first, at most LOCALSTATE_EARLIER_MAX). None, a corrupt
 * one, or one of end's own generation (written again): nothing moves. 0 or
 * -1 (errno set).
 */
static int push_earlier(const char *dir, const struct wal_pos *end, uid_t uid, gid_t gid)
{
	struct wal_pos old;
	bool open = false;
	if (read_past(dir, "previous", &old, &open, NULL) < 0)
		return errno == ENOENT || errno == EINVAL ? 0 : -1;
	if (!strcmp(old.generation, end->generation))
		return 0;
	return localstate_add_earlier(dir, &old, open, uid, gid);
}

static int write_past(const char *dir, const char *name, const struct wal_pos *end, bool open,
		      bool restored, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], line[EARLIER_LINE_MAX];
	int n = format_past(line, sizeof(line), end, open, restored);
	snprintf(path, sizeof(path), "%s/%s", dir, name);
	/* the record replaced stays known, in "earlier": a crash between leaves it in both */
	int pushed = strcmp(name, "previous") ? 0 : push_earlier(dir, end, uid, gid);
	int e = errno;
	if (fs_write_atomic(path, line, (size_t)n, 0640, uid, gid) < 0)
		return -1;
	errno = e;
	return pushed;
}

int localstate_write_previous(const char *dir, const struct wal_pos *end, bool open, uid_t uid,
			      gid_t gid)
{
	return write_past(dir, "previous", end, open, false, uid, gid);
}

int localstate_write_restored_previous(const char *dir, const struct wal_pos *end, bool open,
				       uid_t uid, gid_t gid)
{
	return write_past(dir, "previous", end, open, true, uid, gid);
}

int localstate_read_previous(const char *dir, struct wal_pos *end, bool *open)
{
	return read_past(dir, "previous", end, open, NULL);
}

int localstate_read_previous_by(const char *dir, struct wal_pos *end, bool *open, bool *restored)
{
	return read_past(dir, "previous", end, open, restored);
}

int localstate_add_earlier(const char *dir, const struct wal_pos *at, bool open, uid_t uid,
			   gid_t gid)
{
	char path[PATH_MAX], buf[EARLIER_LINE_MAX * LOCALSTATE_EARLIER_MAX], *text = NULL;
	size_t len = (size_t)format_past(buf, sizeof(buf), at, open, false);
	snprintf(path, sizeof(path), "%s/earlier", dir);
	if (fs_read_small(path, sizeof(buf), &text, NULL) < 0 && errno != ENOENT &&
	    errno != EFBIG)
		return -1;
	const char *t = text, *next;
	struct wal_pos p;
	for (size_t kept = 1; t && kept < LOCALSTATE_EARLIER_MAX &&
			      parse_past(t, &next, &p, NULL, NULL) == 0; t = next) {
		/* one record per generation: the one put first replaces an older one */
		if (!strcmp(p.generation, at->generation))
			continue;
		if (len + (size_t)(next - t) > sizeof(buf))
			break;
		memcpy(buf + len, t, (size_t)(next - t));
		len += (size_t)(next - t);
		kept++;
	}
	free(text);
	return fs_write_atomic(path, buf, len, 0640, uid, gid);
}

size_t localstate_read_earlier(const char *dir, struct wal_pos *at, bool *open, size_t max)
{
	char path[PATH_MAX], *text = NULL;
	const char *t, *next;
	size_t n = 0;

	snprintf(path, sizeof(path), "%s/earlier", dir);
	if (fs_read_small(path, EARLIER_LINE_MAX * LOCALSTATE_EARLIER_MAX, &text, NULL) < 0)
		return 0;
	for (t = text; n < max && parse_past(t, &next, &at[n], &open[n], NULL) == 0; t = next)
		n++;
	free(text);
	return n;
}

int localstate_write_aside(const char *dir, const struct wal_pos *end, bool open, uid_t uid,
			   gid_t gid)
{
	return write_past(dir, "aside", end, open, false, uid, gid);
}

int localstate_read_aside(const char *dir, struct wal_pos *end, bool *open)
{
	return read_past(dir, "aside", end, open, NULL);
}

/*
 * The file's identity for the refusal record: device, inode and, where the
 * filesystem keeps one, its birth time ("b<s>.<ns>", else "-"). A file that
 * got a freed inode number again is another file (QA87 F7).
 */
struct file_id {
	unsigned long long dev, ino;
	char born[40];
};

static int file_identity(const char *dbpath, struct file_id *f)
{
	struct statx sx;
	snprintf(f->born, sizeof(f->born), "-");
	if (statx(AT_FDCWD, dbpath, 0, STATX_INO | STATX_BTIME, &sx) < 0) {
		/* statx refused (an old container seccomp profile): device and inode alone */
		struct stat st;
		if ((errno != ENOSYS && errno != EPERM) || stat(dbpath, &st) < 0)
			return -1;
		f->dev = st.st_dev;
		f->ino = st.st_ino;
		return 0;
	}
	f->dev = makedev(sx.stx_dev_major, sx.stx_dev_minor);
	f->ino = sx.stx_ino;
	if (sx.stx_mask & STATX_BTIME)
		snprintf(f->born, sizeof(f->born), "b%lld.%09u", (long long)sx.stx_btime.tv_sec,
			 sx.stx_btime.tv_nsec);
	return 0;
}

int localstate_write_refused(const char *dir, const char *dbpath, const char *why, uid_t uid,
			     gid_t gid)
{
	char path[PATH_MAX], *line = NULL;
	struct file_id f;
	if (file_identity(dbpath, &f) < 0)
		return -1;
	int n = asprintf(&line, "%llu %llu %s %s\n", f.dev, f.ino, f.born, why);
	if (n < 0)
		return -1;
	for (int i = 0; i < n - 1; i++)
		if (line[i] == '\n')
			line[i] = ' ';
	snprintf(path, sizeof(path), "%s/refused", dir);
	int rc = fs_write_atomic(path, line, (size_t)n, 0640, uid, gid);
	free(line);
	return rc;
}

int localstate_read_refused(const char *dir, const char *dbpath, char *why, size_t len)
{
	char path[PATH_MAX], *text = NULL;
	struct file_id was = { 0 }, now;
	int rest = 0;
	snprintf(path, sizeof(path), "%s/refused", dir);
	if (fs_read_small(path, 4096, &text, NULL) < 0)
		return -1;
	/* "dev ino born why"; a record before 2026-12-06 has no birth time: "dev ino why" */
	bool ok = sscanf(text, "%llu %llu %39s %n", &was.dev, &was.ino, was.born, &rest) == 3 &&
		  rest > 0 && (was.born[0] == 'b' || !strcmp(was.born, "-"));
	if (!ok) {
		was.born[0] = '\0';
		ok = sscanf(text, "%llu %llu %n", &was.dev, &was.ino, &rest) == 2 && rest > 0;
	}
	/* a birth time on one side only (statx refused then or now): device and inode decide */
	if (ok && file_identity(dbpath, &now) == 0 && now.dev == was.dev && now.ino == was.ino &&
	    (was.born[0] != 'b' || now.born[0] != 'b' || !strcmp(now.born, was.born))) {
		char *nl = strchr(text + rest, '\n');
		if (nl)
			*nl = '\0';
		snprintf(why, len, "%s", text + rest);
		free(text);
		return 0;
	}
	free(text);
	errno = ok ? ESTALE : EINVAL;
	return -1;
}

int localstate_clear_refused(const char *dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/refused", dir);
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -1;
	return fs_fsync_dir(dir);
}

int localstate_write_database_id(const char *dir, const char *id, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], line[64];
	int n = snprintf(line, sizeof(line), "%s\n", id);
	snprintf(path, sizeof(path), "%s/database-id", dir);
	return fs_write_atomic(path, line, (size_t)n, 0640, uid, gid);
}

char *localstate_shadow_path(const char *dir, const char *gen, uint32_t index, char *buf,
			     size_t len)
{
	snprintf(buf, len, "%s/generations/%s/wal/%08x.wal", dir, gen, index);
	return buf;
}

int localstate_shadow_header(const char *dir, const char *gen, uint32_t index,
			     uint8_t hdr[WAL_HEADER_SIZE])
{
	char path[PATH_MAX + 64];
	int fd = open(localstate_shadow_path(dir, gen, index, path, sizeof(path)),
		      O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = pread(fd, hdr, WAL_HEADER_SIZE, 0);
	close(fd);
	return n == WAL_HEADER_SIZE ? 0 : -1;
}

static char *index_path(const char *dir, const char *gen, char *buf, size_t len)
{
	snprintf(buf, len, "%s/generations/%s/index", dir, gen);
	return buf;
}

int localstate_write_index(const char *dir, const char *gen, const struct index_record *rec,
			   uid_t uid, gid_t gid)
{
	char path[PATH_MAX], line[128];
	int n = snprintf(line, sizeof(line), "%08x ", rec->index);
	if (rec->prev_end >= 0 && rec->prev_end <= UINT32_MAX)
		n += snprintf(line + n, sizeof(line) - (size_t)n, "%08x ", (uint32_t)rec->prev_end);
	else
		n += snprintf(line + n, sizeof(line) - (size_t)n, "- ");
	if (rec->have_prev_hdr)
		for (size_t i = 0; i < sizeof(rec->prev_hdr); i++)
			n += snprintf(line + n, sizeof(line) - (size_t)n, "%02x", rec->prev_hdr[i]);
	else
		n += snprintf(line + n, sizeof(line) - (size_t)n, "-");
	n += snprintf(line + n, sizeof(line) - (size_t)n, "\n");
	return fs_write_atomic(index_path(dir, gen, path, sizeof(path)), line, (size_t)n, 0640, uid,
			       gid);
}

/* A hex field of exactly 2*len digits into out. 0 or -1. */
static int parse_hex(const char *s, uint8_t *out, size_t len)
{
	if (strlen(s) != 2 * len)
		return -1;
	for (size_t i = 0; i < len; i++) {
		unsigned v;
		if (!isxdigit((unsigned char)s[2 * i]) || !isxdigit((unsigned char)s[2 * i + 1]) ||
		    sscanf(s + 2 * i, "%2x", &v) != 1)
			return -1;
		out[i] = (uint8_t)v;
	}
	return 0;
}

/* A field of 8 hex digits. 0 or -1. */
static int parse_u32(const char *s, uint32_t *v)
{
	char *end;
	if (strlen(s) != 8 || !isxdigit((unsigned char)s[0]))
		return -1;
	errno = 0;
	unsigned long x = strtoul(s, &end, 16);
	if (*end || errno || x > UINT32_MAX)
		return -1;
	*v = (uint32_t)x;
	return 0;
}

int localstate_read_index(const char *dir, const char *gen, struct index_record *rec)
{
	char path[PATH_MAX], *text = NULL, *save = NULL;
	int rc = -1;

	memset(rec, 0, sizeof(*rec));
	rec->prev_end = -1;
	if (fs_read_small(index_path(dir, gen, path, sizeof(path)), 256, &text, NULL) < 0)
		return -1;
	char *f[3] = { strtok_r(text, " \n", &save), NULL, NULL };
	f[1] = f[0] ? strtok_r(NULL, " \n", &save) : NULL;
	f[2] = f[1] ? strtok_r(NULL, " \n", &save) : NULL;
	uint32_t end;
	if (!f[0] || parse_u32(f[0], &rec->index) < 0)
		goto out;
	if (f[1] && strcmp(f[1], "-") != 0) {
		if (parse_u32(f[1], &end) < 0)
			goto out;
		rec->prev_end = end;
	}
	if (f[2] && strcmp(f[2], "-") != 0) {
		if (parse_hex(f[2], rec->prev_hdr, sizeof(rec->prev_hdr)) < 0)
			goto out;
		rec->have_prev_hdr = true;
	}
	rc = 0;
out:
	free(text);
	if (rc < 0)
		memset(rec, 0, sizeof(*rec));
	return rc;
}

bool localstate_last_shadow(const char *dir, const char *gen, uint32_t *index)
{
	char path[PATH_MAX];
	DIR *d;
	struct dirent *de;
	bool found = false;

	snprintf(path, sizeof(path), "%s/generations/%s/wal", dir, gen);
	if (!(d = opendir(path)))
		return false;
	while ((de = readdir(d))) {
		unsigned int idx;
		char tail[8];
		if (strlen(de->d_name) != 12 || sscanf(de->d_name, "%8x%7s", &idx, tail) != 2 ||
		    strcmp(tail, ".wal") != 0)
			continue;
		if (!found || idx > *index)
			*index = idx;
		found = true;
	}
	closedir(d);
	return found;
}

int localstate_position(const char *dir, struct wal_pos *pos)
{
	char gen[17], path[PATH_MAX];
	uint32_t best = 0, rec;

	memset(pos, 0, sizeof(*pos));
	if (localstate_read_generation(dir, gen) < 0)
		return -1;
	bool found = localstate_last_shadow(dir, gen, &best);
	struct index_record ir;
	bool have_rec = localstate_read_index(dir, gen, &ir) == 0;
	rec = ir.index;
	memcpy(pos->generation, gen, sizeof(pos->generation));
	if (found && (!have_rec || best >= rec)) {
		struct stat st;
		if (stat(localstate_shadow_path(dir, gen, best, path, sizeof(path)), &st) < 0)
			return -1;
		pos->index = best;
		/* past 4 GiB (an app's huge transaction): the furthest offset there is, never
		 * the size wrapped to something that looks older than a replica (QA49 #1) */
		pos->offset = st.st_size > UINT32_MAX ? UINT32_MAX : (uint32_t)st.st_size;
		return 0;
	}
	if (have_rec) {
		/*
		 * An index entered with nothing copied into it yet: the database
		 * holds what the previous index ended with. Said as that end when
		 * known, since another node that continued the previous index
		 * further (nothing of ours reached the replicas) is ahead of us,
		 * though its (index-1, more) sorts before our (index, 0).
		 */
		if (ir.prev_end >= 0 && rec > 0) {
			pos->index = rec - 1;
			pos->offset = (uint32_t)ir.prev_end;
		} else {
			pos->index = rec;
			pos->offset = 0;
		}
		return 0;
	}
	memset(pos, 0, sizeof(*pos));
	errno = ENOENT;
	return -1;
}

int localstate_write_restored(const char *dir, const struct restored_marker *m, uid_t uid,
			      gid_t gid)
{
	char path[PATH_MAX], text[LOCALSTATE_MAX_REPLICAS * 66 + 64];
	size_t n = (size_t)snprintf(text, sizeof(text), "%s %08x %08x", m->pos.generation,
				    m->pos.index, m->pos.offset);
	for (size_t i = 0; i < m->nreplicas && n < sizeof(text); i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, " %s", m->replicas[i]);
	if (n >= sizeof(text) - 1) {
		errno = ENAMETOOLONG;
		return -1;
	}
	text[n++] = '\n';
	snprintf(path, sizeof(path), "%s/restored", dir);
	return fs_write_atomic(path, text, n, 0640, uid, gid);
}

int localstate_read_restored(const char *dir, struct restored_marker *m)
{
	char path[PATH_MAX], *text = NULL, *save = NULL;
	int rc = -1;

	memset(m, 0, sizeof(*m));
	snprintf(path, sizeof(path), "%s/restored", dir);
	if (fs_read_small(path, 8192, &text, NULL) < 0)
		return -1;
	char *gen = strtok_r(text, " \n", &save);
	char *idx = strtok_r(NULL, " \n", &save);
	char *off = strtok_r(NULL, " \n", &save);
	char *end;
	if (!gen || !idx || !off || !layout_generation_valid(gen))
		goto bad;
	memcpy(m->pos.generation, gen, 17);
	m->pos.index = (uint32_t)strtoul(idx, &end, 16);
	if (*end)
		goto bad;
	m->pos.offset = (uint32_t)strtoul(off, &end, 16);
	if (*end)
		goto bad;
	for (char *r; (r = strtok_r(NULL, " \n", &save)) && m->nreplicas < LOCALSTATE_MAX_REPLICAS;)
		snprintf(m->replicas[m->nreplicas++], sizeof(m->replicas[0]), "%s", r);
	rc = 0;
	goto out;
bad:
	errno = EINVAL;
out:
	free(text);
	return rc;
}

int localstate_clear_restored(const char *dir)
{
	char path[PATH_MAX];
	snprintf(path, sizeof(path), "%s/restored", dir);
	if (unlink(path) < 0 && errno != ENOENT)
		return -1;
	return fs_fsync_dir(dir);
}

static char *closed_path(const char *dir, const char *replica, char *buf, size_t len)
{
	snprintf(buf, len, "%s/closed-%08x", dir, xxh32(replica, strlen(replica), 0));
	return buf;
}

int localstate_write_closed(const char *dir, const char *replica, const char *location,
			    const struct wal_pos *at, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], *line = NULL;
	int n = asprintf(&line, "%s %08x %08x %s\n", at->generation, at->index, at->offset,
			 location ? location : "");
	if (n < 0)
		return -1;
	int rc = fs_write_atomic(closed_path(dir, replica, path, sizeof(path)), line, (size_t)n,
				 0640, uid, gid);
	free(line);
	return rc;
}

/* Is the text [s, s + n) the string want? */
static bool names(const char *s, size_t n, const char *want)
{
	return want && strlen(want) == n && strncmp(s, want, n) == 0;
}

/*
 * The closed record at path, if it names location or alias (or, unless
 * named_only, no location at all). 0, or -1 (errno as localstate_read_closed).
 */
static int read_closed_file(const char *path, const char *location, const char *alias,
			    bool named_only, struct wal_pos *at)
{
	char *text = NULL, gen[32];
	unsigned idx, off;
	int rest = 0, rc = -1;

	memset(at, 0, sizeof(*at));
	if (fs_read_small(path, PATH_MAX + 256, &text, NULL) < 0)
		return -1;
	if (sscanf(text, "%31s %8x %8x%n", gen, &idx, &off, &rest) != 3 || !rest ||
	    !layout_generation_valid(gen)) {
		errno = EINVAL;
		goto out;
	}
	/* the location: the rest of the line after one space; none in an old record */
	const char *loc = text + rest, *nl = strchr(loc, '\n');
	if (!nl || nl[1] != '\0') {
		errno = EINVAL;
		goto out;
	}
	if (*loc == ' ' && nl > loc + 1) {
		loc++;
		if (!names(loc, (size_t)(nl - loc), location) &&
		    !names(loc, (size_t)(nl - loc), alias)) {
			errno = EXDEV;
			goto out;
		}
	} else if (loc != nl && !(loc[0] == ' ' && loc + 1 == nl)) {
		errno = EINVAL;
		goto out;
	} else if (named_only) {
		errno = EXDEV;
		goto out;
	}
	memcpy(at->generation, gen, sizeof(at->generation));
	at->index = idx;
	at->offset = off;
	rc = 0;
out:
	free(text);
	return rc;
}

int localstate_read_closed(const char *dir, const char *replica, const char *location,
			   const char *alias, struct wal_pos *at)
{
	char own[PATH_MAX], other[PATH_MAX];
	closed_path(dir, replica, own, sizeof(own));
	if (read_closed_file(own, location, alias, false, at) == 0)
		return 0;
	int why = errno;
	if ((why != ENOENT && why != EXDEV) || !location)
		return -1;
	/*
	 * None for this place under this name: a replica renamed in the config
	 * (given a name:, or another one), or two replicas' names swapped, is
	 * still the same place, and its record, written under another name, is
	 * found by the location it names. It is taken over (renamed to this
	 * name's; the one this name held, for another place, goes to that name),
	 * so that clearing it by name once the engine writes here again leaves
	 * no stale record behind.
	 */
	DIR *dh = opendir(dir);
	if (!dh) {
		errno = why;
		return -1;
	}
	struct dirent *e;
	int rc = -1;
	while (rc < 0 && (e = readdir(dh))) {
		if (strncmp(e->d_name, "closed-", 7) != 0 || strlen(e->d_name) != 15 ||
		    (size_t)snprintf(other, sizeof(other), "%s/%s", dir, e->d_name) >= sizeof(other) ||
		    !strcmp(other, own) || read_closed_file(other, location, alias, true, at) < 0)
			continue;
		char swap[PATH_MAX + 8];
		snprintf(swap, sizeof(swap), "%s.swap", own);
		bool swapped = why == EXDEV;
		if (swapped ? rename(other, swap) == 0 && rename(own, other) == 0 &&
			      rename(swap, own) == 0 && fs_fsync_dir(dir) == 0
			    : rename(other, own) == 0 && fs_fsync_dir(dir) == 0) {
			log_info("state", swapped ? "closed records of two replicas whose names were "
				 "swapped exchanged" : "closed record of a renamed replica taken over",
				 "replica=%s location=\"%s\"", replica, location);
			rc = 0;
		}
	}
	closedir(dh);
	if (rc < 0)
		errno = why;
	return rc;
}

/* Remove the record at path in dir, durably; a missing one is 0. */
static int remove_record(const char *dir, const char *path)
{
	if (unlink(path) < 0)
		return errno == ENOENT ? 0 : -1;
	return fs_fsync_dir(dir);
}

int localstate_clear_closed(const char *dir, const char *replica)
{
	char path[PATH_MAX];
	return remove_record(dir, closed_path(dir, replica, path, sizeof(path)));
}

static char *failure_path(const char *dir, const char *replica, char *buf, size_t len)
{
	snprintf(buf, len, "%s/failing-%08x", dir, xxh32(replica, strlen(replica), 0));
	return buf;
}

int localstate_write_failure(const char *dir, const char *replica,
			     const struct failure_record *rec, uid_t uid, gid_t gid)
{
	char path[PATH_MAX], line[PATH_MAX + 64];
	int n = snprintf(line, sizeof(line), "%lld %lld %s\n", (long long)rec->failing_since_ns,
			 (long long)rec->behind_since_ns, replica);
	if (n < 0 || (size_t)n >= sizeof(line)) {
		errno = ENAMETOOLONG;
		return -1;
	}
	return fs_write_atomic(failure_path(dir, replica, path, sizeof(path)), line, (size_t)n,
			       0640, uid, gid);
}

int localstate_read_failure(const char *dir, const char *replica, struct failure_record *rec)
{
	char path[PATH_MAX], *text = NULL, *end;
	int rc = -1;

	memset(rec, 0, sizeof(*rec));
	if (fs_read_small(failure_path(dir, replica, path, sizeof(path)), PATH_MAX + 64, &text, NULL) < 0)
		return -1;
	errno = 0;
	long long since = strtoll(text, &end, 10);
	if (errno || end == text || *end != ' ' || since <= 0)
		goto bad;
	char *p = end + 1;
	long long behind = strtoll(p, &end, 10);
	if (errno || end == p || *end != ' ' || behind < 0)
		goto bad;
	/* the name, so a record of another replica with the same hash is not taken for this one's */
	size_t len = strlen(replica);
	if (strncmp(end + 1, replica, len) != 0 || strcmp(end + 1 + len, "\n") != 0)
		goto bad;
	rec->failing_since_ns = since;
	rec->behind_since_ns = behind;
	rc = 0;
	goto out;
bad:
	errno = EINVAL;
out:
	free(text);
	return rc;
}

int localstate_clear_failure(const char *dir, const char *replica)
{
	char path[PATH_MAX];
	return remove_record(dir, failure_path(dir, replica, path, sizeof(path)));
}

int localstate_prune_failures(const char *dir, const char *const *names, size_t n)
{
	DIR *d = opendir(dir);
	struct dirent *de;
	int removed = 0;

	if (!d)
		return 0;
	while ((de = readdir(d))) {
		unsigned int h;
		char tail[2], path[PATH_MAX];
		bool known = false;
		if (strlen(de->d_name) != 16 || sscanf(de->d_name, "failing-%8x%1s", &h, tail) != 1)
			continue;
		for (size_t i = 0; i < n && !known; i++)
			known = xxh32(names[i], strlen(names[i]), 0) == h;
		if (known)
			continue;
		snprintf(path, sizeof(path), "%s/%s", dir, de->d_name);
		if (unlink(path) == 0)
			removed++;
	}
	closedir(d);
	if (removed)
		(void)fs_fsync_dir(dir);
	return removed;
}

bool localstate_is_own_entry(const char *name)
{
	static const char *const whole[] = { "generation", "generations", "database-id", "clean",
					     "previous", "earlier", "aside", "restored" };
	static const char *const prefixed[] = { "closed-", "failing-" };
	size_t n = strlen(name);
	if (n > 4 && !strcmp(name + n - 4, ".tmp")) /* fs_write_atomic's */
		n -= 4;
	else if (n > 5 && !strcmp(name + n - 5, ".swap")) /* two closed records exchanged */
		n -= 5;
	for (size_t i = 0; i < sizeof(whole) / sizeof(whole[0]); i++)
		if (strlen(whole[i]) == n && !strncmp(name, whole[i], n))
			return true;
	for (size_t i = 0; i < sizeof(prefixed) / sizeof(prefixed[0]); i++) {
		size_t pl = strlen(prefixed[i]);
		if (n == pl + 8 && !strncmp(name, prefixed[i], pl) && strspn(name + pl, "0123456789abcdef") >= 8)
			return true;
	}
	return false;
}

int localstate_files_line(const char *dbpath, char *buf, size_t len)
{
	struct stat st;
	char walpath[PATH_MAX + 8], hex[2 * WAL_HEADER_SIZE + 1] = "-";
	uint8_t hdr[WAL_HEADER_SIZE];
	long long wsize = -1;

	if (stat(dbpath, &st) < 0)
		return -1;
	snprintf(walpath, sizeof(walpath), "%s-wal", dbpath);
	int fd = open(walpath, O_RDONLY | O_CLOEXEC); /* SQLite holds no lock on -wal itself */
	if (fd >= 0) {
		struct stat ws;
		if (fstat(fd, &ws) == 0)
			wsize = ws.st_size;
		if (wsize >= WAL_HEADER_SIZE && pread(fd, hdr, sizeof(hdr), 0) == (ssize_t)sizeof(hdr))
			for (size_t i = 0; i < sizeof(hdr); i++)
				snprintf(hex + 2 * i, 3, "%02x", hdr[i]);
		close(fd);
	}
	int k = snprintf(buf, len, "%llu %llu %lld %lld.%09ld %lld %s\n",
			 (unsigned long long)st.st_dev, (unsigned long long)st.st_ino,
			 (long long)st.st_size, (long long)st.st_mtim.tv_sec, st.st_mtim.tv_nsec, wsize,
			 hex);
	return k < 0 || (size_t)k >= len ? -1 : 0;
}

bool localstate_clean_unchanged(const char *statedir, const char *dbpath)
{
	char path[PATH_MAX + 8], now[512];
	char *was = NULL;
	snprintf(path, sizeof(path), "%s/clean", statedir);
	if (fs_read_small(path, 512, &was, NULL) < 0)
		return false;
	/* past "gen index shadow-size ": the files' part */
	const char *p = was;
	for (int i = 0; i < 3 && p; i++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	bool same = p && localstate_files_line(dbpath, now, sizeof(now)) == 0 && strcmp(p, now) == 0;
	free(was);
	return same;
}
