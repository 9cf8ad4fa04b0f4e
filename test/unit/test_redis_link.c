/*
 * Tests for src/engine/redis_link.c against a real redis-server (see
 * redis_harness.h).
 *
 * Covered: connecting and commands (binary-safe), a refused connect that
 * turns UP once the server starts, 10,000 pipelined commands answered in
 * order, AUTH and SELECT, the in-flight bound, the server killed with
 * commands in flight (each answered OUTCOME_UNKNOWN once), a server that
 * stops answering (SIGSTOP: TIMEOUT, then UP after SIGCONT), CLIENT KILL
 * of the pub/sub connection (resubscribed, messages flow again), binary
 * channels and payloads, NOSCRIPT after SCRIPT FLUSH, a pub/sub connection
 * that goes silent (through a proxy in this program that can freeze it),
 * and closing with commands in flight.
 */
#include "redis_harness.h"

static long long blocked_clients(void)
{
    redisReply *r = admin_command("INFO clients");
    const char *at = r && r->str ? strstr(r->str, "blocked_clients:") : NULL;
    long long n = at ? atoll(at + 16) : -1;
    freeReplyObject(r);
    return n;
}

/* ------------------------------------------------------------ proxy */

/*
 * A TCP proxy on the test's loop between the link and redis-server, to do
 * to one of the link's two connections what a network can: stop delivering
 * Redis's bytes (freeze), or reset it. A connection is the pub/sub one once
 * the link sent SUBSCRIBE on it.
 */
typedef struct proxy_conn {
    uv_tcp_t client, server;
    uv_connect_t connect;
    bool is_pubsub;
    bool frozen; /* Redis's bytes are dropped */
    int probes;  /* liveness probes delivered to the link */
    int open;    /* handles not closed yet */
    struct proxy_conn *next;
} proxy_conn;

static struct {
    uv_tcp_t listener;
    int port;
    proxy_conn *conns;
} proxy;

typedef struct proxy_write {
    uv_write_t req;
    char data[];
} proxy_write;

static bool contains(const char *hay, size_t len, const char *needle)
{
    size_t n = strlen(needle);
    for (size_t i = 0; i + n <= len; i++)
        if (memcmp(hay + i, needle, n) == 0)
            return true;
    return false;
}

static void proxy_on_closed(uv_handle_t *handle)
{
    proxy_conn *pc = handle->data;
    if (--pc->open > 0)
        return;
    for (proxy_conn **at = &proxy.conns; *at; at = &(*at)->next)
        if (*at == pc) {
            *at = pc->next;
            break;
        }
    free(pc);
}

static void proxy_close(proxy_conn *pc)
{
    uv_handle_t *ends[] = {(uv_handle_t *)&pc->client, (uv_handle_t *)&pc->server};
    for (int i = 0; i < 2; i++)
        if (!uv_is_closing(ends[i]))
            uv_close(ends[i], proxy_on_closed);
}

static void proxy_on_alloc(uv_handle_t *handle, size_t size, uv_buf_t *buf)
{
    (void)handle;
    buf->base = malloc(size);
    buf->len = size;
}

