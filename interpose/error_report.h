/* What a heap error report says after its first line: the current backtrace, and, when a
 * tracer is recording, where the block was allocated and freed. */
#ifndef MT_INTERPOSE_ERROR_REPORT_H
#define MT_INTERPOSE_ERROR_REPORT_H

#include "../allocator/error.h"

/* Install the allocator's error hook (once, after allocator init). */
void mt_error_report_install(void);

/* The tracer adds its part of the report through this: called after the backtrace, on the
 * failing thread, with the heap possibly broken (no malloc). */
typedef void (*mt_error_report_extra_fn)(const struct mt_heap_error *error);
void mt_error_report_set_extra(mt_error_report_extra_fn fn);

/* Print the calling thread's stack to fd, symbolized with dladdr, skipping mtrace's own
 * frames. Safe in a signal handler and without a working heap. */
void mt_print_backtrace(int fd);

#endif
