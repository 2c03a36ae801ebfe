/* Heap introspection behind the public show_alloc_* / mt_heap_* functions. */
#ifndef MT_ALLOCATOR_INTROSPECT_H
#define MT_ALLOCATOR_INTROSPECT_H

#include "../include/mtrace.h"
#include "check.h"

void mt_introspect_show_mem(int fd);
void mt_introspect_show_mem_ex(int fd);
void mt_introspect_show_hist(int fd);
/* Run every module's checker; 0 when consistent, -1 with check->first describing the
 * first broken invariant. */
int mt_heap_check_run(struct mt_check *check);
/* mt_heap_check(): run, print the first failure to stderr, return 0 or -1. */
int mt_heap_check_report(void);
void mt_heap_stats_fill(struct mt_heap_stats *out);

#endif
