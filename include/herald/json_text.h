/*
 * A check on JSON text that cJSON cannot make for us: cJSON decodes strings
 * into NUL-terminated C strings, so a string containing U+0000 (escaped as
 * \u0000, or a raw NUL byte) would be cut short silently. herald refuses
 * such documents instead of altering the data.
 */
#ifndef HERALD_JSON_TEXT_H
#define HERALD_JSON_TEXT_H

#include <stdbool.h>
#include <stddef.h>

/* Whether the text holds a NUL byte or a \u0000 escape. */
bool hd_json_text_has_nul(const char *text, size_t len);

#endif
