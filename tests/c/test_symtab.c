// link: trace/collector/symtab.c -ldw -lelf
/* trace/collector/symtab.c names every address inside a sized symbol (every byte of a
 * function) as libdwfl's dwfl_module_addrinfo does, on real modules: this program (static,
 * with local symbols and assembly labels), libc, and gcc's cc1 and python3 when installed
 * (big dynamic symbol tables, the reason for the sorted table). Addresses: the first,
 * middle, last and one-past-the-end byte of symbols spread over the table, and a sweep
 * over the module's whole address range. Where libdwfl answers with a sizeless label the
 * two may pick different labels of one address (symtab.h): those are counted, not
 * compared; they are not code a return address points into. */
#include <elfutils/libdwfl.h>
#include <gelf.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "../../trace/collector/symtab.h"
#include "check.h"

/* Addresses of the sweep over a module's range, and symbols whose bytes are checked at
 * most (libdwfl's own lookup, the reference, reads the whole table per address). */
#define SWEEP_POINTS 3000
#define SYMBOLS_CHECKED 1500
/* Mismatches printed before the count. */
#define SHOWN_MAX 5

static const Dwfl_Callbacks offline = {
    .find_elf = dwfl_build_id_find_elf,
    .find_debuginfo = dwfl_standard_find_debuginfo,
    .section_address = dwfl_offline_section_address,
};

struct compare {
    Dwfl_Module *mod;
    struct mt_symtab *table;
    unsigned checked, labels, mismatched;
};

static void compare_at(struct compare *c, uint64_t addr)
{
    const char *ours = mt_symtab_name(c->table, addr);
    GElf_Sym sym;
    GElf_Off offset;
    const char *theirs = dwfl_module_addrinfo(c->mod, addr, &offset, &sym, NULL, NULL, NULL);
    if (theirs && sym.st_size == 0) {
        c->labels++;
        return;
    }
    c->checked++;
    bool same = (!ours && !theirs) || (ours && theirs && strcmp(ours, theirs) == 0);
    if (!same && ++c->mismatched <= SHOWN_MAX)
        printf("    %#llx: ours %s, libdwfl %s\n", (unsigned long long)addr, ours ? ours : "(none)",
               theirs ? theirs : "(none)");
}

static bool loaded(Elf *elf, GElf_Word shndx)
{
    GElf_Shdr header;
    Elf_Scn *scn = elf_getscn(elf, shndx);
    return scn && gelf_getshdr(scn, &header) && (header.sh_flags & SHF_ALLOC);
}

/* Compare every chosen address of the module at `path`; false when it cannot be read. */
static bool compare_module(const char *path)
{
    Dwfl *dwfl = dwfl_begin(&offline);
    CHECK(dwfl != NULL);
    dwfl_report_begin(dwfl);
    Dwfl_Module *mod = dwfl_report_offline(dwfl, path, path, -1);
    dwfl_report_end(dwfl, NULL, NULL);
    if (!mod) {
        dwfl_end(dwfl);
        return false;
    }
    struct compare c = {mod, mt_symtab_build(mod), 0, 0, 0};
    CHECK(c.table != NULL);
    if (!c.table) {
        dwfl_end(dwfl);
        return false;
    }
    int n = dwfl_module_getsymtab(mod);
    int stride = n / SYMBOLS_CHECKED + 1;
    for (int i = 0; i < n; i += stride) {
        GElf_Sym sym;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf;
        /* Absolute symbols and those of sections not loaded name no address of an image. */
        if (!dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, &elf, NULL) || shndx == SHN_UNDEF ||
            shndx >= SHN_LORESERVE || !loaded(elf, shndx))
            continue;
        compare_at(&c, addr);
        if (sym.st_size) {
            compare_at(&c, addr + sym.st_size / 2);
            compare_at(&c, addr + sym.st_size - 1);
            compare_at(&c, addr + sym.st_size);
        }
    }
    Dwarf_Addr low = 0, high = 0;
    dwfl_module_info(mod, NULL, &low, &high, NULL, NULL, NULL, NULL);
    uint64_t step = (high - low) / SWEEP_POINTS + 1;
    for (uint64_t a = low; a < high; a += step)
        compare_at(&c, a);
    printf("  %s: %d symbols, %u addresses in symbols (%u named otherwise than by libdwfl), %u at labels\n",
           path, n, c.checked, c.mismatched, c.labels);
    CHECK(c.checked > 0);
    CHECK_EQ_U(c.mismatched, 0);
    mt_symtab_free(c.table);
    dwfl_end(dwfl);
    return true;
}

TEST(names_like_libdwfl_in_this_program)
{
    char self[4096];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    CHECK(n > 0);
    self[n > 0 ? n : 0] = '\0';
    CHECK(compare_module(self));
}

TEST(names_like_libdwfl_in_libc)
{
    CHECK(compare_module("/lib/x86_64-linux-gnu/libc.so.6"));
}

TEST(names_like_libdwfl_in_big_dynamic_tables)
{
    /* Present on the machines the suite runs on (gcc builds it, python3 runs it), but not
     * required: each is compared when it exists. */
    const char *paths[] = {"/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "/usr/bin/python3"};
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++)
        if (access(paths[i], R_OK) == 0)
            CHECK(compare_module(paths[i]));
}

TEST_MAIN()
