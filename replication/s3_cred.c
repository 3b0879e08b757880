/* s3_cred.c — where an S3 replica's credentials come from, in Litestream's order. */
#include "replication/s3.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/fsutil.h"
#include "common/log.h"
#include "common/secret.h"
#include "common/banned.h"

void s3_creds_wipe(struct s3_creds *c)
{
	explicit_bzero(c, sizeof(*c));
}

/* Copy an environment variable; returns true if it was set and fit. */
static bool from_env(const char *name, char *out, size_t outlen)
{
	const char *v = getenv(name);
	if (!v || !*v || strlen(v) >= outlen)
		return false;
	memcpy(out, v, strlen(v) + 1);
	return true;
}

static int secret(const struct cfg_secret *s, const char *what, char *out, size_t outlen,
		  struct st_error *err)
{
	char why[256];
	if (secret_get(s, out, outlen, why, sizeof(why)) < 0) {
		st_error_set(err, ST_AUTH, 0, "S3 %s: %s", what, why);
		return ST_AUTH;
	}
	return 0;
}

/* The value of key in an INI line "key = value" (trimmed) into out. true if it matched. */
static bool ini_value(const char *line, const char *key, char *out, size_t outlen)
{
	size_t kl = strlen(key);
	while (*line == ' ' || *line == '\t')
		line++;
	if (strncmp(line, key, kl) != 0)
		return false;
	line += kl;
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line++ != '=')
		return false;
	while (*line == ' ' || *line == '\t')
		line++;
	size_t n = strcspn(line, "\r\n");
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	if (n == 0 || n >= outlen)
		return false;
	memcpy(out, line, n);
	out[n] = '\0';
	return true;
}

/*
 * The AWS shared credentials file, as the AWS SDK behind Litestream reads it:
 * $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE or
 * "default". true when it gave a key and a secret.
 */
static bool from_shared_file(struct s3_creds *out)
{
	char path[4096], want[256], line[1024];
	const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
	const char *profile = getenv("AWS_PROFILE");
	if (f && *f)
		snprintf(path, sizeof(path), "%s", f);
	else if (home && *home)
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	else
		return false;
	snprintf(want, sizeof(want), "[%s]", profile && *profile ? profile : "default");
	char why[256];
	int fd = fs_open_regular(path, why, sizeof(why)); /* never a FIFO's endless wait */
	FILE *fp = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!fp) {
		if (fd >= 0)
			close(fd);
		else if (errno != ENOENT)
			log_warn("s3", "shared credentials file not read", "path=\"%s\" err=\"%s\"",
				 path, why);
		return false;
	}
	bool in = false;
	while (fgets(line, sizeof(line), fp)) {
		char *p = line + strspn(line, " \t");
		if (*p == '[') {
			p[strcspn(p, "\r\n")] = '\0';
			for (size_t n = strlen(p); n && (p[n - 1] == ' ' || p[n - 1] == '\t'); n--)
				p[n - 1] = '\0';
			in = strcmp(p, want) == 0;
			continue;
		}
		if (!in)
			continue;
		(void)(ini_value(p, "aws_access_key_id", out->akid, sizeof(out->akid)) ||
		       ini_value(p, "aws_secret_access_key", out->secret, sizeof(out->secret)) ||
		       ini_value(p, "aws_session_token", out->token, sizeof(out->token)));
	}
	explicit_bzero(line, sizeof(line));
	fclose(fp);
	return out->akid[0] && out->secret[0];
}

/*
 * From the config (inline or files); else the environment as Litestream sees
 * it (it copies LITESTREAM_* into AWS_* only where those are unset, so AWS_*
 * win, variable by variable; aws-sdk-go's environment provider then takes
 * the older AWS_ACCESS_KEY / AWS_SECRET_KEY where those are still unset);
 * else the AWS shared credentials file.
 */
int s3_credentials(const struct s3 *s3, struct s3_creds *out, struct st_error *err)
{
	int rc;
	memset(out, 0, sizeof(*out));
	if (secret_is_set(&s3->akid) || secret_is_set(&s3->secret)) {
		if ((rc = secret(&s3->akid, "access-key-id", out->akid, sizeof(out->akid), err)) ||
		    (rc = secret(&s3->secret, "secret-access-key", out->secret, sizeof(out->secret), err)))
			goto fail;
		if (secret_is_set(&s3->token) &&
		    (rc = secret(&s3->token, "session-token", out->token, sizeof(out->token), err)))
			goto fail;
	} else if ((from_env("AWS_ACCESS_KEY_ID", out->akid, sizeof(out->akid)) ||
		    from_env("LITESTREAM_ACCESS_KEY_ID", out->akid, sizeof(out->akid)) ||
		    from_env("AWS_ACCESS_KEY", out->akid, sizeof(out->akid))) &&
		   (from_env("AWS_SECRET_ACCESS_KEY", out->secret, sizeof(out->secret)) ||
		    from_env("LITESTREAM_SECRET_ACCESS_KEY", out->secret, sizeof(out->secret)) ||
		    from_env("AWS_SECRET_KEY", out->secret, sizeof(out->secret)))) {
		from_env("AWS_SESSION_TOKEN", out->token, sizeof(out->token));
	} else {
		memset(out, 0, sizeof(*out));
		if (!from_shared_file(out))
			memset(out, 0, sizeof(*out));
	}
	if (!out->akid[0] || !out->secret[0]) {
		rc = ST_AUTH;
		st_error_set(err, rc, 0,
			     "no S3 credentials for bucket %s: set access-key-id and secret-access-key, "
			     "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY (or LITESTREAM_ACCESS_KEY_ID/"
			     "LITESTREAM_SECRET_ACCESS_KEY), or a profile in ~/.aws/credentials",
			     s3->bucket);
		goto fail;
	}
	return 0;
fail:
	s3_creds_wipe(out);
	return rc;
}
