/* child.c — fork/exec of the service (see child.h). */
#include "supervisor/child.h"

#include <elf.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <limits.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>
#ifdef __linux__
#include <linux/close_range.h>
#endif

#include "common/log.h"
#include "common/banned.h"

enum stage { STAGE_PGRP = 1, STAGE_GROUPS, STAGE_GID, STAGE_UID, STAGE_PARENT, STAGE_MASK,
	     STAGE_EXEC };

struct failure_record {
	int stage;
	int err;
};

static const char *stage_text(int stage)
{
	switch (stage) {
	case STAGE_PGRP: return "cannot create a process group for";
	case STAGE_GROUPS: return "cannot set supplementary groups for";
	case STAGE_GID: return "cannot switch group for";
	case STAGE_UID: return "cannot switch user for";
	case STAGE_PARENT: return "cannot set the parent-death signal for";
	case STAGE_MASK: return "cannot restore the signal mask for";
	default: return "cannot run";
	}
}

/* Buffer big enough for getpwnam_r/getgrnam_r. */
static size_t lookup_bufsize(int name)
{
	long n = sysconf(name);
	return n > 0 ? (size_t)n * 4 : 65536;
}

static bool parse_id(const char *s, unsigned long *out)
{
	char *end;
	if (!*s || *s < '0' || *s > '9')
		return false;
	errno = 0;
	unsigned long v = strtoul(s, &end, 10);
	if (errno || *end || v > (unsigned long)INT_MAX)
		return false;
	*out = v;
	return true;
}

/* "FILE:LINE:COLUMN: KEY", as the loader's errors start, for a name written at `at`. */
static void key_at(const struct config *cfg, struct cfg_where at, const char *key, char *buf,
		   size_t len)
{
	snprintf(buf, len, "%s:%d:%d: %s", cfg->file ? cfg->file : "<config>", at.line, at.column, key);
}

/* Resolve a group name or number to a gid. 0 or -1 (err set, starting with `key`). */
static int resolve_group(const char *name, const char *key, gid_t *gid, char *err, size_t errlen)
{
	unsigned long id;
	struct group gr, *res = NULL;
	size_t bufsize = lookup_bufsize(_SC_GETGR_R_SIZE_MAX);
	char *buf = malloc(bufsize);
	int rc = -1;
	if (!buf) {
		snprintf(err, errlen, "group \"%s\": out of memory", name);
		return -1;
	}
	int e = getgrnam_r(name, &gr, buf, bufsize, &res);
	if (e == 0 && res) {
		*gid = res->gr_gid;
		rc = 0;
	} else if (parse_id(name, &id)) {
		*gid = (gid_t)id;
		rc = 0;
	} else {
		snprintf(err, errlen, "%s: unknown group \"%s\"%s%s", key, name,
			 e ? ": " : "", e ? strerror(e) : "");
	}
	free(buf);
	return rc;
}

static int add_group(struct child_creds *c, gid_t g)
{
	for (size_t i = 0; i < c->ngroups; i++)
		if (c->groups[i] == g)
			return 0;
	gid_t *p = realloc(c->groups, (c->ngroups + 1) * sizeof(*p));
	if (!p)
		return -1;
	c->groups = p;
	c->groups[c->ngroups++] = g;
	return 0;
}

