/*
 * envexpand.h — environment-variable expansion for config values.
 *
 * Syntax (a superset of what Litestream's os.ExpandEnv accepts in practice):
 *   $NAME  ${NAME}      the variable's value; unset expands to "" like Litestream
 *   ${NAME:-default}    default when NAME is unset or empty; the default is
 *                       expanded in turn, as a shell does ("${A:-${B}/x}",
 *                       "${A:-$B}"), nested at most 8 deep; it ends at the
 *                       first "}" outside a nested reference
 *   $$                  a literal "$"
 * NAME is [A-Za-z_][A-Za-z0-9_]*. A "$" followed by anything else (a digit,
 * a space, the end) is kept literally, so a password such as "pa$ 5" survives.
 * "${" without "}" or with a bad name is an error.
 *
 * Applied by config_load to each scalar value separately, so a message can
 * still point at the value's own line and column.
 */
#ifndef LITEVISOR_ENVEXPAND_H
#define LITEVISOR_ENVEXPAND_H

#include <stddef.h>

/* Looks a variable up; returns NULL when unset. NULL lookup means getenv. */
typedef const char *(*envexpand_lookup)(const char *name, void *ctx);

/*
 * Expand s. On success returns 0 and *out is a malloc'd string (caller frees);
 * if unset is not NULL, *unset gets the malloc'd names of the variables that
 * were unset (no default given), each once, joined by ", " ("A" or "A, B"),
 * or NULL. On a syntax error returns -1
 * with why (it never quotes s, which may be a credential); *out is NULL.
 */
int envexpand(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
	      char *why, size_t whylen);

/*
 * The same for a value split into shell words afterwards (`exec`, see
 * common/words.h), expanding as a shell would: nothing inside '…' or
 * after a backslash, and a value's own quotes, backslashes (and inside "…"
 * its $ and `) escaped so the split reads it back as written: "$X" stays one
 * word whatever X holds; an unquoted $X is split at its blanks, never
 * re-parsed for quotes.
 */
int envexpand_words(const char *s, envexpand_lookup lookup, void *ctx, char **out, char **unset,
		    char *why, size_t whylen);

#endif
