"""encoders.music2vec on tiny random-weight checkpoints in the released layout.

Everything loads through the real repo-id path (``m-a-p/music2vec-v1`` from an
offline Hugging Face cache) or a local folder; parity is checked against
transformers' own ``Data2VecAudioModel.from_pretrained`` + ``Wav2Vec2FeatureExtractor``
on the same weights.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from music2vec_tiny import (
    PREPROCESSOR,
    REPO_ID,
    SR,
    TINY,
    frames_for,
    reference,
    released_config,
    waves,
    write_folder,
)
from musicembed_music2vec import Music2VecEncoder

from musicembed_core.hub import ModelLoadError
from musicembed_core.pipeline import Result

LAYERS, DIM = 3, 32  # tiny: the embedding output + 2 transformer layers; hidden_size 32


# --------------------------------------------------------------------------- loading


def test_geometry_comes_from_the_checkpoint(offline):
    enc = Music2VecEncoder()
    assert (enc.model, enc.window_seconds) == (REPO_ID, 30.0)
    sig = enc.signature()
    assert sig["weights"] == offline.sha_main
    assert (enc.sample_rate, enc.frame_rate, enc.num_layers, enc.dim) == (SR, 50.0, LAYERS, DIM)
    assert sig["num_layers"] == LAYERS and sig["dim"] == DIM and sig["frame_rate"] == 50.0
    out = enc.encode(waves(2, 1.0))
    assert out.shape == (LAYERS, 2, frames_for(SR), DIM) == (LAYERS, 2, 49, DIM)
    assert enc.geometry().frames_for(SR) == 49 and enc.geometry().receptive_field == 400
    assert out.dtype == torch.float32 and torch.isfinite(out).all()
    frames_30s = enc.encode(waves(1, 30.0)).shape[2]
    assert frames_30s == frames_for(30 * SR) == 1499  # 50 frames/s, minus the front end's edge


def test_equals_transformers_reference(offline):
    enc = Music2VecEncoder()
    x = waves(2, 1.3, seed=4)
    ours = enc.encode(x)
    ref = reference(offline.reference, x)
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5, rtol=1e-4), (ours - ref).abs().max()
    # A batch row equals the same clip alone (equal-length batches are exact).
    assert torch.allclose(enc.encode(x[1:]), ours[:, 1:], atol=1e-5, rtol=1e-4)


def test_normalisation_follows_preprocessor_config(tiny, tmp_path):
    """do_normalize=false is honoured; without a preprocessor_config.json, the card's defaults."""
    cfg = json.loads((tiny.main / "config.json").read_text())
    state_file = tiny.main / "model.safetensors"
    raw = write_folder(tmp_path / "raw", cfg, preprocessor={**PREPROCESSOR, "do_normalize": False})
    bare = write_folder(tmp_path / "bare", cfg, preprocessor=None)
    for d in (raw, bare):
        (d / "model.safetensors").write_bytes(state_file.read_bytes())
    x = waves(1, 0.8, seed=2)
    assert torch.allclose(Music2VecEncoder(model=str(raw)).encode(x),
                          reference(tiny.reference, x, do_normalize=False), atol=1e-5, rtol=1e-4)
    default = Music2VecEncoder(model=str(bare))
    assert torch.allclose(default.encode(x), reference(tiny.reference, x), atol=1e-5, rtol=1e-4)
    assert default.sample_rate == SR


def test_bin_from_a_task_model_with_legacy_names(offline):
    """pytorch_model.bin (weights_only), ``data2vec_audio.`` prefix, CTC head, gamma/beta."""
    enc = Music2VecEncoder(revision="legacy-bin")
    ckpt = enc.checkpoint()
    assert ckpt.revision == offline.sha_legacy
    assert [f.name for f in ckpt.weight_files()] == ["pytorch_model.bin"]
    x = waves(1, 0.7, seed=5)
    assert torch.allclose(enc.encode(x), Music2VecEncoder().encode(x), atol=1e-6)


