"""encoders.music2latent against the music2latent package's own EncoderDecoder on the same
weights: frames, frame counts through the whole pipeline, windowing, loading and errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from m2l_tiny import REPO_ID, TINY, random_generator, write_checkpoint
from musicembed_music2latent import Music2LatentEncoder
from musicembed_music2latent.model import frames_for

from musicembed_core.errors import ConfigError
from musicembed_core.hub import ModelLoadError

ATOL = 1e-4  # latents are tanh / 0.06 (|x| < 17): float32 rounding reaches ~2e-5

pytestmark = pytest.mark.filterwarnings("ignore:CUDA is not available")  # the package's autocast


def clip(num_samples: int, seed: int = 0, rate: int = 44100) -> np.ndarray:
    from musicembed_core.examples import synth_clip

    return synth_clip(num_samples / rate + 0.01, rate, seed=seed)[:num_samples].astype(np.float32)


def ours(encoder, wave: np.ndarray) -> torch.Tensor:
    """``[F, D]`` from encoders.music2latent on one mono wave."""
    return encoder.encode(torch.from_numpy(wave)[None])[0, 0]


def theirs(reference, wave: np.ndarray, features: bool = False, max_seconds: float | None = None) -> torch.Tensor:
    """``[F, D]`` from the package's EncoderDecoder.encode on the same wave."""
    kw = {} if max_seconds is None else {"max_waveform_length": int(max_seconds * 44100)}
    return reference.encode(wave, extract_features=features, **kw)[0].t()


def pipeline_frames(encoder, path: Path) -> torch.Tensor:
    """Stitched frames ``[F, D]`` of one file through the real pipeline (decode, chunk, encode, stitch)."""
    from musicembed_core.builtins.enrichers import FlattenEnricher, LayersEnricher, MeanEnricher
    from musicembed_core.pipeline import PreparedEmbedding, embed_paths
    from musicembed_core.runconfig import EmbeddingSpec

    prep = PreparedEmbedding.build(
        EmbeddingSpec("m2l", encoder, [LayersEnricher("all"), MeanEnricher(), FlattenEnricher()]))
    prep.keep_frames = True
    [res] = embed_paths([prep], [path])
    assert res.status == "ok", res.error
    return torch.from_numpy(res.frames[0][0])


# --------------------------------------------------------------------------- parity


@pytest.mark.parametrize("variant", ["latents", "features"])
def test_frames_equal_the_package_encode(tiny, reference, variant):
    enc = Music2LatentEncoder(model=str(tiny.main), variant=variant, window_seconds=5.0)
    wave = clip(44100 * 3 + 1234, seed=1)
    a, b = ours(enc, wave), theirs(reference, wave, features=variant == "features")
    assert a.shape == b.shape == (frames_for(len(wave)), 64 if variant == "latents" else TINY.feature_dim)
    torch.testing.assert_close(a, b, atol=ATOL, rtol=1e-5)


def test_latents_are_scaled_like_the_package(tiny, reference):
    """The latents are the bottleneck's tanh output divided by sigma_rescale (0.06)."""
    enc = Music2LatentEncoder(model=str(tiny.main))
    a = ours(enc, clip(44100, seed=2))
    assert float(a.abs().max()) > 1.0  # beyond tanh's range: scaled
    assert float(a.abs().max()) <= 1.0 / 0.06 + 1e-3


@pytest.mark.parametrize("seconds", [1.0, 2.5])
def test_track_frame_count_equals_the_package_on_the_whole_track(tiny, reference, tmp_path, seconds):
    """Through decode -> chunk -> encode -> stitch, every length around frame and window edges
    gives exactly the frames EncoderDecoder.encode returns on the whole track."""
    from musicembed_core.examples import write_audio

    enc = Music2LatentEncoder(model=str(tiny.main), window_seconds=seconds)
    geo = enc.geometry()
    k = geo.hop_samples // 4096
    lengths = {5632, 9727, 9728, 44100, geo.window_samples - 1, geo.window_samples, geo.window_samples + 1,
               geo.window_samples + 4095, geo.window_samples + 4096, 3 * geo.hop_samples + 1535,
               3 * geo.hop_samples + 1536 + 4095, 3 * geo.hop_samples + 1536 + 4096, 44100 * 5 + 77}
    for n in sorted(lengths):
        path = tmp_path / f"t{n}.wav"
        write_audio(path, clip(n, seed=n % 7), 44100)
        got = pipeline_frames(enc, path).shape[0]
        want = theirs(reference, clip(n, seed=n % 7)).shape[0]
        assert got == want == frames_for(n), f"{n} samples: pipeline {got}, package {want} (k={k})"


