"""Conformance suite for encoders: subclass it, give it an ``encoder`` fixture.

::

    import pytest
    from musicembed_core.testing import EncoderSuite

    class TestMyEncoder(EncoderSuite):
        signature_changes = {"model": "my-org/other"}   # values for arguments with no obvious
                                                         # alternative (strings, None defaults)
        @pytest.fixture
        def encoder(self, offline_hub):
            return MyEncoder(window_seconds=2.0)

Every ``test_*`` method below then runs against that encoder: the layer stack
shape ``[L, B, F, D]`` and frame count from the declared :class:`Geometry`, a
batch equal to its items encoded alone, the real pipeline on a clip shorter than
the window equal to encoding the clip whole, determinism, and an embedding-space
signature that contains (and changes with) every constructor argument.
Class attributes tune the clip length and tolerances; keep models tiny.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import pytest

_RUNTIME_NOTE = (
    "Store every constructor argument as an attribute of the same name (Component.config() "
    "reads it from there) so it enters the embedding-space signature, or, if it only changes "
    "where or how fast the encoder runs and never its output, list it in the class's "
    "`runtime_params`."
)


class EncoderSuite:
    """Reusable encoder checks; the subclass provides the ``encoder`` fixture."""

    clip_seconds: ClassVar[float] = 1.0
    """Length of the test clips; must be shorter than the encoder's window."""
    batch_size: ClassVar[int] = 3
    """Clips in the batch compared with each clip encoded alone."""
    extra_lengths: ClassVar[tuple[int, ...]] = ()
    """More input lengths (samples) for the frame-count check."""
    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4
    signature_changes: ClassVar[dict[str, Any]] = {}
    """Another valid value per constructor argument, for the check that changing it
    changes the embedding space. Numbers and booleans get one automatically
    (x/2 or 1.0 for floats, x+1 for ints, not x); give one here for strings,
    ``None`` defaults, or where the automatic one is not valid."""
    signature_unchecked: ClassVar[tuple[str, ...]] = ()
    """Arguments the space-change check skips (say why in a comment)."""

    @pytest.fixture
    def encoder(self):
        pytest.fail(
            f"{type(self).__name__} subclasses EncoderSuite but defines no `encoder` fixture: add "
            "`@pytest.fixture def encoder(self): return MyEncoder(...)` to the class"
        )

    # ------------------------------------------------------------------ helpers
    def waves(self, encoder, batch: int, num_samples: int, seed: int = 0):
        """``[batch, num_samples]`` float32 music-like clips at the encoder's rate."""
        import numpy as np
        import torch

        from ..examples import synth_clip

        rate = encoder.geometry().sample_rate
        seconds = max(num_samples, 1) / rate
        clips = [synth_clip(seconds, rate, seed=seed + b)[:num_samples] for b in range(batch)]
        return torch.from_numpy(np.stack(clips).astype(np.float32))

    def clip_samples(self, encoder) -> int:
        geo = encoder.geometry()
        n = int(round(self.clip_seconds * geo.sample_rate))
        assert n < geo.window_samples, (
            f"{type(self).__name__}.clip_seconds={self.clip_seconds} is not shorter than the "
            f"encoder's window ({geo.window_seconds} s): lower clip_seconds or construct the "
            f"encoder with a longer window_seconds"
        )
        assert n >= geo.min_samples, (
            f"{type(self).__name__}.clip_seconds={self.clip_seconds} is below the encoder's "
            f"min_seconds ({geo.min_seconds} s)"
        )
        return n

    def assert_close(self, actual, expected, what: str) -> None:
        import torch

        assert actual.shape == expected.shape, f"{what}: shape {tuple(actual.shape)} != {tuple(expected.shape)}"
        if not torch.allclose(actual, expected, atol=self.atol, rtol=self.rtol):
            diff = float((actual - expected).abs().max())
            raise AssertionError(
                f"{what}: max abs difference {diff:.3g} exceeds atol={self.atol}, rtol={self.rtol}"
            )

    def space_hash(self, encoder) -> str:
        """The hash of the space the real pipeline builds for ``encoder`` + mean pooling."""
        from ..builtins.enrichers import FlattenEnricher, LayersEnricher, MeanEnricher
        from ..pipeline import PreparedEmbedding
        from ..runconfig import EmbeddingSpec

        chain = [LayersEnricher("all"), MeanEnricher(), FlattenEnricher()]
        return PreparedEmbedding.build(EmbeddingSpec("suite", encoder, chain)).space.hash

    # ------------------------------------------------------------------ geometry and shapes
    def test_geometry_is_one_frozen_value(self, encoder):
        from ..geometry import Geometry

        geo = encoder.geometry()
        assert isinstance(geo, Geometry), f"geometry() returned {geo!r}, not a musicembed_core.Geometry"
        assert encoder.geometry() == geo, "geometry() changed between two calls"
        sig = encoder.signature()
        for key, value in geo.signature().items():
            assert sig.get(key) == value, (
                f"signature()[{key!r}] is {sig.get(key)!r} but the geometry says {value!r}"
            )

    def test_output_is_layers_batch_frames_dim(self, encoder):
        import torch

        geo = encoder.geometry()
        n = self.clip_samples(encoder)
        out = encoder.encode(self.waves(encoder, 2, n))
        want = (geo.num_layers, 2, geo.frames_for(n), geo.dim)
        assert tuple(out.shape) == want, (
            f"encode([2, {n}]) returned shape {tuple(out.shape)}; the geometry declares "
            f"[L, B, F, D] = {want} (F = geometry.frames_for({n}))"
        )
        assert out.dtype == torch.float32, f"encode returned {out.dtype}, expected float32"
        assert bool(torch.isfinite(out).all()), "encode returned NaN or inf"

    def test_frame_count_follows_the_geometry(self, encoder):
        geo = encoder.geometry()
        n = self.clip_samples(encoder)
        lengths = sorted({geo.min_samples, n, n + 317, *self.extra_lengths})
        for length in lengths:
            out = encoder.encode(self.waves(encoder, 1, length, seed=7))
            assert out.shape[2] == geo.frames_for(length), (
                f"{length} samples gave {out.shape[2]} frames; geometry.frames_for({length}) = "
                f"{geo.frames_for(length)} (frame_rate={geo.frame_rate}, "
                f"receptive_field={geo.receptive_field}): fix the geometry or the encoder"
            )

    def test_batch_equals_each_item_alone(self, encoder):
        n = self.clip_samples(encoder)
        wave = self.waves(encoder, self.batch_size, n, seed=1)
        wave[-1] *= 1e-3  # a quiet clip beside loud ones: no batch-wide normalisation
        both = encoder.encode(wave)
        for b in range(self.batch_size):
            alone = encoder.encode(wave[b : b + 1])
            self.assert_close(both[:, b], alone[:, 0], f"batch item {b} vs the same clip alone")

    def test_encoding_is_deterministic(self, encoder):
        n = self.clip_samples(encoder)
        wave = self.waves(encoder, 2, n, seed=3)
        first = encoder.encode(wave)
        second = encoder.encode(wave.clone())
        self.assert_close(second, first, "two encode() calls on the same input")

    def test_short_clip_through_the_pipeline_equals_the_whole_clip(self, encoder, tmp_path: Path):
        """A clip shorter than the window is one chunk: the pipeline's frames and vector
        equal encoding the decoded clip whole (decode, chunk, stitch, pool add nothing)."""
        import numpy as np
        import torch

        from ..audio import load_audio
        from ..builtins.enrichers import FlattenEnricher, LayersEnricher, MeanEnricher
        from ..examples import write_audio
        from ..pipeline import PreparedEmbedding, embed_paths
        from ..runconfig import EmbeddingSpec

        geo = encoder.geometry()
        n = self.clip_samples(encoder)
        path = tmp_path / "short.wav"
        write_audio(path, self.waves(encoder, 1, n, seed=5)[0].numpy(), geo.sample_rate)
        chain = [LayersEnricher("all"), MeanEnricher(), FlattenEnricher()]
        prep = PreparedEmbedding.build(EmbeddingSpec("suite", encoder, chain))
        prep.keep_frames = True
        [res] = embed_paths([prep], [path])
        assert res.status == "ok", f"the pipeline failed on a {self.clip_seconds} s clip: {res.error}"
        whole = encoder.encode(torch.from_numpy(load_audio(path, geo.sample_rate))[None])[:, 0]
        frames = torch.from_numpy(res.frames[0])
        self.assert_close(frames, whole.to(torch.float32), "pipeline frames vs encode(whole clip)")
        vector = torch.from_numpy(np.asarray(res.vectors[0]))
        self.assert_close(vector, whole.mean(dim=1).flatten(), "pipeline vector vs mean of the frames")
        assert vector.numel() == prep.space.dim

    # ------------------------------------------------------------------ signature
    def test_every_constructor_argument_is_in_the_signature(self, encoder):
        from ..components import constructor_params

        cls = type(encoder)
        config = encoder.config()
        sig = encoder.signature()
        for pname, _ in constructor_params(cls):
            assert pname in config, (
                f"{cls.__name__}({pname}=...) is not stored as attribute {pname!r}, so it is "
                f"missing from config() and the signature. {_RUNTIME_NOTE}"
            )
            if pname in encoder.runtime_params:
                assert pname not in sig, f"runtime parameter {pname!r} must not be in signature()"
            else:
                assert pname in sig, (
                    f"{cls.__name__} argument {pname!r} is in config() but left out of "
                    f"signature(). {_RUNTIME_NOTE}"
                )

    def test_changing_an_argument_changes_the_space(self, encoder):
        from ..components import constructor_params

        cls = type(encoder)
        params = [p for p, _ in constructor_params(cls) if hasattr(encoder, p)]
        kwargs = {p: getattr(encoder, p) for p in params}
        base = self.space_hash(cls(**kwargs))
        assert base == self.space_hash(encoder), (
            f"{cls.__name__}(**its own config) is another space than the encoder: a constructor "
            "argument is stored transformed (store it as given)"
        )
        for pname in params:
            if pname in encoder.runtime_params or pname in self.signature_unchecked:
                continue
            if pname in self.signature_changes:
                other = self.signature_changes[pname]
            else:
                other = _alternative(kwargs[pname])
                if other is _NONE:
                    continue
            try:
                changed = cls(**{**kwargs, pname: other})
                changed_hash = self.space_hash(changed)
            except Exception as exc:  # noqa: BLE001 - reported with the fix
                raise AssertionError(
                    f"{cls.__name__}({pname}={other!r}) failed ({type(exc).__name__}: {exc}); give a "
                    f"valid other value in {type(self).__name__}.signature_changes[{pname!r}]"
                ) from exc
            assert changed_hash != base, (
                f"{cls.__name__}({pname}={other!r}) produces the same embedding space as "
                f"{pname}={kwargs[pname]!r}: either {pname!r} must enter signature(), or it does "
                "not change the output and belongs in runtime_params"
            )


_NONE = object()


def _alternative(value: Any) -> Any:
    """Another value of the same type, or ``_NONE`` when none is obvious."""
    if isinstance(value, bool):
        return not value
    if isinstance(value, int):
        return value + 1
    if isinstance(value, float):
        return value / 2 if value else 1.0
    return _NONE
