/*
 * herald: argv → config → hub → server → loop; signals; exit codes
 * (0 clean shutdown, 1 runtime failure, 2 bad usage or configuration).
 */
#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "auth/auth.h"
#include "herald/config.h"
#include "herald/hub.h"
#include "herald/log.h"
#include "herald/worker.h"
#include "herald/workers.h"
#include "net/tls.h"

typedef struct herald {
    uv_loop_t loop; /* the main thread's: signals only; the workers run their own */
    hd_config config;
    hd_hub *hub;
    hd_auth *auth;
    hd_tls_ctx *tls; /* NULL: plain TCP */
    hd_workers *workers;
    uv_signal_t sigterm;
    uv_signal_t sigint;
} herald;

static void print_usage(FILE *out)
{
    fputs("Usage: herald [--config FILE] [--listen ADDR:PORT] [--log-level LEVEL]\n"
          "\n"
          "A real-time notification hub: publish with HTTP POST, subscribe with\n"
          "Server-Sent Events (/events), long-polling (/poll) or WebSocket (/ws).\n"
          "\n"
          "  -c, --config FILE       JSON configuration (see config.example.json);\n"
          "                          without it herald runs on its embedded defaults\n"
          "  -l, --listen ADDR:PORT  listen here instead of the configured addresses\n"
          "                          (port 0 picks a free port, logged at start)\n"
          "      --log-level LEVEL   debug, info, warn or error\n"
          "  -h, --help              show this help and exit\n"
          "  -V, --version           show the version and exit\n",
          out);
}

/*
 * The Redis engine has its key in the contract before it is built. Ignoring
 * it would run a lone node where the operator asked for a cluster: refuse
 * to start.
 */
static int refuse_features_not_built(const hd_config *config)
{
    if (config->cluster.redis[0] == '\0')
        return 0;
    fprintf(stderr, "herald: cluster.redis: this version of herald does not support it yet (the "
                    "Redis engine is planned); leave it at its default\n");
    return -1;
}

/*
 * Loads tls.cert and tls.key into the one TLS context all listeners share;
 * NULL in *tls when TLS is off. A certificate or key that cannot be used is
 * a config error (exit 2), found before anything listens.
 */
static int load_tls(const hd_config *config, hd_tls_ctx **tls)
{
    *tls = NULL;
    if (config->tls.cert[0] == '\0')
        return 0; /* the config loader insists on both keys or neither */
    char err[HD_CONFIG_ERROR_MAX];
    *tls = hd_tls_ctx_new(config->tls.cert, config->tls.key, err, sizeof(err));
    if (*tls == NULL) {
        fprintf(stderr, "herald: %s\n", err);
        return -1;
    }
    return 0;
}

/* Loads the token keys; a key that cannot be used is a config error (exit 2). */
static hd_auth *load_auth(const hd_config *config)
{
    char err[HD_CONFIG_ERROR_MAX];
    hd_auth *auth = hd_auth_new(config, err, sizeof(err));
    if (auth == NULL) {
        fprintf(stderr, "herald: %s\n", err);
        return NULL;
    }
    size_t secret_len = strlen(config->auth.jwt_secret);
    if (secret_len > 0 && secret_len < 32)
        hd_log_warn("auth.jwt_secret is %zu bytes: HS256 wants at least 32 (RFC 7518 §3.2); "
                    "it is used as raw bytes, not decoded",
                    secret_len);
    bool keys = secret_len > 0 || config->auth.jwt_public_key[0] != '\0';
    if (!keys && !(config->auth.anonymous_publish && config->auth.anonymous_subscribe))
        hd_log_warn("auth: no jwt_secret or jwt_public_key is set, so no token is accepted: "
                    "only what anonymous_publish and anonymous_subscribe allow can be done");
    return auth;
}