static void proxy_on_written(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void proxy_on_read(uv_stream_t *from, ssize_t n, const uv_buf_t *buf)
{
    proxy_conn *pc = from->data;
    bool from_client = from == (uv_stream_t *)&pc->client;
    if (n < 0) {
        proxy_close(pc);
    } else if (n > 0) {
        if (from_client && contains(buf->base, (size_t)n, "SUBSCRIBE"))
            pc->is_pubsub = true;
        if (!from_client && !pc->frozen && contains(buf->base, (size_t)n, "herald-link-probe"))
            pc->probes++;
        if (from_client || !pc->frozen) {
            proxy_write *w = malloc(sizeof(*w) + (size_t)n);
            memcpy(w->data, buf->base, (size_t)n);
            uv_buf_t out = uv_buf_init(w->data, (unsigned)n);
            uv_write(&w->req, (uv_stream_t *)(from_client ? &pc->server : &pc->client), &out, 1,
                     proxy_on_written);
        }
    }
    free(buf->base);
}

static void proxy_on_connected(uv_connect_t *req, int status)
{
    proxy_conn *pc = req->data;
    if (status < 0) {
        proxy_close(pc);
        return;
    }
    uv_read_start((uv_stream_t *)&pc->client, proxy_on_alloc, proxy_on_read);
    uv_read_start((uv_stream_t *)&pc->server, proxy_on_alloc, proxy_on_read);
}

static void proxy_on_accept(uv_stream_t *listener, int status)
{
    (void)status;
    proxy_conn *pc = calloc(1, sizeof(*pc));
    uv_tcp_init(&loop, &pc->client);
    uv_tcp_init(&loop, &pc->server);
    pc->client.data = pc->server.data = pc->connect.data = pc;
    pc->open = 2;
    pc->next = proxy.conns;
    proxy.conns = pc;
    struct sockaddr_in addr;
    uv_ip4_addr("127.0.0.1", redis_port, &addr);
    if (uv_accept(listener, (uv_stream_t *)&pc->client) < 0 ||
        uv_tcp_connect(&pc->connect, &pc->server, (struct sockaddr *)&addr, proxy_on_connected) < 0)
        proxy_close(pc);
}

static void proxy_start(void)
{
    struct sockaddr_in addr;
    int len = sizeof(addr);
    uv_ip4_addr("127.0.0.1", 0, &addr);
    uv_tcp_init(&loop, &proxy.listener);
    uv_tcp_bind(&proxy.listener, (struct sockaddr *)&addr, 0);
    uv_listen((uv_stream_t *)&proxy.listener, 16, proxy_on_accept);
    uv_tcp_getsockname(&proxy.listener, (struct sockaddr *)&addr, &len);
    proxy.port = ntohs(addr.sin_port);
}

static void proxy_stop(void)
{
    for (proxy_conn *pc = proxy.conns; pc; pc = pc->next)
        proxy_close(pc);
    uv_close((uv_handle_t *)&proxy.listener, NULL); /* the next loop run completes it */
}

/* The live proxied connection of that kind (pub/sub or command), or NULL. */
static proxy_conn *proxy_find(bool pubsub)
{
    for (proxy_conn *pc = proxy.conns; pc; pc = pc->next)
        if (pc->is_pubsub == pubsub && !uv_is_closing((uv_handle_t *)&pc->client))
            return pc;
    return NULL;
}

/* ------------------------------------------------------------ tests */

static void test_backoff(void)
{
    CHECK_EQ_INT(hd_redis_link_backoff_ms(0, 0), 125);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(0, 0.5), 187);
    CHECK(hd_redis_link_backoff_ms(0, 0.9999999) <= 250);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(1, 0), 250);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(2, 0), 500);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(4, 0), 2000);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(4, 0.999), 3998);
    /* 250 * 2^5 = 8 s is past the 5 s cap. */
    CHECK_EQ_INT(hd_redis_link_backoff_ms(5, 0), 2500);
    CHECK(hd_redis_link_backoff_ms(5, 0.9999999) < 5000);
    CHECK(hd_redis_link_backoff_ms(5, 0.9999999) >= 4999);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(31, 0), 2500);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(64, 0.5), 3750);
    CHECK_EQ_INT(hd_redis_link_backoff_ms(~0u, 1.0), hd_redis_link_backoff_ms(~0u, 0.999999));
    CHECK_EQ_INT(hd_redis_link_backoff_ms(3, -1), 1000);
    CHECK_EQ_STR(hd_redis_link_state_name(HD_REDIS_LINK_DOWN), "down");
    CHECK_EQ_STR(hd_redis_link_state_name(HD_REDIS_LINK_CONNECTING), "connecting");
    CHECK_EQ_STR(hd_redis_link_state_name(HD_REDIS_LINK_UP), "up");
}