int child_creds_resolve(const struct config *cfg, struct child_creds *out, char *err, size_t errlen)
{
	const struct cfg_supervisor *sup = &cfg->supervisor;
	struct passwd pw, *pres = NULL;
	char *buf = NULL, key[PATH_MAX + 64];
	int rc = -1;
	memset(out, 0, sizeof(*out));
	if (!sup->user && !sup->group && !sup->groups)
		return 0;
	out->set = true;
	out->uid = getuid();
	out->gid = getgid();

	if (sup->user) {
		size_t bufsize = lookup_bufsize(_SC_GETPW_R_SIZE_MAX);
		unsigned long id;
		buf = malloc(bufsize);
		if (!buf) {
			snprintf(err, errlen, "supervisor: out of memory");
			goto out;
		}
		int e = getpwnam_r(sup->user, &pw, buf, bufsize, &pres);
		if ((e != 0 || !pres) && parse_id(sup->user, &id))
			e = getpwuid_r((uid_t)id, &pw, buf, bufsize, &pres);
		if (pres) {
			out->uid = pres->pw_uid;
			out->gid = pres->pw_gid;
			out->user = strdup(pres->pw_name);
			out->home = strdup(pres->pw_dir);
			if (!out->user || !out->home) {
				snprintf(err, errlen, "supervisor: out of memory");
				goto out;
			}
		} else if (parse_id(sup->user, &id)) {
			/*
			 * A bare uid without a passwd entry is fine (containers often have
			 * none): as under `docker run --user 1000`, the group stays ours
			 * unless `group` says otherwise, and HOME is "/", not our own.
			 */
			out->uid = (uid_t)id;
			out->home = strdup("/");
			if (!out->home) {
				snprintf(err, errlen, "supervisor: out of memory");
				goto out;
			}
		} else {
			key_at(cfg, sup->user_at, "supervisor.user", key, sizeof(key));
			snprintf(err, errlen, "%s: unknown user \"%s\"%s%s", key, sup->user,
				 e ? ": " : "", e ? strerror(e) : "");
			goto out;
		}
	}
	if (sup->group) {
		key_at(cfg, sup->group_at, "supervisor.group", key, sizeof(key));
		if (resolve_group(sup->group, key, &out->gid, err, errlen) < 0)
			goto out;
	}

	if (sup->groups) {
		for (size_t i = 0; sup->groups[i]; i++) {
			char gk[32];
			gid_t gid;
			snprintf(gk, sizeof(gk), "supervisor.groups[%zu]", i);
			key_at(cfg, sup->groups_at ? sup->groups_at[i] : (struct cfg_where){ 0, 0 }, gk, key,
			       sizeof(key));
			if (resolve_group(sup->groups[i], key, &gid, err, errlen) < 0)
				goto out;
			if (add_group(out, gid) < 0) {
				snprintf(err, errlen, "supervisor: out of memory");
				goto out;
			}
		}
	} else if (out->user) {
		/* Like initgroups(3): the user's groups from the group database. */
		int n = 64;
		for (;;) {
			gid_t *list = calloc((size_t)n, sizeof(*list));
			int got = n;
			if (!list) {
				snprintf(err, errlen, "supervisor: out of memory");
				goto out;
			}
			if (getgrouplist(out->user, out->gid, list, &got) >= 0) {
				for (int i = 0; i < got; i++)
					if (add_group(out, list[i]) < 0) {
						free(list);
						snprintf(err, errlen, "supervisor: out of memory");
						goto out;
					}
				free(list);
				break;
			}
			free(list);
			if (got <= n || got > 65536) {
				snprintf(err, errlen, "supervisor: cannot list groups of \"%s\"", out->user);
				goto out;
			}
			n = got;
		}
	}
	if (add_group(out, out->gid) < 0) {
		snprintf(err, errlen, "supervisor: out of memory");
		goto out;
	}
	rc = 0;
out:
	free(buf);
	if (rc < 0)
		child_creds_release(out);
	return rc;
}

void child_creds_release(struct child_creds *c)
{
	free(c->groups);
	free(c->user);
	free(c->home);
	memset(c, 0, sizeof(*c));
}

/* Does the identity as hold the execute (search) right on x? */
static bool may_exec(const struct child_creds *as, const struct stat *x)
{
	bool group = x->st_gid == as->gid;
	for (size_t g = 0; !group && g < as->ngroups; g++)
		group = x->st_gid == as->groups[g];
	mode_t bit = x->st_uid == as->uid ? S_IXUSR : group ? S_IXGRP : S_IXOTH;
	return x->st_mode & bit;
}

/*
 * May the identity as (NULL: litevisor's own) run the file st in dir ("" the
 * working directory)? For another user: the file's execute bit and the
 * search bit of dir and of every directory above it (QA90 D4).
 */
static bool may_run(const struct child_creds *as, const char *dir, const struct stat *st)
{
	if (!as || !as->set)
		return true; /* access() above asked as litevisor */
	if (as->uid == 0)
		return st->st_mode & (S_IXUSR | S_IXGRP | S_IXOTH);
	if (!may_exec(as, st))
		return false;
	char abs[PATH_MAX];
	if (!realpath(*dir ? dir : ".", abs))
		return false;
	for (size_t len = strlen(abs);;) {
		struct stat ds;
		if (stat(abs, &ds) < 0 || !may_exec(as, &ds))
			return false;
		char *slash = strrchr(abs, '/');
		if (!slash || len <= 1)
			return true;
		len = slash == abs ? 1 : (size_t)(slash - abs);
		abs[len] = '\0';
	}
}

