/* shadow.c — copy committed frames of the real WAL into the shadow WAL. See shadow.h. */
#include "replication/shadow.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "replication/localstate.h"
#include "common/banned.h"

#define COPY_CHUNK (64 * 1024)
#define SH_PATH (PATH_MAX + 320) /* dir + generation + file name */

void shadow_init(struct shadow *s, const char *dir, uid_t uid, gid_t gid)
{
	memset(s, 0, sizeof(*s));
	snprintf(s->dir, sizeof(s->dir), "%s", dir);
	s->fd = -1;
	s->prev_end = -1;
	s->uid = uid;
	s->gid = gid;
}

void shadow_close(struct shadow *s)
{
	if (s->fd >= 0)
		close(s->fd);
	s->fd = -1;
}

static char *path_of(const struct shadow *s, uint32_t index, char *buf, size_t len)
{
	return localstate_shadow_path(s->dir, s->gen, index, buf, len);
}

int64_t shadow_file_size(const struct shadow *s, uint32_t index)
{
	char path[SH_PATH];
	struct stat st;
	if (stat(path_of(s, index, path, sizeof(path)), &st) < 0)
		return -1;
	return st.st_size;
}

/* Remember the header of the frame ending at s->size (for the overwrite check). */
static int load_last_frame(struct shadow *s)
{
	if (s->size <= WAL_HEADER_SIZE)
		return 0;
	off_t at = (off_t)(s->size - wal_frame_size(s->hdr.page_size));
	ssize_t n = pread(s->fd, s->last_fh, sizeof(s->last_fh), at);
	if (n != (ssize_t)sizeof(s->last_fh)) {
		if (n >= 0)
			errno = EIO; /* the file is shorter than what was just written */
		return -1;
	}
	return 0;
}

int shadow_resume(struct shadow *s, const char *gen)
{
	char path[SH_PATH];
	struct wal_reader r = { 0 };
	unsigned char *buf = NULL;
	struct index_record rec;
	bool found;
	uint32_t best = 0;
	int rc = -1;

	shadow_close(s);
	s->unproven = false;
	s->published = 0; /* nothing looked at yet: the first look after the hold proves it */
	snprintf(s->gen, sizeof(s->gen), "%s", gen);
	found = localstate_last_shadow(s->dir, gen, &best);
	bool have_rec = localstate_read_index(s->dir, gen, &rec) == 0;
	s->prev_end = have_rec && found && rec.index == best ? rec.prev_end : -1;
	if (have_rec && (!found || rec.index > best)) {
		/* entered with nothing copied yet: no file, the record says the rest */
		s->index = rec.index;
		s->size = 0;
		s->prev_end = rec.prev_end;
		s->have_prev = rec.have_prev_hdr;
		memcpy(s->prev_hdr, rec.prev_hdr, WAL_HEADER_SIZE);
		rc = 0;
		goto out;
	}
	if (!found)
		goto out;
	s->fd = open(path_of(s, best, path, sizeof(path)), O_RDWR | O_CLOEXEC);
	if (s->fd < 0 || wal_reader_init(&r) < 0 || !(buf = malloc(COPY_CHUNK)))
		goto out;
	for (off_t off = 0;;) {
		ssize_t n = pread(s->fd, buf, COPY_CHUNK, off);
		if (n < 0)
			goto out;
		if (n == 0 || wal_reader_feed(&r, buf, (size_t)n) < 0)
			break;
		off += n;
	}
	if (r.commit_end <= WAL_HEADER_SIZE) {
		log_warn("shadow", "shadow WAL holds no transaction", "path=\"%s\"", path);
		goto out;
	}
	if (ftruncate(s->fd, (off_t)r.commit_end) < 0 ||
	    pread(s->fd, s->hdr_raw, WAL_HEADER_SIZE, 0) != WAL_HEADER_SIZE)
		goto out;
	s->hdr = r.hdr;
	s->index = best;
	s->size = r.commit_end;
	s->s1 = r.commit_s1;
	s->s2 = r.commit_s2;
	s->commit_pages = r.commit_pages;
	s->have_prev = false;
	if (load_last_frame(s) < 0)
		goto out;
	rc = 0;
out:
	free(buf);
	wal_reader_release(&r);
	if (rc < 0) {
		shadow_close(s);
		s->gen[0] = '\0';
	}
	return rc;
}

