/* Small pages' slot arithmetic (allocator/small.h), against plain division: for every size
 * class and every offset in a page, mt_small_slot_index accepts exactly the slot starts
 * and returns their index. free() relies on it to reject interior and out-of-page pointers
 * with one multiplication (a reciprocal and Lemire's divisibility test on its low half).
 * And the remote-free tag on page->owner that lets free()'s fast path skip the remote
 * bits. */
#include <pthread.h>
#include <stdlib.h>

#include "check.h"
#include "mtrace.h"

#include "../../allocator/small_internal.h"

static struct mt_page_meta meta;

TEST(slot_index_accepts_exactly_the_slot_starts_of_every_class)
{
    for (unsigned cls = 0; cls < MT_SMALL_CLASSES; cls++) {
        mt_page_init(&meta.page, cls);
        uint32_t size = mt_class_size[cls];
        size_t wrong = 0, first_wrong = 0;
        for (size_t offset = 0; offset < MT_PAGE_SIZE; offset++) {
            bool slot = offset % size == 0 && offset / size < meta.page.capacity;
            size_t want = slot ? offset / size : SIZE_MAX;
            if (mt_small_slot_index(&meta.page, (const void *)offset) != want && wrong++ == 0)
                first_wrong = offset;
        }
        CHECK_MSG(wrong == 0, "class %u (%u bytes): %zu offsets misjudged, the first %zu", cls, size, wrong,
                  first_wrong);
    }
}

TEST(a_released_page_has_no_slot)
{
    mt_page_init(&meta.page, 0);
    meta.page.capacity = 0; /* as mt_segment_put_page leaves it */
    meta.page.slot_limit = 0;
    meta.page.recip = 0;
    for (size_t offset = 0; offset < MT_PAGE_SIZE; offset += MT_MIN_BLOCK)
        REQUIRE(mt_small_slot_index(&meta.page, (const void *)offset) == SIZE_MAX);
}

enum { TAG_BLOCKS = 16, TAG_SIZE = 2000 };
static void *tag_blocks[TAG_BLOCKS];

static void *free_even_blocks(void *arg)
{
    (void)arg;
    for (int i = 0; i < TAG_BLOCKS; i += 2)
        free(tag_blocks[i]);
    return NULL;
}

static struct mt_page *page_of(void *p)
{
    return mt_small_page_of(mt_small_segment_of(p), p);
}

TEST(remote_frees_tag_the_page_until_its_owner_collects_them)
{
    for (int i = 0; i < TAG_BLOCKS; i++)
        REQUIRE((tag_blocks[i] = malloc(TAG_SIZE)) != NULL);
    struct mt_page *page = page_of(tag_blocks[0]);
    int local = -1; /* a block of the same page that the owner frees */
    for (int i = 1; i < TAG_BLOCKS && local < 0; i += 2)
        if (page_of(tag_blocks[i]) == page)
            local = i;
    REQUIRE(local > 0);
    CHECK((atomic_load(&page->owner) & MT_PAGE_REMOTE_PENDING) == 0);
    pthread_t t;
    REQUIRE(pthread_create(&t, NULL, free_even_blocks, NULL) == 0);
    pthread_join(t, NULL);
    CHECK(atomic_load(&page->owner) & MT_PAGE_REMOTE_PENDING);
    CHECK(mt_heap_check() == 0);
    /* The owner's free into the tagged page collects the remote frees (clearing the tag)
     * and checks the block against them. */
    free(tag_blocks[local]);
    CHECK((atomic_load(&page->owner) & MT_PAGE_REMOTE_PENDING) == 0);
    CHECK(mt_page_owner(page, memory_order_relaxed) == mt_tls.heap);
    CHECK(mt_heap_check() == 0);
    for (int i = 1; i < TAG_BLOCKS; i += 2)
        if (i != local)
            free(tag_blocks[i]);
    CHECK(mt_heap_check() == 0);
}

TEST_MAIN()
