"""Leak suppressions in the two formats CI setups already have:

- LeakSanitizer: `leak:PATTERN` lines (`#` comments). As in LSan, PATTERN is matched
  against every frame's function, module path and source file; `*` is a wildcard, `^` and
  `$` anchor it, otherwise it may match anywhere in the name.
- Valgrind: `{ NAME  Memcheck:Leak  [match-leak-kinds: ...]  fun:GLOB | obj:GLOB |
  src:GLOB[:LINE] | ... }` blocks. The frame lines must match the innermost frames in order
  (`...` matches any number of frames; `*` and `?` are globs on the whole name). Our stacks
  start at the caller of malloc, so leading `fun:` lines naming an allocation function
  (malloc, calloc, operator new, ...) are skipped.

Other suppression kinds in either format are ignored (they are not about leaks).
"""
import os
import re

from ..errors import ReportError

# Valgrind's leak stacks start inside the allocator; ours start at its caller.
ALLOCATOR_NAMES = ("malloc", "calloc", "realloc", "reallocarray", "free", "memalign",
                   "posix_memalign", "aligned_alloc", "valloc", "pvalloc",
                   "operator new(unsigned long)", "operator new[](unsigned long)",
                   "operator new(unsigned long, std::nothrow_t const&)",
                   "operator new(unsigned long, std::align_val_t)", "_Znwm", "_Znam")
LEAKED_KINDS = {"definite", "indirect", "all"}


def _glob_regex(glob):
    return re.compile("".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch)
                              for ch in glob) + r"\Z", re.S)


def _lsan_regex(pattern):
    anchored_start = pattern.startswith("^")
    anchored_end = pattern.endswith("$") and len(pattern) > 1
    body = pattern[1 if anchored_start else 0: -1 if anchored_end else None]
    text = "".join(".*" if ch == "*" else re.escape(ch) for ch in body)
    return re.compile(("^" if anchored_start else "") + text + ("$" if anchored_end else ""))


class Suppression:
    def __init__(self, name, kind, source, lsan=None, frames=None):
        self.name = name
        self.kind = kind            # "lsan" or "valgrind"
        self.source = source        # "file:line" where it was defined
        self.lsan = lsan            # compiled pattern
        self.frames = frames or []  # valgrind: [("fun"|"obj"|"src"|"...", regex, line)]
        self.used_stacks = 0
        self.used_bytes = 0

    def matches(self, frames):
        if self.kind == "lsan":
            for f in frames:
                for name in (f.get("function"), f.get("module"), f.get("file")):
                    if name and self.lsan.search(name):
                        return True
            return False
        return _match_frames(self.frames, 0, frames, 0)


def _frame_ok(spec, frame):
    kind, regex, line = spec
    if kind == "fun":
        return bool(frame.get("function")) and regex.match(frame["function"]) is not None
    if kind == "obj":
        return bool(frame.get("module")) and regex.match(frame["module"]) is not None
    # src: the glob applies to the file's base name, as Valgrind writes it
    file = frame.get("file")
    if not file or not (regex.match(os.path.basename(file)) or regex.match(file)):
        return False
    return line is None or frame.get("line") == line


def _match_frames(specs, i, frames, j):
    """Do specs[i:] match frames[j:] as a prefix (valgrind semantics, `...` any frames)?"""
    while i < len(specs):
        if specs[i][0] == "...":
            if i + 1 == len(specs):
                return True
            return any(_match_frames(specs, i + 1, frames, k) for k in range(j, len(frames) + 1))
        if j >= len(frames) or not _frame_ok(specs[i], frames[j]):
            return False
        i += 1
        j += 1
    return True


def parse_suppressions(path):
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        raise ReportError(f"suppressions file {path}: {e.strerror}", "check the path given to --suppressions")
    out = []
    block = None  # lines of a valgrind block being read: [(lineno, text)]
    for lineno, raw in enumerate(lines, 1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        if block is not None:
            if text == "}":
                supp = _valgrind_block(path, block)
                if supp:
                    out.append(supp)
                block = None
            else:
                block.append((lineno, text))
            continue
        if text == "{":
            block = []
            continue
        if text.startswith("{") and text.endswith("}"):
            raise ReportError(f"{path}:{lineno}: put the braces of a Valgrind suppression on "
                              "lines of their own", "see valgrind's --gen-suppressions output")
        kind, sep, pattern = text.partition(":")
        if not sep or not pattern.strip():
            raise ReportError(f"{path}:{lineno}: not a suppression: {text!r}",
                              "write `leak:PATTERN` or a Valgrind `{ ... }` block")
        if kind.strip() == "leak":
            out.append(Suppression(text, "lsan", f"{path}:{lineno}", lsan=_lsan_regex(pattern.strip())))
    if block is not None:
        raise ReportError(f"{path}: a Valgrind suppression is not closed by `}}`",
                          "add the closing brace")
    return out


def _valgrind_block(path, block):
    if len(block) < 2:
        line = block[0][0] if block else "?"
        raise ReportError(f"{path}:{line}: a Valgrind suppression needs a name and a kind",
                          "see valgrind's --gen-suppressions output")
    name = block[0][1]
    kind_line, kind = block[1]
    if kind != "Memcheck:Leak":
        return None
    specs = []
    for lineno, text in block[2:]:
        if text.startswith("match-leak-kinds:"):
            kinds = {k.strip() for k in text.split(":", 1)[1].split(",")}
            if not kinds & LEAKED_KINDS:
                return None  # only about reachable or possible leaks: never gates
            continue
        if text == "...":
            specs.append(("...", None, None))
            continue
        what, sep, glob = text.partition(":")
        if not sep or what not in ("fun", "obj", "src"):
            raise ReportError(f"{path}:{lineno}: unknown frame line {text!r} in suppression {name!r}",
                              "use fun:, obj:, src: or ...")
        line = None
        if what == "src" and re.search(r":\d+$", glob):
            glob, _, num = glob.rpartition(":")
            line = int(num)
        specs.append((what, _glob_regex(glob), line))
    # Valgrind's frame 0 is the allocation function itself (one frame); ours is its caller.
    if specs and specs[0][0] == "fun" and _is_allocator_glob(specs[0][1]):
        specs.pop(0)
    return Suppression(name, "valgrind", f"{path}:{kind_line}", frames=specs)


def _is_allocator_glob(regex):
    return any(regex.match(s) for s in ALLOCATOR_NAMES)


def find_suppression(suppressions, frames):
    for s in suppressions:
        if s.matches(frames):
            return s
    return None
