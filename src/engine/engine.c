#include "engine/engine.h"

const char *const hd_engine_epoch_reason_names[HD_EPOCH_REASONS] = {"lost", "rollback", "restart",
                                                                    "observed"};
const char *const hd_engine_publish_failure_names[HD_PUBLISH_FAILURES] = {
    "unavailable", "full", "outcome_unknown", "timeout", "oom", "busy", "error"};
const double hd_engine_rtt_bounds[HD_ENGINE_RTT_BUCKETS] = {
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5};

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
