/*
 * config.h — litevisor's configuration: the Litestream v0.3 `litestream.yml`
 * schema as-is, plus litevisor's own sections.
 *
 * Loading (config_load) parses YAML with libyaml into the structs below and
 * validates everything up front: after a successful load every field holds a
 * usable value (defaults applied, durations in milliseconds, replicas resolved
 * against `stores`, top-level credentials copied into S3 replicas that lack
 * them). Every error names file:line:column and the key; an unknown key gets a
 * "did you mean" hint; a key litevisor does not support is rejected with
 * "not supported by litevisor". Credentials never appear in a message.
 *
 * Ownership: a struct config owns every string and array below it; release it
 * with config_release(). Nothing in it changes after load, so threads may read
 * it without locking (secret files are re-read through common/secret.h).
 *
 * Durations are int64_t milliseconds. 0 means "off" where the key documents it.
 */
#ifndef LITEVISOR_CONFIG_H
#define LITEVISOR_CONFIG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/log.h"

/* A credential given inline or as a file that is re-read when it changes. */
struct cfg_secret {
	char *value; /* inline value (after env expansion), or NULL */
	char *file;  /* path of a file holding it (trailing newline stripped), or NULL */
};

enum replica_type { REPLICA_FILE = 0, REPLICA_S3 };

/*
 * A replica's `age:` encryption (Litestream v0.3.13's keys, X25519 only):
 * raw 32-byte keys decoded from AGE-SECRET-KEY-1… and age1… strings. Objects
 * are written encrypted to every recipient and read with any identity.
 * Config guarantees: set only with at least one identity (reading back a
 * replica needs one, as in Litestream); recipients may be absent only for
 * reading (the engine refuses to write without them); at most
 * CFG_AGE_MAX_RECIPIENTS recipients (a header litevisor reads back).
 */
#define CFG_AGE_MAX_RECIPIENTS 10000

/*
 * What `litevisor config` prints in place of a secret (and of a URL's
 * user:password). Loading it back is refused, naming the key: the secret
 * would otherwise be this text.
 */
#define CFG_REDACTED "<redacted>"
struct cfg_age {
	bool set;                        /* the replica has an age: key */
	unsigned char (*identities)[32]; /* X25519 secret scalars */
	size_t nidentities;
	unsigned char (*recipients)[32]; /* X25519 public keys */
	size_t nrecipients;
};

struct cfg_replica {
	char *name;              /* unique within its db; defaults to store name, else type,
				  * then "-<position>" where that is taken */
	bool name_given;         /* name was set on the replica itself */
	enum replica_type type;
	char *url;               /* as written, or NULL (for messages; never has credentials) */
	char *path;              /* file: directory; s3: key prefix without leading '/' */

	/* S3 */
	char *bucket;
	char *endpoint;          /* "http(s)://host[:port]"; NULL means AWS */
	char *region;            /* default us-east-1 */
	bool force_path_style;   /* path-style addressing (forced on when endpoint is set) */
	bool skip_verify;        /* do not verify TLS certificates */
	char *ca_file;           /* extra CA bundle (readable at load), or NULL */
	struct cfg_secret access_key_id;
	struct cfg_secret secret_access_key;
	struct cfg_secret session_token;
	int64_t connect_timeout_ms; /* default 1000 */
	int64_t idle_timeout_ms;    /* default 5000: a request on which no byte moves this long is abandoned */

	/* Schedule */
	int64_t sync_interval_ms;            /* default 1000; 0 = ship as soon as possible */
	int64_t snapshot_interval_ms;        /* default 0 (only when retention needs one) */
	int64_t retention_ms;                /* default 24h; 0 = keep everything */
	int64_t retention_check_interval_ms; /* default 1h, capped at retention */
	int64_t retention_grace_ms;          /* default 1h: extra age before deletion */
	int64_t writer_check_interval_ms;    /* default 1m: look for another node's generation; 0 = off */

	/* litevisor */
	char *store;             /* name of the `stores` entry it came from, or NULL */
	char *node;              /* node this replica's server lives on, or NULL */
	bool restore_only;       /* a restore source only (also: store on this node) */
	struct cfg_age age;      /* encryption; age.set false: plain LZ4 objects */
	int line, column;        /* where it was defined */
};

