"""Speed and memory of the pipeline with full-size MERT-v1-95M and music2vec.

Both models are built at their released size with random weights (no download
here), saved in the hub layout under their real repo ids in a temporary
Hugging Face cache, and loaded through the plugins' real repo-id path with
``HF_HUB_OFFLINE=1``. Every figure is a ratio against a baseline measured in the
same invocation (these machines are noisy):

1. speed: audio seconds per wall second for a folder of generated tracks,
   musicembed (both encoders in one pass: each file decoded once, resampled
   once per model rate, windows of 5 s / 30 s, mean pooling) vs the plain loop
   users write (for each model: load + resample the file, call the transformers
   model on the whole track, mean-pool). With ``--separate`` also the pipeline
   with one encoder per run, to show the decode cost paid once.
2. memory: peak RSS of a fresh process embedding one long track with MERT-95M
   vs a 1-minute track (target: ratio <= 1.5).

    python benchmarks/bench_encoders.py                       # the issue's sizes (slow on 2 cores)
    python benchmarks/bench_encoders.py --tracks 2 --minutes 3 --separate --skip-memory
    python benchmarks/bench_encoders.py --hide --tracks 3 --minutes 1   # wall vs forward passes
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
for plugin_tests in ("plugins/mert/tests", "plugins/music2vec/tests"):  # checkpoint builders
    sys.path.insert(0, str(REPO / plugin_tests))

from bench_logmel import memory_test, peak_rss_mb  # noqa: E402 - same folder
from benchkit import offline_hf_cache, run_gin, write_library  # noqa: E402 - same folder

MERT_ID, M2V_ID = "m-a-p/MERT-v1-95M", "m-a-p/music2vec-v1"


def build_checkpoints(cache: Path, work: Path) -> dict[str, tuple[object, int, bool]]:
    """Full-size random-weight checkpoints in the hub cache; returns reference models.

    ``{repo_id: (transformers model, sample_rate, normalise_input)}``
    """
    import torch
    from mert_checkpoints import RELEASED_V1_95M, make_checkpoint, preprocessor
    from music2vec_tiny import released_config, write_folder
    from transformers import Data2VecAudioConfig, Data2VecAudioModel

    from musicembed_core.testing import save_to_hub_cache

    mert = make_checkpoint(work / "mert", MERT_ID, dict(RELEASED_V1_95M), preprocessor(24000, False), seed=0)
    save_to_hub_cache(cache, MERT_ID, mert.folder)

    torch.manual_seed(1)
    cfg = released_config()
    m2v = Data2VecAudioModel(Data2VecAudioConfig(**{k: v for k, v in cfg.items() if k != "vocab_size"})).eval()
    write_folder(work / "m2v", cfg, {k: v.contiguous() for k, v in m2v.state_dict().items()})
    save_to_hub_cache(cache, M2V_ID, work / "m2v")
    return {MERT_ID: (mert.reference, 24000, False), M2V_ID: (m2v, 16000, True)}


def run_pipeline(source: Path, out: Path, which: tuple[str, ...] = ("mert", "music2vec")) -> tuple[float, float]:
    embeddings = ", ".join(f"@{w}/embedding()" for w in which)
    summary = run_gin(
        "runs/mert_music2vec.gin",  # shipped by musicembed-mert
        source, out,
        [f"run.embeddings = [{embeddings}]",
         "mert/embedding.enrichers = [@enrichers.mean(), @enrichers.flatten()]",
         "music2vec/embedding.enrichers = [@enrichers.mean(), @enrichers.flatten()]"],
    )
    LAST_TIMINGS.clear()
    LAST_TIMINGS.update(summary.timings)
    return summary.audio_seconds, summary.wall_seconds


LAST_TIMINGS: dict[str, float] = {}


def print_split(wall: float) -> None:
    """Where a pipeline run's time went, and how much of it was not the model."""
    t = LAST_TIMINGS
    encode = t.get("encode", 0.0)
    print(f"  end-to-end wall {wall:.1f} s, encoder forward passes {encode:.1f} s: "
          f"wall / encode = {wall / encode:.3f} (target <= 1.15)")
    main = ("startup", "encode", "pool", "write", "wait")
    side = ("hash", "decode", "resample")
    print("  main thread: " + ", ".join(f"{k} {t.get(k, 0.0):.2f} s" for k in main))
    print("  decode threads (summed): " + ", ".join(f"{k} {t.get(k, 0.0):.2f} s" for k in side))


