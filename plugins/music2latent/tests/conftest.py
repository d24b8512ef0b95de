"""Tiny random-weight Music2Latent checkpoints in the released layout, in a real HF cache.

Built once per session (``m2l_tiny`` says what the file holds):

* ``main``: cached as ``SonyCSLParis/music2latent`` at ``main``, loaded by repo id with
  ``HF_HUB_OFFLINE=1``;
* ``numpy1``: the same weights, the FAD score pickled under numpy 1.x's module names (as
  in a file written before numpy 2), cached at revision ``numpy1``;
* ``other``: other weights (seed 1), cached at revision ``v2``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # musicembed_music2latent
sys.path.insert(0, str(Path(__file__).resolve().parent))  # m2l_tiny


@dataclass(frozen=True)
class Tiny:
    main: Path  # folder holding music2latent.pt
    numpy1: Path
    other: Path
    cache: Path
    sha_main: str
    sha_numpy1: str
    sha_other: str

    @property
    def file(self) -> Path:
        return self.main / "music2latent.pt"


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, hub_cache) -> Tiny:
    from m2l_tiny import REPO_ID, random_generator, write_checkpoint

    from musicembed_core.testing import save_to_hub_cache

    root = tmp_path_factory.mktemp("music2latent")
    gen = random_generator(0)
    write_checkpoint(root / "main", gen)
    write_checkpoint(root / "numpy1", gen, numpy1_names=True)
    write_checkpoint(root / "other", random_generator(1))
    return Tiny(
        main=root / "main",
        numpy1=root / "numpy1",
        other=root / "other",
        cache=hub_cache,
        sha_main=save_to_hub_cache(hub_cache, REPO_ID, root / "main"),
        sha_numpy1=save_to_hub_cache(hub_cache, REPO_ID, root / "numpy1", revision="numpy1"),
        sha_other=save_to_hub_cache(hub_cache, REPO_ID, root / "other", revision="v2"),
    )


@pytest.fixture
def offline(tiny, offline_hub) -> Tiny:
    """The tiny checkpoints' HF cache, offline, read through the real repo-id path."""
    return tiny


@pytest.fixture(scope="session")
def reference(tiny):
    """The package's own EncoderDecoder on the ``main`` weights."""
    from m2l_tiny import package_model

    return package_model(tiny.file)
