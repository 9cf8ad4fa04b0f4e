/*
 * herald: argv → config → hub and engine → workers → loop; signals; exit codes
 * (0 clean shutdown, 1 runtime failure, 2 bad usage or configuration).
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "herald/alloc.h"
#include "herald/config.h"
#include "herald/hub.h"
#include "herald/log.h"
#include "herald/settings.h"
#include "herald/worker.h"
#include "herald/workers.h"
#include "engine/memory.h"
#include "engine/redis.h"
#include "engine/redis_url.h"
#include "http/http1.h"
#include "ops/service.h"
#include "ops/token_tool.h"
#include "transport/context.h"

/* What the command line asked for: a reload (SIGHUP) applies it again on top of the file. */
typedef struct options {
    const char *config_path; /* NULL: the embedded defaults, and nothing to reload */
    const char *listen;
    const char *log_level;
    bool check_only; /* --check-config: validate, say so and exit */
} options;

/*
 * The signals herald takes, all on the main thread (the workers block
 * them). SIGUSR1 and SIGUSR2 mean nothing to herald, but their default
 * action would end it: they are logged and ignored. SIGPIPE is ignored
 * outright (a peer gone mid-write is an error code, not a signal).
 */
static const struct {
    int signum;
    const char *name;
} taken_signals[] = {
    {SIGTERM, "SIGTERM"}, {SIGINT, "SIGINT"},   {SIGHUP, "SIGHUP"},
    {SIGUSR1, "SIGUSR1"}, {SIGUSR2, "SIGUSR2"},
};

#define N_SIGNALS (sizeof(taken_signals) / sizeof(taken_signals[0]))

/*
 * What the workers serve: HTTP/1 requests, routed to the transports, with
 * the transports' context per loop. net/ names neither; this is where the
 * layers meet.
 */
static const hd_workers_service http_service = {
    .protocol = &hd_http1_protocol,
    .context_new = hd_transport_context_new,
    .context_free = hd_transport_context_free,
};

typedef struct herald {
    uv_loop_t loop; /* the main thread's: signals only; the workers run their own */
    options options;
    hd_settings *settings; /* the newest, which a reload starts from */
    hd_hub *hub;
    hd_engine *engine; /* the memory engine, or Redis's with cluster.redis or .sentinels */
    hd_workers *workers;
    sigset_t signal_set; /* taken_signals */
    uv_signal_t signals[N_SIGNALS];
    hd_service service; /* systemd's notify protocol and watchdog (nothing outside a unit) */
} herald;

static void print_usage(FILE *out)
{
    fputs("Usage: herald [--config FILE] [--listen ADDR:PORT] [--log-level LEVEL]\n"
          "       herald --check-config FILE\n"
          "       herald token --secret-file FILE | --private-key FILE [options]\n"
          "\n"
          "A real-time notification hub: publish with HTTP POST, subscribe with\n"
          "Server-Sent Events (/events), long-polling (/poll) or WebSocket (/ws).\n"
          "\n"
          "  -c, --config FILE       JSON configuration (see config.example.json);\n"
          "                          without it herald runs on its embedded defaults\n"
          "  -l, --listen ADDR:PORT  listen here instead of the configured addresses\n"
          "                          (port 0 picks a free port, logged at start)\n"
          "      --log-level LEVEL   debug, info, warn or error\n"
          "      --check-config FILE validate FILE with the environment's overrides\n"
          "                          (HERALD_<KEY>), print ok and exit 0, or the\n"
          "                          error and exit 2\n"
          "  token                   print a signed token (herald token --help)\n"
          "  -h, --help              show this help and exit\n"
          "  -V, --version           show the version and exit\n",
          out);
}

/* A cluster.redis that cannot be used stops herald at start, like any config error. */
static int check_cluster(const hd_config *config, hd_redis_url *url)
{
    char err[256];
    if (config->cluster.redis[0] == '\0' ||
        hd_redis_url_parse(config->cluster.redis, url, err, sizeof(err)) == 0)
        return 0;
    fprintf(stderr, "herald: cluster.redis: %s\n", err);
    return -1;
}

static int parse_arguments(int argc, char **argv, options *opts)
{
    enum { OPT_LOG_LEVEL = 256, OPT_CHECK_CONFIG };
    static const struct option long_options[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"check-config", required_argument, NULL, OPT_CHECK_CONFIG},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:l:hV", long_options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            opts->config_path = optarg;
            break;
        case 'l':
            opts->listen = optarg;
            break;
        case OPT_LOG_LEVEL:
            opts->log_level = optarg;
            break;
        case OPT_CHECK_CONFIG:
            opts->config_path = optarg;
            opts->check_only = true;
            break;
        case 'h':
            print_usage(stdout);
            exit(0);
        case 'V':
            printf("herald %s\n", HERALD_VERSION);
            exit(0);
        case ':':
            fprintf(stderr, "herald: option %s needs a value (see --help)\n", argv[optind - 1]);
            return -1;
        default:
            fprintf(stderr, "herald: unknown option %s (see --help)\n", argv[optind - 1]);
            return -1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "herald: unexpected argument '%s' (see --help)\n", argv[optind]);
        return -1;
    }
    return 0;
}

