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
* ``MUSICEMBED_DISABLED_PLUGINS=a,b`` blocks those entry points (pluggy's
  ``set_blocked``): listed as disabled, never imported;
* a built-in's name is reserved: a plugin's component of that name is refused
  (recorded on the plugin, logged) and the built-in keeps working;
* two plugins' components of one kind with one name: the name is withdrawn and
  using it raises an error that names both plugins and how to choose one;
* ``register_commands`` hooks run against a scratch click group, so a broken
  hook fails only its plugin and a command never silently replaces another;
  the CLI adds them (:meth:`PluginManager.plugin_commands`).
"""

from __future__ import annotations

import difflib
import logging
import os
import traceback
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable

import pluggy

from . import hookspecs
from .components import KIND_BASES, Component
from .errors import DuplicateComponentError, PluginError, UnknownComponentError

if TYPE_CHECKING:  # pragma: no cover
    import click

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
    """Every hook the plugin implements."""
    components: list[tuple[str, str]] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    """Subcommands added by its ``register_commands`` hook."""
    error: str | None = None
    """Why the whole plugin failed (import or hook error); its components are dropped."""
    refused: list[str] = field(default_factory=list)
    """Single registrations refused (a reserved built-in name, a core command name)."""
    disabled: bool = False
    """Blocked by ``MUSICEMBED_DISABLED_PLUGINS``: listed, never imported."""

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
            "commands": sorted(self.commands),
            "error": self.error,
            "refused": list(self.refused),
            "disabled": self.disabled,
        }


def _strict() -> bool:
    return os.environ.get("MUSICEMBED_STRICT_PLUGINS", "").strip() not in ("", "0", "false", "no")


def _plugin_names(variable: str) -> set[str] | None:
    """The comma-separated plugin names in an environment variable; None when it is unset."""
    raw = os.environ.get(variable)
    if raw is None:
        return None
    return {p.strip() for p in raw.split(",") if p.strip()}


def _disabled() -> set[str]:
    return _plugin_names("MUSICEMBED_DISABLED_PLUGINS") or set()


def _selected() -> set[str] | None:
    return _plugin_names("MUSICEMBED_LOAD_PLUGINS")


class PluginManager:
    """pluggy manager + the registry of components by kind and name."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.components: dict[str, dict[str, ComponentInfo]] = {k: {} for k in KINDS}
        self.conflicts: dict[tuple[str, str], list[str]] = {}
        self.commands: dict[str, list[tuple[str, "click.Command"]]] = {}
        """Command name -> ``(plugin, command)`` for each plugin that adds it."""
        self.loaded = False

    # ------------------------------------------------------------------ loading
    def load(self) -> "PluginManager":
        """Register the built-ins and every selected entry point (once)."""
        if self.loaded:
            return self
        self.loaded = True
        from . import builtins, __version__

        disabled = _disabled()
        if BUILTIN_PLUGIN in disabled:
            log.warning("MUSICEMBED_DISABLED_PLUGINS: the built-ins cannot be disabled")
            disabled.discard(BUILTIN_PLUGIN)
        for name in sorted(disabled):
            self.pm.set_blocked(name)
        self.register_plugin(
            builtins, BUILTIN_PLUGIN, distribution="musicembed", version=__version__
        )
        selected = _selected()
        eps = sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)
        unknown = disabled - {ep.name for ep in eps}
        if unknown:
            log.warning(
                "MUSICEMBED_DISABLED_PLUGINS names %s, which %s not an installed plugin "
                "(installed: %s)", ", ".join(sorted(unknown)),
                "is" if len(unknown) == 1 else "are",
                ", ".join(sorted({ep.name for ep in eps})) or "none",
            )
        for ep in eps:
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
            if self.pm.is_blocked(ep.name):
                info.disabled = True
                self.plugins[ep.name] = info
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
        if self.pm.is_blocked(name):
            info.disabled = True
            self.plugins[name] = info
            return info
        try:
            self.pm.register(obj, name=name)
            self.pm.check_pending()
        except Exception as exc:  # noqa: BLE001 - bad hookimpls are the plugin's fault
            if self.pm.is_registered(obj):
                self.pm.unregister(obj)
            self._fail(info, f"invalid hook implementation: {exc}", exc)
            return info
        info.hooks = sorted(h.name for h in self.pm.get_hookcallers(obj) or [])
        self.plugins[name] = info
        self._collect_plugin(info)
        if info.error:
            self._drop_components(name)
            info.components = []
            info.commands = []
        return info

    def unregister_plugin(self, name: str) -> None:
        obj = self.pm.get_plugin(name)
        if obj is not None:
            self.pm.unregister(obj)
        self._drop_components(name)
        self.plugins.pop(name, None)

    def _collect_plugin(self, info: PluginInfo) -> None:
        """Call each of the plugin's registration hooks; stop at its first error."""
        info.components, info.commands, info.refused = [], [], []
        for hook_name, kind in hookspecs.HOOK_KINDS.items():
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin_name == info.name:
                    self._collect(info, impl.function, hook_name, kind)
                    if info.error:
                        return
        for impl in self.pm.hook.register_commands.get_hookimpls():
            if impl.plugin_name == info.name:
                self._collect_commands(info, impl.function)

    def _collect_commands(self, info: PluginInfo, fn: Any) -> None:
        """Run a ``register_commands`` hook against a scratch group and keep what it added."""
        import click

        scratch = click.Group(name="musicembed")
        try:
            fn(cli=scratch)
        except Exception as exc:  # noqa: BLE001
            self._fail(info, f"register_commands raised {exc!r}", exc)
            return
        for cname, cmd in scratch.commands.items():
            self.commands.setdefault(cname, []).append((info.name, cmd))
            info.commands.append(cname)

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
        builtin = self.components[comp.kind].get(comp.name)
        if comp.plugin != BUILTIN_PLUGIN and builtin is not None and builtin.plugin == BUILTIN_PLUGIN:
            self._refuse(
                info,
                f"{comp.kind}.{comp.name} ({comp.qualname}) of plugin {comp.plugin!r} is refused: "
                f"{comp.name!r} is the name of a built-in {comp.kind[:-1]} ({builtin.qualname}), "
                f"which keeps working. Register it under another name, e.g. "
                f"register({comp.cls.__name__}, name=\"{comp.plugin}_{comp.name}\")",
            )
            return
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
            f"{kind}.{name} is registered by several plugins: "
            f"{', '.join(repr(p) for p in plugins)}. Choose one by disabling the others, e.g. "
            f"MUSICEMBED_DISABLED_PLUGINS={','.join(plugins[1:])} to use {plugins[0]!r}'s "
            f"(comma-separated plugin names, as `musicembed plugins` lists them), or uninstall one."
        )

    def conflict_error(self, kind: str, name: str) -> DuplicateComponentError | None:
        """The error for ``<kind>.<name>`` if several plugins register it, else None."""
        if (kind, name) in self.conflicts:
            return self._conflict_error(kind, name)
        return None

    def _refuse(self, info: PluginInfo, message: str) -> None:
        """Refuse one registration of a plugin that otherwise keeps working."""
        if message in info.refused:
            return
        info.refused.append(message)
        log.warning("musicembed plugin %r: %s", info.name, message)
        if _strict():
            raise PluginError(f"plugin {info.name!r}: {message}")

    # ------------------------------------------------------------------ commands
    def plugin_commands(self, core: Iterable[str]) -> dict[str, "click.Command"]:
        """Plugin subcommands to add to a CLI whose own commands are ``core``.

        A name a core command has is refused (recorded on the plugin). A name two
        plugins add becomes a command that fails naming both and how to choose.
        """
        import click

        core = set(core)
        out: dict[str, click.Command] = {}
        for cname in sorted(self.commands):
            entries = self.commands[cname]
            owners = [plugin for plugin, _ in entries]
            if cname in core:
                for plugin in owners:
                    self._refuse(
                        self.plugins[plugin],
                        f"command {cname!r} of plugin {plugin!r} is refused: `musicembed "
                        f"{cname}` is a core command. Give the plugin's command another name.",
                    )
                continue
            if len(entries) == 1:
                out[cname] = entries[0][1]
                continue
            err = PluginError(
                f"command {cname!r} is added by several plugins: "
                f"{', '.join(repr(p) for p in owners)}. Choose one by disabling the others, "
                f"e.g. MUSICEMBED_DISABLED_PLUGINS={','.join(owners[1:])}"
            )
            log.warning("%s", err)
            if _strict():
                raise err
            out[cname] = _clash_command(cname, err)
        return out

    def _drop_components(self, plugin: str) -> None:
        """Remove a plugin's components and re-derive the registry from the others."""
        self.components = {k: {} for k in KINDS}
        self.conflicts = {}
        self.commands = {}
        for name, info in list(self.plugins.items()):
            if name == plugin or info.error or info.disabled:
                continue
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
            f"{', '.join(known) or '(none)'}.{extra} Check the spelling, or install the "
            f"plugin that provides it: {install_hint(kind, name)}."
        )

    def create(self, kind: str, name: str, **kwargs: Any) -> Component:
        return self.get(kind, name).cls(**kwargs)

    def all_components(self) -> Iterable[ComponentInfo]:
        for kind in KINDS:
            yield from (self.components[kind][n] for n in sorted(self.components[kind]))

    def gin_folders(self) -> list[tuple[str, Path]]:
        """``(plugin, folder)`` for each gin folder declared by ``register_gin_folders``.

        In plugin load order. A plugin whose hook raises or names a missing folder
        is skipped with a warning (re-raised with ``MUSICEMBED_STRICT_PLUGINS=1``).
        """
        impls = {i.plugin_name: i for i in self.pm.hook.register_gin_folders.get_hookimpls()}
        out: list[tuple[str, Path]] = []
        for name, info in self.plugins.items():
            if name not in impls or info.error:
                continue
            found: list[Path] = []
            try:
                impls[name].function(register=lambda path: found.append(Path(path)))
                missing = [str(p) for p in found if not p.is_dir()]
                if missing:
                    raise PluginError(f"register_gin_folders named missing folders: {missing}")
            except Exception as exc:  # noqa: BLE001 - one plugin's bad hook stays its own
                log.warning("musicembed plugin %r: gin folders ignored: %r", name, exc)
                if _strict():
                    raise PluginError(f"plugin {name!r}: register_gin_folders: {exc}") from exc
                continue
            out += [(name, p) for p in found]
        return out


