/* Growable arrays and text buffers for the collector (a normal host process: malloc is
 * fine here). Allocation failure ends the collector with a message: a half-written trace
 * is marked incomplete, which is the honest outcome. */
#include "collector.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void out_of_memory(void)
{
    fputs("mtrace-run: error: out of memory\n", stderr);
    exit(1);
}

void *mt_grow(void *items, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return items;
    /* Doubling keeps appends amortized O(1); start at 16 to skip the tiny sizes. */
    size_t n = *cap ? *cap : 16;
    while (n < need)
        n *= 2;
    void *p = realloc(items, n * size);
    if (!p)
        out_of_memory();
    memset((char *)p + *cap * size, 0, (n - *cap) * size);
    *cap = n;
    return p;
}

void *mt_xcalloc(size_t count, size_t size)
{
    void *p = calloc(count ? count : 1, size ? size : 1);
    if (!p)
        out_of_memory();
    return p;
}

char *mt_xstrdup(const char *s)
{
    char *p = strdup(s ? s : "");
    if (!p)
        out_of_memory();
    return p;
}

void mt_buf_append(struct mt_buf *b, const void *data, size_t len)
{
    b->data = mt_grow(b->data, &b->cap, b->len + len + 1, 1);
    memcpy(b->data + b->len, data, len);
    b->len += len;
    b->data[b->len] = '\0';
}

void mt_buf_printf(struct mt_buf *b, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    b->data = mt_grow(b->data, &b->cap, b->len + (size_t)n + 1, 1);
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

void mt_buf_json_string(struct mt_buf *b, const char *s, size_t len)
{
    mt_buf_append(b, "\"", 1);
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            mt_buf_append(b, esc, 2);
        } else if (c < 0x20) {
            mt_buf_printf(b, "\\u%04x", c);
        } else {
            mt_buf_append(b, &s[i], 1);
        }
    }
    mt_buf_append(b, "\"", 1);
}

void mt_buf_free(struct mt_buf *b)
{
    free(b->data);
    *b = (struct mt_buf){0};
}
