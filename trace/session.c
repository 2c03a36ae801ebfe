/* The connection to the collector and the per-thread recording state (session.h). */
#include "session.h"

#include <dlfcn.h>
#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "../common/format.h"
#include "../common/lock.h"
#include "../common/log.h"
#include "../common/options.h"
#include "../common/platform.h"
#include "clock.h"
#include "unwind.h"

extern char **environ;

/* Environment variables of the connection (internal; set for descendants). */
#define ENV_CONN_FD "MTRACE_CONN_FD"
#define ENV_CONN_PID "MTRACE_CONN_PID"
#define ENV_SOCKET "MTRACE_SOCKET"
#define ENV_COLLECTOR "MTRACE_COLLECTOR"
#define COLLECTOR_NAME "mtrace-run"
/* Longest socket address kept (sun_path is 108 bytes). */
#define ADDRESS_MAX 108
/* How long a heap error report waits for the collector's answer: it may be busy, or gone. */
#define BLOCK_QUERY_TIMEOUT_MS 2000
/* Threads whose rings a fork child must unmap; beyond this a child merely keeps some of
 * its parent's ring mappings (address space only: it never writes them). */
#define RING_REGISTRY_MAX 4096
/* The process's rings together may grow by this many times MTRACE_RING_MAX: a few threads
 * outrunning the collector at once are absorbed, a program of many busy threads is not
 * given gigabytes of rings (its threads wait instead). */
#define RING_GROW_BUDGET_SHARE 4
/* Room for "MTRACE_CONN_PID=" and a decimal int, or the fd. */
#define ENV_ENTRY_MAX 48

static struct {
    int32_t pid;        /* of the process this state belongs to (a vfork child shares it) */
    int conn;           /* the connection, -1: none */
    bool traced;        /* accepted by the collector */
    bool wait_at_exit;
    char address[ADDRESS_MAX]; /* MTRACE_SOCKET, for the connections of fork children */
    struct mt_wire_proc *proc;
    uint64_t proc_size;
    size_t ring_size, ring_max;
    bool drop;
    struct mt_session_config config;
    uint32_t classes[MT_WIRE_SMALL_CLASSES_MAX]; /* the config's, kept for a fork child's HELLO */
    pthread_key_t exit_key;
    bool key_ok;
    int fork_conn; /* opened by the fork prepare handler for the child, -1: none */
} session = {.conn = -1, .fork_conn = -1};

/* session.h's hot state, read inline by the recorder's common path. */
struct mt_session_hot mt_session_hot;
MT_TLS struct mt_thread_state mt_session_thread_state;

/* Entries placed into `environ` whose text we own, so a fork child can update them in
 * place without allocating. */
static char env_conn_fd[ENV_ENTRY_MAX];
static char env_conn_pid[ENV_ENTRY_MAX];

static mt_lock_t registry_lock = MT_LOCK_INIT;
static struct {
    void *addr;
    size_t bytes;
} ring_registry[RING_REGISTRY_MAX];

bool mt_session_traced(void)
{
    return session.traced;
}

bool mt_session_connected(void)
{
    return session.conn >= 0;
}

bool mt_session_is_own_process(void)
{
    return mt_os_getpid() == session.pid;
}

struct mt_wire_proc *mt_session_proc(void)
{
    return session.proc;
}

static bool collector_gone(void)
{
    return session.conn < 0 || mt_os_socket_dead(session.conn);
}

static void msg_head(struct mt_msg_head *head, enum mt_msg_type type)
{
    head->magic = MT_WIRE_MAGIC;
    head->version = MT_WIRE_VERSION;
    head->type = (uint16_t)type;
}

/* ---- the environment --------------------------------------------------------------------- */

static bool parse_int(const char *text, long long *out)
{
    return text && *text && mt_parse_int(text, out);
}

/* Make `environ` hold `buffer` ("NAME=value") for NAME: set it once with setenv (we are in
 * the constructor, not inside malloc), then point the entry at our own storage. */
static void env_own_entry(const char *name, char *buffer, const char *value)
{
    mt_fmt(buffer, ENV_ENTRY_MAX, "%s=%s", name, value);
    setenv(name, value, 1);
    size_t len = strlen(name);
    for (char **e = environ; e && *e; e++) {
        if (strncmp(*e, name, len) == 0 && (*e)[len] == '=') {
            *e = buffer;
            return;
        }
    }
}

/* Rewrite an owned entry in place (fork child: no malloc, no setenv). */
static void env_update_entry(char *buffer, const char *name, long long value)
{
    mt_fmt(buffer, ENV_ENTRY_MAX, "%s=%lld", name, value);
}

