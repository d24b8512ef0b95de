"""A library of many short files: per-file overhead and pipeline vs plain loop.

Writes ``--files`` clips of ``--seconds`` each (16 kHz mono WAV and 44.1 kHz
stereo FLAC, alternating, in folders of 100), then in one invocation:

1. the plain loop (``load_audio`` + one ``logmel`` call + mean/std per file),
2. ``musicembed run`` into HDF5 (in-process, like ``bench_logmel.py``),
3. the same run again, every file already done (what a nightly rerun costs).

It prints the ratio pipeline / plain loop and the per-file overhead in ms/file
from the run's own time split: hashing, writing (records, HDF5 segments and the
final consolidation), start-up, and the all-skipped rerun (stat + hash cache +
``known()`` lookup per file).

    python benchmarks/bench_many_files.py [--files 2000] [--seconds 10]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import bench_logmel as bl  # noqa: E402 - same folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=2000)
    ap.add_argument("--seconds", type=float, default=10.0)
    a = ap.parse_args()
    from musicembed_core.examples import synth_clip, write_audio

    with tempfile.TemporaryDirectory(prefix="musicembed-many-") as tmp:
        tmp = Path(tmp)
        lib = tmp / "lib"
        t0 = time.perf_counter()
        clips = {sr: synth_clip(a.seconds, sr, seed=sr, channels=1 if sr == 16000 else 2)
                 for sr in (16000, 44100)}
        for i in range(a.files):
            sr, ext = (16000, ".wav") if i % 2 == 0 else (44100, ".flac")
            write_audio(lib / f"{i // 100:03d}" / f"c{i:05d}{ext}", clips[sr], sr)
        files = sorted(lib.rglob("c*.*"))
        print(f"{a.files} files x {a.seconds:g} s written in {time.perf_counter() - t0:.0f} s", flush=True)
        bl.plain_loop(files[:2])
        base_s, base_t = bl.plain_loop(files)
        pipe_s, pipe_t = bl.run_pipeline(lib, tmp / "out")
        split = dict(bl.LAST_TIMINGS)
        t1 = time.perf_counter()
        _, again_t = bl.run_pipeline(lib, tmp / "out")
        rerun_wall = time.perf_counter() - t1
        n = a.files
        print(f"  plain loop           {base_s / base_t:8.1f}x realtime  ({base_t:.1f} s)")
        print(f"  musicembed pipeline  {pipe_s / pipe_t:8.1f}x realtime  ({pipe_t:.1f} s)")
        print(f"  ratio pipeline / plain loop: {(pipe_s / pipe_t) / (base_s / base_t):.2f} (target >= 1.5)")
        print("  per-file overhead (ms/file): "
              f"hashing {1000 * split.get('hash', 0) / n:.2f} (decode threads), "
              f"writing incl. HDF5 segments and consolidation {1000 * split.get('write', 0) / n:.2f}, "
              f"start-up {1000 * split.get('startup', 0) / n:.2f}; "
              f"all-skipped rerun {1000 * rerun_wall / n:.2f} ({rerun_wall:.1f} s in all)")
        print("  time split of the first run (s): "
              + ", ".join(f"{k} {v:.2f}" for k, v in sorted(split.items())))


if __name__ == "__main__":
    main()
