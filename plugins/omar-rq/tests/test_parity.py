"""Parity with upstream omar-rq 0.2.1 on identical tiny weights (fixtures made by
fixtures/make_fixtures.py in a reference venv): every layer set, every input family."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from musicembed_omar_rq import OmarRQEncoder
from omar_signals import checksum, chord
from tiny_repos import FAMILY_REPO, REPOS

def _waves(info, j):
    w = info["waves"][str(j)]
    waves = np.stack([chord(w["seconds"], info["sample_rate"], s) for s in w["seeds"]])
    np.testing.assert_allclose([checksum(x) for x in waves], w["checksum"], rtol=1e-9)
    return torch.from_numpy(waves)


@pytest.mark.parametrize("family", sorted(FAMILY_REPO))
def test_layer_sets_match_upstream(offline, family):
    info = offline.meta["models"][family]
    for key, layers in offline.meta["layer_sets"].items():
        enc = OmarRQEncoder(model=FAMILY_REPO[family], **({} if layers is None else {"layers": layers}))
        assert enc.geometry().frame_rate == info["eps"]
        for j in info["waves"]:
            got = enc.encode(_waves(info, j))
            want = offline.expected[f"{family}/{j}/{key}"]
            assert got.shape == want.shape, (family, key, j)
            torch.testing.assert_close(got, want, atol=1e-4, rtol=0, msg=f"{family} {key} input {j}")


@pytest.mark.parametrize("family", sorted(FAMILY_REPO))
def test_input_representation_matches_upstream(offline, family):
    info = offline.meta["models"][family]
    enc = OmarRQEncoder(model=FAMILY_REPO[family])
    front = enc.module().front
    for j in info["waves"]:
        want = offline.expected[f"{family}/{j}/input_rep"]
        with torch.no_grad():
            got = front(_waves(info, j))[..., : want.shape[-1]]
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-5)


def test_every_repo_id_loads_its_layout(offline):
    for repo, family in REPOS.items():
        enc = OmarRQEncoder(model=repo, layers=[0, -1])
        x = _waves(offline.meta["models"][family], 0)
        torch.testing.assert_close(enc.encode(x), offline.expected[f"{family}/0/all"][[0, 2]], atol=1e-4, rtol=0)
