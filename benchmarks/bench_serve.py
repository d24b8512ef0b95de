"""`musicembed serve` against the command line, on a FAISS index and on Milvus Lite.

For each sink: a library of generated clips is indexed with logmel (runs/quickstart_*.gin),
then synthetic rows (random unit vectors, ids synthetic/NNNNNN.flac) are upserted into the
same collection through the sink's API until it holds --n tracks. Then, in this order:

  * the CLI's per-call time (a fresh `musicembed search` process per query, as a script
    or a music server would call it): --id and --audio with a 30 s clip;
  * the service (`musicembed serve` in its own process, on 127.0.0.1): warm latency
    p50/p95 of `GET /search?id=` and of `POST /search` uploading the same 30 s clip,
    and the ratio CLI time / service p50;
  * throughput: --clients concurrent clients sending `GET /search?id=` for --duration
    seconds: requests/s, errors (must be 0), the server's RSS before and after.

Every request goes to 127.0.0.1; every loop is bounded by a count or a duration.

    python benchmarks/bench_serve.py [--n 20000] [--sinks faiss,milvus] [--clients 8] [--duration 30]
    python benchmarks/bench_serve.py --quick      # a small index and a few seconds per step
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
GIN = {"faiss": "runs/quickstart_faiss.gin", "milvus": "runs/quickstart_milvus.gin"}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def gin_args(sink: str, source: Path, out: Path) -> list[str]:
    from musicembed_core.testing import run_params

    return ["--gin_file", GIN[sink], *run_params(source, out)]


def build_index(sink: str, root: Path, n: int, clip_seconds: float,
                track_seconds: float) -> tuple[Path, Path, Path, list[str]]:
    """Index the generated library, then fill the collection with synthetic rows up to n."""
    import gin

    from musicembed_core import Record, ginconfig
    from musicembed_core.examples import make_example_set, synth_clip, write_audio
    from musicembed_core.outputs import open_sink
    from musicembed_core.pipeline import PreparedEmbedding
    from musicembed_core.runconfig import run_config
    from musicembed_core.runner import execute

    source, out = root / "lib", root / "out"
    make_example_set(source, seconds=track_seconds)
    clip = root / "query_30s.wav"  # the uploaded query: not in the library
    write_audio(clip, synth_clip(clip_seconds, 44100, seed=1234, channels=2), 44100)
    ginconfig.parse([GIN[sink]], [f'run.source="{source}"', f'run.output_dir="{out}"'])
    cfg = run_config()
    gin.clear_config()
    summary = execute(cfg, show_progress=False)
    prep = PreparedEmbedding.build(cfg.embeddings[0])
    writer, _ = open_sink(cfg.sinks[0], out, prep)
    try:
        real = sorted(writer.known())
        missing = max(0, n - len(real))
        rng = np.random.default_rng(0)
        for start in range(0, missing, 2000):
            count = min(2000, missing - start)
            vecs = rng.standard_normal((count, prep.space.dim)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            writer.upsert([
                Record(id=f"synthetic/{start + i:06d}.flac", vector=vecs[i], content_hash="synthetic",
                       metadata={"path": str(source / f"synthetic/{start + i:06d}.flac"),
                                 "duration": 200.0})
                for i in range(count)
            ])
        writer.flush()
        total = writer.count()
    finally:
        writer.close()
    print(f"  {sink}: indexed {summary.files_ok} real tracks, {total} in the collection", flush=True)
    return source, out, clip, real


def time_cli(sink: str, source: Path, out: Path, args: list[str], calls: int) -> float:
    """Median wall time of a fresh `musicembed search` process."""
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "musicembed_core", "search", *gin_args(sink, source, out),
                        *args, "--json"], check=True, capture_output=True, cwd=REPO)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    def __init__(self, sink: str, source: Path, out: Path, log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = open(log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "musicembed_core", "serve", *gin_args(sink, source, out),
             "--port", str(self.port)], stdout=self.log, stderr=subprocess.STDOUT, cwd=REPO)
        self.log_path = log

    def wait(self, timeout: float = 120) -> float:
        import httpx

        t = time.perf_counter()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"musicembed serve exited: {self.log_path.read_text()[-2000:]}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return time.perf_counter() - t
            except httpx.TransportError:
                pass
            time.sleep(0.1)
        raise RuntimeError("musicembed serve did not answer /health in time")

    def rss_mb(self) -> float:
        import psutil

        return psutil.Process(self.proc.pid).memory_info().rss / 2**20

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def latencies(fn, count: int) -> list[float]:
    out = []
    for _ in range(count):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def load_test(url: str, ids: list[str], clients: int, seconds: float) -> tuple[int, int, float]:
    """``clients`` threads, each with its own connection, for ``seconds``: (ok, errors, wall)."""
    import httpx

    ok = [0] * clients
    errors = [0] * clients
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        rng = random.Random(i)
        with httpx.Client(base_url=url, timeout=30) as c:
            while time.monotonic() < stop:
                try:
                    r = c.get("/search", params={"id": rng.choice(ids), "k": 10})
                    if r.status_code == 200:
                        ok[i] += 1
                    else:
                        errors[i] += 1
                except httpx.HTTPError:
                    errors[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(clients)]
    t = time.perf_counter()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    return sum(ok), sum(errors), time.perf_counter() - t


def bench_sink(sink: str, args: argparse.Namespace, root: Path) -> dict:
    import httpx

    print(f"[{sink}] building an index of {args.n} tracks", flush=True)
    source, out, clip, real = build_index(sink, root, args.n, args.clip_seconds,
                                         8.0 if args.quick else 30.0)
    query_id = real[0]
    cli_id = time_cli(sink, source, out, ["--id", query_id], args.cli_calls)
    cli_audio = time_cli(sink, source, out, ["--audio", str(clip)], args.cli_calls)
    print(f"  CLI per call: --id {cli_id:.2f} s, --audio {cli_audio:.2f} s", flush=True)

    server = Server(sink, source, out, root / f"serve-{sink}.log")
    try:
        startup = server.wait()
        clip_bytes = clip.read_bytes()
        rng = random.Random(0)
        ids = real + [f"synthetic/{i:06d}.flac" for i in rng.sample(range(args.n - len(real)),
                                                                     min(500, args.n - len(real)))]
        with httpx.Client(base_url=server.url, timeout=120) as c:
            def by_id() -> None:
                r = c.get("/search", params={"id": rng.choice(ids), "k": 10})
                assert r.status_code == 200, r.text

            def upload() -> None:
                r = c.post("/search", params={"k": 10},
                           files={"audio": ("query_30s.wav", clip_bytes, "audio/wav")})
                assert r.status_code == 200, r.text

            upload()  # warm: loads the encoder on the first audio query
            for _ in range(5):
                by_id()
            lat_id = latencies(by_id, args.requests)
            lat_up = latencies(upload, args.uploads)
        rss_before = server.rss_mb()
        ok, errors, wall = load_test(server.url, ids, args.clients, args.duration)
        rss_after = server.rss_mb()
    finally:
        server.stop()
    res = {
        "sink": sink, "tracks": args.n, "startup_s": startup,
        "id_p50_ms": 1e3 * percentile(lat_id, 50), "id_p95_ms": 1e3 * percentile(lat_id, 95),
        "up_p50_ms": 1e3 * percentile(lat_up, 50), "up_p95_ms": 1e3 * percentile(lat_up, 95),
        "cli_id_s": cli_id, "cli_audio_s": cli_audio,
        "rps": ok / wall, "ok": ok, "errors": errors, "rss_before": rss_before, "rss_after": rss_after,
    }
    res["ratio_id"] = cli_id / (res["id_p50_ms"] / 1e3)
    res["ratio_up"] = cli_audio / (res["up_p50_ms"] / 1e3)
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=20000, help="tracks in the index")
    parser.add_argument("--sinks", default="faiss,milvus")
    parser.add_argument("--requests", type=int, default=200, help="timed GET /search?id= calls")
    parser.add_argument("--uploads", type=int, default=30, help="timed uploads of the clip")
    parser.add_argument("--clip-seconds", type=float, default=30.0)
    parser.add_argument("--cli-calls", type=int, default=3, help="timed CLI calls per query kind")
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--duration", type=float, default=30.0, help="load test seconds")
    parser.add_argument("--quick", action="store_true",
                        help="a small index and a few seconds per step (a smoke run)")
    args = parser.parse_args()
    if args.quick:
        args.n, args.requests, args.uploads, args.cli_calls, args.duration = 300, 30, 3, 1, 3.0
    sinks = [s.strip() for s in args.sinks.split(",") if s.strip()]
    results = []
    root = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    try:
        for sink in sinks:
            results.append(bench_sink(sink, args, root / sink))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    print(f"\nmusicembed serve vs CLI ({'quick, ' if args.quick else ''}{os.cpu_count()} CPUs, "
          f"logmel, 30 s clip = {args.clip_seconds:g} s)")
    head = (f"{'sink':7} {'tracks':>7} {'id p50':>8} {'id p95':>8} {'CLI id':>7} {'ratio':>6} "
            f"{'up p50':>8} {'up p95':>8} {'CLI aud':>7} {'ratio':>6} {'req/s':>7} {'err':>4} "
            f"{'RSS MB':>13}")
    print(head)
    for r in results:
        print(f"{r['sink']:7} {r['tracks']:>7} {r['id_p50_ms']:>6.1f}ms {r['id_p95_ms']:>6.1f}ms "
              f"{r['cli_id_s']:>6.2f}s {r['ratio_id']:>5.0f}x {r['up_p50_ms']:>6.0f}ms "
              f"{r['up_p95_ms']:>6.0f}ms {r['cli_audio_s']:>6.2f}s {r['ratio_up']:>5.1f}x "
              f"{r['rps']:>7.1f} {r['errors']:>4} {r['rss_before']:>5.0f}->{r['rss_after']:<5.0f}")
    print(f"(throughput: {args.clients} clients x {args.duration:g} s of GET /search?id=; "
          f"service startup: " + ", ".join(f"{r['sink']} {r['startup_s']:.1f} s" for r in results) + ")")
    if any(r["errors"] for r in results):
        sys.exit(1)


if __name__ == "__main__":
    main()