/* Remove every generation directory but keep. */
static void remove_other_generations(const char *dir, const char *keep)
{
	char path[SH_PATH];
	DIR *d;
	struct dirent *de;

	snprintf(path, sizeof(path), "%s/generations", dir);
	if (!(d = opendir(path)))
		return;
	while ((de = readdir(d))) {
		if (de->d_name[0] == '.' || !strcmp(de->d_name, keep))
			continue;
		snprintf(path, sizeof(path), "%s/generations/%s", dir, de->d_name);
		if (fs_remove_tree(path) < 0)
			log_warn("shadow", "cannot remove old generation", "path=\"%s\" err=\"%s\"",
				 path, strerror(errno));
	}
	closedir(d);
}

/*
 * The index just entered has no file until a commit is copied into it: the
 * record keeps the position readable meanwhile (localstate_position). Best
 * effort: without it a restore compares by time, never keeps blindly.
 */
static void record_index(struct shadow *s)
{
	struct index_record rec = { .index = s->index, .prev_end = s->prev_end,
				    .have_prev_hdr = s->have_prev };
	memcpy(rec.prev_hdr, s->prev_hdr, WAL_HEADER_SIZE);
	if (localstate_write_index(s->dir, s->gen, &rec, s->uid, s->gid) < 0)
		log_warn("shadow", "cannot record the shadow's index", "dir=\"%s\" index=%u err=\"%s\"",
			 s->dir, s->index, strerror(errno));
}

/* Remove generation gen's (empty) shadow directories, as far as they were made. */
static void remove_generation_dirs(const struct shadow *s, const char *gen)
{
	char path[SH_PATH];
	snprintf(path, sizeof(path), "%s/generations/%s/wal", s->dir, gen);
	(void)rmdir(path);
	snprintf(path, sizeof(path), "%s/generations/%s", s->dir, gen);
	(void)rmdir(path);
}

int shadow_start(struct shadow *s, const char *gen, uint32_t index, int64_t prev_end)
{
	char path[SH_PATH];

	/*
	 * The new generation's directory and file first: a failed start leaves
	 * the shadow as it was. Named the failed try's first, the next pass
	 * took its directory, removed, for the state directory removed, and
	 * each retry recorded the try as the generation the file left, pushing
	 * the real one out of the "earlier" records (QA119 D1, D2).
	 */
	snprintf(path, sizeof(path), "%s/generations/%s/wal", s->dir, gen);
	char rel[64];
	snprintf(rel, sizeof(rel), "generations/%s/wal", gen);
	/* never the state directory itself: removed since it was locked, it stays so (QA162 D1) */
	if (fs_mkdir_below(s->dir, rel, 0750, s->uid, s->gid) < 0) {
		int e = errno;
		snprintf(s->err, sizeof(s->err), "cannot create the shadow directory %.3900s: %s", path,
			 strerror(e));
		snprintf(s->err_key, sizeof(s->err_key), "mkdir: %s", strerror(e));
		/* each try is a new generation: none of its directories stays (QA118 D3) */
		remove_generation_dirs(s, gen);
		return -1;
	}
	if (localstate_write_generation(s->dir, gen, s->uid, s->gid) < 0) {
		int e = errno;
		snprintf(s->err, sizeof(s->err), "cannot write the generation file in %s: %s", s->dir,
			 strerror(e));
		snprintf(s->err_key, sizeof(s->err_key), "generation file: %s", strerror(e));
		/* its rename may have landed (a failed directory fsync after it): put it back */
		if (s->gen[0])
			(void)localstate_write_generation(s->dir, s->gen, s->uid, s->gid);
		remove_generation_dirs(s, gen);
		return -1;
	}
	shadow_close(s);
	snprintf(s->gen, sizeof(s->gen), "%s", gen);
	s->index = index;
	s->size = 0;
	s->published = 0;
	s->prev_end = prev_end;
	s->have_prev = false;
	s->unproven = false;
	remove_other_generations(s->dir, gen);
	record_index(s);
	return 0;
}

/*
 * Cut the current file back to what it holds for sure (s->size, a commit's
 * end): replicas ship a finished index up to its file's length, and a torn
 * frame there would make every restore of the generation fail. Cutting a file
 * shorter needs no room, so it works on a full disk.
 */
static void cut_to_size(struct shadow *s)
{
	struct stat st;
	if (s->fd >= 0 && fstat(s->fd, &st) == 0 && (uint64_t)st.st_size != s->size)
		(void)!ftruncate(s->fd, (off_t)s->size);
}

