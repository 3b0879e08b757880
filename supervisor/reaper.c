/* reaper.c — reap the service and orphans (see reaper.h). */
#include "supervisor/reaper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "common/log.h"
#include "supervisor/signals.h"
#include "common/banned.h"

static atomic_uint_fast64_t orphans_total;

int reaper_setup(void)
{
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
		pid_t pid = waitpid(-1, &status, WNOHANG);
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

/* Parent pid from /proc/<pid>/stat, or -1. */
static pid_t parent_of(const char *pid)
{
	char path[64], buf[512];
	snprintf(path, sizeof(path), "/proc/%s/stat", pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	if (n <= 0)
		return -1;
	buf[n] = '\0';
	/* "pid (comm) state ppid …": comm may hold spaces and ')', so use the last ')'. */
	char *p = strrchr(buf, ')');
	if (!p || p[1] != ' ' || !p[2] || p[3] != ' ')
		return -1;
	return (pid_t)strtol(p + 4, NULL, 10);
}

unsigned reaper_signal_children(int sig, pid_t pgrp)
{
	unsigned n = 0;
	pid_t self = getpid();
	if (pgrp > 0 && pgrp != getpgrp() && kill(-pgrp, sig) == 0)
		n++;
	DIR *d = opendir("/proc");
	if (!d) {
		log_warn("reaper", "cannot list /proc", "error=\"%s\"", strerror(errno));
		return n;
	}
	struct dirent *de;
	while ((de = readdir(d))) {
		if (de->d_name[0] < '1' || de->d_name[0] > '9')
			continue;
		if (parent_of(de->d_name) != self)
			continue;
		pid_t pid = (pid_t)strtol(de->d_name, NULL, 10);
		if (kill(pid, sig) == 0) {
			n++;
			log_debug("reaper", "signalled child", "pid=%d signal=%s", (int)pid,
				  sig_name(sig));
		}
	}
	closedir(d);
	return n;
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
