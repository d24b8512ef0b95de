"""Latency of `musicembed plugins`, against a bare interpreter start in the same invocation.

    python benchmarks/bench_plugins_cli.py [--runs 10]

The listing must stay well under a second: it imports no torch, gin or h5py.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time


def timed(cmd: list[str], runs: int) -> float:
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=10)
    a = ap.parse_args()
    py = sys.executable
    bare = timed([py, "-c", "pass"], a.runs)
    torch = timed([py, "-c", "import torch"], a.runs)
    plugins = timed([py, "-m", "musicembed_core", "plugins", "--json"], a.runs)
    print(f"median of {a.runs} runs, this machine:")
    print(f"  python -c pass              {bare * 1000:7.0f} ms")
    print(f"  musicembed plugins --json   {plugins * 1000:7.0f} ms  ({plugins / bare:.1f}x a bare start)")
    print(f"  python -c 'import torch'    {torch * 1000:7.0f} ms  (what the listing avoids)")


if __name__ == "__main__":
    main()
