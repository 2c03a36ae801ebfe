/* Large blocks (see large.h). */
#include "large.h"

#include <string.h>

#include "../common/lock.h"
#include "../common/platform.h"
#include "check.h"
#include "harden.h"
#include "stats.h"
#include "tunables.h"
#include "walk.h"

struct large_header {
    uint64_t check;       /* large_header_sum(): covers every field free() trusts */
    uint8_t *map_base;
    size_t map_size;
    size_t usable;
    uint64_t reserved[4];
};
_Static_assert(sizeof(struct large_header) == MT_LARGE_HEADER, "large header size");

/* Registry: open addressing with linear probing over user pointers; TOMBSTONE marks a
 * removed entry so probe chains stay intact. Grows at 50% load. */
#define REGISTRY_MIN 256
#define TOMBSTONE ((uintptr_t)1)
/* Freed blocks remembered to tell a double free from an invalid one. Searched only on the
 * error path, so the cost is 16 KiB of address space: 1024 covers a program that frees
 * hundreds of large buffers between the two frees (64 was often too few, and the report
 * then called a double free "not allocated by mtrace"). */
#define RECENT_FREED 1024

static mt_lock_t large_lock = MT_LOCK_INIT;
static uintptr_t *registry;
static size_t registry_cap;  /* power of two */
static size_t registry_used; /* live + tombstones */
static size_t live_count;
static size_t live_mapped;
static size_t live_usable;
static size_t total_allocs;
static size_t total_frees;
/* MT_BIG_BSS: written only by programs that map large blocks (see heap.c's
 * mt_retired_class_allocs). */
static uint64_t hist_live[MT_LOG2_BUCKETS] MT_BIG_BSS;
static uint64_t hist_allocs[MT_LOG2_BUCKETS] MT_BIG_BSS;
static struct {
    uintptr_t ptr;
    size_t size;
} recent[RECENT_FREED] MT_BIG_BSS;
static size_t recent_next;

static struct large_header *header_of(const void *ptr)
{
    return (struct large_header *)((uintptr_t)ptr - MT_LARGE_HEADER);
}

/* The keyed checksum of a header. free() passes map_base and map_size to munmap, so they
 * are covered as well as usable: an overwritten map_base would otherwise unmap memory of
 * the attacker's choosing. One keyed term per field (keyed by the field's address), so a
 * change to one field cannot be compensated in another without the key. */
static uint64_t large_header_sum(const struct large_header *h)
{
    uintptr_t at = (uintptr_t)h;
    return mt_header_check(at, h->usable) ^ mt_header_check(at + sizeof(uint64_t), (uint64_t)(uintptr_t)h->map_base) ^
           mt_header_check(at + 2 * sizeof(uint64_t), h->map_size);
}

static size_t slot_of(uintptr_t key, size_t cap)
{
    return (size_t)(mt_mix64(key) & (cap - 1));
}

static bool registry_grow(void)
{
    size_t new_cap = registry_cap ? registry_cap * 2 : REGISTRY_MIN;
    uintptr_t *table = mt_os_map(new_cap * sizeof *table);
    if (!table)
        return false;
    for (size_t i = 0; i < registry_cap; i++) {
        uintptr_t key = registry[i];
        if (key <= TOMBSTONE)
            continue;
        size_t s = slot_of(key, new_cap);
        while (table[s])
            s = (s + 1) & (new_cap - 1);
        table[s] = key;
    }
    if (registry)
        mt_os_unmap(registry, registry_cap * sizeof *registry);
    registry = table;
    registry_cap = new_cap;
    registry_used = live_count;
    return true;
}

static bool registry_insert(uintptr_t key)
{
    if ((registry_used + 1) * 2 > registry_cap && !registry_grow())
        return false;
    size_t s = slot_of(key, registry_cap);
    while (registry[s] > TOMBSTONE)
        s = (s + 1) & (registry_cap - 1);
    if (registry[s] == 0)
        registry_used++;
    registry[s] = key;
    return true;
}

static size_t registry_find(uintptr_t key)
{
    if (!registry_cap)
        return SIZE_MAX;
    size_t s = slot_of(key, registry_cap);
    while (registry[s]) {
        if (registry[s] == key)
            return s;
        s = (s + 1) & (registry_cap - 1);
    }
    return SIZE_MAX;
}

static void account(size_t usable, size_t mapped, int delta)
{
    unsigned bucket = mt_log2_ceil(usable);
    if (delta > 0) {
        live_count++;
        live_mapped += mapped;
        live_usable += usable;
        total_allocs++;
        hist_live[bucket]++;
        hist_allocs[bucket]++;
    } else {
        live_count--;
        live_mapped -= mapped;
        live_usable -= usable;
        total_frees++;
        hist_live[bucket]--;
    }
}

