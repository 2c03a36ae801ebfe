/* The hardened debug allocator (see debug.h for what each check catches).
 *
 * State: what the layer knows of each block lives in one of two places. Small blocks that
 * are not guarded (nearly all of them) have a record per slot beside their segment
 * (debug_slots.c): found by arithmetic, changed with plain atomic stores, no lock. Every
 * other block (medium, large, guarded, aligned blocks outside the slabs) is in a table:
 * 64 stripes, each a lock and an open-addressing table, a block's stripe chosen by a hash
 * of its address. Those blocks are 8 KiB and more or cost a mapping each, so a probe is
 * small next to their fills.
 *
 * Per thread (struct debug_thread), without a lock: a quarantine FIFO bounded in bytes
 * and blocks, small enough to stay in the core's cache; a randomization window of a few
 * blocks per size class; a stash per class of blocks verified on leaving the quarantine,
 * which refill the windows. Blocks bigger than a quarter of the per-thread budget, and
 * whatever an exiting thread still holds, go to one shared FIFO with one byte budget
 * (per-stripe budgets would starve: an address released by one stripe is reused and
 * freed into that same stripe again). Lock order: shared quarantine, then a stripe; the
 * allocator underneath never calls back into this layer.
 *
 * A block is owned by whoever moved it out of the live state: the free that marked it
 * quarantined poisons it and queues it, the eviction that takes it off the queue verifies
 * and releases it; a second free of it in between sees it quarantined and reports. */
#include "debug.h"

#include <errno.h>
#include <pthread.h>
#include <string.h>

#include "../common/format.h"
#include "../common/lock.h"
#include "../common/options.h"
#include "../common/platform.h"
#include "alloc.h"
#include "debug_guard.h"
#include "debug_slots.h"
#include "harden.h"
#include "medium.h"
#include "small.h"
#include "tunables.h"

struct mt_debug_config mt_debug_config;

/* A power of two; enough that 8 threads seldom share a lock. */
#define STRIPES 64
#define TABLE_MIN 256
/* A table is rebuilt at half full (entries and tombstones), to at most 1/TABLE_SPARSITY
 * full, and shrunk when its entries fall below 1/TABLE_SHRINK of it. */
#define TABLE_SPARSITY 4
#define TABLE_SHRINK 16
#define RING_MIN 256
/* Default quarantine per thread when MTRACE_DEBUG is on and MTRACE_QUARANTINE is auto:
 * what stays in a core's L2 cache (2 MiB on the test machine) beside the program's own
 * data, so a block is verified and reused while its lines are still there. The 16 MiB
 * shared FIFO this replaced made every free verify and every allocation reuse a block
 * gone cold long ago: 10 to 25 times glibc's time on the small-block benchmarks. */
#define QUARANTINE_DEFAULT ((size_t)256 << 10)
/* Blocks a thread's quarantine holds at most (a power of two: a ring of this many
 * entries, 24 KiB): bounds the ring, and the time a thread's exit takes to hand it over. */
#define LOCAL_ENTRIES 1024
/* A block bigger than 1/LOCAL_BIG_SHARE of the per-thread budget goes to the shared FIFO,
 * so one big block does not flush a thread's queue of small ones. */
#define LOCAL_BIG_SHARE 4
/* The shared FIFO (big blocks, and what exiting threads leave) holds this many times the
 * per-thread budget. */
#define SHARED_FACTOR 16

_Static_assert(MT_SMALL_MAX < ((size_t)1 << (64 - MT_DEBUG_SITE_BITS)), "a slot record holds a small block's size");

enum { SLOT_EMPTY = 0, SLOT_TOMBSTONE = 1 };
enum block_state { BLOCK_LIVE = MT_DEBUG_LIVE, BLOCK_QUARANTINED = MT_DEBUG_QUARANTINED };

/* A block as the checks and reports see it: a table entry, or a copy of a slot record. */
struct debug_block {
    uintptr_t ptr; /* user pointer; SLOT_EMPTY / SLOT_TOMBSTONE for free table slots */
    size_t size;   /* requested size */
    const void *alloc_site;
    const void *free_site;
    uint8_t *map_base; /* guarded blocks: their own mapping (data pages + guard page) */
    size_t map_size;
    uint8_t state;
    uint8_t guarded;
};

struct stripe {
    mt_lock_t lock;
    struct debug_block *table;
    size_t table_cap;  /* power of two */
    size_t table_used; /* live + quarantined + tombstones */
    size_t table_entries; /* live + quarantined */
} MT_ALIGNED(MT_CACHE_LINE);

/* Evicted blocks are released in batches of at most this many per free, outside the
 * quarantine lock. */
#define EVICT_BATCH 16

struct quarantined {
    uintptr_t ptr;
    size_t size;
    struct mt_debug_slot *slot; /* a small block's record; NULL for a block of the table */
    unsigned cls;               /* a small block's size class (its stash when released) */
};

/* Eviction verifies blocks freed 16 MiB of frees ago, long gone from the caches: the
 * queue says which ones come next, so their first lines and records are fetched this
 * many evictions ahead (on churn, half the time of an eviction was those misses). */
#define PREFETCH_AHEAD 16

static struct {
    mt_lock_t lock;
    struct quarantined *ring; /* FIFO; cap is a power of two (RING_MIN, doubled) */
    size_t cap;
    size_t head;
    size_t count;
    size_t bytes;
} quarantine;

static struct stripe stripes[STRIPES] MT_BIG_BSS;

/* Times a byte: that byte in every byte of a word. */
#define BYTES_NONZERO 0x0101010101010101ull

/* What a big quarantined block must still read as (poison_broken_in_big). */
#define POISON_CHUNK 4096
static uint8_t poison_chunk[POISON_CHUNK] MT_BIG_BSS; /* filled by mt_debug_init when the layer is on */
static const uint8_t zero_chunk[POISON_CHUNK];


static MT_TLS uint64_t rng_state;
/* For threads without a struct debug_thread (exiting ones): the guard countdown
 * (want_guard). */
static MT_TLS uint32_t guard_countdown;

/* Random slot choice: a small block is taken at random among the last RANDOM_WINDOW
 * blocks the allocator handed out for its class (kept aside, held in their records as
 * MT_DEBUG_WINDOW). Which block comes next cannot be predicted, yet the blocks are the
 * allocator's most recently freed ones, still in the cache; picking a random free slot
 * of the whole page, as before, scattered the program's objects over 64 KiB pages and
 * bypassed the thread cache (a popcount walk of the page's bitmaps per allocation). */
#define RANDOM_WINDOW 8
/* A block leaving a thread's quarantine goes to its class's stash, not back to the
 * allocator, while the stash has room: it stays held, so the cycle free -> quarantine ->
 * stash -> window -> malloc costs no atomic read-modify-write on the records' page counts
 * and no trip through the allocator (those were half of debug mode's time on a tight
 * malloc/free loop). Bounded so a thread holds at most this many blocks per class. */
#define STASH_ENTRIES 16

struct window_entry {
    void *block;
    struct mt_debug_slot *slot;
};

/* What a thread keeps for itself: its own quarantine, a FIFO only its thread touches (a
 * free queues and evicts without a lock or an atomic), and its randomization windows.
 * Mapped at the thread's first use (too big for static TLS); at thread exit the
 * quarantine's blocks move to the shared FIFO and the windows' go back to the allocator.
 * Nothing else reads it: the checks at exit and in mt_heap_check() find quarantined
 * blocks through their records. */
struct debug_thread {
    size_t head, count, bytes; /* the quarantine ring */
    struct quarantined ring[LOCAL_ENTRIES];
    struct window_entry window[MT_SMALL_CLASSES][RANDOM_WINDOW];
    /* Small blocks this thread released from its quarantine, verified and still held
     * (MT_DEBUG_WINDOW), refilling the windows before the allocator does (LIFO). */
    struct window_entry stash[MT_SMALL_CLASSES][STASH_ENTRIES];
    uint8_t stash_count[MT_SMALL_CLASSES];
    /* The allocation path's per-thread counters, here beside the stash counts it reads
     * anyway rather than in thread-local variables of their own (each of those cost a
     * load of its offset from the GOT). Threads without this state use the ones below. */
    uint64_t pick_bits;
    uint32_t guard_countdown;
};
static MT_TLS struct debug_thread *debug_thread;
static MT_TLS bool debug_thread_closed; /* this thread's exit destructor ran */
static pthread_key_t debug_thread_key;
static bool debug_thread_key_made;

static MT_NOINLINE uint64_t random_seed(void)
{
    return mt_mix64(mt_secrets.canary_key ^ (uint64_t)mt_os_gettid() ^ mt_os_ticks()) | 1;
}

/* One xorshift step of a nonzero state. */
MT_INLINE uint64_t xorshift_step(uint64_t x)
{
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    return x;
}

MT_INLINE uint64_t next_random(void)
{
    uint64_t x = rng_state;
    if (MT_UNLIKELY(x == 0))
        x = random_seed();
    x = xorshift_step(x);
    rng_state = x;
    return x;
}

static void debug_thread_exit(void *arg);
static struct debug_thread *debug_thread_get(void);

/* ---- the hot path's two variants ----------------------------------------------------------- */

/* The malloc and free of small blocks are compiled twice (debug_malloc_fast and the
 * others at the end of the file): `fast` is a constant in each copy. The fast copy takes
 * the options of plain MTRACE_DEBUG=1 as constants (every check on, poison 0xdf, fills up
 * to at least MT_SMALL_MAX bytes) and, on x86-64, is compiled for AVX2 so its fills,
 * poison and checks move 32 bytes an instruction; mt_debug_init picks it when the options
 * and the CPU allow (mt_debug_entries, which every caller goes through), the generic copy
 * serves every other case. The option tests were 30 of the 480 instructions of a
 * malloc/free pair, the byte work at 16 bytes an instruction 90. Each fast entry is a
 * lean common case that branches once to the full copy (debug_malloc_fast_full,
 * debug_free_fast_full). */
#if defined(__x86_64__)
#define FAST_TARGET __attribute__((target("avx2")))
#define FAST_WIDE true
#else
#define FAST_TARGET
#define FAST_WIDE false
#endif

static void *debug_malloc_generic(size_t size, const void *site);
static void *debug_malloc_fast(size_t size, const void *site);
static void debug_free_generic(void *ptr, enum mt_api api, const void *site);
static void debug_free_fast(void *ptr, enum mt_api api, const void *site);
struct mt_debug_entries mt_debug_entries;

/* An option as the hot path sees it: its value with MTRACE_DEBUG=1 in the fast copy. */
#define HOT_ON(fast, option) ((fast) || mt_debug_config.option)
#define HOT_ZERO_ON_FREE(fast) (!(fast) && mt_debug_config.zero_on_free)

