/*
 * config_url.c — replica URLs taken apart as Litestream v0.3.13 does
 * (cmd/litestream/main.go ParseReplicaURL, s3.ParseHost), for config_load's
 * url: keys and for the commands that take a REPLICA_URL argument.
 */
#include "common/config.h"

#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "common/config_int.h"
#include "common/config_walk.h"
#include "common/pathnorm.h"
#include "common/banned.h"


void cfg_clean_prefix(char *p)
{
	char *q = p;
	while (*q == '/')
		q++;
	memmove(p, q, strlen(q) + 1);
	pathnorm_clean(p);
	/* As under a root: "/../x" is "/x", and "/." is "/" (no prefix). */
	while (strncmp(p, "..", 2) == 0 && (p[2] == '/' || p[2] == '\0'))
		memmove(p, p + (p[2] ? 3 : 2), strlen(p + (p[2] ? 3 : 2)) + 1);
	if (strcmp(p, ".") == 0)
		p[0] = '\0';
}

void cfg_url_release(struct cfg_url *u)
{
	free(u->bucket);
	free(u->path);
	free(u->endpoint);
	free(u->region);
	memset(u, 0, sizeof(*u));
}

/* If host ends with ".suffix" (or is suffix), the part before. */
static bool strip_suffix(const char *host, const char *suffix, char *before, size_t len)
{
	size_t hl = strlen(host), sl = strlen(suffix);
	if (hl < sl || strcmp(host + hl - sl, suffix) != 0)
		return false;
	if (hl == sl) {
		before[0] = '\0';
		return true;
	}
	if (host[hl - sl - 1] != '.')
		return false;
	snprintf(before, len, "%.*s", (int)(hl - sl - 1), host);
	return true;
}

/* Split s at its last dot: s keeps the head ("" if none), label gets the last label. */
static void split_last_label(char *s, char *label, size_t len)
{
	char *dot = strrchr(s, '.');
	snprintf(label, len, "%s", dot ? dot + 1 : s);
	if (dot)
		*dot = '\0';
	else
		s[0] = '\0';
}

/*
 * a[0..len) as HOST[:PORT] or [IPV6][:PORT]: the host (without brackets) and
 * the port (NULL when there is none). False when a bracket is out of place.
 */
static bool authority_split(const char *a, size_t len, const char **host, size_t *hl,
			    const char **port, size_t *pl)
{
	const char *end = a + len;
	*host = a;
	*port = NULL;
	if (len > 0 && a[0] == '[') {
		const char *close = memchr(a, ']', len);
		if (!close || close == a + 1)
			return false;
		*host = a + 1;
		*hl = (size_t)(close - *host);
		if (close + 1 < end) {
			if (close[1] != ':')
				return false;
			*port = close + 2;
		}
		if (memchr(*host, '[', *hl))
			return false;
	} else {
		const char *colon = memchr(a, ':', len);
		*hl = colon ? (size_t)(colon - a) : len;
		if (colon)
			*port = colon + 1;
		if (memchr(a, '[', *hl) || memchr(a, ']', *hl))
			return false;
	}
	*pl = *port ? (size_t)(end - *port) : 0;
	return true;
}

/* A port: 1 to 65535 in decimal digits. */
static bool port_ok(const char *p, size_t pl)
{
	long v = 0;
	if (pl == 0 || pl > 5)
		return false;
	for (size_t i = 0; i < pl; i++) {
		if (p[i] < '0' || p[i] > '9')
			return false;
		v = v * 10 + (p[i] - '0');
	}
	return v >= 1 && v <= 65535;
}

bool cfg_authority_ok(const char *a, size_t len)
{
	const char *host, *port;
	size_t hl, pl;
	return authority_split(a, len, &host, &hl, &port, &pl) && hl > 0 && (!port || port_ok(port, pl));
}

