/* Shared helpers of the heap attack programs (tests/attacks/).
 *
 * Each program performs one classic heap attack through the malloc API alone and judges
 * its own outcome:
 *   exit 0   the attack succeeded (a forged address was returned, two live blocks overlap,
 *            a secret leaked, a neighbour was silently corrupted, a pointer was rewritten);
 *   exit 1   the attack failed silently: the allocator survived and nothing happened;
 *   SIGABRT  the allocator detected it (glibc's and mtrace's checks both abort);
 *   anything else (SIGSEGV...) counts as "crashed" in the table.
 * Exit 2 is a usage error, never an outcome.
 *
 * The attacks are written against a glibc-style boundary-tag heap, the layout they were
 * invented for: a block's chunk header is the 16 bytes before it, its size word (with
 * PREV_INUSE in bit 0) at ptr - 8, and the previous chunk's footer (prev_size) overlaps the
 * last 8 usable bytes of the previous block. An overflow "into the next header" writes the
 * bytes right after malloc_usable_size() of the block, wherever the allocator under test
 * keeps its metadata. Requests are 8 mod 16 so that under glibc the usable size equals the
 * request and the next size word starts exactly at ptr + usable.
 *
 * Every program takes the tier as argv[1]: "small" (< 8 KiB) or "medium" (8-128 KiB). When
 * an attack fails, the program frees what it allocated before exiting 1, so that debug
 * allocators get the chance to verify canaries and poison. */
#ifndef MT_ATTACK_H
#define MT_ATTACK_H

#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ATTACK_SUCCEEDED 0
#define ATTACK_FAILED 1
#define ATTACK_USAGE 2

/* glibc's chunk geometry on 64-bit: what the attacks forge. */
#define GLIBC_HEADER 16     /* prev_size + size words before the user pointer */
#define GLIBC_SIZE_WORD 8   /* the size word is this many bytes before the pointer */
#define GLIBC_PREV_INUSE 1u /* bit 0 of the size word */
#define GLIBC_IS_MMAPPED 2u

/* The request each tier uses by default: 8 mod 16 (see above). 0x38 is a tcache and
 * fastbin size in glibc and a 64-byte class in mtrace; 0x3ff8 is a 16 KiB chunk, beyond
 * glibc's tcache and inside mtrace's medium tier. */
#define SMALL_REQUEST ((size_t)0x38)
#define MEDIUM_REQUEST ((size_t)0x3ff8)

enum tier { TIER_SMALL, TIER_MEDIUM };

static inline enum tier attack_tier(int argc, char **argv)
{
    if (argc >= 2 && strcmp(argv[1], "small") == 0)
        return TIER_SMALL;
    if (argc >= 2 && strcmp(argv[1], "medium") == 0)
        return TIER_MEDIUM;
    fprintf(stderr, "usage: %s small|medium [variant]\n", argv[0]);
    exit(ATTACK_USAGE);
}

static inline size_t attack_request(enum tier tier)
{
    return tier == TIER_SMALL ? SMALL_REQUEST : MEDIUM_REQUEST;
}

/* The optional variant argument, or `fallback`. */
static inline const char *attack_variant(int argc, char **argv, const char *fallback)
{
    return argc >= 3 ? argv[2] : fallback;
}

/* Ranges [a, a+an) and [b, b+bn) share a byte. */
static inline bool overlaps(const void *a, size_t an, const void *b, size_t bn)
{
    uintptr_t x = (uintptr_t)a, y = (uintptr_t)b;
    return a && b && x < y + bn && y < x + an;
}

/* Write a machine word at p + offset without the compiler reasoning about it (the
 * attacks deliberately write outside objects). */
static inline void poke(void *p, ptrdiff_t offset, uint64_t value)
{
    volatile uint64_t *w = (volatile uint64_t *)(void *)((char *)p + offset);
    *w = value;
}

static inline uint64_t peek(const void *p, ptrdiff_t offset)
{
    return *(const volatile uint64_t *)(const void *)((const char *)p + offset);
}

static inline void poke_byte(void *p, ptrdiff_t offset, uint8_t value)
{
    *(volatile uint8_t *)((char *)p + offset) = value;
}

/* An opaque identity: keeps the compiler from deleting a malloc/free pair or proving that
 * a freed pointer is dead. */
static inline void *launder(void *p)
{
    __asm__ volatile("" : "+r"(p));
    return p;
}

__attribute__((noreturn, format(printf, 1, 2))) static inline void attack_succeeded(const char *fmt, ...);
__attribute__((noreturn, format(printf, 1, 2))) static inline void attack_failed(const char *fmt, ...);

#include <stdarg.h>

static inline void attack_say(const char *verdict, const char *fmt, va_list ap)
{
    printf("%s: ", verdict);
    vprintf(fmt, ap);
    putchar('\n');
    fflush(stdout);
}

static inline void attack_succeeded(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    attack_say("attack succeeded", fmt, ap);
    va_end(ap);
    _exit(ATTACK_SUCCEEDED); /* no atexit work: the heap is known to be subverted */
}

static inline void attack_failed(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    attack_say("attack failed", fmt, ap);
    va_end(ap);
    exit(ATTACK_FAILED); /* a normal exit: allocators may verify their heap on the way out */
}

#endif
