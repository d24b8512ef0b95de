"""How much work a kill -9 costs: tracks re-embedded after a kill at a random moment.

For each flush setting, the same library is embedded into HDF5 + a FAISS index by
`musicembed run` in a subprocess that is killed with SIGKILL at a random moment
(the same moments for every setting); then the run is repeated and its summary
says how many tracks were done again. Also checked after every rerun: nothing
lost (every track stored once in every output) and nothing duplicated.

Settings compared in the same invocation:

* ``at close only``: ``run.flush_every_tracks`` / ``_seconds`` effectively
  infinite: the behaviour before durable progress (sinks written at close, HDF5
  on its own 64-record checkpoints);
* ``default``: 64 tracks or 30 s, whichever first;
* ``every 2 s``: a short time bound, what a heavy model run gets from the 30 s
  default relative to its much slower tracks.

    python benchmarks/bench_kill_resume.py [--tracks 300] [--seconds 8] [--kills 5]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SETTINGS = {
    "at close only": ["run.flush_every_tracks = 1000000000", "run.flush_every_seconds = 1e9"],
    "default (64 tracks / 30 s)": [],
    "every 2 s": ["run.flush_every_seconds = 2.0"],
}


def make_library(folder: Path, tracks: int, seconds: float) -> None:
    from musicembed_core.examples import synth_clip, write_audio

    for i in range(tracks):
        write_audio(folder / f"{i // 50:02d}" / f"t{i:04d}.wav", synth_clip(seconds, 16000, seed=i), 16000)


def command(source: Path, out: Path, extra: list[str]) -> list[str]:
    params = [
        f"run.source = '{source}'",
        f"run.output_dir = '{out}'",
        "run.sinks = [@sinks.faiss()]",
        "sinks.faiss.path = '{output_dir}/faiss'",
        *extra,
    ]
    cmd = [sys.executable, "-m", "musicembed_core", "run", "--gin_file", "runs/quickstart.gin",
           "--no-progress", "--json"]
    for p in params:
        cmd += ["--gin_param", p]
    return cmd


def full_run_seconds(source: Path, work: Path) -> float:
    out = work / "timing"
    t0 = time.perf_counter()
    subprocess.run(command(source, out, []), check=True, capture_output=True, cwd=work)
    return time.perf_counter() - t0


def stored_ids(out: Path) -> tuple[list[str], list[str]]:
    from musicembed_core.builtins.hdf5 import read_hdf5
    from musicembed_faiss import FaissSink

    from musicembed_core import EmbeddingSpace

    h5 = read_hdf5(str(out / "logmel.h5"))
    space = EmbeddingSpace.from_json(json.dumps(h5["space"]))
    sink = FaissSink(path=str(out / "faiss"))
    sink.open("logmel", space, readonly=True)
    faiss_ids = list(sink.known())
    sink.close()
    return list(h5["ids"]), faiss_ids


def one_kill(source: Path, work: Path, extra: list[str], kill_at: float, tracks: int) -> dict:
    out = work / f"out-{time.monotonic_ns()}"
    proc = subprocess.Popen(command(source, out, extra), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, cwd=work)
    time.sleep(kill_at)
    killed = proc.poll() is None
    if killed:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    rerun = subprocess.run(command(source, out, extra), capture_output=True, text=True, cwd=work)
    summary = json.loads(rerun.stdout)
    h5_ids, faiss_ids = stored_ids(out)
    return {
        "killed": killed,
        "redone": summary["files_ok"],
        "kept": summary["files_skipped"],
        "lost": tracks - len(set(h5_ids) & set(faiss_ids)),
        "duplicated": (len(h5_ids) - len(set(h5_ids))) + (len(faiss_ids) - len(set(faiss_ids))),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=300)
    ap.add_argument("--seconds", type=float, default=8.0)
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="musicembed-kill-") as tmp:
        work = Path(tmp)
        source = work / "lib"
        make_library(source, args.tracks, args.seconds)
        full = full_run_seconds(source, work)
        rng = random.Random(args.seed)
        # kill after start-up (about 2 s) and before the end
        moments = [rng.uniform(min(2.0, 0.3 * full), 0.9 * full) for _ in range(args.kills)]
        print(f"{args.tracks} tracks x {args.seconds:g} s, full run {full:.1f} s; kills at "
              + ", ".join(f"{m:.1f}" for m in moments) + " s")
        results: dict[str, list[dict]] = {}
        for name, extra in SETTINGS.items():
            results[name] = [one_kill(source, work, extra, m, args.tracks) for m in moments]
        base = statistics.mean(r["redone"] for r in results["at close only"])
        print("kept = tracks the rerun found durable and skipped; redone = tracks it embedded "
              "(same kill moments for every setting, so a higher 'kept' is work a kill no "
              "longer costs)")
        print(f"{'setting':<30} {'kills':>5} {'kept (mean)':>12} {'redone (mean)':>14} "
              f"{'redone vs close-only':>21} {'lost':>5} {'dup':>4}")
        for name, rows in results.items():
            mean = statistics.mean(r["redone"] for r in rows)
            kept = statistics.mean(r["kept"] for r in rows)
            print(f"{name:<30} {sum(r['killed'] for r in rows):>5} {kept:>12.1f} {mean:>14.1f} "
                  f"{(mean / base if base else float('nan')):>21.2f} "
                  f"{sum(r['lost'] for r in rows):>5} {sum(r['duplicated'] for r in rows):>4}")


if __name__ == "__main__":
    main()
