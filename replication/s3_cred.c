/* s3_cred.c — where an S3 replica's credentials come from, in Litestream's order. */
#include "replication/s3.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
	} else if (from_env("LITESTREAM_ACCESS_KEY_ID", out->akid, sizeof(out->akid)) &&
		   from_env("LITESTREAM_SECRET_ACCESS_KEY", out->secret, sizeof(out->secret))) {
		from_env("AWS_SESSION_TOKEN", out->token, sizeof(out->token));
	} else if (from_env("AWS_ACCESS_KEY_ID", out->akid, sizeof(out->akid)) &&
		   from_env("AWS_SECRET_ACCESS_KEY", out->secret, sizeof(out->secret))) {
		from_env("AWS_SESSION_TOKEN", out->token, sizeof(out->token));
	} else {
		memset(out, 0, sizeof(*out));
	}
	if (!out->akid[0] || !out->secret[0]) {
		rc = ST_AUTH;
		st_error_set(err, rc, 0,
			     "no S3 credentials for bucket %s: set access-key-id and secret-access-key, "
			     "or LITESTREAM_ACCESS_KEY_ID/LITESTREAM_SECRET_ACCESS_KEY, "
			     "or AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY", s3->bucket);
		goto fail;
	}
	return 0;
fail:
	s3_creds_wipe(out);
	return rc;
}
