/* Implementation of log.h: stack-formatted single write(2) per message, so lines from
 * several threads do not interleave mid-line. */
#include "log.h"

#include "format.h"
#include "platform.h"

static void emit(const char *prefix, const char *fmt, va_list ap)
{
    char line[MT_FMT_LINE_MAX];
    size_t n = mt_fmt(line, sizeof line, "mtrace: %s", prefix);
    n += mt_vfmt(line + n, sizeof line - n - 1, fmt, ap);
    line[n++] = '\n';
    mt_os_write_all(MT_LOG_FD, line, n);
}

void mt_warn(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit("warning: ", fmt, ap);
    va_end(ap);
}

void mt_verror(const char *fmt, va_list ap)
{
    emit("error: ", fmt, ap);
}

void mt_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit("error: ", fmt, ap);
    va_end(ap);
}

void mt_note(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    emit("", fmt, ap);
    va_end(ap);
}

void mt_panic(const char *file, int line, const char *fmt, ...)
{
    char text[MT_FMT_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    mt_vfmt(text, sizeof text, fmt, ap);
    va_end(ap);
    mt_dprintf(MT_LOG_FD, "mtrace: internal error at %s:%d: %s\n", file, line, text);
    mt_os_abort();
}
