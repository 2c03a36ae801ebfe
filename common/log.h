/* Diagnostics without the heap: one line to stderr, formatted on the stack.
 *
 * Every message starts with "mtrace: " so users can tell ours from the program's output;
 * errors say what was detected and warnings say what we did instead. Safe inside malloc
 * and signal handlers. */
#ifndef MT_COMMON_LOG_H
#define MT_COMMON_LOG_H

#include <stdarg.h>

#include "compiler.h"

/* The descriptor diagnostics go to (stderr). */
#define MT_LOG_FD 2

/* "mtrace: warning: <text>\n" */
void mt_warn(const char *fmt, ...) MT_PRINTF(1, 2);
/* "mtrace: error: <text>\n" (the caller decides whether to abort) */
void mt_error(const char *fmt, ...) MT_PRINTF(1, 2);
void mt_verror(const char *fmt, va_list ap);
/* "mtrace: <text>\n" */
void mt_note(const char *fmt, ...) MT_PRINTF(1, 2);

/* An internal invariant broke: report the file and line, then abort. For bugs of
 * mtrace itself, never for bugs of the traced program (those go through the allocator's
 * error path, which prints backtraces and allocation sites). */
MT_NORETURN void mt_panic(const char *file, int line, const char *fmt, ...) MT_PRINTF(3, 4);
#define MT_PANIC(...) mt_panic(__FILE__, __LINE__, __VA_ARGS__)
#define MT_CHECK(cond)                                                                         \
    do {                                                                                       \
        if (MT_UNLIKELY(!(cond)))                                                              \
            MT_PANIC("internal check failed: %s", #cond);                                      \
    } while (0)

#endif
