"""Shared fixtures: clean gin state per test, temporary plugins, generated audio."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def _clean_gin():
    """Bindings never leak between tests (registrations persist, as in a process)."""
    import gin

    gin.clear_config(clear_constants=True)
    yield
    gin.clear_config(clear_constants=True)


@pytest.fixture
def manager():
    """The process-wide plugin manager; plugins registered through `add` are removed after."""
    from musicembed_core import ginconfig
    from musicembed_core.plugins import get_manager

    mgr = get_manager()
    added: list[str] = []

    def add(obj, name):
        info = mgr.register_plugin(obj, name)
        added.append(name)
        ginconfig.register_components(mgr)
        return info

    mgr.add = add  # type: ignore[attr-defined]
    yield mgr
    for name in added:
        mgr.unregister_plugin(name)
    ginconfig.register_components(mgr)


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory) -> Path:
    """The generated example library (several formats, stereo, 48 kHz)."""
    from musicembed_core.examples import make_example_set

    folder = tmp_path_factory.mktemp("examples") / "audio"
    make_example_set(folder, seconds=6.0)
    return folder


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, check: bool = True,
            timeout: float = 300) -> subprocess.CompletedProcess:
    """Run the real `musicembed` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "musicembed_core", *args],
        capture_output=True, text=True, env=full_env, cwd=cwd or REPO, timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"musicembed {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc
