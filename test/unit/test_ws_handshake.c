#include "test.h"
#include "ws/ws_handshake.h"

static void test_accept_key_matches_rfc_example(void)
{
    /* RFC 6455 §1.3. */
    char out[HD_WS_ACCEPT_SIZE];
    hd_ws_accept_key("dGhlIHNhbXBsZSBub25jZQ==", 24, out);
    CHECK_EQ_STR(out, "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
}

static void test_key_validation(void)
{
    CHECK(hd_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==", 24));
    CHECK(hd_ws_key_valid("AAAAAAAAAAAAAAAAAAAAAA==", 24));
    CHECK(!hd_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ=", 23));
    CHECK(!hd_ws_key_valid("dGhlIHNhbXBsZSBub25jZQ==x", 25));
    CHECK(!hd_ws_key_valid("dGhlIHNhbXBsZSBub25jZ===", 24));
    CHECK(!hd_ws_key_valid("dGhlIHNhbXBsZSBub25j!Q==", 24));
    /* 'R' carries bits past the 16th byte: not a canonical 16-byte key. */
    CHECK(!hd_ws_key_valid("dGhlIHNhbXBsZSBub25jZR==", 24));
    CHECK(!hd_ws_key_valid("", 0));
}

int main(void)
{
    RUN_TEST(test_accept_key_matches_rfc_example);
    RUN_TEST(test_key_validation);
    return test_summary();
}
