"""Plugin discovery: built-ins, broken plugins, reserved names and clashes, subsets,
plugin commands, the stored-argument rule, text projector targets, fast listing."""

from __future__ import annotations

import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from musicembed_core import (
    EmbeddingSpace, Encoder, Enricher, TextProjector, check_projector, hookimpl,
    hookspecs,
)
from musicembed_core.errors import (
    ConfigError, DuplicateComponentError, PluginError, SpaceMismatchError, UnknownComponentError,
)
from musicembed_core.plugins import PLUGINS_FOLDER, install_hint

from musicembed_core.testing import REPO, make_fake_dist, run_cli


def test_builtins_provide_the_core_components(manager):
    builtins = manager.plugins["builtins"]
    assert builtins.error is None
    assert builtins.version
    names = {(k, n) for k, n in builtins.components}
    for expected in [("encoders", "logmel"), ("enrichers", "mean"), ("enrichers", "iqr"),
                     ("enrichers", "delta_mean"), ("enrichers", "l2_normalize"),
                     ("exporters", "hdf5"), ("exporters", "safetensors")]:
        assert expected in names
    assert {"register_encoders", "register_enrichers", "register_exporters"} <= set(builtins.hooks)
    assert set(builtins.hooks) <= set(HOOKSPECS)  # every implemented hook, nothing else


HOOKSPECS = sorted(n for n in vars(hookspecs) if n.startswith("register_")
                   and callable(getattr(hookspecs, n)))


def test_unknown_component_names_the_closest(manager):
    with pytest.raises(UnknownComponentError, match="Did you mean 'logmel'"):
        manager.get("encoders", "logmle")


def _plugin(**hooks):
    """A plugin object whose hookimpls are the given functions (named after their hook)."""
    plugin = types.SimpleNamespace()
    for name, fn in hooks.items():
        setattr(plugin, name, hookimpl(fn))
    return plugin


def test_builtin_name_is_reserved_and_the_plugin_keeps_its_other_components(manager):
    class Shadow(Encoder):
        name = "logmel"

    class Own(Enricher):
        name = "own_step_test"

    def register_encoders(register):
        register(Shadow)

    def register_enrichers(register):
        register(Own)

    info = manager.add(_plugin(register_encoders=register_encoders,
                               register_enrichers=register_enrichers), "shadow-plugin")
    assert info.error is None
    assert len(info.refused) == 1
    assert "encoders.logmel" in info.refused[0] and "'shadow-plugin'" in info.refused[0]
    assert "built-in" in info.refused[0] and 'name="shadow-plugin_logmel"' in info.refused[0]
    assert info.components == [("enrichers", "own_step_test")]
    assert manager.get("encoders", "logmel").plugin == "builtins"
    assert manager.get("enrichers", "own_step_test").cls is Own
    assert info.as_dict()["refused"] == info.refused


def test_two_plugins_one_name_error_names_both_and_how_to_choose(manager):
    from musicembed_core import ginconfig

    def make(tag):
        class Step(Enricher):
            name = "clash_step_test"

        def register_enrichers(register):
            register(Step)

        return _plugin(register_enrichers=register_enrichers)

    manager.add(make("a"), "first-plugin")
    manager.add(make("b"), "second-plugin")
    with pytest.raises(DuplicateComponentError) as err:
        manager.get("enrichers", "clash_step_test")
    msg = str(err.value)
    assert "'first-plugin', 'second-plugin'" in msg
    assert "MUSICEMBED_DISABLED_PLUGINS=second-plugin" in msg
    # The gin error at use says the same (not "unknown configurable, did you mean").
    with pytest.raises(ConfigError, match=r"(?s)'first-plugin', 'second-plugin'.*"
                                          r"MUSICEMBED_DISABLED_PLUGINS="):
        ginconfig.parse([], ["embedding.enrichers = [@enrichers.clash_step_test()]"])


