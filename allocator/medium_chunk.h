/* Medium chunks: the boundary-tag layout and its inline accessors.
 *
 *   chunk:  word   size | MT_CHUNK_INUSE | MT_CHUNK_DECOMMITTED     (8 bytes)
 *           check  keyed checksum of (address, word), bit 0 = previous chunk in use
 *   user:   the block (in use), or fd/bk free-list links (free)
 *   ...
 *   last 8: footer = size (free chunks only; in use it is the block's last bytes)
 *
 * Sizes are multiples of 16, so the user pointer (chunk + 16) keeps the 16-byte alignment
 * of the chunk. The prev-in-use bit lives in bit 0 of the checksum word and is left out of
 * the checksum: it is the only header bit written by an operation on *another* chunk
 * (freeing or allocating the previous one), so a thread reading a live block's header
 * without the arena lock (malloc_usable_size, realloc, a remote free) sees a word and a
 * checksum that always agree, whatever the owner of the arena is doing next door. A
 * corrupted prev-in-use bit is still caught: a clear bit makes free() read the footer
 * before the chunk, whose chunk must then verify as a free chunk of that size; a set bit
 * only forgoes one coalescing.
 *
 * Invariants (checked by mt_medium_check): chunks tile each region from its first chunk
 * to its fence; no two free chunks are adjacent (the top included); the top is the last
 * chunk before the fence of its arena's current region; a free chunk's footer equals its
 * size and it sits in exactly one bin; a chunk's prev-in-use bit says whether the chunk
 * before it is in use. */
#ifndef MT_ALLOCATOR_MEDIUM_CHUNK_H
#define MT_ALLOCATOR_MEDIUM_CHUNK_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "../common/compiler.h"
#include "harden.h"

#define MT_CHUNK_HEADER 16
/* Flags in the low bits of the size word. */
#define MT_CHUNK_INUSE 1u
/* A free chunk whose interior pages (mt_chunk_interior) were given back to the OS: they
 * are not decommitted again when the chunk is binned or coalesced, and the arena counts
 * them as not resident. */
#define MT_CHUNK_DECOMMITTED 2u
#define MT_CHUNK_FLAG_MASK 15u
/* Bit 0 of the check word. */
#define MT_CHUNK_PREV_INUSE 1u
/* Header, two links and a footer, rounded to the 16-byte granule. */
#define MT_CHUNK_MIN 48
/* The fence closing a region: a bare in-use header, so the last real chunk always has a
 * next chunk to look at. Smaller than any real chunk, which is how walks recognise it. */
#define MT_CHUNK_FENCE 16
/* Bytes at a free chunk's start that stay resident when its interior is decommitted: the
 * header and the links of its bin. */
#define MT_CHUNK_FREE_HEAD 32
#define MT_CHUNK_FOOTER 8

struct mt_chunk {
    uint64_t word;
    uint64_t check;
};

/* Free-list node: at the user pointer of a free chunk. */
struct mt_medium_link {
    uintptr_t fd, bk; /* encoded with mt_link_encode */
};

/* Loads and stores of header words are relaxed atomics: headers of live blocks are read
 * without the arena lock (see the file comment), and the arena owner may rewrite the check
 * word of such a block (its prev-in-use bit) at the same time. Plain moves on x86-64. */
MT_INLINE uint64_t mt_chunk_load(const uint64_t *field)
{
    return __atomic_load_n(field, __ATOMIC_RELAXED);
}
MT_INLINE void mt_chunk_store(uint64_t *field, uint64_t value)
{
    __atomic_store_n(field, value, __ATOMIC_RELAXED);
}

MT_INLINE size_t mt_chunk_size_of(uint64_t word)
{
    return (size_t)(word & ~(uint64_t)MT_CHUNK_FLAG_MASK);
}

MT_INLINE struct mt_chunk *mt_chunk_at(const void *addr)
{
    return (struct mt_chunk *)(uintptr_t)addr;
}
MT_INLINE struct mt_chunk *mt_chunk_of_user(const void *ptr)
{
    return (struct mt_chunk *)((uintptr_t)ptr - MT_CHUNK_HEADER);
}
MT_INLINE void *mt_chunk_user(const struct mt_chunk *c)
{
    return (void *)((uintptr_t)c + MT_CHUNK_HEADER);
}
MT_INLINE struct mt_chunk *mt_chunk_next(const struct mt_chunk *c, size_t size)
{
    return (struct mt_chunk *)((uintptr_t)c + size);
}

