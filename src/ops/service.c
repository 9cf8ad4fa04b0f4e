#include "ops/service.h"

#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>

#include "herald/log.h"

/* A failure (the manager's socket gone, its queue full) cannot be helped: logged, not fatal. */
static void notify(const char *state)
{
    int r = sd_notify(0, state);
    if (r < 0)
        hd_log_debug("sd_notify(%s): %s", state, strerror(-r));
}

static void watchdog_on_timer(uv_timer_t *timer)
{
    (void)timer;
    notify("WATCHDOG=1");
}

void hd_service_start(hd_service *service, uv_loop_t *loop)
{
    uint64_t usec = 0;
    service->watching = false;
    /* 1: unset $WATCHDOG_USEC and $WATCHDOG_PID, which mean nothing to a child process. */
    if (sd_watchdog_enabled(1, &usec) <= 0 || usec == 0)
        return;
    /* Half the interval, as sd_watchdog_enabled(3) advises: one late ping is not yet a miss. */
    uint64_t period_ms = usec / 2000 > 0 ? usec / 2000 : 1;
    uv_timer_init(loop, &service->watchdog);
    uv_timer_start(&service->watchdog, watchdog_on_timer, period_ms, period_ms);
    service->watching = true;
    hd_log_debug("systemd watchdog: a ping every %" PRIu64 " ms", period_ms);
}

void hd_service_ready(void)
{
    notify("READY=1");
}

void hd_service_reloading(void)
{
    /* MONOTONIC_USEC: systemd 253 and later (Type=notify-reload) match it to the SIGHUP they
     * sent; 252 (Debian 12) ignores it. */
    struct timespec now;
    clock_gettime(CLOCK_MONOTONIC, &now);
    char state[64];
    snprintf(state, sizeof(state), "RELOADING=1\nMONOTONIC_USEC=%" PRIu64,
             (uint64_t)now.tv_sec * 1000000 + (uint64_t)now.tv_nsec / 1000);
    notify(state);
}

void hd_service_stopping(void)
{
    notify("STOPPING=1");
}

void hd_service_close(hd_service *service)
{
    if (!service->watching)
        return;
    service->watching = false;
    uv_close((uv_handle_t *)&service->watchdog, NULL);
}