def test_register_rejects_a_non_component_and_keeps_the_rest(manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_enrichers(register):
        register(dict)

    plugin.register_enrichers = register_enrichers
    info = manager.add(plugin, "bad-register")
    assert "not a subclass of musicembed_core.Enricher" in info.error
    assert manager.get("encoders", "logmel")


def test_hookimpl_with_a_misspelled_hook_is_reported(manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_encoder(register):  # missing "s"
        pass

    plugin.register_encoder = register_encoder
    info = manager.add(plugin, "typo-plugin")
    assert "register_encoder" in info.error


def test_temporary_plugin_component_is_usable(manager):
    class Half(Enricher):
        name = "halve"
        stage = "vector"

        def enrich(self, x):
            return x / 2

    plugin = types.SimpleNamespace()

    @hookimpl
    def register_enrichers(register):
        register(Half)

    plugin.register_enrichers = register_enrichers
    manager.add(plugin, "halver")
    assert manager.create("enrichers", "halve").name == "halve"


@pytest.fixture
def fake_site(tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "broken_plugin", "raise ImportError('needs libfoo, which is missing')")
    make_fake_dist(site, "good_plugin", """
        from musicembed_core import Enricher, hookimpl

        class Triple(Enricher):
            name = "triple"
            stage = "vector"
            def enrich(self, x):
                return x * 3

        @hookimpl
        def register_enrichers(register):
            register(Triple)
    """)
    return site


def test_broken_plugin_is_reported_and_the_rest_keep_working(fake_site):
    env = {"PYTHONPATH": str(fake_site)}
    proc = run_cli("plugins", "--json", env=env)
    data = {p["name"]: p for p in json.loads(proc.stdout)}
    assert "needs libfoo" in data["broken_plugin"]["error"]
    assert data["broken_plugin"]["version"] == "1.2.3"
    assert data["good_plugin"]["error"] is None
    assert data["good_plugin"]["components"] == {"enrichers": ["triple"]}
    assert data["builtins"]["error"] is None
    assert "broken_plugin" in proc.stderr  # the warning
    table = run_cli("plugins", env=env).stdout
    assert "needs libfoo" in table.replace("\n", "").replace("│", "").replace(" ", "") or "libfoo" in table


def test_strict_mode_reraises_a_broken_plugin(fake_site):
    proc = run_cli("plugins", env={"PYTHONPATH": str(fake_site), "MUSICEMBED_STRICT_PLUGINS": "1"},
                   check=False)
    assert proc.returncode != 0
    assert "needs libfoo" in proc.stderr


def test_load_plugins_selects_a_subset(fake_site):
    env = {"PYTHONPATH": str(fake_site), "MUSICEMBED_LOAD_PLUGINS": "good_plugin"}
    names = [p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)]
    assert names == ["builtins", "good_plugin"]
    env["MUSICEMBED_LOAD_PLUGINS"] = ""
    names = [p["name"] for p in json.loads(run_cli("plugins", "--json", env=env).stdout)]
    assert names == ["builtins"]


def test_listing_plugins_imports_no_torch_and_no_gin():
    code = (
        "import sys; from musicembed_core.cli import main\n"
        "try:\n    main(['plugins', '--json'], standalone_mode=False)\n"
        "finally:\n"
        "    heavy = [m for m in ('torch', 'gin', 'h5py', 'transformers') if m in sys.modules]\n"
        "    assert not heavy, heavy\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)[0]["name"] == "builtins"


def test_every_hook_is_documented_and_tested():
    """datasette-style meta-test: docs/hooks.md and the tests cover every hookspec."""
    docs = (REPO / "docs" / "hooks.md").read_text()
    tests = "\n".join(p.read_text() for p in (REPO / "tests").glob("test_*.py"))
    assert set(hookspecs.HOOK_KINDS) <= set(HOOKSPECS) and "register_commands" in HOOKSPECS
    for hook in HOOKSPECS:
        assert f"## {hook}" in docs, f"docs/hooks.md lacks a section for {hook}"
        assert f"def {hook}(" in tests or hook in tests, f"no test implements {hook}"


# --------------------------------------------------------------------------- plugin commands

COMMAND_PLUGIN = """
    import click
    from musicembed_core import hookimpl

    @hookimpl
    def register_commands(cli):
        @cli.command()
        @click.argument("who")
        @click.option("--times", default=1, show_default=True)
        def greet(who, times):
            '''Say hello (a plugin command).'''
            for _ in range(times):
                click.echo(f"hello {who}")
"""


@pytest.fixture(scope="module")
def command_site(tmp_path_factory):
    site = tmp_path_factory.mktemp("cmd-site")
    make_fake_dist(site, "greet_plugin", COMMAND_PLUGIN)
    make_fake_dist(site, "broken_cmd_plugin", """
        from musicembed_core import Enricher, hookimpl

        class Quarter(Enricher):
            name = "quarter"
            def enrich(self, x):
                return x / 4

        @hookimpl
        def register_enrichers(register):
            register(Quarter)

        @hookimpl
        def register_commands(cli):
            raise RuntimeError("the tag model is not configured")
    """)
    make_fake_dist(site, "clash_cmd_plugin", """
        import click
        from musicembed_core import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def run():
                '''Would replace the core run command.'''
                click.echo("plugin run")

            @cli.command(name="clash-ok")
            def ok():
                click.echo("clash plugin's own command works")
    """)
    return site


def test_command_plugin_adds_a_working_subcommand(command_site):
    env = {"PYTHONPATH": str(command_site)}
    proc = run_cli("greet", "world", "--times", "2", env=env)
    assert proc.stdout == "hello world\nhello world\n"
    assert "greet" in run_cli("--help", env=env).stdout
    data = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert data["greet_plugin"]["commands"] == ["greet"]
    assert data["greet_plugin"]["hooks"] == ["register_commands"]
    assert data["greet_plugin"]["error"] is None


def test_broken_command_plugin_is_isolated(command_site):
    env = {"PYTHONPATH": str(command_site)}
    data = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    broken = data["broken_cmd_plugin"]
    assert "register_commands raised" in broken["error"]
    assert "the tag model is not configured" in broken["error"]
    assert broken["components"] == {}  # a failed plugin is failed as a whole, as on import errors
    assert broken["hooks"] == ["register_commands", "register_enrichers"]
    assert run_cli("greet", "you", env=env).stdout == "hello you\n"  # the others keep working
    table = run_cli("plugins", env={**env, "COLUMNS": "300"}).stdout
    assert "broken_cmd_plugin" in table and "commands: greet" in table
    strict = run_cli("greet", "you", env={**env, "MUSICEMBED_STRICT_PLUGINS": "1"}, check=False)
    assert strict.returncode != 0 and "the tag model is not configured" in strict.stderr


def test_command_named_like_a_core_command_is_refused(command_site):
    env = {"PYTHONPATH": str(command_site)}
    data = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    clash = data["clash_cmd_plugin"]
    assert clash["error"] is None
    (refused,) = clash["refused"]
    assert "'run'" in refused and "'clash_cmd_plugin'" in refused and "core command" in refused
    assert "Embed every audio file" in run_cli("run", "--help", env=env).stdout
    assert run_cli("clash-ok", env=env).stdout == "clash plugin's own command works\n"


def test_a_command_two_plugins_add_names_both(tmp_path):
    make_fake_dist(tmp_path, "greet_plugin", COMMAND_PLUGIN)
    make_fake_dist(tmp_path, "greet_too_plugin", COMMAND_PLUGIN)
    env = {"PYTHONPATH": str(tmp_path)}
    proc = run_cli("greet", "x", env=env, check=False)
    assert proc.returncode == 2
    assert "'greet_plugin', 'greet_too_plugin'" in proc.stderr
    assert "MUSICEMBED_DISABLED_PLUGINS=greet_too_plugin" in proc.stderr
    env["MUSICEMBED_DISABLED_PLUGINS"] = "greet_too_plugin"
    assert run_cli("greet", "x", env=env).stdout == "hello x\n"


# --------------------------------------------------------------------------- names: gin runs

RUN_GIN = """
run.source = '{source}'
run.output_dir = '{out}'
run.limit = 2
run.embeddings = [@embedding()]
run.exporters = [@exporters.hdf5()]
embedding.encoder = @encoders.logmel()
embedding.enrichers = [{chain}]
"""


def _gin_run(tmp_path, example_dir, chain, env, *params, check=True, name="run.gin"):
    gin_file = tmp_path / name
    out = tmp_path / (name + "-out")
    gin_file.write_text(RUN_GIN.format(source=example_dir, out=out, chain=chain))
    args = ["run", "--gin_file", str(gin_file), "--no-progress", "--json"]
    for p in params:
        args += ["--gin_param", p]
    proc = run_cli(*args, env=env, check=check)
    return proc, out


SHADOW_PLUGIN = """
    from musicembed_core import Encoder, Enricher, hookimpl

    class NotLogmel(Encoder):
        name = "logmel"
        dim = 3
        def encode(self, wave):
            raise RuntimeError("the plugin's logmel must never run")

    class Third(Enricher):
        name = "third"
        def enrich(self, x):
            return x / 3

    @hookimpl
    def register_encoders(register):
        register(NotLogmel)

    @hookimpl
    def register_enrichers(register):
        register(Third)
"""


def test_reserved_builtin_name_is_refused_and_the_builtin_runs(tmp_path, example_dir):
    from musicembed_core.builtins.hdf5 import read_hdf5

    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "shadow_plugin", SHADOW_PLUGIN)
    env = {"PYTHONPATH": str(site)}
    proc, out = _gin_run(tmp_path, example_dir,
                         "@enrichers.mean(), @enrichers.flatten(), @enrichers.third()", env)
    summary = json.loads(proc.stdout)
    assert summary["files_ok"] == 2 and summary["files_failed"] == 0
    assert "shadow_plugin" in proc.stderr and "encoders.logmel" in proc.stderr  # logged
    data = read_hdf5(out / "logmel.h5")
    assert data["space"]["encoder"]["dim"] == 96  # the built-in's geometry, not the plugin's
    assert data["space"]["enrichers"][-1] == {"name": "third"}  # the plugin's other component
    plugins = {p["name"]: p for p in json.loads((out / "plugins.json").read_text())}
    assert "'shadow_plugin'" in plugins["shadow_plugin"]["refused"][0]
    assert plugins["shadow_plugin"]["components"] == {"enrichers": ["third"]}


RIVAL_PLUGIN = """
    from musicembed_core import Enricher, hookimpl

    class Scale(Enricher):
        name = "scale"
        def __init__(self, factor: float = {factor}):
            self.factor = factor
        def enrich(self, x):
            return x * self.factor

    @hookimpl
    def register_enrichers(register):
        register(Scale)
"""


def test_two_plugins_clash_and_disabling_one_resolves_it(tmp_path, example_dir):
    from musicembed_core.builtins.hdf5 import read_hdf5

    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "scale_a", RIVAL_PLUGIN.replace("{factor}", "2.0"))
    make_fake_dist(site, "scale_b", RIVAL_PLUGIN.replace("{factor}", "5.0"))
    env = {"PYTHONPATH": str(site)}
    chain = "@enrichers.mean(), @enrichers.flatten(), @enrichers.scale()"
    proc, out = _gin_run(tmp_path, example_dir, chain, env, check=False)
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert "enrichers.scale is registered by several plugins: 'scale_a', 'scale_b'" in err
    assert "MUSICEMBED_DISABLED_PLUGINS=scale_b" in err
    assert not (out / "logmel.h5").exists()

    env["MUSICEMBED_DISABLED_PLUGINS"] = "scale_b"
    proc, out = _gin_run(tmp_path, example_dir, chain, env)
    assert json.loads(proc.stdout)["files_ok"] == 2
    assert read_hdf5(out / "logmel.h5")["space"]["enrichers"][-1] == {"name": "scale",
                                                                      "factor": 2.0}
    listed = {p["name"]: p for p in json.loads(run_cli("plugins", "--json", env=env).stdout)}
    assert listed["scale_b"]["disabled"] is True and listed["scale_b"]["components"] == {}
    assert listed["scale_b"]["version"] == "1.2.3"  # listed from its metadata, never imported
    assert listed["scale_a"]["disabled"] is False
    assert "disabled" in run_cli("plugins", env={**env, "COLUMNS": "300"}).stdout


