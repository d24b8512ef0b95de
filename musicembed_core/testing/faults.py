"""Fault injection for the conformance kit: a disk that really fills up.

:func:`run_disk_full` runs an exporter or a sink on a small tmpfs (8 MiB by
default) that a child process mounts in a mount namespace of its own, so the
mount disappears with it and nothing leaks onto the machine:

* as root: ``unshare -m``;
* otherwise: ``unshare -rm`` (an unprivileged user + mount namespace, in which
  mounting a tmpfs is allowed);
* as root without ``unshare``: a plain ``mount``, undone at the end;
* where none of these works (user namespaces disabled), the check is skipped
  and says why. No fake ``ENOSPC`` stands in for the real one.

Inside, a *driver* runs each phase in a process of its own, so a crash in a
storage library (HDF5 segfaults on a full disk) fails the check with its exit
code instead of killing pytest:

1. ``fill``: write and close some records ("closed"); reopen, write and
   ``flush()`` more ("flushed"); fill the file system with a filler file up to
   ``slack`` bytes; then write batches, each followed by ``flush()``, until the
   output raises; then ``close()``. Each error is reported with its type,
   message and whether it carries ``ENOSPC``.
2. the driver deletes the filler file and lists the temporary files
   (``*.tmp-<pid>``) left behind;
3. ``resume``: reopen, report ``known()``, write what is missing plus new
   records, ``flush()``, ``close()``; then reopen and read everything back
   (sinks: ``known()``, ``count()`` and every vector through ``fetch``).
4. the driver copies the output out of the small file system, so the test
   reads it with the plugin's own reader.

    python -m musicembed_core.testing.faults driver|fill|resume CONFIG_JSON
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

from ..atomic import DISK_FULL_ERRNOS

__all__ = [
    "DiskFullRun",
    "check_disk_full",
    "fill_file_system",
    "run_disk_full",
    "run_in_small_fs",
    "small_fs_mode",
]

_TEMP_RE = re.compile(r"\.tmp-\d+$")
_MODULE = "musicembed_core.testing.faults"  # __name__ is "__main__" in the driver
_mode_cache: tuple[str | None, list[str], str] | None = None


# --------------------------------------------------------------------------- parent side


def small_fs_mode() -> tuple[str | None, list[str], str]:
    """How this machine can mount a small tmpfs: ``(mode, command prefix, why not)``.

    ``mode`` is ``"unshare"``, ``"unshare-user"``, ``"mount"`` or None (then the
    third item says why). Probed once per process with a real 1 MiB mount.
    """
    global _mode_cache
    if _mode_cache is not None:
        return _mode_cache
    root = os.geteuid() == 0 if hasattr(os, "geteuid") else False
    tried: list[str] = []
    with tempfile.TemporaryDirectory(prefix="musicembed-fsprobe-") as probe:
        mount = f"mount -t tmpfs -o size=1m tmpfs {probe} && touch {probe}/x"
        if shutil.which("unshare"):
            prefix = ["unshare", "-m"] if root else ["unshare", "-rm"]
            proc = subprocess.run([*prefix, "sh", "-c", mount], capture_output=True, text=True)
            if proc.returncode == 0 and not os.path.exists(os.path.join(probe, "x")):
                _mode_cache = ("unshare" if root else "unshare-user", prefix, "")
                return _mode_cache
            tried.append(f"`{' '.join(prefix)}` failed: {proc.stderr.strip()[:200]}")
        else:
            tried.append("no `unshare` command")
        if root and shutil.which("mount"):
            proc = subprocess.run(["sh", "-c", mount], capture_output=True, text=True)
            if proc.returncode == 0:
                subprocess.run(["umount", probe], capture_output=True)
                _mode_cache = ("mount", [], "")
                return _mode_cache
            tried.append(f"`mount` failed: {proc.stderr.strip()[:200]}")
        elif not root:
            tried.append("not root")
    _mode_cache = (None, [], "; ".join(tried))
    return _mode_cache


@dataclass
class DiskFullRun:
    """What :func:`run_disk_full` saw: per-phase reports and where the output was copied."""

    mode: str
    fill: dict[str, Any]
    resume: dict[str, Any] | None
    temps: list[str]
    copy: Path
    """The output's folder (``data``) copied off the small file system."""
    seconds: float


