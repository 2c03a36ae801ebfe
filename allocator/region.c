/* Regions (region.h): one reservation of address space per region, bump allocation inside
 * it, pops that give pages back to the OS past a slack.
 *
 * Layout of a reservation:
 *
 *   base                data                       committed_end              end
 *   | handle | pad       | pushed ... pos | dirty .. | reserved, PROT_NONE ... |
 *
 * Invariants (every pointer below is inside [base, end]):
 *   - the handle is the first bytes of the reservation (base == handle), so a region is one
 *     mapping and release is one munmap;
 *   - data + pos <= dirty_end <= committed_end <= end;
 *   - bytes in [dirty_end, end) read as zero: never written since the kernel mapped them or
 *     since they were decommitted (MADV_DONTNEED), so push_zero clears only below dirty_end;
 *   - committed_end is a multiple of the page size and only grows: decommitting leaves the
 *     pages read-write (MADV_DONTNEED drops their contents and RSS, not their protection),
 *     which keeps the next push into them free of system calls;
 *   - check == mt_header_check(handle, reserve): a handle that is not one (a stray pointer,
 *     an overwritten header) is reported instead of being trusted.
 *
 * Not thread-safe by contract (include/mtrace.h): one thread uses a region at a time, so
 * there is no lock. Nothing here allocates from the heap. */
#include "region.h"

#include <errno.h>
#include <string.h>

#include "../common/compiler.h"
#include "../common/platform.h"
#include "alloc_init.h"
#include "error.h"
#include "harden.h"

/* Pages are made read-write in steps of this many bytes: a region growing by small pushes
 * makes one mprotect per 16 pages instead of one per page. Nothing becomes resident until
 * it is touched, so the step costs no memory. */
#define REGION_COMMIT_STEP ((size_t)64 << 10)
/* Alignment of every push when auto-alignment is on: what malloc guarantees on x86-64
 * (max_align_t), so region memory can hold anything malloc memory can. */
#define REGION_AUTO_ALIGN ((size_t)16)

struct mt_arena {
    uint64_t check;           /* mt_header_check(handle address, reserve) */
    uint8_t *data;            /* first byte handed out: position 0 */
    uint8_t *end;             /* end of the reservation */
    uint8_t *committed_end;   /* read-write below this */
    uint8_t *dirty_end;       /* bytes at and past this read as zero */
    size_t pos;               /* bytes used from data */
    size_t reserve;           /* bytes of the whole mapping, handle included */
    bool auto_align;
};

/* The first push starts a cache line after the handle, so the handle and the program's
 * first block never share a line. */
#define REGION_HEADER_SIZE mt_align_up(sizeof(struct mt_arena), MT_CACHE_LINE)

static MT_COLD void region_invalid(const void *region, enum mt_api api, const char *detail)
{
    mt_heap_error_simple(MT_ERR_INVALID_REGION, region, 0, api, detail);
}

/* True when `region` is a live handle; otherwise reports it as `api`. */
static bool region_ok(const mt_arena_t *region, enum mt_api api)
{
    if (MT_UNLIKELY(region == NULL)) {
        region_invalid(region, api, "NULL region handle");
        return false;
    }
    if (MT_UNLIKELY(region->check != mt_header_check((uintptr_t)region, region->reserve))) {
        region_invalid(region, api, "not a region handle (its header was overwritten, or it was released)");
        return false;
    }
    return true;
}

/* Make [committed_end, need) read-write, a step at a time. */
static bool region_commit(mt_arena_t *region, uint8_t *need)
{
    size_t step_end = mt_align_up((size_t)(need - (uint8_t *)region), REGION_COMMIT_STEP);
    uint8_t *target = (uint8_t *)region + MT_MIN(step_end, region->reserve);
    if (!mt_os_commit(region->committed_end, (size_t)(target - region->committed_end)))
        return false;
    region->committed_end = target;
    return true;
}

