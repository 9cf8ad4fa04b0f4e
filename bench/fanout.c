/*
 * fanout — a fan-out benchmark client for herald and nchan (libuv).
 *
 * One invocation = one run:
 *   1. forks --procs K subscriber processes; process k opens its share of the
 *      --subs N connections (SSE "GET" streams or WebSocket upgrades), each
 *      bound to a source address 127.0.0.(2 + i % --src-addrs) before connect,
 *      at most --concurrency handshakes in flight per process;
 *   2. waits until every subscriber got its HTTP head (200 for SSE, 101 for
 *      WebSocket) — or failed, which is counted and reported;
 *   3. the parent publishes --messages M messages of --size S bytes on one
 *      keep-alive connection, at --rate R per second (0 = closed loop: the
 *      next POST goes out as soon as the previous answer is back). Each
 *      message's data starts with "ts=<CLOCK_MONOTONIC ns, 20 digits>,seq=<10
 *      digits>," taken just before the write, padded with 'x' to S bytes;
 *   4. subscribers parse the stream (SSE lines, de-chunked if needed; or
 *      unmasked server WebSocket frames, answering pings), find the marker in
 *      each message and add now - ts to a fixed-size log-linear histogram
 *      (1.6 % resolution, no allocation per delivery);
 *   5. after the last publish answer, subscribers wait until they have every
 *      message or --drain seconds pass; the parent samples the server's CPU
 *      time (/proc/PID/stat, --server-pid) and then lets subscribers close
 *      (WebSocket: a masked close frame 1000, then wait for the server's);
 *   6. prints one JSON object on stdout (progress and errors go to stderr).
 *
 * Everything is bounded in time by --timeout. Loopback only: --host must be
 * an address in 127.0.0.0/8.
 *
 * Build: cc -O2 -o fanout fanout.c -luv
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
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

/* ------------------------------------------------------------------------ */
/* Options                                                                  */

enum { MODE_SSE, MODE_WS };

static struct {
    int mode;
    const char *host;
    int port;
    const char *topic;
    const char *sub_path; /* with {topic} */
    const char *pub_path; /* with {topic} */
    int subs;
    int procs;
    int src_addrs;
    int messages;
    int size;
    double rate;
    int concurrency;
    double subscribe_timeout;
    double drain;
    double timeout;
    int server_pid;
    const char *label;
} opt = {
    .mode = MODE_SSE,
    .host = "127.0.0.1",
    .port = 8080,
    .topic = "bench",
    .sub_path = NULL,
    .pub_path = "/topics/{topic}",
    .subs = 100,
    .procs = 1,
    .src_addrs = 8,
    .messages = 100,
    .size = 256,
    .rate = 0,
    .concurrency = 64,
    .subscribe_timeout = 60,
    .drain = 5,
    .timeout = 180,
    .server_pid = 0,
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
    int e = 63 - __builtin_clzll(v); /* >= HIST_SUB_BITS + 1 */
    int shift = e - HIST_SUB_BITS;
    uint64_t m = v >> shift; /* [HIST_SUB, 2*HIST_SUB) */
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
/* Per-subscriber-process results, in memory shared with the parent.        */

typedef struct proc_stats {
    uint64_t hist[HIST_N];
    uint64_t lat_count, lat_max, lat_sum;
    uint64_t assigned, subscribed, failed, disconnects, disconnects_before_done;
    uint64_t received, out_of_order, other_messages, bad_status, complete;
    uint64_t t_start, t_all_subscribed, t_first_delivery, t_last_delivery;
    int finished;
} proc_stats;

static proc_stats *g_stats; /* this process's slot */

/* ------------------------------------------------------------------------ */
/* Small helpers                                                            */

static char *subst_topic(const char *tmpl)
{
    const char *key = "{topic}";
    size_t klen = strlen(key), tlen = strlen(opt.topic);
    size_t cap = strlen(tmpl) + 1;
    for (const char *p = strstr(tmpl, key); p; p = strstr(p + klen, key))
        cap += tlen;
    char *out = malloc(cap), *o = out;
    for (const char *p = tmpl; *p;) {
        if (strncmp(p, key, klen) == 0) {
            memcpy(o, opt.topic, tlen);
            o += tlen;
            p += klen;
        } else {
            *o++ = *p++;
        }
    }
    *o = 0;
    return out;
}

static uint64_t parse_digits(const char *p, const char *end, int max)
{
    uint64_t v = 0;
    for (int i = 0; i < max && p < end && *p >= '0' && *p <= '9'; i++, p++)
        v = v * 10 + (uint64_t)(*p - '0');
    return v;
}

static int read_server_cpu(int pid, double *cpu_s)
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
    /* after ')': state(3) ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime(14)
     * stime(15) */
    if (sscanf(p + 2, "%*c %*d %*d %*d %*d %*d %*u %*u %*u %*u %*u %llu %llu", &ut, &st) != 2)
        return -1;
    *cpu_s = (double)(ut + st) / (double)sysconf(_SC_CLK_TCK);
    return 0;
}

