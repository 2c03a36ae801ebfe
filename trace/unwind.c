/* Stack capture (unwind.h) with unw_backtrace: libunwind's fast trace path caches each
 * code address's frame layout per thread and then walks a stack without interpreting DWARF
 * again. Measured on this machine (libunwind 1.6, per-thread caching): 34 ns for 5 frames
 * and 168 ns for 25, against 1.7 us and 9.3 us stepping a cursor (unw_init_local +
 * unw_step), which re-reads the unwind tables at every step. */
#define UNW_LOCAL_ONLY
#include "unwind.h"
#include "unwind_cache.h"

#include <link.h>
#include <libunwind.h>
#include <stdbool.h>
#include <string.h>

#include "../common/compiler.h"
#include "../common/platform.h"
#include "wire.h"

/* Frames of libmtrace.so above the program's call site: the exported malloc, the slow
 * path, the recorder and this function; a little more for inlining changes. */
#define OWN_FRAMES_MAX 12

/* unwind_cache.h: libmtrace.so's executable range. */
uintptr_t mt_unwind_own_start, mt_unwind_own_end;

static int find_own_text(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    uintptr_t probe = (uintptr_t)arg;
    uintptr_t lo = UINTPTR_MAX, hi = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        uintptr_t end = start + ph->p_memsz;
        if (start < lo)
            lo = start;
        if (end > hi)
            hi = end;
    }
    if (probe >= lo && probe < hi) {
        mt_unwind_own_start = lo;
        mt_unwind_own_end = hi;
        return 1;
    }
    return 0;
}

void mt_unwind_init(void)
{
    if (mt_unwind_own_end)
        return;
    dl_iterate_phdr(find_own_text, (void *)(uintptr_t)&mt_unwind_init);
    unw_set_caching_policy(unw_local_addr_space, UNW_CACHE_PER_THREAD);
    mt_unwind_warm_up();
}

void mt_unwind_warm_up(void)
{
    /* libunwind initialises itself on first use, once per process under pthread_once and
     * once per thread (its trace cache): a signal handler that unwinds while that is in
     * progress on its thread would deadlock on the once or race the cache. Run it here, at
     * start-up and when a thread gets its ring, where nothing can nest. */
    void *frames[4];
    unw_backtrace(frames, (int)MT_ARRAY_LEN(frames));
}

static bool is_own(uintptr_t ip)
{
    return mt_unwind_is_own(ip);
}

static uint32_t drop_own(const void *const *raw, int n, uint64_t *frames, uint32_t depth)
{
    int first = 0;
    while (first < n && is_own((uintptr_t)raw[first]))
        first++;
    uint32_t count = 0;
    for (int i = first; i < n && count < depth; i++)
        frames[count++] = (uint64_t)(uintptr_t)raw[i];
    return count;
}

uint32_t mt_unwind_capture(uint64_t *frames, uint32_t depth)
{
    void *raw[MT_WIRE_DEPTH_MAX + OWN_FRAMES_MAX];
    if (depth > MT_WIRE_DEPTH_MAX)
        depth = MT_WIRE_DEPTH_MAX;
    int n = unw_backtrace(raw, (int)(depth + OWN_FRAMES_MAX));
    return drop_own((const void *const *)raw, n, frames, depth);
}

/* ---- the validated per-thread cache ---------------------------------------------------------- */

/* Our own frames above the program's call site span far less than this. */
#define OWN_STACK_SPAN_MAX (64u * 1024u)

struct mt_unwind_cache *mt_unwind_cache_new(void)
{
    return mt_os_map(sizeof(struct mt_unwind_cache));
}

void mt_unwind_cache_free(struct mt_unwind_cache *cache)
{
    if (cache)
        mt_os_unmap(cache, sizeof *cache);
}

/* Walk the frame-pointer chain from `fp`, a frame record of ours (libmtrace.so's trace
 * objects are all built with -fno-omit-frame-pointer, and every frame between the program
 * and here is ours): each record is [saved rbp, return address]. The first return address
 * outside our code is the program's call site; its stack pointer is just above that
 * record, its frame pointer the one saved there. The checks only keep a broken chain from
 * wandering: such a chain falls back to a full unwind. */
