/* The fatal path of error.h. */
#include "error.h"

#include <stdatomic.h>

#include "../common/format.h"
#include "../common/log.h"
#include "../common/options.h"
#include "../common/platform.h"

static mt_heap_error_hook_fn error_hook;
static atomic_size_t error_count;

static const char *const api_names[] = {
    [MT_API_MALLOC] = "malloc()",
    [MT_API_FREE] = "free()",
    [MT_API_CALLOC] = "calloc()",
    [MT_API_REALLOC] = "realloc()",
    [MT_API_REALLOCARRAY] = "reallocarray()",
    [MT_API_POSIX_MEMALIGN] = "posix_memalign()",
    [MT_API_ALIGNED_ALLOC] = "aligned_alloc()",
    [MT_API_MEMALIGN] = "memalign()",
    [MT_API_VALLOC] = "valloc()",
    [MT_API_PVALLOC] = "pvalloc()",
    [MT_API_USABLE_SIZE] = "malloc_usable_size()",
    [MT_API_HEAP_CHECK] = "mt_heap_check()",
    [MT_API_ARENA_PUSH] = "mt_arena_push()",
    [MT_API_ARENA_POS] = "mt_arena_pos()",
    [MT_API_ARENA_POP_TO] = "mt_arena_pop_to()",
    [MT_API_ARENA_POP] = "mt_arena_pop()",
    [MT_API_ARENA_CLEAR] = "mt_arena_clear()",
    [MT_API_ARENA_RELEASE] = "mt_arena_release()",
    [MT_API_ARENA_SET_AUTO_ALIGN] = "mt_arena_set_auto_align()",
    [MT_API_ACCESS] = "a memory access",
    [MT_API_EXIT] = "exit()",
    [MT_API_INTERNAL] = "the allocator",
};

static const char *const error_names[MT_ERR_KIND_COUNT] = {
    [MT_ERR_DOUBLE_FREE] = "double free",
    [MT_ERR_INVALID_FREE] = "invalid free",
    [MT_ERR_INTERIOR_FREE] = "invalid free",
    [MT_ERR_REALLOC_FREED] = "realloc of freed block",
    [MT_ERR_FREED_BLOCK] = "use of freed block",
    [MT_ERR_CORRUPT_HEADER] = "corrupted block header",
    [MT_ERR_CORRUPT_FREELIST] = "corrupted free list",
    [MT_ERR_CORRUPT_TOP] = "corrupted top chunk",
    [MT_ERR_OVERFLOW] = "heap buffer overflow",
    [MT_ERR_WRITE_AFTER_FREE] = "write after free",
    [MT_ERR_INVALID_REGION] = "invalid region operation",
};

const char *mt_api_name(enum mt_api api)
{
    return api <= MT_API_INTERNAL ? api_names[api] : "?";
}

const char *mt_heap_error_name(enum mt_heap_error_kind kind)
{
    return kind < MT_ERR_KIND_COUNT ? error_names[kind] : "heap error";
}

void mt_heap_error_set_hook(mt_heap_error_hook_fn hook)
{
    error_hook = hook;
}

size_t mt_heap_error_count(void)
{
    return atomic_load(&error_count);
}

void mt_heap_error(const struct mt_heap_error *e)
{
    char line[MT_FMT_LINE_MAX];
    size_t n = mt_fmt(line, sizeof line, "mtrace: error: %s of %p", mt_heap_error_name(e->kind), e->ptr);
    if (e->size)
        n += mt_fmt(line + n, sizeof line - n, " (size %zu)", e->size);
    n += mt_fmt(line + n, sizeof line - n, " in %s", mt_api_name(e->api));
    if (e->detail)
        n += mt_fmt(line + n, sizeof line - n, ": %s", e->detail);
    if (n + 1 < sizeof line)
        line[n++] = '\n';
    mt_os_write_all(MT_LOG_FD, line, n);
    atomic_fetch_add(&error_count, 1);
    if (error_hook) {
        error_hook(e); /* the backtrace, and the sites symbolized */
    } else {
        if (e->alloc_site)
            mt_dprintf(MT_LOG_FD, "mtrace:   the block was allocated by the code at %p\n", e->alloc_site);
        if (e->free_site)
            mt_dprintf(MT_LOG_FD, "mtrace:   and freed by the code at %p\n", e->free_site);
    }
    if (mt_option_int(MT_OPT_ON_ERROR) == 0 /* abort */)
        mt_os_abort();
}

void mt_heap_error_simple(enum mt_heap_error_kind kind, const void *ptr, size_t size, enum mt_api api,
                          const char *detail)
{
    struct mt_heap_error e = {kind, ptr, size, api, detail, NULL, NULL};
    mt_heap_error(&e);
}