/* No server yet: DOWN at once with the refusal (not after the watchdog), then UP once it runs. */
static void test_refused_then_up(void)
{
    hd_redis_link_settings s = settings_for(redis_port, 3000);
    memset(&rec, 0, sizeof(rec));
    hd_redis_link *link = hd_redis_link_new(&loop, &s);
    answer a = {0};
    CHECK_EQ_INT(command(link, &a, "PING", NULL, 0, NULL, 0), HD_REDIS_UNAVAILABLE);
    uint64_t start = now_ms();
    hd_redis_link_start(link);
    CHECK_EQ_INT(rec.state, HD_REDIS_LINK_CONNECTING);
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] > 0, 3000));
    CHECK(now_ms() - start < 1000);
    CHECK(strstr(rec.reason, "refused") != NULL);
    CHECK_EQ_INT(command(link, &a, "PING", NULL, 0, NULL, 0), HD_REDIS_UNAVAILABLE);
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] >= 3, 5000)); /* it keeps trying */

    CHECK(redis_start());
    start = now_ms();
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 8000));
    CHECK(now_ms() - start < 5000); /* the backoff is still short after 3 attempts */
    CHECK_EQ_INT(a.calls, 0);
    link_close(link);
}

static void test_commands(void)
{
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);

    redisReply *info = admin_command("INFO server");
    CHECK(info && strstr(info->str, hd_redis_link_run_id(link)) != NULL);
    CHECK_EQ_INT(strlen(hd_redis_link_run_id(link)), 40);
    CHECK(strstr(rec.reason, hd_redis_link_run_id(link)) != NULL);
    freeReplyObject(info);

    static const char value[] = "a\0b\r\n$3\0";
    answer set = {0}, get = {0}, bad = {0};
    CHECK_EQ_INT(command(link, &set, "SET", "k\0ey", 4, value, sizeof(value)), HD_REDIS_OK);
    CHECK_EQ_INT(command(link, &get, "GET", "k\0ey", 4, NULL, 0), HD_REDIS_OK);
    CHECK_EQ_INT(command(link, &bad, "INCR", "k\0ey", 4, NULL, 0), HD_REDIS_OK);
    CHECK_EQ_INT(set.calls + get.calls + bad.calls, 0); /* never from inside the call */
    CHECK(WAIT_UNTIL(bad.calls == 1, 2000));
    CHECK_EQ_INT(set.status, HD_REDIS_OK);
    CHECK_EQ_INT(set.type, REDIS_REPLY_STATUS);
    CHECK_EQ_INT(get.type, REDIS_REPLY_STRING);
    CHECK_EQ_MEM(get.str, get.len, value, sizeof(value));
    CHECK_EQ_INT(bad.status, HD_REDIS_OK);
    CHECK_EQ_INT(bad.type, REDIS_REPLY_ERROR);
    CHECK(set.order < get.order && get.order < bad.order);
    link_close(link);
    CHECK_EQ_INT(set.calls + get.calls + bad.calls, 3);
}

static void test_pipeline(void)
{
    enum { N = 10000 };
    hd_redis_link_settings s = settings_for(redis_port, 5000);
    hd_redis_link *link = link_up(&s);
    answer *a = calloc(N, sizeof(*a));
    unsigned first = answers_seen;
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(command(link, &a[i], "INCR", "pipeline", 8, NULL, 0), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(a[N - 1].calls == 1, 10000));
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += a[i].calls != 1 || a[i].status != HD_REDIS_OK || a[i].integer != i + 1 ||
                 a[i].order != first + 1 + (unsigned)i;
    CHECK_EQ_INT(wrong, 0);
    free(a);
    link_close(link);
}

static void test_auth_select_and_bound(void)
{
    /* The test server has no password: AUTH is refused, and the reason says so. */
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    snprintf(s.url.password, sizeof(s.url.password), "not-the-password");
    memset(&rec, 0, sizeof(rec));
    hd_redis_link *link = hd_redis_link_new(&loop, &s);
    hd_redis_link_start(link);
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] > 0, 3000));
    CHECK(strstr(rec.reason, "refused the") != NULL && strstr(rec.reason, "AUTH") != NULL);
    CHECK(strstr(rec.reason, "not-the-password") == NULL);
    CHECK_EQ_INT(rec.entered[HD_REDIS_LINK_UP], 0);
    link_close(link);

    /* A db other than 0, and the bound on bytes in flight. */
    s = settings_for(redis_port, 2000);
    s.url.db = 3;
    s.max_inflight_bytes = 100;
    link = link_up(&s);
    char big[80];
    memset(big, 'x', sizeof(big));
    answer a = {0}, b = {0}, c = {0};
    CHECK_EQ_INT(command(link, &a, "SET", "in-db-3", 7, big, sizeof(big)), HD_REDIS_OK);
    CHECK_EQ_INT(command(link, &b, "SET", "in-db-3", 7, big, sizeof(big)), HD_REDIS_FULL);
    CHECK(WAIT_UNTIL(a.calls == 1, 2000));
    CHECK_EQ_INT(command(link, &c, "SET", "in-db-3", 7, big, sizeof(big)), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(c.calls == 1, 2000));
    CHECK_EQ_INT(b.calls, 0);
    freeReplyObject(admin_command("SELECT 3"));
    CHECK_EQ_INT(admin_integer("EXISTS %s", "in-db-3"), 1);
    freeReplyObject(admin_command("SELECT 0"));
    CHECK_EQ_INT(admin_integer("EXISTS %s", "in-db-3"), 0);
    link_close(link);
}

