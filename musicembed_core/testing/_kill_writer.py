"""Child process of the kill -9 checks: writes planned batches into an exporter or a sink.

    python -m musicembed_core.testing._kill_writer CONFIG_JSON

CONFIG_JSON: ``kind`` (exporter|sink), ``cls`` (``module:QualName``), ``params`` (JSON
constructor arguments), ``target`` (exporter path or sink collection), ``space``
(EmbeddingSpace JSON) and ``plan``: a list of batches of ``[id, content_hash]``, or
the strings ``"flush"`` (call ``flush()``, then print ``flushed``) and ``"wait"``
(print ``waiting`` and sleep until killed). Prints ``open``, then ``ack N`` once
the N-th write/upsert has returned, then ``closing`` and ``closed``. Vectors come
from :func:`suite_vector`, so the parent knows every vector without reading pipes.
"""

from __future__ import annotations

import importlib
import json
import sys
import time


def load_class(path: str) -> type:
    module, _, qualname = path.partition(":")
    obj: object = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return obj  # type: ignore[return-value]


def main(argv: list[str]) -> None:
    from ..space import EmbeddingSpace
    from .records import suite_record

    cfg = json.loads(argv[0])
    component = load_class(cfg["cls"])(**cfg["params"])
    space = EmbeddingSpace.from_json(cfg["space"])
    if cfg["kind"] == "exporter":
        component.open(cfg["target"], space)
        write = component.write
    else:
        component.open(cfg["target"], space)
        write = component.upsert
    print("open", flush=True)
    n = 0
    for batch in cfg["plan"]:
        if batch == "flush":
            component.flush()
            print("flushed", flush=True)
            continue
        if batch == "wait":
            print("waiting", flush=True)
            time.sleep(600)
            continue
        write([suite_record(tid, h, space.dim) for tid, h in batch])
        n += 1
        print(f"ack {n}", flush=True)
    print("closing", flush=True)
    component.close()
    print("closed", flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])


def run_writer(
    cfg: dict,
    *,
    kill_after_acks: int | None = None,
    kill_on: str | None = None,
    delay: float = 0.0,
    timeout: float = 300.0,
) -> tuple[int, int, str]:
    """Run the writer with ``cfg``; SIGKILL it after ``kill_after_acks`` acks, or ``delay``
    seconds after it prints ``kill_on``. Returns (acknowledged batches, return code, stderr)."""
    import os
    import signal
    import subprocess
    import tempfile
    import threading
    import time

    from .helpers import subprocess_env

    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(
            [sys.executable, "-m", __name__, json.dumps(cfg)],
            stdout=subprocess.PIPE, stderr=err, text=True, env=subprocess_env(),
        )
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        acks = 0
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                line = line.strip()
                if line.startswith("ack "):
                    acks = int(line[4:])
                if (kill_after_acks is not None and acks >= kill_after_acks) or line == kill_on:
                    time.sleep(delay)
                    os.kill(proc.pid, signal.SIGKILL)
                    break
            for line in proc.stdout:  # acks printed before the kill landed
                if line.startswith("ack "):
                    acks = max(acks, int(line[4:]))
            proc.wait(timeout=60)
        finally:
            watchdog.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()  # type: ignore[union-attr]
        err.seek(0)
        return acks, proc.returncode, err.read()