def test_revision_pinning_picks_the_snapshot_and_a_new_space(offline):
    from musicembed_core.builtins import enrichers as E
    from musicembed_core.pipeline import PreparedEmbedding
    from musicembed_core.runconfig import EmbeddingSpec

    def space(enc):
        chain = [E.LayersEnricher(), E.MeanEnricher(), E.FlattenEnricher()]
        return PreparedEmbedding.build(EmbeddingSpec("music2vec", enc, chain)).space

    main, v2 = Music2VecEncoder(), Music2VecEncoder(revision="v2")
    assert main.checkpoint().revision == offline.sha_main
    assert v2.checkpoint().revision == offline.sha_v2 != offline.sha_main
    assert space(main).hash != space(v2).hash
    assert space(main).dim == space(v2).dim == LAYERS * DIM
    x = waves(1, 0.5)
    assert not torch.allclose(main.encode(x), v2.encode(x), atol=1e-3)
    assert Music2VecEncoder(revision=offline.sha_v2).checkpoint().revision == offline.sha_v2


def test_missing_model_offline_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    with pytest.raises(ModelLoadError, match=r"'m-a-p/music2vec-v1'.*HF_HUB_OFFLINE"):
        Music2VecEncoder().signature()


def test_released_config_quirks_and_wrong_models(tiny, tmp_path):
    """The release's path-valued vocab_size loads; another architecture is refused by name."""
    from musicembed_music2vec.encoder import data2vec_config
    from transformers import Data2VecAudioConfig

    from musicembed_core.hub import resolve_checkpoint

    assert isinstance(json.loads((tiny.main / "config.json").read_text())["vocab_size"], str)
    with pytest.raises(Exception, match="vocab_size"):  # why the plugin maps keys itself
        Data2VecAudioConfig.from_pretrained(str(tiny.main))
    cfg = data2vec_config(resolve_checkpoint(str(tiny.main)))
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.conv_bias, cfg.mask_time_prob) == (32, 2, True, 0.0)

    hubert = write_folder(tmp_path / "hubert", {**released_config(), "model_type": "hubert"})
    with pytest.raises(ModelLoadError, match=r"config.json: model_type is 'hubert'.*encoders.music2vec"):
        Music2VecEncoder(model=str(hubert)).signature()
    broken = write_folder(tmp_path / "broken", released_config(conv_stride=[5, 2]))
    with pytest.raises(ModelLoadError, match="config.json: not a valid data2vec-audio architecture"):
        Music2VecEncoder(model=str(broken)).signature()


def test_weights_of_another_size_are_refused(tiny, tmp_path):
    bigger = write_folder(tmp_path / "bigger", released_config(**{**TINY, "intermediate_size": 96}))
    (bigger / "model.safetensors").write_bytes((tiny.main / "model.safetensors").read_bytes())
    with pytest.raises(ModelLoadError, match=r"do not fit.*shape mismatch.*intermediate_dense"):
        Music2VecEncoder(model=str(bigger)).load()


# --------------------------------------------------------------------------- runtime


def test_bfloat16_runs_and_is_its_own_space(offline):
    f32, bf16 = Music2VecEncoder(), Music2VecEncoder(dtype="bfloat16")
    x = waves(2, 1.0, seed=3)
    a, b = f32.encode(x), bf16.encode(x)
    assert b.dtype == torch.float32 and b.shape == a.shape and torch.isfinite(b).all()
    cos = torch.nn.functional.cosine_similarity(a.flatten(2), b.flatten(2), dim=-1)
    assert cos.min() > 0.98, cos
    assert bf16.signature()["dtype"] == "bfloat16" and f32.signature() != bf16.signature()
    assert next(bf16.module().parameters()).dtype == torch.bfloat16


def test_inference_settings(offline):
    enc = Music2VecEncoder(device="auto")
    module = enc.module()
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert not any(getattr(m, "gradient_checkpointing", False) for m in module.modules())
    assert enc.signature() == Music2VecEncoder(device="cpu").signature()  # device: not the space
    with pytest.raises(ModelLoadError, match="dtype='int8'"):
        Music2VecEncoder(dtype="int8")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on CPU-only CI)")
def test_cuda_matches_cpu(offline):
    x = waves(2, 1.5, seed=6)
    cpu = Music2VecEncoder().encode(x)
    gpu = Music2VecEncoder(device="cuda")
    assert torch.allclose(gpu.encode(x).cpu(), cpu, atol=1e-4, rtol=1e-3)
    half = Music2VecEncoder(device="cuda", dtype="float16").encode(x).cpu()
    assert torch.isfinite(half).all()
    assert torch.nn.functional.cosine_similarity(half.flatten(2), cpu.flatten(2), dim=-1).min() > 0.98