static void test_scripts(void)
{
    static const char body[] = "return {KEYS[1], ARGV[1]}";
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    memset(&rec, 0, sizeof(rec));
    hd_redis_link *link = hd_redis_link_new(&loop, &s);
    const hd_redis_script *script = hd_redis_link_script(link, body, sizeof(body) - 1);
    redisReply *r = admin_command("SCRIPT LOAD %s", body);
    CHECK(r && r->type == REDIS_REPLY_STRING && strcmp(r->str, hd_redis_script_sha(script)) == 0);
    freeReplyObject(r);
    freeReplyObject(admin_command("SCRIPT FLUSH"));
    hd_redis_link_start(link);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 5000));
    /* Loaded by the handshake. */
    r = admin_command("SCRIPT EXISTS %s", hd_redis_script_sha(script));
    CHECK(r && r->elements == 1 && r->element[0]->integer == 1);
    freeReplyObject(r);

    const char *argv[] = {"k\0x", "v\0y"};
    const size_t lens[] = {3, 3};
    answer a = {0}, b = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha(link, script, 1, 2, argv, lens, on_answer, &a), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(a.calls == 1, 2000));
    CHECK_EQ_INT(a.type, REDIS_REPLY_ARRAY);
    CHECK_EQ_INT(a.elements, 2);
    CHECK_EQ_MEM(a.str, a.len, "v\0y", 3);

    /* Redis forgets it: NOSCRIPT is not passed on, the script is loaded and run again. */
    freeReplyObject(admin_command("SCRIPT FLUSH"));
    CHECK_EQ_INT(hd_redis_link_evalsha(link, script, 1, 2, argv, lens, on_answer, &b), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(b.calls == 1, 2000));
    CHECK_EQ_INT(b.status, HD_REDIS_OK);
    CHECK_EQ_INT(b.type, REDIS_REPLY_ARRAY);
    CHECK_EQ_MEM(b.str, b.len, "v\0y", 3);

    /*
     * evalsha_once: NOSCRIPT is passed on, in its place among the commands
     * sent with it (not run again after them), and the script is loaded
     * again for what is sent next.
     */
    freeReplyObject(admin_command("SCRIPT FLUSH"));
    answer once = {0}, after = {0}, next = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha_once(link, script, 1, 2, argv, lens, on_answer, &once),
                 HD_REDIS_OK);
    CHECK_EQ_INT(command(link, &after, "SET", "after-once", 10, "1", 1), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(once.calls == 1 && after.calls == 1, 2000));
    CHECK_EQ_INT(once.status, HD_REDIS_OK);
    CHECK_EQ_INT(once.type, REDIS_REPLY_ERROR);
    CHECK(once.len >= 8 && memcmp(once.str, "NOSCRIPT", 8) == 0);
    CHECK(once.order < after.order);
    CHECK_EQ_INT(hd_redis_link_evalsha_once(link, script, 1, 2, argv, lens, on_answer, &next),
                 HD_REDIS_OK);
    CHECK(WAIT_UNTIL(next.calls == 1, 2000));
    CHECK_EQ_INT(next.type, REDIS_REPLY_ARRAY);
    CHECK_EQ_MEM(next.str, next.len, "v\0y", 3);

    /* A script registered while UP is loaded at once. */
    static const char other[] = "return 7";
    const hd_redis_script *seven = hd_redis_link_script(link, other, sizeof(other) - 1);
    answer c = {0};
    CHECK_EQ_INT(hd_redis_link_evalsha(link, seven, 0, 0, NULL, NULL, on_answer, &c), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(c.calls == 1, 2000));
    CHECK_EQ_INT(c.integer, 7);
    link_close(link);
}

