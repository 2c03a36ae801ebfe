/* Smoke test: the malloc family works at all, linked statically with the allocator. */
#include <malloc.h>

#include "check.h"

TEST(malloc_free_roundtrip)
{
    for (size_t size = 0; size < 100000; size = size * 2 + 1) {
        char *p = malloc(size);
        REQUIRE(p != NULL);
        CHECK(((uintptr_t)p & 15) == 0);
        CHECK(malloc_usable_size(p) >= size);
        memset(p, 0xab, size);
        free(p);
    }
}

TEST_MAIN()
