"""``run.engine = "ray"`` against the local pipeline, in one invocation, on this machine.

For two encoders (the built-in logmel, and a random-weight MERT built by the mert plugin's
test helpers, loaded through the plugin's real repo-id path with ``HF_HUB_OFFLINE=1``) over
the same generated folder:

* wall time of the local pipeline, and of Ray with 1 and 2 encoder actors, as ratios to
  the local run (> 1: Ray is slower), plus x realtime;
* the per-track overhead Ray adds (logmel): the slope of wall time over tracks (the
  folder vs a 4-track one), Ray minus local, so the fixed costs (actor start, model
  load) cancel out;
* Ray's fixed costs: ``ray.init`` of a local instance, and a 4-track run.

Every Ray run attaches to one local Ray instance started here (``num_cpus`` = this
machine's cores); actors and decode tasks share them (``run.ray_num_cpus`` is split so
both fit). On one machine Ray cannot beat the local pipeline (same cores, plus
serialisation); the figures say what it costs, the point is many machines.

    python benchmarks/bench_ray.py --quick      # ~1-2 minutes on 2 cores
    python benchmarks/bench_ray.py --ray-param 'run.ray_files_per_task = 16'   # try a setting
    python benchmarks/bench_ray.py              # 24 tracks x 30 s, a larger random MERT
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "plugins" / "mert" / "tests"))  # tiny checkpoint builders

from benchkit import offline_hf_cache, run_gin  # noqa: E402 - same folder

MERT_ID = "m-a-p/MERT-v1-95M"
FEW = 4
"""Tracks of the small folder the per-track slope is measured against."""


def build_mert(cache: Path, work: Path, quick: bool) -> None:
    """A random-weight MERT (95M layout, shrunk) in the hub cache under its real repo id."""
    from mert_checkpoints import RELEASED_V1_95M, make_checkpoint, preprocessor, shrink

    from musicembed_core.testing import save_to_hub_cache

    sizes = {} if quick else dict(hidden_size=256, num_hidden_layers=4, num_attention_heads=4,
                                  intermediate_size=1024, conv_dim=[128] * 7)
    cfg = shrink(RELEASED_V1_95M, **sizes)
    tiny = make_checkpoint(work / "mert", MERT_ID, cfg, preprocessor(24000, True), seed=0)
    save_to_hub_cache(cache, MERT_ID, tiny.folder)


def make_folder(folder: Path, tracks: int, seconds: float) -> None:
    from musicembed_core.examples import synth_clip, write_audio

    for i in range(tracks):
        rate = (16000, 22050, 44100)[i % 3]
        write_audio(folder / f"t{i:03d}.flac", synth_clip(seconds, rate, seed=i), rate)


ENCODERS = {
    "logmel": ("runs/quickstart.gin", ()),
    "mert": ("runs/quickstart.gin", (
        "include 'encoders/mert_v1_95m.gin'", "embedding.encoder = %MERT_V1_95M",
        "embedding.name = 'mert'", "encoders.mert.window_seconds = 5.0")),
}


def run(encoder: str, source: Path, out: Path, engine: str, actors: int = 1,
        cores: int = 2, ray_params: tuple[str, ...] = ()) -> tuple[float, float, dict]:
    """One run into a fresh output; (wall seconds, audio seconds, timings)."""
    gin_file, params = ENCODERS[encoder]
    shutil.rmtree(out, ignore_errors=True)
    extra = []
    if engine == "ray":
        decode = 1.0 if cores > 1 else 0.5
        per_actor = max(0.25, (cores - decode) / actors)
        extra = ["run.engine = 'ray'", f"run.ray_actors = {actors}", f"run.ray_num_cpus = {per_actor}",
                 f"run.ray_decode_cpus = {decode}", "run.ray_tracks_per_batch = 2", *ray_params]
    t0 = time.perf_counter()
    summary = run_gin(gin_file, source, out, [*params, *extra])
    return time.perf_counter() - t0, summary.audio_seconds, summary.timings


def max_difference(a: Path, b: Path, name: str) -> float:
    """Largest absolute difference between two runs' vectors, matched by id."""
    import numpy as np

    from musicembed_core.builtins.hdf5 import read_hdf5

    x, y = read_hdf5(str(a / f"{name}.h5")), read_hdf5(str(b / f"{name}.h5"))
    assert sorted(x["ids"]) == sorted(y["ids"])
    row = {t: i for i, t in enumerate(y["ids"])}
    return float(np.abs(x["vectors"] - y["vectors"][[row[t] for t in x["ids"]]]).max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="24 tracks x 5 s, tiny MERT, one repeat")
    ap.add_argument("--tracks", type=int, default=None)
    ap.add_argument("--seconds", type=float, default=None)
    ap.add_argument("--repeat", type=int, default=None, help="interleaved repeats (best of each)")
    ap.add_argument("--ray-param", action="append", default=[], metavar="BINDING",
                    help="an extra gin binding for the Ray runs, e.g. 'run.ray_files_per_task = 16'")
    a = ap.parse_args()
    tracks = a.tracks or 24
    seconds = a.seconds or (5.0 if a.quick else 30.0)
    rp = tuple(a.ray_param)
    repeat = a.repeat or (1 if a.quick else 2)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cache = offline_hf_cache(tmp)
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        build_mert(cache, tmp / "ckpt", a.quick)
        make_folder(tmp / "lib", tracks, seconds)
        make_folder(tmp / "few", FEW, seconds)

        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level=logging.WARNING)
        ray_init = time.perf_counter() - t0
        print(f"{tracks} tracks x {seconds:g} s, {cores} cores; ray.init (local instance) {ray_init:.1f} s")
        try:
            # Untimed warm-up: Ray starts its worker processes once per instance, torch and
            # the decoders initialise on first use.
            t0 = time.perf_counter()
            for encoder in ENCODERS:
                run(encoder, tmp / "few", tmp / "out", "ray", 2, cores,
                    (*rp, "run.ray_files_per_task = 1"))
                run(encoder, tmp / "few", tmp / "out", "local")
            print(f"warm-up (first Ray runs: worker processes start) {time.perf_counter() - t0:.1f} s")
            for encoder in ENCODERS:
                best: dict[str, float] = {}
                for _ in range(repeat):  # interleaved, best of each: these machines are noisy
                    for label, engine, actors in (("local", "local", 1), ("ray x1", "ray", 1),
                                                  ("ray x2", "ray", 2)):
                        out = tmp / f"out-{engine}{actors}"
                        wall, audio, _ = run(encoder, tmp / "lib", out, engine, actors, cores, rp)
                        best[label] = min(best.get(label, wall), wall)
                local = best["local"]
                diff = max_difference(tmp / "out-local1", tmp / "out-ray2", encoder)
                print(f"\n{encoder}: local {local:.2f} s ({audio / local:.1f}x realtime); "
                      f"max |ray - local| over the vectors: {diff:.3g}")
                for label in ("ray x1", "ray x2"):
                    print(f"  {label}: {best[label]:.2f} s = {best[label] / local:.2f} x local "
                          f"({audio / best[label]:.1f}x realtime)")
                if encoder == "logmel":
                    few_local = min(run(encoder, tmp / "few", tmp / "out", "local")[0] for _ in range(repeat))
                    few_ray = min(run(encoder, tmp / "few", tmp / "out", "ray", 1, cores, rp)[0]
                                  for _ in range(repeat))
                    per_local = (local - few_local) / (tracks - FEW)
                    per_ray = (best["ray x1"] - few_ray) / (tracks - FEW)
                    print(f"  fixed cost of a run ({FEW} tracks): ray {few_ray:.2f} s, local {few_local:.2f} s")
                    print(f"  per track (slope): ray {1000 * per_ray:.0f} ms, local {1000 * per_local:.0f} ms: "
                          f"Ray adds {1000 * (per_ray - per_local):+.0f} ms/track")
        finally:
            ray.shutdown()


if __name__ == "__main__":
    main()
