/* Unit tests for common/log.c: one line per event, values that read as one. */
#include "tests/unit/unit.h"

#include <fcntl.h>

#include "common/log.h"

/* The line log_event writes for kv, in text or JSON form, without its time. */
static const char *logged(bool json, const char *kv, const char *value)
{
	static char buf[4096];
	char path[] = "/tmp/litevisor-test-log-XXXXXX";
	int fd = mkstemp(path);
	CHECK(fd >= 0);
	unlink(path);
	int saved = dup(STDERR_FILENO);
	dup2(fd, STDERR_FILENO);
	log_configure(LOG_INFO, json);
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wformat-nonliteral"
	log_info("engine", "something happened", kv, value);
#pragma GCC diagnostic pop
	dup2(saved, STDERR_FILENO);
	close(saved);
	ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
	close(fd);
	CHECK(n > 0);
	buf[n] = '\0';
	const char *at = json ? strstr(buf, "\"msg\"") : strstr(buf, "engine: ");
	CHECK(at != NULL);
	return at;
}

TEST(a_name_with_spaces_is_quoted_in_text)
{
	CHECK_STR(logged(false, "db=%s replica=nas n=1", "my app"),
		  "engine: something happened db=\"my app\" replica=nas n=1\n");
	CHECK_STR(logged(false, "n=1 db=%s", "my  app"),
		  "engine: something happened n=1 db=\"my  app\"\n");
	CHECK_STR(logged(false, "db=%s n=1", "say \"hi\" now"),
		  "engine: something happened db=\"say \\\"hi\\\" now\" n=1\n");
}

TEST(plain_and_quoted_values_are_kept_as_written)
{
	CHECK_STR(logged(false, "db=%s n=1 path=\"/a b/c\"", "app"),
		  "engine: something happened db=app n=1 path=\"/a b/c\"\n");
	CHECK_STR(logged(false, "error=\"%s\" n=2", "x= y \"z\" w"),
		  "engine: something happened error=\"x= y \"z\" w\" n=2\n");
	CHECK_STR(logged(false, "url=%s", "http://h/?a=b&c=d"),
		  "engine: something happened url=http://h/?a=b&c=d\n");
}

TEST(a_name_with_spaces_is_one_json_value)
{
	CHECK_STR(logged(true, "db=%s replica=nas", "my app"),
		  "\"msg\":\"something happened\",\"db\":\"my app\",\"replica\":\"nas\"}\n");
	CHECK_STR(logged(true, "db=%s n=1", "say \"hi\" now"),
		  "\"msg\":\"something happened\",\"db\":\"say \\\"hi\\\" now\",\"n\":\"1\"}\n");
}

UNIT_MAIN(T(a_name_with_spaces_is_quoted_in_text), T(plain_and_quoted_values_are_kept_as_written),
	  T(a_name_with_spaces_is_one_json_value))
