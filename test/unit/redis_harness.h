/*
 * What the Redis engine's tests share: a real redis-server on a free port
 * (started by redis_start, killed by redis_kill and, should the test die,
 * by the kernel through PR_SET_PDEATHSIG), a blocking admin client for the
 * test's own commands, a uv loop with WAIT_UNTIL, and an hd_redis_link
 * whose callbacks record into rec. A missing redis-server is a failure,
 * not a skip: deps/install.sh installs it.
 */
#ifndef HERALD_TEST_REDIS_HARNESS_H
#define HERALD_TEST_REDIS_HARNESS_H

#include <errno.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdarg.h>
#include <stdbool.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include "engine/redis_link.h"
#include "test.h"

static uv_loop_t loop;
static uv_timer_t wake; /* keeps UV_RUN_ONCE returning while a test waits */

/* ------------------------------------------------------------ redis-server */

static pid_t redis_pid = -1;
static int redis_port;
static redisContext *admin; /* a plain blocking client for the test's own commands */

static inline uint64_t now_ms(void)
{
    return uv_hrtime() / 1000000;
}

static inline int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in addr = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t len = sizeof(addr);
    if (fd < 0 || bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0 ||
        getsockname(fd, (struct sockaddr *)&addr, &len) < 0)
        abort();
    close(fd);
    return ntohs(addr.sin_port);
}

static inline void redis_kill(void)
{
    if (redis_pid > 0) {
        kill(redis_pid, SIGKILL);
        waitpid(redis_pid, NULL, 0);
        redis_pid = -1;
    }
    if (admin) {
        redisFree(admin);
        admin = NULL;
    }
}

/* Starts redis-server on redis_port and waits until it answers PING; false on failure. */
static inline bool redis_start(void)
{
    char port[16];
    snprintf(port, sizeof(port), "%d", redis_port);
    pid_t parent = getpid();
    redis_pid = fork();
    if (redis_pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(1);
        if (freopen("/dev/null", "w", stdout) == NULL) /* redis-server's banner; not fatal */
            fprintf(stderr, "cannot silence redis-server: %s\n", strerror(errno));
        execlp("redis-server", "redis-server", "--port", port, "--bind", "127.0.0.1", "--save", "",
               "--appendonly", "no", "--daemonize", "no", (char *)NULL);
        fprintf(stderr, "cannot run redis-server: %s (deps/install.sh installs it)\n",
                strerror(errno));
        _exit(127);
    }
    uint64_t deadline = now_ms() + 10000;
    while (now_ms() < deadline) {
        if (waitpid(redis_pid, NULL, WNOHANG) == redis_pid) {
            redis_pid = -1;
            return false;
        }
        struct timeval tv = {1, 0};
        redisContext *c = redisConnectWithTimeout("127.0.0.1", redis_port, tv);
        if (c && !c->err) {
            redisSetTimeout(c, tv);
            redisReply *r = redisCommand(c, "PING");
            bool ok = r && r->type == REDIS_REPLY_STATUS;
            freeReplyObject(r);
            if (ok) {
                admin = c;
                return true;
            }
        }
        redisFree(c);
        usleep(20000);
    }
    return false;
}

/* Runs an admin command (hiredis format) and returns its reply, which the caller frees. */
static inline redisReply *admin_command(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    redisReply *r = admin ? redisvCommand(admin, fmt, ap) : NULL;
    va_end(ap);
    return r;
}

static inline long long admin_integer(const char *fmt, const char *arg)
{
    redisReply *r = admin_command(fmt, arg);
    long long v = r && r->type == REDIS_REPLY_INTEGER ? r->integer : -1;
    freeReplyObject(r);
    return v;
}

/* ------------------------------------------------------------ recording callbacks */

#define MAX_SEEN 4096

static unsigned answers_seen; /* answers so far, in the order they came */

static struct {
    hd_redis_link_state state;
    int entered[3]; /* how often each state was entered */
    char reason[512];
    int subscribed;
    char subscribed_names[MAX_SEEN][32];
    unsigned answers_at_down; /* answers_seen when DOWN was last reported */
    int messages;
    char channel[64], payload[256];
    size_t channel_len, payload_len;
    void (*subscribed_hook)(const char *channel, size_t len); /* run after recording */
} rec;

static inline void on_state(void *ctx, hd_redis_link_state state, const char *reason)
{
    (void)ctx;
    rec.state = state;
    rec.entered[state]++;
    if (state == HD_REDIS_LINK_DOWN)
        rec.answers_at_down = answers_seen;
    snprintf(rec.reason, sizeof(rec.reason), "%s", reason);
    fprintf(stderr, "     link %s: %s\n", hd_redis_link_state_name(state), reason);
}

