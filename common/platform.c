/* Linux implementation of platform.h. The only file with system calls; see the header for
 * the contract (no malloc, errno preserved). */
#include "platform.h"

#include <errno.h>
#if defined(__x86_64__)
#include <cpuid.h>
#endif
#include <fcntl.h>
#include <linux/futex.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/auxv.h>
#include <poll.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <sys/wait.h>
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

/* Read a small /sys file into buf (NUL-terminated); false when it cannot be read. */
static bool read_small_file(const char *path, char *buf, size_t cap)
{
    int fd = mt_os_open_read(path);
    if (fd < 0)
        return false;
    long n = mt_os_read(fd, buf, cap - 1);
    mt_os_close(fd);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

size_t mt_os_huge_page_size(void)
{
    /* SIZE_MAX: not read yet. Racing first calls read the same files and agree. */
    static _Atomic size_t cached = SIZE_MAX;
    size_t size = atomic_load_explicit(&cached, memory_order_relaxed);
    if (MT_LIKELY(size != SIZE_MAX))
        return size;
    size = 0;
    char buf[128];
    /* "always [madvise] never": the bracketed word is the mode in force. */
    if (read_small_file("/sys/kernel/mm/transparent_hugepage/enabled", buf, sizeof buf) && !strstr(buf, "[never]") &&
        read_small_file("/sys/kernel/mm/transparent_hugepage/hpage_pmd_size", buf, sizeof buf)) {
        size_t value = 0;
        for (const char *c = buf; *c >= '0' && *c <= '9'; c++)
            value = value * 10 + (size_t)(*c - '0');
        /* Only a power of two above the page size can be used as an alignment. */
        if (value > mt_os_page_size() && (value & (value - 1)) == 0)
            size = value;
    }
    atomic_store_explicit(&cached, size, memory_order_relaxed);
    return size;
}

void mt_os_advise_huge(void *addr, size_t size)
{
    SAVE_ERRNO;
    madvise(addr, size, MADV_HUGEPAGE);
    RESTORE_ERRNO;
}

void mt_os_advise_no_dump(void *addr, size_t size)
{
    SAVE_ERRNO;
    madvise(addr, size, MADV_DONTDUMP);
    RESTORE_ERRNO;
}

#ifndef MADV_COLLAPSE
#define MADV_COLLAPSE 25 /* Linux 6.1; older headers lack it, older kernels refuse it */
#endif

void mt_os_collapse_huge(void *addr, size_t size)
{
    SAVE_ERRNO;
    madvise(addr, size, MADV_COLLAPSE);
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

/* glibc's pthread_atfork is this call, in libc_nonshared.a; __dso_handle identifies our
 * object, so the handlers are dropped if it is ever unloaded. */
extern int __register_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void), void *dso);
extern void *__dso_handle;

int mt_os_atfork(void (*prepare)(void), void (*parent)(void), void (*child)(void))
{
    return __register_atfork(prepare, parent, child, __dso_handle);
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

uint64_t mt_os_monotonic_coarse_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
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

bool mt_os_cpu_has_avx2(void)
{
#if defined(__x86_64__)
    /* cpuid and xgetbv by hand: libgcc's __builtin_cpu_supports brings a constructor that
     * runs in every process at load and faults in a page of cold code. */
    unsigned a, b, c, d;
    if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE) || !(c & bit_AVX))
        return false;
    unsigned lo, hi;
    __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    if ((lo & 6) != 6) /* the OS saves the SSE and AVX registers */
        return false;
    return __get_cpuid_count(7, 0, &a, &b, &c, &d) && (b & bit_AVX2);
#else
    return false;
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

/* linux/membarrier.h's values, which are ABI; the header is not on every build host. */
#define MEMBARRIER_PRIVATE_EXPEDITED (1 << 3)
#define MEMBARRIER_REGISTER_PRIVATE_EXPEDITED (1 << 4)

static bool membarrier_command(int command)
{
#ifdef SYS_membarrier
    SAVE_ERRNO;
    long rc = syscall(SYS_membarrier, command, 0, 0);
    RESTORE_ERRNO;
    return rc == 0;
#else
    (void)command;
    return false;
#endif
}

_Static_assert(sizeof(mt_os_sigmask_t) >= sizeof(sigset_t), "mt_os_sigmask_t holds a sigset_t");

void mt_os_signals_block_all(mt_os_sigmask_t *saved)
{
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, (sigset_t *)(void *)saved->words);
}

void mt_os_signals_restore(const mt_os_sigmask_t *saved)
{
    pthread_sigmask(SIG_SETMASK, (const sigset_t *)(const void *)saved->words, NULL);
}

