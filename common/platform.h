/* The one door to the operating system.
 *
 * Owns: every system call mtrace makes from inside a traced or allocating process
 * (memory mapping, thread ids, time, randomness, futexes, raw writes, the environment
 * before libc is ready). No other file includes <sys/mman.h> or calls syscall(); porting
 * mtrace means rewriting platform.c.
 *
 * Invariants: nothing here allocates with malloc, and every function preserves errno
 * unless it documents that it sets it, so the allocator can make system calls inside
 * malloc() without the caller seeing errno change on success. */
#ifndef MT_COMMON_PLATFORM_H
#define MT_COMMON_PLATFORM_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "compiler.h"

/* Size of an OS page (4 KiB on x86-64; read once from the auxiliary vector). */
size_t mt_os_page_size(void);

/* Fresh zeroed read-write anonymous memory, or NULL (errno is left untouched: callers
 * decide whether the failure is the user's ENOMEM). */
void *mt_os_map(size_t size);
/* As mt_os_map, with the start aligned to `align` (a power of two >= the page size). */
void *mt_os_map_aligned(size_t size, size_t align);
/* Address space only (PROT_NONE, not counted against overcommit); commit before use. */
void *mt_os_reserve(size_t size);
/* As mt_os_reserve, aligned. */
void *mt_os_reserve_aligned(size_t size, size_t align);
/* Make reserved pages read-write. */
bool mt_os_commit(void *addr, size_t size);
void mt_os_unmap(void *addr, size_t size);
/* Give the physical pages back; the range stays mapped and reads as zero afterwards.
 * Page-aligned arguments only. */
void mt_os_decommit(void *addr, size_t size);
/* mt_os_decommit and mt_os_protect_none in one system call (a fresh PROT_NONE mapping
 * over the range): the pages go back to the OS and any access faults. */
bool mt_os_discard_protect_none(void *addr, size_t size);
/* Turn a range into an inaccessible guard, or back into read-write memory. */
bool mt_os_protect_none(void *addr, size_t size);
bool mt_os_protect_rw(void *addr, size_t size);
/* mremap: grow or shrink a mapping, moving it if `may_move`; NULL on failure. */
void *mt_os_remap(void *addr, size_t old_size, size_t new_size, bool may_move);

int32_t mt_os_gettid(void);
int32_t mt_os_getpid(void);
int32_t mt_os_getppid(void);
int mt_os_cpu_count(void);

/* write(2) the whole buffer, retrying on EINTR and short writes; errors are ignored. */
void mt_os_write_all(int fd, const void *buf, size_t len);
/* Raw file access for /proc and friends, without stdio. */
int mt_os_open_read(const char *path);
long mt_os_read(int fd, void *buf, size_t len);
void mt_os_close(int fd);

/* Cryptographic randomness (getrandom); falls back to time and address entropy if the
 * kernel refuses, which is weaker but never blocks startup. */
void mt_os_random(void *buf, size_t len);

uint64_t mt_os_monotonic_ns(void);
uint64_t mt_os_realtime_ns(void);
/* A cheap, monotonic, cross-core-consistent tick counter (the TSC on x86-64). */
uint64_t mt_os_ticks(void);

void mt_os_futex_wait(_Atomic uint32_t *addr, uint32_t expected);
void mt_os_futex_wake(_Atomic uint32_t *addr, int count);
void mt_os_yield(void);
/* Sleep without signals or allocation; used only on slow paths that must back off. */
void mt_os_sleep_ns(uint64_t ns);

/* getenv that works before libc has set `environ` (it then reads /proc/self/environ)
 * and never allocates. The returned string lives in a static buffer or the environment:
 * copy it before the next call. */
const char *mt_os_getenv(const char *name);

/* Run `handler` on SIGSEGV and SIGBUS before the previous disposition. It returns true
 * when it handled the fault (it then usually aborts), false to let the previous handler
 * (or the default action) have it. Installed once; the alternate signal stack, if any, is
 * the program's. */
typedef bool (*mt_fault_handler_fn)(void *fault_address);
void mt_os_install_fault_handler(mt_fault_handler_fn handler);

MT_NORETURN void mt_os_abort(void);
MT_NORETURN void mt_os_exit_now(int status);

#endif