# --------------------------------------------------------------------------- stored arguments


def test_constructor_argument_not_stored_is_refused(manager):
    from musicembed_core import ginconfig

    class Forgetful(Enricher):
        name = "forgetful_test"

        def __init__(self, q: float = 0.5, eps: float = 1e-6):
            self.q = q  # eps is used but never stored: it would vanish from the signature
            self._eps = eps

    with pytest.raises(PluginError) as err:
        Forgetful()
    msg = str(err.value)
    assert "Forgetful" in msg and "'eps'" in msg and "'q'" not in msg
    assert "self.eps = eps" in msg and "unstored_params" in msg

    # Through a registered plugin and gin, as a user meets it.
    manager.add(_plugin(register_enrichers=lambda register: register(Forgetful)), "forgetful")
    ginconfig.parse([], ["enrichers.forgetful_test.q = 0.9"], finalize=False)
    import gin

    with pytest.raises(PluginError, match="'eps'"):
        gin.get_configurable("enrichers.forgetful_test")()


def test_stored_argument_rule_covers_subclasses_and_allows_declared_exemptions():
    class Base(Enricher):
        name = "base_test"

        def __init__(self, alpha: int = 1):
            self.alpha = alpha

    class Good(Base):
        def __init__(self, alpha: int = 1, beta: int = 2, device: str = "cpu"):
            super().__init__(alpha)  # the check runs once, after the outermost __init__
            self.beta = beta
            self.device = device

    class Bad(Base):
        def __init__(self, alpha: int = 1, beta: int = 2):
            super().__init__(alpha)

    class FromFile(Enricher):
        name = "fromfile_test"
        unstored_params = frozenset({"path"})

        def __init__(self, path: str = "", scale: float = 1.0):
            self.weights_sha = f"sha-of-{path}"  # what the signature needs from the file
            self.scale = scale

        def signature(self):
            return {**super().signature(), "weights_sha": self.weights_sha}

    good = Good(beta=3, device="cuda")
    assert good.config() == {"alpha": 1, "beta": 3, "device": "cuda"}
    assert good.signature()["beta"] == 3 and "device" not in good.signature()  # runtime param
    with pytest.raises(PluginError, match=r"Bad.*'beta'"):
        Bad()
    ff = FromFile(path="w.npy")
    assert ff.signature() == {"name": "fromfile_test", "scale": 1.0, "weights_sha": "sha-of-w.npy"}