/* ---- plain LD_PRELOAD mode: start the collector ------------------------------------------ */

static void collector_path(char *path, size_t cap)
{
    const char *override = mt_os_getenv(ENV_COLLECTOR);
    if (override && *override) {
        mt_fmt(path, cap, "%s", override);
        return;
    }
    Dl_info info;
    const char *lib = dladdr((const void *)(uintptr_t)&collector_path, &info) ? info.dli_fname : NULL;
    const char *slash = lib ? strrchr(lib, '/') : NULL;
    if (slash) {
        /* mt_fmt has no "%.*s": copy the directory, then format the name after it. */
        size_t dir = MT_MIN((size_t)(slash - lib), cap - 1);
        memcpy(path, lib, dir);
        mt_fmt(path + dir, cap - dir, "/%s", COLLECTOR_NAME);
    } else
        mt_fmt(path, cap, "%s", COLLECTOR_NAME);
}

/* The collector's environment: ours without the preload and without our connection.
 * `*bytes`: the mapping's size, for mt_os_unmap. */
static char **collector_env(size_t *bytes)
{
    static const char *const dropped[] = {"LD_PRELOAD=", ENV_CONN_FD "=", ENV_CONN_PID "="};
    size_t count = 0;
    for (char **e = environ; e && *e; e++)
        count++;
    *bytes = (count + 1) * sizeof(char *);
    char **env = mt_os_map(*bytes);
    if (!env)
        return NULL;
    size_t n = 0;
    for (char **e = environ; e && *e; e++) {
        bool drop = false;
        for (size_t d = 0; d < MT_ARRAY_LEN(dropped); d++)
            drop = drop || strncmp(*e, dropped[d], strlen(dropped[d])) == 0;
        if (!drop)
            env[n++] = *e;
    }
    env[n] = NULL;
    return env;
}

/* Listen, start the collector with the listening socket, connect. Returns the connection
 * or -1 (after one warning). */
static int spawn_collector(const char *out)
{
    uint64_t nonce;
    mt_os_random(&nonce, sizeof nonce);
    char name[64];
    mt_fmt(name, sizeof name, "mtrace-%d-%llx", (int)mt_os_getpid(), (unsigned long long)nonce);
    char path[MT_WIRE_PATH_MAX];
    collector_path(path, sizeof path);
    int listener = mt_os_seqpacket_listen(name);
    if (listener < 0) {
        mt_warn("cannot start the collector (%s): no socket; not tracing", path);
        return -1;
    }
    char fd_text[16];
    mt_fmt(fd_text, sizeof fd_text, "%d", listener);
    char *argv[] = {path, (char *)"--collector-fd", fd_text, (char *)"-o", (char *)out, NULL};
    size_t env_bytes;
    char **env = collector_env(&env_bytes);
    int err = env ? mt_os_spawn_detached(path, argv, env, listener) : ENOMEM;
    if (env)
        mt_os_unmap(env, env_bytes);
    if (err) {
        mt_os_close(listener);
        mt_warn("cannot start the collector (%s): %s; not tracing", path, strerror(err));
        /* The whole tree runs untraced: exec'd descendants must not each try (and warn). */
        unsetenv("MTRACE_OUT");
        return -1;
    }
    char address[ADDRESS_MAX];
    mt_fmt(address, sizeof address, "@%s", name);
    int conn = mt_os_seqpacket_connect(address, true);
    /* The collector holds the listener now; the backlog keeps our connection for it. */
    mt_os_close(listener);
    if (conn < 0) {
        mt_warn("cannot start the collector (%s): cannot connect; not tracing", path);
        return -1;
    }
    mt_fmt(session.address, sizeof session.address, "%s", address);
    setenv(ENV_SOCKET, address, 1);
    return conn;
}

/* ---- HELLO and the process area --------------------------------------------------------------- */

static void read_cmdline(struct mt_msg_hello *hello)
{
    int fd = mt_os_open_read("/proc/self/cmdline");
    if (fd < 0)
        return;
    uint32_t used = 0;
    for (;;) {
        long n = mt_os_read(fd, hello->argv + used, MT_WIRE_ARGV_MAX - used);
        if (n <= 0)
            break;
        used += (uint32_t)n;
        if (used == MT_WIRE_ARGV_MAX) {
            char probe;
            if (mt_os_read(fd, &probe, 1) > 0)
                hello->flags |= MT_HELLO_ARGV_TRUNCATED;
            break;
        }
    }
    mt_os_close(fd);
    hello->argv_len = used;
}

