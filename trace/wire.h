/* The wire between a traced process (libmtrace.so, the producer) and the collector
 * (mtrace-run): the one contract both sides build against. Everything here is shared
 * memory layout or socket message layout; changing it means changing MT_WIRE_VERSION.
 *
 * Transport, and why:
 * - One Unix socket (SOCK_SEQPACKET; address in MTRACE_SOCKET, '@' prefix = abstract
 *   namespace) per process tree. Each traced process connects once (again in a forked
 *   child, again after exec on the inherited connection: see "Lifetime" below) and sends
 *   MT_MSG_HELLO with its process area attached (SCM_RIGHTS); the collector answers
 *   MT_MSG_HELLO_REPLY (accept or reject: children not followed, executables skipped).
 *   EOF is how the collector learns that a process ended, even by SIGKILL: the kernel
 *   closes the socket.
 * - Events travel through shared memory, never through the socket: each thread owns one
 *   ring (a memfd, sent once with MT_MSG_RING) and writes fixed-size records with no lock
 *   and no system call. Because the rings are shared memory held open by the collector,
 *   every record published before the process died (abort, SIGSEGV, SIGKILL, _exit) is
 *   still readable afterwards: nothing is lost.
 * - Order: every record that belongs to the process's event stream takes a sequence number
 *   from one counter in the process area (mt_wire_proc.next_seq) after its ring space is
 *   secured, so sequence numbers are dense and the collector merges the rings by them.
 *   (While the process has one ring the increment is not a locked instruction; the second
 *   ring switches it to one: trace/ring.c.) A free takes its number before the block is released and an allocation after it
 *   succeeded, so a reused address is always seen freed before it is handed out again.
 *   A gap in the numbers means a record is being written right now: the collector waits
 *   for it while the process lives and skips it after EOF.
 * - Call stacks are deduplicated in the process, in a lock-free hash table that lives in
 *   the process area (mt_wire_stacks), so an event carries a 4-byte stack id, not 64
 *   addresses. The collector reads the stacks' return addresses straight from that shared
 *   memory and symbolizes them itself (libdw), out of the program.
 *
 * Lifetime: a connection is never closed while a descendant might still connect. Before a
 * fork the parent opens the child's connection (the child inherits it and sends its HELLO
 * on it), and the connection is not close-on-exec: its descriptor number travels in
 * MTRACE_CONN_FD, and an exec'd image sends its HELLO on the inherited connection, which
 * tells the collector exactly that the old image was replaced (end_reason `exec`). The
 * collector ends when no connection is open and none is pending. mtrace-run opens the
 * first connection itself before it starts the program; a plain LD_PRELOAD run without
 * MTRACE_SOCKET makes its own listening socket, starts `mtrace-run --collector-fd N -o OUT`
 * detached with that socket inherited, and connects (the backlog holds the connection
 * until the collector accepts it: no race, no waiting).
 *
 * Sizes: every record is one or more cells of MT_WIRE_CELL (32) bytes. A malloc or free is
 * one cell (struct mt_wire_event); an event with an aux value (realloc's old pointer, an
 * alignment, a region) or a pointer or size beyond 48 bits takes two
 * (struct mt_wire_event_wide). Small cells halve the memory a traced call writes and the
 * collector reads. */
#ifndef MT_TRACE_WIRE_H
#define MT_TRACE_WIRE_H

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>

#include "event.h"

#define MT_WIRE_VERSION 4
/* Fields written by different sides (or hot, contended counters) get cache lines of their own. */
#define MT_WIRE_ALIGN64 __attribute__((aligned(64)))
#define MT_WIRE_MAGIC 0x6d747277u /* "mtrw" */

/* ---- socket messages (producer -> collector unless said otherwise) ----------------------- */

enum mt_msg_type {
    MT_MSG_HELLO = 1,       /* + SCM_RIGHTS: the process area memfd */
    MT_MSG_HELLO_REPLY = 2, /* collector -> producer */
    MT_MSG_RING = 3,        /* + SCM_RIGHTS: a new thread ring memfd */
    MT_MSG_GOODBYE = 4,     /* the process finished its exit records; see mt_msg_hello_reply */
    MT_MSG_BLOCK_QUERY = 5, /* a heap error: where was this block allocated and freed? */
    MT_MSG_BLOCK_INFO = 6,  /* collector -> producer: the answer, as report lines */
};

struct mt_msg_head {
    uint32_t magic;   /* MT_WIRE_MAGIC */
    uint16_t version; /* MT_WIRE_VERSION */
    uint16_t type;    /* enum mt_msg_type */
};

