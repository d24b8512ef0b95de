"""The plugin's gin files (musicembed_mert/gin: encoders/mert_*.gin, runs/mert330m_76800.gin),
included by name, and the real `musicembed run` command line on the tiny checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mert_checkpoints import released_configs_cache

from musicembed_core import ginconfig
from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.chain import EnricherChain
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.runconfig import run_config
from musicembed_core.testing import run_cli

RUN_76800 = "runs/mert330m_76800.gin"  # a name on gin's search path: the plugin ships it


def test_the_three_variants_coexist_in_one_run(registered, tmp_path, monkeypatch):
    released_configs_cache(tmp_path, monkeypatch)
    run = tmp_path / "three.gin"
    run.write_text(
        "# Three MERT variants side by side.\n"
        "include 'encoders/mert_v0.gin'\n"
        "include 'encoders/mert_v1_95m.gin'\n"
        "include 'encoders/mert_v1_330m.gin'\n"
        "include 'enrichers/mean_iqr_delta.gin'\n"
        "include 'exporters/hdf5.gin'\n"
        "run.exporters = [@exporters.hdf5()]\n"
        f"run.source = '{tmp_path}'\n"
        "run.embeddings = [@v0/embedding(), @small/embedding(), @large/embedding()]\n"
        "v0/embedding.name = 'mert_v0'\n"
        "v0/embedding.encoder = %MERT_V0\n"
        "v0/embedding.enrichers = %MEAN_IQR_DELTA\n"
        "small/embedding.name = 'mert_v1_95m'\n"
        "small/embedding.encoder = %MERT_V1_95M\n"
        "small/embedding.enrichers = %MEAN_IQR_DELTA\n"
        "large/embedding.name = 'mert_v1_330m'\n"
        "large/embedding.encoder = %MERT_V1_330M\n"
        "large/embedding.enrichers = %MEAN_IQR_DELTA\n"
        "encoders.mert.dtype = 'bfloat16'\n"  # unscoped: reaches every variant
        "mert_v1_330m/encoders.mert.window_seconds = 10.0\n"  # scoped: only this one
    )
    ginconfig.parse([str(run)], [])
    specs = run_config().embeddings
    encoders = [spec.encoder for spec in specs]
    assert [e.model for e in encoders] == ["m-a-p/MERT-v0-public", "m-a-p/MERT-v1-95M", "m-a-p/MERT-v1-330M"]
    assert [e.window_seconds for e in encoders] == [5.0, 5.0, 10.0]
    assert [e.dtype for e in encoders] == ["bfloat16"] * 3
    assert [e.sample_rate for e in encoders] == [16000, 24000, 24000]
    dims = [EnricherChain(s.enrichers).output_dim(s.encoder.geometry())
            for s in specs]
    assert dims == [13 * 768 * 3, 13 * 768 * 3, 25 * 1024 * 3]


def test_run_file_gives_76800_dims_without_weights(registered, tmp_path, monkeypatch):
    released_configs_cache(tmp_path, monkeypatch)
    ginconfig.parse([RUN_76800], [f"run.source = '{tmp_path}'"])
    [spec] = run_config().embeddings
    assert spec.name == "mert330m_76800"
    assert spec.encoder.model == "m-a-p/MERT-v1-330M"
    assert (spec.encoder.num_layers, spec.encoder.dim) == (25, 1024)
    assert EnricherChain(spec.enrichers).output_dim(spec.encoder.geometry()) == 76_800


@pytest.mark.slow
def test_musicembed_run_writes_hdf5_of_the_chain_dims(tiny, tmp_path):
    lib = tmp_path / "Music"
    for i, secs in enumerate([2.0, 7.5]):  # one clip shorter than the window, one longer
        write_audio(lib / f"t{i}.flac", synth_clip(secs, 44100, seed=i, channels=2), 44100)
    out = tmp_path / "out"
    proc = run_cli(
        "run", "--gin_file", RUN_76800, "--no-progress", "--json",
        "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{out}'",
        env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tiny.cache)},
        cwd=tmp_path,  # found by name from any folder
    )
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == 2 and summary["files_failed"] == 0
    t = tiny["v1_330m"]  # the tiny 330M-architecture checkpoint under m-a-p/MERT-v1-330M
    data = read_hdf5(out / "mert330m_76800.h5")
    assert sorted(data["ids"]) == ["t0.flac", "t1.flac"]
    assert data["vectors"].shape == (2, t.layers * t.dim * 3)
    assert np.allclose(np.linalg.norm(data["vectors"], axis=1), 1.0, atol=1e-5)
    encoder = data["space"]["encoder"]
    assert encoder["weights"] == t.revision
    assert (encoder["name"], encoder["model"], encoder["sample_rate"]) == ("mert", "m-a-p/MERT-v1-330M", 24000)
