"""The committed tiny checkpoints (tests/fixtures, made by fixtures/make_fixtures.py with the
upstream ``omar-rq`` package) put into one Hugging Face cache under the five released repo
ids, so every test loads through the real repo-id path offline. Mel layout: base and
multicodebook; waveform 25 Hz: multifeature-25hz(-fsq); waveform 18.75 Hz: multifeature."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE.parent))  # musicembed_omar_rq before installation
sys.path.insert(0, str(FIXTURES))  # omar_signals

from tiny_repos import REPOS  # noqa: E402


@dataclass(frozen=True)
class Tiny:
    cache: Path
    expected: dict
    meta: dict


@pytest.fixture(scope="session")
def tiny(hub_cache) -> Tiny:
    from safetensors.torch import load_file

    from musicembed_core.testing import save_to_hub_cache

    for repo, folder in REPOS.items():
        save_to_hub_cache(hub_cache, repo, FIXTURES / folder)
    return Tiny(cache=hub_cache, expected=load_file(str(FIXTURES / "expected.safetensors")),
                meta=json.loads((FIXTURES / "expected.json").read_text()))


@pytest.fixture
def offline(tiny, offline_hub) -> Tiny:
    """The tiny checkpoints' HF cache, offline, read through the real repo-id path."""
    return tiny
