"""gin wiring: components bound as <kind>.<name>, typos fail with the closest name."""

from __future__ import annotations

import types

import gin
import pytest

from musicembed_core import Sink, TextProjector, hookimpl, ginconfig
from musicembed_core.errors import ConfigError
from musicembed_core.runconfig import run_config

from musicembed_core.testing import REPO

QUICKSTART = str(REPO / "gin" / "runs" / "quickstart.gin")


def test_quickstart_parses_into_a_run(manager):
    ginconfig.parse([QUICKSTART], ["run.source = '/tmp/music'"])
    cfg = run_config()
    assert cfg.source == "/tmp/music"
    assert cfg.embeddings[0].encoder.name == "logmel"
    assert [e.name for e in cfg.embeddings[0].enrichers] == ["layers", "stats", "flatten", "l2_normalize"]
    assert cfg.exporters[0].name == "hdf5"


def test_later_files_and_params_override(manager, tmp_path):
    override = tmp_path / "override.gin"
    override.write_text("encoders.logmel.n_mels = 64\nrun.batch_size = 3\n")
    ginconfig.parse([QUICKSTART, str(override)], ["run.batch_size = 5"])
    cfg = run_config()
    assert cfg.embeddings[0].encoder.n_mels == 64
    assert cfg.batch_size == 5


def test_unknown_configurable_names_the_closest(manager):
    with pytest.raises(ConfigError, match=r"unknown gin configurable 'encoders.logmle'.*Did you mean 'encoders.logmel'"):
        ginconfig.parse([QUICKSTART], ["encoders.logmle.n_mels = 64"])


def test_unknown_parameter_names_the_closest(manager):
    with pytest.raises(ConfigError, match=r"'encoders.logmel' has no parameter 'n_mel'. Did you mean 'n_mels'"):
        ginconfig.parse([QUICKSTART], ["encoders.logmel.n_mel = 64"])


def test_typo_inside_a_gin_file_names_the_file(manager, tmp_path):
    bad = tmp_path / "bad.gin"
    bad.write_text("include 'runs/quickstart.gin'\nrun.batchsize = 4\n")
    with pytest.raises(ConfigError) as err:
        ginconfig.parse([str(bad)], [])
    msg = str(err.value)
    assert "batchsize" in msg and "batch_size" in msg and "bad.gin" in msg


def test_missing_gin_file_is_a_clear_error(manager):
    with pytest.raises(ConfigError, match="gin file not found: nope.gin"):
        ginconfig.parse(["nope.gin"], [])


def test_required_source_is_named(manager):
    with pytest.raises(ConfigError, match=r"(?s)run.source set to `%gin.REQUIRED`.*--gin_param"):
        ginconfig.parse([str(REPO / "gin" / "runs" / "two_windows.gin")], [])


def test_every_kind_is_configurable_including_plugins_sinks_and_projectors(manager):
    """Components of every hook become <kind>.<name> configurables."""

    class MemorySink(Sink):
        name = "memory_test"

        def __init__(self, metric: str = "cosine"):
            self.metric = metric

    class WordProjector(TextProjector):
        name = "words_test"

        def __init__(self, dim: int = 4):
            self.dim = dim

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_sinks(register):
        register(MemorySink)

    @hookimpl
    def register_text_projectors(register):
        register(WordProjector)

    plugin.register_sinks = register_sinks
    plugin.register_text_projectors = register_text_projectors
    info = manager.add(plugin, "kinds-test")
    assert info.error is None
    assert set(info.hooks) == {"register_sinks", "register_text_projectors"}
    gin.parse_config(["sinks.memory_test.metric = 'l2'", "projectors.words_test.dim = 8"])
    sink = gin.get_configurable("sinks.memory_test")()
    proj = gin.get_configurable("projectors.words_test")()
    assert sink.metric == "l2" and proj.dim == 8
    assert sink.signature()["metric"] == "l2"
