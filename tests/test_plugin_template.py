"""`musicembed new-plugin NAME`: the generated package installs, passes its own tests
(the conformance suite included) and is listed by `musicembed plugins`."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import pytest

from musicembed_core.errors import ConfigError
from musicembed_core.plugin_template import plugin_names, write_plugin
from musicembed_core.testing import REPO, run_cli


def test_names_of_a_plugin():
    names = plugin_names("Spectral-Stats")
    assert (names.distribution, names.module, names.component, names.cls) == (
        "musicembed-spectral-stats", "musicembed_spectral_stats", "spectral_stats",
        "SpectralStatsEncoder",
    )
    assert plugin_names("musicembed-chroma_x").module == plugin_names("chroma-x").module == "musicembed_chroma_x"
    for bad in ("", "2fast", "has space", "dots.no", "-lead", "trail_"):
        with pytest.raises(ConfigError, match="not valid"):
            plugin_names(bad)


def test_refuses_a_builtin_name_and_a_non_empty_folder(tmp_path):
    with pytest.raises(ConfigError, match="built-in encoder"):
        write_plugin("logmel", tmp_path, reserved={"logmel"})
    root = write_plugin("mine", tmp_path)
    with pytest.raises(ConfigError, match="already exists"):
        write_plugin("mine", tmp_path)
    assert sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()) == [
        "README.md", "musicembed_mine/__init__.py", "musicembed_mine/gin/runs/mine.gin",
        "pyproject.toml", "tests/test_mine.py",
    ]


def test_cli_names_the_problem(tmp_path):
    proc = run_cli("new-plugin", "logmel", "--dir", str(tmp_path), check=False)
    assert proc.returncode == 2 and "built-in encoder" in proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_generated_plugin_installs_passes_its_tests_and_is_listed(tmp_path):
    made = run_cli("new-plugin", "demo-stats", "--dir", str(tmp_path / "src"), cwd=tmp_path)
    root = tmp_path / "src" / "musicembed-demo-stats"
    assert str(root) in made.stdout
    # Installed into a throwaway target (never the shared environment), used through PYTHONPATH.
    site, build = tmp_path / "site", tmp_path / "build"
    build.mkdir()
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "--target", str(site), str(root)],
        capture_output=True, text=True, cwd=build, timeout=300,
    )
    assert pip.returncode == 0, pip.stdout + pip.stderr
    env = {**os.environ, "PYTHONPATH": str(site)}

    where = subprocess.run(
        [sys.executable, "-c", "import sys, musicembed_demo_stats as m; "
         "print(m.__file__); print('torch' in sys.modules)"],
        capture_output=True, text=True, cwd=build, env=env, timeout=120,
    )
    assert where.returncode == 0, where.stderr
    assert where.stdout.split() == [str(site / "musicembed_demo_stats" / "__init__.py"), "False"]

    tests = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True, text=True, cwd=root, env=env, timeout=600,
    )
    assert tests.returncode == 0, tests.stdout[-4000:] + tests.stderr[-2000:]
    assert "15 passed" in tests.stdout, tests.stdout[-2000:]  # 8 encoder + 3 gin suite checks + 4 own

    listed = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env, cwd=build).stdout)}
    demo = listed["demo_stats"]
    assert demo["distribution"] == "musicembed-demo-stats" and demo["error"] is None
    assert demo["components"] == {"encoders": ["demo_stats"]}
    assert "register_gin_folders" in demo["hooks"]
    table = run_cli("plugins", env=env, cwd=build).stdout
    assert "demo_stats" in table.replace("\n", "").replace("│", "").replace(" ", "")


def test_the_kit_examples_in_the_docs_run(tmp_path):
    """docs/plugin-authoring.md §7's Python blocks, run as a test file against the example plugin."""
    doc = (REPO / "docs" / "plugin-authoring.md").read_text()
    section = doc[doc.index("## 7. "):doc.index("## 8. ")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2, "update this test with the section's examples"
    (tmp_path / "test_docs_kit.py").write_text("\n\n".join(blocks))
    env = {**os.environ, "PYTHONPATH": str(REPO / "examples" / "musicembed-example-plugin"),
           "MUSICEMBED_LOAD_PLUGINS": ""}  # the example is registered by the test itself
    proc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "9 passed" in proc.stdout
