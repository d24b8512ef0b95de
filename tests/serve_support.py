"""Shared by the tests of ``musicembed serve`` (tests/test_serve*.py): a generated library
indexed in this process with a shipped run file, and the real service (uvicorn) on a free
port in a thread. The fixtures ``server`` and ``client`` serve the importing module's ``run``
fixture (import them into the test module)."""

from __future__ import annotations

import contextlib
import shutil
from pathlib import Path
from typing import Any, Iterator

import pytest

FAISS_GIN = "runs/quickstart_faiss.gin"  # shipped by musicembed-faiss, found by name
MILVUS_GIN = "runs/quickstart_milvus.gin"  # shipped by musicembed-milvus
SECONDS = 4.0


def make_library(folder: Path, outside: Path | None = None) -> Path:
    """The generated example set (7 clips); with ``outside``, also ``outside.wav``: a symlink
    to a clip outside the library (indexed like any file, never served)."""
    from musicembed_core.examples import make_example_set, synth_clip, write_audio

    make_example_set(folder, seconds=SECONDS)
    if outside is not None:
        outside.mkdir(parents=True, exist_ok=True)
        target = outside / "secret.wav"
        write_audio(target, synth_clip(SECONDS, 22050, seed=99), 22050)
        (folder / "outside.wav").symlink_to(target)
    return folder


def run_config(gin_file: str, source: Path, out: Path, *params: str) -> Any:
    """The RunConfig the CLI builds from these gin options (parsed in this process)."""
    from musicembed_core import ginconfig
    from musicembed_core.runconfig import run_config as build

    import gin

    ginconfig.parse([gin_file], [f'run.source="{source}"', f'run.output_dir="{out}"', *params])
    try:
        return build()
    finally:  # the run is built: unlock gin, so temporary plugins can unregister afterwards
        gin.clear_config()


def index(cfg: Any) -> Any:
    """``musicembed run`` in this process: the same execute() the command calls."""
    from musicembed_core.runner import execute

    summary = execute(cfg, show_progress=False)
    assert summary.error is None and summary.files_failed == 0, summary.as_dict()
    return summary


def add_track(folder: Path, rel: str, seed: int) -> Path:
    from musicembed_core.examples import synth_clip, write_audio

    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(path, synth_clip(SECONDS, 22050, seed=seed), 22050)
    return path


@contextlib.contextmanager
def serving(cfg: Any, **kwargs: Any) -> Iterator[Any]:
    """The service over ``cfg``'s indexes, on 127.0.0.1 and a free port."""
    from musicembed_core.serve.library import Library
    from musicembed_core.serve.server import BackgroundServer

    library = Library(cfg).open()
    with BackgroundServer(library, **kwargs) as srv:
        yield srv


@pytest.fixture(scope="module")
def server(run: Any) -> Iterator[Any]:
    """The service over the test module's ``run`` fixture, once per module."""
    with serving(run) as srv:
        yield srv


@pytest.fixture
def client(server: Any) -> Iterator[Any]:
    """An HTTP client of ``server``."""
    import httpx

    with httpx.Client(base_url=server.url, timeout=60) as c:
        yield c


def copy_library(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


def parse_m3u8(text: str) -> list[tuple[int, str, str]]:
    """(seconds, title, location) per entry of an extended M3U; asserts its shape."""
    lines = text.splitlines()
    assert lines[0] == "#EXTM3U", lines[:1]
    body = [ln for ln in lines[1:] if ln.strip()]
    assert len(body) % 2 == 0, body
    entries = []
    for info, where in zip(body[::2], body[1::2]):
        assert info.startswith("#EXTINF:"), info
        seconds, _, title = info[len("#EXTINF:"):].partition(",")
        assert not where.startswith("#"), where
        entries.append((int(seconds), title, where))
    return entries
