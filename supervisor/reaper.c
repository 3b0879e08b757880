/* reaper.c — reap the service and orphans (see reaper.h). */
#include "supervisor/reaper.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "supervisor/signals.h"
#include "common/banned.h"

static atomic_uint_fast64_t orphans_total;

static void note_inherited(void);

int reaper_setup(void)
{
	note_inherited();
	if (getpid() == 1)
		return 0;
	if (prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) < 0) {
		log_warn("reaper", "cannot become a child subreaper; orphans will be reaped by init",
			 "error=\"%s\"", strerror(errno));
		return -1;
	}
	log_debug("reaper", "child subreaper set", "pid=%d", (int)getpid());
	return 0;
}

void reaper_reap(pid_t service, struct reap_result *r)
{
	memset(r, 0, sizeof(*r));
	for (;;) {
		int status;
		pid_t pid = waitpid(-1, &status, WNOHANG | WUNTRACED | WCONTINUED);
		if (pid == 0)
			return;
		if (pid < 0) {
			if (errno == EINTR)
				continue;
			if (errno == ECHILD)
				r->no_children = true;
			else
				log_error("reaper", "waitpid failed", "error=\"%s\"", strerror(errno));
			return;
		}
		if (WIFSTOPPED(status) || WIFCONTINUED(status)) {
			/* not gone: the service's stops matter to the terminal (lifecycle.c); the last wins */
			if (service > 0 && pid == service) {
				r->service_continued = WIFCONTINUED(status);
				r->service_stopped = WIFSTOPPED(status) ? WSTOPSIG(status) : 0;
			}
			continue;
		}
		if (service > 0 && pid == service) {
			r->service_exited = true;
			r->service_status = status;
		} else {
			r->orphans++;
			atomic_fetch_add(&orphans_total, 1);
			log_debug("reaper", "reaped orphan", "pid=%d code=%d", (int)pid,
				  reaper_exit_code(status));
		}
	}
}

/*
 * A process as /proc/<pid>/stat shows it. pid, ppid and pgrp are in the
 * numbering of /proc's pid namespace, which is litevisor's own unless /proc
 * was mounted by another (`unshare -pf` without --mount-proc, a sandbox
 * binding the host's /proc): the tree is walked in that numbering, and
 * signals go to kpid, the same process in litevisor's numbering (0: none
 * known; never signalled). Comparing one numbering with the other found
 * none of litevisor's leftovers and signalled unrelated processes (QA134 D3).
 */
struct proc {
	pid_t pid, ppid, pgrp;
	unsigned long long start; /* clock ticks after boot: with pid, names one process */
	pid_t kpid, kpgrp;        /* pid and pgrp in litevisor's pid namespace */
};

/*
 * The NSpid: and NSpgid: values of the /proc status file at path (the pid
 * and the group in each pid namespace from /proc's down to the process's
 * own), read line by line: the Groups: line before them may outgrow any
 * fixed buffer (hundreds of supplementary groups, QA153 D2). nspgid may be
 * NULL. 0 once all are found, -1 otherwise (a kernel before 4.1 has none).
 */
static int status_ns(const char *path, char *nspid, char *nspgid, size_t len)
{
	FILE *f = fopen(path, "re");
	if (!f)
		return -1;
	char *line = NULL;
	size_t cap = 0;
	int need = nspgid ? 2 : 1;
	while (need > 0 && getline(&line, &cap, f) > 0) {
		if (!strncmp(line, "NSpid:", 6)) {
			snprintf(nspid, len, "%s", line + 6);
			need--;
		} else if (nspgid && !strncmp(line, "NSpgid:", 7)) {
			snprintf(nspgid, len, "%s", line + 7);
			need--;
		}
	}
	free(line);
	fclose(f);
	return need == 0 ? 0 : -1;
}

/*
 * The value at depth level of a status value "\t<a>\t<b>…" (status_ns's);
 * 0 when the process is not that deep (not in litevisor's namespace).
 */
static pid_t ns_value(const char *q, int level)
{
	for (int k = 0;; k++) {
		char *end;
		long v = strtol(q, &end, 10);
		if (end == q)
			return 0;
		if (k == level)
			return (pid_t)v;
		q = end;
	}
}

