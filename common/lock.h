/* A futex mutex that needs no initialisation call, never allocates and can be reset in a
 * forked child.
 *
 * Three states (Drepper, "Futexes are tricky"): 0 free, 1 held, 2 held with waiters. The
 * uncontended lock and unlock are one atomic instruction each; a contended lock spins
 * briefly (critical sections in the allocator are short) before sleeping in the kernel. */
#ifndef MT_COMMON_LOCK_H
#define MT_COMMON_LOCK_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "compiler.h"
#include "platform.h"

typedef struct {
    _Atomic uint32_t state;
} mt_lock_t;

#define MT_LOCK_INIT {0}

void mt_lock_slow(mt_lock_t *lock);

MT_INLINE void mt_lock(mt_lock_t *lock)
{
    uint32_t expected = 0;
    if (MT_LIKELY(atomic_compare_exchange_strong_explicit(&lock->state, &expected, 1, memory_order_acquire,
                                                          memory_order_relaxed)))
        return;
    mt_lock_slow(lock);
}

MT_INLINE bool mt_trylock(mt_lock_t *lock)
{
    uint32_t expected = 0;
    return atomic_compare_exchange_strong_explicit(&lock->state, &expected, 1, memory_order_acquire,
                                                   memory_order_relaxed);
}

MT_INLINE void mt_unlock(mt_lock_t *lock)
{
    if (MT_UNLIKELY(atomic_exchange_explicit(&lock->state, 0, memory_order_release) == 2))
        mt_os_futex_wake(&lock->state, 1);
}

/* As mt_unlock and mt_trylock, sequentially consistent: a load of another variable after
 * mt_unlock_sc, or before mt_trylock_sc's preceding store, is not reordered across them.
 * For store-then-load handshakes such as a deferred-work list drained by lock holders
 * (medium arenas): an xchg and a lock cmpxchg on x86-64 either way, without a fence. */
MT_INLINE void mt_unlock_sc(mt_lock_t *lock)
{
    if (MT_UNLIKELY(atomic_exchange_explicit(&lock->state, 0, memory_order_seq_cst) == 2))
        mt_os_futex_wake(&lock->state, 1);
}

MT_INLINE bool mt_trylock_sc(mt_lock_t *lock)
{
    uint32_t expected = 0;
    return atomic_compare_exchange_strong_explicit(&lock->state, &expected, 1, memory_order_seq_cst,
                                                   memory_order_seq_cst);
}

/* After fork() in the child: only the forking thread exists, so any holder is gone. */
MT_INLINE void mt_lock_reset(mt_lock_t *lock)
{
    atomic_store_explicit(&lock->state, 0, memory_order_relaxed);
}

MT_INLINE bool mt_lock_is_held(mt_lock_t *lock)
{
    return atomic_load_explicit(&lock->state, memory_order_relaxed) != 0;
}

#endif
