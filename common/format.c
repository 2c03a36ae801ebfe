/* A small vsnprintf without malloc or locale; see format.h for the supported subset. */
#include "format.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "platform.h"

struct out {
    char *buf;
    size_t cap; /* bytes available for text, excluding the terminating NUL */
    size_t len;
};

static void put_char(struct out *o, char c)
{
    if (o->len < o->cap)
        o->buf[o->len++] = c;
}

static void put_padded(struct out *o, const char *s, size_t n, int width, bool left, char pad)
{
    size_t w = width > 0 ? (size_t)width : 0;
    if (!left)
        for (size_t i = n; i < w; i++)
            put_char(o, pad);
    for (size_t i = 0; i < n; i++)
        put_char(o, s[i]);
    if (left)
        for (size_t i = n; i < w; i++)
            put_char(o, ' ');
}

/* Render an unsigned value in `base` into the end of tmp; returns the first digit. */
static char *render_unsigned(char *end, unsigned long long v, unsigned base, bool upper)
{
    const char *digits = upper ? "0123456789ABCDEF" : "0123456789abcdef";
    char *p = end;
    do {
        *--p = digits[v % base];
        v /= base;
    } while (v);
    return p;
}

size_t mt_vfmt(char *buf, size_t cap, const char *fmt, va_list ap)
{
    if (cap == 0)
        return 0;
    struct out o = {buf, cap - 1, 0};
    for (const char *f = fmt; *f; f++) {
        if (*f != '%') {
            put_char(&o, *f);
            continue;
        }
        f++;
        bool left = false;
        char pad = ' ';
        for (;; f++) {
            if (*f == '-')
                left = true;
            else if (*f == '0')
                pad = '0';
            else
                break;
        }
        int width = 0;
        while (*f >= '0' && *f <= '9')
            width = width * 10 + (*f++ - '0');
        int longs = 0;
        bool size_t_arg = false;
        for (;; f++) {
            if (*f == 'l')
                longs++;
            else if (*f == 'z')
                size_t_arg = true;
            else
                break;
        }
        char tmp[32];
        char *end = tmp + sizeof tmp;
        switch (*f) {
        case 'd':
        case 'i': {
            long long v = size_t_arg ? (long long)va_arg(ap, ptrdiff_t)
                          : longs >= 2 ? va_arg(ap, long long)
                          : longs == 1 ? va_arg(ap, long)
                                       : va_arg(ap, int);
            unsigned long long mag = v < 0 ? 0ull - (unsigned long long)v : (unsigned long long)v;
            char *p = render_unsigned(end, mag, 10, false);
            if (v < 0)
                *--p = '-';
            put_padded(&o, p, (size_t)(end - p), width, left, pad);
            break;
        }
        case 'u':
        case 'x':
        case 'X': {
            unsigned long long v = size_t_arg ? (unsigned long long)va_arg(ap, size_t)
                                   : longs >= 2 ? va_arg(ap, unsigned long long)
                                   : longs == 1 ? va_arg(ap, unsigned long)
                                                : va_arg(ap, unsigned);
            char *p = render_unsigned(end, v, *f == 'u' ? 10 : 16, *f == 'X');
            put_padded(&o, p, (size_t)(end - p), width, left, pad);
            break;
        }
        case 'p': {
            uintptr_t v = (uintptr_t)va_arg(ap, void *);
            char *p = render_unsigned(end, v, 16, false);
            *--p = 'x';
            *--p = '0';
            put_padded(&o, p, (size_t)(end - p), width, left, ' ');
            break;
        }
        case 's': {
            const char *s = va_arg(ap, const char *);
            if (!s)
                s = "(null)";
            put_padded(&o, s, strlen(s), width, left, ' ');
            break;
        }
        case 'c': {
            char c = (char)va_arg(ap, int);
            put_padded(&o, &c, 1, width, left, ' ');
            break;
        }
        case '%':
            put_char(&o, '%');
            break;
        case '\0':
            f--; /* a lone '%' at the end: stop without reading past the terminator */
            break;
        default:
            put_char(&o, '%');
            put_char(&o, *f);
            break;
        }
    }
    o.buf[o.len] = '\0';
    return o.len;
}

size_t mt_fmt(char *buf, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    size_t n = mt_vfmt(buf, cap, fmt, ap);
    va_end(ap);
    return n;
}

void mt_dprintf(int fd, const char *fmt, ...)
{
    char line[MT_FMT_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t n = mt_vfmt(line, sizeof line, fmt, ap);
    va_end(ap);
    mt_os_write_all(fd, line, n);
}

void mt_writer_init(struct mt_writer *w, int fd)
{
    w->fd = fd;
    w->used = 0;
}

void mt_writer_flush(struct mt_writer *w)
{
    if (w->used)
        mt_os_write_all(w->fd, w->buf, w->used);
    w->used = 0;
}

void mt_writer_printf(struct mt_writer *w, const char *fmt, ...)
{
    char line[MT_FMT_LINE_MAX];
    va_list ap;
    va_start(ap, fmt);
    size_t n = mt_vfmt(line, sizeof line, fmt, ap);
    va_end(ap);
    if (w->used + n > sizeof w->buf)
        mt_writer_flush(w);
    memcpy(w->buf + w->used, line, n);
    w->used += n;
}
