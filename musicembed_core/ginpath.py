"""Where gin files come from: one search path for includes, ``--gin_file`` and ``musicembed gin``.

Gin files ship as package data (the core's generic ones in ``musicembed_core/gin``, a
plugin's variant files in its own package, declared with the ``register_gin_folders``
hook), so a name such as ``runs/quickstart.gin`` or ``encoders/mert_v1_95m.gin`` works
after a plain ``pip install``, from any folder. Search order, first match wins:

1. the working directory;
2. the folders in ``MUSICEMBED_GIN_PATH`` (``os.pathsep``-separated);
3. the folder of each gin file involved and the ``gin/`` folder above it, if any
   (so a project's own gin tree includes its own files);
4. the core's packaged folder;
5. each loaded plugin's declared folders, in plugin load order.

This module imports neither gin nor torch: ``musicembed gin list`` stays fast.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Sequence

from .errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from .plugins import PluginManager

CORE_GIN = Path(__file__).resolve().parent / "gin"
"""The core's packaged gin folder (``musicembed_core/gin``)."""

ENV = "MUSICEMBED_GIN_PATH"
CORE_PROVIDER = "musicembed"

_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""", re.M)


@dataclass(frozen=True)
class GinFolder:
    """One folder of the search path and who put it there."""

    path: Path
    provider: str
    """``cwd``, ``MUSICEMBED_GIN_PATH``, ``file``, ``musicembed`` (the core) or a plugin name."""
    distribution: str | None = None


@dataclass
class GinFile:
    """A gin file reachable by name, plus the copies of that name it hides."""

    name: str
    path: Path
    folder: GinFolder
    shadowed: list[GinFolder] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "name": self.name,
            "path": str(self.path),
            "provider": self.folder.provider,
            "distribution": self.folder.distribution,
            "shadows": [
                {"provider": f.provider, "path": str(f.path / self.name)} for f in self.shadowed
            ],
        }


def env_folders() -> list[GinFolder]:
    raw = os.environ.get(ENV, "")
    return [GinFolder(Path(p).expanduser(), ENV) for p in raw.split(os.pathsep) if p]


def packaged_folders(manager: PluginManager | None = None) -> list[GinFolder]:
    """The core's folder, then every loaded plugin's declared folders."""
    from .plugins import get_manager

    manager = manager or get_manager()
    out = [GinFolder(CORE_GIN, CORE_PROVIDER, CORE_PROVIDER)]
    for plugin, path in manager.gin_folders():
        info = manager.plugins.get(plugin)
        out.append(GinFolder(path.resolve(), plugin, info.distribution if info else None))
    return out


def _roots_of(path: Path) -> list[Path]:
    """A gin file's folder and the nearest enclosing folder named ``gin``."""
    folder = path.resolve().parent
    for parent in [folder, *folder.parents]:
        if parent.name == "gin":
            return [folder, parent]
    return [folder]


def find(name: str | os.PathLike, folders: Iterable[GinFolder]) -> Path | None:
    """The first ``folder / name`` that is a file (absolute names: the name itself)."""
    p = Path(name).expanduser()
    if p.is_absolute():
        return p if p.is_file() else None
    for folder in folders:
        cand = folder.path / p
        if cand.is_file():
            return cand
    return None


def search_folders(
    gin_files: Sequence[str | os.PathLike] = (), manager: PluginManager | None = None
) -> list[GinFolder]:
    """The full search path for parsing ``gin_files`` (their includes followed recursively)."""
    head = [GinFolder(Path.cwd(), "cwd"), *env_folders()]
    tail = packaged_folders(manager)
    roots: list[GinFolder] = []
    todo = [Path(f) for f in gin_files]
    seen: set[Path] = set()
    while todo:
        f = todo.pop(0)
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        roots += [GinFolder(r, "file") for r in _roots_of(f)]
        for inc in _INCLUDE.findall(f.read_text(errors="replace")):
            found = find(inc, [*head, *roots, *tail])
            if found is not None:
                todo.append(found)
    out: list[GinFolder] = []
    for folder in [*head, *roots, *tail]:
        if all(folder.path != o.path for o in out):
            out.append(folder)
    return out


def listed_folders(manager: PluginManager | None = None) -> list[GinFolder]:
    """The folders ``musicembed gin list`` shows: ``MUSICEMBED_GIN_PATH``, core, plugins."""
    return [*env_folders(), *packaged_folders(manager)]


def catalog(manager: PluginManager | None = None) -> list[GinFile]:
    """Every gin file reachable by name from ``MUSICEMBED_GIN_PATH`` and the packages.

    The working directory is searched too when a run names a file, but it is not
    listed (it may hold any number of unrelated ``.gin`` files).
    """
    files: dict[str, GinFile] = {}
    for folder in listed_folders(manager):
        if not folder.path.is_dir():
            continue
        for path in sorted(folder.path.rglob("*.gin")):
            name = path.relative_to(folder.path).as_posix()
            if name in files:
                if files[name].path.resolve() != path.resolve():
                    files[name].shadowed.append(folder)
            else:
                files[name] = GinFile(name, path, folder)
    return sorted(files.values(), key=lambda f: f.name)


def resolve(name: str | os.PathLike, manager: PluginManager | None = None) -> Path:
    """``--gin_file`` argument -> file: an existing path, else a name on the search path.

    The error says where it looked and names the closest available files.
    """
    p = Path(name).expanduser()
    if p.is_file():
        return p
    folders = search_folders((), manager)
    found = find(name, folders)
    if found is not None:
        return found
    known = [f.name for f in catalog(manager)]
    stripped = p.as_posix().removeprefix("gin/")
    close = [stripped] if stripped in known else difflib.get_close_matches(
        stripped, known, n=3, cutoff=0.6
    )
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = "\n".join(f"  {f.path}  ({f.provider})" for f in folders)
    raise ConfigError(
        f"gin file not found: {name}.{hint} Looked for it as a path (relative to "
        f"{os.getcwd()}) and as a name in:\n{where}\n`musicembed gin list` shows every "
        f"available gin file; a plugin's files appear once the plugin is installed."
    )
