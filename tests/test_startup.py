"""Start-up cost: what the commands that do little work must not import.

The vector size of a run comes from the enrichers' shape rules (no torch), and
must be the size running the chain gives; ``search --id`` and ``--help`` import
no torch. (Timings: benchmarks/bench_startup.py.)
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from musicembed_core import ConfigError, Enricher
from musicembed_core.builtins import enrichers as E
from musicembed_core.chain import EnricherChain, enrich_whole
from musicembed_core.geometry import Geometry
from musicembed_core.testing import run_cli

CHAINS = {
    "mean": lambda: [E.MeanEnricher(), E.FlattenEnricher()],
    "quickstart": lambda: [E.LayersEnricher(), E.StatsEnricher(["mean", "std"]), E.FlattenEnricher(),
                           E.L2NormalizeEnricher()],
    "mert": lambda: [E.LayersEnricher("6:"), E.StatsEnricher(["mean", "iqr", "delta_mean"]),
                     E.FlattenEnricher(), E.L2NormalizeEnricher()],
    "every pool": lambda: [E.LayersEnricher([0, -1]),
                           E.StatsEnricher(["mean", "std", "iqr", "delta_mean", "delta_std", "max"]),
                           E.FlattenEnricher()],
    "one layer": lambda: [E.LayersEnricher(-1), E.MaxEnricher(), E.FlattenEnricher()],
    "stepped": lambda: [E.LayersEnricher("1:10:3"), E.DeltaStdEnricher(), E.L2NormalizeEnricher(),
                        E.FlattenEnricher()],
    "unflattened": lambda: [E.IqrEnricher(), E.L2NormalizeEnricher()],
    "std only": lambda: [E.StdEnricher(), E.FlattenEnricher()],
    "delta mean": lambda: [E.DeltaMeanEnricher(), E.FlattenEnricher()],
}


@pytest.mark.parametrize("name", sorted(CHAINS))
@pytest.mark.parametrize("layers,dim", [(1, 5), (13, 8), (25, 16)])
def test_shape_rules_give_the_shape_running_the_chain_gives(name, layers, dim):
    chain = EnricherChain(CHAINS[name]())
    if name in ("stepped", "mert") and layers == 1:
        with pytest.raises(ConfigError, match="selects no layer"):
            chain.output_shape((layers, 3, dim))
        with pytest.raises(ConfigError, match="selects no layer"):
            enrich_whole(chain, torch.randn(layers, 3, dim))
        return
    ran = tuple(enrich_whole(chain, torch.randn(layers, 3, dim)).shape)
    assert chain.output_shape((layers, 3, dim)) == ran
    if len(ran) == 1:
        assert chain.output_dim(Geometry(16000, 50.0, layers, dim, 10.0)) == ran[0]


def test_a_bad_layer_index_fails_the_same_without_running_the_chain():
    chain = EnricherChain([E.LayersEnricher([20]), E.MeanEnricher(), E.FlattenEnricher()])
    with pytest.raises(ConfigError, match="out of range for a 12-layer stack"):
        chain.output_shape((12, 3, 8))


class _Median(Enricher):
    """A plugin's pooling enricher with no shape rule: the chain runs it to learn its size."""

    name = "median_for_test"
    stage = "pool"

    def enrich(self, x):
        return torch.cat([x.median(dim=1).values, x.median(dim=1).values], dim=-1)


def test_an_enricher_without_a_shape_rule_is_run_to_find_the_size():
    chain = EnricherChain([_Median(), E.FlattenEnricher()])
    assert chain.output_shape((4, 3, 5)) is None
    assert chain.output_dim(Geometry(16000, 50.0, 4, 5, 10.0)) == 40


def _no_heavy_imports(args: list[str], cwd) -> tuple[list[str], str]:
    """Run the CLI in a fresh interpreter; return the heavy modules it imported and its stdout."""
    code = (
        "import json, sys\nfrom musicembed_core.cli import main\n"
        f"try:\n    main({args!r}, standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('torch', 'scipy', 'transformers') if m in sys.modules]\n"
        "    print(json.dumps(heavy), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=cwd)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stderr.strip().splitlines()[-1]), proc.stdout


def test_help_imports_no_torch(tmp_path):
    heavy, out = _no_heavy_imports(["--help"], tmp_path)
    assert heavy == []
    assert "search" in out and "run" in out


def test_search_by_id_imports_no_torch(tmp_path, example_dir):
    pytest.importorskip("musicembed_faiss", reason="the musicembed-faiss plugin is not installed")
    out = tmp_path / "out"
    params = ["--gin_file", "runs/quickstart_faiss.gin",
              "--gin_param", f'run.source="{example_dir}"', "--gin_param", f'run.output_dir="{out}"']
    summary = json.loads(run_cli("run", *params, "--no-progress", "--json").stdout)
    assert summary["files_ok"] == summary["files_total"] >= 6
    heavy, stdout = _no_heavy_imports(["search", *params, "--id", "jazz/b.flac", "--json"], tmp_path)
    assert heavy == []
    result = json.loads(stdout)
    # The space is the one the run wrote (its dim came from the same rules), and the hits are real.
    assert result["space_hash"] == summary["embeddings"][0]["space_hash"]
    assert len(result["hits"]) == summary["files_total"] - 1
    assert "jazz/b.flac" not in [h["id"] for h in result["hits"]]


def test_a_rerun_that_skips_every_file_loads_no_model_and_imports_no_torch(tmp_path, example_dir):
    """Encoders load at the first batch: a nightly rerun of an unchanged library is cheap."""
    import json
    import subprocess
    import sys

    from musicembed_core.testing import run_cli, subprocess_env

    params = ["--gin_param", f"run.source = '{example_dir}'",
              "--gin_param", f"run.output_dir = '{tmp_path / 'out'}'"]
    run_cli("run", "--gin_file", "runs/quickstart.gin", "--no-progress", *params, cwd=tmp_path)
    code = (
        "import json, sys\n"
        "from musicembed_core import cli\n"
        "sys.argv = ['musicembed', 'run', '--gin_file', 'runs/quickstart.gin', '--no-progress', '--json',"
        f" *{params!r}]\n"
        "try:\n    cli.entrypoint()\nexcept SystemExit:\n    pass\n"
        "print(json.dumps({'torch': 'torch' in sys.modules}), file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=subprocess_env(), cwd=tmp_path, timeout=300)
    summary = json.loads(proc.stdout)
    assert summary["files_skipped"] == summary["files_total"] > 0 and summary["files_ok"] == 0
    assert json.loads(proc.stderr.strip().splitlines()[-1]) == {"torch": False}
