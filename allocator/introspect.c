/* show_alloc_mem, show_alloc_mem_ex, show_alloc_hist, mt_heap_check and mt_heap_stats.
 *
 * Output is formatted on the stack and written with write(2) through a small buffered
 * writer: no stdio and no malloc, so the functions work from a signal handler, a debugger
 * or a program whose heap is broken. */
#include <string.h>

#include "../common/format.h"
#include "../common/log.h"
#include "alloc.h"
#include "check.h"
#include "debug.h"
#include "introspect.h"
#include "medium.h"
#include "walk.h"

/* A block's dump is cut after this many bytes: enough to recognise a string or a struct,
 * and it keeps a dump of a heap with megabyte blocks readable. */
#define DUMP_MAX_BYTES 4096

void mt_alloc_walk(struct mt_walker *walker)
{
    mt_small_walk(walker);
    mt_medium_collect();
    mt_medium_walk(walker);
    mt_large_walk(walker);
}

void mt_zone_stats_add(struct mt_zone_stats *sum, const struct mt_zone_stats *part)
{
    sum->mapped += part->mapped;
    sum->committed += part->committed;
    sum->in_use += part->in_use;
    sum->free_bytes += part->free_bytes;
    if (part->largest_free > sum->largest_free)
        sum->largest_free = part->largest_free;
    sum->live_blocks += part->live_blocks;
    sum->total_allocs += part->total_allocs;
    sum->total_frees += part->total_frees;
    sum->free_chunks += part->free_chunks;
    sum->releasable += part->releasable;
}

struct show_walker {
    struct mt_walker base;
    struct mt_writer out;
    bool dump;
    size_t total_bytes;
    size_t total_blocks;
};

static const char *zone_name(enum mt_zone_kind kind)
{
    switch (kind) {
    case MT_ZONE_SMALL:
        return "SMALL";
    case MT_ZONE_MEDIUM:
        return "MEDIUM";
    default:
        return "LARGE";
    }
}

static void show_zone(struct mt_walker *w, const struct mt_zone_info *zone)
{
    struct show_walker *sw = (struct show_walker *)w;
    if (zone->kind == MT_ZONE_SMALL)
        mt_writer_printf(&sw->out, "%s %zu : %p (page of %zu KiB)\n", zone_name(zone->kind), zone->block_size,
                         (void *)zone->start, zone->size >> 10);
    else
        mt_writer_printf(&sw->out, "%s : %p (%zu KiB)\n", zone_name(zone->kind), (void *)zone->start,
                         zone->size >> 10);
}

static void dump_block(struct mt_writer *out, const void *ptr, size_t size)
{
    const volatile unsigned char *p = ptr; /* the program may be writing it meanwhile */
    size_t n = size < DUMP_MAX_BYTES ? size : DUMP_MAX_BYTES;
    for (size_t off = 0; off < n; off += 16) {
        char hex[16 * 3 + 1];
        char ascii[17];
        size_t h = 0;
        size_t row = n - off < 16 ? n - off : 16;
        for (size_t i = 0; i < 16; i++) {
            if (i < row) {
                unsigned char c = p[off + i];
                h += mt_fmt(hex + h, sizeof hex - h, "%02x ", c);
                ascii[i] = (c >= 32 && c < 127) ? (char)c : '.';
            } else {
                h += mt_fmt(hex + h, sizeof hex - h, "   ");
                ascii[i] = ' ';
            }
        }
        ascii[16] = '\0';
        mt_writer_printf(out, "    %06zx  %s |%s|\n", off, hex, ascii);
    }
    if (n < size)
        mt_writer_printf(out, "    ... %zu more bytes\n", size - n);
}

static void show_block(struct mt_walker *w, const void *ptr, size_t size)
{
    struct show_walker *sw = (struct show_walker *)w;
    mt_writer_printf(&sw->out, "%p - %p : %zu bytes\n", ptr, (const void *)((const char *)ptr + size), size);
    if (sw->dump)
        dump_block(&sw->out, ptr, size);
    sw->total_bytes += size;
    sw->total_blocks++;
}

static void show(int fd, bool dump)
{
    struct show_walker sw;
    memset(&sw, 0, sizeof sw);
    sw.base.zone = show_zone;
    sw.base.block = show_block;
    sw.dump = dump;
    mt_writer_init(&sw.out, fd);
    mt_alloc_walk(&sw.base);
    mt_writer_printf(&sw.out, "Total : %zu bytes in %zu blocks\n", sw.total_bytes, sw.total_blocks);
    mt_writer_flush(&sw.out);
}

void mt_introspect_show_mem(int fd)
{
    show(fd, false);
}

void mt_introspect_show_mem_ex(int fd)
{
    show(fd, true);
}

/* Width of the bar column of show_alloc_hist. */
#define HIST_BAR_WIDTH 40

static void hist_row(struct mt_writer *out, const char *label, uint64_t live, uint64_t live_bytes, uint64_t allocs,
                     uint64_t max_allocs)
{
    char bar[HIST_BAR_WIDTH + 1];
    size_t len = max_allocs ? (size_t)((allocs * HIST_BAR_WIDTH + max_allocs - 1) / max_allocs) : 0;
    memset(bar, '#', len);
    bar[len] = '\0';
    mt_writer_printf(out, "%-18s %12llu %14llu %14llu  %s\n", label, (unsigned long long)live,
                     (unsigned long long)live_bytes, (unsigned long long)allocs, bar);
}

