/*
 * config_replica.c — `stores:` and each db's `replicas:`.
 *
 * A store is a named destination (an S3 bucket or a directory, with its
 * connection settings and the node it lives on). A replica either stands on
 * its own (Litestream's schema: url or type/bucket/path…) or names a store,
 * inherits everything from it and adds a path below the store's path. After
 * that both get the same finishing: defaults, top-level credentials, the
 * node rule (a replica on this very node is restore-only), checks.
 */
#include "common/config_walk.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/bech32.h"
#include "common/duration.h"
#include "common/secret.h"
#include "common/fsutil.h"
#include "common/pathnorm.h"
#include "common/utf8.h"
#include "common/banned.h"

struct store {
	char *name;
	const struct cfg_node *key;
	struct cfg_replica r;
	const struct cfg_node *at[AT_REPLICA_MAX];
};

static int set_type(struct walk *w, const struct field *f, const struct cfg_node *v,
		    const char *path, void *target)
{
	struct cfg_replica *r = target;
	char *s = NULL;
	int rc = -1;
	int o = walk_optional(w, v, path, &s);
	if (o)
		return o; /* no value: the default */
	if (strcmp(s, "file") == 0) {
		r->type = REPLICA_FILE;
	} else if (strcmp(s, "s3") == 0) {
		r->type = REPLICA_S3;
	} else if (strcmp(s, "gcs") == 0 || strcmp(s, "abs") == 0 || strcmp(s, "sftp") == 0) {
		cfg_error(w->e, v, path,
			  "type \"%s\" is not supported by litevisor (s3 and file only; most object "
			  "stores, GCS included, also speak S3)", s);
		goto out;
	} else {
		cfg_error(w->e, v, path, "invalid type \"%s\" (one of: s3, file)", s);
		goto out;
	}
	rc = 0;
out:
	free(s);
	return rc;
}

static int set_validation(struct walk *w, const struct field *f, const struct cfg_node *v,
			  const char *path, void *target)
{
	char *s = NULL, why[200];
	int64_t ms = 0;
	int o = walk_optional(w, v, path, &s);
	if (o)
		return o; /* no value: the default */
	if (duration_parse(s, &ms, why, sizeof(why)) < 0) {
		cfg_error(w->e, v, path, "%s", why);
		free(s);
		return -1;
	}
	free(s);
	if (ms != 0) {
		cfg_error(w->e, v, path,
			  "not supported by litevisor (validation restores a full copy in the "
			  "background; use `litevisor restore` to check a replica); remove it or set 0");
		return -1;
	}
	return 0;
}

/*
 * One key string of age: as age.ParseIdentities/ParseRecipients read it
 * (Litestream passes each list item to them): one key per line, blank lines
 * and "#" comments skipped, at least one key. hrp is "age-secret-key-" or
 * "age"; case as age writes it (identities uppercase, recipients lowercase).
 * Appends the keys to *keys. Returns 0 or -1 (error set, never quoting a
 * secret).
 */
static int parse_age_keys(struct walk *w, const struct cfg_node *v, const char *path, bool secret,
			  unsigned char (**keys)[32], size_t *n)
{
	const char *want = secret ? "age-secret-key-" : "age";
	char *s = NULL, *rest, *line;
	size_t found = 0, slen;
	int rc = -1, lineno = 0;
	if (walk_required_ex(w, v, path, secret, &s) < 0)
		return -1;
	bool multi = strchr(s, '\n') != NULL;
	slen = strlen(s); /* strsep cuts it into lines: wipe all of it at the end */
	for (rest = s; (line = strsep(&rest, "\n"));) {
		char hrp[20];
		unsigned char key[33];
		const char *why = NULL;
		size_t len = strlen(line);
		lineno++;
		/* blanks around a key: Litestream's YAML drops them from an expanded ${VAR} */
		while (len && (line[len - 1] == '\r' || line[len - 1] == ' ' || line[len - 1] == '\t'))
			line[--len] = '\0';
		while (*line == ' ' || *line == '\t') {
			line++;
			len--;
		}
		if (len == 0 || line[0] == '#')
			continue;
		int k = bech32_decode(line, hrp, sizeof(hrp), key, sizeof(key), &why);
		if (k >= 0 && strcmp(hrp, want) != 0) {
			k = -1;
			why = strcmp(hrp, secret ? "age" : "age-secret-key-") == 0
				      ? (secret ? "a recipient (age1…) where an identity belongs"
						: "an identity (AGE-SECRET-KEY-1…) where a recipient belongs")
				      : "not an age X25519 key";
		} else if (k >= 0 && k != 32) {
			k = -1;
			why = "not 32 bytes long";
		} else if (k >= 0 && (secret ? line[0] != 'A' : line[0] != 'a')) {
			k = -1;
			why = secret ? "an identity is written in uppercase (AGE-SECRET-KEY-1…)"
				     : "a recipient is written in lowercase (age1…)";
		}
		if (k < 0) {
			explicit_bzero(key, sizeof(key));
			if (strncmp(line, "ssh-", 4) == 0 || strncmp(line, "-----BEGIN", 10) == 0)
				why = "SSH keys are not supported by litevisor (age X25519 keys only)";
			else if (strncasecmp(line, "AGE-PLUGIN-", 11) == 0 ||
				 /* age1<plugin>1…: bech32's data part holds no '1' */
				 (strncasecmp(line, "age1", 4) == 0 && strrchr(line, '1') > line + 3))
				why = "age plugins are not supported by litevisor (age X25519 keys only)";
			char at[24] = "";
			if (multi)
				snprintf(at, sizeof(at), "line %d: ", lineno);
			/* a recipient is public, but what stands in its place may be an identity */
			bool show = !secret && (strncasecmp(line, "age1", 4) == 0 ||
						strncmp(line, "ssh-", 4) == 0);
			if (show)
				cfg_error(w->e, v, path, "%sinvalid age recipient \"%.80s\": %s", at, line, why);
			else
				cfg_error(w->e, v, path, "%sinvalid age %s: %s (value redacted)", at,
					  secret ? "identity" : "recipient", why);
			goto out;
		}
		unsigned char (*grown)[32] = realloc(*keys, (*n + 1) * sizeof(**keys));
		if (!grown) {
			cfg_error(w->e, v, path, "out of memory");
			goto out;
		}
		*keys = grown;
		memcpy((*keys)[(*n)++], key, 32);
		explicit_bzero(key, sizeof(key));
		found++;
	}
	if (!found) {
		cfg_error(w->e, v, path, "no %s found", secret ? "identity (AGE-SECRET-KEY-1…)"
							  : "recipient (age1…)");
		goto out;
	}
	rc = 0;
out:
	explicit_bzero(s, slen);
	free(s);
	return rc;
}

