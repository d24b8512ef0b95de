"""Tiny random-weight music2vec checkpoints in the released file layout, in a real HF cache.

Make the plugin importable before installation (as the example plugin does),
then build, once per session:

* ``main``: config.json in the released format (see ``music2vec_tiny.released_config``),
  preprocessor_config.json, model.safetensors with ``Data2VecAudioModel`` key
  names (``masked_spec_embed`` included, as save_pretrained writes it);
* ``v2``: the same architecture with other weights (a second revision);
* ``legacy``: ``main``'s weights as pytorch_model.bin saved from a task model
  (``data2vec_audio.`` prefix, a CTC head, old ``gamma``/``beta`` LayerNorm names);
* ``reference``: ``main`` with the one-line config fix users apply so that
  ``Data2VecAudioModel.from_pretrained`` accepts it (an int ``vocab_size``).

``main`` is cached as ``m-a-p/music2vec-v1`` at ``main``; ``v2`` and ``legacy``
under the revisions ``v2`` and ``legacy-bin``.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # musicembed_music2vec
sys.path.insert(0, str(Path(__file__).resolve().parent))  # music2vec_tiny

from music2vec_tiny import REPO_ID, TINY, random_state, released_config, write_folder


@dataclass(frozen=True)
class Tiny:
    root: Path
    main: Path
    v2: Path
    legacy: Path
    reference: Path
    cache: Path
    sha_main: str
    sha_v2: str
    sha_legacy: str


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, hub_cache) -> Tiny:
    import torch

    from musicembed_core.testing import save_to_hub_cache

    root = tmp_path_factory.mktemp("music2vec")
    cfg = released_config(**TINY)
    state = random_state(seed=0)
    main = write_folder(root / "main", cfg, state)
    v2 = write_folder(root / "v2", cfg, random_state(seed=1))
    legacy_state = {}
    for key, value in state.items():
        key = key.replace("layer_norm.weight", "layer_norm.gamma").replace("layer_norm.bias", "layer_norm.beta")
        legacy_state["data2vec_audio." + key] = value
    legacy_state["lm_head.weight"] = torch.randn(5, TINY["hidden_size"])
    legacy_state["lm_head.bias"] = torch.zeros(5)
    legacy = write_folder(root / "legacy", cfg, legacy_state, weights="bin")
    reference = root / "reference"
    shutil.copytree(main, reference)
    (reference / "config.json").write_text(json.dumps({**cfg, "vocab_size": 32}))

    cache = hub_cache  # the musicembed pytest plugin's session cache
    return Tiny(
        root=root,
        main=main,
        v2=v2,
        legacy=legacy,
        reference=reference,
        cache=cache,
        sha_main=save_to_hub_cache(cache, REPO_ID, main),
        sha_v2=save_to_hub_cache(cache, REPO_ID, v2, revision="v2"),
        sha_legacy=save_to_hub_cache(cache, REPO_ID, legacy, revision="legacy-bin"),
    )


@pytest.fixture
def offline(tiny, offline_hub) -> Tiny:
    """The tiny checkpoints' HF cache, offline, read by the real repo-id path."""
    return tiny
