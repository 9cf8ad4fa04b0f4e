/*
 * fanout — load generator for herald and nchan (libuv). See bench/README.md.
 *
 * One invocation:
 *   1. forks --procs K subscriber processes; process k opens its share of the
 *      --subs N subscribers (subscriber i on topic i % --topics T), each bound
 *      to a source address 127.0.0.(2 + i % --src-addrs) before connect and
 *      connected to port --sub-ports[i % n] (default --port; several nodes of
 *      a cluster), at most --concurrency handshakes in flight per process.
 *      Transports:
 *        sse        GET stream, text/event-stream
 *        ws         WebSocket upgrade (no compression offered)
 *        poll       long-polling on one keep-alive connection: the next
 *                   request goes out as soon as an answer is complete,
 *                   carrying the cursor of that answer
 *        plainpoll  the same with timeout 0, one request every --poll-interval
 *      Cursor style (--cursor): `json` (herald: "cursor" of the JSON answer
 *      passed as &since=) or `etag` (nchan: Last-Modified / Etag answered,
 *      sent back as If-Modified-Since / If-None-Match);
 *   2. when every subscriber is subscribed (or failed), prints a "connect"
 *      result line (connect rate, server RSS before and after);
 *   3. the parent publishes, for each --rates step, at that target rate for
 *      --step-seconds over --pub-conns keep-alive connections, at most
 *      --pipeline requests in flight on each (open loop: message i is due at
 *      t0 + i/R whether or not earlier answers are back; rate 0 = as fast as
 *      the pipeline allows). Topics are taken round-robin. Each body starts
 *      with "ts=<CLOCK_MONOTONIC ns, 20 digits>,seq=<per-topic seq, 10
 *      digits>,st=<step, 3 digits>," written just before the write, padded
 *      with 'x' to --size bytes;
 *   4. subscribers scan every byte they receive for that marker (a streaming
 *      matcher: nothing is buffered per message), count it for its step,
 *      check the per-topic seq (duplicates, reordering), count it for the
 *      subscriber and add now - ts to a fixed log-linear histogram in shared
 *      memory;
 *   5. after each step's publishing, waits until every expected delivery
 *      arrived or --drain seconds passed, asks every subscriber process how
 *      many of its subscribers got fewer (or more) of the step's messages than
 *      were published to their topic, then prints one "step" result line.
 *
 * Everything is bounded in time. Loopback only. No allocation per message:
 * subscriber state is allocated once per connection, publish buffers once
 * per pipeline slot.
 *
 * Build: cc -O2 -o fanout fanout.c -luv
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <dirent.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <uv.h>

#ifndef IP_BIND_ADDRESS_NO_PORT
#define IP_BIND_ADDRESS_NO_PORT 24
#endif

#define MAX_STEPS 40
#define MAX_PROCS 64
#define MAX_TOPICS 4096
#define MAX_PUB_CONNS 64
#define MAX_WATCH 8
#define MAX_SUB_PORTS 16
#define MARKER_LEN 46 /* ts=<20>,seq=<10>,st=<3>, */

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

enum { T_SSE, T_WS, T_POLL, T_PLAINPOLL };
static const char *transport_names[] = {"sse", "ws", "poll", "plainpoll"};
enum { CUR_JSON, CUR_ETAG };

static struct {
    int transport;
    int cursor;
    const char *host;
    int port;
    int pub_port;                 /* 0: --port (a publisher on another node of a cluster) */
    int sub_ports[MAX_SUB_PORTS]; /* subscriber i connects to sub_ports[i % nsub_ports] */
    int nsub_ports;               /* 0: --port */
    const char *topic;            /* prefix: topic t is "<prefix>-<t>" */
    int topics;
    const char *sub_path; /* {topic}, {timeout} */
    const char *pub_path; /* {topic} */
    const char *cursor_param;
    int subs, procs, src_addrs, size, concurrency;
    double rates[MAX_STEPS];
    int nsteps;
    double step_seconds;
    int pub_conns, pipeline;
    double poll_interval;
    int poll_timeout;
    double settle, drain, subscribe_timeout, timeout;
    double max_p99_ms;
    int stop_on_fail, strict, etag_epoch;
    int server_pid;
    /* other processes whose CPU each step reports (the publishing node, Redis) */
    int nwatch;
    int watch_pid[MAX_WATCH];
    const char *watch_name[MAX_WATCH];
    const char *server, *label;
} opt = {
    .transport = T_SSE,
    .cursor = CUR_JSON,
    .host = "127.0.0.1",
    .port = 8080,
    .topic = "bench",
    .topics = 1,
    .pub_path = "/topics/{topic}",
    .cursor_param = "since",
    .subs = 100,
    .procs = 1,
    .src_addrs = 8,
    .size = 256,
    .concurrency = 64,
    .step_seconds = 5,
    .pub_conns = 4,
    .pipeline = 16,
    .poll_interval = 1,
    .poll_timeout = 30,
    .settle = 1,
    .drain = 5,
    .subscribe_timeout = 60,
    .timeout = 600,
    .max_p99_ms = 100,
    .server = "",
    .label = "",
};

static void die(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "fanout: ");
    vfprintf(stderr, fmt, ap);
    fprintf(stderr, "\n");
    va_end(ap);
    exit(2);
}

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

/* ------------------------------------------------------------------------ */
/* Latency histogram: log-linear, 64 sub-buckets per power of two, in ns.   */

#define HIST_SUB_BITS 6
#define HIST_SUB (1 << HIST_SUB_BITS)
#define HIST_LINEAR (2 * HIST_SUB) /* values below are exact */
#define HIST_N (HIST_LINEAR + 48 * HIST_SUB)

static int hist_index(uint64_t v)
{
    if (v < HIST_LINEAR)
        return (int)v;
    int e = 63 - __builtin_clzll(v);
    int shift = e - HIST_SUB_BITS;
    uint64_t m = v >> shift;
    int idx = HIST_LINEAR + (e - HIST_SUB_BITS - 1) * HIST_SUB + (int)(m - HIST_SUB);
    return idx < HIST_N ? idx : HIST_N - 1;
}

static uint64_t hist_value(int idx) /* middle of the bucket */
{
    if (idx < HIST_LINEAR)
        return (uint64_t)idx;
    int e = (idx - HIST_LINEAR) / HIST_SUB + HIST_SUB_BITS + 1;
    uint64_t m = (uint64_t)((idx - HIST_LINEAR) % HIST_SUB + HIST_SUB);
    int shift = e - HIST_SUB_BITS;
    return (m << shift) + ((1ull << shift) >> 1);
}

/* ------------------------------------------------------------------------ */
/* Shared memory: one slot per subscriber process, written by it, read by    */
/* the parent (aligned 64-bit counters; a slightly stale read is harmless). */

typedef struct step_stats {
    uint64_t received, dup, reorder, lat_max, lat_sum;
    uint64_t t_first, t_last;
    uint64_t hist[HIST_N];
} step_stats;

typedef struct proc_shared {
    uint64_t assigned, subscribed, failed, bad_status, disconnects;
    uint64_t bytes_in, bytes_out, requests, foreign_markers;
    uint64_t t_start, t_subscribed;
    uint32_t topic_subs[MAX_TOPICS];
    step_stats st[MAX_STEPS];
} proc_shared;

static proc_shared *g_shared; /* all */
static proc_shared *g_me;     /* this subscriber process's slot */

/* Per-subscriber completeness of a step, asked for by the parent (written by
 * it before it sends 'C' to the subscriber processes; each answers 'C' after
 * writing its counts into its own slot). */
typedef struct count_request {
    int step;
    uint32_t sent[MAX_TOPICS]; /* messages of the step published to each topic */
    uint64_t short_subs[MAX_PROCS], extra_subs[MAX_PROCS];
} count_request;

static count_request *g_count;

/* ------------------------------------------------------------------------ */
/* Helpers                                                                  */

static int fmt_path(char *out, size_t cap, const char *tmpl, int topic, int timeout)
{
    size_t o = 0;
    for (const char *p = tmpl; *p && o + 1 < cap;) {
        if (strncmp(p, "{topic}", 7) == 0) {
            o += (size_t)snprintf(out + o, cap - o, "%s-%d", opt.topic, topic);
            p += 7;
        } else if (strncmp(p, "{timeout}", 9) == 0) {
            o += (size_t)snprintf(out + o, cap - o, "%d", timeout);
            p += 9;
        } else {
            out[o++] = *p++;
        }
        if (o >= cap)
            return -1;
    }
    out[o] = 0;
    return (int)o;
}

static int read_proc_cpu(int pid, double *cpu_s)
{
    if (pid <= 0)
        return -1;
    char path[64], buf[1024];
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = 0;
    char *p = strrchr(buf, ')');
    if (!p)
        return -1;
    unsigned long long ut = 0, st = 0;
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

/* The "KEY: N kB" line of /proc/PID/FILE (status, smaps_rollup); -1 when
 * missing. */
static long read_proc_kb(int pid, const char *file, const char *key)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/%s", pid, file);
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    long v = -1;
    size_t klen = strlen(key);
    while (fgets(line, sizeof line, f)) {
        if (strncmp(line, key, klen) == 0 && line[klen] == ':') {
            v = strtol(line + klen + 1, NULL, 10);
            break;
        }
    }
    fclose(f);
    return v;
}

static long read_vm_kb(int pid, const char *key)
{
    return read_proc_kb(pid, "status", key);
}

static void send_byte(int fd, char c)
{
    while (write(fd, &c, 1) < 0 && errno == EINTR)
        ;
}

/* Open descriptors of process pid (its connections, for a server), -1 when
 * unreadable. */