static bool adopt_ring(const struct mt_ring_writer *old, const struct mt_ring_writer *fresh, int fd);

/* Create the process area, send HELLO with it, wait for the verdict. */
static bool say_hello(uint32_t flags)
{
    int area_fd = -1;
    uint64_t size = mt_stack_store_area_size();
    area_fd = mt_os_memfd("mtrace-proc", size);
    struct mt_wire_proc *proc = area_fd >= 0 ? mt_os_map_shared(area_fd, size) : NULL;
    if (!proc || !mt_stack_store_init_area(proc, size)) {
        if (area_fd >= 0)
            mt_os_close(area_fd);
        return false;
    }
    proc->page_size = session.config.page_size;
    proc->ts_ticks = mt_clock_tsc;
    proc->small_class_count = session.config.small_class_count;
    memcpy(proc->small_classes, session.classes, session.config.small_class_count * sizeof(uint32_t));
    session.proc = proc;
    session.proc_size = size;
    uint32_t generation = atomic_fetch_add(&mt_session_hot.generation, 1) + 1;
    mt_stack_store_attach(&mt_session_hot.store, proc, generation);
    struct mt_ring_policy policy = {
        .proc = proc,
        .drop = session.drop,
        .collector_gone = collector_gone,
        .grow_max = session.ring_max,
        .grow_budget = RING_GROW_BUDGET_SHARE * session.ring_max,
        .adopt = adopt_ring,
    };
    mt_ring_set_policy(&policy);

    static struct mt_msg_hello hello; /* 9 KiB: static, HELLO is never sent concurrently */
    memset(&hello, 0, sizeof hello);
    msg_head(&hello.head, MT_MSG_HELLO);
    hello.pid = mt_os_getpid();
    hello.ppid = mt_os_getppid();
    hello.flags = flags;
    hello.start_mono_ns = mt_os_monotonic_ns();
    hello.start_real_ns = mt_os_realtime_ns();
    hello.proc_area_size = size;
    mt_os_readlink("/proc/self/exe", hello.exe, sizeof hello.exe);
    read_cmdline(&hello);
    bool sent = mt_os_send_msg(session.conn, &hello, sizeof hello, area_fd);
    mt_os_close(area_fd);
    if (!sent)
        return false;
    struct mt_msg_hello_reply reply;
    for (;;) {
        long n = mt_os_recv_msg(session.conn, &reply, sizeof reply, -1);
        if (n <= 0)
            return false;
        if ((size_t)n >= sizeof reply && reply.head.magic == MT_WIRE_MAGIC && reply.head.type == MT_MSG_HELLO_REPLY)
            break;
    }
    session.wait_at_exit = reply.wait_at_exit != 0;
    return reply.verdict == MT_HELLO_ACCEPT;
}

/* ---- fork ------------------------------------------------------------------------------------ */

static void fork_prepare(void)
{
    session.fork_conn = -1;
    if (session.conn >= 0 && session.address[0])
        session.fork_conn = mt_os_seqpacket_connect(session.address, true);
}

static void fork_parent(void)
{
    if (session.fork_conn >= 0)
        mt_os_close(session.fork_conn);
    session.fork_conn = -1;
}

static void forget_parent_rings(void)
{
    /* The parent's threads do not exist here; their rings are the parent's to write. */
    for (size_t i = 0; i < RING_REGISTRY_MAX; i++) {
        if (ring_registry[i].addr) {
            mt_os_unmap(ring_registry[i].addr, ring_registry[i].bytes);
            ring_registry[i].addr = NULL;
        }
    }
    registry_lock = (mt_lock_t)MT_LOCK_INIT;
    mt_session_thread_state.writer.ring = NULL;
    mt_session_thread_state.registered = 0;
}

static void fork_child(void)
{
    if (session.conn < 0)
        return;
    mt_clock_fork_child();
    bool was_traced = session.traced;
    session.traced = false;
    if (was_traced || session.proc) {
        forget_parent_rings();
        if (session.proc)
            mt_os_unmap(session.proc, session.proc_size);
        session.proc = NULL;
        mt_session_hot.store.proc = NULL;
    }
    if (session.fork_conn < 0) {
        /* No connection for us: the parent's is not ours to use. */
        mt_os_close(session.conn);
        session.conn = -1;
        return;
    }
    session.pid = mt_os_getpid();
    mt_os_dup2(session.fork_conn, session.conn);
    mt_os_close(session.fork_conn);
    session.fork_conn = -1;
    env_update_entry(env_conn_pid, ENV_CONN_PID, mt_os_getpid());
    session.wait_at_exit = false;
    session.traced = say_hello(MT_HELLO_FORKED);
}