struct cfg_db {
	char *path;              /* absolute, lexically clean path of the database file */
	char *name;              /* label for logs/metrics; default: file name */
	char *meta_path;         /* litevisor's state dir; default <dir>/.<file>-litevisor */
	char *env;               /* env var the service gets with the path; default LITEVISOR_DB_<NAME> */
	bool optional;           /* `run` may start the service without it */
	int64_t monitor_interval_ms;     /* default 1000 (polling fallback to inotify) */
	int64_t checkpoint_interval_ms;  /* default 60000 */
	int64_t min_checkpoint_page_count; /* default 1000 */
	int64_t max_checkpoint_page_count; /* default 10000; 0 disables RESTART */
	int64_t truncate_page_count;       /* default 500000 */
	int64_t max_backlog_bytes;         /* default 1 GiB: local backlog cap per db; 0 = no cap */
	struct cfg_replica *replicas;
	size_t nreplicas;
	int line, column;
};

enum restore_mode { RESTORE_FRESHEST_REACHABLE = 0, RESTORE_ALL, RESTORE_QUORUM };
enum restore_existing { EXISTING_NEWEST_WINS = 0, EXISTING_KEEP_LOCAL };
enum restore_verify { VERIFY_QUICK = 0, VERIFY_INTEGRITY, VERIFY_NONE };

struct cfg_restore {
	int64_t probe_timeout_ms;   /* default 1000: deadline of one candidate's probe */
	enum restore_mode mode;     /* freshest-reachable (default) | all | quorum */
	int quorum;                 /* with mode quorum: how many must answer */
	int64_t wait_timeout_ms;    /* all/quorum: how long to wait for answers; default 30s */
	bool allow_empty_unreachable; /* start empty when no candidate answers; default false */
	enum restore_existing existing; /* default newest-wins */
	enum restore_verify verify; /* default quick */
	int parallelism;            /* default 8 */
	int64_t clock_skew_ms;      /* default 10s: margin when comparing object times */
	int64_t handover_wait_ms;   /* default 20s: a writer that may still be stopping; 0 = off */
	int keep_replaced;          /* moved-aside copies kept per database; 0 (default) = all */
};

enum restart_policy { RESTART_NEVER = 0, RESTART_ON_FAILURE };

/* Where a value was written in the file (1-based), for messages about it after load. */
struct cfg_where {
	int line, column;
};

struct cfg_supervisor {
	char *user;                 /* run the service as this user, or NULL */
	char *group;                /* primary group, or NULL (the user's) */
	char **groups;              /* supplementary groups; NULL-terminated, or NULL */
	/* where user, group and each groups entry were written: names are looked up at start */
	struct cfg_where user_at, group_at, *groups_at;
	int64_t stop_grace_ms;      /* TERM → KILL; default 10s */
	int64_t flush_timeout_ms;   /* final flush deadline; default 5s */
	bool signal_group;          /* forward signals to the service's process group */
	bool new_process_group;     /* put the service in its own group; default false */
	enum restart_policy restart;
	int restart_limit;          /* default 5 */
	int64_t restart_delay_ms;   /* first backoff; default 1s, doubled up to restart_delay_max */
	int64_t restart_delay_max_ms; /* default 60s */
	int64_t restart_reset_ms;   /* a run at least this long ends a series of restarts; 10s */
};

struct cfg_health {
	char *port_label;           /* bind NOMAD_PORT_<label> when set in the env */
	char *probe_url;            /* service's own readiness URL (e.g. radarr /ping), or NULL */
	int64_t probe_interval_ms;  /* default 5s */
	int64_t probe_timeout_ms;   /* default 2s */
	bool probe_skip_verify;     /* do not verify the probe's TLS certificate (self-signed) */
	int64_t fail_after_ms;      /* replication failing this long → fail; 0 = never; default 0 */
	char *push_url;             /* Uptime-Kuma push URL (…/api/push/<token>), or NULL */
	int64_t push_interval_ms;   /* default 60s */
};

/*
 * The `consul:` section (litevisor's own; consul/ uses it). Registration is
 * on when service_name is set, the single-writer lock when lock_key is set.
 * addr, token and ca_file left unset fall back at use time to Consul's own
 * variables ($CONSUL_HTTP_ADDR, $CONSUL_HTTP_TOKEN(_FILE), $CONSUL_CACERT).
 * Config guarantees: addr with a host and a port of 1..65535 (none only
 * after a scheme); an inline token without a line break (it could never be sent as
 * a header); token_file and ca_file (or, when it is unset and Consul is used,
 * $CONSUL_CACERT's file) readable at load; service_port_label
 * [A-Za-z0-9_]+ (Nomad's port labels); lock_key at most CFG_CONSUL_KEY_MAX bytes, without
 * empty, "." or ".." segments; lock_ttl_ms within Consul's 10 s..24 h;
 * lock_delay_ms within 0..60 s and at least supervisor stop-grace +
 * flush-timeout (a lost lock's stop ends inside the delay that keeps the next
 * writer out; default that sum + 1 s); check_ttl_ms at least 5 s;
 * deregister_after_ms 0 or at least Consul's 1 min.
 */