static long count_fds(int pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/fd", pid);
    DIR *d = opendir(path);
    if (!d)
        return -1;
    long n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ------------------------------------------------------------------------ */
/* Subscriber process                                                       */

#define HEAD_BUF 768
#define REQ_BUF 400
#define CTL_MAX 125
#define CURSOR_MAX 64
#define TAIL_KEEP 200

enum { ST_NEW, ST_CONNECTING, ST_HEAD, ST_BODY, ST_IDLE, ST_CLOSING, ST_CLOSED };
enum { CK_SIZE, CK_EXT, CK_DATA, CK_DATA_END, CK_TRAILER, CK_TRAILER_LINE };

typedef struct sub {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uv_timer_t *timer; /* plainpoll only */
    int index;
    uint16_t topic;
    uint8_t state;
    uint8_t subscribed, subscribed_before, streaming, write_busy;
    uint8_t chunked, ck_state, has_len, conn_close;
    uint8_t ws_in_payload, ws_hdr_len, ws_hdr_need, ws_opcode, ws_fin, ws_masked;
    uint8_t close_sent, close_received;
    uint8_t ws_mask[4];
    uint8_t ws_hdr[14];
    uint8_t ctl_len;
    uint8_t ctl[CTL_MAX];
    uint8_t ms_pos; /* marker matcher: 0xff idle */
    uint16_t ms_st;
    uint32_t ms_seq;
    uint64_t ms_ts;
    uint16_t buf_len;
    int status;
    uint64_t body_left, ck_left;
    uint64_t ws_left, ws_pos;
    int64_t last_seq;
    uint64_t last_sent;
    uint16_t got[MAX_STEPS]; /* deliveries of each step's messages (saturating) */
    char cursor[CURSOR_MAX];
    char etag[CURSOR_MAX];
    char lastmod[48];
    char buf[HEAD_BUF]; /* response head; then the tail of a poll body */
    char req[REQ_BUF];
} sub;

static struct {
    uv_loop_t *loop;
    int index;
    int first, count;
    sub *subs;
    int next, inflight, settled;
    int ready_sent, closing, open_handles;
    int ready_fd, ctl_fd;
    uv_poll_t ctl_poll;
    uv_timer_t subscribe_timer, hard_timer, close_timer;
    struct sockaddr_in server[MAX_SUB_PORTS];
    char ws_key[25];
    uint64_t now;
    int log_budget;
} C;

static char g_read_buf[262144];

/* The port (node) subscriber s connects to: --sub-ports round-robin. */
static int sub_port_index(const sub *s)
{
    return s->index % opt.nsub_ports;
}

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = g_read_buf;
    buf->len = sizeof g_read_buf;
}

static int limited_log(void)
{
    if (C.log_budget <= 0)
        return 0;
    C.log_budget--;
    return 1;
}

static void child_close_all(void);
static void start_more(void);
static void sub_send_poll(sub *s);
static void sub_timer_cb(uv_timer_t *t);

static void check_ready(void)
{
    if (C.ready_sent || C.settled < C.count)
        return;
    C.ready_sent = 1;
    g_me->t_subscribed = uv_hrtime();
    uv_timer_stop(&C.subscribe_timer);
    send_byte(C.ready_fd, 'R');
}

static void on_sub_closed(uv_handle_t *h)
{
    sub *s = h->data;
    s->state = ST_CLOSED;
    C.open_handles--;
    if (C.closing && C.open_handles == 0)
        uv_stop(C.loop);
}

static void mark_subscribed(sub *s)
{
    if (s->subscribed)
        return;
    s->subscribed = 1;
    C.inflight--;
    C.settled++;
    g_me->subscribed++;
    g_me->topic_subs[s->topic]++;
    start_more();
    check_ready();
}

static void sub_close(sub *s, int failed)
{
    if (s->state == ST_CLOSED || s->state == ST_NEW || uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (!s->subscribed) {
        C.inflight--;
        C.settled++;
        if (failed)
            g_me->failed++;
    } else if (!C.closing) {
        g_me->disconnects++;
    }
    if (s->timer)
        uv_timer_stop(s->timer);
    s->state = ST_CLOSING;
    uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
    if (!C.closing) {
        start_more();
        check_ready();
    }
}

/* ---- marker matcher: "ts=" 20 digits ",seq=" 10 digits ",st=" 3 digits "," ---- */

static const char MARKER_PAT[] = "ts=DDDDDDDDDDDDDDDDDDDD,seq=DDDDDDDDDD,st=DDD,";

static void on_marker(sub *s)
{
    unsigned st = s->ms_st;
    if (st >= MAX_STEPS) {
        g_me->foreign_markers++;
        return;
    }
    step_stats *x = &g_me->st[st];
    uint64_t lat = C.now > s->ms_ts ? C.now - s->ms_ts : 0;
    x->hist[hist_index(lat)]++;
    x->lat_sum += lat;
    if (lat > x->lat_max)
        x->lat_max = lat;
    if (x->t_first == 0)
        x->t_first = C.now;
    x->t_last = C.now;
    x->received++;
    if (s->got[st] < UINT16_MAX)
        s->got[st]++;
    int64_t seq = s->ms_seq;
    if (seq == s->last_seq)
        x->dup++;
    else if (seq < s->last_seq)
        x->reorder++;
    else
        s->last_seq = seq;
}

/* Parses `width` ASCII digits at p into *out; 0 when one is not a digit. */
static int parse_digits(const char *p, int width, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < width; i++) {
        unsigned d = (unsigned)(p[i] - '0');
        if (d > 9)
            return 0;
        v = v * 10 + d;
    }
    *out = v;
    return 1;
}

/* A whole marker inside one read: fixed offsets, no per-byte state. Keeps the
 * load generator well under the server's cost per delivery. */
static int scan_whole_marker(sub *s, const char *m)
{
    uint64_t ts, seq, st;
    if (memcmp(m + 23, ",seq=", 5) != 0 || memcmp(m + 38, ",st=", 4) != 0 || m[45] != ',' ||
        !parse_digits(m + 3, 20, &ts) || !parse_digits(m + 28, 10, &seq) ||
        !parse_digits(m + 42, 3, &st))
        return 0;
    s->ms_ts = ts;
    s->ms_seq = (uint32_t)seq;
    s->ms_st = (uint16_t)st;
    on_marker(s);
    return 1;
}

static void scan(sub *s, const char *p, size_t n)
{
    const char *end = p + n;
    while (p < end) {
        if (s->ms_pos == 0xff) {
            const char *t = memchr(p, 't', (size_t)(end - p));
            if (!t)
                return;
            if ((size_t)(end - t) >= MARKER_LEN && t[1] == 's' && t[2] == '=' &&
                scan_whole_marker(s, t)) {
                p = t + MARKER_LEN;
                continue;
            }
            p = t + 1;
            s->ms_pos = 1;
            s->ms_ts = 0;
            s->ms_seq = 0;
            s->ms_st = 0;
            continue;
        }
        char c = *p++;
        unsigned pos = s->ms_pos;
        char want = MARKER_PAT[pos];
        if (want == 'D') {
            if (c < '0' || c > '9')
                goto mismatch;
            unsigned d = (unsigned)(c - '0');
            if (pos < 23)
                s->ms_ts = s->ms_ts * 10 + d;
            else if (pos < 38)
                s->ms_seq = s->ms_seq * 10 + d;
            else
                s->ms_st = (uint16_t)(s->ms_st * 10 + d);
        } else if (c != want) {
            goto mismatch;
        }
        if (++s->ms_pos == MARKER_LEN) {
            on_marker(s);
            s->ms_pos = 0xff;
        }
        continue;
    mismatch:
        s->ms_pos = 0xff;
        if (c == 't') {
            s->ms_pos = 1;
            s->ms_ts = 0;
            s->ms_seq = 0;
            s->ms_st = 0;
        }
    }
}

/* ---- WebSocket control frames (rare: pings, close) ---- */

typedef struct wreq {
    uv_write_t req;
    char data[4 + 8 + CTL_MAX + 8];
} wreq;

static void on_free_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

static void ws_send_control(sub *s, uint8_t opcode, const uint8_t *payload, size_t len)
{
    if (len > CTL_MAX)
        len = CTL_MAX;
    wreq *w = malloc(sizeof *w);
    if (!w)
        return;
    uint8_t *d = (uint8_t *)w->data;
    uint32_t r = (uint32_t)rand();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    d[0] = 0x80 | opcode;
    d[1] = 0x80 | (uint8_t)len;
    memcpy(d + 2, mask, 4);
    for (size_t i = 0; i < len; i++)
        d[6 + i] = payload[i] ^ mask[i & 3];
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(6 + len));
    g_me->bytes_out += 6 + len;
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_free_write) != 0)
        free(w);
}

static void ws_send_close(sub *s)
{
    if (s->close_sent)
        return;
    s->close_sent = 1;
    uint8_t code[2] = {0x03, 0xe8};
    ws_send_control(s, 0x8, code, 2);
}

static void ws_frame_end(sub *s)
{
    switch (s->ws_opcode) {
    case 0x8:
        s->close_received = 1;
        if (!s->close_sent) {
            if (!C.closing && limited_log()) {
                unsigned code = s->ctl_len >= 2 ? (unsigned)(s->ctl[0] << 8 | s->ctl[1]) : 0;
                fprintf(stderr, "fanout[%d]: server sent WebSocket close %u\n", C.index, code);
            }
            ws_send_control(s, 0x8, s->ctl, s->ctl_len >= 2 ? 2 : 0);
            s->close_sent = 1;
        }
        if (C.closing)
            sub_close(s, 0);
        break;
    case 0x9:
        ws_send_control(s, 0xA, s->ctl, s->ctl_len);
        break;
    default:
        break;
    }
}

static void ws_bytes(sub *s, const char *p, size_t n)
{
    while (n) {
        if (!s->ws_in_payload) {
            s->ws_hdr[s->ws_hdr_len++] = (uint8_t)*p++;
            n--;
            if (s->ws_hdr_len == 2) {
                uint8_t len7 = s->ws_hdr[1] & 0x7f;
                s->ws_hdr_need = (uint8_t)(2 +
                                           (len7 == 126   ? 2
                                            : len7 == 127 ? 8
                                                          : 0) +
                                           ((s->ws_hdr[1] & 0x80) ? 4 : 0));
            }
            if (s->ws_hdr_len < 2 || s->ws_hdr_len < s->ws_hdr_need)
                continue;
            const uint8_t *h = s->ws_hdr;
            s->ws_fin = h[0] >> 7;
            s->ws_opcode = h[0] & 0x0f;
            s->ws_masked = h[1] >> 7;
            uint64_t len = h[1] & 0x7f;
            int off = 2;
            if (len == 126) {
                len = (uint64_t)h[2] << 8 | h[3];
                off = 4;
            } else if (len == 127) {
                len = 0;
                for (int i = 0; i < 8; i++)
                    len = len << 8 | h[2 + i];
                off = 10;
            }
            if (s->ws_masked)
                memcpy(s->ws_mask, h + off, 4);
            if (s->ws_opcode >= 0x8)
                s->ctl_len = 0;
            s->ws_left = len;
            s->ws_pos = 0;
            s->ws_hdr_len = 0;
            s->ws_hdr_need = 0;
            if (len == 0)
                ws_frame_end(s);
            else
                s->ws_in_payload = 1;
            continue;
        }
        size_t take = n < s->ws_left ? n : (size_t)s->ws_left;
        if (s->ws_opcode >= 0x8) {
            for (size_t i = 0; i < take; i++) {
                uint8_t c = (uint8_t)p[i];
                if (s->ws_masked)
                    c ^= s->ws_mask[(s->ws_pos + i) & 3];
                if (s->ctl_len < CTL_MAX)
                    s->ctl[s->ctl_len++] = c;
            }
        } else if (!s->ws_masked) {
            scan(s, p, take);
        } else {
            char tmp[1024];
            for (size_t done = 0; done < take;) {
                size_t k = take - done < sizeof tmp ? take - done : sizeof tmp;
                for (size_t i = 0; i < k; i++)
                    tmp[i] = (char)((uint8_t)p[done + i] ^ s->ws_mask[(s->ws_pos + done + i) & 3]);
                scan(s, tmp, k);
                done += k;
            }
        }
        s->ws_pos += take;
        s->ws_left -= take;
        p += take;
        n -= take;
        if (s->ws_left == 0) {
            s->ws_in_payload = 0;
            ws_frame_end(s);
        }
    }
}

