/* The collector's main loop: connections, socket messages, and the schedule that drains
 * every live process's rings.
 *
 * Lifetime (wire.h): a connection carries the HELLO of one process image after another
 * (fork child, then each exec); a second HELLO on the same connection means the previous
 * image was replaced by exec. EOF means the image is gone (exit, crash or SIGKILL: the
 * kernel closes the socket). A GOODBYE means the image finished its records and waits, its
 * socket half-closed, until we close the connection once the trace is final. Recording
 * ends when no connection is open, none is pending in the listen backlog, and the launched
 * program was reaped.
 *
 * Scheduling: when a pass over all processes found many records, the next pass starts at
 * once (polling the sockets without waiting), after a pass that found a few it waits
 * BATCH_WAIT_NS so the next one finds a batch; when idle, the wait grows from IDLE_WAIT_MIN_NS
 * to IDLE_WAIT_MAX_NS, so an idle program costs ~100 wake-ups a second and a busy one is
 * drained with no system call per record. A producer blocked on a full ring is woken by
 * its futex as soon as we consumed from it (drain.c). */
#include "collector.h"

#include <errno.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "../../common/log.h"
#include "../../common/options.h"
#include "../clock.h"
#include "host.h"

#define IDLE_WAIT_MIN_NS (20ull * 1000u)
#define IDLE_WAIT_MAX_NS (10ull * 1000u * 1000u)
/* A pass that found fewer records than this means the collector outruns the producers: it
 * then waits BATCH_WAIT_NS before the next pass, so that each pass takes a batch instead of
 * a few records (a pass costs a ppoll and a look at every ring: done per few records, that
 * was a third of the collector's time on a single-threaded program). */
#define BATCH_RECORDS 4096
#define BATCH_WAIT_NS (300ull * 1000u)
/* The batch wait is also bounded so that a producer writing an event every this many ns
 * fills at most a quarter of its ring meanwhile (it must not wait for us): the fastest
 * recorder path is ~25 ns an event. 300 us rather than 100 us: 5% less collector CPU on
 * churn (fewer wake-ups), and the default ring (64K cells) still allows 328 us. */
#define PRODUCER_FASTEST_NS 20u
/* Records drained from one process before the loop looks at the sockets and the other
 * processes again: bounds how long a HELLO or a BLOCK_QUERY waits behind a busy process. */
#define DRAIN_BUDGET 65536
/* A process's partial event chunk is written after this long: a quiet process's events
 * reach readers (and survive the collector's death) within about a second. */
#define CHUNK_FLUSH_INTERVAL_NS (1000ull * 1000u * 1000u)
/* How long a collector started by a plain LD_PRELOAD run waits for its first connection
 * (the producer connects right after starting it) before concluding it is not coming. */
#define FIRST_CONNECTION_WAIT_NS (60ull * 1000u * 1000u * 1000u)
/* Largest socket message: a HELLO. */
#define MSG_MAX (sizeof(struct mt_msg_hello) + 64)

struct mt_conn {
    int fd;
    struct mt_proc *proc; /* the current image, NULL before HELLO or when rejected */
    bool goodbye;         /* kept open until the trace is final, then closed */
    bool closed;
};

static struct mt_conn **conns;
static size_t conn_count, conn_cap;
static const struct mt_collector_config *cfg;
static pid_t root_pid; /* the launched program, 0 if none */
static bool root_reaped;
static int root_status;
static bool any_connection;
static uint32_t accepted_images;

/* Processes not yet ended, in order of appearance: the drain pass walks only these, so a
 * test suite's thousands of finished processes cost nothing per pass. */
static struct mt_proc **active;
static size_t active_count, active_cap;

static void activate(struct mt_proc *p)
{
    MT_VEC_RESERVE(active, active_cap, active_count + 1);
    active[active_count++] = p;
}

/* The newest live image of a pid (a fork child's parent), among the active processes. */
static struct mt_proc *find_live_pid(int32_t pid)
{
    for (size_t i = active_count; i-- > 0;)
        if (active[i]->pid == pid && active[i]->state == MT_PROC_LIVE)
            return active[i];
    return NULL;
}

