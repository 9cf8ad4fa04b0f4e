#include "herald/alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(size_t size)
{
    fprintf(stderr, "herald: out of memory allocating %zu bytes\n", size);
    abort();
}

void *hd_alloc(size_t size)
{
    void *p = malloc(size ? size : 1);
    if (p == NULL)
        out_of_memory(size);
    return p;
}

void *hd_calloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (p == NULL)
        out_of_memory(count * size);
    return p;
}

void *hd_realloc(void *ptr, size_t size)
{
    void *p = realloc(ptr, size ? size : 1);
    if (p == NULL)
        out_of_memory(size);
    return p;
}

char *hd_strndup(const char *str, size_t len)
{
    char *p = hd_alloc(len + 1);
    memcpy(p, str, len);
    p[len] = '\0';
    return p;
}

char *hd_strdup(const char *str)
{
    return hd_strndup(str, strlen(str));
}
