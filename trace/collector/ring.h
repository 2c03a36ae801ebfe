/* Reading one ring of a process (the collector's view of a producer thread's ring,
 * struct mt_ring_view): inline, since both the merge (drain.c) and the run of records it
 * hands to process.c (mt_proc_apply_run) read cells per record.
 *
 * Invariants: cells before `tail` are free for the producer, cells from `tail` up to the
 * cached `head` are published records; the producer never touches a cell before our
 * published tail passes it, so a record that does not wrap the ring's end is read in
 * place. */
#ifndef MT_COLLECTOR_RING_H
#define MT_COLLECTOR_RING_H

#include <stdatomic.h>
#include <string.h>

#include "collector.h"

static inline const struct mt_wire_rec *mt_ring_cell(const struct mt_ring_view *r, uint64_t index)
{
    return (const struct mt_wire_rec *)(r->cells + (index & r->mask) * MT_WIRE_CELL);
}

/* The ring's next record that carries a seq (pads are skipped here), or NULL when the
 * ring is empty as far as we last looked. Reads only our cached copy of `head`: the
 * producer's cache line is touched by mt_ring_refresh, once per ring per merge round, not
 * once per record per ring (with many threads that would be a cache miss per ring for
 * every record merged). */
static inline const struct mt_wire_rec *mt_ring_peek(struct mt_ring_view *r)
{
    while (r->tail != r->head) {
        const struct mt_wire_rec *rec = mt_ring_cell(r, r->tail);
        if (rec->kind != MT_REC_PAD)
            return rec;
        r->tail += rec->cells ? rec->cells : 1;
    }
    return NULL;
}

/* Read the producer's head once we consumed everything we knew of. */
static inline void mt_ring_refresh(struct mt_ring_view *r)
{
    if (r->tail == r->head)
        r->head = atomic_load_explicit(&r->hdr->head, memory_order_acquire);
}

/* Most cells of one record: the cells field is a byte. */
#define MT_RECORD_MAX_CELLS 255

/* The record at cell `index` whole: in place, or copied into `buf` (MT_RECORD_MAX_CELLS
 * cells) when it wraps the ring's end. */
MT_INLINE const struct mt_wire_rec *mt_ring_record_contiguous(const struct mt_ring_view *r, uint64_t index,
                                                              const struct mt_wire_rec *rec, unsigned char *buf)
{
    uint64_t first = index & r->mask;
    unsigned cells = rec->cells ? rec->cells : 1;
    if (first + cells <= r->mask + 1)
        return rec;
    for (unsigned i = 0; i < cells; i++)
        memcpy(buf + (size_t)i * MT_WIRE_CELL, mt_ring_cell(r, index + i), MT_WIRE_CELL);
    return (const struct mt_wire_rec *)buf;
}

/* Publish our tail to the producer, waking it if it waits for space (drain.c). */
void mt_ring_publish_tail(struct mt_ring_view *r, bool finished);

#endif
