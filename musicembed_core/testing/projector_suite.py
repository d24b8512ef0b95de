"""Conformance suite for text projectors: subclass it, give it a ``projector`` and its ``space``.

::

    import pytest
    from musicembed_core.testing import ProjectorSuite

    class TestMyProjector(ProjectorSuite):
        @pytest.fixture
        def projector(self, offline):
            return MyProjector()

        @pytest.fixture
        def space(self, offline):             # the EmbeddingSpace its vectors belong to:
            return self.run_space("runs/my_model.gin")   # the one a run of that gin file builds

Every ``test_*`` method below then runs against it: :meth:`~musicembed_core.TextProjector.target`
has one of its two forms and :func:`~musicembed_core.check_projector` accepts the
space and refuses another encoder, another enricher chain and another dim with a
message naming the field; ``load()`` is idempotent; ``embed_text`` returns float32
``[N, dim]`` with ``dim == space.dim``, finite, unit-norm rows (see :attr:`ProjectorSuite.unit_norm`),
a batch equal to its texts one by one, the same vectors twice, an empty list as
``[0, dim]``, and copes with an empty string, non-Latin text and a text far longer
than the model's context; a single ``str`` is refused (not split into letters);
``signature()`` is JSON. Keep models tiny.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar

import pytest

TEXTS = (
    "calm piano with rain",
    "an upbeat jazz trio with brushed drums and walking bass",
    "distorted guitars, heavy drums, shouted vocals",
    "ambient drone",
)
AWKWARD = (
    "",
    "café, naïve, Ærøskøbing — ünïcödé",
    "日本の雨の日のピアノ音楽 🎹🌧️",
    "موسيقى هادئة",
    " ".join(["a slow melancholic cello melody over soft strings"] * 400),  # ~3000 words
)


class ProjectorSuite:
    """Reusable text-projector checks; the subclass provides ``projector`` and ``space``."""

    atol: ClassVar[float] = 1e-5
    rtol: ClassVar[float] = 1e-4
    unit_norm: ClassVar[bool] = True
    """The rows are L2-normalised (norm 1 within ``atol``). Every shipped projector
    normalises: sinks compare by cosine or inner product, and the stored track
    vectors of a text-searchable chain are unit vectors too. Set False only for a
    projector meant for an ``l2`` sink over unnormalised vectors."""
    batch_independent: ClassVar[bool] = True
    """A text's vector does not depend on the other texts of its batch. Set False
    (saying why) for a model that pools over padding; better, construct the
    projector in its batch-independent mode in the fixture."""

    @pytest.fixture
    def projector(self):
        pytest.fail(
            f"{type(self).__name__} subclasses ProjectorSuite but defines no `projector` fixture: "
            "add `@pytest.fixture def projector(self): return MyProjector(...)` to the class"
        )

    @pytest.fixture
    def space(self):
        pytest.fail(
            f"{type(self).__name__} subclasses ProjectorSuite but defines no `space` fixture: add "
            "one returning the EmbeddingSpace the projector's vectors belong to, e.g. "
            "`return self.run_space('runs/my_model.gin')`"
        )

    # ------------------------------------------------------------------ helpers
    @staticmethod
    def run_space(gin_file: str, *gin_params: str, embedding: str | None = None) -> Any:
        """The :class:`EmbeddingSpace` that ``musicembed run --gin_file gin_file`` (plus
        ``gin_params``) builds for ``embedding`` (its only one by default). No weights
        are loaded; ``run.source`` defaults to the current folder."""
        from .. import ginconfig
        from ..pipeline import PreparedEmbedding
        from ..runconfig import run_config
        from ..search import _pick

        params = list(gin_params)
        if not any(p.replace(" ", "").startswith("run.source=") for p in params):
            params.insert(0, "run.source='.'")
        ginconfig.parse([gin_file], params)
        try:
            cfg = run_config()
        finally:
            ginconfig.clear()
        return PreparedEmbedding.build(_pick(cfg.embeddings, embedding, "embedding", "embedding=")).space

    def embed(self, projector: Any, texts: Any) -> Any:
        """``embed_text`` as a float32 numpy array, with its type and shape checked."""
        import numpy as np

        out = projector.embed_text(list(texts))
        assert hasattr(out, "shape"), f"embed_text returned {type(out).__name__}, expected a torch.Tensor"
        arr = out.detach().cpu().numpy() if hasattr(out, "detach") else np.asarray(out)
        assert arr.dtype == np.float32, f"embed_text returned {arr.dtype}, expected float32"
        return arr

    def check_rows(self, arr: Any, n: int, dim: int, what: str) -> None:
        import numpy as np

        assert arr.shape == (n, dim), f"{what}: shape {arr.shape}, expected ({n}, {dim})"
        assert np.isfinite(arr).all(), f"{what}: NaN or infinite values"
        if self.unit_norm and n:
            norms = np.linalg.norm(arr, axis=1)
            assert np.allclose(norms, 1.0, atol=max(self.atol, 1e-5)), (
                f"{what}: row norms {norms.round(5).tolist()} are not 1; normalise the output, or set "
                f"unit_norm = False on the suite if the projector is meant for unnormalised vectors"
            )

    def assert_close(self, actual: Any, expected: Any, what: str) -> None:
        import numpy as np

        assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
        if not np.allclose(actual, expected, atol=self.atol, rtol=self.rtol):
            diff = float(np.abs(actual - expected).max())
            raise AssertionError(f"{what}: max abs difference {diff:.3g} exceeds atol={self.atol}, rtol={self.rtol}")

    @staticmethod
    def refusal(projector: Any, space: Any) -> str:
        """The message :func:`check_projector` refuses ``space`` with (fails if it accepts it)."""
        from ..components import check_projector
        from ..errors import SpaceMismatchError

        with pytest.raises(SpaceMismatchError) as info:
            check_projector(projector, space)
        return str(info.value)

    # ------------------------------------------------------------------ target and space checks
    def test_target_has_one_of_the_two_forms(self, projector):
        from ..space import EmbeddingSpace

        target = projector.target()
        assert isinstance(target, dict), f"target() returned {type(target).__name__}, expected a dict"
        assert set(target) in ({"space"}, {"encoder", "enrichers"}), (
            f"target() keys {sorted(target)}: expected {{'space'}} (a trained projector: its stored "
            f"EmbeddingSpace.to_json()) or {{'encoder', 'enrichers'}} (a joint model's text tower)"
        )
        if "space" in target:
            stored = target["space"]
            if isinstance(stored, EmbeddingSpace):
                stored = stored.to_json()
            if isinstance(stored, str):
                stored = json.loads(stored)
            assert {"encoder", "enrichers", "dim"} <= set(stored), (
                f"target()['space'] must be EmbeddingSpace.to_json() (or the space): got keys {sorted(stored)}"
            )
        json.dumps(target if "space" not in target or not isinstance(target["space"], EmbeddingSpace)
                   else {"space": target["space"].to_json()})

    def test_its_space_is_accepted(self, projector, space):
        from ..components import check_projector

        check_projector(projector, space)
        if projector.dim:
            assert projector.dim == space.dim, f"projector.dim {projector.dim} != the space's dim {space.dim}"

    def test_another_encoder_is_refused_naming_it(self, projector, space):
        from ..space import EmbeddingSpace

        other = f"{space.encoder.get('name', 'encoder')}-other"
        moved = EmbeddingSpace({**space.encoder, "name": other}, space.enrichers, space.dim, name="suite-other")
        msg = self.refusal(projector, moved)
        assert "encoder.name" in msg and other in msg, f"the refusal does not name the encoder field: {msg}"

    def test_another_enricher_chain_is_refused_naming_it(self, projector, space):
        from ..space import EmbeddingSpace

        chain = (*space.enrichers, {"name": "suite_extra_step"})
        msg = self.refusal(projector, EmbeddingSpace(space.encoder, chain, space.dim))
        assert "enrichers" in msg, f"the refusal does not name the enricher chain: {msg}"

    def test_another_dim_is_refused_naming_it(self, projector, space):
        from ..space import EmbeddingSpace

        msg = self.refusal(projector, EmbeddingSpace(space.encoder, space.enrichers, space.dim + 1))
        assert "dim" in msg, f"the refusal does not name the dim: {msg}"

    # ------------------------------------------------------------------ embedding text
    def test_load_is_idempotent(self, projector, space):
        projector.load()
        first = self.embed(projector, TEXTS[:2])
        projector.load()
        self.assert_close(self.embed(projector, TEXTS[:2]), first, "embed_text after a second load()")
        assert projector.dim == space.dim, f"after load(), projector.dim is {projector.dim}, the space's {space.dim}"

    def test_vectors_are_float32_finite_rows_of_the_space_dim(self, projector, space):
        self.check_rows(self.embed(projector, TEXTS), len(TEXTS), space.dim, f"embed_text({len(TEXTS)} texts)")

    def test_an_empty_list_gives_no_rows(self, projector, space):
        arr = self.embed(projector, [])
        assert arr.shape == (0, space.dim), f"embed_text([]) has shape {arr.shape}, expected (0, {space.dim})"

    def test_a_batch_equals_its_texts_one_by_one(self, projector):
        import numpy as np

        if not self.batch_independent:
            pytest.skip(f"{type(self).__name__}.batch_independent is False")
        texts = [*TEXTS, AWKWARD[0], AWKWARD[2]]
        both = self.embed(projector, texts)
        alone = np.concatenate([self.embed(projector, [t]) for t in texts])
        self.assert_close(both, alone, "a batch vs its texts one by one")

    def test_embedding_is_deterministic(self, projector):
        self.assert_close(self.embed(projector, TEXTS), self.embed(projector, list(TEXTS)), "two calls")

    def test_awkward_texts(self, projector, space):
        """An empty string, accents, CJK with emoji, right-to-left script and a text far
        longer than any context window: one finite (unit) row each, no exception."""
        self.check_rows(self.embed(projector, AWKWARD), len(AWKWARD), space.dim, "awkward texts")

    def test_one_string_is_refused(self, projector):
        with pytest.raises(TypeError):
            projector.embed_text("calm piano")

    def test_signature_is_json(self, projector):
        sig = projector.signature()
        assert sig.get("name") == projector.name, f"signature()['name'] is {sig.get('name')!r}"
        assert json.loads(json.dumps(sig)) == sig, "signature() must be plain JSON (str keys, lists)"
        json.dumps(projector.config())
