#include "herald/json_text.h"
#include "test.h"

static bool has_nul(const char *text)
{
    return hd_json_text_has_nul(text, strlen(text));
}

static void test_detects_nul(void)
{
    CHECK(has_nul("{\"data\":\"a\\u0000b\"}"));
    CHECK(has_nul("\\u0000"));
    CHECK(has_nul("{\"data\":\"\\u0001\\u00000\"}"));
    CHECK(has_nul("\"\\\\\\u0000\""));
    CHECK(hd_json_text_has_nul("{\"a\":\"x\0\"}", 10));
}

static void test_ignores_lookalikes(void)
{
    CHECK(!has_nul("{\"data\":\"a\\\\u0000b\"}"));
    CHECK(!has_nul("{\"data\":\"u0000 \\u0030\"}"));
    CHECK(!has_nul(""));
    CHECK(!has_nul("\\u000"));
}

int main(void)
{
    RUN_TEST(test_detects_nul);
    RUN_TEST(test_ignores_lookalikes);
    return test_summary();
}
