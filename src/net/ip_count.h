/*
 * Connections per client address, for limits.max_connections_per_ip. An
 * entry exists only while its address has connections, so the table is
 * bounded by limits.max_connections.
 */
#ifndef HERALD_NET_IP_COUNT_H
#define HERALD_NET_IP_COUNT_H

#include <stdint.h>

/*
 * An IPv4 address is stored as its IPv4-mapped IPv6 form. An IPv6 client is
 * counted by its /64 (the rest zeroed): one host usually holds a whole /64.
 */
typedef struct hd_ip {
    uint8_t bytes[16];
} hd_ip;

typedef struct hd_ip_count hd_ip_count;

hd_ip_count *hd_ip_count_new(void);
void hd_ip_count_free(hd_ip_count *table);
/* Counts one more connection from ip; returns how many it has now. */
uint32_t hd_ip_count_add(hd_ip_count *table, const hd_ip *ip);
/* Counts one connection less; the entry goes when it reaches zero. */
void hd_ip_count_remove(hd_ip_count *table, const hd_ip *ip);

#endif
