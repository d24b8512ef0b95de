"""Every gin file the core ships stays valid: each run parses and builds, each include resolves.

Only the core's own folder (musicembed_core/gin): a plugin's gin files are tested by that
plugin's tests, so these pass with no plugin installed.
"""

from __future__ import annotations

import pytest

from musicembed_core import Geometry
from musicembed_core import ginconfig, ginpath
from musicembed_core.chain import EnricherChain
from musicembed_core.runconfig import run_config
from musicembed_core.testing import REPO

GIN = ginpath.CORE_GIN
RUNS = sorted((GIN / "runs").glob("*.gin"))
HEADERED = sorted(GIN.rglob("*.gin"))


@pytest.mark.parametrize("path", RUNS, ids=lambda p: p.name)
def test_run_file_builds(path, manager, tmp_path):
    ginconfig.parse([str(path)], [f"run.source = '{tmp_path}'"])
    cfg = run_config()
    for spec in cfg.embeddings:
        dim = EnricherChain(spec.enrichers).output_dim(spec.encoder.geometry())
        assert dim > 0
    # Built-in components only: the core's runs work on a bare install.
    owner = {c.cls: c.plugin for c in manager.all_components()}
    used = [*cfg.exporters, *cfg.sinks]
    for spec in cfg.embeddings:
        used += [spec.encoder, *spec.enrichers]
    assert {type(c).__name__: owner[type(c)] for c in used if owner[type(c)] != "builtins"} == {}


@pytest.mark.parametrize("path", HEADERED, ids=lambda p: p.relative_to(GIN).as_posix())
def test_gin_file_has_a_header(path):
    """T5X-style: each file opens with comments saying what it is and what to override."""
    first = path.read_text().lstrip().splitlines()[0]
    assert first.startswith("#"), f"{path} should start with a comment header"


def test_mean_iqr_delta_gives_l_d_3(manager):
    from musicembed_core.runconfig import embedding

    ginconfig.parse(["enrichers/mean_iqr_delta.gin"],
                    ["embedding.encoder = @encoders.logmel()", "embedding.enrichers = %MEAN_IQR_DELTA"])
    chain = EnricherChain(embedding().enrichers)
    assert chain.output_dim(Geometry(16000, 50.0, 25, 1024, 10.0)) == 76_800


def test_top_level_gin_is_the_packaged_folder():
    """The source tree's gin/ is a link to the package data, not a second copy."""
    assert (REPO / "gin").resolve() == GIN.resolve()
    assert (GIN / "runs" / "quickstart.gin").is_file()
