"""What libmtalloc.so costs a process that loads it: its link dependencies. Every library it
needs is mapped and relocated in every process it is preloaded into (libunwind and its
liblzma cost 110 KiB of resident memory each time), so it needs libc and nothing else; the
error reports unwind with libgcc's unwinder, linked in (docs/allocator.md, Footprint)."""
import re

import pytest

from conftest import BUILD, run

ALLOWED = {"libc.so.6", "ld-linux-x86-64.so.2"}


def needed(lib):
    res = run(["readelf", "-dW", str(lib)], check=True, text=True)
    return set(re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", res.stdout))


@pytest.mark.parametrize("name", ["libmtalloc.so", "libmtalloc-nohard.so"])
def test_allocator_needs_only_libc(name):
    lib = BUILD / name
    assert needed(lib) <= ALLOWED, f"{name} needs {sorted(needed(lib) - ALLOWED)}"


# A program that only mallocs and frees small blocks runs the start-up, malloc and free of
# libmtalloc.so: 11 KiB of code, placed by interpose/resident.ld in a segment of its own so
# that fault-around maps nothing else with it (64 KiB of text and 52 of read-only data
# were resident before). The limits leave a page of slack each; a function the resident
# list misses (renamed, or new on a common path) faults in 16 pages of cold code instead.
RESIDENT_TEXT_KIB = 16
# Headers (2 pages with packed relative relocations), the resident read-only data (1) and
# relro (1).
RESIDENT_RODATA_KIB = 20


def test_small_block_program_keeps_little_of_the_library_resident():
    res = run([str(BUILD / "progs" / "footprint")], {"LD_PRELOAD": str(BUILD / "libmtalloc.so")}, text=True)
    assert res.returncode == 0, res.stderr
    got = dict(kv.split("=") for kv in res.stdout.split())
    assert int(got["text_kib"]) <= RESIDENT_TEXT_KIB, res.stdout
    assert int(got["rodata_kib"]) <= RESIDENT_RODATA_KIB, res.stdout
