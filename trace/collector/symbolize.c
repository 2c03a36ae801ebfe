/* Symbols: which module each address of a process lies in (from /proc/<pid>/maps), and
 * what function, file and line a (module, offset) location is (libdw, libdwfl).
 *
 * Modules are identified by (path, device, inode) while recording and described in the
 * trace by path and GNU build-id, so reports work without the binaries. Each module's
 * program headers are read once (libelf) to turn a mapping's file offset into its load
 * bias. Symbolization uses one offline Dwfl per module (opened on first use), so it never
 * needs the process itself: it may run long after the process is gone.
 *
 * A location holds a return address; the lookup uses offset - 1, inside the call
 * instruction, so that a call that is the last instruction of a function, or of an
 * inlined scope, is attributed to the right line.
 *
 * Opening a module's debug information is the expensive part (libc's separate debug file
 * has compressed sections: ~40 ms of inflating before its first name), so a helper thread
 * opens each module as soon as a stack first uses it, while the program still runs; the
 * main thread waits for that module's job only when it needs the module's names. The
 * helper has its own Dwfl per job and touches nothing else (`modules` may be reallocated
 * meanwhile); a finished job's Dwfl is handed to the main thread, which alone uses it.
 *
 * Demangling: libstdc++'s __cxa_demangle, found with dlopen at the first C++ name; when
 * libstdc++ is not installed names stay mangled. */
#include "collector.h"

#include <dlfcn.h>
#include <dwarf.h>
#include <elfutils/libdw.h>
#include <elfutils/libdwelf.h>
#include <elfutils/libdwfl.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "host.h"
#include "symtab.h"

/* Loadable segments remembered per module (executables and libraries have 2 to 5). */
#define PT_LOADS_MAX 16
/* Mappings start on page boundaries; a segment's file offset is rounded down to one. */
#define MAP_PAGE_MASK 0xfffull

struct load_segment {
    uint64_t vaddr, offset, filesz;
};

/* A module being opened by the helper thread. `path` is the job's own copy; the results
 * are the main thread's once `done` was seen under `warm_lock`. */
struct warm_job {
    char *path;
    Dwfl *dwfl;
    Dwfl_Module *dwfl_module;
    Dwarf_Addr dwfl_bias;
    bool done;
    struct warm_job *next; /* in the pending queue */
};

struct module {
    char *path;
    char *build_id; /* lowercase hex, or NULL */
    uint64_t dev, inode;
    bool is_elf;
    bool is_own;
    struct load_segment loads[PT_LOADS_MAX];
    unsigned load_count;
    Dwfl *dwfl; /* opened on the first symbol lookup */
    Dwfl_Module *dwfl_module;
    Dwarf_Addr dwfl_bias;
    bool dwfl_tried;
    struct mt_symtab *symtab; /* built at the first address DWARF does not name */
    bool symtab_tried;
    struct warm_job *warm; /* queued for the helper thread; NULL when not */
};

static struct module *modules; /* index = module id; 0 unused */
static size_t module_count, module_cap;

/* ---- modules ------------------------------------------------------------------------------ */

static bool path_is_own(const char *path)
{
    const char *base = strrchr(path, '/');
    base = base ? base + 1 : path;
    return strncmp(base, "libmtrace", 9) == 0 || strncmp(base, "libmtalloc", 10) == 0;
}