def run_disk_full(
    *,
    kind: str,
    cls: type,
    params_for: Callable[[Path], dict[str, Any]],
    target_for: Callable[[Path], str],
    space_json: str,
    work: Path,
    batch: int = 5,
    size_mb: int = 8,
    slack: int = 32 << 10,
    max_batches: int = 2000,
    frames: int = 0,
    rtol: float = 1e-6,
    prelude: str = "",
    timeout: float = 300.0,
) -> DiskFullRun:
    """Run the disk-full scenario (module doc) for ``cls`` under ``work`` (an empty folder).

    ``params_for(root)`` gives the JSON constructor arguments and ``target_for(root)``
    the exporter path or sink collection, ``root`` being the (empty) folder on the
    small file system where the output lives. ``prelude``: Python statements each
    phase process runs first (a test tuning a module constant). Skips the test when
    no small file system can be mounted here.
    """
    prefix, mode = _small_fs_or_skip()
    mnt = work / "fs"
    mnt.mkdir(parents=True)
    root = mnt / "data"
    cfg = {
        "kind": kind, "cls": f"{cls.__module__}:{cls.__qualname__}", "params": params_for(root),
        "target": target_for(root), "space": space_json, "mount": str(mnt), "root": str(root),
        "copy_to": str(work / "after"), "batch": batch, "size_mb": size_mb, "slack": slack,
        "max_batches": max_batches, "frames": frames, "rtol": rtol, "mode": mode,
        "prelude": prelude,
    }
    t0 = time.perf_counter()
    out = _drive(prefix, cfg, timeout)
    return DiskFullRun(mode=mode, fill=out["fill"], resume=out.get("resume"),
                       temps=out["temps"], copy=work / "after", seconds=time.perf_counter() - t0)


def run_in_small_fs(script: str, work: Path, size_mb: int = 8, timeout: float = 300.0) -> dict[str, Any]:
    """Run ``python -c script MOUNT`` with a fresh ``size_mb`` MiB tmpfs mounted at ``MOUNT``
    (``work/fs``); returns ``{"rc", "stdout", "stderr"}``. A crash shows as the exit code.
    For scenarios of one output that :func:`run_disk_full` does not cover."""
    prefix, mode = _small_fs_or_skip()
    mnt = work / "fs"
    mnt.mkdir(parents=True)
    cfg = {"mount": str(mnt), "size_mb": size_mb, "mode": mode, "script": script}
    return _drive(prefix, cfg, timeout)["script"]


def _small_fs_or_skip() -> tuple[list[str], str]:
    import pytest

    mode, prefix, why = small_fs_mode()
    if mode is None:
        pytest.skip(f"the disk-full check needs a small tmpfs and cannot mount one here ({why}); "
                    f"run it as root or where unprivileged user namespaces are enabled")
    return prefix, mode