#define CFG_CONSUL_KEY_MAX 512
struct cfg_consul {
	char *addr;                  /* "http(s)://host:port" or "host:port", or NULL */
	struct cfg_secret token;     /* ACL token (X-Consul-Token), or unset */
	char *ca_file;               /* CA bundle for https, or NULL */
	int64_t timeout_ms;          /* one request; default 5s */
	/* registration */
	char *service_name;          /* NULL: no registration */
	char *service_id;            /* NULL: <name>-<$NOMAD_ALLOC_ID>, else <name>-<hostname> */
	char *service_address;       /* NULL: $NOMAD_IP_<label> with a port label, else the agent's */
	int service_port;            /* 0: none (or from the label) */
	char *service_port_label;    /* Nomad port label: $NOMAD_HOST_PORT_<l>, else $NOMAD_PORT_<l> */
	char **service_tags;         /* NULL-terminated, or NULL */
	char **service_meta;         /* key, value, key, value, …, NULL; or NULL */
	int64_t check_ttl_ms;        /* TTL check driven from /healthz; default 30s, at least 5s */
	int64_t deregister_after_ms; /* DeregisterCriticalServiceAfter; default 10m; 0 = never */
	/* single-writer lock */
	char *lock_key;              /* KV key; NULL: no lock */
	int64_t lock_ttl_ms;         /* session TTL; default 15s */
	int64_t lock_delay_ms;       /* session LockDelay; default stop-grace + flush-timeout + 1s */
	int64_t lock_wait_ms;        /* how long to wait for the lock; default 5m; 0 = no limit */
};
struct config {
	char *file;                 /* path it was loaded from, or NULL */
	char *addr;                 /* HTTP listen address ("127.0.0.1:9090", ":9090"), or NULL */
	char *exec;                 /* command line for the service, or NULL */
	char *exec_unset;           /* an unset variable exec expanded (to nothing), or NULL */
	char *node;                 /* this node's name (for `stores.*.node`), or NULL */
	enum log_level log_level;   /* logging.level, default info */
	bool log_json;              /* logging.type: json */
	struct cfg_restore restore;
	struct cfg_supervisor supervisor;
	struct cfg_health health;
	struct cfg_consul consul;
	struct cfg_db *dbs;
	size_t ndbs;
	/*
	 * Nothing said about databases where something was expected: a file
	 * with no setting at all (empty, comments only), or "dbs:" with no
	 * value. What a template renders when its data is missing.
	 */
	bool dbs_blank;
};

struct config_options {
	bool no_expand_env;         /* -no-expand-env: leave $VAR as written */
};

/*
 * Find the config file: explicit (from -config) if given, else
 * $LITEVISOR_CONFIG, $LITESTREAM_CONFIG, /etc/litevisor.yml, or
 * /etc/litestream.yml when only that one exists (Litestream's default).
 * An empty -config (explicit_path "") or a variable set but empty is an
 * error, never a fallback: a wrapper's `-config "$CFG"` with CFG unset
 * must not start the service without its config and restore.
 * Returns a static or environment string (do not free), or NULL with why
 * set, naming the flag or the variable.
 */
const char *config_default_path(const char *explicit_path, char *why, size_t len);

/*
 * True when nothing named a config file (no -config, neither variable set),
 * so config_default_path() falls back to /etc/litevisor.yml (or
 * /etc/litestream.yml). A file named
 * on purpose must exist; only the fallback may be absent (run with a command).
 * False when the name is an error (empty flag or variable).
 */
bool config_path_is_fallback(const char *explicit_path);

/*
 * True when nothing at all is at path. A symbolic link to nowhere (a config
 * on a volume not mounted yet) is not absent: a config was meant there, and
 * loading it names the missing target rather than starting without it.
 */
bool config_path_absent(const char *path);

/*
 * Load and validate a config file into *cfg (which must be zeroed or fresh).
 * On failure returns -1, leaves *cfg released, and writes one message into
 * err (file:line:col: key: what is wrong [; did you mean "x"?]).
 */
int config_load(const char *path, const struct config_options *opt, struct config *cfg,
		char *err, size_t errlen);

/* Same, from a string already in memory; `name` is used in messages. */
int config_load_string(const char *text, const char *name, const struct config_options *opt,
		       struct config *cfg, char *err, size_t errlen);