/*
 * Where litevisor stands in /proc: *self its pid in /proc's numbering,
 * *level the depth of its own namespace below /proc's (0: /proc is its
 * own). -1 when /proc/self cannot be read.
 */
static int proc_self(pid_t *self, int *level)
{
	char link[32], nspid[256];
	ssize_t n = readlink("/proc/self", link, sizeof(link) - 1);
	if (n <= 0)
		return -1;
	link[n] = '\0';
	*self = (pid_t)strtol(link, NULL, 10);
	*level = 0;
	if (*self == getpid())
		return 0;
	if (status_ns("/proc/self/status", nspid, NULL, sizeof(nspid)) < 0)
		return -1; /* a kernel before 4.1: no way to name our processes */
	for (const char *q = nspid; *q && *q != '\n'; q++)
		if (*q == '\t' && q[1] && q[1] != '\n')
			(*level)++;
	(*level)--;
	return *level >= 0 && ns_value(nspid, *level) == getpid() ? 0 : -1;
}

/* Read /proc/<name>/stat into p (level: proc_self's). 0, or -1 (gone, or not a process). */
static int proc_read(const char *name, int level, struct proc *p)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%s/stat", name);
	if (fs_read_text(path, buf, sizeof(buf)) < 0)
		return -1;
	/* "pid (comm) state ppid pgrp … starttime(22nd)": comm may hold spaces and ')' */
	char *q = strrchr(buf, ')');
	if (!q || q[1] != ' ' || !q[2] || q[3] != ' ')
		return -1;
	int ppid, pgrp;
	/* fields 6-21 skipped as words: some are 64-bit counters */
	if (sscanf(q + 4, "%d %d %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %*s %llu",
		   &ppid, &pgrp, &p->start) != 3)
		return -1;
	p->pid = (pid_t)strtol(name, NULL, 10);
	p->ppid = ppid;
	p->pgrp = pgrp;
	p->kpid = p->pid;
	p->kpgrp = p->pgrp;
	if (level > 0) {
		snprintf(path, sizeof(path), "/proc/%s/status", name);
		char nspgid[256];
		bool ok = status_ns(path, buf, nspgid, sizeof(nspgid)) == 0;
		p->kpid = ok ? ns_value(buf, level) : 0;
		p->kpgrp = ok ? ns_value(nspgid, level) : 0;
	}
	return 0;
}

/*
 * Every process in /proc: *out (malloc'd), its count, and *self, litevisor
 * in /proc's numbering; -1 if /proc cannot be listed or litevisor not found
 * in it (said once).
 */
static ssize_t proc_list(struct proc **out, pid_t *self)
{
	static atomic_bool said;
	size_t n = 0, cap = 0;
	struct proc *v = NULL;
	int level;
	*out = NULL;
	DIR *d = opendir("/proc");
	if (!d) {
		log_warn("reaper", "cannot list /proc", "error=\"%s\"", strerror(errno));
		return -1;
	}
	if (proc_self(self, &level) < 0) {
		if (!atomic_exchange(&said, true))
			log_warn("reaper", "/proc belongs to another pid namespace and does not say "
				 "which of its processes are litevisor's: leftover processes of the "
				 "service are not signalled (mount a /proc of this namespace)", NULL);
		closedir(d);
		return -1;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		if (n == cap) {
			size_t nc = cap ? cap * 2 : 256;
			struct proc *nv = realloc(v, nc * sizeof(*v));
			if (!nv)
				break; /* signal what was found so far */
			v = nv;
			cap = nc;
		}
		if (proc_read(de->d_name, level, &v[n]) == 0)
			n++;
	}
	closedir(d);
	*out = v;
	return (ssize_t)n;
}

pid_t reaper_proc_pid(pid_t pid)
{
	pid_t self;
	int level;
	if (proc_self(&self, &level) < 0)
		return 0;
	if (level == 0)
		return pid;
	struct proc *v;
	ssize_t n = proc_list(&v, &self);
	pid_t found = 0;
	for (ssize_t i = 0; i < n && !found; i++)
		if (v[i].kpid == pid)
			found = v[i].pid;
	free(v);
	return found;
}