def test_jit_trace_generalises_to_other_lengths_and_batches(offline):
    enc = Music2VecEncoder()
    module = enc.module()
    with torch.inference_mode():
        traced = torch.jit.trace(module, waves(1, 1.0))
        for x in (waves(1, 0.45, seed=7), waves(2, 2.3, seed=8)):
            eager, scripted = module(x), traced(x)
            assert scripted.shape == eager.shape == (LAYERS, x.shape[0], frames_for(x.shape[1]), DIM)
            assert torch.allclose(scripted, eager, atol=1e-5, rtol=1e-4)


def test_padding_with_an_attention_mask_is_not_exact(offline):
    """Why the README says the pipeline must not pad: transformers' own padded batch.

    data2vec-audio zeroes padded frames only before its stack of 5 positional
    convolutions, so padding leaks into the last frames of the shorter clip and
    attention spreads it to all frames. Equal-length batches (what the pipeline
    builds) need no mask and are exact (test_equals_transformers_reference).
    """
    from transformers import Data2VecAudioModel

    model = Data2VecAudioModel.from_pretrained(str(offline.reference)).eval()
    x = waves(2, 2.0, seed=9)
    short = x[:1, : SR]
    normed = (short - short.mean()) / torch.sqrt(short.var(unbiased=False) + 1e-7)
    padded = torch.zeros(2, 2 * SR)
    padded[0, :SR], padded[1] = normed[0], x[1]
    mask = torch.zeros(2, 2 * SR, dtype=torch.long)
    mask[0, :SR], mask[1] = 1, 1
    with torch.no_grad():
        alone = torch.stack(model(normed, output_hidden_states=True).hidden_states)
        batched = torch.stack(model(padded, attention_mask=mask, output_hidden_states=True).hidden_states)
    f = alone.shape[2]
    diff = (batched[:, 0, :f] - alone[:, 0]).abs().amax(dim=-1)  # [L, F]
    assert diff[0, : f - 40].max() < 1e-5  # embedding output: exact away from the end ...
    assert diff[0, -5:].min() > 1e-3       # ... but not in the last frames
    assert diff[-1].max() > 1e-3           # and the transformer spreads it


def test_entry_module_imports_no_heavy_libraries():
    code = (
        "import sys, musicembed_music2vec; "
        "print(','.join(m for m in ('torch', 'transformers', 'numpy') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_registered_as_encoders_music2vec():
    from musicembed_core.plugins import get_manager

    found = {(c.kind, c.name): c.cls for c in get_manager().all_components()}
    assert found[("encoders", "music2vec")] is Music2VecEncoder


def _pipeline(encoder: Music2VecEncoder, path) -> Result:
    from musicembed_core.builtins import enrichers as E
    from musicembed_core.pipeline import PreparedEmbedding, embed_paths
    from musicembed_core.runconfig import EmbeddingSpec

    chain = [E.LayersEnricher(), E.MeanEnricher(), E.FlattenEnricher()]
    prep = PreparedEmbedding.build(EmbeddingSpec("music2vec", encoder, chain))
    prep.keep_frames = True
    [res] = embed_paths([prep], [path])
    assert res.status == "ok", res.error
    return res


def test_a_longer_clip_is_cut_at_the_window(offline, tmp_path):
    """Window 1 s over 2.5 s: chunks of 1 s, 1 s and 0.5 s, each encoded on its own."""
    from musicembed_core.audio import load_audio
    from musicembed_core.examples import synth_clip, write_audio

    path = tmp_path / "long.wav"
    write_audio(path, synth_clip(2.5, SR, seed=11), SR)
    res = _pipeline(Music2VecEncoder(window_seconds=1.0), path)
    wave = torch.from_numpy(load_audio(path, SR))
    parts = [wave[None, :SR], wave[None, SR: 2 * SR], wave[None, 2 * SR:]]
    expected = torch.cat([reference(offline.reference, p)[:, 0] for p in parts], dim=1)
    frames = torch.from_numpy(res.frames[0])
    assert frames.shape == expected.shape == (LAYERS, 49 + 49 + 24, DIM)
    assert torch.allclose(frames, expected, atol=1e-5, rtol=1e-4)