/*
 * The config file (if any), then the environment's overrides, then the
 * command line's; err names the key, variable or option. The environment is
 * fixed at start, so a reload applies the same overrides again.
 */
static int load_config(hd_config *config, const options *opts, char *err, size_t err_len)
{
    if (opts->config_path != NULL &&
        hd_config_load_file(config, opts->config_path, err, err_len) != 0)
        return -1;
    if (hd_config_apply_env(config, err, err_len) != 0)
        return -1;
    if (opts->listen != NULL) {
        size_t prefix = (size_t)snprintf(err, err_len, "--listen: ");
        if (hd_config_set_listen(config, opts->listen, err + prefix, err_len - prefix) != 0)
            return -1;
    }
    if (opts->log_level != NULL && hd_log_level_parse(opts->log_level, &config->log_level) != 0) {
        snprintf(err, err_len, "--log-level: expected debug, info, warn or error");
        return -1;
    }
    return hd_config_finish(config, err, err_len);
}

/*
 * The file is read again with the same overrides, and the keys and the
 * certificate built and checked here, on the main thread, before any
 * worker sees them: anything wrong refuses the whole reload, and the
 * running settings stay. Keys only a restart can change keep their running
 * values, with a warning naming them; the rest applies.
 */
static void reload(herald *h)
{
    const char *path = h->options.config_path;
    if (path == NULL) {
        hd_log_warn("received SIGHUP: herald was started without --config, nothing to reload");
        return;
    }
    hd_log_info("received SIGHUP: reloading %s", path);
    hd_config next;
    hd_config_init(&next);
    char err[HD_CONFIG_ERROR_MAX], kept[256];
    size_t kept_count = 0;
    hd_settings *settings = NULL;
    if (load_config(&next, &h->options, err, sizeof(err)) == 0) {
        kept_count = hd_config_keep_restart_keys(&next, &h->settings->config, kept, sizeof(kept));
        settings = hd_settings_new(&next, err, sizeof(err));
    }
    hd_config_free(&next); /* what hd_settings_new did not take */
    if (settings == NULL) {
        hd_log_error("reload refused, the running configuration stays: %s", err);
        return;
    }
    if (kept_count > 0)
        hd_log_warn("reload: kept the running value of %s (changes only at a restart)", kept);
    hd_log_set_level(settings->config.log_level);
    hd_log_set_json(strcmp(settings->config.log_format, "json") == 0);
    hd_workers_use_settings(h->workers, settings);
    hd_settings_release(h->settings);
    h->settings = settings;
}

/* Closes the signal handles and the watchdog timer, the last of the main loop: uv_run then returns.
 */
static void stop_taking_signals(herald *h)
{
    hd_service_close(&h->service);
    for (size_t i = 0; i < N_SIGNALS; i++)
        uv_close((uv_handle_t *)&h->signals[i], NULL);
}

/*
 * The first SIGTERM or SIGINT drains the workers; the main loop then has
 * nothing left and main joins their threads. Closing the handles restores
 * the default actions, and a signal that arrived meanwhile would be
 * delivered with it as libuv unblocks: block them all first (the workers
 * block them from their start), so a repeated signal, or a SIGHUP, cannot
 * cut the clean exit short.
 */
static void shut_down(herald *h, const char *signal_name)
{
    /* Workers answer as draining from here: the log line, which clients may wait for, comes after.
     */
    hd_service_stopping();
    hd_workers_shutdown(h->workers);
    hd_log_info("received %s: shutting down", signal_name);
    pthread_sigmask(SIG_BLOCK, &h->signal_set, NULL);
    stop_taking_signals(h);
}

static void on_signal(uv_signal_t *handle, int signum)
{
    herald *h = handle->data;
    const char *name = taken_signals[handle - h->signals].name;
    if (signum == SIGHUP) {
        hd_service_reloading();
        reload(h); /* applied or refused, the reload is over: ready again */
        hd_service_ready();
    } else if (signum == SIGUSR1 || signum == SIGUSR2)
        hd_log_info("received %s: herald does not use it; ignored", name);
    else
        shut_down(h, name);
}

static void take_signals(herald *h)
{
    sigemptyset(&h->signal_set);
    for (size_t i = 0; i < N_SIGNALS; i++) {
        sigaddset(&h->signal_set, taken_signals[i].signum);
        uv_signal_init(&h->loop, &h->signals[i]);
        h->signals[i].data = h;
        uv_signal_start(&h->signals[i], on_signal, taken_signals[i].signum);
    }
}

static unsigned worker_count(const hd_config *config)
{
    if (config->workers > 0)
        return config->workers;
    unsigned cpus = uv_available_parallelism();
    return cpus < 1 ? 1 : cpus > HD_WORKERS_MAX ? HD_WORKERS_MAX : cpus;
}