/* Longest executable path and argument block a HELLO carries (argv beyond is cut; the
 * flag MT_HELLO_ARGV_TRUNCATED says so). */
#define MT_WIRE_PATH_MAX 1024
#define MT_WIRE_ARGV_MAX 8192

enum mt_hello_flags {
    MT_HELLO_ARGV_TRUNCATED = 1u << 0,
    MT_HELLO_FORKED = 1u << 1,      /* a fork child of a traced process (not an exec image) */
    MT_HELLO_SPAWNED_COLLECTOR = 1u << 2, /* this process started the collector itself
                                             (plain LD_PRELOAD use): it is the root */
};

struct mt_msg_hello {
    struct mt_msg_head head;
    int32_t pid;
    int32_t ppid;
    uint32_t flags;          /* enum mt_hello_flags */
    uint32_t argv_len;       /* bytes used in argv */
    uint64_t start_mono_ns;  /* CLOCK_MONOTONIC when the process (image) started tracing */
    uint64_t start_real_ns;  /* CLOCK_REALTIME at the same moment */
    uint64_t proc_area_size; /* bytes of the process area memfd to map */
    char exe[MT_WIRE_PATH_MAX];  /* NUL-terminated /proc/self/exe target */
    char argv[MT_WIRE_ARGV_MAX]; /* the arguments, each NUL-terminated, argv_len bytes */
};

enum mt_hello_verdict {
    MT_HELLO_REJECT = 0, /* do not trace this process (it runs untraced, allocator only) */
    MT_HELLO_ACCEPT = 1,
};

struct mt_msg_hello_reply {
    struct mt_msg_head head;
    uint32_t verdict;        /* enum mt_hello_verdict */
    /* 1: at exit, after the last records, send MT_MSG_GOODBYE, shut the socket down for
     * writing and block reading it until the collector closes it, which it does once the
     * trace file is final. Set for the root of a plain LD_PRELOAD run so that the trace is
     * complete when the program returns. */
    uint32_t wait_at_exit;
    uint64_t trace_start_mono_ns; /* the trace's time origin (informational) */
};

struct mt_msg_ring {
    struct mt_msg_head head;
    uint32_t ring_bytes; /* total size of the memfd to map */
    int32_t tid;
};

/* Sent on a heap error, before the report is finished and the process aborts: the collector
 * first consumes this process's records up to `upto_seq` (the error's own record), then
 * answers from its live set and its memory of recently freed blocks. The producer waits
 * for the answer a bounded time (the collector may be gone). */
struct mt_msg_block_query {
    struct mt_msg_head head;
    uint64_t ptr;
    uint64_t upto_seq;
};

#define MT_WIRE_INFO_MAX 4096
struct mt_msg_block_info {
    struct mt_msg_head head;
    uint32_t found; /* 0: the collector knows nothing of this block */
    uint32_t len;   /* bytes of text: symbolized "allocated at" / "freed at" lines */
    char text[MT_WIRE_INFO_MAX];
};

/* ---- the process area: one memfd per traced process (image) ------------------------------- */

/* Geometry of the stack store. Sparse memfd: only touched pages cost memory. */
#define MT_WIRE_STACK_SLOTS (1u << 20)  /* hash slots (power of two); load stays < 1/2 */
#define MT_WIRE_STACKS_MAX (1u << 19)   /* distinct stacks per process */
#define MT_WIRE_FRAMES_MAX (1u << 25)   /* return addresses stored in total (256 MiB) */
#define MT_WIRE_DEPTH_MAX 256            /* matches MTRACE_DEPTH's maximum */
/* Room for the allocator's small size classes in the process area (it has 56; the
 * spare entries let it grow without a wire version change). */
#define MT_WIRE_SMALL_CLASSES_MAX 64

/* One stored stack. Written completely before its id is published in a hash slot. */
struct mt_wire_stack {
    uint64_t hash;         /* of the addresses; never 0 */
    uint32_t frames_at;    /* index of its first address in mt_wire_proc_frames() */
    uint32_t depth;        /* addresses, innermost (the caller of malloc) first */
};