MT_STARTUP bool mt_debug_init(void)
{
    bool debug = mt_option_bool(MT_OPT_DEBUG);
    struct mt_debug_config *c = &mt_debug_config;
    c->canary = mt_option_bool_or(MT_OPT_CANARY, debug);
    c->guard = mt_option_bool_or(MT_OPT_GUARD, debug);
    c->guard_sample = (unsigned)mt_option_int(MT_OPT_GUARD_SAMPLE);
    c->poison = mt_option_bool_or(MT_OPT_POISON, debug);
    c->zero_on_free = mt_option_bool(MT_OPT_ZERO_ON_FREE);
    long long q = mt_option_int(MT_OPT_QUARANTINE);
    c->quarantine = q < 0 ? (debug ? QUARANTINE_DEFAULT : 0) : (size_t)q;
    c->randomize = mt_option_bool_or(MT_OPT_RANDOMIZE, debug);
    c->fill = mt_option_bool_or(MT_OPT_FILL, debug);
    c->fill_max = (size_t)mt_option_int(MT_OPT_FILL_MAX);
    bool fill_is_poison = c->poison && !c->zero_on_free;
    c->fill_byte = fill_is_poison ? MT_DEBUG_POISON_BYTE : MT_DEBUG_FILL_BYTE;
    c->fill_pattern = c->fill_byte * BYTES_NONZERO;
    c->fill_clean_bit = fill_is_poison ? MT_DEBUG_VERIFIED : 0;
    /* Zeroing freed blocks alone needs no block table: the interposer does it with a
     * memset per free (MT_MODE_ZERO), so it is cheap enough to leave on in production. */
    c->enabled = debug || c->canary || c->guard || c->poison || c->quarantine || c->randomize || c->fill;
    /* Only when used: filling it made two pages of .bss resident in every process (and
     * the CPU test faults in libgcc's code). */
    if (c->enabled) {
        /* The options the fast copy of the hot path takes as constants, and the CPU it is
         * compiled for. */
        bool hot_fast = c->canary && c->guard && c->poison && !c->zero_on_free && c->randomize && c->fill &&
                        c->fill_max >= MT_SMALL_MAX && (!FAST_WIDE || mt_os_cpu_has_avx2());
        mt_debug_entries.malloc = hot_fast ? debug_malloc_fast : debug_malloc_generic;
        mt_debug_entries.free = hot_fast ? debug_free_fast : debug_free_generic;
        memset(poison_chunk, MT_DEBUG_POISON_BYTE, sizeof poison_chunk);
        debug_thread_key_made = pthread_key_create(&debug_thread_key, debug_thread_exit) == 0;
    }
    return c->enabled;
}

/* Small blocks keep their records beside their slots; a slot-start pointer in a small
 * segment is never in the table. Guarded blocks have mappings of their own (MT_SEG_NONE). */
MT_INLINE bool in_small_segment(const void *ptr)
{
    return mt_segmap_kind(mt_segmap_entry((uintptr_t)ptr)) == MT_SEG_SMALL;
}

static struct debug_block slot_view(const void *ptr, uint64_t alloc, uint64_t state)
{
    struct debug_block b;
    memset(&b, 0, sizeof b);
    b.ptr = (uintptr_t)ptr;
    b.size = mt_debug_size_of(alloc);
    b.alloc_site = mt_debug_site_of(alloc);
    b.free_site = mt_debug_site_of(state);
    b.state = (uint8_t)mt_debug_state_of(state);
    return b;
}

void mt_debug_metadata_ranges(void (*visit)(void *ctx, uintptr_t start, size_t bytes), void *ctx)
{
    for (size_t i = 0; i < STRIPES; i++) {
        mt_lock(&stripes[i].lock);
        if (stripes[i].table)
            visit(ctx, (uintptr_t)stripes[i].table, stripes[i].table_cap * sizeof *stripes[i].table);
        mt_unlock(&stripes[i].lock);
    }
    mt_lock(&quarantine.lock);
    if (quarantine.ring)
        visit(ctx, (uintptr_t)quarantine.ring, quarantine.cap * sizeof *quarantine.ring);
    mt_unlock(&quarantine.lock);
    mt_debug_slots_ranges(visit, ctx);
    mt_debug_guard_ranges(visit, ctx);
}

/* ---- the table of the other blocks ----------------------------------------------------- */

static struct stripe *stripe_of(uintptr_t ptr, uint64_t *hash)
{
    *hash = mt_mix64(ptr);
    return &stripes[*hash & (STRIPES - 1)];
}

static struct debug_block *table_find(struct stripe *s, uintptr_t ptr, uint64_t hash)
{
    if (!s->table_cap)
        return NULL;
    size_t mask = s->table_cap - 1;
    for (size_t i = (hash >> 6) & mask;; i = (i + 1) & mask) {
        struct debug_block *b = &s->table[i];
        if (b->ptr == ptr)
            return b;
        if (b->ptr == SLOT_EMPTY)
            return NULL;
    }
}

/* Rebuild the table without its tombstones, sized for its entries: at most 1/TABLE_SPARSITY
 * full afterwards, so the next rebuild is at least a quarter of the capacity away, and
 * shrunk as well as grown. Doubling at every rebuild kept the largest size a program ever
 * needed for good: freeing 200 MiB of small blocks left 500 MiB of tables resident. */
static bool table_rehash(struct stripe *s)
{
    size_t new_cap = TABLE_MIN;
    while (new_cap < (s->table_entries + 1) * TABLE_SPARSITY)
        new_cap *= 2;
    struct debug_block *table = mt_os_map(new_cap * sizeof *table);
    if (!table)
        return false;
    size_t used = 0;
    for (size_t i = 0; i < s->table_cap; i++) {
        struct debug_block *b = &s->table[i];
        if (b->ptr <= SLOT_TOMBSTONE)
            continue;
        size_t j = (mt_mix64(b->ptr) >> 6) & (new_cap - 1);
        while (table[j].ptr != SLOT_EMPTY)
            j = (j + 1) & (new_cap - 1);
        table[j] = *b;
        used++;
    }
    if (s->table)
        mt_os_unmap(s->table, s->table_cap * sizeof *s->table);
    s->table = table;
    s->table_cap = new_cap;
    s->table_used = used;
    return true;
}

static struct debug_block *table_insert(struct stripe *s, uintptr_t ptr, uint64_t hash)
{
    if ((s->table_used + 1) * 2 > s->table_cap && !table_rehash(s))
        return NULL;
    size_t mask = s->table_cap - 1;
    size_t i = (hash >> 6) & mask;
    while (s->table[i].ptr > SLOT_TOMBSTONE)
        i = (i + 1) & mask;
    if (s->table[i].ptr == SLOT_EMPTY)
        s->table_used++;
    s->table_entries++;
    memset(&s->table[i], 0, sizeof s->table[i]);
    s->table[i].ptr = ptr;
    return &s->table[i];
}

/* ---- canaries and poison ----------------------------------------------------------------- */

static size_t canary_len(const struct debug_block *b)
{
    if (b->guarded) {
        size_t room = (size_t)(b->map_base + b->map_size - mt_os_page_size() - (uint8_t *)b->ptr) - b->size;
        return room < MT_DEBUG_CANARY_BYTES ? room : MT_DEBUG_CANARY_BYTES;
    }
    return mt_debug_config.canary ? MT_DEBUG_CANARY_BYTES : 0;
}

_Static_assert(MT_DEBUG_CANARY_BYTES == 16, "the canary is built and compared as two words");

/* The byte of a word that is last in memory. */
#if __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
#define WITHOUT_LAST_BYTE_IN_MEMORY(x) ((x) >> 8)
#else
#define WITHOUT_LAST_BYTE_IN_MEMORY(x) ((x) << 8)
#endif
/* Odd, so the multiply is a bijection of the keyed address (Fibonacci hashing's constant). */
#define CANARY_SPREAD 0x9e3779b97f4a7c15ull

/* The canary of the block at ptr, as it lies in memory. Every byte is nonzero except the
 * last: the commonest overflow is the off-by-one NUL of strcpy into malloc(strlen(s)),
 * which a zero first byte would let through; the zero at the end still stops a runaway
 * read of an unterminated string within the canary. One multiply of the keyed address
 * per block (written at every allocation, checked at every free: the murmur finalizer it
 * replaced was a chain of two multiplies and three shifts on both paths, and hid the key
 * no better, being a bijection too); a program that reads past its block sees the canary
 * anyway, so the second word need not hide from the first: it is the first rotated by
 * half a word and moved a byte towards its start, its last byte zero (the key added
 * again and the bytes made nonzero a second time were 8 of the 18 instructions of each
 * use, twice per malloc/free pair). */
MT_INLINE void canary_pattern(uintptr_t ptr, uint64_t out[2])
{
    uint64_t key = (mt_secrets.canary_key ^ ptr) * CANARY_SPREAD;
    key ^= key >> 29;
    out[0] = key | BYTES_NONZERO;
    /* A shift, not a mask: the mask was a 64-bit constant to load, on both paths. The
     * other bytes stay nonzero (they are bytes of out[0]). */
    out[1] = WITHOUT_LAST_BYTE_IN_MEMORY(out[0] << 32 | out[0] >> 32);
}

MT_INLINE void canary_write_at(uintptr_t ptr, size_t size, size_t n)
{
    uint64_t pattern[2];
    canary_pattern(ptr, pattern);
    memcpy((uint8_t *)ptr + size, pattern, n);
}

static void canary_write(const struct debug_block *b)
{
    size_t n = canary_len(b);
    if (n)
        canary_write_at(b->ptr, b->size, n);
}

/* The pattern is made again here rather than passed: passing it kept it on the stack of
 * every free. */
static MT_NOINLINE size_t canary_first_change(uintptr_t ptr, size_t size, size_t n)
{
    uint64_t pattern[2];
    canary_pattern(ptr, pattern);
    const uint8_t *expect = (const uint8_t *)pattern, *end = (const uint8_t *)ptr + size;
    for (size_t i = 0; i < n; i++)
        if (end[i] != expect[i])
            return i;
    return SIZE_MAX;
}

/* Whether the whole canary of the block at ptr of `size` bytes is intact. */
MT_INLINE bool canary_intact(uintptr_t ptr, size_t size)
{
    uint64_t pattern[2], found[2];
    canary_pattern(ptr, pattern);
    memcpy(found, (const uint8_t *)ptr + size, sizeof found);
    return ((found[0] ^ pattern[0]) | (found[1] ^ pattern[1])) == 0;
}

/* Offset past the end of the first changed byte of the n-byte canary of the block at ptr
 * of `size` bytes, or SIZE_MAX when intact. */
MT_INLINE size_t canary_broken_in(uintptr_t ptr, size_t size, size_t n)
{
    if (MT_LIKELY(n == MT_DEBUG_CANARY_BYTES && canary_intact(ptr, size)))
        return SIZE_MAX;
    return canary_first_change(ptr, size, n);
}

/* ---- byte work: fill, poison and its check, inline for small blocks ----------------------------- */

/* Sixteen bytes, moved with one unaligned vector load or store (SSE2 on x86-64, NEON on
 * AArch64: the baseline; the fast copy of the hot path moves 32 with AVX2, bytes32
 * below). The libc calls these loops replaced
 * (memset for the fill and the poison, a word loop for the check) were a third of a
 * malloc/free loop's time in debug mode: the blocks are small, the call and its size
 * dispatch cost more than the bytes. */
typedef uint64_t bytes16 __attribute__((vector_size(16)));

/* Below this, fills and poison go inline; from it on, libc's memset (vectorised for the
 * machine at hand, non-temporal for huge sizes). */
#define INLINE_SET_MAX 512