static int parse_arguments(int argc, char **argv, hd_config *config)
{
    enum { OPT_LOG_LEVEL = 256 };
    static const struct option options[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"log-level", required_argument, NULL, OPT_LOG_LEVEL},
        {"help", no_argument, NULL, 'h'},
        {"version", no_argument, NULL, 'V'},
        {NULL, 0, NULL, 0},
    };
    const char *config_path = NULL, *listen = NULL, *log_level = NULL;
    int opt;
    opterr = 0;
    while ((opt = getopt_long(argc, argv, ":c:l:hV", options, NULL)) != -1) {
        switch (opt) {
        case 'c':
            config_path = optarg;
            break;
        case 'l':
            listen = optarg;
            break;
        case OPT_LOG_LEVEL:
            log_level = optarg;
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
    char err[HD_CONFIG_ERROR_MAX];
    if (config_path != NULL && hd_config_load_file(config, config_path, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: %s\n", err);
        return -1;
    }
    if (listen != NULL && hd_config_set_listen(config, listen, err, sizeof(err)) != 0) {
        fprintf(stderr, "herald: --listen: %s\n", err);
        return -1;
    }
    if (log_level != NULL && hd_log_level_parse(log_level, &config->log_level) != 0) {
        fprintf(stderr, "herald: --log-level: expected debug, info, warn or error\n");
        return -1;
    }
    return refuse_features_not_built(config);
}

/*
 * The first signal drains the workers; the main loop then has nothing left
 * and main joins their threads. Closing the handles restores the default
 * action, and a signal that arrived meanwhile would be delivered with it as
 * libuv unblocks: block both first (the workers block them from their
 * start), so a repeated signal cannot cut the clean exit short.
 */
static void on_signal(uv_signal_t *signal, int signum)
{
    herald *h = signal->data;
    hd_log_info("received %s: shutting down", signum == SIGTERM ? "SIGTERM" : "SIGINT");
    hd_workers_shutdown(h->workers);
    sigset_t stop_signals;
    sigemptyset(&stop_signals);
    sigaddset(&stop_signals, SIGTERM);
    sigaddset(&stop_signals, SIGINT);
    pthread_sigmask(SIG_BLOCK, &stop_signals, NULL);
    uv_close((uv_handle_t *)&h->sigterm, NULL);
    uv_close((uv_handle_t *)&h->sigint, NULL);
}

static unsigned worker_count(const hd_config *config)
{
    if (config->workers > 0)
        return config->workers;
    unsigned cpus = uv_available_parallelism();
    return cpus < 1 ? 1 : cpus > HD_WORKERS_MAX ? HD_WORKERS_MAX : cpus;
}

int main(int argc, char **argv)
{
    static herald h;
    hd_config_init(&h.config);
    if (parse_arguments(argc, argv, &h.config) != 0) {
        hd_config_free(&h.config);
        return 2;
    }
    hd_log_set_level(h.config.log_level);
    h.auth = load_auth(&h.config);
    if (h.auth == NULL) {
        hd_config_free(&h.config);
        return 2;
    }
    if (load_tls(&h.config, &h.tls) != 0) {
        hd_auth_free(h.auth);
        hd_config_free(&h.config);
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    hd_hub_options hub_options = {
        .history_max_messages = h.config.history.max_messages,
        .history_max_bytes = h.config.history.max_bytes,
        .history_ttl_s = h.config.history.ttl_s,
        .history_max_total_bytes = h.config.history.max_total_bytes,
        .max_topics = h.config.limits.max_topics,
    };
    /* Messages size their per-worker encoding slots by this: set before the hub exists. */
    unsigned workers = worker_count(&h.config);
    hd_worker_set_count(workers);
    uv_loop_init(&h.loop);
    h.hub = hd_hub_new(&hub_options);
    h.workers = hd_workers_new(&h.config, h.hub, h.auth, h.tls, workers);
    hd_log_info("herald %s starting (epoch %08x, %u worker%s)", HERALD_VERSION, hd_hub_epoch(h.hub),
                workers, workers == 1 ? "" : "s");

    /* Signals first: a supervisor may stop herald as soon as it says it listens. */
    uv_signal_init(&h.loop, &h.sigterm);
    uv_signal_init(&h.loop, &h.sigint);
    h.sigterm.data = h.sigint.data = &h;
    uv_signal_start(&h.sigterm, on_signal, SIGTERM);
    uv_signal_start(&h.sigint, on_signal, SIGINT);
    char err[256];
    int status = 0;
    if (hd_workers_start(h.workers, err, sizeof(err)) != 0) {
        /* Like a config error: an address in use or not ours to bind is a setup problem. */
        hd_log_error("%s", err);
        status = 2;
        uv_close((uv_handle_t *)&h.sigterm, NULL);
        uv_close((uv_handle_t *)&h.sigint, NULL);
    }
    uv_run(&h.loop, UV_RUN_DEFAULT);
    hd_workers_free(h.workers);
    hd_hub_free(h.hub);
    hd_auth_free(h.auth);
    hd_tls_ctx_free(h.tls);
    uv_loop_close(&h.loop);
    hd_config_free(&h.config);
    if (status == 0)
        hd_log_info("stopped");
    return status;
}