/* The settings at start; NULL after printing why (a config error: exit 2). */
static hd_settings *load_settings(const options *opts)
{
    hd_redis_url url;
    hd_config config;
    hd_config_init(&config);
    char err[HD_CONFIG_ERROR_MAX];
    hd_settings *settings = NULL;
    if (load_config(&config, opts, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: %s\n", err);
    } else if (check_cluster(&config, &url) == 0) {
        hd_log_set_level(config.log_level);
        hd_log_set_json(strcmp(config.log_format, "json") == 0);
        settings = hd_settings_new(&config, err, sizeof(err));
        if (settings == NULL)
            fprintf(stderr, "herald: %s\n", err);
    }
    hd_config_free(&config); /* what hd_settings_new did not take */
    return settings;
}

static hd_engine *new_redis_engine(const hd_config *config, hd_hub *hub)
{
    hd_engine_redis_options engine_options = {
        .prefix = config->cluster.prefix,
        .timeout_ms = config->cluster.timeout_ms,
        .history_max_messages = config->history.max_messages,
        .history_max_bytes = config->history.max_bytes,
        .history_ttl_s = config->history.ttl_s,
        .idempotency_ttl_s = config->publish.idempotency_ttl_s,
        .trust_redis_persistence = config->cluster.trust_redis_persistence,
        .max_inflight_bytes = config->cluster.max_inflight_bytes,
        .max_held_messages = config->cluster.max_held_messages,
    };
    hd_sentinel_addr *sentinels = NULL;
    size_t count = config->cluster.sentinels.count;
    if (count > 0) {
        /* Checked at load (lengths included): nothing here can fail. */
        sentinels = hd_calloc(count, sizeof(*sentinels));
        for (size_t i = 0; i < count; i++)
            hd_config_parse_address(config->cluster.sentinels.items[i], sentinels[i].host,
                                    sizeof(sentinels[i].host), &sentinels[i].port);
        engine_options.sentinels = sentinels;
        engine_options.sentinel_count = count;
        engine_options.sentinel_master = config->cluster.sentinel_master;
        engine_options.sentinel_password = config->cluster.sentinel_password;
        snprintf(engine_options.url.password, sizeof(engine_options.url.password), "%s",
                 config->cluster.master_password);
        engine_options.url.db = (int)config->cluster.master_db;
    } else {
        char err[256];
        /* Checked at load: cannot fail here. */
        if (hd_redis_url_parse(config->cluster.redis, &engine_options.url, err, sizeof(err)) != 0)
            abort();
    }
    hd_engine *engine = hd_engine_redis_new(hub, &engine_options);
    free(sentinels);
    return engine;
}

int main(int argc, char **argv)
{
    static herald h;
    if (argc > 1 && strcmp(argv[1], "token") == 0)
        return hd_token_tool(argc - 1, argv + 1);
    if (parse_arguments(argc, argv, &h.options) != 0)
        return 2;
    h.settings = load_settings(&h.options);
    if (h.settings == NULL)
        return 2;
    if (h.options.check_only) {
        /* Loaded as a start would: keys and certificates included. */
        hd_settings_release(h.settings);
        puts("ok");
        return 0;
    }
    signal(SIGPIPE, SIG_IGN);

    const hd_config *config = &h.settings->config;
    hd_hub_options hub_options = {
        .history_max_messages = config->history.max_messages,
        .history_max_bytes = config->history.max_bytes,
        .history_ttl_s = config->history.ttl_s,
        .history_max_total_bytes = config->history.max_total_bytes,
        .max_topics = config->limits.max_topics,
        .cluster = config->cluster.redis[0] != '\0' || config->cluster.sentinels.count > 0,
        .idempotency_ttl_s = config->publish.idempotency_ttl_s,
        .max_idempotency_keys = config->limits.max_idempotency_keys,
    };
    /* Messages size their per-worker encoding slots by this: set before the hub exists. */
    unsigned workers = worker_count(config);
    hd_worker_set_count(workers);
    uv_loop_init(&h.loop);
    h.hub = hd_hub_new(&hub_options);
    h.engine = hub_options.cluster ? new_redis_engine(config, h.hub) : hd_engine_memory_new(h.hub);
    h.workers = hd_workers_new(h.settings, h.hub, h.engine, workers, &http_service);
    hd_log_info("herald %s starting (epoch %08x, %u worker%s)", HERALD_VERSION, hd_hub_epoch(h.hub),
                workers, workers == 1 ? "" : "s");

    /* Signals first: a supervisor may stop herald as soon as it says it listens. */
    take_signals(&h);
    hd_service_start(&h.service, &h.loop);
    char err[256];
    int status = 0;
    if (hd_workers_start(h.workers, &h.signal_set, err, sizeof(err)) != 0) {
        /* Like a config error: an address in use or not ours to bind is a setup problem. */
        hd_log_error("%s", err);
        status = 2;
        stop_taking_signals(&h);
    } else {
        hd_service_ready();
    }
    uv_run(&h.loop, UV_RUN_DEFAULT);
    hd_workers_free(h.workers);
    hd_engine_free(h.engine);
    hd_hub_free(h.hub);
    hd_settings_release(h.settings);
    uv_loop_close(&h.loop);
    if (status == 0)
        hd_log_info("stopped");
    return status;
}