static struct mt_conn *conn_add(int fd)
{
    MT_VEC_RESERVE(conns, conn_cap, conn_count + 1);
    struct mt_conn *c = mt_xcalloc(1, sizeof *c);
    c->fd = fd;
    conns[conn_count++] = c;
    any_connection = true;
    return c;
}

static void msg_head(struct mt_msg_head *h, enum mt_msg_type type)
{
    h->magic = MT_WIRE_MAGIC;
    h->version = MT_WIRE_VERSION;
    h->type = (uint16_t)type;
}

/* The image on this connection will publish nothing more. */
static void proc_finalize_input(struct mt_proc *proc, const char *reason)
{
    if (!proc || proc->state != MT_PROC_LIVE)
        return;
    proc->state = MT_PROC_FINAL;
    if (reason)
        proc->end_reason = reason;
    /* Without an exit record, the image ended when we learned it did. */
    if (!proc->saw_exit && !proc->end_ns)
        proc->end_ns = mt_trace_ns(mt_host_monotonic_ns());
    proc->conn = NULL;
}

static bool exe_skipped(const char *exe)
{
    const char *patterns = mt_option_str(MT_OPT_SKIP);
    if (!patterns[0])
        return false;
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    char pattern[4096];
    for (const char *p = patterns; *p;) {
        size_t n = strcspn(p, ":");
        if (n > 0 && n < sizeof pattern) {
            memcpy(pattern, p, n);
            pattern[n] = '\0';
            if (fnmatch(pattern, exe, 0) == 0 || fnmatch(pattern, base, 0) == 0)
                return true;
        }
        p += n;
        if (*p == ':')
            p++;
    }
    return false;
}

/* The image a first HELLO on a new connection replaced by exec, if any: the newest image
 * of the same pid that neither exited nor was known to exec, and started at the same
 * moment (a later process reusing the pid has another start time). A fork child's
 * connection reaches its exec'd image through MTRACE_CONN_FD/PID only when the program
 * passes its environment on; a shell builds the environment of the commands it runs
 * itself, with the values from its own start, so the new image takes the connection for
 * its parent's, closes it and opens its own. */
static struct mt_proc *replaced_image(int32_t pid, uint64_t start_ticks)
{
    if (!start_ticks)
        return NULL;
    for (uint32_t id = (uint32_t)mt_proc_count(); id > 0; id--) {
        struct mt_proc *p = mt_proc_by_id(id);
        if (p->pid != pid)
            continue;
        bool ended_unexplained = p->state != MT_PROC_LIVE && strcmp(p->end_reason, "lost") == 0;
        if (p->os_start_ticks == start_ticks && !p->saw_exit && (p->state == MT_PROC_LIVE || ended_unexplained))
            return p;
        return NULL;
    }
    return NULL;
}