/* The pattern in a vector register, opaque to the optimiser: GCC turns a loop of stores of
 * a known constant back into a memset call, or into `rep stos`, whose start-up alone cost
 * more than a small block's fill. */
#if defined(__x86_64__)
#define OPAQUE_VECTOR(v) __asm__("" : "+x"(v))
#elif defined(__aarch64__)
#define OPAQUE_VECTOR(v) __asm__("" : "+w"(v))
#else
#define OPAQUE_VECTOR(v) __asm__("" : "+m"(v))
#endif

MT_INLINE bytes16 load16(const uint8_t *p)
{
    bytes16 v;
    memcpy(&v, p, sizeof v);
    return v;
}

MT_INLINE void store16(uint8_t *p, bytes16 v)
{
    memcpy(p, &v, sizeof v);
}

/* Sixty-four bytes a round, the rest with stores that overlap what is already set: a
 * store per 16 bytes and a loop test per 64 (a loop test per store was half of the
 * instructions of a fill). */
MT_INLINE void set_small(uint8_t *p, size_t n, uint64_t pattern)
{
    bytes16 v = {pattern, pattern};
    OPAQUE_VECTOR(v);
    if (MT_LIKELY(n >= 64)) {
        for (size_t i = 0; i + 64 < n; i += 64) {
            store16(p + i, v);
            store16(p + i + 16, v);
            store16(p + i + 32, v);
            store16(p + i + 48, v);
        }
        store16(p + n - 64, v);
        store16(p + n - 48, v);
        store16(p + n - 32, v);
        store16(p + n - 16, v);
    } else if (n >= 16) {
        store16(p, v);
        store16(p + n - 16, v);
        if (n > 32) {
            store16(p + 16, v);
            store16(p + n - 32, v);
        }
    } else if (n >= 8) {
        memcpy(p, &pattern, 8);
        memcpy(p + n - 8, &pattern, 8);
    } else {
        for (size_t i = 0; i < n; i++)
            p[i] = (uint8_t)pattern;
    }
}

/* Thirty-two bytes, for the fast copy of the hot path only (`wide` is true only there):
 * compiled for AVX2, one ymm load or store. Moved through pointers, never passed by value
 * (a 32-byte vector argument has another ABI without AVX). Aligned as 16 bytes: a local
 * of 32-byte alignment made GCC realign the stack of the whole function, on every call,
 * even once the local lived in a register. */
typedef uint64_t bytes32 __attribute__((vector_size(32), aligned(16)));

MT_INLINE void store32(uint8_t *p, const bytes32 *v)
{
    memcpy(p, v, sizeof *v);
}

/* *acc |= the 32 bytes at p xor *v. */
MT_INLINE void diff32(bytes32 *acc, const uint8_t *p, const bytes32 *v)
{
    bytes32 x;
    memcpy(&x, p, sizeof x);
    *acc |= x ^ *v;
}

/* As set_small, 32 bytes a store and 128 a round. */
MT_INLINE void set_wide(uint8_t *p, size_t n, uint64_t pattern)
{
    if (MT_UNLIKELY(n < 32)) {
        set_small(p, n, pattern);
        return;
    }
    bytes32 v = {pattern, pattern, pattern, pattern};
    OPAQUE_VECTOR(v);
    if (n > 256) {
        for (size_t i = 0; i + 128 < n; i += 128) {
            store32(p + i, &v);
            store32(p + i + 32, &v);
            store32(p + i + 64, &v);
            store32(p + i + 96, &v);
        }
        store32(p + n - 128, &v);
        store32(p + n - 96, &v);
        store32(p + n - 64, &v);
        store32(p + n - 32, &v);
    } else if (n > 128) {
        /* Without the loop: its one round and test cost as much as the stores. */
        store32(p, &v);
        store32(p + 32, &v);
        store32(p + 64, &v);
        store32(p + 96, &v);
        store32(p + n - 128, &v);
        store32(p + n - 96, &v);
        store32(p + n - 64, &v);
        store32(p + n - 32, &v);
    } else {
        store32(p, &v);
        store32(p + n - 32, &v);
        if (n > 64) {
            store32(p + 32, &v);
            store32(p + n - 64, &v);
        }
    }
}

/* n bytes at p set to `byte`; `wide` only in the fast copy. */
MT_INLINE void set_bytes(void *p, int byte, size_t n, bool wide)
{
    if (MT_LIKELY(n < INLINE_SET_MAX)) {
        if (wide)
            set_wide(p, n, (uint8_t)byte * BYTES_NONZERO);
        else
            set_small(p, n, (uint8_t)byte * BYTES_NONZERO);
    } else {
        memset(p, byte, n);
    }
}

static size_t canary_broken_at(const struct debug_block *b)
{
    size_t n = canary_len(b);
    return n ? canary_broken_in(b->ptr, b->size, n) : SIZE_MAX;
}

/* From this size on, a block's poison is compared with libc's memcmp (vectorised for the
 * machine at hand) against a page of poison; below it, word by word (the call and its
 * setup cost more than the comparison). */
#define POISON_MEMCMP_MIN 512

static MT_NOINLINE size_t poison_broken_in_big(const void *ptr, size_t size)
{
    const uint8_t *expect = mt_debug_config.zero_on_free ? zero_chunk : poison_chunk;
    const uint8_t *p = ptr;
    for (size_t done = 0; done < size; done += POISON_CHUNK) {
        size_t n = size - done < POISON_CHUNK ? size - done : POISON_CHUNK;
        if (memcmp(p + done, expect, n) == 0)
            continue;
        for (size_t i = 0; i < n; i++)
            if (p[done + i] != expect[0])
                return done + i;
    }
    return SIZE_MAX;
}

/* Offset of the first byte of [p, p + size) that is not `expect`. */
static MT_NOINLINE size_t first_other_byte(const uint8_t *p, size_t size, uint8_t expect)
{
    for (size_t i = 0; i < size; i++)
        if (p[i] != expect)
            return i;
    return SIZE_MAX;
}

/* The bytes of [p, p + size), size >= 32, xor `pattern`, or-ed together: as
 * poison_broken_in, 32 bytes a load and 128 a round. */
MT_INLINE uint64_t poison_diff_wide(const uint8_t *p, size_t size, uint64_t pattern)
{
    bytes32 v = {pattern, pattern, pattern, pattern}, acc = {0, 0, 0, 0}, acc2 = {0, 0, 0, 0};
    if (size > 128 && size <= 256) {
        /* Without the loop, as set_wide. */
        diff32(&acc, p, &v);
        diff32(&acc2, p + 32, &v);
        diff32(&acc, p + 64, &v);
        diff32(&acc2, p + 96, &v);
        diff32(&acc, p + size - 128, &v);
        diff32(&acc2, p + size - 96, &v);
        diff32(&acc, p + size - 64, &v);
        diff32(&acc2, p + size - 32, &v);
    } else if (size > 128) {
        for (size_t i = 0; i + 128 < size; i += 128) {
            diff32(&acc, p + i, &v);
            diff32(&acc2, p + i + 32, &v);
            diff32(&acc, p + i + 64, &v);
            diff32(&acc2, p + i + 96, &v);
        }
        diff32(&acc, p + size - 128, &v);
        diff32(&acc2, p + size - 96, &v);
        diff32(&acc, p + size - 64, &v);
        diff32(&acc2, p + size - 32, &v);
    } else {
        diff32(&acc, p, &v);
        diff32(&acc2, p + size - 32, &v);
        if (size > 64) {
            diff32(&acc, p + 32, &v);
            diff32(&acc2, p + size - 64, &v);
        }
    }
    acc |= acc2;
#if defined(__x86_64__)
    /* vptest: the or of the lanes took eight instructions. Only the fast copy, compiled
     * for AVX2, reaches this (the builtin is not declared where AVX is not the default). */
    bool zero;
    __asm__("vptest %1, %1" : "=@ccz"(zero) : "x"(acc));
    return !zero;
#else
    return acc[0] | acc[1] | acc[2] | acc[3];
#endif
}

/* Nonzero when a byte of [ptr, ptr + size), size < POISON_MEMCMP_MIN, is not `expect`. */
MT_INLINE uint64_t poison_diff(const uint8_t *p, size_t size, uint8_t expect, bool fast)
{
    const uint64_t pattern = expect * BYTES_NONZERO;
    if (fast && FAST_WIDE && MT_LIKELY(size >= 32))
        return poison_diff_wide(p, size, pattern);
    if (MT_LIKELY(size >= 16)) {
        /* As set_small: 64 bytes a round, the tail with loads that overlap. */
        bytes16 v = {pattern, pattern}, acc = {0, 0};
        if (size >= 64) {
            for (size_t i = 0; i + 64 < size; i += 64)
                acc |= (load16(p + i) ^ v) | (load16(p + i + 16) ^ v) | (load16(p + i + 32) ^ v) |
                       (load16(p + i + 48) ^ v);
            acc |= (load16(p + size - 64) ^ v) | (load16(p + size - 48) ^ v) | (load16(p + size - 32) ^ v) |
                   (load16(p + size - 16) ^ v);
        } else {
            acc = (load16(p) ^ v) | (load16(p + size - 16) ^ v);
            if (size > 32)
                acc |= (load16(p + 16) ^ v) | (load16(p + size - 32) ^ v);
        }
        return acc[0] | acc[1];
    }
    uint64_t diff = 0;
    for (size_t i = 0; i < size; i++)
        diff |= (uint64_t)(p[i] ^ expect);
    return diff;
}

/* Offset of the first byte of a freed block that is not poison (zero with
 * MTRACE_ZERO_ON_FREE), or SIZE_MAX. Small blocks sixteen bytes at a time against a
 * constant (32 in the fast copy), the differences or-ed together and tested once; big
 * ones with libc's memcmp against a page of poison. */
MT_INLINE size_t poison_broken_in(const void *ptr, size_t size, bool fast)
{
    if (MT_UNLIKELY(size >= POISON_MEMCMP_MIN))
        return poison_broken_in_big(ptr, size);
    const uint8_t expect = HOT_ZERO_ON_FREE(fast) ? 0 : MT_DEBUG_POISON_BYTE;
    if (MT_LIKELY(!poison_diff(ptr, size, expect, fast)))
        return SIZE_MAX;
    return first_other_byte(ptr, size, expect);
}

static size_t poison_broken_at(const struct debug_block *b)
{
    return poison_broken_in((const void *)b->ptr, b->size, false);
}

MT_INLINE void poison(void *ptr, size_t size, bool fast)
{
    if (HOT_ZERO_ON_FREE(fast))
        set_bytes(ptr, 0, size, false);
    else if (HOT_ON(fast, poison))
        set_bytes(ptr, MT_DEBUG_POISON_BYTE, size, fast && FAST_WIDE);
}

MT_INLINE bool hot_verifies_poison(bool fast)
{
    return HOT_ON(fast, poison) || mt_debug_config.zero_on_free;
}

static bool verifies_poison(void)
{
    return hot_verifies_poison(false);
}

static void report(enum mt_heap_error_kind kind, const struct debug_block *b, enum mt_api api, const char *detail)
{
    struct mt_heap_error e = {kind, (const void *)b->ptr, b->size, api, detail, b->alloc_site,
                              b->state == BLOCK_QUARANTINED ? b->free_site : NULL};
    mt_heap_error(&e);
}