def test_every_shipped_component_stores_its_constructor_arguments(manager):
    """Built-ins and every installed plugin (plugins/*): constructing with defaults passes."""
    from musicembed_core.components import constructor_params

    built = []
    for comp in manager.all_components():
        params = constructor_params(comp.cls)
        obj = comp.cls()  # raises PluginError when an argument is not stored
        assert set(obj.config()) == {n for n, _ in params} - comp.cls.unstored_params
        built.append(f"{comp.kind}.{comp.name}")
    assert "encoders.logmel" in built and "exporters.hdf5" in built


# --------------------------------------------------------------------------- missing plugins


def test_missing_plugin_hint_points_at_a_real_plugin_folder():
    hint = install_hint("sinks", "milvus")
    assert hint.startswith("pip install ") and "musicembed-milvus" not in hint
    folder = Path(hint.removeprefix("pip install "))
    assert folder.resolve() == (PLUGINS_FOLDER / "milvus").resolve()
    pyproject = (folder / "pyproject.toml").read_text()
    assert "[project.entry-points.musicembed]" in pyproject  # pip-installable, a plugin
    assert install_hint("encoders", "mert_v1").endswith("plugins/mert")
    unknown = install_hint("encoders", "nosuchmodel")
    assert "no folder of" in unknown and "milvus" in unknown and "<folder>" in unknown


