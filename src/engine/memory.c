#include "engine/memory.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#include "herald/alloc.h"

/* A batch up to this size publishes without allocating (the single publish above all). */
#define PUBLISH_ON_STACK 16

static hd_engine_request *memory_publish(hd_engine *engine, const hd_publish_item *items,
                                         size_t count, int64_t now_ms, hd_engine_publish_cb done,
                                         void *ctx)
{
    hd_message *messages_on_stack[PUBLISH_ON_STACK];
    size_t subscribers_on_stack[PUBLISH_ON_STACK];
    bool repeated_on_stack[PUBLISH_ON_STACK];
    bool on_stack = count <= PUBLISH_ON_STACK;
    hd_message **messages = on_stack ? messages_on_stack : hd_alloc(count * sizeof(*messages));
    size_t *subscribers = on_stack ? subscribers_on_stack : hd_alloc(count * sizeof(*subscribers));
    bool *repeated = on_stack ? repeated_on_stack : hd_alloc(count * sizeof(*repeated));

    hd_publish_outcome outcome = {0};
    outcome.status = hd_hub_publish_batch(engine->hub, items, count, now_ms, messages, subscribers,
                                          repeated, &outcome.failed);
    if (outcome.status == HD_HUB_OK) {
        outcome.count = count;
        outcome.messages = messages;
        outcome.subscribers = subscribers;
        outcome.repeated = repeated;
    }
    done(ctx, &outcome);
    for (size_t i = 0; i < outcome.count; i++)
        hd_message_release(messages[i]);
    if (!on_stack) {
        free(messages);
        free(subscribers);
        free(repeated);
    }
    return NULL;
}

static hd_engine_request *memory_read(hd_engine *engine, const hd_history_query *query,
                                      hd_engine_read_cb done, void *ctx)
{
    assert(query->limit >= 1 && query->limit <= HD_ENGINE_READ_MAX);
    hd_engine_read_hub(engine, query, false, done, ctx);
    return NULL;
}

static hd_engine_request *memory_describe(hd_engine *engine, const char *topic, size_t topic_len,
                                          hd_engine_describe_cb done, void *ctx)
{
    hd_topic_description description = {.status = HD_HUB_OK};
    description.found = hd_hub_topic_info(engine->hub, topic, topic_len, &description.info);
    done(ctx, &description);
    return NULL;
}

static hd_engine_request *memory_list(hd_engine *engine, const hd_topic_list_query *query,
                                      hd_engine_list_cb done, void *ctx)
{
    hd_topic_summary *topics = hd_alloc(query->limit * sizeof(*topics));
    hd_topic_list list = {.status = HD_HUB_OK, .topics = topics};
    list.count = hd_hub_list_topics(engine->hub, query->prefix, query->prefix_len, query->after,
                                    query->after_len, query->limit, topics, &list.more);
    done(ctx, &list);
    free(topics);
    return NULL;
}

/* Every call completes before it returns: there is never a request to cancel. */

static hd_engine_state memory_state(const hd_engine *engine)
{
    (void)engine;
    return HD_ENGINE_UP;
}

static void memory_free(hd_engine *engine)
{
    free(engine);
}

static const hd_engine_ops memory_ops = {
    .name = "memory",
    .publish = memory_publish,
    .read = memory_read,
    .describe = memory_describe,
    .list = memory_list,
    .cancel = NULL,
    .interest = NULL, /* every subscriber is local: nothing to subscribe to elsewhere */
    .state = memory_state,
    .free = memory_free,
};

hd_engine *hd_engine_memory_new(hd_hub *hub)
{
    hd_engine *engine = hd_calloc(1, sizeof(*engine));
    hd_engine_init(engine, &memory_ops, hub);
    return engine;
}
