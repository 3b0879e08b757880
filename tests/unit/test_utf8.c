/* Unit tests for common/utf8.c. */
#include "tests/unit/unit.h"

#include "common/utf8.h"

TEST(char_lengths)
{
	CHECK_INT(utf8_char_len("a", 1), 1);
	CHECK_INT(utf8_char_len("\xC3\xBC", 2), 2);         /* ü */
	CHECK_INT(utf8_char_len("\xE2\x82\xAC", 3), 3);     /* € */
	CHECK_INT(utf8_char_len("\xF0\x9F\x98\x80", 4), 4); /* U+1F600 */
	CHECK_INT(utf8_char_len("\xEF\xBF\xBD", 3), 3);     /* U+FFFD itself */
	/* cut short: the bytes are there in memory, not in the string */
	CHECK_INT(utf8_char_len("\xC3\xBC", 1), 0);
	CHECK_INT(utf8_char_len("\xE2\x82\xAC", 2), 0);
	CHECK_INT(utf8_char_len("\xC3", 1), 0);
	/* not characters: continuation, overlong, surrogate, past U+10FFFF, F5-FF */
	CHECK_INT(utf8_char_len("\x80", 1), 0);
	CHECK_INT(utf8_char_len("\xC0\xAF", 2), 0);
	CHECK_INT(utf8_char_len("\xC1\xBF", 2), 0);
	CHECK_INT(utf8_char_len("\xE0\x80\xAF", 3), 0);
	CHECK_INT(utf8_char_len("\xED\xA0\x80", 3), 0);
	CHECK_INT(utf8_char_len("\xF0\x80\x80\xAF", 4), 0);
	CHECK_INT(utf8_char_len("\xF4\x90\x80\x80", 4), 0);
	CHECK_INT(utf8_char_len("\xF5\x80\x80\x80", 4), 0);
	CHECK_INT(utf8_char_len("\xFF", 1), 0);
	CHECK_INT(utf8_char_len("\xC3(", 2), 0);
	CHECK_INT(utf8_char_len("\xE2\x82(", 3), 0);
	/* the edges that are characters */
	CHECK_INT(utf8_char_len("\xED\x9F\xBF", 3), 3);     /* U+D7FF */
	CHECK_INT(utf8_char_len("\xF4\x8F\xBF\xBF", 4), 4); /* U+10FFFF */
	CHECK_INT(utf8_char_len("\xE0\xA0\x80", 3), 3);     /* U+0800 */
	CHECK_INT(utf8_char_len("\xF0\x90\x80\x80", 4), 4); /* U+10000 */
}

TEST(valid_and_repair)
{
	char out[64];
	CHECK(utf8_valid(""));
	CHECK(utf8_valid("plain ASCII, Gr\xC3\xBC\xC3\x9F" "e \xE2\x82\xAC"));
	CHECK(!utf8_valid("caf\xE9"));
	CHECK(!utf8_valid("cut \xC3"));
	CHECK_STR(utf8_repair("caf\xE9.db", out, sizeof(out)), "caf\xEF\xBF\xBD.db");
	CHECK_STR(utf8_repair("cut \xE2\x82", out, sizeof(out)), "cut \xEF\xBF\xBD\xEF\xBF\xBD");
	CHECK_STR(utf8_repair("ok \xC3\xBC", out, sizeof(out)), "ok \xC3\xBC");
	/* never cut inside a character to fit */
	CHECK_STR(utf8_repair("ab\xE2\x82\xAC", out, 5), "ab");
	CHECK_STR(utf8_repair("ab\xE2\x82\xAC", out, 6), "ab\xE2\x82\xAC");
	CHECK_STR(utf8_repair("\xFF", out, 3), "");
	CHECK_STR(utf8_repair("x", out, 1), "");
	CHECK(utf8_valid(utf8_repair("\xF0\x9F\x98", out, sizeof(out))));
}

UNIT_MAIN(T(char_lengths), T(valid_and_repair))