/* identities: / recipients: under age: (a list of key strings; a single string works too). */
static int set_age_list(struct walk *w, const struct field *f, const struct cfg_node *v,
			const char *path, void *target)
{
	struct cfg_age *a = target;
	bool secret = strcmp(f->key, "identities") == 0;
	unsigned char (**keys)[32] = secret ? &a->identities : &a->recipients;
	size_t *n = secret ? &a->nidentities : &a->nrecipients;
	char ip[360];
	if (cfg_node_is_null(v))
		return 0;
	if (v->kind == CN_SCALAR)
		return parse_age_keys(w, v, path, secret, keys, n);
	if (v->kind != CN_SEQ) {
		cfg_error(w->e, v, path, "expected a list of age %s, got %s",
			  secret ? "identities (AGE-SECRET-KEY-1…)" : "recipients (age1…)",
			  walk_kind_name(v));
		return -1;
	}
	for (size_t i = 0; i < v->nitems; i++) {
		snprintf(ip, sizeof(ip), "%s[%zu]", path, i);
		if (parse_age_keys(w, v->items[i], ip, secret, keys, n) < 0)
			return -1;
	}
	return 0;
}

enum { AGE_IDENTITIES, AGE_RECIPIENTS, AGE_N };
static const struct field age_tab[AGE_N] = {
	[AGE_IDENTITIES] = { .key = "identities", .kind = F_CUSTOM, .fn = set_age_list },
	[AGE_RECIPIENTS] = { .key = "recipients", .kind = F_CUSTOM, .fn = set_age_list },
};

/*
 * age: { identities: […], recipients: […] }, as Litestream v0.3.13. It
 * encrypts with the recipients and, at every start, decrypts the replica's
 * last WAL segment with the identities (litevisor does too, and restore
 * needs them): recipients without identities cannot work, and are refused
 * here. Identities alone serve restore; the engine refuses to write then.
 */
static int set_age(struct walk *w, const struct field *f, const struct cfg_node *v,
		   const char *path, void *target)
{
	struct cfg_replica *r = target;
	const struct cfg_node *at[AGE_N] = { 0 };
	if (cfg_node_is_null(v))
		return 0;
	if (v->kind != CN_MAP) {
		cfg_error(w->e, v, path, "expected a map with identities: and recipients:, got %s",
			  walk_kind_name(v));
		return -1;
	}
	if (walk_map(w, v, path, age_tab, AGE_N, ON_ALL, &r->age, at) < 0)
		return -1;
	if (r->age.nrecipients && !r->age.nidentities) {
		cfg_error(w->e, v, path,
			  "recipients without identities: litevisor, like Litestream, decrypts the "
			  "replica's last WAL segment at start-up and on restore; add identities:");
		return -1;
	}
	if (r->age.nrecipients > CFG_AGE_MAX_RECIPIENTS) {
		cfg_error(w->e, v, path, "%zu recipients: litevisor reads back age headers of at most "
			  "%d", r->age.nrecipients, CFG_AGE_MAX_RECIPIENTS);
		return -1;
	}
	r->age.set = r->age.nidentities > 0;
	return 0;
}

#define R(field) offsetof(struct cfg_replica, field)
static const char sftp_why[] = "SFTP replicas; litevisor writes to s3 and file replicas only";
static const char abs_why[] = "Azure Blob Storage replicas; litevisor writes to s3 and file replicas only";