/* ---- poll bodies: scan, keep the tail (for "cursor") ---- */

static void poll_body_bytes(sub *s, const char *p, size_t n)
{
    scan(s, p, n);
    if (opt.cursor != CUR_JSON)
        return;
    if (n >= TAIL_KEEP) {
        memcpy(s->buf, p + n - TAIL_KEEP, TAIL_KEEP);
        s->buf_len = TAIL_KEEP;
    } else {
        if (s->buf_len + n > TAIL_KEEP) {
            size_t drop = s->buf_len + n - TAIL_KEEP;
            memmove(s->buf, s->buf + drop, s->buf_len - drop);
            s->buf_len = (uint16_t)(s->buf_len - drop);
        }
        memcpy(s->buf + s->buf_len, p, n);
        s->buf_len = (uint16_t)(s->buf_len + n);
    }
}

static void content_bytes(sub *s, const char *p, size_t n)
{
    if (opt.transport == T_WS)
        ws_bytes(s, p, n);
    else if (opt.transport == T_SSE)
        scan(s, p, n);
    else
        poll_body_bytes(s, p, n);
}

static void poll_answer_done(sub *s)
{
    /* more waiting at once? herald says "more":true; nchan answers one
     * message per request, so any message may have a successor */
    int more = s->status == 200 &&
               (opt.cursor == CUR_ETAG || memmem(s->buf, s->buf_len, "\"more\":true", 11));
    if (opt.cursor == CUR_JSON && s->status == 200) {
        char *c = memmem(s->buf, s->buf_len, "\"cursor\":\"", 10);
        if (c) {
            c += 10;
            char *e = memchr(c, '"', (size_t)(s->buf + s->buf_len - c));
            if (e && e - c < CURSOR_MAX) {
                memcpy(s->cursor, c, (size_t)(e - c));
                s->cursor[e - c] = 0;
            }
        } else if (limited_log()) {
            fprintf(stderr, "fanout[%d]: poll answer without a cursor\n", C.index);
        }
        if (!s->cursor[0]) {
            sub_close(s, 1);
            return;
        }
    }
    s->buf_len = 0;
    s->state = ST_IDLE;
    s->subscribed_before = s->subscribed;
    mark_subscribed(s);
    if (s->conn_close) {
        sub_close(s, 0);
        return;
    }
    if (C.closing)
        return;
    if (opt.transport == T_POLL || (more && s->subscribed_before)) {
        sub_send_poll(s);
    } else {
        uint64_t due = s->last_sent + (uint64_t)(opt.poll_interval * 1e9);
        uint64_t now = uv_hrtime();
        uv_timer_start(s->timer, sub_timer_cb, due > now ? (due - now) / 1000000 : 0, 0);
    }
}

/* Body bytes of an answer: returns how many were consumed (rest: next answer). */
static size_t body_bytes(sub *s, const char *p, size_t n)
{
    if (s->streaming && !s->chunked) {
        content_bytes(s, p, n);
        return n;
    }
    if (!s->chunked) { /* Content-Length */
        size_t take = n < s->body_left ? n : (size_t)s->body_left;
        content_bytes(s, p, take);
        s->body_left -= take;
        if (s->body_left == 0)
            poll_answer_done(s);
        return take;
    }
    const char *start = p;
    while (n && (s->state == ST_BODY)) {
        switch (s->ck_state) {
        case CK_SIZE:
        case CK_EXT: {
            char c = *p++;
            n--;
            if (c == '\n') {
                s->ck_state = s->ck_left ? CK_DATA : CK_TRAILER;
            } else if (s->ck_state == CK_SIZE) {
                int v = (c >= '0' && c <= '9')   ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
                if (v >= 0)
                    s->ck_left = s->ck_left * 16 + (uint64_t)v;
                else
                    s->ck_state = CK_EXT;
            }
            break;
        }
        case CK_DATA: {
            size_t take = n < s->ck_left ? n : (size_t)s->ck_left;
            content_bytes(s, p, take);
            p += take;
            n -= take;
            s->ck_left -= take;
            if (s->ck_left == 0)
                s->ck_state = CK_DATA_END;
            break;
        }
        case CK_DATA_END:
            if (*p == '\n') {
                s->ck_state = CK_SIZE;
                s->ck_left = 0;
            }
            p++;
            n--;
            break;
        case CK_TRAILER: /* start of a trailer line; an empty one ends the body */
        case CK_TRAILER_LINE: {
            char c = *p++;
            n--;
            if (c == '\n') {
                if (s->ck_state == CK_TRAILER) {
                    if (s->streaming) {
                        sub_close(s, 0);
                        return (size_t)(p - start) + n;
                    }
                    poll_answer_done(s);
                } else {
                    s->ck_state = CK_TRAILER;
                }
            } else if (c != '\r') {
                s->ck_state = CK_TRAILER_LINE;
            }
            break;
        }
        }
    }
    return (size_t)(p - start);
}

static void header_value(const char *head, const char *name, char *out, size_t cap)
{
    const char *h = strcasestr(head, name);
    out[0] = 0;
    if (!h)
        return;
    h += strlen(name);
    while (*h == ' ')
        h++;
    size_t l = strcspn(h, "\r\n");
    if (l >= cap)
        l = cap - 1;
    memcpy(out, h, l);
    out[l] = 0;
}

/* A complete response head is in s->buf[0..head_len). */
static int on_head(sub *s, size_t head_len)
{
    s->buf[head_len - 1] = 0;
    int status = 0;
    if (head_len > 12 && strncmp(s->buf, "HTTP/1.", 7) == 0)
        status = atoi(s->buf + 9);
    s->status = status;
    int ok;
    if (opt.transport == T_SSE)
        ok = status == 200;
    else if (opt.transport == T_WS)
        ok = status == 101;
    else /* nchan answers "nothing new" with 304, a long-poll timeout with 408 */
        ok = status == 200 || status == 304 || status == 408;
    if (!ok) {
        g_me->bad_status++;
        if (limited_log()) {
            size_t l = strcspn(s->buf, "\r\n");
            fprintf(stderr, "fanout[%d]: subscriber got \"%.*s\"\n", C.index,
                    (int)(l < 100 ? l : 100), s->buf);
        }
        sub_close(s, !s->subscribed);
        return -1;
    }
    s->chunked = strcasestr(s->buf, "\ntransfer-encoding: chunked") != NULL;
    s->ck_state = CK_SIZE;
    s->ck_left = 0;
    char *cl = strcasestr(s->buf, "\ncontent-length:");
    s->has_len = cl != NULL;
    s->body_left = cl ? strtoull(cl + 16, NULL, 10) : 0;
    s->conn_close = strcasestr(s->buf, "\nconnection: close") != NULL;
    if (opt.cursor == CUR_ETAG && status == 200 && opt.transport >= T_POLL) {
        char lm[48], et[CURSOR_MAX];
        header_value(s->buf, "\nlast-modified:", lm, sizeof lm);
        header_value(s->buf, "\netag:", et, sizeof et);
        if (lm[0]) {
            memcpy(s->lastmod, lm, sizeof lm);
            memcpy(s->etag, et, sizeof et);
        }
    }
    s->buf_len = 0;
    s->state = ST_BODY;
    if (opt.transport == T_SSE || opt.transport == T_WS) {
        s->streaming = 1;
        mark_subscribed(s);
    } else if (!s->chunked && s->body_left == 0) {
        poll_answer_done(s);
    }
    return 0;
}

static void on_sub_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    sub *s = stream->data;
    if (nread < 0) {
        if (!C.closing && limited_log())
            fprintf(stderr, "fanout[%d]: subscriber %d: %s\n", C.index, s->index,
                    uv_err_name((int)nread));
        sub_close(s, 1);
        return;
    }
    if (nread == 0)
        return;
    g_me->bytes_in += (uint64_t)nread;
    C.now = uv_hrtime();
    const char *p = buf->base;
    size_t n = (size_t)nread;
    while (n && s->state != ST_CLOSING && s->state != ST_CLOSED) {
        if (s->state == ST_HEAD) {
            size_t old = s->buf_len;
            size_t room = HEAD_BUF - 1 - old;
            size_t copy = n < room ? n : room;
            memcpy(s->buf + old, p, copy);
            s->buf_len = (uint16_t)(s->buf_len + copy);
            size_t from = old > 3 ? old - 3 : 0;
            char *e = memmem(s->buf + from, s->buf_len - from, "\r\n\r\n", 4);
            if (!e) {
                if (s->buf_len >= HEAD_BUF - 1) {
                    fprintf(stderr, "fanout[%d]: response head too long\n", C.index);
                    sub_close(s, 1);
                }
                return;
            }
            size_t head_len = (size_t)(e - s->buf) + 4;
            size_t consumed = head_len - old;
            p += consumed;
            n -= consumed;
            if (on_head(s, head_len) != 0)
                return;
        } else if (s->state == ST_BODY) {
            size_t k = body_bytes(s, p, n);
            p += k;
            n -= k;
        } else if (s->state == ST_IDLE) {
            if (limited_log())
                fprintf(stderr, "fanout[%d]: %zu unexpected bytes between answers\n", C.index, n);
            return;
        } else {
            return;
        }
    }
}

static void on_request_written(uv_write_t *req, int status)
{
    sub *s = req->data;
    s->write_busy = 0;
    if (status < 0 && s->state != ST_CLOSING && s->state != ST_CLOSED) {
        if (limited_log())
            fprintf(stderr, "fanout[%d]: write: %s\n", C.index, uv_err_name(status));
        sub_close(s, 1);
    }
}

static void sub_write_req(sub *s, int len)
{
    uv_buf_t b = uv_buf_init(s->req, (unsigned)len);
    s->write_req.data = s;
    s->write_busy = 1;
    s->last_sent = uv_hrtime();
    g_me->bytes_out += (uint64_t)len;
    g_me->requests++;
    if (uv_write(&s->write_req, (uv_stream_t *)&s->tcp, &b, 1, on_request_written) != 0) {
        s->write_busy = 0;
        sub_close(s, 1);
    }
}

