/*
 * config_int.h — internals shared by common/config*.c; not for use outside.
 *
 *   config.c          entry points, defaults, release
 *   config_url.c      replica URLs
 *   config_yaml.c     YAML text → node tree (libyaml events)
 *   config_walk.c     the generic table-driven walk over one map
 *   config_schema.c   top level, logging, dbs, restore, supervisor, health
 *   config_replica.c  stores and replicas
 *   config_dups.c     unique files, names and replica destinations across dbs
 *
 * The YAML text is first read into a small tree of nodes, so the schema
 * walk can look at a whole map at once: detect
 * duplicate keys, report each key and value at its own line and column, and
 * resolve replicas against `stores` in any order. All nodes of one document
 * live in one arena and are freed together; aliases point at the anchored node.
 */
#ifndef LITEVISOR_CONFIG_INT_H
#define LITEVISOR_CONFIG_INT_H

#include <stdbool.h>
#include <stddef.h>

#include "common/config.h"

/* Longest config file accepted: a config is a few KiB; this bounds memory. */
#define CFG_MAX_FILE (1024 * 1024)
/* Deepest nesting accepted (the schema needs 4 levels). */
#define CFG_MAX_DEPTH 32

enum cfg_node_kind { CN_SCALAR, CN_MAP, CN_SEQ };

struct cfg_node {
	enum cfg_node_kind kind;
	int line, column;          /* 1-based position of the node's start */
	char *value;               /* scalar text as written (before env expansion) */
	bool plain;                /* scalar was unquoted (so "~", "null", "" mean null) */
	bool aliased;              /* an alias (*name) elsewhere refers to this node */
	struct cfg_node **items;   /* map: key,value,key,value…; seq: items */
	size_t nitems;             /* number of pointers in items */
	size_t cap;
	struct cfg_node *next_alloc; /* arena chain */
};

struct cfg_doc {
	struct cfg_node *root;     /* NULL for an empty document */
	struct cfg_node *arena;
};

/* An error sink: "NAME:LINE:COL: PATH: message". */
struct cfg_err {
	const char *name;          /* file name used in messages */
	char *buf;
	size_t len;
	const struct cfg_node *at; /* the node of the last error, or NULL */
};

/*
 * Parse YAML text into doc. Returns 0, or -1 with a "NAME:LINE:COL: message"
 * error written to e. The caller frees doc with cfg_doc_free in both cases.
 */
int cfg_yaml_parse(const char *text, size_t len, struct cfg_doc *doc, struct cfg_err *e);
void cfg_doc_free(struct cfg_doc *doc);

/* True if a scalar node is YAML null (plain "", "~", "null"). */
bool cfg_node_is_null(const struct cfg_node *n);

/* Write "NAME:LINE:COL: PATH: message" for node n (n may be NULL: no position). */
void cfg_error(struct cfg_err *e, const struct cfg_node *n, const char *path, const char *fmt, ...)
	__attribute__((format(printf, 4, 5)));

/* Walk the parsed document into cfg. Returns 0 or -1 with e written. */
int cfg_schema_load(const struct cfg_doc *doc, const struct config_options *opt,
		    struct config *cfg, struct cfg_err *e);

/* Levenshtein distance, capped: returns at most cap + 1. */
int cfg_edit_distance(const char *a, const char *b, int cap);

/* A replica URL taken apart (Litestream's rules, host shortcuts included). */
struct cfg_url {
	enum replica_type type;
	char *bucket;              /* s3 */
	char *path;                /* file: absolute dir; s3: prefix without leading '/' */
	char *endpoint;            /* from a host shortcut, or NULL */
	char *region;              /* from a host shortcut, or NULL */
	bool force_path_style;     /* true for every shortcut (non-AWS) host */
};

/*
 * Parse url into u (strings malloc'd; release with cfg_url_release).
 * Returns 0, or -1 with why; an unsupported scheme sets *unsupported.
 */
int cfg_parse_url(const char *url, struct cfg_url *u, bool *unsupported, char *why, size_t whylen);

/*
 * Is a[0..len) a URL authority without credentials: HOST, HOST:PORT,
 * [IPV6] or [IPV6]:PORT, with a non-empty host and PORT 1 to 65535 in
 * decimal digits? Brackets and ':' in the host only as [IPV6].
 */
bool cfg_authority_ok(const char *a, size_t len);

/*
 * Can host[0..len) be connected to or listened on: an IPv4 address (a host
 * of digits and dots must be one: "1.2.3.4.5" is not), an IPv6 address
 * (brackets taken off; a %zone allowed), or a DNS name (labels of ASCII
 * letters, digits, '-' and '_', 1 to 63 bytes each, 253 in all, a final
 * '.' allowed)? Not whether it resolves: that is for the time of use.
 */
bool cfg_host_ok(const char *host, size_t len);

/*
 * What is wrong with a[0..len) as the authority of an http(s) URL (user@
 * already taken off or refused): NULL when cfg_authority_ok would take it,
 * else a reason that never quotes a[] ("has no host", "the port is not a
 * number from 1 to 65535", …), so a URL carrying a token is not echoed.
 */
const char *cfg_authority_problem(const char *a, size_t len);
void cfg_url_release(struct cfg_url *u);

/*
 * Clean an S3 key prefix in place as Litestream does (path.Clean under a
 * root, leading '/' dropped): "/a//b/./c/../" is "a/b", "/" and "." are "".
 */
void cfg_clean_prefix(char *p);

/*
 * Where config_default_path() looks when nothing names a file (defaults
 * /etc/litevisor.yml, then /etc/litestream.yml): the unit tests point them
 * at files of their own (NULL: the default). The strings must outlive
 * every use.
 */
void config_set_system_paths(const char *litevisor, const char *litestream);

#endif