const struct field replica_tab[RF_N] = {
	[RF_TYPE] = { .key = "type", .kind = F_CUSTOM, .fn = set_type },
	[RF_NAME] = { .key = "name", .kind = F_STR, .off = R(name), .where = ON_REPLICA },
	[RF_URL] = { .key = "url", .kind = F_STR, .off = R(url) },
	[RF_PATH] = { .key = "path", .kind = F_STR, .off = R(path) },
	[RF_BUCKET] = { .key = "bucket", .kind = F_STR, .off = R(bucket), .s3_only = true },
	[RF_ENDPOINT] = { .key = "endpoint", .kind = F_STR, .off = R(endpoint), .s3_only = true },
	[RF_REGION] = { .key = "region", .kind = F_STR, .off = R(region), .s3_only = true },
	[RF_FPS] = { .key = "force-path-style", .kind = F_BOOL, .off = R(force_path_style), .s3_only = true },
	[RF_SKIPV] = { .key = "skip-verify", .kind = F_BOOL, .off = R(skip_verify), .s3_only = true },
	[RF_CAFILE] = { .key = "ca-file", .kind = F_STR, .off = R(ca_file), .s3_only = true },
	[RF_AKID] = { .key = "access-key-id", .kind = F_SECRET, .off = R(access_key_id.value), .s3_only = true },
	[RF_AKID_FILE] = { .key = "access-key-id-file", .kind = F_SECRET_FILE, .off = R(access_key_id.file), .s3_only = true },
	[RF_SAK] = { .key = "secret-access-key", .kind = F_SECRET, .off = R(secret_access_key.value), .s3_only = true },
	[RF_SAK_FILE] = { .key = "secret-access-key-file", .kind = F_SECRET_FILE, .off = R(secret_access_key.file), .s3_only = true },
	[RF_TOKEN] = { .key = "session-token", .kind = F_SECRET, .off = R(session_token.value), .s3_only = true },
	[RF_TOKEN_FILE] = { .key = "session-token-file", .kind = F_SECRET_FILE, .off = R(session_token.file), .s3_only = true },
	[RF_CONNECT] = { .key = "connect-timeout", .kind = F_DUR, .off = R(connect_timeout_ms), .min = 1, .s3_only = true },
	[RF_IDLE] = { .key = "idle-timeout", .kind = F_DUR, .off = R(idle_timeout_ms), .min = 1, .s3_only = true },
	[RF_NODE] = { .key = "node", .kind = F_STR, .off = R(node) },
	[RF_SYNC] = { .key = "sync-interval", .kind = F_DUR, .off = R(sync_interval_ms), .where = ON_REPLICA },
	[RF_SNAP] = { .key = "snapshot-interval", .kind = F_DUR, .off = R(snapshot_interval_ms), .where = ON_REPLICA },
	[RF_RET] = { .key = "retention", .kind = F_DUR, .off = R(retention_ms), .where = ON_REPLICA },
	[RF_RETCHECK] = { .key = "retention-check-interval", .kind = F_DUR, .off = R(retention_check_interval_ms), .where = ON_REPLICA },
	[RF_GRACE] = { .key = "retention-grace", .kind = F_DUR, .off = R(retention_grace_ms), .where = ON_REPLICA },
	[RF_WRITERS] = { .key = "writer-check-interval", .kind = F_DUR, .off = R(writer_check_interval_ms), .where = ON_REPLICA },
	[RF_VALID] = { .key = "validation-interval", .kind = F_CUSTOM, .fn = set_validation, .where = ON_REPLICA },
	[RF_STORE] = { .key = "store", .kind = F_STR, .off = R(store), .where = ON_REPLICA },
	[RF_RESTORE_ONLY] = { .key = "restore-only", .kind = F_BOOL, .off = R(restore_only), .where = ON_REPLICA },
	[RF_AGE] = { .key = "age", .kind = F_CUSTOM, .fn = set_age, .where = ON_REPLICA },
	[RF_ACCOUNT_NAME] = { .key = "account-name", .kind = F_UNSUPPORTED, .why = abs_why },
	[RF_ACCOUNT_KEY] = { .key = "account-key", .kind = F_UNSUPPORTED, .why = abs_why },
	[RF_HOST] = { .key = "host", .kind = F_UNSUPPORTED, .why = sftp_why },
	[RF_USER] = { .key = "user", .kind = F_UNSUPPORTED, .why = sftp_why },
	[RF_PASSWORD] = { .key = "password", .kind = F_UNSUPPORTED, .why = sftp_why },
	[RF_KEYPATH] = { .key = "key-path", .kind = F_UNSUPPORTED, .why = sftp_why },
};
#undef R

/* Copy one field's value from src to dst (both struct cfg_replica). Returns 0 or -1 (memory). */
static int field_copy(const struct field *f, void *dst, const void *src)
{
	const char *s = (const char *)src + f->off;
	char *d = (char *)dst + f->off;
	switch (f->kind) {
	case F_STR:
	case F_SECRET:
	case F_SECRET_FILE: {
		char *const *from = (char *const *)(const void *)s;
		char **to = (char **)(void *)d;
		free(*to);
		*to = *from ? strdup(*from) : NULL;
		return *from && !*to ? -1 : 0;
	}
	case F_BOOL:
		*(bool *)(void *)d = *(const bool *)(const void *)s;
		break;
	case F_DUR:
	case F_INT64:
	case F_SIZE:
		*(int64_t *)(void *)d = *(const int64_t *)(const void *)s;
		break;
	default:
		break;
	}
	return 0;
}

int cfg_check_readable(struct walk *w, const struct cfg_node *v, const char *path, const char *file)
{
	char why[160];
	int fd = fs_open_regular(file, why, sizeof(why));
	if (fd < 0) {
		cfg_error(w->e, v, path, "cannot read \"%s\": %s", file, why);
		return -1;
	}
	close(fd);
	return 0;
}

#define CA_FILE_MAX (16 << 20) /* a bundle of every public CA is about 200 KiB */

int cfg_check_ca_file(struct walk *w, const struct cfg_node *v, const char *path, const char *file)
{
	char why[160];
	int fd = fs_open_regular(file, why, sizeof(why));
	if (fd < 0) {
		cfg_error(w->e, v, path, "cannot read \"%s\": %s", file, why);
		return -1;
	}
	char *buf = malloc(CA_FILE_MAX + 1);
	size_t n = 0;
	ssize_t got = 1;
	while (buf && n < CA_FILE_MAX && (got = read(fd, buf + n, CA_FILE_MAX - n)) != 0) {
		if (got < 0 && errno == EINTR)
			continue;
		if (got < 0)
			break;
		n += (size_t)got;
	}
	int err = errno;
	close(fd);
	if (!buf || got < 0) {
		cfg_error(w->e, v, path, "cannot read \"%s\": %s", file,
			  buf ? strerror(err) : "out of memory");
		free(buf);
		return -1;
	}
	buf[n] = '\0';
	bool pem = memmem(buf, n, "-----BEGIN CERTIFICATE-----", 27) ||
		   memmem(buf, n, "-----BEGIN TRUSTED CERTIFICATE-----", 35) ||
		   memmem(buf, n, "-----BEGIN X509 CERTIFICATE-----", 32); /* the old form */
	free(buf);
	if (!pem) {
		cfg_error(w->e, v, path, "\"%s\" holds no PEM certificate (a \"-----BEGIN "
			  "CERTIFICATE-----\" block): the CA file must be PEM (a DER one converts with "
			  "`openssl x509 -inform der -in FILE -out FILE.pem`)", file);
		return -1;
	}
	return 0;
}

