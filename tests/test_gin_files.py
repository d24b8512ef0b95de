"""Every shipped gin file stays valid: each run parses and builds, each include resolves."""

from __future__ import annotations

import pytest

from musicembed_core import ginconfig
from musicembed_core.chain import EnricherChain
from musicembed_core.runconfig import run_config
from musicembed_core.testing import REPO

RUNS = sorted((REPO / "gin" / "runs").glob("*.gin"))
HEADERED = sorted((REPO / "gin").rglob("*.gin"))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_run_file_builds(path, manager, tmp_path):
    ginconfig.parse([str(path)], [f"run.source = '{tmp_path}'"])
    cfg = run_config()
    for spec in cfg.embeddings:
        dim = EnricherChain(spec.enrichers).output_dim(spec.encoder.num_layers, spec.encoder.dim)
        assert dim > 0


@pytest.mark.parametrize("path", HEADERED, ids=lambda p: p.relative_to(REPO / "gin").as_posix())
def test_gin_file_has_a_header(path):
    """T5X-style: each file opens with comments saying what it is and what to override."""
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} should start with a comment header"


def test_mean_iqr_delta_gives_l_d_3(manager):
    from musicembed_core.runconfig import embedding

    ginconfig.parse([str(REPO / "gin" / "enrichers" / "mean_iqr_delta.gin")],
                    ["embedding.encoder = @encoders.logmel()", "embedding.enrichers = %MEAN_IQR_DELTA"])
    chain = EnricherChain(embedding().enrichers)
    assert chain.output_dim(25, 1024) == 76_800
