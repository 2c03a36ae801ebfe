/* Small segments: mapping them, their free pages, the pool of unused segments and the
 * list of segments abandoned by exited threads.
 *
 * Segments are never unmapped. A thread freeing into a page may still be reading the page
 * descriptor after the owner has released the page (see mt_small_free_remote); keeping the
 * mapping makes that read harmless. Unused segments are decommitted instead, so RSS falls
 * while the address space is kept for reuse. */
#include <string.h>

#include "../common/options.h"
#include "../common/platform.h"
#include "small_internal.h"

mt_lock_t mt_small_lock = MT_LOCK_INIT;
_Atomic(struct mt_segment *) mt_all_segments;

static struct mt_segment *segment_pool;     /* unused, decommitted (under the lock) */
static struct mt_segment *abandoned_first;  /* owner NULL, some pages in use (under the lock) */

/* Describe page `i` as free (its descriptor was all zero, or released). */
static void page_format(struct mt_segment *seg, size_t i)
{
    struct mt_page *page = &seg->meta[i].page;
    memset(page, 0, sizeof *page);
    page->start = (uint8_t *)seg + i * MT_PAGE_SIZE;
    page->state = i < MT_SEGMENT_META_PAGES ? MT_PAGE_META : MT_PAGE_FREE;
}

/* Pages are formatted as they are first handed out, not all at once: a descriptor and its
 * bitmaps take 1.6 KiB, so formatting all 64 dirtied the whole 100 KiB of metadata of every
 * segment (for a program that uses a dozen pages, 25 pages of metadata instead of 7). */
static void segment_format(struct mt_segment *seg)
{
    seg->free_pages = NULL;
    seg->used_pages = 0;
    seg->free_count = MT_PAGES_PER_SEGMENT - MT_SEGMENT_META_PAGES;
    seg->formatted = MT_SEGMENT_META_PAGES;
    for (size_t i = 0; i < MT_SEGMENT_META_PAGES; i++)
        page_format(seg, i);
}

struct mt_segment *mt_segment_acquire(void)
{
    mt_lock(&mt_small_lock);
    struct mt_segment *seg = segment_pool;
    if (seg) {
        segment_pool = seg->next;
        seg->in_pool = 0;
        seg->next = seg->prev = NULL;
        mt_unlock(&mt_small_lock);
        return seg;
    }
    mt_unlock(&mt_small_lock);

    seg = mt_os_map_aligned(MT_SEGMENT_SIZE, MT_SEGMENT_SIZE);
    if (!seg)
        return NULL;
    segment_format(seg);
    mt_segmap_set((uintptr_t)seg, MT_SEGMENT_SIZE, MT_SEG_SMALL);
    /* Publish after formatting: walkers read the list without the lock. */
    struct mt_segment *head = atomic_load_explicit(&mt_all_segments, memory_order_relaxed);
    do
        seg->all_next = head;
    while (!atomic_compare_exchange_weak_explicit(&mt_all_segments, &head, seg, memory_order_release,
                                                  memory_order_relaxed));
    return seg;
}

void mt_segment_pool_put(struct mt_segment *seg)
{
    atomic_store_explicit(&seg->owner, NULL, memory_order_relaxed);
    /* Every page is free: reformat (the used descriptors back to zero, so that the segment
     * is again as if new) and give the memory back in one call, the metadata too but for
     * its first OS page (the header, which the lists of segments run through): the rest of
     * the metadata is all zero again. */
    for (size_t i = MT_SEGMENT_META_PAGES; i < seg->formatted; i++)
        memset(&seg->meta[i].page, 0, sizeof seg->meta[i].page);
    segment_format(seg);
    size_t keep = mt_os_page_size();
    mt_os_decommit((uint8_t *)seg + keep, MT_SEGMENT_SIZE - keep);
    seg->in_pool = 1;
    seg->prev = NULL;
    seg->next = segment_pool;
    segment_pool = seg;
}

/* Small pages per transparent huge page, or 0 for none (the kernel has none, the option is
 * off, or they do not divide a segment). */
