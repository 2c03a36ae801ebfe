/* TSC-based event timestamps (clock.h). 10 ns of clock_gettime per event was a tenth of
 * the traced cost; rdtsc plus the conversion another 14 ns, so the traced process stores
 * the ticks and the collector converts them. */
#include "clock.h"

#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>

#include "../common/compiler.h"
#include "../common/platform.h"

bool mt_clock_tsc;
bool mt_clock_coarse;
bool mt_clock_sampled;

void mt_clock_use_sampled(void)
{
    mt_clock_sampled = true;
}

#if defined(__x86_64__)

#define CLOCKSOURCE_PATH "/sys/devices/system/clocksource/clocksource0/current_clocksource"
#define CLOCKSOURCE_TSC "tsc\n"
/* Ticks before the first calibration (~25 ms at 2.5 GHz), growing 4x per calibration up
 * to the cap (~7 s), then recalibrating at the cap's pace. */
#define FIRST_INTERVAL_TICKS (1ull << 26)
#define INTERVAL_GROWTH_SHIFT 2
#define INTERVAL_CAP_TICKS (1ull << 34)
/* The converter's first calibration waits until this many ticks (~1 ms) passed since
 * mt_clock_init: a shorter baseline would make the rate too uncertain. */
#define FIRST_CONVERT_TICKS (1ull << 22)
/* A clock read bracketed by more ticks than this (~10 us) was interrupted. */
#define SAMPLE_SPREAD_MAX_TICKS (1ull << 15)
#define SAMPLE_ATTEMPTS 8u
/* ns per tick as a 32.32 fixed-point rate. */
#define RATE_SHIFT 32
_Static_assert(RATE_SHIFT == 32, "mt_clock_linear_ns (clock.h) shifts by 32");
/* Calibration slots: a reader would have to stall across three recalibrations (seconds)
 * for its slot to be rewritten under it, and then the generation check catches it. */
#define SLOTS 4u

struct calibration {
    uint64_t ticks;      /* anchor */
    uint64_t ns;         /* monotonic ns at the anchor */
    uint64_t rate;       /* ns per tick << RATE_SHIFT */
    uint64_t next_ticks; /* recalibrate from here on */
    uint64_t interval;   /* ticks to the next one */
    uint64_t real_ticks, real_ns; /* the measured pair this one came from */
};

static struct {
    bool usable;
    _Atomic uint32_t generation; /* 0: not calibrated yet; else slot[generation % SLOTS] */
    atomic_flag calibrating;
    struct calibration slot[SLOTS];
    uint64_t start_ticks, start_ns;
} clk = {.calibrating = ATOMIC_FLAG_INIT};

/* A (ticks, ns) pair: the ticks taken around the clock read, their middle; retried a few
 * times when the read took long (preempted), which would make the middle uncertain. */
static void sample(uint64_t *ticks, uint64_t *ns)
{
    for (unsigned attempt = 0;; attempt++) {
        uint64_t before = __rdtsc();
        *ns = mt_os_monotonic_ns();
        uint64_t after = __rdtsc();
        *ticks = before + (after - before) / 2;
        if (after - before <= SAMPLE_SPREAD_MAX_TICKS || attempt == SAMPLE_ATTEMPTS)
            return;
    }
}

static uint64_t convert(const struct calibration *c, uint64_t ticks)
{
    uint64_t delta = ticks > c->ticks ? ticks - c->ticks : 0;
    return c->ns + (uint64_t)(((unsigned __int128)delta * c->rate) >> RATE_SHIFT);
}

/* The same for ticks before the anchor too (the collector converts records written
 * before its latest calibration). */
static uint64_t convert_any(const struct calibration *c, uint64_t ticks)
{
    if (ticks >= c->ticks)
        return convert(c, ticks);
    uint64_t back = (uint64_t)(((unsigned __int128)(c->ticks - ticks) * c->rate) >> RATE_SHIFT);
    return back < c->ns ? c->ns - back : 0;
}

void mt_clock_init(void)
{
    char text[16];
    memset(text, 0, sizeof text);
    int fd = mt_os_open_read(CLOCKSOURCE_PATH);
    if (fd >= 0) {
        long n = mt_os_read(fd, text, sizeof text - 1);
        mt_os_close(fd);
        clk.usable = n == (long)strlen(CLOCKSOURCE_TSC) && memcmp(text, CLOCKSOURCE_TSC, (size_t)n) == 0;
    }
    mt_clock_tsc = clk.usable;
    sample(&clk.start_ticks, &clk.start_ns);
}

void mt_clock_fork_child(void)
{
    atomic_flag_clear_explicit(&clk.calibrating, memory_order_relaxed);
}

void mt_clock_use_coarse(void)
{
    /* Not `usable` either: deadlines (mt_clock_after) are then in ns too. */
    clk.usable = false;
    mt_clock_tsc = false;
    mt_clock_coarse = true;
}

