/* ravfs.c — the read-ahead VFS. See ravfs.h. */
#include "replication/ravfs.h"

#include <errno.h>
#include <pthread.h>
#include <stdbool.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

#define RA_NAME "litevisor-readahead"
#define RA_MIN (16 * 1024)
#define RA_MAX (256 * 1024)

struct ra_file {
	sqlite3_file base;      /* pMethods = &ra_methods */
	sqlite3_file *real;     /* the default VFS's file, right after this struct */
	unsigned char *buf;     /* the window (RA_MAX bytes, allocated on first use) */
	sqlite3_int64 buf_off;  /* file offset of buf[0] */
	size_t buf_len;         /* valid bytes in buf (0: empty) */
	sqlite3_int64 last_off; /* the previous read: its offset … */
	int last_amt;           /* … and length (direction detection) */
	size_t step;            /* the next read-ahead size */
	bool plain;             /* not the main database: no window, errors noted only */
};

/* The errno of this thread's last failed read through this VFS (0: none since taken). */
static __thread int read_errno;

static sqlite3_vfs *real_vfs;
static sqlite3_vfs ra_vfs;
static pthread_once_t once = PTHREAD_ONCE_INIT;
static const char *registered;

#define REAL(f) (((struct ra_file *)(f))->real)

static int ra_close(sqlite3_file *f)
{
	struct ra_file *p = (struct ra_file *)f;
	int rc = p->real->pMethods->xClose(p->real);
	free(p->buf);
	p->buf = NULL;
	return rc;
}

/* Copy [off, off+amt) from the window if it holds all of it. */
static int from_window(struct ra_file *p, void *out, int amt, sqlite3_int64 off)
{
	if (!p->buf_len || off < p->buf_off || off + amt > p->buf_off + (sqlite3_int64)p->buf_len)
		return 0;
	memcpy(out, p->buf + (off - p->buf_off), (size_t)amt);
	return 1;
}

static int window_read(struct ra_file *p, void *out, int amt, sqlite3_int64 off);

/*
 * SQLite reports an EIO on read as SQLITE_CORRUPT ("database disk image is
 * malformed", SQLITE_IOERR_CORRUPTFS) and forgets the errno: note it here so
 * the caller can tell our disk's failure from a corrupt replica.
 */
static int ra_read(sqlite3_file *f, void *out, int amt, sqlite3_int64 off)
{
	struct ra_file *p = (struct ra_file *)f;
	int rc = p->plain ? p->real->pMethods->xRead(p->real, out, amt, off)
			  : window_read(p, out, amt, off);
	if (rc != SQLITE_OK && rc != SQLITE_IOERR_SHORT_READ)
		read_errno = errno ? errno : EIO;
	return rc;
}

int ravfs_take_read_errno(void)
{
	int e = read_errno;
	read_errno = 0;
	return e;
}

static int window_read(struct ra_file *p, void *out, int amt, sqlite3_int64 off)
{
	sqlite3_file *r = p->real;
	/* SQLite's checks walk a b-tree's cells last to first: often downwards in the file */
	bool up = off == p->last_off + p->last_amt, down = off + amt == p->last_off;
	p->last_off = off;
	p->last_amt = amt;
	if (from_window(p, out, amt, off))
		return SQLITE_OK;
	if ((!up && !down) || amt >= RA_MAX) {
		p->step = RA_MIN;
		return r->pMethods->xRead(r, out, amt, off);
	}
	/* read ahead, never past the end: a short read would hide how much is valid */
	sqlite3_int64 size = 0;
	if (r->pMethods->xFileSize(r, &size) != SQLITE_OK || off + amt > size)
		return r->pMethods->xRead(r, out, amt, off);
	sqlite3_int64 want = p->step > (size_t)amt ? (sqlite3_int64)p->step : amt;
	sqlite3_int64 start = up ? off : off + amt - want;
	if (start < 0)
		start = 0;
	if (start + want > size)
		want = size - start;
	if (!p->buf && !(p->buf = malloc(RA_MAX)))
		return r->pMethods->xRead(r, out, amt, off);
	p->buf_len = 0;
	if (r->pMethods->xRead(r, p->buf, (int)want, start) != SQLITE_OK)
		return r->pMethods->xRead(r, out, amt, off); /* an I/O error: ask it plainly */
	p->buf_off = start;
	p->buf_len = (size_t)want;
	if (p->step < RA_MAX)
		p->step *= 2;
	memcpy(out, p->buf + (off - start), (size_t)amt);
	return SQLITE_OK;
}

static int ra_write(sqlite3_file *f, const void *in, int amt, sqlite3_int64 off)
{
	((struct ra_file *)f)->buf_len = 0;
	return REAL(f)->pMethods->xWrite(REAL(f), in, amt, off);
}