struct mt_wire_proc {
    uint32_t magic;   /* MT_WIRE_MAGIC */
    uint32_t version; /* MT_WIRE_VERSION */
    uint64_t area_size;
    /* The process's event stream order: fetch_add by every ordered record. */
    _Atomic uint64_t next_seq MT_WIRE_ALIGN64;
    /* Events dropped because a ring was full (MTRACE_DROP=1); never written otherwise. */
    _Atomic uint64_t dropped MT_WIRE_ALIGN64;
    /* Calls made while the recorder itself was busy on the same thread in a section that
     * cannot nest (creating a ring, taking a snapshot, the exit scan): served, not
     * recorded. The trace reports the count; it is 0 in normal runs. */
    _Atomic uint64_t unrecorded;
    /* Times a thread found its ring full and had to wait for the collector to consume
     * (wait mode), and the monotonic ns it spent waiting: 0 when the program never waited
     * on the collector. Written on the waiting path only. */
    _Atomic uint64_t ring_waits;
    _Atomic uint64_t ring_wait_ns;
    /* Times a thread's full ring was replaced by one twice as big (MTRACE_RING_MAX). */
    _Atomic uint64_t ring_grows;
    /* Stack store: ids 1.. (0 = no stack). next_stack and next_frame reserve space
     * (fetch_add); a slot holds (hash32 << 32 | id) once the stack is complete. */
    _Atomic uint32_t next_stack MT_WIRE_ALIGN64;
    _Atomic uint32_t next_frame;
    _Atomic uint32_t stacks_full; /* the store ran out: later new stacks get id 0 */
    uint32_t page_size;
    /* 1: records' `ts` are TSC ticks (the collector converts them to CLOCK_MONOTONIC ns
     * with its own calibration: the TSC is one clock for the whole machine); 0: they are
     * CLOCK_MONOTONIC ns (no trusted TSC). */
    uint32_t ts_ticks;
    uint32_t small_class_count;
    uint32_t small_classes[MT_WIRE_SMALL_CLASSES_MAX]; /* the allocator's small block sizes, for meta */
    /* Offsets of the arrays from the start of the area. */
    uint64_t slots_at;  /* _Atomic uint64_t[MT_WIRE_STACK_SLOTS] */
    uint64_t stacks_at; /* struct mt_wire_stack[MT_WIRE_STACKS_MAX], index = id */
    uint64_t frames_at; /* uint64_t[MT_WIRE_FRAMES_MAX] */
};

/* ---- rings: one memfd per thread ----------------------------------------------------------- */

#define MT_WIRE_CELL 32u

struct mt_wire_ring {
    uint32_t magic;   /* MT_WIRE_MAGIC */
    uint32_t version;
    uint32_t cells;   /* a power of two; cell i lives at mt_wire_ring_cell(ring, i % cells) */
    int32_t tid;
    char name[16];    /* the thread's name when the ring was made (may be empty) */
    /* 1 when the thread is gone (its TLS destructor ran) or moved to a bigger ring: after
     * draining, the collector may unmap the ring. A late event of that thread opens a new
     * ring. */
    _Atomic uint32_t closed;
    /* Producer: cells published (release store after the records are complete). */
    _Atomic uint64_t head MT_WIRE_ALIGN64;
    /* Collector: cells consumed (release store once copied out). */
    _Atomic uint64_t tail MT_WIRE_ALIGN64;
    /* Producer sets it before waiting on `tail` with a futex (ring full, wait mode); the
     * collector wakes `tail` (FUTEX_WAKE on its low 32 bits) after consuming when set. */
    _Atomic uint32_t waiting;
    /* Events this thread dropped (drop mode). */
    _Atomic uint64_t dropped;
};

/* Cells start at this offset in the ring memfd. */
#define MT_WIRE_RING_HEADER 256u

/* ---- records --------------------------------------------------------------------------------
 * Every record starts with mt_wire_rec and occupies `cells` consecutive cells (which may
 * wrap around the end of the ring: cells are copied one by one). `seq` orders the record in
 * its process's stream; `ts` is when it happened, in the unit mt_wire_proc.ts_ticks names. */

enum mt_rec_kind {
    MT_REC_EVENT = 1,      /* struct mt_wire_event or mt_wire_event_wide: one malloc-family call (event.h ops) */
    MT_REC_SNAPSHOT = 2,   /* struct mt_wire_snapshot + class and bucket arrays */
    MT_REC_MARK = 3,       /* struct mt_wire_text: mt_trace_mark(label) */
    MT_REC_ERROR = 4,      /* struct mt_wire_error + detail text */
    MT_REC_LEAKED = 5,     /* struct mt_wire_leaked: blocks the exit scan found unreachable */
    MT_REC_SCAN_DONE = 6,  /* struct mt_wire_scan_done: the exit scan finished */
    MT_REC_EXIT = 7,       /* struct mt_wire_exit: exit() or _exit() was called */
    MT_REC_PAUSE = 8,      /* mt_trace_pause(): events stop until MT_REC_RESUME */
    MT_REC_RESUME = 9,
    MT_REC_PAD = 10,       /* filler; skip (no seq) */
    /* Holds a sequence number and records nothing: a realloc takes its number before the
     * allocator may release the old block (so that address cannot be seen reused first)
     * and learns only afterwards that it failed. The consumer skips it like an event
     * that changes nothing; it is not an event and not counted. (Added compatibly.) */
    MT_REC_SKIP = 11,
};