void shadow_next_index(struct shadow *s)
{
	s->prev_end = -1;
	s->have_prev = false; /* an index left with no file: its session is unknown */
	s->unproven = false;
	cut_to_size(s);
	if (s->fd >= 0) {
		memcpy(s->prev_hdr, s->hdr_raw, WAL_HEADER_SIZE);
		s->have_prev = true;
		s->prev_end = (int64_t)s->size;
	}
	shadow_close(s);
	s->index++;
	s->size = 0;
	s->published = 0;
	record_index(s);
}

/* Open a new file for the current index (no file yet). -1 with the cause in why. */
static int create_current(struct shadow *s, char *why, size_t whylen)
{
	char path[SH_PATH];
	path_of(s, s->index, path, sizeof(path));
	s->fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
	if (s->fd < 0) {
		snprintf(why, whylen, "create %s: %s", path, strerror(errno));
		return -1;
	}
	if ((s->uid != (uid_t)-1 || s->gid != (gid_t)-1) && fchown(s->fd, s->uid, s->gid) < 0)
		log_warn("shadow", "cannot chown shadow WAL", "path=\"%s\" err=\"%s\"", path,
			 strerror(errno));
	return 0;
}

static void drop_current(struct shadow *s)
{
	char path[SH_PATH];
	shadow_close(s);
	unlink(path_of(s, s->index, path, sizeof(path)));
	s->size = 0;
	s->published = 0;
	s->unproven = false;
}

void shadow_drop_unproven(struct shadow *s)
{
	if (s->unproven)
		drop_current(s);
}

/*
 * Can h be the session right after the one prev_raw starts? Each restart of
 * the WAL adds one to salt-1 in the shared WAL index (SQLite's
 * walRestartHdr), so salt-1 two or more ahead means either a whole session
 * written and overwritten before it was copied, or TRUNCATE checkpoints of
 * an already empty WAL (each one adds one too): see shadow.h, unproven. A
 * connection that never restarted the WAL itself writes checkpoint sequence
 * 0 and draws both salts at random: nothing to tell then. (The checkpoint
 * sequence is that connection's own count, not the WAL's.)
 */
static bool session_follows(const uint8_t prev_raw[WAL_HEADER_SIZE], const struct wal_header *h)
{
	struct wal_header p;
	char why[96];
	if (h->checkpoint_seq == 0 || wal_header_parse(prev_raw, &p, why, sizeof(why)) < 0)
		return true;
	return h->salt1 == p.salt1 + 1;
}

/*
 * The WAL looked shorter or overwritten after its header matched the
 * shadow's: did a restart land between the two reads? SQLite writes a new
 * session's header before its first frame, and a truncation leaves no
 * header. Returns what a sync finds then (a new session, or nothing yet), or
 * SHADOW_BROKEN when the header is still this session's.
 */
static enum shadow_result reread_header(const struct shadow *s, int wal)
{
	uint8_t hdr[WAL_HEADER_SIZE];
	if (pread(wal, hdr, sizeof(hdr), 0) != (ssize_t)sizeof(hdr))
		return SHADOW_NONE;
	return memcmp(hdr, s->hdr_raw, WAL_HEADER_SIZE) != 0 ? SHADOW_NEW_SESSION : SHADOW_BROKEN;
}

/* why = "<what> <the current shadow file>: <errno's text>" */
static void shadow_error(const struct shadow *s, const char *what, char *why, size_t whylen)
{
	char path[SH_PATH];
	int e = errno;
	snprintf(why, whylen, "%s %s: %s", what, path_of(s, s->index, path, sizeof(path)),
		 strerror(e));
}