static void test_pubsub_binary(void)
{
    static const char channel[] = "herald-test:c:\0bin";
    static const char payload[] = "1:2:0:1700000000000:0:\0\r\n\xff data";
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);
    hd_redis_link_subscribe(link, channel, sizeof(channel) - 1);
    hd_redis_link_subscribe(link, "plain", 5);
    hd_redis_link_subscribe(link, "plain", 5); /* idempotent */
    CHECK_EQ_INT(rec.subscribed, 1);           /* not from inside the call */
    CHECK(WAIT_UNTIL(rec.subscribed == 3, 2000));
    CHECK_EQ_INT(subscribed_count("plain"), 1);

    redisReply *r =
        admin_command("PUBLISH %b %b", channel, sizeof(channel) - 1, payload, sizeof(payload) - 1);
    CHECK(r && r->integer == 1);
    freeReplyObject(r);
    CHECK(WAIT_UNTIL(rec.messages == 1, 2000));
    CHECK_EQ_MEM(rec.channel, rec.channel_len, channel, sizeof(channel) - 1);
    CHECK_EQ_MEM(rec.payload, rec.payload_len, payload, sizeof(payload) - 1);

    /*
     * Unsubscribed: nothing more of it is passed on. Messages on one
     * connection keep their order, so once the later "plain" one arrived
     * the other would have too.
     */
    hd_redis_link_unsubscribe(link, channel, sizeof(channel) - 1);
    freeReplyObject(admin_command("PUBLISH %b %s", channel, sizeof(channel) - 1, "late"));
    freeReplyObject(admin_command("PUBLISH plain after"));
    CHECK(WAIT_UNTIL(rec.messages == 2, 2000));
    CHECK_EQ_MEM(rec.channel, rec.channel_len, "plain", 5);
    CHECK_EQ_INT(admin_integer("PUBLISH %s x", "plain"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 3, 2000));
    r = admin_command("PUBSUB NUMSUB %b", channel, sizeof(channel) - 1);
    CHECK(r && r->elements == 2 && r->element[1]->integer == 0);
    freeReplyObject(r);

    /* Subscribed again: confirmed again, and it flows again. */
    hd_redis_link_subscribe(link, channel, sizeof(channel) - 1);
    CHECK(WAIT_UNTIL(rec.subscribed == 4, 2000));
    freeReplyObject(admin_command("PUBLISH %b %s", channel, sizeof(channel) - 1, "again"));
    CHECK(WAIT_UNTIL(rec.messages == 4, 2000));
    CHECK_EQ_MEM(rec.payload, rec.payload_len, "again", 5);

    /* Unsubscribed and subscribed again before Redis heard of either: confirmed, still flowing. */
    hd_redis_link_unsubscribe(link, "plain", 5);
    hd_redis_link_subscribe(link, "plain", 5);
    CHECK(WAIT_UNTIL(subscribed_count("plain") == 2, 2000));
    freeReplyObject(admin_command("PUBLISH plain once-more"));
    CHECK(WAIT_UNTIL(rec.messages == 5, 2000));
    CHECK_EQ_MEM(rec.payload, rec.payload_len, "once-more", 9);
    link_close(link);
}

static hd_redis_link *churn_link;

/* Unsubscribes "churn-y" when "churn-x" is confirmed. */
static void unsubscribe_y_on_x(const char *channel, size_t len)
{
    if (len == 7 && memcmp(channel, "churn-x", 7) == 0)
        hd_redis_link_unsubscribe(churn_link, "churn-y", 7);
}

