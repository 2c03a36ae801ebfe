// link: trace/ring.c trace/stack_store.c
/* Rings and the stack store under threads, with an in-process consumer that reads the
 * rings exactly as trace/wire.h tells the collector to: dense sequence numbers, no lost or
 * torn records, records nested from a signal handler, one id per distinct stack. */
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <time.h>

#include "../../common/platform.h"
#include "../../trace/ring.h"
#include "../../trace/stack_store.h"
#include "check.h"

#define WRITERS 4
#define PER_WRITER 100000
/* Small rings: the writers fill them and must wait for the consumer again and again. */
#define SMALL_RING (64u * 1024u)

static struct mt_wire_proc *proc;

static void setup_proc(bool drop)
{
    uint64_t size = mt_stack_store_area_size();
    if (!proc)
        proc = mt_os_map(size);
    memset(proc, 0, 4096);
    mt_stack_store_init_area(proc, size);
    struct mt_ring_policy policy = {proc, drop, NULL};
    mt_ring_set_policy(&policy);
}

/* Every field derives from (writer, i): a torn record cannot verify. A one-cell event. */
static void make_event(struct mt_wire_event *ev, uint32_t writer, uint64_t i)
{
    struct mt_wire_event_wide wide;
    memset(&wide, 0, sizeof wide);
    wide.rec.kind = MT_REC_EVENT;
    wide.rec.op = MT_OP_MALLOC;
    struct mt_wire_event_fields f = {writer, ((uint64_t)writer << 40) | i, i * 3 + writer, 0};
    size_t bytes = mt_wire_event_encode(&wide.rec, &f);
    wide.rec.ts = f.ptr ^ f.size ^ 0x5a5a5a5a5a5a5a5aull;
    memcpy(ev, &wide, sizeof *ev);
    (void)bytes;
}

/* Decoded from a copy with room for the wide form (the decoder may look at it). */
static void event_fields(const struct mt_wire_event *ev, struct mt_wire_event_fields *f)
{
    struct mt_wire_event_wide room;
    memset(&room, 0, sizeof room);
    memcpy(&room, ev, sizeof *ev);
    mt_wire_event_decode(&room.rec, f);
}

static bool event_ok(const struct mt_wire_event *ev)
{
    struct mt_wire_event_fields f;
    event_fields(ev, &f);
    return ev->rec.kind == MT_REC_EVENT && ev->rec.cells == 1 && ev->rec.sub == 0 &&
           f.size == (f.ptr & ((1ull << 40) - 1)) * 3 + f.stack_id && f.aux == 0 &&
           ev->rec.ts == (f.ptr ^ f.size ^ 0x5a5a5a5a5a5a5a5aull) && (f.ptr >> 40) == f.stack_id;
}

static uint32_t event_writer(const struct mt_wire_event *ev)
{
    return ev->stack_id;
}

static uint64_t event_index(const struct mt_wire_event *ev)
{
    struct mt_wire_event_fields f;
    event_fields(ev, &f);
    return f.ptr & ((1ull << 40) - 1);
}

/* ---- the consumer ---------------------------------------------------------------------------- */

struct consumer {
    struct mt_ring_writer *writers[WRITERS + 1];
    int count;
    _Atomic bool stop;
    uint8_t *seen; /* one byte per seq */
    uint64_t seq_cap;
    uint64_t records, torn, dup, out_of_order;
    uint64_t next_index[WRITERS + 1]; /* per writer, the next i expected (main records) */
    uint64_t handler_records;
};

static void consume_ring(struct consumer *c, struct mt_wire_ring *ring)
{
    uint64_t head = atomic_load_explicit(&ring->head, memory_order_acquire);
    uint64_t tail = atomic_load_explicit(&ring->tail, memory_order_relaxed);
    uint8_t *cells = (uint8_t *)ring + MT_WIRE_RING_HEADER;
    while (tail < head) {
        struct mt_wire_event ev;
        memcpy(&ev, cells + (tail & (ring->cells - 1)) * MT_WIRE_CELL, sizeof ev);
        tail += ev.rec.cells ? ev.rec.cells : 1;
        c->records++;
        if (!event_ok(&ev)) {
            c->torn++;
            continue;
        }
        if (ev.rec.seq >= c->seq_cap || c->seen[ev.rec.seq]++)
            c->dup++;
        uint32_t w = event_writer(&ev);
        uint64_t i = event_index(&ev);
        if (w >= 100) {
            c->handler_records++;
        } else if (w <= WRITERS) {
            if (i != c->next_index[w])
                c->out_of_order++;
            c->next_index[w] = i + 1;
        }
    }
    atomic_store_explicit(&ring->tail, tail, memory_order_release);
    if (atomic_load_explicit(&ring->waiting, memory_order_seq_cst))
        mt_os_futex_wake((_Atomic uint32_t *)(void *)&ring->tail, 1 << 30);
}

