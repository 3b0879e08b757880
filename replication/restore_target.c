/*
 * restore_target.c — the restore target's directory: can it be made (a
 * parent that is a file is an error found before anything is probed), make
 * it with the owner and mode the restored file gets, and take back what was
 * made when the restore fails; and the apply options (owner, mode,
 * parallelism) a restore into that target uses. Only directories this
 * restore created are ever removed, and only with rmdir.
 */
#include "replication/restore_int.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "common/banned.h"

void rs_apply_opts_init(struct rs_apply_opts *ao, const struct config *cfg, const char *target,
			int parallelism)
{
	memset(ao, 0, sizeof(*ao));
	ao->target = target;
	ao->parallelism = parallelism > 0 ? parallelism
					  : (cfg->restore.parallelism > 0 ? cfg->restore.parallelism : 8);
	ao->verify = cfg->restore.verify;
	rs_owner_for(cfg, target, &ao->uid, &ao->gid, &ao->mode);
}

/*
 * Split the directory of target at the nearest ancestor that exists: its
 * path in anc, its stat in *st, and where the missing part starts in dir
 * (a copy of target's directory; *missing is "" when it exists). 0, or -1
 * (errno set, anc names what could not be looked at).
 */
static int nearest_ancestor(const char *target, char *dir, size_t dlen, char *anc, size_t alen,
			    char **missing, struct stat *st)
{
	snprintf(dir, dlen, "%s", target);
	char *slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, dlen, ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	size_t n = strlen(dir);
	for (;;) {
		snprintf(anc, alen, "%.*s", (int)n, dir);
		if (stat(anc, st) == 0) {
			*missing = dir + n + (dir[n] == '/');
			while (**missing == '/')
				(*missing)++;
			return 0;
		}
		if (errno != ENOENT && errno != ENOTDIR) /* ENOTDIR: look for the file on the way */
			return -1;
		while (n > 0 && dir[n - 1] != '/') /* up one component */
			n--;
		if (n == 0) { /* a relative path: "." exists */
			snprintf(anc, alen, ".");
			*missing = dir;
			return stat(anc, st);
		}
		while (n > 1 && dir[n - 1] == '/')
			n--;
	}
}

/*
 * Can target's directory be made? A parent that is a file (-o afile/x.db) is
 * an error naming it, found before anything is probed or written. 0 or -1.
 */
int rs_check_parent(const char *target, struct restore_result *res)
{
	char dir[PATH_MAX], anc[PATH_MAX];
	char *missing;
	struct stat st;
	if (nearest_ancestor(target, dir, sizeof(dir), anc, sizeof(anc), &missing, &st) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot restore to %s: %s: %s", target, anc,
			      strerror(errno));
		return -1;
	}
	if (!S_ISDIR(st.st_mode)) {
		rs_result_set(res, RESTORE_FAILED, "cannot restore to %s: %s is not a directory (%s)",
			      target, anc, strerror(ENOTDIR));
		return -1;
	}
	return 0;
}

/*
 * Create the directories that will hold target (a fresh disk has none).
 * Each one gets the owner the file gets (the configured user, else, as root,
 * the owner of the nearest existing directory: see rs_owner_for) and that
 * directory's permissions, so the file and its directories come out as they
 * would in an existing directory of that owner and mode. Never
 * world-writable nor sticky: a shared place like /tmp is no model for a
 * database's directory. Created 0700, then given away through the open
 * directory (never by name: its parent may belong to another user).
 * made_top gets the first directory created ("" if none) for rs_undo_parent().
 */
int rs_ensure_parent(const struct rs_apply_opts *ao, struct restore_result *res,
		     char made_top[PATH_MAX])
{
	char dir[PATH_MAX], anc[PATH_MAX];
	char *missing;
	struct stat st;
	int pfd = -1, rc = -1;

	made_top[0] = '\0';
	if (nearest_ancestor(ao->target, dir, sizeof(dir), anc, sizeof(anc), &missing, &st) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot create directory %s: %s: %s", dir, anc,
			      strerror(errno));
		return -1;
	}
	if (!*missing)
		return 0;
	mode_t mode = st.st_mode & (S_ISGID | 0777) & ~(mode_t)S_IWOTH;
	if ((pfd = open(anc, O_RDONLY | O_DIRECTORY | O_CLOEXEC)) < 0) {
		rs_result_set(res, RESTORE_FAILED, "cannot create directory %s: %s: %s", dir, anc,
			      strerror(errno));
		return -1;
	}
	for (char *p = missing; *p;) {
		char *end = p + strcspn(p, "/");
		char c = *end;
		*end = '\0';
		bool made = mkdirat(pfd, p, 0700) == 0;
		int fd = made || errno == EEXIST
				 ? openat(pfd, p, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC) : -1;
		if (fd < 0 ||
		    (made && (ao->uid != (uid_t)-1 || ao->gid != (gid_t)-1) &&
		     fchown(fd, ao->uid, ao->gid) < 0) ||
		    (made && (fchmod(fd, mode) < 0 || fsync(pfd) < 0))) {
			rs_result_set(res, RESTORE_FAILED, "cannot create directory %s: %s", dir,
				      strerror(errno));
			if (fd >= 0)
				close(fd);
			goto out;
		}
		if (made && !made_top[0])
			snprintf(made_top, PATH_MAX, "%s", dir);
		if (made)
			log_info("restore", "created directory", "path=\"%s\" uid=%ld gid=%ld mode=%04o",
				 dir, (long)(ao->uid == (uid_t)-1 ? geteuid() : ao->uid),
				 (long)(ao->gid == (gid_t)-1 ? getegid() : ao->gid), (unsigned)mode);
		close(pfd);
		pfd = fd;
		*end = c;
		p = end;
		while (*p == '/')
			p++;
	}
	rc = 0;
out:
	if (pfd >= 0)
		close(pfd);
	return rc;
}

/*
 * A failed restore leaves nothing behind: remove the directories
 * rs_ensure_parent() created for target, deepest first, up to made_top. rmdir
 * only: a directory something else wrote into since stays.
 */
void rs_undo_parent(const char *target, const char *made_top)
{
	char dir[PATH_MAX];
	if (!made_top[0] || snprintf(dir, sizeof(dir), "%s", target) >= (int)sizeof(dir))
		return;
	for (;;) {
		char *slash = strrchr(dir, '/');
		if (!slash || slash == dir)
			return;
		*slash = '\0';
		if (rmdir(dir) < 0 && errno != ENOENT) { /* ENOENT: made no deeper than this */
			log_warn("restore", "cannot remove a directory made for the failed restore",
				 "path=\"%s\" error=\"%s\"", dir, strerror(errno));
			return;
		}
		if (strcmp(dir, made_top) == 0)
			return;
	}
}

/*
 * A first deploy starts empty: the service creates the database, but one
 * running as another user cannot create its directory where only root may
 * (a fresh /data). The directories are made as a restore would make them
 * (rs_ensure_parent: the configured user's). A failure is only logged: the
 * service may not need them, and says so itself if it does.
 */
void rs_parent_for_service(const struct config *cfg, const char *path)
{
	struct rs_apply_opts ao;
	struct restore_result tmp = { 0 };
	char made_top[PATH_MAX];
	rs_apply_opts_init(&ao, cfg, path, 0);
	if (rs_ensure_parent(&ao, &tmp, made_top) < 0)
		log_warn("restore", "cannot create the database's directory for the service",
			 "path=\"%s\" err=\"%s\"", path, tmp.message);
}
