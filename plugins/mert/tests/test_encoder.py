"""encoders.mert on tiny checkpoints of the released layout, loaded by repo id from an
offline Hugging Face cache, against transformers' HubertModel on the same weights."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from mert_checkpoints import released_configs_cache
from musicembed_mert import MertEncoder
from musicembed_mert.config import VARIANTS as RELEASED
from safetensors.torch import save_file

from musicembed_core.hub import ModelLoadError

VARIANTS = ["v1_95m", "v1_330m", "v0"]


def waves(batch: int, seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(int(seconds * rate)) / rate
    tone = 0.4 * torch.sin(2 * torch.pi * 330.0 * t)
    return (tone + 0.2 * torch.randn(batch, t.numel(), generator=g)).clamp(-1, 1)


@pytest.mark.parametrize("name", VARIANTS)
def test_repo_id_loads_offline_with_the_checkpoint_geometry(tiny, offline, name):
    t = tiny[name]
    enc = MertEncoder(model=t.repo_id)
    sig = enc.signature()
    assert sig["weights"] == t.revision  # the resolved snapshot identifies the weights
    assert (enc.sample_rate, enc.num_layers, enc.dim) == (t.sample_rate, t.layers, t.dim)
    assert enc.frame_rate == t.sample_rate / 320  # product of the conv strides
    assert enc.window_seconds == 5.0
    out = enc.encode(waves(2, 1.0, t.sample_rate))
    frames = (t.sample_rate - 400) // 320 + 1  # 400-sample receptive field, hop 320
    assert out.shape == (t.layers, 2, frames, t.dim)
    assert out.dtype == torch.float32 and torch.isfinite(out).all()


def test_released_rates(tmp_path, monkeypatch):
    """24 kHz -> 75 frames/s for v1, 16 kHz -> 50 for v0: read from the released configs
    alone, before any weights exist; the table in the README says the same."""
    released_configs_cache(tmp_path, monkeypatch)
    assert MertEncoder().model == "m-a-p/MERT-v1-95M"  # the default
    for repo, known in RELEASED.items():
        geo = MertEncoder(model=repo).geometry()
        assert (geo.sample_rate, geo.frame_rate, geo.num_layers, geo.dim) == (
            known.sample_rate, known.frame_rate, known.num_layers, known.dim
        )
        assert geo.receptive_field == 400 and geo.window_seconds == 5.0
        assert geo.frames_for(geo.sample_rate) == (75 if geo.sample_rate == 24000 else 50) - 1


@pytest.mark.parametrize("name", VARIANTS)
def test_equals_transformers_hubert_on_the_same_weights(tiny, offline, name):
    t = tiny[name]
    wave = waves(2, 1.3, t.sample_rate, seed=1)
    ours = MertEncoder(model=t.repo_id).encode(wave)
    ref = t.reference_states(wave)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5), (ours - ref).abs().max()


def test_stable_layer_norm_last_state_is_after_the_final_norm(tiny, offline):
    """MERT-v1-330M's 25th hidden state is the encoder output after its final LayerNorm, as
    MERT's own code (transformers 4.2x) returns it, not the last layer's raw output."""
    t = tiny["v1_330m"]
    wave = waves(1, 1.0, t.sample_rate)
    ours = MertEncoder(model=t.repo_id, normalize=False).encode(wave)
    with torch.no_grad():
        out = t.reference(wave, output_hidden_states=True)
    raw_last = out.hidden_states[-1]  # transformers 5 default: before the final norm
    assert torch.allclose(ours[-1], t.reference.encoder.layer_norm(raw_last), atol=1e-5)
    assert torch.allclose(ours[-1], out.last_hidden_state, atol=1e-5)
    assert not torch.allclose(ours[-1], raw_last, atol=1e-2)
    assert torch.allclose(ours[:-1], torch.stack(out.hidden_states[:-1]), atol=1e-5)


def test_normalisation_follows_the_preprocessor_or_the_override(tiny, offline):
    t = tiny["v1_95m"]  # preprocessor_config.json: do_normalize true
    wave = 0.3 * waves(1, 1.0, t.sample_rate)  # not zero-mean/unit-variance
    default = MertEncoder(model=t.repo_id)
    assert torch.allclose(default.encode(wave), t.reference_states(wave, normalize=True), atol=1e-5)
    assert default.signature()["input_normalization"] == "zero_mean_unit_var"
    raw = MertEncoder(model=t.repo_id, normalize=False)
    assert torch.allclose(raw.encode(wave), t.reference_states(wave, normalize=False), atol=1e-5)
    assert raw.signature()["input_normalization"] == "none"
    assert not torch.allclose(default.encode(wave), raw.encode(wave), atol=1e-3)
    v0 = MertEncoder(model=tiny["v0"].repo_id)  # do_normalize false: raw waveform
    assert v0.signature()["input_normalization"] == "none"


def test_zero_padding_changes_group_norm_frames(tiny, offline):
    """Why the pipeline never pads a short chunk into a batch: the first conv layer's
    GroupNorm normalises over the whole input, so padding alters every frame."""
    t = tiny["v1_95m"]
    enc = MertEncoder(model=t.repo_id, normalize=False)
    short = waves(1, 1.0, t.sample_rate, seed=3)
    padded = torch.nn.functional.pad(short, (0, t.sample_rate // 2))
    alone = enc.encode(short)
    in_padded = enc.encode(padded)[:, :, : alone.shape[2]]
    assert (alone - in_padded).abs().max() > 1e-2


def test_local_folder_with_safetensors(tiny, tmp_path):
    """A local folder loads too; safetensors with the same (legacy) key names is preferred."""
    t = tiny["v1_330m"]
    folder = tmp_path / "mert-local"
    shutil.copytree(t.folder, folder)
    state = torch.load(folder / "pytorch_model.bin", weights_only=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "model.safetensors"))
    (folder / "pytorch_model.bin").write_bytes(b"not a checkpoint")  # must not be read
    enc = MertEncoder(model=str(folder))
    wave = waves(1, 1.0, t.sample_rate)
    assert enc.signature()["weights"].startswith("sha256:")
    assert torch.allclose(enc.encode(wave), t.reference_states(wave), atol=1e-5)


def _variant_folder(tiny, tmp_path, **changes):
    t = tiny["v1_95m"]
    folder = tmp_path / "variant"
    shutil.copytree(t.folder, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg.update(changes)
    (folder / "config.json").write_text(json.dumps(cfg))
    return folder


@pytest.mark.parametrize("key", ["feature_extractor_cqt", "deepnorm"])
def test_configs_needing_merts_own_code_are_refused(tiny, tmp_path, key):
    folder = _variant_folder(tiny, tmp_path, **{key: True})
    enc = MertEncoder(model=str(folder))
    with pytest.raises(ModelLoadError) as err:
        enc.signature()  # refused while reading the config, before any weights
    msg = str(err.value)
    assert str(folder) in msg and f"{key}=True" in msg and "released MERT configs only" in msg


def test_attention_relax_is_accepted(tiny, offline):
    """MERT-v1-330M ships attention_relax=32: it never enters the released network's maths."""
    t = tiny["v1_330m"]
    assert t.config["attention_relax"] == 32.0
    wave = waves(1, 1.0, t.sample_rate)
    assert torch.allclose(MertEncoder(model=t.repo_id).encode(wave), t.reference_states(wave), atol=1e-5)


