/*
 * lazy_mhd.h — libmicrohttpd, loaded on first use (see common/lazylib.h).
 * Only the supervisor's health/metrics server uses it; http_start loads it.
 * The forwarded functions are those listed in common/lazy_mhd.c.
 */
#ifndef LITEVISOR_LAZY_MHD_H
#define LITEVISOR_LAZY_MHD_H

#include <stddef.h>

/* Load libmicrohttpd once per process (thread-safe). Returns 0, or -1 with the cause in err. */
int lazy_mhd_load(char *err, size_t errlen);

#endif
