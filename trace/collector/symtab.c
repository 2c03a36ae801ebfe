/* Sorted symbol tables (symtab.h).
 *
 * Entries are sorted by start address (ties: table order). `reach[i]` is the highest end
 * (start + size) of entries 0..i: a downward scan for a sized symbol containing an address
 * stops at the first index whose reach is at or below it, since nothing further down can
 * contain it. `label[i]` is the index of the last sizeless entry at or below i (-1: none). */
#include "symtab.h"

#include <gelf.h>
#include <stdbool.h>
#include <stdlib.h>

struct sym_entry {
    uint64_t start, size;
    uint64_t section_end; /* sizeless entries: the end of their section */
    const char *name;
    uint32_t order; /* index in the module's table */
    uint8_t rank;   /* binding: 3 global, 2 weak, 1 local, 0 other */
};

struct mt_symtab {
    struct sym_entry *entries;
    uint64_t *reach;
    int32_t *label;
    size_t count;
};

static uint8_t binding_rank(const GElf_Sym *sym)
{
    switch (GELF_ST_BIND(sym->st_info)) {
    case STB_GLOBAL:
        return 3;
    case STB_WEAK:
        return 2;
    case STB_LOCAL:
        return 1;
    default:
        return 0;
    }
}

static bool names_code_or_data(const char *name, const GElf_Sym *sym)
{
    int type = GELF_ST_TYPE(sym->st_info);
    return name && name[0] && sym->st_shndx != SHN_UNDEF && type != STT_SECTION && type != STT_FILE &&
           type != STT_TLS;
}

/* The loaded section a symbol lies in: false for absolute symbols (version names, ...)
 * and those of sections that are not loaded (link-time warnings), which name no address
 * of a running image. *end: the section's end in the Dwfl address space. */
static bool in_loaded_section(Elf *elf, GElf_Word shndx, Dwarf_Addr bias, uint64_t *end)
{
    if (!elf || shndx == SHN_UNDEF || shndx >= SHN_LORESERVE)
        return false;
    GElf_Shdr header;
    Elf_Scn *scn = elf_getscn(elf, shndx);
    if (!scn || !gelf_getshdr(scn, &header) || !(header.sh_flags & SHF_ALLOC))
        return false;
    *end = header.sh_addr + header.sh_size + bias;
    return true;
}

static int by_start(const void *a, const void *b)
{
    const struct sym_entry *x = a, *y = b;
    if (x->start != y->start)
        return x->start < y->start ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

struct mt_symtab *mt_symtab_build(Dwfl_Module *mod)
{
    int n = dwfl_module_getsymtab(mod);
    if (n <= 0)
        return NULL;
    struct mt_symtab *t = calloc(1, sizeof *t);
    if (!t)
        return NULL;
    t->entries = malloc((size_t)n * sizeof *t->entries);
    if (!t->entries)
        goto fail;
    for (int i = 0; i < n; i++) {
        GElf_Sym sym;
        GElf_Addr addr;
        GElf_Word shndx;
        Elf *elf = NULL;
        Dwarf_Addr bias = 0;
        uint64_t section_end;
        const char *name = dwfl_module_getsym_info(mod, i, &sym, &addr, &shndx, &elf, &bias);
        if (!names_code_or_data(name, &sym) || !in_loaded_section(elf, shndx, bias, &section_end))
            continue;
        t->entries[t->count++] =
            (struct sym_entry){addr, sym.st_size, section_end, name, (uint32_t)i, binding_rank(&sym)};
    }
    if (t->count == 0)
        goto fail;
    qsort(t->entries, t->count, sizeof *t->entries, by_start);
    t->reach = malloc(t->count * sizeof *t->reach);
    t->label = malloc(t->count * sizeof *t->label);
    if (!t->reach || !t->label)
        goto fail;
    uint64_t reach = 0;
    int32_t label = -1;
    for (size_t i = 0; i < t->count; i++) {
        const struct sym_entry *e = &t->entries[i];
        if (e->start + e->size > reach)
            reach = e->start + e->size;
        if (e->size == 0)
            label = (int32_t)i;
        t->reach[i] = reach;
        t->label[i] = label;
    }
    return t;
fail:
    mt_symtab_free(t);
    return NULL;
}

/* Is `e` a better name than `best` (NULL: none yet)? */
static bool better(const struct sym_entry *e, const struct sym_entry *best)
{
    if (!best)
        return true;
    if (e->rank != best->rank)
        return e->rank > best->rank;
    if (e->start != best->start)
        return e->start > best->start;
    if (e->size != best->size)
        return e->size < best->size;
    return e->order < best->order;
}

const char *mt_symtab_name(const struct mt_symtab *t, uint64_t addr)
{
    /* last: the last entry starting at or below addr. */
    size_t lo = 0, hi = t->count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (t->entries[mid].start <= addr)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo == 0)
        return NULL;
    size_t last = lo - 1;
    const struct sym_entry *best = NULL;
    for (size_t i = last + 1; i-- > 0 && t->reach[i] > addr;) {
        const struct sym_entry *e = &t->entries[i];
        if (e->size && addr - e->start < e->size && better(e, best))
            best = e;
    }
    if (best)
        return best->name;
    /* A label: the closest one, in the address's section, unless a sized symbol after it
     * ends above it. */
    int32_t k = t->label[last];
    if (k < 0 || t->reach[last] > t->entries[k].start || addr >= t->entries[k].section_end)
        return NULL;
    best = &t->entries[k];
    for (size_t j = (size_t)k; j-- > 0 && t->entries[j].start == t->entries[k].start;)
        if (t->entries[j].size == 0 && better(&t->entries[j], best))
            best = &t->entries[j];
    return best->name;
}

void mt_symtab_free(struct mt_symtab *t)
{
    if (!t)
        return;
    free(t->entries);
    free(t->reach);
    free(t->label);
    free(t);
}
