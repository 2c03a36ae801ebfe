/* Contended path of mt_lock (see lock.h for the protocol). */
#include "lock.h"

/* Spins before sleeping: an allocator critical section is well under a microsecond, so a
 * short spin usually wins the lock without two system calls. */
#define LOCK_SPIN_LIMIT 100

void mt_lock_slow(mt_lock_t *lock)
{
    for (int spin = 0; spin < LOCK_SPIN_LIMIT; spin++) {
        uint32_t expected = 0;
        if (atomic_load_explicit(&lock->state, memory_order_relaxed) == 0 &&
            atomic_compare_exchange_weak_explicit(&lock->state, &expected, 1, memory_order_acquire,
                                                  memory_order_relaxed))
            return;
#if defined(__x86_64__)
        __builtin_ia32_pause();
#endif
    }
    /* Mark the lock contended and sleep until it is released to us. */
    while (atomic_exchange_explicit(&lock->state, 2, memory_order_acquire) != 0)
        mt_os_futex_wait(&lock->state, 2);
}
