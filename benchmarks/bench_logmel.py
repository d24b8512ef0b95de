"""Speed and memory of the core pipeline with the built-in `logmel` encoder.

Prints ratios against baselines measured in the same invocation (these
machines are noisy; absolute figures are for orientation only):

1. speed: musicembed's pipeline on a generated example set, as a multiple of
   real time, vs a plain loop (load the whole file, encode it in one call, pool).
2. memory: peak RSS of a fresh process embedding a 60-minute file vs a
   1-minute file (target: ratio < 1.5), plus what loading the 60-minute file
   whole would cost, for scale.

    python benchmarks/bench_logmel.py [--tracks 12] [--seconds 60] [--load] [--repeat 3]
                                      [--long-minutes 60] [--skip-memory]

``--load`` repeats the speed figures while one busy-loop process runs beside them;
the decode ceiling is decode + resample alone with the pipeline's two decode
threads (the most any pipeline could do with a free encoder).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


DEVICE = "cpu"


def build_run(source: Path, out: Path):
    from musicembed_core import ginconfig
    from musicembed_core.runconfig import run_config

    ginconfig.clear()
    ginconfig.parse(
        [str(REPO / "gin" / "runs" / "quickstart.gin")],
        [f"run.source = '{source}'", f"run.output_dir = '{out}'",
         f"encoders.logmel.device = '{DEVICE}'"],
    )
    return run_config()


LAST_TIMINGS: dict[str, float] = {}


def run_pipeline(source: Path, out: Path) -> tuple[float, float]:
    from musicembed_core.runner import execute

    cfg = build_run(source, out)
    summary = execute(cfg, show_progress=False)
    assert summary.files_failed == 0, summary.failures
    LAST_TIMINGS.clear()
    LAST_TIMINGS.update(summary.timings)
    return summary.audio_seconds, summary.wall_seconds


def decode_ceiling(files: list[Path], threads: int, rate: int = 16000) -> tuple[float, float]:
    """Decode + resample alone with ``threads`` threads (the pipeline's decode_workers):
    the most a pipeline with a free encoder could do."""
    from concurrent.futures import ThreadPoolExecutor

    from musicembed_core.audio import stream_resampled

    def one(f: Path) -> float:
        info, blocks = stream_resampled(f, [rate])
        return sum(b[rate].size for b in blocks) / rate

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        seconds = sum(pool.map(one, files))
    return seconds, time.perf_counter() - t0


def busy_process() -> subprocess.Popen:
    """Another CPU-bound process on the machine (a music server is never idle)."""
    return subprocess.Popen([sys.executable, "-c", "while True: pass"])


def speed_round(lib: Path, files: list[Path], out: Path, decode_workers: int = 2) -> dict[str, float]:
    """Plain loop, pipeline and the decode ceiling, interleaved in one round."""
    base_s, base_t = plain_loop(files)
    pipe_s, pipe_t = run_pipeline(lib, out)
    ceil_s, ceil_t = decode_ceiling(files, decode_workers)
    return {"plain": base_s / base_t, "pipeline": pipe_s / pipe_t, "ceiling": ceil_s / ceil_t}


def plain_loop(files: list[Path]) -> tuple[float, float]:
    """What a user's script does: whole file in memory, one encoder call, mean/std."""
    import torch

    from musicembed_core.audio import load_audio
    from musicembed_core.builtins.logmel import LogMelEncoder

    enc = LogMelEncoder(device=DEVICE)
    enc.load()
    t0 = time.perf_counter()
    seconds = 0.0
    for f in files:
        wave = load_audio(f, enc.sample_rate)
        seconds += wave.size / enc.sample_rate
        frames = enc.encode(torch.from_numpy(wave)[None])[:, 0]
        vec = torch.cat([frames.mean(1), frames.std(1, unbiased=False)], -1).flatten()
        _ = (vec / vec.norm()).cpu().numpy()
    return seconds, time.perf_counter() - t0


def write_long(path: Path, minutes: float, rate: int = 44100) -> None:
    """A long stereo file written block by block (never held whole)."""
    import soundfile as sf

    from musicembed_core.examples import synth_clip

    block = synth_clip(30.0, rate, seed=3, channels=2).astype(np.float32)
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, subtype="PCM_16") as f:
        for _ in range(int(round(minutes * 2))):
            f.write(block)


