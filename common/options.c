/* Parsing of the options table (options.h). Runs inside malloc's first call, so it uses
 * no malloc, no stdio and no locale-dependent functions. */
#include "options.h"

#include <stdatomic.h>
#include <string.h>

#include "format.h"
#include "log.h"
#include "platform.h"

static const struct mt_option_desc option_table[MT_OPT_COUNT] = {
#define MT_OPTION_DESC(id, env, type, def, lo, hi, help) [MT_OPT_##id] = {env, type, def, lo, hi, help},
    MT_OPTIONS(MT_OPTION_DESC)
#undef MT_OPTION_DESC
};

static const char *const on_error_choices[] = {"abort", "continue", NULL};
static const char *const clock_choices[] = {"sampled", "tsc", "coarse", NULL};

/* 4 KiB per string option is ample for paths and patterns. */
#define OPTION_STRING_MAX 4096

/* A value points at its text (a default or a choice in the table, or the copy below), so
 * the values fit in one page: reading the options at start-up touched every 4 KiB text
 * buffer when they were kept inline (100 KiB resident in every process). */
struct option_value {
    long long num;
    bool is_set;
    const char *text;
};

static struct option_value option_values[MT_OPT_COUNT];
/* Strings from the environment are copied here because mt_os_getenv may return a static
 * buffer; a page is touched only for an option that is set. */
static char option_text[MT_OPT_COUNT][OPTION_STRING_MAX] MT_BIG_BSS;
static atomic_int options_state; /* 0 unread, 1 reading, 2 ready */

const char *const *mt_option_choices(enum mt_option_id id)
{
    if (id == MT_OPT_ON_ERROR)
        return on_error_choices;
    if (id == MT_OPT_CLOCK)
        return clock_choices;
    return NULL;
}

static bool equals_ci(const char *a, const char *b)
{
    for (; *a && *b; a++, b++) {
        char ca = (*a >= 'A' && *a <= 'Z') ? (char)(*a + 32) : *a;
        if (ca != *b)
            return false;
    }
    return *a == *b;
}

bool mt_parse_bool(const char *text, int *out, bool allow_auto)
{
    static const char *const truthy[] = {"1", "on", "yes", "true"};
    static const char *const falsy[] = {"0", "off", "no", "false"};
    for (size_t i = 0; i < MT_ARRAY_LEN(truthy); i++)
        if (equals_ci(text, truthy[i])) {
            *out = 1;
            return true;
        }
    for (size_t i = 0; i < MT_ARRAY_LEN(falsy); i++)
        if (equals_ci(text, falsy[i])) {
            *out = 0;
            return true;
        }
    if (allow_auto && equals_ci(text, "auto")) {
        *out = -1;
        return true;
    }
    return false;
}