/* ---- start-up ------------------------------------------------------------------------------- */

/* The connection this image should use: inherited, through MTRACE_SOCKET, or a collector
 * of our own. -1: untraced. */
static int find_connection(uint32_t *flags)
{
    long long fd = -1, pid = -1;
    const char *socket_env = mt_os_getenv(ENV_SOCKET);
    if (socket_env && *socket_env)
        mt_fmt(session.address, sizeof session.address, "%s", socket_env);
    if (parse_int(mt_os_getenv(ENV_CONN_FD), &fd) && fd >= 0 && fd < INT32_MAX && mt_os_is_seqpacket((int)fd)) {
        bool ours = !parse_int(mt_os_getenv(ENV_CONN_PID), &pid) || pid == mt_os_getpid();
        if (ours)
            return (int)fd;
        /* Our parent's connection, inherited without a fork handler (vfork, posix_spawn):
         * leave it to the parent and open our own. */
        mt_os_close((int)fd);
    }
    if (session.address[0])
        return mt_os_seqpacket_connect(session.address, true);
    if (mt_option_is_set(MT_OPT_OUT)) {
        *flags |= MT_HELLO_SPAWNED_COLLECTOR;
        return spawn_collector(mt_option_str(MT_OPT_OUT));
    }
    return -1;
}

static void thread_exit(void *arg);

bool mt_session_start(const struct mt_session_config *config)
{
    mt_options_init(false);
    session.config = *config;
    if (config->small_class_count <= MT_ARRAY_LEN(session.classes))
        memcpy(session.classes, config->small_classes, config->small_class_count * sizeof(uint32_t));
    else
        session.config.small_class_count = 0;
    mt_session_hot.depth = (uint32_t)mt_option_int(MT_OPT_DEPTH);
    session.ring_size = (size_t)mt_option_int(MT_OPT_RING_SIZE);
    session.ring_max = (size_t)mt_option_int(MT_OPT_RING_MAX);
    session.drop = mt_option_bool(MT_OPT_DROP);
    session.pid = mt_os_getpid();
    uint32_t flags = 0;
    int conn = find_connection(&flags);
    if (conn < 0)
        return false;
    mt_os_set_cloexec(conn, false);
    session.conn = conn;
    char text[24];
    mt_fmt(text, sizeof text, "%d", conn);
    env_own_entry(ENV_CONN_FD, env_conn_fd, text);
    mt_fmt(text, sizeof text, "%d", (int)mt_os_getpid());
    env_own_entry(ENV_CONN_PID, env_conn_pid, text);
    mt_unwind_init();
    mt_clock_init();
    if (strcmp(mt_option_str(MT_OPT_CLOCK), "coarse") == 0)
        mt_clock_use_coarse();
    else if (strcmp(mt_option_str(MT_OPT_CLOCK), "sampled") == 0)
        mt_clock_use_sampled();
    session.key_ok = pthread_key_create(&session.exit_key, thread_exit) == 0;
    pthread_atfork(fork_prepare, fork_parent, fork_child);
    session.traced = say_hello(flags);
    return session.traced;
}

/* ---- threads -------------------------------------------------------------------------------- */

/* The registry entry of mapping `old` (NULL: a free entry) now holds `addr` (NULL: frees
 * it): a thread's new ring, its grown ring, or its exit. */
static void registry_set(const void *old, void *addr, size_t bytes)
{
    mt_lock(&registry_lock);
    for (size_t i = 0; i < RING_REGISTRY_MAX; i++) {
        if (ring_registry[i].addr == old) {
            ring_registry[i].addr = addr;
            ring_registry[i].bytes = bytes;
            break;
        }
    }
    mt_unlock(&registry_lock);
}

static void thread_exit(void *arg)
{
    struct mt_thread_state *t = arg;
    t->busy++;
    /* A ring of an older generation (fork child) was the parent's and is unmapped already. */
    if (t->writer.ring && t->generation == atomic_load(&mt_session_hot.generation)) {
        mt_ring_forget_growth(&t->writer);
        mt_ring_close(&t->writer);
        registry_set(t->writer.ring, NULL, 0);
        mt_ring_unmap(&t->writer);
        t->registered = 0;
    }
    /* The unwind cache is this thread's private mapping whatever became of its ring. */
    mt_unwind_cache_free(t->unwind_cache);
    t->unwind_cache = NULL;
    t->busy--;
}