char *child_find_program(const char *cmd, const struct child_creds *as)
{
	if (strchr(cmd, '/') || !*cmd)
		return strdup(cmd);
	const char *path = getenv("PATH");
	if (!path || !*path)
		path = "/usr/local/bin:/usr/bin:/bin";
	char *existing = NULL;
	char cand[PATH_MAX], dir[PATH_MAX];
	/* each element, the empty one after a final ':' too (QA89 D4) */
	for (const char *p = path, *colon;; p = colon + 1) {
		colon = strchr(p, ':');
		size_t dlen = colon ? (size_t)(colon - p) : strlen(p);
		int n = -1;
		if (dlen < sizeof(dir)) {
			memcpy(dir, p, dlen);
			dir[dlen] = '\0';
			/* An empty PATH element means the current directory. */
			n = dlen ? snprintf(cand, sizeof(cand), "%s/%s", dir, cmd)
				 : snprintf(cand, sizeof(cand), "%s", cmd);
		}
		struct stat st;
		if (n >= 0 && (size_t)n < sizeof(cand) && stat(cand, &st) == 0 && S_ISREG(st.st_mode)) {
			/* as the service's user, not as litevisor (QA89 D5) */
			if (access(cand, X_OK) == 0 && may_run(as, dir, &st)) {
				free(existing);
				return strdup(cand);
			}
			if (!existing && !(existing = strdup(cand)))
				return NULL;
		}
		if (!colon)
			break;
	}
	/* not cmd: execve would take a bare name relative to the working directory */
	return existing ? existing : strdup("");
}

/* execve reads this much of a file to find its #! line (Linux BINPRM_BUF_SIZE). */
#define SHEBANG_MAX 256
/* The kernel follows at most this many interpreters (#! of a #! script…). */
#define INTERP_DEPTH 4

/* Append c to out (NUL-terminated, *n its length; silently truncated at len). */
static void put_char(char *out, size_t len, size_t *n, char c)
{
	if (*n + 1 < len) {
		out[(*n)++] = c;
		out[*n] = '\0';
	}
}

static void put_text(char *out, size_t len, size_t *n, const char *s)
{
	while (*s)
		put_char(out, len, n, *s++);
}

/* Append s double-quoted, control characters escaped (a #! line may end in \r). */
static void put_quoted(char *out, size_t len, size_t *n, const char *s)
{
	static const char hex[] = "0123456789abcdef";
	put_char(out, len, n, '"');
	for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
		if (*p == '\r' || *p == '\t' || *p == '"' || *p == '\\') {
			put_char(out, len, n, '\\');
			put_char(out, len, n, *p == '\r' ? 'r' : *p == '\t' ? 't' : (char)*p);
		} else if (*p < 0x20 || *p == 0x7f) {
			put_text(out, len, n, "\\x");
			put_char(out, len, n, hex[*p >> 4]);
			put_char(out, len, n, hex[*p & 15]);
		} else {
			put_char(out, len, n, (char)*p);
		}
	}
	put_char(out, len, n, '"');
}

/*
 * The interpreter execve needs to start file: the program of its "#!" line
 * (parsed as the kernel does: blanks skipped, ends at a blank or newline), or
 * an ELF file's PT_INTERP (its dynamic loader). Returns 1 with interp set and
 * *is_elf telling which, 0 when file needs none (or cannot be read).
 */