static void report_canary(const struct debug_block *b, size_t at, enum mt_api api)
{
    char detail[160];
    mt_fmt(detail, sizeof detail, "a write %zu byte%s past the end of the block (canary at offset %zu changed)", at + 1,
           at ? "s" : "", b->size + at);
    report(MT_ERR_OVERFLOW, b, api, detail);
}

static void report_poison(const struct debug_block *b, size_t at, enum mt_api api)
{
    char detail[128];
    mt_fmt(detail, sizeof detail, "byte %zu of the freed block was changed to 0x%02x", at,
           ((const uint8_t *)b->ptr)[at]);
    report(MT_ERR_WRITE_AFTER_FREE, b, api, detail);
}

/* The reports of a small block's record, out of line: building a struct debug_block in
 * the hot functions gave them big stack frames and store-forwarding stalls. */
static MT_COLD void report_slot(enum mt_heap_error_kind kind, const void *ptr, uint64_t alloc, uint64_t state,
                                enum mt_api api)
{
    struct debug_block b = slot_view(ptr, alloc, state);
    report(kind, &b, api, NULL);
}

static MT_COLD void report_slot_canary(const void *ptr, uint64_t alloc, uint64_t state, size_t at, enum mt_api api)
{
    struct debug_block b = slot_view(ptr, alloc, state);
    report_canary(&b, at, api);
}

static MT_COLD void report_slot_poison(const void *ptr, uint64_t alloc, uint64_t state, size_t at)
{
    struct debug_block b = slot_view(ptr, alloc, state);
    report_poison(&b, at, MT_API_FREE);
}

/* ---- allocation ------------------------------------------------------------------------------ */

/* Guard sampling: which small and medium blocks get a guarded mapping. The gap to the next
 * guarded one is drawn uniformly from [1, 2 * MTRACE_GUARD_SAMPLE - 1] (mean the option's
 * value, as GWP-ASan draws its own): a fixed period of N guarded only one size of a
 * program whose sizes cycle with a period dividing N (the loop benchmark's 16 sizes and
 * N = 1024: never a block of the other 15). A countdown: the allocations before the next
 * guarded one, plus one; 0 until the first draw (a thread's state starts zeroed). */
static MT_NOINLINE uint32_t guard_gap(void)
{
    uint64_t span = 2 * (uint64_t)mt_debug_config.guard_sample - 1;
    return (uint32_t)(1 + next_random() % span);
}

/* The countdown at 0 or 1: draw (the first time) and say whether this block is guarded. */
static MT_NOINLINE bool guard_countdown_expired(uint32_t *countdown)
{
    if (*countdown == 0)
        *countdown = guard_gap();
    if (*countdown > 1) {
        --*countdown;
        return false;
    }
    *countdown = guard_gap();
    return true;
}

MT_INLINE bool want_guard(size_t size, uint32_t *countdown, bool fast)
{
    if (!HOT_ON(fast, guard))
        return false;
    if (size >= mt_mmap_threshold())
        return true;
    if (MT_LIKELY(*countdown > 1)) {
        --*countdown;
        return false;
    }
    return guard_countdown_expired(countdown);
}

/* A mapping of its own whose last page is inaccessible, the block ending as close to it as
 * its alignment allows. */
static void *guarded_alloc(size_t size, size_t align, struct debug_block *b)
{
    size_t page = mt_os_page_size();
    if (align < MT_ALIGNMENT)
        align = MT_ALIGNMENT;
    if (size > SIZE_MAX / 2 || align > SIZE_MAX / 4)
        return NULL;
    size_t data = mt_align_up(size + align, page);
    size_t map_size;
    uint8_t *map = mt_debug_guard_map(data, align, &map_size);
    if (!map)
        return NULL;
    /* The mapping may be a reused one, bigger than asked: the block ends at its guard. */
    uint8_t *user = (uint8_t *)mt_align_down((uintptr_t)(map + map_size - page - size), align);
    b->map_base = map;
    b->map_size = map_size;
    b->guarded = 1;
    return user;
}

/* A block of class cls from this thread's window: a random one of the window's blocks,
 * replaced by one from the class's stash or, when it is empty, from the allocator. Its
 * record is held (*slot); NULL when the allocator or the records have no memory, or the
 * thread has no state (*slot NULL: the caller allocates without the window). The common
 * case (the entry is set and the stash has a block) inline, the rest out of line. */
static MT_NOINLINE void *window_take_slow(struct debug_thread *t, struct window_entry *e, unsigned cls,
                                          struct mt_debug_slot **slot)
{
    struct window_entry out = *e;
    e->block = NULL;
    for (;;) {
        void *fresh;
        struct mt_debug_slot *held;
        if (t->stash_count[cls]) {
            struct window_entry *top = &t->stash[cls][--t->stash_count[cls]];
            fresh = top->block;
            held = top->slot;
            top->block = NULL;
        } else {
            if (!(fresh = mt_alloc_malloc(mt_class_size[cls])))
                return NULL; /* out is still held: not lost, given back at thread exit */
            if (!(held = mt_debug_slot_hold(fresh))) {
                mt_alloc_free(fresh);
                return NULL;
            }
        }
        if (out.block) {
            *e = (struct window_entry){fresh, held};
            *slot = out.slot;
            return out.block;
        }
        out = (struct window_entry){fresh, held}; /* the entry's first use: fill it too */
    }
}

#define RANDOM_PICK_BITS 3
_Static_assert(RANDOM_WINDOW == 1 << RANDOM_PICK_BITS, "a pick takes log2(RANDOM_WINDOW) random bits");

/* Twenty picks from one step of the generator, the marker bit above the unused ones
 * telling when to step again: a xorshift step per allocation was a twentieth of its
 * instructions, and its latency sat between the call and the block it returns. */
MT_INLINE uint64_t pick_bits_of(uint64_t x)
{
    return x >> (64 - 20 * RANDOM_PICK_BITS) | (uint64_t)1 << (20 * RANDOM_PICK_BITS);
}

static MT_NOINLINE uint64_t pick_bits_refill(void)
{
    return pick_bits_of(next_random());
}

/* t->pick_bits: random bits not used yet, RANDOM_PICK_BITS per window pick; the top bit
 * marks where they end (1 or 0: none left). */
MT_INLINE unsigned random_pick(struct debug_thread *t)
{
    uint64_t bits = t->pick_bits;
    if (MT_UNLIKELY(bits <= 1))
        bits = pick_bits_refill();
    t->pick_bits = bits >> RANDOM_PICK_BITS;
    return (unsigned)bits & (RANDOM_WINDOW - 1);
}

MT_INLINE struct window_entry *window_pick(struct debug_thread *t, unsigned cls, bool fast)
{
    /* Without MTRACE_RANDOMIZE, always the first entry: the window is then a one-block
     * buffer, and the stash's blocks still skip the allocator. */
    unsigned pick = HOT_ON(fast, randomize) ? random_pick(t) : 0;
    return &t->window[cls][pick];
}

MT_INLINE void *window_take_in(struct debug_thread *t, unsigned cls, struct mt_debug_slot **slot, bool fast)
{
    struct window_entry *e = window_pick(t, cls, fast);
    unsigned n = t->stash_count[cls];
    if (MT_LIKELY(e->block != NULL && n != 0)) {
        void *out = e->block;
        *slot = e->slot;
        struct window_entry *top = &t->stash[cls][n - 1];
        t->stash_count[cls] = (uint8_t)(n - 1);
        /* Field by field: the entry was most likely stored by the last free, as two words,
         * and a 16-byte load of it would wait for them to leave the store buffer. */
        void *block = top->block;
        __asm__("" : "+r"(block)); /* or GCC merges the two loads into one 16-byte load */
        e->block = block;
        e->slot = top->slot;
        top->block = NULL;
        return out;
    }
    *slot = NULL;
    return window_take_slow(t, e, cls, slot);
}

static void *window_take(unsigned cls, struct mt_debug_slot **slot)
{
    *slot = NULL;
    struct debug_thread *t = debug_thread_get();
    if (!t)
        return NULL;
    return window_take_in(t, cls, slot, false);
}

static void *underlying_alloc(size_t size, size_t align, struct mt_debug_slot **slot)
{
    size_t total = size + (mt_debug_config.canary ? MT_DEBUG_CANARY_BYTES : 0);
    *slot = NULL;
    if (align <= MT_ALIGNMENT) {
        if (total <= MT_SMALL_MAX) {
            void *p = window_take(mt_size_class(total), slot);
            if (p || *slot)
                return p;
        }
        return mt_alloc_malloc(total);
    }
    return mt_alloc_aligned(align, total, MT_API_INTERNAL);
}

/* The fill of a new block, bytes [from, size), at most MTRACE_FILL_MAX of them from its
 * start. The cap is ASan's (max_malloc_fill_size): an uninitialised read is nearly always
 * near the start of a block, while a full fill of a multi-megabyte block writes every
 * page of it, doubling the cost of a program that touches each page once (the whole fill
 * was 40% of debug mode's time on the large-block benchmark). */
MT_INLINE void fill_new(void *p, size_t from, size_t size, bool fast)
{
    size_t end = size < mt_debug_config.fill_max ? size : mt_debug_config.fill_max;
    set_bytes((uint8_t *)p + from, fast ? MT_DEBUG_POISON_BYTE : mt_debug_config.fill_byte, end - from,
              fast && FAST_WIDE);
}

/* Bytes at the start of a held small slot that already read as the fill: those of its
 * last block when their poison was verified as the block left the quarantine
 * (MT_DEBUG_VERIFIED) and the poison is the fill byte (mt_debug_config.fill_clean_bit is
 * the flag then, 0 otherwise); else none. Nothing writes into a held slot between the
 * check and its reuse: the allocator keeps no data in small slots and counts this one
 * allocated, and the window and the stash are the holding thread's alone. The record is
 * the holding thread's too (it set the bit), so its loads are plain; the promote writes
 * its line anyway. */
MT_INLINE size_t slot_clean_prefix(const struct mt_debug_slot *slot, bool fast)
{
    uint64_t state = atomic_load_explicit(&slot->state, memory_order_relaxed);
    if (MT_LIKELY(state & (fast ? MT_DEBUG_VERIFIED : mt_debug_config.fill_clean_bit)))
        return mt_debug_size_of(atomic_load_explicit(&slot->alloc, memory_order_relaxed));
    return 0; /* a fresh slot, one whose check failed (continue mode), or a fill that is not the poison */
}

/* A block whose bytes past its clean prefix are at most this many is filled with one
 * vector store ending at its end, whatever their exact number (it rewrites some poison
 * with the same byte): a slot reused for a size of the same class. Exact fills of the 0
 * to 15 bytes a random size of the class leaves took branches that mispredicted on every
 * other allocation (on churn, most of what skipping the fill saves). */
#define FILL_TAIL 16

/* A new small block from a window (slot held): fill, canary, then published. `copied`
 * leading bytes are about to be overwritten by the caller (realloc) and are not filled,
 * nor are those that still read as the fill (slot_clean_prefix): a slot reused for the
 * same size or one of the same class is filled at most in its last 16 bytes, which saves
 * the third pass over the bytes of a small block's life (poison at free, its check at
 * quarantine exit, the fill). */
