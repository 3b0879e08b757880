/*
 * table.h — a text table laid out as Litestream's listings are (Go's
 * tabwriter with padding 2): each column as wide as its widest cell plus two
 * spaces, the last column unpadded. Rows are kept until table_print, since a
 * column's width is known only once every row is in.
 *
 * struct table t = TABLE_INIT(n); table_row(&t, cells); …; table_print(&t,
 * stdout); table_release(&t). A row that cannot be kept (out of memory) is
 * dropped and table_print says so on stderr.
 */
#ifndef LITEVISOR_CMD_TABLE_H
#define LITEVISOR_CMD_TABLE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

struct table {
	size_t ncols;
	char **cells;      /* nrows × ncols copies, row after row */
	size_t nrows, cap;
	size_t *width;     /* per column, NULL until the first row */
	bool dropped;
};

#define TABLE_INIT(n) { .ncols = (n) }

/* Add a row of t->ncols cells (copied). */
void table_row(struct table *t, const char *const *cells);

/* Write every row, aligned, to out. */
void table_print(const struct table *t, FILE *out);

/* Free the rows; t is empty and reusable afterwards. */
void table_release(struct table *t);

#endif
