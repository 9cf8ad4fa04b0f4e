/*
 * The memory engine: this process's hub is the store. Ids, history and
 * fan-out are the hub's (herald/hub.h), so one node is one hub, and every
 * call completes before it returns: publish and read call back on the
 * caller's stack and return NULL, and nothing is ever cancelled.
 */
#ifndef HERALD_ENGINE_MEMORY_H
#define HERALD_ENGINE_MEMORY_H

#include "engine/engine.h"

/* The hub stays the caller's, and outlives the engine. */
hd_engine *hd_engine_memory_new(hd_hub *hub);

#endif