/* Builds and sends the next poll request (no allocation). */
static void sub_send_poll(sub *s)
{
    if (C.closing || s->state != ST_IDLE || s->write_busy)
        return;
    char path[300];
    int first = !s->subscribed;
    int timeout =
        (opt.transport == T_PLAINPOLL || (first && opt.cursor == CUR_JSON)) ? 0 : opt.poll_timeout;
    if (fmt_path(path, sizeof path, opt.sub_path, s->topic, timeout) < 0)
        die("path too long");
    int l;
    if (opt.cursor == CUR_JSON) {
        l = snprintf(s->req, REQ_BUF, "GET %s%s%s%s%s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path,
                     s->cursor[0] ? (strchr(path, '?') ? "&" : "?") : "",
                     s->cursor[0] ? opt.cursor_param : "", s->cursor[0] ? "=" : "", s->cursor,
                     opt.host, opt.sub_ports[sub_port_index(s)]);
    } else if (!s->lastmod[0]) {
        l = snprintf(s->req, REQ_BUF, "GET %s HTTP/1.1\r\nHost: %s:%d\r\n\r\n", path, opt.host,
                     opt.sub_ports[sub_port_index(s)]);
    } else {
        l = snprintf(
            s->req, REQ_BUF,
            "GET %s HTTP/1.1\r\nHost: %s:%d\r\nIf-Modified-Since: %s\r\nIf-None-Match: %s\r\n\r\n",
            path, opt.host, opt.sub_ports[sub_port_index(s)], s->lastmod, s->etag);
    }
    if (l <= 0 || l >= REQ_BUF)
        die("request too long");
    s->state = ST_HEAD;
    s->buf_len = 0;
    sub_write_req(s, l);
    /* nchan style: nothing confirms a waiting long-poll; it counts as
     * subscribed once its first request is written (--settle covers the rest) */
    if (first && opt.cursor == CUR_ETAG)
        mark_subscribed(s);
}

static void sub_timer_cb(uv_timer_t *t)
{
    sub_send_poll((sub *)t->data);
}

static void on_connect(uv_connect_t *req, int status)
{
    sub *s = req->data;
    if (status < 0) {
        if (limited_log())
            fprintf(stderr, "fanout[%d]: connect: %s\n", C.index, uv_err_name(status));
        sub_close(s, 1);
        return;
    }
    if (uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    uv_tcp_nodelay(&s->tcp, 1);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_sub_read);
    if (opt.transport == T_POLL || opt.transport == T_PLAINPOLL) {
        s->state = ST_IDLE;
        sub_send_poll(s);
        return;
    }
    char path[300];
    fmt_path(path, sizeof path, opt.sub_path, s->topic, opt.poll_timeout);
    int l;
    if (opt.transport == T_SSE)
        l = snprintf(s->req, REQ_BUF,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                     "Cache-Control: no-cache\r\n\r\n",
                     path, opt.host, opt.sub_ports[sub_port_index(s)]);
    else
        l = snprintf(s->req, REQ_BUF,
                     "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                     "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                     "Sec-WebSocket-Version: 13\r\n\r\n",
                     path, opt.host, opt.sub_ports[sub_port_index(s)], C.ws_key);
    if (l <= 0 || l >= REQ_BUF)
        die("request too long");
    s->state = ST_HEAD;
    s->buf_len = 0;
    sub_write_req(s, l);
}

static void start_one(sub *s, int gi)
{
    s->index = gi;
    s->topic = (uint16_t)(gi % opt.topics);
    s->last_seq = -1;
    s->ms_pos = 0xff;
    /* nchan: "everything after the start of time"; the channel is fresh */
    if (opt.etag_epoch) {
        strcpy(s->lastmod, "Thu, 01 Jan 1970 00:00:01 GMT");
        strcpy(s->etag, "0");
    }
    s->tcp.data = s;
    s->connect_req.data = s;
    C.inflight++;
    int rc = uv_tcp_init_ex(C.loop, &s->tcp, AF_INET);
    if (rc != 0) {
        C.inflight--;
        C.settled++;
        g_me->failed++;
        s->state = ST_CLOSED;
        if (limited_log())
            fprintf(stderr, "fanout[%d]: socket: %s\n", C.index, uv_err_name(rc));
        return;
    }
    C.open_handles++;
    s->state = ST_CONNECTING;
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    }
    struct sockaddr_in src;
    char ip[32];
    snprintf(ip, sizeof ip, "127.0.0.%d", 2 + gi % opt.src_addrs);
    uv_ip4_addr(ip, 0, &src);
    rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&src, 0);
    if (rc == 0)
        rc = uv_tcp_connect(&s->connect_req, &s->tcp,
                            (const struct sockaddr *)&C.server[sub_port_index(s)], on_connect);
    if (rc != 0) {
        if (limited_log())
            fprintf(stderr, "fanout[%d]: bind/connect %s: %s\n", C.index, ip, uv_err_name(rc));
        sub_close(s, 1);
    }
}

static void start_more(void)
{
    while (!C.ready_sent && !C.closing && C.inflight < opt.concurrency && C.next < C.count) {
        int i = C.next++;
        start_one(&C.subs[i], C.first + i);
    }
}

static void on_subscribe_timeout(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout[%d]: subscribe timeout: %d of %d settled\n", C.index, C.settled,
            C.count);
    for (int i = 0; i < C.next; i++)
        if (!C.subs[i].subscribed)
            sub_close(&C.subs[i], 1);
    g_me->failed += (uint64_t)(C.count - C.next);
    C.settled += C.count - C.next;
    C.next = C.count;
    check_ready();
}

static void on_close_timeout(uv_timer_t *t)
{
    (void)t;
    for (int i = 0; i < C.count; i++) {
        sub *s = &C.subs[i];
        if (s->state != ST_CLOSED && s->state != ST_NEW && !uv_is_closing((uv_handle_t *)&s->tcp))
            uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
    }
    uv_stop(C.loop);
}

static void on_hard_timeout(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout[%d]: --timeout reached\n", C.index);
    child_close_all();
}

static void child_close_all(void)
{
    if (C.closing)
        return;
    C.closing = 1;
    uv_timer_stop(&C.subscribe_timer);
    uv_timer_stop(&C.hard_timer);
    uv_poll_stop(&C.ctl_poll);
    for (int i = 0; i < C.count; i++) {
        sub *s = &C.subs[i];
        if (s->timer)
            uv_timer_stop(s->timer);
        if (s->state == ST_NEW || s->state == ST_CLOSED || uv_is_closing((uv_handle_t *)&s->tcp))
            continue;
        if (opt.transport == T_WS && s->streaming) {
            ws_send_close(s);
            s->state = ST_CLOSING;
            if (s->close_received)
                uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
        } else {
            s->state = ST_CLOSING;
            uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
        }
    }
    if (C.open_handles == 0)
        uv_stop(C.loop);
    else
        uv_timer_start(&C.close_timer, on_close_timeout, 3000, 0);
}

/* Parent's 'C': how many of this process's subscribers (those counted as
 * subscribed, disconnected ones included) got fewer or more of step
 * g_count->step's messages than were published to their topic. */
static void on_count_request(void)
{
    int st = g_count->step;
    uint64_t short_subs = 0, extra_subs = 0;
    for (int i = 0; i < C.count; i++) {
        const sub *s = &C.subs[i];
        if (!s->subscribed)
            continue;
        uint32_t want = g_count->sent[s->topic];
        if (s->got[st] < want)
            short_subs++;
        else if (s->got[st] > want)
            extra_subs++;
    }
    g_count->short_subs[C.index] = short_subs;
    g_count->extra_subs[C.index] = extra_subs;
    send_byte(C.ready_fd, 'C');
}

static void on_ctl(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)events;
    char c = 0;
    ssize_t r = status < 0 ? -1 : read(C.ctl_fd, &c, 1);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0 || c == 'X')
        child_close_all();
    else if (c == 'C')
        on_count_request();
}

