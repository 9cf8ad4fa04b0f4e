/*
 * Telling the service manager where herald is (systemd's notify protocol,
 * sd_notify(3), through libsystemd): READY=1 once every listener is bound,
 * RELOADING=1 then READY=1 around a SIGHUP reload, STOPPING=1 when the drain
 * starts, and WATCHDOG=1 at half the interval systemd asks for
 * (WatchdogSec=, passed as $WATCHDOG_USEC). Without $NOTIFY_SOCKET, as
 * outside a Type=notify unit, every call does nothing.
 *
 * Main thread only: the watchdog timer runs on the main loop, which takes
 * the signals, so it says that loop is alive (the workers run their own).
 */
#ifndef HERALD_OPS_SERVICE_H
#define HERALD_OPS_SERVICE_H

#include <stdbool.h>
#include <uv.h>

typedef struct hd_service {
    uv_timer_t watchdog;
    bool watching; /* the timer was started: hd_service_close closes it */
} hd_service;

/* Starts the watchdog pings on loop when systemd asked for them for this process. */
void hd_service_start(hd_service *service, uv_loop_t *loop);
/* Every listener is bound and accepting (at start), or a reload is over (applied or refused). */
void hd_service_ready(void);
/* A SIGHUP reload begins; hd_service_ready follows when it is over. */
void hd_service_reloading(void);
/* The drain begins (hd_service_close follows, and no READY or WATCHDOG after it). */
void hd_service_stopping(void);
/* Closes the watchdog timer, so the main loop can end. */
void hd_service_close(hd_service *service);

#endif