static int ra_truncate(sqlite3_file *f, sqlite3_int64 size)
{
	((struct ra_file *)f)->buf_len = 0;
	return REAL(f)->pMethods->xTruncate(REAL(f), size);
}

/* Everything else is the real file's. */
static int ra_sync(sqlite3_file *f, int flags) { return REAL(f)->pMethods->xSync(REAL(f), flags); }
static int ra_size(sqlite3_file *f, sqlite3_int64 *s) { return REAL(f)->pMethods->xFileSize(REAL(f), s); }
static int ra_lock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xLock(REAL(f), l); }
static int ra_unlock(sqlite3_file *f, int l) { return REAL(f)->pMethods->xUnlock(REAL(f), l); }
static int ra_reserved(sqlite3_file *f, int *out)
{
	return REAL(f)->pMethods->xCheckReservedLock(REAL(f), out);
}
static int ra_fcntl(sqlite3_file *f, int op, void *arg)
{
	return REAL(f)->pMethods->xFileControl(REAL(f), op, arg);
}
static int ra_sector(sqlite3_file *f) { return REAL(f)->pMethods->xSectorSize(REAL(f)); }
static int ra_devchar(sqlite3_file *f) { return REAL(f)->pMethods->xDeviceCharacteristics(REAL(f)); }
static int ra_shm_map(sqlite3_file *f, int pg, int sz, int ext, void volatile **pp)
{
	return REAL(f)->pMethods->xShmMap(REAL(f), pg, sz, ext, pp);
}
static int ra_shm_lock(sqlite3_file *f, int off, int n, int flags)
{
	return REAL(f)->pMethods->xShmLock(REAL(f), off, n, flags);
}
static void ra_shm_barrier(sqlite3_file *f) { REAL(f)->pMethods->xShmBarrier(REAL(f)); }
static int ra_shm_unmap(sqlite3_file *f, int del) { return REAL(f)->pMethods->xShmUnmap(REAL(f), del); }
static int ra_fetch(sqlite3_file *f, sqlite3_int64 off, int amt, void **pp)
{
	/* no memory-mapped reads: they would bypass the window (mmap_size is 0 anyway) */
	(void)f, (void)off, (void)amt;
	*pp = NULL;
	return SQLITE_OK;
}
static int ra_unfetch(sqlite3_file *f, sqlite3_int64 off, void *p)
{
	(void)f, (void)off, (void)p;
	return SQLITE_OK;
}

static const sqlite3_io_methods ra_methods = {
	.iVersion = 3,
	.xClose = ra_close, .xRead = ra_read, .xWrite = ra_write, .xTruncate = ra_truncate,
	.xSync = ra_sync, .xFileSize = ra_size, .xLock = ra_lock, .xUnlock = ra_unlock,
	.xCheckReservedLock = ra_reserved, .xFileControl = ra_fcntl, .xSectorSize = ra_sector,
	.xDeviceCharacteristics = ra_devchar, .xShmMap = ra_shm_map, .xShmLock = ra_shm_lock,
	.xShmBarrier = ra_shm_barrier, .xShmUnmap = ra_shm_unmap, .xFetch = ra_fetch,
	.xUnfetch = ra_unfetch,
};

static int ra_open(sqlite3_vfs *vfs, sqlite3_filename name, sqlite3_file *f, int flags, int *out)
{
	(void)vfs;
	struct ra_file *p = (struct ra_file *)f;
	memset(p, 0, sizeof(*p));
	p->real = (sqlite3_file *)(p + 1);
	p->plain = !(flags & SQLITE_OPEN_MAIN_DB); /* the -wal and journals */
	p->step = RA_MIN;
	p->last_off = -1;
	int rc = real_vfs->xOpen(real_vfs, name, p->real, flags, out);
	/* on failure pMethods stays NULL: SQLite then closes nothing (the real VFS cleaned up) */
	if (rc == SQLITE_OK)
		p->base.pMethods = &ra_methods;
	return rc;
}

static void register_once(void)
{
	real_vfs = sqlite3_vfs_find(NULL);
	if (!real_vfs)
		return;
	/* the real VFS's other methods, with its pAppData (the unix VFS reads it) */
	ra_vfs = *real_vfs;
	ra_vfs.pNext = NULL;
	ra_vfs.zName = RA_NAME;
	ra_vfs.szOsFile = (int)sizeof(struct ra_file) + real_vfs->szOsFile;
	ra_vfs.xOpen = ra_open;
	if (sqlite3_vfs_register(&ra_vfs, 0) == SQLITE_OK)
		registered = RA_NAME;
}

const char *ravfs_name(void)
{
	pthread_once(&once, register_once);
	return registered;
}