static int interpreter_of(const char *file, char *interp, size_t len, bool *is_elf)
{
	unsigned char head[SHEBANG_MAX];
	int fd = open(file, O_RDONLY | O_CLOEXEC);
	int rc = 0;
	if (fd < 0)
		return 0;
	ssize_t n = pread(fd, head, sizeof(head), 0);
	if (n >= 2 && head[0] == '#' && head[1] == '!') {
		size_t i = 2, j;
		while (i < (size_t)n && (head[i] == ' ' || head[i] == '\t'))
			i++;
		for (j = i; j < (size_t)n && head[j] != ' ' && head[j] != '\t' && head[j] != '\n' &&
			    head[j] != '\0'; j++)
			;
		if (j > i && j - i < len) {
			memcpy(interp, head + i, j - i);
			interp[j - i] = '\0';
			*is_elf = false;
			rc = 1;
		}
	} else if (n >= (ssize_t)sizeof(Elf64_Ehdr) && memcmp(head, ELFMAG, SELFMAG) == 0 &&
		   head[EI_DATA] == (htole16(1) == 1 ? ELFDATA2LSB : ELFDATA2MSB)) {
		/* A foreign byte order fails with ENOEXEC, not ENOENT: only the native one. */
		bool is64 = head[EI_CLASS] == ELFCLASS64;
		uint64_t phoff;
		unsigned phnum, phent;
		if (is64) {
			Elf64_Ehdr eh;
			memcpy(&eh, head, sizeof(eh));
			phoff = eh.e_phoff, phnum = eh.e_phnum, phent = eh.e_phentsize;
		} else {
			Elf32_Ehdr eh;
			memcpy(&eh, head, sizeof(eh));
			phoff = eh.e_phoff, phnum = eh.e_phnum, phent = eh.e_phentsize;
		}
		for (unsigned k = 0; k < phnum && k < 256 && !rc; k++) {
			uint64_t off, size;
			uint32_t type;
			off_t at = (off_t)(phoff + (uint64_t)k * phent);
			if (is64) {
				Elf64_Phdr ph;
				if (phent < sizeof(ph) || pread(fd, &ph, sizeof(ph), at) != (ssize_t)sizeof(ph))
					break;
				type = ph.p_type, off = ph.p_offset, size = ph.p_filesz;
			} else {
				Elf32_Phdr ph;
				if (phent < sizeof(ph) || pread(fd, &ph, sizeof(ph), at) != (ssize_t)sizeof(ph))
					break;
				type = ph.p_type, off = ph.p_offset, size = ph.p_filesz;
			}
			if (type != PT_INTERP || size < 2 || size > len)
				continue;
			if (pread(fd, interp, size, (off_t)off) != (ssize_t)size || interp[size - 1] != '\0')
				break;
			*is_elf = true;
			rc = 1;
		}
	}
	close(fd);
	return rc;
}

/*
 * execve(file) failed with ENOENT although file exists: the missing file is
 * an interpreter (#! line or ELF dynamic loader), perhaps one of an
 * interpreter's own. Appends ": its #! interpreter \"…\" does not exist" (or
 * the chain down to the missing one) to out; appends nothing when no
 * missing interpreter is found.
 */
static void explain_missing_interpreter(const char *file, int depth, char *out, size_t len,
					size_t *n)
{
	char interp[PATH_MAX];
	bool is_elf = false;
	struct stat st;
	if (depth > INTERP_DEPTH || !interpreter_of(file, interp, sizeof(interp), &is_elf))
		return;
	bool missing = stat(interp, &st) < 0 && errno == ENOENT;
	char sub[sizeof(((struct child_failure *)0)->message)];
	size_t sn = 0;
	sub[0] = '\0';
	if (!missing) {
		explain_missing_interpreter(interp, depth + 1, sub, sizeof(sub), &sn);
		if (!sn)
			return; /* the interpreter is there: ENOENT has some other cause */
	}
	put_text(out, len, n, is_elf ? ": its ELF interpreter (dynamic loader) " : ": its #! interpreter ");
	put_quoted(out, len, n, interp);
	if (missing) {
		put_text(out, len, n, " does not exist");
		size_t il = strlen(interp);
		if (!is_elf && il && interp[il - 1] == '\r')
			put_text(out, len, n, " (the #! line ends in a carriage return: Windows line endings?)");
	} else {
		put_text(out, len, n, " cannot start");
		put_text(out, len, n, sub);
	}
}

/* Which of descriptors 0-2 were closed at start (child_hold_closed_stdio). */
static unsigned held_stdio;

void child_hold_closed_stdio(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (fcntl(fd, F_GETFD) >= 0 || errno != EBADF)
			continue;
		int n = open("/dev/null", O_RDONLY | O_NOCTTY);
		if (n < 0) /* no /dev in a bare chroot: any descriptor that takes no writes */
			n = open("/", O_RDONLY | O_DIRECTORY);
		if (n < 0)
			continue;
		if (n != fd) { /* lowest first, so n == fd unless an open failed */
			(void)dup2(n, fd);
			close(n);
		}
		held_stdio |= 1u << fd;
	}
}

/*
 * In the child: a held stdin, stdout or stderr becomes /dev/null it can
 * write to (as catatonit opens all three; stdin read-only made `echo >&0`
 * an I/O error, QA134 O3);
 * without /dev/null, each held one is closed again, as the service would
 * have had it (the directory held in its place stops a python or node
 * service).
 */
