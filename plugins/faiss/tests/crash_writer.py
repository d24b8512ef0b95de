"""Writer process for the kill -9 test: applies op j, j+1, ... and prints "ACK j" after each returns.

The op sequence is a pure function of j so the test can replay it and know
exactly what every prefix of acknowledged ops must leave on disk.

    python crash_writer.py FOLDER INDEX FIRST_OP
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

DIM = 24
BATCH = 16


def op(j: int) -> tuple[str, list[str], np.ndarray | None]:
    """("upsert", ids, vectors) or ("delete", ids, None)."""
    if j % 7 == 6:
        return "delete", [f"b{j - 3}-{i}" for i in range(BATCH)], None
    if j % 5 == 4 and (j - 1) % 7 != 6:  # replace the previous batch with new vectors
        ids = [f"b{j - 1}-{i}" for i in range(BATCH)]
    else:
        ids = [f"b{j}-{i}" for i in range(BATCH)]
    return "upsert", ids, np.random.default_rng(j).standard_normal((BATCH, DIM)).astype(np.float32)


def state_after(n_ops: int) -> dict[str, np.ndarray]:
    """id -> vector after ops 0 .. n_ops-1."""
    state: dict[str, np.ndarray] = {}
    for j in range(n_ops):
        kind, ids, vecs = op(j)
        if kind == "delete":
            for tid in ids:
                state.pop(tid, None)
        else:
            for tid, v in zip(ids, vecs):
                state[tid] = v
    return state


def space():
    from musicembed_core import EmbeddingSpace

    return EmbeddingSpace(encoder={"name": "crash-test"}, enrichers=(), dim=DIM)


def main() -> None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from musicembed_faiss import FaissSink

    from musicembed_core import Record

    folder, index, first = sys.argv[1], sys.argv[2], int(sys.argv[3])
    sink = FaissSink(path=folder, index=index, checkpoint_mb=0.02)
    sink.open("crash", space())
    print("OPEN", flush=True)
    j = first
    while True:
        kind, ids, vecs = op(j)
        if kind == "delete":
            sink.delete(ids)
        else:
            sink.upsert([Record(tid, v, f"h{j}", {"op": j}) for tid, v in zip(ids, vecs)])
        print(f"ACK {j}", flush=True)
        j += 1


if __name__ == "__main__":
    main()
