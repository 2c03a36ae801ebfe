/* Compiler macros shared by every C file of mtrace.
 *
 * Owns: branch hints, inlining and visibility attributes, the TLS model, and small
 * helpers that have no better home. Nothing here calls the OS or allocates. */
#ifndef MT_COMMON_COMPILER_H
#define MT_COMMON_COMPILER_H

#include <stddef.h>
#include <stdint.h>

#define MT_LIKELY(x)   __builtin_expect(!!(x), 1)
#define MT_UNLIKELY(x) __builtin_expect(!!(x), 0)

/* Fast paths are small and forced inline; the slow paths they branch to are out of line
 * and cold so that the fast path stays a few instructions with one predictable branch. */
#define MT_INLINE   static inline __attribute__((always_inline))
#define MT_NOINLINE __attribute__((noinline))
#define MT_COLD     __attribute__((cold, noinline))
/* Run once at start-up by every process, from a file whose other code is cold: placed with
 * the start-up code at the head of the text (.text.startup), so that its page is not the
 * only one run in a 64 KiB stretch of cold code (see HOT_SRC in the Makefile). */
#define MT_STARTUP  __attribute__((section(".text.startup")))
/* A big zero-initialised array touched sparsely or rarely (the segment map, text buffers,
 * tables of the debug layer): placed in .lbss, which the linker puts after all of .bss, so
 * that the small variables every process writes share a page or two instead of being
 * spread between the big arrays (each page they land on is a resident 4 KiB). */
#define MT_BIG_BSS  __attribute__((section(".lbss")))
#define MT_NORETURN _Noreturn
#define MT_PRINTF(fmt_index, first_arg) __attribute__((format(printf, fmt_index, first_arg)))
#define MT_UNUSED   __attribute__((unused))

/* Three visibility tiers: MT_API for the public names of include/mtrace.h and the malloc
 * family; everything built with -fvisibility=hidden otherwise. MT_HIDDEN documents the
 * intent on cross-file names. */
#define MT_API    __attribute__((visibility("default")))
#define MT_HIDDEN __attribute__((visibility("hidden")))

/* initial-exec TLS: a single %fs-relative load, and no __tls_get_addr call that could
 * itself allocate while we are inside malloc. */
#define MT_TLS __thread __attribute__((tls_model("initial-exec")))

/* Cache line size of every x86-64 and most aarch64 parts; used to keep data written by
 * different threads on different lines. */
#define MT_CACHE_LINE 64
#define MT_ALIGNED(n) __attribute__((aligned(n)))

#define MT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))
#define MT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define MT_MAX(a, b) ((a) > (b) ? (a) : (b))

MT_INLINE int mt_is_pow2(size_t x) { return x != 0 && (x & (x - 1)) == 0; }
MT_INLINE size_t mt_align_up(size_t x, size_t align) { return (x + align - 1) & ~(align - 1); }
MT_INLINE size_t mt_align_down(size_t x, size_t align) { return x & ~(align - 1); }
MT_INLINE uintptr_t mt_ptr_align_up(uintptr_t x, uintptr_t align)
{
    return (x + align - 1) & ~(align - 1);
}
/* Index of the highest set bit; x must be non-zero. */
MT_INLINE unsigned mt_log2_floor(size_t x) { return 63u - (unsigned)__builtin_clzl(x); }
/* Smallest n with 2^n >= x; x must be non-zero. */
MT_INLINE unsigned mt_log2_ceil(size_t x) { return x <= 1 ? 0 : mt_log2_floor(x - 1) + 1; }
/* Set bits of x. Not __builtin_popcountll: without -mpopcnt that is a call to libgcc's
 * __popcountdi2, linked at the end of libmtalloc.so's text among the cold code, and the
 * first remote free collected faulted in that 64 KiB of text (48 KiB resident in a
 * two-thread program). The same few instructions inline. */
MT_INLINE unsigned mt_popcount64(uint64_t x)
{
    x = x - ((x >> 1) & 0x5555555555555555ull);
    x = (x & 0x3333333333333333ull) + ((x >> 2) & 0x3333333333333333ull);
    x = (x + (x >> 4)) & 0x0f0f0f0f0f0f0f0full;
    return (unsigned)((x * 0x0101010101010101ull) >> 56);
}

#endif
