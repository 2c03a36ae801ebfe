/* The collector's door to the operating system (Linux): sockets with descriptor passing,
 * shared mappings, the futex that wakes a waiting producer, process start and reaping,
 * signals, /proc. No other collector or mtrace-run file makes these calls, so porting the
 * collector means rewriting host.c. (common/platform.c is the in-process equivalent for
 * code that runs under malloc; this side may use libc freely. Where the two would do the
 * same thing, the clocks and randomness, host.c calls platform.c.)
 *
 * Errors: functions returning int give -1 with errno set; none of them prints. */
#ifndef MT_COLLECTOR_HOST_H
#define MT_COLLECTOR_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/* A listening SOCK_SEQPACKET socket on a fresh abstract name "@mtrace-<pid>-<random>"
 * (written to `name`, with the leading '@'). Close-on-exec. */
int mt_host_listen(char *name, size_t name_cap);
/* Connect to `name` ('@' = abstract). The connection is NOT close-on-exec: the traced
 * program inherits it (wire.h: MTRACE_CONN_FD). */
int mt_host_connect(const char *name);
/* An inherited listening socket (--collector-fd): non-blocking and close-on-exec. */
void mt_host_prepare_listen_fd(int fd);
/* Accept one pending connection without blocking; -1 with EAGAIN when none. */
int mt_host_accept(int listen_fd);

/* One message and at most one passed descriptor (*fd_out = -1 when none). Returns the
 * message length, 0 at EOF, -1 on error (EAGAIN: nothing to read). Truncated messages
 * come back with their real length capped at `cap`. */
long mt_host_recv(int fd, void *buf, size_t cap, int *fd_out);
/* Send one whole message; -1 on error (the peer may be gone: EPIPE, no signal). */
int mt_host_send(int fd, const void *buf, size_t len);
void mt_host_close(int fd);

/* Map a shared memory descriptor: read-only or read-write; NULL on failure. */
void *mt_host_map_shared(int fd, size_t size, bool writable);
void mt_host_unmap(void *addr, size_t size);
/* Zeroed private memory for a big random-access table, on huge pages when it spans one
 * (MT_HOST_HUGE_PAGE) and the system allows; NULL on failure. Freed by mt_host_unmap. */
#define MT_HOST_HUGE_PAGE (2u << 20)
void *mt_host_map_table(size_t size);

/* Wake every waiter on a 32-bit word of a shared (cross-process) mapping. */
void mt_host_futex_wake_shared(void *word);

/* Poll for readability: `fds` of `count`, `ready` receives per fd 1 (readable, hung up
 * or error) or 0. Waits up to `timeout_ns` (0: just look). Returns the ready count. */
int mt_host_poll(const int *fds, size_t count, unsigned char *ready, uint64_t timeout_ns);

uint64_t mt_host_monotonic_ns(void);
uint64_t mt_host_realtime_ns(void);

/* SIGCHLD arrives as readability of the returned descriptor (self-pipe). Also makes the
 * launcher survive the terminal's SIGINT/SIGQUIT (the program gets them and ends; the
 * collector then finishes the trace) and forwards SIGTERM and SIGHUP to `child`, set by
 * mt_host_forward_signals_to. */
int mt_host_child_watch_start(void);
void mt_host_child_watch_drain(int watch_fd);
void mt_host_forward_signals_to(pid_t child);

/* Start `path` with `argv` and the environment `envp` in a new process. Returns the pid,
 * or -1 with errno from the failed exec (reported through a close-on-exec pipe). `keep_fd`
 * is left open in the child (the first connection). */
pid_t mt_host_spawn(const char *path, char *const argv[], char *const envp[], int keep_fd);
/* Non-blocking reap of `pid`: 1 and *status when it ended, 0 when still running. */
int mt_host_reap(pid_t pid, int *status);
/* Decode a wait status like a shell: exit code, or 128 + signal. */
int mt_host_status_to_exit_code(int status, int *exit_code, int *signal_number);

/* When a process started, in clock ticks since boot (/proc/<pid>/stat): the same for every
 * image of a process across exec, different for a later process reusing the pid; 0 when
 * unknown (the process is gone). */
uint64_t mt_host_proc_start_ticks(int32_t pid);
/* Read a whole small file (/proc/<pid>/maps) into a malloc'd NUL-terminated buffer. */
char *mt_host_read_proc_maps(int32_t pid);
/* The path of the running executable (for finding libmtrace.so beside it). */
bool mt_host_self_exe(char *buf, size_t cap);
bool mt_host_hostname(char *buf, size_t cap);
/* CPU seconds this process used itself (children excluded). */
void mt_host_self_cpu(double *user, double *sys);
/* Bytes of a file (0 if absent). */
uint64_t mt_host_file_size(const char *path);

/* A helper thread running fn(arg) with every signal blocked (the launcher's handlers and
 * the forwarded signals stay with the main thread). Returns an opaque handle, NULL when
 * no thread could be started. */
void *mt_host_thread_start(void *(*fn)(void *), void *arg);
/* Lower the calling thread's scheduling priority to `nice` (Linux: nice is per thread).
 * Best effort: nothing happens when not permitted. */
void mt_host_thread_lower_priority(int nice);
/* Let `thread` (from mt_host_thread_start) run only when a CPU would otherwise be idle
 * (SCHED_IDLE), if this process may give it normal priority again (mt_host_thread_unidle);
 * false: nothing changed. */
bool mt_host_thread_idle(void *thread);
/* Normal priority again for a thread made idle. */
void mt_host_thread_unidle(void *thread);
/* Wait for the thread to return and release the handle. */
void mt_host_thread_join(void *thread);

#endif