MT_INLINE uint64_t mt_chunk_checksum(const struct mt_chunk *c, uint64_t word)
{
#ifndef MT_NO_HARDENING
    return mt_header_check((uintptr_t)c, word) & ~(uint64_t)MT_CHUNK_PREV_INUSE;
#else
    (void)c;
    (void)word;
    return 0;
#endif
}

/* Read and verify a header; false when the checksum does not match (corruption, or an
 * address that is not a chunk start). */
MT_INLINE bool mt_chunk_read(const struct mt_chunk *c, uint64_t *word_out)
{
    uint64_t word = mt_chunk_load(&c->word);
    uint64_t check = mt_chunk_load(&c->check);
    *word_out = word;
#ifndef MT_NO_HARDENING
    return ((check ^ mt_chunk_checksum(c, word)) & ~(uint64_t)MT_CHUNK_PREV_INUSE) == 0;
#else
    (void)check;
    return true;
#endif
}

MT_INLINE void mt_chunk_write(struct mt_chunk *c, size_t size, unsigned flags, bool prev_inuse)
{
    uint64_t word = (uint64_t)size | flags;
    mt_chunk_store(&c->word, word);
    mt_chunk_store(&c->check, mt_chunk_checksum(c, word) | (prev_inuse ? MT_CHUNK_PREV_INUSE : 0));
}

MT_INLINE bool mt_chunk_prev_inuse(const struct mt_chunk *c)
{
    return (mt_chunk_load(&c->check) & MT_CHUNK_PREV_INUSE) != 0;
}

MT_INLINE void mt_chunk_set_prev_inuse(struct mt_chunk *c, bool prev_inuse)
{
    uint64_t check = mt_chunk_load(&c->check) & ~(uint64_t)MT_CHUNK_PREV_INUSE;
    mt_chunk_store(&c->check, check | (prev_inuse ? MT_CHUNK_PREV_INUSE : 0));
}

MT_INLINE void mt_chunk_write_footer(struct mt_chunk *c, size_t size)
{
    *(uint64_t *)((uintptr_t)c + size - MT_CHUNK_FOOTER) = size;
}
MT_INLINE size_t mt_chunk_footer(const struct mt_chunk *c, size_t size)
{
    return (size_t) * (const uint64_t *)((uintptr_t)c + size - MT_CHUNK_FOOTER);
}
/* The footer of the chunk before c (valid only when c's prev-in-use bit is clear). */
MT_INLINE size_t mt_chunk_prev_size(const struct mt_chunk *c)
{
    return (size_t) * (const uint64_t *)((uintptr_t)c - MT_CHUNK_FOOTER);
}

MT_INLINE struct mt_medium_link *mt_chunk_link(const struct mt_chunk *c)
{
    return (struct mt_medium_link *)((uintptr_t)c + MT_CHUNK_HEADER);
}
MT_INLINE struct mt_chunk *mt_chunk_of_link(const struct mt_medium_link *node)
{
    return (struct mt_chunk *)((uintptr_t)node - MT_CHUNK_HEADER);
}

/* The whole pages of a free chunk that hold neither its header and links nor its footer:
 * what decommitting the chunk gives back. Empty (lo == hi) for chunks under about three
 * pages. */
MT_INLINE void mt_chunk_interior(const struct mt_chunk *c, size_t size, size_t page, uintptr_t *lo, uintptr_t *hi)
{
    uintptr_t start = mt_ptr_align_up((uintptr_t)c + MT_CHUNK_FREE_HEAD, page);
    uintptr_t end = ((uintptr_t)c + size - MT_CHUNK_FOOTER) & ~(uintptr_t)(page - 1);
    *lo = start;
    *hi = end > start ? end : start;
}

MT_INLINE size_t mt_chunk_interior_bytes(const struct mt_chunk *c, size_t size, size_t page)
{
    uintptr_t lo, hi;
    mt_chunk_interior(c, size, page, &lo, &hi);
    return (size_t)(hi - lo);
}

#endif
