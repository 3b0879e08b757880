/*
 * faultinject.c — an LD_PRELOAD library that makes one system call fail, so
 * tests can check what litevisor does when the disk does (EIO, ENOSPC …).
 *
 *   FAULT_OP     fsync | fdatasync | pread | write | pwrite | rename | unlink |
 *                flock | mkdir | fallocate (pread covers pread64; pwrite
 *                pwrite64; rename renameat/2; unlink unlinkat; mkdir mkdirat;
 *                fallocate fallocate64)
 *   FAULT_PATH   substring the call's path must hold (for fd calls: the
 *                file /proc/self/fd/N names)
 *   FAULT_SUFFIX optional: what the call's path must end with
 *   FAULT_N      the Nth matching call fails, counted from 1 (default 1)
 *   FAULT_ERRNO  the errno it fails with, a number (default EIO)
 *   FAULT_COUNT  how many matching calls from the Nth on are hit (default 1)
 *   FAULT_DELAY_MS  instead of failing, a hit call waits this long, then runs
 *                (or, with FAULT_ERRNO set too, then fails: a hang that ends in
 *                an error)
 *   FAULT_ARM    optional file: calls are counted and hit only while it exists
 *   FAULT_LOG    optional file: one line per call hit
 *
 * Only the process that loads it counts; children exec'd with the variable
 * still set count for themselves. Test-only: never installed, never linked
 * into litevisor.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

static atomic_long seen;

/* The path fd names, or "" when it has none. */
static void fd_path(int fd, char *buf, size_t len)
{
	char link[64];
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	ssize_t n = readlink(link, buf, len - 1);
	buf[n > 0 ? n : 0] = '\0';
}

/* True when this call of op on path is one to fail; errno is then set. A delay is served here. */
static int should_fail(const char *op, const char *path)
{
	const char *want = getenv("FAULT_OP"), *pat = getenv("FAULT_PATH"), *arm = getenv("FAULT_ARM");
	if (!want || strcmp(want, op) || !path || (pat && !strstr(path, pat)))
		return 0;
	const char *suf = getenv("FAULT_SUFFIX");
	if (suf && (strlen(path) < strlen(suf) || strcmp(path + strlen(path) - strlen(suf), suf)))
		return 0;
	if (arm && access(arm, F_OK) < 0)
		return 0;
	long n = getenv("FAULT_N") ? atol(getenv("FAULT_N")) : 1;
	long count = getenv("FAULT_COUNT") ? atol(getenv("FAULT_COUNT")) : 1;
	long k = atomic_fetch_add(&seen, 1) + 1;
	if (k < n || k >= n + count)
		return 0;
	int saved = errno, e = getenv("FAULT_ERRNO") ? atoi(getenv("FAULT_ERRNO")) : EIO;
	long delay = getenv("FAULT_DELAY_MS") ? atol(getenv("FAULT_DELAY_MS")) : 0;
	const char *log = getenv("FAULT_LOG");
	if (log) {
		FILE *f = fopen(log, "a");
		if (f) {
			fprintf(f, "%s #%ld %s %s=%ld\n", op, k, path, delay ? "delay_ms" : "errno",
				delay ? delay : e);
			fclose(f);
		}
	}
	if (delay) {
		struct timespec ts = { delay / 1000, (delay % 1000) * 1000000L };
		while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
			;
		if (!getenv("FAULT_ERRNO")) {
			errno = saved;
			return 0;
		}
	}
	errno = e;
	return 1;
}

static int fd_fails(const char *op, int fd)
{
	const char *want = getenv("FAULT_OP");
	if (!want || strcmp(want, op))
		return 0;
	char path[4096];
	fd_path(fd, path, sizeof(path));
	return should_fail(op, path);
}

#define NEXT(name) ((__typeof__(&name))dlsym(RTLD_NEXT, #name))

int fsync(int fd)
{
	return fd_fails("fsync", fd) ? -1 : NEXT(fsync)(fd);
}

int fdatasync(int fd)
{
	return fd_fails("fdatasync", fd) ? -1 : NEXT(fdatasync)(fd);
}

ssize_t pread(int fd, void *buf, size_t n, off_t off)
{
	return fd_fails("pread", fd) ? -1 : NEXT(pread)(fd, buf, n, off);
}

ssize_t pread64(int fd, void *buf, size_t n, off_t off)
{
	return fd_fails("pread", fd) ? -1 : NEXT(pread64)(fd, buf, n, off);
}

ssize_t write(int fd, const void *buf, size_t n)
{
	return fd_fails("write", fd) ? -1 : NEXT(write)(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
	return fd_fails("pwrite", fd) ? -1 : NEXT(pwrite)(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
	return fd_fails("pwrite", fd) ? -1 : NEXT(pwrite64)(fd, buf, n, off);
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
	return fd_fails("fallocate", fd) ? -1 : NEXT(fallocate)(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off64_t off, off64_t len)
{
	return fd_fails("fallocate", fd) ? -1 : NEXT(fallocate64)(fd, mode, off, len);
}

int flock(int fd, int op)
{
	return fd_fails("flock", fd) ? -1 : NEXT(flock)(fd, op);
}

int rename(const char *from, const char *to)
{
	return should_fail("rename", to) ? -1 : NEXT(rename)(from, to);
}

int renameat(int fa, const char *from, int fb, const char *to)
{
	return should_fail("rename", to) ? -1 : NEXT(renameat)(fa, from, fb, to);
}

int renameat2(int fa, const char *from, int fb, const char *to, unsigned flags)
{
	return should_fail("rename", to) ? -1 : NEXT(renameat2)(fa, from, fb, to, flags);
}

int mkdir(const char *path, mode_t mode)
{
	return should_fail("mkdir", path) ? -1 : NEXT(mkdir)(path, mode);
}

int mkdirat(int fd, const char *path, mode_t mode)
{
	return should_fail("mkdir", path) ? -1 : NEXT(mkdirat)(fd, path, mode);
}

int unlink(const char *path)
{
	return should_fail("unlink", path) ? -1 : NEXT(unlink)(path);
}

int unlinkat(int dirfd, const char *path, int flags)
{
	return should_fail("unlink", path) ? -1 : NEXT(unlinkat)(dirfd, path, flags);
}