static void read_elf_facts(struct module *m)
{
    int fd = open(m->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    elf_version(EV_CURRENT);
    Elf *elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
    if (elf && elf_kind(elf) == ELF_K_ELF) {
        m->is_elf = true;
        size_t phnum = 0;
        elf_getphdrnum(elf, &phnum);
        for (size_t i = 0; i < phnum && m->load_count < PT_LOADS_MAX; i++) {
            GElf_Phdr ph;
            if (gelf_getphdr(elf, (int)i, &ph) && ph.p_type == PT_LOAD)
                m->loads[m->load_count++] = (struct load_segment){ph.p_vaddr, ph.p_offset, ph.p_filesz};
        }
        const void *id = NULL;
        ssize_t len = dwelf_elf_gnu_build_id(elf, &id);
        if (len > 0) {
            m->build_id = mt_xcalloc((size_t)len * 2 + 1, 1);
            for (ssize_t i = 0; i < len; i++)
                sprintf(m->build_id + i * 2, "%02x", ((const unsigned char *)id)[i]);
        }
    }
    if (elf)
        elf_end(elf);
    close(fd);
}

static uint32_t module_for(const char *path, uint64_t dev, uint64_t inode)
{
    for (size_t i = 1; i < module_count; i++)
        if (modules[i].inode == inode && modules[i].dev == dev && strcmp(modules[i].path, path) == 0)
            return (uint32_t)i;
    if (module_count == 0)
        module_count = 1;
    MT_VEC_RESERVE(modules, module_cap, module_count + 1);
    struct module *m = &modules[module_count];
    memset(m, 0, sizeof *m);
    m->path = mt_xstrdup(path);
    m->dev = dev;
    m->inode = inode;
    m->is_own = path_is_own(path);
    read_elf_facts(m);
    return (uint32_t)module_count++;
}

uint32_t mt_sym_module_count(void)
{
    return module_count ? (uint32_t)module_count : 1;
}

const char *mt_sym_module_path(uint32_t module)
{
    return module && module < module_count ? modules[module].path : NULL;
}

const char *mt_sym_module_build_id(uint32_t module)
{
    return module && module < module_count ? modules[module].build_id : NULL;
}

bool mt_sym_module_is_own(uint32_t module)
{
    return module && module < module_count && modules[module].is_own;
}

/* ---- process mappings --------------------------------------------------------------------- */

/* Load bias of a mapping of `m` at `start` from file offset `file_off`: the segment holding
 * that offset says which file address the mapping's first byte has. */
static bool mapping_bias(const struct module *m, uint64_t start, uint64_t file_off, uint64_t *bias)
{
    for (unsigned i = 0; i < m->load_count; i++) {
        const struct load_segment *s = &m->loads[i];
        uint64_t seg_page = s->offset & ~MAP_PAGE_MASK;
        if (file_off >= seg_page && file_off < s->offset + (s->filesz ? s->filesz : 1)) {
            uint64_t vaddr_at_start = s->vaddr + file_off - s->offset;
            *bias = start - vaddr_at_start;
            return true;
        }
    }
    return false;
}

static int compare_range(const void *a, const void *b)
{
    const struct mt_map_range *x = a, *y = b;
    return x->start < y->start ? -1 : x->start > y->start;
}

void mt_sym_read_maps(struct mt_proc_maps *maps, int32_t pid)
{
    char *text = mt_host_read_proc_maps(pid);
    if (!text)
        return;
    maps->count = 0;
    for (char *line = text; line && *line;) {
        char *next = strchr(line, '\n');
        if (next)
            *next++ = '\0';
        unsigned long long start, end, off, inode;
        unsigned dev_major, dev_minor;
        char perms[8];
        int path_at = 0;
        if (sscanf(line, "%llx-%llx %7s %llx %x:%x %llu %n", &start, &end, perms, &off, &dev_major, &dev_minor,
                   &inode, &path_at) >= 7 &&
            path_at > 0 && line[path_at] == '/' && perms[2] == 'x') {
            char *path = line + path_at;
            char *deleted = strstr(path, " (deleted)");
            if (deleted)
                *deleted = '\0';
            uint32_t id = module_for(path, ((uint64_t)dev_major << 32) | dev_minor, inode);
            uint64_t bias;
            if (modules[id].is_elf && mapping_bias(&modules[id], start, off, &bias)) {
                MT_VEC_RESERVE(maps->ranges, maps->cap, maps->count + 1);
                maps->ranges[maps->count++] = (struct mt_map_range){start, end, bias, id};
            }
        }
        line = next;
    }
    free(text);
    if (maps->count)
        qsort(maps->ranges, maps->count, sizeof *maps->ranges, compare_range);
}

bool mt_sym_locate(const struct mt_proc_maps *maps, uint64_t addr, struct mt_code_loc *loc)
{
    size_t lo = 0, hi = maps->count;
    while (lo < hi) {
        size_t mid = (lo + hi) / 2;
        if (maps->ranges[mid].end <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < maps->count && addr >= maps->ranges[lo].start && addr < maps->ranges[lo].end) {
        loc->module = maps->ranges[lo].module;
        loc->offset = addr - maps->ranges[lo].bias;
        return true;
    }
    loc->module = 0;
    loc->offset = addr;
    return false;
}

void mt_sym_maps_free(struct mt_proc_maps *maps)
{
    free(maps->ranges);
    *maps = (struct mt_proc_maps){0};
}

/* ---- demangling ----------------------------------------------------------------------------- */

typedef char *(*cxa_demangle_fn)(const char *, char *, size_t *, int *);
static cxa_demangle_fn cxa_demangle;
static bool demangle_tried;

bool mt_sym_can_demangle(void)
{
    if (!demangle_tried) {
        demangle_tried = true;
        void *lib = dlopen("libstdc++.so.6", RTLD_NOW | RTLD_LOCAL);
        if (lib)
            cxa_demangle = (cxa_demangle_fn)dlsym(lib, "__cxa_demangle");
    }
    return cxa_demangle != NULL;
}

/* A malloc'd demangled copy of `name`, or a plain copy. */
static char *demangled(const char *name)
{
    if (!name)
        return NULL;
    if (name[0] == '_' && name[1] == 'Z' && mt_sym_can_demangle()) {
        int status = -1;
        char *d = cxa_demangle(name, NULL, NULL, &status);
        if (d && status == 0)
            return d;
        free(d);
    }
    return mt_xstrdup(name);
}

/* ---- symbolization -------------------------------------------------------------------------- */

struct loc_frames {
    struct mt_code_loc loc;
    uint32_t first, count; /* in `frames` */
};

static struct mt_sym_frame *frames;
static size_t frame_count, frame_cap;
static struct loc_frames *loc_table; /* open addressing on (module, offset); count 0 = empty */
static size_t loc_table_mask, loc_table_used;

static const Dwfl_Callbacks offline_callbacks = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
};

/* Open `path`'s Dwfl and its debug information (the expensive part). Runs on either
 * thread; touches only its arguments. */
static bool open_dwfl(const char *path, Dwfl **dwfl_out, Dwfl_Module **module_out, Dwarf_Addr *bias_out)
{
    *dwfl_out = NULL;
    *module_out = NULL;
    Dwfl *dwfl = dwfl_begin(&offline_callbacks);
    if (!dwfl)
        return false;
    *dwfl_out = dwfl;
    dwfl_report_begin(dwfl);
    Dwfl_Module *mod = dwfl_report_offline(dwfl, path, path, -1);
    dwfl_report_end(dwfl, NULL, NULL);
    Dwarf_Addr bias = 0;
    if (!mod || !dwfl_module_getelf(mod, &bias))
        return false;
    Dwarf_Addr dw_bias;
    /* Find and load the debug file (NULL is fine), then the address ranges of its compile
     * units, which the first lookup of an address would build. */
    if (dwfl_module_getdwarf(mod, &dw_bias)) {
        Dwarf_Addr low = 0, cu_bias;
        dwfl_module_info(mod, NULL, &low, NULL, NULL, NULL, NULL, NULL);
        dwfl_module_addrdie(mod, low, &cu_bias);
    }
    *module_out = mod;
    *bias_out = bias;
    return true;
}

static pthread_mutex_t warm_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t warm_cond = PTHREAD_COND_INITIALIZER; /* a job queued, done, or stop */
static struct warm_job *warm_head, *warm_tail; /* pending, oldest first */
static bool warm_stop;
static void *warm_thread;
static bool warm_failed; /* no helper thread: modules are opened when needed */
static bool warm_idle;   /* the helper runs at idle priority (set before it runs) */
static bool warm_waited; /* the main thread waits for it: normal priority */

/* Opening a module's debug information (libc's: ~50 ms, most of it inflating compressed
 * sections) is only needed for the frames written at the end; while the program runs, the
 * draining thread needs the core the program leaves, or the program waits on a full ring
 * (measured, 5 interleaved runs each: bench/churn waited 2-7 times at equal priority, never
 * at nice 10; bench/aligned 2-4 times, never). At nice 10 it still takes a tenth of that
 * core for as long as it works (~0.5 s), which bench/loop's drain cannot spare: the helper
 * runs at idle priority, set by the main thread before the helper runs at all (set by the
 * helper itself, its first moments at normal priority preempted the draining thread at the
 * program's start). bench/loop: waits median 10 -> 4.5 (8 interleaved runs each). It gets
 * normal priority back as soon as the main thread waits for it (module_open_dwfl), so
 * that a machine busy with other work cannot starve the end of the trace; where that could
 * not be undone (no right to raise a thread's priority), it runs at nice 10.
 * Tried: keeping it on the main thread's CPU (bench/loop: waits median 3, but bench/churn
 * under load then waited 60 times in 2 runs of 4: pinned, the helper took its slices from
 * the draining thread and the scheduler moved that one beside the program). */
#define WARM_NICE 10

static void *warm_main(void *arg)
{
    (void)arg;
    /* The main thread holds the lock until it has set our priority (mt_sym_module_used). */
    pthread_mutex_lock(&warm_lock);
    if (!warm_idle && !warm_waited)
        mt_host_thread_lower_priority(WARM_NICE);
    for (;;) {
        while (!warm_head && !warm_stop)
            pthread_cond_wait(&warm_cond, &warm_lock);
        if (warm_stop)
            break;
        struct warm_job *job = warm_head;
        warm_head = job->next;
        if (!warm_head)
            warm_tail = NULL;
        pthread_mutex_unlock(&warm_lock);
        Dwfl *dwfl;
        Dwfl_Module *mod;
        Dwarf_Addr bias = 0;
        open_dwfl(job->path, &dwfl, &mod, &bias);
        pthread_mutex_lock(&warm_lock);
        job->dwfl = dwfl;
        job->dwfl_module = mod;
        job->dwfl_bias = bias;
        job->done = true;
        pthread_cond_broadcast(&warm_cond);
    }
    pthread_mutex_unlock(&warm_lock);
    return NULL;
}

void mt_sym_module_used(uint32_t module)
{
    if (!module || module >= module_count)
        return;
    struct module *m = &modules[module];
    if (m->warm || m->dwfl_tried || !m->is_elf || m->is_own || warm_failed)
        return;
    struct warm_job *job = mt_xcalloc(1, sizeof *job);
    job->path = mt_xstrdup(m->path);
    pthread_mutex_lock(&warm_lock);
    if (!warm_thread) {
        elf_version(EV_CURRENT); /* libelf's one global, set before a second thread uses it */
        warm_thread = mt_host_thread_start(warm_main, NULL);
        if (!warm_thread) {
            warm_failed = true;
            pthread_mutex_unlock(&warm_lock);
            free(job->path);
            free(job);
            return;
        }
        /* Before it does anything (it waits for the lock we hold): a thread that first ran
         * at normal priority preempted the draining thread at the program's start. */
        warm_idle = mt_host_thread_idle(warm_thread);
    }
    m->warm = job;
    if (warm_tail)
        warm_tail->next = job;
    else
        warm_head = job;
    warm_tail = job;
    pthread_cond_broadcast(&warm_cond);
    pthread_mutex_unlock(&warm_lock);
}

static bool module_open_dwfl(struct module *m)
{
    if (m->dwfl_tried)
        return m->dwfl_module != NULL;
    m->dwfl_tried = true;
    if (!m->is_elf)
        return false;
    if (m->warm) {
        struct warm_job *job = m->warm;
        pthread_mutex_lock(&warm_lock);
        if (!job->done && !warm_waited) {
            warm_waited = true;
            if (warm_idle)
                mt_host_thread_unidle(warm_thread);
        }
        while (!job->done)
            pthread_cond_wait(&warm_cond, &warm_lock);
        pthread_mutex_unlock(&warm_lock);
        m->dwfl = job->dwfl;
        m->dwfl_module = job->dwfl_module;
        m->dwfl_bias = job->dwfl_bias;
        m->warm = NULL;
        free(job->path);
        free(job);
        return m->dwfl_module != NULL;
    }
    Dwarf_Addr bias = 0;
    bool ok = open_dwfl(m->path, &m->dwfl, &m->dwfl_module, &bias);
    m->dwfl_bias = bias;
    return ok;
}

static char *die_function_name(Dwarf_Die *die)
{
    Dwarf_Attribute attr;
    const char *name = NULL;
    if (dwarf_attr_integrate(die, DW_AT_linkage_name, &attr) ||
        dwarf_attr_integrate(die, DW_AT_MIPS_linkage_name, &attr))
        name = dwarf_formstring(&attr);
    if (!name && dwarf_attr_integrate(die, DW_AT_name, &attr))
        name = dwarf_formstring(&attr);
    return demangled(name);
}

static void push_frame(char *function, const char *file, int line, bool inlined)
{
    MT_VEC_RESERVE(frames, frame_cap, frame_count + 1);
    frames[frame_count++] = (struct mt_sym_frame){function, file ? mt_xstrdup(file) : NULL, line, inlined};
}

/* Append the logical frames of one location to `frames`. */
static void symbolize_loc(struct mt_code_loc loc)
{
    size_t before = frame_count;
    struct module *m = loc.module && loc.module < module_count ? &modules[loc.module] : NULL;
    if (!m || !module_open_dwfl(m)) {
        push_frame(NULL, NULL, 0, false);
        return;
    }
    Dwarf_Addr pc = loc.offset - (loc.offset ? 1 : 0) + m->dwfl_bias;
    const char *src_file = NULL;
    int src_line = 0;
    Dwfl_Line *line = dwfl_module_getsrc(m->dwfl_module, pc);
    if (line)
        src_file = dwfl_lineinfo(line, NULL, &src_line, NULL, NULL, NULL);

    Dwarf_Addr cu_bias = 0;
    Dwarf_Die *cu = dwfl_module_addrdie(m->dwfl_module, pc, &cu_bias);
    Dwarf_Die *scopes = NULL;
    int nscopes = cu ? dwarf_getscopes(cu, pc - cu_bias, &scopes) : 0;
    if (nscopes > 0) {
        /* dwarf_getscopes continues an inlined scope's chain through its abstract origin;
         * the concrete nesting (inlined scope inside the function it was inlined into)
         * comes from dwarf_getscopes_die on the innermost scope itself. */
        Dwarf_Die innermost;
        Dwarf_Addr dw_bias;
        Dwarf *dw = dwfl_module_getdwarf(m->dwfl_module, &dw_bias);
        if (dw && dwarf_offdie(dw, dwarf_dieoffset(&scopes[0]), &innermost)) {
            free(scopes);
            scopes = NULL;
            nscopes = dwarf_getscopes_die(&innermost, &scopes);
        }
    }
    Dwarf_Files *files = NULL;
    size_t nfiles = 0;
    if (cu)
        dwarf_getsrcfiles(cu, &files, &nfiles);
    /* Walk from the innermost scope out: each inlined scope is a frame whose location is
     * the current one; its call site becomes the location of the next frame out. */
    const char *file = src_file;
    int lineno = src_line;
    for (int i = 0; i < nscopes; i++) {
        int tag = dwarf_tag(&scopes[i]);
        if (tag != DW_TAG_inlined_subroutine && tag != DW_TAG_subprogram)
            continue;
        bool inlined = tag == DW_TAG_inlined_subroutine;
        push_frame(die_function_name(&scopes[i]), file, lineno, inlined);
        if (!inlined)
            break;
        Dwarf_Attribute attr;
        Dwarf_Word call_file = 0, call_line = 0;
        file = NULL;
        lineno = 0;
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_file, &attr), &call_file) == 0 && files)
            file = dwarf_filesrc(files, call_file, NULL, NULL);
        if (dwarf_formudata(dwarf_attr(&scopes[i], DW_AT_call_line, &attr), &call_line) == 0)
            lineno = (int)call_line;
    }
    free(scopes);
    if (frame_count == before) {
        /* No DWARF scope: the symbol table names the function (symtab.h: libdwfl's own
         * lookup reads the whole table each time). */
        if (!m->symtab_tried) {
            m->symtab_tried = true;
            m->symtab = mt_symtab_build(m->dwfl_module);
        }
        const char *sym = m->symtab ? mt_symtab_name(m->symtab, pc) : dwfl_module_addrname(m->dwfl_module, pc);
        push_frame(demangled(sym), src_file, src_line, false);
    }
}