static void open_held_stdio(void)
{
	for (int fd = 0; fd <= 2; fd++) {
		if (!(held_stdio & (1u << fd)))
			continue;
		int n = open("/dev/null", O_RDWR | O_NOCTTY);
		if (n < 0)
			close(fd);
		else if (n != fd) {
			(void)dup2(n, fd);
			close(n);
		}
	}
}

/* Descriptors below INHERIT_MAX open at start (child_note_inherited_fds). */
#define INHERIT_MAX 1024
static unsigned char inherited[INHERIT_MAX / 8];
static bool inherited_known;

void child_note_inherited_fds(void)
{
	for (int fd = 3; fd < INHERIT_MAX; fd++)
		if (fcntl(fd, F_GETFD) >= 0)
			inherited[fd / 8] |= (unsigned char)(1u << (fd % 8));
	inherited_known = true;
}

/* The soft RLIMIT_NOFILE litevisor started with, when it raised it (child_raise_fd_limit). */
static struct rlimit nofile_start;
static bool nofile_raised;

void child_raise_fd_limit(void)
{
	struct rlimit r;
	if (getrlimit(RLIMIT_NOFILE, &r) < 0 || r.rlim_cur >= r.rlim_max)
		return;
	nofile_start = r;
	r.rlim_cur = r.rlim_max;
	nofile_raised = setrlimit(RLIMIT_NOFILE, &r) == 0;
}

/* In the child: every descriptor litevisor opened itself closes on exec. */
static void cloexec_own_fds(void)
{
	if (!inherited_known)
		return;
	for (int fd = 3; fd < INHERIT_MAX; fd++)
		if (!(inherited[fd / 8] & (1u << (fd % 8))))
			(void)fcntl(fd, F_SETFD, FD_CLOEXEC); /* EBADF: not open */
#ifdef CLOSE_RANGE_CLOEXEC
	(void)close_range(INHERIT_MAX, ~0U, CLOSE_RANGE_CLOEXEC);
#endif
}

/*
 * execve refused path as no format it knows (ENOEXEC): unless it is an ELF
 * binary (another architecture: sh would only print its bytes as errors),
 * run it with /bin/sh as execvp does, the way tini, dumb-init and shells
 * start a script without a "#!" line. Returns only if that exec failed too.
 */
static void exec_as_script(const char *path, char *const *sh_argv, char *const *envp)
{
	char magic[4];
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return;
	ssize_t n = read(fd, magic, sizeof(magic));
	close(fd);
	if (n == (ssize_t)sizeof(magic) && !memcmp(magic, "\x7f" "ELF", sizeof(magic)))
		return;
	execve(sh_argv[0], sh_argv, envp);
}

/* Only async-signal-safe calls from here to execve. */
static void __attribute__((noreturn)) in_child(const struct child_spec *spec, const char *path,
					       char *const *sh_argv, int wfd, pid_t parent)
{
	struct failure_record rec = { 0, 0 };
	struct sigaction dfl;

	if (spec->new_process_group) {
		if (setpgid(0, 0) < 0) {
			rec.stage = STAGE_PGRP;
			goto fail;
		}
		/* litevisor had the terminal: hand it on (SIGTTOU is still ignored here) */
		if (spec->take_terminal >= 0)
			(void)tcsetpgrp(spec->take_terminal, getpgrp());
	}
	memset(&dfl, 0, sizeof(dfl));
	dfl.sa_handler = SIG_DFL;
	sigemptyset(&dfl.sa_mask);
	for (int sig = 1; sig < NSIG; sig++)
		if (sig != SIGKILL && sig != SIGSTOP)
			(void)sigaction(sig, &dfl, NULL); /* EINVAL for libc-reserved ones */
	/*
	 * glibc refuses those (32 .. SIGRTMIN-1), so one our own parent left
	 * ignored would reach the service ignored (a CI runner did so with 32):
	 * the kernel takes them directly.
	 */
	for (int sig = 32; sig < SIGRTMIN; sig++) {
		struct { void (*handler)(int); unsigned long flags; void (*restorer)(void);
			 uint64_t mask; } k = { SIG_DFL, 0, NULL, 0 };
		(void)syscall(SYS_rt_sigaction, sig, &k, NULL, sizeof(k.mask));
	}

	if (spec->creds && spec->creds->set) {
		const struct child_creds *c = spec->creds;
		if (setgroups(c->ngroups, c->groups) < 0 && !(errno == EPERM && getuid() == c->uid)) {
			rec.stage = STAGE_GROUPS;
			goto fail;
		}
		if (setgid(c->gid) < 0) {
			rec.stage = STAGE_GID;
			goto fail;
		}
		if (setuid(c->uid) < 0) {
			rec.stage = STAGE_UID;
			goto fail;
		}
	}
	cloexec_own_fds();
	if (nofile_raised)
		(void)setrlimit(RLIMIT_NOFILE, &nofile_start); /* lowering a soft limit cannot fail */
	open_held_stdio();
	/*
	 * litevisor killed (SIGKILL, a crash) when it is not PID 1 must not leave
	 * the service writing with nothing replicating it, nor let the next run
	 * start a second one on the same database (QA97 O3): it gets a TERM.
	 * After setuid, which clears it; a parent already gone is one to follow.
	 */
	if (prctl(PR_SET_PDEATHSIG, SIGTERM) < 0 || (getppid() != parent && (errno = ESRCH))) {
		rec.stage = STAGE_PARENT;
		goto fail;
	}
	if (sigprocmask(SIG_SETMASK, spec->mask, NULL) < 0) {
		rec.stage = STAGE_MASK;
		goto fail;
	}
	execve(path, spec->argv, spec->envp);
	if (errno == ENOEXEC) {
		exec_as_script(path, sh_argv, spec->envp);
		errno = ENOEXEC; /* the script's failure, not the shell's */
	}
	rec.stage = STAGE_EXEC;
fail:
	rec.err = errno;
	ssize_t w;
	do
		w = write(wfd, &rec, sizeof(rec));
	while (w < 0 && errno == EINTR);
	_exit(rec.stage == STAGE_EXEC && rec.err == ENOENT ? 127 : 126);
}

