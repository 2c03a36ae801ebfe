/* Size classes (allocator/size_class.h): the lookup table that maps every small size to
 * its class, against the class sizes and the formula it was generated from. */
#include "check.h"

#include "../../allocator/size_class.h"

/* The smallest class holding `size` bytes, by search. */
static unsigned class_by_search(size_t size)
{
    unsigned c = 0;
    while (mt_class_size[c] < size)
        c++;
    return c;
}

/* Above 1 KiB: 8 classes per doubling (the generating formula of size_class.h). */
static unsigned class_by_formula(size_t size)
{
    size_t s = size - 1;
    unsigned lg = 63u - (unsigned)__builtin_clzl(s);
    return 16u + (lg - 8u) * MT_CLASSES_PER_DOUBLING + (unsigned)(s >> (lg - 3)) - MT_CLASSES_PER_DOUBLING;
}

TEST(every_small_size_maps_to_the_smallest_class_that_holds_it)
{
    for (size_t size = 0; size <= MT_SMALL_MAX; size++) {
        unsigned c = mt_size_class(size);
        CHECK_MSG(c == class_by_search(size), "size %zu: class %u, want %u", size, c, class_by_search(size));
        if (size > 1024)
            CHECK_MSG(c == class_by_formula(size), "size %zu: class %u, formula says %u", size, c,
                      class_by_formula(size));
    }
}

TEST(classes_are_multiples_of_16_and_sorted)
{
    for (unsigned c = 0; c < MT_SMALL_CLASSES; c++) {
        CHECK(mt_class_size[c] % 16 == 0);
        if (c > 0)
            CHECK(mt_class_size[c] > mt_class_size[c - 1]);
    }
    CHECK(mt_class_size[MT_SMALL_CLASSES - 1] == MT_SMALL_MAX);
}

TEST_MAIN()
