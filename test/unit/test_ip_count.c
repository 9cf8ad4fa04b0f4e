#include "net/ip_count.h"
#include "test.h"

static hd_ip make_ip(unsigned n)
{
    hd_ip ip;
    memset(&ip, 0, sizeof(ip));
    ip.bytes[10] = ip.bytes[11] = 0xff;
    ip.bytes[12] = 127;
    ip.bytes[13] = (uint8_t)(n >> 16);
    ip.bytes[14] = (uint8_t)(n >> 8);
    ip.bytes[15] = (uint8_t)n;
    return ip;
}

static void test_counts_per_address(void)
{
    hd_ip_count *table = hd_ip_count_new();
    hd_ip a = make_ip(1), b = make_ip(2);
    CHECK_EQ_INT(hd_ip_count_add(table, &a), 1);
    CHECK_EQ_INT(hd_ip_count_add(table, &a), 2);
    CHECK_EQ_INT(hd_ip_count_add(table, &b), 1);
    hd_ip_count_remove(table, &a);
    CHECK_EQ_INT(hd_ip_count_add(table, &a), 2);
    hd_ip_count_remove(table, &a);
    hd_ip_count_remove(table, &a);
    CHECK_EQ_INT(hd_ip_count_add(table, &a), 1);
    hd_ip_count_free(table);
}

static void test_many_addresses_grow_and_drain(void)
{
    hd_ip_count *table = hd_ip_count_new();
    for (unsigned i = 0; i < 5000; i++) {
        hd_ip ip = make_ip(i);
        CHECK_EQ_INT(hd_ip_count_add(table, &ip), 1);
    }
    for (unsigned i = 0; i < 5000; i += 2) {
        hd_ip ip = make_ip(i);
        hd_ip_count_remove(table, &ip);
    }
    for (unsigned i = 0; i < 5000; i++) {
        hd_ip ip = make_ip(i);
        CHECK_EQ_INT(hd_ip_count_add(table, &ip), i % 2 ? 2 : 1);
    }
    hd_ip_count_free(table);
}

int main(void)
{
    RUN_TEST(test_counts_per_address);
    RUN_TEST(test_many_addresses_grow_and_drain);
    return test_summary();
}