def plain_loop(files: list[Path], models: dict) -> tuple[float, float]:
    """What a user's script does: per model, load + resample the file, whole track in one call."""
    import librosa
    import torch

    t0 = time.perf_counter()
    seconds = 0.0
    for f in files:
        for model, sr, normalise in models.values():
            wave, _ = librosa.load(f, sr=sr, mono=True)
            x = torch.from_numpy(wave)[None]
            if normalise:
                x = (x - x.mean()) / torch.sqrt(x.var(unbiased=False) + 1e-7)
            with torch.inference_mode():
                states = model(x, output_hidden_states=True).hidden_states
                _ = torch.stack(states)[:, 0].mean(1).flatten().numpy()
        seconds += librosa.get_duration(path=f)
    return seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=10, help="generated tracks for the speed test")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each track")
    ap.add_argument("--long-minutes", type=float, default=30.0, help="long track for the memory test")
    ap.add_argument("--separate", action="store_true", help="also time one encoder per pipeline run")
    ap.add_argument("--repeat", type=int, default=1, help="interleaved repeats (best of each)")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--hide", action="store_true",
                    help="MERT-95M alone: how close end-to-end wall time is to the encoder's own "
                    "forward passes in the same run, and the time split")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.rss_child:  # child: embed one file with MERT-95M only, report peak RSS
        with tempfile.TemporaryDirectory() as tmp:
            audio_s, wall = run_pipeline(Path(a.rss_child), Path(tmp) / "out", ("mert",))
        peak = peak_rss_mb()
        print(json.dumps({"peak_rss_mb": peak, "audio_seconds": audio_s, "wall": wall}))
        return

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = offline_hf_cache(tmp)
        t = time.perf_counter()
        models = build_checkpoints(cache, tmp / "ckpt")
        print(f"built full-size random-weight checkpoints in {time.perf_counter() - t:.0f} s", flush=True)

        if a.hide:
            lib = tmp / "hide-lib"
            write_library(lib, a.tracks, a.minutes, exts=(".flac",))
            print(f"hiding everything but the model: {a.tracks} tracks x {a.minutes:g} min, MERT-95M "
                  "alone (5 s windows, batch 8)", flush=True)
            _, wall = run_pipeline(lib, tmp / "out-hide", ("mert",))
            print_split(wall)
            return

        if not a.skip_speed:
            lib = tmp / "lib"
            files = write_library(lib, a.tracks, a.minutes)
            total_min = a.tracks * a.minutes
            print(f"speed: {a.tracks} tracks x {a.minutes:g} min ({total_min:g} min of audio), "
                  f"MERT-95M + music2vec, CPU threads={os.cpu_count()}", flush=True)
            # Interleaved repeats, best of each: other load on the machine hits all alike.
            pipe_t = sep_t = base_t = float("inf")
            for r in range(a.repeat):
                pipe_s, t = run_pipeline(lib, tmp / f"out{r}")
                pipe_t = min(pipe_t, t)
                if a.separate:
                    _, t1 = run_pipeline(lib, tmp / f"out{r}-mert", ("mert",))
                    _, t2 = run_pipeline(lib, tmp / f"out{r}-m2v", ("music2vec",))
                    sep_t = min(sep_t, t1 + t2)
                base_s, t = plain_loop(files, models)
                base_t = min(base_t, t)
            print(f"  musicembed, both in one pass  {pipe_s / pipe_t:7.3f} audio s per s  ({pipe_t:.0f} s)")
            if a.separate:
                print(f"  musicembed, one model per run {pipe_s / sep_t:7.3f} audio s per s  "
                      f"({sep_t:.0f} s; one pass saves {100 * (1 - pipe_t / sep_t):.0f}%)")
            print(f"  plain loop, whole tracks      {base_s / base_t:7.3f} audio s per s  ({base_t:.0f} s)")
            print(f"  ratio musicembed / plain loop {(pipe_s / pipe_t) / (base_s / base_t):7.2f}x "
                  f"(target >= 1.3x)", flush=True)

        if not a.skip_memory:
            memory_test(__file__, "--rss-child", tmp, a.long_minutes, "MERT-95M, 5 s windows")


if __name__ == "__main__":
    main()
