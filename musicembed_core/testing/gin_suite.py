"""Conformance suite for the gin files a plugin ships: subclass it and name the plugin.

::

    from musicembed_core.testing import GinFolderSuite
    import my_plugin

    class TestMyGinFiles(GinFolderSuite):
        plugin = "my-plugin"                      # the entry point name
        package = my_plugin                       # its gin folder is <package>/gin
        expected = {"encoders/mine.gin", "runs/mine.gin"}

It checks that the folder is declared through ``register_gin_folders`` (so
``include 'encoders/mine.gin'`` works from any folder once the plugin is
installed), that each file opens with a comment header (what it is, what is
required, what is commonly overridden), that each one parses by name, and that
each ``runs/`` file builds a run (components constructed, no weights loaded).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import pytest


class GinFolderSuite:
    """Reusable checks of a plugin's packaged gin folder."""

    plugin: ClassVar[str] = ""
    """Entry point name of the plugin (as ``musicembed plugins`` lists it)."""
    package: ClassVar[ModuleType | None] = None
    """The plugin's package; its gin folder is ``<package dir>/gin``."""
    expected: ClassVar[set[str]] = set()
    """Names (relative to the folder) the plugin must ship."""
    run_params: ClassVar[tuple[str, ...]] = ()
    """Extra gin bindings when building each run file (``run.source`` is set for you)."""
    requires: ClassVar[dict[str, str]] = {}
    """File name -> another plugin it needs (e.g. a run pairing two models); the file is
    checked only when that plugin is installed."""

    def gin_folder(self) -> Path:
        if self.package is None or not self.plugin:
            pytest.fail(f"{type(self).__name__} must set `plugin` and `package`")
        return Path(self.package.__file__).resolve().parent / "gin"

    def gin_files(self) -> list[str]:
        folder = self.gin_folder()
        return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.gin"))

    @pytest.fixture
    def gin_manager(self, musicembed_manager: Any) -> Any:
        from .. import ginconfig

        if self.plugin not in musicembed_manager.plugins:
            pytest.skip(f"plugin {self.plugin!r} is not installed")
        info = musicembed_manager.plugins[self.plugin]
        assert not info.error, f"plugin {self.plugin!r} failed to load: {info.error}"
        ginconfig.register_components(musicembed_manager)
        return musicembed_manager

    # ------------------------------------------------------------------ checks
    def test_the_folder_is_declared_and_ships_the_expected_files(self, gin_manager: Any) -> None:
        folder = self.gin_folder()
        declared = [(name, Path(p).resolve()) for name, p in gin_manager.gin_folders()]
        assert (self.plugin, folder) in declared, (
            f"{folder} is not declared: implement register_gin_folders(register) and call "
            f"register(Path(__file__).parent / 'gin'); declared: {declared}"
        )
        missing = sorted(self.expected - set(self.gin_files()))
        assert not missing, f"{folder} lacks {missing}"

    def test_every_file_has_a_comment_header(self) -> None:
        for name in self.gin_files():
            text = (self.gin_folder() / name).read_text()
            first = text.lstrip().splitlines()[0] if text.strip() else ""
            assert first.startswith("#"), (
                f"{name} should open with a comment header saying what it is, what is "
                "required and what is commonly overridden"
            )

    def test_every_file_parses_by_name_and_runs_build(
        self, gin_manager: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from .. import ginconfig
        from ..runconfig import run_config

        monkeypatch.chdir(tmp_path)  # found through the plugin's folder, not the cwd
        for name in self.gin_files():
            needs = self.requires.get(name)
            if needs and needs not in gin_manager.plugins:
                continue
            ginconfig.clear()
            is_run = name.startswith("runs/")
            params = [f"run.source = '{tmp_path}'", *self.run_params] if is_run else []
            try:
                ginconfig.parse([name], params, finalize=False)
                if is_run:
                    cfg = run_config()
                    assert cfg.embeddings, f"{name}: the run has no embeddings"
            finally:
                ginconfig.clear()