MT_INLINE void *small_block_ready(void *p, struct mt_debug_slot *slot, size_t size, bool zero, size_t copied,
                                  const void *site, bool fast)
{
    if (zero) {
        memset(p, 0, size);
    } else if (HOT_ON(fast, fill)) {
        size_t clean = slot_clean_prefix(slot, fast);
        /* The fast copy needs no fill_max test: it runs only with fill_max >= MT_SMALL_MAX. */
        size_t fill_max = fast ? MT_SMALL_MAX : mt_debug_config.fill_max;
        uint64_t pattern = fast ? MT_DEBUG_POISON_BYTE * BYTES_NONZERO : mt_debug_config.fill_pattern;
        /* One compare for both: size - FILL_TAIL wraps for a block under FILL_TAIL bytes. */
        if (MT_LIKELY(size - FILL_TAIL <= clean && size <= fill_max)) {
            /* Two word stores: GCC built the vector of a constant pattern byte by byte. */
            memcpy((uint8_t *)p + size - FILL_TAIL, &pattern, 8);
            memcpy((uint8_t *)p + size - FILL_TAIL + 8, &pattern, 8);
        } else {
            size_t from = clean > copied ? clean : copied;
            if (from < mt_debug_config.fill_max && from < size)
                fill_new(p, from, size, fast);
        }
    }
    if (HOT_ON(fast, canary))
        canary_write_at((uintptr_t)p, size, MT_DEBUG_CANARY_BYTES);
    /* Published after the fill and the canary: mt_debug_check may look at once. */
    mt_debug_slot_promote(slot, size, site);
    return p;
}

static void *debug_alloc_other(size_t size, size_t align, bool zero, size_t copied, const void *site, bool guard);

/* A new block; `copied` leading bytes are about to be overwritten by the caller (realloc)
 * and are not filled. The common case (a small block from this thread's window) first,
 * in a few lines; the rest out of line. */
MT_INLINE void *debug_alloc(size_t size, size_t align, bool zero, size_t copied, const void *site, bool fast)
{
    if (size > MT_MAX_REQUEST) {
        errno = ENOMEM;
        return NULL;
    }
    struct debug_thread *t = debug_thread;
    if (MT_UNLIKELY(t == NULL))
        return debug_alloc_other(size, align, zero, copied, site, want_guard(size, &guard_countdown, fast));
    bool guard = want_guard(size, &t->guard_countdown, fast);
    size_t total = size + (HOT_ON(fast, canary) ? MT_DEBUG_CANARY_BYTES : 0);
    if (!guard && total <= MT_SMALL_MAX) {
        /* Every slot of an aligned class is aligned: its window serves aligned requests. */
        unsigned cls = align <= MT_ALIGNMENT ? mt_size_class(total) : mt_size_class_aligned(total, align);
        if (cls >= MT_SMALL_CLASSES)
            return debug_alloc_other(size, align, zero, copied, site, guard);
        struct mt_debug_slot *slot;
        void *p = window_take_in(t, cls, &slot, fast);
        if (MT_UNLIKELY(!p)) {
            errno = ENOMEM;
            return NULL;
        }
        return small_block_ready(p, slot, size, zero, copied, site, fast);
    }
    return debug_alloc_other(size, align, zero, copied, site, guard);
}

static MT_NOINLINE void *debug_alloc_other(size_t size, size_t align, bool zero, size_t copied, const void *site,
                                           bool guard)
{
    struct debug_block block;
    block.guarded = 0;
    struct mt_debug_slot *slot = NULL;
    void *p = guard ? guarded_alloc(size, align, &block) : NULL;
    if (!p && !block.guarded) {
        p = underlying_alloc(size, align, &slot);
        if (slot)
            return small_block_ready(p, slot, size, zero, copied, site, false);
    }
    if (!block.guarded)
        memset(&block, 0, sizeof block);
    if (!p) {
        errno = ENOMEM;
        return NULL;
    }
    block.ptr = (uintptr_t)p;
    block.size = size;
    block.alloc_site = site;
    block.state = BLOCK_LIVE;
    if (zero)
        memset(p, 0, size);
    else if (mt_debug_config.fill && copied < mt_debug_config.fill_max && copied < size)
        fill_new(p, copied, size, false);
    canary_write(&block);

    if (!block.guarded && in_small_segment(p)) {
        /* Published after the fill and the canary: mt_debug_check may look at once. */
        if (mt_debug_slot_claim(p, size, site))
            return p;
        mt_alloc_free(p);
        errno = ENOMEM;
        return NULL;
    }
    uint64_t hash;
    struct stripe *s = stripe_of(block.ptr, &hash);
    mt_lock(&s->lock);
    struct debug_block *entry = table_insert(s, block.ptr, hash);
    if (entry)
        *entry = block;
    mt_unlock(&s->lock);
    if (!entry) {
        if (block.guarded) {
            mt_debug_guard_retire(block.map_base, block.map_size);
            mt_debug_guard_unmap(block.map_base, block.map_size);
        } else
            mt_alloc_free(p);
        errno = ENOMEM;
        return NULL;
    }
    return p;
}

/* ---- release: a block leaves the quarantine for good ---------------------------------------- */

/* Verify the poison of a small block and give it back (the caller took it off the queue). */
MT_INLINE void slot_release(void *ptr, struct mt_debug_slot *slot, unsigned cls, bool fast)
{
    uint64_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
    if (mt_debug_state_of(state) != MT_DEBUG_QUARANTINED)
        return; /* not reached: only the queue's owner of a block releases it */
    uint64_t held = mt_debug_state_word(MT_DEBUG_WINDOW, NULL);
    if (hot_verifies_poison(fast)) {
        uint64_t alloc = atomic_load_explicit(&slot->alloc, memory_order_relaxed);
        size_t at = poison_broken_in(ptr, mt_debug_size_of(alloc), fast);
        if (MT_UNLIKELY(at != SIZE_MAX))
            report_slot_poison(ptr, alloc, state, at); /* continue mode: the slot is filled when reused */
        else
            held |= MT_DEBUG_VERIFIED;
    }
    struct debug_thread *t = debug_thread;
    if (MT_LIKELY(t != NULL)) {
        if (MT_LIKELY(t->stash_count[cls] < STASH_ENTRIES)) {
            atomic_store_explicit(&slot->state, held, memory_order_release);
            t->stash[cls][t->stash_count[cls]++] = (struct window_entry){ptr, slot};
            return;
        }
    }
    mt_debug_slot_forget(ptr, slot);
    mt_alloc_free(ptr);
}

/* Verify the poison, give the memory back, forget the block (b is invalid afterwards: the
 * table may be rebuilt). Caller holds the stripe lock. */
static void table_release(struct stripe *s, struct debug_block *b)
{
    if (b->guarded) {
        mt_debug_guard_unmap(b->map_base, b->map_size);
    } else {
        if (verifies_poison()) {
            size_t at = poison_broken_at(b);
            if (at != SIZE_MAX)
                report_poison(b, at, MT_API_FREE);
        }
        mt_alloc_free((void *)b->ptr);
    }
    b->ptr = SLOT_TOMBSTONE;
    s->table_entries--;
    if (s->table_cap > TABLE_MIN && s->table_entries * TABLE_SHRINK < s->table_cap)
        table_rehash(s); /* may fail for want of memory: the old table stays, still valid */
}

/* Release a block of the table taken off a quarantine. */
static MT_NOINLINE void release_table_block(uintptr_t ptr)
{
    uint64_t hash;
    struct stripe *s = stripe_of(ptr, &hash);
    mt_lock(&s->lock);
    struct debug_block *b = table_find(s, ptr, hash);
    if (b && b->state == BLOCK_QUARANTINED)
        table_release(s, b);
    mt_unlock(&s->lock);
}

/* Release a block taken off a quarantine. */
static void release_quarantined(struct quarantined q)
{
    if (q.slot)
        slot_release((void *)q.ptr, q.slot, q.cls, false);
    else
        release_table_block(q.ptr);
}

/* Append to the quarantine; returns false when it cannot grow (the caller releases the
 * block at once). Caller holds quarantine.lock. */
static bool quarantine_push(struct quarantined q)
{
    if (quarantine.count == quarantine.cap) {
        size_t new_cap = quarantine.cap ? quarantine.cap * 2 : RING_MIN;
        struct quarantined *ring = mt_os_map(new_cap * sizeof *ring);
        if (!ring)
            return false;
        for (size_t i = 0; i < quarantine.count; i++)
            ring[i] = quarantine.ring[(quarantine.head + i) & (quarantine.cap - 1)];
        if (quarantine.ring)
            mt_os_unmap(quarantine.ring, quarantine.cap * sizeof *quarantine.ring);
        quarantine.ring = ring;
        quarantine.cap = new_cap;
        quarantine.head = 0;
    }
    quarantine.ring[(quarantine.head + quarantine.count) & (quarantine.cap - 1)] = q;
    quarantine.count++;
    quarantine.bytes += q.size;
    return true;
}

/* Without a branch (a prefetch never faults, of a null record or past a short block
 * either): the size tests and the loop of the version with them were a tenth of a
 * malloc/free loop's free. */
MT_INLINE void prefetch_block(const struct quarantined *q)
{
    const uint8_t *p = (const uint8_t *)q->ptr;
    __builtin_prefetch(p);
    __builtin_prefetch(p + MT_CACHE_LINE);
    __builtin_prefetch(p + 2 * MT_CACHE_LINE);
    __builtin_prefetch(p + 3 * MT_CACHE_LINE);
    __builtin_prefetch(q->slot);
}

/* Queue a block on the shared FIFO, and release the oldest ones beyond its budget. */
static void shared_quarantine_add(struct quarantined q)
{
    struct quarantined evicted[EVICT_BATCH];
    size_t n_evicted = 0;
    mt_lock(&quarantine.lock);
    bool queued = quarantine_push(q);
    while (queued && quarantine.bytes > mt_debug_config.quarantine * SHARED_FACTOR && n_evicted < EVICT_BATCH &&
           quarantine.count > 1) {
        struct quarantined oldest = quarantine.ring[quarantine.head];
        quarantine.head = (quarantine.head + 1) & (quarantine.cap - 1);
        quarantine.count--;
        quarantine.bytes -= oldest.size;
        evicted[n_evicted++] = oldest;
        if (quarantine.count > PREFETCH_AHEAD)
            prefetch_block(&quarantine.ring[(quarantine.head + PREFETCH_AHEAD) & (quarantine.cap - 1)]);
    }
    mt_unlock(&quarantine.lock);
    if (!queued)
        evicted[n_evicted++] = q;
    for (size_t i = 0; i < n_evicted; i++)
        release_quarantined(evicted[i]);
}

/* This thread's state, made at its first use; NULL once the thread is exiting or when no
 * memory is left for it (the shared FIFO and the allocator's own choice serve then). */
static struct debug_thread *debug_thread_get(void)
{
    struct debug_thread *t = debug_thread;
    if (MT_LIKELY(t != NULL))
        return t;
    if (debug_thread_closed || !debug_thread_key_made)
        return NULL;
    t = mt_os_map(sizeof *t);
    if (!t)
        return NULL;
    /* Set before the key: pthread_setspecific may allocate and free, and that comes back
     * here. */
    debug_thread = t;
    pthread_setspecific(debug_thread_key, t);
    return t;
}

