/* Event timestamps: the TSC where the kernel itself trusts it, else CLOCK_MONOTONIC
 * nanoseconds (trace/wire.h's mt_wire_rec.ts and mt_wire_proc.ts_ticks say which), and
 * their conversion to monotonic ns, which the collector does (the same TSC counts in
 * every process of the machine): a traced call pays only the rdtsc.
 *
 * Owns: deciding whether the TSC may be used (the kernel's clocksource is "tsc", which it
 * only keeps on a constant, synchronised TSC), and converting ticks to monotonic ns by a
 * calibration against CLOCK_MONOTONIC that is refined as the process runs.
 *
 * Invariants:
 * - A calibration is an anchor (ticks, ns) and a rate; readers see a whole one (the slots
 *   are written before the generation that names them is published, and a reader that
 *   sees the generation move while it reads reads again).
 * - Each new anchor is at or after the previous calibration's value for the same instant,
 *   so a recalibration does not step time back (at most by the rate correction over the
 *   few ns a reader straddles it; the collector keeps a process's times non-decreasing in
 *   any case). Until the first calibration (~25 ms of ticks) and where the TSC is not
 *   trusted, clock_gettime is used.
 * - Recalibration (every few seconds of ticks at most) follows NTP's rate adjustments: the
 *   drift from CLOCK_MONOTONIC stays within the rate error over one interval.
 * - No allocation, no lock: callable from malloc and from signal handlers. */
#ifndef MT_TRACE_CLOCK_H
#define MT_TRACE_CLOCK_H

#include <stdbool.h>
#include <stdint.h>

#include "../common/platform.h"

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

/* Set by mt_clock_init: timestamps are TSC ticks. */
extern bool mt_clock_tsc;
/* Set by mt_clock_use_coarse: timestamps are CLOCK_MONOTONIC_COARSE ns. */
extern bool mt_clock_coarse;

/* Once, at start-up (not inside malloc): probe the clocksource, take the first sample. */
void mt_clock_init(void);

/* A record's timestamp: TSC ticks when mt_clock_tsc, else monotonic ns. */
static inline uint64_t mt_clock_now(void)
{
#if defined(__x86_64__)
    if (__builtin_expect(mt_clock_tsc, 1))
        return __rdtsc();
#endif
    if (mt_clock_coarse)
        return mt_os_monotonic_coarse_ns();
    return mt_os_monotonic_ns();
}
/* Set by mt_clock_use_sampled (MTRACE_CLOCK=sampled, the default): events take their
 * timestamp from mt_clock_event, which reads the clock for one event in
 * MT_CLOCK_SAMPLE_EVENTS of a thread and whenever the kernel's tick moved since its last
 * read, and gives the events between the last reading. Why: on some VMs a TSC read waits
 * for every cache miss in flight (docs/tracer.md), which costs a memory-bound program the
 * overlap of its misses at every event; a CLOCK_MONOTONIC_COARSE read does not (it loads
 * the vDSO's last tick). The price is bounded: a timestamp is never later than the event
 * and lags it by at most the time of the thread's previous MT_CLOCK_SAMPLE_EVENTS - 1
 * events, all inside one tick (sub-microsecond where events are dense, where the cost
 * was; at most a tick, a few ms, on a thread with a few events per tick). */
extern bool mt_clock_sampled;
#define MT_CLOCK_SAMPLE_EVENTS 8u

/* A thread's last clock reading (zeroed: none yet). */
struct mt_clock_sampler {
    uint64_t ts;   /* mt_clock_now at the last reading */
    uint64_t tick; /* CLOCK_MONOTONIC_COARSE ns at the last reading */
    uint32_t left; /* events that may still reuse ts */
};

/* An event's timestamp, in mt_clock_now's unit. Signal-safe enough: a handler's event
 * that interrupts the update takes either reading, both of which precede it. */
static inline uint64_t mt_clock_event(struct mt_clock_sampler *s)
{
    if (__builtin_expect(mt_clock_sampled, 1)) {
        uint64_t tick = mt_os_monotonic_coarse_ns();
        if (__builtin_expect(tick == s->tick && s->left != 0, 1)) {
            s->left--;
            return s->ts;
        }
        uint64_t ts = mt_clock_now();
        s->ts = ts;
        s->tick = tick;
        s->left = MT_CLOCK_SAMPLE_EVENTS - 1;
        return ts;
    }
    return mt_clock_now();
}
void mt_clock_use_sampled(void);

/* After mt_clock_init, in a traced process that asked for it (MTRACE_CLOCK=coarse):
 * timestamps are CLOCK_MONOTONIC_COARSE ns, which are read without the TSC. On some VMs a
 * TSC read waits for every cache miss in flight, which costs a memory-bound program the
 * overlap of its misses (measured here: a loop of independent loads, 14 ns an iteration,
 * takes 210 ns with a rdtsc in it); the price is a resolution of the kernel's tick. */
void mt_clock_use_coarse(void);
/* A timestamp of mt_clock_now's unit `ns` nanoseconds after `ts` (snapshot deadlines). */
uint64_t mt_clock_after(uint64_t ts, uint64_t ns);
/* Monotonic ns of a TSC reading taken by any process of this machine, before or after now
 * (the collector's conversion of a traced process's timestamps). */
uint64_t mt_clock_ticks_to_ns(uint64_t ticks);
/* The calibration in use as a plain linear map, for the one thread that converts a stream
 * of timestamps (the collector): it converts with mt_clock_linear_ns, without a call, while
 * its ticks stay below `next_ticks`, and goes through mt_clock_ticks_to_ns (which then
 * recalibrates) for the first one that does not, taking the map again after it. Exact as
 * long as no other thread of the process converts (the calibration changes only inside
 * mt_clock_ticks_to_ns and mt_clock_ns). */
struct mt_clock_linear {
    uint64_t ticks;      /* anchor */
    uint64_t ns;         /* monotonic ns at the anchor */
    uint64_t rate;       /* ns per tick << 32 */
    uint64_t next_ticks; /* the map is current for ticks below this */
};
/* false before the first calibration (and without a TSC). */
bool mt_clock_linear_get(struct mt_clock_linear *map);
/* mt_clock_ticks_to_ns's arithmetic (clock.c converts with it too). */
static inline uint64_t mt_clock_linear_ns(const struct mt_clock_linear *map, uint64_t ticks)
{
    if (ticks >= map->ticks)
        return map->ns + (uint64_t)(((unsigned __int128)(ticks - map->ticks) * map->rate) >> 32);
    uint64_t back = (uint64_t)(((unsigned __int128)(map->ticks - ticks) * map->rate) >> 32);
    return back < map->ns ? map->ns - back : 0;
}
/* In a fork child: a calibration another thread of the parent had in progress will never
 * finish here. */
void mt_clock_fork_child(void);
/* Monotonic nanoseconds now. */
uint64_t mt_clock_ns(void);

#endif
