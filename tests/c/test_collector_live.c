/* The collector's live set (trace/collector/live.c) against a plain reference model:
 * random inserts, replacements and removals over a small key space, so probe runs wrap the
 * table and backward-shift deletion is exercised on every path; and the freed-block
 * memory's newest-first lookup. */
/* Compiled in (not linked from build/obj): this test must not depend on the order in which
 * a parallel make builds mtrace-run's objects. */
#include "../../trace/collector/live.c"
#include "../../trace/collector/util.c"
#include "../../trace/collector/host.c"
#include "check.h"

/* Keys 1..KEYS << 4 (16-byte aligned like heap blocks); few enough that runs collide. */
#define KEYS 5000
#define OPS 400000

static uint64_t rng_state = 0x1234567;

static uint64_t next_random(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

TEST(live_set_matches_model)
{
    static uint64_t model[KEYS + 1]; /* size + 1 when live, 0 when not */
    struct mt_live_set set;
    mt_live_init(&set);
    size_t live = 0;
    int mismatches = 0;
    for (int op = 0; op < OPS; op++) {
        uint64_t k = next_random() % KEYS + 1;
        uint64_t ptr = k << 4;
        if (next_random() % 3) {
            struct mt_block b = mt_block_make(ptr, next_random() % 1000, 0, (uint64_t)op, (uint32_t)k, (uint32_t)op);
            struct mt_block old;
            bool replaced = mt_live_insert(&set, &b, &old);
            if (replaced != (model[k] != 0) || (replaced && mt_block_size(&old) + 1 != model[k]))
                mismatches++;
            if (!model[k])
                live++;
            model[k] = mt_block_size(&b) + 1;
            if (mt_block_stat(&b) != k || mt_block_seq(&b) != (uint64_t)op || mt_block_thread(&b) != (uint32_t)op)
                mismatches++;
        } else {
            struct mt_block out;
            bool removed = mt_live_remove(&set, ptr, &out);
            if (removed != (model[k] != 0) || (removed && mt_block_size(&out) + 1 != model[k]))
                mismatches++;
            if (model[k])
                live--;
            model[k] = 0;
        }
        /* Every so often, every key must be findable exactly when the model has it. */
        if (op % 50000 == 0) {
            for (uint64_t j = 1; j <= KEYS; j++) {
                const struct mt_block *f = mt_live_find(&set, j << 4);
                if ((f != NULL) != (model[j] != 0) || (f && mt_block_size(f) + 1 != model[j]))
                    mismatches++;
            }
        }
    }
    CHECK_MSG(mismatches == 0, "%d mismatches", mismatches);
    CHECK(set.count == live);
    size_t occupied = 0;
    const struct mt_block *slots = mt_live_slots(&set);
    for (size_t i = 0; i <= set.mask; i++)
        occupied += slots[i].ptr != 0;
    CHECK(occupied == live);
    CHECK((set.mask + 1) * 3 >= 8 * live); /* load stays at most 3/8 */
    mt_live_free(&set);
}

/* A plain linear-probing table with the same hash, growth and backward shift, and no
 * pending block: the live set's slots must match it exactly at every point (the order of
 * live_at_exit rows and the growth moments depend on them). */
struct ref_table {
    uint64_t *keys;
    size_t mask, count;
};

static size_t ref_home(const struct ref_table *t, uint64_t key)
{
    return (size_t)mt_mix64(key) & t->mask;
}

static void ref_place(struct ref_table *t, uint64_t key)
{
    size_t s = ref_home(t, key);
    while (t->keys[s])
        s = (s + 1) & t->mask;
    t->keys[s] = key;
}

static void ref_insert(struct ref_table *t, uint64_t key)
{
    if ((t->count + 1) * 8 > (t->mask + 1) * 3) {
        uint64_t *old = t->keys;
        size_t old_cap = t->mask + 1;
        t->mask = old_cap * 2 - 1;
        t->keys = calloc(old_cap * 2, sizeof *t->keys);
        for (size_t i = 0; i < old_cap; i++)
            if (old[i])
                ref_place(t, old[i]);
        free(old);
    }
    for (size_t s = ref_home(t, key); t->keys[s]; s = (s + 1) & t->mask)
        if (t->keys[s] == key)
            return;
    ref_place(t, key);
    t->count++;
}

static void ref_remove(struct ref_table *t, uint64_t key)
{
    size_t s = ref_home(t, key);
    while (t->keys[s] != key) {
        if (!t->keys[s])
            return;
        s = (s + 1) & t->mask;
    }
    t->count--;
    size_t hole = s;
    for (size_t j = (hole + 1) & t->mask; t->keys[j]; j = (j + 1) & t->mask) {
        size_t home = ref_home(t, t->keys[j]);
        bool stays = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
        if (stays)
            continue;
        t->keys[hole] = t->keys[j];
        hole = j;
    }
    t->keys[hole] = 0;
}

TEST(live_set_slots_match_plain_table)
{
    struct mt_live_set set;
    mt_live_init(&set);
    struct ref_table ref = {calloc(1024, sizeof(uint64_t)), 1023, 0};
    int mismatches = 0;
    uint64_t last = 0;
    for (int op = 0; op < OPS; op++) {
        /* Half the removals are of the block just inserted (a malloc/free pair), the rest
         * random; keys over a range that makes the table grow several times. */
        uint64_t ptr = (next_random() % (KEYS * 8) + 1) << 4;
        unsigned what = (unsigned)(next_random() % 4);
        if (what == 0 && last)
            ptr = last;
        if (what <= 1) {
            struct mt_block old;
            mt_live_remove(&set, ptr, &old);
            ref_remove(&ref, ptr);
            last = 0;
        } else {
            struct mt_block b = mt_block_make(ptr, 16, 0, 0, 0, 0), old;
            mt_live_insert(&set, &b, &old);
            ref_insert(&ref, ptr);
            last = ptr;
        }
        if (op % 997 == 0 || op == OPS - 1) {
            const struct mt_block *slots = mt_live_slots(&set);
            if (set.mask != ref.mask || set.count != ref.count) {
                mismatches++;
                break;
            }
            for (size_t i = 0; i <= set.mask; i++)
                mismatches += slots[i].ptr != ref.keys[i];
        }
    }
    CHECK_MSG(mismatches == 0, "%d slots differ", mismatches);
    free(ref.keys);
    mt_live_free(&set);
}

TEST(block_fields_pack_and_clamp)
{
    struct mt_block b = mt_block_make(0x10, (1ull << 40) - 1, 7, (1ull << 40) - 1, (1u << 24) - 1, (1u << 24) - 1);
    CHECK(mt_block_size(&b) == (1ull << 40) - 1 && mt_block_seq(&b) == (1ull << 40) - 1);
    CHECK(mt_block_stat(&b) == (1u << 24) - 1 && mt_block_thread(&b) == (1u << 24) - 1);
    b = mt_block_make(0x10, 1ull << 50, 7, 3, 5, 6);
    CHECK(mt_block_size(&b) == (1ull << 40) - 1); /* clamped, not wrapped into stat */
    CHECK(mt_block_stat(&b) == 5 && mt_block_seq(&b) == 3 && mt_block_thread(&b) == 6);
    CHECK(sizeof(struct mt_block) == 32);
}

TEST(freed_memory_newest_first_and_interior)
{
    struct mt_freed_memory mem = {0};
    struct mt_freed_block a = {0x1000, 64, 11, 12, 0, 0};
    struct mt_freed_block b = {0x1000, 32, 21, 22, 1, 1};
    mt_freed_remember(&mem, &a);
    mt_freed_remember(&mem, &b);
    const struct mt_freed_block *f = mt_freed_find(&mem, 0x1000);
    CHECK(f && f->alloc_gstack == 21); /* the latest free of a reused address */
    f = mt_freed_find(&mem, 0x1030);
    CHECK(f && f->alloc_gstack == 11); /* inside the older, larger block only */
    CHECK(mt_freed_find(&mem, 0x2000) == NULL);
    /* The memory is bounded: the oldest entries are forgotten. */
    for (uint64_t i = 0; i < MT_FREED_MEMORY; i++) {
        struct mt_freed_block c = {0x100000 + i * 16, 16, 31, 32, 0, 0};
        mt_freed_remember(&mem, &c);
    }
    CHECK(mt_freed_find(&mem, 0x1000) == NULL);
    CHECK(mt_freed_find(&mem, 0x100000 + (MT_FREED_MEMORY - 1) * 16) != NULL);
    mt_freed_free(&mem);
}

TEST_MAIN()