void *mt_large_malloc(size_t size, size_t align)
{
    size_t page = mt_os_page_size();
    /* A zero-byte block (memalign(4096, 0) reaches here) still gets a byte: otherwise its
     * pointer would sit at the very end of its mapping with a usable size of 0, which
     * realloc reads as "not a live block" and fails without setting errno. */
    if (size == 0)
        size = 1;
    if (align < MT_LARGE_HEADER)
        align = MT_LARGE_HEADER;
    /* Header before the pointer; for alignments beyond a page the mapping is over-sized and
     * the pointer placed at the first aligned address past the header. */
    size_t lead = align <= page ? align : align + page;
    if (size > SIZE_MAX - lead - page)
        return NULL;
    size_t map_size = mt_align_up(size + lead, page);
    uint8_t *base = mt_os_map(map_size);
    if (!base)
        return NULL;
    uintptr_t user = mt_ptr_align_up((uintptr_t)base + MT_LARGE_HEADER, align);
    if (align > page) {
        /* Trim the unused head so only the aligned block stays mapped (keeping the page
         * with the header). */
        uintptr_t keep = mt_align_down(user - MT_LARGE_HEADER, page);
        size_t head = keep - (uintptr_t)base;
        if (head) {
            mt_os_unmap(base, head);
            base += head;
            map_size -= head;
        }
        size_t needed = mt_align_up(user + size - (uintptr_t)base, page);
        if (map_size > needed) {
            mt_os_unmap(base + needed, map_size - needed);
            map_size = needed;
        }
    }
    struct large_header *h = header_of((void *)user);
    h->map_base = base;
    h->map_size = map_size;
    h->usable = (size_t)((uintptr_t)base + map_size - user);
    h->check = large_header_sum(h);
    mt_lock(&large_lock);
    bool ok = registry_insert(user);
    if (ok)
        account(h->usable, map_size, +1);
    mt_unlock(&large_lock);
    if (!ok) {
        mt_os_unmap(base, map_size);
        return NULL;
    }
    return (void *)user;
}

bool mt_large_owns(const void *ptr)
{
    mt_lock(&large_lock);
    bool found = registry_find((uintptr_t)ptr) != SIZE_MAX;
    mt_unlock(&large_lock);
    return found;
}

bool mt_large_recently_freed(const void *ptr, size_t *size_out)
{
    bool found = false;
    mt_lock(&large_lock);
    for (size_t i = 0; i < RECENT_FREED; i++) {
        if (recent[i].ptr == (uintptr_t)ptr) {
            if (size_out)
                *size_out = recent[i].size;
            found = true;
            break;
        }
    }
    mt_unlock(&large_lock);
    return found;
}

static void report_unknown(const void *ptr, enum mt_api api, bool is_free)
{
    size_t size = 0;
    if (mt_large_recently_freed(ptr, &size)) {
        enum mt_heap_error_kind kind = is_free                 ? MT_ERR_DOUBLE_FREE
                                       : api == MT_API_REALLOC ? MT_ERR_REALLOC_FREED
                                                               : MT_ERR_FREED_BLOCK;
        mt_heap_error_simple(kind, ptr, size, api, NULL);
    } else {
        mt_heap_error_simple(MT_ERR_INVALID_FREE, ptr, 0, api,
                             "not allocated by mtrace (stack, global, another allocator's memory) or a large "
                             "block freed long before");
    }
}

/* Verify the header of a registered block; reports corruption. */
static bool header_ok(const void *ptr, enum mt_api api)
{
    struct large_header *h = header_of(ptr);
    if (MT_UNLIKELY(h->check != large_header_sum(h))) {
        mt_heap_error_simple(MT_ERR_CORRUPT_HEADER, ptr, 0, api, "the header of a large block was overwritten");
        return false;
    }
    return true;
}

void mt_large_free(void *ptr, enum mt_api api)
{
    mt_lock(&large_lock);
    size_t s = registry_find((uintptr_t)ptr);
    if (s == SIZE_MAX) {
        mt_unlock(&large_lock);
        report_unknown(ptr, api, true);
        return;
    }
    if (!header_ok(ptr, api)) {
        mt_unlock(&large_lock);
        return;
    }
    struct large_header *h = header_of(ptr);
    uint8_t *base = h->map_base;
    size_t map_size = h->map_size;
    size_t usable = h->usable;
    registry[s] = TOMBSTONE;
    account(usable, map_size, -1);
    recent[recent_next].ptr = (uintptr_t)ptr;
    recent[recent_next].size = usable;
    recent_next = (recent_next + 1) % RECENT_FREED;
    mt_unlock(&large_lock);
    mt_os_unmap(base, map_size);
    mt_tunables_note_mapped_free(usable);
}

