/* Collecting the first broken invariant found by mt_heap_check(). */
#ifndef MT_ALLOCATOR_CHECK_H
#define MT_ALLOCATOR_CHECK_H

#include <stdbool.h>
#include <stddef.h>

#include "../common/compiler.h"

struct mt_check {
    size_t failures;
    char first[512]; /* the first failure, formatted: "<where>: <what>" */
};

/* Record a failure (only the first is kept verbatim); always returns false so checkers can
 * write `return mt_check_fail(c, p, "...")`. */
bool mt_check_fail(struct mt_check *check, const void *where, const char *fmt, ...) MT_PRINTF(3, 4);

/* Each module checks its own structures; they return false after the first failure. */
bool mt_small_check(struct mt_check *check);
bool mt_medium_check(struct mt_check *check);
bool mt_large_check(struct mt_check *check);

#endif
