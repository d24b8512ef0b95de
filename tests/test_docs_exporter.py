"""The exporter example of docs/hooks.md is real: the exporter conformance suite runs against
it (kill -9 checks included), and it works as an installed plugin in `musicembed run`."""

from __future__ import annotations

import json
import re
import sys
import tempfile
from pathlib import Path

import numpy as np

from musicembed_core.testing import ExporterSuite, make_fake_dist, run_cli

DOCS = Path(__file__).resolve().parents[1] / "docs" / "hooks.md"


def example_source() -> str:
    m = re.search(r"<!-- example: npz_exporter.py -->\n```python\n(.*?)\n```", DOCS.read_text(), re.S)
    assert m, "docs/hooks.md lost its npz exporter example"
    return m.group(1) + "\n"


# The suite's kill checks rebuild the exporter in a child process by module name: put the
# example on sys.path (the child inherits it) before the suite class is defined.
_HOME = Path(tempfile.mkdtemp(prefix="musicembed-docs-exporter-"))
(_HOME / "npz_exporter_example.py").write_text(example_source())
sys.path.insert(0, str(_HOME))
import npz_exporter_example  # noqa: E402


def read_npz(path: str) -> dict[str, tuple[str, np.ndarray]]:
    with np.load(path, allow_pickle=False) as z:
        return {str(i): (str(h), v) for i, h, v in zip(z["ids"], z["hashes"], z["vectors"])}


class TestDocsNpzExporter(ExporterSuite):
    exporter_class = npz_exporter_example.NpzExporter
    output_name = "out.npz"

    def read_output(self, path):
        return read_npz(path)


def test_the_example_runs_as_an_installed_plugin(tmp_path, example_dir):
    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "npz_exporter_example", example_source())
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json",
        "--gin_param", f"run.source = '{example_dir}'",
        "--gin_param", f"run.output_dir = '{out}'",
        "--gin_param", "run.exporters = [@exporters.npz()]",
        env={"PYTHONPATH": str(site)}, cwd=tmp_path,
    )
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == summary["files_total"] > 0
    rows = read_npz(str(out / "logmel.npz"))
    assert len(rows) == summary["files_ok"]
    again = json.loads(run_cli(
        "run", "--gin_file", "runs/quickstart.gin", "--no-progress", "--json",
        "--gin_param", f"run.source = '{example_dir}'",
        "--gin_param", f"run.output_dir = '{out}'",
        "--gin_param", "run.exporters = [@exporters.npz()]",
        env={"PYTHONPATH": str(site)}, cwd=tmp_path,
    ).stdout)
    assert again["files_skipped"] == summary["files_ok"]  # known() made the rerun skip all
