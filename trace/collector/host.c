/* Linux implementation of host.h. */
#include "host.h"

#include <errno.h>
#include <fcntl.h>
#include <linux/capability.h>
#include <linux/futex.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../common/platform.h"

/* Descriptors polled without a heap allocation (the common case: a few processes). */
#define POLL_STACK_FDS 64
/* /proc/<pid>/maps: first buffer, and the room kept free for each read. */
#define MAPS_INITIAL_BYTES 16384
#define MAPS_READ_ROOM 4096

/* Connections waiting in the kernel before accept(): a fork burst of a test suite may
 * queue many at once; the backlog holds them, so none is refused. */
#define LISTEN_BACKLOG 4096

static socklen_t make_address(const char *name, struct sockaddr_un *addr)
{
    memset(addr, 0, sizeof *addr);
    addr->sun_family = AF_UNIX;
    size_t len = strlen(name);
    if (len >= sizeof addr->sun_path)
        len = sizeof addr->sun_path - 1;
    memcpy(addr->sun_path, name, len);
    if (name[0] == '@')
        addr->sun_path[0] = '\0'; /* abstract namespace: no file, gone with the socket */
    return (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len);
}

int mt_host_listen(char *name, size_t name_cap)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    uint32_t rnd;
    mt_os_random(&rnd, sizeof rnd);
    snprintf(name, name_cap, "@mtrace-%d-%08x", (int)getpid(), rnd);
    struct sockaddr_un addr;
    socklen_t len = make_address(name, &addr);
    if (bind(fd, (struct sockaddr *)&addr, len) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    return fd;
}

int mt_host_connect(const char *name)
{
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0);
    if (fd < 0)
        return -1;
    struct sockaddr_un addr;
    socklen_t len = make_address(name, &addr);
    if (connect(fd, (struct sockaddr *)&addr, len) < 0) {
        int e = errno;
        close(fd);
        errno = e;
        return -1;
    }
    return fd;
}

void mt_host_prepare_listen_fd(int fd)
{
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
}

int mt_host_accept(int listen_fd)
{
    return accept4(listen_fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
}

long mt_host_recv(int fd, void *buf, size_t cap, int *fd_out)
{
    *fd_out = -1;
    struct iovec iov = {buf, cap};
    union {
        char space[CMSG_SPACE(sizeof(int) * 4)];
        struct cmsghdr align;
    } control;
    struct msghdr msg = {0};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.space;
    msg.msg_controllen = sizeof control.space;
    ssize_t n;
    do
        n = recvmsg(fd, &msg, MSG_DONTWAIT | MSG_CMSG_CLOEXEC);
    while (n < 0 && errno == EINTR);
    if (n < 0)
        return -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&msg); c; c = CMSG_NXTHDR(&msg, c)) {
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        int fds[4];
        memcpy(fds, CMSG_DATA(c), count * sizeof(int));
        for (size_t i = 0; i < count; i++) {
            if (*fd_out < 0)
                *fd_out = fds[i];
            else
                close(fds[i]); /* one descriptor per message by the protocol */
        }
    }
    return (long)n;
}