/* (UN)SUBSCRIBEs of one channel pipelined before Redis answers the first. */
static void test_pubsub_churn(void)
{
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);
    hd_redis_link_subscribe(link, "churn", 5);
    CHECK(WAIT_UNTIL(rec.subscribed == 2, 2000));

    /* UNSUBSCRIBE goes out, then SUBSCRIBE behind it: confirmed once both are answered. */
    hd_redis_link_unsubscribe(link, "churn", 5);
    uv_run(&loop, UV_RUN_NOWAIT);
    hd_redis_link_subscribe(link, "churn", 5);
    uv_run(&loop, UV_RUN_NOWAIT);
    CHECK(WAIT_UNTIL(subscribed_count("churn") == 2, 2000));
    CHECK_EQ_INT(admin_integer("PUBLISH churn %s", "1"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 1, 2000));

    /* SUBSCRIBE then UNSUBSCRIBE of a new channel: never confirmed, nothing passed on. */
    hd_redis_link_subscribe(link, "brief", 5);
    uv_run(&loop, UV_RUN_NOWAIT);
    hd_redis_link_unsubscribe(link, "brief", 5);
    uv_run(&loop, UV_RUN_NOWAIT);
    freeReplyObject(admin_command("PUBLISH brief x"));
    CHECK_EQ_INT(admin_integer("PUBLISH churn %s", "2"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 2, 2000));
    CHECK_EQ_MEM(rec.channel, rec.channel_len, "churn", 5);
    CHECK_EQ_INT(subscribed_count("brief"), 0);
    redisReply *r = admin_command("PUBSUB NUMSUB brief");
    CHECK(r && r->elements == 2 && r->element[1]->integer == 0);
    freeReplyObject(r);

    /* And subscribed for good: confirmed, and it flows. */
    hd_redis_link_subscribe(link, "brief", 5);
    CHECK(WAIT_UNTIL(subscribed_count("brief") == 1, 2000));
    CHECK_EQ_INT(admin_integer("PUBLISH brief %s", "3"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 3, 2000));
    CHECK_EQ_MEM(rec.payload, rec.payload_len, "3", 1);

    /*
     * Two channels wanted again while Redis still has them are confirmed
     * one after the other; the first one's callback drops the second,
     * which must then leave Redis too.
     */
    hd_redis_link_subscribe(link, "churn-x", 7);
    hd_redis_link_subscribe(link, "churn-y", 7);
    CHECK(WAIT_UNTIL(subscribed_count("churn-x") == 1 && subscribed_count("churn-y") == 1, 2000));
    hd_redis_link_unsubscribe(link, "churn-x", 7);
    hd_redis_link_unsubscribe(link, "churn-y", 7);
    hd_redis_link_subscribe(link, "churn-x", 7);
    hd_redis_link_subscribe(link, "churn-y", 7);
    churn_link = link;
    rec.subscribed_hook = unsubscribe_y_on_x;
    CHECK(WAIT_UNTIL(subscribed_count("churn-x") == 2, 2000));
    rec.subscribed_hook = NULL;
    CHECK(WAIT_UNTIL(admin_integer("PUBLISH churn-y %s", "gone") == 0, 2000));
    CHECK_EQ_INT(subscribed_count("churn-y"), 1);
    CHECK_EQ_INT(admin_integer("PUBLISH churn-x %s", "here"), 1);
    link_close(link);
}

static void test_pubsub_client_kill(void)
{
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);
    hd_redis_link_subscribe(link, "topic-a", 7);
    hd_redis_link_subscribe(link, "topic-b", 7);
    CHECK(WAIT_UNTIL(rec.subscribed == 3, 2000));
    /* More channels than one SUBSCRIBE carries (512): several batches, all confirmed. */
    enum { MANY = 1200 };
    for (int i = 0; i < MANY; i++) {
        char name[32];
        hd_redis_link_subscribe(link, name, (size_t)snprintf(name, sizeof(name), "many-%d", i));
    }
    CHECK(WAIT_UNTIL(rec.subscribed == 3 + MANY, 2000));
    CHECK_EQ_INT(admin_integer("PUBLISH many-1199 %s", "x"), 1);

    CHECK_EQ_INT(admin_integer("CLIENT KILL TYPE %s", "pubsub"), 1);
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] == 1, 2000));
    CHECK(strstr(rec.reason, "closed the pub/sub connection") != NULL);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP && rec.subscribed == 2 * (3 + MANY), 5000));
    CHECK_EQ_INT(subscribed_count("topic-a"), 2);
    CHECK_EQ_INT(subscribed_count("topic-b"), 2);
    CHECK_EQ_INT(admin_integer("PUBLISH topic-b %s", "back"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 2, 2000));
    CHECK_EQ_MEM(rec.channel, rec.channel_len, "topic-b", 7);
    CHECK_EQ_MEM(rec.payload, rec.payload_len, "back", 4);
    link_close(link);
}

