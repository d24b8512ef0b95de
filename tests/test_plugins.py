"""Plugin discovery: built-ins, broken plugins, duplicates, subsets, fast listing."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

from musicembed_core import Encoder, Enricher, hookimpl, hookspecs
from musicembed_core.errors import DuplicateComponentError, UnknownComponentError

from musicembed_core.testing import REPO, make_fake_dist, run_cli


def test_builtins_provide_the_core_components(manager):
    builtins = manager.plugins["builtins"]
    assert builtins.error is None
    assert builtins.version
    names = {(k, n) for k, n in builtins.components}
    for expected in [("encoders", "logmel"), ("enrichers", "mean"), ("enrichers", "iqr"),
                     ("enrichers", "delta_mean"), ("enrichers", "l2_normalize"),
                     ("exporters", "hdf5"), ("exporters", "safetensors")]:
        assert expected in names
    assert set(builtins.hooks) == {"register_encoders", "register_enrichers", "register_exporters"}


def test_unknown_component_names_the_closest(manager):
    with pytest.raises(UnknownComponentError, match="Did you mean 'logmel'"):
        manager.get("encoders", "logmle")


def test_duplicate_component_is_an_error_naming_both_plugins(manager):
    class Other(Encoder):
        name = "logmel"

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_encoders(register):
        register(Other)

    plugin.register_encoders = register_encoders
    manager.add(plugin, "dupe-plugin")
    with pytest.raises(DuplicateComponentError, match="'builtins', 'dupe-plugin'"):
        manager.get("encoders", "logmel")
    manager.unregister_plugin("dupe-plugin")
    assert manager.get("encoders", "logmel").plugin == "builtins"


def test_register_rejects_a_non_component_and_keeps_the_rest(manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_enrichers(register):
        register(dict)

    plugin.register_enrichers = register_enrichers
    info = manager.add(plugin, "bad-register")
    assert "not a subclass of musicembed_core.Enricher" in info.error
    assert manager.get("encoders", "logmel")


def test_hookimpl_with_a_misspelled_hook_is_reported(manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_encoder(register):  # missing "s"
        pass

    plugin.register_encoder = register_encoder
    info = manager.add(plugin, "typo-plugin")
    assert "register_encoder" in info.error


def test_temporary_plugin_component_is_usable(manager):
    class Half(Enricher):
        name = "halve"
        stage = "vector"

        def enrich(self, x):
            return x / 2

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_enrichers(register):
        register(Half)

    plugin.register_enrichers = register_enrichers
    manager.add(plugin, "halver")
    assert manager.create("enrichers", "halve").name == "halve"


@pytest.fixture
def fake_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "broken_plugin", "raise ImportError('needs libfoo, which is missing')")
    make_fake_dist(site, "good_plugin", """
        from musicembed_core import Enricher, hookimpl

        class Triple(Enricher):
            name = "triple"
            stage = "vector"
            def enrich(self, x):
                return x * 3

        @hookimpl
        def register_enrichers(register):
            register(Triple)
    """)
    return site


def test_broken_plugin_is_reported_and_the_rest_keep_working(fake_site):
    env = {"PYTHONPATH": str(fake_site)}
    proc = run_cli("plugins", "--json", env=env)
    data = {p["name"]: p for p in json.loads(proc.stdout)}
    assert "needs libfoo" in data["broken_plugin"]["error"]
    assert data["broken_plugin"]["version"] == "1.2.3"
    assert data["good_plugin"]["error"] is None
    assert data["good_plugin"]["components"] == {"enrichers": ["triple"]}
    assert data["builtins"]["error"] is None
    assert "broken_plugin" in proc.stderr  # the warning
    table = run_cli("plugins", env=env).stdout
    assert "needs libfoo" in table.replace("\n", "").replace("│", "").replace(" ", "") or "libfoo" in table


def test_strict_mode_reraises_a_broken_plugin(fake_site):
    proc = run_cli("plugins", env={"PYTHONPATH": str(fake_site), "MUSICEMBED_STRICT_PLUGINS": "1"},
                   check=False)
    assert proc.returncode != 0
    assert "needs libfoo" in proc.stderr


def test_load_plugins_selects_a_subset(fake_site):
    env = {"PYTHONPATH": str(fake_site), "MUSICEMBED_LOAD_PLUGINS": "good_plugin"}
    names = [p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)]
    assert names == ["builtins", "good_plugin"]
    env["MUSICEMBED_LOAD_PLUGINS"] = ""
    names = [p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)]
    assert names == ["builtins"]


def test_listing_plugins_imports_no_torch_and_no_gin():
    code = (
        "import sys; from musicembed_core.cli import main\n"
        "try:\n    main(['plugins', '--json'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('torch', 'gin', 'h5py', 'transformers') if m in sys.modules]\n"
        "    assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["name"] == "builtins"


def test_every_hook_is_documented_and_tested():
    """datasette-style meta-test: docs/hooks.md and the tests cover every hookspec."""
    docs = (REPO / "docs" / "hooks.md").read_text()
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    for hook in hookspecs.HOOK_KINDS:
        assert f"## {hook}" in docs, f"docs/hooks.md lacks a section for {hook}"
        assert f"def {hook}(" in tests or hook in tests, f"no test implements {hook}"
