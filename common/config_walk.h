/*
 * config_walk.h — the table-driven walk over a parsed YAML map, shared by
 * config_schema.c (the tables and the top level) and config_replica.c
 * (stores and replicas). Internal to common/config*.c.
 *
 * A table lists the keys valid in one map; walking a map checks each key
 * (unknown → "did you mean", unsupported → why, duplicate → where first),
 * converts its value into the target struct at the field's offset, and
 * records the value node in at[] so later checks can point at it.
 */
#ifndef LITEVISOR_CONFIG_WALK_H
#define LITEVISOR_CONFIG_WALK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/config_int.h"
#include "common/envexpand.h"

enum fkind {
	F_STR,         /* char * */
	F_SECRET,      /* char * holding a credential (never shown in messages) */
	F_SECRET_FILE, /* char * path of a credential file */
	F_BOOL,        /* bool */
	F_DUR,         /* int64_t ms */
	F_INT,         /* int, within [min, max] */
	F_INT64,       /* int64_t, within [min, max] */
	F_SIZE,        /* int64_t bytes */
	F_ENUM,        /* int-sized enum: index into names */
	F_CUSTOM,      /* handled by fn */
	F_UNSUPPORTED, /* rejected with why */
};

/* Where a field may appear, for tables shared by stores and replicas. */
#define ON_REPLICA 1u
#define ON_STORE   2u
#define ON_ALL     3u

struct walk;
struct field;

typedef int (*field_fn)(struct walk *w, const struct field *f, const struct cfg_node *v,
			const char *path, void *target);

struct field {
	const char *key;
	enum fkind kind;
	size_t off;
	unsigned where;            /* ON_* mask (0 means everywhere) */
	int64_t min, max;          /* F_INT/F_INT64 range */
	const char *const *names;  /* F_ENUM values, NULL-terminated */
	field_fn fn;               /* F_CUSTOM */
	const char *why;           /* F_UNSUPPORTED reason; F_DUR: why 0 is refused */
	bool s3_only;              /* meaningless for file replicas */
};

struct store;

/* The replica/store table (config_replica.c), by index. */
enum {
	RF_TYPE, RF_NAME, RF_URL, RF_PATH, RF_BUCKET, RF_ENDPOINT, RF_REGION, RF_FPS, RF_SKIPV,
	RF_CAFILE, RF_AKID, RF_AKID_FILE, RF_SAK, RF_SAK_FILE, RF_TOKEN, RF_TOKEN_FILE, RF_CONNECT, RF_IDLE,
	RF_NODE, RF_SYNC, RF_SNAP, RF_RET, RF_RETCHECK, RF_GRACE, RF_WRITERS, RF_VALID, RF_STORE,
	RF_RESTORE_ONLY, RF_AGE, RF_ACCOUNT_NAME, RF_ACCOUNT_KEY, RF_HOST, RF_USER, RF_PASSWORD,
	RF_KEYPATH, RF_N
};
#define AT_REPLICA_MAX RF_N
extern const struct field replica_tab[RF_N];

struct walk {
	const struct config_options *opt;
	struct cfg_err *e;
	struct config *cfg;
	const struct cfg_node *stores_node, *dbs_node, *restore_node;
	const struct cfg_node *quorum_node, *mode_node;
	const struct cfg_node *lock_node, *lock_delay_node; /* consul.lock, its lock-delay */
	struct store *stores;
	size_t nstores;
	/* top-level credentials, copied into S3 replicas lacking them */
	struct cfg_secret top_akid, top_sak;
	/* variables looked up before the environment (NULL: getenv only) */
	envexpand_lookup lookup;
	void *lookup_ctx;
	bool unquoted;             /* the last value expanded was a quoted string from the
				      environment, read as YAML reads one (common/yamlquote.h) */
	int merge_depth;           /* "<<" merge keys being walked */
	int merges;                /* "<<" merge keys walked so far */
	struct walk_unset {        /* values that named an unset variable */
		const struct cfg_node *node;
		char *name;
	} *unset;
	size_t nunset, capunset;
};

/* Join a map path and a key: "dbs[0]" + "path" → "dbs[0].path". */
void walk_path(char *buf, size_t len, const char *path, const char *key);

/* Walk map node m with table tab (n entries) in context `where`. */
int walk_map(struct walk *w, const struct cfg_node *m, const char *path, const struct field *tab,
	     size_t n, unsigned where, void *target, const struct cfg_node **at);

/*
 * Get a scalar's text after env expansion (malloc'd into *out; NULL for a
 * YAML null). secret: messages never quote the value. Returns 0 or -1.
 */
int walk_scalar(struct walk *w, const struct cfg_node *v, const char *path, bool secret,
		char **out);

/*
 * A value that may be absent, as Litestream reads a duration, number,
 * boolean or choice: a YAML null ("key:", "~") or a plain scalar expanding
 * to nothing (an unset $VAR) gives no value, and the default stays; a quoted
 * "" is an error. Returns 0 with the text in *out (malloc'd), 1 for no value,
 * -1 on error.
 */
int walk_optional(struct walk *w, const struct cfg_node *v, const char *path, char **out);