/* Apply a url: key (already in r->url) to r. at[] gets the url node for derived fields. */
static int apply_url(struct walk *w, struct cfg_replica *r, const struct cfg_node **at,
		     const char *path)
{
	struct cfg_url u = { 0 };
	bool unsupported = false;
	char why[200], kp[340];
	const struct cfg_node *un = at[RF_URL];
	int rc = -1;

	walk_path(kp, sizeof(kp), path, "url");
	if (cfg_parse_url(r->url, &u, &unsupported, why, sizeof(why)) < 0) {
		char note[160];
		walk_unset_note(note, sizeof(note), w, &un, 1);
		cfg_error(w->e, un, kp, "%s%s%s", why, unsupported ? " (s3 and file only)" : "", note);
		return -1;
	}
	/* As Litestream: a url and the parts it already names cannot both be given (a key
	 * with no value, `path: $UNSET`, gives none) */
	if (r->path && *r->path && u.path) {
		walk_path(kp, sizeof(kp), path, "path");
		cfg_error(w->e, at[RF_PATH], kp, "give either url or path, not both");
		goto out;
	}
	/* on a file url, bucket is one of the S3 keys Litestream ignores there */
	if (r->bucket && *r->bucket && u.type == REPLICA_S3) {
		walk_path(kp, sizeof(kp), path, "bucket");
		cfg_error(w->e, at[RF_BUCKET], kp, "give either url or bucket, not both");
		goto out;
	}
	/* the url's scheme wins over a `type` that says otherwise, as in Litestream */
	r->type = u.type;
	at[RF_TYPE] = un;
#define TAKE(field, idx)                            \
	if (u.field && !(r->field && *r->field)) {  \
		free(r->field);                     \
		r->field = u.field;                 \
		u.field = NULL;                     \
		at[idx] = un;                       \
	}
	TAKE(path, RF_PATH)
	TAKE(bucket, RF_BUCKET)
	TAKE(endpoint, RF_ENDPOINT)
	TAKE(region, RF_REGION)
#undef TAKE
	/* a host shortcut's path-style holds even against `force-path-style: false`, as in
	 * Litestream: a litestream.yml that works there means the same here */
	if (u.force_path_style) {
		r->force_path_style = true;
		at[RF_FPS] = un;
	}
	rc = 0;
out:
	cfg_url_release(&u);
	return rc;
}

static const struct {
	int value, file;
} secret_pairs[] = { { RF_AKID, RF_AKID_FILE }, { RF_SAK, RF_SAK_FILE }, { RF_TOKEN, RF_TOKEN_FILE } };

/*
 * The files an entity names are readable now: each credential's -file, and an S3
 * one's ca-file (else every request fails at run, exit 111 for "try again", for a
 * typo in a path). Each credential is given inline or as a file, not both.
 */
static int check_files(struct walk *w, const struct cfg_replica *r, const struct cfg_node **at,
		       const char *path)
{
	char kp[340];
	walk_path(kp, sizeof(kp), path, "ca-file");
	if (r->type == REPLICA_S3 && r->ca_file && *r->ca_file &&
	    cfg_check_ca_file(w, at[RF_CAFILE], kp, r->ca_file) < 0)
		return -1;
	for (size_t i = 0; i < 3; i++) {
		const struct field *fv = &replica_tab[secret_pairs[i].value];
		const struct field *ff = &replica_tab[secret_pairs[i].file];
		const char *const *file = (const char *const *)(const void *)((const char *)r + ff->off);
		const char *const *val = (const char *const *)(const void *)((const char *)r + fv->off);
		const struct cfg_node *fn = at[secret_pairs[i].file];
		walk_path(kp, sizeof(kp), path, ff->key);
		if (*file && *val) {
			cfg_error(w->e, fn, kp, "give %s or %s, not both", fv->key, ff->key);
			return -1;
		}
		char vp[340];
		walk_path(vp, sizeof(vp), path, fv->key);
		struct cfg_secret one = { .value = (char *)*val, .file = (char *)*file };
		if (cfg_check_secret(w, &one, at[secret_pairs[i].value], vp, fn, kp) < 0)
			return -1;
	}
	return 0;
}

int cfg_check_secret(struct walk *w, const struct cfg_secret *s, const struct cfg_node *vn,
		     const char *vpath, const struct cfg_node *fn, const char *fpath)
{
	if (s->file && cfg_check_readable(w, fn, fpath, s->file) < 0)
		return -1;
	/* a line break would end the header it goes in, or change the signature: every
	 * request failed with a bare HTTP 400 or SignatureDoesNotMatch, exit 111 */
	if (s->value && strpbrk(s->value, "\r\n")) {
		cfg_error(w->e, vn, vpath, "contains a line break: a credential is one line");
		return -1;
	}
	/* its content too, unless empty: a file filled a moment after the start is read then */
	struct stat sb;
	if (s->file && stat(s->file, &sb) == 0 && sb.st_size > 2) {
		struct cfg_secret file = { .file = s->file };
		char *buf = malloc(SECRET_MAX + 1), why[600] = "out of memory";
		int rc = buf ? secret_get(&file, buf, SECRET_MAX + 1, why, sizeof(why)) : -1;
		if (buf)
			explicit_bzero(buf, SECRET_MAX + 1);
		free(buf);
		if (rc < 0) {
			cfg_error(w->e, fn, fpath, "%s", why);
			return -1;
		}
	}
	return 0;
}