static bool key_from(uintptr_t fp, struct mt_unwind_key *key)
{
#if defined(__x86_64__)
    uintptr_t start = fp;
    for (unsigned i = 0; i < OWN_FRAMES_MAX; i++) {
        if ((fp & (sizeof(uintptr_t) - 1)) != 0 || fp - start > OWN_STACK_SPAN_MAX)
            return false;
        const uintptr_t *record = (const uintptr_t *)fp;
        if (MT_LIKELY(!is_own(record[1]))) {
            key->ip = record[1];
            key->sp = fp + MT_UNWIND_FRAME_RECORD;
            key->fp = record[0];
            return true;
        }
        if (record[0] <= fp)
            return false;
        fp = record[0];
    }
#else
    (void)fp, (void)key;
#endif
    return false;
}

__attribute__((noinline)) bool mt_unwind_key(struct mt_unwind_key *key, const void *frame)
{
    /* The exported function's own frame: its record holds the program's call site, so the
     * walk ends at its first step; without one, from this function's frame. */
    return key_from(frame ? (uintptr_t)frame : (uintptr_t)__builtin_frame_address(0), key);
}

/* Step a cursor over the stack, recording each slot the unwinder reads a return address or
 * a saved frame pointer from; false when some frame is not provably reproducible (a signal
 * frame, a return address not at CFA-8, rbp kept somewhere libunwind cannot name). Also
 * decides whether the key's frame pointer matters: only when some frame whose rbp is
 * still the call site's could compute its CFA from it, i.e. that rbp points into the
 * frame (sp <= rbp <= CFA, as any rbp-based CFA rule has it). Code built without frame
 * pointers keeps data in rbp, which would otherwise make every call a new key. */
static bool walk_slots(struct mt_unwind_entry *e, struct mt_unwind_check *check, const struct mt_unwind_key *key,
                       const uint64_t *frames, uint32_t count, uint32_t depth)
{
#if defined(__x86_64__)
    unw_context_t context;
    unw_cursor_t cursor;
    if (unw_getcontext(&context) != 0 || unw_init_local(&cursor, &context) != 0)
        return false;
    unw_word_t ip = 0, sp = 0, rbp = 0;
    /* Up to the program's frame: it must be the key's. */
    for (unsigned i = 0;; i++) {
        if (i > OWN_FRAMES_MAX || unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0)
            return false;
        if (!is_own(ip))
            break;
        if (unw_step(&cursor) <= 0)
            return false;
    }
    if (unw_get_reg(&cursor, UNW_REG_SP, &sp) != 0 || unw_get_reg(&cursor, UNW_X86_64_RBP, &rbp) != 0 ||
        ip != key->ip || sp != key->sp || rbp != key->fp || count == 0 || frames[0] != ip)
        return false;
    uint32_t checks = 0;
    bool fp_matters = false;
    bool rbp_is_keys = true; /* this frame's rbp is still the call site's */
    /* Where this frame's rbp was restored from, when not the key's: checked only if the
     * frame turns out to compute its CFA from rbp. Code built without frame pointers keeps
     * data in rbp (an interpreter's current object, a loop pointer), different at every
     * call: checked anyway, the entry missed at nearly every use and was walked again
     * (perl: one walk, ~4 us of unw_step, per allocation). */
    struct mt_unwind_check rbp_slot = {0, 0};
    for (uint32_t n = 1;; n++) {
        if (unw_is_signal_frame(&cursor) > 0)
            return false;
        unw_word_t prev_sp = sp, prev_rbp = rbp;
        int stepped = unw_step(&cursor);
        if (stepped < 0)
            return false;
        if (stepped == 0 || n == depth) {
            e->checks = checks;
            e->fp_mask = fp_matters ? ~0ull : 0;
            return n == count;
        }
        if (unw_get_reg(&cursor, UNW_REG_IP, &ip) != 0 || unw_get_reg(&cursor, UNW_REG_SP, &sp) != 0 ||
            unw_get_reg(&cursor, UNW_X86_64_RBP, &rbp) != 0)
            return false;
        /* The frame just left computed its CFA (our sp) from its own sp or rbp; from rbp
         * only if rbp points into it (sp <= rbp <= CFA, as every rbp-based rule has it).
         * Then the value rbp had matters: the key's, or the slot it was restored from,
         * which comes before this frame's slots in unwinding order. */
        if (prev_sp <= prev_rbp && prev_rbp <= sp) {
            if (rbp_is_keys)
                fp_matters = true;
            else
                check[checks++] = rbp_slot;
        }
        if (n >= count || frames[n] != ip)
            return false;
        uintptr_t ra_slot = (uintptr_t)sp - MT_UNWIND_RA_BELOW_CFA;
        if (*(const uint64_t *)ra_slot != ip)
            return false;
        check[checks++] = (struct mt_unwind_check){ra_slot, ip};
        unw_save_loc_t loc;
        if (unw_get_save_loc(&cursor, UNW_X86_64_RBP, &loc) != 0 || loc.type != UNW_SLT_MEMORY)
            return false;
        /* Below the call site's sp: saved by our own frames, so it is the key's. */
        rbp_is_keys = (uintptr_t)loc.u.addr < key->sp;
        if (!rbp_is_keys)
            rbp_slot = (struct mt_unwind_check){(uintptr_t)loc.u.addr, *(const uint64_t *)(uintptr_t)loc.u.addr};
    }
#else
    (void)e, (void)check, (void)key, (void)frames, (void)count, (void)depth;
    return false; /* the key is x86-64 only: never reached elsewhere */
#endif
}

