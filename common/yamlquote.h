/*
 * yamlquote.h — read a value that is itself one YAML quoted scalar.
 *
 * Litestream expands the environment in the whole file before YAML reads it,
 * so `path: $DB_PATH` with DB_PATH='"/data/app.db"' (docker run --env-file
 * keeps the quotes) is the path /data/app.db there. litevisor expands each
 * value after parsing (common/config_walk.c) and uses this to read such a
 * value as YAML would have.
 */
#ifndef LITEVISOR_YAMLQUOTE_H
#define LITEVISOR_YAMLQUOTE_H

#include <stddef.h>

/*
 * s starts with '"' or '\''. Rewrite it in place to the content of that
 * quoted scalar, as libyaml (YAML 1.1, as Litestream's yaml.v2) reads it:
 * '' in '…', the escapes of "…", line breaks folded into a space, a comment
 * after it. Returns 0; or -1 with why (libyaml's words, never quoting s,
 * which may be a credential) when s is not exactly one such scalar: no
 * closing quote, text after it, an unknown escape, a NUL byte in it.
 */
int yaml_unquote(char *s, char *why, size_t whylen);

#endif