pid_t child_spawn(const struct child_spec *spec, struct child_failure *fail)
{
	int pfd[2] = { -1, -1 };
	pid_t pid = -1;
	char *path = NULL;
	char **sh_argv = NULL;
	size_t argc = 0;
	memset(fail, 0, sizeof(*fail));

	path = child_find_program(spec->argv[0], spec->creds);
	while (spec->argv[argc])
		argc++;
	sh_argv = calloc(argc + 2, sizeof(*sh_argv));
	if (!path || !sh_argv) {
		log_error("child", "out of memory", NULL);
		goto out;
	}
	sh_argv[0] = (char *)"/bin/sh";
	sh_argv[1] = path;
	for (size_t i = 1; i < argc; i++)
		sh_argv[i + 1] = spec->argv[i];
	if (pipe2(pfd, O_CLOEXEC) < 0) {
		log_error("child", "pipe failed", "error=\"%s\"", strerror(errno));
		goto out;
	}
	pid_t self = getpid();
	pid = fork();
	if (pid < 0) {
		log_error("child", "fork failed", "error=\"%s\"", strerror(errno));
		goto out;
	}
	if (pid == 0)
		in_child(spec, path, sh_argv, pfd[1], self);

	close(pfd[1]);
	pfd[1] = -1;
	struct failure_record rec;
	ssize_t n;
	do
		n = read(pfd[0], &rec, sizeof(rec));
	while (n < 0 && errno == EINTR);
	if (n == (ssize_t)sizeof(rec)) {
		fail->failed = true;
		fail->err = rec.err;
		bool enoent = rec.stage == STAGE_EXEC && rec.err == ENOENT;
		size_t mn = 0, len = sizeof(fail->message);
		struct stat st;
		fail->exit_code = enoent ? 127 : 126;
		put_text(fail->message, len, &mn, stage_text(rec.stage));
		put_text(fail->message, len, &mn, " \"");
		put_text(fail->message, len, &mn, spec->argv[0]);
		put_char(fail->message, len, &mn, '"');
		/*
		 * ENOENT for a file that exists means an interpreter is missing. The
		 * file is read here in the parent, not in the child, which may only
		 * make async-signal-safe calls.
		 */
		size_t before = mn;
		if (enoent && stat(path, &st) == 0)
			explain_missing_interpreter(path, 1, fail->message, len, &mn);
		if (mn == before) {
			put_text(fail->message, len, &mn, ": ");
			put_text(fail->message, len, &mn, strerror(rec.err));
			if (enoent && !strchr(spec->argv[0], '/'))
				put_text(fail->message, len, &mn, " (not found in $PATH)");
		}
	}
out:
	if (pfd[0] >= 0)
		close(pfd[0]);
	if (pfd[1] >= 0)
		close(pfd[1]);
	free(sh_argv);
	free(path);
	return pid;
}