/* 16 bytes. `seq` holds the low 32 bits of the record's sequence number: the collector,
 * which merges the stream in order, knows the rest (every record it has not consumed yet is
 * within 2^31 numbers of the next one it expects: the rings cannot hold more). */
struct mt_wire_rec {
    uint8_t kind;   /* enum mt_rec_kind */
    uint8_t cells;  /* cells of this record, >= 1 */
    uint8_t op;     /* MT_REC_EVENT: enum mt_op; MT_REC_ERROR: enum mt_heap_error_kind */
    uint8_t sub;    /* MT_REC_EVENT: MT_EVENT_WIDE or 0; MT_REC_ERROR: enum mt_api; MT_REC_EXIT: enum mt_exit_how */
    uint32_t seq;   /* low 32 bits of the sequence number */
    uint64_t ts;    /* TSC ticks or CLOCK_MONOTONIC ns: mt_wire_proc.ts_ticks */
};
_Static_assert(sizeof(struct mt_wire_rec) == 16, "the record header is 16 bytes");

/* The full 64-bit sequence number of a record whose low bits are `low`, given the one the
 * reader expects next. */
static inline uint64_t mt_wire_seq(uint32_t low, uint64_t expected)
{
    return expected + (uint64_t)(int64_t)(int32_t)(low - (uint32_t)expected);
}

#define MT_EVENT_WIDE 1u /* mt_wire_rec.sub of an event: the two-cell form */
/* Pointers and sizes the one-cell form holds: user-space addresses on x86-64 and aarch64
 * (48-bit virtual addresses) and any size of a block that exists. */
#define MT_WIRE_EVENT_BITS 48
#define MT_WIRE_EVENT_MASK ((1ull << MT_WIRE_EVENT_BITS) - 1)

/* One cell: an event without aux whose pointer and size fit 48 bits (malloc, calloc,
 * free: almost every event). */
struct mt_wire_event {
    struct mt_wire_rec rec;
    uint32_t stack_id;    /* process-local stack id (0: none) */
    uint32_t size_low;    /* size bits 0..31 */
    uint64_t ptr_size_high; /* ptr bits 0..47, then size bits 32..47 */
};
_Static_assert(sizeof(struct mt_wire_event) == MT_WIRE_CELL, "a compact event is one cell");

/* Two cells: any event (sub = MT_EVENT_WIDE). */
struct mt_wire_event_wide {
    struct mt_wire_rec rec;
    uint32_t stack_id;
    uint32_t pad;
    uint64_t ptr;  /* new block (free: the freed block; region_pop: 0) */
    uint64_t size; /* as docs/trace-format.md's operations table */
    uint64_t aux;  /* as docs/trace-format.md (realloc: old pointer, raw) */
};
_Static_assert(sizeof(struct mt_wire_event_wide) <= 2 * MT_WIRE_CELL, "a wide event is two cells");

/* An event's fields, whichever form it was written in. */
struct mt_wire_event_fields {
    uint32_t stack_id;
    uint64_t ptr, size, aux;
};

/* Write an event's body into `rec` (room for an mt_wire_event_wide, header already set but
 * for `sub`); returns its bytes: the one-cell form when it can hold the fields. */
static inline size_t mt_wire_event_encode(struct mt_wire_rec *rec, const struct mt_wire_event_fields *f)
{
    if (f->aux == 0 && (f->ptr | f->size) <= MT_WIRE_EVENT_MASK) {
        struct mt_wire_event *ev = (struct mt_wire_event *)rec;
        rec->sub = 0;
        ev->stack_id = f->stack_id;
        ev->size_low = (uint32_t)f->size;
        ev->ptr_size_high = f->ptr | (f->size >> 32) << MT_WIRE_EVENT_BITS;
        return sizeof *ev;
    }
    struct mt_wire_event_wide *wide = (struct mt_wire_event_wide *)rec;
    rec->sub = MT_EVENT_WIDE;
    wide->stack_id = f->stack_id;
    wide->pad = 0;
    wide->ptr = f->ptr;
    wide->size = f->size;
    wide->aux = f->aux;
    return sizeof *wide;
}