def test_missing_plugin_hint_in_the_gin_error_and_the_registry(tmp_path, manager):
    (tmp_path / "x.gin").write_text("run.sinks = [@sinks.milvus()]\n")
    proc = run_cli("run", "--gin_file", str(tmp_path / "x.gin"),
                   env={"MUSICEMBED_LOAD_PLUGINS": ""}, check=False)  # milvus not loaded
    assert proc.returncode == 2
    text = " ".join(proc.stderr.split())
    assert "unknown gin configurable 'sinks.milvus'" in text
    assert "pip install ./plugins/milvus" in text  # run_cli's cwd is the checkout
    with pytest.raises(UnknownComponentError, match=r"pip install \S*plugins/milvus\b"):
        manager.get("sinks", "milvus_lite")


# --------------------------------------------------------------------------- projector targets

PROJECTORS = '''
"""Hashing text projectors: a trained linear map stored with its space, and a joint one."""

import hashlib
import json
from pathlib import Path

from musicembed_core import TextProjector, hookimpl


def hashed_words(texts, n_features):
    """Signed feature hashing of the words of each text -> [N, n_features]."""
    import numpy as np

    out = np.zeros((len(texts), n_features), dtype=np.float64)
    for i, text in enumerate(texts):
        for word in text.lower().replace("/", " ").replace(".", " ").split():
            h = int.from_bytes(hashlib.sha256(word.encode()).digest()[:8], "little")
            out[i, h % n_features] += 1.0 if h >> 63 else -1.0
    return out


def train(texts, vectors, space_json, folder, n_features=256):
    """Least-squares map from hashed words to the audio vectors; saved with its space."""
    import numpy as np

    weights, *_ = np.linalg.lstsq(hashed_words(texts, n_features), np.asarray(vectors), rcond=None)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "weights.npy", weights.astype(np.float32))
    (folder / "space.json").write_text(space_json)


def _unit(x):
    import numpy as np

    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype("float32")


class LinearHashProjector(TextProjector):
    """A trained projector: its checkpoint stores the space it was trained for."""

    name = "linear_hash"

    def __init__(self, checkpoint: str = ""):
        self.checkpoint = checkpoint
        self._weights = None

    def target(self):
        return {"space": (Path(self.checkpoint) / "space.json").read_text()}

    def load(self):
        import numpy as np

        if self._weights is None:
            self._weights = np.load(Path(self.checkpoint) / "weights.npy")
            self.dim = self._weights.shape[1]

    def embed_text(self, texts):
        self.load()
        return _unit(hashed_words(texts, self._weights.shape[0]) @ self._weights)


class JointHashProjector(TextProjector):
    """Joint-model style: tied to the logmel encoder and a mean/flatten/L2 chain."""

    name = "joint_hash"
    dim = 192

    def __init__(self, n_mels: int = 96):
        self.n_mels = n_mels

    def target(self):
        return {"encoder": {"name": "logmel", "n_mels": self.n_mels},
                "enrichers": ["mean", "flatten", {"name": "l2_normalize"}]}

    def embed_text(self, texts):
        import numpy as np

        rng = np.random.default_rng(0)
        return _unit(hashed_words(texts, 64) @ rng.standard_normal((64, self.dim)))


@hookimpl
def register_text_projectors(register):
    register(LinearHashProjector)
    register(JointHashProjector)
'''


