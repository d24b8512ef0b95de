"""Shared fixtures: clean gin state per test, temporary plugins, generated audio."""

from __future__ import annotations

from pathlib import Path

import pytest



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
