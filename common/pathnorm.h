/*
 * pathnorm.h — spelling-independent paths: lexical cleaning and symlinks.
 *
 * Litestream makes every path absolute with Go's filepath.Abs, which cleans
 * it lexically ("a//b/./c/../d/" is "a/b/d"), and S3 key prefixes go through
 * path.Join, which does the same. litevisor cleans with the same rules so a
 * path means the same file for both. Two spellings can still name one file
 * through a symlink; pathnorm_resolve tells those apart for checks that must
 * not miss a duplicate (the config refuses two databases in one file).
 */
#ifndef LITEVISOR_PATHNORM_H
#define LITEVISOR_PATHNORM_H

#include <stddef.h>

/*
 * Clean p in place with Go's path.Clean rules: one '/' between elements, no
 * "." elements, ".." removes the element before it (at the root it is
 * dropped), no trailing '/' (except "/" itself); a relative path that
 * cleans to nothing becomes ".". The result is never longer than p. An empty
 * p stays empty (Go returns "."; there may be no room for it).
 */
void pathnorm_clean(char *p);

/*
 * The physical path of the absolute, clean path abs: the longest prefix of
 * abs that exists, with its symlinks resolved (realpath), followed by the
 * rest of abs, into buf (len bytes). The rest is cleaned lexically, as the
 * kernel would not (a "..", after a symlink that does not exist yet, is moot:
 * nothing exists there). Returns 0, or -1 if abs is not absolute or buf is
 * too small (buf then holds abs, or is empty if that does not fit either).
 */
int pathnorm_resolve(const char *abs, char *buf, size_t len);

#endif