/* Misses between two cursor walks at least. A walk (unw_init_local and unw_step over the
 * whole stack) costs 2 to 10 us, 10 to 50 times the unw_backtrace every miss pays anyway;
 * a key whose stack differs from use to use (two callers reaching one call site at the
 * same stack pointer, two hot keys sharing an entry) would otherwise be walked at nearly
 * every use, and was: gawk filling an array spent 30 times its own time in walks. Spaced
 * out, walks cost at most a few tenths of the misses' unwinding, and a key that recurs is
 * still filled within a few dozen misses. */
#define WALK_SPACING 16

static bool same_key(const struct mt_unwind_entry *e, const struct mt_unwind_key *key, uint32_t depth)
{
    return e->key.ip == key->ip && e->key.sp == key->sp && e->depth == depth;
}

/* The entry of the key's set a miss goes to; *second_sight: it saw this key before and
 * may now be filled. Ready entries are kept while there is another choice: a ready entry
 * of this very key missed because another stack reached it, and both stacks are then
 * kept, one per way. */
static unsigned choose_entry(struct mt_unwind_cache *cache, const struct mt_unwind_key *key, uint32_t depth,
                             bool *second_sight)
{
    unsigned set = mt_unwind_set_index(key->ip, key->sp);
    unsigned first = set * MT_UNWIND_CACHE_WAYS;
    *second_sight = false;
    for (unsigned w = 0; w < MT_UNWIND_CACHE_WAYS; w++) {
        const struct mt_unwind_entry *e = &cache->entry[first + w];
        if (e->state == MT_UNWIND_ENTRY_SEEN && same_key(e, key, depth)) {
            *second_sight = true;
            return first + w;
        }
    }
    for (unsigned w = 0; w < MT_UNWIND_CACHE_WAYS; w++)
        if (cache->entry[first + w].state != MT_UNWIND_ENTRY_READY)
            return first + w;
    unsigned w = cache->victim[set];
    cache->victim[set] = (uint8_t)((w + 1) % MT_UNWIND_CACHE_WAYS);
    return first + w;
}

uint32_t mt_unwind_capture_cached(struct mt_unwind_cache *cache, const struct mt_unwind_key *key,
                                  uint64_t *frames, uint32_t depth, struct mt_unwind_fill *fill)
{
    if (depth > MT_WIRE_DEPTH_MAX)
        depth = MT_WIRE_DEPTH_MAX;
    uint32_t count = mt_unwind_capture(frames, depth);
    bool may_walk = cache->walk_wait == 0;
    if (!may_walk)
        cache->walk_wait--;
    bool second_sight;
    unsigned index = choose_entry(cache, key, depth, &second_sight);
    struct mt_unwind_entry *e = &cache->entry[index];
    fill->entry = NULL;
    e->tag = 0; /* not usable until committed */
    e->key = *key;
    e->state = MT_UNWIND_ENTRY_SEEN;
    e->depth = depth;
    /* The cursor walk (slow) only pays for keys that come back. */
    if (!second_sight || !may_walk)
        return count;
    e->checks = 0;
    cache->walk_wait = WALK_SPACING;
    if (walk_slots(e, cache->list[index].check, key, frames, count, depth))
        fill->entry = e;
    return count;
}

void mt_unwind_cache_commit(struct mt_unwind_fill *fill, uint32_t id, uint32_t generation)
{
    struct mt_unwind_entry *e = fill->entry;
    if (!e || id == 0)
        return;
    e->id = id;
    e->state = MT_UNWIND_ENTRY_READY;
    e->tag = mt_unwind_ready_tag(e->depth, generation);
}