/* The server dies with commands in flight: each is answered OUTCOME_UNKNOWN, once, before DOWN. */
static void test_server_killed(void)
{
    enum { N = 100 };
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);
    answer blocked = {0}, a[N] = {0};
    /* BLPOP holds the connection: the INCRs behind it wait their turn. */
    CHECK_EQ_INT(command(link, &blocked, "BLPOP", "never-pushed", 12, "0", 1), HD_REDIS_OK);
    for (int i = 0; i < N; i++)
        command(link, &a[i], "INCR", "after-blpop", 11, NULL, 0);
    CHECK(WAIT_UNTIL(blocked_clients() == 1, 2000)); /* they reached the server */
    redis_kill();
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] == 1, 3000));
    CHECK_EQ_INT(blocked.calls, 1);
    CHECK_EQ_INT(blocked.status, HD_REDIS_OUTCOME_UNKNOWN);
    int wrong = 0;
    for (int i = 0; i < N; i++)
        wrong += a[i].calls != 1 || a[i].status != HD_REDIS_OUTCOME_UNKNOWN ||
                 a[i].order > rec.answers_at_down;
    CHECK_EQ_INT(wrong, 0);
    answer late = {0};
    CHECK_EQ_INT(command(link, &late, "PING", NULL, 0, NULL, 0), HD_REDIS_UNAVAILABLE);

    CHECK(redis_start());
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 8000));
    CHECK_EQ_INT(command(link, &late, "PING", NULL, 0, NULL, 0), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(late.calls == 1, 2000));
    CHECK_EQ_MEM(late.str, late.len, "PONG", 4);
    link_close(link);
    CHECK_EQ_INT(blocked.calls, 1);
}

/* A server that stops answering: TIMEOUT within timeout_ms, DOWN, and UP again after SIGCONT. */
static void test_server_stopped(void)
{
    enum { TIMEOUT_MS = 500, N = 5 };
    hd_redis_link_settings s = settings_for(redis_port, TIMEOUT_MS);
    hd_redis_link *link = link_up(&s);
    kill(redis_pid, SIGSTOP);
    answer a[N] = {0};
    uint64_t sent = now_ms();
    for (int i = 0; i < N; i++)
        CHECK_EQ_INT(command(link, &a[i], "INCR", "while-stopped", 13, NULL, 0), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(a[N - 1].calls == 1, 3000));
    for (int i = 0; i < N; i++) {
        CHECK_EQ_INT(a[i].calls, 1);
        CHECK_EQ_INT(a[i].status, HD_REDIS_TIMEOUT);
        CHECK(a[i].at_ms - sent >= TIMEOUT_MS - 10);
        /* A tick is 50 ms; the rest is slack for a loaded machine. */
        CHECK(a[i].at_ms - sent <= TIMEOUT_MS + 400);
    }
    CHECK_EQ_INT(rec.state, HD_REDIS_LINK_DOWN);
    CHECK(strstr(rec.reason, "did not answer a command within 500 ms") != NULL);
    /* The kernel still accepts connections for the stopped server: the watchdog ends them. */
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] >= 2, 3000));
    CHECK(strstr(rec.reason, "no answer from") != NULL);
    kill(redis_pid, SIGCONT);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 6000));
    link_close(link);
}

/*
 * The pub/sub connection stops delivering while the command connection
 * works (centrifugo#1189): the probe finds out, the link reconnects and
 * resubscribes. While healthy, probes come back and nothing happens.
 */
static void test_pubsub_silent(void)
{
    proxy_start();
    hd_redis_link_settings s = settings_for(proxy.port, 500);
    s.probe_idle_ms = 200;
    hd_redis_link *link = link_up(&s);
    hd_redis_link_subscribe(link, "topic-s", 7);
    CHECK(WAIT_UNTIL(rec.subscribed == 2, 2000));
    proxy_conn *pc = proxy_find(true);
    CHECK(pc != NULL);
    if (pc == NULL)
        return;
    CHECK(WAIT_UNTIL(pc->probes >= 3, 3000));
    CHECK_EQ_INT(rec.entered[HD_REDIS_LINK_DOWN], 0);
    CHECK_EQ_INT(rec.messages, 0); /* probes are not passed on */

    pc->frozen = true;
    uint64_t frozen_at = now_ms();
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] == 1, 3000));
    CHECK(now_ms() - frozen_at <= 200 + 500 + 500); /* idle, probe timeout, slack */
    CHECK(strstr(rec.reason, "did not deliver the liveness probe within 500 ms") != NULL);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP && subscribed_count("topic-s") == 2, 5000));
    CHECK_EQ_INT(admin_integer("PUBLISH topic-s %s", "flows"), 1);
    CHECK(WAIT_UNTIL(rec.messages == 1, 2000));
    CHECK_EQ_MEM(rec.payload, rec.payload_len, "flows", 5);
    proxy_stop();
    link_close(link);
}