/* Thread exit: what the thread's quarantine holds is handed to the shared FIFO (released
 * later, in order, with the others), the windows' blocks go back to the allocator; frees
 * made by later destructors go to the shared FIFO. */
static void debug_thread_exit(void *arg)
{
    struct debug_thread *t = arg;
    debug_thread_closed = true;
    debug_thread = NULL;
    if (!t)
        return;
    for (; t->count; t->count--) {
        if (mt_debug_config.quarantine)
            shared_quarantine_add(t->ring[t->head]);
        else
            release_quarantined(t->ring[t->head]);
        t->head = (t->head + 1) & (LOCAL_ENTRIES - 1);
    }
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        for (unsigned i = 0; i < RANDOM_WINDOW; i++) {
            struct window_entry *e = &t->window[c][i];
            if (e->block) {
                mt_debug_slot_forget(e->block, e->slot);
                mt_alloc_free(e->block);
            }
        }
        for (unsigned i = 0; i < t->stash_count[c]; i++) {
            mt_debug_slot_forget(t->stash[c][i].block, t->stash[c][i].slot);
            mt_alloc_free(t->stash[c][i].block);
        }
    }
    mt_os_unmap(t, sizeof *t);
}

/* The ring's counters, kept in registers by the hot path and written back once: stores
 * through the records and the stash may alias them as far as the compiler knows
 * (-fno-strict-aliasing), so code on the fields re-read them after every store. */
struct ring_pos {
    size_t head, count, bytes;
};

MT_INLINE struct ring_pos ring_pos_load(const struct debug_thread *t)
{
    return (struct ring_pos){t->head, t->count, t->bytes};
}

MT_INLINE void ring_pos_store(struct debug_thread *t, const struct ring_pos *pos)
{
    t->head = pos->head;
    t->count = pos->count;
    t->bytes = pos->bytes;
}

/* Take the oldest block off this thread's ring (pos) and release it. */
MT_INLINE void local_evict(struct debug_thread *t, struct ring_pos *pos, bool fast)
{
    /* The block verified a few evictions from now: fetched meanwhile (it was freed a
     * thousand frees ago; on small-block churn the check stalled on it). */
    if (pos->count > PREFETCH_AHEAD)
        prefetch_block(&t->ring[(pos->head + PREFETCH_AHEAD) & (LOCAL_ENTRIES - 1)]);
    /* Field by field, not as a structure: a 32-byte local made GCC realign the stack of
     * the AVX2 copy on every call. */
    struct quarantined *oldest = &t->ring[pos->head];
    uintptr_t ptr = oldest->ptr;
    struct mt_debug_slot *slot = oldest->slot;
    unsigned cls = oldest->cls;
    pos->bytes -= oldest->size;
    /* No stale copy of a released block's address: a leak scan would take it for a
     * reference once the block is reused. */
    oldest->ptr = 0;
    pos->head = (pos->head + 1) & (LOCAL_ENTRIES - 1);
    pos->count--;
    if (MT_LIKELY(slot != NULL)) {
        slot_release((void *)ptr, slot, cls, fast);
    } else {
        ring_pos_store(t, pos); /* consistent before the call out */
        release_table_block(ptr);
    }
}

MT_INLINE bool local_over(const struct ring_pos *pos, size_t size, size_t budget)
{
    return pos->count && (pos->count == LOCAL_ENTRIES || pos->bytes + size > budget);
}

/* The evictions after the first, when one was not enough (a block bigger than the one
 * that left), out of line. */
static MT_NOINLINE void local_evict_more(struct debug_thread *t, size_t size, size_t budget)
{
    struct ring_pos pos = ring_pos_load(t);
    while (local_over(&pos, size, budget))
        local_evict(t, &pos, false);
    ring_pos_store(t, &pos);
}

/* Queue a small block in this thread's FIFO (t), releasing the oldest ones beyond the
 * budget: one eviction inline (a free's common case), the others out of line. */
MT_INLINE void local_queue(struct debug_thread *t, uintptr_t ptr, size_t size, struct mt_debug_slot *slot, unsigned cls,
                           size_t budget, bool fast)
{
    struct ring_pos pos = ring_pos_load(t);
    if (local_over(&pos, size, budget)) {
        local_evict(t, &pos, fast);
        if (MT_UNLIKELY(local_over(&pos, size, budget))) {
            ring_pos_store(t, &pos);
            local_evict_more(t, size, budget);
            pos = ring_pos_load(t);
        }
    }
    t->ring[(pos.head + pos.count) & (LOCAL_ENTRIES - 1)] = (struct quarantined){ptr, size, slot, cls};
    t->head = pos.head;
    t->count = pos.count + 1;
    t->bytes = pos.bytes + size;
}

static MT_NOINLINE void quarantine_add_other(uintptr_t ptr, size_t size, struct mt_debug_slot *slot, unsigned cls)
{
    struct quarantined q = {ptr, size, slot, cls};
    struct debug_thread *t;
    if (mt_debug_config.quarantine == 0)
        release_quarantined(q);
    else if (q.size > mt_debug_config.quarantine / LOCAL_BIG_SHARE || !(t = debug_thread_get()))
        shared_quarantine_add(q);
    else
        local_queue(t, ptr, size, slot, cls, mt_debug_config.quarantine, false);
}

/* Queue a block this thread just marked quarantined, and release the oldest ones beyond
 * the budget: small blocks in the thread's own FIFO, big ones in the shared one. */
MT_INLINE void quarantine_add(uintptr_t ptr, size_t size, struct mt_debug_slot *slot, unsigned cls, bool fast)
{
    size_t budget = mt_debug_config.quarantine;
    struct debug_thread *t = debug_thread;
    if (MT_UNLIKELY(t == NULL || size > budget / LOCAL_BIG_SHARE)) { /* also budget 0 */
        quarantine_add_other(ptr, size, slot, cls);
        return;
    }
    local_queue(t, ptr, size, slot, cls, budget, fast);
}

/* ---- free ------------------------------------------------------------------------------------ */

/* The lines of a block about to be poisoned, fetched for writing while its record is
 * looked up: the program read its first and last bytes, but the lines between are
 * usually long gone from the caches (on small-block churn their misses, one after the
 * other behind the record's, were a sixth of debug mode's time). */
#define PREFETCH_POISON_MAX 256
/* The lines the block's first PREFETCH_POISON_MAX bytes touch, without a loop or a test
 * of the block's size: a prefetch past a short block (of its neighbour's line, never a
 * fault) costs less than clamping to the block's last line did (a dozen instructions a
 * free; churn 2.27 -> 2.10 times glibc without the clamp). */
MT_INLINE void prefetch_for_poison(const void *ptr)
{
    uintptr_t a = (uintptr_t)ptr & ~(uintptr_t)(MT_CACHE_LINE - 1);
    __builtin_prefetch((const void *)a, 1);
    __builtin_prefetch((const void *)(a + MT_CACHE_LINE), 1);
    __builtin_prefetch((const void *)(a + 2 * MT_CACHE_LINE), 1);
    __builtin_prefetch((const void *)(a + 3 * MT_CACHE_LINE), 1);
}
_Static_assert(PREFETCH_POISON_MAX == 4 * MT_CACHE_LINE, "prefetch_for_poison fetches four lines at most");

/* A free of a small block whose record does not say live: not the layer's (the allocator
 * names it), or a double free. */
static MT_COLD void slot_free_not_live(void *ptr, uint64_t alloc, uint64_t state, enum mt_api api)
{
    if (state == 0)
        mt_alloc_free_as(ptr, api); /* not a debug block, or long released */
    else /* quarantined, or back in a window since */
        report_slot(MT_ERR_DOUBLE_FREE, ptr, alloc, state, api);
}

/* Mark a small block quarantined, or report why it cannot be (or hand a pointer that is
 * not ours to the allocator). True when this call now owns the block. */
MT_INLINE bool slot_free(void *ptr, struct mt_debug_slot *slot, enum mt_api api, const void *site, size_t *size,
                         bool fast)
{
    /* The block is read as two words, not built as a struct debug_block: that copy stalled
     * on store forwarding on every free. */
    uint64_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
    uint64_t alloc = atomic_load_explicit(&slot->alloc, memory_order_relaxed);
    if (MT_UNLIKELY(mt_debug_state_of(state) != MT_DEBUG_LIVE)) {
        slot_free_not_live(ptr, alloc, state, api);
        return false;
    }
    size_t bytes = mt_debug_size_of(alloc);
    size_t at = HOT_ON(fast, canary) ? canary_broken_in((uintptr_t)ptr, bytes, MT_DEBUG_CANARY_BYTES) : SIZE_MAX;
    if (MT_UNLIKELY(at != SIZE_MAX))
        report_slot_canary(ptr, alloc, state, at, api); /* continue mode: free it all the same */
    /* Poisoned, then marked quarantined, so a quarantined block always reads as poison. A
     * plain store, not a compare-and-swap: a locked instruction here waited for every
     * store before it (the fill of the block just allocated, the poison) to leave the
     * store buffer, a fifth of debug mode's time on a malloc/free loop. The price: two
     * threads freeing the same block at the very same moment may both go on unreported (a
     * double free one after the other, from any threads, is still seen above); each queue
     * entry then finds the block no longer quarantined when its turn comes and leaves it
     * alone (slot_release). */
    poison(ptr, bytes, fast);
    atomic_store_explicit(&slot->state, mt_debug_state_word(MT_DEBUG_QUARANTINED, site), memory_order_release);
    *size = bytes;
    return true;
}

/* As slot_free for a block of the table: its size, or SIZE_MAX when this call does not
 * own it (a return value: a variable whose address is passed lived on the stack, stored
 * and loaded by every small free too). Out of line: inlined, it gave mt_debug_free a
 * stack frame and register saves that every small free paid for. */
static MT_NOINLINE size_t table_free(void *ptr, enum mt_api api, const void *site)
{
    uint64_t hash;
    struct stripe *s = stripe_of((uintptr_t)ptr, &hash);
    mt_lock(&s->lock);
    struct debug_block *b = table_find(s, (uintptr_t)ptr, hash);
    if (!b) {
        mt_unlock(&s->lock);
        /* Not ours, or long released: the allocator's own checks name it. */
        mt_alloc_free_as(ptr, api);
        return SIZE_MAX;
    }
    if (b->state == BLOCK_QUARANTINED) {
        struct debug_block copy = *b;
        mt_unlock(&s->lock);
        report(MT_ERR_DOUBLE_FREE, &copy, api, NULL);
        return SIZE_MAX;
    }
    size_t at = canary_broken_at(b);
    if (at != SIZE_MAX) {
        struct debug_block copy = *b;
        mt_unlock(&s->lock);
        report_canary(&copy, at, api);
        mt_lock(&s->lock);
        b = table_find(s, (uintptr_t)ptr, hash);
        if (!b || b->state != BLOCK_LIVE) {
            mt_unlock(&s->lock);
            return SIZE_MAX;
        }
    }
    b->state = BLOCK_QUARANTINED;
    b->free_site = site;
    size_t size = b->size;
    if (!b->guarded)
        poison(ptr, b->size, false);
    if (b->guarded) {
        /* Any access to a freed guarded block now faults, so it needs no poison (it is not
         * verified when it leaves the quarantine). Its pages stay, for the mapping's reuse. */
        mt_debug_guard_retire(b->map_base, b->map_size);
    }
    mt_unlock(&s->lock);
    return size;
}

