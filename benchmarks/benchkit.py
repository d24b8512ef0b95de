"""Pieces the benchmark scripts share: a generated library, an offline Hugging Face cache,
and one ``musicembed run`` from a gin file in this process."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Sequence

LIBRARY_EXTS = (".flac", ".mp3", ".wav", ".ogg")


def write_library(folder: Path, tracks: int, minutes: float, exts: Sequence[str] = LIBRARY_EXTS,
                  rate: int = 44100, channels: int = 2) -> list[Path]:
    """``tracks`` generated stereo tracks of ``minutes`` each, cycling through ``exts``."""
    from musicembed_core.examples import synth_clip, write_audio

    folder.mkdir(parents=True, exist_ok=True)
    for i in range(tracks):
        write_audio(folder / f"t{i:02d}{exts[i % len(exts)]}",
                    synth_clip(minutes * 60, rate, seed=i, channels=channels), rate)
    return sorted(folder.iterdir())


def offline_hf_cache(tmp: Path) -> Path:
    """A Hugging Face cache under ``tmp``, used offline (the benchmarks save random weights there)."""
    cache = tmp / "hf-cache"
    os.environ.update(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(cache))
    return cache


def run_gin(gin_file: str, source: Path, out: Path, params: Sequence[str] = ()) -> Any:
    """``musicembed run --gin_file GIN_FILE`` over ``source`` into ``out`` (no progress bar);
    its summary. Every file must embed."""
    from musicembed_core import ginconfig
    from musicembed_core.runconfig import run_config
    from musicembed_core.runner import execute

    ginconfig.clear()
    ginconfig.parse([gin_file], [f"run.source = '{source}'", f"run.output_dir = '{out}'", *params])
    summary = execute(run_config(), show_progress=False)
    assert summary.files_failed == 0, summary.failures
    return summary
