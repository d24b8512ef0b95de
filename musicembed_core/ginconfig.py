"""gin wiring: every registered component becomes ``<kind>.<name>`` in gin.

Order matters (STYLE.md pitfall "No configurable matching"): plugins are loaded
and registered with gin *before* any gin file is parsed. Plugins never import
gin. Unknown names and parameters fail with a message naming the binding, the
file, and the closest known spelling; ``skip_unknown`` is never used.
"""

from __future__ import annotations

import difflib
import inspect
import logging
import re
import shlex
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

import gin
from gin import config_parser

from . import ginpath
from .errors import ConfigError
from .plugins import KINDS, PluginManager, get_manager, install_hint

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
    from .projection import settings  # noqa: F401 - registers `train`, `text_model`, `projection_head`

    _core_registered = True


@contextmanager
def _search_path(folders: Sequence[ginpath.GinFolder]) -> Iterator[None]:
    """gin's include search path is exactly ``folders`` while parsing (never accumulates)."""
    from gin import config as gin_config

    prefixes = gin_config._LOCATION_PREFIXES  # noqa: SLF001 - gin has no public reset
    saved = list(prefixes)
    # '' (gin's own first entry) is the working directory, the first folder of ours.
    prefixes[:] = ["", *(str(f.path) for f in folders if f.provider != "cwd")]
    try:
        yield
    finally:
        prefixes[:] = saved


class _SyntaxOnly(config_parser.ParserDelegate):
    """Parses references and macros without looking them up (syntax check only)."""

    def configurable_reference(self, scoped_configurable_name: str, evaluate: bool) -> None:
        return None

    def macro(self, macro_name: str) -> None:
        return None


_NOT_A_STRING = re.compile(r"""^([-+]?\d|['"@%\[({])""")


def check_binding(binding: str) -> None:
    """A ``--gin_param`` that gin cannot parse fails naming it, with the quoted form to use."""
    try:
        for _ in config_parser.ConfigParser(binding, _SyntaxOnly()):
            pass
    except (SyntaxError, ValueError) as exc:
        lines = (getattr(exc, "msg", None) or str(exc)).splitlines()
        detail = lines[-1].strip()  # "Failed to parse token 'x'" rather than an ast repr
        name, eq, value = binding.partition("=")
        name, value = name.strip(), value.strip()
        shown = f"--gin_param {shlex.quote(binding)}"
        if eq and value and not _NOT_A_STRING.match(value):
            escaped = value.replace("\\", "\\\\").replace('"', '\\"')
            fixed = f'{name}="{escaped}"'
            msg = (
                f"{shown}: the value of {name} ({value}) is not a gin value ({detail}). "
                f"gin values are Python literals, so a string needs quotes of its own inside "
                f"the binding, and single quotes around the whole binding keep the shell from "
                f"removing them:\n  --gin_param {shlex.quote(fixed)}"
            )
        else:
            msg = (
                f"{shown} is not a valid gin binding ({detail}). A binding is NAME.PARAM=VALUE "
                f"with a Python literal, @reference() or %MACRO as VALUE, e.g. "
                f"--gin_param 'run.batch_size=8' or --gin_param 'run.source=\"/path/to/Music\"'."
            )
        raise ConfigError(msg) from exc


def parse(gin_files: Sequence[str], gin_params: Sequence[str], finalize: bool = True) -> None:
    """Load plugins, register them with gin, then parse files and bindings.

    A ``gin_files`` entry is a path, or a name on the gin search path
    (``runs/quickstart.gin``, see :mod:`musicembed_core.ginpath`).
    """
    manager = get_manager()
    register_components(manager)
    files = [str(ginpath.resolve(f, manager)) for f in gin_files]
    for binding in gin_params:
        check_binding(binding)
    folders = ginpath.search_folders(files, manager)
    root = logging.getLogger()
    quiet = _QuietGinSearch()
    root.addFilter(quiet)
    try:
        with _search_path(folders):
            gin.parse_config_files_and_bindings(
                files, list(gin_params), finalize_config=finalize, skip_unknown=False
            )
    except (ValueError, KeyError, TypeError, SyntaxError, OSError, ImportError) as exc:
        raise ConfigError(explain(exc, manager)) from exc
    finally:
        root.removeFilter(quiet)


_NO_CONFIGURABLE = re.compile(r"No configurable matching (?:reference )?'@?([^'()]+)")
_NO_PARAM = re.compile(r"Configurable '([^']+)' doesn't have a parameter named '([^']+)'")


def known_selectors() -> list[str]:
    """Configurables a musicembed gin file may bind: ``<kind>.<name>``, ``run``, ``embedding``,
    and the projector training's ``train``, ``text_model``, ``projection_head``."""
    from gin import config as gin_config

    names: list[str] = []
    for sel, _ in gin_config._REGISTRY.items():  # noqa: SLF001
        if sel.split(".")[0] in KINDS:
            names.append(sel)
        elif sel.startswith(("musicembed_core.runconfig.", "musicembed_core.projection.settings.")):
            names.append(sel.rsplit(".", 1)[-1])
    return sorted(names)


class _QuietGinSearch(logging.Filter):
    """gin logs an ERROR for every include search path it tries; only real misses matter."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Path not found")


def explain(exc: BaseException, manager: PluginManager | None = None,
            gin_files: Sequence[str] = ()) -> str:
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
        clash = manager.conflict_error(kind, wanted.split(".", 1)[1]) if (
            manager is not None and kind in KINDS) else None
        if clash is not None:
            return f"{clash}\n(gin said: {msg})"
        if kind in KINDS and not close:
            hint = f" No installed plugin provides it: {install_hint(kind, wanted.split('.', 1)[1])}."
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
        m = re.search(r"Required bindings for `([^`]+)` not provided in config: \[([^\]]*)\]", msg)
        def label(f: str) -> str:
            path = Path(f)
            empty = path.is_file() and not any(
                line.strip() and not line.lstrip().startswith("#")
                for line in path.read_text(errors="replace").splitlines()
            )
            return f"{f} (which is empty)" if empty else f

        files = ", ".join(label(f) for f in gin_files) if gin_files else "the command line"
        if m:
            selector = m.group(1)
            names = [n.strip(" '\"") for n in m.group(2).split(",") if n.strip()]
            bindings = ", ".join(f"{selector}.{n}" for n in names)
            example = (
                "--gin_file runs/quickstart.gin (a complete run: `musicembed gin show "
                "runs/quickstart.gin`)" if selector == "run" else
                f"--gin_param '{selector}.{names[0] if names else 'PARAM'}=VALUE'"
            )
            return (
                f"{files} does not set {bindings}: a run needs them. Start from a complete run "
                f"file, e.g. {example}, or set each with --gin_param "
                f"'{selector}.{names[0] if names else 'PARAM'}=...'.\n(gin said: {msg})"
            )
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
