/* The exit leak scan (leak_scan.h): a sorted table of live blocks, roots from
 * /proc/self/maps minus what is ours, then a mark phase with an explicit worklist. */
#ifdef MT_TRACING
#include "leak_scan.h"

#include <link.h>
#include <string.h>

#include "../allocator/debug.h"
#include "../allocator/large.h"
#include "../allocator/segmap.h"
#include "../allocator/walk.h"
#include "../common/compiler.h"
#include "../common/platform.h"
#include "../trace/wire.h"

/* Slack over the first count of live blocks, in case other threads still allocate while
 * the table is filled (blocks beyond it are not classified: they count as reachable). */
#define BLOCK_SLACK 1024
/* Ranges not to scan: our own data segments, the scan's tables, the large registry. */
#define FIXED_EXCLUSIONS 32
/* First size of the /proc/self/maps buffer (doubled as needed): 1 MiB holds ~10k
 * mappings, more than most programs have, so it is usually read in one go. */
#define MAPS_BUFFER_START (1u << 20)
/* Bytes copied out and scanned at a time (one system call each). */
#define SCAN_CHUNK (256u * 1024u)
/* Marked blocks at most this far apart are copied out together (scan_round). */
#define CLUSTER_GAP 4096u

struct range {
    uintptr_t start, end;
};

struct scan {
    struct mt_walker walker;
    struct range *blocks; /* sorted by start */
    size_t count, cap;
    struct range *excluded; /* sorted by start after collection */
    size_t excluded_count, excluded_cap;
    uint8_t *marked;
    uint32_t *work;
    size_t work_len;
    uintptr_t lowest, highest; /* of all blocks: a quick filter */
    uintptr_t *chunk;          /* SCAN_CHUNK bytes */
};

static void *map_array(size_t count, size_t elem, size_t *bytes)
{
    *bytes = mt_align_up(count * elem + 1, mt_os_page_size());
    return mt_os_map(*bytes);
}

static void count_block(struct mt_walker *w, const void *ptr, size_t size)
{
    (void)ptr;
    (void)size;
    ((struct scan *)(void *)w)->count++;
}

static void count_zone(struct mt_walker *w, const struct mt_zone_info *zone)
{
    if (zone->kind == MT_ZONE_LARGE)
        ((struct scan *)(void *)w)->excluded_count++;
}

static void add_block(struct mt_walker *w, const void *ptr, size_t size)
{
    struct scan *s = (struct scan *)(void *)w;
    if (s->count < s->cap)
        s->blocks[s->count++] = (struct range){(uintptr_t)ptr, (uintptr_t)ptr + size};
}

static void exclude(struct scan *s, uintptr_t start, uintptr_t end)
{
    if (s->excluded_count < s->excluded_cap && start < end)
        s->excluded[s->excluded_count++] = (struct range){start, end};
}

static void exclude_page_range(void *ctx, uintptr_t start, size_t bytes)
{
    size_t page = mt_os_page_size();
    exclude(ctx, mt_align_down(start, page), mt_align_up(start + bytes, page));
}

static void add_zone(struct mt_walker *w, const struct mt_zone_info *zone)
{
    if (zone->kind == MT_ZONE_LARGE)
        exclude((struct scan *)(void *)w, zone->start, zone->start + zone->size);
}

/* Heapsort by start: no recursion, no allocation (qsort may call malloc). */
static void sift_down(struct range *a, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && a[child + 1].start > a[child].start)
            child++;
        if (a[root].start >= a[child].start)
            return;
        struct range t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

static void sift_down_index(uint32_t *a, size_t root, size_t n)
{
    for (;;) {
        size_t child = 2 * root + 1;
        if (child >= n)
            return;
        if (child + 1 < n && a[child + 1] > a[child])
            child++;
        if (a[root] >= a[child])
            return;
        uint32_t t = a[root];
        a[root] = a[child];
        a[child] = t;
        root = child;
    }
}

/* Block indices in increasing order, i.e. by address (the blocks are sorted). */
static void sort_indices(uint32_t *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down_index(a, i, n);
    for (size_t end = n; end-- > 1;) {
        uint32_t t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down_index(a, 0, end);
    }
}

