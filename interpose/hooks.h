/* The one list of functions mtrace exports.
 *
 * MT_MALLOC_HOOKS: the malloc family, interposed over libc's (LD_PRELOAD) or linked in
 * place of it (libmtalloc.a). MT_PUBLIC_API: the functions of include/mtrace.h.
 * X(return type, name, parameter list, argument list)
 *
 * This list generates the linker version script (build/exports.map), drives
 * tests/c/test_interpose.c (every name must resolve to our library under LD_PRELOAD) and
 * the table in README.md (checked by tests/py/test_docs.py). */
#ifndef MT_INTERPOSE_HOOKS_H
#define MT_INTERPOSE_HOOKS_H

#define MT_MALLOC_HOOKS(X)                                                                     \
    X(void *, malloc, (size_t size), (size))                                                   \
    X(void, free, (void *ptr), (ptr))                                                          \
    X(void *, calloc, (size_t count, size_t size), (count, size))                              \
    X(void *, realloc, (void *ptr, size_t size), (ptr, size))                                  \
    X(void *, reallocarray, (void *ptr, size_t count, size_t size), (ptr, count, size))        \
    X(int, posix_memalign, (void **out, size_t align, size_t size), (out, align, size))        \
    X(void *, aligned_alloc, (size_t align, size_t size), (align, size))                       \
    X(void *, memalign, (size_t align, size_t size), (align, size))                            \
    X(void *, valloc, (size_t size), (size))                                                   \
    X(void *, pvalloc, (size_t size), (size))                                                  \
    X(size_t, malloc_usable_size, (void *ptr), (ptr))                                          \
    X(int, malloc_trim, (size_t pad), (pad))                                                   \
    X(struct mallinfo2, mallinfo2, (void), ())                                                 \
    X(struct mallinfo, mallinfo, (void), ())                                                   \
    X(void, malloc_stats, (void), ())                                                          \
    X(int, mallopt, (int param, int value), (param, value))

#define MT_PUBLIC_API(X)                                                                       \
    X(void, show_alloc_mem, (void), ())                                                        \
    X(void, show_alloc_mem_ex, (void), ())                                                     \
    X(void, show_alloc_hist, (void), ())                                                       \
    X(void, mt_show_alloc_mem_fd, (int fd), (fd))                                              \
    X(void, mt_show_alloc_mem_ex_fd, (int fd), (fd))                                           \
    X(void, mt_show_alloc_hist_fd, (int fd), (fd))                                             \
    X(int, mt_heap_check, (void), ())                                                          \
    X(void, mt_heap_stats, (struct mt_heap_stats *out), (out))                                 \
    X(mt_arena_t *, mt_arena_create, (size_t reserve), (reserve))                              \
    X(void *, mt_arena_push, (mt_arena_t *arena, size_t size), (arena, size))                  \
    X(void *, mt_arena_push_zero, (mt_arena_t *arena, size_t size), (arena, size))             \
    X(void *, mt_arena_push_aligned, (mt_arena_t *arena, size_t size, size_t align),           \
      (arena, size, align))                                                                    \
    X(size_t, mt_arena_pos, (mt_arena_t *arena), (arena))                                      \
    X(void, mt_arena_pop_to, (mt_arena_t *arena, size_t pos), (arena, pos))                    \
    X(void, mt_arena_pop, (mt_arena_t *arena, size_t size), (arena, size))                     \
    X(void, mt_arena_clear, (mt_arena_t *arena), (arena))                                      \
    X(void, mt_arena_release, (mt_arena_t *arena), (arena))                                    \
    X(void, mt_arena_set_auto_align, (mt_arena_t *arena, int on), (arena, on))                 \
    X(void, mt_trace_pause, (void), ())                                                        \
    X(void, mt_trace_resume, (void), ())                                                       \
    X(void, mt_trace_mark, (const char *label), (label))                                       \
    X(int, mt_trace_active, (void), ())

/* Exported by libmtrace.so only: process exits that bypass exit(), recorded before the
 * process ends (MT_REC_EXIT with MT_EXIT_IMMEDIATE). Defined in record.c. */
#define MT_TRACE_HOOKS(X)                                                                      \
    X(void, _exit, (int status), (status))                                                     \
    X(void, _Exit, (int status), (status))

#endif
