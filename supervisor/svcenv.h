/*
 * svcenv.h — the service's environment: litevisor's own, plus one variable
 * per database holding its path (cfg_db.env, default LITEVISOR_DB_<NAME>),
 * plus LITESTREAM_DB_PATH when exactly one database is configured (what
 * Litestream's `replicate -exec` users know, Litestream PR #339), plus
 * HOME, USER and LOGNAME of the configured user when the service switches
 * user (as su/s6-setuidgid would). A set variable replaces an inherited one.
 */
#ifndef LITEVISOR_SUP_SVCENV_H
#define LITEVISOR_SUP_SVCENV_H

#include "common/config.h"
#include "supervisor/child.h"

/* Build it. Returns a NULL-terminated array (free with svcenv_free), or NULL on ENOMEM. */
char **svcenv_build(const struct config *cfg, const struct child_creds *creds);

/* The variable name for db (its `env`, else LITEVISOR_DB_<NAME> upper-cased, non-alnum → '_'). */
void svcenv_db_var(const struct cfg_db *db, char *buf, size_t len);

void svcenv_free(char **env);

#endif
