"""Speed of encoders.clap_musicgen and of `search --text` with full-size random weights.

The released architecture (facebook/encodec_32khz's EnCodec, MusicGen small's decoder,
roberta-base, the 1024/512 MLP heads) with random weights is saved in the released layout
(``config.json`` + ``model.safetensors``, no sub-model configs) under
``yuhuacheng/clap-musicgen`` in a temporary Hugging Face cache, with a small byte-level
BPE tokenizer under ``yuhuacheng/clap-roberta-finetuned``, and loaded through the
plugin's repo-id path with ``HF_HUB_OFFLINE=1``. Figures are ratios against baselines
measured in the same invocation (these machines are noisy):

1. audio: audio seconds per wall second over generated stereo 44.1 kHz tracks,
   ``musicembed run`` (runs/clap_musicgen.gin: 15 s windows, mean + L2, HDF5 + FAISS)
   vs the plain loop users write (librosa.load at 32 kHz mono, the same modules on 15 s
   chunks one at a time, mean, L2). Target: >= 1.3x.
2. text: the one-off cost of the first ``search --text`` (projector load + index open),
   then queries per second with the projector warm, against a FAISS collection of
   ``--index-size`` vectors (the run's tracks plus random unit vectors of the same space).

    python benchmarks/bench_clap_musicgen.py                 # the issue's sizes (the lead runs it)
    python benchmarks/bench_clap_musicgen.py --quick         # tiny model and sizes: a smoke test
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins/clap-musicgen/tests"))  # checkpoint builder

from bench_logmel import peak_rss_mb  # noqa: E402 - same folder
from benchkit import offline_hf_cache, run_gin, write_library  # noqa: E402 - same folder


def build_checkpoint(cache: Path, work: Path, quick: bool) -> None:
    """Random weights in the released layout, cached under the released repo ids."""
    import torch
    from clap_tiny import REPO_ID, TOKENIZER_ID, load_tokenizer, random_state, write_checkpoint, write_tokenizer

    from musicembed_core.testing import save_to_hub_cache

    write_tokenizer(work / "tokenizer")
    save_to_hub_cache(cache, TOKENIZER_ID, work / "tokenizer")
    if quick:
        vocab = len(load_tokenizer(work / "tokenizer"))
        write_checkpoint(work / "model", random_state(0, vocab), vocab)
    else:
        from safetensors.torch import save_file
        from transformers import EncodecConfig, EncodecModel, MusicgenDecoderConfig, RobertaConfig, RobertaModel
        from transformers.models.musicgen.modeling_musicgen import MusicgenDecoder

        from musicembed_clap_musicgen.model import ENCODEC_32KHZ, MUSICGEN_SMALL_DECODER, ROBERTA_BASE

        torch.manual_seed(0)
        state = {}
        encodec = EncodecModel(EncodecConfig(**ENCODEC_32KHZ))
        for layer in encodec.quantizer.layers:  # zero-initialised codebooks: spread them out
            layer.codebook.embed.normal_()
        parts = (("audio_encoder.encodec.", encodec),
                 ("audio_encoder.transformer.", MusicgenDecoder(MusicgenDecoderConfig(**MUSICGEN_SMALL_DECODER))),
                 ("text_encoder.text_encoder.", RobertaModel(RobertaConfig(**ROBERTA_BASE))))
        for prefix, module in parts:
            state.update({prefix + k: v.detach().contiguous() for k, v in module.state_dict().items()})
        for tower, width in (("audio_encoder.", 1024), ("text_encoder.", 768)):
            head = torch.nn.Sequential(torch.nn.Linear(width, 512), torch.nn.LayerNorm(512), torch.nn.ReLU(),
                                       torch.nn.Linear(512, 512), torch.nn.LayerNorm(512), torch.nn.ReLU(),
                                       torch.nn.Linear(512, 1024))
            state.update({f"{tower}projection.projection.{k}": v.detach().contiguous()
                          for k, v in head.state_dict().items()})
        state["logit_scale_a"] = torch.tensor(4.6)
        state["logit_scale_t"] = torch.tensor(4.6)
        (work / "model").mkdir()
        save_file(state, str(work / "model" / "model.safetensors"), metadata={"format": "pt"})
        (work / "model" / "config.json").write_text(json.dumps({  # the released config's keys
            "architectures": ["CLAPModel"],
            "audio_encoder_config": {"encodec_model_name": "model/encodec",
                                     "musicgen_decoder_model_name": "model/musicgen_decoder",
                                     "projection_dim": 1024, "hidden_dim": 512, "freeze_musicgen": True},
            "text_encoder_config": {"projection_dim": 1024, "hidden_dim": 512, "freeze_text_encoder": True},
            "temp_a": 0.01, "temp_t": 0.01, "torch_dtype": "float32"}))
    save_to_hub_cache(cache, REPO_ID, work / "model")


def run_pipeline(source: Path, out: Path, window: float) -> tuple[float, float, dict]:
    summary = run_gin("runs/clap_musicgen.gin", source, out,
                      [f"encoders.clap_musicgen.window_seconds = {window}"])
    return summary.audio_seconds, summary.wall_seconds, dict(summary.timings)


def plain_loop(files: list[Path], window: float) -> tuple[float, float]:
    """What a user's script does: librosa.load at 32 kHz, the same modules on each window
    one at a time, mean of the window vectors, L2."""
    import librosa
    import torch

    from musicembed_clap_musicgen import ClapMusicgenEncoder
    from musicembed_clap_musicgen.model import build_audio_tower

    enc = ClapMusicgenEncoder(window_seconds=window)
    tower = build_audio_tower(enc.checkpoint(), enc.model).eval()
    n = int(window * 32000)
    t0 = time.perf_counter()
    seconds = 0.0
    with torch.inference_mode():
        for f in files:
            wave, _ = librosa.load(f, sr=32000, mono=True)
            vecs = [tower(torch.from_numpy(wave[i:i + n])[None])[0, 0, 0]
                    for i in range(0, max(len(wave) - n, 0) + 1, n)]
            v = torch.stack(vecs).mean(0)
            _ = (v / v.norm()).numpy()
            seconds += len(wave) / 32000
    return seconds, time.perf_counter() - t0


def text_search(source: Path, out: Path, window: float, index_size: int, queries: int) -> None:
    import numpy as np

    from musicembed_core import Record, ginconfig
    from musicembed_core.outputs import open_sink
    from musicembed_core.pipeline import PreparedEmbedding
    from musicembed_core.runconfig import run_config
    from musicembed_core.search import Query, search

    ginconfig.clear()
    ginconfig.parse(["runs/clap_musicgen.gin"],
                    [f"run.source = '{source}'", f"run.output_dir = '{out}'",
                     f"encoders.clap_musicgen.window_seconds = {window}"])
    cfg = run_config()
    prep = PreparedEmbedding.build(cfg.embeddings[0])
    sink, _ = open_sink(cfg.sinks[0], Path(cfg.output_dir), prep)
    have = sink.count()
    rng = np.random.default_rng(0)
    for start in range(have, index_size, 2000):
        vecs = rng.standard_normal((min(2000, index_size - start), prep.space.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        sink.upsert([Record(f"random/{start + i:06d}", v, f"h{start + i}", {"duration": 180.0})
                     for i, v in enumerate(vecs)])
    sink.close()
    prompts = ["positive jazzy lofi", "fast house edm", "gangsta rap", "dark metal", "calm piano with rain"]
    t0 = time.perf_counter()
    first = search(cfg, Query(text=prompts[0], k=10))
    load_t = time.perf_counter() - t0
    t0 = time.perf_counter()
    for i in range(queries):
        res = search(cfg, Query(text=prompts[i % len(prompts)], k=10))
    warm_t = time.perf_counter() - t0
    print(f"text: `search --text` on a FAISS collection of {index_size} x {prep.space.dim} vectors")
    print(f"  first query (projector load + index open)   {load_t:7.2f} s  ({len(first.hits)} hits)")
    print(f"  warm queries                                 {queries / warm_t:7.2f} queries per s "
          f"({warm_t / queries * 1000:.0f} ms each, index reopened per query as the CLI does; "
          f"last top hit {res.hits[0].id})", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=10, help="generated tracks for the audio test")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each track")
    ap.add_argument("--window", type=float, default=15.0, help="encoder window (s)")
    ap.add_argument("--index-size", type=int, default=20000, help="vectors in the FAISS collection")
    ap.add_argument("--queries", type=int, default=50, help="warm text queries to time")
    ap.add_argument("--quick", action="store_true",
                    help="tiny random model, 2 tracks x 20 s, 2 s windows, 500 vectors: checks the script")
    ap.add_argument("--skip-audio", action="store_true")
    ap.add_argument("--skip-text", action="store_true")
    a = ap.parse_args()
    if a.quick:
        a.tracks, a.minutes, a.window, a.index_size, a.queries = 2, 1 / 3, 2.0, 500, 5

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = offline_hf_cache(tmp)
        t = time.perf_counter()
        build_checkpoint(cache, tmp / "ckpt", a.quick)
        print(f"built a {'tiny' if a.quick else 'full-size'} random-weight checkpoint in "
              f"{time.perf_counter() - t:.0f} s (CPU threads={os.cpu_count()})", flush=True)
        lib = tmp / "lib"
        files = write_library(lib, a.tracks, a.minutes)
        out = tmp / "out"
        if not a.skip_audio:
            print(f"audio: {a.tracks} tracks x {a.minutes:g} min, {a.window:g} s windows", flush=True)
            pipe_s, pipe_t, timings = run_pipeline(lib, out, a.window)
            base_s, base_t = plain_loop(files, a.window)
            print(f"  musicembed run                   {pipe_s / pipe_t:7.3f} audio s per s  ({pipe_t:.0f} s; "
                  f"encoder forward passes {timings.get('encode', 0):.0f} s)")
            print(f"  plain loop ({a.window:g} s chunks, 1 by 1)  {base_s / base_t:7.3f} audio s per s  ({base_t:.0f} s)")
            print(f"  ratio musicembed / plain loop    {(pipe_s / pipe_t) / (base_s / base_t):7.2f}x "
                  "(target >= 1.3x)", flush=True)
        elif not a.skip_text:
            run_pipeline(lib, out, a.window)
        if not a.skip_text:
            text_search(lib, out, a.window, a.index_size, a.queries)
        print(f"peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