def test_chunked_encoding_equals_the_package_chunk_for_chunk(tiny, reference, tmp_path):
    """The pipeline cuts a track where the package cuts it when given the same window
    (max_waveform_length): every full chunk's frames are the package's. The last, partial
    chunk differs by design: the package fills it up to a full window with the track's first
    frames before its group norms take statistics; the pipeline encodes only the remaining
    audio -- exactly the package's encode of that remaining audio on its own."""
    from musicembed_core.audio import load_audio
    from musicembed_core.examples import write_audio

    enc = Music2LatentEncoder(model=str(tiny.main), window_seconds=1.0)
    geo = enc.geometry()
    k = geo.hop_samples // 4096
    n = 3 * geo.hop_samples + 1536 + 4 * 4096 + 100  # three full chunks and a 4-frame tail
    path = tmp_path / "track.wav"
    write_audio(path, clip(n, seed=3), 44100)
    wave = load_audio(path, 44100)
    got = pipeline_frames(enc, path)
    chunked = theirs(reference, wave, max_seconds=1.0)
    assert got.shape == chunked.shape == (3 * k + 4, 64)
    torch.testing.assert_close(got[: 3 * k], chunked[: 3 * k], atol=ATOL, rtol=1e-5)
    tail = theirs(reference, wave[3 * geo.hop_samples:])
    torch.testing.assert_close(got[3 * k:], tail, atol=ATOL, rtol=1e-5)
    # A track of whole chunks only: identical everywhere.
    m = 3 * geo.hop_samples + 1536
    write_audio(path, clip(m, seed=4), 44100)
    got = pipeline_frames(enc, path)
    torch.testing.assert_close(got, theirs(reference, load_audio(path, 44100), max_seconds=1.0),
                               atol=ATOL, rtol=1e-5)


def test_window_snaps_to_the_package_chunk_grid(tiny):
    """window_seconds is cut down to whole frames as the package cuts max_waveform_length."""
    enc = Music2LatentEncoder(model=str(tiny.main), window_seconds=60.0)
    geo = enc.geometry()
    # The package: max_sample_length = (int(2646000 / 512) // 8) * 8 = 5160 STFT frames = 645 latents.
    assert geo.hop_samples == 645 * 4096
    assert geo.window_samples == 645 * 4096 + 1536
    assert geo.overlap_frames == 0 and geo.frame_rate == pytest.approx(44100 / 4096)
    over = Music2LatentEncoder(model=str(tiny.main), window_seconds=10.0, hop_seconds=5.0).geometry()
    assert over.hop_samples == 54 * 4096 and over.overlap_frames == 107 - 54
    with pytest.raises(ConfigError, match="shorter than one latent frame"):
        Music2LatentEncoder(model=str(tiny.main), window_seconds=0.05).geometry()
    with pytest.raises(ConfigError, match="hop_seconds"):
        Music2LatentEncoder(model=str(tiny.main), window_seconds=2.0, hop_seconds=3.0).geometry()


def test_overlapping_windows_stitch_to_the_same_frame_grid(tiny, tmp_path):
    from musicembed_core.examples import write_audio

    path = tmp_path / "t.wav"
    n = 44100 * 4 + 999
    write_audio(path, clip(n, seed=5), 44100)
    enc = Music2LatentEncoder(model=str(tiny.main), window_seconds=2.0, hop_seconds=1.0)
    assert pipeline_frames(enc, path).shape[0] == frames_for(n)


