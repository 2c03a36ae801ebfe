// link: trace/clock.c
/* trace/clock.c: TSC timestamps stay with CLOCK_MONOTONIC across calibrations and never
 * go backwards on a thread. */
#include <stdint.h>
#include <time.h>

#include "../../trace/clock.h"
#include "check.h"

#define NS_PER_S 1000000000ull
/* Long enough for three calibrations (after 2^26, 2^28 and 2^30 more ticks: 1.4 G ticks,
 * under 1.5 s for any TSC of 1 GHz or more). */
#define RUN_NS (1500ull * 1000 * 1000)
/* How far a converted time may stray from CLOCK_MONOTONIC (rate error of a calibration
 * over its interval: well under this). */
#define TOLERANCE_NS (200ull * 1000)
/* Backwards steps allowed between two reads (a reader straddling a recalibration). */
#define BACK_STEP_NS 1000ull

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * NS_PER_S + (uint64_t)ts.tv_nsec;
}

TEST(follows_monotonic_and_never_steps_back)
{
    mt_clock_init();
    uint64_t start = mono_ns();
    uint64_t last = 0, reads = 0, outside = 0, back = 0;
    for (;;) {
        uint64_t before = mono_ns();
        uint64_t now = mt_clock_ns();
        uint64_t after = mono_ns();
        if (now + TOLERANCE_NS < before || now > after + TOLERANCE_NS)
            outside++;
        if (now + BACK_STEP_NS < last)
            back++;
        if (now > last)
            last = now;
        reads++;
        if (after - start > RUN_NS)
            break;
    }
    CHECK(reads > 1000);
    CHECK_EQ_U(outside, 0);
    CHECK_EQ_U(back, 0);
}

/* The collector converts with the calibration's linear map while ticks stay below its
 * next_ticks, else through mt_clock_ticks_to_ns: both give the same ns for every tick,
 * before and after the map's anchor, across recalibrations. */
TEST(linear_map_converts_like_ticks_to_ns)
{
#if defined(__x86_64__)
    mt_clock_init();
    if (!mt_clock_tsc)
        return; /* no trusted TSC: timestamps are ns, nothing to convert */
    uint64_t start = mono_ns();
    uint64_t maps = 0, compared = 0, differ = 0;
    struct mt_clock_linear map;
    bool valid = false;
    while (mono_ns() - start < RUN_NS) {
        uint64_t ticks = mt_clock_now();
        /* A few ticks around now, some before the anchor of a fresh map. */
        for (uint64_t d = 0; d < 4; d++) {
            uint64_t t = ticks - (d << 20);
            if (valid && t < map.next_ticks) {
                compared++;
                differ += mt_clock_linear_ns(&map, t) != mt_clock_ticks_to_ns(t);
            } else {
                /* As the collector does: convert through the clock (which recalibrates
                 * when due), then take the map again. */
                (void)mt_clock_ticks_to_ns(t);
                valid = mt_clock_linear_get(&map);
                maps += valid;
            }
        }
    }
    CHECK(maps > 0 && compared > 1000);
    CHECK_EQ_U(differ, 0);
#endif
}

TEST_MAIN()
