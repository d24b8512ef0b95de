"""The example third-party plugin, installed with pip and used from a gin file."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from musicembed_core.builtins.hdf5 import read_hdf5

from musicembed_core.testing import REPO, run_cli

PLUGIN = REPO / "examples" / "musicembed-example-plugin"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """`pip install` the plugin into a scratch target (no deps: the core is already here)."""
    target = tmp_path_factory.mktemp("site")
    build = tmp_path_factory.mktemp("build")
    proc = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation",
         "--no-index", "-q", "--target", str(target), str(PLUGIN)],
        capture_output=True, text=True, cwd=build,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert list(target.glob("musicembed_example-*.dist-info"))
    return {"PYTHONPATH": str(target)}


def test_installed_plugin_is_listed(installed):
    data = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=installed).stdout)}
    example = data["example"]
    assert example["distribution"] == "musicembed-example"
    assert example["version"] == "0.1.0"
    assert example["hooks"] == ["register_commands", "register_encoders", "register_enrichers"]
    assert example["components"] == {"encoders": ["chroma"], "enrichers": ["percentile"]}
    assert example["commands"] == ["chroma"]
    assert example["error"] is None
    assert example["parameters"]["encoders.chroma"]["n_fft"] == 4096


def test_installed_plugin_runs_from_its_gin_file(installed, example_dir, tmp_path):
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--gin_file", str(PLUGIN / "chroma.gin"), "--no-progress", "--json",
        "--gin_param", f"run.source = '{example_dir}'",
        "--gin_param", f"run.output_dir = '{out}'",
        env=installed,
    )
    summary = json.loads(proc.stdout)
    assert summary["files_failed"] == 0 and summary["files_ok"] >= 5
    data = read_hdf5(out / "chroma.h5")
    assert data["vectors"].shape == (summary["files_ok"], 12)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, atol=1e-5)
    assert data["space"]["encoder"]["name"] == "chroma"
    assert data["space"]["enrichers"][0] == {"name": "percentile", "q": 90.0}


def test_installed_plugin_adds_its_command(installed, tmp_path):
    import soundfile

    rate = 44100
    t = np.arange(2 * rate) / rate
    soundfile.write(tmp_path / "a4.flac", 0.5 * np.sin(2 * np.pi * 440.0 * t), rate)
    out = json.loads(run_cli("chroma", str(tmp_path / "a4.flac"), "--json", env=installed).stdout)
    assert out["strongest"] == "A" and out["profile"]["A"] == 1.0
    table = run_cli("chroma", str(tmp_path / "a4.flac"), env=installed).stdout
    assert table.splitlines()[-1] == "strongest pitch class: A"
    assert "chroma" in run_cli("--help", env=installed).stdout
    assert "Usage:" in run_cli("chroma", "--help", env=installed).stdout


def test_without_the_plugin_the_gin_file_names_the_missing_component(example_dir, tmp_path):
    proc = run_cli("run", "--gin_file", str(PLUGIN / "chroma.gin"),
                   "--gin_param", f"run.source = '{example_dir}'", check=False)
    assert proc.returncode == 2
    assert "encoders.chroma" in proc.stderr
