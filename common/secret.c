/* secret.c — credentials from the config: inline, or a file re-read when it changes. */
#include "common/secret.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/banned.h"

struct entry {
	char *path;
	dev_t dev;
	ino_t ino;
	off_t size;
	struct timespec mtime, ctime;
	char *value;
	size_t len;
	struct entry *next;
};

static pthread_mutex_t cache_lock = PTHREAD_MUTEX_INITIALIZER;
static struct entry *cache;

bool secret_is_set(const struct cfg_secret *s)
{
	return s && (s->value || s->file);
}

static bool same_ts(const struct timespec *a, const struct timespec *b)
{
	return a->tv_sec == b->tv_sec && a->tv_nsec == b->tv_nsec;
}

static bool unchanged(const struct entry *e, const struct stat *st)
{
	return e->dev == st->st_dev && e->ino == st->st_ino && e->size == st->st_size &&
	       same_ts(&e->mtime, &st->st_mtim) && same_ts(&e->ctime, &st->st_ctim);
}

static void wipe_free(char *p, size_t len)
{
	if (p) {
		explicit_bzero(p, len);
		free(p);
	}
}

/* Read path into a fresh malloc'd value; fills *st from the open file. */
static int read_file(const char *path, char **out, size_t *outlen, struct stat *st, char *err,
		     size_t errlen)
{
	char why[160];
	/* never a FIFO or a device: open or read could wait for good on a replica's thread */
	int fd = fs_open_regular(path, why, sizeof(why));
	char *buf = NULL;
	size_t len = 0;
	int rc = -1;

	if (fd < 0) {
		snprintf(err, errlen, "secret file \"%s\": cannot read: %s", path, why);
		goto out;
	}
	if (fstat(fd, st) < 0) {
		snprintf(err, errlen, "secret file \"%s\": cannot read: %s", path, strerror(errno));
		goto out;
	}
	if (!(buf = malloc(SECRET_MAX + 1))) {
		snprintf(err, errlen, "secret file \"%s\": out of memory", path);
		goto out;
	}
	for (;;) {
		ssize_t n = read(fd, buf + len, SECRET_MAX + 1 - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "secret file \"%s\": cannot read: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		len += (size_t)n;
		if (len > SECRET_MAX) {
			snprintf(err, errlen, "secret file \"%s\" is larger than %d bytes", path, SECRET_MAX);
			goto out;
		}
	}
	if (len > 0 && buf[len - 1] == '\n')
		len--;
	if (len > 0 && buf[len - 1] == '\r')
		len--;
	buf[len] = '\0';
	if (len == 0) {
		snprintf(err, errlen, "secret file \"%s\" is empty", path);
		goto out;
	}
	if (memchr(buf, '\0', len)) {
		snprintf(err, errlen, "secret file \"%s\" contains a NUL byte", path);
		goto out;
	}
	/* one line: a line break would end the header it is sent in, or change a signature */
	if (memchr(buf, '\n', len) || memchr(buf, '\r', len)) {
		snprintf(err, errlen, "secret file \"%s\" holds more than one line (a blank line "
			 "after the value?): a credential is one line", path);
		goto out;
	}
	*out = buf;
	*outlen = len;
	buf = NULL;
	rc = 0;
out:
	wipe_free(buf, SECRET_MAX + 1);
	if (fd >= 0)
		close(fd);
	return rc;
}

static int copy_out(const char *v, size_t len, char *out, size_t outlen, const char *what,
		    char *err, size_t errlen)
{
	if (len + 1 > outlen) {
		snprintf(err, errlen, "%s: value is longer than %zu bytes", what, outlen ? outlen - 1 : 0);
		return -1;
	}
	memcpy(out, v, len + 1);
	return 0;
}

int secret_get(const struct cfg_secret *s, char *out, size_t outlen, char *err, size_t errlen)
{
	struct stat st;
	struct entry *e;
	int rc = -1;

	if (outlen)
		out[0] = '\0';
	if (!s || (!s->value && !s->file))
		return 0;
	if (s->value)
		return copy_out(s->value, strlen(s->value), out, outlen, "inline credential", err, errlen);

	pthread_mutex_lock(&cache_lock);
	for (e = cache; e; e = e->next)
		if (strcmp(e->path, s->file) == 0)
			break;
	if (e && stat(s->file, &st) == 0 && unchanged(e, &st)) {
		rc = copy_out(e->value, e->len, out, outlen, s->file, err, errlen);
		goto out;
	}
	char *v = NULL;
	size_t len = 0;
	if (read_file(s->file, &v, &len, &st, err, errlen) < 0)
		goto out;
	if (!e) {
		e = calloc(1, sizeof(*e));
		if (!e || !(e->path = strdup(s->file))) {
			free(e);
			wipe_free(v, len);
			snprintf(err, errlen, "secret file \"%s\": out of memory", s->file);
			goto out;
		}
		e->next = cache;
		cache = e;
	}
	wipe_free(e->value, e->len);
	e->value = v;
	e->len = len;
	e->dev = st.st_dev;
	e->ino = st.st_ino;
	e->size = st.st_size;
	e->mtime = st.st_mtim;
	e->ctime = st.st_ctim;
	rc = copy_out(e->value, e->len, out, outlen, s->file, err, errlen);
out:
	pthread_mutex_unlock(&cache_lock);
	if (rc < 0 && outlen)
		out[0] = '\0';
	return rc;
}

void secret_cache_clear(void)
{
	pthread_mutex_lock(&cache_lock);
	while (cache) {
		struct entry *e = cache;
		cache = e->next;
		wipe_free(e->value, e->len);
		free(e->path);
		free(e);
	}
	pthread_mutex_unlock(&cache_lock);
}