bool mt_os_membarrier_register(void)
{
    return membarrier_command(MEMBARRIER_REGISTER_PRIVATE_EXPEDITED);
}

bool mt_os_membarrier(void)
{
    return membarrier_command(MEMBARRIER_PRIVATE_EXPEDITED);
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
    static char value[ENV_VALUE_MAX] MT_BIG_BSS;
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

/* ---- the tracer's transport ----------------------------------------------------------------- */

int mt_os_memfd(const char *name, size_t size)
{
    SAVE_ERRNO;
    int fd = (int)syscall(SYS_memfd_create, name, MFD_CLOEXEC);
    if (fd >= 0 && ftruncate(fd, (off_t)size) != 0) {
        close(fd);
        fd = -1;
    }
    RESTORE_ERRNO;
    return fd;
}

void *mt_os_map_shared(int fd, size_t size)
{
    SAVE_ERRNO;
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_NORESERVE, fd, 0);
    RESTORE_ERRNO;
    return p == MAP_FAILED ? NULL : p;
}

/* sockaddr_un for `name`; abstract when `abstract` (sun_path[0] = 0). */
static socklen_t unix_address(struct sockaddr_un *sa, const char *name, bool abstract)
{
    memset(sa, 0, sizeof *sa);
    sa->sun_family = AF_UNIX;
    size_t len = strlen(name);
    size_t room = sizeof sa->sun_path - 1;
    if (len > room)
        len = room;
    memcpy(sa->sun_path + (abstract ? 1 : 0), name, len);
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len + (abstract ? 1 : 0));
}

int mt_os_seqpacket_connect(const char *address, bool inherit)
{
    SAVE_ERRNO;
    bool abstract = address[0] == '@';
    struct sockaddr_un sa;
    socklen_t len = unix_address(&sa, address + (abstract ? 1 : 0), abstract);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | (inherit ? 0 : SOCK_CLOEXEC), 0);
    if (fd >= 0) {
        int rc;
        do
            rc = connect(fd, (struct sockaddr *)&sa, len);
        while (rc != 0 && errno == EINTR);
        if (rc != 0) {
            close(fd);
            fd = -1;
        }
    }
    RESTORE_ERRNO;
    return fd;
}

int mt_os_seqpacket_listen(const char *address)
{
    SAVE_ERRNO;
    struct sockaddr_un sa;
    socklen_t len = unix_address(&sa, address, true);
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    /* The backlog holds every connection made before the collector first accepts. */
    if (fd >= 0 && (bind(fd, (struct sockaddr *)&sa, len) != 0 || listen(fd, SOMAXCONN) != 0)) {
        close(fd);
        fd = -1;
    }
    RESTORE_ERRNO;
    return fd;
}

bool mt_os_send_msg(int sock, const void *msg, size_t len, int fd_to_pass)
{
    SAVE_ERRNO;
    struct iovec iov = {(void *)msg, len};
    union {
        struct cmsghdr align;
        char buf[CMSG_SPACE(sizeof(int))];
    } control;
    struct msghdr mh;
    memset(&mh, 0, sizeof mh);
    mh.msg_iov = &iov;
    mh.msg_iovlen = 1;
    if (fd_to_pass >= 0) {
        memset(&control, 0, sizeof control);
        mh.msg_control = control.buf;
        mh.msg_controllen = sizeof control.buf;
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd_to_pass, sizeof(int));
    }
    ssize_t n;
    do
        n = sendmsg(sock, &mh, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    RESTORE_ERRNO;
    return n == (ssize_t)len;
}

long mt_os_recv_msg(int sock, void *buf, size_t cap, int timeout_ms)
{
    SAVE_ERRNO;
    long result = -1;
    uint64_t deadline = timeout_ms < 0 ? 0 : mt_os_monotonic_ns() + (uint64_t)timeout_ms * 1000000ull;
    for (;;) {
        int wait_ms = -1;
        if (timeout_ms >= 0) {
            uint64_t now = mt_os_monotonic_ns();
            if (now >= deadline)
                break;
            wait_ms = (int)((deadline - now) / 1000000ull) + 1;
        }
        struct pollfd pfd = {sock, POLLIN, 0};
        int rc = poll(&pfd, 1, wait_ms);
        if (rc < 0 && errno == EINTR)
            continue;
        if (rc <= 0)
            continue;
        ssize_t n = recv(sock, buf, cap, MSG_CMSG_CLOEXEC);
        if (n < 0 && (errno == EINTR || errno == EAGAIN))
            continue;
        result = n < 0 ? -1 : (long)n;
        break;
    }
    RESTORE_ERRNO;
    return result;
}