static size_t loc_slot(struct mt_code_loc loc)
{
    return (size_t)mt_mix64(loc.offset ^ ((uint64_t)loc.module << 48)) & loc_table_mask;
}

const struct mt_sym_frame *mt_sym_frames(struct mt_code_loc loc, size_t *count)
{
    if (!loc_table || (loc_table_used + 1) * 2 > loc_table_mask + 1) {
        struct loc_frames *old = loc_table;
        size_t old_cap = loc_table ? loc_table_mask + 1 : 0;
        size_t cap = old_cap ? old_cap * 2 : 4096;
        loc_table = mt_xcalloc(cap, sizeof *loc_table);
        loc_table_mask = cap - 1;
        for (size_t i = 0; i < old_cap; i++) {
            if (!old[i].count)
                continue;
            size_t s = loc_slot(old[i].loc);
            while (loc_table[s].count)
                s = (s + 1) & loc_table_mask;
            loc_table[s] = old[i];
        }
        free(old);
    }
    size_t s = loc_slot(loc);
    for (; loc_table[s].count; s = (s + 1) & loc_table_mask)
        if (loc_table[s].loc.module == loc.module && loc_table[s].loc.offset == loc.offset) {
            *count = loc_table[s].count;
            return &frames[loc_table[s].first];
        }
    size_t first = frame_count;
    symbolize_loc(loc);
    loc_table[s] = (struct loc_frames){loc, (uint32_t)first, (uint32_t)(frame_count - first)};
    loc_table_used++;
    *count = frame_count - first;
    return &frames[first];
}