def _drive(prefix: list[str], cfg: dict[str, Any], timeout: float) -> dict[str, Any]:
    from .helpers import subprocess_env

    proc = subprocess.run(
        [*prefix, sys.executable, "-m", _MODULE, "driver", json.dumps(cfg)],
        capture_output=True, text=True, env=subprocess_env(), timeout=timeout,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        raise AssertionError(
            f"the disk-full driver failed (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n"
            f"{proc.stderr[-3000:]}"
        )
    return json.loads(lines[-1])


def _phase_failure(name: str, rep: Mapping[str, Any]) -> str:
    rc = rep.get("rc")
    crash = " (a segmentation fault)" if rc in (-11, 139) else ""
    return (f"the {name} phase's process ended with exit {rc}{crash} instead of an exception:\n"
            f"{rep.get('stderr', '')[-4000:]}")


def check_disk_full(run: DiskFullRun, names: tuple[str, ...] = ()) -> dict[str, str]:
    """Assert what every output must do on a full disk; returns the ids/hashes the output
    must hold at the end. ``names``: strings of which the error message must contain one
    (the output's file or collection); none: not checked (the runner names the output)."""
    fill = run.fill
    assert fill.get("rc") == 0, _phase_failure("fill", fill)
    err = fill.get("error")
    assert err is not None, (
        f"the output never ran out of space: {fill.get('batches')} batches were written and "
        f"flushed into a {fill.get('size_mb')} MiB file system"
    )
    assert err["disk_full"], (
        f"writing into a full file system raised {err['type']} without errno ENOSPC: raise "
        f"OSError(errno.ENOSPC, message, path) (or an error whose __cause__ is one):\n"
        f"{err['traceback']}"
    )
    assert not names or any(n in err["message"] for n in names), (
        f"the disk-full message must name the output (one of {list(names)}): {err['message']!r}"
    )
    close = fill.get("close_error")
    assert close is None or close["disk_full"], (
        f"close() after a full disk raised {close['type']} without errno ENOSPC:\n"
        f"{close['traceback']}"
    )
    assert not run.temps, f"temporary files left behind after the full disk: {run.temps}"
    res = run.resume
    assert res is not None and res.get("rc") == 0, _phase_failure("resume", res or {})
    before = dict(fill["closed"]) | dict(fill["flushed"])
    known = res["known"]
    lost = sorted(t for t, h in before.items() if known.get(t) != h)
    assert not lost, (
        f"after the full disk, {len(lost)} closed or flushed records are missing or wrong on "
        f"reopen, e.g. {lost[:3]}"
    )
    written = before | dict(fill["attempted"])
    foreign = sorted(t for t, h in known.items() if written.get(t) != h)
    assert not foreign, f"known() after the full disk reports records never written: {foreign[:3]}"
    want = written | dict(res["added"])
    assert res["final_known"] == want, (
        "after freeing space, the resumed run did not end with every record: missing "
        f"{sorted(set(want) - set(res['final_known']))[:3]}, extra "
        f"{sorted(set(res['final_known']) - set(want))[:3]}"
    )
    assert not res["problems"], f"stored data after the resume: {res['problems'][:5]}"
    return want


# --------------------------------------------------------------------------- driver


def _run_phase(name: str, cfg: dict[str, Any]) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", _MODULE, name, json.dumps(cfg)],
                          capture_output=True, text=True, timeout=240)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    rep: dict[str, Any] = json.loads(lines[-1]) if lines and proc.returncode == 0 else {}
    rep.update(rc=proc.returncode, stderr=proc.stderr[-6000:])
    return rep


def _driver(cfg: dict[str, Any]) -> None:
    mnt = cfg["mount"]
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={cfg['size_mb']}m", "tmpfs", mnt],
                   check=True, capture_output=True)
    try:
        if "script" in cfg:
            proc = subprocess.run([sys.executable, "-c", cfg["script"], mnt], capture_output=True,
                                  text=True, timeout=240)
            out = {"script": {"rc": proc.returncode, "stdout": proc.stdout[-20000:],
                              "stderr": proc.stderr[-20000:]}}
        else:
            out = _scenario(cfg)
    finally:
        if cfg["mode"] == "mount":
            subprocess.run(["umount", "-l", mnt], capture_output=True)
    print(json.dumps(out), flush=True)


def _scenario(cfg: dict[str, Any]) -> dict[str, Any]:
    mnt, root = cfg["mount"], cfg["root"]
    os.makedirs(root)
    out: dict[str, Any] = {"fill": _run_phase("fill", cfg)}
    filler = os.path.join(mnt, "filler")
    if os.path.exists(filler):
        os.unlink(filler)
    out["temps"] = sorted(
        os.path.relpath(os.path.join(d, n), root)
        for d, _, names in os.walk(root) for n in names if _TEMP_RE.search(n)
    )
    fill = out["fill"]
    if fill["rc"] == 0:
        redo = {**fill["closed"], **fill["flushed"], **fill["attempted"]}
        out["resume"] = _run_phase("resume", {**cfg, "redo": redo})
    shutil.copytree(root, cfg["copy_to"], symlinks=True)
    return out


# --------------------------------------------------------------------------- phases


def _carries_disk_full(exc: BaseException) -> bool:
    """An OSError with errno ENOSPC/EDQUOT, or an error raised from one (``__cause__``).

    Stricter than :func:`musicembed_core.atomic.is_disk_full`, which also reads the
    text of library errors: the kit asks outputs to raise a real errno."""
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if getattr(cur, "errno", None) in DISK_FULL_ERRNOS:
            return True
        cur = cur.__cause__
    return False


def _describe(exc: BaseException, during: str) -> dict[str, Any]:
    return {"during": during, "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc), "disk_full": _carries_disk_full(exc),
            "traceback": "".join(traceback.format_exception(exc))[-4000:]}