bool mt_os_socket_dead(int sock)
{
    SAVE_ERRNO;
    struct pollfd pfd = {sock, POLLRDHUP, 0};
    int rc = poll(&pfd, 1, 0);
    RESTORE_ERRNO;
    return rc > 0 && (pfd.revents & (POLLHUP | POLLERR | POLLRDHUP | POLLNVAL)) != 0;
}

void mt_os_shutdown_write(int sock)
{
    SAVE_ERRNO;
    shutdown(sock, SHUT_WR);
    RESTORE_ERRNO;
}

bool mt_os_is_seqpacket(int fd)
{
    SAVE_ERRNO;
    int type = 0;
    socklen_t len = sizeof type;
    bool ok = getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) == 0 && type == SOCK_SEQPACKET;
    RESTORE_ERRNO;
    return ok;
}

int mt_os_dup2(int from, int to)
{
    SAVE_ERRNO;
    int rc = dup2(from, to);
    RESTORE_ERRNO;
    return rc;
}

void mt_os_set_cloexec(int fd, bool on)
{
    SAVE_ERRNO;
    int flags = fcntl(fd, F_GETFD);
    if (flags >= 0)
        fcntl(fd, F_SETFD, on ? flags | FD_CLOEXEC : flags & ~FD_CLOEXEC);
    RESTORE_ERRNO;
}

void mt_os_futex_wait_shared(_Atomic uint32_t *addr, uint32_t expected, uint64_t timeout_ns)
{
    SAVE_ERRNO;
    struct timespec ts = {(time_t)(timeout_ns / 1000000000ull), (long)(timeout_ns % 1000000000ull)};
    syscall(SYS_futex, (uint32_t *)addr, FUTEX_WAIT, expected, &ts, NULL, 0);
    RESTORE_ERRNO;
}

const void *mt_os_program_headers(void)
{
    return (const void *)(uintptr_t)getauxval(AT_PHDR);
}

long mt_os_readlink(const char *path, char *buf, size_t cap)
{
    SAVE_ERRNO;
    ssize_t n = readlink(path, buf, cap - 1);
    buf[n < 0 ? 0 : n] = '\0';
    RESTORE_ERRNO;
    return (long)n;
}

void mt_os_thread_name(char name[16])
{
    SAVE_ERRNO;
    memset(name, 0, 16);
    prctl(PR_GET_NAME, name, 0, 0, 0);
    name[15] = '\0';
    RESTORE_ERRNO;
}

int mt_os_spawn_detached(const char *path, char *const argv[], char *const envp[], int keep_fd)
{
    SAVE_ERRNO;
    /* The grandchild reports a failed exec through this close-on-exec pipe: EOF means
     * the exec happened. */
    int report[2];
    int result = 0;
    if (pipe2(report, O_CLOEXEC) != 0) {
        result = errno;
        RESTORE_ERRNO;
        return result;
    }
    /* A raw fork: neither the program's nor our own pthread_atfork handlers must run for
     * a child that only execs. */
    pid_t child = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
    if (child == 0) {
        setsid();
        pid_t grandchild = (pid_t)syscall(SYS_clone, SIGCHLD, 0, 0, 0, 0);
        if (grandchild == 0) {
            close(report[0]);
            /* Not the program's terminal or pipes: a reader of the program's output must
             * see EOF when the program is done, not when the collector is. */
            int null_fd = open("/dev/null", O_RDWR);
            if (null_fd >= 0) {
                dup2(null_fd, 0);
                dup2(null_fd, 1);
                if (null_fd > 2)
                    close(null_fd);
            }
            int flags = fcntl(keep_fd, F_GETFD);
            fcntl(keep_fd, F_SETFD, flags & ~FD_CLOEXEC);
            execve(path, argv, envp);
            int err = errno;
            ssize_t ignored = write(report[1], &err, sizeof err);
            (void)ignored;
        }
        syscall(SYS_exit_group, grandchild < 0 ? 1 : 0);
    }
    close(report[1]);
    if (child < 0) {
        result = errno;
    } else {
        int status;
        while (waitpid(child, &status, 0) < 0 && errno == EINTR) {
        }
        int err = 0;
        long n = mt_os_read(report[0], &err, sizeof err);
        if (n == (long)sizeof err)
            result = err;
        else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
            result = ECHILD;
    }
    close(report[0]);
    RESTORE_ERRNO;
    return result;
}

long mt_os_read_own_memory(uintptr_t addr, void *buf, size_t len)
{
    SAVE_ERRNO;
    struct iovec local = {buf, len};
    struct iovec remote = {(void *)addr, len};
    ssize_t n = process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
    long result = n >= 0 ? (long)n : (errno == EFAULT || errno == ENOMEM) ? 0 : -1;
    RESTORE_ERRNO;
    return result;
}
