/* test_envexpand.c — $VAR, ${VAR}, ${VAR:-default} (nested), $$ and the errors. */
#include <stdlib.h>
#include <string.h>

#include "common/envexpand.h"
#include "tests/unit/unit.h"

/* A fixed environment so the tests do not depend on the caller's. */
static const char *lookup(const char *name, void *ctx)
{
	static const char *const env[][2] = {
		{ "HOME", "/home/app" }, { "EMPTY", "" }, { "B", "bucket" }, { "_X1", "x1" },
		{ "DOLLAR", "a$b" },
	};
	(*(int *)ctx)++;
	for (size_t i = 0; i < sizeof(env) / sizeof(env[0]); i++)
		if (strcmp(env[i][0], name) == 0)
			return env[i][1];
	return NULL;
}

static void expect(const char *in, const char *want, const char *want_unset)
{
	char *out = NULL, *unset = NULL, why[128] = "";
	int calls = 0;
	if (envexpand(in, lookup, &calls, &out, &unset, why, sizeof(why)) != 0)
		FAIL("\"%s\": %s", in, why);
	if (strcmp(out, want) != 0)
		FAIL("\"%s\" → \"%s\", expected \"%s\"", in, out, want);
	if (want_unset ? !unset || strcmp(unset, want_unset) != 0 : unset != NULL)
		FAIL("\"%s\": unset=%s, expected %s", in, unset ? unset : "(none)",
		     want_unset ? want_unset : "(none)");
	free(out);
	free(unset);
}

static void expect_error(const char *in, const char *want_why)
{
	char *out = (char *)"sentinel", *unset = NULL, why[128] = "";
	int calls = 0;
	CHECK_INT(envexpand(in, lookup, &calls, &out, &unset, why, sizeof(why)), -1);
	CHECK(out == NULL);
	CHECK(unset == NULL);
	CHECK_STR(why, want_why);
}

TEST(plain_text_is_unchanged)
{
	expect("", "", NULL);
	expect("no variables here", "no variables here", NULL);
	expect("s3://bkt/path", "s3://bkt/path", NULL);
}

TEST(dollar_names)
{
	expect("$HOME", "/home/app", NULL);
	expect("$HOME/x", "/home/app/x", NULL);
	expect("a${B}c", "abucketc", NULL);
	expect("$B$B", "bucketbucket", NULL);
	expect("$_X1-", "x1-", NULL);
	expect("${HOME}${B}", "/home/appbucket", NULL);
	/* A value is not expanded again. */
	expect("$DOLLAR", "a$b", NULL);
}

TEST(unset_expands_empty_and_is_reported)
{
	expect("$NOPE", "", "NOPE");
	expect("a${NOPE}b$ALSO_NOPE", "ab", "NOPE, ALSO_NOPE");
	expect("$NOPE:$NOPE", ":", "NOPE");
	expect("$EMPTY", "", NULL); /* set but empty is not "unset" */
}

TEST(defaults)
{
	expect("${NOPE:-fallback}", "fallback", NULL);
	expect("${EMPTY:-fallback}", "fallback", NULL);
	expect("${B:-fallback}", "bucket", NULL);
	expect("${NOPE:-}", "", NULL);
	expect("${NOPE:-a b/c:d}", "a b/c:d", NULL);
}

/*
 * A default is expanded in turn, as a shell does: "${DB:-${NOMAD_ALLOC_DIR}/app.db}"
 * is a common idiom. It used to end at the first "}" and keep the rest as text.
 */
TEST(nested_defaults)
{
	expect("${NOPE:-${HOME}/app.db}", "/home/app/app.db", NULL);
	expect("${NOPE:-$HOME/app.db}", "/home/app/app.db", NULL);
	expect("${EMPTY:-${NOPE2:-deep}}", "deep", NULL);
	expect("${NOPE:-${NOPE2:-${B}}}/x", "bucket/x", NULL);
	expect("${B:-${HOME}}", "bucket", NULL);
	expect("a${NOPE:-[${B}]}z", "a[bucket]z", NULL);
	/* an unset variable in the default is reported like any other */
	expect("${NOPE:-${ALSO_NOPE}/x}", "/x", "ALSO_NOPE");
	/* the default's own dollars: "$$" is one, a "$" before no name stays */
	expect("${NOPE:-pa$$word}", "pa$word", NULL);
	expect("${NOPE:-$$}}", "$}", NULL);
	expect("${NOPE:-$5 $}", "$5 $", NULL);
	/* the first "}" outside a nested reference ends the default */
	expect("${NOPE:-x}y}", "xy}", NULL);
	/* a value is still never expanded again */
	expect("${NOPE:-$DOLLAR}", "a$b", NULL);
	/* eight levels deep is fine */
	expect("${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-x}}}}}}}}", "x", NULL);
}

TEST(literal_dollars)
{
	expect("$$", "$", NULL);
	expect("pa$$word", "pa$word", NULL);
	expect("$$HOME", "$HOME", NULL);
	expect("$", "$", NULL);
	expect("cost: 5$", "cost: 5$", NULL);
	expect("$5 and $ x", "$5 and $ x", NULL);
	expect("$-", "$-", NULL);
}

TEST(syntax_errors)
{
	expect_error("${HOME", "unterminated \"${\" (write \"$$\" for a literal \"$\")");
	expect_error("x${}", "bad variable name in \"${…}\" (use letters, digits and _)");
	expect_error("${1A}", "bad variable name in \"${…}\" (use letters, digits and _)");
	expect_error("${A B}", "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
	expect_error("${A:?msg}", "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
	expect_error("${A-x}", "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
	expect_error("${A:-${B}", "unterminated \"${\" (write \"$$\" for a literal \"$\")");
	expect_error("${A:-${}}", "bad variable name in \"${…}\" (use letters, digits and _)");
	expect_error("${A:-${B-x}}", "unsupported form in \"${…}\" (only ${NAME} and ${NAME:-default})");
	expect_error("${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-x}}}}}}}}}",
		     "\"${…:-…}\" nested more than 8 deep");
	/* deeper still: the same message, not "unterminated" from finding the default's end */
	expect_error("${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-${A:-x}}}}}}}}}}}",
		     "\"${…:-…}\" nested more than 8 deep");
}

TEST(getenv_by_default)
{
	char *out = NULL, *unset = NULL, why[64];
	setenv("LV_ENVEXPAND_T", "v", 1);
	CHECK_INT(envexpand("[$LV_ENVEXPAND_T]", NULL, NULL, &out, &unset, why, sizeof(why)), 0);
	CHECK_STR(out, "[v]");
	CHECK(unset == NULL);
	free(out);
	/* unset may be NULL when the caller does not care. */
	CHECK_INT(envexpand("$LV_ENVEXPAND_NOT_SET", NULL, NULL, &out, NULL, why, sizeof(why)), 0);
	CHECK_STR(out, "");
	free(out);
}

UNIT_MAIN(T(plain_text_is_unchanged), T(dollar_names), T(unset_expands_empty_and_is_reported),
	  T(defaults), T(nested_defaults), T(literal_dollars), T(syntax_errors), T(getenv_by_default))