static void *consumer_main(void *arg)
{
    struct consumer *c = arg;
    for (;;) {
        bool stop = atomic_load(&c->stop);
        for (int i = 0; i < c->count; i++) {
            struct mt_wire_ring *ring = __atomic_load_n(&c->writers[i]->ring, __ATOMIC_ACQUIRE);
            if (ring)
                consume_ring(c, ring);
        }
        if (stop)
            return NULL;
    }
}

/* ---- writers --------------------------------------------------------------------------------- */

struct writer_arg {
    struct mt_ring_writer w;
    uint32_t id;
    _Atomic bool ready;
    uint64_t dropped_puts;
};

static void *writer_main(void *arg)
{
    struct writer_arg *a = arg;
    for (uint64_t i = 0; i < PER_WRITER; i++) {
        struct mt_wire_event ev;
        make_event(&ev, a->id, i);
        if (!mt_ring_put(&a->w, &ev.rec, sizeof ev))
            a->dropped_puts++;
    }
    return NULL;
}

static void check_dense(struct consumer *c, uint64_t expected)
{
    CHECK_EQ_U(atomic_load(&proc->next_seq), expected);
    uint64_t missing = 0;
    for (uint64_t s = 0; s < expected; s++)
        missing += c->seen[s] == 0;
    CHECK_EQ_U(missing, 0);
    CHECK_EQ_U(c->dup, 0);
    CHECK_EQ_U(c->torn, 0);
}

TEST(threads_wait_mode_lose_nothing)
{
    setup_proc(false);
    static struct writer_arg args[WRITERS];
    static struct consumer c;
    memset(&c, 0, sizeof c);
    c.seq_cap = (uint64_t)WRITERS * PER_WRITER + 16;
    c.seen = calloc(c.seq_cap, 1);
    for (int i = 0; i < WRITERS; i++) {
        memset(&args[i], 0, sizeof args[i]);
        args[i].id = (uint32_t)i + 1;
        int fd = mt_ring_create(&args[i].w, SMALL_RING, i, "writer");
        REQUIRE(fd >= 0);
        close(fd);
        c.writers[c.count++] = &args[i].w;
    }
    pthread_t consumer, th[WRITERS];
    pthread_create(&consumer, NULL, consumer_main, &c);
    for (int i = 0; i < WRITERS; i++)
        pthread_create(&th[i], NULL, writer_main, &args[i]);
    for (int i = 0; i < WRITERS; i++)
        pthread_join(th[i], NULL);
    atomic_store(&c.stop, true);
    pthread_join(consumer, NULL);
    CHECK_EQ_U(c.records, (uint64_t)WRITERS * PER_WRITER);
    CHECK_EQ_U(c.out_of_order, 0);
    for (int i = 0; i < WRITERS; i++) {
        CHECK_EQ_U(args[i].dropped_puts, 0);
        CHECK_EQ_U(c.next_index[i + 1], PER_WRITER);
        mt_ring_unmap(&args[i].w);
    }
    check_dense(&c, (uint64_t)WRITERS * PER_WRITER);
    CHECK_EQ_U(atomic_load(&proc->dropped), 0);
    free(c.seen);
}

TEST(drop_mode_counts_and_keeps_numbers_dense)
{
    setup_proc(true);
    struct mt_ring_writer w;
    memset(&w, 0, sizeof w);
    int fd = mt_ring_create(&w, SMALL_RING, 1, "dropper");
    REQUIRE(fd >= 0);
    close(fd);
    uint64_t ok = 0, dropped = 0;
    for (uint64_t i = 0; i < 5000; i++) {
        struct mt_wire_event ev;
        make_event(&ev, 1, i);
        if (mt_ring_put(&w, &ev.rec, sizeof ev))
            ok++;
        else
            dropped++;
    }
    /* Nobody consumes: exactly the ring's cells were written, the rest dropped. */
    CHECK_EQ_U(ok, w.ring->cells);
    CHECK_EQ_U(dropped, 5000 - w.ring->cells);
    CHECK_EQ_U(atomic_load(&w.ring->dropped), dropped);
    CHECK_EQ_U(atomic_load(&proc->dropped), dropped);
    CHECK_EQ_U(atomic_load(&proc->next_seq), ok);
    CHECK_EQ_U(atomic_load(&w.ring->head), ok);
    mt_ring_unmap(&w);
}

/* A record opened, a nested one (what a signal handler does) written inside it: nothing is
 * published until the outer one completes, then both are. */
