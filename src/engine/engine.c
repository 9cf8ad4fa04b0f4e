#include "engine/engine.h"

static void engine_on_interest(void *ctx, const char *topic, size_t topic_len, bool interested)
{
    hd_engine *engine = ctx;
    engine->ops->interest(engine, topic, topic_len, interested);
}

void hd_engine_init(hd_engine *engine, const hd_engine_ops *ops, hd_hub *hub)
{
    engine->ops = ops;
    engine->hub = hub;
    if (ops->interest != NULL)
        hd_hub_set_interest(hub, engine_on_interest, engine);
}

const char *hd_engine_state_name(hd_engine_state state)
{
    switch (state) {
    case HD_ENGINE_UP:
        return "up";
    case HD_ENGINE_CONNECTING:
        return "connecting";
    case HD_ENGINE_DOWN:
        return "down";
    }
    return "unknown";
}

void hd_engine_free(hd_engine *engine)
{
    if (engine != NULL)
        engine->ops->free(engine);
}
