"""Core-suite fixtures. Clean gin state per test, temporary plugins (`register_plugin`),
the offline hub cache and the generated example library (`example_dir`) come from the
musicembed pytest plugin (musicembed_core.testing.pytest_plugin, a pytest11 entry point)."""

from __future__ import annotations

import pytest


@pytest.fixture
def manager(musicembed_manager, register_plugin):
    """The process-wide plugin manager; ``manager.add(obj, name)`` registers a plugin for the test."""
    musicembed_manager.add = register_plugin  # type: ignore[attr-defined]
    yield musicembed_manager
    del musicembed_manager.add
