/* The prefix trie of symbolized stacks that trace.db stores (stack_nodes, format v3).
 *
 * A node is one logical frame under its caller's node: (parent, frame_id), parent 0 at the
 * outermost frame. Stacks of one program share most of their outer frames (main, the
 * driver loop, the parser...), so storing each distinct (parent, frame) once instead of
 * every frame of every stack cut g++'s trace from 1.85M stack_frames rows to the nodes
 * counted in docs/collector.md. Node ids are dense from 1, in creation order, so a node's
 * parent always has a smaller id and the rows are appended in key order.
 *
 * Built once, by mt_sink_symbols, after the last stack was interned; freed with it. */
#include "collector.h"

#include <stdlib.h>

struct trie_node {
    uint32_t parent;
    uint32_t frame;
};

/* Open addressing over node ids (0 = empty), at most half full. */
#define TRIE_TABLE_MIN 4096

static uint64_t node_hash(uint32_t parent, uint32_t frame)
{
    return mt_mix64((uint64_t)parent << 32 | frame);
}

static void trie_grow(struct mt_stack_trie *t)
{
    size_t cap = t->table ? (t->table_mask + 1) * 2 : TRIE_TABLE_MIN;
    free(t->table);
    t->table = mt_xcalloc(cap, sizeof *t->table);
    t->table_mask = cap - 1;
    for (uint32_t id = 1; id < t->count; id++) {
        const struct trie_node *n = &t->nodes[id];
        size_t s = (size_t)node_hash(n->parent, n->frame) & t->table_mask;
        while (t->table[s])
            s = (s + 1) & t->table_mask;
        t->table[s] = id;
    }
}

uint32_t mt_stack_trie_intern(struct mt_stack_trie *t, uint32_t parent, uint32_t frame, bool *created)
{
    if (t->count == 0) {
        MT_VEC_RESERVE(t->nodes, t->cap, 1);
        t->count = 1; /* id 0: no node (the parent of an outermost frame) */
    }
    if (!t->table || ((size_t)t->count + 1) * 2 > t->table_mask + 1)
        trie_grow(t);
    size_t s = (size_t)node_hash(parent, frame) & t->table_mask;
    for (; t->table[s]; s = (s + 1) & t->table_mask) {
        const struct trie_node *n = &t->nodes[t->table[s]];
        if (n->parent == parent && n->frame == frame) {
            *created = false;
            return t->table[s];
        }
    }
    MT_VEC_RESERVE(t->nodes, t->cap, (size_t)t->count + 1);
    t->nodes[t->count] = (struct trie_node){parent, frame};
    t->table[s] = t->count;
    *created = true;
    return t->count++;
}

void mt_stack_trie_free(struct mt_stack_trie *t)
{
    free(t->nodes);
    free(t->table);
    *t = (struct mt_stack_trie){0};
}