static void on_hello(struct mt_conn *c, const struct mt_msg_hello *hello, long len, int area_fd)
{
    struct mt_msg_hello_reply reply = {0};
    msg_head(&reply.head, MT_MSG_HELLO_REPLY);
    reply.trace_start_mono_ns = mt_trace_origin();
    struct mt_proc *old = c->proc;
    if (old) {
        /* A second HELLO on a connection: the previous image called exec. */
        if (old->state == MT_PROC_LIVE && !old->end_ns)
            old->end_ns = mt_trace_ns(hello->start_mono_ns);
        proc_finalize_input(old, "exec");
        c->proc = NULL;
    }
    uint64_t start_ticks = mt_host_proc_start_ticks(hello->pid);
    if (!old && (old = replaced_image(hello->pid, start_ticks))) {
        /* The same process on a new connection: its previous image called exec (see
         * replaced_image). Its connection, if still open, carries nothing more. */
        if (old->state == MT_PROC_LIVE) {
            if (!old->end_ns)
                old->end_ns = mt_trace_ns(hello->start_mono_ns);
            struct mt_conn *old_conn = old->conn;
            proc_finalize_input(old, "exec");
            if (old_conn)
                old_conn->proc = NULL;
        } else {
            old->end_reason = "exec";
        }
    }
    bool valid = len >= (long)offsetof(struct mt_msg_hello, argv) && hello->proc_area_size >= sizeof(struct mt_wire_proc);
    bool follow = mt_option_bool(MT_OPT_FOLLOW_CHILDREN);
    char exe[MT_WIRE_PATH_MAX];
    memcpy(exe, hello->exe, sizeof exe);
    exe[sizeof exe - 1] = '\0';
    bool accept = valid && !exe_skipped(exe) && (follow || accepted_images == 0);
    struct mt_wire_proc *area = NULL;
    if (accept && area_fd >= 0)
        area = mt_host_map_shared(area_fd, hello->proc_area_size, false);
    if (area && (area->magic != MT_WIRE_MAGIC || area->version != MT_WIRE_VERSION)) {
        mt_host_unmap(area, hello->proc_area_size);
        area = NULL;
    }
    mt_host_close(area_fd);
    if (accept && !area)
        accept = false;
    if (accept) {
        if (accepted_images == 0 && root_pid == 0 && hello->start_mono_ns < mt_trace_origin()) {
            /* A plain LD_PRELOAD run: the program started before us; its start is the
             * trace's origin. */
            mt_trace_set_origin(hello->start_mono_ns);
            mt_sink_meta_int("start_unix_ns", (int64_t)hello->start_real_ns);
        }
        uint32_t parent_id = 0;
        if (old) {
            parent_id = old->proc_id;
        } else {
            struct mt_proc *parent = find_live_pid(hello->ppid);
            parent_id = parent ? parent->proc_id : 0;
        }
        struct mt_proc *p = mt_proc_from_hello(hello, (size_t)len, area, parent_id);
        p->os_start_ticks = start_ticks;
        p->conn = c;
        c->proc = p;
        activate(p);
        if (accepted_images == 0 && !cfg->command_json)
            mt_sink_meta("command", p->argv_json);
        accepted_images++;
        reply.verdict = MT_HELLO_ACCEPT;
        reply.wait_at_exit = (hello->flags & MT_HELLO_SPAWNED_COLLECTOR) ? 1 : 0;
    } else {
        reply.verdict = MT_HELLO_REJECT;
    }
    mt_host_send(c->fd, &reply, sizeof reply);
}

static void on_ring(struct mt_conn *c, const struct mt_msg_ring *msg, int ring_fd)
{
    if (ring_fd < 0)
        return;
    struct mt_proc *p = c->proc;
    if (p && p->state == MT_PROC_LIVE && msg->ring_bytes > MT_WIRE_RING_HEADER) {
        struct mt_wire_ring *hdr = mt_host_map_shared(ring_fd, msg->ring_bytes, true);
        if (hdr && hdr->magic == MT_WIRE_MAGIC && hdr->cells && (hdr->cells & (hdr->cells - 1)) == 0 &&
            MT_WIRE_RING_HEADER + (uint64_t)hdr->cells * MT_WIRE_CELL <= msg->ring_bytes)
            mt_proc_add_ring(p, hdr, msg->ring_bytes);
        else if (hdr)
            mt_host_unmap(hdr, msg->ring_bytes);
    }
    mt_host_close(ring_fd);
}

static void answer_query(struct mt_proc *p)
{
    struct mt_msg_block_info info;
    memset(&info, 0, sizeof info);
    msg_head(&info.head, MT_MSG_BLOCK_INFO);
    bool found = false;
    size_t n = mt_proc_describe_block(p, p->query_ptr, info.text, sizeof info.text, &found);
    info.found = found;
    info.len = (uint32_t)n;
    p->query_pending = false;
    if (p->conn)
        mt_host_send(p->conn->fd, &info, offsetof(struct mt_msg_block_info, text) + n);
}

/* A HELLO from a recorder of another mtrace build (its process area and rings are laid out
 * differently): refuse it, so it runs untraced instead of waiting for a verdict forever. The
 * reply's header and verdict are laid out alike in every version. */
static void refuse_version(struct mt_conn *c, uint16_t version)
{
    mt_warn("a traced process speaks trace wire version %u, this collector %u: it runs untraced (use one "
            "mtrace build for the whole process tree)",
            (unsigned)version, (unsigned)MT_WIRE_VERSION);
    struct mt_msg_hello_reply reply;
    memset(&reply, 0, sizeof reply);
    msg_head(&reply.head, MT_MSG_HELLO_REPLY);
    reply.verdict = MT_HELLO_REJECT;
    mt_host_send(c->fd, &reply, sizeof reply);
}