def peak_rss_mb() -> float:
    """This process's peak resident memory in MB: the kernel's high-water mark of its own
    address space (VmHWM). Not ``getrusage().ru_maxrss``: Linux carries that across fork +
    exec, so a child started by a big parent would report the parent's peak."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def memory_test(script: str, child_flag: str, tmp: Path, long_minutes: float, label: str) -> None:
    """Peak RSS of a fresh process (``script child_flag FILE``) on a 1-minute track vs a
    ``long_minutes`` one, printed as a ratio (target <= 1.5). Each file sits in its own
    folder, so a child may use the file's folder as its run's source."""
    paths = []
    for name, minutes in (("short", 1.0), ("long", long_minutes)):
        folder = tmp / f"memory-{name}"
        folder.mkdir(exist_ok=True)
        paths.append(folder / f"{name}.wav")
        write_long(paths[-1], minutes)
    r1 = child_rss([child_flag, str(paths[0])], script)
    r2 = child_rss([child_flag, str(paths[1])], script)
    print(f"memory ({label}, fresh process each):")
    print(f"  1-min track          peak RSS {r1['peak_rss_mb']:8.0f} MB  ({r1['wall']:.0f} s)")
    print(f"  {long_minutes:g}-min track{'':<7}peak RSS {r2['peak_rss_mb']:8.0f} MB  ({r2['wall']:.0f} s)")
    print(f"  ratio                {r2['peak_rss_mb'] / r1['peak_rss_mb']:8.2f}x (target <= 1.5x)")


def child_rss(args: list[str], script: str = __file__, env: dict | None = None) -> dict:
    """Run ``script`` with ``args`` in a fresh process; its last stdout line is a JSON report."""
    proc = subprocess.run(
        [sys.executable, script, *args], capture_output=True, text=True, cwd=REPO, env=env
    )
    if proc.returncode != 0:
        raise SystemExit(proc.stderr)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tracks", type=int, default=12, help="example tracks for the speed test")
    ap.add_argument("--seconds", type=float, default=60.0, help="length of each example track")
    ap.add_argument("--long-minutes", type=float, default=60.0)
    ap.add_argument("--device", default="cpu", help="where logmel runs (cpu, cuda)")
    ap.add_argument("--load", action="store_true",
                    help="also measure while one other CPU-bound process runs (started here)")
    ap.add_argument("--repeat", type=int, default=3, help="interleaved rounds per condition")
    ap.add_argument("--skip-memory", action="store_true", help="speed only")
    ap.add_argument("--rss-child", help=argparse.SUPPRESS)
    ap.add_argument("--load-whole", help=argparse.SUPPRESS)
    a = ap.parse_args()
    global DEVICE
    DEVICE = a.device

    if a.rss_child:  # child: embed one file, report peak RSS
        with tempfile.TemporaryDirectory() as tmp:
            audio_s, wall = run_pipeline(Path(a.rss_child), Path(tmp) / "out")
        peak = peak_rss_mb()
        print(json.dumps({"peak_rss_mb": peak, "audio_seconds": audio_s, "wall": wall}))
        return
    if a.load_whole:  # child: the naive whole-file load, for scale
        from musicembed_core.audio import load_audio

        wave = load_audio(a.load_whole, 16000)
        peak = peak_rss_mb()
        print(json.dumps({"peak_rss_mb": peak, "samples": int(wave.size)}))
        return

    from musicembed_core.examples import synth_clip, write_audio

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        lib = tmp / "lib"
        lib.mkdir()
        exts = [".wav", ".flac", ".ogg", ".mp3"]
        for i in range(a.tracks):
            sr = 44100 if i % 2 else 22050
            write_audio(lib / f"t{i:02d}{exts[i % len(exts)]}", synth_clip(a.seconds, sr, seed=i, channels=1 + i % 2), sr)
        files = sorted(lib.iterdir())
        plain_loop(files[:1])  # warm-up (allocator, caches)
        conditions = ["quiet"] + (["one busy process"] if a.load else [])
        print(f"speed ({a.tracks} tracks x {a.seconds:.0f} s, logmel on {a.device}, this machine; "
              f"median of {a.repeat} interleaved rounds):")
        for cond in conditions:
            busy = busy_process() if cond != "quiet" else None
            try:
                rounds = [speed_round(lib, files, tmp / f"out-{cond[:5]}-{r}") for r in range(a.repeat)]
            finally:
                if busy is not None:
                    busy.kill()
                    busy.wait()
            med = {k: sorted(r[k] for r in rounds)[len(rounds) // 2] for k in rounds[0]}
            ratio = sorted(r["pipeline"] / r["plain"] for r in rounds)[len(rounds) // 2]
            of_ceiling = sorted(r["pipeline"] / r["ceiling"] for r in rounds)[len(rounds) // 2]
            print(f"  [{cond}]")
            print(f"    plain loop                    {med['plain']:8.1f}x realtime")
            print(f"    musicembed pipeline           {med['pipeline']:8.1f}x realtime  "
                  "(incl. start-up, hashing, HDF5 writes)")
            print(f"    decode + resample alone (2 threads) {med['ceiling']:8.1f}x realtime")
            print(f"    ratio pipeline / plain loop: {ratio:.2f}   "
                  f"pipeline / decode ceiling: {of_ceiling:.2f}")
            split = ", ".join(f"{k} {v:.2f}" for k, v in sorted(LAST_TIMINGS.items()))
            print(f"    last pipeline run, seconds: {split}")
        if a.skip_memory:
            return

        short, long_ = tmp / "one_minute.wav", tmp / "long.wav"
        write_long(short, 1.0)
        write_long(long_, a.long_minutes)
        r1 = child_rss(["--rss-child", str(short), "--device", a.device])
        r60 = child_rss(["--rss-child", str(long_), "--device", a.device])
        whole = child_rss(["--load-whole", str(long_)])
        print("peak RSS, fresh process, 44.1 kHz stereo WAV:")
        print(f"  1-minute file             {r1['peak_rss_mb']:8.0f} MB")
        print(f"  {a.long_minutes:.0f}-minute file            {r60['peak_rss_mb']:8.0f} MB "
              f"({r60['audio_seconds'] / r60['wall']:.0f}x realtime)")
        print(f"  ratio long / 1-minute: {r60['peak_rss_mb'] / r1['peak_rss_mb']:.2f}  (target < 1.5)")
        print(f"  for scale, loading the long file whole at 16 kHz: {whole['peak_rss_mb']:.0f} MB")


if __name__ == "__main__":
    main()