def test_other_model_types_are_refused(tiny, tmp_path):
    folder = _variant_folder(tiny, tmp_path, model_type="data2vec-audio")
    with pytest.raises(ModelLoadError, match=r"model_type='data2vec-audio', not a MERT checkpoint"):
        MertEncoder(model=str(folder)).signature()


def test_weights_of_another_architecture_are_refused_with_the_keys(tiny, tmp_path):
    folder = _variant_folder(tiny, tmp_path, num_hidden_layers=3)  # checkpoint has 2 layers
    with pytest.raises(ModelLoadError, match=r"missing \d+ tensors: encoder\.layers\.2\."):
        MertEncoder(model=str(folder)).load()


def test_disagreeing_sample_rates_are_refused(tiny, tmp_path):
    folder = _variant_folder(tiny, tmp_path, sample_rate=16000)  # preprocessor says 24000
    with pytest.raises(ModelLoadError, match=r"sampling_rate=24000 .* sample_rate=16000"):
        MertEncoder(model=str(folder)).signature()


def test_bfloat16_is_selectable(tiny, offline):
    t = tiny["v1_95m"]
    wave = waves(1, 1.0, t.sample_rate)
    enc = MertEncoder(model=t.repo_id, dtype="bfloat16")
    out = enc.encode(wave)
    assert enc.signature()["dtype"] == "bfloat16"
    assert next(enc.module().parameters()).dtype == torch.bfloat16
    ref = t.reference_states(wave)
    assert out.dtype == torch.float32 and (out - ref).abs().max() < 0.25


def test_inference_only_module(tiny, offline):
    enc = MertEncoder(model=tiny["v1_95m"].repo_id)
    module = enc.module()
    assert not module.training
    assert not any(p.requires_grad for p in module.parameters())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in module.modules())


@pytest.mark.parametrize("name", ["v1_95m", "v1_330m"])
def test_traced_module_generalises_to_other_lengths_and_batches(tiny, offline, name):
    t = tiny[name]
    enc = MertEncoder(model=t.repo_id)
    module = enc.module()
    with torch.inference_mode():
        traced = torch.jit.trace(module, waves(1, 1.0, t.sample_rate))
        for wave in (waves(1, 0.7, t.sample_rate, 4), waves(1, 2.1, t.sample_rate, 5),
                     waves(2, 1.6, t.sample_rate, 6)):
            eager = module(wave)
            out = traced(wave)
            assert out.shape == eager.shape
            assert torch.allclose(out, eager, atol=1e-5)


def test_released_95m_config_describes_the_released_weights():
    """m-a-p/MERT-v1-95M's pytorch_model.bin holds 211 tensors with 94,371,712 values in
    all. The network built from its config.json, plus the dropped masked_spec_embed,
    has exactly that many (built on the meta device: no memory, no weights needed)."""
    from mert_checkpoints import RELEASED_V1_95M
    from musicembed_mert.config import hubert_config_kwargs
    from musicembed_mert.model import PRETRAINING_ONLY
    from transformers import HubertConfig, HubertModel

    with torch.device("meta"):
        model = HubertModel(HubertConfig(**hubert_config_kwargs(RELEASED_V1_95M, "MERT-v1-95M"),
                                         mask_time_prob=0.0))
    state = model.state_dict()
    assert PRETRAINING_ONLY == ("masked_spec_embed",)
    assert len(state) + 1 == 211
    assert sum(v.numel() for v in state.values()) + RELEASED_V1_95M["hidden_size"] == 94_371_712


def test_an_inconsistent_config_is_a_load_error(tiny, tmp_path):
    folder = _variant_folder(tiny, tmp_path, num_attention_heads=5)  # 32 is not divisible by 5
    with pytest.raises(ModelLoadError, match=r"config.json does not describe a valid network"):
        MertEncoder(model=str(folder)).load()