/* Read every message waiting on a connection. */
static void conn_read(struct mt_conn *c)
{
    static union {
        struct mt_msg_head head;
        struct mt_msg_hello hello;
        unsigned char bytes[MSG_MAX];
    } msg;
    for (;;) {
        int fd = -1;
        long n = mt_host_recv(c->fd, &msg, sizeof msg, &fd);
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            return;
        if (n <= 0) {
            /* EOF (or a broken connection): the image is gone or finished. */
            mt_host_close(fd);
            proc_finalize_input(c->proc, NULL);
            if (c->goodbye) {
                /* Half-closed by the producer: it waits for our close at the very end. */
                c->closed = true;
                return;
            }
            mt_host_close(c->fd);
            c->fd = -1;
            c->closed = true;
            return;
        }
        if ((size_t)n < sizeof msg.head || msg.head.magic != MT_WIRE_MAGIC || msg.head.version != MT_WIRE_VERSION) {
            mt_host_close(fd);
            if ((size_t)n >= sizeof msg.head && msg.head.magic == MT_WIRE_MAGIC && msg.head.type == MT_MSG_HELLO)
                refuse_version(c, msg.head.version);
            continue;
        }
        switch (msg.head.type) {
        case MT_MSG_HELLO:
            on_hello(c, &msg.hello, n, fd);
            break;
        case MT_MSG_RING:
            if ((size_t)n >= sizeof(struct mt_msg_ring))
                on_ring(c, (const struct mt_msg_ring *)&msg, fd);
            else
                mt_host_close(fd);
            break;
        case MT_MSG_GOODBYE:
            mt_host_close(fd);
            c->goodbye = true;
            proc_finalize_input(c->proc, NULL);
            break;
        case MT_MSG_BLOCK_QUERY: {
            mt_host_close(fd);
            const struct mt_msg_block_query *q = (const void *)&msg;
            if ((size_t)n >= sizeof *q && c->proc) {
                c->proc->query_pending = true;
                c->proc->query_ptr = q->ptr;
                c->proc->query_upto = q->upto_seq;
            } else {
                struct mt_msg_block_info info = {0};
                msg_head(&info.head, MT_MSG_BLOCK_INFO);
                mt_host_send(c->fd, &info, offsetof(struct mt_msg_block_info, text));
            }
            break;
        }
        default:
            mt_host_close(fd);
            break;
        }
    }
}

static void accept_pending(int listen_fd)
{
    for (;;) {
        int fd = mt_host_accept(listen_fd);
        if (fd < 0)
            return;
        conn_add(fd);
    }
}

static bool any_open_connection(void)
{
    for (size_t i = 0; i < conn_count; i++)
        if (!conns[i]->closed)
            return true;
    return false;
}

/* The smallest ring of the live processes, in cells (0: none): bounds the batch wait. */
static uint64_t smallest_ring_cells;

/* Drain every process once; returns the records consumed. Ends drained processes. */
static size_t drain_all(void)
{
    size_t total = 0;
    size_t kept = 0;
    smallest_ring_cells = 0;
    for (size_t i = 0; i < active_count; i++) {
        struct mt_proc *p = active[i];
        for (size_t r = 0; r < p->ring_count; r++)
            if (!smallest_ring_cells || p->rings[r].mask + 1 < smallest_ring_cells)
                smallest_ring_cells = p->rings[r].mask + 1;
        bool drained = false;
        total += mt_drain_proc(p, DRAIN_BUDGET, &drained);
        if (p->query_pending && (p->next_seq > p->query_upto || p->state != MT_PROC_LIVE))
            answer_query(p);
        if (drained)
            mt_proc_end(p);
        else
            active[kept++] = p;
    }
    active_count = kept;
    return total;
}

static bool all_processes_ended(void)
{
    return active_count == 0;
}

/* Forget connections that are closed for good (not those kept open for a GOODBYE). */
static void compact_connections(void)
{
    size_t kept = 0;
    for (size_t i = 0; i < conn_count; i++) {
        if (conns[i]->closed && conns[i]->fd < 0)
            free(conns[i]);
        else
            conns[kept++] = conns[i];
    }
    conn_count = kept;
}

static void reap_root(void)
{
    if (root_pid > 0 && !root_reaped && mt_host_reap(root_pid, &root_status))
        root_reaped = true;
}

