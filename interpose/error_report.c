/* Heap error reports: after the allocator's first line ("mtrace: error: double free of
 * ..."), the stack of the thread that hit it, then the tracer's part (allocation and free
 * sites) when one is installed.
 *
 * The stack comes from GCC's unwinder (_Unwind_Backtrace, linked in statically from
 * libgcc_eh: it finds each frame's unwind table with _dl_find_object and allocates
 * nothing), and is symbolized with dladdr (nearest dynamic symbol; full file:line
 * symbolization is the collector's job when tracing): neither touches the heap, which may
 * be the very thing that is broken. Not libunwind: as a dependency of libmtalloc.so it
 * (and its liblzma) cost every process 110 KiB of resident memory for a report that most
 * never print. */
#include "error_report.h"

#include <dlfcn.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "../common/format.h"
#include "../common/log.h"
#include "../common/platform.h"

#include <unwind.h>

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

/* Frames collected by backtrace_step: a frame's address, and whether it is that of the
 * faulting instruction itself (a signal frame) rather than a return address. */
struct backtrace {
    uintptr_t ip[REPORT_MAX_FRAMES + 8];
    bool at_insn[REPORT_MAX_FRAMES + 8];
    int count;
};

static _Unwind_Reason_Code backtrace_step(struct _Unwind_Context *context, void *arg)
{
    struct backtrace *bt = arg;
    if (bt->count >= (int)MT_ARRAY_LEN(bt->ip))
        return _URC_END_OF_STACK;
    int before_insn = 0;
    uintptr_t ip = (uintptr_t)_Unwind_GetIPInfo(context, &before_insn);
    if (ip == 0)
        return _URC_END_OF_STACK;
    bt->ip[bt->count] = ip;
    bt->at_insn[bt->count] = before_insn != 0;
    bt->count++;
    return _URC_NO_REASON;
}

void mt_print_backtrace(int fd)
{
    struct backtrace bt = {.count = 0};
    _Unwind_Backtrace(backtrace_step, &bt);
    int shown = 0;
    for (int i = 0; i < bt.count && shown < REPORT_MAX_FRAMES; i++) {
        uintptr_t ip = bt.ip[i];
        /* Return addresses point after the call; step back into it for the lookup. */
        uintptr_t lookup = bt.at_insn[i] ? ip : ip - 1;
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