bool cfg_host_ok(const char *host, size_t len)
{
	char buf[256];
	unsigned char addr[sizeof(struct in6_addr)];
	if (len == 0 || len >= sizeof(buf))
		return false;
	memcpy(buf, host, len);
	buf[len] = '\0';
	if (memchr(buf, ':', len)) {
		buf[strcspn(buf, "%")] = '\0'; /* a zone: fe80::1%eth0 */
		return inet_pton(AF_INET6, buf, addr) == 1;
	}
	if (strspn(buf, "0123456789.") == len)
		return inet_pton(AF_INET, buf, addr) == 1;
	if (buf[len - 1] == '.') /* the root: "host.example." */
		buf[--len] = '\0';
	if (len == 0 || len > 253)
		return false;
	for (const char *p = buf;; p++) {
		size_t n = strspn(p, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_");
		if (n == 0 || n > 63 || (p[n] && p[n] != '.'))
			return false;
		if (!p[n])
			return true;
		p += n;
	}
}

const char *cfg_authority_problem(const char *a, size_t len)
{
	const char *host, *port;
	size_t hl, pl;
	if (!authority_split(a, len, &host, &hl, &port, &pl))
		return "is not HOST, HOST:PORT or [IPV6]:PORT";
	if (hl == 0)
		return "has no host";
	if (port && !port_ok(port, pl))
		return "the port is not a number from 1 to 65535";
	if (!cfg_host_ok(host, hl))
		return "the host is neither an IP address nor a DNS name";
	return NULL;
}

/*
 * Litestream's host shortcuts for non-AWS services; any other host is an
 * AWS bucket name. The port, if any, goes to the endpoint.
 */
static int parse_s3_host(const char *hostport, struct cfg_url *u)
{
	char host[256], port[16] = "", pre[256], head[256], label[256], ep[320];
	const char *colon = strrchr(hostport, ':');
	const char *scheme = "https";
	const char *bucket = NULL, *region = NULL;

	/* "[::1]" has colons but no port: Go's SplitHostPort fails and keeps it whole */
	const char *close = strchr(hostport, ']');
	if (colon && hostport[0] == '[' && close && colon < close)
		colon = NULL;
	snprintf(host, sizeof(host), "%.*s", colon ? (int)(colon - hostport) : (int)strlen(hostport),
		 hostport);
	if (colon)
		snprintf(port, sizeof(port), "%s", colon + 1);
	ep[0] = '\0';
	if (strip_suffix(host, "localhost", pre, sizeof(pre))) {
		bucket = pre;
		region = "us-east-1";
		scheme = "http";
		snprintf(ep, sizeof(ep), "localhost");
	} else if (strip_suffix(host, "s3.filebase.com", pre, sizeof(pre))) {
		bucket = pre;
		snprintf(ep, sizeof(ep), "s3.filebase.com");
	} else if (strip_suffix(host, "backblazeb2.com", pre, sizeof(pre))) {
		/* BKT.s3.REGION.backblazeb2.com */
		split_last_label(pre, label, sizeof(label));
		if (strip_suffix(pre, "s3", head, sizeof(head))) {
			bucket = head;
			region = label;
			snprintf(ep, sizeof(ep), "s3.%s.backblazeb2.com", label);
		}
	} else if (strip_suffix(host, "scw.cloud", pre, sizeof(pre))) {
		/* BKT.s3.REGION.scw.cloud */
		split_last_label(pre, label, sizeof(label));
		if (strip_suffix(pre, "s3", head, sizeof(head))) {
			bucket = head;
			region = label;
			snprintf(ep, sizeof(ep), "s3.%s.scw.cloud", label);
		}
	} else if (strip_suffix(host, "digitaloceanspaces.com", pre, sizeof(pre))) {
		/* BKT.REGION.digitaloceanspaces.com */
		split_last_label(pre, label, sizeof(label));
		bucket = pre;
		region = label;
		snprintf(ep, sizeof(ep), "%s.digitaloceanspaces.com", label);
	} else if (strip_suffix(host, "linodeobjects.com", pre, sizeof(pre))) {
		/* BKT.REGION.linodeobjects.com */
		split_last_label(pre, label, sizeof(label));
		bucket = pre;
		region = label;
		snprintf(ep, sizeof(ep), "%s.linodeobjects.com", label);
	}
	if (!ep[0]) {
		/*
		 * Any other host is an AWS bucket name, its port dropped as Go's
		 * net.SplitHostPort drops it ("[::1]:9000" is "::1"): the bucket
		 * Litestream wrote to. The endpoint comes from endpoint: alone.
		 */
		size_t hl = strlen(host);
		if (port[0] && hl >= 2 && host[0] == '[' && host[hl - 1] == ']')
			u->bucket = strndup(host + 1, hl - 2);
		else
			u->bucket = strdup(port[0] ? host : hostport);
		return u->bucket ? 0 : -1;
	}
	char full[400];
	snprintf(full, sizeof(full), "%s://%s%s%s", scheme, ep, port[0] ? ":" : "", port);
	u->force_path_style = true;
	if (!(u->endpoint = strdup(full)))
		return -1;
	if (region && *region && !(u->region = strdup(region)))
		return -1;
	if (bucket && *bucket && !(u->bucket = strdup(bucket)))
		return -1;
	return 0;
}

/* ---- Go's net/url, the parts Litestream's ParseReplicaURL depends on ---- */

static int hexval(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/*
 * Percent-decode n bytes of s into out (room for n + 1). Returns the decoded
 * length, or -1 with why set for a '%' not followed by two hex digits
 * (Go: invalid URL escape).
 */
static long unescape(const char *s, size_t n, char *out, char *why, size_t whylen)
{
	size_t w = 0;
	for (size_t i = 0; i < n; i++) {
		if (s[i] != '%') {
			out[w++] = s[i];
			continue;
		}
		if (n - i < 3 || hexval(s[i + 1]) < 0 || hexval(s[i + 2]) < 0) {
			snprintf(why, whylen, "invalid URL escape \"%.*s\"", (int)(n - i < 3 ? n - i : 3), s + i);
			return -1;
		}
		out[w++] = (char)(hexval(s[i + 1]) * 16 + hexval(s[i + 2]));
		i += 2;
	}
	out[w] = '\0';
	return (long)w;
}

/* Go's shouldEscape for the path (fragment false) or the fragment (true). */
static bool should_escape(unsigned char c, bool fragment)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9'))
		return false;
	if (strchr("-_.~", c) && c)
		return false;
	if (strchr("$&+,/:;=?@", c) && c)
		return fragment ? false : c == '?';
	if (fragment && strchr("!()*", c) && c)
		return false;
	return true;
}

/* Go's validEncoded: s may be used as written (RFC 3986 pchars and escapes only). */
static bool valid_encoded(const char *s, size_t n, bool fragment)
{
	for (size_t i = 0; i < n; i++)
		if (!(strchr("!$&'()*+,;=:@[]%", s[i]) && s[i]) && should_escape((unsigned char)s[i], fragment))
			return false;
	return true;
}

/*
 * Go's URL.EscapedPath / EscapedFragment: the n bytes of raw as written if
 * that is a valid encoding, else the decoded text escaped again. Returns a
 * malloc'd string, or NULL with why set (bad escape, out of memory).
 */
static char *escaped_form(const char *raw, size_t n, bool fragment, char *why, size_t whylen)
{
	char *dec = malloc(n + 1), *out = NULL;
	long dn;
	if (!dec || (dn = unescape(raw, n, dec, why, whylen)) < 0)
		goto out;
	if (valid_encoded(raw, n, fragment)) {
		out = strndup(raw, n);
	} else if ((out = malloc((size_t)dn * 3 + 1))) {
		size_t w = 0;
		for (long i = 0; i < dn; i++) {
			unsigned char c = (unsigned char)dec[i];
			if (should_escape(c, fragment)) {
				out[w++] = '%';
				out[w++] = "0123456789ABCDEF"[c >> 4];
				out[w++] = "0123456789ABCDEF"[c & 15];
			} else {
				out[w++] = (char)c;
			}
		}
		out[w] = '\0';
	}
	if (!out)
		snprintf(why, whylen, "out of memory");
out:
	free(dec);
	return out;
}

/* A URL split as net/url.Parse splits it; pointers into the URL text. */
struct url_parts {
	const char *scheme, *auth, *path, *query, *frag; /* query/frag NULL if absent */
	size_t scheme_len, auth_len, path_len, query_len, frag_len;
};

/*
 * Split scheme://authority/path?query#fragment. Returns 0, or -1 if there is
 * no "://". "file:/DIR" (no authority) splits too: Go's net/url reads it as
 * the path /DIR, and Litestream replicates there.
 */
static int split_url(const char *url, struct url_parts *p)
{
	const char *sep = strstr(url, "://");
	const char *end = url + strlen(url);
	const char *hash = strchr(url, '#');
	size_t seplen = 3;
	memset(p, 0, sizeof(*p));
	if (strncasecmp(url, "file:/", 6) == 0 && url[6] != '/') {
		sep = url + 4;
		seplen = 1;
	}
	if (!sep || (hash && hash < sep))
		return -1;
	if (hash) {
		p->frag = hash + 1;
		p->frag_len = (size_t)(end - hash - 1);
		end = hash;
	}
	const char *q = memchr(url, '?', (size_t)(end - url));
	if (q && q < sep)
		return -1;
	if (q) {
		p->query = q + 1;
		p->query_len = (size_t)(end - q - 1);
		end = q;
	}
	p->scheme = url;
	p->scheme_len = (size_t)(sep - url);
	p->auth = sep + seplen;
	const char *slash = memchr(p->auth, '/', (size_t)(end - p->auth));
	p->auth_len = seplen == 3 ? (size_t)((slash ? slash : end) - p->auth) : 0;
	p->path = p->auth + p->auth_len;
	p->path_len = (size_t)(end - p->path);
	return 0;
}

/*
 * Can a file:// URL's host stand as written as the first part of a directory?
 * Letters, digits and "-._~" only: Go escapes or refuses anything else in a
 * host (a port too, in a file URL), and we would rather refuse than guess.
 */
static bool host_is_dir_part(const char *a, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (!((a[i] >= 'a' && a[i] <= 'z') || (a[i] >= 'A' && a[i] <= 'Z') ||
		      (a[i] >= '0' && a[i] <= '9') || strchr("-._~", a[i])))
			return false;
	return true;
}

/*
 * The file replica directory Litestream v0.3.13 derives from a file:// URL:
 * path.Clean of the URL without its scheme, re-assembled by Go's URL.String,
 * so the path keeps its escapes as written and a ?query or #fragment stays in
 * the directory name (Litestream writes there; so must we to find it).
 */
static char *file_url_dir(const struct url_parts *p, char *why, size_t whylen)
{
	char *path = NULL, *frag = NULL, *dir = NULL;
	if (!(path = escaped_form(p->path, p->path_len, false, why, whylen)))
		goto out;
	if (p->frag && !(frag = escaped_form(p->frag, p->frag_len, true, why, whylen)))
		goto out;
	/* file://HOST/DIR: URL.String gives "//HOST/DIR", which path.Clean makes "/HOST/DIR" */
	if (asprintf(&dir, "%s%.*s%s%s%.*s%s%s", p->auth_len ? "/" : "", (int)p->auth_len,
		     p->auth_len ? p->auth : "", path, p->query ? "?" : "", (int)p->query_len,
		     p->query ? p->query : "", frag && *frag ? "#" : "", frag ? frag : "") < 0) {
		dir = NULL;
		snprintf(why, whylen, "out of memory");
		goto out;
	}
	pathnorm_clean(dir);
out:
	free(path);
	free(frag);
	return dir;
}

/*
 * The S3 key prefix Litestream v0.3.13 derives from an s3:// URL: the decoded
 * path, cleaned, without its leading '/'. Query and fragment are not part of
 * it: Litestream reads no query parameter and drops both (the fragment's
 * escapes must still be valid, as Go checks them).
 */
static char *s3_url_prefix(const struct url_parts *p, char *why, size_t whylen)
{
	char *prefix = malloc(p->path_len + 1), *frag = malloc(p->frag_len + 1);
	long n = 0;
	if (!prefix || !frag) {
		snprintf(why, whylen, "out of memory");
		goto fail;
	}
	if ((n = unescape(p->path, p->path_len, prefix, why, whylen)) < 0)
		goto fail;
	if (p->frag && unescape(p->frag, p->frag_len, frag, why, whylen) < 0)
		goto fail;
	if (strlen(prefix) != (size_t)n) {
		snprintf(why, whylen, "the path decodes to a NUL byte (%%00), which no S3 key may hold");
		goto fail;
	}
	cfg_clean_prefix(prefix);
	free(frag);
	return prefix;
fail:
	free(prefix);
	free(frag);
	return NULL;
}

int cfg_parse_url(const char *url, struct cfg_url *u, bool *unsupported, char *why, size_t whylen)
{
	struct url_parts p;
	char host[300], err[200];

	memset(u, 0, sizeof(*u));
	*unsupported = false;
	for (const unsigned char *c = (const unsigned char *)url; *c; c++) {
		if (*c < 0x20 || *c == 0x7f) {
			snprintf(why, whylen, "invalid replica URL: it contains a control character");
			return -1;
		}
	}
	/*
	 * file:REL, file:~/DIR (no slash after the colon): Go's net/url reads an
	 * opaque part, and Litestream v0.3.13 replicates to it as to a path:
	 * key, relative to the working directory or the home (QA174 D2).
	 */
	if (strncasecmp(url, "file:", 5) == 0 && url[5] && url[5] != '/') {
		if (strpbrk(url, "?#")) {
			snprintf(why, whylen, "invalid file URL \"%s\": a relative one takes no ?query "
				 "or #fragment (use path: DIR)", url);
			return -1;
		}
		u->type = REPLICA_FILE;
		if (!(u->path = cfg_abs_path(url + 5))) {
			snprintf(why, whylen, "invalid file URL \"%s\": cannot make \"%s\" an absolute "
				 "path", url, url + 5);
			return -1;
		}
		return 0;
	}
	if (split_url(url, &p) < 0) {
		if (url[0] == '/') {
			u->type = REPLICA_FILE;
			if (!(u->path = strdup(url)))
				goto oom;
			return 0;
		}
		if (strchr(url, '@'))
			url = "(not shown: it contains user@)";
		snprintf(why, whylen, "invalid replica URL \"%s\" (expected s3://BUCKET/PATH or file:///DIR)",
			 url);
		return -1;
	}
	/* Go's net/url lowercases the scheme: Litestream replicates to "S3://" and "FILE://" */
	bool is_file = p.scheme_len == 4 && strncasecmp(p.scheme, "file", 4) == 0;
	bool is_s3 = p.scheme_len == 2 && strncasecmp(p.scheme, "s3", 2) == 0;
	if (!is_file && !is_s3) {
		*unsupported = true;
		snprintf(why, whylen, "replica URL scheme \"%.*s\" is not supported by litevisor",
			 (int)p.scheme_len, p.scheme);
		return -1;
	}
	/* user:password@ before the host is a credential: never echo such a URL. */
	if (memchr(p.auth, '@', p.auth_len)) {
		snprintf(why, whylen,
			 "a replica URL must not carry credentials (user@host); use access-key-id and "
			 "secret-access-key");
		return -1;
	}
	if (is_file) {
		if (p.auth_len == 0 && p.path_len == 0) {
			snprintf(why, whylen, "invalid file URL \"%s\" (expected file:///ABSOLUTE/DIR)", url);
			return -1;
		}
		if (p.auth_len != 0 && !host_is_dir_part(p.auth, p.auth_len)) {
			snprintf(why, whylen, "invalid file URL \"%s\" (expected file:///ABSOLUTE/DIR)", url);
			return -1;
		}
		u->type = REPLICA_FILE;
		if (!(u->path = file_url_dir(&p, err, sizeof(err))))
			goto bad;
		return 0;
	}
	if (p.auth_len == 0 || p.auth_len >= sizeof(host)) {
		snprintf(why, whylen, "invalid s3 URL \"%s\" (expected s3://BUCKET/PATH)", url);
		return -1;
	}
	memcpy(host, p.auth, p.auth_len);
	host[p.auth_len] = '\0';
	u->type = REPLICA_S3;
	if (!cfg_authority_ok(host, strlen(host))) {
		snprintf(why, whylen, "invalid s3 URL \"%s\": \"%s\" is not a host (HOST, HOST:PORT "
			 "with PORT 1 to 65535, or [IPV6]:PORT)", url, host);
		return -1;
	}
	if (parse_s3_host(host, u) < 0)
		goto oom;
	if (!u->bucket) {
		snprintf(why, whylen, "s3 URL \"%s\" names no bucket (expected s3://BUCKET.%s/PATH)", url,
			 host);
		cfg_url_release(u);
		return -1;
	}
	if (!(u->path = s3_url_prefix(&p, err, sizeof(err))))
		goto bad;
	return 0;
bad:
	cfg_url_release(u);
	snprintf(why, whylen, "invalid replica URL \"%s\": %s", url, err);
	return -1;
oom:
	cfg_url_release(u);
	snprintf(why, whylen, "out of memory");
	return -1;
}

int config_replica_from_url(const char *url, struct cfg_replica *r, char *err, size_t errlen)
{
	struct cfg_url u;
	bool unsupported;
	config_replica_defaults(r);
	if (cfg_parse_url(url, &u, &unsupported, err, errlen) < 0)
		return -1;
	r->type = u.type;
	r->path = u.path;
	r->bucket = u.bucket;
	r->endpoint = u.endpoint;
	r->region = u.region;
	r->force_path_style = u.force_path_style || u.endpoint;
	if (!(r->url = strdup(url)) || !(r->name = strdup(u.type == REPLICA_S3 ? "s3" : "file")))
		goto oom;
	if (u.type == REPLICA_S3 && !r->region && !(r->region = strdup("us-east-1")))
		goto oom;
	return 0;
oom:
	config_replica_release(r);
	snprintf(err, errlen, "out of memory");
	return -1;
}
