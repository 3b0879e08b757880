/*
 * statelock.h — one litevisor process per state directory.
 *
 * Two processes in one state directory (two jobs whose configs give the
 * same meta-path, two litevisors started on one database) take each other's
 * generation and shadow WAL for their own: one database's commits stop
 * reaching its replica, or one restores over the other. The config refuses
 * a meta-path twice in one file (config_dups.c); across processes the
 * state directory is locked: an flock(2) on "<state dir>.lock" (the
 * directory's physical path: symlinks resolved), held until the process
 * exits. The kernel drops it however the process ends
 * (SIGKILL, a crash), so nothing is left to clean up and no stale lock can
 * keep a restarted job out.
 *
 * The file is beside the directory, not in it: a restore moves a stale
 * state directory aside (restore_local.c), and a lock inside it would go
 * with it. It holds "<pid> <host>\n" of its holder, for the message of the
 * process refused. The directory itself is flock'ed too: where its parent
 * cannot be written (a volume mounted at the meta-path, a directory the
 * service user owns under one it does not), no file can be made beside it,
 * and the directory's own lock is then the one that counts (it names no
 * holder; such a directory cannot be moved aside either), and where that
 * cannot be flock'ed either (NFS), a file STATELOCK_INNER inside it, which
 * stays in place when the directory's contents go aside. The descriptors
 * are close-on-exec: the service never inherits them (a service outliving
 * litevisor must not keep the next one out).
 */
#ifndef LITEVISOR_STATELOCK_H
#define LITEVISOR_STATELOCK_H

#include <stddef.h>

#include "common/config.h"

/* the lock file inside the state directory, where none can be made beside it nor the
 * directory itself be flock'ed (NFS, a parent the user cannot write) */
#define STATELOCK_INNER ".lock"

enum statelock_result {
	STATELOCK_TAKEN,   /* *fd holds the lock */
	STATELOCK_NO_DIR,  /* the state directory does not exist (yet): nobody uses it; take it
			      again once it does, before reading it. Nothing is created here
			      (a restore creates a database's directory with its owner, and one
			      that stops leaves nothing behind); also when it or its lock file
			      was removed while being locked: no lock is held then */
	STATELOCK_HELD,    /* another process holds it; holder: "pid 123 on host h" (or "") */
	STATELOCK_ERROR,   /* the lock file cannot be made or locked (logged) */
};

/*
 * Take the lock of db's state directory dir. On STATELOCK_TAKEN fds[0] (the
 * lock file's, -1 when none could be made) and fds[1] (the directory's, -1
 * where a directory cannot be flock'ed, NFS: then the file's counts), one
 * at least >= 0, are the descriptors to keep open for as long as the directory is used; the
 * file is given the database's owner. Otherwise both are -1. holder gets who
 * holds it on STATELOCK_HELD (not logged here: the caller says what it does
 * about it).
 */
enum statelock_result statelock_take(const struct cfg_db *db, const char *dir, int fds[2],
				     char *holder, size_t holderlen);

#endif
