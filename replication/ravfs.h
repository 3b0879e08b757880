/*
 * ravfs.h — an SQLite VFS that reads ahead, for a connection that scans a
 * whole database once (restore's quick_check / integrity_check), and that
 * notes failed reads (every connection to restore's temp database).
 *
 * SQLite reads one page per pread(2). Checking a 500 MB database of 4 KiB
 * pages is 122,000 system calls, and on this VM their overhead was most of
 * the check's time. This VFS wraps the default one ("unix") and gives each
 * main database file a read-ahead window: a read that continues the previous
 * one, upwards or downwards (the checks walk a b-tree's cells last to first),
 * reads a larger block in that direction (16 KiB, doubling up to 256 KiB)
 * and the next pages come from memory. Reads elsewhere go to the file as asked, so a
 * scattered access pattern costs what it did. Writes and truncation pass
 * through and drop the window. Memory: one window per open database file,
 * freed when it closes. Journals and the -wal pass through as they are.
 *
 * Every read through it that fails is noted for the thread that made it
 * (ravfs_take_read_errno()): SQLite turns an EIO on read into SQLITE_CORRUPT
 * and keeps no errno, which would blame a replica for our disk.
 *
 * Like any sqlite3_file, a file opened through it is used by one connection;
 * nothing else may write the file while the window holds part of it (restore
 * owns its temp file alone).
 */
#ifndef LITEVISOR_RAVFS_H
#define LITEVISOR_RAVFS_H

/*
 * Register the VFS (once, thread-safe; never the default) and return its
 * name for sqlite3_open_v2, or NULL when SQLite has no default VFS or out of
 * memory (the caller then opens without it).
 */
const char *ravfs_name(void);

/*
 * The errno of the calling thread's last failed read through the VFS since
 * the previous call (0: none), and forget it. Call it before a statement to
 * start clean, and after one that failed.
 */
int ravfs_take_read_errno(void);

#endif