/* The next calibration, by the one thread that won the flag. */
static void calibrate(uint32_t generation)
{
    const struct calibration *prev = generation ? &clk.slot[generation % SLOTS] : NULL;
    uint64_t base_ticks = prev ? prev->real_ticks : clk.start_ticks;
    uint64_t base_ns = prev ? prev->real_ns : clk.start_ns;
    uint64_t now_ticks, now_ns;
    sample(&now_ticks, &now_ns);
    if (now_ticks <= base_ticks || now_ns <= base_ns)
        return;
    uint32_t next_gen = generation + 1 ? generation + 1 : 1;
    struct calibration *c = &clk.slot[next_gen % SLOTS];
    c->real_ticks = now_ticks;
    c->real_ns = now_ns;
    c->rate = (uint64_t)(((unsigned __int128)(now_ns - base_ns) << RATE_SHIFT) / (now_ticks - base_ticks));
    c->ticks = now_ticks;
    c->ns = now_ns;
    if (prev) {
        uint64_t continued = convert(prev, now_ticks);
        if (continued > c->ns)
            c->ns = continued;
    }
    uint64_t interval = prev ? prev->interval << INTERVAL_GROWTH_SHIFT : FIRST_INTERVAL_TICKS;
    c->interval = interval < INTERVAL_CAP_TICKS ? interval : INTERVAL_CAP_TICKS;
    c->next_ticks = now_ticks + c->interval;
    atomic_store_explicit(&clk.generation, next_gen, memory_order_release);
}

/* Past a calibration's interval (or before the first): one thread recalibrates; the others
 * go on with what they have. */
MT_NOINLINE static void maybe_calibrate(uint32_t generation)
{
    if (atomic_flag_test_and_set_explicit(&clk.calibrating, memory_order_acquire))
        return;
    if (atomic_load_explicit(&clk.generation, memory_order_relaxed) == generation)
        calibrate(generation);
    atomic_flag_clear_explicit(&clk.calibrating, memory_order_release);
}

MT_NOINLINE static uint64_t uncalibrated_ns(uint64_t ticks)
{
    if (clk.usable && ticks - clk.start_ticks >= FIRST_INTERVAL_TICKS)
        maybe_calibrate(0);
    return mt_os_monotonic_ns();
}

uint64_t mt_clock_ns(void)
{
    for (;;) {
        uint32_t generation = atomic_load_explicit(&clk.generation, memory_order_acquire);
        uint64_t ticks = __rdtsc();
        if (MT_UNLIKELY(generation == 0))
            return uncalibrated_ns(ticks);
        const struct calibration *c = &clk.slot[generation % SLOTS];
        uint64_t ns = convert(c, ticks);
        uint64_t next = c->next_ticks;
        atomic_thread_fence(memory_order_acquire);
        if (MT_UNLIKELY(atomic_load_explicit(&clk.generation, memory_order_relaxed) != generation))
            continue; /* recalibrated while we read: read the new one */
        if (MT_UNLIKELY(ticks >= next))
            maybe_calibrate(generation);
        return ns;
    }
}

uint64_t mt_clock_ticks_to_ns(uint64_t ticks)
{
    for (;;) {
        uint32_t generation = atomic_load_explicit(&clk.generation, memory_order_acquire);
        if (MT_UNLIKELY(generation == 0)) {
            /* The first conversion: calibrate now, on a baseline of at least ~1 ms. */
            while (__rdtsc() - clk.start_ticks < FIRST_CONVERT_TICKS)
                mt_os_yield();
            maybe_calibrate(0);
            continue;
        }
        const struct calibration *c = &clk.slot[generation % SLOTS];
        uint64_t ns = convert_any(c, ticks);
        uint64_t next = c->next_ticks;
        atomic_thread_fence(memory_order_acquire);
        if (MT_UNLIKELY(atomic_load_explicit(&clk.generation, memory_order_relaxed) != generation))
            continue;
        /* Records are converted shortly after they were written: their ticks say when the
         * calibration is due, without a rdtsc per conversion. */
        if (MT_UNLIKELY(ticks >= next))
            maybe_calibrate(generation);
        return ns;
    }
}

bool mt_clock_linear_get(struct mt_clock_linear *map)
{
    for (;;) {
        uint32_t generation = atomic_load_explicit(&clk.generation, memory_order_acquire);
        if (!generation)
            return false;
        const struct calibration *c = &clk.slot[generation % SLOTS];
        *map = (struct mt_clock_linear){c->ticks, c->ns, c->rate, c->next_ticks};
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&clk.generation, memory_order_relaxed) == generation)
            return true;
    }
}

uint64_t mt_clock_after(uint64_t ts, uint64_t ns)
{
    if (!clk.usable)
        return ts + ns;
    uint32_t generation = atomic_load_explicit(&clk.generation, memory_order_acquire);
    uint64_t rate;
    if (generation) {
        rate = clk.slot[generation % SLOTS].rate;
    } else {
        /* Not calibrated yet: the rate since start-up, or 1 tick per ns right at the start. */
        uint64_t ticks, now_ns;
        sample(&ticks, &now_ns);
        rate = ticks > clk.start_ticks && now_ns > clk.start_ns
                   ? (uint64_t)(((unsigned __int128)(now_ns - clk.start_ns) << RATE_SHIFT) /
                                (ticks - clk.start_ticks))
                   : 1ull << RATE_SHIFT;
        if (!rate)
            rate = 1;
    }
    (void)mt_clock_ns(); /* keeps the calibration going in a process that converts nothing else */
    return ts + (uint64_t)(((unsigned __int128)ns << RATE_SHIFT) / rate);
}

#else

void mt_clock_init(void)
{
}

void mt_clock_fork_child(void)
{
}

void mt_clock_use_coarse(void)
{
    mt_clock_coarse = true;
}

uint64_t mt_clock_ns(void)
{
    return mt_os_monotonic_ns();
}

uint64_t mt_clock_ticks_to_ns(uint64_t ticks)
{
    return ticks; /* never asked: timestamps are ns where there is no TSC */
}

bool mt_clock_linear_get(struct mt_clock_linear *map)
{
    (void)map;
    return false;
}

uint64_t mt_clock_after(uint64_t ts, uint64_t ns)
{
    return ts + ns;
}

#endif
