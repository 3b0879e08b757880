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

/* An environment variable into out: 1 if set, 0 if unset or empty, -1 (err set) if its
 * value does not fit, which is never cut short: a cut key or token only fails to sign. */
static int from_env(const char *name, char *out, size_t outlen, struct st_error *err)
{
	const char *v = getenv(name);
	if (!v || !*v)
		return 0;
	size_t n = strlen(v);
	if (n >= outlen) {
		st_error_set(err, ST_AUTH, 0, "S3 credentials: $%s is %zu bytes long, more than the %zu "
			     "litevisor takes", name, n, outlen - 1);
		return -1;
	}
	memcpy(out, v, n + 1);
	return 1;
}

/*
 * One credential from the environment, as Litestream and aws-sdk-go read it:
 * Litestream copies LITESTREAM_<x> into AWS_<x> only where that is unset (set
 * but empty stays empty), then the SDK takes AWS_<x>, or the older name where
 * that is empty. As from_env().
 */
static int env_credential(const char *aws, const char *litestream, const char *older, char *out,
			  size_t outlen, struct st_error *err)
{
	int r = from_env(getenv(aws) ? aws : litestream, out, outlen, err);
	return r ? r : from_env(older, out, outlen, err);
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

/* The value of key in an INI line "key = value" (trimmed) into out: 1 if the line sets
 * key, 0 if not, -1 (err set) if the value does not fit. */
static int ini_value(const char *line, const char *key, char *out, size_t outlen, const char *path,
		     struct st_error *err)
{
	size_t kl = strlen(key);
	while (*line == ' ' || *line == '\t')
		line++;
	if (strncmp(line, key, kl) != 0)
		return 0;
	line += kl;
	while (*line == ' ' || *line == '\t')
		line++;
	if (*line != '=' && *line != ':') /* aws-sdk-go takes ':' as '=' */
		return 0;
	line++;
	while (*line == ' ' || *line == '\t')
		line++;
	size_t n = strcspn(line, "\r\n");
	if (*line == '"') {
		/* a quoted value, as aws-sdk-go reads one: up to the closing quote, \" and \\
		 * escaped */
		size_t o = 0, i = 1;
		for (; i < n && line[i] != '"'; i++) {
			if (line[i] == '\\' && i + 1 < n)
				i++;
			if (o + 1 >= outlen) {
				st_error_set(err, ST_AUTH, 0, "S3 credentials: %s in %s is longer "
					     "than the %zu bytes litevisor takes", key, path, outlen - 1);
				return -1;
			}
			out[o++] = line[i];
		}
		if (i < n) {
			out[o] = '\0';
			return o > 0;
		}
		/* no closing quote: the text as it stands */
	}
	/* a comment after the value: '#' or ';' after a space */
	for (size_t i = 1; i < n; i++)
		if ((line[i] == '#' || line[i] == ';') && (line[i - 1] == ' ' || line[i - 1] == '\t')) {
			n = i;
			break;
		}
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t'))
		n--;
	if (n == 0)
		return 0;
	if (n >= outlen) {
		st_error_set(err, ST_AUTH, 0, "S3 credentials: %s in %s is %zu bytes long, more than "
			     "the %zu litevisor takes", key, path, n, outlen - 1);
		return -1;
	}
	memcpy(out, line, n);
	out[n] = '\0';
	return 1;
}

/*
 * The AWS shared credentials file, as the AWS SDK behind Litestream reads it:
 * $AWS_SHARED_CREDENTIALS_FILE or ~/.aws/credentials, profile $AWS_PROFILE or
 * "default". 1 when it gave a key and a secret, 0 when not, -1 (err set) when a
 * value of the profile does not fit (lines of any length are read whole).
 */
static int from_shared_file(struct s3_creds *out, struct st_error *err)
{
	char path[4096], want[256];
	const char *f = getenv("AWS_SHARED_CREDENTIALS_FILE"), *home = getenv("HOME");
	const char *profile = getenv("AWS_PROFILE");
	if (f && *f)
		snprintf(path, sizeof(path), "%s", f);
	else if (home && *home)
		snprintf(path, sizeof(path), "%s/.aws/credentials", home);
	else
		return 0;
	snprintf(want, sizeof(want), "%s", profile && *profile ? profile : "default");
	char why[256];
	int fd = fs_open_regular(path, why, sizeof(why)); /* never a FIFO's endless wait */
	FILE *fp = fd >= 0 ? fdopen(fd, "r") : NULL;
	if (!fp) {
		if (fd >= 0)
			close(fd);
		else if (errno != ENOENT)
			log_warn("s3", "shared credentials file not read", "path=\"%s\" err=\"%s\"",
				 path, why);
		return 0;
	}
	bool in = false;
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int r = 0;
	while (r >= 0 && (len = getline(&line, &cap, fp)) >= 0) {
		char *p = line + strspn(line, " \t");
		if (*p == '[') {
			/* "[ name ]", maybe with a comment after it */
			char *name = p + 1 + strspn(p + 1, " \t"), *end = strchr(name, ']');
			size_t n = end ? (size_t)(end - name) : 0;
			while (n && (name[n - 1] == ' ' || name[n - 1] == '\t'))
				n--;
			/* aws-sdk-go takes "[profile NAME]" here too; the last section of a name
			 * counts, whole */
			if (n > 8 && !strncmp(name, "profile", 7) && (name[7] == ' ' || name[7] == '\t')) {
				size_t skip = 8 + strspn(name + 8, " \t");
				name += skip;
				n -= skip;
			}
			in = end && n == strlen(want) && !strncmp(name, want, n);
			if (in)
				memset(out, 0, sizeof(*out));
		} else if (in) {
			r = ini_value(p, "aws_access_key_id", out->akid, sizeof(out->akid), path, err);
			if (!r)
				r = ini_value(p, "aws_secret_access_key", out->secret, sizeof(out->secret),
					      path, err);
			if (!r)
				r = ini_value(p, "aws_session_token", out->token, sizeof(out->token), path,
					      err);
		}
		explicit_bzero(line, (size_t)len);
	}
	free(line);
	fclose(fp);
	if (r < 0)
		return -1;
	return out->akid[0] && out->secret[0];
}

/*
 * From the config (inline or files); else the environment as Litestream sees
 * it (it copies LITESTREAM_* into AWS_* only where those are unset, so AWS_*
 * win, variable by variable, even set but empty; aws-sdk-go's environment
 * provider then takes the older AWS_ACCESS_KEY / AWS_SECRET_KEY where those
 * are empty); else the AWS shared credentials file, read as aws-sdk-go reads
 * it ("[ name ]" headers, quoted values, a '#' or ';' comment after a value).
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
	} else {
		int a = env_credential("AWS_ACCESS_KEY_ID", "LITESTREAM_ACCESS_KEY_ID", "AWS_ACCESS_KEY",
				       out->akid, sizeof(out->akid), err);
		int s = a > 0 ? env_credential("AWS_SECRET_ACCESS_KEY", "LITESTREAM_SECRET_ACCESS_KEY",
					       "AWS_SECRET_KEY", out->secret, sizeof(out->secret), err)
			      : 0;
		if (a > 0 && s > 0 && from_env("AWS_SESSION_TOKEN", out->token, sizeof(out->token), err) < 0)
			s = -1;
		if (a < 0 || s < 0) {
			rc = ST_AUTH;
			goto fail;
		}
		if (!a || !s) {
			memset(out, 0, sizeof(*out));
			int f = from_shared_file(out, err);
			if (f < 0) {
				rc = ST_AUTH;
				goto fail;
			}
			if (!f)
				memset(out, 0, sizeof(*out));
		}
	}
	if (secret_is_set(&s3->akid) != secret_is_set(&s3->secret)) {
		/* half a pair in the config: the environment's are not used then, as in Litestream */
		rc = ST_AUTH;
		st_error_set(err, rc, 0, "S3 credentials for bucket %s: %s is set in the config but "
			     "%s is not (the environment's are used only when neither is set)",
			     s3->bucket, secret_is_set(&s3->akid) ? "access-key-id" : "secret-access-key",
			     secret_is_set(&s3->akid) ? "secret-access-key" : "access-key-id");
		goto fail;
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
