"""Make the plugin importable before installation and build the tiny MERT checkpoints
the tests load (once per session, into the musicembed pytest plugin's `hub_cache`).
Clean gin state per test comes from that plugin too."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))


class TinySet(dict):
    """name -> mert_checkpoints.Tiny, plus the hub cache that holds them all."""

    cache: Path


@pytest.fixture(scope="session")
def tiny(tmp_path_factory, hub_cache) -> TinySet:
    """Three tiny MERT checkpoints (95M-, 330M- and v0-style) in one Hugging Face cache,
    under the real repo ids."""
    from mert_checkpoints import (
        RELEASED_V0_PUBLIC,
        RELEASED_V1_95M,
        RELEASED_V1_330M,
        make_checkpoint,
        preprocessor,
        shrink,
    )

    from musicembed_core.testing import save_to_hub_cache

    root = tmp_path_factory.mktemp("mert")
    out = TinySet()
    out.cache = hub_cache
    specs = {
        # Released v1 preprocessors say do_normalize: true; the v0 one exercises the raw path.
        "v1_95m": ("m-a-p/MERT-v1-95M", shrink(RELEASED_V1_95M), preprocessor(24000, True)),
        "v1_330m": ("m-a-p/MERT-v1-330M", shrink(RELEASED_V1_330M, num_hidden_layers=3, hidden_size=48),
                    preprocessor(24000, True)),
        "v0": ("m-a-p/MERT-v0-public", shrink(RELEASED_V0_PUBLIC), preprocessor(16000, False)),
    }
    for seed, (name, (repo, cfg, pre)) in enumerate(specs.items()):
        t = make_checkpoint(root / name, repo, cfg, pre, seed=seed)
        t.revision = save_to_hub_cache(out.cache, repo, t.folder)
        out[name] = t
    return out


@pytest.fixture
def registered():
    """encoders.mert (and the plugin's gin folder) known to gin: through its entry point, or
    (not installed yet) registered here."""
    from musicembed_core import ginconfig
    from musicembed_core.plugins import get_manager

    mgr = get_manager()
    added = "mert" not in mgr.names("encoders")
    if added:
        import musicembed_mert

        mgr.register_plugin(musicembed_mert, "mert")
    ginconfig.register_components(mgr)
    yield mgr
    if added:
        mgr.unregister_plugin("mert")
        ginconfig.register_components(mgr)


@pytest.fixture
def offline(tiny, offline_hub) -> Path:
    """HF_HUB_OFFLINE=1 with the tiny checkpoints' cache as HF_HUB_CACHE."""
    return offline_hub
