"""Model export for LibTorch: `musicembed export-model` / `exporters.torchscript`.

The exported TorchScript module must give, for a raw wave, the vector
`musicembed run` stores for that file (same windows, layers, pooling), refuse
traced encoders that do not generalise, and refuse chains it cannot export.
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from musicembed_core import Encoder, Enricher, Pooling, __version__, hookimpl
from musicembed_core.audio import load_audio
from musicembed_core.builtins import enricher_ops as ops
from musicembed_core.builtins import enrichers as E
from musicembed_core.export.model import chunk_spans, repeat_to
from musicembed_core.builtins.hdf5 import read_hdf5
from musicembed_core.builtins.logmel import LogMelEncoder
from musicembed_core.export.torchscript import ExportError, TorchScriptExporter
from musicembed_core.errors import ConfigError, UnknownComponentError
from musicembed_core.examples import synth_clip, write_audio
from musicembed_core.export.target import export_model, resolve
from musicembed_core.pipeline import PreparedEmbedding, _Chunker, embed_paths
from musicembed_core.runconfig import EmbeddingSpec
from musicembed_core.testing import REPO, run_cli

SR = 16000
ALL_STATS = ["mean", "std", "iqr", "robust_sigma", "delta_mean", "delta_std", "max"]
MEAN = [E.LayersEnricher([0]), E.MeanEnricher(), E.FlattenEnricher()]


# --------------------------------------------------------------------------- helpers


def clip(tmp: Path, name: str, seconds: float, seed: int, sr: int = SR) -> Path:
    path = tmp / name
    write_audio(path, synth_clip(seconds, sr, seed=seed), sr)
    return path


def pipeline_vectors(encoder: Encoder, chain: list[Enricher], paths: list[Path]) -> list[np.ndarray]:
    """What `musicembed run` stores for these files (the same streaming pipeline)."""
    prep = PreparedEmbedding.build(EmbeddingSpec(encoder.name, encoder, chain))
    results = embed_paths([prep], paths, batch_size=3)
    assert all(r.status == "ok" for r in results), [r.error for r in results]
    return [r.vectors[0] for r in results]


def run_model(model: torch.jit.ScriptModule, *paths: Path, sr: int = SR) -> np.ndarray:
    """The exported model on the decoded samples of equal-length files, as one batch."""
    wave = torch.stack([torch.from_numpy(load_audio(p, sr)) for p in paths])
    with torch.inference_mode():
        return model(wave).numpy()


# --------------------------------------------------------------------------- building blocks


@pytest.mark.parametrize("window,hop,min_len", [(40, 40, 5), (40, 20, 5), (40, 30, 1), (7, 3, 7)])
def test_chunk_spans_cut_like_the_pipeline_chunker(window, hop, min_len):
    scripted = torch.jit.script(chunk_spans)
    for total in range(1, 130):
        x = np.arange(1, total + 1, dtype=np.float32)
        ch = _Chunker(window, hop, min_len)
        want = []
        for i in range(0, total, 11):  # the pipeline streams blocks
            want += list(ch.push(x[i : i + 11]))
        want += list(ch.finish())
        spans = chunk_spans(total, window, hop, min_len)
        assert spans == scripted(total, window, hop, min_len)
        wave = torch.from_numpy(x)[None]
        got = [wave[:, a:b] for a, b in spans]
        if total < min_len:
            got = [repeat_to(g, min_len) for g in got]
        assert [g[0].numpy().tolist() for g in got] == [w.tolist() for w in want], total


def _splitmix64_reference(i: int, seed: int) -> int:
    """splitmix64 on Python ints (the textbook definition), as an independent oracle."""
    m = (1 << 64) - 1
    z = (i + seed * 0x9E3779B97F4A7C15) & m
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & m
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & m
    return z ^ (z >> 31)


@pytest.mark.parametrize("seed", [0, 1, 12345])
def test_mix64_and_reservoir_draws_match_a_sequential_algorithm_r(seed):
    idx = list(range(0, 3000, 7)) + [2**40 + 3]
    got = ops.mix64(torch.tensor(idx), ops.seed_offset(seed)).numpy().view(np.uint64)
    assert [int(v) for v in got] == [_splitmix64_reference(i, seed) for i in idx]
    # Algorithm R frame by frame: slot j = h(i) mod (i+1) takes frame i when j < k.
    k, start, count = 16, 16, 400
    slots = list(range(k))
    for i in range(start, start + count):
        j = _splitmix64_reference(i, seed) % (i + 1)
        if j < k:
            slots[j] = i
    s, src = ops.reservoir_draws(start, count, k, ops.seed_offset(seed), torch.device("cpu"))
    vectorised = list(range(k))
    for slot, frame in zip(s.tolist(), src.tolist()):
        vectorised[slot] = start + frame
    assert vectorised == slots


ENRICHERS = [
    E.LayersEnricher("all"),
    E.LayersEnricher([1]),
    E.LayersEnricher("-2:"),
    E.LayersEnricher([2, 0]),
    E.MeanEnricher(),
    E.StdEnricher(),
    E.MaxEnricher(),
    E.DeltaMeanEnricher(),
    E.DeltaStdEnricher(),
    E.IqrEnricher(),
    E.IqrEnricher(max_frames=8, seed=3),
    E.RobustSigmaEnricher(),
    E.RobustSigmaEnricher(max_frames=8, seed=3),
    E.StatsEnricher(stats=ALL_STATS, max_frames=8),
    E.FlattenEnricher(),
    E.L2NormalizeEnricher(),
]


@pytest.mark.parametrize("enricher", ENRICHERS, ids=lambda e: f"{e.name}{e.config()}")
@pytest.mark.parametrize("frames", [1, 2, 9, 40])
def test_each_builtin_enrichers_torch_module_scripts_and_equals_enrich(enricher, frames):
    g = torch.Generator().manual_seed(frames)
    x = torch.randn(3, frames, 5, generator=g)
    if enricher.stage == "vector":
        x = x[:, 0]
    module = torch.jit.script(enricher.torch_module(3))
    want = enricher.enrich(x)
    got = module(x)
    assert got.dtype == want.dtype and got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("cls", [E.IqrEnricher, E.RobustSigmaEnricher], ids=lambda c: c.name)
def test_iqr_reservoir_of_the_whole_track_equals_the_streamed_one(cls):
    """The exported model pools a whole track at once; the pipeline streams it in blocks."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 700, 6, generator=g)
    e = cls(max_frames=50, seed=9)
    state = e.pooling()
    for a in range(0, 700, 97):
        state.update(x[:, a : a + 97])
    assert torch.equal(torch.jit.script(e.torch_module(2))(x), state.result())


