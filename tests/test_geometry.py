"""One immutable encoder geometry: derived counts, frame counts of real encoders, the
PretrainedEncoder constructor a plugin no longer re-declares, and other checkpoint layouts."""

from __future__ import annotations

import dataclasses
import inspect
import json
import pickle

import numpy as np
import pytest
import torch

from musicembed_core import Geometry, ginconfig, hub
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.errors import ConfigError
from musicembed_core.hub import ModelLoadError, PretrainedEncoder, resolve_checkpoint
from musicembed_core.pipeline import PreparedEmbedding
from musicembed_core.runconfig import EmbeddingSpec
from musicembed_core.testing import save_to_hub_cache


def test_derived_sample_counts():
    g = Geometry(24000, 75.0, 13, 768, window_seconds=5.0, hop_seconds=4.0, min_seconds=0.1)
    assert (g.window_samples, g.hop_samples, g.min_samples) == (120_000, 96_000, 2400)
    assert g.overlap_frames == 75  # one second of overlap at 75 frames/s
    assert g.frame_hop == 320.0
    assert Geometry(16000, 50.0, 2, 96, 10.0).hop_samples == 160_000  # hop defaults to the window
    # a hop longer than the window is clamped to the window
    assert Geometry(16000, 50.0, 2, 96, 1.0, hop_seconds=3.0).hop_samples == 16000


