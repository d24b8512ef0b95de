"""gin wiring: components bound as <kind>.<name>, typos fail with the closest name."""

from __future__ import annotations

import types

import gin
import pytest

from musicembed_core import Sink, TextProjector, hookimpl, ginconfig, ginpath
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


# ---------------------------------------------------------------- gin search path
def _gin_plugin(folder=None, fail=False):
    """A plugin that declares a gin folder (or whose hook raises)."""
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_gin_folders(register):
        if fail:
            raise RuntimeError("boom")
        register(folder)

    plugin.register_gin_folders = register_gin_folders
    return plugin


def test_gin_file_by_name_from_any_folder(manager, tmp_path, monkeypatch):
    """`--gin_file runs/quickstart.gin` is the core's packaged file, wherever we are."""
    monkeypatch.chdir(tmp_path)
    ginconfig.parse(["runs/quickstart.gin"], ["run.source = '/tmp/music'"])
    assert run_config().embeddings[0].encoder.name == "logmel"
    assert ginpath.resolve("runs/quickstart.gin") == ginpath.CORE_GIN / "runs" / "quickstart.gin"


def test_missing_gin_name_says_where_it_looked(manager, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as err:
        ginconfig.parse(["runs/quickstrat.gin"], [])
    msg = str(err.value)
    assert "gin file not found: runs/quickstrat.gin" in msg
    assert "Did you mean 'runs/quickstart.gin'" in msg
    assert str(tmp_path) in msg and str(ginpath.CORE_GIN) in msg and "musicembed gin list" in msg
    # The old source-tree spelling points at the name that works everywhere.
    with pytest.raises(ConfigError, match="Did you mean 'runs/two_windows.gin'"):
        ginconfig.parse(["gin/runs/two_windows.gin"], [])


def test_plugin_gin_folder_joins_the_search_path(manager, tmp_path, monkeypatch):
    folder = tmp_path / "plugin_gin"
    (folder / "encoders").mkdir(parents=True)
    (folder / "encoders" / "small_logmel.gin").write_text(
        "# test encoder\nsmall/encoders.logmel.n_mels = 32\nSMALL = @small/encoders.logmel()\n"
    )
    (folder / "runs").mkdir()
    (folder / "runs" / "small.gin").write_text(
        "# test run\ninclude 'runs/quickstart.gin'\ninclude 'encoders/small_logmel.gin'\n"
        "embedding.encoder = %SMALL\n"
    )
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    info = manager.add(_gin_plugin(folder), "gin-folder-test")
    assert info.error is None
    assert ("gin-folder-test", folder) in manager.gin_folders()
    ginconfig.parse(["runs/small.gin"], ["run.source = '/tmp/music'"])
    assert run_config().embeddings[0].encoder.n_mels == 32
    listed = {f.name: f for f in ginpath.catalog()}
    assert listed["runs/small.gin"].folder.provider == "gin-folder-test"
    assert listed["runs/quickstart.gin"].folder.provider == "musicembed"
    # gin's own search path is ours only while parsing: nothing accumulates.
    from gin import config as gin_config

    assert str(folder) not in gin_config._LOCATION_PREFIXES
    manager.unregister_plugin("gin-folder-test")
    with pytest.raises(ConfigError, match="gin file not found: runs/small.gin"):
        ginconfig.parse(["runs/small.gin"], [])


def test_env_folder_comes_first_and_shadowing_is_listed(manager, tmp_path, monkeypatch):
    mine = tmp_path / "mine"
    (mine / "runs").mkdir(parents=True)
    (mine / "runs" / "quickstart.gin").write_text(
        "# my quickstart\ninclude 'encoders/logmel.gin'\ninclude 'enrichers/mean.gin'\n"
        "run.embeddings = [@embedding()]\nrun.exporters = [@exporters.hdf5()]\n"
        "embedding.encoder = %LOGMEL\nembedding.enrichers = %MEAN\n"
    )
    monkeypatch.setenv("MUSICEMBED_GIN_PATH", str(mine))
    monkeypatch.chdir(tmp_path)
    ginconfig.parse(["runs/quickstart.gin"], ["run.source = '/tmp/music'"])
    assert [e.name for e in run_config().embeddings[0].enrichers] == [
        "layers", "mean", "flatten", "l2_normalize"]
    entry = {f.name: f for f in ginpath.catalog()}["runs/quickstart.gin"]
    assert entry.folder.provider == "MUSICEMBED_GIN_PATH"
    assert [f.path for f in entry.shadowed] == [ginpath.CORE_GIN]
    assert entry.as_dict()["shadows"][0]["provider"] == "musicembed"


def test_a_broken_gin_folder_hook_is_isolated(manager, tmp_path):
    manager.add(_gin_plugin(fail=True), "gin-broken-test")
    manager.add(_gin_plugin(tmp_path / "missing"), "gin-missing-test")
    names = [n for n, _ in manager.gin_folders()]
    assert "gin-broken-test" not in names and "gin-missing-test" not in names
    ginconfig.parse(["runs/quickstart.gin"], ["run.source = '/tmp/music'"])  # the rest works


@pytest.mark.parametrize(
    "value", ["/music/lib", "music", "My Music", "~/Music"], ids=["path", "word", "words", "home"]
)
def test_unquoted_string_binding_names_it_and_shows_the_quoted_form(manager, value):
    with pytest.raises(ConfigError) as err:
        ginconfig.parse([QUICKSTART], [f"run.source={value}"])
    msg = str(err.value)
    assert f"the value of run.source ({value})" in msg
    assert f"--gin_param 'run.source=\"{value}\"'" in msg
    assert "ast." not in msg and "line 1" not in msg


def test_other_bad_binding_names_it_without_a_wrong_fix(manager):
    with pytest.raises(ConfigError) as err:
        ginconfig.parse([QUICKSTART], ["run.batch_size=4x"])
    msg = str(err.value)
    assert "--gin_param run.batch_size=4x is not a valid gin binding" in msg
    assert '"4x"' not in msg
    ginconfig.parse([QUICKSTART], ["run.source=\"/music/lib\"", "run.exporters=[@exporters.hdf5()]"])
