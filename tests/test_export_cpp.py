"""The exported model in C++: build examples/cpp against the LibTorch inside the
installed torch wheel, run it on generated WAV files, and compare its vectors with
the same TorchScript module run from Python and with the pipeline's vectors."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch

from musicembed_core.audio import load_audio
from musicembed_core.builtins import enrichers as E
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.export.torchscript import TorchScriptExporter
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.pipeline import PreparedEmbedding, embed_paths
from musicembed_core.runconfig import EmbeddingSpec
from musicembed_core.testing import REPO

SOURCE = REPO / "examples" / "cpp"
SR = 16000

pytestmark = pytest.mark.slow  # compiling against LibTorch takes ~30 s on 2 cores


def _compiler() -> str | None:
    for cand in (os.environ.get("CXX"), "c++", "g++", "clang++"):
        if cand and shutil.which(cand):
            return shutil.which(cand)
    return None


@pytest.fixture(scope="session")
def embed_binary() -> Path:
    """examples/cpp built (Release) in a cache folder keyed by its sources and torch."""
    cmake, cxx = shutil.which("cmake"), _compiler()
    if cmake is None or cxx is None:
        pytest.skip(f"building the C++ example needs cmake and a C++ compiler "
                    f"(found cmake={cmake}, compiler={cxx})")
    key = hashlib.sha256()
    for name in ("CMakeLists.txt", "embed.cpp"):
        key.update((SOURCE / name).read_bytes())
    key.update(f"{torch.__version__} {torch.utils.cmake_prefix_path} {cxx}".encode())
    cache = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    build = cache / "musicembed-tests" / f"embed-cpp-{key.hexdigest()[:16]}"
    exe = build / "embed"
    if not exe.is_file():
        env = {**os.environ, "CXX": cxx}
        steps = [
            [cmake, "-S", str(SOURCE), "-B", str(build), "-DCMAKE_BUILD_TYPE=Release",
             f"-DCMAKE_PREFIX_PATH={torch.utils.cmake_prefix_path}"],
            [cmake, "--build", str(build), "-j", str(os.cpu_count() or 2)],
        ]
        for cmd in steps:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900,
                                  check=False)
            assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    assert exe.is_file()
    return exe


def _write(path: Path, data: np.ndarray, sr: int, subtype: str | None = None) -> Path:
    if subtype is None:
        write_audio(path, data, sr)  # 16-bit PCM
    else:
        import soundfile as sf

        sf.write(str(path), data, sr, subtype=subtype)
    return path


def _cpp(exe: Path, model: Path, wav: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(exe), str(model), str(wav), *args], capture_output=True, text=True,
                          timeout=300, check=False)


def test_cpp_embedding_equals_python_and_the_pipeline(embed_binary, tmp_path):
    enc = LogMelEncoder(window_seconds=3.0)
    chain = [E.LayersEnricher("all"), E.StatsEnricher(stats=["mean", "std", "iqr"]),
             E.FlattenEnricher(), E.L2NormalizeEnricher()]
    model_path = tmp_path / "model.pt"
    meta = TorchScriptExporter().export(enc, chain, str(model_path))
    files = [
        _write(tmp_path / "stereo16.wav", synth_clip(7.9, SR, seed=1, channels=2), SR),
        _write(tmp_path / "short16.wav", synth_clip(1.2, SR, seed=2), SR),
        _write(tmp_path / "float.wav", synth_clip(4.1, SR, seed=3, channels=2), SR, "FLOAT"),
        _write(tmp_path / "pcm24.wav", synth_clip(3.4, SR, seed=4), SR, "PCM_24"),
    ]
    prep = PreparedEmbedding.build(EmbeddingSpec("logmel", enc, chain))
    stored = {r.job.path.name: r.vectors[0] for r in embed_paths([prep], files)}
    model = torch.jit.load(str(model_path))
    for wav in files:
        proc = _cpp(embed_binary, model_path, wav)
        assert proc.returncode == 0, proc.stderr
        cpp = np.array([float(x) for x in proc.stdout.split()], dtype=np.float32)
        with torch.inference_mode():
            python = model(torch.from_numpy(load_audio(wav, SR))[None])[0].numpy()
        assert cpp.shape == (meta["output"]["dim"],)
        np.testing.assert_allclose(cpp, python, rtol=0, atol=1e-4, err_msg=wav.name)
        np.testing.assert_allclose(cpp, stored[wav.name], rtol=0, atol=1e-4, err_msg=wav.name)
    proc = _cpp(embed_binary, model_path, files[1], "--json")
    out = json.loads(proc.stdout)
    assert out["dim"] == meta["output"]["dim"] and out["sample_rate"] == SR
    np.testing.assert_allclose(out["embedding"], stored["short16.wav"], rtol=0, atol=1e-4)


def test_cpp_refuses_a_wav_at_another_rate(embed_binary, tmp_path):
    model_path = tmp_path / "model.pt"
    TorchScriptExporter(verify=False).export(
        LogMelEncoder(), [E.LayersEnricher([0]), E.MeanEnricher(), E.FlattenEnricher()],
        str(model_path))
    wav = _write(tmp_path / "cd.wav", synth_clip(1.0, 44100, seed=5), 44100)
    proc = _cpp(embed_binary, model_path, wav)
    assert proc.returncode == 2 and proc.stdout == ""
    assert "is 44100 Hz but the model expects 16000 Hz" in proc.stderr
    proc = _cpp(embed_binary, model_path, wav, "--sample-rate", "44100")
    assert proc.returncode == 2 and "exported for 16000 Hz" in proc.stderr
    proc = _cpp(embed_binary, model_path, model_path)
    assert proc.returncode == 2 and "not a RIFF/WAVE file" in proc.stderr