/*
 * Litestream's own S3 keys, which its file replicas ignore: a litestream.yml
 * may carry them on a replica that is plainly a file one (url: file://… or
 * type: file), e.g. left behind when it moved off S3.
 */
static bool litestream_s3_key(int i)
{
	return i == RF_BUCKET || i == RF_ENDPOINT || i == RF_REGION || i == RF_FPS || i == RF_SKIPV ||
	       i == RF_AKID || i == RF_SAK;
}

/*
 * S3 settings on a file replica or store are a mistake, not something to
 * ignore; except Litestream's own on a stand-alone replica whose type is
 * given (by url: or type:), which are dropped as Litestream ignores them.
 * Without a type, "bucket: b, path: p" was surely meant as S3: Litestream
 * would have made it a local directory, and we say so.
 */
static int check_file_keys(struct walk *w, struct cfg_replica *r, const struct cfg_node **at,
			   const char *path, const char *what)
{
	char kp[340];
	bool explicit_file = !r->store && at[RF_TYPE] && strcmp(what, "replica") == 0;
	if (r->type != REPLICA_FILE)
		return 0;
	for (int i = 0; i < RF_N; i++) {
		if (!replica_tab[i].s3_only || !at[i] || (explicit_file && litestream_s3_key(i)))
			continue;
		walk_path(kp, sizeof(kp), path, replica_tab[i].key);
		if (litestream_s3_key(i) && !r->store && strcmp(what, "replica") == 0)
			cfg_error(w->e, at[i], kp,
				  "only for s3 replicas, and this one is type file: it has no url: or type:, "
				  "so Litestream v0.3.13 would have replicated to the local directory path: "
				  "and ignored this key; add type: s3 (or url: s3://BUCKET/PATH), or type: file "
				  "to keep a file replica");
		else
			cfg_error(w->e, at[i], kp, "only for s3 %ss (this %s is type file)", what, what);
		return -1;
	}
	if (!explicit_file)
		return 0;
	/* dropped, so nothing reads them and the effective config does not show them */
	free(r->bucket);
	free(r->endpoint);
	free(r->region);
	r->bucket = r->endpoint = r->region = NULL;
	r->force_path_style = r->skip_verify = false;
	free(r->access_key_id.value);
	free(r->secret_access_key.value);
	r->access_key_id.value = r->secret_access_key.value = NULL;
	return 0;
}

/* Walk one store or replica map (own keys only, url applied). */
static int walk_entity(struct walk *w, const struct cfg_node *m, const char *path, unsigned where,
		       struct cfg_replica *r, const struct cfg_node **at)
{
	config_replica_defaults(r);
	r->line = m->line;
	r->column = m->column;
	if (walk_map(w, m, path, replica_tab, RF_N, where, r, at) < 0)
		return -1;
	if (r->path && strstr(r->path, "://")) {
		char kp[340];
		walk_path(kp, sizeof(kp), path, "path");
		cfg_error(w->e, at[RF_PATH], kp, "is a URL; put it in url: instead (path: is a directory or key prefix)");
		return -1;
	}
	if (r->url && !r->store && apply_url(w, r, at, path) < 0)
		return -1;
	return 0;
}