static void write_meta_start(void)
{
    char host[256] = "";
    mt_host_hostname(host, sizeof host);
    mt_sink_meta("hostname", host);
    char cwd[4096];
    if (getcwd(cwd, sizeof cwd))
        mt_sink_meta("cwd", cwd);
    mt_sink_meta("mtrace_version", MTRACE_VERSION);
    if (cfg->command_json)
        mt_sink_meta("command", cfg->command_json);
    mt_sink_meta_int("start_unix_ns", (int64_t)mt_host_realtime_ns());
    mt_sink_meta_int("stack_depth", mt_option_int(MT_OPT_DEPTH));
    struct mt_buf opts = {0};
    mt_buf_append(&opts, "{", 1);
    for (int id = 0; id < MT_OPT_COUNT; id++) {
        const struct mt_option_desc *d = mt_option_describe((enum mt_option_id)id);
        if (id)
            mt_buf_append(&opts, ",", 1);
        mt_buf_json_string(&opts, d->name, strlen(d->name));
        mt_buf_append(&opts, ":", 1);
        long long v = mt_option_int((enum mt_option_id)id);
        switch (d->type) {
        case MT_OPT_BOOL:
            mt_buf_printf(&opts, "\"%s\"", v < 0 ? "auto" : v ? "on" : "off");
            break;
        case MT_OPT_INT:
        case MT_OPT_SIZE:
            if (v < 0)
                mt_buf_printf(&opts, "\"auto\"");
            else
                mt_buf_printf(&opts, "%lld", v);
            break;
        default: {
            const char *s = mt_option_str((enum mt_option_id)id);
            mt_buf_json_string(&opts, s, strlen(s));
            break;
        }
        }
    }
    mt_buf_append(&opts, "}", 1);
    mt_sink_meta("options", opts.data);
    mt_buf_free(&opts);
}

static void write_meta_end(void)
{
    uint64_t dropped = 0, unrecorded = 0, end = 0, waits = 0, wait_ns = 0, grows = 0;
    uint32_t page_size = 0;
    struct mt_buf classes = {0};
    size_t n = mt_proc_count();
    for (uint32_t id = 1; id <= n; id++) {
        struct mt_proc *p = mt_proc_by_id(id);
        dropped += p->area_dropped_final;
        unrecorded += p->unrecorded;
        waits += p->ring_waits;
        wait_ns += p->ring_wait_ns;
        grows += p->ring_grows;
        if (p->end_ns > end)
            end = p->end_ns;
        if (!page_size && p->page_size) {
            page_size = p->page_size;
            mt_buf_append(&classes, "[", 1);
            for (uint32_t i = 0; i < p->small_class_count; i++)
                mt_buf_printf(&classes, "%s%u", i ? "," : "", p->small_classes[i]);
            mt_buf_append(&classes, "]", 1);
        }
    }
    mt_sink_meta_int("events", (int64_t)mt_sink_events());
    mt_sink_meta_int("dropped", (int64_t)dropped);
    mt_sink_meta_int("unrecorded", (int64_t)unrecorded);
    mt_sink_meta_int("ring_waits", (int64_t)waits);
    mt_sink_meta_int("ring_wait_ns", (int64_t)wait_ns);
    mt_sink_meta_int("ring_grows", (int64_t)grows);
    mt_sink_meta_int("duration_ns", (int64_t)end);
    /* The collector's own CPU so far (drain, symbolizer and debug-information threads):
     * with `events`, the rate it sustains, for benchmarks and for judging a slow trace. */
    double user = 0, sys = 0;
    mt_host_self_cpu(&user, &sys);
    mt_sink_meta_int("collector_cpu_ns", (int64_t)((user + sys) * 1e9));
    if (!page_size)
        page_size = (uint32_t)sysconf(_SC_PAGESIZE);
    mt_sink_meta_int("page_size", page_size);
    mt_sink_meta("small_classes", classes.data ? classes.data : "[]");
    mt_buf_free(&classes);
}

static struct mt_collector_config config_copy;

int mt_collector_start(const struct mt_collector_config *config)
{
    config_copy = *config;
    cfg = &config_copy;
    mt_clock_init(); /* converts the traced processes' TSC timestamps */
    mt_trace_set_origin(mt_host_monotonic_ns());
    if (mt_sink_open(cfg->out_path) < 0)
        return -1;
    write_meta_start();
    return 0;
}