/*
 * A value split into shell words later (`exec`): expanded as envexpand_words()
 * does, with w->lookup; an empty result is NULL (an unquoted value of
 * blanks only is empty: expand()).
 * Returns 0 or -1.
 */
int walk_words(struct walk *w, const struct cfg_node *v, const char *path, char **out);

/* Like walk_scalar but an empty result is an error naming the unset variable. */
int walk_required(struct walk *w, const struct cfg_node *v, const char *path, char **out);
int walk_required_ex(struct walk *w, const struct cfg_node *v, const char *path, bool secret,
		     char **out);

/*
 * A list of non-empty strings into *slot (NULL-terminated, replacing what was
 * there); YAML null leaves it. what names the expected value in messages
 * ("a list of group names"). Returns 0 or -1.
 */
int walk_string_list(struct walk *w, const struct cfg_node *v, const char *path, const char *what,
		     char ***slot);

/* The `consul:` section into ((struct config *)target)->consul (config_consul.c). */
int cfg_set_consul(struct walk *w, const struct field *f, const struct cfg_node *v,
		   const char *path, void *target);
/* After every section: consul.lock.lock-delay against the supervisor's stop. */
int cfg_check_consul(struct walk *w);

/* "a map", "a list", "a value": for type-mismatch messages. */
const char *walk_kind_name(const struct cfg_node *n);

/* The unset variable value node v named, or NULL. */
const char *walk_unset_var(const struct walk *w, const struct cfg_node *v);

/*
 * "environment variable A is not set" or "environment variables A, B are not
 * set" for names as walk_unset_var gives them.
 */
const char *walk_unset_phrase(char *buf, size_t len, const char *names);

/* " (environment variable X is not set)" for the first of nodes that named one, else "". */
void walk_unset_note(char *buf, size_t len, const struct walk *w, const struct cfg_node *const *nodes,
		     size_t n);

/*
 * A database's or replica's name appears in log fields, metric labels and
 * JSON: at most CFG_NAME_MAX bytes, no '"', '\\' or control character.
 * Returns 0, or -1 with the error set at `at`. A name derived from a file
 * name is made to fit instead (cfg_name_fit).
 */
#define CFG_NAME_MAX 63 /* the status copies hold 64 bytes */
int walk_check_name(struct walk *w, const struct cfg_node *at, const char *path, const char *name);
void cfg_name_fit(char *name);

/* Free what the walk itself holds. */
void walk_release(struct walk *w);

/* Parse true/false, yes/no, on/off, y/n (any case: YAML 1.1, as yaml.v2). Returns 0 or -1. */
int walk_parse_bool(const char *s, bool *out);

/*
 * Parse an integer as Litestream's yaml.v2 reads one: '_' ignored, 0x/0o/0b
 * prefixes, a leading 0 octal ("01750" is 1000), else a float that is a whole
 * number ("1e4"). Returns 0, or -1.
 */
int walk_parse_int(const char *s, long long *out);

/* The value of key in map m, or NULL. */
const struct cfg_node *walk_map_get(const struct cfg_node *m, const char *key);

/* Where a key not valid in table `here` does belong ("supervisor:"), or NULL. */
const char *cfg_other_place(const char *key, const struct field *here);

/* Check that a credential file is a regular file that opens for reading; error at v. */
int cfg_check_readable(struct walk *w, const struct cfg_node *v, const char *path, const char *file);

/*
 * Check a credential at load: its file opens, and the value (inline, or the
 * file's unless empty: it may be filled after the start) is one line; errors
 * at vn/vpath for the value, fn/fpath for the file.
 */
int cfg_check_secret(struct walk *w, const struct cfg_secret *s, const struct cfg_node *vn,
		     const char *vpath, const struct cfg_node *fn, const char *fpath);

/*
 * Check that a ca-file opens and holds a PEM certificate: libcurl reads
 * nothing else there, and every request would fail at run (exit 111, "try
 * again", a restart loop) for a DER file or a key named by mistake.
 */
int cfg_check_ca_file(struct walk *w, const struct cfg_node *v, const char *path, const char *file);

/*
 * Make p absolute ("~/" → $HOME, else the password file's home; relative →
 * the working directory, $PWD when it names it, as Go's os.Getwd) and clean
 * it lexically (pathnorm_clean, as Litestream does). Returns malloc'd or NULL.
 */
char *cfg_abs_path(const char *p);

/* Stores and replicas (config_replica.c). */
int walk_stores(struct walk *w);
int walk_replicas(struct walk *w, const struct cfg_node *seq, const char *path, struct cfg_db *db);

/*
 * Once every db is walked (seq: the dbs list), config_dups.c: refuse two
 * replicas writing to one place (a file replica's directory compared as a
 * file, through symlinks); give databases sharing a default name longer
 * ones ("radarr/logs.db"); refuse two databases with one file, name or env
 * variable. Each path is resolved once; n log n. Return 0 or -1 (error in w).
 */
int cfg_check_replica_dests(struct walk *w, const struct cfg_node *seq);
int cfg_distinct_default_names(struct walk *w, const struct cfg_node *seq);
int cfg_check_same_dbs(struct walk *w, const struct cfg_node *seq);
void walk_stores_free(struct walk *w);

#endif