mt_arena_t *mt_region_create(size_t reserve)
{
    /* The handle's check is keyed with the allocator's secret, drawn at init. */
    if (!mt_alloc_ensure_init()) {
        errno = ENOMEM;
        return NULL;
    }
    size_t page = mt_os_page_size();
    if (reserve == 0)
        reserve = MT_REGION_DEFAULT_RESERVE;
    if (reserve > SIZE_MAX - REGION_HEADER_SIZE - page) {
        errno = ENOMEM;
        return NULL;
    }
    /* The caller can push `reserve` bytes: the handle comes on top. */
    size_t total = mt_align_up(reserve + REGION_HEADER_SIZE, page);
    uint8_t *base = mt_os_reserve(total);
    if (!base) {
        errno = ENOMEM;
        return NULL;
    }
    size_t first = MT_MIN(REGION_COMMIT_STEP, total);
    if (!mt_os_commit(base, first)) {
        mt_os_unmap(base, total);
        errno = ENOMEM;
        return NULL;
    }
    mt_arena_t *region = (mt_arena_t *)base;
    region->data = base + REGION_HEADER_SIZE;
    region->end = base + total;
    region->committed_end = base + first;
    region->dirty_end = region->data;
    region->pos = 0;
    region->reserve = total;
    region->auto_align = true;
    region->check = mt_header_check((uintptr_t)region, total);
    return region;
}

void *mt_region_push(mt_arena_t *region, size_t size, size_t align, bool zero)
{
    if (!region_ok(region, MT_API_ARENA_PUSH)) {
        errno = EINVAL;
        return NULL;
    }
    if (align == 0) {
        align = region->auto_align ? REGION_AUTO_ALIGN : 1;
    } else if (!mt_is_pow2(align) || align > mt_os_page_size()) {
        errno = EINVAL;
        return NULL;
    }
    /* Offsets, not pointers, so no sum can wrap past the end of the address space. */
    size_t start = mt_align_up((uintptr_t)(region->data + region->pos), align) - (uintptr_t)region;
    if (start > region->reserve || size > region->reserve - start) {
        errno = ENOMEM;
        return NULL;
    }
    uint8_t *block = (uint8_t *)region + start;
    uint8_t *block_end = block + size;
    if (block_end > region->committed_end && !region_commit(region, block_end)) {
        errno = ENOMEM;
        return NULL;
    }
    if (zero && block < region->dirty_end)
        memset(block, 0, (size_t)(MT_MIN(block_end, region->dirty_end) - block));
    if (block_end > region->dirty_end)
        region->dirty_end = block_end;
    region->pos = (size_t)(block_end - region->data);
    return block;
}

size_t mt_region_pos(const mt_arena_t *region)
{
    if (!region_ok(region, MT_API_ARENA_POS))
        return 0;
    return region->pos;
}

/* Move the position back to `pos` (<= the current one), then give back what lies more
 * than MT_REGION_DECOMMIT_SLACK past it: the slack is the hysteresis that keeps a loop of
 * push and pop across a page boundary from making a system call each time. */
static void region_retreat(mt_arena_t *region, size_t pos)
{
    region->pos = pos;
    size_t page = mt_os_page_size();
    size_t keep = mt_align_up((size_t)(region->data + pos - (uint8_t *)region), page) + MT_REGION_DECOMMIT_SLACK;
    size_t dirty = mt_align_up((size_t)(region->dirty_end - (uint8_t *)region), page);
    if (dirty <= keep)
        return;
    mt_os_decommit((uint8_t *)region + keep, dirty - keep);
    region->dirty_end = (uint8_t *)region + keep;
}

void mt_region_pop_to(mt_arena_t *region, size_t pos)
{
    if (!region_ok(region, MT_API_ARENA_POP_TO))
        return;
    if (MT_UNLIKELY(pos > region->pos)) {
        region_invalid(region, MT_API_ARENA_POP_TO, "position beyond the current one");
        return;
    }
    region_retreat(region, pos);
}

void mt_region_pop(mt_arena_t *region, size_t size)
{
    if (!region_ok(region, MT_API_ARENA_POP))
        return;
    if (MT_UNLIKELY(size > region->pos)) {
        region_invalid(region, MT_API_ARENA_POP, "popping more bytes than were pushed");
        return;
    }
    region_retreat(region, region->pos - size);
}

void mt_region_clear(mt_arena_t *region)
{
    if (!region_ok(region, MT_API_ARENA_CLEAR))
        return;
    region_retreat(region, 0);
}

void mt_region_release(mt_arena_t *region)
{
    if (!region_ok(region, MT_API_ARENA_RELEASE))
        return;
    size_t total = region->reserve;
    region->check = 0; /* a stale copy of the handle no longer verifies */
    mt_os_unmap(region, total);
}

void mt_region_set_auto_align(mt_arena_t *region, bool on)
{
    if (!region_ok(region, MT_API_ARENA_SET_AUTO_ALIGN))
        return;
    region->auto_align = on;
}