static void child_main(int index, int ready_fd, int ctl_fd)
{
    memset(&C, 0, sizeof C);
    C.index = index;
    C.ready_fd = ready_fd;
    C.ctl_fd = ctl_fd;
    C.log_budget = 10;
    int per = opt.subs / opt.procs, extra = opt.subs % opt.procs;
    C.first = index * per + (index < extra ? index : extra);
    C.count = per + (index < extra ? 1 : 0);
    g_me->assigned = (uint64_t)C.count;
    g_me->t_start = uv_hrtime();
    srand((unsigned)(getpid() ^ uv_hrtime()));
    C.subs = calloc((size_t)(C.count ? C.count : 1), sizeof(sub));
    if (!C.subs)
        die("out of memory");
    for (int i = 0; i < opt.nsub_ports; i++)
        uv_ip4_addr(opt.host, opt.sub_ports[i], &C.server[i]);
    static const char b64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    for (int i = 0; i < 21; i++)
        C.ws_key[i] = b64[rand() & 63];
    C.ws_key[21] = b64[(rand() & 3) << 4];
    C.ws_key[22] = C.ws_key[23] = '=';

    C.loop = uv_default_loop();
    if (opt.transport == T_PLAINPOLL) {
        uv_timer_t *timers = calloc((size_t)(C.count ? C.count : 1), sizeof(uv_timer_t));
        if (!timers)
            die("out of memory");
        for (int i = 0; i < C.count; i++) {
            C.subs[i].timer = &timers[i];
            uv_timer_init(C.loop, &timers[i]);
            timers[i].data = &C.subs[i];
        }
    }
    fcntl(ctl_fd, F_SETFL, fcntl(ctl_fd, F_GETFL) | O_NONBLOCK);
    uv_poll_init(C.loop, &C.ctl_poll, ctl_fd);
    uv_poll_start(&C.ctl_poll, UV_READABLE, on_ctl);
    uv_timer_init(C.loop, &C.subscribe_timer);
    uv_timer_init(C.loop, &C.hard_timer);
    uv_timer_init(C.loop, &C.close_timer);
    uv_timer_start(&C.subscribe_timer, on_subscribe_timeout,
                   (uint64_t)(opt.subscribe_timeout * 1000), 0);
    uv_timer_start(&C.hard_timer, on_hard_timeout, (uint64_t)(opt.timeout * 1000), 0);
    start_more();
    check_ready();
    uv_run(C.loop, UV_RUN_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Publisher (in the parent): --pub-conns keep-alive connections, pipelined  */

typedef struct pub_req {
    uv_write_t req;
    struct pub_conn *conn;
    struct pub_req *next_free;
} pub_req;

typedef struct pub_conn {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    int index, connected, dead, reopen;
    char **slot;        /* --pipeline request buffers */
    int sent, answered; /* counts; slot = sent % pipeline */
    uv_buf_t *batch;
    int nbatch;
    pub_req *reqs, *free_reqs;
    char rbuf[16384];
    size_t rlen;
} pub_conn;

static struct {
    uv_loop_t *loop;
    pub_conn conns[MAX_PUB_CONNS];
    uv_timer_t timer, step_timer;
    char **heads; /* per topic: "POST ... Content-Length: S\r\n\r\n" */
    int *head_len;
    char *body; /* marker placeholder + padding */
    uint32_t *topic_seq;
    uint32_t *step_sent; /* per topic, this step */
    int next_topic;
    int connected;
    /* step */
    int step;
    double rate;
    uint64_t t_step0, period_ns;
    uint64_t step_end_ns;
    int64_t due_index; /* messages of this step sent so far */
    int publishing, in_step;
    uint64_t sent, answered, errors, late, failed;
    uint64_t bytes_in, bytes_out;
    uint64_t t_last_answer;
    int max_outstanding;
} P;

static void pub_flush_batches(void);

static void on_pub_written(uv_write_t *req, int status)
{
    pub_req *r = (pub_req *)req;
    r->next_free = r->conn->free_reqs;
    r->conn->free_reqs = r;
    if (status < 0 && !r->conn->dead) {
        fprintf(stderr, "fanout: publish write: %s\n", uv_err_name(status));
        r->conn->dead = 1;
        P.failed++;
    }
}

/* Places one message on connection c (the caller checked there is room). */
static void pub_place(pub_conn *c, uint64_t now)
{
    int t = P.next_topic;
    P.next_topic = (P.next_topic + 1) % opt.topics;
    char *b = c->slot[c->sent % opt.pipeline];
    int hl = P.head_len[t];
    memcpy(b, P.heads[t], (size_t)hl);
    memcpy(b + hl, P.body, (size_t)opt.size);
    char digits[64];
    snprintf(digits, sizeof digits, "ts=%020" PRIu64 ",seq=%010u,st=%03d,", now, P.topic_seq[t],
             P.step);
    memcpy(b + hl, digits, MARKER_LEN);
    P.topic_seq[t]++;
    P.step_sent[t]++;
    c->batch[c->nbatch++] = uv_buf_init(b, (unsigned)(hl + opt.size));
    c->sent++;
    P.sent++;
    P.bytes_out += (uint64_t)(hl + opt.size);
    int out = c->sent - c->answered;
    if (out > P.max_outstanding)
        P.max_outstanding = out;
}

static void pub_flush_batches(void)
{
    for (int i = 0; i < opt.pub_conns; i++) {
        pub_conn *c = &P.conns[i];
        if (!c->nbatch)
            continue;
        pub_req *r = c->free_reqs;
        if (!r)
            die("publisher: no free write request (bug)");
        c->free_reqs = r->next_free;
        if (uv_write(&r->req, (uv_stream_t *)&c->tcp, c->batch, (unsigned)c->nbatch,
                     on_pub_written) != 0) {
            c->dead = 1;
            P.failed++;
            r->next_free = c->free_reqs;
            c->free_reqs = r;
        }
        c->nbatch = 0;
    }
}

/* Topic t always goes over connection t % --pub-conns, so that one topic's
 * messages reach the server in seq order (per-topic reordering is then the
 * server's). Returns it if it has room in its pipeline. */
static pub_conn *pub_pick(void)
{
    pub_conn *c = &P.conns[P.next_topic % opt.pub_conns];
    if (!c->connected || c->dead || c->sent - c->answered >= opt.pipeline)
        return NULL;
    return c;
}

static void on_pub_timer(uv_timer_t *t);

/* Sends what is due; arms the timer for the next one. */
static void pub_schedule(void)
{
    uint64_t now = uv_hrtime();
    if (!P.publishing) {
        /* nothing more to send this step */
    } else if (now >= P.step_end_ns) {
        P.publishing = 0;
        uv_timer_stop(&P.timer);
    } else if (P.period_ns == 0) {
        pub_conn *c;
        while ((c = pub_pick()))
            pub_place(c, now);
    } else {
        for (;;) {
            uint64_t due = P.t_step0 + (uint64_t)P.due_index * P.period_ns;
            if (due > now || due >= P.step_end_ns)
                break;
            pub_conn *c = pub_pick();
            if (!c)
                break;               /* every pipeline full: resumes on the next answer */
            if (now > due + 2000000) /* more than 2 ms behind schedule */
                P.late++;
            pub_place(c, now);
            P.due_index++;
        }
        uint64_t next = P.t_step0 + (uint64_t)P.due_index * P.period_ns;
        if (next >= P.step_end_ns) {
            P.publishing = 0;
            uv_timer_stop(&P.timer);
        } else if (next > now) {
            uv_timer_start(&P.timer, on_pub_timer, (next - now + 999999) / 1000000, 0);
        }
    }
    pub_flush_batches();
    if (!P.publishing) {
        uint64_t out = 0;
        for (int i = 0; i < opt.pub_conns; i++)
            if (!P.conns[i].dead && P.conns[i].connected)
                out += (uint64_t)(P.conns[i].sent - P.conns[i].answered);
        if (out == 0 && P.in_step)
            uv_stop(P.loop);
    }
}

static void on_pub_timer(uv_timer_t *t)
{
    (void)t;
    pub_schedule();
}

static void on_step_timer(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout: step %d: publish answers still missing after the step's time limit\n",
            P.step);
    P.failed++;
    for (int i = 0; i < opt.pub_conns; i++)
        P.conns[i].dead = 1;
    uv_stop(P.loop);
}

/* One complete answer at the start of b? Returns its length, 0 if incomplete, -1 fatal. */
static long pub_parse_answer(char *b, size_t len, size_t cap)
{
    char *e = memmem(b, len, "\r\n\r\n", 4);
    if (!e)
        return 0;
    size_t head = (size_t)(e - b) + 4;
    char save = b[head - 1];
    b[head - 1] = 0;
    int status = head > 12 ? atoi(b + 9) : 0;
    size_t body = 0;
    char *cl = strcasestr(b, "\ncontent-length:");
    if (cl)
        body = (size_t)strtoul(cl + 16, NULL, 10);
    int chunked = strcasestr(b, "\ntransfer-encoding: chunked") != NULL;
    b[head - 1] = save;
    if (chunked) {
        fprintf(stderr, "fanout: chunked publish answers are not supported\n");
        return -1;
    }
    if (head + body > cap) {
        fprintf(stderr, "fanout: publish answer too long\n");
        return -1;
    }
    if (len < head + body)
        return 0;
    if (status < 200 || status > 299) {
        if (P.errors < 5) {
            size_t l = strcspn(b, "\r");
            fprintf(stderr, "fanout: publish answered \"%.*s\"\n", (int)(l < 100 ? l : 100), b);
        }
        P.errors++;
    }
    return (long)(head + body);
}

static void on_pub_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)suggested;
    pub_conn *c = h->data;
    buf->base = c->rbuf + c->rlen;
    buf->len = sizeof c->rbuf - c->rlen;
}

static void on_pub_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)buf;
    pub_conn *c = stream->data;
    if (nread < 0) {
        uv_read_stop(stream);
        if (c->sent == c->answered && nread == UV_EOF && !c->dead) {
            /* the server closed an idle keep-alive connection: reopen it at the next step */
            c->connected = 0;
            c->dead = 1;
            c->reopen = 1;
            uv_close((uv_handle_t *)&c->tcp, NULL);
        } else {
            if (!c->dead)
                fprintf(stderr, "fanout: publisher connection %d: %s\n", c->index,
                        uv_err_name((int)nread));
            c->dead = 1;
            P.failed++;
        }
        pub_schedule();
        return;
    }
    P.bytes_in += (uint64_t)nread;
    c->rlen += (size_t)nread;
    size_t off = 0;
    for (;;) {
        long n = pub_parse_answer(c->rbuf + off, c->rlen - off, sizeof c->rbuf);
        if (n < 0) {
            c->dead = 1;
            P.failed++;
            uv_read_stop(stream);
            break;
        }
        if (n == 0)
            break;
        off += (size_t)n;
        c->answered++;
        P.answered++;
    }
    memmove(c->rbuf, c->rbuf + off, c->rlen - off);
    c->rlen -= off;
    P.t_last_answer = uv_hrtime();
    pub_schedule();
}

static void on_pub_connect(uv_connect_t *req, int status)
{
    pub_conn *c = req->data;
    if (status < 0) {
        fprintf(stderr, "fanout: publisher connect: %s\n", uv_err_name(status));
        c->dead = 1;
        P.failed++;
    } else {
        c->connected = 1;
        c->dead = 0;
        c->reopen = 0;
        c->rlen = 0;
        uv_tcp_nodelay(&c->tcp, 1);
        uv_read_start((uv_stream_t *)&c->tcp, on_pub_alloc, on_pub_read);
    }
    if (++P.connected == opt.pub_conns)
        uv_stop(P.loop);
}

static void pub_connect(pub_conn *c)
{
    struct sockaddr_in addr;
    uv_ip4_addr(opt.host, opt.pub_port, &addr);
    uv_tcp_init(P.loop, &c->tcp);
    c->tcp.data = c;
    c->connect_req.data = c;
    int rc =
        uv_tcp_connect(&c->connect_req, &c->tcp, (const struct sockaddr *)&addr, on_pub_connect);
    if (rc != 0) {
        fprintf(stderr, "fanout: publisher connect: %s\n", uv_err_name(rc));
        c->dead = 1;
        P.failed++;
        P.connected++;
    }
}

static void pub_init(void)
{
    memset(&P, 0, sizeof P);
    P.loop = uv_default_loop();
    P.heads = calloc((size_t)opt.topics, sizeof *P.heads);
    P.head_len = calloc((size_t)opt.topics, sizeof *P.head_len);
    P.topic_seq = calloc((size_t)opt.topics, sizeof *P.topic_seq);
    P.step_sent = calloc((size_t)opt.topics, sizeof *P.step_sent);
    P.body = malloc((size_t)opt.size);
    if (!P.heads || !P.head_len || !P.topic_seq || !P.step_sent || !P.body)
        die("out of memory");
    memset(P.body, 'x', (size_t)opt.size);
    int maxhl = 0;
    for (int t = 0; t < opt.topics; t++) {
        char path[300], head[600];
        if (fmt_path(path, sizeof path, opt.pub_path, t, 0) < 0)
            die("publish path too long");
        int hl = snprintf(head, sizeof head,
                          "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
                          "Content-Length: %d\r\n\r\n",
                          path, opt.host, opt.pub_port, opt.size);
        P.heads[t] = strdup(head);
        P.head_len[t] = hl;
        if (hl > maxhl)
            maxhl = hl;
    }
    uv_timer_init(P.loop, &P.timer);
    uv_timer_init(P.loop, &P.step_timer);
    for (int i = 0; i < opt.pub_conns; i++) {
        pub_conn *c = &P.conns[i];
        c->index = i;
        c->slot = calloc((size_t)opt.pipeline, sizeof *c->slot);
        c->batch = calloc((size_t)opt.pipeline, sizeof *c->batch);
        c->reqs = calloc((size_t)opt.pipeline, sizeof *c->reqs);
        if (!c->slot || !c->batch || !c->reqs)
            die("out of memory");
        for (int k = 0; k < opt.pipeline; k++) {
            c->slot[k] = malloc((size_t)(maxhl + opt.size));
            if (!c->slot[k])
                die("out of memory");
            c->reqs[k].conn = c;
            c->reqs[k].next_free = c->free_reqs;
            c->free_reqs = &c->reqs[k];
        }
        pub_connect(c);
    }
    uv_timer_start(&P.step_timer, on_step_timer, 10000, 0);
    uv_run(P.loop, UV_RUN_DEFAULT);
    uv_timer_stop(&P.step_timer);
}

