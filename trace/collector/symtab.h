/* A module's symbol table sorted by address: the name of code that has no DWARF scope.
 *
 * libdwfl's dwfl_module_addrname reads every symbol of the module on each call. For a
 * module without debug information and with a big symbol table that was nearly all the
 * cost of symbolizing: gcc's cc1 exports 28902 dynamic symbols, a lookup took ~0.7 ms,
 * and one `gcc -c hello.c` cost the collector 2 s. Here the table is read once per module
 * (dwfl_module_getsym_info) and each lookup is a binary search.
 *
 * Which symbol names an address, as libdwfl decides in the common cases:
 * - candidates are named symbols that are defined (not SHN_UNDEF) and are not sections,
 *   files or TLS;
 * - a symbol with a size names the addresses inside it; among several, the strongest
 *   binding wins (global, then weak, then local), then the closest start, then the one
 *   first in the table;
 * - with none, a sizeless symbol (an assembly label) names the addresses after it in its
 *   section, unless a sized symbol between it and the address ends above it;
 * - symbols of sections that are not loaded and absolute ones name nothing (libdwfl
 *   considers them: they only ever named addresses near 0, never code).
 * Where several labels share an address, the one chosen may differ from libdwfl's
 * (tests/c/test_symtab.c compares the two on real modules). */
#ifndef MT_COLLECTOR_SYMTAB_H
#define MT_COLLECTOR_SYMTAB_H

#include <elfutils/libdwfl.h>
#include <stdint.h>

struct mt_symtab;

/* The module's table, or NULL when it has no symbols or memory ran out (the caller then
 * asks libdwfl). Names point into the module's ELF data: valid while its Dwfl is. */
struct mt_symtab *mt_symtab_build(Dwfl_Module *mod);
/* The name for `addr` (an address in the module's Dwfl address space), or NULL. */
const char *mt_symtab_name(const struct mt_symtab *table, uint64_t addr);
void mt_symtab_free(struct mt_symtab *table);

#endif
