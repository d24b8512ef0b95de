"""Plugin discovery and the component registry.

Plugins are modules exposed through the ``musicembed`` entry point group (the
built-ins are registered the same way, as plugin ``builtins``). Loading is lazy
and idempotent: :func:`get_manager` loads once per process.

Robustness rules (DESIGN.md):

* a plugin that fails to import or to register is recorded (``musicembed
  plugins`` shows it, a warning is logged) and the others keep working; with
  ``MUSICEMBED_STRICT_PLUGINS=1`` the error is re-raised;
* ``MUSICEMBED_LOAD_PLUGINS=a,b`` loads only those entry points ('' loads none;
  the built-ins are always loaded);
* two components of one kind with one name: the name is withdrawn and using it
  raises an error that names both plugins.
"""

from __future__ import annotations

import difflib
import logging
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Iterable

import pluggy

from . import hookspecs
from .components import KIND_BASES, Component
from .errors import DuplicateComponentError, PluginError, UnknownComponentError

ENTRY_POINT_GROUP = "musicembed"
BUILTIN_PLUGIN = "builtins"
KINDS: tuple[str, ...] = tuple(hookspecs.HOOK_KINDS.values())

log = logging.getLogger("musicembed")


@dataclass
class ComponentInfo:
    kind: str
    name: str
    cls: type
    plugin: str

    @property
    def qualname(self) -> str:
        return f"{self.cls.__module__}.{self.cls.__qualname__}"


@dataclass
class PluginInfo:
    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    hooks: list[str] = field(default_factory=list)
    components: list[tuple[str, str]] = field(default_factory=list)
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "distribution": self.distribution,
            "version": self.version,
            "module": self.module,
            "hooks": self.hooks,
            "components": {
                kind: sorted(n for k, n in self.components if k == kind)
                for kind in KINDS
                if any(k == kind for k, _ in self.components)
            },
            "error": self.error,
        }


def _strict() -> bool:
    return os.environ.get("MUSICEMBED_STRICT_PLUGINS", "").strip() not in ("", "0", "false", "no")


def _selected() -> set[str] | None:
    raw = os.environ.get("MUSICEMBED_LOAD_PLUGINS")
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


