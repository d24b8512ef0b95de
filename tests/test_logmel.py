"""The built-in weight-free `logmel` encoder."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.components import Encoder
from musicembed_core.examples import synth_clip

REPO = Path(__file__).resolve().parents[1]


def clips(n: int, seconds: float = 10.0, rate: int = 16000) -> torch.Tensor:
    return torch.from_numpy(np.stack([synth_clip(seconds, rate, seed=s) for s in range(n)]))


def test_shapes_and_frame_count():
    enc = LogMelEncoder()
    assert isinstance(enc, Encoder) and enc.name == "logmel"
    assert (enc.frame_rate, enc.num_layers, enc.dim) == (50.0, 2, 96)
    out = enc.encode(clips(3))
    assert out.shape == (2, 3, 500, 96) and out.dtype == torch.float32
    assert torch.isfinite(out).all()
    # odd lengths: F = T // hop_length
    assert enc.encode(torch.zeros(2, 16000 + 319)).shape == (2, 2, 50, 96)
    assert enc.encode(torch.zeros(1, 319)).shape == (2, 1, 0, 96)
    assert LogMelEncoder(n_mels=64, hop_length=160).encode(torch.zeros(1, 16000)).shape == (2, 1, 100, 64)


def test_batch_result_equals_single_clip_result():
    enc = LogMelEncoder()
    x = clips(4)
    x[2] *= 1e-3  # a very quiet clip next to loud ones: no batch-wide normalisation
    x[3] = 0.0  # and pure silence
    batch = enc.encode(x)
    for i in range(len(x)):
        torch.testing.assert_close(batch[:, i : i + 1], enc.encode(x[i : i + 1]), rtol=0, atol=1e-6)
    torch.testing.assert_close(batch[:, 1:3], enc.encode(x[1:3]), rtol=0, atol=1e-6)


def test_layers_meaning():
    enc = LogMelEncoder()
    x = clips(1)
    out = enc.encode(x)
    layer0, layer1 = out[0], out[1]
    # layer 1 is layer 0 without its per-frame mean over mel bins
    torch.testing.assert_close(layer1, layer0 - layer0.mean(-1, keepdim=True))
    # a gain change moves layer 0 by a constant (20 dB / 40 = 0.5) but not layer 1
    louder = enc.encode(x * 0.1)
    active = layer0.amin(-1) > -0.5  # frames well above the -80 dB floor everywhere
    assert active.sum() > 50
    torch.testing.assert_close((layer0 - louder[0])[active], torch.full_like(layer0[active], 0.5), atol=1e-3, rtol=0)
    torch.testing.assert_close(louder[1][active], layer1[active], atol=1e-3, rtol=0)
    # silence sits at the floor: (-80 + 40) / 40 = -1
    silent = enc.encode(torch.zeros(1, 16000))
    assert torch.all(silent[0] == -1.0) and torch.all(silent[1] == 0.0)
    # a typical loud clip stays in a sensible range
    assert -1.0 <= float(layer0.min()) and float(layer0.max()) < 2.5


def test_different_music_gives_different_frames():
    enc = LogMelEncoder()
    out = enc.encode(clips(2))
    a, b = out[1, 0].mean(0), out[1, 1].mean(0)
    assert float(torch.nn.functional.cosine_similarity(a, b, dim=0)) < 0.95


def test_signature_and_config_contain_the_arguments():
    enc = LogMelEncoder(n_mels=64, hop_length=160, window_seconds=5.0, hop_seconds=2.5, f_max=None)
    cfg = enc.config()
    assert cfg == {
        "sample_rate": 16000, "n_mels": 64, "n_fft": 1024, "hop_length": 160, "window_seconds": 5.0,
        "hop_seconds": 2.5, "f_min": 0.0, "f_max": None, "device": "cpu",
    }  # fmt: skip
    sig = enc.signature()
    assert sig["name"] == "logmel" and sig["dim"] == 64 and sig["frame_rate"] == 100.0 and sig["num_layers"] == 2
    assert {k: sig[k] for k in cfg if k != "device"} == {k: v for k, v in cfg.items() if k != "device"}
    assert "device" not in sig  # where it runs is not part of the embedding space
    assert sig != LogMelEncoder().signature()
    with pytest.raises(ValueError, match="Nyquist"):
        LogMelEncoder(f_max=9000.0)


def test_load_is_lazy_and_idempotent():
    enc = LogMelEncoder()
    assert enc._module is None  # constructing is cheap
    enc.load()
    m = enc._module
    enc.load()
    assert enc._module is m


@pytest.mark.filterwarnings("ignore:.*torch.jit.script.*is deprecated:DeprecationWarning")
def test_module_is_scriptable():
    enc = LogMelEncoder()
    x = clips(2, seconds=3.0)
    scripted = torch.jit.script(enc.module())
    torch.testing.assert_close(scripted(x), enc.encode(x), rtol=0, atol=0)


def test_encode_accepts_numpy_and_runs_in_inference_mode():
    enc = LogMelEncoder()
    x = clips(1, seconds=2.0)
    out = enc.encode(x.numpy())
    assert out.shape == (2, 1, 100, 96) and not out.requires_grad
    with pytest.raises(ValueError):
        enc.encode(torch.zeros(1, 1, 100))


def test_faster_than_real_time():
    enc = LogMelEncoder()
    x = clips(1).repeat(8, 1)  # 80 s of audio
    enc.encode(x)
    best = min(_timed(enc.encode, x) for _ in range(3))
    # target is >100x on 2 cores; assert a loose bound so a busy CI machine does not flake
    assert 80.0 / best > 20.0


def _timed(fn, x) -> float:
    t = time.perf_counter()
    fn(x)
    return time.perf_counter() - t


def test_module_import_does_not_import_torch():
    code = (
        "import sys; import musicembed_core.builtins.logmel; "
        "assert 'torch' not in sys.modules and 'numpy' not in sys.modules, sorted(sys.modules)"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none on CPU-only CI)")
def test_pipeline_on_cuda_matches_cpu(tmp_path):
    """The same file through the pipeline with logmel on CUDA and on CPU."""
    from musicembed_core.builtins import enrichers as E
    from musicembed_core.examples import synth_clip, write_audio
    from musicembed_core.pipeline import PreparedEmbedding, embed_paths
    from musicembed_core.runconfig import EmbeddingSpec

    path = tmp_path / "t.flac"
    write_audio(path, synth_clip(25.0, 44100, seed=5, channels=2), 44100)
    chain = [E.LayersEnricher(), E.StatsEnricher(stats=["mean", "iqr", "delta_mean"]),
             E.FlattenEnricher(), E.L2NormalizeEnricher()]
    vecs = {}
    for device in ("cpu", "cuda"):
        prep = PreparedEmbedding.build(EmbeddingSpec("x", LogMelEncoder(device=device), chain))
        [res] = embed_paths([prep], [path])
        assert res.status == "ok", res.error
        vecs[device] = res.vectors[0]
    assert np.allclose(vecs["cpu"], vecs["cuda"], atol=1e-4)