/*
 * Children litevisor had before it started any (`helper & exec litevisor run`
 * in an entrypoint): a restart's sweep spares them and theirs (QA89 D3).
 */
static struct proc *inherited;
static size_t ninherited;

static void note_inherited(void)
{
	if (inherited)
		return;
	struct proc *v;
	pid_t self;
	ssize_t n = proc_list(&v, &self);
	for (ssize_t i = 0; i < n; i++)
		if (v[i].ppid == self)
			v[ninherited++] = v[i];
	inherited = v;
}

static bool was_inherited(const struct proc *p)
{
	for (size_t i = 0; i < ninherited; i++)
		if (inherited[i].pid == p->pid && inherited[i].start == p->start)
			return true;
	return false;
}

/* Direct children already sent TERM by reaper_term_new (only ever grows: one stop sequence). */
static struct proc *termed;
static size_t ntermed, captermed;

static bool was_termed(const struct proc *p)
{
	for (size_t i = 0; i < ntermed; i++)
		if (termed[i].pid == p->pid && termed[i].start == p->start)
			return true;
	return false;
}

static unsigned term_new(pid_t skip_pid, pid_t skip_pgrp, bool spare_inherited)
{
	struct proc *v;
	pid_t self;
	ssize_t n = proc_list(&v, &self);
	unsigned count = 0;
	for (ssize_t i = 0; i < n; i++) {
		const struct proc *p = &v[i];
		if (p->ppid != self || p->kpid <= 0 || p->kpid == skip_pid ||
		    (skip_pgrp > 0 && p->kpgrp == skip_pgrp) || was_termed(p) ||
		    (spare_inherited && was_inherited(p)))
			continue;
		if (ntermed == captermed) {
			size_t nc = captermed ? captermed * 2 : 16;
			struct proc *nt = realloc(termed, nc * sizeof(*nt));
			if (!nt)
				continue; /* not remembered: no TERM, the KILL at the deadline still comes */
			termed = nt;
			captermed = nc;
		}
		termed[ntermed++] = *p;
		if (kill(p->kpid, SIGTERM) == 0) {
			(void)kill(p->kpid, SIGCONT); /* a stopped one acts on its TERM only once continued */
			count++;
			log_debug("reaper", "signalled child", "pid=%d signal=TERM", (int)p->kpid);
		}
	}
	free(v);
	return count;
}

unsigned reaper_term_new(pid_t skip_pid, pid_t skip_pgrp)
{
	return term_new(skip_pid, skip_pgrp, false);
}

unsigned reaper_term_leftovers(void)
{
	return term_new(0, 0, true);
}

static unsigned kill_tree(bool spare_inherited)
{
	struct proc *v;
	pid_t self;
	ssize_t n = proc_list(&v, &self);
	unsigned count = 0;
	if (n <= 0) {
		free(v);
		return 0;
	}
	/* mark the descendants: children of self, then theirs, until nothing is added */
	bool *in = calloc((size_t)n, sizeof(*in));
	if (!in) {
		free(v);
		return 0;
	}
	for (bool grew = true; grew;) {
		grew = false;
		for (ssize_t i = 0; i < n; i++) {
			if (in[i])
				continue;
			bool child = v[i].ppid == self && !(spare_inherited && was_inherited(&v[i]));
			for (ssize_t j = 0; !child && j < n; j++)
				child = in[j] && v[j].pid == v[i].ppid;
			if (child)
				in[i] = grew = true;
		}
	}
	for (ssize_t i = 0; i < n; i++) {
		if (in[i] && v[i].kpid > 0 && kill(v[i].kpid, SIGKILL) == 0) {
			count++;
			log_debug("reaper", "killed descendant", "pid=%d", (int)v[i].kpid);
		}
	}
	free(in);
	free(v);
	return count;
}

unsigned reaper_kill_tree(void)
{
	return kill_tree(false);
}

unsigned reaper_kill_leftovers(void)
{
	return kill_tree(true);
}

uint64_t reaper_orphans_total(void)
{
	return atomic_load(&orphans_total);
}

int reaper_exit_code(int status)
{
	if (WIFEXITED(status))
		return WEXITSTATUS(status);
	if (WIFSIGNALED(status))
		return 128 + WTERMSIG(status);
	return 255;
}