enum shadow_result shadow_sync(struct shadow *s, int wal, uint64_t *grew, char *why,
			       size_t whylen)
{
	uint8_t hdr[WAL_HEADER_SIZE];
	struct wal_header h;
	struct wal_reader r = { 0 };
	unsigned char *buf = NULL;
	struct stat st;
	char reason[96];
	enum shadow_result res = SHADOW_NONE;
	bool created = false;
	uint64_t start;

	*grew = 0;
	why[0] = '\0';
	if (fstat(wal, &st) < 0) {
		snprintf(why, whylen, "stat the WAL: %s", strerror(errno));
		return SHADOW_ERROR;
	}
	if (st.st_size < WAL_HEADER_SIZE)
		return SHADOW_NONE; /* empty (truncated) or header not written yet */
	ssize_t got = pread(wal, hdr, sizeof(hdr), 0);
	if (got < 0) {
		/* not "empty": taken so, commits no replica has counted as copied (QA90 O1) */
		snprintf(why, whylen, "read the WAL header: %s", strerror(errno));
		return SHADOW_ERROR;
	}
	if (got != (ssize_t)sizeof(hdr) || wal_header_parse(hdr, &h, reason, sizeof(reason)) < 0)
		return SHADOW_NONE; /* cut short meanwhile, or header not written yet */

	if (s->fd >= 0) {
		if (memcmp(hdr, s->hdr_raw, WAL_HEADER_SIZE) != 0)
			return SHADOW_NEW_SESSION;
		if ((uint64_t)st.st_size < s->size) {
			if ((res = reread_header(s, wal)) != SHADOW_BROKEN)
				return res;
			snprintf(why, whylen, "wal truncated by another process");
			return SHADOW_BROKEN;
		}
		if (s->size > WAL_HEADER_SIZE) {
			uint8_t fh[WAL_FRAME_HEADER_SIZE];
			off_t at = (off_t)(s->size - wal_frame_size(s->hdr.page_size));
			ssize_t n = pread(wal, fh, sizeof(fh), at);
			if (n < 0) {
				snprintf(why, whylen, "read the WAL: %s", strerror(errno));
				return SHADOW_ERROR;
			}
			if (n != (ssize_t)sizeof(fh) || memcmp(fh, s->last_fh, sizeof(fh)) != 0) {
				if ((res = reread_header(s, wal)) != SHADOW_BROKEN)
					return res;
				snprintf(why, whylen, "wal overwritten by another process");
				return SHADOW_BROKEN;
			}
		}
		if ((uint64_t)st.st_size < s->size + wal_frame_size(s->hdr.page_size))
			return SHADOW_NONE;
		if (wal_reader_init_at(&r, &s->hdr, s->size, s->s1, s->s2) < 0) {
			snprintf(why, whylen, "out of memory");
			return SHADOW_ERROR;
		}
		start = s->size;
	} else {
		if (s->have_prev && memcmp(hdr, s->prev_hdr, WAL_HEADER_SIZE) == 0)
			return SHADOW_NONE; /* still the session we finished */
		if (create_current(s, why, whylen) < 0)
			return SHADOW_ERROR;
		if (s->have_prev && !session_follows(s->prev_hdr, &h)) {
			struct wal_header p;
			(void)wal_header_parse(s->prev_hdr, &p, reason, sizeof(reason));
			s->unproven = true;
			snprintf(s->unproven_why, sizeof(s->unproven_why),
				 "salt-1 %08x follows %08x", h.salt1, p.salt1);
		}
		created = true;
		if (wal_reader_init(&r) < 0) {
			snprintf(why, whylen, "out of memory");
			res = SHADOW_ERROR;
			goto out;
		}
		start = 0;
	}
	if (!(buf = malloc(COPY_CHUNK))) {
		snprintf(why, whylen, "out of memory");
		res = SHADOW_ERROR;
		goto out;
	}
	for (uint64_t off = start;;) {
		ssize_t n = pread(wal, buf, COPY_CHUNK, (off_t)off);
		if (n < 0) {
			snprintf(why, whylen, "read the WAL: %s", strerror(errno));
			res = SHADOW_ERROR;
			goto out;
		}
		if (n == 0)
			break;
		bool ok = wal_reader_feed(&r, buf, (size_t)n) == 0;
		/* copy what validated; the uncommitted tail is cut below */
		size_t valid = (size_t)n;
		if (!ok)
			valid = r.offset > off ? (size_t)(r.offset - off) : 0;
		if (valid && fs_pwrite_all(s->fd, buf, valid, (off_t)off) < 0) {
			shadow_error(s, "write", why, whylen);
			res = SHADOW_ERROR;
			goto out;
		}
		if (!ok)
			break;
		off += (uint64_t)n;
	}
	if (r.commit_end > start) {
		if (ftruncate(s->fd, (off_t)r.commit_end) < 0) {
			shadow_error(s, "truncate", why, whylen);
			res = SHADOW_ERROR;
			goto out;
		}
		if (created) {
			memcpy(s->hdr_raw, hdr, WAL_HEADER_SIZE);
			s->hdr = r.hdr;
		}
		*grew = r.commit_end - start;
		s->size = r.commit_end;
		/* read after the last look: frames it saw published are (shadow.h) */
		if (s->look.set && memcmp(s->look.salts, hdr + 16, 8) == 0) {
			uint64_t pub = WAL_HEADER_SIZE +
				       (uint64_t)s->look.frames * wal_frame_size(h.page_size);
			if (pub > start && pub > s->published)
				s->published = pub < s->size ? pub : s->size;
		}
		s->s1 = r.commit_s1;
		s->s2 = r.commit_s2;
		s->commit_pages = r.commit_pages;
		s->commits += r.commits;
		if (s->size <= WAL_HEADER_SIZE) {
			/* a header with no transaction yet: wait for one */
			drop_current(s);
			*grew = 0;
			created = false;
			goto out;
		}
		if (load_last_frame(s) < 0) {
			shadow_error(s, "read back", why, whylen);
			res = SHADOW_ERROR;
			goto out;
		}
		created = false;
		res = SHADOW_GREW;
	} else if (ftruncate(s->fd, (off_t)start) < 0) {
		shadow_error(s, "truncate", why, whylen);
		res = SHADOW_ERROR;
	}
out:
	if (created)
		drop_current(s);
	else if (res == SHADOW_ERROR)
		cut_to_size(s); /* a write that failed half-way (ENOSPC) left part of a frame */
	free(buf);
	wal_reader_release(&r);
	return res;
}

