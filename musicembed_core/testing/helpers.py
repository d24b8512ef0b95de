"""Test helpers: the real command line in a subprocess, fake installed plugins,
a Hugging Face cache filled from a folder, and temporary plugin registration.

Nothing here is a stand-in for a real component: these run the real command
line, write real package metadata and register with the real plugin manager.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterator

if TYPE_CHECKING:  # pragma: no cover
    from ..plugins import PluginInfo

REPO = Path(__file__).resolve().parents[2]
"""The source checkout the core is imported from (meaningful in a checkout only)."""


def run_cli(
    *args: str,
    env: dict | None = None,
    cwd: Path | None = None,
    check: bool = True,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run the real ``musicembed`` command line in a subprocess."""
    full_env = {**os.environ, **(env or {})}
    proc = subprocess.run(
        [sys.executable, "-m", "musicembed_core", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or REPO,
        timeout=timeout,
    )
    if check and proc.returncode != 0:
        raise AssertionError(
            f"musicembed {' '.join(args)} exited {proc.returncode}\n"
            f"stdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
    return proc


def run_params(source: Any, out: Any, *extra: str) -> list[str]:
    """``--gin_param`` options setting ``run.source`` and ``run.output_dir`` (then ``extra``
    bindings), for :func:`run_cli`: ``run_cli("run", "--gin_file", GIN, *run_params(src, out))``."""
    args: list[str] = []
    for binding in (f'run.source="{source}"', f'run.output_dir="{out}"', *extra):
        args += ["--gin_param", binding]
    return args


def make_fake_dist(site: Path, name: str, module_source: str, ep_name: str | None = None,
                   version: str = "1.2.3") -> None:
    """Write a module plus dist-info with a ``musicembed`` entry point into ``site``.

    Put ``site`` on PYTHONPATH to make it an installed plugin for a subprocess.
    """
    ep_name = ep_name or name
    (site / f"{name}.py").write_text(textwrap.dedent(module_source))
    dist = site / f"{name}-{version}.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    (dist / "entry_points.txt").write_text(f"[musicembed]\n{ep_name} = {name}\n")


def save_to_hub_cache(cache_dir: Path, repo_id: str, folder: Path, revision: str = "main") -> str:
    """Put the files of ``folder`` into a Hugging Face hub cache as ``repo_id`` at ``revision``.

    The same layout ``huggingface_hub`` writes when it downloads (blobs named by
    content hash, ``snapshots/<commit>/`` links, ``refs/<revision>``), so loading
    code is tested through the real repo-id path with ``HF_HUB_OFFLINE=1``.
    Returns the (made-up but stable) commit sha.
    """
    repo_dir = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    files = sorted(p for p in Path(folder).iterdir() if p.is_file())
    commit = hashlib.sha1()
    for f in files:
        commit.update(f.name.encode() + hashlib.sha256(f.read_bytes()).digest())
    sha = commit.hexdigest()
    snap = repo_dir / "snapshots" / sha
    (repo_dir / "blobs").mkdir(parents=True, exist_ok=True)
    snap.mkdir(parents=True, exist_ok=True)
    for f in files:
        blob = repo_dir / "blobs" / hashlib.sha256(f.read_bytes()).hexdigest()
        if not blob.exists():
            blob.write_bytes(f.read_bytes())
        link = snap / f.name
        if link.exists() or link.is_symlink():
            link.unlink()
        link.symlink_to(os.path.relpath(blob, snap))
    (repo_dir / "refs").mkdir(exist_ok=True)
    (repo_dir / "refs" / revision).write_text(sha)
    return sha


@contextlib.contextmanager
def registered_plugin(obj: Any, name: str | None = None) -> Iterator["PluginInfo"]:
    """Register ``obj`` (a module or any object with hookimpls) as plugin ``name`` with the
    process-wide manager for the duration of the block, then unregister it.

    Its components are made known to gin on entry and withdrawn on exit, as if the
    plugin were installed. Fails if a plugin of that name is already registered.
    """
    from .. import ginconfig
    from ..plugins import get_manager

    manager = get_manager()
    name = name or getattr(obj, "__name__", None) or type(obj).__name__
    if name in manager.plugins:
        raise ValueError(
            f"a plugin named {name!r} is already registered (an installed entry point?): "
            f"pick another name for the temporary registration"
        )
    info = manager.register_plugin(obj, name)
    try:
        ginconfig.register_components(manager)
        yield info
    finally:
        import gin

        manager.unregister_plugin(name)
        # the block may have parsed (and so locked) a config: withdrawing needs it unlocked
        with gin.unlock_config():
            ginconfig.register_components(manager)


def subprocess_env(**extra: str) -> dict[str, str]:
    """This process's environment with its ``sys.path`` as PYTHONPATH, so a child process
    imports exactly what the test imports (plugins put on the path by a conftest too)."""
    paths = [p for p in sys.path if p]
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    return env