TEST(nested_record_published_by_the_outer_one)
{
    setup_proc(false);
    struct mt_ring_writer w;
    memset(&w, 0, sizeof w);
    int fd = mt_ring_create(&w, SMALL_RING, 1, "nest");
    REQUIRE(fd >= 0);
    close(fd);
    struct mt_wire_event outer, inner;
    make_event(&outer, 1, 0);
    make_event(&inner, 100, 1);
    uint64_t pos;
    bool opened = mt_ring_begin(&w, &outer.rec, sizeof outer, &pos);
    REQUIRE(opened);
    CHECK(mt_ring_put(&w, &inner.rec, sizeof inner));
    CHECK_EQ_U(atomic_load(&w.ring->head), 0);
    mt_ring_end(&w, pos, &outer.rec, sizeof outer);
    CHECK_EQ_U(atomic_load(&w.ring->head), 2);
    CHECK_EQ_U(outer.rec.seq, 0);
    CHECK_EQ_U(inner.rec.seq, 1);
    const uint8_t *cells = (const uint8_t *)w.ring + MT_WIRE_RING_HEADER;
    const struct mt_wire_event *first = (const void *)cells, *second = (const void *)(cells + MT_WIRE_CELL);
    CHECK(event_ok(first) && first->rec.seq == 0 && event_writer(first) == 1);
    CHECK(event_ok(second) && second->rec.seq == 1 && event_writer(second) == 100);
    mt_ring_unmap(&w);
}

/* Signals delivered at random points of a writer's loop record from the handler. */
static struct writer_arg signal_writer;
static _Atomic uint64_t handler_ok, handler_dropped;
static uint64_t handler_counter;

static void on_usr1(int sig)
{
    (void)sig;
    struct mt_wire_event ev;
    make_event(&ev, 100, handler_counter++);
    if (mt_ring_put(&signal_writer.w, &ev.rec, sizeof ev))
        atomic_fetch_add(&handler_ok, 1);
    else
        atomic_fetch_add(&handler_dropped, 1);
}

static _Atomic bool writer_done;

static void *signal_writer_main(void *arg)
{
    writer_main(arg);
    atomic_store(&writer_done, true);
    return NULL;
}

TEST(records_from_signal_handlers_are_not_lost)
{
    setup_proc(false);
    static struct consumer c;
    memset(&c, 0, sizeof c);
    c.seq_cap = (uint64_t)PER_WRITER * 4;
    c.seen = calloc(c.seq_cap, 1);
    memset(&signal_writer, 0, sizeof signal_writer);
    signal_writer.id = 1;
    int fd = mt_ring_create(&signal_writer.w, SMALL_RING, 1, "signals");
    REQUIRE(fd >= 0);
    close(fd);
    c.writers[c.count++] = &signal_writer.w;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_usr1;
    sigaction(SIGUSR1, &sa, NULL);
    pthread_t consumer, writer;
    pthread_create(&consumer, NULL, consumer_main, &c);
    pthread_create(&writer, NULL, signal_writer_main, &signal_writer);
    uint64_t sent = 0;
    /* Paced, not a storm: a writer that does nothing but run handlers makes no progress. */
    struct timespec pace = {0, 20000};
    while (!atomic_load(&writer_done)) {
        pthread_kill(writer, SIGUSR1);
        sent++;
        nanosleep(&pace, NULL);
    }
    pthread_join(writer, NULL);
    atomic_store(&c.stop, true);
    pthread_join(consumer, NULL);
    signal(SIGUSR1, SIG_DFL);
    uint64_t handled = atomic_load(&handler_ok) + atomic_load(&handler_dropped);
    CHECK(handled > 0);
    /* A nested record may be dropped only when the ring is full (it cannot wait for the
     * consumer); everything written arrived. */
    CHECK_EQ_U(c.records, PER_WRITER + atomic_load(&handler_ok));
    CHECK_EQ_U(c.handler_records, atomic_load(&handler_ok));
    CHECK_EQ_U(c.next_index[1], PER_WRITER);
    CHECK_EQ_U(c.out_of_order, 0);
    check_dense(&c, PER_WRITER + atomic_load(&handler_ok));
    printf("  %llu signals sent, %llu handled, %llu handler records dropped\n", (unsigned long long)sent,
           (unsigned long long)handled, (unsigned long long)atomic_load(&handler_dropped));
    mt_ring_unmap(&signal_writer.w);
    free(c.seen);
}

/* ---- stack store ----------------------------------------------------------------------------- */

#define STACKS 500
#define STACK_THREADS 6

static struct mt_stack_store store;
static uint32_t ids[STACK_THREADS][STACKS];

static uint32_t stack_depth(int s)
{
    return 1 + (uint32_t)(s % 40);
}

static void stack_frames(int s, uint64_t *frames)
{
    for (uint32_t d = 0; d < stack_depth(s); d++)
        frames[d] = 0x400000ull + (uint64_t)s * 0x1000 + d * 8;
}