def _projector_module():
    module = types.ModuleType("hash_projectors")
    exec(compile(PROJECTORS, "hash_projectors.py", "exec"), module.__dict__)  # noqa: S102
    return module


def _space(manager, chain, **encoder_params):
    from musicembed_core.pipeline import PreparedEmbedding
    from musicembed_core.runconfig import EmbeddingSpec

    enc = manager.create("encoders", "logmel", **encoder_params)
    spec = EmbeddingSpec(name="logmel", encoder=enc,
                         enrichers=[manager.create("enrichers", c) for c in chain])
    return PreparedEmbedding.build(spec).space


def test_joint_projector_matches_its_encoder_and_chain(manager):
    mod = _projector_module()
    manager.add(mod, "hash-projectors")
    proj = manager.create("projectors", "joint_hash")
    check_projector(proj, _space(manager, ["mean", "flatten", "l2_normalize"]))

    with pytest.raises(SpaceMismatchError) as err:  # another chain
        check_projector(proj, _space(manager, ["max", "flatten", "l2_normalize"]))
    msg = str(err.value)
    assert "'joint_hash'" in msg and "embedding 'logmel'" in msg
    assert "enrichers.0.name: the projector's is 'mean', the space's is 'max'" in msg
    with pytest.raises(SpaceMismatchError, match=r"enrichers: the projector's has 3 steps"):
        check_projector(proj, _space(manager, ["mean", "flatten"]))
    with pytest.raises(SpaceMismatchError) as err:  # another encoder configuration
        check_projector(proj, _space(manager, ["mean", "flatten", "l2_normalize"], n_mels=64))
    assert "encoder.n_mels: the projector's is 96, the space's is 64" in str(err.value)
    assert "dim: the projector outputs 192, the space has 128" in str(err.value)


