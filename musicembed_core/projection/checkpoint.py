"""The projector checkpoint folder: its files, its config.json, and crash-safe writing.

A checkpoint is one folder::

    config.json             format, version, text model (id, revision, resolved weights),
                            head sizes, target space (hash + full signature), training facts
    projector.safetensors   the trainable tensors: "lora.<name>" (LoRA adapters) + "head.<name>"
    projector.gin           `embedding.projector = @projectors.trained()` bound to this folder

No pickles. The folder is written whole into a temporary sibling and renamed into
place (:func:`write_folder`), so a ``kill -9`` at any instant leaves the previous
complete checkpoint or the new complete one, never a mix. Standard library only:
``projectors.trained`` reads config.json through here without importing torch.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from typing import Any, Callable, Mapping

from ..atomic import fsync_dir, fsync_file, pid_alive
from ..hub import ModelLoadError

FORMAT = "musicembed-projector"
VERSION = 1
"""The config.json version this code writes; it reads every version in :data:`READABLE_VERSIONS`."""
READABLE_VERSIONS = (1,)
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "projector.safetensors"
GIN_FILE = "projector.gin"

REQUIRED_KEYS: dict[str, tuple[str, ...]] = {
    "text_model": ("model", "text_dim"),
    "head": ("text_dim", "hidden", "audio_dim", "dropout"),
    "target_space": ("hash", "signature"),
}
"""Sections of config.json a loader needs, and the keys each must hold."""

_LEFTOVER = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)$")


class ProjectorCheckpointError(ModelLoadError):
    """A projector checkpoint folder that is missing, incomplete, corrupt or of an unknown format."""


def read_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """config.json of the checkpoint ``folder``, checked (format, version, required keys).

    Cheap (no torch): ``projectors.trained`` calls it when it is constructed.
    """
    path = Path(folder).expanduser()
    recover_folder(path)
    if not path.is_dir():
        hint = " (it is a file: give the checkpoint folder)" if path.exists() else ""
        raise ProjectorCheckpointError(
            f"projector checkpoint {str(path)!r}: no such folder{hint}. Give a folder written by "
            f"`musicembed train-projector` (e.g. OUTDIR/best_r1)"
        )
    cfg_file = path / CONFIG_FILE
    if not cfg_file.is_file():
        raise ProjectorCheckpointError(
            f"projector checkpoint {str(path)!r}: no {CONFIG_FILE}, so this is not a projector "
            f"checkpoint (one holds {CONFIG_FILE}, {WEIGHTS_FILE} and {GIN_FILE}). Give a folder "
            f"written by `musicembed train-projector`, e.g. OUTDIR/best_r1"
        )
    try:
        cfg = json.loads(cfg_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ProjectorCheckpointError(f"{cfg_file}: cannot read it as JSON ({exc})") from exc
    check_config(cfg, str(cfg_file))
    return cfg


def check_config(cfg: Any, where: str) -> None:
    """Raise :class:`ProjectorCheckpointError` unless ``cfg`` is a config this code reads."""
    if not isinstance(cfg, dict):
        raise ProjectorCheckpointError(f"{where}: expected a JSON object, got {type(cfg).__name__}")
    if cfg.get("format") != FORMAT:
        raise ProjectorCheckpointError(
            f"{where}: format is {cfg.get('format')!r}, expected {FORMAT!r}: not a projector "
            f"checkpoint written by musicembed"
        )
    version = cfg.get("version")
    if version not in READABLE_VERSIONS:
        newer = isinstance(version, int) and version > max(READABLE_VERSIONS)
        raise ProjectorCheckpointError(
            f"{where}: checkpoint format version {version!r} is unknown to this musicembed (it "
            f"reads version {', '.join(map(str, READABLE_VERSIONS))})"
            + ("; it was written by a newer musicembed: upgrade to load it" if newer else "")
        )
    missing: list[str] = []
    for section, keys in REQUIRED_KEYS.items():
        value = cfg.get(section)
        if isinstance(value, dict):
            missing += [f"{section}.{key}" for key in keys if key not in value]
        else:
            missing.append(section)
    if missing:
        raise ProjectorCheckpointError(f"{where}: missing {', '.join(missing)}")
    sig = cfg["target_space"]["signature"]
    if isinstance(sig, str):
        try:
            sig = json.loads(sig)
        except ValueError as exc:
            raise ProjectorCheckpointError(f"{where}: target_space.signature is not JSON ({exc})") from exc
    if not isinstance(sig, dict) or not {"encoder", "enrichers", "dim"} <= set(sig):
        raise ProjectorCheckpointError(
            f"{where}: target_space.signature must be the space's EmbeddingSpace.to_json() "
            f"(with encoder, enrichers, dim)"
        )
    if int(sig["dim"]) != int(cfg["head"]["audio_dim"]):
        raise ProjectorCheckpointError(
            f"{where}: head.audio_dim {cfg['head']['audio_dim']} differs from the target space's "
            f"dim {sig['dim']}"
        )


def target_signature(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The stored target space (``EmbeddingSpace.to_json()`` parsed)."""
    sig = cfg["target_space"]["signature"]
    return json.loads(sig) if isinstance(sig, str) else dict(sig)