def test_geometry_is_frozen_and_validated():
    g = Geometry(16000, 50.0, 2, 96, 10.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.dim = 3  # type: ignore[misc]
    with pytest.raises(ConfigError, match="dim=0 must be a positive number"):
        Geometry(16000, 50.0, 2, 0, 10.0)
    with pytest.raises(ConfigError, match="window_seconds=-1"):
        Geometry(16000, 50.0, 2, 4, -1)


def test_frames_for_matches_conv_stack_and_stft_rules():
    conv = Geometry(16000, 50.0, 13, 768, 30.0, receptive_field=400)
    assert [conv.frames_for(t) for t in (399, 400, 719, 720, 16000)] == [0, 1, 1, 2, 49]
    stft = Geometry(16000, 50.0, 2, 96, 10.0)
    assert [stft.frames_for(t) for t in (319, 320, 16000)] == [0, 1, 50]
    # wav2vec2's conv stack (kernels 10,3,3,3,3,2,2; strides 5,2,2,2,2,2,2)
    assert hub.conv_frames([10, 3, 3, 3, 3, 2, 2], [5, 2, 2, 2, 2, 2, 2]) == {"receptive_field": 400}


@pytest.mark.parametrize("samples", [320, 4321, 16000])
def test_logmel_returns_the_frames_its_geometry_says(samples):
    enc = LogMelEncoder()
    out = enc.encode(torch.zeros(2, samples))
    assert out.shape == (2, 2, enc.geometry().frames_for(samples), 96)


def test_prepared_embedding_holds_the_geometry_the_pipeline_uses():
    enc = LogMelEncoder(window_seconds=3.0, hop_seconds=2.0)
    from musicembed_core.builtins.enrichers import FlattenEnricher, MeanEnricher

    prep = PreparedEmbedding.build(EmbeddingSpec("x", enc, [MeanEnricher(), FlattenEnricher()]))
    assert prep.geometry is enc.geometry()
    assert prep.space.dim == 2 * 96
    assert prep.space.encoder["window_seconds"] == 3.0 and prep.space.encoder["hop_seconds"] == 2.0


# --------------------------------------------------------------------------- PretrainedEncoder


class _Tiny(PretrainedEncoder):
    name = "tiny_geo"
    default_model = "org/tiny-geo"
    window_seconds = 4.0
    params = {"gain": 1.0, "mode": "a"}

    def configure(self):
        if self.mode not in ("a", "b"):
            raise ValueError(f"encoders.tiny_geo.mode must be 'a' or 'b', got {self.mode!r}")

    def geometry_from_config(self, checkpoint):
        cfg = checkpoint.read_json("config.json")
        return {"sample_rate": 8000, "frame_rate": 8000 / 80, "num_layers": 2,
                "dim": cfg["hidden_size"], "receptive_field": 80}

    def build_module(self, checkpoint):
        dim = checkpoint.read_json("config.json")["hidden_size"]
        gain = self.gain

        class Frames(torch.nn.Module):
            def forward(self, wave):
                f = wave[:, : wave.shape[1] // 80 * 80].reshape(wave.shape[0], -1, 80)
                x = f.mean(-1, keepdim=True).expand(-1, -1, dim) * gain
                return torch.stack([x, 2 * x])

        return Frames()


def _ckpt(tmp_path, hidden=6):
    d = tmp_path / "ckpt"
    d.mkdir(exist_ok=True)
    (d / "config.json").write_text(json.dumps({"hidden_size": hidden}))
    (d / "model.safetensors").write_bytes(b"")  # not read: this tiny model has no weights
    return d


def test_subclass_constructor_lists_base_and_own_parameters():
    params = inspect.signature(_Tiny.__init__).parameters
    assert list(params) == ["self", "model", "revision", "device", "dtype", "window_seconds",
                            "hop_seconds", "cache_dir", "gain", "mode"]
    assert params["model"].default == "org/tiny-geo"
    assert params["window_seconds"].default == 4.0
    enc = _Tiny(gain=2.0)
    assert enc.config()["gain"] == 2.0 and enc.config()["mode"] == "a"
    with pytest.raises(TypeError, match="unexpected parameter.*gian.*gain, mode"):
        _Tiny(gian=2.0)
    with pytest.raises(ValueError, match="mode must be 'a' or 'b'"):
        _Tiny(mode="c")


def test_geometry_comes_from_the_config_once_without_weights(tmp_path):
    enc = _Tiny(model=str(_ckpt(tmp_path, hidden=6)))
    g = enc.geometry()
    assert (g.sample_rate, g.frame_rate, g.num_layers, g.dim, g.window_seconds) == (8000, 100.0, 2, 6, 4.0)
    assert enc.geometry() is g  # resolved once
    assert enc._module is None  # no weights were loaded
    assert (enc.sample_rate, enc.dim) == (8000, 6)  # read-only views of the geometry
    out = enc.encode(torch.randn(3, 8000))
    assert out.shape == (2, 3, g.frames_for(8000), 6)
    sig = enc.signature()
    assert sig["dim"] == 6 and sig["gain"] == 1.0 and sig["weights"].startswith("sha256:")


def test_gin_sees_the_generated_parameters_and_names_a_typo(tmp_path):
    from musicembed_core.plugins import get_manager

    class Plugin:
        @staticmethod
        @__import__("musicembed_core").hookimpl
        def register_encoders(register):
            register(_Tiny)

    manager = get_manager()
    manager.register_plugin(Plugin(), "tiny-geo-plugin")
    try:
        ginconfig.register_components(manager)
        ginconfig.parse([], ["encoders.tiny_geo.gain = 3.0"])
        import gin

        enc = gin.get_configurable("encoders.tiny_geo")()
        assert enc.gain == 3.0
        ginconfig.clear()
        with pytest.raises(ConfigError, match=r"has no parameter 'gian'.*Did you mean 'gain'"):
            ginconfig.parse([], ["encoders.tiny_geo.gian = 3.0"])
    finally:
        ginconfig.clear()
        manager.unregister_plugin("tiny-geo-plugin")
        ginconfig.register_components(manager)


# --------------------------------------------------------------------------- other layouts


def test_named_checkpoint_files_are_fetched_and_required(tmp_path, monkeypatch):
    folder = tmp_path / "omar"
    folder.mkdir()
    (folder / "config.gin").write_text("net.dim = 4\n")
    torch.save({"w": torch.ones(2)}, folder / "model.ckpt")
    (folder / "README.md").write_text("not needed")
    cache = tmp_path / "hub"
    save_to_hub_cache(cache, "org/omar-like", folder)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    ckpt = resolve_checkpoint("org/omar-like", files=("config.gin", "model.ckpt"))
    assert ckpt.file("config.gin").read_text() == "net.dim = 4\n"
    # a local folder: the revision covers exactly the named files
    a = resolve_checkpoint(str(folder), files=("config.gin", "model.ckpt")).revision
    (folder / "README.md").write_text("changed")
    assert resolve_checkpoint(str(folder), files=("config.gin", "model.ckpt")).revision == a
    (folder / "config.gin").write_text("net.dim = 5\n")
    assert resolve_checkpoint(str(folder), files=("config.gin", "model.ckpt")).revision != a
    with pytest.raises(ModelLoadError, match=r"lacks missing\.bin.*needs config\.gin, missing\.bin"):
        resolve_checkpoint(str(folder), files=("config.gin", "missing.bin"))


class _Evil:
    def __reduce__(self):
        return (print, ("pwned",))


def test_load_pickle_allows_exactly_the_listed_globals(tmp_path):
    ok = tmp_path / "ok.pt"
    torch.save({"w": torch.ones(2), "step": np.float64(3.0)}, ok)
    with pytest.raises(ModelLoadError, match=r"needs the global numpy\._core\.multiarray\.scalar, which is "
                       r"not on the allowlist \(nothing but tensors"):
        hub.load_pickle(ok)
    allowed = (np._core.multiarray.scalar, np.dtype, type(np.dtype(np.float64)))
    got = hub.load_pickle(ok, allowed_globals=allowed)
    assert float(got["step"]) == 3.0 and torch.equal(got["w"], torch.ones(2))
    evil = tmp_path / "evil.pt"
    with open(evil, "wb") as f:
        pickle.dump({"x": _Evil()}, f)
    with pytest.raises(ModelLoadError, match="refused to load"):
        hub.load_pickle(evil, allowed_globals=allowed)