class _Output:
    """The component under test, opened as the kit opens it."""

    def __init__(self, cfg: dict[str, Any]) -> None:
        from ..space import EmbeddingSpace
        from ._kill_writer import load_class

        self.cfg = cfg
        self.space = EmbeddingSpace.from_json(cfg["space"])
        self.c = load_class(cfg["cls"])(**cfg["params"])
        self.c.open(cfg["target"], self.space)
        self.sink = cfg["kind"] == "sink"

    def write(self, items: list[tuple[str, str]]) -> None:
        from .records import suite_record

        recs = [suite_record(t, h, self.space.dim, frames=self.cfg["frames"]) for t, h in items]
        (self.c.upsert if self.sink else self.c.write)(recs)


def _batches(items: Mapping[str, str], size: int) -> list[list[tuple[str, str]]]:
    pairs = list(items.items())
    return [pairs[i : i + size] for i in range(0, len(pairs), size)]


def fill_file_system(mnt: str, slack: int) -> None:
    """Write a filler file until only about ``slack`` bytes are free."""
    block = b"\0" * (1 << 20)
    with open(os.path.join(mnt, "filler"), "wb") as fh:
        while True:
            st = os.statvfs(mnt)
            free = st.f_bavail * st.f_frsize
            if free <= slack:
                break
            try:
                fh.write(block[: min(len(block), free - slack)])
                fh.flush()
            except OSError as exc:
                if exc.errno in DISK_FULL_ERRNOS:
                    break
                raise


def _phase_fill(cfg: dict[str, Any]) -> dict[str, Any]:
    b = cfg["batch"]
    closed = {f"closed/{i:03d}.flac": "v1" for i in range(2 * b)}
    flushed = {f"flushed/{i:03d}.flac": "v1" for i in range(2 * b)}
    out = _Output(cfg)
    for batch in _batches(closed, b):
        out.write(batch)
    out.c.close()
    out = _Output(cfg)
    for batch in _batches(flushed, b):
        out.write(batch)
    out.c.flush()
    fill_file_system(cfg["mount"], cfg["slack"])
    attempted: dict[str, str] = {}
    error = None
    n = 0
    for n in range(cfg["max_batches"]):
        batch = [(f"more/{n:04d}-{i}.flac", "v1") for i in range(b)]
        attempted.update(batch)
        try:
            out.write(batch)
        except Exception as exc:
            error = _describe(exc, "write")
            break
        try:
            out.c.flush()
        except Exception as exc:
            error = _describe(exc, "flush")
            break
    try:
        out.c.close()
        close_error = None
    except Exception as exc:
        close_error = _describe(exc, "close")
    return {"closed": closed, "flushed": flushed, "attempted": attempted, "batches": n,
            "error": error, "close_error": close_error, "size_mb": cfg["size_mb"]}


def _phase_resume(cfg: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    from .records import suite_vector

    out = _Output(cfg)
    known = dict(out.c.known())
    added = {f"after/{i:03d}.flac": "v1" for i in range(cfg["batch"])}
    # A rerun: redo what the fill phase wrote but the output does not hold, add new records.
    todo = {t: h for t, h in cfg["redo"].items() if known.get(t) != h}
    for batch in _batches(todo | added, cfg["batch"]):
        out.write(batch)
    out.c.flush()
    out.c.close()
    again = _Output(cfg)
    final = dict(again.c.known())
    problems: list[str] = []
    if again.sink:
        if again.c.count() != len(final):
            problems.append(f"count() {again.c.count()} != len(known()) {len(final)}")
        got = again.c.fetch(list(final))
        for t, h in final.items():
            if t not in got:
                problems.append(f"fetch() lost {t!r}")
            elif not np.allclose(np.asarray(got[t], np.float32), suite_vector(t, h, again.space.dim),
                                 rtol=cfg["rtol"], atol=cfg["rtol"]):
                problems.append(f"stored vector of {t!r} differs")
    again.c.close()
    return {"known": known, "added": added, "final_known": final, "problems": problems}


def main(argv: list[str]) -> None:
    what, cfg = argv[0], json.loads(argv[1])
    if what == "driver":
        _driver(cfg)
        return
    phase = {"fill": _phase_fill, "resume": _phase_resume}[what]
    if cfg.get("prelude"):
        exec(cfg["prelude"], {})  # a test's own tuning, e.g. a module constant
    print(json.dumps(phase(cfg)), flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
