"""The declared public API: what plugins may import, and that shipped plugins import nothing else."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

import musicembed_core

REPO = Path(__file__).resolve().parents[1]


def _plugin_sources() -> list[Path]:
    """Package code of every shipped plugin, the template and the example plugin (not their tests)."""
    roots = [p.parent for p in (REPO / "plugins").glob("*/pyproject.toml")]
    roots += [p.parent for p in (REPO / "examples").glob("*/pyproject.toml")]
    files = []
    for root in roots:
        for f in root.rglob("*.py"):
            rel = f.relative_to(root).parts
            if rel[0] in ("tests", "build") or any(part.endswith(".egg-info") for part in rel):
                continue
            files.append(f)
    return sorted(files)


def _core_imports(path: Path) -> list[tuple[int, str]]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            if node.module == "musicembed_core":
                # `from musicembed_core import hub` imports a module: check it too
                names = [n for n in names[1:] if n.rsplit(".", 1)[1] in _submodules()]
                names = names or ["musicembed_core"]
            found += [(node.lineno, names[0])]
        elif isinstance(node, ast.Import):
            found += [(node.lineno, a.name) for a in node.names]
    return [(line, mod) for line, mod in found if mod.split(".")[0] == "musicembed_core"]


def _submodules() -> set[str]:
    core = Path(musicembed_core.__file__).parent
    return {p.stem for p in core.glob("*.py")} | {p.name for p in core.iterdir() if p.is_dir()}


def test_the_scan_finds_the_shipped_plugins():
    rels = [f.relative_to(REPO).parts for f in _plugin_sources()]
    names = {parts[1] for parts in rels if parts[0] == "plugins"}
    assert {"mert", "music2vec", "faiss", "milvus"} <= names


def test_shipped_plugins_import_only_the_public_api():
    bad = []
    for f in _plugin_sources():
        for line, mod in _core_imports(f):
            if mod not in musicembed_core.PUBLIC_MODULES:
                bad.append(f"{f.relative_to(REPO)}:{line}: imports {mod}")
    assert not bad, (
        "plugins must import only musicembed_core's public API "
        f"({', '.join(musicembed_core.PUBLIC_MODULES)}):\n" + "\n".join(bad)
    )


def test_the_scanner_catches_a_private_import(tmp_path):
    f = tmp_path / "plugin.py"
    f.write_text("from musicembed_core.pipeline import Embedder\nfrom musicembed_core import hub, Encoder\n"
                 "import musicembed_core.runner\n")
    found = [mod for _, mod in _core_imports(f)]
    assert found == ["musicembed_core.pipeline", "musicembed_core.hub", "musicembed_core.runner"]
    assert [m for m in found if m not in musicembed_core.PUBLIC_MODULES] == [
        "musicembed_core.pipeline", "musicembed_core.runner"]


@pytest.mark.parametrize("module", musicembed_core.PUBLIC_MODULES)
def test_public_modules_import(module):
    importlib.import_module(module)


def test_every_exported_name_exists_and_the_package_imports_no_torch():
    for name in musicembed_core.__all__:
        assert hasattr(musicembed_core, name), name
    code = ("import sys, musicembed_core; "
            "print(sorted(m for m in ('torch', 'numpy', 'gin', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_what_a_plugin_needs_is_exported():
    for name in ("Encoder", "Enricher", "Exporter", "ModelExporter", "TextProjector", "Sink",
                 "Record", "Hit", "EmbeddingSpace", "Geometry", "hookimpl", "ConfigError",
                 "SpaceMismatchError", "SinkNotFoundError", "atomic_write_json", "atomic_path"):
        assert name in musicembed_core.__all__, name
    from musicembed_core.hub import Checkpoint, ModelLoadError, PretrainedEncoder, load_pickle  # noqa: F401


def test_model_export_is_its_own_package_outside_the_registry_circle():
    """The component registry (builtins) imports the TorchScript exporter; that module must not
    pull in gin or the plugin manager (which import the registry): no import circle."""
    code = ("import sys; import musicembed_core.export.torchscript; "
            "print(sorted(m for m in ('musicembed_core.ginconfig', 'musicembed_core.plugins', "
            "'musicembed_core.export.target') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
