/*
 * A minimal test harness for herald's C unit tests: each test_*.c file is
 * one executable registered with CTest. A failed CHECK prints the location
 * and the expression and makes the executable exit non-zero; the last line
 * is "N passed, N failed".
 */
#ifndef HERALD_TEST_H
#define HERALD_TEST_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int test_failures;
static int test_checks;

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        test_checks++;                                                                             \
        if (!(cond)) {                                                                             \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond);               \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_INT(a, b)                                                                         \
    do {                                                                                           \
        long long check_a_ = (long long)(a), check_b_ = (long long)(b);                            \
        test_checks++;                                                                             \
        if (check_a_ != check_b_) {                                                                \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld != %lld)\n", __FILE__, __LINE__,  \
                    #a, #b, check_a_, check_b_);                                                   \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_STR(a, b)                                                                         \
    do {                                                                                           \
        const char *check_a_ = (a), *check_b_ = (b);                                               \
        test_checks++;                                                                             \
        if (strcmp(check_a_, check_b_) != 0) {                                                     \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%s\" != \"%s\")\n", __FILE__,        \
                    __LINE__, #a, #b, check_a_, check_b_);                                         \
        }                                                                                          \
    } while (0)

#define CHECK_EQ_MEM(a, a_len, b, b_len)                                                           \
    do {                                                                                           \
        test_checks++;                                                                             \
        if ((size_t)(a_len) != (size_t)(b_len) || memcmp((a), (b), (size_t)(a_len)) != 0) {        \
            test_failures++;                                                                       \
            fprintf(stderr, "%s:%d: CHECK failed: %s == %s (\"%.*s\" != \"%.*s\")\n", __FILE__,    \
                    __LINE__, #a, #b, (int)(a_len), (const char *)(a), (int)(b_len),               \
                    (const char *)(b));                                                            \
        }                                                                                          \
    } while (0)

#define RUN_TEST(fn)                                                                               \
    do {                                                                                           \
        int before_ = test_failures;                                                               \
        fn();                                                                                      \
        fprintf(stderr, "%s %s\n", test_failures == before_ ? "ok  " : "FAIL", #fn);               \
    } while (0)

static inline int test_summary(void)
{
    fprintf(stderr, "%d checks: %s\n", test_checks, test_failures ? "FAILED" : "all passed");
    return test_failures ? 1 : 0;
}

#endif
