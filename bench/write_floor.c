/* write_floor: what one message to N loopback TCP subscribers costs with no
 * server at all — N plain write(2) calls from one core, read by another
 * process on the other core. It is the floor under any server's fan-out
 * latency on this machine: with one topic, the last subscriber cannot hear of
 * a message before N writes have been made.
 *
 *   write_floor --subs 1000 --size 90 --rounds 200 --gap-ms 5 \
 *               --writer-cpu 0 --reader-cpu 1
 *
 * Prints one JSON line: the walk time (first write to last), its cost per
 * write, and the offsets of the individual writes within their walk — the
 * publish->receive latencies a server with zero cost of its own would show.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define MAX_SUBS 19000
#define SOURCE_BASE 0x7f000002u /* 127.0.0.2: ephemeral ports are per source */

static struct {
    int subs, size, rounds, src_addrs, writer_cpu, reader_cpu;
    double gap_ms;
} opt = {1000, 90, 200, 16, -1, -1, 5.0};

static void die(const char *what)
{
    fprintf(stderr, "write_floor: %s: %s\n", what, strerror(errno));
    exit(1);
}

static uint64_t now_ns(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void pin_to(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof set, &set) != 0)
        die("sched_setaffinity");
}

/* The subscribers: connect, then read and discard until the writer closes. */
static void reader_main(const struct sockaddr_in *server)
{
    pin_to(opt.reader_cpu);
    int ep = epoll_create1(0);
    if (ep < 0)
        die("epoll_create1");
    for (int i = 0; i < opt.subs; i++) {
        int fd = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in source = {.sin_family = AF_INET};
        source.sin_addr.s_addr = htonl(SOURCE_BASE + (uint32_t)(i % opt.src_addrs));
        if (fd < 0 || bind(fd, (const struct sockaddr *)&source, sizeof source) != 0 ||
            connect(fd, (const struct sockaddr *)server, sizeof *server) != 0)
            die("subscriber connect");
        fcntl(fd, F_SETFL, O_NONBLOCK);
        struct epoll_event event = {.events = EPOLLIN, .data.fd = fd};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &event) != 0)
            die("epoll_ctl");
    }
    static char sink[65536];
    int open_count = opt.subs;
    while (open_count > 0) {
        struct epoll_event events[256];
        int ready = epoll_wait(ep, events, 256, -1);
        for (int i = 0; i < ready; i++) {
            ssize_t got = read(events[i].data.fd, sink, sizeof sink);
            if (got == 0 || (got < 0 && errno != EAGAIN)) {
                close(events[i].data.fd);
                open_count--;
            }
        }
    }
    exit(0);
}

static int compare_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double percentile_ms(const uint64_t *sorted, size_t n, double p)
{
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1e6;
}

static void usage(void)
{
    fprintf(stderr, "usage: write_floor [--subs N] [--size B] [--rounds R] [--gap-ms G]\n"
                    "                   [--src-addrs A] [--writer-cpu C] [--reader-cpu C]\n");
    exit(2);
}

static void parse_options(int argc, char **argv)
{
    static const struct option options[] = {
        {"subs", 1, 0, 'n'},       {"size", 1, 0, 's'},
        {"rounds", 1, 0, 'r'},     {"gap-ms", 1, 0, 'g'},
        {"src-addrs", 1, 0, 'a'},  {"writer-cpu", 1, 0, 'w'},
        {"reader-cpu", 1, 0, 'c'}, {0, 0, 0, 0},
    };
    int c;
    while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
        switch (c) {
        case 'n':
            opt.subs = atoi(optarg);
            break;
        case 's':
            opt.size = atoi(optarg);
            break;
        case 'r':
            opt.rounds = atoi(optarg);
            break;
        case 'g':
            opt.gap_ms = atof(optarg);
            break;
        case 'a':
            opt.src_addrs = atoi(optarg);
            break;
        case 'w':
            opt.writer_cpu = atoi(optarg);
            break;
        case 'c':
            opt.reader_cpu = atoi(optarg);
            break;
        default:
            usage();
        }
    }
    if (opt.subs < 1 || opt.subs > MAX_SUBS || opt.size < 1 || opt.rounds < 1 ||
        opt.src_addrs < 1 || opt.gap_ms < 0)
        usage();
}

int main(int argc, char **argv)
{
    parse_options(argc, argv);
    int listener = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in server = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(0x7f000001)};
    socklen_t length = sizeof server;
    if (listener < 0 || bind(listener, (struct sockaddr *)&server, sizeof server) != 0 ||
        listen(listener, 4096) != 0 || getsockname(listener, (struct sockaddr *)&server, &length))
        die("listen");
    pid_t reader = fork();
    if (reader < 0)
        die("fork");
    if (reader == 0)
        reader_main(&server);

    pin_to(opt.writer_cpu);
    int *fds = malloc(sizeof *fds * (size_t)opt.subs);
    char *message = malloc((size_t)opt.size);
    size_t writes = (size_t)opt.subs * (size_t)opt.rounds;
    uint64_t *offsets = malloc(sizeof *offsets * writes);
    uint64_t *walks = malloc(sizeof *walks * (size_t)opt.rounds);
    if (!fds || !message || !offsets || !walks)
        die("malloc");
    memset(message, 'x', (size_t)opt.size);
    for (int i = 0; i < opt.subs; i++) {
        int one = 1;
        fds[i] = accept(listener, NULL, NULL);
        if (fds[i] < 0)
            die("accept");
        setsockopt(fds[i], IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    }

    uint64_t short_writes = 0;
    for (int round = 0; round < opt.rounds; round++) {
        uint64_t start = now_ns();
        for (int i = 0; i < opt.subs; i++) {
            if (write(fds[i], message, (size_t)opt.size) != opt.size)
                short_writes++;
            offsets[(size_t)round * (size_t)opt.subs + (size_t)i] = now_ns() - start;
        }
        walks[round] = now_ns() - start;
        struct timespec gap = {(time_t)(opt.gap_ms / 1000), (long)(opt.gap_ms * 1e6) % 1000000000L};
        nanosleep(&gap, NULL);
    }
    for (int i = 0; i < opt.subs; i++)
        close(fds[i]);
    waitpid(reader, NULL, 0);

    uint64_t walk_sum = 0;
    for (int round = 0; round < opt.rounds; round++)
        walk_sum += walks[round];
    qsort(walks, (size_t)opt.rounds, sizeof *walks, compare_u64);
    qsort(offsets, writes, sizeof *offsets, compare_u64);
    printf("{\"phase\":\"floor\",\"subscribers\":%d,\"size\":%d,\"rounds\":%d,\"gap_ms\":%g,"
           "\"short_writes\":%llu,\"us_per_write\":%.3f,"
           "\"walk_ms\":{\"p50\":%.3f,\"p99\":%.3f,\"max\":%.3f,\"mean\":%.3f},"
           "\"delivery_ms\":{\"p50\":%.3f,\"p90\":%.3f,\"p99\":%.3f}}\n",
           opt.subs, opt.size, opt.rounds, opt.gap_ms, (unsigned long long)short_writes,
           (double)walk_sum / 1e3 / (double)writes, percentile_ms(walks, (size_t)opt.rounds, 0.5),
           percentile_ms(walks, (size_t)opt.rounds, 0.99), (double)walks[opt.rounds - 1] / 1e6,
           (double)walk_sum / 1e6 / opt.rounds, percentile_ms(offsets, writes, 0.5),
           percentile_ms(offsets, writes, 0.9), percentile_ms(offsets, writes, 0.99));
    return short_writes ? 1 : 0;
}