static inline void on_subscribed(void *ctx, const char *channel, size_t len)
{
    (void)ctx;
    if (rec.subscribed < MAX_SEEN)
        snprintf(rec.subscribed_names[rec.subscribed], 32, "%.*s", (int)len, channel);
    rec.subscribed++;
    if (rec.subscribed_hook)
        rec.subscribed_hook(channel, len);
}

static inline void on_message(void *ctx, const char *channel, size_t channel_len,
                              const char *payload, size_t payload_len)
{
    (void)ctx;
    rec.messages++;
    rec.channel_len = channel_len < sizeof(rec.channel) ? channel_len : sizeof(rec.channel);
    memcpy(rec.channel, channel, rec.channel_len);
    rec.payload_len = payload_len < sizeof(rec.payload) ? payload_len : sizeof(rec.payload);
    memcpy(rec.payload, payload, rec.payload_len);
}

static inline int subscribed_count(const char *name)
{
    int n = 0;
    for (int i = 0; i < rec.subscribed && i < MAX_SEEN; i++)
        n += strcmp(rec.subscribed_names[i], name) == 0;
    return n;
}

/* One command's answer. */
typedef struct answer {
    int calls;
    hd_redis_status status;
    int type;
    long long integer;
    char str[64];
    size_t len;
    size_t elements;
    uint64_t at_ms;
    unsigned order;
} answer;

static inline void on_answer(void *ctx, hd_redis_status status, const redisReply *reply)
{
    answer *a = ctx;
    a->calls++;
    a->status = status;
    a->at_ms = now_ms();
    a->order = ++answers_seen;
    if (reply) {
        a->type = reply->type;
        a->integer = reply->integer;
        a->elements = reply->elements;
        if (reply->type == REDIS_REPLY_ARRAY && reply->elements > 0)
            reply = reply->element[reply->elements - 1];
        a->len = reply->len < sizeof(a->str) ? reply->len : sizeof(a->str);
        if (reply->str)
            memcpy(a->str, reply->str, a->len);
    }
}

/* ------------------------------------------------------------ helpers */

static inline void on_wake(uv_timer_t *timer)
{
    (void)timer;
}

/* Runs the loop until cond holds or ms pass; the value of cond at the end. */
#define WAIT_UNTIL(cond, ms)                                                                       \
    ({                                                                                             \
        uint64_t deadline_ = now_ms() + (ms);                                                      \
        uv_timer_start(&wake, on_wake, 5, 5);                                                      \
        while (!(cond) && now_ms() < deadline_)                                                    \
            uv_run(&loop, UV_RUN_ONCE);                                                            \
        uv_timer_stop(&wake);                                                                      \
        (cond);                                                                                    \
    })

static const char probe_channel[] = "herald-test:node:1";

static inline hd_redis_link_settings settings_for(int port, uint32_t timeout_ms)
{
    hd_redis_link_settings s = {
        .timeout_ms = timeout_ms,
        .probe_idle_ms = 60000,
        .max_inflight_bytes = 64 << 20,
        .probe_channel = probe_channel,
        .probe_channel_len = sizeof(probe_channel) - 1,
        .on_state = on_state,
        .on_subscribed = on_subscribed,
        .on_message = on_message,
    };
    char url[64], err[128];
    snprintf(url, sizeof(url), "redis://127.0.0.1:%d", port);
    if (hd_redis_url_parse(url, &s.url, err, sizeof(err)) < 0)
        abort();
    return s;
}

static inline hd_redis_link *link_up(const hd_redis_link_settings *s)
{
    memset(&rec, 0, sizeof(rec));
    hd_redis_link *link = hd_redis_link_new(&loop, s);
    hd_redis_link_start(link);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP && subscribed_count(probe_channel) == 1, 5000));
    return link;
}

static inline void link_close(hd_redis_link *link)
{
    hd_redis_link_close(link);
    uv_run(&loop, UV_RUN_DEFAULT); /* the link's and hiredis's handles close */
}

static inline hd_redis_status command(hd_redis_link *link, answer *a, const char *name,
                                      const char *arg1, size_t len1, const char *arg2, size_t len2)
{
    const char *argv[] = {name, arg1, arg2};
    const size_t lens[] = {strlen(name), len1, len2};
    return hd_redis_link_command(link, arg2 ? 3 : arg1 ? 2 : 1, argv, lens, on_answer, a);
}

/* Sets up the loop and picks the server's port; the first thing main does. */
static inline void harness_init(void)
{
    signal(SIGPIPE, SIG_IGN);
    alarm(180); /* a hang fails the test; the server dies with this process */
    uv_loop_init(&loop);
    uv_timer_init(&loop, &wake);
    redis_port = free_port();
}

/* Kills the server and closes the loop; the last thing main does before test_summary. */
static inline void harness_done(void)
{
    redis_kill();
    uv_close((uv_handle_t *)&wake, NULL);
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(uv_loop_close(&loop), 0);
}

#endif
