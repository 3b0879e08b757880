/*
 * words.h — split the config's `exec` string into argv, shell-words style:
 * blanks separate words; '…' keeps everything literally; "…" keeps blanks and
 * lets a backslash escape " \ $ ` and newline; outside quotes a backslash
 * escapes the next character. There is no shell: no variable, glob, tilde or
 * command expansion, no redirection, no pipes ($VAR in `exec` is expanded
 * by the config loader before, quote-aware: envexpand_words() escapes each
 * value so that this split reads it back as data, never as quoting).
 * The config loader splits `exec` once to refuse, with its line and column,
 * what `run` could not split; run, replicate and `config` split it again.
 */
#ifndef LITEVISOR_WORDS_H
#define LITEVISOR_WORDS_H

#include <stddef.h>

/*
 * Split s into a NULL-terminated argv (free with words_free). Returns the
 * number of words (0 for a blank string), or -1 with a reason in err
 * (unterminated quote, trailing backslash, out of memory).
 */
int words_split(const char *s, char ***argv, char *err, size_t errlen);

/*
 * The inverse of words_split: argv joined by single spaces, each word as is
 * when it holds only [A-Za-z0-9_./:=@%+,-] and is not empty, else in '…'
 * with a ' inside written '\''. So words_split reads the result back as the
 * same argv, and every "$", quote and backslash sits inside '…' (or is that
 * \'), where envexpand_words expands nothing. Returns a malloc'd string, or
 * NULL when out of memory.
 */
char *words_quote(char *const *argv);

/* Free an argv from words_split. NULL is fine. */
void words_free(char **argv);

#endif
