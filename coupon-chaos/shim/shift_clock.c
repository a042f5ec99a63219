/* Moves one process's wall clock by COUPON_CLOCK_SHIFT_SECS, and nothing else.
 *
 * LD_PRELOADed into the Redis master whose clock (the gate's clock, Redis TIME) the
 * clock-shift scenario moves. libfaketime was tried first: it aborts redis-server at
 * start (recursive clock_gettime from jemalloc's initialisation) and hangs
 * coupon-server (librdkafka's timed waits). This shim calls the kernel directly (no
 * dlsym, no allocation), moves only CLOCK_REALTIME readings, and leaves the monotonic
 * clocks that Redis times its own work with untouched. */
#define _GNU_SOURCE
#include <stdlib.h>
#include <sys/syscall.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

static long shift_secs(void) {
    static long cached = -1L << 40;
    if (cached == -1L << 40) {
        const char *value = getenv("COUPON_CLOCK_SHIFT_SECS");
        cached = value ? strtol(value, NULL, 10) : 0;
    }
    return cached;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    long rc = syscall(SYS_clock_gettime, clock, ts);
    if (rc == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) {
        ts->tv_sec += shift_secs();
    }
    return (int)rc;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return -1;
    if (tv) {
        tv->tv_sec = ts.tv_sec;
        tv->tv_usec = ts.tv_nsec / 1000;
    }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0) return (time_t)-1;
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
