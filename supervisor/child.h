/*
 * child.h — start the service: fork, reset signals, switch identity, exec.
 *
 * Everything that can allocate or block (user and group lookup, PATH search,
 * the environment) is done before fork, so the child makes only
 * async-signal-safe calls between fork and exec (the parent has threads).
 * In the child: own process group if asked, every signal disposition back to
 * the default (an ignored SIGPIPE would survive execve), supplementary groups,
 * group, user, the original signal mask (so nothing litevisor blocks or
 * ignores, signals.h, stays blocked or ignored in the service), execve; a
 * file execve takes for no known format (ENOEXEC) that is not ELF is run
 * with /bin/sh, as execvp runs a script without "#!". A failure in the child is
 * sent to the parent as {stage, errno} through a close-on-exec pipe and the
 * child exits 127 (ENOENT: not found) or 126 (anything else: not executable,
 * permission denied, identity switch refused) — the codes shells and tini use.
 */
#ifndef LITEVISOR_SUP_CHILD_H
#define LITEVISOR_SUP_CHILD_H

#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "common/config.h"

/* The identity the service runs as (resolved from cfg_supervisor user/group/groups). */
struct child_creds {
	bool set;             /* false: keep litevisor's identity */
	uid_t uid;
	gid_t gid;
	gid_t *groups;        /* supplementary groups (owned) */
	size_t ngroups;
	char *user;           /* user name, or NULL (for HOME/USER/LOGNAME) */
	char *home;           /* the user's home directory; "/" for a bare uid without passwd entry; NULL when no user is set */
};

/*
 * Resolve cfg's supervisor user (name or number), group (default: the
 * user's primary group) and supplementary groups (default: the user's groups
 * from /etc/group). Returns 0, or -1 with a message in err naming the
 * unknown user or group as the loader's errors do
 * ("FILE:LINE:COLUMN: supervisor.user: unknown user \"x\"").
 */
int child_creds_resolve(const struct config *cfg, struct child_creds *out, char *err, size_t errlen);

/* Free what creds own and zero it. */
void child_creds_release(struct child_creds *c);

struct child_spec {
	char *const *argv;               /* argv[0] is the command as given */
	char *const *envp;
	const struct child_creds *creds; /* NULL: no switch */
	bool new_process_group;          /* setpgid(0,0) */
	int take_terminal;               /* with it: a terminal's fd (>= 0) whose foreground
					  * group to become, else -1 */
	const sigset_t *mask;            /* mask to restore before exec */
};

/* What a failed start looked like (filled when child_spawn reports a failure). */
struct child_failure {
	bool failed;
	int exit_code;        /* 127 or 126: what the child exits with */
	int err;              /* errno in the child */
	char message[512];    /* "cannot run \"x\": No such file or directory" */
};

/*
 * Fork and exec spec. Waits until the exec succeeded or failed (the pipe
 * closes on exec). Returns the child's pid: on exec failure the pid is still
 * returned (the child exits with fail->exit_code and must be reaped as any
 * other) and *fail describes the failure; fail->failed is false otherwise.
 * Returns -1 (logged) only if fork itself failed.
 */
pid_t child_spawn(const struct child_spec *spec, struct child_failure *fail);

/*
 * Started with stdin, stdout or stderr closed (`2>&-`, a supervisor that
 * closes them), the next descriptor litevisor opened would take that number:
 * its log lines would go into an eventfd (adding to its counter) or into
 * whatever file landed there, a database or a replica object. This puts
 * /dev/null in each closed one, read-only: litevisor's own writes there
 * still fail (EBADF) as they would have, so `litevisor config >&-` reports
 * its output lost. A child gets /dev/null open for reading and writing in
 * its place, as catatonit gives it (a service's print must not fail where
 * it would have gone nowhere); without /dev/null, the closed descriptor. Call first thing in main(), before any thread.
 */
void child_hold_closed_stdio(void);

/*
 * Note the descriptors (3 and up) this process inherited, so that a child
 * gets those and none of litevisor's own: libraries open some without
 * close-on-exec (libcurl 7.88's socketpairs). Call first thing in main(),
 * before any thread. Without it, children inherit whatever is not
 * close-on-exec.
 */
void child_note_inherited_fds(void);

/*
 * Raise this process's soft RLIMIT_NOFILE to its hard limit, as Go programs
 * (Litestream) do at start: a database with two replicas holds about 17
 * descriptors, and systemd's usual soft limit of 1024 would stop replication
 * at some 55 databases. A child gets the soft limit litevisor started with
 * back (programs using select(2) break past 1024). Call early in main(),
 * before any thread.
 */
void child_raise_fd_limit(void);

/*
 * Find cmd as execvp would, in $PATH (default /usr/local/bin:/usr/bin:/bin),
 * run as the identity as (NULL or unset: litevisor's own); a name with '/'
 * is used as is. Returns a malloc'd path: the first regular file that
 * identity may run (for another user, by the execute bits of the file and
 * of its $PATH directory: ACLs are not read), else the first existing file
 * (so exec reports EACCES), else "" (exec reports ENOENT: a name not found
 * in $PATH is never looked for in the working directory, unless $PATH has an
 * empty element, leading, inner or trailing). NULL only on ENOMEM.
 */
char *child_find_program(const char *cmd, const struct child_creds *as);

#endif
