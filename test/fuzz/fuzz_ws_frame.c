/*
 * libFuzzer target for the WebSocket frame reader (src/ws/ws_frame.c) and,
 * through it, the permessage-deflate inflater. The first input byte picks
 * where the rest is split into two reads, so partial headers and payloads
 * are exercised as well as whole frames; the rest is fed to a reader
 * without an extension and to readers with an inflater, with and without
 * context takeover. Callbacks read every byte they are given, so ASan sees
 * any payload handed out beyond its buffer, and a close frame stops the
 * reader as the WebSocket session does.
 */
#include <stddef.h>
#include <stdint.h>

#include "ws/ws_deflate.h"
#include "ws/ws_frame.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fuzz_ctx {
    hd_ws_reader *reader;
    uint32_t sum;
} fuzz_ctx;

static void touch(fuzz_ctx *ctx, const char *bytes, size_t len)
{
    for (size_t i = 0; i < len; i++)
        ctx->sum += (uint8_t)bytes[i];
}

static void fuzz_on_message(void *ctx, hd_ws_opcode opcode, const char *data, size_t len)
{
    (void)opcode;
    touch(ctx, data, len);
}

static void fuzz_on_control(void *ctx, hd_ws_opcode opcode, uint16_t code, const char *payload,
                            size_t len)
{
    fuzz_ctx *fc = ctx;
    touch(fc, payload, len);
    (void)code;
    if (opcode == HD_WS_CLOSE)
        hd_ws_reader_stop(fc->reader);
}

static const hd_ws_reader_callbacks fuzz_callbacks = {fuzz_on_message, fuzz_on_control};

static void feed_split(const uint8_t *in, size_t len, size_t split, hd_ws_inflater *inflater)
{
    fuzz_ctx ctx = {hd_ws_reader_new(4096, inflater), 0};
    const char *reason = NULL;
    uint16_t code = hd_ws_reader_feed(ctx.reader, in, split, &fuzz_callbacks, &ctx, &reason);
    if (code == 0)
        hd_ws_reader_feed(ctx.reader, in + split, len - split, &fuzz_callbacks, &ctx, &reason);
    hd_ws_reader_free(ctx.reader);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const uint8_t *in = data + 1;
    size_t len = size - 1;
    size_t split = len * data[0] / 255; /* 0 .. len */

    feed_split(in, len, split, NULL);
    for (int takeover = 0; takeover <= 1; takeover++) {
        hd_ws_deflate_params params = {true, !takeover, 15, 15};
        hd_ws_inflater *inflater = hd_ws_inflater_new(&params);
        feed_split(in, len, split, inflater);
        hd_ws_inflater_free(inflater);
    }
    return 0;
}