static long read_vm_kb(int pid, const char *key)
{
    if (pid <= 0)
        return -1;
    char path[64], line[256];
    snprintf(path, sizeof path, "/proc/%d/status", pid);
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

static int limited_log(int *budget)
{
    if (*budget <= 0)
        return 0;
    (*budget)--;
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Subscriber process                                                       */

#define SUB_BUF 1024 /* response head, then one SSE line or WS message prefix */
#define CTL_MAX 125

enum { ST_NEW, ST_CONNECTING, ST_HEAD, ST_STREAM, ST_CLOSING, ST_CLOSED };
enum { CK_SIZE, CK_EXT, CK_DATA, CK_DATA_END, CK_DONE };

typedef struct sub {
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_write_t write_req;
    uint8_t state;
    uint8_t chunked, ck_state;
    uint8_t done;
    uint8_t ws_in_payload, ws_hdr_len, ws_hdr_need, ws_opcode, ws_fin, ws_masked, ws_msg_opcode;
    uint8_t close_sent, close_received;
    uint8_t ws_mask[4];
    uint8_t ws_hdr[14];
    uint8_t ctl_len;
    uint8_t ctl[CTL_MAX];
    uint16_t buf_len;
    uint64_t ck_left;
    uint64_t ws_left, ws_pos;
    uint32_t got;
    int64_t last_seq;
    char buf[SUB_BUF];
} sub;

static struct {
    uv_loop_t *loop;
    int index;
    int first, count; /* global indexes [first, first+count) */
    sub *subs;
    int next, inflight, settled;
    int ready_sent, publish_done, finishing, closing;
    int done_or_dead; /* subscribed connections that have all messages or died */
    int open_handles;
    int ready_fd, ctl_fd;
    uv_poll_t ctl_poll;
    uv_timer_t subscribe_timer, drain_timer, hard_timer, close_timer;
    struct sockaddr_in server;
    char *request;
    size_t request_len;
    uint64_t now;
    int log_budget;
} C;

static char g_read_buf[65536];

static void on_alloc(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
    (void)h;
    (void)suggested;
    buf->base = g_read_buf;
    buf->len = sizeof g_read_buf;
}

static void child_finish(void);
static void child_close_all(void);

static void send_byte(int fd, char c)
{
    while (write(fd, &c, 1) < 0 && errno == EINTR)
        ;
}

static void check_ready(void)
{
    if (C.ready_sent || C.settled < C.count)
        return;
    C.ready_sent = 1;
    g_stats->t_all_subscribed = uv_hrtime();
    uv_timer_stop(&C.subscribe_timer);
    send_byte(C.ready_fd, 'R');
}

static void check_finish(void)
{
    if (C.publish_done && !C.finishing && C.done_or_dead >= (int)g_stats->subscribed)
        child_finish();
}

static void on_sub_closed(uv_handle_t *h)
{
    sub *s = h->data;
    s->state = ST_CLOSED;
    C.open_handles--;
    if (C.closing && C.open_handles == 0)
        uv_stop(C.loop);
}

/* Closes a subscriber; counts it as settled/dead as appropriate. */
static void sub_close(sub *s, int failed_handshake)
{
    if (s->state == ST_CLOSED || uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    if (s->state == ST_CONNECTING || s->state == ST_HEAD) {
        C.inflight--;
        C.settled++;
        if (failed_handshake)
            g_stats->failed++;
    } else if (s->state == ST_STREAM && !C.closing) {
        g_stats->disconnects++;
        if (!s->done) {
            g_stats->disconnects_before_done++;
            C.done_or_dead++;
        }
    }
    s->state = ST_CLOSING;
    uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
}

typedef struct wreq {
    uv_write_t req;
    char data[4 + 8 + CTL_MAX + 8];
} wreq;

static void on_free_write(uv_write_t *req, int status)
{
    (void)status;
    free(req);
}

/* Sends a masked client frame (close or pong) with a small payload. */
static void ws_send_control(sub *s, uint8_t opcode, const uint8_t *payload, size_t len)
{
    if (len > CTL_MAX)
        len = CTL_MAX;
    wreq *w = malloc(sizeof *w);
    uint8_t *d = (uint8_t *)w->data;
    uint32_t r = (uint32_t)rand();
    uint8_t mask[4] = {(uint8_t)r, (uint8_t)(r >> 8), (uint8_t)(r >> 16), (uint8_t)(r >> 24)};
    d[0] = 0x80 | opcode;
    d[1] = 0x80 | (uint8_t)len;
    memcpy(d + 2, mask, 4);
    for (size_t i = 0; i < len; i++)
        d[6 + i] = payload[i] ^ mask[i & 3];
    uv_buf_t b = uv_buf_init(w->data, (unsigned)(6 + len));
    if (uv_write(&w->req, (uv_stream_t *)&s->tcp, &b, 1, on_free_write) != 0)
        free(w);
}

static void ws_send_close(sub *s)
{
    if (s->close_sent)
        return;
    s->close_sent = 1;
    uint8_t code[2] = {0x03, 0xe8}; /* 1000 */
    ws_send_control(s, 0x8, code, 2);
}

/* One message (SSE data line or WS text message prefix). */
static void on_payload(sub *s, const char *p, size_t n)
{
    const char *m = memmem(p, n, "ts=", 3);
    if (!m || (size_t)(p + n - m) < 3 + 20) {
        g_stats->other_messages++;
        return;
    }
    const char *end = p + n;
    uint64_t ts = parse_digits(m + 3, end, 20);
    int64_t seq = -1;
    const char *q = memmem(m, (size_t)(end - m), "seq=", 4);
    if (q)
        seq = (int64_t)parse_digits(q + 4, end, 10);
    uint64_t lat = C.now > ts ? C.now - ts : 0;
    g_stats->hist[hist_index(lat)]++;
    g_stats->lat_count++;
    g_stats->lat_sum += lat;
    if (lat > g_stats->lat_max)
        g_stats->lat_max = lat;
    g_stats->received++;
    if (g_stats->t_first_delivery == 0)
        g_stats->t_first_delivery = C.now;
    g_stats->t_last_delivery = C.now;
    if (seq <= s->last_seq)
        g_stats->out_of_order++;
    else
        s->last_seq = seq;
    if (++s->got == (uint32_t)opt.messages && !s->done) {
        s->done = 1;
        g_stats->complete++;
        C.done_or_dead++;
        check_finish();
    }
}

/* ---- SSE ---- */

static void sse_line(sub *s)
{
    size_t n = s->buf_len;
    if (n && s->buf[n - 1] == '\r')
        n--;
    if (n >= 5 && memcmp(s->buf, "data:", 5) == 0)
        on_payload(s, s->buf, n);
    s->buf_len = 0;
}

static void sse_bytes(sub *s, const char *p, size_t n)
{
    while (n) {
        const char *nl = memchr(p, '\n', n);
        size_t take = nl ? (size_t)(nl - p) : n;
        size_t room = SUB_BUF - s->buf_len;
        size_t copy = take < room ? take : room; /* a longer line keeps its start */
        memcpy(s->buf + s->buf_len, p, copy);
        s->buf_len += (uint16_t)copy;
        if (!nl)
            return;
        sse_line(s);
        p = nl + 1;
        n -= take + 1;
    }
}

/* ---- WebSocket (server frames) ---- */

static void ws_frame_end(sub *s)
{
    switch (s->ws_opcode) {
    case 0x0:
    case 0x1:
    case 0x2:
        if (s->ws_fin) {
            if (s->ws_msg_opcode == 0x1)
                on_payload(s, s->buf, s->buf_len);
            else
                g_stats->other_messages++;
            s->buf_len = 0;
        }
        break;
    case 0x8:
        s->close_received = 1;
        if (!s->close_sent) {
            /* The server closes first: a disconnect unless we are closing. */
            if (C.closing) {
                ws_send_close(s);
            } else {
                if (limited_log(&C.log_budget)) {
                    unsigned code = s->ctl_len >= 2 ? (unsigned)(s->ctl[0] << 8 | s->ctl[1]) : 0;
                    fprintf(stderr, "fanout[%d]: server sent WebSocket close %u\n", C.index, code);
                }
                ws_send_control(s, 0x8, s->ctl, s->ctl_len >= 2 ? 2 : 0);
                s->close_sent = 1;
            }
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
                s->ws_hdr_need = 2 +
                                 (len7 == 126   ? 2
                                  : len7 == 127 ? 8
                                                : 0) +
                                 ((s->ws_hdr[1] & 0x80) ? 4 : 0);
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
            if (s->ws_opcode == 0x1 || s->ws_opcode == 0x2) {
                s->ws_msg_opcode = s->ws_opcode;
                s->buf_len = 0;
            }
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
        for (size_t i = 0; i < take; i++) {
            uint8_t c = (uint8_t)p[i];
            if (s->ws_masked)
                c ^= s->ws_mask[(s->ws_pos + i) & 3];
            if (s->ws_opcode >= 0x8) {
                if (s->ctl_len < CTL_MAX)
                    s->ctl[s->ctl_len++] = c;
            } else if (s->buf_len < SUB_BUF) {
                s->buf[s->buf_len++] = (char)c;
            } else {
                /* only the message's start is kept; the marker is there */
                break;
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

/* ---- body: optionally de-chunked, then SSE or WS ---- */

static void stream_bytes(sub *s, const char *p, size_t n)
{
    if (opt.mode == MODE_SSE)
        sse_bytes(s, p, n);
    else
        ws_bytes(s, p, n);
}

static void body_bytes(sub *s, const char *p, size_t n)
{
    if (!s->chunked) {
        stream_bytes(s, p, n);
        return;
    }
    while (n) {
        switch (s->ck_state) {
        case CK_SIZE:
        case CK_EXT: {
            char c = *p++;
            n--;
            if (c == '\n') {
                s->ck_state = s->ck_left ? CK_DATA : CK_DONE;
            } else if (s->ck_state == CK_SIZE) {
                int v = (c >= '0' && c <= '9')   ? c - '0'
                        : (c >= 'a' && c <= 'f') ? c - 'a' + 10
                        : (c >= 'A' && c <= 'F') ? c - 'A' + 10
                                                 : -1;
                if (v >= 0)
                    s->ck_left = s->ck_left * 16 + (uint64_t)v;
                else
                    s->ck_state = CK_EXT; /* ';' extensions, '\r' */
            }
            break;
        }
        case CK_DATA: {
            size_t take = n < s->ck_left ? n : (size_t)s->ck_left;
            stream_bytes(s, p, take);
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
        case CK_DONE:
            return;
        }
    }
}

static void on_head(sub *s, size_t head_len, const char *rest, size_t rest_len)
{
    s->buf[head_len] = 0;
    int status = 0;
    if (head_len > 12 && strncmp(s->buf, "HTTP/1.", 7) == 0)
        status = atoi(s->buf + 9);
    int want = opt.mode == MODE_SSE ? 200 : 101;
    if (status != want) {
        g_stats->bad_status++;
        if (limited_log(&C.log_budget)) {
            char *eol = strchr(s->buf, '\r');
            if (eol)
                *eol = 0;
            fprintf(stderr, "fanout[%d]: subscriber got \"%s\"\n", C.index, s->buf);
        }
        sub_close(s, 1);
        return;
    }
    s->chunked = strcasestr(s->buf, "\ntransfer-encoding: chunked") != NULL;
    s->state = ST_STREAM;
    s->buf_len = 0;
    C.inflight--;
    C.settled++;
    g_stats->subscribed++;
    if (rest_len)
        body_bytes(s, rest, rest_len);
    check_ready();
}

static void start_more(void);

static void on_sub_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    sub *s = stream->data;
    if (nread < 0) {
        if (!C.closing && limited_log(&C.log_budget))
            fprintf(stderr, "fanout[%d]: subscriber %d: %s after %u messages\n", C.index,
                    (int)(s - C.subs) + C.first, uv_err_name((int)nread), s->got);
        int head = s->state == ST_HEAD;
        sub_close(s, head);
        if (head)
            start_more();
        check_ready();
        check_finish();
        return;
    }
    if (nread == 0)
        return;
    C.now = uv_hrtime();
    const char *p = buf->base;
    size_t n = (size_t)nread;
    if (s->state == ST_HEAD) {
        size_t old = s->buf_len;
        size_t room = SUB_BUF - 1 - old;
        size_t copy = n < room ? n : room;
        memcpy(s->buf + old, p, copy);
        s->buf_len += (uint16_t)copy;
        size_t from = old > 3 ? old - 3 : 0;
        char *e = memmem(s->buf + from, s->buf_len - from, "\r\n\r\n", 4);
        if (!e) {
            if (s->buf_len >= SUB_BUF - 1) {
                fprintf(stderr, "fanout[%d]: response head too long\n", C.index);
                sub_close(s, 1);
                start_more();
                check_ready();
            }
            return;
        }
        size_t head_len = (size_t)(e - s->buf) + 4;
        size_t consumed = head_len - old; /* bytes of this read that were head */
        /* keep the rest of this read (it may be longer than what was copied) */
        on_head(s, head_len, p + consumed, n - consumed);
        start_more();
        return;
    }
    if (s->state == ST_STREAM || (s->state == ST_CLOSING && !uv_is_closing((uv_handle_t *)&s->tcp)))
        body_bytes(s, p, n);
}

static void on_request_written(uv_write_t *req, int status)
{
    sub *s = req->data;
    if (status < 0 && s->state == ST_HEAD) {
        fprintf(stderr, "fanout[%d]: write: %s\n", C.index, uv_err_name(status));
        sub_close(s, 1);
        start_more();
        check_ready();
    }
}

static void on_connect(uv_connect_t *req, int status)
{
    sub *s = req->data;
    if (status < 0) {
        if (limited_log(&C.log_budget))
            fprintf(stderr, "fanout[%d]: connect: %s\n", C.index, uv_err_name(status));
        sub_close(s, 1);
        start_more();
        check_ready();
        return;
    }
    if (uv_is_closing((uv_handle_t *)&s->tcp))
        return;
    s->state = ST_HEAD;
    uv_buf_t b = uv_buf_init(C.request, (unsigned)C.request_len);
    s->write_req.data = s;
    uv_write(&s->write_req, (uv_stream_t *)&s->tcp, &b, 1, on_request_written);
    uv_read_start((uv_stream_t *)&s->tcp, on_alloc, on_sub_read);
}

static void start_one(sub *s, int global_index)
{
    s->last_seq = -1;
    s->tcp.data = s;
    s->connect_req.data = s;
    C.inflight++;
    C.open_handles++;
    s->state = ST_CONNECTING;
    int rc = uv_tcp_init_ex(C.loop, &s->tcp, AF_INET);
    if (rc != 0) {
        /* out of descriptors, typically: count as failed */
        C.open_handles--;
        C.inflight--;
        C.settled++;
        g_stats->failed++;
        s->state = ST_CLOSED;
        if (limited_log(&C.log_budget))
            fprintf(stderr, "fanout[%d]: socket: %s\n", C.index, uv_err_name(rc));
        return;
    }
    uv_os_fd_t fd;
    if (uv_fileno((uv_handle_t *)&s->tcp, &fd) == 0) {
        int one = 1;
        setsockopt(fd, IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, &one, sizeof one);
    }
    struct sockaddr_in src;
    char ip[32];
    snprintf(ip, sizeof ip, "127.0.0.%d", 2 + global_index % opt.src_addrs);
    uv_ip4_addr(ip, 0, &src);
    rc = uv_tcp_bind(&s->tcp, (const struct sockaddr *)&src, 0);
    if (rc == 0)
        rc = uv_tcp_connect(&s->connect_req, &s->tcp, (const struct sockaddr *)&C.server,
                            on_connect);
    if (rc != 0) {
        if (limited_log(&C.log_budget))
            fprintf(stderr, "fanout[%d]: bind/connect %s: %s\n", C.index, ip, uv_err_name(rc));
        sub_close(s, 1);
    }
}

static void start_more(void)
{
    while (!C.ready_sent && C.inflight < opt.concurrency && C.next < C.count) {
        int i = C.next++;
        start_one(&C.subs[i], C.first + i);
    }
}

static void on_subscribe_timeout(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout[%d]: subscribe timeout: %d of %d settled\n", C.index, C.settled,
            C.count);
    for (int i = 0; i < C.count; i++) {
        sub *s = &C.subs[i];
        if (s->state == ST_CONNECTING || s->state == ST_HEAD)
            sub_close(s, 1);
    }
    g_stats->failed += (uint64_t)(C.count - C.next);
    C.settled += C.count - C.next;
    C.next = C.count;
    check_ready();
}

static void on_drain_timeout(uv_timer_t *t)
{
    (void)t;
    child_finish();
}

static void on_close_timeout(uv_timer_t *t)
{
    (void)t;
    /* servers that do not answer our close frame: just close */
    for (int i = 0; i < C.count; i++)
        if (C.subs[i].state != ST_CLOSED && !uv_is_closing((uv_handle_t *)&C.subs[i].tcp) &&
            C.subs[i].state != ST_NEW)
            uv_close((uv_handle_t *)&C.subs[i].tcp, on_sub_closed);
    uv_stop(C.loop);
}

static void on_hard_timeout(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout[%d]: --timeout reached\n", C.index);
    child_finish();
    child_close_all();
}

static void child_finish(void)
{
    if (C.finishing)
        return;
    C.finishing = 1;
    uv_timer_stop(&C.drain_timer);
    g_stats->finished = 1;
    __sync_synchronize();
    send_byte(C.ready_fd, 'F');
}

static void child_close_all(void)
{
    if (C.closing)
        return;
    C.closing = 1;
    uv_timer_stop(&C.drain_timer);
    uv_timer_stop(&C.subscribe_timer);
    uv_timer_stop(&C.hard_timer);
    uv_poll_stop(&C.ctl_poll);
    for (int i = 0; i < C.count; i++) {
        sub *s = &C.subs[i];
        if (s->state == ST_NEW || s->state == ST_CLOSED || uv_is_closing((uv_handle_t *)&s->tcp))
            continue;
        if (opt.mode == MODE_WS && s->state == ST_STREAM) {
            ws_send_close(s);
            s->state = ST_CLOSING; /* wait for the server's close frame or EOF */
            if (s->close_received)
                uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
        } else {
            uv_close((uv_handle_t *)&s->tcp, on_sub_closed);
        }
    }
    if (C.open_handles == 0)
        uv_stop(C.loop);
    else
        uv_timer_start(&C.close_timer, on_close_timeout, 3000, 0);
}

static void on_ctl(uv_poll_t *p, int status, int events)
{
    (void)p;
    (void)events;
    char c = 0;
    ssize_t r = status < 0 ? -1 : read(C.ctl_fd, &c, 1);
    if (r < 0 && errno == EAGAIN)
        return;
    if (r <= 0) { /* parent gone */
        child_finish();
        child_close_all();
        return;
    }
    if (c == 'D') {
        C.publish_done = 1;
        check_finish();
        if (!C.finishing)
            uv_timer_start(&C.drain_timer, on_drain_timeout, (uint64_t)(opt.drain * 1000), 0);
    } else if (c == 'X') {
        child_finish();
        child_close_all();
    }
}

static int child_main(int index, int ready_fd, int ctl_fd)
{
    memset(&C, 0, sizeof C);
    C.index = index;
    C.ready_fd = ready_fd;
    C.ctl_fd = ctl_fd;
    C.log_budget = 10;
    int per = opt.subs / opt.procs, extra = opt.subs % opt.procs;
    C.first = index * per + (index < extra ? index : extra);
    C.count = per + (index < extra ? 1 : 0);
    g_stats->assigned = (uint64_t)C.count;
    g_stats->t_start = uv_hrtime();
    srand((unsigned)(getpid() ^ uv_hrtime()));
    C.subs = calloc((size_t)(C.count ? C.count : 1), sizeof(sub));
    if (!C.subs)
        die("out of memory");
    uv_ip4_addr(opt.host, opt.port, &C.server);

    char *path = subst_topic(opt.sub_path);
    char req[2048];
    if (opt.mode == MODE_SSE) {
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nAccept: text/event-stream\r\n"
                 "Cache-Control: no-cache\r\n\r\n",
                 path, opt.host, opt.port);
    } else {
        static const char b64[] =
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        char key[25];
        for (int i = 0; i < 21; i++)
            key[i] = b64[rand() & 63];
        key[21] = b64[(rand() & 3) << 4]; /* 16 bytes: last char carries 2 bits */
        key[22] = key[23] = '=';
        key[24] = 0;
        snprintf(req, sizeof req,
                 "GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                 "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                 "Sec-WebSocket-Version: 13\r\n\r\n",
                 path, opt.host, opt.port, key);
    }
    free(path);
    C.request = strdup(req);
    C.request_len = strlen(req);

    C.loop = uv_default_loop();
    fcntl(ctl_fd, F_SETFL, fcntl(ctl_fd, F_GETFL) | O_NONBLOCK);
    uv_poll_init(C.loop, &C.ctl_poll, ctl_fd);
    uv_poll_start(&C.ctl_poll, UV_READABLE, on_ctl);
    uv_timer_init(C.loop, &C.subscribe_timer);
    uv_timer_init(C.loop, &C.drain_timer);
    uv_timer_init(C.loop, &C.hard_timer);
    uv_timer_init(C.loop, &C.close_timer);
    uv_timer_start(&C.subscribe_timer, on_subscribe_timeout,
                   (uint64_t)(opt.subscribe_timeout * 1000), 0);
    uv_timer_start(&C.hard_timer, on_hard_timeout, (uint64_t)(opt.timeout * 1000), 0);
    start_more();
    check_ready();
    uv_run(C.loop, UV_RUN_DEFAULT);
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Publisher (in the parent)                                                */

/* Fixed rate is open loop: message i is sent at t_first + i/R whether or not
 * earlier answers are back (pipelined on the keep-alive connection), so a
 * server that falls behind shows it as latency instead of a slower publisher
 * (no coordinated omission). Each in-flight request has its own buffer. */
typedef struct pub_slot {
    uv_write_t req;
    char *buf;
} pub_slot;

static struct {
    uv_loop_t *loop;
    uv_tcp_t tcp;
    uv_connect_t connect_req;
    uv_timer_t timer, hard_timer;
    pub_slot *slots;
    int nslots;
    size_t req_len;
    size_t ts_off; /* offset of the 20 timestamp digits in a request */
    int sent, answered, errors, late, max_outstanding;
    uint64_t t_first, t_last_answer;
    uint64_t period_ns;
    char rbuf[65536];
    size_t rlen;
    int failed, stopped;
} P;

static void pub_schedule(void);

static void pub_stop(void)
{
    if (P.stopped)
        return;
    P.stopped = 1;
    uv_timer_stop(&P.timer);
    uv_timer_stop(&P.hard_timer);
    if (!uv_is_closing((uv_handle_t *)&P.tcp))
        uv_close((uv_handle_t *)&P.tcp, NULL);
    uv_close((uv_handle_t *)&P.timer, NULL);
    uv_close((uv_handle_t *)&P.hard_timer, NULL);
}

static void on_pub_timer(uv_timer_t *t)
{
    (void)t;
    pub_schedule();
}

static void on_pub_written(uv_write_t *req, int status)
{
    (void)req;
    if (status < 0 && !P.stopped) {
        fprintf(stderr, "fanout: publish write: %s\n", uv_err_name(status));
        P.failed = 1;
        pub_stop();
    }
}

static void pub_send(void)
{
    pub_slot *slot = &P.slots[P.sent % P.nslots];
    uint64_t now = uv_hrtime();
    char digits[48];
    snprintf(digits, sizeof digits, "%020" PRIu64 ",seq=%010d", now, P.sent);
    memcpy(slot->buf + P.ts_off, digits, 20 + 5 + 10);
    if (P.sent == 0)
        P.t_first = now;
    P.sent++;
    if (P.sent - P.answered > P.max_outstanding)
        P.max_outstanding = P.sent - P.answered;
    uv_buf_t b = uv_buf_init(slot->buf, (unsigned)P.req_len);
    if (uv_write(&slot->req, (uv_stream_t *)&P.tcp, &b, 1, on_pub_written) != 0) {
        fprintf(stderr, "fanout: publish write failed\n");
        P.failed = 1;
        pub_stop();
    }
}

/* Sends what is due: closed loop, the next message once the last is answered;
 * fixed rate, every message whose time has come, then arms the timer. */
static void pub_schedule(void)
{
    if (P.stopped)
        return;
    if (P.sent >= opt.messages) {
        if (P.answered >= opt.messages)
            pub_stop();
        return;
    }
    if (P.period_ns == 0) {
        if (P.sent == P.answered)
            pub_send();
        return;
    }
    while (P.sent < opt.messages && !P.stopped) {
        if (P.sent - P.answered >= P.nslots)
            return; /* every buffer in flight: resumes on the next answer */
        uint64_t now = uv_hrtime();
        uint64_t due = P.sent == 0 ? now : P.t_first + (uint64_t)P.sent * P.period_ns;
        if (due > now + 200000) { /* more than 0.2 ms ahead */
            uv_update_time(P.loop);
            uv_timer_start(&P.timer, on_pub_timer, (due - now) / 1000000, 0);
            return;
        }
        if (now > due + P.period_ns / 2)
            P.late++;
        pub_send();
    }
}

/* Parses answers: status line, Content-Length, body skipped. */
/* Parses one complete answer at the start of P.rbuf; returns its length, 0 if
 * incomplete, -1 on a fatal error. */
static long pub_parse_answer(char *b, size_t len)
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
    if (strcasestr(b, "\ntransfer-encoding: chunked")) {
        fprintf(stderr, "fanout: chunked publish answers are not supported\n");
        return -1;
    }
    if (head + body > sizeof P.rbuf) {
        fprintf(stderr, "fanout: publish answer too long\n");
        return -1;
    }
    if (len < head + body) {
        b[head - 1] = save;
        return 0;
    }
    if (status < 200 || status > 299) {
        if (P.errors < 5) {
            char line[128];
            size_t l = strcspn(b, "\r");
            snprintf(line, sizeof line, "%.*s", (int)(l < 100 ? l : 100), b);
            fprintf(stderr, "fanout: publish answered \"%s\"\n", line);
        }
        P.errors++;
    }
    b[head - 1] = save;
    return (long)(head + body);
}

static void on_pub_read(uv_stream_t *stream, ssize_t nread, const uv_buf_t *buf)
{
    (void)stream;
    if (nread < 0) {
        if (!P.stopped)
            fprintf(stderr, "fanout: publisher connection: %s after %d answers\n",
                    uv_err_name((int)nread), P.answered);
        P.failed = 1;
        pub_stop();
        return;
    }
    const char *in = buf->base;
    size_t left = (size_t)nread;
    while (left && !P.stopped) {
        size_t room = sizeof P.rbuf - P.rlen;
        size_t take = left < room ? left : room;
        memcpy(P.rbuf + P.rlen, in, take);
        P.rlen += take;
        in += take;
        left -= take;
        size_t off = 0;
        for (;;) {
            long n = pub_parse_answer(P.rbuf + off, P.rlen - off);
            if (n < 0) {
                P.failed = 1;
                pub_stop();
                return;
            }
            if (n == 0)
                break;
            off += (size_t)n;
            P.answered++;
            P.t_last_answer = uv_hrtime();
            pub_schedule();
            if (P.stopped)
                return;
        }
        memmove(P.rbuf, P.rbuf + off, P.rlen - off);
        P.rlen -= off;
        if (take == room && P.rlen == sizeof P.rbuf) {
            fprintf(stderr, "fanout: publish answer too long\n");
            P.failed = 1;
            pub_stop();
            return;
        }
    }
}

static void on_pub_connect(uv_connect_t *req, int status)
{
    (void)req;
    if (status < 0) {
        fprintf(stderr, "fanout: publisher connect: %s\n", uv_err_name(status));
        P.failed = 1;
        pub_stop();
        return;
    }
    uv_tcp_nodelay(&P.tcp, 1);
    uv_read_start((uv_stream_t *)&P.tcp, on_alloc, on_pub_read);
    pub_schedule();
}

static void on_pub_hard_timeout(uv_timer_t *t)
{
    (void)t;
    fprintf(stderr, "fanout: publishing hit --timeout after %d of %d\n", P.answered, opt.messages);
    P.failed = 1;
    pub_stop();
}

static void run_publisher(double timeout_s)
{
    memset(&P, 0, sizeof P);
    P.loop = uv_default_loop();
    P.period_ns = opt.rate > 0 ? (uint64_t)(1e9 / opt.rate) : 0;
    P.nslots = P.period_ns == 0 ? 1 : opt.messages < 4096 ? opt.messages : 4096;
    char *path = subst_topic(opt.pub_path);
    char head[1024];
    int hl = snprintf(head, sizeof head,
                      "POST %s HTTP/1.1\r\nHost: %s:%d\r\nContent-Type: text/plain\r\n"
                      "Content-Length: %d\r\n\r\n",
                      path, opt.host, opt.port, opt.size);
    free(path);
    P.req_len = (size_t)hl + (size_t)opt.size;
    P.ts_off = (size_t)hl + 3;
    P.slots = calloc((size_t)P.nslots, sizeof *P.slots);
    char *bufs = malloc(P.req_len * (size_t)P.nslots);
    if (!P.slots || !bufs)
        die("out of memory");
    for (int i = 0; i < P.nslots; i++) {
        char *r = P.slots[i].buf = bufs + (size_t)i * P.req_len;
        memcpy(r, head, (size_t)hl);
        memset(r + hl, 'x', (size_t)opt.size);
        memcpy(r + hl, "ts=00000000000000000000,seq=0000000000,", 39);
    }

    uv_tcp_init(P.loop, &P.tcp);
    uv_timer_init(P.loop, &P.timer);
    uv_timer_init(P.loop, &P.hard_timer);
    uv_timer_start(&P.hard_timer, on_pub_hard_timeout, (uint64_t)(timeout_s * 1000), 0);
    struct sockaddr_in addr;
    uv_ip4_addr(opt.host, opt.port, &addr);
    uv_tcp_connect(&P.connect_req, &P.tcp, (const struct sockaddr *)&addr, on_pub_connect);
    uv_run(P.loop, UV_RUN_DEFAULT);
}

/* ------------------------------------------------------------------------ */
/* Parent: fork, coordinate, merge, report                                  */

static double now_s(void)
{
    return (double)uv_hrtime() / 1e9;
}

/* Waits until every child wrote byte `want` on its ready pipe, or deadline. */
static int wait_children(int *fds, char want, int *got, double deadline)
{
    int n = opt.procs, have = 0;
    for (int i = 0; i < n; i++)
        have += got[i];
    while (have < n) {
        double left = deadline - now_s();
        if (left <= 0)
            return -1;
        struct pollfd pfd[256];
        int idx[256], m = 0;
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
            if (k <= 0) {
                fprintf(stderr, "fanout: subscriber process %d exited early\n", idx[j]);
                got[idx[j]] = 1;
                have++;
                continue;
            }
            if (c == want) {
                got[idx[j]] = 1;
                have++;
            }
        }
    }
    return 0;
}

static void usage(void)
{
    fprintf(stderr,
            "usage: fanout --mode sse|ws --port P [options]\n"
            "  --host ADDR           server address, 127.0.0.0/8 only (127.0.0.1)\n"
            "  --topic T             topic / channel id (bench)\n"
            "  --sub-path PATH       subscribe path, {topic} replaced\n"
            "                        (sse: /events?topic={topic}, ws: /ws?topic={topic})\n"
            "  --pub-path PATH       publish path, POST, {topic} replaced (/topics/{topic})\n"
            "  --subs N              subscriber connections in all (100)\n"
            "  --procs K             subscriber processes, N/K connections each (1)\n"
            "  --src-addrs A         spread over source addresses 127.0.0.2 .. 127.0.0.(1+A) (8)\n"
            "  --messages M          messages to publish (100)\n"
            "  --size S              bytes of data per message, >= 40 (256)\n"
            "  --rate R              messages per second; 0 = next as soon as answered (0)\n"
            "  --concurrency C       handshakes in flight per process (64)\n"
            "  --subscribe-timeout s (60)   --drain s (5)   --timeout s (180)\n"
            "  --server-pid PID      report this process's CPU time and peak RSS\n"
            "  --label TEXT          copied into the JSON report\n");
    exit(2);
}

int main(int argc, char **argv)
{
    static struct option lo[] = {
        {"mode", 1, 0, 'm'},        {"host", 1, 0, 'H'},
        {"port", 1, 0, 'p'},        {"topic", 1, 0, 't'},
        {"sub-path", 1, 0, 'S'},    {"pub-path", 1, 0, 'P'},
        {"subs", 1, 0, 'n'},        {"procs", 1, 0, 'k'},
        {"src-addrs", 1, 0, 'a'},   {"messages", 1, 0, 'M'},
        {"size", 1, 0, 's'},        {"rate", 1, 0, 'r'},
        {"concurrency", 1, 0, 'c'}, {"subscribe-timeout", 1, 0, 'T'},
        {"drain", 1, 0, 'd'},       {"timeout", 1, 0, 'x'},
        {"server-pid", 1, 0, 'i'},  {"label", 1, 0, 'l'},
        {"help", 0, 0, 'h'},        {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", lo, NULL)) != -1) {
        switch (c) {
        case 'm':
            if (strcmp(optarg, "sse") == 0)
                opt.mode = MODE_SSE;
            else if (strcmp(optarg, "ws") == 0)
                opt.mode = MODE_WS;
            else
                usage();
            break;
        case 'H':
            opt.host = optarg;
            break;
        case 'p':
            opt.port = atoi(optarg);
            break;
        case 't':
            opt.topic = optarg;
            break;
        case 'S':
            opt.sub_path = optarg;
            break;
        case 'P':
            opt.pub_path = optarg;
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
        case 'M':
            opt.messages = atoi(optarg);
            break;
        case 's':
            opt.size = atoi(optarg);
            break;
        case 'r':
            opt.rate = atof(optarg);
            break;
        case 'c':
            opt.concurrency = atoi(optarg);
            break;
        case 'T':
            opt.subscribe_timeout = atof(optarg);
            break;
        case 'd':
            opt.drain = atof(optarg);
            break;
        case 'x':
            opt.timeout = atof(optarg);
            break;
        case 'i':
            opt.server_pid = atoi(optarg);
            break;
        case 'l':
            opt.label = optarg;
            break;
        default:
            usage();
        }
    }
    if (!opt.sub_path)
        opt.sub_path = opt.mode == MODE_SSE ? "/events?topic={topic}" : "/ws?topic={topic}";
    if (strncmp(opt.host, "127.", 4) != 0)
        die("--host must be a loopback address (127.0.0.0/8)");
    if (opt.subs < 1 || opt.procs < 1 || opt.procs > 256 || opt.procs > opt.subs)
        die("need 1 <= --procs <= min(--subs, 256)");
    if (opt.subs / opt.procs + 1 > 19000)
        die("too many subscribers per process: raise --procs (20,000 descriptors per process)");
    if (opt.src_addrs < 1 || opt.src_addrs > 250)
        die("--src-addrs must be 1..250");
    if (opt.size < 40 || opt.size > 1 << 20)
        die("--size must be 40..1048576 (the marker takes 39 bytes)");
    if (opt.messages < 1 || opt.concurrency < 1 || opt.rate < 0)
        die("bad --messages, --concurrency or --rate");
    signal(SIGPIPE, SIG_IGN);

    proc_stats *all = mmap(NULL, sizeof(proc_stats) * (size_t)opt.procs, PROT_READ | PROT_WRITE,
                           MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (all == MAP_FAILED)
        die("mmap: %s", strerror(errno));
    memset(all, 0, sizeof(proc_stats) * (size_t)opt.procs);

    double t0 = now_s();
    double deadline = t0 + opt.timeout;
    double cpu0 = 0, cpu1 = 0, cpu2 = 0;
    int have_cpu = read_server_cpu(opt.server_pid, &cpu0) == 0;

    int ready_fd[256], ctl_fd[256];
    pid_t pids[256];
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
            g_stats = &all[i];
            child_main(i, rp[1], cp[0]);
            _exit(0);
        }
        close(rp[1]);
        close(cp[0]);
        ready_fd[i] = rp[0];
        ctl_fd[i] = cp[1];
        pids[i] = pid;
    }

    int got[256] = {0};
    if (wait_children(ready_fd, 'R', got, t0 + opt.subscribe_timeout + 10) != 0)
        fprintf(stderr, "fanout: subscriber processes not ready in time; publishing anyway\n");
    double t_subscribed = now_s();
    if (have_cpu)
        read_server_cpu(opt.server_pid, &cpu1);
    uint64_t subscribed = 0;
    for (int i = 0; i < opt.procs; i++)
        subscribed += all[i].subscribed;
    fprintf(stderr, "fanout: %" PRIu64 "/%d subscribed in %.2f s; publishing %d x %d B at %s\n",
            subscribed, opt.subs, t_subscribed - t0, opt.messages, opt.size,
            opt.rate > 0 ? "fixed rate" : "closed loop");

    double pub_timeout = deadline - now_s() - opt.drain - 5;
    if (pub_timeout < 1)
        pub_timeout = 1;
    run_publisher(pub_timeout);
    double t_published = now_s();

    for (int i = 0; i < opt.procs; i++)
        send_byte(ctl_fd[i], 'D');
    memset(got, 0, sizeof got);
    wait_children(ready_fd, 'F', got, now_s() + opt.drain + 10);
    if (have_cpu)
        read_server_cpu(opt.server_pid, &cpu2);
    long hwm = read_vm_kb(opt.server_pid, "VmHWM");
    long rss = read_vm_kb(opt.server_pid, "VmRSS");

    /* let the subscribers close, then reap them (bounded) */
    for (int i = 0; i < opt.procs; i++)
        send_byte(ctl_fd[i], 'X');
    double reap_deadline = now_s() + 10;
    int alive = opt.procs;
    while (alive > 0) {
        alive = 0;
        for (int i = 0; i < opt.procs; i++) {
            if (pids[i] <= 0)
                continue;
            int st;
            pid_t r = waitpid(pids[i], &st, WNOHANG);
            if (r == pids[i]) {
                if (!(WIFEXITED(st) && WEXITSTATUS(st) == 0))
                    fprintf(stderr, "fanout: subscriber process %d ended abnormally (status %d)\n",
                            i, st);
                pids[i] = 0;
            } else {
                alive++;
            }
        }
        if (alive && now_s() > reap_deadline) {
            for (int i = 0; i < opt.procs; i++)
                if (pids[i] > 0) {
                    fprintf(stderr, "fanout: killing stuck subscriber process %d\n", i);
                    kill(pids[i], SIGKILL);
                }
            reap_deadline = now_s() + 5;
        }
        if (alive)
            usleep(10000);
    }
    double t_end = now_s();

    /* merge */
    proc_stats *tot = calloc(1, sizeof *tot);
    for (int i = 0; i < opt.procs; i++) {
        proc_stats *s = &all[i];
        for (int b = 0; b < HIST_N; b++)
            tot->hist[b] += s->hist[b];
        tot->lat_count += s->lat_count;
        tot->lat_sum += s->lat_sum;
        if (s->lat_max > tot->lat_max)
            tot->lat_max = s->lat_max;
        tot->subscribed += s->subscribed;
        tot->failed += s->failed;
        tot->disconnects += s->disconnects;
        tot->disconnects_before_done += s->disconnects_before_done;
        tot->received += s->received;
        tot->out_of_order += s->out_of_order;
        tot->other_messages += s->other_messages;
        tot->bad_status += s->bad_status;
        tot->complete += s->complete;
        if (s->t_first_delivery &&
            (!tot->t_first_delivery || s->t_first_delivery < tot->t_first_delivery))
            tot->t_first_delivery = s->t_first_delivery;
        if (s->t_last_delivery > tot->t_last_delivery)
            tot->t_last_delivery = s->t_last_delivery;
    }
    double pct[4] = {0.50, 0.90, 0.99, 0.999};
    double pv[4] = {0};
    for (int k = 0; k < 4; k++) {
        uint64_t rank = (uint64_t)((double)tot->lat_count * pct[k] + 0.999999);
        if (rank == 0)
            continue;
        uint64_t cum = 0;
        for (int b = 0; b < HIST_N; b++) {
            cum += tot->hist[b];
            if (cum >= rank) {
                uint64_t v = hist_value(b);
                pv[k] = (double)(v < tot->lat_max ? v : tot->lat_max) / 1e6;
                break;
            }
        }
    }
    uint64_t expected = (uint64_t)opt.subs * (uint64_t)opt.messages;
    double elapsed = tot->t_last_delivery > P.t_first && P.t_first
                         ? (double)(tot->t_last_delivery - P.t_first) / 1e9
                         : 0;
    struct rusage ru_self, ru_kids;
    getrusage(RUSAGE_SELF, &ru_self);
    getrusage(RUSAGE_CHILDREN, &ru_kids);
    double client_cpu = (double)(ru_self.ru_utime.tv_sec + ru_self.ru_stime.tv_sec +
                                 ru_kids.ru_utime.tv_sec + ru_kids.ru_stime.tv_sec) +
                        (double)(ru_self.ru_utime.tv_usec + ru_self.ru_stime.tv_usec +
                                 ru_kids.ru_utime.tv_usec + ru_kids.ru_stime.tv_usec) /
                            1e6;

    printf("{\"label\":\"%s\",\"mode\":\"%s\",\"subscribers\":%d,\"procs\":%d,"
           "\"messages\":%d,\"size\":%d,\"rate\":%g,\n",
           opt.label, opt.mode == MODE_SSE ? "sse" : "ws", opt.subs, opt.procs, opt.messages,
           opt.size, opt.rate);
    printf(" \"subscribed\":%" PRIu64 ",\"subscribe_failed\":%" PRIu64 ",\"bad_status\":%" PRIu64
           ",\"subscribe_s\":%.3f,\n",
           tot->subscribed, tot->failed, tot->bad_status, t_subscribed - t0);
    printf(" \"published\":%d,\"publish_errors\":%d,\"publish_late\":%d,"
           "\"publish_max_outstanding\":%d,\"publish_failed\":%s,\"publish_s\":%.3f,\n",
           P.answered, P.errors, P.late, P.max_outstanding, P.failed ? "true" : "false",
           P.t_first ? (double)(P.t_last_answer - P.t_first) / 1e9 : 0.0);
    printf(" \"deliveries_expected\":%" PRIu64 ",\"deliveries_received\":%" PRIu64
           ",\"deliveries_lost\":%" PRId64 ",\"out_of_order_or_duplicate\":%" PRIu64
           ",\"other_messages\":%" PRIu64 ",\"subscribers_complete\":%" PRIu64
           ",\"disconnects\":%" PRIu64 ",\"disconnects_before_done\":%" PRIu64 ",\n",
           expected, tot->received,
           (int64_t)expected - (int64_t)(tot->received - tot->out_of_order), tot->out_of_order,
           tot->other_messages, tot->complete, tot->disconnects, tot->disconnects_before_done);
    printf(" \"elapsed_s\":%.3f,\"deliveries_per_s\":%.0f,\n", elapsed,
           elapsed > 0 ? (double)tot->received / elapsed : 0.0);
    printf(" \"latency_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f,\"p999\":%.3f,\"max\":%.3f,"
           "\"mean\":%.3f},\n",
           pv[0], pv[1], pv[2], pv[3], (double)tot->lat_max / 1e6,
           tot->lat_count ? (double)tot->lat_sum / (double)tot->lat_count / 1e6 : 0.0);
    if (have_cpu)
        printf(" \"server_cpu_s\":{\"subscribe\":%.2f,\"publish\":%.2f},\"server_vmhwm_kb\":%ld,"
               "\"server_vmrss_kb\":%ld,\n",
               cpu1 - cpu0, cpu2 - cpu1, hwm, rss);
    printf(" \"client_cpu_s\":%.2f,\"wall_s\":%.3f,\"published_in_s\":%.3f}\n", client_cpu,
           t_end - t0, t_published - t_subscribed);
    fflush(stdout);
    int ok = tot->received - tot->out_of_order == expected && !P.failed && P.errors == 0;
    return ok ? 0 : 1;
}
