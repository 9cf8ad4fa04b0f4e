/* JSON control messages of /ws: parse, echo the ref, free. */
#include <stdint.h>

#include "transport/ws_control.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    hd_ws_command command;
    hd_ws_command_parse((const char *)data, size, 8, &command);
    hd_strbuf sb;
    hd_strbuf_init(&sb);
    hd_ws_append_ref(command.ref, &sb);
    hd_strbuf_free(&sb);
    hd_ws_command_free(&command);
    return 0;
}
