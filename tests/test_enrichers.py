"""Built-in enrichers and the enricher chain (fast, CPU only)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from musicembed_core import Geometry
from musicembed_core.builtins import enrichers as E
from musicembed_core.chain import EnricherChain, TrackState, enrich_whole
from musicembed_core.components import Enricher
from musicembed_core.errors import ConfigError

POOLS = {
    "mean": lambda: E.MeanEnricher(),
    "std": lambda: E.StdEnricher(),
    "iqr": lambda: E.IqrEnricher(),
    "robust_sigma": lambda: E.RobustSigmaEnricher(),
    "delta_mean": lambda: E.DeltaMeanEnricher(),
    "delta_std": lambda: E.DeltaStdEnricher(),
    "max": lambda: E.MaxEnricher(),
    "stats": lambda: E.StatsEnricher(),
    "stats_all": lambda: E.StatsEnricher(["max", "delta_std", "std", "iqr", "mean", "delta_mean"]),
}


def np_ref(stat: str, x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    if stat == "mean":
        return x.mean(1)
    if stat == "std":
        return x.std(1, ddof=0)
    if stat in ("iqr", "robust_sigma"):
        q75, q25 = np.percentile(x, [75, 25], axis=1)
        return (q75 - q25) / (1.3489795003921634 if stat == "robust_sigma" else 1.0)
    if stat in ("delta_mean", "delta_std"):
        if x.shape[1] < 2:
            return np.zeros((x.shape[0], x.shape[2]))
        d = np.diff(x, axis=1)
        return d.mean(1) if stat == "delta_mean" else d.std(1, ddof=0)
    if stat == "max":
        return x.max(1)
    raise AssertionError(stat)


def stack(L: int = 3, F: int = 17, D: int = 5, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    # Offset + trend so that mean/delta are not ~0 and relative checks mean something.
    t = torch.linspace(0, 1, F).view(1, F, 1)
    return (torch.randn(L, F, D, generator=g) + 3.0 + 2.0 * t).to(torch.float32)


def random_blocks(F: int, rng: np.random.Generator) -> list[tuple[int, int]]:
    cuts = sorted(rng.choice(np.arange(1, F), size=rng.integers(0, F), replace=False)) if F > 1 else []
    edges = [0, *[int(c) for c in cuts], F]
    return list(zip(edges[:-1], edges[1:]))


def stream(enricher: Enricher, x: torch.Tensor, blocks: list[tuple[int, int]]) -> torch.Tensor:
    state = enricher.pooling()
    for a, b in blocks:
        state.update(x[:, a:b])
    return state.result()


# --------------------------------------------------------------------------- statistics


@pytest.mark.parametrize("stat", ["mean", "std", "iqr", "robust_sigma", "delta_mean", "delta_std", "max"])
@pytest.mark.parametrize("F", [1, 2, 4, 17, 64])
def test_stat_matches_numpy(stat: str, F: int) -> None:
    x = stack(F=F, seed=F)
    out = POOLS[stat]().enrich(x)
    assert out.dtype == torch.float32
    assert out.shape == (3, 5)
    np.testing.assert_allclose(out.numpy(), np_ref(stat, x.numpy()), rtol=1e-5, atol=1e-5)


def test_stats_concatenates_in_order() -> None:
    x = stack(F=20)
    names = ["mean", "iqr", "delta_mean", "std"]
    out = E.StatsEnricher(names).enrich(x)
    assert out.shape == (3, 4 * 5) and out.dtype == torch.float32
    ref = np.concatenate([np_ref(n, x.numpy()) for n in names], axis=-1)
    np.testing.assert_allclose(out.numpy(), ref, rtol=1e-5, atol=1e-5)


def test_stats_default_is_mean_iqr_delta_mean() -> None:
    s = E.StatsEnricher()
    assert s.stats == ["mean", "iqr", "delta_mean"]
    assert s.config()["stats"] == ["mean", "iqr", "delta_mean"]


def test_stats_unknown_name_lists_valid_ones() -> None:
    with pytest.raises(ValueError) as ei:
        E.StatsEnricher(["mean", "median"])
    msg = str(ei.value)
    assert "median" in msg
    for valid in ("mean", "std", "iqr", "robust_sigma", "delta_mean", "delta_std", "max"):
        assert valid in msg
    assert isinstance(ei.value, ConfigError)


def test_half_precision_input() -> None:
    x = stack(F=30)
    for name in ("mean", "iqr", "stats_all"):
        out = POOLS[name]().enrich(x.to(torch.bfloat16))
        assert out.dtype == torch.float32
        ref = POOLS[name]().enrich(x.to(torch.bfloat16).to(torch.float32))
        torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- streaming


@pytest.mark.parametrize("name", sorted(POOLS))
@pytest.mark.parametrize("F", [1, 2, 3, 50])
def test_streaming_equals_whole(name: str, F: int) -> None:
    x = stack(F=F, seed=100 + F)
    whole = POOLS[name]().enrich(x)
    rng = np.random.default_rng(F)
    splits = [[(0, F)], [(i, i + 1) for i in range(F)]] + [random_blocks(F, rng) for _ in range(5)]
    for blocks in splits:
        got = stream(POOLS[name](), x, blocks)
        assert got.dtype == torch.float32
        torch.testing.assert_close(got, whole, rtol=1e-5, atol=1e-6)


def test_streaming_ignores_empty_blocks() -> None:
    x = stack(F=9)
    for name in sorted(POOLS):
        got = stream(POOLS[name](), x, [(0, 0), (0, 4), (4, 4), (4, 9)])
        torch.testing.assert_close(got, POOLS[name]().enrich(x), rtol=1e-5, atol=1e-6)


def test_pooling_without_frames_raises() -> None:
    for name in sorted(POOLS):
        with pytest.raises(ValueError):
            POOLS[name]().pooling().result()


def test_streaming_does_not_alias_caller_buffer() -> None:
    x = stack(F=10)
    whole = E.IqrEnricher().enrich(x)
    state = E.IqrEnricher().pooling()
    buf = x[:, :5].clone()
    state.update(buf)
    buf.fill_(1e6)  # the pipeline may reuse its chunk tensor
    state.update(x[:, 5:])
    torch.testing.assert_close(state.result(), whole)


# --------------------------------------------------------------------------- iqr reservoir


def test_iqr_exact_up_to_max_frames() -> None:
    x = stack(F=32)
    out = E.IqrEnricher(max_frames=32).enrich(x)
    np.testing.assert_allclose(out.numpy(), np_ref("iqr", x.numpy()), rtol=1e-5, atol=1e-5)
    got = stream(E.IqrEnricher(max_frames=32), x, [(i, i + 1) for i in range(32)])
    torch.testing.assert_close(got, out)


@pytest.mark.parametrize("F", [17, 100, 1000])
def test_iqr_reservoir_bounded_and_consistent(F: int) -> None:
    k = 16
    x = stack(L=2, F=F, D=4, seed=F)
    whole = E.IqrEnricher(max_frames=k).enrich(x)
    rng = np.random.default_rng(0)
    for blocks in [[(0, F)], [(i, i + 1) for i in range(F)]] + [random_blocks(F, rng) for _ in range(3)]:
        state = E.IqrEnricher(max_frames=k).pooling()
        for a, b in blocks:
            state.update(x[:, a:b])
            assert state.frames_held <= k
        assert state.frames_held == k
        # Same sample whatever the split: bit-identical result.
        assert torch.equal(state.result(), whole)


def test_iqr_reservoir_is_a_uniform_sample() -> None:
    F, k = 4000, 400
    idx = torch.arange(F, dtype=torch.float32).view(1, F, 1)
    state = E.IqrEnricher(max_frames=k).pooling()
    state.update(idx)
    sample = state.buffer.flatten()
    assert len(torch.unique(sample)) == k  # distinct frames
    # Uniform over the whole track: mean ~ F/2, quartiles ~ F/4, 3F/4.
    assert abs(sample.mean().item() - F / 2) < 0.08 * F
    assert abs(E.IqrEnricher(max_frames=k).enrich(idx).item() - F / 2) < 0.1 * F
    assert (sample > 0.9 * F).any() and (sample < 0.1 * F).any()


def test_iqr_seed_changes_sample_but_is_deterministic() -> None:
    x = stack(L=1, F=300, D=3)
    a = E.IqrEnricher(max_frames=20, seed=0).enrich(x)
    b = E.IqrEnricher(max_frames=20, seed=0).enrich(x)
    c = E.IqrEnricher(max_frames=20, seed=1).enrich(x)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_iqr_bad_max_frames() -> None:
    with pytest.raises(ConfigError, match="max_frames"):
        E.IqrEnricher(max_frames=1)


def test_stats_iqr_uses_max_frames() -> None:
    x = stack(F=200)
    s = E.StatsEnricher(["iqr"], max_frames=10)
    torch.testing.assert_close(s.enrich(x), E.IqrEnricher(max_frames=10).enrich(x))
    assert s.config() == {"stats": ["iqr"], "max_frames": 10, "seed": 0}


# --------------------------------------------------------------------------- layers


def _tagged(L: int = 25, F: int = 2, D: int = 3) -> torch.Tensor:
    return torch.arange(L, dtype=torch.float32).view(L, 1, 1).expand(L, F, D).contiguous()


def _layers(indices: object, L: int = 25) -> list[int]:
    out = E.LayersEnricher(indices).enrich(_tagged(L))  # type: ignore[arg-type]
    assert out.shape[1:] == (2, 3)
    return [int(v) for v in out[:, 0, 0]]


@pytest.mark.parametrize(
    "indices, expected",
    [
        ("all", list(range(25))),
        (":", list(range(25))),
        ([0], [0]),
        ([-1], [24]),
        ([3, -1, 0], [3, 24, 0]),
        ("6:", list(range(6, 25))),
        ("-4:", [21, 22, 23, 24]),
        ("2:10:2", [2, 4, 6, 8]),
        (":-20", [0, 1, 2, 3, 4]),
        ("-1", [24]),
        ("5", [5]),
        (7, [7]),
    ],
)
def test_layers_selection(indices: object, expected: list[int]) -> None:
    assert _layers(indices) == expected


@pytest.mark.parametrize("indices", [[25], [-26], [0, 30], "30:", "25"])
def test_layers_out_of_range(indices: object) -> None:
    with pytest.raises(ConfigError) as ei:
        E.LayersEnricher(indices).enrich(_tagged(25))  # type: ignore[arg-type]
    msg = str(ei.value)
    assert "indices" in msg and "L=25" in msg


@pytest.mark.parametrize("indices", ["a:b", "1:2:3:4", "::0", [], [1.5], ["x"], True])
def test_layers_bad_spec(indices: object) -> None:
    with pytest.raises(ConfigError, match="indices"):
        E.LayersEnricher(indices)  # type: ignore[arg-type]


def test_layers_config_roundtrip() -> None:
    assert E.LayersEnricher("-4:").config() == {"indices": "-4:"}
    assert E.LayersEnricher([1, -1]).config() == {"indices": [1, -1]}
    assert E.LayersEnricher().signature() == {"name": "layers", "indices": "all"}


# --------------------------------------------------------------------------- vector stage


def test_flatten_and_l2() -> None:
    x = torch.randn(4, 6) * 10
    flat = E.FlattenEnricher().enrich(x)
    assert flat.shape == (24,)
    n = E.L2NormalizeEnricher().enrich(flat)
    assert n.dtype == torch.float32
    assert abs(n.norm().item() - 1.0) < 1e-6
    rows = E.L2NormalizeEnricher().enrich(x)
    torch.testing.assert_close(rows.norm(dim=-1), torch.ones(4))
    zero = E.L2NormalizeEnricher().enrich(torch.zeros(5))
    assert torch.equal(zero, torch.zeros(5))


# --------------------------------------------------------------------------- chain


def mert_chain() -> EnricherChain:
    return EnricherChain(
        [
            E.LayersEnricher("all"),
            E.StatsEnricher(["mean", "iqr", "delta_mean"]),
            E.FlattenEnricher(),
            E.L2NormalizeEnricher(),
        ]
    )


def test_mert_330m_shape() -> None:
    chain = mert_chain()
    assert chain.output_dim(Geometry(16000, 50.0, 25, 1024, 10.0)) == 76_800
    x = torch.randn(25, 6, 1024)
    v = enrich_whole(chain, x)
    assert v.shape == (76_800,) and v.dtype == torch.float32
    assert abs(v.norm().item() - 1.0) < 1e-5
    state = chain.start()
    assert isinstance(state, TrackState)
    for a in range(0, 6, 4):
        state.update(x[:, a : a + 4])
    torch.testing.assert_close(state.finish(), v, rtol=1e-5, atol=1e-7)


def test_chain_streaming_with_layer_prefix_equals_whole() -> None:
    chain = EnricherChain(
        [
            E.LayersEnricher("-4:"),
            E.LayersEnricher([0, 2]),
            E.StatsEnricher(["mean", "std", "iqr", "delta_mean", "delta_std", "max"], max_frames=8),
            E.FlattenEnricher(),
            E.L2NormalizeEnricher(),
        ]
    )
    x = stack(L=6, F=40, D=4)
    whole = enrich_whole(chain, x)
    assert whole.shape == (2 * 6 * 4,)
    assert chain.output_dim(Geometry(16000, 50.0, 6, 4, 10.0)) == 48
    rng = np.random.default_rng(1)
    for blocks in [[(i, i + 1) for i in range(40)], random_blocks(40, rng), random_blocks(40, rng)]:
        state = chain.start()
        for a, b in blocks:
            state.update(x[:, a:b])
        torch.testing.assert_close(state.finish(), whole, rtol=1e-5, atol=1e-7)


def test_chain_frames_and_update_framed() -> None:
    chain = EnricherChain([E.LayersEnricher([-1]), E.MeanEnricher(), E.FlattenEnricher()])
    x = stack(L=4, F=10, D=3)
    framed = chain.frames(x)
    assert framed.shape == (1, 10, 3)
    state = chain.start()
    state.update_framed(framed[:, :3])
    state.update_framed(framed[:, 3:])
    torch.testing.assert_close(state.finish(), x[-1].double().mean(0).float())


def test_chain_falls_back_to_buffered_pooling() -> None:
    class Median(Enricher):
        name = "median_test"
        stage = "pool"

        def enrich(self, x: torch.Tensor) -> torch.Tensor:
            return x.median(dim=1).values

    chain = EnricherChain([Median(), E.FlattenEnricher()])
    x = stack(F=7)
    state = chain.start()
    state.update(x[:, :2])
    state.update(x[:, 2:])
    torch.testing.assert_close(state.finish(), enrich_whole(chain, x))


def test_chain_finish_without_frames_raises() -> None:
    with pytest.raises(ValueError, match="no frames"):
        mert_chain().start().finish()


@pytest.mark.parametrize(
    "enrichers, match",
    [
        ([], "add a pooling enricher such as enrichers.mean"),
        ([E.LayersEnricher(), E.FlattenEnricher()], "add a pooling enricher such as enrichers.mean"),
        ([E.MeanEnricher(), E.LayersEnricher()], r"enricher 'layers' \(stage frames\) cannot come after 'mean' \(stage pool\)"),
        ([E.FlattenEnricher(), E.MeanEnricher()], r"enricher 'mean' \(stage pool\) cannot come after 'flatten' \(stage vector\)"),
        ([E.MeanEnricher(), E.StdEnricher()], "enrichers.stats"),
        ([E.MeanEnricher(), E.FlattenEnricher(), E.LayersEnricher()], "'layers' .stage frames. cannot come after 'flatten'"),
        (["mean"], "not an enricher"),
    ],
)
def test_chain_validation(enrichers: list, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        EnricherChain(enrichers)


def test_chain_rejects_unknown_stage() -> None:
    class Odd(Enricher):
        name = "odd"
        stage = "chunk"  # type: ignore[assignment]

    with pytest.raises(ConfigError, match="stage"):
        EnricherChain([Odd(), E.MeanEnricher()])


def test_output_dim_requires_vector() -> None:
    chain = EnricherChain([E.StatsEnricher(["mean", "max"]), E.L2NormalizeEnricher()])
    with pytest.raises(ConfigError, match=r"chain output has shape \(4, 6\).*enrichers.flatten"):
        chain.output_dim(Geometry(16000, 50.0, 4, 3, 10.0))
    assert EnricherChain([E.LayersEnricher([-1]), E.MeanEnricher(), E.FlattenEnricher()]).output_dim(Geometry(16000, 50.0, 13, 768, 10.0)) == 768
    with pytest.raises(ConfigError, match="L=12"):
        EnricherChain([E.LayersEnricher([20]), E.MeanEnricher(), E.FlattenEnricher()]).output_dim(Geometry(16000, 50.0, 12, 8, 10.0))


def test_chain_signature_is_json() -> None:
    sig = mert_chain().signature()
    assert [s["name"] for s in sig] == ["layers", "stats", "flatten", "l2_normalize"]
    assert sig[1] == {"name": "stats", "stats": ["mean", "iqr", "delta_mean"], "max_frames": 4096, "seed": 0}
    json.dumps(sig)


def test_builtin_registry_and_stages() -> None:
    names = {cls.name: cls.stage for cls in E.BUILTIN_ENRICHERS}
    assert names == {
        "layers": "frames",
        "mean": "pool",
        "std": "pool",
        "iqr": "pool",
        "robust_sigma": "pool",
        "delta_mean": "pool",
        "delta_std": "pool",
        "max": "pool",
        "stats": "pool",
        "flatten": "vector",
        "l2_normalize": "vector",
    }
    for cls in E.BUILTIN_ENRICHERS:
        json.dumps(cls().signature())


def test_enrichers_module_does_not_import_torch() -> None:
    code = (
        "import sys; import musicembed_core.builtins.enrichers; "
        "bad = [m for m in ('torch', 'numpy') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("F", [1, 2, 5, 8, 33])
def test_iqr_sort_and_partition_paths_agree(F: int) -> None:
    from musicembed_core.builtins.enrichers import _iqr

    x = stack(F=F, seed=F)
    ref = np_ref("iqr", x.numpy())
    for use_numpy in (True, False):
        np.testing.assert_allclose(_iqr(x, use_numpy=use_numpy).numpy(), ref, rtol=1e-6, atol=1e-6)