/* An endpoint is http(s)://HOST[:PORT][/…] (scheme optional) without user@. */
static int check_endpoint(struct walk *w, const struct cfg_replica *r, const struct cfg_node **at,
			  const char *path)
{
	char kp[340];
	if (!r->endpoint)
		return 0;
	const char *sep = strstr(r->endpoint, "://");
	const char *auth = sep ? sep + 3 : r->endpoint;
	size_t alen = strcspn(auth, "/?#");
	walk_path(kp, sizeof(kp), path, "endpoint");
	if (sep && !(sep - r->endpoint == 4 && strncasecmp(r->endpoint, "http", 4) == 0) &&
	    !(sep - r->endpoint == 5 && strncasecmp(r->endpoint, "https", 5) == 0)) {
		cfg_error(w->e, at[RF_ENDPOINT], kp, "must start with http:// or https://");
		return -1;
	}
	if (alen == 0 || memchr(auth, '@', alen)) {
		cfg_error(w->e, at[RF_ENDPOINT], kp,
			  "needs a host (http(s)://HOST[:PORT]) and must not carry credentials");
		return -1;
	}
	if (!cfg_authority_ok(auth, alen)) {
		cfg_error(w->e, at[RF_ENDPOINT], kp,
			  "\"%.*s\" is not a host (HOST, HOST:PORT with PORT 1 to 65535, or "
			  "[IPV6]:PORT)", (int)alen, auth);
		return -1;
	}
	/* the path a MinIO behind a proxy is served at: as the S3 client takes it (s3.c) */
	const char *ep_path = auth + alen;
	size_t plen = strcspn(ep_path, "?#");
	if (ep_path[plen]) {
		cfg_error(w->e, at[RF_ENDPOINT], kp, "must not carry a query or fragment");
		return -1;
	}
	if (strspn(ep_path, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~/") < plen) {
		cfg_error(w->e, at[RF_ENDPOINT], kp, "path \"%.*s\" may hold only letters, digits, "
			  "'-', '.', '_', '~' and '/'", (int)plen, ep_path);
		return -1;
	}
	return 0;
}

/* The unset variable behind a missing url/path/bucket, as a message suffix. */
static const char *unset_note(const struct walk *w, const struct cfg_node **at, char *buf, size_t len)
{
	const struct cfg_node *nodes[] = { at[RF_URL], at[RF_PATH], at[RF_BUCKET], at[RF_TYPE] };
	walk_unset_note(buf, len, w, nodes, 4);
	return buf;
}

static int leaves_store(const char *path);

int walk_stores(struct walk *w)
{
	const struct cfg_node *m = w->stores_node;
	char path[340];

	if (!m || cfg_node_is_null(m))
		return 0;
	size_t n = m->nitems / 2;
	w->stores = calloc(n ? n : 1, sizeof(*w->stores));
	if (!w->stores) {
		cfg_error(w->e, m, "stores", "out of memory");
		return -1;
	}
	for (size_t i = 0; i < n; i++) {
		const struct cfg_node *k = m->items[2 * i], *v = m->items[2 * i + 1];
		struct store *s = &w->stores[i];
		w->nstores = i + 1;
		if (k->kind != CN_SCALAR || !k->value[0]) {
			cfg_error(w->e, k, "stores", "a store name must be a plain, non-empty name");
			return -1;
		}
		snprintf(path, sizeof(path), "stores.%s", k->value);
		for (size_t j = 0; j < i; j++) {
			if (strcmp(w->stores[j].name, k->value) == 0) {
				cfg_error(w->e, k, path, "duplicate key (first at line %d, column %d)",
					  w->stores[j].key->line, w->stores[j].key->column);
				return -1;
			}
		}
		s->key = k;
		if (!(s->name = strdup(k->value))) {
			cfg_error(w->e, k, path, "out of memory");
			return -1;
		}
		if (v->kind != CN_MAP) {
			cfg_error(w->e, v, path, "expected a map of store settings, got %s",
				  walk_kind_name(v));
			return -1;
		}
		if (walk_entity(w, v, path, ON_STORE, &s->r, s->at) < 0 ||
		    check_file_keys(w, &s->r, s->at, path, "store") < 0 ||
		    check_files(w, &s->r, s->at, path) < 0)
			return -1;
		char note[160];
		if (check_endpoint(w, &s->r, s->at, path) < 0)
			return -1;
		if (s->r.type == REPLICA_S3 && !s->r.bucket) {
			cfg_error(w->e, v, path, "missing bucket: an s3 store needs url: s3://BUCKET/PATH or bucket:%s",
				  unset_note(w, s->at, note, sizeof(note)));
			return -1;
		}
		if (s->r.type == REPLICA_FILE && !s->r.path) {
			cfg_error(w->e, v, path, "missing path: a file store needs url: file:///DIR or path: /DIR%s",
				  unset_note(w, s->at, note, sizeof(note)));
			return -1;
		}
		/* "../x" climbs above the bucket, as a replica's would (finish) */
		int up = s->r.type == REPLICA_S3 && s->r.path && s->r.path[0] != '/' ?
			 leaves_store(s->r.path) : 0;
		if (up < 0) {
			cfg_error(w->e, v, path, "out of memory");
			return -1;
		}
		if (up) {
			char kp[340];
			walk_path(kp, sizeof(kp), path, "path");
			cfg_error(w->e, s->at[RF_PATH] ? s->at[RF_PATH] : s->at[RF_URL] ? s->at[RF_URL] : v,
				  kp, "\"%s\" climbs above the bucket (its \"..\"): a store's path is a "
				  "prefix within its bucket", s->r.path);
			return -1;
		}
	}
	return 0;
}

void walk_stores_free(struct walk *w)
{
	for (size_t i = 0; i < w->nstores; i++) {
		free(w->stores[i].name);
		config_replica_release(&w->stores[i].r);
	}
	free(w->stores);
	w->stores = NULL;
	w->nstores = 0;
}

static const struct store *find_store(const struct walk *w, const char *name)
{
	for (size_t i = 0; i < w->nstores; i++)
		if (strcmp(w->stores[i].name, name) == 0)
			return &w->stores[i];
	return NULL;
}

/* a + "/" + b, with b's leading slashes dropped: b is always below a. */
static char *join_prefix(const char *a, const char *b)
{
	while (*b == '/')
		b++;
	size_t al = strlen(a);
	while (al > 1 && a[al - 1] == '/')
		al--;
	size_t len = al + strlen(b) + 2;
	char *p = malloc(len);
	if (p)
		snprintf(p, len, "%.*s%s%s", (int)al, a, al && *b && a[al - 1] != '/' ? "/" : "", b);
	return p;
}

/*
 * Whether a replica's path, placed below its store's, climbs above it with
 * "..": the effect is another location (another job's prefix in the same
 * bucket), which the duplicate checks of one config cannot see. Returns 1
 * if it does, 0 if not, -1 out of memory.
 */
static int leaves_store(const char *path)
{
	while (*path == '/') /* dropped by join_prefix: below the store's path either way */
		path++;
	char *c = strdup(path);
	if (!c)
		return -1;
	pathnorm_clean(c);
	int up = strcmp(c, "..") == 0 || strncmp(c, "../", 3) == 0;
	free(c);
	return up;
}

/* Fill what the replica does not set from its store. */
static int inherit(struct walk *w, struct cfg_replica *r, const struct cfg_node **at,
		   const char *path, const struct cfg_node *m)
{
	char kp[340];
	const struct store *s = find_store(w, r->store);
	walk_path(kp, sizeof(kp), path, "store");
	if (!s) {
		const char *best = NULL;
		int bestd = 3;
		for (size_t i = 0; i < w->nstores; i++) {
			int d = cfg_edit_distance(r->store, w->stores[i].name, 2);
			if (d < bestd) {
				bestd = d;
				best = w->stores[i].name;
			}
		}
		if (best)
			cfg_error(w->e, at[RF_STORE], kp, "no store named \"%s\"; did you mean \"%s\"?",
				  r->store, best);
		else if (w->nstores)
			cfg_error(w->e, at[RF_STORE], kp, "no store named \"%s\" under stores:", r->store);
		else
			cfg_error(w->e, at[RF_STORE], kp, "no store named \"%s\" (there is no stores: section)",
				  r->store);
		return -1;
	}
	if (at[RF_URL] || at[RF_TYPE]) {
		int i = at[RF_URL] ? RF_URL : RF_TYPE;
		walk_path(kp, sizeof(kp), path, replica_tab[i].key);
		cfg_error(w->e, at[i], kp, "not allowed together with store: (store \"%s\" sets it)",
			  r->store);
		return -1;
	}
	r->type = s->r.type;
	at[RF_TYPE] = s->at[RF_TYPE] ? s->at[RF_TYPE] : m;
	for (size_t p = 0; p < 3; p++) {
		int v = secret_pairs[p].value, f = secret_pairs[p].file;
		if (at[v] || at[f])
			continue;
		if (field_copy(&replica_tab[v], r, &s->r) < 0 || field_copy(&replica_tab[f], r, &s->r) < 0)
			goto oom;
		at[v] = s->at[v];
		at[f] = s->at[f];
	}
	for (int i = 0; i < RF_N; i++) {
		const struct field *f = &replica_tab[i];
		if (f->kind == F_SECRET || f->kind == F_SECRET_FILE || f->kind == F_UNSUPPORTED ||
		    f->kind == F_CUSTOM || (f->where && !(f->where & ON_STORE)))
			continue;
		if (i == RF_PATH || i == RF_URL || !s->at[i] || at[i])
			continue;
		if (field_copy(f, r, &s->r) < 0)
			goto oom;
		at[i] = s->at[i];
	}
	int up = r->path ? leaves_store(r->path) : 0;
	if (up < 0)
		goto oom;
	if (up) {
		walk_path(kp, sizeof(kp), path, "path");
		cfg_error(w->e, at[RF_PATH], kp, "\"%s\" climbs above the path of store \"%s\" (its \"..\"): "
			  "a replica using a store stays below the store's path", r->path, r->store);
		return -1;
	}
	if (s->r.path) {
		char *joined = join_prefix(s->r.path, r->path ? r->path : "");
		if (!joined)
			goto oom;
		free(r->path);
		r->path = joined;
		if (!at[RF_PATH])
			at[RF_PATH] = s->at[RF_PATH];
	}
	if (!r->name && !(r->name = strdup(s->name)))
		goto oom;
	return 0;
oom:
	cfg_error(w->e, m, path, "out of memory");
	return -1;
}

/* Defaults, top-level credentials, the node rule and the checks every replica gets. */
static int finish(struct walk *w, struct cfg_replica *r, const struct cfg_node **at, const char *path,
		  const struct cfg_node *m)
{
	char kp[340], note[160];
	if (r->type == REPLICA_FILE) {
		if (check_file_keys(w, r, at, path, "replica") < 0)
			return -1;
		if (!r->path) {
			cfg_error(w->e, m, path,
				  "missing path: a file replica needs url: file:///DIR or path: /DIR%s",
				  unset_note(w, at, note, sizeof(note)));
			return -1;
		}
		char *abs = cfg_abs_path(r->path);
		if (!abs) {
			walk_path(kp, sizeof(kp), path, "path");
			cfg_error(w->e, at[RF_PATH], kp, "cannot make \"%s\" an absolute path", r->path);
			return -1;
		}
		free(r->path);
		r->path = abs;
	} else {
		if (!r->bucket) {
			cfg_error(w->e, m, path,
				  "missing bucket: an s3 replica needs url: s3://BUCKET/PATH or bucket:%s",
				  unset_note(w, at, note, sizeof(note)));
			return -1;
		}
		if (!r->path && !(r->path = strdup("")))
			goto oom;
		/*
		 * "../x" climbs above the bucket: cleaned, it was quietly "x" here,
		 * another job's prefix, and Litestream cannot use it at all (QA91 O2).
		 * "/../x" is "/x", as in a URL's path.
		 */
		int up = r->path[0] != '/' ? leaves_store(r->path) : 0;
		if (up < 0)
			goto oom;
		if (up) {
			walk_path(kp, sizeof(kp), path, "path");
			cfg_error(w->e, at[RF_PATH] ? at[RF_PATH] : m, kp, "\"%s\" climbs above the "
				  "bucket (its \"..\"): a replica's path is a prefix within its bucket",
				  r->path);
			return -1;
		}
		cfg_clean_prefix(r->path);
		if (r->endpoint) {
			if (check_endpoint(w, r, at, path) < 0)
				return -1;
			if (!strstr(r->endpoint, "://")) {
				/* As the AWS SDK does: no scheme means https. */
				char *e = NULL;
				if (asprintf(&e, "https://%s", r->endpoint) < 0)
					goto oom;
				free(r->endpoint);
				r->endpoint = e;
			}
			size_t el = strlen(r->endpoint);
			while (el > 0 && r->endpoint[el - 1] == '/')
				r->endpoint[--el] = '\0';
			if (!at[RF_FPS])
				r->force_path_style = true;
		}
		if (!r->region && !(r->region = strdup("us-east-1")))
			goto oom;
		if (!r->access_key_id.value && !r->access_key_id.file) {
			if (w->top_akid.value && !(r->access_key_id.value = strdup(w->top_akid.value)))
				goto oom;
			if (w->top_akid.file && !(r->access_key_id.file = strdup(w->top_akid.file)))
				goto oom;
		}
		if (!r->secret_access_key.value && !r->secret_access_key.file) {
			if (w->top_sak.value && !(r->secret_access_key.value = strdup(w->top_sak.value)))
				goto oom;
			if (w->top_sak.file && !(r->secret_access_key.file = strdup(w->top_sak.file)))
				goto oom;
		}
		/* half a pair: the environment's are not used then (Litestream), and no call signs */
		bool akid = secret_is_set(&r->access_key_id), sak = secret_is_set(&r->secret_access_key);
		if (akid != sak) {
			cfg_error(w->e, m, path, "%s is set (here or at the top level) but %s is not: "
				  "give both, or neither to use AWS_ACCESS_KEY_ID/"
				  "AWS_SECRET_ACCESS_KEY or ~/.aws/credentials",
				  akid ? "access-key-id" : "secret-access-key",
				  akid ? "secret-access-key" : "access-key-id");
			return -1;
		}
	}
	if (r->retention_ms > 0 && r->retention_check_interval_ms > r->retention_ms)
		r->retention_check_interval_ms = r->retention_ms;
	if (!r->name && !(r->name = strdup(r->type == REPLICA_S3 ? "s3" : "file")))
		goto oom;
	if (w->cfg->node && r->node && strcmp(w->cfg->node, r->node) == 0)
		r->restore_only = true;
	return 0;
oom:
	cfg_error(w->e, m, path, "out of memory");
	return -1;
}

/* Whether name is taken in db by a given name, or by a replica before `before`. */
static bool name_taken(const struct cfg_db *db, size_t before, const char *name)
{
	for (size_t j = 0; j < db->nreplicas; j++)
		if ((j < before || db->replicas[j].name_given) && strcmp(db->replicas[j].name, name) == 0)
			return true;
	return false;
}

/*
 * a and b as logs, /healthz and /metrics show them (a byte that is not
 * UTF-8 reads U+FFFD): names that differ only there are one there, and
 * twice one series of /metrics, which Prometheus refuses whole (QA94 D2).
 */
static bool same_shown(const char *a, const char *b)
{
	char sa[3 * CFG_NAME_MAX + 1], sb[3 * CFG_NAME_MAX + 1];
	return strcmp(utf8_repair(a, sa, sizeof(sa)), utf8_repair(b, sb, sizeof(sb))) == 0;
}

int config_unique_replica_names(struct cfg_db *db)
{
	for (size_t i = 0; i < db->nreplicas; i++) {
		struct cfg_replica *r = &db->replicas[i];
		if (r->name_given || !name_taken(db, i, r->name))
			continue;
		char cand[CFG_NAME_MAX + 1];
		for (size_t n = i + 1;; n++) {
			char num[24];
			int nl = snprintf(num, sizeof(num), "-%zu", n);
			snprintf(cand, sizeof(cand), "%.*s%s", CFG_NAME_MAX - nl, r->name, num);
			if (!name_taken(db, i, cand))
				break;
		}
		char *dup = strdup(cand);
		if (!dup)
			return -1;
		free(r->name);
		r->name = dup;
	}
	return 0;
}

int walk_replicas(struct walk *w, const struct cfg_node *seq, const char *path, struct cfg_db *db)
{
	char rp[360], kp[400];
	if (seq->kind != CN_SEQ) {
		cfg_error(w->e, seq, path, "expected a list of replicas (lines starting with \"- \"), got %s",
			  walk_kind_name(seq));
		return -1;
	}
	db->replicas = calloc(seq->nitems ? seq->nitems : 1, sizeof(*db->replicas));
	if (!db->replicas) {
		cfg_error(w->e, seq, path, "out of memory");
		return -1;
	}
	for (size_t i = 0; i < seq->nitems; i++) {
		const struct cfg_node *m = seq->items[i];
		const struct cfg_node *at[AT_REPLICA_MAX] = { 0 };
		struct cfg_replica *r = &db->replicas[i];
		db->nreplicas = i + 1;
		snprintf(rp, sizeof(rp), "%s[%zu]", path, i);
		if (m->kind != CN_MAP) {
			cfg_error(w->e, m, rp, "expected a map of replica settings, got %s",
				  walk_kind_name(m));
			return -1;
		}
		if (walk_entity(w, m, rp, ON_REPLICA, r, at) < 0)
			return -1;
		if (r->store && inherit(w, r, at, rp, m) < 0)
			return -1;
		if (check_files(w, r, at, rp) < 0 || finish(w, r, at, rp, m) < 0)
			return -1;
		if (walk_check_name(w, at[RF_NAME] ? at[RF_NAME] : m, rp, r->name) < 0)
			return -1;
		r->name_given = at[RF_NAME] != NULL;
		for (size_t j = 0; r->name_given && j < i; j++) {
			const struct cfg_replica *o = &db->replicas[j];
			if (o->name_given && strcmp(o->name, r->name) == 0) {
				walk_path(kp, sizeof(kp), rp, "name");
				cfg_error(w->e, at[RF_NAME], kp,
					  "duplicate replica name \"%s\" (also %s[%zu], line %d); give each replica its own \"name\"",
					  r->name, path, j, o->line);
				return -1;
			}
			if (o->name_given && same_shown(o->name, r->name)) {
				walk_path(kp, sizeof(kp), rp, "name");
				cfg_error(w->e, at[RF_NAME], kp,
					  "shows as the same replica name as %s[%zu] (line %d) in logs, "
					  "/healthz and /metrics: bytes that are not UTF-8 all read as "
					  "U+FFFD; give each replica its own \"name\"", path, j, o->line);
				return -1;
			}
		}
	}
	if (config_unique_replica_names(db) < 0) {
		cfg_error(w->e, seq, path, "out of memory");
		return -1;
	}
	/* replicas writing to one place: cfg_check_replica_dests, once every db is read */
	return 0;
}