/* Records built in registers (the one-cell event path: trace/ring.c) are written as whole
 * little-endian words: assembling one from byte and word stores in memory and then copying
 * it stalls the copy's loads on store forwarding. x86-64 and aarch64 are little-endian. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__, "records are written as little-endian words");

/* A record's first 8 bytes: kind, cells, op, sub, then the low 32 bits of seq. */
static inline uint64_t mt_wire_rec_word(uint8_t kind, uint8_t cells, uint8_t op, uint8_t sub, uint64_t seq)
{
    return (uint64_t)kind | (uint64_t)cells << 8 | (uint64_t)op << 16 | (uint64_t)sub << 24 |
           (uint64_t)(uint32_t)seq << 32;
}

/* The last 16 bytes of a one-cell event (stack_id, size_low, ptr_size_high), or false when
 * the fields need the two-cell form. */
static inline int mt_wire_event_words(const struct mt_wire_event_fields *f, uint64_t words[2])
{
    if (f->aux != 0 || (f->ptr | f->size) > MT_WIRE_EVENT_MASK)
        return 0;
    words[0] = (uint64_t)f->stack_id | (uint64_t)(uint32_t)f->size << 32;
    words[1] = f->ptr | (f->size >> 32) << MT_WIRE_EVENT_BITS;
    return 1;
}

/* The fields of an event record (whole: both cells of a wide one). */
static inline void mt_wire_event_decode(const struct mt_wire_rec *rec, struct mt_wire_event_fields *f)
{
    if (rec->sub == MT_EVENT_WIDE) {
        const struct mt_wire_event_wide *wide = (const struct mt_wire_event_wide *)rec;
        f->stack_id = wide->stack_id;
        f->ptr = wide->ptr;
        f->size = wide->size;
        f->aux = wide->aux;
        return;
    }
    const struct mt_wire_event *ev = (const struct mt_wire_event *)rec;
    f->stack_id = ev->stack_id;
    f->ptr = ev->ptr_size_high & MT_WIRE_EVENT_MASK;
    f->size = (uint64_t)ev->size_low | (ev->ptr_size_high >> MT_WIRE_EVENT_BITS) << 32;
    f->aux = 0;
}

/* Snapshot: the allocator's state, then `class_count` (block_size, live, capacity) triples
 * for the small classes and MT_WIRE_SNAP_BUCKETS (live) counts of medium and large blocks
 * by power-of-two usable size (bucket b: (2^(b-1), 2^b]), in the cells that follow. */
#define MT_WIRE_SNAP_BUCKETS 64
struct mt_wire_snapshot {
    struct mt_wire_rec rec;
    uint64_t mapped, committed, in_use, free_bytes, largest_free, live_blocks;
    uint32_t class_count;
    uint32_t pad;
    /* followed by: struct mt_wire_snap_class classes[class_count];
     *              uint64_t bucket_live[MT_WIRE_SNAP_BUCKETS]; */
};
struct mt_wire_snap_class {
    uint32_t block_size;
    uint32_t live;
    uint32_t capacity;
};

/* Mark label or error detail: `len` bytes of text follow the fixed part (no NUL). */
#define MT_WIRE_TEXT_MAX 480
struct mt_wire_text {
    struct mt_wire_rec rec;
    uint32_t len;
    uint32_t stack_id; /* where the mark was set (0: none) */
    /* char text[len]; */
};

struct mt_wire_error {
    struct mt_wire_rec rec; /* op = kind, sub = api */
    uint64_t ptr;
    uint64_t size;
    uint32_t len;           /* detail text bytes that follow */
    uint32_t stack_id;      /* where it was detected */
    /* char detail[len]; */
};

/* Up to MT_WIRE_LEAKED_PER_REC unreachable block addresses per record. Records of one scan
 * share no seq order among themselves beyond the stream order; they come between the
 * process's last event and its MT_REC_SCAN_DONE. */
#define MT_WIRE_LEAKED_PER_REC 60
struct mt_wire_leaked {
    struct mt_wire_rec rec;
    uint32_t count;
    uint32_t pad;
    /* uint64_t ptr[count]; */
};

struct mt_wire_scan_done {
    struct mt_wire_rec rec;
    uint64_t live_blocks; /* blocks the scan saw live (traced or not) */
    uint64_t leaked_blocks;
};

enum mt_exit_how {
    MT_EXIT_NORMAL = 1, /* exit() or return from main: atexit handlers ran */
    MT_EXIT_IMMEDIATE = 2, /* _exit()/_Exit(): no leak scan */
};

struct mt_wire_exit {
    struct mt_wire_rec rec; /* sub = enum mt_exit_how */
    int32_t code;
    uint32_t pad;
};

#endif