def sha256_file(path: str | os.PathLike[str]) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gin_text(folder: str | os.PathLike[str], cfg: Mapping[str, Any]) -> str:
    """projector.gin: the bindings that put this projector on its embedding."""
    space = cfg.get("target_space", {})
    label = f" ({space['name']})" if space.get("name") else ""
    return (
        f"# Text projector trained by `musicembed train-projector` into embedding space "
        f"{space.get('hash', '?')}{label}.\n"
        f"# Add this file after the run's gin files: musicembed search --gin_file RUN.gin "
        f"--gin_file {Path(folder) / GIN_FILE} --text '...'\n"
        f"# (or pass --projector {folder} to `musicembed search` / `musicembed tag`).\n"
        f"embedding.projector = @projectors.trained()\n"
        f"projectors.trained.checkpoint = {json.dumps(str(folder))}\n"
    )


# --------------------------------------------------------------------------- writing


def _leftovers(folder: Path) -> list[tuple[Path, str, int]]:
    try:
        names = os.listdir(folder.parent)
    except FileNotFoundError:
        return []
    out = []
    for name in names:
        m = _LEFTOVER.match(name)
        if m and m.group("name") == folder.name:
            out.append((folder.parent / name, m.group("kind"), int(m.group("pid"))))
    return out


def recover_folder(folder: str | os.PathLike[str]) -> None:
    """Finish or undo a :func:`write_folder` that a dead process left halfway.

    A temporary folder of a dead writer is deleted; the previous checkpoint that a
    writer moved aside just before renaming the new one in is put back if the new
    one never arrived (otherwise deleted). Leftovers of live processes are kept.
    """
    folder = Path(folder).expanduser().absolute()
    for path, kind, pid in _leftovers(folder):
        if pid_alive(pid):
            continue
        if kind == "old" and not folder.exists():
            os.rename(path, folder)
            fsync_dir(folder.parent)
        else:
            shutil.rmtree(path, ignore_errors=True)


def write_folder(folder: str | os.PathLike[str], write: Callable[[Path], None]) -> Path:
    """Write a checkpoint folder atomically: ``write(tmp)`` fills a temporary sibling,
    which then replaces ``folder`` by rename.

    A ``kill -9`` anywhere leaves ``folder`` complete (old or new content), or,
    between the two renames, moved aside as ``.<name>.old-<pid>``, which
    :func:`recover_folder` (called by every read and write) puts back. An existing
    ``folder`` that is not a projector checkpoint is never replaced.
    """
    folder = Path(folder).expanduser().absolute()
    folder.parent.mkdir(parents=True, exist_ok=True)
    recover_folder(folder)
    if folder.exists():
        if not folder.is_dir():
            raise ProjectorCheckpointError(f"{folder}: exists and is a file, not a checkpoint folder")
        if any(folder.iterdir()) and not _is_checkpoint(folder):
            raise ProjectorCheckpointError(
                f"{folder}: exists and is not a projector checkpoint (no {CONFIG_FILE} of format "
                f"{FORMAT!r}); refusing to replace it: choose another output folder"
            )
    tmp = folder.parent / f".{folder.name}.tmp-{os.getpid()}"
    old = folder.parent / f".{folder.name}.old-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        write(tmp)
        for f in sorted(tmp.rglob("*")):
            if f.is_file():
                fsync_file(f)
        fsync_dir(tmp)
        if folder.exists():
            os.rename(folder, old)
        os.rename(tmp, folder)
        fsync_dir(folder.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old.exists() and not folder.exists():
            os.rename(old, folder)
        raise
    with contextlib.suppress(OSError):
        shutil.rmtree(old)
    return folder


def _is_checkpoint(folder: Path) -> bool:
    try:
        return json.loads((folder / CONFIG_FILE).read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False