static void sort_ranges(struct range *a, size_t n)
{
    for (size_t i = n / 2; i-- > 0;)
        sift_down(a, i, n);
    for (size_t end = n; end-- > 1;) {
        struct range t = a[0];
        a[0] = a[end];
        a[end] = t;
        sift_down(a, 0, end);
    }
}

/* Index of the block containing `addr`, or SIZE_MAX. */
static size_t find_block(const struct scan *s, uintptr_t addr)
{
    size_t lo = 0, hi = s->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (s->blocks[mid].start <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return SIZE_MAX;
    return addr < s->blocks[lo - 1].end ? lo - 1 : SIZE_MAX;
}

static void scan_buffer(struct scan *s, const uintptr_t *words, size_t count)
{
    for (size_t k = 0; k < count; k++) {
        uintptr_t word = words[k];
        if (word < s->lowest || word >= s->highest)
            continue;
        size_t i = find_block(s, word);
        if (i != SIZE_MAX && !s->marked[i]) {
            s->marked[i] = 1;
            s->work[s->work_len++] = (uint32_t)i;
        }
    }
}

/* Memory is copied out before it is read: another thread that is still running at exit
 * may unmap a large block or a mapping while we scan it, and a copy of an unmapped page
 * fails where a load would kill the process. */
static void scan_words(struct scan *s, uintptr_t start, uintptr_t end)
{
    start = mt_ptr_align_up(start, sizeof(uintptr_t));
    size_t page = mt_os_page_size();
    while (start + sizeof(uintptr_t) <= end) {
        size_t want = MT_MIN(end - start, SCAN_CHUNK);
        long copied = mt_os_read_own_memory(start, s->chunk, want);
        if (copied < 0) {
            /* No safe copy on this system: read in place (a concurrent unmap would fault). */
            scan_buffer(s, (const uintptr_t *)start, (end - start) / sizeof(uintptr_t));
            return;
        }
        size_t got = (size_t)copied;
        scan_buffer(s, s->chunk, got / sizeof(uintptr_t));
        if (got == want) {
            start += want;
        } else {
            /* Skip the unreadable page. */
            start = mt_ptr_align_up(start + got + 1, page);
        }
    }
}

/* Scan the marked blocks idx[0..n) (in address order) for pointers, copying each run of
 * neighbours out with one system call: live blocks are mostly small and side by side, and
 * a copy per block was the scan's whole cost at exit for a program that keeps many (gawk
 * leaving a 300000-entry array: 300000 process_vm_readv calls). A run is blocks at most
 * CLUSTER_GAP apart within SCAN_CHUNK bytes, so little memory between them is copied. */
static void scan_round(struct scan *s, const uint32_t *idx, size_t n)
{
    for (size_t k = 0; k < n;) {
        const struct range *first = &s->blocks[idx[k]];
        size_t last = k;
        while (last + 1 < n) {
            const struct range *next = &s->blocks[idx[last + 1]];
            if (next->start - s->blocks[idx[last]].end > CLUSTER_GAP || next->end - first->start > SCAN_CHUNK)
                break;
            last++;
        }
        long copied = last > k ? mt_os_read_own_memory(first->start, s->chunk, s->blocks[idx[last]].end - first->start)
                               : -1;
        for (; k <= last; k++) {
            const struct range *b = &s->blocks[idx[k]];
            if (copied >= 0 && b->end - first->start <= (uintptr_t)copied) {
                scan_buffer(s, s->chunk + (b->start - first->start) / sizeof(uintptr_t),
                            (b->end - b->start) / sizeof(uintptr_t));
            } else {
                /* Alone, or past what could be copied: block by block (this reuses the
                 * copy buffer, so the rest of the run goes this way too). */
                copied = -1;
                scan_words(s, b->start, b->end);
            }
        }
    }
}

/* Scan [start, end) minus the exclusions and the allocator's segments. */
static void scan_root(struct scan *s, uintptr_t start, uintptr_t end)
{
    size_t e = 0;
    while (e < s->excluded_count && s->excluded[e].end <= start)
        e++;
    uintptr_t p = start;
    while (p < end) {
        if (e < s->excluded_count && s->excluded[e].start <= p) {
            p = s->excluded[e].end > p ? s->excluded[e].end : p;
            e++;
            continue;
        }
        uintptr_t stop = end;
        if (e < s->excluded_count && s->excluded[e].start < stop)
            stop = s->excluded[e].start;
        /* Segment by segment: the allocator's segments are not roots. */
        uintptr_t segment_end = mt_ptr_align_up(p + 1, (uintptr_t)MT_SEGMENT_SIZE);
        if (segment_end < stop)
            stop = segment_end;
        if (mt_segmap_entry(p) == MT_SEG_NONE)
            scan_words(s, p, stop);
        p = stop;
    }
}

static int exclude_own_data(struct dl_phdr_info *info, size_t size, void *arg)
{
    (void)size;
    struct scan *s = arg;
    uintptr_t probe = (uintptr_t)&exclude_own_data;
    bool ours = false;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        if (ph->p_type == PT_LOAD && probe >= start && probe < start + ph->p_memsz)
            ours = true;
    }
    if (!ours)
        return 0;
    size_t page = mt_os_page_size();
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_W))
            continue;
        uintptr_t start = info->dlpi_addr + ph->p_vaddr;
        exclude(s, mt_align_down(start, page), mt_align_up(start + ph->p_memsz, page));
    }
    return 1;
}

