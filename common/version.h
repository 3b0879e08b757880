/*
 * version.h — litevisor's version string ("git describe" of the build, or
 * the release number), for `version`, /healthz, /metrics and the User-Agent.
 * Only common/version.c sees the build's stamp, so a new commit rebuilds one
 * object instead of leaving a stale string in the others.
 */
#ifndef LITEVISOR_VERSION_H
#define LITEVISOR_VERSION_H

/* The version string; static storage. */
const char *litevisor_version(void);

#endif