static size_t segment_huge_pages(void)
{
    static _Atomic size_t cached = SIZE_MAX; /* racing first calls agree */
    size_t pages = atomic_load_explicit(&cached, memory_order_relaxed);
    if (MT_UNLIKELY(pages == SIZE_MAX)) {
        size_t huge = mt_option_bool(MT_OPT_HUGE_PAGES) ? mt_os_huge_page_size() : 0;
        pages = huge >= MT_PAGE_SIZE && MT_SEGMENT_SIZE % huge == 0 ? huge / MT_PAGE_SIZE : 0;
        atomic_store_explicit(&cached, pages, memory_order_relaxed);
    }
    return pages;
}

void mt_segment_page_touched(struct mt_page *page)
{
    size_t huge_pages = segment_huge_pages();
    if (!huge_pages)
        return;
    struct mt_segment *seg = mt_small_segment_of(page->start);
    size_t first = (size_t)(page->start - (uint8_t *)seg) / MT_PAGE_SIZE / huge_pages * huge_pages;
    uint64_t range = (uint64_t)1 << (first / huge_pages);
    if (seg->huge_ranges & range)
        return;
    /* Bytes of the range resident for sure: metadata pages, and the slots handed out so far
     * of pages whose blocks are at most an OS page (each OS page then holds the start of a
     * block, which its owner wrote; of bigger blocks, many programs write only the part
     * they use, and the rest of a huge page would be resident for nothing). */
    size_t os_page = mt_os_page_size();
    size_t touched = 0;
    for (size_t i = first; i < first + huge_pages; i++) {
        const struct mt_page *p = &seg->meta[i].page;
        if (p->state == MT_PAGE_META)
            touched += MT_PAGE_SIZE;
        else if (p->state == MT_PAGE_ACTIVE && p->block_size <= os_page)
            touched += (size_t)p->touched * p->block_size;
        else
            return; /* a free page: the range is not all in use */
    }
    if (touched < huge_pages * MT_PAGE_SIZE / 8 * 7)
        return;
    seg->huge_ranges |= range;
    mt_os_collapse_huge((uint8_t *)seg + first * MT_PAGE_SIZE, huge_pages * MT_PAGE_SIZE);
}

struct mt_page *mt_segment_take_page(struct mt_segment *seg)
{
    /* A released page first: it may still be resident, and a page's metadata that was
     * touched before costs nothing more. Then the lowest page never used. */
    struct mt_page *page = seg->free_pages;
    if (page) {
        seg->free_pages = page->next;
    } else if (seg->formatted < MT_PAGES_PER_SEGMENT) {
        page_format(seg, seg->formatted);
        page = &seg->meta[seg->formatted++].page;
    } else {
        return NULL;
    }
    seg->free_count--;
    seg->used_pages++;
    page->next = page->prev = NULL;
    return page;
}

void mt_segment_put_page(struct mt_segment *seg, struct mt_page *page, bool decommit)
{
    /* The page's allocations still count in show_alloc_hist and the statistics. */
    atomic_fetch_add_explicit(&mt_retired_class_allocs[page->cls], mt_page_allocs(page), memory_order_relaxed);
    /* A stale pointer into a released page must fail the slot check: limit 0. */
    page->capacity = 0;
    page->block_size = 0;
    page->slot_limit = 0;
    page->recip = 0;
    page->words = 0;
    page->nonempty = 0;
    page->state = MT_PAGE_FREE;
    atomic_store_explicit(&page->owner, 0, memory_order_relaxed);
    atomic_store_explicit(&page->counts, 0, memory_order_relaxed);
    atomic_store_explicit(&page->full, 0, memory_order_relaxed);
    if (decommit && page->committed) {
        mt_os_decommit(page->start, MT_PAGE_SIZE);
        page->committed = 0;
    }
    page->prev = NULL;
    page->next = seg->free_pages;
    seg->free_pages = page;
    seg->free_count++;
    seg->used_pages--;
}

void mt_abandoned_push(struct mt_segment *seg)
{
    seg->prev = NULL;
    seg->next = abandoned_first;
    if (abandoned_first)
        abandoned_first->prev = seg;
    abandoned_first = seg;
}

void mt_abandoned_remove(struct mt_segment *seg)
{
    if (seg->prev)
        seg->prev->next = seg->next;
    else
        abandoned_first = seg->next;
    if (seg->next)
        seg->next->prev = seg->prev;
    seg->next = seg->prev = NULL;
}

struct mt_segment *mt_abandoned_first(void)
{
    return abandoned_first;
}