def test_48k_input(tiny, reference):
    """48 kHz in: the same sample-domain framing (11.72 frames/s), a different space."""
    enc48 = Music2LatentEncoder(model=str(tiny.main), sample_rate=48000)
    enc44 = Music2LatentEncoder(model=str(tiny.main))
    assert enc48.geometry().frame_rate == pytest.approx(48000 / 4096)
    assert enc48.signature()["sample_rate"] == 48000 and enc48.signature() != enc44.signature()
    wave = clip(48000 * 2, seed=6, rate=48000)
    torch.testing.assert_close(ours(enc48, wave), theirs(reference, wave), atol=ATOL, rtol=1e-5)


# --------------------------------------------------------------------------- loading


def test_loads_by_repo_id_from_the_offline_cache(offline, reference):
    enc = Music2LatentEncoder()  # the default model: SonyCSLParis/music2latent, main
    assert enc.model == REPO_ID
    assert enc.signature()["weights"] == offline.sha_main
    wave = clip(30000, seed=7)
    torch.testing.assert_close(ours(enc, wave), theirs(reference, wave), atol=ATOL, rtol=1e-5)
    other = Music2LatentEncoder(revision="v2")
    assert other.signature()["weights"] == offline.sha_other
    assert not torch.allclose(ours(other, wave), ours(enc, wave))


def test_numpy1_pickle_names_load(offline, reference):
    """A checkpoint pickled before numpy 2 names the scalar constructor numpy.core.multiarray.scalar."""
    enc = Music2LatentEncoder(revision="numpy1")
    wave = clip(20000, seed=8)
    torch.testing.assert_close(ours(enc, wave), theirs(reference, wave), atol=ATOL, rtol=1e-5)


def test_missing_from_the_offline_cache_says_what_to_do(offline):
    with pytest.raises(ModelLoadError, match="HF_HUB_OFFLINE"):
        Music2LatentEncoder(model="SonyCSLParis/not-cached").geometry()


def test_a_checkpoint_needing_another_global_is_refused(tmp_path):
    """Any global beyond the numpy scalar ones (here: a numpy array) is refused, naming it;
    nothing from the file runs."""
    write_checkpoint(tmp_path / "bad", random_generator(0), stats=np.zeros(3))
    with pytest.raises(ModelLoadError, match=r"refused to load.*_reconstruct"):
        Music2LatentEncoder(model=str(tmp_path / "bad")).geometry()


def test_not_a_music2latent_checkpoint(tmp_path):
    (tmp_path / "x").mkdir()
    torch.save({"state_dict": {"w": torch.zeros(1)}}, tmp_path / "x" / "music2latent.pt")
    with pytest.raises(ModelLoadError, match="gen_state_dict"):
        Music2LatentEncoder(model=str(tmp_path / "x")).geometry()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="lacks music2latent.pt"):
        Music2LatentEncoder(model=str(tmp_path / "empty")).geometry()


def test_weights_that_do_not_fit_are_named(tmp_path):
    gen = random_generator(0)
    state = gen.state_dict()
    del state["encoder.conv_out.bias"]
    path = tmp_path / "cut"
    path.mkdir()
    torch.save({"gen_state_dict": state, "it": 1}, path / "music2latent.pt")
    with pytest.raises(ModelLoadError, match=r"missing 1 tensors: conv_out.bias"):
        Music2LatentEncoder(model=str(path)).load()


def test_bad_parameters_name_the_valid_ones(tiny):
    with pytest.raises(ConfigError, match="variant must be one of latents, features"):
        Music2LatentEncoder(model=str(tiny.main), variant="latent")
    with pytest.raises(ConfigError, match="sample_rate must be one of 44100, 48000"):
        Music2LatentEncoder(model=str(tiny.main), sample_rate=22050)


def test_never_writes_into_site_packages(tiny, offline):
    import music2latent

    models = Path(music2latent.__file__).parent / "models"
    before = models.exists()
    Music2LatentEncoder().load()
    assert models.exists() == before