static void *stack_thread(void *arg)
{
    int t = (int)(intptr_t)arg;
    struct mt_stack_cache *cache = calloc(1, sizeof *cache);
    /* Each thread visits the stacks in its own order, several times: cache hits and races. */
    for (int round = 0; round < 3; round++) {
        for (int k = 0; k < STACKS; k++) {
            int s = (k * 7 + t * 131 + round * 17) % STACKS;
            uint64_t frames[64];
            stack_frames(s, frames);
            uint32_t id = mt_stack_store_intern(&store, (round & 1) ? NULL : cache, frames, stack_depth(s));
            if (round == 0)
                ids[t][s] = id;
            else if (ids[t][s] != id)
                ids[t][s] = UINT32_MAX;
        }
    }
    free(cache);
    return NULL;
}

TEST(stack_store_one_id_per_distinct_stack)
{
    setup_proc(false);
    mt_stack_store_attach(&store, proc, 1);
    pthread_t th[STACK_THREADS];
    for (int t = 0; t < STACK_THREADS; t++)
        pthread_create(&th[t], NULL, stack_thread, (void *)(intptr_t)t);
    for (int t = 0; t < STACK_THREADS; t++)
        pthread_join(th[t], NULL);
    static uint8_t used[STACKS * STACK_THREADS + 2];
    memset(used, 0, sizeof used);
    int distinct = 0, mismatched = 0, bad_entries = 0;
    for (int s = 0; s < STACKS; s++) {
        uint32_t id = ids[0][s];
        for (int t = 1; t < STACK_THREADS; t++)
            mismatched += ids[t][s] != id;
        if (id == 0 || id >= sizeof used || used[id]++)
            continue;
        distinct++;
        /* What the collector would read for this id. */
        const struct mt_wire_stack *e = &store.stacks[id];
        uint64_t frames[64];
        stack_frames(s, frames);
        if (e->depth != stack_depth(s) || memcmp(&store.frames[e->frames_at], frames, e->depth * 8) != 0)
            bad_entries++;
    }
    CHECK_EQ_U(mismatched, 0);
    CHECK_EQ_U(distinct, STACKS);
    CHECK_EQ_U(bad_entries, 0);
    /* Every published slot names a distinct id (ids lost in races are never published). */
    uint64_t published = 0;
    for (uint64_t i = 0; i < MT_WIRE_STACK_SLOTS; i++)
        published += atomic_load(&store.slots[i]) != 0;
    CHECK_EQ_U(published, STACKS);
}

/* trace/wire.h: an event comes back as written, in one cell when its pointer and size fit
 * 48 bits and it has no aux, else in two; and a record's 32-bit seq comes back whole. */
static void roundtrip(uint64_t ptr, uint64_t size, uint64_t aux, size_t want_bytes)
{
    struct mt_wire_event_wide room;
    memset(&room, 0xee, sizeof room);
    room.rec.kind = MT_REC_EVENT;
    struct mt_wire_event_fields in = {0xabcdef01u, ptr, size, aux}, out;
    size_t bytes = mt_wire_event_encode(&room.rec, &in);
    CHECK_EQ_U(bytes, want_bytes);
    CHECK_EQ_U(room.rec.sub, want_bytes > MT_WIRE_CELL ? MT_EVENT_WIDE : 0);
    mt_wire_event_decode(&room.rec, &out);
    CHECK_EQ_U(out.stack_id, in.stack_id);
    CHECK_EQ_U(out.ptr, ptr);
    CHECK_EQ_U(out.size, size);
    CHECK_EQ_U(out.aux, aux);
}

TEST(wire_event_forms_and_sequence_numbers)
{
    const uint64_t top = (1ull << 48) - 1;
    roundtrip(0x7f0012345670ull, 32, 0, MT_WIRE_CELL);
    roundtrip(top, top, 0, MT_WIRE_CELL);
    roundtrip(0, 0, 0, MT_WIRE_CELL);
    roundtrip(top + 1, 16, 0, sizeof(struct mt_wire_event_wide));
    roundtrip(0x1000, top + 1, 0, sizeof(struct mt_wire_event_wide));
    roundtrip(0x1000, 64, 0x2000, sizeof(struct mt_wire_event_wide));
    roundtrip(~0ull, ~0ull, ~0ull, sizeof(struct mt_wire_event_wide));
    /* Ahead of, at and behind the expected number, across a 2^32 boundary. */
    const uint64_t expected = (5ull << 32) - 3;
    for (int64_t d = -1000; d <= 1000; d++) {
        uint64_t seq = expected + (uint64_t)d;
        CHECK_EQ_U(mt_wire_seq((uint32_t)seq, expected), seq);
    }
    CHECK_EQ_U(mt_wire_seq((uint32_t)(expected + (1ull << 31) - 1), expected), expected + (1ull << 31) - 1);
    CHECK_EQ_U(mt_wire_seq((uint32_t)(expected - (1ull << 31)), expected), expected - (1ull << 31));
}

TEST_MAIN()
