/* Event timestamps: CLOCK_MONOTONIC nanoseconds (what trace/wire.h's ts_ns holds), read
 * from the TSC where the kernel itself trusts it.
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

#include <stdint.h>

/* Once, at start-up (not inside malloc): probe the clocksource, take the first sample. */
void mt_clock_init(void);
/* In a fork child: a calibration another thread of the parent had in progress will never
 * finish here. */
void mt_clock_fork_child(void);
/* Monotonic nanoseconds now. */
uint64_t mt_clock_ns(void);

#endif