MT_INLINE void debug_free(void *ptr, enum mt_api api, const void *site, bool fast)
{
    if (!ptr)
        return;
    if (MT_LIKELY(in_small_segment(ptr))) {
        size_t size;
        struct mt_page *page;
        struct mt_debug_slot *slot = mt_debug_slot_find_page(ptr, &page);
        if (MT_LIKELY(slot != NULL))
            prefetch_for_poison(ptr);
        if (MT_UNLIKELY(!slot)) {
            /* Not a slot start in use, or a segment the layer never used. */
            mt_alloc_free_as(ptr, api);
            return;
        }
        if (slot_free(ptr, slot, api, site, &size, fast))
            quarantine_add((uintptr_t)ptr, size, slot, page->cls, fast);
    } else {
        size_t size = table_free(ptr, api, site);
        if (size != SIZE_MAX)
            quarantine_add((uintptr_t)ptr, size, NULL, 0, fast);
    }
}

static MT_NOINLINE void debug_free_generic(void *ptr, enum mt_api api, const void *site)
{
    debug_free(ptr, api, site, false);
}

/* The fast copy's free, all cases. */
static MT_NOINLINE FAST_TARGET void debug_free_fast_full(void *ptr, enum mt_api api, const void *site)
{
    debug_free(ptr, api, site, true);
}

/* Queue a small block the fast copy's free just marked quarantined: local_queue's cases
 * that the inline one below turns down. */
static MT_NOINLINE FAST_TARGET void local_queue_fast_other(struct debug_thread *t, void *ptr, size_t size,
                                                          struct mt_debug_slot *slot, unsigned cls)
{
    local_queue(t, (uintptr_t)ptr, size, slot, cls, mt_debug_config.quarantine, true);
}

/* As local_queue in the fast copy, for its common case: the ring has room, or makes it by
 * releasing its oldest block alone, a small one whose poison is intact, into its class's
 * stash; everything else (a block of the table, a broken poison to report, a full stash)
 * tested before the first change, and left to local_queue_fast_other. */
MT_INLINE FAST_TARGET void local_queue_fast(struct debug_thread *t, void *ptr, size_t size, struct mt_debug_slot *slot,
                                            unsigned cls, size_t budget)
{
    struct ring_pos pos = ring_pos_load(t);
    /* An empty ring is never over: size < budget / LOCAL_BIG_SHARE. */
    if (pos.count == LOCAL_ENTRIES || pos.bytes + size > budget) {
        struct quarantined *oldest = &t->ring[pos.head];
        struct mt_debug_slot *old_slot = oldest->slot;
        unsigned old_cls = oldest->cls;
        if (MT_UNLIKELY(old_slot == NULL || pos.bytes - oldest->size + size > budget ||
                        t->stash_count[old_cls] >= STASH_ENTRIES))
            return local_queue_fast_other(t, ptr, size, slot, cls);
        uintptr_t old_ptr = oldest->ptr;
        uint64_t old_state = atomic_load_explicit(&old_slot->state, memory_order_acquire);
        /* The record's size is the queue entry's: a quarantined block's does not change. */
        size_t old_size = mt_debug_size_of(atomic_load_explicit(&old_slot->alloc, memory_order_relaxed));
        if (MT_UNLIKELY(mt_debug_state_of(old_state) != MT_DEBUG_QUARANTINED || old_size >= POISON_MEMCMP_MIN ||
                        poison_diff((const uint8_t *)old_ptr, old_size, MT_DEBUG_POISON_BYTE, true)))
            return local_queue_fast_other(t, ptr, size, slot, cls);
        /* As local_evict and slot_release do. */
        if (pos.count > PREFETCH_AHEAD)
            prefetch_block(&t->ring[(pos.head + PREFETCH_AHEAD) & (LOCAL_ENTRIES - 1)]);
        atomic_store_explicit(&old_slot->state, mt_debug_state_word(MT_DEBUG_WINDOW, NULL) | MT_DEBUG_VERIFIED,
                              memory_order_release);
        t->stash[old_cls][t->stash_count[old_cls]++] = (struct window_entry){(void *)old_ptr, old_slot};
        if (pos.count == LOCAL_ENTRIES) {
            /* A full ring's next entry is the one just released: overwritten in place. */
            *oldest = (struct quarantined){(uintptr_t)ptr, size, slot, cls};
            t->head = (pos.head + 1) & (LOCAL_ENTRIES - 1);
            t->bytes = pos.bytes - old_size + size;
            return;
        }
        oldest->ptr = 0;
        pos.head = (pos.head + 1) & (LOCAL_ENTRIES - 1);
        pos.count--;
        pos.bytes -= old_size;
    }
    t->ring[(pos.head + pos.count) & (LOCAL_ENTRIES - 1)] = (struct quarantined){(uintptr_t)ptr, size, slot, cls};
    t->head = pos.head;
    t->count = pos.count + 1;
    t->bytes = pos.bytes + size;
}

/* The fast copy's free in the common case, branching once to the full path: a live small
 * block under INLINE_SET_MAX bytes whose canary is intact, freed by a thread with its
 * state. Tested before the first change (the full path starts over from the same state,
 * and reports what this one turned down); then poisoned, marked and queued. One load of
 * the thread's state, and the arguments are dead once the block is marked: live across
 * the queueing, they spilled to the stack in the full function. */
static MT_NOINLINE FAST_TARGET void debug_free_fast(void *ptr, enum mt_api api, const void *site)
{
    struct debug_thread *t = debug_thread;
    struct mt_page *page;
    struct mt_debug_slot *slot;
    if (MT_UNLIKELY(t == NULL || !in_small_segment(ptr) || !(slot = mt_debug_slot_find_page(ptr, &page))))
        return debug_free_fast_full(ptr, api, site);
    prefetch_for_poison(ptr);
    uint64_t state = atomic_load_explicit(&slot->state, memory_order_acquire);
    uint64_t alloc = atomic_load_explicit(&slot->alloc, memory_order_relaxed);
    size_t size = mt_debug_size_of(alloc);
    size_t budget = mt_debug_config.quarantine;
    /* Poisoned inline (under INLINE_SET_MAX), queued in the thread's own ring (under a
     * quarter of the budget; >=, so that a budget of 0, no quarantine, goes the full way). */
    if (MT_UNLIKELY(mt_debug_state_of(state) != MT_DEBUG_LIVE || !canary_intact((uintptr_t)ptr, size) ||
                    size >= INLINE_SET_MAX || size >= budget / LOCAL_BIG_SHARE))
        return debug_free_fast_full(ptr, api, site);
    set_wide(ptr, size, MT_DEBUG_POISON_BYTE * BYTES_NONZERO);
    atomic_store_explicit(&slot->state, mt_debug_state_word(MT_DEBUG_QUARANTINED, site), memory_order_release);
    local_queue_fast(t, ptr, size, slot, page->cls, budget);
}

void mt_debug_free(void *ptr, enum mt_api api, const void *site)
{
    mt_debug_entries.free(ptr, api, site);
}

/* A broken quarantined block found by a walk, for its report. */
struct poison_failure {
    struct debug_block block;
    size_t at;
};

static bool slot_poison_intact(void *ctx, const void *ptr, uint64_t alloc, uint64_t state)
{
    if (mt_debug_state_of(state) != MT_DEBUG_QUARANTINED)
        return true;
    struct poison_failure *f = ctx;
    f->block = slot_view(ptr, alloc, state);
    f->at = poison_broken_at(&f->block);
    return f->at == SIZE_MAX;
}

/* Walks the records, not the queues: the blocks of every thread's own quarantine are
 * seen without reading another thread's queue. */
bool mt_debug_verify_quarantine(enum mt_api api)
{
    if (!verifies_poison())
        return true;
    struct poison_failure f;
    if (!mt_debug_slots_scan(slot_poison_intact, &f)) {
        report_poison(&f.block, f.at, api);
        return false;
    }
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &stripes[i];
        mt_lock(&s->lock);
        for (size_t j = 0; j < s->table_cap; j++) {
            const struct debug_block *b = &s->table[j];
            if (b->ptr > SLOT_TOMBSTONE && b->state == BLOCK_QUARANTINED && !b->guarded &&
                (f.at = poison_broken_at(b)) != SIZE_MAX) {
                f.block = *b;
                mt_unlock(&s->lock);
                report_poison(&f.block, f.at, api);
                return false;
            }
        }
        mt_unlock(&s->lock);
    }
    return true;
}

static MT_NOINLINE void *debug_malloc_generic(size_t size, const void *site)
{
    return debug_alloc(size, 0, false, 0, site, false);
}

/* The fast copy's allocation, all cases. */
static MT_NOINLINE FAST_TARGET void *debug_malloc_fast_full(size_t size, const void *site)
{
    return debug_alloc(size, 0, false, 0, site, true);
}

/* The fast copy's allocation in the common case, a few lines that branch once to the full
 * path: a small block, not guarded, from a window entry the class's stash refills, whose
 * slot already reads as the fill but for at most its last FILL_TAIL bytes. Everything is
 * tested before anything changes, so the full path starts from the same state. Without
 * debug_alloc's general cases (guarded, aligned, zeroed, copied, window refills from the
 * allocator), the register saves come after the first tests and the stack frame goes. */
static MT_NOINLINE FAST_TARGET void *debug_malloc_fast(size_t size, const void *site)
{
    struct debug_thread *t = debug_thread;
    /* The size test also turns away sizes near SIZE_MAX (size + canary wraps). */
    if (MT_UNLIKELY(t == NULL || size > MT_SMALL_MAX - MT_DEBUG_CANARY_BYTES || t->guard_countdown <= 1 ||
                    size >= mt_mmap_threshold()))
        return debug_malloc_fast_full(size, site);
    unsigned cls = mt_size_class(size + MT_DEBUG_CANARY_BYTES);
    /* First: a thread that allocates what others free (a producer) finds it empty every
     * time, and turns back here. */
    unsigned n = t->stash_count[cls];
    if (MT_UNLIKELY(n == 0))
        return debug_malloc_fast_full(size, site);
    uint64_t bits = t->pick_bits;
    if (MT_UNLIKELY(bits <= 1)) {
        /* Refilled here without a call (one would make every call save registers); the
         * generator's first step, which seeds it, the full way. */
        uint64_t x = rng_state;
        if (MT_UNLIKELY(x == 0))
            return debug_malloc_fast_full(size, site);
        rng_state = x = xorshift_step(x);
        bits = pick_bits_of(x);
    }
    struct window_entry *e = &t->window[cls][bits & (RANDOM_WINDOW - 1)];
    void *p = e->block;
    struct mt_debug_slot *slot = e->slot;
    if (MT_UNLIKELY(p == NULL))
        return debug_malloc_fast_full(size, site);
    /* The fill: one 16-byte store ending at the block's end (at its start under 16
     * bytes: the canary overwrites the rest), enough when the bytes before it still read
     * as the fill (slot_clean_prefix). */
    size_t tail = size > FILL_TAIL ? size - FILL_TAIL : 0;
    uint64_t state = atomic_load_explicit(&slot->state, memory_order_relaxed);
    size_t clean = mt_debug_size_of(atomic_load_explicit(&slot->alloc, memory_order_relaxed));
    if (!(state & MT_DEBUG_VERIFIED))
        clean = 0;
    if (MT_UNLIKELY(clean < tail))
        return debug_malloc_fast_full(size, site);

    t->pick_bits = bits >> RANDOM_PICK_BITS;
    t->guard_countdown--;
    struct window_entry *top = &t->stash[cls][n - 1];
    t->stash_count[cls] = (uint8_t)(n - 1);
    void *block = top->block;
    __asm__("" : "+r"(block)); /* as in window_take_in: two loads, not one 16-byte one */
    e->block = block;
    e->slot = top->slot;
    top->block = NULL;
    uint64_t pattern = MT_DEBUG_POISON_BYTE * BYTES_NONZERO;
    memcpy((uint8_t *)p + tail, &pattern, 8);
    memcpy((uint8_t *)p + tail + 8, &pattern, 8);
    canary_write_at((uintptr_t)p, size, MT_DEBUG_CANARY_BYTES);
    mt_debug_slot_promote(slot, size, site);
    return p;
}

