/*
 * Allocation helpers that abort on out-of-memory, so call sites stay clean
 * (the convention of h2o's h2o_mem_alloc). Memory from these is released
 * with free().
 */
#ifndef HERALD_ALLOC_H
#define HERALD_ALLOC_H

#include <stddef.h>

void *hd_alloc(size_t size);
void *hd_calloc(size_t count, size_t size);
void *hd_realloc(void *ptr, size_t size);
char *hd_strndup(const char *str, size_t len);
char *hd_strdup(const char *str);

#endif
