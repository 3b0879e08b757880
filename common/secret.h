/*
 * secret.h — read a credential given in the config inline or as a file.
 *
 * A file (e.g. a Nomad template under secrets/, or a Docker/Kubernetes
 * secret) is read when first needed and read again whenever it changes
 * (device, inode, size, mtime or ctime differ), so a rotated credential is
 * picked up without a restart; between changes the cached value is used, so
 * calling secret_get() for every request costs one stat(2). A trailing
 * newline ("\n" or "\r\n") is stripped. Files are capped at SECRET_MAX bytes
 * and must be regular files: a FIFO or a device is refused, never waited on.
 *
 * Thread-safe: one mutex guards the cache. Error messages name the file,
 * never its content.
 */
#ifndef LITEVISOR_SECRET_H
#define LITEVISOR_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

#define SECRET_MAX 16384

/* True if the secret is configured (inline or as a file). */
bool secret_is_set(const struct cfg_secret *s);

/*
 * Copy the current value into out (NUL-terminated). An unset secret gives "".
 * Returns 0, or -1 with err set (file unreadable, empty, too large, of more
 * than one line, or the value does not fit in outlen); out is then "".
 */
int secret_get(const struct cfg_secret *s, char *out, size_t outlen, char *err, size_t errlen);

/* Forget every cached file value (wiping it from memory). */
void secret_cache_clear(void);

#endif