/* Hand a ring's memfd to the collector. */
static bool send_ring(const struct mt_ring_writer *w, int fd)
{
    struct mt_msg_ring msg;
    memset(&msg, 0, sizeof msg);
    msg_head(&msg.head, MT_MSG_RING);
    msg.ring_bytes = (uint32_t)w->map_bytes;
    msg.tid = w->ring->tid;
    return mt_os_send_msg(session.conn, &msg, sizeof msg, fd);
}

/* A thread's ring grew (ring.c): the collector gets the new one before the thread writes
 * to it, and the registry (what a fork child unmaps) follows the move. */
static bool adopt_ring(const struct mt_ring_writer *old, const struct mt_ring_writer *fresh, int fd)
{
    if (!send_ring(fresh, fd))
        return false;
    registry_set(old->ring, fresh->ring, fresh->map_bytes);
    return true;
}

static bool make_ring(struct mt_thread_state *t)
{
    char name[16];
    mt_os_thread_name(name);
    int32_t tid = mt_os_gettid();
    int fd = mt_ring_create(&t->writer, session.ring_size, tid, name);
    if (fd < 0)
        return false;
    bool sent = send_ring(&t->writer, fd);
    mt_os_close(fd);
    if (!sent) {
        mt_ring_unmap(&t->writer);
        return false;
    }
    registry_set(NULL, t->writer.ring, t->writer.map_bytes);
    if (session.key_ok && !t->registered) {
        t->registered = 1;
        pthread_setspecific(session.exit_key, t);
    }
    return true;
}

struct mt_thread_state *mt_session_thread_slow(void)
{
    struct mt_thread_state *t = &mt_session_thread_state;
    uint32_t generation = atomic_load_explicit(&mt_session_hot.generation, memory_order_relaxed);
    if (t->generation == generation && t->writer.ring)
        return t;
    if (!session.traced || t->failed_generation == generation)
        return NULL;
    if (t->generation != generation) {
        /* A ring of an older image (fork child) is the parent's: already unmapped. */
        t->writer.ring = NULL;
        t->writer.depth = 0;
        t->generation = generation;
    }
    t->busy++;
    mt_unwind_warm_up();
    bool ok = make_ring(t);
    /* Only with a ring: its exit destructor is what frees the cache. */
    if (ok && !t->unwind_cache)
        t->unwind_cache = mt_unwind_cache_new();
    t->busy--;
    if (!ok)
        t->failed_generation = generation; /* no retry per call: the collector is gone */
    return ok ? t : NULL;
}

/* ---- exit and error reports -------------------------------------------------------------------- */

void mt_session_finish(void)
{
    if (session.conn < 0 || !session.wait_at_exit)
        return;
    struct mt_msg_head goodbye;
    msg_head(&goodbye, MT_MSG_GOODBYE);
    if (mt_os_send_msg(session.conn, &goodbye, sizeof goodbye, -1)) {
        mt_os_shutdown_write(session.conn);
        char sink[256];
        while (mt_os_recv_msg(session.conn, sink, sizeof sink, -1) > 0) {
        }
    }
    session.wait_at_exit = false;
}

uint32_t mt_session_block_query(uint64_t ptr, uint64_t upto_seq, char *text, uint32_t cap)
{
    if (cap)
        text[0] = '\0';
    if (session.conn < 0 || !session.traced || cap == 0)
        return 0;
    struct mt_msg_block_query query;
    memset(&query, 0, sizeof query);
    msg_head(&query.head, MT_MSG_BLOCK_QUERY);
    query.ptr = ptr;
    query.upto_seq = upto_seq;
    if (!mt_os_send_msg(session.conn, &query, sizeof query, -1))
        return 0;
    static struct mt_msg_block_info info; /* 4 KiB; error reports are serialised by abort */
    uint64_t deadline = mt_os_monotonic_ns() + (uint64_t)BLOCK_QUERY_TIMEOUT_MS * 1000000ull;
    for (;;) {
        uint64_t now = mt_os_monotonic_ns();
        if (now >= deadline)
            return 0;
        long n = mt_os_recv_msg(session.conn, &info, sizeof info, (int)((deadline - now) / 1000000ull) + 1);
        if (n <= 0)
            return 0;
        if ((size_t)n >= offsetof(struct mt_msg_block_info, text) && info.head.magic == MT_WIRE_MAGIC &&
            info.head.type == MT_MSG_BLOCK_INFO)
            break;
    }
    if (!info.found)
        return 0;
    uint32_t len = info.len < MT_WIRE_INFO_MAX ? info.len : MT_WIRE_INFO_MAX;
    if (len >= cap)
        len = cap - 1;
    memcpy(text, info.text, len);
    text[len] = '\0';
    return len;
}
