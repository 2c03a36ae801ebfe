/* Linux implementation of platform.h. The only file with system calls; see the header for
 * the contract (no malloc, errno preserved). */
#include "platform.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <x86intrin.h>
#endif

extern char **environ;

/* Every wrapper below that may fail saves and restores errno: the allocator calls them on
 * paths where a successful malloc() must not disturb the caller's errno. */
#define SAVE_ERRNO int saved_errno_ = errno
#define RESTORE_ERRNO errno = saved_errno_

size_t mt_os_page_size(void)
{
    static size_t cached;
    if (MT_UNLIKELY(cached == 0)) {
        unsigned long ps = getauxval(AT_PAGESZ);
        cached = ps ? (size_t)ps : 4096;
    }
    return cached;
}

void *mt_os_map(size_t size)
{
    SAVE_ERRNO;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    RESTORE_ERRNO;
    return p == MAP_FAILED ? NULL : p;
}

static void *map_aligned(size_t size, size_t align, int prot)
{
    SAVE_ERRNO;
    /* Over-map by `align`, then unmap the misaligned head and the unused tail: two extra
     * munmap calls, but no retry loop and no hint guessing. */
    size_t span = size + align;
    if (span < size) {
        RESTORE_ERRNO;
        return NULL;
    }
    char *raw = mmap(NULL, span, prot, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (raw == MAP_FAILED) {
        RESTORE_ERRNO;
        return NULL;
    }
    char *aligned = (char *)mt_ptr_align_up((uintptr_t)raw, align);
    size_t head = (size_t)(aligned - raw);
    size_t tail = span - head - size;
    if (head)
        munmap(raw, head);
    if (tail)
        munmap(aligned + size, tail);
    RESTORE_ERRNO;
    return aligned;
}

void *mt_os_map_aligned(size_t size, size_t align)
{
    if (align <= mt_os_page_size())
        return mt_os_map(size);
    return map_aligned(size, align, PROT_READ | PROT_WRITE);
}

void *mt_os_reserve(size_t size)
{
    SAVE_ERRNO;
    void *p = mmap(NULL, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    RESTORE_ERRNO;
    return p == MAP_FAILED ? NULL : p;
}

void *mt_os_reserve_aligned(size_t size, size_t align)
{
    if (align <= mt_os_page_size())
        return mt_os_reserve(size);
    return map_aligned(size, align, PROT_NONE);
}

bool mt_os_commit(void *addr, size_t size)
{
    SAVE_ERRNO;
    int rc = mprotect(addr, size, PROT_READ | PROT_WRITE);
    RESTORE_ERRNO;
    return rc == 0;
}

void mt_os_unmap(void *addr, size_t size)
{
    SAVE_ERRNO;
    munmap(addr, size);
    RESTORE_ERRNO;
}

void mt_os_decommit(void *addr, size_t size)
{
    SAVE_ERRNO;
    /* MADV_DONTNEED rather than MADV_FREE: RSS must drop when the user frees, not when the
     * kernel later feels memory pressure; the cost is a zero-fill fault on reuse. */
    madvise(addr, size, MADV_DONTNEED);
    RESTORE_ERRNO;
}

bool mt_os_discard_protect_none(void *addr, size_t size)
{
    SAVE_ERRNO;
    void *p = mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED, -1, 0);
    RESTORE_ERRNO;
    return p == addr;
}

bool mt_os_protect_none(void *addr, size_t size)
{
    SAVE_ERRNO;
    int rc = mprotect(addr, size, PROT_NONE);
    RESTORE_ERRNO;
    return rc == 0;
}

bool mt_os_protect_rw(void *addr, size_t size)
{
    return mt_os_commit(addr, size);
}

void *mt_os_remap(void *addr, size_t old_size, size_t new_size, bool may_move)
{
    SAVE_ERRNO;
    void *p = mremap(addr, old_size, new_size, may_move ? MREMAP_MAYMOVE : 0);
    RESTORE_ERRNO;
    return p == MAP_FAILED ? NULL : p;
}

int32_t mt_os_gettid(void)
{
    return (int32_t)syscall(SYS_gettid);
}

int32_t mt_os_getpid(void)
{
    return (int32_t)getpid();
}

int32_t mt_os_getppid(void)
{
    return (int32_t)getppid();
}

int mt_os_cpu_count(void)
{
    SAVE_ERRNO;
    cpu_set_t set;
    int n = 1;
    if (sched_getaffinity(0, sizeof set, &set) == 0)
        n = CPU_COUNT(&set);
    RESTORE_ERRNO;
    return n > 0 ? n : 1;
}

void mt_os_write_all(int fd, const void *buf, size_t len)
{
    SAVE_ERRNO;
    const char *p = buf;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        p += n;
        len -= (size_t)n;
    }
    RESTORE_ERRNO;
}

int mt_os_open_read(const char *path)
{
    SAVE_ERRNO;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    RESTORE_ERRNO;
    return fd;
}

long mt_os_read(int fd, void *buf, size_t len)
{
    SAVE_ERRNO;
    ssize_t n;
    do
        n = read(fd, buf, len);
    while (n < 0 && errno == EINTR);
    RESTORE_ERRNO;
    return (long)n;
}

void mt_os_close(int fd)
{
    SAVE_ERRNO;
    close(fd);
    RESTORE_ERRNO;
}

