"""`musicembed evaluate`: seconds per 1,000 tracks, and where they go.

Writes N generated captioned clips (labels known: instrument, register, tempo, drums),
embeds them once with the built-in logmel encoder (HDF5 with frames kept, a FAISS
sink), then times the real command (a subprocess, as a user runs it) on all four
tasks. Prints the total, the per-1,000-track rate and the split read / metrics / index
from evaluation.json, plus the instrument task's headline figures beside chance.

    python benchmarks/bench_evaluate.py [--tracks 1000] [--seconds 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "musicembed_core", *args], check=True,
                          capture_output=True, text=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tracks", type=int, default=1000)
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--keep", help="folder to work in (default: a temporary one)")
    args = ap.parse_args()

    from musicembed_core.examples import make_captioned_set
    from musicembed_core.testing import run_params

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(args.keep or tmp)
        audio, out = root / "audio", root / "out"
        if not (audio / "labels.csv").is_file():
            make_captioned_set(audio, count=args.tracks, seconds=args.seconds)
        params = run_params(audio, out)
        cli("run", "--gin_file", "runs/quickstart_faiss.gin", *params,
            "--gin_param", "exporters.hdf5.store_frames=True", "--no-progress")
        t0 = time.perf_counter()
        proc = cli("evaluate", "--gin_file", "runs/quickstart_faiss.gin", *params,
                   "--labels", str(audio / "labels.csv"), "--json")
        wall = time.perf_counter() - t0
        doc = json.loads(proc.stdout)
    (emb,) = doc["embeddings"]
    n = emb["labelled_tracks"]
    print(f"tracks {n}, layers {', '.join(emb['layers'])}, tasks {len(emb['tasks'])}")
    print(f"command wall {wall:.1f} s (in-process {doc['seconds']:.1f} s): "
          f"{wall / n * 1000:.1f} s per 1,000 tracks")
    sec = emb["seconds"]
    print(f"  read {sec['read']:.2f} s, metrics {sec['metrics']:.1f} s; index quality measured "
          f"separately on {emb['index'][0].get('queries', 0)} queries")
    inst = emb["tasks"][0]
    for row in inst["results"]:
        r, p = row["retrieval"], row["probe"]
        print(f"  {inst['name']} {row['layer']:8s} P@5 {r['precision_at_k']['5']:.3f} "
              f"(chance {r['chance_precision_at_k']['5']:.3f})  probe acc {p['accuracy']:.3f} "
              f"(chance {p['chance_accuracy']:.3f})")


if __name__ == "__main__":
    main()
