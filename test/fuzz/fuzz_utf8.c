/* The incremental validator must agree with the whole-buffer one at any split. */
#include <stdint.h>
#include <stdlib.h>

#include "herald/utf8.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size == 0)
        return 0;
    const uint8_t *text = data + 1;
    size_t len = size - 1;
    size_t split = data[0] % (len + 1);
    hd_utf8_state state;
    hd_utf8_reset(&state);
    bool ok = hd_utf8_feed(&state, text, split) &&
              hd_utf8_feed(&state, text + split, len - split) && hd_utf8_complete(&state);
    if (ok != hd_utf8_valid(text, len))
        abort();
    return 0;
}
