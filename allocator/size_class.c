/* Size class tables (see size_class.h). Generated once by the formula in the header and
 * checked exhaustively against it by tests/c/test_size_class.c. */
#include "size_class.h"

const uint32_t mt_class_size[MT_SMALL_CLASSES] = {
    16, 32, 48, 64, 80, 96, 112, 128,
    144, 160, 176, 192, 208, 224, 240, 256,
    288, 320, 352, 384, 416, 448, 480, 512,
    576, 640, 704, 768, 832, 896, 960, 1024,
    1152, 1280, 1408, 1536, 1664, 1792, 1920, 2048,
    2304, 2560, 2816, 3072, 3328, 3584, 3840, 4096,
    4608, 5120, 5632, 6144, 6656, 7168, 7680, 8192,
};

const uint8_t mt_class_lookup[MT_CLASS_LOOKUP_MAX / 16 + 1] = {
    0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14,
    15, 16, 16, 17, 17, 18, 18, 19, 19, 20, 20, 21, 21, 22, 22, 23,
    23, 24, 24, 24, 24, 25, 25, 25, 25, 26, 26, 26, 26, 27, 27, 27,
    27, 28, 28, 28, 28, 29, 29, 29, 29, 30, 30, 30, 30, 31, 31, 31,
    31,
};

unsigned mt_size_class_aligned(size_t size, size_t align)
{
    if (size > MT_SMALL_MAX || align > MT_SMALL_MAX)
        return MT_SMALL_CLASSES;
    /* Classes are sorted, so the first multiple of align at or above size is the best. */
    for (unsigned c = mt_size_class(size); c < MT_SMALL_CLASSES; c++)
        if ((mt_class_size[c] & (align - 1)) == 0)
            return c;
    return MT_SMALL_CLASSES;
}