class PluginManager:
    """pluggy manager + the registry of components by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self.conflicts: dict[tuple[str, str], list[str]] = {}
        self.loaded = False

    # ------------------------------------------------------------------ loading
    def load(self) -> "PluginManager":
        """Register the built-ins and every selected entry point (once)."""
        if self.loaded:
            return self
        self.loaded = True
        from . import builtins, __version__

        self.register_plugin(
            builtins, BUILTIN_PLUGIN, distribution="musicembed", version=__version__
        )
        selected = _selected()
        for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
            if selected is not None and ep.name not in selected:
                continue
            dist = getattr(ep, "dist", None)
            info = PluginInfo(
                name=ep.name,
                distribution=dist.metadata["Name"] if dist is not None else None,
                version=dist.version if dist is not None else None,
                module=ep.value,
            )
            if ep.name in self.plugins:
                self._fail(info, f"another plugin is already registered as {ep.name!r}")
                continue
            try:
                obj = ep.load()
            except Exception as exc:  # noqa: BLE001 - any import error is the plugin's
                self._fail(info, f"import of {ep.value!r} failed: {exc!r}", exc)
                continue
            self.register_plugin(obj, ep.name, info=info)
        return self

    def register_plugin(
        self,
        obj: Any,
        name: str,
        *,
        distribution: str | None = None,
        version: str | None = None,
        info: PluginInfo | None = None,
    ) -> PluginInfo:
        """Register one plugin object (module or instance) and collect its components.

        Tests use this (with :meth:`unregister_plugin`) to add plugins temporarily.
        """
        info = info or PluginInfo(
            name=name,
            distribution=distribution,
            version=version,
            module=getattr(obj, "__name__", type(obj).__name__),
        )
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - bad hookimpls are the plugin's fault
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            self._fail(info, f"invalid hook implementation: {exc}", exc)
            return info
        info.hooks = sorted(
            h.name for h in self.pm.get_hookcallers(obj) or [] if h.name in hookspecs.HOOK_KINDS
        )
        self.plugins[name] = info
        self._collect_plugin(info)
        if info.error:
            self._drop_components(name)
            info.components = []
        return info

    def unregister_plugin(self, name: str) -> None:
        obj = self.pm.get_plugin(name)
        if obj is not None:
            self.pm.unregister(obj)
        self._drop_components(name)
        self.plugins.pop(name, None)

    def _collect_plugin(self, info: PluginInfo) -> None:
        """Call each of the plugin's registration hooks; stop at its first error."""
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == info.name:
                    self._collect(info, impl.function, hook_name, kind)
                    if info.error:
                        return

    def _collect(self, info: PluginInfo, fn: Any, hook_name: str, kind: str) -> None:
        found: list[ComponentInfo] = []

        def register(cls: type, name: str | None = None) -> None:
            base = KIND_BASES[kind]
            if not (isinstance(cls, type) and issubclass(cls, base)):
                raise PluginError(
                    f"{hook_name} registered {cls!r}, which is not a subclass of "
                    f"musicembed_core.{base.__name__}"
                )
            cname = name or getattr(cls, "name", "")
            if not cname or not isinstance(cname, str):
                raise PluginError(
                    f"{hook_name} registered {cls.__qualname__} without a name: set the class "
                    f"attribute `name` or call register(cls, name=...)"
                )
            found.append(ComponentInfo(kind, cname, cls, info.name))

        try:
            fn(register=register)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, f"{hook_name} raised {exc!r}", exc)
            return
        for comp in found:
            self._add(info, comp)

    def _add(self, info: PluginInfo, comp: ComponentInfo) -> None:
        key = (comp.kind, comp.name)
        if key in self.conflicts:
            self.conflicts[key].append(comp.plugin)
        elif comp.name in self.components[comp.kind]:
            first = self.components[comp.kind].pop(comp.name)
            self.conflicts[key] = [first.plugin, comp.plugin]
        else:
            self.components[comp.kind][comp.name] = comp
        info.components.append(key)
        if key in self.conflicts:
            err = self._conflict_error(*key)
            log.warning("%s", err)
            if _strict():
                raise err

    def _conflict_error(self, kind: str, name: str) -> DuplicateComponentError:
        plugins = self.conflicts[(kind, name)]
        return DuplicateComponentError(
            f"{kind} component {name!r} is registered by several plugins: "
            f"{', '.join(repr(p) for p in plugins)}. Uninstall one of them, or load a "
            f"subset with MUSICEMBED_LOAD_PLUGINS."
        )

    def _drop_components(self, plugin: str) -> None:
        """Remove a plugin's components and re-derive the registry from the others."""
        self.components = {k: {} for k in KINDS}
        self.conflicts = {}
        for name, info in list(self.plugins.items()):
            if name == plugin or info.error:
                continue
            info.components = []
            self._collect_plugin(info)

    def _fail(self, info: PluginInfo, message: str, exc: BaseException | None = None) -> None:
        info.error = message
        self.plugins[info.name] = info
        log.warning("musicembed plugin %r could not be loaded: %s", info.name, message)
        if exc is not None:
            log.debug("".join(traceback.format_exception(exc)))
        if _strict():
            if exc is not None:
                raise PluginError(f"plugin {info.name!r}: {message}") from exc
            raise PluginError(f"plugin {info.name!r}: {message}")

    # ------------------------------------------------------------------ lookup
    def names(self, kind: str) -> list[str]:
        return sorted(set(self.components[kind]) | {n for k, n in self.conflicts if k == kind})

    def get(self, kind: str, name: str) -> ComponentInfo:
        """Look up a component; errors name the closest known names and broken plugins."""
        if kind not in self.components:
            raise UnknownComponentError(f"unknown component kind {kind!r}; kinds are {', '.join(KINDS)}")
        if (kind, name) in self.conflicts:
            raise self._conflict_error(kind, name)
        try:
            return self.components[kind][name]
        except KeyError:
            pass
        known = self.names(kind)
        close = difflib.get_close_matches(name, known, n=3)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        broken = [p.name for p in self.plugins.values() if p.error]
        extra = (
            f" Plugins that failed to load: {', '.join(broken)} (see `musicembed plugins`)."
            if broken
            else ""
        )
        raise UnknownComponentError(
            f"no {kind} component named {name!r}.{hint} Known {kind}: "
            f"{', '.join(known) or '(none)'}.{extra} Install the plugin that provides it "
            f"(pip install musicembed-<name>) or check the spelling."
        )

    def create(self, kind: str, name: str, **kwargs: Any) -> Component:
        return self.get(kind, name).cls(**kwargs)

    def all_components(self) -> Iterable[ComponentInfo]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in sorted(self.components[kind]))


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
        _manager.load()
    return _manager