int mt_host_send(int fd, const void *buf, size_t len)
{
    ssize_t n;
    do
        n = send(fd, buf, len, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    return n == (ssize_t)len ? 0 : -1;
}

void mt_host_close(int fd)
{
    if (fd >= 0)
        close(fd);
}

void *mt_host_map_shared(int fd, size_t size, bool writable)
{
    void *p = mmap(NULL, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
    return p == MAP_FAILED ? NULL : p;
}

void mt_host_unmap(void *addr, size_t size)
{
    if (addr)
        munmap(addr, size);
}

void *mt_host_map_table(size_t size)
{
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED)
        return NULL;
    /* Big tables are probed at random: with 4 KiB pages nearly every probe also misses the
     * TLB. A hint only (transparent huge pages may be off). */
    if (size >= MT_HOST_HUGE_PAGE)
        madvise(p, size, MADV_HUGEPAGE);
    return p;
}

void mt_host_futex_wake_shared(void *word)
{
    /* Not FUTEX_PRIVATE: the waiter is another process sharing the memfd. */
    syscall(SYS_futex, (uint32_t *)word, FUTEX_WAKE, INT32_MAX, NULL, NULL, 0);
}

int mt_host_poll(const int *fds, size_t count, unsigned char *ready, uint64_t timeout_ns)
{
    struct pollfd stack_set[POLL_STACK_FDS];
    struct pollfd *set = count <= POLL_STACK_FDS ? stack_set : malloc(count * sizeof *set);
    if (!set)
        return 0;
    for (size_t i = 0; i < count; i++)
        set[i] = (struct pollfd){.fd = fds[i], .events = POLLIN};
    struct timespec ts = {(time_t)(timeout_ns / 1000000000u), (long)(timeout_ns % 1000000000u)};
    int n = ppoll(set, count, &ts, NULL);
    for (size_t i = 0; i < count; i++)
        ready[i] = n > 0 && (set[i].revents & (POLLIN | POLLHUP | POLLERR | POLLRDHUP)) ? 1 : 0;
    if (set != stack_set)
        free(set);
    return n < 0 ? 0 : n;
}

/* The clocks are the in-process layer's: one conversion, one place to port. */
uint64_t mt_host_monotonic_ns(void)
{
    return mt_os_monotonic_ns();
}

uint64_t mt_host_realtime_ns(void)
{
    return mt_os_realtime_ns();
}

static int child_pipe[2] = {-1, -1};
static volatile sig_atomic_t forward_pid;

static void on_sigchld(int sig)
{
    (void)sig;
    int e = errno;
    char b = 0;
    ssize_t n = write(child_pipe[1], &b, 1); /* full pipe: a wake-up is already pending */
    (void)n;
    errno = e;
}

static void on_forwarded(int sig)
{
    if (forward_pid > 0)
        kill((pid_t)forward_pid, sig);
}

int mt_host_child_watch_start(void)
{
    if (child_pipe[0] >= 0)
        return child_pipe[0];
    if (pipe2(child_pipe, O_CLOEXEC | O_NONBLOCK) < 0)
        return -1;
    struct sigaction sa = {0};
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGCHLD, &sa, NULL);
    return child_pipe[0];
}

void mt_host_child_watch_drain(int watch_fd)
{
    char buf[64];
    while (read(watch_fd, buf, sizeof buf) > 0) {
    }
}

void mt_host_forward_signals_to(pid_t child)
{
    forward_pid = child;
    struct sigaction sa = {0};
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    /* The terminal sends SIGINT/SIGQUIT to the whole foreground group: the program gets
     * its own copy; we stay to write the trace of what it did. */
    sa.sa_handler = SIG_IGN;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGQUIT, &sa, NULL);
    sa.sa_handler = on_forwarded;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);
}

