"""Fixed cost of the commands that do (almost) no work, against interpreter baselines.

Builds a small scenario in a temporary folder (the generated example library,
embedded once into HDF5, into HDF5 + FAISS and into HDF5 + Milvus Lite, so every
output is complete), then times whole processes, median of ``--runs`` runs:

* ``musicembed --help`` and ``musicembed plugins``;
* ``musicembed run`` on the complete outputs (every file skipped): hdf5, faiss, milvus;
* ``musicembed search --id jazz/b.flac``: faiss, milvus;

and, in the same invocation, ``python -c pass`` and ``python -c "import torch"``
as yardsticks (ratios against both are printed). Commands run in turn (one run
of each, then the next round), so a slow spell of the machine touches all of
them alike; min and max show how noisy the machine was. The last column says
which heavy modules each command imported (one extra run under a probe).

    python benchmarks/bench_startup.py [--runs 7] [--keep DIR]
    python benchmarks/bench_startup.py --compare /tmp/base:/tmp/base/plugins/faiss:/tmp/base/plugins/milvus

The commands run as ``python -m musicembed_core`` with this interpreter, so
``PYTHONPATH=/other/checkout`` measures another checkout's code (the first lines
say which ``musicembed_core`` ran). ``--compare PYTHONPATH`` also runs every
musicembed command with that PYTHONPATH (e.g. a ``git worktree`` of the previous
commit and its plugins) in the same rounds, right after this code's run, and
prints the paired ratio (median of this/that per round): steadier on a busy
machine than two invocations.

Bytecode caching is on, into a private ``PYTHONPYCACHEPREFIX`` under the
temporary folder (filled by the untimed first round), as an installed package
runs: a checkout used with ``PYTHONDONTWRITEBYTECODE=1`` recompiles each of its
own modules at every start (``--as-is`` keeps the caller's setting).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HEAVY = ("torch", "h5py", "faiss", "pymilvus", "scipy", "pandas", "gin", "numpy")

# Runs the CLI like the console script and, at exit, writes which heavy modules were imported.
PROBE = (
    "import atexit, json, os, runpy, sys\n"
    "def _report():\n"
    "    with open(os.environ['STARTUP_PROBE'], 'w') as f:\n"
    "        json.dump(sorted(m for m in sys.modules if '.' not in m), f)\n"
    "atexit.register(_report)\n"
    "sys.argv = ['musicembed', *sys.argv[1:]]\n"
    "runpy.run_module('musicembed_core', run_name='__main__')\n"
)


def cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "musicembed_core", *args]


def is_cli(cmd: list[str]) -> bool:
    return cmd[1:3] == ["-m", "musicembed_core"]


def run_args(gin: str, out: Path, source: Path) -> list[str]:
    return [
        "run", "--gin_file", gin,
        "--gin_param", f"run.source='{source}'",
        "--gin_param", f"run.output_dir='{out}'",
        "--no-progress",
    ]


def search_args(gin: str, out: Path, source: Path) -> list[str]:
    return [
        "search", "--gin_file", gin,
        "--gin_param", f"run.source='{source}'",
        "--gin_param", f"run.output_dir='{out}'",
        "--id", "jazz/b.flac", "--json",
    ]


def build_scenario(work: Path, env: dict[str, str]) -> dict[str, list[str]]:
    """The example library embedded once per output kind; returns the commands to time."""
    lib = work / "LIB"
    subprocess.run(cli("examples", str(lib)), check=True, capture_output=True, cwd=work, env=env)
    sinks = {"hdf5": "runs/quickstart.gin"}
    for plugin, name in (("musicembed_faiss", "faiss"), ("musicembed_milvus", "milvus")):
        if importlib.util.find_spec(plugin) is not None:
            sinks[name] = f"runs/quickstart_{name}.gin"
        else:
            print(f"({plugin} not installed: its commands are left out)")
    cmds: dict[str, list[str]] = {
        "python -c pass": [sys.executable, "-c", "pass"],
        "python -c 'import torch'": [sys.executable, "-c", "import torch"],
        "musicembed --help": cli("--help"),
        "musicembed plugins": cli("plugins"),
    }
    for name, gin in sinks.items():
        args = run_args(gin, work / "out" / name, lib)
        done = subprocess.run(cli(*args, "--json"), capture_output=True, text=True, cwd=work, env=env)
        if done.returncode != 0:
            raise SystemExit(f"building the {name} scenario failed:\n{done.stderr[-2000:]}")
        summary = json.loads(done.stdout[done.stdout.index("{"):])
        if summary["files_failed"] or not summary["files_ok"]:
            raise SystemExit(f"building the {name} scenario: unexpected summary {summary}")
        cmds[f"run, all skipped ({name})"] = cli(*args)
    for name, gin in sinks.items():
        if name != "hdf5":
            cmds[f"search --id ({name})"] = cli(*search_args(gin, work / "out" / name, lib))
    return cmds


def which_core(work: Path, env: dict[str, str]) -> str:
    return subprocess.run(
        [sys.executable, "-c", "import musicembed_core; print(musicembed_core.__file__)"],
        capture_output=True, text=True, check=True, cwd=work, env=env,
    ).stdout.strip()


def imported_by(cmd: list[str], work: Path, env: dict[str, str]) -> list[str]:
    """Heavy top-level modules the command imports (one run under the probe)."""
    if not is_cli(cmd):
        return []
    report = work / "probe.json"
    probe_env = {**env, "STARTUP_PROBE": str(report)}
    subprocess.run([sys.executable, "-c", PROBE, *cmd[3:]], capture_output=True, cwd=work,
                   env=probe_env)
    try:
        mods = set(json.loads(report.read_text()))
    finally:
        report.unlink(missing_ok=True)
    return [m for m in HEAVY if m in mods]


def timed(name: str, cmd: list[str], work: Path, env: dict[str, str]) -> float:
    t = time.perf_counter()
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=work, env=env)
    elapsed = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"{name} failed ({done.returncode}):\n{done.stderr.decode()[-2000:]}")
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=7, help="timed runs of each command (median)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first")
    ap.add_argument("--keep", metavar="DIR", help="build the scenario in DIR and keep it")
    ap.add_argument("--compare", metavar="PYTHONPATH",
                    help="also time each musicembed command with this PYTHONPATH (paired)")
    ap.add_argument("--as-is", action="store_true",
                    help="keep the caller's bytecode settings (PYTHONDONTWRITEBYTECODE, ...)")
    a = ap.parse_args()

    work = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="bench-startup-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ)
    if not a.as_is:
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    other = {**env, "PYTHONPATH": a.compare} if a.compare else None
    print(f"musicembed_core: {which_core(work, env)}")
    if other is not None:
        print(f"compared with:   {which_core(work, other)}")
    print("bytecode: " + ("as the caller has it" if a.as_is else "cached (private pycache prefix)"))
    print(f"python: {sys.executable}, {os.cpu_count()} cores")
    try:
        t0 = time.perf_counter()
        cmds = build_scenario(work, env)
        print(f"scenario built in {time.perf_counter() - t0:.1f} s under {work}")
        times: dict[str, list[float]] = {k: [] for k in cmds}
        base: dict[str, list[float]] = {k: [] for k in cmds if other is not None and is_cli(cmds[k])}
        for round_ in range(a.warmup + a.runs):
            for name, cmd in cmds.items():
                elapsed = timed(name, cmd, work, env)
                before = timed(name, cmd, work, other) if name in base else None
                if round_ >= a.warmup:
                    times[name].append(elapsed)
                    if before is not None:
                        base[name].append(before)
        med = {k: statistics.median(v) for k, v in times.items()}
        bare, torch = med["python -c pass"], med["python -c 'import torch'"]
        print(f"\nwall seconds, median of {a.runs} runs (min..max); ratios to the baselines")
        head = f"{'command':30} {'median':>7} {'min..max':>13} {'/pass':>6} {'/torch':>7}"
        if base:
            head += f" {'compared':>9} {'this/that':>9}"
        print(head + "  imports")
        for name, v in times.items():
            line = (f"{name:30} {med[name]:7.3f} {min(v):6.3f}..{max(v):<6.3f} "
                    f"{med[name] / bare:6.1f} {med[name] / torch:7.2f}")
            if base:
                if name in base:
                    paired = statistics.median(t / b for t, b in zip(v, base[name]))
                    line += f" {statistics.median(base[name]):9.3f} {paired:9.2f}"
                else:
                    line += f" {'':9} {'':9}"
            print(f"{line}  {', '.join(imported_by(cmds[name], work, env)) or '-'}")
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
