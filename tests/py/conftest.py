"""Shared fixtures: where the build is, and helpers to run programs under mtrace."""
import os
import pathlib
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
BUILD = pathlib.Path(os.environ.get("MTRACE_BUILD", ROOT / "build"))


@pytest.fixture(scope="session")
def root():
    return ROOT


@pytest.fixture(scope="session")
def build():
    return BUILD


def run(cmd, env_extra=None, timeout=300, check=False, **kw):
    """Run a command with extra environment variables; returns CompletedProcess."""
    env = dict(os.environ)
    if env_extra:
        env.update(env_extra)
    return subprocess.run(cmd, env=env, timeout=timeout, capture_output=True, check=check, **kw)