def test_trained_projector_matches_the_space_stored_in_its_checkpoint(manager, tmp_path):
    mod = _projector_module()
    manager.add(mod, "hash-projectors")
    space = _space(manager, ["mean", "flatten", "l2_normalize"])
    rng = np.random.default_rng(1)
    texts = ["rock guitar", "calm jazz piano", "ambient rain"]
    vectors = mod._unit(rng.standard_normal((3, space.dim)))
    mod.train(texts, vectors, space.to_json(), tmp_path / "ckpt")
    proj = manager.create("projectors", "linear_hash", checkpoint=str(tmp_path / "ckpt"))
    check_projector(proj, space)  # the stored space is this one
    out = proj.embed_text(["calm jazz piano"])
    assert out.shape == (1, space.dim) and np.argmax(vectors @ out[0]) == 1

    other = _space(manager, ["mean", "flatten", "l2_normalize"], window_seconds=4.0)
    with pytest.raises(SpaceMismatchError) as err:
        check_projector(proj, other)
    msg = str(err.value)
    assert f"was trained for space {space.hash}" in msg and other.hash in msg
    assert "encoder.window_seconds: the projector's is 10.0, the space's is 4.0" in msg
    # The stored space may be given as the space itself or its parsed JSON too.
    for stored in (space, json.loads(space.to_json())):
        proj.target = lambda stored=stored: {"space": stored}
        check_projector(proj, space)


def test_a_projector_without_a_valid_target_is_a_plugin_error():
    class NoTarget(TextProjector):
        name = "no_target_test"

    class BadTarget(TextProjector):
        name = "bad_target_test"

        def target(self):
            return {"space_hash": "0123"}

    space = EmbeddingSpace(encoder={"name": "x"}, enrichers=(), dim=4)
    with pytest.raises(PluginError, match="does not implement target"):
        check_projector(NoTarget(), space)
    with pytest.raises(PluginError, match=r"target\(\) returned \{'space_hash'"):
        check_projector(BadTarget(), space)


def test_run_checks_the_projector_before_any_work(tmp_path, example_dir):
    """`musicembed run` refuses an embedding whose projector belongs to another space."""
    site = tmp_path / "site"
    site.mkdir()
    make_fake_dist(site, "hash_projectors", PROJECTORS)
    env = {"PYTHONPATH": str(site)}
    chain = "@enrichers.mean(), @enrichers.flatten(), @enrichers.l2_normalize()"
    proc, out = _gin_run(tmp_path, example_dir, chain, env,
                         "embedding.projector = @projectors.joint_hash()")
    assert json.loads(proc.stdout)["files_ok"] == 2
    proc, out = _gin_run(tmp_path, example_dir, chain, env,
                         "embedding.projector = @projectors.joint_hash()",
                         "encoders.logmel.n_mels = 64", check=False, name="other.gin")
    assert proc.returncode == 2
    err = " ".join(proc.stderr.split())
    assert "projector 'joint_hash' cannot embed text into embedding 'logmel'" in err
    assert "encoder.n_mels: the projector's is 96, the space's is 64" in err
    assert not out.exists() or not list(out.glob("*.h5"))  # refused before any work
