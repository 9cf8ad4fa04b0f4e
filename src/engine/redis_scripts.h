/*
 * The Redis engine's Lua scripts, compiled into the binary from
 * src/engine/<name>.lua (deps/embed.cmake, wired in CMakeLists.txt): each
 * is hd_<name>_lua, NUL-terminated, and hd_<name>_lua_len bytes long
 * (without the NUL). What a script takes and returns is written at its top.
 * Register one with hd_redis_link_script.
 */
#ifndef HERALD_ENGINE_REDIS_SCRIPTS_H
#define HERALD_ENGINE_REDIS_SCRIPTS_H

#include <stddef.h>

/* One publish, or a batch, in one atomic step: ids, history, trim, fan-out. */
extern const char hd_redis_publish_lua[];
extern const size_t hd_redis_publish_lua_len;

/* What some topics hold after a cursor, with the epoch and the cut (hub.s) as of the read. */
extern const char hd_redis_read_lua[];
extern const size_t hd_redis_read_lua_len;

/* At every connect: a new epoch when Redis restarted or lost the hub; the epoch and the cut. */
extern const char hd_redis_hello_lua[];
extern const size_t hd_redis_hello_lua_len;

/* What the cluster holds of some topics, and a page of its topic index (GET /topics). */
extern const char hd_redis_topics_lua[];
extern const size_t hd_redis_topics_lua_len;

#endif
