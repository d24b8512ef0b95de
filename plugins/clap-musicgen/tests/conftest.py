"""Tiny random-weight CLAP-MusicGen checkpoints in the released layout, in a real HF cache.

Built once per session (``clap_tiny`` says what the files hold):

* ``main``: cached as ``yuhuacheng/clap-musicgen`` at ``main``, loaded by repo id with
  ``HF_HUB_OFFLINE=1``; its tokenizer as ``yuhuacheng/clap-roberta-finetuned``;
* ``legacy``: the same weights with EnCodec's convolutions under torch's old
  weight_norm names (``weight_g`` / ``weight_v``), cached at revision ``legacy``;
* ``other``: other weights (seed 1), cached at revision ``v2``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # musicembed_clap_musicgen
sys.path.insert(0, str(Path(__file__).resolve().parent))  # clap_tiny


@dataclass(frozen=True)
class Tiny:
    main: Path
    legacy: Path
    other: Path
    tokenizer: Path
    cache: Path
    sha_main: str
    sha_legacy: str
    sha_other: str
    vocab_size: int


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, hub_cache) -> Tiny:
    from clap_tiny import REPO_ID, TOKENIZER_ID, load_tokenizer, random_state, write_checkpoint, write_tokenizer

    from musicembed_core.testing import save_to_hub_cache

    root = tmp_path_factory.mktemp("clap_musicgen")
    write_tokenizer(root / "tokenizer")
    vocab = len(load_tokenizer(root / "tokenizer"))
    state = random_state(0, vocab)
    write_checkpoint(root / "main", state, vocab)
    write_checkpoint(root / "legacy", state, vocab, legacy_weight_norm=True)
    write_checkpoint(root / "other", random_state(1, vocab), vocab)
    save_to_hub_cache(hub_cache, TOKENIZER_ID, root / "tokenizer")
    return Tiny(
        main=root / "main", legacy=root / "legacy", other=root / "other", tokenizer=root / "tokenizer",
        cache=hub_cache,
        sha_main=save_to_hub_cache(hub_cache, REPO_ID, root / "main"),
        sha_legacy=save_to_hub_cache(hub_cache, REPO_ID, root / "legacy", revision="legacy"),
        sha_other=save_to_hub_cache(hub_cache, REPO_ID, root / "other", revision="v2"),
        vocab_size=vocab,
    )


@pytest.fixture
def offline(tiny, offline_hub) -> Tiny:
    """The tiny checkpoints' HF cache, offline, read through the real repo-id path."""
    return tiny


@pytest.fixture(scope="session")
def reference(tiny):
    """Vectors computed straight from transformers modules on the ``main`` weights."""
    from clap_tiny import Reference

    return Reference(tiny.main, tiny.tokenizer)
