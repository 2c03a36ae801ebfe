/* Call stacks: a process's stack ids (wire.h's stack store in its process area) turned
 * into global stack ids shared by every process of the trace.
 *
 * A stack is identified by its sequence of (module, file offset) pairs, which is the same
 * in every process that loaded the same binaries, wherever they were loaded: a test suite
 * whose hundred processes allocate from the same function gets one stack. Frames of
 * mtrace itself are dropped here, before the identity is computed. The return addresses
 * are read straight from the producer's shared memory: the producer publishes a stack
 * completely before any record uses its id, and never changes it after. */
#include "collector.h"

#include <stdlib.h>
#include <string.h>

struct stack_entry {
    uint64_t hash;
    uint32_t first; /* index of its first location in `locs` */
    uint32_t depth;
};

static struct stack_entry *stacks; /* index = global id; 0 is the empty stack */
static size_t stack_count, stack_cap;
static struct mt_code_loc *locs;
static size_t loc_count, loc_cap;
static uint32_t *table; /* open addressing: global ids, 0 = empty */
static size_t table_mask;
/* Unknown addresses trigger a re-read of /proc/<pid>/maps (a library was loaded since);
 * bounded so that code outside any file (JIT) does not re-read it on every new stack. */
#define MAPS_REREADS_MAX 256

static uint64_t hash_locs(const struct mt_code_loc *l, uint32_t depth)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ depth;
    for (uint32_t i = 0; i < depth; i++)
        h = mt_mix64(h ^ mt_mix64(l[i].offset ^ ((uint64_t)l[i].module << 48)));
    return h ? h : 1;
}

static void table_grow(void)
{
    size_t cap = table ? (table_mask + 1) * 2 : 4096;
    free(table);
    table = mt_xcalloc(cap, sizeof *table);
    table_mask = cap - 1;
    for (size_t id = 1; id < stack_count; id++) {
        size_t s = (size_t)stacks[id].hash & table_mask;
        while (table[s])
            s = (s + 1) & table_mask;
        table[s] = (uint32_t)id;
    }
}

static uint32_t intern(const struct mt_code_loc *l, uint32_t depth)
{
    if (depth == 0)
        return 0;
    if (stack_count == 0) {
        MT_VEC_RESERVE(stacks, stack_cap, 1);
        stack_count = 1;
    }
    if (!table || (stack_count + 1) * 2 > table_mask + 1)
        table_grow();
    uint64_t h = hash_locs(l, depth);
    size_t s = (size_t)h & table_mask;
    for (; table[s]; s = (s + 1) & table_mask) {
        const struct stack_entry *e = &stacks[table[s]];
        if (e->hash == h && e->depth == depth && memcmp(&locs[e->first], l, depth * sizeof *l) == 0)
            return table[s];
    }
    for (uint32_t i = 0; i < depth; i++)
        mt_sym_module_used(l[i].module);
    MT_VEC_RESERVE(locs, loc_cap, loc_count + depth);
    memcpy(&locs[loc_count], l, depth * sizeof *l);
    MT_VEC_RESERVE(stacks, stack_cap, stack_count + 1);
    stacks[stack_count] = (struct stack_entry){h, (uint32_t)loc_count, depth};
    loc_count += depth;
    table[s] = (uint32_t)stack_count;
    return (uint32_t)stack_count++;
}

uint32_t mt_stacks_resolve(struct mt_proc *proc, uint32_t local_id)
{
    const struct mt_wire_proc *area = proc->area;
    if (!area || local_id == 0 || local_id >= MT_WIRE_STACKS_MAX)
        return 0;
    uint64_t stack_end = area->stacks_at + ((uint64_t)local_id + 1) * sizeof(struct mt_wire_stack);
    if (stack_end > proc->area_size)
        return 0;
    const struct mt_wire_stack *ws = (const struct mt_wire_stack *)((const char *)area + area->stacks_at) + local_id;
    uint32_t depth = ws->depth < MT_WIRE_DEPTH_MAX ? ws->depth : MT_WIRE_DEPTH_MAX;
    uint64_t frames_end = area->frames_at + ((uint64_t)ws->frames_at + depth) * sizeof(uint64_t);
    if ((uint64_t)ws->frames_at + depth > MT_WIRE_FRAMES_MAX || frames_end > proc->area_size)
        return 0;
    const uint64_t *addrs = (const uint64_t *)((const char *)area + area->frames_at) + ws->frames_at;
    struct mt_code_loc out[MT_WIRE_DEPTH_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < depth; i++) {
        struct mt_code_loc loc;
        if (!mt_sym_locate(&proc->maps, addrs[i], &loc) && proc->state == MT_PROC_LIVE &&
            proc->maps.rereads < MAPS_REREADS_MAX) {
            proc->maps.rereads++;
            mt_sym_read_maps(&proc->maps, proc->pid);
            mt_sym_locate(&proc->maps, addrs[i], &loc);
        }
        if (loc.module && mt_sym_module_is_own(loc.module))
            continue;
        out[n++] = loc;
    }
    return intern(out, n);
}

uint32_t mt_stacks_count(void)
{
    return stack_count ? (uint32_t)stack_count : 1;
}

const struct mt_code_loc *mt_stacks_get(uint32_t gid, uint32_t *depth)
{
    if (gid == 0 || gid >= stack_count) {
        *depth = 0;
        return NULL;
    }
    *depth = stacks[gid].depth;
    return &locs[stacks[gid].first];
}

void mt_stacks_reset(void)
{
    free(stacks);
    free(locs);
    free(table);
    stacks = NULL;
    locs = NULL;
    table = NULL;
    stack_count = stack_cap = loc_count = loc_cap = table_mask = 0;
}
