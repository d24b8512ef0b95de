"""gin wiring: every registered component becomes ``<kind>.<name>`` in gin.

Order matters (STYLE.md pitfall "No configurable matching"): plugins are loaded
and registered with gin *before* any gin file is parsed. Plugins never import
gin. Unknown names and parameters fail with a message naming the binding, the
file, and the closest known spelling; ``skip_unknown`` is never used.
"""

from __future__ import annotations

import difflib
import logging
import inspect
import os
import re
from pathlib import Path
from typing import Sequence

import gin

from .errors import ConfigError
from .plugins import KINDS, PluginManager, get_manager

# selector -> class we registered (so re-registration after a plugin change is possible)
_registered: dict[str, type] = {}
_core_registered = False


def forget_registrations() -> None:
    """Drop musicembed's component registrations from gin (tests, plugin reloads)."""
    from gin import config as gin_config

    for selector, cls in list(_registered.items()):
        try:
            info = gin_config._REGISTRY.get(selector)  # noqa: SLF001 - gin has no public unregister
        except Exception:  # noqa: BLE001
            info = None
        if info is not None:
            gin_config._REGISTRY.pop(selector)  # noqa: SLF001
            gin_config._INVERSE_REGISTRY.pop(info.wrapped, None)  # noqa: SLF001
        _registered.pop(selector, None)


def register_components(manager: PluginManager | None = None) -> None:
    """Make every loaded component configurable as ``<kind>.<name>`` (idempotent)."""
    _register_core()
    manager = manager or get_manager()
    wanted = {f"{c.kind}.{c.name}": c.cls for c in manager.all_components()}
    stale = {s: c for s, c in _registered.items() if wanted.get(s) is not c}
    if stale:
        forget_registrations()
    for selector, cls in wanted.items():
        if _registered.get(selector) is cls:
            continue
        kind, name = selector.split(".", 1)
        gin.external_configurable(cls, name=name, module=kind)
        _registered[selector] = cls


def _register_core() -> None:
    global _core_registered
    if _core_registered:
        return
    from . import runconfig  # noqa: F401 - registers `run` and `embedding`

    _core_registered = True


_INCLUDE = re.compile(r"""^\s*include\s+['"]([^'"]+)['"]""", re.M)


def _gin_roots(path: Path) -> list[Path]:
    p = path.resolve().parent
    roots = [p]
    for parent in [p, *p.parents]:
        if parent.name == "gin":
            roots += [parent, parent.parent]
            break
    return roots


def add_search_paths(gin_files: Sequence[str]) -> None:
    """Let ``include 'encoders/x.gin'`` resolve from the gin root of each file involved.

    Include lines are followed recursively, so a run file outside ``gin/`` may
    include ``gin/runs/quickstart.gin``, whose own includes are relative to ``gin/``.
    """
    paths: list[Path] = [Path.cwd()]
    env = os.environ.get("MUSICEMBED_GIN_PATH", "")
    paths += [Path(p) for p in env.split(os.pathsep) if p]
    bundled = Path(__file__).resolve().parents[1] / "gin"
    if bundled.is_dir():
        paths += [bundled, bundled.parent]
    todo = [Path(f) for f in gin_files]
    seen: set[Path] = set()
    while todo:
        f = todo.pop()
        if f in seen or not f.is_file():
            continue
        seen.add(f)
        paths += _gin_roots(f)
        for inc in _INCLUDE.findall(f.read_text(errors="replace")):
            cand = [Path(inc)] if Path(inc).is_absolute() else [d / inc for d in paths]
            todo += [c for c in cand if c.is_file()][:1]
    for path in dict.fromkeys(str(p) for p in paths):
        gin.add_config_file_search_path(path)


