/* lazy_curl.c — the libcurl functions litevisor calls, forwarded to the loaded library. */
#define CURL_DISABLE_TYPECHECK /* our definitions must not be macro-expanded */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <curl/curl.h>

#include "common/lazy_curl.h"
#include "common/lazylib.h"
#include "common/banned.h"

#ifndef LAZY_CURL_SONAME
#define LAZY_CURL_SONAME "libcurl.so.4"
#endif

static struct {
	__typeof__(curl_global_init) *curl_global_init;
	__typeof__(curl_easy_init) *curl_easy_init;
	__typeof__(curl_easy_cleanup) *curl_easy_cleanup;
	__typeof__(curl_easy_reset) *curl_easy_reset;
	__typeof__(curl_easy_perform) *curl_easy_perform;
	__typeof__(curl_easy_setopt) *curl_easy_setopt;
	__typeof__(curl_easy_getinfo) *curl_easy_getinfo;
	__typeof__(curl_easy_strerror) *curl_easy_strerror;
	__typeof__(curl_getdate) *curl_getdate;
	__typeof__(curl_slist_append) *curl_slist_append;
	__typeof__(curl_slist_free_all) *curl_slist_free_all;
	__typeof__(curl_version) *curl_version;
} fn;

#define SYM(n) LAZYLIB_SYM(fn, n)
static const struct lazylib_sym syms[] = {
	SYM(curl_global_init),  SYM(curl_easy_init),     SYM(curl_easy_cleanup),
	SYM(curl_easy_reset),   SYM(curl_easy_perform),  SYM(curl_easy_setopt),
	SYM(curl_easy_getinfo), SYM(curl_easy_strerror), SYM(curl_getdate),
	SYM(curl_slist_append), SYM(curl_slist_free_all), SYM(curl_version),
};

static int global_init(char *err, size_t errlen);
static struct lazylib lib = LAZYLIB_INIT(LAZY_CURL_SONAME, "libcurl4", syms, global_init);

#define F(n) LAZYLIB_FN(lib, fn, n)

/* The hosts no request goes to through a proxy (lazy_curl_defaults), set once at load. */
static char *noproxy;
#define LOOPBACK_HOSTS "localhost,127.0.0.0/8,::1"

/*
 * The user's no_proxy (libcurl reads it first) or NO_PROXY, and loopback:
 * as Go's ProxyFromEnvironment (Litestream, Nomad, Consul), a loopback host
 * is never proxied. Set, CURLOPT_NOPROXY replaces the variables, so it
 * carries theirs on. ("*": nothing is proxied; CIDR needs libcurl 7.86.)
 */
static int noproxy_init(char *err, size_t errlen)
{
	const char *env = getenv("no_proxy");
	if (!env || !*env)
		env = getenv("NO_PROXY");
	if (env && !strcmp(env, "*"))
		noproxy = strdup("*");
	else if (env && *env && asprintf(&noproxy, "%s,%s", env, LOOPBACK_HOSTS) < 0)
		noproxy = NULL;
	else if (!env || !*env)
		noproxy = strdup(LOOPBACK_HOSTS);
	if (!noproxy) {
		snprintf(err, errlen, "out of memory");
		return -1;
	}
	return 0;
}

static int global_init(char *err, size_t errlen)
{
	/*
	 * CURL_GLOBAL_DEFAULT sets up OpenSSL. Debian's libcurl reports the
	 * "threadsafe" feature; calls are serialised here in any case, and no
	 * thread can use libcurl before this returns.
	 */
	CURLcode rc = fn.curl_global_init(CURL_GLOBAL_DEFAULT);
	if (rc != CURLE_OK) {
		snprintf(err, errlen, "libcurl initialisation failed (code %d)", (int)rc);
		return -1;
	}
	return noproxy_init(err, errlen);
}

int lazy_curl_load(char *err, size_t errlen)
{
	return lazylib_load(&lib, err, errlen);
}

CURL *curl_easy_init(void) { return F(curl_easy_init)(); }
void curl_easy_cleanup(CURL *h) { F(curl_easy_cleanup)(h); }
void curl_easy_reset(CURL *h) { F(curl_easy_reset)(h); }
CURLcode curl_easy_perform(CURL *h) { return F(curl_easy_perform)(h); }
const char *curl_easy_strerror(CURLcode c) { return F(curl_easy_strerror)(c); }
time_t curl_getdate(const char *s, const time_t *unused) { return F(curl_getdate)(s, unused); }
struct curl_slist *curl_slist_append(struct curl_slist *l, const char *s)
{
	return F(curl_slist_append)(l, s);
}
void curl_slist_free_all(struct curl_slist *l) { F(curl_slist_free_all)(l); }
char *curl_version(void) { return F(curl_version)(); }

/*
 * The option's number tells the type of its one argument (CURLOPTTYPE_*),
 * which is how libcurl itself reads it back with va_arg.
 */
CURLcode curl_easy_setopt(CURL *h, CURLoption opt, ...)
{
	va_list ap;
	CURLcode rc;
	va_start(ap, opt);
	if (opt < CURLOPTTYPE_OBJECTPOINT)
		rc = F(curl_easy_setopt)(h, opt, va_arg(ap, long));
	else if (opt < CURLOPTTYPE_FUNCTIONPOINT)
		rc = F(curl_easy_setopt)(h, opt, va_arg(ap, void *));
	else if (opt < CURLOPTTYPE_OFF_T)
		rc = F(curl_easy_setopt)(h, opt, va_arg(ap, void (*)(void)));
	else if (opt < CURLOPTTYPE_BLOB)
		rc = F(curl_easy_setopt)(h, opt, va_arg(ap, curl_off_t));
	else
		rc = F(curl_easy_setopt)(h, opt, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

/* Every CURLINFO_* takes one pointer to where the answer goes. */
CURLcode curl_easy_getinfo(CURL *h, CURLINFO info, ...)
{
	va_list ap;
	va_start(ap, info);
	CURLcode rc = F(curl_easy_getinfo)(h, info, va_arg(ap, void *));
	va_end(ap);
	return rc;
}

static curl_socket_t open_cloexec(void *ctx, curlsocktype purpose, struct curl_sockaddr *a)
{
	(void)ctx, (void)purpose;
	int fd = socket(a->family, a->socktype | SOCK_CLOEXEC, a->protocol);
	return fd < 0 ? CURL_SOCKET_BAD : fd;
}

void lazy_curl_defaults(void *h)
{
	curl_easy_setopt(h, CURLOPT_OPENSOCKETFUNCTION, open_cloexec);
	curl_easy_setopt(h, CURLOPT_NOPROXY, noproxy);
}
