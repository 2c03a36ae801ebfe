/* Per-process secrets for the always-on integrity checks.
 *
 * Medium chunk headers carry a keyed checksum of their own address and size, so a header
 * forged by an overflow or written into a fake chunk does not verify without the key.
 * In-band free-list links are stored XOR-ed with a key and the address of the field that
 * holds them (glibc's safe-linking uses the address alone, which an attacker who knows one
 * heap address can undo). The keys come from getrandom at init. Cost: a multiply and a few
 * xors per header read, measured in bench/ against a build with MT_NO_HARDENING. */
#ifndef MT_ALLOCATOR_HARDEN_H
#define MT_ALLOCATOR_HARDEN_H

#include <stdint.h>

#include "../common/compiler.h"
#include "../common/hash.h"

struct mt_secrets {
    uint64_t header_key;  /* keys chunk-header checksums */
    uint64_t link_key;    /* masks free-list links */
    uint64_t canary_key;  /* seeds debug-mode canaries */
};

extern struct mt_secrets mt_secrets;

/* Draw fresh keys (allocator init; a forked child keeps its parent's keys, as the heap
 * it inherits was written with them). */
void mt_secrets_init(void);

/* Checksum of a header at `addr` whose size-and-flags word is `word`. */
MT_INLINE uint64_t mt_header_check(uintptr_t addr, uint64_t word)
{
    return mt_mix64(word ^ mt_secrets.header_key ^ ((uint64_t)addr * 0x9e3779b97f4a7c15ull));
}

/* Encode/decode a free-list link stored at `slot`. */
MT_INLINE uintptr_t mt_link_encode(const void *slot, const void *target)
{
    return (uintptr_t)target ^ mt_secrets.link_key ^ ((uintptr_t)slot >> 4);
}
MT_INLINE void *mt_link_decode(const void *slot, uintptr_t stored)
{
    return (void *)(stored ^ mt_secrets.link_key ^ ((uintptr_t)slot >> 4));
}

#endif
