/* table.c — text tables laid out as Go's tabwriter lays out Litestream's (table.h). */
#include "cmd/table.h"

#include <stdlib.h>
#include <string.h>

#include "common/banned.h"

#define TABLE_PAD 2

void table_row(struct table *t, const char *const *cells)
{
	if (!t->width && !(t->width = calloc(t->ncols, sizeof(*t->width)))) {
		t->dropped = true;
		return;
	}
	if (t->nrows == t->cap) {
		size_t cap = t->cap ? t->cap * 2 : 16;
		char **c = realloc(t->cells, cap * t->ncols * sizeof(*c));
		if (!c) {
			t->dropped = true;
			return;
		}
		t->cells = c;
		t->cap = cap;
	}
	char **row = t->cells + t->nrows * t->ncols;
	for (size_t i = 0; i < t->ncols; i++) {
		if (!(row[i] = strdup(cells[i] ? cells[i] : ""))) {
			while (i--)
				free(row[i]);
			t->dropped = true;
			return;
		}
	}
	for (size_t i = 0; i < t->ncols; i++)
		if (strlen(row[i]) > t->width[i])
			t->width[i] = strlen(row[i]);
	t->nrows++;
}

void table_print(const struct table *t, FILE *out)
{
	for (size_t r = 0; r < t->nrows; r++) {
		char *const *row = t->cells + r * t->ncols;
		for (size_t i = 0; i + 1 < t->ncols; i++)
			fprintf(out, "%-*s", (int)(t->width[i] + TABLE_PAD), row[i]);
		fprintf(out, "%s\n", t->ncols ? row[t->ncols - 1] : "");
	}
	if (t->dropped)
		fprintf(stderr, "litevisor: out of memory: some rows of the table are missing\n");
}

void table_release(struct table *t)
{
	for (size_t i = 0; i < t->nrows * t->ncols; i++)
		free(t->cells[i]);
	free(t->cells);
	free(t->width);
	t->cells = NULL;
	t->width = NULL;
	t->nrows = t->cap = 0;
	t->dropped = false;
}
