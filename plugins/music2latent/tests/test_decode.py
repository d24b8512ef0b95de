"""`musicembed decode`: latents stored by a real `musicembed run` back to WAV files, equal to
the package's own decode of its own latents; refusals name the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from musicembed_core.testing import run_cli, subprocess_env

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")  # the package's autocast


@pytest.fixture(scope="session")
def library(tmp_path_factory) -> Path:
    """Two clips at 44.1 kHz (no resampling: the package reads the same samples), one stereo."""
    from musicembed_core.examples import synth_clip, write_audio

    lib = tmp_path_factory.mktemp("m2l-lib")
    write_audio(lib / "a.wav", synth_clip(1.5, 44100, seed=1), 44100)
    (lib / "sub").mkdir()
    write_audio(lib / "sub" / "b.wav", synth_clip(2.2, 44100, seed=2, channels=2), 44100)
    return lib


def env_for(tiny) -> dict[str, str]:
    return subprocess_env(HF_HUB_OFFLINE="1", HF_HUB_CACHE=str(tiny.cache))


def run(tiny, library: Path, out: Path, *params: str) -> Path:
    args = ["run", "--gin_file", "runs/music2latent.gin",
            "--gin_param", f"run.source = '{library}'", "--gin_param", f"run.output_dir = '{out}'",
            "--gin_param", "encoders.music2latent.window_seconds = 3.0"]
    for p in params:
        args += ["--gin_param", p]
    run_cli(*args, env=env_for(tiny))
    return out


@pytest.fixture(scope="session")
def latents_h5(tiny, library, tmp_path_factory) -> Path:
    return run(tiny, library, tmp_path_factory.mktemp("m2l-run")) / "music2latent.h5"


def spectral_similarity(a: np.ndarray, b: np.ndarray) -> float:
    """Correlation of log-magnitude spectrograms (1 = same spectral shape)."""
    n = min(len(a), len(b))
    spec = [torch.stft(torch.from_numpy(x[:n].astype(np.float32)), 2048, 512, window=torch.hann_window(2048),
                       return_complex=True).abs().add(1e-5).log().flatten() for x in (a, b)]
    return float(torch.corrcoef(torch.stack(spec))[0, 1])


def test_decode_writes_one_wav_per_track_equal_to_the_package_decode(tiny, reference, library, latents_h5,
                                                                      tmp_path):
    from musicembed_core.audio import load_audio
    from musicembed_core.stored import open_output

    out = tmp_path / "decoded"
    proc = run_cli("decode", str(latents_h5), "-o", str(out), "--subtype", "FLOAT", env=env_for(tiny))
    assert "decoded 2 track(s)" in proc.stderr
    stored = open_output(latents_h5)
    for track_id, rel in (("a.wav", "a.wav"), ("sub/b.wav", "sub/b.wav")):
        wave, rate = sf.read(out / rel, dtype="float32")
        frames = stored.frames(track_id)[0]  # [F, 64]
        assert rate == 44100 and wave.ndim == 1
        assert len(wave) == frames.shape[0] * 4096 + 1536  # the package's cropped input length
        assert np.isfinite(wave).all() and np.abs(wave).max() <= 1.0
        # The package, end to end on the same audio: its encode, then its decode (same seed).
        source = load_audio(library / track_id, 44100)
        latent = reference.encode(source)
        np.testing.assert_allclose(latent[0].t().numpy(), frames, atol=1e-4)
        torch.manual_seed(0)
        expected = reference.decode(latent)[0].numpy()
        np.testing.assert_allclose(wave, expected, atol=1e-5)
        # Random weights: no fidelity to expect, only a well-defined measure.
        assert -1.0 <= spectral_similarity(source, wave) <= 1.0


def test_more_denoising_steps_and_another_seed_change_the_audio(tiny, latents_h5, tmp_path):
    env = env_for(tiny)
    run_cli("decode", str(latents_h5), "-o", str(tmp_path / "one"), "--id", "a.wav", env=env)
    run_cli("decode", str(latents_h5), "-o", str(tmp_path / "two"), "--id", "a.wav", "--denoising-steps", "2",
            env=env)
    run_cli("decode", str(latents_h5), "-o", str(tmp_path / "seed"), "--id", "a.wav", "--seed", "7", env=env)
    one, two, seed = (sf.read(tmp_path / d / "a.wav")[0] for d in ("one", "two", "seed"))
    assert len(one) == len(two) == len(seed)
    assert not np.array_equal(one, two) and not np.array_equal(one, seed)
    assert not (tmp_path / "one" / "sub").exists()  # --id: that track only


def test_existing_files_are_kept_unless_overwrite(tiny, latents_h5, tmp_path):
    out = tmp_path / "d"
    (out / "sub").mkdir(parents=True)
    (out / "sub" / "b.wav").write_bytes(b"mine")
    proc = run_cli("decode", str(latents_h5), "-o", str(out), env=env_for(tiny))
    assert "skipped 1 existing" in proc.stderr
    assert (out / "sub" / "b.wav").read_bytes() == b"mine" and (out / "a.wav").is_file()
    run_cli("decode", str(latents_h5), "-o", str(out), "--overwrite", env=env_for(tiny))
    assert sf.info(out / "sub" / "b.wav").samplerate == 44100


def test_unknown_id_is_named(tiny, latents_h5, tmp_path):
    proc = run_cli("decode", str(latents_h5), "-o", str(tmp_path), "--id", "nope.wav", env=env_for(tiny),
                   check=False)
    assert proc.returncode != 0 and "'nope.wav' is not in" in proc.stderr


def test_features_are_refused(tiny, library, tmp_path):
    out = run(tiny, library, tmp_path / "feat", "music2latent_latents/encoders.music2latent.variant = 'features'")
    proc = run_cli("decode", str(out / "music2latent.h5"), "-o", str(tmp_path / "d"), env=env_for(tiny),
                   check=False)
    assert proc.returncode != 0
    assert "features" in proc.stderr and "cannot be decoded" in proc.stderr
    assert not (tmp_path / "d").exists()


def test_vectors_without_frames_say_how_to_keep_them(tiny, library, tmp_path):
    out = run(tiny, library, tmp_path / "noframes", "exporters.hdf5.store_frames = False")
    proc = run_cli("decode", str(out / "music2latent.h5"), "-o", str(tmp_path / "d"), env=env_for(tiny),
                   check=False)
    assert proc.returncode != 0 and "store_frames" in proc.stderr


def test_other_encoders_are_refused(tiny, tmp_path, example_dir):
    out = tmp_path / "q"
    run_cli("run", "--gin_file", "runs/quickstart.gin", "--gin_param", f"run.source = '{example_dir}'",
            "--gin_param", f"run.output_dir = '{out}'", env=env_for(tiny))
    proc = run_cli("decode", str(out / "logmel.h5"), "-o", str(tmp_path / "d"), env=env_for(tiny), check=False)
    assert proc.returncode != 0 and "decodes encoders.music2latent latents only" in proc.stderr


def test_safetensors_output_with_frames_decodes(tiny, library, latents_h5, tmp_path):
    out = run(tiny, library, tmp_path / "st", "run.exporters = [@exporters.safetensors()]",
              "exporters.safetensors.store_frames = True")
    run_cli("decode", str(out / "music2latent.safetensors"), "-o", str(tmp_path / "d"), "--subtype", "FLOAT",
            env=env_for(tiny))
    run_cli("decode", str(latents_h5), "-o", str(tmp_path / "h"), "--subtype", "FLOAT", env=env_for(tiny))
    from musicembed_core.stored import open_output

    # Two separate runs: the latents agree to float rounding (batch composition and thread count may
    # change the reduction order), so the decoded audio agrees to the same tolerance as the package check.
    st, h5 = open_output(out / "music2latent.safetensors"), open_output(latents_h5)
    for rel in ("a.wav", "sub/b.wav"):
        np.testing.assert_allclose(st.frames(rel)[0], h5.frames(rel)[0], rtol=0, atol=1e-5)
        np.testing.assert_allclose(sf.read(tmp_path / "d" / rel)[0], sf.read(tmp_path / "h" / rel)[0],
                                   rtol=0, atol=1e-5)


def test_help_explains(tiny):
    proc = run_cli("decode", "--help", env=env_for(tiny))
    for word in ("LATENTS", "store_frames", "--denoising-steps", "--seed", "Example"):
        assert word in proc.stdout
