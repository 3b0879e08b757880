/*
 * signals.h — the signals `run` handles, as data read from a signalfd.
 *
 * sig_block() must run first thing in the command, before any thread exists:
 * every thread created afterwards inherits the mask, so a TERM can only ever
 * be read by the main loop (never kill litevisor on a worker thread before
 * the final flush). SIGPIPE is ignored process-wide (libcurl with
 * CURLOPT_NOSIGNAL and libmicrohttpd rely on it) and SIGTTIN/SIGTTOU are
 * ignored so a background litevisor is not stopped by its terminal; the
 * child puts every disposition and the original mask back before exec
 * (child.h).
 *
 * Forwarded to the service: HUP INT QUIT TERM USR1 USR2 WINCH CONT.
 * Never forwarded: CHLD (drives reaping) and the fault signals.
 */
#ifndef LITEVISOR_SUP_SIGNALS_H
#define LITEVISOR_SUP_SIGNALS_H

#include <signal.h>
#include <stdbool.h>

/*
 * Block the handled signals in the calling thread, ignore PIPE/TTIN/TTOU and
 * remember the original mask for the child. A second call does nothing.
 * Returns 0, or -1 (logged).
 */
int sig_block(void);

/* The mask the process had before sig_block() (what the child gets back). */
const sigset_t *sig_original_mask(void);

/* A non-blocking, close-on-exec signalfd for the handled signals, or -1 (logged). */
int sig_open_fd(void);

/*
 * Read one pending signal from the signalfd. Returns its number, 0 when none
 * is pending, -1 on error (logged). sig_read_ex also says whether the kernel
 * sent it (SI_KERNEL: a terminal's INT/QUIT/WINCH to its foreground process
 * group) rather than a process (kill(2): SI_USER), when kernel is not NULL.
 */
int sig_read(int fd);
int sig_read_ex(int fd, bool *kernel);

/* True for the signals forwarded to the service. */
bool sig_is_forwarded(int sig);

/* True for the signals that also start the stop sequence (TERM, INT). */
bool sig_is_stop(int sig);

/*
 * After a first stop signal has asked something to stop: wait up to grace_ms
 * for done_fd to become readable (it stopped). A further signal read from
 * sfd for which is_stop is true (NULL: any signal) ends the wait at once;
 * others are dropped. Returns true when done_fd fired, false when the grace
 * ran out or was cut short (the caller then stops it the hard way).
 */
bool sig_wait_done(int sfd, int done_fd, int grace_ms, bool (*is_stop)(int sig));

/* "TERM", "USR1"…; "SIG?" for others. Static storage. */
const char *sig_name(int sig);

#endif
