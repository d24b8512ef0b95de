"""The musicembed pytest plugin, loaded through the ``pytest11`` entry point of the
``musicembed`` distribution: every project that installs musicembed gets these fixtures.

* clean gin bindings around every test (autouse; costs nothing when gin is not imported);
* ``musicembed_manager``: the process-wide plugin manager;
* ``register_plugin``: ``register_plugin(obj, name)`` registers a plugin object for
  the test (its components known to gin) and unregisters it afterwards;
* ``hub_cache`` (session) and ``offline_hub``: a Hugging Face cache folder to fill with
  :func:`musicembed_core.testing.save_to_hub_cache`, and the environment that reads it
  offline (``HF_HUB_OFFLINE=1``, ``HF_HUB_CACHE``);
* ``example_dir`` (session): the generated example library (several formats, stereo,
  48 kHz, 6 s clips), written once per session.

Importing this module imports neither torch nor gin: it is loaded by every pytest run.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest


def _clear_gin() -> None:
    gin = sys.modules.get("gin")  # not imported yet: no bindings to clear
    if gin is not None:
        gin.clear_config(clear_constants=True)


@pytest.fixture(autouse=True)
def _musicembed_clean_gin() -> Iterator[None]:
    """gin bindings never leak into or out of a test (registrations persist, as in a process)."""
    _clear_gin()
    yield
    _clear_gin()


@pytest.fixture
def musicembed_manager() -> Any:
    """The process-wide plugin manager (built-ins and installed plugins loaded)."""
    from ..plugins import get_manager

    return get_manager()


@pytest.fixture
def register_plugin() -> Iterator[Callable[..., Any]]:
    """``register_plugin(obj, name=None) -> PluginInfo``: a temporary plugin for this test.

    ``obj`` is a module or any object with ``@hookimpl`` functions. Its components are
    registered with the manager and with gin, and removed after the test.
    """
    from .helpers import registered_plugin

    with contextlib.ExitStack() as stack:
        yield lambda obj, name=None: stack.enter_context(registered_plugin(obj, name))


@pytest.fixture(scope="session")
def hub_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An empty Hugging Face cache folder shared by the session (build tiny checkpoints once)."""
    return tmp_path_factory.mktemp("hf-cache")


@pytest.fixture
def offline_hub(hub_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``HF_HUB_OFFLINE=1`` with :func:`hub_cache` as ``HF_HUB_CACHE``: loading by repo id
    goes through the real cache path and never reaches the network."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(hub_cache))
    return hub_cache


@pytest.fixture(scope="session")
def example_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The generated example library (several formats, stereo, 48 kHz, 6 s), once per session."""
    from ..examples import make_example_set

    folder = tmp_path_factory.mktemp("examples") / "audio"
    make_example_set(folder, seconds=6.0)
    return folder