static bool parse_unsigned(const char **p, unsigned long long *out)
{
    const char *s = *p;
    if (*s < '0' || *s > '9')
        return false;
    unsigned long long v = 0;
    for (; *s >= '0' && *s <= '9'; s++) {
        unsigned d = (unsigned)(*s - '0');
        if (v > (~0ull - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *p = s;
    *out = v;
    return true;
}

bool mt_parse_int(const char *text, long long *out)
{
    const char *p = text;
    bool negative = false;
    if (*p == '-') {
        negative = true;
        p++;
    }
    unsigned long long v;
    if (!parse_unsigned(&p, &v) || *p != '\0' || v > (unsigned long long)1 << 62)
        return false;
    *out = negative ? -(long long)v : (long long)v;
    return true;
}

bool mt_parse_size(const char *text, long long *out)
{
    const char *p = text;
    unsigned long long v;
    if (!parse_unsigned(&p, &v))
        return false;
    unsigned shift = 0;
    switch (*p) {
    case 'k': case 'K': shift = 10; p++; break;
    case 'm': case 'M': shift = 20; p++; break;
    case 'g': case 'G': shift = 30; p++; break;
    default: break;
    }
    if (shift && (*p == 'b' || *p == 'B' || *p == 'i'))
        p++; /* accept "4M", "4MB" and "4Mi" alike */
    if (shift && (*p == 'b' || *p == 'B'))
        p++;
    if (*p != '\0' || v > ((1ull << 62) >> shift))
        return false;
    *out = (long long)(v << shift);
    return true;
}

/* Parse `text` for option `id` into *value; false when it is not a valid value. */
static bool parse_value(enum mt_option_id id, const char *text, struct option_value *value)
{
    const struct mt_option_desc *d = &option_table[id];
    long long num = 0;
    const char *value_text = ""; /* what mt_option_str returns for a number */
    switch (d->type) {
    case MT_OPT_BOOL: {
        int b;
        if (!mt_parse_bool(text, &b, strcmp(d->default_text, "auto") == 0))
            return false;
        num = b;
        break;
    }
    case MT_OPT_INT:
        if (!mt_parse_int(text, &num) || num < d->min || num > d->max)
            return false;
        break;
    case MT_OPT_SIZE:
        if (strcmp(d->default_text, "auto") == 0 && equals_ci(text, "auto")) {
            num = -1;
            break;
        }
        if (!mt_parse_size(text, &num) || num < d->min || num > d->max)
            return false;
        break;
    case MT_OPT_STRING: {
        size_t n = strlen(text);
        if (n >= OPTION_STRING_MAX)
            return false;
        value_text = text; /* copied by read_all when it may not last */
        break;
    }
    case MT_OPT_CHOICE: {
        const char *const *choices = mt_option_choices(id);
        long long i = 0;
        for (; choices[i]; i++)
            if (equals_ci(text, choices[i]))
                break;
        if (!choices[i])
            return false;
        num = i;
        value_text = choices[i];
        break;
    }
    }
    value->num = num;
    value->text = value_text;
    return true;
}

static const char *expected_text(enum mt_option_id id, char *buf, size_t cap)
{
    const struct mt_option_desc *d = &option_table[id];
    switch (d->type) {
    case MT_OPT_BOOL:
        return "on or off";
    case MT_OPT_INT:
        mt_fmt(buf, cap, "a whole number from %lld to %lld", d->min, d->max);
        return buf;
    case MT_OPT_SIZE:
        mt_fmt(buf, cap, "a size from %lld to %lld bytes (K, M, G suffixes allowed)", d->min, d->max);
        return buf;
    case MT_OPT_STRING:
        return "a string shorter than 4096 bytes";
    case MT_OPT_CHOICE: {
        size_t n = 0;
        const char *const *c = mt_option_choices(id);
        for (size_t i = 0; c[i]; i++)
            n += mt_fmt(buf + n, cap - n, "%s%s", i ? " or " : "one of ", c[i]);
        return buf;
    }
    }
    return "";
}

static void read_all(bool quiet)
{
    for (int id = 0; id < MT_OPT_COUNT; id++) {
        struct option_value *v = &option_values[id];
        bool ok = parse_value((enum mt_option_id)id, option_table[id].default_text, v);
        (void)ok; /* defaults are valid by construction; tests/c/test_options.c checks it */
        v->is_set = false;
        const char *env = mt_os_getenv(option_table[id].name);
        if (!env)
            continue;
        struct option_value parsed;
        if (parse_value((enum mt_option_id)id, env, &parsed)) {
            if (option_table[id].type == MT_OPT_STRING) {
                memcpy(option_text[id], env, strlen(env) + 1);
                parsed.text = option_text[id];
            }
            *v = parsed;
            v->is_set = true;
        } else if (!quiet) {
            char expected[160];
            mt_warn("%s=%s is not valid (expected %s); using the default %s", option_table[id].name, env,
                    expected_text((enum mt_option_id)id, expected, sizeof expected),
                    option_table[id].default_text[0] ? option_table[id].default_text : "(empty)");
        }
    }
}

void mt_options_init(bool quiet)
{
    if (MT_LIKELY(atomic_load_explicit(&options_state, memory_order_acquire) == 2))
        return;
    int expected = 0;
    if (atomic_compare_exchange_strong(&options_state, &expected, 1)) {
        read_all(quiet);
        atomic_store_explicit(&options_state, 2, memory_order_release);
        return;
    }
    /* Another thread is reading: the first malloc of a process is racing with another
     * thread's first malloc, which lasts microseconds. */
    while (atomic_load_explicit(&options_state, memory_order_acquire) != 2)
        mt_os_yield();
}

void mt_options_reload(bool quiet)
{
    read_all(quiet);
    atomic_store_explicit(&options_state, 2, memory_order_release);
}

long long mt_option_int(enum mt_option_id id)
{
    mt_options_init(false);
    return option_values[id].num;
}

bool mt_option_bool(enum mt_option_id id)
{
    return mt_option_int(id) == 1;
}

bool mt_option_bool_or(enum mt_option_id id, bool when_auto)
{
    long long v = mt_option_int(id);
    return v < 0 ? when_auto : v == 1;
}

const char *mt_option_str(enum mt_option_id id)
{
    mt_options_init(false);
    return option_values[id].text;
}

bool mt_option_is_set(enum mt_option_id id)
{
    mt_options_init(false);
    return option_values[id].is_set;
}

const struct mt_option_desc *mt_option_describe(enum mt_option_id id)
{
    return &option_table[id];
}
