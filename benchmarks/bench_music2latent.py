"""Speed, memory and window choice of encoders.music2latent with full-size random weights.

The released architecture (the ``music2latent`` package's ``UNet`` at its own
hyperparameters, 16 M encoder parameters) with random weights is saved as
``music2latent.pt`` in the released layout under ``SonyCSLParis/music2latent`` in a
temporary Hugging Face cache and loaded through the plugin's repo-id path with
``HF_HUB_OFFLINE=1``. Every figure is a ratio against a baseline measured in the
same invocation (these machines are noisy):

1. speed: audio seconds per wall second over generated tracks, ``musicembed run``
   (runs/music2latent.gin: latents, mean + std, HDF5) vs the plain loop users write
   (librosa.load at 44.1 kHz, ``EncoderDecoder.encode`` on the whole track, mean).
2. memory: peak RSS of a fresh process embedding a 30-minute track vs a 1-minute
   track (target: ratio <= 1.5).
3. ``--windows``: per window length, speed and peak RSS of a fresh process on one
   track, and how far its frames and its mean-pooled track vector are from the
   package's own ``encode`` (60 s chunks) on the same audio: the evidence behind
   the default window.

    python benchmarks/bench_music2latent.py                        # the issue's sizes (slow on 2 cores)
    python benchmarks/bench_music2latent.py --tracks 3 --minutes 1 --skip-memory
    python benchmarks/bench_music2latent.py --windows 5,10,20,30,60 --skip-speed --skip-memory
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins/music2latent/tests"))  # checkpoint builder

from bench_logmel import child_rss, memory_test, peak_rss_mb  # noqa: E402 - same folder
from benchkit import offline_hf_cache, run_gin, write_library  # noqa: E402 - same folder

warnings.filterwarnings("ignore", message="CUDA is not available")  # the package's autocast


def build_checkpoint(cache: Path, work: Path) -> Path:
    """Full-size random weights in the released layout, cached as SonyCSLParis/music2latent."""
    from m2l_tiny import REPO_ID, random_generator, write_checkpoint

    from musicembed_core.testing import save_to_hub_cache
    from musicembed_music2latent.model import Sizes

    released = Sizes(base_channels=64, bottleneck_base_channels=512, num_bottleneck_layers=4,
                     bottleneck_channels=64, cond_channels=256)
    path = write_checkpoint(work, random_generator(0, released))
    save_to_hub_cache(cache, REPO_ID, work)
    return path


def reference_model(path: Path):
    from m2l_tiny import package_model

    from musicembed_music2latent.model import Sizes

    return package_model(path, Sizes(64, 512, 4, 64, 256))


def run_pipeline(source: Path, out: Path, params: list[str] = ()) -> tuple[float, float, dict]:
    summary = run_gin("runs/music2latent.gin", source, out, params)
    return summary.audio_seconds, summary.wall_seconds, dict(summary.timings)


def plain_loop(files: list[Path], ref) -> tuple[float, float]:
    """What a user's script does: librosa.load at 44.1 kHz, the package's encode, mean over time."""
    import librosa

    t0 = time.perf_counter()
    seconds = 0.0
    for f in files:
        wave, _ = librosa.load(f, sr=44100, mono=True)
        latent = ref.encode(wave)
        _ = latent[0].mean(-1).cpu().numpy()
        seconds += len(wave) / 44100
    return seconds, time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=10, help="generated tracks for the speed test")
    ap.add_argument("--minutes", type=float, default=3.0, help="length of each track")
    ap.add_argument("--long-minutes", type=float, default=30.0, help="long track for the memory test")
    ap.add_argument("--windows", default="", help="comma-separated window lengths (s) to compare")
    ap.add_argument("--sweep-seconds", type=float, default=120.0, help="track length for --windows")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--skip-memory", action="store_true")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--child-window", type=float, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()

    if a.child:  # fresh process: embed one file, report peak RSS (and keep the frames)
        import numpy as np

        params = ["exporters.hdf5.store_frames = True"]
        if a.child_window:
            params.append(f"encoders.music2latent.window_seconds = {a.child_window}")
        out = Path(a.child).with_suffix(f".out{a.child_window or 0:g}")
        audio_s, wall, timings = run_pipeline(Path(a.child).parent, out, params)
        peak = peak_rss_mb()
        from musicembed_core.stored import open_output

        stored = open_output(out / "music2latent.h5")
        frames = stored.frames(stored.ids[0])[0]
        np.save(out / "frames.npy", frames)
        print(json.dumps({"peak_rss_mb": peak, "audio_seconds": audio_s, "wall": wall,
                          "encode": timings.get("encode", 0.0), "frames": str(out / "frames.npy")}))
        return

    from musicembed_core.examples import synth_clip, write_audio

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = offline_hf_cache(tmp)
        t = time.perf_counter()
        ckpt = build_checkpoint(cache, tmp / "ckpt")
        ref = reference_model(ckpt)
        print(f"built a full-size random-weight checkpoint in {time.perf_counter() - t:.0f} s "
              f"(CPU threads={os.cpu_count()})", flush=True)

        if not a.skip_speed:
            lib = tmp / "lib"
            files = write_library(lib, a.tracks, a.minutes)
            print(f"speed: {a.tracks} tracks x {a.minutes:g} min ({a.tracks * a.minutes:g} min of audio)",
                  flush=True)
            pipe_s, pipe_t, timings = run_pipeline(lib, tmp / "out")
            base_s, base_t = plain_loop(files, ref)
            print(f"  musicembed run (10 s windows)   {pipe_s / pipe_t:7.3f} audio s per s  ({pipe_t:.0f} s; "
                  f"encoder forward passes {timings.get('encode', 0):.0f} s)")
            print(f"  plain loop (package encode)     {base_s / base_t:7.3f} audio s per s  ({base_t:.0f} s)")
            print(f"  ratio musicembed / plain loop   {(pipe_s / pipe_t) / (base_s / base_t):7.2f}x "
                  "(target >= 1.0x)", flush=True)

        if a.windows:
            import numpy as np
            import torch

            from musicembed_core.audio import load_audio

            sweep = tmp / "sweep"
            sweep.mkdir()
            track = sweep / "track.wav"
            write_audio(track, synth_clip(a.sweep_seconds, 44100, seed=11), 44100)
            wave = load_audio(track, 44100)
            t0 = time.perf_counter()
            whole = ref.encode(wave)[0].t()  # [F, 64], the package's 60 s chunks
            ref_t = time.perf_counter() - t0
            ref_vec = whole.mean(0)
            print(f"windows: one {a.sweep_seconds:g} s track; reference = the package's encode "
                  f"(60 s chunks, {a.sweep_seconds / ref_t:.2f} audio s per s)")
            print("  window  audio s/s  peak RSS MB  frame rel. L2 diff (median / p95)  track vector cosine")
            for w in [float(x) for x in a.windows.split(",")]:
                r = child_rss(["--child", str(track), "--child-window", str(w)], __file__, {**os.environ})
                ours = torch.from_numpy(np.load(r["frames"]))
                rel = (ours - whole).norm(dim=1) / whole.norm(dim=1).clamp_min(1e-9)
                cos = torch.nn.functional.cosine_similarity(ours.mean(0), ref_vec, dim=0)
                print(f"  {w:6g}  {r['audio_seconds'] / r['wall']:9.3f}  {r['peak_rss_mb']:11.0f}  "
                      f"{float(rel.median()):14.4f} / {float(rel.quantile(0.95)):.4f}  {float(cos):19.5f}",
                      flush=True)

        if not a.skip_memory:
            memory_test(__file__, "--child", tmp, a.long_minutes, "latents, default window, frames kept")


if __name__ == "__main__":
    main()
