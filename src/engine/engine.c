#include "engine/engine.h"

#include <stdlib.h>

#include "herald/alloc.h"
#include "herald/clock.h"

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

/* A read collected under the hub's lock, handed over after it: other workers wait less. */
typedef struct collected {
    size_t topic_count;
    hd_gap *gaps; /* allocated at the first gap: most reads have none */
    size_t gap_count;
    size_t count;
    hd_message *messages[HD_ENGINE_READ_MAX]; /* one reference each */
} collected;

static void collect_gap(void *ctx, const hd_gap *gap)
{
    collected *c = ctx;
    /* At most one per topic; gap->topic and from borrow the query, which outlives the call. */
    if (c->gaps == NULL)
        c->gaps = hd_alloc(c->topic_count * sizeof(*c->gaps));
    c->gaps[c->gap_count++] = *gap;
}

static bool collect_message(void *ctx, hd_message *msg)
{
    collected *c = ctx;
    c->messages[c->count++] = hd_message_retain(msg);
    return true;
}

static const hd_history_visitor collector = {
    .on_gap = collect_gap,
    .on_message = collect_message,
};

bool hd_engine_read_hub(hd_engine *engine, const hd_history_query *query, bool covered_only,
                        hd_engine_read_cb done, void *ctx)
{
    hd_history_query bounded = *query;
    if (bounded.limit == 0 || bounded.limit > HD_ENGINE_READ_MAX)
        bounded.limit = HD_ENGINE_READ_MAX;
    collected c;
    c.topic_count = query->topic_count;
    c.gaps = NULL;
    c.gap_count = c.count = 0;
    hd_history_result result = {.epoch = hd_hub_epoch(engine->hub)};
    if (!covered_only) {
        hd_hub_read_history(engine->hub, &bounded, &collector, &c, &result.more, &result.cut);
    } else if (!hd_hub_read_covered(engine->hub, &bounded, &collector, &c, hd_clock_wall_ms(),
                                    &result.more, &result.epoch, &result.cut)) {
        return false;
    }
    result.gaps = c.gaps;
    result.gap_count = c.gap_count;
    result.messages = c.messages;
    result.count = c.count;
    done(ctx, &result);
    for (size_t i = 0; i < c.count; i++)
        hd_message_release(c.messages[i]);
    free(c.gaps);
    return true;
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
