/* Small pages' slot arithmetic (allocator/small.h), against plain division: for every size
 * class and every offset in a page, mt_small_slot_index accepts exactly the slot starts
 * and returns their index. free() relies on it to reject interior and out-of-page pointers
 * with one multiplication (a reciprocal and Lemire's divisibility test on its low half). */
#include "check.h"

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

TEST_MAIN()
