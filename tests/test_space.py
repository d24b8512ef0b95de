"""Embedding-space identity and mismatch messages."""

import pytest

from musicembed_core.errors import SpaceMismatchError
from musicembed_core.space import EmbeddingSpace


def space(**enc):
    return EmbeddingSpace(encoder={"name": "logmel", "n_mels": 96, **enc},
                          enrichers=({"name": "mean"},), dim=192, name="label")


def test_hash_is_stable_and_ignores_the_label():
    a, b = space(), space()
    assert a.hash == b.hash and len(a.hash) == 16
    assert EmbeddingSpace(a.encoder, a.enrichers, a.dim, name="other").hash == a.hash
    assert EmbeddingSpace.from_json(a.to_json()) == a


def test_mismatch_names_what_differs():
    stored = space().to_json()
    with pytest.raises(SpaceMismatchError, match=r"file x.h5.*n_mels: stored 96, now 64"):
        space(n_mels=64).check_same(stored, where="file x.h5")
    other = EmbeddingSpace({"name": "mert", "n_mels": 96}, ({"name": "mean"},), 192)
    with pytest.raises(SpaceMismatchError, match=r"encoder.name: stored 'logmel', now 'mert'"):
        other.check_same(stored, where="file x.h5")
    space().check_same(stored, where="file x.h5")  # same space: no error


def test_device_is_not_part_of_the_space():
    from musicembed_core.builtins.logmel import LogMelEncoder

    cpu, gpu = LogMelEncoder(device="cpu"), LogMelEncoder(device="cuda")
    assert cpu.signature() == gpu.signature()
    assert "device" not in cpu.signature() and cpu.config()["device"] == "cpu"
    assert LogMelEncoder(n_mels=64).signature() != cpu.signature()
