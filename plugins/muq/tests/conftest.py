"""The committed tiny checkpoints (tests/fixtures, made by fixtures/make_fixtures.py with the
upstream ``muq`` package) put into one Hugging Face cache under the repo ids the plugin and
the tiny MuQ-MuLan config name, so every test loads through the real repo-id path offline.
Clean gin state per test comes from the musicembed pytest plugin."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
FIXTURES = HERE / "fixtures"
sys.path.insert(0, str(HERE.parent))  # musicembed_muq before installation
sys.path.insert(0, str(FIXTURES))  # muq_signals

MUQ_REPO = "OpenMuQ/MuQ-large-msd-iter"
MULAN_REPO = "OpenMuQ/MuQ-MuLan-large"
TINY_MUQ_REPO = "musicembed-test/tiny-MuQ"  # what the tiny MuQ-MuLan config names
TINY_XLMR_REPO = "musicembed-test/tiny-xlm-roberta"


@dataclass(frozen=True)
class Tiny:
    cache: Path
    sha_muq: str
    sha_mulan: str
    expected: dict
    meta: dict


@pytest.fixture(scope="session")
def tiny(hub_cache) -> Tiny:
    from safetensors.torch import load_file

    from musicembed_core.testing import save_to_hub_cache

    sha_muq = save_to_hub_cache(hub_cache, MUQ_REPO, FIXTURES / "muq")
    save_to_hub_cache(hub_cache, TINY_MUQ_REPO, FIXTURES / "muq")
    save_to_hub_cache(hub_cache, TINY_XLMR_REPO, FIXTURES / "xlm-roberta")
    sha_mulan = save_to_hub_cache(hub_cache, MULAN_REPO, FIXTURES / "mulan")
    save_to_hub_cache(hub_cache, "musicembed-test/other-MuLan", FIXTURES / "mulan")  # a 2nd model id
    return Tiny(cache=hub_cache, sha_muq=sha_muq, sha_mulan=sha_mulan,
                expected=load_file(str(FIXTURES / "expected.safetensors")),
                meta=json.loads((FIXTURES / "expected.json").read_text()))


@pytest.fixture
def offline(tiny, offline_hub) -> Tiny:
    """The tiny checkpoints' HF cache, offline, read through the real repo-id path."""
    return tiny