bool shadow_unpublished(const struct shadow *s)
{
	return s->fd >= 0 && s->size > WAL_HEADER_SIZE && s->published < s->size;
}

enum shadow_result shadow_note_index(struct shadow *s, int wal, const uint8_t salts[8],
				     uint32_t frames, char *why, size_t whylen)
{
	uint8_t mine[WAL_FRAME_HEADER_SIZE], theirs[WAL_FRAME_HEADER_SIZE];

	s->look.set = true;
	memcpy(s->look.salts, salts, 8);
	s->look.frames = frames;
	if (!shadow_unpublished(s) || memcmp(salts, s->hdr_raw + 16, 8) != 0 || frames == 0)
		return SHADOW_NONE;
	uint64_t fsz = wal_frame_size(s->hdr.page_size);
	uint64_t at = WAL_HEADER_SIZE + (uint64_t)frames * fsz;
	if (at > s->size)
		at = s->size;
	if (at <= s->published)
		return SHADOW_NONE;
	if (at == s->size)
		memcpy(mine, s->last_fh, sizeof(mine));
	else if (pread(s->fd, mine, sizeof(mine), (off_t)(at - fsz)) != (ssize_t)sizeof(mine))
		return SHADOW_NONE;
	if (pread(wal, theirs, sizeof(theirs), (off_t)(at - fsz)) != (ssize_t)sizeof(theirs))
		return SHADOW_NONE; /* cut short: not ours to judge (monitor_wal_cut_short) */
	if (memcmp(mine, theirs, sizeof(mine)) == 0) {
		s->published = at;
		return SHADOW_NONE;
	}
	if (reread_header(s, wal) != SHADOW_BROKEN)
		return SHADOW_NONE; /* a restart wrote there since the look */
	snprintf(why, whylen, "frame %llu of the WAL, which SQLite publishes, is not the one copied "
		 "there: frames past what it published were dropped and written over (a writer "
		 "killed inside its commit?)", (unsigned long long)((at - WAL_HEADER_SIZE) / fsz));
	return SHADOW_BROKEN;
}

uint32_t shadow_lowest_index(const struct shadow *s)
{
	char path[SH_PATH];
	DIR *d;
	struct dirent *de;
	uint32_t low = s->index;

	snprintf(path, sizeof(path), "%s/generations/%s/wal", s->dir, s->gen);
	if (!(d = opendir(path)))
		return low;
	while ((de = readdir(d))) {
		unsigned int idx;
		char tail[8];
		if (strlen(de->d_name) == 12 && sscanf(de->d_name, "%8x%7s", &idx, tail) == 2 &&
		    strcmp(tail, ".wal") == 0 && idx < low)
			low = idx;
	}
	closedir(d);
	return low;
}

void shadow_remove_below(struct shadow *s, uint32_t min)
{
	char path[SH_PATH];
	DIR *d;
	struct dirent *de;

	if (!s->gen[0])
		return;
	snprintf(path, sizeof(path), "%s/generations/%s/wal", s->dir, s->gen);
	if (!(d = opendir(path)))
		return;
	while ((de = readdir(d))) {
		unsigned int idx;
		char tail[8];
		if (strlen(de->d_name) != 12 || sscanf(de->d_name, "%8x%7s", &idx, tail) != 2 ||
		    strcmp(tail, ".wal") != 0 || idx >= min || idx >= s->index)
			continue;
		unlink(path_of(s, idx, path, sizeof(path)));
	}
	closedir(d);
}
