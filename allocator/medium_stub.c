/* TEMPORARY stand-in for the medium arenas while they are being written: every medium
 * request becomes a large mapping. Deleted when allocator/medium*.c lands. */
#include <string.h>

#include "check.h"
#include "large.h"
#include "medium.h"
#include "stats.h"
#include "walk.h"

bool mt_medium_init(void) { return true; }
struct mt_medium_arena *mt_medium_arena_pick(void) { return (struct mt_medium_arena *)1; }
void *mt_medium_malloc(struct mt_medium_arena *a, size_t size) { (void)a; return mt_large_malloc(size, 16); }
void *mt_medium_memalign(struct mt_medium_arena *a, size_t align, size_t size)
{
    (void)a;
    return mt_large_malloc(size, align);
}
void mt_medium_free(void *ptr, uint8_t entry, enum mt_api api) { (void)ptr; (void)entry; (void)api; }
size_t mt_medium_usable_size(const void *ptr, uint8_t entry, enum mt_api api)
{
    (void)ptr; (void)entry; (void)api;
    return 0;
}
bool mt_medium_resize_in_place(void *ptr, uint8_t entry, size_t new_size)
{
    (void)ptr; (void)entry; (void)new_size;
    return false;
}
size_t mt_medium_max_request(void) { return (size_t)1 << 40; }
size_t mt_medium_trim(size_t pad) { (void)pad; return 0; }
void mt_medium_collect(void) {}
void mt_medium_fork_prepare(void) {}
void mt_medium_fork_parent(void) {}
void mt_medium_fork_child(void) {}
void mt_medium_stats(struct mt_zone_stats *out) { memset(out, 0, sizeof *out); }
void mt_medium_histogram(uint64_t live[MT_LOG2_BUCKETS], uint64_t allocs[MT_LOG2_BUCKETS]) { (void)live; (void)allocs; }
void mt_medium_walk(struct mt_walker *walker) { (void)walker; }
bool mt_medium_check(struct mt_check *check) { (void)check; return true; }