void mt_introspect_show_hist(int fd)
{
    uint64_t small_live[MT_SMALL_CLASSES] = {0}, small_allocs[MT_SMALL_CLASSES] = {0};
    uint64_t small_cap[MT_SMALL_CLASSES] = {0};
    uint64_t big_live[MT_LOG2_BUCKETS] = {0}, big_allocs[MT_LOG2_BUCKETS] = {0};
    mt_small_histogram(small_live, small_allocs, small_cap);
    mt_medium_collect();
    mt_medium_histogram(big_live, big_allocs);
    mt_large_histogram(big_live, big_allocs);

    uint64_t max_allocs = 0, total_live = 0, total_bytes = 0, total_allocs = 0;
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++)
        max_allocs = small_allocs[c] > max_allocs ? small_allocs[c] : max_allocs;
    for (unsigned b = 0; b < MT_LOG2_BUCKETS; b++)
        max_allocs = big_allocs[b] > max_allocs ? big_allocs[b] : max_allocs;

    struct mt_writer out;
    mt_writer_init(&out, fd);
    mt_writer_printf(&out, "%-18s %12s %14s %14s  %s\n", "size class", "live blocks", "live bytes", "allocations",
                     "allocations (bar)");
    char label[32];
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        if (!small_allocs[c] && !small_live[c])
            continue;
        mt_fmt(label, sizeof label, "%u", mt_class_size[c]);
        hist_row(&out, label, small_live[c], small_live[c] * mt_class_size[c], small_allocs[c], max_allocs);
        total_live += small_live[c];
        total_bytes += small_live[c] * mt_class_size[c];
        total_allocs += small_allocs[c];
    }
    for (unsigned b = 0; b < MT_LOG2_BUCKETS; b++) {
        if (!big_allocs[b] && !big_live[b])
            continue;
        mt_fmt(label, sizeof label, "(%llu, %llu]", b ? 1ull << (b - 1) : 0ull, 1ull << b);
        /* Bytes of medium and large blocks are counted at the bucket's upper bound. */
        hist_row(&out, label, big_live[b], big_live[b] << b, big_allocs[b], max_allocs);
        total_live += big_live[b];
        total_bytes += big_live[b] << b;
        total_allocs += big_allocs[b];
    }
    mt_writer_printf(&out, "%-18s %12llu %14llu %14llu\n", "total", (unsigned long long)total_live,
                     (unsigned long long)total_bytes, (unsigned long long)total_allocs);
    mt_writer_flush(&out);
}

bool mt_check_fail(struct mt_check *check, const void *where, const char *fmt, ...)
{
    if (check->failures++ == 0) {
        size_t n = mt_fmt(check->first, sizeof check->first, "at %p: ", where);
        va_list ap;
        va_start(ap, fmt);
        mt_vfmt(check->first + n, sizeof check->first - n, fmt, ap);
        va_end(ap);
    }
    return false;
}

int mt_heap_check_run(struct mt_check *check)
{
    memset(check, 0, sizeof *check);
    mt_medium_collect();
    bool ok = mt_debug_check(check) && mt_small_check(check) && mt_medium_check(check) && mt_large_check(check);
    return ok ? 0 : -1;
}

int mt_heap_check_report(void)
{
    struct mt_check check;
    if (mt_heap_check_run(&check) == 0)
        return 0;
    mt_error("heap check failed %s", check.first);
    return -1;
}

void mt_heap_stats_fill(struct mt_heap_stats *out)
{
    struct mt_zone_stats s;
    mt_alloc_stats(&s);
    out->mapped = s.mapped;
    out->resident = s.committed;
    out->in_use = s.in_use;
    out->free_bytes = s.free_bytes;
    out->largest_free = s.largest_free;
    out->live_blocks = s.live_blocks;
    out->total_allocs = s.total_allocs;
    out->total_frees = s.total_frees;
}

void mt_alloc_malloc_stats(void)
{
    struct mt_zone_stats small, medium, large, total;
    mt_small_stats(&small);
    mt_medium_stats(&medium);
    mt_large_stats(&large);
    mt_alloc_stats(&total);
    struct mt_writer out;
    mt_writer_init(&out, MT_LOG_FD);
    const struct {
        const char *name;
        const struct mt_zone_stats *s;
    } rows[] = {{"small slabs", &small}, {"medium arenas", &medium}, {"large mappings", &large}};
    for (size_t i = 0; i < 3; i++) {
        mt_writer_printf(&out, "%s:\n", rows[i].name);
        mt_writer_printf(&out, "system bytes     = %10zu\n", rows[i].s->committed);
        mt_writer_printf(&out, "in use bytes     = %10zu\n", rows[i].s->in_use);
    }
    mt_writer_printf(&out, "Total (incl. mmap):\n");
    mt_writer_printf(&out, "system bytes     = %10zu\n", total.committed);
    mt_writer_printf(&out, "in use bytes     = %10zu\n", total.in_use);
    mt_writer_printf(&out, "mmap regions     = %10zu\n", large.live_blocks);
    mt_writer_printf(&out, "mmap bytes       = %10zu\n", large.mapped);
    mt_writer_flush(&out);
}
