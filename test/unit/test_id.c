#include "herald/id.h"

#include <stdint.h>
#include <stdio.h>

#include "test.h"

static void test_format(void)
{
    char id[HD_ID_MAX];
    CHECK_EQ_INT(hd_id_format(0x0badf00d, 0, id), 10);
    CHECK_EQ_STR(id, "0badf00d-0");
    CHECK_EQ_INT(hd_id_format(1, 42, id), 11);
    CHECK_EQ_STR(id, "00000001-42");
    CHECK_EQ_INT(hd_id_format(UINT32_MAX, UINT64_MAX, id), 29);
    CHECK_EQ_STR(id, "ffffffff-18446744073709551615");
}

static void test_round_trips(void)
{
    const uint32_t epochs[] = {1, 0x0badf00d, 0x80000000, UINT32_MAX};
    const uint64_t seqs[] = {0,         1, 9, 10, 99, 1000000, UINT64_C(1) << 53, UINT64_MAX - 1,
                             UINT64_MAX};
    for (size_t e = 0; e < sizeof(epochs) / sizeof(epochs[0]); e++) {
        for (size_t q = 0; q < sizeof(seqs) / sizeof(seqs[0]); q++) {
            char id[HD_ID_MAX];
            size_t len = hd_id_format(epochs[e], seqs[q], id);
            CHECK_EQ_INT(strlen(id), len);
            uint32_t epoch = 0;
            uint64_t seq = 0;
            CHECK(hd_id_parse(id, len, &epoch, &seq));
            CHECK_EQ_INT(epoch, epochs[e]);
            CHECK(seq == seqs[q]);
        }
    }
}

static void test_bad_ids(void)
{
    const char *bad[] = {
        "",
        "abc",
        "0badf00d",
        "0badf00d-",
        "0badf00d5",
        "0badf00d_5",
        "0BADF00D-5",
        "0badF00d-5",
        "0badf00-5",
        "0badf00d0-5",
        "0badf00g-5",
        "-5",
        "0badf00d-05",
        "0badf00d-00",
        "0badf00d--5",
        "0badf00d-+5",
        "0badf00d--0",
        "0badf00d-5x",
        "0badf00d-5 ",
        " 0badf00d-5",
        "0badf00d-1.5",
        "0badf00d-18446744073709551616",
        "0badf00d-99999999999999999999",
        "0badf00d-123456789012345678901",
        "earliest",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        uint32_t epoch = 7;
        uint64_t seq = 7;
        bool parsed = hd_id_parse(bad[i], strlen(bad[i]), &epoch, &seq);
        if (parsed)
            fprintf(stderr, "accepted bad id \"%s\"\n", bad[i]);
        CHECK(!parsed);
        /* Nothing is written on failure. */
        CHECK_EQ_INT(epoch, 7);
        CHECK_EQ_INT(seq, 7);
    }
    uint32_t epoch;
    uint64_t seq;
    /* The length counts, not a NUL: a NUL inside is a character that is not a digit. */
    CHECK(!hd_id_parse("0badf00d-5\0", 11, &epoch, &seq));
    CHECK(hd_id_parse("0badf00d-5 and more", 10, &epoch, &seq));
    CHECK_EQ_INT(seq, 5);
}

static void test_cursors(void)
{
    hd_cursor c;
    CHECK(hd_cursor_parse("", 0, 0x0badf00d, &c));
    CHECK(!c.present && !c.foreign && !c.earliest);

    CHECK(hd_cursor_parse("earliest", 8, 0x0badf00d, &c));
    CHECK(c.present && c.earliest && !c.foreign);
    CHECK_EQ_INT(c.seq, 0);

    const char *own = "0badf00d-17";
    CHECK(hd_cursor_parse(own, strlen(own), 0x0badf00d, &c));
    CHECK(c.present && !c.foreign && !c.earliest);
    CHECK_EQ_INT(c.seq, 17);
    CHECK(c.text == own);
    CHECK_EQ_INT(c.text_len, strlen(own));

    /* Another epoch's id: a cursor all the same, marked foreign, whatever its seq. */
    const char *foreign = "deadbeef-18446744073709551615";
    CHECK(hd_cursor_parse(foreign, strlen(foreign), 0x0badf00d, &c));
    CHECK(c.present && c.foreign);
    CHECK(c.seq == UINT64_MAX);

    const char *bad[] = {"Earliest", "EARLIEST", "earliest ", "earlies", "earliest-1", "x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        CHECK(!hd_cursor_parse(bad[i], strlen(bad[i]), 0x0badf00d, &c));
}

/* A store's cut decides: beyond it in its epoch was never issued; another epoch is a gap. */
static void test_cursor_beyond(void)
{
    hd_cursor c;
    CHECK(hd_cursor_parse("0badf00d-7", 10, 0x0badf00d, &c));
    CHECK(!hd_cursor_beyond(&c, 0x0badf00d, 7));
    CHECK(hd_cursor_beyond(&c, 0x0badf00d, 6));
    CHECK(!hd_cursor_beyond(&c, 0x12345678, 0));
    CHECK(hd_cursor_parse("earliest", 8, 0x0badf00d, &c));
    CHECK(!hd_cursor_beyond(&c, 0x0badf00d, 0));
    CHECK(hd_cursor_parse("", 0, 0x0badf00d, &c));
    CHECK(!hd_cursor_beyond(&c, 0x0badf00d, 0));
}

int main(void)
{
    RUN_TEST(test_format);
    RUN_TEST(test_round_trips);
    RUN_TEST(test_bad_ids);
    RUN_TEST(test_cursors);
    RUN_TEST(test_cursor_beyond);
    return test_summary();
}
