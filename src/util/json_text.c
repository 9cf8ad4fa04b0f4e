#include "herald/json_text.h"

#include <string.h>

bool hd_json_text_has_nul(const char *text, size_t len)
{
    if (memchr(text, '\0', len) != NULL)
        return true;
    for (size_t i = 0; i + 5 < len; i++) {
        if (text[i] != '\\')
            continue;
        /* An escaped backslash is not the start of an escape: skip both. */
        if (text[i + 1] == '\\') {
            i++;
            continue;
        }
        if (text[i + 1] == 'u' && memcmp(text + i + 2, "0000", 4) == 0)
            return true;
    }
    return false;
}
