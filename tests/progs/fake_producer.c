/* A stand-in for libmtrace.so that speaks trace/wire.h by hand, for the collector's tests
 * (tests/py/test_collector.py): known events with known stacks, so that every number the
 * collector writes can be checked exactly. Run it with `mtrace-run --no-preload`.
 *
 *   fake_producer               the scenario: events, thread, snapshot, mark, error, leak
 *                               scan, a forked child that is SIGKILLed, then exec of itself
 *   fake_producer --exec-image  (internal) the image after exec
 *   fake_producer --flood N     N malloc/free events on the main thread, then SIGKILL
 *   fake_producer --bench N T   N events from T threads as fast as possible
 *   fake_producer --nested      records out of seq order in one ring, as a signal handler
 *                               that allocates inside an interrupted record leaves them
 *   fake_producer --garbage N   N records of random kinds, sizes and contents (dense seqs):
 *                               the collector must survive a corrupt producer
 *   fake_producer --gap N       takes a seq it never publishes (as a signal handler that
 *                               leaves by longjmp), then N events: more than the ring holds
 *   fake_producer --hold        one event, then "ready" on stdout; exits when stdin closes
 *   fake_producer --preload-mode  as a plain LD_PRELOAD run's root: connects to
 *                               MTRACE_SOCKET, asks to wait at exit, says GOODBYE, exits 5
 *   fake_producer --rejectable  the scenario's first part, accepting that the collector may
 *                               refuse it (--skip, --no-follow): then it exits 4
 *
 * Stacks hold real return addresses of this program (capture() called from the site_*
 * functions), so the test can check that symbolization names them. Lines marked
 * "SITE:<name>" are where the test expects the frames' line numbers. */
#define _GNU_SOURCE
#include <errno.h>
#include <linux/futex.h>
#include <pthread.h>
#include <signal.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "../../trace/wire.h"

#define SLOTS_AT 4096ull
#define STACKS_AT (SLOTS_AT + (uint64_t)MT_WIRE_STACK_SLOTS * 8)
#define FRAMES_AT (STACKS_AT + (uint64_t)MT_WIRE_STACKS_MAX * sizeof(struct mt_wire_stack))
#define AREA_SIZE (FRAMES_AT + (uint64_t)MT_WIRE_FRAMES_MAX * 8)
#define RING_BYTES (MT_WIRE_RING_HEADER + 65536u * MT_WIRE_CELL) /* 4 MiB of cells */

static struct mt_wire_proc *area;
static int conn = -1;

static void die(const char *what)
{
    fprintf(stderr, "fake_producer: %s: %s\n", what, strerror(errno));
    exit(99);
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static void send_fd(int sock, const void *msg, size_t len, int fd)
{
    struct iovec iov = {(void *)msg, len};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } ctl;
    struct msghdr m = {0};
    m.msg_iov = &iov;
    m.msg_iovlen = 1;
    if (fd >= 0) {
        m.msg_control = ctl.buf;
        m.msg_controllen = sizeof ctl.buf;
        struct cmsghdr *c = CMSG_FIRSTHDR(&m);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof fd);
    }
    if (sendmsg(sock, &m, MSG_NOSIGNAL) != (ssize_t)len)
        die("sendmsg");
}

static void head(struct mt_msg_head *h, int type)
{
    /* FAKE_WIRE_VERSION: speak as a recorder of another mtrace build would. */
    const char *version = getenv("FAKE_WIRE_VERSION");
    h->magic = MT_WIRE_MAGIC;
    h->version = version ? (uint16_t)atoi(version) : MT_WIRE_VERSION;
    h->type = (uint16_t)type;
}

static int connect_collector(void)
{
    const char *name = getenv("MTRACE_SOCKET");
    if (!name)
        die("no MTRACE_SOCKET");
    int fd = socket(AF_UNIX, SOCK_SEQPACKET, 0); /* not close-on-exec: see wire.h */
    struct sockaddr_un a = {.sun_family = AF_UNIX};
    size_t len = strlen(name);
    memcpy(a.sun_path, name, len);
    if (name[0] == '@')
        a.sun_path[0] = 0;
    if (connect(fd, (struct sockaddr *)&a, (socklen_t)(offsetof(struct sockaddr_un, sun_path) + len)) < 0)
        die("connect");
    return fd;
}

