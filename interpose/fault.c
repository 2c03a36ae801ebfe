/* Debug mode's fault handler: a SIGSEGV inside a guard page or a freed guarded block is a
 * heap buffer overflow or a use after free; report it like every other heap error (the
 * allocator's error path aborts) instead of dying with a bare "Segmentation fault". Any
 * other fault goes to the program's own handler or the default action, untouched. */
#include "fault.h"

#include <stdatomic.h>
#include <stdint.h>

#include "../allocator/debug.h"
#include "../common/format.h"
#include "../common/platform.h"

static bool on_guard_fault(void *address)
{
    struct mt_debug_guard_hit hit;
    if (!mt_debug_guard_lookup(address, &hit))
        return false;
    char detail[160];
    intptr_t offset = (intptr_t)((uintptr_t)address - (uintptr_t)hit.block);
    long past = (long)(offset - (intptr_t)hit.size + 1);
    if (hit.freed)
        mt_fmt(detail, sizeof detail, "offset %ld of the freed block was touched", (long)offset);
    else
        mt_fmt(detail, sizeof detail, "%ld byte%s past the end hit the guard page", past, past == 1 ? "" : "s");
    /* With the block's allocation and free sites: the report points at the cause, not
     * just at the access. */
    struct mt_heap_error e = {hit.freed ? MT_ERR_FREED_BLOCK : MT_ERR_OVERFLOW, hit.block, hit.size, MT_API_ACCESS,
                              detail, hit.alloc_site, hit.free_site};
    mt_heap_error(&e);
    /* Continue mode: the access cannot be resumed; let it fault again without us. */
    return false;
}

void mt_fault_install(void)
{
    static atomic_flag installed = ATOMIC_FLAG_INIT;
    if (!mt_debug_config.enabled || !mt_debug_config.guard || atomic_flag_test_and_set(&installed))
        return; /* installing twice would make the handler chain to itself */
    mt_os_install_fault_handler(on_guard_fault);
}
