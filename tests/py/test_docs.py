"""README.md must stay true: every option and exported function is documented there."""
import re

from conftest import ROOT


def option_names():
    text = (ROOT / "common" / "options.h").read_text()
    return sorted(set(re.findall(r'"(MTRACE_[A-Z_]+)"', text)))


def hook_names():
    text = (ROOT / "interpose" / "hooks.h").read_text()
    return sorted(set(re.findall(r"^\s+X\([^,]+,\s*(\w+),", text, re.M)))


def test_every_option_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    names = option_names()
    assert len(names) > 10
    missing = [n for n in names if n not in readme]
    assert not missing, f"README.md does not document: {missing}"


def test_every_exported_function_is_in_readme():
    readme = (ROOT / "README.md").read_text()
    names = hook_names()
    assert "malloc" in names and "mt_arena_push" in names
    missing = [n for n in names if f"`{n}" not in readme]
    assert not missing, f"README.md does not list: {missing}"