static bool parse_hex(const char **text, uintptr_t *out)
{
    const char *p = *text;
    uintptr_t v = 0;
    bool any = false;
    for (;; p++) {
        unsigned d;
        if (*p >= '0' && *p <= '9')
            d = (unsigned)(*p - '0');
        else if (*p >= 'a' && *p <= 'f')
            d = (unsigned)(*p - 'a' + 10);
        else
            break;
        v = v << 4 | d;
        any = true;
    }
    *text = p;
    *out = v;
    return any;
}

static bool skipped_mapping(const char *line, const char *line_end)
{
    static const char *const names[] = {"memfd:mtrace", "[vvar", "[vsyscall]"};
    size_t len = (size_t)(line_end - line);
    for (size_t n = 0; n < MT_ARRAY_LEN(names); n++) {
        if (memmem(line, len, names[n], strlen(names[n])))
            return true;
    }
    return false;
}

/* Read /proc/self/maps whole into mmap'ed memory. */
static char *read_maps(size_t *len_out, size_t *cap_out)
{
    int fd = mt_os_open_read("/proc/self/maps");
    if (fd < 0)
        return NULL;
    size_t cap = MAPS_BUFFER_START, len = 0;
    char *buf = mt_os_map(cap);
    while (buf) {
        if (len == cap) {
            char *bigger = mt_os_remap(buf, cap, cap * 2, true);
            if (!bigger) {
                mt_os_unmap(buf, cap);
                buf = NULL;
                break;
            }
            buf = bigger;
            cap *= 2;
        }
        long n = mt_os_read(fd, buf + len, cap - len);
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    mt_os_close(fd);
    *len_out = len;
    *cap_out = cap;
    return buf;
}

/* Every writable mapping; the calling thread's stack only from `stack_low` up: below it
 * are the recorder's own frames, whose dead slots hold stale copies of block addresses. */
static void scan_mappings(struct scan *s, uintptr_t stack_low)
{
    size_t len, cap;
    char *maps = read_maps(&len, &cap);
    if (!maps)
        return;
    for (const char *line = maps; line < maps + len;) {
        const char *line_end = memchr(line, '\n', (size_t)(maps + len - line));
        if (!line_end)
            line_end = maps + len;
        const char *p = line;
        uintptr_t start, end;
        if (parse_hex(&p, &start) && *p++ == '-' && parse_hex(&p, &end) && *p++ == ' ' && p + 2 <= line_end &&
            p[0] == 'r' && p[1] == 'w' && !skipped_mapping(line, line_end)) {
            if (stack_low >= start && stack_low < end)
                start = stack_low;
            scan_root(s, start, end);
        }
        line = line_end + 1;
    }
    mt_os_unmap(maps, cap);
}

bool mt_leak_scan_run(mt_leak_emit_fn emit, struct mt_leak_result *out, const void *stack_top_of_ours)
{
    struct scan s;
    memset(&s, 0, sizeof s);
    s.walker.block = count_block;
    s.walker.zone = count_zone;
    mt_alloc_walk(&s.walker);
    s.cap = s.count + s.count / 8 + BLOCK_SLACK;
    s.excluded_cap = s.excluded_count + s.excluded_count / 8 + BLOCK_SLACK + FIXED_EXCLUSIONS;
    size_t blocks_bytes, excluded_bytes, marked_bytes, work_bytes;
    s.blocks = map_array(s.cap, sizeof *s.blocks, &blocks_bytes);
    s.excluded = map_array(s.excluded_cap, sizeof *s.excluded, &excluded_bytes);
    s.marked = map_array(s.cap, 1, &marked_bytes);
    s.work = map_array(s.cap, sizeof *s.work, &work_bytes);
    s.chunk = mt_os_map(SCAN_CHUNK);
    bool ok = s.blocks && s.excluded && s.marked && s.work && s.chunk;
    if (ok) {
        s.count = 0;
        s.excluded_count = 0;
        s.walker.block = add_block;
        s.walker.zone = add_zone;
        mt_alloc_walk(&s.walker);
        sort_ranges(s.blocks, s.count);
        s.lowest = s.count ? s.blocks[0].start : 0;
        for (size_t i = 0; i < s.count; i++)
            if (s.blocks[i].end > s.highest)
                s.highest = s.blocks[i].end;
        exclude(&s, (uintptr_t)s.blocks, (uintptr_t)s.blocks + blocks_bytes);
        exclude(&s, (uintptr_t)s.excluded, (uintptr_t)s.excluded + excluded_bytes);
        exclude(&s, (uintptr_t)s.marked, (uintptr_t)s.marked + marked_bytes);
        exclude(&s, (uintptr_t)s.work, (uintptr_t)s.work + work_bytes);
        exclude(&s, (uintptr_t)s.chunk, (uintptr_t)s.chunk + SCAN_CHUNK);
        uintptr_t registry;
        size_t registry_bytes;
        mt_large_registry_range(&registry, &registry_bytes);
        exclude_page_range(&s, registry, registry_bytes);
        mt_debug_metadata_ranges(exclude_page_range, &s);
        dl_iterate_phdr(exclude_own_data, &s);
        sort_ranges(s.excluded, s.excluded_count);
        scan_mappings(&s, (uintptr_t)stack_top_of_ours);
        /* Rounds: the blocks marked so far, in address order; scanning them appends
         * the next round's (each block is marked, and queued, once: the work array,
         * sized for every block, never wraps). */
        for (size_t done = 0; done < s.work_len;) {
            size_t round_end = s.work_len;
            sort_indices(s.work + done, round_end - done);
            scan_round(&s, s.work + done, round_end - done);
            done = round_end;
        }
        uint64_t batch[MT_WIRE_LEAKED_PER_REC];
        uint32_t n = 0;
        out->live_blocks = s.count;
        out->leaked_blocks = 0;
        for (size_t i = 0; i < s.count; i++) {
            if (s.marked[i])
                continue;
            out->leaked_blocks++;
            batch[n++] = s.blocks[i].start;
            if (n == MT_WIRE_LEAKED_PER_REC) {
                emit(batch, n);
                n = 0;
            }
        }
        if (n)
            emit(batch, n);
    }
    if (s.blocks)
        mt_os_unmap(s.blocks, blocks_bytes);
    if (s.excluded)
        mt_os_unmap(s.excluded, excluded_bytes);
    if (s.marked)
        mt_os_unmap(s.marked, marked_bytes);
    if (s.work)
        mt_os_unmap(s.work, work_bytes);
    if (s.chunk)
        mt_os_unmap(s.chunk, SCAN_CHUNK);
    return ok;
}
#endif