/* The choice mt_debug_init made, for the callers inside the library (realloc, the
 * interposer's slow path). */
void *mt_debug_malloc(size_t size, const void *site)
{
    return mt_debug_entries.malloc(size, site);
}


void *mt_debug_calloc(size_t count, size_t size, const void *site)
{
    size_t total;
    if (__builtin_mul_overflow(count, size, &total)) {
        errno = ENOMEM;
        return NULL;
    }
    return debug_alloc(total, 0, true, 0, site, false);
}

void *mt_debug_aligned(size_t align, size_t size, enum mt_api api, const void *site)
{
    (void)api;
    return debug_alloc(size, align, false, 0, site, false);
}

/* The block the program passed, copied: false when the layer does not know it. */
static bool find_block(const void *ptr, struct debug_block *copy)
{
    if (in_small_segment(ptr)) {
        struct mt_debug_slot *slot = mt_debug_slot_find(ptr);
        uint64_t state = slot ? atomic_load_explicit(&slot->state, memory_order_acquire) : 0;
        if (state == 0)
            return false;
        *copy = slot_view(ptr, atomic_load_explicit(&slot->alloc, memory_order_relaxed), state);
        return true;
    }
    uint64_t hash;
    struct stripe *s = stripe_of((uintptr_t)ptr, &hash);
    mt_lock(&s->lock);
    struct debug_block *b = table_find(s, (uintptr_t)ptr, hash);
    if (b)
        *copy = *b;
    mt_unlock(&s->lock);
    return b != NULL;
}

/* The state of a pointer the program passed: its size when live (reporting anything
 * else as `api`), or 0 after a report. */
static size_t live_size_or_report(const void *ptr, enum mt_api api)
{
    struct debug_block copy;
    if (!find_block(ptr, &copy)) /* not a debug block: the allocator answers for it, or reports */
        return mt_alloc_usable_size_as(ptr, api);
    if (copy.state != BLOCK_LIVE) {
        report(api == MT_API_REALLOC ? MT_ERR_REALLOC_FREED : MT_ERR_FREED_BLOCK, &copy, api, NULL);
        return 0;
    }
    size_t at = canary_broken_at(&copy);
    if (at != SIZE_MAX) {
        report_canary(&copy, at, api);
        return 0;
    }
    return copy.size ? copy.size : SIZE_MAX; /* SIZE_MAX: live, zero-sized */
}

/* A block resized where it is: the fill of its new bytes and the canary at its new end. */
static void resize_contents(void *ptr, size_t old, size_t size)
{
    if (size > old && mt_debug_config.fill && old < mt_debug_config.fill_max)
        fill_new(ptr, old, size, false);
    struct debug_block b;
    memset(&b, 0, sizeof b);
    b.ptr = (uintptr_t)ptr;
    b.size = size;
    canary_write(&b);
}

/* Whether a block of `usable` bytes serves `total` bytes without wasting half of it. */
static bool fits(size_t total, size_t usable)
{
    return total <= usable && total > usable / 2;
}

/* realloc of a live block without moving it, when its slot or chunk has room for the new
 * size and the canary (growing a medium chunk into a free neighbour if need be). True when
 * done. Moving on every realloc copied, poisoned and later verified the whole block each
 * time: a string grown by appends cost the square of its length (13 times glibc's time
 * on the realloc benchmark, where glibc grows in place). Guarded blocks always move. */
static bool resize_in_place(void *ptr, size_t old, size_t size, const void *site)
{
    size_t total = size + (mt_debug_config.canary ? MT_DEBUG_CANARY_BYTES : 0);
    if (total < size)
        return false;
    uint8_t entry = mt_segmap_entry((uintptr_t)ptr);
    if (mt_segmap_kind(entry) == MT_SEG_SMALL) {
        struct mt_debug_slot *slot = mt_debug_slot_find(ptr);
        if (!slot || !fits(total, mt_alloc_usable_size_quiet(ptr)))
            return false;
        /* Hidden from mt_heap_check while its canary moves (a window slot is not checked). */
        atomic_store_explicit(&slot->state, mt_debug_state_word(MT_DEBUG_WINDOW, NULL), memory_order_release);
        resize_contents(ptr, old, size);
        mt_debug_slot_promote(slot, size, site);
        return true;
    }
    if (mt_segmap_kind(entry) != MT_SEG_MEDIUM)
        return false;
    uint64_t hash;
    struct stripe *s = stripe_of((uintptr_t)ptr, &hash);
    mt_lock(&s->lock);
    struct debug_block *b = table_find(s, (uintptr_t)ptr, hash);
    bool done = false;
    if (b && !b->guarded && b->state == BLOCK_LIVE) {
        size_t usable = mt_alloc_usable_size_quiet(ptr);
        if (total > usable && mt_medium_resize_in_place(ptr, entry, total, total))
            usable = mt_alloc_usable_size_quiet(ptr);
        if (fits(total, usable)) {
            resize_contents(ptr, old, size);
            b->size = size;
            b->alloc_site = site;
            done = true;
        }
    }
    mt_unlock(&s->lock);
    return done;
}

void *mt_debug_realloc(void *ptr, size_t size, enum mt_api api, const void *site)
{
    if (!ptr)
        return debug_alloc(size, 0, false, 0, site, false);
    if (size == 0) {
        mt_debug_free(ptr, api, site);
        return NULL;
    }
    size_t old = live_size_or_report(ptr, api);
    if (old == 0)
        return NULL;
    if (old == SIZE_MAX)
        old = 0;
    if (resize_in_place(ptr, old, size, site))
        return ptr;
    /* Moved: a stale pointer to the old place then reads poison, not live data. */
    size_t kept = old < size ? old : size;
    void *fresh = debug_alloc(size, 0, false, kept, site, false);
    if (!fresh)
        return NULL;
    memcpy(fresh, ptr, kept);
    mt_debug_free(ptr, api, site);
    return fresh;
}

size_t mt_debug_usable_size(const void *ptr)
{
    if (!ptr)
        return 0;
    size_t size = live_size_or_report(ptr, MT_API_USABLE_SIZE);
    return size == SIZE_MAX ? 0 : size;
}

/* ---- heap check ------------------------------------------------------------------------------ */

struct check_failure {
    struct debug_block block;
    size_t at;
    bool overflow; /* canary (else poison) */
};

/* A block's canary when live, its poison when quarantined: false and *failure when broken. */
static bool block_broken(const struct debug_block *b, struct check_failure *failure)
{
    size_t at;
    if (b->state == BLOCK_LIVE && (at = canary_broken_at(b)) != SIZE_MAX) {
        *failure = (struct check_failure){*b, at, true};
        return true;
    }
    if (b->state == BLOCK_QUARANTINED && !b->guarded && verifies_poison() && (at = poison_broken_at(b)) != SIZE_MAX) {
        *failure = (struct check_failure){*b, at, false};
        return true;
    }
    return false;
}

static bool check_slot(void *ctx, const void *ptr, uint64_t alloc, uint64_t state)
{
    struct debug_block b = slot_view(ptr, alloc, state);
    return !block_broken(&b, ctx);
}

static bool check_fail(struct mt_check *check, const struct check_failure *f)
{
    if (f->overflow)
        return mt_check_fail(check, (const void *)f->block.ptr,
                             "heap buffer overflow: canary %zu bytes past the end of a block of %zu bytes", f->at,
                             f->block.size);
    return mt_check_fail(check, (const void *)f->block.ptr,
                         "write after free: byte %zu of a freed block of %zu bytes changed", f->at, f->block.size);
}

bool mt_debug_check(struct mt_check *check)
{
    if (!mt_debug_config.enabled)
        return true;
    struct check_failure failure;
    if (!mt_debug_slots_scan(check_slot, &failure))
        return check_fail(check, &failure);
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &stripes[i];
        mt_lock(&s->lock);
        for (size_t j = 0; j < s->table_cap; j++) {
            const struct debug_block *b = &s->table[j];
            if (b->ptr > SLOT_TOMBSTONE && block_broken(b, &failure)) {
                mt_unlock(&s->lock);
                return check_fail(check, &failure);
            }
        }
        mt_unlock(&s->lock);
    }
    return true;
}

/* ---- guard pages and fork ------------------------------------------------------------------ */

bool mt_debug_guard_lookup(const void *addr, struct mt_debug_guard_hit *hit)
{
    uintptr_t a = (uintptr_t)addr;
    for (size_t i = 0; i < STRIPES; i++) {
        struct stripe *s = &stripes[i];
        if (!mt_trylock(&s->lock))
            continue; /* the faulting thread may hold it; a fault handler must not wait */
        for (size_t j = 0; j < s->table_cap; j++) {
            const struct debug_block *b = &s->table[j];
            if (b->ptr <= SLOT_TOMBSTONE || !b->guarded)
                continue;
            if (a >= (uintptr_t)b->map_base && a < (uintptr_t)b->map_base + b->map_size) {
                hit->block = (const void *)b->ptr;
                hit->size = b->size;
                hit->freed = b->state == BLOCK_QUARANTINED;
                hit->alloc_site = b->alloc_site;
                hit->free_site = hit->freed ? b->free_site : NULL;
                mt_unlock(&s->lock);
                return true;
            }
        }
        mt_unlock(&s->lock);
    }
    return false;
}

void mt_debug_fork_prepare(void)
{
    mt_lock(&quarantine.lock);
    for (size_t i = 0; i < STRIPES; i++)
        mt_lock(&stripes[i].lock);
    mt_debug_slots_fork_prepare();
    mt_debug_guard_fork_prepare();
}

void mt_debug_fork_parent(void)
{
    mt_debug_guard_fork_parent();
    mt_debug_slots_fork_parent();
    for (size_t i = STRIPES; i-- > 0;)
        mt_unlock(&stripes[i].lock);
    mt_unlock(&quarantine.lock);
}

void mt_debug_fork_child(void)
{
    mt_debug_guard_fork_child();
    mt_debug_slots_fork_child();
    for (size_t i = 0; i < STRIPES; i++)
        mt_lock_reset(&stripes[i].lock);
    mt_lock_reset(&quarantine.lock);
}
