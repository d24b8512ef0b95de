"""enrichers.robust_sigma (IQR / 1.3489795...) and the MEAN_ROBUST_DELTA chain.

The generic pooling checks (numpy reference, streaming == whole, empty blocks, no frames)
cover it through tests/test_enrichers.py's POOLS; TorchScript equality through
tests/test_export.py's ENRICHERS. Here: what makes it a robust sigma, and its gin file."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from musicembed_core import Geometry, ginconfig
from musicembed_core.builtins import enricher_ops as ops
from musicembed_core.builtins import enrichers as E
from musicembed_core.chain import EnricherChain, enrich_whole


def test_the_constant_is_the_iqr_of_the_standard_normal():
    from statistics import NormalDist

    q = NormalDist().inv_cdf(0.75)
    assert ops.IQR_PER_SIGMA == pytest.approx(2 * q, rel=1e-15)
    assert ops.IQR_PER_SIGMA == 1.3489795003921634


def test_estimates_sigma_of_normal_frames_and_ignores_outliers():
    g = torch.Generator().manual_seed(0)
    sigma = torch.tensor([0.5, 1.0, 3.0]).view(1, 1, 3)
    x = torch.randn(2, 20_000, 3, generator=g) * sigma + 7.0
    est = E.RobustSigmaEnricher(max_frames=20_000).enrich(x)
    np.testing.assert_allclose(est.numpy(), sigma.view(1, 3).expand(2, 3).numpy(), rtol=0.03)
    # 2% of the frames become huge clicks: std explodes, robust sigma barely moves.
    x[:, ::50] = 1e4
    assert (E.StdEnricher().enrich(x) > 100).all()
    np.testing.assert_allclose(E.RobustSigmaEnricher(max_frames=20_000).enrich(x).numpy(),
                               est.numpy(), rtol=0.06)


@pytest.mark.parametrize("F", [5, 64, 700])
def test_is_the_iqr_pooling_scaled_with_the_same_reservoir(F):
    """Same max_frames/seed reservoir as iqr (also beyond max_frames), scaled in float64."""
    g = torch.Generator().manual_seed(F)
    x = torch.randn(3, F, 4, generator=g)
    for blocks in ([(0, F)], [(a, min(F, a + 37)) for a in range(0, F, 37)]):
        iqr = E.IqrEnricher(max_frames=50, seed=4).pooling()
        rs = E.RobustSigmaEnricher(max_frames=50, seed=4).pooling()
        for a, b in blocks:
            iqr.update(x[:, a:b])
            rs.update(x[:, a:b])
        assert rs.frames_held == iqr.frames_held == min(F, 50)
        got = rs.result()
        assert got.dtype == torch.float32
        np.testing.assert_allclose(got.numpy(), iqr.result().double().numpy() / ops.IQR_PER_SIGMA,
                                   rtol=1e-6, atol=1e-7)


def test_stats_name_signature_and_torch_module():
    s = E.StatsEnricher(["mean", "robust_sigma", "delta_mean"], max_frames=16, seed=2)
    assert s.signature() == {"name": "stats", "stats": ["mean", "robust_sigma", "delta_mean"],
                             "max_frames": 16, "seed": 2}
    assert E.RobustSigmaEnricher().signature() == {"name": "robust_sigma", "max_frames": 4096, "seed": 0}
    assert E.RobustSigmaEnricher().signature() != E.IqrEnricher().signature()
    x = torch.randn(2, 40, 3, generator=torch.Generator().manual_seed(1))
    out = s.enrich(x)
    assert out.shape == (2, 9)
    robust = E.RobustSigmaEnricher(max_frames=16, seed=2).enrich(x)
    assert torch.equal(out[:, 3:6], robust)
    scripted = torch.jit.script(s.torch_module(2))
    torch.testing.assert_close(scripted(x), out, rtol=1e-6, atol=1e-6)
    with pytest.raises(E.EnricherConfigError, match="enrichers.robust_sigma: max_frames"):
        E.RobustSigmaEnricher(max_frames=1)


def test_mean_robust_delta_gin_chain(manager):
    from musicembed_core.runconfig import embedding

    ginconfig.parse(["enrichers/mean_robust_delta.gin"],
                    ["embedding.encoder = @encoders.logmel()",
                     "embedding.enrichers = %MEAN_ROBUST_DELTA"])
    chain = EnricherChain(embedding().enrichers)
    assert [s["name"] for s in chain.signature()] == ["layers", "stats", "flatten", "l2_normalize"]
    assert chain.signature()[1]["stats"] == ["mean", "robust_sigma", "delta_mean"]
    # Music2Latent latents: 1 layer x 64 channels at 44100 / 4096 frames/s -> 192 dims.
    assert chain.output_dim(Geometry(44100, 44100 / 4096, 1, 64, 10.0)) == 192
    x = torch.randn(1, 30, 64, generator=torch.Generator().manual_seed(3))
    v = enrich_whole(chain, x)
    assert v.shape == (192,) and math.isclose(float(v.norm()), 1.0, rel_tol=1e-6)