/* Publishes one step; returns when every answer is back (or the limit). */
static void pub_run_step(int step, double rate, double seconds)
{
    int reopen = 0;
    for (int i = 0; i < opt.pub_conns; i++)
        if (P.conns[i].reopen) {
            P.conns[i].reopen = 0;
            reopen++;
        }
    if (reopen) {
        P.connected = opt.pub_conns - reopen;
        for (int i = 0; i < opt.pub_conns; i++)
            if (!P.conns[i].connected && P.conns[i].dead && !P.failed)
                pub_connect(&P.conns[i]);
        uv_run(P.loop, UV_RUN_DEFAULT);
    }
    P.step = step;
    P.rate = rate;
    P.period_ns = rate > 0 ? (uint64_t)(1e9 / rate) : 0;
    P.due_index = 0;
    memset(P.step_sent, 0, sizeof *P.step_sent * (size_t)opt.topics);
    uv_update_time(P.loop);
    P.t_step0 = uv_hrtime();
    P.step_end_ns = P.t_step0 + (uint64_t)(seconds * 1e9);
    P.publishing = 1;
    P.in_step = 1;
    uv_timer_start(&P.step_timer, on_step_timer, (uint64_t)(seconds * 1000) + 15000, 0);
    pub_schedule();
    if (P.publishing || P.sent != P.answered)
        uv_run(P.loop, UV_RUN_DEFAULT);
    P.publishing = 0;
    P.in_step = 0;
    uv_timer_stop(&P.timer);
    uv_timer_stop(&P.step_timer);
}

/* ------------------------------------------------------------------------ */
/* Parent: fork, coordinate, report                                          */

static pid_t g_pids[MAX_PROCS];

static int wait_children(int *fds, char want, double deadline)
{
    int got[MAX_PROCS] = {0}, have = 0, n = opt.procs;
    while (have < n) {
        double left = deadline - now_s();
        if (left <= 0)
            return -1;
        struct pollfd pfd[MAX_PROCS];
        int idx[MAX_PROCS], m = 0;
        for (int i = 0; i < n; i++)
            if (!got[i]) {
                pfd[m].fd = fds[i];
                pfd[m].events = POLLIN;
                idx[m++] = i;
            }
        int r = poll(pfd, (nfds_t)m, (int)(left * 1000) + 1);
        if (r < 0 && errno == EINTR)
            continue;
        for (int j = 0; j < m; j++) {
            if (!(pfd[j].revents & (POLLIN | POLLHUP | POLLERR)))
                continue;
            char c;
            ssize_t k = read(pfd[j].fd, &c, 1);
            if (k <= 0 || c == want) {
                if (k <= 0)
                    fprintf(stderr, "fanout: subscriber process %d exited early\n", idx[j]);
                got[idx[j]] = 1;
                have++;
            }
        }
    }
    return 0;
}

typedef struct counters {
    double t, server_cpu, client_cpu;
    double watch_cpu[MAX_WATCH];
    double proc_cpu[MAX_PROCS + 1];
    uint64_t sub_in, sub_out, sub_req, pub_in, pub_out, pub_req;
} counters;