size_t mt_large_usable_size(const void *ptr, enum mt_api api)
{
    mt_lock(&large_lock);
    bool found = registry_find((uintptr_t)ptr) != SIZE_MAX;
    mt_unlock(&large_lock);
    if (!found) {
        report_unknown(ptr, api, false);
        return 0;
    }
    if (!header_ok(ptr, api))
        return 0;
    return header_of(ptr)->usable;
}

void *mt_large_realloc(void *ptr, size_t new_size)
{
    struct large_header *h = header_of(ptr);
    /* Only blocks whose pointer sits right after the header can move with mremap and keep
     * their alignment guarantee (16); over-aligned ones are copied by the caller. */
    if ((uintptr_t)ptr != (uintptr_t)h->map_base + MT_LARGE_HEADER)
        return NULL;
    size_t page = mt_os_page_size();
    if (new_size > SIZE_MAX - MT_LARGE_HEADER - page)
        return NULL;
    size_t new_map = mt_align_up(new_size + MT_LARGE_HEADER, page);
    size_t old_map = h->map_size;
    size_t old_usable = h->usable;
    uint8_t *base = mt_os_remap(h->map_base, old_map, new_map, true);
    if (!base)
        return NULL;
    uint8_t *user = base + MT_LARGE_HEADER;
    struct large_header *nh = header_of(user);
    nh->map_base = base;
    nh->map_size = new_map;
    nh->usable = new_map - MT_LARGE_HEADER;
    nh->check = large_header_sum(nh);
    mt_lock(&large_lock);
    size_t s = registry_find((uintptr_t)ptr);
    if (s != SIZE_MAX)
        registry[s] = TOMBSTONE;
    account(old_usable, old_map, -1);
    total_frees--; /* a resize is not a free and an allocation */
    total_allocs--;
    registry_insert((uintptr_t)user);
    account(nh->usable, new_map, +1);
    mt_unlock(&large_lock);
    return user;
}

void mt_large_stats(struct mt_zone_stats *out)
{
    memset(out, 0, sizeof *out);
    mt_lock(&large_lock);
    out->mapped = live_mapped;
    out->committed = live_mapped;
    out->in_use = live_usable;
    out->live_blocks = live_count;
    out->total_allocs = total_allocs;
    out->total_frees = total_frees;
    mt_unlock(&large_lock);
}

void mt_large_histogram(uint64_t live[MT_LOG2_BUCKETS], uint64_t allocs[MT_LOG2_BUCKETS])
{
    mt_lock(&large_lock);
    for (size_t b = 0; b < MT_LOG2_BUCKETS; b++) {
        live[b] += hist_live[b];
        allocs[b] += hist_allocs[b];
    }
    mt_unlock(&large_lock);
}

void mt_large_registry_range(uintptr_t *start, size_t *bytes)
{
    mt_lock(&large_lock);
    *start = (uintptr_t)registry;
    *bytes = registry_cap * sizeof *registry;
    mt_unlock(&large_lock);
}

void mt_large_walk(struct mt_walker *walker)
{
    mt_lock(&large_lock);
    for (size_t i = 0; i < registry_cap; i++) {
        uintptr_t key = registry[i];
        if (key <= TOMBSTONE)
            continue;
        struct large_header *h = header_of((void *)key);
        if (walker->zone) {
            struct mt_zone_info zone = {MT_ZONE_LARGE, (uintptr_t)h->map_base, h->map_size, 0};
            walker->zone(walker, &zone);
        }
        if (walker->block)
            walker->block(walker, (void *)key, h->usable);
    }
    mt_unlock(&large_lock);
}

bool mt_large_check(struct mt_check *check)
{
    bool ok = true;
    mt_lock(&large_lock);
    size_t seen = 0;
    for (size_t i = 0; i < registry_cap && ok; i++) {
        uintptr_t key = registry[i];
        if (key <= TOMBSTONE)
            continue;
        seen++;
        struct large_header *h = header_of((void *)key);
        if (h->check != large_header_sum(h))
            ok = mt_check_fail(check, (void *)key, "large block header checksum does not verify");
        else if ((uintptr_t)h < (uintptr_t)h->map_base ||
                 key + h->usable != (uintptr_t)h->map_base + h->map_size)
            ok = mt_check_fail(check, (void *)key, "large block extends outside its mapping");
    }
    if (ok && seen != live_count)
        ok = mt_check_fail(check, NULL, "large registry holds %zu blocks but the count says %zu", seen, live_count);
    mt_unlock(&large_lock);
    return ok;
}

void mt_large_fork_prepare(void)
{
    mt_lock(&large_lock);
}

void mt_large_fork_parent(void)
{
    mt_unlock(&large_lock);
}

void mt_large_fork_child(void)
{
    mt_lock_reset(&large_lock);
}