/* Fill defaults for a config built in code (e.g. from a replica URL). */
void config_defaults(struct config *cfg);
void config_db_defaults(struct cfg_db *db);
void config_replica_defaults(struct cfg_replica *r);

/*
 * The default environment variable of a database named name into buf:
 * LITEVISOR_DB_<NAME>, ASCII letters upper-cased, digits kept, any other
 * character (a UTF-8 sequence counts as one) turned into one '_'.
 */
void config_db_env_name(const char *name, char *buf, size_t len);

/*
 * The value of a variable the service gets from litevisor (supervisor/svcenv.h):
 * a database's `env` (its path), and LITESTREAM_DB_PATH when exactly one database
 * is configured. NULL for any other name. `exec` expands these before the
 * environment, so `exec: app --db $LITEVISOR_DB_APP` gets what the service sees.
 */
const char *config_service_var(const struct config *cfg, const char *name);

/*
 * Build a replica from a URL (file:///path, /path, s3://bucket/prefix, with
 * Litestream's host shortcuts such as bkt.localhost:9000). Used by CLI
 * commands that take a replica URL. Returns 0 or -1 with err set.
 */
int config_replica_from_url(const char *url, struct cfg_replica *r, char *err, size_t errlen);

/*
 * Litestream names a replica by its type and lets two share it (an S3 peer and an
 * S3 NAS, neither named). Names here key logs, metrics, -replica and the failure
 * records, so a default name already taken (by a given name, or an earlier replica)
 * becomes "<default>-<position>" (s3, s3-2), or the next free number past that.
 * Names given on the replica (name_given) are kept. Returns 0, or -1 out of memory.
 */
int config_unique_replica_names(struct cfg_db *db);

/*
 * Split an addr value into host and port: "HOST:PORT", "[IPV6]:PORT" (host
 * without its brackets) or ":PORT" (host "": every interface), split at the
 * last ':' (so "::1:9090" is host "::1"). PORT is 0 to 65535 in decimal
 * digits; a '[' or ']' anywhere but around the whole host is refused.
 * Returns 0, or -1 if addr is none of these or a part does not fit.
 */
int config_addr_split(const char *addr, char *host, size_t hostlen, char *port, size_t portlen);

/*
 * Make a database or file replica path absolute exactly as config_load does:
 * "~/" against $HOME (else the password file's home), a relative path
 * against the working directory ($PWD when it names it, as Go's os.Getwd; no
 * symlink resolution), cleaned lexically as Litestream's filepath.Abs does
 * ("/a//b/./c/../" is "/a/b"). Returns a malloc'd path, or NULL with err set
 * (empty path, no home, no working directory, too long).
 */
char *config_abs_path(const char *p, char *err, size_t errlen);

/*
 * A database path that is a symlink to the file itself: SQLite follows the
 * link and keeps the -wal and -shm beside its target, so litevisor would
 * watch a WAL nobody writes and ship nothing after the first snapshot. Such
 * a path is refused, naming the target to give instead (a symlinked
 * directory is fine: the -wal is beside the link either way). Returns 0, or
 * -1 with why set ("… is a symlink to …").
 */
int config_db_path_check(const char *path, char *why, size_t len);

/*
 * A database file name too long for the names given beside it: SQLite's
 * "-journal", and a move aside's ".replaced-<RFC 3339 time>.<n>" after one of
 * them (CONFIG_DB_NAME_ROOM bytes in all) must fit the file system's
 * NAME_MAX (255). Else the failure came late and named a file the user never
 * gave ("cannot move a file aside …-wal: File name too long"). Also called by
 * config_db_path_check. Returns 0, or -1 with why set.
 */
#define CONFIG_DB_NAME_ROOM (sizeof("-journal.replaced-2026-12-07T00:20:41.719Z.999") - 1)
int config_db_name_check(const char *path, char *why, size_t len);

/*
 * A Consul agent address as consul.addr takes it (and CONSUL_HTTP_ADDR, so
 * that one the key would refuse is not used for lock.wait and then 111):
 * HOST:PORT, [IPV6]:PORT or http(s)://HOST[:PORT], no credentials, path or
 * query. Returns 0, or -1 with why set (never echoing a user@ part).
 */
int cfg_consul_addr_check(const char *addr, char *why, size_t whylen);

/* Release everything *cfg owns and zero it. Safe on a zeroed struct. */
void config_release(struct config *cfg);
void config_replica_release(struct cfg_replica *r);

#endif
