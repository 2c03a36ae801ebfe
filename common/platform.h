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
/* The size of a transparent huge page that mt_os_advise_huge can get (2 MiB on x86-64),
 * or 0 when the kernel gives none: THP compiled out, set to "never", or /sys unreadable.
 * Read once, on the first call. */
size_t mt_os_huge_page_size(void);
/* Ask for transparent huge pages in [addr, addr + size) (MADV_HUGEPAGE): a fault there
 * then maps a whole zeroed huge page at once where the range allows it. Only a hint:
 * nothing becomes resident until touched, and a refusal is ignored. */
void mt_os_advise_huge(void *addr, size_t size);
/* Make the range's memory transparent huge pages now (MADV_COLLAPSE, Linux 6.1), whatever
 * is resident in it already (the rest becomes resident: the whole range is). The range is
 * not advised: pages decommitted later split their huge page and stay out (khugepaged
 * leaves ranges without MADV_HUGEPAGE alone in "madvise" mode). A refusal (older kernel,
 * no huge page free) is ignored. */
void mt_os_collapse_huge(void *addr, size_t size);
/* Leave [addr, addr + size) out of core dumps (MADV_DONTDUMP), for pages that never hold
 * data (guard pages). Also a mapping attribute of its own: the kernel never merges the
 * range with a neighbour that lacks it. A refusal is ignored. */
void mt_os_advise_no_dump(void *addr, size_t size);
/* mremap: grow or shrink a mapping, moving it if `may_move`; NULL on failure. */
void *mt_os_remap(void *addr, size_t old_size, size_t new_size, bool may_move);

int32_t mt_os_gettid(void);
int32_t mt_os_getpid(void);
int32_t mt_os_getppid(void);
int mt_os_cpu_count(void);
/* pthread_atfork for code in this object: the same registration, without the stub that
 * libc_nonshared.a links in at the very end of the text (whose page, alone in 64 KiB of
 * cold code, made that code resident in every process). */
int mt_os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void));

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
/* CLOCK_MONOTONIC_COARSE ns: the time of the last timer tick (a few ms resolution), read
 * from the vDSO's data page without the TSC. */
uint64_t mt_os_monotonic_coarse_ns(void);
uint64_t mt_os_realtime_ns(void);
/* A cheap, monotonic, cross-core-consistent tick counter (the TSC on x86-64). */
uint64_t mt_os_ticks(void);
/* The CPU runs AVX2 code (x86-64; false elsewhere): debug mode's hot path has a variant
 * compiled for it, chosen once at start-up (allocator/debug.c). */
bool mt_os_cpu_has_avx2(void);

void mt_os_futex_wait(_Atomic uint32_t *addr, uint32_t expected);
void mt_os_futex_wake(_Atomic uint32_t *addr, int count);
void mt_os_yield(void);
/* Asymmetric fences (membarrier, private expedited). Register once per process image
 * (again in a fork child); false when the kernel does not offer it. Then
 * mt_os_membarrier() runs a full memory barrier on every thread of the process that is
 * running (a thread that is not running passes one when it is scheduled): the caller's
 * side of a Dekker pairing whose other side has only a compiler barrier. */
bool mt_os_membarrier_register(void);
bool mt_os_membarrier(void);
/* The calling thread's signal mask, saved by mt_os_signals_block_all (room for the kernel's
 * and libc's sigset_t: platform.c checks). */
typedef struct {
    uint64_t words[16];
} mt_os_sigmask_t;
/* Block every signal that can be blocked on this thread, saving the previous mask: for a
 * short slow-path section that a signal handler of the same thread must not see half
 * done. A signal sent meanwhile is delivered by mt_os_signals_restore. */
void mt_os_signals_block_all(mt_os_sigmask_t *saved);
void mt_os_signals_restore(const mt_os_sigmask_t *saved);
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

/* ---- the tracer's transport (libmtrace.so): shared memory files and the collector socket.
 * All return -1 (or NULL/false) on failure with errno preserved unless said otherwise. */

/* An anonymous shared-memory file (memfd, close-on-exec) of `size` bytes, sparse. */
int mt_os_memfd(const char *name, size_t size);
/* Map a whole shared file read-write (MAP_SHARED, no swap reservation), or NULL. */
void *mt_os_map_shared(int fd, size_t size);
/* A SOCK_SEQPACKET Unix socket connected to `address` ('@' prefix: abstract namespace).
 * Not close-on-exec when `inherit` (a traced connection must survive exec). */
int mt_os_seqpacket_connect(const char *address, bool inherit);
/* A listening SOCK_SEQPACKET socket bound to the abstract address `address` (no '@'). */
int mt_os_seqpacket_listen(const char *address);
/* Send one message with an optional descriptor attached (SCM_RIGHTS; -1: none).
 * Returns false when the peer is gone. Never raises SIGPIPE. */
bool mt_os_send_msg(int sock, const void *msg, size_t len, int fd_to_pass);
/* Receive one message, waiting at most timeout_ms (-1: forever). Returns its length,
 * 0 on EOF, -1 on error or timeout. */
long mt_os_recv_msg(int sock, void *buf, size_t cap, int timeout_ms);
/* True when the peer of a connected socket has closed it (non-blocking check). */
bool mt_os_socket_dead(int sock);
void mt_os_shutdown_write(int sock);
/* A socket usable as a connection (SOCK_SEQPACKET Unix socket)? */
bool mt_os_is_seqpacket(int fd);
/* dup2 (keeps the close-on-exec flag clear), and clearing or setting FD_CLOEXEC. */
int mt_os_dup2(int from, int to);
void mt_os_set_cloexec(int fd, bool on);
/* Futex wait on *addr while it holds `expected`, at most timeout_ns. Shared (not
 * private): the waker is another process. */
void mt_os_futex_wait_shared(_Atomic uint32_t *addr, uint32_t expected, uint64_t timeout_ns);
/* The running program's ELF program headers (the auxiliary vector's AT_PHDR), or NULL
 * when the kernel did not say. */
const void *mt_os_program_headers(void);
/* readlink into buf (NUL-terminated, truncated); length or -1. */
long mt_os_readlink(const char *path, char *buf, size_t cap);
/* The calling thread's name (prctl PR_GET_NAME), 16 bytes with its NUL. */
void mt_os_thread_name(char name[16]);
/* Copy `len` bytes of this process's memory at `addr` into `buf` without faulting if
 * some of it is unmapped meanwhile (process_vm_readv on ourselves). Returns the bytes
 * copied from the start, which stop at the first unreadable page; -1 when the kernel
 * refuses the call itself (seccomp, old kernel): the caller then reads directly. */
long mt_os_read_own_memory(uintptr_t addr, void *buf, size_t len);
/* Start `path` with `argv` and `envp` as a detached grandchild (double fork, setsid); the
 * descriptor `keep_fd` is inherited (its close-on-exec flag cleared in the child). Returns
 * 0 once the program was exec'd, or the errno that made it fail. */
int mt_os_spawn_detached(const char *path, char *const argv[], char *const envp[], int keep_fd);

MT_NORETURN void mt_os_abort(void);
MT_NORETURN void mt_os_exit_now(int status);

#endif
