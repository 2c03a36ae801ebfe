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
