"""ANN indexes of the FAISS sink, through the plugin's Sink API, against exact Flat search.

For each dataset (seeded) and index: build time (upserts incl. journaling and
training), close time (snapshot write), recall@10 against exact search (the
`Flat` sink of the same run), queries per second for one batched call and for
one query per call, and the QPS ratios against `Flat` measured in the same run.

Datasets, 768-dim, cosine metric:
  * clustered: a Gaussian mixture (300 centres) whose points vary along a shared
    64-dim subspace plus small isotropic noise: low intrinsic dimension, like
    real embeddings, so IVF partitions mean something (yet neighbours within a
    cluster still need a search: not a trivially separable set);
  * uniform: i.i.d. uniform in [-1, 1]^768, the worst case for any ANN index.

IVF sizes: `IVF1024,Flat` is trained on the 20k vectors (19.5 per list, below
FAISS's recommended 39, so min_train is lowered explicitly); `IVF4096,PQ64`
would have ~5 points per list on 20k vectors, too few to train, so the PQ
configuration is `IVF256,PQ64` (39 x 256 = 9,984 training points needed).

    python benchmarks/bench_ann.py [--n 20000] [--dim 768] [--queries 1000] [--datasets clustered,uniform]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "plugins" / "faiss"))

K = 10
BATCH = 1000
SINGLE = 200  # queries timed one per call


@dataclass
class Config:
    label: str
    index: str
    params: dict
    search: list[dict]
    """Search-time variants measured on the same built index (attribute overrides)."""


def configs(n: int) -> list[Config]:
    return [
        Config("Flat", "Flat", {}, [{}]),
        Config("HNSW32", "HNSW32", {"ef_construction": 80},
               [{"ef_search": ef} for ef in (32, 64, 128, 256, 512, 1024)]),
        Config("IVF1024,Flat", "IVF1024,Flat", {"min_train": min(n, 20000)},
               [{"nprobe": p} for p in (8, 16, 64, 256)]),
        Config("IVF256,PQ64", "IVF256,PQ64", {"min_train": min(n, 39 * 256)},
               [{"nprobe": 16}, {"nprobe": 64}, {"nprobe": 16, "rerank": 10}, {"nprobe": 64, "rerank": 10}]),
    ]


def dataset(kind: str, n: int, q: int, dim: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if kind == "uniform":
        x = rng.uniform(-1, 1, (n + q, dim))
    else:
        centres = rng.standard_normal((300, dim))
        basis = rng.standard_normal((64, dim)) / np.sqrt(64)
        which = rng.integers(0, 300, n + q)
        x = centres[which] + 2.5 * rng.standard_normal((n + q, 64)) @ basis + 0.2 * rng.standard_normal((n + q, dim))
    x = x.astype(np.float32)
    return x[:n], x[n:]


def space(dim: int):
    from musicembed_core import EmbeddingSpace

    return EmbeddingSpace(encoder={"name": "bench_ann"}, enrichers=(), dim=dim)


def run_config(cfg: Config, base: np.ndarray, queries: np.ndarray, folder: Path,
               truth: list[list[str]] | None) -> list[dict]:
    from musicembed_faiss import FaissSink

    from musicembed_core import Record

    records = [Record(f"t{i}", v, str(i)) for i, v in enumerate(base)]
    sink = FaissSink(path=str(folder), index=cfg.index, collection=cfg.label.replace(",", "_"),
                     metric="cosine", **cfg.params)
    sink.open("bench", space(base.shape[1]))
    t0 = time.perf_counter()
    for start in range(0, len(base), BATCH):
        sink.upsert(records[start : start + BATCH])
    build = time.perf_counter() - t0
    assert sink.describe()["trained"], sink.training_status
    rows = []
    for variant in cfg.search:
        for key, value in variant.items():
            setattr(sink, key, value)
        sink.search(queries[:10], K)  # warm-up
        t0 = time.perf_counter()
        got = [[h.id for h in hits] for hits in sink.search(queries, K)]
        batch_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        for i in range(SINGLE):
            sink.search(queries[i : i + 1], K)
        single_s = time.perf_counter() - t0
        truth_ = truth if truth is not None else got
        recall = float(np.mean([len(set(a) & set(b)) / K for a, b in zip(got, truth_)]))
        rows.append({
            "label": cfg.label + ("" if not variant else " " + ",".join(f"{k}={v}" for k, v in variant.items())),
            "build": build, "recall": recall, "qps": len(queries) / batch_s, "qps1": SINGLE / single_s,
            "got": got,
        })
    t0 = time.perf_counter()
    sink.close()
    close_s = time.perf_counter() - t0
    for r in rows:
        r["close"] = close_s
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--datasets", default="clustered,uniform")
    a = ap.parse_args()
    import faiss

    print(f"faiss {faiss.__version__}, {faiss.omp_get_max_threads()} threads; n={a.n} dim={a.dim} "
          f"queries={a.queries} k={K}; metric cosine; QPS 'batch' = one search() call with all queries, "
          f"'1/call' = {SINGLE} calls of one query")
    for kind in a.datasets.split(","):
        base, queries = dataset(kind, a.n, a.queries, a.dim)
        folder = Path(tempfile.mkdtemp(prefix="bench_ann_"))
        try:
            results: list[dict] = []
            truth = None
            for cfg in configs(a.n):
                rows = run_config(cfg, base, queries, folder, truth)
                if cfg.label == "Flat":
                    truth = rows[0]["got"]
                    rows[0]["recall"] = 1.0
                results += rows
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        flat = results[0]
        print(f"\n{kind} data")
        head = f"{'index (search params)':40} {'build s':>8} {'close s':>8} {'recall@10':>9} " \
               f"{'QPS batch':>10} {'x Flat':>7} {'QPS 1/call':>10} {'x Flat':>7}"
        print(head)
        print("-" * len(head))
        for r in results:
            print(f"{r['label']:40} {r['build']:8.2f} {r['close']:8.2f} {r['recall']:9.3f} {r['qps']:10.0f} "
                  f"{r['qps'] / flat['qps']:7.2f} {r['qps1']:10.0f} {r['qps1'] / flat['qps1']:7.2f}")
        good = [r for r in results if r["label"].startswith("HNSW32") and r["recall"] >= 0.95]
        print("HNSW32 recall@10 >= 0.95: " + (f"first reached with {good[0]['label'].split()[1]}" if good
                                               else "not reached with ef_search <= 1024"))


if __name__ == "__main__":
    main()
