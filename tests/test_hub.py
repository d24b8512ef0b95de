"""Checkpoint resolution and safe weight loading (musicembed_core.hub), on real files."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from musicembed_core import hub
from musicembed_core.hub import ModelLoadError, resolve_checkpoint
from musicembed_core.testing import save_to_hub_cache


def _folder(tmp_path, name="ckpt", tensors=None, fmt="safetensors"):
    d = tmp_path / name
    d.mkdir()
    (d / "config.json").write_text(json.dumps({"hidden_size": 4}))
    (d / "preprocessor_config.json").write_text(json.dumps({"do_normalize": False}))
    tensors = tensors or {"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}
    if fmt == "safetensors":
        save_file(tensors, str(d / "model.safetensors"))
    else:
        torch.save(tensors, d / "pytorch_model.bin")
    return d


@pytest.fixture
def offline_cache(tmp_path, monkeypatch):
    cache = tmp_path / "hf-cache"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    return cache


def test_repo_id_resolves_from_offline_cache(tmp_path, offline_cache):
    sha = save_to_hub_cache(offline_cache, "org/tiny", _folder(tmp_path))
    ckpt = resolve_checkpoint("org/tiny")
    assert ckpt.revision == sha
    assert ckpt.read_json("config.json") == {"hidden_size": 4}
    assert torch.equal(ckpt.load_state_dict()["w"], torch.arange(6.0).reshape(2, 3))


def test_named_revision_picks_its_snapshot(tmp_path, offline_cache):
    a = save_to_hub_cache(offline_cache, "org/tiny", _folder(tmp_path, "a"))
    b = save_to_hub_cache(
        offline_cache, "org/tiny", _folder(tmp_path, "b", {"w": torch.zeros(2)}), revision="v2"
    )
    assert a != b
    assert resolve_checkpoint("org/tiny").revision == a
    v2 = resolve_checkpoint("org/tiny", revision="v2")
    assert v2.revision == b and torch.equal(v2.load_state_dict()["w"], torch.zeros(2))


def test_missing_model_offline_says_what_to_do(offline_cache):
    with pytest.raises(ModelLoadError, match=r"'org/absent'.*HF_HUB_OFFLINE is set.*local folder"):
        resolve_checkpoint("org/absent")


def test_not_a_repo_id_nor_a_folder(tmp_path):
    with pytest.raises(ModelLoadError, match="neither an existing folder nor a Hugging Face repo id"):
        resolve_checkpoint(str(tmp_path / "nope" / "deeper" / "x"))


def test_local_folder_revision_follows_content(tmp_path):
    d = _folder(tmp_path)
    first = resolve_checkpoint(str(d)).revision
    assert first.startswith("sha256:") and resolve_checkpoint(str(d)).revision == first
    save_file({"w": torch.ones(2, 3)}, str(d / "model.safetensors"))
    assert resolve_checkpoint(str(d)).revision != first


def test_bin_weights_load_with_weights_only(tmp_path):
    d = _folder(tmp_path, fmt="bin")
    assert resolve_checkpoint(str(d)).weight_files() == [d / "pytorch_model.bin"]
    assert torch.equal(resolve_checkpoint(str(d)).load_state_dict()["w"], torch.arange(6.0).reshape(2, 3))


class _Evil:
    def __reduce__(self):
        return (print, ("pickled code ran",))


def test_bin_with_pickled_code_is_refused(tmp_path, capsys):
    d = tmp_path / "evil"
    d.mkdir()
    (d / "config.json").write_text("{}")
    torch.save({"w": _Evil()}, d / "pytorch_model.bin")
    with pytest.raises(ModelLoadError, match="pytorch_model.bin: cannot load weights"):
        resolve_checkpoint(str(d)).load_state_dict()
    assert "pickled code ran" not in capsys.readouterr().out


def test_safetensors_preferred_over_bin(tmp_path):
    d = _folder(tmp_path)
    torch.save({"w": torch.zeros(1)}, d / "pytorch_model.bin")
    assert resolve_checkpoint(str(d)).weight_files() == [d / "model.safetensors"]


def test_sharded_safetensors(tmp_path):
    d = tmp_path / "sharded"
    d.mkdir()
    (d / "config.json").write_text("{}")
    save_file({"a": torch.ones(1)}, str(d / "model-00001-of-00002.safetensors"))
    save_file({"b": torch.zeros(1)}, str(d / "model-00002-of-00002.safetensors"))
    (d / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {
        "a": "model-00001-of-00002.safetensors", "b": "model-00002-of-00002.safetensors"}}))
    assert set(resolve_checkpoint(str(d)).load_state_dict()) == {"a", "b"}


def test_corrupt_weights_name_the_file(tmp_path):
    d = _folder(tmp_path)
    (d / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ModelLoadError, match="model.safetensors: cannot load weights"):
        resolve_checkpoint(str(d)).load_state_dict()


def test_load_into_lists_what_does_not_fit():
    model = torch.nn.Linear(3, 2)
    state = {"weight": torch.zeros(2, 4), "extra.x": torch.zeros(1)}
    with pytest.raises(ModelLoadError) as err:
        hub.load_into(model, state, "org/tiny")
    msg = str(err.value)
    assert "missing 1 tensors: bias" in msg and "unexpected 1 tensors: extra.x" in msg
    assert "weight: checkpoint (2, 4) vs model (2, 3)" in msg
    hub.load_into(model, {"weight": torch.ones(2, 3), "bias": torch.ones(2), "head.x": torch.ones(1)},
                  "org/tiny", ignore=("head.",))
    assert torch.equal(model.bias, torch.ones(2))


def test_rename_keys():
    out = hub.rename_keys({"a.weight_g": 1, "a.weight_v": 2}, {"weight_g": "g", "weight_v": "v"})
    assert out == {"a.g": 1, "a.v": 2}


def test_device_and_dtype_checks():
    assert hub.resolve_device("cpu") == "cpu"
    assert hub.resolve_device("auto") in ("cpu", "cuda", "mps")
    with pytest.raises(ModelLoadError, match="expected cpu, cuda"):
        hub.resolve_device("tpu")
    with pytest.raises(ModelLoadError, match="'cpu:0x': expected cpu, cuda"):
        hub.resolve_device("cpu:0x")
    if not torch.cuda.is_available():
        with pytest.raises(ModelLoadError, match="CUDA is not available"):
            hub.resolve_device("cuda")
    assert hub.resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(ModelLoadError, match="float32, bfloat16, float16"):
        hub.resolve_dtype("int8")


def test_hidden_states_module_normalises_per_clip():
    class Echo(torch.nn.Module):
        def forward(self, x, output_hidden_states=True, return_dict=True):
            class Out:
                hidden_states = (x.unsqueeze(-1), 2 * x.unsqueeze(-1))

            return Out()

    wave = torch.randn(2, 100) * 3 + 1
    out = hub.hidden_states_module(Echo(), normalize=True)(wave)
    assert out.shape == (2, 2, 100, 1)
    assert torch.allclose(out[0, :, :, 0].mean(-1), torch.zeros(2), atol=1e-5)
    assert torch.allclose(out[0, :, :, 0].std(-1, unbiased=False), torch.ones(2), atol=1e-4)
    raw = hub.hidden_states_module(Echo(), normalize=False)(wave)
    assert torch.equal(raw[1, :, :, 0], 2 * wave)


def test_pretrained_encoder_checks_window_and_dtype():
    from musicembed_core.errors import ConfigError

    class Tiny(hub.PretrainedEncoder):
        name = "tiny"
        default_model = "org/tiny"

    enc = Tiny(window_seconds=2.5, hop_seconds=1.0)
    assert (enc.model, enc.window_seconds, enc.hop_seconds) == ("org/tiny", 2.5, 1.0)
    with pytest.raises(ConfigError, match="encoders.tiny: window_seconds=0"):
        Tiny(window_seconds=0)
    with pytest.raises(ConfigError, match="hop_seconds=-1"):
        Tiny(hop_seconds=-1)
    with pytest.raises(ModelLoadError, match="tiny.dtype='int8'"):
        Tiny(dtype="int8")


def test_checkpoint_where_names_the_model_and_the_folder(tmp_path):
    ckpt = hub.Checkpoint(tmp_path, "sha256:x")
    assert ckpt.where(str(tmp_path)) == str(tmp_path)  # a folder given as the model: once
    assert ckpt.where("org/repo") == f"org/repo ({tmp_path})"
    assert ckpt.where("org/repo", "model.ckpt") == f"org/repo ({tmp_path / 'model.ckpt'})"