static void snapshot(counters *k)
{
    memset(k, 0, sizeof *k);
    k->t = now_s();
    read_proc_cpu(opt.server_pid, &k->server_cpu);
    for (int w = 0; w < opt.nwatch; w++)
        read_proc_cpu(opt.watch_pid[w], &k->watch_cpu[w]);
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    k->proc_cpu[0] = (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
                     (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
    k->client_cpu = k->proc_cpu[0];
    for (int i = 0; i < opt.procs; i++) {
        if (g_pids[i] > 0)
            read_proc_cpu(g_pids[i], &k->proc_cpu[i + 1]);
        k->client_cpu += k->proc_cpu[i + 1];
        k->sub_in += g_shared[i].bytes_in;
        k->sub_out += g_shared[i].bytes_out;
        k->sub_req += g_shared[i].requests;
    }
    k->pub_in = P.bytes_in;
    k->pub_out = P.bytes_out;
    k->pub_req = P.sent;
}

static uint64_t step_expected(void)
{
    uint64_t e = 0;
    for (int t = 0; t < opt.topics; t++) {
        uint64_t subs = 0;
        for (int i = 0; i < opt.procs; i++)
            subs += g_shared[i].topic_subs[t];
        e += subs * P.step_sent[t];
    }
    return e;
}

/* Asks every subscriber process (ctl 'C', answered 'C' on its ready pipe)
 * how many of its subscribers got fewer / more of step's messages than were
 * published to their topic. A process that does not answer within 5 s (or
 * has died) counts all its subscribers as short. */
static void count_step_subscribers(int step, const int *ctl_fd, int *ready_fd, uint64_t *short_subs,
                                   uint64_t *extra_subs)
{
    g_count->step = step;
    for (int t = 0; t < opt.topics; t++)
        g_count->sent[t] = P.step_sent[t];
    for (int i = 0; i < opt.procs; i++) {
        g_count->short_subs[i] = g_shared[i].subscribed;
        g_count->extra_subs[i] = 0;
        send_byte(ctl_fd[i], 'C');
    }
    if (wait_children(ready_fd, 'C', now_s() + 5) != 0)
        fprintf(stderr, "fanout: step %d: subscriber processes did not count in time\n", step);
    *short_subs = *extra_subs = 0;
    for (int i = 0; i < opt.procs; i++) {
        *short_subs += g_count->short_subs[i];
        *extra_subs += g_count->extra_subs[i];
    }
}

/* Appends "NAME":{"watch1":v1,...}, to buf at offset off; returns the new
 * offset (at most size - 1). */
static size_t watch_object(char *buf, size_t off, size_t size, const char *name, const double *v,
                           int decimals)
{
    off += (size_t)snprintf(buf + off, size - off, "\"%s\":{", name);
    for (int w = 0; w < opt.nwatch && off < size; w++)
        off += (size_t)snprintf(buf + off, size - off, "%s\"%.40s\":%.*f", w ? "," : "",
                                opt.watch_name[w], decimals, v[w]);
    if (off < size)
        off += (size_t)snprintf(buf + off, size - off, "},");
    return off < size ? off : size - 1;
}

/* VmRSS (kB) of every watched process, into out. */
static const double *read_watch_rss(double *out)
{
    for (int w = 0; w < opt.nwatch; w++)
        out[w] = (double)read_vm_kb(opt.watch_pid[w], "VmRSS");
    return out;
}

static uint64_t step_unique(int step)
{
    uint64_t u = 0;
    for (int i = 0; i < opt.procs; i++) {
        volatile step_stats *x = &g_shared[i].st[step];
        u += x->received - x->dup;
    }
    return u;
}

static void json_str(const char *k, const char *v)
{
    printf("\"%s\":\"", k);
    for (const char *p = v; *p; p++)
        if (*p == '"' || *p == '\\')
            printf("\\%c", *p);
        else if ((unsigned char)*p >= 0x20)
            putchar(*p);
    printf("\",");
}

static void print_common(const char *phase)
{
    printf("{\"phase\":\"%s\",", phase);
    json_str("label", opt.label);
    json_str("server", opt.server);
    json_str("transport", transport_names[opt.transport]);
    printf("\"subscribers\":%d,\"topics\":%d,\"size\":%d,\"procs\":%d,\"pub_conns\":%d,"
           "\"pipeline\":%d,",
           opt.subs, opt.topics, opt.size, opt.procs, opt.pub_conns, opt.pipeline);
}

static void usage(void)
{
    fprintf(
        stderr,
        "usage: fanout --transport sse|ws|poll|plainpoll --port P [options]\n"
        "  --host ADDR          server address, 127.0.0.0/8 only (127.0.0.1)\n"
        "  --topic PREFIX       topic t is PREFIX-t (bench)\n"
        "  --topics T           topics; subscriber i listens to topic i %% T (1)\n"
        "  --subs N             subscribers in all, 0 allowed (100)\n"
        "  --procs K            subscriber processes (1); at most 19,000 subscribers each\n"
        "  --src-addrs A        source addresses 127.0.0.2 .. 127.0.0.(1+A) (8)\n"
        "  --sub-path PATH      subscribe path; {topic}, {timeout} replaced. Defaults (herald):\n"
        "                       sse /events?topic={topic}, ws /ws?topic={topic},\n"
        "                       poll|plainpoll /poll?topic={topic}&timeout={timeout}\n"
        "  --cursor json|etag   poll cursor: json \"cursor\" sent as &PARAM= (herald), or\n"
        "                       Last-Modified/Etag sent as If-Modified-Since/If-None-Match "
        "(nchan)\n"
        "  --cursor-param NAME  query parameter for json cursors (since)\n"
        "  --poll-timeout S     long-poll {timeout} (30)   --poll-interval S  plainpoll period "
        "(1)\n"
        "  --pub-path PATH      publish path, POST, {topic} replaced (/topics/{topic})\n"
        "  --pub-conns K        publisher connections (4)   --pipeline D  requests in flight each "
        "(16)\n"
        "  --rates R1,R2,...    messages/s per step (all topics together); 0 = as fast as the\n"
        "                       pipeline allows; empty = connect only (idle memory)\n"
        "  --step-seconds S     publishing time per step (5)\n"
        "  --size B             bytes of data per message, >= 48 (256)\n"
        "  --stop-on-fail       stop stepping after a step with loss or p99 > --max-p99-ms (100)\n"
        "  --strict             exit 1 if any step lost, duplicated or reordered a message\n"
        "  --concurrency C      handshakes in flight per process (64)\n"
        "  --settle S (1)  --drain S (5)  --subscribe-timeout S (60)  --timeout S (600)\n"
        "  --server-pid PID     measure this process's CPU and RSS   --server NAME  --label TEXT\n"
        "  --pub-port P         publish to this port (default --port: the same server)\n"
        "  --sub-ports P1,P2,.. subscriber i connects to port P(i %% n) (default --port):\n"
        "                       the nodes of a cluster (up to %d)\n"
        "  --watch-pid NAME=PID report this process's CPU and RSS per step too, and its RSS,\n"
        "                       PSS and open descriptors after connecting (up to %d)\n"
        "Output: one JSON line for the connect phase, then one per step, on stdout.\n",
        MAX_SUB_PORTS, MAX_WATCH);
    exit(2);
}

static void parse_rates(const char *s)
{
    opt.nsteps = 0;
    while (*s) {
        if (opt.nsteps >= MAX_STEPS)
            die("at most %d rate steps", MAX_STEPS);
        char *e;
        opt.rates[opt.nsteps++] = strtod(s, &e);
        if (e == s)
            die("bad --rates");
        s = *e == ',' ? e + 1 : e;
    }
}

static void parse_sub_ports(const char *s)
{
    opt.nsub_ports = 0;
    while (*s) {
        char *e;
        long p = strtol(s, &e, 10);
        if (e == s || p < 1 || p > 65535 || opt.nsub_ports == MAX_SUB_PORTS || (*e && *e != ','))
            die("bad --sub-ports (P1,P2,..., at most %d)", MAX_SUB_PORTS);
        opt.sub_ports[opt.nsub_ports++] = (int)p;
        s = *e ? e + 1 : e;
    }
    if (!opt.nsub_ports)
        die("bad --sub-ports (P1,P2,..., at most %d)", MAX_SUB_PORTS);
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        {"transport", 1, 0, 'm'},
        {"mode", 1, 0, 'm'},
        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},
        {"topic", 1, 0, 't'},
        {"topics", 1, 0, 'N'},
        {"sub-path", 1, 0, 'S'},
        {"pub-path", 1, 0, 'P'},
        {"cursor", 1, 0, 'C'},
        {"cursor-param", 1, 0, 'Q'},
        {"subs", 1, 0, 'n'},
        {"procs", 1, 0, 'k'},
        {"src-addrs", 1, 0, 'a'},
        {"size", 1, 0, 's'},
        {"rates", 1, 0, 'r'},
        {"step-seconds", 1, 0, 'D'},
        {"pub-conns", 1, 0, 'K'},
        {"pipeline", 1, 0, 'L'},
        {"poll-interval", 1, 0, 'I'},
        {"poll-timeout", 1, 0, 'O'},
        {"concurrency", 1, 0, 'c'},
        {"settle", 1, 0, 'e'},
        {"drain", 1, 0, 'd'},
        {"subscribe-timeout", 1, 0, 'T'},
        {"timeout", 1, 0, 'x'},
        {"max-p99-ms", 1, 0, 'Y'},
        {"stop-on-fail", 0, 0, 'F'},
        {"strict", 0, 0, 'Z'},
        {"server-pid", 1, 0, 'i'},
        {"server", 1, 0, 'V'},
        {"label", 1, 0, 'l'},
        {"etag-epoch", 0, 0, 'E'},
        {"pub-port", 1, 0, 'B'},
        {"watch-pid", 1, 0, 'W'},
        {"sub-ports", 1, 0, 'G'},
        {"help", 0, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *rates = "100";
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm': {
            int found = -1;
            for (int i = 0; i < 4; i++)
                if (strcmp(optarg, transport_names[i]) == 0)
                    found = i;
            if (found < 0)
                usage();
            opt.transport = found;
            break;
        }
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 't':
            opt.topic = optarg;
            break;
        case 'N':
            opt.topics = atoi(optarg);
            break;
        case 'S':
            opt.sub_path = optarg;
            break;
        case 'P':
            opt.pub_path = optarg;
            break;
        case 'C':
            if (strcmp(optarg, "json") == 0)
                opt.cursor = CUR_JSON;
            else if (strcmp(optarg, "etag") == 0)
                opt.cursor = CUR_ETAG;
            else
                usage();
            break;
        case 'Q':
            opt.cursor_param = optarg;
            break;
        case 'n':
            opt.subs = atoi(optarg);
            break;
        case 'k':
            opt.procs = atoi(optarg);
            break;
        case 'a':
            opt.src_addrs = atoi(optarg);
            break;
        case 's':
            opt.size = atoi(optarg);
            break;
        case 'r':
            rates = optarg;
            break;
        case 'D':
            opt.step_seconds = atof(optarg);
            break;
        case 'K':
            opt.pub_conns = atoi(optarg);
            break;
        case 'L':
            opt.pipeline = atoi(optarg);
            break;
        case 'I':
            opt.poll_interval = atof(optarg);
            break;
        case 'O':
            opt.poll_timeout = atoi(optarg);
            break;
        case 'c':
            opt.concurrency = atoi(optarg);
            break;
        case 'e':
            opt.settle = atof(optarg);
            break;
        case 'd':
            opt.drain = atof(optarg);
            break;
        case 'T':
            opt.subscribe_timeout = atof(optarg);
            break;
        case 'x':
            opt.timeout = atof(optarg);
            break;
        case 'Y':
            opt.max_p99_ms = atof(optarg);
            break;
        case 'F':
            opt.stop_on_fail = 1;
            break;
        case 'Z':
            opt.strict = 1;
            break;
        case 'i':
            opt.server_pid = atoi(optarg);
            break;
        case 'V':
            opt.server = optarg;
            break;
        case 'l':
            opt.label = optarg;
            break;
        case 'E':
            opt.etag_epoch = 1;
            break;
        case 'B':
            opt.pub_port = atoi(optarg);
            break;
        case 'W': {
            char *eq = strchr(optarg, '=');
            if (!eq || eq == optarg || opt.nwatch == MAX_WATCH)
                die("bad --watch-pid (NAME=PID, at most %d)", MAX_WATCH);
            *eq = '\0';
            opt.watch_name[opt.nwatch] = optarg;
            opt.watch_pid[opt.nwatch++] = atoi(eq + 1);
            break;
        }
        case 'G':
            parse_sub_ports(optarg);
            break;
        default:
            usage();
        }
    }
    parse_rates(rates);
    if (!opt.pub_port)
        opt.pub_port = opt.port;
    if (!opt.nsub_ports)
        opt.sub_ports[opt.nsub_ports++] = opt.port;
    if (!opt.sub_path)
        opt.sub_path = opt.transport == T_SSE  ? "/events?topic={topic}"
                       : opt.transport == T_WS ? "/ws?topic={topic}"
                                               : "/poll?topic={topic}&timeout={timeout}";
    if (strncmp(opt.host, "127.", 4) != 0)
        die("--host must be a loopback address (127.0.0.0/8)");
    if (opt.subs < 0 || opt.procs < 1 || opt.procs > MAX_PROCS ||
        (opt.subs > 0 && opt.procs > opt.subs))
        die("need 1 <= --procs <= min(--subs, %d)", MAX_PROCS);
    if (opt.subs == 0)
        opt.procs = 1;
    if (opt.subs / opt.procs + 1 > 19000)
        die("too many subscribers per process: raise --procs (20,000 descriptors per process)");
    if (opt.topics < 1 || opt.topics > MAX_TOPICS)
        die("--topics must be 1..%d", MAX_TOPICS);
    if (opt.src_addrs < 1 || opt.src_addrs > 250)
        die("--src-addrs must be 1..250");
    if (opt.size < MARKER_LEN + 2 || opt.size > 1 << 20)
        die("--size must be %d..1048576", MARKER_LEN + 2);
    if (opt.pub_conns < 1 || opt.pub_conns > MAX_PUB_CONNS || opt.pipeline < 1 ||
        opt.pipeline > 4096)
        die("bad --pub-conns or --pipeline");
    if (opt.concurrency < 1 || opt.poll_interval <= 0 || opt.step_seconds <= 0)
        die("bad --concurrency, --poll-interval or --step-seconds");
    signal(SIGPIPE, SIG_IGN);
    setvbuf(stdout, NULL, _IOLBF, 0);

    g_shared = mmap(NULL, sizeof(proc_shared) * (size_t)opt.procs, PROT_READ | PROT_WRITE,
                    MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_shared == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    g_count =
        mmap(NULL, sizeof *g_count, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (g_count == MAP_FAILED)
        die("mmap: %s", strerror(errno));

    double t0 = now_s();
    double deadline = t0 + opt.timeout;
    long rss_before = read_vm_kb(opt.server_pid, "VmRSS");
    counters k0, k1, k2;
    snapshot(&k0);

    int ready_fd[MAX_PROCS], ctl_fd[MAX_PROCS];
    if (opt.subs > 0) {
        for (int i = 0; i < opt.procs; i++) {
            int rp[2], cp[2];
            if (pipe(rp) != 0 || pipe(cp) != 0)
                die("pipe: %s", strerror(errno));
            fflush(NULL);
            pid_t pid = fork();
            if (pid < 0)
                die("fork: %s", strerror(errno));
            if (pid == 0) {
                close(rp[0]);
                close(cp[1]);
                for (int j = 0; j < i; j++) {
                    close(ready_fd[j]);
                    close(ctl_fd[j]);
                }
                g_me = &g_shared[i];
                child_main(i, rp[1], cp[0]);
                _exit(0);
            }
            close(rp[1]);
            close(cp[0]);
            ready_fd[i] = rp[0];
            ctl_fd[i] = cp[1];
            g_pids[i] = pid;
        }
        if (wait_children(ready_fd, 'R', t0 + opt.subscribe_timeout + 10) != 0)
            fprintf(stderr, "fanout: subscriber processes not ready in time; going on\n");
    }
    double t_subscribed = now_s();
    snapshot(&k1);
    uint64_t subscribed = 0, failed = 0, bad_status = 0;
    for (int i = 0; i < opt.procs && opt.subs > 0; i++) {
        subscribed += g_shared[i].subscribed;
        failed += g_shared[i].failed;
        bad_status += g_shared[i].bad_status;
    }
    double connect_s = t_subscribed - t0;
    fprintf(stderr, "fanout: %" PRIu64 "/%d %s subscribers in %.2f s\n", subscribed, opt.subs,
            transport_names[opt.transport], connect_s);
    /* settle (and let the server's memory settle) before measuring RSS */
    if (opt.settle > 0)
        usleep((useconds_t)(opt.settle * 1e6));
    long rss_after = read_vm_kb(opt.server_pid, "VmRSS");
    /* every watched process's memory and descriptors (connections) now */
    char connect_watch[192 * MAX_WATCH + 96] = "";
    if (opt.nwatch) {
        double v[MAX_WATCH];
        size_t wl = watch_object(connect_watch, 0, sizeof connect_watch, "watch_rss_kb",
                                 read_watch_rss(v), 0);
        /* PSS: pages shared between processes (nginx's shared memory zone,
         * which every worker's RSS counts whole) split between them */
        for (int w = 0; w < opt.nwatch; w++)
            v[w] = (double)read_proc_kb(opt.watch_pid[w], "smaps_rollup", "Pss");
        wl = watch_object(connect_watch, wl, sizeof connect_watch, "watch_pss_kb", v, 0);
        for (int w = 0; w < opt.nwatch; w++)
            v[w] = (double)count_fds(opt.watch_pid[w]);
        watch_object(connect_watch, wl, sizeof connect_watch, "watch_fds", v, 0);
    }
    print_common("connect");
    printf("%s", connect_watch);
    printf(
        "\"subscribed\":%" PRIu64 ",\"subscribe_failed\":%" PRIu64 ",\"bad_status\":%" PRIu64
        ",\"connect_s\":%.3f,\"connect_per_s\":%.0f,\"server_cpu_s\":%.3f,\"sub_bytes_in\":%" PRIu64
        ",\"sub_bytes_out\":%" PRIu64 ",\"server_rss_before_kb\":%ld,\"server_rss_after_kb\":%ld,"
        "\"server_rss_per_sub_bytes\":%.0f}\n",
        subscribed, failed, bad_status, connect_s,
        connect_s > 0 ? (double)subscribed / connect_s : 0, k1.server_cpu - k0.server_cpu,
        k1.sub_in - k0.sub_in, k1.sub_out - k0.sub_out, rss_before, rss_after,
        subscribed && rss_before > 0 && rss_after > 0
            ? (double)(rss_after - rss_before) * 1024.0 / (double)subscribed
            : 0.0);

    int rc = (failed || bad_status || subscribed < (uint64_t)opt.subs) ? 3 : 0;
    if (opt.nsteps > 0 && now_s() < deadline) {
        pub_init();
        if (P.failed)
            rc = 3;
        for (int step = 0; step < opt.nsteps && !P.failed && now_s() < deadline; step++) {
            double rate = opt.rates[step];
            uint64_t errors0 = P.errors, late0 = P.late, sent0 = P.sent;
            uint64_t disc0 = 0;
            for (int i = 0; i < opt.procs && opt.subs > 0; i++)
                disc0 += g_shared[i].disconnects;
            snapshot(&k1);
            uint64_t t_step0 = uv_hrtime();
            pub_run_step(step, rate, opt.step_seconds);
            uint64_t t_pub_end = P.t_last_answer;
            uint64_t sent = P.sent - sent0;
            uint64_t expected = step_expected();
            double drain_deadline = now_s() + opt.drain;
            while (opt.subs > 0 && step_unique(step) < expected && now_s() < drain_deadline)
                usleep(20000);
            uint64_t subs_short = 0, subs_extra = 0;
            if (opt.subs > 0)
                count_step_subscribers(step, ctl_fd, ready_fd, &subs_short, &subs_extra);
            snapshot(&k2);
            /* merge */
            static uint64_t hist[HIST_N];
            memset(hist, 0, sizeof hist);
            uint64_t recv = 0, dup = 0, reorder = 0, lmax = 0, lsum = 0, tlast = 0, disc = 0;
            for (int i = 0; i < opt.procs && opt.subs > 0; i++) {
                step_stats *x = &g_shared[i].st[step];
                for (int b = 0; b < HIST_N; b++)
                    hist[b] += x->hist[b];
                recv += x->received;
                dup += x->dup;
                reorder += x->reorder;
                lsum += x->lat_sum;
                if (x->lat_max > lmax)
                    lmax = x->lat_max;
                if (x->t_last > tlast)
                    tlast = x->t_last;
                disc += g_shared[i].disconnects;
            }
            disc -= disc0;
            double pct[3] = {0.50, 0.90, 0.99}, pv[3] = {0};
            for (int q = 0; q < 3; q++) {
                uint64_t rank = (uint64_t)((double)recv * pct[q] + 0.999999), cum = 0;
                if (!rank)
                    continue;
                for (int b = 0; b < HIST_N; b++) {
                    cum += hist[b];
                    if (cum >= rank) {
                        uint64_t v = hist_value(b);
                        pv[q] = (double)(v < lmax ? v : lmax) / 1e6;
                        break;
                    }
                }
            }
            uint64_t unique = recv - dup;
            int64_t lost = (int64_t)expected - (int64_t)unique;
            double pub_s = t_pub_end > t_step0 ? (double)(t_pub_end - t_step0) / 1e9 : 0;
            double dlv_s = tlast > t_step0 ? (double)(tlast - t_step0) / 1e9 : 0;
            double wall = k2.t - k1.t;
            double scpu = k2.server_cpu - k1.server_cpu;
            double ccpu = k2.client_cpu - k1.client_cpu, cmax = 0;
            for (int i = 0; i <= opt.procs; i++)
                if (k2.proc_cpu[i] - k1.proc_cpu[i] > cmax)
                    cmax = k2.proc_cpu[i] - k1.proc_cpu[i];
            uint64_t sin = k2.sub_in - k1.sub_in, sout = k2.sub_out - k1.sub_out,
                     sreq = k2.sub_req - k1.sub_req;
            uint64_t pin = k2.pub_in - k1.pub_in, pout = k2.pub_out - k1.pub_out;
            double per = unique ? 1.0 / (double)unique : 0;
            int clean = lost <= 0 && dup == 0 && reorder == 0 && subs_short == 0 &&
                        subs_extra == 0 && P.errors == errors0 && !P.failed;
            int ok = clean && pv[2] <= opt.max_p99_ms;
            char watch_json[128 * MAX_WATCH + 64] = "";
            if (opt.nwatch) {
                double cpu[MAX_WATCH];
                for (int w = 0; w < opt.nwatch; w++)
                    cpu[w] = k2.watch_cpu[w] - k1.watch_cpu[w];
                size_t wl = watch_object(watch_json, 0, sizeof watch_json, "watch_cpu_s", cpu, 3);
                watch_object(watch_json, wl, sizeof watch_json, "watch_rss_kb", read_watch_rss(cpu),
                             0);
            }
            print_common("step");
            printf(
                "\"step\":%d,\"rate\":%g,\"step_seconds\":%g,\"published\":%" PRIu64
                ",\"publish_errors\":%" PRIu64 ",\"publish_late\":%" PRIu64
                ",\"publish_per_s\":%.1f,\"publish_max_outstanding\":%d,"
                "\"deliveries_expected\":%" PRIu64 ",\"deliveries_received\":%" PRIu64
                ",\"lost\":%" PRId64 ",\"duplicates\":%" PRIu64 ",\"reordered\":%" PRIu64
                ",\"subs_short\":%" PRIu64 ",\"subs_extra\":%" PRIu64 ",\"disconnects\":%" PRIu64
                ",\"deliveries_per_s\":%.0f,"
                "\"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f}"
                ","
                "\"server_cpu_s\":%.3f,\"server_cpu_us_per_delivery\":%.3f,\"server_cpu_us_per_"
                "publish\":%.3f,"
                "\"server_rss_kb\":%ld,\"server_hwm_kb\":%ld,"
                "\"sub_bytes_in\":%" PRIu64 ",\"sub_bytes_out\":%" PRIu64
                ",\"sub_requests\":%" PRIu64 ",\"pub_bytes_in\":%" PRIu64
                ",\"pub_bytes_out\":%" PRIu64 ","
                "\"per_delivery\":{\"sub_bytes_in\":%.1f,\"sub_bytes_out\":%.1f,\"pub_bytes_in\":%."
                "2f,"
                "\"pub_bytes_out\":%.2f,\"wire_bytes\":%.1f,\"sub_requests\":%.4f,\"requests\":%."
                "4f},"
                "%s\"client_cpu_s\":%.3f,\"client_cpu_frac\":%.3f,\"client_max_proc_cpu_frac\":%."
                "3f,"
                "\"wall_s\":%.3f,\"clean\":%s,\"ok\":%s}\n",
                step, rate, opt.step_seconds, sent, P.errors - errors0, P.late - late0,
                pub_s > 0 ? (double)sent / pub_s : 0, P.max_outstanding, expected, recv, lost, dup,
                reorder, subs_short, subs_extra, disc, dlv_s > 0 ? (double)unique / dlv_s : 0,
                pv[0], pv[1], pv[2], (double)lmax / 1e6,
                recv ? (double)lsum / (double)recv / 1e6 : 0, scpu,
                unique ? scpu * 1e6 / (double)unique : 0, sent ? scpu * 1e6 / (double)sent : 0,
                read_vm_kb(opt.server_pid, "VmRSS"), read_vm_kb(opt.server_pid, "VmHWM"), sin, sout,
                sreq, pin, pout, (double)sin * per, (double)sout * per, (double)pin * per,
                (double)pout * per, (double)(sin + sout + pin + pout) * per, (double)sreq * per,
                (double)(sreq + sent) * per, watch_json, ccpu, wall > 0 ? ccpu / wall : 0,
                wall > 0 ? cmax / wall : 0, wall, clean ? "true" : "false", ok ? "true" : "false");
            P.max_outstanding = 0;
            if (!clean && opt.strict)
                rc = rc ? rc : 1;
            if (P.failed)
                rc = 3;
            if (!ok && opt.stop_on_fail)
                break;
        }
    }

    /* let the subscribers close, then reap them (bounded) */
    for (int i = 0; i < opt.procs && opt.subs > 0; i++)
        send_byte(ctl_fd[i], 'X');
    double reap_deadline = now_s() + 10;
    int alive = opt.subs > 0 ? opt.procs : 0;
    while (alive > 0) {
        alive = 0;
        for (int i = 0; i < opt.procs; i++) {
            if (g_pids[i] <= 0)
                continue;
            int st;
            pid_t r = waitpid(g_pids[i], &st, WNOHANG);
            if (r == g_pids[i]) {
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0)) {
                    fprintf(stderr, "fanout: subscriber process %d ended abnormally (status %d)\n",
                            i, st);
                    rc = 3;
                }
                g_pids[i] = 0;
            } else {
                alive++;
            }
        }
        if (alive && now_s() > reap_deadline) {
            for (int i = 0; i < opt.procs; i++)
                if (g_pids[i] > 0) {
                    fprintf(stderr, "fanout: killing stuck subscriber process %d\n", i);
                    kill(g_pids[i], SIGKILL);
                }
            reap_deadline = now_s() + 5;
        }
        if (alive)
            usleep(10000);
    }
    return rc;
}