void mt_os_random(void *buf, size_t len)
{
    SAVE_ERRNO;
    unsigned char *p = buf;
    size_t got = 0;
    while (got < len) {
        ssize_t n = getrandom(p + got, len - got, GRND_NONBLOCK);
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    if (got < len) {
        /* No entropy pool yet (very early boot) or a seccomp filter: mix what varies from
         * run to run. Weaker, documented in docs/hardening.md. */
        uint64_t x = mt_os_ticks() ^ ((uint64_t)(uintptr_t)buf << 17) ^ (uint64_t)getpid();
        for (; got < len; got++) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            p[got] = (unsigned char)x;
        }
    }
    RESTORE_ERRNO;
}

uint64_t mt_os_monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mt_os_realtime_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

uint64_t mt_os_ticks(void)
{
#if defined(__x86_64__)
    /* The TSC is invariant and synchronised across cores on every x86-64 Linux supports
     * for timekeeping; 10 ns here against 25 ns for clock_gettime (measured on the CI
     * machine). Converted to nanoseconds by the collector from paired samples. */
    return __rdtsc();
#else
    return mt_os_monotonic_ns();
#endif
}

void mt_os_futex_wait(_Atomic uint32_t *addr, uint32_t expected)
{
    SAVE_ERRNO;
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT_PRIVATE, expected, NULL, NULL, 0);
    RESTORE_ERRNO;
}

void mt_os_futex_wake(_Atomic uint32_t *addr, int count)
{
    SAVE_ERRNO;
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAKE_PRIVATE, count, NULL, NULL, 0);
    RESTORE_ERRNO;
}

void mt_os_yield(void)
{
    sched_yield();
}

void mt_os_sleep_ns(uint64_t ns)
{
    SAVE_ERRNO;
    struct timespec ts = {(time_t)(ns / 1000000000ull), (long)(ns % 1000000000ull)};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
    RESTORE_ERRNO;
}

/* Value storage for mt_os_getenv when the value comes from /proc/self/environ. The limit
 * bounds what early-startup options can carry; longer values are truncated (paths up to
 * PATH_MAX fit). */
#define ENV_VALUE_MAX 4096

static const char *getenv_from_proc(const char *name)
{
    static char value[ENV_VALUE_MAX];
    size_t name_len = strlen(name);
    int fd = mt_os_open_read("/proc/self/environ");
    if (fd < 0)
        return NULL;
    /* Stream the file in chunks, matching "NAME=" at the start of each NUL-terminated
     * entry, so the environment's size is not limited by a buffer. */
    char chunk[1024];
    size_t entry_pos = 0;   /* position inside the current entry */
    bool matching = true;   /* the entry so far equals name[0..entry_pos) */
    bool in_value = false;
    size_t value_len = 0;
    const char *result = NULL;
    long n;
    while (result == NULL && (n = mt_os_read(fd, chunk, sizeof chunk)) > 0) {
        for (long i = 0; i < n; i++) {
            char c = chunk[i];
            if (in_value) {
                if (c == '\0') {
                    value[value_len] = '\0';
                    result = value;
                    break;
                }
                if (value_len + 1 < sizeof value)
                    value[value_len++] = c;
                continue;
            }
            if (c == '\0') {
                entry_pos = 0;
                matching = true;
                continue;
            }
            if (matching) {
                if (entry_pos < name_len)
                    matching = (c == name[entry_pos]);
                else if (entry_pos == name_len && c == '=')
                    in_value = true;
                else
                    matching = false;
            }
            entry_pos++;
        }
    }
    if (in_value && result == NULL) {
        value[value_len] = '\0';
        result = value;
    }
    mt_os_close(fd);
    return result;
}

const char *mt_os_getenv(const char *name)
{
    if (environ == NULL)
        return getenv_from_proc(name);
    size_t name_len = strlen(name);
    for (char **e = environ; *e; e++) {
        if (strncmp(*e, name, name_len) == 0 && (*e)[name_len] == '=')
            return *e + name_len + 1;
    }
    return NULL;
}

static mt_fault_handler_fn fault_handler;
static struct sigaction previous_segv, previous_bus;

static void on_fault(int sig, siginfo_t *info, void *context)
{
    int saved_errno = errno;
    if (fault_handler && fault_handler(info->si_addr)) {
        errno = saved_errno;
        return;
    }
    /* Not ours: restore what the program had and let the access fault again under it. */
    struct sigaction *previous = sig == SIGSEGV ? &previous_segv : &previous_bus;
    if (previous->sa_flags & SA_SIGINFO) {
        if (previous->sa_sigaction) {
            previous->sa_sigaction(sig, info, context);
            return;
        }
    } else if (previous->sa_handler != SIG_DFL && previous->sa_handler != SIG_IGN) {
        previous->sa_handler(sig);
        return;
    }
    sigaction(sig, previous, NULL);
    errno = saved_errno;
}

void mt_os_install_fault_handler(mt_fault_handler_fn handler)
{
    int saved = errno;
    fault_handler = handler;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = on_fault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGSEGV, &sa, &previous_segv);
    sigaction(SIGBUS, &sa, &previous_bus);
    errno = saved;
}

void mt_os_abort(void)
{
    /* glibc's abort() (2.27 and later) neither flushes stdio nor allocates: it runs the
     * program's SIGABRT handler if any (Python's faulthandler prints its traceback there),
     * then dies of SIGABRT with the default action, which is what death tests expect. */
    abort();
}

void mt_os_exit_now(int status)
{
    syscall(SYS_exit_group, status);
    for (;;) {
    }
}