/* ---- process area and stacks ------------------------------------------------------------ */

static bool accept_rejection;
static uint32_t wait_at_exit;

static void hello(uint32_t flags)
{
    int fd = memfd_create("fake-area", 0);
    if (fd < 0 || ftruncate(fd, (off_t)AREA_SIZE) < 0)
        die("memfd");
    area = mmap(NULL, AREA_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (area == MAP_FAILED)
        die("mmap area");
    area->magic = MT_WIRE_MAGIC;
    area->version = MT_WIRE_VERSION;
    area->area_size = AREA_SIZE;
    area->page_size = 4096;
    area->small_class_count = 3;
    area->small_classes[0] = 16;
    area->small_classes[1] = 32;
    area->small_classes[2] = 48;
    area->slots_at = SLOTS_AT;
    area->stacks_at = STACKS_AT;
    area->frames_at = FRAMES_AT;
    atomic_store(&area->next_stack, 1);

    static struct mt_msg_hello h;
    memset(&h, 0, sizeof h);
    head(&h.head, MT_MSG_HELLO);
    h.pid = getpid();
    h.ppid = getppid();
    h.flags = flags;
    h.start_mono_ns = now_ns();
    h.proc_area_size = AREA_SIZE;
    ssize_t n = readlink("/proc/self/exe", h.exe, sizeof h.exe - 1);
    (void)n;
    FILE *f = fopen("/proc/self/cmdline", "r");
    h.argv_len = (uint32_t)fread(h.argv, 1, sizeof h.argv, f);
    fclose(f);
    send_fd(conn, &h, sizeof h, fd);
    close(fd);
    struct mt_msg_hello_reply reply;
    if (recv(conn, &reply, sizeof reply, 0) != (ssize_t)sizeof reply)
        die("hello reply");
    if (reply.verdict != MT_HELLO_ACCEPT) {
        if (!accept_rejection)
            die("hello rejected");
        exit(4); /* untraced: nothing to record */
    }
    wait_at_exit = reply.wait_at_exit;
}

/* Store a stack (innermost first) and return its id. */
static uint32_t store_stack(const uint64_t *addrs, uint32_t depth)
{
    uint32_t id = atomic_fetch_add(&area->next_stack, 1);
    uint32_t at = atomic_fetch_add(&area->next_frame, depth);
    uint64_t *frames = (uint64_t *)((char *)area + area->frames_at);
    memcpy(frames + at, addrs, depth * sizeof *addrs);
    struct mt_wire_stack *st = (struct mt_wire_stack *)((char *)area + area->stacks_at) + id;
    st->hash = 1;
    st->frames_at = at;
    st->depth = depth;
    atomic_thread_fence(memory_order_release);
    return id;
}

/* The caller's return address and its caller's: a two-frame stack of real code (frame
 * pointers are kept: the test programs are built with -fno-omit-frame-pointer). */
#pragma GCC diagnostic ignored "-Wframe-address"
static __attribute__((noinline)) uint32_t capture(void)
{
    uint64_t addrs[2] = {(uint64_t)__builtin_return_address(0), (uint64_t)__builtin_return_address(1)};
    __asm__ volatile("" ::: "memory"); /* keep this a real call, not a tail call */
    return store_stack(addrs, 2);
}

static __attribute__((noinline)) uint32_t site_alpha(void)
{
    uint32_t id = capture(); /* SITE:alpha */
    __asm__ volatile("");
    return id;
}

static inline __attribute__((always_inline)) uint32_t beta_inner(void)
{
    uint32_t id = capture(); /* SITE:beta_inner */
    __asm__ volatile("");
    return id;
}

static __attribute__((noinline)) uint32_t site_beta(void)
{
    uint32_t id = beta_inner(); /* SITE:beta */
    __asm__ volatile("");
    return id;
}

static __attribute__((noinline)) uint32_t site_gamma(void)
{
    uint32_t id = capture(); /* SITE:gamma */
    __asm__ volatile("");
    return id;
}

static __attribute__((noinline)) uint32_t site_delta(void)
{
    uint32_t id = capture(); /* SITE:delta */
    __asm__ volatile("");
    return id;
}

/* ---- rings ------------------------------------------------------------------------------- */

struct ring {
    struct mt_wire_ring *hdr;
    unsigned char *cells;
    uint64_t next;
};

static struct ring *ring_open(const char *name)
{
    int fd = memfd_create("fake-ring", 0);
    if (fd < 0 || ftruncate(fd, RING_BYTES) < 0)
        die("memfd ring");
    struct ring *r = calloc(1, sizeof *r);
    r->hdr = mmap(NULL, RING_BYTES, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (r->hdr == MAP_FAILED)
        die("mmap ring");
    r->hdr->magic = MT_WIRE_MAGIC;
    r->hdr->version = MT_WIRE_VERSION;
    r->hdr->cells = (RING_BYTES - MT_WIRE_RING_HEADER) / MT_WIRE_CELL;
    r->hdr->tid = (int32_t)syscall(SYS_gettid);
    snprintf(r->hdr->name, sizeof r->hdr->name, "%s", name);
    r->cells = (unsigned char *)r->hdr + MT_WIRE_RING_HEADER;
    struct mt_msg_ring m = {0};
    head(&m.head, MT_MSG_RING);
    m.ring_bytes = RING_BYTES;
    m.tid = r->hdr->tid;
    send_fd(conn, &m, sizeof m, fd);
    close(fd);
    return r;
}

static void put(struct ring *r, struct mt_wire_rec *rec, size_t bytes)
{
    uint32_t cells = (uint32_t)((bytes + MT_WIRE_CELL - 1) / MT_WIRE_CELL);
    uint64_t mask = r->hdr->cells - 1;
    while (r->next + cells - atomic_load(&r->hdr->tail) > r->hdr->cells) {
        atomic_store(&r->hdr->waiting, 1);
        uint64_t tail = atomic_load(&r->hdr->tail);
        if (r->next + cells - tail > r->hdr->cells)
            syscall(SYS_futex, (uint32_t *)&r->hdr->tail, FUTEX_WAIT, (uint32_t)tail, NULL, NULL, 0);
        atomic_store(&r->hdr->waiting, 0);
    }
    rec->cells = (uint8_t)cells;
    rec->seq = atomic_fetch_add(&area->next_seq, 1);
    if (!rec->ts)
        rec->ts = now_ns();
    for (uint32_t i = 0; i < cells; i++) {
        size_t n = bytes - i * MT_WIRE_CELL < MT_WIRE_CELL ? bytes - i * MT_WIRE_CELL : MT_WIRE_CELL;
        memcpy(r->cells + ((r->next + i) & mask) * MT_WIRE_CELL, (char *)rec + i * MT_WIRE_CELL, n);
    }
    r->next += cells;
    atomic_store_explicit(&r->hdr->head, r->next, memory_order_release);
}

static void event(struct ring *r, int op, uint64_t ptr, uint64_t size, uint64_t aux, uint32_t stack)
{
    struct mt_wire_event_wide e = {0};
    e.rec.kind = MT_REC_EVENT;
    e.rec.op = (uint8_t)op;
    struct mt_wire_event_fields f = {stack, ptr, size, aux};
    put(r, &e.rec, mt_wire_event_encode(&e.rec, &f));
}

/* A one-cell event (pointer and size within 48 bits, no aux). */
static void compact_event(struct mt_wire_event *e, int op, uint64_t ptr, uint64_t size, uint32_t stack)
{
    struct mt_wire_event_wide w = {0};
    w.rec.kind = MT_REC_EVENT;
    w.rec.op = (uint8_t)op;
    struct mt_wire_event_fields f = {stack, ptr, size, 0};
    mt_wire_event_encode(&w.rec, &f);
    memcpy(e, &w, sizeof *e);
}

static void mark(struct ring *r, const char *label)
{
    struct {
        struct mt_wire_text t;
        char text[64];
    } m = {0};
    m.t.rec.kind = MT_REC_MARK;
    m.t.len = (uint32_t)strlen(label);
    memcpy(m.text, label, m.t.len);
    put(r, &m.t.rec, sizeof m.t + m.t.len);
}

static void snapshot(struct ring *r)
{
    /* The class triples are 12 bytes each: the bucket array after them is unaligned. */
    union {
        struct mt_wire_snapshot s;
        unsigned char bytes[sizeof(struct mt_wire_snapshot) + 3 * sizeof(struct mt_wire_snap_class) +
                            MT_WIRE_SNAP_BUCKETS * 8];
    } snap;
    memset(&snap, 0, sizeof snap);
    snap.s.rec.kind = MT_REC_SNAPSHOT;
    snap.s.mapped = 1 << 20;
    snap.s.committed = 65536;
    snap.s.in_use = 1024;
    snap.s.free_bytes = 4096;
    snap.s.largest_free = 2048;
    snap.s.live_blocks = 2;
    snap.s.class_count = 3;
    struct mt_wire_snap_class c[3] = {{16, 1, 256}, {32, 0, 0}, {48, 2, 85}};
    memcpy(snap.bytes + sizeof snap.s, c, sizeof c);
    uint64_t buckets[MT_WIRE_SNAP_BUCKETS] = {0};
    buckets[12] = 1; /* one medium block of (2048, 4096] */
    memcpy(snap.bytes + sizeof snap.s + sizeof c, buckets, sizeof buckets);
    put(r, &snap.s.rec, sizeof snap);
}

static void heap_error(struct ring *r, uint64_t ptr, uint32_t stack)
{
    struct {
        struct mt_wire_error e;
        char text[32];
    } m = {0};
    m.e.rec.kind = MT_REC_ERROR;
    m.e.rec.op = 0;  /* MT_ERR_DOUBLE_FREE */
    m.e.rec.sub = 1; /* MT_API_FREE */
    m.e.stack_id = stack;
    m.e.ptr = ptr;
    m.e.size = 100;
    m.e.len = 6;
    memcpy(m.text, "second", 6);
    put(r, &m.e.rec, sizeof m.e + m.e.len);
}

static void leaked(struct ring *r, const uint64_t *ptrs, uint32_t count)
{
    struct {
        struct mt_wire_leaked l;
        uint64_t p[MT_WIRE_LEAKED_PER_REC];
    } m = {0};
    m.l.rec.kind = MT_REC_LEAKED;
    m.l.count = count;
    memcpy(m.p, ptrs, count * sizeof *ptrs);
    put(r, &m.l.rec, sizeof m.l + count * sizeof *ptrs);
}

static void scan_done(struct ring *r, uint64_t leaked_blocks)
{
    struct mt_wire_scan_done d = {0};
    d.rec.kind = MT_REC_SCAN_DONE;
    d.leaked_blocks = leaked_blocks;
    put(r, &d.rec, sizeof d);
}

static void exit_record(struct ring *r, int code)
{
    struct mt_wire_exit e = {0};
    e.rec.kind = MT_REC_EXIT;
    e.rec.sub = MT_EXIT_NORMAL;
    e.code = code;
    put(r, &e.rec, sizeof e);
}

static uint32_t block_query(uint64_t ptr, char *answer, size_t cap)
{
    struct mt_msg_block_query q = {0};
    head(&q.head, MT_MSG_BLOCK_QUERY);
    q.ptr = ptr;
    q.upto_seq = atomic_load(&area->next_seq) - 1;
    send_fd(conn, &q, sizeof q, -1);
    static struct mt_msg_block_info info;
    ssize_t n = recv(conn, &info, sizeof info, 0);
    if (n < (ssize_t)offsetof(struct mt_msg_block_info, text))
        die("block info");
    snprintf(answer, cap, "%.*s", (int)info.len, info.text);
    return info.found;
}

/* ---- scenarios ----------------------------------------------------------------------------- */

static uint32_t st_alpha, st_beta, st_gamma, st_delta;

static void *worker(void *arg)
{
    (void)arg;
    struct ring *r = ring_open("worker");
    event(r, MT_OP_MALLOC, 0x5000, 50, 0, st_delta); /* E: leaked (reachable) */
    atomic_store(&r->hdr->closed, 1);
    return NULL;
}

static void forked_child(void)
{
    /* The connection the parent opened for us; the parent's own is not ours. */
    hello(MT_HELLO_FORKED);
    st_alpha = site_alpha(); /* a new process area: its own stack store */
    st_beta = site_beta();
    struct ring *r = ring_open("child");
    event(r, MT_OP_MALLOC, 0x7000, 70, 0, st_alpha);
    event(r, MT_OP_CALLOC, 0x7100, 64, 0, st_beta);
    raise(SIGKILL); /* no exit record: end_reason lost, blocks unknown */
}

static int scenario(char **argv)
{
    hello(0);
    st_alpha = site_alpha();
    st_beta = site_beta();
    st_gamma = site_gamma();
    st_delta = site_delta();
    struct ring *r = ring_open("main");
    event(r, MT_OP_MALLOC, 0x1000, 100, 0, st_alpha);           /* A */
    event(r, MT_OP_MALLOC, 0x2000, 200, 0, st_beta);            /* B */
    event(r, MT_OP_FREE, 0x1000, 0, 0, st_gamma);               /* free A */
    event(r, MT_OP_MALLOC, 0x3000, 300, 0, st_alpha);           /* C */
    event(r, MT_OP_FREE, 0x3000, 0, 0, st_gamma);               /* free C: temporary */
    event(r, MT_OP_REALLOC, 0x4000, 400, 0x2000, st_alpha);     /* B -> D */
    mark(r, "phase two");
    snapshot(r);
    heap_error(r, 0x1000, st_gamma);                            /* "double free" of A */
    char answer[4096];
    block_query(0x1000, answer, sizeof answer);
    printf("BLOCK_INFO_BEGIN\n%sBLOCK_INFO_END\n", answer);
    uint32_t found = block_query(0xdead0, answer, sizeof answer);
    printf("UNKNOWN_BLOCK found=%u len=%zu\n", found, strlen(answer));
    fflush(stdout);
    pthread_t t;
    pthread_create(&t, NULL, worker, NULL);
    pthread_join(t, NULL);
    event(r, MT_OP_REALLOC, 0x6000, 16, 0, 0);                  /* F = realloc(NULL, 16): no stack */

    /* A child: its connection is opened here, before the fork. */
    int child_conn = connect_collector();
    pid_t pid = fork();
    if (pid == 0) {
        close(conn);
        conn = child_conn;
        forked_child();
    }
    close(child_conn);
    waitpid(pid, NULL, 0);

    uint64_t leaks[] = {0x4000};
    leaked(r, leaks, 1);                                        /* D leaked; E, F reachable */
    scan_done(r, 1);
    /* Replace this image: the new one speaks on the same (inherited) connection. */
    char fd_text[16];
    snprintf(fd_text, sizeof fd_text, "%d", conn);
    setenv("MTRACE_CONN_FD", fd_text, 1);
    char *args[] = {argv[0], "--exec-image", accept_rejection ? "--rejectable" : NULL, NULL};
    execv("/proc/self/exe", args);
    die("exec");
    return 1;
}

static int exec_image(void)
{
    hello(0);
    struct ring *r = ring_open("main");
    uint32_t s = site_alpha();
    event(r, MT_OP_MALLOC, 0x7700, 77, 0, s);
    event(r, MT_OP_MALLOC, 0x8000, 80, 0, s);
    event(r, MT_OP_FREE, 0x7700, 0, 0, s); /* not temporary: another allocation came after it */
    event(r, MT_OP_FREE, 0x8000, 0, 0, s); /* temporary: freed before the next allocation */
    event(r, MT_OP_MALLOC, 0x9000, 90, 0, s);
    /* A region: three pushes, then a pop back to position 32 frees the last two. */
    event(r, MT_OP_REGION_PUSH, 0xa000, 32, 0xe000, s);
    event(r, MT_OP_REGION_PUSH, 0xa020, 32, 0xe000, s);
    event(r, MT_OP_REGION_PUSH, 0xa040, 32, 0xe000, s);
    event(r, MT_OP_REGION_POP, 0, 32, 0xe000, s);
    scan_done(r, 0); /* 0x9000 and 0xa000 reachable */
    exit_record(r, 3);
    return 3;
}

static int flood(long n)
{
    hello(0);
    uint32_t s = site_alpha();
    struct ring *r = ring_open("main");
    for (long i = 0; i < n; i++)
        event(r, (i & 1) ? MT_OP_FREE : MT_OP_MALLOC, 0x10000 + (uint64_t)(i / 2) * 64, (i & 1) ? 0 : 24, 0, s);
    /* Counters as drop mode and the recorder's busy sections would leave them. */
    atomic_store(&area->dropped, 7);
    atomic_store(&area->unrecorded, 2);
    raise(SIGKILL);
    return 0;
}

static long bench_per_thread;
/* Stacks of the benchmark: many distinct ones, like a real program's, made of real code
 * addresses of this program (so they land in a known module). */
#define BENCH_STACKS 1024
/* Block slots per thread: about half are live at any time, so the collector's live set
 * holds tens of thousands of blocks at random addresses, as a real heap does. */
#define BENCH_SLOTS 65536
static uint32_t bench_stacks[BENCH_STACKS];

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    return x;
}

static void *bench_thread(void *arg)
{
    uint64_t base = (uint64_t)(uintptr_t)arg << 36;
    struct ring *r = ring_open("bench");
    static _Thread_local unsigned char live[BENCH_SLOTS];
    uint64_t ts = now_ns();
    for (long i = 0; i < bench_per_thread; i++) {
        /* Time is read once per 16 events: the fake must outrun the collector. */
        if ((i & 15) == 0)
            ts = now_ns();
        uint64_t h = mix((uint64_t)i + (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull);
        uint64_t slot = h % BENCH_SLOTS;
        struct mt_wire_event e;
        uint32_t stack = bench_stacks[(h >> 20) % BENCH_STACKS];
        if (live[slot]) {
            compact_event(&e, MT_OP_FREE, base + slot * 256 + (live[slot] - 1) * 16, 0, stack);
            live[slot] = 0;
        } else {
            compact_event(&e, MT_OP_MALLOC, base + slot * 256 + ((h >> 40) & 0x30), 8 + (h >> 48) % 200, stack);
            live[slot] = (unsigned char)(((h >> 40) & 0x30) / 16 + 1);
        }
        e.rec.ts = ts;
        put(r, &e.rec, sizeof e);
    }
    return NULL;
}

static int bench(long n, int threads)
{
    hello(0);
    uint64_t base = (uint64_t)(uintptr_t)&site_alpha;
    for (int i = 0; i < BENCH_STACKS; i++) {
        uint64_t addrs[3] = {base + (uint64_t)(i % 32), base + 64 + (uint64_t)(i / 32), (uint64_t)(uintptr_t)&scenario};
        bench_stacks[i] = store_stack(addrs, 3);
    }
    bench_per_thread = n / threads;
    pthread_t t[64];
    for (int i = 0; i < threads && i < 64; i++)
        pthread_create(&t[i], NULL, bench_thread, (void *)(uintptr_t)(i + 1));
    for (int i = 0; i < threads && i < 64; i++)
        pthread_join(t[i], NULL);
    return 0;
}

/* Write `count` events into consecutive cells with the given seqs and publish them at once. */
static void put_with_seqs(struct ring *r, struct mt_wire_event *events, const uint64_t *seqs, int count)
{
    uint64_t mask = r->hdr->cells - 1;
    for (int i = 0; i < count; i++) {
        events[i].rec.cells = 1;
        events[i].rec.seq = (uint32_t)seqs[i];
        events[i].rec.ts = now_ns();
        memcpy(r->cells + ((r->next + (uint64_t)i) & mask) * MT_WIRE_CELL, &events[i], sizeof events[i]);
    }
    r->next += (uint64_t)count;
    atomic_store_explicit(&r->hdr->head, r->next, memory_order_release);
}

static int nested(void)
{
    hello(0);
    uint32_t s = site_alpha();
    struct ring *r = ring_open("main");
    struct ring *other = ring_open("other");
    for (int round = 0; round < 3; round++) {
        /* The interrupted malloc reserved its cell first but took its seq last; the
         * handler's malloc and free came in between. An event in a second ring follows. */
        uint64_t base = atomic_fetch_add(&area->next_seq, 4);
        struct mt_wire_event ev[3];
        uint64_t p = 0x100000 * (uint64_t)(round + 1);
        compact_event(&ev[0], MT_OP_MALLOC, p, 1, s);         /* seq base + 2 */
        compact_event(&ev[1], MT_OP_MALLOC, p + 0x100, 2, s); /* seq base */
        compact_event(&ev[2], MT_OP_FREE, p + 0x100, 0, s);   /* seq base + 1 */
        uint64_t seqs[3] = {base + 2, base, base + 1};
        put_with_seqs(r, ev, seqs, 3);
        struct mt_wire_event last;
        compact_event(&last, MT_OP_MALLOC, p + 0x200, 3, s);
        uint64_t seq_last = base + 3;
        put_with_seqs(other, &last, &seq_last, 1);
    }
    exit_record(r, 0);
    return 0;
}

static int garbage(long n)
{
    hello(0);
    struct ring *r = ring_open("main");
    uint64_t x = 0x9e3779b97f4a7c15ull;
    for (long i = 0; i < n; i++) {
        unsigned char buf[4 * MT_WIRE_CELL];
        for (size_t k = 0; k < sizeof buf; k += 8) {
            x = mix(x + (uint64_t)i);
            memcpy(buf + k, &x, 8);
        }
        struct mt_wire_rec *rec = (struct mt_wire_rec *)buf;
        rec->kind = (uint8_t)(1 + x % 12);
        if (rec->kind == MT_REC_PAD)
            rec->kind = MT_REC_EVENT;
        rec->ts = 0;
        put(r, rec, (size_t)(1 + (x >> 8) % 4) * MT_WIRE_CELL);
    }
    raise(SIGKILL);
    return 0;
}

static int gap(long n)
{
    hello(0);
    uint32_t s = site_alpha();
    struct ring *r = ring_open("main");
    event(r, MT_OP_MALLOC, 0xc000, 12, 0, s);
    atomic_fetch_add(&area->next_seq, 1); /* the lost record */
    for (long i = 0; i < n; i++)
        event(r, (i & 1) ? MT_OP_FREE : MT_OP_MALLOC, 0x100000 + (uint64_t)(i / 2) * 32, (i & 1) ? 0 : 8, 0, s);
    exit_record(r, 0);
    return 0;
}

static int hold(void)
{
    hello(0);
    struct ring *r = ring_open("main");
    event(r, MT_OP_MALLOC, 0xb000, 11, 0, site_alpha());
    printf("ready\n");
    fflush(stdout);
    char buf[16];
    while (fread(buf, 1, sizeof buf, stdin) > 0) {
    }
    exit_record(r, 0);
    return 0;
}

static int preload_mode(void)
{
    hello(MT_HELLO_SPAWNED_COLLECTOR);
    if (!wait_at_exit)
        die("the root of a plain LD_PRELOAD run must be asked to wait at exit");
    struct ring *r = ring_open("main");
    uint32_t s = site_alpha();
    event(r, MT_OP_MALLOC, 0xa000, 10, 0, s);
    scan_done(r, 0);
    exit_record(r, 5);
    struct mt_msg_head bye;
    head(&bye, MT_MSG_GOODBYE);
    send_fd(conn, &bye, sizeof bye, -1);
    shutdown(conn, SHUT_WR);
    char b;
    while (recv(conn, &b, 1, 0) > 0) {
    } /* the collector closes the connection once the trace is final */
    return 5;
}

int main(int argc, char **argv)
{
    const char *fd_text = getenv("MTRACE_CONN_FD");
    conn = fd_text ? atoi(fd_text) : connect_collector();
    if (argc > 2 && strcmp(argv[1], "--garbage") == 0)
        return garbage(atol(argv[2]));
    if (argc > 2 && strcmp(argv[1], "--gap") == 0)
        return gap(atol(argv[2]));
    if (argc > 1 && strcmp(argv[1], "--hold") == 0)
        return hold();
    if (argc > 1 && strcmp(argv[1], "--nested") == 0)
        return nested();
    if (argc > 1 && strcmp(argv[1], "--preload-mode") == 0)
        return preload_mode();
    if (argc > 1 && strcmp(argv[1], "--rejectable") == 0)
        accept_rejection = true;
    if (argc > 1 && strcmp(argv[1], "--exec-image") == 0) {
        accept_rejection = argc > 2 && strcmp(argv[2], "--rejectable") == 0;
        return exec_image();
    }
    if (argc > 2 && strcmp(argv[1], "--flood") == 0)
        return flood(atol(argv[2]));
    if (argc > 3 && strcmp(argv[1], "--bench") == 0)
        return bench(atol(argv[2]), atoi(argv[3]));
    return scenario(argv);
}
