/* Unit tests for common/pathnorm.c: Go's path.Clean rules and symlink resolution. */
#include "tests/unit/unit.h"

#include <limits.h>
#include <sys/stat.h>

#include "common/pathnorm.h"

static void clean_is(const char *in, const char *want)
{
	char buf[256];
	snprintf(buf, sizeof(buf), "%s", in);
	pathnorm_clean(buf);
	if (strcmp(buf, want) != 0)
		FAIL("clean(\"%s\") is \"%s\", expected \"%s\"", in, buf, want);
}

/* The cases of Go's path.Clean tests, as Litestream's filepath.Abs applies them. */
TEST(clean_like_go)
{
	clean_is("", "");
	clean_is("abc", "abc");
	clean_is("abc/def", "abc/def");
	clean_is(".", ".");
	clean_is("..", "..");
	clean_is("../..", "../..");
	clean_is("../../abc", "../../abc");
	clean_is("/abc", "/abc");
	clean_is("/", "/");
	clean_is("abc/", "abc");
	clean_is("abc/def/", "abc/def");
	clean_is("/abc/", "/abc");
	clean_is("//abc", "/abc");
	clean_is("///abc", "/abc");
	clean_is("//abc//", "/abc");
	clean_is("abc//def//ghi", "abc/def/ghi");
	clean_is("abc/./def", "abc/def");
	clean_is("/./abc/def", "/abc/def");
	clean_is("abc/.", "abc");
	clean_is("abc/def/ghi/../jkl", "abc/def/jkl");
	clean_is("abc/def/../ghi/../jkl", "abc/jkl");
	clean_is("abc/def/..", "abc");
	clean_is("abc/def/../..", ".");
	clean_is("/abc/def/../..", "/");
	clean_is("abc/def/../../..", "..");
	clean_is("/abc/def/../../..", "/");
	clean_is("abc/def/../../../ghi/jkl/../../../mno", "../../mno");
	clean_is("abc/./../def", "def");
	clean_is("abc//./../def", "def");
	clean_is("abc/../../././../def", "../../def");
	clean_is("/data/sub/../app.db", "/data/app.db");
	clean_is("/data/...", "/data/...");
	clean_is("/data/.hidden/..x", "/data/.hidden/..x");
}

/* A symlinked file or directory resolves to its target; the missing rest is kept. */
TEST(resolve_follows_symlinks_of_the_existing_prefix)
{
	char dir[] = "/tmp/lv-pathnorm-XXXXXX", p[PATH_MAX], q[PATH_MAX + 32], out[PATH_MAX], real[PATH_MAX];
	CHECK(mkdtemp(dir) != NULL);
	CHECK(realpath(dir, real) != NULL);
	snprintf(p, sizeof(p), "%s/real", dir);
	CHECK_INT(mkdir(p, 0700), 0);
	snprintf(q, sizeof(q), "%s/link", dir);
	CHECK_INT(symlink(p, q), 0);

	snprintf(p, sizeof(p), "%s/link/not/yet", dir);
	CHECK_INT(pathnorm_resolve(p, out, sizeof(out)), 0);
	snprintf(q, sizeof(q), "%s/real/not/yet", real);
	CHECK_STR(out, q);

	snprintf(p, sizeof(p), "%s/link", dir);
	CHECK_INT(pathnorm_resolve(p, out, sizeof(out)), 0);
	snprintf(q, sizeof(q), "%s/real", real);
	CHECK_STR(out, q);

	CHECK_INT(pathnorm_resolve("/", out, sizeof(out)), 0);
	CHECK_STR(out, "/");
	CHECK_INT(pathnorm_resolve("/lv-pathnorm-none/x", out, sizeof(out)), 0);
	CHECK_STR(out, "/lv-pathnorm-none/x");

	/* Not absolute, or no room: -1, and buf holds the path as given if it fits. */
	CHECK_INT(pathnorm_resolve("rel/x", out, sizeof(out)), -1);
	CHECK_STR(out, "rel/x");
	CHECK_INT(pathnorm_resolve(p, out, 4), -1);
	CHECK_STR(out, "");
	snprintf(p, sizeof(p), "%s/link", dir);
	unlink(p);
	snprintf(p, sizeof(p), "%s/real", dir);
	rmdir(p);
	rmdir(dir);
}

UNIT_MAIN(T(clean_like_go), T(resolve_follows_symlinks_of_the_existing_prefix))