/* Frame ids for the sink: the logical frames of every symbolized location, in order. */
size_t mt_sym_frame_total(void)
{
    return frame_count;
}

const struct mt_sym_frame *mt_sym_frame_at(size_t index)
{
    return &frames[index];
}

/* The index of a location's first frame (symbolizing it if needed). */
size_t mt_sym_first_frame(struct mt_code_loc loc, size_t *count)
{
    const struct mt_sym_frame *f = mt_sym_frames(loc, count);
    return (size_t)(f - frames);
}

/* The location a frame index belongs to (frames of one location are consecutive). */
void mt_sym_for_each_loc(void (*fn)(struct mt_code_loc loc, size_t first, size_t count, void *arg), void *arg)
{
    for (size_t i = 0; loc_table && i <= loc_table_mask; i++)
        if (loc_table[i].count)
            fn(loc_table[i].loc, loc_table[i].first, loc_table[i].count, arg);
}

void mt_sym_shutdown(void)
{
    if (warm_thread) {
        pthread_mutex_lock(&warm_lock);
        warm_stop = true;
        pthread_cond_broadcast(&warm_cond);
        pthread_mutex_unlock(&warm_lock);
        mt_host_thread_join(warm_thread);
        warm_thread = NULL;
        warm_stop = false;
    }
    /* Jobs never taken, or done and never adopted. */
    for (struct warm_job *job = warm_head; job; job = job->next)
        job->done = true;
    warm_head = warm_tail = NULL;
    for (size_t i = 1; i < module_count; i++) {
        struct warm_job *job = modules[i].warm;
        if (job) {
            if (job->dwfl)
                dwfl_end(job->dwfl);
            free(job->path);
            free(job);
        }
    }
    for (size_t i = 1; i < module_count; i++) {
        mt_symtab_free(modules[i].symtab);
        if (modules[i].dwfl)
            dwfl_end(modules[i].dwfl);
        free(modules[i].path);
        free(modules[i].build_id);
    }
    free(modules);
    modules = NULL;
    module_count = module_cap = 0;
    for (size_t i = 0; i < frame_count; i++) {
        free((char *)frames[i].function);
        free((char *)frames[i].file);
    }
    free(frames);
    frames = NULL;
    frame_count = frame_cap = 0;
    free(loc_table);
    loc_table = NULL;
    loc_table_used = loc_table_mask = 0;
}
