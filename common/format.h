/* printf-style formatting into caller-provided buffers, for code that runs inside malloc
 * or a signal handler and so cannot use stdio.
 *
 * Supported: %d %i %u %x %X %p %s %c %% with the length modifiers l, ll, z, the flags
 * '-' and '0', and a decimal width. Output is always NUL-terminated and truncated to the
 * buffer; the return value is the length written (not the length that would have been). */
#ifndef MT_COMMON_FORMAT_H
#define MT_COMMON_FORMAT_H

#include <stdarg.h>
#include <stddef.h>

#include "compiler.h"

size_t mt_vfmt(char *buf, size_t cap, const char *fmt, va_list ap);
size_t mt_fmt(char *buf, size_t cap, const char *fmt, ...) MT_PRINTF(3, 4);

/* Format and write(2) to fd in one call, through a stack buffer of MT_FMT_LINE_MAX bytes. */
#define MT_FMT_LINE_MAX 1024
void mt_dprintf(int fd, const char *fmt, ...) MT_PRINTF(2, 3);

/* A buffered writer over a file descriptor, for long outputs (show_alloc_mem_ex) that
 * would otherwise make one system call per line. */
struct mt_writer {
    int fd;
    size_t used;
    char buf[4096];
};
void mt_writer_init(struct mt_writer *w, int fd);
void mt_writer_printf(struct mt_writer *w, const char *fmt, ...) MT_PRINTF(2, 3);
void mt_writer_flush(struct mt_writer *w);

#endif
