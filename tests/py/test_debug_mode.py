"""No false positives: correct programs run under mtrace (default and MTRACE_DEBUG=1)
without a single `mtrace: error:` report and with their normal results.

Real programs (Python with PYTHONMALLOC=malloc so every object goes through malloc, git,
gcc compiling and linking hello world: cc1, as, collect2 and ld all inherit the preload)
and this project's own test programs: build/progs/* under LD_PRELOAD, and the statically
linked C tests, whose allocator reads MTRACE_DEBUG at start-up like the preloaded one.
"""
import os
import pathlib
import re
import shutil
import signal

import pytest

from conftest import BUILD, ROOT, run

MODES = {"default": {}, "debug": {"MTRACE_DEBUG": "1"}}
ERROR_LINE = re.compile(r"^mtrace: error: .*$", re.M)

# Exercises dicts, lists, strings, the JSON codec, regular expressions and four threads
# allocating and freeing at once; checks its own results.
PYTHON_WORKLOAD = r"""
import collections, json, re, threading
data = {str(i): [i] * (i % 40) + ["x" * (i % 300)] for i in range(4000)}
assert json.loads(json.dumps(data)) == data
def work(n):
    words = re.findall(r"\w+", "the quick brown fox jumps " * n)
    assert collections.Counter(words)["fox"] == n
threads = [threading.Thread(target=work, args=(3000,)) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print("python ok")
"""

HELLO_C = '#include <stdio.h>\nint main(void) { puts("hello, world"); return 0; }\n'


def preload_env(mode):
    env = {"LD_PRELOAD": str(BUILD / "libmtalloc.so")}
    env.update(MODES[mode])
    return env


def assert_clean(proc, what):
    err = proc.stderr.decode(errors="replace")
    errors = ERROR_LINE.findall(err)
    assert not errors, f"{what}: false positive(s):\n" + "\n".join(errors) + "\n" + err[-3000:]
    assert proc.returncode >= 0, f"{what}: killed by {signal.Signals(-proc.returncode).name}\n{err[-3000:]}"


@pytest.fixture(scope="module", autouse=True)
def _built():
    if not (BUILD / "libmtalloc.so").exists():
        pytest.skip("not built: make")


@pytest.mark.parametrize("mode", MODES)
def test_python(mode):
    env = preload_env(mode)
    env["PYTHONMALLOC"] = "malloc"
    proc = run(["/usr/bin/python3", "-c", PYTHON_WORKLOAD], env)
    assert_clean(proc, "python3")
    assert proc.returncode == 0 and proc.stdout == b"python ok\n", proc.stderr.decode(errors="replace")[-3000:]


@pytest.mark.parametrize("mode", MODES)
def test_git(mode):
    git = shutil.which("git")
    if not git:
        pytest.skip("git not installed")
    proc = run([git, "--version"], preload_env(mode))
    assert_clean(proc, "git --version")
    assert proc.returncode == 0 and proc.stdout.startswith(b"git version ")
    proc = run([git, "-C", str(ROOT), "log", "--oneline", "-20", "--stat"], preload_env(mode))
    assert_clean(proc, "git log")
    # Not a git checkout (a source tarball): exit 128 and a message, still no heap error.
    assert proc.returncode in (0, 128)


@pytest.mark.parametrize("mode", MODES)
def test_gcc_hello_world(mode, tmp_path):
    gcc = shutil.which("gcc")
    if not gcc:
        pytest.skip("gcc not installed")
    source = tmp_path / "hello.c"
    source.write_text(HELLO_C)
    exe = tmp_path / "hello"
    proc = run([gcc, "-O2", "-Wall", "-o", str(exe), str(source)], preload_env(mode))
    assert_clean(proc, "gcc")
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")
    proc = run([str(exe)], preload_env(mode))
    assert_clean(proc, "hello")
    assert proc.stdout == b"hello, world\n"


def own_programs():
    """build/progs/* (run with LD_PRELOAD) and the C tests that do not provoke heap errors
    on purpose (those with death tests are left out: their children's reports are the
    point)."""
    progs = sorted(p for p in (BUILD / "progs").glob("*") if p.is_file() and os.access(p, os.X_OK))
    tests = []
    for t in sorted((BUILD / "tests").glob("test_*")):
        source = ROOT / "tests" / "c" / (t.name + ".c")
        if source.exists() and "expect_death" not in source.read_text():
            tests.append(t)
    return [(p, True) for p in progs] + [(t, False) for t in tests]


@pytest.mark.parametrize("program,preload", own_programs(), ids=lambda v: v.name if isinstance(v, pathlib.Path) else "")
def test_own_programs_in_debug_mode(program, preload):
    env = preload_env("debug") if preload else dict(MODES["debug"])
    proc = run([str(program)], env, timeout=600)
    assert_clean(proc, program.name)


@pytest.mark.parametrize("mode", MODES)
def test_control_a_real_bug_is_reported(mode):
    """The same route (python3 under the preload) does report a real heap bug, so the clean
    runs above are not clean because nothing was checked."""
    env = preload_env(mode)
    env["PYTHONMALLOC"] = "malloc"
    code = ("import ctypes; libc = ctypes.CDLL(None); libc.malloc.restype = ctypes.c_void_p; "
            "p = libc.malloc(40); libc.free(ctypes.c_void_p(p)); libc.free(ctypes.c_void_p(p))")
    proc = run(["/usr/bin/python3", "-c", code], env)
    assert proc.returncode == -signal.SIGABRT
    assert re.search(rb"^mtrace: error: double free of 0x[0-9a-f]+ \(size \d+\) in free\(\)", proc.stderr, re.M)