pid_t mt_host_spawn(const char *path, char *const argv[], char *const envp[], int keep_fd)
{
    int report[2];
    if (pipe2(report, O_CLOEXEC) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        int e = errno;
        close(report[0]);
        close(report[1]);
        errno = e;
        return -1;
    }
    if (pid == 0) {
        if (keep_fd >= 0)
            fcntl(keep_fd, F_SETFD, 0);
        /* Undo the launcher's signal dispositions: the program starts as from a shell. */
        signal(SIGINT, SIG_DFL);
        signal(SIGQUIT, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        execve(path, argv, envp);
        int e = errno;
        ssize_t n = write(report[1], &e, sizeof e);
        (void)n;
        _exit(127);
    }
    close(report[1]);
    int child_errno = 0;
    ssize_t n;
    do
        n = read(report[0], &child_errno, sizeof child_errno);
    while (n < 0 && errno == EINTR);
    close(report[0]);
    if (n == (ssize_t)sizeof child_errno) {
        waitpid(pid, NULL, 0);
        errno = child_errno;
        return -1;
    }
    return pid;
}

int mt_host_reap(pid_t pid, int *status)
{
    pid_t r;
    do
        r = waitpid(pid, status, WNOHANG);
    while (r < 0 && errno == EINTR);
    return r == pid ? 1 : 0;
}

int mt_host_status_to_exit_code(int status, int *exit_code, int *signal_number)
{
    *exit_code = -1;
    *signal_number = 0;
    if (WIFEXITED(status)) {
        *exit_code = WEXITSTATUS(status);
        return *exit_code;
    }
    if (WIFSIGNALED(status)) {
        *signal_number = WTERMSIG(status);
        return 128 + *signal_number;
    }
    return 1;
}

/* The stat line's fields after the command name (which may hold spaces and parentheses,
 * hence the last ')'): field 22, starttime, is the 20th of them. */
#define STAT_FIELDS_BEFORE_STARTTIME 19
#define STAT_LINE_MAX 1024

uint64_t mt_host_proc_start_ticks(int32_t pid)
{
    char path[64], line[STAT_LINE_MAX];
    snprintf(path, sizeof path, "/proc/%d/stat", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t n;
    do
        n = read(fd, line, sizeof line - 1);
    while (n < 0 && errno == EINTR);
    close(fd);
    if (n <= 0)
        return 0;
    line[n] = '\0';
    const char *p = strrchr(line, ')');
    if (!p)
        return 0;
    p++;
    for (int field = 0; field < STAT_FIELDS_BEFORE_STARTTIME && p; field++)
        p = strchr(p + 1, ' ');
    return p ? strtoull(p + 1, NULL, 10) : 0;
}

char *mt_host_read_proc_maps(int32_t pid)
{
    char path[64];
    snprintf(path, sizeof path, "/proc/%d/maps", (int)pid);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return NULL;
    size_t cap = MAPS_INITIAL_BYTES, len = 0;
    char *buf = malloc(cap);
    for (;;) {
        if (!buf)
            break;
        if (cap - len < MAPS_READ_ROOM) {
            char *grown = realloc(buf, cap * 2);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    close(fd);
    if (buf)
        buf[len] = '\0';
    return buf;
}

bool mt_host_self_exe(char *buf, size_t cap)
{
    ssize_t n = readlink("/proc/self/exe", buf, cap - 1);
    if (n <= 0)
        return false;
    buf[n] = '\0';
    return true;
}

bool mt_host_hostname(char *buf, size_t cap)
{
    if (gethostname(buf, cap) < 0)
        return false;
    buf[cap - 1] = '\0';
    return true;
}

uint64_t mt_host_file_size(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 ? (uint64_t)st.st_size : 0;
}

void mt_host_self_cpu(double *user, double *sys)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    *user = (double)ru.ru_utime.tv_sec + (double)ru.ru_utime.tv_usec / 1e6;
    *sys = (double)ru.ru_stime.tv_sec + (double)ru.ru_stime.tv_usec / 1e6;
}

void *mt_host_thread_start(void *(*fn)(void *), void *arg)
{
    pthread_t *t = malloc(sizeof *t);
    if (!t)
        return NULL;
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* the new thread inherits the mask */
    int rc = pthread_create(t, NULL, fn, arg);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    if (rc != 0) {
        free(t);
        return NULL;
    }
    return t;
}

void mt_host_thread_lower_priority(int nice)
{
    /* setpriority on a thread id applies to that thread alone on Linux (not POSIX). */
    setpriority(PRIO_PROCESS, (id_t)gettid(), nice);
}

/* Whether this process may give a thread back the nice value it has now, which leaving
 * SCHED_IDLE requires (Linux: RLIMIT_NICE allows nice values down to 20 - limit; else
 * CAP_SYS_NICE). An unprivileged user usually may not. */
static bool may_restore_priority(void)
{
    errno = 0;
    int nice = getpriority(PRIO_PROCESS, 0);
    if (nice == -1 && errno != 0)
        return false;
    struct rlimit limit;
    if (getrlimit(RLIMIT_NICE, &limit) == 0 &&
        (limit.rlim_cur == RLIM_INFINITY || limit.rlim_cur >= (rlim_t)(20 - nice)))
        return true;
    struct __user_cap_header_struct header = {_LINUX_CAPABILITY_VERSION_3, 0};
    struct __user_cap_data_struct data[_LINUX_CAPABILITY_U32S_3];
    if (syscall(SYS_capget, &header, data) != 0)
        return false;
    return (data[CAP_TO_INDEX(CAP_SYS_NICE)].effective & CAP_TO_MASK(CAP_SYS_NICE)) != 0;
}

bool mt_host_thread_idle(void *thread)
{
    if (!may_restore_priority())
        return false;
    pthread_t *t = thread;
    struct sched_param param = {0};
    return pthread_setschedparam(*t, SCHED_IDLE, &param) == 0;
}

void mt_host_thread_unidle(void *thread)
{
    pthread_t *t = thread;
    struct sched_param param = {0};
    pthread_setschedparam(*t, SCHED_OTHER, &param);
}

void mt_host_thread_join(void *thread)
{
    pthread_t *t = thread;
    pthread_join(*t, NULL);
    free(t);
}