def parse(gin_files: Sequence[str], gin_params: Sequence[str], finalize: bool = True) -> None:
    """Load plugins, register them with gin, then parse files and bindings."""
    manager = get_manager()
    register_components(manager)
    for f in gin_files:
        if not Path(f).is_file():
            raise ConfigError(f"gin file not found: {f} (paths are relative to {os.getcwd()})")
    add_search_paths(gin_files)
    root = logging.getLogger()
    quiet = _QuietGinSearch()
    root.addFilter(quiet)
    try:
        gin.parse_config_files_and_bindings(
            list(gin_files), list(gin_params), finalize_config=finalize, skip_unknown=False
        )
    except (ValueError, KeyError, TypeError, SyntaxError, OSError, ImportError) as exc:
        raise ConfigError(explain(exc, manager)) from exc
    finally:
        root.removeFilter(quiet)


_NO_CONFIGURABLE = re.compile(r"No configurable matching (?:reference )?'@?([^'()]+)")
_NO_PARAM = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


def known_selectors() -> list[str]:
    """Configurables a musicembed gin file may bind: ``<kind>.<name>``, ``run``, ``embedding``."""
    from gin import config as gin_config

    names: list[str] = []
    for sel, _ in gin_config._REGISTRY.items():  # noqa: SLF001
        if sel.split(".")[0] in KINDS:
            names.append(sel)
        elif sel.startswith("musicembed_core.runconfig."):
            names.append(sel.rsplit(".", 1)[-1])
    return sorted(names)


class _QuietGinSearch(logging.Filter):
    """gin logs an ERROR for every include search path it tries; only real misses matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


def explain(exc: BaseException, manager: PluginManager | None = None) -> str:
    """Turn a gin exception into a message that names the binding and the fix."""
    msg = str(exc)
    m = _NO_CONFIGURABLE.search(msg)
    if m:
        wanted = m.group(1).split("/")[-1]
        known = known_selectors()
        kind = wanted.split(".")[0] if "." in wanted else ""
        same_kind = [k for k in known if k.startswith(kind + ".")] if kind in KINDS else known
        close = difflib.get_close_matches(wanted, same_kind, n=3, cutoff=0.6)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        if kind in KINDS and not close:
            hint = (
                f" No installed plugin provides it: install the plugin that does "
                f"(e.g. pip install musicembed-{wanted.split('.', 1)[1].replace('_', '-')})."
            )
        broken = ""
        if manager is not None:
            bad = [p.name for p in manager.plugins.values() if p.error]
            if bad:
                broken = f" Plugins that failed to load: {', '.join(bad)} (run `musicembed plugins`)."
        return (
            f"unknown gin configurable {wanted!r}.{hint} Components are bound as "
            f"<kind>.<name> with kinds {', '.join(KINDS)}; run `musicembed plugins` to list "
            f"them.{broken}\n(gin said: {msg})"
        )
    m = _NO_PARAM.search(msg)
    if m:
        selector, param = m.group(1), m.group(2)
        params = parameters_of(selector)
        close = difflib.get_close_matches(param, params, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        return (
            f"{selector!r} has no parameter {param!r}.{hint} Its parameters: "
            f"{', '.join(params) or '(none)'}.\n(gin said: {msg})"
        )
    if "Required bindings" in msg or "REQUIRED" in msg:
        return f"{msg}\nSet it in a gin file or with --gin_param 'NAME.PARAM=VALUE'."
    return f"gin configuration error: {msg}"


def parameters_of(selector: str) -> list[str]:
    from gin import config as gin_config

    try:
        info = gin_config._REGISTRY.get_match(selector)  # noqa: SLF001
    except Exception:  # noqa: BLE001
        info = None
    if info is None:
        return []
    target = info.wrapped
    fn = target.__init__ if inspect.isclass(target) else target
    return [
        p
        for p in inspect.signature(fn).parameters
        if p not in ("self", "args", "kwargs")
    ]


def operative_config() -> str:
    return gin.operative_config_str()


def clear() -> None:
    """Clear bindings (not registrations): tests call this between cases."""
    gin.clear_config(clear_constants=True)
