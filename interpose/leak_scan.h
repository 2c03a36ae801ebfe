/* The exit leak scan (libmtrace.so): which live blocks can the program still reach?
 *
 * Roots: every writable mapping of the process (data and bss of every module, thread
 * stacks, TLS, anonymous memory of other allocators) except the allocator's own memory
 * (its segments, large mappings and their registry, the debug layer's block table and
 * quarantine), libmtrace.so's own data, the trace's shared memory (memfd:mtrace*) and the
 * kernel's [vvar]/[vsyscall]. The calling thread's stack counts from the frame that
 * entered the recorder's exit path upward (the program's frames; the recorder's own below
 * hold only stale copies). A block is reachable when a word in a root or in a reachable
 * block points anywhere inside it; the rest are leaked (a block reachable only from leaked
 * blocks is leaked). Conservative: an integer that looks like a pointer keeps a block
 * alive.
 *
 * Invariant: never calls malloc; the block table, mark bits and worklist are mmap'ed. */
#ifndef MT_INTERPOSE_LEAK_SCAN_H
#define MT_INTERPOSE_LEAK_SCAN_H

#include <stdbool.h>
#include <stdint.h>

struct mt_leak_result {
    uint64_t live_blocks;
    uint64_t leaked_blocks;
};

/* Called with up to MT_WIRE_LEAKED_PER_REC leaked block addresses at a time. */
typedef void (*mt_leak_emit_fn)(const uint64_t *ptrs, uint32_t count);

/* Run the scan; false if it could not (no memory for its tables). `stack_top_of_ours`:
 * the frame address of the recorder's exit entry point on this thread. */
bool mt_leak_scan_run(mt_leak_emit_fn emit, struct mt_leak_result *out, const void *stack_top_of_ours);

#endif