def _clash_command(name: str, error: PluginError) -> "click.Command":
    """A stand-in for a command two plugins add: running it explains the clash."""
    import click

    def clash(args: tuple[str, ...]) -> None:
        raise error

    return click.Command(
        name,
        callback=clash,
        params=[click.Argument(["args"], nargs=-1, type=click.UNPROCESSED)],
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
        help=f"(unavailable: {error})",
        add_help_option=False,
    )


PLUGINS_FOLDER = Path(__file__).resolve().parents[1] / "plugins"
"""The musicembed checkout's plugins/ folder (absent when the core is installed from a wheel)."""


def install_hint(kind: str, name: str) -> str:
    """How to install the plugin that provides ``<kind>.<name>``, as a phrase.

    The shipped plugins are not on the package index: they are installed from
    the plugins/ folder of a musicembed checkout, one folder per package, named
    after the component it provides.
    """
    guesses = list(dict.fromkeys([name, name.replace("_", "-"), name.split("_")[0]]))
    if PLUGINS_FOLDER.is_dir():
        folders = sorted(
            d.name for d in PLUGINS_FOLDER.iterdir()
            if (d / "pyproject.toml").is_file() and not d.name.startswith(("_", "."))
        )
        for guess in guesses:
            if guess in folders:
                return f"pip install {_shown_path(PLUGINS_FOLDER / guess)}"
        return (
            f"no folder of {_shown_path(PLUGINS_FOLDER)} is named after {name!r} (there are: "
            f"{', '.join(folders) or 'none'}; plugins/README.md says what each provides): "
            f"pip install {_shown_path(PLUGINS_FOLDER)}/<folder>, or install the third-party "
            f"plugin that provides {kind}.{name}"
        )
    return (
        f"musicembed's plugins are not on the package index; from a checkout of the "
        f"musicembed repository, pip install ./plugins/{guesses[1]} (plugins/README.md says "
        f"which folder provides which component), or install the third-party plugin that "
        f"provides {kind}.{name}"
    )


def _shown_path(path: Path) -> str:
    rel = os.path.relpath(path)
    return f"./{rel}" if not rel.startswith("..") else str(path)


_manager: PluginManager | None = None


def get_manager() -> PluginManager:
    """The process-wide manager, loaded on first use."""
    global _manager
    if _manager is None:
        _manager = PluginManager()
        _manager.load()
    return _manager
