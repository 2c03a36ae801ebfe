/* Heap error reports: after the allocator's first line ("mtrace: error: double free of
 * ..."), the stack of the thread that hit it, then the tracer's part (allocation and free
 * sites) when one is installed.
 *
 * The stack comes from libunwind's local unwinder, which takes its memory from its own
 * mmap'd pool, and is symbolized with dladdr (nearest dynamic symbol; full file:line
 * symbolization is the collector's job when tracing): neither touches the heap, which may
 * be the very thing that is broken. */
#define UNW_LOCAL_ONLY
#include "error_report.h"

#include <dlfcn.h>
#include <libunwind.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/format.h"
#include "../common/log.h"
#include "../common/platform.h"

/* Frames printed at most: enough for deep call chains, bounded for recursion bugs. */
#define REPORT_MAX_FRAMES 48

static mt_error_report_extra_fn report_extra;

void mt_error_report_set_extra(mt_error_report_extra_fn fn)
{
    report_extra = fn;
}

/* The object mtrace itself was loaded from: its frames are noise in a user's report. NULL
 * when mtrace is linked into the program (libmtalloc.a): the object is then the program
 * itself, whose frames are the point of the report, so nothing is filtered. */
static const void *own_base(void)
{
    static const void *base;
    static bool resolved;
    if (!resolved) {
        Dl_info self, program;
        const void *program_phdr = mt_os_program_headers();
        if (dladdr((const void *)(uintptr_t)&own_base, &self) &&
            !(program_phdr && dladdr(program_phdr, &program) && program.dli_fbase == self.dli_fbase))
            base = self.dli_fbase;
        resolved = true;
    }
    return base;
}

/* "func+0x1a (/lib/libfoo.so)", "/path/prog+0x1298" or the bare address. `ip` is looked up
 * as is: callers step return addresses back into the call instruction. */
static void describe_code(char *buf, size_t cap, uintptr_t ip)
{
    Dl_info info;
    if (!dladdr((const void *)ip, &info))
        mt_fmt(buf, cap, "%p", (void *)ip);
    else if (info.dli_sname)
        mt_fmt(buf, cap, "%s+0x%lx (%s)", info.dli_sname, (unsigned long)(ip - (uintptr_t)info.dli_saddr),
               info.dli_fname);
    else
        mt_fmt(buf, cap, "%s+0x%lx", info.dli_fname, (unsigned long)(ip - (uintptr_t)info.dli_fbase));
}

static bool is_own_code(uintptr_t ip)
{
    Dl_info info;
    const void *base = own_base();
    return base && dladdr((const void *)ip, &info) && info.dli_fbase == base;
}

void mt_print_backtrace(int fd)
{
    void *frames[REPORT_MAX_FRAMES + 8];
    int n = unw_backtrace(frames, (int)MT_ARRAY_LEN(frames));
    int shown = 0;
    for (int i = 0; i < n && shown < REPORT_MAX_FRAMES; i++) {
        uintptr_t ip = (uintptr_t)frames[i];
        /* Return addresses point after the call; step back into it for the lookup. */
        uintptr_t lookup = i ? ip - 1 : ip;
        if (is_own_code(lookup))
            continue;
        char where[512];
        describe_code(where, sizeof where, lookup);
        mt_dprintf(fd, "mtrace:   #%-2d %p in %s\n", shown++, (void *)ip, where);
    }
}

static void report_hook(const struct mt_heap_error *error)
{
    mt_print_backtrace(MT_LOG_FD);
    char where[512];
    if (error->alloc_site) {
        describe_code(where, sizeof where, (uintptr_t)error->alloc_site - 1);
        mt_dprintf(MT_LOG_FD, "mtrace:   the block was allocated by %s\n", where);
    }
    if (error->free_site) {
        describe_code(where, sizeof where, (uintptr_t)error->free_site - 1);
        mt_dprintf(MT_LOG_FD, "mtrace:   and freed by %s\n", where);
    }
    if (report_extra)
        report_extra(error);
}

void mt_error_report_install(void)
{
    static atomic_flag installed = ATOMIC_FLAG_INIT;
    if (atomic_flag_test_and_set(&installed))
        return;
    own_base(); /* resolve now, while the heap is sound */
    mt_heap_error_set_hook(report_hook);
}
