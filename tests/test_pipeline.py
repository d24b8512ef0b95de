"""The streaming pipeline: chunking, batching, stitching, one decode per file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from musicembed_core import Encoder, audio
from musicembed_core.builtins import enrichers as E
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.chain import EnricherChain, enrich_whole
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.pipeline import Embedder, Job, PreparedEmbedding, _Chunker, embed_paths
from musicembed_core.runconfig import EmbeddingSpec


def chunks_of(n: int, window: int, hop: int, min_len: int, block: int = 7) -> list[int]:
    ch = _Chunker(window, hop, min_len)
    sizes = []
    x = np.arange(n, dtype=np.float32)
    for i in range(0, n, block):
        sizes += [c.size for c in ch.push(x[i:i + block])]
    sizes += [c.size for c in ch.finish()]
    return sizes


def test_chunker_geometry():
    assert chunks_of(100, 40, 40, 5) == [40, 40, 20]
    assert chunks_of(82, 40, 40, 5) == [40, 40]          # 2-sample tail < min_len: dropped
    assert chunks_of(30, 40, 40, 5) == [30]              # shorter than a window: whole
    assert chunks_of(3, 40, 40, 5) == [5]                # shorter than min_len: repeated up to it
    assert chunks_of(100, 40, 20, 5) == [40, 40, 40, 40]  # overlap: last tail has 20 fresh samples
    assert chunks_of(0, 40, 40, 5) == []


def test_chunker_content_is_contiguous():
    ch = _Chunker(10, 10, 1)
    x = np.arange(35, dtype=np.float32)
    out = list(ch.push(x[:13])) + list(ch.push(x[13:])) + list(ch.finish())
    assert np.array_equal(np.concatenate(out), x)


def prepared(encoder: Encoder, chain=None, name=None) -> PreparedEmbedding:
    chain = chain or [E.LayersEnricher(), E.MeanEnricher(), E.FlattenEnricher()]
    return PreparedEmbedding.build(EmbeddingSpec(name or encoder.name, encoder, chain))


def test_clip_shorter_than_the_window_equals_the_whole_clip(tmp_path):
    path = tmp_path / "short.flac"
    write_audio(path, synth_clip(4.0, 44100, seed=3, channels=2), 44100)
    enc = LogMelEncoder(window_seconds=10.0)
    prep = prepared(enc, [E.LayersEnricher(), E.StatsEnricher(stats=["mean", "iqr", "delta_mean"]),
                          E.FlattenEnricher()])
    [res] = embed_paths([prep], [path])
    assert res.status == "ok"
    wave = torch.from_numpy(audio.load_audio(path, 16000))[None]
    whole = enrich_whole(EnricherChain(prep.spec.enrichers), enc.encode(wave)[:, 0])
    assert torch.allclose(torch.from_numpy(res.vectors[0]), whole, atol=1e-5)


class CountingEncoder(Encoder):
    """A real (deterministic) encoder that records the batches it sees."""

    name = "counting"

    def __init__(self, window_seconds: float = 1.0, sample_rate: int = 8000):
        self.window_seconds = window_seconds
        self.sample_rate = sample_rate
        self.frame_rate = 10.0
        self.num_layers = 2
        self.dim = 3
        self.batches: list[tuple[int, int]] = []

    def encode(self, wave):
        self.batches.append(tuple(wave.shape))
        b, t = wave.shape
        frames = max(1, t * 10 // self.sample_rate)
        x = wave[:, : frames * (t // frames)].reshape(b, frames, -1)
        feats = torch.stack([x.mean(-1), x.abs().amax(-1), x.std(-1, unbiased=False)], -1)
        return torch.stack([feats, 2 * feats])


def test_batches_only_hold_equal_lengths_and_frames_stitch_in_order(tmp_path):
    paths = []
    for i, secs in enumerate([3.5, 2.25, 5.0, 0.5]):
        p = tmp_path / f"t{i}.wav"
        write_audio(p, synth_clip(secs, 8000, seed=i), 8000)
        paths.append(p)
    enc = CountingEncoder()
    chain = [E.LayersEnricher(), E.StatsEnricher(stats=["mean", "delta_mean"]), E.FlattenEnricher()]
    prep = prepared(enc, chain)
    prep.keep_frames = True
    emb = Embedder([prep], batch_size=3, decode_workers=2)
    results = {r.job.path.name: r for r in emb.embed([Job(p, p.name) for p in paths])}
    assert all(r.status == "ok" for r in results.values())
    for shape in enc.batches:
        assert shape[1] in (8000, 4000, 2000)  # full windows or one tail per batch
    for b, t in enc.batches:
        if t != 8000:
            assert b == 1
    # Streaming result == whole-track reference on the stitched frames.
    for p in paths:
        r = results[p.name]
        frames = torch.from_numpy(r.frames[0])
        ref = enrich_whole(EnricherChain(chain), frames)
        assert torch.allclose(torch.from_numpy(r.vectors[0]), ref, atol=1e-5)
        wave = audio.load_audio(p, 8000)
        assert frames.shape[1] == sum(
            max(1, n * 10 // 8000) for n in [8000] * (wave.size // 8000) + ([wave.size % 8000] if wave.size % 8000 else [])
        )


def test_several_embeddings_decode_each_file_once(tmp_path, monkeypatch):
    paths = []
    for i in range(3):
        p = tmp_path / f"t{i}.flac"
        write_audio(p, synth_clip(3.0, 44100, seed=i, channels=2), 44100)
        paths.append(p)
    calls = []
    real = audio.stream_resampled

    def counting(path, rates, *a, **k):
        calls.append((Path(path).name, tuple(sorted(rates))))
        return real(path, rates, *a, **k)

    monkeypatch.setattr(audio, "stream_resampled", counting)
    a = prepared(LogMelEncoder(sample_rate=16000), name="a")
    b = prepared(LogMelEncoder(sample_rate=22050, window_seconds=2.0), name="b")
    c = prepared(CountingEncoder(sample_rate=16000), name="c")
    results = list(Embedder([a, b, c], batch_size=2).embed([Job(p, p.name) for p in paths]))
    assert sorted(calls) == sorted((p.name, (16000, 22050)) for p in paths)
    assert all(r.status == "ok" and set(r.vectors) == {0, 1, 2} for r in results)


class FailingOnLoud(CountingEncoder):
    name = "failing"

    def encode(self, wave):
        if float(wave.abs().max()) > 0.95:
            raise RuntimeError("clipping input")
        return super().encode(wave)


def test_an_encoder_error_fails_only_the_tracks_in_that_batch(tmp_path):
    ok = tmp_path / "ok.wav"
    loud = tmp_path / "loud.wav"
    write_audio(ok, 0.5 * synth_clip(2.0, 8000, seed=1), 8000)
    write_audio(loud, np.clip(3 * synth_clip(2.0, 8000, seed=2), -0.99, 0.99), 8000)
    prep = prepared(FailingOnLoud())
    results = {r.job.path.name: r for r in Embedder([prep], batch_size=1).embed(
        [Job(loud, "loud"), Job(ok, "ok")])}
    assert results["ok.wav"].status == "ok"
    assert results["loud.wav"].status == "failed"
    assert "clipping input" in results["loud.wav"].error


def test_known_unchanged_files_are_not_decoded(tmp_path, monkeypatch):
    p = tmp_path / "t.wav"
    write_audio(p, synth_clip(1.0, 8000), 8000)
    prep = prepared(CountingEncoder())
    first = list(Embedder([prep]).embed([Job(p, "t.wav")]))[0]
    monkeypatch.setattr(audio, "stream_resampled", lambda *a, **k: pytest.fail("decoded again"))
    again = list(Embedder([prep], known=[{"t.wav": first.content_hash}]).embed([Job(p, "t.wav")]))
    assert again[0].status == "skipped"