/*
 * A reset command connection: libuv stops the poll and hiredis 0.14 never
 * hears of it (pitfall #1); the link notices within a tick, not after the
 * command timeout, and answers what was in flight OUTCOME_UNKNOWN.
 */
static void test_connection_reset(void)
{
    proxy_start();
    hd_redis_link_settings s = settings_for(proxy.port, 5000);
    hd_redis_link *link = link_up(&s);
    answer blocked = {0};
    CHECK_EQ_INT(command(link, &blocked, "BLPOP", "never-pushed", 12, "0", 1), HD_REDIS_OK);
    CHECK(WAIT_UNTIL(blocked_clients() == 1, 2000));
    proxy_conn *pc = proxy_find(false);
    CHECK(pc != NULL);
    if (pc == NULL)
        return;
    uint64_t reset_at = now_ms();
    uv_tcp_close_reset(&pc->client, proxy_on_closed);
    uv_close((uv_handle_t *)&pc->server, proxy_on_closed);
    CHECK(WAIT_UNTIL(rec.entered[HD_REDIS_LINK_DOWN] == 1, 6000));
    CHECK(now_ms() - reset_at < 1000);
    CHECK(strstr(rec.reason, "the command connection") != NULL &&
          strstr(rec.reason, "reset") != NULL);
    CHECK_EQ_INT(blocked.calls, 1);
    CHECK_EQ_INT(blocked.status, HD_REDIS_OUTCOME_UNKNOWN);
    CHECK(WAIT_UNTIL(rec.state == HD_REDIS_LINK_UP, 5000));
    proxy_stop();
    link_close(link);
}

/* Closing answers what is in flight before it returns, and calls nothing after. */
static void test_close_in_flight(void)
{
    hd_redis_link_settings s = settings_for(redis_port, 2000);
    hd_redis_link *link = link_up(&s);
    answer a[3] = {0};
    for (int i = 0; i < 3; i++)
        command(link, &a[i], "PING", NULL, 0, NULL, 0);
    int states = rec.entered[HD_REDIS_LINK_DOWN];
    hd_redis_link_close(link);
    for (int i = 0; i < 3; i++) {
        CHECK_EQ_INT(a[i].calls, 1);
        CHECK_EQ_INT(a[i].status, HD_REDIS_OUTCOME_UNKNOWN);
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    CHECK_EQ_INT(rec.entered[HD_REDIS_LINK_DOWN], states);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(a[i].calls, 1);

    /* Closed while the first attempt resolves the host. */
    memset(&rec, 0, sizeof(rec));
    link = hd_redis_link_new(&loop, &s);
    hd_redis_link_start(link);
    link_close(link);
    CHECK_EQ_INT(rec.entered[HD_REDIS_LINK_UP], 0);
}

int main(void)
{
    harness_init();

    RUN_TEST(test_backoff);
    RUN_TEST(test_refused_then_up);
    if (redis_pid > 0) {
        RUN_TEST(test_commands);
        RUN_TEST(test_pipeline);
        RUN_TEST(test_auth_select_and_bound);
        RUN_TEST(test_scripts);
        RUN_TEST(test_pubsub_binary);
        RUN_TEST(test_pubsub_churn);
        RUN_TEST(test_pubsub_client_kill);
        RUN_TEST(test_pubsub_silent);
        RUN_TEST(test_connection_reset);
        RUN_TEST(test_close_in_flight);
        RUN_TEST(test_server_stopped);
        RUN_TEST(test_server_killed);
    }
    harness_done();
    return test_summary();
}
