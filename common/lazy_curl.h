/*
 * lazy_curl.h — libcurl, loaded on first use (see common/lazylib.h).
 *
 * Code that uses libcurl includes <curl/curl.h> as usual and calls
 * lazy_curl_load() first, where a failure can be reported: the S3 client
 * when a storage is opened, the supervisor before its HTTP probes, `version`.
 * The forwarded functions are exactly those litevisor calls; add one to
 * common/lazy_curl.c when code starts calling it (the link fails until then).
 */
#ifndef LITEVISOR_LAZY_CURL_H
#define LITEVISOR_LAZY_CURL_H

#include <stddef.h>

/*
 * Load libcurl and run curl_global_init(CURL_GLOBAL_DEFAULT), once per
 * process. Thread-safe: calls are serialised and libcurl is not used before
 * it returns. Returns 0, or -1 with the cause in err (may be NULL).
 */
int lazy_curl_load(char *err, size_t errlen);

/*
 * What every request of curl handle h needs, set again after each
 * curl_easy_reset: its sockets close-on-exec from their creation (libcurl
 * 7.88 opens them without it: a service started by fork/exec must not
 * inherit litevisor's connections, docs/supervisor.md), and no proxy for a
 * loopback host (or a subdomain of localhost) whatever $http_proxy says, as
 * Go's clients (Litestream, Nomad, Consul) do for loopback: a proxy must not
 * answer a health probe of the local service, nor receive a local Consul
 * agent's token ($no_proxy still holds).
 */
void lazy_curl_defaults(void *h);

#endif