int mt_collector_run(pid_t root, struct mt_collector_result *result)
{
    root_pid = root;
    /* libdw would fetch missing debug information from the network when this is set
     * (Debian sets it in login shells): finishing a trace must not wait on a download.
     * Unset here, after the program started with its environment intact. */
    unsetenv("DEBUGINFOD_URLS");
    int child_fd = root_pid > 0 ? mt_host_child_watch_start() : -1;
    if (cfg->first_conn_fd >= 0)
        conn_add(cfg->first_conn_fd);
    uint64_t wait_ns = 0;
    uint64_t started = mt_host_monotonic_ns();
    uint64_t last_chunk_flush = started;
    int *fds = NULL;
    unsigned char *ready = NULL;
    size_t fds_cap = 0, ready_cap = 0;
    for (;;) {
        /* Sockets first: a HELLO or RING must be known before its records are drained. */
        size_t nfds = 0;
        MT_VEC_RESERVE(fds, fds_cap, conn_count + 2);
        MT_VEC_RESERVE(ready, ready_cap, conn_count + 2);
        fds[nfds++] = cfg->listen_fd;
        if (child_fd >= 0)
            fds[nfds++] = child_fd;
        size_t conn_base = nfds;
        for (size_t i = 0; i < conn_count; i++)
            fds[nfds++] = conns[i]->closed ? -1 : conns[i]->fd;
        mt_host_poll(fds, nfds, ready, wait_ns);
        if (ready[0])
            accept_pending(cfg->listen_fd);
        if (child_fd >= 0 && ready[1]) {
            mt_host_child_watch_drain(child_fd);
            reap_root();
        }
        for (size_t i = 0; i < conn_count && conn_base + i < nfds; i++)
            if (ready[conn_base + i])
                conn_read(conns[i]);
        size_t consumed = drain_all();
        compact_connections();
        uint64_t now = mt_host_monotonic_ns();
        if (now - last_chunk_flush >= CHUNK_FLUSH_INTERVAL_NS) {
            for (size_t i = 0; i < active_count; i++)
                mt_proc_flush_chunk(active[i]);
            last_chunk_flush = now;
        }
        mt_sink_maybe_commit(now);
        if (consumed) {
            uint64_t bound = smallest_ring_cells / 4 * PRODUCER_FASTEST_NS;
            wait_ns = consumed < BATCH_RECORDS ? MT_MIN((uint64_t)BATCH_WAIT_NS, bound) : 0;
            continue;
        }
        reap_root();
        if (!any_open_connection() && all_processes_ended() && (root_pid <= 0 || root_reaped)) {
            /* Nothing open: finished unless a connection is waiting to be accepted. */
            accept_pending(cfg->listen_fd);
            if (!any_open_connection()) {
                if (any_connection || root_pid > 0 || now - started > FIRST_CONNECTION_WAIT_NS)
                    break;
            }
        }
        wait_ns = wait_ns ? MT_MIN(wait_ns * 2, IDLE_WAIT_MAX_NS) : IDLE_WAIT_MIN_NS;
    }
    free(fds);
    free(ready);
    mt_proc_settle_end_reasons(root_pid, root_reaped, root_status);
    size_t n = mt_proc_count();
    for (uint32_t id = 1; id <= n; id++)
        mt_sink_process_rows(mt_proc_by_id(id));
    mt_sink_symbols();
    write_meta_end();
    int rc = mt_sink_finish();
    result->events = mt_sink_events();
    result->processes = (uint32_t)n;
    for (uint32_t id = 1; id <= n; id++) {
        result->ring_waits += mt_proc_by_id(id)->ring_waits;
        result->ring_wait_ns += mt_proc_by_id(id)->ring_wait_ns;
        result->ring_grows += mt_proc_by_id(id)->ring_grows;
    }
    result->root_reaped = root_reaped;
    result->root_wait_status = root_status;
    return rc;
}

void mt_collector_release(void)
{
    /* The trace is final: producers waiting at exit (GOODBYE) may go. */
    for (size_t i = 0; i < conn_count; i++)
        if (conns[i]->fd >= 0) {
            mt_host_close(conns[i]->fd);
            conns[i]->fd = -1;
        }
}
