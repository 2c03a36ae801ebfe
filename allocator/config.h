/* Geometry of the allocator: the sizes every other file derives its layout from.
 *
 * Memory comes from the OS in segments of MT_SEGMENT_SIZE bytes aligned to their size, so
 * `ptr & ~MT_SEGMENT_MASK` finds the header of the segment a small block lives in, and the
 * segment map (segmap.h) says in one load what kind of memory an address is. */
#ifndef MT_ALLOCATOR_CONFIG_H
#define MT_ALLOCATOR_CONFIG_H

#include <stddef.h>
#include <stdint.h>

/* 4 MiB segments: big enough that segment allocation (a global lock and mmap) happens once
 * per 62 small pages, small enough that a thread that allocates a little does not pin much
 * address space. Only touched pages are resident. */
#define MT_SEGMENT_SHIFT 22
#define MT_SEGMENT_SIZE ((size_t)1 << MT_SEGMENT_SHIFT)
#define MT_SEGMENT_MASK (MT_SEGMENT_SIZE - 1)

/* 64 KiB small pages, each serving one size class; offsets fit the exact 32-bit reciprocal
 * division. */
#define MT_PAGE_SHIFT 16
#define MT_PAGE_SIZE ((size_t)1 << MT_PAGE_SHIFT)
#define MT_PAGES_PER_SEGMENT (MT_SEGMENT_SIZE / MT_PAGE_SIZE)
#define MT_MIN_BLOCK 16
/* At most 2048 slots a page, so a page's slot bitmap is 32 words: only the 16-byte class
 * has more blocks in 64 KiB, and uses the first 32 KiB of its pages (the rest is address
 * space, never touched). With 4096 slots, every page's descriptor and bitmaps took 1600
 * bytes of the segment's metadata, 832 now: a program using a page of each of 17 classes
 * wrote 8 pages of metadata, 4 now, and all 64 descriptors fit the first 64 KiB page of
 * the segment, which leaves 63 pages for slots instead of 62. */
#define MT_MAX_SLOTS_PER_PAGE 2048
#define MT_BITMAP_WORDS (MT_MAX_SLOTS_PER_PAGE / 64)
/* The first pages of a small segment hold its header, page descriptors and bitmaps. */
#define MT_SEGMENT_META_PAGES 1

/* Every block is aligned to 16 bytes, as glibc guarantees on x86-64 (max_align_t). */
#define MT_ALIGNMENT 16

/* Small blocks: size classes up to 8 KiB served from slab pages with per-thread ownership.
 * 8 KiB covers nearly all allocations of real programs (python3, gcc, git measured with
 * mtrace-report hist: over 99% of calls), so the locked medium path stays off the hot path. */
#define MT_SMALL_MAX 8192
#define MT_SMALL_CLASSES 56

/* Medium blocks live in regions of MT_MEDIUM_REGION_SIZE reserved address space, committed
 * as they grow. 64 MiB matches glibc's non-main heap size and holds blocks up to the
 * largest adaptive mmap threshold (32 MiB). */
#define MT_MEDIUM_REGION_SIZE ((size_t)64 << 20)

/* The mmap threshold starts at 128 KiB and adapts upward as glibc's does when mapped blocks
 * are freed, up to 32 MiB (glibc's DEFAULT_MMAP_THRESHOLD_MAX on 64-bit). */
#define MT_MMAP_THRESHOLD_DEFAULT ((size_t)128 << 10)
#define MT_MMAP_THRESHOLD_MAX ((size_t)32 << 20)

/* Largest request we accept: beyond this, size arithmetic with headers and alignment could
 * overflow, and no machine can map it anyway. */
#define MT_MAX_REQUEST (((size_t)1 << 62))

#endif