# --------------------------------------------------------------------------- equality with the pipeline


GEOMETRIES = {
    "windows": {"window_seconds": 3.0},
    "overlap": {"window_seconds": 3.0, "hop_seconds": 2.0},
}


@pytest.mark.parametrize("geometry", list(GEOMETRIES))
def test_export_equals_the_pipeline_for_short_long_and_tiny_clips(tmp_path, geometry):
    enc = LogMelEncoder(**GEOMETRIES[geometry])
    chain = [E.LayersEnricher("all"), E.StatsEnricher(stats=ALL_STATS, max_frames=120),
             E.FlattenEnricher(), E.L2NormalizeEnricher()]
    meta = TorchScriptExporter(verify=False).export(enc, chain, str(tmp_path / "m.pt"))
    assert meta["encoder"]["compiled_with"] == "script"
    assert meta["appended_l2_normalize"] is False
    model = torch.jit.load(str(tmp_path / "m.pt"))
    paths = [
        clip(tmp_path, "short.wav", 1.3, seed=1),  # shorter than a window
        clip(tmp_path, "long.wav", 8.7, seed=2),  # several windows and a tail
        clip(tmp_path, "exact.wav", 6.0, seed=3),  # whole windows only
        clip(tmp_path, "tiny.wav", 0.04, seed=4),  # shorter than min_seconds: repeated
    ]
    want = pipeline_vectors(enc, chain, paths)
    for p, w in zip(paths, want):
        got = run_model(model, p)[0]
        assert got.shape == (meta["output"]["dim"],)
        np.testing.assert_allclose(got, w, rtol=0, atol=1e-5, err_msg=p.name)
        assert abs(np.linalg.norm(got) - 1) < 1e-5


