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
    const void *block;
    size_t size;
    bool freed;
    if (!mt_debug_guard_lookup(address, &block, &size, &freed))
        return false;
    char detail[160];
    intptr_t offset = (intptr_t)((uintptr_t)address - (uintptr_t)block);
    long past = (long)(offset - (intptr_t)size + 1);
    if (freed)
        mt_fmt(detail, sizeof detail, "offset %ld of the freed block was touched", (long)offset);
    else
        mt_fmt(detail, sizeof detail, "%ld byte%s past the end hit the guard page", past, past == 1 ? "" : "s");
    mt_heap_error_simple(freed ? MT_ERR_FREED_BLOCK : MT_ERR_OVERFLOW, block, size, MT_API_ACCESS, detail);
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