def test_a_batch_equals_its_items_and_the_pipeline(tmp_path):
    enc = LogMelEncoder(window_seconds=2.0)
    chain = [E.LayersEnricher([0]), E.MeanEnricher(), E.FlattenEnricher()]
    TorchScriptExporter(verify=False).export(enc, chain, str(tmp_path / "m.pt"))
    model = torch.jit.load(str(tmp_path / "m.pt"))
    a = clip(tmp_path, "a.wav", 4.5, seed=5)
    b = clip(tmp_path, "b.wav", 4.5, seed=6)
    both = run_model(model, a, b)
    np.testing.assert_allclose(both[0], run_model(model, a)[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(both[1], run_model(model, b)[0], rtol=0, atol=1e-6)
    # The chain has no l2_normalize: the export appends it, the pipeline's vector is raw.
    for got, want in zip(both, pipeline_vectors(enc, chain, [a, b])):
        np.testing.assert_allclose(got, want / np.linalg.norm(want), rtol=0, atol=1e-5)
    # A 1-D wave is one track.
    wave = torch.from_numpy(load_audio(a, SR))
    np.testing.assert_allclose(model(wave).numpy(), both[:1], rtol=0, atol=1e-6)


def test_metadata_json_describes_the_model(tmp_path):
    enc = LogMelEncoder(window_seconds=4.0, hop_seconds=3.0, n_mels=40)
    chain = [E.LayersEnricher([-1]), E.StatsEnricher(stats=["mean", "std"]), E.FlattenEnricher()]
    meta = TorchScriptExporter().export(enc, chain, str(tmp_path / "out" / "model.pt"), name="mine")
    on_disk = json.loads((tmp_path / "out" / "model.json").read_text())
    assert on_disk == json.loads(json.dumps(meta))
    prep = PreparedEmbedding.build(EmbeddingSpec("mine", enc, [*chain, E.L2NormalizeEnricher()]))
    assert on_disk["space_hash"] == prep.space.hash == on_disk["space"]["hash"]
    assert on_disk["input"]["sample_rate"] == SR
    assert on_disk["output"]["dim"] == 80 == prep.space.dim
    assert on_disk["layers"] == [1]
    assert on_disk["pooling"] == {"name": "stats", "stats": ["mean", "std"], "max_frames": 4096,
                                  "seed": 0}
    assert [e["name"] for e in on_disk["enrichers"]] == ["layers", "stats", "flatten", "l2_normalize"]
    assert on_disk["appended_l2_normalize"] is True
    assert (on_disk["window_seconds"], on_disk["hop_seconds"]) == (4.0, 3.0)
    assert (on_disk["window_samples"], on_disk["hop_samples"]) == (64000, 48000)
    assert on_disk["overlap_frames"] == 50
    assert on_disk["musicembed_version"] == __version__
    assert on_disk["encoder"]["gradient_checkpointing"] is False
    assert on_disk["dtype"] == "float32"
    assert on_disk["verification"]["max_abs_diff_vs_pipeline"] <= 1e-5
    # The same metadata travels inside the TorchScript file, and as module attributes.
    files = {"musicembed.json": ""}
    model = torch.jit.load(str(tmp_path / "out" / "model.pt"), _extra_files=files)
    assert json.loads(files["musicembed.json"]) == on_disk
    assert (model.sample_rate, model.dim, model.device) == (SR, 80, "cpu")


# --------------------------------------------------------------------------- encoders that are traced


class _FrameStatsModule(torch.nn.Module):
    """[B, T] -> [2, B, T // 160, 4]; the numpy constant makes it unscriptable, not untraceable."""

    hop = 160

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gain = float(np.float32(2.0))  # numpy: torch.jit.script refuses, tracing records a constant
        frames = x.unfold(1, self.hop, self.hop)  # [B, F, hop]: sizes follow the input
        feats = torch.stack([frames.mean(-1), frames.abs().amax(-1), frames.std(-1),
                             (frames * gain).square().mean(-1)], dim=-1)
        return torch.stack([feats, feats.cumsum(1)])


class _BakedLengthModule(_FrameStatsModule):
    """Turns the input length into a Python int: a trace keeps the example's frame count,
    so the time-centred layer is silently wrong for other lengths (no error is raised)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n = int(np.floor(x.shape[1] / self.hop))
        frames = x.unfold(1, self.hop, self.hop)
        feats = torch.stack([frames.mean(-1), frames.abs().amax(-1), frames.std(-1),
                             frames.square().mean(-1)], dim=-1)
        return torch.stack([feats, feats - feats.sum(1, keepdim=True) / n])


class _ModuleEncoder(Encoder):
    """A real encoder whose encode() is its module() (the Encoder contract)."""

    name = "framestats"
    module_class: type = _FrameStatsModule

    def __init__(self, window_seconds: float = 1.0) -> None:
        self.window_seconds = window_seconds
        self.sample_rate = SR
        self.frame_rate = SR / 160
        self.num_layers = 2
        self.dim = 4
        self._module = self.module_class().eval()

    def module(self) -> torch.nn.Module:
        return self._module

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self._module(torch.as_tensor(wave, dtype=torch.float32))


class _BakedEncoder(_ModuleEncoder):
    name = "baked"
    module_class = _BakedLengthModule


def test_a_traced_encoder_that_generalises_is_exported_and_equals_the_pipeline(tmp_path):
    enc = _ModuleEncoder(window_seconds=1.0)
    chain = [E.LayersEnricher("all"), E.StatsEnricher(stats=["mean", "delta_std"]),
             E.FlattenEnricher(), E.L2NormalizeEnricher()]
    meta = TorchScriptExporter(verify=False).export(enc, chain, str(tmp_path / "m.pt"))
    assert meta["encoder"]["compiled_with"] == "trace"
    assert any("torch.jit.script failed" in n for n in meta["compile_notes"])
    model = torch.jit.load(str(tmp_path / "m.pt"))
    paths = [clip(tmp_path, "short.wav", 0.7, seed=1), clip(tmp_path, "long.wav", 3.3, seed=2)]
    for p, want in zip(paths, pipeline_vectors(enc, chain, paths)):
        np.testing.assert_allclose(run_model(model, p)[0], want, rtol=0, atol=1e-5)


def test_a_traced_encoder_that_bakes_the_input_length_is_refused(tmp_path):
    out = tmp_path / "m.pt"
    with pytest.raises(ExportError, match="does not generalise") as info:
        TorchScriptExporter().export(_BakedEncoder(), MEAN, str(out))
    message = str(info.value)
    assert "'baked'" in message and "trace example was [B=1, T=16000]" in message
    assert "int(x.shape[1])" in message  # says what to change
    assert not out.exists() and not out.with_suffix(".json").exists()


def test_gradient_checkpointing_and_gradients_are_off_in_the_exported_encoder():
    from musicembed_core.export.torchscript import prepare_encoder_module

    enc = _ModuleEncoder()
    enc._module.block = torch.nn.Linear(2, 2)
    enc._module.block.gradient_checkpointing = True  # as transformers encoders keep it
    enc._module.train()
    module, dtype, cast = prepare_encoder_module(enc, torch.device("cpu"), None)
    assert module.block.gradient_checkpointing is False
    assert not module.training and not any(p.requires_grad for p in module.parameters())
    assert (dtype, cast) == (torch.float32, False)


def test_an_encoder_without_module_is_refused(tmp_path):
    class NoModule(Encoder):
        name = "nomodule"
        num_layers, dim = 1, 3

        def encode(self, wave):
            return wave[None, :, :3, None].expand(1, -1, 3, 3)

    with pytest.raises(ExportError, match="'nomodule' cannot be exported.*module()"):
        TorchScriptExporter().export(NoModule(), MEAN, str(tmp_path / "m.pt"))


# --------------------------------------------------------------------------- chains that cannot be exported


class _MedianPooling(Pooling):
    def __init__(self) -> None:
        self.blocks: list[torch.Tensor] = []

    def update(self, frames):
        self.blocks.append(frames)

    def result(self):
        return torch.cat(self.blocks, 1).median(dim=1).values


class _MedianEnricher(Enricher):
    """A plugin's pooling step with no TorchScript implementation."""

    name = "median_test"
    stage = "pool"

    def enrich(self, x):
        return x.median(dim=1).values

    def pooling(self):
        return _MedianPooling()


@pytest.fixture
def median_plugin(manager):
    plugin = types.SimpleNamespace()

    @hookimpl
    def register_enrichers(register):
        register(_MedianEnricher)

    plugin.register_enrichers = register_enrichers
    manager.add(plugin, "median-test-plugin")
    return manager


def test_an_enricher_without_a_torch_implementation_is_refused(tmp_path, median_plugin):
    out = tmp_path / "m.pt"
    with pytest.raises(ExportError, match="enricher 'median_test'.*no TorchScript implementation"):
        export_model("logmel", str(out), pooling="median_test")
    assert not out.exists()


def test_an_enricher_whose_torch_module_disagrees_with_enrich_is_refused(tmp_path):
    class WrongMean(E.MeanEnricher):
        name = "wrong_mean"

        def torch_module(self, num_layers):
            return ops.MaxPool()

    with pytest.raises(ExportError, match="'wrong_mean'.*does not compute what enrich"):
        TorchScriptExporter().export(LogMelEncoder(), [WrongMean(), E.FlattenEnricher()],
                                     str(tmp_path / "m.pt"))


def test_an_encoder_that_fails_at_the_asked_precision_is_refused(tmp_path):
    with pytest.raises(ExportError, match="encoder 'logmel' fails on a bfloat16 wave"):
        export_model("logmel", str(tmp_path / "m.pt"), dtype="bfloat16")
    assert not (tmp_path / "m.pt").exists()


def test_the_model_exporter_in_run_exporters_says_where_it_belongs():
    with pytest.raises(ConfigError, match="remove it from run.exporters.*musicembed export-model"):
        TorchScriptExporter().open("out/logmel.pt", None)


# --------------------------------------------------------------------------- what to export


def test_resolve_defaults_to_the_last_layer_mean_flatten_l2():
    t = resolve("logmel")
    assert [e.name for e in t.enrichers] == ["layers", "mean", "flatten", "l2_normalize"]
    assert t.enrichers[0].resolve(2) == [1]
    t = resolve("logmel", layers="all", pooling="mean,iqr")
    assert t.enrichers[0].indices == "all"
    assert t.enrichers[1].name == "stats" and t.enrichers[1].stats == ["mean", "iqr"]


def test_resolve_takes_a_runs_chain_and_overrides_parts_of_it():
    run = str(REPO / "gin" / "runs" / "two_windows.gin")
    with pytest.raises(ConfigError, match="several embeddings.*logmel_10s, logmel_30s.*--embedding"):
        resolve(run)
    t = resolve(run, embedding="logmel_30s")
    assert t.name == "logmel_30s" and t.encoder.window_seconds == 30.0
    assert [e.name for e in t.enrichers] == ["layers", "stats", "flatten", "l2_normalize"]
    assert t.enrichers[1].stats == ["mean", "iqr", "delta_mean"]
    t = resolve(run, embedding="logmel_30s", layers="0", pooling="max")
    assert [e.name for e in t.enrichers] == ["layers", "max", "flatten", "l2_normalize"]
    assert t.enrichers[0].indices == [0]


def test_resolve_reads_an_encoder_gin_file_and_bindings():
    t = resolve(str(REPO / "gin" / "encoders" / "logmel.gin"),
                gin_params=["encoders.logmel.n_mels = 32"])
    assert t.encoder.n_mels == 32 and "LOGMEL" in t.source


def test_resolve_errors_name_the_fix():
    with pytest.raises(UnknownComponentError, match="Did you mean 'logmel'"):
        resolve("logmle")
    with pytest.raises(ConfigError, match="--pooling 'flatten' is a 'vector'-stage enricher"):
        resolve("logmel", pooling="flatten")
    with pytest.raises(ConfigError, match=r"out of range for a 2-layer stack.*-2\.\.1"):
        resolve("logmel", layers="5")
    with pytest.raises(ConfigError, match="--layers 'x'"):
        resolve("logmel", layers="x")
    with pytest.raises(ConfigError, match="gin file not found"):
        resolve("no/such/file.gin")
    with pytest.raises(ConfigError, match="not a model format"):
        export_model("logmel", "m.pt", fmt="hdf5")


# --------------------------------------------------------------------------- the command line


def test_cli_exports_logmel_with_the_documented_defaults(tmp_path):
    out = tmp_path / "logmel.pt"
    proc = run_cli("export-model", "logmel", "-o", str(out), "--json")
    meta = json.loads(proc.stdout)
    assert meta == json.loads((tmp_path / "logmel.json").read_text())
    assert meta["layers"] == [1] and meta["pooling"]["name"] == "mean"
    assert meta["output"]["dim"] == 96 and meta["input"]["sample_rate"] == SR
    assert f"wrote {out}" in " ".join(proc.stderr.split())
    model = torch.jit.load(str(out))
    p = clip(tmp_path, "a.wav", 12.5, seed=7)
    enc = LogMelEncoder()
    chain = [E.LayersEnricher([-1]), E.MeanEnricher(), E.FlattenEnricher(), E.L2NormalizeEnricher()]
    np.testing.assert_allclose(run_model(model, p)[0], pipeline_vectors(enc, chain, [p])[0],
                               rtol=0, atol=1e-5)


@pytest.mark.slow
def test_cli_export_of_a_run_equals_what_musicembed_run_stores(tmp_path):
    lib = tmp_path / "lib"
    paths = [clip(lib, "short.wav", 2.5, seed=8), clip(lib, "long.wav", 23.0, seed=9)]
    quickstart = str(REPO / "gin" / "runs" / "quickstart.gin")
    run_cli("run", "--gin_file", quickstart, "--no-progress",
            "--gin_param", f"run.source = '{lib}'", "--gin_param", f"run.output_dir = '{tmp_path / 'out'}'")
    stored = read_hdf5(str(tmp_path / "out" / "logmel.h5"))
    run_cli("export-model", quickstart, "-o", str(tmp_path / "q.pt"))
    meta = json.loads((tmp_path / "q.json").read_text())
    assert meta["space_hash"] == stored["space_hash"]
    model = torch.jit.load(str(tmp_path / "q.pt"))
    for p in paths:
        want = stored["vectors"][stored["ids"].index(p.name)]
        np.testing.assert_allclose(run_model(model, p)[0], want, rtol=0, atol=1e-5)


def test_cli_errors_exit_2_with_a_clear_message(tmp_path):
    proc = run_cli("export-model", "logmell", "-o", str(tmp_path / "m.pt"), check=False)
    assert proc.returncode == 2
    assert "Did you mean 'logmel'" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_cli("export-model", "logmel", "--pooling", "mean", "--layers", "7",
                   "-o", str(tmp_path / "m.pt"), check=False)
    assert proc.returncode == 2 and "out of range" in proc.stderr
    proc = run_cli("export-model", "logmel", "--format", "safetensors", "-o", str(tmp_path / "m.pt"),
                   check=False)
    assert proc.returncode == 2 and "model formats: torchscript" in proc.stderr
    assert not (tmp_path / "m.pt").exists()


# --------------------------------------------------------------------------- music2vec and MERT


def _plugin_helpers(plugin: str, module: str) -> types.ModuleType:
    """The plugin's own tiny-checkpoint helpers (they live beside its tests)."""
    pytest.importorskip(
        f"musicembed_{plugin}",
        reason=f"the {plugin} plugin (plugins/{plugin}) is not installed: pip install -e plugins/{plugin}",
    )
    tests_dir = REPO / "plugins" / plugin / "tests"
    if not (tests_dir / f"{module}.py").is_file():
        pytest.skip(f"plugins/{plugin}/tests/{module}.py (tiny checkpoints) is not there yet")
    sys.path.insert(0, str(tests_dir))
    try:
        return __import__(module)
    finally:
        sys.path.remove(str(tests_dir))


def _music2vec(tmp: Path, manager) -> Encoder:
    h = _plugin_helpers("music2vec", "music2vec_tiny")
    folder = h.write_folder(tmp / "music2vec", h.released_config(**h.TINY), h.random_state(0))
    return manager.create("encoders", "music2vec", model=str(folder), window_seconds=1.0)


def _mert(tmp: Path, manager) -> Encoder:
    h = _plugin_helpers("mert", "mert_checkpoints")
    tiny = h.make_checkpoint(tmp / "mert", "m-a-p/MERT-v1-95M", h.shrink(h.RELEASED_V1_95M),
                             h.preprocessor(24000, True), seed=0)
    return manager.create("encoders", "mert", model=str(tiny.folder), window_seconds=1.0)


@pytest.mark.slow
@pytest.mark.parametrize("make", [_music2vec, _mert], ids=["music2vec", "mert"])
def test_transformers_encoders_export_and_equal_the_pipeline(tmp_path, manager, make):
    enc = make(tmp_path, manager)
    chain = [E.LayersEnricher([-1]), E.StatsEnricher(stats=["mean", "std", "delta_mean"]),
             E.FlattenEnricher(), E.L2NormalizeEnricher()]
    meta = TorchScriptExporter().export(enc, chain, str(tmp_path / "m.pt"))
    assert meta["encoder"]["compiled_with"] in ("script", "trace")
    assert meta["layers"] == [enc.num_layers - 1]
    model = torch.jit.load(str(tmp_path / "m.pt"))
    sr = enc.sample_rate
    paths = [clip(tmp_path, "short.wav", 0.6, seed=1, sr=sr), clip(tmp_path, "long.wav", 2.7, seed=2, sr=sr)]
    for p, want in zip(paths, pipeline_vectors(enc, chain, paths)):
        np.testing.assert_allclose(run_model(model, p, sr=sr)[0], want, rtol=0, atol=1e-5)
    a, b = clip(tmp_path, "a.wav", 1.4, seed=3, sr=sr), clip(tmp_path, "b.wav", 1.4, seed=4, sr=sr)
    both = run_model(model, a, b, sr=sr)
    np.testing.assert_allclose(both[1], run_model(model, b, sr=sr)[0], rtol=0, atol=1e-5)
